//! The farm commands: submit, watch, status, cancel, results, local.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{HumanDuration, ProgressBar, ProgressStyle};
use pastiche_proto::pb::farm_client::FarmClient;
use pastiche_proto::security::{AuthChannel, ClientSecurityArgs};
use pastiche_proto::{liveness, pb};
use pastiche_spec::store::Store;
use pastiche_spec::{layout, FinishedTask};

/// How long `submit` waits for the coordinator to take a grid (1,000,000
/// tasks take it seconds).
const SUBMIT_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Args, Clone)]
pub struct Connection {
    /// The coordinator, as http://host:port, or https://host:port for TLS.
    #[arg(
        long,
        env = "PASTICHE_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,
    #[command(flatten)]
    pub security: ClientSecurityArgs,
}

/// Where a store is when nothing says: a directory in the working directory.
pub const DEFAULT_STORE: &str = "pastiche-results";

#[derive(Args, Clone)]
pub struct StoreArg {
    /// Where inputs and results live: a directory or s3://bucket/prefix (the
    /// workers' --store).
    #[arg(long, env = "PASTICHE_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
}

/// The store of a command that talks to a coordinator: the farm's.
#[derive(Args, Clone, Default)]
pub struct FarmStoreArg {
    /// Where inputs and results live: a directory or s3://bucket/prefix [default:
    /// the coordinator's --store; if it has none, pastiche-results]. Given, it
    /// must be the coordinator's.
    #[arg(long, env = "PASTICHE_STORE")]
    pub store: Option<String>,
}

/// The farm's store, as the coordinator names it (`GetFarm`); `--store`, when
/// given, must be that one, or the workers would not find the inputs uploaded to
/// it. A coordinator without a store (or from before `GetFarm`) leaves it to
/// `--store`, else [`DEFAULT_STORE`].
pub async fn farm_store(
    farm: &mut FarmClient<AuthChannel>,
    given: &FarmStoreArg,
) -> Result<String> {
    let farms = match farm
        .get_farm(liveness::request(pb::GetFarmRequest {}))
        .await
    {
        Ok(info) => Some(info.into_inner().store).filter(|s| !s.is_empty()),
        Err(status) if status.code() == tonic::Code::Unimplemented => None,
        Err(status) => return Err(status_error(status)),
    };
    match (farms, given.store.as_deref()) {
        (Some(farms), None) => Ok(farms),
        (Some(farms), Some(given)) => {
            let location = Store::open(given)?.location();
            anyhow::ensure!(
                location == farms,
                "--store {given} is not this farm's store: the coordinator's is {farms}, \
                 where its workers read inputs; leave --store out to use it"
            );
            Ok(given.to_owned())
        }
        (None, given) => Ok(given.unwrap_or(DEFAULT_STORE).to_owned()),
    }
}

#[derive(Args)]
pub struct SubmitArgs {
    /// The grid file (TOML).
    pub grid: PathBuf,
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub store: FarmStoreArg,
    /// Higher runs first.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Attempts per task [default: the coordinator's].
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Follow the job until it ends.
    #[arg(long)]
    pub watch: bool,
    /// Store each task's current iterate as its preview.png every N iterations
    /// (0: never) [default: the grid's `preview_every`, else off].
    #[arg(long, value_name = "N")]
    pub preview_every: Option<u32>,
}

#[derive(Args)]
pub struct WatchArgs {
    pub job: String,
    #[command(flatten)]
    pub connection: Connection,
    /// Where previews are printed to be (the workers' --store).
    #[command(flatten)]
    pub store: FarmStoreArg,
}

#[derive(Args)]
pub struct JobArgs {
    pub job: String,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Args)]
pub struct DeleteArgs {
    pub job: String,
    /// Also remove the job's objects from the store (its grid, results and
    /// report; uploaded inputs stay, other jobs may share them).
    #[arg(long)]
    pub results: bool,
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub store: FarmStoreArg,
}

#[derive(Args)]
pub struct StatusArgs {
    /// One job [default: every job].
    pub job: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Args)]
