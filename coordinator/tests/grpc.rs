//! The coordinator over real sockets: its services on 127.0.0.1:0, driven by tonic
//! clients as the CLI and the workers drive them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, GRID};
use pastiche_coordinator::core::{Coordinator, CoordinatorConfig};
use pastiche_coordinator::server::serve;
use pastiche_coordinator::state::State;
use pastiche_proto::pb;
use pastiche_proto::pb::farm_client::FarmClient;
use pastiche_proto::pb::workers_client::WorkersClient;
use pastiche_spec::store::Store;
use tonic::transport::Channel;

struct Running {
    farm: FarmClient<Channel>,
    workers: WorkersClient<Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(coordinator: Arc<Coordinator>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve(coordinator, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let url = format!("http://{addr}");
    Running {
        farm: FarmClient::connect(url.clone()).await.unwrap(),
        workers: WorkersClient::connect(url).await.unwrap(),
        stop,
        server,
    }
}

impl Running {
    async fn shutdown(self) {
        drop((self.farm, self.workers));
        let _ = self.stop.send(());
        self.server.await.unwrap();
    }
}

async fn register(workers: &mut WorkersClient<Channel>, name: &str) -> String {
    workers
        .register(pb::RegisterRequest {
            name: name.into(),
            device: "cpu".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id
}

async fn lease(
    workers: &mut WorkersClient<Channel>,
    worker: &str,
    wait_ms: u32,
) -> Option<pb::TaskAssignment> {
    workers
        .lease(pb::LeaseRequest {
            worker_id: worker.into(),
            wait_ms,
        })
        .await
        .unwrap()
        .into_inner()
        .task
}

/// `worker`'s attempt at `task`, as its reports name it.
fn task_ref(worker: &str, task: &pb::TaskAssignment) -> pb::TaskRef {
    pb::TaskRef {
        worker_id: worker.into(),
        job_id: task.job_id.clone(),
        task_id: task.task_id.clone(),
        attempt: task.attempt,
    }
}

/// A heartbeat without progress; returns the directive.
async fn heartbeat(
    workers: &mut WorkersClient<Channel>,
    worker: &str,
    task: &pb::TaskAssignment,
) -> i32 {
    workers
        .heartbeat(pb::HeartbeatRequest {
            task: Some(task_ref(worker, task)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .directive
}

/// Reports `task` complete; returns whether the report was accepted.
async fn complete(
    workers: &mut WorkersClient<Channel>,
    worker: &str,
    task: &pb::TaskAssignment,
) -> bool {
    workers
        .complete(pb::CompleteRequest {
            task: Some(task_ref(worker, task)),
        })
        .await
        .unwrap()
        .into_inner()
        .accepted
}

async fn submit(farm: &mut FarmClient<Channel>, grid: &str) -> pb::SubmitJobResponse {
    farm.submit_job(pb::SubmitJobRequest {
        grid_toml: grid.into(),
        grid_name: "tiny.toml".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn job_status(farm: &mut FarmClient<Channel>, job: &str) -> pb::JobStatus {
    farm.get_job(pb::GetJobRequest {
        job_id: job.to_owned(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Tasks of `job` from `start`, `limit` of them (0: all).
fn page(job: &str, start: u64, limit: u32) -> pb::ListTasksRequest {
    pb::ListTasksRequest {
        job_id: job.into(),
        start,
        limit,
    }
}

async fn list_tasks(farm: &mut FarmClient<Channel>, job: &str) -> Vec<pb::TaskInfo> {
    list_page(farm, page(job, 0, 0)).await
}

async fn list_page(
    farm: &mut FarmClient<Channel>,
    request: pb::ListTasksRequest,
) -> Vec<pb::TaskInfo> {
    let mut stream = farm.list_tasks(request).await.unwrap().into_inner();
    let mut tasks = Vec::new();
    while let Some(task) = stream.message().await.unwrap() {
        tasks.push(task);
    }
    tasks
}

#[tokio::test]
async fn previews_come_from_the_grid_unless_the_submission_says() {
    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let mut c = start(coordinator).await;
    let grid = format!("preview_every = 5\n{GRID}");
    let worker = register(&mut c.workers, "w").await;
    for (asked, expected) in [(None, 5), (Some(2), 2), (Some(0), 0)] {
        c.farm
            .submit_job(pb::SubmitJobRequest {
                grid_toml: grid.clone(),
                preview_every: asked,
                ..Default::default()
            })
            .await
            .unwrap();
        let task = lease(&mut c.workers, &worker, 1000).await.unwrap();
        assert_eq!(task.preview_every, expected);
        while lease(&mut c.workers, &worker, 10).await.is_some() {}
    }
    let unknown = c.farm.list_tasks(page("nope", 0, 0)).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    c.shutdown().await;
}

#[tokio::test]
async fn a_job_runs_to_completion_and_its_watchers_see_it() {
    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let mut farm_side = start(coordinator).await;
    let job = submit(&mut farm_side.farm, GRID).await;
    assert_eq!(job.tasks, 2);
    assert!(job.job_id.starts_with("tiny-"));

    let mut watch = farm_side
        .farm
        .watch_job(pb::WatchJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status.unwrap().counts.unwrap().queued, 2);

    let worker = register(&mut farm_side.workers, "w").await;
    for _ in 0..2 {
        let task = lease(&mut farm_side.workers, &worker, 1000).await.unwrap();
        let params: pastiche_spec::RenderParams = task.params.clone().unwrap().try_into().unwrap();
        assert_eq!(params.iterations, 3);
        assert!(task.content_key.starts_with("inputs/"));
        let reply = farm_side
            .workers
            .heartbeat(pb::HeartbeatRequest {
                task: Some(task_ref(&worker, &task)),
                iteration: 1,
                iterations: 3,
                latest: None,
                preview_iteration: 1,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.directive, pb::Directive::Continue as i32);
        assert!(complete(&mut farm_side.workers, &worker, &task).await);
    }
    assert!(lease(&mut farm_side.workers, &worker, 10).await.is_none());

    // The stream shows progress and both endings, and closes when the job is done.
    let mut ended = 0;
    let mut progress = 0;
    let mut last = None;
    while let Some(event) = watch.message().await.unwrap() {
        match event.event {
            Some(pb::job_event::Event::TaskEnded(e)) => {
                assert_eq!(e.outcome(), pb::TaskOutcome::Done);
                ended += 1;
            }
            Some(pb::job_event::Event::Progress(p)) => {
                assert_eq!((p.iteration, p.iterations), (1, 3));
                assert_eq!(p.preview_iteration, 1);
                assert_eq!(
                    p.preview_key,
                    format!("jobs/{}/tasks/{}/preview.png", job.job_id, p.task_id)
                );
                progress += 1;
            }
            Some(pb::job_event::Event::Report(r)) => panic!("a report without a store: {r:?}"),
            None => {}
        }
        last = event.status;
    }
    assert_eq!((ended, progress), (2, 2));
    let last = last.unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32);
    assert_eq!(last.counts.unwrap().done, 2);
    let tasks = list_tasks(&mut farm_side.farm, &job.job_id).await;
    assert_eq!(tasks.len(), 2);
    for task in &tasks {
        assert_eq!((task.state(), task.attempt), (pb::TaskState::Done, 1));
        assert_eq!(task.params.as_ref().unwrap().iterations, 3);
    }
    // Cancelling a job that has ended changes nothing.
    farm_side
        .farm
        .cancel_job(pb::CancelJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap();
    let status = job_status(&mut farm_side.farm, &job.job_id).await;
    assert_eq!(status.state, pb::JobState::Done as i32);
    farm_side.shutdown().await;
}

#[tokio::test]
async fn an_expired_lease_goes_to_another_worker_and_the_first_is_told_it_is_stale() {
    let coordinator = Coordinator::open(None, config(Duration::from_millis(300))).unwrap();
    let mut c = start(coordinator).await;
    let one_task = GRID.replace("size = [32, 48]", "size = 32");
    submit(&mut c.farm, &one_task).await;
    let dead = register(&mut c.workers, "dead").await;
    let alive = register(&mut c.workers, "alive").await;
    let first = lease(&mut c.workers, &dead, 1000).await.unwrap();
    // `dead` never reports again; `alive` waits in a long poll until the lease
    // expires and the task is requeued.
    let second = lease(&mut c.workers, &alive, 20_000)
        .await
        .expect("the task is re-leased");
    assert_eq!(second.task_id, first.task_id);
    assert_eq!(second.attempt, first.attempt + 1);
    assert_eq!(
        heartbeat(&mut c.workers, &dead, &first).await,
        pb::Directive::Stale as i32
    );
    assert!(!complete(&mut c.workers, &dead, &first).await);
    c.shutdown().await;
}

#[tokio::test]
async fn cancelling_tells_the_running_worker_and_drops_the_rest() {
    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let mut c = start(coordinator).await;
    let job = submit(&mut c.farm, GRID).await;
    let worker = register(&mut c.workers, "w").await;
    let task = lease(&mut c.workers, &worker, 1000).await.unwrap();
    c.farm
        .cancel_job(pb::CancelJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        heartbeat(&mut c.workers, &worker, &task).await,
        pb::Directive::Cancel as i32
    );
    assert!(
        lease(&mut c.workers, &worker, 10).await.is_none(),
        "nothing left to take"
    );
    let acknowledged = c
        .workers
        .acknowledge_cancel(pb::AcknowledgeCancelRequest {
            task: Some(task_ref(&worker, &task)),
        })
        .await
        .unwrap();
    assert!(acknowledged.into_inner().accepted);
    let status = job_status(&mut c.farm, &job.job_id).await;
    assert_eq!(status.state, pb::JobState::Cancelled as i32);
    assert_eq!(status.counts.unwrap().cancelled, 2);
    let tasks = list_tasks(&mut c.farm, &status.job_id).await;
    assert!(tasks.iter().all(|t| t.state() == pb::TaskState::Cancelled));
    c.shutdown().await;
}

#[tokio::test]
async fn a_restarted_coordinator_carries_on_from_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let (job, worker, idle, running) = {
        let coordinator = Coordinator::open(Some(&db), config(Duration::from_secs(30))).unwrap();
        let mut c = start(coordinator).await;
        let job = submit(&mut c.farm, GRID).await;
        let worker = register(&mut c.workers, "w").await;
        let idle = register(&mut c.workers, "w").await;
        let done = lease(&mut c.workers, &worker, 1000).await.unwrap();
        assert!(complete(&mut c.workers, &worker, &done).await);
        let running = lease(&mut c.workers, &worker, 1000).await.unwrap();
        c.shutdown().await;
        (job, worker, idle, running)
    };
    let coordinator = Coordinator::open(Some(&db), config(Duration::from_secs(30))).unwrap();
    let mut c = start(coordinator).await;
    let status = job_status(&mut c.farm, &job.job_id).await;
    let counts = status.counts.unwrap();
    assert_eq!(
        (counts.done, counts.running),
        (1, 1),
        "finished stays finished, running is re-adopted"
    );
    // A worker registering now is not given the id of one still rendering,
    // nor of one that is waiting for work.
    for _ in 0..3 {
        let newcomer = register(&mut c.workers, "w").await;
        assert!(newcomer != worker && newcomer != idle, "{newcomer} again");
    }
    // The worker that was rendering carries on and finishes.
    assert!(complete(&mut c.workers, &worker, &running).await);
    let status = job_status(&mut c.farm, &job.job_id).await;
    assert_eq!(status.state, pb::JobState::Done as i32);
    c.shutdown().await;
}

#[tokio::test]
async fn a_job_that_finished_unreported_gets_its_report_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store_dir = dir.path().join("store");
    let job = {
        // As if the coordinator had stopped between the job's end and its report.
        let coordinator = Coordinator::open(Some(&db), config(Duration::from_secs(30))).unwrap();
        let mut c = start(coordinator).await;
        let job = submit(&mut c.farm, GRID).await.job_id;
        let worker = register(&mut c.workers, "w").await;
        for _ in 0..2 {
            let task = lease(&mut c.workers, &worker, 1000).await.unwrap();
            assert!(complete(&mut c.workers, &worker, &task).await);
        }
        c.shutdown().await;
        job
    };
    let store = Store::open(store_dir.to_str().unwrap()).unwrap();
    let index = format!("jobs/{job}/report/index.html");
    assert!(!store.exists(&index).await.unwrap());

    let with_store = CoordinatorConfig {
        store: Some(store.clone()),
        ..config(Duration::from_secs(30))
    };
    let unreported = || State::open(&db).unwrap().unreported_jobs().unwrap();
    assert_eq!(unreported(), std::slice::from_ref(&job));
    let coordinator = Coordinator::open(Some(&db), with_store).unwrap();
    let mut c = start(coordinator).await;
    // A watcher learns where the report is, whether it is still being written
    // when the watch begins or already there.
    // Where the report is: its key, in the coordinator's store.
    let report_of = |events: Vec<pb::JobEvent>| {
        events.into_iter().find_map(|e| match e.event {
            Some(pb::job_event::Event::Report(r)) => {
                assert_eq!(r.store, store_dir.to_str().unwrap());
                Some(r.index_key)
            }
            _ => None,
        })
    };
    assert_eq!(
        report_of(watch(&mut c.farm, &job).await),
        Some(index.clone())
    );
    // Noted in the database once written, so the next start leaves it be.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !unreported().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no report after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let html = String::from_utf8(store.get(&index).await.unwrap().to_vec()).unwrap();
    assert!(html.contains("tiny"), "{html}");
    assert_eq!(report_of(watch(&mut c.farm, &job).await), Some(index));
    c.shutdown().await;
}

/// Every event of a watch, to its end.
async fn watch(farm: &mut FarmClient<Channel>, job: &str) -> Vec<pb::JobEvent> {
    let mut stream = farm
        .watch_job(pb::WatchJobRequest {
            job_id: job.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let mut c = start(coordinator).await;
    let err = c
        .farm
        .submit_job(pb::SubmitJobRequest {
            grid_toml: "content = \"c.png\"\nstyle = \"s.png\"\n[grid]\nsizee = 32\n".into(),
            grid_name: "typo.toml".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("typo.toml:4") && err.message().contains("sizee"),
        "{}",
        err.message()
    );
    let err = c
        .farm
        .get_job(pb::GetJobRequest {
            job_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = c
        .farm
        .cancel_job(pb::CancelJobRequest {
            job_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = c
        .workers
        .give_back(pb::GiveBackRequest { task: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("task"), "{}", err.message());
    c.shutdown().await;
}

/// A grid is sent as it is by any client, not only through the CLI, so the
/// coordinator itself refuses inputs a worker should not read.
#[tokio::test]
async fn grids_naming_inputs_the_farm_does_not_read_are_refused() {
    let allowing_models = CoordinatorConfig {
        allow_inputs: vec!["s3://models".parse().unwrap()],
        ..config(Duration::from_secs(30))
    };
    let mut c = start(Coordinator::open(None, allowing_models).unwrap()).await;
    let with_weights = |weights: &str| format!("{GRID}[weights]\nvgg19 = \"{weights}\"\n");
    for (grid, entry) in [
        (GRID.replacen("inputs/aaaa", "/etc/aaaa", 1), "/etc/aaaa"),
        (GRID.replacen("inputs/bbbb", "../bbbb", 1), "../bbbb"),
        (
            with_weights("s3://models-evil/vgg19.safetensors"),
            "s3://models-evil/vgg19.safetensors",
        ),
    ] {
        let refused = c
            .farm
            .submit_job(pb::SubmitJobRequest {
                grid_toml: grid,
                grid_name: "study.toml".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let message = refused.message();
        assert!(
            message.starts_with("study.toml: ")
                && message.contains(entry)
                && message.contains("--allow-input"),
            "{message}"
        );
    }
    let accepted = submit(&mut c.farm, &with_weights("s3://models/vgg19.safetensors")).await;
    assert_eq!(accepted.tasks, 2);
    c.shutdown().await;
}

#[tokio::test]
async fn health_checking_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(coordinator, listener, async {
        let _ = stopped.await;
    }));

    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["pastiche.v2.Farm", "pastiche.v2.Workers"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status, 1, "{service} is SERVING");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"pastiche.v2.Farm".to_string()), "{names:?}");
    assert!(
        names.contains(&"pastiche.v2.Workers".to_string()),
        "{names:?}"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutting_down_ends_watches_and_long_polls_at_once() {
    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let mut c = start(coordinator).await;
    let job = submit(&mut c.farm, GRID).await.job_id;
    let mut watch = c
        .farm
        .watch_job(pb::WatchJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    let worker = register(&mut c.workers, "w").await;
    for _ in 0..2 {
        lease(&mut c.workers, &worker, 1000).await.unwrap();
    }
    // Nothing left to lease: this call waits, up to 30 s.
    let mut poller = c.workers.clone();
    let long_poll = tokio::spawn(async move {
        poller
            .lease(pb::LeaseRequest {
                worker_id: worker,
                wait_ms: 30_000,
            })
            .await
    });

    let _ = c.stop.send(());
    tokio::time::timeout(Duration::from_secs(10), c.server)
        .await
        .expect("the open watch and long poll held the shutdown up")
        .unwrap();
    // The leases' events first, then the reason the watch ends.
    let ended = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended}");
    assert!(ended.message().contains("shutting down"), "{ended}");
    // Answered with no task, or cut off if it had not reached the server yet.
    if let Ok(reply) = long_poll.await.unwrap() {
        assert!(reply.into_inner().task.is_none());
    }
}

#[tokio::test]
async fn a_large_job_lists_in_pages_and_an_ended_one_can_be_deleted() {
    let coordinator = Coordinator::open(None, config(Duration::from_secs(30))).unwrap();
    let mut c = start(coordinator).await;
    // More tasks than the coordinator reads from its database at a time.
    let seeds: Vec<String> = (0..2500).map(|seed| seed.to_string()).collect();
    let grid = format!("{GRID}init = \"noise\"\nseed = [{}]\n", seeds.join(", "));
    let job = submit(&mut c.farm, &grid).await;
    assert_eq!(job.tasks, 2 * 2500);
    let all = list_tasks(&mut c.farm, &job.job_id).await;
    assert_eq!(all.len(), 5000);
    let ids = |tasks: &[pb::TaskInfo]| tasks.iter().map(|t| t.task_id.clone()).collect::<Vec<_>>();
    // A page across the database's page boundary is that part of the whole list.
    let some = list_page(&mut c.farm, page(&job.job_id, 998, 5)).await;
    assert_eq!(ids(&some), ids(&all[998..1003]));
    let tail = list_page(&mut c.farm, page(&job.job_id, 4990, 100)).await;
    assert_eq!(ids(&tail), ids(&all[4990..]));

    // A running job is not deleted; a cancelled one is, and is gone.
    let delete = |job: &str| pb::DeleteJobRequest { job_id: job.into() };
    let refused = c.farm.delete_job(delete(&job.job_id)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("cancel it first"),
        "{}",
        refused.message()
    );
    c.farm
        .cancel_job(pb::CancelJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap();
    c.farm.delete_job(delete(&job.job_id)).await.unwrap();
    let gone = c
        .farm
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let jobs = c
        .farm
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(jobs.jobs.is_empty());
    let again = c.farm.delete_job(delete(&job.job_id)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound);
    c.shutdown().await;
}
