//! Logging setup shared by every binary.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines with key=value fields.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Keeps the log writer thread alive; dropping it flushes what is queued. Hold it in `main`
/// until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Installs the global `tracing` subscriber, writing to stderr. `RUST_LOG` overrides
/// `default_filter` (e.g. `info,access=off`). Safe to call twice: the second call is a no-op,
/// which in-process tests rely on.
///
/// Lines are written by a separate thread through a buffer that is flushed whenever the
/// queue runs empty: one write per burst instead of one per access-log line (like nginx's
/// `access_log ... buffer=`), and a slow stderr never stalls a request. The queue does not
/// drop lines; when it is full, loggers wait.
pub fn init(default_filter: &str, format: LogFormat) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour codes only for a terminal: tests and log shippers parse these lines.
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    LogGuard(installed.is_ok().then_some(guard))
}
