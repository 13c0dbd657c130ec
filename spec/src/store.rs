//! The farm's object storage: a local directory or `s3://bucket/prefix`, through
//! `object_store`. Keys are relative to the root, as `layout` builds them.
//!
//! S3 settings come from the usual variables: AWS_ACCESS_KEY_ID,
//! AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL
//! (or AWS_ENDPOINT) for S3-compatible servers, which are addressed path-style;
//! an `http://` endpoint is allowed.
//!
//! Writes are whole or absent: the local store writes a temporary file and renames
//! it, and an S3 PUT is atomic. [`Store::put_new`] writes only where nothing is
//! (what fences a task's result, see [`crate::layout`]).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::layout;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad store location '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{key} is not in the store {root}")]
    NotFound { root: String, key: String },
    // Not a `#[source]`: object_store's messages already repeat most of their
    // chain of causes, and error reports would repeat each of them again.
    #[error("store {root}: {key}: {}", describe(cause))]
    Io {
        root: String,
        key: String,
        cause: object_store::Error,
    },
    #[error("cannot read {path}: {cause}")]
    LocalFile { path: String, cause: std::io::Error },
}

impl StoreError {
    /// Whether waiting may help: a store or network that is down or slow, as
    /// opposed to a missing object, a bad location, or a store that refuses
    /// this caller (credentials, permissions) or the operation.
    pub fn may_pass(&self) -> bool {
        match self {
            StoreError::Io { cause, .. } => !matches!(
                cause,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            StoreError::BadUrl { .. }
            | StoreError::NotFound { .. }
            | StoreError::LocalFile { .. } => false,
        }
    }
}

/// object_store's message, and the innermost cause when the message does not
/// already say it (e.g. "Connection refused").
fn describe(error: &object_store::Error) -> String {
    let message = error.to_string();
    let cause = crate::innermost_cause(error).to_string();
    if message.contains(&cause) {
        message
    } else {
        format!("{message}: {cause}")
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    root: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.root)
    }
}

