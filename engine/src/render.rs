//! One render: images in, the Gatys optimisation, the pastiche and its losses out.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pastiche_spec::{
    Init, LossRecord, RenderParams, Style, StyleWeight, LOSSES_CSV_HEADER,
    LOSSES_CSV_HEADER_WITH_SCALE,
};
use tch::{Kind, Tensor};

use crate::backbone::FeatureNet;
use crate::checkpoint::{BadCheckpoint, Checkpoint, HostTensor};
use crate::color;
use crate::error::{EngineError, Result};
use crate::image_io::{self, Extent};
use crate::loss::{GatysLoss, LossTerms};
use crate::memory;
use crate::optim;

/// Where a render stands, reported after every iteration.
pub struct Progress<'a> {
    /// Iterations done.
    pub iteration: u32,
    pub iterations: u32,
    /// The most recent losses (of the pastiche before the last iteration).
    pub latest: LossRecord,
    /// The size (longer side, in pixels) being rendered: `size`, or one of a
    /// multi-scale render's `scales`.
    pub scale: u32,
    /// The current iterate (1x3xHxW in [0, 1], on the render's device), for
    /// previews.
    pub pastiche: &'a Tensor,
    /// The rest of what a [`checkpoint`](Self::checkpoint) holds.
    optimizer: &'a dyn optim::Optimizer,
    optimizer_kind: pastiche_spec::OptimizerKind,
    losses: &'a [LossRecord],
    recent: &'a VecDeque<f64>,
    style_weight: f64,
    checkpointable: bool,
}

impl std::fmt::Debug for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("iteration", &self.iteration)
            .field("iterations", &self.iterations)
            .field("latest", &self.latest)
            .finish_non_exhaustive()
    }
}

impl Progress<'_> {
    /// Whether [`checkpoint`](Self::checkpoint) can be taken (not in a
    /// multi-scale render, yet).
    pub fn can_checkpoint(&self) -> bool {
        self.checkpointable
    }

    /// Where the render stands now, copied to the host: resuming from it
    /// ([`Prepared::resume_from`]) carries on with the next iteration. `label`
    /// names whose render it is, checked when resuming.
    pub fn checkpoint(&self, label: &str) -> Result<Checkpoint> {
        if !self.checkpointable {
            return Err(EngineError::NoCheckpoint(
                "a multi-scale render takes no checkpoints",
            ));
        }
        Ok(Checkpoint {
            iteration: self.iteration,
            label: label.to_owned(),
            optimizer: self.optimizer_kind,
            x: HostTensor::of(self.pastiche)?,
            state: self.optimizer.state()?,
            losses: self.losses.to_vec(),
            recent: self.recent.iter().copied().collect(),
            style_weight: self.style_weight,
        })
    }
}

/// What a render produced.
pub struct Rendered {
    /// `[1, 3, H, W]` in [0, 1], on the CPU.
    pub image: Tensor,
    /// One row per logged iteration, the last iteration included.
    pub losses: Vec<LossRecord>,
    /// beta, as given or as `style_weight = "auto"` chose it.
    pub style_weight: f64,
    /// The iteration after which `stop_tolerance` stopped the render, before
    /// `iterations`; the last row of [`losses`](Self::losses) is its. `None`:
    /// every iteration ran.
    pub stopped_at: Option<u32>,
    /// A multi-scale render's scales, in order: each one's size and how many
    /// rows of [`losses`](Self::losses) it logged. Empty for one scale.
    pub scales: Vec<(u32, usize)>,
    /// The checkpoint's iteration, where the render resumed from one.
    pub resumed_from: Option<u32>,
    /// This run's time (after the checkpoint, where it resumed from one).
    pub elapsed: Duration,
}

impl Rendered {
    pub fn save_png(&self, path: &Path) -> Result<()> {
        image_io::save_png(&self.image, path)
    }

    /// `losses.csv`; a multi-scale render's has a `scale` column.
    pub fn losses_csv(&self) -> String {
        let mut csv = String::from(if self.scales.is_empty() {
            LOSSES_CSV_HEADER
        } else {
            LOSSES_CSV_HEADER_WITH_SCALE
        });
        csv.push('\n');
        let mut scale_of_rows = self
            .scales
            .iter()
            .flat_map(|&(size, rows)| std::iter::repeat_n(size, rows));
        for record in &self.losses {
            csv.push_str(&record.to_csv_row());
            if let Some(size) = scale_of_rows.next() {
                csv.push_str(&format!(",{size}"));
            }
            csv.push('\n');
        }
        csv
    }

