//! A real Prometheus (the Debian package's binary) scraping recon replicas,
//! with the repository's rules loaded, queried through its HTTP API.

use crate::broker::wait_for_port;
use crate::free_port;
use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// One Prometheus server for a test; killed when dropped.
pub struct Prometheus {
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    directory: tempfile::TempDir,
    _child: Child,
    client: reqwest::Client,
}

/// The `prometheus` executable: `$RECON_TEST_PROMETHEUS`, else on PATH.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    if name == "prometheus"
        && let Ok(path) = std::env::var("RECON_TEST_PROMETHEUS")
    {
        return Ok(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("{name} not found: run scripts/test.sh, which installs the Debian package prometheus")
        })
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port` admin addresses,
    /// job `recon`) every second and evaluating `rules` every second;
    /// returns once it answers.
    pub async fn start(targets: &[String], rules: &Path) -> anyhow::Result<Self> {
        let directory = tempfile::tempdir().context("create Prometheus directory")?;
        let rules = rules
            .canonicalize()
            .with_context(|| format!("rules file {}", rules.display()))?;
        let targets: Vec<String> = targets
            .iter()
            .map(|target| format!("\"{target}\""))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"{}\"\n\
             scrape_configs:\n  - job_name: recon\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        let config_path = directory.path().join("prometheus.yml");
        std::fs::write(&config_path, config).context("write the Prometheus config")?;
        let port = free_port()?;
        let log = std::fs::File::create(directory.path().join("prometheus.log"))
            .context("create the Prometheus log")?;
        let child = Command::new(binary("prometheus")?)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                directory.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone log handle")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start prometheus")?;
        let prometheus = Self {
            port,
            directory,
            _child: child,
            client: reqwest::Client::new(),
        };
        wait_for_port(port, Duration::from_secs(30))
            .await
            .with_context(|| prometheus.log())?;
        Ok(prometheus)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/{path}", self.port);
        let answer: Value = self
            .client
            .get(&url)
            .query(query)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("decode the answer of {url}"))?;
        if answer["status"] != "success" {
            bail!("{path} {query:?} failed: {answer}");
        }
        Ok(answer["data"].clone())
    }

    /// Evaluates `expression` now: its result vector (an error names a
    /// query Prometheus refuses).
    pub async fn query(&self, expression: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.get("query", &[("query", expression)]).await?;
        match &data["result"] {
            Value::Array(samples) => Ok(samples.clone()),
            // A scalar or string result is one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// The single value of `expression` (0 when it returns nothing).
    pub async fn value(&self, expression: &str) -> anyhow::Result<f64> {
        let samples = self.query(expression).await?;
        ensure!(
            samples.len() <= 1,
            "{expression} returned {} series",
            samples.len()
        );
        samples.first().map_or(Ok(0.0), sample_value)
    }

    /// Targets that are up.
    pub async fn targets_up(&self) -> anyhow::Result<usize> {
        let data = self.get("targets", &[]).await?;
        let targets = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(targets
            .iter()
            .filter(|target| target["health"] == "up")
            .count())
    }

    /// Every loaded rule: (group, name, expression, health, last error).
    pub async fn rules(&self) -> anyhow::Result<Vec<LoadedRule>> {
        let data = self.get("rules", &[]).await?;
        let mut rules = Vec::new();
        for group in data["groups"].as_array().cloned().unwrap_or_default() {
            for rule in group["rules"].as_array().cloned().unwrap_or_default() {
                rules.push(LoadedRule {
                    name: rule["name"].as_str().unwrap_or_default().to_owned(),
                    expression: rule["query"].as_str().unwrap_or_default().to_owned(),
                    health: rule["health"].as_str().unwrap_or_default().to_owned(),
                    last_error: rule["lastError"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(rules)
    }
}

/// A rule as Prometheus loaded it.
#[derive(Debug, Clone)]
pub struct LoadedRule {
    /// The alert's or recording rule's name.
    pub name: String,
    /// Its PromQL.
    pub expression: String,
    /// `ok`, `err` or `unknown` (not evaluated yet).
    pub health: String,
    /// The last evaluation's error, if any.
    pub last_error: String,
}

/// The number in one sample of a query result.
pub fn sample_value(sample: &Value) -> anyhow::Result<f64> {
    sample["value"][1]
        .as_str()
        .with_context(|| format!("no value in {sample}"))?
        .parse()
        .with_context(|| format!("not a number in {sample}"))
}

/// The metric names (`recon_…`, `recon:…`) a PromQL expression reads.
pub fn recon_metric_names(expression: &str) -> Vec<String> {
    let is_name_byte = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    let bytes = expression.as_bytes();
    let mut names: Vec<String> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let boundary = at == 0 || !is_name_byte(bytes[at - 1]);
        if !(boundary && bytes[at..].starts_with(b"recon")) {
            at += 1;
            continue;
        }
        let start = at;
        while at < bytes.len() && (is_name_byte(bytes[at]) || bytes[at] == b':') {
            at += 1;
        }
        let name = &expression[start..at];
        let metric = name.starts_with("recon_") || name.starts_with("recon:");
        if metric && !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_found_but_not_labels_or_functions() {
        let names = recon_metric_names(
            "sum by (kind) (increase(recon_reconcile_rows_missing_total{kind=\"user\"}[1h])) \
             / recon:group_lag:sum and on(instance) up{job=\"recon\"}",
        );
        assert_eq!(
            names,
            vec!["recon_reconcile_rows_missing_total", "recon:group_lag:sum"]
        );
    }
}
