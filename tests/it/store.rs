//! Conformance suite of the replica store, run against SQLite and a real
//! PostgreSQL: the version guard, tombstones, the generation floor, the
//! reconciliation form, batching, the fence, and key-ordered range reads.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use recon_core::{
    Change, Deletion, EntityKey, Group, Kind, Membership, Record, Row, Tenant, User, UserStatus,
    Version,
};
use recon_store::{ErrorKind, FenceToken, GLOBAL_SCOPE, KeyRange, Store, WriteMode};
use recon_tests::{Backend, TestDatabase};
use std::collections::BTreeSet;

async fn store(backend: Backend) -> (Store, TestDatabase) {
    let database = TestDatabase::replica_store(backend)
        .await
        .expect("test database");
    let store = Store::connect(&database.url).await.expect("connect store");
    (store, database)
}

fn user(tenant: &str, id: &str, name: &str, version: Version) -> Change {
    Change::Upsert(Row {
        tenant_id: tenant.into(),
        record: Record::from(User {
            id: id.into(),
            email: format!("{id}@example.test"),
            display_name: name.into(),
            status: UserStatus::Active,
        }),
        version,
    })
}

fn delete(tenant: &str, kind: Kind, key: EntityKey, version: Version) -> Change {
    Change::Delete(Deletion {
        tenant_id: tenant.into(),
        kind,
        key,
        version,
    })
}

fn tenant(id: &str, version: Version) -> Change {
    Change::Upsert(Row {
        tenant_id: id.into(),
        record: Record::from(Tenant {
            id: id.into(),
            name: format!("tenant {id}"),
        }),
        version,
    })
}

fn membership(tenant: &str, group: &str, user: &str, version: Version) -> Change {
    Change::Upsert(Row {
        tenant_id: tenant.into(),
        record: Record::from(Membership {
            group_id: group.into(),
            user_id: user.into(),
        }),
        version,
    })
}

/// The live user `id` of `tenant` as (display name, version), if any.
async fn live_user(store: &Store, tenant: &str, id: &str) -> Option<(String, Version)> {
    let range = KeyRange {
        after: None,
        until: Some(EntityKey::id(id)),
    };
    let page = store
        .read_page(tenant, Kind::USER, &range, 10_000)
        .await
        .expect("read");
    page.into_iter()
        .find(|row| row.key == EntityKey::id(id))
        .map(|row| match row.row.record.as_user() {
            Some(user) => (user.display_name, row.row.version),
            None => panic!("not a user: {:?}", row.row.record),
        })
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(recon_tests::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(recon_tests::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Text that a multi-row write must carry as it is (PostgreSQL's writes
/// travel as array literals): quotes, backslashes, braces, commas, the word
/// NULL, empty text, spaces at the ends, non-ASCII.
async fn awkward_text_round_trips_through_a_batch(backend: Backend) {
    let (store, _database) = store(backend).await;
    let names = [
        r#"a "quoted" name"#,
        r"back\slash\",
        "{braces},commas",
        "NULL",
        "",
        "  spaced  ",
        "ünïcødé ✓",
    ];
    let changes: Vec<Change> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            user(
                "t1",
                &format!("u{index}"),
                name,
                Version::new(1, index as u64 + 1),
            )
        })
        .collect();
    let outcome = store.apply_events(&changes).await.expect("apply");
    assert_eq!(outcome.written, names.len() as u64);
    for (index, name) in names.iter().enumerate() {
        let (stored, _) = live_user(&store, "t1", &format!("u{index}"))
            .await
            .expect("the user was written");
        assert_eq!(stored, *name);
    }
}

on_both_backends!(
    awkward_text_round_trips_through_a_batch,
    tombstone_stops_an_older_create,
    events_below_the_generation_floor_are_skipped,
    reconciliation_form_overwrites_a_newer_version,
    reconciliation_form_keeps_a_row_newer_than_the_page,
    count_rows_counts_live_rows_in_a_range,
    batched_apply_keeps_the_newest_of_duplicates,
    fence_rejects_an_older_epoch_and_writes_nothing,
    global_fence_covers_every_scope,
    range_reads_are_key_ordered_bytewise,
    tenant_delete_tombstones_its_rows,
    purge_removes_old_tombstones_only,
    reads_within_many_ranges_return_their_rows_only,
    digests_of_many_ranges_equal_those_of_a_scan,
    orphan_scopes_are_tenants_with_live_rows_and_no_live_tenant_row,
);

async fn tombstone_stops_an_older_create(backend: Backend) {
    let (store, _db) = store(backend).await;
    store
        .apply_events(&[user("t", "u", "first", Version::new(1, 1))])
        .await
        .expect("create");
    store
        .apply_events(&[delete(
            "t",
            Kind::USER,
            EntityKey::id("u"),
            Version::new(1, 5),
        )])
        .await
        .expect("delete");
    let outcome = store
        .apply_events(&[user("t", "u", "replayed", Version::new(1, 3))])
        .await
        .expect("replay");
    assert_eq!(outcome.written, 0);
    assert_eq!(outcome.skipped_stale, 1);
    assert_eq!(
        live_user(&store, "t", "u").await,
        None,
        "an older create resurrected the row"
    );
    store
        .apply_events(&[user("t", "u", "recreated", Version::new(1, 6))])
        .await
        .expect("recreate");
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("recreated".into(), Version::new(1, 6)))
    );
}

