//! The farm locked down as it is deployed: the real `pastiche-coordinator`,
//! `pastiche-worker` and `pastiche` binaries with a token, over TLS, and with user
//! input that tries to climb out of the store. Workers use the benchmark stand-in
//! (no torch work): the rendering is not what is tested here.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use pastiche_farm_tests::{
    bin, exits_within, line_after, repo, succeeded, write_example_grid, write_test_pki, Proc,
    TestPki,
};

const TOKEN: &str = "s3cret-t0ken-for-the-farm";

/// The grid of the token and TLS tests: two tiny renders.
const TWO_TINY_TASKS: &str = "[grid]\ninit = \"noise\"\nseed = [1, 2]\nsize = 32\niterations = 2\n";

/// `command` without the security settings of whoever runs the tests.
fn clean(mut command: Command) -> Command {
    for var in [
        "PASTICHE_TOKEN",
        "PASTICHE_TOKEN_FILE",
        "PASTICHE_TLS_CA",
        "PASTICHE_TLS_CERT",
        "PASTICHE_TLS_KEY",
        "PASTICHE_METRICS_LISTEN",
        "PASTICHE_HTTP_LISTEN",
        "PASTICHE_COORDINATOR",
    ] {
        command.env_remove(var);
    }
    command.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    command
}

struct Coordinator {
    _proc: Proc,
    addr: String,
    log: PathBuf,
    // Held open: the coordinator may still print.
    stdout: BufReader<ChildStdout>,
}

