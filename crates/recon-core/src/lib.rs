//! Pure core of recon.
//!
//! Everything here is deterministic and free of I/O: the domain (the four
//! replicated entity kinds and their keys), [`Version`]s, the canonical
//! [`RowHash`], and the streaming [`diff`] of two key-ordered streams. The
//! adapters (store, source client, Kafka, etcd) and the engine build on these
//! types; nothing in this crate knows about them.

pub mod diff;
pub mod digest;
pub mod domain;
pub mod guard;
pub mod hash;
pub mod history;
pub mod id;
pub mod plan;
pub mod ports;
pub mod redact;
pub mod report;
pub mod schema;
pub mod version;

pub use diff::{DiffEntry, DiffItem, KeyedRow, MergeDiff, merge_diff};
pub use digest::RangeDigest;
pub use domain::{
    Change, Deletion, EntityKey, Group, InvalidInput, KeyRange, Kind, Membership, Record, Row,
    Tenant, User, UserStatus, joined_bounds, ranges_after, validate_tenant_id,
};
pub use guard::{DeleteGuard, GuardDecision};
pub use hash::RowHash;
pub use history::{PausePolicy, RunMode, RunRecord, RunTotals};
pub use redact::redact_url;
pub use report::{RunReport, RunStatus, TenantRemoval, UnitOutcome, UnitReport};
pub use version::{ElectionClaim, FenceToken, GLOBAL_SCOPE, Version};
