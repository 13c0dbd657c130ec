use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct LogArgs {
    /// Log lines as text for people or JSON for machines. The level comes from
    /// RUST_LOG (default: info).
    #[arg(
        long,
        global = true,
        env = "PASTICHE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

/// Logs go to stderr so that stdout stays free for results.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
