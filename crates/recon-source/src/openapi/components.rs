//! The document's components: the security scheme, the shared parameters
//! and error responses, and the schemas that are not one kind's (versions,
//! ids, errors, counts, capabilities, digests).

use super::items;
use super::names::{
    Api, Cursor, DEFAULT_LIMIT, MAX_LIMIT, capitalize, fixed, schema_ref, with_article,
};
use recon_core::domain::MAX_ID_CHARS;
use serde_json::{Map, Value, json};

/// Most ranges one digest request may ask for.
const MAX_BUCKETS: u32 = 16_384;

/// The `components` object.
pub(super) fn components(api: &Api) -> Value {
    json!({
        "securitySchemes": {
            fixed::BEARER_AUTH: {
                "type": "http",
                "scheme": "bearer",
                "description": "Required on every /v1 request when the source is configured with a token.",
            }
        },
        "parameters": parameters(api),
        "responses": responses(api),
        "schemas": schemas(api),
    })
}

fn parameters(api: &Api) -> Map<String, Value> {
    let mut parameters = Map::new();
    // The scope kind's key is one field (the schema checks it).
    let scope_key = match &api.scope.cursor {
        Cursor::Id { noun } => noun.as_str(),
        Cursor::Composite(_) => "key",
    };
    parameters.insert(
        api.scope_id_component.clone(),
        json!({
            "name": api.scope_parameter,
            "in": "path",
            "required": true,
            "description": format!(
                "The {scope}'s {key}. `*` is reserved (the replica store's scope of every {scope} at once) and refused with 400.",
                scope = api.scope.words,
                key = scope_key,
            ),
            "schema": schema_ref(fixed::ID),
        }),
    );
    parameters.insert(
        fixed::LIMIT.to_owned(),
        json!({
            "name": "limit",
            "in": "query",
            "required": false,
            "description": "Page size. Any integral number is an integer, as JSON Schema says (`1922.0` is 1922).",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
        }),
    );
    if api.id_kinds().next().is_some() {
        parameters.insert(
            fixed::ID_RANGE_AFTER.to_owned(),
            range_parameter(
                "after",
                "Exclusive lower bound of the range, an id (like a page's `next_after`); absent: from the first key.",
                schema_ref(fixed::ID),
            ),
        );
        parameters.insert(
            fixed::ID_RANGE_UNTIL.to_owned(),
            range_parameter(
                "until",
                "Inclusive upper bound of the range, an id; absent: to the last key.",
                schema_ref(fixed::ID),
            ),
        );
    }
    for (kind, cursor) in api.composite_kinds() {
        parameters.insert(
            cursor.range_after.clone(),
            range_parameter(
                "after",
                &format!(
                    "Exclusive lower bound of the range, {} cursor {} (like a page's `next_after`); absent: from the first key.",
                    with_article(&kind.words),
                    cursor.form
                ),
                schema_ref(&cursor.schema),
            ),
        );
        parameters.insert(
            cursor.range_until.clone(),
            range_parameter(
                "until",
                &format!(
                    "Inclusive upper bound of the range, {} cursor {}; absent: to the last key.",
                    with_article(&kind.words),
                    cursor.form
                ),
                schema_ref(&cursor.schema),
            ),
        );
    }
    // Range digests exist per scoped kind: a schema of its scope kind
    // alone has none, and no buckets.
    if !api.scoped.is_empty() {
        parameters.insert(
            fixed::BUCKETS.to_owned(),
            json!({
                "name": "buckets",
                "in": "query",
                "required": false,
                "description": "Most ranges wanted. Any integral number is an integer, as JSON Schema says (`16.0` is 16).",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_BUCKETS,
                    "default": 1,
                },
            }),
        );
    }
    parameters
}

/// A digest range's `after` or `until` query parameter.
fn range_parameter(name: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "in": "query",
        "required": false,
        "description": description,
        "schema": schema,
    })
}