pub struct ResultsArgs {
    pub job: String,
    #[command(flatten)]
    pub store: StoreArg,
    /// Directory to download into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub async fn connect(connection: &Connection) -> Result<FarmClient<AuthChannel>> {
    let url = &connection.coordinator;
    anyhow::ensure!(
        url.starts_with("http://") || url.starts_with("https://"),
        "--coordinator {url}: give it as http://host:port (or https:// with TLS)"
    );
    let security = connection.security.load()?;
    let channel = security
        .endpoint(url)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|err| {
            // The transport's chain repeats itself: its innermost cause says it all.
            let cause = pastiche_spec::innermost_cause(&err);
            anyhow::anyhow!("cannot reach the coordinator at {url}: {cause}")
        })?;
    Ok(FarmClient::new(security.authorize(channel)).max_decoding_message_size(64 << 20))
}

/// gRPC statuses as plain errors ("no job 'x'" rather than a status dump).
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::Unauthenticated {
        return anyhow::anyhow!(
            "the coordinator refused this command's token ({}): set --token-file or PASTICHE_TOKEN",
            status.message()
        );
    }
    anyhow::anyhow!("{}", status.message())
}

/// A grid file's text as it will be submitted: checked, with `pretrained` weights
/// naming this machine's installed file (which is then uploaded like any other).
pub fn read_grid_file(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(pastiche_spec::grid_with_pretrained_weights(
        path,
        &text,
        &pastiche_engine::weights::installed,
    )?)
}

/// Uploads a grid's local inputs (content-addressed) and rewrites the grid to name
/// them by object key; paths are relative to the grid file.
pub async fn upload_inputs(grid_path: &Path, text: &str, store: &Store) -> Result<String> {
    let base = grid_path.parent().unwrap_or(Path::new("."));
    let entries = pastiche_spec::local_inputs(text)
        .with_context(|| format!("reading {}", grid_path.display()))?;
    let mut keys = BTreeMap::new();
    for entry in entries {
        let path = base.join(&entry);
        let key = store
            .put_input(&path)
            .await
            .with_context(|| format!("uploading {}", path.display()))?;
        keys.insert(entry, key);
    }
    Ok(pastiche_spec::grid_with_input_keys(text, &keys)?)
}

/// Fails on a refused token before anything is uploaded: any answer past the
/// token check will do (here, that no job has an empty id).
async fn check_access(farm: &mut FarmClient<AuthChannel>) -> Result<()> {
    match farm
        .get_job(liveness::request(pb::GetJobRequest::default()))
        .await
    {
        Err(status) if status.code() == tonic::Code::Unauthenticated => Err(status_error(status)),
        _ => Ok(()),
    }
}

/// A grid whose inputs are in the store, ready to submit.
pub struct Upload {
    /// The grid, naming its inputs by object key.
    pub grid: String,
    store: Store,
    farm: FarmClient<AuthChannel>,
}

pub async fn submit(args: &SubmitArgs) -> Result<String> {
    let upload = upload(args).await?;
    send(args, upload).await
}

/// Checks the grid and the token, then uploads the grid's inputs.
pub async fn upload(args: &SubmitArgs) -> Result<Upload> {
    // Checked here first, so that a bad grid uploads nothing.
    let text = read_grid_file(&args.grid)?;
    let mut farm = connect(&args.connection).await?;
    check_access(&mut farm).await?;
    let store = Store::open(&farm_store(&mut farm, &args.store).await?)?;
    let grid = upload_inputs(&args.grid, &text, &store).await?;
    Ok(Upload { grid, store, farm })
}

