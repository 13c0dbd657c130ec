//! `pastiche-coordinator`: takes grids from `pastiche submit`, hands their tasks to
//! `pastiche-worker`s, and keeps its state in an embedded database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use pastiche_coordinator::core::{Coordinator, CoordinatorConfig};
use pastiche_coordinator::inputs::AllowInputArgs;
use pastiche_coordinator::scheduler::SchedulerConfig;
use pastiche_coordinator::server::ServerSecurity;
use pastiche_coordinator::tls::TlsIdentity;
use pastiche_coordinator::{metrics, parse_duration, server};
use pastiche_proto::security::{Token, TOKEN_ENV};
use pastiche_spec::store::Store;

#[derive(Parser)]
#[command(name = "pastiche-coordinator", version, about)]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "PASTICHE_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// The state database (SQLite; created if missing). Jobs survive a restart.
    #[arg(long, env = "PASTICHE_DB", default_value = "pastiche-state.db")]
    db: PathBuf,
    /// A lease not renewed within this long is given to another worker (e.g. 30s, 500ms).
    #[arg(long, env = "PASTICHE_LEASE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    lease_timeout: Duration,
    /// Attempts per task when a job does not say.
    #[arg(long, env = "PASTICHE_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// An attempt at a task that runs longer than this fails the task, without
    /// a retry (e.g. 2h), when its grid sets no `max_task_time`. No limit by default.
    #[arg(long, env = "PASTICHE_MAX_TASK_TIME", value_parser = parse_duration)]
    max_task_time: Option<Duration>,
    /// How long the events of a finished job are kept in the database (its
    /// tasks and states stay until `pastiche delete`).
    #[arg(long, env = "PASTICHE_EVENT_RETENTION", default_value = "30d", value_parser = parse_duration)]
    event_retention: Duration,
    /// A worker that failed this many tasks of a job (with errors of its own or
    /// its device's, not the task's or the store's) gets no more of it for
    /// --blocklist-for.
    #[arg(long, env = "PASTICHE_BLOCKLIST_AFTER", default_value_t = 3)]
    blocklist_after: u32,
    #[arg(long, env = "PASTICHE_BLOCKLIST_FOR", default_value = "10m", value_parser = parse_duration)]
    blocklist_for: Duration,
    /// The farm's store (a directory or s3://bucket/prefix, as the workers'
    /// --store): each finished job's report is written to jobs/<job>/report/.
    /// Without it, no reports are written (`pastiche report` still makes them).
    #[arg(long, env = "PASTICHE_STORE")]
    store: Option<String>,
    // Grids name inputs by their keys in the store (pastiche submit uploads local
    // files), or by s3:// URLs under the store (on S3) or under --allow-input.
    #[command(flatten)]
    allow_input: AllowInputArgs,
    /// text or json.
    #[arg(long, env = "PASTICHE_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Serve Prometheus metrics (GET /metrics) and GET /healthz over plain HTTP on
    /// this address [default: off].
    #[arg(long, env = "PASTICHE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the dashboard (the jobs, live contact sheets, cancelling) on this
    /// address [default: off]: HTTPS with --tls-cert, else plain HTTP. Anyone who
    /// reaches it can read it; cancelling takes the token when there is one.
    #[arg(long, env = "PASTICHE_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Serve gRPC (and the dashboard) over TLS with this certificate chain (PEM);
    /// needs --tls-key.
    #[arg(long, env = "PASTICHE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "PASTICHE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse calls without this bearer token (read from the file, trimmed); or put
    /// the token itself in PASTICHE_TOKEN. Health checks need none.
    #[arg(long, env = "PASTICHE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

/// TLS from PEM files; a bad pair fails here, naming them.
fn tls_from_files(cert: &Path, key: &Path) -> Result<TlsIdentity> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    TlsIdentity::from_pem(&read(cert)?, &read(key)?).with_context(|| {
        format!(
            "the TLS certificate {} and key {} are not a usable pair",
            cert.display(),
            key.display()
        )
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    pastiche_proto::runtime::init_logging(args.log_format == "json");
    let config = CoordinatorConfig {
        scheduler: SchedulerConfig {
            lease_timeout: args.lease_timeout,
            blocklist_after: args.blocklist_after,
            blocklist_for: args.blocklist_for,
        },
        default_max_attempts: args.max_attempts,
        default_max_task_time: args.max_task_time,
        event_retention: args.event_retention,
        store: args
            .store
            .as_deref()
            .map(Store::open)
            .transpose()
            .context("opening the store")?,
        allow_inputs: args.allow_input.allow_input,
    };
    let security = ServerSecurity {
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_from_files(cert, key)?),
            _ => None,
        },
        token: Token::load(
            args.token_file.as_deref(),
            std::env::var(TOKEN_ENV).ok().as_deref(),
        )?,
    };
    let coordinator = Coordinator::open(Some(&args.db), config)
        .with_context(|| format!("opening the state database {}", args.db.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        listen = %addr,
        db = %args.db.display(),
        tls = security.tls.is_some(),
        token = security.token.is_some(),
        "coordinator serving"
    );
    // For scripts and tests that asked for port 0: the address actually bound.
    println!("listening on {addr}");
    if let Some(metrics_addr) = args.metrics_listen {
        pastiche_proto::metrics_http::start(metrics_addr, metrics::registry(&coordinator))
            .await
            .with_context(|| format!("serving metrics on {metrics_addr}"))?;
    }
    if let Some(http_addr) = args.http_listen {
        pastiche_coordinator::dashboard::start(
            http_addr,
            std::sync::Arc::clone(&coordinator),
            security.clone(),
        )
        .await
        .with_context(|| format!("serving the dashboard on {http_addr}"))?;
    }
    server::serve_secured(
        coordinator,
        listener,
        security,
        pastiche_proto::runtime::shutdown_signal(),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!("coordinator stopped");
    Ok(())
}