async fn events_below_the_generation_floor_are_skipped(backend: Backend) {
    let (store, _db) = store(backend).await;
    let fence = FenceToken::new("t", 1);
    store
        .apply_events(&[user("t", "u", "gen1", Version::new(1, 10))])
        .await
        .expect("seed");
    store
        .raise_generation_floor(&fence, "t", 2)
        .await
        .expect("raise floor");
    assert_eq!(store.generation_floor("t").await.expect("floor"), 2);
    let outcome = store
        .apply_events(&[
            user("t", "u", "old generation", Version::new(1, 99)),
            user("t", "v", "new", Version::new(2, 1)),
        ])
        .await
        .expect("apply");
    assert_eq!(outcome.skipped_below_floor, 1);
    assert_eq!(outcome.written, 1);
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("gen1".into(), Version::new(1, 10)))
    );
    // The floor never goes down, and another tenant is not affected.
    store
        .raise_generation_floor(&fence, "t", 1)
        .await
        .expect("lower is a no-op");
    assert_eq!(store.generation_floor("t").await.expect("floor"), 2);
    assert_eq!(store.generation_floor("other").await.expect("floor"), 0);
    // The global floor applies to every tenant.
    store
        .raise_generation_floor(&fence, GLOBAL_SCOPE, 3)
        .await
        .expect("global floor");
    assert_eq!(store.generation_floor("other").await.expect("floor"), 3);
}

async fn reconciliation_form_overwrites_a_newer_version(backend: Backend) {
    let (store, _db) = store(backend).await;
    store
        .apply_events(&[user("t", "u", "phantom future", Version::new(1, 50))])
        .await
        .expect("seed");
    // After a restore (generation 2) the source holds the row at (1, 7) —
    // older than the stored (1, 50), but the truth: the stored version is
    // below the page's watermark (2, 7), so the reconciliation form writes it.
    let fence = FenceToken::new("t", 3);
    let outcome = store
        .apply(
            &[user("t", "u", "restored truth", Version::new(1, 7))],
            WriteMode::Reconcile(&fence, Version::new(2, 7)),
        )
        .await
        .expect("reconcile");
    assert_eq!(outcome.written, 1);
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("restored truth".into(), Version::new(1, 7)))
    );
    // A phantom gets a tombstone at the page's watermark, whatever it held.
    store
        .apply_reconciliation(
            &fence,
            Version::new(2, 8),
            &[delete(
                "t",
                Kind::USER,
                EntityKey::id("u"),
                Version::new(2, 8),
            )],
        )
        .await
        .expect("tombstone");
    assert_eq!(live_user(&store, "t", "u").await, None);
}

