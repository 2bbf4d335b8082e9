//! Key-ordered walks over the source's pages and the replica's rows, one
//! item of look-ahead each, with the checks that keep a broken stream from
//! ever being read as "rows are gone".

use super::UnitError;
use recon_core::diff::Side;
use recon_core::ports::{FailureKind, PageRequest, PortError, ReplicaStore, Source, SourcePage};
use recon_core::{EntityKey, KeyRange, KeyedRow, Kind, Row, Version, ranges_after};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

/// Both walks hold [`KeyedRow`]s.
pub(crate) type Keyed = KeyedRow;

/// Which keys of a walk to keep (the others are read and checked, then
/// skipped); `None` keeps all.
pub(crate) type KeyFilter = Option<Arc<BTreeSet<EntityKey>>>;

/// Shared order bookkeeping of both walks.
struct Order {
    side: Side,
    last: Option<EntityKey>,
}

impl Order {
    fn check(&mut self, key: &EntityKey) -> Result<(), UnitError> {
        if self.last.as_ref().is_some_and(|last| key <= last) {
            return Err(UnitError::OutOfOrder {
                side: self.side,
                key: key.to_string(),
                previous: self
                    .last
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            });
        }
        self.last = Some(key.clone());
        Ok(())
    }
}

/// Where a key lies relative to a walk's ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Inside one of them.
    Inside,
    /// Between two of them (or before the first).
    Between,
    /// After the last one.
    Beyond,
}

/// A walk's key ranges (in key order, disjoint), located against keys that
/// increase.
struct Ranges {
    list: Vec<KeyRange>,
    /// The first range that does not end before the last key located.
    next: usize,
}

impl Ranges {
    fn new(list: &[KeyRange]) -> Self {
        Self {
            list: list.to_vec(),
            next: 0,
        }
    }

    /// Where `key` lies; keys must be located in increasing order.
    fn locate(&mut self, key: &EntityKey) -> Place {
        while self
            .list
            .get(self.next)
            .is_some_and(|range| range.until.as_ref().is_some_and(|until| key > until))
        {
            self.next += 1;
        }
        match self.list.get(self.next) {
            None => Place::Beyond,
            Some(range) if range.contains(key) => Place::Inside,
            Some(_) => Place::Between,
        }
    }

    /// Whether no key after `key` lies in a range.
    fn end_at_or_before(&self, key: &EntityKey) -> bool {
        self.list
            .last()
            .is_none_or(|last| last.ends_at_or_before(key))
    }

    /// The ranges, or what is left of them after `cursor`.
    fn after(&self, cursor: Option<&EntityKey>) -> Vec<KeyRange> {
        ranges_after(&self.list[self.next.min(self.list.len())..], cursor)
    }
}

/// The source side: pages fetched on demand, over one key range or —
/// from a source with multi-range pages — several.
pub(crate) struct SourceWalk {
    source: Arc<dyn Source>,
    request: PageRequest,
    ranges: Ranges,
    /// Whether page requests carry the ranges (several ranges).
    within: bool,
    filter: KeyFilter,
    buffer: VecDeque<Keyed>,
    /// The next page, requested as soon as the current one arrived, so
    /// that the source serves it while the current one is merged and
    /// written (aborted if the walk is dropped).
    next: Option<AbortOnDropHandle<Result<SourcePage, PortError>>>,
    order: Order,
    exhausted: bool,
    /// The pages read that may still cover keys to classify: the last key
    /// each covers (its `next_after`; `None`: to the walk's end) and its
    /// watermark, in key order.
    covered: VecDeque<(Option<EntityKey>, Version)>,
    /// Lowest and highest generation of the pages' watermarks so far.
    pub generations: Option<(u64, u64)>,
    /// The watermark of the first page read.
    pub first_watermark: Option<Version>,
    /// Pages read so far.
    pub pages: u64,
    /// Response bytes read so far.
    pub bytes: u64,
}

impl SourceWalk {
    /// A walk over `ranges` (in key order, disjoint, not empty); more than
    /// one only for a source with multi-range pages.
    pub fn new(
        source: Arc<dyn Source>,
        tenant_id: &str,
        kind: Kind,
        ranges: &[KeyRange],
        page_size: u32,
        filter: KeyFilter,
    ) -> Self {
        let within = ranges.len() > 1;
        Self {
            source,
            request: PageRequest {
                tenant_id: tenant_id.to_owned(),
                kind,
                after: ranges.first().and_then(|range| range.after.clone()),
                limit: page_size,
                within: if within { ranges.to_vec() } else { Vec::new() },
            },
            ranges: Ranges::new(ranges),
            within,
            filter,
            buffer: VecDeque::new(),
            next: None,
            order: Order {
                side: Side::Source,
                last: None,
            },
            exhausted: false,
            covered: VecDeque::new(),
            generations: None,
            first_watermark: None,
            pages: 0,
            bytes: 0,
        }
    }