    pub fn save_losses_csv(&self, path: &Path) -> Result<()> {
        image_io::write_atomically(path, self.losses_csv().as_bytes())
    }
}

/// The inputs of a render, read, resized and placed on the net's device.
pub struct Prepared {
    content: Tensor,
    /// The style images and their blend weights (one image: weight 1).
    styles: Vec<(Tensor, f64)>,
    init: Tensor,
    /// Where to carry on from, instead of `init`.
    resume: Option<Checkpoint>,
    /// What the memory model makes of the render (inputs read from files).
    shape: Option<memory::RenderShape>,
}

impl Prepared {
    /// Reads and checks everything before any optimisation starts, so bad input
    /// fails fast: unreadable images, layers with no pixels left, renders too big
    /// for memory (judged from the image headers, before anything is decoded).
    /// `style`'s images are file paths.
    pub fn new(
        net: &FeatureNet,
        params: &RenderParams,
        content: &Path,
        style: &Style,
    ) -> Result<Self> {
        params.validate()?;
        assert_eq!(
            net.backbone(),
            params.backbone,
            "net loaded for another backbone"
        );
        let content_dimensions = image_io::dimensions(content)?;
        let content_extent = content_dimensions.with_longer_side(params.size);
        let style_side = |size| style_side(params, size);
        let deepest = check_layers_have_pixels(params, "content", content_extent)?;
        let mut style_extents = Vec::new();
        for (path, weight) in style.images() {
            let path = Path::new(path);
            let dimensions = image_io::dimensions(path)?;
            let extent = dimensions.with_longer_side(style_side(params.size));
            check_layers_have_pixels(params, "style", extent)?;
            style_extents.push((path, dimensions, extent, weight));
        }
        // A blend's images are read one after the other: the largest decides.
        let largest_style = |size: u32| {
            style_extents
                .iter()
                .map(|&(_, dimensions, _, _)| dimensions.with_longer_side(style_side(size)))
                .max_by_key(|e| u64::from(e.width) * u64::from(e.height))
                .expect("a style has an image")
        };
        let shape_at = |size| memory::RenderShape {
            backbone: params.backbone,
            deepest,
            content: content_dimensions.with_longer_side(size),
            style: largest_style(size),
            optimizer: params.optimizer.clone(),
            iterations: params.iterations,
            precision: params.precision,
            items: 1,
        };
        let shape = shape_at(params.size);
        memory::check_fits(net.device(), params.size, shape_at)?;

        let content = image_io::load_resized(content, |_| content_extent)?;
        let device = net.device();
        let styles = style_extents
            .into_iter()
            .map(|(path, _, extent, weight)| {
                Ok((
                    image_io::load_resized(path, |_| extent)?.f_to_device(device)?,
                    weight,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let init = match &params.init {
            Init::Content => content.copy(),
            Init::Noise => image_io::white_noise(params.seed, content_extent)?,
            Init::Image(path) => image_io::load_resized(path, |_| content_extent)?,
        };
        Ok(Prepared {
            content: content.f_to_device(device)?,
            styles,
            init: init.f_to_device(device)?,
            resume: None,
            shape: Some(shape),
        })
    }
}

impl Prepared {
    /// Inputs already decoded: `[1, 3, H, W]` tensors in [0, 1] (the init of the
    /// content's size). Checked like files are.
    pub fn from_tensors(
        net: &FeatureNet,
        params: &RenderParams,
        content: &Tensor,
        style: &Tensor,
        init: &Tensor,
    ) -> Result<Self> {
        Self::from_tensors_blended(net, params, content, &[(style, 1.0)], init)
    }

    /// As [`from_tensors`](Self::from_tensors), with a blend of style images and
    /// their weights (which should sum to 1, as a [`Style`]'s do).
    pub fn from_tensors_blended(
        net: &FeatureNet,
        params: &RenderParams,
        content: &Tensor,
        styles: &[(&Tensor, f64)],
        init: &Tensor,
    ) -> Result<Self> {
        params.validate()?;
        assert!(!styles.is_empty(), "a style has at least one image");
        check_layers_have_pixels(params, "content", extent_of(content)?)?;
        let device = net.device();
        let styles = styles
            .iter()
            .map(|&(style, weight)| {
                check_layers_have_pixels(params, "style", extent_of(style)?)?;
                Ok((style.f_to_device(device)?, weight))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepared {
            content: content.f_to_device(device)?,
            styles,
            init: init.f_to_device(device)?,
            resume: None,
            shape: None,
        })
    }
}

impl Prepared {
    /// Makes the render carry on from `checkpoint` (taken by a render of the
    /// same `params` and inputs, see [`Progress::checkpoint`]) rather than
    /// start from its first iteration. A checkpoint that does not fit this
    /// render (another optimiser, size or iteration count) is refused, and the
    /// render starts over.
    pub fn resume_from(
        &mut self,
        params: &RenderParams,
        checkpoint: Checkpoint,
    ) -> std::result::Result<(), BadCheckpoint> {
        if !params.scales.is_empty() {
            return Err(BadCheckpoint(
                "a multi-scale render is not resumed from checkpoints".into(),
            ));
        }
        checkpoint.check_fits(params, &self.init.size())?;
        self.resume = Some(checkpoint);
        Ok(())
    }
}

/// The style image's longer side in a render at `size` px: `size` times
/// `style_scale`.
fn style_side(params: &RenderParams, size: u32) -> u32 {
    ((f64::from(size) * params.style_scale).round() as u32).max(1)
}

fn extent_of(image: &Tensor) -> Result<Extent> {
    let (_, _, height, width) = image.size4()?;
    Ok(Extent {
        width: width as u32,
        height: height as u32,
    })
}

/// Index of the deepest layer used; an error if any used layer would have no pixels.
fn check_layers_have_pixels(
    params: &RenderParams,
    image: &'static str,
    extent: Extent,
) -> Result<usize> {
    let backbone = params.backbone;
    let (h, w) = (i64::from(extent.height), i64::from(extent.width));
    let shapes = FeatureNet::layer_shapes(backbone, h, w);
    let names = params
        .content_layers
        .iter()
        .chain(params.style_layers.iter().map(|l| &l.name));
    let mut deepest = 0;
    for name in names {
        let index = backbone
            .layer_index(name)
            .map_err(pastiche_spec::ParamError::from)?;
        let (_, lh, lw) = shapes[index];
        if lh < 1 || lw < 1 {
            return Err(EngineError::TooSmall {
                image,
                width: w,
                height: h,
                layer: name.clone(),
                backbone,
            });
        }
        deepest = deepest.max(index);
    }
    Ok(deepest)
}

/// Runs the optimisation. `observer` sees every iteration and may stop the render
/// by returning `Break` (it then fails with [`EngineError::Cancelled`]). With
/// `stop_tolerance` > 0, a scale stops early after the first iteration `k` at
/// which [`RenderParams::stops_at`] holds for the totals after `k - stop_window`
/// and `k` iterations ([`Rendered::stopped_at`] for the last scale).
///
/// With `scales`, the render runs at each of them, coarse to fine, then at
/// `size`: each scale's content and style are `inputs` shrunk by area, and its
/// start is the previous scale's result resized up (the first's is the render's
/// start at that size), optimised with a fresh optimiser. Iterations count on
/// across scales; `style_weight = "auto"` is chosen once, at the first.
pub fn render(
    net: &FeatureNet,
    params: &RenderParams,
    inputs: Prepared,
    observer: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Rendered> {
    let started = Instant::now();
    let stages = params.stages();
    if stages.len() == 1 {
        return render_one_scale(net, params, inputs, observer);
    }
    let total = params.total_iterations();
    let full = extent_of(&inputs.content)?;
    let style_side = |size| style_side(params, size);
    // Every scale's images keep pixels in every layer used: checked before the
    // first scale runs rather than when a later one starts.
    for stage in &stages {
        check_layers_have_pixels(params, "content", full.with_longer_side(stage.size))?;
        for (style, _) in &inputs.styles {
            let extent = extent_of(style)?.with_longer_side(style_side(stage.size));
            check_layers_have_pixels(params, "style", extent)?;
        }
    }
    let device = net.device();
    let mut losses = Vec::new();
    let mut scales = Vec::new();
    let mut style_weight = params.style_weight;
    let mut previous: Option<Tensor> = None;
    let mut done = 0;
    let mut stopped_at = None;
    for (index, stage) in stages.iter().enumerate() {
        let last = index + 1 == stages.len();
        let extent = full.with_longer_side(stage.size);
        let start = match &previous {
            Some(result) => image_io::resize(&result.f_to_device(device)?, extent)?,
            None if params.init == Init::Noise => {
                image_io::white_noise(params.seed, extent)?.f_to_device(device)?
            }
            None => image_io::resize(&inputs.init, extent)?,
        };
        let scaled = Prepared {
            content: image_io::resize(&inputs.content, extent)?,
            styles: inputs
                .styles
                .iter()
                .map(|(style, weight)| {
                    let extent = extent_of(style)?.with_longer_side(style_side(stage.size));
                    Ok((image_io::resize(style, extent)?, *weight))
                })
                .collect::<Result<_>>()?,
            init: start,
            resume: None,
            shape: None,
        };
        let stage_params = RenderParams {
            size: stage.size,
            iterations: stage.iterations,
            style_weight,
            // The colours are the output's, once.
            original_colors: params.original_colors && last,
            scales: Vec::new(),
            scale_iterations: Vec::new(),
            ..params.clone()
        };
        let rendered = render_one_scale(net, &stage_params, scaled, &mut |progress| {
            observer(&Progress {
                iteration: done + progress.iteration,
                iterations: total,
                scale: stage.size,
                latest: LossRecord {
                    iteration: done + progress.latest.iteration,
                    ..progress.latest
                },
                pastiche: progress.pastiche,
                // The state is this scale's, which a resume could not place:
                // multi-scale renders take no checkpoints.
                checkpointable: false,
                ..*progress
            })
        })
        .map_err(|err| match err {
            EngineError::Cancelled(at) => EngineError::Cancelled(done + at),
            EngineError::NonFiniteLoss { iteration, value } => EngineError::NonFiniteLoss {
                iteration: done + iteration,
                value,
            },
            other => other,
        })?;
        style_weight = StyleWeight::Fixed(rendered.style_weight);
        scales.push((stage.size, rendered.losses.len()));
        losses.extend(rendered.losses.iter().map(|row| LossRecord {
            iteration: done + row.iteration,
            ..*row
        }));
        // A scale that stopped early hands its result on where it stopped.
        let ran = rendered.stopped_at.unwrap_or(stage.iterations);
        if last {
            stopped_at = rendered.stopped_at.map(|at| done + at);
        }
        done += ran;
        previous = Some(rendered.image);
    }
    Ok(Rendered {
        image: previous.expect("a render has a scale"),
        losses,
        style_weight: match style_weight {
            StyleWeight::Fixed(beta) => beta,
            auto => unreachable!("each scale fixes beta, got {auto:?}"),
        },
        stopped_at,
        scales,
        resumed_from: None,
        elapsed: started.elapsed(),
    })
}

/// One render of a [`render_batch`]: its parameters, inputs and observer.
pub struct BatchItem<'a> {
    pub params: &'a RenderParams,
    pub inputs: Prepared,
    pub observer: &'a mut dyn FnMut(&Progress) -> ControlFlow<()>,
}

/// Renders several renders on one net at once: each iteration evaluates every
/// render still running in one forward and one backward pass over their images
/// stacked into a batch (those of one image size and one set of layers
/// together), and steps each render's own optimiser, so that a batch couples no
/// two renders: an item's result is what it would be alone (to float
/// tolerance), and an item that fails or is cancelled ends alone while the
/// others go on. Results come in the items' order.
///
/// As many items run at once as the memory model says fit (each was checked
/// alone by [`Prepared::new`]); a multi-scale render runs alone.
pub fn render_batch(net: &FeatureNet, items: Vec<BatchItem<'_>>) -> Vec<Result<Rendered>> {
    let mut results: Vec<Option<Result<Rendered>>> = items.iter().map(|_| None).collect();
    let mut runs = Vec::new();
    for (slot, item) in items.into_iter().enumerate() {
        if item.params.stages().len() > 1 {
            results[slot] = Some(render(net, item.params, item.inputs, item.observer));
            continue;
        }
        let shape = item.inputs.shape.clone();
        match Run::start(net, item.params, item.inputs, item.observer) {
            Ok(run) => runs.push((slot, shape, run)),
            Err(err) => results[slot] = Some(Err(err)),
        }
    }
    let shapes: Option<Vec<memory::RenderShape>> =
        runs.iter().map(|(_, shape, _)| shape.clone()).collect();
    let at_once = match shapes {
        Some(shapes) => memory::items_at_once(net.device(), &shapes),
        None => runs.len(),
    }
    .max(1);
    let mut runs = runs.into_iter().peekable();
    while runs.peek().is_some() {
        let (slots, chunk): (Vec<usize>, Vec<Run>) = runs
            .by_ref()
            .take(at_once)
            .map(|(slot, _, run)| (slot, run))
            .unzip();
        for (slot, result) in slots.into_iter().zip(optimise(chunk)) {
            results[slot] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|result| result.expect("every item has a result"))
        .collect()
}

/// One scale's optimisation: [`render`] at `params.size` alone.
fn render_one_scale(
    net: &FeatureNet,
    params: &RenderParams,
    inputs: Prepared,
    observer: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Rendered> {
    let run = Run::start(net, params, inputs, observer)?;
    optimise(vec![run]).remove(0)
}

/// One render's optimisation under way, advanced an iteration at a time by
/// [`optimise`], alone or beside others.
struct Run<'a> {
    params: &'a RenderParams,
    loss: GatysLoss<'a>,
    /// For `original_colors`.
    content: Tensor,
    optimizer: Box<dyn optim::Optimizer + Send>,
    /// The pastiche.
    x: Tensor,
    /// Iterations done.
    iteration: u32,
    losses: Vec<LossRecord>,
    /// Early stopping: the totals after the last `stop_window` iterations and
    /// after this one, oldest first. They are the totals the render evaluates
    /// anyway, so the rule costs no evaluation and no transfer.
    recent: VecDeque<f64>,
    resumed_from: Option<u32>,
    started: Instant,
    observer: &'a mut dyn FnMut(&Progress) -> ControlFlow<()>,
    state: RunState,
}

enum RunState {
    /// Iterating, or done with every iteration.
    Running,
    /// `stop_tolerance` stopped it; the losses at the pastiche as it is.
    Stopped(LossRecord),
    Failed(EngineError),
}

impl<'a> Run<'a> {
    fn start(
        net: &'a FeatureNet,
        params: &'a RenderParams,
        inputs: Prepared,
        observer: &'a mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Self> {
        assert_eq!(
            net.precision(),
            params.precision,
            "net loaded in another precision"
        );
        let mut loss = GatysLoss::new(net, params, &inputs.content, &inputs.styles)?;
        let mut optimizer = optim::build(&params.optimizer);
        // A copy: the render moves it in place, and the caller's init may be
        // the very tensor it was given (`Prepared::from_tensors`).
        let mut x = inputs.init.f_to_kind(Kind::Float)?.f_detach_copy()?;
        let mut losses = Vec::new();
        let window = params.stop_window as usize;
        let mut recent = VecDeque::with_capacity(if params.stop_tolerance > 0.0 {
            window + 1
        } else {
            0
        });
        let mut iteration = 0;
        let resumed_from = inputs.resume.as_ref().map(|c| c.iteration);
        if let Some(checkpoint) = inputs.resume {
            // The objective as the checkpoint's render had it: an `auto` beta
            // is not taken as chosen again (the same on the same device, and
            // what the iterate was optimised for on another).
            loss.set_style_weight(checkpoint.style_weight);
            x = checkpoint.x.to_tensor(net.device())?;
            optimizer.restore(&checkpoint.state, net.device())?;
            losses = checkpoint.losses;
            recent.extend(checkpoint.recent);
            iteration = checkpoint.iteration;
        }
        Ok(Run {
            params,
            loss,
            content: inputs.content,
            optimizer,
            x,
            iteration,
            losses,
            recent,
            resumed_from,
            started: Instant::now(),
            observer,
            state: RunState::Running,
        })
    }

    fn is_iterating(&self) -> bool {
        matches!(self.state, RunState::Running) && self.iteration < self.params.iterations
    }

    /// Takes the loss at the pastiche (the row the log shows for this
    /// iteration, and the optimiser's first evaluation, which every optimiser
    /// makes at `x` before moving it): the render stops here if the early
    /// stopping rule says so, and otherwise hands the evaluation on to the step.
    fn before_step(&mut self, evaluated: (LossTerms, Tensor)) -> Option<(LossTerms, Tensor)> {
        let (terms, grad) = evaluated;
        let params = self.params;
        if params.stop_tolerance > 0.0 {
            let window = params.stop_window as usize;
            self.recent.push_back(terms.total);
            if self.recent.len() > window + 1 {
                self.recent.pop_front();
            }
            if self.recent.len() == window + 1
                && params.stops_at(self.iteration, self.recent[0], terms.total)
            {
                self.state = RunState::Stopped(terms.at(self.iteration));
                return None;
            }
        }
        Some((terms, grad))
    }

    /// After the optimiser's step (which moved `x` from where `terms` were
    /// measured): the pixels clamped, the row logged and the observer told.
    fn after_step(&mut self, terms: LossTerms) -> Result<()> {
        let _ = tch::no_grad(|| self.x.f_clamp_(0.0, 1.0))?;
        let latest = terms.at(self.iteration);
        if self.params.logs_at(self.iteration) {
            self.losses.push(latest);
        }
        self.iteration += 1;
        let progress = Progress {
            iteration: self.iteration,
            iterations: self.params.iterations,
            scale: self.params.size,
            latest,
            pastiche: &self.x,
            optimizer: &*self.optimizer,
            optimizer_kind: self.params.optimizer.kind,
            losses: &self.losses,
            recent: &self.recent,
            style_weight: self.loss.style_weight(),
            checkpointable: true,
        };
        if (self.observer)(&progress).is_break() {
            return Err(EngineError::Cancelled(self.iteration));
        }
        Ok(())
    }

    fn fail(&mut self, err: EngineError) {
        self.state = RunState::Failed(err);
    }

    /// The render as it ended: its last row is the loss at the pastiche.
    fn finish(self) -> Result<Rendered> {
        let params = self.params;
        let (last, stopped_at) = match self.state {
            RunState::Failed(err) => return Err(err),
            // Evaluated at the pastiche as it is: the last row is that iteration's.
            RunState::Stopped(last) => (last, Some(last.iteration)),
            RunState::Running => {
                let last = finite(self.loss.measure(&self.x)?, params.iterations)?;
                (last.at(params.iterations), None)
            }
        };
        let mut losses = self.losses;
        losses.push(last);
        // After the optimisation, which the losses describe: the colours are
        // not part of what it minimises.
        let image = if params.original_colors {
            color::keep_content_colors(&self.x, &self.content)?
        } else {
            self.x
        };
        Ok(Rendered {
            image: image.f_to_device(tch::Device::Cpu)?,
            losses,
            style_weight: self.loss.style_weight(),
            stopped_at,
            scales: Vec::new(),
            resumed_from: self.resumed_from,
            elapsed: self.started.elapsed(),
        })
    }
}

/// The losses, unless they are not finite (a render that has diverged).
fn finite(terms: LossTerms, iteration: u32) -> Result<LossTerms> {
    if terms.total.is_finite() {
        Ok(terms)
    } else {
        Err(EngineError::NonFiniteLoss {
            iteration,
            value: terms.total,
        })
    }
}

/// Runs `runs` to their ends, an iteration of each at a time: the loss at
/// every pastiche in one batched evaluation, then every optimiser's step side
/// by side (see [`step_together`]).
fn optimise(mut runs: Vec<Run<'_>>) -> Vec<Result<Rendered>> {
    loop {
        let iterating: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i].is_iterating())
            .collect();
        if iterating.is_empty() {
            break;
        }
        let at_x = GatysLoss::evaluate_many(
            &iterating
                .iter()
                .map(|&i| (&runs[i].loss, &runs[i].x))
                .collect::<Vec<_>>(),
        );
        let mut firsts: Vec<Option<(LossTerms, Tensor)>> = runs.iter().map(|_| None).collect();
        for (&i, evaluated) in iterating.iter().zip(at_x) {
            let run = &mut runs[i];
            let evaluated =
                evaluated.and_then(|(terms, grad)| Ok((finite(terms, run.iteration)?, grad)));
            match evaluated {
                Ok(evaluated) => firsts[i] = run.before_step(evaluated),
                Err(err) => run.fail(err),
            }
        }
        let terms: Vec<Option<LossTerms>> = firsts
            .iter()
            .map(|first| first.as_ref().map(|(terms, _)| *terms))
            .collect();
        let stepped = step_together(&mut runs, firsts);
        for ((run, stepped), terms) in runs.iter_mut().zip(stepped).zip(terms) {
            let (Some(stepped), Some(terms)) = (stepped, terms) else {
                continue;
            };
            if let Err(err) = stepped.and_then(|_| run.after_step(terms)) {
                run.fail(err);
            }
        }
    }
    runs.into_iter().map(Run::finish).collect()
}

/// A message from an optimiser's step to [`step_together`].
enum FromStep {
    /// Evaluate item `item` at `point` (a line search's trial point).
    Evaluate {
        item: usize,
        point: Tensor,
        answer: mpsc::Sender<Result<(f64, Tensor)>>,
    },
    /// A step is over.
    Done,
}

/// Sends [`FromStep::Done`] when a step ends, however it ends.
struct DoneOnDrop(mpsc::Sender<FromStep>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(FromStep::Done);
    }
}

/// One optimiser step of each run given its first evaluation (at its `x`),
/// side by side: each step runs on a thread of its own, and whatever further
/// evaluations the steps ask for (L-BFGS's line search: a number that differs
/// from item to item) are served in rounds, each round one batched evaluation
/// of every step still going. Returns each step's outcome (`None`: no step).
fn step_together(
    runs: &mut [Run<'_>],
    firsts: Vec<Option<(LossTerms, Tensor)>>,
) -> Vec<Option<Result<f64>>> {
    std::thread::scope(|scope| {
        let (to_serve, requests) = mpsc::channel::<FromStep>();
        let mut steps = Vec::new();
        // The losses and iterations stay here; each optimiser and pastiche
        // goes to its step's thread.
        let mut losses = Vec::new();
        for (item, (run, first)) in runs.iter_mut().zip(firsts).enumerate() {
            let Run {
                loss,
                optimizer,
                x,
                iteration,
                ..
            } = run;
            losses.push((&*loss, *iteration));
            let Some((terms, grad)) = first else {
                steps.push(None);
                continue;
            };
            let to_serve = to_serve.clone();
            steps.push(Some(scope.spawn(move || {
                let _done = DoneOnDrop(to_serve.clone());
                let mut first = Some((terms.total, grad));
                optimizer.step(x, &mut |point: &Tensor| match first.take() {
                    Some(at_x) => Ok(at_x),
                    None => {
                        let (answer, answered) = mpsc::channel();
                        let request = FromStep::Evaluate {
                            item,
                            point: point.shallow_clone(),
                            answer,
                        };
                        to_serve.send(request).map_err(|_| serving_ended())?;
                        answered.recv().map_err(|_| serving_ended())?
                    }
                })
            })));
        }
        drop(to_serve);
        let mut going = steps.iter().flatten().count();
        let mut waiting = Vec::new();
        while going > 0 {
            match requests.recv().expect("every step says when it is done") {
                FromStep::Evaluate {
                    item,
                    point,
                    answer,
                } => waiting.push((item, point, answer)),
                FromStep::Done => going -= 1,
            }
            if !waiting.is_empty() && waiting.len() == going {
                let evaluated = GatysLoss::evaluate_many(
                    &waiting
                        .iter()
                        .map(|(item, point, _)| (losses[*item].0, point))
                        .collect::<Vec<_>>(),
                );
                for ((item, _, answer), evaluated) in waiting.drain(..).zip(evaluated) {
                    let iteration = losses[item].1;
                    let evaluated = evaluated
                        .and_then(|(terms, grad)| Ok((finite(terms, iteration)?.total, grad)));
                    // A step that has gone has nothing left to ask.
                    let _ = answer.send(evaluated);
                }
            }
        }
        steps
            .into_iter()
            .map(|step| {
                step.map(|step| {
                    step.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
            })
            .collect()
    })
}

fn serving_ended() -> EngineError {
    EngineError::Panicked("the batch stopped serving evaluations".into())
}
