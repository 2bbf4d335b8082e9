//! Leader election on ephemeral sequential nodes (ZooKeeper's recipe).
//!
//! A candidate creates `<prefix>/election/<session hex>-<sequence>` (value:
//! the member id), ephemeral to its session. The lowest sequence leads;
//! every other candidate watches only the node just before its own (no
//! herd effect) and re-reads the election when that one goes. The session
//! id in the name lets a candidate find its node again after a create whose
//! answer was lost, so no orphan candidate can lead unnoticed.
//!
//! The epoch is the winning node's creation zxid: zxids only grow within an
//! ensemble (across its own leader changes too), whereas sequence numbers
//! come from the parent's child counter and start again if the election
//! node is ever recreated. A rebuilt ensemble starts zxids again; the
//! incarnation orders it after the old one, as for a rebuilt etcd.
//!
//! A leadership's `lost` token is a child of the session token, and a watch
//! on the election node cancels it as soon as the node is deleted
//! (resigned, session closed or expired, deleted by an operator).

use crate::error::{permanent, session_lost};
use crate::member::{Lead, Shared, ZooKeeperBackend};
use crate::nodes::{candidate_name_prefix, election_order};
use crate::session::Session;
use crate::zk::{Op, Transacted};
use recon_coord::{Leadership, MemberId};
use recon_core::ports::{FailureKind, PortError};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};
use zookeeper_client as zk;

/// Pause before re-reading after a failed read, or re-watching.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How often `leader` re-reads an election whose first node vanished
/// between listing and reading it.
const LEADER_READ_ATTEMPTS: usize = 5;

/// Where a candidate stands after one look at the election.
enum Standing {
    /// Its node is first: it leads with this epoch.
    Leads(u64),
    /// Another node comes before it; wait for this one to go.
    Behind(String),
    /// Its node is gone (deleted from outside): create a new one.
    Gone,
}

