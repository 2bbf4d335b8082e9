//! The workload: clients that keep writing to the monolith's write API
//! (creates, updates and deletes of every kind of the schema, in scope
//! values of their own and in the seeded ones), and the monolith's backup
//! and restore.
//!
//! A client knows the schema through the monolith's resolved model (keys,
//! data fields, references) and nothing else of the monolith: a row it
//! creates refers to rows it created before (the monolith refuses a
//! dangling reference), and a deletion forgets the rows that refer to the
//! deleted one, as the monolith's cascade deletes them. Values are drawn by
//! field type (NULLs, empty texts, JSON documents and timestamps included).

use anyhow::{Context, bail};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recon_core::schema::{FieldDef, FieldType, format_timestamp};
use recon_monolith::model::{KindPlan, Model};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the writes went.
#[derive(Debug, Default)]
pub struct WriteCounts {
    /// Answered 2xx.
    pub accepted: AtomicU64,
    /// Answered 404 or 409 (the client's model was out of date, e.g.
    /// after a restore).
    pub refused: AtomicU64,
    /// Failed otherwise (5xx while PostgreSQL restarts, transport errors).
    pub failed: AtomicU64,
}

/// Running writer clients; [`Workload::stop`] ends them.
pub struct Workload {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Shared counts of every client.
    pub counts: Arc<WriteCounts>,
}

impl Workload {
    /// Starts `clients` writers of `model`'s kinds against `monolith_url`.
    pub async fn start(
        monolith_url: &str,
        model: Arc<Model>,
        clients: u64,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("build the workload's HTTP client")?;
        let seeded = seeded_scopes(&http, monolith_url, &model).await?;
        let stop = CancellationToken::new();
        let counts = Arc::new(WriteCounts::default());
        let tasks = (0..clients)
            .map(|client| {
                let writer = Writer {
                    http: http.clone(),
                    base: monolith_url.to_owned(),
                    model: model.clone(),
                    name: format!("w{client}"),
                    rng: ChaCha8Rng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(client)),
                    scopes: BTreeMap::new(),
                    seeded: seeded.clone(),
                    next_id: 0,
                    counts: counts.clone(),
                    refused: false,
                };
                tokio::spawn(writer.run(stop.clone()))
            })
            .collect();
        Ok(Self {
            stop,
            tasks,
            counts,
        })
    }

    /// Adds the writes so far to `[accepted, refused, failed]`.
    pub fn counts_into(&self, writes: &mut [u64; 3]) {
        writes[0] += self.counts.accepted.load(Ordering::Relaxed);
        writes[1] += self.counts.refused.load(Ordering::Relaxed);
        writes[2] += self.counts.failed.load(Ordering::Relaxed);
    }

    /// Stops every client and waits for them.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.ok();
        }
    }
}

