//! The coordinator scenarios, each written once for every implementation.

use super::Cluster;
use super::fixtures::{
    QUIET, barrier, done_record, expect_fenced_off, expect_session_lost, member_ids, plan,
    realistic_done_record, request, run, within,
};
use anyhow::{Context, ensure};
use futures::{StreamExt, TryStreamExt, stream};
use recon_coord::remote;
use recon_core::Kind;
use recon_core::ports::FailureKind;
use recon_engine::cluster::{
    AbortRequest, Coordinator, DoneRecord, Leadership, RunPhase, RunRequest, UnitPlan,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Campaign = JoinHandle<Result<Leadership, recon_core::ports::PortError>>;

/// Campaigns in the background until `cancel` fires.
fn campaign_in_background(member: &Arc<dyn Coordinator>, cancel: CancellationToken) -> Campaign {
    let member = member.clone();
    tokio::spawn(async move { member.campaign(&cancel).await })
}

/// Leads now (no other candidate) or fails.
async fn lead(member: &Arc<dyn Coordinator>) -> anyhow::Result<Leadership> {
    let never = CancellationToken::new();
    let campaign = within("an uncontested campaign", member.campaign(&never)).await?;
    campaign.context("uncontested campaign")
}

/// The leadership a background campaign won.
async fn won(what: &str, campaign: Campaign) -> anyhow::Result<Leadership> {
    let joined = within(what, campaign).await?;
    joined.context("campaign task")?.context("campaign")
}

/// Fails if `campaign` finishes within [`QUIET`] (someone else leads).
async fn still_waiting(what: &str, campaign: &Campaign) -> anyhow::Result<()> {
    tokio::time::sleep(QUIET).await;
    ensure!(
        !campaign.is_finished(),
        "{what} won the lead while another member held it"
    );
    Ok(())
}

pub(crate) async fn members_lists_joined_and_drops_killed(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let _c = cluster.member("c").await?;
    ensure!(
        member_ids(&*a).await? == ["a", "b", "c"],
        "joined members listed"
    );
    cluster.kill("b").await?;
    ensure!(
        b.session_lost().is_cancelled(),
        "the killed member's session is lost"
    );
    ensure!(
        !a.session_lost().is_cancelled(),
        "the others' sessions live on"
    );
    ensure!(
        member_ids(&*a).await? == ["a", "c"],
        "the killed member is gone"
    );
    Ok(())
}

pub(crate) async fn one_leader_at_a_time_and_failover_raises_the_epoch(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    ensure!(a.leader().await?.is_none(), "no leader before any campaign");
    let first = lead(&a).await?;
    ensure!(
        b.leader().await? == Some(("a".to_owned(), first.epoch)),
        "b sees a lead"
    );
    let contender = campaign_in_background(&b, CancellationToken::new());
    still_waiting("b", &contender).await?;
    ensure!(!first.lost.is_cancelled(), "a still leads");

    cluster.kill("a").await?;
    within("a's leadership to be lost", first.lost.cancelled()).await?;
    let second = won("b's campaign after a died", contender).await?;
    ensure!(
        second.epoch > first.epoch,
        "epoch {} follows {}",
        second.epoch,
        first.epoch
    );
    ensure!(
        b.leader().await? == Some(("b".to_owned(), second.epoch)),
        "b leads"
    );
    ensure!(!second.lost.is_cancelled(), "b's leadership is alive");
    Ok(())
}

pub(crate) async fn resign_lets_another_member_lead(cluster: &impl Cluster) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let first = lead(&a).await?;
    let contender = campaign_in_background(&b, CancellationToken::new());
    still_waiting("b", &contender).await?;
    a.resign(&first).await?;
    ensure!(
        first.lost.is_cancelled(),
        "resigning cancels the leadership's token"
    );
    let second = won("b's campaign after a resigned", contender).await?;
    ensure!(
        second.epoch > first.epoch,
        "epoch {} follows {}",
        second.epoch,
        first.epoch
    );
    ensure!(
        a.leader().await? == Some(("b".to_owned(), second.epoch)),
        "b leads"
    );
    ensure!(
        !a.session_lost().is_cancelled(),
        "resigning keeps the session"
    );
    Ok(())
}

