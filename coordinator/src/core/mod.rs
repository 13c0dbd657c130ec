//! The coordinator's application: jobs and their tasks over the scheduler and the
//! state database, the workers' reports, watch events and finished jobs' reports.
//! It takes and returns its own types ([`types`]); no network code here, and
//! no protobuf: [`crate::grpc`] serves it.

pub mod reports;
pub mod types;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pastiche_spec::store::Store;
use pastiche_spec::{layout, parse_grid, PRETRAINED};
use tokio::sync::{broadcast, mpsc, Notify};

use crate::error::CoordinatorError;
use crate::inputs::{AllowedPrefix, InputPolicy};
use crate::metrics::{Metrics, MetricsSource};
use crate::scheduler::{Counts, HeartbeatReply, NewJob, Scheduler, SchedulerConfig, TaskState};
use crate::state::{unix_seconds, JobRecord, State, TaskRecord};
pub use types::*;
pub use watch::Broadcast;

/// Tasks recorded in one transaction when a job is submitted.
const RECORDED_AT_ONCE: usize = 10_000;

/// Jobs of this many tasks or more leave much memory free once they are
/// recorded (their expanded grid), worth handing back to the system.
const LARGE_JOB: usize = 10_000;

/// Hands free heap memory back to the system: glibc keeps what a large grid's
/// expansion or a restart's load freed, and the coordinator's resident size
/// would stay at its peak.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Longest a lease request is held open waiting for work.
const MAX_LEASE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub scheduler: SchedulerConfig,
    /// Attempts per task when a submission does not say.
    pub default_max_attempts: u32,
    /// How long one attempt may run when its grid does not say; `None` for no limit.
    pub default_max_task_time: Option<Duration>,
    /// Where finished jobs' reports go (the farm's store); none: no reports.
    /// On S3, grids may name inputs under it.
    pub store: Option<Store>,
    /// More `s3://` prefixes grids may name inputs under (`--allow-input`).
    pub allow_inputs: Vec<AllowedPrefix>,
    /// How long a finished job's events are kept.
    pub event_retention: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            scheduler: SchedulerConfig::default(),
            default_max_attempts: 3,
            default_max_task_time: None,
            event_retention: Duration::from_secs(30 * 86_400),
            store: None,
            allow_inputs: Vec::new(),
        }
    }
}

/// What the scheduler's lock guards: every lease, heartbeat and report takes it.
struct Inner {
    scheduler: Scheduler,
    jobs: HashMap<String, JobRecord>,
}

