//! The member's ZooKeeper session, treated like a lost etcd lease.
//!
//! The client library reconnects on its own and keeps the session while the
//! server still has it; that is not enough for fencing. A server expires a
//! session `session timeout` after it last heard from the client, and a
//! client that is merely disconnected learns of the expiry only when it
//! reconnects. So the keep-alive here probes the server every third of the
//! negotiated timeout (a `exists` of the root node, which also renews the
//! session on the server). A probe that has not succeeded two thirds of a
//! timeout after the last good one was *sent* cancels the session token at
//! once — before the server can expire the session and let another member
//! take over. So does a terminal session state (expired, closed, refused)
//! or any request answered with one.
//!
//! A lost session is final: the client is dropped (the library then closes
//! the session on the server, or the server expires it), so its ephemeral
//! nodes vanish and a member that was declared lost cannot come back to
//! life as leader after a reconnection.

use crate::error::ends_session;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};
use zookeeper_client as zk;

/// Pause between probes that failed without ending the session.
const PROBE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One member's session: the client while the session lives, and the token
/// cancelled when it is lost.
pub(crate) struct Session {
    /// `None` once the session ended: dropping the last client closes it.
    client: Mutex<Option<zk::Client>>,
    /// Cancelled when the session is lost or shut down.
    pub(crate) lost: CancellationToken,
    /// The session's id (ephemeral nodes carry it as their owner).
    pub(crate) id: i64,
    /// The negotiated session timeout.
    pub(crate) timeout: Duration,
    /// The deadline of one request.
    pub(crate) request_timeout: Duration,
    /// The member, for error messages.
    pub(crate) member: String,
    /// The node the keep-alive probes.
    pub(crate) probe_path: String,
}

impl Session {
    pub(crate) fn new(
        client: zk::Client,
        lost: CancellationToken,
        request_timeout: Duration,
        member: String,
        probe_path: String,
    ) -> Self {
        Self {
            id: client.session_id().0,
            timeout: client.session_timeout(),
            client: Mutex::new(Some(client)),
            lost,
            request_timeout,
            member,
            probe_path,
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<zk::Client>> {
        self.client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A handle on the session while it lives.
    pub(crate) fn client(&self) -> Option<zk::Client> {
        if self.lost.is_cancelled() {
            return None;
        }
        self.slot().clone()
    }

    /// The session's id and password (to end it from outside in tests).
    pub(crate) fn info(&self) -> Option<zk::SessionInfo> {
        self.slot().as_ref().map(|client| client.session().clone())
    }

    /// Ends the session for good: cancels the token and drops the client,
    /// which closes the session once requests in flight are answered.
    pub(crate) fn end(&self) {
        self.lost.cancel();
        if self.slot().take().is_some() {
            info!(session = %format_args!("{:#x}", self.id), "session closed");
        }
    }
}

/// Probes the session until it ends, then closes it.
pub(crate) struct KeepAlive {
    pub(crate) session: Arc<Session>,
    pub(crate) state: zk::StateWatcher,
    /// When the last good probe (or the connect) was sent.
    pub(crate) renewed_at: Instant,
}

/// How a probe ended when it did not succeed.
enum Lost {
    /// The session is over (expired, closed, refused).
    Ended(zk::Error),
}

impl KeepAlive {
    #[instrument(name = "coord.keepalive", parent = None, skip_all, fields(session = %format_args!("{:#x}", self.session.id)))]
    pub(crate) async fn run(mut self) {
        let timeout = self.session.timeout;
        let interval = timeout / 3;
        loop {
            tokio::select! {
                _ = self.session.lost.cancelled() => break,
                state = self.state.changed() => {
                    if state.is_terminated() {
                        warn!(%state, "session ended, session lost");
                        break;
                    }
                    debug!(%state, "session state changed");
                    continue;
                }
                _ = tokio::time::sleep_until(self.renewed_at + interval) => {}
            }
            let attempt_started = Instant::now();
            let give_up_at = self.renewed_at + timeout * 2 / 3;
            match tokio::time::timeout_at(give_up_at, self.probe()).await {
                Ok(Ok(())) => self.renewed_at = attempt_started,
                Ok(Err(Lost::Ended(error))) => {
                    warn!(error = %error, "session ended, session lost");
                    break;
                }
                Err(_elapsed) => {
                    warn!(
                        since_last_probe_ms = self.renewed_at.elapsed().as_millis() as u64,
                        "session not confirmed in time, session lost"
                    );
                    break;
                }
            }
        }
        self.session.end();
    }

    /// One successful round trip, retried until the caller's deadline drops
    /// it; fails only when the session is over.
    async fn probe(&self) -> Result<(), Lost> {
        loop {
            let Some(client) = self.session.client() else {
                return Err(Lost::Ended(zk::Error::ClientClosed));
            };
            match client.check_stat(&self.session.probe_path).await {
                Ok(_) => return Ok(()),
                Err(error) if ends_session(&error) => return Err(Lost::Ended(error)),
                Err(error) => {
                    debug!(error = %error, "session probe failed, retrying");
                    drop(client);
                    tokio::time::sleep(PROBE_RETRY_PAUSE).await;
                }
            }
        }
    }
}
