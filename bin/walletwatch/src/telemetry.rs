//! The global tracing subscriber and Prometheus recorder (installed only
//! here, in the binary).

use tracing_subscriber::EnvFilter;
use ww_config::LogFormat;

/// Logs go to stderr so that stdout carries only command output (JSON lines).
pub(crate) fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level).map_err(|error| anyhow::anyhow!("invalid log level {level:?}: {error}"))?;
    // Colours only for a person at a terminal, never in files or collectors.
    let is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(is_terminal);
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("installing the log subscriber: {error}"))
}

/// Seconds buckets for latency histograms: 1 ms to 60 s.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

/// Installs the Prometheus recorder and registers every metric walletwatch
/// documents, at zero, with its help text: a fresh daemon's `/metrics`
/// already shows them all. Returns the handle that renders the exposition.
pub(crate) fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .map_err(|error| anyhow::anyhow!("configuring metrics: {error}"))?
        // An exact name is matched before a suffix.
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(ww_core::metric::PIPELINE_STAGE_SECONDS.into()),
            &ww_core::metric::STAGE_BUCKETS,
        )
        .map_err(|error| anyhow::anyhow!("configuring metrics: {error}"))?
        .install_recorder()
        .map_err(|error| anyhow::anyhow!("installing the metrics recorder: {error}"))?;
    let catalogs: [&[ww_core::metric::MetricSpec]; 5] = [
        ww_solana::metrics::CATALOG,
        ww_evm::metric_names::CATALOG,
        ww_app::METRICS,
        ww_server::metric_names::CATALOG,
        ww_sinks::metric_names::CATALOG,
    ];
    for spec in catalogs.into_iter().flatten() {
        register(spec);
    }
    Ok(handle)
}

/// Folds buffered histogram samples into the exposition every 5 s until
/// `stop`: without a render or an upkeep they pile up in memory.
pub(crate) fn spawn_upkeep(
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => metrics.run_upkeep(),
            }
        }
    });
}

fn register(spec: &ww_core::metric::MetricSpec) {
    use ww_core::metric::MetricKind;
    match spec.kind {
        MetricKind::Counter => metrics::describe_counter!(spec.name, spec.help),
        MetricKind::Gauge => metrics::describe_gauge!(spec.name, spec.help),
        MetricKind::Histogram => metrics::describe_histogram!(spec.name, spec.help),
    }
    for labels in spec.label_sets() {
        let labels: Vec<metrics::Label> =
            labels.into_iter().map(|(key, value)| metrics::Label::new(key, value)).collect();
        match spec.kind {
            MetricKind::Counter => metrics::counter!(spec.name, labels).increment(0),
            MetricKind::Gauge => metrics::gauge!(spec.name, labels).increment(0.0),
            MetricKind::Histogram => {
                // A histogram shows up once it has a series; registering one records nothing.
                let _ = metrics::histogram!(spec.name, labels);
            }
        }
    }
}