/// An event newer than the page that reconciliation read has landed: the
/// reconciliation form keeps it (upsert, tombstone and tenant cascade
/// alike) and counts it.
async fn reconciliation_form_keeps_a_row_newer_than_the_page(backend: Backend) {
    let (store, _db) = store(backend).await;
    store
        .apply_events(&[
            user(
                "t",
                "newer",
                "event after the snapshot",
                Version::new(1, 20),
            ),
            user("t", "older", "stale", Version::new(1, 5)),
            user("c", "x", "old", Version::new(1, 5)),
            user("c", "y", "event after the snapshot", Version::new(1, 30)),
        ])
        .await
        .expect("seed");
    let fence = FenceToken::new("t", 1);
    let watermark = Version::new(1, 10);
    let outcome = store
        .apply_reconciliation(
            &fence,
            watermark,
            &[
                user("t", "newer", "snapshot", Version::new(1, 9)),
                user("t", "older", "snapshot", Version::new(1, 9)),
            ],
        )
        .await
        .expect("reconcile");
    assert_eq!((outcome.written, outcome.kept_newer), (1, 1));
    assert_eq!(
        live_user(&store, "t", "newer").await,
        Some(("event after the snapshot".into(), Version::new(1, 20)))
    );
    assert_eq!(
        live_user(&store, "t", "older").await,
        Some(("snapshot".into(), Version::new(1, 9)))
    );
    let outcome = store
        .apply_reconciliation(
            &fence,
            watermark,
            &[delete("t", Kind::USER, EntityKey::id("newer"), watermark)],
        )
        .await
        .expect("tombstone");
    assert_eq!((outcome.written, outcome.kept_newer), (0, 1));
    assert!(live_user(&store, "t", "newer").await.is_some());
    store
        .apply_reconciliation(
            &FenceToken::new("c", 1),
            watermark,
            &[delete("c", Kind::TENANT, EntityKey::id("c"), watermark)],
        )
        .await
        .expect("tenant delete");
    assert_eq!(live_user(&store, "c", "x").await, None);
    assert_eq!(
        live_user(&store, "c", "y").await,
        Some(("event after the snapshot".into(), Version::new(1, 30))),
        "the cascade tombstoned a row newer than the page"
    );
}

async fn count_rows_counts_live_rows_in_a_range(backend: Backend) {
    let (store, _db) = store(backend).await;
    store
        .apply_events(&[
            tenant("a", Version::new(1, 1)),
            tenant("b", Version::new(1, 1)),
            user("a", "u1", "n", Version::new(1, 1)),
            user("a", "u2", "n", Version::new(1, 1)),
            user("a", "u3", "n", Version::new(1, 1)),
            user("b", "u1", "n", Version::new(1, 1)),
            delete("a", Kind::USER, EntityKey::id("u4"), Version::new(1, 2)),
        ])
        .await
        .expect("seed");
    let range = KeyRange {
        after: Some(EntityKey::id("u1")),
        until: Some(EntityKey::id("u2")),
    };
    let count = |tenant: Option<&'static str>, kind: Kind, range: KeyRange| {
        let store = store.clone();
        async move {
            store
                .count_live_in(tenant, kind, &range)
                .await
                .expect("count")
        }
    };
    assert_eq!(count(Some("a"), Kind::USER, KeyRange::all()).await, 3);
    assert_eq!(count(Some("a"), Kind::USER, range).await, 1);
    assert_eq!(count(None, Kind::USER, KeyRange::all()).await, 4);
    assert_eq!(count(None, Kind::TENANT, KeyRange::all()).await, 2);
}

async fn orphan_scopes_are_tenants_with_live_rows_and_no_live_tenant_row(backend: Backend) {
    let (store, _db) = store(backend).await;
    store
        .apply_events(&[
            tenant("alive", Version::new(1, 1)),
            user("alive", "u1", "n", Version::new(1, 1)),
            // Rows whose tenant row never came.
            user("never", "u1", "n", Version::new(1, 1)),
            membership("never", "g1", "u1", Version::new(1, 1)),
            // A tenant deleted, then a row of it written after the deletion.
            tenant("deleted", Version::new(1, 1)),
            delete(
                "deleted",
                Kind::TENANT,
                EntityKey::id("deleted"),
                Version::new(1, 2),
            ),
            user("deleted", "late", "n", Version::new(1, 3)),
            // A tenant deleted with all its rows: no live row left.
            tenant("empty", Version::new(1, 1)),
            user("empty", "u1", "n", Version::new(1, 1)),
            delete(
                "empty",
                Kind::TENANT,
                EntityKey::id("empty"),
                Version::new(1, 2),
            ),
        ])
        .await
        .expect("seed");
    assert_eq!(
        store.orphan_scopes().await.expect("orphan scopes"),
        ["deleted", "never"]
    );
}

