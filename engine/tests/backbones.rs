//! Feature maps equal torchvision's, for the same weights and input.

mod common;

use common::*;
use pastiche_engine::spec::{Backbone, RenderParams};
use pastiche_engine::{loss::GatysLoss, EngineError, FeatureNet};
use tch::{Device, Kind, Tensor};

fn check_against_torchvision(
    backbone: Backbone,
    layers: &[&str],
    (h, w): (i64, i64),
    export: &[&str],
) {
    let dir = scratch(&format!("backbone-{backbone}{}", export.join("")));
    let mut weights = export_random_weights(&dir, backbone.name(), 7, export);
    if matches!(backbone, Backbone::GoogLeNet | Backbone::InceptionV3) {
        // torchvision initialises batch norm to the identity; random statistics make
        // the test see batch norm (folded into the convolutions here) at work.
        let perturbed = dir.join("perturbed.safetensors");
        reference(&[
            "perturb-bn",
            "--weights",
            weights.to_str().unwrap(),
            "--seed",
            "3",
            "--out",
            perturbed.to_str().unwrap(),
        ]);
        weights = perturbed;
    }
    tch::manual_seed(11);
    let input = Tensor::randn([1, 3, h, w], (Kind::Float, Device::Cpu));
    let input_path = dir.join("input.safetensors");
    write_tensors(&input_path, &[("input", &input)]);
    let out = dir.join("features.safetensors");
    reference(&[
        "features",
        "--model",
        backbone.name(),
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        input_path.to_str().unwrap(),
        "--layers",
        &layers.join(","),
        "--out",
        out.to_str().unwrap(),
    ]);
    let expected = read_tensors(&out);

    let net = FeatureNet::load(backbone, Some(&weights), Device::Cpu).unwrap();
    let wanted: Vec<usize> = layers
        .iter()
        .map(|l| backbone.layer_index(l).unwrap())
        .collect();
    let features = tch::no_grad(|| net.extract_normalized(&input, &wanted)).unwrap();
    for (layer, actual) in layers.iter().zip(&features) {
        let error = relative_error(actual, &expected[*layer]);
        assert!(error < 1e-4, "{backbone} {layer}: relative error {error:e}");
    }
}

#[test]
fn vgg16_features_equal_torchvision() {
    check_against_torchvision(
        Backbone::Vgg16,
        &[
            "conv1_1", "relu1_2", "pool1", "relu3_1", "conv4_2", "relu4_3", "relu5_1", "pool5",
        ],
        (40, 56),
        &[],
    );
}

#[test]
fn vgg19_features_equal_torchvision() {
    check_against_torchvision(
        Backbone::Vgg19,
        &[
            "relu1_1", "relu2_1", "conv3_4", "relu3_1", "relu4_2", "relu5_1", "relu5_4",
        ],
        (48, 36),
        &[],
    );
}

#[test]
fn googlenet_features_equal_torchvision_with_transform_input() {
    // Pretrained GoogLeNet weights come with transform_input: the case that matters.
    check_against_torchvision(
        Backbone::GoogLeNet,
        &[
            "conv1",
            "maxpool1",
            "conv3",
            "inception3a",
            "inception4c",
            "maxpool4",
            "inception5b",
        ],
        (61, 45),
        &["--transform-input", "true"],
    );
}

#[test]
fn googlenet_features_equal_torchvision_without_transform_input() {
    check_against_torchvision(
        Backbone::GoogLeNet,
        &["conv2", "inception3b", "inception4e"],
        (40, 40),
        &["--transform-input", "false"],
    );
}

#[test]
fn inception_v3_features_equal_torchvision_with_transform_input() {
    // An odd, oblong input: every unpadded stride-2 step floors differently.
    check_against_torchvision(
        Backbone::InceptionV3,
        &[
            "Conv2d_1a_3x3",
            "maxpool1",
            "Conv2d_4a_3x3",
            "Mixed_5b",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7c",
        ],
        (101, 86),
        &["--transform-input", "true"],
    );
}

#[test]
fn inception_v3_features_equal_torchvision_without_transform_input_at_its_smallest_size() {
    // 75 px, torchvision's minimum: the last blocks are 1x1.
    let smallest = i64::from(Backbone::InceptionV3.min_size());
    check_against_torchvision(
        Backbone::InceptionV3,
        &[
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "Conv2d_3b_1x1",
            "maxpool2",
            "Mixed_5c",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_7b",
            "Mixed_7c",
        ],
        (smallest, smallest),
        &["--transform-input", "false"],
    );
}

fn weights_error(weights: &std::path::Path) -> String {
    match FeatureNet::load(Backbone::Vgg16, Some(weights), Device::Cpu) {
        Err(err @ EngineError::Weights { .. }) => err.to_string(),
        Err(other) => panic!("expected a weights error, got {other}"),
        Ok(_) => panic!("bad weights were accepted"),
    }
}

#[test]
fn weights_with_a_missing_or_misshaped_tensor_are_refused_by_name() {
    let dir = scratch("bad-weights");
    let good = export_random_weights(&dir, "vgg16", 1, &[]);
    let tensors = Tensor::read_safetensors(&good).unwrap();

    let missing = dir.join("missing.safetensors");
    let kept: Vec<_> = tensors
        .iter()
        .filter(|(n, _)| n != "features.5.weight")
        .map(|(n, t)| (n.as_str(), t))
        .collect();
    Tensor::write_safetensors(&kept, &missing).unwrap();
    let err = weights_error(&missing);
    assert!(
        err.contains("features.5.weight") && err.contains("missing"),
        "{err}"
    );

    let misshaped = dir.join("misshaped.safetensors");
    let wrong = Tensor::zeros([64, 3, 5, 5], (Kind::Float, Device::Cpu));
    let swapped: Vec<_> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.as_str(),
                if n == "features.0.weight" { &wrong } else { t },
            )
        })
        .collect();
    Tensor::write_safetensors(&swapped, &misshaped).unwrap();
    let err = weights_error(&misshaped);
    assert!(
        err.contains("features.0.weight") && err.contains("[64, 3, 5, 5]"),
        "{err}"
    );

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").unwrap();
    assert!(weights_error(&garbage).contains("garbage.safetensors"));
}

#[test]
fn weights_stay_frozen_while_the_image_gets_a_gradient() {
    let mut net = FeatureNet::load(Backbone::Vgg16, None, Device::Cpu).unwrap();
    let params = RenderParams::new(Backbone::Vgg16);
    tch::manual_seed(0);
    let content = Tensor::rand([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let style = Tensor::rand([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let loss = GatysLoss::new(&net, &params, &content, &[(style.shallow_clone(), 1.0)]).unwrap();
    let (_, grad) = loss
        .evaluate(&Tensor::rand([1, 3, 32, 32], (Kind::Float, Device::Cpu)))
        .unwrap();
    assert_eq!(grad.size(), [1, 3, 32, 32]);
    assert!(grad.abs().sum(Kind::Double).double_value(&[]) > 0.0);
    let parameters = net.parameters();
    assert_eq!(parameters.len(), 26, "13 convolutions with biases");
    for p in parameters {
        assert!(!p.requires_grad());
        assert!(!p.grad().defined(), "a weight received a gradient");
    }
}

#[test]
fn random_weights_are_the_same_for_the_same_seed() {
    let mut a = FeatureNet::load(Backbone::GoogLeNet, None, Device::Cpu).unwrap();
    let mut b = FeatureNet::load(Backbone::GoogLeNet, None, Device::Cpu).unwrap();
    for (x, y) in a.parameters().iter().zip(b.parameters()) {
        assert!(x.equal(&y));
    }
}
