//! The farm against a real S3-compatible server: SeaweedFS (`weed mini`, installed
//! by `scripts/setup.sh --test`) on loopback ports chosen free.

use pastiche_farm_tests::{
    checkpoint_iteration, eventually, repo, result_file, s3_env, succeeded, with_s3, Proc, Seaweed,
};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// `pastiche results JOB --store STORE --out OUT`.
fn results(job: &str, store: &str, out: &str, endpoint: &str) -> Output {
    pastiche(&["results", job, "--store", store, "--out", out], endpoint)
}

fn pastiche(args: &[&str], endpoint: &str) -> Output {
    with_s3("pastiche", endpoint).args(args).output().unwrap()
}

/// A store at `url` on the server at `endpoint`, for the test itself. The
/// store reads its settings from the environment, as the binaries do, and
/// tests run in parallel: one sets it and opens its store at a time.
fn s3_store(endpoint: &str, url: &str) -> pastiche_spec::store::Store {
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    for (name, value) in s3_env(endpoint) {
        std::env::set_var(name, value);
    }
    pastiche_spec::store::Store::open(url).unwrap()
}

#[test]
fn a_grid_stores_its_results_in_s3_and_a_down_endpoint_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let seaweed = Seaweed::start(&dir.path().join("weed"), "pastiche");
    let endpoint = seaweed.endpoint();
    let store = "s3://pastiche/farm";
    let examples = repo().join("examples");
    let grid = dir.path().join("s3.toml");
    std::fs::write(
        &grid,
        format!(
            "name = \"s3\"\ncontent = \"{}\"\nstyle = \"{}\"\n[grid]\nsize = [32, 40]\niterations = 3\n",
            examples.join("chelsea.png").display(),
            examples.join("starry_night.jpg").display()
        ),
    )
    .unwrap();
    let db = dir.path().join("state.db");
    let job = succeeded(pastiche(
        &[
            "local",
            grid.to_str().unwrap(),
            "--workers",
            "2",
            "--store",
            store,
            "--db",
            db.to_str().unwrap(),
        ],
        &endpoint,
    ));

    let out = dir.path().join("results");
    succeeded(results(&job, store, out.to_str().unwrap(), &endpoint));
    assert!(std::fs::read_to_string(out.join("job.toml"))
        .unwrap()
        .contains("inputs/"));
    let tasks: Vec<PathBuf> = std::fs::read_dir(out.join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tasks.len(), 2);
    for task in &tasks {
        let image = image::open(result_file(task, "pastiche.png")).unwrap();
        assert!(image.width() == 40 || image.width() == 32);
        assert!(std::fs::read_to_string(result_file(task, "losses.csv"))
            .unwrap()
            .starts_with("iteration,content"));
        assert!(task.join("task.json").exists());
    }

    // The endpoint goes away: commands fail naming the store, and nothing that was
    // stored is lost (checked when it comes back).
    drop(seaweed);
    let output = results(
        &job,
        store,
        dir.path().join("again").to_str().unwrap(),
        &endpoint,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(store), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let back = Seaweed::start(&dir.path().join("weed"), "pastiche");
    let again = dir.path().join("again");
    succeeded(results(
        &job,
        store,
        again.to_str().unwrap(),
        &back.endpoint(),
    ));
    for task in &tasks {
        let name = task.file_name().unwrap();
        let downloaded = again.join("tasks").join(name);
        for file in ["pastiche.png", "losses.csv"] {
            let before = std::fs::read(result_file(task, file)).unwrap();
            assert_eq!(
                std::fs::read(result_file(&downloaded, file)).unwrap(),
                before
            );
        }
        let record = std::fs::read(downloaded.join("task.json")).unwrap();
        assert_eq!(record, std::fs::read(task.join("task.json")).unwrap());
    }
}

