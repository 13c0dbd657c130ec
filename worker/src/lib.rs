//! A farm worker: one process, one device. It registers with the coordinator,
//! leases a task, renders it on its engine thread while heartbeating the latest
//! losses, stores `pastiche.png`, `losses.csv` and `task.json`, and only then
//! reports the task complete.

pub mod engine_thread;
pub mod metrics;
mod refused;
pub mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use engine_thread::{EngineThread, RenderJob, RenderOutput};
use pastiche_engine::spec::layout;
use pastiche_engine::spec::{LossRecord, RenderParams, Style};
use pastiche_proto::pb;
use pastiche_proto::pb::workers_client::WorkersClient;
use pastiche_proto::security::{AuthChannel, ClientSecurity};
use pastiche_spec::store::Store;
use pastiche_spec::{unix_now, FinishedTask, Init, TaskInputs};
use tokio::sync::{oneshot, watch};

use refused::refused;
pub use refused::TokenRefused;

/// How long a lease request waits for work before asking again.
const LEASE_WAIT_MS: u32 = 20_000;

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
}

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
    scratch: tempfile::TempDir,
    /// The cancel flag of the render in progress, if any.
    current_cancel: Option<Arc<AtomicBool>>,
}

/// How a task ended, as far as this worker is concerned.
enum Outcome {
    Rendered(RenderOutput),
    Failed {
        retryable: bool,
        error: String,
    },
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
        scratch: tempfile::tempdir().context("creating a scratch directory")?,
        current_cancel: None,
    };
    tokio::pin!(shutdown);
    let mut refusal = None;
    loop {
        let lease = tokio::select! {
            _ = &mut shutdown => break,
            lease = worker.client.lease(pb::LeaseRequest { worker_id: worker.id.clone(), wait_ms: LEASE_WAIT_MS }) => lease,
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
            // Stop the render, and give the task back: the next worker gets it
            // without waiting for the lease to expire.
            if let Some(cancel) = worker.current_cancel.take() {
                cancel.store(true, Ordering::Relaxed);
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
    let reply = while_unavailable(config.connect_timeout, "registering", || {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.register(request).await }
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
        let outcome = match self.render(&task).await {
            Ok(outcome) => outcome,
            Err(err) => Outcome::Failed {
                retryable: true,
                error: format!("{err:#}"),
            },
        };
        let ended = match outcome {
            Outcome::Rendered(output) => {
                metrics::rendered(&output);
                match self
                    .renewing(&task, self.store_outputs(&task, &output, started))
                    .await
                {
                    Ok(()) => {
                        self.report_complete(&task).await;
                        "done"
                    }
                    Err(err) => {
                        self.report_failure(&task, true, &format!("storing the results: {err:#}"))
                            .await;
                        "failed"
                    }
                }
            }
            Outcome::Failed { retryable, error } => {
                self.report_failure(&task, retryable, &error).await;
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

    async fn render(&mut self, task: &pb::TaskAssignment) -> Result<Outcome> {
        let params: RenderParams = task
            .params
            .clone()
            .context("task without parameters")?
            .try_into()?;
        if let Renderer::StandIn(duration) = &self.renderer {
            tokio::time::sleep(*duration).await;
            return Ok(Outcome::Rendered(stand_in_output(&params)));
        }
        let (content, style, params, weights) = self
            .renewing(task, async {
                let content = self.fetch(&task.content_key).await?;
                // Each image of a blend is fetched like a single style.
                let mut style = Style::parse(&task.style_key)
                    .map_err(|e| anyhow::anyhow!("task {}: {e}", task.task_id))?;
                let mut local = std::collections::HashMap::new();
                for (key, _) in style.images() {
                    local.insert(key.to_owned(), self.fetch(key).await?);
                }
                style = style.map_images(|key| local[key].display().to_string());
                // A starting image was uploaded with the grid, like the content and style.
                let mut params = params;
                if let Init::Image(path) = &params.init {
                    let key = path.to_string_lossy();
                    if layout::is_stored(&key) {
                        params.init = Init::Image(self.fetch(&key).await?);
                    }
                }
                let weights = match task.weights.as_str() {
                    "" => None,
                    w if layout::is_stored(w) => Some(self.fetch(w).await?),
                    local => Some(PathBuf::from(local)),
                };
                anyhow::Ok((content, style, params, weights))
            })
            .await?;
        let cancel = Arc::new(AtomicBool::new(false));
        self.current_cancel = Some(Arc::clone(&cancel));
        let (progress_tx, progress) = watch::channel(None);
        let (previews_tx, mut previews) = watch::channel(None);
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
            reply,
        });

        // Heartbeat while the engine works: renew the lease, report the losses, and
        // learn whether to stop.
        let mut beats = tokio::time::interval(self.beat_period());
        beats.tick().await;
        let mut stop: Option<Outcome> = None;
        // The iteration of the preview last stored, for heartbeats (0: none).
        let mut preview_iteration = 0;
        loop {
            tokio::select! {
                finished = &mut result => {
                    let finished = finished.map_err(|_| anyhow::anyhow!("the engine thread stopped"))?;
                    return Ok(match (stop, finished) {
                        (Some(why), _) => why,
                        (None, Ok(output)) => Outcome::Rendered(output),
                        (None, Err(err)) => Outcome::Failed { retryable: err.is_retryable(), error: err.to_string() },
                    });
                }
                _ = beats.tick(), if stop.is_none() => {
                    let latest: Option<(u32, LossRecord)> = *progress.borrow();
                    let request = pb::HeartbeatRequest {
                        task: Some(self.task_ref(task)),
                        iteration: latest.map_or(0, |(i, _)| i),
                        iterations: params.iterations,
                        latest: latest.map(|(_, l)| (&l).into()),
                        preview_iteration,
                    };
                    match self.client.heartbeat(request).await.map(|r| r.into_inner().directive()) {
                        Ok(pb::Directive::Cancel) => stop = Some(Outcome::Cancelled),
                        Ok(pb::Directive::Stale) => stop = Some(Outcome::Stale),
                        Ok(_) => {}
                        Err(status) => tracing::warn!(error = %status.message(), "heartbeat failed"),
                    }
                    if stop.is_some() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                Ok(()) = previews.changed(), if stop.is_none() => {
                    let preview = previews.borrow_and_update().clone();
                    if let Some((iteration, png)) = preview {
                        let key = layout::preview_key(&task.job_id, &task.task_id)?;
                        match self.store.put(&key, png).await {
                            Ok(()) => preview_iteration = iteration,
                            Err(err) => tracing::warn!(error = %err, %key, "storing a preview failed"),
                        }
                    }
                }
            }
        }
    }

    /// Often enough to renew the lease with room to spare, and for watchers to
    /// see the losses move.
    fn beat_period(&self) -> Duration {
        (self.lease_timeout / 3).min(Duration::from_secs(2))
    }

    /// Runs `work` (fetching the inputs, storing the outputs) with heartbeats
    /// that keep the lease: a large download or a slow store must not let it
    /// expire. What the replies say is acted on at the next heartbeat of the
    /// render, or when the task is reported.
    async fn renewing<T>(
        &self,
        task: &pb::TaskAssignment,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let mut client = self.client.clone();
        let beat = pb::HeartbeatRequest {
            task: Some(self.task_ref(task)),
            ..Default::default()
        };
        let mut beats = tokio::time::interval(self.beat_period());
        beats.tick().await;
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = beats.tick() => {
                    if let Err(status) = client.heartbeat(beat.clone()).await {
                        tracing::warn!(error = %status.message(), "heartbeat failed");
                    }
                }
            }
        }
    }

    /// Downloads an input into the scratch directory (once per worker).
    async fn fetch(&self, key: &str) -> Result<PathBuf> {
        let local = self.scratch.path().join(key.replace(['/', ':'], "_"));
        if !local.exists() {
            let bytes = match key.strip_prefix("s3://") {
                Some(_) => {
                    let (root, object) = key.rsplit_once('/').context("bad weights URL")?;
                    Store::open(root)?.get(object).await?
                }
                None => self.store.get(key).await?,
            };
            write_file(&local, &bytes).await?;
        }
        Ok(local)
    }

    async fn store_outputs(
        &self,
        task: &pb::TaskAssignment,
        output: &RenderOutput,
        started: f64,
    ) -> Result<()> {
        let record = FinishedTask {
            job: task.job_id.clone(),
            task: task.task_id.clone(),
            attempt: task.attempt,
            params: task
                .params
                .clone()
                .context("task without parameters")?
                .try_into()?,
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
        };
        let key = |name| layout::task_file_key(&task.job_id, &task.task_id, name);
        // task.json last, so that its presence says the other two are there.
        self.store
            .put(&key(layout::PASTICHE_PNG)?, output.png.clone())
            .await?;
        self.store
            .put(&key(layout::LOSSES_CSV)?, output.losses_csv.clone())
            .await?;
        self.store
            .put(&key(layout::TASK_JSON)?, record.to_json())
            .await?;
        Ok(())
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
            .report_end(request, |mut client, request| async move {
                client.complete(request).await
            })
            .await;
        match accepted {
            Some(true) => tracing::info!(job = %task.job_id, task = %task.task_id, "task done"),
            Some(false) => {
                tracing::info!(job = %task.job_id, task = %task.task_id, "completion was stale")
            }
            // The lease will expire and another worker redo the task; its outputs
            // are the same objects.
            None => {}
        }
    }

    async fn report_failure(&self, task: &pb::TaskAssignment, retryable: bool, error: &str) {
        tracing::warn!(job = %task.job_id, task = %task.task_id, retryable, %error, "task failed");
        let request = pb::FailRequest {
            task: Some(self.task_ref(task)),
            retryable,
            error: error.to_owned(),
        };
        self.report_end(request, |mut client, request| async move {
            client.fail(request).await
        })
        .await;
    }

    /// Says that the render stopped when the coordinator said the job was cancelled.
    async fn acknowledge_cancel(&self, task: &pb::TaskAssignment) {
        tracing::info!(job = %task.job_id, task = %task.task_id, "task cancelled");
        let request = pb::AcknowledgeCancelRequest {
            task: Some(self.task_ref(task)),
        };
        self.report_end(request, |mut client, request| async move {
            client.acknowledge_cancel(request).await
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
        self.report_end(request, |mut client, request| async move {
            client.give_back(request).await
        })
        .await;
    }

    /// Tells the coordinator how a task ended with `call`, one of its task-report
    /// RPCs, waiting out a coordinator that is restarting. Whether it accepted
    /// the report; none if it could not be told.
    async fn report_end<R, Reply>(
        &self,
        request: R,
        call: impl Fn(WorkersClient<AuthChannel>, R) -> Reply,
    ) -> Option<bool>
    where
        R: Clone,
        Reply: std::future::Future<
            Output = Result<tonic::Response<pb::TaskReportResponse>, tonic::Status>,
        >,
    {
        let reply = while_unavailable(REPORT_PATIENCE, "reporting", || {
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

/// How long a worker keeps trying to report how a task ended to a coordinator
/// that cannot be reached (restarting, say).
const REPORT_PATIENCE: Duration = Duration::from_secs(30);

/// Makes `call` again, backing off, while the coordinator is unavailable (it is
/// starting or restarting), for up to `patience`. Used for reports of how a
/// task ended too: one that does not get through has the task rendered again
/// once its lease expires, and retrying is safe (a report the coordinator has
/// already taken comes back stale).
async fn while_unavailable<T, F, Fut>(
    patience: Duration,
    doing: &str,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(200);
    loop {
        match call().await {
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(error = %status.message(), "coordinator unavailable; {doing} again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            reply => return reply,
        }
    }
}

async fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("part");
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
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
        iteration: params.iterations,
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
        elapsed: Duration::ZERO,
    }
}
