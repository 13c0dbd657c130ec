//! Batched rendering (`render_batch`): renders that run together advance
//! together, yet each ends as it would alone (every logged row to 1e-3
//! relative), and one that diverges or is cancelled ends alone.

mod common;

use std::ops::ControlFlow;

use common::repo_root;
use pastiche_engine::image_io::{self, Extent};
use pastiche_engine::spec::{
    Backbone, LineSearch, LossRecord, OptimizerKind, OptimizerSpec, RenderParams, StyleWeight,
};
use pastiche_engine::{render, render_batch, BatchItem, EngineError, FeatureNet, Prepared};
use pastiche_engine::{Rendered, Result};
use tch::{Device, Tensor};

fn example(file: &str, size: u32) -> Tensor {
    let path = repo_root().join("examples").join(file);
    image_io::load_resized(&path, |e| e.with_longer_side(size)).unwrap()
}

/// The pretrained VGG16 `scripts/setup.sh` installs: real features, as users
/// render with (a random network's losses are tiny and flat, and L-BFGS's line
/// search turns last-bit differences into visible ones).
fn vgg16() -> FeatureNet {
    let weights = repo_root().join(".deps/weights/vgg16.safetensors");
    assert!(
        weights.exists(),
        "{} is missing: run scripts/setup.sh",
        weights.display()
    );
    FeatureNet::load(Backbone::Vgg16, Some(&weights), Device::Cpu).unwrap()
}

fn noise(seed: u64, like: &Tensor) -> Tensor {
    let (_, _, height, width) = like.size4().unwrap();
    let extent = Extent {
        width: width as u32,
        height: height as u32,
    };
    image_io::white_noise(seed, extent).unwrap()
}

/// One render's inputs: content, style and start.
struct Case {
    params: RenderParams,
    content: Tensor,
    style: Tensor,
    init: Tensor,
}

impl Case {
    fn prepared(&self, net: &FeatureNet) -> Prepared {
        Prepared::from_tensors(net, &self.params, &self.content, &self.style, &self.init).unwrap()
    }
}

/// Four renders of one shape that differ in style weight, start, seed and
/// style image, and a fifth whose content has another aspect ratio (so it is
/// evaluated in a batch of its own).
fn cases(optimizer: &OptimizerSpec) -> Vec<Case> {
    let params = |beta: f64| RenderParams {
        size: 32,
        iterations: 5,
        log_every: 1,
        style_weight: StyleWeight::Fixed(beta),
        optimizer: optimizer.clone(),
        ..RenderParams::new(Backbone::Vgg16)
    };
    let cat = example("chelsea.png", 32);
    let starry = example("starry_night.jpg", 32);
    let checkers = example("checkerboard.png", 32);
    let tissue = example("ihc.jpg", 32);
    vec![
        Case {
            params: params(1e4),
            content: cat.copy(),
            style: starry.copy(),
            init: cat.copy(),
        },
        Case {
            params: params(1e6),
            content: cat.copy(),
            style: starry.copy(),
            init: cat.copy(),
        },
        Case {
            params: params(1e5),
            content: cat.copy(),
            style: checkers.copy(),
            init: noise(1, &cat),
        },
        Case {
            params: params(1e5),
            content: cat.copy(),
            style: starry.copy(),
            init: noise(2, &cat),
        },
        Case {
            params: params(1e5),
            content: tissue.copy(),
            style: starry,
            init: tissue,
        },
    ]
}

