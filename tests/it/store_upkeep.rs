//! The replica store's bounded waits and upkeep on real databases:
//!
//! * a row lock held by another session makes an apply fail within the
//!   default lock timeout, as a transient failure (it used to wait forever,
//!   and a timeout was then taken for the event's fault);
//! * the scheduled tombstone purge: tombstones older than the retention go,
//!   younger ones and live rows stay, and replicas sharing the store purge
//!   once per interval between them;
//! * the run history: a record replaced by a later write of the same run,
//!   listed newest first without its units, shown with them, trimmed to the
//!   last `RUNS_KEPT`.

use recon_core::ports::{EventSink, FailureKind};
use recon_core::{Change, Deletion, EntityKey, Kind, Record, Row, User, UserStatus, Version};
use recon_store::{Store, TombstonePurge};
use recon_tests::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn user(id: &str, name: &str, sequence: u64) -> Change {
    Change::Upsert(Row {
        tenant_id: "t".into(),
        record: Record::from(User {
            id: id.into(),
            email: format!("{id}@example.test"),
            display_name: name.into(),
            status: UserStatus::Active,
        }),
        version: Version::new(1, sequence),
    })
}

fn delete_user(id: &str, sequence: u64) -> Change {
    Change::Delete(Deletion {
        tenant_id: "t".into(),
        kind: Kind::USER,
        key: EntityKey::id(id),
        version: Version::new(1, sequence),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_row_lock_fails_an_apply_within_the_lock_timeout_as_transient() {
    let database = TestDatabase::replica_store(Backend::Postgres)
        .await
        .expect("database");
    // Default session settings: a 5 s lock timeout.
    let store = Store::connect(&database.url).await.expect("store");
    EventSink::apply_events(&store, &[user("u1", "first", 1)])
        .await
        .expect("seed");

    for (setting, expected) in [
        ("lock_timeout", "5s"),
        ("statement_timeout", "1min"),
        ("idle_in_transaction_session_timeout", "1min"),
    ] {
        let row = store
            .connection()
            .query_one_raw(sea_orm::Statement::from_string(
                store.backend(),
                format!("SHOW {setting}"),
            ))
            .await
            .expect("show setting")
            .expect("a row");
        let value: String = row.try_get("", setting).expect("setting value");
        assert_eq!(value, expected, "{setting}");
    }

    // Another session (a process frozen mid-transaction) holds the row.
    let holder = Database::connect(&database.url)
        .await
        .expect("holder connection");
    let transaction = holder.begin().await.expect("begin");
    transaction
        .execute_unprepared(
            "SELECT * FROM replica_users WHERE tenant_id = 't' AND id = 'u1' FOR UPDATE",
        )
        .await
        .expect("lock the row");

    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        EventSink::apply_events(&store, &[user("u1", "second", 2)]),
    )
    .await
    .expect("the apply waited 30 s on a lock: no lock timeout");
    let error = outcome.expect_err("the row is locked");
    assert_eq!(
        error.kind,
        FailureKind::Transient,
        "a lock timeout is not the event's fault: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    transaction.rollback().await.expect("release the lock");
    EventSink::apply_events(&store, &[user("u1", "second", 2)])
        .await
        .expect("the retry lands once the lock is gone");
}

async fn tombstones(store: &Store) -> i64 {
    let row = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            store.backend(),
            "SELECT COUNT(*) AS n FROM replica_users WHERE deleted = TRUE",
        ))
        .await
        .expect("count tombstones")
        .expect("a row");
    row.try_get("", "n").expect("count")
}

async fn scheduled_purge_removes_old_tombstones_once_per_interval(backend: Backend) {
    let database = TestDatabase::replica_store(backend)
        .await
        .expect("database");
    let first = Store::connect(&database.url).await.expect("first replica");
    let second = Store::connect(&database.url).await.expect("second replica");
    EventSink::apply_events(
        &first,
        &[
            user("live", "n", 1),
            user("gone", "n", 2),
            delete_user("gone", 3),
        ],
    )
    .await
    .expect("seed");
    assert_eq!(tombstones(&first).await, 1);

    let purge = TombstonePurge {
        retention: Duration::from_secs(2),
        interval: Duration::from_secs(3600),
    };
    // The first claim of the interval purges (nothing is old enough yet);
    // the other replica's claim in the same interval does nothing.
    assert_eq!(
        first.purge_tombstones_if_due(purge).await.expect("purge"),
        Some(0)
    );
    assert_eq!(
        second.purge_tombstones_if_due(purge).await.expect("purge"),
        None
    );
    assert_eq!(tombstones(&first).await, 1, "a young tombstone was purged");

    // Both replicas run the schedule with a short interval: the tombstone
    // goes once it is older than the retention; the live row stays.
    let schedule = TombstonePurge {
        retention: Duration::from_secs(2),
        interval: Duration::from_millis(200),
    };
    let shutdown = CancellationToken::new();
    let tasks: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|store| {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                store
                    .run_tombstone_purge(schedule, shutdown.cancelled_owned())
                    .await;
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tombstones(&first).await != 0 {
        assert!(Instant::now() < deadline, "the tombstone was never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    for task in tasks {
        task.await.expect("purge task");
    }
    assert_eq!(first.count_live("t", Kind::USER).await.expect("count"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_purge_on_postgres() {
    scheduled_purge_removes_old_tombstones_once_per_interval(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_purge_on_sqlite() {
    scheduled_purge_removes_old_tombstones_once_per_interval(Backend::Sqlite).await;
}

fn run_record(run_id: &str, started_unix_ms: u64, units: usize) -> recon_core::RunRecord {
    let units: Vec<recon_core::UnitReport> = (0..units)
        .map(|index| {
            let mut unit = recon_core::UnitReport::new(&format!("t{index}"), Kind::USER);
            unit.missing = 1;
            unit.written = 1;
            unit.unit = Some(format!("u{index:05}"));
            unit.member = Some("m1".into());
            unit
        })
        .collect();
    let report = recon_core::RunReport {
        epoch: 3,
        dry_run: false,
        status: recon_core::RunReport::status_of(&units),
        abort_reason: None,
        generation_floor: None,
        seconds: 1.0,
        peak_rss_bytes: None,
        units,
    };
    recon_core::RunRecord {
        run_id: run_id.to_owned(),
        mode: recon_core::RunMode::Cluster,
        leader: Some("m1".into()),
        requested_by: "test".into(),
        tenants: Vec::new(),
        started_unix_ms,
        ended_unix_ms: started_unix_ms + 1_000,
        planned_units: 2,
        aborted_by: None,
        pause: recon_core::PausePolicy::Always,
        trace_id: None,
        totals: recon_core::RunTotals::of(&report),
        report,
    }
}

async fn run_history_keeps_the_last_runs(backend: Backend) {
    let database = TestDatabase::replica_store(backend)
        .await
        .expect("database");
    let store = Store::connect(&database.url).await.expect("store");
    store
        .record_run(&run_record("r-1", 1_000, 2))
        .await
        .expect("record r-1");
    // A leader that adopted the run ends it again: the record is replaced.
    let mut again = run_record("r-1", 1_000, 3);
    again.leader = Some("m2".into());
    store.record_run(&again).await.expect("record r-1 again");
    store
        .record_run(&run_record("r-2", 2_000, 1))
        .await
        .expect("record r-2");
    let listed = store.recent_runs(10).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|run| run.run_id.as_str()).collect();
    assert_eq!(ids, ["r-2", "r-1"], "newest first, one record per run");
    assert!(
        listed.iter().all(|run| run.report.units.is_empty()),
        "listings leave units out"
    );
    assert_eq!(
        listed[1].totals.missing, 3,
        "the totals stay in the listing"
    );
    let shown = store
        .run_record("r-1")
        .await
        .expect("show")
        .expect("r-1 kept");
    assert_eq!(shown, again, "a record reads back as written");
    assert_eq!(store.run_record("r-9").await.expect("show"), None);
    // Beyond RUNS_KEPT the oldest go.
    for index in 0..recon_core::history::RUNS_KEPT {
        let run = run_record(&format!("s-{index:05}"), 10_000 + index as u64, 0);
        store.record_run(&run).await.expect("record");
    }
    let all = store
        .recent_runs(recon_core::history::RUNS_KEPT + 10)
        .await
        .expect("list");
    assert_eq!(all.len(), recon_core::history::RUNS_KEPT);
    assert!(
        all.iter().all(|run| run.run_id.starts_with("s-")),
        "the two oldest runs were trimmed"
    );
}

mod run_history {
    use recon_tests::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::run_history_keeps_the_last_runs(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::run_history_keeps_the_last_runs(Backend::Postgres).await;
    }
}
