//! The document's paths: each kind's list, the counts, the digests (one
//! scope value's, each scoped kind's by range, every scope value's), the
//! capabilities and the multi-range pages.

use super::names::{
    Api, Cursor, KindApi, capitalize, english_list, fixed, parameter_ref, plural_noun,
    response_ref, schema_ref, words,
};
use serde_json::{Map, Value, json};

/// Said of every optional route.
const OPTIONAL: &str = "(optional capability, see /v1/capabilities)";

/// Every path with its one operation.
pub(super) fn paths(api: &Api) -> Map<String, Value> {
    let mut paths = Map::new();
    paths.insert(api.list_path(&api.scope), list(api, &api.scope));
    for kind in &api.scoped {
        paths.insert(api.list_path(kind), list(api, kind));
    }
    paths.insert(format!("{}/counts", api.scope_path), counts(api));
    paths.insert(format!("{}/digests", api.scope_path), scope_digests(api));
    for kind in &api.scoped {
        paths.insert(api.range_digests_path(kind), range_digests(api, kind));
    }
    paths.insert("/v1/capabilities".to_owned(), capabilities());
    for kind in &api.scoped {
        paths.insert(api.page_within_path(kind), page_within(api, kind));
    }
    paths.insert("/v1/digests".to_owned(), all_digests(api));
    paths
}

/// `GET` of a kind's pages.
fn list(api: &Api, kind: &KindApi) -> Value {
    let (summary, after) = if kind.def.scoped {
        let summary = format!(
            "List {}'s {} ordered by {}",
            api.a_scope(),
            kind.plural_words,
            kind.key_order()
        );
        (summary, after_description(kind, ""))
    } else {
        let summary = format!("List {} ordered by {}", kind.plural_words, kind.key_order());
        let after = after_description(kind, " (the previous page's `next_after`)");
        (summary, after)
    };
    let mut parameters = Vec::new();
    if kind.def.scoped {
        parameters.push(parameter_ref(&api.scope_id_component));
    }
    parameters.push(json!({
        "name": "after",
        "in": "query",
        "required": false,
        "description": after,
        "schema": kind.cursor_schema(),
    }));
    parameters.push(parameter_ref(fixed::LIMIT));
    json!({
        "get": {
            "operationId": kind.list_operation,
            "summary": summary,
            "parameters": parameters,
            "responses": responses(
                ok(
                    "One page of items in strictly increasing key order, read in one snapshot.",
                    &kind.page,
                ),
                kind.def.scoped,
            ),
        }
    })
}

/// What a list's `after` means: greater ids (`aside` goes before the
/// period), or greater keys in cursor form, compared field by field.
fn after_description(kind: &KindApi, aside: &str) -> String {
    match &kind.cursor {
        Cursor::Id { noun } => format!(
            "Return {} with {} greater than this {noun}{aside}.",
            kind.plural_words,
            plural_noun(noun)
        ),
        Cursor::Composite(cursor) => {
            // Every key part but the last is free of `:`: the cursor splits
            // at the first colons.
            let leading = &kind.def.key[..kind.def.key.len().saturating_sub(1)];
            let without_colon: Vec<String> = leading
                .iter()
                .map(|part| plural_noun(&words(part)))
                .collect();
            let without_colon: Vec<&str> = without_colon.iter().map(String::as_str).collect();
            format!(
                "Return {} with keys greater than {}{aside} (compared by {}). {} never contain `:`.",
                kind.plural_words,
                cursor.form,
                kind.def.key.join(", then "),
                capitalize(&english_list(&without_colon, "and")),
            )
        }
    }
}

/// `GET` of a scope value's row counts.
fn counts(api: &Api) -> Value {
    json!({
        "get": {
            "operationId": fixed::COUNT_OPERATION,
            "summary": format!(
                "Count {}'s {}, for planning",
                api.a_scope(),
                english_list(&api.scoped_plural_words(), "and")
            ),
            "parameters": [parameter_ref(&api.scope_id_component)],
            "responses": responses(ok("The counts, read in one snapshot.", fixed::COUNTS), true),
        }
    })
}

