//! Every change under one service's prefix in the coordinator (etcd, or
//! ZooKeeper), as the test saw it through a watch of its own: which runs,
//! plans, claims and done-records were written, by whom, in which order,
//! and which leaders were elected with which epoch. Done-records are keyed
//! by unit, so a second completion of a unit would *overwrite* the first;
//! the watch still sees both puts, which is how the tests count completions
//! exactly.
//!
//! On etcd the watch delivers every revision with its value. On ZooKeeper a
//! persistent recursive watch delivers each change's path and zxid, and the
//! recorder reads the node's value right away: two writes in quick
//! succession may both be seen with the later value (never out of order).
//! On PostgreSQL a trigger of the test's own (not recon's) copies every
//! change of the coordinator's rows into a log table that the recorder
//! polls, values included. Keys are the same everywhere: the path below
//! `<prefix>/`.
//!
//! Values are decoded as they arrive, by key (`run/current`, a run's plan,
//! plan pages, assignments, claims, done-records, barrier; see the layout
//! in recon-etcd and recon-zookeeper). A value that does not decode is not
//! dropped: it fails every later wait and every read of the history, so a
//! change of the stored format fails the tests instead of thinning out
//! what they check.

use anyhow::{Context, bail, ensure};
use etcd_client::{Client, EventType, WatchOptions};
use recon_engine::cluster::{Barrier, DoneRecord, Plan, PlanHeader, RunState, UnitPlan};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client as zk;

/// One put or delete under the prefix.
#[derive(Debug, Clone)]
pub struct Change {
    /// When the test received it.
    pub seen_at: Instant,
    /// The key below `<prefix>/`.
    pub key: String,
    /// The revision of the change (etcd's revision, ZooKeeper's zxid: both
    /// grow with every write).
    pub revision: i64,
    /// The value put (empty for deletes).
    pub value: Vec<u8>,
    /// A delete (or a lease expiry).
    pub deleted: bool,
    /// The value, decoded by its key.
    pub entry: Entry,
}

/// A value put under a key the tests read, decoded.
#[derive(Debug, Clone)]
pub enum Entry {
    /// `run/current`.
    Run(Box<RunState>),
    /// `runs/<run>/plan`: the plan without its units, and its pages.
    Plan(Box<Plan>, usize),
    /// `runs/<run>/plan-pages/<index>`.
    PlanPage(Vec<UnitPlan>),
    /// `runs/<run>/assign/<unit>`: the assignee.
    Assignment(String),
    /// `runs/<run>/claims/<unit>`: the claimant.
    Claim(String),
    /// `runs/<run>/done/<unit>`.
    Done(Box<DoneRecord>),
    /// `runs/<run>/barrier`.
    Barrier(Box<Barrier>),
    /// A delete, or a key the tests read raw.
    Other,
}

impl Entry {
    /// Decodes the value put under `key` (below the prefix); fails if a
    /// key the tests read holds what the engine's types cannot read.
    pub fn decode(key: &str, value: &[u8]) -> anyhow::Result<Entry> {
        let segments: Vec<&str> = key.split('/').collect();
        let entry = match segments.as_slice() {
            ["run", "current"] => Entry::Run(parse(key, value)?),
            ["runs", _, "plan"] => {
                let header: PlanHeader = parse(key, value)?;
                Entry::Plan(Box::new(header.plan), header.pages)
            }
            ["runs", _, "plan-pages", _] => Entry::PlanPage(parse(key, value)?),
            ["runs", _, "assign", _] => Entry::Assignment(parse(key, value)?),
            ["runs", _, "claims", _] => Entry::Claim(parse(key, value)?),
            ["runs", _, "done", _] => Entry::Done(parse(key, value)?),
            ["runs", _, "barrier"] => Entry::Barrier(parse(key, value)?),
            _ => Entry::Other,
        };
        Ok(entry)
    }
}

fn parse<T: DeserializeOwned>(key: &str, value: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(value).with_context(|| {
        format!(
            "the value of {key} does not decode as {}: {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(value)
        )
    })
}

/// What the watch delivered so far, and what of it did not decode.
#[derive(Default)]
struct Recorded {
    changes: Vec<Change>,
    undecodable: Vec<String>,
}

