//! The replica consumer.
//!
//! One consumer-group member that polls on a dedicated thread, collects
//! batches, decodes them, applies them through the [`EventSink`] and only
//! then stores their offsets (at-least-once: a crash between the database
//! commit and the offset commit replays the batch, which the version guard
//! makes harmless). The next batch is taken off the topic and decoded
//! while the previous one is applied on the runtime; one batch is in
//! flight at a time, so batches land in the order they were taken, and a
//! pause, a failure or a shutdown waits for it first. Offsets are
//! committed every second and synchronously on pause and on shutdown.
//!
//! Nothing is skipped without a trace (DESIGN §6): an undecodable record,
//! and an event the store refuses for its *data*, is written to the store's
//! dead-letter table before its offset is stored (see the `batch` module). Any other
//! failure is the store's, not the event's: the batch stays pending and is
//! retried with backoff until it lands or the consumer is shut down. While
//! it is pending the loop keeps polling (so the member stays in its group
//! past `max.poll.interval.ms`), the assignment is paused, what still
//! arrives is held back and re-read afterwards, `/readyz` says why, and the
//! `store_unavailable` gauge is 1.
//!
//! While paused the loop keeps polling too; a message that still arrives
//! then is not applied: its partition is sought back to it when the gate
//! resumes.

mod batch;
mod context;
mod gate;
mod metrics;
mod state;

pub use gate::PauseGate;
pub use metrics::{ConsumerMetrics, PartitionLabels};
pub use state::{ConsumerStatus, PartitionStatus};

use crate::producer::trace_context_from_headers;
use crate::{Error, KafkaConfig, Result};
use batch::{Applier, PendingBatch};
use context::GateContext;
use gate::GateCommand;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use recon_core::ports::{EventSink, PortError};
use recon_core::schema::Schema;
use state::SharedState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Tuning of the replica consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Consumer group id (all replicas of a service share it).
    pub group_id: String,
    /// Most events applied in one batch (one transaction per partition).
    pub max_batch: usize,
    /// How long to wait for a batch to fill once its first event arrived.
    pub max_batch_wait: Duration,
    /// Longest wait between two retries of a failing batch.
    pub max_retry_backoff: Duration,
    /// Start with the gate paused for this owner (a replica joining while a
    /// reconciliation runs must not apply anything before the barrier).
    pub start_paused_by: Option<String>,
    /// Static group membership (`group.instance.id`): a member that comes
    /// back under the same id within the session timeout gets its
    /// partitions back without a rebalance. Must be stable across restarts
    /// and unique in the group (a pod name, `--member-id`).
    pub group_instance_id: Option<String>,
    /// The declared schema events are decoded against (the replica
    /// store's).
    pub data_model: &'static Schema,
}

impl ConsumerSettings {
    /// Defaults for a group: batches of up to 5000 events, 20 ms to fill.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            max_batch: 5_000,
            max_batch_wait: Duration::from_millis(20),
            max_retry_backoff: Duration::from_secs(5),
            start_paused_by: None,
            group_instance_id: None,
            data_model: Schema::default_schema(),
        }
    }
}

/// How long a consumer waits before it replaces a client lost to a fatal
/// error.
const FATAL_REBUILD_DELAY: Duration = Duration::from_secs(2);

/// The group member's client, subscribed to the topic; its context pauses
/// what is assigned while `state` holds consumption.
fn create_consumer(
    kafka: &KafkaConfig,
    settings: &ConsumerSettings,
    state: &Arc<SharedState>,
    metrics: &ConsumerMetrics,
) -> Result<BaseConsumer<GateContext>> {
    let context = GateContext {
        state: state.clone(),
        metrics: metrics.clone(),
    };
    let mut config = kafka.client_config();
    // A `group.instance.id` given as a Kafka property wins.
    if let Some(instance) = &settings.group_instance_id
        && config.get("group.instance.id").is_none()
    {
        config.set("group.instance.id", instance);
    }
    let consumer: BaseConsumer<GateContext> = config
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
    Ok(consumer)
}

