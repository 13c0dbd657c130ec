//! A job's report: what a researcher or an artist looks at when a grid is done.
//!
//! ```text
//! index.html                 ties it together; opens from a directory or the store, no server
//! contact-sheet.png          every pastiche of the job on one labelled grid
//! plots/loss-<param>.svg     content, style and total loss against iteration, per varied parameter
//! summary.csv, summary.md    one row per task; the founding study's tables when the backbone varies
//! tasks/<task>/...           (standalone reports only) copies of the pastiches and loss logs
//! ```
//!
//! [`build_report`] reads the job's outputs from the store and returns the files;
//! [`write_to_store`] puts them under `jobs/<job>/report/`, [`write_to_dir`] into a
//! local directory. Tasks that failed, were cancelled or have not finished are marked,
//! never a reason to fail the report. No libtorch: the coordinator calls this.

mod axes;
mod font;
mod html;
mod load;
mod plots;
mod sheet;
mod slice;
mod table;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use pastiche_spec::layout::{self, BadId};
use pastiche_spec::store::{Store, StoreError};
use pastiche_spec::RenderParams;

pub use axes::{input_label, style_label, varied_values, Param};
pub use html::escape_html;
pub use slice::slice;

/// How a task ended, as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed {
        error: String,
    },
    Cancelled,
    /// Queued or running when the report was built.
    Unfinished,
}

impl Outcome {
    /// `done`, `failed`, `cancelled` or `unfinished`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Unfinished => "unfinished",
        }
    }

    /// The label, with the error of a failed task.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Failed { error } => format!("failed: {error}"),
            other => other.label().to_owned(),
        }
    }
}

/// One task of the job: its parameters, its inputs (store keys) and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportTask {
    pub id: String,
    pub params: RenderParams,
    pub content_key: String,
    pub style_key: String,
    /// The content and style as people know them (see [`input_label`] and
    /// [`style_label`]): what the report shows, where the keys are links.
    pub content_name: String,
    pub style_name: String,
    pub outcome: Outcome,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReportJob {
    pub id: String,
    pub name: String,
    pub tasks: Vec<ReportTask>,
    /// Which part of the job a report of some of its tasks shows (see
    /// [`slice()`]); `None` for the whole job.
    pub slice: Option<String>,
}

/// Where the report will be read from, which decides how it links the pastiches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Placement {
    /// Under `jobs/<job>/report/` in the store: links go to `../tasks/<task>/...`.
    #[default]
    InStore,
    /// A directory of its own (`pastiche report --out DIR`): the report carries
    /// copies of the pastiches and loss logs under `tasks/<task>/`.
    Standalone,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportOptions {
    /// The parameter along the contact sheet's rows (a grid-file name: `backbone`,
    /// `style_weight`, `init`, `content`, `style`, `style_layers`, `size`, ...).
    pub rows: Option<String>,
    /// The parameter along its columns; the other varied parameters are nested in it.
    pub cols: Option<String>,
    pub placement: Placement,
}

