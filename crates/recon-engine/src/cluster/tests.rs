//! Cluster reconciliation with in-process members over the in-process hub
//! and the in-memory fakes: units spread across members, leader loss, and
//! `max_pause`.

use super::*;

mod pause;
use crate::fakes::{FakeGate, FakeSource, FakeStore, Rows, insert};
use crate::{ReconcileOptions, Reconciler};

use recon_core::{Kind, PausePolicy, Record, Row, RunStatus, Tenant, User, UserStatus, Version};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn world() -> Rows {
    let mut rows = Rows::new();
    for (tenant, users) in [
        ("big", 240u64),
        ("small-a", 5),
        ("small-b", 8),
        ("small-c", 3),
    ] {
        insert(
            &mut rows,
            Row {
                tenant_id: tenant.into(),
                record: Record::from(Tenant {
                    id: tenant.into(),
                    name: tenant.into(),
                }),
                version: Version::new(1, 1),
            },
        );
        for index in 0..users {
            // UUID-like ids spread over the key space, like the monolith's.
            let id = format!(
                "{:08x}-0000-4000-8000-000000000000",
                (index * 2_654_435_761) as u32
            );
            insert(
                &mut rows,
                Row {
                    tenant_id: tenant.into(),
                    record: Record::from(User {
                        id,
                        email: "e@x".into(),
                        display_name: "n".into(),
                        status: UserStatus::Active,
                    }),
                    version: Version::new(1, index + 2),
                },
            );
        }
    }
    rows
}

struct Member {
    coordinator: InProcessCoordinator,
    gate: Arc<FakeGate>,
    counters: Arc<MemberCounters>,
    task: tokio::task::JoinHandle<()>,
}

fn settings(max_pause: Duration) -> ClusterSettings {
    let mut template = ReconcileOptions::new(0);
    template.page_size = 16;
    template.replica_page_size = 16;
    ClusterSettings {
        poll_interval: Duration::from_millis(5),
        max_pause,
        min_unit_rows: 20,
        template,
        purge_finished_runs: false,
        schedule: None,
        watch_generation: None,
        min_consumption_window: Duration::ZERO,
    }
}

fn start(
    hub: &InProcessHub,
    id: &str,
    source: &Arc<FakeSource>,
    store: &Arc<FakeStore>,
    max_pause: Duration,
    cancel: &CancellationToken,
) -> Member {
    start_with(hub, id, source, store, settings(max_pause), cancel)
}

fn start_with(
    hub: &InProcessHub,
    id: &str,
    source: &Arc<FakeSource>,
    store: &Arc<FakeStore>,
    settings: ClusterSettings,
    cancel: &CancellationToken,
) -> Member {
    let coordinator = hub.join(id);
    let gate = Arc::new(FakeGate::default());
    let reconciler = Reconciler::new(source.clone(), store.clone());
    let member = Arc::new(ClusterMember::new(
        Arc::new(coordinator.clone()),
        reconciler,
        gate.clone(),
        settings,
    ));
    let counters = member.counters();
    let task = tokio::spawn(member.run(cancel.clone()));
    Member {
        coordinator,
        gate,
        counters,
        task,
    }
}

fn request() -> RunRequest {
    RunRequest {
        requested_by: "test".into(),
        requested_unix_ms: 0,
        tenants: Vec::new(),
        dry_run: false,
        allow_mass_delete: true,
        run_id: None,
        pause: recon_core::PausePolicy::Always,
    }
}

