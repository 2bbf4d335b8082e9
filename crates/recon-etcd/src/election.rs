//! Leader election on etcd's election API.
//!
//! `campaign` calls etcd's `Campaign` with the member's own lease: etcd puts
//! `<prefix>/election/<lease hex>` (value: the member id) and answers once
//! every candidate key created before it is gone. The key's creation
//! revision is the epoch. Before answering, the campaign re-reads the
//! election to make sure the key is still there and first (etcd's server
//! answers even if the candidate's own key expired while it waited).
//!
//! A leadership's `lost` token is a child of the session token, and a watch
//! on the leader key cancels it as soon as the key is deleted (resigned,
//! lease expired or revoked) or changes hands.

use crate::error::{permanent, session_lost};
use crate::member::EtcdBackend;
use etcd_client::{Client, Compare, CompareOp, EventType, KeyValue, Txn, TxnOp, WatchOptions};
use recon_coord::{Leadership, MemberId};
use recon_core::ports::{FailureKind, PortError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

/// Pause before campaigning again, or re-watching after a broken watch.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl EtcdBackend {
    /// Waits until this member leads (see [`Coordinator::campaign`](recon_coord::Coordinator::campaign)).
    #[instrument(name = "coord.campaign", skip_all, fields(member = %self.member()))]
    pub(crate) async fn campaign_until_leading(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Leadership, PortError> {
        self.wait_until_not_leading(cancel).await?;
        loop {
            self.alive()?;
            let mut election = self.kv().client.election_client();
            let name = self.keys().election_name();
            let campaign = election.campaign(name, self.member(), self.shared.lease_id);
            let answer = tokio::select! {
                answer = campaign => answer,
                _ = cancel.cancelled() => {
                    self.withdraw().await;
                    return Err(PortError::new(FailureKind::Cancelled, "campaign cancelled"));
                }
                _ = self.shared.session.cancelled() => return Err(session_lost(self.member())),
            };
            let answer = answer.map_err(|error| self.kv().map_error("campaign", error))?;
            let Some(leader_key) = answer.leader() else {
                return Err(permanent("etcd campaign answered without a leader key"));
            };
            let own_key = self.election_key();
            if leader_key.key() != own_key.as_bytes() {
                return Err(permanent(format!(
                    "etcd campaign made key {} where {own_key} was expected",
                    String::from_utf8_lossy(leader_key.key())
                )));
            }
            let epoch = leader_key.rev();
            if let Some(read_at) = self.confirm_leading(epoch).await? {
                return Ok(self.take_lead(epoch, read_at));
            }
            warn!(
                epoch,
                "campaign answered without the lead, campaigning again"
            );
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Gives the lead up: deletes the leader key if it is still the one
    /// created at `leadership.epoch` (what etcd's `Resign` does).
    ///
    /// Retries until etcd answers or the session is lost (then the lease
    /// takes the key with it), so that a failed resign never leaves behind
    /// a leader key that nobody acts on.
    #[instrument(name = "coord.resign", skip_all, fields(member = %self.member(), epoch = leadership.epoch))]
    pub(crate) async fn resign_leadership(&self, leadership: &Leadership) -> Result<(), PortError> {
        let key = self.election_key();
        let epoch = i64::try_from(leadership.epoch).unwrap_or(i64::MAX);
        let same_epoch = Compare::create_revision(key.clone(), CompareOp::Equal, epoch);
        let txn = Txn::new()
            .when([same_epoch])
            .and_then([TxnOp::delete(key, None)]);
        leadership.lost.cancel();
        loop {
            match self.kv().txn("resign", txn.clone()).await {
                Ok(answer) => {
                    if answer.succeeded() {
                        info!("leadership resigned");
                    }
                    return Ok(());
                }
                Err(error) if self.shared.session.is_cancelled() => {
                    debug!(error = %error, "resign failed after the session ended; the lease takes the key");
                    return Ok(());
                }
                Err(error) => {
                    warn!(error = %error, "resign failed, retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// The current leader: the candidate key created first.
    pub(crate) async fn current_leader(&self) -> Result<Option<(MemberId, u64)>, PortError> {
        let (first, _) = self
            .kv()
            .first_created(&self.keys().election_prefix())
            .await?;
        let Some(entry) = first else {
            return Ok(None);
        };
        let member = String::from_utf8(entry.value().to_vec())
            .map_err(|_| permanent("etcd election value is not UTF-8"))?;
        Ok(Some((member, entry.create_revision() as u64)))
    }

    /// Like the in-process coordinator, a member that already leads waits
    /// until that leadership ends before campaigning again.
    async fn wait_until_not_leading(&self, cancel: &CancellationToken) -> Result<(), PortError> {
        let held = self.leading().clone();
        let Some(lost) = held else {
            return Ok(());
        };
        tokio::select! {
            _ = lost.cancelled() => Ok(()),
            _ = cancel.cancelled() => Err(PortError::new(FailureKind::Cancelled, "campaign cancelled")),
        }
    }

    /// The revision of a read that shows this member's key, created at
    /// `epoch`, first in the election; `None` if it does not.
    async fn confirm_leading(&self, epoch: i64) -> Result<Option<i64>, PortError> {
        let prefix = self.keys().election_prefix();
        let (first, read_at) = self.kv().first_created(&prefix).await?;
        let own_key = self.election_key();
        let leads = first.is_some_and(|entry| owned(&entry, &own_key, self.member(), epoch));
        Ok(leads.then_some(read_at))
    }

    fn take_lead(&self, epoch: i64, read_at: i64) -> Leadership {
        let lost = self.shared.session.child_token();
        *self.leading() = Some(lost.clone());
        let watch = LeadershipWatch {
            client: self.kv().client.clone(),
            key: self.election_key(),
            member: self.member().to_owned(),
            epoch,
            from_revision: read_at + 1,
            lost: lost.clone(),
            request_timeout: self.kv().request_timeout,
        };
        self.shared.tasks.spawn(watch.run());
        info!(epoch, "leadership won");
        Leadership {
            epoch: epoch as u64,
            store_epoch: 0,
            incarnation: 0,
            lost,
        }
    }

    /// Deletes this member's candidate key after a cancelled campaign, in
    /// case etcd made it leader just before the cancellation arrived.
    async fn withdraw(&self) {
        let mut client = self.kv().client.clone();
        let key = self.election_key();
        if let Err(error) = self.kv().call("withdraw", client.delete(key, None)).await {
            debug!(error = %error, "withdrawing the candidate key failed");
        }
    }
}

/// Whether `entry` is `key`, created at `epoch`, naming `member`.
fn owned(entry: &KeyValue, key: &str, member: &str, epoch: i64) -> bool {
    entry.key() == key.as_bytes()
        && entry.create_revision() == epoch
        && entry.value() == member.as_bytes()
}

/// Watches a leader key and cancels `lost` when it goes or changes.
struct LeadershipWatch {
    client: Client,
    key: String,
    member: String,
    epoch: i64,
    /// Events from this revision on; the key was still ours just before.
    from_revision: i64,
    lost: CancellationToken,
    request_timeout: Duration,
}

/// How following the watch stream ended.
enum Followed {
    /// The leader key went or changed.
    Lost(&'static str),
    /// `lost` was cancelled elsewhere (resign, session lost).
    Stopped,
    /// The stream broke; re-read and watch again.
    Interrupted,
}

impl LeadershipWatch {
    #[instrument(name = "coord.leadership_watch", parent = None, skip_all, fields(member = %self.member, epoch = self.epoch))]
    async fn run(mut self) {
        loop {
            match self.follow().await {
                Followed::Stopped => return,
                Followed::Lost(reason) => {
                    info!(reason, "leadership lost");
                    self.lost.cancel();
                    return;
                }
                Followed::Interrupted => {}
            }
            match self.recheck().await {
                Followed::Lost(reason) => {
                    info!(reason, "leadership lost");
                    self.lost.cancel();
                    return;
                }
                Followed::Stopped => return,
                Followed::Interrupted => {}
            }
        }
    }

    /// Follows the watch until something happens to the key.
    async fn follow(&mut self) -> Followed {
        let options = WatchOptions::new().with_start_revision(self.from_revision);
        let mut client = self.client.clone();
        let opening = tokio::time::timeout(
            self.request_timeout,
            client.watch(self.key.clone(), Some(options)),
        );
        let mut stream = tokio::select! {
            _ = self.lost.cancelled() => return Followed::Stopped,
            opened = opening => match opened {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    debug!(error = %error, "opening the leadership watch failed");
                    return Followed::Interrupted;
                }
                Err(_elapsed) => return Followed::Interrupted,
            },
        };
        loop {
            let message = tokio::select! {
                _ = self.lost.cancelled() => return Followed::Stopped,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Followed::Interrupted,
                Err(error) => {
                    debug!(error = %error, "leadership watch broke");
                    return Followed::Interrupted;
                }
            };
            if response.canceled() {
                return Followed::Interrupted;
            }
            for event in response.events() {
                match (event.event_type(), event.kv()) {
                    (EventType::Delete, _) => return Followed::Lost("leader key deleted"),
                    (EventType::Put, Some(entry))
                        if !owned(entry, &self.key, &self.member, self.epoch) =>
                    {
                        return Followed::Lost("leader key changed");
                    }
                    _ => {}
                }
            }
        }
    }

    /// Re-reads the key after a broken watch; retries until it can tell.
    async fn recheck(&mut self) -> Followed {
        loop {
            tokio::select! {
                _ = self.lost.cancelled() => return Followed::Stopped,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
            let mut client = self.client.clone();
            let read =
                tokio::time::timeout(self.request_timeout, client.get(self.key.clone(), None));
            let response = match read.await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    debug!(error = %error, "leadership re-check failed, retrying");
                    continue;
                }
                Err(_elapsed) => continue,
            };
            let still_ours = response
                .kvs()
                .first()
                .is_some_and(|entry| owned(entry, &self.key, &self.member, self.epoch));
            if !still_ours {
                return Followed::Lost("leader key gone after the watch broke");
            }
            self.from_revision = response.header().map_or(0, |header| header.revision()) + 1;
            return Followed::Interrupted;
        }
    }
}
