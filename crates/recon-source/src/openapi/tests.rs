//! The generated documents: equal to the checked-in ones.

use super::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const DEFAULT_DOCUMENT: &str = include_str!("../../../../proto/source-api.openapi.json");

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
    let cases = [(
        Schema::default_schema().clone(),
        DEFAULT_DOCUMENT,
        "proto/schemas/tenants-users-groups.toml",
        "proto/source-api.openapi.json",
    )];
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
