//! The coordinator's gRPC services over the scheduler core and its database: `Farm`
//! for users, `Workers` for workers.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::Stream;
use pastiche_proto::pb;
use pastiche_proto::pb::farm_server::Farm;
use pastiche_proto::pb::workers_server::Workers;
use pastiche_report::MAX_REPORT_TASKS;
use pastiche_spec::store::Store;
use pastiche_spec::{layout, parse_grid};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::CoordinatorError;
use crate::metrics::Metrics;
use crate::scheduler::{
    Counts, Event, HeartbeatReply, JobSpec, Scheduler, SchedulerConfig, TaskState,
};
use crate::state::{unix_seconds, JobRecord, State, TaskRecord};

/// Why a finished job has no report.
enum ReportFailure {
    /// Not made on purpose (too large); `pastiche report` makes it on request.
    Declined(String),
    /// Went wrong (the store, most likely): tried again at the next start.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for ReportFailure {
    fn from(err: anyhow::Error) -> Self {
        ReportFailure::Failed(err)
    }
}

/// See [`Coordinator::report_of_ended_job`].
struct ReportPending;

/// Longest a lease request is held open waiting for work.
const MAX_LEASE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub scheduler: SchedulerConfig,
    /// Attempts per task when a submission does not say.
    pub default_max_attempts: u32,
    /// Where finished jobs' reports go (the farm's store); none: no reports.
    pub store: Option<Store>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            scheduler: SchedulerConfig::default(),
            default_max_attempts: 3,
            store: None,
        }
    }
}

struct Inner {
    scheduler: Scheduler,
    state: State,
    jobs: HashMap<String, JobRecord>,
}

/// A job event on its way to the watchers of that job.
#[derive(Clone)]
struct Broadcast {
    job: String,
    event: pb::JobEvent,
    finished: bool,
}

pub struct Coordinator {
    inner: Mutex<Inner>,
    config: CoordinatorConfig,
    /// Woken whenever a task may have become available to lease.
    work: Notify,
    /// Set when the server begins to shut down: long polls and watches end, so
    /// that their connections close and the shutdown is not held up.
    closing: tokio::sync::watch::Sender<bool>,
    events: broadcast::Sender<Broadcast>,
    next_worker: AtomicU64,
    /// Jobs that finished, for the reporter (see `spawn_reporter`).
    finished_jobs: mpsc::UnboundedSender<String>,
    finished_jobs_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Finished jobs whose report is yet to be written (or to fail): their
    /// watchers wait for it.
    reports_pending: Mutex<HashSet<String>>,
    metrics: Metrics,
}

/// Job ids go into object keys: lowercase letters, digits and dashes only.
fn job_id_for(name: &str, grid: &str, submitted_at: i64, seq: u64) -> String {
    let mut slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.truncate(40);
    let slug = slug.trim_matches('-');
    let slug = if slug.is_empty() { "job" } else { slug };
    let salt = pastiche_spec::sha256_hex(format!("{grid}\n{submitted_at}\n{seq}").as_bytes());
    format!("{slug}-{}", &salt[..8])
}

