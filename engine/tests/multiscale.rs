//! Multi-scale rendering (`scales`, `scale_iterations`): a render at 32 then 64
//! px is exactly two chained single renders, the second starting from the
//! first's result resized up; its loss log counts on across the scales and says
//! each row's scale.

mod common;

use std::ops::ControlFlow;

use common::repo_root;
use pastiche_engine::image_io::{self, Extent};
use pastiche_engine::spec::{
    scale_of_csv_row, Backbone, Init, LossRecord, OptimizerKind, OptimizerSpec, RenderParams,
    StyleWeight,
};
use pastiche_engine::{render, FeatureNet, Prepared, Rendered};
use tch::{Device, Tensor};

fn example(file: &str, size: u32) -> Tensor {
    let path = repo_root().join("examples").join(file);
    image_io::load_resized(&path, |e| e.with_longer_side(size)).unwrap()
}

fn extent(image: &Tensor) -> Extent {
    let (_, _, height, width) = image.size4().unwrap();
    Extent {
        width: width as u32,
        height: height as u32,
    }
}

/// Renders and records every progress report's (iteration, iterations, scale).
fn run(
    net: &FeatureNet,
    params: &RenderParams,
    content: &Tensor,
    style: &Tensor,
    init: &Tensor,
) -> (Rendered, Vec<(u32, u32, u32)>) {
    let prepared = Prepared::from_tensors(net, params, content, style, init).unwrap();
    let mut seen = Vec::new();
    let rendered = render(net, params, prepared, &mut |p| {
        seen.push((p.iteration, p.iterations, p.scale));
        ControlFlow::Continue(())
    })
    .unwrap();
    (rendered, seen)
}

fn params(optimizer: OptimizerKind, size: u32, iterations: u32) -> RenderParams {
    RenderParams {
        iterations,
        size,
        log_every: 2,
        optimizer: OptimizerSpec::new(optimizer),
        ..RenderParams::new(Backbone::Vgg16)
    }
}

fn shifted(rows: &[LossRecord], by: u32) -> Vec<LossRecord> {
    rows.iter()
        .map(|r| LossRecord {
            iteration: r.iteration + by,
            ..*r
        })
        .collect()
}

#[test]
fn two_scales_are_two_chained_renders_the_second_from_the_first_resized_up() {
    let net = FeatureNet::load(Backbone::Vgg16, None, Device::Cpu).unwrap();
    let (content, style) = (example("chelsea.png", 64), example("starry_night.jpg", 64));
    for (optimizer, init) in [
        (OptimizerKind::Lbfgs, Init::Content),
        (OptimizerKind::Adam, Init::Noise),
    ] {
        let what = format!("{optimizer}, {init:?} start");
        let multi = RenderParams {
            scales: vec![32],
            scale_iterations: vec![6],
            init: init.clone(),
            style_weight: StyleWeight::Auto { ratio: 1.0 },
            ..params(optimizer, 64, 4)
        };
        multi.validate().unwrap();
        let start = match init {
            Init::Noise => image_io::white_noise(0, extent(&content)).unwrap(),
            _ => content.copy(),
        };
        let (together, seen) = run(&net, &multi, &content, &style, &start);

        // By hand: the content and style shrunk to 32 px, 6 iterations...
        let small = extent(&content).with_longer_side(32);
        let small_content = image_io::resize(&content, small).unwrap();
        let small_style = image_io::resize(&style, extent(&style).with_longer_side(32)).unwrap();
        let small_start = match init {
            Init::Noise => image_io::white_noise(0, small).unwrap(),
            _ => small_content.copy(),
        };
        let first_params = RenderParams {
            init: init.clone(),
            style_weight: StyleWeight::Auto { ratio: 1.0 },
            ..params(optimizer, 32, 6)
        };
        let (first, _) = run(
            &net,
            &first_params,
            &small_content,
            &small_style,
            &small_start,
        );
        // ...then 4 at 64 px from that result resized up, with the beta
        // the first scale chose.
        let resized_up = image_io::resize(&first.image, extent(&content)).unwrap();
        let second_params = RenderParams {
            init: Init::Image("the first scale's result".into()),
            style_weight: StyleWeight::Fixed(first.style_weight),
            ..params(optimizer, 64, 4)
        };
        let (second, _) = run(&net, &second_params, &content, &style, &resized_up);

        assert!(
            together.image.equal(&second.image),
            "{what}: the pastiche differs from the chained renders'"
        );
        let mut chained = first.losses.clone();
        chained.extend(shifted(&second.losses, 6));
        assert_eq!(together.losses, chained, "{what}");
        assert_eq!(together.style_weight, first.style_weight, "{what}");
        // The second scale's first row is the first scale's result, resized
        // up, at the iteration the first scale ended.
        let rows: Vec<(u32, u32)> = together
            .losses_csv()
            .lines()
            .skip(1)
            .map(|l| {
                (
                    l.split(',').next().unwrap().parse().unwrap(),
                    scale_of_csv_row(l).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [(2, 32), (4, 32), (6, 32), (8, 64), (10, 64)],
            "{what}: {}",
            together.losses_csv()
        );
        assert!(together
            .losses_csv()
            .starts_with("iteration,content,style,tv,total,scale\n"));
        // Progress counts on across scales and says which.
        assert_eq!(seen.len(), 10, "{what}");
        assert_eq!(seen[0], (1, 10, 32));
        assert_eq!(seen[5], (6, 10, 32));
        assert_eq!(seen[6], (7, 10, 64));
        assert_eq!(seen[9], (10, 10, 64));
    }
}

#[test]
fn a_single_scale_log_keeps_its_columns() {
    let net = FeatureNet::load(Backbone::Vgg16, None, Device::Cpu).unwrap();
    let (content, style) = (example("chelsea.png", 32), example("starry_night.jpg", 32));
    let (rendered, seen) = run(
        &net,
        &params(OptimizerKind::Adam, 32, 2),
        &content,
        &style,
        &content,
    );
    assert!(rendered.scales.is_empty());
    assert!(rendered
        .losses_csv()
        .starts_with("iteration,content,style,tv,total\n2,"));
    assert_eq!(seen, [(1, 2, 32), (2, 2, 32)]);
}
