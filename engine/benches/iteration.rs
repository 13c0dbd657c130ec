//! Time per iteration and peak memory of a render, beside the PyTorch reference
//! (scripts/torch_reference.py gatys) on the same weights, images and machine, in
//! the same run.
//!
//!     cargo bench -p pastiche-engine --bench iteration            # CPU, 128 and 256 px
//!     cargo bench -p pastiche-engine --bench iteration -- --device cuda:0 --sizes 512
//!     ... -- --precisions fp32          # only fp32 (default: fp32 and bf16)
//!
//! Each measurement runs in its own process, so that peak RSS is that render's
//! alone; PyTorch and Pastiche alternate, fp32 and bf16 alternate, twice each,
//! and the faster run of each is reported. bf16 is Pastiche's `precision = "bf16"`
//! against PyTorch's torch.autocast(bfloat16) around the backbone. The table is written into BENCHMARKS.md (between the
//! `engine-bench` markers) unless `--no-write`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pastiche_engine::spec::{
    Backbone, LineSearch, OptimizerKind, OptimizerSpec, Precision, RenderParams,
};
use pastiche_engine::{image_io, parse_device, render, FeatureNet, Prepared};
use tch::Tensor;

const BACKBONE: Backbone = Backbone::Vgg19;
/// What scripts/setup.sh installs for both sides (and the GPU machines carry).
const TORCH_VERSION: &str = "2.11.0";

/// The checkout (overridable for a binary carried to another machine).
fn repo_root() -> PathBuf {
    std::env::var_os("PASTICHE_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .to_owned()
        })
}