impl Recorded {
    /// Records one change, decoding its value.
    fn push(&mut self, key: String, revision: i64, value: Vec<u8>, deleted: bool) {
        let entry = if deleted {
            Ok(Entry::Other)
        } else {
            Entry::decode(&key, &value)
        };
        match entry {
            Ok(entry) => self.changes.push(Change {
                seen_at: Instant::now(),
                key,
                revision,
                value,
                deleted,
                entry,
            }),
            Err(error) => self.undecodable.push(format!("{error:#}")),
        }
    }

    /// Fails if any value did not decode.
    fn ensure_decoded(&self) -> anyhow::Result<()> {
        ensure!(
            self.undecodable.is_empty(),
            "the coordinator holds values the tests cannot read:\n{}",
            self.undecodable.join("\n")
        );
        Ok(())
    }
}

/// Where the recorder writes its sync markers.
enum Writer {
    Etcd(Box<Client>),
    ZooKeeper(zk::Client),
    Postgres(DatabaseConnection),
}

/// The test's log of the PostgreSQL coordinator's rows, and the trigger
/// that fills it (created once per database, under an advisory lock).
const POSTGRES_LOG: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS recon_test_coord_log (
        seq bigserial PRIMARY KEY, prefix text NOT NULL, key text NOT NULL,
        value bytea, version bigint, deleted boolean NOT NULL)",
    "CREATE INDEX IF NOT EXISTS recon_test_coord_log_prefix
        ON recon_test_coord_log (prefix, seq)",
    "CREATE OR REPLACE FUNCTION recon_test_coord_log_change() RETURNS trigger
     LANGUAGE plpgsql AS $$
     BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO recon_test_coord_log (prefix, key, value, version, deleted)
            VALUES (OLD.prefix, OLD.key, NULL, OLD.version, true);
            RETURN OLD;
        END IF;
        INSERT INTO recon_test_coord_log (prefix, key, value, version, deleted)
        VALUES (NEW.prefix, NEW.key, NEW.value, NEW.version, false);
        RETURN NEW;
     END $$",
    "CREATE OR REPLACE TRIGGER recon_test_coord_log
        AFTER INSERT OR UPDATE OR DELETE ON recon_coord_entries
        FOR EACH ROW EXECUTE FUNCTION recon_test_coord_log_change()",
];

/// How often the PostgreSQL recorder polls its log.
const POSTGRES_POLL: Duration = Duration::from_millis(50);

