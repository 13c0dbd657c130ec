//! `pastiche-worker`: renders tasks leased from a coordinator on one device, or
//! with `--gpus all`, starts and watches one such process per visible GPU.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use pastiche_proto::runtime::shutdown_signal;
use pastiche_proto::security::ClientSecurityArgs;
use pastiche_worker::supervisor::supervise;
use pastiche_worker::{TokenRefused, WorkerConfig};

/// The exit status of a worker whose token the coordinator refused; `--gpus all`
/// does not restart such a worker.
const EXIT_TOKEN_REFUSED: u8 = 3;

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("'{text}' is not a duration (e.g. 60s, 500ms)"))
}

#[derive(Parser)]
#[command(name = "pastiche-worker", version, about)]
struct Args {
    /// The coordinator, as http://host:port, or https://host:port for TLS.
    #[arg(
        long,
        env = "PASTICHE_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    /// Where results go: a directory or s3://bucket/prefix (the coordinator's users
    /// upload inputs to the same place).
    #[arg(long, env = "PASTICHE_STORE", default_value = "pastiche-results")]
    store: String,
    /// cpu, cuda:N or auto.
    #[arg(
        long,
        env = "PASTICHE_DEVICE",
        default_value = "auto",
        conflicts_with = "gpus"
    )]
    device: String,
    /// `all`: one worker process per visible GPU, each pinned with
    /// CUDA_VISIBLE_DEVICES, restarted if it dies.
    #[arg(long, env = "PASTICHE_GPUS")]
    gpus: Option<String>,
    /// This worker's name [default: host name and device].
    #[arg(long, env = "PASTICHE_WORKER_NAME")]
    name: Option<String>,
    /// How long to wait at start-up for a coordinator that cannot be reached.
    #[arg(long, env = "PASTICHE_CONNECT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Benchmarks only: do no torch work; each task takes this many milliseconds and
    /// stores placeholder outputs.
    #[arg(long, hide = true)]
    stand_in_ms: Option<u64>,
    /// Downloaded inputs (images, weights) kept for later tasks, in MiB; the
    /// least recently used go first.
    #[arg(long, env = "PASTICHE_INPUT_CACHE_MIB", default_value_t = pastiche_worker::DEFAULT_INPUT_CACHE_MIB)]
    input_cache_mib: u64,
    /// Store a checkpoint of the render every this many iterations (0: only
    /// when giving a task back on SIGTERM): a later attempt of the task, on any
    /// worker, resumes from the latest. Not a render parameter: it changes no
    /// result, so no task id.
    #[arg(long, env = "PASTICHE_CHECKPOINT_EVERY", default_value_t = 0)]
    checkpoint_every: u32,
    /// text or json.
    #[arg(long, env = "PASTICHE_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(flatten)]
    security: ClientSecurityArgs,
    /// Serve Prometheus metrics (GET /metrics) and GET /healthz over plain HTTP on
    /// this address [default: off]. With --gpus all, worker i gets port + i.
    #[arg(long, env = "PASTICHE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    pastiche_engine::tune_allocator();
    let args = Args::parse();
    pastiche_proto::runtime::init_logging(args.log_format == "json");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<TokenRefused>().is_some() {
                ExitCode::from(EXIT_TOKEN_REFUSED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(args: Args) -> Result<()> {
    // Checked before any child starts: a bad token file fails once, here.
    let security = args.security.load()?;
    if let Some(gpus) = &args.gpus {
        anyhow::ensure!(gpus == "all", "--gpus takes `all`, not '{gpus}'");
        return launch_per_gpu(&args).await;
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}/{}", host_name(), args.device));
    if let Some(addr) = args.metrics_listen {
        pastiche_proto::metrics_http::start(addr, pastiche_worker::metrics::registry())
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
    }
    pastiche_worker::run(
        WorkerConfig {
            coordinator: args.coordinator,
            store: args.store,
            device: args.device,
            name,
            stand_in: args.stand_in_ms.map(Duration::from_millis),
            connect_timeout: args.connect_timeout,
            security,
            input_cache_bytes: args.input_cache_mib << 20,
            checkpoint_every: args.checkpoint_every,
        },
        shutdown_signal(),
    )
    .await
}

/// Where the worker of `gpu` serves its metrics: port + gpu on the same host (port
/// 0 stays 0, and each child picks its own).
fn child_metrics_addr(addr: SocketAddr, gpu: i64) -> Result<SocketAddr> {
    let port = match addr.port() {
        0 => 0,
        base => u16::try_from(gpu)
            .ok()
            .and_then(|gpu| base.checked_add(gpu))
            .with_context(|| format!("--metrics-listen {addr}: no port left for GPU {gpu}"))?,
    };
    Ok(SocketAddr::new(addr.ip(), port))
}

/// One child per GPU, each seeing only its own; a child that dies is restarted.
async fn launch_per_gpu(args: &Args) -> Result<()> {
    let count = pastiche_engine::tch::Cuda::device_count();
    anyhow::ensure!(
        count > 0,
        "--gpus all: this process sees no GPU (is this a `cuda` build?)"
    );
    let exe = std::env::current_exe().context("locating this executable")?;
    let base = args.name.clone().unwrap_or_else(host_name);
    let mut children = Vec::new();
    for gpu in 0..count {
        let mut command = tokio::process::Command::new(&exe);
        command
            .args([
                "--coordinator",
                &args.coordinator,
                "--store",
                &args.store,
                "--device",
                "cuda:0",
            ])
            .args([
                "--name",
                &format!("{base}/gpu{gpu}"),
                "--log-format",
                &args.log_format,
                "--input-cache-mib",
                &args.input_cache_mib.to_string(),
                "--checkpoint-every",
                &args.checkpoint_every.to_string(),
            ])
            .env("CUDA_VISIBLE_DEVICES", gpu.to_string());
        // The token itself stays in the environment the children inherit.
        if let Some(ca) = &args.security.tls_ca {
            command.arg("--tls-ca").arg(ca);
        }
        if let Some(file) = &args.security.token_file {
            command.arg("--token-file").arg(file);
        }
        if let Some(addr) = args.metrics_listen {
            command
                .arg("--metrics-listen")
                .arg(child_metrics_addr(addr, gpu)?.to_string());
        }
        children.push((format!("gpu{gpu}"), command));
    }
    tracing::info!(gpus = count, "starting one worker per GPU");
    supervise(children, EXIT_TOKEN_REFUSED.into(), shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gpu_worker_gets_the_next_metrics_port() {
        let addr: SocketAddr = "0.0.0.0:9091".parse().unwrap();
        let ports: Vec<u16> = (0..3)
            .map(|gpu| child_metrics_addr(addr, gpu).unwrap().port())
            .collect();
        assert_eq!(ports, [9091, 9092, 9093]);
        assert_eq!(child_metrics_addr(addr, 2).unwrap().ip(), addr.ip());
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(child_metrics_addr(any, 5).unwrap(), any);
        let last: SocketAddr = "0.0.0.0:65535".parse().unwrap();
        assert!(child_metrics_addr(last, 1).is_err());
    }
}
