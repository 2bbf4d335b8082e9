//! A run's plan in pages: one value would exceed etcd's request size limit
//! (1.5 MiB by default) past about 13,000 tenants.
//!
//! `put_plan` writes the units in pages of at most [`PLAN_PAGE_BYTES`](recon_engine::cluster::PLAN_PAGE_BYTES) of JSON
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
use recon_engine::cluster::{Leadership, Plan, PlanHeader, UnitPlan, plan_pages};

impl EtcdCoordinator {
    /// Writes `plan` in pages, header last. Leader-guarded, every page.
    pub(crate) async fn write_plan(
        &self,
        leadership: &Leadership,
        plan: &Plan,
    ) -> Result<(), PortError> {
        let pages = plan_pages(&plan.units)
            .map_err(|error| permanent(format!("encode the plan's units: {error}")))?;
        let prefix = self.keys().plan_pages(&plan.run_id);
        let clear = TxnOp::delete(prefix.clone(), Some(DeleteOptions::new().with_prefix()));
        self.guarded_write("clear plan pages", leadership, vec![clear])
            .await?;
        for (index, page) in pages.iter().enumerate() {
            let put = TxnOp::put(format!("{prefix}{index:06}"), page.clone(), None);
            self.guarded_write("put plan page", leadership, vec![put])
                .await?;
        }
        let header = PlanHeader::of(plan, pages.len());
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
