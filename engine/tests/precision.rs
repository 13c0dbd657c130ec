//! `precision = "bf16"`: the backbone's convolutions in bfloat16, the Gram
//! matrices, losses, pastiche and optimiser in fp32. A bf16 render ends near the
//! fp32 render of the same problem, and follows PyTorch's autocast(bfloat16) on
//! the same weights.

mod common;

use std::ops::ControlFlow;

use common::*;
use pastiche_engine::loss::GatysLoss;
use pastiche_engine::spec::{Backbone, OptimizerKind, OptimizerSpec, Precision, RenderParams};
use pastiche_engine::{image_io, render, FeatureNet, Prepared, Rendered};
use tch::{Device, Kind, Tensor};

#[test]
fn a_bf16_net_holds_bf16_weights_and_returns_fp32_features() {
    let mut fp32 = FeatureNet::load(Backbone::Vgg16, None, Device::Cpu).unwrap();
    let mut bf16 =
        FeatureNet::load_with(Backbone::Vgg16, None, Device::Cpu, Precision::Bf16).unwrap();
    assert_eq!(bf16.precision(), Precision::Bf16);
    assert!(fp32.parameters().iter().all(|p| p.kind() == Kind::Float));
    assert!(bf16.parameters().iter().all(|p| p.kind() == Kind::BFloat16));

    tch::manual_seed(3);
    let image = Tensor::rand([1, 3, 40, 56], (Kind::Float, Device::Cpu));
    let layers: Vec<usize> = ["relu1_1", "relu3_1", "relu4_2"]
        .iter()
        .map(|l| Backbone::Vgg16.layer_index(l).unwrap())
        .collect();
    let exact = fp32.extract(&image, &layers).unwrap();
    let rounded = bf16.extract(&image, &layers).unwrap();
    for ((layer, exact), rounded) in layers.iter().zip(&exact).zip(&rounded) {
        assert_eq!(rounded.kind(), Kind::Float, "layer {layer}");
        let error = relative_error(rounded, exact);
        // bf16 keeps 8 bits of mantissa: about 4e-3 per rounding, a few
        // roundings deep; not fp32's 1e-7 (the cast is not a no-op).
        assert!(
            (1e-4..5e-2).contains(&error),
            "layer {layer}: relative error {error:e}"
        );
    }
    // The gradient reaches the fp32 image through the bf16 network.
    let x = image.set_requires_grad(true);
    let features = bf16.extract(&x, &layers[..1]).unwrap();
    let grad = Tensor::run_backward(
        &[features[0].square().sum(Kind::Float)],
        &[&x],
        false,
        false,
    );
    assert_eq!(grad[0].kind(), Kind::Float);
    assert!(grad[0].abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

/// The problem both precisions render: VGG19 with torchvision's random
/// initialisation, the cat in the style of The Starry Night at 64 px.
struct Problem {
    weights: std::path::PathBuf,
    images: std::path::PathBuf,
    content: Tensor,
    style: Tensor,
    params: RenderParams,
}

fn problem(dir: &std::path::Path, optimizer: OptimizerSpec, iterations: u32) -> Problem {
    let weights = export_random_weights(dir, "vgg19", 2, &[]);
    let size = 64;
    let examples = repo_root().join("examples");
    let load = |file: &str| {
        image_io::load_resized(&examples.join(file), |e| e.with_longer_side(size)).unwrap()
    };
    let (content, style) = (load("chelsea.png"), load("starry_night.jpg"));
    let images = dir.join("images.safetensors");
    write_tensors(
        &images,
        &[("content", &content), ("style", &style), ("init", &content)],
    );
    let params = RenderParams {
        optimizer,
        size,
        iterations,
        log_every: 1,
        ..RenderParams::new(Backbone::Vgg19)
    };
    Problem {
        weights,
        images,
        content,
        style,
        params,
    }
}

fn render_at(problem: &Problem, precision: Precision) -> (FeatureNet, Rendered) {
    let params = RenderParams {
        precision,
        ..problem.params.clone()
    };
    let net = FeatureNet::load_with(
        params.backbone,
        Some(&problem.weights),
        Device::Cpu,
        precision,
    )
    .unwrap();
    // A copy: the render optimises its init in place.
    let init = problem.content.copy();
    let prepared =
        Prepared::from_tensors(&net, &params, &problem.content, &problem.style, &init).unwrap();
    let rendered = render(&net, &params, prepared, &mut |_| ControlFlow::Continue(())).unwrap();
    (net, rendered)
}

/// The reference's rows (iteration, content, style, tv, total) and final image.
fn pytorch(problem: &Problem, dir: &std::path::Path, precision: Precision) -> (Tensor, Tensor) {
    let p = &problem.params;
    let out = dir.join(format!("reference-{precision}.safetensors"));
    let style_layers: Vec<String> = p.style_layers.iter().map(|l| l.name.clone()).collect();
    let (iterations, lr) = (p.iterations.to_string(), p.optimizer.lr.to_string());
    let (optimizer, precision) = (p.optimizer.kind.to_string(), precision.to_string());
    reference(&[
        "gatys",
        "--model",
        "vgg19",
        "--weights",
        p_str(&problem.weights),
        "--images",
        p_str(&problem.images),
        "--content-layers",
        &p.content_layers.join(","),
        "--style-layers",
        &style_layers.join(","),
        "--style-weight",
        &p.style_weight.to_string(),
        "--optimizer",
        &optimizer,
        "--lr",
        &lr,
        "--line-search",
        &p.optimizer.line_search.to_string(),
        "--iterations",
        &iterations,
        "--channels-last",
        "--precision",
        &precision,
        "--out",
        p_str(&out),
    ]);
    let mut out = read_tensors(&out);
    (out.remove("losses").unwrap(), out.remove("image").unwrap())
}

fn p_str(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// The total loss of `image`, evaluated by `net` (in its precision).
fn total_at(net: &FeatureNet, problem: &Problem, image: &Tensor) -> f64 {
    let params = RenderParams {
        precision: net.precision(),
        ..problem.params.clone()
    };
    let styles = [(problem.style.shallow_clone(), 1.0)];
    let loss = GatysLoss::new(net, &params, &problem.content, &styles).unwrap();
    loss.measure(image).unwrap().total
}

/// Renders `iterations` in fp32 and in bf16, here and in PyTorch. `in_step`: how
/// many iterations the bf16 render follows PyTorch's autocast to 1% of the loss
/// before their trajectories part (as two fp32 ones do, later, where a line search
/// or a ReLU decides on the last bits).
fn check_bf16_against_fp32_and_pytorch(
    name: &str,
    optimizer: OptimizerSpec,
    iterations: u32,
    in_step: u32,
) {
    let dir = scratch(&format!("precision-{name}"));
    let problem = problem(&dir, optimizer, iterations);
    let (fp32_net, fp32) = render_at(&problem, Precision::Fp32);
    let (bf16_net, bf16) = render_at(&problem, Precision::Bf16);
    let (torch_fp32, _) = pytorch(&problem, &dir, Precision::Fp32);
    let (torch_bf16, torch_bf16_image) = pytorch(&problem, &dir, Precision::Bf16);

    let start = total_at(&fp32_net, &problem, &problem.content);
    let fp32_final = fp32.losses.last().unwrap().total;
    let bf16_final = total_at(&fp32_net, &problem, &bf16.image);
    let torch_bf16_final = total_at(&fp32_net, &problem, &torch_bf16_image);
    eprintln!(
        "{name}: start {start:.5e}; final, in fp32: fp32 {fp32_final:.5e}, bf16 {bf16_final:.5e} \
         ({:+.2}%), PyTorch bf16 {torch_bf16_final:.5e} ({:+.2}%)",
        100.0 * (bf16_final - fp32_final) / fp32_final,
        100.0 * (torch_bf16_final - fp32_final) / fp32_final,
    );
    assert!(
        fp32_final < 0.5 * start,
        "{name}: the problem must optimise ({start} -> {fp32_final})"
    );
    // The bound: the bf16 render's final total loss, evaluated in fp32,
    // within 5% of the fp32 render's.
    assert!(
        relative(bf16_final, fp32_final) < 0.05,
        "{name}: bf16 ends at {bf16_final}, fp32 at {fp32_final}"
    );
    // And near PyTorch's autocast bf16 render, evaluated alike.
    assert!(
        relative(bf16_final, torch_bf16_final) < 0.03,
        "{name}: bf16 ends at {bf16_final}, PyTorch's autocast at {torch_bf16_final}"
    );

    // At the start, where both evaluate the same image, the bf16 loss equals
    // PyTorch's autocast's to far better than either's distance from fp32's:
    // the render computes in bf16, rounding as autocast does.
    let row = |rows: &Tensor, i: i64| rows.double_value(&[i, 4]);
    let ours0 = total_at(&bf16_net, &problem, &problem.content);
    let (theirs0, exact0) = (row(&torch_bf16, 0), row(&torch_fp32, 0));
    eprintln!(
        "{name}: at the start, bf16 {ours0:.6e}, PyTorch autocast {theirs0:.6e}, fp32 {start:.6e} \
         (PyTorch {exact0:.6e})"
    );
    assert!(
        relative(start, exact0) < 1e-4,
        "{name}: fp32 {start} vs {exact0}"
    );
    assert!(
        relative(ours0, theirs0) < 0.2 * relative(exact0, theirs0),
        "{name}: bf16's first loss {ours0} is not autocast's {theirs0} (fp32: {exact0})"
    );
    // Then row by row (row k: the loss after k iterations, as each render
    // measures it, in bf16), the bf16 render follows PyTorch's autocast: to 1%
    // while their paths are one, to 10% after.
    for record in &bf16.losses {
        let theirs = row(&torch_bf16, i64::from(record.iteration));
        let bound = if record.iteration <= in_step {
            0.01
        } else {
            0.1
        };
        assert!(
            relative(record.total, theirs) < bound,
            "{name} iteration {}: bf16 total {} vs PyTorch autocast {theirs}",
            record.iteration,
            record.total
        );
    }
}

#[test]
fn a_bf16_adam_render_ends_near_fp32_and_follows_pytorch_autocast() {
    let adam = OptimizerSpec::new(OptimizerKind::Adam);
    check_bf16_against_fp32_and_pytorch("adam", adam, 40, 40);
}

#[test]
fn a_bf16_lbfgs_render_ends_near_fp32_and_follows_pytorch_autocast() {
    // With its default strong-Wolfe line search: the tutorial's fixed step jumps
    // on these weights (see tests/losses.rs), and where it jumps depends on
    // the last bits of the gradient, in fp32 as in bf16.
    let lbfgs = OptimizerSpec::new(OptimizerKind::Lbfgs);
    check_bf16_against_fp32_and_pytorch("lbfgs", lbfgs, 20, 10);
}
