//! The delete guard counts what a deletion really removes: a tenant the
//! source no longer lists takes all of its rows with it.

use super::{Fixture, small_spec, test_options};
use recon_core::{Kind, RunStatus, TenantRemoval, UnitOutcome};

/// Plants a live tenant the source does not have, with `users` users.
async fn plant_tenant(fixture: &Fixture, tenant: &str, users: u32) {
    fixture
        .replica_sql(&format!(
            "INSERT INTO replica_tenants (id, name, generation, sequence, deleted) \
             VALUES ('{tenant}', 'lost', 1, 1, FALSE)"
        ))
        .await;
    let planted = fixture
        .replica_sql(&format!(
            "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, sequence, deleted) \
             SELECT '{tenant}', 'u' || lpad(n::text, 5, '0'), 'u' || n || '@x', 'lost', 'active', 1, 1, FALSE \
             FROM generate_series(1, {users}) AS n"
        ))
        .await;
    assert_eq!(planted, u64::from(users));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_lost_from_the_list_with_a_thousand_users_trips_the_guard() {
    let fixture = Fixture::new(small_spec(24)).await;
    let first = fixture
        .reconcile_via(&fixture.source_url, &test_options(1))
        .await;
    assert_eq!(first.status, RunStatus::Completed, "{}", first.to_table());
    let tenants = fixture
        .store
        .count_live("", Kind::TENANT)
        .await
        .expect("count");

    // A tiny tenant the source lost goes by default: the guard discriminates.
    plant_tenant(&fixture, "zz-tiny", 2).await;
    let tiny = fixture
        .reconcile_via(&fixture.source_url, &test_options(2))
        .await;
    assert_eq!(tiny.status, RunStatus::Completed, "{}", tiny.to_table());
    assert_eq!(fixture.differences().await, 0);

    // One with 1,000 users trips it: nothing deleted, and the report names
    // the tenant and what its deletion would remove.
    plant_tenant(&fixture, "zz-lost", 1_000).await;
    let guarded = fixture
        .reconcile_via(&fixture.source_url, &test_options(3))
        .await;
    let list = &guarded.units[0];
    assert_eq!(list.kind, Kind::TENANT);
    assert_eq!(
        list.outcome,
        UnitOutcome::GuardTripped,
        "{}",
        guarded.to_table()
    );
    assert_eq!(
        list.removed_tenants,
        vec![TenantRemoval {
            tenant: "zz-lost".into(),
            live: [
                ("groups".to_owned(), 0),
                ("memberships".to_owned(), 0),
                ("users".to_owned(), 1_000)
            ]
            .into(),
        }]
    );
    assert!(
        guarded
            .to_table()
            .contains("tenant zz-lost gone from the source: 1000 users"),
        "{}",
        guarded.to_table()
    );
    assert_ne!(guarded.status, RunStatus::Completed);
    assert_eq!(
        fixture
            .store
            .count_live("zz-lost", Kind::USER)
            .await
            .expect("count"),
        1_000,
        "the tenant's users were deleted"
    );
    assert_eq!(
        fixture
            .store
            .count_live("", Kind::TENANT)
            .await
            .expect("count"),
        tenants + 1
    );

    // The operator's override deletes it, cascade included.
    let mut options = test_options(4);
    options.delete_guard.override_allowed = true;
    let overridden = fixture.reconcile_via(&fixture.source_url, &options).await;
    assert_eq!(
        overridden.status,
        RunStatus::Completed,
        "{}",
        overridden.to_table()
    );
    assert_eq!(
        fixture
            .store
            .count_live("zz-lost", Kind::USER)
            .await
            .expect("count"),
        0
    );
    assert_eq!(fixture.differences().await, 0);
}