async fn batched_apply_keeps_the_newest_of_duplicates(backend: Backend) {
    let (store, _db) = store(backend).await;
    let mut batch = Vec::new();
    for index in 0..1_200u64 {
        batch.push(user(
            "t",
            &format!("u{index:05}"),
            "v1",
            Version::new(1, index + 1),
        ));
    }
    // Duplicates within the batch, newest not last.
    batch.push(user("t", "dup", "newest", Version::new(1, 5_000)));
    batch.push(user("t", "dup", "older", Version::new(1, 4_000)));
    batch.push(delete(
        "t",
        Kind::USER,
        EntityKey::id("gone"),
        Version::new(1, 6_000),
    ));
    batch.push(user(
        "t",
        "gone",
        "older than its deletion",
        Version::new(1, 5_999),
    ));
    let outcome = store.apply_events(&batch).await.expect("apply");
    assert_eq!(
        outcome.written, 1_202,
        "1200 users, dup once, one tombstone"
    );
    assert_eq!(outcome.skipped_stale, 2);
    assert_eq!(
        store.count_live("t", Kind::USER).await.expect("count"),
        1_201
    );
    assert_eq!(
        live_user(&store, "t", "dup").await,
        Some(("newest".into(), Version::new(1, 5_000)))
    );
    assert_eq!(live_user(&store, "t", "gone").await, None);
    // Applying the same batch again changes nothing.
    let again = store.apply_events(&batch).await.expect("apply again");
    assert_eq!(again.written, 0);
}

async fn fence_rejects_an_older_epoch_and_writes_nothing(backend: Backend) {
    let (store, _db) = store(backend).await;
    let current = FenceToken::new("t", 7);
    store
        .apply_reconciliation(
            &current,
            Version::new(1, 100),
            &[user("t", "u", "by epoch 7", Version::new(1, 1))],
        )
        .await
        .expect("epoch 7");
    let zombie = FenceToken::new("t", 6);
    let error = store
        .apply_reconciliation(
            &zombie,
            Version::new(1, 100),
            &[
                user("t", "u", "by zombie", Version::new(1, 2)),
                user("t", "z", "zombie row", Version::new(1, 3)),
            ],
        )
        .await
        .expect_err("epoch 6 must be rejected");
    assert_eq!(error.kind(), ErrorKind::StaleEpoch, "{error}");
    assert!(error.to_string().contains("stale epoch 6"), "{error}");
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("by epoch 7".into(), Version::new(1, 1)))
    );
    assert_eq!(
        live_user(&store, "t", "z").await,
        None,
        "part of a fenced batch landed"
    );
    // The same epoch may keep writing, a newer one takes over.
    store
        .apply_reconciliation(
            &current,
            Version::new(1, 100),
            &[user("t", "u", "still 7", Version::new(1, 4))],
        )
        .await
        .expect("same epoch");
    store
        .apply_reconciliation(
            &FenceToken::new("t", 8),
            Version::new(1, 100),
            &[user("t", "u", "by 8", Version::new(1, 5))],
        )
        .await
        .expect("epoch 8");
    let error = store
        .raise_generation_floor(&current, "t", 9)
        .await
        .expect_err("floor raise is fenced too");
    assert_eq!(error.kind(), ErrorKind::StaleEpoch);
    assert_eq!(store.generation_floor("t").await.expect("floor"), 0);
}

