//! Helpers for the cross-binary tests and benchmarks in tests/ and benches/: where
//! the built binaries are, and child processes that die with the test.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A built binary of the workspace, next to the running test's own directory
/// (target/<profile>/deps/<test> -> target/<profile>/<name>).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The stdout of a command that must have succeeded (its stderr in the failure).
pub fn succeeded(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.0.wait();
    }

    /// SIGSTOP: frozen, as in a long pause of the machine, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: carries on where [`pause`](Self::pause) froze it.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        // Safety: signalling our own child by pid (not yet reaped: `wait` takes
        // `&mut self`, and only `kill9` and drop call it).
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }
}

/// Reads `reader` up to the first line that starts with `prefix` and returns the
/// rest of that line ("listening on ", "metrics on ": the addresses the binaries
/// print for callers that asked for port 0); `None` if the output ends first.
pub fn line_after(reader: &mut impl BufRead, prefix: &str) -> Option<String> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        if let Some(rest) = line.trim_end().strip_prefix(prefix) {
            return Some(rest.to_owned());
        }
    }
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// The value of one sample in Prometheus text, named as exposed with its labels
/// (`pastiche_tasks{job="j",state="done"}`).
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits for `child` to exit, failing the test if it takes longer than `limit`.
pub fn exits_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `probe` until it returns something, failing the test after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PEM files for a TLS test, written into a directory by [`write_test_pki`].
pub struct TestPki {
    /// The CA that clients are told to trust.
    pub ca: PathBuf,
    /// The server's certificate (for 127.0.0.1 and localhost) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A fresh CA and a server certificate it signed for 127.0.0.1 and localhost.
pub fn write_test_pki(dir: &Path) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pastiche test ca");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "pastiche coordinator");
    let cert = server.signed_by(&key, &ca).unwrap();
    let pki = TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// Writes `<dir>/<name>.toml`: a grid named `name` on the shipped cat photo and
/// painting, followed by `rest` (its `[grid]` table, top-level keys first).
pub fn write_example_grid(dir: &Path, name: &str, rest: &str) -> PathBuf {
    let examples = repo().join("examples");
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\ncontent = \"{}\"\nstyle = \"{}\"\n{rest}",
        examples.join("chelsea.png").display(),
        examples.join("starry_night.jpg").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A file of a finished task's result in a directory store (or a job that
/// `pastiche results` downloaded): under the attempt that the task's
/// `task.json` names.
pub fn result_file(task_dir: &Path, name: &str) -> PathBuf {
    use pastiche_spec::{layout, FinishedTask};
    let record = std::fs::read(task_dir.join(layout::TASK_JSON))
        .unwrap_or_else(|e| panic!("{}: no task.json: {e}", task_dir.display()));
    let attempt = FinishedTask::attempt_in(&record).expect("a readable task.json");
    let task = task_dir.file_name().unwrap().to_str().unwrap();
    let job_dir = task_dir.parent().and_then(Path::parent).unwrap();
    job_dir.join(layout::attempt_file_in_job(task, attempt, name).unwrap())
}

/// The example images' keys once uploaded (`inputs/<sha256>.<ext>`).
pub fn input_keys() -> (String, String) {
    let examples = repo().join("examples");
    let key = |name: &str, ext: &str| {
        let bytes = std::fs::read(examples.join(name)).unwrap();
        pastiche_spec::layout::input_key(&pastiche_spec::sha256_hex(&bytes), ext)
    };
    (key("chelsea.png", "png"), key("starry_night.jpg", "jpg"))
}

/// A grid over already-uploaded inputs, with `seeds` x `sizes` tasks.
pub fn uploaded_grid(name: &str, seeds: std::ops::Range<usize>, sizes: usize) -> String {
    let (content, style) = input_keys();
    let list = |r: std::ops::Range<usize>| r.map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    format!(
        "name = \"{name}\"\ncontent = \"{content}\"\nstyle = \"{style}\"\n[grid]\ninit = \"noise\"\nseed = [{}]\nsize = [{}]\niterations = 1\n",
        list(seeds),
        list(64..64 + sizes)
    )
}

/// The time now as `YYYY-MM-DD HH:MM UTC`, as benchmark tables are dated.
pub fn utc_now() -> String {
    let output = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Puts `table` into BENCHMARKS.md between the `<!-- {marker}:start -->` and
/// `<!-- {marker}:end -->` lines, or at the end under `## {heading}`.
pub fn write_benchmarks_section(marker: &str, heading: &str, table: &str) {
    let path = repo().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let (start, end) = (
        format!("<!-- {marker}:start -->"),
        format!("<!-- {marker}:end -->"),
    );
    let section = format!("{start}\n{table}{end}");
    let text = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], section, &text[b + end.len()..]),
        _ => format!("{text}\n## {heading}\n\n{section}\n"),
    };
    std::fs::write(&path, text).unwrap();
}

