//! The summary table, one row per task, as CSV and Markdown; and, when the
//! backbone varies, the founding study's tables (iterations down, each backbone's
//! content and style loss side by side) for each group of otherwise equal tasks.

use std::collections::BTreeMap;

use pastiche_spec::{Backbone, LossRecord};

use crate::axes::{Axes, Param};
use crate::load::JobData;
use crate::sheet::compact;
use crate::{Outcome, ReportJob};

pub(crate) struct Row {
    pub id: String,
    pub outcome: Outcome,
    pub attempts: u32,
    /// The task's value of each varied parameter.
    pub values: Vec<String>,
    /// beta as the render chose it (`style_weight = "auto"`), from task.json.
    pub chosen_style_weight: Option<f64>,
    /// The loss record at each of [`Summary::iterations`], if logged.
    pub at: Vec<Option<LossRecord>>,
    /// The last record of the log.
    pub last: Option<LossRecord>,
    /// The attempt whose files are the result; 0 for none.
    pub result_attempt: u32,
    pub has_pastiche: bool,
    pub has_losses: bool,
    pub notes: Vec<String>,
}

/// A table in the founding study's layout.
pub(crate) struct Study {
    /// The other parameters the group's tasks share, as `name=value`.
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Tasks of the group without losses, and why.
    pub notes: Vec<String>,
}

pub(crate) struct Summary {
    pub job_id: String,
    pub job_name: String,
    pub slice: Option<String>,
    pub params: Vec<Param>,
    /// Whether some task chose its style weight (a `chosen_style_weight` column).
    pub auto_style_weight: bool,
    /// Every iteration any task logged, ascending.
    pub iterations: Vec<u32>,
    pub rows: Vec<Row>,
    pub studies: Vec<Study>,
    /// Problems with the job's inputs.
    pub notes: Vec<String>,
}