async fn global_fence_covers_every_scope(backend: Backend) {
    let (store, _db) = store(backend).await;
    store
        .raise_fence(&FenceToken::new(GLOBAL_SCOPE, 10))
        .await
        .expect("new leader raises global fence");
    let error = store
        .apply_reconciliation(
            &FenceToken::new("never-touched-tenant", 9),
            Version::new(1, 100),
            &[user(
                "never-touched-tenant",
                "u",
                "zombie",
                Version::new(1, 1),
            )],
        )
        .await
        .expect_err("zombie epoch 9 must be rejected on any scope");
    assert_eq!(error.kind(), ErrorKind::StaleEpoch);
    assert_eq!(
        store
            .count_live("never-touched-tenant", Kind::USER)
            .await
            .expect("count"),
        0
    );
    let error = store
        .raise_fence(&FenceToken::new(GLOBAL_SCOPE, 9))
        .await
        .expect_err("older leader");
    assert_eq!(error.kind(), ErrorKind::StaleEpoch);
}

async fn range_reads_are_key_ordered_bytewise(backend: Backend) {
    let (store, _db) = store(backend).await;
    // Upper case sorts before lower case, '-' before digits, multi-byte after ASCII.
    let ids = ["b", "B", "a-1", "a1", "a", "Z", "é", "~", "a-", "0"];
    let batch: Vec<Change> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| user("t", id, "n", Version::new(1, index as u64 + 1)))
        .collect();
    store.apply_events(&batch).await.expect("apply");
    store
        .apply_events(&[user("other-tenant", "a0", "n", Version::new(1, 1))])
        .await
        .expect("other tenant");
    let expected: Vec<String> = ids
        .iter()
        .map(|id| id.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let read: Vec<String> = read_all(&store, "t", Kind::USER, KeyRange::all(), 3).await;
    assert_eq!(read, expected);
    // (after, until] bounds.
    let range = KeyRange {
        after: Some(EntityKey::id("B")),
        until: Some(EntityKey::id("a1")),
    };
    let bounded = read_all(&store, "t", Kind::USER, range.clone(), 2).await;
    let expected_bounded: Vec<String> = expected
        .iter()
        .filter(|id| range.contains(&EntityKey::id(id.as_str())))
        .cloned()
        .collect();
    assert_eq!(bounded, expected_bounded);
    assert_eq!(bounded.first().map(String::as_str), Some("Z"));
    // Memberships order by (group_id, user_id), not by the joined string:
    // "a:z" < "a-:b" as tuples, but ":" (0x3a) > "-" (0x2d) as strings.
    let memberships = [("a-", "b"), ("a", "z"), ("a", "b")];
    let batch: Vec<Change> = memberships
        .iter()
        .map(|(g, u)| membership("t", g, u, Version::new(1, 1)))
        .collect();
    store.apply_events(&batch).await.expect("memberships");
    let read = read_all(&store, "t", Kind::MEMBERSHIP, KeyRange::all(), 1).await;
    assert_eq!(read, vec!["a:b", "a:z", "a-:b"]);
    let after = KeyRange {
        after: Some(EntityKey::pair("a", "b")),
        until: None,
    };
    assert_eq!(
        read_all(&store, "t", Kind::MEMBERSHIP, after, 10).await,
        vec!["a:z", "a-:b"]
    );
}

/// 300 users and 300 memberships of tenant `t` (every tenth user a
/// tombstone), and one user of another tenant.
async fn many_rows(store: &Store) {
    let mut batch = Vec::new();
    for index in 0..300u64 {
        let id = format!("u{index:03}");
        batch.push(user("t", &id, "n", Version::new(1, index + 1)));
        batch.push(membership(
            "t",
            &format!("g{}", index % 7),
            &id,
            Version::new(1, index + 1),
        ));
    }
    batch.push(user("other", "u005", "n", Version::new(1, 1)));
    store.apply_events(&batch).await.expect("seed");
    let deletions: Vec<Change> = (0..300u64)
        .step_by(10)
        .map(|index| {
            delete(
                "t",
                Kind::USER,
                EntityKey::id(format!("u{index:03}")),
                Version::new(1, 400),
            )
        })
        .collect();
    store.apply_events(&deletions).await.expect("tombstones");
}

