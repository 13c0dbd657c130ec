//! The scheduler core: which worker renders which task, and what happens when a
//! worker fails, vanishes or is told to stop. Plain data and methods, no network and
//! no clock of its own (callers pass `now`), so every rule is unit-tested here.
//!
//! Rules:
//! - Jobs are served by priority (higher first), then in submission order; a job's
//!   tasks in their order.
//! - A lease lasts `lease_timeout` and is renewed by heartbeats. An expired lease
//!   puts the task back in the queue with its attempt number bumped; reports that
//!   carry an older attempt are stale and ignored.
//! - A failure says whose it is ([`Failure`]). The task's own (a bad input) fails
//!   it at once. The others are retried (as a new attempt) while the job's
//!   attempt limit allows; a worker that failed `blocklist_after` tasks of a job
//!   itself is not given that job for `blocklist_for` (a render farm's
//!   soft-fail/blocklist), while a store or network outage blames no worker. The
//!   blocklist ends, so that a job whose every worker was kept off it still moves on.
//! - An attempt that runs longer than its job's `max_task_time` fails the task
//!   (it would take as long again); its worker learns at its next heartbeat.
//! - Cancelling a job drops its queued tasks at once and tells the workers running
//!   the others at their next heartbeat.
//!
//! Every change is also recorded as an [`Event`], which the coordinator persists and
//! streams to watchers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

pub type JobId = String;
pub type TaskId = String;
pub type WorkerId = String;
/// A task's place in its job's grid order: how the scheduler and the state
/// database find it (ids are hashes, and an index of them is written at random).
pub type Position = u32;

#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Waiting for a worker; the next lease is attempt `attempt`.
    Queued {
        attempt: u32,
    },
    Running {
        attempt: u32,
        worker: WorkerId,
        lease_until: Instant,
        /// When the attempt has run for its job's `max_task_time`, if it has one.
        time_limit_at: Option<Instant>,
        cancel_requested: bool,
    },
    Done {
        attempt: u32,
        worker: WorkerId,
    },
    Failed {
        attempt: u32,
        error: String,
    },
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Done { .. } | TaskState::Failed { .. } | TaskState::Cancelled
        )
    }

    pub fn phase(&self) -> Phase {
        match self {
            TaskState::Queued { .. } => Phase::Queued,
            TaskState::Running { .. } => Phase::Running,
            TaskState::Done { .. } => Phase::Done,
            TaskState::Failed { .. } => Phase::Failed,
            TaskState::Cancelled => Phase::Cancelled,
        }
    }
}

/// A task's state without its details: what the state database stores, what
/// metrics are labelled with and what the task list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Queued,
        Phase::Running,
        Phase::Done,
        Phase::Failed,
        Phase::Cancelled,
    ];

    /// The name the state database stores and metrics show.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    /// The phase of a [`name`](Self::name); `None` for any other text.
    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|phase| phase.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub lease_timeout: Duration,
    /// Failed tasks of one job after which a worker no longer gets that job...
    pub blocklist_after: u32,
    /// ...for this long.
    pub blocklist_for: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_timeout: Duration::from_secs(30),
            blocklist_after: 3,
            blocklist_for: Duration::from_secs(600),
        }
    }
}

/// What a submitted job asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub id: JobId,
    pub priority: i32,
    /// Attempts per task, the first included.
    pub max_attempts: u32,
    /// How long one attempt may run; `None` for no limit.
    pub max_task_time: Option<Duration>,
    pub tasks: Vec<TaskId>,
}

/// Whose fault a failed attempt was, as its worker says: it decides whether the
/// task is tried again and whether the worker is blamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The task's own (an input missing, undecodable or of the wrong shape; a
    /// render that cannot work as asked): it would fail anywhere, so it fails now.
    Task,
    /// The worker's or its device's: tried again, and counted against the worker.
    Worker,
    /// The store's or the network's, for longer than the worker waited: tried
    /// again, and no worker is blamed.
    Transient,
}

impl Failure {
    fn retried(self) -> bool {
        self != Failure::Task
    }
}

/// Tasks of a job in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: usize,
    pub running: usize,
    pub done: usize,
    pub failed: usize,
    pub cancelled: usize,
}

/// A job built and ready to [`add`](Scheduler::add): building a large one
/// takes a while, and needs no scheduler.
pub struct NewJob {
    job: Job,
    /// When to look at its running tasks (a restored job's).
    deadlines: Vec<Deadline>,
}

impl NewJob {
    /// `spec`'s job, each task in the state `prior` gives it (queued if none).
    pub fn new(
        spec: JobSpec,
        prior: impl Fn(&TaskId) -> Option<TaskState>,
    ) -> Result<NewJob, SchedulerError> {
        if spec.tasks.is_empty() {
            return Err(SchedulerError::EmptyJob(spec.id));
        }
        let mut job = Job {
            rank: (0, 0), // given by `add`
            cancelled: false,
            finished: false,
            positions: HashMap::with_capacity(spec.tasks.len()),
            states: Vec::with_capacity(spec.tasks.len()),
            queue: VecDeque::new(),
            counts: Counts::default(),
            failures_by_worker: HashMap::new(),
            blocklist: HashMap::new(),
            given_back: HashMap::new(),
            spec: JobSpec {
                tasks: Vec::new(),
                ..spec
            },
        };
        let mut deadlines = Vec::new();
        for (position, task) in (0..).zip(&spec.tasks) {
            if job.positions.insert(task.clone(), position).is_some() {
                return Err(SchedulerError::DuplicateTask {
                    job: job.spec.id,
                    task: task.clone(),
                });
            }
            let state = prior(task).unwrap_or(TaskState::Queued { attempt: 1 });
            match &state {
                TaskState::Queued { .. } => job.queue.push_back(position),
                TaskState::Running {
                    attempt,
                    lease_until,
                    time_limit_at,
                    ..
                } => {
                    for at in std::iter::once(*lease_until).chain(*time_limit_at) {
                        deadlines.push(Deadline::new(at, &job.spec.id, position, *attempt));
                    }
                }
                _ => {}
            }
            *job.counts.slot(state.phase()) += 1;
            job.states.push(state);
        }
        job.spec.tasks = spec.tasks;
        Ok(NewJob { job, deadlines })
    }
}

