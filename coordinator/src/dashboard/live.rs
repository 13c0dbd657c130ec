//! What the dashboard knows of running tasks beyond the database: their latest
//! progress and losses, from the workers' heartbeats as the coordinator
//! broadcasts them. Entries go when their attempt ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;

use crate::core::{Coordinator, JobChange};

/// Total losses kept per running task, for its chart.
const LOSSES_KEPT: usize = 60;

/// A running task as its worker last reported it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Running {
    pub worker: String,
    pub iteration: u32,
    pub iterations: u32,
    /// (iteration, total loss), oldest first.
    pub totals: VecDeque<(u32, f64)>,
    /// The iteration of the latest preview stored; 0 for none.
    pub preview_iteration: u32,
}

#[derive(Default)]
pub struct Live {
    /// By job, then task.
    running: Mutex<HashMap<String, HashMap<String, Running>>>,
}

impl Live {
    /// Follows `coordinator`'s events from now on, in the background.
    pub fn follow(coordinator: &Arc<Coordinator>) -> Arc<Live> {
        let live = Arc::new(Live::default());
        let mut events = coordinator.all_events();
        let following = Arc::clone(&live);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(broadcast) => following.apply(broadcast.job(), &broadcast.event().change),
                    // Missed some: the next heartbeats fill it in again.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        live
    }

    fn apply(&self, job: &str, change: &Option<JobChange>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match change {
            Some(JobChange::Progress(p)) => {
                let task = running
                    .entry(job.to_owned())
                    .or_default()
                    .entry(p.task.clone())
                    .or_default();
                task.worker.clone_from(&p.worker);
                task.iteration = p.progress.iteration;
                task.iterations = p.progress.iterations;
                task.preview_iteration = task.preview_iteration.max(p.progress.preview_iteration);
                if let Some(latest) = p.progress.latest {
                    if task
                        .totals
                        .back()
                        .is_none_or(|(i, _)| *i < latest.iteration)
                    {
                        task.totals.push_back((latest.iteration, latest.total));
                        if task.totals.len() > LOSSES_KEPT {
                            task.totals.pop_front();
                        }
                    }
                }
            }
            Some(JobChange::TaskEnded { task, .. }) => {
                if let Some(tasks) = running.get_mut(job) {
                    tasks.remove(task);
                    if tasks.is_empty() {
                        running.remove(job);
                    }
                }
            }
            Some(JobChange::Report(_)) | None => {}
        }
    }

    /// `job`'s running tasks as last reported, by task.
    pub fn running(&self, job: &str) -> HashMap<String, Running> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(job).cloned().unwrap_or_default()
    }
}
