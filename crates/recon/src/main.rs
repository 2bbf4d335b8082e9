//! The `recon` binary: parses the command line, sets up logging and signal
//! handling, and hands over to one subcommand. All logic lives in the
//! library crates; the commands only wire them together.

mod cli;
mod commands;
mod config_file;
mod secrets;
mod telemetry;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// How long the runtime waits, once a command returned, for tasks it left
/// running (a blocking Kafka or database call past the command's own
/// shutdown deadline) before the process exits anyway.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: start the async runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = runtime.block_on(run());
    runtime.shutdown_timeout(EXIT_GRACE);
    code
}

/// Parses the command line and runs the command.
async fn run() -> std::process::ExitCode {
    let (args, _from_file) = match config_file::apply(std::env::args_os().collect()) {
        Ok(applied) => applied,
        Err(error) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = cli::Cli::parse_from(args);
    let telemetry = telemetry::Telemetry::init(cli.command.default_log_filter(), cli.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let code = match commands::run(cli.command, shutdown).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    };
    // The exporter's connection lives on this runtime: flush beside it.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}

/// Cancels the root token on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = interrupt.await;
            shutdown.cancel();
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
