//! The invariants, checked over what was recorded (etcd's history of the
//! service prefix, the replicas' samples): pure functions, so that each can
//! be shown to fail on a history that breaks it.
//!
//! The end state (replica equals monolith), the fencing audit and the
//! version audit are checked in SQL ([`recon_monolith::verify`],
//! [`crate::audit`]).

use crate::observe::{Change, Sample};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The invariants, by name (the figures count violations per name).
pub const INVARIANTS: [&str; 8] = [
    "converged",
    "unit done once",
    "paused until barrier",
    "no write from a fenced epoch",
    "no version regression",
    "run ended within max_pause",
    "requested run started",
    "partitions owned",
];

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (one of [`INVARIANTS`]).
    pub invariant: &'static str,
    /// What happened.
    pub detail: String,
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// `runs/<run>/done/<unit>` → (run, unit).
fn done_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("runs/")?;
    let (run, unit) = rest.split_once("/done/")?;
    Some((run, unit))
}

/// No unit of any run has two done-records: every put of a done key is a
/// completion, and a second put of the same key would be a second one
/// (etcd keeps the last value; the watch saw both).
pub fn units_done_once(changes: &[Change]) -> Vec<Violation> {
    let mut puts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for change in changes.iter().filter(|change| !change.deleted) {
        if let Some((run, unit)) = done_key(&change.key) {
            let member = change.value["member"].as_str().unwrap_or("?").to_owned();
            puts.entry((run.to_owned(), unit.to_owned()))
                .or_default()
                .push(member);
        }
    }
    puts.into_iter()
        .filter(|(_, members)| members.len() > 1)
        .map(|((run, unit), members)| {
            violation(
                "unit done once",
                format!(
                    "unit {unit} of run {run} was completed {} times, by {members:?}",
                    members.len()
                ),
            )
        })
        .collect()
}

/// How many done-records were written (to show the check saw work).
pub fn done_records(changes: &[Change]) -> usize {
    changes
        .iter()
        .filter(|change| !change.deleted && done_key(&change.key).is_some())
        .count()
}

/// No replica handed an event to its store between acknowledging a run's
/// pause and that run's barrier: over the samples of one process that were
/// taken with the pause acknowledged before and the run still current
/// after, the event counter stays flat.
pub fn paused_until_barrier(samples: &[Sample]) -> Vec<Violation> {
    let mut during: BTreeMap<(String, u32, String), Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        if let Some(run) = &sample.before.run_id
            && sample.before.acknowledged
            && sample.after.run_id.as_ref() == Some(run)
        {
            during
                .entry((sample.member.clone(), sample.incarnation, run.clone()))
                .or_default()
                .push(sample);
        }
    }
    during
        .into_iter()
        .filter_map(|((member, incarnation, run), samples)| {
            let first = samples.first()?;
            let moved = samples.iter().find(|sample| sample.events != first.events)?;
            Some(violation(
                "paused until barrier",
                format!(
                    "{member} (start {incarnation}) handed {} events to its store during run {run}, \
                     {:?} after its first paused sample",
                    moved.events.abs_diff(first.events),
                    moved.at.duration_since(first.at)
                ),
            ))
        })
        .collect()
}

/// Samples taken while paused (to show the check saw pauses).
pub fn paused_samples(samples: &[Sample]) -> usize {
    samples
        .iter()
        .filter(|sample| sample.before.acknowledged && sample.before.run_id == sample.after.run_id)
        .count()
}

/// How each run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEnds {
    /// Runs whose barrier says completed (with or without problems).
    pub completed: usize,
    /// Runs aborted, with their reasons.
    pub aborted: Vec<String>,
    /// Runs that never got a barrier.
    pub unended: Vec<String>,
}

/// Every run got a barrier; completed, or aborted with a reason; within
/// `max_pause` plus `grace`, not counting the time etcd was unavailable
/// (nothing can be written then, a barrier included).
pub fn runs_ended(
    changes: &[Change],
    max_pause: Duration,
    grace: Duration,
    etcd_down: &[(Instant, Instant)],
) -> (RunEnds, Vec<Violation>) {
    let mut started: BTreeMap<String, Instant> = BTreeMap::new();
    for change in changes
        .iter()
        .filter(|change| !change.deleted && change.key == "run/current")
    {
        if let Some(run) = change.value["run_id"].as_str() {
            started.entry(run.to_owned()).or_insert(change.seen_at);
        }
    }
    let mut ends = RunEnds::default();
    let mut violations = Vec::new();
    for (run, start) in started {
        let key = format!("runs/{run}/barrier");
        let Some(barrier) = changes
            .iter()
            .find(|change| !change.deleted && change.key == key)
        else {
            ends.unended.push(run.clone());
            violations.push(violation(
                "run ended within max_pause",
                format!("run {run} never got a barrier"),
            ));
            continue;
        };
        match barrier.value["status"].as_str() {
            Some("completed" | "completed_with_problems") => ends.completed += 1,
            status => {
                let reason = barrier.value["reason"].as_str().unwrap_or_default();
                if reason.is_empty() {
                    violations.push(violation(
                        "run ended within max_pause",
                        format!("run {run} ended {status:?} without a reason"),
                    ));
                }
                ends.aborted
                    .push(format!("{run}: {} ({reason})", status.unwrap_or("?")));
            }
        }
        let took = barrier.seen_at.saturating_duration_since(start);
        let down: Duration = etcd_down
            .iter()
            .map(|(from, to)| {
                (*to)
                    .min(barrier.seen_at)
                    .saturating_duration_since((*from).max(start))
            })
            .sum();
        if took.saturating_sub(down) > max_pause + grace {
            violations.push(violation(
                "run ended within max_pause",
                format!("run {run} took {took:?} ({down:?} of it with etcd down), max_pause {max_pause:?}"),
            ));
        }
    }
    (ends, violations)
}

