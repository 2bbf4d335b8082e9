//! The member's session: a lease kept alive on a timer.
//!
//! The lease is renewed every third of its TTL. A renewal that has not
//! succeeded two thirds of a TTL after the last good one, or an answer that
//! the lease is gone (TTL ≤ 0), cancels the session token at once — before
//! etcd can expire the lease, so the member stops acting as leader or
//! follower before anyone else can take over its work. A broken keep-alive
//! stream (etcd-client does not reconnect it) is re-opened within that
//! budget. When the session ends, for whatever reason, the lease is revoked
//! (best effort) so that the member's keys vanish at once.

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

/// Pause between attempts to re-open a broken keep-alive stream.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

/// Keeps one lease alive until the session ends.
pub(crate) struct KeepAlive {
    pub(crate) client: Client,
    pub(crate) lease_id: i64,
    /// The TTL etcd granted.
    pub(crate) ttl: Duration,
    /// When the grant (or last renewal) was sent.
    pub(crate) renewed_at: Instant,
    /// Cancelled here when the lease cannot be kept; a child of the stop
    /// token, so shutting down ends it too.
    pub(crate) session: CancellationToken,
    pub(crate) request_timeout: Duration,
}

/// Why a renewal failed for good.
enum Lost {
    /// etcd says the lease no longer exists.
    Expired,
}

type Channel = Option<(LeaseKeeper, LeaseKeepAliveStream)>;

impl KeepAlive {
    /// Renews until the session ends, then revokes the lease.
    #[instrument(name = "coord.keepalive", parent = None, skip_all, fields(lease = self.lease_id))]
    pub(crate) async fn run(mut self) {
        let interval = self.ttl / 3;
        let mut channel: Channel = None;
        loop {
            tokio::select! {
                _ = self.session.cancelled() => break,
                _ = tokio::time::sleep_until(self.renewed_at + interval) => {}
            }
            let attempt_started = Instant::now();
            let give_up_at = self.renewed_at + self.ttl * 2 / 3;
            let renewal = tokio::time::timeout_at(give_up_at, self.renew(&mut channel));
            match renewal.await {
                Ok(Ok(ttl_secs)) => {
                    self.renewed_at = attempt_started;
                    debug!(ttl_secs, "lease renewed");
                }
                Ok(Err(Lost::Expired)) => {
                    warn!("lease expired, session lost");
                    self.session.cancel();
                }
                Err(_elapsed) => {
                    warn!(
                        since_last_renewal_ms = self.renewed_at.elapsed().as_millis() as u64,
                        "lease not renewed in time, session lost"
                    );
                    self.session.cancel();
                }
            }
        }
        drop(channel);
        self.revoke().await;
    }

    /// Whether a failed keep-alive means the lease is gone: etcd answered
    /// `NotFound`, or the client refused the stream (it reports a first
    /// answer without TTL only as text) and etcd says the lease has no
    /// time left.
    async fn lease_gone(&mut self, error: &etcd_client::Error) -> bool {
        if crate::error::is_lease_not_found(error) {
            return true;
        }
        if !matches!(error, etcd_client::Error::LeaseKeepAliveError(_)) {
            return false;
        }
        matches!(
            self.client.lease_time_to_live(self.lease_id, None).await,
            Ok(answer) if answer.ttl() <= 0
        )
    }

    /// One renewal: on the open stream, or on a re-opened one. Retries
    /// re-opening until the caller's deadline drops it.
    async fn renew(&mut self, channel: &mut Channel) -> Result<i64, Lost> {
        loop {
            if let Some((keeper, stream)) = channel.as_mut() {
                match send_and_receive(keeper, stream).await {
                    Ok(ttl_secs) if ttl_secs > 0 => return Ok(ttl_secs),
                    Ok(_) => return Err(Lost::Expired),
                    Err(error) => {
                        debug!(error = %error, "keep-alive stream broken, re-opening");
                        *channel = None;
                    }
                }
            }
            // Opening a stream sends a first keep-alive and fails if the
            // lease is gone.
            match self.client.lease_keep_alive(self.lease_id).await {
                Ok(opened) => {
                    *channel = Some(opened);
                    return Ok(self.ttl.as_secs() as i64);
                }
                Err(error) if self.lease_gone(&error).await => {
                    return Err(Lost::Expired);
                }
                Err(error) => {
                    debug!(error = %error, "re-opening keep-alive stream failed, retrying");
                    tokio::time::sleep(REOPEN_PAUSE).await;
                }
            }
        }
    }

    /// Revokes the lease so that the member's keys vanish now rather than
    /// after the TTL; harmless if it already expired.
    async fn revoke(&mut self) {
        let revoke = self.client.lease_revoke(self.lease_id);
        match tokio::time::timeout(self.request_timeout, revoke).await {
            Ok(Ok(_)) => info!("lease revoked, session ended"),
            Ok(Err(error)) => debug!(error = %error, "lease revoke failed"),
            Err(_elapsed) => debug!("lease revoke timed out"),
        }
    }
}

/// Sends one keep-alive and waits for its answer: the TTL etcd granted.
async fn send_and_receive(
    keeper: &mut LeaseKeeper,
    stream: &mut LeaseKeepAliveStream,
) -> Result<i64, etcd_client::Error> {
    keeper.keep_alive().await?;
    match stream.message().await? {
        Some(response) => Ok(response.ttl()),
        None => Err(etcd_client::Error::LeaseKeepAliveError(
            "keep-alive stream closed".to_owned(),
        )),
    }
}
