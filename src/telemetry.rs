//! Logging setup: JSON lines on stdout (access log under target `rempart::access`, events
//! under their module), or human-readable text for the demo. `RUST_LOG` overrides levels.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Text for humans.
    Text,
}

/// Libraries whose warnings are about the network's input, kept to their errors unless
/// `RUST_LOG` says otherwise.
const QUIET_BY_DEFAULT: &str = "rustls=error";

/// Installs the global subscriber. Returns a guard that flushes the non-blocking writer.
pub fn init(
    format: LogFormat,
    default_filter: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    // rustls warns about what a peer sent (an IP address as SNI, a bad record): a line per
    // handshake that any client can cause, at the rate of a flood. Handshake failures are
    // counted (`rempart_downstream_connections_total{result="tls_error"}`) instead.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},{QUIET_BY_DEFAULT}")));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 * 1024)
        .finish(std::io::stdout());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_writer(writer),
            )
            .try_init(),
    };
    guard
}
