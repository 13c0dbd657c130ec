//! The worker's Prometheus metrics, served by `--metrics-listen`:
//!
//! - `pastiche_worker_iterations_total`: optimiser iterations of the tasks this
//!   worker rendered to the end;
//! - `pastiche_worker_iterations_per_second`: the rate of the latest of them;
//! - `pastiche_worker_task_duration_seconds`: from lease to report, whatever the
//!   outcome;
//! - `pastiche_worker_tasks_total{outcome}`: done, failed, cancelled or stale;
//! - `pastiche_worker_device_memory_bytes`: the process's resident memory (read
//!   from /proc/self/statm at each scrape). On a GPU this is host memory too:
//!   libtorch's CUDA allocator is not asked, which would need NVML or a CUDA
//!   call on the engine thread.
//!
//! One set per process (a worker process owns one device); `pastiche local`'s
//! in-process workers add up into it and do not serve it.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::engine_thread::RenderOutput;

struct Metrics {
    iterations: Counter,
    iterations_per_second: Gauge<f64, AtomicU64>,
    task_duration: Histogram,
    tasks: Family<OutcomeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    iterations: Counter::default(),
    iterations_per_second: Gauge::default(),
    task_duration: Histogram::new([
        0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    ]),
    tasks: Family::default(),
});

/// A task rendered to the end (it may still fail to be stored).
pub(crate) fn rendered(output: &RenderOutput) {
    let Some(last) = output.losses.last() else {
        return;
    };
    METRICS.iterations.inc_by(last.iteration.into());
    let seconds = output.elapsed.as_secs_f64();
    if seconds > 0.0 {
        METRICS
            .iterations_per_second
            .set(f64::from(last.iteration) / seconds);
    }
}

const OUTCOMES: [&str; 4] = ["done", "failed", "cancelled", "stale"];

/// A task ended as `outcome` (one of [`OUTCOMES`]) after `took`.
pub(crate) fn task_ended(outcome: &'static str, took: Duration) {
    METRICS.tasks.get_or_create(&OutcomeLabel { outcome }).inc();
    METRICS.task_duration.observe(took.as_secs_f64());
}

/// The registry that `--metrics-listen` serves.
pub fn registry() -> Registry {
    let mut registry = Registry::default();
    // The text encoding adds `_total` to counters.
    registry.register(
        "pastiche_worker_iterations",
        "Optimiser iterations of the tasks rendered to the end",
        METRICS.iterations.clone(),
    );
    registry.register(
        "pastiche_worker_iterations_per_second",
        "Iterations per second of the latest task rendered",
        METRICS.iterations_per_second.clone(),
    );
    registry.register_with_unit(
        "pastiche_worker_task_duration",
        "Time from lease to report, for every task",
        Unit::Seconds,
        METRICS.task_duration.clone(),
    );
    // Every outcome from zero, so that rates work from the first task.
    for outcome in OUTCOMES {
        let _ = METRICS.tasks.get_or_create(&OutcomeLabel { outcome });
    }
    registry.register(
        "pastiche_worker_tasks",
        "Tasks ended, by outcome (done, failed, cancelled, stale)",
        METRICS.tasks.clone(),
    );
    registry.register_collector(Box::new(ResidentMemory));
    registry
}

/// The process's resident set size, read at each scrape.
#[derive(Debug)]
struct ResidentMemory;

/// Resident pages (the second field of /proc/self/statm) times the page size.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Safety: sysconf only reads a configuration value.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page_size).ok()?)
}

impl Collector for ResidentMemory {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(bytes) = resident_bytes() else {
            return Ok(());
        };
        let gauge = ConstGauge::new(bytes as i64);
        gauge.encode(encoder.encode_descriptor(
            "pastiche_worker_device_memory",
            "Resident memory of this worker process (host memory, also on a GPU)",
            Some(&Unit::Bytes),
            gauge.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_proc() {
        let bytes = resident_bytes().expect("/proc/self/statm");
        // A test binary linking libtorch is past a megabyte, and under a terabyte.
        assert!((1 << 20..1 << 40).contains(&bytes), "{bytes}");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry()).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("pastiche_worker_device_memory_bytes ")),
            "{text}"
        );
    }
}
