//! A run's plan in pages: one value would exceed etcd's request size limit
//! (1.5 MiB by default) past about 13,000 tenants.
//!
//! `put_plan` writes the units in pages of at most [`PAGE_BYTES`] of JSON
//! under `<prefix>/runs/<run>/plan-pages/<index>`, each in its own
//! leader-guarded transaction (the first also clears pages a previous
//! leader may have left half-written), and the header last, at
//! `<prefix>/runs/<run>/plan`: the plan without its units and the number of
//! pages. A header therefore always names complete pages; `plan` reads the
//! header, then each page by key (no answer exceeds a page either).

use crate::error::permanent;
use crate::kv::{decode, encode};
use crate::member::EtcdCoordinator;
use etcd_client::{DeleteOptions, TxnOp};
use recon_core::ports::PortError;
use recon_engine::cluster::{Leadership, Plan, UnitPlan};
use serde::{Deserialize, Serialize};

/// Largest JSON size of one page of units.
pub(crate) const PAGE_BYTES: usize = 256 * 1024;

/// What the plan key holds: the plan without its units, and its pages.
#[derive(Debug, Serialize, Deserialize)]
struct PlanHeader {
    /// The plan, `units` empty.
    plan: Plan,
    /// How many pages of units were written.
    pages: usize,
}

/// Units split into JSON arrays of at most [`PAGE_BYTES`] (a single unit
/// larger than that gets a page of its own).
pub(crate) fn pages(units: &[UnitPlan]) -> Result<Vec<Vec<u8>>, PortError> {
    let mut pages = Vec::new();
    let mut page = b"[".to_vec();
    let mut count = 0;
    for unit in units {
        let encoded = encode(unit)?;
        if count > 0 && page.len() + encoded.len() + 2 > PAGE_BYTES {
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

impl EtcdCoordinator {
    /// Writes `plan` in pages, header last. Leader-guarded, every page.
    pub(crate) async fn write_plan(
        &self,
        leadership: &Leadership,
        plan: &Plan,
    ) -> Result<(), PortError> {
        let pages = pages(&plan.units)?;
        let prefix = self.keys().plan_pages(&plan.run_id);
        let clear = TxnOp::delete(prefix.clone(), Some(DeleteOptions::new().with_prefix()));
        self.guarded_write("clear plan pages", leadership, vec![clear])
            .await?;
        for (index, page) in pages.iter().enumerate() {
            let put = TxnOp::put(format!("{prefix}{index:06}"), page.clone(), None);
            self.guarded_write("put plan page", leadership, vec![put])
                .await?;
        }
        let header = PlanHeader {
            plan: Plan {
                units: Vec::new(),
                ..plan.clone()
            },
            pages: pages.len(),
        };
        let put = TxnOp::put(self.keys().plan(&plan.run_id), encode(&header)?, None);
        self.guarded_write("put plan", leadership, vec![put]).await
    }

    /// Reads a plan written by [`write_plan`](Self::write_plan).
    pub(crate) async fn read_plan(&self, run_id: &str) -> Result<Option<Plan>, PortError> {
        let Some(entry) = self.kv().get(&self.keys().plan(run_id)).await? else {
            return Ok(None);
        };
        let header: PlanHeader = decode(&entry)?;
        let mut plan = header.plan;
        let prefix = self.keys().plan_pages(run_id);
        for index in 0..header.pages {
            let key = format!("{prefix}{index:06}");
            let page = self
                .kv()
                .get(&key)
                .await?
                .ok_or_else(|| permanent(format!("plan page {key} is missing")))?;
            let units: Vec<UnitPlan> = decode(&page)?;
            plan.units.extend(units);
        }
        Ok(Some(plan))
    }
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
        let pages = pages(&units).expect("pages");
        assert!(pages.len() > 1, "50,000 units fit one page?");
        let mut read = Vec::new();
        for page in &pages {
            assert!(page.len() <= PAGE_BYTES, "a page of {} bytes", page.len());
            let units: Vec<UnitPlan> = serde_json::from_slice(page).expect("a JSON array");
            read.extend(units);
        }
        assert_eq!(read, units);
    }

    #[test]
    fn no_units_no_pages() {
        assert!(pages(&[]).expect("pages").is_empty());
    }
}
