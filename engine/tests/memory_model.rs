//! The memory model against what renders really take: for three sizes and both
//! optimisers, a render runs in a process of its own, and the growth of that
//! process's peak resident memory (VmHWM) over its resident memory before the
//! render must be within 20% of the model's footprint.
//!
//! A plain `main` (harness = false): each case re-runs this binary as a child,
//! so that one render's peak is not another's.

use std::ops::ControlFlow;
use std::process::Command;

use pastiche_engine::memory::RenderShape;
use pastiche_engine::spec::{Backbone, OptimizerKind, OptimizerSpec, RenderParams};
use pastiche_engine::{image_io, render, FeatureNet, Prepared};
use tch::{Device, Kind, Tensor};

const CASE: &str = "PASTICHE_MEMORY_MODEL_CASE";
const TOLERANCE: f64 = 0.2;

fn main() {
    match std::env::var(CASE) {
        Ok(case) => child(&case),
        Err(_) => parent(),
    }
}

struct Case {
    size: u32,
    optimizer: OptimizerKind,
}

impl Case {
    fn parse(text: &str) -> Case {
        let (size, optimizer) = text.split_once(',').unwrap();
        Case {
            size: size.parse().unwrap(),
            optimizer: optimizer.parse().unwrap(),
        }
    }

    fn params(&self) -> RenderParams {
        let mut optimizer = OptimizerSpec::new(self.optimizer);
        // A short history that the iterations fill, so that it counts.
        optimizer.history_size = 6;
        RenderParams {
            iterations: 8,
            size: self.size,
            optimizer,
            ..RenderParams::new(Backbone::Vgg19)
        }
    }
}

fn parent() {
    let mut failures = Vec::new();
    println!("size optimiser   measured MiB   model MiB   model/measured");
    for size in [96, 192, 384] {
        for optimizer in ["adam", "lbfgs"] {
            let output = Command::new(std::env::current_exe().unwrap())
                .env(CASE, format!("{size},{optimizer}"))
                .env("OMP_NUM_THREADS", "2")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "case {size} {optimizer} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let value = |key: &str| -> f64 {
                stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no {key} in {stdout}"))
                    .trim()
                    .parse()
                    .unwrap()
            };
            let (measured, model) = (value("measured="), value("model="));
            let ratio = model / measured;
            let mib = |b: f64| b / f64::from(1 << 20);
            println!(
                "{size:4} {optimizer:9} {:12.1} {:11.1} {ratio:14.2}",
                mib(measured),
                mib(model)
            );
            if (ratio - 1.0).abs() > TOLERANCE {
                failures.push(format!(
                    "{size} px {optimizer}: model/measured = {ratio:.2}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the model is off by more than {:.0}%: {failures:?}",
        TOLERANCE * 100.0
    );
    println!("memory model: all cases within {:.0}%", TOLERANCE * 100.0);
}

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn status_bytes(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024.0
}

fn child(case: &str) {
    pastiche_engine::tune_allocator();
    let case = Case::parse(case);
    let params = case.params();
    // libtorch's one-time costs (thread pools, convolution code paths) are the
    // process's, not the render's: paid before the baseline.
    let warm = Tensor::rand([1, 3, 8, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let kernel = Tensor::rand([4, 3, 3, 3], (Kind::Float, Device::Cpu));
    warm.conv2d(&kernel, None::<Tensor>, [1], [1], [1], 1)
        .sum(Kind::Float)
        .backward();
    let before = status_bytes("VmRSS:");
    assert!(
        status_bytes("VmHWM:") - before < 1e6,
        "the peak is before the baseline"
    );

    let net = FeatureNet::load(params.backbone, None, Device::Cpu).unwrap();
    let extent = image_io::Extent {
        width: case.size,
        height: case.size * 3 / 4,
    };
    let content = image_io::white_noise(1, extent).unwrap();
    let style = image_io::white_noise(2, extent).unwrap();
    let prepared = Prepared::from_tensors(&net, &params, &content, &style, &content).unwrap();
    render(&net, &params, prepared, &mut |_| ControlFlow::Continue(())).unwrap();
    let measured = status_bytes("VmHWM:") - before;

    let deepest = params
        .content_layers
        .iter()
        .chain(params.style_layers.iter().map(|l| &l.name))
        .map(|name| params.backbone.layer_index(name).unwrap())
        .max()
        .unwrap();
    let model = RenderShape {
        backbone: params.backbone,
        deepest,
        content: extent,
        style: extent,
        optimizer: params.optimizer.clone(),
        iterations: params.iterations,
        precision: params.precision,
        items: 1,
    }
    .footprint();
    println!("measured={measured}\nmodel={}\n{model}", model.total());
}
