//! The replica consumer.
//!
//! One consumer-group member that polls on a dedicated thread, collects
//! batches, decodes them, applies them through the [`EventSink`] and only
//! then stores their offsets (at-least-once: a crash between the database
//! commit and the offset commit replays the batch, which the version guard
//! makes harmless). Offsets are committed every second and synchronously on
//! pause and on shutdown.
//!
//! An undecodable record is logged with its topic, partition and offset,
//! counted, and skipped. A batch the store refuses for a transient reason is
//! retried with backoff until it lands or the consumer is shut down; one it
//! refuses permanently is retried event by event so that only the offending
//! events are skipped (and counted).
//!
//! While paused the loop keeps polling (so the member stays in its group);
//! a message that still arrives then is not applied: its partition is sought
//! back to it when the gate resumes.

mod context;
mod gate;
mod metrics;
mod state;

pub use gate::PauseGate;
pub use metrics::{ConsumerMetrics, PartitionLabels};
pub use state::{ConsumerStatus, PartitionStatus};

use crate::{Error, KafkaConfig, Result};
use context::GateContext;
use gate::GateCommand;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use recon_core::Change;
use recon_core::ports::{EventSink, FailureKind};
use state::SharedState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn};

/// Tuning of the replica consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Consumer group id (all replicas of a service share it).
    pub group_id: String,
    /// Most events applied in one batch (one transaction).
    pub max_batch: usize,
    /// How long to wait for a batch to fill once its first event arrived.
    pub max_batch_wait: Duration,
    /// Longest wait between two retries of a failing batch.
    pub max_retry_backoff: Duration,
    /// Start with the gate paused (a replica joining while a reconciliation
    /// runs must not apply anything before the barrier).
    pub start_paused: bool,
}

impl ConsumerSettings {
    /// Defaults for a group: batches of up to 5000 events, 20 ms to fill.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            max_batch: 5_000,
            max_batch_wait: Duration::from_millis(20),
            max_retry_backoff: Duration::from_secs(5),
            start_paused: false,
        }
    }
}

/// One record taken off the topic.
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
}

/// The replica consumer; [`ReplicaConsumer::spawn`] runs it.
pub struct ReplicaConsumer {
    consumer: BaseConsumer<GateContext>,
    settings: ConsumerSettings,
    sink: Arc<dyn EventSink>,
    metrics: ConsumerMetrics,
    state: Arc<SharedState>,
    commands: mpsc::UnboundedReceiver<GateCommand>,
    /// While paused: the first unapplied offset seen per partition.
    rewind: BTreeMap<(String, i32), i64>,
}

