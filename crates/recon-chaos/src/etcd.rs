//! A single-member etcd of the harness's own, so that the nemesis can
//! kill, restart and freeze it without disturbing anything else.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A running etcd; killed when dropped.
pub struct EtcdServer {
    child: Option<Child>,
    port: u16,
    peer_port: u16,
    directory: PathBuf,
}

impl EtcdServer {
    /// Starts etcd with its data in `directory` on free loopback ports and
    /// waits until it answers.
    pub async fn start(directory: PathBuf) -> anyhow::Result<Self> {
        let mut server = Self {
            child: None,
            port: recon_tests::free_port()?,
            peer_port: recon_tests::free_port()?,
            directory,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The client port's socket address.
    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL and start again on the same data and ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill etcd")?;
        }
        self.spawn().await
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("etcd is not running")?;
        let signal = if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
        nix::sys::signal::kill(pid, signal).with_context(|| format!("send {signal} to etcd"))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.directory.join("etcd.log"))
            .context("open etcd log")?;
        let child = Command::new("etcd")
            .args(["--name", "chaos"])
            .arg("--data-dir")
            .arg(self.directory.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("chaos={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone log handle")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start etcd (installed by scripts/test.sh: apt-get install etcd-server)")?;
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(30)).await
    }

    async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let http = reqwest::Client::new();
        let url = format!("{}/health", self.endpoint());
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd on {} not healthy after {timeout:?}", self.endpoint());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
