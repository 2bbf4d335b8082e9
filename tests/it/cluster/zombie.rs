//! A zombie leader: frozen (SIGSTOP) in the middle of a unit for longer than
//! its lease, replaced by a leader with a higher epoch that raises the
//! store's fence and finishes the run, then thawed (SIGCONT). Nothing the
//! zombie does after it thaws may land: not in etcd (its history is
//! checked), not in the replica database (its Source API then drops half of
//! every users page, so a unit it finished would delete live rows, which
//! the final row-by-row comparison would see).
//!
//! The zombie process notices its lost session within a millisecond of
//! thawing and drops its unit before it writes again (then joins the
//! cluster again with a new session), so its own log rarely shows a fenced
//! write; the test therefore also sends the write its unit
//! would make next, with its epoch, to the shared database, and expects
//! the fence to refuse it.

use super::checks::{Writer, ensure_completed, units_done_once, wait_for_barrier};
use super::fixture::{Cluster, LEASE_TTL_SECS, Settings, wait_until};
use anyhow::{Context, bail, ensure};
use recon_core::{Change, Deletion, EntityKey, FenceToken, Kind, Version};
use recon_engine::cluster::UnitState;
use recon_store::{ErrorKind, Store};
use recon_tests::faulty_source::Fault;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_leader_is_fenced_off_after_another_takes_over() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Settings::new(105)).await?;
    let outcome = freeze_the_leader_mid_unit(&mut cluster).await;
    cluster.finish(outcome)
}

pub(super) async fn freeze_the_leader_mid_unit(cluster: &mut Cluster) -> anyhow::Result<()> {
    let (zombie, election) = cluster.leader_seen_by(cluster.replicas[0].port).await?;
    let zombie_port = cluster.replica(&zombie)?.port;
    let survivor = cluster
        .replicas
        .iter()
        .find(|replica| replica.id != zombie)
        .map(|replica| replica.port)
        .context("no survivor")?;
    cluster.replica(&zombie)?.proxy.set_fault(Fault::Delay {
        path_contains: "/tenants/".to_owned(),
        delay: Duration::from_millis(300),
    });
    cluster.drift().await?;
    let writer = Writer::start(cluster.monolith.clone(), 30);
    let run = cluster.request_run().await?;
    // The store epoch the zombie's writes carry.
    let epoch = cluster.run_epoch(&run)?;
    cluster
        .wait_for_view(
            survivor,
            "the leader to hold a unit after completing one",
            |view| {
                let owns = |units: Vec<(String, Option<String>)>| {
                    units
                        .iter()
                        .any(|(_, owner)| owner.as_deref() == Some(zombie.as_str()))
                };
                owns(view.units_in(UnitState::Claimed)) && owns(view.units_in(UnitState::Done))
            },
        )
        .await?;

    // Freeze it while it waits for a source page (held 300 ms by its
    // proxy), not inside a database transaction.
    let proxy = &cluster.replica(&zombie)?.proxy;
    let requests = proxy.requests("/users");
    proxy
        .wait_for_requests("/users", requests + 1, Duration::from_secs(10))
        .await?;
    let completed_before = cluster.admin.cluster(zombie_port).await?.units_completed();
    let log_before = cluster.replica(&zombie)?.process.log().len();
    let frozen_at = cluster.freeze(&zombie)?;
    cluster.replica(&zombie)?.proxy.set_fault(Fault::DropItems {
        path_contains: "/tenants/".to_owned(),
        share: 0.5,
    });
    let unit = cluster
        .admin
        .cluster(survivor)
        .await?
        .units_in(UnitState::Claimed)
        .into_iter()
        .find(|(_, owner)| owner.as_deref() == Some(zombie.as_str()))
        .map(|(unit, _)| unit)
        .context("the unit the leader was frozen in")?;

    let (new_leader, new_election) =
        wait_for_new_leader(cluster, survivor, &zombie, frozen_at).await?;
    let takeover = frozen_at.elapsed();
    ensure!(
        new_election > election,
        "{new_leader} leads with election {new_election}, not above the zombie's {election}"
    );
    wait_until(
        "the new leader to adopt the run with a newer store epoch",
        Duration::from_secs(15),
        || async { Ok(cluster.run_epoch(&run)? > epoch) },
    )
    .await?;
    let new_epoch = cluster.run_epoch(&run)?;
    wait_until(
        "the new leader to raise the global fence",
        Duration::from_secs(15),
        || async { Ok(cluster.global_fence().await? >= new_epoch) },
    )
    .await?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(60)).await?;
    ensure_completed(&barrier)?;
    ensure!(
        barrier.epoch == new_epoch,
        "barrier of epoch {}",
        barrier.epoch
    );
    let tally = units_done_once(&cluster.history, &run).await?;
    ensure!(
        tally.owner.get(&unit).is_some_and(|owner| *owner != zombie),
        "the zombie's unit {unit} was not done by another member: {:?}",
        tally.owner.get(&unit)
    );

    a_write_at_the_zombie_epoch_is_rejected(cluster, epoch).await?;

    let thawed_revision = cluster.history.sync().await?;
    cluster.replica(&zombie)?.process.resume()?;
    let counters_after_thaw = cluster.admin.cluster(zombie_port).await.ok();
    // It notices its lost session, drops out of the run it was in (nothing
    // of it lands, see below) and joins again with a new session.
    wait_until(
        "the zombie to notice its lost session and rejoin",
        Duration::from_secs(20),
        || async {
            let log = cluster.replica(&zombie)?.process.log();
            let after_thaw = log.get(log_before..).unwrap_or_default();
            Ok(after_thaw.contains("session lost") && after_thaw.contains("joined the cluster"))
        },
    )
    .await?;
    ensure!(
        !cluster.has_exited(&zombie)?,
        "the zombie exited instead of rejoining"
    );
    let log = cluster.replica(&zombie)?.process.log();
    let after_thaw = log.get(log_before..).unwrap_or_default();
    let rejected = after_thaw.matches("write rejected by fence").count();
    let fenced_units = after_thaw.matches("fenced off by a newer epoch").count();
    if let Some(view) = &counters_after_thaw {
        ensure!(
            view.units_completed() == completed_before,
            "the zombie completed units after it thawed: {} before, {} after",
            completed_before,
            view.units_completed()
        );
    }
    ensure_nothing_landed_in_etcd(cluster, &zombie, epoch, thawed_revision).await?;
    eprintln!(
        "zombie {zombie} (epoch {epoch}) frozen holding {unit}; {new_leader} took over with epoch {new_epoch} after {} ms (lease TTL {LEASE_TTL_SECS} s); \
         after thawing: {rejected} writes rejected by the store's fence, {fenced_units} units fenced, counters {}, rejoined with a new session",
        takeover.as_millis(),
        counters_after_thaw.map_or_else(
            || "unreadable (already shutting down)".to_owned(),
            |view| format!("{:?}", view.counters)
        ),
    );
    writer.stop().await?;
    // It rejoined: nobody replaces it.
    cluster.replica_mut(&zombie)?.silent_since = None;
    cluster.replace_dead().await?;
    cluster.wait_until_equal("after the zombie thawed").await
}

