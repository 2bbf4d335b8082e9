//! The interleavings of an event and a reconciliation write that a run
//! leaving consumers running (`--pause never`) meets, one test each, on
//! SQLite and PostgreSQL (`docs/pause-free.md`, the table's numbers). Each
//! fails against a deliberately broken guard: `scripts/guard-mutants.py`.
//!
//! A page read at watermark `W = (1, 10)` is the reconciliation's truth at
//! or below `W`; an event above `W` is newer than anything the page knows.

use super::{delete, live_user, store, user};
use recon_core::{EntityKey, Kind, Version};
use recon_store::{FenceToken, GLOBAL_SCOPE, Store};
use recon_tests::Backend;

const W: Version = Version::new(1, 10);

fn fence() -> FenceToken {
    FenceToken::new("t", 1)
}

async fn reconcile(store: &Store, change: recon_core::Change) {
    store
        .apply_reconciliation(&fence(), W, &[change])
        .await
        .expect("reconciliation write");
}

async fn event(store: &Store, change: recon_core::Change) {
    store.apply_events(&[change]).await.expect("event");
}

/// #1: an update at (1, 7), at or below `W`, that the replica had not
/// applied when the page was read: the page carries it (at (1, 9), a later
/// one), and when the stream catches up and delivers (1, 7) late, it is
/// older than the row and skipped.
async fn an_event_the_page_already_reflects_is_skipped_when_it_arrives(backend: Backend) {
    let (store, _db) = store(backend).await;
    event(&store, user("t", "u", "old", Version::new(1, 3))).await;
    reconcile(&store, user("t", "u", "page", Version::new(1, 9))).await;
    let outcome = store
        .apply_events(&[user("t", "u", "late", Version::new(1, 7))])
        .await
        .expect("late event");
    assert_eq!(outcome.skipped_stale, 1);
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("page".into(), Version::new(1, 9)))
    );
}

/// #2: the page read `u` at (1, 9); an update at (1, 11) lands before the
/// reconciliation's upsert: the update stays.
async fn an_update_between_the_read_and_the_write_is_kept(backend: Backend) {
    let (store, _db) = store(backend).await;
    event(&store, user("t", "u", "old", Version::new(1, 3))).await;
    event(&store, user("t", "u", "update", Version::new(1, 11))).await;
    reconcile(&store, user("t", "u", "page", Version::new(1, 9))).await;
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("update".into(), Version::new(1, 11)))
    );
}

/// #3: the same update lands after the upsert: it replaces it.
async fn an_update_after_the_write_replaces_it(backend: Backend) {
    let (store, _db) = store(backend).await;
    event(&store, user("t", "u", "old", Version::new(1, 3))).await;
    reconcile(&store, user("t", "u", "page", Version::new(1, 9))).await;
    event(&store, user("t", "u", "update", Version::new(1, 11))).await;
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("update".into(), Version::new(1, 11)))
    );
}

/// #4: the page did not have `u` (created after it was read); the create
/// event lands before the phantom's tombstone: the tombstone never hides
/// it.
async fn a_phantom_tombstone_never_hides_a_create_above_the_watermark(backend: Backend) {
    let (store, _db) = store(backend).await;
    event(&store, user("t", "u", "created", Version::new(1, 11))).await;
    reconcile(&store, delete("t", Kind::USER, EntityKey::id("u"), W)).await;
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("created".into(), Version::new(1, 11)))
    );
}

/// #5: a phantom of the replica (at (1, 5)) is tombstoned at `W`; the key's
/// create event at (1, 11) lands afterwards: the row is live again.
async fn a_create_after_the_phantom_tombstone_revives_the_row(backend: Backend) {
    let (store, _db) = store(backend).await;
    event(&store, user("t", "u", "phantom", Version::new(1, 5))).await;
    reconcile(&store, delete("t", Kind::USER, EntityKey::id("u"), W)).await;
    assert_eq!(live_user(&store, "t", "u").await, None);
    event(&store, user("t", "u", "created", Version::new(1, 11))).await;
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("created".into(), Version::new(1, 11)))
    );
}

