//! Narrowing a unit's range with digests (DESIGN §4): ranges whose digest —
//! row count and element sum over data **and** versions — is equal on both
//! sides hold the same rows and are skipped without transferring them; the
//! others are split and compared again, and what still differs is walked.
//!
//! The search descends only while it pays: a range of at most
//! [`leaf_rows`] rows is walked rather than split, and when most of a
//! range's sub-ranges differ (drift spread everywhere), they are all walked
//! at once — splitting further would cost another pass over both sides for
//! little to skip. And when narrowing has lately not paid for most units of
//! a reconciler ([`NarrowStats`]: damage spread over every tenant), units
//! whose kind differs as a whole are walked straight away, but one in eight
//! still narrows so that the statistics follow the damage.
//!
//! A whole kind of a tenant was already compared as a whole by the
//! tenant's first look (`guarded.rs`): narrowing it starts by splitting.

use super::walk::widen;
use super::{UnitContext, UnitError, UnitSpec};
use recon_core::ports::DigestRequest;
use recon_core::{EntityKey, KeyRange};
use std::sync::atomic::{AtomicU64, Ordering};

/// How narrowing paid off in a reconciler's recent units.
#[derive(Debug, Default)]
pub(crate) struct NarrowStats {
    tried: AtomicU64,
    unpaid: AtomicU64,
    skipped: AtomicU64,
}

impl NarrowStats {
    /// Fewer units than this decide nothing.
    const SAMPLE: u64 = 8;
    /// Past this many, both counts are halved: recent units weigh most.
    const WINDOW: u64 = 64;

    /// Whether to narrow the next unit.
    fn worth_trying(&self) -> bool {
        let tried = self.tried.load(Ordering::Relaxed);
        let unpaid = self.unpaid.load(Ordering::Relaxed);
        if tried < Self::SAMPLE || unpaid * 2 <= tried {
            return true;
        }
        self.skipped.fetch_add(1, Ordering::Relaxed) % Self::SAMPLE == Self::SAMPLE - 1
    }

    /// Records whether narrowing a unit paid: whether it skipped at least a
    /// quarter of the unit's rows.
    fn record(&self, paid: bool) {
        let tried = self.tried.fetch_add(1, Ordering::Relaxed) + 1;
        if !paid {
            self.unpaid.fetch_add(1, Ordering::Relaxed);
        }
        if tried >= Self::WINDOW {
            self.tried.store(tried / 2, Ordering::Relaxed);
            let unpaid = self.unpaid.load(Ordering::Relaxed);
            self.unpaid.store(unpaid / 2, Ordering::Relaxed);
        }
    }
}

/// What the digests left to walk.
#[derive(Debug, Default)]
pub(crate) struct Narrowed {
    /// Ranges to walk row by row, in key order, adjacent ones merged, each
    /// with the rows the source had in it (`None`: unknown).
    pub ranges: Vec<(KeyRange, Option<u64>)>,
    /// Rows (source side) in ranges found equal and skipped.
    pub matched: u64,
    /// Digest requests made.
    pub requests: u64,
    /// Lowest and highest generation of the digests' watermarks.
    pub generations: Option<(u64, u64)>,
}

/// Ranges of at most this many rows are walked rather than split: a
/// quarter of a page, about what one more digest request costs to skip —
/// or, from a source with multi-range pages, [`FINE_LEAF_ROWS`]: there the
/// differing leaves are read many per request, so a range's rows, not its
/// requests, are what a walk costs.
fn leaf_rows(page_size: u32, page_ranges: u32) -> u64 {
    if page_ranges > 1 {
        FINE_LEAF_ROWS
    } else {
        (u64::from(page_size) / 4).max(1)
    }
}

/// The leaf size where multi-range pages read the differing leaves: at 1%
/// of rows damaged evenly, 15% of 16-row leaves differ, so a sixth of the
/// rows are read; the digests cost one bucket per 16 rows on both sides.
const FINE_LEAF_ROWS: u64 = 16;

/// How many buckets to split a range of about `rows` rows into: leaves
/// at once where multi-range pages read them, else the configured fanout.
fn buckets_for(rows: Option<u64>, leaf: u64, page_ranges: u32, fanout: u32) -> u32 {
    match rows {
        Some(rows) if page_ranges > 1 => u32::try_from(rows.div_ceil(leaf))
            .unwrap_or(u32::MAX)
            .max(2),
        _ => fanout.max(2),
    }
}

