//! The change-event producer: publishes records keyed by tenant id, waits
//! for the broker's acknowledgement, and carries the W3C trace context
//! (`traceparent`, `tracestate`) in the record headers.
//!
//! Ordering: librdkafka keeps the enqueue order of records per partition.
//! The producer asks for `acks=all` and allows one request in flight per
//! broker, so that librdkafka's own retries cannot reorder records within a
//! partition, and with the idempotent protocol on by default (the broker
//! drops a retried duplicate; `KafkaConfig::properties` can switch it off). A caller that needs "all or a prefix"
//! semantics enqueues records in order with [`ChangeProducer::enqueue`] and
//! awaits every returned [`PendingDelivery`]: a record that failed may be
//! followed by later ones that went through.
//!
//! Trace context goes through OpenTelemetry's global propagator (W3C
//! `TraceContextPropagator`, installed by the binary): [`trace_headers`]
//! writes the current span's, [`trace_context_from_headers`] reads it back
//! (the consumer continues the producer's trace with it).

use crate::{Error, KafkaConfig, Result};
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::warn;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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
    // The broker drops a retried batch it already has (no duplicates after
    // a lost acknowledgement) and keeps the order (librdkafka's own
    // retries cannot reorder records). Needs `IdempotentWrite` on the
    // cluster where ACLs are enforced (Kafka 3.0+ grants it with `Write`
    // on the topic).
    ("enable.idempotence", "true"),
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

/// Record headers carrying the current span's trace context (W3C
/// `traceparent` and `tracestate`, written by the global propagator), so
/// that a consumer's spans continue the producer's trace. Empty when the
/// current span has no OpenTelemetry context (no layer installed).
pub fn trace_headers() -> OwnedHeaders {
    let mut injector = HeaderInjector(OwnedHeaders::new_with_capacity(2));
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut injector)
    });
    injector.0
}

/// The producer's trace context from a record's headers, read by the
/// global propagator; `None` if they carry no valid one.
pub fn trace_context_from_headers<H: Headers + ?Sized>(headers: &H) -> Option<SpanContext> {
    let context =
        global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Writes propagated fields as record headers.
struct HeaderInjector(OwnedHeaders);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        let headers = std::mem::replace(&mut self.0, OwnedHeaders::new());
        self.0 = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
}

/// Reads propagated fields from record headers (keys match case-insensitively,
/// values that are not UTF-8 are ignored).
struct HeaderExtractor<'a, H: ?Sized>(&'a H);

impl<H: Headers + ?Sized> HeaderExtractor<'_, H> {
    fn headers(&self) -> impl Iterator<Item = Header<'_, &[u8]>> {
        (0..self.0.count()).filter_map(|index| self.0.try_get(index))
    }
}

impl<H: Headers + ?Sized> Extractor for HeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.headers()
            .find(|header| header.key.eq_ignore_ascii_case(key))
            .and_then(|header| header.value)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.headers().map(|header| header.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    #[test]
    fn headers_carry_the_context_both_ways() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let sent = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex"),
            SpanId::from_hex("b7ad6b7169203331").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "value")]).expect("state"),
        );
        let context = opentelemetry::Context::new().with_remote_span_context(sent.clone());
        let mut injector = HeaderInjector(OwnedHeaders::new());
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut injector)
        });
        let traceparent = HeaderExtractor(&injector.0)
            .get("TraceParent")
            .map(str::to_owned);
        assert_eq!(
            traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let received = trace_context_from_headers(&injector.0).expect("a context");
        assert_eq!(received.trace_id(), sent.trace_id());
        assert_eq!(received.span_id(), sent.span_id());
        assert_eq!(received.trace_state().header(), "vendor=value");
        assert!(received.is_remote());
    }

    #[test]
    fn headers_without_a_valid_context_give_none() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let headers = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        });
        assert!(trace_context_from_headers(&headers).is_none());
        assert!(trace_context_from_headers(&OwnedHeaders::new()).is_none());
    }
}
