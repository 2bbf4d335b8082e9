//! Work-unit planning: split the tenants of a run into units that followers
//! can take, sized from the source's counts so that the slowest unit is not
//! much longer than the average.
//!
//! A tenant no heavier than the target becomes one unit (all its kinds). A
//! heavier tenant is split per kind into key ranges. Any sorted list of
//! boundary keys partitions a key space into `(None, b1], (b1, b2], …,
//! (bn, None)` without gaps or overlaps, whatever the ids look like, so the
//! split is always *correct*; it is *balanced* when ids are spread evenly
//! over their first two hex digits, as the UUIDs of the reference monolith
//! are. Boundaries are the largest UUIDs of a two-digit prefix.

use crate::{EntityKey, Kind};

/// A tenant's weight at the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantWeight {
    /// The tenant.
    pub tenant_id: String,
    /// Its rows per scoped kind.
    pub kinds: Vec<KindWeight>,
}

/// The rows of one kind of a tenant at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindWeight {
    /// The kind.
    pub kind: Kind,
    /// How many key fields it has (a split's boundaries have as many).
    pub key_parts: usize,
    /// Its rows.
    pub rows: u64,
}

impl TenantWeight {
    /// All rows of the tenant.
    pub fn total(&self) -> u64 {
        self.kinds.iter().map(|kind| kind.rows).sum()
    }
}

/// One planned unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedUnit {
    /// The tenant.
    pub tenant_id: String,
    /// `None`: the whole tenant; `Some`: one kind, within the range.
    pub kind: Option<Kind>,
    /// Exclusive lower bound.
    pub after: Option<EntityKey>,
    /// Inclusive upper bound.
    pub until: Option<EntityKey>,
    /// Rows expected.
    pub weight: u64,
}

/// Most ranges one kind of one tenant is split into.
pub const MAX_RANGES_PER_KIND: u64 = 256;

/// The target weight of a unit: about four units per member, never below
/// `min_unit_rows`.
pub fn target_weight(tenants: &[TenantWeight], members: usize, min_unit_rows: u64) -> u64 {
    let total: u64 = tenants.iter().map(TenantWeight::total).sum();
    let slots = (members.max(1) as u64) * 4;
    total.div_ceil(slots).max(min_unit_rows).max(1)
}

/// Plans the units of a run.
pub fn plan_units(
    tenants: &[TenantWeight],
    members: usize,
    min_unit_rows: u64,
) -> Vec<PlannedUnit> {
    let target = target_weight(tenants, members, min_unit_rows);
    let mut units = Vec::new();
    for tenant in tenants {
        if tenant.total() <= target {
            units.push(PlannedUnit {
                tenant_id: tenant.tenant_id.clone(),
                kind: None,
                after: None,
                until: None,
                weight: tenant.total(),
            });
            continue;
        }
        for &KindWeight {
            kind,
            key_parts,
            rows,
        } in &tenant.kinds
        {
            let parts = rows.div_ceil(target).clamp(1, MAX_RANGES_PER_KIND);
            let boundaries = boundaries(key_parts, parts);
            let mut after = None;
            for until in boundaries
                .into_iter()
                .map(Some)
                .chain(std::iter::once(None))
            {
                units.push(PlannedUnit {
                    tenant_id: tenant.tenant_id.clone(),
                    kind: Some(kind),
                    after: after.clone(),
                    until: until.clone(),
                    weight: rows / parts,
                });
                after = until;
            }
        }
    }
    units
}

/// `parts - 1` increasing boundary keys of `key_parts` parts splitting a
/// kind's key space by its first key field (the others are the largest
/// UUID).
fn boundaries(key_parts: usize, parts: u64) -> Vec<EntityKey> {
    (1..parts)
        .map(|index| {
            let bucket = index * 256 / parts;
            let mut key = vec![format!(
                "{:02x}ffffff-ffff-ffff-ffff-ffffffffffff",
                bucket - 1
            )];
            key.resize(
                key_parts.max(1),
                "ffffffff-ffff-ffff-ffff-ffffffffffff".to_owned(),
            );
            EntityKey::from_parts(key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyRange;
    use proptest::prelude::*;

    fn weight(id: &str, users: u64) -> TenantWeight {
        let kind = |kind, key_parts, rows| KindWeight {
            kind,
            key_parts,
            rows,
        };
        TenantWeight {
            tenant_id: id.into(),
            kinds: vec![
                kind(Kind::USER, 1, users),
                kind(Kind::GROUP, 1, users / 10),
                kind(Kind::MEMBERSHIP, 2, users * 2),
            ],
        }
    }

    fn range(unit: &PlannedUnit) -> KeyRange {
        KeyRange {
            after: unit.after.clone(),
            until: unit.until.clone(),
        }
    }

    #[test]
    fn small_tenants_are_whole_units_and_a_big_one_is_split() {
        let tenants = vec![weight("big", 100_000), weight("a", 50), weight("b", 80)];
        let units = plan_units(&tenants, 3, 1_000);
        assert_eq!(units.iter().filter(|unit| unit.tenant_id == "a").count(), 1);
        assert_eq!(
            units
                .iter()
                .find(|unit| unit.tenant_id == "a")
                .and_then(|unit| unit.kind),
            None
        );
        let big: Vec<_> = units
            .iter()
            .filter(|unit| unit.tenant_id == "big")
            .collect();
        assert!(big.len() > 3, "the big tenant was not split: {big:?}");
        let heaviest = units.iter().map(|unit| unit.weight).max().unwrap_or(0);
        let target = target_weight(&tenants, 3, 1_000);
        assert!(
            heaviest <= target,
            "a unit of {heaviest} rows exceeds the target {target}"
        );
    }

    proptest! {
        /// The ranges of every split kind partition the key space: any key
        /// falls into exactly one of them.
        #[test]
        fn ranges_partition_the_key_space(users in 1u64..200_000, members in 1usize..6, keys in prop::collection::vec("[0-9a-f~A-Z:-]{1,40}", 1..50)) {
            let units = plan_units(&[weight("t", users)], members, 100);
            for KindWeight { kind, key_parts, .. } in weight("t", users).kinds {
                let of_kind: Vec<_> = units.iter().filter(|unit| unit.kind == Some(kind) || unit.kind.is_none()).collect();
                for key in &keys {
                    let entity = EntityKey::from_parts(vec![key.clone(); key_parts]);
                    let holders = of_kind.iter().filter(|unit| range(unit).contains(&entity)).count();
                    prop_assert_eq!(holders, 1, "key {:?} of {} is in {} units", key, kind, holders);
                }
            }
        }

        #[test]
        fn uuid_keys_spread_evenly(seed in any::<u64>()) {
            let units = plan_units(&[weight("t", 200_000)], 4, 1_000);
            let user_units: Vec<_> = units.iter().filter(|unit| unit.kind == Some(Kind::USER)).collect();
            let mut counts = vec![0u64; user_units.len()];
            let mut state = seed | 1;
            for _ in 0..20_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let id = format!("{:08x}-0000-4000-8000-000000000000", state as u32);
                let key = EntityKey::id(id);
                let index = user_units.iter().position(|unit| range(unit).contains(&key)).unwrap_or(usize::MAX);
                prop_assert!(index < counts.len());
                counts[index] += 1;
            }
            let mean = 20_000 / counts.len() as u64;
            let max = counts.iter().copied().max().unwrap_or(0);
            prop_assert!(max < mean * 2, "unbalanced ranges: {:?}", counts);
        }
    }
}