/// Waits for a run to start and returns its id.
async fn run_id(coordinator: &InProcessCoordinator) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(run) = coordinator.current_run().await.expect("current") {
            return run.run_id;
        }
        assert!(Instant::now() < deadline, "no run started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for the run's record in the store's history.
async fn recorded_run(store: &FakeStore, run_id: &str) -> recon_core::RunRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = store
            .runs
            .lock()
            .expect("lock")
            .iter()
            .find(|record| record.run_id == run_id)
            .cloned();
        if let Some(record) = found {
            return record;
        }
        assert!(Instant::now() < deadline, "run {run_id} not in the history");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for_plan(coordinator: &InProcessCoordinator, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while coordinator.plan(run_id).await.expect("plan").is_none() {
        assert!(Instant::now() < deadline, "no plan");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn barrier(coordinator: &InProcessCoordinator, run_id: &str) -> Barrier {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(barrier) = coordinator.barrier(run_id).await.expect("barrier") {
            return barrier;
        }
        assert!(Instant::now() < deadline, "no barrier");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn resumed(members: &[&Member]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while members
        .iter()
        .any(|member| member.gate.paused.load(Ordering::SeqCst))
    {
        assert!(
            Instant::now() < deadline,
            "a member did not resume after the barrier"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A run whose pause policy is `never` leaves every consumer running: no
/// member pauses or acknowledges, the units are still spread and done, the
/// replica equals the source, the floor is raised before any unit writes
/// (and again at completion), and the record says how the run ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_never_pauses_reconciles_with_every_consumer_running() {
    let truth = world();
    let source = Arc::new(FakeSource::new(truth.clone(), Version::new(1, 999)));
    let (store, unguarded_writes) =
        FakeStore::counting_writes_below_floor(Rows::new(), recon_core::GLOBAL_SCOPE, 1);
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let members: Vec<Member> = ["m1", "m2"]
        .iter()
        .map(|id| start(&hub, id, &source, &store, Duration::from_secs(60), &cancel))
        .collect();
    let mut never = request();
    never.pause = PausePolicy::Never;
    members[1]
        .coordinator
        .request_run(&never)
        .await
        .expect("request");
    let run = run_id(&members[0].coordinator).await;
    let barrier = barrier(&members[0].coordinator, &run).await;
    assert_eq!(barrier.status, RunStatus::Completed);
    assert_eq!(store.snapshot(), truth);
    for member in &members {
        assert_eq!(
            member.gate.pauses.load(Ordering::SeqCst),
            0,
            "a consumer was paused"
        );
    }
    let acks = members[0].coordinator.pause_acks(&run).await.expect("acks");
    assert!(acks.is_empty(), "acknowledged: {acks:?}");
    let completed: u64 = members
        .iter()
        .map(|member| member.counters.units_completed.load(Ordering::SeqCst))
        .sum();
    assert!(completed > 0, "no unit was done");
    let record = recorded_run(&store, &run).await;
    assert_eq!(record.pause, PausePolicy::Never);
    assert_eq!(
        unguarded_writes.load(Ordering::SeqCst),
        0,
        "a unit wrote before the floor was raised"
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_the_units_and_converge() {
    let truth = world();
    let source = Arc::new(FakeSource::new(truth.clone(), Version::new(1, 999)));
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let members: Vec<Member> = ["m1", "m2", "m3"]
        .iter()
        .map(|id| start(&hub, id, &source, &store, Duration::from_secs(60), &cancel))
        .collect();
    members[1]
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&members[0].coordinator).await;
    let barrier = barrier(&members[0].coordinator, &run).await;
    assert_eq!(barrier.status, RunStatus::Completed);
    resumed(&members.iter().collect::<Vec<_>>()).await;
    assert_eq!(store.snapshot(), truth);
    let plan = members[0]
        .coordinator
        .plan(&run)
        .await
        .expect("plan")
        .expect("a plan");
    assert!(
        plan.units.iter().any(|unit| unit.kind == Some(Kind::USER)),
        "the big tenant was not split"
    );
    let completed: Vec<u64> = members
        .iter()
        .map(|member| member.counters.units_completed.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        completed.iter().sum::<u64>(),
        plan.units.len() as u64,
        "a unit was done twice or not at all: {completed:?}"
    );
    assert!(
        completed.iter().filter(|count| **count > 0).count() >= 2,
        "units were not spread: {completed:?}"
    );
    assert!(
        members
            .iter()
            .all(|member| member.gate.pauses.load(Ordering::SeqCst) >= 1)
    );
    cancel.cancel();
    for member in members {
        member.task.await.expect("member");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_compares_its_whole_tenants_with_one_request_per_run() {
    let truth = world();
    let source = Arc::new(
        FakeSource::new(truth.clone(), Version::new(1, 999))
            .with_digests(16)
            .with_all_tenant_digests(),
    );
    // An unchanged replica: every whole tenant is equal.
    let store = Arc::new(FakeStore::with(truth.clone()));
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let member = start(
        &hub,
        "m1",
        &source,
        &store,
        Duration::from_secs(60),
        &cancel,
    );
    member
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&member.coordinator).await;
    assert_eq!(
        barrier(&member.coordinator, &run).await.status,
        RunStatus::Completed
    );
    let plan = member
        .coordinator
        .plan(&run)
        .await
        .expect("plan")
        .expect("a plan");
    let whole: Vec<&str> = plan
        .units
        .iter()
        .filter(|unit| unit.kind.is_none())
        .map(|unit| unit.tenant_id.as_str())
        .collect();
    assert!(whole.len() >= 3, "small tenants are whole units: {whole:?}");
    let record = recorded_run(&store, &run).await;
    let requests: u64 = record
        .report
        .units
        .iter()
        .filter(|unit| whole.contains(&unit.tenant.as_str()))
        .map(|unit| unit.digest_requests)
        .sum();
    // One request for every tenant's digests, not one per whole tenant.
    assert_eq!(requests, 1, "{:?}", record.report.units);
    assert_eq!(store.snapshot(), truth);
    cancel.cancel();
    member.task.await.expect("member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_finishes_the_run_of_a_lost_one() {
    let truth = world();
    // Slow pages keep units in flight long after the plan is written.
    let mut slow = FakeSource::new(truth.clone(), Version::new(1, 999));
    slow.page_delay = Duration::from_millis(20);
    let source = Arc::new(slow);
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let members: Vec<Member> = ["m1", "m2", "m3"]
        .iter()
        .map(|id| start(&hub, id, &source, &store, Duration::from_secs(60), &cancel))
        .collect();
    members[0]
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&members[0].coordinator).await;
    // Wait until the plan exists, then take the leader away.
    wait_for_plan(&members[0].coordinator, &run).await;
    let (leader, _) = members[0]
        .coordinator
        .leader()
        .await
        .expect("leader")
        .expect("a leader");
    // The plan carries the store epoch of the leader that wrote it.
    let first_epoch = members[0]
        .coordinator
        .plan(&run)
        .await
        .expect("plan")
        .expect("a plan")
        .epoch;
    hub.expel(&leader);
    let survivors: Vec<&Member> = members
        .iter()
        .filter(|member| member.coordinator.member_id() != leader)
        .collect();
    let barrier = barrier(&survivors[0].coordinator, &run).await;
    assert!(
        barrier.epoch > first_epoch,
        "the barrier came from epoch {} after leader epoch {first_epoch}",
        barrier.epoch
    );
    assert_ne!(barrier.status, RunStatus::Aborted);
    resumed(&survivors).await;
    assert_eq!(store.snapshot(), truth);
    let plan = survivors[0]
        .coordinator
        .plan(&run)
        .await
        .expect("plan")
        .expect("a plan");
    let done = survivors[0].coordinator.done(&run).await.expect("done");
    assert_eq!(done.len(), plan.units.len());
    let completed: u64 = members
        .iter()
        .map(|member| member.counters.units_completed.load(Ordering::SeqCst))
        .sum();
    assert_eq!(
        completed,
        plan.units.len() as u64,
        "a unit was completed twice"
    );
    let record = recorded_run(&store, &run).await;
    assert_eq!(record.status(), RunStatus::Completed);
    assert_eq!(record.planned_units, plan.units.len() as u64);
    assert_eq!(record.requested_by, "test");
    assert_eq!(
        record.totals.missing,
        truth.values().map(|rows| rows.len() as u64).sum::<u64>()
    );
    let attributed: std::collections::BTreeSet<&str> = record.report.units[1..]
        .iter()
        .map(|unit| {
            assert!(unit.member.is_some(), "{unit:?} names no member");
            unit.unit.as_deref().expect("a unit id")
        })
        .collect();
    assert_eq!(
        attributed.len(),
        plan.units.len(),
        "every planned unit is in the history"
    );
    cancel.cancel();
    for member in members {
        member.task.await.expect("member");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_max_pause_is_aborted_and_consumers_resume() {
    let source = Arc::new(FakeSource::new(world(), Version::new(1, 999)));
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let member = start(
        &hub,
        "m1",
        &source,
        &store,
        Duration::from_millis(300),
        &cancel,
    );
    // A member that joined but never acknowledges keeps the run in `pausing`.
    let _silent = hub.join("silent");
    member
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&member.coordinator).await;
    let barrier = barrier(&member.coordinator, &run).await;
    assert_eq!(barrier.status, RunStatus::Aborted);
    assert!(
        barrier
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("max_pause")),
        "{barrier:?}"
    );
    resumed(&[&member]).await;
    assert!(
        store.snapshot().is_empty(),
        "an aborted run before the plan wrote rows"
    );
    let record = recorded_run(&store, &run).await;
    assert_eq!(record.status(), RunStatus::Aborted);
    assert_eq!(record.report.abort_reason, barrier.reason);
    assert_eq!(record.aborted_by, None);
    cancel.cancel();
    member.task.await.expect("member");
}

/// Back-to-back runs leave consumers a window between them: a run
/// requested during the previous one starts `min_consumption_window` after
/// its barrier, and the consumer is resumed meanwhile. Before, the next
/// run started at the leader's next step and consumers stayed paused
/// across both: the total pause was not bounded by `max_pause`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_runs_leave_consumers_a_window() {
    let source = Arc::new(FakeSource::new(world(), Version::new(1, 999)));
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let window = Duration::from_millis(1_500);
    let mut settings = settings(Duration::from_secs(60));
    settings.min_consumption_window = window;
    let member = start_with(&hub, "m1", &source, &store, settings, &cancel);
    member
        .coordinator
        .request_run(&request())
        .await
        .expect("first");
    let first = run_id(&member.coordinator).await;
    // The next run is asked while the first is in progress.
    let mut next = request();
    next.requested_by = "next".into();
    member.coordinator.request_run(&next).await.expect("next");
    let ended = barrier(&member.coordinator, &first)
        .await
        .summary
        .expect("summary")
        .ended_unix_ms;
    let mut resumed_between = false;
    let second = loop {
        if !member.gate.paused.load(Ordering::SeqCst) {
            resumed_between = true;
        }
        if let Some(run) = member.coordinator.current_run().await.expect("current")
            && run.run_id != first
        {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let gap = second.started_unix_ms.saturating_sub(ended);
    assert!(
        gap >= window.as_millis() as u64,
        "the next run started {gap} ms after the barrier"
    );
    assert!(
        resumed_between,
        "the consumer stayed paused between the runs"
    );
    barrier(&member.coordinator, &second.run_id).await;
    cancel.cancel();
    member.task.await.expect("member");
}

/// A restore upstream is asked for again when the run it triggered
/// aborted: the generation trigger's mark moves when a run over every
/// tenant ends, not when the run is asked for. Before, the mark moved
/// first, so an aborted run (or a failed request) was never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_triggered_run_that_aborted_is_asked_for_again() {
    let source = Arc::new(FakeSource::new(world(), Version::new(1, 999)));
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let mut settings = settings(Duration::from_millis(500));
    settings.watch_generation = Some(Duration::from_millis(20));
    let member = start_with(&hub, "m1", &source, &store, settings, &cancel);
    // A member that never acknowledges: the first triggered run aborts at
    // max_pause.
    let _silent = hub.join("silent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while member
        .coordinator
        .trigger_mark("generation")
        .await
        .expect("mark")
        != Some(1)
    {
        assert!(Instant::now() < deadline, "the generation was not recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    *source.watermark.lock().expect("lock") = Version::new(2, 1_000);
    let first = run_id(&member.coordinator).await;
    assert_eq!(
        barrier(&member.coordinator, &first).await.status,
        RunStatus::Aborted
    );
    hub.expel("silent");
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        if let Some(run) = member.coordinator.current_run().await.expect("current")
            && run.run_id != first
        {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the restore was not asked for again after its run aborted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        second.request.requested_by.contains("→ 2"),
        "{}",
        second.request.requested_by
    );
    assert_eq!(
        barrier(&member.coordinator, &second.run_id).await.status,
        RunStatus::Completed
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while member
        .coordinator
        .trigger_mark("generation")
        .await
        .expect("mark")
        != Some(2)
    {
        assert!(
            Instant::now() < deadline,
            "the mark did not move to 2 after the run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    member.task.await.expect("member");
}

/// An aborted run raises the generation floor of every tenant it
/// reconciled whole (all its planned units done) — not of the tenant it
/// left half done, and not the global one — so that old-generation events
/// still waiting in Kafka cannot overwrite what it restored. Before, an
/// aborted run raised no floor at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_run_raises_the_floors_of_the_tenants_it_finished() {
    let mut source = FakeSource::new(world(), Version::new(1, 999));
    source.page_delay = Duration::from_millis(100);
    let source = Arc::new(source);
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let member = start(
        &hub,
        "m1",
        &source,
        &store,
        Duration::from_secs(60),
        &cancel,
    );
    member
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&member.coordinator).await;
    wait_for_plan(&member.coordinator, &run).await;
    let plan = member
        .coordinator
        .plan(&run)
        .await
        .expect("plan")
        .expect("a plan");
    // Units go largest first: the big tenant is done while the small ones
    // still wait.
    let big: Vec<&UnitPlan> = plan
        .units
        .iter()
        .filter(|unit| unit.tenant_id == "big")
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = member.coordinator.done_units(&run).await.expect("done");
        if big.iter().all(|unit| done.contains(&unit.id)) {
            break;
        }
        assert!(Instant::now() < deadline, "the big tenant was not done");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let abort = AbortRequest {
        requested_by: "test".into(),
        reason: "stop now".into(),
        requested_unix_ms: 0,
    };
    member
        .coordinator
        .request_abort(&run, &abort)
        .await
        .expect("abort");
    let barrier = barrier(&member.coordinator, &run).await;
    assert_eq!(barrier.status, RunStatus::Aborted, "{barrier:?}");
    let done = member.coordinator.done_units(&run).await.expect("done");
    let whole: std::collections::BTreeSet<&str> = ["big", "small-a", "small-b", "small-c"]
        .into_iter()
        .filter(|tenant| {
            plan.units
                .iter()
                .filter(|unit| unit.tenant_id == *tenant)
                .all(|unit| done.contains(&unit.id))
        })
        .collect();
    assert!(
        whole.len() < 4,
        "every tenant was done before the abort; the test proves nothing"
    );
    let floors = store.floors.lock().expect("lock").clone();
    let raised: std::collections::BTreeSet<&str> = floors.keys().map(String::as_str).collect();
    assert_eq!(raised, whole, "floors raised: {floors:?}");
    assert!(floors.values().all(|floor| *floor == 1), "{floors:?}");
    cancel.cancel();
    member.task.await.expect("member");
}

/// An abort stops the units still running: nothing of the aborted run is
/// written after its barrier (consumers resume there). Before, a member
/// went on with its unit — and claimed its next ones — until the run's
/// deadline, writing long after the barrier. (A write in flight when the
/// unit stops lands within milliseconds; the real store's fence refuses it
/// once the leader closed the run, see `a_write_at_a_finished_runs_epoch_is_refused`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_stops_the_units_still_running() {
    let mut source = FakeSource::new(world(), Version::new(1, 999));
    source.page_delay = Duration::from_millis(100);
    let source = Arc::new(source);
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let max_pause = Duration::from_secs(60);
    let a = start(&hub, "a", &source, &store, max_pause, &cancel);
    let b = start(&hub, "b", &source, &store, max_pause, &cancel);
    a.coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&a.coordinator).await;
    wait_for_plan(&a.coordinator, &run).await;
    // The tenant list (4 rows) is written while planning; then units.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.writes.load(Ordering::SeqCst) <= 4 {
        assert!(Instant::now() < deadline, "no unit wrote");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let abort = AbortRequest {
        requested_by: "test".into(),
        reason: "stop now".into(),
        requested_unix_ms: 0,
    };
    b.coordinator
        .request_abort(&run, &abort)
        .await
        .expect("abort");
    let barrier = barrier(&a.coordinator, &run).await;
    assert_eq!(barrier.status, RunStatus::Aborted, "{barrier:?}");
    // The page a stopping unit was reading when it stopped may still land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_barrier = store.writes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        store.writes.load(Ordering::SeqCst),
        after_barrier,
        "units of the aborted run went on writing after its barrier"
    );
    cancel.cancel();
    a.task.await.expect("a");
    b.task.await.expect("b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_who_has_not_acknowledged() {
    let source = Arc::new(FakeSource::new(world(), Version::new(1, 999)));
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let member = start(
        &hub,
        "m1",
        &source,
        &store,
        Duration::from_secs(60),
        &cancel,
    );
    let _silent = hub.join("silent");
    member
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = cluster_status(&member.coordinator).await.expect("status");
        if status
            .run
            .as_ref()
            .is_some_and(|run| !run.acknowledged.is_empty())
        {
            break status;
        }
        assert!(Instant::now() < deadline, "m1 never acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(status.leader.as_deref(), Some("m1"));
    assert_eq!(status.members.len(), 2);
    let run = status.run.as_ref().expect("a run");
    assert_eq!(
        run.phase,
        RunPhase::Pausing,
        "work began without every member's acknowledgement"
    );
    assert_eq!(run.acknowledged, vec!["m1".to_owned()]);
    assert!(
        status.to_table().contains("phase Pausing"),
        "{}",
        status.to_table()
    );
    cancel.cancel();
    member.task.await.expect("member");
}
