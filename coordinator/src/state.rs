//! Durable coordinator state in an embedded SQLite database: jobs, tasks with their
//! current state and attempt, and the event log. The scheduler's events are applied
//! here in one transaction per request, before the request is answered, so a
//! coordinator killed at any moment restarts where its last answer left off.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pastiche_spec::RenderParams;
use rusqlite::{params, Connection, OptionalExtension};

use crate::scheduler::{Event, JobSpec, Phase, Position, TaskState};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create {0}: {1}")]
    Directory(String, std::io::Error),
    #[error("cannot start the state database's checkpoint thread: {0}")]
    Thread(std::io::Error),
    /// Written by a newer coordinator, or by hand.
    #[error("state database: task '{task}' of job '{job}' is in an unknown state '{state}'")]
    UnknownState {
        job: String,
        task: String,
        state: String,
    },
}

/// What a task needs besides its state: what to render, from which inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: String,
    /// Shared by the tasks of one parameter point when submitted.
    pub params: Arc<RenderParams>,
    pub content_key: String,
    pub style_key: String,
    /// The backbone's weights (a path or URL), empty for random weights.
    pub weights: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub priority: i32,
    pub max_attempts: u32,
    pub grid_toml: String,
    /// Seconds since the Unix epoch.
    pub submitted_at: i64,
    /// Workers store a preview every this many iterations (0: never).
    pub preview_every: u32,
    /// How long one attempt may run; `None` for no limit.
    pub max_task_time: Option<Duration>,
}

/// A job as it was stored, with every task's last state.
pub struct StoredJob {
    pub job: JobRecord,
    /// Cancelled while it ran; the scheduler keeps this once restored.
    pub cancelled: bool,
    /// Its tasks' ids in grid order (what they render is read when leased).
    pub tasks: Vec<String>,
    pub states: HashMap<String, TaskState>,
    /// How many times each task was given back by a stopping worker.
    pub given_back: HashMap<String, u32>,
}

pub struct State {
    conn: Connection,
    /// Set when the state is dropped: the checkpointer of a file database stops.
    closed: Arc<AtomicBool>,
}

impl Drop for State {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    grid_toml    TEXT NOT NULL,
    submitted_at INTEGER NOT NULL,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    preview_every INTEGER NOT NULL DEFAULT 0,
    max_task_ms  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
    job_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    position    INTEGER NOT NULL,
    params      TEXT NOT NULL,
    content_key TEXT NOT NULL,
    style_key   TEXT NOT NULL,
    weights     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT,
    error       TEXT
);
-- Numbers that go on across restarts (`worker`: the last worker number given).
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    task_id TEXT,
    attempt INTEGER,
    worker  TEXT,
    message TEXT
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, job_id);
-- Tasks are found by their place in their job's grid order, not by id: a job's
-- rows are written in that order, so a million of them append to this index,
-- where an index of ids (hashes) is written all over (3 GB through the
-- write-ahead log for a million tasks, against 0.8 GB).
CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_position ON tasks (job_id, position);
-- A job's events to prune or delete, without a scan.
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, at);
";

/// Whole seconds since the Unix epoch, as the database keeps times.
pub fn unix_seconds() -> i64 {
    pastiche_spec::unix_now() as i64
}

