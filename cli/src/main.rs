//! `pastiche`: neural style transfer from the command line.

mod logging;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pastiche",
    version,
    about = "Neural style transfer, one image or a whole grid"
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render one pastiche on this machine.
    Render(render::RenderArgs),
}

fn main() -> ExitCode {
    pastiche_engine::tune_allocator();
    let cli = Cli::parse();
    logging::init(&cli.log);
    let result = match cli.command {
        Command::Render(args) => render::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::debug!(error = ?err, "command failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
