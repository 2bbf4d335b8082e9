//! The engine against in-memory fakes: convergence (property-tested), the
//! delete guard, source failures, dry runs.

use crate::fakes::{FakeSource, FakeStore, Rows, insert};
use crate::{ReconcileOptions, Reconciler, Scope};
use proptest::prelude::*;
use recon_core::{
    GLOBAL_SCOPE, Group, GuardDecision, Kind, Membership, Record, Row, RunReport, RunStatus,
    Tenant, UnitOutcome, UnitReport, User, UserStatus, Version,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) fn tenant(id: &str, name: &str, sequence: u64) -> Row {
    Row {
        tenant_id: id.into(),
        record: Record::from(Tenant {
            id: id.into(),
            name: name.into(),
        }),
        version: Version::new(1, sequence),
    }
}

pub(crate) fn user(tenant: &str, id: &str, name: &str, sequence: u64) -> Row {
    Row {
        tenant_id: tenant.into(),
        record: Record::from(User {
            id: id.into(),
            email: format!("{id}@x"),
            display_name: name.into(),
            status: UserStatus::Active,
        }),
        version: Version::new(1, sequence),
    }
}

pub(crate) fn group(tenant: &str, id: &str, sequence: u64) -> Row {
    Row {
        tenant_id: tenant.into(),
        record: Record::from(Group {
            id: id.into(),
            name: id.into(),
        }),
        version: Version::new(1, sequence),
    }
}

pub(crate) fn membership(tenant: &str, group_id: &str, user_id: &str, sequence: u64) -> Row {
    Row {
        tenant_id: tenant.into(),
        record: Record::from(Membership {
            group_id: group_id.into(),
            user_id: user_id.into(),
        }),
        version: Version::new(1, sequence),
    }
}

pub(crate) fn options() -> ReconcileOptions {
    let mut options = ReconcileOptions::new(1);
    options.page_size = 3;
    options.replica_page_size = 2;
    options.write_batch = 2;
    options.retry_backoff = std::time::Duration::from_millis(1);
    options
}

async fn run(
    source: FakeSource,
    store: &Arc<FakeStore>,
    options: &ReconcileOptions,
) -> recon_core::RunReport {
    let reconciler = Reconciler::new(Arc::new(source), store.clone());
    reconciler.run(options, &CancellationToken::new()).await
}

