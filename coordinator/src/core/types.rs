//! What the coordinator's core takes and returns. No protobuf here: the gRPC
//! adapter ([`crate::grpc`]) turns these into messages and back.

use std::time::Duration;

use pastiche_spec::{LossRecord, RenderParams};

use crate::scheduler::{Counts, Failure, Phase};

/// A grid sent to be rendered, its inputs already in the store.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub grid_toml: String,
    /// Where the grid came from, for messages; empty for `grid.toml`.
    pub grid_name: String,
    pub priority: i32,
    /// Attempts per task, the first included; `None` for the coordinator's default.
    pub max_attempts: Option<u32>,
    /// Store a preview every this many iterations (0: never); `None` for what
    /// the grid says.
    pub preview_every: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub job: String,
    pub tasks: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Done,
    /// Ended with failed tasks.
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub job: String,
    pub name: String,
    pub state: JobState,
    pub counts: Counts,
    pub priority: i32,
    /// Seconds since the Unix epoch.
    pub submitted_at: i64,
}

impl JobStatus {
    pub fn ended(&self) -> bool {
        self.state != JobState::Running
    }
}

/// A task of a job and where it stands: the task list, and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    pub id: String,
    pub phase: Phase,
    /// Attempts made so far (a running task's current one included).
    pub attempts: u32,
    /// Why it failed, for failed tasks.
    pub error: String,
    pub params: RenderParams,
    pub content_key: String,
    pub style_key: String,
}

/// One worker's attempt at one task: what each of the worker's reports on it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub worker: String,
    pub job: String,
    pub task: String,
    pub attempt: u32,
}

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub job: String,
    pub task: String,
    pub attempt: u32,
    pub params: RenderParams,
    /// Object keys of the inputs.
    pub content_key: String,
    pub style_key: String,
    /// The backbone's weights (a path or URL), empty for random weights.
    pub weights: String,
    pub lease_timeout: Duration,
    /// Store the current iterate as the task's preview every this many
    /// iterations; 0 for never.
    pub preview_every: u32,
}

/// A worker that joins the farm.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// Stable across restarts of the same worker, e.g. "host/cuda:0".
    pub name: String,
    pub device: String,
    pub device_name: String,
    pub device_memory_bytes: u64,
    /// The worker's store location (`Store::location`); empty: not said.
    pub store: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Unique to this registration.
    pub worker: String,
    pub lease_timeout: Duration,
}

/// Where a render stands, as its worker's heartbeat says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub iteration: u32,
    /// 0 while the worker is not rendering (fetching inputs, storing outputs).
    pub iterations: u32,
    pub latest: Option<LossRecord>,
    /// The iteration of the latest preview stored; 0 for none.
    pub preview_iteration: u32,
}

/// How a worker's attempt at a task ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Its outputs are stored.
    Done,
    Failed {
        failure: Failure,
        error: String,
    },
    /// The worker is stopping and hands the task back: requeued without using
    /// up one of its attempts.
    GivenBack,
    /// The worker stopped the task when told that its job was cancelled.
    CancelAcknowledged,
}

/// What watchers of a job are told: where it stands, and what just happened.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub status: JobStatus,
    pub change: Option<JobChange>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobChange {
    Progress(TaskProgress),
    TaskEnded {
        task: String,
        outcome: TaskOutcome,
        message: String,
    },
    /// The last event of a finished job when the coordinator writes reports.
    Report(ReportReady),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskProgress {
    pub task: String,
    pub worker: String,
    pub progress: Progress,
    /// Where the preview of `progress.preview_iteration` is; empty for none.
    pub preview_key: String,
}

/// How an attempt ended, for watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Done,
    Failed,
    Cancelled,
    /// Back in the queue for another attempt.
    Requeued,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportReady {
    /// The report's index page in the store; empty if there is none.
    pub index_key: String,
    pub error: String,
    /// The store `index_key` is in, as the coordinator names it.
    pub store: String,
}
