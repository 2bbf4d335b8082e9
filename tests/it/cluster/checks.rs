//! What the scenarios check and how: a writer that keeps changing the
//! monolith during a run, the count of completions per unit, and a probe
//! that proves no replica applied an event between its pause
//! acknowledgement and the barrier.

use super::admin::Admin;
use super::history::{Changes, History};
use anyhow::{Context, bail, ensure};
use recon_core::RunStatus;
use recon_engine::cluster::{Barrier, RunPhase};
use recon_monolith::Monolith;
use recon_monolith::seed;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Random changes through the monolith's write path, a few every 100 ms,
/// until stopped.
pub struct Writer {
    stop: CancellationToken,
    applied: Arc<AtomicU64>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Writer {
    pub fn start(monolith: Monolith, seed: u64) -> Self {
        let stop = CancellationToken::new();
        let applied = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let stop = stop.clone();
            let applied = applied.clone();
            async move {
                let mut round = 0;
                while !stop.is_cancelled() {
                    let summary = seed::random_changes(&monolith, 4, seed * 1_000 + round)
                        .await
                        .context("random changes")?;
                    applied.fetch_add(summary.applied, Ordering::SeqCst);
                    round += 1;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Ok(())
            }
        });
        Self {
            stop,
            applied,
            task,
        }
    }

    /// Changes applied so far.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Stops writing; returns how many changes were applied in all.
    pub async fn stop(self) -> anyhow::Result<u64> {
        self.stop.cancel();
        let applied = self.applied.clone();
        self.task.await.context("writer task")??;
        Ok(applied.load(Ordering::SeqCst))
    }
}

/// Waits until a run has left its pausing phase: every member acknowledged
/// the pause (planning starts only then).
pub async fn wait_until_paused(history: &History, run_id: &str) -> anyhow::Result<()> {
    history
        .wait_for("every member paused", Duration::from_secs(30), |changes| {
            changes
                .run_states(run_id)
                .iter()
                .any(|(_, state)| state.phase != RunPhase::Pausing)
                .then_some(())
        })
        .await
}

/// Waits for a run's barrier.
pub async fn wait_for_barrier(
    history: &History,
    run_id: &str,
    timeout: Duration,
) -> anyhow::Result<Barrier> {
    let what = format!("the barrier of {run_id}");
    history
        .wait_for(&what, timeout, |changes| {
            changes.barrier(run_id).map(|(barrier, _)| barrier)
        })
        .await
}

/// Fails unless the barrier says the run completed.
pub fn ensure_completed(barrier: &Barrier) -> anyhow::Result<()> {
    ensure!(
        barrier.status == RunStatus::Completed,
        "the run did not complete cleanly: {barrier:?}"
    );
    Ok(())
}

/// Who completed the units of a run.
#[derive(Debug)]
pub struct Tally {
    /// Units in the plan.
    pub units: usize,
    /// Units split out of a big tenant (a kind's key range).
    pub split_units: usize,
    /// Done-records per member.
    pub done_by: BTreeMap<String, u64>,
    /// Done-record writer per unit.
    pub owner: BTreeMap<String, String>,
}

/// Checks that every unit of the plan was completed exactly once: one put
/// of its done-record in etcd's history (a second completion would be a
/// second put of the same key), none for units outside the plan.
pub async fn units_done_once(history: &History, run_id: &str) -> anyhow::Result<Tally> {
    history.sync().await?;
    let changes = history.changes()?;
    let plan = changes
        .plan(run_id)
        .with_context(|| format!("{run_id} has no plan"))?;
    let mut puts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (unit, record, _) in changes.done_puts(run_id) {
        puts.entry(unit).or_default().push(record.member);
    }
    let mut tally = Tally {
        units: plan.units.len(),
        split_units: plan.units.iter().filter(|unit| unit.kind.is_some()).count(),
        done_by: BTreeMap::new(),
        owner: BTreeMap::new(),
    };
    for unit in &plan.units {
        let members = puts.remove(&unit.id).unwrap_or_default();
        ensure!(
            members.len() == 1,
            "unit {} ({} {:?}) was completed {} times, by {members:?}",
            unit.id,
            unit.tenant_id,
            unit.kind,
            members.len()
        );
        *tally.done_by.entry(members[0].clone()).or_default() += 1;
        tally.owner.insert(unit.id.clone(), members[0].clone());
    }
    ensure!(
        puts.is_empty(),
        "done-records of units that are not in the plan: {puts:?}"
    );
    Ok(tally)
}

