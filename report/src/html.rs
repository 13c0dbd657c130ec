//! `index.html`: one self-contained page (inline CSS, no script) that shows the
//! contact sheet, the loss plots and the tables, and links every pastiche at full
//! size. Every link is relative, so the page opens from a local directory or from
//! the object store (static website hosting) without a server of its own.

use std::fmt::Write;

use pastiche_spec::layout;

use crate::axes::{Axes, SheetAxes};
use crate::load::JobData;
use crate::plots::Plot;
use crate::table::Summary;
use crate::{Outcome, Placement, ReportJob, CONTACT_SHEET, SUMMARY_CSV, SUMMARY_MD};

/// Where the page finds a task's files.
pub(crate) struct Links {
    placement: Placement,
}

impl Links {
    pub(crate) fn new(placement: Placement) -> Links {
        Links { placement }
    }

    /// The href of a file of a task's result (`attempt`'s) from the report
    /// directory; for a standalone report, also the name of the copy it carries.
    fn task_file(&self, task: &str, attempt: u32, file: &str) -> String {
        match self.placement {
            // jobs/<job>/report/ -> jobs/<job>/tasks/<task>/attempt-<n>/<file>
            Placement::InStore => {
                let in_job = layout::attempt_file_in_job(task, attempt, file);
                format!("../{}", in_job.unwrap_or_default())
            }
            Placement::Standalone => format!("tasks/{task}/{file}"),
        }
    }

    pub(crate) fn pastiche(&self, task: &str, attempt: u32) -> String {
        self.task_file(task, attempt, layout::PASTICHE_PNG)
    }

