//! The farm as users run it: the real `pastiche-coordinator`, `pastiche-worker` and
//! `pastiche` binaries, on 127.0.0.1, with a local store; faults injected with
//! SIGKILL. `cargo test --workspace` builds the binaries.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pastiche_farm_tests::{bin, free_port, repo, result_file, succeeded, write_example_grid, Proc};

use pastiche_proto::pb;
use pastiche_proto::pb::farm_client::FarmClient;

fn examples() -> PathBuf {
    repo().join("examples")
}

struct CoordinatorProc {
    proc: Proc,
    addr: String,
}

fn start_coordinator(db: &Path, listen: &str, lease_timeout: &str) -> CoordinatorProc {
    start_coordinator_with(db, &["--listen", listen, "--lease-timeout", lease_timeout])
}

fn start_coordinator_with(db: &Path, args: &[&str]) -> CoordinatorProc {
    spawn_coordinator(db, args, Stdio::inherit())
}

/// A coordinator whose stderr goes to `stderr`, once it listens.
fn spawn_coordinator(db: &Path, args: &[&str], stderr: Stdio) -> CoordinatorProc {
    let (proc, addr) = pastiche_farm_tests::spawn_coordinator(db, args, stderr);
    CoordinatorProc { proc, addr }
}

impl CoordinatorProc {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn start_worker(coordinator: &str, store: &Path, name: &str) -> Proc {
    Proc(worker_command(coordinator, store, name).spawn().unwrap())
}

/// A CPU worker named `name`, logging warnings.
fn worker_command(coordinator: &str, store: &Path, name: &str) -> Command {
    let mut command = Command::new(bin("pastiche-worker"));
    command
        .args([
            "--coordinator",
            coordinator,
            "--device",
            "cpu",
            "--name",
            name,
        ])
        .arg("--store")
        .arg(store)
        .env("RUST_LOG", "warn");
    command
}

/// A worker whose every task takes `ms` and stores placeholder outputs (no
/// torch work), logging at `level` to a pipe.
fn stand_in_worker(coordinator: &str, store: &Path, name: &str, ms: u32, level: &str) -> Proc {
    Proc(
        worker_command(coordinator, store, name)
            .args(["--stand-in-ms", &ms.to_string()])
            .env("RUST_LOG", level)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Reads `log` (on a blocking thread) until a line contains `text`; false if
/// the log ends first or `limit` passes (a watchdog, not a synchronisation).
async fn logged(log: impl std::io::Read + Send + 'static, text: &str, limit: Duration) -> bool {
    let text = text.to_owned();
    let mut log = BufReader::new(log);
    let found = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        while !line.contains(&text) {
            line.clear();
            if log.read_line(&mut line).unwrap() == 0 {
                return false;
            }
        }
        true
    });
    matches!(tokio::time::timeout(limit, found).await, Ok(Ok(true)))
}

/// Waits until the coordinator says a task of `job` is running.
async fn wait_for_running(url: &str, job: &str) {
    while task_counts(url, job).await.running == 0 {
        tokio::task::yield_now().await;
    }
}

/// Every file under `dir`, by path, with its bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn pastiche(args: &[&str]) -> Output {
    Command::new(bin("pastiche"))
        .args(args)
        .env("RUST_LOG", "warn")
        // Renders by hand are compared with grids that name no weights (random
        // ones): they must not pick up weights installed on this machine.
        .env(
            "PASTICHE_WEIGHTS_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-installed-weights"),
        )
        .output()
        .unwrap()
}

fn submit(url: &str, store: &Path, grid: &Path) -> String {
    succeeded(pastiche(&[
        "submit",
        grid.to_str().unwrap(),
        "--coordinator",
        url,
        "--store",
        store.to_str().unwrap(),
    ]))
}

