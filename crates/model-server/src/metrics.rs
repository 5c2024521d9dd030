//! `/metrics`: the pool's gauges and counters (`model_pool_*`, from `model-pool`) followed by
//! the server's histograms, in the Prometheus text format (0.0.4), through
//! `prometheus-client`:
//!
//! * `model_pool_request_duration_seconds{model, endpoint, status}` — arrival to the last byte
//!   (a stream: to its end; `status="499"` when the client went away first);
//! * `model_pool_queue_wait_seconds{model}` — arrival until the request holds its lease
//!   (waiting for a slot, memory or a load, the load included);
//! * `model_pool_time_to_first_token_seconds{model}` — arrival to the first generated token;
//! * `model_pool_load_duration_seconds{model}` — each measured load, warm-up included;
//! * `model_pool_tokens_per_second{model}` — decode speed of each finished generation.
//!
//! Only histograms and gauges are registered with `prometheus-client`: their OpenMetrics
//! encoding is also valid Prometheus text, so one scrape parses either way.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use model_serving::ModelPool;

/// Labels of the request-duration histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The model asked for (`-` when the request named none or an unknown one).
    pub model: String,
    /// The route, e.g. `/v1/embeddings`.
    pub endpoint: String,
    /// The HTTP status, `499` when the client disconnected first.
    pub status: String,
}

/// Labels of the per-model histograms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModelLabel {
    /// The model.
    pub model: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.25 ms … ~9 min.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 22))
}

fn load_time() -> Histogram {
    // 10 ms … ~22 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 18))
}

fn speed() -> Histogram {
    // 1 … 16384 tokens/s.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: HistogramFamily<RequestLabels>,
    queue_wait: HistogramFamily<ModelLabel>,
    ttft: HistogramFamily<ModelLabel>,
    loads: HistogramFamily<ModelLabel>,
    tokens_per_second: HistogramFamily<ModelLabel>,
    /// The load window last seen per model: a new one is a new load.
    seen_loads: Mutex<HashMap<String, (Duration, Duration)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty histograms.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = HistogramFamily::<RequestLabels>::new_with_constructor(latency);
        let queue_wait = HistogramFamily::<ModelLabel>::new_with_constructor(latency);
        let ttft = HistogramFamily::<ModelLabel>::new_with_constructor(latency);
        let loads = HistogramFamily::<ModelLabel>::new_with_constructor(load_time);
        let tokens_per_second = HistogramFamily::<ModelLabel>::new_with_constructor(speed);
        registry.register(
            "model_pool_request_duration_seconds",
            "HTTP requests from arrival to the last byte, by model, endpoint and status (499: the client went away).",
            requests.clone(),
        );
        registry.register(
            "model_pool_queue_wait_seconds",
            "Arrival until the request holds its lease (waiting for a slot, memory or a load).",
            queue_wait.clone(),
        );
        registry.register(
            "model_pool_time_to_first_token_seconds",
            "Arrival to the first generated token.",
            ttft.clone(),
        );
        registry.register(
            "model_pool_load_duration_seconds",
            "Measured model loads, warm-up included.",
            loads.clone(),
        );
        registry.register(
            "model_pool_tokens_per_second",
            "Decode speed of each finished generation.",
            tokens_per_second.clone(),
        );
        Metrics {
            registry,
            requests,
            queue_wait,
            ttft,
            loads,
            tokens_per_second,
            seen_loads: Mutex::new(HashMap::new()),
        }
    }

    /// One finished request.
    pub fn request(&self, model: &str, endpoint: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                endpoint: endpoint.to_owned(),
                status: status.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// A request's wait for its lease.
    pub fn queue_wait(&self, model: &str, waited: Duration) {
        self.queue_wait
            .get_or_create(&label(model))
            .observe(waited.as_secs_f64());
    }

    /// A generation's first token.
    pub fn first_token(&self, model: &str, after: Duration) {
        self.ttft
            .get_or_create(&label(model))
            .observe(after.as_secs_f64());
    }

    /// A finished generation's decode speed.
    pub fn tokens_per_second(&self, model: &str, rate: f64) {
        if rate > 0.0 && rate.is_finite() {
            self.tokens_per_second
                .get_or_create(&label(model))
                .observe(rate);
        }
    }

    /// Observes the loads the pool measured since the last call (the pool keeps each model's
    /// last measurement; this is called on every scrape and every quarter second by the
    /// server, so two loads of one model within a quarter second count once).
    pub fn collect_loads(&self, pool: &ModelPool) {
        let measured = pool.measurements();
        let mut seen = self.seen_loads.lock();
        for (key, m) in measured {
            if seen.get(&key) != Some(&m.window) {
                self.loads
                    .get_or_create(&label(&key))
                    .observe(m.window.1.saturating_sub(m.window.0).as_secs_f64());
                seen.insert(key, m.window);
            }
        }
    }

    /// The whole scrape: the pool's families, then the histograms.
    pub fn render(&self, pool: &ModelPool) -> String {
        self.collect_loads(pool);
        let mut out = pool.prometheus();
        let mut ours = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut ours, &self.registry).is_ok() {
            out.push_str(&ours);
        }
        out
    }
}

fn label(model: &str) -> ModelLabel {
    ModelLabel {
        model: model.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_encode_as_prometheus_text() {
        let m = Metrics::new();
        m.request("tiny/bert", "/v1/embeddings", 200, Duration::from_millis(3));
        m.first_token("tiny/phi3", Duration::from_millis(12));
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &m.registry).unwrap();
        assert!(
            text.contains("# TYPE model_pool_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(r#"model_pool_request_duration_seconds_count{model="tiny/bert",endpoint="/v1/embeddings",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("model_pool_time_to_first_token_seconds_bucket"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }
}
