//! The workload: clients that keep writing to the monolith's write API
//! (creates, updates and deletes of every kind, in tenants of their own and
//! in the seeded ones), drift injected straight into the replica database
//! (simulated replication bugs), and the monolith's backup and restore.

use anyhow::{Context, bail};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
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
    /// Starts `clients` writers against `monolith_url`.
    pub async fn start(monolith_url: &str, clients: u64, seed: u64) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("build the workload's HTTP client")?;
        let seeded = seeded_tenants(&http, monolith_url).await?;
        let stop = CancellationToken::new();
        let counts = Arc::new(WriteCounts::default());
        let tasks = (0..clients)
            .map(|client| {
                let writer = Writer {
                    http: http.clone(),
                    base: monolith_url.to_owned(),
                    name: format!("w{client}"),
                    rng: ChaCha8Rng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(client)),
                    tenants: BTreeMap::new(),
                    seeded: seeded.clone(),
                    next_id: 0,
                    counts: counts.clone(),
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

async fn seeded_tenants(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<String>> {
    let page: Value = http
        .get(format!("{base}/v1/tenants"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let tenants: Vec<String> = page["items"]
        .as_array()
        .context("GET /v1/tenants has no items")?
        .iter()
        .filter_map(|item| item["id"].as_str().map(str::to_owned))
        .collect();
    if tenants.is_empty() {
        bail!("the seeded monolith has no tenants");
    }
    Ok(tenants)
}

/// What one client believes a tenant of its own holds.
#[derive(Default)]
struct TenantModel {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    memberships: BTreeSet<(String, String)>,
}

/// One write to a tenant of the client's own.
enum Op {
    DeleteTenant,
    NewUser,
    UpdateUser(String),
    DeleteUser(String),
    NewGroup,
    DeleteGroup(String),
    AddMember(String, String),
    RemoveMember(String, String),
}

struct Writer {
    http: reqwest::Client,
    base: String,
    name: String,
    rng: ChaCha8Rng,
    tenants: BTreeMap<String, TenantModel>,
    seeded: Vec<String>,
    next_id: u64,
    counts: Arc<WriteCounts>,
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
        let tenant = format!("{}-t{}", self.name, self.rng.random_range(0..4));
        if !self.tenants.contains_key(&tenant) {
            let body = json!({ "name": format!("tenant {tenant}") });
            if self
                .send("PUT", &format!("/v1/tenants/{tenant}"), Some(body))
                .await
            {
                self.tenants.insert(tenant, TenantModel::default());
            }
            return;
        }
        let op = self.choose(&tenant);
        self.apply(&tenant, op).await;
    }

    /// Picks a write for a tenant of this client's, from what it believes
    /// the tenant holds.
    fn choose(&mut self, tenant: &str) -> Op {
        let model = &self.tenants[tenant];
        let pick = |rng: &mut ChaCha8Rng, count: usize| rng.random_range(0..count.max(1));
        let user = model
            .users
            .iter()
            .nth(pick(&mut self.rng, model.users.len()))
            .cloned();
        let group = model
            .groups
            .iter()
            .nth(pick(&mut self.rng, model.groups.len()))
            .cloned();
        let membership = model
            .memberships
            .iter()
            .nth(pick(&mut self.rng, model.memberships.len()))
            .cloned();
        match (self.rng.random_range(0..100), user, group, membership) {
            (0..2, ..) => Op::DeleteTenant,
            (30..40, Some(user), ..) => Op::UpdateUser(user),
            (40..48, Some(user), ..) => Op::DeleteUser(user),
            (48..60, ..) => Op::NewGroup,
            (60..65, _, Some(group), _) => Op::DeleteGroup(group),
            (65..90, Some(user), Some(group), _) => Op::AddMember(group, user),
            (90..100, _, _, Some((group, user))) => Op::RemoveMember(group, user),
            _ => Op::NewUser,
        }
    }

    async fn apply(&mut self, tenant: &str, op: Op) {
        let base = format!("/v1/tenants/{tenant}");
        match op {
            Op::DeleteTenant => {
                if self.send("DELETE", &base, None).await {
                    self.tenants.remove(tenant);
                }
            }
            Op::NewUser | Op::UpdateUser(_) => {
                let id = match op {
                    Op::UpdateUser(id) => id,
                    _ => self.fresh_id("u"),
                };
                let body = self.user_body(&id);
                if self
                    .send("PUT", &format!("{base}/users/{id}"), Some(body))
                    .await
                {
                    self.model(tenant).users.insert(id);
                }
            }
            Op::DeleteUser(user) => {
                if self
                    .send("DELETE", &format!("{base}/users/{user}"), None)
                    .await
                {
                    let model = self.model(tenant);
                    model.users.remove(&user);
                    model.memberships.retain(|(_, member)| *member != user);
                }
            }
            Op::NewGroup => {
                let id = self.fresh_id("g");
                let body = json!({ "name": format!("group {id}") });
                if self
                    .send("PUT", &format!("{base}/groups/{id}"), Some(body))
                    .await
                {
                    self.model(tenant).groups.insert(id);
                }
            }
            Op::DeleteGroup(group) => {
                if self
                    .send("DELETE", &format!("{base}/groups/{group}"), None)
                    .await
                {
                    let model = self.model(tenant);
                    model.groups.remove(&group);
                    model.memberships.retain(|(of, _)| *of != group);
                }
            }
            Op::AddMember(group, user) => {
                let path = format!("{base}/groups/{group}/members/{user}");
                if self.send("PUT", &path, None).await {
                    self.model(tenant).memberships.insert((group, user));
                }
            }
            Op::RemoveMember(group, user) => {
                let path = format!("{base}/groups/{group}/members/{user}");
                if self.send("DELETE", &path, None).await {
                    self.model(tenant).memberships.remove(&(group, user));
                }
            }
        }
    }

    fn model(&mut self, tenant: &str) -> &mut TenantModel {
        self.tenants.entry(tenant.to_owned()).or_default()
    }

    fn user_body(&mut self, id: &str) -> Value {
        let status = if self.rng.random_bool(0.2) {
            "disabled"
        } else {
            "active"
        };
        json!({
            "email": format!("{id}@chaos.example"),
            "display_name": format!("user {id} v{}", self.rng.random_range(0..1_000)),
            "status": status,
        })
    }

    /// Updates or deletes a user of a seeded tenant (read from the Source
    /// API), so that runs see their big tenants change under them.
    async fn touch_seeded(&mut self) {
        let Some(tenant) = self.seeded.choose(&mut self.rng).cloned() else {
            return;
        };
        let Ok(response) = self
            .http
            .get(format!("{}/v1/tenants/{tenant}/users", self.base))
            .send()
            .await
        else {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(page) = response.json::<Value>().await else {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let users: Vec<String> = page["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let Some(user) = users.choose(&mut self.rng).cloned() else {
            return;
        };
        let path = format!("/v1/tenants/{tenant}/users/{user}");
        if self.rng.random_bool(0.3) {
            self.send("DELETE", &path, None).await;
        } else {
            let body = self.user_body(&user);
            self.send("PUT", &path, Some(body)).await;
        }
    }

    /// Sends one write; true when it was accepted.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> bool {
        let url = format!("{}{path}", self.base);
        let request = match (method, body) {
            ("PUT", Some(body)) => self.http.put(&url).json(&body),
            ("PUT", None) => self.http.put(&url),
            _ => self.http.delete(&url),
        };
        match request.send().await.map(|response| response.status()) {
            Ok(status) if status.is_success() => {
                self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(status) if status.as_u16() == 404 || status.as_u16() == 409 => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Drifts the replica behind recon's back: garbled names, lost rows and
/// phantom rows, in a random tenant. Returns the rows changed.
pub async fn drift(replica_db: &str, seed: u64) -> anyhow::Result<u64> {
    let connection = Database::connect(replica_db).await?;
    let salt = seed % 1_000;
    let statements = [
        format!(
            "UPDATE replica_users SET display_name = 'garbled {salt}' WHERE id IN \
             (SELECT id FROM replica_users WHERE NOT deleted ORDER BY md5(id || '{salt}') LIMIT 8)"
        ),
        format!(
            "DELETE FROM replica_memberships WHERE (tenant_id, group_id, user_id) IN \
             (SELECT tenant_id, group_id, user_id FROM replica_memberships WHERE NOT deleted \
              ORDER BY md5(user_id || '{salt}') LIMIT 5)"
        ),
        format!(
            "DELETE FROM replica_users WHERE (tenant_id, id) IN \
             (SELECT tenant_id, id FROM replica_users WHERE NOT deleted ORDER BY md5(email || '{salt}') LIMIT 4)"
        ),
        format!(
            "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, sequence, row_hash, deleted) \
             SELECT tenant_id, 'phantom-{salt}-' || substr(md5(tenant_id), 1, 8), 'phantom@example.com', 'phantom', 'active', 1, 1, '', FALSE \
             FROM (SELECT DISTINCT tenant_id FROM replica_users WHERE NOT deleted ORDER BY tenant_id LIMIT 3) AS chosen \
             ON CONFLICT DO NOTHING"
        ),
    ];
    let mut changed = 0;
    for statement in &statements {
        changed += connection
            .execute_unprepared(statement)
            .await
            .with_context(|| format!("drift: {statement}"))?
            .rows_affected();
    }
    connection.close().await.ok();
    Ok(changed)
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
