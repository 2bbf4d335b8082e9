//! Every change under one service's prefix in the coordinator (etcd, or
//! ZooKeeper), as the test saw it through a watch of its own: which runs,
//! plans, claims and done-records were written, by whom, in which order,
//! and which leaders were elected with which epoch. Done-records are keyed
//! by unit, so a second completion of a unit would *overwrite* the first;
//! the watch still sees both puts, which is how the tests count completions
//! exactly.
//!
//! On etcd the watch delivers every revision with its value. On ZooKeeper a
//! persistent recursive watch delivers each change's path and zxid, and the
//! recorder reads the node's value right away: two writes in quick
//! succession may both be seen with the later value (never out of order).
//! Keys are the same on both: the path below `<prefix>/`.

use anyhow::{Context, bail};
use etcd_client::{Client, EventType, WatchOptions};
use recon_engine::cluster::{Barrier, DoneRecord, Plan, RunState, UnitPlan};
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client as zk;

/// One put or delete under the prefix.
#[derive(Debug, Clone)]
pub struct Change {
    /// When the test received it.
    pub seen_at: Instant,
    /// The key below `<prefix>/`.
    pub key: String,
    /// The revision of the change (etcd's revision, ZooKeeper's zxid: both
    /// grow with every write).
    pub revision: i64,
    /// The value put (empty for deletes).
    pub value: Vec<u8>,
    /// A delete (or a lease expiry).
    pub deleted: bool,
}

impl Change {
    fn decode<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.value).ok()
    }
}

/// Where the recorder writes its sync markers.
enum Writer {
    Etcd(Box<Client>),
    ZooKeeper(zk::Client),
}

/// The recorder; stops watching when dropped.
pub struct History {
    changes: Arc<Mutex<Vec<Change>>>,
    seen: watch::Receiver<usize>,
    writer: Writer,
    prefix: String,
    task: JoinHandle<()>,
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl History {
    /// Starts watching `<prefix>/` on etcd (before anything is written
    /// there).
    pub async fn start(endpoints: &[String], prefix: &str) -> anyhow::Result<Self> {
        let mut client = Client::connect(endpoints, None)
            .await
            .context("connect to the test etcd")?;
        let options = WatchOptions::new().with_prefix();
        let mut stream = client
            .watch(format!("{prefix}/"), Some(options))
            .await
            .context("watch the service prefix")?;
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = watch::channel(0usize);
        let recorded = changes.clone();
        let key_prefix = format!("{prefix}/");
        let task = tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                let mut all = lock(&recorded);
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key());
                    all.push(Change {
                        seen_at: Instant::now(),
                        key: key.strip_prefix(&key_prefix).unwrap_or(&key).to_owned(),
                        revision: kv.mod_revision(),
                        value: kv.value().to_vec(),
                        deleted: event.event_type() == EventType::Delete,
                    });
                }
                count.send_replace(all.len());
            }
        });
        Ok(Self {
            changes,
            seen,
            writer: Writer::Etcd(Box::new(client)),
            prefix: prefix.to_owned(),
            task,
        })
    }

    /// Starts watching the node `prefix` on ZooKeeper (created if missing,
    /// before anything is written there).
    pub async fn start_zookeeper(servers: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = zk::Client::connect(servers)
            .await
            .context("connect to the test ZooKeeper")?;
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let mut path = String::new();
        for segment in prefix.trim_matches('/').split('/') {
            path = format!("{path}/{segment}");
            match client.create(&path, &[], &options).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(error) => return Err(error).with_context(|| format!("create {path}")),
            }
        }
        let mut watcher = client
            .watch(prefix, zk::AddWatchMode::PersistentRecursive)
            .await
            .context("watch the service node")?;
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = watch::channel(0usize);
        let recorded = changes.clone();
        let key_prefix = format!("{prefix}/");
        let reader = client.clone();
        let task = tokio::spawn(async move {
            loop {
                let event = watcher.changed().await;
                let Some(key) = event.path.strip_prefix(&key_prefix).map(str::to_owned) else {
                    if event.session_state.is_terminated() {
                        return;
                    }
                    continue;
                };
                let (value, deleted) = match event.event_type {
                    zk::EventType::NodeDeleted => (Vec::new(), true),
                    zk::EventType::NodeCreated | zk::EventType::NodeDataChanged => {
                        match reader.get_data(&event.path).await {
                            Ok((data, _)) => (data, false),
                            // Gone again already: its delete event follows.
                            Err(_) => continue,
                        }
                    }
                    _ => continue,
                };
                let mut all = lock(&recorded);
                all.push(Change {
                    seen_at: Instant::now(),
                    key,
                    revision: event.zxid,
                    value,
                    deleted,
                });
                count.send_replace(all.len());
            }
        });
        Ok(Self {
            changes,
            seen,
            writer: Writer::ZooKeeper(client),
            prefix: prefix.to_owned(),
            task,
        })
    }

    /// A copy of everything seen so far.
    pub fn changes(&self) -> Vec<Change> {
        lock(&self.changes).clone()
    }

    /// Waits until the watch has delivered everything written before this
    /// call (a marker key written now comes back through it); returns the
    /// marker's revision: everything later has a higher one.
    pub async fn sync(&self) -> anyhow::Result<i64> {
        let marker = uuid::Uuid::new_v4().to_string();
        let key = format!("{}/test-sync", self.prefix);
        let revision = match &self.writer {
            Writer::Etcd(client) => {
                let put = client
                    .kv_client()
                    .put(key, marker.clone(), None)
                    .await
                    .context("put the sync marker")?;
                put.header().map_or(0, |header| header.revision())
            }
            Writer::ZooKeeper(client) => {
                let stat = match client.set_data(&key, marker.as_bytes(), None).await {
                    Ok(stat) => stat,
                    Err(zk::Error::NoNode) => {
                        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                        client
                            .create(&key, marker.as_bytes(), &options)
                            .await
                            .context("create the sync marker")?
                            .0
                    }
                    Err(error) => return Err(error).context("set the sync marker"),
                };
                stat.mzxid
            }
        };
        self.wait_for("the sync marker", Duration::from_secs(10), |changes| {
            changes
                .iter()
                .any(|change| change.key == "test-sync" && change.value == marker.as_bytes())
                .then_some(revision)
        })
        .await
    }

    /// Waits until `found` returns something for the changes seen so far.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&[Change]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut seen = self.seen.clone();
        loop {
            if let Some(value) = found(&lock(&self.changes)) {
                return Ok(value);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                bail!("timed out after {timeout:?} waiting in etcd for {what}");
            }
            // A timeout here just re-checks the deadline.
            let _ = tokio::time::timeout(remaining, seen.changed()).await;
        }
    }

    /// Waits for a run started after `after` changes were seen; its id.
    pub async fn wait_for_new_run(&self, after: usize) -> anyhow::Result<String> {
        self.wait_for("a run to start", Duration::from_secs(20), |changes| {
            changes[after.min(changes.len())..]
                .iter()
                .filter(|change| change.key == "run/current" && !change.deleted)
                .find_map(|change| change.decode::<RunState>())
                .map(|run| run.run_id)
        })
        .await
    }

    /// How many changes were seen so far.
    pub fn len(&self) -> usize {
        lock(&self.changes).len()
    }
}

