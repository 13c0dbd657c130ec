//! Images for the dashboard, from the farm's store: as stored, or resized to a
//! width and kept in a bounded cache (a sheet of 500 cells asks for 500 of
//! them every time it is opened).

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::sync::Mutex;

use bytes::Bytes;
use pastiche_spec::store::{Store, StoreError};
use pastiche_spec::{layout, FinishedTask};

/// The resized images kept, in bytes.
const CACHE_BYTES: usize = 64 << 20;
/// Done tasks whose winning attempt is kept.
const WINNERS_KEPT: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the coordinator has no store (--store): no images to show")]
    NoStore,
    #[error("{key} is not an image: {error}")]
    Undecodable { key: String, error: String },
    #[error("{0}")]
    BadId(#[from] layout::BadId),
}

pub struct Images {
    store: Option<Store>,
    cache: Mutex<Cache>,
    /// Each done task's winning attempt, once read from its `task.json`.
    winners: Mutex<HashMap<(String, String), u32>>,
}

/// Least recently inserted first out.
#[derive(Default)]
struct Cache {
    entries: HashMap<(String, u32, u32), Bytes>,
    order: VecDeque<(String, u32, u32)>,
    bytes: usize,
}

impl Images {
    pub fn new(store: Option<Store>) -> Self {
        Images {
            store,
            cache: Mutex::new(Cache::default()),
            winners: Mutex::new(HashMap::new()),
        }
    }

    fn store(&self) -> Result<&Store, ImageError> {
        self.store.as_ref().ok_or(ImageError::NoStore)
    }

    /// An object as stored.
    pub async fn get(&self, key: &str) -> Result<Bytes, ImageError> {
        Ok(self.store()?.get(key).await?)
    }

    /// The key of a done task's pastiche (its winning attempt's), or `None`
    /// while the task has no record.
    pub async fn pastiche_key(&self, job: &str, task: &str) -> Result<Option<String>, ImageError> {
        let known = self
            .winners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(job.to_owned(), task.to_owned()))
            .copied();
        let attempt = match known {
            Some(attempt) => attempt,
            None => {
                let record = layout::task_record_key(job, task)?;
                let bytes = match self.store()?.get(&record).await {
                    Ok(bytes) => bytes,
                    Err(StoreError::NotFound { .. }) => return Ok(None),
                    Err(err) => return Err(err.into()),
                };
                let Some(attempt) = FinishedTask::attempt_in(&bytes) else {
                    return Ok(None);
                };
                let mut winners = self.winners.lock().unwrap_or_else(|p| p.into_inner());
                // Read again from the store once there are many (jobs are deleted).
                if winners.len() >= WINNERS_KEPT {
                    winners.clear();
                }
                winners.insert((job.to_owned(), task.to_owned()), attempt);
                attempt
            }
        };
        Ok(Some(layout::attempt_file_key(
            job,
            task,
            attempt,
            layout::PASTICHE_PNG,
        )?))
    }

    /// `key`'s image at most `width` pixels wide and high, as a PNG; `version`
    /// tells apart the contents of a key that is overwritten (a preview).
    pub async fn thumbnail(
        &self,
        key: &str,
        version: u32,
        width: u32,
    ) -> Result<Bytes, ImageError> {
        let id = (key.to_owned(), version, width);
        if let Some(bytes) = self.cache().entries.get(&id) {
            return Ok(bytes.clone());
        }
        let stored = self.get(key).await?;
        let name = key.to_owned();
        // Decoding and resizing is CPU work: off the runtime's threads.
        let resized = tokio::task::spawn_blocking(move || -> Result<Bytes, ImageError> {
            let undecodable = |error: String| ImageError::Undecodable {
                key: name.clone(),
                error,
            };
            let image = image::load_from_memory(&stored).map_err(|e| undecodable(e.to_string()))?;
            let mut png = Vec::new();
            image
                .thumbnail(width, width)
                .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| undecodable(e.to_string()))?;
            Ok(Bytes::from(png))
        })
        .await
        .map_err(|e| ImageError::Undecodable {
            key: key.to_owned(),
            error: e.to_string(),
        })??;
        self.cache().insert(id, resized.clone());
        Ok(resized)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Cache {
    /// What an entry holds, its key included.
    fn size(id: &(String, u32, u32), bytes: &Bytes) -> usize {
        bytes.len() + id.0.len()
    }

    fn insert(&mut self, id: (String, u32, u32), bytes: Bytes) {
        if self.entries.contains_key(&id) {
            return;
        }
        self.bytes += Self::size(&id, &bytes);
        self.order.push_back(id.clone());
        self.entries.insert(id, bytes);
        while self.bytes > CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= Self::size(&oldest, &gone);
            }
        }
    }
}
