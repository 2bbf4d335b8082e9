//! reladiff's detection (<https://github.com/erezsh/reladiff>), for
//! comparison: its cross-database hash diff (bisection over checksums of
//! key ranges) between the monolith's tables and the replica's live rows
//! (the `bench_live_*` views), data columns and version compared, compound
//! keys as in the store. It only finds differences; it fixes nothing.

use super::table::Measurement;
use anyhow::{Context, bail};
use serde_json::Value;
use std::process::Stdio;
use std::time::Instant;
use tokio::process::Command;

/// (monolith table, replica view, key columns, compared columns).
const TABLES: [(&str, &str, &[&str], &[&str]); 4] = [
    (
        "tenants",
        "bench_live_tenants",
        &["id"],
        &["name", "generation", "sequence"],
    ),
    (
        "users",
        "bench_live_users",
        &["tenant_id", "id"],
        &["email", "display_name", "status", "generation", "sequence"],
    ),
    (
        "groups",
        "bench_live_groups",
        &["tenant_id", "id"],
        &["name", "generation", "sequence"],
    ),
    (
        "memberships",
        "bench_live_memberships",
        &["tenant_id", "group_id", "user_id"],
        &["generation", "sequence"],
    ),
];

/// Runs `python3 -m reladiff --stats --json` on every table pair and sums
/// what it found; timed from the first spawn to the last exit.
pub async fn detect(
    monolith_url: &str,
    replica_url: &str,
    threads: u32,
) -> anyhow::Result<Measurement> {
    let monolith_url = postgresql_scheme(monolith_url);
    let replica_url = postgresql_scheme(replica_url);
    let mut differences = 0;
    let mut rows = 0;
    let mut downloaded = 0;
    let started = Instant::now();
    for (table, view, keys, columns) in TABLES {
        let mut command = Command::new("python3");
        command
            .args(["-m", "reladiff", &monolith_url, table, &replica_url, view])
            .args(["--stats", "--json", "--allow-empty-tables"])
            .args(["--threads", &threads.to_string()])
            .env("COLUMNS", "100000");
        for key in keys {
            command.args(["-k", key]);
        }
        for column in columns {
            command.args(["-c", column]);
        }
        let output = command
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("run python3 -m reladiff")?;
        if !output.status.success() {
            bail!(
                "reladiff on {table} exited with {}: {}",
                output.status,
                last_lines(&String::from_utf8_lossy(&output.stderr))
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stats = parse_stats(&stdout)
            .with_context(|| format!("read reladiff's stats on {table}: {stdout}"))?;
        differences += stats.differences;
        rows += stats.rows;
        downloaded += stats.downloaded.unwrap_or(0);
    }
    Ok(Measurement {
        seconds: Some(started.elapsed().as_secs_f64()),
        rows_compared: Some(rows),
        rows_transferred: Some(downloaded),
        differences: Some(differences),
        ..Measurement::default()
    })
}

struct Stats {
    rows: u64,
    differences: u64,
    downloaded: Option<u64>,
}

/// The JSON object reladiff prints with `--stats --json` (possibly wrapped
/// over several lines): `rows_A`, `exclusive_A`, `exclusive_B`, `updated`,
/// `stats.rows_downloaded`, …
fn parse_stats(stdout: &str) -> anyhow::Result<Stats> {
    let start = stdout
        .find('{')
        .context("no JSON object in reladiff's output")?;
    let end = stdout
        .rfind('}')
        .context("no JSON object in reladiff's output")?;
    let stats: Value = serde_json::from_str(&stdout[start..=end])?;
    let figure = |name: &str| stats[name].as_u64().with_context(|| format!("no {name}"));
    Ok(Stats {
        rows: figure("rows_A")?,
        differences: figure("exclusive_A")? + figure("exclusive_B")? + figure("updated")?,
        downloaded: stats["stats"]["rows_downloaded"].as_u64(),
    })
}

/// reladiff (through SQLAlchemy-style URLs) wants `postgresql://`.
fn postgresql_scheme(url: &str) -> String {
    match url.strip_prefix("postgres://") {
        Some(rest) => format!("postgresql://{rest}"),
        None => url.to_owned(),
    }
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
