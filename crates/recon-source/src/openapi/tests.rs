//! The generated documents: equal to the checked-in ones, sound (every
//! reference resolves, every component is used, every schema compiles),
//! and strict about the values each declared field type takes.

use super::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const CATALOG_TOML: &str = include_str!("../../../../proto/schemas/catalog.toml");
const DEFAULT_DOCUMENT: &str = include_str!("../../../../proto/source-api.openapi.json");
const CATALOG_DOCUMENT: &str = include_str!("../../../../proto/schemas/catalog.openapi.json");

fn catalog() -> Schema {
    Schema::parse(CATALOG_TOML).expect("the catalog schema is valid")
}

/// Pushes the JSON pointers where `left` and `right` differ.
fn differences(left: &Value, right: &Value, at: &str, found: &mut Vec<String>) {
    match (left, right) {
        (Value::Object(left_map), Value::Object(right_map)) => {
            let keys: BTreeSet<&String> = left_map.keys().chain(right_map.keys()).collect();
            for key in keys {
                let pointer = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (left_map.get(key), right_map.get(key)) {
                    (Some(left), Some(right)) => differences(left, right, &pointer, found),
                    (Some(_), None) => {
                        found.push(format!("{pointer}: only in the checked-in file"))
                    }
                    _ => found.push(format!("{pointer}: only in the generated document")),
                }
            }
        }
        (Value::Array(left_items), Value::Array(right_items))
            if left_items.len() == right_items.len() =>
        {
            for (index, (left, right)) in left_items.iter().zip(right_items).enumerate() {
                differences(left, right, &format!("{at}/{index}"), found);
            }
        }
        _ if left == right => {}
        _ => found.push(format!("{at}: checked in {left}, generated {right}")),
    }
}

#[test]
fn the_checked_in_documents_are_the_generators_output() {
    let cases = [
        (
            Schema::default_schema().clone(),
            DEFAULT_DOCUMENT,
            "proto/schemas/tenants-users-groups.toml",
            "proto/source-api.openapi.json",
        ),
        (
            catalog(),
            CATALOG_DOCUMENT,
            "proto/schemas/catalog.toml",
            "proto/schemas/catalog.openapi.json",
        ),
    ];
    for (schema, text, schema_path, document_path) in cases {
        let checked_in: Value = serde_json::from_str(text).expect("the document is JSON");
        let mut found = Vec::new();
        differences(&checked_in, &openapi_document(&schema), "", &mut found);
        assert!(
            found.is_empty(),
            "{document_path} is not the generator's output for {schema_path}; regenerate it with \
             `recon schema openapi --schema {schema_path} > {document_path}`:\n  {}",
            found.join("\n  ")
        );
    }
}

#[test]
fn differences_are_named_by_pointer() {
    let mut found = Vec::new();
    differences(
        &json!({"a": {"b/c": [1, 2]}, "d": 1}),
        &json!({"a": {"b/c": [1, 3]}, "e": 1}),
        "",
        &mut found,
    );
    assert_eq!(
        found,
        [
            "/a/b~1c/1: checked in 2, generated 3",
            "/d: only in the checked-in file",
            "/e: only in the generated document",
        ]
    );
}

/// Every `$ref` in `value` (local ones only; others are problems).
fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(reference)) => found.push(reference),
                    _ => references(item, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

/// The references reachable from the paths, following references.
fn reachable(document: &Value) -> BTreeSet<&str> {
    let mut pending = Vec::new();
    references(&document["paths"], &mut pending);
    let mut reached = BTreeSet::new();
    while let Some(reference) = pending.pop() {
        if !reached.insert(reference) {
            continue;
        }
        if let Some(target) = reference
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
        {
            references(target, &mut pending);
        }
    }
    reached
}

/// Follows a local `$ref` if `value` is one.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => document
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or(&Value::Null),
        None => value,
    }
}

/// A validator of one of `document`'s schemas, its components riding
/// along so that references resolve (as the integration tests' contract
/// does).
fn validator(document: &Value, schema: &Value) -> jsonschema::Validator {
    let mut wrapper = schema.clone();
    wrapper["$schema"] = Value::from("https://json-schema.org/draft/2020-12/schema");
    wrapper["components"] = document["components"].clone();
    jsonschema::validator_for(&wrapper).unwrap_or_else(|error| panic!("{schema}: {error}"))
}

