//! The coordinator: it takes grids of renders from users and hands their tasks to
//! workers. It never links libtorch.
//!
//! - [`scheduler`]: who renders what, as plain data (no network, no clock);
//! - [`state`]: the embedded database that makes a restart lose nothing;
//! - [`core`]: the application over both, on its own types (no protobuf):
//!   jobs, the workers' reports, watch events, finished jobs' reports;
//! - [`inputs`]: which files a submitted grid may name;
//! - [`grpc`]: the gRPC services over the core; [`server`]: serving them, with
//!   [`auth`]'s token check and [`tls`]; [`metrics`]: what Prometheus scrapes;
//!   [`dashboard`]: the farm's web pages.

pub mod auth;
pub mod core;
pub mod dashboard;
pub mod error;
pub mod grpc;
pub mod inputs;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod tls;

/// Durations as flags give them (`30s`, `500ms`, `2m`); the grid's `max_task_time` reads them too.
pub use pastiche_spec::parse_duration;
