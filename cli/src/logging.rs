use clap::{Args, ValueEnum};

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

pub fn init(args: &LogArgs) {
    pastiche_proto::runtime::init_logging(matches!(args.log_format, LogFormat::Json));
}
