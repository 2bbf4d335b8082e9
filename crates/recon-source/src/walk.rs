//! [`SourceWalk`]: the state of a walk over the pages of one (tenant, kind),
//! for the checks one page cannot make on its own.
//!
//! A caller asks the walk for the next request, fetches it, and hands the
//! page back to [`SourceWalk::accept`]. The walk refuses a page whose keys
//! repeat or go back behind keys already seen (a duplicate across pages), a
//! page after the last one, and a cursor that does not advance; and
//! [`SourceWalk::finish`] refuses a walk that has not seen the last page
//! (`next_after == None`) — absence can only be trusted once the whole range
//! was read. Pure; no I/O.

use recon_core::ports::{PageRequest, SourcePage};
use recon_core::{EntityKey, Kind};

/// A broken sequence of pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkViolation {
    /// A page's first key is not after the last key of an earlier page.
    #[error(
        "duplicate key across pages: page {page} starts with key {key:?}, not after the previous page's last key {previous:?}"
    )]
    DuplicateAcrossPages {
        /// Zero-based number of the offending page.
        page: u64,
        /// Its first offending key.
        key: String,
        /// The last key seen before it.
        previous: String,
    },
    /// A page's keys are not strictly increasing.
    #[error("keys out of order in page {page}: key {key:?} after {previous:?}")]
    KeysOutOfOrder {
        /// Zero-based number of the offending page.
        page: u64,
        /// The offending key.
        key: String,
        /// The key before it.
        previous: String,
    },
    /// `next_after` is not the page's last key (or set on an empty page),
    /// so the walk would not advance past what it read.
    #[error("page {page}: next_after {next_after:?} is not the page's last key {last:?}")]
    CursorMismatch {
        /// Zero-based number of the offending page.
        page: u64,
        /// The page's `next_after`.
        next_after: String,
        /// The page's last key, if it had items.
        last: Option<String>,
    },
    /// A page was handed in after the last page.
    #[error("a page arrived after the last page (page {page})")]
    PageAfterEnd {
        /// Zero-based number of the offending page.
        page: u64,
    },
    /// The walk was finished before its last page was seen.
    #[error("the walk ended after {pages} pages without reaching the last page")]
    Unfinished {
        /// Pages accepted.
        pages: u64,
    },
}

/// What a completed walk read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkSummary {
    /// Pages read.
    pub pages: u64,
    /// Rows read.
    pub rows: u64,
    /// Bytes of all page bodies.
    pub bytes: u64,
}

/// The state of a walk over the pages of one (tenant, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceWalk {
    tenant_id: String,
    kind: Kind,
    cursor: Option<EntityKey>,
    last_key: Option<EntityKey>,
    finished: bool,
    summary: WalkSummary,
}

impl SourceWalk {
    /// A walk over every key of `kind` in `tenant_id`.
    pub fn new(tenant_id: impl Into<String>, kind: Kind) -> Self {
        Self::starting_after(tenant_id, kind, None)
    }

    /// A walk over the keys after `after` (a key range's lower bound).
    pub fn starting_after(
        tenant_id: impl Into<String>,
        kind: Kind,
        after: Option<EntityKey>,
    ) -> Self {
        SourceWalk {
            tenant_id: tenant_id.into(),
            kind,
            cursor: after.clone(),
            last_key: after,
            finished: false,
            summary: WalkSummary {
                pages: 0,
                rows: 0,
                bytes: 0,
            },
        }
    }

    /// The request for the next page, or `None` once the last page was seen.
    pub fn next_request(&self, limit: u32) -> Option<PageRequest> {
        if self.finished {
            return None;
        }
        Some(PageRequest {
            tenant_id: self.tenant_id.clone(),
            kind: self.kind,
            after: self.cursor.clone(),
            limit,
            within: Vec::new(),
        })
    }

    /// Whether the last page was seen.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes the page fetched for [`Self::next_request`], checking it against
    /// the pages before it.
    pub fn accept(&mut self, page: &SourcePage) -> Result<(), WalkViolation> {
        let page_number = self.summary.pages;
        if self.finished {
            return Err(WalkViolation::PageAfterEnd { page: page_number });
        }
        let mut previous_in_page: Option<EntityKey> = None;
        for row in &page.rows {
            let key = row.key();
            if let Some(previous) = &previous_in_page {
                if key <= *previous {
                    return Err(WalkViolation::KeysOutOfOrder {
                        page: page_number,
                        key: key.to_string(),
                        previous: previous.to_string(),
                    });
                }
            } else if let Some(last_key) = &self.last_key
                && key <= *last_key
            {
                return Err(WalkViolation::DuplicateAcrossPages {
                    page: page_number,
                    key: key.to_string(),
                    previous: last_key.to_string(),
                });
            }
            previous_in_page = Some(key);
        }
        if let Some(next_after) = &page.next_after
            && previous_in_page.as_ref() != Some(next_after)
        {
            return Err(WalkViolation::CursorMismatch {
                page: page_number,
                next_after: next_after.to_string(),
                last: previous_in_page.map(|key| key.to_string()),
            });
        }
        if previous_in_page.is_some() {
            self.last_key = previous_in_page;
        }
        self.cursor = page.next_after.clone();
        self.finished = page.next_after.is_none();
        self.summary.pages += 1;
        self.summary.rows += u64::try_from(page.rows.len()).unwrap_or(u64::MAX);
        self.summary.bytes = self.summary.bytes.saturating_add(page.bytes);
        Ok(())
    }