impl Coordinator {
    /// Opens (or creates) the state database and restores every job in it.
    pub fn open(
        db: Option<&Path>,
        config: CoordinatorConfig,
    ) -> Result<Arc<Self>, CoordinatorError> {
        let state = match db {
            Some(path) => State::open(path)?,
            None => State::in_memory()?,
        };
        let now = Instant::now();
        let mut scheduler = Scheduler::new(config.scheduler);
        let mut jobs = HashMap::new();
        for stored in state.load(now)? {
            scheduler.restore(
                stored.spec(),
                stored.cancelled,
                &stored.states,
                &stored.given_back,
                now,
            )?;
            jobs.insert(stored.job.id.clone(), stored.job);
        }
        if !jobs.is_empty() {
            tracing::info!(jobs = jobs.len(), "restored jobs from the state database");
        }
        let (events, _) = broadcast::channel(4096);
        let (finished_jobs, finished_jobs_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Coordinator {
            inner: Mutex::new(Inner {
                scheduler,
                state,
                jobs,
            }),
            metrics: Metrics::new(config.scheduler.lease_timeout),
            config,
            work: Notify::new(),
            closing: tokio::sync::watch::Sender::new(false),
            events,
            next_worker: AtomicU64::new(1),
            finished_jobs,
            finished_jobs_rx: Mutex::new(Some(finished_jobs_rx)),
            reports_pending: Mutex::new(HashSet::new()),
        }))
    }

    /// Ends every long poll and watch; see `closing`.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`close`](Self::close) was called.
    async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|closing| *closing).await;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Persists what the scheduler did, then tells watchers and waiting workers.
    fn commit(&self, inner: &mut Inner) -> Result<(), CoordinatorError> {
        let events = inner.scheduler.take_events();
        inner.state.apply(&events)?;
        self.metrics.record(&events);
        let mut wake = false;
        for event in &events {
            let (job, ended) = match event {
                Event::TaskRequeued {
                    job, task, reason, ..
                } => {
                    wake = true;
                    (job, Some((task.as_str(), "requeued", reason.as_str())))
                }
                Event::TaskDone { job, task, .. } => (job, Some((task.as_str(), "done", ""))),
                Event::TaskFailed {
                    job, task, error, ..
                } => (job, Some((task.as_str(), "failed", error.as_str()))),
                Event::TaskCancelled { job, task } => (job, Some((task.as_str(), "cancelled", ""))),
                Event::JobFinished { job, .. } | Event::JobCancelled { job } => (job, None),
                Event::JobSubmitted { job, .. } => {
                    wake = true;
                    (job, None)
                }
                Event::TaskLeased { job, .. } | Event::WorkerBlocklisted { job, .. } => (job, None),
            };
            let Ok(status) = job_status(inner, job) else {
                continue;
            };
            // With reports, watchers stay until the reporter says where it is.
            let reporting = self.config.store.is_some();
            let finished = status.state != pb::JobState::Running as i32 && !reporting;
            if reporting && matches!(event, Event::JobFinished { .. }) {
                self.reports_pending().insert(job.clone());
                let _ = self.finished_jobs.send(job.clone());
            }
            let event = pb::JobEvent {
                status: Some(status),
                event: ended.map(|(task, outcome, message)| {
                    pb::job_event::Event::TaskEnded(pb::TaskEnded {
                        task_id: task.to_owned(),
                        outcome: outcome.to_owned(),
                        message: message.to_owned(),
                    })
                }),
            };
            let _ = self.events.send(Broadcast {
                job: job.clone(),
                event,
                finished,
            });
        }
        if wake {
            self.work.notify_waiters();
        }
        Ok(())
    }

    /// Expands and records a grid; its tasks are leasable once this returns.
    pub fn submit(
        &self,
        request: pb::SubmitJobRequest,
    ) -> Result<pb::SubmitJobResponse, CoordinatorError> {
        let grid_name = if request.grid_name.is_empty() {
            "grid.toml"
        } else {
            &request.grid_name
        };
        let grid = parse_grid(Path::new(grid_name), &request.grid_toml)
            .map_err(|e| CoordinatorError::BadGrid(e.to_string()))?;
        let tasks: Vec<TaskRecord> = grid
            .identified_tasks()
            .into_iter()
            .map(|(id, t)| TaskRecord {
                id,
                params: t.params.clone(),
                content_key: t.content.clone(),
                style_key: t.style.clone(),
                weights: grid.weights_for(t.params.backbone).to_owned(),
            })
            .collect();
        let submitted_at = unix_seconds();
        let seq = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let job = JobRecord {
            id: job_id_for(&grid.name, &request.grid_toml, submitted_at, seq),
            name: grid.name.clone(),
            priority: request.priority,
            max_attempts: if request.max_attempts == 0 {
                self.config.default_max_attempts
            } else {
                request.max_attempts
            },
            grid_toml: request.grid_toml,
            submitted_at,
            preview_every: request.preview_every.unwrap_or(grid.preview_every),
        };
        let spec = JobSpec {
            id: job.id.clone(),
            priority: job.priority,
            max_attempts: job.max_attempts,
            tasks: tasks.iter().map(|t| t.id.clone()).collect(),
        };
        let mut inner = self.lock();
        inner.state.insert_job(&job, &tasks)?;
        inner.scheduler.submit(spec)?;
        inner.jobs.insert(job.id.clone(), job.clone());
        self.commit(&mut inner)?;
        tracing::info!(job = %job.id, tasks = tasks.len(), "job submitted");
        Ok(pb::SubmitJobResponse {
            job_id: job.id,
            tasks: tasks.len() as u32,
        })
    }

    pub fn status(&self, job: &str) -> Result<pb::JobStatus, CoordinatorError> {
        job_status(&self.lock(), job)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The latest job submitted with exactly this grid that is still running
    /// (not finished, not cancelled): what `pastiche local` carries on with.
    pub fn running_job_with_grid(&self, grid_toml: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .jobs
            .values()
            .filter(|job| job.grid_toml == grid_toml)
            .filter(|job| {
                let scheduler = &inner.scheduler;
                scheduler.is_cancelled(&job.id) == Ok(false)
                    && scheduler
                        .counts(&job.id)
                        .is_ok_and(|counts| !counts.finished())
            })
            .max_by_key(|job| (job.submitted_at, job.id.clone()))
            .map(|job| job.id.clone())
    }

    /// Every job's task counts, and the tasks queued over all jobs.
    pub fn task_counts(&self) -> (Vec<(String, Counts)>, usize) {
        let inner = self.lock();
        let jobs = inner
            .scheduler
            .jobs()
            .filter_map(|spec| Some((spec.id.clone(), inner.scheduler.counts(&spec.id).ok()?)))
            .collect();
        (jobs, inner.scheduler.queue_depth())
    }

    /// Requeues tasks whose leases ran out; called periodically.
    pub fn expire_leases(&self, now: Instant) -> Result<usize, CoordinatorError> {
        let mut inner = self.lock();
        let expired = inner.scheduler.expire_leases(now);
        if expired > 0 {
            tracing::warn!(expired, "leases expired; tasks requeued");
            self.metrics.leases_expired(expired);
            self.commit(&mut inner)?;
        }
        Ok(expired)
    }

    /// Writes the report of every job that finishes into the store, then tells
    /// the job's watchers where it is: first those that finished before a
    /// restart and were never reported, then each as it finishes. None without a
    /// store (or when already started).
    pub fn spawn_reporter(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let store = self.config.store.clone()?;
        let mut finished = self
            .finished_jobs_rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()?;
        let backlog = self.lock().state.unreported_jobs().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "listing the jobs without a report failed");
            Vec::new()
        });
        if !backlog.is_empty() {
            tracing::info!(
                jobs = backlog.len(),
                "writing the reports missed before a restart"
            );
        }
        self.reports_pending().extend(backlog.iter().cloned());
        let coordinator = Arc::clone(self);
        Some(tokio::spawn(async move {
            for job in backlog {
                coordinator.report(&store, job).await;
            }
            while let Some(job) = finished.recv().await {
                coordinator.report(&store, job).await;
            }
        }))
    }

    /// Writes `job`'s report, notes it in the database and broadcasts where it is.
    async fn report(&self, store: &Store, job: String) {
        let (index_key, error) = match self.write_report(store, &job).await {
            Ok(index_key) => {
                tracing::info!(%job, report = %index_key, "report written");
                self.note_reported(&job, &index_key);
                (index_key, String::new())
            }
            Err(ReportFailure::Declined(why)) => {
                tracing::info!(%job, %why, "no automatic report");
                self.note_reported(&job, &why);
                (String::new(), why)
            }
            Err(ReportFailure::Failed(err)) => {
                // Not noted: the next start tries again.
                let error = format!("{err:#}");
                tracing::warn!(%job, %error, "writing the report failed");
                (String::new(), error)
            }
        };
        let ready = pb::ReportReady {
            index_key,
            error,
            store: store.root().to_owned(),
        };
        // Watchers check for a pending report after subscribing: taken off the
        // list before the broadcast, it cannot be missed.
        self.reports_pending().remove(&job);
        let Ok(status) = self.status(&job) else {
            return;
        };
        let _ = self.events.send(Broadcast {
            job,
            event: pb::JobEvent {
                status: Some(status),
                event: Some(pb::job_event::Event::Report(ready)),
            },
            finished: true,
        });
    }

    fn reports_pending(&self) -> MutexGuard<'_, HashSet<String>> {
        self.reports_pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// For a watcher of a job that has ended: whether its report is still to
    /// come, or else the event that says where it is (none: no report).
    async fn report_of_ended_job(&self, job: &str) -> Result<Option<pb::JobEvent>, ReportPending> {
        if self.reports_pending().contains(job) {
            return Err(ReportPending);
        }
        let Some(store) = &self.config.store else {
            return Ok(None);
        };
        let Ok(index_key) = pastiche_report::index_key(job) else {
            return Ok(None);
        };
        if !store.exists(&index_key).await.unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(pb::JobEvent {
            status: self.status(job).ok(),
            event: Some(pb::job_event::Event::Report(pb::ReportReady {
                index_key,
                error: String::new(),
                store: store.root().to_owned(),
            })),
        }))
    }

    fn note_reported(&self, job: &str, note: &str) {
        if let Err(err) = self.lock().state.mark_reported(job, note) {
            tracing::warn!(%job, error = %err, "noting the report in the database failed");
        }
    }

    async fn write_report(&self, store: &Store, job: &str) -> Result<String, ReportFailure> {
        let status = self.status(job).map_err(anyhow::Error::from)?;
        let c = status.counts.unwrap_or_default();
        let total = [c.queued, c.running, c.done, c.failed, c.cancelled]
            .iter()
            .map(|&n| n as usize)
            .sum::<usize>();
        // A report shows a grid people can look at; a larger job is looked at
        // in slices, on request. Counted before its task list is read.
        if total > MAX_REPORT_TASKS {
            return Err(ReportFailure::Declined(format!(
                "{total} tasks are more than the {MAX_REPORT_TASKS} one report shows; \
                 run `pastiche report {job} --only PARAM=VALUE --out DIR` for slices"
            )));
        }
        let tasks = self.tasks(job).map_err(anyhow::Error::from)?;
        let name = status.name;
        let report = crate::report::from_task_list(job, &name, tasks)?;
        // Drawing the sheet and plots is CPU work: off the runtime's threads.
        let store = store.clone();
        let runtime = tokio::runtime::Handle::current();
        let written = tokio::task::spawn_blocking(move || {
            runtime.block_on(crate::report::write_in_store(&store, &report))
        })
        .await
        .map_err(anyhow::Error::from)??;
        Ok(written)
    }

    /// Runs [`expire_leases`](Self::expire_leases) every quarter lease until the
    /// process ends.
    pub fn spawn_lease_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let coordinator = Arc::clone(self);
        let period = (self.config.scheduler.lease_timeout / 4).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                if let Err(err) = coordinator.expire_leases(Instant::now()) {
                    tracing::error!(error = %err, "expiring leases failed");
                }
            }
        })
    }

    fn try_lease(&self, worker: &str) -> Result<Option<pb::TaskAssignment>, CoordinatorError> {
        let mut inner = self.lock();
        let Some(lease) = inner.scheduler.lease(worker, Instant::now()) else {
            return Ok(None);
        };
        let record = inner
            .state
            .task(&lease.job, &lease.task)?
            .expect("scheduled tasks are stored");
        let weights = record.weights.clone();
        let preview_every = inner.jobs.get(&lease.job).map_or(0, |j| j.preview_every);
        self.commit(&mut inner)?;
        Ok(Some(pb::TaskAssignment {
            job_id: lease.job,
            task_id: lease.task,
            attempt: lease.attempt,
            params: Some((&record.params).into()),
            content_key: record.content_key,
            style_key: record.style_key,
            weights,
            lease_timeout_ms: self.config.scheduler.lease_timeout.as_millis() as u32,
            preview_every,
        }))
    }

    /// Every task of `job` in grid order, with where it stands.
    pub fn tasks(&self, job: &str) -> Result<Vec<pb::TaskInfo>, CoordinatorError> {
        let inner = self.lock();
        if !inner.jobs.contains_key(job) {
            return Err(CoordinatorError::UnknownJob(job.to_owned()));
        }
        inner
            .state
            .tasks(job)?
            .into_iter()
            .map(|record| {
                let (state, attempt, error) = match inner.scheduler.task_state(job, &record.id)? {
                    TaskState::Queued { attempt } => (pb::TaskState::Queued, attempt - 1, ""),
                    TaskState::Running { attempt, .. } => (pb::TaskState::Running, *attempt, ""),
                    TaskState::Done { attempt, .. } => (pb::TaskState::Done, *attempt, ""),
                    TaskState::Failed { attempt, error } => {
                        (pb::TaskState::Failed, *attempt, error.as_str())
                    }
                    TaskState::Cancelled => (pb::TaskState::Cancelled, 0, ""),
                };
                Ok(pb::TaskInfo {
                    state: state.into(),
                    attempt,
                    error: error.to_owned(),
                    params: Some((&record.params).into()),
                    task_id: record.id,
                    content_key: record.content_key,
                    style_key: record.style_key,
                })
            })
            .collect()
    }
}

