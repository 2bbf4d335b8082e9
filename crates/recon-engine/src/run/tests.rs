//! A single-instance run executes the run machine: what its stages leave
//! behind when the run is cut short.

use crate::Reconciler;
use crate::fakes::{FakeGate, FakeSource, FakeStore, Rows, insert};
use crate::tests::{options, tenant, user};
use recon_core::{GLOBAL_SCOPE, Kind, PausePolicy, RunStatus, UnitOutcome, Version};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A run that outlives `max_pause` after tenant `a` was reconciled whole,
/// while the much bigger tenant `b` is still being walked (every source
/// page takes 20 ms; `b` needs ~100 of them, `a` a handful): the run is
/// aborted, the consumer resumed, `a`'s units are in the report and `a`'s
/// generation floor is raised — old-generation events waiting in Kafka
/// must not undo what the run restored, as in a cluster — while `b` keeps
/// its floor. Before the single-instance run executed the run machine it
/// raised no floor and reported only the tenant list.
#[tokio::test]
async fn a_run_past_max_pause_raises_the_floors_of_the_tenants_it_reconciled_whole() {
    let mut truth = Rows::new();
    insert(&mut truth, tenant("a", "a", 1));
    insert(&mut truth, tenant("b", "b", 2));
    insert(&mut truth, user("a", "u0", "n", 3));
    for index in 0..300 {
        insert(
            &mut truth,
            user("b", &format!("u{index:04}"), "n", 4 + index),
        );
    }
    let mut source = FakeSource::new(truth, Version::new(1, 400));
    source.page_delay = Duration::from_millis(20);
    let store = Arc::new(FakeStore::with(Rows::new()));
    let gate = Arc::new(FakeGate::default());
    let reconciler =
        Reconciler::new(Arc::new(source), store.clone()).with_gate(gate.clone(), "test");
    let mut options = options();
    options.concurrency = 1;
    options.digests = false;
    options.max_pause = Duration::from_millis(900);

    let report = reconciler.run(&options, &CancellationToken::new()).await;

    assert_eq!(report.status, RunStatus::Aborted, "{}", report.to_table());
    let reason = report.abort_reason.clone().unwrap_or_default();
    assert!(reason.contains("max_pause"), "{reason}");
    assert!(
        reason.contains("raised for the 1 tenants reconciled whole"),
        "{reason}"
    );
    let floors = store.floors.lock().expect("lock").clone();
    assert_eq!(floors.get("a"), Some(&1), "{floors:?}");
    assert!(!floors.contains_key("b"), "{floors:?}");
    assert!(!floors.contains_key(GLOBAL_SCOPE), "{floors:?}");
    let a_units: Vec<_> = report
        .units
        .iter()
        .filter(|unit| unit.tenant == "a")
        .collect();
    assert!(
        !a_units.is_empty() && a_units.iter().all(|unit| unit.outcome == UnitOutcome::Done),
        "{}",
        report.to_table()
    );
    assert!(a_units.iter().any(|unit| unit.kind == Kind::USER));
    assert!(
        !gate.paused.load(Ordering::SeqCst),
        "the consumer stayed paused"
    );
    assert_eq!(gate.pauses.load(Ordering::SeqCst), 1);
}

/// A run that leaves the consumer running raises the generation floor
/// before its first write. After a restore (the source at generation 2, the
/// replica still holding what generation 1 wrote), an event of generation 1
/// still in Kafka would otherwise land after a unit repaired its row and
/// bring back what the restore undid. The store's write gate looks at the
/// floor at every reconciliation write.
#[tokio::test]
async fn a_run_that_never_pauses_raises_the_floor_before_its_first_write() {
    let mut truth = Rows::new();
    insert(&mut truth, tenant("t", "t", 1));
    let mut replica = truth.clone();
    for index in 0..5 {
        let id = format!("u{index}");
        let mut restored = user("t", &id, "restored", 1);
        restored.version = Version::new(2, 10 + index);
        insert(&mut truth, restored);
        let mut undone = user("t", &id, "undone by the restore", 1);
        undone.version = Version::new(1, 500 + index);
        insert(&mut replica, undone);
    }
    let source = FakeSource::new(truth.clone(), Version::new(2, 100));
    let (store, unguarded_writes) =
        FakeStore::counting_writes_below_floor(replica, GLOBAL_SCOPE, 2);
    let gate = Arc::new(FakeGate::default());
    let reconciler =
        Reconciler::new(Arc::new(source), store.clone()).with_gate(gate.clone(), "test");
    let mut options = options();
    options.pause = PausePolicy::Never;

    let report = reconciler.run(&options, &CancellationToken::new()).await;

    assert_eq!(report.status, RunStatus::Completed, "{}", report.to_table());
    assert_eq!(
        unguarded_writes.load(Ordering::SeqCst),
        0,
        "a unit wrote before the floor was raised"
    );
    assert_eq!(store.snapshot(), truth);
    assert_eq!(
        gate.pauses.load(Ordering::SeqCst),
        0,
        "the consumer was paused"
    );
}
