//! The coordinator's Prometheus metrics. Counters follow the scheduler's events
//! (see `Coordinator::commit`); the task and worker gauges are read from the
//! scheduler at each scrape, so they can never drift from it.
//!
//! - `pastiche_tasks{job,state}`: tasks of each job per state (queued, running,
//!   done, failed, cancelled), for the jobs still running and those that finished
//!   within [`FINISHED_JOBS_SHOWN_FOR`]: a farm that lives for months would
//!   otherwise carry five series for every job it ever ran;
//! - `pastiche_queue_depth`: queued tasks over all jobs that can still run (what
//!   an autoscaler scales workers on);
//! - `pastiche_workers`: workers waiting in a lease call now, or seen leasing or
//!   heartbeating within the lease timeout;
//! - `pastiche_lease_expiries_total`, `pastiche_task_retries_total` (tasks requeued
//!   after a failure, an expired lease or a worker giving its task back);
//! - `pastiche_scheduling_latency_seconds`: the server's time to answer a lease
//!   call that hands out a task, from the look that found it to the reply (the
//!   long-poll wait before that is not counted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::scheduler::{Counts, Event, Phase};

/// How long a finished job's task series stay on `/metrics`: long enough for
/// every scrape and dashboard to see the final counts.
pub const FINISHED_JOBS_SHOWN_FOR: Duration = Duration::from_secs(3600);

/// Where the metrics come from (the coordinator's core), so that this module
/// needs nothing of it but this.
pub trait MetricsSource: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    /// Every job's task counts, and the tasks queued over all jobs.
    fn task_counts(&self) -> (Vec<(String, Counts)>, usize);
}

/// What the coordinator counts as it goes.
#[derive(Debug)]
pub struct Metrics {
    lease_expiries: Counter,
    task_retries: Counter,
    scheduling_latency: Histogram,
    workers: Mutex<Presence>,
    lease_timeout: Duration,
    /// When each job finished, for those that finished in this process within
    /// [`FINISHED_JOBS_SHOWN_FOR`].
    finished_jobs: Mutex<HashMap<String, Instant>>,
}

/// When each worker was last heard from, and which are in a lease call now.
#[derive(Debug, Default)]
struct Presence {
    last_seen: HashMap<String, Instant>,
    polling: HashMap<String, usize>,
}

