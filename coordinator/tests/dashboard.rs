//! The dashboard over a real socket, read with a real HTTP client: pages, the
//! live parts a refresh fetches, images from the store, and cancelling with and
//! without the farm's token.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::config;
use pastiche_coordinator::core::{
    Coordinator, CoordinatorConfig, Ending, Progress, Registration, Submission, TaskRef,
};
use pastiche_coordinator::dashboard;
use pastiche_coordinator::server::ServerSecurity;
use pastiche_coordinator::tls::TlsIdentity;
use pastiche_farm_tests::write_test_pki;
use pastiche_proto::security::Token;
use pastiche_spec::store::Store;
use pastiche_spec::{layout, LossRecord};
use reqwest::StatusCode;

/// A grid of three renders, its inputs named as `submit` names them.
fn grid() -> String {
    let content = layout::input_key(&"a".repeat(64), "png");
    let style = layout::input_key(&"b".repeat(64), "jpg");
    format!(
        "name = \"tiny <study>\"\ncontent = \"{content}\"\nstyle = \"{style}\"\n\
         [grid]\nsize = [32, 48, 64]\niterations = 3\n\
         [names]\n\"{content}\" = \"chelsea.png\"\n\"{style}\" = \"starry.jpg\"\n"
    )
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb([200, 40, 40]));
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

