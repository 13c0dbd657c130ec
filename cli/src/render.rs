//! `pastiche render`: one content image, one style image, one pastiche.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pastiche_engine::spec::{
    Backbone, Init, LineSearch, OptimizerKind, OptimizerSpec, RenderParams, StyleLayer,
};
use pastiche_engine::{parse_device, render, FeatureNet, Prepared};

#[derive(Args)]
pub struct RenderArgs {
    /// The photo whose content the pastiche keeps (JPEG or PNG).
    #[arg(long, env = "PASTICHE_CONTENT")]
    content: PathBuf,
    /// The artwork whose style the pastiche takes (JPEG or PNG).
    #[arg(long, env = "PASTICHE_STYLE")]
    style: PathBuf,
    /// Where to write the pastiche (PNG).
    #[arg(long, env = "PASTICHE_OUT")]
    out: PathBuf,
    /// Where to write the loss log (CSV: iteration,content,style,tv,total).
    #[arg(long, env = "PASTICHE_LOSSES")]
    losses: Option<PathBuf>,

    /// vgg16, vgg19 or googlenet.
    #[arg(long, env = "PASTICHE_BACKBONE", default_value = "vgg19")]
    backbone: Backbone,
    /// Backbone weights: a .safetensors file with torchvision's names, as written by
    /// scripts/export_weights.py. Without it, a seeded random network (lower quality).
    #[arg(long, env = "PASTICHE_WEIGHTS")]
    weights: Option<PathBuf>,
    /// Comma-separated content layers [default: relu4_2; inception3b for googlenet].
    #[arg(long, env = "PASTICHE_CONTENT_LAYERS", value_delimiter = ',')]
    content_layers: Option<Vec<String>>,
    /// Comma-separated style layers, each NAME or NAME:WEIGHT
    /// [default: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1; conv1,conv3,inception3a,inception4a,inception5a for googlenet].
    #[arg(long, env = "PASTICHE_STYLE_LAYERS", value_delimiter = ',')]
    style_layers: Option<Vec<StyleLayer>>,
    /// alpha: weight of the content loss.
    #[arg(long, env = "PASTICHE_CONTENT_WEIGHT", default_value_t = 1.0)]
    content_weight: f64,
    /// beta: weight of the style loss.
    #[arg(long, env = "PASTICHE_STYLE_WEIGHT", default_value_t = 1e6)]
    style_weight: f64,
    /// gamma: weight of the total-variation loss (smoothness).
    #[arg(long, env = "PASTICHE_TV_WEIGHT", default_value_t = 0.0)]
    tv_weight: f64,
    /// Start from `content`, seeded white `noise`, or the path of an image.
    #[arg(long, env = "PASTICHE_INIT", default_value = "content")]
    init: Init,
    /// lbfgs or adam.
    #[arg(long, env = "PASTICHE_OPTIMIZER", default_value = "lbfgs")]
    optimizer: OptimizerKind,
    /// Learning rate [default: 1 for lbfgs, 0.02 for adam].
    #[arg(long, env = "PASTICHE_LR")]
    lr: Option<f64>,
    /// L-BFGS line search: strong_wolfe, or none (a fixed step, as the PyTorch
    /// tutorial; cheaper per iteration but stalls on random-weight backbones).
    #[arg(long, env = "PASTICHE_LINE_SEARCH", default_value = "strong_wolfe")]
    line_search: LineSearch,
    /// L-BFGS history size.
    #[arg(long, env = "PASTICHE_HISTORY_SIZE", default_value_t = 100)]
    history_size: usize,
    /// Optimiser iterations (one L-BFGS iteration or one Adam step each).
    #[arg(long, env = "PASTICHE_ITERATIONS", default_value_t = 300)]
    iterations: u32,
    /// Longer side of the pastiche in pixels.
    #[arg(long, env = "PASTICHE_SIZE", default_value_t = 512)]
    size: u32,
    /// The style image's longer side, relative to the pastiche's.
    #[arg(long, env = "PASTICHE_STYLE_SCALE", default_value_t = 1.0)]
    style_scale: f64,
    /// Seed of the white-noise start.
    #[arg(long, env = "PASTICHE_SEED", default_value_t = 0)]
    seed: u64,
    /// Log the losses every this many iterations (and at the last).
    #[arg(long, env = "PASTICHE_LOG_EVERY", default_value_t = 50)]
    log_every: u32,
    /// cpu, cuda:N, or auto (the first GPU if there is one).
    #[arg(long, env = "PASTICHE_DEVICE", default_value = "auto")]
    device: String,
}

