//! Farm overheads, with the worker's benchmark stand-in (no torch work) so that only
//! the farm is measured: the real coordinator, worker and CLI binaries (release) on
//! loopback, a local store.
//!
//!     cargo bench -p pastiche-farm-tests --bench farm [-- --no-write]
//!
//! Writes its table into BENCHMARKS.md between the `farm-bench` markers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pastiche_farm_tests::{
    bin, repo, spawn_coordinator, uploaded_grid, utc_now, write_benchmarks_section, Proc,
};
use std::time::{Duration, Instant};

use pastiche_proto::pb;
use pastiche_proto::pb::farm_client::FarmClient;

fn build_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "-p",
            "pastiche-coordinator",
            "-p",
            "pastiche-worker",
            "-p",
            "pastiche-cli",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "building the binaries failed");
}

fn coordinator(dir: &Path) -> (Proc, String) {
    let args = ["--listen", "127.0.0.1:0", "--lease-timeout", "30s"];
    let (proc, addr) = spawn_coordinator(&dir.join("state.db"), &args, Stdio::inherit());
    (proc, format!("http://{addr}"))
}

fn workers(url: &str, store: &Path, count: usize, task_ms: u64) -> Vec<Proc> {
    (0..count)
        .map(|i| {
            Proc(
                Command::new(bin("pastiche-worker"))
                    .args(["--coordinator", url, "--name", &format!("bench{i}")])
                    .args([
                        "--stand-in-ms",
                        &task_ms.to_string(),
                        "--device",
                        "cpu",
                        "--store",
                    ])
                    .arg(store)
                    .env("RUST_LOG", "warn")
                    .spawn()
                    .unwrap(),
            )
        })
        .collect()
}

fn write_grid(dir: &Path, name: &str, seeds: usize, sizes: usize) -> PathBuf {
    let examples = repo().join("examples");
    let list = |n: usize, start: usize| {
        (start..start + n)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ncontent = \"{}\"\nstyle = \"{}\"\n[grid]\ninit = \"noise\"\nseed = [{}]\nsize = [{}]\niterations = 1\n",
            examples.join("chelsea.png").display(),
            examples.join("starry_night.jpg").display(),
            list(seeds, 0),
            list(sizes, 64)
        ),
    )
    .unwrap();
    path
}

