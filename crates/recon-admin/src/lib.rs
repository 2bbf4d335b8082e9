//! A replica's admin HTTP API (`recon serve --admin-listen`):
//!
//! * `GET /` — the status page (cluster, current run with its units by
//!   state and owner, the last runs, links to their traces), reading
//!   `/cluster` every second;
//! * `GET /healthz` — the process is alive;
//! * `GET /readyz` — the store answers, a broker connection is up, and the
//!   consumer is not holding a batch the store fails to take (the body says
//!   why not);
//! * `GET /metrics` — Prometheus text format;
//! * `GET /consumer` — pause state, assignment, lag per partition (JSON);
//! * `POST /consumer/pause`, `POST /consumer/resume` — the pause gate, held
//!   per owner (`?owner=<name>`, default `admin`): consumption resumes once
//!   every owner that paused has resumed, so an operator's resume never
//!   ends a run's pause (`run <id>`) and a run's end never ends theirs;
//! * `POST /reconcile` — asks the cluster for a run (body: optional JSON
//!   `{"tenants": [...], "dry_run": bool, "allow_mass_delete": bool,
//!   "confirm_mass_delete": bool}`, the override needing the confirmation); 202
//!   with the pending request, `merged` (it was merged into an earlier
//!   pending one) and `queued_behind` (the run in progress it waits for);
//! * `GET /cluster` — leader, epoch, members, current run, the last runs,
//!   this member's counters;
//! * `GET /runs`, `GET /runs/{id}` — the last finished runs; one run,
//!   finished or in progress;
//! * `POST /runs/{id}/abort` — asks the leader to abort the run in progress
//!   (body: optional `{"reason": "..."}`); 409 if that run is not current.
//!
//! The mutating endpoints (`POST`) need the admin token as a bearer token
//! (`--admin-token[-file]`); without a token they answer only when the
//! admin port listens on loopback ([`MutationPolicy`]). Everything else
//! is read-only and open.
//!
//! The routes are a plain [`axum::Router`] over an [`AdminState`]: the
//! binary serves it; tests can call it without a process.

mod auth;
mod routes;

pub use auth::MutationPolicy;
pub use routes::router;

use prometheus_client::registry::Registry;
use recon_engine::cluster::{CoordinatorSlot, MemberCounters};
use recon_kafka::PauseGate;
use recon_store::Store;
use std::sync::Arc;

/// What the handlers read and act on.
#[derive(Clone)]
pub struct AdminState {
    /// The replica store (readiness, the run history).
    pub store: Store,
    /// The consumer's pause gate.
    pub gate: PauseGate,
    /// The metrics `/metrics` encodes.
    pub registry: Arc<Registry>,
    /// This replica's member id.
    pub member_id: String,
    /// The coordinator of the current cluster session, if any.
    pub coordinator: CoordinatorSlot,
    /// This member's run figures, when it takes part in runs.
    pub counters: Option<Arc<MemberCounters>>,
    /// A link template to a run's trace, shown on the status page.
    pub trace_link: Option<String>,
    /// Who may call the mutating routes.
    pub mutations: MutationPolicy,
}