#[test]
fn a_store_outage_longer_than_the_s3_clients_retries_fails_no_task_and_wastes_no_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let mut seaweed = Seaweed::start(&dir.path().join("weed"), "pastiche");
    let endpoint = seaweed.endpoint();
    let store = "s3://pastiche/outage";
    let mut coordinator = with_s3("pastiche-coordinator", &endpoint)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--lease-timeout",
            "2s",
            "--store",
            store,
        ])
        .arg("--db")
        .arg(dir.path().join("state.db"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(coordinator.stdout.take().unwrap());
    let url = format!(
        "http://{}",
        pastiche_farm_tests::line_after(&mut stdout, "listening on ").unwrap()
    );
    let _coordinator = Proc(coordinator);
    let _workers: Vec<Proc> = (0..2)
        .map(|i| {
            let worker = with_s3("pastiche-worker", &endpoint)
                .args(["--coordinator", &url, "--store", store, "--device", "cpu"])
                .args(["--name", &format!("w{i}"), "--stand-in-ms", "1500"])
                .spawn()
                .unwrap();
            Proc(worker)
        })
        .collect();
    let grid = pastiche_farm_tests::write_example_grid(
        dir.path(),
        "outage",
        "[grid]\nsize = 32\ninit = \"noise\"\nseed = [1, 2, 3, 4, 5, 6]\n",
    );
    let job = succeeded(pastiche(
        &["submit", grid.to_str().unwrap(), "--coordinator", &url],
        &endpoint,
    ));

    // The store goes away while the first tasks render, for a minute: four times
    // as long as the S3 client's own retries last (15 s). Their results wait.
    seaweed.stop();
    std::thread::sleep(Duration::from_secs(60)); // the outage, not a synchronisation
    seaweed.restart();

    succeeded(pastiche(&["watch", &job, "--coordinator", &url], &endpoint));
    let out = dir.path().join("results");
    succeeded(results(&job, store, out.to_str().unwrap(), &endpoint));
    let tasks: Vec<PathBuf> = std::fs::read_dir(out.join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tasks.len(), 6);
    for task in &tasks {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(task.join("task.json")).unwrap()).unwrap();
        assert_eq!(
            record["attempt"], 1,
            "an attempt was spent on the outage: {record}"
        );
        assert!(result_file(task, "pastiche.png").exists());
    }
}

#[test]
fn a_tasks_record_is_created_once_on_a_real_s3_server() {
    let dir = tempfile::tempdir().unwrap();
    let seaweed = Seaweed::start(&dir.path().join("weed"), "pastiche");
    let store = s3_store(&seaweed.endpoint(), "s3://pastiche/fence");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        assert!(store.put_new("t/task.json", "first").await.unwrap());
        assert!(
            !store.put_new("t/task.json", "second").await.unwrap(),
            "the server ignored If-None-Match"
        );
        assert_eq!(store.get("t/task.json").await.unwrap(), "first");
    });
}

/// A grid may name an input outside the farm's store only under a prefix given
/// with --allow-input: `pastiche local` refuses such weights without it, and with
/// it hands the prefix to its coordinator and renders with them.
#[test]
fn local_reads_weights_from_another_s3_prefix_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let seaweed = Seaweed::start(&dir.path().join("weed"), "pastiche");
    let endpoint = seaweed.endpoint();
    let examples = repo().join("examples");
    let weights = repo().join(".deps/weights/vgg16.safetensors");
    let grid = |name: &str, weights: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\ncontent = \"{}\"\nstyle = \"{}\"\n[grid]\nbackbone = \"vgg16\"\n\
                 size = 32\niterations = 1\n[weights]\nvgg16 = \"{weights}\"\n",
                examples.join("chelsea.png").display(),
                examples.join("starry_night.jpg").display()
            ),
        )
        .unwrap();
        path
    };
    let local = |grid: &Path, store: &str, more: &[&str]| {
        let db = grid.with_extension("db");
        let args = [
            "local",
            grid.to_str().unwrap(),
            "--store",
            store,
            "--db",
            db.to_str().unwrap(),
        ];
        pastiche(&[&args[..], more].concat(), &endpoint)
    };

    // Another farm's store holds the weights, under their content key.
    let shared = "s3://pastiche/shared";
    succeeded(local(
        &grid("stage", weights.to_str().unwrap()),
        shared,
        &[],
    ));
    let key = pastiche_spec::layout::input_key_of(&weights, &std::fs::read(&weights).unwrap());
    let url = format!("{shared}/{key}");

    let named = grid("named", &url);
    let store = dir.path().join("results");
    let store = store.to_str().unwrap();
    let refused = local(&named, store, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("weights.vgg16")
            && stderr.contains(&url)
            && stderr.contains("--allow-input"),
        "{stderr}"
    );
    succeeded(local(&named, store, &["--allow-input", shared]));
}