/// One reading of a replica's applied-events counter during a pause.
#[derive(Debug, Clone, Copy)]
pub struct PauseSample {
    /// When the counter was read.
    pub at: Instant,
    /// Events applied so far by that replica's process.
    pub applied: u64,
}

/// Samples every replica's applied-events counter while a run is current,
/// all replicas at once, a round every 100 ms: a sample counts when the
/// replica had acknowledged the pause before it was taken and the run was
/// still current (no barrier yet) after.
pub struct PauseProbe {
    stop: CancellationToken,
    task: JoinHandle<BTreeMap<String, Vec<PauseSample>>>,
}

impl PauseProbe {
    pub fn start(admin: Admin, run_id: &str, replicas: Vec<(String, u16)>) -> Self {
        let stop = CancellationToken::new();
        let run_id = run_id.to_owned();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut samples: BTreeMap<String, Vec<PauseSample>> = BTreeMap::new();
                while !stop.is_cancelled() {
                    let round = futures::future::join_all(
                        replicas
                            .iter()
                            .map(|(member, port)| sample(&admin, &run_id, member, *port)),
                    )
                    .await;
                    for ((member, _), taken) in replicas.iter().zip(round) {
                        if let Ok(Some(value)) = taken {
                            samples.entry(member.clone()).or_default().push(value);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                samples
            }
        });
        Self { stop, task }
    }

    /// Stops sampling; the samples per member.
    pub async fn stop(self) -> anyhow::Result<BTreeMap<String, Vec<PauseSample>>> {
        self.stop.cancel();
        self.task.await.context("pause probe task")
    }
}

async fn sample(
    admin: &Admin,
    run_id: &str,
    member: &str,
    port: u16,
) -> anyhow::Result<Option<PauseSample>> {
    let before = admin.cluster(port).await?;
    let acknowledged =
        before.status.run.as_ref().is_some_and(|run| {
            run.run_id == run_id && run.acknowledged.iter().any(|id| id == member)
        });
    if !acknowledged {
        return Ok(None);
    }
    let applied = admin.events_applied(port).await?;
    let at = Instant::now();
    let after = admin.cluster(port).await?;
    Ok((after.run_id() == Some(run_id)).then_some(PauseSample { at, applied }))
}

/// Fails unless every sampled replica's counter stayed flat, and each of
/// `members` was sampled at least `min_samples` times.
pub fn ensure_flat(
    samples: &BTreeMap<String, Vec<PauseSample>>,
    members: &[String],
    min_samples: usize,
) -> anyhow::Result<()> {
    for member in members {
        let values: Vec<u64> = samples
            .get(member)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|sample| sample.applied)
            .collect();
        ensure!(
            values.len() >= min_samples,
            "{member} was sampled only {} times during the pause",
            values.len()
        );
        ensure!(
            values.iter().all(|value| *value == values[0]),
            "{member} applied events between its pause acknowledgement and the barrier: {values:?}"
        );
    }
    Ok(())
}

/// When a member's pause began and ended, as etcd's history saw it: its
/// acknowledgement of the run, and the run's barrier.
#[derive(Debug, Clone, Copy)]
pub struct PauseWindow {
    /// The first put of the member's acknowledgement key.
    pub acknowledged: Instant,
    /// The barrier's put.
    pub barrier: Instant,
}

/// The pause window of each of `members` in run `run_id` (its barrier
/// written); fails if a member never acknowledged.
pub async fn pause_windows(
    history: &History,
    run_id: &str,
    members: &[String],
) -> anyhow::Result<BTreeMap<String, PauseWindow>> {
    history.sync().await?;
    let changes = history.changes()?;
    let (_, barrier) = changes
        .barrier(run_id)
        .with_context(|| format!("{run_id} has no barrier"))?;
    let mut windows = BTreeMap::new();
    for member in members {
        let key = format!("runs/{run_id}/acks/{}", member.replace('/', "%2F"));
        let acknowledged = changes
            .iter()
            .find(|change| change.key == key && !change.deleted)
            .with_context(|| format!("{member} never acknowledged the pause of {run_id}"))?;
        windows.insert(
            member.clone(),
            PauseWindow {
                acknowledged: acknowledged.seen_at,
                barrier: barrier.seen_at,
            },
        );
    }
    Ok(windows)
}

/// How much of a pause, at either end, may go unsampled: a few rounds of
/// the probe.
pub const SAMPLE_SLACK: Duration = Duration::from_secs(2);

