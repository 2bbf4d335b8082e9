//! One OpenTelemetry trace per cluster run (issue 11): three replicas
//! export to an OTLP receiver in the test; the leader's `reconcile.run`
//! span is the root of one trace, and the `reconcile.unit` spans of units
//! done by at least two other replicas are its children, with the Source
//! API's page fetches under them.

use super::checks::{ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings, wait_until};
use super::history::Changes as _;
use anyhow::{Context, ensure};
use recon_tests::faulty_source::Fault;
use recon_tests::otlp::{OtlpReceiver, ReceivedSpan};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_run_is_one_trace_across_the_replicas() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let mut settings = Settings::new(121);
    settings.otlp_endpoint = Some(receiver.endpoint.clone());
    let cluster = Cluster::start(settings).await?;
    let outcome = one_trace(&cluster, &receiver).await;
    cluster.finish(outcome)
}

async fn one_trace(cluster: &Cluster, receiver: &OtlpReceiver) -> anyhow::Result<()> {
    // Units that take a moment, so that every replica gets some.
    for replica in &cluster.replicas {
        replica.proxy.set_fault(Fault::Delay {
            path_contains: "/tenants/".to_owned(),
            delay: Duration::from_millis(100),
        });
    }
    cluster.drift().await?;
    let run = cluster.request_run().await?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    cluster.history.sync().await?;
    let done: BTreeMap<String, String> = cluster
        .history
        .changes()?
        .done_puts(&run)
        .into_iter()
        .map(|(unit, record, _)| (unit, record.member))
        .collect();
    ensure!(!done.is_empty(), "the run did no unit");

    // The run span ends with the barrier; wait until it and a span for
    // every done unit arrived.
    let arrived = wait_until("the run's spans", Duration::from_secs(30), || async {
        let spans = receiver.spans();
        let units = unit_spans(&spans, &run);
        Ok(run_span(&spans, &run).is_some() && done.keys().all(|unit| units.contains_key(unit)))
    })
    .await;
    let spans = receiver.spans();
    arrived.with_context(|| {
        format!(
            "{} spans received, of them {} reconcile.run and {} reconcile.unit",
            spans.len(),
            spans
                .iter()
                .filter(|span| span.name == "reconcile.run")
                .count(),
            spans
                .iter()
                .filter(|span| span.name == "reconcile.unit")
                .count()
        )
    })?;

    let root = run_span(&spans, &run).context("no run span")?;
    ensure!(
        root.parent_span_id.is_empty(),
        "the run span has a parent: {root:?}"
    );
    ensure!(
        root.attribute("status") == Some("completed"),
        "run span status {:?}",
        root.attribute("status")
    );
    let units = unit_spans(&spans, &run);
    let mut services = BTreeSet::new();
    for (unit, member) in &done {
        let span = &units[unit];
        ensure!(
            span.trace_id == root.trace_id,
            "unit {unit} is in trace {}, the run in {}",
            span.trace_id,
            root.trace_id
        );
        ensure!(
            span.parent_span_id == root.span_id,
            "unit {unit}'s parent is {}, not the run span {}",
            span.parent_span_id,
            root.span_id
        );
        ensure!(
            span.service == format!("recon-{member}"),
            "unit {unit} was done by {member} but its span came from {}",
            span.service
        );
        services.insert(span.service.clone());
    }
    let others: Vec<&String> = services
        .iter()
        .filter(|service| **service != root.service)
        .collect();
    ensure!(
        others.len() >= 2,
        "units of only {others:?} besides the leader {} in the trace",
        root.service
    );
    // Under the units: the Source API's pages, in the same trace.
    let unit_ids: BTreeSet<&str> = units.values().map(|span| span.span_id.as_str()).collect();
    let fetches_under_units = spans
        .iter()
        .filter(|span| span.trace_id == root.trace_id && span.name.starts_with("source."))
        .filter(|span| {
            let mut parent = span.parent_span_id.as_str();
            // Walk up to a unit span (through the per-kind walk spans).
            for _ in 0..8 {
                if unit_ids.contains(parent) {
                    return true;
                }
                match spans.iter().find(|candidate| candidate.span_id == parent) {
                    Some(candidate) => parent = candidate.parent_span_id.as_str(),
                    None => return false,
                }
            }
            false
        })
        .count();
    ensure!(
        fetches_under_units > 0,
        "no Source API span under the units"
    );
    eprintln!(
        "trace {}: run span from {}, {} units from {:?}, {} Source API spans under them",
        root.trace_id,
        root.service,
        done.len(),
        services,
        fetches_under_units
    );
    let mut names: BTreeMap<(String, String), usize> = BTreeMap::new();
    for span in spans.iter().filter(|span| span.trace_id == root.trace_id) {
        *names
            .entry((span.service.clone(), span.name.clone()))
            .or_default() += 1;
    }
    eprintln!("spans of the trace by service and name: {names:?}");
    Ok(())
}

/// The root `reconcile.run` span of `run`.
fn run_span<'a>(spans: &'a [ReceivedSpan], run: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|span| {
        span.name == "reconcile.run"
            && span.attribute("run") == Some(run)
            && span.attribute("adopted") == Some("false")
    })
}

/// The `reconcile.unit` spans of `run` by unit id.
fn unit_spans<'a>(spans: &'a [ReceivedSpan], run: &str) -> BTreeMap<String, &'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.name == "reconcile.unit" && span.attribute("run") == Some(run))
        .filter_map(|span| Some((span.attribute("unit")?.to_owned(), span)))
        .collect()
}
