//! [`ZooKeeperBackend`]: connecting, the session, registration under
//! `members/`, and what every port method shares.

use crate::error::{Error, Result, within};
use crate::nodes::{DIRECTORIES, Nodes};
use crate::session::{KeepAlive, Session};
use crate::settings::ZooKeeperSettings;
use crate::zk::{encode, ephemeral, persistent};
use recon_coord::MemberInfo;
use recon_coord::protocol::Protocol;
use recon_core::ports::PortError;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, instrument};
use zookeeper_client as zk;

/// The coordinator on ZooKeeper: the run protocol over [`ZooKeeperBackend`].
pub type ZooKeeperCoordinator = Protocol<ZooKeeperBackend>;

/// Connects a member (see [`ZooKeeperBackend::connect`]).
pub async fn connect(
    settings: ZooKeeperSettings,
    shutdown: CancellationToken,
) -> Result<ZooKeeperCoordinator> {
    Ok(Protocol::new(
        ZooKeeperBackend::connect(settings, shutdown).await?,
    ))
}

/// Connects a member whose background tasks run on `tasks` (see
/// [`ZooKeeperBackend::connect_tracked`]).
pub async fn connect_tracked(
    settings: ZooKeeperSettings,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<ZooKeeperCoordinator> {
    Ok(Protocol::new(
        ZooKeeperBackend::connect_tracked(settings, shutdown, tasks).await?,
    ))
}

/// One member's handle on the service's coordination state in ZooKeeper.
///
/// Cheap to clone. When the `shutdown` token given to
/// [`connect`](Self::connect) is cancelled, or the last clone is dropped,
/// the session ends: [`session_lost`](recon_coord::Coordinator::session_lost)
/// is cancelled and the session closed, so the member's ephemeral nodes
/// vanish at once. A lost session is final: connect again to rejoin.
#[derive(Clone)]
pub struct ZooKeeperBackend {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ZooKeeperBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ZooKeeperBackend")
            .field("member", &self.shared.info.id)
            .field("prefix", &self.shared.nodes.root())
            .field("session", &format_args!("{:#x}", self.shared.session.id))
            .field("session_lost", &self.shared.session.lost.is_cancelled())
            .finish()
    }
}

/// The leadership this member holds (or held last).
#[derive(Debug, Clone)]
pub(crate) struct Lead {
    /// The creation zxid of its election node.
    pub(crate) epoch: u64,
    /// Its election node, which every leader-guarded write checks.
    pub(crate) path: String,
    /// The leadership's `lost` token.
    pub(crate) lost: CancellationToken,
}

pub(crate) struct Shared {
    pub(crate) session: Arc<Session>,
    pub(crate) nodes: Nodes,
    pub(crate) info: MemberInfo,
    /// The leadership this member holds, if any.
    pub(crate) leading: Mutex<Option<Lead>>,
    /// Where the session's background tasks run.
    pub(crate) tasks: TaskTracker,
    /// Campaigns and orphan-endings in progress: while there is one, this
    /// session's candidate node is in use.
    pub(crate) standing: AtomicUsize,
    _stop_on_drop: DropGuard,
}

impl ZooKeeperBackend {
    /// Connects, opens this member's session, keeps it confirmed on a timer
    /// and registers the member as the ephemeral node
    /// `<prefix>/members/<id>`, creating the prefix's nodes if missing.
    ///
    /// Fails if a setting is invalid or ZooKeeper does not answer in time;
    /// the session is closed again if registering fails.
    pub async fn connect(settings: ZooKeeperSettings, shutdown: CancellationToken) -> Result<Self> {
        Self::connect_tracked(settings, shutdown, TaskTracker::new()).await
    }