/// A `pastiche-coordinator` given `args` and `--db db`, once it listens (its
/// address read from the line it prints), with its stderr going to `stderr`.
pub fn spawn_coordinator(db: &Path, args: &[&str], stderr: std::process::Stdio) -> (Proc, String) {
    let mut child = std::process::Command::new(bin("pastiche-coordinator"))
        .args(args)
        .arg("--db")
        .arg(db)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let addr = line_after(&mut stdout, "listening on ")
        .unwrap_or_else(|| panic!("the coordinator printed no address"));
    (Proc(child), addr)
}

/// The credentials the test S3 server ([`Seaweed`]) accepts.
pub const S3_ACCESS_KEY: &str = "pastiche-test";
pub const S3_SECRET_KEY: &str = "pastiche-test-secret";

/// The SeaweedFS binary: `PASTICHE_WEED`, else the one `scripts/setup.sh --test`
/// installs.
pub fn weed() -> PathBuf {
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

/// A real S3-compatible server: SeaweedFS (`weed mini`) on loopback ports chosen
/// free, killed when dropped.
pub struct Seaweed {
    child: Child,
    s3_port: u16,
    /// How it was started, to start it again on the same ports and data.
    args: Vec<String>,
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Seaweed {
    /// Starts a server keeping its data in `dir`, with `bucket` created; returns
    /// once its S3 port accepts connections.
    pub fn start(dir: &Path, bucket: &str) -> Seaweed {
        let s3_port = free_port();
        let port = |flag: &str| format!("-{flag}={}", free_port());
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", dir.display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-bucket={bucket}"),
            format!("-s3.port={s3_port}"),
        ];
        for flag in [
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(port(flag));
        }
        args.extend(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"].map(String::from));
        let child = Self::spawn(&args, s3_port);
        Seaweed {
            child,
            s3_port,
            args,
        }
    }

    fn spawn(args: &[String], s3_port: u16) -> Child {
        let child = Command::new(weed())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weed mini");
        // Readiness: the S3 port accepts connections (polled; the server gives no
        // other signal).
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", s3_port)).is_err() {
            assert!(Instant::now() < deadline, "SeaweedFS did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// Stops the server (SIGKILL, as a crash or a network partition would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, on the same ports and data.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.args, self.s3_port);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }
}

/// The environment that points the S3 store at `endpoint` (a [`Seaweed`]), as
/// the binaries read it.
pub fn s3_env(endpoint: &str) -> [(&'static str, String); 4] {
    [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
    ]
}

/// The workspace binary `program` with the S3 server at `endpoint` as its
/// store's, logging warnings.
pub fn with_s3(program: &str, endpoint: &str) -> Command {
    let mut command = Command::new(bin(program));
    command.env("RUST_LOG", "warn").envs(s3_env(endpoint));
    command
}

/// The iteration a task's checkpoint (`checkpoint.safetensors`) was taken
/// after, as its safetensors header's metadata says (8 bytes of length, then
/// JSON with `"iteration":"<n>"` among the `__metadata__` strings).
pub fn checkpoint_iteration(bytes: &[u8]) -> u32 {
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + length]).unwrap();
    let (_, rest) = header
        .split_once("\"iteration\":\"")
        .unwrap_or_else(|| panic!("no iteration in {header}"));
    rest.split('"').next().unwrap().parse().unwrap()
}