impl ZooKeeperBackend {
    /// Waits until this member leads (see [`Coordinator::campaign`](recon_coord::Coordinator::campaign)).
    #[instrument(name = "coord.campaign", skip_all, fields(member = %self.member()))]
    pub(crate) async fn campaign_until_leading(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Leadership, PortError> {
        self.wait_until_not_leading(cancel).await?;
        let _standing = self.stand();
        loop {
            self.alive()?;
            let own = self.own_candidate().await?;
            loop {
                let predecessor = match self.standing(&own).await? {
                    Standing::Leads(epoch) => return Ok(self.take_lead(epoch, own)),
                    Standing::Gone => {
                        warn!(node = %own, "election node vanished, campaigning again");
                        break;
                    }
                    Standing::Behind(predecessor) => predecessor,
                };
                let client = self.alive()?;
                let watched = self
                    .session()
                    .call(
                        "watch predecessor",
                        client.check_and_watch_stat(&predecessor),
                    )
                    .await?;
                let watcher = match watched {
                    Ok((Some(_), watcher)) => watcher,
                    Ok((None, _)) => continue,
                    Err(error) => return Err(self.session().failure("watch predecessor", error)),
                };
                // Its own node too: one deleted from outside while it waits
                // would otherwise go unnoticed behind a long-lived leader.
                let own_watched = self
                    .session()
                    .call("watch own election node", client.check_and_watch_stat(&own))
                    .await?;
                let own_watcher = match own_watched {
                    Ok((Some(_), own_watcher)) => own_watcher,
                    Ok((None, _)) => continue,
                    Err(error) => {
                        return Err(self.session().failure("watch own election node", error));
                    }
                };
                drop(client);
                tokio::select! {
                    event = watcher.changed() => debug!(event = ?event.event_type, "predecessor changed"),
                    event = own_watcher.changed() => debug!(event = ?event.event_type, "own election node changed"),
                    _ = cancel.cancelled() => {
                        self.withdraw(&own).await;
                        return Err(PortError::new(FailureKind::Cancelled, "campaign cancelled"));
                    }
                    _ = self.session().lost.cancelled() => return Err(session_lost(self.member())),
                }
            }
        }
    }

    /// This session's candidate node: the one it has (a create whose answer
    /// was lost, a cancelled campaign whose withdrawal failed), or a new one.
    async fn own_candidate(&self) -> Result<String, PortError> {
        let election = self.nodes().election();
        let own_prefix = candidate_name_prefix(self.session().id);
        for name in self.session().children(&election).await? {
            if name.starts_with(&own_prefix) {
                return Ok(format!("{election}/{name}"));
            }
        }
        let client = self.alive()?;
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let path = self.nodes().candidate_prefix(self.session().id);
        let created = client.create(&path, self.member().as_bytes(), &options);
        match self.session().call("create election node", created).await? {
            Ok((_, sequence)) => Ok(format!("{path}{sequence}")),
            Err(error) => Err(self.session().failure("create election node", error)),
        }
    }

    /// One look at the election from `own`'s place.
    async fn standing(&self, own: &str) -> Result<Standing, PortError> {
        let election = self.nodes().election();
        let names = self.session().children(&election).await?;
        let order = election_order(&names);
        let Some(position) = order
            .iter()
            .position(|(_, name)| own.ends_with(&format!("/{name}")))
        else {
            return Ok(Standing::Gone);
        };
        if position > 0 {
            return Ok(Standing::Behind(format!(
                "{election}/{}",
                order[position - 1].1
            )));
        }
        match self.session().stat(own).await? {
            Some(stat) => Ok(Standing::Leads(stat.czxid as u64)),
            None => Ok(Standing::Gone),
        }
    }

    /// Gives the lead up: deletes the election node.
    ///
    /// Retries until ZooKeeper answers or the session is lost (then the node
    /// goes with the session), so that a failed resign never leaves behind
    /// an election node that nobody acts on.
    #[instrument(name = "coord.resign", skip_all, fields(member = %self.member(), epoch = leadership.epoch))]
    pub(crate) async fn resign_leadership(&self, leadership: &Leadership) -> Result<(), PortError> {
        leadership.lost.cancel();
        let held = self.leading().clone();
        let Some(lead) = held.filter(|lead| lead.epoch == leadership.epoch) else {
            return Ok(());
        };
        let delete = Op::Delete {
            path: lead.path.clone(),
            version: -1,
        };
        loop {
            match self
                .session()
                .transact("resign", vec![delete.clone()])
                .await
            {
                Ok(_) => {
                    info!("leadership resigned");
                    return Ok(());
                }
                Err(error) if self.session().lost.is_cancelled() => {
                    debug!(error = %error, "resign failed after the session ended; the node goes with it");
                    return Ok(());
                }
                Err(error) => {
                    warn!(error = %error, "resign failed, retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// The current leader: the member named by the lowest candidate node,
    /// and that node's creation zxid.
    pub(crate) async fn current_leader(&self) -> Result<Option<(MemberId, u64)>, PortError> {
        let election = self.nodes().election();
        for _attempt in 0..LEADER_READ_ATTEMPTS {
            let names = self.session().children(&election).await?;
            let Some((_, first)) = election_order(&names).into_iter().next() else {
                return Ok(None);
            };
            let Some((value, stat)) = self.session().get(&format!("{election}/{first}")).await?
            else {
                continue;
            };
            let member = String::from_utf8(value)
                .map_err(|_| permanent("ZooKeeper election value is not UTF-8"))?;
            return Ok(Some((member, stat.czxid as u64)));
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the election's first node kept vanishing while it was read",
        ))
    }

    /// Like the in-process coordinator, a member that already leads waits
    /// until that leadership ends before campaigning again.
    async fn wait_until_not_leading(&self, cancel: &CancellationToken) -> Result<(), PortError> {
        let held = self.leading().clone();
        let Some(lead) = held else {
            return Ok(());
        };
        tokio::select! {
            _ = lead.lost.cancelled() => Ok(()),
            _ = cancel.cancelled() => Err(PortError::new(FailureKind::Cancelled, "campaign cancelled")),
        }
    }

    fn take_lead(&self, epoch: u64, path: String) -> Leadership {
        let lost = self.session().lost.child_token();
        *self.leading() = Some(Lead {
            epoch,
            path: path.clone(),
            lost: lost.clone(),
        });
        let watch = LeadershipWatch {
            session: self.shared.session.clone(),
            path,
            epoch,
            lost: lost.clone(),
        };
        self.shared.tasks.spawn(watch.run());
        info!(epoch, "leadership won");
        Leadership {
            epoch,
            store_epoch: 0,
            incarnation: 0,
            lost,
        }
    }

    /// Runs `ops` only while no member campaigns for leadership (the
    /// port's `Guard::NoCandidate`, to end an orphaned run); `None` if one
    /// does. The multi's first operation is the standing check.
    ///
    /// A multi cannot check that a node has no children, so this member
    /// stands as a candidate for the moment of the write: with no other
    /// candidate before its node, it is first in the election, and its
    /// write is guarded like a leader's (a check of its own node). A
    /// candidate that comes later queues behind it and, once the node is
    /// withdrawn, leads and finds no run to adopt.
    #[instrument(name = "coord.transact_standing", skip_all, fields(operation = %operation))]
    pub(crate) async fn transact_standing(
        &self,
        operation: &'static str,
        ops: Vec<Op>,
    ) -> Result<Option<Transacted>, PortError> {
        let election = self.nodes().election();
        if !election_order(&self.session().children(&election).await?).is_empty() {
            return Ok(None);
        }
        let _standing = self.stand();
        let own = self.own_candidate().await?;
        let transacted = self.transact_as(&own, operation, ops).await;
        self.withdraw(&own).await;
        transacted
    }

    async fn transact_as(
        &self,
        own: &str,
        operation: &'static str,
        ops: Vec<Op>,
    ) -> Result<Option<Transacted>, PortError> {
        let Standing::Leads(_) = self.standing(own).await? else {
            return Ok(None);
        };
        let mut guarded = vec![Op::Check {
            path: own.to_owned(),
            version: 0,
        }];
        guarded.extend(ops);
        self.session().transact(operation, guarded).await.map(Some)
    }

    /// Deletes the candidate node `own`, retrying until ZooKeeper answers
    /// or the session ends (the node goes with it): a candidate left behind
    /// by a member that does not campaign stays first in the election and
    /// no run ever starts again.
    async fn withdraw(&self, own: &str) {
        let delete = Op::Delete {
            path: own.to_owned(),
            version: -1,
        };
        loop {
            match self
                .session()
                .transact("withdraw", vec![delete.clone()])
                .await
            {
                // Deleted, or already gone.
                Ok(_) => return,
                Err(_) if self.session().lost.is_cancelled() => return,
                Err(error) => {
                    warn!(error = %error, node = %own, "withdrawing the candidate node failed, retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Holds this member as standing in the election (campaigning, or
    /// ending an orphaned run) until the guard drops: the sweeper leaves
    /// its candidate node alone meanwhile.
    fn stand(&self) -> StandGuard {
        self.shared.standing.fetch_add(1, Ordering::SeqCst);
        StandGuard {
            shared: self.shared.clone(),
        }
    }

    /// Deletes this session's candidate nodes while the member neither
    /// stands in the election nor leads: one left by a create whose answer
    /// was lost, or by a withdrawal that never got through.
    pub(crate) async fn sweep_stale_candidates(&self) -> Result<(), PortError> {
        let leads = self
            .leading()
            .as_ref()
            .is_some_and(|lead| !lead.lost.is_cancelled());
        if leads || self.shared.standing.load(Ordering::SeqCst) > 0 {
            return Ok(());
        }
        let election = self.nodes().election();
        let own_prefix = candidate_name_prefix(self.session().id);
        for name in self.session().children(&election).await? {
            if name.starts_with(&own_prefix) && self.shared.standing.load(Ordering::SeqCst) == 0 {
                let stale = format!("{election}/{name}");
                warn!(node = %stale, "stale candidate node of this session; withdrawing it");
                self.withdraw(&stale).await;
            }
        }
        Ok(())
    }
}

/// Counts a member as standing in the election while it lives.
struct StandGuard {
    shared: Arc<Shared>,
}

impl Drop for StandGuard {
    fn drop(&mut self) {
        self.shared.standing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Watches an election node and cancels `lost` when it goes.
struct LeadershipWatch {
    session: Arc<Session>,
    path: String,
    epoch: u64,
    lost: CancellationToken,
}

impl LeadershipWatch {
    #[instrument(name = "coord.leadership_watch", parent = None, skip_all, fields(epoch = self.epoch))]
    async fn run(self) {
        loop {
            let Some(client) = self.session.client() else {
                self.lost.cancel();
                return;
            };
            let watching = client.check_and_watch_stat(&self.path);
            let watched = tokio::select! {
                _ = self.lost.cancelled() => return,
                watched = tokio::time::timeout(self.session.request_timeout, watching) => watched,
            };
            drop(client);
            let watcher = match watched {
                Ok(Ok((Some(stat), watcher))) if stat.czxid as u64 == self.epoch => watcher,
                Ok(Ok(_)) => {
                    info!(reason = "election node gone", "leadership lost");
                    self.lost.cancel();
                    return;
                }
                Ok(Err(error)) => {
                    debug!(error = %error, "watching the election node failed, retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(_elapsed) => continue,
            };
            let event = tokio::select! {
                _ = self.lost.cancelled() => return,
                event = watcher.changed() => event,
            };
            match event.event_type {
                zk::EventType::NodeDeleted => {
                    info!(reason = "election node deleted", "leadership lost");
                    self.lost.cancel();
                    return;
                }
                zk::EventType::Session if event.session_state.is_terminated() => {
                    info!(reason = "session ended", "leadership lost");
                    self.lost.cancel();
                    return;
                }
                _ => {}
            }
        }
    }
}