/// Submits an uploaded grid; prints and returns the new job's id.
pub async fn send(args: &SubmitArgs, upload: Upload) -> Result<String> {
    let Upload {
        grid,
        store,
        mut farm,
    } = upload;
    let name = args
        .grid
        .file_name()
        .map_or("grid.toml".into(), |n| n.to_string_lossy().into_owned());
    let request = pb::SubmitJobRequest {
        grid_toml: grid.clone(),
        grid_name: name,
        priority: args.priority,
        max_attempts: args.max_attempts.unwrap_or(0),
        preview_every: args.preview_every,
    };
    // A grid of many tasks takes the coordinator a while to expand and record.
    let reply = farm
        .submit_job(liveness::within(request, SUBMIT_DEADLINE))
        .await
        .map_err(status_error)?
        .into_inner();
    store
        .put(&layout::job_grid_key(&reply.job_id)?, grid)
        .await?;
    eprintln!("submitted job {} ({} tasks)", reply.job_id, reply.tasks);
    println!("{}", reply.job_id);
    Ok(reply.job_id)
}

fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state).unwrap_or(pb::JobState::Unspecified) {
        pb::JobState::Running => "running",
        pb::JobState::Done => "done",
        pb::JobState::Failed => "failed",
        pb::JobState::Cancelled => "cancelled",
        pb::JobState::Unspecified => "unknown",
    }
}

/// Where an object of `store` is, for people: a path for a directory store.
pub fn location(store: &str, key: &str) -> String {
    if store.contains("://") {
        format!("{}/{key}", store.trim_end_matches('/'))
    } else {
        Path::new(store).join(key).display().to_string()
    }
}

/// Progress as plain lines, for a log rather than a terminal: a line each time
/// another hundredth of the job's tasks (or, in a job of up to 100, another
/// task) has ended.
struct ProgressLines {
    started: Instant,
    shown: u64,
    /// Tasks that had ended when watching began: the pace is of those since.
    ended_before: Option<u64>,
}

impl ProgressLines {
    fn new() -> Self {
        ProgressLines {
            started: Instant::now(),
            shown: 0,
            ended_before: None,
        }
    }

    /// The line to print for `counts`, if one is due.
    fn line(&mut self, c: &pb::TaskCounts) -> Option<String> {
        let total = u64::from(c.queued + c.running + c.done + c.failed + c.cancelled);
        let ended = u64::from(c.done + c.failed + c.cancelled);
        let ended_before = *self.ended_before.get_or_insert(ended);
        let step = (total / 100).max(1);
        if ended == self.shown || (ended < self.shown + step && ended < total) {
            return None;
        }
        self.shown = ended;
        let since = ended - ended_before;
        let eta = match since {
            0 => String::new(),
            _ if ended == total => String::new(),
            _ => {
                let left = self
                    .started
                    .elapsed()
                    .mul_f64((total - ended) as f64 / since as f64);
                format!(", about {} left", HumanDuration(left))
            }
        };
        Some(format!(
            "{ended}/{total} tasks ended: {} done, {} running, {} failed, {} cancelled{eta}",
            c.done, c.running, c.failed, c.cancelled
        ))
    }
}

