//! The farm under chaos (issue 14): grids of short tasks run on the real
//! binaries while a seeded schedule of faults hits them: workers SIGKILLed (and
//! replaced by new ones) or SIGSTOPped and later resumed, the coordinator
//! SIGKILLed and started again on the same address and database, the S3 server
//! (SeaweedFS) stopped and started again on the same ports and data. At the end
//! of each grid every task is done, recorded once in the store with its files,
//! done once in the coordinator's ledger, nothing failed, no worker blocklisted.
//!
//! Workers are stand-ins (`--stand-in-ms`: no torch work), so a grid costs little
//! but time. The schedule is drawn from `PASTICHE_CHAOS_SEED` (default 14); the
//! seed and every fault are printed, so a failure can be replayed (the faults'
//! order and timing, not the farm's). `PASTICHE_CHAOS_ROUNDS` (default 1) runs
//! that many grids one after another on the same farm, for a long run:
//!
//!     PASTICHE_CHAOS_ROUNDS=20 PASTICHE_CHAOS_SEED=7 \
//!         cargo test --workspace --test chaos -- --nocapture
//!
//! A failed run keeps its directory (every process's log, the database, the
//! store's data) and prints where.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pastiche_farm_tests::{
    free_port, line_after, result_file, succeeded, with_s3, write_example_grid, Proc, Seaweed,
};
use pastiche_proto::pb;
use pastiche_proto::pb::farm_client::FarmClient;

const BUCKET: &str = "pastiche";
const STORE: &str = "s3://pastiche/chaos";
const TASKS_PER_ROUND: usize = 60;
const WORKERS: usize = 4;
/// Each task's render, as the stand-in fakes it: long enough that faults land
/// on tasks in flight.
const STAND_IN_MS: u64 = 1000;
/// Short, so that the tasks of paused and killed workers move on soon.
const LEASE_TIMEOUT: &str = "1s";
/// Every fault here costs the attempt it hits (an expired lease is a failed
/// attempt), and a task can be hit several times; the farm's limit (3) is
/// meant for tasks that crash their workers, which none of these does.
const MAX_ATTEMPTS: &str = "1000";
/// The time between faults, and how long each lasts, in milliseconds.
const FAULT_EVERY_MS: (u64, u64) = (800, 2500);
const PAUSE_MS: (u64, u64) = (300, 3000);
const COORDINATOR_DOWN_MS: (u64, u64) = (0, 2000);
const STORE_DOWN_MS: (u64, u64) = (1000, 6000);
/// Faults stop after this long in a round (most rounds end sooner)...
const FAULTS_AT_MOST: Duration = Duration::from_secs(90);
/// ...and the farm, whole again, must finish the grid within this (a watchdog:
/// the worker's backoff for the store is 15 s at most, its reports are retried
/// for a minute).
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
const DEFAULT_SEED: u64 = 14;

#[test]
fn a_grid_finishes_exactly_once_per_task_while_workers_coordinator_and_store_fail() {
    let seed = env_number("PASTICHE_CHAOS_SEED", DEFAULT_SEED);
    let rounds = env_number("PASTICHE_CHAOS_ROUNDS", 1);
    eprintln!("chaos: seed {seed}, {rounds} round(s) of {TASKS_PER_ROUND} tasks");
    let workdir = Workdir::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let mut farm = Farm::start(workdir.path());
    let mut chaos = Chaos::new(seed, &workdir.path().join("logs/chaos.log"));
    let mut requeued = 0;
    for round in 1..=rounds {
        requeued += run_round(&runtime, &mut farm, &mut chaos, round);
    }
    eprintln!(
        "chaos: seed {seed}: {rounds} round(s), {} tasks, each done once, in {:.0} s under {} \
         ({requeued} attempts requeued)",
        rounds * TASKS_PER_ROUND as u64,
        started.elapsed().as_secs_f64(),
        chaos.tally()
    );
}