/// The recorder; stops watching when dropped.
pub struct History {
    recorded: Arc<Mutex<Recorded>>,
    seen: watch::Receiver<usize>,
    writer: Writer,
    prefix: String,
    task: JoinHandle<()>,
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl History {
    /// Starts watching `<prefix>/` on etcd (before anything is written
    /// there).
    pub async fn start(endpoints: &[String], prefix: &str) -> anyhow::Result<Self> {
        let mut client = Client::connect(endpoints, None)
            .await
            .context("connect to the test etcd")?;
        let options = WatchOptions::new().with_prefix();
        let mut stream = client
            .watch(format!("{prefix}/"), Some(options))
            .await
            .context("watch the service prefix")?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let (count, seen) = watch::channel(0usize);
        let recording = recorded.clone();
        let key_prefix = format!("{prefix}/");
        let task = tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                let mut all = lock(&recording);
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key());
                    all.push(
                        key.strip_prefix(&key_prefix).unwrap_or(&key).to_owned(),
                        kv.mod_revision(),
                        kv.value().to_vec(),
                        event.event_type() == EventType::Delete,
                    );
                }
                count.send_replace(all.changes.len() + all.undecodable.len());
            }
        });
        Ok(Self {
            recorded,
            seen,
            writer: Writer::Etcd(Box::new(client)),
            prefix: prefix.to_owned(),
            task,
        })
    }

    /// Starts watching the node `prefix` on ZooKeeper (created if missing,
    /// before anything is written there).
    pub async fn start_zookeeper(servers: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = zk::Client::connect(servers)
            .await
            .context("connect to the test ZooKeeper")?;
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let mut path = String::new();
        for segment in prefix.trim_matches('/').split('/') {
            path = format!("{path}/{segment}");
            match client.create(&path, &[], &options).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(error) => return Err(error).with_context(|| format!("create {path}")),
            }
        }
        let mut watcher = client
            .watch(prefix, zk::AddWatchMode::PersistentRecursive)
            .await
            .context("watch the service node")?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let (count, seen) = watch::channel(0usize);
        let recording = recorded.clone();
        let key_prefix = format!("{prefix}/");
        let reader = client.clone();
        let task = tokio::spawn(async move {
            loop {
                let event = watcher.changed().await;
                let Some(key) = event.path.strip_prefix(&key_prefix).map(str::to_owned) else {
                    if event.session_state.is_terminated() {
                        return;
                    }
                    continue;
                };
                let (value, deleted) = match event.event_type {
                    zk::EventType::NodeDeleted => (Vec::new(), true),
                    zk::EventType::NodeCreated | zk::EventType::NodeDataChanged => {
                        match reader.get_data(&event.path).await {
                            Ok((data, _)) => (data, false),
                            // Gone again already: its delete event follows.
                            Err(_) => continue,
                        }
                    }
                    _ => continue,
                };
                let mut all = lock(&recording);
                all.push(key, event.zxid, value, deleted);
                count.send_replace(all.changes.len() + all.undecodable.len());
            }
        });
        Ok(Self {
            recorded,
            seen,
            writer: Writer::ZooKeeper(client),
            prefix: prefix.to_owned(),
            task,
        })
    }

    /// Starts recording the PostgreSQL coordinator's rows of `prefix` in
    /// the database at `url` (before anything is written there).
    pub async fn start_postgres(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let db = Database::connect(url)
            .await
            .context("connect to the coordinator's database")?;
        recon_coord_postgres::schema::ensure(&db).await?;
        let txn = db.begin().await?;
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7265636)")
            .await?;
        for statement in POSTGRES_LOG {
            txn.execute_unprepared(statement)
                .await
                .context("create the test's coordinator log")?;
        }
        txn.commit().await?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let (count, seen) = watch::channel(0usize);
        let recording = recorded.clone();
        let reader = db.clone();
        let log_prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut last: i64 = 0;
            loop {
                tokio::time::sleep(POSTGRES_POLL).await;
                let read = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT seq, key, value, version, deleted FROM recon_test_coord_log
                     WHERE prefix = $1 AND seq > $2 ORDER BY seq",
                    [log_prefix.clone().into(), last.into()],
                );
                let Ok(rows) = reader.query_all_raw(read).await else {
                    continue;
                };
                if rows.is_empty() {
                    continue;
                }
                let mut all = lock(&recording);
                for row in rows {
                    let (Ok(seq), Ok(key), Ok(value), Ok(version), Ok(deleted)) = (
                        row.try_get_by_index::<i64>(0),
                        row.try_get_by_index::<String>(1),
                        row.try_get_by_index::<Option<Vec<u8>>>(2),
                        row.try_get_by_index::<i64>(3),
                        row.try_get_by_index::<bool>(4),
                    ) else {
                        all.undecodable.push("an unreadable log row".to_owned());
                        continue;
                    };
                    last = seq;
                    all.push(key, version, value.unwrap_or_default(), deleted);
                }
                count.send_replace(all.changes.len() + all.undecodable.len());
            }
        });
        Ok(Self {
            recorded,
            seen,
            writer: Writer::Postgres(db),
            prefix: prefix.to_owned(),
            task,
        })
    }

    /// A copy of everything seen so far; fails if a value did not decode.
    pub fn changes(&self) -> anyhow::Result<Vec<Change>> {
        let recorded = lock(&self.recorded);
        recorded.ensure_decoded()?;
        Ok(recorded.changes.clone())
    }

    /// Waits until the watch has delivered everything written before this
    /// call (a marker key written now comes back through it); returns the
    /// marker's revision: everything later has a higher one.
    pub async fn sync(&self) -> anyhow::Result<i64> {
        let marker = uuid::Uuid::new_v4().to_string();
        let key = format!("{}/test-sync", self.prefix);
        let revision = match &self.writer {
            Writer::Etcd(client) => {
                let put = client
                    .kv_client()
                    .put(key, marker.clone(), None)
                    .await
                    .context("put the sync marker")?;
                put.header().map_or(0, |header| header.revision())
            }
            Writer::ZooKeeper(client) => {
                let stat = match client.set_data(&key, marker.as_bytes(), None).await {
                    Ok(stat) => stat,
                    Err(zk::Error::NoNode) => {
                        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                        client
                            .create(&key, marker.as_bytes(), &options)
                            .await
                            .context("create the sync marker")?
                            .0
                    }
                    Err(error) => return Err(error).context("set the sync marker"),
                };
                stat.mzxid
            }
            Writer::Postgres(db) => {
                let put = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO recon_coord_entries (prefix, key, value, version, created)
                     SELECT $1, 'test-sync', $2, v, v
                     FROM (SELECT nextval('recon_coord_revision') AS v) revision
                     ON CONFLICT (prefix, key) DO UPDATE
                        SET value = EXCLUDED.value, version = EXCLUDED.version
                     RETURNING version",
                    [
                        self.prefix.clone().into(),
                        marker.as_bytes().to_vec().into(),
                    ],
                );
                let row = db
                    .query_one_raw(put)
                    .await
                    .context("put the sync marker")?
                    .context("the sync marker's version")?;
                row.try_get_by_index::<i64>(0)?
            }
        };
        self.wait_for("the sync marker", Duration::from_secs(10), |changes| {
            changes
                .iter()
                .any(|change| change.key == "test-sync" && change.value == marker.as_bytes())
                .then_some(revision)
        })
        .await
    }

    /// Waits until `found` returns something for the changes seen so far;
    /// fails as soon as a value did not decode.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&[Change]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut seen = self.seen.clone();
        loop {
            {
                let recorded = lock(&self.recorded);
                recorded.ensure_decoded()?;
                if let Some(value) = found(&recorded.changes) {
                    return Ok(value);
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                bail!("timed out after {timeout:?} waiting in etcd for {what}");
            }
            // A timeout here just re-checks the deadline.
            let _ = tokio::time::timeout(remaining, seen.changed()).await;
        }
    }

    /// Waits for a run started after `after` changes were seen; its id.
    pub async fn wait_for_new_run(&self, after: usize) -> anyhow::Result<String> {
        self.wait_for("a run to start", Duration::from_secs(20), |changes| {
            changes[after.min(changes.len())..]
                .iter()
                .find_map(|change| match &change.entry {
                    Entry::Run(run) => Some(run.run_id.clone()),
                    _ => None,
                })
        })
        .await
    }

    /// How many changes were seen so far.
    pub fn len(&self) -> usize {
        lock(&self.recorded).changes.len()
    }
}

