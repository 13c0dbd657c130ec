//! Finished jobs' reports (pastiche-report): made from what the coordinator
//! knows of a job, or, when no coordinator knows it any more, from what the
//! store holds; written into the store as each job finishes (and, after a
//! restart, for those that finished unreported before it), then announced to
//! the job's watchers.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, MutexGuard};

use anyhow::{Context, Result};
use pastiche_report::{
    build_report, input_label, style_label, write_to_store, Outcome, ReportJob, ReportOptions,
    ReportTask, MAX_REPORT_TASKS,
};
use pastiche_spec::store::{Store, StoreError};
use pastiche_spec::{layout, FinishedTask};

use super::{Coordinator, JobChange, JobEvent, ReportReady, TaskInfo};
use crate::scheduler::Phase;

/// The report's view of a job, from the coordinator's task list and what
/// people call the job's inputs (`names`, by key: see
/// [`pastiche_spec::input_names`]).
pub fn from_tasks(
    id: &str,
    name: &str,
    tasks: Vec<TaskInfo>,
    names: &BTreeMap<String, String>,
) -> ReportJob {
    let tasks = tasks
        .into_iter()
        .map(|task| ReportTask {
            outcome: match task.phase {
                Phase::Done => Outcome::Done,
                Phase::Failed => Outcome::Failed { error: task.error },
                Phase::Cancelled => Outcome::Cancelled,
                Phase::Queued | Phase::Running => Outcome::Unfinished,
            },
            id: task.id,
            params: task.params,
            content_name: input_label(&task.content_key, names),
            style_name: style_label(&task.style_key, names),
            content_key: task.content_key,
            style_key: task.style_key,
            attempts: task.attempts,
        })
        .collect();
    ReportJob {
        slice: None,
        id: id.to_owned(),
        name: name.to_owned(),
        tasks,
    }
}

/// The report's view of a job from the store alone: its `job.toml` names the
/// tasks, and a task with a `task.json` is done. Failed and cancelled tasks cannot
/// be told apart from unfinished ones this way.
pub async fn from_store(store: &Store, job: &str) -> Result<ReportJob> {
    let key = layout::job_grid_key(job)?;
    let text = match store.get(&key).await {
        Err(StoreError::NotFound { .. }) => {
            anyhow::bail!(
                "job '{job}' is not in the store {}: it has no {key}",
                store.root()
            )
        }
        other => other?,
    };
    let text = String::from_utf8(text.to_vec()).with_context(|| format!("{key} is not text"))?;
    let grid = pastiche_spec::parse_grid(std::path::Path::new(&key), &text)?;
    let names = pastiche_spec::input_names(&text);
    let mut tasks = Vec::new();
    for (id, task) in grid.identified_tasks() {
        let record = layout::task_record_key(job, &id)?;
        let attempts = match store.get(&record).await {
            Ok(bytes) => FinishedTask::attempt_in(&bytes),
            Err(_) => None,
        };
        tasks.push(ReportTask {
            outcome: if attempts.is_some() {
                Outcome::Done
            } else {
                Outcome::Unfinished
            },
            attempts: attempts.unwrap_or(0),
            id,
            params: (*task.params).clone(),
            content_name: input_label(&task.content, &names),
            style_name: style_label(&task.style.to_string(), &names),
            content_key: task.content.clone(),
            style_key: task.style.to_string(),
        });
    }
    Ok(ReportJob {
        slice: None,
        id: job.to_owned(),
        name: grid.name,
        tasks,
    })
}

/// Builds the report and puts it under `jobs/<job>/report/`; returns the key of
/// its index page.
pub async fn write_in_store(store: &Store, job: &ReportJob) -> Result<String> {
    let files = build_report(store, job, &ReportOptions::default()).await?;
    write_to_store(store, &job.id, &files).await?;
    Ok(pastiche_report::index_key(&job.id)?)
}

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
pub(super) struct ReportPending;

impl Coordinator {
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
        let backlog = self.state().unreported_jobs().unwrap_or_else(|err| {
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
        let ready = ReportReady {
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
        let event = JobEvent {
            status,
            change: Some(JobChange::Report(ready)),
        };
        self.publish(&job, event, true);
    }

    pub(super) fn reports_pending(&self) -> MutexGuard<'_, HashSet<String>> {
        self.reports_pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// For a watcher of a job that has ended: whether its report is still to
    /// come, or else the event that says where it is (none: no report).
    pub(super) async fn report_of_ended_job(
        &self,
        job: &str,
    ) -> Result<Option<JobEvent>, ReportPending> {
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
        let Ok(status) = self.status(job) else {
            return Ok(None);
        };
        Ok(Some(JobEvent {
            status,
            change: Some(JobChange::Report(ReportReady {
                index_key,
                error: String::new(),
                store: store.root().to_owned(),
            })),
        }))
    }

    fn note_reported(&self, job: &str, note: &str) {
        if let Err(err) = self.state().mark_reported(job, note) {
            tracing::warn!(%job, error = %err, "noting the report in the database failed");
        }
    }

    async fn write_report(&self, store: &Store, job: &str) -> Result<String, ReportFailure> {
        let status = self.status(job).map_err(anyhow::Error::from)?;
        let total = status.counts.total();
        // A report shows a grid people can look at; a larger job is looked at
        // in slices, on request. Counted before its task list is read.
        if total > MAX_REPORT_TASKS {
            return Err(ReportFailure::Declined(format!(
                "{total} tasks are more than the {MAX_REPORT_TASKS} one report shows; \
                 run `pastiche report {job} --only PARAM=VALUE --out DIR` for slices"
            )));
        }
        let tasks = self.tasks(job).map_err(anyhow::Error::from)?;
        let names = self.input_names(job).map_err(anyhow::Error::from)?;
        let report = from_tasks(job, &status.name, tasks, &names);
        // Drawing the sheet and plots is CPU work: off the runtime's threads.
        let store = store.clone();
        let runtime = tokio::runtime::Handle::current();
        let written =
            tokio::task::spawn_blocking(move || runtime.block_on(write_in_store(&store, &report)))
                .await
                .map_err(anyhow::Error::from)??;
        Ok(written)
    }
}
