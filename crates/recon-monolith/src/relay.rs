//! The outbox relay: publishes the [`outbox`](crate::outbox) to Kafka.
//!
//! [`Relay::run`] reads unpublished outbox rows in id (= commit) order, in
//! batches, enqueues them on the [`ChangeProducer`] in that order (keyed by
//! tenant id, so a tenant's events share one partition and keep their
//! order), waits for the broker's acknowledgement of **every** record of the
//! batch, and then marks published only the **acknowledged prefix** in id
//! order. Everything from the first failed row on is read again and
//! re-published after a backoff (backon, exponential with jitter), for ever,
//! until it succeeds or the relay is cancelled.
//!
//! Guarantees, per tenant, on the topic:
//!
//! * every outbox row is published at least once; a row is marked published
//!   only after the broker acknowledged it (and every row before it);
//! * if an older event appears after a newer one (a failed record retried
//!   after later ones of its batch went through, or rows re-published after
//!   a crash), the newer one appears again after it: the **last occurrences**
//!   of a tenant's events are in strictly increasing outbox order. The
//!   replica's version guard makes the duplicates harmless.
//!
//! Cancellation is safe at any point: rows acknowledged but not yet marked
//! are simply published again by the next run. One relay per monolith
//! database is assumed (two would publish every row twice, interleaved).

mod settings;

pub use recon_kafka::admin::ensure_topic;
pub use recon_kafka::{ChangeProducer, KafkaConfig};
pub use settings::{RelayMetrics, RelayMetricsSnapshot, RelaySettings};

use crate::{Monolith, OutboxEntry};
use backon::{ExponentialBuilder, Retryable};
use recon_core::ports::error_chain;
use recon_kafka::producer::trace_headers;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, field, info, info_span, warn};

