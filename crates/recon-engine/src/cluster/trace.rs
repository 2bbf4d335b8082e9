//! One trace per run, across members: the leader's `reconcile.run` span is
//! the root, its W3C context travels in the run state
//! ([`RunState::traceparent`]), and every member's spans for the run (a
//! leader that adopts the run, the followers' units) are its children. The
//! context goes through the global propagator, so nothing travels when no
//! OpenTelemetry propagator or layer is installed.

use opentelemetry::global;
use recon_coord::RunState;
use recon_core::UnitReport;
use std::collections::HashMap;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// One figure of a unit's report.
type Figure = fn(&UnitReport) -> u64;

/// The figures a run's span and a unit's span carry, as span fields.
pub(super) const REPORT_FIGURES: [(&str, Figure); 7] = [
    ("compared", |unit| unit.compared),
    ("missing", |unit| unit.missing),
    ("phantom", |unit| unit.phantom),
    ("changed", |unit| unit.changed),
    ("written", |unit| unit.written),
    ("withheld", |unit| unit.skipped_by_guard),
    ("bytes", |unit| unit.bytes),
];

/// The field of the W3C trace context this module carries.
const TRACEPARENT: &str = "traceparent";

/// `span`'s W3C `traceparent`, if it has a valid OpenTelemetry context.
pub(super) fn traceparent_of(span: &Span) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&span.context(), &mut carrier);
    });
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of `run`'s root span (when the run carries one).
pub(super) fn join_run(span: &Span, run: &RunState) {
    let Some(traceparent) = &run.traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.clone())]);
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    // Fails only for a span already started, which callers never pass.
    let _ = span.set_parent(parent);
}