/// Queries over recorded changes (decoded as they were recorded, so
/// nothing is dropped here).
pub trait Changes {
    /// The states `run/current` went through for `run_id`, in order.
    fn run_states(&self, run_id: &str) -> Vec<(Change, RunState)>;
    /// The plan of a run (its latest header and the pages it names).
    fn plan(&self, run_id: &str) -> Option<Plan>;
    /// Every put of a done-record of a run: (unit, record, change).
    fn done_puts(&self, run_id: &str) -> Vec<(String, DoneRecord, Change)>;
    /// Every claim put of a run: (unit, member).
    fn claim_puts(&self, run_id: &str) -> Vec<(String, String)>;
    /// Every assignment put of a run: (unit, member).
    fn assignment_puts(&self, run_id: &str) -> Vec<(String, String)>;
    /// The barrier of a run.
    fn barrier(&self, run_id: &str) -> Option<(Barrier, Change)>;
}

/// The unit of `key` if it is `runs/<run_id>/<collection>/<unit>`.
fn unit_of<'a>(key: &'a str, run_id: &str, collection: &str) -> Option<&'a str> {
    key.strip_prefix("runs/")?
        .strip_prefix(run_id)?
        .strip_prefix('/')?
        .strip_prefix(collection)?
        .strip_prefix('/')
}

