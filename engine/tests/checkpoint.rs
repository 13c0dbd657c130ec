//! Checkpoints: a render stopped after some iteration and resumed from its
//! checkpoint (through its bytes, as the farm stores it) ends bit for bit where
//! the uninterrupted render ends, with the same loss log; a damaged or
//! mismatched checkpoint is refused.

mod common;

use std::ops::ControlFlow;

use common::repo_root;
use pastiche_engine::checkpoint::Checkpoint;
use pastiche_engine::spec::{
    Backbone, LineSearch, OptimizerKind, OptimizerSpec, RenderParams, StyleWeight,
};
use pastiche_engine::{image_io, render, EngineError, FeatureNet, Prepared, Rendered};
use tch::{Device, Tensor};

fn example(file: &str, size: u32) -> Tensor {
    let path = repo_root().join("examples").join(file);
    image_io::load_resized(&path, |e| e.with_longer_side(size)).unwrap()
}

fn prepared(net: &FeatureNet, params: &RenderParams) -> Prepared {
    let (content, style) = (example("chelsea.png", 32), example("starry_night.jpg", 32));
    Prepared::from_tensors(net, params, &content, &style, &content).unwrap()
}

/// The whole render, and the iterations its observer saw.
fn uninterrupted(net: &FeatureNet, params: &RenderParams) -> (Rendered, Vec<u32>) {
    let mut seen = Vec::new();
    let rendered = render(net, params, prepared(net, params), &mut |p| {
        seen.push(p.iteration);
        ControlFlow::Continue(())
    })
    .unwrap();
    (rendered, seen)
}

/// The render stopped after `at` iterations, its checkpoint's bytes.
fn interrupted_at(net: &FeatureNet, params: &RenderParams, at: u32) -> Vec<u8> {
    let mut bytes = None;
    let stopped = render(net, params, prepared(net, params), &mut |p| {
        if p.iteration == at {
            bytes = Some(p.checkpoint("task-1").unwrap().to_bytes().unwrap());
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(matches!(stopped, Err(EngineError::Cancelled(i)) if i == at));
    bytes.expect("a checkpoint was taken")
}

fn resumed(net: &FeatureNet, params: &RenderParams, bytes: &[u8]) -> (Rendered, Vec<u32>) {
    let checkpoint = Checkpoint::from_bytes(bytes).unwrap();
    assert_eq!(checkpoint.label, "task-1");
    let mut inputs = prepared(net, params);
    inputs.resume_from(params, checkpoint).unwrap();
    let mut seen = Vec::new();
    let rendered = render(net, params, inputs, &mut |p| {
        seen.push(p.iteration);
        ControlFlow::Continue(())
    })
    .unwrap();
    (rendered, seen)
}

fn params(optimizer: OptimizerSpec) -> RenderParams {
    RenderParams {
        iterations: 12,
        size: 32,
        log_every: 3,
        optimizer,
        ..RenderParams::new(Backbone::Vgg16)
    }
}

fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    let (a, b) = (
        Vec::<f32>::try_from(a.flatten(0, -1)).unwrap(),
        Vec::<f32>::try_from(b.flatten(0, -1)).unwrap(),
    );
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn a_resumed_render_ends_bit_for_bit_where_the_uninterrupted_one_does() {
    let net = FeatureNet::load(Backbone::Vgg16, None, Device::Cpu).unwrap();
    let lbfgs = OptimizerSpec::new(OptimizerKind::Lbfgs);
    let cases = [
        (
            "adam",
            params(OptimizerSpec::new(OptimizerKind::Adam)),
            Some(5),
        ),
        ("lbfgs", params(lbfgs.clone()), Some(7)),
        (
            "lbfgs, strong Wolfe, a history of 3, auto style weight",
            RenderParams {
                style_weight: StyleWeight::Auto { ratio: 1.0 },
                ..params(OptimizerSpec {
                    line_search: LineSearch::StrongWolfe,
                    history_size: 3,
                    ..lbfgs
                })
            },
            Some(6),
        ),
        (
            "adam, stopping early",
            RenderParams {
                iterations: 30,
                stop_tolerance: 0.01,
                stop_window: 2,
                log_every: 1,
                ..params(OptimizerSpec::new(OptimizerKind::Adam))
            },
            // One iteration before it stops: only the window carried over
            // stops it there.
            None,
        ),
    ];
    for (name, params, at) in cases {
        let (whole, whole_seen) = uninterrupted(&net, &params);
        let at = at.unwrap_or_else(|| whole.stopped_at.expect("it stops early") - 1);
        let bytes = interrupted_at(&net, &params, at);
        let (again, again_seen) = resumed(&net, &params, &bytes);
        assert_eq!(again.resumed_from, Some(at), "{name}");
        assert_eq!(whole.resumed_from, None, "{name}");
        assert_eq!(
            again_seen,
            whole_seen[at as usize..],
            "{name}: resumed with the next iteration"
        );
        assert_eq!(again.losses, whole.losses, "{name}: the same loss log");
        assert_eq!(again.losses_csv(), whole.losses_csv(), "{name}");
        assert_eq!(again.stopped_at, whole.stopped_at, "{name}");
        assert_eq!(again.style_weight.to_bits(), whole.style_weight.to_bits());
        assert!(
            same_bits(&again.image, &whole.image),
            "{name}: the pastiche differs"
        );
        if name.contains("early") {
            assert!(whole.stopped_at.is_some_and(|k| k < 30), "{name}");
        }
    }
}

#[test]
fn damaged_or_mismatched_checkpoints_are_refused() {
    let net = FeatureNet::load(Backbone::Vgg16, None, Device::Cpu).unwrap();
    let adam = params(OptimizerSpec::new(OptimizerKind::Adam));
    let bytes = interrupted_at(&net, &adam, 4);
    assert!(Checkpoint::from_bytes(&bytes).is_ok());

    // A flipped bit in the iterate, one in the header, a truncation, junk.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let err = Checkpoint::from_bytes(&flipped).unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");
    let header = String::from_utf8_lossy(&bytes[8..200]).into_owned();
    let at = header
        .find("\"iteration\":\"4\"")
        .expect("the header names it")
        + 8;
    let mut edited = bytes.clone();
    edited[at + "\"iteration\":\"".len()] = b'3';
    assert!(Checkpoint::from_bytes(&edited).is_err());
    assert!(Checkpoint::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    assert!(Checkpoint::from_bytes(b"not a checkpoint at all").is_err());
    assert!(Checkpoint::from_bytes(&[]).is_err());

    // Sound, but not this render's.
    let checkpoint = Checkpoint::from_bytes(&bytes).unwrap();
    let lbfgs = params(OptimizerSpec::new(OptimizerKind::Lbfgs));
    let shorter = RenderParams {
        iterations: 3,
        ..adam.clone()
    };
    let other_log = RenderParams {
        log_every: 1,
        ..adam.clone()
    };
    for other in [lbfgs, shorter, other_log] {
        let mut inputs = prepared(&net, &other);
        assert!(inputs.resume_from(&other, checkpoint.clone()).is_err());
    }
    let bigger = RenderParams {
        size: 40,
        ..adam.clone()
    };
    let (content, style) = (example("chelsea.png", 40), example("starry_night.jpg", 40));
    let mut inputs = Prepared::from_tensors(&net, &bigger, &content, &style, &content).unwrap();
    let err = inputs.resume_from(&bigger, checkpoint).unwrap_err();
    assert!(err.to_string().contains("iterate"), "{err}");
}