fn job_status(inner: &Inner, job: &str) -> Result<pb::JobStatus, CoordinatorError> {
    let record = inner
        .jobs
        .get(job)
        .ok_or_else(|| CoordinatorError::UnknownJob(job.to_owned()))?;
    let counts = inner.scheduler.counts(job)?;
    let state = if !counts.finished() {
        pb::JobState::Running
    } else if inner.scheduler.is_cancelled(job)? {
        pb::JobState::Cancelled
    } else if counts.failed > 0 {
        pb::JobState::Failed
    } else {
        pb::JobState::Done
    };
    Ok(pb::JobStatus {
        job_id: record.id.clone(),
        name: record.name.clone(),
        state: state.into(),
        counts: Some(counts_to_pb(counts)),
        priority: record.priority,
        submitted_at: record.submitted_at,
    })
}

fn counts_to_pb(c: Counts) -> pb::TaskCounts {
    pb::TaskCounts {
        queued: c.queued as u32,
        running: c.running as u32,
        done: c.done as u32,
        failed: c.failed as u32,
        cancelled: c.cancelled as u32,
    }
}

/// Runs blocking coordinator work (SQLite) off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("coordinator task failed: {e}")))?
        .map_err(Status::from)
}

/// The user-facing service.
#[derive(Clone)]
pub struct FarmService(pub Arc<Coordinator>);

