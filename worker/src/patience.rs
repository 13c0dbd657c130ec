//! How long the worker waits out what fails for a while: a coordinator that is
//! restarting or a connection cut mid-call, and a store that is briefly down.
//! Each is retried with a doubling delay; what fails for longer is reported.

use std::future::Future;
use std::time::Duration;

use pastiche_spec::store::StoreError;

/// How long a report of how a task ended keeps being retried.
pub const REPORT_PATIENCE: Duration = Duration::from_secs(60);
/// How long a completion keeps being retried: longer, because a result that
/// is stored but not reported costs the task an attempt when its lease runs
/// out (a restarted coordinator keeps the attempt, and takes the report).
pub const COMPLETE_PATIENCE: Duration = Duration::from_secs(600);
/// How long a store that is down is waited for before an attempt fails (as
/// [`Failure::Transient`](pastiche_proto::pb::Failure), which blames no worker).
pub const STORE_PATIENCE: Duration = Duration::from_secs(300);

/// Whether a call that failed with `status` may have failed for reasons that
/// pass: the coordinator away or restarting (`Unavailable`), a connection cut
/// mid-call (`Unknown`, `Internal`), or a reply that came too late
/// (`DeadlineExceeded`). Every task report is idempotent, so repeating one that
/// did arrive is harmless.
pub fn passes(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(
        status.code(),
        Unavailable | Unknown | DeadlineExceeded | Internal
    )
}

/// Makes `call` until it succeeds, fails for good (`passing` says it will not
/// pass), or `patience` runs out, doubling the delay between calls up to 15 s.
pub async fn retrying<T, E, F, Fut>(
    patience: Duration,
    doing: &str,
    passing: impl Fn(&E) -> bool,
    mut call: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(200);
    loop {
        match call().await {
            Err(error) if passing(&error) && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(%error, "{doing} failed; trying again in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            result => return result,
        }
    }
}

/// [`retrying`] a gRPC call for `patience`.
pub async fn retrying_rpc<T, F, Fut>(
    patience: Duration,
    doing: &str,
    call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    retrying(patience, doing, passes, call).await
}

/// [`retrying`] a store operation for [`STORE_PATIENCE`].
pub async fn retrying_store<T, F, Fut>(doing: &str, call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    retrying(STORE_PATIENCE, doing, StoreError::may_pass, call).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn passing_errors_are_retried_until_they_pass_and_others_are_not() {
        let calls = Cell::new(0);
        let result = retrying_rpc(Duration::from_secs(60), "reporting", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                match n {
                    1 => Err(tonic::Status::unknown("connection reset")),
                    2 => Err(tonic::Status::deadline_exceeded("late")),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);

        calls.set(0);
        let result: Result<(), _> = retrying_rpc(Duration::from_secs(60), "reporting", || {
            calls.set(calls.get() + 1);
            async { Err(tonic::Status::invalid_argument("bad")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(calls.get(), 1, "not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn patience_runs_out() {
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = retrying_rpc(Duration::from_secs(30), "reporting", || async {
            Err(tonic::Status::unavailable("away"))
        })
        .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
        let waited = started.elapsed();
        assert!(
            waited <= Duration::from_secs(30) && waited >= Duration::from_secs(15),
            "{waited:?}"
        );
    }
}
