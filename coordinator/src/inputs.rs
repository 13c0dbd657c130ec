//! Which files a grid may name. A worker opens whatever a task names, so a grid
//! must not be able to make it read a file on its own disk, or an object of any
//! bucket its credentials happen to reach. At submission every input of a grid
//! (content, each style image and each image of a blend, starting images,
//! weights) must be
//! - an uploaded input's key in the farm's store (`inputs/<sha256>.<ext>`, the
//!   name `pastiche submit` gives each local file it uploads), or
//! - an `s3://` URL under an allowed prefix: the farm's store when it is on S3,
//!   and each `--allow-input` prefix, matched by whole path segments.
//!
//! Anything else (a local path, `file://`, `http://`, another bucket) is refused.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use clap::Args;
use pastiche_spec::store::Store;
use pastiche_spec::{input_entries, layout, GridError};

/// The flag that allows more `s3://` prefixes, shared by `pastiche-coordinator`
/// and `pastiche local`.
#[derive(Args, Debug, Clone, Default)]
pub struct AllowInputArgs {
    /// Let grids name inputs under this s3://bucket[/prefix] (repeatable; in
    /// PASTICHE_ALLOW_INPUT, comma-separated) besides the farm's store, e.g.
    /// shared weights. Local paths are never read.
    #[arg(
        long = "allow-input",
        env = "PASTICHE_ALLOW_INPUT",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    pub allow_input: Vec<AllowedPrefix>,
}

/// An `s3://bucket[/prefix]` under which grids may name inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPrefix {
    /// The bucket, then each segment of the prefix.
    segments: Vec<String>,
}

impl FromStr for AllowedPrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let segments = s3_segments(text.trim_end_matches('/')).map_err(|reason| {
            format!(
                "'{text}' {reason}; an allowed input prefix is s3://bucket or s3://bucket/prefix"
            )
        })?;
        Ok(AllowedPrefix {
            segments: segments.into_iter().map(str::to_owned).collect(),
        })
    }
}

impl fmt::Display for AllowedPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}", self.segments.join("/"))
    }
}

impl AllowedPrefix {
    /// Whether the object `segments` (bucket first) names is under this prefix:
    /// whole segments, so `s3://models` does not contain `s3://models-evil/x`.
    fn contains(&self, segments: &[&str]) -> bool {
        segments.len() > 1
            && segments.len() >= self.segments.len()
            && self.segments.iter().zip(segments).all(|(a, b)| a == b)
    }
}

/// The bucket and key segments of an `s3://` URL, each a plain name: no empty,
/// `.` or `..` segment (which a store or a proxy might resolve), no backslash,
/// no control character.
fn s3_segments(url: &str) -> Result<Vec<&str>, String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| "is not an s3:// URL".to_owned())?;
    if url.contains('\\') {
        return Err("contains a backslash".into());
    }
    if url.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err("has an empty path segment".into());
    }
    if let Some(dots) = segments.iter().find(|s| **s == "." || **s == "..") {
        return Err(format!("has a '{dots}' path segment"));
    }
    Ok(segments)
}

/// What a farm reads: uploaded inputs' keys, and `s3://` URLs under its prefixes.
#[derive(Debug, Clone, Default)]
pub struct InputPolicy {
    prefixes: Vec<AllowedPrefix>,
}

impl InputPolicy {
    /// Allows the farm's store when it is on S3, and `allowed` (`--allow-input`).
    pub fn new(store: Option<&Store>, allowed: &[AllowedPrefix]) -> InputPolicy {
        let farms = store
            .map(Store::location)
            .filter(|l| l.starts_with("s3://"));
        let farms = farms.and_then(|location| match location.parse() {
            Ok(prefix) => Some(prefix),
            Err(reason) => {
                tracing::warn!(%reason, "the store's URL cannot be an allowed input prefix");
                None
            }
        });
        let mut prefixes: Vec<AllowedPrefix> = farms.into_iter().collect();
        for prefix in allowed {
            if !prefixes.contains(prefix) {
                prefixes.push(prefix.clone());
            }
        }
        InputPolicy { prefixes }
    }