fn responses(api: &Api) -> Value {
    let error = |description: String| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": schema_ref(fixed::ERROR) } },
        })
    };
    let mut unauthorized = error(
        "A token is configured and the request lacks `Authorization: Bearer <token>`.".to_owned(),
    );
    unauthorized["headers"] = json!({ "WWW-Authenticate": { "schema": { "type": "string" } } });
    json!({
        fixed::BAD_REQUEST: error(
            "A malformed parameter (limit, after, an id) or an unknown query parameter; the message names it.".to_owned(),
        ),
        fixed::UNAUTHORIZED: unauthorized,
        fixed::NOT_FOUND: error(format!("The {} does not exist.", api.scope.words)),
    })
}

fn schemas(api: &Api) -> Map<String, Value> {
    let mut schemas = Map::new();
    schemas.insert(fixed::VERSION.to_owned(), version());
    schemas.insert(fixed::ID.to_owned(), id());
    schemas.insert(fixed::ERROR.to_owned(), error());
    schemas.insert(fixed::COUNTS.to_owned(), counts(api));
    schemas.insert(fixed::CAPABILITIES.to_owned(), capabilities(api));
    if !api.scoped.is_empty() {
        schemas.insert(fixed::DIGEST_RANGE.to_owned(), digest_range());
        schemas.insert(fixed::DIGESTS.to_owned(), digests());
        schemas.insert(fixed::KIND_DIGEST.to_owned(), kind_digest());
    }
    schemas.insert(api.scope_digests_component.clone(), scope_digests(api));
    schemas.insert(api.scope_kinds_component.clone(), scope_kinds(api));
    schemas.insert(api.all_digests_component.clone(), all_digests(api));
    items::insert_kind_schemas(api, &mut schemas);
    schemas
}

fn version() -> Value {
    json!({
        "type": "object",
        "description": "(generation, sequence), compared lexicographically. generation grows with every restore of the source from a backup; sequence is the source's commit counter.",
        "required": ["generation", "sequence"],
        "properties": {
            "generation": { "type": "integer", "minimum": 0 },
            "sequence": { "type": "integer", "minimum": 0 },
        },
    })
}

fn id() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_CHARS,
        "pattern": format!("^[^{}]+$", items::CONTROL_CHARACTERS),
        "description": format!(
            "An entity id: 1 to {MAX_ID_CHARS} characters (Unicode scalar values), none a control character (general category Cc: U+0000-U+001F, U+007F-U+009F). Compared byte-wise (UTF-8)."
        ),
    })
}

fn error() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "string",
                "minLength": 1,
                "description": "What went wrong, naming the offending parameter.",
            }
        },
    })
}

/// An object with one property per scoped kind (its plural) of schema
/// `each`, with the `leading` properties before them and the `trailing` ones after.
fn per_kind(
    api: &Api,
    each: &Value,
    leading: &[(&str, Value)],
    trailing: &[(&str, Value)],
) -> Value {
    let mut required = Vec::new();
    let mut properties = Map::new();
    let kinds = api
        .scoped_plurals()
        .into_iter()
        .map(|plural| (plural, each.clone()));
    let all = leading
        .iter()
        .cloned()
        .chain(kinds)
        .chain(trailing.iter().cloned());
    for (name, schema) in all {
        required.push(Value::from(name));
        properties.insert(name.to_owned(), schema);
    }
    json!({ "type": "object", "required": required, "properties": properties })
}

fn counts(api: &Api) -> Value {
    per_kind(
        api,
        &json!({ "type": "integer", "minimum": 0 }),
        &[],
        &[("watermark", schema_ref(fixed::VERSION))],
    )
}

