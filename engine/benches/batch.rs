//! Grid throughput of batched rendering (`render_batch`), beside the PyTorch
//! reference (scripts/torch_reference.py gatys) rendering the same tasks one by
//! one, on the same weights, images and machine, in the same run.
//!
//!     cargo bench -p pastiche-engine --bench batch              # CPU
//!     cargo bench -p pastiche-engine --bench batch -- --device cuda:0 --size 256
//!
//! The grid is the README main job's (examples/starry-cat.toml) with four
//! style weights instead of two: 4 style weights x content and noise starts x
//! 5 or 13 style layers = 16 renders, here at 64 px, 20 iterations of L-BFGS
//! with a fixed step (one evaluation per iteration on both sides, so that the
//! cost compared is the implementation's), on a random VGG16 both sides load.
//! Tasks of one style depth share a batch key; `--batch 4` renders each key's
//! 8 tasks as 2 batches of 4.
//!
//! Each configuration runs in its own process (peak memory is its own), twice,
//! alternating; the faster run counts. The table goes into BENCHMARKS.md
//! (between the `batch-bench` markers) unless `--no-write`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pastiche_engine::spec::{parse_grid, Init, Precision, RenderParams};
use pastiche_engine::{image_io, parse_device, render_batch, BatchItem, FeatureNet, Prepared};
use tch::Tensor;

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

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The 16 renders: the README main job's grid, widened and shrunk as the
/// module's documentation says.
fn tasks(size: u32, precision: Precision) -> Vec<RenderParams> {
    let readme_job = std::fs::read_to_string(repo_root().join("examples/starry-cat.toml")).unwrap();
    let grid = readme_job
        .replace(
            "style_weight = [1e5, 1e6]",
            "style_weight = [1e4, 1e5, 1e6, 1e7]",
        )
        .replace("size = 128", &format!("size = {size}"))
        .replace(
            "iterations = 100",
            "iterations = 20\nline_search = \"none\"",
        )
        .replace("log_every = 10", "log_every = 1");
    // The random network both sides load, not the pretrained one.
    let grid = grid.split("[weights]").next().unwrap();
    let grid = parse_grid(&repo_root().join("examples/starry-cat.toml"), grid).unwrap();
    assert_eq!(grid.tasks.len(), 16, "the benchmark's grid");
    grid.tasks
        .iter()
        .map(|task| RenderParams {
            precision,
            ..(*task.params).clone()
        })
        .collect()
}

struct Images {
    content: Tensor,
    style: Tensor,
    noise: Tensor,
}

fn images(params: &RenderParams) -> Images {
    let examples = repo_root().join("examples");
    let size = params.size;
    let content =
        image_io::load_resized(&examples.join("chelsea.png"), |e| e.with_longer_side(size))
            .unwrap();
    let style = image_io::load_resized(&examples.join("starry_night.jpg"), |e| {
        e.with_longer_side(size)
    })
    .unwrap();
    let (_, _, height, width) = content.size4().unwrap();
    let extent = image_io::Extent {
        width: width as u32,
        height: height as u32,
    };
    let noise = image_io::white_noise(params.seed, extent).unwrap();
    Images {
        content,
        style,
        noise,
    }
}