/// Fails unless each member's counter stayed flat over samples that span
/// its pause. The counter only grows, so flat from the first sample to the
/// last is flat in between; what is not sampled is the stretch before the
/// first and after the last, so the first must come within
/// [`SAMPLE_SLACK`] of the member's acknowledgement and the last within
/// [`SAMPLE_SLACK`] of the barrier.
pub fn ensure_flat_across_the_pause(
    samples: &BTreeMap<String, Vec<PauseSample>>,
    windows: &BTreeMap<String, PauseWindow>,
) -> anyhow::Result<()> {
    for (member, window) in windows {
        let taken = samples.get(member).map(Vec::as_slice).unwrap_or_default();
        let (Some(first), Some(last)) = (taken.first(), taken.last()) else {
            bail!("{member} was not sampled during its pause");
        };
        let unseen_at_start = first.at.saturating_duration_since(window.acknowledged);
        ensure!(
            unseen_at_start <= SAMPLE_SLACK,
            "{member}'s first sample came {unseen_at_start:?} after its pause acknowledgement \
             ({} samples): the start of its pause went unseen",
            taken.len()
        );
        let unseen_at_end = window.barrier.saturating_duration_since(last.at);
        ensure!(
            unseen_at_end <= SAMPLE_SLACK,
            "{member}'s last sample came {unseen_at_end:?} before the barrier \
             ({} samples): the end of its pause went unseen",
            taken.len()
        );
        let applied: Vec<u64> = taken.iter().map(|sample| sample.applied).collect();
        ensure!(
            first.applied == last.applied,
            "{member} applied events between its pause acknowledgement and the barrier: {applied:?}"
        );
    }
    Ok(())
}

/// The members' own counts agree with etcd's history: each survivor
/// counted exactly the done-records it wrote in this run; the killed
/// member's last observed count is no more than the records it wrote; and
/// the survivors' counts plus the killed member's records are the units of
/// the plan.
pub fn check_counters(
    tally: &Tally,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    killed: &str,
    killed_last_seen: u64,
) -> anyhow::Result<()> {
    let mut total = 0;
    for (member, count) in after {
        let during_run = count - before.get(member).copied().unwrap_or(0);
        let records = tally.done_by.get(member).copied().unwrap_or(0);
        ensure!(
            during_run == records,
            "{member} counted {during_run} completed units but wrote {records} done-records"
        );
        total += during_run;
    }
    let killed_records = tally.done_by.get(killed).copied().unwrap_or(0);
    let killed_during_run = killed_last_seen - before.get(killed).copied().unwrap_or(0);
    ensure!(
        killed_during_run <= killed_records,
        "the killed {killed} counted {killed_during_run} units but only {killed_records} done-records are its"
    );
    ensure!(
        total + killed_records == tally.units as u64,
        "{total} units completed by survivors and {killed_records} by the killed member, for {} planned",
        tally.units
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: Instant, from_secs: u64, to_secs: u64) -> PauseWindow {
        PauseWindow {
            acknowledged: start + Duration::from_secs(from_secs),
            barrier: start + Duration::from_secs(to_secs),
        }
    }

    fn samples_at(start: Instant, readings: &[(u64, u64)]) -> Vec<PauseSample> {
        readings
            .iter()
            .map(|(millis, applied)| PauseSample {
                at: start + Duration::from_millis(*millis),
                applied: *applied,
            })
            .collect()
    }

    #[test]
    fn pause_samples_must_span_the_pause_and_stay_flat() {
        let start = Instant::now();
        let windows = BTreeMap::from([("r1".to_owned(), window(start, 1, 11))]);
        let check = |readings: &[(u64, u64)]| {
            let samples = BTreeMap::from([("r1".to_owned(), samples_at(start, readings))]);
            ensure_flat_across_the_pause(&samples, &windows)
        };
        // From just after the acknowledgement to just before the barrier.
        check(&[(1_200, 7), (5_000, 7), (10_500, 7)]).expect("spans the pause");
        // One sample, early in the pause: the rest of it went unseen.
        let early = check(&[(1_200, 7)]).expect_err("one sample spans nothing");
        assert!(early.to_string().contains("r1"), "{early}");
        // Samples that begin late, or end early.
        check(&[(5_000, 7), (10_500, 7)]).expect_err("starts late");
        check(&[(1_200, 7), (5_000, 7)]).expect_err("ends early");
        // Spanning, but the counter moved.
        check(&[(1_200, 7), (5_000, 8), (10_500, 8)]).expect_err("applied during the pause");
        // A member without samples at all.
        let none =
            ensure_flat_across_the_pause(&BTreeMap::new(), &windows).expect_err("no samples");
        assert!(none.to_string().contains("r1"), "{none}");
    }
}
