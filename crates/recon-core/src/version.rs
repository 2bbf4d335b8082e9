//! Entity versions assigned by the monolith at commit time.
//!
//! A version is `(generation, sequence)`, compared lexicographically.
//! `sequence` comes from one monotonic counter per monolith; `generation` is
//! bumped whenever the monolith is restored from a backup, so a write made
//! after a restore is newer than anything from before it even though the
//! restored counter went back.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The version of an entity or of a whole source snapshot (a watermark).
///
/// The derived ordering compares `generation` first, then `sequence`, which is
/// exactly the lexicographic order DESIGN §3 asks for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Version {
    /// Bumped by every restore of the monolith from a backup.
    pub generation: u64,
    /// Value of the monolith's monotonic change counter at commit time.
    pub sequence: u64,
}

impl Version {
    /// The lowest possible version; every real version is above it.
    pub const ZERO: Version = Version {
        generation: 0,
        sequence: 0,
    };

    /// Builds a version from its two parts.
    pub const fn new(generation: u64, sequence: u64) -> Self {
        Self {
            generation,
            sequence,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.generation, self.sequence)
    }
}

/// The scope that covers the whole replica store (fences, generation floors).
pub const GLOBAL_SCOPE: &str = "*";

/// The right to write for a scope, as of an epoch (DESIGN §2, fencing).
///
/// Every reconciliation write carries one; the store rejects writes whose
/// epoch is older than the highest it has seen for the scope or for
/// [`GLOBAL_SCOPE`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FenceToken {
    /// What the writes cover: a tenant id, a work unit, or [`GLOBAL_SCOPE`].
    pub scope: String,
    /// The epoch of the plan the writes work for, as handed out by the
    /// store ([`ElectionClaim`]); only grows.
    pub epoch: u64,
}

/// Which election a leader won, when it asks the store for an epoch.
///
/// Epochs come from one source per store: the store hands out `fence + 1` in
/// the transaction that raises its global fence to it. A leader elected
/// through a coordinator presents its election, and the store refuses it if
/// it has already handed an epoch to a later election: claims are ordered by
/// `(incarnation, election)`, so a zombie of an older election can never
/// acquire an epoch after a newer one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ElectionClaim {
    /// The coordinator's incarnation: an epoch the store handed out when that
    /// coordination state (an etcd cluster, an in-process hub) first had a
    /// leader, so a rebuilt etcd orders after the one it replaces. Compared
    /// first.
    pub incarnation: u64,
    /// The election within the incarnation (etcd: the creation revision of
    /// the leader's election key).
    pub election: u64,
}

impl FenceToken {
    /// A token for `scope` at `epoch`.
    pub fn new(scope: impl Into<String>, epoch: u64) -> Self {
        Self {
            scope: scope.into(),
            epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_dominates_sequence() {
        assert!(Version::new(2, 1) > Version::new(1, 1_000_000));
        assert!(Version::new(1, 5) > Version::new(1, 4));
        assert!(Version::ZERO < Version::new(0, 1));
    }

    #[test]
    fn serializes_as_object() {
        let json = serde_json::to_string(&Version::new(3, 42)).expect("serialize");
        assert_eq!(json, r#"{"generation":3,"sequence":42}"#);
    }
}
