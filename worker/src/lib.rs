//! A farm worker: one process, one device. It registers with the coordinator,
//! leases a task, renders it on its engine thread while a [`heartbeat`] renews
//! the lease and reports the losses, stores the result so that no other attempt
//! can change it ([`result`]), and only then reports the task complete.
//!
//! What fails for a while is waited out ([`patience`]); what fails for good is
//! reported with whose fault it was ([`pb::Failure`]): a bad input fails its
//! task at once, a store outage blames no worker.

pub mod engine_thread;
pub mod heartbeat;
pub mod inputs;
pub mod metrics;
pub mod patience;
mod refused;
pub mod result;
pub mod supervisor;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use engine_thread::{EngineThread, RenderJob, RenderOutput};
use heartbeat::Heartbeat;
use inputs::{InputCache, InputError};
use pastiche_engine::spec::layout;
use pastiche_engine::spec::{Init, LossRecord, RenderParams, Style};
use pastiche_engine::Checkpoint;
use pastiche_proto::liveness;
use pastiche_proto::pb;
use pastiche_proto::pb::workers_client::WorkersClient;
use pastiche_proto::security::{AuthChannel, ClientSecurity};
use pastiche_spec::store::Store;
use pastiche_spec::{unix_now, FinishedTask, TaskInputs};
use patience::{retrying_rpc, COMPLETE_PATIENCE, REPORT_PATIENCE};
use result::Stored;
use tokio::sync::{oneshot, watch};

use refused::refused;
pub use refused::TokenRefused;

/// Downloaded inputs kept for later tasks, by default (`--input-cache-mib`): a
/// few backbones' weights and many images.
pub const DEFAULT_INPUT_CACHE_MIB: u64 = 8192;

/// How long a lease request waits for work before asking again.
const LEASE_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `http://host:port` of the coordinator.
    pub coordinator: String,
    pub store: String,
    /// `cpu`, `cuda:N` or `auto`.
    pub device: String,
    /// Stable name (the coordinator adds a per-registration suffix).
    pub name: String,
    /// Benchmarks only: do no torch work; each task takes this long, then stores
    /// placeholder outputs.
    pub stand_in: Option<Duration>,
    /// How long to wait for an unreachable coordinator at start-up.
    pub connect_timeout: Duration,
    /// TLS trust and the token for the coordinator.
    pub security: ClientSecurity,
    /// Bytes of downloaded inputs kept for later tasks.
    pub input_cache_bytes: u64,
    /// Store a checkpoint of the task's render every this many iterations (0:
    /// only when giving a task back); see [`layout::checkpoint_key`].
    pub checkpoint_every: u32,
}

/// How long a worker giving its task back waits for the render's last
/// checkpoint to be taken and stored before it gives up on it (the next
/// attempt then resumes from an earlier one, or starts over).
const PARTING_CHECKPOINT_PATIENCE: Duration = Duration::from_secs(60);

/// What renders a task: the engine, or the benchmark stand-in.
enum Renderer {
    Engine(EngineThread),
    StandIn(Duration),
}

struct Worker {
    client: WorkersClient<AuthChannel>,
    store: Store,
    renderer: Renderer,
    device_name: String,
    id: String,
    lease_timeout: Duration,
    inputs: InputCache,
    checkpoint_every: u32,
    /// The render in progress, if any.
    current: Option<Current>,
}

/// What the worker holds of the render in progress.
struct Current {
    /// Stops the render within one iteration...
    cancel: Arc<AtomicBool>,
    /// ...after a checkpoint, where this is set too.
    give_back: Arc<AtomicBool>,
    /// The render's checkpoints (the latest), ending when the render does.
    checkpoints: watch::Receiver<Option<Arc<Checkpoint>>>,
    /// The iteration of the latest checkpoint stored.
    stored: Arc<AtomicU32>,
}

/// Why an attempt failed, as the coordinator is told.
struct Failed {
    failure: pb::Failure,
    error: String,
}

impl Failed {
    /// The task is at fault: it would fail anywhere.
    fn task(error: impl std::fmt::Display) -> Failed {
        Failed {
            failure: pb::Failure::Task,
            error: error.to_string(),
        }
    }

