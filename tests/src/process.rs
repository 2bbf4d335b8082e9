//! Real `recon` processes for multi-process tests: start, SIGKILL, SIGSTOP,
//! SIGCONT, restart.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// The `recon` binary next to the test executable (`target/<profile>/recon`).
/// `scripts/test.sh` builds it before the tests run.
pub fn recon_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("RECON_TEST_BINARY") {
        return Ok(PathBuf::from(path));
    }
    let test_executable = std::env::current_exe().context("locate the test executable")?;
    // A binary of the workspace (recon-chaos) sits next to it.
    let sibling = test_executable.with_file_name("recon");
    if sibling.is_file() {
        return Ok(sibling);
    }
    // target/<profile>/deps/integration-<hash> → target/<profile>/recon
    let profile_directory = test_executable
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable has no target directory")?;
    let binary = profile_directory.join("recon");
    if !binary.is_file() {
        bail!(
            "{} does not exist: build it first (cargo build -p recon), as scripts/test.sh does",
            binary.display()
        );
    }
    Ok(binary)
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
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            _ => false,
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
    let listen = format!("127.0.0.1:{port}");
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
        &[("RUST_LOG", "info")],
        logs.join("monolith.log"),
    )
}

/// The value of an unlabelled counter in Prometheus text (`name value`),
/// 0 while it is not exported yet.
pub fn metric_value(metrics_text: &str, name: &str) -> anyhow::Result<u64> {
    for line in metrics_text.lines() {
        if let Some(value) = line
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
        {
            return value
                .trim()
                .parse()
                .with_context(|| format!("parse metric {name}"));
        }
    }
    Ok(0)
}