/// A batch's apply running on the runtime: the batch comes back with the
/// outcome.
type InFlight = tokio::task::JoinHandle<(PendingBatch, std::result::Result<(), PortError>)>;

/// One record taken off the topic.
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    /// The producer's trace context from the record's headers.
    trace: Option<SpanContext>,
}

/// The replica consumer; [`ReplicaConsumer::spawn`] runs it.
pub struct ReplicaConsumer {
    consumer: BaseConsumer<GateContext>,
    /// To build the client again after a fatal error.
    kafka: KafkaConfig,
    settings: ConsumerSettings,
    /// Applies batches (the store and the counters).
    applier: Applier,
    metrics: ConsumerMetrics,
    state: Arc<SharedState>,
    commands: mpsc::UnboundedReceiver<GateCommand>,
    /// While held (paused, or waiting for the store): the first unapplied
    /// offset seen per partition.
    rewind: BTreeMap<(String, i32), i64>,
    /// The batch being applied while the store fails transiently.
    pending: Option<PendingBatch>,
    /// The batch being applied on the runtime while the loop takes and
    /// decodes the next one; it lands before the next one starts, so
    /// batches apply in order.
    in_flight: Option<InFlight>,
    /// Up to when paused time was added to `paused_seconds`.
    pause_clock: Instant,
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
        if let Some(owner) = &settings.start_paused_by {
            state.owners().insert(owner.clone());
            state.set_paused(true);
            metrics.paused.set(1);
        }
        let consumer = create_consumer(kafka, &settings, &state, &metrics)?;
        let (sender, commands) = mpsc::unbounded_channel();
        let gate = PauseGate {
            commands: sender,
            state: state.clone(),
        };
        let consumer = Self {
            consumer,
            kafka: kafka.clone(),
            settings,
            applier: Applier {
                sink,
                metrics: metrics.clone(),
            },
            metrics,
            state,
            commands,
            rewind: BTreeMap::new(),
            pending: None,
            in_flight: None,
            pause_clock: Instant::now(),
        };
        Ok((consumer, gate))
    }

    /// Runs the poll loop on a blocking thread of `tasks` until `shutdown`
    /// is cancelled, then commits what was applied and leaves the group.
    pub fn spawn(
        self,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let runtime = Handle::current();
        tasks.spawn_blocking(move || self.run(&runtime, &shutdown))
    }

    fn run(mut self, runtime: &Handle, shutdown: &CancellationToken) {
        info!(group = %self.settings.group_id, "consumer started");
        while !shutdown.is_cancelled() {
            self.account_pause();
            if let Some((code, reason)) = self.consumer.client().fatal_error() {
                self.finish_in_flight(runtime);
                self.replace_fenced_client(code, &reason, shutdown);
                continue;
            }
            if self.pending.is_some() {
                // Gate commands wait: a pause returns once this batch landed.
                self.retry_pending(runtime);
                continue;
            }
            // Taken and decoded while the previous batch is applied.
            let records = self.next_batch();
            let batch =
                (!records.is_empty()).then(|| PendingBatch::new(records, self.settings.data_model));
            self.finish_in_flight(runtime);
            // Gate commands wait for the previous batch too.
            self.handle_commands();
            let Some(batch) = batch else {
                continue;
            };
            if self.pending.is_some() || self.state.is_paused() {
                // The previous batch failed (it is retried first), or a
                // pause: this one waits.
                self.hold_back(&batch.records);
                continue;
            }
            self.start_batch(batch, runtime);
        }
        self.finish_in_flight(runtime);
        if self.pending.is_some() {
            warn!(
                "shutting down with a batch not yet applied; it is replayed from the last committed offset"
            );
        }
        self.commit_sync("shutdown");
        self.consumer.unsubscribe();
        info!("consumer stopped");
    }

    /// After a fatal error (librdkafka's only one for a consumer: a static
    /// member fenced by another with its `group.instance.id`, which a
    /// coordinator failover can also cause to a member by itself) the client
    /// can neither fetch nor commit again: build a new one, which joins
    /// under the same instance id and replaces the fenced registration.
    /// What it had fetched but not committed is read again from the
    /// committed offsets (applying twice is harmless); a pause carries over
    /// (new assignments are paused while the gate is). Two replicas that
    /// share a `--member-id` fence each other in turn: each rebuild waits
    /// [`FATAL_REBUILD_DELAY`] and logs the reason.
    fn replace_fenced_client(
        &mut self,
        code: rdkafka::error::RDKafkaErrorCode,
        reason: &str,
        shutdown: &CancellationToken,
    ) {
        error!(code = ?code, reason, "fatal kafka consumer error; building a new consumer (two replicas with one --member-id fence each other)");
        self.metrics.consumer_rebuilds.inc();
        self.pending = None;
        self.rewind.clear();
        self.clear_store_unavailable();
        let deadline = Instant::now() + FATAL_REBUILD_DELAY;
        while !shutdown.is_cancelled() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        match create_consumer(&self.kafka, &self.settings, &self.state, &self.metrics) {
            Ok(consumer) => {
                context::record_assignment(&self.state, &self.metrics, Vec::new());
                self.consumer = consumer;
            }
            Err(error) => {
                error!(error = %error, "could not build a new kafka consumer; trying again")
            }
        }
    }

    /// Adds the time since the last call to `paused_seconds` if paused
    /// meanwhile (state changes only between calls).
    fn account_pause(&mut self) {
        let now = Instant::now();
        if self.state.is_paused() {
            let paused = now.duration_since(self.pause_clock).as_secs_f64();
            self.metrics.paused_seconds.inc_by(paused);
        }
        self.pause_clock = now;
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
        self.state.set_paused(false);
        self.metrics.paused.set(0);
        if self.state.is_holding() {
            info!("consumer resumed; still waiting for the replica store");
            return;
        }
        self.release_held_back();
        info!("consumer resumed");
    }

    /// Seeks every partition back to its first held-back record and resumes
    /// the assignment.
    fn release_held_back(&mut self) {
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
                error!(error = %error, topic, partition, offset, "could not rewind a partition held back");
            }
        }
        if let Err(error) = self.consumer.resume(&assignment) {
            error!(error = %error, "could not resume assigned partitions");
        }
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
            Ok(message) => {
                self.state.set_broker_refused(None);
                Some(Record {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    trace: message.headers().and_then(trace_context_from_headers),
                })
            }
            Err(error) => {
                context::note_error(&self.state, &error, "kafka poll error");
                None
            }
        }
    }

    /// Remembers where each partition must restart after the pause (or
    /// once the store is back).
    fn hold_back(&mut self, batch: &[Record]) {
        for record in batch {
            let key = (record.topic.clone(), record.partition);
            let first = self.rewind.entry(key).or_insert(record.offset);
            *first = (*first).min(record.offset);
        }
        self.metrics.events_held_back.inc_by(batch.len() as u64);
        debug!(records = batch.len(), "records held back");
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
    }

    /// Starts applying a batch on the runtime ([`Self::finish_in_flight`]
    /// waits for it); it stays pending while the store fails transiently.
    fn start_batch(&mut self, mut batch: PendingBatch, runtime: &Handle) {
        self.metrics
            .events_received
            .inc_by(batch.decoded_events() as u64);
        let applier = self.applier.clone();
        let span = batch_span(&batch);
        let applying = async move {
            let result = applier.advance(&mut batch).await;
            (batch, result)
        };
        self.in_flight = Some(runtime.spawn(applying.instrument(span)));
    }

    /// Waits for the batch in flight, if any, and settles it.
    fn finish_in_flight(&mut self, runtime: &Handle) {
        let Some(applying) = self.in_flight.take() else {
            return;
        };
        match runtime.block_on(applying) {
            Ok((batch, result)) => self.settle(batch, result),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Only when the runtime shuts down: nothing had its offset
            // stored, the next owner replays it.
            Err(error) => warn!(error = %error, "a batch's apply was cancelled"),
        }
    }

    /// While a batch is pending: polls (so the member stays in its group),
    /// holds back what arrives, and retries the batch when its backoff is up.
    fn retry_pending(&mut self, runtime: &Handle) {
        let Some(batch) = self.pending.take() else {
            return;
        };
        let wait = batch
            .retry_at
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if let Some(record) = self.poll_record(wait) {
            self.hold_back(std::slice::from_ref(&record));
        }
        if Instant::now() < batch.retry_at {
            self.pending = Some(batch);
            return;
        }
        self.metrics.store_retries.inc();
        self.attempt(batch, runtime);
    }

    /// Carries a batch as far as it goes; stores its offsets when done.
    fn attempt(&mut self, mut batch: PendingBatch, runtime: &Handle) {
        let span = batch_span(&batch);
        let result = runtime.block_on(self.applier.advance(&mut batch).instrument(span));
        self.settle(batch, result);
    }

    /// Stores a batch's offsets once it landed; keeps it pending (and
    /// holds consumption) when it failed transiently.
    fn settle(&mut self, mut batch: PendingBatch, result: std::result::Result<(), PortError>) {
        match result {
            Ok(()) => {
                self.store_offsets(&batch.records);
                self.metrics
                    .batch_seconds
                    .observe(batch.started.elapsed().as_secs_f64());
                if batch.failures > 0 {
                    self.store_available_again(&batch);
                }
            }
            Err(error) => {
                self.store_unavailable(&mut batch, &error);
                self.pending = Some(batch);
            }
        }
    }

    /// A transient store failure: hold consumption, say why, back off.
    fn store_unavailable(&mut self, batch: &mut PendingBatch, error: &PortError) {
        if batch.failures == 0 {
            error!(error = %error, records = batch.records.len(), "replica store unavailable: holding consumption and retrying the batch until it lands");
            self.metrics.store_unavailable.set(1);
            if let Ok(assignment) = self.consumer.assignment()
                && let Err(pause_error) = self.consumer.pause(&assignment)
            {
                error!(error = %pause_error, "could not pause assigned partitions");
            }
        } else {
            warn!(error = %error, failures = batch.failures + 1, retry_in_ms = batch.backoff.as_millis() as u64, "replica store still unavailable, retrying the batch");
        }
        self.state
            .set_store_unavailable(Some(error.message.clone()));
        batch.failures += 1;
        batch.retry_at = Instant::now() + batch.backoff;
        batch.backoff = (batch.backoff * 2).min(self.settings.max_retry_backoff);
    }

    /// Says the store takes batches again (`/readyz`, the gauge).
    fn clear_store_unavailable(&self) {
        self.state.set_store_unavailable(None);
        self.metrics.store_unavailable.set(0);
    }

    fn store_available_again(&mut self, batch: &PendingBatch) {
        self.clear_store_unavailable();
        info!(
            failures = batch.failures,
            "replica store available again: the held batch landed, resuming consumption"
        );
        if !self.state.is_paused() {
            self.release_held_back();
        }
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

/// The span of a batch's apply, continuing its producers' traces.
fn batch_span(batch: &PendingBatch) -> tracing::Span {
    let span = info_span!("consumer.batch", records = batch.records.len());
    continue_producer_traces(&span, &batch.records);
    span
}

/// Most producer traces a batch span links to besides its parent.
const MAX_TRACE_LINKS: usize = 32;

/// Makes a batch's span continue the trace of its first record that carries
/// one (the relay's batch usually wrote them all), linked to the other
/// traces its records came from.
fn continue_producer_traces(span: &tracing::Span, records: &[Record]) {
    let mut traces = records.iter().filter_map(|record| record.trace.as_ref());
    let Some(first) = traces.next() else {
        return;
    };
    let parent = opentelemetry::Context::new().with_remote_span_context(first.clone());
    let _ = span.set_parent(parent);
    let mut linked = vec![first.trace_id()];
    for context in traces {
        if linked.len() > MAX_TRACE_LINKS {
            break;
        }
        if !linked.contains(&context.trace_id()) {
            linked.push(context.trace_id());
            span.add_link(context.clone());
        }
    }
}
