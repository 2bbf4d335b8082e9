//! Rows of any declared kind, kept flat: a batch of one kind holds its
//! keys, its values and its versions in three vectors, so reading a page
//! allocates per value, never per row. [`RowRef`] is one row's view.

use recon_core::Version;
use recon_core::schema::FieldValue;

/// Key-ordered rows of one kind (flat; see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    key_width: usize,
    value_width: usize,
    keys: Vec<String>,
    values: Vec<FieldValue>,
    versions: Vec<Version>,
}

/// One row of a [`Rows`] batch (or of any owner), borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef<'a> {
    /// The scope value the row lives in.
    pub scope: &'a str,
    /// The key fields' values, in key order.
    pub key: &'a [String],
    /// The data fields' values, in declaration order.
    pub values: &'a [FieldValue],
    /// The version of the row's last change.
    pub version: Version,
}

impl Rows {
    /// An empty batch of rows with `key_width` key fields and
    /// `value_width` data fields, with room for `capacity` rows.
    pub fn new(key_width: usize, value_width: usize, capacity: usize) -> Rows {
        Rows {
            key_width,
            value_width,
            keys: Vec::with_capacity(capacity * key_width),
            values: Vec::with_capacity(capacity * value_width),
            versions: Vec::with_capacity(capacity),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Row `index`'s key.
    pub fn key(&self, index: usize) -> &[String] {
        &self.keys[index * self.key_width..(index + 1) * self.key_width]
    }

    /// Row `index`'s data values.
    pub fn values(&self, index: usize) -> &[FieldValue] {
        &self.values[index * self.value_width..(index + 1) * self.value_width]
    }

    /// Row `index`'s version.
    pub fn version(&self, index: usize) -> Version {
        self.versions[index]
    }

    /// Row `index` as a view, inside `scope`.
    pub fn row<'a>(&'a self, scope: &'a str, index: usize) -> RowRef<'a> {
        RowRef {
            scope,
            key: self.key(index),
            values: self.values(index),
            version: self.versions[index],
        }
    }

    /// Appends a row: the key parts and values are taken as given (their
    /// counts must be the batch's widths).
    pub fn push(
        &mut self,
        key: impl IntoIterator<Item = String>,
        values: impl IntoIterator<Item = FieldValue>,
        version: Version,
    ) {
        self.keys.extend(key);
        self.values.extend(values);
        self.versions.push(version);
    }

    /// Appends a key part of the row being read (see [`Rows::finish_row`]).
    pub(crate) fn push_key_part(&mut self, part: String) {
        self.keys.push(part);
    }

    /// Appends a value of the row being read.
    pub(crate) fn push_value(&mut self, value: FieldValue) {
        self.values.push(value);
    }

    /// Ends the row being read with its version.
    pub(crate) fn finish_row(&mut self, version: Version) {
        self.versions.push(version);
    }

    /// Sets row `index`'s version.
    pub(crate) fn set_version(&mut self, index: usize, version: Version) {
        self.versions[index] = version;
    }

    /// Keeps the first `count` rows.
    pub fn truncate(&mut self, count: usize) {
        self.keys.truncate(count * self.key_width);
        self.values.truncate(count * self.value_width);
        self.versions.truncate(count);
    }

    /// The last row's key, if any.
    pub fn last_key(&self) -> Option<&[String]> {
        self.len().checked_sub(1).map(|last| self.key(last))
    }

    /// The rows' views inside `scope`, in order.
    pub fn iter<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = RowRef<'a>> + 'a {
        (0..self.len()).map(move |index| self.row(scope, index))
    }
}

/// A key range `(after, until]` of one kind within one scope value; `None`
/// bounds are open. Keys compare part by part, each byte-wise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpan {
    /// Exclusive lower bound.
    pub after: Option<Vec<String>>,
    /// Inclusive upper bound.
    pub until: Option<Vec<String>>,
}

impl KeySpan {
    /// The whole key space.
    pub fn all() -> KeySpan {
        KeySpan::default()
    }

    fn ends_at_or_before(&self, key: &[String]) -> bool {
        self.until.as_deref().is_some_and(|until| key >= until)
    }
}

/// What is left of `spans` (in key order, disjoint) after `cursor`: the
/// spans that end at or before it dropped, the first one left starting
/// after it.
pub fn spans_after(spans: &[KeySpan], cursor: Option<&[String]>) -> Vec<KeySpan> {
    let Some(cursor) = cursor else {
        return spans.to_vec();
    };
    spans
        .iter()
        .filter(|span| !span.ends_at_or_before(cursor))
        .map(|span| KeySpan {
            after: match &span.after {
                Some(after) if after.as_slice() >= cursor => Some(after.clone()),
                _ => Some(cursor.to_vec()),
            },
            until: span.until.clone(),
        })
        .collect()
}

/// The cursor form of a key: its parts joined by `:`.
pub fn cursor_of(key: &[String]) -> String {
    key.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|part| (*part).to_owned()).collect()
    }

    #[test]
    fn flat_rows_read_back_by_row() {
        let mut rows = Rows::new(2, 1, 2);
        rows.push(
            key(&["a", "1"]),
            [FieldValue::Integer(1)],
            Version::new(1, 1),
        );
        rows.push(key(&["b", "2"]), [FieldValue::Null], Version::new(1, 2));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.key(1), key(&["b", "2"]).as_slice());
        assert_eq!(rows.values(0), [FieldValue::Integer(1)]);
        assert_eq!(rows.row("s", 1).version, Version::new(1, 2));
        rows.truncate(1);
        assert_eq!(rows.last_key(), Some(key(&["a", "1"]).as_slice()));
    }

    #[test]
    fn spans_after_a_cursor() {
        let spans = [
            KeySpan {
                after: None,
                until: Some(key(&["b"])),
            },
            KeySpan {
                after: Some(key(&["c"])),
                until: None,
            },
        ];
        let left = spans_after(&spans, Some(&key(&["bb"])));
        assert_eq!(
            left,
            [KeySpan {
                after: Some(key(&["c"])),
                until: None
            }]
        );
        let left = spans_after(&spans, Some(&key(&["a"])));
        assert_eq!(left[0].after, Some(key(&["a"])));
        assert_eq!(left.len(), 2);
    }
}
