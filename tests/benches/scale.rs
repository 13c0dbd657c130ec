//! The coordinator at scale (issue 14): a 1,000,000-task grid submitted and
//! cancelled; 1,000 simulated workers (gRPC clients in this process, one
//! connection each) leasing and heartbeating every 2 s while it is queued; the
//! coordinator's resident memory, and how long a restart takes with all of it in
//! its database. The release coordinator binary on loopback; no worker does
//! torch work, nothing is stored.
//!
//!     cargo bench --workspace --bench scale [-- --no-write]
//!
//! Writes its table into BENCHMARKS.md between the `scale-bench` markers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pastiche_farm_tests::{
    repo, spawn_coordinator, uploaded_grid, utc_now, write_benchmarks_section, Proc,
};
use pastiche_proto::pb;
use pastiche_proto::pb::farm_client::FarmClient;
use pastiche_proto::pb::workers_client::WorkersClient;
use tonic::transport::Channel;

const WORKERS: usize = 1000;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long the simulated workers run; each leases anew every `RELEASE_EVERY`.
const WORKING: Duration = Duration::from_secs(30);
const RELEASE_EVERY: Duration = Duration::from_secs(10);

fn build_coordinator() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "--release", "--workspace", "--bin"])
        .arg("pastiche-coordinator")
        .status()
        .unwrap();
    assert!(status.success(), "building the coordinator failed");
}

/// A release coordinator on `db`; its URL, and how long it took to listen.
fn coordinator(db: &Path) -> (Proc, String, Duration) {
    let started = Instant::now();
    let args = ["--listen", "127.0.0.1:0", "--lease-timeout", "30s"];
    let (proc, addr) = spawn_coordinator(db, &args, Stdio::inherit());
    (proc, format!("http://{addr}"), started.elapsed())
}

/// A process's resident memory, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// One connection per simulated worker: more sockets than the default limit.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// Latencies of each kind of call, over every simulated worker.
#[derive(Default)]
struct Latencies {
    lease: Vec<Duration>,
    heartbeat: Vec<Duration>,
}