    /// Refuses the first input of the grid this farm does not read, naming the
    /// grid file, the key, the entry and what is allowed.
    pub fn check_grid(&self, grid_name: &str, grid_toml: &str) -> Result<(), GridError> {
        let error = |key: Option<String>, message: String| GridError {
            file: Path::new(grid_name).to_owned(),
            line: None,
            key,
            message,
        };
        let entries = input_entries(grid_toml).map_err(|e| error(None, e.to_string()))?;
        for (key, entry) in entries {
            if let Some(reason) = self.refusal(&entry) {
                // Quoted as Rust strings: a control character is shown, not obeyed.
                let message = format!("{entry:?} {reason}; {}", self.allowed());
                return Err(error(Some(key), message));
            }
        }
        Ok(())
    }

    /// Why the farm does not read `entry`, or `None` when it does.
    fn refusal(&self, entry: &str) -> Option<String> {
        if layout::is_input_key(entry) {
            return None;
        }
        if entry.starts_with("inputs/") {
            return Some(
                "is not an uploaded input's key (inputs/, 64 lowercase hex digits of its \
                 sha256, and an optional .ext)"
                    .into(),
            );
        }
        if entry.starts_with("s3://") {
            return match s3_segments(entry) {
                Err(reason) => Some(reason),
                Ok(segments) if self.prefixes.iter().any(|p| p.contains(&segments)) => None,
                Ok(_) => Some("is outside the s3:// prefixes this farm reads".into()),
            };
        }
        if entry.contains("://") {
            return Some("is a URL this farm does not read (only s3:// ones)".into());
        }
        Some("is a local path, which workers do not read".into())
    }

