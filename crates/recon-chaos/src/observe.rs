//! What the checker sees, recorded while the schedule runs: every change
//! under the service's etcd prefix (through a watch that reconnects across
//! etcd restarts and resumes at the next revision, so no change is missed),
//! and samples of every replica's admin API.
//!
//! Reads JSON as plain values: nothing here shares a type with the engine,
//! so a serialization bug there cannot hide here.

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions, EventType, WatchOptions};
use recon_tests::process::metric_value;
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One put or delete under the prefix.
#[derive(Debug, Clone)]
pub struct Change {
    /// When the harness received it.
    pub seen_at: Instant,
    /// The key below `<prefix>/`.
    pub key: String,
    /// The value put, parsed (`Null` for deletes and non-JSON values).
    pub value: Value,
    /// A delete (or a lease expiry).
    pub deleted: bool,
}

/// Locks a mutex, surviving a panicked holder.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records every change under a prefix until dropped.
pub struct Recorder {
    changes: Arc<Mutex<Vec<Change>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

impl Recorder {
    /// Starts recording `<prefix>/` from revision 1 of a fresh etcd.
    pub fn start(endpoint: String, prefix: String) -> Self {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(record(endpoint, prefix, changes.clone(), stop.clone()));
        Self {
            changes,
            stop,
            task,
        }
    }

    /// A copy of everything seen so far.
    pub fn changes(&self) -> Vec<Change> {
        lock(&self.changes).clone()
    }

    /// What `found` finds in everything seen so far (without copying it).
    pub fn find<T>(&self, found: impl FnOnce(&[Change]) -> Option<T>) -> Option<T> {
        found(&lock(&self.changes))
    }
}

async fn record(
    endpoint: String,
    prefix: String,
    changes: Arc<Mutex<Vec<Change>>>,
    stop: CancellationToken,
) {
    let key_prefix = format!("{prefix}/");
    let mut next_revision = 1;
    while !stop.is_cancelled() {
        let watched = async {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
            let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
            let watch = WatchOptions::new()
                .with_prefix()
                .with_start_revision(next_revision);
            let mut stream = client.watch(key_prefix.as_str(), Some(watch)).await?;
            while let Some(response) = stream.message().await? {
                if response.canceled() {
                    break;
                }
                let mut all = lock(&changes);
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key());
                    next_revision = next_revision.max(kv.mod_revision() + 1);
                    all.push(Change {
                        seen_at: Instant::now(),
                        key: key.strip_prefix(&key_prefix).unwrap_or(&key).to_owned(),
                        value: serde_json::from_slice(kv.value()).unwrap_or(Value::Null),
                        deleted: event.event_type() == EventType::Delete,
                    });
                }
            }
            Ok::<(), etcd_client::Error>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = watched => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A replica's admin API, read as JSON values.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
}

impl Admin {
    /// A client with a short timeout (a frozen replica must not stall the
    /// sampler).
    pub fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(1_500))
            .build()
            .context("build the admin HTTP client")?;
        Ok(Self { http })
    }

    async fn get_json(&self, port: u16, path: &str) -> anyhow::Result<Value> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let response = self.http.get(&url).send().await?.error_for_status()?;
        response
            .json()
            .await
            .with_context(|| format!("parse {url}"))
    }

    /// `GET /cluster`.
    pub async fn cluster(&self, port: u16) -> anyhow::Result<Value> {
        self.get_json(port, "/cluster").await
    }

    /// The partitions `GET /consumer` says are assigned.
    pub async fn partitions(&self, port: u16) -> anyhow::Result<Vec<i64>> {
        let view = self.get_json(port, "/consumer").await?;
        Ok(view["partitions"]
            .as_array()
            .map(|partitions| {
                partitions
                    .iter()
                    .filter_map(|partition| partition["partition"].as_i64())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self, port: u16) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{port}/metrics");
        Ok(self
            .http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// `POST /reconcile` with `body`; the answer (the pending request,
    /// with the `run_id` of the run that will serve it).
    pub async fn request_run(&self, port: u16, body: &Value) -> anyhow::Result<Value> {
        let url = format!("http://127.0.0.1:{port}/reconcile");
        let response = self.http.post(&url).json(body).send().await?;
        if !response.status().is_success() {
            bail!(
                "POST {url}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        response
            .json()
            .await
            .with_context(|| format!("parse the answer of POST {url}"))
    }
}

/// The leader and the current run as one replica saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSeen {
    /// The current run's id.
    pub run_id: Option<String>,
    /// Whether the answering member is among its acknowledgements.
    pub acknowledged: bool,
}

impl RunSeen {
    /// Reads it from a `GET /cluster` answer.
    pub fn from_view(view: &Value, member: &str) -> Self {
        let run = &view["status"]["run"];
        Self {
            run_id: run["run_id"].as_str().map(str::to_owned),
            acknowledged: run["acknowledged"]
                .as_array()
                .is_some_and(|acks| acks.iter().any(|ack| ack.as_str() == Some(member))),
        }
    }
}

/// One sample of one replica: its view of the run before, its consumer's
/// event counter, its view after.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Member id.
    pub member: String,
    /// Which start of that member's process (counters restart with it).
    pub incarnation: u32,
    /// When.
    pub at: Instant,
    /// The run before reading the counter.
    pub before: RunSeen,
    /// `recon_consumer_events_received_total`.
    pub events: u64,
    /// The run after reading the counter.
    pub after: RunSeen,
}

/// The leader a replica reported, and when.
#[derive(Debug, Clone)]
pub struct LeaderSeen {
    /// When.
    pub at: Instant,
    /// The leader.
    pub leader: String,
}

/// The name of the counter the pause invariant reads.
pub const EVENTS_COUNTER: &str = "recon_consumer_events_received_total";

/// Takes one sample of the replica `member` on `port`; also returns the
/// leader it reported. `Ok(None)` when the replica did not answer.
pub async fn sample(
    admin: &Admin,
    member: &str,
    incarnation: u32,
    port: u16,
) -> anyhow::Result<Option<(Sample, Option<LeaderSeen>)>> {
    let Ok(before) = admin.cluster(port).await else {
        return Ok(None);
    };
    let Ok(metrics) = admin.metrics(port).await else {
        return Ok(None);
    };
    let events = metric_value(&metrics, EVENTS_COUNTER)?;
    let Ok(after) = admin.cluster(port).await else {
        return Ok(None);
    };
    let at = Instant::now();
    let status = &after["status"];
    let leader = status["leader"].as_str().map(|leader| LeaderSeen {
        at,
        leader: leader.to_owned(),
    });
    Ok(Some((
        Sample {
            member: member.to_owned(),
            incarnation,
            at,
            before: RunSeen::from_view(&before, member),
            events,
            after: RunSeen::from_view(&after, member),
        },
        leader,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_seen_names_whether_the_member_acknowledged() {
        let view =
            serde_json::json!({"status": {"run": {"run_id": "r1", "acknowledged": ["a", "b"]}}});
        assert_eq!(
            RunSeen::from_view(&view, "b"),
            RunSeen {
                run_id: Some("r1".into()),
                acknowledged: true
            }
        );
        assert!(!RunSeen::from_view(&view, "c").acknowledged);
        assert_eq!(
            RunSeen::from_view(&serde_json::json!({"status": {"run": null}}), "a"),
            RunSeen::default()
        );
    }
}
