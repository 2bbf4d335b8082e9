//! Connecting: the pool, the tables, this member's session row and its
//! renewal; [`PostgresBackend`] and what its primitives share.

use crate::error::{Error, Result, timed_out, transient};
use crate::schema;
use recon_coord::MemberInfo;
use recon_coord::protocol::Protocol;
use recon_core::ports::PortError;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value,
};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, instrument, warn};

/// The coordinator on PostgreSQL: the run protocol over [`PostgresBackend`].
pub type PostgresCoordinator = Protocol<PostgresBackend>;

/// Where and as whom a member coordinates.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The database URL (`postgres://…`).
    pub url: String,
    /// The service's prefix: services sharing a database keep apart.
    pub prefix: String,
    /// This member.
    pub member: MemberInfo,
    /// How long the session outlives its last renewal.
    pub session_ttl: Duration,
    /// How often a waiting candidate and a leader look at the election.
    pub poll_interval: Duration,
}

impl PostgresSettings {
    /// Settings with a 10 s session and a 100 ms election poll.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>, member: MemberInfo) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            member,
            session_ttl: Duration::from_secs(10),
            poll_interval: Duration::from_millis(100),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.member.id.is_empty() {
            return Err(Error::Invalid("the member id is empty".into()));
        }
        if self.session_ttl < Duration::from_secs(1) {
            return Err(Error::Invalid(format!(
                "the session TTL {:?} is under 1 s",
                self.session_ttl
            )));
        }
        Ok(())
    }

    /// Each request's deadline: half the TTL, within 2–5 s.
    fn request_timeout(&self) -> Duration {
        (self.session_ttl / 2).clamp(Duration::from_secs(2), Duration::from_secs(5))
    }
}

/// Connects a member and registers it (see [`PostgresBackend::connect`]).
pub async fn connect(
    settings: PostgresSettings,
    shutdown: CancellationToken,
) -> Result<PostgresCoordinator> {
    connect_tracked(settings, shutdown, TaskTracker::new()).await
}

