//! Real `recon` processes for multi-process tests: start, SIGKILL, SIGSTOP,
//! SIGCONT, restart.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, Command};

pub use crate::recon_build::recon_binary;

/// Starts `recon serve` on the store at `database_url` with `brokers`, its
/// admin API on `admin_listen`, `extra` arguments and `environment`, its
/// log as `<name>.log` in `logs`.
pub fn start_serve(
    name: &str,
    database_url: &str,
    brokers: &str,
    admin_listen: &str,
    extra: &[&str],
    environment: &[(&str, &str)],
    logs: &std::path::Path,
) -> anyhow::Result<ReconProcess> {
    let mut arguments = vec![
        "serve",
        "--database-url",
        database_url,
        "--kafka-bootstrap-servers",
        brokers,
        "--admin-listen",
        admin_listen,
    ];
    arguments.extend_from_slice(extra);
    ReconProcess::start(
        name,
        &arguments,
        environment,
        logs.join(format!("{name}.log")),
    )
}

/// A replica (`recon serve`) of its own for tests of one process: a fresh,
/// migrated SQLite database, brokers that never answer (its admin API and pause gate
/// work without them) and its admin port on a free port.
pub struct LoneReplica {
    /// The process.
    pub process: ReconProcess,
    /// Its admin port.
    pub port: u16,
    /// Its database (dropped with it).
    pub database: crate::TestDatabase,
}

impl LoneReplica {
    /// Starts `recon serve` on a migrated store, listening on `listen_ip`,
    /// with `extra` arguments and environment, its log in `logs`; returns
    /// once the process is started (see [`LoneReplica::serving`]).
    pub async fn spawn(
        name: &str,
        listen_ip: &str,
        extra: &[&str],
        environment: &[(&str, &str)],
        logs: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let database = crate::TestDatabase::replica_store(crate::Backend::Sqlite).await?;
        let brokers = format!("127.0.0.1:{}", crate::free_port()?);
        let port = crate::free_port()?;
        let listen = format!("{listen_ip}:{port}");
        let process = start_serve(
            name,
            &database.url,
            &brokers,
            &listen,
            extra,
            environment,
            logs,
        )?;
        Ok(Self {
            process,
            port,
            database,
        })
    }

    /// Waits until its admin port answers.
    pub async fn serving(self) -> anyhow::Result<Self> {
        crate::broker::wait_for_port(self.port, std::time::Duration::from_secs(30))
            .await
            .with_context(|| self.process.log())?;
        Ok(self)
    }
}

/// A child `recon` process; killed when dropped.
pub struct ReconProcess {
    /// A name for messages (e.g. `"replica-2"`).
    pub name: String,
    arguments: Vec<String>,
    environment: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
}

impl ReconProcess {
    /// Starts `recon <arguments>` with extra environment; its output goes to
    /// `log_path` (appended across restarts).
    pub fn start(
        name: &str,
        arguments: &[&str],
        environment: &[(&str, &str)],
        log_path: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut process = Self {
            name: name.to_owned(),
            arguments: arguments
                .iter()
                .map(|argument| argument.to_string())
                .collect(),
            environment: environment
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            log_path,
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open log of {}", self.name))?;
        let child = Command::new(recon_binary()?)
            .args(&self.arguments)
            .envs(
                self.environment
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone log handle")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process has exited on its own (reaps it); `false` while
    /// it runs or after [`Self::kill`].
    pub fn exited(&mut self) -> bool {
        self.exit_code().is_some()
    }

    /// `Some(code)` once the process has exited on its own (reaps it; the
    /// inner `None` for a death by signal); `None` while it runs or after
    /// [`Self::kill`].
    pub fn exit_code(&mut self) -> Option<Option<i32>> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => {
                self.child = None;
                Some(status.code())
            }
            _ => None,
        }
    }

    /// Waits until the process exits on its own and returns its exit code
    /// (`None` for a death by signal); fails with its log after `timeout`.
    pub async fn wait_for_exit(
        &mut self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Option<i32>> {
        let Some(child) = self.child.as_mut() else {
            anyhow::bail!("{} is not running", self.name);
        };
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => {
                self.child = None;
                Ok(status
                    .with_context(|| format!("wait for {}", self.name))?
                    .code())
            }
            Err(_elapsed) => anyhow::bail!(
                "{} did not exit within {} s:\n{}",
                self.name,
                timeout.as_secs(),
                self.log()
            ),
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .with_context(|| format!("kill {}", self.name))?;
        }
        Ok(())
    }

    /// SIGTERM, and wait for a graceful exit; returns the exit code.
    pub async fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
            .await
            .with_context(|| format!("{} did not exit within 30 s of SIGTERM", self.name))??;
        Ok(status.code())
    }

