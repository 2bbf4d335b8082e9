//! One schedule, end to end: start the world, run the workload and the
//! faults of the schedule, heal, let the last run complete and the backlog
//! drain, then check.

use crate::checker::{self, OwnershipWatch, Violation};
use crate::net::Firewall;
use crate::observe::{self, Admin, Change, LeaderSeen, Recorder, Sample, lock};
use crate::outcome::{Evidence, Outcome};
use crate::schedule::{self, Fault, RunPhase, Shape, SourceFault, Target};
use crate::workload::{self, Workload};
use crate::world::{DataModel, PARTITIONS, Timing, World};
use anyhow::{Context, anyhow, bail};
use recon_monolith::verify::compare_schema_databases;
use recon_tests::faulty_source::Fault as ProxyFault;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What every schedule shares.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long faults are injected.
    pub length: Duration,
    /// Random faults per schedule, besides the fixed ones.
    pub random_faults: usize,
    /// Replica timing.
    pub timing: Timing,
    /// Writer clients.
    pub clients: u64,
    /// The schema the world runs.
    pub data_model: DataModel,
    /// Every other run the schedule's `RequestRun` steps ask for leaves
    /// the consumers running (`"pause": "never"`) while the writers write.
    pub pause_mix: bool,
}

/// Whether a run the nemesis asks for pauses the consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    Always,
    Never,
}