/// Like [`connect`], spawning the session's tasks (renewal, leadership
/// watches) on `tasks`: once they are done the session row is deleted.
#[instrument(name = "coord.connect", skip_all, fields(member = %settings.member.id, prefix = %settings.prefix))]
pub async fn connect_tracked(
    settings: PostgresSettings,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<PostgresCoordinator> {
    let info = settings.member.clone();
    let backend = PostgresBackend::connect(settings, shutdown, tasks).await?;
    let coordinator = Protocol::new(backend);
    if let Err(error) = coordinator.join(&info).await {
        coordinator.backend().shared.session.cancel();
        return Err(Error::Register(error));
    }
    Ok(coordinator)
}

/// A session for a tool that is not a member (`recon reconcile
/// --cluster`, `recon abort`): the protocol without registering, for
/// [`recon_coord::remote`]. End it with `shutdown`, then wait for `tasks`
/// to delete its session row.
pub async fn connect_tool(
    settings: PostgresSettings,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<PostgresCoordinator> {
    Ok(Protocol::new(
        PostgresBackend::connect(settings, shutdown, tasks).await?,
    ))
}

/// One member's session on the service's coordination state in
/// PostgreSQL. Cheap to clone; the session ends (its row deleted, its
/// session-bound rows with it) when `shutdown` fires or the last clone is
/// dropped. A lost session is final.
#[derive(Clone)]
pub struct PostgresBackend {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresBackend")
            .field("member", &self.shared.member)
            .field("prefix", &self.shared.prefix)
            .field("session_id", &self.shared.session_id)
            .field("session_lost", &self.shared.session.is_cancelled())
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) db: DatabaseConnection,
    pub(crate) prefix: String,
    pub(crate) member: String,
    pub(crate) session_id: i64,
    pub(crate) session: CancellationToken,
    pub(crate) request_timeout: Duration,
    pub(crate) poll_interval: Duration,
    /// The `lost` token of the leadership this member holds, if any.
    pub(crate) leading: Mutex<Option<CancellationToken>>,
    pub(crate) tasks: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl PostgresBackend {
    /// Connects, creates the tables if missing, opens this member's session
    /// and renews it on a timer.
    pub async fn connect(
        settings: PostgresSettings,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self> {
        settings.validate()?;
        let request_timeout = settings.request_timeout();
        let mut options = ConnectOptions::new(settings.url.clone());
        options
            .max_connections(8)
            .min_connections(1)
            .connect_timeout(request_timeout)
            .acquire_timeout(request_timeout)
            .sqlx_logging(false);
        let db = within_connect(request_timeout, "connect", Database::connect(options)).await?;
        within_connect(request_timeout, "create tables", async {
            schema::ensure(&db).await.map_err(|error| match error {
                Error::Database { source, .. } => source,
                other => sea_orm::DbErr::Custom(other.to_string()),
            })
        })
        .await?;
        let ttl_ms = i64::try_from(settings.session_ttl.as_millis()).unwrap_or(i64::MAX);
        let open = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO recon_coord_sessions (id, prefix, member, expires_at)
             VALUES (nextval('recon_coord_revision'), $1, $2,
                     clock_timestamp() + $3 * interval '1 millisecond')
             RETURNING id",
            [
                Value::from(settings.prefix.clone()),
                Value::from(settings.member.id.clone()),
                Value::from(ttl_ms),
            ],
        );
        let opened_at = Instant::now();
        let row = within_connect(request_timeout, "open session", db.query_one_raw(open))
            .await?
            .ok_or_else(|| Error::Invalid("opening the session returned no id".into()))?;
        let session_id: i64 = row.try_get_by_index(0).map_err(|source| Error::Database {
            operation: "read session id",
            source,
        })?;
        let stop = shutdown.child_token();
        let session = stop.child_token();
        let renewal = Renewal {
            db: db.clone(),
            session_id,
            ttl: settings.session_ttl,
            ttl_ms,
            renewed_at: opened_at,
            session: session.clone(),
        };
        tasks.spawn(renewal.run());
        info!(session = session_id, ttl_ms, "session opened");
        let shared = Shared {
            db,
            prefix: settings.prefix,
            member: settings.member.id,
            session_id,
            session,
            request_timeout,
            poll_interval: settings.poll_interval,
            leading: Mutex::new(None),
            tasks,
            _stop_on_drop: stop.drop_guard(),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// This member's session id (the `session` of its session-bound rows).
    pub fn session_id(&self) -> i64 {
        self.shared.session_id
    }

    /// The service's prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    pub(crate) fn member(&self) -> &str {
        &self.shared.member
    }

    pub(crate) fn leading(&self) -> MutexGuard<'_, Option<CancellationToken>> {
        self.shared
            .leading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one database request under the request deadline.
    pub(crate) async fn call<T>(
        &self,
        operation: &str,
        request: impl Future<Output = std::result::Result<T, sea_orm::DbErr>>,
    ) -> std::result::Result<T, PortError> {
        match tokio::time::timeout(self.shared.request_timeout, request).await {
            Err(_elapsed) => Err(timed_out(operation)),
            Ok(Err(error)) => Err(transient(operation, error)),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// A statement with positional values.
    pub(crate) fn statement(sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    }
}

async fn within_connect<T>(
    deadline: Duration,
    operation: &'static str,
    request: impl Future<Output = std::result::Result<T, sea_orm::DbErr>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, request).await {
        Err(_elapsed) => Err(Error::Timeout(operation)),
        Ok(Err(source)) => Err(Error::Database { operation, source }),
        Ok(Ok(value)) => Ok(value),
    }
}

/// Renews the session row every third of the TTL; cancels the session
/// when the row is gone or two thirds of a TTL pass without a renewal;
/// deletes the row when the session ends.
struct Renewal {
    db: DatabaseConnection,
    session_id: i64,
    ttl: Duration,
    ttl_ms: i64,
    renewed_at: Instant,
    session: CancellationToken,
}

impl Renewal {
    #[instrument(name = "coord.keepalive", parent = None, skip_all, fields(session = self.session_id))]
    async fn run(mut self) {
        let interval = self.ttl / 3;
        loop {
            tokio::select! {
                _ = self.session.cancelled() => break,
                _ = tokio::time::sleep_until(self.renewed_at + interval) => {}
            }
            let attempt_started = Instant::now();
            let give_up_at = self.renewed_at + self.ttl * 2 / 3;
            match tokio::time::timeout_at(give_up_at, self.renew_until_answered()).await {
                Ok(true) => self.renewed_at = attempt_started,
                Ok(false) => {
                    warn!("session expired, session lost");
                    self.session.cancel();
                }
                Err(_elapsed) => {
                    warn!("session not renewed in time, session lost");
                    self.session.cancel();
                }
            }
        }
        self.close().await;
    }

    /// `true` once renewed, `false` if the session is gone.
    async fn renew_until_answered(&self) -> bool {
        let renew = PostgresBackend::statement(
            "UPDATE recon_coord_sessions
             SET expires_at = clock_timestamp() + $2 * interval '1 millisecond'
             WHERE id = $1 AND expires_at > clock_timestamp()",
            vec![Value::from(self.session_id), Value::from(self.ttl_ms)],
        );
        loop {
            match self.db.execute_raw(renew.clone()).await {
                Ok(done) => return done.rows_affected() == 1,
                Err(error) => {
                    debug!(error = %error, "session renewal failed, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Deletes the session row (and with it every session-bound row).
    async fn close(&self) {
        let close = PostgresBackend::statement(
            "DELETE FROM recon_coord_sessions WHERE id = $1",
            vec![Value::from(self.session_id)],
        );
        let deadline = self.ttl / 2;
        match tokio::time::timeout(deadline, self.db.execute_raw(close)).await {
            Ok(Ok(_)) => info!("session closed"),
            Ok(Err(error)) => warn!(error = %error, "closing the session failed; it expires"),
            Err(_elapsed) => warn!("closing the session timed out; it expires"),
        }
    }
}
