//! The worker's copies of task inputs: a directory of files named by content
//! (an uploaded input's digest, or a URL's), checked against their digest when
//! downloaded, and kept within a byte budget by dropping the least recently
//! used first (never one the current task uses).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pastiche_spec::store::{Store, StoreError};
use pastiche_spec::{layout, sha256_hex};

use crate::patience::retrying_store;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input is missing, or not what its key says: the task's own fault.
    #[error("{0}")]
    Bad(String),
    /// The store failed for longer than the worker waited.
    #[error(transparent)]
    Store(StoreError),
    #[error("writing {path}: {cause}")]
    Local {
        path: PathBuf,
        cause: std::io::Error,
    },
}

struct Cached {
    bytes: u64,
    /// When it was last used, on the cache's own clock.
    used: u64,
}

pub struct InputCache {
    dir: tempfile::TempDir,
    budget: u64,
    files: HashMap<String, Cached>,
    clock: u64,
}

impl InputCache {
    /// An empty cache that keeps up to `budget` bytes (one input larger than
    /// that is still fetched, and dropped once another is needed).
    pub fn new(budget: u64) -> std::io::Result<Self> {
        Ok(InputCache {
            dir: tempfile::tempdir()?,
            budget,
            files: HashMap::new(),
            clock: 0,
        })
    }

    /// The local copy of `key` (an input's key in `store`, or an `s3://` URL),
    /// downloaded if it is not here. Files named in `keep` (the current
    /// task's) are not dropped to make room.
    pub async fn fetch(
        &mut self,
        store: &Store,
        key: &str,
        keep: &[String],
    ) -> Result<PathBuf, InputError> {
        let name = local_name(key);
        let path = self.dir.path().join(&name);
        self.clock += 1;
        if let Some(cached) = self.files.get_mut(&name) {
            cached.used = self.clock;
            return Ok(path);
        }
        let bytes = download(store, key).await?;
        if let Some(digest) = digest_of(key) {
            let actual = sha256_hex(&bytes);
            if actual != digest {
                return Err(InputError::Bad(format!(
                    "{key} does not match its digest (its content hashes to {actual}): \
                     the stored copy is damaged; delete it from the store and submit the \
                     grid again (submit uploads only inputs that are missing)"
                )));
            }
        }
        write_file(&path, &bytes).await?;
        self.files.insert(
            name.clone(),
            Cached {
                bytes: bytes.len() as u64,
                used: self.clock,
            },
        );
        let mut keep: Vec<String> = keep.iter().map(|k| local_name(k)).collect();
        keep.push(name);
        self.make_room(&keep);
        Ok(path)
    }

    /// Drops the least recently used files not in `keep` until the rest fit.
    fn make_room(&mut self, keep: &[String]) {
        let mut total: u64 = self.files.values().map(|c| c.bytes).sum();
        while total > self.budget {
            let oldest = self
                .files
                .iter()
                .filter(|(name, _)| !keep.contains(name))
                .min_by_key(|(_, c)| c.used)
                .map(|(name, _)| name.clone());
            let Some(name) = oldest else { break };
            let cached = self.files.remove(&name).expect("just found");
            total -= cached.bytes;
            if let Err(err) = std::fs::remove_file(self.dir.path().join(&name)) {
                tracing::warn!(error = %err, file = %name, "dropping a cached input failed");
            }
        }
    }

    /// The files kept now, for tests.
    pub fn kept(&self) -> Vec<String> {
        let mut names: Vec<String> = self.files.keys().cloned().collect();
        names.sort();
        names
    }
}

/// The file name of `key`'s copy: an input's own name (its digest and
/// extension), or a digest of the URL.
fn local_name(key: &str) -> String {
    match digest_of(key) {
        Some(_) => key.trim_start_matches("inputs/").to_owned(),
        None => {
            let extension = Path::new(key)
                .extension()
                .and_then(|e| e.to_str())
                .filter(|e| e.chars().all(|c| c.is_ascii_alphanumeric()))
                .unwrap_or("bin");
            format!("url-{}.{extension}", &sha256_hex(key.as_bytes())[..32])
        }
    }
}

