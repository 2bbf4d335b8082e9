//! Schema files: the default and catalog schemas, one test per kind of
//! problem, and the canonical encoding's pinned vectors.

use super::*;
use crate::digest::{element, postgres_element_expression_of};
use crate::{Membership, Record, Tenant, User, UserStatus, Version};
use proptest::prelude::*;

const CATALOG_TOML: &str = include_str!("../../../../proto/schemas/catalog.toml");

fn catalog() -> Schema {
    Schema::parse(CATALOG_TOML).expect("the catalog schema is valid")
}

fn names<'a>(kinds: impl Iterator<Item = &'a KindDef>) -> Vec<&'a str> {
    kinds.map(|kind| kind.name.as_str()).collect()
}

/// The problems `text` is refused for, as messages.
fn problems(text: &str) -> Vec<String> {
    match Schema::parse(text) {
        Ok(_) => panic!("schema accepted:\n{text}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_default_schema_is_todays_model() {
    let schema = Schema::default_schema();
    assert_eq!(schema.scope().name, "tenant");
    assert_eq!(schema.scope_column(), "tenant_id");
    assert_eq!(
        names(schema.apply_order()),
        ["tenant", "user", "group", "membership"]
    );
    let user = schema.kind("users").expect("users");
    assert_eq!(user.table, "replica_users");
    assert_eq!(user.tag, 2);
    let fields: Vec<&str> = user
        .fields
        .iter()
        .map(|field| field.name.as_str())
        .collect();
    assert_eq!(fields, ["email", "display_name", "status"]);
    let membership = schema.kind("membership").expect("membership");
    assert_eq!(membership.key, ["group_id", "user_id"]);
    assert!(!schema.scope().scoped && membership.scoped);
}

#[test]
fn the_catalog_schema_orders_parents_first() {
    let schema = catalog();
    assert_eq!(
        names(schema.apply_order()),
        ["shop", "product", "variant", "tag", "product_tag"]
    );
    assert_eq!(
        names(schema.apply_order().rev()),
        ["product_tag", "tag", "variant", "product", "shop"]
    );
    assert_eq!(schema.scope_column(), "shop_id");
}

#[test]
fn references_reorder_kinds_declared_before_their_parents() {
    let schema = Schema::parse(
        r#"
        scope = "org"
        [[kind]]
        name = "binding"
        plural = "bindings"
        table = "bindings"
        key = ["role", "account"]
        references = ["role", "account"]
        [[kind]]
        name = "org"
        plural = "orgs"
        table = "orgs"
        key = ["id"]
        [[kind]]
        name = "role"
        plural = "roles"
        table = "roles"
        key = ["id"]
        [[kind]]
        name = "account"
        plural = "accounts"
        table = "accounts"
        key = ["id"]
        "#,
    )
    .expect("valid");
    assert_eq!(
        names(schema.apply_order()),
        ["org", "role", "account", "binding"]
    );
    // Tags stay file positions whatever the apply order.
    assert_eq!(schema.kind("binding").expect("binding").tag, 1);
}

const ONE_KIND: &str = r#"
scope = "tenant"
[[kind]]
name = "tenant"
plural = "tenants"
table = "tenants"
key = ["id"]
"#;

#[test]
fn an_unknown_type_is_named() {
    let text = format!("{ONE_KIND}field = [{{ name = \"size\", type = \"float\" }}]\n");
    assert_eq!(
        problems(&text),
        [
            "kind \"tenant\", field \"size\": unknown type \"float\" (one of text, integer, boolean, timestamp, enum, json)"
        ]
    );
}

#[test]
fn a_missing_key_is_named() {
    let text = ONE_KIND.replace("key = [\"id\"]\n", "");
    let found = problems(&text);
    assert!(
        found.contains(&"kind \"tenant\" has no key field: add `key = [\"id\"]`".to_owned()),
        "{found:?}"
    );
}

#[test]
fn duplicate_names_are_named() {
    let text = format!(
        "{ONE_KIND}field = [{{ name = \"id\", type = \"text\" }}]\n{}",
        ONE_KIND.replace("scope = \"tenant\"", "")
    );
    let found = problems(&text);
    assert!(
        found.contains(&"field of kind \"tenant\" \"id\" is declared twice".to_owned()),
        "{found:?}"
    );
    assert!(
        found.contains(&"kind name or plural \"tenant\" is declared twice".to_owned()),
        "{found:?}"
    );
    assert!(
        found.contains(&"table \"tenants\" is declared twice".to_owned()),
        "{found:?}"
    );
}

#[test]
fn a_reference_to_an_unknown_kind_is_named() {
    let text = format!(
        "{ONE_KIND}[[kind]]\nname = \"user\"\nplural = \"users\"\ntable = \"users\"\nkey = [\"id\"]\nreferences = [\"team\"]\n"
    );
    assert_eq!(
        problems(&text),
        ["kind \"user\" references \"team\", which is not a declared kind"]
    );
}

#[test]
fn reserved_column_names_are_refused() {
    let text = format!(
        "{ONE_KIND}[[kind]]\nname = \"user\"\nplural = \"users\"\ntable = \"users\"\nkey = [\"tenant_id\"]\nfield = [{{ name = \"digest\", type = \"text\" }}]\n"
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("kind \"user\": \"tenant_id\" is a column recon adds"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("kind \"user\": \"digest\" is a column recon adds"),
        "{found:?}"
    );
}

#[test]
fn names_the_source_api_uses_are_refused() {
    let text = format!(
        "{}[[kind]]\nname = \"count\"\nplural = \"counts\"\ntable = \"counts\"\nkey = [\"version\"]\n",
        ONE_KIND.replace("plural = \"tenants\"", "plural = \"digests\"")
    );
    assert_eq!(
        problems(&text),
        [
            "plural of kind \"tenant\" \"digests\" is not allowed: the Source API uses it (reserved: capabilities, counts, digests, pages, id, watermark)",
            "plural of kind \"count\" \"counts\" is not allowed: the Source API uses it (reserved: capabilities, counts, digests, pages, id, watermark)",
            "field of kind \"count\" \"version\" is not allowed: a Source API item carries the row's version under this name",
        ]
    );
}

#[test]
fn a_cycle_is_named_kind_by_kind() {
    let kind = |name: &str, reference: &str| {
        format!(
            "[[kind]]\nname = \"{name}\"\nplural = \"{name}s\"\ntable = \"{name}s\"\nkey = [\"id\"]\nreferences = [\"{reference}\"]\n"
        )
    };
    let text = format!(
        "{ONE_KIND}{}{}{}",
        kind("a", "c"),
        kind("b", "a"),
        kind("c", "b")
    );
    assert_eq!(problems(&text), ["references form a cycle: a → c → b → a"]);
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let text = r#"
        scope = "org"
        [[kind]]
        name = "Tenant"
        plural = "tenants"
        table = "tenants"
        key = []
        field = [
            { name = "n", type = "integer", max_length = 3 },
            { name = "s", type = "enum" },
            { name = "t", type = "text", values = ["a"] },
        ]
    "#;
    let found = problems(text);
    assert_eq!(found.len(), 6, "{found:#?}");
    assert!(found[0].contains("scope kind \"org\" is not declared"));
    assert!(
        found
            .iter()
            .any(|problem| problem.contains("kind name \"Tenant\" is not allowed"))
    );
    assert!(
        found
            .iter()
            .any(|problem| problem.contains("`max_length` is for text fields, not integer"))
    );
    assert!(
        found
            .iter()
            .any(|problem| problem.contains("an enum needs `values"))
    );
    assert!(
        found
            .iter()
            .any(|problem| problem.contains("`values` is for enum fields, not text"))
    );
    let joined = Schema::parse(text).expect_err("invalid").to_string();
    assert!(
        joined.starts_with("invalid schema (6 problems):\n  - "),
        "{joined}"
    );
}

#[test]
fn a_misspelt_property_is_a_syntax_error_naming_it() {
    let text = format!("{ONE_KIND}field = [{{ name = \"n\", type = \"text\", nulable = true }}]\n");
    let found = problems(&text);
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("unknown field `nulable`"), "{found:?}");
}

fn product_key_and_values(nulls: bool) -> (Vec<&'static str>, Vec<FieldValue>) {
    let values = if nulls {
        vec![
            FieldValue::Text("Lamp".into()),
            FieldValue::Integer(0),
            FieldValue::Boolean(false),
            FieldValue::Null,
            FieldValue::Null,
            FieldValue::Text("draft".into()),
            FieldValue::Text(String::new()),
        ]
    } else {
        vec![
            FieldValue::Text("Lamp".into()),
            FieldValue::Integer(-1999),
            FieldValue::Boolean(true),
            FieldValue::Json(r#"{"a":[1,2],"b":null}"#.into()),
            FieldValue::Timestamp(1_796_625_063_123_000),
            FieldValue::Text("listed".into()),
            FieldValue::Null,
        ]
    };
    (vec!["SKU-1"], values)
}

#[test]
fn the_encoding_of_every_type_is_pinned() {
    // Computed independently with Python's hashlib and struct from the
    // definition in value.rs (docs/schema.md shows the script).
    let schema = catalog();
    let product = schema.kind("product").expect("product");
    let (key, values) = product_key_and_values(false);
    for (field, value) in product.fields.iter().zip(&values) {
        field.check(value).expect("the values fit the fields");
    }
    let hash = row_hash_of_values(product, &key, &values);
    assert_eq!(hash.to_hex(), "2af2efb7dd28877ee6c3e6e4150dc93b");
    assert_eq!(element(&hash, Version::new(3, 7)), 35_594_441_899_687_028);
    let (key, values) = product_key_and_values(true);
    assert_eq!(
        row_hash_of_values(product, &key, &values).to_hex(),
        "e48baa351dd3cae6295626a449a954cf"
    );
}

#[test]
fn null_differs_from_empty_text() {
    let schema = catalog();
    let product = schema.kind("product").expect("product");
    let (key, mut values) = product_key_and_values(true);
    let with_empty = row_hash_of_values(product, &key, &values);
    values[6] = FieldValue::Null;
    assert_ne!(row_hash_of_values(product, &key, &values), with_empty);
}

#[test]
fn values_are_checked_against_their_fields() {
    let schema = catalog();
    let product = schema.kind("product").expect("product");
    let field = |name: &str| product.field(name).expect("field");
    let refused =
        |name: &str, value: FieldValue| field(name).check(&value).expect_err("refused").to_string();
    assert_eq!(
        refused("state", FieldValue::Text("gone".into())),
        "field \"state\": \"gone\" is not one of draft, listed, retired"
    );
    assert_eq!(
        refused("title", FieldValue::Null),
        "field \"title\": is null, and the field is not nullable"
    );
    assert_eq!(
        refused("price_cents", FieldValue::Text("12".into())),
        "field \"price_cents\": holds a text, the field is integer"
    );
    assert!(refused("title", FieldValue::Text("x".repeat(201))).contains("201 characters"));
    assert!(
        refused("attributes", FieldValue::Json("{\"b\":1, \"a\":2}".into())).contains("canonical")
    );
}

#[test]
fn canonical_json_sorts_keys_and_drops_spaces() {
    assert_eq!(
        canonical_json(r#"{ "b": {"y": 1, "x": [true, null]}, "a": "é" }"#).expect("json"),
        r#"{"a":"é","b":{"x":[true,null],"y":1}}"#
    );
    assert!(
        canonical_json("{")
            .expect_err("not json")
            .starts_with("not JSON")
    );
}

#[test]
fn the_element_expression_follows_the_field_types() {
    let schema = catalog();
    let product = schema.kind("product").expect("product");
    let expression = postgres_element_expression_of(product);
    assert!(expression.starts_with("recon_row_digest(generation, sequence, 2, recon_digest_field(sku) || recon_digest_field(title) || decode('00000008', 'hex') || int8send(price_cents)"), "{expression}");
    assert!(
        expression.contains("coalesce(recon_digest_field(attributes), decode('ffffffff', 'hex'))"),
        "{expression}"
    );
}

/// The row hash as the typed code before declared schemas computed it
/// (encoding v1, written out per kind): the reference the declared
/// encoding of the default schema must equal.
fn typed_v1_hash(record: &Record) -> String {
    use sha2::{Digest, Sha256};
    let (tag, fields): (u8, Vec<String>) = if let Some(tenant) = record.as_tenant() {
        (1, vec![tenant.id, tenant.name])
    } else if let Some(user) = record.as_user() {
        let status = user.status.as_str().to_owned();
        (2, vec![user.id, user.email, user.display_name, status])
    } else if let Some(group) = record.as_group() {
        (3, vec![group.id, group.name])
    } else if let Some(membership) = record.as_membership() {
        (4, vec![membership.group_id, membership.user_id])
    } else {
        unreachable!("a default-schema record")
    };
    let mut encoding = b"recon-row-v1\0".to_vec();
    encoding.push(tag);
    for field in fields {
        encoding.extend_from_slice(&(field.len() as u32).to_be_bytes());
        encoding.extend_from_slice(field.as_bytes());
    }
    hex::encode(&Sha256::digest(&encoding)[..16])
}

fn default_record() -> impl Strategy<Value = Record> {
    let id = "[a-z0-9é:-]{0,8}";
    prop_oneof![
        (id, id).prop_map(|(id, name)| Record::from(Tenant { id, name })),
        (id, id, id, any::<bool>()).prop_map(|(id, email, display_name, active)| {
            Record::from(User {
                id,
                email,
                display_name,
                status: if active {
                    UserStatus::Active
                } else {
                    UserStatus::Disabled
                },
            })
        }),
        (id, id).prop_map(|(id, name)| Record::from(crate::Group { id, name })),
        (id, id).prop_map(|(group_id, user_id)| Record::from(Membership { group_id, user_id })),
    ]
}

proptest! {
    #[test]
    fn the_declared_encoding_of_the_default_schema_is_todays_hash(record in default_record()) {
        let kind = record.definition();
        for (field, value) in kind.fields.iter().zip(record.values()) {
            prop_assert!(field.check(value).is_ok());
        }
        prop_assert_eq!(record.row_hash().to_hex(), typed_v1_hash(&record));
    }
}

proptest! {
    #[test]
    fn default_changes_round_trip_through_their_declared_form(
        record in default_record(),
        delete in any::<bool>(),
        generation in 0u64..5,
        sequence in any::<u64>(),
    ) {
        let tenant_id = "tenant-1".to_owned();
        let version = Version::new(generation, sequence);
        let change = if delete {
            crate::Change::Delete(crate::Deletion {
                tenant_id,
                kind: record.kind(),
                key: record.key(),
                version,
            })
        } else {
            crate::Change::Upsert(crate::Row { tenant_id, record, version })
        };
        let declared = DeclaredChange::of_change(&change);
        let key = &declared.row().key;
        let valid_ids = key.iter().all(|part| !part.is_empty())
            && key[..key.len() - 1].iter().all(|part| !part.contains(':'));
        prop_assume!(valid_ids && (declared.row().kind != "tenant" || declared.row().key[0] == "tenant-1"));
        prop_assert_eq!(declared.to_change(Schema::default_schema()).expect("valid"), change);
    }
}

#[test]
fn a_declared_row_that_does_not_fit_is_refused_with_the_reason() {
    let schema = catalog();
    let row = |kind: &str, key: &[&str], values: Vec<FieldValue>| DeclaredRow {
        kind: kind.to_owned(),
        scope: "shop-1".to_owned(),
        key: key.iter().map(|part| (*part).to_owned()).collect(),
        values,
        version: Version::new(1, 1),
    };
    let refused =
        |row: DeclaredRow, data: bool| row.check(&schema, data).expect_err("refused").to_string();
    assert_eq!(
        refused(row("widget", &["a"], vec![]), true),
        "unknown kind \"widget\""
    );
    assert_eq!(
        refused(row("variant", &["a"], vec![]), false),
        "kind \"variant\": the key has 1 values, the schema declares 2"
    );
    assert_eq!(
        refused(row("tag", &[""], vec![]), false),
        "kind \"tag\": invalid key field: must not be empty"
    );
    assert_eq!(
        refused(
            row(
                "variant",
                &["a", "b"],
                vec![FieldValue::Text("L".into()), FieldValue::Null]
            ),
            true
        ),
        "kind \"variant\": field \"stock\": is null, and the field is not nullable"
    );
    assert_eq!(
        refused(
            row("shop", &["shop-2"], vec![FieldValue::Text("S".into())]),
            true
        ),
        "a shop row's scope \"shop-1\" is not its own key \"shop-2\""
    );
    row("variant", &["a", "b"], vec![])
        .check(&schema, false)
        .expect("a deletion carries no data");
}

mod evolution {
    use super::*;
    use crate::schema::evolution::{SchemaChange, compare};

    fn with(text: &str, from: &str, to: &str) -> Schema {
        let changed = text.replacen(from, to, 1);
        assert_ne!(changed, text, "{from:?} not found");
        Schema::parse(&changed).expect("valid")
    }

    fn refusals(old: &Schema, new: &Schema) -> Vec<String> {
        compare(old, new)
            .expect_err("refused")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_kind_and_a_nullable_field_added_at_the_end_are_taken() {
        let old = catalog();
        let new = with(
            CATALOG_TOML,
            "    { name = \"stock\", type = \"integer\" },\n",
            "    { name = \"stock\", type = \"integer\" },\n    { name = \"weight_grams\", type = \"integer\", nullable = true },\n",
        );
        let text = format!(
            "{CATALOG_TOML}\n[[kind]]\nname = \"review\"\nplural = \"reviews\"\ntable = \"catalog_reviews\"\nkey = [\"id\"]\n"
        );
        let newer = Schema::parse(&text).expect("valid");
        assert_eq!(compare(&old, &old), Ok(Vec::new()));
        let changes = compare(&old, &new).expect("taken");
        assert!(
            matches!(&changes[..], [SchemaChange::AddField { kind, field, .. }] if kind == "variant" && field.name == "weight_grams"),
            "{changes:?}"
        );
        let changes = compare(&old, &newer).expect("taken");
        assert!(
            matches!(&changes[..], [SchemaChange::AddKind(kind)] if kind.name == "review" && kind.tag == 6),
            "{changes:?}"
        );
    }

    #[test]
    fn widening_is_taken_narrowing_is_refused() {
        let old = catalog();
        let wider = with(
            CATALOG_TOML,
            "values = [\"draft\", \"listed\", \"retired\"]",
            "values = [\"draft\", \"listed\", \"retired\", \"archived\"]",
        );
        assert_eq!(compare(&old, &wider), Ok(Vec::new()));
        let longer = with(CATALOG_TOML, "max_length = 200", "max_length = 300");
        assert_eq!(compare(&old, &longer), Ok(Vec::new()));
        let shorter = with(CATALOG_TOML, "max_length = 200", "max_length = 100");
        assert_eq!(
            refusals(&old, &shorter),
            [
                "kind \"product\", field \"title\": max_length lowered from 200 to 100: keep the old field and add a new nullable field at the end of the kind's fields"
            ]
        );
        let fewer = with(
            CATALOG_TOML,
            "\"draft\", \"listed\", \"retired\"",
            "\"draft\", \"listed\"",
        );
        assert!(refusals(&old, &fewer)[0].contains("enum values removed: retired"));
    }

    #[test]
    fn every_incompatible_change_is_named() {
        let old = catalog();
        let retyped = with(
            CATALOG_TOML,
            "name = \"price_cents\", type = \"integer\"",
            "name = \"price_cents\", type = \"text\"",
        );
        assert!(
            refusals(&old, &retyped)[0]
                .contains("field \"price_cents\": type changed from integer to text")
        );
        let rekeyed = with(
            CATALOG_TOML,
            "key = [\"sku\", \"variant_id\"]",
            "key = [\"variant_id\"]",
        );
        assert!(
            refusals(&old, &rekeyed)[0]
                .contains("kind \"variant\": key changed from (sku, variant_id) to (variant_id)")
        );
        let removed = with(
            CATALOG_TOML,
            "    { name = \"label\", type = \"text\" },\n",
            "",
        );
        assert!(refusals(&old, &removed)[0].contains("field \"label\" removed, renamed or moved"));
        let required = with(
            CATALOG_TOML,
            "    { name = \"stock\", type = \"integer\" },\n",
            "    { name = \"stock\", type = \"integer\" },\n    { name = \"weight\", type = \"integer\" },\n",
        );
        assert!(refusals(&old, &required)[0].contains("new field \"weight\" is not nullable"));
        let nullable = with(
            CATALOG_TOML,
            "{ name = \"label\", type = \"text\" }",
            "{ name = \"label\", type = \"text\", nullable = true }",
        );
        assert!(refusals(&old, &nullable)[0].contains("nullable changed from false to true"));
        let default = Schema::default_schema();
        let found = refusals(default, &old);
        assert!(
            found[0].contains("the scope kind changed from \"tenant\" to \"shop\""),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|refusal| refusal.contains("kind \"tenant\" removed or renamed")),
            "{found:?}"
        );
    }
}

#[test]
fn timestamps_read_and_print_in_utc_with_milliseconds() {
    let micros = parse_timestamp("2026-12-07T07:31:03.123+01:00").expect("rfc 3339");
    assert_eq!(micros, 1_796_625_063_123_000);
    assert_eq!(
        format_timestamp(micros).as_deref(),
        Some("2026-12-07T06:31:03.123Z")
    );
    assert_eq!(
        format_timestamp(-315_619_199_999_999).as_deref(),
        Some("1960-01-01T00:00:00.000001Z")
    );
    assert!(
        parse_timestamp("2026-12-07")
            .expect_err("no time")
            .contains("RFC 3339")
    );
    assert!(
        parse_timestamp("2026-12-07T06:31:03.123456789Z")
            .expect_err("ns")
            .contains("finer")
    );
}

#[test]
fn schemas_are_equal_whatever_their_layout() {
    let relaid = format!(
        "# the catalog, written again\n{}",
        CATALOG_TOML.replace(" = ", "=")
    );
    let schema = Schema::parse(&relaid).expect("valid");
    assert_eq!(schema, catalog());
    assert_ne!(schema.text(), catalog().text());
    assert_ne!(&schema, Schema::default_schema());
}