/// Queries over recorded changes.
pub trait Changes {
    /// The states `run/current` went through for `run_id`, in order.
    fn run_states(&self, run_id: &str) -> Vec<(Change, RunState)>;
    /// The plan of a run.
    fn plan(&self, run_id: &str) -> Option<Plan>;
    /// Every put of a done-record of a run: (unit, record, change).
    fn done_puts(&self, run_id: &str) -> Vec<(String, DoneRecord, Change)>;
    /// Every claim put of a run: (unit, member).
    fn claim_puts(&self, run_id: &str) -> Vec<(String, String)>;
    /// The barrier of a run.
    fn barrier(&self, run_id: &str) -> Option<(Barrier, Change)>;
}

impl Changes for [Change] {
    fn run_states(&self, run_id: &str) -> Vec<(Change, RunState)> {
        self.iter()
            .filter(|change| change.key == "run/current" && !change.deleted)
            .filter_map(|change| Some((change.clone(), change.decode::<RunState>()?)))
            .filter(|(_, run)| run.run_id == run_id)
            .collect()
    }

    /// The plan key holds the plan without its units and the number of
    /// pages; the units are in `plan-pages/<index>` (see recon-etcd).
    fn plan(&self, run_id: &str) -> Option<Plan> {
        let latest = |key: &str| {
            self.iter()
                .rev()
                .find(|change| change.key == key && !change.deleted)
        };
        let header: serde_json::Value = latest(&format!("runs/{run_id}/plan"))?.decode()?;
        let mut plan: Plan = serde_json::from_value(header.get("plan")?.clone()).ok()?;
        let pages = header.get("pages")?.as_u64()?;
        for index in 0..pages {
            let page = latest(&format!("runs/{run_id}/plan-pages/{index:06}"))?;
            plan.units.extend(page.decode::<Vec<UnitPlan>>()?);
        }
        Some(plan)
    }

    fn done_puts(&self, run_id: &str) -> Vec<(String, DoneRecord, Change)> {
        let prefix = format!("runs/{run_id}/done/");
        self.iter()
            .filter(|change| !change.deleted)
            .filter_map(|change| {
                let unit = change.key.strip_prefix(&prefix)?;
                Some((unit.to_owned(), change.decode()?, change.clone()))
            })
            .collect()
    }

    fn claim_puts(&self, run_id: &str) -> Vec<(String, String)> {
        let prefix = format!("runs/{run_id}/claims/");
        self.iter()
            .filter(|change| !change.deleted)
            .filter_map(|change| {
                let unit = change.key.strip_prefix(&prefix)?;
                Some((unit.to_owned(), change.decode()?))
            })
            .collect()
    }

    fn barrier(&self, run_id: &str) -> Option<(Barrier, Change)> {
        let key = format!("runs/{run_id}/barrier");
        self.iter()
            .find(|change| change.key == key && !change.deleted)
            .and_then(|change| Some((change.decode()?, change.clone())))
    }
}

fn lock(changes: &Mutex<Vec<Change>>) -> MutexGuard<'_, Vec<Change>> {
    changes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