impl State {
    /// Opens or creates the database at `path` (and its directory).
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StateError::Directory(dir.display().to_string(), e))?;
        }
        let state = Self::init(Connection::open(path)?)?;
        // Checkpoints (copying the write-ahead log back into the database) on a
        // connection of their own: on the writer's, the commit that crossed the
        // log's size limit paid for it, holding up every lease and heartbeat
        // behind it (hundreds of milliseconds after a large submission).
        state.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoints = Connection::open(path)?;
        let closed = Arc::clone(&state.closed);
        std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || checkpoint_until(checkpoints, &closed))
            .map_err(StateError::Thread)?;
        Ok(state)
    }

    pub fn in_memory() -> Result<Self, StateError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StateError> {
        // WAL: readers never block the writer; NORMAL: a commit survives a crash of
        // the process (not necessarily of the machine), which is the failure here.
        // Applies to a new database only. Larger pages than the default 4 KiB:
        // a million-task submission writes a quarter of the pages (and system
        // calls), for a few KiB more per commit of a lease or a report.
        conn.pragma_update(None, "page_size", 16384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        // Tasks of a job whose recording a crash cut short (see `insert_tasks`),
        // found from the index (the table's rows are large: a million of them
        // take seconds to read).
        let orphans: Vec<String> = conn
            .prepare("SELECT DISTINCT job_id FROM tasks INDEXED BY tasks_by_position")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for job in orphans {
            let known: bool = conn.query_row(
                "SELECT COUNT(*) FROM jobs WHERE id = ?1",
                params![job],
                |row| row.get::<_, i64>(0).map(|n| n > 0),
            )?;
            if !known {
                conn.execute("DELETE FROM tasks WHERE job_id = ?1", params![job])?;
            }
        }
        Ok(State {
            conn,
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Records a job and its tasks: [`insert_tasks`](Self::insert_tasks), then
    /// [`insert_job_record`](Self::insert_job_record).
    pub fn insert_job(&mut self, job: &JobRecord, tasks: &[TaskRecord]) -> Result<(), StateError> {
        self.insert_tasks(&job.id, 0, tasks)?;
        self.insert_job_record(job, tasks.len())
    }

    /// Records tasks of `job` from place `first` in grid order, in one
    /// transaction. A large job is recorded a part at a time, its job record
    /// last: tasks without one (a crash in between) are removed at the next open.
    pub fn insert_tasks(
        &mut self,
        job: &str,
        first: usize,
        tasks: &[TaskRecord],
    ) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO tasks (job_id, task_id, position, params, content_key, style_key, weights, state, attempt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)",
            )?;
            // A grid repeats each parameter point for every content and style.
            let mut json = HashMap::new();
            for (position, task) in (first..).zip(tasks) {
                let params = json.entry(Arc::as_ptr(&task.params)).or_insert_with(|| {
                    serde_json::to_string(&*task.params).expect("params serialise")
                });
                insert.execute(params![
                    job,
                    task.id,
                    position as i64,
                    *params,
                    task.content_key,
                    task.style_key,
                    task.weights,
                    Phase::Queued.name()
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a job whose `tasks` tasks are recorded: from here on it exists.
    pub fn insert_job_record(&mut self, job: &JobRecord, tasks: usize) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                job.id,
                job.name,
                job.priority,
                job.max_attempts,
                job.grid_toml,
                job.submitted_at,
                job.preview_every,
                job.max_task_time
                    .map_or(0, |limit| limit.as_millis() as i64),
            ],
        )?;
        tx.execute(
            "INSERT INTO events (job_id, at, kind, message) VALUES (?1, ?2, 'submitted', ?3)",
            params![job.id, unix_seconds(), format!("{tasks} tasks")],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The last worker number given, as recorded (0 before any).
    pub fn last_worker(&self) -> Result<u64, StateError> {
        let value: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM counters WHERE name = 'worker'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(value.map_or(0, |v| v as u64))
    }

    /// Records that worker number `number` was given.
    pub fn record_worker(&mut self, number: u64) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO counters (name, value) VALUES ('worker', ?1)
             ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            params![number as i64],
        )?;
        Ok(())
    }

    /// Records the scheduler's events: the tasks' new states and the log.
    pub fn apply(&mut self, events: &[Event]) -> Result<(), StateError> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        let at = unix_seconds();
        for event in events {
            let set = |phase: Phase,
                       attempt: u32,
                       worker: Option<&str>,
                       error: Option<&str>,
                       job: &str,
                       position: Position| {
                // Cached: this runs twice per task, on the scheduling path.
                tx.prepare_cached(
                    "UPDATE tasks SET state = ?1, attempt = ?2, worker = ?3, error = ?4 WHERE job_id = ?5 AND position = ?6",
                )?
                .execute(params![phase.name(), attempt, worker, error, job, position])
            };
            let log = |job: &str,
                       kind: &str,
                       task: Option<&str>,
                       attempt: Option<u32>,
                       worker: Option<&str>,
                       message: Option<&str>| {
                tx.prepare_cached(
                    "INSERT INTO events (job_id, at, kind, task_id, attempt, worker, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![job, at, kind, task, attempt, worker, message])
            };
            match event {
                Event::JobSubmitted { .. } => {} // written by insert_job
                Event::TaskLeased {
                    job,
                    task,
                    position,
                    attempt,
                    worker,
                } => {
                    set(Phase::Running, *attempt, Some(worker), None, job, *position)?;
                    log(
                        job,
                        "leased",
                        Some(task),
                        Some(*attempt),
                        Some(worker),
                        None,
                    )?;
                }
                Event::TaskRequeued {
                    job,
                    task,
                    position,
                    attempt,
                    reason,
                    given_back,
                } => {
                    set(Phase::Queued, *attempt, None, Some(reason), job, *position)?;
                    // Counted at load (see `load`): a give-back uses up no attempt.
                    log(
                        job,
                        if *given_back {
                            "given-back"
                        } else {
                            "requeued"
                        },
                        Some(task),
                        Some(*attempt),
                        None,
                        Some(reason),
                    )?;
                }
                Event::TaskDone {
                    job,
                    task,
                    position,
                    attempt,
                    worker,
                } => {
                    set(Phase::Done, *attempt, Some(worker), None, job, *position)?;
                    log(job, "done", Some(task), Some(*attempt), Some(worker), None)?;
                }
                Event::TaskFailed {
                    job,
                    task,
                    position,
                    attempt,
                    error,
                } => {
                    set(Phase::Failed, *attempt, None, Some(error), job, *position)?;
                    log(job, "failed", Some(task), Some(*attempt), None, Some(error))?;
                }
                Event::TaskCancelled {
                    job,
                    task,
                    position,
                } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET state = ?1 WHERE job_id = ?2 AND position = ?3",
                    )?
                    .execute(params![
                        Phase::Cancelled.name(),
                        job,
                        position
                    ])?;
                    log(job, "cancelled", Some(task), None, None, None)?;
                }
                Event::QueuedCancelled { job, tasks } => {
                    // No row changes: the job's cancelled flag (JobCancelled) says
                    // it, and a restart restores a cancelled job's queued tasks as
                    // cancelled (`Scheduler::restore`). Rewriting a million rows
                    // would take seconds.
                    let message = format!("{tasks} queued tasks");
                    log(job, "cancelled", None, None, None, Some(&message))?;
                }
                Event::WorkerBlocklisted { job, worker } => {
                    log(job, "blocklisted", None, None, Some(worker), None)?;
                }
                Event::JobCancelled { job } => {
                    tx.execute("UPDATE jobs SET cancelled = 1 WHERE id = ?1", params![job])?;
                    log(job, "job-cancelled", None, None, None, None)?;
                }
                Event::JobFinished { job, counts } => {
                    let summary = format!(
                        "{} done, {} failed, {} cancelled",
                        counts.done, counts.failed, counts.cancelled
                    );
                    log(job, "finished", None, None, None, Some(&summary))?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Notes that `job`'s report is in the store (or cannot be made: `note`
    /// says why), so [`unreported_jobs`](Self::unreported_jobs) leaves it out.
    pub fn mark_reported(&mut self, job: &str, note: &str) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO events (job_id, at, kind, message) VALUES (?1, ?2, 'reported', ?3)",
            params![job, unix_seconds(), note],
        )?;
        Ok(())
    }

    /// Finished jobs without a report, oldest first: a coordinator stopped
    /// between a job's end and its report writes the report when it is back.
    pub fn unreported_jobs(&self) -> Result<Vec<String>, StateError> {
        let mut query = self.conn.prepare(
            "SELECT id FROM jobs
             WHERE id IN (SELECT job_id FROM events WHERE kind = 'finished')
               AND id NOT IN (SELECT job_id FROM events WHERE kind = 'reported')
             ORDER BY seq",
        )?;
        let jobs = query
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(jobs)
    }

    /// The task at `position` in `job`'s grid order.
    pub fn task(&self, job: &str, position: Position) -> Result<Option<TaskRecord>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT task_id, params, content_key, style_key, weights FROM tasks WHERE job_id = ?1 AND position = ?2",
            )?
            .query_row(params![job, position], task_from_row)
            .optional()
            .map_err(StateError::from)
    }

    /// A job's tasks in grid order.
    pub fn tasks(&self, job: &str) -> Result<Vec<TaskRecord>, StateError> {
        self.tasks_page(job, 0, None)
    }

    /// The tasks of `job` from place `start` in grid order, `limit` of them
    /// (all without one).
    pub fn tasks_page(
        &self,
        job: &str,
        start: u64,
        limit: Option<u32>,
    ) -> Result<Vec<TaskRecord>, StateError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT task_id, params, content_key, style_key, weights FROM tasks
             WHERE job_id = ?1 AND position >= ?2 ORDER BY position LIMIT ?3",
        )?;
        let limit = limit.map_or(-1, i64::from);
        let tasks = stmt
            .query_map(params![job, start as i64, limit], task_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(tasks)
    }

    /// Removes a job's record: from here on it does not exist, and what is
    /// left of it ([`delete_job_part`](Self::delete_job_part)) is removed at the
    /// next open if not before.
    pub fn delete_job_record(&mut self, job: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM jobs WHERE id = ?1", params![job])?;
        Ok(())
    }

    /// Removes up to `limit` of a deleted job's task rows and events; how many.
    pub fn delete_job_part(&mut self, job: &str, limit: usize) -> Result<usize, StateError> {
        let tx = self.conn.transaction()?;
        let mut deleted = 0;
        for table in ["tasks", "events"] {
            deleted += tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE rowid IN \
                     (SELECT rowid FROM {table} WHERE job_id = ?1 LIMIT ?2)"
                ),
                params![job, limit as i64],
            )?;
        }
        tx.commit()?;
        Ok(deleted)
    }

    /// Removes a job, its tasks and its events, at once.
    pub fn delete_job(&mut self, job: &str) -> Result<(), StateError> {
        self.delete_job_record(job)?;
        while self.delete_job_part(job, 10_000)? > 0 {}
        Ok(())
    }

    /// Removes the events of the jobs in `finished` older than `before` (seconds
    /// since the Unix epoch), but for the two that say it finished and that its
    /// report was written (which a restart reads); how many.
    pub fn prune_events(&mut self, finished: &[&str], before: i64) -> Result<usize, StateError> {
        let tx = self.conn.transaction()?;
        let mut pruned = 0;
        {
            let mut delete = tx.prepare(
                "DELETE FROM events WHERE job_id = ?1 AND at < ?2
                 AND kind NOT IN ('finished', 'reported')",
            )?;
            for job in finished {
                pruned += delete.execute(params![job, before])?;
            }
        }
        tx.commit()?;
        Ok(pruned)
    }

    pub fn job(&self, job: &str) -> Result<Option<JobRecord>, StateError> {
        self.conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                params![job],
                job_from_row,
            )
            .optional()
            .map_err(StateError::from)
    }

    /// Every job in submission order, with its tasks and their states, for a
    /// restarted coordinator. Running tasks come back with `lease_until = now`;
    /// the scheduler gives them a fresh lease.
    pub fn load(&self, now: Instant) -> Result<Vec<StoredJob>, StateError> {
        let mut jobs_stmt = self.conn.prepare(&format!(
            "SELECT {JOB_COLUMNS}, cancelled FROM jobs ORDER BY seq"
        ))?;
        let jobs: Vec<(JobRecord, bool)> = jobs_stmt
            .query_map([], |row| {
                Ok((
                    job_from_row(row)?,
                    row.get::<_, i64>(JOB_COLUMN_COUNT)? != 0,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut tasks_stmt = self.conn.prepare(
            "SELECT task_id, state, attempt, worker, error
             FROM tasks WHERE job_id = ?1 ORDER BY position",
        )?;
        let mut given_back_stmt = self.conn.prepare(
            "SELECT task_id, COUNT(*) FROM events WHERE job_id = ?1 AND kind = 'given-back' GROUP BY task_id",
        )?;
        let mut stored = Vec::with_capacity(jobs.len());
        for (job, cancelled) in jobs {
            let given_back = given_back_stmt
                .query_map(params![job.id], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut tasks = Vec::new();
            let mut states = HashMap::new();
            let rows = tasks_stmt.query_map(params![job.id], |row| {
                let id: String = row.get(0)?;
                let state: String = row.get(1)?;
                let attempt: u32 = row.get(2)?;
                let worker: Option<String> = row.get(3)?;
                let error: Option<String> = row.get(4)?;
                Ok((id, state, attempt, worker, error))
            })?;
            for row in rows {
                let (id, state, attempt, worker, error) = row?;
                let phase = Phase::from_name(&state).ok_or_else(|| StateError::UnknownState {
                    job: job.id.clone(),
                    task: id.clone(),
                    state,
                })?;
                let state = match phase {
                    Phase::Queued => TaskState::Queued { attempt },
                    Phase::Running => TaskState::Running {
                        attempt,
                        worker: worker.unwrap_or_default(),
                        lease_until: now,
                        time_limit_at: None,
                        cancel_requested: false,
                    },
                    Phase::Done => TaskState::Done {
                        attempt,
                        worker: worker.unwrap_or_default(),
                    },
                    Phase::Failed => TaskState::Failed {
                        attempt,
                        error: error.unwrap_or_default(),
                    },
                    Phase::Cancelled => TaskState::Cancelled,
                };
                states.insert(id.clone(), state);
                tasks.push(id);
            }
            stored.push(StoredJob {
                job,
                cancelled,
                tasks,
                states,
                given_back,
            });
        }
        Ok(stored)
    }
}

/// The jobs table's columns that [`JobRecord`] holds, in [`job_from_row`]'s order.
const JOB_COLUMNS: &str =
    "id, name, priority, max_attempts, grid_toml, submitted_at, preview_every, max_task_ms";
const JOB_COLUMN_COUNT: usize = 8;

/// The tasks table's columns, in [`SCHEMA`]'s order.
const TASK_COLUMNS: &str =
    "job_id, task_id, position, params, content_key, style_key, weights, state, attempt, worker, error";

/// Columns of the jobs table added since its first version, as [`SCHEMA`]
/// declares them.
const ADDED_JOB_COLUMNS: [(&str, &str); 2] = [
    ("preview_every", "INTEGER NOT NULL DEFAULT 0"),
    ("max_task_ms", "INTEGER NOT NULL DEFAULT 0"),
];

/// How often the write-ahead log is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Checkpoints `conn`'s database every [`CHECKPOINT_EVERY`] (passively: never
/// waiting for the writer) until `closed`.
fn checkpoint_until(conn: Connection, closed: &AtomicBool) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY); // a maintenance period, not a wait for anything
        if closed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "checkpointing the state database failed");
        }
    }
}