    /// The next row without consuming it; fetches a page when needed.
    pub async fn head(&mut self) -> Result<Option<&Keyed>, UnitError> {
        while self.buffer.is_empty() && !self.exhausted {
            self.fetch().await?;
        }
        Ok(self.buffer.front())
    }

    /// Consumes the head.
    pub fn pop(&mut self) -> Option<Keyed> {
        self.buffer.pop_front()
    }

    /// The watermark of the page whose range covers `key`: the version a
    /// phantom of that key is tombstoned at, and the watermark a row of it
    /// is written under. Keys are asked for in key order (pages before
    /// `key` are forgotten); with a filter, the page that covered a key may
    /// lie well before the head, whose rows were out of scope.
    pub fn watermark_covering(&mut self, key: &EntityKey) -> Option<Version> {
        while self.covered.len() > 1
            && self
                .covered
                .front()
                .is_some_and(|(until, _)| until.as_ref().is_some_and(|until| until < key))
        {
            self.covered.pop_front();
        }
        self.covered.front().map(|(_, watermark)| *watermark)
    }

    /// Requests the page of `self.request` in a task of its own.
    fn request_next(&mut self) {
        let source = self.source.clone();
        let request = self.request.clone();
        let fetch = async move { source.fetch_page(&request).await };
        self.next = Some(AbortOnDropHandle::new(tokio::spawn(
            fetch.instrument(tracing::Span::current()),
        )));
    }

    async fn fetch(&mut self) -> Result<(), UnitError> {
        let requested_after = self.request.after.clone();
        let fetched = match self.next.take() {
            Some(next) => next.await.unwrap_or_else(|error| {
                Err(PortError::new(
                    FailureKind::Transient,
                    format!("the page request's task ended: {error}"),
                ))
            }),
            None => self.source.fetch_page(&self.request).await,
        };
        let page = fetched.map_err(UnitError::Source)?;
        self.pages += 1;
        self.bytes += page.bytes;
        let continues = page
            .next_after
            .as_ref()
            .filter(|next| !self.ranges.end_at_or_before(next))
            .cloned();
        self.covered.push_back((continues, page.watermark));
        self.first_watermark.get_or_insert(page.watermark);
        widen(
            &mut self.generations,
            page.watermark.generation,
            page.watermark.generation,
        );
        check_page_shape(&page.rows, page.next_after.as_ref())?;
        for row in page.rows {
            let keyed = Keyed::new(row);
            self.check_item(&keyed, requested_after.as_ref(), page.watermark)?;
            match self.ranges.locate(&keyed.key) {
                // Past the walk's upper bound: this walk is complete.
                Place::Beyond => {
                    self.exhausted = true;
                    return Ok(());
                }
                Place::Between if self.within => {
                    return Err(UnitError::BrokenPage(format!(
                        "item {} lies outside every requested range",
                        keyed.key
                    )));
                }
                Place::Between => continue,
                Place::Inside => {}
            }
            if self
                .filter
                .as_ref()
                .is_none_or(|keep| keep.contains(&keyed.key))
            {
                self.buffer.push_back(keyed);
            }
        }
        match page.next_after {
            Some(next) if !self.ranges.end_at_or_before(&next) => {
                if self.within {
                    self.request.within = self.ranges.after(Some(&next));
                }
                self.request.after = Some(next);
                self.request_next();
            }
            _ => self.exhausted = true,
        }
        Ok(())
    }

