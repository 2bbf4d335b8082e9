//! How the leader completes a cluster run: the generation floor is part of
//! it (retried; a run whose floor cannot be raised is not Completed), and a
//! restore of the source while the run is in flight aborts it. And the
//! delete guard of a split tenant's range units.

use super::*;
use crate::fakes::{FakeSource, FakeStore, Rows, insert};
use crate::tests::{tenant, user};
use crate::{ReconcileOptions, Reconciler};
use recon_core::{Kind, RunStatus, Version};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn world() -> Rows {
    let mut rows = Rows::new();
    for tenant_id in ["a", "b"] {
        insert(&mut rows, tenant(tenant_id, tenant_id, 1));
        for index in 0..5u64 {
            insert(
                &mut rows,
                user(tenant_id, &format!("u{index}"), "n", index + 2),
            );
        }
    }
    rows
}

/// Runs one cluster run with a single member and returns its barrier.
async fn one_run(source: FakeSource, store: &Arc<FakeStore>) -> Barrier {
    run_with(source, store, 1).await
}

/// Runs one cluster run with `members` members and returns its barrier.
async fn run_with(source: FakeSource, store: &Arc<FakeStore>, members: usize) -> Barrier {
    run_within(source, store, members, Duration::from_secs(60)).await
}

/// [`run_with`] with this `max_pause`.
async fn run_within(
    source: FakeSource,
    store: &Arc<FakeStore>,
    members: usize,
    max_pause: Duration,
) -> Barrier {
    let hub = InProcessHub::new(10);
    let mut template = ReconcileOptions::new(0);
    template.retry_backoff = Duration::from_millis(1);
    template.page_size = 16;
    let settings = ClusterSettings {
        poll_interval: Duration::from_millis(5),
        max_pause,
        min_unit_rows: 20,
        template,
        purge_finished_runs: false,
        schedule: None,
        watch_generation: None,
        min_consumption_window: Duration::ZERO,
    };
    let source = Arc::new(source);
    let cancel = CancellationToken::new();
    let mut tasks = Vec::with_capacity(members);
    let mut coordinators = Vec::with_capacity(members);
    for index in 0..members {
        let coordinator = hub.join(&format!("m{index}"));
        let member = Arc::new(ClusterMember::new(
            Arc::new(coordinator.clone()),
            Reconciler::new(source.clone(), store.clone()),
            Arc::new(crate::fakes::FakeGate::default()),
            settings.clone(),
        ));
        tasks.push(tokio::spawn(member.run(cancel.clone())));
        coordinators.push(coordinator);
    }
    let coordinator = &coordinators[0];
    coordinator
        .request_run(&RunRequest {
            requested_by: "test".into(),
            requested_unix_ms: 0,
            tenants: Vec::new(),
            dry_run: false,
            allow_mass_delete: false,
            run_id: None,
            pause: recon_core::PausePolicy::Always,
        })
        .await
        .expect("request");
    let deadline = Instant::now() + Duration::from_secs(20);
    let run_id = loop {
        if let Some(run) = coordinator.current_run().await.expect("current") {
            break run.run_id;
        }
        assert!(Instant::now() < deadline, "no run started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let barrier = loop {
        if let Some(barrier) = coordinator.barrier(&run_id).await.expect("barrier") {
            break barrier;
        }
        assert!(Instant::now() < deadline, "no barrier");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    cancel.cancel();
    for task in tasks {
        task.await.expect("member");
    }
    barrier
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_during_a_cluster_run_aborts_it_without_raising_the_floor() {
    let mut source = FakeSource::new(world(), Version::new(1, 100));
    source.live = Some(Box::new(|request, _rows, watermark| {
        if request.kind == Kind::USER && watermark.generation == 1 {
            *watermark = Version::new(2, 50);
        }
    }));
    let store = Arc::new(FakeStore::default());
    let barrier = one_run(source, &store).await;
    assert_eq!(barrier.status, RunStatus::Aborted, "{barrier:?}");
    assert!(
        barrier
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("restored")),
        "{barrier:?}"
    );
    assert!(
        store.floors.lock().expect("lock").is_empty(),
        "a floor was raised below the generation the run read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_run_whose_floor_cannot_be_raised_is_not_completed() {
    let store = Arc::new(FakeStore::default());
    store.fail_floors.store(true, Ordering::SeqCst);
    let barrier = one_run(FakeSource::new(world(), Version::new(1, 100)), &store).await;
    assert_ne!(barrier.status, RunStatus::Completed, "{barrier:?}");
    assert!(
        barrier
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("generation floor")),
        "{barrier:?}"
    );
    assert!(
        store.floor_attempts.load(Ordering::SeqCst) > 1,
        "not retried"
    );
}

/// A split tenant's key-range units share the tenant's limit: 240 users in
/// 12 ranges of about 20 may lose 48 in all, about 4 per range — not the
/// always-allowed 5 in every range (12 × 5 = 60 in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ranges_of_a_split_tenant_share_its_limit() {
    let mut replica = Rows::new();
    insert(&mut replica, tenant("big", "big", 1));
    for index in 0..240u64 {
        let id = format!(
            "{:08x}-0000-4000-8000-000000000000",
            (index * 2_654_435_761) as u32
        );
        insert(&mut replica, user("big", &id, "n", index + 2));
    }
    // The source lost the five lowest user ids: all in the first range.
    let mut truth = replica.clone();
    if let Some(users) = truth.get_mut(&(Kind::USER, "big".into())) {
        let lowest: Vec<_> = users.keys().take(5).cloned().collect();
        for key in lowest {
            users.remove(&key);
        }
    }
    let store = Arc::new(FakeStore::with(replica.clone()));
    let barrier = run_with(FakeSource::new(truth, Version::new(1, 999)), &store, 3).await;
    assert_eq!(
        barrier.status,
        RunStatus::CompletedWithProblems,
        "{barrier:?}"
    );
    assert_eq!(
        store.snapshot()[&(Kind::USER, "big".into())].len(),
        240,
        "a range unit deleted more than its share of the tenant's limit"
    );
}

/// A run whose units are all done and floors raised but whose closing in
/// the store outlives `max_pause` is aborted, and its barrier and history
/// carry the abort's report, not the completed report it had built.
/// (Before, the machine-driven leader kept the completed report when
/// max_pause expired while closing: a close that then succeeded wrote a
/// barrier saying "completed" for a run the leader had ended as aborted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_run_that_cannot_be_closed_in_time_is_aborted() {
    let source = FakeSource::new(world(), Version::new(1, 999));
    // The units take two of the three seconds of max_pause (their writes
    // wait), then closing the run waits longer than what is left.
    let opened_at = Instant::now() + Duration::from_secs(2);
    let store = Arc::new(FakeStore {
        write_gate: Some(Box::new(move |_| Instant::now() >= opened_at)),
        ..FakeStore::default()
    });
    *store.close_delay_after_floors.lock().expect("lock") = Some(Duration::from_secs(5));
    let barrier = run_within(source, &store, 1, Duration::from_secs(3)).await;
    assert_eq!(barrier.status, RunStatus::Aborted, "{barrier:?}");
    let reason = barrier.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("max_pause"), "{reason}");
    let runs = store.runs.lock().expect("lock").clone();
    let record = runs.last().expect("the run is in the history");
    assert_eq!(record.status(), RunStatus::Aborted);
}
