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

/// Prefix of the variables that set librdkafka properties:
/// `RECON_KAFKA_PROPERTY_SASL_PASSWORD` sets `sasl.password`.
pub const PROPERTY_VARIABLE_PREFIX: &str = "RECON_KAFKA_PROPERTY_";

/// librdkafka properties from a Java-style properties text: `key=value`
/// lines (also `key: value`), `#` and `!` comments, blank lines. An error
/// names the line.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut properties = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let separator = line.find(['=', ':']);
        let Some((key, value)) = separator.map(|at| (&line[..at], &line[at + 1..])) else {
            return Err(format!("line {}: expected key=value", index + 1));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("line {}: empty property name", index + 1));
        }
        properties.push((key.to_owned(), value.trim().to_owned()));
    }
    Ok(properties)
}

/// librdkafka properties from `RECON_KAFKA_PROPERTY_<NAME>` variables among
/// `variables`: the name lowercased, `_` read as `.`.
pub fn properties_from_variables(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> = variables
        .into_iter()
        .filter_map(|(name, value)| {
            let property = name.strip_prefix(PROPERTY_VARIABLE_PREFIX)?;
            (!property.is_empty()).then(|| (property.to_lowercase().replace('_', "."), value))
        })
        .collect();
    properties.sort();
    properties
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
    fn a_properties_file_is_read_line_by_line() {
        let text = "# TLS\nsecurity.protocol=SSL\n\n! old style comment\nssl.ca.location = /etc/ca.pem\nsasl.password: p=w\n";
        assert_eq!(
            parse_properties(text).expect("parses"),
            vec![
                ("security.protocol".to_owned(), "SSL".to_owned()),
                ("ssl.ca.location".to_owned(), "/etc/ca.pem".to_owned()),
                ("sasl.password".to_owned(), "p=w".to_owned()),
            ]
        );
        assert_eq!(
            parse_properties("a=1\nnot a property\n").expect_err("bad line"),
            "line 2: expected key=value"
        );
    }

    #[test]
    fn property_variables_map_to_dotted_names() {
        let variables = [
            ("RECON_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
            ("RECON_KAFKA_PROPERTY_SASL_PASSWORD", "s3cret"),
            ("RECON_KAFKA_TOPIC", "not a property"),
            ("PATH", "/bin"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        assert_eq!(
            properties_from_variables(variables),
            vec![
                ("sasl.password".to_owned(), "s3cret".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
            ]
        );
    }

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
