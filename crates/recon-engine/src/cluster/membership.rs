//! A replica's membership in the cluster, kept up across coordinator
//! outages.
//!
//! Event consumption never waits on the coordinator: a replica consumes
//! whether or not etcd (or ZooKeeper) answers, and [`Membership::keep`]
//! connects in the background (retrying with backoff), takes part in runs
//! until the session is lost (lease expired, the coordinator unreachable
//! for two thirds of a TTL), then drops out — the member's unit work stops
//! at once and its session-bound keys go with its session, so the leader
//! hands its units to others — and connects again with a new session under
//! the same member id. Which run the consumer is paused for survives the
//! reconnect ([`PauseTracker`]): a replica that saw a run start stays
//! paused until it sees the run over, or until the run's deadline while it
//! is out of the cluster.
//!
//! How a session is opened and who takes part in it are the process's
//! ([`Sessions`]): the binary builds coordinators from its command line.

use super::backoff::Backoff;
use super::member::ClusterMember;
use super::pause::{PauseOnlyMember, PauseTracker};
use super::slot::CoordinatorSlot;
use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use recon_coord::Coordinator;
use recon_core::ports::ConsumerGate;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// First pause between connection attempts; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A replica's part in a session's runs.
pub enum Participant {
    /// Pauses, acknowledges, may lead and reconciles units.
    Reconciling(Arc<ClusterMember>),
    /// Pauses and acknowledges only (no source configured, or none that
    /// can be built now).
    PauseOnly(PauseOnlyMember),
}

impl Participant {
    /// Takes part until `cancel` fires or the cluster session is lost.
    pub async fn run(self, cancel: CancellationToken) {
        match self {
            Self::Reconciling(member) => member.run(cancel).await,
            Self::PauseOnly(member) => member.run(cancel).await,
        }
    }
}

/// How the process opens cluster sessions and who takes part in them.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Opens a session; `None` when it cannot now (the implementation logs
    /// why): [`Membership`] tries again after a backoff.
    async fn connect(&self, shutdown: &CancellationToken) -> Option<Arc<dyn Coordinator>>;

    /// Who takes part in runs on `coordinator`'s session; `None` for a
    /// replica that takes no part (a single instance without a source).
    fn participant(&self, coordinator: Arc<dyn Coordinator>) -> Option<Participant>;
}

/// A replica's membership: session after session until shutdown.
pub struct Membership<S> {
    sessions: S,
    member_id: String,
    gate: Arc<dyn ConsumerGate>,
    pause: Arc<PauseTracker>,
    max_pause: Duration,
    slot: CoordinatorSlot,
    pause_deadline_resumes: Counter,
}

impl<S: Sessions> Membership<S> {
    /// The membership of `member_id`: `gate` and `pause` are its consumer's,
    /// `max_pause` the runs' limit (a replica out of the cluster resumes
    /// at a run's deadline, counted in `pause_deadline_resumes`), `slot`
    /// where the current session's coordinator is published.
    pub fn new(
        sessions: S,
        member_id: String,
        gate: Arc<dyn ConsumerGate>,
        pause: Arc<PauseTracker>,
        max_pause: Duration,
        slot: CoordinatorSlot,
        pause_deadline_resumes: Counter,
    ) -> Self {
        Self {
            sessions,
            member_id,
            gate,
            pause,
            max_pause,
            slot,
            pause_deadline_resumes,
        }
    }

    /// Takes part in runs session after session until `shutdown` fires,
    /// starting with `first` if the replica connected at startup.
    pub async fn keep(self, first: Option<Arc<dyn Coordinator>>, shutdown: CancellationToken) {
        let mut next = first;
        loop {
            let coordinator = match next.take() {
                Some(coordinator) => coordinator,
                None => match self.connect(&shutdown).await {
                    Some(coordinator) => coordinator,
                    None => return,
                },
            };
            info!(member = %self.member_id, "joined the cluster");
            self.slot.set(Some(coordinator.clone()));
            self.take_part(coordinator, &shutdown).await;
            self.slot.set(None);
            if shutdown.is_cancelled() {
                return;
            }
            warn!(
                member = %self.member_id,
                paused_for = self.pause.paused_for().as_deref().unwrap_or(""),
                "cluster session lost; out of reconciliation, reconnecting"
            );
        }
    }

    /// Connects, retrying with backoff until it works; `None` once
    /// `shutdown` fires.
    async fn connect(&self, shutdown: &CancellationToken) -> Option<Arc<dyn Coordinator>> {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            if let Some(coordinator) = self.sessions.connect(shutdown).await {
                return Some(coordinator);
            }
            self.resume_if_overdue().await;
            if !backoff.wait(shutdown).await {
                return None;
            }
        }
    }

    /// Out of the cluster, the consumer stays paused for the run it saw
    /// start only until that run's deadline (see
    /// [`PauseTracker::resume_if_overdue`]); counted.
    async fn resume_if_overdue(&self) {
        match self
            .pause
            .resume_if_overdue(&*self.gate, self.max_pause)
            .await
        {
            Ok(true) => {
                self.pause_deadline_resumes.inc();
            }
            Ok(false) => {}
            Err(error) => {
                warn!(error = %error, "could not resume the consumer at the run's deadline")
            }
        }
    }

    /// One session: until it is lost or `shutdown` fires.
    async fn take_part(&self, coordinator: Arc<dyn Coordinator>, shutdown: &CancellationToken) {
        let stop = coordinator.session_lost().child_token();
        let stopped = async {
            tokio::select! {
                _ = shutdown.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        };
        match self.sessions.participant(coordinator) {
            Some(participant) => {
                tokio::join!(participant.run(stop.clone()), stopped);
            }
            None => stopped.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::InProcessHub;
    use crate::fakes::FakeGate;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    /// Sessions on an in-process hub whose every other attempt fails.
    struct Flaky {
        hub: InProcessHub,
        attempts: Arc<AtomicU32>,
    }

    #[async_trait]
    impl Sessions for Flaky {
        async fn connect(&self, _shutdown: &CancellationToken) -> Option<Arc<dyn Coordinator>> {
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            attempt
                .is_multiple_of(2)
                .then(|| Arc::new(self.hub.join("m1")) as Arc<dyn Coordinator>)
        }

        fn participant(&self, _coordinator: Arc<dyn Coordinator>) -> Option<Participant> {
            None
        }
    }

    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_lost_session_is_followed_by_a_new_one_until_shutdown() {
        let hub = InProcessHub::new(1);
        let attempts = Arc::new(AtomicU32::new(0));
        let slot = CoordinatorSlot::default();
        let membership = Membership::new(
            Flaky {
                hub: hub.clone(),
                attempts: attempts.clone(),
            },
            "m1".to_owned(),
            Arc::new(FakeGate::default()),
            Arc::new(PauseTracker::new()),
            Duration::from_secs(60),
            slot.clone(),
            Counter::default(),
        );
        let shutdown = CancellationToken::new();
        let kept = tokio::spawn(membership.keep(None, shutdown.clone()));
        // The first attempt fails; the second joins and is published.
        until("the first session", || slot.get().is_some()).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        let first = slot.get().map(|coordinator| coordinator.session_lost());
        hub.expel("m1");
        until("a second session", || {
            slot.get().is_some() && attempts.load(Ordering::SeqCst) >= 4
        })
        .await;
        let second = slot.get().map(|coordinator| coordinator.session_lost());
        assert!(first.is_some_and(|session| session.is_cancelled()));
        assert!(second.is_some_and(|session| !session.is_cancelled()));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), kept)
            .await
            .expect("the membership ends on shutdown")
            .expect("it did not panic");
    }
}