pub struct Coordinator {
    inner: Mutex<Inner>,
    /// The database, under a lock of its own so that long writes (a large
    /// submission) and reads (a task list) do not hold up heartbeats. Taken
    /// after `inner` when both are needed, never before.
    state: Mutex<State>,
    config: CoordinatorConfig,
    /// What a submitted grid may name as inputs.
    inputs: InputPolicy,
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
    /// Workers as they registered (their devices), by id, with when: those
    /// still present are shown on the dashboard.
    registered: Mutex<HashMap<String, (Registration, Instant)>>,
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
        // Numbers of workers that may still report: a worker registering now
        // must not be given one of their ids. Recorded as they are given, and
        // read off the tasks of a database from before that record.
        let mut last_worker = state.last_worker()?;
        for stored in state.load(now)? {
            last_worker = stored
                .states
                .values()
                .filter_map(|state| match state {
                    TaskState::Running { worker, .. } | TaskState::Done { worker, .. } => {
                        worker_number(worker)
                    }
                    _ => None,
                })
                .fold(last_worker, u64::max);
            scheduler.restore(
                stored.job.spec(stored.tasks),
                stored.cancelled,
                &stored.states,
                &stored.given_back,
                now,
            )?;
            jobs.insert(stored.job.id.clone(), stored.job);
        }
        if !jobs.is_empty() {
            tracing::info!(jobs = jobs.len(), "restored jobs from the state database");
            return_freed_memory(); // what the load read
        }
        let (events, _) = broadcast::channel(4096);
        let (finished_jobs, finished_jobs_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Coordinator {
            inner: Mutex::new(Inner { scheduler, jobs }),
            state: Mutex::new(state),
            metrics: Metrics::new(config.scheduler.lease_timeout),
            inputs: InputPolicy::new(config.store.as_ref(), &config.allow_inputs),
            config,
            work: Notify::new(),
            closing: tokio::sync::watch::Sender::new(false),
            events,
            next_worker: AtomicU64::new(last_worker.saturating_add(1)),
            finished_jobs,
            finished_jobs_rx: Mutex::new(Some(finished_jobs_rx)),
            reports_pending: Mutex::new(HashSet::new()),
            registered: Mutex::new(HashMap::new()),
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

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Persists what the scheduler did, then tells watchers and waiting workers.
    /// A database that cannot be written stops the process (see
    /// [`stop_on_failed_commit`]).
    fn commit(&self, inner: &mut Inner) -> Result<(), CoordinatorError> {
        let events = inner.scheduler.take_events();
        if let Err(err) = self.state().apply(&events) {
            stop_on_failed_commit(&err);
        }
        self.metrics.record(&events);
        let mut wake = false;
        for event in &events {
            wake |= watch::makes_work(event);
            let job = event.job();
            let Ok(status) = job_status(inner, job) else {
                continue;
            };
            // With reports, watchers stay until the reporter says where it is.
            let reporting = self.config.store.is_some();
            let finished = status.ended() && !reporting;
            if reporting && matches!(event, crate::scheduler::Event::JobFinished { .. }) {
                self.reports_pending().insert(job.to_owned());
                let _ = self.finished_jobs.send(job.to_owned());
            }
            let change = watch::task_ended(event);
            self.publish(job, JobEvent { status, change }, finished);
        }
        if wake {
            self.work.notify_waiters();
        }
        Ok(())
    }

    /// Expands and records a grid; its tasks are leasable once this returns.
    pub fn submit(&self, submission: Submission) -> Result<Submitted, CoordinatorError> {
        let grid_name = match submission.grid_name.as_str() {
            "" => "grid.toml",
            name => name,
        };
        let grid = parse_grid(Path::new(grid_name), &submission.grid_toml)
            .map_err(|e| CoordinatorError::BadGrid(e.to_string()))?;
        if let Some(backbone) = grid
            .weights
            .iter()
            .find_map(|(b, w)| (w == PRETRAINED).then_some(b))
        {
            return Err(CoordinatorError::BadGrid(format!(
                "{grid_name}: weights.{backbone}: \"{PRETRAINED}\" names a file installed on the \
                 submitting machine; the pastiche CLI uploads it and submits its key"
            )));
        }
        self.inputs
            .check_grid(grid_name, &submission.grid_toml)
            .map_err(|e| CoordinatorError::BadGrid(e.to_string()))?;
        let tasks = grid.identified_tasks();
        let submitted_at = unix_seconds();
        let seq = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let job = JobRecord {
            id: job_id_for(&grid.name, &submission.grid_toml, submitted_at, seq),
            name: grid.name.clone(),
            priority: submission.priority,
            max_attempts: submission
                .max_attempts
                .unwrap_or(self.config.default_max_attempts),
            grid_toml: submission.grid_toml,
            submitted_at,
            preview_every: submission.preview_every.unwrap_or(grid.preview_every),
            max_task_time: grid.max_task_time.or(self.config.default_max_task_time),
        };
        let spec = job.spec(tasks.iter().map(|(id, _)| id.clone()).collect());
        // Built and recorded first, without the scheduler's lock: a large grid
        // takes seconds, and leases and heartbeats go on meanwhile.
        let new_job = NewJob::new(spec, |_| None)?;
        // A part at a time, the database's lock released in between, so that
        // leases and reports (which write to it) wait for one part at most.
        for (part, part_tasks) in tasks.chunks(RECORDED_AT_ONCE).enumerate() {
            let records: Vec<TaskRecord> = part_tasks
                .iter()
                .map(|(id, task)| TaskRecord {
                    id: id.clone(),
                    params: Arc::clone(&task.params),
                    content_key: task.content.clone(),
                    style_key: task.style.to_string(),
                    weights: grid.weights_for(task.params.backbone).to_owned(),
                })
                .collect();
            self.state()
                .insert_tasks(&job.id, part * RECORDED_AT_ONCE, &records)?;
        }
        self.state().insert_job_record(&job, tasks.len())?;
        let count = tasks.len();
        drop(tasks);
        drop(grid);
        {
            let mut inner = self.lock();
            inner.scheduler.add(new_job)?;
            inner.jobs.insert(job.id.clone(), job.clone());
            self.commit(&mut inner)?;
        }
        if count >= LARGE_JOB {
            return_freed_memory();
        }
        tracing::info!(job = %job.id, tasks = count, "job submitted");
        Ok(Submitted {
            job: job.id,
            tasks: count,
        })
    }

    pub fn status(&self, job: &str) -> Result<JobStatus, CoordinatorError> {
        job_status(&self.lock(), job)
    }

    /// What people call `job`'s inputs, by key: its grid's `[names]`.
    pub fn input_names(&self, job: &str) -> Result<BTreeMap<String, String>, CoordinatorError> {
        let grid = match self.lock().jobs.get(job) {
            Some(record) => record.grid_toml.clone(),
            None => return Err(CoordinatorError::UnknownJob(job.to_owned())),
        };
        Ok(pastiche_spec::input_names(&grid))
    }

    /// Every job, in serving order.
    pub fn list_jobs(&self) -> Result<Vec<JobStatus>, CoordinatorError> {
        let inner = self.lock();
        inner
            .scheduler
            .jobs()
            .map(|spec| job_status(&inner, &spec.id))
            .collect()
    }

    /// Cancels a running job; one that has ended stays as it ended.
    pub fn cancel(&self, job: &str) -> Result<(), CoordinatorError> {
        let mut inner = self.lock();
        if !inner.jobs.contains_key(job) {
            return Err(CoordinatorError::UnknownJob(job.to_owned()));
        }
        inner.scheduler.cancel(job)?;
        self.commit(&mut inner)?;
        tracing::info!(%job, "job cancelled");
        Ok(())
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

    /// Requeues tasks whose leases ran out; called periodically.
    pub fn expire_leases(&self, now: Instant) -> Result<usize, CoordinatorError> {
        let mut inner = self.lock();
        let expired = inner.scheduler.expire_leases(now);
        if expired > 0 {
            tracing::warn!(
                expired,
                "attempts ended: leases expired, or max_task_time passed"
            );
            self.metrics.leases_expired(expired);
            self.commit(&mut inner)?;
        }
        Ok(expired)
    }

    /// Removes finished jobs' events older than the `event_retention`; how many.
    pub fn prune_events(&self) -> Result<usize, CoordinatorError> {
        let finished: Vec<String> = {
            let inner = self.lock();
            let scheduler = &inner.scheduler;
            scheduler
                .jobs()
                .filter(|spec| scheduler.counts(&spec.id).is_ok_and(|c| c.finished()))
                .map(|spec| spec.id.clone())
                .collect()
        };
        let before = unix_seconds() - self.config.event_retention.as_secs() as i64;
        // A job at a time, the database's lock released in between.
        let mut pruned = 0;
        for job in &finished {
            pruned += self.state().prune_events(&[job], before)?;
        }
        Ok(pruned)
    }

    /// Runs [`expire_leases`](Self::expire_leases) every quarter lease, and
    /// [`prune_events`](Self::prune_events) at start and then hourly, until the
    /// process ends.
    pub fn spawn_lease_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        const PRUNE_EVERY: Duration = Duration::from_secs(3600);
        let coordinator = Arc::clone(self);
        let period = (self.config.scheduler.lease_timeout / 4).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            let mut next_prune = Instant::now();
            loop {
                ticks.tick().await;
                if let Err(err) = coordinator.expire_leases(Instant::now()) {
                    tracing::error!(error = %err, "expiring leases failed");
                }
                if Instant::now() >= next_prune {
                    next_prune = Instant::now() + PRUNE_EVERY;
                    match coordinator.prune_events() {
                        Ok(0) => {}
                        Ok(pruned) => tracing::info!(pruned, "finished jobs' old events pruned"),
                        Err(err) => tracing::error!(error = %err, "pruning events failed"),
                    }
                }
            }
        })
    }

