//! The dashboard's HTML, rendered here (the script only swaps in the live part
//! a refresh returns). Everything a grid or a worker named is escaped.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use pastiche_report::{escape_html as escape, input_label, style_label, varied_values};

use super::live::Running;
use crate::core::reports::from_tasks;
use crate::core::{JobState, JobStatus, Registration, TaskInfo};
use crate::scheduler::{Counts, Phase};

/// A whole page: `part` is its live part, refreshed from `live`.
pub fn page(title: &str, live: &str, part: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/dashboard.css\"></head>\
         <body><header><a href=\"/\">pastiche</a> <span>render farm</span></header>\
         <main id=\"live\" data-src=\"{live}\">{part}</main>\
         <script src=\"/assets/dashboard.js\"></script></body></html>\n",
        title = escape(title),
        live = escape(live),
    )
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// A bar of the job's tasks by state, each part as wide as its share.
fn progress_bar(counts: &Counts) -> String {
    let total = counts.total().max(1) as f64;
    let mut bar = String::from("<div class=\"bar\">");
    for phase in [Phase::Done, Phase::Failed, Phase::Cancelled, Phase::Running] {
        let n = counts.of(phase);
        if n > 0 {
            let _ = write!(
                bar,
                "<span class=\"{name}\" style=\"width:{width:.2}%\" title=\"{n} {name}\"></span>",
                name = phase.name(),
                width = 100.0 * n as f64 / total,
            );
        }
    }
    bar.push_str("</div>");
    bar
}

/// About how long the rest of a running job takes, at its pace so far.
fn time_left(status: &JobStatus, now: i64) -> String {
    let c = &status.counts;
    let ended = c.done + c.failed + c.cancelled;
    let left = c.total() - ended;
    if status.ended() || ended == 0 || left == 0 {
        return String::new();
    }
    let elapsed = (now - status.submitted_at).max(0) as f64;
    let seconds = (elapsed * left as f64 / ended as f64).round() as u64;
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}

fn counts_text(c: &Counts) -> String {
    format!(
        "{} of {} done · {} running · {} queued · {} failed · {} cancelled",
        c.done,
        c.total(),
        c.running,
        c.queued,
        c.failed,
        c.cancelled
    )
}

/// The jobs, newest first.
pub fn jobs(jobs: &[JobStatus]) -> String {
    if jobs.is_empty() {
        return "<p class=\"empty\">No jobs yet: <code>pastiche submit grid.toml</code> sends one.</p>"
            .into();
    }
    let now = crate::state::unix_seconds();
    let mut rows: Vec<&JobStatus> = jobs.iter().collect();
    rows.sort_by_key(|job| std::cmp::Reverse(job.submitted_at));
    let mut html = String::from(
        "<table class=\"jobs\"><thead><tr><th>job</th><th>state</th><th>progress</th>\
         <th>tasks</th><th>time left</th></tr></thead><tbody>",
    );
    for job in rows {
        let _ = write!(
            html,
            "<tr class=\"{state}\"><td><a href=\"/jobs/{id}\">{name}</a><div class=\"id\">{id}</div></td>\
             <td>{state}</td><td>{bar}</td><td>{counts}</td><td>{left}</td></tr>",
            id = escape(&job.job),
            name = escape(&job.name),
            state = state_name(job.state),
            bar = progress_bar(&job.counts),
            counts = escape(&counts_text(&job.counts)),
            left = time_left(job, now),
        );
    }
    html.push_str("</tbody></table>");
    html
}

/// What a job's page shows.
pub struct JobView<'a> {
    pub status: &'a JobStatus,
    /// The first tasks in grid order (at most [`super::SHOWN_TASKS`]).
    pub tasks: &'a [TaskInfo],
    /// What people call the inputs, by key.
    pub names: &'a BTreeMap<String, String>,
    pub running: &'a HashMap<String, Running>,
    pub workers: &'a [(String, Option<Registration>)],
    /// Whether there is a store to show images from.
    pub images: bool,
    /// Whether the job's report is in the store.
    pub report: bool,
    pub token_required: bool,
}

/// The live part of a job's page.
pub fn job(view: &JobView<'_>) -> String {
    let status = view.status;
    let job = escape(&status.job);
    let mut html = String::new();
    let ended = if status.ended() { " data-ended" } else { "" };
    let _ = write!(
        html,
        "<section class=\"job\"{ended}><h1>{name} <span class=\"state {state}\">{state}</span></h1>\
         <div class=\"id\">{job}</div>{bar}<p>{counts}{left}</p>",
        name = escape(&status.name),
        state = state_name(status.state),
        bar = progress_bar(&status.counts),
        counts = escape(&counts_text(&status.counts)),
        left = match time_left(status, crate::state::unix_seconds()) {
            left if left.is_empty() => left,
            left => format!(" · about {left} left"),
        },
    );
    if !status.ended() {
        let _ = write!(
            html,
            "<form class=\"cancel\" method=\"post\" action=\"/jobs/{job}/cancel\" data-token=\"{token}\">\
             <button>Cancel the job</button></form>",
            token = if view.token_required { "required" } else { "none" },
        );
    }
    if view.report {
        let _ = write!(
            html,
            "<p><a class=\"report\" href=\"/jobs/{job}/report/index.html\">The job's report</a></p>"
        );
    }
    html.push_str("</section>");
    html.push_str(&workers(view));
    html.push_str(&sheet(view));
    html
}

