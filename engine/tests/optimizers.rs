//! Optimiser trajectories equal torch.optim's on the same problem.

mod common;

use common::*;
use pastiche_engine::optim::{Adam, Lbfgs, LbfgsConfig, Optimizer};
use pastiche_engine::spec::LineSearch;
use tch::{Device, Kind, Tensor};

/// The Rosenbrock function, written as scripts/torch_reference.py writes it.
fn rosenbrock(x: &Tensor) -> (f64, Tensor) {
    let leaf = x.detach().set_requires_grad(true);
    let n = leaf.size()[0];
    let head = leaf.narrow(0, 0, n - 1);
    let tail = leaf.narrow(0, 1, n - 1);
    let loss = ((tail - head.pow_tensor_scalar(2)).pow_tensor_scalar(2) * 100
        + (head.neg() + 1).pow_tensor_scalar(2))
    .sum(None);
    let grad = Tensor::run_backward(&[&loss], &[&leaf], false, false).remove(0);
    (loss.double_value(&[]), grad)
}

/// Both sides run the same f64 arithmetic, except that torch fuses `x + t * d` into
/// one rounding (tch exposes no `add` with `alpha`); over 40 iterations along
/// Rosenbrock's valley that last-bit difference grows to ~1e-9.
const TOLERANCE: f64 = 1e-7;

struct Case<'a> {
    name: &'a str,
    reference_args: Vec<&'a str>,
    optimizer: Box<dyn Optimizer>,
    steps: usize,
}

fn check_trajectory(mut case: Case) {
    let dir = scratch(&format!("optim-{}", case.name));
    let x0 = Tensor::from_slice(&[-1.2f64, 1.0, -0.5, 0.8, 1.5, -1.0, 0.3]);
    let problem = dir.join("problem.safetensors");
    write_tensors(&problem, &[("x0", &x0)]);
    let out = dir.join("trajectory.safetensors");
    let steps = case.steps.to_string();
    let mut args = vec![
        "optim",
        "--problem",
        problem.to_str().unwrap(),
        "--steps",
        &steps,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(case.reference_args.iter().copied());
    reference(&args);
    let expected = read_tensors(&out);
    let (expected_x, expected_loss) = (&expected["x"], &expected["loss"]);

    let mut x = x0.copy();
    for step in 0..case.steps {
        let loss = case
            .optimizer
            .step(&mut x, &mut |point: &Tensor| Ok(rosenbrock(point)))
            .unwrap();
        let want_loss = expected_loss.double_value(&[step as i64]);
        assert!(
            (loss - want_loss).abs() <= TOLERANCE * want_loss.abs().max(1e-12),
            "{} step {step}: loss {loss} vs torch {want_loss}",
            case.name
        );
        let want_x = expected_x.get(step as i64 + 1);
        let error = (&x - &want_x).abs().max().double_value(&[]);
        assert!(
            error <= TOLERANCE,
            "{} step {step}: x differs by {error:e}\n ours {x}\n torch {want_x}",
            case.name
        );
    }
    // The problem was really optimised, not just matched at the start.
    let last = expected_loss.double_value(&[case.steps as i64 - 1]);
    assert!(
        last < expected_loss.double_value(&[0]) * 0.5,
        "{}: no progress",
        case.name
    );
}

fn lbfgs(line_search: LineSearch, max_iter: usize, history_size: usize) -> Box<dyn Optimizer> {
    Box::new(Lbfgs::new(LbfgsConfig {
        lr: 1.0,
        max_iter,
        max_eval: if max_iter == 1 { 26 } else { max_iter * 5 / 4 },
        history_size,
        line_search,
        ..LbfgsConfig::default()
    }))
}

#[test]
fn lbfgs_without_line_search_follows_torch() {
    check_trajectory(Case {
        name: "lbfgs-fixed",
        // A short history, so that old pairs are dropped as torch drops them.
        reference_args: vec!["--optimizer", "lbfgs", "--lr", "1", "--history-size", "4"],
        optimizer: lbfgs(LineSearch::None, 1, 4),
        // Without a line search the iterates jump (to f = 177125 at step 16, as in
        // torch), so rounding differences grow faster than with one.
        steps: 30,
    });
}

#[test]
fn lbfgs_with_strong_wolfe_follows_torch() {
    check_trajectory(Case {
        name: "lbfgs-wolfe",
        reference_args: vec![
            "--optimizer",
            "lbfgs",
            "--line-search",
            "strong_wolfe",
            "--history-size",
            "5",
        ],
        optimizer: lbfgs(LineSearch::StrongWolfe, 1, 5),
        steps: 40,
    });
}

#[test]
fn lbfgs_with_several_iterations_per_step_follows_torch() {
    for (line_search, name) in [
        (LineSearch::None, "none"),
        (LineSearch::StrongWolfe, "strong_wolfe"),
    ] {
        check_trajectory(Case {
            name: &format!("lbfgs-inner-{name}"),
            reference_args: vec![
                "--optimizer",
                "lbfgs",
                "--line-search",
                name,
                "--max-iter",
                "8",
                "--max-eval",
                "10",
            ],
            optimizer: lbfgs(line_search, 8, 100),
            steps: 6,
        });
    }
}

#[test]
fn adam_follows_torch() {
    check_trajectory(Case {
        name: "adam",
        reference_args: vec!["--optimizer", "adam", "--lr", "0.05"],
        optimizer: Box::new(Adam::new(0.05)),
        steps: 60,
    });
}

#[test]
fn optimisers_work_in_single_precision_on_images() {
    // The shape and precision renders use: a [1, 3, H, W] float tensor.
    tch::manual_seed(1);
    let target = Tensor::rand([1, 3, 8, 8], (Kind::Float, Device::Cpu));
    for mut optimizer in [
        lbfgs(LineSearch::StrongWolfe, 1, 10),
        lbfgs(LineSearch::None, 1, 10),
        Box::new(Adam::new(0.05)),
    ] {
        let mut x = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..30 {
            last = optimizer
                .step(&mut x, &mut |p: &Tensor| {
                    let leaf = p.detach().set_requires_grad(true);
                    let loss = (&leaf - &target).square().sum(None);
                    let grad = Tensor::run_backward(&[&loss], &[&leaf], false, false).remove(0);
                    Ok((loss.double_value(&[]), grad))
                })
                .unwrap();
            first.get_or_insert(last);
        }
        assert!(last < first.unwrap() * 0.1, "{last} vs {first:?}");
    }
}