    /// Forgets a job that has ended: its tasks and events leave the database
    /// (first: memory never runs ahead of it) and the scheduler.
    pub fn delete(&self, job: &str) -> Result<(), CoordinatorError> {
        let mut inner = self.lock();
        if !inner.jobs.contains_key(job) {
            return Err(CoordinatorError::UnknownJob(job.to_owned()));
        }
        if !inner.scheduler.counts(job)?.finished() {
            return Err(CoordinatorError::JobRunning(job.to_owned()));
        }
        self.state().delete_job_record(job)?;
        inner.scheduler.remove(job)?;
        inner.jobs.remove(job);
        drop(inner);
        // Its rows a part at a time, the database's lock released in between.
        while self.state().delete_job_part(job, RECORDED_AT_ONCE)? > 0 {}
        tracing::info!(%job, "job deleted");
        Ok(())
    }

    /// Every task of `job` in grid order, with where it stands.
    pub fn tasks(&self, job: &str) -> Result<Vec<TaskInfo>, CoordinatorError> {
        self.tasks_page(job, 0, None)
    }

    /// `limit` tasks of `job` (all without one) from place `start` in grid
    /// order, with where they stand: a page at a time, so that listing a large
    /// job holds the lock only briefly at a time.
    pub fn tasks_page(
        &self,
        job: &str,
        start: u64,
        limit: Option<u32>,
    ) -> Result<Vec<TaskInfo>, CoordinatorError> {
        if !self.lock().jobs.contains_key(job) {
            return Err(CoordinatorError::UnknownJob(job.to_owned()));
        }
        // The page is read from the database without the scheduler's lock.
        let records = self.state().tasks_page(job, start, limit)?;
        let inner = self.lock();
        records
            .into_iter()
            .map(|record| {
                let state = inner.scheduler.task_state(job, &record.id)?;
                let (attempts, error) = match state {
                    // Its attempt is the next one.
                    TaskState::Queued { attempt } => (attempt - 1, ""),
                    TaskState::Running { attempt, .. } | TaskState::Done { attempt, .. } => {
                        (*attempt, "")
                    }
                    TaskState::Failed { attempt, error } => (*attempt, error.as_str()),
                    TaskState::Cancelled => (0, ""),
                };
                Ok(TaskInfo {
                    phase: state.phase(),
                    attempts,
                    error: error.to_owned(),
                    id: record.id,
                    params: Arc::unwrap_or_clone(record.params),
                    content_key: record.content_key,
                    style_key: record.style_key,
                })
            })
            .collect()
    }

