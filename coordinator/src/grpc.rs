//! The coordinator's gRPC services over its core: `Farm` for users, `Workers` for
//! workers. Each call turns its message into the core's types, calls the core,
//! and turns the answer back; errors become statuses in `error.rs`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use pastiche_proto::pb;
use pastiche_proto::pb::farm_server::Farm;
use pastiche_proto::pb::workers_server::Workers;
use pastiche_proto::ConversionError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::core::{
    blocking, Assignment, Coordinator, Ending, JobChange, JobEvent, JobState, JobStatus, Progress,
    Registration, ReportReady, Submission, TaskInfo, TaskOutcome, TaskRef,
};
use crate::scheduler::{Counts, Failure, HeartbeatReply, Phase};

/// Tasks read from the database at a time by ListTasks.
const LIST_PAGE: u32 = 1000;

/// The user-facing service.
#[derive(Clone)]
pub struct FarmService(pub Arc<Coordinator>);

#[tonic::async_trait]
impl Farm for FarmService {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let r = request.into_inner();
        let submission = Submission {
            grid_toml: r.grid_toml,
            grid_name: r.grid_name,
            priority: r.priority,
            max_attempts: Some(r.max_attempts).filter(|&n| n > 0),
            preview_every: r.preview_every,
        };
        let coordinator = Arc::clone(&self.0);
        let submitted = blocking(move || coordinator.submit(submission)).await?;
        Ok(Response::new(pb::SubmitJobResponse {
            job_id: submitted.job,
            tasks: submitted.tasks as u32,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        let job = request.into_inner().job_id;
        let mut status: pb::JobStatus = self.0.status(&job)?.into();
        status.input_names = self.0.input_names(&job)?.into_iter().collect();
        Ok(Response::new(status))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self.0.list_jobs()?.into_iter().map(Into::into).collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let job = request.into_inner().job_id;
        let coordinator = Arc::clone(&self.0);
        blocking(move || coordinator.cancel(&job)).await?;
        Ok(Response::new(pb::CancelJobResponse {}))
    }

    type WatchJobStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let events = self.0.watch(&request.into_inner().job_id)?;
        let events = ReceiverStream::new(events)
            .map(|event| event.map(pb::JobEvent::from).map_err(Status::from));
        Ok(Response::new(Box::pin(events)))
    }

    async fn get_farm(
        &self,
        _request: Request<pb::GetFarmRequest>,
    ) -> Result<Response<pb::FarmInfo>, Status> {
        Ok(Response::new(pb::FarmInfo {
            store: self.0.store_location().unwrap_or_default(),
        }))
    }

    type ListTasksStream = Pin<Box<dyn Stream<Item = Result<pb::TaskInfo, Status>> + Send>>;

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<Self::ListTasksStream>, Status> {
        let r = request.into_inner();
        let (job, mut start) = (r.job_id, r.start);
        let mut left = (r.limit > 0).then_some(r.limit);
        // A stream (a big grid's list is larger than one message may be), read
        // from the database a page at a time. The first page is read here, so
        // that an unknown job is an error rather than an empty stream.
        let page = |coordinator: Arc<Coordinator>, job: String, start: u64, left: Option<u32>| {
            let limit = left.map_or(LIST_PAGE, |left| left.min(LIST_PAGE));
            blocking(move || coordinator.tasks_page(&job, start, Some(limit)))
        };
        let mut tasks = page(Arc::clone(&self.0), job.clone(), start, left).await?;
        let (send, receive) = tokio::sync::mpsc::channel(2);
        let coordinator = Arc::clone(&self.0);
        tokio::spawn(async move {
            loop {
                let full = tasks.len() as u32 == LIST_PAGE;
                start += tasks.len() as u64;
                left = left.map(|left| left - tasks.len() as u32);
                for task in tasks {
                    if send.send(Ok(task.into())).await.is_err() {
                        return; // the caller went away
                    }
                }
                if !full || left == Some(0) {
                    return;
                }
                tasks = match page(Arc::clone(&coordinator), job.clone(), start, left).await {
                    Ok(tasks) => tasks,
                    Err(err) => {
                        let _ = send.send(Err(err.into())).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receive))))
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let job = request.into_inner().job_id;
        let coordinator = Arc::clone(&self.0);
        blocking(move || coordinator.delete(&job)).await?;
        Ok(Response::new(pb::DeleteJobResponse {}))
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
        let r = request.into_inner();
        let registration = Registration {
            name: r.name,
            device: r.device,
            device_name: r.device_name,
            device_memory_bytes: r.device_memory_bytes,
            store: r.store,
        };
        // It records the worker's number in the database.
        let coordinator = Arc::clone(&self.0);
        let registered = blocking(move || coordinator.register(&registration)).await?;
        Ok(Response::new(pb::RegisterResponse {
            worker_id: registered.worker,
            lease_timeout_ms: millis(registered.lease_timeout),
        }))
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = request.into_inner();
        let wait = Duration::from_millis(r.wait_ms.into());
        let task = self.0.lease(&r.worker_id, wait).await?;
        Ok(Response::new(pb::LeaseResponse {
            task: task.map(Into::into),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let task = task_ref(r.task)?;
        let progress = Progress {
            iteration: r.iteration,
            iterations: r.iterations,
            latest: r.latest.as_ref().map(Into::into),
            preview_iteration: r.preview_iteration,
        };
        let directive = match self.0.heartbeat(&task, progress) {
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
    ) -> Result<Response<pb::TaskReportResponse>, Status> {
        end(&self.0, request.into_inner().task, Ending::Done).await
    }

    async fn fail(
        &self,
        request: Request<pb::FailRequest>,
    ) -> Result<Response<pb::TaskReportResponse>, Status> {
        let r = request.into_inner();
        let failure = match r.failure() {
            pb::Failure::Task => Failure::Task,
            pb::Failure::Transient => Failure::Transient,
            pb::Failure::Worker | pb::Failure::Unspecified => Failure::Worker,
        };
        let ending = Ending::Failed {
            failure,
            error: r.error,
        };
        end(&self.0, r.task, ending).await
    }

    async fn give_back(
        &self,
        request: Request<pb::GiveBackRequest>,
    ) -> Result<Response<pb::TaskReportResponse>, Status> {
        end(&self.0, request.into_inner().task, Ending::GivenBack).await
    }

    async fn acknowledge_cancel(
        &self,
        request: Request<pb::AcknowledgeCancelRequest>,
    ) -> Result<Response<pb::TaskReportResponse>, Status> {
        end(
            &self.0,
            request.into_inner().task,
            Ending::CancelAcknowledged,
        )
        .await
    }
}

/// The attempt a worker's message is about.
fn task_ref(task: Option<pb::TaskRef>) -> Result<TaskRef, Status> {
    let task = task.ok_or_else(|| Status::from(ConversionError::missing("task")))?;
    Ok(TaskRef {
        worker: task.worker_id,
        job: task.job_id,
        task: task.task_id,
        attempt: task.attempt,
    })
}

/// A worker's report of how `task` ended, off the runtime's threads.
async fn end(
    coordinator: &Arc<Coordinator>,
    task: Option<pb::TaskRef>,
    ending: Ending,
) -> Result<Response<pb::TaskReportResponse>, Status> {
    let task = task_ref(task)?;
    let coordinator = Arc::clone(coordinator);
    let accepted = blocking(move || coordinator.end(&task, ending)).await?;
    Ok(Response::new(pb::TaskReportResponse { accepted }))
}

fn millis(duration: Duration) -> u32 {
    duration.as_millis().try_into().unwrap_or(u32::MAX)
}

impl From<Counts> for pb::TaskCounts {
    fn from(c: Counts) -> Self {
        pb::TaskCounts {
            queued: c.queued as u32,
            running: c.running as u32,
            done: c.done as u32,
            failed: c.failed as u32,
            cancelled: c.cancelled as u32,
        }
    }
}

impl From<JobState> for pb::JobState {
    fn from(state: JobState) -> Self {
        match state {
            JobState::Running => pb::JobState::Running,
            JobState::Done => pb::JobState::Done,
            JobState::Failed => pb::JobState::Failed,
            JobState::Cancelled => pb::JobState::Cancelled,
        }
    }
}

impl From<JobStatus> for pb::JobStatus {
    fn from(status: JobStatus) -> Self {
        pb::JobStatus {
            job_id: status.job,
            name: status.name,
            state: pb::JobState::from(status.state).into(),
            counts: Some(status.counts.into()),
            priority: status.priority,
            submitted_at: status.submitted_at,
            input_names: Default::default(), // GetJob's alone
        }
    }
}

impl From<Phase> for pb::TaskState {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Queued => pb::TaskState::Queued,
            Phase::Running => pb::TaskState::Running,
            Phase::Done => pb::TaskState::Done,
            Phase::Failed => pb::TaskState::Failed,
            Phase::Cancelled => pb::TaskState::Cancelled,
        }
    }
}

impl TryFrom<pb::TaskState> for Phase {
    type Error = ConversionError;

    fn try_from(state: pb::TaskState) -> Result<Self, Self::Error> {
        Ok(match state {
            pb::TaskState::Queued => Phase::Queued,
            pb::TaskState::Running => Phase::Running,
            pb::TaskState::Done => Phase::Done,
            pb::TaskState::Failed => Phase::Failed,
            pb::TaskState::Cancelled => Phase::Cancelled,
            pb::TaskState::Unspecified => return Err(ConversionError::missing("state")),
        })
    }
}

impl From<TaskInfo> for pb::TaskInfo {
    fn from(task: TaskInfo) -> Self {
        pb::TaskInfo {
            state: pb::TaskState::from(task.phase).into(),
            attempt: task.attempts,
            error: task.error,
            params: Some((&task.params).into()),
            task_id: task.id,
            content_key: task.content_key,
            style_key: task.style_key,
        }
    }
}

/// The task list as the CLI receives it, for `pastiche report`.
impl TryFrom<pb::TaskInfo> for TaskInfo {
    type Error = ConversionError;

    fn try_from(task: pb::TaskInfo) -> Result<Self, Self::Error> {
        Ok(TaskInfo {
            phase: task.state().try_into()?,
            params: task
                .params
                .ok_or_else(|| ConversionError::missing("params"))?
                .try_into()?,
            id: task.task_id,
            attempts: task.attempt,
            error: task.error,
            content_key: task.content_key,
            style_key: task.style_key,
        })
    }
}

impl From<Assignment> for pb::TaskAssignment {
    fn from(a: Assignment) -> Self {
        pb::TaskAssignment {
            params: Some((&a.params).into()),
            job_id: a.job,
            task_id: a.task,
            attempt: a.attempt,
            content_key: a.content_key,
            style_key: a.style_key,
            weights: a.weights,
            lease_timeout_ms: millis(a.lease_timeout),
            preview_every: a.preview_every,
        }
    }
}

impl From<JobEvent> for pb::JobEvent {
    fn from(event: JobEvent) -> Self {
        use pb::job_event::Event;
        pb::JobEvent {
            status: Some(event.status.into()),
            event: event.change.map(|change| match change {
                JobChange::Progress(p) => Event::Progress(pb::TaskProgress {
                    task_id: p.task,
                    worker_id: p.worker,
                    iteration: p.progress.iteration,
                    iterations: p.progress.iterations,
                    latest: p.progress.latest.as_ref().map(Into::into),
                    preview_iteration: p.progress.preview_iteration,
                    preview_key: p.preview_key,
                }),
                JobChange::TaskEnded {
                    task,
                    outcome,
                    message,
                } => Event::TaskEnded(pb::TaskEnded {
                    task_id: task,
                    outcome: pb::TaskOutcome::from(outcome).into(),
                    message,
                }),
                JobChange::Report(ReportReady {
                    index_key,
                    error,
                    store,
                }) => Event::Report(pb::ReportReady {
                    index_key,
                    error,
                    store,
                }),
            }),
        }
    }
}

impl From<TaskOutcome> for pb::TaskOutcome {
    fn from(outcome: TaskOutcome) -> Self {
        match outcome {
            TaskOutcome::Done => pb::TaskOutcome::Done,
            TaskOutcome::Failed => pb::TaskOutcome::Failed,
            TaskOutcome::Cancelled => pb::TaskOutcome::Cancelled,
            TaskOutcome::Requeued => pb::TaskOutcome::Requeued,
        }
    }
}