fn reference_python() -> PathBuf {
    std::env::var_os("PASTICHE_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".deps/reference/bin/python"))
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn params(
    optimizer: OptimizerKind,
    precision: Precision,
    size: u32,
    iterations: u32,
) -> RenderParams {
    let mut spec = OptimizerSpec::new(optimizer);
    // One objective evaluation per iteration on both sides: the cost compared is
    // that of the implementation, not of how many steps a line search tries.
    spec.line_search = LineSearch::None;
    RenderParams {
        optimizer: spec,
        size,
        iterations,
        log_every: iterations,
        precision,
        ..RenderParams::new(BACKBONE)
    }
}

/// Peak resident memory of this process so far (Linux's VmHWM).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The measured side: one render, timed iteration by iteration, reported as JSON.
fn child(args: &[String]) {
    pastiche_engine::tune_allocator();
    let optimizer: OptimizerKind = arg(args, "--optimizer").unwrap().parse().unwrap();
    let precision: Precision = arg(args, "--precision").unwrap().parse().unwrap();
    let size: u32 = arg(args, "--size").unwrap().parse().unwrap();
    let iterations: u32 = arg(args, "--iterations").unwrap().parse().unwrap();
    let device = parse_device(&arg(args, "--device").unwrap()).unwrap();
    let weights = PathBuf::from(arg(args, "--weights").unwrap());
    let images: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(arg(args, "--images").unwrap())
            .unwrap()
            .into_iter()
            .collect();
    let params = params(optimizer, precision, size, iterations);
    let net = FeatureNet::load_with(BACKBONE, Some(&weights), device, precision).unwrap();
    let prepared = Prepared::from_tensors(
        &net,
        &params,
        &images["content"],
        &images["style"],
        &images["init"],
    )
    .unwrap();
    let mut stamps = vec![Instant::now()];
    let rendered = render(&net, &params, prepared, &mut |_| {
        stamps.push(Instant::now());
        ControlFlow::Continue(())
    })
    .unwrap();
    // The first stamp is taken before the targets are computed; PyTorch's after.
    let times: Vec<f64> = stamps
        .windows(2)
        .skip(1)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    println!(
        "{{\"iteration_seconds\": {times:?}, \"peak_rss_bytes\": {}, \"threads\": {}, \"final_total\": {}}}",
        peak_rss_bytes(),
        tch::get_num_threads(),
        rendered.losses.last().unwrap().total
    );
}

struct Measurement {
    seconds: f64,
    peak_bytes: u64,
    threads: i64,
    final_total: f64,
}

fn parse_report(stdout: &[u8]) -> Measurement {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().expect("a JSON report");
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON report");
    let mut times: Vec<f64> = value["iteration_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // The first iteration pays for one-time set-up (kernels, allocator); the
    // median of the rest is the steady state.
    times.remove(0);
    times.sort_by(f64::total_cmp);
    Measurement {
        seconds: times[times.len() / 2],
        peak_bytes: value["peak_rss_bytes"].as_u64().unwrap(),
        threads: value["threads"].as_i64().unwrap(),
        final_total: value["final_total"].as_f64().unwrap(),
    }
}

fn run(command: &mut Command) -> Measurement {
    let output = command.output().expect("start a measurement");
    assert!(
        output.status.success(),
        "measurement failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_report(&output.stdout)
}

fn best(a: Measurement, b: Measurement) -> Measurement {
    if a.seconds <= b.seconds {
        a
    } else {
        b
    }
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        return child(&args);
    }
    if !args.iter().any(|a| a == "--bench") && arg(&args, "--device").is_none() {
        // Built and run by `cargo test --all-targets`: nothing to measure there.
        return;
    }
    let device = arg(&args, "--device").unwrap_or_else(|| "cpu".into());
    let sizes: Vec<u32> = arg(&args, "--sizes")
        .unwrap_or_else(|| "128,256".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let precisions: Vec<Precision> = arg(&args, "--precisions")
        .unwrap_or_else(|| "fp32,bf16".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let python = reference_python();
    let work = repo_root().join("target/bench");
    std::fs::create_dir_all(&work).unwrap();
    let weights = work.join("vgg19-random.safetensors");
    if !weights.exists() {
        let status = Command::new(&python)
            .arg(repo_root().join("scripts/export_weights.py"))
            .args(["--model", "vgg19", "--random", "--seed", "0", "--out"])
            .arg(&weights)
            .status()
            .unwrap();
        assert!(status.success(), "exporting the benchmark weights failed");
    }

    let mut rows = Vec::new();
    // bf16's speed-up over fp32, per side.
    let mut speedups = Vec::new();
    for &size in &sizes {
        let examples = repo_root().join("examples");
        let content =
            image_io::load_resized(&examples.join("chelsea.png"), |e| e.with_longer_side(size))
                .unwrap();
        let style = image_io::load_resized(&examples.join("starry_night.jpg"), |e| {
            e.with_longer_side(size)
        })
        .unwrap();
        let images = work.join(format!("images-{size}.safetensors"));
        Tensor::write_safetensors(
            &[("content", &content), ("style", &style), ("init", &content)],
            &images,
        )
        .unwrap();
        let iterations = if size <= 128 { 20 } else { 10 };
        for optimizer in [OptimizerKind::Adam, OptimizerKind::Lbfgs] {
            let lr = optimizer.default_lr().to_string();
            let iterations_arg = iterations.to_string();
            let defaults = params(optimizer, Precision::Fp32, size, iterations);
            let content_layers = defaults.content_layers.join(",");
            let style_layers: Vec<&str> = defaults
                .style_layers
                .iter()
                .map(|l| l.name.as_str())
                .collect();
            let style_layers = style_layers.join(",");
            let reference = |precision: Precision| {
                run(Command::new(&python)
                    .arg(repo_root().join("scripts/torch_reference.py"))
                    .args([
                        "gatys",
                        "--model",
                        "vgg19",
                        "--report",
                        "--line-search",
                        "none",
                    ])
                    .args(["--optimizer", &optimizer.to_string(), "--lr", &lr])
                    .args(["--iterations", &iterations_arg, "--device", &device])
                    .args(["--precision", &precision.to_string()])
                    .args([
                        "--content-layers",
                        &content_layers,
                        "--style-layers",
                        &style_layers,
                    ])
                    .arg("--weights")
                    .arg(&weights)
                    .arg("--images")
                    .arg(&images)
                    .arg("--out")
                    .arg(work.join("reference-out.safetensors")))
            };
            let ours = |precision: Precision| {
                run(Command::new(std::env::current_exe().unwrap())
                    .args(["--child", "--optimizer", &optimizer.to_string()])
                    .args(["--precision", &precision.to_string()])
                    .args([
                        "--size",
                        &size.to_string(),
                        "--iterations",
                        &iterations_arg,
                        "--device",
                        &device,
                    ])
                    .arg("--weights")
                    .arg(&weights)
                    .arg("--images")
                    .arg(&images))
            };
            // Both sides, both precisions, in turn; then again.
            let mut firsts = Vec::new();
            for &precision in &precisions {
                firsts.push((reference(precision), ours(precision)));
            }
            let mut measured = Vec::new();
            for (&precision, (r1, o1)) in precisions.iter().zip(firsts) {
                let (r2, o2) = (reference(precision), ours(precision));
                measured.push((precision, best(r1, r2), best(o1, o2)));
            }
            for (precision, theirs, ours) in &measured {
                let agreement =
                    (ours.final_total - theirs.final_total).abs() / theirs.final_total.abs();
                eprintln!(
                    "{size} px {optimizer} {precision}: pytorch {:.4} s/it, pastiche {:.4} s/it",
                    theirs.seconds, ours.seconds
                );
                rows.push(format!(
                    "| {size} px | {optimizer} | {precision} | {:.4} | {:.4} | **{:.2}x** | {:.0} | {:.0} | **{:.2}x** | {:.1e} |",
                    theirs.seconds,
                    ours.seconds,
                    ours.seconds / theirs.seconds,
                    theirs.peak_bytes as f64 / (1 << 20) as f64,
                    ours.peak_bytes as f64 / (1 << 20) as f64,
                    ours.peak_bytes as f64 / theirs.peak_bytes as f64,
                    agreement,
                ));
                assert_eq!(
                    theirs.threads, ours.threads,
                    "both sides must use the same thread count"
                );
            }
            let at = |p: Precision| measured.iter().find(|(precision, ..)| *precision == p);
            if let (Some((_, torch32, ours32)), Some((_, torch16, ours16))) =
                (at(Precision::Fp32), at(Precision::Bf16))
            {
                speedups.push(format!(
                    "| {size} px | {optimizer} | {:.4} | {:.4} | **{:.2}x** | {:.4} | {:.4} | **{:.2}x** |",
                    torch32.seconds,
                    torch16.seconds,
                    torch32.seconds / torch16.seconds,
                    ours32.seconds,
                    ours16.seconds,
                    ours32.seconds / ours16.seconds,
                ));
            }
        }
    }
    let table = format!(
        "Measured {date} on {machine}, device `{device}`, libtorch {torch} on both sides.\n\
         VGG19 (random weights, the same file on both sides), content = init = chelsea.png, style = starry_night.jpg,\n\
         L-BFGS with a fixed step (one evaluation per iteration on both sides). Time: median iteration after the\n\
         first, better of two runs each, alternating. Memory: peak RSS of the whole process (PyTorch's includes\n\
         the Python interpreter). Last column: relative difference of the final total loss. bf16: Pastiche's\n\
         `precision = \"bf16\"`, PyTorch's torch.autocast(bfloat16) around the backbone (losses in fp32 on both).\n\n\
         | size | optimizer | precision | PyTorch s/it | Pastiche s/it | time ratio | PyTorch peak MiB | Pastiche peak MiB | memory ratio | loss diff |\n\
         |---|---|---|---|---|---|---|---|---|---|\n{}\n{}",
        rows.join("\n"),
        if speedups.is_empty() {
            String::new()
        } else {
            format!(
                "\nbf16 against fp32, from the same runs (speed-up: fp32 s/it over bf16 s/it):\n\n\
                 | size | optimizer | PyTorch fp32 | PyTorch autocast bf16 | speed-up | Pastiche fp32 | Pastiche bf16 | speed-up |\n\
                 |---|---|---|---|---|---|---|---|\n{}\n",
                speedups.join("\n")
            )
        },
        date = String::from_utf8(Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output().unwrap().stdout)
            .unwrap()
            .trim(),
        machine = cpu_model(),
        torch = TORCH_VERSION,
    );
    println!("{table}");
    if !args.iter().any(|a| a == "--no-write") {
        write_into_benchmarks(&device, &table);
    }
}

/// Replaces this device's section of BENCHMARKS.md (between its markers).
fn write_into_benchmarks(device: &str, table: &str) {
    let path = repo_root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let kind = if device == "cpu" { "cpu" } else { "gpu" };
    let (start, end) = (
        format!("<!-- engine-bench:{kind}:start -->"),
        format!("<!-- engine-bench:{kind}:end -->"),
    );
    let section = format!("{start}\n{table}{end}");
    let text = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], section, &text[b + end.len()..]),
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(&path, text).unwrap();
}
