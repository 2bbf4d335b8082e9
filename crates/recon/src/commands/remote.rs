//! What a tool that is not a member asks of a cluster's coordinator —
//! request a run, follow it, ask for an abort — on etcd, ZooKeeper or
//! PostgreSQL, whichever the command line names.

use crate::cli::CoordinationArgs;
use anyhow::Context;
use recon_coord::protocol::Protocol;
use recon_coord::remote;
use recon_coord_postgres::PostgresSettings;
use recon_core::ports::PortError;
use recon_engine::cluster::{
    AbortRequest, Coordinator, MemberInfo, MemberRole, Requested, RunProgress, RunRequest,
    now_unix_ms,
};
use recon_etcd::{EtcdBackend, EtcdSettings};
use recon_zookeeper::{ZooKeeperBackend, ZooKeeperSettings};
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

    /// Runs `call` with the run protocol on a session of its own under
    /// `prefix` (registered as no member), then ends the session.
    async fn with_session<T>(
        &self,
        prefix: &str,
        call: impl AsyncFnOnce(&dyn Coordinator) -> Result<T, PortError>,
    ) -> anyhow::Result<T> {
        let member = MemberInfo {
            id: format!("recon-tool-{}", std::process::id()),
            admin_url: None,
            joined_unix_ms: now_unix_ms(),
            role: MemberRole::PauseOnly,
        };
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let session = (shutdown.clone(), tasks.clone());
        let coordinator: Box<dyn Coordinator> = match self {
            Self::Etcd {
                endpoints,
                security,
            } => {
                let mut settings = EtcdSettings::new(endpoints.clone(), prefix, member);
                settings.security = security.clone();
                let backend = EtcdBackend::connect_tool(settings, session.0, session.1).await?;
                Box::new(Protocol::new(backend))
            }
            Self::ZooKeeper(servers) => {
                let settings = ZooKeeperSettings::new(servers.clone(), prefix, member);
                let backend =
                    ZooKeeperBackend::connect_tool(settings, session.0, session.1).await?;
                Box::new(Protocol::new(backend))
            }
            Self::Postgres(url) => {
                let settings = PostgresSettings::new(url.clone(), prefix, member);
                Box::new(recon_coord_postgres::connect_tool(settings, session.0, session.1).await?)
            }
        };
        let answer = call(coordinator.as_ref()).await;
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
        self.with_session(prefix, async |coordinator| {
            remote::request_run(coordinator, request).await
        })
        .await
        .with_context(|| format!("write the run request to {}", self.name()))
    }

    /// Where the run `run_id` under `prefix` stands.
    pub async fn run_progress(&self, prefix: &str, run_id: &str) -> anyhow::Result<RunProgress> {
        self.with_session(prefix, async |coordinator| {
            remote::run_progress(coordinator, run_id).await
        })
        .await
        .with_context(|| format!("read run {run_id} from {}", self.name()))
    }

    /// Asks the leader under `prefix` to abort the run in progress
    /// (`run_id`, or whichever is current); the run's id.
    pub async fn request_abort(
        &self,
        prefix: &str,
        run_id: Option<&str>,
        abort: &AbortRequest,
    ) -> anyhow::Result<String> {
        self.with_session(prefix, async |coordinator| {
            remote::request_abort(coordinator, run_id, abort).await
        })
        .await
        .with_context(|| format!("ask {} for the abort", self.name()))
    }
}
