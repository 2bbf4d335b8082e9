//! Logs and traces of the process.
//!
//! * Logs go to stderr as text or JSON (`--log-format`); a JSON line
//!   written inside a span carries the span's `trace_id` and `span_id`.
//! * Spans are OpenTelemetry spans (tracing-opentelemetry), exported or
//!   not, with W3C trace context propagation (`TraceContextPropagator`)
//!   across processes: through the run state in etcd and the change events'
//!   record headers — so a trace continues through a process that does not
//!   export (the relay's records still carry its context).
//! * Export is OTLP over gRPC, configured by the standard variables and off
//!   when no endpoint is set: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_SERVICE_NAME`,
//!   `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`;
//!   `OTEL_SDK_DISABLED=true` turns it off.

use crate::cli::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::fmt;
use tracing::Subscriber;
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The tracer provider to flush at exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the global subscriber and propagator. `default_filter`
    /// applies when `RUST_LOG` is not set. Must run inside the Tokio
    /// runtime (the gRPC exporter's connection lives on it).
    pub fn init(default_filter: &str, format: LogFormat) -> Telemetry {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        // Without export, spans still get ids (for the JSON lines and the
        // propagated context), and are dropped at their end.
        let (provider, export_error) = match export_requested().then(otlp_provider) {
            Some(Ok(provider)) => (provider, None),
            Some(Err(error)) => (SdkTracerProvider::builder().build(), Some(error)),
            None => (SdkTracerProvider::builder().build(), None),
        };
        let spans = tracing_opentelemetry::layer().with_tracer(provider.tracer("recon"));
        let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let lines = match format {
            LogFormat::Text => lines
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .boxed(),
            LogFormat::Json => lines
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .flatten_event(true)
                .map_event_format(WithTraceIds)
                .boxed(),
        };
        tracing_subscriber::registry()
            .with(filter)
            .with(spans)
            .with(lines)
            .init();
        if let Some(error) = export_error {
            tracing::error!(error = %error, "OTLP trace export is off: could not configure it");
        }
        Telemetry { provider }
    }

    /// Exports the spans still buffered (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("warning: flushing the last spans failed: {error}");
        }
    }
}

/// Whether the environment asks for OTLP export.
fn export_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// A provider exporting in batches over OTLP/gRPC; the SDK reads the
/// endpoint, service name, sampler and batch settings from the environment.
fn otlp_provider() -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|error| error.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build())
}

/// The JSON line of an event, with the current span's trace and span ids
/// first when there is one (as OpenTelemetry's log correlation names them).
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0
            .format_event(context, Writer::new(&mut line), event)?;
        let ids = context.lookup_current().and_then(|span| {
            let extensions = span.extensions();
            let data = extensions.get::<OtelData>()?;
            Some((data.trace_id()?, data.span_id()?))
        });
        match (ids, line.strip_prefix('{')) {
            (Some((trace_id, span_id)), Some(rest)) => {
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}
