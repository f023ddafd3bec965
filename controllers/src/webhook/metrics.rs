//! `/metrics`: reviews by kind and verdict, and how long answering took.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    kind: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: String,
}

/// The webhook's metrics.
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lattice_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by object kind and verdict",
            reviews.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "requests_rejected",
            "Requests refused before a review could be read, by reason",
            rejected.clone(),
        );
        // 50 µs to about 0.8 s.
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        registry.register(
            "review_duration_seconds",
            "Time from a review's body being read to its answer",
            latency.clone(),
        );
        Metrics {
            registry,
            reviews,
            rejected,
            latency,
        }
    }

    /// Counts one review. Labels come from a closed set: a kind the webhook does not know
    /// (any client may send any `kind`) is counted as `other`, so no request can grow the
    /// metrics without bound.
    pub fn review(&self, kind: &str, verdict: &str, took: Duration) {
        let kind = match lattice_schemas::crd::Kind::from_name(kind) {
            Some(k) => k.name(),
            None if kind == "unknown" => "unknown",
            None => "other",
        };
        self.reviews
            .get_or_create(&ReviewLabels {
                kind: kind.to_owned(),
                verdict: verdict.to_owned(),
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn rejected(&self, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
