//! The replicated domain: tenants, users, groups and memberships.
//!
//! Every entity lives inside a tenant (a tenant lives inside itself). Within
//! its tenant and kind an entity is identified by an [`EntityKey`]; keys are
//! ordered byte-wise, which is the order of every key-ordered stream in recon
//! (source pages, store range reads, the merge-diff).

use crate::schema::{FieldValue, InvalidRow, KindDef, Schema};
use crate::{RowHash, Version};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

pub use crate::id::{InvalidInput, MAX_ID_CHARS, validate_id};

/// Checks a tenant id: an entity id ([`validate_id`]) that is not
/// [`GLOBAL_SCOPE`](crate::GLOBAL_SCOPE), which the store reserves for the
/// fence and the generation floor of every tenant at once — a tenant of
/// that id would raise every tenant's floor with its own.
pub fn validate_tenant_id(id: &str) -> Result<(), InvalidInput> {
    validate_id("tenant id", id)?;
    if id == crate::GLOBAL_SCOPE {
        return Err(InvalidInput::new(
            "tenant id",
            format!("{id:?} is reserved (the scope of every tenant's fence and generation floor)"),
        ));
    }
    Ok(())
}

/// A replicated kind, by its singular name (`user`, `product`): cheap to
/// copy, compare and print. Which kinds exist, and what their rows hold, is
/// the [schema](crate::schema)'s; the constants name the default schema's
/// kinds. Kinds order by name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind(&'static str);

impl Kind {
    /// The default schema's tenant; every other kind of it lives in one.
    pub const TENANT: Kind = Kind("tenant");
    /// The default schema's user of a tenant.
    pub const USER: Kind = Kind("user");
    /// The default schema's group of a tenant.
    pub const GROUP: Kind = Kind("group");
    /// The default schema's membership of a user in a group, keyed by
    /// `(group_id, user_id)`.
    pub const MEMBERSHIP: Kind = Kind("membership");

    /// The default schema's kinds in upsert order: tenants first,
    /// memberships last. Deletions run in the reverse order.
    pub const UPSERT_ORDER: [Kind; 4] = [Kind::TENANT, Kind::USER, Kind::GROUP, Kind::MEMBERSHIP];

    /// The default schema's kinds that live inside a tenant.
    pub const TENANT_SCOPED: [Kind; 3] = [Kind::USER, Kind::GROUP, Kind::MEMBERSHIP];

    /// The kind named `name` (its singular name). Names are interned: each
    /// distinct name is allocated once per process.
    pub fn named(name: &str) -> Kind {
        static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        for known in Kind::UPSERT_ORDER {
            if known.0 == name {
                return known;
            }
        }
        let mut names = NAMES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(interned) = names.get(name) {
            return Kind(interned);
        }
        let interned: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(interned);
        Kind(interned)
    }

    /// The kind of a declared definition.
    pub fn of(definition: &'static KindDef) -> Kind {
        Kind(definition.name.as_str())
    }

    /// The singular name, as used in reports, metrics and events.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0)
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Kind::named(&name))
    }
}

/// Identity of an entity within its tenant and kind: the values of the
/// kind's key fields, in key order.
///
/// Ordered part by part, each compared byte-wise — the order of the
/// Source API's pages. Its cursor form joins the parts with `:`; only the
/// last part may hold one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityKey {
    parts: Vec<String>,
}

impl EntityKey {
    /// A key of one part (a tenant, user or group).
    pub fn id(id: impl Into<String>) -> Self {
        Self {
            parts: vec![id.into()],
        }
    }

    /// A key of two parts (a membership: group id, user id).
    pub fn pair(first: impl Into<String>, second: impl Into<String>) -> Self {
        Self {
            parts: vec![first.into(), second.into()],
        }
    }

    /// A key of its parts, in key order.
    pub fn from_parts(parts: Vec<String>) -> Self {
        Self { parts }
    }

