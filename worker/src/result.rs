//! Storing a task's result so that no other attempt can change it (see
//! [`layout`]): the attempt's files go under its own prefix, then the task's
//! record is created only if no attempt created it first.

use bytes::Bytes;
use pastiche_spec::layout::{self, BadId};
use pastiche_spec::store::{Store, StoreError};
use pastiche_spec::{FinishedTask, Winner};

/// Whose result a task has after [`store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// This attempt's: its record and files are the task's result.
    Won,
    /// Another attempt's (`winner`), stored first; this attempt's files were removed.
    Lost { winner: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    BadId(#[from] BadId),
    /// The store refused to create the record, yet has none (S3 answers 409
    /// to a conditional write that raced another): worth another try.
    #[error("the store refused to create {0} but has none; trying again")]
    NoRecord(String),
}

impl ResultError {
    /// Whether storing again may succeed.
    pub fn may_pass(&self) -> bool {
        match self {
            ResultError::Store(err) => err.may_pass(),
            ResultError::NoRecord(_) => true,
            ResultError::BadId(_) => false,
        }
    }
}

/// Stores `pastiche` and `losses` under `record`'s attempt, then `record` as
/// the task's, unless another attempt's is there already. Safe to repeat: a
/// record that is this attempt's own (an earlier try whose reply was lost)
/// counts as won.
pub async fn store(
    store: &Store,
    record: &FinishedTask,
    pastiche: Bytes,
    losses: Bytes,
) -> Result<Stored, ResultError> {
    let files = [
        (layout::PASTICHE_PNG, pastiche),
        (layout::LOSSES_CSV, losses),
    ];
    for (name, bytes) in files {
        store.put(&record.file_key(name)?, bytes).await?;
    }
    let key = layout::task_record_key(&record.job, &record.task)?;
    if store.put_new(&key, record.to_json()).await? {
        return Ok(Stored::Won);
    }
    let Some(there) = stored(store, &record.job, &record.task).await? else {
        return Err(ResultError::NoRecord(key));
    };
    if there.attempt == record.attempt && there.worker == record.worker {
        return Ok(Stored::Won);
    }
    // The same attempt number on two workers (a lease the coordinator lost in
    // a crash and gave again) shares the prefix: leave the winner's files.
    if there.attempt != record.attempt {
        for name in layout::ATTEMPT_FILES {
            store.delete(&record.file_key(name)?).await?;
        }
    }
    Ok(Stored::Lost {
        winner: there.attempt,
    })
}

/// Who stored the task's result, if an attempt did.
pub async fn stored(store: &Store, job: &str, task: &str) -> Result<Option<Winner>, ResultError> {
    let key = layout::task_record_key(job, task)?;
    match store.get(&key).await {
        // A record this version cannot read is still another attempt's.
        Ok(bytes) => Ok(Some(FinishedTask::winner_in(&bytes).unwrap_or(Winner {
            attempt: 0,
            worker: String::new(),
        }))),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pastiche_spec::{Backbone, RenderParams, TaskInputs};

    fn record(attempt: u32, worker: &str) -> FinishedTask {
        FinishedTask {
            job: "j".into(),
            task: "t".into(),
            attempt,
            params: RenderParams::new(Backbone::Vgg16),
            inputs: TaskInputs {
                content: "inputs/c.png".into(),
                style: "inputs/s.png".into(),
                weights: String::new(),
            },
            worker: worker.into(),
            device: "cpu".into(),
            started_at: 0.0,
            finished_at: 1.0,
            render_seconds: 1.0,
            losses: None,
            chosen_style_weight: None,
            stopped_at: None,
            resumed_from: None,
        }
    }

    #[tokio::test]
    async fn the_first_attempt_to_store_its_result_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap()).unwrap();
        let (first, late) = (record(2, "w2"), record(1, "w1"));
        let bytes = |text: &str| Bytes::from(text.to_owned());
        let won = store(&s, &first, bytes("png 2"), bytes("csv 2")).await;
        assert_eq!(won.unwrap(), Stored::Won);
        // Storing again (a reply was lost) is still a win.
        let again = store(&s, &first, bytes("png 2"), bytes("csv 2")).await;
        assert_eq!(again.unwrap(), Stored::Won);

        // An attempt whose lease ran out while it rendered comes back late.
        let lost = store(&s, &late, bytes("png 1"), bytes("csv 1")).await;
        assert_eq!(lost.unwrap(), Stored::Lost { winner: 2 });
        let record = s.get("jobs/j/tasks/t/task.json").await.unwrap();
        assert_eq!(FinishedTask::from_json(&record).unwrap(), first);
        assert_eq!(
            s.get(&first.file_key(layout::PASTICHE_PNG).unwrap())
                .await
                .unwrap(),
            "png 2"
        );
        // The late attempt's own files are gone: only the winner's are left.
        assert_eq!(
            s.list("jobs/j/tasks/t/").await.unwrap(),
            [
                "jobs/j/tasks/t/attempt-2/losses.csv",
                "jobs/j/tasks/t/attempt-2/pastiche.png",
                "jobs/j/tasks/t/task.json",
            ]
        );
        let winner = stored(&s, "j", "t").await.unwrap().unwrap();
        assert_eq!((winner.attempt, winner.worker.as_str()), (2, "w2"));
        assert_eq!(stored(&s, "j", "other").await.unwrap(), None);
    }
}
