//! A real Kafka-protocol broker (tansu) started by the test itself on a
//! loopback port, in memory or on durable SQLite storage so that a test can
//! restart it and find its messages and committed offsets again.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Where the broker keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Lost when the process ends. tansu 0.6's memory storage loses
    /// records when a fetch starts inside a stored batch (a consumer that
    /// rebalances or seeks back mid-batch skips them; see SERVICES.md), so
    /// tests that consume use [`Storage::Durable`].
    Memory,
    /// A SQLite file in the broker's directory; survives restarts.
    Durable,
}

/// A running tansu broker; killed when dropped.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    /// The port clients are told to use (a TLS terminator's, in front).
    advertised_port: u16,
    storage: Storage,
    directory: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it accepts
    /// connections.
    pub async fn start(storage: Storage) -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        Self::start_advertising(storage, port, port).await
    }

    /// Starts a broker on `port` that tells clients to connect to
    /// `advertised_port` (where something forwards to it).
    async fn start_advertising(
        storage: Storage,
        port: u16,
        advertised_port: u16,
    ) -> anyhow::Result<Self> {
        let directory = tempfile::tempdir().context("create broker directory")?;
        let mut broker = Self {
            child: None,
            port,
            advertised_port,
            storage,
            directory,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// A broker reachable over TLS only through a terminator with a server
    /// certificate from `ca` (tansu 0.6 takes `--cert` but never serves
    /// TLS), which it advertises to clients. Returns the broker and the
    /// terminator; `bootstrap_servers` of the terminator is the address.
    pub async fn start_behind_tls(
        storage: Storage,
        ca: &crate::tls::TestCa,
    ) -> anyhow::Result<(Self, crate::tls::TlsTerminator)> {
        let port = crate::free_port()?;
        let tls_port = crate::free_port()?;
        let broker = Self::start_advertising(storage, port, tls_port).await?;
        let terminator = crate::tls::TlsTerminator::start(tls_port, port, ca).await?;
        Ok((broker, terminator))
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker with SIGKILL and waits for it to exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill broker")?;
        }
        Ok(())
    }

    /// Kills the broker and starts it again on the same port and storage.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised_port);
        let engine = match self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Durable => "sqlite://tansu.db".to_owned(),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.directory.path().join("broker.log"))
            .context("open broker log")?;
        let child = Command::new(tansu_binary()?)
            .arg("broker")
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &engine])
            .current_dir(self.directory.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone log handle")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start tansu broker")?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20))
            .await
            .with_context(|| {
                let log = std::fs::read_to_string(self.directory.path().join("broker.log"))
                    .unwrap_or_default();
                format!("tansu did not start listening; its log:\n{log}")
            })
    }
}

/// The tansu executable: `$RECON_TEST_TANSU`, else `tansu` on PATH, else
/// cargo's bin directory.
fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("RECON_TEST_TANSU") {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|directory| directory.join("tansu"))
        .find(|candidate| candidate.is_file())
    {
        return Ok(path);
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let candidate = home.join("bin/tansu");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "tansu not found: run scripts/test.sh, which installs it (cargo install tansu --version 0.6.0 --features dynostore,libsql)"
    )
}

/// `session.timeout.ms` of recon's consumers (set in recon-kafka's
/// consumer).
pub const CONSUMER_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns once a consumer-group member silent (killed or frozen) since
/// `silent_since` is surely expired for the broker's next group request.
///
/// A bound on the clock, not a guessed settling time: tansu 0.6 expires a
/// member lazily, in the first join, sync, heartbeat or leave request that
/// finds it silent for longer than its session timeout — with no surviving
/// member nothing asks, so there is no broker state to observe before a
/// replacement joins. The member's last contact was no later than
/// `silent_since`, so a join from `silent_since` + session timeout + 2 s of
/// margin on finds it expired, however loaded the machine (load only makes
/// the join later). Joining earlier is what leaves a partition without a
/// consumer (`docs/broker-notes.md`).
pub async fn wait_until_group_member_expired(silent_since: Instant) {
    let expired_at = silent_since + CONSUMER_SESSION_TIMEOUT + Duration::from_secs(2);
    tokio::time::sleep_until(expired_at.into()).await;
}

/// Waits until something accepts TCP connections on a loopback port.
pub async fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
