//! Early stopping (`stop_tolerance`, `stop_window`): a render whose loss stops
//! falling ends early and says where; one whose tolerance is off or never met
//! runs every iteration, along the same path.

mod common;

use std::ops::ControlFlow;

use common::repo_root;
use pastiche_engine::spec::{Backbone, LossRecord, OptimizerKind, OptimizerSpec, RenderParams};
use pastiche_engine::Prepared;
use pastiche_engine::{image_io, render, FeatureNet, Rendered};
use tch::{Device, Tensor};

fn example(file: &str, size: u32) -> Tensor {
    let path = repo_root().join("examples").join(file);
    image_io::load_resized(&path, |e| e.with_longer_side(size)).unwrap()
}

/// Renders the cat in the starry night's style at 32 px; returns the result and
/// the total loss after each iteration run, from the first (the content's).
fn run(net: &FeatureNet, params: &RenderParams) -> (Rendered, Vec<f64>) {
    let (content, style) = (example("chelsea.png", 32), example("starry_night.jpg", 32));
    let prepared = Prepared::from_tensors(net, params, &content, &style, &content).unwrap();
    let mut totals = Vec::new();
    let rendered = render(net, params, prepared, &mut |p| {
        assert_eq!(p.latest.iteration as usize, totals.len());
        totals.push(p.latest.total);
        ControlFlow::Continue(())
    })
    .unwrap();
    let last = *rendered.losses.last().unwrap();
    assert_eq!(
        last.iteration as usize,
        totals.len(),
        "the last row is the last iteration run"
    );
    totals.push(last.total);
    (rendered, totals)
}

fn params(optimizer: OptimizerKind, stop_tolerance: f64, stop_window: u32) -> RenderParams {
    RenderParams {
        iterations: 30,
        size: 32,
        log_every: 1,
        optimizer: OptimizerSpec::new(optimizer),
        stop_tolerance,
        stop_window,
        ..RenderParams::new(Backbone::Vgg16)
    }
}

/// (L[k - w] - L[k]) / L[k - w].
fn decrease(totals: &[f64], k: usize, w: usize) -> f64 {
    (totals[k - w] - totals[k]) / totals[k - w]
}

fn rows(losses: &[LossRecord]) -> Vec<(u32, f64)> {
    losses.iter().map(|r| (r.iteration, r.total)).collect()
}

#[test]
fn a_render_whose_loss_stops_falling_stops_early_and_says_where() {
    let net = FeatureNet::load(Backbone::Vgg16, None, Device::Cpu).unwrap();
    // L-BFGS's decrease over 3 iterations falls from ~0.9 to ~0.1 in 30
    // iterations; Adam's loss turns up after ~17 (its decrease goes negative).
    for (kind, tolerance, window) in [
        (OptimizerKind::Lbfgs, 0.15, 3),
        (OptimizerKind::Adam, 0.01, 2),
    ] {
        let (full, all) = run(&net, &params(kind, 0.0, window));
        assert_eq!(
            full.stopped_at, None,
            "{kind}: off, it runs every iteration"
        );
        assert_eq!(all.len(), 31);

        let (early, totals) = run(&net, &params(kind, tolerance, window));
        let k = early
            .stopped_at
            .unwrap_or_else(|| panic!("{kind} did not stop"));
        let (k, w) = (k as usize, window as usize);
        assert!(k < 30, "{kind}: stopped at the end, {k}");
        assert_eq!(totals.len(), k + 1, "{kind}: iterations after the stop");
        // The same path as without the rule, stopped at the first iteration
        // that meets it.
        assert_eq!(totals, all[..=k], "{kind}");
        assert!(decrease(&all, k, w) < tolerance, "{kind} at {k}");
        for j in w..k {
            assert!(
                decrease(&all, j, w) >= tolerance,
                "{kind}: met at {j} < {k}"
            );
        }
        // The log: every row up to the stop, the last one the stop's.
        assert_eq!(early.losses.last().unwrap().iteration as usize, k);
        assert_eq!(rows(&early.losses), rows(&full.losses[..k]), "{kind}");
        let csv = early.losses_csv();
        let last = csv.lines().last().unwrap();
        assert!(last.starts_with(&format!("{k},")), "{kind}: {last}");
    }
}

#[test]
fn a_render_runs_its_full_count_when_the_tolerance_is_off_or_never_met() {
    let net = FeatureNet::load(Backbone::Vgg16, None, Device::Cpu).unwrap();
    let (off, all) = run(&net, &params(OptimizerKind::Lbfgs, 0.0, 3));
    // L-BFGS's loss falls by at least ~9% over every 3 iterations of 30.
    let tolerance = 0.05;
    assert!((3..=30).all(|k| decrease(&all, k, 3) >= tolerance));
    let (unmet, totals) = run(&net, &params(OptimizerKind::Lbfgs, tolerance, 3));
    for rendered in [&off, &unmet] {
        assert_eq!(rendered.stopped_at, None);
        assert_eq!(rendered.losses.len(), 30);
        assert_eq!(rendered.losses.last().unwrap().iteration, 30);
    }
    assert_eq!(totals, all);
    assert_eq!(rows(&unmet.losses), rows(&off.losses));
}
