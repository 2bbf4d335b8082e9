//! A run's plan in pages: ZooKeeper refuses a node (and a request) larger
//! than `jute.maxbuffer`, 1 MiB by default.
//!
//! `put_plan` writes the units in pages of at most [`PLAN_PAGE_BYTES`](recon_engine::cluster::PLAN_PAGE_BYTES) of JSON
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
use recon_engine::cluster::{Leadership, Plan, PlanHeader, UnitPlan, plan_pages};

/// Old pages deleted per guarded transaction.
const CLEAR_BATCH: usize = 64;

impl ZooKeeperCoordinator {
    /// Writes `plan` in pages, header last. Leader-guarded, every page.
    pub(crate) async fn write_plan(
        &self,
        leadership: &Leadership,
        plan: &Plan,
    ) -> Result<(), PortError> {
        let pages = plan_pages(&plan.units)
            .map_err(|error| permanent(format!("encode the plan's units: {error}")))?;
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
        let header = PlanHeader::of(plan, pages.len());
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