pub(crate) async fn cancelled_campaign_gives_up_without_leading(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let first = lead(&a).await?;
    let cancel = CancellationToken::new();
    let contender = campaign_in_background(&b, cancel.clone());
    still_waiting("b", &contender).await?;
    cancel.cancel();
    let outcome = within("the cancelled campaign to return", contender).await?;
    let outcome = outcome.context("campaign task")?;
    ensure!(
        matches!(&outcome, Err(error) if error.kind == FailureKind::Cancelled),
        "a cancelled campaign returns a Cancelled error, got {outcome:?}"
    );
    a.resign(&first).await?;
    ensure!(
        a.leader().await?.is_none(),
        "nobody leads: the cancelled candidate withdrew"
    );
    Ok(())
}

pub(crate) async fn deposed_leader_writes_are_refused_and_change_nothing(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let old = lead(&a).await?;
    a.put_run(&old, &run("r1", old.epoch)).await?;
    a.resign(&old).await?;
    let new = lead(&b).await?;
    b.put_run(&new, &run("r2", new.epoch)).await?;
    b.put_plan(&new, &plan("r2", new.epoch)).await?;
    b.assign(&new, "r2", "t1", "b").await?;

    // a's session is alive: only the epoch compare stands in its way.
    expect_fenced_off(
        "zombie put_run",
        a.put_run(&old, &run("zombie", old.epoch)).await,
    )?;
    expect_fenced_off(
        "zombie put_plan",
        a.put_plan(&old, &plan("r2", old.epoch)).await,
    )?;
    expect_fenced_off("zombie assign", a.assign(&old, "r2", "t1", "a").await)?;
    expect_fenced_off(
        "zombie put_barrier",
        a.put_barrier(&old, &barrier("r2", old.epoch)).await,
    )?;
    ensure!(
        b.current_run().await? == Some(run("r2", new.epoch)),
        "current run unchanged"
    );
    ensure!(
        b.plan("r2").await? == Some(plan("r2", new.epoch)),
        "plan unchanged"
    );
    let expected = BTreeMap::from([("t1".to_owned(), "b".to_owned())]);
    ensure!(
        b.assignments("r2").await? == expected,
        "assignments unchanged"
    );
    ensure!(b.barrier("r2").await?.is_none(), "no barrier written");

    // Leading again later does not revive the old epoch.
    b.resign(&new).await?;
    let again = lead(&a).await?;
    ensure!(
        again.epoch > new.epoch,
        "epoch {} follows {}",
        again.epoch,
        new.epoch
    );
    expect_fenced_off(
        "old epoch of the new leader",
        a.put_plan(&old, &plan("r3", old.epoch)).await,
    )?;
    ensure!(
        a.plan("r3").await?.is_none(),
        "the stale plan was not written"
    );
    a.put_plan(&again, &plan("r3", again.epoch)).await?;
    ensure!(
        a.plan("r3").await? == Some(plan("r3", again.epoch)),
        "current epoch writes"
    );
    Ok(())
}

pub(crate) async fn killed_leader_and_member_writes_are_refused(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let leadership = lead(&a).await?;
    a.put_run(&leadership, &run("r1", leadership.epoch)).await?;
    cluster.kill("a").await?;
    within(
        "the killed leader's leadership to be lost",
        leadership.lost.cancelled(),
    )
    .await?;
    expect_fenced_off(
        "killed leader put_run",
        a.put_run(&leadership, &run("r9", 1)).await,
    )?;
    expect_fenced_off(
        "killed leader put_barrier",
        a.put_barrier(&leadership, &barrier("r1", 1)).await,
    )?;
    expect_session_lost("killed member ack_pause", a.ack_pause("r1").await)?;
    expect_session_lost("killed member claim", a.claim("r1", "t1").await)?;
    ensure!(
        b.current_run().await? == Some(run("r1", leadership.epoch)),
        "run unchanged"
    );
    ensure!(b.barrier("r1").await?.is_none(), "no barrier");
    ensure!(b.pause_acks("r1").await?.is_empty(), "no ack from the dead");
    ensure!(b.claims("r1").await?.is_empty(), "no claim from the dead");
    Ok(())
}

