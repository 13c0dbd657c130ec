//! How both ends of a farm connection notice that the other is gone, and how
//! long a call may take: HTTP/2 keepalive pings on every connection, and a
//! deadline on every call. A half-open connection (a peer that vanished
//! without closing it, a dropped NAT entry) then fails within
//! `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT` instead of stalling its caller.

use std::time::Duration;

/// How often each end pings an otherwise quiet connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The deadline of a call that does no waiting of its own (a heartbeat, a
/// report): long enough for a busy coordinator, short enough that a lost reply
/// is retried well within a lease.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// `message` as a request that gives up after `deadline` (the server sees the
/// deadline too, in the `grpc-timeout` header).
pub fn within<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

/// `message` as a request with the [`CALL_DEADLINE`].
pub fn request<T>(message: T) -> tonic::Request<T> {
    within(message, CALL_DEADLINE)
}