impl Changes for [Change] {
    fn run_states(&self, run_id: &str) -> Vec<(Change, RunState)> {
        self.iter()
            .filter_map(|change| match &change.entry {
                Entry::Run(run) if run.run_id == run_id => Some((change.clone(), (**run).clone())),
                _ => None,
            })
            .collect()
    }

    /// The plan key holds the plan without its units and the number of
    /// pages; the units are in `plan-pages/<index>` (see recon-etcd).
    fn plan(&self, run_id: &str) -> Option<Plan> {
        let latest = |key: &str| {
            self.iter()
                .rev()
                .find(|change| change.key == key && !change.deleted)
        };
        let Entry::Plan(plan, pages) = &latest(&format!("runs/{run_id}/plan"))?.entry else {
            return None;
        };
        let mut plan = (**plan).clone();
        for index in 0..*pages {
            let Entry::PlanPage(units) =
                &latest(&format!("runs/{run_id}/plan-pages/{index:06}"))?.entry
            else {
                return None;
            };
            plan.units.extend(units.iter().cloned());
        }
        Some(plan)
    }

    fn done_puts(&self, run_id: &str) -> Vec<(String, DoneRecord, Change)> {
        self.iter()
            .filter_map(|change| match &change.entry {
                Entry::Done(record) => Some((
                    unit_of(&change.key, run_id, "done")?.to_owned(),
                    (**record).clone(),
                    change.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn claim_puts(&self, run_id: &str) -> Vec<(String, String)> {
        self.iter()
            .filter_map(|change| match &change.entry {
                Entry::Claim(member) => Some((
                    unit_of(&change.key, run_id, "claims")?.to_owned(),
                    member.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn assignment_puts(&self, run_id: &str) -> Vec<(String, String)> {
        self.iter()
            .filter_map(|change| match &change.entry {
                Entry::Assignment(member) => Some((
                    unit_of(&change.key, run_id, "assign")?.to_owned(),
                    member.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn barrier(&self, run_id: &str) -> Option<(Barrier, Change)> {
        let key = format!("runs/{run_id}/barrier");
        self.iter()
            .filter(|change| change.key == key)
            .find_map(|change| match &change.entry {
                Entry::Barrier(barrier) => Some(((**barrier).clone(), change.clone())),
                _ => None,
            })
    }
}

fn lock(recorded: &Mutex<Recorded>) -> MutexGuard<'_, Recorded> {
    recorded
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_the_tests_read_must_decode_and_others_are_kept_raw() {
        for key in [
            "run/current",
            "runs/r1/plan",
            "runs/r1/plan-pages/000000",
            "runs/r1/assign/u1",
            "runs/r1/claims/u1",
            "runs/r1/done/u1",
            "runs/r1/barrier",
        ] {
            let error = Entry::decode(key, b"{not json").expect_err(key);
            assert!(format!("{error:#}").contains(key), "{error:#}");
        }
        assert!(matches!(
            Entry::decode("runs/r1/claims/u1", b"\"r2\"").expect("a member id"),
            Entry::Claim(member) if member == "r2"
        ));
        // Raw values, and ZooKeeper's parent nodes (no value of their own).
        for key in [
            "members/r1",
            "election/694d8b2f",
            "test-sync",
            "run",
            "runs/r1",
            "runs/r1/done",
            "runs/r1/acks/r1",
        ] {
            assert!(matches!(
                Entry::decode(key, b"raw").expect(key),
                Entry::Other
            ));
        }
    }

    /// A done-record the engine's types cannot read fails the recorder's
    /// next wait (here: `sync`), instead of being dropped from the queries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_that_does_not_decode_fails_the_recorder() -> anyhow::Result<()> {
        let endpoints = super::super::fixture::etcd_endpoints()?;
        let prefix = format!("/recon/history-{}", uuid::Uuid::new_v4().simple());
        let history = History::start(&endpoints, &prefix).await?;
        let mut client = Client::connect(&endpoints, None).await?;
        client
            .put(format!("{prefix}/runs/r1/done/u1"), "{\"member\": 7", None)
            .await?;
        let error = history
            .sync()
            .await
            .expect_err("a done-record that does not decode was recorded as if nothing happened");
        let message = format!("{error:#}");
        assert!(message.contains("runs/r1/done/u1"), "{message}");
        Ok(())
    }
}
