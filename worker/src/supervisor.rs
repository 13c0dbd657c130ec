//! `--gpus all`: one worker process per GPU, each restarted if it dies, and each
//! stopped with SIGTERM (not killed) so that it gives its task back. In a
//! Kubernetes pod only this process, PID 1, receives the pod's SIGTERM.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Wait between a child's death and its restart.
const RESTART_DELAY: Duration = Duration::from_secs(2);

/// Runs every `(name, command)` until `shutdown` resolves, then forwards SIGTERM
/// to each child and waits for it to exit. A child that exits with
/// `final_status` is not restarted and ends the supervision with an error; one
/// that exits successfully is not restarted either.
pub async fn supervise(
    children: Vec<(String, Command)>,
    final_status: i32,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    for (name, command) in children {
        running.spawn(keep_running(name, command, final_status, stopped.clone()));
    }
    let outcome = tokio::select! {
        () = shutdown => {
            tracing::info!("stopping the workers");
            Ok(())
        }
        ended = async {
            while let Some(child) = running.join_next().await {
                if let Ok(Err(err)) = child {
                    return Err(err);
                }
            }
            Ok(())
        } => ended,
    };
    // Also on an error: the other children give their tasks back.
    let _ = stop.send(true);
    while running.join_next().await.is_some() {}
    outcome
}

async fn keep_running(
    name: String,
    mut command: Command,
    final_status: i32,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // A safety net should this process die without stopping its children.
    command.kill_on_drop(true);
    loop {
        match command.spawn() {
            Ok(mut child) => {
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(s) if s.success() => return Ok(()),
                        Ok(s) if s.code() == Some(final_status) => {
                            anyhow::bail!("the worker {name} exited with status {final_status}; not restarting it")
                        }
                        Ok(s) => tracing::error!(worker = %name, status = %s, "worker died; restarting"),
                        Err(e) => tracing::error!(worker = %name, error = %e, "waiting for a worker failed; restarting"),
                    },
                    () = stop_requested(&mut stop) => {
                        terminate(&name, &mut child).await;
                        return Ok(());
                    }
                }
            }
            Err(e) => {
                tracing::error!(worker = %name, error = %e, "cannot start a worker; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RESTART_DELAY) => {}
            () = stop_requested(&mut stop) => return Ok(()),
        }
    }
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns must not live across an await.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// SIGTERM, then wait: the worker cancels its render and gives its task back.
async fn terminate(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        // Safety: signalling our own child, which has not been reaped (we hold it).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match child.wait().await {
        Ok(status) => tracing::info!(worker = %name, %status, "worker stopped"),
        Err(e) => tracing::warn!(worker = %name, error = %e, "waiting for a worker failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A stand-in worker: says it started, and on SIGTERM says so and exits 0.
    fn stand_in(dir: &Path, name: &str, first_run_fails_with: Option<i32>) -> (String, Command) {
        let fail_once = match first_run_fails_with {
            Some(code) => format!("[ -e {name}.ran ] || {{ touch {name}.ran; exit {code}; }}; "),
            None => String::new(),
        };
        let script = format!(
            "{fail_once}trap 'touch {name}.term; exit 0' TERM; touch {name}.started; \
             while :; do sleep 0.05; done"
        );
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).current_dir(dir);
        (name.to_owned(), command)
    }

    async fn until_exists(paths: &[PathBuf]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !paths.iter().all(|p| p.exists()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{paths:?} never appeared"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_reaches_every_worker_as_sigterm_and_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let started = [dir.path().join("a.started"), dir.path().join("b.started")];
        let children = vec![
            stand_in(dir.path(), "a", None),
            // b dies once first: it is restarted.
            stand_in(dir.path(), "b", Some(1)),
        ];
        let shutdown = until_exists(&started);
        supervise(children, 3, shutdown).await.unwrap();
        // Each exited through its SIGTERM trap before supervise returned.
        assert!(dir.path().join("a.term").exists());
        assert!(dir.path().join("b.term").exists());
        assert!(dir.path().join("b.ran").exists());
    }

    #[tokio::test]
    async fn a_worker_with_the_final_status_is_not_restarted_and_the_rest_stop() {
        let dir = tempfile::tempdir().unwrap();
        let children = vec![
            stand_in(dir.path(), "ok", None),
            stand_in(dir.path(), "refused", Some(3)),
        ];
        let err = supervise(children, 3, std::future::pending())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused") && err.contains("status 3"), "{err}");
        assert!(
            !dir.path().join("refused.started").exists(),
            "not restarted"
        );
        // The other one was stopped with SIGTERM, if it got as far as its trap.
        if dir.path().join("ok.started").exists() {
            assert!(dir.path().join("ok.term").exists());
        }
    }
}