/// What is wrong with `document` as an OpenAPI 3.1 document, as far as
/// recon's tests rely on it: its version, references that do not resolve,
/// components no path reaches, path parameters not declared (or declared but
/// not in the path), operation ids used twice, responses without a
/// description, schemas that do not compile.
fn problems(document: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if document["openapi"] != "3.1.0" {
        problems.push("not OpenAPI 3.1.0".to_owned());
    }
    let mut found = Vec::new();
    references(document, &mut found);
    for reference in found.iter().collect::<BTreeSet<_>>() {
        let resolves = reference
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
            .is_some();
        if !resolves {
            problems.push(format!("dangling $ref {reference}"));
        }
    }
    let referenced = reachable(document);
    let components = document["components"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (section, entries) in &components {
        for name in entries
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, _)| name)
        {
            let used = match section.as_str() {
                "securitySchemes" => document["security"].to_string().contains(name.as_str()),
                _ => referenced.contains(format!("#/components/{section}/{name}").as_str()),
            };
            if !used {
                problems.push(format!("unused component {section}/{name}"));
            }
        }
    }
    let mut operation_ids = BTreeSet::new();
    let paths = document["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in &paths {
        let templated: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
            .collect();
        for (method, operation) in item.as_object().into_iter().flatten() {
            let id = operation["operationId"].as_str().unwrap_or_default();
            if !operation_ids.insert(id.to_owned()) {
                problems.push(format!("{method} {path}: operationId {id:?} used twice"));
            }
            let mut declared = BTreeSet::new();
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let parameter = resolve(document, parameter);
                if parameter["in"] == "path" && parameter["required"] == true {
                    declared.insert(parameter["name"].as_str().unwrap_or_default());
                }
            }
            if declared != templated {
                problems.push(format!(
                    "{method} {path}: path parameters {declared:?}, template {templated:?}"
                ));
            }
            let responses = operation["responses"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if !responses.contains_key("200") {
                problems.push(format!("{method} {path}: no 200 response"));
            }
            for (status, response) in &responses {
                if !resolve(document, response)["description"].is_string() {
                    problems.push(format!("{method} {path} {status}: no description"));
                }
            }
        }
    }
    let schemas = components
        .get("schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (name, schema) in &schemas {
        let mut wrapper = schema.clone();
        wrapper["$schema"] = Value::from("https://json-schema.org/draft/2020-12/schema");
        wrapper["components"] = document["components"].clone();
        if let Err(error) = jsonschema::validator_for(&wrapper) {
            problems.push(format!("schema {name} does not compile: {error}"));
        }
    }
    problems
}

/// A schema of its scope kind alone: no counts, digests or multi-range
/// pages of any kind.
const SCOPE_ONLY: &str = r#"
scope = "org"
[[kind]]
name = "org"
plural = "orgs"
table = "orgs"
key = ["id"]
"#;

#[test]
fn the_generated_documents_are_sound() {
    let scope_only = Schema::parse(SCOPE_ONLY).expect("valid");
    for schema in [Schema::default_schema().clone(), catalog(), scope_only] {
        let document = openapi_document(&schema);
        assert_eq!(
            problems(&document),
            Vec::<String>::new(),
            "{}",
            schema.scope().name
        );
    }
}

#[test]
fn the_soundness_check_finds_broken_documents() {
    let mut document = openapi_document(&catalog());
    document["paths"]["/v1/shops"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        ["$ref"] = Value::from("#/components/schemas/Nowhere");
    document["paths"]["/v1/shops/{shop_id}/tags"]["get"]["operationId"] =
        Value::from("listProducts");
    document["paths"]["/v1/shops/{shop_id}/counts"]["get"]["parameters"] = json!([]);
    let found = problems(&document);
    for expected in [
        "dangling $ref #/components/schemas/Nowhere",
        "unused component schemas/ShopPage",
        "operationId \"listProducts\" used twice",
        "get /v1/shops/{shop_id}/counts: path parameters {}, template {\"shop_id\"}",
    ] {
        assert!(
            found.iter().any(|problem| problem.contains(expected)),
            "{expected:?} not in {found:#?}"
        );
    }
}

/// The JSON schema of the `200` answer of `GET path`.
fn page_schema<'a>(document: &'a Value, path: &str) -> &'a Value {
    &document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
}

