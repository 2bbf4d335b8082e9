//! The start-up check of a replica's access to the broker: can this client
//! connect, authenticate, see the topic and use its consumer group?
//!
//! A wrong password or an ACL that is missing would otherwise show only as
//! librdkafka's retries in the log while the replica looks alive: the check
//! turns them into one error that names what was refused, decided from
//! librdkafka's error codes (never from message text). A broker that does
//! not answer yet is not a refusal: consumption goes on trying.

use crate::{Error, KafkaConfig, Result};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Mutex;
use std::time::Duration;

/// Most events served from the client's queue to read its errors.
const ERROR_POLLS: usize = 100;
/// How long one such poll may wait.
const ERROR_POLL_WAIT: Duration = Duration::from_millis(100);

/// What the broker refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// SASL authentication failed (a wrong user or password).
    SaslAuthentication,
    /// The TLS handshake failed (an untrusted certificate, a plaintext
    /// client on a TLS listener, …).
    TlsHandshake,
    /// The principal may not describe or read the topic (ACLs).
    TopicAuthorization,
    /// The principal may not use the consumer group (ACLs).
    GroupAuthorization,
}

impl Refusal {
    /// The refusal a librdkafka error code means, if it is one.
    pub fn from_code(code: RDKafkaErrorCode) -> Option<Self> {
        match code {
            RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
                Some(Self::SaslAuthentication)
            }
            RDKafkaErrorCode::SSL => Some(Self::TlsHandshake),
            RDKafkaErrorCode::TopicAuthorizationFailed => Some(Self::TopicAuthorization),
            RDKafkaErrorCode::GroupAuthorizationFailed => Some(Self::GroupAuthorization),
            _ => None,
        }
    }

    /// What was refused, for an error message.
    pub fn describe(self) -> &'static str {
        match self {
            Self::SaslAuthentication => "SASL authentication failed (check the user and password)",
            Self::TlsHandshake => "the TLS handshake failed (check the CA and the listener)",
            Self::TopicAuthorization => "not authorized to read the topic (ACLs)",
            Self::GroupAuthorization => "not authorized to use the consumer group (ACLs)",
        }
    }
}

/// Records the first refusal librdkafka reports through its error callback
/// (authentication and TLS failures arrive there, not as a call's result).
#[derive(Default)]
struct RefusalContext {
    refused: Mutex<Option<Refusal>>,
}

impl RefusalContext {
    fn refused(&self) -> Option<Refusal> {
        *self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ClientContext for RefusalContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(refusal) = error.rdkafka_error_code().and_then(Refusal::from_code) {
            self.refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_or_insert(refusal);
        }
        tracing::debug!(error = %error, reason, "kafka client error during the access check");
    }
}

impl ConsumerContext for RefusalContext {}

/// Checks that the brokers let this client in, see `config.topic` and let
/// it use `group_id`: a metadata request for the topic, then the group's
/// committed offsets of its first partition (asked also of a topic that
/// does not exist yet, which is no refusal). Returns [`Error::Refused`] for
/// a refusal; `Ok(false)` when the brokers did not answer within `timeout`
/// (nothing known to be wrong yet); `Ok(true)` when everything answered.
pub async fn check_access(config: &KafkaConfig, group_id: &str, timeout: Duration) -> Result<bool> {
    let config = config.clone();
    let group_id = group_id.to_owned();
    tokio::task::spawn_blocking(move || check_access_blocking(&config, &group_id, timeout))
        .await
        .map_err(|_| Error::Timeout("access check".to_owned()))?
}

fn check_access_blocking(config: &KafkaConfig, group_id: &str, timeout: Duration) -> Result<bool> {
    let consumer: BaseConsumer<RefusalContext> = config
        .client_config()
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create_with_context(RefusalContext::default())
        .map_err(|source| Error::Client {
            client: "consumer",
            source,
        })?;
    let refused = |consumer: &BaseConsumer<RefusalContext>, code: Option<RDKafkaErrorCode>| {
        code.and_then(Refusal::from_code).or_else(|| {
            // Client errors reach the context only when the consumer is
            // polled: serve the ones queued so far.
            for _ in 0..ERROR_POLLS {
                if consumer.poll(ERROR_POLL_WAIT).is_none() {
                    break;
                }
            }
            consumer.context().refused()
        })
    };
    let metadata = match consumer.fetch_metadata(Some(&config.topic), timeout) {
        Ok(metadata) => metadata,
        Err(error) => {
            return match refused(&consumer, error.rdkafka_error_code()) {
                Some(refusal) => Err(Error::Refused {
                    refusal,
                    subject: config.topic.clone(),
                }),
                None => Ok(false),
            };
        }
    };
    let topic = metadata.topics().first();
    let topic_error = topic
        .and_then(|topic| topic.error())
        .map(RDKafkaErrorCode::from);
    if let Some(refusal) = refused(&consumer, topic_error) {
        return Err(Error::Refused {
            refusal,
            subject: config.topic.clone(),
        });
    }
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(&config.topic, 0, Offset::Invalid)
        .map_err(|source| Error::Operation {
            operation: "build the access check's partition list".to_owned(),
            source,
        })?;
    let answered = consumer.committed_offsets(partitions, timeout);
    let code = match &answered {
        Ok(list) => list
            .elements()
            .iter()
            .find_map(|element| element.error().err())
            .and_then(|error| error.rdkafka_error_code()),
        Err(error) => error.rdkafka_error_code(),
    };
    if let Some(refusal) = refused(&consumer, code) {
        return Err(Error::Refused {
            refusal,
            subject: group_id.to_owned(),
        });
    }
    Ok(answered.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_read_from_codes() {
        assert_eq!(
            Refusal::from_code(RDKafkaErrorCode::Authentication),
            Some(Refusal::SaslAuthentication)
        );
        assert_eq!(
            Refusal::from_code(RDKafkaErrorCode::SSL),
            Some(Refusal::TlsHandshake)
        );
        assert_eq!(
            Refusal::from_code(RDKafkaErrorCode::GroupAuthorizationFailed),
            Some(Refusal::GroupAuthorization)
        );
        assert_eq!(
            Refusal::from_code(RDKafkaErrorCode::BrokerTransportFailure),
            None
        );
        assert_eq!(Refusal::from_code(RDKafkaErrorCode::RequestTimedOut), None);
    }
}
