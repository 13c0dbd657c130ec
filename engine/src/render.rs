//! One render: images in, the Gatys optimisation, the pastiche and its losses out.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use pastiche_spec::{Init, LossRecord, RenderParams, Style, LOSSES_CSV_HEADER};
use tch::{Kind, Tensor};

use crate::backbone::FeatureNet;
use crate::color;
use crate::error::{EngineError, Result};
use crate::image_io::{self, Extent};
use crate::loss::GatysLoss;
use crate::memory;
use crate::optim;

/// Where a render stands, reported after every iteration.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Iterations done.
    pub iteration: u32,
    pub iterations: u32,
    /// The most recent losses (of the pastiche before the last iteration).
    pub latest: LossRecord,
    /// The current iterate (1x3xHxW in [0, 1], on the render's device), for
    /// previews.
    pub pastiche: &'a Tensor,
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
    pub elapsed: Duration,
}

impl Rendered {
    pub fn save_png(&self, path: &Path) -> Result<()> {
        image_io::save_png(&self.image, path)
    }

    pub fn losses_csv(&self) -> String {
        let mut csv = String::from(LOSSES_CSV_HEADER);
        csv.push('\n');
        for record in &self.losses {
            csv.push_str(&record.to_csv_row());
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
        let content_extent = image_io::dimensions(content)?.with_longer_side(params.size);
        let style_side = ((f64::from(params.size) * params.style_scale).round() as u32).max(1);
        let deepest = check_layers_have_pixels(params, "content", content_extent)?;
        let mut style_extents = Vec::new();
        for (path, weight) in style.images() {
            let path = Path::new(path);
            let extent = image_io::dimensions(path)?.with_longer_side(style_side);
            check_layers_have_pixels(params, "style", extent)?;
            style_extents.push((path, extent, weight));
        }
        // A blend's images are read one after the other: the largest decides.
        let largest_style = style_extents
            .iter()
            .map(|&(_, extent, _)| extent)
            .max_by_key(|e| u64::from(e.width) * u64::from(e.height))
            .expect("a style has an image");
        let needed = memory::estimate_bytes(
            params.backbone,
            params.precision,
            deepest,
            content_extent,
            largest_style,
        );
        memory::check_fits(net.device(), needed, params.size)?;

        let content = image_io::load_resized(content, |_| content_extent)?;
        let device = net.device();
        let styles = style_extents
            .into_iter()
            .map(|(path, extent, weight)| {
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
        })
    }
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
/// `stop_tolerance` > 0, the render stops early after the first iteration `k` at
/// which [`RenderParams::stops_at`] holds for the totals after `k - stop_window`
/// and `k` iterations ([`Rendered::stopped_at`]).
pub fn render(
    net: &FeatureNet,
    params: &RenderParams,
    inputs: Prepared,
    observer: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Rendered> {
    let started = Instant::now();
    assert_eq!(
        net.precision(),
        params.precision,
        "net loaded in another precision"
    );
    let loss = GatysLoss::new(net, params, &inputs.content, &inputs.styles)?;
    let mut optimizer = optim::build(&params.optimizer);
    let mut x = inputs.init.f_detach()?.f_to_kind(Kind::Float)?;
    let mut losses = Vec::new();
    let evaluate = |iteration: u32, point: &Tensor| {
        let (terms, grad) = loss.evaluate(point)?;
        if !terms.total.is_finite() {
            return Err(EngineError::NonFiniteLoss {
                iteration,
                value: terms.total,
            });
        }
        Ok((terms, grad))
    };
    // Early stopping: the totals after the last `stop_window` iterations and
    // after this one, oldest first. They are the totals the render evaluates
    // anyway (each already on the host), so the rule costs no evaluation and
    // no transfer.
    let window = params.stop_window as usize;
    let mut recent = VecDeque::with_capacity(if params.stop_tolerance > 0.0 {
        window + 1
    } else {
        0
    });
    let mut stopped = None;

    for iteration in 0..params.iterations {
        // The loss at the current pastiche: the row the log shows for
        // `iteration`, and the optimiser's first evaluation, which every
        // optimiser makes at `x` before moving it (one Adam step; L-BFGS's
        // gradient before its direction). Evaluated here, it decides whether to
        // stop before the step rather than after it.
        let (terms, grad) = evaluate(iteration, &x)?;
        if params.stop_tolerance > 0.0 {
            recent.push_back(terms.total);
            if recent.len() > window + 1 {
                recent.pop_front();
            }
            if recent.len() == window + 1 && params.stops_at(iteration, recent[0], terms.total) {
                stopped = Some(terms.at(iteration));
                break;
            }
        }
        let mut first = Some((terms.total, grad));
        optimizer.step(&mut x, &mut |point: &Tensor| match first.take() {
            Some(at_x) => Ok(at_x),
            None => evaluate(iteration, point).map(|(terms, grad)| (terms.total, grad)),
        })?;
        let _ = tch::no_grad(|| x.f_clamp_(0.0, 1.0))?;

        let latest = terms.at(iteration);
        if params.logs_at(iteration) {
            losses.push(latest);
        }
        let progress = Progress {
            iteration: iteration + 1,
            iterations: params.iterations,
            latest,
            pastiche: &x,
        };
        if observer(&progress).is_break() {
            return Err(EngineError::Cancelled(iteration + 1));
        }
    }
    let stopped_at = stopped.map(|last| last.iteration);
    let last = match stopped {
        // Evaluated at the pastiche as it is: the last row is that iteration's.
        Some(last) => last,
        None => {
            let last = loss.measure(&x)?;
            if !last.total.is_finite() {
                return Err(EngineError::NonFiniteLoss {
                    iteration: params.iterations,
                    value: last.total,
                });
            }
            last.at(params.iterations)
        }
    };
    losses.push(last);
    // After the optimisation, which the losses describe: the colours are not part
    // of what it minimises.
    let image = if params.original_colors {
        color::keep_content_colors(&x, &inputs.content)?
    } else {
        x
    };
    Ok(Rendered {
        image: image.f_to_device(tch::Device::Cpu)?,
        losses,
        style_weight: loss.style_weight(),
        stopped_at,
        elapsed: started.elapsed(),
    })
}
