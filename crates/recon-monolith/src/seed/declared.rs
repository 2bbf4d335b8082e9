//! A random workload for any declared schema: scope values of
//! heavy-tailed sizes, rows of every kind with values drawn by field type,
//! references respected (a row refers to existing rows of the kinds it
//! references, in its own scope value).
//!
//! The spec is the default workload's [`SeedSpec`], read generically:
//! `tenants` scope values, each of a size drawn like a tenant's user count
//! (`users_per_tenant_mean`, `tail_index`, capped at
//! `max_users_per_tenant`). A kind that references nothing but the scope
//! gets that many rows; a kind with references about as many, each
//! referring to rows picked at random among those of the kinds it
//! references (fewer when its key is made of references only and fewer
//! distinct combinations exist). Key parts not taken from a reference are
//! UUIDv5 ids of names built from the seed. Everything derives from the
//! seed: same spec and schema, same data.

use super::insert::{self, NewRows};
use super::{ROWS_PER_TRANSACTION, SeedSpec, median, seeded_id, tenant_sizes};
use crate::Monolith;
use crate::error::Result;
use crate::model::{KindPlan, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recon_core::Version;
use recon_core::schema::{FieldDef, FieldType, FieldValue, canonical_json_value};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use tracing::{info, instrument};

/// What [`run_declared`] inserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredSeedSummary {
    /// Scope values inserted.
    pub scopes: u64,
    /// Rows inserted per kind (by plural), the scope rows included.
    pub rows: BTreeMap<String, u64>,
    /// Rows of the largest scope value.
    pub largest_scope_rows: u64,
    /// Rows of the median scope value.
    pub median_scope_rows: u64,
    /// The watermark after seeding.
    pub watermark: Version,
}

/// Generates the spec's data for `monolith`'s schema and inserts it.
/// Fails with a conflict if the same seed was inserted before.
#[instrument(skip_all, name = "monolith.seed", fields(seed = spec.seed, scopes = spec.tenants))]
pub async fn run_declared(monolith: &Monolith, spec: &SeedSpec) -> Result<DeclaredSeedSummary> {
    spec.validate()?;
    let model = monolith.model();
    let sizes = tenant_sizes(spec);
    let mut rows: BTreeMap<String, u64> = model
        .kinds()
        .iter()
        .map(|kind| (kind.def.plural.clone(), 0))
        .collect();
    let mut scope_rows = Vec::with_capacity(sizes.len());
    let mut batch = NewRows::new(monolith);
    for (index, &size) in sizes.iter().enumerate() {
        let before = batch.len();
        generate_scope(model, spec.seed, index, size, &mut batch, &mut rows);
        scope_rows.push(batch.len() - before);
        if batch.len() >= ROWS_PER_TRANSACTION {
            insert::insert(
                monolith,
                std::mem::replace(&mut batch, NewRows::new(monolith)),
            )
            .await?;
        }
    }
    insert::insert(monolith, batch).await?;
    let summary = DeclaredSeedSummary {
        scopes: sizes.len() as u64,
        rows,
        largest_scope_rows: scope_rows.iter().copied().max().unwrap_or(0) as u64,
        median_scope_rows: median(&scope_rows) as u64,
        watermark: monolith.watermark().await?,
    };
    info!(scopes = summary.scopes, rows = ?summary.rows, "seeded");
    Ok(summary)
}

/// Generates scope value number `index` with rows of about `size` per
/// kind into `batch`, counting them per plural in `counts`.
fn generate_scope(
    model: &Model,
    seed: u64,
    index: usize,
    size: usize,
    batch: &mut NewRows,
    counts: &mut BTreeMap<String, u64>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64 + 1);
    let scope_kind = model.scope();
    let scope = seeded_id(&format!("{seed}/scope/{index}"));
    let values = random_values(&mut rng, scope_kind);
    batch.push(scope_kind.index, scope.clone(), [scope.clone()], values);
    *counts.entry(scope_kind.def.plural.clone()).or_default() += 1;
    // Every generated key per kind, for the kinds referencing it.
    let mut keys: Vec<Vec<Vec<String>>> = vec![Vec::new(); model.kinds().len()];
    for kind_index in model.insertion_order() {
        let kind = model.kind_at(kind_index);
        if !kind.scoped() {
            continue;
        }
        let generated = generate_keys(&mut rng, kind, &keys, size, |number, position| {
            seeded_id(&format!(
                "{seed}/{index}/{}/{number}/{position}",
                kind.name()
            ))
        });
        for key in &generated {
            let values = random_values(&mut rng, kind);
            batch.push(kind_index, scope.clone(), key.iter().cloned(), values);
        }
        *counts.entry(kind.def.plural.clone()).or_default() += generated.len() as u64;
        keys[kind_index] = generated;
    }
}