    /// What a grid may name instead, with how to allow more.
    fn allowed(&self) -> String {
        const KEYS: &str = "this farm reads only uploaded inputs (inputs/<sha256>.<ext>, as \
                            pastiche submit names the local files it uploads)";
        const HINT: &str =
            "--allow-input s3://BUCKET/PREFIX on pastiche-coordinator or pastiche local";
        if self.prefixes.is_empty() {
            return format!("{KEYS} and s3:// URLs under prefixes allowed with {HINT} (none is)");
        }
        let prefixes: Vec<String> = self.prefixes.iter().map(ToString::to_string).collect();
        format!(
            "{KEYS} and s3:// URLs under {} (more with {HINT})",
            prefixes.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn policy(allowed: &[&str]) -> InputPolicy {
        let allowed: Vec<AllowedPrefix> = allowed.iter().map(|p| p.parse().unwrap()).collect();
        InputPolicy::new(None, &allowed)
    }

    fn grid_with_content(entry: &str) -> String {
        format!("content = {entry:?}\nstyle = \"inputs/{DIGEST}.jpg\"\n")
    }

    #[test]
    fn uploaded_keys_and_urls_under_allowed_prefixes_are_read() {
        let policy = policy(&["s3://models", "s3://shared/weights/"]);
        for entry in [
            format!("inputs/{DIGEST}.jpg"),
            format!("inputs/{DIGEST}"),
            format!("inputs/{DIGEST}.safetensors"),
            "s3://models/vgg19.safetensors".into(),
            "s3://models/a/b/c.png".into(),
            "s3://shared/weights/vgg16.safetensors".into(),
        ] {
            assert_eq!(policy.refusal(&entry), None, "{entry}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        let policy = policy(&["s3://models", "s3://shared/weights"]);
        for (entry, reason) in [
            ("/etc/passwd", "local path"),
            ("photos/cat.jpg", "local path"),
            ("../x.jpg", "local path"),
            ("C:\\photos\\cat.jpg", "local path"),
            ("inputs/../x.jpg", "not an uploaded input's key"),
            ("inputs/abc.jpg", "not an uploaded input's key"),
            ("file:///etc/passwd", "URL this farm does not read"),
            ("http://example.com/cat.jpg", "URL this farm does not read"),
            ("s3://other/vgg19.safetensors", "outside"),
            ("s3://models-evil/vgg19.safetensors", "outside"),
            ("s3://shared/weightsx/vgg16.safetensors", "outside"),
            ("s3://shared/vgg16.safetensors", "outside"),
            ("s3://models", "outside"),
            ("s3://models/../other/x", "'..' path segment"),
            ("s3://models/./x", "'.' path segment"),
            ("s3://models//x", "empty path segment"),
            ("s3://models/x/", "empty path segment"),
            ("s3://models/a\\..\\x", "backslash"),
            ("s3://models/x\n.png", "control character"),
        ] {
            let refused = policy.refusal(entry);
            assert!(
                refused.as_deref().is_some_and(|r| r.contains(reason)),
                "{entry:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_farms_store_on_s3_is_allowed_and_a_directory_store_adds_nothing() {
        let s3 = Store::open("s3://farm/results/").unwrap();
        let policy = InputPolicy::new(Some(&s3), &[]);
        assert_eq!(policy.refusal("s3://farm/results/inputs/x.jpg"), None);
        assert!(policy.refusal("s3://farm/resultsx/x.jpg").is_some());
        assert!(policy.refusal("s3://farm/x.jpg").is_some());

        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path().to_str().unwrap()).unwrap();
        let policy = InputPolicy::new(Some(&local), &[]);
        assert!(policy.prefixes.is_empty());
        let inside = format!("{}/x.jpg", dir.path().display());
        assert!(policy.refusal(&inside).unwrap().contains("local path"));
    }

    #[test]
    fn allowed_prefixes_are_plain_s3_urls() {
        for bad in [
            "/models",
            "models",
            "file:///models",
            "s3://",
            "s3://a/../b",
            "s3://a//b",
        ] {
            assert!(bad.parse::<AllowedPrefix>().is_err(), "{bad:?} accepted");
        }
        let prefix: AllowedPrefix = "s3://models/vgg/".parse().unwrap();
        assert_eq!(prefix.to_string(), "s3://models/vgg");
    }

    #[test]
    fn a_refusal_names_the_file_the_key_the_entry_and_what_is_allowed() {
        let refused = policy(&["s3://models"])
            .check_grid("study.toml", &grid_with_content("/etc/passwd"))
            .unwrap_err();
        assert_eq!(refused.key.as_deref(), Some("content"));
        let message = refused.to_string();
        for part in [
            "study.toml: content: \"/etc/passwd\" is a local path",
            "inputs/<sha256>.<ext>",
            "s3://models",
            "--allow-input",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }

        // Every kind of input is checked, with its own key.
        for (text, key) in [
            (
                format!("content = \"inputs/{DIGEST}.png\"\nstyle = [{{ blend = [\"inputs/{DIGEST}.png\", \"art/b.jpg\"] }}]\n"),
                "style",
            ),
            (
                format!("{}[grid]\ninit = [\"noise\", \"../start.jpg\"]\n", grid_with_content(&format!("inputs/{DIGEST}.png"))),
                "grid.init",
            ),
            (
                format!("{}[weights]\nvgg19 = \"s3://other/vgg19.safetensors\"\n", grid_with_content(&format!("inputs/{DIGEST}.png"))),
                "weights.vgg19",
            ),
        ] {
            let refused = policy(&["s3://models"]).check_grid("g.toml", &text).unwrap_err();
            assert_eq!(refused.key.as_deref(), Some(key), "{refused}");
        }
        let allowed = format!(
            "{}[weights]\nvgg19 = \"s3://models/vgg19.safetensors\"\n",
            grid_with_content(&format!("inputs/{DIGEST}.png"))
        );
        policy(&["s3://models"])
            .check_grid("g.toml", &allowed)
            .unwrap();
    }
}
