//! A job's report (pastiche-report) from what the coordinator knows of the job, or,
//! when no coordinator knows it any more, from what the store holds.

use anyhow::{Context, Result};
use pastiche_proto::pb;
use pastiche_report::{
    build_report, write_to_store, Outcome, ReportJob, ReportOptions, ReportTask,
};
use pastiche_spec::store::{Store, StoreError};
use pastiche_spec::{layout, FinishedTask};

/// The report's view of a job, from the coordinator's task list.
pub fn from_task_list(id: &str, name: &str, tasks: Vec<pb::TaskInfo>) -> Result<ReportJob> {
    let tasks = tasks
        .into_iter()
        .map(|task| {
            let outcome = match task.state() {
                pb::TaskState::Done => Outcome::Done,
                pb::TaskState::Failed => Outcome::Failed {
                    error: task.error.clone(),
                },
                pb::TaskState::Cancelled => Outcome::Cancelled,
                pb::TaskState::Queued | pb::TaskState::Running | pb::TaskState::Unspecified => {
                    Outcome::Unfinished
                }
            };
            let params = task
                .params
                .with_context(|| format!("task {} has no parameters", task.task_id))?
                .try_into()?;
            Ok(ReportTask {
                id: task.task_id,
                params,
                content_key: task.content_key,
                style_key: task.style_key,
                outcome,
                attempts: task.attempt,
            })
        })
        .collect::<Result<_>>()?;
    Ok(ReportJob {
        slice: None,
        id: id.to_owned(),
        name: name.to_owned(),
        tasks,
    })
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
    let mut tasks = Vec::new();
    for (id, task) in grid.identified_tasks() {
        let record = layout::task_file_key(job, &id, layout::TASK_JSON)?;
        let attempts = match store.get(&record).await {
            Ok(bytes) => FinishedTask::from_json(&bytes).ok().map(|t| t.attempt),
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
            params: task.params.clone(),
            content_key: task.content.clone(),
            style_key: task.style.clone(),
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
