//! A replica's admin API as the tests read it: `GET /cluster`, `/metrics`,
//! `/consumer`, and `POST /reconcile`.

use anyhow::{Context, bail};
use recon_engine::cluster::{ClusterStatus, UnitState};
use recon_tests::process::metric_value;
use serde::Deserialize;
use std::time::Duration;

/// What `GET /cluster` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterView {
    /// The answering member.
    pub member: String,
    /// Leader, epoch, members, current run.
    pub status: ClusterStatus,
    /// The answering member's counters.
    pub counters: Option<Counters>,
}

/// A member's counters (cumulative since its process started).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Done-records it wrote.
    pub units_completed: u64,
    /// Units it stopped because the store fenced its epoch off.
    pub units_fenced: u64,
    /// Runs it led to their barrier.
    pub runs_led: u64,
}

impl ClusterView {
    /// The answering member's `units_completed` (0 without a member).
    pub fn units_completed(&self) -> u64 {
        self.counters
            .map(|counters| counters.units_completed)
            .unwrap_or(0)
    }

    /// The current run's id, if any.
    pub fn run_id(&self) -> Option<&str> {
        self.status.run.as_ref().map(|run| run.run_id.as_str())
    }

    /// Units of the current run in `state`, with their owners.
    pub fn units_in(&self, state: UnitState) -> Vec<(String, Option<String>)> {
        self.status
            .run
            .iter()
            .flat_map(|run| run.units.iter())
            .filter(|unit| unit.state == state)
            .map(|unit| (unit.id.clone(), unit.owner.clone()))
            .collect()
    }
}

/// The consumer's pause state and assignment (`GET /consumer`).
#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerView {
    /// Whether event application is paused.
    pub paused: bool,
    /// Assigned partitions.
    pub partitions: Vec<serde_json::Value>,
}

/// A client for the admin API of replicas on loopback.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    /// The admin token the mutating endpoints need, if the replicas have one.
    pub token: Option<String>,
}

impl Admin {
    pub fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .context("build the admin HTTP client")?;
        Ok(Self { http, token: None })
    }

    /// `GET /cluster` of the replica on `port`.
    pub async fn cluster(&self, port: u16) -> anyhow::Result<ClusterView> {
        let url = format!("http://127.0.0.1:{port}/cluster");
        let response = self.http.get(&url).send().await.context("GET /cluster")?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        response.json().await.context("parse GET /cluster")
    }

    /// `GET /consumer` of the replica on `port`.
    pub async fn consumer(&self, port: u16) -> anyhow::Result<ConsumerView> {
        let url = format!("http://127.0.0.1:{port}/consumer");
        let response = self.http.get(&url).send().await.context("GET /consumer")?;
        response.json().await.context("parse GET /consumer")
    }

    /// A counter from the replica's `/metrics`; an error if it is not
    /// exported (the replica registers its counters at 0 at start-up).
    pub async fn metric(&self, port: u16, name: &str) -> anyhow::Result<u64> {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let text = self
            .http
            .get(&url)
            .send()
            .await
            .context("GET /metrics")?
            .error_for_status()?
            .text()
            .await?;
        metric_value(&text, name)
    }

    /// Events the replica's consumer applied so far.
    pub async fn events_applied(&self, port: u16) -> anyhow::Result<u64> {
        self.metric(port, "recon_consumer_events_received_total")
            .await
    }

    /// `POST /reconcile` on the replica on `port`; its answer (the pending
    /// request, with the run id that will serve it).
    pub async fn request_run(
        &self,
        port: u16,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("http://127.0.0.1:{port}/reconcile");
        let mut request = self.http.post(&url).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.context("POST /reconcile")?;
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
            .context("decode the answer of POST /reconcile")
    }
}