#[test]
fn a_catalog_page_of_every_field_type_is_valid_and_a_wrong_value_is_refused() {
    let document = openapi_document(&catalog());
    let products = validator(
        &document,
        page_schema(&document, "/v1/shops/{shop_id}/products"),
    );
    let version = json!({"generation": 1, "sequence": 7});
    let full = json!({
        "sku": "lamp-1",
        "title": "Desk lamp",
        "price_cents": 1999,
        "active": true,
        "attributes": {"colour": "red", "sizes": [1, 2.5], "nested": {"ok": null}},
        "released_at": "2024-05-01T12:30:00.000Z",
        "state": "listed",
        "subtitle": null,
        "version": version,
    });
    let nulls = json!({
        "sku": "desk-2",
        "title": "",
        "price_cents": -9_223_372_036_854_775_808_i64,
        "active": false,
        "attributes": null,
        "released_at": null,
        "state": "draft",
        "subtitle": "oak",
        "version": version,
        "unknown": "clients ignore it",
    });
    let page =
        |item: &Value| json!({"items": [item], "watermark": version, "next_after": "lamp-1"});
    for item in [&full, &nulls] {
        let errors: Vec<String> = products
            .iter_errors(&page(item))
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{item}: {errors:?}");
    }
    let wrong = [
        ("price_cents", json!("1999")),
        ("price_cents", json!(19.5)),
        ("price_cents", json!(9_223_372_036_854_775_808_u64)),
        ("price_cents", json!(null)),
        ("active", json!("true")),
        ("released_at", json!("2024-05-01T12:30:00Z")),
        ("released_at", json!("2024-05-01 12:30:00.000Z")),
        ("released_at", json!("2024-05-01T12:30:00.000+02:00")),
        ("released_at", json!(1_714_566_600_000_i64)),
        ("state", json!("gone")),
        ("state", json!(null)),
        ("title", json!("x".repeat(201))),
        ("title", json!(null)),
        ("subtitle", json!(7)),
        ("sku", json!("")),
        ("sku", json!("a\u{7}b")),
        ("version", json!({"generation": 1})),
    ];
    for (field, value) in wrong {
        let mut item = full.clone();
        item[field] = value.clone();
        assert!(
            !products.is_valid(&page(&item)),
            "{field} = {value} was accepted"
        );
    }
    let mut missing = full.clone();
    if let Some(map) = missing.as_object_mut() {
        map.remove("subtitle");
    }
    assert!(
        !products.is_valid(&page(&missing)),
        "a missing nullable field was accepted"
    );
}

#[test]
fn a_composite_cursor_splits_at_its_first_colons() {
    let document = openapi_document(&catalog());
    let cursor = validator(
        &document,
        &json!({"$ref": "#/components/schemas/VariantCursor"}),
    );
    for good in ["lamp-1:red", "lamp-1:red:large", "a:b"] {
        assert!(cursor.is_valid(&json!(good)), "{good}");
    }
    let long = format!("{}:x", "s".repeat(201));
    for bad in ["lamp-1", ":red", "lamp-1:", "a\u{1}:b", long.as_str()] {
        assert!(!cursor.is_valid(&json!(bad)), "{bad}");
    }
    let variants = validator(
        &document,
        page_schema(&document, "/v1/shops/{shop_id}/variants"),
    );
    let page = json!({
        "items": [{"sku": "lamp-1", "variant_id": "red", "label": "Red", "stock": 3, "version": {"generation": 0, "sequence": 1}}],
        "watermark": {"generation": 0, "sequence": 1},
        "next_after": "lamp-1:red",
    });
    assert!(variants.is_valid(&page));
}

const THREE_PART_KEY: &str = r#"
scope = "org"
[[kind]]
name = "org"
plural = "orgs"
table = "orgs"
key = ["id"]
[[kind]]
name = "grant"
plural = "grants"
table = "grants"
key = ["role_id", "resource", "subject_id"]
field = [
    { name = "note", type = "json" },
    { name = "expires_at", type = "timestamp" },
    { name = "level", type = "enum", values = ["read", "write"], nullable = true },
    { name = "weight", type = "integer", nullable = true },
]
"#;

