//! What a tool that is not a member asks of a cluster's coordinator —
//! request a run, follow it, ask for an abort — on etcd, ZooKeeper or
//! PostgreSQL, whichever the command line names.

use crate::cli::CoordinationArgs;
use anyhow::Context;
use recon_coord::remote;
use recon_coord_postgres::PostgresSettings;
use recon_core::ports::PortError;
use recon_engine::cluster::{
    AbortRequest, Coordinator, MemberInfo, MemberRole, Requested, RunProgress, RunRequest,
    now_unix_ms,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cluster's coordinator, as a non-member reaches it.
pub enum Remote {
    /// etcd endpoints and their security.
    Etcd {
        /// The endpoints.
        endpoints: Vec<String>,
        /// TLS and authentication.
        security: recon_etcd::EtcdSecurity,
    },
    /// A ZooKeeper ensemble (`host:port,…`).
    ZooKeeper(String),
    /// A PostgreSQL database's URL.
    Postgres(String),
}

impl Remote {
    /// The coordinator `args` name; an error naming the options if none.
    pub fn of(args: &CoordinationArgs) -> anyhow::Result<Self> {
        if let Some(servers) = &args.zookeeper {
            return Ok(Self::ZooKeeper(servers.clone()));
        }
        if let Some(url) = &args.postgres_coordinator {
            return Ok(Self::Postgres(url.clone()));
        }
        anyhow::ensure!(
            !args.etcd_endpoints.is_empty(),
            "no coordinator: give --etcd-endpoints, --zookeeper or --postgres-coordinator"
        );
        Ok(Self::Etcd {
            endpoints: args.etcd_endpoints.clone(),
            security: args.etcd_security.security()?,
        })
    }

    /// The coordinator's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Etcd { .. } => "etcd",
            Self::ZooKeeper(_) => "ZooKeeper",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// A session on the PostgreSQL coordinator for one tool call: `call`
    /// runs with the protocol, then the session row is deleted.
    async fn on_postgres<T>(
        url: &str,
        prefix: &str,
        call: impl AsyncFnOnce(&dyn Coordinator) -> Result<T, PortError>,
    ) -> anyhow::Result<T> {
        let member = MemberInfo {
            id: format!("recon-tool-{}", std::process::id()),
            admin_url: None,
            joined_unix_ms: now_unix_ms(),
            role: MemberRole::PauseOnly,
        };
        let settings = PostgresSettings::new(url, prefix, member);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let coordinator =
            recon_coord_postgres::connect_tool(settings, shutdown.clone(), tasks.clone()).await?;
        let answer = call(&coordinator).await;
        drop(coordinator);
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        Ok(answer?)
    }

    /// Merges `request` into the pending one under `prefix`.
    pub async fn request_run(
        &self,
        prefix: &str,
        request: &RunRequest,
    ) -> anyhow::Result<Requested> {
        let requested = match self {
            Self::Etcd {
                endpoints,
                security,
            } => recon_etcd::request_run(endpoints, security, prefix, request)
                .await
                .map_err(anyhow::Error::from),
            Self::ZooKeeper(servers) => recon_zookeeper::request_run(servers, prefix, request)
                .await
                .map_err(anyhow::Error::from),
            Self::Postgres(url) => {
                Self::on_postgres(url, prefix, async |coordinator| {
                    remote::request_run(coordinator, request).await
                })
                .await
            }
        };
        requested.with_context(|| format!("write the run request to {}", self.name()))
    }

    /// Where the run `run_id` under `prefix` stands.
    pub async fn run_progress(&self, prefix: &str, run_id: &str) -> anyhow::Result<RunProgress> {
        let progress = match self {
            Self::Etcd {
                endpoints,
                security,
            } => recon_etcd::run_progress(endpoints, security, prefix, run_id)
                .await
                .map_err(anyhow::Error::from),
            Self::ZooKeeper(servers) => recon_zookeeper::run_progress(servers, prefix, run_id)
                .await
                .map_err(anyhow::Error::from),
            Self::Postgres(url) => {
                Self::on_postgres(url, prefix, async |coordinator| {
                    remote::run_progress(coordinator, run_id).await
                })
                .await
            }
        };
        progress.with_context(|| format!("read run {run_id} from {}", self.name()))
    }

    /// Asks the leader under `prefix` to abort the run in progress
    /// (`run_id`, or whichever is current); the run's id.
    pub async fn request_abort(
        &self,
        prefix: &str,
        run_id: Option<&str>,
        abort: &AbortRequest,
    ) -> anyhow::Result<String> {
        let target = match self {
            Self::Etcd {
                endpoints,
                security,
            } => recon_etcd::request_abort(endpoints, security, prefix, run_id, abort)
                .await
                .map_err(anyhow::Error::from),
            Self::ZooKeeper(servers) => {
                recon_zookeeper::request_abort(servers, prefix, run_id, abort)
                    .await
                    .map_err(anyhow::Error::from)
            }
            Self::Postgres(url) => {
                Self::on_postgres(url, prefix, async |coordinator| {
                    remote::request_abort(coordinator, run_id, abort).await
                })
                .await
            }
        };
        target.with_context(|| format!("ask {} for the abort", self.name()))
    }
}
