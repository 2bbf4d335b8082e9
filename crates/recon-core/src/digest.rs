//! Range digests: whether a key range holds the same rows on both sides,
//! without transferring them (DESIGN §4).
//!
//! Each row contributes one 64-bit **element** that covers its data and its
//! version; a range's digest is its row count and the sum of its elements
//! modulo 2^64 — order-independent, so each side computes it as an index
//! range aggregate over a stored column, and adding one row is one addition.
//!
//! ```text
//! element v1 = first 8 bytes, as a big-endian i64, of
//!              SHA-256("recon-digest-v1" 0x00 ++ row hash (16 bytes, see hash.rs)
//!                      ++ generation (u64 big-endian) ++ sequence (u64 big-endian))
//! digest     = (count, sum of elements mod 2^64)
//! ```
//!
//! Two ranges with equal digests hold the same rows at the same versions
//! except with probability about 2^-64 per comparison. [`POSTGRES_FUNCTIONS`]
//! is the same definition in PostgreSQL's SQL, for stores that keep the
//! element as a generated column (computed from the row's own columns, so a
//! row changed behind the writer's back still changes its element).

use crate::schema::{FieldDef, FieldType, KindDef, Schema};
use crate::{Kind, Record, RowHash, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The name of this definition of the element (above). A Source API
/// names the definition its digests follow (`digest_definition` of
/// `GET /v1/capabilities`); digests of another definition are never
/// compared with recon's. A new definition gets a new name.
pub const DEFINITION: &str = "recon-digest-v1";

/// What the element's hash starts with: the definition's name and a zero
/// byte.
const ELEMENT_PREFIX: &[u8] = b"recon-digest-v1\0";

/// The element of a row with data hash `hash` at `version`.
pub fn element(hash: &RowHash, version: Version) -> i64 {
    let mut hasher = Sha256::new();
    hasher.update(ELEMENT_PREFIX);
    hasher.update(hash.as_bytes());
    hasher.update(version.generation.to_be_bytes());
    hasher.update(version.sequence.to_be_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// The element of `record` at `version`.
pub fn record_element(record: &Record, version: Version) -> i64 {
    element(&record.row_hash(), version)
}

/// The digest of a key range: its row count and the sum of its rows'
/// elements modulo 2^64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    /// Rows in the range.
    pub count: u64,
    /// Sum of their elements modulo 2^64.
    pub sum: u64,
}

impl RangeDigest {
    /// Adds one row's element.
    pub fn add(&mut self, element: i64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(element as u64);
    }

    /// The digest of a range aggregated in SQL as `count(*)`,
    /// `sum(element >> 32)` and `sum(element & 4294967295)` — two sums that
    /// cannot overflow a 64-bit integer for fewer than 2^31 rows, where
    /// `sum(element)` could.
    pub fn from_split_sums(count: u64, high: i64, low: i64) -> Self {
        Self {
            count,
            sum: (high as u64).wrapping_shl(32).wrapping_add(low as u64),
        }
    }

    /// The sum as 16 lowercase hex digits (the Source API's form).
    pub fn sum_hex(&self) -> String {
        format!("{:016x}", self.sum)
    }
}

/// SQL (PostgreSQL) that defines `recon_row_digest(generation, sequence,
/// kind_tag, encoded_fields)` and its helper `recon_digest_field(text)`:
/// [`element`] computed in the database. Idempotent (`CREATE OR REPLACE`).
///
/// Both are SQL functions over immutable built-ins only, so PostgreSQL
/// inlines them into the generated column's expression: a function it does
/// not inline costs a function call with its own executor per row (the
/// first definition, with `convert_to`, which is only STABLE: 13.5 µs a
/// user row; inlined: 3 µs). A field's UTF-8 bytes are `decode(…,
/// 'escape')` of the text with its backslashes doubled — byte for byte the
/// text in a UTF8 database; a database in another encoding keeps
/// `convert_to(…, 'UTF8')` (same values, not inlined). Constants are built
/// with `decode(…, 'hex')` and `E''` strings, which read the same whatever
/// `standard_conforming_strings` says.
pub const POSTGRES_FUNCTIONS: &str = r#"
DO $recon$ BEGIN
IF current_setting('server_encoding') = 'UTF8' THEN
  CREATE OR REPLACE FUNCTION recon_digest_field(field text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT int4send(octet_length(field)) || decode(replace(field, E'\\', E'\\\\'), 'escape') $$;
ELSE
  CREATE OR REPLACE FUNCTION recon_digest_field(field text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT int4send(octet_length(field)) || convert_to(field, 'UTF8') $$;
END IF;
END $recon$;
CREATE OR REPLACE FUNCTION recon_row_digest(generation bigint, sequence bigint, tag integer, fields bytea)
RETURNS bigint LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ('x' || encode(substr(sha256(
    decode('7265636f6e2d6469676573742d763100', 'hex')
    || substr(sha256(decode('7265636f6e2d726f772d763100', 'hex') || set_byte(decode('00', 'hex'), 0, tag) || fields), 1, 16)
    || int8send(generation) || int8send(sequence)), 1, 8), 'hex'))::bit(64)::bigint $$;
"#;

/// The SQL expression (PostgreSQL, after [`POSTGRES_FUNCTIONS`]) of a
/// default-schema `kind`'s element over its table's own columns; see
/// [`postgres_element_expression_of`].
pub fn postgres_element_expression(kind: Kind) -> String {
    let schema = Schema::default_schema();
    match schema.kind(kind.as_str()) {
        Some(definition) => postgres_element_expression_of(definition),
        None => unreachable!("the default schema declares every kind"),
    }
}

/// The SQL expression (PostgreSQL, after [`POSTGRES_FUNCTIONS`]) of a
/// declared kind's element over its table's own columns: its key columns,
/// its data columns (named as its fields, of the types
/// `docs/schema.md` gives them), `generation` and `sequence` — the same
/// names in the monolith's and the replica's tables. It is the encoding of
/// [`crate::schema::encode_row`], field by field, built from immutable
/// expressions only, so that PostgreSQL inlines it into a generated column.
pub fn postgres_element_expression_of(kind: &KindDef) -> String {
    let mut encoded: Vec<String> = kind
        .key
        .iter()
        .map(|column| format!("recon_digest_field({column})"))
        .collect();
    encoded.extend(kind.fields.iter().map(postgres_field_encoding));
    if encoded.is_empty() {
        encoded.push("''::bytea".to_owned());
    }
    format!(
        "recon_row_digest(generation, sequence, {}, {})",
        kind.tag,
        encoded.join(" || ")
    )
}

/// One data field's canonical encoding in SQL (NULL encodes as ff ff ff
/// ff: every part below is NULL for a NULL column, so `coalesce` supplies
/// the mark).
fn postgres_field_encoding(field: &FieldDef) -> String {
    let column = &field.name;
    let value = match field.field_type {
        FieldType::Text { .. } | FieldType::Enum { .. } | FieldType::Json => {
            format!("recon_digest_field({column})")
        }
        FieldType::Integer => format!("decode('00000008', 'hex') || int8send({column})"),
        FieldType::Boolean => format!(
            "decode('00000001', 'hex') || CASE {column} WHEN true THEN decode('01', 'hex') \
             WHEN false THEN decode('00', 'hex') END"
        ),
        FieldType::Timestamp => format!(
            "decode('00000008', 'hex') || int8send((extract(epoch FROM ({column} - \
             timestamptz '1970-01-01 00:00:00+00')) * 1000000)::bigint)"
        ),
    };
    if field.nullable {
        format!("coalesce({value}, decode('ffffffff', 'hex'))")
    } else {
        value
    }
}

/// The statements (PostgreSQL) that give each `(table, kind)` its
/// generated `digest` column: [`POSTGRES_FUNCTIONS`] first, then one
/// `ALTER TABLE` each (idempotent; rewrites the table once).
pub fn postgres_digest_columns(tables: &[(&str, Kind)]) -> Vec<String> {
    let mut statements = vec![POSTGRES_FUNCTIONS.to_owned()];
    statements.extend(tables.iter().map(|(table, kind)| {
        format!(
            "ALTER TABLE IF EXISTS {table} ADD COLUMN IF NOT EXISTS digest BIGINT \
             GENERATED ALWAYS AS ({}) STORED",
            postgres_element_expression(*kind)
        )
    }));
    statements
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_element_hash_starts_with_the_definition_name() {
        assert_eq!(
            &ELEMENT_PREFIX[..ELEMENT_PREFIX.len() - 1],
            DEFINITION.as_bytes()
        );
        assert_eq!(ELEMENT_PREFIX.last(), Some(&0));
    }

    use super::*;
    use crate::{Tenant, User, UserStatus};
    use proptest::prelude::*;

    fn user(name: &str) -> Record {
        Record::from(User {
            id: "u1".into(),
            email: "u1@example.test".into(),
            display_name: name.into(),
            status: UserStatus::Active,
        })
    }

    #[test]
    fn the_element_covers_data_and_version() {
        let version = Version::new(1, 7);
        let base = record_element(&user("Ann"), version);
        assert_eq!(base, record_element(&user("Ann"), version));
        assert_ne!(base, record_element(&user("Anne"), version));
        assert_ne!(base, record_element(&user("Ann"), Version::new(1, 8)));
        assert_ne!(base, record_element(&user("Ann"), Version::new(2, 7)));
    }

    #[test]
    fn the_element_is_pinned() {
        // Changing the definition breaks every stored digest: this value is
        // the contract with the Source API and the databases' SQL function.
        let tenant = Record::from(Tenant {
            id: "t1".into(),
            name: "Tenant One".into(),
        });
        let element = record_element(&tenant, Version::new(1, 1));
        assert_eq!(element, ELEMENT_T1);
    }

    /// `record_element(tenant t1 "Tenant One", 1.1)`, also computed from the
    /// definition above with Python's hashlib; the integration tests
    /// check PostgreSQL's `recon_row_digest` gives the same.
    const ELEMENT_T1: i64 = -2_501_479_540_925_313_336;

    #[test]
    fn split_sums_give_the_wrapping_sum() {
        let elements = [i64::MIN, i64::MAX, -1, 0, 1, 0x1234_5678_9abc_def0];
        let mut direct = RangeDigest::default();
        let (mut high, mut low) = (0i64, 0i64);
        for element in elements {
            direct.add(element);
            high += element >> 32;
            low += element & 0xffff_ffff;
        }
        assert_eq!(
            RangeDigest::from_split_sums(elements.len() as u64, high, low),
            direct
        );
    }

    #[test]
    fn the_expression_names_the_kinds_columns() {
        assert_eq!(
            postgres_element_expression(Kind::MEMBERSHIP),
            "recon_row_digest(generation, sequence, 4, recon_digest_field(group_id) || recon_digest_field(user_id))"
        );
    }

    proptest! {
        #[test]
        fn the_digest_does_not_depend_on_order(
            elements in proptest::collection::vec(any::<i64>(), 0..50),
            seed in any::<u64>(),
        ) {
            let mut forward = RangeDigest::default();
            for element in &elements {
                forward.add(*element);
            }
            let mut shuffled = elements.clone();
            let len = shuffled.len().max(1);
            shuffled.rotate_left((seed as usize) % len);
            shuffled.reverse();
            let mut backward = RangeDigest::default();
            for element in &shuffled {
                backward.add(*element);
            }
            prop_assert_eq!(forward, backward);
            let (high, low) = elements.iter().fold((0i64, 0i64), |(high, low), element| {
                (high + (element >> 32), low + (element & 0xffff_ffff))
            });
            prop_assert_eq!(RangeDigest::from_split_sums(elements.len() as u64, high, low), forward);
        }
    }
}