/// The workers present, with their device and what they render for this job.
fn workers(view: &JobView<'_>) -> String {
    if view.workers.is_empty() {
        return "<section class=\"workers\"><h2>Workers</h2><p class=\"empty\">None connected.</p></section>".into();
    }
    // What the heartbeats said, for the tasks still running.
    let mut rendering: HashMap<&str, (&str, &Running)> = HashMap::new();
    for task in view.tasks.iter().filter(|t| t.phase == Phase::Running) {
        if let Some(running) = view.running.get(&task.id) {
            rendering.insert(running.worker.as_str(), (task.id.as_str(), running));
        }
    }
    let mut html = String::from(
        "<section class=\"workers\"><h2>Workers</h2><table><thead><tr><th>worker</th>\
         <th>device</th><th>rendering</th></tr></thead><tbody>",
    );
    for (id, registration) in view.workers {
        let device = match registration {
            // Registered with an earlier coordinator.
            None => "?".to_owned(),
            Some(r) if r.device_name.is_empty() || r.device_name == r.device => escape(&r.device),
            Some(r) => format!("{} ({})", escape(&r.device), escape(&r.device_name)),
        };
        let task = match rendering.get(id.as_str()) {
            Some((task, running)) => format!(
                "{} · iteration {} of {}",
                escape(&task[..8.min(task.len())]),
                running.iteration,
                running.iterations
            ),
            None => String::new(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{device}</td><td>{task}</td></tr>",
            escape(id)
        );
    }
    html.push_str("</tbody></table></section>");
    html
}

/// The contact sheet: a cell per task, in grid order.
fn sheet(view: &JobView<'_>) -> String {
    let status = view.status;
    let report = from_tasks(&status.job, &status.name, view.tasks.to_vec(), view.names);
    let labels = varied_values(&report.tasks);
    let mut html = String::from("<section class=\"sheet\"><h2>Tasks</h2>");
    let total = status.counts.total();
    if view.tasks.len() < total {
        let _ = write!(
            html,
            "<p>The first {} of {total} tasks.</p>",
            view.tasks.len()
        );
    }
    html.push_str("<div class=\"cells\">");
    let job = escape(&status.job);
    for (task, label) in view.tasks.iter().zip(labels) {
        let id = escape(&task.id);
        // Heartbeats say more of running tasks only.
        let running = view
            .running
            .get(&task.id)
            .filter(|_| task.phase == Phase::Running);
        let image = match (view.images, task.phase, running) {
            (false, _, _) => None,
            (true, Phase::Done, _) => Some(format!("/jobs/{job}/tasks/{id}/pastiche.png?w=160")),
            (true, Phase::Running, Some(r)) if r.preview_iteration > 0 => Some(format!(
                "/jobs/{job}/tasks/{id}/preview.png?w=160&amp;v={}",
                r.preview_iteration
            )),
            _ => None,
        };
        let picture = match image {
            Some(src) => format!("<img src=\"{src}\" alt=\"\" loading=\"lazy\">"),
            None => "<div class=\"blank\"></div>".into(),
        };
        let mut caption: Vec<String> = label
            .iter()
            .map(|(param, value)| format!("{}={}", param, escape(value)))
            .collect();
        if label.is_empty() {
            caption.push(format!(
                "{} · {}",
                escape(&input_label(&task.content_key, view.names)),
                escape(&style_label(&task.style_key, view.names))
            ));
        }
        let progress = match running {
            Some(r) if r.iterations > 0 => {
                format!(
                    "<div class=\"progress\">iteration {} of {}</div>{}",
                    r.iteration,
                    r.iterations,
                    sparkline(&r.totals)
                )
            }
            _ => String::new(),
        };
        let title = match task.phase {
            Phase::Failed => format!(" title=\"{}\"", escape(&task.error)),
            _ => String::new(),
        };
        let _ = write!(
            html,
            "<figure class=\"cell {phase}\" id=\"task-{id}\"{title}>{picture}<figcaption>\
             <div class=\"labels\">{caption}</div><div class=\"phase\">{short} · {phase}</div>{progress}\
             </figcaption></figure>",
            phase = task.phase.name(),
            short = escape(&task.id[..8.min(task.id.len())]),
            caption = caption.join("<br>"),
        );
    }
    html.push_str("</div></section>");
    html
}

/// The latest total losses of a running task as a small chart (log scale).
fn sparkline(totals: &std::collections::VecDeque<(u32, f64)>) -> String {
    let points: Vec<(f64, f64)> = totals
        .iter()
        .filter(|(_, total)| total.is_finite() && *total > 0.0)
        .map(|&(i, total)| (f64::from(i), total.log10()))
        .collect();
    if points.len() < 2 {
        return String::new();
    }
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, y)| {
            (lo.min(y), hi.max(y))
        });
    let (w, h) = (150.0, 32.0);
    let path: Vec<String> = points
        .iter()
        .map(|&(x, y)| {
            let px = if x1 > x0 {
                (x - x0) / (x1 - x0) * w
            } else {
                0.0
            };
            let py = if hi > lo {
                (hi - y) / (hi - lo) * (h - 2.0) + 1.0
            } else {
                h / 2.0
            };
            format!("{px:.1},{py:.1}")
        })
        .collect();
    format!(
        "<svg class=\"losses\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\">\
         <title>total loss, iterations {x0} to {x1}</title>\
         <polyline fill=\"none\" stroke=\"currentColor\" points=\"{}\"/></svg>",
        path.join(" ")
    )
}