/// Every run that an accepted run request named started (its id was seen
/// in `run/current`). Checked once a final run completed: a request
/// accepted earlier was served before it, or merged into its request.
pub fn requested_runs_started(changes: &[Change], requested: &[String]) -> Vec<Violation> {
    let started: BTreeSet<&str> = changes
        .iter()
        .filter(|change| !change.deleted && change.key == "run/current")
        .filter_map(|change| change.value["run_id"].as_str())
        .collect();
    let missing: BTreeSet<&str> = requested
        .iter()
        .map(String::as_str)
        .filter(|run| !started.contains(run))
        .collect();
    missing
        .into_iter()
        .map(|run| {
            violation(
                "requested run started",
                format!("run {run} was requested, and the request accepted, but it never started"),
            )
        })
        .collect()
}

/// How long a partition may stay without a consumer while every replica
/// answers: the session timeout (10 s) for the group coordinator to expire
/// a member, and as long again for the rebalance.
pub const UNOWNED_LIMIT: Duration = Duration::from_secs(20);

/// Every partition has an owner whenever every replica answers: Kafka's
/// group coordinator expires a dead member after the session timeout and
/// rebalances by itself. A partition left without a consumer for longer
/// than [`UNOWNED_LIMIT`] while every replica answers (a consumer that lost
/// its assignment, a rebalance that never finished) is a violation,
/// recorded once per stretch; nothing is restarted to heal it.
#[derive(Debug, Default)]
pub struct OwnershipWatch {
    /// Since when some partition has had no owner while every replica
    /// answered, and whether that stretch was reported.
    unowned_since: Option<(Instant, bool)>,
}

