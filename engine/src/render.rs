//! One render: images in, the Gatys optimisation, the pastiche and its losses out.

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
        let needed =
            memory::estimate_bytes(params.backbone, deepest, content_extent, largest_style);
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
/// by returning `Break` (it then fails with [`EngineError::Cancelled`]).
pub fn render(
    net: &FeatureNet,
    params: &RenderParams,
    inputs: Prepared,
    observer: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Rendered> {
    let started = Instant::now();
    let loss = GatysLoss::new(net, params, &inputs.content, &inputs.styles)?;
    let mut optimizer = optim::build(&params.optimizer);
    let mut x = inputs.init.f_detach()?.f_to_kind(Kind::Float)?;
    let mut losses = Vec::new();

    for iteration in 0..params.iterations {
        // The first evaluation of each iteration is at the current pastiche: that
        // is the loss the log shows for `iteration`.
        let mut at_start = None;
        optimizer.step(&mut x, &mut |point: &Tensor| {
            let (terms, grad) = loss.evaluate(point)?;
            if !terms.total.is_finite() {
                return Err(EngineError::NonFiniteLoss {
                    iteration,
                    value: terms.total,
                });
            }
            at_start.get_or_insert(terms);
            Ok((terms.total, grad))
        })?;
        let _ = tch::no_grad(|| x.f_clamp_(0.0, 1.0))?;

        let latest = at_start
            .expect("every step evaluates the objective")
            .at(iteration);
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
    let last = loss.measure(&x)?;
    if !last.total.is_finite() {
        return Err(EngineError::NonFiniteLoss {
            iteration: params.iterations,
            value: last.total,
        });
    }
    losses.push(last.at(params.iterations));
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
        elapsed: started.elapsed(),
    })
}