/// A random world: a few tenants, each with users, groups, memberships.
fn world() -> impl Strategy<Value = Rows> {
    let tenant_ids = prop::collection::btree_set("[ab]", 0..3);
    tenant_ids.prop_flat_map(|ids| {
        let ids: Vec<String> = ids.into_iter().collect();
        let per_tenant = prop::collection::vec(
            (
                prop::collection::btree_map("[a-e]", ("[xy]", 1u64..5), 0..5),
                prop::collection::btree_set("g[12]", 0..3),
                prop::collection::btree_set(("g[12]", "[a-e]"), 0..4),
            ),
            ids.len(),
        );
        (Just(ids), per_tenant).prop_map(|(ids, contents)| {
            let mut rows = Rows::new();
            for (id, (users, groups, memberships)) in ids.iter().zip(contents) {
                insert(&mut rows, tenant(id, "t", 1));
                for (user_id, (name, sequence)) in users {
                    insert(&mut rows, user(id, &user_id, &name, sequence));
                }
                for group_id in groups {
                    insert(&mut rows, group(id, &group_id, 1));
                }
                for (group_id, user_id) in memberships {
                    insert(&mut rows, membership(id, &group_id, &user_id, 1));
                }
            }
            rows
        })
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_run_makes_the_replica_equal_to_the_source(truth in world(), replica in world()) {
        let mut options = options();
        options.delete_guard.override_allowed = true;
        let store = Arc::new(FakeStore::with(replica));
        let report = runtime().block_on(run(FakeSource::new(truth.clone(), Version::new(2, 100)), &store, &options));
        prop_assert_eq!(report.status, RunStatus::Completed);
        let mut expected = truth.clone();
        expected.retain(|_, keyed| !keyed.is_empty());
        prop_assert_eq!(store.snapshot(), expected);
        // A second run finds nothing to do.
        let again = runtime().block_on(run(FakeSource::new(truth, Version::new(2, 100)), &store, &options));
        prop_assert_eq!(again.total(|unit| unit.missing + unit.phantom + unit.changed), 0);
    }

    #[test]
    fn a_run_with_digests_makes_the_replica_equal_and_a_second_reads_no_page(truth in world(), replica in world()) {
        let mut options = options();
        options.delete_guard.override_allowed = true;
        options.digest_fanout = 2;
        let store = Arc::new(FakeStore::with(replica));
        let source = || FakeSource::new(truth.clone(), Version::new(2, 100)).with_digests(4);
        let report = runtime().block_on(run(source(), &store, &options));
        prop_assert_eq!(report.status, RunStatus::Completed);
        let mut expected = truth.clone();
        expected.retain(|_, keyed| !keyed.is_empty());
        prop_assert_eq!(store.snapshot(), expected);
        let again = runtime().block_on(run(source(), &store, &options));
        prop_assert_eq!(again.total(|unit| unit.missing + unit.phantom + unit.changed), 0);
        let tenant_scoped_pages: u64 = again.units.iter().filter(|unit| unit.kind != Kind::TENANT).map(|unit| unit.pages).sum();
        prop_assert_eq!(tenant_scoped_pages, 0);
    }

    #[test]
    fn fine_digests_with_multi_range_pages_make_the_replica_equal(truth in world(), replica in world()) {
        let mut options = options();
        options.delete_guard.override_allowed = true;
        options.page_size = 4;
        let store = Arc::new(FakeStore::with(replica));
        // Three ranges per page and pages of four rows: walks are grouped,
        // split over pages, and pages end inside and between ranges.
        let source = || FakeSource::new(truth.clone(), Version::new(2, 100)).with_digests(64).with_page_ranges(3).with_all_tenant_digests();
        let report = runtime().block_on(run(source(), &store, &options));
        prop_assert_eq!(report.status, RunStatus::Completed);
        let mut expected = truth.clone();
        expected.retain(|_, keyed| !keyed.is_empty());
        prop_assert_eq!(store.snapshot(), expected);
        let again = runtime().block_on(run(source(), &store, &options));
        prop_assert_eq!(again.total(|unit| unit.missing + unit.phantom + unit.changed), 0);
    }

    #[test]
    fn a_dry_run_writes_nothing_and_predicts_the_real_run(truth in world(), replica in world()) {
        let mut options = options();
        options.delete_guard.override_allowed = true;
        options.dry_run = true;
        let store = Arc::new(FakeStore::with(replica.clone()));
        let dry = runtime().block_on(run(FakeSource::new(truth.clone(), Version::new(2, 100)), &store, &options));
        prop_assert_eq!(store.writes.load(std::sync::atomic::Ordering::SeqCst), 0);
        prop_assert!(store.floors.lock().expect("lock").is_empty());
        options.dry_run = false;
        let real = runtime().block_on(run(FakeSource::new(truth, Version::new(2, 100)), &store, &options));
        // Tenant-level figures match exactly; per-tenant units of tenants the
        // real run deletes or creates are reported the same way.
        prop_assert_eq!(dry.units[0].missing, real.units[0].missing);
        prop_assert_eq!(dry.units[0].phantom, real.units[0].phantom);
        prop_assert_eq!(dry.total(|unit| unit.missing + unit.changed), real.total(|unit| unit.missing + unit.changed));
    }
}

/// Runs `source` against `store` and checks that the run completed and
/// left the replica equal to `truth`.
async fn run_to_truth(
    source: &Arc<FakeSource>,
    store: &Arc<FakeStore>,
    truth: &Rows,
    options: &ReconcileOptions,
) -> RunReport {
    let reconciler = Reconciler::new(source.clone(), store.clone());
    let report = reconciler.run(options, &CancellationToken::new()).await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    let mut expected = truth.clone();
    expected.retain(|_, keyed| !keyed.is_empty());
    assert_eq!(store.snapshot(), expected);
    report
}

/// The report's (first) unit of `kind`.
fn unit_of(report: &RunReport, kind: Kind) -> &UnitReport {
    report
        .units
        .iter()
        .find(|unit| unit.kind == kind)
        .expect("a unit of the kind")
}

fn big_tenant(users: u64) -> Rows {
    let mut rows = Rows::new();
    insert(&mut rows, tenant("t", "t", 1));
    for index in 0..users {
        insert(&mut rows, user("t", &format!("u{index:04}"), "n", 1));
    }
    rows
}

#[tokio::test]
async fn digests_narrow_a_big_tenant_to_the_ranges_that_differ() {
    let truth = big_tenant(2_000);
    let mut replica = truth.clone();
    let users = replica.get_mut(&(Kind::USER, "t".into())).expect("users");
    // One changed row, one missing, one phantom — in three places.
    let changed = user("t", "u0100", "garbled", 1);
    users.insert(changed.key(), changed);
    users.remove(&recon_core::EntityKey::id("u1500"));
    let phantom = user("t", "u1999x", "n", 1);
    users.insert(phantom.key(), phantom);
    let store = Arc::new(FakeStore::with(replica));
    let mut options = options();
    options.page_size = 10;
    let source = Arc::new(FakeSource::new(truth.clone(), Version::new(2, 100)).with_digests(16));
    let report = run_to_truth(&source, &store, &truth, &options).await;
    let users = unit_of(&report, Kind::USER);
    assert_eq!((users.changed, users.missing, users.phantom), (1, 1, 1));
    assert!(
        users.digest_matched > 1_900,
        "most rows matched by digest: {users:?}"
    );
    assert!(
        users.pages < 20,
        "only the differing ranges were walked ({} pages of 10 rows, 200 for all)",
        users.pages
    );
}

/// A full load into an empty replica: no range can match, so no kind is
/// split into buckets (which costs a pass over the source's rows) — the
/// only digest request is the tenant's first look.
#[tokio::test]
async fn a_kind_the_replica_holds_too_little_of_is_walked_without_splitting() {
    let truth = big_tenant(2_000);
    let store = Arc::new(FakeStore::default());
    let mut options = options();
    options.page_size = 10;
    let source = Arc::new(FakeSource::new(truth.clone(), Version::new(2, 100)).with_digests(16));
    let report = run_to_truth(&source, &store, &truth, &options).await;
    let users = unit_of(&report, Kind::USER);
    assert_eq!(users.missing, 2_000);
    assert_eq!(users.digest_requests, 1, "{users:?}");
    assert_eq!(
        source
            .digest_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn multi_range_pages_read_only_the_differing_leaves_of_damage_spread_everywhere() {
    // 1% of 4,000 users damaged, evenly: every 100th changed, missing or
    // phantom in turn. Two-level narrowing with 16 buckets finds no equal
    // range worth skipping; leaves of 16 rows read 256 at a time do.
    let truth = big_tenant(4_000);
    let mut replica = truth.clone();
    let users = replica.get_mut(&(Kind::USER, "t".into())).expect("users");
    for index in (0..4_000).step_by(100) {
        match (index / 100) % 3 {
            0 => {
                let changed = user("t", &format!("u{index:04}"), "garbled", 1);
                users.insert(changed.key(), changed);
            }
            1 => {
                users.remove(&recon_core::EntityKey::id(format!("u{index:04}")));
            }
            _ => {
                let phantom = user("t", &format!("u{index:04}x"), "n", 1);
                users.insert(phantom.key(), phantom);
            }
        }
    }
    let store = Arc::new(FakeStore::with(replica));
    let mut options = options();
    options.delete_guard.override_allowed = true;
    options.page_size = 1_000;
    options.replica_page_size = 1_000;
    let source = Arc::new(
        FakeSource::new(truth.clone(), Version::new(2, 100))
            .with_digests(16_384)
            .with_page_ranges(256),
    );
    let report = run_to_truth(&source, &store, &truth, &options).await;
    let users = unit_of(&report, Kind::USER);
    assert_eq!((users.changed, users.missing, users.phantom), (14, 13, 13));
    assert!(
        users.compared <= 40 * 17,
        "only the 40 differing leaves of 16 rows were read: {users:?}"
    );
    assert!(
        users.pages <= 3,
        "the leaves were read many per page: {users:?}"
    );
    // The tenant's digests, then one request for the leaves.
    assert_eq!(users.digest_requests, 2, "{users:?}");
}

#[tokio::test]
async fn every_tenant_is_compared_by_one_digest_request_for_all() {
    let mut truth = big_tenant(300);
    for id in ["t2", "t3"] {
        insert(&mut truth, tenant(id, id, 1));
        insert(&mut truth, user(id, "u1", "n", 1));
        insert(&mut truth, group(id, "g1", 1));
        insert(&mut truth, membership(id, "g1", "u1", 1));
    }
    let mut replica = truth.clone();
    // t3's group renamed behind recon's back.
    let mut renamed = group("t3", "g1", 1);
    renamed.record = recon_core::Record::from(recon_core::Group {
        id: "g1".into(),
        name: "renamed".into(),
    });
    replica
        .get_mut(&(Kind::GROUP, "t3".into()))
        .expect("groups")
        .insert(renamed.key(), renamed);
    let store = Arc::new(FakeStore::with(replica));
    let source = Arc::new(
        FakeSource::new(truth.clone(), Version::new(2, 100))
            .with_digests(16)
            .with_all_tenant_digests(),
    );
    let report = run_to_truth(&source, &store, &truth, &options()).await;
    // One request compared every tenant; only t3's groups were walked.
    assert_eq!(
        source
            .digest_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let walked: Vec<(&str, Kind)> = report
        .units
        .iter()
        .filter(|unit| unit.kind != Kind::TENANT && unit.pages > 0)
        .map(|unit| (unit.tenant.as_str(), unit.kind))
        .collect();
    assert_eq!(walked, vec![("t3", Kind::GROUP)]);
    assert_eq!(
        report
            .units
            .iter()
            .find(|unit| unit.tenant == "t3" && unit.kind == Kind::GROUP)
            .map(|unit| unit.changed),
        Some(1)
    );
}

#[tokio::test]
async fn an_unchanged_tenant_costs_one_digest_request() {
    let truth = big_tenant(2_000);
    let store = Arc::new(FakeStore::with(truth.clone()));
    let source = Arc::new(FakeSource::new(truth, Version::new(2, 100)).with_digests(16));
    let reconciler = Reconciler::new(source.clone(), store.clone());
    let report = reconciler.run(&options(), &CancellationToken::new()).await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    assert_eq!(
        source
            .digest_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let users = unit_of(&report, Kind::USER);
    assert_eq!(
        (users.pages, users.digest_matched, users.compared),
        (0, 2_000, 0)
    );
    assert_eq!(store.writes.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn losing_half_the_users_trips_the_guard_and_the_override_deletes() {
    let replica = big_tenant(100);
    let mut truth = replica.clone();
    if let Some(users) = truth.get_mut(&(Kind::USER, "t".into())) {
        users.retain(|key, _| key.first().ends_with(['0', '2', '4', '6', '8']));
    }
    let store = Arc::new(FakeStore::with(replica));
    let report = run(
        FakeSource::new(truth.clone(), Version::new(1, 9)),
        &store,
        &options(),
    )
    .await;
    let users = unit_of(&report, Kind::USER);
    assert_eq!(users.guard, GuardDecision::Tripped);
    assert_eq!(users.outcome, UnitOutcome::GuardTripped);
    assert_eq!(users.skipped_by_guard, 50);
    assert_eq!(
        store.snapshot()[&(Kind::USER, "t".into())].len(),
        100,
        "the guard let a deletion through"
    );
    assert_eq!(report.status, RunStatus::CompletedWithProblems);
    // The tenant list was reconciled: pre-restore events are void everywhere.
    assert_eq!(
        store.floors.lock().expect("lock").get(GLOBAL_SCOPE),
        Some(&1)
    );

    let mut allowed = options();
    allowed.delete_guard.override_allowed = true;
    let report = run(FakeSource::new(truth, Version::new(1, 9)), &store, &allowed).await;
    assert_eq!(report.status, RunStatus::Completed);
    assert_eq!(store.snapshot()[&(Kind::USER, "t".into())].len(), 50);
    assert_eq!(
        store.floors.lock().expect("lock").get(GLOBAL_SCOPE),
        Some(&1)
    );
}

/// Each kind within its own limit, but together more than the tenant's:
/// the tenant's limit holds (the guard is per tenant, not per kind).
#[tokio::test]
async fn the_kinds_of_a_tenant_share_its_limit() {
    let mut replica = Rows::new();
    insert(&mut replica, tenant("t", "t", 1));
    for index in 0..10 {
        insert(&mut replica, user("t", &format!("u{index}"), "n", 1));
        insert(&mut replica, group("t", &format!("g{index}"), 1));
        insert(&mut replica, membership("t", "g0", &format!("u{index}"), 1));
    }
    let mut truth = replica.clone();
    for kind in [Kind::USER, Kind::GROUP] {
        if let Some(rows) = truth.get_mut(&(kind, "t".into())) {
            let gone: Vec<_> = rows.keys().take(4).cloned().collect();
            for key in gone {
                rows.remove(&key);
            }
        }
    }
    // 30 rows: the tenant may lose 6; users and groups lose 4 each (each
    // within its own limit of 5).
    let store = Arc::new(FakeStore::with(replica.clone()));
    let report = run(
        FakeSource::new(truth.clone(), Version::new(1, 9)),
        &store,
        &options(),
    )
    .await;
    assert_eq!(store.snapshot(), replica, "{}", report.to_table());
    let tripped = report
        .units
        .iter()
        .filter(|unit| unit.outcome == UnitOutcome::GuardTripped)
        .count();
    assert_eq!(tripped, 2, "{}", report.to_table());
    // Four of one kind alone are allowed.
    let mut only_users = replica.clone();
    only_users.insert(
        (Kind::USER, "t".into()),
        truth[&(Kind::USER, "t".into())].clone(),
    );
    let store = Arc::new(FakeStore::with(replica));
    let report = run(
        FakeSource::new(only_users.clone(), Version::new(1, 9)),
        &store,
        &options(),
    )
    .await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.to_table());
    assert_eq!(store.snapshot(), only_users);
}

/// A replica of a tenant of 20 users, and a truth that lost the last one.
fn a_big_tenant_losing_one_user() -> (Rows, Rows) {
    let replica = big_tenant(20);
    let mut truth = replica.clone();
    if let Some(users) = truth.get_mut(&(Kind::USER, "t".into())) {
        users.retain(|key, _| key.first() != "u0019");
    }
    (replica, truth)
}

#[tokio::test]
async fn a_failing_page_deletes_nothing() {
    let (replica, truth) = a_big_tenant_losing_one_user();
    // Requests: 1 = tenant list, 2..=8 = the seven user pages (3 rows
    // each), 9 = groups, 10 = memberships. From `failing` on, every request
    // fails (retries included).
    for failing in 1..=10 {
        let store = Arc::new(FakeStore::with(replica.clone()));
        let mut source = FakeSource::new(truth.clone(), Version::new(1, 9));
        source.fail_request = Some(failing);
        source.fail_persistently = true;
        let report = run(source, &store, &options()).await;
        let users_left = store.snapshot()[&(Kind::USER, "t".into())].len();
        let users_unit_broken = failing <= 8;
        if users_unit_broken {
            assert_eq!(
                users_left, 20,
                "request {failing} failing let a deletion through"
            );
        } else {
            assert_eq!(
                users_left, 19,
                "request {failing} (another unit) blocked the complete users unit"
            );
        }
        assert_ne!(
            report.status,
            RunStatus::Completed,
            "request {failing}: a failure went unreported"
        );
        let failed = report.units.iter().any(|unit| matches!(&unit.outcome, UnitOutcome::Failed(reason) if reason.contains("injected failure")) && unit.attempts == 4);
        assert!(
            failed,
            "request {failing}: the report does not name the failure after 4 attempts: {report:#?}"
        );
        // Tenant t was not (wholly) read: no floor may cover it.
        let floors = store.floors.lock().expect("lock").clone();
        assert!(
            floors.is_empty(),
            "request {failing}: a floor covers the failed tenant: {floors:?}"
        );
    }
}

#[tokio::test]
async fn a_transient_failure_is_retried_within_the_run() {
    let (replica, truth) = a_big_tenant_losing_one_user();
    for failing in 1..=10 {
        let store = Arc::new(FakeStore::with(replica.clone()));
        let mut source = FakeSource::new(truth.clone(), Version::new(1, 9));
        source.fail_request = Some(failing);
        let report = run(source, &store, &options()).await;
        assert_eq!(
            report.status,
            RunStatus::Completed,
            "request {failing}: {}",
            report.to_table()
        );
        assert_eq!(
            report
                .units
                .iter()
                .filter(|unit| unit.attempts == 2)
                .count(),
            1
        );
        assert_eq!(store.snapshot()[&(Kind::USER, "t".into())].len(), 19);
        assert_eq!(
            store.floors.lock().expect("lock").get(GLOBAL_SCOPE),
            Some(&1)
        );
    }
    // A permanent failure is not retried.
    let store = Arc::new(FakeStore::with(replica));
    let mut source = FakeSource::new(truth, Version::new(1, 9));
    source.fail_request = Some(3);
    source.fail_kind = recon_core::ports::FailureKind::Permanent;
    let report = run(source, &store, &options()).await;
    let users = report
        .units
        .iter()
        .find(|unit| unit.kind == Kind::USER)
        .expect("users unit");
    assert!(matches!(&users.outcome, UnitOutcome::Failed(_)));
    assert_eq!(users.attempts, 1);
}

#[tokio::test]
async fn an_empty_tenant_list_trips_the_guard() {
    let mut replica = Rows::new();
    for id in ["a", "b", "c", "d", "e", "f", "g"] {
        insert(&mut replica, tenant(id, "t", 1));
        insert(&mut replica, user(id, "u", "n", 1));
    }
    let store = Arc::new(FakeStore::with(replica.clone()));
    let report = run(
        FakeSource::new(Rows::new(), Version::new(1, 9)),
        &store,
        &options(),
    )
    .await;
    assert_eq!(report.units[0].outcome, UnitOutcome::GuardTripped);
    assert_eq!(store.snapshot(), replica);
}

/// A page's watermark is the newest change it reflects: a row above it
/// breaks the Source API's contract (it would be written under a watermark
/// that does not cover it) and fails the unit, writing nothing. Before,
/// such rows were taken.
#[tokio::test]
async fn a_row_newer_than_its_pages_watermark_is_refused() {
    let mut truth = Rows::new();
    insert(&mut truth, tenant("a", "a", 1));
    insert(&mut truth, user("a", "u", "from the future", 500));
    let store = Arc::new(FakeStore::default());
    let report = run(
        FakeSource::new(truth, Version::new(1, 100)),
        &store,
        &options(),
    )
    .await;
    let user_unit = report
        .units
        .iter()
        .find(|unit| unit.kind == Kind::USER)
        .expect("the user unit");
    assert!(
        matches!(&user_unit.outcome, UnitOutcome::Failed(reason) if reason.contains("above its page's watermark")),
        "{:?}",
        user_unit.outcome
    );
    assert!(
        !store.snapshot().contains_key(&(Kind::USER, "a".into())),
        "the row was written"
    );
}

/// Rows of a tenant whose tenant row is not live in the replica (a partial
/// delete left them) and that the source does not list are examined as a
/// vanished tenant's: deleted under the guard, named in the report. A
/// scoped run leaves those of tenants out of its scope alone. Before, no
/// unit ever looked at them (units come from the source's list): they
/// stayed for ever.
#[tokio::test]
async fn rows_of_a_tenant_without_a_live_tenant_row_are_removed() {
    let mut truth = Rows::new();
    insert(&mut truth, tenant("a", "a", 1));
    insert(&mut truth, user("a", "u", "kept", 2));
    let mut replica = truth.clone();
    for ghost in ["ghost", "other-ghost"] {
        insert(&mut replica, user(ghost, "left-over", "n", 3));
        insert(&mut replica, user(ghost, "left-over-2", "n", 4));
    }
    let store = Arc::new(FakeStore::with(replica));
    let mut scoped = options();
    scoped.scope = Scope::Tenants(vec!["a".into(), "ghost".into()]);
    scoped.delete_guard.override_allowed = true;
    let report = run(
        FakeSource::new(truth.clone(), Version::new(1, 9)),
        &store,
        &scoped,
    )
    .await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    let rows = store.snapshot();
    assert!(
        !rows.contains_key(&(Kind::USER, "ghost".into())),
        "the rows of a tenant without a tenant row stayed: {rows:?}"
    );
    assert!(
        rows.contains_key(&(Kind::USER, "other-ghost".into())),
        "a scoped run removed a tenant outside its scope"
    );
    let tenant_list = &report.units[0];
    assert!(
        tenant_list
            .removed_tenants
            .iter()
            .any(|removal| removal.tenant == "ghost" && removal.live.get("users") == Some(&2)),
        "{:?}",
        tenant_list.removed_tenants
    );
    let mut everything = options();
    everything.delete_guard.override_allowed = true;
    let report = run(
        FakeSource::new(truth.clone(), Version::new(1, 9)),
        &store,
        &everything,
    )
    .await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    assert_eq!(store.snapshot(), truth);
}

#[tokio::test]
async fn listed_tenants_leave_the_others_alone() {
    let mut truth = Rows::new();
    let mut replica = Rows::new();
    for id in ["a", "b"] {
        insert(&mut truth, tenant(id, "new name", 2));
        insert(&mut truth, user(id, "u", "fixed", 2));
        insert(&mut replica, tenant(id, "old name", 1));
        insert(&mut replica, user(id, "u", "broken", 1));
    }
    let store = Arc::new(FakeStore::with(replica));
    let mut options = options();
    options.scope = Scope::Tenants(vec!["a".into()]);
    let report = run(FakeSource::new(truth, Version::new(1, 9)), &store, &options).await;
    assert_eq!(report.status, RunStatus::Completed);
    let rows = store.snapshot();
    let name_of = |tenant: &str| {
        rows[&(Kind::USER, tenant.into())]
            .values()
            .next()
            .map(|row| row.record.clone())
    };
    let display_name = |tenant: &str| name_of(tenant).and_then(|record| record.as_user());
    assert_eq!(
        display_name("a").map(|user| user.display_name),
        Some("fixed".into())
    );
    assert_eq!(
        display_name("b").map(|user| user.display_name),
        Some("broken".into())
    );
    assert_eq!(store.floors.lock().expect("lock").get("a"), Some(&1));
    assert_eq!(store.floors.lock().expect("lock").get(GLOBAL_SCOPE), None);
}

/// A replica store that records every reconciliation write it takes.
struct Recording(FakeStore, std::sync::Mutex<Vec<recon_core::Change>>);

impl Recording {
    fn deletions(&self) -> Vec<recon_core::Deletion> {
        self.1
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|change| match change {
                recon_core::Change::Delete(deletion) => Some(deletion.clone()),
                _ => None,
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl recon_core::ports::ReplicaStore for Recording {
    async fn read_rows(
        &self,
        t: &str,
        k: Kind,
        a: &[recon_core::KeyRange],
        l: u64,
    ) -> Result<Vec<Row>, recon_core::ports::PortError> {
        self.0.read_rows(t, k, a, l).await
    }
    async fn count_rows(
        &self,
        t: Option<&str>,
        k: Kind,
        r: &recon_core::KeyRange,
    ) -> Result<u64, recon_core::ports::PortError> {
        self.0.count_rows(t, k, r).await
    }
    async fn orphan_scopes(&self) -> Result<Vec<String>, recon_core::ports::PortError> {
        self.0.orphan_scopes().await
    }
    async fn apply_reconciliation(
        &self,
        f: &recon_core::FenceToken,
        w: Version,
        c: &[recon_core::Change],
    ) -> Result<recon_core::ports::AppliedCounts, recon_core::ports::PortError> {
        self.1.lock().expect("lock").extend_from_slice(c);
        self.0.apply_reconciliation(f, w, c).await
    }
    async fn raise_fence(
        &self,
        f: &recon_core::FenceToken,
    ) -> Result<(), recon_core::ports::PortError> {
        self.0.raise_fence(f).await
    }
    async fn acquire_epoch(
        &self,
        c: Option<recon_core::ElectionClaim>,
    ) -> Result<u64, recon_core::ports::PortError> {
        self.0.acquire_epoch(c).await
    }
    async fn next_incarnation(&self) -> Result<u64, recon_core::ports::PortError> {
        self.0.next_incarnation().await
    }
    async fn raise_generation_floor(
        &self,
        f: &recon_core::FenceToken,
        s: &str,
        g: u64,
    ) -> Result<(), recon_core::ports::PortError> {
        self.0.raise_generation_floor(f, s, g).await
    }
}

#[tokio::test]
async fn phantoms_are_tombstoned_at_the_watermark_of_their_covering_page() {
    // Checked through the store's writes: the deletion carries the watermark.
    let replica = big_tenant(3);
    let mut truth = replica.clone();
    if let Some(users) = truth.get_mut(&(Kind::USER, "t".into())) {
        users.retain(|key, _| key.first() != "u0001");
    }
    let store = Arc::new(Recording(
        FakeStore::with(replica),
        std::sync::Mutex::new(Vec::new()),
    ));
    let reconciler = Reconciler::new(
        Arc::new(FakeSource::new(truth, Version::new(3, 77))),
        store.clone(),
    );
    let report = reconciler.run(&options(), &CancellationToken::new()).await;
    assert_eq!(report.status, RunStatus::Completed);
    let deletions = store.deletions();
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0].key, recon_core::EntityKey::id("u0001"));
    assert_eq!(deletions[0].version, Version::new(3, 77));
}

/// A scoped run's tenant list drops the rows out of scope: a tenant gone
/// from the source is tombstoned at the watermark of the page that covered
/// its key, not of a later page the walk read past it. Before, it got the
/// last page's watermark — above a re-creation made while the walk went
/// on, whose events were then skipped, the tenant deleted with its rows.
#[tokio::test]
async fn a_scoped_phantom_is_tombstoned_at_the_watermark_of_its_covering_page() {
    let mut truth = Rows::new();
    for (index, id) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        insert(&mut truth, tenant(id, id, index as u64 + 1));
    }
    let mut replica = truth.clone();
    // Gone from the source; its key lies in the first page, (…, b].
    insert(&mut replica, tenant("a5", "a5", 9));
    let mut source = FakeSource::new(truth, Version::new(1, 100));
    // Every page is read at a newer watermark (a live monolith).
    source.live = Some(Box::new(|_request, _rows, watermark| {
        *watermark = Version::new(watermark.generation, watermark.sequence + 100);
    }));
    let store = Arc::new(Recording(
        FakeStore::with(replica),
        std::sync::Mutex::new(Vec::new()),
    ));
    let reconciler = Reconciler::new(Arc::new(source), store.clone());
    let mut options = options();
    options.page_size = 2;
    options.scope = Scope::Tenants(vec!["a5".into()]);
    options.delete_guard.override_allowed = true;
    let report = reconciler.run(&options, &CancellationToken::new()).await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    let deletions = store.deletions();
    let tenant_row = deletions
        .iter()
        .find(|deletion| deletion.kind == Kind::TENANT)
        .expect("the vanished tenant tombstoned");
    assert_eq!(tenant_row.key, recon_core::EntityKey::id("a5"));
    assert_eq!(
        tenant_row.version,
        Version::new(1, 200),
        "tombstoned at a later page's watermark"
    );
}

/// A walk asks the source for its next page as soon as the current one
/// arrived: the source serves it while the current page is merged and
/// written. The store lets the first users write through only once the
/// second users page was asked for (requests: the tenant list, users page
/// one, users page two); a walk that asked only when it needed the page
/// would wait on that write for ever (the gate gives up after 5 s and the
/// unit fails).
#[tokio::test]
async fn the_next_source_page_is_asked_for_while_the_current_one_is_written() {
    let mut rows = Rows::new();
    insert(&mut rows, tenant("a", "t", 1));
    for index in 0..9 {
        insert(&mut rows, user("a", &format!("u{index}"), "n", 1));
    }
    let source = Arc::new(FakeSource::new(rows.clone(), Version::new(1, 20)));
    let asked = source.clone();
    let store = Arc::new(FakeStore {
        write_gate: Some(Box::new(move |changes| {
            changes.iter().all(|change| change.kind() != Kind::USER)
                || asked.requests.load(std::sync::atomic::Ordering::SeqCst) >= 3
        })),
        ..FakeStore::default()
    });
    let reconciler = Reconciler::new(source, store.clone());
    let report = reconciler.run(&options(), &CancellationToken::new()).await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    assert_eq!(store.snapshot(), rows);
}
