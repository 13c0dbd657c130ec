//! `pastiche render`: one content image, one style image (or a blend of
//! several), one pastiche.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pastiche_engine::spec::Style;
use pastiche_engine::weights::{self, WeightsChoice};
use pastiche_engine::{parse_device, render, FeatureNet, Prepared};

use crate::param_flags::ParamFlags;

#[derive(Args)]
pub struct RenderArgs {
    /// The photo whose content the pastiche keeps (JPEG or PNG).
    #[arg(long, env = "PASTICHE_CONTENT")]
    content: PathBuf,
    /// The artwork whose style the pastiche takes (JPEG or PNG). Give it more
    /// than once to blend several styles.
    #[arg(long, env = "PASTICHE_STYLE", required = true)]
    style: Vec<PathBuf>,
    /// With several --style: their relative weights in the blend, in order
    /// (`3,1`); equal weights without it.
    #[arg(long, env = "PASTICHE_STYLE_BLEND_WEIGHTS", value_delimiter = ',')]
    style_blend_weights: Option<Vec<f64>>,
    /// Where to write the pastiche (PNG).
    #[arg(long, env = "PASTICHE_OUT")]
    out: PathBuf,
    /// Where to write the loss log (CSV: iteration,content,style,tv,total).
    #[arg(long, env = "PASTICHE_LOSSES")]
    losses: Option<PathBuf>,

    /// Backbone weights: a .safetensors file with torchvision's names (`pastiche
    /// weights import` makes one). Without it, the backbone's installed pretrained
    /// file (see `pastiche weights list`; looked for in $PASTICHE_WEIGHTS_DIR, else in
    /// .deps/weights above the executable), else a seeded random network (lower quality).
    #[arg(long, env = "PASTICHE_WEIGHTS")]
    weights: Option<PathBuf>,
    /// cpu, cuda:N, or auto (the first GPU if there is one).
    #[arg(long, env = "PASTICHE_DEVICE", default_value = "auto")]
    device: String,
    /// The render's parameters, as the grid file's keys.
    #[command(flatten)]
    params: ParamFlags,
}

pub fn run(args: RenderArgs) -> Result<()> {
    let params = args.params.params()?;
    let style = style_of(&args.style, args.style_blend_weights.as_deref())?;
    let device = parse_device(&args.device)?;
    // Before the render, not after it: a long render is not lost to a typo.
    check_writable(&args.out)?;
    if let Some(losses) = &args.losses {
        check_writable(losses)?;
    }
    let weights = weights::resolve(params.backbone, args.weights.as_deref());
    match &weights {
        WeightsChoice::Given(path) => {
            tracing::info!(backbone = %params.backbone, weights = %path.display(), "loading weights")
        }
        WeightsChoice::Installed(path) => tracing::info!(
            backbone = %params.backbone,
            weights = %path.display(),
            "no --weights given: using the installed pretrained weights"
        ),
        WeightsChoice::Random => tracing::warn!(
            backbone = %params.backbone,
            "no --weights given and none installed for this backbone: using a seeded \
             random-weight network, which transfers style less faithfully than pretrained \
             weights (see `pastiche weights list`)"
        ),
    }
    let net = FeatureNet::load_with(params.backbone, weights.path(), device, params.precision)?;
    let prepared = Prepared::new(&net, &params, &args.content, &style)?;

    let bar = ProgressBar::new(u64::from(params.total_iterations()));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} it  {per_sec}  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    tracing::info!(
        device = %pastiche_engine::device_name(device),
        iterations = params.total_iterations(),
        size = params.size,
        scales = ?params.scales,
        optimizer = %params.optimizer.kind,
        precision = %params.precision,
        "rendering"
    );
    let rendered = render(&net, &params, prepared, &mut |progress| {
        let l = progress.latest;
        bar.set_position(u64::from(progress.iteration));
        let scale = if params.scales.is_empty() {
            String::new()
        } else {
            format!("{} px  ", progress.scale)
        };
        bar.set_message(format!(
            "{scale}content {:.4e}  style {:.4e}  total {:.4e}",
            l.content, l.style, l.total
        ));
        if l.iteration > 0 && l.iteration % params.log_every == 0 {
            bar.suspend(|| {
                tracing::info!(
                    iteration = l.iteration,
                    scale = progress.scale,
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
    if let Some(iteration) = rendered.stopped_at {
        tracing::info!(
            iteration,
            iterations = params.iterations,
            stop_tolerance = params.stop_tolerance,
            stop_window = params.stop_window,
            "stopped early after iteration {iteration} of {}: the total loss fell by less \
             than {} of itself over the last {} iterations",
            params.iterations,
            params.stop_tolerance,
            params.stop_window,
        );
    }
    tracing::info!(
        out = %args.out.display(),
        seconds = rendered.elapsed.as_secs_f64(),
        content = last.content,
        style = last.style,
        total = last.total,
        style_weight = rendered.style_weight,
        "done"
    );
    Ok(())
}

/// The --style images and their --style-blend-weights as one style.
fn style_of(images: &[PathBuf], weights: Option<&[f64]>) -> Result<Style> {
    let weights = match weights {
        None => vec![1.0; images.len()],
        Some(weights) if weights.len() == images.len() => weights.to_vec(),
        Some(weights) => anyhow::bail!(
            "--style-blend-weights gives {} weights for {} --style images",
            weights.len(),
            images.len()
        ),
    };
    let parts = images
        .iter()
        .map(|path| path.display().to_string())
        .zip(weights);
    Style::blend(parts).map_err(|e| anyhow::anyhow!("--style: {e}"))
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
