//! The run history: each finished run's record in `reconcile_runs`, one row
//! per run — its summary (the record without its units) and its units as
//! two JSON documents, so that a listing never reads the units of a run
//! with a large plan. Written by whoever ended the run; the last
//! [`RUNS_KEPT`] runs are kept.

use crate::sql::{self, Binder};
use crate::{Error, Result, Store, error::database};
use recon_core::history::RUNS_KEPT;
use recon_core::{RunRecord, UnitReport};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};
use tracing::instrument;

impl Store {
    /// Writes `record` (replacing an earlier record of the same run) and
    /// deletes the records beyond the last [`RUNS_KEPT`] runs, in one
    /// transaction.
    #[instrument(name = "store.record_run", skip_all, fields(run = %record.run_id))]
    pub async fn record_run(&self, record: &RunRecord) -> Result<()> {
        let mut summary = record.clone();
        let units = std::mem::take(&mut summary.report.units);
        let summary = encode(&summary, "run record")?;
        let units = encode(&units, "run units")?;
        let transaction = self.connection.begin().await.map_err(database("begin"))?;
        let mut binder = Binder::new(self.backend());
        let values = [
            binder.bind(record.run_id.clone()),
            binder.bind(sql::to_db(record.started_unix_ms, "started_unix_ms")?),
            binder.bind(sql::to_db(record.ended_unix_ms, "ended_unix_ms")?),
            binder.bind(summary),
            binder.bind(units),
        ];
        let upsert = format!(
            "INSERT INTO reconcile_runs (run_id, started_ms, ended_ms, summary, units) \
             VALUES ({}) ON CONFLICT (run_id) DO UPDATE SET started_ms = excluded.started_ms, \
             ended_ms = excluded.ended_ms, summary = excluded.summary, units = excluded.units",
            values.join(", ")
        );
        transaction
            .execute_raw(binder.statement(upsert))
            .await
            .map_err(database("record run"))?;
        let mut binder = Binder::new(self.backend());
        let trim = format!(
            "DELETE FROM reconcile_runs WHERE run_id NOT IN \
             (SELECT run_id FROM reconcile_runs ORDER BY started_ms DESC, run_id DESC LIMIT {})",
            binder.bind(i64::try_from(RUNS_KEPT).unwrap_or(i64::MAX))
        );
        transaction
            .execute_raw(binder.statement(trim))
            .await
            .map_err(database("trim run history"))?;
        transaction
            .commit()
            .await
            .map_err(database("commit run record"))?;
        Ok(())
    }

    /// The last `limit` finished runs, newest first, without their units.
    pub async fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let mut binder = Binder::new(self.backend());
        let select = format!(
            "SELECT summary FROM reconcile_runs ORDER BY started_ms DESC, run_id DESC LIMIT {}",
            binder.bind(i64::try_from(limit).unwrap_or(i64::MAX))
        );
        let rows = self
            .connection
            .query_all_raw(binder.statement(select))
            .await
            .map_err(database("list runs"))?;
        rows.iter()
            .map(|row| decode_column(row, "summary"))
            .collect()
    }

    /// The run `run_id` with its units, if the history has it.
    pub async fn run_record(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let mut binder = Binder::new(self.backend());
        let select = format!(
            "SELECT summary, units FROM reconcile_runs WHERE run_id = {}",
            binder.bind(run_id.to_owned())
        );
        let row = self
            .connection
            .query_one_raw(binder.statement(select))
            .await
            .map_err(database("read run"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut record: RunRecord = decode_column(&row, "summary")?;
        let units: Vec<UnitReport> = decode_column(&row, "units")?;
        record.report.units = units;
        Ok(Some(record))
    }
}

fn encode<T: serde::Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|error| Error::InvalidData(format!("{what}: {error}")))
}

fn decode_column<T: serde::de::DeserializeOwned>(row: &QueryResult, column: &str) -> Result<T> {
    let text: String = row
        .try_get("", column)
        .map_err(database("read run history"))?;
    serde_json::from_str(&text).map_err(|error| {
        Error::InvalidData(format!(
            "reconcile_runs.{column} is not a run record: {error}"
        ))
    })
}