    /// Like [`connect`](Self::connect), spawning the session's background
    /// tasks (the keep-alive, which closes the session when it ends, and
    /// leadership watches) on `tasks`, so that a caller shutting down can
    /// wait for them.
    pub async fn connect_tracked(
        settings: ZooKeeperSettings,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self> {
        Self::open(settings, shutdown, tasks, true).await
    }

    /// A session that registers no member: for a tool that is not one
    /// (`recon reconcile --cluster`, `recon abort`).
    pub async fn connect_tool(
        settings: ZooKeeperSettings,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self> {
        Self::open(settings, shutdown, tasks, false).await
    }

    #[instrument(name = "coord.connect", skip_all, fields(member = %settings.member.id, prefix = %settings.prefix))]
    async fn open(
        settings: ZooKeeperSettings,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        register: bool,
    ) -> Result<Self> {
        settings.validate()?;
        let request_timeout = settings.request_timeout();
        let connector = zk::Client::connector().with_session_timeout(settings.session_timeout);
        let connected_at = Instant::now();
        let client = within(
            request_timeout,
            "connect",
            connector.connect(&settings.servers),
        )
        .await?;
        let nodes = Nodes::new(&settings.prefix);
        let stop = shutdown.child_token();
        let lost = stop.child_token();
        let state = client.state_watcher();
        let session = Arc::new(Session::new(
            client.clone(),
            lost,
            request_timeout,
            settings.member.id.clone(),
            nodes.root().to_owned(),
        ));
        let prepared = prepare(
            &client,
            &nodes,
            register.then_some(&settings.member),
            session.id,
            request_timeout,
        )
        .await;
        drop(client);
        if let Err(error) = prepared {
            session.end();
            return Err(error);
        }
        let keep_alive = KeepAlive {
            session: session.clone(),
            state,
            renewed_at: connected_at,
        };
        tasks.spawn(keep_alive.run());
        info!(
            session = %format_args!("{:#x}", session.id),
            timeout_ms = session.timeout.as_millis() as u64,
            "member registered"
        );
        let shared = Shared {
            session,
            nodes,
            info: settings.member,
            leading: Mutex::new(None),
            tasks,
            standing: AtomicUsize::new(0),
            _stop_on_drop: stop.drop_guard(),
        };
        let shared = Arc::new(shared);
        shared
            .tasks
            .spawn(sweep_until_session_ends(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    /// The id of this member's session (the owner of its ephemeral nodes).
    pub fn session_id(&self) -> i64 {
        self.shared.session.id
    }

    /// The session's id and password while it lives: whoever holds them
    /// can end the session from outside (tests do, to kill a member the
    /// way an expiry does). Never logged (its `Debug` leaves the password
    /// out).
    pub fn session_info(&self) -> Option<zk::SessionInfo> {
        self.shared.session.info()
    }

    /// The negotiated session timeout.
    pub fn session_timeout(&self) -> Duration {
        self.shared.session.timeout
    }

    /// The service's node, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        self.shared.nodes.root()
    }

    pub(crate) fn session(&self) -> &Session {
        &self.shared.session
    }

    pub(crate) fn nodes(&self) -> &Nodes {
        &self.shared.nodes
    }

    pub(crate) fn member(&self) -> &str {
        &self.shared.info.id
    }

    pub(crate) fn leading(&self) -> MutexGuard<'_, Option<Lead>> {
        self.shared
            .leading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails with `SessionLost` once the session is lost.
    pub(crate) fn alive(&self) -> Result<zk::Client, PortError> {
        self.session().alive()
    }
}

/// Creates the prefix's nodes and registers the member, if given.
async fn prepare(
    client: &zk::Client,
    nodes: &Nodes,
    member: Option<&MemberInfo>,
    session_id: i64,
    request_timeout: Duration,
) -> Result<()> {
    for directory in DIRECTORIES {
        let path = nodes.directory(directory);
        within(
            request_timeout,
            "create the prefix's nodes",
            client.mkdir(&path, &persistent()),
        )
        .await?;
    }
    let Some(member) = member else {
        return Ok(());
    };
    let value = encode(member).map_err(|error| Error::Unexpected {
        operation: "register member",
        reason: error.message,
    })?;
    create_own_ephemeral(
        client,
        &nodes.member(&member.id),
        &value,
        session_id,
        request_timeout,
    )
    .await
}

/// Creates an ephemeral node of this session; a node left at the same path
/// by another session (this member's id, restarted before its old session
/// expired) is replaced.
async fn create_own_ephemeral(
    client: &zk::Client,
    path: &str,
    value: &[u8],
    session_id: i64,
    request_timeout: Duration,
) -> Result<()> {
    for _attempt in 0..5 {
        let created = client.create(path, value, &ephemeral());
        match tokio::time::timeout(request_timeout, created).await {
            Err(_elapsed) => return Err(Error::Timeout("register member")),
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(zk::Error::NodeExists)) => {}
            Ok(Err(source)) => {
                return Err(Error::ZooKeeper {
                    operation: "register member",
                    source,
                });
            }
        }
        let stat = within(request_timeout, "read member node", client.check_stat(path)).await?;
        match stat {
            Some(stat) if stat.ephemeral_owner == session_id => return Ok(()),
            Some(stat) => {
                let deleted = client.delete(path, Some(stat.version));
                match tokio::time::timeout(request_timeout, deleted).await {
                    Ok(Ok(())) | Ok(Err(zk::Error::NoNode | zk::Error::BadVersion)) => {}
                    Ok(Err(source)) => {
                        return Err(Error::ZooKeeper {
                            operation: "replace member node",
                            source,
                        });
                    }
                    Err(_elapsed) => return Err(Error::Timeout("replace member node")),
                }
            }
            None => {}
        }
    }
    Err(Error::Unexpected {
        operation: "register member",
        reason: "the member node kept changing".to_owned(),
    })
}

/// How often a member looks for stale candidate nodes of its session.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps stale candidate nodes of the member's session (see
/// [`ZooKeeperBackend::sweep_stale_candidates`]) until the session ends
/// or the member is dropped.
async fn sweep_until_session_ends(shared: Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let lost = shared.session.lost.clone();
        let member = ZooKeeperBackend { shared };
        if let Err(error) = member.sweep_stale_candidates().await {
            debug!(error = %error, "looking for stale candidate nodes failed");
        }
        drop(member);
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}
