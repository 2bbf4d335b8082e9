//! The change-event producer: publishes records keyed by tenant id, waits
//! for the broker's acknowledgement, and carries the W3C trace context
//! (`traceparent`, `tracestate`) in the record headers.
//!
//! Ordering: librdkafka keeps the enqueue order of records per partition.
//! The producer asks for `acks=all` and allows one request in flight per
//! broker, so that librdkafka's own retries cannot reorder records within a
//! partition (they may duplicate one, which consumers tolerate). The
//! idempotent protocol is off by default (see `DEFAULT_SETTINGS` for why
//! tansu cannot take it) and can be switched on through
//! `KafkaConfig::properties`. A caller that needs "all or a prefix"
//! semantics enqueues records in order with [`ChangeProducer::enqueue`] and
//! awaits every returned [`PendingDelivery`]: a record that failed may be
//! followed by later ones that went through.
//!
//! The trace helpers are pure: [`traceparent`] formats a span context,
//! [`parse_traceparent`] and [`trace_context_from_headers`] read one back
//! (the consumer uses the latter to link its spans to the producer's).

use crate::{Error, KafkaConfig, Result};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::RwLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::warn;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Record header carrying the W3C `traceparent`.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Record header carrying the W3C `tracestate` (only sent when non-empty).
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Producer settings recon always uses; they cannot be overridden because
/// the relay's guarantees rest on them.
const ENFORCED_SETTINGS: [(&str, &str); 3] = [
    ("acks", "all"),
    // One request in flight per broker: librdkafka's own retries then
    // cannot reorder records within a partition, idempotent or not.
    ("max.in.flight.requests.per.connection", "1"),
    // librdkafka's default ("consistent_random") hashes keys differently
    // from the Java client; murmur2 keeps tenant → partition the same for
    // any producer of the topic.
    ("partitioner", "murmur2_random"),
];

/// Defaults that `KafkaConfig::properties` may override.
const DEFAULT_SETTINGS: [(&str, &str); 4] = [
    // Off by default: tansu 0.6 accepts idempotent producers, but its SQLite
    // storage panics on the first produce after an epoch bump (which
    // librdkafka does after a delivery timeout), and then refuses every
    // produce until restarted. With a real Kafka cluster, set it to `true`.
    ("enable.idempotence", "false"),
    // A record not acknowledged within this time fails, so that the caller
    // sees the outage (and retries) instead of waiting for 5 minutes.
    ("message.timeout.ms", "30000"),
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
];

/// Where the broker stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    /// The partition.
    pub partition: i32,
    /// The record's offset in the partition.
    pub offset: i64,
}

/// Publishes change events to the configured topic.
///
/// If librdkafka reports a fatal error (an idempotence violation it cannot
/// recover from), the next [`enqueue`](Self::enqueue) replaces the client
/// with a fresh one; records not acknowledged until then have failed and
/// must be published again by the caller.
pub struct ChangeProducer {
    config: KafkaConfig,
    producer: RwLock<FutureProducer>,
}

impl std::fmt::Debug for ChangeProducer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ChangeProducer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ChangeProducer {
    /// A producer for `config`'s brokers and topic. It connects lazily: an
    /// unreachable broker shows up as failed deliveries, not here.
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        Ok(Self {
            producer: RwLock::new(create_client(config)?),
            config: config.clone(),
        })
    }

    /// The topic records go to.
    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// Hands one record to librdkafka without waiting: records enqueued one
    /// after the other for the same key keep that order on the topic. The
    /// returned future resolves once the broker acknowledged (or finally
    /// refused) the record.
    pub fn enqueue(
        &self,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<PendingDelivery> {
        let producer = self.usable_client()?;
        let record = FutureRecord::to(&self.config.topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => Ok(PendingDelivery { delivery }),
            Err((source, _record)) => Err(Error::Operation {
                operation: format!("enqueue a record for {}", self.config.topic),
                source,
            }),
        }
    }

    /// Publishes one record and waits for the broker's acknowledgement.
    pub async fn publish(
        &self,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<RecordPosition> {
        self.enqueue(key, payload, headers)?.await
    }

    /// Waits up to `timeout` for every enqueued record to be acknowledged
    /// or to fail.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let producer = self.client();
        producer.flush(timeout).map_err(|source| Error::Operation {
            operation: format!("flush records for {}", self.config.topic),
            source,
        })
    }

    fn client(&self) -> FutureProducer {
        match self.producer.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current client, replaced first if librdkafka declared it dead.
    fn usable_client(&self) -> Result<FutureProducer> {
        let current = self.client();
        let Some((code, reason)) = current.client().fatal_error() else {
            return Ok(current);
        };
        warn!(topic = %self.config.topic, code = ?code, reason = %reason, "producer hit a fatal error, creating a new one");
        let fresh = create_client(&self.config)?;
        match self.producer.write() {
            Ok(mut guard) => *guard = fresh.clone(),
            Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
        }
        Ok(fresh)
    }
}

fn create_client(config: &KafkaConfig) -> Result<FutureProducer> {
    let mut client_config = config.client_config();
    for (key, value) in DEFAULT_SETTINGS {
        if client_config.get(key).is_none() {
            client_config.set(key, value);
        }
    }
    for (key, value) in ENFORCED_SETTINGS {
        client_config.set(key, value);
    }
    client_config.create().map_err(|source| Error::Client {
        client: "producer",
        source,
    })
}

/// The broker's answer for one enqueued record.
#[must_use = "a record counts as published only once its delivery resolved"]
pub struct PendingDelivery {
    delivery: DeliveryFuture,
}

impl Future for PendingDelivery {
    type Output = Result<RecordPosition>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = match Pin::new(&mut self.delivery).poll(context) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        Poll::Ready(match outcome {
            Ok(Ok(delivery)) => Ok(RecordPosition {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((source, _message))) => Err(Error::Operation {
                operation: "deliver a record".to_owned(),
                source,
            }),
            Err(_canceled) => Err(Error::Operation {
                operation: "deliver a record".to_owned(),
                source: KafkaError::Canceled,
            }),
        })
    }
}

/// The trace context to send with records produced now: the current
/// `tracing` span's OpenTelemetry context when an OpenTelemetry layer
/// records it, else a freshly generated (sampled) one, so that every record
/// carries a valid `traceparent`.
pub fn current_trace_context() -> SpanContext {
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        return span_context;
    }
    generated_trace_context()
}

