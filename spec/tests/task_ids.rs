//! Task ids of the grids the project ships and documents, as `submit` makes them
//! (inputs uploaded, named by content), must never change: a farm that knows a
//! task by its id would render it again. The expected ids in `golden/` were
//! computed by the code before the parameter table.

use std::collections::BTreeMap;
use std::path::Path;

use pastiche_spec::{grid_with_input_keys, layout, local_inputs, parse_grid};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The ids of the grid in `text`, its files named as `submit` names them (files
/// that are not there stay as written, as in the golden runs).
fn ids(grid_file: &Path, text: &str) -> Vec<String> {
    let base = grid_file.parent().unwrap();
    let mut keys = BTreeMap::new();
    for entry in local_inputs(text).unwrap() {
        let path = base.join(&entry);
        if let Ok(bytes) = std::fs::read(&path) {
            keys.insert(entry, layout::input_key_of(&path, &bytes));
        }
    }
    let submitted = grid_with_input_keys(text, &keys).unwrap();
    let grid = parse_grid(Path::new("grid.toml"), &submitted).unwrap();
    grid.identified_tasks()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn golden(name: &str) -> Vec<String> {
    let path = root().join("spec/tests/golden").join(name);
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_shipped_grids_keep_their_task_ids() {
    for name in ["grid.toml", "seed-study-small.toml", "seed-study.toml"] {
        let file = root().join("examples").join(name);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            ids(&file, &text),
            golden(&format!("examples_{name}.txt")),
            "{name}"
        );
    }
}

#[test]
fn the_readmes_grid_keeps_its_task_ids() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("```toml\nname = \"seed-study\"")
        .expect("the README shows a grid")
        + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let file = root().join("README.md");
    assert_eq!(ids(&file, &readme[start..end]), golden("README-grid.txt"));
}
