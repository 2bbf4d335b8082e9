//! Source faults never delete; the guard; dry runs.

use super::{Fixture, small_spec, test_options};
use recon_core::{Kind, RunStatus, UnitOutcome};
use recon_engine::Scope;
use recon_tests::faulty_source::{Fault, FaultySource};
use std::time::Duration;

/// The largest tenant and how many users it has at the source.
async fn largest_tenant(fixture: &Fixture) -> (String, u64) {
    let (rows, _) = fixture.monolith.snapshot_rows().await.expect("snapshot");
    let mut users: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for row in rows.iter().filter(|row| row.kind() == Kind::USER) {
        *users.entry(row.tenant_id.clone()).or_default() += 1;
    }
    users
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .expect("a tenant with users")
}

/// Live phantom users planted in `tenant` (ids `phantom-…`).
async fn live_phantoms(fixture: &Fixture, tenant: &str) -> u64 {
    let range = recon_core::KeyRange::all();
    let rows = fixture
        .store
        .read_page(tenant, Kind::USER, &range, 100_000)
        .await
        .expect("read");
    rows.iter()
        .filter(|row| row.key.first().contains("phantom-"))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_faults_never_delete_and_are_reported() {
    let fixture = Fixture::new(small_spec(21)).await;
    let first = fixture
        .reconcile_via(&fixture.source_url, &test_options(1))
        .await;
    assert_eq!(first.status, RunStatus::Completed, "{}", first.to_table());
    assert_eq!(fixture.differences().await, 0);
    let (tenant, _) = largest_tenant(&fixture).await;
    // Two phantom users spread over the tenant's pages ("phantom-" sorts
    // after the UUIDs' hex digits only partly, so put one early too).
    let planted = fixture
        .replica_sql(&format!(
            "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, sequence, deleted) VALUES \
             ('{tenant}', '0000-phantom-early', 'e@x', 'early', 'active', 1, 1, FALSE), \
             ('{tenant}', 'phantom-late', 'l@x', 'late', 'active', 1, 1, FALSE)"
        ))
        .await;
    assert_eq!(planted, 2);
    let proxy = FaultySource::start(&fixture.source_url)
        .await
        .expect("proxy");
    let users_path = format!("/tenants/{tenant}/users");
    let digests_path = format!("/tenants/{tenant}/digests/users");
    let faults = vec![
        (
            "500 at page 2, persistent",
            Fault::ServerErrorAtPage {
                path_contains: users_path.clone(),
                page: 2,
                times: 1_000,
            },
        ),
        (
            "timeouts",
            Fault::Delay {
                path_contains: users_path.clone(),
                delay: Duration::from_secs(5),
            },
        ),
        (
            "truncated bodies",
            Fault::TruncatedBody {
                path_contains: users_path.clone(),
                page: 1,
                times: 1_000,
            },
        ),
        (
            "malformed JSON",
            Fault::MalformedJson {
                path_contains: users_path.clone(),
                page: 1,
            },
        ),
        (
            "keys backwards",
            Fault::KeysBackwards {
                path_contains: users_path.clone(),
                page: 1,
            },
        ),
        (
            "duplicate key across pages",
            Fault::DuplicateKeyAcrossPages {
                path_contains: users_path.clone(),
                page: 2,
            },
        ),
        ("empty tenant list", Fault::EmptyTenantList),
        ("source stopped", Fault::Stopped),
        (
            "500 on digests, persistent",
            Fault::ServerErrorAtPage {
                path_contains: digests_path.clone(),
                page: 0,
                times: 1_000,
            },
        ),
        (
            "malformed digests",
            Fault::MalformedJson {
                path_contains: digests_path.clone(),
                page: 0,
            },
        ),
    ];
    // Write every change at once, so that a deletion decided too early
    // would land before the fault stops the unit.
    let mut options = test_options(2);
    options.write_batch = 1;
    for (name, fault) in faults {
        // Page faults are tested on walks of every page: with digests, an
        // honest digest would rightly spare the walk the faulty pages.
        options.digests = name.contains("digests");
        proxy.set_fault(fault);
        let report = fixture.reconcile_via(proxy.base_url(), &options).await;
        assert_eq!(
            live_phantoms(&fixture, &tenant).await,
            2,
            "{name}: a phantom was deleted"
        );
        assert_eq!(
            fixture
                .store
                .count_live("", Kind::TENANT)
                .await
                .expect("count"),
            12,
            "{name}: a tenant was deleted"
        );
        assert_ne!(
            report.status,
            RunStatus::Completed,
            "{name}: the run claims success\n{}",
            report.to_table()
        );
        let explained = report.units.iter().any(|unit| match &unit.outcome {
            UnitOutcome::Failed(reason) | UnitOutcome::Fenced(reason) => !reason.is_empty(),
            UnitOutcome::GuardTripped => true,
            UnitOutcome::Done | UnitOutcome::Cancelled => false,
        });
        assert!(
            explained,
            "{name}: no unit says what went wrong\n{}",
            report.to_table()
        );
    }
    // Without faults the phantoms do go: the checks above could fail.
    proxy.set_fault(Fault::None);
    let clean = fixture
        .reconcile_via(proxy.base_url(), &test_options(3))
        .await;
    assert_eq!(clean.status, RunStatus::Completed, "{}", clean.to_table());
    assert_eq!(live_phantoms(&fixture, &tenant).await, 0);
    assert_eq!(fixture.differences().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_half_a_tenant_trips_the_guard_and_the_override_deletes() {
    let fixture = Fixture::new(small_spec(22)).await;
    let first = fixture
        .reconcile_via(&fixture.source_url, &test_options(1))
        .await;
    assert_eq!(first.status, RunStatus::Completed);
    let (tenant, users) = largest_tenant(&fixture).await;
    let proxy = FaultySource::start(&fixture.source_url)
        .await
        .expect("proxy");
    proxy.set_fault(Fault::DropItems {
        path_contains: format!("/tenants/{tenant}/users"),
        share: 0.5,
    });
    let mut options = test_options(2);
    options.scope = Scope::Tenants(vec![tenant.clone()]);
    // The proxy lies in pages only: an honest digest would (rightly) find
    // the tenant unchanged and read no page.
    options.digests = false;
    let guarded = fixture.reconcile_via(proxy.base_url(), &options).await;
    let unit = guarded
        .units
        .iter()
        .find(|unit| unit.kind == Kind::USER)
        .expect("users unit");
    assert_eq!(
        unit.outcome,
        UnitOutcome::GuardTripped,
        "{}",
        guarded.to_table()
    );
    assert!(unit.skipped_by_guard as f64 > users as f64 * 0.3);
    assert_eq!(
        fixture
            .store
            .count_live(&tenant, Kind::USER)
            .await
            .expect("count"),
        users,
        "the guard let deletions through"
    );

    options.delete_guard.override_allowed = true;
    let overridden = fixture.reconcile_via(proxy.base_url(), &options).await;
    assert_eq!(
        overridden.status,
        RunStatus::Completed,
        "{}",
        overridden.to_table()
    );
    let left = fixture
        .store
        .count_live(&tenant, Kind::USER)
        .await
        .expect("count");
    assert_eq!(
        left,
        users - unit.skipped_by_guard,
        "the override did not delete what the source lacks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dry_run_writes_nothing_and_reports_what_a_real_run_then_fixes() {
    let fixture = Fixture::new(small_spec(23)).await;
    fixture
        .reconcile_via(&fixture.source_url, &test_options(1))
        .await;
    // Drift: garbled names, lost memberships, changes the replica missed.
    fixture.replica_sql("UPDATE replica_users SET display_name = 'garbled' WHERE id IN (SELECT id FROM replica_users ORDER BY id LIMIT 9)").await;
    fixture.replica_sql("DELETE FROM replica_memberships WHERE user_id IN (SELECT id FROM replica_users ORDER BY id DESC LIMIT 5)").await;
    recon_monolith::seed::random_changes(&fixture.monolith, 40, 5)
        .await
        .expect("changes");
    let before = fixture.replica_snapshot().await;
    let differences = fixture.differences().await;
    assert!(differences > 0);

    let mut options = test_options(2);
    options.dry_run = true;
    options.delete_guard.override_allowed = true;
    let dry = fixture.reconcile_via(&fixture.source_url, &options).await;
    assert_eq!(
        fixture.replica_snapshot().await,
        before,
        "the dry run wrote something"
    );
    assert_eq!(dry.total(|unit| unit.written), 0);
    assert_eq!(dry.generation_floor, None);

    options.dry_run = false;
    let real = fixture.reconcile_via(&fixture.source_url, &options).await;
    assert_eq!(real.status, RunStatus::Completed, "{}", real.to_table());
    for figure in [
        |u: &recon_core::UnitReport| u.missing,
        |u: &recon_core::UnitReport| u.phantom,
        |u: &recon_core::UnitReport| u.changed,
    ] {
        assert_eq!(
            dry.total(figure),
            real.total(figure),
            "dry:\n{}\nreal:\n{}",
            dry.to_table(),
            real.to_table()
        );
    }
    assert_eq!(fixture.differences().await, 0);
}
