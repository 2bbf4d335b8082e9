//! The leader's half of [`ClusterMember`]: campaign, acquire the store
//! epoch, start a requested run or adopt the current one, fire the
//! schedule and the generation watch, resign. Each step of a run is the run
//! machine executed by `driver.rs`.

use super::backoff::Backoff;
use super::member::ClusterMember;
use super::trace;
use recon_coord::Leadership;
use recon_coord::{RunPhase, RunRequest, RunState, now_unix_ms};
use recon_core::ports::{FailureKind, PortError};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, error, field, info, info_span, warn};

/// The trigger mark of the schedule: the last slot fired.
const SCHEDULE_TRIGGER: &str = "schedule";

/// The trigger mark of the source's generation: the last one seen.
pub(super) const GENERATION_TRIGGER: &str = "generation";

/// The longest wait between campaigns after leadership could not be used.
const MAX_CAMPAIGN_BACKOFF: Duration = Duration::from_secs(30);

/// Longest wait for one store call that a bounded pause depends on (an
/// epoch acquisition, closing an aborted run); the store's own lock timeout
/// normally ends such a call sooner.
const STORE_ATTEMPT_DEADLINE: Duration = Duration::from_secs(10);

/// How acquiring a store epoch ended.
enum Acquired {
    /// The leadership holds a store epoch.
    Yes,
    /// The store refused: a newer election acquired one.
    Refused(PortError),
    /// Leadership or the member ended first.
    Ended,
}