impl Counts {
    pub fn total(&self) -> usize {
        self.queued + self.running + self.done + self.failed + self.cancelled
    }

    pub fn finished(&self) -> bool {
        self.queued == 0 && self.running == 0
    }
}

/// A change of state, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    JobSubmitted {
        job: JobId,
        tasks: usize,
    },
    TaskLeased {
        job: JobId,
        task: TaskId,
        position: Position,
        attempt: u32,
        worker: WorkerId,
    },
    /// Back in the queue as `attempt` (the lease expired, a retryable failure,
    /// or, `given_back`, a worker that stopped: that one uses up no attempt).
    TaskRequeued {
        job: JobId,
        task: TaskId,
        position: Position,
        attempt: u32,
        reason: String,
        given_back: bool,
    },
    TaskDone {
        job: JobId,
        task: TaskId,
        position: Position,
        attempt: u32,
        worker: WorkerId,
    },
    TaskFailed {
        job: JobId,
        task: TaskId,
        position: Position,
        attempt: u32,
        error: String,
    },
    TaskCancelled {
        job: JobId,
        task: TaskId,
        position: Position,
    },
    /// Every queued task of a cancelled job, `tasks` of them, ended at once: one
    /// event (one database statement) for a million tasks.
    QueuedCancelled {
        job: JobId,
        tasks: usize,
    },
    WorkerBlocklisted {
        job: JobId,
        worker: WorkerId,
    },
    JobCancelled {
        job: JobId,
    },
    JobFinished {
        job: JobId,
        counts: Counts,
    },
}

impl Event {
    /// The job it happened to.
    pub fn job(&self) -> &str {
        match self {
            Event::JobSubmitted { job, .. }
            | Event::TaskLeased { job, .. }
            | Event::TaskRequeued { job, .. }
            | Event::TaskDone { job, .. }
            | Event::TaskFailed { job, .. }
            | Event::TaskCancelled { job, .. }
            | Event::QueuedCancelled { job, .. }
            | Event::WorkerBlocklisted { job, .. }
            | Event::JobCancelled { job }
            | Event::JobFinished { job, .. } => job,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub job: JobId,
    pub task: TaskId,
    pub position: Position,
    pub attempt: u32,
    pub lease_until: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatReply {
    /// Carry on; the lease is renewed.
    Continue,
    /// The job was cancelled: stop, and report nothing more.
    Cancel,
    /// This attempt is no longer the task's (it expired and went to another
    /// worker, or the task ended): stop and drop the result.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("no job '{0}'")]
    UnknownJob(JobId),
    #[error("job '{0}' exists already")]
    DuplicateJob(JobId),
    #[error("job '{0}' has no tasks")]
    EmptyJob(JobId),
    #[error("job '{job}' has no task '{task}'")]
    UnknownTask { job: JobId, task: TaskId },
    #[error("job '{job}' lists task '{task}' twice")]
    DuplicateTask { job: JobId, task: TaskId },
}

struct Job {
    /// Its tasks' ids by position (`spec.tasks`).
    spec: JobSpec,
    /// Its place in the serving order: (-priority, submission order).
    rank: Rank,
    cancelled: bool,
    finished: bool,
    /// Each task's position, by id: how reports, which name tasks, find them.
    positions: HashMap<TaskId, Position>,
    /// Each task's state, by position.
    states: Vec<TaskState>,
    /// Tasks waiting for a worker, in order.
    queue: VecDeque<Position>,
    /// Tasks per state, kept in step with `states` by `set_state`.
    counts: Counts,
    /// Failed attempts per worker.
    failures_by_worker: HashMap<WorkerId, u32>,
    /// Workers kept off the job, until when.
    blocklist: HashMap<WorkerId, Instant>,
    /// How many times each task was given back by a worker that stopped.
    given_back: HashMap<Position, u32>,
}

impl Counts {
    /// The tasks in `phase`.
    pub fn of(&self, phase: Phase) -> usize {
        let mut counts = *self;
        *counts.slot(phase)
    }

    fn slot(&mut self, phase: Phase) -> &mut usize {
        match phase {
            Phase::Queued => &mut self.queued,
            Phase::Running => &mut self.running,
            Phase::Done => &mut self.done,
            Phase::Failed => &mut self.failed,
            Phase::Cancelled => &mut self.cancelled,
        }
    }
}

impl Job {
    /// Whether `worker` is kept off this job at `now`.
    fn blocked(&mut self, worker: &str, now: Instant) -> bool {
        match self.blocklist.get(worker) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.blocklist.remove(worker);
                false
            }
            None => false,
        }
    }

    fn counts(&self) -> Counts {
        self.counts
    }

    fn id(&self, position: Position) -> &TaskId {
        &self.spec.tasks[position as usize]
    }

    fn state(&self, position: Position) -> &TaskState {
        &self.states[position as usize]
    }

    /// Every change of a task's state goes through here, so the counts stay exact
    /// without scanning the tasks (grids have a million of them).
    fn set_state(&mut self, position: Position, new: TaskState) {
        *self.counts.slot(new.phase()) += 1;
        let old = std::mem::replace(&mut self.states[position as usize], new);
        *self.counts.slot(old.phase()) -= 1;
    }

    fn cancel_requested(&self, position: Position) -> bool {
        matches!(
            self.state(position),
            TaskState::Running {
                cancel_requested: true,
                ..
            }
        )
    }
}

#[derive(Default)]
pub struct Scheduler {
    config: SchedulerConfig,
    jobs: HashMap<JobId, Job>,
    /// Every job in serving order: (-priority, submission order), so that ties
    /// are served first come, first served.
    order: BTreeMap<Rank, JobId>,
    /// The jobs with queued tasks, in serving order: all a lease looks at, so
    /// that finished and fully leased jobs cost it nothing.
    waiting: BTreeSet<Rank>,
    /// When to look at each running attempt again (its lease's end, its time
    /// limit), soonest first. A renewed lease adds a later entry; entries that
    /// no longer match their task are dropped when they come up.
    deadlines: BinaryHeap<Reverse<Deadline>>,
    next_seq: u64,
    events: Vec<Event>,
}

/// A job's place in the serving order.
type Rank = (i64, u64);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at: Instant,
    job: JobId,
    task: Position,
    attempt: u32,
}

