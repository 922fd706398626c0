//! Metric declarations: each crate lists the metrics it emits once, with
//! their help text and the label values known in advance, so the binary can
//! export every one of them from start-up (at zero) instead of only after
//! its first increment. An alert rule on `increase(x[5m]) > 0` can then tell
//! "none happened" from "not running".

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations (seconds, for walletwatch's).
    Histogram,
}

/// One metric: its name, type, help text and labels.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// `ww_<subsystem>_<name>_<unit>[_total]`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// One line for `# HELP`.
    pub help: &'static str,
    /// Each label with the values it is exported with from start-up. A label
    /// whose values are only known at run time (an endpoint's host) has an
    /// empty list: the component that knows them exports them when it starts.
    pub labels: &'static [(&'static str, &'static [&'static str])],
}

impl MetricSpec {
    /// Returns every combination of the known label values (one empty
    /// combination for a metric without labels; none when a label's values
    /// are only known at run time).
    pub fn label_sets(&self) -> Vec<Vec<(&'static str, &'static str)>> {
        let mut sets: Vec<Vec<(&'static str, &'static str)>> = vec![Vec::new()];
        for (label, values) in self.labels {
            let mut next = Vec::with_capacity(sets.len() * values.len());
            for set in &sets {
                for value in *values {
                    let mut extended = set.clone();
                    extended.push((*label, *value));
                    next.push(extended);
                }
            }
            sets = next;
        }
        sets
    }
}

/// Histogram: seconds each unit of work spent in a stage of the pipeline.
/// Labels: `stage` (one of [`STAGES`]). Its sums over an interval, next to
/// the interval, say where the time goes: a serial stage whose sum nears
/// the interval is the bound.
pub const PIPELINE_STAGE_SECONDS: &str = "ww_pipeline_stage_seconds";

/// The pipeline's stages, in the order an event meets them.
pub const STAGES: &[&str] = &[
    Stage::PubsubParse.as_str(),
    Stage::RpcRequest.as_str(),
    Stage::Decode.as_str(),
    Stage::Routing.as_str(),
    Stage::StoreCommit.as_str(),
    Stage::Publish.as_str(),
];

/// Bucket bounds for [`PIPELINE_STAGE_SECONDS`]: 10 µs to 5 s (a frame is
/// parsed in microseconds, a commit of thousands takes a tenth of a second).
pub const STAGE_BUCKETS: [f64; 13] =
    [0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 5.0];

/// A stage of the pipeline timed by [`PIPELINE_STAGE_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Parsing one Solana PubSub frame.
    PubsubParse,
    /// One Solana JSON-RPC HTTP request, sent to its reply read (a batch
    /// counts once), whatever its outcome.
    RpcRequest,
    /// Decoding one Solana transaction into the tracked wallets' events.
    Decode,
    /// Matching one recorded batch of events to their subscriptions.
    Routing,
    /// One group commit of the store (events, keys, outbox jobs, cursors).
    StoreCommit,
    /// After a commit: handing its events to the fan-out and the log, and
    /// answering its requests.
    Publish,
}

impl Stage {
    /// The `stage` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::PubsubParse => "pubsub_parse",
            Stage::RpcRequest => "rpc_request",
            Stage::Decode => "decode",
            Stage::Routing => "routing",
            Stage::StoreCommit => "store_commit",
            Stage::Publish => "publish",
        }
    }

    /// Records the time since `started` as one unit of this stage's work.
    pub fn record_since(self, started: std::time::Instant) {
        metrics::histogram!(PIPELINE_STAGE_SECONDS, "stage" => self.as_str()).record(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_are_the_cartesian_product_of_known_values() {
        let plain = MetricSpec { name: "ww_x_total", kind: MetricKind::Counter, help: "x", labels: &[] };
        assert_eq!(plain.label_sets(), vec![Vec::new()]);
        let two = MetricSpec {
            name: "ww_y_total",
            kind: MetricKind::Counter,
            help: "y",
            labels: &[("a", &["1", "2"]), ("b", &["x"])],
        };
        assert_eq!(two.label_sets(), vec![vec![("a", "1"), ("b", "x")], vec![("a", "2"), ("b", "x")]]);
        let runtime =
            MetricSpec { name: "ww_z_total", kind: MetricKind::Counter, help: "z", labels: &[("endpoint", &[])] };
        assert!(runtime.label_sets().is_empty());
    }
}
