//! etcd adapter of recon: [`EtcdBackend`] provides the coordinator port's
//! primitives ([`recon_coord::backend::Backend`]) on etcd, and
//! [`EtcdCoordinator`] is the run protocol written once over them
//! ([`recon_coord::protocol::Protocol`]); one conformance suite runs against
//! every backend.
//!
//! # Key layout
//!
//! Every key lives under one prefix per service (`<prefix>`, e.g.
//! `/recon/<service>`). `<member>`, `<run>` and `<unit>` are ids with `%`
//! escaped as `%25` and `/` as `%2F`, so each is exactly one key segment.
//! Values are JSON (serde_json), except the election key's.
//!
//! | key | value | lease | written by |
//! |-----|-------|-------|------------|
//! | `<prefix>/members/<member>` | [`MemberInfo`](recon_coord::MemberInfo) | the member's | the member, on [`connect`](EtcdBackend::connect) |
//! | `<prefix>/election/<lease hex>` | the member id, raw UTF-8 (etcd's election API) | the member's | etcd's `Campaign` for the member; its create revision is the **epoch**; the first created is the leader; deleted by `resign` |
//! | `<prefix>/incarnation` | an epoch the store handed out (JSON number) | none | the first leader of this etcd (`init_incarnation`: create if absent); orders a rebuilt etcd's elections after the old one's |
//! | `<prefix>/request` | [`RunRequest`](recon_coord::RunRequest) | none | anyone (`request_run`: merged into the pending one, compare-and-swap); deleted by `put_run` of a run started from it |
//! | `<prefix>/run/current` | [`RunState`](recon_coord::RunState) | none | the leader, guarded (`put_run`); deleted by `put_barrier` of the same run |
//! | `<prefix>/runs/<run>/plan` | the [`Plan`](recon_coord::Plan) without its units, and its number of pages | none | the leader, guarded (`put_plan`), after every page |
//! | `<prefix>/runs/<run>/plan-pages/<index>` | a JSON array of the plan's units (at most 256 KiB) | none | the leader, guarded (`put_plan`), one transaction per page |
//! | `<prefix>/runs/<run>/acks/<member>` | the member id (JSON string) | the member's | the member (`ack_pause`) |
//! | `<prefix>/runs/<run>/assign/<unit>` | the assignee's id (JSON string) | none | the leader, guarded (`assign`) |
//! | `<prefix>/runs/<run>/claims/<unit>` | the claimant's id (JSON string) | the claimant's | the claimant (`claim`: create if absent and the unit is assigned to it) |
//! | `<prefix>/runs/<run>/done/<unit>` | [`DoneRecord`](recon_coord::DoneRecord) | none (outlives the member) | the member that did the unit (`put_done`: only while the unit is assigned to it and its claim, under its lease, stands) |
//! | `<prefix>/runs/<run>/abort` | [`AbortRequest`](recon_coord::AbortRequest) | none | anyone (`request_abort`); the leader then writes an aborted barrier |
//! | `<prefix>/runs/<run>/barrier` | [`Barrier`](recon_coord::Barrier) | none | the leader, guarded (`put_barrier`) |
//! | `<prefix>/triggers/<name>` | a number: the last schedule slot fired (`schedule`), the last source generation seen (`generation`) | none | the leader, guarded compare-and-swap (`advance_trigger`) |
//! | `<prefix>/history/<run>` | the same [`Barrier`](recon_coord::Barrier) (with its run summary), for `recent_barriers` | none | the leader, in the barrier's transaction |
//!
//! # Session, leadership, fencing
//!
//! * **Session**: a lease with `lease_ttl_secs`, renewed every third of the
//!   TTL. A renewal that fails for two thirds of a TTL, or an answer that the
//!   lease is gone, cancels
//!   [`session_lost`](recon_coord::Coordinator::session_lost) at
//!   once — before etcd can expire the lease and let another member take
//!   over. So does any request that etcd refuses because the lease is gone.
//!   Then the lease is revoked (best effort). A lost session is final.
//! * **Leadership**: `campaign` uses etcd's election API with the member's
//!   own lease (never lease 0, which etcd would grant and nobody renew).
//!   `Leadership::lost` is a child of the session token and is also
//!   cancelled by a watch on the leader key as soon as it is deleted or
//!   changes.
//! * **Leader-guarded writes** (`put_run`, `put_plan`, `assign`,
//!   `put_barrier`) are one transaction each, comparing the leader key's
//!   create revision with the leadership's epoch and its value with the
//!   member id; a failed compare is
//!   [`FailureKind::StaleEpoch`](recon_core::ports::FailureKind) and writes
//!   nothing.
//! * **Session-bound writes** (`ack_pause`, `claim`) are put under the
//!   member's lease and vanish with it.
//!
//! etcd and transport failures (and timeouts: each request has a deadline
//! of half the TTL, within 2–5 s) are `Transient`; values that are not the
//! expected JSON are `Permanent`. Spans: `coord.connect`, `coord.keepalive`,
//! `coord.campaign`, `coord.leadership_watch`, `coord.resign`,
//! `coord.guarded_write`, `coord.put_barrier`, `coord.claim`. No credentials
//! are configured here, so none can be logged.

mod backend;
mod election;
mod error;
mod keys;
mod kv;
mod member;
mod session;
mod settings;

pub use error::{Error, Result};
pub use member::{EtcdBackend, EtcdCoordinator, connect, connect_tracked};
pub use settings::{EtcdSecurity, EtcdSettings};
