//! Where things live under a farm's storage root (a local directory or
//! `s3://bucket/prefix`):
//!
//! ```text
//! inputs/<sha256>.<ext>                   content-addressed uploads from the CLI
//! jobs/<job>/job.toml                     the grid as submitted
//! jobs/<job>/tasks/<task>/task.json       the result's record: parameters, timings, worker,
//!                                         device, and the attempt whose files are the result
//! jobs/<job>/tasks/<task>/attempt-<n>/pastiche.png   attempt n's pastiche
//! jobs/<job>/tasks/<task>/attempt-<n>/losses.csv     iteration,content,style,tv,total
//! jobs/<job>/tasks/<task>/preview.png     the latest iterate stored while it rendered (opt-in)
//! jobs/<job>/tasks/<task>/checkpoint.safetensors   where its render stood at the latest
//!                                         checkpoint, for the next attempt to resume
//!                                         from; deleted once the task is done
//! jobs/<job>/report/                      contact sheet, loss plots, summary table
//! ```
//!
//! Results are fenced: each attempt stores its files under its own prefix, and
//! `task.json` is created once, by the first attempt to finish (a conditional
//! write). An attempt whose lease ran out while it rendered (a paused worker) can
//! therefore never change a task that another attempt completed: readers go
//! through `task.json` to the winner's files.
//!
//! Job and task ids become path segments, so they are checked here: nothing built
//! from user input can climb out of its prefix.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid id (lowercase letters, digits, '-' and '_' only)")]
pub struct BadId(pub String);

/// Ids are one path segment of safe characters.
pub fn check_id(id: &str) -> Result<&str, BadId> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(id)
    } else {
        Err(BadId(id.to_owned()))
    }
}

/// `inputs/<sha256>.<ext>`, the extension lowercased and limited to safe characters.
pub fn input_key(sha256: &str, extension: &str) -> String {
    let ext: String = extension
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    if ext.is_empty() {
        format!("inputs/{sha256}")
    } else {
        format!("inputs/{sha256}.{ext}")
    }
}