/// A worker stopped with SIGTERM leaves its checkpoint in S3; the next worker
/// resumes from it, and the checkpoint is deleted once the task is done.
#[test]
fn a_checkpoint_stored_in_s3_is_resumed_from_and_deleted_when_the_task_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let seaweed = Seaweed::start(&dir.path().join("weed"), "pastiche");
    let endpoint = seaweed.endpoint();
    let store = "s3://pastiche/resume";
    // A lease far longer than the test: only a give-back requeues the task.
    let mut coordinator = with_s3("pastiche-coordinator", &endpoint)
        .args(["--listen", "127.0.0.1:0", "--lease-timeout", "10m"])
        .args(["--store", store])
        .arg("--db")
        .arg(dir.path().join("state.db"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(coordinator.stdout.take().unwrap());
    let url = format!(
        "http://{}",
        pastiche_farm_tests::line_after(&mut stdout, "listening on ").unwrap()
    );
    let _coordinator = Proc(coordinator);
    let worker = |name: &str| {
        let worker = with_s3("pastiche-worker", &endpoint)
            .args(["--coordinator", &url, "--store", store, "--device", "cpu"])
            .args(["--name", name, "--checkpoint-every", "5"])
            .env("OMP_NUM_THREADS", "1")
            .spawn()
            .unwrap();
        Proc(worker)
    };
    let mut leaving = worker("leaving");
    let grid = pastiche_farm_tests::write_example_grid(
        dir.path(),
        "resume",
        "[grid]\nsize = 32\noptimizer = \"adam\"\niterations = 200\n",
    );
    let job = succeeded(pastiche(
        &["submit", grid.to_str().unwrap(), "--coordinator", &url],
        &endpoint,
    ));

    let s3 = s3_store(&endpoint, store);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tasks = format!("jobs/{job}/tasks/");
    let checkpoint = eventually(Duration::from_secs(120), "a checkpoint in S3", || {
        let keys = runtime.block_on(s3.list(&tasks)).unwrap_or_default();
        keys.into_iter()
            .find(|key| key.ends_with(pastiche_spec::layout::CHECKPOINT))
    });
    // Safety: signalling our own child by pid.
    unsafe { libc::kill(leaving.0.id() as i32, libc::SIGTERM) };
    assert!(leaving.0.wait().unwrap().success());
    let at = checkpoint_iteration(&runtime.block_on(s3.get(&checkpoint)).unwrap());
    assert!((5..200).contains(&at), "checkpoint at {at}");

    let _next = worker("next");
    succeeded(pastiche(&["watch", &job, "--coordinator", &url], &endpoint));
    let out = dir.path().join("results");
    succeeded(results(&job, store, out.to_str().unwrap(), &endpoint));
    let task = std::fs::read_dir(out.join("tasks"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(task.join("task.json")).unwrap()).unwrap();
    assert_eq!(record["resumed_from"], at, "{record}");
    let keys = runtime.block_on(s3.list(&tasks)).unwrap();
    assert!(
        !keys
            .iter()
            .any(|key| key.ends_with(pastiche_spec::layout::CHECKPOINT)),
        "the checkpoint is deleted: {keys:?}"
    );
}
