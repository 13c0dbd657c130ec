//! Multi-scale against one scale at 512 px: the wall time a (128, 256, 512)
//! render takes to reach the total loss a single-scale render ends with after
//! 200 iterations, and the single-scale render's time for those 200.
//!
//!     cargo bench -p pastiche-engine --bench multiscale
//!     cargo bench -p pastiche-engine --bench multiscale -- --device cuda:0 --size 1024
//!
//! VGG16 with the pretrained weights `scripts/setup.sh` installs (random ones
//! where there are none, said in the table), L-BFGS without a line search,
//! content start, the README's images. Both renders run in this process, one
//! after the other; the table goes into BENCHMARKS.md (between the
//! `multiscale-bench` markers) unless `--no-write`.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use pastiche_engine::spec::{Backbone, LineSearch, OptimizerKind, OptimizerSpec, RenderParams};
use pastiche_engine::{parse_device, render, weights, FeatureNet, Prepared};

const BACKBONE: Backbone = Backbone::Vgg16;
const SINGLE_ITERATIONS: u32 = 200;
/// Iterations at each coarse scale.
const COARSE_ITERATIONS: u32 = 100;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The wall time after each iteration and the total loss each reported.
struct Trace {
    at: Vec<Duration>,
    totals: Vec<f64>,
    /// The size each iteration ran at.
    scales: Vec<u32>,
}

fn run(net: &FeatureNet, params: &RenderParams, content: &Path, style: &Path) -> Trace {
    let style = pastiche_engine::spec::Style::image(style.to_str().unwrap());
    let prepared = Prepared::new(net, params, content, &style).unwrap();
    let started = Instant::now();
    let mut trace = Trace {
        at: Vec::new(),
        totals: Vec::new(),
        scales: Vec::new(),
    };
    render(net, params, prepared, &mut |p| {
        trace.at.push(started.elapsed());
        // The loss of the iterate before this iteration, at this scale.
        trace.totals.push(p.latest.total);
        trace.scales.push(p.scale);
        ControlFlow::Continue(())
    })
    .unwrap();
    trace
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let device = arg(&args, "--device").unwrap_or_else(|| "cpu".into());
    let size: u32 = arg(&args, "--size").map_or(512, |s| s.parse().unwrap());
    let device_name = pastiche_engine::device_name(parse_device(&device).unwrap());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (content, style) = (
        examples.join("chelsea.png"),
        examples.join("starry_night.jpg"),
    );
    let installed = weights::installed(BACKBONE);
    let net = FeatureNet::load(
        BACKBONE,
        installed.as_deref(),
        parse_device(&device).unwrap(),
    )
    .unwrap();
    let mut optimizer = OptimizerSpec::new(OptimizerKind::Lbfgs);
    optimizer.line_search = LineSearch::None;
    let single = RenderParams {
        optimizer,
        size,
        iterations: SINGLE_ITERATIONS,
        log_every: SINGLE_ITERATIONS,
        ..RenderParams::new(BACKBONE)
    };
    let multi = RenderParams {
        scales: vec![size / 4, size / 2],
        scale_iterations: vec![COARSE_ITERATIONS],
        ..single.clone()
    };

    let one = run(&net, &single, &content, &style);
    // The single-scale render's final total: after its last iteration, which
    // the next report would carry; the last report's is one iteration earlier,
    // so the goal is slightly lenient to neither side.
    let goal = *one.totals.last().unwrap();
    let one_time = *one.at.last().unwrap();
    let several = run(&net, &multi, &content, &style);
    let reached = several
        .totals
        .iter()
        .zip(&several.scales)
        .position(|(&total, &scale)| scale == size && total <= goal);
    let coarse_time = several.at[several.scales.iter().position(|&s| s == size).unwrap() - 1];
    let (reached_text, ratio_text) = match reached {
        Some(i) => {
            // Reported before iteration i + 1 ran: the loss of the iterate after i.
            let time = if i == 0 {
                Duration::ZERO
            } else {
                several.at[i - 1]
            };
            (
                format!(
                    "{:.1} s (iteration {} of {}, {} at {size} px)",
                    time.as_secs_f64(),
                    i,
                    several.totals.len(),
                    i as u32 - 2 * COARSE_ITERATIONS
                ),
                format!("{:.2}", time.as_secs_f64() / one_time.as_secs_f64()),
            )
        }
        None => ("not within its iterations".into(), "-".into()),
    };
    let table = format!(
        "Measured {date} on {device_name} by `cargo bench -p pastiche-engine --bench multiscale`: {BACKBONE} \
         ({weights}), L-BFGS without line search, content start, chelsea.png in starry_night.jpg's style, \
         {size} px. Single scale: {SINGLE_ITERATIONS} iterations. Multi-scale: {} and {} px, {COARSE_ITERATIONS} \
         iterations each, then {size} px until the total loss is at most the single scale's final one.\n\n\
         | render | single scale's final total loss | time to reach it | of the single scale's time |\n\
         |---|---|---|---|\n\
         | single scale, {size} px | {goal:.4e} | {:.1} s (iteration {SINGLE_ITERATIONS}) | 1 |\n\
         | {} → {} → {size} px | | {reached_text} | {ratio_text} |\n\n\
         The two coarse scales took {:.1} s together.\n",
        size / 4,
        size / 2,
        one_time.as_secs_f64(),
        size / 4,
        size / 2,
        coarse_time.as_secs_f64(),
        date = pastiche_farm_tests::utc_now(),
        weights = if installed.is_some() {
            "pretrained, from scripts/setup.sh"
        } else {
            "random weights: none installed"
        },
    );
    println!("{table}");
    if !args.iter().any(|a| a == "--no-write") {
        pastiche_farm_tests::write_benchmarks_section(
            &format!(
                "multiscale-bench:{}",
                if device == "cpu" { "cpu" } else { "gpu" }
            ),
            "Engine: multi-scale against one scale",
            &table,
        );
    }
}
