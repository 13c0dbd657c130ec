//! The coordinator's errors, and the one place that classes them: gRPC
//! statuses, and the dashboard's HTTP statuses from those.

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

impl CoordinatorError {
    /// What kind of error it is, as gRPC names kinds: the one place that decides.
    pub fn code(&self) -> Code {
        match self {
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
        }
    }
}

impl From<CoordinatorError> for Status {
    fn from(err: CoordinatorError) -> Self {
        let code = err.code();
        if code == Code::Internal {
            tracing::error!(error = %err, "internal error");
        }
        Status::new(code, err.to_string())
    }
}

/// The dashboard's answer to an error: the HTTP status of its [`code`](CoordinatorError::code).
impl axum::response::IntoResponse for CoordinatorError {
    fn into_response(self) -> axum::response::Response {
        use axum::http::StatusCode;
        let status = match self.code() {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => {
                tracing::error!(error = %self, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        crate::dashboard::refused(status, self.to_string())
    }
}
