//! `--metrics-listen` on the real binaries: a small grid rendered for real, then
//! what Prometheus would scrape from the coordinator and the worker.

use std::io::BufReader;
use std::process::{Command, Stdio};
use std::time::Duration;

use pastiche_farm_tests::{
    bin, eventually, http_get, line_after, sample, succeeded, write_example_grid, Proc,
};

const TASKS: u32 = 2;
const ITERATIONS: u32 = 2;

#[test]
fn the_metrics_add_up_to_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");

    let mut coordinator = Command::new(bin("pastiche-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("state.db"))
        .env("RUST_LOG", "warn")
        .env_remove("PASTICHE_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut coordinator_out = BufReader::new(coordinator.stdout.take().unwrap());
    let _coordinator = Proc(coordinator);
    let url = format!(
        "http://{}",
        line_after(&mut coordinator_out, "listening on ").unwrap()
    );
    let coordinator_metrics = line_after(&mut coordinator_out, "metrics on ").unwrap();

    let mut worker = Command::new(bin("pastiche-worker"))
        .args([
            "--coordinator",
            &url,
            "--device",
            "cpu",
            "--name",
            "counted",
        ])
        .args(["--metrics-listen", "127.0.0.1:0", "--store"])
        .arg(&store)
        .env("RUST_LOG", "warn")
        .env_remove("PASTICHE_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut worker_out = BufReader::new(worker.stdout.take().unwrap());
    let _worker = Proc(worker);
    let worker_metrics = line_after(&mut worker_out, "metrics on ").unwrap();

    for addr in [&coordinator_metrics, &worker_metrics] {
        assert_eq!(http_get(addr, "/healthz"), (200, "ok".to_owned()));
    }

    let grid = write_example_grid(
        dir.path(),
        "counted",
        &format!("[grid]\nstyle_weight = [1e5, 1e6]\nsize = 32\niterations = {ITERATIONS}\n"),
    );
    let job = succeeded(
        Command::new(bin("pastiche"))
            .args(["submit", grid.to_str().unwrap(), "--coordinator", &url])
            .args(["--store", store.to_str().unwrap(), "--watch"])
            .env("RUST_LOG", "warn")
            .env_remove("PASTICHE_TOKEN")
            .output()
            .unwrap(),
    );

    // The job is done: the coordinator's numbers are final.
    let (code, text) = http_get(&coordinator_metrics, "/metrics");
    assert_eq!(code, 200, "{text}");
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    let tasks = |state: &str| {
        value(&format!(
            "pastiche_tasks{{job=\"{job}\",state=\"{state}\"}}"
        ))
    };
    assert_eq!(tasks("done"), f64::from(TASKS));
    for state in ["queued", "running", "failed", "cancelled"] {
        assert_eq!(tasks(state), 0.0, "{state}");
    }
    assert_eq!(value("pastiche_queue_depth"), 0.0);
    assert_eq!(
        value("pastiche_workers"),
        1.0,
        "the worker, waiting for work"
    );
    assert_eq!(value("pastiche_lease_expiries_total"), 0.0);
    assert_eq!(value("pastiche_task_retries_total"), 0.0);
    assert_eq!(
        value("pastiche_scheduling_latency_seconds_count"),
        f64::from(TASKS)
    );
    assert!(value("pastiche_scheduling_latency_seconds_sum") > 0.0);

    // The worker counts a task once it has reported it, which may be just after
    // the watch saw the job end.
    let text = eventually(Duration::from_secs(20), "the worker's last task", || {
        let (_, text) = http_get(&worker_metrics, "/metrics");
        let done = sample(&text, r#"pastiche_worker_tasks_total{outcome="done"}"#);
        (done == Some(f64::from(TASKS))).then_some(text)
    });
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    assert_eq!(
        value("pastiche_worker_iterations_total"),
        f64::from(TASKS * ITERATIONS)
    );
    assert!(value("pastiche_worker_iterations_per_second") > 0.0);
    assert_eq!(
        value("pastiche_worker_task_duration_seconds_count"),
        f64::from(TASKS)
    );
    assert!(value("pastiche_worker_device_memory_bytes") > 1e6);
    for outcome in ["failed", "cancelled", "stale"] {
        let name = format!("pastiche_worker_tasks_total{{outcome=\"{outcome}\"}}");
        assert_eq!(value(&name), 0.0, "{outcome}");
    }
}