async fn reads_within_many_ranges_return_their_rows_only(backend: Backend) {
    use recon_core::ports::ReplicaStore;
    let (store, _db) = store(backend).await;
    many_rows(&store).await;
    // Every 20th user's next four: (u000, u004], (u020, u024], …; the last
    // range open above.
    let mut ranges: Vec<KeyRange> = (0..300u64)
        .step_by(20)
        .map(|index| KeyRange {
            after: Some(EntityKey::id(format!("u{index:03}"))),
            until: Some(EntityKey::id(format!("u{:03}", index + 4))),
        })
        .collect();
    ranges.push(KeyRange {
        after: Some(EntityKey::id("u297")),
        until: None,
    });
    let expected: Vec<String> = (0..300u64)
        .filter(|index| index % 10 != 0)
        .map(|index| format!("u{index:03}"))
        .filter(|id| {
            ranges
                .iter()
                .any(|range| range.contains(&EntityKey::id(id.as_str())))
        })
        .collect();
    let read = store
        .read_rows("t", Kind::USER, &ranges, 1_000)
        .await
        .expect("read within");
    let keys: Vec<String> = read.iter().map(|row| row.key().to_string()).collect();
    assert_eq!(keys, expected);
    // A limit cuts the page in key order.
    let first = store
        .read_rows("t", Kind::USER, &ranges, 5)
        .await
        .expect("read within");
    let keys: Vec<String> = first.iter().map(|row| row.key().to_string()).collect();
    assert_eq!(keys, expected[..5].to_vec());
    // Memberships: pairs as bounds.
    let ranges = [
        KeyRange {
            after: None,
            until: Some(EntityKey::pair("g0", "u014")),
        },
        KeyRange {
            after: Some(EntityKey::pair("g3", "u290")),
            until: Some(EntityKey::pair("g4", "u004")),
        },
    ];
    let read = store
        .read_rows("t", Kind::MEMBERSHIP, &ranges, 1_000)
        .await
        .expect("read memberships within");
    let keys: Vec<String> = read.iter().map(|row| row.key().to_string()).collect();
    assert_eq!(
        keys,
        vec!["g0:u000", "g0:u007", "g0:u014", "g3:u297", "g4:u004"]
    );
}

async fn digests_of_many_ranges_equal_those_of_a_scan(backend: Backend) {
    use recon_core::ports::{ReplicaStore, digests_by_scan};
    let (store, _db) = store(backend).await;
    many_rows(&store).await;
    for kind in [Kind::USER, Kind::MEMBERSHIP] {
        // 149 bounded ranges of two keys each after an open first, and an
        // open last: PostgreSQL aggregates them in one statement.
        let keys: Vec<EntityKey> = store
            .read_rows("t", kind, &[KeyRange::all()], 1_000)
            .await
            .expect("keys")
            .iter()
            .map(recon_core::Row::key)
            .collect();
        let mut bounds: Vec<Option<EntityKey>> =
            keys.iter().step_by(2).skip(1).cloned().map(Some).collect();
        bounds.push(None);
        assert!(bounds.len() > 100, "{} bounds", bounds.len());
        let aggregated = store
            .digest_ranges("t", kind, None, &bounds)
            .await
            .expect("digests");
        let scanned = digests_by_scan(&store, "t", kind, None, &bounds)
            .await
            .expect("scan");
        assert_eq!(aggregated, scanned, "{kind}");
        let total: u64 = aggregated.iter().map(|digest| digest.count).sum();
        assert_eq!(
            total,
            keys.len() as u64,
            "{kind}: every live row in one range"
        );
        // Bounded above, starting after a key.
        let after = keys[10].clone();
        let bounds: Vec<Option<EntityKey>> =
            keys[11..].iter().step_by(2).cloned().map(Some).collect();
        let aggregated = store
            .digest_ranges("t", kind, Some(&after), &bounds)
            .await
            .expect("digests");
        let scanned = digests_by_scan(&store, "t", kind, Some(&after), &bounds)
            .await
            .expect("scan");
        assert_eq!(aggregated, scanned, "{kind} after a key");
    }
}