#[test]
fn a_key_of_three_fields_is_three_ids_joined_by_colons() {
    let schema = Schema::parse(THREE_PART_KEY).expect("valid");
    let document = openapi_document(&schema);
    assert_eq!(problems(&document), Vec::<String>::new());
    let cursor = &document["components"]["schemas"]["GrantCursor"];
    assert_eq!(cursor["minLength"], 5);
    assert_eq!(cursor["maxLength"], 602);
    assert_eq!(
        cursor["description"],
        "A grant key in cursor form `<role_id>:<resource>:<subject_id>`: the role id (which never contains `:`), a colon, the resource (which never contains `:`), a colon, then the subject id (which may); each an Id."
    );
    let after = &document["paths"]["/v1/orgs/{org_id}/grants"]["get"]["parameters"][1];
    assert_eq!(
        after["description"],
        "Return grants with keys greater than `<role_id>:<resource>:<subject_id>` (compared by role_id, then resource, then subject_id). Role ids and resources never contain `:`."
    );
    let check = validator(&document, cursor);
    assert!(check.is_valid(&json!("r:res:s:with:colons")));
    assert!(!check.is_valid(&json!("r:s")));
    let item = validator(&document, &json!({"$ref": "#/components/schemas/Grant"}));
    let grant = json!({
        "role_id": "r", "resource": "res", "subject_id": "s",
        "note": [1, "two"], "expires_at": "2030-01-01T00:00:00.000Z",
        "level": null, "weight": null,
        "version": {"generation": 0, "sequence": 0},
    });
    assert!(item.is_valid(&grant));
    for (field, value) in [
        ("note", json!(null)),
        ("level", json!("admin")),
        ("weight", json!(1.5)),
    ] {
        let mut wrong = grant.clone();
        wrong[field] = value.clone();
        assert!(!item.is_valid(&wrong), "{field} = {value} was accepted");
    }
    // Only kinds keyed by an id share the Id* components; with none, they
    // are left out (and nothing refers to them).
    assert!(
        document["components"]["schemas"]
            .get("IdPageWithin")
            .is_none()
    );
    assert!(
        document["components"]["parameters"]
            .get("IdRangeAfter")
            .is_none()
    );
}

/// Kinds named like the document's own components, or like each other's.
const CLASHING_NAMES: &str = r#"
scope = "id"
[[kind]]
name = "id"
plural = "ids"
table = "ids"
key = ["key"]
[[kind]]
name = "digest_range"
plural = "digest-ranges"
table = "digest_ranges"
key = ["a", "b"]
[[kind]]
name = "user"
plural = "users"
table = "users"
key = ["key"]
[[kind]]
name = "user_page"
plural = "user_pages"
table = "user_pages"
key = ["key"]
field = [{ name = "size", type = "integer" }]
[[kind]]
name = "id_id"
plural = "id-ids"
table = "id_ids"
key = ["key"]
"#;

#[test]
fn kinds_named_like_components_get_names_of_their_own() {
    let schema = Schema::parse(CLASHING_NAMES).expect("valid");
    let document = openapi_document(&schema);
    assert_eq!(problems(&document), Vec::<String>::new());
    let schemas = &document["components"]["schemas"];
    // The shared Id stays the id; the kind `id` takes Id2.
    assert_eq!(schemas["Id"]["type"], "string");
    for (path, kind) in [
        ("/v1/ids", "id"),
        ("/v1/ids/{id_id}/digest-ranges", "digest_range"),
        ("/v1/ids/{id_id}/users", "user"),
        ("/v1/ids/{id_id}/user_pages", "user_page"),
        ("/v1/ids/{id_id}/id-ids", "id_id"),
    ] {
        let page = resolve(&document, page_schema(&document, path));
        let item = resolve(&document, &page["properties"]["items"]["items"]);
        let declared = schema.kind(kind).expect("declared");
        let mut expected: Vec<&str> = declared.key.iter().map(String::as_str).collect();
        expected.extend(declared.fields.iter().map(|field| field.name.as_str()));
        expected.push("version");
        assert_eq!(item["required"], json!(expected), "{path}");
    }
    assert_eq!(
        schemas["DigestRange"]["required"],
        json!(["until", "count", "digest"])
    );
}

#[test]
fn prose_follows_the_kinds_names() {
    use names::{english_list, plural_noun, with_article};
    assert_eq!(english_list(&["users"], "and"), "users");
    assert_eq!(english_list(&["users", "groups"], "or"), "users or groups");
    assert_eq!(english_list(&["a", "b", "c"], "and"), "a, b and c");
    let plurals: Vec<String> = ["id", "address", "category", "key", "box", "branch"]
        .into_iter()
        .map(plural_noun)
        .collect();
    assert_eq!(
        plurals,
        [
            "ids",
            "addresses",
            "categories",
            "keys",
            "boxes",
            "branches"
        ]
    );
    assert_eq!(with_article("tenant"), "a tenant");
    assert_eq!(with_article("order"), "an order");
    assert_eq!(with_article("user"), "a user");
}
