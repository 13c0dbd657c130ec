//! The coordinator: it takes grids of renders from users and hands their tasks to
//! workers. It never links libtorch.
//!
//! - [`scheduler`]: who renders what, as plain data (no network, no clock);
//! - [`state`]: the embedded database that makes a restart lose nothing;
//! - [`core`]: the application over both, on its own types (no protobuf):
//!   jobs, the workers' reports, watch events, finished jobs' reports;
//! - [`inputs`]: which files a submitted grid may name;
//! - [`grpc`]: the gRPC services over the core; [`server`]: serving them, with
//!   [`auth`]'s token check; [`metrics`]: what Prometheus scrapes.

pub mod auth;
pub mod core;
pub mod error;
pub mod grpc;
pub mod inputs;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod state;

use std::time::Duration;

/// Parses `30s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("'{text}': unknown unit '{unit}' (ms, s, m or h)")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("'{text}' must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