async fn read_all(
    store: &Store,
    tenant: &str,
    kind: Kind,
    range: KeyRange,
    page_size: u64,
) -> Vec<String> {
    use futures::TryStreamExt;
    let rows: Vec<_> = store
        .stream_range(tenant, kind, range, page_size)
        .try_collect()
        .await
        .expect("stream");
    rows.into_iter().map(|row| row.key.to_string()).collect()
}

async fn tenant_delete_tombstones_its_rows(backend: Backend) {
    let (store, _db) = store(backend).await;
    store
        .apply_events(&[
            tenant("t", Version::new(1, 1)),
            user("t", "u", "n", Version::new(1, 2)),
            Change::Upsert(Row {
                tenant_id: "t".into(),
                record: Record::from(Group {
                    id: "g".into(),
                    name: "G".into(),
                }),
                version: Version::new(1, 3),
            }),
            membership("t", "g", "u", Version::new(1, 4)),
            user(
                "t",
                "late",
                "created after the deletion",
                Version::new(1, 20),
            ),
            tenant("keep", Version::new(1, 5)),
            user("keep", "u", "n", Version::new(1, 6)),
        ])
        .await
        .expect("seed");
    store
        .apply_events(&[delete(
            "t",
            Kind::TENANT,
            EntityKey::id("t"),
            Version::new(1, 10),
        )])
        .await
        .expect("delete tenant");
    assert_eq!(store.count_live("t", Kind::GROUP).await.expect("count"), 0);
    assert_eq!(
        store
            .count_live("t", Kind::MEMBERSHIP)
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        read_all(&store, "t", Kind::USER, KeyRange::all(), 10).await,
        vec!["late"],
        "event form spares newer rows"
    );
    assert_eq!(
        read_all(&store, "", Kind::TENANT, KeyRange::all(), 10).await,
        vec!["keep"]
    );
    assert_eq!(
        store.count_live("keep", Kind::USER).await.expect("count"),
        1
    );
    // The reconciliation form removes everything of a tenant the source lost
    // that is not newer than the page's watermark.
    store
        .apply_reconciliation(
            &FenceToken::new("t", 1),
            Version::new(1, 30),
            &[delete(
                "t",
                Kind::TENANT,
                EntityKey::id("t"),
                Version::new(1, 30),
            )],
        )
        .await
        .expect("reconcile delete");
    assert_eq!(store.count_live("t", Kind::USER).await.expect("count"), 0);
}

async fn purge_removes_old_tombstones_only(backend: Backend) {
    let (store, _db) = store(backend).await;
    store
        .apply_events(&[
            user("t", "live", "n", Version::new(1, 1)),
            delete("t", Kind::USER, EntityKey::id("dead"), Version::new(1, 2)),
        ])
        .await
        .expect("seed");
    assert_eq!(
        store
            .purge_tombstones(std::time::Duration::from_secs(3600))
            .await
            .expect("purge"),
        0,
        "too young"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        store
            .purge_tombstones(std::time::Duration::ZERO)
            .await
            .expect("purge"),
        1
    );
    assert_eq!(store.count_live("t", Kind::USER).await.expect("count"), 1);
    // With the tombstone gone (after retention), the row may be created again.
    store
        .apply_events(&[user("t", "dead", "back", Version::new(1, 1))])
        .await
        .expect("recreate");
    assert!(live_user(&store, "t", "dead").await.is_some());
}

/// One entity's history: upserts and deletions at distinct versions.
fn history_strategy() -> impl Strategy<Value = Vec<(u64, bool)>> {
    prop::collection::btree_set(1u64..200, 1..8).prop_flat_map(|sequences| {
        let sequences: Vec<u64> = sequences.into_iter().collect();
        let length = sequences.len();
        (
            Just(sequences),
            prop::collection::vec(any::<bool>(), length),
        )
            .prop_map(|(sequences, deletes)| sequences.into_iter().zip(deletes).collect::<Vec<_>>())
    })
}