fn vm(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The measured side: the 16 renders in batches of `--batch`, as JSON.
fn child(args: &[String]) {
    pastiche_engine::tune_allocator();
    let batch: usize = arg(args, "--batch").unwrap().parse().unwrap();
    let precision: Precision = arg(args, "--precision").unwrap().parse().unwrap();
    let size: u32 = arg(args, "--size").unwrap().parse().unwrap();
    let device = parse_device(&arg(args, "--device").unwrap()).unwrap();
    let weights = PathBuf::from(arg(args, "--weights").unwrap());
    let tasks = tasks(size, precision);
    let net = FeatureNet::load_with(tasks[0].backbone, Some(&weights), device, precision).unwrap();
    let images = images(&tasks[0]);
    let loaded = vm("VmRSS:");
    // Tasks of one batch key, then the next: the farm leases batches so.
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by_key(|&i| tasks[i].style_layers.len());
    let started = Instant::now();
    let mut totals = vec![0.0; tasks.len()];
    for chunk in order.chunks(batch) {
        let mut observers: Vec<_> = chunk
            .iter()
            .map(|_| |_: &pastiche_engine::Progress| ControlFlow::Continue(()))
            .collect();
        let items = chunk
            .iter()
            .zip(&mut observers)
            .map(|(&i, observer)| {
                let init = match tasks[i].init {
                    Init::Noise => &images.noise,
                    _ => &images.content,
                };
                BatchItem {
                    params: &tasks[i],
                    inputs: Prepared::from_tensors(
                        &net,
                        &tasks[i],
                        &images.content,
                        &images.style,
                        init,
                    )
                    .unwrap(),
                    observer,
                }
            })
            .collect();
        for (&i, rendered) in chunk.iter().zip(render_batch(&net, items)) {
            totals[i] = rendered.unwrap().losses.last().unwrap().total;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"seconds\": {seconds}, \"loaded_rss_bytes\": {loaded}, \"peak_rss_bytes\": {}, \"threads\": {}, \"final_totals\": {totals:?}}}",
        vm("VmHWM:"),
        tch::get_num_threads(),
    );
}

struct Measurement {
    /// Time rendering the 16 tasks.
    seconds: f64,
    /// Peak RSS above what the process held before its first render (ours), or
    /// the largest peak of one render's process (PyTorch's).
    peak_bytes: u64,
    threads: i64,
    final_totals: Vec<f64>,
}

fn json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().expect("a JSON report");
    serde_json::from_str(line).expect("a JSON report")
}

fn run(command: &mut Command) -> serde_json::Value {
    let output = command.output().expect("start a measurement");
    assert!(
        output.status.success(),
        "measurement failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    json(&output.stdout)
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
    let size: u32 = arg(&args, "--size").map_or(64, |s| s.parse().unwrap());
    let python = std::env::var_os("PASTICHE_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".deps/reference/bin/python"));
    let work = repo_root().join("target/bench");
    std::fs::create_dir_all(&work).unwrap();
    let weights = work.join("vgg16-random.safetensors");
    if !weights.exists() {
        let status = Command::new(&python)
            .arg(repo_root().join("scripts/export_weights.py"))
            .args(["--model", "vgg16", "--random", "--seed", "0", "--out"])
            .arg(&weights)
            .status()
            .unwrap();
        assert!(status.success(), "exporting the benchmark weights failed");
    }
    let tasks = tasks(size, Precision::Fp32);
    let images = images(&tasks[0]);
    let mut inputs = Vec::new();
    for (name, init) in [("content", &images.content), ("noise", &images.noise)] {
        let path = work.join(format!("batch-images-{size}-{name}.safetensors"));
        Tensor::write_safetensors(
            &[
                ("content", &images.content),
                ("style", &images.style),
                ("init", init),
            ],
            &path,
        )
        .unwrap();
        inputs.push(path);
    }

    // PyTorch: each task in a process of its own, one after the other; its
    // time is that of its iterations alone (not the interpreter's start, the
    // model's load or the targets), which favours it.
    let reference = || {
        let mut seconds = 0.0;
        let mut peak = 0;
        let mut totals = Vec::new();
        let mut threads = 0;
        for params in &tasks {
            let style_layers: Vec<&str> = params
                .style_layers
                .iter()
                .map(|l| l.name.as_str())
                .collect();
            let images = &inputs[usize::from(params.init == Init::Noise)];
            let report = run(Command::new(&python)
                .arg(repo_root().join("scripts/torch_reference.py"))
                .args(["gatys", "--model", "vgg16", "--report"])
                .args(["--line-search", "none", "--optimizer", "lbfgs"])
                .args(["--lr", &params.optimizer.lr.to_string()])
                .args(["--iterations", &params.iterations.to_string()])
                .args(["--device", &device])
                .args(["--content-layers", &params.content_layers.join(",")])
                .args(["--style-layers", &style_layers.join(",")])
                .args(["--content-weight", &params.content_weight.to_string()])
                .args(["--style-weight", &params.style_weight.to_string()])
                .arg("--weights")
                .arg(&weights)
                .arg("--images")
                .arg(images)
                .arg("--out")
                .arg(work.join("batch-reference-out.safetensors")));
            seconds += report["iteration_seconds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .sum::<f64>();
            peak = peak.max(report["peak_rss_bytes"].as_u64().unwrap());
            threads = report["threads"].as_i64().unwrap();
            totals.push(report["final_total"].as_f64().unwrap());
        }
        Measurement {
            seconds,
            peak_bytes: peak,
            threads,
            final_totals: totals,
        }
    };
    let ours = |batch: usize, precision: Precision| {
        let report = run(Command::new(std::env::current_exe().unwrap())
            .args(["--child", "--batch", &batch.to_string()])
            .args(["--precision", &precision.to_string()])
            .args(["--size", &size.to_string(), "--device", &device])
            .arg("--weights")
            .arg(&weights));
        let loaded = report["loaded_rss_bytes"].as_u64().unwrap();
        Measurement {
            seconds: report["seconds"].as_f64().unwrap(),
            peak_bytes: report["peak_rss_bytes"].as_u64().unwrap() - loaded,
            threads: report["threads"].as_i64().unwrap(),
            final_totals: report["final_totals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect(),
        }
    };
    let configurations = [
        (1, Precision::Fp32),
        (4, Precision::Fp32),
        (1, Precision::Bf16),
        (4, Precision::Bf16),
    ];
    // Every configuration, then all again; the faster of each pair counts.
    let first_reference = reference();
    let firsts: Vec<Measurement> = configurations.iter().map(|&(b, p)| ours(b, p)).collect();
    let theirs = best(first_reference, reference());
    let measured: Vec<Measurement> = configurations
        .iter()
        .zip(firsts)
        .map(|(&(b, p), first)| best(first, ours(b, p)))
        .collect();

    let per_minute = |m: &Measurement| 16.0 * 60.0 / m.seconds;
    let single_peak = measured[0].peak_bytes as f64;
    let mut rows = vec![format!(
        "| PyTorch, one by one | fp32 | 1 | {:.1} | {:.1} | 1.00x | {:.0} (whole process) | |",
        theirs.seconds,
        per_minute(&theirs),
        theirs.peak_bytes as f64 / (1 << 20) as f64,
    )];
    for (&(batch, precision), m) in configurations.iter().zip(&measured) {
        assert_eq!(m.threads, theirs.threads, "both sides use the same threads");
        let per_item = m.peak_bytes as f64 / batch as f64;
        let worst = m
            .final_totals
            .iter()
            .zip(&measured[0].final_totals)
            .map(|(a, b)| (a - b).abs() / b.abs())
            .fold(0.0, f64::max);
        eprintln!(
            "batch {batch} {precision}: {:.1} s, {:.1} renders/min",
            m.seconds,
            per_minute(m)
        );
        rows.push(format!(
            "| Pastiche | {precision} | {batch} | {:.1} | {:.1} | **{:.2}x** | {:.0} per render ({:.2}x batch 1's) | {worst:.1e} |",
            m.seconds,
            per_minute(m),
            theirs.seconds / m.seconds,
            per_item / (1 << 20) as f64,
            per_item / single_peak,
        ));
    }
    let table = format!(
        "Measured {date} on {machine}, device `{device}`, {threads} threads on both sides.\n\
         16 renders of the README main job's grid (4 style weights x content and noise starts x 5 or 13 style\n\
         layers), {size} px, 20 iterations of L-BFGS with a fixed step, random VGG16 (the same file on both sides).\n\
         Time: rendering all 16 (PyTorch: the sum of its iterations only), faster of two runs each, alternating.\n\
         Memory: Pastiche's peak RSS above what the process held with the net loaded, divided by the batch; the\n\
         last column is the largest relative difference of a render's final total loss from Pastiche fp32 batch 1's.\n\n\
         | renderer | precision | batch | seconds | renders/min | throughput vs PyTorch | peak MiB | final loss vs batch 1 |\n\
         |---|---|---|---|---|---|---|---|\n{}\n",
        rows.join("\n"),
        date = String::from_utf8(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().unwrap().stdout)
            .unwrap()
            .trim(),
        machine = cpu_model(),
        threads = theirs.threads,
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
        format!("<!-- batch-bench:{kind}:start -->"),
        format!("<!-- batch-bench:{kind}:end -->"),
    );
    let section = format!("{start}\n{table}{end}");
    let text = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], section, &text[b + end.len()..]),
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(&path, text).unwrap();
}