    fn worker(error: impl std::fmt::Display) -> Failed {
        Failed {
            failure: pb::Failure::Worker,
            error: error.to_string(),
        }
    }

    /// The store or network, for longer than the worker waited.
    fn transient(error: impl std::fmt::Display) -> Failed {
        Failed {
            failure: pb::Failure::Transient,
            error: error.to_string(),
        }
    }
}

impl From<InputError> for Failed {
    fn from(err: InputError) -> Failed {
        match err {
            InputError::Bad(_) => Failed::task(err),
            InputError::Store(_) => Failed::transient(err),
            InputError::Local { .. } => Failed::worker(err),
        }
    }
}

/// How a task ended, as far as this worker is concerned.
enum Outcome {
    Rendered(RenderOutput),
    Failed(Failed),
    /// The job was cancelled while rendering.
    Cancelled,
    /// The lease went to another worker: store nothing, report nothing.
    Stale,
}

/// Runs until `shutdown` resolves. A task in progress is then given back so that
/// another worker picks it up at once.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let store = Store::open(&config.store)?;
    let (renderer, device_name) = match config.stand_in {
        Some(duration) => (Renderer::StandIn(duration), "stand-in".to_owned()),
        None => {
            let (engine, name) = EngineThread::start(&config.device)?;
            (Renderer::Engine(engine), name)
        }
    };
    let channel = config
        .security
        .endpoint(&config.coordinator)?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = WorkersClient::new(config.security.authorize(channel));
    let registered = register(&mut client, &config, &device_name, &store).await?;
    tracing::info!(worker = %registered.worker_id, device = %device_name, "worker registered");
    let mut worker = Worker {
        lease_timeout: Duration::from_millis(registered.lease_timeout_ms.max(100).into()),
        id: registered.worker_id,
        client,
        store,
        renderer,
        device_name,
        inputs: InputCache::new(config.input_cache_bytes)
            .context("creating the input cache's directory")?,
        checkpoint_every: config.checkpoint_every,
        current: None,
    };
    tokio::pin!(shutdown);
    let mut refusal = None;
    loop {
        let request = pb::LeaseRequest {
            worker_id: worker.id.clone(),
            wait_ms: LEASE_WAIT.as_millis() as u32,
        };
        // The coordinator holds a lease request up to its wait; the deadline
        // allows for that, and then for a reply that is merely slow.
        let request = liveness::within(request, LEASE_WAIT + liveness::CALL_DEADLINE);
        let lease = tokio::select! {
            _ = &mut shutdown => break,
            lease = worker.client.lease(request) => lease,
        };
        let task = match lease {
            Ok(reply) => match reply.into_inner().task {
                Some(task) => task,
                None => continue,
            },
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                // The token changed under us: stop as on a shutdown, then say why.
                refusal = Some(refused(&config.coordinator, &status));
                break;
            }
            Err(status) => {
                // The coordinator restarting, or briefly unreachable: try again.
                tracing::warn!(error = %status.message(), code = ?status.code(), "lease failed; retrying");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let finished = tokio::select! {
            _ = worker.work_on(task.clone()) => true,
            _ = &mut shutdown => false,
        };
        if !finished {
            // Stop the render after a checkpoint, store it, and give the task
            // back: the next worker gets it without waiting for the lease to
            // expire, and carries on where this one stopped.
            if let Some(current) = worker.current.take() {
                current.give_back.store(true, Ordering::Relaxed);
                current.cancel.store(true, Ordering::Relaxed);
                worker.store_parting_checkpoint(&task, current).await;
            }
            worker.give_back(&task).await;
            break;
        }
    }
    if let Renderer::Engine(engine) = worker.renderer {
        // Within one iteration of the cancel above.
        engine.stop();
    }
    tracing::info!(worker = %worker.id, "worker stopped");
    refusal.map_or(Ok(()), Err)
}

