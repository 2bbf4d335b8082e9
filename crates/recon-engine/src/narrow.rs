//! Narrowing a unit's range with digests (DESIGN §4): ranges whose digest —
//! row count and element sum over data **and** versions — is equal on both
//! sides hold the same rows and are skipped without transferring them; the
//! others are split and compared again, and what still differs is walked.
//!
//! The search descends only while it pays: a range of at most
//! [`leaf_rows`] rows is walked rather than split, and when most of a
//! range's sub-ranges differ (drift spread everywhere), they are all walked
//! at once — splitting further would cost another pass over both sides for
//! little to skip.

use crate::unit::{UnitContext, UnitError, UnitSpec};
use recon_core::ports::DigestRequest;
use recon_core::{EntityKey, KeyRange, Kind};

/// What the digests left to walk.
#[derive(Debug, Default)]
pub(crate) struct Narrowed {
    /// Ranges to walk row by row, in key order, adjacent ones merged.
    pub ranges: Vec<KeyRange>,
    /// Rows (source side) in ranges found equal and skipped.
    pub matched: u64,
    /// Digest requests made.
    pub requests: u64,
    /// Lowest and highest generation of the digests' watermarks.
    pub generations: Option<(u64, u64)>,
}

/// Ranges of at most this many rows are walked rather than split: walking
/// them costs about two page requests.
fn leaf_rows(page_size: u32) -> u64 {
    u64::from(page_size) * 2
}

impl UnitContext<'_> {
    /// The sub-ranges of `spec.range` whose digests differ, or `None` when
    /// the source offers no digests (or the unit is the tenant list, or
    /// digests are off): then the whole range is walked.
    pub(crate) async fn narrow(&self, spec: &UnitSpec) -> Result<Option<Narrowed>, UnitError> {
        if !self.options.digests || spec.kind == Kind::Tenant || self.filter.is_some() {
            return Ok(None);
        }
        let mut narrowed = Narrowed::default();
        let mut to_walk = Vec::new();
        let mut level = vec![spec.range.clone()];
        let mut buckets = 1;
        while !level.is_empty() {
            let mut next = Vec::new();
            for range in level {
                if self.cancel.is_cancelled() {
                    return Err(UnitError::Cancelled);
                }
                let request = DigestRequest {
                    tenant_id: spec.tenant_id.clone(),
                    kind: spec.kind,
                    range: range.clone(),
                    buckets,
                };
                let Some(source) = self
                    .source
                    .digests(&request)
                    .await
                    .map_err(UnitError::Source)?
                else {
                    if narrowed.requests == 0 {
                        return Ok(None);
                    }
                    to_walk.push(range);
                    continue;
                };
                narrowed.requests += 1;
                let generation = source.watermark.generation;
                narrowed.generations = Some(match narrowed.generations {
                    None => (generation, generation),
                    Some((low, high)) => (low.min(generation), high.max(generation)),
                });
                let bounds: Vec<Option<EntityKey>> = source
                    .ranges
                    .iter()
                    .map(|part| part.until.clone())
                    .collect();
                let replica = self
                    .store
                    .digest_ranges(&spec.tenant_id, spec.kind, range.after.as_ref(), &bounds)
                    .await
                    .map_err(UnitError::Store)?;
                if replica.len() != bounds.len() {
                    return Err(UnitError::Store(recon_core::ports::PortError::new(
                        recon_core::ports::FailureKind::Permanent,
                        format!("{} digests for {} ranges", replica.len(), bounds.len()),
                    )));
                }
                let mut differing = Vec::new();
                let mut lower = range.after.clone();
                for (part, replica_digest) in source.ranges.iter().zip(&replica) {
                    let sub = KeyRange {
                        after: lower.clone(),
                        until: part.until.clone(),
                    };
                    if part.digest == *replica_digest {
                        narrowed.matched += part.digest.count;
                        self.progress
                            .rows_compared(&spec.tenant_id, spec.kind, part.digest.count);
                    } else {
                        differing.push((sub, part.digest.count.max(replica_digest.count)));
                    }
                    lower.clone_from(&part.until);
                }
                let spread = buckets > 1
                    && (source.ranges.len() == 1 || differing.len() * 2 > source.ranges.len());
                for (sub, rows) in differing {
                    if spread || rows <= leaf_rows(self.options.page_size) {
                        to_walk.push(sub);
                    } else {
                        next.push(sub);
                    }
                }
            }
            level = next;
            buckets = self.options.digest_fanout.max(2);
        }
        narrowed.ranges = merge_adjacent(to_walk);
        Ok(Some(narrowed))
    }
}

/// Sorts ranges by start and joins those that touch (one's `until` is the
/// next one's `after`), so that a walk reads across them without a new page.
fn merge_adjacent(mut ranges: Vec<KeyRange>) -> Vec<KeyRange> {
    ranges.sort_by(|left, right| left.after.cmp(&right.after));
    let mut merged: Vec<KeyRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if last.until.is_some() && last.until == range.after => {
                last.until = range.until;
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(after: Option<&str>, until: Option<&str>) -> KeyRange {
        KeyRange {
            after: after.map(EntityKey::id),
            until: until.map(EntityKey::id),
        }
    }

    #[test]
    fn touching_ranges_are_joined_in_key_order() {
        let merged = merge_adjacent(vec![
            range(Some("m"), None),
            range(None, Some("c")),
            range(Some("f"), Some("m")),
            range(Some("c"), Some("d")),
        ]);
        assert_eq!(merged, vec![range(None, Some("d")), range(Some("f"), None)]);
    }
}