/// About `size` distinct keys of `kind`: referenced parts copied from
/// random rows of the referenced kinds, the other parts from `fresh_id`.
fn generate_keys(
    rng: &mut ChaCha8Rng,
    kind: &KindPlan,
    existing: &[Vec<Vec<String>>],
    size: usize,
    fresh_id: impl Fn(usize, usize) -> String,
) -> Vec<Vec<String>> {
    if kind
        .references
        .iter()
        .any(|reference| existing[reference.kind].is_empty())
    {
        return Vec::new();
    }
    let referenced: HashSet<usize> = kind
        .references
        .iter()
        .flat_map(|reference| reference.key_positions.iter().copied())
        .collect();
    let mut seen = HashSet::new();
    let mut keys = Vec::with_capacity(size);
    // Keys made of references only may repeat: draw a few more than wanted.
    for number in 0..size.max(1) * 2 {
        if keys.len() >= size.max(1) {
            break;
        }
        let mut key: Vec<Option<String>> = vec![None; kind.key().len()];
        for reference in &kind.references {
            let parents = &existing[reference.kind];
            let parent = &parents[rng.random_range(0..parents.len())];
            for (part, position) in reference.key_positions.iter().enumerate() {
                key[*position].get_or_insert_with(|| parent[part].clone());
            }
        }
        let key: Vec<String> = key
            .into_iter()
            .enumerate()
            .map(|(position, part)| part.unwrap_or_else(|| fresh_id(number, position)))
            .collect();
        if !referenced.is_empty() && !seen.insert(key.clone()) {
            continue;
        }
        keys.push(key);
    }
    keys.sort();
    keys
}

/// One random value per data field of `kind`.
fn random_values(rng: &mut ChaCha8Rng, kind: &KindPlan) -> Vec<FieldValue> {
    kind.fields()
        .iter()
        .map(|field| random_value(rng, field))
        .collect()
}

const WORDS: [&str; 12] = [
    "amber", "blue", "coral", "dune", "ember", "frost", "granite", "harbor", "iris", "jade",
    "kelp", "lumen",
];

/// A random value fitting `field`: NULL in about one nullable field in
/// ten, an empty text in about one in twenty.
fn random_value(rng: &mut ChaCha8Rng, field: &FieldDef) -> FieldValue {
    if field.nullable && rng.random_bool(0.1) {
        return FieldValue::Null;
    }
    let word = |rng: &mut ChaCha8Rng| WORDS[rng.random_range(0..WORDS.len())];
    match &field.field_type {
        FieldType::Text { max_length } => {
            if rng.random_bool(0.05) {
                return FieldValue::Text(String::new());
            }
            let text = format!(
                "{} {} {}",
                word(rng),
                word(rng),
                rng.random_range(0..10_000)
            );
            let limit = max_length.map_or(usize::MAX, |max| max as usize);
            FieldValue::Text(text.chars().take(limit).collect())
        }
        FieldType::Integer => FieldValue::Integer(rng.random_range(-1_000_000..=1_000_000)),
        FieldType::Boolean => FieldValue::Boolean(rng.random_bool(0.5)),
        // 2000-01-01 to 2030-01-01, whole milliseconds.
        FieldType::Timestamp => {
            FieldValue::Timestamp(rng.random_range(946_684_800_000_i64..1_893_456_000_000) * 1000)
        }
        FieldType::Enum { values } => {
            FieldValue::Text(values[rng.random_range(0..values.len())].clone())
        }
        FieldType::Json => {
            let document = serde_json::json!({
                "size": rng.random_range(0..100),
                "label": word(rng),
                "flags": [rng.random_bool(0.5), rng.random_bool(0.5)],
            });
            FieldValue::Json(canonical_json_value(&document))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_core::schema::{DeclaredRow, Schema};

    fn catalog() -> Model {
        let schema =
            Schema::parse(include_str!("../../../../proto/schemas/catalog.toml")).expect("valid");
        Model::new(schema).expect("served")
    }

    #[test]
    fn generated_rows_fit_the_schema_and_their_references() {
        let model = catalog();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut keys: Vec<Vec<Vec<String>>> = vec![Vec::new(); model.kinds().len()];
        for kind_index in model.insertion_order() {
            let kind = model.kind_at(kind_index);
            if !kind.scoped() {
                continue;
            }
            let generated = generate_keys(&mut rng, kind, &keys, 30, |number, position| {
                format!("{}-{number}-{position}", kind.name())
            });
            assert!(!generated.is_empty(), "{} has rows", kind.name());
            for key in &generated {
                let row = DeclaredRow {
                    kind: kind.name().to_owned(),
                    scope: "shop-1".to_owned(),
                    key: key.clone(),
                    values: random_values(&mut rng, kind),
                    version: Version::new(1, 1),
                };
                row.check(model.schema(), true).expect("fits the schema");
                for reference in &kind.references {
                    let parent: Vec<String> = reference
                        .key_positions
                        .iter()
                        .map(|position| key[*position].clone())
                        .collect();
                    assert!(keys[reference.kind].contains(&parent), "{key:?} dangles");
                }
            }
            let distinct: HashSet<&Vec<String>> = generated.iter().collect();
            assert_eq!(
                distinct.len(),
                generated.len(),
                "{} keys are distinct",
                kind.name()
            );
            keys[kind_index] = generated;
        }
    }
}