async fn register(
    client: &mut WorkersClient<AuthChannel>,
    config: &WorkerConfig,
    device_name: &str,
    store: &Store,
) -> Result<pb::RegisterResponse> {
    let request = pb::RegisterRequest {
        name: config.name.clone(),
        device: config.device.clone(),
        device_name: device_name.to_owned(),
        device_memory_bytes: 0,
        store: store.location(),
    };
    // A coordinator that is starting (or restarting) is waited for, up to a point.
    let reply = retrying_rpc(config.connect_timeout, "registering", || {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.register(liveness::request(request)).await }
    })
    .await;
    match reply {
        Ok(reply) => Ok(reply.into_inner()),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            Err(refused(&config.coordinator, &status))
        }
        Err(status) => anyhow::bail!(
            "cannot register with the coordinator at {}: {}",
            config.coordinator,
            status.message()
        ),
    }
}

impl Worker {
    async fn work_on(&mut self, task: pb::TaskAssignment) {
        let started = unix_now();
        let clock = Instant::now();
        tracing::info!(job = %task.job_id, task = %task.task_id, attempt = task.attempt, "task leased");
        let mut heartbeat = Heartbeat::start(
            self.client.clone(),
            self.task_ref(&task),
            self.beat_period(),
        );
        // An earlier attempt may have stored the result and then not been able
        // to say so (its worker died, or the coordinator restarted): nothing to render.
        if let Ok(Some(winner)) = result::stored(&self.store, &task.job_id, &task.task_id).await {
            tracing::info!(job = %task.job_id, task = %task.task_id, winner = winner.attempt, "the task's result is stored already");
            self.delete_checkpoint(&task).await;
            self.report_complete(&task).await;
            metrics::task_ended("done", clock.elapsed());
            return;
        }
        let outcome = self.render(&task, &mut heartbeat).await;
        // Whichever way the render ended, none is in progress any more: a
        // give-back from here on has no checkpoint to take.
        self.current = None;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(failed) => Outcome::Failed(failed),
        };
        let outcome = match outcome {
            Outcome::Rendered(output) => {
                metrics::rendered(&output);
                self.store_result(&task, &mut heartbeat, output, started)
                    .await
            }
            other => other,
        };
        let ended = match outcome {
            Outcome::Rendered(_) => {
                self.delete_checkpoint(&task).await;
                self.report_complete(&task).await;
                "done"
            }
            Outcome::Failed(failed) => {
                self.report_failure(&task, failed).await;
                "failed"
            }
            Outcome::Cancelled => {
                self.acknowledge_cancel(&task).await;
                "cancelled"
            }
            Outcome::Stale => {
                tracing::info!(job = %task.job_id, task = %task.task_id, "lease lost to another worker; result dropped");
                "stale"
            }
        };
        metrics::task_ended(ended, clock.elapsed());
    }

    /// Fetches the task's inputs and renders it, heartbeating throughout.
    async fn render(
        &mut self,
        task: &pb::TaskAssignment,
        heartbeat: &mut Heartbeat,
    ) -> Result<Outcome, Failed> {
        let params = task_params(task)?;
        if let Renderer::StandIn(duration) = &self.renderer {
            tokio::select! {
                _ = tokio::time::sleep(*duration) => {}
                directive = heartbeat.stopped() => return Ok(stopped(directive)),
            }
            return Ok(Outcome::Rendered(stand_in_output(&params)));
        }
        let fetching = async {
            let fetched = self.fetch_inputs(task, params).await?;
            Ok::<_, Failed>((fetched, self.load_checkpoint(task).await))
        };
        let ((content, style, params, weights), resume) = tokio::select! {
            fetched = fetching => fetched?,
            directive = heartbeat.stopped() => return Ok(stopped(directive)),
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let give_back = Arc::new(AtomicBool::new(false));
        let (progress_tx, mut progress) = watch::channel(None);
        let (previews_tx, mut previews) = watch::channel(None);
        let (checkpoints_tx, mut checkpoints) = watch::channel(None);
        let stored = Arc::new(AtomicU32::new(resume.as_ref().map_or(0, |c| c.iteration)));
        self.current = Some(Current {
            cancel: Arc::clone(&cancel),
            give_back: Arc::clone(&give_back),
            checkpoints: checkpoints.clone(),
            stored: Arc::clone(&stored),
        });
        let (reply, mut result) = oneshot::channel();
        let Renderer::Engine(engine) = &self.renderer else {
            unreachable!("the stand-in returned above")
        };
        engine.submit(RenderJob {
            params: params.clone(),
            content,
            style,
            weights,
            cancel: Arc::clone(&cancel),
            progress: progress_tx,
            preview_every: task.preview_every,
            previews: previews_tx,
            resume,
            label: task.task_id.clone(),
            checkpoint_every: self.checkpoint_every,
            give_back,
            checkpoints: checkpoints_tx,
            reply,
        });
        heartbeat.report(|p| p.iterations = params.total_iterations());
        let mut stop: Option<Outcome> = None;
        loop {
            tokio::select! {
                finished = &mut result => {
                    self.current = None;
                    let finished = finished.map_err(|_| Failed::worker("the engine thread stopped"))?;
                    heartbeat.report(|p| p.iterations = 0);
                    return Ok(match (stop, finished) {
                        (Some(why), _) => why,
                        (None, Ok(output)) => Outcome::Rendered(output),
                        (None, Err(err)) if err.is_retryable() => Outcome::Failed(Failed::worker(err)),
                        (None, Err(err)) => Outcome::Failed(Failed::task(err)),
                    });
                }
                directive = heartbeat.stopped(), if stop.is_none() => {
                    stop = Some(stopped(directive));
                    cancel.store(true, Ordering::Relaxed);
                }
                Ok(()) = progress.changed() => {
                    let latest = *progress.borrow_and_update();
                    if let Some((iteration, losses)) = latest {
                        heartbeat.report(|p| {
                            p.iteration = iteration;
                            p.latest = Some(losses);
                        });
                    }
                }
                Ok(()) = checkpoints.changed(), if stop.is_none() => {
                    let latest = checkpoints.borrow_and_update().clone();
                    if let Some(checkpoint) = latest {
                        self.store_checkpoint(task, checkpoint, &stored).await;
                    }
                }
                Ok(()) = previews.changed(), if stop.is_none() => {
                    let preview = previews.borrow_and_update().clone();
                    if let Some((iteration, png)) = preview {
                        let key = layout::preview_key(&task.job_id, &task.task_id)
                            .map_err(Failed::task)?;
                        match self.store.put(&key, png).await {
                            Ok(()) => heartbeat.report(|p| p.preview_iteration = iteration),
                            Err(err) => tracing::warn!(error = %err, %key, "storing a preview failed"),
                        }
                    }
                }
            }
        }
    }

    /// The task's inputs as local files, with `params` naming its starting
    /// image's local copy.
    async fn fetch_inputs(
        &mut self,
        task: &pb::TaskAssignment,
        mut params: RenderParams,
    ) -> Result<
        (
            std::path::PathBuf,
            Style,
            RenderParams,
            Option<std::path::PathBuf>,
        ),
        Failed,
    > {
        let style = Style::parse(&task.style_key)
            .map_err(|e| Failed::task(format!("task {}: {e}", task.task_id)))?;
        let start = match &params.init {
            Init::Image(path) => Some(path.to_string_lossy().into_owned()),
            _ => None,
        };
        // Every input of this task, which making room for another must not drop.
        let mut keys = vec![task.content_key.clone()];
        keys.extend(style.images().map(|(key, _)| key.to_owned()));
        keys.extend(start.clone());
        keys.extend(Some(task.weights.clone()).filter(|w| !w.is_empty()));

        let content = self.fetch(&task.content_key, &keys).await?;
        // Each image of a blend is fetched like a single style.
        let mut local = std::collections::HashMap::new();
        for (key, _) in style.images() {
            local.insert(key.to_owned(), self.fetch(key, &keys).await?);
        }
        let style = style.map_images(|key| local[key].display().to_string());
        if let Some(start) = start {
            params.init = Init::Image(self.fetch(&start, &keys).await?);
        }
        let weights = match task.weights.as_str() {
            "" => None,
            weights => Some(self.fetch(weights, &keys).await?),
        };
        Ok((content, style, params, weights))
    }

    async fn fetch(&mut self, key: &str, keep: &[String]) -> Result<std::path::PathBuf, Failed> {
        Ok(self.inputs.fetch(&self.store, key, keep).await?)
    }

    /// The task's latest checkpoint, if an earlier attempt stored one that
    /// reads back whole. One that does not (damaged, another version's, or
    /// unreadable for now) is ignored with a warning: the render starts over.
    async fn load_checkpoint(&self, task: &pb::TaskAssignment) -> Option<Checkpoint> {
        let key = layout::checkpoint_key(&task.job_id, &task.task_id).ok()?;
        let bytes = match self.store.get(&key).await {
            Ok(bytes) => bytes,
            Err(pastiche_spec::store::StoreError::NotFound { .. }) => return None,
            Err(err) => {
                tracing::warn!(%key, error = %err, "cannot read the task's checkpoint; starting over");
                return None;
            }
        };
        let read = tokio::task::spawn_blocking(move || Checkpoint::from_bytes(&bytes)).await;
        match read {
            Ok(Ok(checkpoint)) if checkpoint.label == task.task_id => Some(checkpoint),
            Ok(Ok(checkpoint)) => {
                tracing::warn!(%key, label = %checkpoint.label, "ignoring a checkpoint of another task; starting over");
                None
            }
            Ok(Err(err)) => {
                tracing::warn!(%key, error = %err, "ignoring the task's checkpoint; starting over");
                None
            }
            Err(join) => {
                tracing::warn!(%key, error = %join, "reading the task's checkpoint failed; starting over");
                None
            }
        }
    }

    /// Stores `checkpoint` as the task's latest, unless one as recent is
    /// stored already. A checkpoint that cannot be stored is a warning: the
    /// render goes on, and a later attempt resumes from an earlier one.
    async fn store_checkpoint(
        &self,
        task: &pb::TaskAssignment,
        checkpoint: Arc<Checkpoint>,
        stored: &AtomicU32,
    ) {
        let iteration = checkpoint.iteration;
        if iteration <= stored.load(Ordering::Relaxed) {
            return;
        }
        let Ok(key) = layout::checkpoint_key(&task.job_id, &task.task_id) else {
            return;
        };
        // Serialising (and hashing) copies every byte: off the async threads.
        let bytes = match tokio::task::spawn_blocking(move || checkpoint.to_bytes()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "writing a checkpoint failed");
                return;
            }
            Err(join) => {
                tracing::warn!(error = %join, "writing a checkpoint failed");
                return;
            }
        };
        let size = bytes.len();
        match self.store.put(&key, bytes).await {
            Ok(()) => {
                stored.store(iteration, Ordering::Relaxed);
                tracing::info!(job = %task.job_id, task = %task.task_id, iteration, bytes = size, "checkpoint stored");
            }
            Err(err) => tracing::warn!(%key, error = %err, "storing a checkpoint failed"),
        }
    }

    /// On the way out: waits for the render (stopping, see [`run`]) to end
    /// and stores its last checkpoint, within [`PARTING_CHECKPOINT_PATIENCE`].
    async fn store_parting_checkpoint(&self, task: &pb::TaskAssignment, current: Current) {
        let Current {
            mut checkpoints,
            stored,
            ..
        } = current;
        let parting = async {
            // The render's job, and with it the sender, is dropped when it ends.
            while checkpoints.changed().await.is_ok() {}
            let latest = checkpoints.borrow().clone();
            if let Some(checkpoint) = latest {
                self.store_checkpoint(task, checkpoint, &stored).await;
            }
        };
        if tokio::time::timeout(PARTING_CHECKPOINT_PATIENCE, parting)
            .await
            .is_err()
        {
            tracing::warn!(job = %task.job_id, task = %task.task_id, "no checkpoint stored on the way out: it took too long");
        }
    }

    /// Removes the task's checkpoint once its result is stored. One left
    /// behind is only litter (`pastiche delete --results` removes it).
    async fn delete_checkpoint(&self, task: &pb::TaskAssignment) {
        let Ok(key) = layout::checkpoint_key(&task.job_id, &task.task_id) else {
            return;
        };
        if let Err(err) = self.store.delete(&key).await {
            tracing::warn!(%key, error = %err, "deleting the task's checkpoint failed");
        }
    }

    /// Often enough to renew the lease with room to spare, and for watchers to
    /// see the losses move.
    fn beat_period(&self) -> Duration {
        (self.lease_timeout / 3).min(Duration::from_secs(2))
    }

    /// Stores a rendered task's result, fenced (see [`result`]): nothing if
    /// the lease is lost, and never over another attempt's. The outcome to
    /// report: `Rendered` when the task's result is stored (this attempt's or
    /// another's).
    async fn store_result(
        &self,
        task: &pb::TaskAssignment,
        heartbeat: &mut Heartbeat,
        output: RenderOutput,
        started: f64,
    ) -> Outcome {
        match heartbeat.check().await {
            pb::Directive::Stale => return Outcome::Stale,
            pb::Directive::Cancel => return Outcome::Cancelled,
            pb::Directive::Continue | pb::Directive::Unspecified => {}
        }
        let record = match self.record(task, &output, started) {
            Ok(record) => record,
            Err(failed) => return Outcome::Failed(failed),
        };
        let (png, csv) = (
            bytes::Bytes::from(output.png.clone()),
            bytes::Bytes::from(output.losses_csv.clone()),
        );
        let stored = patience::retrying(
            patience::STORE_PATIENCE,
            "storing the result",
            result::ResultError::may_pass,
            || result::store(&self.store, &record, png.clone(), csv.clone()),
        )
        .await;
        match stored {
            Ok(Stored::Won) => Outcome::Rendered(output),
            Ok(Stored::Lost { winner }) => {
                tracing::info!(job = %task.job_id, task = %task.task_id, winner, "another attempt stored the task's result first; this one's was dropped");
                Outcome::Rendered(output)
            }
            Err(err) => Outcome::Failed(Failed::transient(format!("storing the result: {err}"))),
        }
    }

    /// The task's `task.json`, as this attempt made it.
    fn record(
        &self,
        task: &pb::TaskAssignment,
        output: &RenderOutput,
        started: f64,
    ) -> Result<FinishedTask, Failed> {
        Ok(FinishedTask {
            job: task.job_id.clone(),
            task: task.task_id.clone(),
            attempt: task.attempt,
            params: task_params(task)?,
            inputs: TaskInputs {
                content: task.content_key.clone(),
                style: task.style_key.clone(),
                weights: task.weights.clone(),
            },
            worker: self.id.clone(),
            device: self.device_name.clone(),
            started_at: started,
            finished_at: unix_now(),
            render_seconds: output.elapsed.as_secs_f64(),
            losses: output.losses.last().copied(),
            chosen_style_weight: output.chosen_style_weight,
            stopped_at: output.stopped_at,
            resumed_from: output.resumed_from,
        })
    }

    /// What each report on `task` names it by.
    fn task_ref(&self, task: &pb::TaskAssignment) -> pb::TaskRef {
        pb::TaskRef {
            worker_id: self.id.clone(),
            job_id: task.job_id.clone(),
            task_id: task.task_id.clone(),
            attempt: task.attempt,
        }
    }

    async fn report_complete(&self, task: &pb::TaskAssignment) {
        let request = pb::CompleteRequest {
            task: Some(self.task_ref(task)),
        };
        let accepted = self
            .report_end(COMPLETE_PATIENCE, request, |mut client, request| async move {
                client.complete(liveness::request(request)).await
            })
            .await;
        match accepted {
            Some(true) => tracing::info!(job = %task.job_id, task = %task.task_id, "task done"),
            Some(false) => {
                tracing::info!(job = %task.job_id, task = %task.task_id, "completion was stale")
            }
            // The lease will expire, and the next attempt finds the stored
            // result and reports it.
            None => {}
        }
    }

    async fn report_failure(&self, task: &pb::TaskAssignment, failed: Failed) {
        let Failed { failure, error } = failed;
        tracing::warn!(job = %task.job_id, task = %task.task_id, ?failure, %error, "task failed");
        let request = pb::FailRequest {
            task: Some(self.task_ref(task)),
            failure: failure.into(),
            error,
        };
        self.report_end(REPORT_PATIENCE, request, |mut client, request| async move {
            client.fail(liveness::request(request)).await
        })
        .await;
    }

    /// Says that the render stopped when the coordinator said the job was cancelled.
    async fn acknowledge_cancel(&self, task: &pb::TaskAssignment) {
        tracing::info!(job = %task.job_id, task = %task.task_id, "task cancelled");
        let request = pb::AcknowledgeCancelRequest {
            task: Some(self.task_ref(task)),
        };
        self.report_end(REPORT_PATIENCE, request, |mut client, request| async move {
            client.acknowledge_cancel(liveness::request(request)).await
        })
        .await;
    }

    /// Hands the task back on the way out: another worker gets it at once, and
    /// it uses up none of its attempts.
    async fn give_back(&self, task: &pb::TaskAssignment) {
        tracing::info!(job = %task.job_id, task = %task.task_id, "giving the task back");
        let request = pb::GiveBackRequest {
            task: Some(self.task_ref(task)),
        };
        self.report_end(REPORT_PATIENCE, request, |mut client, request| async move {
            client.give_back(liveness::request(request)).await
        })
        .await;
    }

    /// Tells the coordinator how a task ended with `call`, one of its task-report
    /// RPCs, retrying what may pass (see [`patience::passes`]) for `patience`.
    /// Whether it accepted the report; none if it could not be told.
    async fn report_end<R, Reply>(
        &self,
        patience: Duration,
        request: R,
        call: impl Fn(WorkersClient<AuthChannel>, R) -> Reply,
    ) -> Option<bool>
    where
        R: Clone,
        Reply: std::future::Future<
            Output = Result<tonic::Response<pb::TaskReportResponse>, tonic::Status>,
        >,
    {
        let reply = retrying_rpc(patience, "reporting how the task ended", || {
            call(self.client.clone(), request.clone())
        })
        .await;
        match reply {
            Ok(reply) => Some(reply.into_inner().accepted),
            Err(status) => {
                tracing::warn!(error = %status.message(), "reporting how the task ended failed");
                None
            }
        }
    }
}

