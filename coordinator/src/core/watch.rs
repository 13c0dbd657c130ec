//! Watching a job: every change of it, as [`JobEvent`]s, from its status at the
//! start until it finishes (and, with reports, until its report is written).

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::{Coordinator, JobChange, JobEvent, TaskOutcome};
use crate::error::CoordinatorError;
use crate::scheduler::Event;

/// A job event on its way to the watchers of that job (and to the dashboard,
/// which hears every job's).
#[derive(Clone)]
pub struct Broadcast {
    job: String,
    event: JobEvent,
    /// The job's last event: its watchers stop here.
    finished: bool,
}

impl Broadcast {
    pub fn job(&self) -> &str {
        &self.job
    }

    pub fn event(&self) -> &JobEvent {
        &self.event
    }
}

/// What watchers hear of a scheduler event: how a task ended, if it did.
pub(super) fn task_ended(event: &Event) -> Option<JobChange> {
    let (task, outcome, message) = match event {
        Event::TaskRequeued { task, reason, .. } => (task, TaskOutcome::Requeued, reason.as_str()),
        Event::TaskDone { task, .. } => (task, TaskOutcome::Done, ""),
        Event::TaskFailed { task, error, .. } => (task, TaskOutcome::Failed, error.as_str()),
        Event::TaskCancelled { task, .. } => (task, TaskOutcome::Cancelled, ""),
        Event::JobSubmitted { .. }
        | Event::TaskLeased { .. }
        | Event::WorkerBlocklisted { .. }
        | Event::JobCancelled { .. }
        // The job's counts say it: one message per task would be a million.
        | Event::QueuedCancelled { .. }
        | Event::JobFinished { .. } => return None,
    };
    Some(JobChange::TaskEnded {
        task: task.clone(),
        outcome,
        message: message.to_owned(),
    })
}

/// Whether a scheduler event may have put a task in the queue, for workers
/// waiting in a lease call.
pub(super) fn makes_work(event: &Event) -> bool {
    matches!(
        event,
        Event::JobSubmitted { .. } | Event::TaskRequeued { .. }
    )
}

impl Coordinator {
    /// Tells `job`'s watchers; `finished`: this is the last they hear of it.
    pub(super) fn publish(&self, job: &str, event: JobEvent, finished: bool) {
        let _ = self.events.send(Broadcast {
            job: job.to_owned(),
            event,
            finished,
        });
    }

    /// Every job's events from now on, as they happen (a receiver that falls
    /// behind misses some: see [`broadcast::error::RecvError::Lagged`]).
    pub fn all_events(&self) -> broadcast::Receiver<Broadcast> {
        self.events.subscribe()
    }

    /// The events of `job`, starting with where it stands now. The stream ends
    /// after the job's last event, or with [`CoordinatorError::ShuttingDown`].
    pub fn watch(
        self: &Arc<Self>,
        job: &str,
    ) -> Result<mpsc::Receiver<Result<JobEvent, CoordinatorError>>, CoordinatorError> {
        // Subscribe before reading the status, so that nothing falls in between.
        let mut events = self.events.subscribe();
        let status = self.status(job)?;
        let (tx, rx) = mpsc::channel(256);
        let coordinator = Arc::clone(self);
        let job = job.to_owned();
        tokio::spawn(async move {
            let ended = status.ended();
            let first = JobEvent {
                status,
                change: None,
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            if ended {
                match coordinator.report_of_ended_job(&job).await {
                    // Its broadcast is still to come: wait for it below.
                    Err(super::reports::ReportPending) => {}
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
                        let _ = tx.send(Err(CoordinatorError::ShuttingDown)).await;
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
                        let finished = status.ended();
                        let event = JobEvent {
                            status,
                            change: None,
                        };
                        if tx.send(Ok(event)).await.is_err() || finished {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }
}