/// The content digest an uploaded input's key names.
fn digest_of(key: &str) -> Option<&str> {
    if !layout::is_input_key(key) {
        return None;
    }
    key.strip_prefix("inputs/")?.split('.').next()
}

async fn download(store: &Store, key: &str) -> Result<bytes::Bytes, InputError> {
    let (source, object) = match key.strip_prefix("s3://") {
        Some(_) => {
            let (root, object) = key
                .rsplit_once('/')
                .ok_or_else(|| InputError::Bad(format!("{key} names no object")))?;
            let source = Store::open(root).map_err(|e| InputError::Bad(e.to_string()))?;
            (source, object)
        }
        None if layout::is_stored(key) => (store.clone(), key),
        None => {
            return Err(InputError::Bad(format!(
                "{key} is neither an uploaded input nor an s3:// URL"
            )))
        }
    };
    retrying_store(&format!("fetching {key}"), || source.get(object))
        .await
        .map_err(|err| match err.may_pass() {
            // Missing, or refused to this worker: the task's own fault.
            false => InputError::Bad(err.to_string()),
            true => InputError::Store(err),
        })
}

async fn write_file(path: &Path, bytes: &[u8]) -> Result<(), InputError> {
    let local = |cause| InputError::Local {
        path: path.to_owned(),
        cause,
    };
    let partial = path.with_extension("part");
    tokio::fs::write(&partial, bytes).await.map_err(local)?;
    tokio::fs::rename(&partial, path).await.map_err(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn upload(store: &Store, content: &[u8]) -> String {
        let key = layout::input_key(&sha256_hex(content), "png");
        store.put(&key, content.to_vec()).await.unwrap();
        key
    }

    #[tokio::test]
    async fn inputs_are_kept_within_the_budget_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let a = upload(&store, &[1; 40]).await;
        let b = upload(&store, &[2; 40]).await;
        let c = upload(&store, &[3; 40]).await;
        let mut cache = InputCache::new(100).unwrap();
        let path_a = cache.fetch(&store, &a, &[]).await.unwrap();
        assert_eq!(std::fs::read(&path_a).unwrap(), [1; 40]);
        cache.fetch(&store, &b, &[]).await.unwrap();
        cache.fetch(&store, &a, &[]).await.unwrap(); // a is used again: b is older
        cache.fetch(&store, &c, &[]).await.unwrap();
        let names = |keys: &[&String]| {
            let mut names: Vec<String> = keys.iter().map(|k| local_name(k)).collect();
            names.sort();
            names
        };
        assert_eq!(cache.kept(), names(&[&a, &c]));
        assert!(
            !cache.dir.path().join(local_name(&b)).exists(),
            "b's file is gone"
        );
        // The current task's inputs stay, even over budget.
        let task = [a.clone(), b.clone(), c.clone()];
        cache.fetch(&store, &b, &task).await.unwrap();
        assert_eq!(cache.kept(), names(&[&a, &b, &c]));
    }

    #[tokio::test]
    async fn a_missing_or_damaged_input_is_the_tasks_fault() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let mut cache = InputCache::new(1 << 20).unwrap();
        let missing = layout::input_key(&sha256_hex(b"never uploaded"), "png");
        let err = cache.fetch(&store, &missing, &[]).await.unwrap_err();
        assert!(matches!(err, InputError::Bad(_)), "{err}");

        let key = layout::input_key(&sha256_hex(b"original"), "png");
        store.put(&key, b"tampered".to_vec()).await.unwrap();
        let err = cache.fetch(&store, &key, &[]).await.unwrap_err();
        assert!(
            matches!(&err, InputError::Bad(m) if m.contains("digest")),
            "{err}"
        );
    }
}
