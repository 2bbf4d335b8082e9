//! ZooKeeper adapter of recon: [`ZooKeeperBackend`] provides the
//! coordinator port's primitives ([`recon_coord::backend::Backend`]) on
//! ZooKeeper, and [`ZooKeeperCoordinator`] is the run protocol written once
//! over them ([`recon_coord::protocol::Protocol`]); one conformance suite
//! runs against every backend.
//!
//! # Node layout
//!
//! Every node lives under one node per service (`<prefix>`, e.g.
//! `/recon/<service>`, created with its parents on connect). `<member>`,
//! `<run>`, `<unit>` and `<name>` are ids escaped into one node name: `%`
//! as `%25`, `/` as `%2F` (as etcd's keys), and what ZooKeeper refuses in a
//! name — a leading `.`, control and reserved characters — as `%XX` per
//! UTF-8 byte. Values are JSON (serde_json), except the election nodes'.
//! Nodes without a value in the table (`members`, `election`, `run`,
//! `runs`, `runs/<run>`, its collections, `triggers`, `history`) are empty
//! persistent parents.
//!
//! | node | value | kind | written by |
//! |------|-------|------|------------|
//! | `<prefix>/members/<member>` | [`MemberInfo`](recon_coord::MemberInfo) | ephemeral (the member's session) | the member, on [`connect`](ZooKeeperBackend::connect) |
//! | `<prefix>/election/<session hex>-<sequence>` | the member id, raw UTF-8 | ephemeral sequential | `campaign`; the lowest sequence leads; its creation zxid is the **epoch**; deleted by `resign` |
//! | `<prefix>/incarnation` | an epoch the store handed out (JSON number) | persistent | the first leader of this ensemble (`init_incarnation`: create if absent) |
//! | `<prefix>/request` | [`RunRequest`](recon_coord::RunRequest) | persistent | anyone (`request_run`: merged into the pending one, versioned set or create); deleted by `put_run` of a run started from it |
//! | `<prefix>/run/current` | [`RunState`](recon_coord::RunState) | persistent | the leader, guarded (`put_run`); deleted by `put_barrier` of the same run |
//! | `<prefix>/runs/<run>/plan` | the [`Plan`](recon_coord::Plan) without its units, and its number of pages | persistent | the leader, guarded (`put_plan`), after every page |
//! | `<prefix>/runs/<run>/plan-pages/<index>` | a JSON array of the plan's units (at most 256 KiB) | persistent | the leader, guarded (`put_plan`), one transaction per page |
//! | `<prefix>/runs/<run>/acks/<member>` | the member id (JSON string) | ephemeral (the member's session) | the member (`ack_pause`) |
//! | `<prefix>/runs/<run>/assign/<unit>` | the assignee's id (JSON string) | persistent | the leader, guarded (`assign`) |
//! | `<prefix>/runs/<run>/claims/<unit>` | the claimant's id (JSON string) | ephemeral (the claimant's session) | the claimant (`claim`: create, with a check of the assignment's version) |
//! | `<prefix>/runs/<run>/done/<unit>` | [`DoneRecord`](recon_coord::DoneRecord) | persistent (outlives the member) | the member that did the unit (`put_done`: with checks of the assignment's and its own claim's versions) |
//! | `<prefix>/runs/<run>/abort` | [`AbortRequest`](recon_coord::AbortRequest) | persistent | anyone (`request_abort`); the leader then writes an aborted barrier |
//! | `<prefix>/runs/<run>/barrier` | [`Barrier`](recon_coord::Barrier) | persistent | the leader, guarded (`put_barrier`) |
//! | `<prefix>/triggers/<name>` | a number: the last schedule slot fired, the last source generation seen | persistent | the leader, guarded compare-and-swap on the node's version (`advance_trigger`) |
//! | `<prefix>/history/<run>` | the same [`Barrier`](recon_coord::Barrier), for `recent_barriers` | persistent | the leader, in the barrier's transaction |
//!
//! # Session, leadership, fencing
//!
//! * **Session** (the etcd lease's counterpart): one ZooKeeper session per
//!   member, its timeout negotiated from `session_timeout`. A probe every
//!   third of the timeout confirms it; when none succeeded two thirds of a
//!   timeout after the last good one was sent, or the session expired or
//!   was closed (by anyone), or a request is answered that way,
//!   [`session_lost`](recon_coord::Coordinator::session_lost) is
//!   cancelled at once — before the server can expire the session and let
//!   another member take over. Then the client is dropped, which closes the
//!   session (ephemeral nodes vanish at once) or leaves it to expire. A
//!   lost session is final, also if the client could have reconnected.
//! * **Leadership**: the election recipe on ephemeral sequential nodes —
//!   lowest sequence wins, each candidate watches only its predecessor.
//!   `Leadership::lost` is a child of the session token and is also
//!   cancelled by a watch on the leader's own election node when it is
//!   deleted. The coordinator remembers the node's path for its leadership.
//! * **Leader-guarded writes** (`put_run`, `put_plan`, `assign`,
//!   `put_barrier`, `advance_trigger`) are one `multi` transaction each,
//!   starting with a `check` of the leadership's election node at version
//!   0; a node that is gone fails the whole transaction, which is
//!   [`FailureKind::StaleEpoch`](recon_core::ports::FailureKind) and writes
//!   nothing.
//! * **Session-bound writes** (`ack_pause`, `claim`) are ephemeral nodes of
//!   the member's session and vanish with it.
//!
//! Transport failures, connection loss and timeouts (each request has a
//! deadline of half the session timeout, within 2–5 s) are `Transient`;
//! values that are not the expected JSON, and refusals (no auth, bad ACL)
//! are `Permanent`; a request answered "session expired" or "closed" is
//! `SessionLost`. Spans: `coord.connect`, `coord.keepalive`,
//! `coord.campaign`, `coord.leadership_watch`, `coord.resign`,
//! `coord.guarded_write`, `coord.put_barrier`, `coord.claim`,
//! `coord.put_done`. No credentials are configured here, so none can be
//! logged (the session's password is never logged either).
//!
//! # What differs from etcd, and why
//!
//! * **Epoch**: the election node's creation zxid, not a sequence number:
//!   the sequence comes from the `election` node's child counter and would
//!   start again if that node were recreated, while zxids only grow within
//!   an ensemble (a rebuilt ensemble is ordered by the incarnation).
//! * **Guard**: ZooKeeper's `check` compares a node's version only, not its
//!   value or creation zxid, so the guard is "this leadership's own node
//!   still exists" (version 0: it is never written). Node names carry the
//!   session id and a never-reused sequence, so a path is never another
//!   leadership's node.
//! * **Conditional parts of a write**: etcd compares values inside its
//!   transaction (`put_run` consumes the request only if it is unchanged;
//!   the barrier deletes the current run only if it is the barrier's run);
//!   a multi can only compare versions, so the value is read first and the
//!   transaction checks (or deletes at) the version that was read, and is
//!   retried when it changed. The current run's *absence* cannot be
//!   checked in a multi; only the guarded leader writes it.
//! * **Parents and deletion**: ZooKeeper has no prefixes, only a tree: a
//!   run's parents are created when first needed, a purge deletes a
//!   finished run's subtree leaves first in bounded batches (no range
//!   delete), each batch checking that the run's history entry exists.
//! * **Session liveness** is the adapter's own probe, not the client's:
//!   the client library only learns of an expiry when it reconnects, and
//!   reconnecting would revive a member that was already told it lost its
//!   session.

mod backend;
mod election;
mod error;
mod member;
mod nodes;
mod session;
mod settings;
mod zk;

pub use error::{Error, Result};
pub use member::{ZooKeeperBackend, ZooKeeperCoordinator, connect, connect_tracked};
pub use settings::ZooKeeperSettings;
