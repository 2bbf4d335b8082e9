//! A plan as a coordinator stores it (etcd and ZooKeeper alike): a header —
//! the plan without its units, and how many pages of units it has — and
//! the pages, each a JSON array of at most [`PLAN_PAGE_BYTES`], so that a
//! plan of 50,000 units never makes one oversized value or transaction.

use crate::types::{Plan, UnitPlan};
use serde::{Deserialize, Serialize};

/// Largest JSON size of one page of units (etcd's default request limit is
/// 1.5 MiB, ZooKeeper's `jute.maxbuffer` 1 MiB: a page and its guard fit).
pub const PLAN_PAGE_BYTES: usize = 256 * 1024;

/// What the plan's own key or node holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanHeader {
    /// The plan, `units` empty.
    pub plan: Plan,
    /// How many pages of units were written.
    pub pages: usize,
}

impl PlanHeader {
    /// The header of `plan` stored in `pages` pages.
    pub fn of(plan: &Plan, pages: usize) -> Self {
        Self {
            plan: Plan {
                units: Vec::new(),
                ..plan.clone()
            },
            pages,
        }
    }
}

/// Units split into JSON arrays of at most [`PLAN_PAGE_BYTES`] (a single
/// unit larger than that gets a page of its own); none for no units.
pub fn plan_pages(units: &[UnitPlan]) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    let mut pages = Vec::new();
    let mut page = b"[".to_vec();
    let mut count = 0;
    for unit in units {
        let encoded = serde_json::to_vec(unit)?;
        if count > 0 && page.len() + encoded.len() + 2 > PLAN_PAGE_BYTES {
            page.push(b']');
            pages.push(std::mem::replace(&mut page, b"[".to_vec()));
            count = 0;
        }
        if count > 0 {
            page.push(b',');
        }
        page.extend_from_slice(&encoded);
        count += 1;
    }
    if count > 0 {
        page.push(b']');
        pages.push(page);
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(index: usize) -> UnitPlan {
        UnitPlan {
            id: format!("u{index:05}"),
            tenant_id: format!("tenant-{index}"),
            kind: None,
            after: None,
            until: None,
            weight: index as u64,
        }
    }

    #[test]
    fn pages_stay_under_the_limit_and_keep_every_unit_in_order() {
        let units: Vec<UnitPlan> = (0..50_000).map(unit).collect();
        let pages = plan_pages(&units).expect("pages");
        assert!(pages.len() > 1, "50,000 units fit one page?");
        let mut read = Vec::new();
        for page in &pages {
            assert!(
                page.len() <= PLAN_PAGE_BYTES,
                "a page of {} bytes",
                page.len()
            );
            let units: Vec<UnitPlan> = serde_json::from_slice(page).expect("a JSON array");
            read.extend(units);
        }
        assert_eq!(read, units);
    }

    #[test]
    fn no_units_no_pages() {
        assert!(plan_pages(&[]).expect("pages").is_empty());
    }
}
