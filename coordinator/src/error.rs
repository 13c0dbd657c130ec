//! The coordinator's errors, and the one place they become gRPC statuses.

use tonic::{Code, Status};

use crate::scheduler::SchedulerError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("no job '{0}'")]
    UnknownJob(String),
    #[error("{0}")]
    BadGrid(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "the worker's store is {worker}, but this farm's (the coordinator's --store) is \
         {farm}: give the worker --store {farm}"
    )]
    WrongStore { worker: String, farm: String },
    #[error("job '{0}' is still running: cancel it first (pastiche cancel {0})")]
    JobRunning(String),
    #[error("the coordinator is shutting down; watch again once it is back")]
    ShuttingDown,
    /// Work handed to a thread of its own did not come back (it panicked).
    #[error("coordinator task failed: {0}")]
    Interrupted(String),
}

impl From<CoordinatorError> for Status {
    fn from(err: CoordinatorError) -> Self {
        let code = match &err {
            CoordinatorError::UnknownJob(_)
            | CoordinatorError::Scheduler(SchedulerError::UnknownJob(_)) => Code::NotFound,
            CoordinatorError::Scheduler(SchedulerError::UnknownTask { .. }) => Code::NotFound,
            CoordinatorError::Scheduler(SchedulerError::DuplicateJob(_)) => Code::AlreadyExists,
            CoordinatorError::BadGrid(_)
            | CoordinatorError::BadRequest(_)
            | CoordinatorError::Scheduler(
                SchedulerError::EmptyJob(_) | SchedulerError::DuplicateTask { .. },
            ) => Code::InvalidArgument,
            CoordinatorError::WrongStore { .. } | CoordinatorError::JobRunning(_) => {
                Code::FailedPrecondition
            }
            CoordinatorError::ShuttingDown => Code::Unavailable,
            CoordinatorError::State(_) | CoordinatorError::Interrupted(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %err, "internal error");
        }
        Status::new(code, err.to_string())
    }
}
