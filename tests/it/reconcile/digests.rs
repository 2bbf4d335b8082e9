//! Range digests on real PostgreSQL (both databases) and the real Source
//! API: the databases compute the same element as recon, an unchanged
//! replica is checked without reading a page, and drift made behind recon's
//! back — including data changed in SQL — is still found and fixed.

use super::{Fixture, small_spec, test_options};
use recon_core::digest::record_element;
use recon_core::{
    Group, KeyRange, Kind, Membership, RangeDigest, Record, RunReport, RunStatus, Tenant, User,
    UserStatus, Version,
};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait};

async fn query(connection: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    connection
        .query_all_raw(Statement::from_string(
            connection.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .expect(sql)
}

/// Checks every row's stored `digest` of `table` against recon's element.
async fn check_elements(connection: &DatabaseConnection, table: &str, kind: Kind, live: &str) {
    let rows = query(connection, &format!("SELECT * FROM {table} {live}")).await;
    assert!(!rows.is_empty(), "{table} has rows to check");
    for row in rows {
        let text = |column: &str| row.try_get::<String>("", column).expect(column);
        let record = match kind {
            Kind::USER => Record::from(User {
                id: text("id"),
                email: text("email"),
                display_name: text("display_name"),
                status: text("status").parse::<UserStatus>().expect("status"),
            }),
            Kind::GROUP => Record::from(Group {
                id: text("id"),
                name: text("name"),
            }),
            Kind::MEMBERSHIP => Record::from(Membership {
                group_id: text("group_id"),
                user_id: text("user_id"),
            }),
            _ => unreachable!("tenants keep no digest"),
        };
        let version = Version::new(
            row.try_get::<i64>("", "generation").expect("generation") as u64,
            row.try_get::<i64>("", "sequence").expect("sequence") as u64,
        );
        let stored: i64 = row.try_get("", "digest").expect("digest");
        assert_eq!(
            stored,
            record_element(&record, version),
            "{table}: {record:?} at {version:?}"
        );
    }
}

fn tenant_pages(report: &RunReport) -> u64 {
    report
        .units
        .iter()
        .filter(|unit| unit.kind != Kind::TENANT)
        .map(|unit| unit.pages)
        .sum()
}

fn matched(report: &RunReport) -> u64 {
    report.units.iter().map(|unit| unit.digest_matched).sum()
}

#[tokio::test]
async fn postgres_computes_the_same_digest_element_as_recon() {
    let fixture = Fixture::new(small_spec(41)).await;
    let report = fixture
        .reconcile_via(&fixture.source_url, &test_options(1))
        .await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    let monolith = Database::connect(&fixture.monolith_db.url)
        .await
        .expect("monolith");
    let replica = fixture.store.connection();
    for (table, kind) in [
        ("users", Kind::USER),
        ("\"groups\"", Kind::GROUP),
        ("memberships", Kind::MEMBERSHIP),
    ] {
        check_elements(&monolith, table, kind, "").await;
    }
    for (table, kind) in [
        ("replica_users", Kind::USER),
        ("replica_groups", Kind::GROUP),
        ("replica_memberships", Kind::MEMBERSHIP),
    ] {
        check_elements(replica, table, kind, "WHERE NOT deleted").await;
    }
    // The pinned value of the core's unit test, computed by PostgreSQL
    // (the migrations created the functions from `POSTGRES_FUNCTIONS`).
    let rows = query(
        &monolith,
        "SELECT recon_row_digest(1, 1, 1, recon_digest_field('t1') || recon_digest_field('Tenant One')) AS d",
    )
    .await;
    let tenant = Record::from(Tenant {
        id: "t1".into(),
        name: "Tenant One".into(),
    });
    assert_eq!(
        rows[0].try_get::<i64>("", "d").expect("d"),
        record_element(&tenant, Version::new(1, 1))
    );
}

/// Fields with backslashes (which `decode(…, 'escape')` would read as
/// escapes if they were not doubled), multi-byte UTF-8 and an empty name
/// give PostgreSQL's element the bytes recon hashes — also in a session
/// with `standard_conforming_strings` off.
#[tokio::test]
async fn postgres_encodes_backslashes_and_multibyte_fields_as_recon_does() {
    let fixture = Fixture::new(small_spec(43)).await;
    let monolith = Database::connect(&fixture.monolith_db.url)
        .await
        .expect("monolith");
    for connection in [&monolith, fixture.store.connection()] {
        for conforming in ["on", "off"] {
            // One transaction: the setting and the statements on one session.
            let session = connection.begin().await.expect("begin");
            session
                .execute_unprepared(&format!(
                    "SET LOCAL standard_conforming_strings = {conforming}"
                ))
                .await
                .expect("set");
            for (id, name) in [
                (r"t\1", r"a\b\\c \101 \x41 é 😀"),
                ("t2", ""),
                (r"\", "\u{7f}\u{80}ß"),
            ] {
                let tenant = Record::from(Tenant {
                    id: id.into(),
                    name: name.into(),
                });
                let rows = session
                    .query_all_raw(Statement::from_sql_and_values(
                        session.get_database_backend(),
                        "SELECT recon_row_digest(3, 9, 1, recon_digest_field($1) || recon_digest_field($2)) AS d",
                        [id.into(), name.into()],
                    ))
                    .await
                    .expect("element");
                assert_eq!(
                    rows[0].try_get::<i64>("", "d").expect("d"),
                    record_element(&tenant, Version::new(3, 9)),
                    "{id:?} {name:?}, standard_conforming_strings {conforming}"
                );
            }
            session.rollback().await.expect("rollback");
        }
    }
}

/// The element functions are inlined into each generated column's
/// expression (no function call per written row): the plan of the
/// expression shows the built-ins it is made of, not the functions' names.
#[tokio::test]
async fn postgres_inlines_the_element_functions() {
    let fixture = Fixture::new(small_spec(44)).await;
    let monolith = Database::connect(&fixture.monolith_db.url)
        .await
        .expect("monolith");
    for (connection, table) in [
        (&monolith, "users"),
        (fixture.store.connection(), "replica_users"),
    ] {
        let plan = query(
            connection,
            &format!(
                "EXPLAIN (VERBOSE) SELECT {} FROM {table}",
                recon_core::digest::postgres_element_expression(Kind::USER)
            ),
        )
        .await
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("plan line"))
        .collect::<Vec<_>>()
        .join("\n");
        assert!(plan.contains("sha256"), "{plan}");
        assert!(
            !plan.contains("recon_row_digest") && !plan.contains("recon_digest_field"),
            "{table}: {plan}"
        );
    }
}

#[tokio::test]
async fn the_monolith_splits_a_range_into_buckets_that_add_up() {
    let fixture = Fixture::new(small_spec(42)).await;
    let (rows, _) = fixture.monolith.snapshot_rows().await.expect("rows");
    let tenant = rows
        .iter()
        .filter(|row| row.kind() == Kind::USER)
        .map(|row| row.tenant_id.clone())
        .max_by_key(|tenant| {
            rows.iter()
                .filter(|row| row.kind() == Kind::USER && &row.tenant_id == tenant)
                .count()
        })
        .expect("a tenant with users");
    let users: Vec<_> = rows
        .iter()
        .filter(|row| row.kind() == Kind::USER && row.tenant_id == tenant)
        .collect();
    let mut expected = RangeDigest::default();
    for row in &users {
        expected.add(record_element(&row.record, row.version));
    }
    let whole = fixture
        .monolith
        .digests(&tenant, Kind::USER, &KeyRange::all(), 1)
        .await
        .expect("one bucket");
    assert_eq!(whole.buckets.len(), 1);
    assert_eq!(whole.buckets[0].digest, expected);
    assert_eq!(whole.buckets[0].until, None);

    let split = fixture
        .monolith
        .digests(&tenant, Kind::USER, &KeyRange::all(), 4)
        .await
        .expect("four buckets");
    assert_eq!(split.buckets.len(), 4.min(users.len()));
    let mut total = RangeDigest::default();
    for bucket in &split.buckets {
        total.count += bucket.digest.count;
        total.sum = total.sum.wrapping_add(bucket.digest.sum);
    }
    assert_eq!(total, expected, "the buckets add up to the whole");
    let sizes: Vec<u64> = split
        .buckets
        .iter()
        .map(|bucket| bucket.digest.count)
        .collect();
    assert!(
        sizes.iter().max().expect("sizes") - sizes.iter().min().expect("sizes") <= 1,
        "ntile balances the buckets: {sizes:?}"
    );
    // A sub-range: after the first bucket's bound, up to the third's.
    let first = split.buckets[0].until.clone().expect("bounded");
    let third = split.buckets[2].until.clone().expect("bounded");
    let range = KeyRange {
        after: Some(first),
        until: Some(third.clone()),
    };
    let middle = fixture
        .monolith
        .digests(&tenant, Kind::USER, &range, 1)
        .await
        .expect("sub-range");
    assert_eq!(
        middle.buckets[0].digest.count,
        sizes[1] + sizes[2],
        "bounds are exclusive below, inclusive above"
    );
    assert_eq!(middle.buckets[0].until, Some(third));
    let missing = fixture
        .monolith
        .digests("no-such-tenant", Kind::USER, &KeyRange::all(), 1)
        .await
        .expect_err("unknown tenant");
    assert!(missing.to_string().contains("no-such-tenant"), "{missing}");
}

#[tokio::test]
async fn an_unchanged_replica_is_checked_by_digests_without_reading_a_page() {
    let fixture = Fixture::new(small_spec(43)).await;
    let first = fixture
        .reconcile_via(&fixture.source_url, &test_options(1))
        .await;
    assert_eq!(first.status, RunStatus::Completed, "{first:?}");
    assert!(tenant_pages(&first) > 0, "the first run loads pages");
    let second = fixture
        .reconcile_via(&fixture.source_url, &test_options(2))
        .await;
    assert_eq!(second.status, RunStatus::Completed, "{second:?}");
    assert_eq!(tenant_pages(&second), 0, "no page read: {second:?}");
    // Every tenant compared by the run's one request for all tenants'
    // digests (counted with the tenant list), none of its own.
    let per_tenant_requests: u64 = second
        .units
        .iter()
        .filter(|unit| unit.kind != Kind::TENANT)
        .map(|unit| unit.digest_requests)
        .sum();
    assert_eq!(per_tenant_requests, 0, "{second:?}");
    assert_eq!(second.units[0].kind, Kind::TENANT);
    assert_eq!(second.units[0].digest_requests, 1, "{second:?}");
    let compared: u64 = first
        .units
        .iter()
        .filter(|unit| unit.kind != Kind::TENANT)
        .map(|unit| unit.compared)
        .sum();
    assert_eq!(matched(&second), compared, "every row matched by digest");
    assert_eq!(fixture.differences().await, 0);
}

#[tokio::test]
async fn drift_behind_recons_back_is_found_with_digests() {
    let fixture = Fixture::new(small_spec(44)).await;
    let first = fixture
        .reconcile_via(&fixture.source_url, &test_options(1))
        .await;
    assert_eq!(first.status, RunStatus::Completed, "{first:?}");
    // Data changed in SQL, a version lowered, memberships deleted, phantom
    // users added.
    let garbled = fixture
        .replica_sql(
            "UPDATE replica_users SET display_name = 'garbled' WHERE (tenant_id, id) IN \
             (SELECT tenant_id, id FROM replica_users ORDER BY tenant_id, id LIMIT 3)",
        )
        .await;
    let lowered = fixture
        .replica_sql(
            "UPDATE replica_groups SET sequence = sequence - 1 WHERE (tenant_id, id) IN \
             (SELECT tenant_id, id FROM replica_groups ORDER BY tenant_id DESC, id LIMIT 2)",
        )
        .await;
    let deleted = fixture
        .replica_sql(
            "DELETE FROM replica_memberships WHERE (tenant_id, group_id, user_id) IN \
             (SELECT tenant_id, group_id, user_id FROM replica_memberships ORDER BY user_id LIMIT 4)",
        )
        .await;
    let phantoms = fixture
        .replica_sql(
            "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, sequence, deleted) \
             SELECT tenant_id, id || '-phantom', email, display_name, status, generation, sequence, false \
             FROM replica_users ORDER BY id DESC LIMIT 2",
        )
        .await;
    assert_eq!((garbled, lowered, deleted, phantoms), (3, 2, 4, 2));
    assert!(fixture.differences().await > 0);

    let report = fixture
        .reconcile_via(&fixture.source_url, &test_options(2))
        .await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    let sum =
        |field: fn(&recon_core::UnitReport) -> u64| -> u64 { report.units.iter().map(field).sum() };
    assert_eq!(sum(|unit| unit.changed), 5, "{report:?}");
    assert_eq!(sum(|unit| unit.missing), 4, "{report:?}");
    assert_eq!(sum(|unit| unit.phantom), 2, "{report:?}");
    assert!(matched(&report) > 0, "clean ranges were skipped");
    assert!(
        tenant_pages(&report) < tenant_pages(&first),
        "fewer pages than a full walk: {} vs {}",
        tenant_pages(&report),
        tenant_pages(&first)
    );
    assert_eq!(fixture.differences().await, 0);

    // The same damage with digests off is found by walking every row.
    fixture
        .replica_sql("UPDATE replica_users SET display_name = 'garbled again' WHERE id IN (SELECT id FROM replica_users ORDER BY id LIMIT 1)")
        .await;
    let mut options = test_options(3);
    options.digests = false;
    let full = fixture.reconcile_via(&fixture.source_url, &options).await;
    assert_eq!(full.status, RunStatus::Completed, "{full:?}");
    assert_eq!(matched(&full), 0);
    assert_eq!(tenant_pages(&full), tenant_pages(&first));
    assert_eq!(fixture.differences().await, 0);
}
