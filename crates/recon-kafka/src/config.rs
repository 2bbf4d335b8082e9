//! Kafka connection settings shared by the producer, the consumer and admin.

use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// The default change topic.
pub const DEFAULT_TOPIC: &str = "recon.changes";

/// Where the change events live and how to reach the brokers.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// The change topic.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Extra librdkafka properties (e.g. `security.protocol`,
    /// `sasl.username`, `sasl.password`). Their values are never logged.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_topic() -> String {
    DEFAULT_TOPIC.to_owned()
}

impl KafkaConfig {
    /// Settings for `bootstrap_servers` and the default topic.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: default_topic(),
            properties: BTreeMap::new(),
        }
    }

    /// Uses another topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// A librdkafka client configuration with the brokers and the extra
    /// properties; callers add their role's settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

impl fmt::Debug for KafkaConfig {
    /// Shows property names only: values may be credentials.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_property_values() {
        let mut config = KafkaConfig::new("b:9092");
        config
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        let shown = format!("{config:?}");
        assert!(shown.contains("sasl.password"));
        assert!(!shown.contains("hunter2"));
    }
}
