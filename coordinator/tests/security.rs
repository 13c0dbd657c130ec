//! The coordinator's token check, TLS and metrics over real sockets: its services
//! on 127.0.0.1:0 behind `serve_secured`, called as the CLI and the workers call.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, GRID};
use pastiche_coordinator::core::Coordinator;
use pastiche_coordinator::server::{serve_secured, ServerSecurity};
use pastiche_coordinator::tls::TlsIdentity;
use pastiche_farm_tests::write_test_pki;
use pastiche_proto::pb;
use pastiche_proto::pb::farm_client::FarmClient;
use pastiche_proto::pb::workers_client::WorkersClient;
use pastiche_proto::security::{ClientSecurity, Token};
use tonic::transport::Channel;
use tonic::Code;

/// Serves `coordinator` with `security` on a fresh port until the test ends;
/// returns the address.
async fn start(coordinator: Arc<Coordinator>, security: ServerSecurity) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        serve_secured(coordinator, listener, security, std::future::pending())
            .await
            .unwrap();
    });
    addr
}

fn token(text: &str) -> Token {
    Token::parse(text, "test").unwrap()
}

async fn connect(url: &str, security: &ClientSecurity) -> Result<Channel, tonic::transport::Error> {
    security.endpoint(url).unwrap().connect().await
}