pub(crate) async fn put_run_consumes_the_pending_request(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    ensure!(a.pending_request().await?.is_none(), "no request at first");
    a.request_run(&request("operator")).await?;
    let pending = a.request_run(&request("a")).await?;
    let merged = request("operator").merge(request("a"));
    ensure!(pending == merged, "the later request merged: {pending:?}");
    ensure!(
        a.pending_request().await? == Some(merged.clone()),
        "the merged request is pending"
    );
    ensure!(a.current_run().await?.is_none(), "no current run yet");
    let leadership = lead(&a).await?;
    let mut started = run("r1", leadership.epoch);
    started.request = merged;
    a.put_run(&leadership, &started).await?;
    ensure!(
        a.pending_request().await?.is_none(),
        "put_run consumed the request"
    );
    ensure!(a.current_run().await? == Some(started), "current run");
    Ok(())
}

/// A request merged into the pending one while the leader starts a run from
/// it carries the run's id: left pending, it would run again under that id
/// (members reusing the first run's cached digests, `--wait` answered by
/// the first barrier, unpurged keys making it "complete"). The run is
/// written only with the merged request, which it then consumes.
pub(crate) async fn a_request_merged_while_its_run_starts_is_run_by_it(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let mut first = request("operator");
    first.run_id = Some(RunRequest::new_run_id(1_700_000_000_000, 1));
    a.request_run(&first).await?;
    let leadership = lead(&a).await?;
    let read = a.pending_request().await?.context("no pending request")?;
    let mut later = request("b");
    later.tenants = vec!["t9".to_owned()];
    later.run_id = Some(RunRequest::new_run_id(1_700_000_000_500, 2));
    let merged = b.request_run(&later).await?;
    let run_id = first.run_id.clone().context("run id")?;
    ensure!(
        merged.run_id.as_deref() == Some(run_id.as_str()),
        "the merge keeps the pending request's id: {merged:?}"
    );
    let mut started = run(&run_id, leadership.epoch);
    started.request = read;
    ensure!(
        a.put_run(&leadership, &started).await.is_err(),
        "a run was started from its request as read before the merge"
    );
    ensure!(
        a.current_run().await?.is_none(),
        "the refused start wrote the run"
    );
    started.request = merged;
    a.put_run(&leadership, &started).await?;
    ensure!(
        a.pending_request().await?.is_none(),
        "the merged request stayed pending under the run's id"
    );
    ensure!(a.current_run().await? == Some(started), "current run");
    Ok(())
}

/// A request made while a run is in progress is not lost at the run's next
/// phase change: it stays pending (later ones merge into it) for the next
/// run.
pub(crate) async fn a_request_during_a_run_waits_for_the_next(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let leadership = lead(&a).await?;
    let mut current = run("r1", leadership.epoch);
    a.put_run(&leadership, &current).await?;
    let mut second = request("second");
    second.tenants = vec!["t2".to_owned()];
    a.request_run(&second).await?;
    current.phase = RunPhase::Planning;
    a.put_run(&leadership, &current).await?;
    current.phase = RunPhase::Working;
    a.put_run(&leadership, &current).await?;
    let mut third = request("third");
    third.tenants = vec!["t3".to_owned()];
    let pending = a.request_run(&third).await?;
    ensure!(
        pending.tenants == ["t2", "t3"],
        "the requests merged: {pending:?}"
    );
    ensure!(
        a.pending_request().await? == Some(pending),
        "the request made during the run is still pending"
    );
    Ok(())
}

