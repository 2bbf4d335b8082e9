//! A single ZooKeeper server of a test's own (Debian's `zookeeperd`
//! classes, started as `QuorumPeerMain` in standalone mode) on a free
//! loopback port, with its data in a temporary directory; stopped when
//! dropped, and restartable on the same data and port. `scripts/test.sh`
//! starts the shared one the same way (`RECON_TEST_ZOOKEEPER`).

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Environment variable naming the shared test server (`host:port`).
pub const ZOOKEEPER_VAR: &str = "RECON_TEST_ZOOKEEPER";

/// The Java class path of Debian's ZooKeeper package.
pub const CLASS_PATH: &str = "/usr/share/java/*:/usr/share/zookeeper/*:/etc/zookeeper/conf";

/// The shared test server's address, or an error saying how to get one.
pub fn shared_server() -> anyhow::Result<String> {
    match std::env::var(ZOOKEEPER_VAR) {
        Ok(servers) if !servers.trim().is_empty() => Ok(servers),
        _ => bail!(
            "{ZOOKEEPER_VAR} is not set: run the tests through scripts/test.sh, which installs \
             and starts ZooKeeper, or start one and export {ZOOKEEPER_VAR}=127.0.0.1:PORT"
        ),
    }
}

/// A running private ZooKeeper; killed when dropped.
pub struct PrivateZooKeeper {
    child: Option<Child>,
    port: u16,
    directory: tempfile::TempDir,
}

impl PrivateZooKeeper {
    /// Starts a server on a free loopback port and waits until it answers
    /// `imok`.
    pub async fn start() -> anyhow::Result<Self> {
        let directory = tempfile::tempdir().context("create ZooKeeper directory")?;
        let port = crate::free_port()?;
        write_config(directory.path(), port)?;
        let mut server = Self {
            child: None,
            port,
            directory,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// `127.0.0.1:<port>`, a connect string.
    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port's socket address.
    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (its sessions are kept in its data and expire on
    /// their own once it runs again).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill ZooKeeper")?;
        }
        Ok(())
    }

    /// Starts the server again on the same data and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log_path = self.directory.path().join("zookeeper.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .context("open ZooKeeper log")?;
        let child = Command::new("java")
            .arg("-cp")
            .arg(CLASS_PATH)
            .arg(format!(
                "-Dzookeeper.log.dir={}",
                self.directory.path().display()
            ))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.directory.path().join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone log handle")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context(
                "start ZooKeeper (installed by scripts/test.sh: apt-get install zookeeperd)",
            )?;
        self.child = Some(child);
        let timeout = Duration::from_secs(30);
        if !wait_until_ok(&self.servers(), timeout).await {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "ZooKeeper on {} did not answer imok within {timeout:?}; log:\n{log}",
                self.servers()
            );
        }
        Ok(())
    }
}

/// A standalone server's configuration: short ticks (a session timeout
/// of 1–60 s is allowed), no admin server, `ruok` allowed.
fn write_config(directory: &Path, port: u16) -> anyhow::Result<PathBuf> {
    let data = directory.join("data");
    std::fs::create_dir_all(&data).context("create ZooKeeper data directory")?;
    let config = format!(
        "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
         admin.enableServer=false\n4lw.commands.whitelist=ruok,stat\nmaxSessionTimeout=60000\n",
        data.display()
    );
    let path = directory.join("zoo.cfg");
    std::fs::write(&path, config).context("write zoo.cfg")?;
    Ok(path)
}

/// Whether the server at `servers` answers `ruok` with `imok`.
pub async fn answers_imok(servers: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(servers).await else {
        return false;
    };
    if stream.write_all(b"ruok").await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer));
    matches!(read.await, Ok(Ok(_))) && answer == b"imok"
}

/// Waits until `servers` answers `imok`; `false` after `timeout`.
pub async fn wait_until_ok(servers: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if answers_imok(servers).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

impl Drop for PrivateZooKeeper {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop sends SIGKILL too; start it now.
            let _ = child.start_kill();
        }
    }
}