/// One grid under chaos, from its submission to the checks of its results;
/// how many of its attempts were requeued.
fn run_round(
    runtime: &tokio::runtime::Runtime,
    farm: &mut Farm,
    chaos: &mut Chaos,
    round: u64,
) -> usize {
    let started = Instant::now();
    let grid = round_grid(&farm.dir, round);
    let job = succeeded(
        farm.cli()
            .args([
                "submit",
                grid.to_str().unwrap(),
                "--coordinator",
                &farm.url(),
            ])
            .output()
            .unwrap(),
    );
    eprintln!("chaos: round {round}: job {job}");
    chaos.begin_round(started);
    let mut watch = JobWatch::new(farm.url(), job.clone());
    let calm_at = started + FAULTS_AT_MOST;
    let deadline = calm_at + SETTLE_LIMIT;
    loop {
        if !chaos.calm && Instant::now() >= calm_at {
            chaos.heal(farm);
            chaos.say("faults stop here; the grid is not finished yet");
        }
        chaos.act(farm);
        assert!(
            Instant::now() < deadline,
            "round {round} (seed {}): the grid was not finished {SETTLE_LIMIT:?} after the \
             last fault",
            chaos.seed
        );
        let until = chaos
            .next_due(farm)
            .map_or(deadline, |due| due.min(deadline));
        let status = runtime.block_on(watch.next(farm.coordinator_is_up(), until));
        if status.is_some_and(|s| s.state() != pb::JobState::Running) {
            break;
        }
    }
    chaos.heal(farm);
    farm.assert_running();

    let planned = planned_tasks(farm, &grid);
    assert_eq!(planned.len(), TASKS_PER_ROUND, "the grid's tasks");
    let ledger = Ledger::read(&farm.db(), &job);
    let status = runtime.block_on(job_status(&farm.url(), &job));
    let counts = status.counts.unwrap_or_default();
    assert_eq!(
        (status.state(), counts.done as usize, counts.failed),
        (pb::JobState::Done, planned.len(), 0),
        "round {round}, job {job}: {counts:?}; failures: {:?}",
        ledger.failures
    );
    assert!(
        ledger.blocklisted.is_empty(),
        "workers blocklisted: {:?}",
        ledger.blocklisted
    );
    // The coordinator's view: each task done once, by one attempt.
    let done: BTreeSet<&String> = ledger.done.keys().collect();
    assert_eq!(done, planned.iter().collect(), "tasks done in the ledger");
    let twice: Vec<_> = ledger.done.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "tasks done more than once: {twice:?}");
    // The store's: one record per task, naming an attempt whose files are there.
    let records = downloaded_records(farm, &job, round);
    assert_eq!(
        records.keys().collect::<BTreeSet<_>>(),
        planned.iter().collect(),
        "the tasks with a record in the store"
    );
    let highest = records.values().max().copied().unwrap_or_default();
    eprintln!(
        "chaos: round {round}: {} tasks done in {:.1} s; {} attempts requeued, \
         the highest attempt to store a task's record was #{highest}",
        planned.len(),
        started.elapsed().as_secs_f64(),
        ledger.requeued
    );
    ledger.requeued
}

/// `<dir>/chaos-<round>.toml`: TASKS_PER_ROUND tasks, seeds of their own so that
/// each round is a new grid.
fn round_grid(dir: &Path, round: u64) -> PathBuf {
    let first = (round - 1) * TASKS_PER_ROUND as u64 + 1;
    let seeds: Vec<String> = (first..first + TASKS_PER_ROUND as u64)
        .map(|seed| seed.to_string())
        .collect();
    write_example_grid(
        dir,
        &format!("chaos-{round}"),
        &format!(
            "[grid]\nsize = 32\ninit = \"noise\"\nseed = [{}]\n",
            seeds.join(", ")
        ),
    )
}