/// Brings a database written by an earlier version up to [`SCHEMA`], so that an
/// upgraded coordinator resumes the jobs it had.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let tasks_table: String = conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'",
        [],
        |row| row.get(0),
    )?;
    if tasks_table.contains("PRIMARY KEY") {
        // Keyed by (job, task id) before: rebuilt as SCHEMA has it, in one go.
        conn.execute_batch(&format!(
            "BEGIN;
             ALTER TABLE tasks RENAME TO tasks_by_id;
             DROP INDEX IF EXISTS tasks_by_position;
             {SCHEMA}
             INSERT INTO tasks SELECT {TASK_COLUMNS} FROM tasks_by_id;
             DROP TABLE tasks_by_id;
             COMMIT;"
        ))?;
    }
    for (column, declaration) in ADDED_JOB_COLUMNS {
        let present: bool = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = ?1",
            [column],
            |row| row.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !present {
            conn.execute_batch(&format!(
                "ALTER TABLE jobs ADD COLUMN {column} {declaration}"
            ))?;
        }
    }
    Ok(())
}

fn job_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let max_task_ms: i64 = row.get(7)?;
    Ok(JobRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        priority: row.get(2)?,
        max_attempts: row.get(3)?,
        grid_toml: row.get(4)?,
        submitted_at: row.get(5)?,
        preview_every: row.get(6)?,
        max_task_time: (max_task_ms > 0).then(|| Duration::from_millis(max_task_ms as u64)),
    })
}