    /// The workers present now (in a lease call, or heard from within the
    /// lease timeout), by id, with their registrations where this process took
    /// them (a worker registered with an earlier coordinator has none).
    pub fn workers(&self) -> Vec<(String, Option<Registration>)> {
        let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        self.metrics
            .present()
            .into_iter()
            .map(|id| {
                let registration = registered.get(&id).map(|(r, _)| r.clone());
                (id, registration)
            })
            .collect()
    }

    /// Where the farm's inputs and results live (the coordinator's --store).
    pub fn store(&self) -> Option<&Store> {
        self.config.store.as_ref()
    }

    /// Where the farm's store is (`Store::location`), if it has one.
    pub fn store_location(&self) -> Option<String> {
        self.config.store.as_ref().map(Store::location)
    }

    /// Signs a worker up; a restarted worker is a new worker, and the leases of
    /// its previous life expire. A worker on another store than the farm's is
    /// refused.
    pub fn register(&self, registration: &Registration) -> Result<Registered, CoordinatorError> {
        let name = registration.name.trim();
        if name.is_empty() {
            return Err(CoordinatorError::BadRequest("a worker needs a name".into()));
        }
        if let Some(farm) = self.store_location() {
            if !registration.store.is_empty() && registration.store != farm {
                return Err(CoordinatorError::WrongStore {
                    worker: registration.store.clone(),
                    farm,
                });
            }
        }
        let number = self.next_worker.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = self.state().record_worker(number) {
            // As any other write the coordinator cannot make (see `commit`).
            stop_on_failed_commit(&err);
        }
        let worker = worker_id(name, number);
        {
            let present: HashSet<String> = self.metrics.present().into_iter().collect();
            let timeout = self.config.scheduler.lease_timeout;
            let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            // Gone workers are forgotten here, so that restarts do not pile up.
            registered.retain(|id, (_, at)| present.contains(id) || at.elapsed() <= timeout);
            registered.insert(worker.clone(), (registration.clone(), Instant::now()));
        }
        tracing::info!(
            %worker,
            device = %registration.device,
            device_name = %registration.device_name,
            memory = registration.device_memory_bytes,
            "worker registered"
        );
        Ok(Registered {
            worker,
            lease_timeout: self.config.scheduler.lease_timeout,
        })
    }