/// One file of the report; `name` is relative to the report directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    BadId(#[from] BadId),
    #[error("--{flag}: unknown parameter '{name}'; {}", choices(.valid))]
    UnknownParameter {
        flag: &'static str,
        name: String,
        valid: Vec<String>,
    },
    #[error("--{flag}: '{name}' does not vary in this job; {}", choices(.valid))]
    NotVaried {
        flag: &'static str,
        name: String,
        valid: Vec<String>,
    },
    #[error("--only {filter}: {why}")]
    BadFilter { filter: String, why: String },
    #[error("--only {filter}: no task of the job has it; {}", values_of(.values))]
    EmptySlice { filter: String, values: Vec<String> },
    #[error(
        "{tasks} tasks are more than the {MAX_REPORT_TASKS} one report shows; \
         report slices of the job with --only PARAM=VALUE ({})",
        choices(.varied)
    )]
    TooManyTasks { tasks: usize, varied: Vec<String> },
    #[error("--rows and --cols both name '{0}'")]
    SameAxis(String),
    #[error("'{0}' is not a file name inside the report")]
    BadFileName(String),
    #[error("cannot encode the contact sheet: {0}")]
    Image(#[from] image::ImageError),
    #[error("cannot draw {name}: {message}")]
    Plot { name: String, message: String },
    // The cause is in the message, not a `#[source]`: error reports print the
    // chain, and would print it twice.
    #[error("cannot write {}: {cause}", .path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

fn choices(valid: &[String]) -> String {
    if valid.is_empty() {
        "no parameter varies in this job".to_owned()
    } else {
        format!(
            "choose one of the parameters that vary in this job: {}",
            valid.join(", ")
        )
    }
}

fn values_of(values: &[String]) -> String {
    if values.is_empty() {
        "the tasks left have no such value".to_owned()
    } else {
        format!("it takes {}", values.join(", "))
    }
}

/// The most tasks one report shows: a contact sheet of 2,000 cells is already
/// about 60 megapixels, and every pastiche is read into memory.
pub const MAX_REPORT_TASKS: usize = 2_000;

pub const CONTACT_SHEET: &str = "contact-sheet.png";
pub const SUMMARY_CSV: &str = "summary.csv";
pub const SUMMARY_MD: &str = "summary.md";
pub const INDEX_HTML: &str = "index.html";

/// Reads the job's outputs from `store` and builds every file of its report.
pub async fn build_report(
    store: &Store,
    job: &ReportJob,
    options: &ReportOptions,
) -> Result<Vec<ReportFile>, ReportError> {
    layout::check_id(&job.id)?;
    for task in &job.tasks {
        layout::check_id(&task.id)?;
    }
    // Bad --rows/--cols, or too many tasks, are refused before anything is read.
    let axes = axes::Axes::analyse(&job.tasks);
    if job.tasks.len() > MAX_REPORT_TASKS {
        return Err(ReportError::TooManyTasks {
            tasks: job.tasks.len(),
            varied: axes.varied_names(),
        });
    }
    let sheet_axes = axes.choose(options.rows.as_deref(), options.cols.as_deref())?;

    let keep_originals = options.placement == Placement::Standalone;
    let data = load::load(store, job, keep_originals).await?;

    let mut files = Vec::new();
    let sheet = sheet::contact_sheet(job, &axes, &sheet_axes, &data)?;
    files.push(ReportFile {
        name: CONTACT_SHEET.to_owned(),
        bytes: sheet,
    });
    let plots = plots::loss_plots(job, &axes, &data)?;
    for plot in &plots {
        files.push(ReportFile {
            name: plot.file.clone(),
            bytes: plot.svg.clone().into_bytes(),
        });
    }
    let summary = table::Summary::new(job, &axes, &data);
    files.push(ReportFile {
        name: SUMMARY_CSV.to_owned(),
        bytes: summary.csv().into_bytes(),
    });
    files.push(ReportFile {
        name: SUMMARY_MD.to_owned(),
        bytes: summary.markdown().into_bytes(),
    });

    let links = html::Links::new(options.placement);
    if keep_originals {
        for task in &data.tasks {
            if let Some(bytes) = &task.pastiche_bytes {
                files.push(ReportFile {
                    name: links.pastiche(&task.task.id, task.result_attempt),
                    bytes: bytes.clone(),
                });
            }
            if let Some(bytes) = &task.losses_bytes {
                files.push(ReportFile {
                    name: links.losses(&task.task.id, task.result_attempt),
                    bytes: bytes.clone(),
                });
            }
        }
    }
    let index = html::index(job, &axes, &sheet_axes, &data, &plots, &summary, &links);
    files.push(ReportFile {
        name: INDEX_HTML.to_owned(),
        bytes: index.into_bytes(),
    });
    Ok(files)
}

/// Where a job's report in the store opens: `jobs/<job>/report/index.html`.
pub fn index_key(job_id: &str) -> Result<String, BadId> {
    Ok(format!("{}{INDEX_HTML}", layout::report_prefix(job_id)?))
}

/// Puts the report under `jobs/<job>/report/` (see [`layout::report_prefix`]).
pub async fn write_to_store(
    store: &Store,
    job_id: &str,
    files: &[ReportFile],
) -> Result<(), ReportError> {
    let prefix = layout::report_prefix(job_id)?;
    for file in files {
        check_name(&file.name)?;
    }
    for file in files {
        store
            .put(&format!("{prefix}{}", file.name), file.bytes.clone())
            .await?;
    }
    // The prefix is the report's own: whatever an earlier report left there
    // (a plot for a parameter that no longer varies) goes, so nothing stale is
    // found beside index.html. Deleted after the writes, so a reader never
    // finds the report missing.
    let written: std::collections::HashSet<String> = files
        .iter()
        .map(|file| format!("{prefix}{}", file.name))
        .collect();
    for key in store.list(&prefix).await? {
        if !written.contains(&key) {
            store.delete(&key).await?;
        }
    }
    Ok(())
}

/// Writes the report into `dir` (created if missing); each file is written to a
/// temporary name and renamed, so a reader never sees half a file.
pub fn write_to_dir(dir: &Path, files: &[ReportFile]) -> Result<(), ReportError> {
    for file in files {
        check_name(&file.name)?;
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |cause| ReportError::Io { path, cause }
    };
    for file in files {
        let target = dir.join(&file.name);
        let parent = target.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = parent.join(format!(".{base}.tmp-{}", std::process::id()));
        std::fs::write(&temp, &file.bytes).map_err(io(&temp))?;
        if let Err(cause) = std::fs::rename(&temp, &target) {
            let _ = std::fs::remove_file(&temp);
            return Err(ReportError::Io {
                path: target,
                cause,
            });
        }
    }
    Ok(())
}

/// Report file names are relative paths of plain segments: nothing climbs out.
fn check_name(name: &str) -> Result<(), ReportError> {
    let ok = !name.is_empty()
        && !name.contains('\\')
        && name.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && !segment.contains('\0')
                && !segment.starts_with(".")
        });
    if ok {
        Ok(())
    } else {
        Err(ReportError::BadFileName(name.to_owned()))
    }
}

#[cfg(test)]
mod names {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_report() {
        for good in [
            "index.html",
            "tasks/ab12/pastiche.png",
            "plots/loss-size.svg",
        ] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            "/etc/x",
            "../x",
            "a/../../x",
            "a//b",
            "a\\b",
            ".hidden",
            "a/./b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bad_name_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ReportFile {
                name: "ok.txt".into(),
                bytes: b"x".to_vec(),
            },
            ReportFile {
                name: "../escape.txt".into(),
                bytes: b"x".to_vec(),
            },
        ];
        assert!(matches!(
            write_to_dir(&dir.path().join("r"), &files),
            Err(ReportError::BadFileName(_))
        ));
        assert!(!dir.path().join("r").exists());
        assert!(!dir.path().join("escape.txt").exists());
    }
}