impl UnitContext<'_> {
    /// The sub-ranges of `spec.range` whose digests differ, or `None` when
    /// the source offers no digests (or the unit is the tenant list, or
    /// digests are off): then the whole range is walked. `page_ranges` is
    /// what the source's multi-range pages carry (0 or 1: none).
    pub(crate) async fn narrow(
        &self,
        spec: &UnitSpec,
        page_ranges: u32,
    ) -> Result<Option<Narrowed>, UnitError> {
        if !self.options.digests || spec.kind == self.scope_kind() || self.filter.is_some() {
            return Ok(None);
        }
        let page_size = self.options.page_size;
        let leaf = leaf_rows(page_size, page_ranges);
        let fanout = self.options.digest_fanout;
        // A whole kind was compared as a whole already (the tenant's first
        // look): it differs, so splitting is the first step.
        let whole = spec.range == KeyRange::all();
        // A small kind is walked: splitting it costs about as much as
        // reading it (a page; a few leaves where they are read together).
        let small = if page_ranges > 1 {
            u64::from(page_size).min(leaf * 8)
        } else {
            u64::from(page_size)
        };
        if spec.source_rows.is_some_and(|rows| rows <= small) {
            return Ok(None);
        }
        // Narrowing pays when it skips a quarter of the rows (`NarrowStats`)
        // and can skip no more than the replica holds.
        if let (Some(source), Some(replica)) = (spec.source_rows, spec.replica_rows)
            && replica.saturating_mul(4) < source
        {
            return Ok(None);
        }
        if whole && !self.narrowing.worth_trying() {
            return Ok(None);
        }
        let mut narrowed = Narrowed::default();
        let mut pieces = Vec::new();
        let first_buckets = if whole {
            buckets_for(spec.source_rows, leaf, page_ranges, fanout)
        } else {
            1
        };
        let walk_below = if page_ranges > 1 { leaf * 2 } else { leaf };
        let mut level = vec![(spec.range.clone(), first_buckets)];
        let mut rows = 0;
        while !level.is_empty() {
            let mut next = Vec::new();
            for (range, buckets) in level {
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
                    pieces.push((range, Piece::Walk(None)));
                    continue;
                };
                if narrowed.requests == 0 {
                    rows = source.ranges.iter().map(|part| part.digest.count).sum();
                }
                narrowed.requests += 1;
                let generation = source.watermark.generation;
                widen(&mut narrowed.generations, generation, generation);
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
                        pieces.push((sub, Piece::Matched(part.digest.count)));
                    } else {
                        differing.push((
                            sub,
                            part.digest.count,
                            part.digest.count.max(replica_digest.count),
                        ));
                    }
                    lower.clone_from(&part.until);
                }
                let spread = buckets > 1
                    && (source.ranges.len() == 1 || differing.len() * 2 > source.ranges.len());
                for (sub, source_rows, rows) in differing {
                    // A leaf with a few phantoms more is still walked.
                    if spread || rows <= walk_below {
                        pieces.push((sub, Piece::Walk(Some(source_rows))));
                    } else {
                        next.push((sub, buckets_for(Some(rows), leaf, page_ranges, fanout)));
                    }
                }
            }
            level = next;
        }
        // Leaves read together cost their rows, not requests: join only
        // touching ones then.
        let max_gap = if page_ranges > 1 { 0 } else { leaf };
        let (ranges, matched) = plan_walks(pieces, max_gap);
        narrowed.ranges = ranges;
        narrowed.matched = matched;
        self.progress
            .rows_compared(&spec.tenant_id, spec.kind, matched);
        if whole {
            self.narrowing.record(matched * 2 >= rows);
        }
        Ok(Some(narrowed))
    }
}

/// A piece of a unit's range once narrowing is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Its digests differ: walk it; the source's rows in it, if known.
    Walk(Option<u64>),
    /// Its digests are equal; it holds this many rows.
    Matched(u64),
}

/// The walks that cover the `Walk` pieces (which, with the matched ones,
/// tile the unit's range), in key order: touching ones are joined, and so
/// are ones separated by at most `max_gap` matched rows — reading a few
/// equal rows again is cheaper than a walk's extra page requests. Returns
/// the walks and the matched rows left unread.
fn plan_walks(
    mut pieces: Vec<(KeyRange, Piece)>,
    max_gap: u64,
) -> (Vec<(KeyRange, Option<u64>)>, u64) {
    pieces.sort_by(|left, right| left.0.after.cmp(&right.0.after));
    let mut walks: Vec<(KeyRange, Option<u64>)> = Vec::new();
    let mut matched = 0;
    let mut gap = 0;
    for (range, piece) in pieces {
        match piece {
            Piece::Matched(rows) => gap += rows,
            Piece::Walk(rows) => {
                match walks.last_mut() {
                    Some((last, last_rows)) if gap <= max_gap => {
                        last.until = range.until;
                        *last_rows = last_rows.zip(rows).map(|(left, right)| left + gap + right);
                    }
                    _ => {
                        matched += gap;
                        walks.push((range, rows));
                    }
                }
                gap = 0;
            }
        }
    }
    (walks, matched + gap)
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
    fn narrowing_that_does_not_pay_is_mostly_skipped_until_it_pays_again() {
        let stats = NarrowStats::default();
        assert!(stats.worth_trying(), "no evidence yet");
        for _ in 0..NarrowStats::SAMPLE {
            stats.record(false);
        }
        let tries = (0..80).filter(|_| stats.worth_trying()).count();
        assert_eq!(tries, 10, "one unit in eight still narrows");
        for _ in 0..NarrowStats::WINDOW {
            stats.record(true);
        }
        assert!(stats.worth_trying(), "narrowing paid again");
    }

    #[test]
    fn walks_join_across_small_gaps_and_skip_big_ones() {
        let pieces = vec![
            (range(Some("m"), None), Piece::Walk(Some(7))),
            (range(None, Some("c")), Piece::Walk(Some(2))),
            (range(Some("f"), Some("m")), Piece::Matched(500)),
            (range(Some("c"), Some("d")), Piece::Walk(Some(3))),
            (range(Some("d"), Some("f")), Piece::Matched(5)),
        ];
        // ..c and c..d touch; d..m holds 505 equal rows: skipped at a max
        // gap of 100, read again at 1000.
        let (walks, matched) = plan_walks(pieces.clone(), 100);
        assert_eq!(
            walks,
            vec![
                (range(None, Some("d")), Some(5)),
                (range(Some("m"), None), Some(7))
            ]
        );
        assert_eq!(matched, 505);
        let (walks, matched) = plan_walks(pieces, 1_000);
        assert_eq!(walks, vec![(range(None, None), Some(517))]);
        assert_eq!(matched, 0);
        let (walks, matched) = plan_walks(vec![(range(None, None), Piece::Matched(9))], 100);
        assert!(walks.is_empty());
        assert_eq!(matched, 9);
    }
}