impl Metrics {
    pub fn new(lease_timeout: Duration) -> Self {
        Metrics {
            lease_expiries: Counter::default(),
            task_retries: Counter::default(),
            // 100 us to ~26 s.
            scheduling_latency: Histogram::new(exponential_buckets(1e-4, 4.0, 10)),
            workers: Mutex::new(Presence::default()),
            lease_timeout,
            finished_jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Counts what a batch of scheduler events says happened.
    pub fn record(&self, events: &[Event]) {
        for event in events {
            match event {
                Event::TaskRequeued { .. } => {
                    self.task_retries.inc();
                }
                Event::JobFinished { job, .. } => {
                    self.finished_jobs().insert(job.clone(), Instant::now());
                }
                _ => {}
            }
        }
    }

    fn finished_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.finished_jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The jobs whose task series `/metrics` shows at `now`: unfinished ones,
    /// and those that finished within `shown_for` (a job that finished before
    /// this process started is not shown).
    fn shown_jobs(
        &self,
        jobs: Vec<(String, Counts)>,
        now: Instant,
        shown_for: Duration,
    ) -> Vec<(String, Counts)> {
        let mut finished = self.finished_jobs();
        finished.retain(|_, at| now.duration_since(*at) <= shown_for);
        jobs.into_iter()
            .filter(|(job, counts)| !counts.finished() || finished.contains_key(job))
            .collect()
    }

    pub fn leases_expired(&self, count: usize) {
        self.lease_expiries.inc_by(count as u64);
    }

    pub fn task_scheduled(&self, took: Duration) {
        self.scheduling_latency.observe(took.as_secs_f64());
    }

    fn presence(&self) -> std::sync::MutexGuard<'_, Presence> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The workers waiting in a lease call now, or heard from within the lease
    /// timeout: those `pastiche_workers` counts.
    pub fn present(&self) -> Vec<String> {
        let mut presence = self.presence();
        presence.forget_older_than(Instant::now(), self.lease_timeout);
        let Presence { last_seen, polling } = &*presence;
        let mut workers: Vec<String> = polling.keys().chain(last_seen.keys()).cloned().collect();
        workers.sort();
        workers.dedup();
        workers
    }

    /// A worker was heard from (a heartbeat, a report).
    pub fn worker_seen(&self, worker: &str) {
        if worker.is_empty() {
            return;
        }
        let mut presence = self.presence();
        let now = Instant::now();
        presence.last_seen.insert(worker.to_owned(), now);
        // Registrations come and go: keep only the live ones.
        presence.forget_older_than(now, self.lease_timeout);
    }

    /// A worker is in a lease call until the guard drops: a long poll can outlast
    /// the lease timeout, and the worker is there all along.
    pub fn polling(&self, worker: &str) -> Polling<'_> {
        self.worker_seen(worker);
        *self
            .presence()
            .polling
            .entry(worker.to_owned())
            .or_default() += 1;
        Polling {
            metrics: self,
            worker: worker.to_owned(),
        }
    }

    /// Workers polling now or seen within the lease timeout; forgets the rest.
    pub fn live_workers(&self) -> usize {
        let mut presence = self.presence();
        presence.forget_older_than(Instant::now(), self.lease_timeout);
        presence.last_seen.len()
    }
}

impl Presence {
    fn forget_older_than(&mut self, now: Instant, age: Duration) {
        let Presence { last_seen, polling } = self;
        last_seen.retain(|worker, seen| {
            polling.contains_key(worker) || now.duration_since(*seen) <= age
        });
    }
}

/// See [`Metrics::polling`].
pub struct Polling<'a> {
    metrics: &'a Metrics,
    worker: String,
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        let mut presence = self.metrics.presence();
        presence
            .last_seen
            .insert(self.worker.clone(), Instant::now());
        if let Some(calls) = presence.polling.get_mut(&self.worker) {
            *calls -= 1;
            if *calls == 0 {
                presence.polling.remove(&self.worker);
            }
        }
    }
}

/// The registry that `--metrics-listen` serves.
pub fn registry<S: MetricsSource>(source: &Arc<S>) -> Registry {
    let metrics = source.metrics();
    let mut registry = Registry::default();
    // The text encoding adds `_total` to counters.
    registry.register(
        "pastiche_lease_expiries",
        "Leases that ran out before their worker renewed them",
        metrics.lease_expiries.clone(),
    );
    registry.register(
        "pastiche_task_retries",
        "Tasks requeued after a failure, an expired lease or a worker giving them back",
        metrics.task_retries.clone(),
    );
    registry.register_with_unit(
        "pastiche_scheduling_latency",
        "Time to answer a lease call that hands out a task, not counting the long-poll wait",
        Unit::Seconds,
        metrics.scheduling_latency.clone(),
    );
    // Weak: the coordinator owns its metrics, not the other way round.
    let source: Weak<dyn MetricsSource> = Arc::downgrade(source) as _;
    registry.register_collector(Box::new(StateCollector(source)));
    registry
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    job: String,
    state: &'static str,
}

/// `pastiche_tasks{job,state}` from each job's counts.
fn task_gauges<'a>(jobs: impl IntoIterator<Item = (&'a str, Counts)>) -> Family<TaskLabels, Gauge> {
    let family = Family::<TaskLabels, Gauge>::default();
    for (job, counts) in jobs {
        for phase in Phase::ALL {
            let labels = TaskLabels {
                job: job.to_owned(),
                state: phase.name(),
            };
            family.get_or_create(&labels).set(counts.of(phase) as i64);
        }
    }
    family
}

