//! `recon bench`: throughput figures measured in one run.
//!
//! * `drain`: a replica consumer applying a Kafka backlog ([`drain`]);
//! * `reconcile`: `recon reconcile` against the reference monolith, next to
//!   a naive baseline, a compare-then-write baseline and reladiff
//!   ([`reconcile`] and its helpers);
//! * `lag`: replication lag during a run, consumers paused or not ([`lag`]).

mod children;
mod compare;
mod cpu;
mod drain;
mod drift;
mod lag;
mod naive;
mod reconcile;
mod reladiff;
mod table;
mod workload;

use crate::cli::BenchCommand;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Runs one benchmark.
pub async fn run(command: BenchCommand, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Drain(args) => drain::run(args, shutdown).await,
        BenchCommand::Reconcile(args) => reconcile::run(args, shutdown).await,
        BenchCommand::Lag(args) => lag::run(args, shutdown).await,
        BenchCommand::Naive(args) => naive::run(args).await,
        BenchCommand::Compare(args) => compare::run(args).await,
    }
}