/// #6: a delete at (1, 11) lands before the upsert of the row the page
/// read at (1, 9), or after it: either way the row ends deleted.
async fn a_delete_event_is_not_undone_by_the_page(backend: Backend) {
    let (store, _db) = store(backend).await;
    event(&store, user("t", "u", "old", Version::new(1, 3))).await;
    event(
        &store,
        delete("t", Kind::USER, EntityKey::id("u"), Version::new(1, 11)),
    )
    .await;
    reconcile(&store, user("t", "u", "page", Version::new(1, 9))).await;
    assert_eq!(live_user(&store, "t", "u").await, None, "delete first");
    event(&store, user("t", "v", "old", Version::new(1, 3))).await;
    reconcile(&store, user("t", "v", "page", Version::new(1, 9))).await;
    event(
        &store,
        delete("t", Kind::USER, EntityKey::id("v"), Version::new(1, 11)),
    )
    .await;
    assert_eq!(live_user(&store, "t", "v").await, None, "delete last");
}

/// #8: `u` was created at (1, 3) and deleted at (1, 4), both below `W`;
/// the replica applied only the create, so the page makes it a phantom
/// and tombstones it at `W`. The late events (a replayed update at (1, 4))
/// are older than the tombstone and do not bring it back.
async fn late_events_below_the_watermark_do_not_revive_a_phantom(backend: Backend) {
    let (store, _db) = store(backend).await;
    event(&store, user("t", "u", "created", Version::new(1, 3))).await;
    reconcile(&store, delete("t", Kind::USER, EntityKey::id("u"), W)).await;
    event(&store, user("t", "u", "late update", Version::new(1, 4))).await;
    assert_eq!(live_user(&store, "t", "u").await, None, "revived");
    event(
        &store,
        delete("t", Kind::USER, EntityKey::id("u"), Version::new(1, 4)),
    )
    .await;
    assert_eq!(live_user(&store, "t", "u").await, None);
}

/// #9: the monolith was restored: the replica holds `u` at (1, 500), a
/// future the backup does not have; the source (generation 2) has it at
/// (1, 50). A run that leaves consumers running raises the floor first,
/// repairs `u` (the lower version is allowed: the page is of generation
/// 2), and an event of the lost future still in Kafka, at (1, 501), is
/// skipped instead of undoing the repair.
async fn an_event_of_the_lost_future_cannot_undo_a_repair(backend: Backend) {
    let (store, _db) = store(backend).await;
    event(&store, user("t", "u", "lost future", Version::new(1, 500))).await;
    store
        .raise_generation_floor(&fence(), GLOBAL_SCOPE, 2)
        .await
        .expect("the run's floor, raised first");
    store
        .apply_reconciliation(
            &fence(),
            Version::new(2, 10),
            &[user("t", "u", "restored", Version::new(1, 50))],
        )
        .await
        .expect("repair");
    let outcome = store
        .apply_events(&[user("t", "u", "lost future again", Version::new(1, 501))])
        .await
        .expect("late event");
    assert_eq!(outcome.skipped_below_floor, 1);
    assert_eq!(
        live_user(&store, "t", "u").await,
        Some(("restored".into(), Version::new(1, 50)))
    );
}

on_both_backends!(
    an_event_the_page_already_reflects_is_skipped_when_it_arrives,
    an_update_between_the_read_and_the_write_is_kept,
    an_update_after_the_write_replaces_it,
    a_phantom_tombstone_never_hides_a_create_above_the_watermark,
    a_create_after_the_phantom_tombstone_revives_the_row,
    a_delete_event_is_not_undone_by_the_page,
    late_events_below_the_watermark_do_not_revive_a_phantom,
    an_event_of_the_lost_future_cannot_undo_a_repair,
);
