//! Where things live under a farm's storage root (a local directory or
//! `s3://bucket/prefix`):
//!
//! ```text
//! inputs/<sha256>.<ext>                   content-addressed uploads from the CLI
//! jobs/<job>/job.toml                     the grid as submitted
//! jobs/<job>/tasks/<task>/pastiche.png    the result
//! jobs/<job>/tasks/<task>/losses.csv      iteration,content,style,tv,total
//! jobs/<job>/tasks/<task>/task.json       parameters, timings, worker, device, attempt
//! jobs/<job>/tasks/<task>/preview.png     the latest iterate stored while it rendered (opt-in)
//! jobs/<job>/report/                      contact sheet, loss plots, summary table
//! ```
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

/// A task's pastiche.
pub const PASTICHE_PNG: &str = "pastiche.png";
/// A task's loss log (see [`LOSSES_CSV_HEADER`](crate::LOSSES_CSV_HEADER)).
pub const LOSSES_CSV: &str = "losses.csv";
/// A finished task's record (see [`FinishedTask`](crate::FinishedTask)); stored
/// last, so its presence says the other outputs are there.
pub const TASK_JSON: &str = "task.json";
/// The latest iterate of a task being rendered (opt-in).
pub const PREVIEW_PNG: &str = "preview.png";

/// The three objects every finished task has, in the order they are stored.
pub const TASK_OUTPUTS: [&str; 3] = [PASTICHE_PNG, LOSSES_CSV, TASK_JSON];

/// `jobs/<job>/tasks/<task>/<name>`, for `name` one of the task's files above.
pub fn task_file_key(job: &str, task: &str, name: &str) -> Result<String, BadId> {
    Ok(format!("{}{name}", task_prefix(job, task)?))
}

/// Where a worker stores a task's current iterate while it renders.
pub fn preview_key(job: &str, task: &str) -> Result<String, BadId> {
    task_file_key(job, task, PREVIEW_PNG)
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
        assert_eq!(report_prefix("j").unwrap(), "jobs/j/report/");
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
