//! `pastiche`: neural style transfer from the command line.

mod farm;
mod local;
mod logging;
mod param_flags;
mod plan;
mod render;
mod report;
mod weights;

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
    /// List the tasks a grid expands to, with their ids, without submitting it.
    Plan(plan::PlanArgs),
    /// Run a grid on this machine: a coordinator and workers in this process.
    Local(local::LocalArgs),
    /// Submit a grid to a coordinator (uploading its local inputs to the store).
    Submit(farm::SubmitArgs),
    /// Follow a job until it ends.
    Watch(farm::WatchArgs),
    /// Jobs and their tasks' states.
    Status(farm::StatusArgs),
    /// Cancel a job: queued tasks at once, running ones within an iteration.
    Cancel(farm::JobArgs),
    /// Forget a job that has ended (its tasks and events); --results also removes
    /// its objects from the store.
    Delete(farm::DeleteArgs),
    /// Download a job's results from the store.
    Results(farm::ResultsArgs),
    /// Make a job's report: contact sheet, loss curves, summary tables, index.html.
    Report(report::ReportArgs),
    /// Pretrained weights: list what is installed, import files, fetch torchvision's.
    Weights(weights::WeightsArgs),
}

async fn run_farm_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Render(_) | Command::Plan(_) | Command::Weights(_) => {
            unreachable!("run without a runtime")
        }
        Command::Local(args) => local::run(args).await,
        Command::Submit(args) => {
            let job = farm::submit(&args).await?;
            if args.watch {
                farm::watch(&args.connection, &args.store, &job).await?;
            }
            Ok(())
        }
        Command::Watch(args) => farm::watch(&args.connection, &args.store, &args.job).await,
        Command::Status(args) => farm::status(&args).await,
        Command::Cancel(args) => farm::cancel(&args).await,
        Command::Delete(args) => farm::delete(&args).await,
        Command::Results(args) => farm::results(&args).await,
        Command::Report(args) => report::run(args).await,
    }
}

/// `plan` and `weights list` print lists that people pipe into `head`: when the
/// reader goes, end as other Unix tools do (SIGPIPE) rather than panic in
/// `println!`. Nothing else does: the farm commands keep Rust's default, which
/// turns a closed socket into an error, and commands that write files must live to
/// remove their temporary files.
pub(crate) fn end_quietly_when_the_reader_goes() {
    // SAFETY: sets a signal disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    pastiche_engine::tune_allocator();
    let cli = Cli::parse();
    logging::init(&cli.log);
    let result = match cli.command {
        Command::Render(args) => render::run(args),
        Command::Plan(args) => {
            end_quietly_when_the_reader_goes();
            plan::run(args)
        }
        Command::Weights(args) => weights::run(args),
        farm_command => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(run_farm_command(farm_command))),
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