struct Farm {
    coordinator: Arc<Coordinator>,
    store: Store,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn farm(token: Option<&str>) -> Farm {
    let security = ServerSecurity {
        tls: None,
        token: token.map(|t| Token::parse(t, "the test").unwrap()),
    };
    farm_with(security, reqwest::Client::new()).await
}

/// A farm whose dashboard `client` reaches over HTTPS, with the farm's
/// certificate (from the test CA in `dir`) and `token`.
async fn farm_over_tls(dir: &std::path::Path, token: &str) -> Farm {
    let pki = write_test_pki(dir);
    let tls = TlsIdentity::from_pem(
        &std::fs::read(&pki.cert).unwrap(),
        &std::fs::read(&pki.key).unwrap(),
    )
    .unwrap();
    let security = ServerSecurity {
        tls: Some(tls),
        token: Some(Token::parse(token, "the test").unwrap()),
    };
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    farm_with(security, client).await
}

async fn farm_with(security: ServerSecurity, client: reqwest::Client) -> Farm {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store").to_str().unwrap()).unwrap();
    let coordinator = Coordinator::open(
        None,
        CoordinatorConfig {
            store: Some(store.clone()),
            ..config(Duration::from_secs(30))
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    dashboard::serve(listener, Arc::clone(&coordinator), security);
    Farm {
        coordinator,
        store,
        url,
        client,
        _dir: dir,
    }
}

impl Farm {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    async fn text(&self, path: &str) -> String {
        let reply = self.get(path).await;
        assert_eq!(reply.status(), StatusCode::OK, "{path}");
        reply.text().await.unwrap()
    }

    /// The live part of `job`'s page once it shows `text`, as the page's
    /// script would see it (asked again until then, for up to 30 s).
    async fn live_until(&self, job: &str, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let live = self.text(&format!("/live/jobs/{job}")).await;
            if live.contains(text) {
                return live;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never showed {text}: {live}"
            );
            tokio::task::yield_now().await;
        }
    }

    async fn cancel(&self, job: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/jobs/{job}/cancel", self.url))
            .header(dashboard::CANCEL_HEADER, "1");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    fn submit(&self) -> String {
        self.coordinator
            .submit(Submission {
                grid_toml: grid(),
                grid_name: "tiny.toml".into(),
                ..Default::default()
            })
            .unwrap()
            .job
    }
}

/// The width and height of a PNG reply.
async fn png_size(reply: reqwest::Response) -> (u32, u32) {
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["content-type"], "image/png");
    let bytes = reply.bytes().await.unwrap();
    let image = image::load_from_memory(&bytes).unwrap();
    (image.width(), image.height())
}

#[tokio::test]
async fn pages_show_the_jobs_and_a_job_fills_in_as_its_tasks_run_and_end() {
    let farm = farm(None).await;
    let empty = farm.text("/").await;
    assert!(empty.contains("No jobs yet"), "{empty}");
    let job = farm.submit();

    let jobs = farm.text("/").await;
    assert!(jobs.contains("tiny &lt;study&gt;"), "escaped: {jobs}");
    assert!(jobs.contains(&format!("href=\"/jobs/{job}\"")));
    assert!(jobs.contains("data-src=\"/live/jobs\""));
    assert!(farm.text("/live/jobs").await.contains("0 of 3 done"));

    // A worker takes the first task and reports progress with a preview.
    let registered = farm
        .coordinator
        .register(&Registration {
            name: "gpu-node".into(),
            device: "cuda:0".into(),
            device_name: "NVIDIA H200".into(),
            device_memory_bytes: 1 << 30,
            store: String::new(),
        })
        .unwrap();
    let worker = registered.worker;
    let task = farm
        .coordinator
        .lease(&worker, Duration::ZERO)
        .await
        .unwrap()
        .expect("queued");
    let preview = layout::preview_key(&job, &task.task).unwrap();
    farm.store.put(&preview, png(48, 32)).await.unwrap();
    let reference = TaskRef {
        worker: worker.clone(),
        job: job.clone(),
        task: task.task.clone(),
        attempt: task.attempt,
    };
    for iteration in 1..=2 {
        let total = 100.0 / f64::from(iteration);
        farm.coordinator.heartbeat(
            &reference,
            Progress {
                iteration,
                iterations: 3,
                latest: Some(LossRecord {
                    iteration,
                    content: 1.0,
                    style: total - 1.0,
                    tv: 0.0,
                    total,
                }),
                preview_iteration: iteration,
            },
        );
    }
    // The dashboard hears heartbeats as watchers do, on a task of its own.
    let live = farm.live_until(&job, "iteration 2 of 3").await;
    assert!(live.contains("1 running"), "{live}");
    assert!(live.contains("iteration 2 of 3"), "{live}");
    assert!(
        live.contains("<svg class=\"losses\""),
        "a chart of the losses: {live}"
    );
    assert!(
        live.contains("cuda:0 (NVIDIA H200)"),
        "the worker's device: {live}"
    );
    assert!(live.contains(&format!("/tasks/{}/preview.png?w=160&amp;v=2", task.task)));
    assert!(
        live.contains("size=32") && live.contains("size=64"),
        "what varies labels the cells: {live}"
    );
    assert!(!live.contains("data-ended"));
    let page = farm.text(&format!("/jobs/{job}")).await;
    assert!(page.contains(&format!("data-src=\"/live/jobs/{job}\"")));
    assert!(page.contains("/assets/dashboard.js"));

    // Images come from the store, resized.
    let resized = farm
        .get(&format!(
            "/jobs/{job}/tasks/{}/preview.png?w=24&v=2",
            task.task
        ))
        .await;
    assert_eq!(png_size(resized).await, (24, 16));
    let whole = farm
        .get(&format!("/jobs/{job}/tasks/{}/preview.png", task.task))
        .await;
    assert_eq!(png_size(whole).await, (48, 32));
    let none = farm
        .get(&format!("/jobs/{job}/tasks/{}/pastiche.png", task.task))
        .await;
    assert_eq!(none.status(), StatusCode::NOT_FOUND, "no result yet");

    // It finishes: its pastiche is the winning attempt's.
    let pastiche =
        layout::attempt_file_key(&job, &task.task, task.attempt, "pastiche.png").unwrap();
    farm.store.put(&pastiche, png(64, 64)).await.unwrap();
    let record = layout::task_record_key(&job, &task.task).unwrap();
    let winner = format!(
        "{{\"attempt\": {}, \"worker\": \"{worker}\"}}",
        task.attempt
    );
    farm.store.put(&record, winner).await.unwrap();
    assert!(farm.coordinator.end(&reference, Ending::Done).unwrap());
    let live = farm.text(&format!("/live/jobs/{job}")).await;
    assert!(live.contains("1 of 3 done"), "{live}");
    assert!(live.contains(&format!("/tasks/{}/pastiche.png?w=160", task.task)));
    let thumb = farm
        .get(&format!(
            "/jobs/{job}/tasks/{}/pastiche.png?w=32",
            task.task
        ))
        .await;
    assert_eq!(png_size(thumb).await, (32, 32));
    let raw = farm
        .get(&format!(
            "/jobs/{job}/tasks/{}/attempt-{}/pastiche.png",
            task.task, task.attempt
        ))
        .await;
    assert_eq!(png_size(raw).await, (64, 64));

    // Once ended, the page says so (its script stops refreshing) and links the report.
    farm.coordinator.cancel(&job).unwrap();
    let report = format!("{}index.html", layout::report_prefix(&job).unwrap());
    farm.store.put(&report, "<h1>report</h1>").await.unwrap();
    let live = farm.text(&format!("/live/jobs/{job}")).await;
    assert!(live.contains("data-ended"), "{live}");
    assert!(live.contains(&format!("href=\"/jobs/{job}/report/index.html\"")));
    assert!(!live.contains("Cancel the job"));
    let served = farm.get(&format!("/jobs/{job}/report/index.html")).await;
    assert_eq!(served.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(served.text().await.unwrap(), "<h1>report</h1>");
}

#[tokio::test]
async fn bad_requests_are_refused_clearly() {
    let farm = farm(None).await;
    let job = farm.submit();
    for (path, status) in [
        ("/jobs/nope", StatusCode::NOT_FOUND),
        ("/live/jobs/nope", StatusCode::NOT_FOUND),
        ("/jobs/a.b/tasks/c/preview.png", StatusCode::BAD_REQUEST),
        (
            &format!("/jobs/{job}/tasks/t/preview.png?w=5") as &str,
            StatusCode::BAD_REQUEST,
        ),
        (
            &format!("/jobs/{job}/tasks/t/preview.png"),
            StatusCode::NOT_FOUND,
        ),
        (
            &format!("/jobs/{job}/tasks/t/attempt-x/pastiche.png"),
            StatusCode::BAD_REQUEST,
        ),
        (
            &format!("/jobs/{job}/tasks/t/attempt-1/task.json"),
            StatusCode::NOT_FOUND,
        ),
        (&format!("/jobs/{job}/report/a//x"), StatusCode::BAD_REQUEST),
    ] {
        let reply = farm.get(path).await;
        assert_eq!(reply.status(), status, "{path}");
        assert!(!reply.text().await.unwrap().is_empty(), "{path} says why");
    }
}

#[tokio::test]
async fn cancelling_takes_the_farms_token_when_it_has_one() {
    let farm = farm(Some("s3cret")).await;
    let job = farm.submit();
    let page = farm.text(&format!("/live/jobs/{job}")).await;
    assert!(
        page.contains("data-token=\"required\""),
        "the page asks for it: {page}"
    );
    for token in [None, Some("wrong")] {
        let refused = farm.cancel(&job, token).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.text().await.unwrap().contains("token"));
        assert!(
            !farm.coordinator.status(&job).unwrap().ended(),
            "nothing changed"
        );
    }
    assert_eq!(
        farm.cancel(&job, Some("s3cret")).await.status(),
        StatusCode::OK
    );
    assert!(farm.coordinator.status(&job).unwrap().ended());

    let open = farm_without_token_cancels().await;
    assert!(open);
}

/// Without a token, anyone who reaches the dashboard may cancel, as with gRPC.
async fn farm_without_token_cancels() -> bool {
    let farm = farm(None).await;
    let job = farm.submit();
    let page = farm.text(&format!("/live/jobs/{job}")).await;
    assert!(page.contains("data-token=\"none\""));
    // Not another site's form, which cannot send the page's header.
    let form = farm
        .client
        .post(format!("{}/jobs/{job}/cancel", farm.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=y")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::FORBIDDEN);
    assert!(!farm.coordinator.status(&job).unwrap().ended());
    let reply = farm.cancel(&job, None).await;
    reply.status() == StatusCode::OK && farm.coordinator.status(&job).unwrap().ended()
}

#[tokio::test]
async fn with_the_farms_certificate_the_pages_are_served_over_tls_only() {
    let pki_dir = tempfile::tempdir().unwrap();
    let farm = farm_over_tls(pki_dir.path(), "s3cret").await;
    let job = farm.submit();
    assert!(farm.url.starts_with("https://"));

    // A client that trusts the farm's CA reads the pages and the live parts.
    assert!(farm.text("/").await.contains(&job));
    assert!(farm
        .text(&format!("/live/jobs/{job}"))
        .await
        .contains("data-token=\"required\""));

    // Plain HTTP to the same port gets no page.
    let plain = format!("http://{}/", farm.url.trim_start_matches("https://"));
    let reply = reqwest::Client::new().get(&plain).send().await;
    assert!(
        reply.is_err() || !reply.unwrap().status().is_success(),
        "plain HTTP was served"
    );
    // Nor does TLS that trusts only the web's roots.
    let stranger = reqwest::Client::new()
        .get(format!("{}/", farm.url))
        .send()
        .await;
    assert!(stranger.is_err(), "a client without the CA got through");

    // Cancelling over TLS still takes the token.
    assert_eq!(
        farm.cancel(&job, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(!farm.coordinator.status(&job).unwrap().ended());
    assert_eq!(
        farm.cancel(&job, Some("s3cret")).await.status(),
        StatusCode::OK
    );
    assert!(farm.coordinator.status(&job).unwrap().ended());
}

#[test]
fn a_certificate_without_its_key_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_test_pki(dir.path());
    let cert = std::fs::read(&pki.cert).unwrap();
    let ca = std::fs::read(&pki.ca).unwrap();
    // Another key than the certificate's.
    let other = write_test_pki(&{
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        other
    });
    let wrong_key = std::fs::read(other.key).unwrap();
    assert!(TlsIdentity::from_pem(&cert, &wrong_key).is_err());
    let no_key = TlsIdentity::from_pem(&cert, &ca).unwrap_err();
    assert!(no_key.to_string().contains("private key"), "{no_key}");
    let no_cert = TlsIdentity::from_pem(b"", &std::fs::read(&pki.key).unwrap()).unwrap_err();
    assert!(no_cert.to_string().contains("certificate"), "{no_cert}");
}