    /// The parts, in key order.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// The parts, owned.
    pub fn into_parts(self) -> Vec<String> {
        self.parts
    }

    /// The first part (a scope row's key is its scope value).
    pub fn first(&self) -> &str {
        self.parts.first().map_or("", String::as_str)
    }

    /// Parses a key of `parts` parts from its cursor form; `kind` names the
    /// kind in errors. Each part must be a valid id ([`validate_id`]).
    pub fn parse(text: &str, parts: usize, kind: &str) -> Result<EntityKey, InvalidInput> {
        let split: Vec<&str> = text.splitn(parts.max(1), ':').collect();
        if split.len() != parts.max(1) {
            return Err(InvalidInput {
                what: "cursor",
                reason: format!("{kind} cursor {text:?} does not have {parts} parts joined by `:`"),
            });
        }
        for part in &split {
            validate_id("key part", part)?;
        }
        Ok(EntityKey::from_parts(
            split.into_iter().map(str::to_owned).collect(),
        ))
    }
}

impl fmt::Display for EntityKey {
    /// The cursor form: the parts joined by `:`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.parts.join(":"))
    }
}

/// A key range `(after, until]` of one kind within one tenant. `None`
/// bounds are open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// Exclusive lower bound.
    pub after: Option<EntityKey>,
    /// Inclusive upper bound.
    pub until: Option<EntityKey>,
}

impl KeyRange {
    /// The whole key space.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &EntityKey) -> bool {
        self.after.as_ref().is_none_or(|after| key > after)
            && self.until.as_ref().is_none_or(|until| key <= until)
    }

    /// The keys after `after` (all keys for `None`).
    pub fn after(after: Option<EntityKey>) -> Self {
        Self { after, until: None }
    }

    /// Whether every key above `key` lies beyond the range's upper bound.
    pub fn ends_at_or_before(&self, key: &EntityKey) -> bool {
        self.until.as_ref().is_some_and(|until| key >= until)
    }
}

/// The lower and the upper bounds of `ranges`, column `part` of their keys
/// (0: the id or group id, 1: the user id), each list joined by the unit
/// separator (U+001F) — an open bound is empty. Ids contain no control
/// character, so the joined text splits back exactly: this is how the
/// adapters hand many ranges to SQL as two text parameters per key column.
pub fn joined_bounds<'a>(
    ranges: impl Iterator<Item = &'a KeyRange> + Clone,
    part: usize,
) -> [String; 2] {
    let column = |key: &Option<EntityKey>| -> String {
        key.as_ref()
            .and_then(|key| key.parts().get(part))
            .cloned()
            .unwrap_or_default()
    };
    let join = |bound: fn(&KeyRange) -> &Option<EntityKey>| -> String {
        ranges
            .clone()
            .map(|range| column(bound(range)))
            .collect::<Vec<_>>()
            .join("\u{1f}")
    };
    [join(|range| &range.after), join(|range| &range.until)]
}

/// What is left of `ranges` (in key order, disjoint) after `cursor`: the
/// ranges that end at or before it dropped, the first one left starting
/// after it.
pub fn ranges_after(ranges: &[KeyRange], cursor: Option<&EntityKey>) -> Vec<KeyRange> {
    let Some(cursor) = cursor else {
        return ranges.to_vec();
    };
    ranges
        .iter()
        .filter(|range| !range.ends_at_or_before(cursor))
        .map(|range| KeyRange {
            after: match &range.after {
                Some(after) if after >= cursor => Some(after.clone()),
                _ => Some(cursor.clone()),
            },
            until: range.until.clone(),
        })
        .collect()
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tenant {
    /// Tenant id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// The user may sign in.
    Active,
    /// The user is disabled.
    Disabled,
}

impl UserStatus {
    /// Lowercase name as in the Source API.
    pub const fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for UserStatus {
    type Err = InvalidInput;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(InvalidInput::new(
                "user status",
                format!("{other:?} is not one of active, disabled"),
            )),
        }
    }
}

