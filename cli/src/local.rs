//! `pastiche local`: a coordinator and N workers in this process, on this machine,
//! with results in a local directory and state in an embedded database.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use pastiche_coordinator::core::{Coordinator, CoordinatorConfig};
use pastiche_coordinator::inputs::AllowInputArgs;
use pastiche_spec::store::Store;
use pastiche_worker::WorkerConfig;

use crate::farm::{self, Connection, FarmStoreArg, StoreArg, SubmitArgs};

#[derive(Args)]
pub struct LocalArgs {
    /// The grid file (TOML).
    pub grid: PathBuf,
    /// Workers to run; each takes a GPU in turn, or the CPU if there is none.
    #[arg(long, env = "PASTICHE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    #[command(flatten)]
    pub store: StoreArg,
    /// The state database: run the same command again after a crash and the grid
    /// carries on where it stopped.
    #[arg(long, env = "PASTICHE_DB", default_value = "pastiche-state.db")]
    pub db: PathBuf,
    /// Device for every worker (cpu, cuda:N) [default: GPUs in turn, else cpu].
    #[arg(long, env = "PASTICHE_DEVICE")]
    pub device: Option<String>,
    /// Store each task's current iterate as its preview.png every N iterations
    /// (0: never) [default: the grid's `preview_every`, else off].
    #[arg(long, value_name = "N")]
    pub preview_every: Option<u32>,
    /// Store a checkpoint of each render every N iterations (0: only when a
    /// worker stops mid-task), which the task's next attempt resumes from.
    /// A worker setting, not a grid key: it changes no result and no task id.
    #[arg(
        long,
        env = "PASTICHE_CHECKPOINT_EVERY",
        value_name = "N",
        default_value_t = 0
    )]
    pub checkpoint_every: u32,
    // Local files are uploaded to --store; s3:// URLs elsewhere need this.
    #[command(flatten)]
    pub allow_input: AllowInputArgs,
    /// Where to serve the dashboard (its address is printed) [default: a free
    /// port on 127.0.0.1].
    #[arg(long, env = "PASTICHE_HTTP_LISTEN", default_value = "127.0.0.1:0")]
    pub http_listen: std::net::SocketAddr,
}

pub async fn run(args: LocalArgs) -> Result<()> {
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    // Refuse a bad grid before starting anything.
    farm::read_grid_file(&args.grid)?;

    let config = CoordinatorConfig {
        store: Some(Store::open(&args.store.store)?),
        allow_inputs: args.allow_input.allow_input.clone(),
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::open(Some(&args.db), config)
        .with_context(|| format!("opening {}", args.db.display()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pastiche_coordinator::server::serve(
        Arc::clone(&coordinator),
        listener,
        async {
            let _ = server_stopped.await;
        },
    ));

    let dashboard = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("serving the dashboard on {}", args.http_listen))?;
    eprintln!("dashboard: http://{}", dashboard.local_addr()?);
    pastiche_coordinator::dashboard::serve(dashboard, Arc::clone(&coordinator), Default::default());

    let gpus = pastiche_engine::tch::Cuda::device_count() as usize;
    let (stop_workers, stopped) = tokio::sync::watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..args.workers {
        let device = args.device.clone().unwrap_or_else(|| {
            if gpus > 0 {
                format!("cuda:{}", i % gpus)
            } else {
                "cpu".into()
            }
        });
        let config = WorkerConfig {
            coordinator: url.clone(),
            store: args.store.store.clone(),
            name: format!("local/{i}/{device}"),
            device,
            stand_in: None,
            connect_timeout: std::time::Duration::from_secs(10),
            // In-process, on loopback: plaintext, no token.
            security: Default::default(),
            input_cache_bytes: pastiche_worker::DEFAULT_INPUT_CACHE_MIB << 20,
            checkpoint_every: args.checkpoint_every,
        };
        let mut stopped = stopped.clone();
        workers.spawn(async move {
            pastiche_worker::run(config, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        });
    }

    let connection = Connection {
        coordinator: url,
        security: Default::default(),
    };
    let run_job = async {
        let submission = SubmitArgs {
            grid: args.grid.clone(),
            connection: connection.clone(),
            store: FarmStoreArg {
                store: Some(args.store.store.clone()),
            },
            priority: 0,
            max_attempts: None,
            watch: false,
            preview_every: args.preview_every,
        };
        let upload = farm::upload(&submission).await?;
        // The same grid, interrupted earlier: carry on with that job.
        let job = match coordinator.running_job_with_grid(&upload.grid) {
            Some(job) => {
                eprintln!("carrying on with job {job}, from {}", args.db.display());
                println!("{job}");
                job
            }
            None => farm::send(&submission, upload).await?,
        };
        tokio::select! {
            watched = farm::watch(&connection, &submission.store, &job) => watched.map(|()| job),
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; run the same command to carry on"),
        }
    };
    // Workers that cannot start (a device that is not there) end at once:
    // then nothing would ever render the job, so say why instead of waiting.
    let workers_ended = async {
        let mut first_error = None;
        while let Some(worker) = workers.join_next().await {
            if let Ok(Err(err)) = worker {
                first_error.get_or_insert(err);
            }
        }
        first_error
    };
    let outcome = tokio::select! {
        outcome = run_job => outcome,
        error = workers_ended => Err(match error {
            Some(err) => err.context("no worker is left to render the job"),
            None => anyhow::anyhow!("no worker is left to render the job"),
        }),
    };

    let _ = stop_workers.send(true);
    while let Some(worker) = workers.join_next().await {
        if let Ok(Err(err)) = worker {
            tracing::warn!(error = %format!("{err:#}"), "worker ended with an error");
        }
    }
    let _ = stop_server.send(());
    let _ = server.await;
    let job = outcome?;
    eprintln!(
        "results: {}/jobs/{job}/tasks/",
        args.store.store.trim_end_matches('/')
    );
    Ok(())
}
