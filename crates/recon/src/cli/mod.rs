//! Command-line interface. Every option can also come from the environment
//! (`RECON_…`); flags win over the environment. One module per group of
//! subcommands; the top-level command and the shared parsers are here.

mod dev;
mod reconcile;
mod schema;
mod serve;
mod store;

use clap::{Parser, Subcommand};
pub use dev::{
    BenchCommand, DemoArgs, DrainArgs, DrainWorkload, LagBenchArgs, MonolithArgs, NaiveArgs,
    ReconcileBenchArgs, SeedArgs, WorkloadArgs,
};
pub use reconcile::{DigestMode, OutputFormat, ReconcileArgs, RunArgs, SourceArgs, StatusArgs};
pub use schema::{DdlBackend, SchemaCommand, SchemaFileArgs};
pub use serve::{
    AbortArgs, ClusterArgs, CoordinationArgs, KafkaArgs, KafkaPropertyArgs, ServeArgs,
};
use std::path::PathBuf;
use std::time::Duration;
pub use store::{HistoryStoreArgs, ReplicaDatabaseArgs, RunsCommand, StoreArgs, StoreCommand};

/// recon keeps a service's copy of monolith data correct.
#[derive(Debug, Parser)]
#[command(name = "recon", version, about)]
pub struct Cli {
    /// A configuration file (TOML, one table per subcommand keyed by option
    /// names); variables and flags override it.
    #[arg(long, global = true, env = "RECON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log lines as `text` (for people) or `json` (one object per line, with
    /// the current span and its parents, for log pipelines).
    #[arg(long, global = true, env = "RECON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a replica: consume change events into the service database, with
    /// an admin port for health, metrics and the pause gate.
    Serve(Box<ServeArgs>),
    /// Reconcile the replica store against the source of truth (one
    /// instance): pause the replicas' consumers, diff, fix, resume.
    Reconcile(Box<ReconcileArgs>),
    /// Show the cluster: leader and epoch, members, the current run with its
    /// units by state and owner, pause age.
    Status(StatusArgs),
    /// Run the reference monolith (Source API, write API, operator actions).
    Monolith(MonolithArgs),
    /// Generate a deterministic, heavy-tailed workload in a monolith database.
    Seed(SeedArgs),
    /// Benchmarks: print throughput figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The main job on embedded defaults: a monolith on SQLite, a generated
    /// workload, and what its Source API reports.
    Demo(DemoArgs),
    /// Ask the replicas' leader to abort the run in progress (through etcd
    /// or ZooKeeper): it writes an aborted barrier with the reason, and
    /// every consumer resumes.
    Abort(AbortArgs),
    /// The run history kept in the replica store: `recon runs list`,
    /// `recon runs show <run>`.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// The replica store's schema: `recon store migrate` brings it up to
    /// date, once per store, before the replicas start.
    #[command(subcommand)]
    Store(StoreCommand),
    /// The configuration: `recon config print serve` shows every option of
    /// `serve` with its effective value and where it came from (default,
    /// file, environment, flag), secrets redacted.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The declared data model: `recon schema check|print|openapi|ddl`.
    #[command(subcommand)]
    Schema(SchemaCommand),
}

/// `recon config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Prints the effective configuration of a command line, e.g.
    /// `recon config print serve --page-size 10`.
    Print {
        /// The command line to show (a subcommand and its options).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

impl Command {
    /// Log filter used when `RUST_LOG` is not set.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::Monolith(_) => "info",
            Command::Seed(_) | Command::Reconcile(_) | Command::Status(_) => "warn",
            // The bench's own statements (drift, checks) are slow on purpose.
            Command::Bench(_) => "warn,sqlx::query=error",
            // The demo's report already says what went wrong.
            Command::Demo(_) => "error",
            Command::Config(_) | Command::Abort(_) | Command::Runs(_) | Command::Schema(_) => {
                "warn"
            }
            // Which migration runs, and a wait for another one's lock.
            Command::Store(_) => "info,sea_orm_migration=warn,sqlx=warn",
        }
    }
}

/// A duration: whole seconds (`3600`) or a number with a unit: `ms`, `s`,
/// `m`, `h`, `d` (`500ms`, `5s`, `7d`). Zero is refused.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("the duration must be positive, got {text:?}"));
    }
    Ok(duration)
}

/// A duration like [`parse_positive_duration`]'s, zero allowed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 30s, 5m, 7d or seconds, got {text:?}"))?;
    let duration = match unit.trim() {
        "" | "s" => Duration::from_secs(value),
        "ms" => Duration::from_millis(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3_600)),
        "d" => Duration::from_secs(value.saturating_mul(86_400)),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (ms, s, m, h, d)"
            ));
        }
    };
    Ok(duration)
}

fn parse_share(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, scale) = match trimmed.strip_suffix('%') {
        Some(percent) => (percent.trim(), 100.0),
        None => (trimmed, 1.0),
    };
    let share = number
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
        .map(|value| value / scale)
        .ok_or_else(|| format!("expected a share such as 0.2 or 20%, got {text:?}"))?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!(
            "a share must lie between 0 and 1 (0% and 100%), got {text:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_share;

    #[test]
    fn shares_are_fractions_or_percentages() {
        assert_eq!(parse_share("0.2"), Ok(0.2));
        assert_eq!(parse_share("20%"), Ok(0.2));
        assert_eq!(parse_share(" 100 % "), Ok(1.0));
        assert_eq!(parse_share("0"), Ok(0.0));
    }

    #[test]
    fn shares_outside_zero_to_one_are_refused_not_clamped() {
        for text in [
            "1.5",
            "-0.1",
            "150%",
            "-5%",
            "NaN",
            "inf",
            "",
            "20 percent",
            "%",
        ] {
            let error = parse_share(text).expect_err(text);
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
    }
}

#[cfg(test)]
mod duration_tests {
    use super::parse_positive_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(
            parse_positive_duration("3600"),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(parse_positive_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(
            parse_positive_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse_positive_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_positive_duration("36h"),
            Ok(Duration::from_secs(129_600))
        );
        assert_eq!(
            parse_positive_duration("7d"),
            Ok(Duration::from_secs(604_800))
        );
    }

    #[test]
    fn zero_negative_and_unknown_units_are_refused() {
        for text in ["0", "0s", "-5s", "5 weeks", "s", "", "1.5h"] {
            assert!(parse_positive_duration(text).is_err(), "{text:?}");
        }
    }
}

#[cfg(test)]
mod variable_tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option of every subcommand, with its long name and variable.
    fn options(
        command: &clap::Command,
        path: &str,
        out: &mut Vec<(String, String, Option<String>)>,
    ) {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let env = arg
                .get_env()
                .map(|name| name.to_string_lossy().into_owned());
            out.push((path.to_owned(), long.to_owned(), env));
        }
        for sub in command.get_subcommands() {
            options(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_has_a_recon_variable() {
        let mut all = Vec::new();
        options(&Cli::command(), "recon", &mut all);
        assert!(all.len() > 60, "only {} options found", all.len());
        // Repeatable `key=value` properties come from RECON_KAFKA_PROPERTY_<NAME>.
        let without: Vec<_> = all
            .iter()
            .filter(|(_, long, env)| env.is_none() && long != "kafka-property")
            .collect();
        assert!(
            without.is_empty(),
            "options without a variable: {without:?}"
        );
        for (path, long, env) in &all {
            if let Some(env) = env {
                assert!(env.starts_with("RECON_"), "{path} --{long}: {env}");
            }
        }
    }
}