impl ReplicaConsumer {
    /// Creates the consumer, subscribed to the configured topic, and the
    /// gate that pauses it.
    pub fn new(
        kafka: &KafkaConfig,
        settings: ConsumerSettings,
        sink: Arc<dyn EventSink>,
        metrics: ConsumerMetrics,
    ) -> Result<(Self, PauseGate)> {
        let state = Arc::new(SharedState::default());
        if settings.start_paused {
            state.set_paused(true);
            metrics.paused.set(1);
        }
        let context = GateContext {
            state: state.clone(),
            metrics: metrics.clone(),
        };
        let consumer: BaseConsumer<GateContext> = kafka
            .client_config()
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "1000")
            // Notice a topic created after we subscribed within seconds.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(context)
            .map_err(|source| Error::Client {
                client: "consumer",
                source,
            })?;
        consumer
            .subscribe(&[kafka.topic.as_str()])
            .map_err(|source| Error::Operation {
                operation: format!("subscribe to {}", kafka.topic),
                source,
            })?;
        let (sender, commands) = mpsc::unbounded_channel();
        let gate = PauseGate {
            commands: sender,
            state: state.clone(),
        };
        let consumer = Self {
            consumer,
            settings,
            sink,
            metrics,
            state,
            commands,
            rewind: BTreeMap::new(),
        };
        Ok((consumer, gate))
    }

    /// Runs the poll loop on a blocking thread until `shutdown` is cancelled,
    /// then commits what was applied and leaves the group.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || self.run(&runtime, &shutdown))
    }

    fn run(mut self, runtime: &Handle, shutdown: &CancellationToken) {
        info!(group = %self.settings.group_id, "consumer started");
        while !shutdown.is_cancelled() {
            self.handle_commands();
            let batch = self.next_batch();
            if batch.is_empty() {
                continue;
            }
            if self.state.is_paused() {
                self.hold_back(&batch);
                continue;
            }
            if !self.process(batch, runtime, shutdown) {
                break;
            }
        }
        self.commit_sync("shutdown");
        self.consumer.unsubscribe();
        info!("consumer stopped");
    }

    fn handle_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                GateCommand::Pause(done) => {
                    self.pause_assignment();
                    let _ = done.send(());
                }
                GateCommand::Resume(done) => {
                    self.resume_assignment();
                    let _ = done.send(());
                }
            }
        }
    }

    fn pause_assignment(&mut self) {
        // Set the flag first: a rebalance from here on pauses what it assigns.
        self.state.set_paused(true);
        self.metrics.paused.set(1);
        match self.consumer.assignment() {
            Ok(assignment) => {
                if let Err(error) = self.consumer.pause(&assignment) {
                    error!(error = %error, "could not pause assigned partitions");
                }
            }
            Err(error) => error!(error = %error, "could not read the assignment"),
        }
        self.commit_sync("pause");
        info!("consumer paused");
    }

    fn resume_assignment(&mut self) {
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(error) => {
                error!(error = %error, "could not read the assignment; resuming anyway");
                TopicPartitionList::new()
            }
        };
        for ((topic, partition), offset) in std::mem::take(&mut self.rewind) {
            let assigned = assignment.find_partition(&topic, partition).is_some();
            if !assigned {
                continue; // moved to another member, which starts at the committed offset
            }
            if let Err(error) = self.consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                error!(error = %error, topic, partition, offset, "could not rewind a partition held back during the pause");
            }
        }
        self.state.set_paused(false);
        self.metrics.paused.set(0);
        if let Err(error) = self.consumer.resume(&assignment) {
            error!(error = %error, "could not resume assigned partitions");
        }
        info!("consumer resumed");
    }

    /// Polls one batch: waits up to 100 ms for a first record, then up to
    /// `max_batch_wait` for more.
    fn next_batch(&mut self) -> Vec<Record> {
        let mut batch = Vec::new();
        let Some(first) = self.poll_record(Duration::from_millis(100)) else {
            return batch;
        };
        batch.push(first);
        let deadline = Instant::now() + self.settings.max_batch_wait;
        while batch.len() < self.settings.max_batch {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.poll_record(remaining) {
                Some(record) => batch.push(record),
                None => break,
            }
            if remaining.is_zero() {
                break;
            }
        }
        batch
    }

    fn poll_record(&mut self, timeout: Duration) -> Option<Record> {
        match self.consumer.poll(timeout)? {
            Ok(message) => Some(Record {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                payload: message.payload().map(<[u8]>::to_vec),
            }),
            Err(error) => {
                warn!(error = %error, "kafka poll error");
                None
            }
        }
    }

    /// Remembers where each partition must restart after the pause.
    fn hold_back(&mut self, batch: &[Record]) {
        for record in batch {
            let key = (record.topic.clone(), record.partition);
            let first = self.rewind.entry(key).or_insert(record.offset);
            *first = (*first).min(record.offset);
        }
        self.metrics.events_held_back.inc_by(batch.len() as u64);
        debug!(records = batch.len(), "records held back while paused");
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
    }

    /// Decodes, applies and stores offsets of one batch. Returns `false` if
    /// shutdown interrupted it (nothing of it was stored then).
    fn process(
        &mut self,
        batch: Vec<Record>,
        runtime: &Handle,
        shutdown: &CancellationToken,
    ) -> bool {
        let span = info_span!("consumer.batch", records = batch.len());
        let _entered = span.enter();
        let started = Instant::now();
        let mut changes = Vec::with_capacity(batch.len());
        for record in &batch {
            match record.payload.as_deref().map(recon_proto::decode_change) {
                Some(Ok(change)) => changes.push(change),
                Some(Err(error)) => self.undecodable(record, &error.to_string()),
                None => self.undecodable(record, "record has no payload"),
            }
        }
        if !changes.is_empty() && !self.apply_with_retries(&changes, runtime, shutdown) {
            return false;
        }
        self.store_offsets(&batch);
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        true
    }

    fn undecodable(&self, record: &Record, reason: &str) {
        self.metrics.events_undecodable.inc();
        warn!(topic = %record.topic, partition = record.partition, offset = record.offset, reason, "skipping undecodable record");
    }

    fn apply_with_retries(
        &self,
        changes: &[Change],
        runtime: &Handle,
        shutdown: &CancellationToken,
    ) -> bool {
        self.metrics.events_received.inc_by(changes.len() as u64);
        let mut backoff = Duration::from_millis(50);
        loop {
            match runtime.block_on(self.sink.apply_events(changes)) {
                Ok(counts) => {
                    self.record_applied(counts);
                    return true;
                }
                Err(error) if error.kind == FailureKind::Transient => {
                    warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "applying a batch failed, retrying");
                }
                Err(error) => {
                    warn!(error = %error, events = changes.len(), "store refused a batch, applying its events one by one");
                    return self.apply_one_by_one(changes, runtime, shutdown);
                }
            }
            if wait_or_shutdown(runtime, shutdown, backoff) {
                return false;
            }
            backoff = (backoff * 2).min(self.settings.max_retry_backoff);
        }
    }

    fn apply_one_by_one(
        &self,
        changes: &[Change],
        runtime: &Handle,
        shutdown: &CancellationToken,
    ) -> bool {
        for change in changes {
            let mut backoff = Duration::from_millis(50);
            loop {
                match runtime.block_on(self.sink.apply_events(std::slice::from_ref(change))) {
                    Ok(counts) => {
                        self.record_applied(counts);
                        break;
                    }
                    Err(error) if error.kind == FailureKind::Transient => {}
                    Err(error) => {
                        self.metrics.events_rejected.inc();
                        error!(error = %error, tenant = change.tenant_id(), kind = %change.kind(), key = %change.key(), "store refused an event, skipping it");
                        break;
                    }
                }
                if wait_or_shutdown(runtime, shutdown, backoff) {
                    return false;
                }
                backoff = (backoff * 2).min(self.settings.max_retry_backoff);
            }
        }
        true
    }

    fn record_applied(&self, counts: recon_core::ports::AppliedCounts) {
        self.metrics.events_written.inc_by(counts.written);
        self.metrics
            .events_skipped_stale
            .inc_by(counts.skipped_stale);
        self.metrics
            .events_skipped_below_floor
            .inc_by(counts.skipped_below_floor);
    }

    fn store_offsets(&self, batch: &[Record]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for record in batch {
            let entry = next
                .entry((record.topic.as_str(), record.partition))
                .or_insert(0);
            *entry = (*entry).max(record.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(error) =
                offsets.add_partition_offset(topic, partition, Offset::Offset(offset))
            {
                error!(error = %error, topic, partition, "could not record an offset");
            }
        }
        if let Err(error) = self.consumer.store_offsets(&offsets) {
            // Happens when a partition was revoked meanwhile; its new owner
            // replays from the last commit, which the version guard absorbs.
            warn!(error = %error, "could not store offsets");
        }
    }

    fn commit_sync(&self, reason: &str) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => debug!(reason, "offsets committed"),
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(error) => warn!(error = %error, reason, "could not commit offsets"),
        }
    }
}

/// Sleeps `delay` unless shutdown comes first; returns whether it did.
fn wait_or_shutdown(runtime: &Handle, shutdown: &CancellationToken, delay: Duration) -> bool {
    runtime.block_on(async {
        tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(delay) => false,
        }
    })
}
