//! The dashboard in a real browser: Debian's headless Chromium, driven through
//! chromedriver's WebDriver API, watches a grid render on the real binaries.
//! It sees the cells fill in and the job end without reloading the page (the
//! page's own script does it), and takes a screenshot
//! (`PASTICHE_DASHBOARD_SCREENSHOT=docs/dashboard.png` keeps it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use pastiche_farm_tests::{
    bin, eventually, free_port, line_after, succeeded, write_example_grid, Proc,
};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One WebDriver call: `method` on `path` with a JSON `body`; the reply's `value`.
fn webdriver(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the body by its length.
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut json = vec![0; length];
    reader.read_exact(&mut json).unwrap();
    let json: Value = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json)));
    json["value"].clone()
}

/// A browser session on chromedriver's `port`.
struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
}

impl Browser {
    fn start() -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: scripts/setup.sh --test installs Debian's chromium and chromium-driver"
            );
        }
        let port = free_port();
        let driver = Proc(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        eventually(Duration::from_secs(30), "chromedriver to listen", || {
            let up = TcpStream::connect(("127.0.0.1", port)).is_ok();
            (up && webdriver(port, "GET", "/status", None)["ready"] == true).then_some(())
        });
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1100,800"],
        }}}});
        let session = webdriver(port, "POST", "/session", Some(capabilities));
        let session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_owned();
        Browser {
            port,
            session,
            _driver: driver,
        }
    }

    fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        webdriver(self.port, "POST", &path, Some(json!({ "url": url })));
    }

    /// What `script` (a function body) returns in the page.
    fn run(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        webdriver(
            self.port,
            "POST",
            &path,
            Some(json!({"script": script, "args": []})),
        )
    }

    fn screenshot(&self) -> Vec<u8> {
        let path = format!("/session/{}/screenshot", self.session);
        let encoded = webdriver(self.port, "GET", &path, None);
        base64(encoded.as_str().expect("base64 text"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(|| webdriver(self.port, "DELETE", &path, None));
    }
}

/// Standard base64, as WebDriver sends screenshots.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let bits = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &d)| acc | u32::from(d) << (18 - 6 * i));
            let bytes = bits.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}

#[test]
fn a_browser_sees_a_grids_cells_fill_in_and_the_job_end() {
    let browser = Browser::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut coordinator = Command::new(bin("pastiche-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--store")
        .arg(&store)
        .arg("--db")
        .arg(dir.path().join("state.db"))
        .env("RUST_LOG", "warn")
        .env_remove("PASTICHE_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open while the coordinator runs: it prints to it.
    let mut out = BufReader::new(coordinator.stdout.take().unwrap());
    let _coordinator = Proc(coordinator);
    let url = format!("http://{}", line_after(&mut out, "listening on ").unwrap());
    let dashboard = line_after(&mut out, "dashboard on ").unwrap();
    let _worker = Proc(
        Command::new(bin("pastiche-worker"))
            .args([
                "--coordinator",
                &url,
                "--device",
                "cpu",
                "--name",
                "browsed",
            ])
            .arg("--store")
            .arg(&store)
            .env("RUST_LOG", "warn")
            .env_remove("PASTICHE_TOKEN")
            .spawn()
            .unwrap(),
    );
    let grid = write_example_grid(
        dir.path(),
        "browsed",
        "preview_every = 5\n[grid]\nstyle_weight = [1e4, 1e5, 1e6]\nsize = 32\niterations = 30\n",
    );
    let job = succeeded(
        Command::new(bin("pastiche"))
            .args(["submit", grid.to_str().unwrap(), "--coordinator", &url])
            .arg("--store")
            .arg(&store)
            .env("RUST_LOG", "warn")
            .env_remove("PASTICHE_TOKEN")
            .output()
            .unwrap(),
    );

    // From the list of jobs to the job's page, as a person would.
    browser.open(&dashboard);
    let link = browser.run("return document.querySelector('table.jobs a').href");
    assert_eq!(link, json!(format!("{dashboard}/jobs/{job}")));
    browser.open(link.as_str().unwrap());
    // Marks this page: a reload would lose it.
    browser.run("window.pastiche_test = 'never reloaded'; return null");
    let cells = browser.run("return document.querySelectorAll('.cell').length");
    assert_eq!(cells, json!(3));
    let state = "return {
        done: document.querySelectorAll('.cell.done img').length,
        ended: document.querySelector('[data-ended]') !== null,
        page: window.pastiche_test || null,
        labels: Array.from(document.querySelectorAll('.cell .labels')).map(l => l.textContent),
    }";
    let limit = Duration::from_secs(120);
    // The cells fill in: the first pastiche while others still render...
    let first = eventually(limit, "a first finished cell", || {
        let seen = browser.run(state);
        (seen["done"].as_u64() > Some(0)).then_some(seen)
    });
    assert_eq!(
        first["page"], "never reloaded",
        "the page's script refreshed it"
    );
    assert_eq!(
        first["labels"],
        json!(["style_weight=1e4", "style_weight=1e5", "style_weight=1e6"])
    );
    // ...and the job ends, every cell with its pastiche.
    let last = eventually(limit, "the job to end", || {
        let seen = browser.run(state);
        (seen["ended"] == true).then_some(seen)
    });
    assert_eq!(last["done"], 3, "{last}");
    assert_eq!(last["page"], "never reloaded");
    eventually(Duration::from_secs(30), "every pastiche shown", || {
        let shown = browser.run(
            "return Array.from(document.querySelectorAll('.cell.done img'))
                .every(i => i.complete && i.naturalWidth > 0)",
        );
        (shown == true).then_some(())
    });
    let heading = browser.run("return document.querySelector('h1').textContent");
    assert!(heading.as_str().unwrap().contains("browsed"), "{heading}");

    let png = browser.screenshot();
    let shot = image::load_from_memory(&png).expect("a PNG screenshot");
    assert!(shot.width() > 500 && shot.height() > 300);
    if let Some(path) = std::env::var_os("PASTICHE_DASHBOARD_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
}
