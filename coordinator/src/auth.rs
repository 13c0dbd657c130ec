//! The bearer-token check in front of every service but gRPC health (Kubernetes
//! probes call it without credentials). A tower layer rather than a tonic
//! interceptor, so that a refusal can name the method that was called.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{ready, Either, Ready};
use http::{Request, Response};
use pastiche_proto::security::Token;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// Calls that need no token.
const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";

/// Refuses calls without `authorization: Bearer <token>`; with no token
/// configured, lets everything through.
#[derive(Clone, Debug)]
pub struct RequireToken(Option<Arc<Token>>);

impl RequireToken {
    pub fn new(token: Option<Token>) -> Self {
        RequireToken(token.map(Arc::new))
    }
}

impl<S> Layer<S> for RequireToken {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            token: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    token: Option<Arc<Token>>,
}

impl<S, B, R> Service<Request<B>> for Authenticated<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(token) = &self.token else {
            return Either::Left(self.inner.call(request));
        };
        let method = request.uri().path();
        let presented = request.headers().get(http::header::AUTHORIZATION);
        if method.starts_with(OPEN_PREFIX)
            || presented.is_some_and(|value| token.authorizes(value.as_bytes()))
        {
            return Either::Left(self.inner.call(request));
        }
        // Name the caller and the call, never what it presented.
        let peer = peer_addr(&request).map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        tracing::warn!(
            %peer,
            %method,
            credential = if presented.is_some() { "wrong" } else { "missing" },
            "refused a call without a valid token"
        );
        let status = tonic::Status::unauthenticated("missing or wrong bearer token");
        Either::Right(ready(Ok(status.into_http())))
    }
}

/// The caller's address, over plain TCP or TLS.
fn peer_addr<B>(request: &Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}
