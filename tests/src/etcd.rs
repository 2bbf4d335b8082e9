//! A single-member etcd of a test's own (the nemesis kills, restarts and
//! freezes it; the TLS tests start it with certificates and client
//! certificate authentication), without disturbing the shared one.

use crate::tls::{CertifiedFiles, TestCa};
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
    tls: Option<ServerTls>,
}

/// The files of an etcd serving TLS and requiring client certificates.
#[derive(Debug, Clone)]
struct ServerTls {
    ca: PathBuf,
    server: CertifiedFiles,
    /// A client certificate for the harness's own `etcdctl` calls.
    client: CertifiedFiles,
}

impl EtcdServer {
    /// Starts etcd with its data in `directory` on free loopback ports and
    /// waits until it answers.
    pub async fn start(directory: PathBuf) -> anyhow::Result<Self> {
        Self::start_with(directory, None).await
    }

    /// Starts etcd serving TLS with a certificate signed by `ca` and
    /// accepting only clients with a certificate `ca` signed
    /// (`--client-cert-auth`).
    pub async fn start_tls(directory: PathBuf, ca: &TestCa) -> anyhow::Result<Self> {
        let tls = ServerTls {
            ca: ca.certificate(),
            server: ca.server("etcd")?,
            client: ca.client("etcd-harness")?,
        };
        Self::start_with(directory, Some(tls)).await
    }

    async fn start_with(directory: PathBuf, tls: Option<ServerTls>) -> anyhow::Result<Self> {
        let mut server = Self {
            child: None,
            port: crate::free_port()?,
            peer_port: crate::free_port()?,
            directory,
            tls,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs `etcdctl` against this server (with the harness's client
    /// certificate under TLS) and returns its output.
    pub async fn etcdctl(&self, arguments: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint());
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client.certificate)
                .arg("--key")
                .arg(&tls.client.key);
        }
        let output =
            command.args(arguments).output().await.context(
                "run etcdctl (installed by scripts/test.sh: apt-get install etcd-client)",
            )?;
        if !output.status.success() {
            bail!(
                "etcdctl {arguments:?} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server.certificate)
                .arg("--key-file")
                .arg(&tls.server.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
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
        loop {
            if self.etcdctl(&["endpoint", "health"]).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd on {} not healthy after {timeout:?}", self.endpoint());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
