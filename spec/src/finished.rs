//! `task.json`: what a worker records of a task it finished. Written once, by
//! the attempt whose pastiche and loss log are the result (see [`crate::layout`]);
//! read by reports, `pastiche results` and anyone scripting over the store.

use serde::{Deserialize, Serialize};

use crate::{layout, LossRecord, RenderParams};

/// The contents of a finished task's `task.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedTask {
    pub job: String,
    pub task: String,
    /// The attempt that produced the outputs: they are under its prefix
    /// (see [`file_key`](Self::file_key)).
    pub attempt: u32,
    pub params: RenderParams,
    pub inputs: TaskInputs,
    pub worker: String,
    /// The device as the engine names it (`cpu`, `cuda:0 (NVIDIA H100)`).
    pub device: String,
    /// Seconds since the Unix epoch.
    pub started_at: f64,
    pub finished_at: f64,
    pub render_seconds: f64,
    /// The last row of the loss log.
    pub losses: Option<LossRecord>,
    /// beta as the render chose it, where `params.style_weight` is `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_style_weight: Option<f64>,
    /// The iteration the render stopped after, where `params.stop_tolerance`
    /// stopped it before `params.iterations` (the last row of `losses.csv` is
    /// this iteration's). Absent where every iteration ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<u32>,
    /// The iteration of the checkpoint this attempt resumed from (an earlier
    /// attempt's, see [`layout::checkpoint_key`]): it ran the iterations after
    /// it, and its `losses.csv` holds the earlier rows too. Absent where the
    /// attempt rendered from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u32>,
}

/// A task's inputs as object keys (or URLs); `weights` is empty for random weights.
/// `style` is a blend's text (`blend:0.75=KEY|0.25=KEY`, see [`crate::Style`]) where
/// the grid blends styles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInputs {
    pub content: String,
    pub style: String,
    pub weights: String,
}

impl FinishedTask {
    /// Pretty JSON, as people read it.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a finished task serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<FinishedTask, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The key of one of the result's files ([`layout::ATTEMPT_FILES`]).
    pub fn file_key(&self, name: &str) -> Result<String, layout::BadId> {
        layout::attempt_file_key(&self.job, &self.task, self.attempt, name)
    }

    /// Only the style weight an `auto` render chose, read as [`attempt_in`]
    /// reads the attempt.
    ///
    /// [`attempt_in`]: Self::attempt_in
    pub fn chosen_style_weight_in(bytes: &[u8]) -> Option<f64> {
        #[derive(Deserialize)]
        struct Chosen {
            chosen_style_weight: Option<f64>,
        }
        serde_json::from_slice::<Chosen>(bytes)
            .ok()
            .and_then(|c| c.chosen_style_weight)
    }

    /// Only the attempt of a record, which is all a report needs to call a task
    /// done: it reads records that a newer or older version wrote, whose other
    /// fields may not parse here.
    pub fn attempt_in(bytes: &[u8]) -> Option<u32> {
        Self::winner_in(bytes).map(|w| w.attempt)
    }

    /// Which attempt's result a record is, read as [`attempt_in`](Self::attempt_in)
    /// reads the attempt.
    pub fn winner_in(bytes: &[u8]) -> Option<Winner> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The attempt whose result a task's record is, and the worker that made it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Winner {
    pub attempt: u32,
    #[serde(default)]
    pub worker: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backbone;

    #[test]
    fn a_record_reads_back_and_keeps_the_names_people_script_against() {
        let record = FinishedTask {
            job: "j".into(),
            task: "t".into(),
            attempt: 2,
            params: RenderParams::new(Backbone::Vgg16),
            inputs: TaskInputs {
                content: "inputs/c.png".into(),
                style: "inputs/s.jpg".into(),
                weights: String::new(),
            },
            worker: "host/cpu#1".into(),
            device: "cpu".into(),
            started_at: 1.5,
            finished_at: 2.5,
            render_seconds: 0.75,
            losses: None,
            chosen_style_weight: None,
            stopped_at: None,
            resumed_from: None,
        };
        let bytes = record.to_json();
        assert_eq!(FinishedTask::from_json(&bytes).unwrap(), record);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for key in [
            "job", "task", "attempt", "params", "inputs", "worker", "device",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["inputs"]["content"], "inputs/c.png");
        assert_eq!(json["params"]["backbone"], "vgg16");
        assert_eq!(FinishedTask::attempt_in(&bytes), Some(2));
        assert!(
            json.get("stopped_at").is_none(),
            "only where it stopped early"
        );
        let stopped = FinishedTask {
            stopped_at: Some(40),
            ..record.clone()
        };
        let json: serde_json::Value = serde_json::from_slice(&stopped.to_json()).unwrap();
        assert_eq!(json["stopped_at"], 40);
        assert!(json.get("resumed_from").is_none(), "only where it resumed");
        let resumed = FinishedTask {
            resumed_from: Some(30),
            ..record.clone()
        };
        let json: serde_json::Value = serde_json::from_slice(&resumed.to_json()).unwrap();
        assert_eq!(json["resumed_from"], 30);
        let newer = br#"{"attempt": 3, "params": {"backbone": "inception_v3"}}"#;
        assert!(FinishedTask::from_json(newer).is_err());
        assert_eq!(FinishedTask::attempt_in(newer), Some(3));
    }
}