fn task_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    let params: String = row.get(1)?;
    let params = serde_json::from_str(&params).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(TaskRecord {
        id: row.get(0)?,
        params: Arc::new(params),
        content_key: row.get(2)?,
        style_key: row.get(3)?,
        weights: row.get(4)?,
    })
}

impl JobRecord {
    /// What the scheduler knows of this job, with its tasks' ids in grid order.
    pub fn spec(&self, tasks: Vec<String>) -> JobSpec {
        JobSpec {
            id: self.id.clone(),
            priority: self.priority,
            max_attempts: self.max_attempts,
            max_task_time: self.max_task_time,
            tasks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Failure, Scheduler, SchedulerConfig};
    use pastiche_spec::Backbone;

    fn task(id: &str) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            params: Arc::new(RenderParams::new(Backbone::Vgg16)),
            content_key: "inputs/c.png".into(),
            style_key: "inputs/s.png".into(),
            weights: String::new(),
        }
    }

    /// A job of one-task grids, as the database keeps it.
    fn job(id: &str, max_attempts: u32) -> JobRecord {
        JobRecord {
            id: id.into(),
            name: id.into(),
            priority: 0,
            max_attempts,
            grid_toml: String::new(),
            submitted_at: 1,
            preview_every: 0,
            max_task_time: None,
        }
    }

    #[test]
    fn a_database_from_before_previews_is_migrated_and_keeps_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            let old_schema = SCHEMA.replace(
                "cancelled    INTEGER NOT NULL DEFAULT 0,\n    preview_every INTEGER NOT NULL DEFAULT 0,\n    max_task_ms  INTEGER NOT NULL DEFAULT 0",
                "cancelled    INTEGER NOT NULL DEFAULT 0",
            );
            assert_ne!(old_schema, SCHEMA);
            conn.execute_batch(&old_schema).unwrap();
            conn.execute(
                "INSERT INTO jobs (id, name, priority, max_attempts, grid_toml, submitted_at) VALUES ('old', 'old', 0, 3, '', 1)",
                [],
            )
            .unwrap();
        }
        let state = State::open(&path).unwrap();
        let job = state.job("old").unwrap().unwrap();
        assert_eq!((job.id.as_str(), job.preview_every), ("old", 0));
        assert_eq!(job.max_task_time, None);
        drop(state);
        State::open(&path).unwrap(); // migrating twice is a no-op
    }

    #[test]
    fn a_database_with_tasks_keyed_by_id_is_rebuilt_keyed_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let tasks = [task("a"), task("b")];
        {
            // As coordinators wrote it before tasks were found by position.
            let conn = Connection::open(&path).unwrap();
            let old_schema = SCHEMA
                .replace(
                    "    error       TEXT\n);",
                    "    error       TEXT,\n    PRIMARY KEY (job_id, task_id)\n);",
                )
                .replace("CREATE UNIQUE INDEX", "CREATE INDEX");
            assert_ne!(old_schema, SCHEMA);
            conn.execute_batch(&old_schema).unwrap();
            conn.execute(
                "INSERT INTO jobs (id, name, priority, max_attempts, grid_toml, submitted_at) VALUES ('j', 'j', 0, 3, '', 1)",
                [],
            )
            .unwrap();
            for (position, (task, state)) in tasks.iter().zip(["done", "queued"]).enumerate() {
                conn.execute(
                    "INSERT INTO tasks (job_id, task_id, position, params, content_key, style_key, weights, state, attempt, worker)
                     VALUES ('j', ?1, ?2, ?3, ?4, ?5, '', ?6, 1, 'w')",
                    params![
                        task.id,
                        position as i64,
                        serde_json::to_string(&*task.params).unwrap(),
                        task.content_key,
                        task.style_key,
                        state
                    ],
                )
                .unwrap();
            }
        }
        for _ in 0..2 {
            // The second open finds nothing to rebuild.
            let state = State::open(&path).unwrap();
            let table: String = state
                .conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'tasks'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(!table.contains("PRIMARY KEY"), "{table}");
            assert_eq!(state.task("j", 1).unwrap().as_ref(), Some(&tasks[1]));
            let stored = state.load(Instant::now()).unwrap();
            assert_eq!(stored[0].tasks, ["a", "b"]);
            assert_eq!(
                stored[0].states["a"],
                TaskState::Done {
                    attempt: 1,
                    worker: "w".into()
                }
            );
            assert_eq!(stored[0].states["b"], TaskState::Queued { attempt: 1 });
            let duplicate = state.conn.execute(
                "INSERT INTO tasks (job_id, task_id, position, params, content_key, style_key, weights, state, attempt)
                 VALUES ('j', 'c', 1, '{}', '', '', '', 'queued', 1)",
                [],
            );
            assert!(duplicate.is_err(), "a position is a task's key");
        }
    }

    #[test]
    fn a_task_in_an_unknown_state_fails_the_load_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut state = State::open(&path).unwrap();
            state
                .insert_job(&job("j", 3), &[task("a"), task("b")])
                .unwrap();
            state
                .conn
                .execute("UPDATE tasks SET state = 'paused' WHERE task_id = 'b'", [])
                .unwrap();
        }
        let err = match State::open(&path).unwrap().load(Instant::now()) {
            Ok(_) => panic!("a task in state 'paused' was loaded"),
            Err(err) => err.to_string(),
        };
        assert!(
            err.contains("'b'") && err.contains("'j'") && err.contains("'paused'"),
            "{err}"
        );
    }

    #[test]
    fn finished_jobs_stay_unreported_until_noted_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut state = State::open(&path).unwrap();
            let mut scheduler = Scheduler::new(SchedulerConfig::default());
            for id in ["finishes", "runs", "finishes-too"] {
                state.insert_job(&job(id, 1), &[task("t")]).unwrap();
                scheduler
                    .submit(JobSpec {
                        id: id.into(),
                        priority: 0,
                        max_attempts: 1,
                        max_task_time: None,
                        tasks: vec!["t".into()],
                    })
                    .unwrap();
            }
            let now = Instant::now();
            for _ in 0..3 {
                let lease = scheduler.lease("w", now).unwrap();
                if lease.job != "runs" {
                    scheduler.complete(&lease.job, &lease.task, lease.attempt, "w");
                }
            }
            state.apply(&scheduler.take_events()).unwrap();
            assert_eq!(
                state.unreported_jobs().unwrap(),
                ["finishes", "finishes-too"]
            );
        } // stopped before any report was written

        let mut state = State::open(&path).unwrap();
        assert_eq!(
            state.unreported_jobs().unwrap(),
            ["finishes", "finishes-too"]
        );
        state
            .mark_reported("finishes", "jobs/finishes/report/index.html")
            .unwrap();
        drop(state);
        let state = State::open(&path).unwrap();
        assert_eq!(state.unreported_jobs().unwrap(), ["finishes-too"]);
    }

    #[test]
    fn give_backs_are_counted_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let now = Instant::now();
        {
            let mut state = State::open(&path).unwrap();
            state.insert_job(&job("j", 2), &[task("a")]).unwrap();
            let mut scheduler = Scheduler::new(SchedulerConfig::default());
            scheduler
                .submit(JobSpec {
                    id: "j".into(),
                    priority: 0,
                    max_attempts: 2,
                    max_task_time: None,
                    tasks: vec!["a".into()],
                })
                .unwrap();
            for attempt in 1..=2 {
                scheduler.lease("w", now).unwrap();
                assert!(scheduler.give_back("j", "a", attempt, "w"));
            }
            state.apply(&scheduler.take_events()).unwrap();
        }
        let stored = State::open(&path).unwrap().load(now).unwrap();
        assert_eq!(stored[0].given_back, HashMap::from([("a".to_owned(), 2)]));
        // Restored, the task still has both its attempts: the first failure (on
        // lease 3) is retried.
        let mut scheduler = Scheduler::new(SchedulerConfig::default());
        let s = &stored[0];
        scheduler
            .restore(
                s.job.spec(s.tasks.clone()),
                false,
                &s.states,
                &s.given_back,
                now,
            )
            .unwrap();
        let lease = scheduler.lease("w", now).unwrap();
        assert_eq!(lease.attempt, 3);
        scheduler.fail("j", "a", 3, "w", Failure::Worker, "oom", now);
        assert_eq!(
            scheduler.task_state("j", "a").unwrap(),
            &TaskState::Queued { attempt: 4 }
        );
    }

    #[test]
    fn a_reopened_database_restores_the_scheduler_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let job = JobRecord {
            id: "j".into(),
            name: "study".into(),
            priority: 1,
            max_attempts: 3,
            max_task_time: Some(Duration::from_secs(5400)),
            grid_toml: "content = \"c\"".into(),
            submitted_at: 5,
            preview_every: 10,
        };
        let tasks = [task("a"), task("b"), task("c")];
        let now = Instant::now();
        {
            let mut state = State::open(&path).unwrap();
            state.insert_job(&job, &tasks).unwrap();
            let mut scheduler = Scheduler::new(SchedulerConfig::default());
            scheduler
                .submit(JobSpec {
                    id: "j".into(),
                    priority: 1,
                    max_attempts: 3,
                    max_task_time: job.max_task_time,
                    tasks: vec!["a".into(), "b".into(), "c".into()],
                })
                .unwrap();
            let a = scheduler.lease("w1", now).unwrap();
            scheduler.lease("w2", now).unwrap();
            scheduler.complete("j", &a.task, a.attempt, "w1");
            state.apply(&scheduler.take_events()).unwrap();
        } // the coordinator dies here

        let state = State::open(&path).unwrap();
        let stored = state.load(now).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].job, job, "max_task_time included");
        let ids: Vec<_> = tasks.iter().map(|t| t.id.clone()).collect();
        assert_eq!(stored[0].tasks, ids);
        assert_eq!(
            stored[0].states["a"],
            TaskState::Done {
                attempt: 1,
                worker: "w1".into()
            }
        );
        assert!(
            matches!(&stored[0].states["b"], TaskState::Running { attempt: 1, worker, .. } if worker == "w2")
        );
        assert_eq!(stored[0].states["c"], TaskState::Queued { attempt: 1 });

        let mut scheduler = Scheduler::new(SchedulerConfig::default());
        scheduler
            .restore(
                stored[0].job.spec(stored[0].tasks.clone()),
                false,
                &stored[0].states,
                &stored[0].given_back,
                now,
            )
            .unwrap();
        assert_eq!(scheduler.lease("w3", now).unwrap().task, "c");
        assert_eq!(state.task("j", 1).unwrap().unwrap(), tasks[1]);
        assert_eq!(state.tasks("j").unwrap(), tasks);
        assert_eq!(state.job("nope").unwrap(), None);
    }

    #[test]
    fn pruning_keeps_recent_events_and_what_a_restart_reads() {
        let mut state = State::in_memory().unwrap();
        state.insert_job(&job("j", 3), &[task("a")]).unwrap();
        for (at, kind) in [
            (10, "leased"),
            (20, "done"),
            (30, "finished"),
            (40, "reported"),
            (500, "leased"),
        ] {
            state
                .conn
                .execute(
                    "INSERT INTO events (job_id, at, kind) VALUES ('j', ?1, ?2)",
                    params![at, kind],
                )
                .unwrap();
        }
        let kinds = |state: &State| -> Vec<String> {
            let mut stmt = state
                .conn
                .prepare("SELECT kind FROM events WHERE job_id = 'j' ORDER BY at")
                .unwrap();
            stmt.query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(state.prune_events(&["other"], 100).unwrap(), 0);
        assert_eq!(state.prune_events(&["j"], 100).unwrap(), 2);
        let left = kinds(&state);
        assert_eq!(&left[..3], ["finished", "reported", "leased"], "{left:?}");
        state.delete_job("j").unwrap();
        assert!(kinds(&state).is_empty());
        assert_eq!(state.job("j").unwrap(), None);
        assert!(state.tasks("j").unwrap().is_empty());
    }

    #[test]
    fn a_cancelled_jobs_queued_tasks_come_back_cancelled_without_a_write_each() {
        let mut state = State::in_memory().unwrap();
        let tasks = [task("a"), task("b"), task("c")];
        state.insert_job(&job("j", 3), &tasks).unwrap();
        let mut scheduler = Scheduler::new(SchedulerConfig::default());
        scheduler
            .submit(JobSpec {
                id: "j".into(),
                priority: 0,
                max_attempts: 3,
                max_task_time: None,
                tasks: vec!["a".into(), "b".into(), "c".into()],
            })
            .unwrap();
        let now = Instant::now();
        let running = scheduler.lease("w", now).unwrap();
        scheduler.cancel("j").unwrap();
        let events = scheduler.take_events();
        assert!(events.contains(&Event::QueuedCancelled {
            job: "j".into(),
            tasks: 2
        }));
        state.apply(&events).unwrap();
        let stored = &state.load(now).unwrap()[0];
        assert!(stored.cancelled);
        let mut restarted = Scheduler::new(SchedulerConfig::default());
        restarted
            .restore(
                stored.job.spec(stored.tasks.clone()),
                stored.cancelled,
                &stored.states,
                &stored.given_back,
                now,
            )
            .unwrap();
        for task in ["a", "b", "c"] {
            let expected = if task == running.task {
                Phase::Running
            } else {
                Phase::Cancelled
            };
            let phase = restarted.task_state("j", task).unwrap().phase();
            assert_eq!(phase, expected, "{task}");
        }
    }

    #[test]
    fn tasks_of_a_job_whose_recording_was_cut_short_are_removed_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut state = State::open(&path).unwrap();
            state.insert_job(&job("whole", 3), &[task("a")]).unwrap();
            // A crash between a large job's parts and its record.
            state
                .insert_tasks("half", 0, &[task("b"), task("c")])
                .unwrap();
            assert_eq!(state.tasks("half").unwrap().len(), 2);
        }
        let state = State::open(&path).unwrap();
        assert!(state.tasks("half").unwrap().is_empty());
        assert_eq!(state.tasks("whole").unwrap(), [task("a")]);
        assert_eq!(state.load(Instant::now()).unwrap().len(), 1);
    }
}