    /// The next task for `worker`, waiting up to `wait` (at most
    /// [`MAX_LEASE_WAIT`]) for one; none if none came, or the coordinator is
    /// closing.
    pub async fn lease(
        self: &Arc<Self>,
        worker: &str,
        wait: Duration,
    ) -> Result<Option<Assignment>, CoordinatorError> {
        if worker.is_empty() {
            return Err(CoordinatorError::BadRequest(
                "lease without a worker id".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + wait.min(MAX_LEASE_WAIT);
        let _polling = self.metrics.polling(worker);
        loop {
            // Register for a wake-up before looking, so none is missed in between.
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let coordinator = Arc::clone(self);
            let looking_for = worker.to_owned();
            let looked = Instant::now();
            if let Some(task) = blocking(move || coordinator.try_lease(&looking_for)).await? {
                self.metrics.task_scheduled(looked.elapsed());
                return Ok(Some(task));
            }
            tokio::select! {
                woken = tokio::time::timeout_at(deadline, notified) => {
                    if woken.is_err() {
                        return Ok(None);
                    }
                }
                // No task: the worker asks again, of the next coordinator.
                () = self.closed() => return Ok(None),
            }
        }
    }

    fn try_lease(&self, worker: &str) -> Result<Option<Assignment>, CoordinatorError> {
        let mut inner = self.lock();
        let Some(lease) = inner.scheduler.lease(worker, Instant::now()) else {
            return Ok(None);
        };
        let record = self
            .state()
            .task(&lease.job, lease.position)?
            .expect("scheduled tasks are stored");
        let preview_every = inner.jobs.get(&lease.job).map_or(0, |j| j.preview_every);
        self.commit(&mut inner)?;
        Ok(Some(Assignment {
            job: lease.job,
            task: lease.task,
            attempt: lease.attempt,
            params: Arc::unwrap_or_clone(record.params),
            content_key: record.content_key,
            style_key: record.style_key,
            weights: record.weights,
            lease_timeout: self.config.scheduler.lease_timeout,
            preview_every,
        }))
    }

    /// Renews `task`'s lease and passes its progress on to watchers; the reply
    /// says whether the worker goes on.
    pub fn heartbeat(&self, task: &TaskRef, progress: Progress) -> HeartbeatReply {
        self.metrics.worker_seen(&task.worker);
        let mut inner = self.lock();
        let reply = inner.scheduler.heartbeat(
            &task.job,
            &task.task,
            task.attempt,
            &task.worker,
            Instant::now(),
        );
        if reply == HeartbeatReply::Continue && progress.iterations > 0 {
            if let Ok(status) = job_status(&inner, &task.job) {
                let preview_key = match progress.preview_iteration {
                    0 => String::new(),
                    _ => layout::preview_key(&task.job, &task.task).unwrap_or_default(),
                };
                let change = JobChange::Progress(TaskProgress {
                    task: task.task.clone(),
                    worker: task.worker.clone(),
                    progress,
                    preview_key,
                });
                let event = JobEvent {
                    status,
                    change: Some(change),
                };
                self.publish(&task.job, event, false);
            }
        }
        reply
    }

    /// A worker's report of how its attempt at `task` ended. False when the
    /// report is stale (the attempt is no longer the task's) and changed nothing.
    pub fn end(&self, task: &TaskRef, ending: Ending) -> Result<bool, CoordinatorError> {
        let TaskRef {
            worker,
            job,
            task,
            attempt,
        } = task;
        let attempt = *attempt;
        let mut inner = self.lock();
        let scheduler = &mut inner.scheduler;
        let accepted = match &ending {
            Ending::Done => scheduler.complete(job, task, attempt, worker),
            Ending::Failed { failure, error } => {
                scheduler.fail(job, task, attempt, worker, *failure, error, Instant::now())
            }
            Ending::GivenBack => scheduler.give_back(job, task, attempt, worker),
            Ending::CancelAcknowledged => scheduler.acknowledge_cancel(job, task, attempt, worker),
        };
        self.commit(&mut inner)?;
        match &ending {
            _ if !accepted => {
                tracing::info!(%job, %task, attempt, %worker, ?ending, "stale report ignored")
            }
            Ending::Failed { failure, error } => {
                tracing::warn!(%job, %task, attempt, %worker, ?failure, %error, "task failed")
            }
            Ending::GivenBack => tracing::info!(%job, %task, attempt, %worker, "task given back"),
            Ending::Done | Ending::CancelAcknowledged => {}
        }
        Ok(accepted)
    }
}

impl MetricsSource for Coordinator {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn task_counts(&self) -> (Vec<(String, Counts)>, usize) {
        let inner = self.lock();
        let jobs = inner
            .scheduler
            .jobs()
            .filter_map(|spec| Some((spec.id.clone(), inner.scheduler.counts(&spec.id).ok()?)))
            .collect();
        (jobs, inner.scheduler.queue_depth())
    }
}

fn job_status(inner: &Inner, job: &str) -> Result<JobStatus, CoordinatorError> {
    let record = inner
        .jobs
        .get(job)
        .ok_or_else(|| CoordinatorError::UnknownJob(job.to_owned()))?;
    let counts = inner.scheduler.counts(job)?;
    let state = if !counts.finished() {
        JobState::Running
    } else if inner.scheduler.is_cancelled(job)? {
        JobState::Cancelled
    } else if counts.failed > 0 {
        JobState::Failed
    } else {
        JobState::Done
    };
    Ok(JobStatus {
        job: record.id.clone(),
        name: record.name.clone(),
        state,
        counts,
        priority: record.priority,
        submitted_at: record.submitted_at,
    })
}

/// A worker's id: its name and a number counted up by the coordinator (and on
/// from the last one its database knows), so that workers of one name, and a
/// worker registering again, are told apart.
fn worker_id(name: &str, number: u64) -> String {
    format!("{name}#{number}")
}

/// The number in an id [`worker_id`] made.
fn worker_number(id: &str) -> Option<u64> {
    id.rsplit_once('#')?.1.parse().ok()
}

/// Runs blocking coordinator work (SQLite) off the async runtime's threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CoordinatorError::Interrupted(e.to_string()))?
}

/// The exit status of a coordinator whose database could not be written
/// (EX_TEMPFAIL: restarting it is the cure).
pub const FAILED_COMMIT_EXIT: i32 = 75;

/// The scheduler changes in memory first and the database is written after: a
/// write that fails leaves memory ahead of the database (a lease handed out, a
/// task done, that a restart would not know). Serving on would tell workers and
/// watchers things that are not so; the process stops instead, and a restart
/// carries on from the database, where every reply it gave is recorded.
fn stop_on_failed_commit(err: &crate::state::StateError) -> ! {
    tracing::error!(error = %err, "the state database could not be written; stopping");
    eprintln!(
        "pastiche-coordinator: the state database could not be written ({err}); stopping so \
         that memory does not run ahead of it: restart the coordinator to carry on from the \
         database"
    );
    std::process::exit(FAILED_COMMIT_EXIT);
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

    /// `pretrained` means a file on the submitting machine: a worker could not
    /// find it, so a grid that still says it is refused, not retried to the end.
    #[test]
    fn a_grid_naming_pretrained_weights_is_refused() {
        let coordinator = Coordinator::open(None, CoordinatorConfig::default()).unwrap();
        let key = |ext: &str| layout::input_key(&pastiche_spec::sha256_hex(ext.as_bytes()), ext);
        let (content, style) = (key("png"), key("jpg"));
        let submission = |weights: &str| Submission {
            grid_toml: format!(
                "content = \"{content}\"\nstyle = \"{style}\"\n[weights]\nvgg19 = \"{weights}\"\n"
            ),
            grid_name: "study.toml".into(),
            priority: 0,
            max_attempts: None,
            preview_every: None,
        };
        let refused = coordinator.submit(submission(PRETRAINED)).unwrap_err();
        assert!(
            matches!(&refused, CoordinatorError::BadGrid(m) if m.contains("weights.vgg19")),
            "{refused}"
        );
        coordinator.submit(submission(&key("safetensors"))).unwrap();
    }
}