/// Reads the scheduler's state at each scrape.
struct StateCollector(Weak<dyn MetricsSource>);

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.0.upgrade() else {
            return Ok(());
        };
        let (jobs, queue_depth) = source.task_counts();
        let jobs = source
            .metrics()
            .shown_jobs(jobs, Instant::now(), FINISHED_JOBS_SHOWN_FOR);
        let tasks = task_gauges(jobs.iter().map(|(job, c)| (job.as_str(), *c)));
        tasks.encode(encoder.encode_descriptor(
            "pastiche_tasks",
            "Tasks of each job in each state",
            None,
            tasks.metric_type(),
        )?)?;
        let depth = ConstGauge::new(queue_depth as i64);
        depth.encode(encoder.encode_descriptor(
            "pastiche_queue_depth",
            "Tasks waiting for a worker, over all jobs",
            None,
            depth.metric_type(),
        )?)?;
        let workers = ConstGauge::new(source.metrics().live_workers() as i64);
        workers.encode(encoder.encode_descriptor(
            "pastiche_workers",
            "Workers polling now or heard from within the lease timeout",
            None,
            workers.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn counts_become_one_gauge_per_job_and_state() {
        let counts = Counts {
            queued: 3,
            running: 1,
            done: 2,
            failed: 0,
            cancelled: 4,
        };
        let mut registry = Registry::default();
        registry.register("pastiche_tasks", "", task_gauges([("seed-1", counts)]));
        let text = encode(&registry);
        for line in [
            r#"pastiche_tasks{job="seed-1",state="queued"} 3"#,
            r#"pastiche_tasks{job="seed-1",state="running"} 1"#,
            r#"pastiche_tasks{job="seed-1",state="done"} 2"#,
            r#"pastiche_tasks{job="seed-1",state="failed"} 0"#,
            r#"pastiche_tasks{job="seed-1",state="cancelled"} 4"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn requeues_count_as_retries_and_nothing_else_does() {
        let metrics = Metrics::new(Duration::from_secs(30));
        let requeued = Event::TaskRequeued {
            job: "j".into(),
            task: "t".into(),
            position: 0,
            attempt: 2,
            reason: "lease expired".into(),
            given_back: false,
        };
        let done = Event::TaskDone {
            job: "j".into(),
            task: "t".into(),
            position: 0,
            attempt: 2,
            worker: "w".into(),
        };
        metrics.record(&[requeued.clone(), done, requeued]);
        assert_eq!(metrics.task_retries.get(), 2);
    }

    #[test]
    fn finished_jobs_leave_the_task_series_after_a_while() {
        let metrics = Metrics::new(Duration::from_secs(30));
        let running = Counts {
            queued: 1,
            running: 1,
            ..Counts::default()
        };
        let finished = Counts {
            done: 2,
            ..Counts::default()
        };
        let jobs = || {
            vec![
                ("running".to_owned(), running),
                ("finished-here".to_owned(), finished),
                ("finished-before-restart".to_owned(), finished),
            ]
        };
        let names = |shown: Vec<(String, Counts)>| -> Vec<String> {
            shown.into_iter().map(|(job, _)| job).collect()
        };
        metrics.record(&[Event::JobFinished {
            job: "finished-here".into(),
            counts: finished,
        }]);
        let finished_at = metrics.finished_jobs()["finished-here"];
        let window = FINISHED_JOBS_SHOWN_FOR;

        assert_eq!(
            names(metrics.shown_jobs(jobs(), finished_at + window, window)),
            ["running", "finished-here"]
        );
        let after = finished_at + window + Duration::from_secs(1);
        assert_eq!(
            names(metrics.shown_jobs(jobs(), after, window)),
            ["running"]
        );
        // Forgotten, not just hidden: the map does not grow either.
        assert!(metrics.finished_jobs().is_empty());
    }

    #[test]
    fn a_worker_counts_while_it_polls_and_for_a_lease_timeout_after() {
        let metrics = Metrics::new(Duration::from_millis(50));
        assert_eq!(metrics.live_workers(), 0);
        let polling = metrics.polling("w#1");
        metrics.worker_seen("w#2");
        assert_eq!(metrics.live_workers(), 2);
        // Poll with a deadline: w#2 drops out once the lease timeout has passed,
        // while w#1, still in its call, stays.
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.live_workers() != 1 {
            assert!(Instant::now() < deadline, "w#2 never dropped out");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(polling);
        assert_eq!(
            metrics.live_workers(),
            1,
            "seen just now, at the end of its call"
        );
    }
}
