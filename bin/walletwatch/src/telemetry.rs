//! The global tracing subscriber (installed only here, in the binary).

use tracing_subscriber::EnvFilter;
use ww_config::LogFormat;

/// Logs go to stderr so that stdout carries only command output (JSON lines).
pub(crate) fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level).map_err(|error| anyhow::anyhow!("invalid log level {level:?}: {error}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("installing the log subscriber: {error}"))
}