impl Pause {
    /// As the admin API takes it.
    fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// How often the upkeep runs while the nemesis waits.
const UPKEEP_INTERVAL: Duration = Duration::from_millis(200);

/// How often the ownership check runs while the nemesis waits for
/// something in etcd (well within [`checker::UNOWNED_LIMIT`]).
const OWNERSHIP_INTERVAL: Duration = Duration::from_secs(2);

/// How long a run request is retried while no replica accepts it (etcd
/// stopped or restarting).
const REQUEST_PATIENCE: Duration = Duration::from_secs(15);

/// What the sampler and the nemesis share.
#[derive(Default)]
struct Shared {
    /// (member, incarnation, port) of the replicas that answer.
    answering: Vec<(String, u32, u16)>,
    samples: Vec<Sample>,
    leaders: Vec<LeaderSeen>,
    missing_metrics: Vec<String>,
}

/// A replica's link to a service.
#[derive(Debug, Clone, Copy)]
enum Link {
    Etcd,
    Postgres,
}

/// Undoing a timed fault.
#[derive(Debug, Clone)]
enum Undo {
    Thaw(String),
    ThawEtcd,
    Heal(String, Link),
    ClearSource(String),
    StartBroker(usize),
}

struct Nemesis {
    world: World,
    recorder: Recorder,
    shared: Arc<Mutex<Shared>>,
    admin: Admin,
    backup: String,
    seed: u64,
    outcome: Outcome,
    undo: Vec<(Instant, Undo)>,
    etcd_down: Vec<(Instant, Instant)>,
    etcd_stopped_at: Option<Instant>,
    kills: Vec<(Instant, String)>,
    /// Partitions without a consumer while every replica answers.
    ownership: OwnershipWatch,
    last_fault: Option<&'static str>,
    firewall: Firewall,
    /// The runs that answers to the nemesis' run requests named.
    requested_runs: Vec<String>,
    /// `RequestRun` steps taken (which of them leave consumers running).
    run_steps: u64,
    /// [`Options::pause_mix`].
    pause_mix: bool,
}

/// Runs schedule `seed`; logs go to `logs`.
pub async fn run(seed: u64, options: &Options, logs: &Path) -> Outcome {
    let world = match World::start(logs, seed, options.timing, options.data_model).await {
        Ok(world) => world,
        Err(error) => {
            return Outcome {
                error: Some(format!("the services did not start: {error:#}")),
                ..Outcome::default()
            };
        }
    };
    let recorder = Recorder::start(world.etcd.endpoint(), world.prefix.clone());
    let admin = world.admin().clone();
    let mut nemesis = Nemesis {
        recorder,
        shared: Arc::new(Mutex::new(Shared::default())),
        admin,
        backup: String::new(),
        seed,
        outcome: Outcome::default(),
        undo: Vec::new(),
        etcd_down: Vec::new(),
        etcd_stopped_at: None,
        kills: Vec::new(),
        ownership: OwnershipWatch::default(),
        last_fault: None,
        firewall: Firewall::probe(),
        requested_runs: Vec::new(),
        run_steps: 0,
        pause_mix: options.pause_mix,
        world,
    };
    if let Err(error) = nemesis.schedule(options).await {
        eprintln!("{}", nemesis.world.log_tails(30));
        nemesis.outcome.error = Some(format!("{error:#}"));
    }
    nemesis.outcome
}

impl Nemesis {
    async fn schedule(&mut self, options: &Options) -> anyhow::Result<()> {
        if let Some(detail) = self.wait_converged(Duration::from_secs(120)).await? {
            bail!("initial replication: {detail}");
        }
        crate::audit::install(&self.world.replica_db, options.data_model.schema).await?;
        let watched = crate::deletions::watched(self.world.monolith.model());
        crate::deletions::install_source(&self.world.monolith_db, &watched).await?;
        crate::deletions::install_replica(&self.world.replica_db, &watched).await?;
        self.backup = workload::backup(&self.world.monolith_url).await?;
        let stop_sampling = CancellationToken::new();
        self.publish_answering();
        let sampler = tokio::spawn(sample_loop(
            self.admin.clone(),
            self.shared.clone(),
            stop_sampling.clone(),
        ));
        let workload = Workload::start(
            &self.world.monolith_url,
            Arc::new(self.world.monolith.model().clone()),
            options.clients,
            self.seed,
        )
        .await?;
        let shape = Shape {
            length: options.length,
            lease_ttl: Duration::from_secs(options.timing.lease_ttl_secs),
            random_faults: options.random_faults,
        };
        self.outcome.steps = schedule::draw(self.seed, &shape);
        let start = Instant::now();
        for (index, step) in self.outcome.steps.clone().into_iter().enumerate() {
            let due = start + Duration::from_millis(step.at_millis);
            self.idle_until(due).await?;
            if let Err(error) = self.inject(index, step.fault).await {
                let failed = format!("step {index} ({}): {error:#}", step.fault.name());
                eprintln!("schedule {}: {failed}", self.seed);
                self.outcome.failed_steps.push(failed);
            }
        }
        self.idle_until(start + options.length).await?;
        // Heal everything, stop writing, let the last run finish.
        let healed_at = Instant::now();
        self.heal().await?;
        workload.counts_into(&mut self.outcome.writes);
        workload.stop().await;
        self.final_run(options).await?;
        match self.wait_converged(Duration::from_secs(180)).await? {
            None => self.outcome.converge_millis = Some(millis(healed_at.elapsed())),
            Some(detail) => self.outcome.violations.push(Violation {
                invariant: "converged",
                detail: format!("after heal: {detail}"),
            }),
        }
        stop_sampling.cancel();
        sampler.await.context("sampler task")?;
        self.check(options).await
    }

    /// Runs the upkeep and the ownership check until `due`.
    async fn idle_until(&mut self, due: Instant) -> anyhow::Result<()> {
        loop {
            let now = Instant::now();
            self.upkeep().await?;
            self.watch_ownership().await?;
            if now >= due {
                return Ok(());
            }
            tokio::time::sleep((due - now).min(UPKEEP_INTERVAL)).await;
        }
    }

    /// What the nemesis keeps doing whatever it waits for: undo the timed
    /// faults that expired, run the supervisor.
    async fn upkeep(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.undo.retain(|(at, undo)| {
            let done = *at <= now;
            if done {
                expired.push(undo.clone());
            }
            !done
        });
        for undo in expired {
            self.undo(undo).await?;
        }
        self.world.supervise().await?;
        self.publish_answering();
        Ok(())
    }

