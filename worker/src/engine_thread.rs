//! The thread that owns the device: renders run here, one at a time, so libtorch
//! never blocks the async runtime. Loaded backbones are kept for the next task.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pastiche_engine::spec::{Backbone, LossRecord, Precision, RenderParams, Style};
use pastiche_engine::{render, tch, Checkpoint, EngineError, FeatureNet, Prepared};
use tokio::sync::{oneshot, watch};

/// One render to do.
pub struct RenderJob {
    pub params: RenderParams,
    pub content: PathBuf,
    /// The style's images as local files.
    pub style: Style,
    pub weights: Option<PathBuf>,
    /// Set to stop the render within one iteration.
    pub cancel: Arc<AtomicBool>,
    /// The latest (iteration, losses), for heartbeats.
    pub progress: watch::Sender<Option<(u32, LossRecord)>>,
    /// Encode the current iterate every this many iterations (0: never)...
    pub preview_every: u32,
    /// ...and hand it over here as (iteration, PNG).
    pub previews: watch::Sender<Option<(u32, Vec<u8>)>>,
    /// Where an earlier attempt's render stood: carry on from there (if it fits
    /// this render; if not, start over, with a warning).
    pub resume: Option<Checkpoint>,
    /// Whose render this is (the task id), written into its checkpoints.
    pub label: String,
    /// Take a checkpoint every this many iterations (0: never)...
    pub checkpoint_every: u32,
    /// ...and one when the render is cancelled with this set too (the worker
    /// gives the task back)...
    pub give_back: Arc<AtomicBool>,
    /// ...and hand them over here.
    pub checkpoints: watch::Sender<Option<Arc<Checkpoint>>>,
    pub reply: oneshot::Sender<Result<RenderOutput, EngineError>>,
}

pub struct RenderOutput {
    pub png: Vec<u8>,
    pub losses_csv: String,
    pub losses: Vec<LossRecord>,
    /// beta, where the render chose it (`style_weight = "auto"`).
    pub chosen_style_weight: Option<f64>,
    /// Where `stop_tolerance` ended the render before its last iteration.
    pub stopped_at: Option<u32>,
    /// The iteration of the checkpoint the render resumed from.
    pub resumed_from: Option<u32>,
    pub elapsed: Duration,
}

pub struct EngineThread {
    jobs: mpsc::Sender<RenderJob>,
    thread: std::thread::JoinHandle<()>,
}

impl EngineThread {
    /// Starts the thread for `device` (`cpu`, `cuda:N`, `auto`), failing if the
    /// device is not there.
    pub fn start(device: &str) -> Result<(EngineThread, String), EngineError> {
        let device = pastiche_engine::parse_device(device)?;
        let name = pastiche_engine::device_name(device);
        let (jobs, inbox) = mpsc::channel::<RenderJob>();
        let thread = std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || {
                let mut nets: HashMap<NetKey, FeatureNet> = HashMap::new();
                for mut job in inbox {
                    let resume = job.resume.take();
                    // A panic (a bug of ours) fails that render, not the worker:
                    // without the thread, every later task would fail at once.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(&mut nets, device, &job, resume)
                    }))
                    .unwrap_or_else(|panic| {
                        nets.clear(); // whatever it left half-built
                        Err(EngineError::Panicked(panic_message(&*panic)))
                    });
                    let _ = job.reply.send(result);
                }
            })
            .expect("spawn the engine thread");
        Ok((EngineThread { jobs, thread }, name))
    }

    /// Waits for the render in progress (cancel it first) and ends the thread.
    /// A process must not exit while libtorch is still working on another thread:
    /// its static destructors would pull memory from under it.
    pub fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }

    pub fn submit(&self, job: RenderJob) {
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            let _ = job.reply.send(Err(EngineError::Device(
                "engine thread".into(),
                " (it stopped)",
            )));
        }
    }
}

