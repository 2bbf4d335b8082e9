//! Topic administration.

use crate::{Error, KafkaConfig, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;
use tracing::info;

/// Asks the brokers for their `default.replication.factor` (KIP-464).
const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// Creates the configured topic with `partitions` partitions and the
/// brokers' `default.replication.factor` if it does not exist yet (an
/// existing topic is left as it is).
pub async fn ensure_topic(config: &KafkaConfig, partitions: i32) -> Result<()> {
    let admin = admin_client(config)?;
    let topic = NewTopic::new(
        &config.topic,
        partitions,
        TopicReplication::Fixed(BROKER_DEFAULT_REPLICATION),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|source| Error::Operation {
            operation: format!("create topic {}", config.topic),
            source,
        })?;
    for result in results {
        match result {
            Ok(name) => info!(topic = %name, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Operation {
                    operation: format!("create topic {name}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// An admin client of `config`'s brokers.
fn admin_client(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>> {
    config
        .client_config()
        .create()
        .map_err(|source| Error::Client {
            client: "admin",
            source,
        })
}

/// How long the change topic keeps events: what can be replayed to a
/// consumer group that starts over (its committed offsets expired after
/// `offsets.retention.minutes`, or a new group reading from the earliest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRetention {
    /// `retention.ms`; `None`: kept for ever (`-1`).
    pub retention: Option<Duration>,
    /// `cleanup.policy` includes `compact`: the last event of every key is
    /// kept for ever.
    pub compacted: bool,
}

impl TopicRetention {
    /// Why an event older than a deletion could be replayed after the
    /// deletion's tombstone was purged (tombstones are kept `tombstones`),
    /// resurrecting the deleted row; `None` if the topic drops every event
    /// before its tombstone could go.
    pub fn replay_risk(&self, tombstones: Duration) -> Option<String> {
        let mut risks = Vec::new();
        if self.compacted {
            risks.push(
                "the topic is compacted (the last event of every key is kept for ever)".to_owned(),
            );
        }
        match self.retention {
            None => risks.push("the topic keeps events for ever (retention.ms -1)".to_owned()),
            Some(retention) if retention > tombstones => risks.push(format!(
                "the topic keeps events {} s, longer than tombstones are kept ({} s)",
                retention.as_secs(),
                tombstones.as_secs()
            )),
            Some(_) => {}
        }
        (!risks.is_empty()).then(|| {
            format!(
                "{}: a consumer group that starts over (its offsets expired, or a new group) can replay events older than purged tombstones and bring deleted rows back; keep --tombstone-retention at least the topic's retention.ms, or reconcile after such a replay",
                risks.join("; ")
            )
        })
    }
}

/// Reads the configured topic's `retention.ms` and `cleanup.policy`.
pub async fn topic_retention(config: &KafkaConfig) -> Result<TopicRetention> {
    let admin = admin_client(config)?;
    let operation = || format!("describe the configuration of topic {}", config.topic);
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let topic = ResourceSpecifier::Topic(&config.topic);
    let results = admin
        .describe_configs([&topic], &options)
        .await
        .map_err(|source| Error::Operation {
            operation: operation(),
            source,
        })?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| Error::Malformed(format!("{}: no answer", operation())))?
        .map_err(|code| Error::Operation {
            operation: operation(),
            source: rdkafka::error::KafkaError::AdminOp(code),
        })?;
    let entries = resource.entry_map();
    let value = |name: &str| entries.get(name).and_then(|entry| entry.value.clone());
    let retention = match value("retention.ms") {
        Some(text) => {
            let millis: i64 = text.parse().map_err(|_| {
                Error::Malformed(format!(
                    "retention.ms of topic {} is {text:?}",
                    config.topic
                ))
            })?;
            u64::try_from(millis).ok().map(Duration::from_millis)
        }
        None => None,
    };
    let compacted = value("cleanup.policy").is_some_and(|policy| policy.contains("compact"));
    Ok(TopicRetention {
        retention,
        compacted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[test]
    fn a_topic_that_drops_events_before_their_tombstones_go_is_no_risk() {
        let kept = TopicRetention {
            retention: Some(WEEK),
            compacted: false,
        };
        assert_eq!(kept.replay_risk(WEEK), None);
        assert_eq!(kept.replay_risk(2 * WEEK), None);
    }

    #[test]
    fn longer_retention_for_ever_and_compaction_are_named() {
        let longer = TopicRetention {
            retention: Some(2 * WEEK),
            compacted: false,
        };
        assert!(
            longer
                .replay_risk(WEEK)
                .is_some_and(|risk| risk.contains("longer"))
        );
        let for_ever = TopicRetention {
            retention: None,
            compacted: true,
        };
        let risk = for_ever.replay_risk(WEEK).expect("a risk");
        assert!(
            risk.contains("compacted") && risk.contains("for ever"),
            "{risk}"
        );
    }
}
