//! The dashboard and the alert rules against a real Prometheus scraping the
//! three replicas during a run (issue 11): every dashboard query returns
//! data, every rule loads, evaluates without error and reads only recon
//! metrics that exist, and the rows the metrics count are the figures of
//! the run's report (its done-records in etcd).

use super::checks::{ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings, wait_until};
use super::history::Changes as _;
use anyhow::{Context, ensure};
use recon_core::{Kind, UnitReport};
use recon_tests::prometheus::{Prometheus, binary, recon_metric_names, sample_value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Every query of the Grafana dashboard, with its panel's title.
fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    let path = repository_file("deploy/grafana/dashboards/recon.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("no panels")? {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"]
            .as_array()
            .context("a panel without targets")?
        {
            let expression = target["expr"].as_str().context("a target without expr")?;
            queries.push((title.to_owned(), expression.to_owned()));
        }
    }
    Ok(queries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_query_and_alert_rule_works_on_a_real_prometheus() -> anyhow::Result<()> {
    let rules = repository_file("deploy/prometheus/rules.yml");
    let checked = std::process::Command::new(binary("promtool")?)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .context("run promtool")?;
    ensure!(
        checked.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let cluster = Cluster::start(Settings::new(111)).await?;
    let outcome = dashboards_and_alerts(&cluster, &rules).await;
    cluster.finish(outcome)
}

/// The row figures compared between the report and the metrics.
const FIGURES: [&str; 4] = ["missing", "phantom", "changed", "written"];

/// One of the [`FIGURES`] of a unit's report.
fn figure_of(figure: &str, unit: &UnitReport) -> u64 {
    match figure {
        "missing" => unit.missing,
        "phantom" => unit.phantom,
        "changed" => unit.changed,
        _ => unit.written,
    }
}

/// `"<figure> <kind>"` → the sum over the replicas of its counter.
async fn metric_figures(prometheus: &Prometheus) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut seen = BTreeMap::new();
    for figure in FIGURES {
        let query = format!("sum by (kind) (recon_reconcile_rows_{figure}_total)");
        for sample in prometheus.query(&query).await? {
            let kind = sample["metric"]["kind"].as_str().unwrap_or_default();
            seen.insert(format!("{figure} {kind}"), sample_value(&sample)? as u64);
        }
    }
    Ok(seen)
}

/// The dashboard queries that return nothing now, with their panels.
async fn queries_without_data(
    prometheus: &Prometheus,
    queries: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let mut empty = Vec::new();
    for (panel, expression) in queries {
        if prometheus.query(expression).await?.is_empty() {
            empty.push(format!("{panel}: {expression}"));
        }
    }
    Ok(empty)
}

async fn dashboards_and_alerts(cluster: &Cluster, rules: &Path) -> anyhow::Result<()> {
    let targets: Vec<String> = cluster
        .replicas
        .iter()
        .map(|replica| format!("127.0.0.1:{}", replica.port))
        .collect();
    let prometheus = Prometheus::start(&targets, rules).await?;
    wait_until("three targets up", Duration::from_secs(30), || async {
        Ok(prometheus.targets_up().await? == 3)
    })
    .await
    .with_context(|| prometheus.log())?;

    cluster.drift().await?;
    let run = cluster.request_run().await?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;

    // The run's report is its plan's tenant list and its done-records.
    cluster.history.sync().await?;
    let changes = cluster.history.changes()?;
    let plan = changes.plan(&run).context("the run has no plan")?;
    let mut units: Vec<UnitReport> = vec![plan.tenant_list];
    for (_, record, _) in changes.done_puts(&run) {
        units.extend(record.reports);
    }
    // Every kind's series exists from the start, at 0.
    let mut report: BTreeMap<String, u64> = FIGURES
        .iter()
        .flat_map(|figure| Kind::UPSERT_ORDER.map(|kind| (format!("{figure} {kind}"), 0)))
        .collect();
    for figure in FIGURES {
        for unit in &units {
            *report.entry(format!("{figure} {}", unit.kind)).or_default() +=
                figure_of(figure, unit);
        }
    }
    ensure!(
        report
            .iter()
            .any(|(name, count)| name.starts_with("missing") && *count > 0),
        "the drift made no missing row: the comparison proves nothing ({report:?})"
    );
    // Once Prometheus scraped the barrier's writer, the sums over the
    // replicas are the report's figures, kind by kind.
    let same = wait_until(
        "the metrics to show the run's report",
        Duration::from_secs(30),
        || async { Ok(metric_figures(&prometheus).await? == report) },
    )
    .await;
    if let Err(error) = same {
        let seen = metric_figures(&prometheus).await?;
        return Err(error.context(format!("report {report:?}, metrics {seen:?}")));
    }
    let completed = prometheus
        .value("sum(recon_reconcile_runs_total{outcome=\"completed\"})")
        .await?;
    ensure!(
        completed == 1.0,
        "{completed} completed runs counted, 1 made"
    );

    // Every dashboard query returns data (rates need two scrapes of a
    // series created during the run: wait for them).
    let queries = dashboard_queries()?;
    ensure!(
        queries.len() >= 20,
        "only {} dashboard queries",
        queries.len()
    );
    let all_answer = wait_until(
        "every dashboard query to return data",
        Duration::from_secs(30),
        || async {
            Ok(queries_without_data(&prometheus, &queries)
                .await?
                .is_empty())
        },
    )
    .await;
    if let Err(error) = all_answer {
        let empty = queries_without_data(&prometheus, &queries).await?;
        return Err(error.context(format!("queries without data:\n{}", empty.join("\n"))));
    }

    // Every rule is loaded and evaluated without error, and every recon
    // metric it reads exists.
    let loaded = prometheus.rules().await?;
    ensure!(loaded.len() >= 12, "only {} rules loaded", loaded.len());
    wait_until("every rule evaluated", Duration::from_secs(30), || async {
        Ok(prometheus
            .rules()
            .await?
            .iter()
            .all(|rule| rule.health != "unknown"))
    })
    .await?;
    for rule in prometheus.rules().await? {
        ensure!(
            rule.health == "ok",
            "rule {} is {}: {}",
            rule.name,
            rule.health,
            rule.last_error
        );
        prometheus
            .query(&rule.expression)
            .await
            .with_context(|| format!("rule {}", rule.name))?;
        for metric in recon_metric_names(&rule.expression) {
            let series = prometheus.query(&format!("count({metric})")).await?;
            ensure!(
                !series.is_empty(),
                "rule {} reads {metric}, which no replica exports",
                rule.name
            );
        }
    }
    // Nothing is wrong in this cluster: no partition is without an owner.
    let unowned = prometheus.value("recon:group_unowned_partitions").await?;
    ensure!(unowned == 0.0, "{unowned} partitions without owner");
    Ok(())
}
