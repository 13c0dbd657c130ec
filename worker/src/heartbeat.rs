//! The heartbeat of a leased task, from its lease to its report. It runs on a
//! task of its own, so that a slow or unreachable coordinator never holds up the
//! render, its previews or the storing of its result; and each call has a
//! deadline, so that one lost reply only delays the next beat.

use std::time::Duration;

use pastiche_engine::spec::LossRecord;
use pastiche_proto::liveness;
use pastiche_proto::pb;
use pastiche_proto::pb::workers_client::WorkersClient;
use pastiche_proto::security::AuthChannel;
use tokio::sync::watch;

/// What the beats report of the render.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub iteration: u32,
    /// 0 while not rendering (fetching the inputs, storing the result).
    pub iterations: u32,
    pub latest: Option<LossRecord>,
    /// The iteration of the latest preview stored; 0 for none.
    pub preview_iteration: u32,
}

/// Beats until dropped; says when the coordinator wants the task stopped.
pub struct Heartbeat {
    progress: watch::Sender<Progress>,
    directive: watch::Receiver<pb::Directive>,
    client: WorkersClient<AuthChannel>,
    task: pb::TaskRef,
    beats: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Starts beating for `task` every `period`.
    pub fn start(client: WorkersClient<AuthChannel>, task: pb::TaskRef, period: Duration) -> Self {
        let (progress, progress_rx) = watch::channel(Progress::default());
        let (directive_tx, directive) = watch::channel(pb::Directive::Continue);
        let beats = tokio::spawn(beat(
            client.clone(),
            task.clone(),
            period,
            progress_rx,
            directive_tx,
        ));
        Heartbeat {
            progress,
            directive,
            client,
            task,
            beats,
        }
    }

    /// Updates what the next beat reports.
    pub fn report(&self, update: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(update);
    }

    /// Resolves once a beat was told to stop: `Cancel` or `Stale`.
    pub async fn stopped(&mut self) -> pb::Directive {
        let told = self
            .directive
            .wait_for(|d| *d != pb::Directive::Continue)
            .await
            .map(|directive| *directive);
        match told {
            Ok(directive) => directive,
            // The beats ended without being told to stop: never resolves.
            Err(_) => std::future::pending().await,
        }
    }

    /// Asks the coordinator now whether the lease still holds, as the last
    /// thing before the result is stored: `Stale` or `Cancel` if it said so
    /// (now or at an earlier beat); `Continue` if it said so, or could not be
    /// asked (the result's conditional write still fences it then).
    pub async fn check(&mut self) -> pb::Directive {
        let said = *self.directive.borrow();
        if said != pb::Directive::Continue {
            return said;
        }
        let request = pb::HeartbeatRequest {
            task: Some(self.task.clone()),
            ..Default::default()
        };
        match self.client.heartbeat(liveness::request(request)).await {
            Ok(reply) => match reply.into_inner().directive() {
                pb::Directive::Unspecified => pb::Directive::Continue,
                directive => directive,
            },
            Err(status) => {
                tracing::warn!(error = %status.message(), "checking the lease failed; storing the result anyway");
                pb::Directive::Continue
            }
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.beats.abort();
    }
}

async fn beat(
    mut client: WorkersClient<AuthChannel>,
    task: pb::TaskRef,
    period: Duration,
    progress: watch::Receiver<Progress>,
    directive: watch::Sender<pb::Directive>,
) {
    let mut ticks = tokio::time::interval(period);
    // A beat that was late (a slow reply) is followed by the next at once.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = *progress.borrow();
        let request = pb::HeartbeatRequest {
            task: Some(task.clone()),
            iteration: now.iteration,
            iterations: now.iterations,
            latest: now.latest.as_ref().map(Into::into),
            preview_iteration: now.preview_iteration,
        };
        match client.heartbeat(liveness::request(request)).await {
            Ok(reply) => match reply.into_inner().directive() {
                stop @ (pb::Directive::Cancel | pb::Directive::Stale) => {
                    directive.send_replace(stop);
                    return;
                }
                pb::Directive::Continue | pb::Directive::Unspecified => {}
            },
            Err(status) => {
                tracing::warn!(error = %status.message(), code = ?status.code(), "heartbeat failed")
            }
        }
    }
}