fn permutation_with_duplicates(
    history: Vec<(u64, bool)>,
) -> impl Strategy<Value = Vec<(u64, bool)>> {
    let length = history.len();
    (Just(history), prop::collection::vec(0..length, 0..4)).prop_flat_map(
        |(history, duplicate_indices)| {
            let mut events = history.clone();
            events.extend(duplicate_indices.into_iter().map(|index| history[index]));
            Just(events).prop_shuffle()
        },
    )
}

/// Any permutation of an entity's history, duplicates included, applied one
/// event per batch or all in one batch, ends at the newest version.
fn version_guard_property(backend: Backend) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (store, _db) = runtime.block_on(store(backend));
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = history_strategy().prop_flat_map(|history| {
        (
            Just(history.clone()),
            permutation_with_duplicates(history),
            any::<bool>(),
        )
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&strategy, |(history, events, one_batch)| {
            let id = format!(
                "entity-{}",
                case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let changes: Vec<Change> = events
                .iter()
                .map(|(sequence, is_delete)| {
                    let version = Version::new(1, *sequence);
                    if *is_delete {
                        delete("t", Kind::USER, EntityKey::id(&id), version)
                    } else {
                        user("t", &id, &format!("name at {sequence}"), version)
                    }
                })
                .collect();
            let (newest_sequence, newest_is_delete) =
                *history.iter().max().expect("non-empty history");
            let live = runtime.block_on(async {
                if one_batch {
                    store.apply_events(&changes).await.expect("apply batch");
                } else {
                    for change in &changes {
                        store
                            .apply_events(std::slice::from_ref(change))
                            .await
                            .expect("apply one");
                    }
                }
                live_user(&store, "t", &id).await
            });
            if newest_is_delete {
                prop_assert_eq!(live, None);
            } else {
                prop_assert_eq!(
                    live,
                    Some((
                        format!("name at {newest_sequence}"),
                        Version::new(1, newest_sequence)
                    ))
                );
            }
            Ok(())
        })
        .expect("version guard holds for every permutation");
}

#[test]
fn version_guard_any_permutation_sqlite() {
    version_guard_property(Backend::Sqlite);
}

#[test]
fn version_guard_any_permutation_postgres() {
    version_guard_property(Backend::Postgres);
}

/// A reconciliation batch names its scope and epoch to triggers on the
/// data tables (transaction-local settings, PostgreSQL only), which is how
/// recon-chaos's fencing audit learns a write's epoch without relying on
/// the fence; an event batch names none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconciliation_writes_name_their_epoch_to_data_triggers() {
    use sea_orm::{ConnectionTrait, Statement};
    let (store, _db) = store(Backend::Postgres).await;
    let connection = store.connection();
    for statement in [
        "CREATE TABLE seen (id SERIAL PRIMARY KEY, scope TEXT, epoch TEXT)",
        "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO seen (scope, epoch) VALUES (current_setting('recon.write_scope', true), \
             current_setting('recon.write_epoch', true)); RETURN NULL; END $$",
        "CREATE TRIGGER note AFTER INSERT OR UPDATE ON replica_users \
           FOR EACH STATEMENT EXECUTE FUNCTION note()",
    ] {
        connection
            .execute_unprepared(statement)
            .await
            .expect(statement);
    }
    store
        .apply_reconciliation(
            &FenceToken::new("t", 4),
            Version::new(1, 100),
            &[user("t", "u", "reconciled", Version::new(1, 1))],
        )
        .await
        .expect("reconcile");
    store
        .apply_events(&[user("t", "u", "event", Version::new(1, 2))])
        .await
        .expect("event");
    let rows = connection
        .query_all_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT coalesce(scope, '') AS scope, coalesce(epoch, '') AS epoch FROM seen ORDER BY id",
        ))
        .await
        .expect("read what the trigger saw");
    let mut seen: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            (
                row.try_get("", "scope").expect("scope"),
                row.try_get("", "epoch").expect("epoch"),
            )
        })
        .collect();
    // `INSERT … ON CONFLICT DO UPDATE` fires the statement triggers of
    // both INSERT and UPDATE.
    seen.dedup();
    assert_eq!(
        seen,
        [
            ("t".to_owned(), "4".to_owned()),
            (String::new(), String::new())
        ]
    );
}

mod interleavings;
