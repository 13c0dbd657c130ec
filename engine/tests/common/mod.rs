//! Runs the PyTorch/torchvision references (scripts/torch_reference.py) that the
//! engine is checked against, in the environment `scripts/setup.sh --test` installs.
#![allow(dead_code)] // each test binary uses its own part of this

use std::path::{Path, PathBuf};
use std::process::Command;

use tch::Tensor;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn reference_python() -> PathBuf {
    let python = std::env::var_os("PASTICHE_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".deps/reference/bin/python"));
    assert!(
        python.exists(),
        "the reference PyTorch is missing ({}): run scripts/setup.sh --test",
        python.display()
    );
    python
}

/// Runs a reference script from scripts/ and fails the test with its stderr if it fails.
pub fn python(script: &str, args: &[&str]) {
    let output = Command::new(reference_python())
        .arg(repo_root().join("scripts").join(script))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("start the reference python");
    assert!(
        output.status.success(),
        "{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn reference(args: &[&str]) {
    python("torch_reference.py", args);
}

/// A directory for this test's files, kept under target/ for inspection.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// torchvision's randomly initialised `model`, exported by scripts/export_weights.py.
pub fn export_random_weights(dir: &Path, model: &str, seed: u64, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{model}-{seed}.safetensors"));
    let seed = seed.to_string();
    let mut args = vec![
        "--model",
        model,
        "--random",
        "--seed",
        &seed,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    python("export_weights.py", &args);
    out
}

pub fn write_tensors(path: &Path, tensors: &[(&str, &Tensor)]) {
    Tensor::write_safetensors(tensors, path).unwrap();
}

pub fn read_tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// max |a - b| / max |b|: the error relative to the reference's scale.
pub fn relative_error(actual: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(actual.size(), reference.size(), "shapes differ");
    let diff = (actual - reference).abs().max().double_value(&[]);
    let scale = reference
        .abs()
        .max()
        .double_value(&[])
        .max(f64::MIN_POSITIVE);
    diff / scale
}
