//! Applying one batch: a resumable sequence of steps, so that a transient
//! store failure leaves the batch pending (and the poll loop polling) and
//! the next attempt continues where the failed one stopped.
//!
//! 1. Undecodable records are written to the dead-letter table.
//! 2. The decoded events are applied, one transaction per partition, the
//!    partitions concurrently.
//! 3. If the store refuses that batch for its data, the events are applied
//!    one by one; each one refused for its data is written to the
//!    dead-letter table (and counted) before moving on.
//!
//! Any transient failure — of an apply or of a dead-letter write — stops
//! the sequence at its step; nothing of the batch has its offset stored
//! until every step is done. Every step is idempotent (the version guard,
//! dead letters keyed by offset), so a step repeated after a crash is
//! harmless.

use super::{ConsumerMetrics, Record};
use futures::future::join_all;
use recon_core::Change;
use recon_core::ports::{AppliedCounts, DeadLetter, EventSink, FailureKind, PortError};
use recon_core::schema::Schema;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// Where a pending batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Write the undecodable records as dead letters.
    DeadLetterUndecodable,
    /// Apply every decoded event (one transaction per partition).
    WholeBatch,
    /// Apply the events one by one from this index of the batch.
    OneByOne { next: usize },
    /// Everything applied or dead-lettered.
    Done,
}

/// A batch taken off the topic and not yet fully applied.
pub(super) struct PendingBatch {
    pub records: Vec<Record>,
    /// Per record: the decoded event, or why it is not decodable.
    decoded: Vec<Result<Change, String>>,
    step: Step,
    /// Transient failures so far.
    pub failures: u32,
    /// Wait before the next attempt.
    pub backoff: Duration,
    /// Earliest time of the next attempt.
    pub retry_at: Instant,
    /// When the batch was taken (for the batch duration metric).
    pub started: Instant,
}

impl PendingBatch {
    /// Decodes a batch against `schema`.
    pub fn new(records: Vec<Record>, schema: &'static Schema) -> Self {
        let decoded = records
            .iter()
            .map(|record| match record.payload.as_deref() {
                Some(payload) => {
                    recon_proto::decode_change_in(payload, schema).map_err(|e| e.to_string())
                }
                None => Err("record has no payload".to_owned()),
            })
            .collect();
        let now = Instant::now();
        Self {
            records,
            decoded,
            step: Step::DeadLetterUndecodable,
            failures: 0,
            backoff: Duration::from_millis(50),
            retry_at: now,
            started: now,
        }
    }

    /// Events that decoded.
    pub fn decoded_events(&self) -> usize {
        self.decoded
            .iter()
            .filter(|decoded| decoded.is_ok())
            .count()
    }

    /// A dead letter for record `index`.
    fn dead_letter(&self, index: usize, error: String) -> DeadLetter {
        let record = &self.records[index];
        DeadLetter {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.clone(),
            payload: record.payload.clone(),
            error,
        }
    }
}

/// What applies batches: the store and the counters. Cloned into the task
/// that applies a batch while the poll loop takes the next one.
#[derive(Clone)]
pub(super) struct Applier {
    pub sink: Arc<dyn EventSink>,
    pub metrics: ConsumerMetrics,
}

impl Applier {
    /// Carries the batch's steps as far as they go. `Err` is a transient
    /// failure: the batch stays at the failed step.
    pub async fn advance(&self, batch: &mut PendingBatch) -> Result<(), PortError> {
        loop {
            batch.step = match batch.step {
                Step::DeadLetterUndecodable => {
                    self.dead_letter_undecodable(batch).await?;
                    Step::WholeBatch
                }
                Step::WholeBatch => self.apply_whole(batch).await?,
                Step::OneByOne { next } => {
                    self.apply_one_by_one(batch, next).await?;
                    Step::Done
                }
                Step::Done => return Ok(()),
            };
        }
    }

    async fn dead_letter_undecodable(&self, batch: &PendingBatch) -> Result<(), PortError> {
        let mut letters = Vec::new();
        for (index, decoded) in batch.decoded.iter().enumerate() {
            if let Err(reason) = decoded {
                letters.push(batch.dead_letter(index, format!("undecodable record: {reason}")));
            }
        }
        if letters.is_empty() {
            return Ok(());
        }
        self.sink.record_dead_letters(&letters).await?;
        for letter in &letters {
            warn!(topic = %letter.topic, partition = letter.partition, offset = letter.offset, reason = %letter.error, "undecodable record written to the dead-letter table");
        }
        self.metrics.events_undecodable.inc_by(letters.len() as u64);
        self.metrics.dead_letters.inc_by(letters.len() as u64);
        Ok(())
    }

    /// Applies the decoded events, one transaction per partition, the
    /// partitions concurrently: a scope's events share a partition (the
    /// relay keys records by scope), so the transactions touch disjoint
    /// rows, and the version guard would make their order irrelevant
    /// anyway. A transient failure of any retries them all (applying twice
    /// is harmless); a refusal for data goes one by one.
    async fn apply_whole(&self, batch: &PendingBatch) -> Result<Step, PortError> {
        let mut partitions: BTreeMap<i32, Vec<Change>> = BTreeMap::new();
        for (record, decoded) in batch.records.iter().zip(&batch.decoded) {
            if let Ok(change) = decoded {
                partitions
                    .entry(record.partition)
                    .or_default()
                    .push(change.clone());
            }
        }
        let outcomes = join_all(
            partitions
                .values()
                .map(|changes| self.sink.apply_events(changes)),
        )
        .await;
        let mut refusal = None;
        let mut transient = None;
        for outcome in outcomes {
            match outcome {
                Ok(counts) => self.record_applied(counts),
                Err(error) if error.kind == FailureKind::Transient => transient = Some(error),
                Err(error) => refusal = Some(error),
            }
        }
        if let Some(error) = transient {
            return Err(error);
        }
        if let Some(error) = refusal {
            warn!(error = %error, events = batch.decoded_events(), "store refused a batch for its data, applying its events one by one");
            return Ok(Step::OneByOne { next: 0 });
        }
        Ok(Step::Done)
    }

    async fn apply_one_by_one(
        &self,
        batch: &mut PendingBatch,
        first: usize,
    ) -> Result<(), PortError> {
        for index in first..batch.records.len() {
            // Resume here if this event fails transiently.
            batch.step = Step::OneByOne { next: index };
            let Ok(change) = &batch.decoded[index] else {
                continue; // dead-lettered already
            };
            match self.sink.apply_events(std::slice::from_ref(change)).await {
                Ok(counts) => self.record_applied(counts),
                Err(error) if error.kind == FailureKind::Transient => return Err(error),
                Err(refusal) => {
                    let letter = batch.dead_letter(index, refusal.message.clone());
                    self.sink
                        .record_dead_letters(std::slice::from_ref(&letter))
                        .await?;
                    self.metrics.events_rejected.inc();
                    self.metrics.dead_letters.inc();
                    error!(error = %refusal, topic = %letter.topic, partition = letter.partition, offset = letter.offset, tenant = change.tenant_id(), kind = %change.kind(), key = %change.key(), "store refused an event for its data; written to the dead-letter table");
                }
            }
        }
        Ok(())
    }

    fn record_applied(&self, counts: AppliedCounts) {
        self.metrics.events_written.inc_by(counts.written);
        self.metrics
            .events_skipped_stale
            .inc_by(counts.skipped_stale);
        self.metrics
            .events_skipped_below_floor
            .inc_by(counts.skipped_below_floor);
    }
}
