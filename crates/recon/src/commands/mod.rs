//! The subcommands. Each wires library crates together and reports back.

mod abort;
mod cluster;
mod config;
mod dev;
mod membership;
mod progress;
mod reconcile;
mod remote;
mod runs;
pub(crate) mod schema;
mod serve;
mod status;
mod store;

use crate::cli::Command;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Runs one subcommand until it finishes or `shutdown` is cancelled.
pub async fn run(command: Command, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(*args, shutdown).await,
        Command::Reconcile(args) => reconcile::run(*args, shutdown).await,
        Command::Status(args) => status::run(args).await,
        Command::Monolith(args) => dev::monolith::run(args, shutdown).await,
        Command::Seed(args) => dev::seed::run(args).await,
        Command::Bench(command) => dev::bench::run(command, shutdown).await,
        Command::Demo(args) => dev::demo::run(args, shutdown).await,
        Command::Config(command) => config::run(command),
        Command::Abort(args) => abort::run(args).await,
        Command::Runs(command) => runs::run(command).await,
        Command::Schema(command) => schema::run(command),
        Command::Store(command) => store::run(command, shutdown).await,
    }
}
