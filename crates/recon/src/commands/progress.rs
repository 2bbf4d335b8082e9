//! Progress bars for reconciliation: one overall bar (tenants done) and one
//! bar per tenant in flight (rows compared of the source's count).

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use recon_core::Kind;
use recon_engine::Progress;
use std::collections::HashMap;
use std::sync::Mutex;

/// [`Progress`] drawn with indicatif on stderr.
pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    tenants: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {pos}/{len} tenants {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("reconcile");
        Self {
            multi,
            overall,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    pub fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Progress for Bars {
    fn tenants_planned(&self, tenants: u64) {
        self.overall.set_length(tenants);
    }

    fn tenant_started(&self, tenant: &str, expected_rows: Option<u64>) {
        let bar = self.multi.add(ProgressBar::new(expected_rows.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} rows {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix("tenant");
        bar.set_message(tenant.to_owned());
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.insert(tenant.to_owned(), bar);
        }
    }

    fn rows_compared(&self, tenant: &str, _kind: Kind, rows: u64) {
        if let Ok(tenants) = self.tenants.lock()
            && let Some(bar) = tenants.get(tenant)
        {
            bar.inc(rows);
        }
    }

    fn tenant_finished(&self, tenant: &str) {
        if let Ok(mut tenants) = self.tenants.lock()
            && let Some(bar) = tenants.remove(tenant)
        {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.overall.inc(1);
    }
}