/// A simulated worker named `name`: its connection and its id.
async fn register(url: &str, name: String) -> (WorkersClient<Channel>, String) {
    let mut client = WorkersClient::connect(url.to_owned()).await.unwrap();
    let id = client
        .register(pb::RegisterRequest {
            name,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    (client, id)
}

/// A task for worker `id`, at once (tasks are queued).
async fn lease(client: &mut WorkersClient<Channel>, id: &str) -> pb::TaskRef {
    let task = client
        .lease(pb::LeaseRequest {
            worker_id: id.to_owned(),
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .expect("tasks are queued");
    pb::TaskRef {
        worker_id: id.to_owned(),
        job_id: task.job_id,
        task_id: task.task_id,
        attempt: task.attempt,
    }
}

/// One simulated worker, registered (`client`, `id`): leases, heartbeats every
/// 2 s (its first at a random point of the first period, so that beats spread),
/// and completes its task and leases the next every `RELEASE_EVERY`, until
/// `until`.
async fn simulated_worker(
    (mut client, id): (WorkersClient<Channel>, String),
    i: usize,
    until: Instant,
) -> Latencies {
    let mut seen = Latencies::default();
    let offset = HEARTBEAT_EVERY.mul_f64((i as f64 * 0.618_034) % 1.0);
    tokio::time::sleep(offset).await; // spreads the beats: fault-free load shaping
    while Instant::now() < until {
        let started = Instant::now();
        let task = lease(&mut client, &id).await;
        seen.lease.push(started.elapsed());
        let release_at = Instant::now() + RELEASE_EVERY;
        let mut beats = tokio::time::interval(HEARTBEAT_EVERY);
        beats.tick().await;
        while Instant::now() < release_at.min(until) {
            beats.tick().await;
            let started = Instant::now();
            let reply = client
                .heartbeat(pb::HeartbeatRequest {
                    task: Some(task.clone()),
                    iteration: 1,
                    iterations: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            seen.heartbeat.push(started.elapsed());
            assert_eq!(reply.directive(), pb::Directive::Continue);
        }
        client
            .complete(pb::CompleteRequest { task: Some(task) })
            .await
            .unwrap();
    }
    seen
}

/// Heartbeats of `count` workers on a small job, each every 100 ms, until
/// `done` says stop: what a large submission does to the farm's running tasks.
async fn heartbeats_while(
    url: &str,
    count: usize,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> Vec<Duration> {
    let mut farm = FarmClient::connect(url.to_owned()).await.unwrap();
    farm.submit_job(pb::SubmitJobRequest {
        grid_toml: uploaded_grid("running", 0..count, 1),
        grid_name: "running.toml".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut workers = Vec::new();
    for i in 0..count {
        let (mut client, id) = register(url, format!("running{i}")).await;
        let task = lease(&mut client, &id).await;
        workers.push((client, task));
    }
    let beats = workers.into_iter().map(|(mut client, task)| {
        let mut done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            while !*done.borrow_and_update() {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = done.changed() => break,
                }
                let started = Instant::now();
                client
                    .heartbeat(pb::HeartbeatRequest {
                        task: Some(task.clone()),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                seen.push(started.elapsed());
            }
            seen
        })
    });
    let beats: Vec<_> = beats.collect();
    let _ = done.changed().await;
    let mut all = Vec::new();
    for beat in beats {
        all.extend(beat.await.unwrap());
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return; // built by `cargo test --all-targets`: nothing to measure there
    }
    build_coordinator();
    raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let (coordinator_proc, url, _) = coordinator(&db);
    let pid = coordinator_proc.0.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let grid = uploaded_grid("million", 0..1000, 1000);
    let mut rows = Vec::new();

    let (submitted, job, during) = runtime.block_on(async {
        let (done, watching) = tokio::sync::watch::channel(false);
        let beating = tokio::spawn({
            let url = url.clone();
            async move { heartbeats_while(&url, 50, watching).await }
        });
        // Let the 50 running tasks start beating first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut farm = FarmClient::connect(url.clone()).await.unwrap();
        let started = Instant::now();
        let reply = farm
            .submit_job(pb::SubmitJobRequest {
                grid_toml: grid.clone(),
                grid_name: "million.toml".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.tasks, 1_000_000);
        let submitted = started.elapsed();
        done.send_replace(true);
        (submitted, reply.job_id, beating.await.unwrap())
    });
    eprintln!(
        "during it: {} heartbeats, p99 {:?}, max {:?}",
        during.len(),
        percentile(&during, 0.99),
        during.last()
    );
    eprintln!("1M tasks submitted in {submitted:?}");
    let rss_queued = resident_bytes(pid);

    let (mut all, registration) = runtime.block_on(async {
        let started = Instant::now();
        // Connected and registered first: a thousand connections opened at
        // once are not what lease latency is about.
        let registering: Vec<_> = (0..WORKERS)
            .map(|i| {
                let url = url.clone();
                tokio::spawn(async move { register(&url, format!("sim{i}")).await })
            })
            .collect();
        let mut registered = Vec::with_capacity(WORKERS);
        for worker in registering {
            registered.push(worker.await.unwrap());
        }
        let registration = started.elapsed();
        let until = Instant::now() + WORKING;
        let clients: Vec<_> = (0..)
            .zip(registered)
            .map(|(i, worker)| tokio::spawn(simulated_worker(worker, i, until)))
            .collect();
        let mut all = Latencies::default();
        for client in clients {
            let seen = client.await.unwrap();
            all.lease.extend(seen.lease);
            all.heartbeat.extend(seen.heartbeat);
        }
        (all, registration)
    });
    all.lease.sort();
    all.heartbeat.sort();
    let rss_working = resident_bytes(pid);
    eprintln!(
        "{} leases (p50 {:?}, p99 {:?}), {} heartbeats (p50 {:?}, p99 {:?})",
        all.lease.len(),
        percentile(&all.lease, 0.5),
        percentile(&all.lease, 0.99),
        all.heartbeat.len(),
        percentile(&all.heartbeat, 0.5),
        percentile(&all.heartbeat, 0.99),
    );

    let cancelled = runtime.block_on(async {
        let mut farm = FarmClient::connect(url.clone()).await.unwrap();
        let started = Instant::now();
        farm.cancel_job(pb::CancelJobRequest { job_id: job })
            .await
            .unwrap();
        started.elapsed()
    });
    eprintln!("cancelled in {cancelled:?}");

    // A crash, then a restart that reads the million tasks back.
    let mut coordinator_proc = coordinator_proc;
    coordinator_proc.kill9();
    let (restarted_proc, _, restart) = coordinator(&db);
    let rss_restarted = resident_bytes(restarted_proc.0.id());
    eprintln!("restarted in {restart:?}");
    drop(restarted_proc);

    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1 << 20) as f64);
    rows.push(format!(
        "| submission of a 1,000,000-task grid over gRPC | {:.2} s | < 10 s |",
        submitted.as_secs_f64()
    ));
    rows.push(format!(
        "| meanwhile, 50 running tasks heartbeating every 100 ms: p99 / max ({} beats) | {} / {} | |",
        during.len(),
        millis(percentile(&during, 0.99)),
        millis(*during.last().unwrap())
    ));
    rows.push(format!(
        "| cancellation of it (999,000+ queued tasks) | {:.2} s | < 2 s |",
        cancelled.as_secs_f64()
    ));
    rows.push(format!(
        "| {WORKERS} simulated workers connecting and registering at once | {:.2} s | |",
        registration.as_secs_f64()
    ));
    rows.push(format!(
        "| then {WORKERS} simulated workers, {} s: lease p50 / p99 ({} leases) | {} / **{}** | p99 < 10 ms |",
        WORKING.as_secs(),
        all.lease.len(),
        millis(percentile(&all.lease, 0.5)),
        millis(percentile(&all.lease, 0.99))
    ));
    rows.push(format!(
        "| the same: heartbeat p50 / p99 ({} beats, every 2 s each) | {} / **{}** | p99 < 10 ms |",
        all.heartbeat.len(),
        millis(percentile(&all.heartbeat, 0.5)),
        millis(percentile(&all.heartbeat, 0.99))
    ));
    rows.push(format!(
        "| coordinator resident memory: 1,000,000 tasks queued / with {WORKERS} workers / after a restart | {} / {} / {} | < 1 GiB |",
        mib(rss_queued),
        mib(rss_working),
        mib(rss_restarted)
    ));
    rows.push(format!(
        "| restart after SIGKILL with them in its database (until it listens) | {:.2} s | < 10 s |",
        restart.as_secs_f64()
    ));
    let table = format!(
        "Measured {} on {} cores: the release coordinator on loopback, a local SQLite\n\
         database; the simulated workers are tokio tasks of the benchmark process (one\n\
         connection each), sharing the machine with the coordinator.\n\n\
         | what | measured | goal |\n|---|---|---|\n{}\n",
        utc_now(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        rows.join("\n")
    );
    println!("{table}");
    if !args.iter().any(|a| a == "--no-write") {
        write_benchmarks_section("scale-bench", "The coordinator at scale", &table);
    }
}
