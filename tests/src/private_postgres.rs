//! A private PostgreSQL cluster for one test: `initdb` in a temporary
//! directory, started on a free loopback port, so that a test may restart or
//! stop it without disturbing the shared test server other tests use.
//!
//! Runs the server binaries of the newest installed PostgreSQL
//! (`/usr/lib/postgresql/<version>/bin`) as the `postgres` user through
//! `runuser` (the tests run as root, like `scripts/test.sh`). Dropping the
//! cluster stops it (`-m immediate`) and removes its directory.

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running private PostgreSQL cluster; stopped when dropped.
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Extra `-c` settings (TLS).
    settings: String,
    _directory: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Creates and starts a cluster; returns once it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(|| Self::start_blocking(None))
            .await
            .context("join the cluster start")?
    }

    /// A cluster that accepts TLS connections only, with a server
    /// certificate for `127.0.0.1` signed by `ca`.
    pub async fn start_with_tls(ca: &crate::tls::TestCa) -> anyhow::Result<Self> {
        let server = ca.server("postgres")?;
        tokio::task::spawn_blocking(move || Self::start_blocking(Some(server)))
            .await
            .context("join the cluster start")?
    }

    fn start_blocking(tls: Option<crate::tls::CertifiedFiles>) -> anyhow::Result<Self> {
        let bin = server_bin()?;
        let directory = tempfile::tempdir().context("create the cluster directory")?;
        let data = directory.path().join("pg");
        std::fs::create_dir(&data).context("create the data directory")?;
        for path in [directory.path(), data.as_path()] {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(path)
                .status()
                .context("run chown")?;
            if !status.success() {
                bail!("chown postgres {} failed: {status}", path.display());
            }
        }
        let mut cluster = Self {
            bin,
            data,
            port: crate::free_port()?,
            settings: String::new(),
            _directory: directory,
        };
        cluster.run_as_postgres("initdb", &["-A", "trust", "-U", "postgres", "-D"])?;
        if let Some(files) = tls {
            cluster.require_tls(&files)?;
        }
        cluster.pg_ctl(&["start", "-w"])?;
        Ok(cluster)
    }

    /// Installs the server certificate and refuses connections without TLS.
    fn require_tls(&mut self, files: &crate::tls::CertifiedFiles) -> anyhow::Result<()> {
        let certificate = self.data.join("server.crt");
        let key = self.data.join("server.key");
        std::fs::copy(&files.certificate, &certificate).context("install server.crt")?;
        std::fs::copy(&files.key, &key).context("install server.key")?;
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        for path in [&certificate, &key] {
            let status = Command::new("chown").arg("postgres").arg(path).status()?;
            if !status.success() {
                bail!("chown postgres {} failed: {status}", path.display());
            }
        }
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .context("write pg_hba.conf")?;
        self.settings =
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".to_owned();
        Ok(())
    }

    /// URL of the cluster's `postgres` database (superuser, no password).
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a database and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let admin = Database::connect(&self.server_url())
            .await
            .context("connect to the private cluster")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .context("create a database on the private cluster")?;
        admin.close().await.ok();
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// `pg_ctl restart -m immediate`: every session is cut without a
    /// clean shutdown, as in a crash; returns once the server is back.
    pub async fn restart_immediate(&self) -> anyhow::Result<()> {
        let cluster = self.handle();
        tokio::task::spawn_blocking(move || {
            cluster.pg_ctl(&["restart", "-m", "immediate", "-w", "-t", "180"])
        })
        .await
        .context("join the cluster restart")?
    }

    fn handle(&self) -> ClusterHandle {
        ClusterHandle {
            bin: self.bin.clone(),
            data: self.data.clone(),
            port: self.port,
            settings: self.settings.clone(),
        }
    }

    fn run_as_postgres(&self, program: &str, arguments: &[&str]) -> anyhow::Result<()> {
        self.handle().run_as_postgres(program, arguments)
    }

    fn pg_ctl(&self, arguments: &[&str]) -> anyhow::Result<()> {
        self.handle().pg_ctl(arguments)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }
}

/// What `pg_ctl` needs, movable to a blocking thread.
struct ClusterHandle {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    settings: String,
}

impl ClusterHandle {
    fn pg_ctl(&self, arguments: &[&str]) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c max_connections=300 -c track_commit_timestamp=on {}",
            self.port,
            self.data.display(),
            self.settings
        );
        let log = self.data.join("log");
        let mut all: Vec<&str> = arguments.to_vec();
        all.extend(["-l", path_str(&log)?, "-o", &options, "-D"]);
        self.run_as_postgres("pg_ctl", &all)
    }

    /// Runs `<bin>/<program> <arguments> <data directory>` as `postgres`.
    fn run_as_postgres(&self, program: &str, arguments: &[&str]) -> anyhow::Result<()> {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(arguments)
            .arg(&self.data)
            .output()
            .with_context(|| format!("run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} {arguments:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The `bin` directory of the newest installed PostgreSQL.
fn server_bin() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir("/usr/lib/postgresql").context(
        "no PostgreSQL server installed under /usr/lib/postgresql (scripts/test.sh installs it)",
    )? {
        let entry = entry.context("list /usr/lib/postgresql")?;
        let version: Option<u32> = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok());
        let bin = entry.path().join("bin");
        if let Some(version) = version
            && bin.join("pg_ctl").exists()
        {
            candidates.push((version, bin));
        }
    }
    candidates.sort();
    match candidates.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("no pg_ctl under /usr/lib/postgresql/*/bin"),
    }
}