/// The seeded scope values (the first page of the scope kind).
async fn seeded_scopes(
    http: &reqwest::Client,
    base: &str,
    model: &Model,
) -> anyhow::Result<Vec<String>> {
    let scope = model.scope();
    let path = format!("/v1/{}", scope.def.plural);
    let page: Value = http
        .get(format!("{base}{path}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let scopes = item_keys(scope, &page).with_context(|| format!("GET {path}"))?;
    if scopes.is_empty() {
        bail!("the seeded monolith has no {}", scope.def.plural);
    }
    Ok(scopes.into_iter().map(|mut key| key.remove(0)).collect())
}

/// The keys of a page's items.
fn item_keys(kind: &KindPlan, page: &Value) -> anyhow::Result<Vec<Vec<String>>> {
    let items = page["items"].as_array().context("the page has no items")?;
    Ok(items
        .iter()
        .filter_map(|item| {
            kind.key()
                .iter()
                .map(|field| item[field].as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        })
        .collect())
}

/// One write to a scope value of the client's own.
#[derive(Debug)]
enum Op {
    /// Deletes the scope row (and with it everything in the scope).
    DeleteScope,
    /// Creates or updates a row of kind `kind` (an index of the model).
    Put { kind: usize, key: Vec<String> },
    /// Deletes a row (and the rows referring to it).
    Delete { kind: usize, key: Vec<String> },
}

struct Writer {
    http: reqwest::Client,
    base: String,
    model: Arc<Model>,
    name: String,
    rng: ChaCha8Rng,
    /// What the client believes its scope values hold: per scope value,
    /// the keys of each kind (by kind index).
    scopes: BTreeMap<String, Vec<BTreeSet<Vec<String>>>>,
    seeded: Vec<String>,
    next_id: u64,
    counts: Arc<WriteCounts>,
    /// The last write was refused (404/409).
    refused: bool,
}

impl Writer {
    async fn run(mut self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            self.one_write().await;
            let pause = Duration::from_millis(self.rng.random_range(50..250));
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn fresh_id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{}-{kind}{}", self.name, self.next_id)
    }

    async fn one_write(&mut self) {
        if self.rng.random_bool(0.15) {
            return self.touch_seeded().await;
        }
        let scope = format!("{}-s{}", self.name, self.rng.random_range(0..4));
        if !self.scopes.contains_key(&scope) {
            let kind = self.model.scope().index;
            if self.put(&scope, kind, std::slice::from_ref(&scope)).await {
                let kinds = self.model.kinds().len();
                self.scopes.insert(scope, vec![BTreeSet::new(); kinds]);
            }
            return;
        }
        let op = self.choose(&scope);
        self.apply(&scope, op).await;
        if self.refused {
            // A restore (or another client) took rows this client believed
            // in: forget the scope value, it is created again next time.
            self.scopes.remove(&scope);
        }
    }

    /// Picks a write for a scope value of this client's, from what it
    /// believes the scope holds: a kind at random, then a new row (about
    /// half the time), an update or a deletion of a row it holds.
    fn choose(&mut self, scope: &str) -> Op {
        if self.rng.random_bool(0.02) {
            return Op::DeleteScope;
        }
        let model = self.model.clone();
        let kinds: Vec<&KindPlan> = model.scoped_kinds().collect();
        let Some(kind) = kinds.choose(&mut self.rng) else {
            return Op::DeleteScope;
        };
        let held = &self.scopes[scope][kind.index];
        let roll = self.rng.random_range(0..100);
        if !held.is_empty() && roll < 45 {
            let key = held
                .iter()
                .nth(self.rng.random_range(0..held.len()))
                .cloned()
                .unwrap_or_default();
            return if roll < 25 {
                Op::Put {
                    kind: kind.index,
                    key,
                }
            } else {
                Op::Delete {
                    kind: kind.index,
                    key,
                }
            };
        }
        self.new_row(scope, kind)
    }

    /// A new row of `kind`: its referenced key parts from rows of the
    /// referenced kinds the client holds, the others fresh. Without a row
    /// to refer to, a new row of the first kind missing one.
    fn new_row(&mut self, scope: &str, kind: &KindPlan) -> Op {
        let model = self.model.clone();
        let mut key: Vec<Option<String>> = vec![None; kind.key().len()];
        for reference in &kind.references {
            let parents = &self.scopes[scope][reference.kind];
            let Some(parent) = parents
                .iter()
                .nth(self.rng.random_range(0..parents.len().max(1)))
                .cloned()
            else {
                return self.new_row(scope, model.kind_at(reference.kind));
            };
            for (part, position) in reference.key_positions.iter().enumerate() {
                key[*position].get_or_insert_with(|| parent[part].clone());
            }
        }
        let key = key
            .into_iter()
            .map(|part| part.unwrap_or_else(|| self.fresh_id(kind.name())))
            .collect();
        Op::Put {
            kind: kind.index,
            key,
        }
    }

    async fn apply(&mut self, scope: &str, op: Op) {
        match op {
            Op::DeleteScope => {
                let kind = self.model.scope().index;
                if self.delete(scope, kind, &[scope.to_owned()]).await {
                    self.scopes.remove(scope);
                }
            }
            Op::Put { kind, key } => {
                if self.put(scope, kind, &key).await
                    && let Some(held) = self.scopes.get_mut(scope)
                {
                    held[kind].insert(key);
                }
            }
            Op::Delete { kind, key } => {
                if self.delete(scope, kind, &key).await
                    && let Some(held) = self.scopes.get_mut(scope)
                {
                    forget(&self.model, held, kind, key);
                }
            }
        }
    }

    /// Updates or deletes a row of a seeded scope value (read from the
    /// Source API), so that runs see their big scopes change under them.
    async fn touch_seeded(&mut self) {
        let model = self.model.clone();
        let kinds: Vec<&KindPlan> = model.scoped_kinds().collect();
        let (Some(scope), Some(kind)) = (
            self.seeded.choose(&mut self.rng).cloned(),
            kinds.choose(&mut self.rng),
        ) else {
            return;
        };
        let url = format!(
            "{}/v1/{}/{scope}/{}",
            self.base,
            model.scope().def.plural,
            kind.def.plural
        );
        let page = match self.http.get(url).send().await {
            Ok(response) => response.json::<Value>().await,
            Err(error) => Err(error),
        };
        let Ok(page) = page else {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let keys = item_keys(kind, &page).unwrap_or_default();
        let Some(key) = keys.choose(&mut self.rng).cloned() else {
            return;
        };
        if self.rng.random_bool(0.3) {
            self.delete(&scope, kind.index, &key).await;
        } else {
            self.put(&scope, kind.index, &key).await;
        }
    }

    /// The path of a row: `/v1/<scopes>/{scope}` for a scope row,
    /// `/v1/<scopes>/{scope}/<kind>/{key parts…}` for the others.
    fn path(&self, scope: &str, kind: usize, key: &[String]) -> String {
        let plan = self.model.kind_at(kind);
        let scope_path = format!("/v1/{}/{scope}", self.model.scope().def.plural);
        if plan.scoped() {
            format!("{scope_path}/{}/{}", plan.def.plural, key.join("/"))
        } else {
            scope_path
        }
    }

    /// `PUT`s a row with random values; true when it was accepted.
    async fn put(&mut self, scope: &str, kind: usize, key: &[String]) -> bool {
        let model = self.model.clone();
        let fields = model.kind_at(kind).fields();
        let body = (!fields.is_empty()).then(|| {
            let values: Map<String, Value> = fields
                .iter()
                .map(|field| (field.name.clone(), random_value(&mut self.rng, field)))
                .collect();
            Value::Object(values)
        });
        let path = self.path(scope, kind, key);
        let url = format!("{}{path}", self.base);
        let request = match body {
            Some(body) => self.http.put(url).json(&body),
            None => self.http.put(url),
        };
        self.send(request).await
    }

    /// `DELETE`s a row; true when it was accepted.
    async fn delete(&mut self, scope: &str, kind: usize, key: &[String]) -> bool {
        let url = format!("{}{}", self.base, self.path(scope, kind, key));
        let request = self.http.delete(url);
        self.send(request).await
    }

    /// Sends one write; true when it was accepted.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> bool {
        self.refused = false;
        match request.send().await.map(|response| response.status()) {
            Ok(status) if status.is_success() => {
                self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(status) if status.as_u16() == 404 || status.as_u16() == 409 => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                self.refused = true;
                false
            }
            _ => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Forgets a deleted row and, as the monolith's cascade deletes them, the
/// rows referring to it, theirs in turn.
fn forget(model: &Model, held: &mut [BTreeSet<Vec<String>>], kind: usize, key: Vec<String>) {
    let mut doomed = vec![(kind, key)];
    while let Some((kind, key)) = doomed.pop() {
        held[kind].remove(&key);
        for &(child, reference) in &model.kind_at(kind).referenced_by {
            let positions = &model.kind_at(child).references[reference].key_positions;
            let referring: Vec<Vec<String>> = held[child]
                .iter()
                .filter(|child_key| {
                    positions
                        .iter()
                        .enumerate()
                        .all(|(part, &position)| child_key[position] == key[part])
                })
                .cloned()
                .collect();
            doomed.extend(referring.into_iter().map(|child_key| (child, child_key)));
        }
    }
}

/// A random JSON value for `field` as a write body takes it: NULL in
/// about one nullable field in seven, an empty text in one text in twenty.
fn random_value(rng: &mut ChaCha8Rng, field: &FieldDef) -> Value {
    if field.nullable && rng.random_bool(0.15) {
        return Value::Null;
    }
    match &field.field_type {
        FieldType::Text { max_length } => {
            if rng.random_bool(0.05) {
                return Value::String(String::new());
            }
            let text = format!("{} v{}", field.name, rng.random_range(0..1_000));
            let limit = max_length.map_or(usize::MAX, |max| max as usize);
            Value::String(text.chars().take(limit).collect())
        }
        FieldType::Integer => json!(rng.random_range(-1_000_000_i64..=1_000_000)),
        FieldType::Boolean => Value::Bool(rng.random_bool(0.5)),
        // 2000-01-01 to 2030-01-01, whole milliseconds.
        FieldType::Timestamp => {
            let micros = rng.random_range(946_684_800_000_i64..1_893_456_000_000) * 1000;
            format_timestamp(micros).map_or(Value::Null, Value::String)
        }
        FieldType::Enum { values } => values
            .choose(rng)
            .map_or(Value::Null, |value| Value::String(value.clone())),
        // Keys out of order and nested: the monolith stores the canonical
        // text, which the replica must then hold too.
        FieldType::Json => json!({
            "size": rng.random_range(0..100),
            "flags": [rng.random_bool(0.5), null],
            "label": { "z": rng.random_range(0..10), "a": "x" },
        }),
    }
}

/// `POST /admin/backups`: the backup's id.
pub async fn backup(monolith_url: &str) -> anyhow::Result<String> {
    let answer: Value = reqwest::Client::new()
        .post(format!("{monolith_url}/admin/backups"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    match &answer["backup_id"] {
        Value::String(id) => Ok(id.clone()),
        Value::Number(id) => Ok(id.to_string()),
        other => bail!("POST /admin/backups answered no backup_id: {other}"),
    }
}

/// `POST /admin/backups/{id}/restore`.
pub async fn restore(monolith_url: &str, backup_id: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .post(format!("{monolith_url}/admin/backups/{backup_id}/restore"))
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}