impl Summary {
    pub(crate) fn new(job: &ReportJob, axes: &Axes, data: &JobData<'_>) -> Summary {
        let mut iterations: Vec<u32> = data
            .tasks
            .iter()
            .flat_map(|t| t.losses.iter().map(|r| r.iteration))
            .collect();
        iterations.sort_unstable();
        iterations.dedup();
        let rows: Vec<Row> = data
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // A log that repeats an iteration (a retried attempt): the last row counts.
                let by_iteration: BTreeMap<u32, LossRecord> =
                    t.losses.iter().map(|r| (r.iteration, *r)).collect();
                Row {
                    id: t.task.id.clone(),
                    outcome: t.task.outcome.clone(),
                    attempts: t.task.attempts,
                    values: axes
                        .varied
                        .iter()
                        .map(|a| a.values[a.of_task[i]].clone())
                        .collect(),
                    chosen_style_weight: t.chosen_style_weight,
                    at: iterations
                        .iter()
                        .map(|n| by_iteration.get(n).copied())
                        .collect(),
                    last: t.losses.last().copied(),
                    result_attempt: t.result_attempt,
                    has_pastiche: t.has_pastiche,
                    has_losses: t.has_losses,
                    notes: t.notes.clone(),
                }
            })
            .collect();
        let studies = studies(axes, &rows, &iterations);
        Summary {
            job_id: job.id.clone(),
            job_name: job.name.clone(),
            slice: job.slice.clone(),
            params: axes.varied.iter().map(|a| a.param).collect(),
            auto_style_weight: job.tasks.iter().any(|t| t.params.style_weight.is_auto()),
            iterations,
            rows,
            studies,
            notes: data.notes.clone(),
        }
    }

    /// The header of the per-task table; `with_final` adds the last logged row.
    pub(crate) fn header(&self, with_final: bool) -> Vec<String> {
        let mut header: Vec<String> = ["task", "outcome", "error", "attempts"]
            .map(String::from)
            .to_vec();
        header.extend(self.params.iter().map(|p| p.name().to_owned()));
        if self.auto_style_weight {
            header.push("chosen_style_weight".into());
        }
        for n in &self.iterations {
            header.extend([
                format!("content@{n}"),
                format!("style@{n}"),
                format!("total@{n}"),
            ]);
        }
        if with_final {
            header.extend(
                [
                    "final_iteration",
                    "final_content",
                    "final_style",
                    "final_total",
                ]
                .map(String::from),
            );
        }
        header.push("notes".into());
        header
    }

    /// One row of the per-task table, losses formatted by `number`.
    fn cells(&self, row: &Row, with_final: bool, number: impl Fn(f64) -> String) -> Vec<String> {
        let error = match &row.outcome {
            Outcome::Failed { error } => error.clone(),
            _ => String::new(),
        };
        let mut cells = vec![
            row.id.clone(),
            row.outcome.label().to_owned(),
            error,
            row.attempts.to_string(),
        ];
        cells.extend(row.values.iter().cloned());
        if self.auto_style_weight {
            cells.push(row.chosen_style_weight.map(&number).unwrap_or_default());
        }
        for record in &row.at {
            match record {
                Some(r) => cells.extend([number(r.content), number(r.style), number(r.total)]),
                None => cells.extend([String::new(), String::new(), String::new()]),
            }
        }
        if with_final {
            match &row.last {
                Some(r) => cells.extend([
                    r.iteration.to_string(),
                    number(r.content),
                    number(r.style),
                    number(r.total),
                ]),
                None => cells.extend([String::new(), String::new(), String::new(), String::new()]),
            }
        }
        cells.push(row.notes.join("; "));
        cells
    }

    /// `summary.csv`: exact numbers (they read back as the f64s that were logged).
    pub(crate) fn csv(&self) -> String {
        let mut out = String::new();
        let mut line = |cells: Vec<String>| {
            let fields: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        };
        line(self.header(true));
        for row in &self.rows {
            line(self.cells(row, true, |v| v.to_string()));
        }
        out
    }

    /// The per-task table for people: short ids, rounded losses.
    pub(crate) fn display_rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|row| {
                let mut cells = self.cells(row, false, compact);
                cells[0] = row.id.chars().take(8).collect();
                cells
            })
            .collect()
    }

    /// `summary.md`: the per-task table, then the study's tables.
    pub(crate) fn markdown(&self) -> String {
        let mut out = format!(
            "# {} (job {})\n\n{}\n\n## Tasks\n\n",
            md(&self.job_name),
            md(&self.job_id),
            md(&self.counts())
        );
        out.push_str(&md_table(&self.header(false), &self.display_rows()));
        if !self.studies.is_empty() {
            out.push_str("\n## Losses by backbone\n");
            for study in &self.studies {
                out.push_str(&format!("\n### {}\n\n", md(&study.title)));
                out.push_str(&md_table(&study.header, &study.rows));
                for note in &study.notes {
                    out.push_str(&format!("\n- {}", md(note)));
                }
                if !study.notes.is_empty() {
                    out.push('\n');
                }
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\n## Problems\n\n");
            for note in &self.notes {
                out.push_str(&format!("- {}\n", md(note)));
            }
        }
        out
    }

    /// `6 tasks: 4 done, 1 failed, 1 cancelled`.
    pub(crate) fn counts(&self) -> String {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for row in &self.rows {
            let label = row.outcome.label();
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        let parts: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
        let counts = format!("{} tasks: {}", self.rows.len(), parts.join(", "));
        match &self.slice {
            Some(slice) => format!("a slice of the job, {slice}; {counts}"),
            None => counts,
        }
    }
}

/// The study's tables: one per group of tasks equal in everything but the backbone.
fn studies(axes: &Axes, rows: &[Row], iterations: &[u32]) -> Vec<Study> {
    let Some(backbone) = axes.find(Param::render("backbone")) else {
        return Vec::new();
    };
    // What the backbone decides (its default layers) does not split a group.
    let others: Vec<usize> = (0..axes.varied.len())
        .filter(|&a| !axes.determines[backbone][a])
        .collect();
    let mut groups: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    for t in 0..rows.len() {
        groups.entry(axes.key(&others, t)).or_default().push(t);
    }
    let names = &axes.varied[backbone].values;
    groups
        .into_iter()
        .map(|(key, tasks)| {
            let title = if others.is_empty() {
                "all tasks".to_owned()
            } else {
                axes.describe(&others, &key)
                    .iter()
                    .map(|l| l.text())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            // Columns: each backbone of the group, in the usual order.
            let mut members: Vec<(usize, usize)> = tasks
                .iter()
                .map(|&t| (axes.varied[backbone].of_task[t], t))
                .collect();
            members.sort();
            let mut header = vec!["Runs".to_owned()];
            for (b, _) in &members {
                let name = study_name(&names[*b]);
                header.extend([format!("{name} Content Loss"), format!("{name} Style Loss")]);
            }
            let logged: Vec<usize> = (0..iterations.len())
                .filter(|&i| members.iter().any(|(_, t)| rows[*t].at[i].is_some()))
                .collect();
            let table = logged
                .iter()
                .map(|&i| {
                    let mut cells = vec![iterations[i].to_string()];
                    for (_, t) in &members {
                        match rows[*t].at[i] {
                            Some(r) => cells.extend([compact(r.content), compact(r.style)]),
                            None => cells.extend([String::new(), String::new()]),
                        }
                    }
                    cells
                })
                .collect();
            let notes = members
                .iter()
                .filter(|(_, t)| rows[*t].outcome != Outcome::Done || !rows[*t].has_losses)
                .map(|(b, t)| {
                    let row = &rows[*t];
                    let what = if row.outcome == Outcome::Done {
                        "no loss log".to_owned()
                    } else {
                        row.outcome.describe()
                    };
                    format!("{} (task {}): {what}", study_name(&names[*b]), row.id)
                })
                .collect();
            Study {
                title,
                header,
                rows: table,
                notes,
            }
        })
        .collect()
}

/// Backbones as the founding study names them.
fn study_name(backbone: &str) -> String {
    match backbone.parse::<Backbone>() {
        Ok(backbone) => backbone.title().to_owned(),
        Err(_) => backbone.to_ascii_uppercase(),
    }
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Text safe in a Markdown table cell: no line breaks, pipes or raw HTML.
fn md(value: &str) -> String {
    value
        .replace(['\r', '\n'], " ")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
}

fn md_table(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| md(c)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(header);
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// Parses a CSV file back into rows (quoted fields included): for the tests.
#[cfg(test)]
pub(crate) fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_escaped() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        let text = format!("{},{}\n1,2\n", csv_field("a,\"b\"\nc"), csv_field("d"));
        assert_eq!(parse_csv(&text), [vec!["a,\"b\"\nc", "d"], vec!["1", "2"]]);
        assert_eq!(md("a|b\n<i>"), "a\\|b &lt;i&gt;");
        assert_eq!(study_name("vgg16"), "VGG16");
        assert_eq!(study_name("googlenet"), "GoogLeNet");
        assert_eq!(study_name("inception_v3"), "Inception v3");
    }
}