#[tokio::test]
async fn without_the_token_every_call_but_health_is_refused() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let security = ServerSecurity {
        tls: None,
        token: Some(token("s3cret")),
    };
    let url = format!("http://{}", start(coordinator, security).await);

    for presented in [None, Some(token("wrong"))] {
        let client = ClientSecurity {
            tls_ca: None,
            token: presented.clone(),
        };
        let channel = client.authorize(connect(&url, &client).await.unwrap());
        let mut farm = FarmClient::new(channel.clone());
        let mut workers = WorkersClient::new(channel.clone());
        let refusals = [
            farm.list_jobs(pb::ListJobsRequest {}).await.map(drop),
            farm.submit_job(pb::SubmitJobRequest {
                grid_toml: GRID.into(),
                ..Default::default()
            })
            .await
            .map(drop),
            workers
                .register(pb::RegisterRequest {
                    name: "w".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                }]))
                .await
                .map(drop),
        ];
        for (i, refusal) in refusals.into_iter().enumerate() {
            let status = refusal.expect_err("a call without the token went through");
            assert_eq!(status.code(), Code::Unauthenticated, "call {i}: {status:?}");
        }
        // Kubernetes probes carry no token.
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "pastiche.v2.Workers".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status, 1, "SERVING");
    }

    let client = ClientSecurity {
        tls_ca: None,
        token: Some(token("s3cret")),
    };
    let channel = client.authorize(connect(&url, &client).await.unwrap());
    let submitted = FarmClient::new(channel.clone())
        .submit_job(pb::SubmitJobRequest {
            grid_toml: GRID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.tasks, 2);
    WorkersClient::new(channel)
        .register(pb::RegisterRequest {
            name: "w".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn over_tls_only_clients_that_trust_the_ca_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_test_pki(dir.path());
    let identity = TlsIdentity::from_pem(
        &std::fs::read(&pki.cert).unwrap(),
        &std::fs::read(&pki.key).unwrap(),
    )
    .unwrap();
    let ca_file = pki.ca;
    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let security = ServerSecurity {
        tls: Some(identity),
        token: Some(token("s3cret")),
    };
    let addr = start(coordinator, security).await;
    let list = |channel| async move {
        FarmClient::new(channel)
            .list_jobs(pb::ListJobsRequest {})
            .await
            .map(|r| r.into_inner().jobs.len())
    };

    let trusting = ClientSecurity {
        tls_ca: Some(ca_file),
        token: Some(token("s3cret")),
    };
    let channel = connect(&format!("https://{addr}"), &trusting)
        .await
        .unwrap();
    assert_eq!(list(trusting.authorize(channel)).await.unwrap(), 0);

    // Plaintext to a TLS port: no call gets through.
    let plain = ClientSecurity {
        tls_ca: None,
        token: Some(token("s3cret")),
    };
    if let Ok(channel) = connect(&format!("http://{addr}"), &plain).await {
        let status = list(plain.authorize(channel)).await.unwrap_err();
        assert_ne!(status.code(), Code::Ok);
    }

    // TLS, but trusting only the web's roots: the handshake fails.
    let untrusting = ClientSecurity {
        tls_ca: None,
        token: Some(token("s3cret")),
    };
    assert!(connect(&format!("https://{addr}"), &untrusting)
        .await
        .is_err());
}

async fn scrape(coordinator: &Arc<Coordinator>) -> String {
    let registry = pastiche_coordinator::metrics::registry(coordinator);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// The value of the sample `name` (with its labels, as exposed) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

async fn lease(workers: &mut WorkersClient<Channel>, worker: &str) -> pb::TaskAssignment {
    workers
        .lease(pb::LeaseRequest {
            worker_id: worker.into(),
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .expect("a queued task")
}

/// Scrapes until `done` says the text is what the test waits for.
async fn scrape_until(coordinator: &Arc<Coordinator>, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(coordinator).await;
        if done(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_follow_the_scheduler() {
    let coordinator = Coordinator::open(None, config(Duration::from_secs(2))).unwrap();
    let addr = start(Arc::clone(&coordinator), ServerSecurity::default()).await;
    let url = format!("http://{addr}");
    let mut farm = FarmClient::connect(url.clone()).await.unwrap();
    let mut workers = WorkersClient::connect(url).await.unwrap();
    let job = farm
        .submit_job(pb::SubmitJobRequest {
            grid_toml: GRID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let state = |s: &str| format!("pastiche_tasks{{job=\"{job}\",state=\"{s}\"}}");
    let text = scrape(&coordinator).await;
    assert_eq!(sample(&text, "pastiche_queue_depth"), 2.0);
    assert_eq!(sample(&text, &state("queued")), 2.0);
    assert_eq!(sample(&text, "pastiche_workers"), 0.0);

    let worker = workers
        .register(pb::RegisterRequest {
            name: "w".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    // The first task fails once (retryable), goes to the back of the queue, and is
    // done at its second attempt; the second task is leased and left to expire.
    let first = lease(&mut workers, &worker).await;
    workers
        .fail(pb::FailRequest {
            task: Some(pb::TaskRef {
                worker_id: worker.clone(),
                job_id: job.clone(),
                task_id: first.task_id.clone(),
                attempt: first.attempt,
            }),
            failure: pb::Failure::Worker.into(),
            error: "out of memory".into(),
        })
        .await
        .unwrap();
    let second = lease(&mut workers, &worker).await;
    assert_ne!(second.task_id, first.task_id);
    let retried = lease(&mut workers, &worker).await;
    assert_eq!((&retried.task_id, retried.attempt), (&first.task_id, 2));
    workers
        .complete(pb::CompleteRequest {
            task: Some(pb::TaskRef {
                worker_id: worker.clone(),
                job_id: job.clone(),
                task_id: retried.task_id.clone(),
                attempt: retried.attempt,
            }),
        })
        .await
        .unwrap();
    let text = scrape(&coordinator).await;
    assert_eq!(sample(&text, "pastiche_task_retries_total"), 1.0);
    assert_eq!(
        sample(&text, "pastiche_scheduling_latency_seconds_count"),
        3.0
    );
    assert_eq!(sample(&text, "pastiche_queue_depth"), 0.0);
    assert_eq!(sample(&text, &state("done")), 1.0);

    // Nobody heartbeats the second task: its lease runs out and it is queued again.
    let text = scrape_until(&coordinator, |t| {
        sample(t, "pastiche_lease_expiries_total") > 0.0
    })
    .await;
    assert_eq!(sample(&text, "pastiche_lease_expiries_total"), 1.0);
    assert_eq!(sample(&text, "pastiche_task_retries_total"), 2.0);
    assert_eq!(sample(&text, "pastiche_queue_depth"), 1.0);
    assert_eq!(sample(&text, &state("queued")), 1.0);
    assert_eq!(sample(&text, &state("running")), 0.0);
    // Silent for longer than the lease timeout, and not polling: not counted.
    scrape_until(&coordinator, |t| sample(t, "pastiche_workers") == 0.0).await;
}

#[tokio::test]
async fn a_worker_in_a_long_poll_counts_as_live() {
    let coordinator = Coordinator::open(None, config(Duration::from_millis(100))).unwrap();
    let addr = start(Arc::clone(&coordinator), ServerSecurity::default()).await;
    let mut workers = WorkersClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    // No work: the call waits up to its 30 s, far past the lease timeout.
    let poll = tokio::spawn(async move {
        workers
            .lease(pb::LeaseRequest {
                worker_id: "w#1".into(),
                wait_ms: 30_000,
            })
            .await
    });
    scrape_until(&coordinator, |t| sample(t, "pastiche_workers") == 1.0).await;
    let since = std::time::Instant::now();
    // Still counted well after the lease timeout, as long as the call is open.
    while since.elapsed() < Duration::from_millis(400) {
        assert_eq!(sample(&scrape(&coordinator).await, "pastiche_workers"), 1.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    poll.abort();
    scrape_until(&coordinator, |t| sample(t, "pastiche_workers") == 0.0).await;
}