    fn check_item(
        &mut self,
        keyed: &Keyed,
        requested_after: Option<&EntityKey>,
        watermark: Version,
    ) -> Result<(), UnitError> {
        let kind = self.request.kind;
        // The watermark is the newest change a page reflects: a row newer
        // than its page would be written under a watermark that does not
        // cover it (and tombstones of its page placed below it).
        if keyed.row.version > watermark {
            return Err(UnitError::BrokenPage(format!(
                "item {} has version {} above its page's watermark {}",
                keyed.key, keyed.row.version, watermark
            )));
        }
        if keyed.row.kind() != kind {
            return Err(UnitError::BrokenPage(format!(
                "a {} item in a {kind} page",
                keyed.row.kind()
            )));
        }
        // The scope list (no tenant) holds each scope row under its own id.
        if !self.request.tenant_id.is_empty() && keyed.row.tenant_id != self.request.tenant_id {
            return Err(UnitError::BrokenPage(format!(
                "an item of tenant {:?} in a page of tenant {:?}",
                keyed.row.tenant_id, self.request.tenant_id
            )));
        }
        if requested_after.is_some_and(|after| &keyed.key <= after) {
            return Err(UnitError::BrokenPage(format!(
                "item {} is not after the requested cursor {}",
                keyed.key,
                requested_after.map(ToString::to_string).unwrap_or_default()
            )));
        }
        self.order.check(&keyed.key)
    }
}

/// Widens a lowest-and-highest generation span to cover `low..=high`.
pub(crate) fn widen(span: &mut Option<(u64, u64)>, low: u64, high: u64) {
    *span = Some(match *span {
        None => (low, high),
        Some((old_low, old_high)) => (old_low.min(low), old_high.max(high)),
    });
}

/// A page must end where its cursor says and never be empty mid-walk:
/// otherwise rows between pages would be skipped and look deleted.
fn check_page_shape(rows: &[Row], next_after: Option<&EntityKey>) -> Result<(), UnitError> {
    let Some(next) = next_after else {
        return Ok(());
    };
    match rows.last() {
        None => Err(UnitError::BrokenPage(
            "an empty page that says more pages follow".into(),
        )),
        Some(last) if &last.key() != next => Err(UnitError::BrokenPage(format!(
            "next_after {next} is not the page's last key {}",
            last.key()
        ))),
        Some(_) => Ok(()),
    }
}

/// The replica side: live rows inside the walk's ranges read in key order,
/// a page at a time.
pub(crate) struct ReplicaWalk {
    store: Arc<dyn ReplicaStore>,
    tenant_id: String,
    kind: Kind,
    ranges: Ranges,
    filter: KeyFilter,
    page_size: u64,
    after: Option<EntityKey>,
    buffer: VecDeque<Keyed>,
    order: Order,
    exhausted: bool,
    /// Live rows seen in the unit's range (for the delete guard).
    pub rows_seen: u64,
}

impl ReplicaWalk {
    /// A walk over `ranges` (in key order, disjoint, not empty).
    pub fn new(
        store: Arc<dyn ReplicaStore>,
        tenant_id: &str,
        kind: Kind,
        ranges: &[KeyRange],
        page_size: u64,
        filter: KeyFilter,
    ) -> Self {
        Self {
            store,
            tenant_id: tenant_id.to_owned(),
            kind,
            after: None,
            ranges: Ranges::new(ranges),
            filter,
            page_size,
            buffer: VecDeque::new(),
            order: Order {
                side: Side::Replica,
                last: None,
            },
            exhausted: false,
            rows_seen: 0,
        }
    }

    /// The next row without consuming it; reads a page when needed.
    pub async fn head(&mut self) -> Result<Option<&Keyed>, UnitError> {
        while self.buffer.is_empty() && !self.exhausted {
            self.fetch().await?;
        }
        Ok(self.buffer.front())
    }

    /// Consumes the head.
    pub fn pop(&mut self) -> Option<Keyed> {
        self.buffer.pop_front()
    }

    async fn fetch(&mut self) -> Result<(), UnitError> {
        let ranges = self.ranges.after(self.after.as_ref());
        if ranges.is_empty() {
            self.exhausted = true;
            return Ok(());
        }
        let rows = self
            .store
            .read_rows(&self.tenant_id, self.kind, &ranges, self.page_size)
            .await
            .map_err(UnitError::Store)?;
        self.exhausted = (rows.len() as u64) < self.page_size;
        for row in rows {
            let keyed = Keyed::new(row);
            self.order.check(&keyed.key)?;
            self.after = Some(keyed.key.clone());
            match self.ranges.locate(&keyed.key) {
                Place::Beyond => {
                    self.exhausted = true;
                    return Ok(());
                }
                Place::Between => continue,
                Place::Inside => {}
            }
            if self
                .filter
                .as_ref()
                .is_none_or(|keep| keep.contains(&keyed.key))
            {
                self.rows_seen += 1;
                self.buffer.push_back(keyed);
            }
        }
        Ok(())
    }
}