/// A leased task's parameters; ones this worker cannot read are the task's fault.
fn task_params(task: &pb::TaskAssignment) -> Result<RenderParams, Failed> {
    let params = task
        .params
        .clone()
        .ok_or_else(|| Failed::task("task without parameters"))?;
    params.try_into().map_err(Failed::task)
}

/// The outcome of a render the coordinator stopped.
fn stopped(directive: pb::Directive) -> Outcome {
    match directive {
        pb::Directive::Cancel => Outcome::Cancelled,
        _ => Outcome::Stale,
    }
}

/// The benchmark stand-in's outputs: a 1x1 PNG and a one-row loss log.
fn stand_in_output(params: &RenderParams) -> RenderOutput {
    const ONE_PIXEL_PNG: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90,
        0x77, 0x53, 0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x08, 0xd7, 0x63, 0xf8,
        0xcf, 0xc0, 0x00, 0x00, 0x03, 0x01, 0x01, 0x00, 0x18, 0xdd, 0x8d, 0xb0, 0x00, 0x00, 0x00,
        0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    let record = LossRecord {
        iteration: params.total_iterations(),
        content: 0.0,
        style: 0.0,
        tv: 0.0,
        total: 0.0,
    };
    RenderOutput {
        png: ONE_PIXEL_PNG.to_vec(),
        losses_csv: format!(
            "{}\n{}\n",
            pastiche_engine::spec::LOSSES_CSV_HEADER,
            record.to_csv_row()
        ),
        losses: vec![record],
        chosen_style_weight: params.style_weight.is_auto().then_some(1.0),
        stopped_at: None,
        resumed_from: None,
        elapsed: Duration::ZERO,
    }
}