/// A new random trace and span id, sampled.
pub fn generated_trace_context() -> SpanContext {
    let trace_id = loop {
        let candidate: u128 = rand::random();
        if candidate != 0 {
            break TraceId::from(candidate);
        }
    };
    let span_id = loop {
        let candidate: u64 = rand::random();
        if candidate != 0 {
            break SpanId::from(candidate);
        }
    };
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

/// The W3C `traceparent` value of a span context (version `00`).
pub fn traceparent(span_context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
}

/// Record headers carrying `span_context` (`traceparent`, and `tracestate`
/// when it is not empty).
pub fn trace_headers(span_context: &SpanContext) -> OwnedHeaders {
    let parent = traceparent(span_context);
    let mut headers = OwnedHeaders::new_with_capacity(2).insert(Header {
        key: TRACEPARENT_HEADER,
        value: Some(parent.as_str()),
    });
    let state = span_context.trace_state().header();
    if !state.is_empty() {
        headers = headers.insert(Header {
            key: TRACESTATE_HEADER,
            value: Some(state.as_str()),
        });
    }
    headers
}

/// Parses a W3C `traceparent` into a remote span context; `None` if the
/// value is malformed (wrong lengths, non-lowercase-hex, version `ff`, an
/// all-zero trace or parent id, or extra fields on version `00`).
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut fields = value.trim().split('-');
    let version = fields.next()?;
    let trace_id = fields.next()?;
    let parent_id = fields.next()?;
    let flags = fields.next()?;
    let has_more = fields.next().is_some();
    if !is_lower_hex(version, 2) || version == "ff" || (version == "00" && has_more) {
        return None;
    }
    if !is_lower_hex(trace_id, 32) || !is_lower_hex(parent_id, 16) || !is_lower_hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(parent_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::NONE,
    ))
}

fn is_lower_hex(text: &str, length: usize) -> bool {
    text.len() == length
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// The producer's trace context from a record's headers, as a remote span
/// context; `None` if there is no valid `traceparent`. A malformed
/// `tracestate` is dropped, as W3C asks.
///
/// A consumer links its span with tracing-opentelemetry:
/// `span.set_parent(Context::new().with_remote_span_context(context))`.
pub fn trace_context_from_headers<H: Headers + ?Sized>(headers: &H) -> Option<SpanContext> {
    let mut parent = None;
    let mut state = TraceState::NONE;
    for index in 0..headers.count() {
        let Some(header) = headers.try_get(index) else {
            continue;
        };
        let Some(value) = header
            .value
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
        else {
            continue;
        };
        if header.key.eq_ignore_ascii_case(TRACEPARENT_HEADER) {
            parent = parse_traceparent(value);
        } else if header.key.eq_ignore_ascii_case(TRACESTATE_HEADER) {
            state = TraceState::from_str(value).unwrap_or(TraceState::NONE);
        }
    }
    let parent = parent?;
    Some(SpanContext::new(
        parent.trace_id(),
        parent.span_id(),
        parent.trace_flags(),
        true,
        state,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips() {
        let context = parse_traceparent(EXAMPLE).expect("valid example");
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(traceparent(&context), EXAMPLE);
    }

    #[test]
    fn generated_contexts_are_valid_and_distinct() {
        let first = generated_trace_context();
        let second = generated_trace_context();
        assert!(first.is_valid() && first.is_sampled());
        assert_ne!(first.trace_id(), second.trace_id());
        let text = traceparent(&first);
        assert_eq!(text.len(), 55);
        let parsed = parse_traceparent(&text).expect("own output parses");
        assert_eq!(parsed.trace_id(), first.trace_id());
        assert_eq!(parsed.span_id(), first.span_id());
    }

    #[test]
    fn current_context_without_an_opentelemetry_layer_is_generated() {
        assert!(current_trace_context().is_valid());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e47360-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert!(parse_traceparent(value).is_none(), "accepted {value:?}");
        }
        // A future version may append fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }

    #[test]
    fn headers_carry_the_context_both_ways() {
        let state = TraceState::from_key_value([("vendor", "value")]).expect("valid state");
        let sent = SpanContext::new(
            TraceId::from(7_u128),
            SpanId::from(9_u64),
            TraceFlags::SAMPLED,
            false,
            state,
        );
        let headers = trace_headers(&sent).insert(Header {
            key: "other",
            value: Some("x"),
        });
        let received = trace_context_from_headers(&headers).expect("context");
        assert_eq!(received.trace_id(), sent.trace_id());
        assert_eq!(received.span_id(), sent.span_id());
        assert!(received.is_remote());
        assert_eq!(received.trace_state().header(), "vendor=value");
        assert!(trace_context_from_headers(&OwnedHeaders::new()).is_none());
    }

    #[test]
    fn empty_trace_state_sends_no_header() {
        let headers = trace_headers(&generated_trace_context());
        assert_eq!(headers.count(), 1);
    }
}