async fn wait_for_new_leader(
    cluster: &Cluster,
    port: u16,
    old: &str,
    since: Instant,
) -> anyhow::Result<(String, u64)> {
    loop {
        if let Ok((leader, epoch)) = cluster.leader_seen_by(port).await
            && leader != old
        {
            return Ok((leader, epoch));
        }
        if since.elapsed() > Duration::from_secs(20) {
            bail!("no new leader 20 s after {old} froze");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// No key the zombie's lost session writes (done-records, claims,
/// acknowledgements) and no leader write of its epoch appeared after it
/// thawed; only its membership, registered again by its new session.
async fn ensure_nothing_landed_in_etcd(
    cluster: &Cluster,
    zombie: &str,
    epoch: u64,
    thawed_revision: i64,
) -> anyhow::Result<()> {
    cluster.history.sync().await?;
    let changes = cluster.history.changes()?;
    let quoted = serde_json::to_string(zombie)?;
    for change in changes
        .iter()
        .filter(|change| change.revision > thawed_revision)
    {
        let rejoined = change.key == format!("members/{zombie}");
        if change.deleted || change.key == "test-sync" || rejoined {
            continue;
        }
        let value = String::from_utf8_lossy(&change.value);
        let by_zombie = change.key.ends_with(&format!("/{zombie}"))
            || value.contains(&format!("\"member\":{quoted}"))
            || value == quoted
            || value.contains(&format!("\"epoch\":{epoch},"))
            || value.contains(&format!("\"epoch\":{epoch}}}"));
        ensure!(
            !by_zombie,
            "a write of the zombie landed in etcd after it thawed: {} = {value}",
            change.key
        );
    }
    Ok(())
}

/// The write the zombie's unit would make next — a tombstone for a live
/// user, carrying the zombie's epoch — sent to the shared replica database
/// as the zombie would send it: the fence the new leader raised refuses it
/// and the user stays.
async fn a_write_at_the_zombie_epoch_is_rejected(
    cluster: &Cluster,
    epoch: u64,
) -> anyhow::Result<()> {
    let row = cluster
        .replica_sql_one(
            "SELECT tenant_id || '|' || id AS line FROM replica_users WHERE NOT deleted ORDER BY id LIMIT 1",
        )
        .await?;
    let (tenant, user) = row.split_once('|').context("a live user")?;
    let store = Store::connect(&cluster.replica_db.url).await?;
    let tombstone = Change::Delete(Deletion {
        tenant_id: tenant.to_owned(),
        kind: Kind::USER,
        key: EntityKey::id(user),
        version: Version::new(u64::from(u32::MAX), 1),
    });
    let result = store
        .apply_reconciliation(
            &FenceToken::new(tenant, epoch),
            Version::new(u64::from(u32::MAX), 1),
            &[tombstone],
        )
        .await;
    match result {
        Err(error) if error.kind() == ErrorKind::StaleEpoch => {}
        Err(error) => bail!("a write at the zombie's epoch failed, but not on the fence: {error}"),
        Ok(outcome) => bail!("a write at the zombie's epoch {epoch} landed: {outcome:?}"),
    }
    let still_live = cluster
        .replica_sql_one(&format!(
            "SELECT CAST(count(*) AS TEXT) AS line FROM replica_users WHERE tenant_id = '{tenant}' AND id = '{user}' AND NOT deleted"
        ))
        .await?;
    ensure!(still_live == "1", "the fenced tombstone deleted {user}");
    Ok(())
}