/// Why one relay step failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or marking outbox rows failed.
    #[error("outbox database access failed")]
    Database(#[from] crate::Error),
    /// A record could not be enqueued or was not acknowledged.
    #[error("publishing outbox row {outbox_id} (tenant {tenant_id}) failed")]
    Publish {
        /// The first outbox row that was not acknowledged.
        outbox_id: i64,
        /// Its tenant.
        tenant_id: String,
        /// The Kafka error.
        #[source]
        source: recon_kafka::Error,
    },
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StepOutcome {
    /// Unpublished rows read (all of them were published).
    read: usize,
    /// Whether the batch was full (more rows are probably waiting).
    full: bool,
}

/// The outbox relay of one monolith.
pub struct Relay {
    monolith: Monolith,
    producer: Arc<ChangeProducer>,
    settings: RelaySettings,
    metrics: Arc<RelayMetrics>,
}

impl Relay {
    /// A relay publishing `monolith`'s outbox through `producer`.
    pub fn new(
        monolith: Monolith,
        producer: Arc<ChangeProducer>,
        settings: RelaySettings,
    ) -> Relay {
        Relay {
            monolith,
            producer,
            settings,
            metrics: Arc::new(RelayMetrics::default()),
        }
    }

    /// Live counters of this relay (shared; read them while it runs).
    pub fn metrics(&self) -> Arc<RelayMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Publishes the outbox until `shutdown` is cancelled: full batches back
    /// to back, then a poll every `idle_poll_interval`; failures are logged
    /// and retried with backoff, never returned.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(topic = %self.producer.topic(), batch_size = self.settings.batch_size, "outbox relay started");
        let mut last_backlog_refresh: Option<Instant> = None;
        let mut failures_at_last_success = 0;
        loop {
            let step = (|| self.step())
                .retry(self.backoff())
                .notify(|error: &RelayError, delay: Duration| self.on_failure(error, delay));
            let outcome = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                outcome = step => outcome,
            };
            let outcome = match outcome {
                Ok(outcome) => {
                    let failures = self.metrics.failures();
                    if failures > failures_at_last_success {
                        info!(
                            failed_attempts = failures - failures_at_last_success,
                            "outbox relay publishing again"
                        );
                        failures_at_last_success = failures;
                    }
                    outcome
                }
                // Unreachable with an unbounded backoff; kept total anyway.
                Err(error) => {
                    self.on_failure(&error, self.settings.max_backoff);
                    StepOutcome {
                        read: usize::MAX,
                        full: false,
                    }
                }
            };
            self.refresh_backlog(outcome.read, &mut last_backlog_refresh)
                .await;
            if outcome.full {
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.idle_poll_interval) => {}
            }
        }
        info!(published = self.metrics.published(), "outbox relay stopped");
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }

    fn on_failure(&self, error: &RelayError, delay: Duration) {
        self.metrics.record_failure();
        warn!(
            error = %error_chain(error),
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            failures = self.metrics.failures(),
            "outbox relay step failed, retrying"
        );
    }

    /// One batch: read, publish, await every acknowledgement, mark the
    /// acknowledged prefix.
    async fn step(&self) -> Result<StepOutcome, RelayError> {
        let entries = self
            .monolith
            .outbox_unpublished(self.settings.batch_size)
            .await?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(StepOutcome {
                read: 0,
                full: false,
            });
        };
        let span = info_span!(
            "relay.batch",
            rows = entries.len(),
            first_id = first.id,
            last_id = last.id,
            published = field::Empty,
        );
        self.publish(&entries).instrument(span).await?;
        Ok(StepOutcome {
            read: entries.len(),
            full: entries.len() as u64 >= self.settings.batch_size,
        })
    }

    async fn publish(&self, entries: &[OutboxEntry]) -> Result<(), RelayError> {
        let headers = trace_headers();
        let mut pending = Vec::with_capacity(entries.len());
        let mut first_failure: Option<RelayError> = None;
        for entry in entries {
            match self
                .producer
                .enqueue(&entry.tenant_id, &entry.payload, headers.clone())
            {
                Ok(delivery) => pending.push(delivery),
                Err(source) => {
                    first_failure = Some(publish_error(entry, source));
                    break;
                }
            }
        }
        // Await every enqueued record, even after a failure, so that nothing
        // of this batch is still in flight when the rest is retried.
        let enqueued = pending.len();
        let mut acknowledged = Vec::with_capacity(enqueued);
        let mut prefix_intact = true;
        for (entry, delivery) in entries.iter().zip(pending) {
            match delivery.await {
                Ok(_position) if prefix_intact => acknowledged.push(entry.id),
                Ok(_position) => {}
                Err(source) => {
                    if prefix_intact {
                        first_failure = Some(publish_error(entry, source));
                    }
                    prefix_intact = false;
                }
            }
        }
        self.monolith.outbox_mark_published(&acknowledged).await?;
        self.metrics.record_published(acknowledged.len() as u64);
        tracing::Span::current().record("published", acknowledged.len());
        debug!(
            published = acknowledged.len(),
            enqueued, "outbox batch acknowledged"
        );
        match first_failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Keeps the backlog gauge fresh without counting after every batch:
    /// an empty read means zero, otherwise the rows are counted at most once
    /// per `backlog_refresh_interval`.
    async fn refresh_backlog(&self, read: usize, last_refresh: &mut Option<Instant>) {
        if read == 0 {
            self.metrics.set_backlog(0);
            *last_refresh = Some(Instant::now());
            return;
        }
        if last_refresh.is_some_and(|at| at.elapsed() < self.settings.backlog_refresh_interval) {
            return;
        }
        match self.monolith.outbox_backlog().await {
            Ok(backlog) => {
                self.metrics.set_backlog(backlog);
                *last_refresh = Some(Instant::now());
            }
            Err(error) => debug!(error = %error_chain(&error), "outbox backlog count failed"),
        }
    }
}

fn publish_error(entry: &OutboxEntry, source: recon_kafka::Error) -> RelayError {
    RelayError::Publish {
        outbox_id: entry.id,
        tenant_id: entry.tenant_id.clone(),
        source,
    }
}

/// Creates the topic (if missing) with `partitions` partitions, retrying
/// with backoff while the brokers are unreachable. Returns `false` if
/// `shutdown` was cancelled first.
pub async fn ensure_topic_with_retry(
    config: &KafkaConfig,
    partitions: i32,
    shutdown: &CancellationToken,
) -> bool {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times();
    let attempt = (|| ensure_topic(config, partitions)).retry(backoff).notify(
        |error: &recon_kafka::Error, delay: Duration| {
            warn!(
                error = %error_chain(error),
                topic = %config.topic,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "topic check failed, retrying"
            );
        },
    );
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        outcome = attempt => outcome.is_ok(),
    }
}