/// `GET` of a scope value's digests, each kind whole.
fn scope_digests(api: &Api) -> Value {
    json!({
        "get": {
            "operationId": api.scope_digests_operation,
            "summary": format!(
                "{}'s digests, {} each whole {OPTIONAL}",
                capitalize(&api.a_scope()),
                english_list(&api.scoped_plural_words(), "and")
            ),
            "description": format!(
                "What a client compares first: an unchanged {} costs one request. Read in one snapshot; takes no query parameters.",
                api.scope.words
            ),
            "parameters": [parameter_ref(&api.scope_id_component)],
            "responses": responses(ok("The digests.", &api.scope_digests_component), true),
        }
    })
}

/// `GET` of a kind's digests by key range.
fn range_digests(api: &Api, kind: &KindApi) -> Value {
    let (after, until) = match &kind.cursor {
        Cursor::Id { .. } => (fixed::ID_RANGE_AFTER, fixed::ID_RANGE_UNTIL),
        Cursor::Composite(cursor) => (cursor.range_after.as_str(), cursor.range_until.as_str()),
    };
    json!({
        "get": {
            "operationId": kind.range_digests_operation,
            "summary": format!(
                "Range digests of {}'s {} {OPTIONAL}",
                api.a_scope(),
                kind.plural_words
            ),
            "description": "Row count and an order-independent aggregate of the rows' data and versions per key range, read in one snapshot: a client skips ranges whose digest equals its own and reads pages only for the others. The monolith keeps each row's element in its tables (a generated column), so a digest is an index range aggregate.",
            "parameters": [
                parameter_ref(&api.scope_id_component),
                parameter_ref(after),
                parameter_ref(until),
                parameter_ref(fixed::BUCKETS),
            ],
            "responses": responses(ok("The digests.", fixed::DIGESTS), true),
        }
    })
}

/// `GET /v1/capabilities`.
fn capabilities() -> Value {
    json!({
        "get": {
            "operationId": fixed::CAPABILITIES_OPERATION,
            "summary": "What this Source API offers beyond pages and counts",
            "description": "Takes no query parameters.",
            "responses": responses(ok("The capabilities.", fixed::CAPABILITIES), false),
        }
    })
}

/// `POST` of a page of a kind within many key ranges.
fn page_within(api: &Api, kind: &KindApi) -> Value {
    let body = match &kind.cursor {
        Cursor::Id { .. } => fixed::ID_PAGE_WITHIN,
        Cursor::Composite(cursor) => cursor.page_within.as_str(),
    };
    json!({
        "post": {
            "operationId": kind.page_within_operation,
            "summary": format!(
                "A page of {}'s {} within many key ranges {OPTIONAL}",
                api.a_scope(),
                kind.plural_words
            ),
            "description": format!(
                "The same page as GET {} (items in strictly increasing key order, one snapshot, its watermark, next_after), holding only rows inside one of the body's ranges: a client that narrowed its comparison to many small ranges with digests reads them in one request. A read, not a write: POST only because the ranges do not fit a URL. Takes no query parameters.",
                api.list_path(kind)
            ),
            "parameters": [parameter_ref(&api.scope_id_component)],
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": schema_ref(body) } },
            },
            "responses": responses(
                ok(
                    "One page of items in strictly increasing key order, all inside the ranges, read in one snapshot.",
                    &kind.page,
                ),
                true,
            ),
        }
    })
}

/// `GET /v1/digests`: every scope value's digests.
fn all_digests(api: &Api) -> Value {
    json!({
        "get": {
            "operationId": api.all_digests_operation,
            "summary": format!(
                "Every {}'s digests, each kind whole {OPTIONAL}",
                api.scope.words
            ),
            "description": format!(
                "What a client compares first at the start of a run: one pass over each table on each side instead of a request per {scope}. The same digests as GET {}/digests, for every {scope}, in one snapshot.",
                api.scope_path,
                scope = api.scope.words
            ),
            "responses": responses(ok("The digests.", &api.all_digests_component), true),
        }
    })
}

/// A `200` answer with a JSON body of schema `schema`.
fn ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref(schema) } },
    })
}

/// The responses of an operation: `ok`, the errors every operation has,
/// and `404` where a scope value (or an optional route) may be missing.
fn responses(ok: Value, not_found: bool) -> Value {
    let mut responses = json!({
        "200": ok,
        "400": response_ref(fixed::BAD_REQUEST),
        "401": response_ref(fixed::UNAUTHORIZED),
    });
    if not_found {
        responses["404"] = response_ref(fixed::NOT_FOUND);
    }
    responses
}
