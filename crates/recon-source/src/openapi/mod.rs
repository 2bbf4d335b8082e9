//! The Source API's OpenAPI 3.1 document, generated from a declared
//! [`Schema`].
//!
//! Every kind gets its list path (`/v1/<plural>` for the scope kind,
//! `/v1/<scope plural>/{<scope>_id}/<plural>` for the others) and, if
//! scoped, its range digests and multi-range page paths; its item schema
//! is built from its key fields (ids) and typed data fields. A kind's
//! cursor is its id, or its key parts joined by `:` when the key has
//! several fields (every part but the last never contains `:`). The counts,
//! digests, capabilities, errors and security are the same for every
//! schema, spoken in the scope's and the kinds' names.
//!
//! The checked-in documents are this generator's output, and a test keeps
//! them so: `proto/source-api.openapi.json` for the default schema and
//! `proto/schemas/catalog.openapi.json` for the catalog schema. Regenerate
//! one with `recon schema openapi --schema <schema file> > <document>`.
//!
//! Pure: no I/O; the same schema always gives the same document.

mod components;
mod items;
mod names;
mod paths;

use recon_core::schema::Schema;
use serde_json::{Value, json};

/// The Source API's OpenAPI 3.1 document for `schema`.
pub fn openapi_document(schema: &Schema) -> Value {
    let api = names::Api::new(schema);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "recon Source API",
            "version": "1.0.0",
            "description": description(&api),
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "servers": [{ "url": "/" }],
        "security": [{}, { names::fixed::BEARER_AUTH: [] }],
        "paths": paths::paths(&api),
        "components": components::components(&api),
    })
}

/// The document's introduction: pagination, snapshots, strictness, and
/// which cursor each kind's digests and multi-range pages declare.
fn description(api: &names::Api) -> String {
    let mut cursors = Vec::new();
    if api.id_kinds().next().is_some() {
        cursors.push("an id".to_owned());
    }
    for (kind, cursor) in api.composite_kinds() {
        cursors.push(format!("{} for {}", cursor.form, kind.plural_words));
    }
    let per_kind = if cursors.is_empty() {
        String::new()
    } else {
        format!(
            " Digests and multi-range pages have a path per kind, so that each declares its kind's cursor: {}.",
            cursors.join(", or ")
        )
    };
    format!(
        "The read side every source of truth implements for recon. Keyset pagination only: `after` is the last key of the previous page, items come in strictly increasing byte-wise key order, and `next_after: null` marks the last page. Every page (and every counts answer) is read in one database snapshot and carries that snapshot's watermark: the version of the last committed change. Clients must ignore unknown fields. Unknown query parameters are rejected with 400.{per_kind} An integer is any number with a zero fractional part, as JSON Schema says: `1922.0` is accepted wherever an integer is."
    )
}

#[cfg(test)]
mod tests;