fn alone(net: &FeatureNet, case: &Case) -> Rendered {
    render(net, &case.params, case.prepared(net), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap()
}

/// Renders `cases` as one batch; `observe(item, iteration)` may stop an item.
/// Returns the results and the order in which the items reported progress.
fn batched(
    net: &FeatureNet,
    cases: &[Case],
    stop: impl Fn(usize, u32) -> bool,
) -> (Vec<Result<Rendered>>, Vec<(usize, u32)>) {
    let reports = std::cell::RefCell::new(Vec::new());
    let mut observers: Vec<_> = (0..cases.len())
        .map(|item| {
            let (reports, stop) = (&reports, &stop);
            move |p: &pastiche_engine::Progress| {
                reports.borrow_mut().push((item, p.iteration));
                if stop(item, p.iteration) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
        })
        .collect();
    let items = cases
        .iter()
        .zip(&mut observers)
        .map(|(case, observer)| BatchItem {
            params: &case.params,
            inputs: case.prepared(net),
            observer,
        })
        .collect();
    let results = render_batch(net, items);
    (results, reports.into_inner())
}

/// Each row's terms and total within 1e-3 of the row's total alone. (A batch
/// convolves several images at once, by other kernels than one image alone:
/// the sums differ in their last bits, and the optimisers carry that on.
/// L-BFGS's line search amplifies it most: measured here, about 1e-6 after the
/// first iteration and 1.6e-3 after the sixth, so these renders run five.)
fn assert_close(what: &str, batch: &[LossRecord], single: &[LossRecord]) {
    assert_eq!(batch.len(), single.len(), "{what}: rows");
    for (row, alone) in batch.iter().zip(single) {
        assert_eq!(row.iteration, alone.iteration, "{what}");
        for (name, b, s) in [
            ("content", row.content, alone.content),
            ("style", row.style, alone.style),
            ("tv", row.tv, alone.tv),
            ("total", row.total, alone.total),
        ] {
            let relative = (b - s).abs() / alone.total.abs().max(1e-12);
            assert!(
                relative <= 1e-3,
                "{what}, iteration {}: {name} {b} in the batch against {s} alone",
                alone.iteration
            );
        }
    }
}

fn optimizers() -> Vec<(&'static str, OptimizerSpec)> {
    let lbfgs = OptimizerSpec::new(OptimizerKind::Lbfgs);
    vec![
        ("Adam", OptimizerSpec::new(OptimizerKind::Adam)),
        ("L-BFGS, strong Wolfe", lbfgs.clone()),
        (
            "L-BFGS, fixed step",
            OptimizerSpec {
                line_search: LineSearch::None,
                lr: 0.05,
                ..lbfgs
            },
        ),
    ]
}

#[test]
fn a_batch_advances_together_and_each_item_ends_as_it_would_alone() {
    let net = vgg16();
    for (name, optimizer) in optimizers() {
        let cases = cases(&optimizer);
        let (results, reports) = batched(&net, &cases, |_, _| false);
        for (item, (case, result)) in cases.iter().zip(results).enumerate() {
            let what = format!("{name}, item {item}");
            let batch = result.unwrap();
            let single = alone(&net, case);
            assert_close(&what, &batch.losses, &single.losses);
            let difference = batch
                .image
                .f_sub(&single.image)
                .unwrap()
                .abs()
                .mean(tch::Kind::Float)
                .double_value(&[]);
            // Less than one grey level of the PNG on average.
            assert!(
                difference <= 1.0 / 255.0,
                "{what}: pixels differ by {difference} on average"
            );
            if item == 4 {
                // Alone in its batch (no other image has its size): exactly
                // as alone.
                assert_eq!(batch.losses, single.losses, "{what}");
                assert!(batch.image.equal(&single.image), "{what}");
            }
        }
        // Every item reports its first iteration before any reports its second:
        // they run side by side, not one after another.
        let firsts = reports.iter().take(cases.len()).collect::<Vec<_>>();
        assert!(
            firsts.iter().all(|&&(_, iteration)| iteration == 1),
            "{name}: reports in order {reports:?}"
        );
        assert_eq!(reports.len(), cases.len() * 5, "{name}");
    }
}

#[test]
fn an_item_that_diverges_fails_alone() {
    let net = vgg16();
    for (name, optimizer) in optimizers() {
        let mut cases = cases(&optimizer);
        cases.truncate(3);
        // A start with a NaN pixel: its loss is NaN at once.
        let poisoned = cases[1].init.copy();
        let _ = poisoned.narrow(2, 0, 1).narrow(3, 0, 1).fill_(f64::NAN);
        cases[1].init = poisoned;
        let (results, _) = batched(&net, &cases, |_, _| false);
        for (item, (case, result)) in cases.iter().zip(results).enumerate() {
            let what = format!("{name}, item {item}");
            if item == 1 {
                assert!(
                    matches!(result, Err(EngineError::NonFiniteLoss { iteration: 0, .. })),
                    "{what}: {:?}",
                    result.map(|r| r.losses)
                );
            } else {
                assert_close(&what, &result.unwrap().losses, &alone(&net, case).losses);
            }
        }
    }
}

#[test]
fn cancelling_one_item_ends_only_it() {
    let net = vgg16();
    let (name, optimizer) = optimizers().remove(1);
    let mut cases = cases(&optimizer);
    cases.truncate(3);
    let (results, reports) = batched(&net, &cases, |item, iteration| item == 0 && iteration == 2);
    assert!(
        matches!(results[0], Err(EngineError::Cancelled(2))),
        "{name}: item 0 is cancelled after 2 iterations"
    );
    assert_eq!(
        reports.iter().filter(|&&(item, _)| item == 0).count(),
        2,
        "{name}: the cancelled item reports no more"
    );
    for (item, (case, result)) in cases.iter().zip(results).enumerate().skip(1) {
        let what = format!("{name}, item {item}");
        assert_close(&what, &result.unwrap().losses, &alone(&net, case).losses);
    }
}
