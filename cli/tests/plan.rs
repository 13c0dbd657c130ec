//! `pastiche plan` as a user runs it: the real binary on the shipped grids.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pastiche(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pastiche"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pastiche")
}

/// The ids the shipped grid had before the parameter table (spec/tests/golden).
fn golden(grid: &str) -> Vec<String> {
    let path = root().join(format!("spec/tests/golden/examples_{grid}.txt"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn plan(args: &[&str]) -> (String, String) {
    let output = pastiche(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{args:?}: {stderr}");
    (String::from_utf8(output.stdout).unwrap(), stderr)
}

#[test]
fn json_lists_every_task_with_the_id_submit_gives_it() {
    let grid = root().join("examples/grid.toml");
    let (stdout, _) = plan(&["plan", grid.to_str().unwrap(), "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, golden("grid.toml"));
    assert_eq!(plan["count"], 4);
    assert_eq!(plan["name"], "example");
    assert_eq!(plan["varying"], serde_json::json!(["style_weight", "init"]));
    let first = &plan["tasks"][0];
    assert_eq!(first["content"], "chelsea.png");
    assert!(
        first["content_key"]
            .as_str()
            .unwrap()
            .starts_with("inputs/"),
        "{first}"
    );
    assert_eq!(first["params"]["backbone"], "vgg19");
    assert_eq!(first["params"]["size"], 160);
}

#[test]
fn text_is_a_line_per_task_with_what_varies() {
    let grid = root().join("examples/seed-study-small.toml");
    let (stdout, stderr) = plan(&["plan", grid.to_str().unwrap()]);
    let lines: Vec<&str> = stdout.lines().collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, golden("seed-study-small.toml"));
    assert_eq!(
        lines[0].split("  ").skip(1).collect::<Vec<_>>(),
        [
            "backbone=vgg16",
            "content_layers=relu4_2",
            "style_layers=first 5",
            "style_weight=1e3",
            "init=content"
        ]
    );
    assert!(stderr.contains("16 tasks"), "{stderr}");
    assert!(stderr.contains("8 left out"), "{stderr}");
}

#[test]
fn a_bad_grid_or_a_missing_file_is_refused_as_submit_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "content = \"c.png\"\nstyle = \"s.png\"\n[grid]\nsize = [64, 100000]\n",
    )
    .unwrap();
    let output = pastiche(&["plan", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("bad.toml:4: grid.size: size must be between 32 and 16384"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, "content = \"c.png\"\nstyle = \"s.png\"\n").unwrap();
    let output = pastiche(&["plan", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot read") && stderr.contains("c.png"),
        "{stderr}"
    );
}
