//! Log output of the binaries: `tracing` to standard error, filtered by `RUST_LOG`,
//! as text or, with `WATCHWORD_LOG_FORMAT=json`, as JSON lines.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `default_level` applies when `RUST_LOG` is unset.
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colour codes only when standard error is a terminal, so files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let json = std::env::var("WATCHWORD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    if let Err(error) = result {
        eprintln!("warning: logging not initialized: {error}");
    }
}
