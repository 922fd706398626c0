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

/// Installs the Prometheus recorder and serves `/metrics` on `listen`, on a
/// listener of its own (it comes up even when Solana is unreachable).
pub(crate) fn install_metrics(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .map_err(|error| anyhow::anyhow!("configuring metrics: {error}"))?
        .install()
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot serve metrics on {listen}: {error}; choose another address with --metrics-listen or WALLETWATCH_METRICS_LISTEN"
            )
        })
}