/// A user of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct User {
    /// User id, unique within the tenant.
    pub id: String,
    /// E-mail address.
    pub email: String,
    /// Name shown to people.
    pub display_name: String,
    /// Whether the user may sign in.
    pub status: UserStatus,
}

/// A group of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Group {
    /// Group id, unique within the tenant.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A user's membership in a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The group.
    pub group_id: String,
    /// The member.
    pub user_id: String,
}

/// The data of one entity of a declared kind: its key and its data fields'
/// values, held against the kind's definition in the schema.
///
/// Built through [`Record::new`] (checked against the kind) or, for the
/// default schema, from its typed views ([`Tenant`], [`User`], [`Group`],
/// [`Membership`]).
#[derive(Clone)]
pub struct Record {
    definition: &'static KindDef,
    key: EntityKey,
    values: Vec<FieldValue>,
}

impl Record {
    /// The record of `definition` with `key` and `values` (the data fields'
    /// values in declaration order), checked against the definition: as
    /// many key parts and values as declared, valid ids, every value fits
    /// its field.
    pub fn new(
        definition: &'static KindDef,
        key: EntityKey,
        values: Vec<FieldValue>,
    ) -> Result<Self, InvalidRow> {
        definition.check_key(key.parts())?;
        definition.check_values(&values)?;
        Ok(Self::unchecked(definition, key, values))
    }

    /// The record of values already known to fit `definition` (read back
    /// from a table made from it, or built from a typed view): the caller
    /// vouches for them.
    pub fn unchecked(
        definition: &'static KindDef,
        key: EntityKey,
        values: Vec<FieldValue>,
    ) -> Self {
        Self {
            definition,
            key,
            values,
        }
    }

    /// The record's kind.
    pub fn kind(&self) -> Kind {
        Kind::of(self.definition)
    }

    /// The kind's definition.
    pub fn definition(&self) -> &'static KindDef {
        self.definition
    }

    /// The record's key within its scope and kind.
    pub fn key(&self) -> EntityKey {
        self.key.clone()
    }

    /// The record's key, borrowed.
    pub fn key_ref(&self) -> &EntityKey {
        &self.key
    }

    /// The data fields' values, in declaration order.
    pub fn values(&self) -> &[FieldValue] {
        &self.values
    }

    /// The value of the data field `name`, if the kind declares it.
    pub fn value(&self, name: &str) -> Option<&FieldValue> {
        let index = self
            .definition
            .fields
            .iter()
            .position(|field| field.name == name)?;
        self.values.get(index)
    }

    /// The text of the data field `name`: empty when the kind does not
    /// declare it or its value is not text (an enum's value is text).
    pub fn text(&self, name: &str) -> &str {
        match self.value(name) {
            Some(FieldValue::Text(text)) => text,
            _ => "",
        }
    }

    /// The canonical hash of the record's data (see [`RowHash`] and
    /// [`crate::schema::encode_row`]).
    pub fn row_hash(&self) -> RowHash {
        crate::schema::row_hash_of_values(self.definition, self.key.parts(), &self.values)
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.definition.tag == other.definition.tag
            && self.definition.name == other.definition.name
            && self.key == other.key
            && self.values == other.values
    }
}

impl Eq for Record {}

impl std::hash::Hash for Record {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.definition.name.hash(state);
        self.key.hash(state);
        self.values.hash(state);
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Record")
            .field("kind", &self.definition.name)
            .field("key", &self.key)
            .field("values", &self.values)
            .finish()
    }
}

/// The default schema's definition of `kind`.
fn default_definition(kind: Kind) -> &'static KindDef {
    Schema::default_schema()
        .kind(kind.as_str())
        .unwrap_or_else(|| unreachable!("the default schema declares {kind}"))
}

fn text(value: &str) -> FieldValue {
    FieldValue::Text(value.to_owned())
}