fn pastiche(args: &[&str]) -> String {
    let output = Command::new(bin("pastiche"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pastiche {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Submits over gRPC and follows the job's event stream to its end: no process
/// start-up in the measured time.
async fn submit_and_wait(url: &str, grid: String) -> (Duration, Duration) {
    let mut farm = FarmClient::connect(url.to_owned()).await.unwrap();
    let started = Instant::now();
    let job = farm
        .submit_job(pb::SubmitJobRequest {
            grid_toml: grid,
            grid_name: "bench.toml".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let submitted = started.elapsed();
    let mut events = farm
        .watch_job(pb::WatchJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    let mut state = 0;
    while let Some(event) = events.message().await.unwrap() {
        state = event.status.map_or(state, |s| s.state);
    }
    assert_eq!(state, pb::JobState::Done as i32);
    (submitted, started.elapsed())
}

/// Runs `tasks` stand-in tasks on `workers_count` workers, after a warm-up job that
/// gets every worker started and the inputs uploaded; returns the measured job's
/// wall time from submission to its end.
fn run_grid(dir: &Path, workers_count: usize, task_ms: u64, tasks: usize) -> Duration {
    let (_coordinator, url) = coordinator(dir);
    let store = dir.join("store");
    let _workers = workers(&url, &store, workers_count, task_ms);
    let warm_up = write_grid(dir, "warm-up", workers_count, 1);
    let job = pastiche(&[
        "submit",
        warm_up.to_str().unwrap(),
        "--coordinator",
        &url,
        "--store",
        store.to_str().unwrap(),
    ]);
    pastiche(&["watch", &job, "--coordinator", &url]);
    let grid = uploaded_grid("measured", 1000..1000 + tasks, 1);
    runtime().block_on(submit_and_wait(&url, grid)).1
}

/// The coordinator alone: 16 clients that lease and complete as fast as they can,
/// storing nothing. Returns the wall time per task.
async fn scheduling_only(url: &str, tasks: usize) -> Duration {
    use pastiche_proto::pb::workers_client::WorkersClient;
    let mut farm = FarmClient::connect(url.to_owned()).await.unwrap();
    let started = Instant::now();
    let job = farm
        .submit_job(pb::SubmitJobRequest {
            grid_toml: uploaded_grid("scheduling", 0..tasks, 1),
            grid_name: "bench.toml".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.tasks as usize, tasks);
    let mut clients = Vec::new();
    for i in 0..16 {
        let url = url.to_owned();
        clients.push(tokio::spawn(async move {
            let mut workers = WorkersClient::connect(url).await.unwrap();
            let id = workers
                .register(pb::RegisterRequest {
                    name: format!("client{i}"),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .worker_id;
            loop {
                let lease = workers
                    .lease(pb::LeaseRequest {
                        worker_id: id.clone(),
                        wait_ms: 0,
                    })
                    .await
                    .unwrap();
                let Some(task) = lease.into_inner().task else {
                    break;
                };
                workers
                    .complete(pb::CompleteRequest {
                        task: Some(pb::TaskRef {
                            worker_id: id.clone(),
                            job_id: task.job_id,
                            task_id: task.task_id,
                            attempt: task.attempt,
                        }),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let status = farm
        .get_job(pb::GetJobRequest { job_id: job.job_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.counts.unwrap().done as usize, tasks);
    started.elapsed() / tasks as u32
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return; // built by `cargo test --all-targets`: nothing to measure there
    }
    build_binaries();
    let mut rows = Vec::new();

    // 1. A 100,000-task grid: expansion alone, then the whole submission.
    let dir = tempfile::tempdir().unwrap();
    let grid = write_grid(dir.path(), "big", 100, 1000);
    let text = std::fs::read_to_string(&grid).unwrap();
    let started = Instant::now();
    let expanded = pastiche_spec::parse_grid(&grid, &text).unwrap();
    let expansion = started.elapsed();
    assert_eq!(expanded.tasks.len(), 100_000);
    let (_coordinator, url) = coordinator(dir.path());
    let store = dir.path().join("store");
    let started = Instant::now();
    pastiche(&[
        "submit",
        grid.to_str().unwrap(),
        "--coordinator",
        &url,
        "--store",
        store.to_str().unwrap(),
    ]);
    let cli = started.elapsed();
    drop(_coordinator);
    // The same grid again over gRPC, on a fresh coordinator: what the farm spends.
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, url) = coordinator(dir.path());
    let grpc = runtime().block_on(async {
        let mut farm = FarmClient::connect(url.clone()).await.unwrap();
        let started = Instant::now();
        farm.submit_job(pb::SubmitJobRequest {
            grid_toml: uploaded_grid("big", 0..100, 1000),
            grid_name: "big.toml".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        started.elapsed()
    });
    drop(_coordinator);
    rows.push(format!(
        "| expansion of a 100,000-task grid (parse, check, product) | {:.3} s | |",
        expansion.as_secs_f64()
    ));
    rows.push(format!(
        "| submission of it over gRPC (expansion, task ids, SQLite, queue) | {:.3} s | < 2 s |",
        grpc.as_secs_f64()
    ));
    rows.push(format!(
        "| `pastiche submit` of it, end to end (process start, local check, upload, the above) | {:.3} s | |",
        cli.as_secs_f64()
    ));
    eprintln!("100k: expansion {expansion:?}, grpc {grpc:?}, cli {cli:?}");

    // 2. Scheduling overhead: the coordinator alone, then with worker processes that
    //    store their (placeholder) outputs.
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, url) = coordinator(dir.path());
    let per_task = runtime().block_on(scheduling_only(&url, 2000));
    drop(_coordinator);
    rows.push(format!(
        "| scheduling overhead per task: 16 gRPC clients lease and complete 2000 tasks (submission included), nothing stored | {:.3} ms | < 1 ms |",
        per_task.as_secs_f64() * 1000.0
    ));
    eprintln!("scheduling only: {per_task:?} per task");
    let tasks = 2000;
    let dir = tempfile::tempdir().unwrap();
    let wall = run_grid(dir.path(), 16, 0, tasks);
    let per_task = wall.as_secs_f64() * 1000.0 / tasks as f64;
    rows.push(format!(
        "| the same with 16 worker processes, {tasks} instant stand-in tasks, 3 objects stored per task | {per_task:.3} ms | |"
    ));
    eprintln!("overhead: {per_task:.3} ms/task");

    // 3. Throughput against linear: 200 ms tasks, ten per worker.
    let task_ms = 200;
    let mut base = 0.0;
    for n in [1usize, 4, 16] {
        let dir = tempfile::tempdir().unwrap();
        let tasks = 10 * n;
        let wall = run_grid(dir.path(), n, task_ms, tasks);
        let throughput = tasks as f64 / wall.as_secs_f64();
        if n == 1 {
            base = throughput;
        }
        let efficiency = throughput / (base * n as f64);
        rows.push(format!(
            "| throughput, {n} worker(s), {tasks} tasks of {task_ms} ms | {throughput:.2} tasks/s, **{:.1}%** of linear | >= 95% |",
            efficiency * 100.0
        ));
        eprintln!(
            "{n} workers: {throughput:.2} tasks/s ({:.1}% of linear)",
            efficiency * 100.0
        );
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let table = format!(
        "Measured {} on {cores} cores: release binaries on loopback, a local-directory store,\n\
         the worker's `--stand-in-ms` task in place of a render. Worker and throughput\n\
         figures are measured after a warm-up job, from gRPC submission to the end of\n\
         the job's event stream.\n\n\
         | what | measured | goal |\n|---|---|---|\n{}\n",
        utc_now(),
        rows.join("\n")
    );
    println!("{table}");
    if !args.iter().any(|a| a == "--no-write") {
        write_benchmarks_section("farm-bench", "Farm", &table);
    }
}