/// A loaded net: its backbone, its weights file (none: the seeded random
/// network) and the precision its weights were cast to.
type NetKey = (Backbone, Option<PathBuf>, Precision);

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn run(
    nets: &mut HashMap<NetKey, FeatureNet>,
    device: tch::Device,
    job: &RenderJob,
    resume: Option<Checkpoint>,
) -> Result<RenderOutput, EngineError> {
    let key = (
        job.params.backbone,
        job.weights.clone(),
        job.params.precision,
    );
    if !nets.contains_key(&key) {
        // One backbone on the device at a time: the next task most likely uses it too.
        nets.clear();
        let net = FeatureNet::load_with(
            job.params.backbone,
            job.weights.as_deref(),
            device,
            job.params.precision,
        )?;
        nets.insert(key.clone(), net);
    }
    let net = &nets[&key];
    let mut prepared = Prepared::new(net, &job.params, &job.content, &job.style)?;
    if let Some(checkpoint) = resume {
        let iteration = checkpoint.iteration;
        match prepared.resume_from(&job.params, checkpoint) {
            Ok(()) => tracing::info!(task = %job.label, iteration, "resuming from a checkpoint"),
            Err(err) => {
                tracing::warn!(task = %job.label, error = %err, "ignoring the task's checkpoint; starting over")
            }
        }
    }
    let rendered = render(net, &job.params, prepared, &mut |progress| {
        let _ = job
            .progress
            .send(Some((progress.iteration, progress.latest)));
        let every = job.preview_every;
        if every > 0 && progress.iteration % every == 0 && progress.iteration < progress.iterations
        {
            // A preview is a courtesy: one that cannot be encoded is skipped.
            match pastiche_engine::image_io::png_bytes(progress.pastiche) {
                Ok(png) => {
                    let _ = job.previews.send(Some((progress.iteration, png)));
                }
                Err(err) => tracing::warn!(error = %err, "encoding a preview failed"),
            }
        }
        let cancelled = job.cancel.load(Ordering::Relaxed);
        let parting = cancelled && job.give_back.load(Ordering::Relaxed);
        let every = job.checkpoint_every;
        let due = every > 0
            && progress.iteration % every == 0
            && progress.iteration < progress.iterations;
        if (due || parting) && progress.can_checkpoint() {
            // A checkpoint is insurance: one that cannot be taken is skipped.
            match progress.checkpoint(&job.label) {
                Ok(checkpoint) => {
                    let _ = job.checkpoints.send(Some(Arc::new(checkpoint)));
                }
                Err(err) => tracing::warn!(error = %err, "taking a checkpoint failed"),
            }
        }
        if cancelled {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(RenderOutput {
        png: pastiche_engine::image_io::png_bytes(&rendered.image)?,
        losses_csv: rendered.losses_csv(),
        losses: rendered.losses.clone(),
        chosen_style_weight: job
            .params
            .style_weight
            .is_auto()
            .then_some(rendered.style_weight),
        stopped_at: rendered.stopped_at,
        resumed_from: rendered.resumed_from,
        elapsed: rendered.elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(precision: Precision) -> RenderJob {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("examples");
        let params = RenderParams {
            size: 32,
            iterations: 1,
            precision,
            ..RenderParams::new(Backbone::Vgg16)
        };
        RenderJob {
            params,
            content: examples.join("chelsea.png"),
            style: Style::image(examples.join("starry_night.jpg").to_string_lossy()),
            weights: None,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: watch::channel(None).0,
            preview_every: 0,
            previews: watch::channel(None).0,
            resume: None,
            label: "a-task".into(),
            checkpoint_every: 0,
            give_back: Arc::new(AtomicBool::new(false)),
            checkpoints: watch::channel(None).0,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_net_is_reloaded_when_the_precision_changes() {
        let mut nets = HashMap::new();
        for precision in [Precision::Fp32, Precision::Bf16, Precision::Fp32] {
            // The render refuses a net of another precision: a cache keyed
            // without it would hand the fp32 net to the bf16 task.
            run(&mut nets, tch::Device::Cpu, &job(precision), None).unwrap();
            assert_eq!(nets.len(), 1);
            let net = nets.values().next().unwrap();
            assert_eq!(net.precision(), precision);
        }
    }
}
