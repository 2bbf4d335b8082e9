//! [`EtcdBackend`]: connecting, the lease, registration under
//! `members/`, and what every primitive shares; [`connect`] makes the
//! coordinator.

use crate::error::{Error, Result, session_lost};
use crate::keys::Keys;
use crate::kv::Kv;
use crate::session::KeepAlive;
use crate::settings::EtcdSettings;
use etcd_client::{Client, PutOptions};
use recon_coord::MemberInfo;
use recon_coord::backend::encode;
use recon_coord::protocol::Protocol;
use recon_core::ports::PortError;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{info, instrument};

/// The coordinator on etcd: the run protocol over [`EtcdBackend`].
pub type EtcdCoordinator = Protocol<EtcdBackend>;

/// Connects a member (see [`EtcdBackend::connect`]).
pub async fn connect(
    settings: EtcdSettings,
    shutdown: CancellationToken,
) -> Result<EtcdCoordinator> {
    Ok(Protocol::new(
        EtcdBackend::connect(settings, shutdown).await?,
    ))
}

/// Connects a member whose background tasks run on `tasks` (see
/// [`EtcdBackend::connect_tracked`]).
pub async fn connect_tracked(
    settings: EtcdSettings,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<EtcdCoordinator> {
    Ok(Protocol::new(
        EtcdBackend::connect_tracked(settings, shutdown, tasks).await?,
    ))
}

/// One member's handle on the service's coordination state in etcd.
///
/// Cheap to clone. When the `shutdown` token given to
/// [`connect`](Self::connect) is cancelled, or the last clone is dropped,
/// the session ends: [`session_lost`](recon_coord::Coordinator::session_lost)
/// is cancelled and the lease revoked, so the member's lease-bound keys
/// vanish at once. A lost session is final: connect again to rejoin.
#[derive(Clone)]
pub struct EtcdBackend {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EtcdBackend")
            .field("member", &self.shared.info.id)
            .field("prefix", &self.shared.keys.root())
            .field("lease_id", &self.shared.lease_id)
            .field("session_lost", &self.shared.session.is_cancelled())
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) kv: Kv,
    pub(crate) keys: Keys,
    pub(crate) info: MemberInfo,
    pub(crate) lease_id: i64,
    pub(crate) session: CancellationToken,
    /// The `lost` token of the leadership this member holds, if any.
    pub(crate) leading: Mutex<Option<CancellationToken>>,
    /// Where the session's background tasks run.
    pub(crate) tasks: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl EtcdBackend {
    /// Connects, grants this member's lease, keeps it alive on a timer and
    /// registers the member under `<prefix>/members/<id>`.
    ///
    /// Fails if a setting is invalid or etcd does not answer in time; the
    /// lease is revoked again if registering fails.
    pub async fn connect(settings: EtcdSettings, shutdown: CancellationToken) -> Result<Self> {
        Self::connect_tracked(settings, shutdown, TaskTracker::new()).await
    }

    /// Like [`connect`](Self::connect), spawning the session's background
    /// tasks (the keep-alive, which revokes the lease when the session
    /// ends, and leadership watches) on `tasks`, so that a caller shutting
    /// down can wait for them: once they are done the lease is revoked.
    pub async fn connect_tracked(
        settings: EtcdSettings,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self> {
        Self::open(settings, shutdown, tasks, true).await
    }

    /// A session that registers no member: for a tool that is not one
    /// (`recon reconcile --cluster`, `recon abort`).
    pub async fn connect_tool(
        settings: EtcdSettings,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self> {
        Self::open(settings, shutdown, tasks, false).await
    }

    #[instrument(name = "coord.connect", skip_all, fields(member = %settings.member.id, prefix = %settings.prefix))]
    async fn open(
        settings: EtcdSettings,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        register_member: bool,
    ) -> Result<Self> {
        settings.validate()?;
        let request_timeout = settings.request_timeout();
        let options = settings.security.connect_options(request_timeout)?;
        let connecting = Client::connect(&settings.endpoints, Some(options));
        let client = within(request_timeout, "connect", connecting).await?;

        let granted_at = Instant::now();
        let grant = within(
            request_timeout,
            "grant lease",
            client.clone().lease_grant(settings.lease_ttl_secs, None),
        )
        .await?;
        // Lease 0 means "no lease": a key put under it would outlive us.
        if grant.id() == 0 || grant.ttl() <= 0 {
            return Err(Error::Unexpected {
                operation: "grant lease",
                reason: format!("granted lease {} with TTL {}", grant.id(), grant.ttl()),
            });
        }
        let lease_id = grant.id();
        let ttl = Duration::from_secs(grant.ttl() as u64);

        let stop = shutdown.child_token();
        let session = stop.child_token();
        let keep_alive = KeepAlive {
            client: client.clone(),
            lease_id,
            ttl,
            renewed_at: granted_at,
            session: session.clone(),
            request_timeout,
        };
        tasks.spawn(keep_alive.run());

        let keys = Keys::new(&settings.prefix);
        if register_member {
            let registered = register(&client, &keys, &settings.member, lease_id, request_timeout);
            if let Err(error) = registered.await {
                stop.cancel();
                return Err(error);
            }
        }
        info!(
            lease = lease_id,
            ttl_secs = grant.ttl(),
            "member registered"
        );

        let kv = Kv {
            client,
            request_timeout,
            session: session.clone(),
            member: settings.member.id.clone(),
        };
        let shared = Shared {
            kv,
            keys,
            info: settings.member,
            lease_id,
            session,
            leading: Mutex::new(None),
            tasks,
            _stop_on_drop: stop.drop_guard(),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// The id of this member's lease (every session-bound key is under it).
    pub fn lease_id(&self) -> i64 {
        self.shared.lease_id
    }

    /// The key prefix of the service, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        self.shared.keys.root()
    }

    pub(crate) fn kv(&self) -> &Kv {
        &self.shared.kv
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    pub(crate) fn member(&self) -> &str {
        &self.shared.info.id
    }

    /// This member's key in the election.
    pub(crate) fn election_key(&self) -> String {
        self.shared.keys.election_key(self.shared.lease_id)
    }

    /// Fails with `SessionLost` once the session is lost.
    pub(crate) fn alive(&self) -> Result<(), PortError> {
        if self.shared.session.is_cancelled() {
            return Err(session_lost(self.member()));
        }
        Ok(())
    }

    pub(crate) fn leading(&self) -> MutexGuard<'_, Option<CancellationToken>> {
        self.shared
            .leading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn register(
    client: &Client,
    keys: &Keys,
    member: &MemberInfo,
    lease_id: i64,
    request_timeout: Duration,
) -> Result<()> {
    let value = encode(member).map_err(|error| Error::Unexpected {
        operation: "register member",
        reason: error.message,
    })?;
    let options = PutOptions::new().with_lease(lease_id);
    let mut client = client.clone();
    let put = client.put(keys.member(&member.id), value, Some(options));
    within(request_timeout, "register member", put).await?;
    Ok(())
}

/// Runs one of `connect`'s requests under the deadline.
/// Whether etcd refused this client (wrong or missing credentials, not
/// allowed): retrying the same settings cannot succeed.
/// Decided by the gRPC code, never the message: etcd answers a failed login
/// (the only request of `connect` when credentials are set) with
/// `InvalidArgument`, a missing permission with `PermissionDenied`.
fn is_refusal(operation: &str, error: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return false;
    };
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => true,
        tonic::Code::InvalidArgument => operation == "connect",
        _ => false,
    }
}

pub(crate) async fn within<T>(
    deadline: Duration,
    operation: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, request).await {
        Err(_elapsed) => Err(Error::Timeout(operation)),
        Ok(Err(source)) if is_refusal(operation, &source) => Err(Error::Refused {
            operation,
            reason: source.to_string(),
        }),
        Ok(Err(source)) => Err(Error::Etcd { operation, source }),
        Ok(Ok(value)) => Ok(value),
    }
}
