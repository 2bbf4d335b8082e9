//! Streaming merge-diff of two key-ordered streams.
//!
//! The source (truth) and the replica are both read in key order. Walking
//! them side by side classifies every key as missing (only in the source),
//! phantom (only in the replica), changed or equal — holding at most one item
//! of each side at a time, so memory does not grow with the size of a tenant.
//!
//! [`classify`] is the single decision step; [`MergeDiff`] drives it over two
//! iterators. An async driver (the engine's) reuses [`classify`].

use crate::{EntityKey, Row, RowHash, Version};
use std::iter::Peekable;

/// What the merge needs to know about an item of either side.
pub trait DiffItem {
    /// The key type; both sides of one diff share it.
    type Key: Ord + Clone + std::fmt::Debug;
    /// The item's key; streams are strictly increasing in it.
    fn diff_key(&self) -> &Self::Key;
    /// The item's version.
    fn diff_version(&self) -> Version;
    /// The canonical hash of the item's data.
    fn diff_hash(&self) -> RowHash;
}

/// A row with its key and canonical hash computed once — what both sides
/// of a reconciliation merge hold. The hash is of the data as read, so a
/// row changed behind recon's back shows as changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRow {
    /// The row.
    pub row: Row,
    /// Its key within its tenant and kind.
    pub key: EntityKey,
    /// Canonical hash of its data.
    pub hash: RowHash,
}

impl KeyedRow {
    /// Computes the key and hash of `row`.
    pub fn new(row: Row) -> Self {
        Self {
            key: row.key(),
            hash: row.record.row_hash(),
            row,
        }
    }
}

impl DiffItem for KeyedRow {
    type Key = EntityKey;
    fn diff_key(&self) -> &EntityKey {
        &self.key
    }
    fn diff_version(&self) -> Version {
        self.row.version
    }
    fn diff_hash(&self) -> RowHash {
        self.hash
    }
}

/// The classification of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffEntry<S, R> {
    /// In the source only: the replica must insert it.
    Missing(S),
    /// In the replica only: the source no longer has it.
    Phantom(R),
    /// On both sides with a different version or, at equal version,
    /// different data (a replication bug).
    Changed {
        /// The source's item (the truth).
        source: S,
        /// The replica's item.
        replica: R,
    },
    /// On both sides, same version and same data.
    Equal {
        /// The source's item.
        source: S,
        /// The replica's item.
        replica: R,
    },
}

impl<S, R> DiffEntry<S, R> {
    /// True unless the entry is [`DiffEntry::Equal`].
    pub fn needs_write(&self) -> bool {
        !matches!(self, DiffEntry::Equal { .. })
    }
}

/// Which head(s) the merge consumes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Take the source head: it is missing in the replica.
    Missing,
    /// Take the replica head: it is a phantom.
    Phantom,
    /// Take both heads (same key), which differ.
    Changed,
    /// Take both heads (same key), which are equal.
    Equal,
}

/// Decides the next merge step from the two current heads; `None` when both
/// sides are exhausted.
pub fn classify<S, R>(source: Option<&S>, replica: Option<&R>) -> Option<Step>
where
    S: DiffItem,
    R: DiffItem<Key = S::Key>,
{
    match (source, replica) {
        (None, None) => None,
        (Some(_), None) => Some(Step::Missing),
        (None, Some(_)) => Some(Step::Phantom),
        (Some(source), Some(replica)) => Some(match source.diff_key().cmp(replica.diff_key()) {
            std::cmp::Ordering::Less => Step::Missing,
            std::cmp::Ordering::Greater => Step::Phantom,
            std::cmp::Ordering::Equal => {
                let same = source.diff_version() == replica.diff_version()
                    && source.diff_hash() == replica.diff_hash();
                if same { Step::Equal } else { Step::Changed }
            }
        }),
    }
}

/// Which input of a merge misbehaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source of truth.
    Source,
    /// The replica.
    Replica,
}

/// Why a merge stopped.
#[derive(Debug, thiserror::Error)]
pub enum MergeError<E> {
    /// An input failed to produce its next item.
    #[error("{side:?} stream failed")]
    Input {
        /// The failing side.
        side: Side,
        /// Its error.
        #[source]
        error: E,
    },
    /// An input's keys did not strictly increase; the merge cannot tell
    /// phantoms from misordered rows, so it stops.
    #[error("{side:?} stream is not in strictly increasing key order at {key}")]
    OutOfOrder {
        /// The misordered side.
        side: Side,
        /// The offending key, rendered.
        key: String,
    },
    /// An input ended between a peek and the take that followed it
    /// (an iterator that is not fused).
    #[error("{side:?} stream ended unexpectedly")]
    Exhausted {
        /// The side that ended.
        side: Side,
    },
}

