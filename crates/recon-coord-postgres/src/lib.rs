//! PostgreSQL adapter of recon's coordinator port: [`PostgresBackend`]
//! provides the primitives ([`recon_coord::backend::Backend`]) in two tables
//! of a PostgreSQL database — typically the replica's own — and
//! [`PostgresCoordinator`] is the run protocol over them. For teams that run
//! no etcd or ZooKeeper.
//!
//! # Tables (created on connect if missing)
//!
//! | table | holds |
//! |---|---|
//! | `recon_coord_sessions` | one row per member session: `id` (from the sequence), `prefix`, `member`, `expires_at` (the server's clock) |
//! | `recon_coord_entries` | one row per key: `prefix`, `key` (segments escaped and joined with `/`, byte order), `value`, `version` and `created` (from the sequence), `session` (set for session-bound values; deleted with the session) |
//! | sequence `recon_coord_revision` | versions, creation order, session ids |
//!
//! # Session, election, fencing
//!
//! * **Session**: a row that expires `ttl` after its last renewal on the
//!   *server's* clock. The member renews it every third of the TTL
//!   (`UPDATE … WHERE expires_at > clock_timestamp()`: an expired session
//!   is never revived); a renewal that finds the row gone, or that fails for
//!   two thirds of a TTL, cancels `session_lost` at once. Expired sessions
//!   are deleted (with their session-bound rows) by every transaction, and
//!   reads never return a value of an expired session.
//! * **Election**: a candidate is a session-bound row under `election/`;
//!   its `created` revision is the epoch; the live candidate created first
//!   leads.
//! * **Transactions**: every write is one PostgreSQL transaction that first
//!   takes the service's advisory transaction lock
//!   (`pg_advisory_xact_lock`), deletes expired sessions, then checks the
//!   member's own session, the guard (the first candidate is still this
//!   leadership's row; or no candidate exists) and the conditions, and only
//!   then writes. Transactions of one service are thereby serialised, and
//!   a deposed leader — whose session expired on the server's clock before
//!   anyone else could lead — changes nothing.

mod backend;
mod election;
mod error;
pub mod schema;
mod session;

pub use error::{Error, Result};
pub use session::{
    PostgresBackend, PostgresCoordinator, PostgresSettings, connect, connect_tool, connect_tracked,
};