impl OwnershipWatch {
    /// Takes one look: the partitions some replica owns, whether every
    /// replica answered, how many partitions the topic has, the last fault
    /// injected. A violation when this look ends a stretch's limit.
    pub fn observe(
        &mut self,
        now: Instant,
        owned: &[i64],
        all_answered: bool,
        partitions: i64,
        last_fault: &str,
    ) -> Option<Violation> {
        if !all_answered || owned.len() == usize::try_from(partitions).unwrap_or(0) {
            self.unowned_since = None;
            return None;
        }
        let (since, reported) = self.unowned_since.get_or_insert((now, false));
        let unowned_for = now.saturating_duration_since(*since);
        if *reported || unowned_for <= UNOWNED_LIMIT {
            return None;
        }
        *reported = true;
        Some(violation(
            "partitions owned",
            format!(
                "partitions owned {owned:?} of {partitions} for {unowned_for:?} with every replica answering (last fault: {last_fault})"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::RunSeen;
    use serde_json::json;

    fn put(at: Instant, key: &str, value: serde_json::Value) -> Change {
        Change {
            seen_at: at,
            key: key.to_owned(),
            value,
            deleted: false,
        }
    }

    #[test]
    fn a_unit_completed_twice_is_a_violation_and_once_is_not() {
        let now = Instant::now();
        let once = vec![
            put(now, "runs/r1/done/u1", json!({"member": "a"})),
            put(now, "runs/r1/done/u2", json!({"member": "b"})),
            put(now, "runs/r2/done/u1", json!({"member": "b"})),
        ];
        assert!(units_done_once(&once).is_empty());
        assert_eq!(done_records(&once), 3);
        let mut twice = once;
        twice.push(put(now, "runs/r1/done/u1", json!({"member": "c"})));
        let found = units_done_once(&twice);
        assert_eq!(found.len(), 1);
        assert!(found[0].detail.contains("u1 of run r1"), "{found:?}");
    }

    fn sample(
        member: &str,
        incarnation: u32,
        at: Instant,
        run: Option<&str>,
        acked: bool,
        events: u64,
    ) -> Sample {
        let seen = RunSeen {
            run_id: run.map(str::to_owned),
            acknowledged: acked,
        };
        Sample {
            member: member.to_owned(),
            incarnation,
            at,
            before: seen.clone(),
            events,
            after: seen,
        }
    }

    #[test]
    fn events_handed_to_the_store_during_an_acknowledged_pause_are_a_violation() {
        let now = Instant::now();
        let flat = vec![
            sample("a", 1, now, None, false, 10),
            sample("a", 1, now, Some("r1"), true, 12),
            sample("a", 1, now, Some("r1"), true, 12),
            sample("a", 1, now, None, false, 30),
            // A restarted process counts from zero again: not a move.
            sample("a", 2, now, Some("r1"), true, 0),
            // Not acknowledged yet: events may still flow.
            sample("b", 1, now, Some("r1"), false, 5),
            sample("b", 1, now, Some("r1"), false, 9),
        ];
        assert!(paused_until_barrier(&flat).is_empty());
        assert_eq!(paused_samples(&flat), 3);
        let mut moved = flat;
        moved.push(sample("a", 1, now, Some("r1"), true, 13));
        let found = paused_until_barrier(&moved);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].detail.contains("a (start 1) handed 1 events"),
            "{found:?}"
        );
    }

    #[test]
    fn a_run_without_barrier_or_reason_or_over_max_pause_is_a_violation() {
        let start = Instant::now();
        let later = |secs| start + Duration::from_secs(secs);
        let changes = vec![
            put(start, "run/current", json!({"run_id": "ok"})),
            put(later(5), "runs/ok/barrier", json!({"status": "completed"})),
            put(later(6), "run/current", json!({"run_id": "aborted"})),
            put(
                later(7),
                "runs/aborted/barrier",
                json!({"status": "aborted", "reason": "max_pause"}),
            ),
            put(later(8), "run/current", json!({"run_id": "silent"})),
            put(
                later(9),
                "runs/silent/barrier",
                json!({"status": "aborted"}),
            ),
            put(later(10), "run/current", json!({"run_id": "slow"})),
            put(
                later(60),
                "runs/slow/barrier",
                json!({"status": "completed"}),
            ),
            put(later(61), "run/current", json!({"run_id": "lost"})),
        ];
        let (ends, found) = runs_ended(
            &changes,
            Duration::from_secs(30),
            Duration::from_secs(5),
            &[],
        );
        assert_eq!(ends.completed, 2);
        assert_eq!(ends.aborted.len(), 2);
        assert_eq!(ends.unended, vec!["lost".to_owned()]);
        let details: Vec<&str> = found.iter().map(|found| found.detail.as_str()).collect();
        assert_eq!(found.len(), 3, "{details:?}");
        assert!(details.iter().any(|detail| detail.contains("silent")));
        assert!(
            details
                .iter()
                .any(|detail| detail.contains("run slow took"))
        );
        assert!(
            details
                .iter()
                .any(|detail| detail.contains("lost never got a barrier"))
        );
        // etcd down for 20 s of the slow run: within max_pause after all.
        let (_, found) = runs_ended(
            &changes,
            Duration::from_secs(30),
            Duration::from_secs(5),
            &[(later(20), later(40))],
        );
        assert!(
            !found
                .iter()
                .any(|found| found.detail.contains("run slow took"))
        );
    }

    #[test]
    fn a_requested_run_that_never_started_is_a_violation() {
        let now = Instant::now();
        let changes = vec![
            put(
                now,
                "run/current",
                json!({"run_id": "r1", "phase": "pausing"}),
            ),
            put(
                now,
                "run/current",
                json!({"run_id": "r1", "phase": "working"}),
            ),
            put(now, "runs/r1/barrier", json!({"status": "completed"})),
        ];
        let requested = ["r1".to_owned(), "r1".to_owned(), "r2".to_owned()];
        let found = requested_runs_started(&changes, &requested);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].detail.contains("run r2 "), "{found:?}");
        assert!(requested_runs_started(&changes, &requested[..2]).is_empty());
    }

    #[test]
    fn a_partition_unowned_past_the_limit_with_every_replica_answering_is_one_violation() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut watch = OwnershipWatch::default();
        assert_eq!(watch.observe(at(0), &[0, 1, 2, 3], true, 4, "start"), None);
        assert_eq!(
            watch.observe(at(1), &[0, 1, 2], true, 4, "kill leader"),
            None
        );
        assert_eq!(
            watch.observe(at(20), &[0, 1, 2], true, 4, "kill leader"),
            None
        );
        let found = watch
            .observe(at(22), &[0, 1, 2], true, 4, "kill leader")
            .expect("unowned for 21 s");
        assert_eq!(found.invariant, "partitions owned");
        assert!(
            found.detail.contains("[0, 1, 2] of 4") && found.detail.contains("kill leader"),
            "{found:?}"
        );
        // Once per stretch.
        assert_eq!(
            watch.observe(at(40), &[0, 1, 2], true, 4, "kill leader"),
            None
        );
        // A replica that does not answer ends the stretch: its partitions
        // are the group coordinator's to move, within the session timeout.
        assert_eq!(watch.observe(at(41), &[0], false, 4, "freeze leader"), None);
        assert_eq!(watch.observe(at(42), &[0], true, 4, "freeze leader"), None);
        assert_eq!(watch.observe(at(60), &[0], true, 4, "freeze leader"), None);
        assert!(
            watch
                .observe(at(63), &[0], true, 4, "freeze leader")
                .is_some()
        );
    }
}
