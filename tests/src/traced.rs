//! Runs library code under test with OpenTelemetry spans, as the `recon`
//! binary does: a future run by [`traced`] gets spans with trace ids and the
//! global W3C propagator, without touching the test binary's global
//! subscriber.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::future::Future;
use tracing::instrument::{WithDispatch, WithSubscriber};
use tracing_subscriber::layer::SubscriberExt;

/// `future`, run with a subscriber that makes its spans OpenTelemetry
/// spans (exported nowhere).
pub fn traced<F: Future>(future: F) -> WithDispatch<F> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("recon-tests")));
    future.with_subscriber(subscriber)
}