/// Where the job's tasks stand, as the coordinator says.
async fn task_counts(url: &str, job: &str) -> pb::TaskCounts {
    let mut farm = FarmClient::connect(url.to_owned()).await.unwrap();
    let status = farm
        .get_job(pb::GetJobRequest {
            job_id: job.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    status.counts.unwrap()
}

/// `pastiche watch JOB` until the job ends, which must be done.
fn watch_to_the_end(url: &str, job: &str) {
    succeeded(pastiche(&["watch", job, "--coordinator", url]));
}

/// Waits (on the job's event stream, not a timer) until a task reports progress.
async fn wait_for_progress(url: &str, job: &str) -> String {
    let mut farm = FarmClient::connect(url.to_owned()).await.unwrap();
    let mut events = farm
        .watch_job(pb::WatchJobRequest { job_id: job.into() })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.message().await.unwrap() {
        if let Some(pb::job_event::Event::Progress(p)) = event.event {
            return p.task_id;
        }
    }
    panic!("the job ended before any progress");
}

/// Waits until some task of the job has ended as `outcome`.
async fn wait_for_task_end(url: &str, job: &str, outcome: pb::TaskOutcome) {
    let mut farm = FarmClient::connect(url.to_owned()).await.unwrap();
    let mut events = farm
        .watch_job(pb::WatchJobRequest { job_id: job.into() })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.message().await.unwrap() {
        let ended = matches!(&event.event, Some(pb::job_event::Event::TaskEnded(e)) if e.outcome() == outcome);
        let counted = event
            .status
            .and_then(|s| s.counts)
            .is_some_and(|c| outcome == pb::TaskOutcome::Done && c.done > 0);
        if ended || counted {
            return;
        }
    }
    panic!("the job ended without a task {outcome:?}");
}

/// How a process that should end by itself ended, and its stderr (piped);
/// killed after `limit` (a watchdog, so that the test fails instead of hanging).
fn ended_within(child: &mut std::process::Child, limit: Duration) -> (Option<i32>, String) {
    let (ended, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        if watchdog.recv_timeout(limit).is_err() {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    let _ = ended.send(());
    (status.code(), stderr)
}

fn task_dirs(store: &Path, job: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(store.join("jobs").join(job).join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn task_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("task.json")).unwrap()).unwrap()
}

/// A task's outputs equal those of `pastiche render` in `alone` (`p.png`,
/// `l.csv`): losses to 1e-5, pixels to one level.
fn assert_renders_equal(task: &Path, alone: &Path) {
    let farm = std::fs::read_to_string(result_file(task, "losses.csv")).unwrap();
    let by_hand = std::fs::read_to_string(alone.join("l.csv")).unwrap();
    assert_eq!(farm.lines().count(), by_hand.lines().count());
    for (a, b) in farm.lines().zip(by_hand.lines()).skip(1) {
        let a: Vec<f64> = a.split(',').map(|v| v.parse().unwrap()).collect();
        let b: Vec<f64> = b.split(',').map(|v| v.parse().unwrap()).collect();
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs().max(1e-12),
                "farm {a:?} vs render {b:?}"
            );
        }
    }
    let farm = image::open(result_file(task, "pastiche.png"))
        .unwrap()
        .to_rgb8();
    let by_hand = image::open(alone.join("p.png")).unwrap().to_rgb8();
    let worst = farm
        .as_raw()
        .iter()
        .zip(by_hand.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "farm and render differ by {worst} levels");
}

#[test]
fn a_grid_on_real_binaries_gives_what_pastiche_render_gives() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "30s");
    let _workers = [
        start_worker(&coordinator.url(), &store, "w1"),
        start_worker(&coordinator.url(), &store, "w2"),
    ];
    let grid = write_example_grid(
        dir.path(),
        "pair",
        "[grid]\nsize = [32, 40]\niterations = 4\nlog_every = 2\n",
    );
    let job = succeeded(pastiche(&[
        "submit",
        grid.to_str().unwrap(),
        "--coordinator",
        &coordinator.url(),
        "--store",
        store.to_str().unwrap(),
        "--watch",
    ]));

    let out = dir.path().join("results");
    succeeded(pastiche(&[
        "results",
        &job,
        "--store",
        store.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(out.join("job.toml").exists());
    let tasks: Vec<PathBuf> = std::fs::read_dir(out.join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for task in tasks {
        let json = task_json(&task);
        let size = json["params"]["size"].as_u64().unwrap() as u32;
        let image = image::open(result_file(&task, "pastiche.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(image.width().max(image.height()), size);

        // The same render, by hand.
        let alone = dir.path().join(format!("alone-{size}"));
        succeeded(pastiche(&[
            "render",
            "--content",
            examples().join("chelsea.png").to_str().unwrap(),
            "--style",
            examples().join("starry_night.jpg").to_str().unwrap(),
            "--out",
            alone.join("p.png").to_str().unwrap(),
            "--losses",
            alone.join("l.csv").to_str().unwrap(),
            "--size",
            &size.to_string(),
            "--iterations",
            "4",
            "--log-every",
            "2",
            "--device",
            "cpu",
        ]));
        assert_renders_equal(&task, &alone);
        let farm_losses = std::fs::read_to_string(result_file(&task, "losses.csv")).unwrap();
        assert_eq!(farm_losses.lines().count(), 3, "header, iterations 2 and 4");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_of_a_killed_worker_is_finished_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "1s");
    let mut doomed = start_worker(&coordinator.url(), &store, "doomed");
    let grid = write_example_grid(dir.path(), "long", "[grid]\nsize = 48\niterations = 40\n");
    let job = submit(&coordinator.url(), &store, &grid);
    wait_for_progress(&coordinator.url(), &job).await;
    doomed.kill9();
    let _rescuer = start_worker(&coordinator.url(), &store, "rescuer");
    watch_to_the_end(&coordinator.url(), &job);
    let tasks = task_dirs(&store, &job);
    assert_eq!(tasks.len(), 1);
    let json = task_json(&tasks[0]);
    assert!(
        json["worker"].as_str().unwrap().starts_with("rescuer"),
        "{json}"
    );
    assert_eq!(json["attempt"], 2);
    for output in pastiche_spec::layout::ATTEMPT_FILES {
        let file = result_file(&tasks[0], output);
        assert!(file.exists(), "{} missing", file.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_mid_grid_and_restarted_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let db = dir.path().join("state.db");
    let mut coordinator = start_coordinator(&db, "127.0.0.1:0", "2s");
    let url = coordinator.url();
    let addr = coordinator.addr.clone();
    let _worker = start_worker(&url, &store, "steady");
    let grid = write_example_grid(
        dir.path(),
        "three",
        "[grid]\nsize = [32, 36, 40]\niterations = 12\n",
    );
    let job = submit(&url, &store, &grid);
    wait_for_task_end(&url, &job, pb::TaskOutcome::Done).await;
    coordinator.proc.kill9();
    // Same address, same database: the worker reconnects by itself.
    let restarted = start_coordinator(&db, &addr, "2s");
    watch_to_the_end(&restarted.url(), &job);
    let tasks = task_dirs(&store, &job);
    assert_eq!(tasks.len(), 3);
    for task in tasks {
        for output in pastiche_spec::layout::ATTEMPT_FILES {
            let file = result_file(&task, output);
            assert!(file.exists(), "{} missing", file.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_job_stops_its_workers_who_then_take_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "1s");
    let _worker = start_worker(&coordinator.url(), &store, "w");
    let long = write_example_grid(
        dir.path(),
        "endless",
        "[grid]\nsize = 48\niterations = 100000\ninit = \"noise\"\nseed = [1, 2]\n",
    );
    let job = submit(&coordinator.url(), &store, &long);
    wait_for_progress(&coordinator.url(), &job).await;
    succeeded(pastiche(&[
        "cancel",
        &job,
        "--coordinator",
        &coordinator.url(),
    ]));
    let output = pastiche(&["watch", &job, "--coordinator", &coordinator.url()]);
    assert!(!output.status.success(), "a cancelled job's watch fails");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cancelled"));
    // The worker is free again: a new job gets done.
    let short = write_example_grid(dir.path(), "short", "[grid]\nsize = 32\niterations = 2\n");
    let next = submit(&coordinator.url(), &store, &short);
    watch_to_the_end(&coordinator.url(), &next);
    assert!(
        !store.join("jobs").join(&job).join("tasks").exists(),
        "a cancelled render stores nothing"
    );
}

#[test]
fn bad_input_fails_clearly_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "30s");
    let url = coordinator.url();
    let malformed = dir.path().join("malformed.toml");
    std::fs::write(&malformed, "content = \"a.png\"\nstyle = [\"b.png\"\n").unwrap();
    let unknown_key =
        write_example_grid(dir.path(), "typo", "[grid]\nsize = 32\nstlye_weight = 5\n");
    let missing_image = dir.path().join("missing.toml");
    std::fs::write(
        &missing_image,
        "content = \"nowhere.png\"\nstyle = \"nowhere.jpg\"\n",
    )
    .unwrap();
    let good = write_example_grid(dir.path(), "good", "[grid]\nsize = 32\n");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let store_arg = store.to_str().unwrap();

    let cases: Vec<(&str, Vec<&str>, String)> = vec![
        (
            "malformed grid",
            vec![
                "submit",
                malformed.to_str().unwrap(),
                "--coordinator",
                &url,
                "--store",
                store_arg,
            ],
            "malformed.toml:2".into(),
        ),
        (
            "unknown key",
            vec![
                "submit",
                unknown_key.to_str().unwrap(),
                "--coordinator",
                &url,
                "--store",
                store_arg,
            ],
            "stlye_weight".into(),
        ),
        (
            "missing image",
            vec![
                "submit",
                missing_image.to_str().unwrap(),
                "--coordinator",
                &url,
                "--store",
                store_arg,
            ],
            "nowhere.png".into(),
        ),
        (
            "unreachable coordinator",
            vec![
                "submit",
                good.to_str().unwrap(),
                "--coordinator",
                &nowhere,
                "--store",
                store_arg,
            ],
            nowhere.clone(),
        ),
        (
            "unknown job",
            vec!["status", "no-such-job", "--coordinator", &url],
            "no-such-job".into(),
        ),
        (
            "cancel unknown job",
            vec!["cancel", "no-such-job", "--coordinator", &url],
            "no-such-job".into(),
        ),
        (
            "results of unknown job",
            vec!["results", "no-such-job", "--store", store_arg, "--out", "x"],
            "no-such-job".into(),
        ),
        (
            "job id escaping the store",
            vec!["results", "../../etc", "--store", store_arg, "--out", "x"],
            "not a valid id".into(),
        ),
    ];
    for (what, args, needle) in cases {
        let output = pastiche(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: succeeded");
        assert!(
            stderr.contains(&needle),
            "{what}: '{needle}' not in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    let stored: Vec<_> = std::fs::read_dir(&store)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(stored.is_empty(), "bad submissions stored {stored:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stopped_with_sigterm_gives_its_task_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // A lease far longer than the test: only a give-back can requeue the task.
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "10m");
    let mut worker = start_worker(&coordinator.url(), &store, "leaving");
    let grid = write_example_grid(
        dir.path(),
        "handover",
        "[grid]\nsize = 48\niterations = 100000\n",
    );
    let job = submit(&coordinator.url(), &store, &grid);
    wait_for_progress(&coordinator.url(), &job).await;
    // Safety: signalling our own child by pid.
    unsafe { libc::kill(worker.0.id() as i32, libc::SIGTERM) };
    let status = worker.0.wait().unwrap();
    assert!(
        status.success(),
        "a SIGTERMed worker exits cleanly: {status}"
    );
    let counts = task_counts(&coordinator.url(), &job).await;
    assert_eq!(
        (counts.queued, counts.running),
        (1, 0),
        "the task is back in the queue"
    );
    succeeded(pastiche(&[
        "cancel",
        &job,
        "--coordinator",
        &coordinator.url(),
    ]));
}

#[tokio::test(flavor = "multi_thread")]
async fn previews_are_stored_while_rendering_and_watch_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "30s");
    let _worker = start_worker(&coordinator.url(), &store, "w1");
    // Long enough to be running at the first heartbeat; cancelled once a preview
    // has been seen.
    let grid = write_example_grid(
        dir.path(),
        "preview",
        "preview_every = 5\n[grid]\nsize = 32\noptimizer = \"adam\"\niterations = 100000\n",
    );
    let job = submit(&coordinator.url(), &store, &grid);
    let mut watch = Proc(
        Command::new(bin("pastiche"))
            .args(["watch", &job, "--coordinator", &coordinator.url()])
            .arg("--store")
            .arg(&store)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = BufReader::new(watch.0.stderr.take().unwrap());
    let announced = stderr
        .lines()
        .map(Result::unwrap)
        .find(|line| line.starts_with("preview of task"))
        .expect("watch announces a preview");
    let (_, path) = announced.rsplit_once(": ").unwrap();
    let preview = image::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(preview.width().max(preview.height()), 32);
    assert!(Path::new(path).starts_with(store.join("jobs").join(&job).join("tasks")));
    assert!(announced.contains("at iteration "), "{announced}");

    succeeded(pastiche(&[
        "cancel",
        &job,
        "--coordinator",
        &coordinator.url(),
    ]));
    let status = watch.0.wait().unwrap();
    assert!(!status.success(), "a cancelled job's watch fails");
}

#[test]
fn a_finished_job_gets_a_report_that_marks_its_failed_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let coordinator = start_coordinator_with(
        &dir.path().join("state.db"),
        &["--listen", "127.0.0.1:0", "--store", store_arg],
    );
    let _worker = start_worker(&coordinator.url(), &store, "w1");
    // VGG19's "weights" are not a safetensors file: its task fails, VGG16's is done.
    std::fs::write(dir.path().join("broken.safetensors"), b"not weights").unwrap();
    let grid = write_example_grid(
        dir.path(),
        "reported",
        "[grid]\nbackbone = [\"vgg16\", \"vgg19\"]\nsize = 32\niterations = 2\n\
         [weights]\nvgg19 = \"broken.safetensors\"\n",
    );
    let submitted = pastiche(&[
        "submit",
        grid.to_str().unwrap(),
        "--coordinator",
        &coordinator.url(),
        "--store",
        store_arg,
        "--watch",
    ]);
    let stderr = String::from_utf8_lossy(&submitted.stderr);
    assert!(!submitted.status.success(), "the job failed: {stderr}");
    // Not a terminal: progress comes as lines.
    assert!(
        stderr.contains("2/2 tasks ended: 1 done, 0 running, 1 failed, 0 cancelled"),
        "{stderr}"
    );
    let job = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let index = stderr
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("watch names the report: {stderr}"));
    let report_dir = store.join("jobs").join(&job).join("report");
    assert_eq!(Path::new(index), report_dir.join("index.html"));
    let html = std::fs::read_to_string(index).unwrap();
    assert!(html.contains("failed"), "{html}");
    // Inputs go by the names the grid gave them, not by their hashes.
    let named = |html: &str| html.contains("chelsea.png") && html.contains("starry_night.jpg");
    assert!(named(&html), "{html}");
    assert!(report_dir.join("contact-sheet.png").exists());
    let summary = std::fs::read_to_string(report_dir.join("summary.csv")).unwrap();
    let outcomes: Vec<&str> = summary
        .lines()
        .skip(1)
        .filter_map(|row| ["done", "failed"].into_iter().find(|o| row.contains(o)))
        .collect();
    assert_eq!(outcomes.len(), 2, "{summary}");
    assert!(
        outcomes.contains(&"done") && outcomes.contains(&"failed"),
        "{summary}"
    );

    // On request, elsewhere, with copies of the pastiches: a slice of the job.
    let out = dir.path().join("report-copy");
    let report = |extra: &[&str]| {
        let url = coordinator.url();
        let mut args = vec!["report", &job, "--coordinator", &url, "--store", store_arg];
        args.extend_from_slice(extra);
        pastiche(&args)
    };
    let printed = succeeded(report(&[
        "--only",
        "backbone=vgg16",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(Path::new(&printed), out.join("index.html"));
    assert!(named(&std::fs::read_to_string(&printed).unwrap()));
    let copies: Vec<PathBuf> = std::fs::read_dir(out.join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().path().join("pastiche.png"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(copies.len(), 1, "the done task's pastiche is copied");
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 2, "vgg16's task only: {summary}");
    assert!(summary.contains(",done,"), "{summary}");
    // The report in the store is the whole job's: a slice goes elsewhere.
    let refused = report(&["--only", "backbone=vgg16"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--out"));
    let refused = report(&["--only", "backbone=vgg11", "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("no task of the job has it; it takes vgg16, vgg19"),
        "{stderr}"
    );

    // With the coordinator gone, the store alone still makes a report.
    drop(coordinator);
    let offline = || {
        pastiche(&[
            "report",
            &job,
            "--coordinator",
            "http://127.0.0.1:1",
            "--store",
            store_arg,
        ])
    };
    // But it does not replace the coordinator's report, which knows more.
    let refused = offline();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("give --out DIR"), "{stderr}");
    assert!(report_dir.join("index.html").exists());
    std::fs::remove_dir_all(&report_dir).unwrap();
    let offline = offline();
    let note = String::from_utf8_lossy(&offline.stderr).into_owned();
    assert_eq!(
        succeeded(offline),
        report_dir.join("index.html").to_str().unwrap()
    );
    assert!(note.contains("reading the store"), "{note}");
    assert!(named(
        &std::fs::read_to_string(report_dir.join("index.html")).unwrap()
    ));
    let summary = std::fs::read_to_string(report_dir.join("summary.csv")).unwrap();
    assert!(summary.contains("unfinished"), "{summary}");
}

#[test]
fn local_carries_on_with_an_interrupted_job_of_the_same_grid() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let db = dir.path().join("state.db");
    let grid = write_example_grid(
        dir.path(),
        "resumed",
        "[grid]\nsize = 32\niterations = 2\nstyle_weight = [1e5, 1e6]\n",
    );
    // As `local` leaves it when killed before any task ran: the job queued in
    // its database (submitted through a coordinator on that database, no worker).
    let job = {
        let coordinator = start_coordinator(&db, "127.0.0.1:0", "30s");
        submit(&coordinator.url(), &store, &grid)
    };
    let local = |extra: &[&str]| {
        let mut args = vec![
            "local",
            grid.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        pastiche(&args)
    };
    // With a device that is not there, no worker starts: said at once, no hang.
    let mut bad_device = Command::new(bin("pastiche"))
        .args(["local", grid.to_str().unwrap(), "--store"])
        .arg(&store)
        .arg("--db")
        .arg(&db)
        .args(["--device", "tpu:7"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = pastiche_farm_tests::exits_within(&mut bad_device, Duration::from_secs(60));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut bad_device.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("no worker is left"), "{stderr}");
    assert!(stderr.contains("tpu:7"), "{stderr}");

    let output = local(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        succeeded(output),
        job,
        "the same job, not a new one: {stderr}"
    );
    assert!(
        stderr.contains(&format!("carrying on with job {job}")),
        "{stderr}"
    );
    assert_eq!(task_dirs(&store, &job).len(), 2);
    // Finished, the grid run again is a new job.
    assert_ne!(succeeded(local(&[])), job);
}

#[test]
fn a_starting_image_beside_the_grid_is_uploaded_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let grids = dir.path().join("grids");
    std::fs::create_dir_all(&grids).unwrap();
    std::fs::copy(examples().join("starry_night.jpg"), grids.join("start.jpg")).unwrap();
    let grid = write_example_grid(
        &grids,
        "started",
        "[grid]\nsize = 32\niterations = 2\ninit = [\"start.jpg\", \"Noise\"]\n",
    );
    let store = dir.path().join("store");
    // Run from elsewhere: the path is the grid file's, not the working directory's.
    let output = Command::new(bin("pastiche"))
        .current_dir(dir.path())
        .args([
            "local",
            grid.to_str().unwrap(),
            "--db",
            "state.db",
            "--store",
        ])
        .arg(&store)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let job = succeeded(output);
    // `"noise"`, or `{"image": "<key>"}`.
    let inits: Vec<String> = task_dirs(&store, &job)
        .iter()
        .map(|dir| {
            let init = &task_json(dir)["params"]["init"];
            init.as_str()
                .or_else(|| init["image"].as_str())
                .unwrap_or_else(|| panic!("{init}"))
                .to_owned()
        })
        .collect();
    assert_eq!(inits.len(), 2);
    assert!(inits.contains(&"noise".to_owned()), "{inits:?}");
    let uploaded = inits.iter().find(|i| *i != "noise").unwrap();
    assert!(uploaded.starts_with("inputs/"), "{inits:?}");
    assert_eq!(
        std::fs::read(store.join(uploaded)).unwrap(),
        std::fs::read(grids.join("start.jpg")).unwrap()
    );
    // `pastiche plan` gave the tasks, starting image and all, the farm's ids.
    let plan: serde_json::Value = serde_json::from_str(&succeeded(pastiche(&[
        "plan",
        grid.to_str().unwrap(),
        "--format",
        "json",
    ])))
    .unwrap();
    let mut planned: Vec<&str> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    planned.sort_unstable();
    let stored: Vec<String> = task_dirs(&store, &job)
        .iter()
        .map(|dir| dir.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(planned, stored);

    // A bare word is a typo, refused with its place in the file.
    let typo = write_example_grid(&grids, "typo", "[grid]\ninit = [\"nosie\"]\n");
    let output = pastiche(&[
        "local",
        typo.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("typo.toml:"), "{stderr}");
    assert!(
        stderr.contains("'nosie' is neither content, noise nor an image"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completion_waits_for_a_restarting_coordinator_instead_of_being_redone() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let db = dir.path().join("state.db");
    let mut coordinator = start_coordinator(&db, "127.0.0.1:0", "60s");
    let (url, addr) = (coordinator.url(), coordinator.addr.clone());
    let mut worker = stand_in_worker(&url, &store, "patient", 1500, "warn");
    let grid = write_example_grid(dir.path(), "patient", "[grid]\nsize = 32\n");
    let job = submit(&url, &store, &grid);
    wait_for_running(&url, &job).await;
    // Gone while the task renders; the worker finishes and cannot say so.
    coordinator.proc.kill9();
    let log = worker.0.stderr.take().unwrap();
    assert!(
        logged(
            log,
            "reporting how the task ended failed; trying again",
            Duration::from_secs(60)
        )
        .await,
        "the worker did not retry its report"
    );
    // Back (same address, same database): the completion gets through, and the
    // task is not rendered a second time when its lease runs out.
    let restarted = start_coordinator(&db, &addr, "60s");
    watch_to_the_end(&restarted.url(), &job);
    let tasks = task_dirs(&store, &job);
    assert_eq!(tasks.len(), 1);
    assert_eq!(task_json(&tasks[0])["attempt"], 1);
    drop(worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_job_is_deleted_with_its_results_but_not_the_shared_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "5s");
    let url = coordinator.url();
    let _worker = stand_in_worker(&url, &store, "w", 100, "warn");
    let grid = write_example_grid(dir.path(), "brief", "[grid]\nsize = [32, 40]\n");
    let job = submit(&url, &store, &grid);
    watch_to_the_end(&url, &job);
    assert_eq!(task_dirs(&store, &job).len(), 2);

    let args = [
        "delete",
        &job,
        "--coordinator",
        &url,
        "--store",
        store.to_str().unwrap(),
    ];
    let delete = |more: &[&str]| pastiche(&[&args[..], more].concat());
    succeeded(delete(&["--results"]));
    assert!(
        !store.join("jobs").join(&job).exists(),
        "the job's objects stay"
    );
    assert_eq!(std::fs::read_dir(store.join("inputs")).unwrap().count(), 2);
    let status = pastiche(&["status", &job, "--coordinator", &url]);
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains(&format!("no job '{job}'")));
    // Deleting it again says so.
    let again = delete(&[]);
    assert!(!again.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_paused_past_its_lease_cannot_change_the_result_another_attempt_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "1s");
    let url = coordinator.url();
    // Each task takes 1.5 s: the winner's ends after the paused worker's would
    // have, so that the paused worker resumes with its render done.
    let mut paused = stand_in_worker(&url, &store, "paused", 1500, "info");
    let grid = write_example_grid(dir.path(), "fenced", "[grid]\nsize = 32\n");
    let job = submit(&url, &store, &grid);
    wait_for_running(&url, &job).await;
    // Paused mid-render (a long GC pause, a SIGSTOP): its lease runs out, and
    // another worker renders the task and stores the result.
    paused.pause();
    let winner = stand_in_worker(&url, &store, "winner", 1500, "warn");
    watch_to_the_end(&url, &job);
    let tasks = task_dirs(&store, &job);
    assert_eq!(tasks.len(), 1);
    let record = task_json(&tasks[0]);
    assert!(
        record["worker"].as_str().unwrap().starts_with("winner"),
        "{record}"
    );
    assert_eq!(record["attempt"], 2);
    let stored = snapshot(&store.join("jobs").join(&job));
    drop(winner);

    // Resumed, the paused worker has finished its render, and must store
    // nothing over the result.
    paused.resume();
    let log = paused.0.stderr.take().unwrap();
    assert!(
        logged(log, "dropped", Duration::from_secs(60)).await,
        "the paused worker did not drop its result"
    );
    assert_eq!(
        snapshot(&store.join("jobs").join(&job)),
        stored,
        "the stored result changed, byte for byte"
    );
}

#[test]
fn a_blend_with_an_automatic_weight_and_original_colours_renders_on_the_farm_as_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        examples().join("starry_night.jpg"),
        dir.path().join("starry.jpg"),
    )
    .unwrap();
    std::fs::copy(examples().join("chelsea.png"), dir.path().join("cat.png")).unwrap();
    let grid = dir.path().join("painter.toml");
    std::fs::write(
        &grid,
        "content = \"cat.png\"\n\
         style = { blend = [\"starry.jpg\", \"cat.png\"], weights = [3, 1] }\n\
         [grid]\nsize = 32\niterations = 3\nlog_every = 1\n\
         style_weight = \"auto\"\noriginal_colors = true\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    let job = succeeded(pastiche(&[
        "local",
        grid.to_str().unwrap(),
        "--db",
        dir.path().join("state.db").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]));
    let [task] = task_dirs(&store, &job).try_into().unwrap();
    let record = task_json(&task);
    assert_eq!(record["params"]["style_weight"], "auto");
    assert_eq!(record["params"]["original_colors"], true);
    let style = record["inputs"]["style"].as_str().unwrap();
    assert!(style.starts_with("blend:0.75=inputs/"), "{style}");
    let chosen = record["chosen_style_weight"].as_f64().unwrap();
    assert!(chosen > 0.0, "{record}");

    // The same render by hand: two --style, their weights, the same switches.
    let alone = dir.path().join("alone");
    succeeded(pastiche(&[
        "render",
        "--content",
        dir.path().join("cat.png").to_str().unwrap(),
        "--style",
        dir.path().join("starry.jpg").to_str().unwrap(),
        "--style",
        dir.path().join("cat.png").to_str().unwrap(),
        "--style-blend-weights",
        "3,1",
        "--style-weight",
        "auto",
        "--original-colors",
        "--out",
        alone.join("p.png").to_str().unwrap(),
        "--losses",
        alone.join("l.csv").to_str().unwrap(),
        "--size",
        "32",
        "--iterations",
        "3",
        "--log-every",
        "1",
        "--device",
        "cpu",
    ]));
    assert_renders_equal(&task, &alone);
    let losses = std::fs::read_to_string(result_file(&task, "losses.csv")).unwrap();
    assert_eq!(losses.lines().count(), 4, "header, iterations 1 to 3");

    // The report names the blend by its images' shares and shows the weight chosen.
    let report = store.join("jobs").join(&job).join("report");
    let summary = std::fs::read_to_string(report.join("summary.csv")).unwrap();
    let mut rows = summary.lines().map(|l| l.split(',').collect::<Vec<_>>());
    let header = rows.next().unwrap();
    let row = rows.next().unwrap();
    let column = header.iter().position(|h| *h == "chosen_style_weight");
    let column = column.unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(row[column].parse::<f64>().unwrap(), chosen);
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("75% + "), "the blend's label is missing");
}

#[test]
fn submit_uses_the_coordinators_store_and_a_worker_on_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("farm-store");
    let coordinator = start_coordinator_with(
        &dir.path().join("state.db"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--store",
            store.to_str().unwrap(),
        ],
    );

    // A worker given another store could not read the inputs: refused, naming both.
    let elsewhere = dir.path().join("elsewhere");
    let mut worker = Command::new(bin("pastiche-worker"))
        .args(["--coordinator", &coordinator.url(), "--device", "cpu"])
        .arg("--store")
        .arg(&elsewhere)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A worker that is let in would work forever.
    let (status, stderr) = ended_within(&mut worker, Duration::from_secs(60));
    assert!(status.is_some_and(|code| code != 0), "{stderr}");
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap().display().to_string();
    assert!(stderr.contains(&canonical(&elsewhere)), "{stderr}");
    assert!(stderr.contains(&canonical(&store)), "{stderr}");

    // `submit` without --store, from a directory where the default store would
    // be: the inputs go to the coordinator's store, where the workers are.
    let _worker = start_worker(&coordinator.url(), &store, "w1");
    let grid = write_example_grid(dir.path(), "shared", "[grid]\nsize = 32\niterations = 2\n");
    let cwd = tempfile::tempdir().unwrap();
    let submit = |extra: &[&str]| {
        Command::new(bin("pastiche"))
            .current_dir(cwd.path())
            .args(["submit", grid.to_str().unwrap(), "--coordinator"])
            .arg(coordinator.url())
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("PASTICHE_STORE")
            .output()
            .unwrap()
    };
    let job = succeeded(submit(&["--watch"]));
    assert_eq!(task_dirs(&store, &job).len(), 1);
    assert!(!cwd.path().join("pastiche-results").exists());

    // Given, --store must be the farm's.
    let wrong = submit(&["--store", elsewhere.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not this farm's store") && stderr.contains(&canonical(&store)),
        "{stderr}"
    );
    let same = submit(&["--store", store.to_str().unwrap()]);
    succeeded(same);
}

#[test]
fn a_coordinator_that_cannot_write_its_database_stops_and_a_restart_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = (dir.path().join("state.db"), dir.path().join("store"));
    // Stderr kept, to read why it stopped.
    let mut first_life = spawn_coordinator(&db, &["--listen", "127.0.0.1:0"], Stdio::piped());
    let url = first_life.url();
    let grid = write_example_grid(
        dir.path(),
        "held",
        "[grid]\nsize = 32\niterations = 2\nseed = [1, 2]\ninit = \"noise\"\n",
    );
    let job = submit(&url, &store, &grid);

    // Another process holds the database's write lock: the lease a worker asks
    // for cannot be recorded, and the coordinator stops rather than hand it out.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let worker = start_worker(&url, &store, "w1");
    // A coordinator that served on would never end.
    let (status, stderr) = ended_within(&mut first_life.proc.0, Duration::from_secs(60));
    assert_eq!(status, Some(75), "{stderr}");
    assert!(
        stderr.contains("the state database could not be written"),
        "{stderr}"
    );
    drop(worker);
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    // Restarted on the same database: nothing of the lost lease remains, every
    // task is done by its first attempt.
    let coordinator = start_coordinator(&db, "127.0.0.1:0", "30s");
    let _worker = start_worker(&coordinator.url(), &store, "w2");
    watch_to_the_end(&coordinator.url(), &job);
    let tasks = task_dirs(&store, &job);
    assert_eq!(tasks.len(), 2);
    for task in tasks {
        assert_eq!(task_json(&task)["attempt"], 1, "{}", task.display());
    }
}

#[test]
fn a_task_that_stops_early_records_where_and_one_that_does_not_runs_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // A loss never falls by all of itself: a tolerance of 1 stops the render as
    // soon as a whole window has run; 0 is off.
    let grid = write_example_grid(
        dir.path(),
        "early",
        "[grid]\nsize = 32\niterations = 6\nlog_every = 1\n\
         stop_tolerance = [0, 1]\nstop_window = 2\n",
    );
    let job = succeeded(pastiche(&[
        "local",
        grid.to_str().unwrap(),
        "--db",
        dir.path().join("state.db").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]));
    let mut seen = Vec::new();
    for task in task_dirs(&store, &job) {
        let record = task_json(&task);
        let losses = std::fs::read_to_string(result_file(&task, "losses.csv")).unwrap();
        let last: u32 = losses
            .lines()
            .last()
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let tolerance = record["params"]
            .get("stop_tolerance")
            .and_then(|t| t.as_f64());
        match tolerance {
            Some(tolerance) => {
                assert_eq!(tolerance, 1.0, "{record}");
                assert_eq!(record["stopped_at"], 2, "{record}");
                assert_eq!(last, 2, "the last row is the stop's: {losses}");
                assert_eq!(record["losses"]["iteration"], 2, "{record}");
            }
            None => {
                assert!(record.get("stopped_at").is_none(), "{record}");
                assert_eq!(last, 6, "{losses}");
            }
        }
        seen.push(tolerance);
    }
    seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(seen, [None, Some(1.0)]);
}

/// Where a task's checkpoint is in a directory store.
fn checkpoint_file(store: &Path, job: &str, task: &str) -> PathBuf {
    store.join(pastiche_spec::layout::checkpoint_key(job, task).unwrap())
}

/// The iteration a stored checkpoint was taken after.
fn checkpoint_iteration(file: &Path) -> u32 {
    pastiche_farm_tests::checkpoint_iteration(&std::fs::read(file).unwrap())
}

/// The one task of `job`, once some attempt stored a checkpoint of it: its id.
fn wait_for_checkpoint(store: &Path, job: &str) -> String {
    pastiche_farm_tests::eventually(Duration::from_secs(120), "a checkpoint", || {
        let tasks = std::fs::read_dir(store.join("jobs").join(job).join("tasks")).ok()?;
        tasks
            .map(|e| e.unwrap().path())
            .find(|dir| dir.join(pastiche_spec::layout::CHECKPOINT).exists())
            .map(|dir| dir.file_name().unwrap().to_str().unwrap().to_owned())
    })
}

/// The grid's one task rendered again, uninterrupted, as another job on the
/// same farm; its directory.
fn uninterrupted_render(url: &str, store: &Path, grid: &Path) -> PathBuf {
    let job = submit(url, store, grid);
    watch_to_the_end(url, &job);
    let tasks = task_dirs(store, &job);
    assert_eq!(tasks.len(), 1);
    assert!(task_json(&tasks[0]).get("resumed_from").is_none());
    tasks[0].clone()
}

/// A resumed task's pastiche and loss log are byte for byte the uninterrupted
/// render's (the loss log's numbers as the shortest text that reads back as
/// the same f64), and its checkpoint is gone.
fn assert_resumed_as_uninterrupted(task: &Path, alone: &Path) {
    for name in pastiche_spec::layout::ATTEMPT_FILES {
        let (resumed, whole) = (
            std::fs::read(result_file(task, name)).unwrap(),
            std::fs::read(result_file(alone, name)).unwrap(),
        );
        assert!(
            resumed == whole,
            "{name} differs from the uninterrupted render's"
        );
    }
    assert!(
        !task.join(pastiche_spec::layout::CHECKPOINT).exists(),
        "a done task's checkpoint is deleted"
    );
}

/// A CPU worker storing checkpoints every `every` iterations (0: only on
/// SIGTERM), on one libtorch thread: a render is bit for bit the same only on
/// the same number of threads (every worker of these tests has one), and on a
/// busy machine one thread is many times faster than two waiting on each other.
fn checkpointing_worker(coordinator: &str, store: &Path, name: &str, every: u32) -> Proc {
    Proc(
        worker_command(coordinator, store, name)
            .args(["--checkpoint-every", &every.to_string()])
            .env("OMP_NUM_THREADS", "1")
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_workers_task_resumes_from_its_checkpoint_and_ends_as_if_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "1s");
    let mut doomed = checkpointing_worker(&coordinator.url(), &store, "doomed", 5);
    let grid = write_example_grid(
        dir.path(),
        "resume",
        "[grid]\nsize = 32\niterations = 80\nlog_every = 1\nline_search = \"none\"\n",
    );
    let job = submit(&coordinator.url(), &store, &grid);
    let task = wait_for_checkpoint(&store, &job);
    doomed.kill9();
    let checkpoint = checkpoint_file(&store, &job, &task);
    let at = checkpoint_iteration(&checkpoint);
    assert!(at > 0 && at % 5 == 0 && at < 80, "checkpoint at {at}");

    let _rescuer = checkpointing_worker(&coordinator.url(), &store, "rescuer", 5);
    watch_to_the_end(&coordinator.url(), &job);
    let tasks = task_dirs(&store, &job);
    assert_eq!(tasks.len(), 1);
    let record = task_json(&tasks[0]);
    assert_eq!(record["attempt"], 2, "{record}");
    assert_eq!(record["resumed_from"], at, "{record}");
    let losses = std::fs::read_to_string(result_file(&tasks[0], "losses.csv")).unwrap();
    let rows: Vec<&str> = losses.lines().skip(1).collect();
    assert_eq!(rows.len(), 80, "one row per iteration, none twice");
    let alone = uninterrupted_render(&coordinator.url(), &store, &grid);
    assert_resumed_as_uninterrupted(&tasks[0], &alone);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_given_back_on_sigterm_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // A lease far longer than the test: only a give-back can requeue the task.
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "10m");
    // No periodic checkpoints: the one it leaves is the one it takes on its way out.
    let mut leaving = checkpointing_worker(&coordinator.url(), &store, "leaving", 0);
    let grid = write_example_grid(
        dir.path(),
        "handover",
        "[grid]\nsize = 32\niterations = 300\noptimizer = \"adam\"\n",
    );
    let job = submit(&coordinator.url(), &store, &grid);
    let task = wait_for_progress(&coordinator.url(), &job).await;
    // Safety: signalling our own child by pid.
    unsafe { libc::kill(leaving.0.id() as i32, libc::SIGTERM) };
    let status = leaving.0.wait().unwrap();
    assert!(
        status.success(),
        "a SIGTERMed worker exits cleanly: {status}"
    );
    let at = checkpoint_iteration(&checkpoint_file(&store, &job, &task));
    assert!(at > 0 && at < 300, "checkpoint at {at}");

    let _next = checkpointing_worker(&coordinator.url(), &store, "next", 0);
    watch_to_the_end(&coordinator.url(), &job);
    let tasks = task_dirs(&store, &job);
    let record = task_json(&tasks[0]);
    assert_eq!(record["resumed_from"], at, "{record}");
    assert!(
        record["worker"].as_str().unwrap().starts_with("next"),
        "{record}"
    );
    let alone = uninterrupted_render(&coordinator.url(), &store, &grid);
    assert_resumed_as_uninterrupted(&tasks[0], &alone);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_checkpoint_is_ignored_with_a_warning_and_the_task_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = start_coordinator(&dir.path().join("state.db"), "127.0.0.1:0", "30s");
    let grid = write_example_grid(
        dir.path(),
        "damaged",
        "[grid]\nsize = 32\niterations = 4\nlog_every = 1\n",
    );
    let job = submit(&coordinator.url(), &store, &grid);
    let plan: serde_json::Value = serde_json::from_str(&succeeded(pastiche(&[
        "plan",
        grid.to_str().unwrap(),
        "--format",
        "json",
    ])))
    .unwrap();
    let task = plan["tasks"][0]["id"].as_str().unwrap().to_owned();
    // As an upload cut short would leave it, if puts were not whole: the
    // first half of a real checkpoint's worth of bytes.
    let checkpoint = checkpoint_file(&store, &job, &task);
    std::fs::create_dir_all(checkpoint.parent().unwrap()).unwrap();
    std::fs::write(
        &checkpoint,
        b"\x40\x00\x00\x00\x00\x00\x00\x00{\"x\":{\"dtype\":\"F32\"",
    )
    .unwrap();

    let mut worker = stand_alone_worker(&coordinator.url(), &store);
    let log = worker.0.stderr.take().unwrap();
    assert!(
        logged(
            log,
            "ignoring the task's checkpoint",
            Duration::from_secs(120)
        )
        .await,
        "the worker warns of the checkpoint"
    );
    watch_to_the_end(&coordinator.url(), &job);
    let tasks = task_dirs(&store, &job);
    let record = task_json(&tasks[0]);
    assert!(record.get("resumed_from").is_none(), "{record}");
    assert_eq!(record["attempt"], 1, "{record}");
    let losses = std::fs::read_to_string(result_file(&tasks[0], "losses.csv")).unwrap();
    assert_eq!(losses.lines().count(), 5, "every iteration's row: {losses}");
    assert!(
        !checkpoint.exists(),
        "the damaged checkpoint is deleted with the task done"
    );
}

/// A CPU worker whose warnings go to a pipe.
fn stand_alone_worker(coordinator: &str, store: &Path) -> Proc {
    Proc(
        worker_command(coordinator, store, "w")
            .env("OMP_NUM_THREADS", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}
