//! `recon-chaos`: random fault schedules against a three-replica recon
//! cluster on real services (PostgreSQL, etcd, three Apache Kafka brokers,
//! the reference monolith), an independent checker, and figures. The data
//! model is the default schema, or any declared one (`--schema`).
//!
//! Each schedule starts its own services on loopback, writes to the
//! monolith all the time, injects the faults drawn from its seed, heals,
//! lets a last run complete and the backlog drain, and checks the
//! invariants. `--seed S --schedules 1` replays schedule `S`.

mod audit;
mod checker;
mod deletions;
mod drift;
mod figures;
mod nemesis;
mod net;
mod observe;
mod outcome;
mod schedule;
mod workload;
mod world;

use anyhow::Context;
use clap::Parser;
use figures::{Figures, Spread};
use recon_core::schema::Schema;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Random fault schedules against a three-replica recon cluster.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Schedules to run; schedule i uses seed `seed + i`.
    #[arg(long, default_value_t = 3)]
    schedules: u64,
    /// Seed of the first schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults per schedule.
    #[arg(long, default_value_t = 40)]
    length_secs: u64,
    /// Random faults per schedule besides the fixed ones (two leader
    /// kills, a partition, two run requests, a drift, a broker kill).
    #[arg(long, default_value_t = 6)]
    random_faults: usize,
    /// Writer clients.
    #[arg(long, default_value_t = 3)]
    clients: u64,
    /// `--lease-ttl-secs` of the replicas.
    #[arg(long, default_value_t = 3)]
    lease_ttl_secs: u64,
    /// `--max-pause-secs` of the replicas.
    #[arg(long, default_value_t = 60)]
    max_pause_secs: u64,
    /// Where to write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to keep the logs of schedules that fail (default: a
    /// temporary directory that is kept and printed).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Keep the logs of clean schedules too.
    #[arg(long)]
    keep_logs: bool,
    /// Every other run the schedules' run-request steps ask for leaves the
    /// consumers running (`"pause": "never"`) while the writers keep
    /// writing; the final run and the runs whose leader is killed in a
    /// phase pause them.
    #[arg(long)]
    pause_mix: bool,
    /// A declared schema file (`proto/schemas/…`): the monolith, the
    /// replicas, the workload, the drift and the checker all run its
    /// kinds. Default: the default schema.
    #[arg(long)]
    schema: Option<PathBuf>,
}

/// The data model of `--schema`, for the life of the process.
fn data_model(file: Option<&Path>) -> anyhow::Result<world::DataModel> {
    let Some(file) = file else {
        return Ok(world::DataModel {
            schema: Schema::default_schema(),
            file: None,
        });
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("read schema file {}", file.display()))?;
    let schema = Schema::parse(&text)
        .map_err(|errors| anyhow::anyhow!("schema file {}: {errors}", file.display()))?;
    // The processes read the file from their own working directory.
    let path = std::path::absolute(file)
        .with_context(|| format!("resolve {}", file.display()))?
        .display()
        .to_string();
    Ok(world::DataModel {
        schema: Box::leak(Box::new(schema)),
        file: Some(Box::leak(path.into_boxed_str())),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = nemesis::Options {
        length: Duration::from_secs(args.length_secs),
        random_faults: args.random_faults,
        timing: world::Timing {
            lease_ttl_secs: args.lease_ttl_secs,
            max_pause_secs: args.max_pause_secs,
            restart_delay: Duration::from_secs(2),
        },
        clients: args.clients,
        data_model: data_model(args.schema.as_deref())?,
        pause_mix: args.pause_mix,
    };
    let started = Instant::now();
    let mut figures = Figures::new(args.seed);
    figures.schema = match &args.schema {
        Some(file) => format!(
            "{} ({})",
            options.data_model.schema.scope().name,
            file.display()
        ),
        None => "tenant (default schema)".to_owned(),
    };
    figures.partitions_by = if net::Firewall::probe().available() {
        "iptables".into()
    } else {
        "proxy".into()
    };
    let (mut failovers, mut converges) = (Vec::new(), Vec::new());
    for seed in args.seed..args.seed + args.schedules {
        let logs = match &args.logs {
            Some(root) => {
                let directory = root.join(format!("seed-{seed}"));
                std::fs::create_dir_all(&directory).context("create the logs directory")?;
                tempfile::Builder::new().tempdir_in(directory)?
            }
            None => tempfile::Builder::new()
                .prefix(&format!("recon-chaos-{seed}-"))
                .tempdir()?,
        };
        let schedule_started = Instant::now();
        let outcome = nemesis::run(seed, &options, logs.path()).await;
        figures.add(seed, &outcome, &mut failovers, &mut converges);
        let clean = outcome.clean();
        println!(
            "schedule {seed}: {} in {} s — {} faults, {} not injected, {} runs completed, {} aborted, {} violations",
            if clean { "clean" } else { "FAILED" },
            schedule_started.elapsed().as_secs(),
            outcome.injected.values().sum::<u64>(),
            outcome.failed_steps.len(),
            outcome.runs_completed,
            outcome.runs_aborted.len(),
            outcome.violations.len()
        );
        if args.keep_logs && clean {
            println!("  logs kept in {}", logs.keep().display());
        } else if !clean {
            for violation in &outcome.violations {
                println!(
                    "  violation [{}]: {}",
                    violation.invariant, violation.detail
                );
            }
            for failure in outcome.failures() {
                println!("  failed: {failure}");
            }
            println!("  replay: cargo run -p recon-chaos -- --seed {seed} --schedules 1");
            println!("  schedule: {}", serde_json::to_string(&outcome.steps)?);
            println!("  logs kept in {}", logs.keep().display());
        }
    }
    figures.failover_millis = Spread::of(failovers);
    figures.converge_millis = Spread::of(converges);
    figures.seconds = started.elapsed().as_secs();
    println!("\n{}", figures.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if figures.schedules_clean < figures.schedules {
        std::process::exit(1);
    }
    Ok(())
}
