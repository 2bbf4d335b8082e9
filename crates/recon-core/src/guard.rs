//! The delete guard (DESIGN §6).
//!
//! Deletions are inferred from absence, so they are dangerous: a source that
//! silently lost data would make the replica lose it too. A unit therefore
//! deletes only after every page of its scope was read successfully, and
//! not at all when it would delete more than a configured share of its rows
//! — unless the operator explicitly allowed it for this run.

use serde::{Deserialize, Serialize};

/// Limits on what one unit may delete.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteGuard {
    /// Largest share of a unit's replica rows it may delete, in `[0, 1]`.
    pub max_share: f64,
    /// Deletions up to this many are always allowed (tiny tenants would
    /// otherwise trip the share on one legitimate deletion).
    pub always_allowed: u64,
    /// The operator's explicit override: delete whatever the source lacks.
    pub override_allowed: bool,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        Self {
            max_share: 0.20,
            always_allowed: 5,
            override_allowed: false,
        }
    }
}

/// The guard's verdict for one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardDecision {
    /// Nothing to delete.
    NothingToDelete,
    /// The deletions are within the limits (or the operator overrode them).
    Allowed,
    /// Too many deletions: the unit stops without deleting.
    Tripped,
}

impl DeleteGuard {
    /// Most deletions allowed for a unit holding `replica_rows` rows.
    pub fn limit(&self, replica_rows: u64) -> u64 {
        if self.override_allowed {
            return u64::MAX;
        }
        let by_share = (self.max_share.clamp(0.0, 1.0) * replica_rows as f64).floor() as u64;
        by_share.max(self.always_allowed)
    }

    /// Decides whether a unit may delete `phantoms` of its `replica_rows`.
    pub fn decide(&self, phantoms: u64, replica_rows: u64) -> GuardDecision {
        if phantoms == 0 {
            GuardDecision::NothingToDelete
        } else if phantoms <= self.limit(replica_rows) {
            GuardDecision::Allowed
        } else {
            GuardDecision::Tripped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn losing_half_a_tenant_trips_the_guard() {
        let guard = DeleteGuard::default();
        assert_eq!(guard.decide(500, 1_000), GuardDecision::Tripped);
        assert_eq!(guard.decide(200, 1_000), GuardDecision::Allowed);
        assert_eq!(guard.decide(201, 1_000), GuardDecision::Tripped);
        assert_eq!(guard.decide(0, 1_000), GuardDecision::NothingToDelete);
    }

    #[test]
    fn small_deletions_are_always_allowed() {
        let guard = DeleteGuard::default();
        assert_eq!(guard.decide(3, 4), GuardDecision::Allowed);
        assert_eq!(guard.decide(6, 6), GuardDecision::Tripped);
    }

    #[test]
    fn the_override_allows_everything() {
        let guard = DeleteGuard {
            override_allowed: true,
            ..DeleteGuard::default()
        };
        assert_eq!(guard.decide(1_000, 1_000), GuardDecision::Allowed);
    }

    proptest! {
        #[test]
        fn never_allows_more_than_the_limit(phantoms in 0u64..10_000, rows in 0u64..10_000, share in 0.0f64..1.0) {
            let guard = DeleteGuard { max_share: share, ..DeleteGuard::default() };
            if guard.decide(phantoms, rows) == GuardDecision::Allowed {
                prop_assert!(phantoms <= guard.always_allowed || phantoms as f64 <= share * rows as f64);
            }
        }
    }
}