    /// Waits until `found` finds something in etcd's history (looked at
    /// every 20 ms, so that a short run phase is seen), keeping the upkeep
    /// going, and the ownership check (a request to every replica) every
    /// [`OWNERSHIP_INTERVAL`]; fails after `timeout`.
    async fn wait_in_etcd<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&[Change]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut next_upkeep = Instant::now();
        let mut next_ownership = Instant::now() + OWNERSHIP_INTERVAL;
        loop {
            if let Some(value) = self.recorder.find(&mut found) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting in etcd for {what}");
            }
            if Instant::now() >= next_upkeep {
                self.upkeep().await?;
                next_upkeep = Instant::now() + UPKEEP_INTERVAL;
            }
            if Instant::now() >= next_ownership {
                self.watch_ownership().await?;
                next_ownership = Instant::now() + OWNERSHIP_INTERVAL;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn publish_answering(&self) {
        lock(&self.shared).answering = self.world.answering();
    }

    /// Whether every partition has an owner (see [`OwnershipWatch`]).
    async fn watch_ownership(&mut self) -> anyhow::Result<()> {
        let (owned, all_answered) = self.world.ownership().await;
        let after = self.last_fault.unwrap_or("start");
        let observed =
            self.ownership
                .observe(Instant::now(), &owned, all_answered, PARTITIONS, after);
        self.outcome.violations.extend(observed);
        Ok(())
    }

    fn count(&mut self, fault: &Fault) {
        self.last_fault = Some(fault.name());
        *self
            .outcome
            .injected
            .entry(fault.name().into())
            .or_default() += 1;
        self.outcome.leader_kills += u64::from(fault.kills_leader());
        self.outcome.partitions += u64::from(fault.partitions());
    }

    /// The member a target names now; waits up to 10 s for a leader that
    /// answers (a leader frozen or just killed has none for a while).
    async fn resolve(&self, target: Target) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answering: Vec<String> = self
                .world
                .answering()
                .into_iter()
                .map(|(member, _, _)| member)
                .collect();
            let leader = self.world.leader().await.map(|(leader, _)| leader);
            let chosen = match target {
                Target::Leader => leader.filter(|leader| answering.contains(leader)),
                Target::Follower => {
                    let followers: Vec<&String> = answering
                        .iter()
                        .filter(|member| Some(*member) != leader.as_ref())
                        .collect();
                    let index = usize::try_from(self.seed).unwrap_or(0) % followers.len().max(1);
                    followers.get(index).map(|member| (*member).clone())
                }
            };
            if chosen.is_some() || Instant::now() > deadline {
                return chosen;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn skipped(&mut self, fault: &Fault) {
        *self.outcome.skipped.entry(fault.name().into()).or_default() += 1;
    }

    async fn inject(&mut self, index: usize, fault: Fault) -> anyhow::Result<()> {
        let now = Instant::now();
        let after = |millis: u64| now + Duration::from_millis(millis);
        let resolved = match fault {
            Fault::Kill { target }
            | Fault::Freeze { target, .. }
            | Fault::Source { target, .. }
            | Fault::PartitionEtcd { target, .. }
            | Fault::PartitionPostgres { target, .. } => self.resolve(target).await,
            _ => None,
        };
        match fault {
            Fault::Kill { target } => {
                let Some(member) = resolved else {
                    self.skipped(&fault);
                    return Ok(());
                };
                self.kill(&member, target == Target::Leader).await?;
            }
            Fault::KillLeaderIn { phase } => {
                if !self.kill_leader_in(phase).await? {
                    self.skipped(&fault);
                    return Ok(());
                }
            }
            Fault::Freeze { millis, .. } => {
                let Some(member) = resolved else {
                    self.skipped(&fault);
                    return Ok(());
                };
                self.world.freeze(&member, true)?;
                self.undo.push((after(millis), Undo::Thaw(member)));
            }
            Fault::RestartEtcd => {
                let down = Instant::now();
                self.world.etcd.restart().await?;
                self.etcd_down.push((down, Instant::now()));
            }
            Fault::StopEtcd { millis } => {
                if self.etcd_stopped_at.is_some() {
                    self.skipped(&fault);
                    return Ok(());
                }
                self.world.etcd.freeze(true)?;
                self.etcd_stopped_at = Some(now);
                self.undo.push((after(millis), Undo::ThawEtcd));
            }
            Fault::RestartPostgres => self.world.postgres.restart_immediate().await?,
            Fault::KillBroker { node, millis } => {
                if !self.world.broker.node_running(node) {
                    self.skipped(&fault);
                    return Ok(());
                }
                self.world.broker.kill_node(node).await?;
                self.undo.push((after(millis), Undo::StartBroker(node)));
            }
            Fault::Source {
                fault: source_fault,
                millis,
                ..
            } => {
                let Some(member) = resolved else {
                    self.skipped(&fault);
                    return Ok(());
                };
                let replica = self.world.replica_mut(&member)?;
                let path_contains = "/v1/".to_owned();
                let page = replica.source.requests("/v1/");
                replica.source.set_fault(match source_fault {
                    SourceFault::ServerErrors => ProxyFault::ServerErrorAtPage {
                        path_contains,
                        page,
                        times: usize::MAX / 2,
                    },
                    SourceFault::Slow => ProxyFault::Delay {
                        path_contains,
                        delay: Duration::from_secs(3),
                    },
                    SourceFault::Resets => ProxyFault::TruncatedBody {
                        path_contains,
                        page,
                        times: usize::MAX / 2,
                    },
                });
                self.undo.push((after(millis), Undo::ClearSource(member)));
            }
            Fault::PartitionEtcd { millis, .. } | Fault::PartitionPostgres { millis, .. } => {
                let Some(member) = resolved else {
                    self.skipped(&fault);
                    return Ok(());
                };
                let link = if matches!(fault, Fault::PartitionEtcd { .. }) {
                    Link::Etcd
                } else {
                    Link::Postgres
                };
                self.partition(&member, link, true)?;
                self.undo.push((after(millis), Undo::Heal(member, link)));
            }
            Fault::RequestRun => {
                let pause = self.mixed_pause();
                self.request_run(REQUEST_PATIENCE, pause).await?;
                if pause == Pause::Never {
                    self.outcome.evidence.never_paused_runs += 1;
                }
            }
            Fault::Drift => {
                self.outcome.evidence.drifted_rows += crate::drift::drift(
                    &self.world.replica_db,
                    self.world.data_model.schema,
                    self.seed * 100 + index as u64,
                )
                .await?;
            }
            Fault::Restore => {
                // Noted first: from now on a reconciliation may lower a
                // version ("no version regression").
                crate::audit::note_restore(&self.world.replica_db).await?;
                workload::restore(&self.world.monolith_url, &self.backup).await?;
            }
        }
        self.count(&fault);
        Ok(())
    }

    async fn kill(&mut self, member: &str, leader: bool) -> anyhow::Result<()> {
        if leader {
            self.kills.push((Instant::now(), member.to_owned()));
        }
        self.world.kill(member).await?;
        self.publish_answering();
        Ok(())
    }

    /// Requests a run (unless one is current), waits until it reaches
    /// `phase` (at most 30 s) and kills the leader then. Whether it did.
    async fn kill_leader_in(&mut self, phase: RunPhase) -> anyhow::Result<bool> {
        let run = match current_run(&self.recorder.changes()) {
            Some(run) => run,
            None => self.request_run(REQUEST_PATIENCE, Pause::Always).await?,
        };
        let reached = self
            .wait_in_etcd("the run phase", Duration::from_secs(30), |changes| {
                in_phase(changes, &run, phase).then_some(())
            })
            .await;
        let Ok(()) = reached else {
            *self
                .outcome
                .phases_hit
                .entry(format!("{phase:?} missed"))
                .or_default() += 1;
            return Ok(false);
        };
        let Some(leader) = self.resolve(Target::Leader).await else {
            return Ok(false);
        };
        if phase == RunPhase::LastDone {
            // The window between the last done-record and the barrier is
            // milliseconds wide: freeze the leader with one unit left, let
            // a follower write the last done-record, then kill it.
            self.world.freeze(&leader, true)?;
            let all_done = self
                .wait_in_etcd("the last done-record", Duration::from_secs(15), |changes| {
                    let progress = progress(changes, &run);
                    (progress.units > 0 && progress.done >= progress.units).then_some(())
                })
                .await;
            if all_done.is_err() {
                *self
                    .outcome
                    .phases_hit
                    .entry("LastDone held by the leader".into())
                    .or_default() += 1;
            }
        }
        self.kill(&leader, true).await?;
        let still = in_phase(&self.recorder.changes(), &run, phase);
        let hit = if still { "hit" } else { "late" };
        *self
            .outcome
            .phases_hit
            .entry(format!("{phase:?} {hit}"))
            .or_default() += 1;
        Ok(true)
    }

    /// The policy of the next `RequestRun` step: with the pause mix, every
    /// other one leaves consumers running (which ones depends on the
    /// seed); else all pause.
    fn mixed_pause(&mut self) -> Pause {
        self.run_steps += 1;
        if self.pause_mix && (self.seed + self.run_steps).is_multiple_of(2) {
            Pause::Never
        } else {
            Pause::Always
        }
    }

    /// Asks an answering replica for a run, retrying for up to `patience`
    /// as an operator would while etcd is unreachable (the upkeep keeps
    /// going); the id of the run that will serve the request.
    ///
    /// That run may wait behind a run in progress (for as long as
    /// `max_pause`), so the step does not wait for it to start: the
    /// checker requires at the end that every run named this way started
    /// ([`checker::requested_runs_started`]).
    async fn request_run(&mut self, patience: Duration, pause: Pause) -> anyhow::Result<String> {
        let deadline = Instant::now() + patience;
        loop {
            match self.post_run_request(pause).await {
                Ok(run) => {
                    self.requested_runs.push(run.clone());
                    return Ok(run);
                }
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => {
                    self.idle_until(Instant::now() + Duration::from_secs(1))
                        .await?
                }
            }
        }
    }

    /// `POST /reconcile` to the first answering replica that accepts it;
    /// the run its answer names (a fresh id, or that of the pending
    /// request it was merged into).
    async fn post_run_request(&self, pause: Pause) -> anyhow::Result<String> {
        let body = json!({
            "allow_mass_delete": true,
            "confirm_mass_delete": true,
            "pause": pause.as_str(),
        });
        let mut last_error = anyhow!("no replica answers");
        for (_, _, port) in self.world.answering() {
            match self.admin.request_run(port, &body).await {
                Ok(answer) => {
                    return answer["run_id"]
                        .as_str()
                        .map(str::to_owned)
                        .with_context(|| format!("the answer names no run: {answer}"));
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// Cuts (or heals) one replica's link: with iptables where it works,
    /// else by making the link's proxy stop forwarding.
    fn partition(&mut self, member: &str, link: Link, cut: bool) -> anyhow::Result<()> {
        let replica = self.world.replica_mut(member)?;
        let proxy = match link {
            Link::Etcd => &replica.etcd_link,
            Link::Postgres => &replica.postgres_link,
        };
        match (self.firewall.available(), cut) {
            (true, true) => self.firewall.cut(proxy.port)?,
            (true, false) => self.firewall.heal(proxy.port)?,
            (false, true) => proxy.freeze(),
            (false, false) => proxy.thaw(),
        }
        Ok(())
    }

    async fn undo(&mut self, undo: Undo) -> anyhow::Result<()> {
        match undo {
            Undo::Thaw(member) => self.world.freeze(&member, false)?,
            Undo::ThawEtcd => {
                self.world.etcd.freeze(false)?;
                if let Some(stopped) = self.etcd_stopped_at.take() {
                    self.etcd_down.push((stopped, Instant::now()));
                }
            }
            Undo::Heal(member, link) => self.partition(&member, link, false)?,
            Undo::ClearSource(member) => self
                .world
                .replica_mut(&member)?
                .source
                .set_fault(ProxyFault::None),
            Undo::StartBroker(node) => self.world.broker.start_node(node).await?,
        }
        Ok(())
    }

    async fn heal(&mut self) -> anyhow::Result<()> {
        for (_, undo) in std::mem::take(&mut self.undo) {
            self.undo(undo).await?;
        }
        self.world.heal().await?;
        self.publish_answering();
        Ok(())
    }

    /// Waits for the current run to end, then requests runs until one
    /// completes (at most three).
    async fn final_run(&mut self, options: &Options) -> anyhow::Result<()> {
        let longest = Duration::from_secs(options.timing.max_pause_secs + 60);
        if let Some(run) = current_run(&self.recorder.changes()) {
            self.wait_barrier(&run, longest).await?;
        }
        for _ in 0..3 {
            let run = self
                .request_run(Duration::from_secs(60), Pause::Always)
                .await?;
            let status = self.wait_barrier(&run, longest).await?;
            if status.starts_with("completed") {
                return Ok(());
            }
            eprintln!(
                "schedule {}: final run {run} ended {status}; again",
                self.seed
            );
        }
        bail!("no final run completed in three tries")
    }

    /// Waits for a run's barrier; its status.
    async fn wait_barrier(&mut self, run: &str, timeout: Duration) -> anyhow::Result<String> {
        let key = format!("runs/{run}/barrier");
        self.wait_in_etcd(&format!("the barrier of {run}"), timeout, |changes| {
            changes
                .iter()
                .find(|change| change.key == key && !change.deleted)
                .map(|change| change.value["status"].as_str().unwrap_or("?").to_owned())
        })
        .await
    }

    /// Waits until the relay published everything and the replica equals
    /// the monolith row by row, keeping the supervisor going; what still
    /// differs after `timeout`, if anything.
    async fn wait_converged(&mut self, timeout: Duration) -> anyhow::Result<Option<String>> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut last_report = started;
        loop {
            let backlog = self.world.monolith.outbox_backlog().await;
            let differences = compare_schema_databases(
                self.world.data_model.schema,
                &self.world.monolith_db,
                &self.world.replica_db,
            )
            .await;
            if let (Ok(0), Ok(differences)) = (&backlog, &differences)
                && differences.is_empty()
                && differences.monolith_rows > 0
            {
                return Ok(None);
            }
            if last_report.elapsed() > Duration::from_secs(20) {
                last_report = Instant::now();
                let total = differences
                    .as_ref()
                    .map(|differences| differences.total)
                    .ok();
                eprintln!(
                    "schedule {}: converging for {:?}: outbox backlog {:?}, rows differing {total:?}",
                    self.seed,
                    started.elapsed(),
                    backlog.as_ref().ok()
                );
            }
            if Instant::now() > deadline {
                let backlog = match backlog {
                    Ok(backlog) => backlog.to_string(),
                    Err(error) => format!("unknown: {error}"),
                };
                let detail = match differences {
                    Ok(differences) => format!(
                        "{} rows differ, outbox backlog {backlog}\nonly in monolith: {:#?}\nonly in replica: {:#?}",
                        differences.total,
                        differences.only_in_monolith,
                        differences.only_in_replica
                    ),
                    Err(error) => format!("comparison failed: {error}; outbox backlog {backlog}"),
                };
                return Ok(Some(format!("not equal after {timeout:?}: {detail}")));
            }
            self.idle_until(Instant::now() + Duration::from_millis(500))
                .await?;
        }
    }

    async fn check(&mut self, options: &Options) -> anyhow::Result<()> {
        let changes = self.recorder.changes();
        let shared = std::mem::take(&mut *lock(&self.shared));
        let violations = &mut self.outcome.violations;
        violations.extend(checker::units_done_once(&changes));
        violations.extend(checker::paused_until_barrier(&shared.samples));
        for missing in shared.missing_metrics {
            violations.push(Violation {
                invariant: "paused until barrier",
                detail: missing,
            });
        }
        let (ends, ended) = checker::runs_ended(
            &changes,
            Duration::from_secs(options.timing.max_pause_secs),
            Duration::from_secs(options.timing.lease_ttl_secs * 3 + 10),
            &self.etcd_down,
        );
        violations.extend(ended);
        violations.extend(checker::requested_runs_started(
            &changes,
            &self.requested_runs,
        ));
        let audit = crate::audit::check(&self.world.replica_db).await?;
        violations.extend(audit.violations.into_iter().map(|detail| Violation {
            invariant: "no write from a fenced epoch",
            detail,
        }));
        let versions = crate::audit::check_versions(&self.world.replica_db).await?;
        violations.extend(versions.violations.into_iter().map(|detail| Violation {
            invariant: "no version regression",
            detail,
        }));
        let deletions =
            crate::deletions::check(&self.world.monolith_db, &self.world.replica_db).await?;
        violations.extend(deletions.violations.into_iter().map(|detail| Violation {
            invariant: "no version regression",
            detail,
        }));
        self.outcome.runs_completed = ends.completed;
        self.outcome.runs_aborted = ends.aborted;
        self.outcome.evidence = Evidence {
            done_records: checker::done_records(&changes) as u64,
            paused_samples: checker::paused_samples(&shared.samples) as u64,
            never_paused_runs: self.outcome.evidence.never_paused_runs,
            lowered_after_restores: versions.lowered_after_restores,
            tombstones_judged: deletions.tombstones_checked,
            stale_tombstones: deletions.before_restores,
            fenced_writes: audit.fenced_writes_checked,
            drifted_rows: self.outcome.evidence.drifted_rows,
        };
        self.outcome.failover_millis = failovers(&self.kills, &shared.leaders);
        self.outcome.unexpected_exits = self.world.unexpected_exits.len();
        Ok(())
    }
}

/// For each leader kill, the time until a member reported another leader.
fn failovers(kills: &[(Instant, String)], leaders: &[LeaderSeen]) -> Vec<u64> {
    kills
        .iter()
        .filter_map(|(at, old)| {
            leaders
                .iter()
                .find(|seen| seen.at > *at && seen.leader != *old)
                .map(|seen| millis(seen.at.duration_since(*at)))
        })
        .collect()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The run in `run/current` that has no barrier yet.
fn current_run(changes: &[Change]) -> Option<String> {
    let latest = changes
        .iter()
        .rev()
        .find(|change| change.key == "run/current")?;
    let run = latest.value["run_id"].as_str()?;
    let barrier = format!("runs/{run}/barrier");
    (!latest.deleted && !changes.iter().any(|change| change.key == barrier)).then(|| run.to_owned())
}

/// Where a run stands, by its keys in etcd.
#[derive(Debug, Default)]
struct Progress {
    plan: bool,
    units: usize,
    assigned: bool,
    done: usize,
    barrier: bool,
}

fn progress(changes: &[Change], run: &str) -> Progress {
    let prefix = format!("runs/{run}/");
    let mut progress = Progress::default();
    let mut done = BTreeSet::new();
    for change in changes.iter().filter(|change| !change.deleted) {
        let Some(key) = change.key.strip_prefix(&prefix) else {
            continue;
        };
        if key == "plan" {
            progress.plan = true;
        } else if key.starts_with("plan-pages/") {
            progress.units += change.value.as_array().map_or(0, Vec::len);
        } else if key.starts_with("assign/") {
            progress.assigned = true;
        } else if let Some(unit) = key.strip_prefix("done/") {
            done.insert(unit);
        } else if key == "barrier" {
            progress.barrier = true;
        }
    }
    progress.done = done.len();
    progress
}

/// Whether `run` is in `phase` now; for [`RunPhase::LastDone`], whether
/// at most one unit is left.
fn in_phase(changes: &[Change], run: &str, phase: RunPhase) -> bool {
    let progress = progress(changes, run);
    if progress.barrier {
        return false;
    }
    match phase {
        RunPhase::Planning => !progress.plan,
        RunPhase::Acks => progress.plan && !progress.assigned,
        RunPhase::Units => progress.done > 0 && progress.done < progress.units,
        RunPhase::LastDone => progress.units > 0 && progress.done + 1 >= progress.units,
    }
}

/// Samples every answering replica every 150 ms until stopped.
async fn sample_loop(admin: Admin, shared: Arc<Mutex<Shared>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let answering = lock(&shared).answering.clone();
        let samples =
            futures::future::join_all(answering.iter().map(|(member, incarnation, port)| {
                observe::sample(&admin, member, *incarnation, *port)
            }))
            .await;
        {
            let mut shared = lock(&shared);
            for result in samples {
                match result {
                    Ok(Some((sample, leader))) => {
                        shared.samples.push(sample);
                        shared.leaders.extend(leader);
                    }
                    Ok(None) => {}
                    Err(error) => shared.missing_metrics.push(format!("{error:#}")),
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(150)) => {}
        }
    }
}