pub(crate) async fn plan_round_trips(cluster: &impl Cluster) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let leadership = lead(&a).await?;
    ensure!(
        b.plan("r1").await?.is_none(),
        "no plan before it is written"
    );
    a.put_plan(&leadership, &plan("r1", leadership.epoch))
        .await?;
    ensure!(
        b.plan("r1").await? == Some(plan("r1", leadership.epoch)),
        "plan round-trips"
    );
    ensure!(b.plan("r2").await?.is_none(), "plans are per run");
    Ok(())
}

/// A plan of 50,000 tenants (one unit each, realistic ids and cursors) is
/// written and read back whole: far beyond what one etcd value may hold.
pub(crate) async fn a_plan_of_50000_units_round_trips(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let leadership = lead(&a).await?;
    let mut big = plan("r1", leadership.epoch);
    big.units = (0..50_000)
        .map(|index| UnitPlan {
            id: format!("u{index:05}"),
            tenant_id: format!("tenant-{index:05}-{}", "x".repeat(24)),
            kind: Some(Kind::USER),
            after: Some(format!("user-{index:08}")),
            until: Some(format!("user-{:08}", index + 1)),
            weight: 1_000 + index,
        })
        .collect();
    a.put_plan(&leadership, &big).await?;
    let read = b.plan("r1").await?.context("the plan was not written")?;
    ensure!(
        read.units.len() == 50_000,
        "{} units read back",
        read.units.len()
    );
    ensure!(read == big, "the plan read back differs");
    // Writing it again (a new leader re-planning) leaves no stale units.
    let mut small = plan("r1", leadership.epoch);
    small.units.truncate(1);
    a.put_plan(&leadership, &small).await?;
    ensure!(
        b.plan("r1").await? == Some(small),
        "a re-written plan keeps units of the old one"
    );
    Ok(())
}