    /// Freezes the process (SIGSTOP).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Thaws a frozen process (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    /// Kills and starts the process again with the same arguments.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn()
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
        nix::sys::signal::kill(pid, signal)
            .with_context(|| format!("send {signal} to {}", self.name))
    }
}

/// Starts `recon monolith` on `127.0.0.1:<port>` with its outbox relay to
/// `topic` (4 partitions); output goes to `<logs>/monolith.log`.
pub fn start_monolith(
    logs: &std::path::Path,
    database_url: &str,
    port: u16,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<ReconProcess> {
    start_monolith_with(logs, database_url, port, brokers, topic, &[])
}

/// [`start_monolith`] with extra environment variables (e.g. its token).
pub fn start_monolith_with(
    logs: &std::path::Path,
    database_url: &str,
    port: u16,
    brokers: &str,
    topic: &str,
    environment: &[(&str, &str)],
) -> anyhow::Result<ReconProcess> {
    let listen = format!("127.0.0.1:{port}");
    let mut variables = vec![("RUST_LOG", "info")];
    variables.extend_from_slice(environment);
    ReconProcess::start(
        "monolith",
        &[
            "monolith",
            "--database-url",
            database_url,
            "--listen",
            &listen,
            "--kafka-bootstrap-servers",
            brokers,
            "--kafka-topic",
            topic,
            "--kafka-partitions",
            "4",
        ],
        &variables,
        logs.join("monolith.log"),
    )
}

/// The value of an unlabelled counter in Prometheus text (`name value`).
///
/// A metric that is not in the text is an error naming it, never a zero:
/// `recon serve` registers its counters at 0 before its admin API listens,
/// so an absent one means a renamed or unregistered metric, which a test
/// must not read as "nothing happened yet".
pub fn metric_value(metrics_text: &str, name: &str) -> anyhow::Result<u64> {
    for line in metrics_text.lines() {
        if let Some(value) = line
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
        {
            return value
                .trim()
                .parse()
                .with_context(|| format!("parse metric {name} from {line:?}"));
        }
    }
    bail!("metric {name} is not exported in /metrics")
}

#[cfg(test)]
mod tests {
    use super::metric_value;
    use anyhow::Context;

    const TEXT: &str = "\
# HELP recon_consumer_events_received Decoded change events handed to the store.
# TYPE recon_consumer_events_received counter
recon_consumer_events_received_total 42
# HELP recon_consumer_lag Consumer lag per partition.
# TYPE recon_consumer_lag gauge
recon_consumer_lag{partition=\"0\"} 7
recon_consumer_lag_max 3
recon_consumer_lag 5
recon_consumer_events_written_total 0
# EOF
";

    #[test]
    fn reads_a_present_counter() -> anyhow::Result<()> {
        assert_eq!(
            metric_value(TEXT, "recon_consumer_events_received_total")?,
            42
        );
        assert_eq!(
            metric_value(TEXT, "recon_consumer_events_written_total")?,
            0
        );
        Ok(())
    }

    #[test]
    fn an_absent_metric_is_an_error_naming_it() -> anyhow::Result<()> {
        let error = metric_value(TEXT, "recon_consumer_events_rejected_total")
            .err()
            .context("expected an error")?;
        assert!(
            error
                .to_string()
                .contains("recon_consumer_events_rejected_total"),
            "{error:#}"
        );
        Ok(())
    }

    #[test]
    fn a_name_is_not_confused_with_longer_names_labels_or_comments() -> anyhow::Result<()> {
        // Only the unlabelled line counts, not `{partition=…}` nor `_max`.
        assert_eq!(metric_value(TEXT, "recon_consumer_lag")?, 5);
        // `…_received` is only in comments and as a prefix of `…_total`.
        assert!(metric_value(TEXT, "recon_consumer_events_received").is_err());
        // A labelled-only family has no unlabelled value.
        let labelled_only = "recon_consumer_lag{partition=\"1\"} 9\n";
        assert!(metric_value(labelled_only, "recon_consumer_lag").is_err());
        Ok(())
    }

    #[test]
    fn an_unparsable_value_is_an_error() -> anyhow::Result<()> {
        let error = metric_value("recon_x_total NaN\n", "recon_x_total")
            .err()
            .context("expected an error")?;
        assert!(format!("{error:#}").contains("recon_x_total"), "{error:#}");
        Ok(())
    }
}
