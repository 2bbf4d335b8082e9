//! The delete guard (DESIGN §6).
//!
//! Deletions are inferred from absence, so they are dangerous: a source that
//! silently lost data would make the replica lose it too. A unit therefore
//! deletes only after every page of its scope was read successfully, and
//! not at all when it would delete more than a configured share of its rows
//! — unless the operator explicitly allowed it for this run.
//!
//! The share is a tenant's: the units of one tenant (its kinds, or the key
//! ranges of a split tenant) together never get more than the tenant's limit
//! ([`DeleteGuard::share_limit`]). Deleting a tenant removes every row of it,
//! so the tenant list's deletions are counted with what they cascade to
//! ([`DeleteGuard::decide_tenant_removals`]).

use crate::report::TenantRemoval;
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

    /// Most deletions allowed for a unit holding `unit_rows` of a tenant's
    /// `tenant_rows`: its proportional share of the tenant's limit, rounded
    /// down, so the shares of a tenant's units never add up to more than the
    /// tenant's limit (the always-allowed minimum is split, not multiplied).
    pub fn share_limit(&self, unit_rows: u64, tenant_rows: u64) -> u64 {
        if self.override_allowed {
            return u64::MAX;
        }
        if tenant_rows == 0 {
            return 0;
        }
        let unit_rows = u128::from(unit_rows.min(tenant_rows));
        let share = u128::from(self.limit(tenant_rows)) * unit_rows / u128::from(tenant_rows);
        u64::try_from(share).unwrap_or(u64::MAX)
    }

    /// Decides on deleting whole tenants (their users, groups and
    /// memberships go with them): each tenant loses all of its rows, judged
    /// against its own limit; the tenant list loses `removals.len()` of its
    /// `tenant_rows`; the store loses the sum out of its `store_rows`. Any
    /// of the three over its limit trips the guard.
    pub fn decide_tenant_removals(
        &self,
        removals: &[TenantRemoval],
        tenant_rows: u64,
        store_rows: u64,
    ) -> GuardDecision {
        if removals.is_empty() {
            return GuardDecision::NothingToDelete;
        }
        let each_tenant_allowed = removals
            .iter()
            .all(|removal| removal.rows() <= self.limit(removal.rows()));
        let removed: u64 = removals.iter().map(TenantRemoval::rows).sum();
        let allowed = each_tenant_allowed
            && self.decide(removals.len() as u64, tenant_rows) == GuardDecision::Allowed
            && self.decide(removed, store_rows) == GuardDecision::Allowed;
        if allowed {
            GuardDecision::Allowed
        } else {
            GuardDecision::Tripped
        }
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

    fn removal(tenant: &str, users: u64) -> TenantRemoval {
        TenantRemoval {
            tenant: tenant.into(),
            live: [("users".to_owned(), users)].into(),
        }
    }

    #[test]
    fn losing_a_tenant_with_a_thousand_users_trips_the_guard() {
        let guard = DeleteGuard::default();
        let removals = [removal("big", 1_000)];
        assert_eq!(
            guard.decide_tenant_removals(&removals, 100, 1_000_000),
            GuardDecision::Tripped
        );
        // A tenant with a few rows may go, one of many in a big store.
        assert_eq!(
            guard.decide_tenant_removals(&[removal("tiny", 3)], 100, 1_000_000),
            GuardDecision::Allowed
        );
        // Many tiny tenants add up against the store's rows.
        let many: Vec<_> = (0..40)
            .map(|index| removal(&index.to_string(), 3))
            .collect();
        assert_eq!(
            guard.decide_tenant_removals(&many, 1_000, 500),
            GuardDecision::Tripped
        );
        let allowed = DeleteGuard {
            override_allowed: true,
            ..DeleteGuard::default()
        };
        assert_eq!(
            allowed.decide_tenant_removals(&removals, 100, 1_000_000),
            GuardDecision::Allowed
        );
    }

    #[test]
    fn a_split_tenant_does_not_multiply_the_minimum() {
        let guard = DeleteGuard::default();
        // 768 range units of 10 rows: the tenant may lose 1,536 rows, not
        // 768 × 5 + its share.
        let shares: u64 = (0..768).map(|_| guard.share_limit(10, 7_680)).sum();
        assert!(shares <= guard.limit(7_680), "{shares}");
        assert_eq!(guard.share_limit(10, 7_680), 2);
    }

    proptest! {
        /// The shares of a tenant's units never add up to more than the
        /// tenant's own limit, however its rows are split.
        #[test]
        fn shares_of_a_tenant_never_exceed_its_limit(
            units in prop::collection::vec(0u64..5_000, 1..800),
            share in 0.0f64..1.0,
            always_allowed in 0u64..50,
        ) {
            let guard = DeleteGuard { max_share: share, always_allowed, override_allowed: false };
            let tenant_rows: u64 = units.iter().sum();
            let total: u64 = units.iter().map(|rows| guard.share_limit(*rows, tenant_rows)).sum();
            prop_assert!(total <= guard.limit(tenant_rows), "{} > {}", total, guard.limit(tenant_rows));
        }

        #[test]
        fn never_allows_more_than_the_limit(phantoms in 0u64..10_000, rows in 0u64..10_000, share in 0.0f64..1.0) {
            let guard = DeleteGuard { max_share: share, ..DeleteGuard::default() };
            if guard.decide(phantoms, rows) == GuardDecision::Allowed {
                prop_assert!(phantoms <= guard.always_allowed || phantoms as f64 <= share * rows as f64);
            }
        }
    }
}
