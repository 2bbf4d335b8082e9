//! A run's plan in pages: ZooKeeper refuses a node (and a request) larger
//! than `jute.maxbuffer`, 1 MiB by default.
//!
//! `put_plan` writes the units in pages of at most [`PAGE_BYTES`] of JSON
//! as `<prefix>/runs/<run>/plan-pages/<index>`, each in its own
//! leader-guarded transaction (after clearing pages a previous leader may
//! have left, in guarded batches), and the header last, at
//! `<prefix>/runs/<run>/plan`: the plan without its units and the number of
//! pages. A header therefore always names complete pages; `plan` reads the
//! header, then each page by name (no answer exceeds a page either).

use crate::error::permanent;
use crate::member::ZooKeeperCoordinator;
use crate::zk::{Op, decode, encode};
use recon_core::ports::PortError;
use recon_engine::cluster::{Leadership, Plan, UnitPlan};
use serde::{Deserialize, Serialize};

/// Largest JSON size of one page of units: a quarter of ZooKeeper's
/// default `jute.maxbuffer`, so a page and its guard fit one request.
pub(crate) const PAGE_BYTES: usize = 256 * 1024;

/// Old pages deleted per guarded transaction.
const CLEAR_BATCH: usize = 64;

/// What the plan node holds: the plan without its units, and its pages.
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

impl ZooKeeperCoordinator {
    /// Writes `plan` in pages, header last. Leader-guarded, every page.
    pub(crate) async fn write_plan(
        &self,
        leadership: &Leadership,
        plan: &Plan,
    ) -> Result<(), PortError> {
        let pages = pages(&plan.units)?;
        let run_id = &plan.run_id;
        let parent = self.nodes().plan_pages(run_id);
        let old = self.session().children(&parent).await?;
        for batch in old.chunks(CLEAR_BATCH) {
            let deletes = batch
                .iter()
                .map(|name| Op::Delete {
                    path: format!("{parent}/{name}"),
                    version: -1,
                })
                .collect();
            self.guarded_write("clear plan pages", leadership, deletes)
                .await?;
        }
        for (index, page) in pages.iter().enumerate() {
            let put = Op::Put {
                path: self.nodes().plan_page(run_id, index),
                data: page.clone(),
            };
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
        let put = Op::Put {
            path: self.nodes().plan(run_id),
            data: encode(&header)?,
        };
        self.guarded_write("put plan", leadership, vec![put]).await
    }

    /// Reads a plan written by [`write_plan`](Self::write_plan).
    pub(crate) async fn read_plan(&self, run_id: &str) -> Result<Option<Plan>, PortError> {
        let header_path = self.nodes().plan(run_id);
        let Some(header) = self.session().get_json::<PlanHeader>(&header_path).await? else {
            return Ok(None);
        };
        let mut plan = header.plan;
        for index in 0..header.pages {
            let path = self.nodes().plan_page(run_id, index);
            let (data, _) = self
                .session()
                .get(&path)
                .await?
                .ok_or_else(|| permanent(format!("plan page {path} is missing")))?;
            let units: Vec<UnitPlan> = decode(&path, &data)?;
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
