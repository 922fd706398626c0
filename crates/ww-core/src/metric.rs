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