impl RenderArgs {
    fn params(&self) -> RenderParams {
        let defaults = RenderParams::new(self.backbone);
        RenderParams {
            backbone: self.backbone,
            content_layers: self
                .content_layers
                .clone()
                .unwrap_or(defaults.content_layers),
            style_layers: self.style_layers.clone().unwrap_or(defaults.style_layers),
            content_weight: self.content_weight,
            style_weight: self.style_weight,
            tv_weight: self.tv_weight,
            init: self.init.clone(),
            optimizer: OptimizerSpec {
                lr: self.lr.unwrap_or(self.optimizer.default_lr()),
                history_size: self.history_size,
                line_search: self.line_search,
                ..OptimizerSpec::new(self.optimizer)
            },
            iterations: self.iterations,
            size: self.size,
            style_scale: self.style_scale,
            seed: self.seed,
            log_every: self.log_every,
        }
    }
}

pub fn run(args: RenderArgs) -> Result<()> {
    let params = args.params();
    params.validate()?;
    let device = parse_device(&args.device)?;
    // Before the render, not after it: a long render is not lost to a typo.
    check_writable(&args.out)?;
    if let Some(losses) = &args.losses {
        check_writable(losses)?;
    }
    match &args.weights {
        Some(path) => {
            tracing::info!(backbone = %params.backbone, weights = %path.display(), "loading weights")
        }
        None => tracing::warn!(
            backbone = %params.backbone,
            "no --weights given: using a seeded random-weight network, which transfers \
             style less faithfully than pretrained weights (see scripts/export_weights.py)"
        ),
    }
    let net = FeatureNet::load(params.backbone, args.weights.as_deref(), device)?;
    let prepared = Prepared::new(&net, &params, &args.content, &args.style)?;

    let bar = ProgressBar::new(u64::from(params.iterations));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} it  {per_sec}  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    tracing::info!(
        device = %pastiche_engine::device_name(device),
        iterations = params.iterations,
        size = params.size,
        optimizer = %params.optimizer.kind,
        "rendering"
    );
    let rendered = render(&net, &params, prepared, &mut |progress| {
        let l = progress.latest;
        bar.set_position(u64::from(progress.iteration));
        bar.set_message(format!(
            "content {:.4e}  style {:.4e}  total {:.4e}",
            l.content, l.style, l.total
        ));
        if params.logs_at(l.iteration) {
            bar.suspend(|| {
                tracing::info!(
                    iteration = l.iteration,
                    content = l.content,
                    style = l.style,
                    tv = l.tv,
                    total = l.total,
                    "progress"
                )
            });
        }
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    let rendered = rendered?;

    rendered.save_png(&args.out)?;
    if let Some(losses) = &args.losses {
        if let Err(err) = rendered.save_losses_csv(losses) {
            // Both outputs or neither: a pastiche without its log is half a result.
            let _ = std::fs::remove_file(&args.out);
            return Err(err).context("writing the loss log");
        }
    }
    let last = rendered
        .losses
        .last()
        .expect("the last iteration is always logged");
    tracing::info!(
        out = %args.out.display(),
        seconds = rendered.elapsed.as_secs_f64(),
        content = last.content,
        style = last.style,
        total = last.total,
        "done"
    );
    Ok(())
}

/// Whether a file can be written at `path`: its directory is there (or can be
/// made) and takes new files, and `path` is not a directory.
fn check_writable(path: &Path) -> Result<()> {
    let cannot = |why: String| anyhow::anyhow!("cannot write {}: {why}", path.display());
    if path.is_dir() {
        return Err(cannot("it is a directory".into()));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot(format!("{}: {e}", dir.display())))?;
    let probe = dir.join(format!(".pastiche-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| cannot(format!("{}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