/// Follows a job until it ends, with a progress bar on a terminal (progress
/// lines otherwise), and says where each new preview is (`store`: the workers'
/// store). Fails if the job ended with failed or cancelled tasks.
pub async fn watch(connection: &Connection, store: &FarmStoreArg, job: &str) -> Result<()> {
    let mut farm = connect(connection).await?;
    let store = &farm_store(&mut farm, store).await?;
    let mut events = farm
        .watch_job(pb::WatchJobRequest {
            job_id: job.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks  {per_sec}  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let mut lines = (!std::io::stderr().is_terminal()).then(ProgressLines::new);
    let mut last = None;
    let mut latest_losses = String::new();
    let mut previews: BTreeMap<String, u32> = BTreeMap::new();
    while let Some(event) = events.message().await.map_err(status_error)? {
        if let Some(pb::job_event::Event::Progress(p)) = &event.event {
            let shown = previews.entry(p.task_id.clone()).or_default();
            if p.preview_iteration > *shown && !p.preview_key.is_empty() {
                *shown = p.preview_iteration;
                bar.suspend(|| {
                    eprintln!(
                        "preview of task {} at iteration {}: {}",
                        &p.task_id[..8.min(p.task_id.len())],
                        p.preview_iteration,
                        location(store, &p.preview_key)
                    )
                });
            }
            if let Some(l) = &p.latest {
                latest_losses = format!(
                    "  {} it {}/{}: content {:.3e} style {:.3e}",
                    &p.task_id[..8.min(p.task_id.len())],
                    p.iteration,
                    p.iterations,
                    l.content,
                    l.style
                );
            }
        }
        if let Some(pb::job_event::Event::Report(report)) = &event.event {
            // In the coordinator's store, which is not always the one given here.
            let store = Some(report.store.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(store);
            bar.suspend(|| match report.index_key.as_str() {
                "" => eprintln!("writing the report failed: {}", report.error),
                key => eprintln!("report: {}", location(store, key)),
            });
        }
        if let Some(pb::job_event::Event::TaskEnded(e)) = &event.event {
            previews.remove(&e.task_id);
            if e.outcome() == pb::TaskOutcome::Failed {
                bar.suspend(|| eprintln!("task {} failed: {}", e.task_id, e.message));
            }
        }
        if let Some(status) = event.status {
            let c = status.counts.unwrap_or_default();
            let total = c.queued + c.running + c.done + c.failed + c.cancelled;
            bar.set_length(total.into());
            bar.set_position((c.done + c.failed + c.cancelled).into());
            bar.set_message(format!(
                "running {}  failed {}{latest_losses}",
                c.running, c.failed
            ));
            if let Some(line) = lines.as_mut().and_then(|lines| lines.line(&c)) {
                eprintln!("{line}");
            }
            last = Some(status);
        }
    }
    bar.finish_and_clear();
    let status = last.context("the coordinator sent nothing")?;
    let c = status.counts.unwrap_or_default();
    let done = status.state() == pb::JobState::Done;
    let state = state_name(status.state);
    eprintln!(
        "job {} {state}: {} done, {} failed, {} cancelled",
        status.job_id, c.done, c.failed, c.cancelled
    );
    if !done {
        bail!("job {} ended {state}", status.job_id);
    }
    Ok(())
}

pub async fn status(args: &StatusArgs) -> Result<()> {
    let mut farm = connect(&args.connection).await?;
    let jobs = match &args.job {
        Some(job) => vec![farm
            .get_job(liveness::request(pb::GetJobRequest {
                job_id: job.clone(),
            }))
            .await
            .map_err(status_error)?
            .into_inner()],
        None => {
            farm.list_jobs(liveness::request(pb::ListJobsRequest {}))
                .await
                .map_err(status_error)?
                .into_inner()
                .jobs
        }
    };
    println!(
        "{:<32} {:<10} {:>7} {:>7} {:>7} {:>7} {:>9}",
        "JOB", "STATE", "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"
    );
    for job in jobs {
        let c = job.counts.unwrap_or_default();
        println!(
            "{:<32} {:<10} {:>7} {:>7} {:>7} {:>7} {:>9}",
            job.job_id,
            state_name(job.state),
            c.queued,
            c.running,
            c.done,
            c.failed,
            c.cancelled
        );
    }
    Ok(())
}

pub async fn cancel(args: &JobArgs) -> Result<()> {
    let mut farm = connect(&args.connection).await?;
    farm.cancel_job(liveness::request(pb::CancelJobRequest {
        job_id: args.job.clone(),
    }))
    .await
    .map_err(status_error)?;
    eprintln!("cancelled job {}", args.job);
    Ok(())
}

/// Forgets a job that has ended, and with `--results` removes its objects
/// from the store first (so that a failed removal can be run again).
pub async fn delete(args: &DeleteArgs) -> Result<()> {
    let mut farm = connect(&args.connection).await?;
    let request = pb::GetJobRequest {
        job_id: args.job.clone(),
    };
    let status = farm
        .get_job(liveness::request(request))
        .await
        .map_err(status_error)?
        .into_inner();
    // Refused before anything is removed.
    if status.state() == pb::JobState::Running {
        bail!(
            "job '{}' is still running: cancel it first (pastiche cancel {})",
            args.job,
            args.job
        );
    }
    if args.results {
        let store = Store::open(&farm_store(&mut farm, &args.store).await?)?;
        let prefix = layout::job_prefix(&args.job)?;
        let keys = store.list(&prefix).await?;
        for key in &keys {
            store.delete(key).await?;
        }
        eprintln!(
            "removed {} objects under {}/{prefix}",
            keys.len(),
            store.root()
        );
    }
    let request = pb::DeleteJobRequest {
        job_id: args.job.clone(),
    };
    farm.delete_job(liveness::request(request))
        .await
        .map_err(status_error)?;
    eprintln!("deleted job {}", args.job);
    Ok(())
}

/// Downloads a job's files (under `jobs/<job>/`) into `out`: its grid, its
/// report, and each finished task's record and result, the files of the attempt
/// the record names (see [`layout`]); other attempts' files, and checkpoints
/// left by tasks that did not finish, are left out.
pub async fn results(args: &ResultsArgs) -> Result<()> {
    let store = Store::open(&args.store.store)?;
    let prefix = layout::job_prefix(&args.job)?;
    let keys = store.list(&prefix).await?;
    if keys.is_empty() {
        bail!("no results for job '{}' in {}", args.job, store.root());
    }
    // The records first: they say which attempt's files to take.
    let (records, others): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|key| layout::record_of(&key[prefix.len()..]).is_some());
    let mut winners = std::collections::HashMap::new();
    let mut downloaded = 0;
    for key in records {
        let bytes = store.get(key).await?;
        let relative = &key[prefix.len()..];
        if let (Some(task), Some(winner)) = (
            layout::record_of(relative),
            FinishedTask::attempt_in(&bytes),
        ) {
            winners.insert(task.to_owned(), winner);
        }
        pastiche_engine::image_io::write_atomically(&args.out.join(relative), &bytes)?;
        downloaded += 1;
    }
    for key in others {
        let relative = &key[prefix.len()..];
        if layout::is_checkpoint(relative) {
            continue;
        }
        if let Some((task, attempt)) = layout::attempt_of(relative) {
            if winners.get(task) != Some(&attempt) {
                continue;
            }
        }
        let bytes = store.get(key).await?;
        pastiche_engine::image_io::write_atomically(&args.out.join(relative), &bytes)?;
        downloaded += 1;
    }
    eprintln!("downloaded {downloaded} files into {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(queued: u32, running: u32, done: u32, failed: u32) -> pb::TaskCounts {
        pb::TaskCounts {
            queued,
            running,
            done,
            failed,
            cancelled: 0,
        }
    }

    #[test]
    fn progress_lines_come_each_hundredth_of_a_job_and_at_its_end() {
        let mut lines = ProgressLines::new();
        assert_eq!(lines.line(&counts(1000, 0, 0, 0)), None);
        assert_eq!(lines.line(&counts(987, 4, 9, 0)), None);
        let line = lines.line(&counts(986, 4, 10, 0)).unwrap();
        assert!(
            line.starts_with(
                "10/1000 tasks ended: 10 done, 4 running, 0 failed, 0 cancelled, about "
            ),
            "{line}"
        );
        assert_eq!(lines.line(&counts(980, 1, 19, 0)), None);
        assert_eq!(
            lines.line(&counts(0, 0, 999, 1)).unwrap(),
            "1000/1000 tasks ended: 999 done, 0 running, 1 failed, 0 cancelled"
        );
        assert_eq!(lines.line(&counts(0, 0, 999, 1)), None, "once");
        // Watching a job under way: the pace is of the tasks since.
        let mut lines = ProgressLines::new();
        assert_eq!(
            lines
                .line(&counts(500, 0, 500, 0))
                .as_deref()
                .map(|l| l.contains("left")),
            Some(false)
        );
        assert!(lines
            .line(&counts(490, 0, 510, 0))
            .unwrap()
            .contains("left"));
        // Up to a hundred tasks: a line for each.
        let mut lines = ProgressLines::new();
        assert!(lines
            .line(&counts(2, 0, 1, 0))
            .unwrap()
            .starts_with("1/3 tasks ended"));
        assert!(lines
            .line(&counts(1, 0, 1, 1))
            .unwrap()
            .starts_with("2/3 tasks ended"));
    }
}
