//! Leader election: a candidate is a session-bound row
//! `election/<session id>` whose value is the member id; the live
//! candidate created first leads, its creation revision is the epoch. A
//! waiting candidate and a leader's watch poll the election.

use crate::backend::{FIRST_CANDIDATE, path};
use crate::session::PostgresBackend;
use recon_coord::backend::{Backend, Guard, Key, Outcome, Txn, Write, permanent};
use recon_coord::protocol::ELECTION;
use recon_coord::{Leadership, MemberId, session_lost};
use recon_core::ports::{FailureKind, PortError};
use sea_orm::{ConnectionTrait, QueryResult};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

fn cancelled() -> PortError {
    PortError::new(FailureKind::Cancelled, "campaign cancelled")
}

impl PostgresBackend {
    /// This member's candidate key.
    fn candidate(&self) -> Key {
        Key::root(ELECTION).child(format!("{:016x}", self.session_id()))
    }

    /// The first live candidate: its member, key and creation revision.
    async fn first_candidate(&self) -> Result<Option<(MemberId, String, u64)>, PortError> {
        let (start, end) = Self::election_range();
        let read = Self::statement(
            FIRST_CANDIDATE,
            vec![self.prefix().into(), start.into(), end.into()],
        );
        let row = self
            .call("read election", self.shared.db.query_one_raw(read))
            .await?;
        row.as_ref().map(candidate_of).transpose()
    }

    /// Waits until this member leads (see
    /// [`Backend::campaign`](recon_coord::backend::Backend::campaign)).
    #[instrument(name = "coord.campaign", skip_all, fields(member = %self.member()))]
    pub(crate) async fn campaign_until_leading(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Leadership, PortError> {
        self.wait_until_not_leading(cancel).await?;
        let own = self.candidate();
        let stand = Txn::new(Guard::Session).then(Write::Put {
            key: own.clone(),
            value: self.member().as_bytes().to_vec(),
            session_bound: true,
        });
        self.commit("campaign", stand).await?;
        let own_path = path(&own);
        loop {
            if self.shared.session.is_cancelled() {
                return Err(session_lost(self.member()));
            }
            match self.first_candidate().await? {
                Some((_, key, epoch)) if key == own_path => return Ok(self.take_lead(epoch)),
                Some(_) => {}
                None => return Err(permanent("this member's candidate row vanished")),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.shared.poll_interval) => {}
                _ = cancel.cancelled() => {
                    self.withdraw().await;
                    return Err(cancelled());
                }
                _ = self.shared.session.cancelled() => return Err(session_lost(self.member())),
            }
        }
    }

    /// Deletes this member's candidate row (a cancelled campaign, a
    /// resignation); a failure is left to the session's expiry.
    async fn withdraw(&self) {
        let delete = Txn::new(Guard::Session).then(Write::Delete(self.candidate()));
        if let Err(error) = self.commit("withdraw", delete).await {
            warn!(error = %error, "withdrawing the candidate failed; the session takes it");
        }
    }

    /// Gives the lead up.
    #[instrument(name = "coord.resign", skip_all, fields(member = %self.member(), epoch = leadership.epoch))]
    pub(crate) async fn resign_leadership(&self, leadership: &Leadership) -> Result<(), PortError> {
        leadership.lost.cancel();
        let resign = Txn::new(Guard::Leader(leadership)).then(Write::Delete(self.candidate()));
        match self.commit("resign", resign).await {
            Ok(Outcome::Done) => info!("leadership resigned"),
            Ok(_) => {}
            Err(error) if self.shared.session.is_cancelled() => {
                info!(error = %error, "resign after the session ended; the session took the row");
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// The current leader and its epoch.
    pub(crate) async fn current_leader(&self) -> Result<Option<(MemberId, u64)>, PortError> {
        Ok(self
            .first_candidate()
            .await?
            .map(|(member, _, epoch)| (member, epoch)))
    }

    /// A member that already leads waits until that leadership ends before
    /// campaigning again (as on every backend).
    async fn wait_until_not_leading(&self, cancel: &CancellationToken) -> Result<(), PortError> {
        let held = self.leading().clone();
        let Some(lost) = held else {
            return Ok(());
        };
        tokio::select! {
            _ = lost.cancelled() => Ok(()),
            _ = cancel.cancelled() => Err(cancelled()),
        }
    }

    /// Records the leadership and watches it: `lost` fires when the
    /// session is lost or this member's candidate is no longer first.
    fn take_lead(&self, epoch: u64) -> Leadership {
        let lost = self.shared.session.child_token();
        *self.leading() = Some(lost.clone());
        let watcher = self.clone();
        let watched = lost.clone();
        self.shared.tasks.spawn(async move {
            watcher.watch_lead(epoch, watched).await;
        });
        info!(epoch, "leadership won");
        Leadership {
            epoch,
            store_epoch: 0,
            incarnation: 0,
            lost,
        }
    }

    #[instrument(name = "coord.leadership_watch", parent = None, skip_all, fields(epoch))]
    async fn watch_lead(&self, epoch: u64, lost: CancellationToken) {
        let own = path(&self.candidate());
        loop {
            tokio::select! {
                _ = lost.cancelled() => return,
                _ = tokio::time::sleep(self.shared.poll_interval) => {}
            }
            match self.first_candidate().await {
                Ok(Some((_, key, first))) if key == own && first == epoch => {}
                Ok(_) => {
                    warn!("leadership lost");
                    lost.cancel();
                    return;
                }
                // The session's renewal decides about an unreachable
                // database.
                Err(_) => {}
            }
        }
    }
}

fn candidate_of(row: &QueryResult) -> Result<(MemberId, String, u64), PortError> {
    let read = |error: sea_orm::DbErr| {
        PortError::with_source(FailureKind::Permanent, error).context("read the election")
    };
    let value: Vec<u8> = row.try_get_by_index(0).map_err(read)?;
    let key: String = row.try_get_by_index(1).map_err(read)?;
    let created: i64 = row.try_get_by_index(2).map_err(read)?;
    let member =
        String::from_utf8(value).map_err(|_| permanent("an election value is not UTF-8"))?;
    Ok((member, key, u64::try_from(created).unwrap_or(0)))
}
