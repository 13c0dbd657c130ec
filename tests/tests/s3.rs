//! The farm against a real S3-compatible server: SeaweedFS (`weed mini`, installed
//! by `scripts/setup.sh --test`) on loopback ports chosen free.

use std::net::TcpStream;

use pastiche_farm_tests::{bin, free_port, repo, succeeded};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "pastiche-test";
const SECRET_KEY: &str = "pastiche-test-secret";

fn weed() -> PathBuf {
    let path = std::env::var_os("PASTICHE_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".deps/reference/bin/weed"));
    assert!(
        path.exists(),
        "SeaweedFS is missing ({}): run scripts/setup.sh --test",
        path.display()
    );
    path
}

struct Seaweed {
    child: Child,
    s3_port: u16,
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Seaweed {
    fn start(dir: &Path, bucket: &str) -> Seaweed {
        let s3_port = free_port();
        let port = |flag: &str| format!("-{flag}={}", free_port());
        let child = Command::new(weed())
            .arg("mini")
            .arg(format!("-dir={}", dir.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-bucket={bucket}"),
            ])
            .arg(format!("-s3.port={s3_port}"))
            .args([
                port("s3.port.grpc"),
                port("master.port"),
                port("master.port.grpc"),
            ])
            .args([
                port("volume.port"),
                port("volume.port.grpc"),
                port("filer.port"),
                port("filer.port.grpc"),
            ])
            .args([port("admin.port"), port("admin.port.grpc")])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weed mini");
        let server = Seaweed { child, s3_port };
        // Readiness: the S3 port accepts connections (polled; the server gives no
        // other signal).
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", s3_port)).is_err() {
            assert!(Instant::now() < deadline, "SeaweedFS did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }
}

fn pastiche(args: &[&str], endpoint: &str) -> Output {
    Command::new(bin("pastiche"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .output()
        .unwrap()
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
    succeeded(pastiche(
        &[
            "results",
            &job,
            "--store",
            store,
            "--out",
            out.to_str().unwrap(),
        ],
        &endpoint,
    ));
    assert!(std::fs::read_to_string(out.join("job.toml"))
        .unwrap()
        .contains("inputs/"));
    let tasks: Vec<PathBuf> = std::fs::read_dir(out.join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tasks.len(), 2);
    for task in &tasks {
        let image = image::open(task.join("pastiche.png")).unwrap();
        assert!(image.width() == 40 || image.width() == 32);
        assert!(std::fs::read_to_string(task.join("losses.csv"))
            .unwrap()
            .starts_with("iteration,content"));
        assert!(task.join("task.json").exists());
    }

    // The endpoint goes away: commands fail naming the store, and nothing that was
    // stored is lost (checked when it comes back).
    drop(seaweed);
    let output = pastiche(
        &[
            "results",
            &job,
            "--store",
            store,
            "--out",
            dir.path().join("again").to_str().unwrap(),
        ],
        &endpoint,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(store), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let back = Seaweed::start(&dir.path().join("weed"), "pastiche");
    let again = dir.path().join("again");
    succeeded(pastiche(
        &[
            "results",
            &job,
            "--store",
            store,
            "--out",
            again.to_str().unwrap(),
        ],
        &back.endpoint(),
    ));
    for task in &tasks {
        let name = task.file_name().unwrap();
        for file in ["pastiche.png", "losses.csv", "task.json"] {
            let before = std::fs::read(task.join(file)).unwrap();
            assert_eq!(
                std::fs::read(again.join("tasks").join(name).join(file)).unwrap(),
                before
            );
        }
    }
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
