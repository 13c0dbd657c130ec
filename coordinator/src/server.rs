//! Serving the coordinator: its two services, gRPC health checking and reflection
//! (so that grpcurl works), on a listener the caller bound; optionally over TLS and
//! behind a bearer token.

use std::sync::Arc;

use pastiche_proto::liveness;
use pastiche_proto::pb::farm_server::FarmServer;
use pastiche_proto::pb::workers_server::WorkersServer;
use pastiche_proto::security::Token;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::auth::RequireToken;
use crate::core::Coordinator;
use crate::grpc::{FarmService, WorkersService};
use crate::tls::TlsIdentity;

/// Who may call: the default is plaintext and open, as `pastiche local` runs.
#[derive(Clone, Debug, Default)]
pub struct ServerSecurity {
    /// Serve over TLS with this certificate and key (gRPC and the dashboard).
    pub tls: Option<TlsIdentity>,
    /// Refuse calls (but health checks) that do not carry this bearer token.
    pub token: Option<Token>,
}

/// Serves plaintext, open to all, until `shutdown` resolves. Tests bind
/// `127.0.0.1:0` and pass the listener.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    serve_secured(coordinator, listener, ServerSecurity::default(), shutdown).await
}

/// [`serve`], with TLS and a token as `security` says.
pub async fn serve_secured(
    coordinator: Arc<Coordinator>,
    listener: TcpListener,
    security: ServerSecurity,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FarmServer<FarmService>>().await;
    health.set_serving::<WorkersServer<WorkersService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pastiche_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reaper = coordinator.spawn_lease_reaper();
    let reporter = coordinator.spawn_reporter();
    // Once shutdown begins: no lease expires any more (the workers cannot
    // reach us to renew them; the next coordinator gives them their time), and
    // long polls and watches end, so their connections close and do not hold
    // the shutdown up.
    let shutdown = {
        let coordinator = Arc::clone(&coordinator);
        let reaper = reaper.abort_handle();
        async move {
            shutdown.await;
            reaper.abort();
            coordinator.close();
        }
    };
    // Small request/response pairs on long-lived connections: without TCP_NODELAY,
    // Nagle's algorithm holds each reply back waiting for the peer's ACK.
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    // Pings find workers and watchers that vanished without closing their
    // connection; see `liveness`.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(liveness::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(liveness::KEEPALIVE_TIMEOUT));
    if let Some(tls) = &security.tls {
        builder = builder.tls_config(tls.grpc())?;
    }
    let result = builder
        .layer(RequireToken::new(security.token))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            FarmServer::new(FarmService(Arc::clone(&coordinator)))
                .max_decoding_message_size(256 << 20),
        )
        .add_service(WorkersServer::new(WorkersService(coordinator)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    reaper.abort();
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    Ok(result?)
}