    /// The summary of a walk that saw its last page; an error otherwise.
    pub fn finish(&self) -> Result<WalkSummary, WalkViolation> {
        if self.finished {
            Ok(self.summary)
        } else {
            Err(WalkViolation::Unfinished {
                pages: self.summary.pages,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_core::{Group, Record, Row, Version};

    fn page(ids: &[&str], next_after: Option<&str>) -> SourcePage {
        let rows = ids
            .iter()
            .map(|id| Row {
                tenant_id: "t".to_owned(),
                record: Record::from(Group {
                    id: (*id).to_owned(),
                    name: "n".to_owned(),
                }),
                version: Version::new(0, 1),
            })
            .collect();
        SourcePage {
            rows,
            watermark: Version::new(0, 5),
            next_after: next_after.map(EntityKey::id),
            bytes: 10,
        }
    }

    #[test]
    fn walks_to_the_end() {
        let mut walk = SourceWalk::new("t", Kind::GROUP);
        assert_eq!(walk.next_request(2).and_then(|request| request.after), None);
        walk.accept(&page(&["a", "b"], Some("b"))).expect("first");
        let request = walk.next_request(2).expect("more to read");
        assert_eq!(request.after, Some(EntityKey::id("b")));
        assert_eq!(request.tenant_id, "t");
        assert!(walk.finish().is_err());
        walk.accept(&page(&["c"], None)).expect("last");
        assert!(walk.is_finished());
        assert_eq!(walk.next_request(2), None);
        let summary = walk.finish().expect("finished");
        assert_eq!((summary.pages, summary.rows, summary.bytes), (2, 3, 20));
    }

    #[test]
    fn refuses_a_duplicate_across_pages() {
        let mut walk = SourceWalk::new("t", Kind::GROUP);
        walk.accept(&page(&["a", "b"], Some("b"))).expect("first");
        let error = walk
            .accept(&page(&["b", "c"], None))
            .expect_err("b repeats");
        assert!(matches!(
            error,
            WalkViolation::DuplicateAcrossPages { page: 1, .. }
        ));
        assert!(error.to_string().contains("duplicate key across pages"));
        let error = walk.accept(&page(&["a0"], None)).expect_err("goes back");
        assert!(matches!(error, WalkViolation::DuplicateAcrossPages { .. }));
    }

    #[test]
    fn refuses_an_unfinished_walk_and_pages_after_the_end() {
        let mut walk = SourceWalk::starting_after("t", Kind::GROUP, Some(EntityKey::id("m")));
        let error = walk
            .accept(&page(&["a"], None))
            .expect_err("below the range start");
        assert!(matches!(error, WalkViolation::DuplicateAcrossPages { .. }));
        walk.accept(&page(&["n"], Some("n"))).expect("in range");
        let error = walk.finish().expect_err("not at the end");
        assert_eq!(error, WalkViolation::Unfinished { pages: 1 });
        walk.accept(&page(&[], None)).expect("empty last page");
        walk.finish().expect("finished");
        let error = walk.accept(&page(&["z"], None)).expect_err("after the end");
        assert!(matches!(error, WalkViolation::PageAfterEnd { .. }));
    }

    #[test]
    fn refuses_a_cursor_that_does_not_advance() {
        let mut walk = SourceWalk::new("t", Kind::GROUP);
        let error = walk
            .accept(&page(&[], Some("a")))
            .expect_err("empty page, cursor set");
        assert!(matches!(
            error,
            WalkViolation::CursorMismatch { last: None, .. }
        ));
        let error = walk
            .accept(&page(&["a", "b"], Some("a")))
            .expect_err("cursor behind");
        assert!(matches!(error, WalkViolation::CursorMismatch { .. }));
        let error = walk
            .accept(&page(&["b", "a"], None))
            .expect_err("out of order");
        assert!(matches!(error, WalkViolation::KeysOutOfOrder { .. }));
    }
}
