//! Kafka adapter of recon (rdkafka).
//!
//! * [`KafkaConfig`]: where the brokers are, the topic, extra client
//!   properties (credentials among them, never logged);
//! * [`admin::ensure_topic`]: creates the change topic if it is missing;
//! * [`access::check_access`]: whether the brokers let this client in
//!   (SASL, TLS, ACLs on the topic and the group);
//! * [`GroupMonitor`]: the consumer group's lag on every partition,
//!   whoever owns it;
//! * `producer`: publishes change events with W3C trace context headers;
//! * `consumer`: the replica consumer — batches, applies through an
//!   [`EventSink`](recon_core::ports::EventSink), stores offsets only after
//!   the database commit (or the dead letter's), holds and retries while the
//!   store fails transiently, and can be paused through its pause gate.

pub mod access;
pub mod admin;
mod config;
pub mod consumer;
mod error;
pub mod group;
pub mod producer;

pub use config::{
    DEFAULT_TOPIC, KafkaConfig, PROPERTY_VARIABLE_PREFIX, parse_properties,
    properties_from_variables,
};
pub use consumer::{ConsumerMetrics, ConsumerSettings, ConsumerStatus, PauseGate, ReplicaConsumer};
pub use error::{Error, Result};
pub use group::{GroupMetrics, GroupMonitor};
pub use producer::{
    ChangeProducer, PendingDelivery, RecordPosition, trace_context_from_headers, trace_headers,
};
