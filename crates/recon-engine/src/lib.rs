//! The reconciliation engine (DESIGN §1, §3, §6).
//!
//! [`Reconciler::run`] pauses the replica's consumer, walks the source and
//! the replica as key-ordered streams per (tenant, kind), merges them with
//! the core's [`classify`](recon_core::diff::classify) step, and writes the
//! differences in batches through the store's reconciliation form — the
//! same apply path Kafka events use — fenced by the run's epoch. It then
//! raises the generation floor and resumes the consumer.
//!
//! Each unit is reconciled in **one walk** (the source changes while a run
//! reads it; a second walk would see a different source): the walk writes
//! missing and changed rows and *holds* the phantoms, each at the watermark
//! of the page that covered its key — at most as many as the
//! [delete guard](recon_core::DeleteGuard) could allow. Only once the walk
//! read every page, and the guard allows what was found (a tenant's share,
//! cascades of deleted tenants counted), are they tombstoned. A unit is
//! idempotent: cancelled half-way and run again, it converges to the same
//! state, so transient failures are retried within the run.
//!
//! The engine knows nothing of HTTP, SQL or Kafka: it talks to the
//! [`Source`](recon_core::ports::Source), [`ReplicaStore`](recon_core::ports::ReplicaStore)
//! and [`ConsumerGate`](recon_core::ports::ConsumerGate) ports.

pub mod cluster;
pub mod machine;
pub mod metrics;
mod options;
mod progress;
mod run;
mod unit;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_live;

pub use options::{ReconcileOptions, Scope};
pub use progress::{NoProgress, Progress};
pub use run::{Reconciler, RunHistory, peak_rss_bytes};
pub use unit::{UnitError, UnitSpec};