fn capabilities(api: &Api) -> Value {
    let plurals = api.scoped_plurals();
    let (first, others) = match plurals.split_first() {
        Some((first, others)) => (*first, others),
        None => ("{kind}", &[][..]),
    };
    let aside = |conjunction: &str| {
        if others.is_empty() {
            String::new()
        } else {
            format!(" ({conjunction} {})", others.join(", "))
        }
    };
    json!({
        "type": "object",
        "required": ["digests"],
        "description": "What the Source API offers beyond pages and counts. A source without this route offers nothing more; clients treat a 404 here as all false.",
        "properties": {
            "digests": {
                "type": "boolean",
                "description": format!(
                    "Whether GET {}/digests/{first}{} is served.",
                    api.scope_path,
                    aside("and")
                ),
            },
            "digest_definition": {
                "type": "string",
                "minLength": 1,
                "description": "The definition the digests follow: recon-digest-v1 (see the digest schemas). A client compares digests only of its own definition and compares rows otherwise; a source that names none follows recon-digest-v1.",
            },
            "max_digest_buckets": {
                "type": "integer",
                "minimum": 1,
                "description": "Most buckets one digest request may ask for.",
            },
            "max_page_ranges": {
                "type": "integer",
                "minimum": 0,
                "description": format!(
                    "Most ranges one POST {}/pages/{first}{} may carry; 0 (or absent): the route is not served.",
                    api.scope_path,
                    aside("or")
                ),
            },
            api.all_digests_capability.clone(): {
                "type": "boolean",
                "description": format!(
                    "Whether GET /v1/digests (every {}'s digests in one answer) is served.",
                    api.scope.words
                ),
            },
        },
    })
}

/// Sixteen lowercase hex digits.
const DIGEST_PATTERN: &str = "^[0-9a-f]{16}$";

fn digest_range() -> Value {
    json!({
        "type": "object",
        "required": ["until", "count", "digest"],
        "properties": {
            "until": {
                "type": ["string", "null"],
                "description": "Inclusive upper bound of the range, in cursor form (like `after`); null for an unbounded last range. A range starts after the previous range's `until` (the first: after the request's `after`).",
            },
            "count": { "type": "integer", "minimum": 0, "description": "Rows in the range." },
            "digest": {
                "type": "string",
                "pattern": DIGEST_PATTERN,
                "description": "Sum modulo 2^64 of the rows' digest elements, 16 lowercase hex digits. element = first 8 bytes (big-endian) of SHA-256(\"recon-digest-v1\" 0x00 ++ row hash (16 bytes, the canonical row hash of DESIGN §4) ++ generation (u64 big-endian) ++ sequence (u64 big-endian)): it covers the row's data and version.",
            },
        },
    })
}

fn digests() -> Value {
    json!({
        "type": "object",
        "required": ["ranges", "watermark"],
        "properties": {
            "ranges": {
                "type": "array",
                "minItems": 1,
                "items": schema_ref(fixed::DIGEST_RANGE),
                "description": "Consecutive ranges of about equal row counts covering the requested range exactly, in key order; at most `buckets` of them. The last one ends at the request's `until` (null: unbounded).",
            },
            "watermark": schema_ref(fixed::VERSION),
        },
    })
}

fn kind_digest() -> Value {
    json!({
        "type": "object",
        "required": ["count", "digest"],
        "properties": {
            "count": { "type": "integer", "minimum": 0, "description": "Rows." },
            "digest": {
                "type": "string",
                "pattern": DIGEST_PATTERN,
                "description": "Sum modulo 2^64 of the rows' digest elements (see DigestRange), 16 lowercase hex digits.",
            },
        },
    })
}

fn scope_digests(api: &Api) -> Value {
    per_kind(
        api,
        &schema_ref(fixed::KIND_DIGEST),
        &[],
        &[("watermark", schema_ref(fixed::VERSION))],
    )
}

fn scope_kinds(api: &Api) -> Value {
    per_kind(
        api,
        &schema_ref(fixed::KIND_DIGEST),
        &[("id", schema_ref(fixed::ID))],
        &[],
    )
}

fn all_digests(api: &Api) -> Value {
    let scope_plural = api.scope.def.plural.as_str();
    json!({
        "type": "object",
        "required": [scope_plural, "watermark"],
        "description": format!(
            "Every {}'s digests, each kind whole, read in one snapshot. {} without any row are left out (their digests are empty).",
            api.scope.words,
            capitalize(&api.scope.plural_words)
        ),
        "properties": {
            scope_plural: {
                "type": "array",
                "items": schema_ref(&api.scope_kinds_component),
            },
            "watermark": schema_ref(fixed::VERSION),
        },
    })
}
