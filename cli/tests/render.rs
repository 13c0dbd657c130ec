//! `pastiche render` as a user runs it: the real binary, real image files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn pastiche_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pastiche"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run pastiche")
}

fn pastiche(args: &[&str]) -> Output {
    pastiche_with_env(args, &[])
}

fn read_losses(path: &Path) -> (String, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_owned();
    let rows = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    (header, rows)
}

#[test]
fn renders_the_example_with_a_loss_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results/pastiche.png");
    let losses = dir.path().join("results/losses.csv");
    let content = examples().join("chelsea.png");
    let output = pastiche(&[
        "render",
        "--content",
        content.to_str().unwrap(),
        "--style",
        examples().join("starry_night.jpg").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--losses",
        losses.to_str().unwrap(),
        "--size",
        "40",
        "--iterations",
        "7",
        "--log-every",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // 451x300 scaled so that the longer side is 40.
    let image = image::open(&out).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (40, 27));
    let original = image::imageops::resize(
        &image::open(&content).unwrap().to_rgb8(),
        40,
        27,
        image::imageops::FilterType::Lanczos3,
    );
    let changed = image
        .pixels()
        .zip(original.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > 40 * 27 / 2,
        "the pastiche barely differs from the content image"
    );

    let (header, rows) = read_losses(&losses);
    assert_eq!(header, "iteration,content,style,tv,total");
    let iterations: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(iterations, [3.0, 6.0, 7.0]);
    for row in &rows {
        assert_eq!(row.len(), 5);
        assert!(
            (row[1] + row[2] + row[3] - row[4]).abs() <= 1e-6 * row[4],
            "terms sum to the total: {row:?}"
        );
        assert_eq!(row[3], 0.0, "no TV weight, no TV term");
    }
    assert!(rows[2][4] < rows[0][4], "the loss fell: {rows:?}");
    assert!(rows[0][1] > 0.0, "the pastiche moved away from the content");
}

#[test]
fn a_render_that_stops_early_says_so_and_logs_up_to_its_stop() {
    let dir = tempfile::tempdir().unwrap();
    let render = |name: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{name}.png"));
        let losses = dir.path().join(format!("{name}.csv"));
        let mut args = vec![
            "render",
            "--content",
            examples().join("chelsea.png").to_str().unwrap(),
            "--style",
            examples().join("starry_night.jpg").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--losses",
            losses.to_str().unwrap(),
            "--size",
            "32",
            "--log-every",
            "1",
            "--device",
            "cpu",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = pastiche_with_env(&args, &[("RUST_LOG", "info")]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        assert!(out.exists());
        let (_, rows) = read_losses(&losses);
        (rows.last().unwrap()[0], stderr)
    };
    // A loss never falls by all of itself: a tolerance of 1 is met as soon as a
    // whole window has run.
    let (last, stderr) = render(
        "early",
        &[
            "--iterations",
            "10",
            "--stop-tolerance",
            "1",
            "--stop-window",
            "2",
        ],
    );
    assert_eq!(last, 2.0, "the last row is the stop's");
    assert!(
        stderr.contains("stopped early after iteration 2 of 10"),
        "{stderr}"
    );
    let (last, stderr) = render("full", &["--iterations", "3", "--stop-tolerance", "0"]);
    assert_eq!(last, 3.0);
    assert!(!stderr.contains("stopped early"), "{stderr}");
}

/// Writes a valid safetensors file holding one tensor of the wrong shape.
fn misshaped_weights(path: &Path) {
    let header = br#"{"features.0.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\n but then nothing").unwrap();
    let weights = dir.path().join("vgg19-wrong.safetensors");
    misshaped_weights(&weights);
    let content = examples().join("chelsea.png");
    let content = content.to_str().unwrap();
    let style = examples().join("starry_night.jpg");
    let style = style.to_str().unwrap();
    let corrupt = corrupt.to_str().unwrap();

    let cases: &[(&str, &[&str], &str)] = &[
        (
            "missing content",
            &["--content", "no/such/photo.jpg", "--style", style],
            "no/such/photo.jpg",
        ),
        (
            "corrupt style",
            &["--content", content, "--style", corrupt],
            "corrupt.png",
        ),
        (
            "corrupt init image",
            &["--content", content, "--style", style, "--init", corrupt],
            "corrupt.png",
        ),
        (
            "unknown backbone",
            &[
                "--content",
                content,
                "--style",
                style,
                "--backbone",
                "resnet50",
            ],
            "resnet50",
        ),
        (
            "unknown layer",
            &[
                "--content",
                content,
                "--style",
                style,
                "--style-layers",
                "relu1_1,relu9_1",
            ],
            "relu9_1",
        ),
        (
            "misshaped weights",
            &[
                "--content",
                content,
                "--style",
                style,
                "--weights",
                weights.to_str().unwrap(),
            ],
            "features.0.weight",
        ),
        (
            "missing weights",
            &[
                "--content",
                content,
                "--style",
                style,
                "--weights",
                "nowhere.safetensors",
            ],
            "nowhere.safetensors",
        ),
        (
            "absurd size",
            &["--content", content, "--style", style, "--size", "100000"],
            "size",
        ),
        (
            "size beyond memory",
            &["--content", content, "--style", style, "--size", "16000"],
            "what fits: size ",
        ),
        (
            "tiny style scale",
            &[
                "--content",
                content,
                "--style",
                style,
                "--size",
                "64",
                "--style-scale",
                "0.1",
            ],
            "style image",
        ),
        (
            "infinite loss",
            &[
                "--content",
                content,
                "--style",
                style,
                "--style-weight",
                "1e300",
            ],
            "loss became inf",
        ),
        (
            "no such gpu",
            &["--content", content, "--style", style, "--device", "cuda:7"],
            "cuda:7",
        ),
    ];
    for (what, args, needle) in cases {
        let out = dir.path().join(format!("{}.png", what.replace(' ', "-")));
        let mut full = vec![
            "render",
            "--out",
            out.to_str().unwrap(),
            "--iterations",
            "2",
        ];
        full.extend_from_slice(args);
        // Flags override PASTICHE_* variables, so cases can set their own size.
        let output = pastiche_with_env(
            &full,
            &[("PASTICHE_SIZE", "32"), ("PASTICHE_DEVICE", "cpu")],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: succeeded");
        assert!(
            stderr.contains(needle),
            "{what}: '{needle}' not in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
        assert!(!out.exists(), "{what}: left {} behind", out.display());
    }
}

#[test]
fn an_output_that_cannot_be_written_is_refused_before_the_render() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("chelsea.png");
    std::fs::copy(examples().join("chelsea.png"), &not_a_dir).unwrap();
    let content = examples().join("chelsea.png");
    let style = examples().join("starry_night.jpg");
    let out = dir.path().join("fine.png");
    for (out, losses) in [
        (not_a_dir.join("o.png"), None),
        (out.clone(), Some(dir.path().to_path_buf())),
    ] {
        let mut args = vec![
            "render".to_owned(),
            "--content".into(),
            content.display().to_string(),
            "--style".into(),
            style.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--iterations".into(),
            "2".into(),
        ];
        if let Some(losses) = &losses {
            args.extend(["--losses".into(), losses.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = pastiche_with_env(&args, &[("PASTICHE_SIZE", "32"), ("RUST_LOG", "info")]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("cannot write"), "{stderr}");
        assert!(
            !stderr.contains("rendering"),
            "refused only after rendering: {stderr}"
        );
        assert!(!out.exists());
    }
}