impl From<Tenant> for Record {
    fn from(tenant: Tenant) -> Self {
        Record::unchecked(
            default_definition(Kind::TENANT),
            EntityKey::id(tenant.id),
            vec![FieldValue::Text(tenant.name)],
        )
    }
}

impl From<User> for Record {
    fn from(user: User) -> Self {
        Record::unchecked(
            default_definition(Kind::USER),
            EntityKey::id(user.id),
            vec![
                FieldValue::Text(user.email),
                FieldValue::Text(user.display_name),
                text(user.status.as_str()),
            ],
        )
    }
}

impl From<Group> for Record {
    fn from(group: Group) -> Self {
        Record::unchecked(
            default_definition(Kind::GROUP),
            EntityKey::id(group.id),
            vec![FieldValue::Text(group.name)],
        )
    }
}

impl From<Membership> for Record {
    fn from(membership: Membership) -> Self {
        Record::unchecked(
            default_definition(Kind::MEMBERSHIP),
            EntityKey::pair(membership.group_id, membership.user_id),
            Vec::new(),
        )
    }
}

impl Record {
    /// The typed view of a default-schema tenant.
    pub fn as_tenant(&self) -> Option<Tenant> {
        (self.kind() == Kind::TENANT).then(|| Tenant {
            id: self.key.first().to_owned(),
            name: self.text("name").to_owned(),
        })
    }

    /// The typed view of a default-schema user (an unknown status reads as
    /// disabled).
    pub fn as_user(&self) -> Option<User> {
        (self.kind() == Kind::USER).then(|| User {
            id: self.key.first().to_owned(),
            email: self.text("email").to_owned(),
            display_name: self.text("display_name").to_owned(),
            status: self.text("status").parse().unwrap_or(UserStatus::Disabled),
        })
    }

    /// The typed view of a default-schema group.
    pub fn as_group(&self) -> Option<Group> {
        (self.kind() == Kind::GROUP).then(|| Group {
            id: self.key.first().to_owned(),
            name: self.text("name").to_owned(),
        })
    }

    /// The typed view of a default-schema membership.
    pub fn as_membership(&self) -> Option<Membership> {
        (self.kind() == Kind::MEMBERSHIP).then(|| Membership {
            group_id: self.key.first().to_owned(),
            user_id: self.key.parts().get(1).cloned().unwrap_or_default(),
        })
    }
}

/// One versioned entity as held by a source or a replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Row {
    /// The tenant the entity belongs to (for a tenant: its own id).
    pub tenant_id: String,
    /// The entity's data.
    pub record: Record,
    /// The version of the change that produced this data.
    pub version: Version,
}

impl Row {
    /// The entity's kind.
    pub fn kind(&self) -> Kind {
        self.record.kind()
    }

    /// The entity's key within its tenant and kind.
    pub fn key(&self) -> EntityKey {
        self.record.key()
    }
}

/// The deletion of one entity, identified by tenant, kind and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Deletion {
    /// The tenant the entity belonged to (for a tenant: its own id).
    pub tenant_id: String,
    /// The entity's kind.
    pub kind: Kind,
    /// The entity's key.
    pub key: EntityKey,
    /// The version of the deletion; kept as a tombstone.
    pub version: Version,
}

/// One change of one entity: what a Kafka event carries and what the store's
/// apply path writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// Create or update the entity to this data and version.
    Upsert(Row),
    /// Delete the entity, leaving a tombstone at this version.
    Delete(Deletion),
}

impl Change {
    /// The tenant the change belongs to.
    pub fn tenant_id(&self) -> &str {
        match self {
            Change::Upsert(row) => &row.tenant_id,
            Change::Delete(deletion) => &deletion.tenant_id,
        }
    }

    /// The kind of the changed entity.
    pub fn kind(&self) -> Kind {
        match self {
            Change::Upsert(row) => row.kind(),
            Change::Delete(deletion) => deletion.kind,
        }
    }