/// The ids of the grid's tasks, as `pastiche plan` gives them.
fn planned_tasks(farm: &Farm, grid: &Path) -> BTreeSet<String> {
    let plan = farm
        .cli()
        .args(["plan", grid.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&succeeded(plan)).unwrap();
    plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `pastiche results` of the job: each task's record, checked to name this job
/// and an attempt whose files were downloaded with it; the attempt, by task.
fn downloaded_records(farm: &Farm, job: &str, round: u64) -> BTreeMap<String, u64> {
    let out = farm.dir.join(format!("results-{round}"));
    succeeded(
        farm.cli()
            .args(["results", job, "--store", STORE, "--out"])
            .arg(&out)
            .output()
            .unwrap(),
    );
    let mut records = BTreeMap::new();
    for entry in std::fs::read_dir(out.join("tasks")).unwrap() {
        let task_dir = entry.unwrap().path();
        let task = task_dir.file_name().unwrap().to_str().unwrap().to_owned();
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(task_dir.join("task.json")).unwrap()).unwrap();
        assert_eq!(
            (record["job"].as_str(), record["task"].as_str()),
            (Some(job), Some(task.as_str())),
            "{record}"
        );
        let png = image::open(result_file(&task_dir, "pastiche.png"));
        assert!(png.is_ok(), "{task}: {png:?} ({record})");
        let losses = std::fs::read_to_string(result_file(&task_dir, "losses.csv"));
        assert!(
            losses.as_deref().is_ok_and(|l| l.starts_with("iteration,")),
            "{task}: {losses:?} ({record})"
        );
        records.insert(task, record["attempt"].as_u64().unwrap());
    }
    records
}

async fn job_status(url: &str, job: &str) -> pb::JobStatus {
    let mut farm = FarmClient::connect(url.to_owned()).await.unwrap();
    farm.get_job(pb::GetJobRequest {
        job_id: job.to_owned(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// What the coordinator's database says happened to a job's tasks.
struct Ledger {
    /// How many times each task was done.
    done: BTreeMap<String, usize>,
    failures: Vec<String>,
    blocklisted: Vec<String>,
    /// Attempts that went back to the queue (expired, failed for a while, given back).
    requeued: usize,
}

impl Ledger {
    fn read(db: &Path, job: &str) -> Ledger {
        let db = rusqlite::Connection::open(db).unwrap();
        let mut query = db
            .prepare("SELECT kind, task_id, worker, message FROM events WHERE job_id = ?1")
            .unwrap();
        let mut ledger = Ledger {
            done: BTreeMap::new(),
            failures: Vec::new(),
            blocklisted: Vec::new(),
            requeued: 0,
        };
        let rows = query
            .query_map([job], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })
            .unwrap();
        for row in rows {
            let (kind, task, worker, message) = row.unwrap();
            match kind.as_str() {
                "done" => *ledger.done.entry(task.unwrap()).or_default() += 1,
                "failed" => ledger.failures.push(format!(
                    "{}: {}",
                    task.unwrap(),
                    message.unwrap_or_default()
                )),
                "blocklisted" => ledger.blocklisted.push(worker.unwrap()),
                "requeued" | "given-back" => ledger.requeued += 1,
                _ => {}
            }
        }
        ledger
    }
}

/// A job's event stream, opened again after each restart of the coordinator.
struct JobWatch {
    url: String,
    job: String,
    events: Option<tonic::Streaming<pb::JobEvent>>,
}

impl JobWatch {
    fn new(url: String, job: String) -> JobWatch {
        JobWatch {
            url,
            job,
            events: None,
        }
    }

    /// The job's status at its next event; none if `until` came first, or the
    /// stream broke (the coordinator was killed: the next call opens another).
    async fn next(&mut self, coordinator_up: bool, until: Instant) -> Option<pb::JobStatus> {
        let until = tokio::time::Instant::from_std(until);
        if self.events.is_none() {
            if !coordinator_up {
                tokio::time::sleep_until(until).await;
                return None;
            }
            let opened = tokio::time::timeout(Duration::from_secs(10), self.open()).await;
            match opened {
                Ok(Ok(events)) => self.events = Some(events),
                Ok(Err(status)) => panic!("watching {}: {status}", self.job),
                Err(_) => panic!("watching {}: no answer in 10 s", self.job),
            }
        }
        let events = self.events.as_mut().expect("opened above");
        match tokio::time::timeout_at(until, events.message()).await {
            Err(_) => None,
            Ok(Ok(Some(event))) => event.status,
            Ok(Ok(None) | Err(_)) => {
                self.events = None;
                None
            }
        }
    }

    async fn open(&self) -> Result<tonic::Streaming<pb::JobEvent>, tonic::Status> {
        let mut farm = FarmClient::connect(self.url.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let request = pb::WatchJobRequest {
            job_id: self.job.clone(),
        };
        Ok(farm.watch_job(request).await?.into_inner())
    }
}

/// The farm under test: SeaweedFS, a coordinator on a fixed address, and
/// WORKERS stand-in workers, each process logging to `<dir>/logs/`.
struct Farm {
    dir: PathBuf,
    seaweed: Seaweed,
    listen: String,
    coordinator: Option<Proc>,
    workers: Vec<Worker>,
    /// Workers started so far, to name the next one.
    started_workers: usize,
}

struct Worker {
    name: String,
    proc: Proc,
    /// When a paused worker is to be resumed.
    paused_until: Option<Instant>,
}

impl Farm {
    fn start(dir: &Path) -> Farm {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let mut farm = Farm {
            dir: dir.to_owned(),
            seaweed: Seaweed::start(&dir.join("weed"), BUCKET),
            listen: format!("127.0.0.1:{}", free_port()),
            coordinator: None,
            workers: Vec::new(),
            started_workers: 0,
        };
        farm.start_coordinator();
        for _ in 0..WORKERS {
            farm.start_worker();
        }
        farm
    }

    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn db(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    fn coordinator_is_up(&self) -> bool {
        self.coordinator.is_some()
    }

    /// `pastiche` with the farm's S3 server.
    fn cli(&self) -> std::process::Command {
        with_s3("pastiche", &self.seaweed.endpoint())
    }

    /// A log file under `logs/`, appended to (a restarted process goes on in it).
    fn log(&self, name: &str) -> Stdio {
        let path = self.dir.join("logs").join(format!("{name}.log"));
        let file = File::options().create(true).append(true).open(path);
        Stdio::from(file.unwrap())
    }

    /// Starts the coordinator, on the same address and database each time;
    /// returns once it listens.
    fn start_coordinator(&mut self) {
        let mut child = with_s3("pastiche-coordinator", &self.seaweed.endpoint())
            .args(["--listen", &self.listen, "--lease-timeout", LEASE_TIMEOUT])
            .args(["--store", STORE, "--max-attempts", MAX_ATTEMPTS])
            .arg("--db")
            .arg(self.db())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(self.log("coordinator"))
            .spawn()
            .unwrap();
        let listening = line_after(
            &mut BufReader::new(child.stdout.take().unwrap()),
            "listening on ",
        );
        assert_eq!(
            listening.as_deref(),
            Some(self.listen.as_str()),
            "the coordinator did not start: see logs/coordinator.log"
        );
        self.coordinator = Some(Proc(child));
    }

    /// Fails the test if a process the faults spared exited by itself.
    fn assert_running(&mut self) {
        let coordinator = self.coordinator.as_mut().expect("healed");
        if let Some(status) = coordinator.0.try_wait().unwrap() {
            panic!("the coordinator exited by itself ({status}): see logs/coordinator.log");
        }
        for worker in &mut self.workers {
            if let Some(status) = worker.proc.0.try_wait().unwrap() {
                panic!(
                    "worker {} exited by itself ({status}): see logs/{}.log",
                    worker.name, worker.name
                );
            }
        }
    }

    /// Starts a new worker, named after the number of workers started before it.
    fn start_worker(&mut self) -> String {
        self.started_workers += 1;
        let name = format!("w{}", self.started_workers);
        let child = with_s3("pastiche-worker", &self.seaweed.endpoint())
            .args(["--coordinator", &self.url(), "--store", STORE])
            .args(["--device", "cpu", "--name", &name])
            .args(["--stand-in-ms", &STAND_IN_MS.to_string()])
            .env("RUST_LOG", "info")
            .stderr(self.log(&name))
            .spawn()
            .unwrap();
        self.workers.push(Worker {
            name: name.clone(),
            proc: Proc(child),
            paused_until: None,
        });
        name
    }
}

/// The kinds of fault, drawn with equal odds among those that can happen now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillWorker,
    PauseWorker,
    RestartCoordinator,
    StopStore,
}

/// The fault schedule: when the next fault comes, and when each fault in
/// progress ends.
struct Chaos {
    seed: u64,
    rng: SplitMix64,
    /// Each fault, as printed, beside the processes' logs.
    log: File,
    round_started: Instant,
    next_fault: Instant,
    /// No more faults this round.
    calm: bool,
    coordinator_back: Option<Instant>,
    store_back: Option<Instant>,
    faults: BTreeMap<Fault, usize>,
}

impl Chaos {
    fn new(seed: u64, log: &Path) -> Chaos {
        Chaos {
            seed,
            rng: SplitMix64(seed),
            log: File::create(log).unwrap(),
            round_started: Instant::now(),
            next_fault: Instant::now(),
            calm: true,
            coordinator_back: None,
            store_back: None,
            faults: BTreeMap::new(),
        }
    }

    fn begin_round(&mut self, now: Instant) {
        self.round_started = now;
        self.next_fault = now + self.rng.millis(FAULT_EVERY_MS);
        self.calm = false;
    }

    fn say(&mut self, what: &str) {
        let at = self.round_started.elapsed().as_secs_f64();
        eprintln!("chaos: {at:>6.1} s  {what}");
        // With the time of day (UTC), to be read beside the processes' logs.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let (day, ms) = (now.as_secs() % 86_400, now.subsec_millis());
        let clock = format!(
            "{:02}:{:02}:{:02}.{ms:03}",
            day / 3600,
            day / 60 % 60,
            day % 60
        );
        writeln!(self.log, "{clock} {at:>6.1} s  {what}").unwrap();
    }

    /// When something is next due: a fault, or the end of one.
    fn next_due(&self, farm: &Farm) -> Option<Instant> {
        let resumes = farm.workers.iter().filter_map(|w| w.paused_until);
        let next_fault = Some(self.next_fault).filter(|_| !self.calm);
        [next_fault, self.coordinator_back, self.store_back]
            .into_iter()
            .flatten()
            .chain(resumes)
            .min()
    }

    /// Ends the faults whose time is up, then injects the next fault if due.
    fn act(&mut self, farm: &mut Farm) {
        let now = Instant::now();
        for worker in &mut farm.workers {
            if worker.paused_until.is_some_and(|until| until <= now) {
                worker.paused_until = None;
                worker.proc.resume();
                self.say(&format!("SIGCONT {}", worker.name));
            }
        }
        if self.coordinator_back.is_some_and(|at| at <= now) {
            self.coordinator_back = None;
            farm.start_coordinator();
            self.say("coordinator started again");
        }
        if self.store_back.is_some_and(|at| at <= now) {
            self.store_back = None;
            farm.seaweed.restart();
            self.say("S3 server started again");
        }
        if !self.calm && now >= self.next_fault {
            self.inject(farm, now);
            self.next_fault = Instant::now() + self.rng.millis(FAULT_EVERY_MS);
        }
    }

    fn inject(&mut self, farm: &mut Farm, now: Instant) {
        let mut possible = vec![Fault::KillWorker];
        if farm.workers.iter().any(|w| w.paused_until.is_none()) {
            possible.push(Fault::PauseWorker);
        }
        if farm.coordinator_is_up() {
            possible.push(Fault::RestartCoordinator);
        }
        if self.store_back.is_none() {
            possible.push(Fault::StopStore);
        }
        let fault = possible[self.rng.below(possible.len())];
        *self.faults.entry(fault).or_default() += 1;
        match fault {
            Fault::KillWorker => {
                let i = self.rng.below(farm.workers.len());
                let mut killed = farm.workers.remove(i);
                killed.proc.kill9();
                let paused = if killed.paused_until.is_some() {
                    " (paused)"
                } else {
                    ""
                };
                let replacement = farm.start_worker();
                self.say(&format!(
                    "SIGKILL {}{paused}; {replacement} starts in its place",
                    killed.name
                ));
            }
            Fault::PauseWorker => {
                let running: Vec<&mut Worker> = farm
                    .workers
                    .iter_mut()
                    .filter(|w| w.paused_until.is_none())
                    .collect();
                let i = self.rng.below(running.len());
                let pause = self.rng.millis(PAUSE_MS);
                let worker = running.into_iter().nth(i).expect("drawn among them");
                worker.proc.pause();
                worker.paused_until = Some(now + pause);
                self.say(&format!("SIGSTOP {} for {pause:?}", worker.name));
            }
            Fault::RestartCoordinator => {
                let down = self.rng.millis(COORDINATOR_DOWN_MS);
                farm.coordinator.take().expect("up").kill9();
                self.coordinator_back = Some(now + down);
                self.say(&format!("SIGKILL the coordinator, down for {down:?}"));
            }
            Fault::StopStore => {
                let down = self.rng.millis(STORE_DOWN_MS);
                farm.seaweed.stop();
                self.store_back = Some(now + down);
                self.say(&format!("S3 server stopped for {down:?}"));
            }
        }
    }

    /// Ends every fault in progress, and injects no more this round.
    fn heal(&mut self, farm: &mut Farm) {
        let now = Instant::now();
        for worker in &mut farm.workers {
            if worker.paused_until.is_some() {
                worker.paused_until = Some(now);
            }
        }
        self.coordinator_back = self.coordinator_back.map(|_| now);
        self.store_back = self.store_back.map(|_| now);
        self.calm = true;
        self.act(farm);
    }

    /// The faults so far, by kind.
    fn tally(&self) -> String {
        let total: usize = self.faults.values().sum();
        let kinds: Vec<String> = self
            .faults
            .iter()
            .map(|(fault, n)| format!("{fault:?} {n}"))
            .collect();
        format!("{total} faults ({})", kinds.join(", "))
    }
}

/// splitmix64: a small generator whose whole state is the seed, so a schedule
/// is replayed from the number printed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the bias of the modulo is immaterial here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi` milliseconds.
    fn millis(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

/// The test's directory, deleted when it passes and kept (its path printed)
/// when it fails, for the logs.
struct Workdir(Option<tempfile::TempDir>);

impl Workdir {
    fn new() -> Workdir {
        Workdir(Some(tempfile::tempdir().unwrap()))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("kept until dropped").path()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("chaos: the logs are kept in {}", dir.keep().display());
            }
        }
    }
}
