//! `pastiche plan GRID`: the tasks a grid expands to, with the ids `submit` will
//! give them, before anything is uploaded or sent. Users look here before they
//! send 100,000 renders to a farm.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pastiche_report::Param as Column;
use pastiche_spec::{layout, parse_grid, Grid, GridTask};
use serde_json::json;

#[derive(Args)]
pub struct PlanArgs {
    /// The grid file (TOML).
    pub grid: PathBuf,
    /// `text`: a line per task (its id and the parameters that vary), the count
    /// on stderr; `json`: everything about every task, for machines.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// A grid as it will be submitted: its local files named by the keys their
/// upload will give them.
struct Planned {
    grid: Grid,
    /// Object key to the file name the grid wrote, for people.
    names: BTreeMap<String, String>,
}

pub fn run(args: PlanArgs) -> Result<()> {
    // The same checks, in the same order, as `submit`: the grid, then its files.
    let text = crate::farm::read_grid_file(&args.grid)?;
    let planned = plan(&args.grid, &text)?;
    let tasks = planned.grid.identified_tasks();
    let varying = varying(&tasks);
    match args.format {
        Format::Text => {
            for (id, task) in &tasks {
                let values: Vec<String> = varying
                    .iter()
                    .map(|column| {
                        format!("{}={}", column.name(), show(*column, task, &planned.names))
                    })
                    .collect();
                // Two spaces apart: a value may have one (`style_layers=first 5`).
                println!("{}", format!("{id}  {}", values.join("  ")).trim_end());
            }
            eprintln!("{}", summary(&args.grid, &planned.grid, tasks.len()));
        }
        Format::Json => {
            let list: Vec<_> = tasks
                .iter()
                .map(|(id, task)| {
                    json!({
                        "id": id,
                        "content": planned.name_of(&task.content),
                        "style": task.style.label(|key| planned.name_of(key).to_owned()),
                        "content_key": task.content,
                        "style_key": task.style.to_string(),
                        "weights": planned.grid.weights_for(task.params.backbone),
                        "params": &*task.params,
                    })
                })
                .collect();
            let document = json!({
                "grid": args.grid.display().to_string(),
                "name": planned.grid.name,
                "count": tasks.len(),
                "skipped": planned.grid.skipped,
                "varying": varying.iter().map(|c| c.name()).collect::<Vec<_>>(),
                "tasks": list,
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
    }
    Ok(())
}

/// Hashes the grid's local files as `submit` would upload them, and expands the
/// grid that names them by key.
fn plan(grid_path: &Path, text: &str) -> Result<Planned> {
    let base = grid_path.parent().unwrap_or(Path::new("."));
    let mut keys = BTreeMap::new();
    let mut names = BTreeMap::new();
    for entry in pastiche_spec::local_inputs(text)? {
        let path = base.join(&entry);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let key = layout::input_key_of(&path, &bytes);
        names.insert(key.clone(), entry.clone());
        keys.insert(entry, key);
    }
    let submitted = pastiche_spec::grid_with_input_keys(text, &keys)?;
    let grid = parse_grid(grid_path, &submitted)?;
    Ok(Planned { grid, names })
}

impl Planned {
    fn name_of<'a>(&'a self, key: &'a str) -> &'a str {
        self.names.get(key).map_or(key, String::as_str)
    }
}

/// What a column of the plan shows for `task`: an image by the name the grid gave
/// it, or a render parameter as reports show it.
fn show(column: Column, task: &GridTask, names: &BTreeMap<String, String>) -> String {
    let name = |key: &str| names.get(key).cloned().unwrap_or_else(|| key.to_owned());
    match column {
        Column::Content => name(&task.content),
        Column::Style => task.style.label(name),
        Column::Render(param) => {
            let label = param.shown(&task.params).label;
            // A starting image by the name the grid gave it.
            names.get(&label).cloned().unwrap_or(label)
        }
    }
}

/// The images and parameters that take more than one value, in the report's order.
fn varying(tasks: &[(String, &GridTask)]) -> Vec<Column> {
    let no_names = BTreeMap::new();
    Column::all()
        .filter(|&column| {
            let mut values = tasks.iter().map(|(_, task)| show(column, task, &no_names));
            let first = values.next();
            values.any(|value| Some(value) != first)
        })
        .collect()
}

fn summary(path: &Path, grid: &Grid, count: usize) -> String {
    let mut line = format!(
        "{count} task{} in {} (job name '{}')",
        if count == 1 { "" } else { "s" },
        path.display(),
        grid.name
    );
    if grid.skipped > 0 {
        line += &format!(
            "; {} left out, asking a backbone for more convolutional stages than it has",
            grid.skipped
        );
    }
    line
}