#[tonic::async_trait]
impl Farm for FarmService {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let coordinator = Arc::clone(&self.0);
        let request = request.into_inner();
        blocking(move || coordinator.submit(request))
            .await
            .map(Response::new)
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        Ok(Response::new(self.0.status(&request.into_inner().job_id)?))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let inner = self.0.lock();
        let jobs = inner
            .scheduler
            .jobs()
            .map(|spec| job_status(&inner, &spec.id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let job = request.into_inner().job_id;
        let coordinator = Arc::clone(&self.0);
        blocking(move || {
            let mut inner = coordinator.lock();
            if !inner.jobs.contains_key(&job) {
                return Err(CoordinatorError::UnknownJob(job));
            }
            // A job that has ended stays as it ended.
            inner.scheduler.cancel(&job)?;
            coordinator.commit(&mut inner)?;
            tracing::info!(%job, "job cancelled");
            Ok(pb::CancelJobResponse {})
        })
        .await
        .map(Response::new)
    }

    type WatchJobStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job = request.into_inner().job_id;
        // Subscribe before reading the status, so that nothing falls in between.
        let mut events = self.0.events.subscribe();
        let status = self.0.status(&job)?;
        let (tx, rx) = mpsc::channel(256);
        let coordinator = Arc::clone(&self.0);
        tokio::spawn(async move {
            let ended = status.state != pb::JobState::Running as i32;
            let first = pb::JobEvent {
                status: Some(status),
                event: None,
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            if ended {
                match coordinator.report_of_ended_job(&job).await {
                    // Its broadcast is still to come: wait for it below.
                    Err(ReportPending) => {}
                    Ok(report) => {
                        if let Some(report) = report {
                            let _ = tx.send(Ok(report)).await;
                        }
                        return;
                    }
                }
            }
            let closed = coordinator.closed();
            tokio::pin!(closed);
            loop {
                let received = tokio::select! {
                    received = events.recv() => received,
                    () = &mut closed => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "the coordinator is shutting down; watch again once it is back",
                            )))
                            .await;
                        return;
                    }
                };
                match received {
                    Ok(b) if b.job == job => {
                        if tx.send(Ok(b.event)).await.is_err() || b.finished {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for every event: send where the job stands.
                        let Ok(status) = coordinator.status(&job) else {
                            return;
                        };
                        let finished = status.state != pb::JobState::Running as i32;
                        let event = pb::JobEvent {
                            status: Some(status),
                            event: None,
                        };
                        if tx.send(Ok(event)).await.is_err() || finished {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ListTasksStream = Pin<Box<dyn Stream<Item = Result<pb::TaskInfo, Status>> + Send>>;

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<Self::ListTasksStream>, Status> {
        let job = request.into_inner().job_id;
        let coordinator = Arc::clone(&self.0);
        let tasks = blocking(move || coordinator.tasks(&job)).await?;
        // A stream: a big grid's list is larger than one message may be.
        Ok(Response::new(Box::pin(tokio_stream::iter(
            tasks.into_iter().map(Ok),
        ))))
    }
}

/// The worker-facing service.
#[derive(Clone)]
pub struct WorkersService(pub Arc<Coordinator>);

#[tonic::async_trait]
impl Workers for WorkersService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        if request.name.trim().is_empty() {
            return Err(CoordinatorError::BadRequest("a worker needs a name".into()).into());
        }
        // Unique per registration: a restarted worker is a new worker, and the
        // leases of its previous life expire.
        let n = self.0.next_worker.fetch_add(1, Ordering::Relaxed);
        let worker_id = format!("{}#{n}", request.name.trim());
        tracing::info!(
            worker = %worker_id,
            device = %request.device,
            device_name = %request.device_name,
            memory = request.device_memory_bytes,
            "worker registered"
        );
        Ok(Response::new(pb::RegisterResponse {
            worker_id,
            lease_timeout_ms: self.0.config.scheduler.lease_timeout.as_millis() as u32,
        }))
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let request = request.into_inner();
        if request.worker_id.is_empty() {
            return Err(CoordinatorError::BadRequest("lease without a worker id".into()).into());
        }
        let wait = Duration::from_millis(request.wait_ms.into()).min(MAX_LEASE_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let _polling = self.0.metrics.polling(&request.worker_id);
        loop {
            // Register for a wake-up before looking, so none is missed in between.
            let notified = self.0.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let coordinator = Arc::clone(&self.0);
            let worker = request.worker_id.clone();
            let looked = Instant::now();
            if let Some(task) = blocking(move || coordinator.try_lease(&worker)).await? {
                self.0.metrics.task_scheduled(looked.elapsed());
                return Ok(Response::new(pb::LeaseResponse { task: Some(task) }));
            }
            tokio::select! {
                woken = tokio::time::timeout_at(deadline, notified) => {
                    if woken.is_err() {
                        return Ok(Response::new(pb::LeaseResponse { task: None }));
                    }
                }
                // No task: the worker asks again, of the next coordinator.
                () = self.0.closed() => {
                    return Ok(Response::new(pb::LeaseResponse { task: None }));
                }
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        self.0.metrics.worker_seen(&r.worker_id);
        let reply = {
            let mut inner = self.0.lock();
            let reply = inner.scheduler.heartbeat(
                &r.job_id,
                &r.task_id,
                r.attempt,
                &r.worker_id,
                Instant::now(),
            );
            if reply == HeartbeatReply::Continue && r.iterations > 0 {
                if let Ok(status) = job_status(&inner, &r.job_id) {
                    let progress = pb::TaskProgress {
                        task_id: r.task_id.clone(),
                        worker_id: r.worker_id.clone(),
                        iteration: r.iteration,
                        iterations: r.iterations,
                        latest: r.latest,
                        preview_iteration: r.preview_iteration,
                        preview_key: match r.preview_iteration {
                            0 => String::new(),
                            _ => layout::preview_key(&r.job_id, &r.task_id).unwrap_or_default(),
                        },
                    };
                    let _ = self.0.events.send(Broadcast {
                        job: r.job_id.clone(),
                        event: pb::JobEvent {
                            status: Some(status),
                            event: Some(pb::job_event::Event::Progress(progress)),
                        },
                        finished: false,
                    });
                }
            }
            reply
        };
        let directive = match reply {
            HeartbeatReply::Continue => pb::Directive::Continue,
            HeartbeatReply::Cancel => pb::Directive::Cancel,
            HeartbeatReply::Stale => pb::Directive::Stale,
        };
        Ok(Response::new(pb::HeartbeatResponse {
            directive: directive.into(),
        }))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = request.into_inner();
        let coordinator = Arc::clone(&self.0);
        blocking(move || {
            let mut inner = coordinator.lock();
            let accepted = inner.scheduler.complete(&r.job_id, &r.task_id, r.attempt, &r.worker_id);
            coordinator.commit(&mut inner)?;
            if !accepted {
                tracing::info!(job = %r.job_id, task = %r.task_id, attempt = r.attempt, worker = %r.worker_id, "stale completion ignored");
            }
            Ok(pb::CompleteResponse { accepted })
        })
        .await
        .map(Response::new)
    }

    async fn fail(
        &self,
        request: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let r = request.into_inner();
        let coordinator = Arc::clone(&self.0);
        blocking(move || {
            let mut inner = coordinator.lock();
            if r.given_back {
                let accepted =
                    inner
                        .scheduler
                        .give_back(&r.job_id, &r.task_id, r.attempt, &r.worker_id);
                coordinator.commit(&mut inner)?;
                if accepted {
                    tracing::info!(job = %r.job_id, task = %r.task_id, attempt = r.attempt, worker = %r.worker_id, "task given back");
                }
                return Ok(pb::FailResponse { accepted });
            }
            let accepted = inner
                .scheduler
                .fail(
                    &r.job_id,
                    &r.task_id,
                    r.attempt,
                    &r.worker_id,
                    r.retryable,
                    &r.error,
                    Instant::now(),
                );
            coordinator.commit(&mut inner)?;
            if accepted {
                tracing::warn!(job = %r.job_id, task = %r.task_id, attempt = r.attempt, worker = %r.worker_id, retryable = r.retryable, error = %r.error, "task failed");
            }
            Ok(pb::FailResponse { accepted })
        })
        .await
        .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_safe_object_key_segments() {
        let id = job_id_for("../../etc/Seed Study!", "grid", 1, 2);
        assert!(id.starts_with("etc-seed-study-"), "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{id}"
        );
        assert_ne!(id, job_id_for("../../etc/Seed Study!", "grid", 1, 3));
        assert!(job_id_for("///", "g", 0, 0).starts_with("job-"));
    }
}
