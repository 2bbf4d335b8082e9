//! Prometheus metrics of the Source API client (`recon_source_…`): every
//! attempt, retries included, by endpoint and answer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use reqwest::Url;

/// Labels of a request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// What was asked ([`endpoint_of`]).
    pub endpoint: String,
    /// The HTTP status, or `transport` when no answer came.
    pub status: String,
}

/// Labels of a latency series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// What was asked ([`endpoint_of`]).
    pub endpoint: String,
}

/// A latency histogram with the client's buckets (5 ms to ~80 s).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The client's metrics; cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct SourceMetrics {
    /// Attempts by endpoint and answer.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the answer's status line by endpoint.
    pub latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
}

impl Default for SourceMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl SourceMetrics {
    /// Creates the metrics and registers them under `recon_source_…`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let source = registry.sub_registry_with_prefix("recon_source");
        source.register(
            "requests",
            "Source API attempts by endpoint and HTTP status (transport: no answer)",
            metrics.requests.clone(),
        );
        source.register_with_unit(
            "request_duration",
            "Source API latency to the status line by endpoint",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        metrics
    }

    /// Records one attempt at `url` answered with `status` (`None`: no
    /// answer) after `seconds`.
    pub fn record(&self, url: &Url, status: Option<u16>, seconds: f64) {
        let endpoint = endpoint_of(url).to_owned();
        let status = status.map_or_else(|| "transport".to_owned(), |code| code.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
    }
}

/// The endpoint of a Source API URL as a label of bounded cardinality:
/// `tenants`, `users`, `groups`, `memberships`, `counts`, `digests`,
/// `capabilities` or `other` (tenant ids and cursors never become labels).
pub fn endpoint_of(url: &Url) -> &'static str {
    const KNOWN: [&str; 7] = [
        "tenants",
        "users",
        "groups",
        "memberships",
        "counts",
        "digests",
        "capabilities",
    ];
    let segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    if segments.contains(&"digests") {
        return "digests";
    }
    segments
        .last()
        .and_then(|last| KNOWN.iter().find(|known| *known == last))
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_never_carry_ids() {
        let cases = [
            ("http://m/v1/tenants?limit=5", "tenants"),
            ("http://m/api/v1/tenants/users/users?after=x", "users"),
            ("http://m/v1/tenants/t1/memberships", "memberships"),
            ("http://m/v1/tenants/t1/counts", "counts"),
            ("http://m/v1/tenants/t1/digests", "digests"),
            ("http://m/v1/tenants/t1/digests/user?buckets=16", "digests"),
            ("http://m/v1/capabilities", "capabilities"),
            ("http://m/v1/tenants/some-tenant", "other"),
        ];
        for (url, endpoint) in cases {
            let url = Url::parse(url).expect("valid");
            assert_eq!(endpoint_of(&url), endpoint, "{url}");
        }
    }

    #[test]
    fn an_attempt_is_counted_by_endpoint_and_status() {
        let metrics = SourceMetrics::default();
        let url = Url::parse("http://m/v1/tenants/t1/users").expect("valid");
        metrics.record(&url, Some(500), 0.2);
        metrics.record(&url, None, 1.0);
        let labels = |status: &str| RequestLabels {
            endpoint: "users".into(),
            status: status.into(),
        };
        assert_eq!(metrics.requests.get_or_create(&labels("500")).get(), 1);
        assert_eq!(
            metrics.requests.get_or_create(&labels("transport")).get(),
            1
        );
    }
}
