//! The coordinator's TLS: one certificate chain and key (`--tls-cert`,
//! `--tls-key`) for gRPC and for the dashboard's HTTPS, read and checked once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the certificate file")]
    NoCertificate,
    #[error("the certificate file is not PEM: {0}")]
    BadCertificate(rustls::pki_types::pem::Error),
    #[error("the key file holds no usable private key (PEM): {0}")]
    BadKey(rustls::pki_types::pem::Error),
    #[error(transparent)]
    Rejected(#[from] rustls::Error),
    #[error(transparent)]
    Grpc(#[from] tonic::transport::Error),
}

/// A certificate chain and its private key, both PEM, accepted by rustls and by
/// tonic alike: a bad pair fails at start-up rather than at the first connection.
#[derive(Clone)]
pub struct TlsIdentity {
    grpc: ServerTlsConfig,
    https: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(<key redacted>)")
    }
}

impl TlsIdentity {
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<TlsIdentity, TlsError> {
        ring_by_default();
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::BadCertificate)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let private = PrivateKeyDer::from_pem_slice(key).map_err(TlsError::BadKey)?;
        let mut https = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, private)?;
        // The dashboard serves HTTP/1.1 only (axum without its http2 feature).
        https.alpn_protocols = vec![b"http/1.1".to_vec()];
        let grpc = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        tonic::transport::Server::builder().tls_config(grpc.clone())?;
        Ok(TlsIdentity {
            grpc,
            https: Arc::new(https),
        })
    }

    /// tonic's form of it, for the gRPC server.
    pub fn grpc(&self) -> ServerTlsConfig {
        self.grpc.clone()
    }

    /// A listener that hands axum connections already through the TLS handshake.
    pub fn https(&self, listener: TcpListener) -> HttpsListener {
        HttpsListener::new(listener, TlsAcceptor::from(Arc::clone(&self.https)))
    }
}

/// The server side of tonic's TLS takes rustls's process-wide provider, and with
/// both ring and aws-lc-rs compiled in (object_store brings the latter into the
/// workspace) rustls cannot pick one by itself: name ring, as tonic's is.
pub(crate) fn ring_by_default() {
    // An error means a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// TLS handshakes in progress at once, at most.
const MAX_HANDSHAKES: usize = 256;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections that completed the TLS handshake, for `axum::serve`.
///
/// Handshakes run in tasks of their own, so a slow or silent client holds up no
/// one else; one that fails is logged and dropped.
pub struct HttpsListener {
    local: io::Result<SocketAddr>,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl HttpsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor) -> HttpsListener {
        let local = listener.local_addr();
        let (done, ready) = mpsc::channel(64);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    // The server is gone: let the port go.
                    () = done.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, most likely: wait, as axum does.
                        tracing::warn!(error = %err, "accepting an HTTPS connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // At most this many handshakes at once: silent clients cannot
                // take every file descriptor.
                let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                    return;
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "a TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "a TLS handshake timed out"),
                    }
                });
            }
        });
        HttpsListener { local, ready }
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ends only once this receiver is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local {
            Ok(addr) => Ok(*addr),
            Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
        }
    }
}