impl ClusterMember {
    pub(super) async fn lead_forever(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.poll_interval, MAX_CAMPAIGN_BACKOFF);
        while !stop.is_cancelled() {
            let leadership = match self.coordinator.campaign(&stop).await {
                Ok(leadership) => leadership,
                Err(error) => {
                    if !stop.is_cancelled() {
                        warn!(error = %error, "campaign failed, retrying");
                        backoff.wait(&stop).await;
                    }
                    continue;
                }
            };
            let span = info_span!(
                "coord.lead",
                member = self.coordinator.member_id(),
                epoch = leadership.epoch
            );
            if self.lead(leadership, &stop).instrument(span).await {
                backoff.reset();
            } else {
                // The store refused or could not give an epoch: campaigning
                // again at once would spin (and fail the same way).
                backoff.wait(&stop).await;
            }
        }
    }

    /// Leads until the current run's barrier is written (then resigns) or
    /// leadership is lost; `false` if it could not acquire a store epoch.
    async fn lead(&self, mut leadership: Leadership, stop: &CancellationToken) -> bool {
        info!("elected leader");
        match self
            .acquire_store_epoch_retrying(&mut leadership, stop)
            .await
        {
            Acquired::Yes => {
                info!(
                    store_epoch = leadership.store_epoch,
                    incarnation = leadership.incarnation,
                    "store epoch acquired"
                );
                self.metrics.leadership_won(leadership.store_epoch);
            }
            Acquired::Refused(error) => {
                error!(error = %error, "the store refused this election an epoch; giving leadership up");
                let _ = self.coordinator.resign(&leadership).await;
                return false;
            }
            Acquired::Ended => {
                info!("leadership ended before a store epoch was acquired");
                return true;
            }
        }
        let led = self.lead_with_epoch(&leadership, stop).await;
        self.metrics.leadership_ended();
        // A run left unfinished ends its span here (a next leader continues
        // the trace).
        lock(&self.run_span).take();
        led
    }

    /// [`lead`](Self::lead) once the leadership holds a store epoch.
    async fn lead_with_epoch(&self, leadership: &Leadership, stop: &CancellationToken) -> bool {
        while !leadership.lost.is_cancelled() && !stop.is_cancelled() {
            // Every step has a deadline: whatever it waits on (a row lock of
            // a frozen member, a stalled connection), the run is still
            // aborted at max_pause by the next step.
            let step = tokio::time::timeout(self.step_deadline(), self.lead_step(leadership));
            let stepped = tokio::select! {
                stepped = step => stepped,
                _ = leadership.lost.cancelled() => break,
                _ = stop.cancelled() => break,
            };
            match stepped {
                Ok(Ok(true)) => {
                    self.counters.runs_led.fetch_add(1, Ordering::SeqCst);
                    let _ = self.coordinator.resign(leadership).await;
                    return true;
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => warn!(error = %error, "leader step failed, retrying"),
                Err(_elapsed) => warn!(
                    deadline_ms = self.step_deadline().as_millis() as u64,
                    "leader step exceeded its deadline, retrying"
                ),
            }
            if !self.pause_between_steps(leadership, stop).await {
                break;
            }
        }
        info!("leadership ended");
        true
    }

    /// Gets this leadership's epoch from the store (epochs come from the
    /// store, never from a clock), presenting its election so that an older
    /// election can never acquire after a newer one. The first leader of a
    /// coordination state (a new or rebuilt etcd) gives it a fresh
    /// incarnation first.
    ///
    /// A refusal means the store gave epochs to a later claim: another
    /// coordination state (a single instance, another etcd or ZooKeeper)
    /// or a later election of this one before it was restored from a
    /// snapshot. This state's current leader then renews its incarnation
    /// (a leader-guarded write, which a deposed leader cannot make: a zombie
    /// stays refused) and claims again, above every claim seen.
    async fn acquire_store_epoch(&self, leadership: &mut Leadership) -> Result<(), PortError> {
        let store = &self.reconciler.store;
        leadership.incarnation = match self.coordinator.incarnation().await? {
            Some(incarnation) => incarnation,
            None => {
                let proposed = store.next_incarnation().await?;
                let incarnation = self.coordinator.init_incarnation(proposed).await?;
                info!(incarnation, "coordination state incarnated");
                incarnation
            }
        };
        match store.acquire_epoch(Some(leadership.claim())).await {
            Ok(epoch) => leadership.store_epoch = epoch,
            Err(refusal) if refusal.kind == FailureKind::StaleEpoch => {
                let renewed = store.next_incarnation().await?;
                self.coordinator
                    .renew_incarnation(leadership, renewed)
                    .await?;
                warn!(
                    refusal = %refusal,
                    old = leadership.incarnation,
                    renewed,
                    "the store holds a later election; coordination state re-incarnated"
                );
                leadership.incarnation = renewed;
                leadership.store_epoch = store.acquire_epoch(Some(leadership.claim())).await?;
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Acquires this leadership's store epoch (which raises the store's
    /// global fence), each attempt bounded, until it is acquired, refused
    /// (an election newer than this one holds the store), or the leadership
    /// ends. Meanwhile a run past `max_pause` is aborted: an acquisition
    /// blocked on a frozen member's row lock must not hold every consumer
    /// paused.
    async fn acquire_store_epoch_retrying(
        &self,
        leadership: &mut Leadership,
        stop: &CancellationToken,
    ) -> Acquired {
        let attempt_deadline = self.store_attempt_deadline();
        while !leadership.lost.is_cancelled() && !stop.is_cancelled() {
            let lost = leadership.lost.clone();
            let acquire =
                tokio::time::timeout(attempt_deadline, self.acquire_store_epoch(leadership));
            let acquired = tokio::select! {
                acquired = acquire => acquired,
                _ = lost.cancelled() => break,
                _ = stop.cancelled() => break,
            };
            match acquired {
                Ok(Ok(())) => return Acquired::Yes,
                Ok(Err(error)) if error.kind == FailureKind::StaleEpoch => {
                    return Acquired::Refused(error);
                }
                Ok(Err(error)) => {
                    error!(error = %error, "could not acquire a store epoch, retrying");
                }
                Err(_elapsed) => {
                    error!(
                        deadline_ms = attempt_deadline.as_millis() as u64,
                        "acquiring a store epoch exceeded its deadline, retrying"
                    );
                }
            }
            let overdue =
                tokio::time::timeout(self.step_deadline(), self.abort_if_overdue(leadership));
            match overdue.await {
                Ok(Ok(true)) => info!("aborted the run past max_pause while the store was blocked"),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => warn!(error = %error, "could not check the run for max_pause"),
                Err(_elapsed) => warn!("checking the run for max_pause exceeded the step deadline"),
            }
            if !self.pause_between_steps(leadership, stop).await {
                break;
            }
        }
        Acquired::Ended
    }

    /// Waits one poll interval; `false` if leadership ended meanwhile.
    async fn pause_between_steps(&self, leadership: &Leadership, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = leadership.lost.cancelled() => false,
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(self.settings.poll_interval) => true,
        }
    }

    /// The deadline of one leader step: what is left of `max_pause` is
    /// checked at the start of every step, so no step may outlast it.
    pub(super) fn step_deadline(&self) -> Duration {
        self.settings.max_pause.max(self.settings.poll_interval)
    }

    /// The bound of one store call that a bounded pause depends on: half a
    /// step, so that a step that closes a run still writes its barrier
    /// within its own deadline.
    pub(super) fn store_attempt_deadline(&self) -> Duration {
        STORE_ATTEMPT_DEADLINE.min(self.step_deadline() / 2)
    }

    /// Aborts the current run if it is past `max_pause`; `true` if it did.
    async fn abort_if_overdue(&self, leadership: &Leadership) -> Result<bool, PortError> {
        let Some(run) = self.coordinator.current_run().await? else {
            return Ok(false);
        };
        if self.remaining_pause(&run).is_some() {
            return Ok(false);
        }
        self.abort_for_max_pause(leadership, &run).await
    }

    /// One step of the leader's state machine; `true` once a barrier is written.
    async fn lead_step(&self, leadership: &Leadership) -> Result<bool, PortError> {
        let Some(mut run) = self.coordinator.current_run().await? else {
            if let Some(request) = self.coordinator.pending_request().await? {
                if self.consuming_since_last_run().await? {
                    return Ok(false);
                }
                self.start_run(leadership, request).await?;
            } else {
                self.fire_schedule(leadership).await?;
                self.watch_generation(leadership).await?;
            }
            return Ok(false);
        };
        if run.epoch != leadership.store_epoch {
            info!(run = %run.run_id, previous_epoch = run.epoch, "adopting the run of a previous leader");
            run.epoch = leadership.store_epoch;
            self.coordinator.put_run(leadership, &run).await?;
        }
        let span = self.run_span_of(&run);
        let ended = self.run_step(leadership, &run).instrument(span).await;
        if matches!(ended, Ok(true)) {
            // The barrier is written: the run's span ends here.
            lock(&self.run_span).take();
        }
        ended
    }

    /// Requests a run if a slot of the schedule is due and no leader fired
    /// it yet.
    async fn fire_schedule(&self, leadership: &Leadership) -> Result<(), PortError> {
        let Some(schedule) = &self.settings.schedule else {
            return Ok(());
        };
        let last = self.coordinator.trigger_mark(SCHEDULE_TRIGGER).await?;
        let Some(slot) = schedule.due_slot(now_unix_ms(), last, self.started_ms) else {
            return Ok(());
        };
        if !self
            .coordinator
            .advance_trigger(leadership, SCHEDULE_TRIGGER, slot)
            .await?
        {
            return Ok(());
        }
        info!(schedule = %schedule, slot, "schedule slot due: requesting a run");
        let request = RunRequest {
            requested_by: format!("schedule {schedule} (slot {slot})"),
            requested_unix_ms: now_unix_ms(),
            tenants: Vec::new(),
            dry_run: false,
            allow_mass_delete: false,
            pause: self.settings.template.pause,
            run_id: Some(RunRequest::new_run_id(
                slot,
                u32::try_from(slot % 1_000_003).unwrap_or(0),
            )),
        };
        self.coordinator.request_run(&request).await?;
        Ok(())
    }

    /// Requests a run when the source's generation grew since the last one
    /// seen (the monolith was restored from a backup); the first look only
    /// records it. Looks at most once per `watch_generation` interval.
    async fn watch_generation(&self, leadership: &Leadership) -> Result<(), PortError> {
        let Some(interval) = self.settings.watch_generation else {
            return Ok(());
        };
        {
            let mut polled = lock(&self.generation_polled);
            if polled.is_some_and(|at| at.elapsed() < interval) {
                return Ok(());
            }
            *polled = Some(std::time::Instant::now());
        }
        let generation = self.reconciler.source_generation().await?;
        // The mark is the generation the replicas were last reconciled to
        // (or first saw): it moves when a run covering a newer one ends
        // (see `finish`), not when the run is asked for — a request that
        // failed or a run that aborted is asked for again at the next look.
        let Some(seen) = self.coordinator.trigger_mark(GENERATION_TRIGGER).await? else {
            self.coordinator
                .advance_trigger(leadership, GENERATION_TRIGGER, generation)
                .await?;
            info!(generation, "source generation recorded");
            return Ok(());
        };
        if generation <= seen {
            return Ok(());
        }
        warn!(
            from = seen,
            to = generation,
            "the source's generation is newer than the one last reconciled to (a restore upstream): requesting a run"
        );
        let request = RunRequest {
            requested_by: format!("source generation {seen} → {generation}"),
            requested_unix_ms: now_unix_ms(),
            tenants: Vec::new(),
            dry_run: false,
            allow_mass_delete: false,
            pause: self.settings.template.pause,
            run_id: Some(RunRequest::new_run_id(
                now_unix_ms(),
                u32::try_from(generation % 1_000_003).unwrap_or(0),
            )),
        };
        self.coordinator.request_run(&request).await.map(|_| ())
    }

    /// What is left of `max_pause` for `run`; `None` once it is exceeded.
    pub(super) fn remaining_pause(&self, run: &RunState) -> Option<Duration> {
        let age = Duration::from_millis(now_unix_ms().saturating_sub(run.started_unix_ms));
        self.settings
            .max_pause
            .checked_sub(age)
            .filter(|left| !left.is_zero())
    }

    /// Whether consumers are still in their window after the last run
    /// (`min_consumption_window` after its barrier, by the barrier's
    /// clock): a pending request waits until the window is over.
    async fn consuming_since_last_run(&self) -> Result<bool, PortError> {
        let window = self.settings.min_consumption_window;
        if window.is_zero() {
            return Ok(false);
        }
        let last = self.coordinator.recent_barriers(1).await?;
        let Some(ended) = last
            .first()
            .and_then(|barrier| barrier.summary.as_ref())
            .map(|summary| summary.ended_unix_ms)
        else {
            return Ok(false);
        };
        let open_until =
            ended.saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        let consuming = now_unix_ms() < open_until;
        if consuming {
            debug!(
                resume_in_ms = open_until - now_unix_ms(),
                "the next run waits for the consumption window"
            );
        }
        Ok(consuming)
    }

    async fn start_run(
        &self,
        leadership: &Leadership,
        request: RunRequest,
    ) -> Result<(), PortError> {
        let run_id = request
            .run_id
            .clone()
            .unwrap_or_else(|| format!("run-{}-{}", now_unix_ms(), leadership.store_epoch));
        let span = run_span(&run_id, leadership.store_epoch, false);
        let run = RunState {
            run_id,
            request,
            phase: RunPhase::Pausing,
            epoch: leadership.store_epoch,
            started_unix_ms: now_unix_ms(),
            traceparent: trace::traceparent_of(&span),
        };
        info!(run = %run.run_id, "run started");
        self.coordinator.put_run(leadership, &run).await?;
        *lock(&self.run_span) = Some((run.run_id.clone(), span));
        Ok(())
    }

    /// The span of `run` on this leader: the root span it started, or a
    /// child of the run's root for a run it adopted.
    fn run_span_of(&self, run: &RunState) -> Span {
        let mut held = lock(&self.run_span);
        if let Some((run_id, span)) = held.as_ref()
            && *run_id == run.run_id
        {
            return span.clone();
        }
        let span = run_span(&run.run_id, run.epoch, true);
        trace::join_run(&span, run);
        *held = Some((run.run_id.clone(), span.clone()));
        span
    }
}

impl ClusterMember {}

/// A `reconcile.run` span, a root (its parent, if any, is set from the run
/// state by [`trace::join_run`]); the figures are recorded at its end.
fn run_span(run_id: &str, epoch: u64, adopted: bool) -> Span {
    tracing::info_span!(
        parent: None,
        "reconcile.run",
        run = %run_id,
        epoch,
        adopted,
        status = field::Empty,
        units = field::Empty,
        compared = field::Empty,
        missing = field::Empty,
        phantom = field::Empty,
        changed = field::Empty,
        written = field::Empty,
        withheld = field::Empty,
        bytes = field::Empty,
    )
}

/// The lock of a span slot; a panic elsewhere never poisons tracing.
pub(super) fn lock<T>(slot: &Mutex<T>) -> MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