    pub(crate) fn losses(&self, task: &str, attempt: u32) -> String {
        self.task_file(task, attempt, layout::LOSSES_CSV)
    }
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem; color: #1b1b1b; max-width: 110rem; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #555; margin-top: 0; }
nav a { margin-right: 1rem; }
img.sheet, img.plot { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure { margin: 1rem 0; }
figcaption { color: #555; font-size: 0.9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
tr.failed td, tr.cancelled td { background: #fdecec; }
tr.unfinished td { background: #f4f4f4; color: #666; }
td.error { color: #b01818; white-space: normal; min-width: 16rem; }
.outcome-failed, .outcome-cancelled { color: #b01818; font-weight: 600; }
code { font-size: 0.9em; }
";

pub(crate) fn index(
    job: &ReportJob,
    axes: &Axes,
    layout: &SheetAxes,
    data: &JobData<'_>,
    plots: &[Plot],
    summary: &Summary,
    links: &Links,
) -> String {
    let mut h = String::new();
    let name = escape_html(&job.name);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{name} - Pastiche report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>{name}</h1>\n<p class=\"meta\">job <code>{}</code> &middot; {}</p>\n",
        escape_html(&job.id),
        escape_html(&summary.counts())
    );
    let has_study = !summary.studies.is_empty();
    h.push_str("<nav><a href=\"#parameters\">Parameters</a><a href=\"#sheet\">Contact sheet</a><a href=\"#losses\">Loss curves</a><a href=\"#tasks\">Tasks</a>");
    if has_study {
        h.push_str("<a href=\"#study\">By backbone</a>");
    }
    h.push_str("<a href=\"#files\">Files</a></nav>\n");

    // Parameters: what varies, and what every task shares.
    h.push_str("<section id=\"parameters\">\n<h2>Parameters</h2>\n<table>\n");
    for axis in &axes.varied {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape_html(axis.param.name()),
            escape_html(&axis.values.join(", "))
        );
    }
    for (param, value) in &axes.fixed {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td>{} <small>(all tasks)</small></td></tr>",
            escape_html(param.name()),
            escape_html(value)
        );
    }
    h.push_str("</table>\n</section>\n");

    // The contact sheet.
    let names = |list: &[usize]| {
        let names: Vec<&str> = list.iter().map(|&a| axes.varied[a].param.name()).collect();
        if names.is_empty() {
            "-".to_owned()
        } else {
            escape_html(&names.join(" \u{d7} "))
        }
    };
    let _ = write!(
        h,
        "<section id=\"sheet\">\n<h2>Contact sheet</h2>\n<p>Rows: {}; columns: {}. \
         Crossed cells failed or were cancelled. Click for full size.</p>\n\
         <a href=\"{CONTACT_SHEET}\"><img class=\"sheet\" src=\"{CONTACT_SHEET}\" alt=\"contact sheet of {name}\"></a>\n</section>\n",
        names(&layout.rows),
        names(&layout.cols)
    );

    // Loss curves.
    h.push_str("<section id=\"losses\">\n<h2>Loss curves</h2>\n");
    for plot in plots {
        let _ = writeln!(
            h,
            "<figure><a href=\"{0}\"><img class=\"plot\" src=\"{0}\" alt=\"{1}\"></a><figcaption>{1}</figcaption></figure>",
            escape_html(&plot.file),
            escape_html(&plot.title)
        );
    }
    h.push_str("</section>\n");

    // One row per task, with links to its files.
    h.push_str("<section id=\"tasks\">\n<h2>Tasks</h2>\n<div class=\"scroll\"><table>\n<tr>");
    let header = summary.header(false);
    for cell in &header {
        let _ = write!(h, "<th>{}</th>", escape_html(cell));
    }
    h.push_str("<th>files</th></tr>\n");
    let first_number = 4 + summary.params.len();
    for (row, cells) in summary.rows.iter().zip(summary.display_rows()) {
        let _ = write!(h, "<tr class=\"{}\">", row.outcome.label());
        for (i, cell) in cells.iter().enumerate() {
            let text = escape_html(cell);
            match i {
                0 if row.has_pastiche => {
                    let _ = write!(
                        h,
                        "<td><a href=\"{}\" title=\"{}\"><code>{text}</code></a></td>",
                        escape_html(&links.pastiche(&row.id, row.result_attempt)),
                        escape_html(&row.id)
                    );
                }
                0 => {
                    let _ = write!(
                        h,
                        "<td title=\"{}\"><code>{text}</code></td>",
                        escape_html(&row.id)
                    );
                }
                1 => {
                    let _ = write!(
                        h,
                        "<td class=\"outcome-{}\">{text}</td>",
                        row.outcome.label()
                    );
                }
                2 if !cell.is_empty() => {
                    let _ = write!(h, "<td class=\"error\">{text}</td>");
                }
                i if i >= first_number && i < cells.len() - 1 => {
                    let _ = write!(h, "<td class=\"num\">{text}</td>");
                }
                _ => {
                    let _ = write!(h, "<td>{text}</td>");
                }
            }
        }
        h.push_str("<td>");
        let mut files = Vec::new();
        if row.has_pastiche {
            files.push(format!(
                "<a href=\"{}\">pastiche</a>",
                escape_html(&links.pastiche(&row.id, row.result_attempt))
            ));
        }
        if row.has_losses {
            files.push(format!(
                "<a href=\"{}\">losses</a>",
                escape_html(&links.losses(&row.id, row.result_attempt))
            ));
        }
        h.push_str(&files.join(" "));
        h.push_str("</td></tr>\n");
    }
    h.push_str("</table></div>\n</section>\n");

    // The founding study's layout.
    if has_study {
        h.push_str("<section id=\"study\">\n<h2>Losses by backbone</h2>\n");
        for study in &summary.studies {
            let _ = write!(h, "<h3>{}</h3>\n<table>\n<tr>", escape_html(&study.title));
            for cell in &study.header {
                let _ = write!(h, "<th>{}</th>", escape_html(cell));
            }
            h.push_str("</tr>\n");
            for row in &study.rows {
                h.push_str("<tr>");
                for cell in row {
                    let _ = write!(h, "<td class=\"num\">{}</td>", escape_html(cell));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table>\n");
            if !study.notes.is_empty() {
                h.push_str("<ul>");
                for note in &study.notes {
                    let _ = write!(h, "<li class=\"error\">{}</li>", escape_html(note));
                }
                h.push_str("</ul>\n");
            }
        }
        h.push_str("</section>\n");
    }

    // Problems, then the files.
    let problems: Vec<String> = data
        .notes
        .iter()
        .cloned()
        .chain(data.tasks.iter().flat_map(|t| {
            t.notes
                .iter()
                .map(move |n| format!("task {}: {n}", t.task.id))
        }))
        .chain(data.tasks.iter().filter_map(|t| match &t.task.outcome {
            Outcome::Done | Outcome::Unfinished => None,
            other => Some(format!("task {}: {}", t.task.id, other.describe())),
        }))
        .collect();
    if !problems.is_empty() {
        h.push_str("<section id=\"problems\">\n<h2>Problems</h2>\n<ul>\n");
        for problem in &problems {
            let _ = writeln!(h, "<li>{}</li>", escape_html(problem));
        }
        h.push_str("</ul>\n</section>\n");
    }
    let _ = write!(
        h,
        "<section id=\"files\">\n<h2>Files</h2>\n<ul>\n\
         <li><a href=\"{SUMMARY_CSV}\">{SUMMARY_CSV}</a>: one row per task, exact losses</li>\n\
         <li><a href=\"{SUMMARY_MD}\">{SUMMARY_MD}</a>: the same, and the tables by backbone</li>\n\
         <li><a href=\"{CONTACT_SHEET}\">{CONTACT_SHEET}</a></li>\n</ul>\n</section>\n</body>\n</html>\n"
    );
    h
}

/// Text safe in HTML content and in quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped() {
        assert_eq!(
            escape_html("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(
            Links::new(Placement::InStore).pastiche("ab", 2),
            "../tasks/ab/attempt-2/pastiche.png"
        );
        assert_eq!(
            Links::new(Placement::Standalone).losses("ab", 2),
            "tasks/ab/losses.csv"
        );
    }
}
