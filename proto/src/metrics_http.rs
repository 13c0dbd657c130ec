//! The plain-HTTP side of `--metrics-listen`, shared by the coordinator and the
//! worker: `GET /metrics` (Prometheus/OpenMetrics text) and `GET /healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr`, says where on stdout (`metrics on ADDR`, for the scripts and
/// tests that asked for port 0), and serves `registry` there in the background
/// until the process ends.
pub async fn start(addr: SocketAddr, registry: Registry) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry);
    let app = Router::new()
        .route("/metrics", get(move || scrape(Arc::clone(&registry))))
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "the metrics server stopped");
        }
    });
    tracing::info!(metrics = %bound, "serving metrics");
    println!("metrics on {bound}");
    Ok(bound)
}

async fn scrape(registry: Arc<Registry>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (StatusCode::OK, [(CONTENT_TYPE, OPENMETRICS)], text),
        Err(err) => {
            tracing::error!(error = %err, "encoding the metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(CONTENT_TYPE, "text/plain")],
                String::new(),
            )
        }
    }
}
