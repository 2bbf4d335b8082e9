//! The engine against a live source: one whose data changes while a run
//! reads it, as a monolith in production does.

use crate::Reconciler;
use crate::fakes::{FakeSource, FakeStore, Rows, insert};
use crate::tests::{options, tenant, user};
use recon_core::{Kind, RunStatus, UnitOutcome, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

fn users(count: u64) -> Rows {
    let mut rows = Rows::new();
    insert(&mut rows, tenant("t", "t", 1));
    for index in 0..count {
        insert(&mut rows, user("t", &format!("u{index:04}"), "n", 1));
    }
    rows
}

/// The monolith deletes users while the run reads them: every time the
/// users of tenant `t` are read from their first page, one more user is
/// gone (and the watermark moves on). Five were deleted before the run; the
/// guard allows six of the thirty. One walk sees six phantoms and deletes
/// them; a second walk would see a seventh, trip the guard half-way through
/// its deletions and leave phantoms behind.
#[tokio::test]
async fn a_source_deleting_during_the_run_neither_trips_the_guard_nor_leaves_phantoms() {
    let replica = users(30);
    let mut truth = replica.clone();
    if let Some(users) = truth.get_mut(&(Kind::USER, "t".into())) {
        users.retain(|key, _| key.first() >= "u0005");
    }
    let deleted = Arc::new(AtomicU64::new(0));
    let mut source = FakeSource::new(truth, Version::new(1, 100));
    let counter = deleted.clone();
    source.live = Some(Box::new(move |request, rows, watermark| {
        if request.kind != Kind::USER || request.after.is_some() {
            return;
        }
        let next = 10 + counter.fetch_add(1, Ordering::SeqCst);
        if let Some(users) = rows.get_mut(&(Kind::USER, "t".into())) {
            users.retain(|key, _| key.first() != format!("u{next:04}"));
        }
        watermark.sequence += 1;
    }));
    let source = Arc::new(source);
    let store = Arc::new(FakeStore::with(replica));
    let reconciler = Reconciler::new(source.clone(), store.clone());
    let report = reconciler.run(&options(), &CancellationToken::new()).await;
    let users_unit = report
        .units
        .iter()
        .find(|unit| unit.kind == Kind::USER)
        .expect("users unit");
    assert_eq!(
        users_unit.outcome,
        UnitOutcome::Done,
        "{}",
        report.to_table()
    );
    assert_eq!(report.status, RunStatus::Completed, "{}", report.to_table());
    let mut expected = source.rows.lock().expect("lock").clone();
    expected.retain(|_, keyed| !keyed.is_empty());
    assert_eq!(
        store.snapshot()[&(Kind::USER, "t".into())]
            .keys()
            .collect::<Vec<_>>(),
        expected[&(Kind::USER, "t".into())]
            .keys()
            .collect::<Vec<_>>(),
        "the replica's users differ from the source's after the run"
    );
}

/// A restore of the monolith between the tenant list and a tenant's pages:
/// the run read generation 2 but listed tenants at generation 1. It must
/// not finish with a floor of 1 (events of generation 1 that the restore
/// voided would apply) — it aborts and says why.
#[tokio::test]
async fn a_restore_during_the_run_aborts_it_without_raising_the_floor() {
    let replica = users(10);
    let mut source = FakeSource::new(replica.clone(), Version::new(1, 100));
    source.live = Some(Box::new(|request, _rows, watermark| {
        if request.kind == Kind::USER && watermark.generation == 1 {
            *watermark = Version::new(2, 50);
        }
    }));
    let store = Arc::new(FakeStore::with(replica));
    let reconciler = Reconciler::new(Arc::new(source), store.clone());
    let report = reconciler.run(&options(), &CancellationToken::new()).await;
    assert_eq!(report.status, RunStatus::Aborted, "{}", report.to_table());
    let reason = report.abort_reason.clone().unwrap_or_default();
    assert!(reason.contains("restored"), "{reason}");
    assert_eq!(report.generation_floor, None);
    assert!(
        store.floors.lock().expect("lock").is_empty(),
        "a floor was raised below the generation the run read"
    );
}

/// The floor raise is part of completing a run: retried, and when it cannot
/// be done the run is not Completed and says why.
#[tokio::test]
async fn a_floor_that_cannot_be_raised_leaves_the_run_not_completed() {
    let replica = users(10);
    let store = Arc::new(FakeStore::with(replica.clone()));
    store.fail_floors.store(true, Ordering::SeqCst);
    let reconciler = Reconciler::new(
        Arc::new(FakeSource::new(replica, Version::new(1, 100))),
        store.clone(),
    );
    let report = reconciler.run(&options(), &CancellationToken::new()).await;
    assert_ne!(report.status, RunStatus::Completed, "{}", report.to_table());
    let reason = report.abort_reason.clone().unwrap_or_default();
    assert!(reason.contains("generation floor"), "{reason}");
    assert_eq!(report.generation_floor, None);
    assert_eq!(
        store.floor_attempts.load(Ordering::SeqCst),
        u64::from(options().attempts),
        "the raise was not retried"
    );
}

/// Cancelling a run is its own outcome, not a failure.
#[tokio::test]
async fn a_cancelled_run_is_cancelled_not_failed() {
    let replica = users(10);
    let cancel = CancellationToken::new();
    let mut source = FakeSource::new(replica.clone(), Version::new(1, 100));
    let trigger = cancel.clone();
    source.live = Some(Box::new(move |request, _rows, _watermark| {
        if request.kind == Kind::USER {
            trigger.cancel();
        }
    }));
    let store = Arc::new(FakeStore::with(replica));
    let reconciler = Reconciler::new(Arc::new(source), store.clone());
    let report = reconciler.run(&options(), &cancel).await;
    assert_eq!(report.status, RunStatus::Cancelled, "{}", report.to_table());
    let users = report
        .units
        .iter()
        .find(|unit| unit.kind == Kind::USER)
        .expect("users unit");
    assert_eq!(users.outcome, UnitOutcome::Cancelled);
    assert!(store.floors.lock().expect("lock").is_empty());
}
