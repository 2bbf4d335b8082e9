//! Tests of the `declared` variant and of decoding both forms, on the
//! catalog schema (every field type) and the default schema.

use crate::{
    DecodeError, declared_from_wire, declared_to_wire, decode_change, decode_declared,
    encode_change, encode_declared, v1,
};
use recon_core::schema::{DeclaredChange, DeclaredRow, FieldValue, InvalidRow, Schema};
use recon_core::{Change, Deletion, EntityKey, Group, Kind, Membership, Record, Row, Tenant};
use recon_core::{User, UserStatus, Version};
use v1::change_event::Change as WireChange;

const CATALOG_TOML: &str = include_str!("../../../proto/schemas/catalog.toml");

fn catalog() -> Schema {
    Schema::parse(CATALOG_TOML).expect("the catalog schema is valid")
}

fn row(kind: &str, key: &[&str], values: Vec<FieldValue>, sequence: u64) -> DeclaredRow {
    DeclaredRow {
        kind: kind.to_owned(),
        scope: "s1".to_owned(),
        key: key.iter().map(|part| (*part).to_owned()).collect(),
        values,
        version: Version::new(1, sequence),
    }
}

fn text(value: &str) -> FieldValue {
    FieldValue::Text(value.to_owned())
}

/// A product with a value of every field type; `subtitle` as given.
fn product(subtitle: FieldValue) -> DeclaredChange {
    DeclaredChange::Upsert(row(
        "product",
        &["p-1"],
        vec![
            text("Lamp"),
            FieldValue::Integer(-1250),
            FieldValue::Boolean(false),
            FieldValue::Json(r#"{"colour":"red","watts":40}"#.to_owned()),
            FieldValue::Timestamp(1_700_000_000_123_000),
            text("listed"),
            subtitle,
        ],
        42,
    ))
}

fn round_trip(change: &DeclaredChange, schema: &Schema) -> DeclaredChange {
    let bytes = encode_declared(change, schema).expect("encode");
    decode_declared(&bytes, schema).expect("decode")
}

/// The wire event of `change`, for tests that edit it before decoding.
fn wire(change: &DeclaredChange, schema: &Schema) -> v1::ChangeEvent {
    declared_to_wire(change, schema).expect("to wire")
}

fn declared_fields(event: &mut v1::ChangeEvent) -> &mut Vec<v1::NamedValue> {
    match event.change.as_mut() {
        Some(WireChange::Declared(declared)) => &mut declared.fields,
        other => panic!("not a declared event: {other:?}"),
    }
}

#[test]
fn declared_changes_of_every_field_type_round_trip() {
    let schema = catalog();
    let changes = [
        product(text("warm white")),
        product(FieldValue::Null),
        DeclaredChange::Upsert(row(
            "product",
            &["p-2"],
            vec![
                text(""),
                FieldValue::Integer(i64::MIN),
                FieldValue::Boolean(true),
                FieldValue::Null,
                FieldValue::Null,
                text("draft"),
                text(""),
            ],
            2,
        )),
        DeclaredChange::Upsert(row("shop", &["s1"], vec![text("Shop one")], 3)),
        DeclaredChange::Upsert(row(
            "variant",
            &["p-1", "v-2"],
            vec![text("large"), FieldValue::Integer(i64::MAX)],
            4,
        )),
        DeclaredChange::Upsert(row("tag", &["lighting"], Vec::new(), 5)),
        DeclaredChange::Upsert(row("product_tag", &["p-1", "lighting"], Vec::new(), 6)),
        DeclaredChange::Delete(row("variant", &["p-1", "v-2"], Vec::new(), 7)),
        DeclaredChange::Delete(row("shop", &["s1"], Vec::new(), 8)),
    ];
    for change in changes {
        assert_eq!(round_trip(&change, &schema), change);
    }
}

#[test]
fn null_and_empty_text_stay_apart() {
    let schema = catalog();
    let null = product(FieldValue::Null);
    let empty = product(text(""));
    let null_bytes = encode_declared(&null, &schema).expect("encode");
    let empty_bytes = encode_declared(&empty, &schema).expect("encode");
    assert_ne!(null_bytes, empty_bytes);
    assert_eq!(decode_declared(&null_bytes, &schema).expect("decode"), null);
    assert_eq!(
        decode_declared(&empty_bytes, &schema).expect("decode"),
        empty
    );
}

#[test]
fn a_field_the_schema_does_not_declare_is_refused_naming_it() {
    let schema = catalog();
    let mut event = wire(&product(FieldValue::Null), &schema);
    declared_fields(&mut event).push(v1::NamedValue {
        name: "colour".into(),
        value: Some(v1::named_value::Value::Text("red".into())),
    });
    let error = declared_from_wire(event, &schema).expect_err("unknown field");
    assert!(
        matches!(&error, DecodeError::UnknownField { field, .. } if field == "colour"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("\"colour\""), "{message}");
    assert!(
        message.contains("consumer's schema is behind the producer's"),
        "{message}"
    );
}

#[test]
fn a_missing_nullable_field_reads_as_null() {
    let schema = catalog();
    let mut event = wire(&product(text("warm white")), &schema);
    declared_fields(&mut event)
        .retain(|field| field.name != "subtitle" && field.name != "released_at");
    let DeclaredChange::Upsert(decoded) = declared_from_wire(event, &schema).expect("decode")
    else {
        panic!("not an upsert");
    };
    assert_eq!(decoded.values[4], FieldValue::Null, "released_at");
    assert_eq!(decoded.values[6], FieldValue::Null, "subtitle");
}

#[test]
fn a_missing_field_that_is_not_nullable_is_refused_naming_it() {
    let schema = catalog();
    let mut event = wire(&product(FieldValue::Null), &schema);
    declared_fields(&mut event).retain(|field| field.name != "price_cents");
    let error = declared_from_wire(event, &schema).expect_err("missing field");
    assert!(
        matches!(&error, DecodeError::MissingField { field, .. } if field == "price_cents"),
        "{error:?}"
    );
    assert!(error.to_string().contains("not nullable"), "{error}");
}

/// The rules above, as they meet a schema change: the producer's schema
/// gains a nullable field.
#[test]
fn a_nullable_field_added_to_the_schema_is_read_both_ways_round() {
    let old_schema = catalog();
    let new_schema = Schema::parse(&CATALOG_TOML.replace(
        r#"{ name = "subtitle", type = "text", nullable = true },"#,
        r#"{ name = "subtitle", type = "text", nullable = true },
    { name = "colour", type = "text", nullable = true },"#,
    ))
    .expect("the new schema is valid");
    let DeclaredChange::Upsert(old_row) = product(text("warm white")) else {
        unreachable!("product is an upsert");
    };
    let mut new_row = old_row.clone();
    new_row.values.push(text("red"));
    let new_bytes = encode_declared(&DeclaredChange::Upsert(new_row), &new_schema).expect("encode");
    let error = decode_declared(&new_bytes, &old_schema).expect_err("old consumer");
    assert!(error.to_string().contains("\"colour\""), "{error}");

    let old_bytes =
        encode_declared(&DeclaredChange::Upsert(old_row.clone()), &old_schema).expect("encode");
    let mut read_by_new = old_row;
    read_by_new.values.push(FieldValue::Null);
    assert_eq!(
        decode_declared(&old_bytes, &new_schema).expect("new consumer"),
        DeclaredChange::Upsert(read_by_new)
    );
}

#[test]
fn fields_are_matched_by_name_not_position() {
    let schema = catalog();
    let change = product(text("warm white"));
    let mut event = wire(&change, &schema);
    declared_fields(&mut event).reverse();
    assert_eq!(declared_from_wire(event, &schema).expect("decode"), change);
}

#[test]
fn a_field_named_twice_is_refused() {
    let schema = catalog();
    let mut event = wire(&product(FieldValue::Null), &schema);
    let fields = declared_fields(&mut event);
    let title = fields[0].clone();
    fields.push(title);
    let error = declared_from_wire(event, &schema).expect_err("duplicate");
    assert!(
        matches!(&error, DecodeError::DuplicateField { field, .. } if field == "title"),
        "{error:?}"
    );
}

/// A value type added to the format later reaches this consumer as a
/// field without a value.
#[test]
fn a_field_without_a_known_value_is_refused() {
    let schema = catalog();
    let mut event = wire(&product(FieldValue::Null), &schema);
    declared_fields(&mut event)[1].value = None;
    let error = declared_from_wire(event, &schema).expect_err("no value");
    assert!(
        matches!(&error, DecodeError::NoValue { field, .. } if field == "price_cents"),
        "{error:?}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_refused_naming_the_field() {
    let schema = catalog();
    let mut event = wire(&product(FieldValue::Null), &schema);
    declared_fields(&mut event)[1].value = Some(v1::named_value::Value::Text("12.50".into()));
    let error = declared_from_wire(event, &schema).expect_err("text in an integer field");
    assert!(matches!(error, DecodeError::Row(InvalidRow::Value { .. })));
    assert!(error.to_string().contains("price_cents"), "{error}");
}

#[test]
fn json_is_stored_canonical_and_non_json_is_refused() {
    let schema = catalog();
    let change = product(FieldValue::Null);
    let mut event = wire(&change, &schema);
    declared_fields(&mut event)[3].value = Some(v1::named_value::Value::Json(
        r#"{ "watts": 40, "colour": "red" }"#.into(),
    ));
    assert_eq!(declared_from_wire(event, &schema).expect("decode"), change);

    let mut event = wire(&change, &schema);
    declared_fields(&mut event)[3].value = Some(v1::named_value::Value::Json("{oops".into()));
    let error = declared_from_wire(event, &schema).expect_err("not JSON");
    assert!(error.to_string().contains("attributes"), "{error}");
}

#[test]
fn a_kind_the_schema_does_not_declare_is_refused_naming_it() {
    let schema = catalog();
    let mut event = wire(&product(FieldValue::Null), &schema);
    if let Some(WireChange::Declared(declared)) = event.change.as_mut() {
        declared.kind = "bundle".into();
    }
    let error = declared_from_wire(event, &schema).expect_err("unknown kind");
    assert!(
        matches!(&error, DecodeError::UnknownKind { kind } if kind == "bundle"),
        "{error:?}"
    );
    assert!(error.to_string().contains("behind"), "{error}");
}

#[test]
fn a_deletion_with_data_fields_is_refused() {
    let schema = catalog();
    let mut event = wire(&product(FieldValue::Null), &schema);
    if let Some(WireChange::Declared(declared)) = event.change.as_mut() {
        declared.operation = v1::Operation::Delete as i32;
    }
    let error = declared_from_wire(event, &schema).expect_err("deletion with data");
    assert!(error.to_string().contains("deletion"), "{error}");
}

#[test]
fn a_row_that_does_not_fit_is_not_encoded() {
    let schema = catalog();
    let wrong_arity = DeclaredChange::Upsert(row("variant", &["p-1"], Vec::new(), 1));
    let error = encode_declared(&wrong_arity, &schema).expect_err("one key value of two");
    assert!(matches!(error, InvalidRow::Arity { .. }), "{error:?}");
}

/// One change of every default kind, upserts and deletions.
fn typed_changes() -> Vec<Change> {
    let version = Version::new(3, 9);
    let upsert = |record| {
        Change::Upsert(Row {
            tenant_id: "t1".into(),
            record,
            version,
        })
    };
    let delete = |kind, key| {
        Change::Delete(Deletion {
            tenant_id: "t1".into(),
            kind,
            key,
            version,
        })
    };
    vec![
        upsert(Record::from(Tenant {
            id: "t1".into(),
            name: "Tenant one".into(),
        })),
        upsert(Record::from(User {
            id: "u1".into(),
            email: "a@b".into(),
            display_name: "".into(),
            status: UserStatus::Disabled,
        })),
        upsert(Record::from(Group {
            id: "g1".into(),
            name: "Admins".into(),
        })),
        upsert(Record::from(Membership {
            group_id: "g1".into(),
            user_id: "u1".into(),
        })),
        delete(Kind::TENANT, EntityKey::id("t1")),
        delete(Kind::USER, EntityKey::id("u1")),
        delete(Kind::GROUP, EntityKey::id("g1")),
        delete(Kind::MEMBERSHIP, EntityKey::pair("g1", "u1")),
    ]
}

/// The default schema with a kind of its own added at the end.
fn extended_default_schema() -> Schema {
    let text = format!(
        "{}\n[[kind]]\nname = \"role\"\nplural = \"roles\"\ntable = \"replica_roles\"\nkey = [\"id\"]\n",
        recon_core::schema::DEFAULT_SCHEMA_TOML
    );
    Schema::parse(&text).expect("the extended schema is valid")
}

#[test]
fn a_typed_event_of_every_default_kind_decodes_to_its_declared_form() {
    let parsed_default =
        Schema::parse(recon_core::schema::DEFAULT_SCHEMA_TOML).expect("default schema");
    let extended = extended_default_schema();
    for change in typed_changes() {
        let bytes = encode_change(&change);
        let expected = DeclaredChange::of_change(&decode_change(&bytes).expect("typed decode"));
        for schema in [Schema::default_schema(), &parsed_default, &extended] {
            assert_eq!(
                decode_declared(&bytes, schema).expect("declared decode"),
                expected,
                "{change:?}"
            );
        }
    }
}

#[test]
fn a_typed_event_is_refused_by_a_schema_that_declares_its_kind_otherwise() {
    let changed_user = Schema::parse(&recon_core::schema::DEFAULT_SCHEMA_TOML.replace(
        r#"{ name = "display_name", type = "text" },"#,
        r#"{ name = "display_name", type = "text", nullable = true },"#,
    ))
    .expect("schema");
    let user_event = encode_change(&typed_changes()[1]);
    for schema in [catalog(), changed_user] {
        let error = decode_declared(&user_event, &schema).expect_err("typed user");
        assert!(
            matches!(error, DecodeError::TypedKind { kind: "user" }),
            "{error:?}"
        );
    }
    // The unchanged kinds of the second schema still decode.
    let group_event = encode_change(&typed_changes()[2]);
    let schema = Schema::parse(&recon_core::schema::DEFAULT_SCHEMA_TOML.replace(
        r#"{ name = "display_name", type = "text" },"#,
        r#"{ name = "display_name", type = "text", nullable = true },"#,
    ))
    .expect("schema");
    assert!(decode_declared(&group_event, &schema).is_ok());
}

/// The typed decoder never required a tenant row's id to be its tenant;
/// the declared form is a scope row and does.
#[test]
fn a_typed_tenant_event_of_another_tenant_is_refused_in_declared_form() {
    let bytes = encode_change(&Change::Upsert(Row {
        tenant_id: "t1".into(),
        record: Record::from(Tenant {
            id: "t2".into(),
            name: "other".into(),
        }),
        version: Version::new(1, 1),
    }));
    assert!(decode_change(&bytes).is_ok(), "the typed path is unchanged");
    let error = decode_declared(&bytes, Schema::default_schema()).expect_err("scope row");
    assert!(
        matches!(error, DecodeError::Row(InvalidRow::ScopeRow { .. })),
        "{error:?}"
    );
}

#[test]
fn a_declared_event_of_the_default_schema_decodes_to_its_typed_change() {
    let schema = Schema::default_schema();
    for change in typed_changes() {
        let declared = DeclaredChange::of_change(&change);
        let bytes = encode_declared(&declared, schema).expect("encode");
        assert_ne!(bytes, encode_change(&change), "two forms");
        assert_eq!(decode_change(&bytes).expect("decode"), change);
        assert_eq!(decode_declared(&bytes, schema).expect("decode"), declared);
    }
}

#[test]
fn a_declared_event_of_another_schema_is_refused_by_the_typed_decoder() {
    let bytes = encode_declared(&product(FieldValue::Null), &catalog()).expect("encode");
    let error = decode_change(&bytes).expect_err("a product is no default kind");
    assert!(
        matches!(&error, DecodeError::UnknownKind { kind } if kind == "product"),
        "{error:?}"
    );
}

/// Declared events as bytes on the wire, computed outside Rust from the
/// text format with `protoc` (run in `proto/`, as the typed vectors in
/// `lib.rs`). They pin the field numbers, the zig-zag integers, a `false`
/// and a NULL that a oneof still writes, and an empty text that is not a
/// NULL.
const DECLARED_WIRE_VECTORS: [(&str, &str); 3] = [
    (
        r#"tenant_id: "s1" version { generation: 1 sequence: 42 } declared { operation: OPERATION_UPSERT kind: "product" key: "p-1" fields { name: "title" text: "Lamp" } fields { name: "price_cents" integer: -1250 } fields { name: "active" boolean: false } fields { name: "attributes" json: "{\"colour\":\"red\",\"watts\":40}" } fields { name: "released_at" timestamp: 1700000000123000 } fields { name: "state" text: "listed" } fields { name: "subtitle" null: NULL_VALUE } }"#,
        "0a02733112040801102aa2019f010801120770726f647563741a03702d31220d0a057469746c651a044c616d7022100a0b70726963655f63656e747320c313220a0a06616374697665280022290a0a617474726962757465733a1b7b22636f6c6f7572223a22726564222c227761747473223a34307d22160a0b72656c65617365645f617430f081818283898506220f0a0573746174651a066c6973746564220c0a087375627469746c651000",
    ),
    (
        r#"tenant_id: "s1" version { generation: 1 sequence: 43 } declared { operation: OPERATION_DELETE kind: "variant" key: "p-1" key: "v-2" }"#,
        "0a02733112040801102ba201150802120776617269616e741a03702d311a03762d32",
    ),
    (
        r#"tenant_id: "s1" version { generation: 2 sequence: 1 } declared { operation: OPERATION_UPSERT kind: "shop" key: "s1" fields { name: "title" text: "" } }"#,
        "0a027331120408021001a201170801120473686f701a02733122090a057469746c651a00",
    ),
];

/// The changes of [`DECLARED_WIRE_VECTORS`], in order.
fn declared_vector_changes() -> [DeclaredChange; 3] {
    let mut shop = row("shop", &["s1"], vec![text("")], 1);
    shop.version = Version::new(2, 1);
    [
        product(FieldValue::Null),
        DeclaredChange::Delete(row("variant", &["p-1", "v-2"], Vec::new(), 43)),
        DeclaredChange::Upsert(shop),
    ]
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&hex[index..index + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn declared_changes_encode_to_the_pinned_wire_bytes_and_decode_from_them() {
    let schema = catalog();
    for ((text, hex), change) in DECLARED_WIRE_VECTORS.iter().zip(declared_vector_changes()) {
        let bytes = from_hex(hex);
        assert_eq!(
            encode_declared(&change, &schema).expect("encode"),
            bytes,
            "encoding {text}"
        );
        assert_eq!(
            decode_declared(&bytes, &schema).expect("decode"),
            change,
            "decoding {text}"
        );
    }
}

/// Not a test of speed (nothing is asserted about time): prints how long
/// decoding a typed user event takes on each path, to decide whether
/// `decode_change` may go through the declared form. Run with
/// `cargo test --release -p recon-proto decode_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn decode_speed() {
    use std::hint::black_box;
    use std::time::Instant;
    const EVENTS: u32 = 200_000;
    let typed_bytes = encode_change(&typed_changes()[1]);
    let declared_bytes = encode_declared(
        &DeclaredChange::of_change(&typed_changes()[1]),
        Schema::default_schema(),
    )
    .expect("encode");
    let product_bytes = encode_declared(&product(FieldValue::Null), &catalog()).expect("encode");
    let catalog = catalog();
    let schema = Schema::default_schema();
    let measure = |label: &str, decode: &dyn Fn() -> bool| {
        let started = Instant::now();
        for _ in 0..EVENTS {
            assert!(black_box(decode()));
        }
        let nanos = started.elapsed().as_nanos() / u128::from(EVENTS);
        println!("{label:<58} {nanos:>6} ns/event");
    };
    measure("typed user, decode_change (direct typed path)", &|| {
        decode_change(black_box(&typed_bytes)).is_ok()
    });
    measure("typed user, decode_declared(default)", &|| {
        decode_declared(black_box(&typed_bytes), schema).is_ok()
    });
    measure("typed user, decode_declared(default)?.to_change()", &|| {
        decode_declared(black_box(&typed_bytes), schema)
            .ok()
            .and_then(|declared| declared.to_change(schema).ok())
            .is_some()
    });
    measure("declared user, decode_change", &|| {
        decode_change(black_box(&declared_bytes)).is_ok()
    });
    measure("declared user, decode_declared(default)", &|| {
        decode_declared(black_box(&declared_bytes), schema).is_ok()
    });
    measure(
        "declared product (7 fields, json), decode_declared",
        &|| decode_declared(black_box(&product_bytes), &catalog).is_ok(),
    );
}
