//! What a worker killed late in a render costs, with checkpoints and without:
//! the real coordinator and worker binaries on the CPU, a local store, a
//! 600-iteration Adam render at 32 px whose worker is killed (SIGKILL) once it
//! reports iteration 540 (90%), and a second worker that finishes the task.
//! A measurement, not a check, so ignored by default:
//!
//!     cargo build --bins && cargo test --workspace --test resume_bench -- --ignored --nocapture
//!
//! Writes its table into BENCHMARKS.md between the `resume-bench` markers
//! (`PASTICHE_BENCH_NO_WRITE=1`: print it only).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pastiche_farm_tests::{
    bin, spawn_coordinator, succeeded, utc_now, write_benchmarks_section, write_example_grid, Proc,
};
use pastiche_proto::pb;
use pastiche_proto::pb::farm_client::FarmClient;

const ITERATIONS: u32 = 600;
const KILL_AT: u32 = 540;
/// Every 60: a checkpoint falls at 540, the best case; every 70: the last
/// one before the kill is at 490, 50 iterations back.
const EVERY: [u32; 2] = [60, 70];

fn worker(url: &str, store: &Path, name: &str, every: u32) -> Proc {
    Proc(
        Command::new(bin("pastiche-worker"))
            .args(["--coordinator", url, "--device", "cpu", "--name", name])
            .args(["--checkpoint-every", &every.to_string()])
            .arg("--store")
            .arg(store)
            .env("RUST_LOG", "warn")
            // One thread: on a shared machine libtorch's threads wait on each
            // other and the measurement would be of the load, not the farm.
            .env("OMP_NUM_THREADS", "1")
            .spawn()
            .unwrap(),
    )
}

fn pastiche(args: &[&str]) -> String {
    succeeded(
        Command::new(bin("pastiche"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap(),
    )
}

/// The iteration the task reported when it reached `at` or beyond.
async fn progress_reaches(url: &str, job: &str, at: u32) -> u32 {
    let mut farm = FarmClient::connect(url.to_owned()).await.unwrap();
    let mut events = farm
        .watch_job(pb::WatchJobRequest { job_id: job.into() })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.message().await.unwrap() {
        if let Some(pb::job_event::Event::Progress(p)) = event.event {
            if p.iteration >= at {
                return p.iteration;
            }
        }
    }
    panic!("the job ended before iteration {at}");
}

struct Run {
    killed_at: u32,
    resumed_from: u32,
    seconds_per_iteration: f64,
    kill_to_done: Duration,
}

fn run(dir: &Path, every: u32) -> Run {
    let store = dir.join("store");
    let (_coordinator, addr) = spawn_coordinator(
        &dir.join("state.db"),
        &["--listen", "127.0.0.1:0", "--lease-timeout", "1s"],
        Stdio::inherit(),
    );
    let url = format!("http://{addr}");
    let mut doomed = worker(&url, &store, "doomed", every);
    let grid = write_example_grid(
        dir,
        "late-kill",
        &format!(
            "[grid]\nsize = 32\noptimizer = \"adam\"\niterations = {ITERATIONS}\nlog_every = 50\n"
        ),
    );
    let job = pastiche(&[
        "submit",
        grid.to_str().unwrap(),
        "--coordinator",
        &url,
        "--store",
        store.to_str().unwrap(),
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let killed_at = runtime.block_on(progress_reaches(&url, &job, KILL_AT));
    doomed.kill9();
    let killed = Instant::now();
    let _rescuer = worker(&url, &store, "rescuer", every);
    pastiche(&["watch", &job, "--coordinator", &url]);
    let kill_to_done = killed.elapsed();
    let tasks = store.join("jobs").join(&job).join("tasks");
    let task = std::fs::read_dir(tasks)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(task.join("task.json")).unwrap()).unwrap();
    let resumed_from = record["resumed_from"].as_u64().unwrap_or(0) as u32;
    let ran = ITERATIONS - resumed_from;
    Run {
        killed_at,
        resumed_from,
        seconds_per_iteration: record["render_seconds"].as_f64().unwrap() / f64::from(ran),
        kill_to_done,
    }
}

#[test]
#[ignore = "a measurement: run with --ignored"]
fn time_lost_to_a_worker_killed_at_90_percent() {
    let mut table = format!(
        "Measured {} on this machine's CPU (debug-profile binaries; libtorch is \
         prebuilt and optimised; one libtorch thread): a {ITERATIONS}-iteration Adam \
         render at 32 px on the random-weight VGG19, its \
         worker killed with SIGKILL once it reported iteration {KILL_AT} or later, a \
         second worker started then. Iterations redone: the killed worker's last \
         reported iteration less the one the second resumed from (it ran a little \
         further than it reported; heartbeats come every 0.33 s here). Kill to done: \
         wall time, including the 1 s lease running out and the second worker \
         starting.\n\n\
         | checkpoints | killed at | resumed from | iterations redone | seconds redone | kill to done |\n\
         |---|---|---|---|---|---|\n",
        utc_now()
    );
    for every in EVERY.into_iter().chain([0]) {
        let dir = tempfile::tempdir().unwrap();
        let r = run(dir.path(), every);
        let redone = r.killed_at - r.resumed_from;
        let label = if every > 0 {
            format!("every {every}")
        } else {
            "off".to_owned()
        };
        table.push_str(&format!(
            "| {label} | {} | {} | {redone} | {:.1} s | {:.1} s |\n",
            r.killed_at,
            r.resumed_from,
            f64::from(redone) * r.seconds_per_iteration,
            r.kill_to_done.as_secs_f64()
        ));
        if every > 0 {
            assert!(redone <= every + 10, "more than an interval lost: {redone}");
        }
    }
    println!("{table}");
    if std::env::var_os("PASTICHE_BENCH_NO_WRITE").is_none() {
        write_benchmarks_section("resume-bench", "Resuming from checkpoints", &table);
    }
}