/// A run over 50,000 small tenants leaves 50,000 done-records of about
/// 1.3 KB each (some 65 MB): read back whole, the way the leader reads them
/// to finish the run — far beyond what one etcd answer may carry (4 MiB).
pub(crate) async fn fifty_thousand_done_records_round_trip(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    const UNITS: usize = 50_000;
    const IN_FLIGHT: usize = 64;
    let a = cluster.patient_member("a").await?;
    let b = cluster.patient_member("b").await?;
    let leadership = lead(&a).await?;
    let tenants: Vec<String> = (0..UNITS)
        .map(|index| format!("tenant-{index:05}-{}", "x".repeat(24)))
        .collect();
    stream::iter(&tenants)
        .map(|tenant| a.assign(&leadership, "r1", tenant, "b"))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    let written: BTreeMap<String, DoneRecord> = tenants
        .iter()
        .map(|tenant| {
            let record = realistic_done_record("b", leadership.epoch, tenant);
            (tenant.clone(), record)
        })
        .collect();
    stream::iter(&written)
        .map(|(unit, record)| {
            let b = b.clone();
            async move {
                ensure!(b.claim("r1", unit).await?, "b could not claim {unit}");
                b.put_done("r1", unit, record).await?;
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    let read = a.done("r1").await?;
    ensure!(
        read.len() == UNITS,
        "{} of {UNITS} done-records read back",
        read.len()
    );
    ensure!(read == written, "the done-records read back differ");
    let units = a.done_units("r1").await?;
    ensure!(
        units.len() == UNITS && units.iter().eq(written.keys()),
        "{} of {UNITS} done units listed",
        units.len()
    );
    Ok(())
}

pub(crate) async fn assignments_follow_the_last_assign(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let leadership = lead(&a).await?;
    a.assign(&leadership, "r1", "t1", "a").await?;
    a.assign(&leadership, "r1", "t2/users/2", "b").await?;
    a.assign(&leadership, "r1", "t1", "b").await?;
    let expected = BTreeMap::from([
        ("t1".to_owned(), "b".to_owned()),
        ("t2/users/2".to_owned(), "b".to_owned()),
    ]);
    ensure!(
        a.assignments("r1").await? == expected,
        "the last assignment wins"
    );
    ensure!(
        a.assignments("r2").await?.is_empty(),
        "assignments are per run"
    );
    Ok(())
}

pub(crate) async fn acks_of_a_killed_member_vanish(cluster: &impl Cluster) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    a.ack_pause("r1").await?;
    b.ack_pause("r1").await?;
    b.ack_pause("r1").await?;
    let both = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
    ensure!(a.pause_acks("r1").await? == both, "both acknowledged");
    ensure!(a.pause_acks("r2").await?.is_empty(), "acks are per run");
    cluster.kill("b").await?;
    ensure!(
        a.pause_acks("r1").await? == BTreeSet::from(["a".to_owned()]),
        "b's ack vanished"
    );
    Ok(())
}

pub(crate) async fn claims_are_exclusive_and_die_with_the_holder(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let leadership = lead(&a).await?;
    a.assign(&leadership, "r1", "t2/users/2", "a").await?;
    a.assign(&leadership, "r1", "t1", "b").await?;
    ensure!(a.claim("r1", "t2/users/2").await?, "a claims a free unit");
    ensure!(
        !b.claim("r1", "t2/users/2").await?,
        "b cannot claim a's unit"
    );
    ensure!(
        a.claim("r1", "t2/users/2").await?,
        "a re-claims its own unit"
    );
    ensure!(b.claim("r1", "t1").await?, "b claims another unit");
    let expected = BTreeMap::from([
        ("t1".to_owned(), "b".to_owned()),
        ("t2/users/2".to_owned(), "a".to_owned()),
    ]);
    ensure!(b.claims("r1").await? == expected, "claims listed by unit");
    cluster.kill("a").await?;
    let remaining = BTreeMap::from([("t1".to_owned(), "b".to_owned())]);
    ensure!(
        b.claims("r1").await? == remaining,
        "the dead holder's claim vanished"
    );
    ensure!(
        !b.claim("r1", "t2/users/2").await?,
        "b cannot claim the orphaned unit before it is handed to b"
    );
    let next = lead(&b).await?;
    b.assign(&next, "r1", "t2/users/2", "b").await?;
    ensure!(
        b.claim("r1", "t2/users/2").await?,
        "b takes the orphaned unit"
    );
    ensure!(
        b.claims("r1").await?.get("t2/users/2").map(String::as_str) == Some("b"),
        "b holds it"
    );
    Ok(())
}

/// A member restarted under the same id (a new session) does not take the
/// claims of its previous session as its own while that session lives: the
/// old process may still be working the unit. Before, etcd compared only
/// the member id.
pub(crate) async fn a_claim_of_the_previous_session_is_not_taken_as_its_own(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let first = cluster.member("a").await?;
    let leadership = lead(&first).await?;
    first.assign(&leadership, "r1", "t1", "a").await?;
    ensure!(first.claim("r1", "t1").await?, "the first session claims");
    let again = cluster.member("a").await?;
    ensure!(
        !again.claim("r1", "t1").await?,
        "the same member id's new session took the live session's claim"
    );
    ensure!(
        first.claim("r1", "t1").await?,
        "the first session still holds its claim"
    );
    Ok(())
}

pub(crate) async fn done_records_survive_the_member(cluster: &impl Cluster) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let leadership = lead(&b).await?;
    b.assign(&leadership, "r1", "t2/users/2", "a").await?;
    ensure!(a.claim("r1", "t2/users/2").await?, "a claims its unit");
    a.put_done("r1", "t2/users/2", &done_record("a", 7)).await?;
    cluster.kill("a").await?;
    let expected = BTreeMap::from([("t2/users/2".to_owned(), done_record("a", 7))]);
    ensure!(
        b.done("r1").await? == expected,
        "the done-record outlived its member"
    );
    ensure!(b.done("r2").await?.is_empty(), "done-records are per run");
    Ok(())
}

pub(crate) async fn barrier_clears_only_its_own_current_run(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let leadership = lead(&a).await?;
    let epoch = leadership.epoch;
    a.put_run(&leadership, &run("r1", epoch)).await?;
    a.put_barrier(&leadership, &barrier("r0", epoch)).await?;
    ensure!(
        a.current_run().await? == Some(run("r1", epoch)),
        "another run's barrier keeps it"
    );
    ensure!(
        a.barrier("r0").await? == Some(barrier("r0", epoch)),
        "r0's barrier written"
    );
    ensure!(a.barrier("r1").await?.is_none(), "no barrier for r1 yet");
    a.put_barrier(&leadership, &barrier("r1", epoch)).await?;
    ensure!(
        a.current_run().await?.is_none(),
        "the barrier cleared the current run"
    );
    ensure!(
        a.barrier("r1").await? == Some(barrier("r1", epoch)),
        "r1's barrier written"
    );
    Ok(())
}

/// A member whose unit was handed to another (it was frozen past its
/// lease, say) can neither claim it nor write its done-record, and the
/// other member's record stands.
pub(crate) async fn done_records_need_the_assignment_and_the_claim(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let leadership = lead(&a).await?;
    ensure!(!b.claim("r1", "t1").await?, "b claims an unassigned unit");
    expect_fenced_off(
        "done-record of an unassigned unit",
        b.put_done("r1", "t1", &done_record("b", 7)).await,
    )?;
    a.assign(&leadership, "r1", "t1", "b").await?;
    expect_fenced_off(
        "done-record without the claim",
        b.put_done("r1", "t1", &done_record("b", 7)).await,
    )?;
    ensure!(b.claim("r1", "t1").await?, "b claims its unit");
    // The unit is handed to a while b still holds its claim (b is frozen).
    a.assign(&leadership, "r1", "t1", "a").await?;
    ensure!(
        !b.claim("r1", "t1").await?,
        "b re-claims a unit handed away"
    );
    expect_fenced_off(
        "done-record of a unit handed away",
        b.put_done("r1", "t1", &done_record("b", 7)).await,
    )?;
    ensure!(b.done("r1").await?.is_empty(), "b's done-record landed");
    cluster.kill("b").await?;
    ensure!(a.claim("r1", "t1").await?, "a claims the unit");
    a.put_done("r1", "t1", &done_record("a", 8)).await?;
    let expected = BTreeMap::from([("t1".to_owned(), done_record("a", 8))]);
    ensure!(a.done("r1").await? == expected, "a's done-record stands");
    Ok(())
}

pub(crate) async fn finished_runs_are_listed_newest_first(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    ensure!(
        a.recent_barriers(5).await?.is_empty(),
        "no run finished yet"
    );
    let leadership = lead(&a).await?;
    let epoch = leadership.epoch;
    for run_id in ["run-1000-1", "run-1001-1", "run-1002-1"] {
        a.put_run(&leadership, &run(run_id, epoch)).await?;
        a.put_barrier(&leadership, &barrier(run_id, epoch)).await?;
    }
    let b = cluster.member("b").await?;
    let last_two = b.recent_barriers(2).await?;
    ensure!(
        last_two == vec![barrier("run-1002-1", epoch), barrier("run-1001-1", epoch)],
        "the last two runs, newest first, with their summaries: {last_two:?}"
    );
    ensure!(b.recent_barriers(10).await?.len() == 3, "all three kept");
    Ok(())
}

pub(crate) async fn an_abort_request_is_kept_with_its_run(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    ensure!(a.abort_request("r1").await?.is_none(), "no abort asked yet");
    let abort = recon_engine::cluster::AbortRequest {
        requested_by: "operator".to_owned(),
        reason: "wrong source".to_owned(),
        requested_unix_ms: 5,
    };
    // Any member (or tool) may ask; every member sees it.
    b.request_abort("r1", &abort).await?;
    ensure!(
        a.abort_request("r1").await? == Some(abort),
        "the abort is kept"
    );
    ensure!(a.abort_request("r2").await?.is_none(), "aborts are per run");
    Ok(())
}

pub(crate) async fn finished_runs_leave_only_their_history(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let leadership = lead(&a).await?;
    let epoch = leadership.epoch;
    // A run not finished yet keeps its keys.
    a.put_run(&leadership, &run("run-0000000000999-0", epoch))
        .await?;
    a.put_plan(&leadership, &plan("run-0000000000999-0", epoch))
        .await?;
    a.purge_run("run-0000000000999-0").await?;
    ensure!(
        a.plan("run-0000000000999-0").await?.is_some(),
        "an unfinished run was purged"
    );
    let mut counted = Vec::new();
    for index in 0..100u64 {
        let run_id = format!("run-{:013}-0", 1_000 + index);
        a.put_run(&leadership, &run(&run_id, epoch)).await?;
        a.put_plan(&leadership, &plan(&run_id, epoch)).await?;
        a.ack_pause(&run_id).await?;
        a.assign(&leadership, &run_id, "t1", "a").await?;
        ensure!(a.claim(&run_id, "t1").await?, "claim of {run_id}");
        a.put_done(&run_id, "t1", &done_record("a", epoch)).await?;
        a.request_abort(&run_id, &recon_engine::cluster::AbortRequest::default())
            .await?;
        a.put_barrier(&leadership, &barrier(&run_id, epoch)).await?;
        a.purge_run(&run_id).await?;
        if index == 29 || index == 99 {
            counted.push(cluster.stored_keys().await?);
        }
    }
    let last = "run-0000000001099-0";
    ensure!(a.plan(last).await?.is_none(), "the plan outlived its run");
    ensure!(
        a.done(last).await?.is_empty(),
        "done-records outlived their run"
    );
    ensure!(
        a.assignments(last).await?.is_empty(),
        "assignments outlived their run"
    );
    ensure!(
        a.abort_request(last).await?.is_none(),
        "the abort outlived its run"
    );
    ensure!(
        a.barrier(last).await? == Some(barrier(last, epoch)),
        "the barrier is kept"
    );
    let kept = a.recent_barriers(1_000).await?;
    ensure!(
        kept.len() == recon_engine::cluster::HISTORY_KEPT && kept[0].run_id == last,
        "the history keeps the last {} runs, newest first: {} kept, first {:?}",
        recon_engine::cluster::HISTORY_KEPT,
        kept.len(),
        kept.first().map(|barrier| &barrier.run_id)
    );
    // The key count is flat: after 30 runs as after 100.
    ensure!(
        counted[0] == counted[1],
        "keys after 30 and after 100 runs: {counted:?}"
    );
    Ok(())
}

pub(crate) async fn a_schedule_slot_fires_once_across_leaders(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    ensure!(
        a.trigger_mark("schedule").await?.is_none(),
        "nothing fired yet"
    );
    let first = lead(&a).await?;
    ensure!(
        a.advance_trigger(&first, "schedule", 100).await?,
        "slot 100 fires"
    );
    ensure!(
        !a.advance_trigger(&first, "schedule", 100).await?,
        "slot 100 fires once"
    );
    ensure!(
        !a.advance_trigger(&first, "schedule", 90).await?,
        "an older slot does not fire"
    );
    a.resign(&first).await?;
    let second = lead(&b).await?;
    ensure!(
        !b.advance_trigger(&second, "schedule", 100).await?,
        "the next leader does not fire it again"
    );
    ensure!(
        b.advance_trigger(&second, "schedule", 200).await?,
        "slot 200 fires"
    );
    ensure!(
        a.trigger_mark("schedule").await? == Some(200),
        "every member sees the last slot"
    );
    expect_fenced_off(
        "deposed advance_trigger",
        a.advance_trigger(&first, "schedule", 300).await,
    )?;
    ensure!(
        b.trigger_mark("schedule").await? == Some(200),
        "a deposed leader fired nothing"
    );
    Ok(())
}

/// A run no leader will end is ended by any member, but only while nobody
/// campaigns and only if it is still the current run; a leader elected
/// afterwards finds nothing to adopt.
pub(crate) async fn an_orphaned_run_is_ended_only_without_a_candidate(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let a = cluster.member("a").await?;
    let b = cluster.member("b").await?;
    let leadership = lead(&a).await?;
    let epoch = leadership.epoch;
    a.put_run(&leadership, &run("r1", epoch)).await?;
    ensure!(
        !b.end_orphaned_run(&barrier("r1", epoch)).await?,
        "a run with a leader was ended by another member"
    );
    ensure!(b.current_run().await?.is_some(), "the run stays current");
    cluster.kill("a").await?;
    within("the leader to be gone", async {
        while b.leader().await?.is_some() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::Ok(())
    })
    .await??;
    ensure!(
        !b.end_orphaned_run(&barrier("r0", epoch)).await?,
        "another run's barrier ended the current run"
    );
    ensure!(
        b.end_orphaned_run(&barrier("r1", epoch)).await?,
        "the orphaned run was not ended"
    );
    ensure!(b.current_run().await?.is_none(), "the run is still current");
    ensure!(
        b.barrier("r1").await? == Some(barrier("r1", epoch)),
        "the barrier is not there"
    );
    ensure!(
        b.recent_barriers(5)
            .await?
            .iter()
            .any(|kept| kept.run_id == "r1"),
        "the history does not have it"
    );
    ensure!(
        !b.end_orphaned_run(&barrier("r1", epoch)).await?,
        "a run was ended twice"
    );
    let c = cluster.member("c").await?;
    lead(&c).await?;
    ensure!(c.current_run().await?.is_none(), "a new leader finds a run");
    Ok(())
}

/// What `recon reconcile --cluster` and `recon abort` do through
/// `recon_coord::remote`: request (merged into a pending request, queued
/// behind a run), follow a run, ask for its abort.
pub(crate) async fn a_tool_requests_follows_and_aborts_a_run(
    cluster: &impl Cluster,
) -> anyhow::Result<()> {
    let tool = cluster.member("tool").await?;
    let first = remote::request_run(tool.as_ref(), &request("operator")).await?;
    ensure!(!first.merged && first.queued_behind.is_none(), "{first:?}");
    let second = remote::request_run(tool.as_ref(), &request("cron")).await?;
    let merged = request("operator").merge(request("cron"));
    ensure!(second.merged && second.pending == merged, "{second:?}");

    let leader = cluster.member("a").await?;
    ensure!(
        leader.pending_request().await? == Some(merged.clone()),
        "members see the request"
    );
    let leadership = within("campaign", leader.campaign(&CancellationToken::new())).await??;
    let mut started = run("r1", leadership.epoch);
    started.request = merged;
    leader.put_run(&leadership, &started).await?;
    let queued = remote::request_run(tool.as_ref(), &request("late")).await?;
    ensure!(
        queued.queued_behind.as_deref() == Some("r1") && !queued.merged,
        "{queued:?}"
    );

    leader.assign(&leadership, "r1", "t1", "a").await?;
    ensure!(leader.claim("r1", "t1").await?, "claim");
    leader
        .put_done("r1", "t1", &done_record("a", leadership.epoch))
        .await?;
    let progress = remote::run_progress(tool.as_ref(), "r1").await?;
    ensure!(
        progress.current == Some(started.clone()) && progress.units_done == 1,
        "{progress:?}"
    );
    ensure!(progress.barrier.is_none(), "no barrier yet");

    let abort = AbortRequest {
        requested_by: "operator".to_owned(),
        reason: "wrong source".to_owned(),
        requested_unix_ms: 5,
    };
    let refused = remote::request_abort(tool.as_ref(), Some("r0"), &abort).await;
    ensure!(refused.is_err(), "a run not in progress cannot be aborted");
    let aborted = remote::request_abort(tool.as_ref(), None, &abort).await?;
    ensure!(aborted == "r1", "aborted {aborted}");
    ensure!(
        leader.abort_request("r1").await? == Some(abort),
        "the leader sees the abort"
    );

    let barrier = barrier("r1", leadership.epoch);
    leader.put_barrier(&leadership, &barrier).await?;
    leader.purge_run("r1").await?;
    let finished = remote::run_progress(tool.as_ref(), "r1").await?;
    ensure!(
        finished.barrier == Some(barrier) && finished.current.is_none(),
        "the history answers once the run is purged: {finished:?}"
    );
    Ok(())
}