impl Store {
    /// `s3://bucket[/prefix]`, `file:///dir`, or a directory path (created if missing).
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket".into()));
            }
            // A down endpoint should fail a command in seconds, not minutes.
            let retry = object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(15),
                ..Default::default()
            };
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry);
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .ok();
            if let Some(endpoint) = endpoint {
                builder = builder
                    .with_endpoint(&endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                builder = builder.with_region("us-east-1");
            }
            let s3 = builder.build().map_err(|e| bad(e.to_string()))?;
            return Ok(Store {
                inner: Arc::new(s3),
                prefix: ObjectPath::from(prefix.trim_matches('/')),
                root: url.trim_end_matches('/').to_owned(),
            });
        }
        // `s3:/bucket` (one slash) is a typo, not a directory named `s3:`.
        let scheme = url.split_once(':').map(|(scheme, _)| scheme);
        let mistyped =
            scheme.is_some_and(|s| s.eq_ignore_ascii_case("s3") || s.eq_ignore_ascii_case("file"));
        if (url.contains("://") || mistyped) && !url.starts_with("file://") {
            return Err(bad("expected a directory, file:// or s3://".into()));
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        // Directories emptied by deletes go too, as prefixes do on S3.
        let local = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| bad(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(Store {
            inner: Arc::new(local),
            prefix: ObjectPath::default(),
            root: dir.to_owned(),
        })
    }

    /// Where this store is, as given.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Where this store is, comparable between processes: an `s3://` URL as
    /// given, a directory as its absolute path (so that `results` and
    /// `./results` are one store).
    pub fn location(&self) -> String {
        if self.root.starts_with("s3://") {
            return self.root.clone();
        }
        std::fs::canonicalize(&self.root)
            .map_or_else(|_| self.root.clone(), |p| p.display().to_string())
    }

    fn path(&self, key: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    fn io(&self, key: &str, source: object_store::Error) -> StoreError {
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                root: self.root.clone(),
                key: key.to_owned(),
            },
            cause => StoreError::Io {
                root: self.root.clone(),
                key: key.to_owned(),
                cause,
            },
        }
    }

    pub async fn put(&self, key: &str, bytes: impl Into<Bytes>) -> Result<(), StoreError> {
        self.inner
            .put(&self.path(key), PutPayload::from(bytes.into()))
            .await
            .map(drop)
            .map_err(|e| self.io(key, e))
    }

    /// Writes `key` unless it is there already: a conditional write, so that of
    /// writers racing for one key exactly one succeeds (a hard link on a
    /// directory, `If-None-Match: *` on S3). Whether this call wrote it.
    pub async fn put_new(&self, key: &str, bytes: impl Into<Bytes>) -> Result<bool, StoreError> {
        let options = PutOptions::from(PutMode::Create);
        match self
            .inner
            .put_opts(&self.path(key), PutPayload::from(bytes.into()), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.io(key, e)),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let result = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(|e| self.io(key, e))?;
        result.bytes().await.map_err(|e| self.io(key, e))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.inner.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.io(key, e)),
        }
    }

    /// Removes `key`; a key that is already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io(key, e)),
        }
    }

    /// Keys under `prefix`, relative to the root, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let base = self.path(prefix);
        let skip = self.prefix.as_ref().len();
        let mut keys: Vec<String> = self
            .inner
            .list(Some(&base))
            .map_ok(|meta| {
                let full = meta.location.as_ref();
                full[skip..].trim_start_matches('/').to_owned()
            })
            .try_collect()
            .await
            .map_err(|e| self.io(prefix, e))?;
        keys.sort();
        Ok(keys)
    }

    /// Uploads a local file under its content address (once: an input already
    /// there is not sent again) and returns its key.
    pub async fn put_input(&self, path: &Path) -> Result<String, StoreError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|cause| StoreError::LocalFile {
                path: path.display().to_string(),
                cause,
            })?;
        let key = layout::input_key_of(path, &bytes);
        if !self.exists(&key).await? {
            self.put(&key, bytes).await?;
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose message leaves its cause out, like a transport error.
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Sending(#[source] std::io::Error);

    #[test]
    fn store_errors_say_the_innermost_cause_once() {
        let refused =
            || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let error = StoreError::Io {
            root: "s3://b".into(),
            key: "jobs/j/".into(),
            cause: object_store::Error::Generic {
                store: "S3",
                source: Box::new(Sending(refused())),
            },
        };
        assert_eq!(
            error.to_string(),
            "store s3://b: jobs/j/: Generic S3 error: error sending request: Connection refused"
        );
        assert!(
            std::error::Error::source(&error).is_none(),
            "no chain to repeat"
        );
        let said = StoreError::Io {
            root: "s3://b".into(),
            key: "k".into(),
            cause: object_store::Error::Generic {
                store: "S3",
                source: Box::new(refused()),
            },
        };
        assert_eq!(said.to_string().matches("Connection refused").count(), 1);
    }

    #[tokio::test]
    async fn a_local_store_round_trips_lists_and_addresses_inputs_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("root").to_str().unwrap()).unwrap();
        store.put("jobs/j/job.toml", "name = 'j'").await.unwrap();
        assert_eq!(store.get("jobs/j/job.toml").await.unwrap(), "name = 'j'");
        assert!(matches!(
            store.get("jobs/j/none").await,
            Err(StoreError::NotFound { .. })
        ));

        let photo = dir.path().join("Photo.JPG");
        std::fs::write(&photo, b"pixels").unwrap();
        let key = store.put_input(&photo).await.unwrap();
        assert_eq!(key, format!("inputs/{}.jpg", crate::sha256_hex(b"pixels")));
        assert_eq!(
            store.put_input(&photo).await.unwrap(),
            key,
            "same content, same key"
        );
        assert_eq!(
            store.list("").await.unwrap(),
            vec![key, "jobs/j/job.toml".to_string()]
        );
        assert!(store.exists("jobs/j/job.toml").await.unwrap());

        let err = store
            .put_input(&dir.path().join("missing.png"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing.png"));
    }

    #[test]
    fn only_outages_are_worth_waiting_for() {
        let io = |cause| StoreError::Io {
            root: "s3://b".into(),
            key: "k".into(),
            cause,
        };
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let down = io(object_store::Error::Generic {
            store: "S3",
            source: Box::new(refused),
        });
        assert!(down.may_pass());
        let denied = io(object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403".into(),
        });
        assert!(!denied.may_pass());
        let missing = StoreError::NotFound {
            root: "s3://b".into(),
            key: "k".into(),
        };
        assert!(!missing.may_pass());
    }

    #[tokio::test]
    async fn of_writers_racing_for_a_new_key_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let racers = (0..8).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { (i, store.put_new("t/task.json", format!("{i}")).await) })
        });
        let mut winners = Vec::new();
        for racer in racers {
            let (i, won) = racer.await.unwrap();
            if won.unwrap() {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        let kept = store.get("t/task.json").await.unwrap();
        assert_eq!(kept, format!("{}", winners[0]), "the winner's bytes stay");
        assert!(!store.put_new("t/task.json", "late").await.unwrap());
        assert_eq!(store.get("t/task.json").await.unwrap(), kept);
    }

    #[test]
    fn bad_locations_are_refused() {
        assert!(Store::open("s3://").is_err());
        assert!(Store::open("ftp://host/x")
            .unwrap_err()
            .to_string()
            .contains("ftp://host/x"));
        // One slash short: refused, not made into a directory named `s3:`.
        assert!(Store::open("s3:/bucket").is_err());
        assert!(Store::open("S3:/bucket").is_err());
        assert!(!std::path::Path::new("s3:").exists());
    }
}
