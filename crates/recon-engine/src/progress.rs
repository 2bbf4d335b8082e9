//! Progress reporting port: the engine says what it does, a front end
//! (progress bars, logs) shows it.

use recon_core::{Kind, UnitReport};

/// Receives progress events; every method has a no-op default.
pub trait Progress: Send + Sync {
    /// Whether [`Progress::tenant_started`] wants the tenant's expected rows
    /// (they cost the source a counts request per tenant).
    fn wants_expected_rows(&self) -> bool {
        true
    }
    /// The run will reconcile this many tenants.
    fn tenants_planned(&self, _tenants: u64) {}
    /// A tenant's reconciliation starts; `expected_rows` from the source's
    /// counts, if known.
    fn tenant_started(&self, _tenant: &str, _expected_rows: Option<u64>) {}
    /// More keys of a tenant were compared.
    fn rows_compared(&self, _tenant: &str, _kind: Kind, _rows: u64) {}
    /// A unit finished.
    fn unit_finished(&self, _report: &UnitReport) {}
    /// A tenant's reconciliation finished.
    fn tenant_finished(&self, _tenant: &str) {}
}

/// Shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn wants_expected_rows(&self) -> bool {
        false
    }
}