/// Iterator adapter yielding the [`DiffEntry`]s of two key-ordered fallible
/// streams. After the first error it yields nothing more, so a failed source
/// can never make the rest of the replica look like phantoms.
pub struct MergeDiff<SI: Iterator, RI: Iterator, K> {
    source: Peekable<SI>,
    replica: Peekable<RI>,
    last_source_key: Option<K>,
    last_replica_key: Option<K>,
    failed: bool,
}

/// Merges two key-ordered fallible streams into their diff.
pub fn merge_diff<S, R, E, SI, RI>(source: SI, replica: RI) -> MergeDiff<SI, RI, S::Key>
where
    S: DiffItem,
    R: DiffItem<Key = S::Key>,
    SI: Iterator<Item = Result<S, E>>,
    RI: Iterator<Item = Result<R, E>>,
{
    MergeDiff {
        source: source.peekable(),
        replica: replica.peekable(),
        last_source_key: None,
        last_replica_key: None,
        failed: false,
    }
}

impl<S, R, E, SI, RI> MergeDiff<SI, RI, S::Key>
where
    S: DiffItem,
    R: DiffItem<Key = S::Key>,
    SI: Iterator<Item = Result<S, E>>,
    RI: Iterator<Item = Result<R, E>>,
{
    /// Consumes the source head; only called after a peek saw one.
    fn take_source(&mut self) -> Result<S, MergeError<E>> {
        let Some(taken) = take_head(&mut self.source, Side::Source) else {
            return Err(MergeError::Exhausted { side: Side::Source });
        };
        let item = taken?;
        check_order(&mut self.last_source_key, item.diff_key(), Side::Source)?;
        Ok(item)
    }

    /// Consumes the replica head; only called after a peek saw one.
    fn take_replica(&mut self) -> Result<R, MergeError<E>> {
        let Some(taken) = take_head(&mut self.replica, Side::Replica) else {
            return Err(MergeError::Exhausted {
                side: Side::Replica,
            });
        };
        let item = taken?;
        check_order(&mut self.last_replica_key, item.diff_key(), Side::Replica)?;
        Ok(item)
    }

    fn step(&mut self) -> Option<Result<DiffEntry<S, R>, MergeError<E>>> {
        // Surface an input error before classifying anything behind it.
        if matches!(self.source.peek(), Some(Err(_))) {
            return Some(Err(self.take_source().err()?));
        }
        if matches!(self.replica.peek(), Some(Err(_))) {
            return Some(Err(self.take_replica().err()?));
        }
        let source_head = self.source.peek().and_then(|item| item.as_ref().ok());
        let replica_head = self.replica.peek().and_then(|item| item.as_ref().ok());
        let entry = match classify(source_head, replica_head)? {
            Step::Missing => self.take_source().map(DiffEntry::Missing),
            Step::Phantom => self.take_replica().map(DiffEntry::Phantom),
            step @ (Step::Changed | Step::Equal) => self.take_both(step),
        };
        Some(entry)
    }

    fn take_both(&mut self, step: Step) -> Result<DiffEntry<S, R>, MergeError<E>> {
        let source = self.take_source()?;
        let replica = self.take_replica()?;
        Ok(if step == Step::Equal {
            DiffEntry::Equal { source, replica }
        } else {
            DiffEntry::Changed { source, replica }
        })
    }
}

fn take_head<T, E, I>(iterator: &mut Peekable<I>, side: Side) -> Option<Result<T, MergeError<E>>>
where
    I: Iterator<Item = Result<T, E>>,
{
    Some(
        iterator
            .next()?
            .map_err(|error| MergeError::Input { side, error }),
    )
}

fn check_order<K: Ord + Clone + std::fmt::Debug, E>(
    last: &mut Option<K>,
    key: &K,
    side: Side,
) -> Result<(), MergeError<E>> {
    if last.as_ref().is_some_and(|last| key <= last) {
        return Err(MergeError::OutOfOrder {
            side,
            key: format!("{key:?}"),
        });
    }
    *last = Some(key.clone());
    Ok(())
}
impl<S, R, E, SI, RI> Iterator for MergeDiff<SI, RI, S::Key>
where
    S: DiffItem,
    R: DiffItem<Key = S::Key>,
    SI: Iterator<Item = Result<S, E>>,
    RI: Iterator<Item = Result<R, E>>,
{
    type Item = Result<DiffEntry<S, R>, MergeError<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.step()?;
        if item.is_err() {
            self.failed = true;
        }
        Some(item)
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