impl Coordinator {
    fn start(dir: &Path, args: &[&str], token: Option<&str>) -> Coordinator {
        let log = dir.join("coordinator.log");
        let mut command = clean(Command::new(bin("pastiche-coordinator")));
        command
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(dir.join("state.db"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap());
        if let Some(token) = token {
            command.env("PASTICHE_TOKEN", token);
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let addr = line_after(&mut stdout, "listening on ").unwrap_or_else(|| {
            panic!(
                "the coordinator did not start: {}",
                std::fs::read_to_string(&log).unwrap()
            )
        });
        Coordinator {
            _proc: Proc(child),
            addr,
            log,
            stdout,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// A stand-in worker (10 ms a task) started with `args` after the usual ones.
fn worker(url: &str, store: &Path, args: &[&str]) -> Command {
    let mut command = clean(Command::new(bin("pastiche-worker")));
    command
        .args([
            "--coordinator",
            url,
            "--stand-in-ms",
            "10",
            "--device",
            "cpu",
        ])
        .arg("--store")
        .arg(store)
        .args(args);
    command
}

fn pastiche(args: &[&str], env: &[(&str, &str)]) -> Output {
    clean(Command::new(bin("pastiche")))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn failed(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn without_the_token_workers_and_users_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let coordinator = Coordinator::start(dir.path(), &[], Some(TOKEN));
    let url = format!("http://{}", coordinator.addr);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let wrong_file = dir.path().join("wrong-token");
    std::fs::write(&wrong_file, "not-the-token").unwrap();

    // A worker without the token, or with a wrong one, stops at once (no retrying
    // for its 60 s connect timeout) and says why.
    for args in [vec![], vec!["--token-file", wrong_file.to_str().unwrap()]] {
        let mut intruder = worker(&url, &store, &args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = exits_within(&mut intruder, Duration::from_secs(20));
        let mut stderr = String::new();
        intruder
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!status.success(), "{args:?}: {stderr}");
        assert_eq!(status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the coordinator refused this worker's token"),
            "{args:?}: {stderr}"
        );
    }

    // The CLI neither.
    let grid = write_example_grid(dir.path(), "locked", TWO_TINY_TASKS);
    let grid = grid.to_str().unwrap();
    let stderr = failed(&pastiche(&["status", "--coordinator", &url], &[]));
    assert!(stderr.contains("refused this command's token"), "{stderr}");
    let stderr = failed(&pastiche(
        &[
            "submit",
            grid,
            "--coordinator",
            &url,
            "--store",
            store.to_str().unwrap(),
        ],
        &[("PASTICHE_TOKEN", "not-the-token")],
    ));
    assert!(stderr.contains("refused this command's token"), "{stderr}");
    assert!(!store.join("inputs").exists(), "refused before uploading");
    let stderr = failed(&pastiche(
        &["status", "--coordinator", &url],
        &[("PASTICHE_TOKEN", "  ")],
    ));
    assert!(stderr.contains("PASTICHE_TOKEN is empty"), "{stderr}");

    // With the token, a job gets done.
    let _worker = Proc(
        worker(
            &url,
            &store,
            &["--token-file", token_file.to_str().unwrap()],
        )
        .spawn()
        .unwrap(),
    );
    let job = succeeded(pastiche(
        &[
            "submit",
            grid,
            "--coordinator",
            &url,
            "--store",
            store.to_str().unwrap(),
            "--watch",
        ],
        &[("PASTICHE_TOKEN", TOKEN)],
    ));
    let status = succeeded(pastiche(
        &["status", &job, "--coordinator", &url],
        &[("PASTICHE_TOKEN", TOKEN)],
    ));
    assert!(status.contains(" done "), "{status}");

    // The refusals are in the log, with who and what, but no credential.
    let log = coordinator.log();
    assert!(
        log.contains("refused a call without a valid token"),
        "{log}"
    );
    assert!(log.contains("/pastiche.v2.Workers/Register"), "{log}");
    assert!(log.contains("/pastiche.v2.Farm/ListJobs"), "{log}");
    assert!(log.contains("/pastiche.v2.Farm/GetJob"), "{log}");
    assert!(log.contains("peer=127.0.0.1:"), "{log}");
    for secret in [TOKEN, "not-the-token"] {
        assert!(!log.contains(secret), "the log shows '{secret}':\n{log}");
    }
}

#[test]
fn over_tls_only_clients_that_trust_the_ca_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let TestPki { ca, cert, key } = write_test_pki(dir.path());
    let mut coordinator = Coordinator::start(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
        ],
        Some(TOKEN),
    );
    let https = format!("https://{}", coordinator.addr);
    // The dashboard is served over TLS too, with the same certificate.
    let dashboard = line_after(&mut coordinator.stdout, "dashboard on ").unwrap();
    assert!(dashboard.starts_with("https://127.0.0.1:"), "{dashboard}");
    let page = dashboard_page(&dashboard, &ca);
    assert!(page.contains("render farm"), "{page}");
    let token = [("PASTICHE_TOKEN", TOKEN)];

    // Plaintext to the TLS port gets nowhere.
    failed(&pastiche(
        &[
            "status",
            "--coordinator",
            &format!("http://{}", coordinator.addr),
        ],
        &token,
    ));
    // Nor does TLS that trusts only the web's root CAs.
    let stderr = failed(&pastiche(&["status", "--coordinator", &https], &token));
    assert!(stderr.contains(&https), "{stderr}");
    // A CA for a plaintext URL is a mistake, said as such.
    let stderr = failed(&pastiche(
        &[
            "status",
            "--coordinator",
            &format!("http://{}", coordinator.addr),
            "--tls-ca",
            ca.to_str().unwrap(),
        ],
        &token,
    ));
    assert!(stderr.contains("--tls-ca is for an https://"), "{stderr}");

    // Trusting the CA: a whole job, the worker and the CLI both over TLS.
    let _worker = Proc(
        worker(&https, &store, &["--tls-ca", ca.to_str().unwrap()])
            .env("PASTICHE_TOKEN", TOKEN)
            .spawn()
            .unwrap(),
    );
    let grid = write_example_grid(dir.path(), "sealed", TWO_TINY_TASKS);
    let with_ca = [
        ("PASTICHE_TOKEN", TOKEN),
        ("PASTICHE_TLS_CA", ca.to_str().unwrap()),
    ];
    let job = succeeded(pastiche(
        &[
            "submit",
            grid.to_str().unwrap(),
            "--coordinator",
            &https,
            "--store",
            store.to_str().unwrap(),
            "--watch",
        ],
        &with_ca,
    ));
    let status = succeeded(pastiche(
        &["status", &job, "--coordinator", &https],
        &with_ca,
    ));
    assert!(status.contains(" done "), "{status}");
}

/// The dashboard's front page, read over HTTPS trusting only `ca`.
fn dashboard_page(url: &str, ca: &Path) -> String {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let reply = client.get(url).send().await.unwrap();
        assert!(reply.status().is_success(), "{}", reply.status());
        reply.text().await.unwrap()
    })
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn names_that_climb_out_of_the_store_stay_in_it() {
    // dir/evil.png, the grid in dir/grids/deep/, the store in dir/farm/store: a
    // key that climbed out of the store would land in dir/farm or dir.
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let examples = repo().join("examples");
    std::fs::copy(examples.join("chelsea.png"), dir.path().join("evil.png")).unwrap();
    let grids = dir.path().join("grids").join("deep");
    std::fs::create_dir_all(&grids).unwrap();
    std::fs::copy(examples.join("starry_night.jpg"), grids.join("..style.jpg")).unwrap();
    let grid = grids.join("grid.toml");
    std::fs::write(
        &grid,
        "name = \"../../x\"\ncontent = \"../../evil.png\"\nstyle = \"..style.jpg\"\n[grid]\nsize = 32\niterations = 2\n",
    )
    .unwrap();
    let store = dir.path().join("farm").join("store");
    let before = files_under(dir.path());

    let coordinator = Coordinator::start(state.path(), &[], None);
    let url = format!("http://{}", coordinator.addr);
    let _worker = Proc(worker(&url, &store, &[]).spawn().unwrap());
    let job = succeeded(pastiche(
        &[
            "submit",
            grid.to_str().unwrap(),
            "--coordinator",
            &url,
            "--store",
            store.to_str().unwrap(),
            "--watch",
        ],
        &[],
    ));
    pastiche_spec::layout::check_id(&job).unwrap();
    assert!(job.starts_with("x-"), "{job}");

    let created: Vec<PathBuf> = files_under(dir.path())
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    let outside: Vec<&PathBuf> = created
        .iter()
        .filter(|f| !dir.path().join(f).starts_with(&store))
        .collect();
    assert!(outside.is_empty(), "written outside the store: {outside:?}");
    let stored = files_under(&store);
    let job_dir = Path::new("jobs").join(&job);
    for file in &stored {
        let ok = file.starts_with("inputs") && file.components().count() == 2
            || file.starts_with(&job_dir);
        assert!(
            ok,
            "{} is neither an input nor under {}",
            file.display(),
            job_dir.display()
        );
    }
    assert_eq!(
        stored.iter().filter(|f| f.starts_with("inputs")).count(),
        2,
        "{stored:?}"
    );
    assert!(stored.contains(&job_dir.join("job.toml")), "{stored:?}");
    assert_eq!(
        stored.iter().filter(|f| f.ends_with("task.json")).count(),
        1,
        "{stored:?}"
    );
}
