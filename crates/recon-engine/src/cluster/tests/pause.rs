//! The pause never outlives its run: a replica that joined paused for a run
//! that ended before its member first looked resumes, and a member that
//! cannot reconcile acknowledges (pause only) and is handed no units.

use super::*;

/// A fake gate that is paused from the start, like a consumer started with
/// `start_paused`.
fn paused_gate() -> Arc<FakeGate> {
    let gate = Arc::new(FakeGate::default());
    gate.paused.store(true, Ordering::SeqCst);
    gate
}

async fn wait_resumed(gate: &FakeGate, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while gate.paused.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "{what} stayed paused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_paused_for_a_run_that_ended_before_it_looked_resumes() {
    let truth = world();
    let source = Arc::new(FakeSource::new(truth.clone(), Version::new(1, 999)));
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let first = start(
        &hub,
        "m1",
        &source,
        &store,
        Duration::from_secs(60),
        &cancel,
    );
    first
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&first.coordinator).await;
    // The replica read the current run at startup and started its consumer
    // paused for it; the run ends before its member first polls.
    let tracker = Arc::new(PauseTracker::paused_for_run(
        run.clone(),
        crate::cluster::now_unix_ms(),
    ));
    barrier(&first.coordinator, &run).await;
    let late = hub.join("m2");
    let gate = paused_gate();
    let member = Arc::new(
        ClusterMember::new(
            Arc::new(late.clone()),
            Reconciler::new(source.clone(), store.clone()),
            gate.clone(),
            settings(Duration::from_secs(60)),
        )
        .with_pause_tracker(tracker.clone()),
    );
    let task = tokio::spawn(member.run(cancel.clone()));
    wait_resumed(&gate, "the replica that joined during the finished run").await;
    assert_eq!(tracker.paused_for(), None);
    cancel.cancel();
    task.await.expect("member");
    first.task.await.expect("member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_only_member_acknowledges_and_is_handed_no_units() {
    let truth = world();
    let source = Arc::new(FakeSource::new(truth.clone(), Version::new(1, 999)));
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let reconcilers: Vec<Member> = ["m1", "m2"]
        .iter()
        .map(|id| start(&hub, id, &source, &store, Duration::from_secs(60), &cancel))
        .collect();
    let pause_only = hub.join_as("p1", MemberRole::PauseOnly);
    let gate = Arc::new(FakeGate::default());
    let follower = PauseOnlyMember::new(
        Arc::new(pause_only.clone()),
        gate.clone(),
        Duration::from_millis(5),
        Duration::from_secs(60),
        Arc::new(PauseTracker::new()),
    );
    let follower_task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { follower.run(cancel).await })
    };
    reconcilers[0]
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&reconcilers[0].coordinator).await;
    let barrier = barrier(&reconcilers[0].coordinator, &run).await;
    assert_eq!(barrier.status, RunStatus::Completed, "{barrier:?}");
    assert!(
        gate.pauses.load(Ordering::SeqCst) >= 1,
        "the pause-only member never paused"
    );
    wait_resumed(&gate, "the pause-only member").await;
    resumed(&reconcilers.iter().collect::<Vec<_>>()).await;
    assert_eq!(store.snapshot(), truth);
    let assignments = pause_only.assignments(&run).await.expect("assignments");
    assert!(
        !assignments.is_empty() && assignments.values().all(|member| member != "p1"),
        "units handed to the pause-only member: {assignments:?}"
    );
    let (leader, _) = pause_only
        .leader()
        .await
        .expect("leader")
        .unwrap_or_default();
    assert_ne!(leader, "p1");
    cancel.cancel();
    follower_task.await.expect("pause-only member");
    for member in reconcilers {
        member.task.await.expect("member");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_blocked_raising_the_fence_still_aborts_the_run_at_max_pause() {
    let truth = world();
    // Slow pages keep the run working until the leader is taken away.
    let mut slow = FakeSource::new(truth.clone(), Version::new(1, 999));
    slow.page_delay = Duration::from_millis(50);
    let source = Arc::new(slow);
    let store = Arc::new(FakeStore::default());
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    let max_pause = Duration::from_millis(1_500);
    let members: Vec<Member> = ["m1", "m2"]
        .iter()
        .map(|id| start(&hub, id, &source, &store, max_pause, &cancel))
        .collect();
    members[0]
        .coordinator
        .request_run(&request())
        .await
        .expect("request");
    let run = run_id(&members[0].coordinator).await;
    wait_for_plan(&members[0].coordinator, &run).await;
    // The next leader's fence raise waits on a lock that is never released.
    store.fence_stuck.store(true, Ordering::SeqCst);
    let (leader, _) = members[0]
        .coordinator
        .leader()
        .await
        .expect("leader")
        .expect("a leader");
    hub.expel(&leader);
    let survivor = members
        .iter()
        .find(|member| member.coordinator.member_id() != leader)
        .expect("a survivor");
    let started = Instant::now();
    let barrier = barrier(&survivor.coordinator, &run).await;
    assert_eq!(barrier.status, RunStatus::Aborted, "{barrier:?}");
    assert!(
        barrier
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("max_pause")),
        "{barrier:?}"
    );
    assert!(
        started.elapsed() < max_pause + Duration::from_secs(2),
        "aborted only after {:?}",
        started.elapsed()
    );
    resumed(&[survivor]).await;
    cancel.cancel();
    for member in members {
        member.task.await.expect("member");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_without_a_leader_is_ended_by_a_pause_only_member() {
    let hub = InProcessHub::new(10);
    let cancel = CancellationToken::new();
    // A leader started a run long ago and is gone: no reconciler is left.
    let gone = hub.join("m1");
    let leadership = gone
        .campaign(&CancellationToken::new())
        .await
        .expect("campaign");
    let max_pause = Duration::from_secs(60);
    let old = recon_coord::now_unix_ms() - (max_pause + ORPHAN_GRACE).as_millis() as u64 - 1;
    let run = RunState {
        run_id: "r-orphan".into(),
        request: request(),
        phase: RunPhase::Working,
        epoch: 1,
        started_unix_ms: old,
        traceparent: None,
    };
    gone.put_run(&leadership, &run).await.expect("put run");
    let pause_only = hub.join_as("p1", MemberRole::PauseOnly);
    let gate = paused_gate();
    let store = Arc::new(crate::fakes::FakeStore::default());
    let follower = PauseOnlyMember::new(
        Arc::new(pause_only.clone()),
        gate.clone(),
        Duration::from_millis(5),
        max_pause,
        Arc::new(PauseTracker::paused_for_run(
            "r-orphan",
            run.started_unix_ms,
        )),
    )
    .with_history(store.clone());
    let follower_task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { follower.run(cancel).await })
    };
    // While the leader is there, nobody else ends the run.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        gate.paused.load(Ordering::SeqCst),
        "resumed under a live leader"
    );
    assert!(pause_only.current_run().await.expect("current").is_some());
    hub.expel("m1");
    wait_resumed(&gate, "the pause-only member of a leaderless run").await;
    let barrier = pause_only
        .barrier("r-orphan")
        .await
        .expect("barrier")
        .expect("a barrier");
    assert_eq!(barrier.status, RunStatus::Aborted);
    let reason = barrier.reason.unwrap_or_default();
    assert!(
        reason.contains("no leader") && reason.contains("p1"),
        "{reason}"
    );
    // Closed in the store: the run's epoch (1) is fenced off.
    assert_eq!(
        store
            .fences
            .lock()
            .expect("lock")
            .get(recon_core::GLOBAL_SCOPE),
        Some(&2),
        "the orphaned run was not closed in the store"
    );
    cancel.cancel();
    follower_task.await.expect("follower");
}