/// Whether `key` has exactly the shape [`input_key`] gives an upload:
/// `inputs/<64 lowercase hex digits>`, then optionally `.<ext>` of 1 to 16 ASCII
/// letters or digits. Nothing else under `inputs/` is an uploaded input.
pub fn is_input_key(key: &str) -> bool {
    let Some(name) = key.strip_prefix("inputs/") else {
        return false;
    };
    let (digest, extension) = match name.split_once('.') {
        Some((digest, extension)) => (digest, Some(extension)),
        None => (name, None),
    };
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    digest.len() == 64
        && digest.bytes().all(hex)
        && extension.is_none_or(|e| {
            (1..=16).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// The key a local file gets when it is uploaded: its content's digest, and its
/// extension.
pub fn input_key_of(path: &std::path::Path, bytes: &[u8]) -> String {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    input_key(&crate::sha256_hex(bytes), extension)
}

/// Whether a grid's file entry names an object already (an uploaded input's
/// key, or an `s3://` URL) rather than a local path.
pub fn is_stored(entry: &str) -> bool {
    entry.starts_with("inputs/") || entry.starts_with("s3://")
}

pub fn job_prefix(job: &str) -> Result<String, BadId> {
    Ok(format!("jobs/{}/", check_id(job)?))
}

pub fn job_grid_key(job: &str) -> Result<String, BadId> {
    Ok(format!("{}job.toml", job_prefix(job)?))
}

pub fn task_prefix(job: &str, task: &str) -> Result<String, BadId> {
    Ok(format!("{}tasks/{}/", job_prefix(job)?, check_id(task)?))
}

/// A task's pastiche (in its attempt's prefix).
pub const PASTICHE_PNG: &str = "pastiche.png";
/// A task's loss log (see [`LOSSES_CSV_HEADER`](crate::LOSSES_CSV_HEADER)), in its
/// attempt's prefix.
pub const LOSSES_CSV: &str = "losses.csv";
/// A finished task's record (see [`FinishedTask`](crate::FinishedTask)), in the
/// task's prefix; stored last and once, so its presence says that the winning
/// attempt's files are there.
pub const TASK_JSON: &str = "task.json";
/// The latest iterate of a task being rendered (opt-in).
pub const PREVIEW_PNG: &str = "preview.png";
/// The latest checkpoint of a task's render (the engine's `Checkpoint`, in the
/// safetensors format), in the task's prefix.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// The files each attempt stores under its own prefix, before the record.
pub const ATTEMPT_FILES: [&str; 2] = [PASTICHE_PNG, LOSSES_CSV];

/// `jobs/<job>/tasks/<task>/task.json`: the record of the task's result.
pub fn task_record_key(job: &str, task: &str) -> Result<String, BadId> {
    Ok(format!("{}{TASK_JSON}", task_prefix(job, task)?))
}

/// `tasks/<task>/attempt-<n>/<name>`: a file of attempt `n`, relative to its
/// job's prefix (as a job's report links it), for `name` one of [`ATTEMPT_FILES`].
pub fn attempt_file_in_job(task: &str, attempt: u32, name: &str) -> Result<String, BadId> {
    Ok(format!(
        "tasks/{}/attempt-{attempt}/{name}",
        check_id(task)?
    ))
}

/// `jobs/<job>/tasks/<task>/attempt-<n>/<name>`, for `name` one of [`ATTEMPT_FILES`].
pub fn attempt_file_key(job: &str, task: &str, attempt: u32, name: &str) -> Result<String, BadId> {
    Ok(format!(
        "{}{}",
        job_prefix(job)?,
        attempt_file_in_job(task, attempt, name)?
    ))
}

/// The task and attempt of a key under a job's prefix that is in an attempt's
/// files (`tasks/<task>/attempt-<n>/...`, relative to `jobs/<job>/`).
pub fn attempt_of(key_in_job: &str) -> Option<(&str, u32)> {
    let rest = key_in_job.strip_prefix("tasks/")?;
    let (task, rest) = rest.split_once('/')?;
    let (segment, _) = rest.split_once('/')?;
    let attempt = segment.strip_prefix("attempt-")?.parse().ok()?;
    Some((task, attempt))
}

/// The task whose record a key under a job's prefix is (`tasks/<task>/task.json`,
/// relative to `jobs/<job>/`).
pub fn record_of(key_in_job: &str) -> Option<&str> {
    let rest = key_in_job.strip_prefix("tasks/")?;
    let task = rest.strip_suffix(TASK_JSON)?.strip_suffix('/')?;
    (!task.contains('/')).then_some(task)
}

/// Where a worker stores a task's current iterate while it renders.
pub fn preview_key(job: &str, task: &str) -> Result<String, BadId> {
    Ok(format!("{}{PREVIEW_PNG}", task_prefix(job, task)?))
}

/// Where a worker stores a task's latest checkpoint: one object per task, which
/// any attempt overwrites and any later attempt resumes from. One object is
/// written whole or not at all (a put is atomic per object, on a directory
/// store as on S3), so a reader sees the previous checkpoint or the next,
/// never part of one. Every attempt of a task renders the same iterations, so
/// whichever attempt wrote it, it is a point on the same render.
pub fn checkpoint_key(job: &str, task: &str) -> Result<String, BadId> {
    Ok(format!("{}{CHECKPOINT}", task_prefix(job, task)?))
}

/// Whether a key under a job's prefix is a task's checkpoint
/// (`tasks/<task>/checkpoint.safetensors`, relative to `jobs/<job>/`): not a
/// result, and possibly large.
pub fn is_checkpoint(key_in_job: &str) -> bool {
    key_in_job
        .strip_prefix("tasks/")
        .and_then(|rest| rest.strip_suffix(CHECKPOINT))
        .and_then(|task| task.strip_suffix('/'))
        .is_some_and(|task| !task.is_empty() && !task.contains('/'))
}

/// `jobs/<job>/report/`: the job's contact sheet, loss plots, tables and index page.
pub fn report_prefix(job: &str) -> Result<String, BadId> {
    Ok(format!("{}report/", job_prefix(job)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        assert_eq!(
            task_prefix("study-1a2b", "00ff").unwrap(),
            "jobs/study-1a2b/tasks/00ff/"
        );
        assert_eq!(job_grid_key("j").unwrap(), "jobs/j/job.toml");
        assert_eq!(
            task_record_key("j", "t").unwrap(),
            "jobs/j/tasks/t/task.json"
        );
        let file = attempt_file_key("j", "t", 2, PASTICHE_PNG).unwrap();
        assert_eq!(file, "jobs/j/tasks/t/attempt-2/pastiche.png");
        let in_job = &file[job_prefix("j").unwrap().len()..];
        assert_eq!(attempt_of(in_job), Some(("t", 2)));
        assert_eq!(attempt_of("tasks/t/task.json"), None);
        assert_eq!(record_of("tasks/t/task.json"), Some("t"));
        assert_eq!(record_of("tasks/t/attempt-2/task.json"), None);
        assert_eq!(record_of("report/task.json"), None);
        assert_eq!(attempt_of("report/index.html"), None);
        assert_eq!(report_prefix("j").unwrap(), "jobs/j/report/");
        assert_eq!(
            checkpoint_key("j", "t").unwrap(),
            "jobs/j/tasks/t/checkpoint.safetensors"
        );
        assert_eq!(attempt_of("tasks/t/checkpoint.safetensors"), None);
        assert_eq!(record_of("tasks/t/checkpoint.safetensors"), None);
        assert!(is_checkpoint("tasks/t/checkpoint.safetensors"));
        assert!(!is_checkpoint("tasks/t/attempt-1/checkpoint.safetensors"));
        assert!(!is_checkpoint("tasks/t/task.json"));
        assert_eq!(input_key("ab12", "JPG"), "inputs/ab12.jpg");
        assert_eq!(input_key("ab12", "../x"), "inputs/ab12.x");
    }

    #[test]
    fn input_keys_are_exactly_what_uploads_are_named() {
        let digest = "0123456789abcdef".repeat(4);
        assert!(is_input_key(&input_key(&digest, "JPG")));
        assert!(is_input_key(&input_key(&digest, "")));
        assert!(is_input_key(&format!("inputs/{digest}.safetensors")));
        let refused = [
            "inputs/abc.jpg".to_owned(),
            format!("inputs/{}.jpg", digest.to_uppercase()),
            format!("inputs/{digest}0.jpg"),
            format!("inputs/{}.jpg", &digest[1..]),
            format!("inputs/{digest}."),
            format!("inputs/{digest}.tar.gz"),
            format!("inputs/{digest}.{}", "x".repeat(17)),
            format!("inputs/{digest}/x.jpg"),
            format!("inputs/../{digest}.jpg"),
            format!("/inputs/{digest}.jpg"),
            format!("./inputs/{digest}.jpg"),
            format!("s3://b/inputs/{digest}.jpg"),
            digest.clone(),
        ];
        for key in refused {
            assert!(!is_input_key(&key), "{key:?} accepted");
        }
    }

    #[test]
    fn ids_cannot_escape_their_prefix() {
        for bad in ["../../x", "a/b", "", ".", "..", "A", "a b", "a\0b"] {
            assert!(job_prefix(bad).is_err(), "{bad:?} accepted");
            assert!(task_prefix("j", bad).is_err(), "{bad:?} accepted");
        }
    }
}