impl Deadline {
    fn new(at: Instant, job: &str, task: Position, attempt: u32) -> Deadline {
        Deadline {
            at,
            job: job.to_owned(),
            task,
            attempt,
        }
    }
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            ..Scheduler::default()
        }
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// The events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn submit(&mut self, spec: JobSpec) -> Result<(), SchedulerError> {
        self.add(NewJob::new(spec, |_| None)?)
    }

    /// Re-creates a job with the task states it had (a restarted coordinator):
    /// tasks that were running keep their attempt and worker, with a fresh lease,
    /// so that a worker still rendering one is re-adopted by its next heartbeat and
    /// one that is gone is re-leased when the lease expires.
    pub fn restore(
        &mut self,
        spec: JobSpec,
        cancelled: bool,
        states: &HashMap<TaskId, TaskState>,
        given_back: &HashMap<TaskId, u32>,
        now: Instant,
    ) -> Result<(), SchedulerError> {
        let lease_until = now + self.config.lease_timeout;
        // The time an attempt ran before the restart is not known: it gets its
        // job's whole limit again.
        let time_limit_at = spec.max_task_time.and_then(|limit| now.checked_add(limit));
        let id = spec.id.clone();
        let new = NewJob::new(spec, |task| {
            states.get(task).map(|state| match state {
                TaskState::Running {
                    attempt,
                    worker,
                    cancel_requested,
                    ..
                } => TaskState::Running {
                    attempt: *attempt,
                    worker: worker.clone(),
                    lease_until,
                    time_limit_at,
                    cancel_requested: *cancel_requested || cancelled,
                },
                TaskState::Queued { .. } if cancelled => TaskState::Cancelled,
                other => other.clone(),
            })
        })?;
        self.add(new)?;
        let job = self.jobs.get_mut(&id).expect("inserted");
        job.cancelled = cancelled;
        job.given_back = given_back
            .iter()
            .filter_map(|(task, count)| Some((*job.positions.get(task)?, *count)))
            .collect();
        job.finished = job.counts().finished();
        self.events.clear();
        Ok(())
    }

    /// Adds a job built by [`NewJob::new`] (without the scheduler, so that a
    /// large one does not hold it up).
    pub fn add(&mut self, new: NewJob) -> Result<(), SchedulerError> {
        let NewJob { mut job, deadlines } = new;
        if self.jobs.contains_key(&job.spec.id) {
            return Err(SchedulerError::DuplicateJob(job.spec.id));
        }
        job.rank = (-i64::from(job.spec.priority), self.next_seq);
        self.next_seq += 1;
        self.deadlines.extend(deadlines.into_iter().map(Reverse));
        self.order.insert(job.rank, job.spec.id.clone());
        if !job.queue.is_empty() {
            self.waiting.insert(job.rank);
        }
        self.events.push(Event::JobSubmitted {
            job: job.spec.id.clone(),
            tasks: job.states.len(),
        });
        self.jobs.insert(job.spec.id.clone(), job);
        Ok(())
    }

    /// The next task for `worker`, if any is queued for a job it is not blocked from.
    pub fn lease(&mut self, worker: &str, now: Instant) -> Option<Lease> {
        let lease_until = now + self.config.lease_timeout;
        let (jobs, order) = (&mut self.jobs, &self.order);
        let rank = self.waiting.iter().copied().find(|rank| {
            let job = jobs.get_mut(&order[rank]).expect("ordered jobs exist");
            !job.blocked(worker, now)
        })?;
        let job_id = &self.order[&rank];
        let job = self.jobs.get_mut(job_id).expect("ordered jobs exist");
        let position = job
            .queue
            .pop_front()
            .expect("waiting jobs have queued tasks");
        if job.queue.is_empty() {
            self.waiting.remove(&rank);
        }
        let &TaskState::Queued { attempt } = job.state(position) else {
            unreachable!("only queued tasks are in the queue")
        };
        // A limit beyond what a clock can hold is no limit.
        let time_limit_at = job
            .spec
            .max_task_time
            .and_then(|limit| now.checked_add(limit));
        for at in std::iter::once(lease_until).chain(time_limit_at) {
            self.deadlines
                .push(Reverse(Deadline::new(at, job_id, position, attempt)));
        }
        job.set_state(
            position,
            TaskState::Running {
                attempt,
                worker: worker.to_owned(),
                lease_until,
                time_limit_at,
                cancel_requested: false,
            },
        );
        let task = job.id(position).clone();
        self.events.push(Event::TaskLeased {
            job: job_id.clone(),
            task: task.clone(),
            position,
            attempt,
            worker: worker.to_owned(),
        });
        Some(Lease {
            job: job_id.clone(),
            task,
            position,
            attempt,
            lease_until,
        })
    }

    /// The position of `task` if `attempt` by `worker` is still its current one.
    fn current(job: &Job, task: &str, attempt: u32, worker: &str) -> Option<Position> {
        let position = *job.positions.get(task)?;
        match job.state(position) {
            TaskState::Running {
                attempt: a,
                worker: w,
                ..
            } if *a == attempt && w == worker => Some(position),
            _ => None,
        }
    }

    /// Renews the lease of a running attempt, and tells its worker whether to go on.
    pub fn heartbeat(
        &mut self,
        job: &str,
        task: &str,
        attempt: u32,
        worker: &str,
        now: Instant,
    ) -> HeartbeatReply {
        let lease_timeout = self.config.lease_timeout;
        let Some(found) = self.jobs.get_mut(job) else {
            return HeartbeatReply::Stale;
        };
        let Some(position) = Self::current(found, task, attempt, worker) else {
            return HeartbeatReply::Stale;
        };
        let TaskState::Running {
            lease_until,
            cancel_requested,
            ..
        } = &mut found.states[position as usize]
        else {
            unreachable!("current attempts are running")
        };
        if *cancel_requested {
            return HeartbeatReply::Cancel;
        }
        *lease_until = now + lease_timeout;
        let due = Deadline::new(*lease_until, job, position, attempt);
        self.deadlines.push(Reverse(due));
        HeartbeatReply::Continue
    }

    /// A worker finished `attempt` and its outputs are stored. Returns false for a
    /// stale report, which changes nothing. Idempotent: the same report again
    /// (its reply was lost) is accepted and changes nothing.
    pub fn complete(&mut self, job_id: &str, task: &str, attempt: u32, worker: &str) -> bool {
        if let Ok(TaskState::Done {
            attempt: a,
            worker: w,
        }) = self.task_state(job_id, task)
        {
            return *a == attempt && w == worker;
        }
        let Some((job, position)) = self.current_job(job_id, task, attempt, worker) else {
            return false;
        };
        if job.cancel_requested(position) {
            // Finished anyway; the job no longer wants it.
            self.end_cancelled(job_id, position);
            return true;
        }
        job.set_state(
            position,
            TaskState::Done {
                attempt,
                worker: worker.to_owned(),
            },
        );
        self.events.push(Event::TaskDone {
            job: job_id.to_owned(),
            task: task.to_owned(),
            position,
            attempt,
            worker: worker.to_owned(),
        });
        self.finish_if_done(job_id);
        true
    }

    /// The job of a report and the task's position, if `attempt` by `worker` is
    /// still `task`'s current one; `None` for a stale report (unknown job, older
    /// attempt, other worker).
    fn current_job(
        &mut self,
        job_id: &str,
        task: &str,
        attempt: u32,
        worker: &str,
    ) -> Option<(&mut Job, Position)> {
        let job = self.jobs.get_mut(job_id)?;
        let position = Self::current(job, task, attempt, worker)?;
        Some((job, position))
    }

    /// Ends a running task of a cancelled job, however its worker last reported.
    fn end_cancelled(&mut self, job_id: &str, position: Position) {
        let job = self.jobs.get_mut(job_id).expect("caller checked");
        job.set_state(position, TaskState::Cancelled);
        self.events.push(Event::TaskCancelled {
            job: job_id.to_owned(),
            task: job.id(position).clone(),
            position,
        });
        self.finish_if_done(job_id);
    }

    /// A worker gave up on `attempt` at `now`, for `failure`'s reason: see
    /// [`Failure`]. Returns false for a stale report (the same report again
    /// among them), which changes nothing.
    #[allow(clippy::too_many_arguments)] // one report's fields, as the RPC has them
    pub fn fail(
        &mut self,
        job_id: &str,
        task: &str,
        attempt: u32,
        worker: &str,
        failure: Failure,
        error: &str,
        now: Instant,
    ) -> bool {
        let SchedulerConfig {
            blocklist_after,
            blocklist_for,
            ..
        } = self.config;
        let Some((job, position)) = self.current_job(job_id, task, attempt, worker) else {
            return false;
        };
        if job.cancel_requested(position) {
            self.end_cancelled(job_id, position);
            return true;
        }
        if failure == Failure::Worker {
            let failures = job.failures_by_worker.entry(worker.to_owned()).or_default();
            *failures += 1;
            if *failures >= blocklist_after {
                // Counted afresh once the blocklist ends.
                *failures = 0;
                job.blocklist.insert(worker.to_owned(), now + blocklist_for);
                self.events.push(Event::WorkerBlocklisted {
                    job: job_id.to_owned(),
                    worker: worker.to_owned(),
                });
            }
        }
        self.retry_or_fail(job_id, position, attempt, failure.retried(), error);
        true
    }

    /// A worker that is stopping hands `attempt` back: the task goes back to
    /// the queue as a new attempt that its attempt limit does not count, and
    /// the worker is not blamed. Returns false for a stale report.
    pub fn give_back(&mut self, job_id: &str, task: &str, attempt: u32, worker: &str) -> bool {
        let Some((job, position)) = self.current_job(job_id, task, attempt, worker) else {
            return false;
        };
        if job.cancel_requested(position) {
            self.end_cancelled(job_id, position);
            return true;
        }
        *job.given_back.entry(position).or_default() += 1;
        let reason = format!("given back by {worker}, which stopped");
        self.requeue(job_id, position, attempt + 1, reason, true);
        true
    }

    /// A worker stopped `attempt` when its heartbeat said the job was
    /// cancelled: the task ends cancelled. Returns false for a stale report, and
    /// for a task whose job asked for no cancel (it changes nothing then: the
    /// lease expires, and the task is tried again).
    pub fn acknowledge_cancel(
        &mut self,
        job_id: &str,
        task: &str,
        attempt: u32,
        worker: &str,
    ) -> bool {
        match self.current_job(job_id, task, attempt, worker) {
            Some((job, position)) if job.cancel_requested(position) => {
                self.end_cancelled(job_id, position);
                true
            }
            _ => false,
        }
    }

    /// Puts the task at `position` back at the end of the queue, as `attempt`.
    fn requeue(
        &mut self,
        job_id: &str,
        position: Position,
        attempt: u32,
        reason: String,
        given_back: bool,
    ) {
        let job = self.jobs.get_mut(job_id).expect("caller checked");
        job.set_state(position, TaskState::Queued { attempt });
        job.queue.push_back(position);
        if !job.cancelled {
            self.waiting.insert(job.rank);
        }
        self.events.push(Event::TaskRequeued {
            job: job_id.to_owned(),
            task: job.id(position).clone(),
            position,
            attempt,
            reason,
            given_back,
        });
    }

    fn retry_or_fail(
        &mut self,
        job_id: &str,
        position: Position,
        attempt: u32,
        retryable: bool,
        error: &str,
    ) {
        let job = self.jobs.get_mut(job_id).expect("caller checked");
        // Leases handed back by stopping workers are attempts, but not failures.
        let failed_attempts = attempt - job.given_back.get(&position).copied().unwrap_or(0);
        if retryable && failed_attempts < job.spec.max_attempts {
            self.requeue(job_id, position, attempt + 1, error.to_owned(), false);
        } else {
            let error = if retryable {
                format!("{error} (gave up after {attempt} attempts)")
            } else {
                error.to_owned()
            };
            job.set_state(
                position,
                TaskState::Failed {
                    attempt,
                    error: error.clone(),
                },
            );
            self.events.push(Event::TaskFailed {
                job: job_id.to_owned(),
                task: job.id(position).clone(),
                position,
                attempt,
                error,
            });
            self.finish_if_done(job_id);
        }
    }

    /// Requeues every running task whose lease ran out before `now` (its worker is
    /// presumed dead), and fails every one that ran past its job's
    /// `max_task_time`. Returns how many ended. Looks only at the attempts
    /// whose deadlines have come, not at every task.
    pub fn expire_leases(&mut self, now: Instant) -> usize {
        let mut ended = 0;
        while self
            .deadlines
            .peek()
            .is_some_and(|Reverse(due)| due.at <= now)
        {
            let Reverse(due) = self.deadlines.pop().expect("peeked");
            let Some(job) = self.jobs.get(&due.job) else {
                continue;
            };
            let &TaskState::Running {
                attempt,
                lease_until,
                time_limit_at,
                cancel_requested,
                ..
            } = job.state(due.task)
            else {
                continue;
            };
            let over_time = time_limit_at.is_some_and(|limit| limit <= now);
            if attempt != due.attempt || !(lease_until <= now || over_time) {
                continue; // a renewed lease, or another attempt
            }
            ended += 1;
            let (job_id, position) = (&due.job, due.task);
            if cancel_requested {
                self.end_cancelled(job_id, position);
            } else if over_time {
                let limit = job.spec.max_task_time.unwrap_or_default();
                let error = format!(
                    "ran longer than its max_task_time ({}); not tried again",
                    pastiche_spec::format_duration(limit)
                );
                self.retry_or_fail(job_id, position, attempt, false, &error);
            } else {
                self.retry_or_fail(
                    job_id,
                    position,
                    attempt,
                    true,
                    "lease expired: the worker stopped reporting",
                );
            }
        }
        ended
    }

    /// Forgets a job (the caller checked that it ended); its deadlines are
    /// dropped as they come up.
    pub fn remove(&mut self, job_id: &str) -> Result<(), SchedulerError> {
        let job = self
            .jobs
            .remove(job_id)
            .ok_or_else(|| SchedulerError::UnknownJob(job_id.to_owned()))?;
        self.order.remove(&job.rank);
        self.waiting.remove(&job.rank);
        Ok(())
    }

    /// Cancels a job: queued tasks at once, running ones at their next heartbeat.
    pub fn cancel(&mut self, job_id: &str) -> Result<(), SchedulerError> {
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| SchedulerError::UnknownJob(job_id.to_owned()))?;
        if job.cancelled || job.finished {
            return Ok(());
        }
        job.cancelled = true;
        self.waiting.remove(&job.rank);
        self.events.push(Event::JobCancelled {
            job: job_id.to_owned(),
        });
        let queued = std::mem::take(&mut job.queue);
        for &position in &queued {
            job.set_state(position, TaskState::Cancelled);
        }
        if !queued.is_empty() {
            self.events.push(Event::QueuedCancelled {
                job: job_id.to_owned(),
                tasks: queued.len(),
            });
        }
        for state in &mut job.states {
            if let TaskState::Running {
                cancel_requested, ..
            } = state
            {
                *cancel_requested = true;
            }
        }
        self.finish_if_done(job_id);
        Ok(())
    }

    fn finish_if_done(&mut self, job_id: &str) {
        let job = self.jobs.get_mut(job_id).expect("caller checked");
        let counts = job.counts();
        if !job.finished && counts.finished() {
            job.finished = true;
            self.events.push(Event::JobFinished {
                job: job_id.to_owned(),
                counts,
            });
        }
    }

    pub fn counts(&self, job: &str) -> Result<Counts, SchedulerError> {
        self.jobs
            .get(job)
            .map(Job::counts)
            .ok_or_else(|| SchedulerError::UnknownJob(job.to_owned()))
    }

    pub fn task_state(&self, job: &str, task: &str) -> Result<&TaskState, SchedulerError> {
        let found = self
            .jobs
            .get(job)
            .ok_or_else(|| SchedulerError::UnknownJob(job.to_owned()))?;
        found
            .positions
            .get(task)
            .map(|&position| found.state(position))
            .ok_or_else(|| SchedulerError::UnknownTask {
                job: job.to_owned(),
                task: task.to_owned(),
            })
    }

    pub fn is_cancelled(&self, job: &str) -> Result<bool, SchedulerError> {
        self.jobs
            .get(job)
            .map(|j| j.cancelled)
            .ok_or_else(|| SchedulerError::UnknownJob(job.to_owned()))
    }

    /// Jobs in serving order.
    pub fn jobs(&self) -> impl Iterator<Item = &JobSpec> {
        self.order.values().map(|id| &self.jobs[id].spec)
    }

    /// Tasks waiting for a worker, over all jobs that can still run.
    pub fn queue_depth(&self) -> usize {
        self.waiting
            .iter()
            .map(|rank| self.jobs[&self.order[rank]].queue.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCKLIST_FOR: Duration = Duration::from_secs(600);
    const LEASE: Duration = Duration::from_secs(10);

    fn scheduler() -> Scheduler {
        Scheduler::new(SchedulerConfig {
            lease_timeout: LEASE,
            blocklist_after: 2,
            blocklist_for: BLOCKLIST_FOR,
        })
    }

    fn job(id: &str, priority: i32, tasks: &[&str]) -> JobSpec {
        JobSpec {
            id: id.into(),
            priority,
            max_attempts: 3,
            max_task_time: None,
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// What the lease and the reaper rely on instead of scanning every job and
    /// task: the waiting set is exactly the jobs with queued tasks, and every
    /// running attempt has a deadline entry for its lease's end.
    fn assert_indexes_hold(s: &Scheduler) {
        let waiting: BTreeSet<Rank> = s
            .jobs
            .values()
            .filter(|job| !job.queue.is_empty())
            .map(|job| job.rank)
            .collect();
        assert_eq!(s.waiting, waiting);
        for (job_id, job) in &s.jobs {
            for (position, state) in (0..).zip(&job.states) {
                if let TaskState::Running {
                    attempt,
                    lease_until,
                    ..
                } = state
                {
                    let due = Deadline::new(*lease_until, job_id, position, *attempt);
                    assert!(
                        s.deadlines.iter().any(|Reverse(d)| *d == due),
                        "no deadline for {due:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_lease_and_reaper_indexes_follow_every_change() {
        let mut s = scheduler(); // leases of 10 s; blocklist after 2 failures
        let mut now = Instant::now();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.submit(job(id, i as i32 % 2, &["1", "2", "3", "4"]))
                .unwrap();
        }
        // A fixed pseudo-random mix of every operation (xorshift).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut running: Vec<Lease> = Vec::new();
        let workers = ["w1", "w2", "w3"];
        for _ in 0..400 {
            let worker = workers[next(3) as usize];
            match next(7) {
                0 | 1 => running.extend(s.lease(worker, now)),
                2 if !running.is_empty() => {
                    let l = running.swap_remove(next(running.len() as u64) as usize);
                    let w = s.task_worker(&l);
                    s.complete(&l.job, &l.task, l.attempt, &w);
                }
                3 if !running.is_empty() => {
                    let l = running.swap_remove(next(running.len() as u64) as usize);
                    let w = s.task_worker(&l);
                    let failure =
                        [Failure::Task, Failure::Worker, Failure::Transient][next(3) as usize];
                    s.fail(&l.job, &l.task, l.attempt, &w, failure, "x", now);
                }
                4 if !running.is_empty() => {
                    let l = &running[next(running.len() as u64) as usize];
                    let w = s.task_worker(l);
                    s.heartbeat(&l.job, &l.task, l.attempt, &w, now);
                }
                5 => {
                    now += Duration::from_secs(next(8));
                    s.expire_leases(now);
                }
                _ if next(20) == 0 => {
                    let _ = s.cancel(["a", "b", "c"][next(3) as usize]);
                }
                _ => {}
            }
            assert_indexes_hold(&s);
        }
    }

    impl Scheduler {
        /// The worker of a lease's task, if it still runs it (or "gone").
        fn task_worker(&self, lease: &Lease) -> String {
            match self.task_state(&lease.job, &lease.task) {
                Ok(TaskState::Running { worker, .. }) => worker.clone(),
                _ => "gone".into(),
            }
        }
    }

    #[test]
    fn store_outages_are_retried_and_blame_no_worker() {
        let mut s = scheduler(); // blocklist after 2 failures; 3 attempts
        let now = Instant::now();
        s.submit(job("j", 0, &["a", "b", "c"])).unwrap();
        for _ in 0..2 {
            let lease = s.lease("w", now).unwrap();
            let (task, attempt) = (lease.task, lease.attempt);
            assert!(s.fail("j", &task, attempt, "w", Failure::Transient, "s3 down", now));
            assert_eq!(
                s.task_state("j", &task),
                Ok(&TaskState::Queued { attempt: 2 })
            );
        }
        // Still leased to the same worker: no blocklist.
        assert_eq!(s.lease("w", now).unwrap().task, "c");
        assert!(!s
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::WorkerBlocklisted { .. })));
    }

    #[test]
    fn an_attempt_past_its_max_task_time_fails_the_task_without_a_retry() {
        let mut s = scheduler(); // leases of 10 s
        let t0 = Instant::now();
        let limit = Duration::from_secs(25);
        s.submit(JobSpec {
            max_task_time: Some(limit),
            ..job("j", 0, &["a"])
        })
        .unwrap();
        let a = s.lease("w", t0).unwrap();
        // Heartbeats keep the lease; the time limit still comes.
        for seconds in [8, 16, 24] {
            let now = t0 + Duration::from_secs(seconds);
            assert_eq!(s.expire_leases(now), 0);
            assert_eq!(
                s.heartbeat("j", "a", a.attempt, "w", now),
                HeartbeatReply::Continue
            );
        }
        assert_eq!(s.expire_leases(t0 + limit), 1);
        let TaskState::Failed { error, .. } = s.task_state("j", "a").unwrap() else {
            panic!("{:?}", s.task_state("j", "a"));
        };
        assert!(error.contains("max_task_time (25s)"), "{error}");
        assert_eq!(
            s.heartbeat("j", "a", a.attempt, "w", t0 + limit),
            HeartbeatReply::Stale,
            "the worker is told to stop"
        );
    }

    #[test]
    fn tasks_are_served_by_priority_then_submission_order() {
        let mut s = scheduler();
        let now = Instant::now();
        s.submit(job("low", 0, &["a", "b"])).unwrap();
        s.submit(job("high", 5, &["x"])).unwrap();
        s.submit(job("low2", 0, &["c"])).unwrap();
        let order: Vec<String> = std::iter::from_fn(|| s.lease("w", now))
            .map(|l| l.task)
            .collect();
        assert_eq!(order, ["x", "a", "b", "c"]);
        assert_eq!(s.lease("w", now), None);
    }

    #[test]
    fn a_completed_job_finishes_once_with_its_counts() {
        let mut s = scheduler();
        let now = Instant::now();
        s.submit(job("j", 0, &["a", "b"])).unwrap();
        let a = s.lease("w1", now).unwrap();
        let b = s.lease("w2", now).unwrap();
        assert!(s.complete("j", &a.task, a.attempt, "w1"));
        assert!(
            s.complete("j", &a.task, a.attempt, "w1"),
            "the same report again (its reply was lost) is accepted"
        );
        assert!(
            !s.complete("j", &a.task, a.attempt + 1, "w2"),
            "another attempt's is stale"
        );
        assert!(s.complete("j", &b.task, b.attempt, "w2"));
        let counts = s.counts("j").unwrap();
        assert_eq!((counts.done, counts.total()), (2, 2));
        let finished: Vec<_> = s
            .take_events()
            .into_iter()
            .filter(|e| matches!(e, Event::JobFinished { .. }))
            .collect();
        assert_eq!(finished.len(), 1);
    }

    #[test]
    fn an_expired_lease_is_released_with_a_new_attempt_and_old_reports_are_ignored() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.submit(job("j", 0, &["a"])).unwrap();
        let first = s.lease("dead", t0).unwrap();
        assert_eq!(first.attempt, 1);
        // Heartbeats keep the lease alive past its first deadline.
        assert_eq!(
            s.heartbeat("j", "a", 1, "dead", t0 + LEASE / 2),
            HeartbeatReply::Continue
        );
        assert_eq!(s.expire_leases(t0 + LEASE), 0);
        // Then the worker goes silent.
        assert_eq!(s.expire_leases(t0 + LEASE * 2), 1);
        assert_eq!(
            s.task_state("j", "a").unwrap(),
            &TaskState::Queued { attempt: 2 }
        );
        let second = s.lease("alive", t0 + LEASE * 2).unwrap();
        assert_eq!(second.attempt, 2);
        // The first worker comes back: everything it says is stale.
        assert_eq!(
            s.heartbeat("j", "a", 1, "dead", t0 + LEASE * 2),
            HeartbeatReply::Stale
        );
        assert!(!s.complete("j", "a", 1, "dead"));
        assert!(!s.fail("j", "a", 1, "dead", Failure::Worker, "late", t0 + LEASE * 2));
        assert!(s.complete("j", "a", 2, "alive"));
        assert_eq!(
            s.task_state("j", "a").unwrap(),
            &TaskState::Done {
                attempt: 2,
                worker: "alive".into()
            }
        );
    }

    #[test]
    fn retryable_failures_retry_up_to_the_limit_and_fatal_ones_do_not() {
        let mut s = Scheduler::new(SchedulerConfig {
            lease_timeout: LEASE,
            blocklist_after: 100,
            blocklist_for: BLOCKLIST_FOR,
        });
        let now = Instant::now();
        s.submit(job("j", 0, &["a"])).unwrap();
        for attempt in 1..=3 {
            let lease = s.lease("w", now).unwrap();
            assert_eq!(lease.attempt, attempt);
            assert!(s.fail("j", "a", attempt, "w", Failure::Worker, "disk full", now));
        }
        match s.task_state("j", "a").unwrap() {
            TaskState::Failed { attempt: 3, error } => {
                assert!(
                    error.contains("disk full") && error.contains("3 attempts"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }

        s.submit(job("k", 0, &["c"])).unwrap();
        let c = s.lease("w", now).unwrap();
        assert!(s.fail(
            "k",
            "c",
            c.attempt,
            "w",
            Failure::Task,
            "corrupt image",
            now
        ));
        assert_eq!(
            s.task_state("k", "c").unwrap(),
            &TaskState::Failed {
                attempt: 1,
                error: "corrupt image".into()
            }
        );
    }

    #[test]
    fn a_retry_waits_behind_the_tasks_already_queued() {
        let mut s = scheduler();
        let now = Instant::now();
        s.submit(job("j", 0, &["a", "b"])).unwrap();
        let a = s.lease("w", now).unwrap();
        s.fail("j", "a", a.attempt, "w", Failure::Worker, "hiccup", now);
        let next: Vec<(String, u32)> = std::iter::from_fn(|| s.lease("v", now))
            .map(|l| (l.task, l.attempt))
            .collect();
        assert_eq!(next, [("b".to_string(), 1), ("a".to_string(), 2)]);
    }

    #[test]
    fn a_worker_that_keeps_failing_a_job_is_kept_off_it() {
        let mut s = scheduler(); // blocklist after 2 failures
        let now = Instant::now();
        s.submit(job("j", 0, &["a", "b", "c"])).unwrap();
        for _ in 0..2 {
            let lease = s.lease("flaky", now).unwrap();
            s.fail(
                "j",
                &lease.task,
                lease.attempt,
                "flaky",
                Failure::Worker,
                "oom",
                now,
            );
        }
        assert!(s.take_events().contains(&Event::WorkerBlocklisted {
            job: "j".into(),
            worker: "flaky".into()
        }));
        assert_eq!(s.lease("flaky", now), None, "blocklisted from j");
        // Other jobs still come its way, and other workers still take j.
        s.submit(job("other", 0, &["z"])).unwrap();
        assert_eq!(s.lease("flaky", now).unwrap().job, "other");
        assert_eq!(s.lease("good", now).unwrap().job, "j");
        // Until the blocklist ends.
        assert_eq!(s.lease("flaky", now + BLOCKLIST_FOR).unwrap().job, "j");
    }

    #[test]
    fn a_task_given_back_uses_up_no_attempt_and_blames_no_worker() {
        let mut s = scheduler(); // blocklist after 2 failures; 3 attempts
        let now = Instant::now();
        s.submit(job("j", 0, &["a"])).unwrap();
        // Five stopping workers in a row (a rolling update, scale-down, ...).
        for attempt in 1..=5 {
            let lease = s.lease("w", now).unwrap();
            assert_eq!(lease.attempt, attempt, "a new attempt each time");
            assert!(s.give_back("j", "a", attempt, "w"));
            assert!(
                !s.give_back("j", "a", attempt, "w"),
                "stale once given back"
            );
        }
        // Five give-backs did not put "w" on the blocklist (after 2 failures)...
        assert!(!s
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::WorkerBlocklisted { .. })));
        // ...and the task still has all three of its attempts to fail.
        for worker in ["x", "y", "z"] {
            let lease = s.lease(worker, now).unwrap();
            s.fail("j", "a", lease.attempt, worker, Failure::Worker, "oom", now);
        }
        assert!(matches!(
            s.task_state("j", "a").unwrap(),
            TaskState::Failed { attempt: 8, .. }
        ));
    }

    #[test]
    fn failures_of_the_task_itself_keep_no_worker_off_the_job() {
        let mut s = scheduler(); // blocklist after 2 failures
        let now = Instant::now();
        s.submit(job("j", 0, &["bad1", "bad2", "bad3", "good"]))
            .unwrap();
        for _ in 0..3 {
            let lease = s.lease("w", now).unwrap();
            s.fail(
                "j",
                &lease.task,
                lease.attempt,
                "w",
                Failure::Task,
                "not an image",
                now,
            );
        }
        assert_eq!(s.lease("w", now).unwrap().task, "good");
        assert!(!s
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::WorkerBlocklisted { .. })));
    }

    #[test]
    fn a_job_whose_every_worker_was_kept_off_it_still_finishes() {
        let mut s = scheduler(); // blocklist after 2 failures; 3 attempts
        let mut now = Instant::now();
        s.submit(job("j", 0, &["a", "b", "c", "d", "e"])).unwrap();
        // Two workers, and every attempt fails on them (a bad driver, say).
        let mut rounds = 0;
        while !s.counts("j").unwrap().finished() {
            rounds += 1;
            assert!(rounds <= 30, "stuck: {:?}", s.counts("j"));
            let lease = ["w1", "w2"]
                .iter()
                .find_map(|w| s.lease(w, now).map(|l| (w, l)));
            match lease {
                Some((worker, l)) => {
                    s.fail(
                        "j",
                        &l.task,
                        l.attempt,
                        worker,
                        Failure::Worker,
                        "device lost",
                        now,
                    );
                }
                None => now += BLOCKLIST_FOR, // both kept off: wait it out
            }
        }
        assert_eq!(s.counts("j").unwrap().failed, 5);
    }

    #[test]
    fn cancelling_drops_queued_tasks_and_stops_running_ones_at_their_heartbeat() {
        let mut s = scheduler();
        let now = Instant::now();
        s.submit(job("j", 0, &["a", "b", "c"])).unwrap();
        let a = s.lease("w1", now).unwrap();
        let b = s.lease("w2", now).unwrap();
        s.cancel("j").unwrap();
        assert_eq!(s.task_state("j", "c").unwrap(), &TaskState::Cancelled);
        assert_eq!(s.lease("w3", now), None);
        assert_eq!(
            s.heartbeat("j", &a.task, a.attempt, "w1", now),
            HeartbeatReply::Cancel
        );
        // w1 stops and says so; w2 finished just before it heard.
        assert!(s.acknowledge_cancel("j", &a.task, a.attempt, "w1"));
        assert!(s.complete("j", &b.task, b.attempt, "w2"));
        let counts = s.counts("j").unwrap();
        assert_eq!(
            counts,
            Counts {
                cancelled: 3,
                ..Counts::default()
            }
        );
        assert!(s
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::JobFinished { .. })));
        assert_eq!(s.queue_depth(), 0);
    }

    #[test]
    fn a_cancel_is_acknowledged_only_for_a_task_asked_to_stop() {
        let mut s = scheduler();
        let now = Instant::now();
        s.submit(job("j", 0, &["a"])).unwrap();
        let a = s.lease("w", now).unwrap();
        assert!(
            !s.acknowledge_cancel("j", "a", a.attempt, "w"),
            "no cancel asked"
        );
        assert!(matches!(
            s.task_state("j", "a").unwrap(),
            TaskState::Running { .. }
        ));
        s.cancel("j").unwrap();
        assert!(!s.acknowledge_cancel("j", "a", a.attempt, "other"), "stale");
        assert!(s.acknowledge_cancel("j", "a", a.attempt, "w"));
        assert_eq!(s.task_state("j", "a").unwrap(), &TaskState::Cancelled);
    }

    #[test]
    fn a_restored_job_keeps_finished_tasks_and_readopts_running_ones() {
        let mut s = scheduler();
        let t0 = Instant::now();
        let spec = job("j", 0, &["a", "b", "c"]);
        let states = HashMap::from([
            (
                "a".to_string(),
                TaskState::Done {
                    attempt: 1,
                    worker: "w1".into(),
                },
            ),
            (
                "b".to_string(),
                TaskState::Running {
                    attempt: 2,
                    worker: "w2".into(),
                    lease_until: t0,
                    time_limit_at: None,
                    cancel_requested: false,
                },
            ),
        ]);
        s.restore(spec, false, &states, &HashMap::new(), t0)
            .unwrap();
        // The running task's worker carries on and is re-adopted.
        assert_eq!(
            s.heartbeat("j", "b", 2, "w2", t0 + LEASE / 2),
            HeartbeatReply::Continue
        );
        // Only the task that never ran is queued.
        let lease = s.lease("w3", t0).unwrap();
        assert_eq!((lease.task.as_str(), lease.attempt), ("c", 1));
        assert_eq!(s.lease("w3", t0), None);
        assert!(s.complete("j", "b", 2, "w2"));
        assert!(s.complete("j", "c", 1, "w3"));
        assert_eq!(s.counts("j").unwrap().done, 3);
    }

    #[test]
    fn a_restored_running_task_whose_worker_is_gone_is_released() {
        let mut s = scheduler();
        let t0 = Instant::now();
        let states = HashMap::from([(
            "a".to_string(),
            TaskState::Running {
                attempt: 1,
                worker: "gone".into(),
                lease_until: t0,
                time_limit_at: None,
                cancel_requested: false,
            },
        )]);
        s.restore(job("j", 0, &["a"]), false, &states, &HashMap::new(), t0)
            .unwrap();
        assert_eq!(s.lease("w", t0), None);
        assert_eq!(s.expire_leases(t0 + LEASE), 1);
        assert_eq!(s.lease("w", t0 + LEASE).unwrap().attempt, 2);
    }

    #[test]
    fn bad_requests_are_errors() {
        let mut s = scheduler();
        s.submit(job("j", 0, &["a"])).unwrap();
        assert_eq!(
            s.submit(job("j", 0, &["a"])),
            Err(SchedulerError::DuplicateJob("j".into()))
        );
        assert_eq!(
            s.submit(job("e", 0, &[])),
            Err(SchedulerError::EmptyJob("e".into()))
        );
        assert_eq!(
            s.submit(job("d", 0, &["a", "b", "a"])),
            Err(SchedulerError::DuplicateTask {
                job: "d".into(),
                task: "a".into()
            })
        );
        assert_eq!(
            s.cancel("nope"),
            Err(SchedulerError::UnknownJob("nope".into()))
        );
        assert!(s.task_state("j", "zz").is_err());
        assert!(!s.complete("nope", "a", 1, "w"));
    }
}