    /// The key of the changed entity.
    pub fn key(&self) -> EntityKey {
        match self {
            Change::Upsert(row) => row.key(),
            Change::Delete(deletion) => deletion.key.clone(),
        }
    }

    /// The version of the change.
    pub fn version(&self) -> Version {
        match self {
            Change::Upsert(row) => row.version,
            Change::Delete(deletion) => deletion.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_joined_per_key_column_with_open_ends_empty() {
        let ranges = [
            KeyRange {
                after: None,
                until: Some(EntityKey::pair("g1", "u1")),
            },
            KeyRange {
                after: Some(EntityKey::pair("g2", "u2")),
                until: None,
            },
        ];
        assert_eq!(
            joined_bounds(ranges.iter(), 0),
            ["\u{1f}g2".to_owned(), "g1\u{1f}".to_owned()]
        );
        assert_eq!(
            joined_bounds(ranges.iter(), 1),
            ["\u{1f}u2".to_owned(), "u1\u{1f}".to_owned()]
        );
    }

    #[test]
    fn what_is_left_of_ranges_after_a_cursor() {
        let range = |after: Option<&str>, until: Option<&str>| KeyRange {
            after: after.map(EntityKey::id),
            until: until.map(EntityKey::id),
        };
        let ranges = vec![
            range(None, Some("c")),
            range(Some("e"), Some("g")),
            range(Some("k"), None),
        ];
        assert_eq!(ranges_after(&ranges, None), ranges);
        // Inside the first: it starts at the cursor.
        assert_eq!(
            ranges_after(&ranges, Some(&EntityKey::id("b")))[0],
            range(Some("b"), Some("c"))
        );
        // At the end of the first: it is gone.
        assert_eq!(
            ranges_after(&ranges, Some(&EntityKey::id("c"))),
            ranges[1..].to_vec()
        );
        // Between two: the next keeps its own lower bound.
        assert_eq!(
            ranges_after(&ranges, Some(&EntityKey::id("d"))),
            ranges[1..].to_vec()
        );
        assert_eq!(
            ranges_after(&ranges, Some(&EntityKey::id("z"))),
            vec![range(Some("z"), None)]
        );
    }

    #[test]
    fn keys_order_bytewise_then_by_secondary() {
        assert!(EntityKey::id("B") < EntityKey::id("a"));
        assert!(EntityKey::id("a") < EntityKey::id("ab"));
        assert!(EntityKey::pair("g1", "z") < EntityKey::pair("g2", "a"));
        assert!(EntityKey::pair("g", "a") < EntityKey::pair("g", "b"));
    }

    #[test]
    fn membership_cursor_round_trips() {
        let key = EntityKey::parse("g-1:u-2", 2, "membership").expect("valid cursor");
        assert_eq!(key, EntityKey::pair("g-1", "u-2"));
        assert_eq!(key.to_string(), "g-1:u-2");
    }

    #[test]
    fn bad_cursors_are_named() {
        let error = EntityKey::parse("no-colon", 2, "membership").expect_err("must fail");
        assert_eq!(
            error.to_string(),
            "invalid cursor: membership cursor \"no-colon\" does not have 2 parts joined by `:`"
        );
        // Only the last part may hold the separator.
        let key = EntityKey::parse("a:b:c", 2, "variant").expect("valid");
        assert_eq!(key.parts(), ["a", "b:c"]);
        let user = |text: &str| EntityKey::parse(text, 1, "user");
        let error = user("").expect_err("must fail");
        assert!(error.to_string().contains("must not be empty"));
        let error = user(&"x".repeat(300)).expect_err("must fail");
        assert!(error.to_string().contains("300 characters"));
        // Counted in characters, as JSON Schema's maxLength counts them.
        assert!(user(&"é".repeat(200)).is_ok());
        assert!(user(&"é".repeat(201)).is_err());
    }
}
