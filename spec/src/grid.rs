//! Grid files: many renders described in one TOML file.
//!
//! ```toml
//! name = "seed-study"
//! content = ["photos/tuebingen.jpg"]
//! style   = ["art/starry_night.jpg", "art/the_scream.jpg"]
//! [grid]
//! backbone     = ["vgg16", "vgg19"]
//! style_weight = [1e4, 1e5, 1e6]
//! init         = ["content", "noise"]
//! [weights]
//! vgg19 = "s3://models/vgg19.safetensors"
//! ```
//!
//! Every `[grid]` key is a render parameter of the table ([`PARAMS`]) and takes one
//! value or a list of values; the renders are the cartesian product of all lists
//! times every content x style pair. For the layer keys a value is itself a set of
//! layers, so a list of alternatives is a list of sets: `style_layers =
//! "relu1_1,relu2_1"` is one set, `style_layers = ["relu1_1,relu2_1", ["relu1_1"]]`
//! two. `style_depth = [5, 8]` (or `style_layers = [5, 8]`) instead picks each
//! backbone's first N convolutional stages (see [`Backbone::conv_layers`]); points
//! that ask a backbone for more stages than it has are left out and counted in
//! [`Grid::skipped`].
//!
//! A value of `style` may also be a blend of several style images (see
//! [`Style`]): `{ blend = ["a.jpg", "b.jpg"], weights = [3, 1] }`.
//!
//! `preview_every = K` (top level) asks workers to upload the current iterate of
//! every task each K iterations; it is off by default. `max_task_time = "2h"`
//! (top level) fails an attempt that runs longer, without a retry; without it,
//! the coordinator's `--max-task-time` applies.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::{Spanned, Value as Toml};

use crate::params::table::{Kind, Param, Value, PARAMS};
use crate::{layout, Backbone, ParamError, RenderParams, Style};

/// A grid file that could not be read, located as precisely as it can be.
#[derive(Debug, Clone, PartialEq)]
pub struct GridError {
    pub file: PathBuf,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The key at fault, as `grid.size`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for GridError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for GridError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    name: Option<Spanned<String>>,
    content: Spanned<Toml>,
    style: Spanned<Toml>,
    preview_every: Option<Spanned<Toml>>,
    max_task_time: Option<Spanned<String>>,
    /// Render parameters by key, checked against the table.
    #[serde(default)]
    grid: BTreeMap<Spanned<String>, Spanned<Toml>>,
    #[serde(default)]
    weights: BTreeMap<Spanned<String>, Spanned<String>>,
    /// What people call the inputs, by key: see [`input_names`].
    #[serde(default)]
    #[allow(dead_code)] // read by `input_names`; here so that its types are checked
    names: BTreeMap<String, String>,
}

/// One render of a grid: its inputs as the grid names them, and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GridTask {
    pub content: String,
    pub style: Style,
    /// Shared by the tasks of one parameter point (a grid has up to a million).
    pub params: Arc<RenderParams>,
}

/// A parsed, checked grid file.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub name: String,
    /// Content images and styles, paths or URLs as written.
    pub contents: Vec<String>,
    pub styles: Vec<Style>,
    /// Backbone weights as written (a path or an object-store URL).
    pub weights: BTreeMap<Backbone, String>,
    /// Every render, content-major; each combination once: for each content
    /// and style, the same `points` parameter points in the same order.
    pub tasks: Vec<GridTask>,
    pub points: usize,
    /// Parameter points left out because a backbone has fewer convolutional
    /// stages than `style_depth` asked for (per content x style pair).
    pub skipped: usize,
    /// Upload each task's current iterate every this many iterations (0: never).
    pub preview_every: u32,
    /// How long one attempt at a task may run; `None` for the coordinator's limit.
    pub max_task_time: Option<std::time::Duration>,
}

impl Grid {
    /// The weights the grid names for `backbone`, or "" for random weights.
    pub fn weights_for(&self, backbone: Backbone) -> &str {
        self.weights.get(&backbone).map_or("", String::as_str)
    }

    /// Every task with its id (see [`task_id`]), in grid order; a task the grid
    /// lists twice (the same inputs under two names) once.
    pub fn identified_tasks(&self) -> Vec<(String, &GridTask)> {
        // A grid repeats its parameter points for every content and style: a
        // point's share of the hash is computed once.
        let prefixes: Vec<TaskIdPrefix> = self.tasks[..self.points]
            .iter()
            .map(|task| TaskIdPrefix::new(&task.params))
            .collect();
        let ids: Vec<(String, &GridTask)> = (0..)
            .zip(&self.tasks)
            .map(|(i, task)| {
                let point = &self.tasks[i % self.points].params;
                debug_assert!(Arc::ptr_eq(&task.params, point), "tasks repeat the points");
                let id = prefixes[i % self.points].id(&[
                    ("content", input_digest(&task.content)),
                    ("style", task.style.digest().as_str()),
                    ("weights", self.weights_for(task.params.backbone)),
                ]);
                (id, task)
            })
            .collect();
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let first: Vec<bool> = ids.iter().map(|(id, _)| seen.insert(id.as_str())).collect();
        drop(seen);
        ids.into_iter()
            .zip(first)
            .filter_map(|(task, first)| first.then_some(task))
            .collect()
    }
}

/// The content digest an input key carries (`inputs/<sha256>.<ext>`), or the key
/// itself for inputs that are not content-addressed.
pub fn input_digest(key: &str) -> &str {
    key.strip_prefix("inputs/")
        .and_then(|name| name.split('.').next())
        .filter(|digest| digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or(key)
}

/// More renders than this in one grid is surely a mistake (a list where a value was meant).
pub const MAX_GRID_TASKS: usize = 1_000_000;

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> GridError {
        GridError {
            file: self.file.to_owned(),
            line: span.map(|s| self.line_of(s.start)),
            key: (!key.is_empty()).then(|| key.to_owned()),
            message: message.into(),
        }
    }
}

/// One `[grid]` key: a parameter and the values it takes, each once.
struct Axis {
    param: &'static Param,
    /// As written (a parameter's name or one of its aliases), for messages.
    key: String,
    span: Range<usize>,
    values: Vec<Value>,
}

impl Axis {
    fn read(
        ctx: &Ctx<'_>,
        param: &'static Param,
        key: &Spanned<String>,
        value: &Spanned<Toml>,
    ) -> Result<Axis, GridError> {
        let written = format!("grid.{}", key.get_ref());
        let items: Vec<&Toml> = match value.get_ref() {
            Toml::Array(items) if items.is_empty() => {
                return Err(ctx.error(
                    &written,
                    Some(value.span()),
                    "an empty list leaves nothing to render",
                ))
            }
            // A list of numbers is one value of a list parameter (`scales =
            // [256, 512]`); a grid varies it with a list of lists or strings.
            Toml::Array(items)
                if param.kind == Kind::Wholes && items.iter().all(Toml::is_integer) =>
            {
                vec![value.get_ref()]
            }
            Toml::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let values = items
            .into_iter()
            .map(|item| {
                param
                    .parse_toml(item)
                    .map_err(|m| ctx.error(&written, Some(value.span()), m))
            })
            .collect::<Result<Vec<Value>, _>>()?;
        Ok(Axis {
            param,
            key: written,
            span: value.span(),
            values: distinct(values),
        })
    }
}

/// `values` without repeats, in first-seen order: a value listed twice is one point.
fn distinct<T: fmt::Debug>(values: Vec<T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    values
        .into_iter()
        .filter(|v| seen.insert(format!("{v:?}")))
        .collect()
}

/// `content` and `style`: one file name or a list of them.
fn parse_file_names(value: &Toml) -> Result<Vec<String>, String> {
    let names = match value {
        Toml::String(s) => vec![s.clone()],
        Toml::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Toml::String(s) => Ok(s.clone()),
                other => Err(format!("expected strings, found {}", other.type_str())),
            })
            .collect::<Result<_, _>>()?,
        Toml::Array(_) => return Err("an empty list leaves nothing to render".into()),
        other => {
            return Err(format!(
                "expected a string or a list of strings, found {}",
                other.type_str()
            ))
        }
    };
    if names.iter().any(|s: &String| s.trim().is_empty()) {
        return Err("an empty name names no file".into());
    }
    Ok(distinct(names))
}

/// `style`: one style or a list of them, each a file name or a blend
/// (`{ blend = [names], weights = [numbers] }`).
fn parse_styles(value: &Toml) -> Result<Vec<Style>, String> {
    let items = match value {
        Toml::Array(items) if items.is_empty() => {
            return Err("an empty list leaves nothing to render".into())
        }
        Toml::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let styles = items
        .into_iter()
        .map(|item| match item {
            Toml::String(name) if name.trim().is_empty() => {
                Err("an empty name names no file".to_owned())
            }
            Toml::String(name) if Style::parse(name) != Ok(Style::image(name.as_str())) => Err(
                format!("'{name}' is a blend's text: write a blend as {BLEND_SYNTAX}"),
            ),
            Toml::String(name) => Ok(Style::image(name.as_str())),
            Toml::Table(blend) => parse_blend(blend),
            other => Err(format!(
                "expected a file name or a blend, found {}",
                other.type_str()
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(distinct(styles))
}

/// `{ blend = ["a.jpg", "b.jpg"], weights = [3, 1] }`; without weights, equal ones.
const BLEND_SYNTAX: &str = "{ blend = [\"a.jpg\", \"b.jpg\"], weights = [3, 1] }";

fn parse_blend(table: &toml::Table) -> Result<Style, String> {
    if let Some(key) = table
        .keys()
        .find(|k| !["blend", "weights"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown key '{key}' in a blend: a blend is {BLEND_SYNTAX}"
        ));
    }
    let Some(Toml::Array(images)) = table.get("blend") else {
        return Err(format!(
            "a blend needs a list of images: a blend is {BLEND_SYNTAX}"
        ));
    };
    let images = images
        .iter()
        .map(|image| match image {
            Toml::String(name) => Ok(name.clone()),
            other => Err(format!(
                "a blend's images are file names, found {}",
                other.type_str()
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let weights = match table.get("weights") {
        None => vec![1.0; images.len()],
        Some(Toml::Array(weights)) => weights
            .iter()
            .map(|weight| match weight {
                Toml::Float(w) => Ok(*w),
                Toml::Integer(w) => Ok(*w as f64),
                other => Err(format!(
                    "blend weights are numbers, found {}",
                    other.type_str()
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(format!(
                "a blend's weights are a list of numbers, found {}",
                other.type_str()
            ))
        }
    };
    if weights.len() != images.len() {
        return Err(format!(
            "a blend of {} images needs {} weights, got {}",
            images.len(),
            images.len(),
            weights.len()
        ));
    }
    Style::blend(images.into_iter().zip(weights))
}

/// Reads a grid file's text (`file` names it in errors) and expands it.
pub fn parse_grid(file: &Path, text: &str) -> Result<Grid, GridError> {
    let ctx = Ctx { file, text };
    let raw: RawGrid = toml::from_str(text).map_err(|e| {
        let mut message = e.message().trim().to_owned();
        if message.starts_with("unknown field") {
            message = message.replacen("unknown field", "unknown key", 1);
        }
        ctx.error("", e.span(), message)
    })?;

    let name = match &raw.name {
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(ctx.error("name", Some(name.span()), "must not be empty"))
        }
        Some(name) => name.get_ref().clone(),
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "grid".into()),
    };
    let contents = parse_file_names(raw.content.get_ref())
        .map_err(|m| ctx.error("content", Some(raw.content.span()), m))?;
    let styles = parse_styles(raw.style.get_ref())
        .map_err(|m| ctx.error("style", Some(raw.style.span()), m))?;
    let mut weights = BTreeMap::new();
    for (backbone, location) in &raw.weights {
        let key = format!("weights.{}", backbone.get_ref());
        let parsed: Backbone = backbone.get_ref().parse().map_err(|e: crate::LayerError| {
            ctx.error(&key, Some(backbone.span()), e.to_string())
        })?;
        if location.get_ref().trim().is_empty() {
            return Err(ctx.error(&key, Some(location.span()), "must name a file or URL"));
        }
        if weights.insert(parsed, location.get_ref().clone()).is_some() {
            return Err(ctx.error(
                &key,
                Some(backbone.span()),
                "this backbone's weights are given twice",
            ));
        }
    }
    let preview_every = match &raw.preview_every {
        None => 0,
        Some(value) => match value.get_ref() {
            Toml::Integer(i) => u32::try_from(*i).map_err(|_| format!("{i} is out of range")),
            other => Err(format!(
                "expected a whole number, found {}",
                other.type_str()
            )),
        }
        .map_err(|m| ctx.error("preview_every", Some(value.span()), m))?,
    };
    let max_task_time = raw
        .max_task_time
        .as_ref()
        .map(|value| {
            crate::parse_duration(value.get_ref())
                .map_err(|m| ctx.error("max_task_time", Some(value.span()), m))
        })
        .transpose()?;

    let axes = read_axes(&ctx, &raw.grid)?;
    let points = axes
        .iter()
        .map(|a| a.values.len())
        .chain([contents.len(), styles.len()])
        .try_fold(1usize, |acc, n| acc.checked_mul(n))
        .filter(|&n| n <= MAX_GRID_TASKS)
        .ok_or_else(|| {
            ctx.error(
                "grid",
                None,
                format!("expands to more than {MAX_GRID_TASKS} renders"),
            )
        })?;

    let mut params_points = Vec::new();
    let mut skipped = 0;
    let mut unfit = None;
    // Odometer over the axes: the last turns fastest.
    let mut index = vec![0usize; axes.len()];
    loop {
        let given = |param: &Param| {
            axes.iter()
                .position(|a| std::ptr::eq(a.param, param))
                .map(|i| &axes[i].values[index[i]])
        };
        match RenderParams::with_values(given) {
            Ok(params) => {
                params.validate().map_err(|e| {
                    let axis = e
                        .param()
                        .and_then(|name| axes.iter().find(|a| a.param.name == name));
                    let key = match (axis, e.param()) {
                        (Some(axis), _) => axis.key.clone(),
                        (None, Some(name)) => format!("grid.{name}"),
                        (None, None) => "grid".into(),
                    };
                    ctx.error(
                        &key,
                        axis.map(|a| a.span.clone()),
                        format!("{e} (for {})", params.backbone),
                    )
                })?;
                params_points.push(Arc::new(params.normalised()));
            }
            Err(e @ ParamError::DoesNotFit { .. }) => {
                skipped += 1;
                unfit = Some(e);
            }
            Err(e) => return Err(ctx.error("grid", None, e.to_string())),
        }
        let Some(axis) = (0..index.len())
            .rev()
            .find(|&a| index[a] + 1 < axes[a].values.len())
        else {
            break;
        };
        index[axis] += 1;
        index[axis + 1..].fill(0);
    }

    let skipped = skipped * contents.len() * styles.len();
    if params_points.is_empty() {
        let e = unfit.expect("a point is either kept or does not fit");
        let axis = axes.iter().find(|a| Some(a.param.name) == e.param());
        return Err(ctx.error(
            axis.map_or("grid", |a| a.key.as_str()),
            axis.map(|a| a.span.clone()),
            format!("no point of the grid fits: {e}"),
        ));
    }
    // Every axis holds distinct values, so every combination is a distinct
    // render: no need to compare the (possibly 100,000) tasks.
    let mut tasks = Vec::with_capacity(points);
    for content in &contents {
        for style in &styles {
            for params in &params_points {
                tasks.push(GridTask {
                    content: content.clone(),
                    style: style.clone(),
                    params: Arc::clone(params),
                });
            }
        }
    }
    Ok(Grid {
        name,
        contents,
        styles,
        weights,
        tasks,
        points: params_points.len(),
        skipped,
        preview_every,
        max_task_time,
    })
}

/// The `[grid]` keys as axes, in the table's order; unknown keys and a
/// parameter given under two names are refused.
fn read_axes(
    ctx: &Ctx<'_>,
    grid: &BTreeMap<Spanned<String>, Spanned<Toml>>,
) -> Result<Vec<Axis>, GridError> {
    let mut axes: Vec<Axis> = Vec::new();
    for (key, value) in grid {
        let written = key.get_ref().as_str();
        let param = PARAMS
            .iter()
            .find(|p| p.name == written || p.aliases.contains(&written))
            .ok_or_else(|| {
                let keys: Vec<&str> = PARAMS.iter().map(|p| p.name).collect();
                ctx.error(
                    &format!("grid.{written}"),
                    Some(key.span()),
                    format!("unknown key '{written}'; the keys are: {}", keys.join(", ")),
                )
            })?;
        let axis = Axis::read(ctx, param, key, value)?;
        if let Some(other) = axes.iter().find(|a| a.param == param) {
            // Name the later of the two, where the reader will look.
            let (first, second) = if other.span.start < axis.span.start {
                (other, &axis)
            } else {
                (&axis, other)
            };
            return Err(ctx.error(
                &second.key,
                Some(second.span.clone()),
                format!(
                    "give {} or {}, not both (they are one parameter)",
                    first.key.trim_start_matches("grid."),
                    second.key.trim_start_matches("grid.")
                ),
            ));
        }
        axes.push(axis);
    }
    let position = |axis: &Axis| PARAMS.iter().position(|p| p == axis.param);
    axes.sort_by_key(position);
    Ok(axes)
}

/// The entries of a grid file's text that name files: content and style images,
/// starting images, weights. `visit` is given the key each is under (`content`,
/// `style`, `grid.init`, `weights.vgg19`) and may rewrite the entry.
fn for_each_input(table: &mut toml::Table, visit: &mut dyn FnMut(&str, &mut String)) {
    // Strings, lists of them, and the images of blends (`{ blend = [...] }`).
    fn strings(value: &mut Toml, only: &dyn Fn(&str) -> bool, visit: &mut dyn FnMut(&mut String)) {
        match value {
            Toml::String(entry) if only(entry) => visit(entry),
            Toml::Array(items) => {
                for item in items {
                    strings(item, only, visit);
                }
            }
            Toml::Table(blend) => {
                if let Some(images) = blend.get_mut("blend") {
                    strings(images, only, visit);
                }
            }
            _ => {}
        }
    }
    for field in ["content", "style"] {
        if let Some(value) = table.get_mut(field) {
            strings(value, &|_| true, &mut |entry| visit(field, entry));
        }
    }
    if let Some(Toml::Table(axes)) = table.get_mut("grid") {
        for (key, value) in axes.iter_mut() {
            if let Some(param) = PARAMS
                .iter()
                .find(|p| p.name == key || p.aliases.contains(&key.as_str()))
            {
                let key = format!("grid.{key}");
                strings(value, &|entry| param.names_file(entry), &mut |entry| {
                    visit(&key, entry)
                });
            }
        }
    }
    if let Some(Toml::Table(weights)) = table.get_mut("weights") {
        for (backbone, value) in weights.iter_mut() {
            let key = format!("weights.{backbone}");
            strings(value, &|_| true, &mut |entry| visit(&key, entry));
        }
    }
}

/// The files a grid's text names that are not in a store yet (paths, relative
/// to the grid file), each once, in order: what `submit` uploads, and what
/// `plan` hashes.
pub fn local_inputs(text: &str) -> Result<Vec<String>, toml::de::Error> {
    let mut table: toml::Table = text.parse()?;
    let mut entries = Vec::new();
    for_each_input(&mut table, &mut |_, entry| {
        if !layout::is_stored(entry) && !entries.contains(entry) {
            entries.push(entry.clone());
        }
    });
    Ok(entries)
}

/// Every entry of a grid's text that names a file, with the key it is under
/// (`content`, `style`, `grid.init`, `weights.vgg19`), in order: what the
/// coordinator checks before it takes a grid.
pub fn input_entries(text: &str) -> Result<Vec<(String, String)>, toml::de::Error> {
    let mut table: toml::Table = text.parse()?;
    let mut entries = Vec::new();
    for_each_input(&mut table, &mut |key, entry| {
        entries.push((key.to_owned(), entry.clone()));
    });
    Ok(entries)
}

/// The grid's text with each local input that `keys` names replaced by its
/// object key, as the coordinator receives it, and a `[names]` table keeping
/// what people called each (its file name: see [`input_names`]).
pub fn grid_with_input_keys(
    text: &str,
    keys: &BTreeMap<String, String>,
) -> Result<String, toml::de::Error> {
    let mut table: toml::Table = text.parse()?;
    let mut names = BTreeMap::new();
    for_each_input(&mut table, &mut |_, entry| {
        if let Some(key) = keys.get(entry.as_str()) {
            let name = Path::new(entry.as_str())
                .file_name()
                .map_or_else(|| entry.clone(), |n| n.to_string_lossy().into_owned());
            names.insert(key.clone(), Toml::String(name));
            *entry = key.clone();
        }
    });
    if !names.is_empty() {
        let written = table
            .entry(NAMES)
            .or_insert_with(|| Toml::Table(toml::Table::new()));
        if let Toml::Table(written) = written {
            written.extend(names);
        }
    }
    Ok(toml::to_string(&table).expect("a parsed table serialises"))
}

/// The grid table that says what people call its inputs.
const NAMES: &str = "names";

/// What people call the inputs of the grid `text`, by the key or URL the grid
/// gives them: its `[names]` table, which `submit` fills with the file names of
/// what it uploads (`"inputs/596aa1e7….png" = "chelsea.png"`). Empty for a grid
/// without one, or one that does not parse. Names are for people to read:
/// they change no task's id.
pub fn input_names(text: &str) -> BTreeMap<String, String> {
    let Ok(mut table) = text.parse::<toml::Table>() else {
        return BTreeMap::new();
    };
    match table.remove(NAMES) {
        Some(Toml::Table(names)) => names
            .into_iter()
            .filter_map(|(key, name)| Some((key, name.as_str()?.to_owned())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// What a grid's `[weights]` writes for the pretrained file installed on the
/// machine that submits it (`vgg16 = "pretrained"`).
pub const PRETRAINED: &str = "pretrained";

/// The grid's text with each `[weights]` entry that says [`PRETRAINED`] replaced
/// by the path of the file `installed` gives for its backbone, so that it is
/// uploaded like any other weights file. The text comes back unchanged when no
/// entry says it. `file` names the grid in errors; the grid is checked first.
pub fn grid_with_pretrained_weights(
    file: &Path,
    text: &str,
    installed: &dyn Fn(Backbone) -> Option<PathBuf>,
) -> Result<String, GridError> {
    let grid = parse_grid(file, text)?;
    let wanted: Vec<Backbone> = grid
        .weights
        .iter()
        .filter(|(_, location)| location.as_str() == PRETRAINED)
        .map(|(backbone, _)| *backbone)
        .collect();
    if wanted.is_empty() {
        return Ok(text.to_owned());
    }
    let mut table: toml::Table = text.parse().expect("checked by parse_grid");
    let Some(Toml::Table(weights)) = table.get_mut("weights") else {
        unreachable!("parse_grid found [weights]")
    };
    for (name, location) in weights.iter_mut() {
        let Ok(backbone) = name.parse::<Backbone>() else {
            continue;
        };
        if !wanted.contains(&backbone) {
            continue;
        }
        let path = installed(backbone).ok_or_else(|| GridError {
            file: file.to_owned(),
            line: None,
            key: Some(format!("weights.{name}")),
            message: format!(
                "no pretrained weights are installed for {backbone} on this machine \
                 (scripts/setup.sh installs VGG16's; `pastiche weights list` shows what is)"
            ),
        })?;
        *location = Toml::String(path.display().to_string());
    }
    Ok(toml::to_string(&table).expect("a parsed table serialises"))
}

/// Reads and expands the grid file at `path`.
pub fn read_grid(path: &Path) -> Result<Grid, GridError> {
    let text = std::fs::read_to_string(path).map_err(|e| GridError {
        file: path.to_owned(),
        line: None,
        key: None,
        message: e.to_string(),
    })?;
    parse_grid(path, &text)
}

/// A task's identity: a hash of its parameters and of the digests of everything it
/// reads (content, style, weights, init image). The same render asked for twice,
/// in one grid or two, gets the same id, so it is done once.
pub fn task_id(params: &RenderParams, input_digests: &[(&str, &str)]) -> String {
    TaskIdPrefix::new(params).id(input_digests)
}

/// [`task_id`] in two steps: the parameters' part once, then each task's inputs.
#[derive(Clone)]
struct TaskIdPrefix(Sha256);

impl TaskIdPrefix {
    pub fn new(params: &RenderParams) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"pastiche-task-v1\n");
        hasher.update(serde_json::to_vec(params).expect("params serialise"));
        TaskIdPrefix(hasher)
    }

    /// The id of the task with these parameters that reads `input_digests`.
    pub fn id(&self, input_digests: &[(&str, &str)]) -> String {
        let mut hasher = self.0.clone();
        for (role, digest) in input_digests {
            for part in ["\n", role, "=", digest] {
                hasher.update(part.as_bytes());
            }
        }
        // 128 bits: no collision in any number of grids a farm will see.
        hex(&hasher.finalize()[..16])
    }
}

/// `bytes` in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
    text
}

/// The SHA-256 of `bytes`, in lowercase hex: how inputs are named in the object store.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Init, OptimizerKind};

    fn parse(text: &str) -> Result<Grid, GridError> {
        parse_grid(Path::new("study.toml"), text)
    }

    #[test]
    fn the_design_example_expands_to_its_product() {
        let grid = parse(
            r#"
name = "seed-study"
content = ["photos/tuebingen.jpg"]
style   = ["art/starry_night.jpg", "art/the_scream.jpg"]
[grid]
backbone       = ["vgg16", "vgg19", "googlenet"]
style_weight   = [1e4, 1e5, 1e6]
content_weight = 1.0
init           = ["content", "noise"]
optimizer      = "lbfgs"
iterations     = 300
size           = 512
seed           = 0
log_every      = 50
[weights]
vgg19 = "s3://models/vgg19.safetensors"
"#,
        )
        .unwrap();
        assert_eq!(grid.name, "seed-study");
        assert_eq!(grid.tasks.len(), 2 * 3 * 3 * 2);
        assert_eq!(
            grid.weights[&Backbone::Vgg19],
            "s3://models/vgg19.safetensors"
        );
        let googlenet_noise = grid
            .tasks
            .iter()
            .filter(|t| t.params.backbone == Backbone::GoogLeNet && t.params.init == Init::Noise)
            .count();
        assert_eq!(googlenet_noise, 2 * 3);
        // Per-backbone defaults where the grid does not say.
        let googlenet = grid
            .tasks
            .iter()
            .find(|t| t.params.backbone == Backbone::GoogLeNet)
            .unwrap();
        assert_eq!(googlenet.params.content_layers, ["inception3b"]);
        assert!(grid
            .tasks
            .iter()
            .all(|t| t.params.iterations == 300 && t.params.log_every == 50));
    }

    #[test]
    fn a_list_of_scales_is_one_value_and_a_list_of_lists_an_axis() {
        // Each task's scales and scale_iterations.
        type Scales = Vec<(Vec<u32>, Vec<u32>)>;
        let scales = |grid: &str| -> Result<Scales, GridError> {
            let text =
                format!("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nsize = 512\n{grid}");
            Ok(parse(&text)?
                .tasks
                .iter()
                .map(|t| (t.params.scales.clone(), t.params.scale_iterations.clone()))
                .collect())
        };
        // As the flag writes it, and with the output size closing the list.
        assert_eq!(
            scales("scales = [128, 256]").unwrap(),
            [(vec![128, 256], vec![])]
        );
        assert_eq!(
            scales("scales = [128, 256, 512]").unwrap(),
            [(vec![128, 256], vec![])]
        );
        assert_eq!(
            scales("scales = \"128,256\"").unwrap(),
            [(vec![128, 256], vec![])]
        );
        assert_eq!(scales("scales = 256").unwrap(), [(vec![256], vec![])]);
        // A grid varies it with a list of lists (or strings).
        assert_eq!(
            scales("scales = [[256], [128, 256]]\nscale_iterations = 100").unwrap(),
            [(vec![256], vec![100]), (vec![128, 256], vec![100])]
        );
        assert_eq!(scales("scales = [\"256\", \"128,256\"]").unwrap().len(), 2);
        // As many iterations as at the output size is the default: one id.
        assert_eq!(
            scales("scales = [256]\nscale_iterations = 300\niterations = 300").unwrap(),
            [(vec![256], vec![])]
        );
        // Without scales, scale_iterations is not read.
        assert_eq!(scales("scale_iterations = 5").unwrap(), [(vec![], vec![])]);
        for (bad, needle) in [
            ("scales = [256, 128]", "scales must increase"),
            ("scales = [1024]", "below size"),
            ("scales = [8]", "at least"),
            (
                "scales = [128, 256]\nscale_iterations = [1, 2, 3]",
                "one for each of the 2",
            ),
            (
                "scales = [128, 256]\nscale_iterations = [300, 300, 300]",
                "one for each of the 2",
            ),
            ("scales = [256]\nscale_iterations = 0", "between 1 and"),
            ("scales = [1.5]", "whole numbers"),
        ] {
            let err = scales(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn a_blend_is_one_style_of_the_grid_and_its_images_are_uploaded() {
        let text = r#"
content = "c.jpg"
style = ["a.jpg", { blend = ["a.jpg", "b.png"], weights = [3, 1] }, { blend = ["b.png"] }]
[grid]
style_weight = [1e5, "auto", "Auto:2"]
original_colors = [false, true]
"#;
        let grid = parse(text).unwrap();
        assert_eq!(grid.styles.len(), 3);
        assert_eq!(grid.styles[0], Style::image("a.jpg"));
        let shares: Vec<(&str, f64)> = grid.styles[1].images().collect();
        assert_eq!(shares, [("a.jpg", 0.75), ("b.png", 0.25)]);
        assert_eq!(
            grid.styles[2],
            Style::image("b.png"),
            "a blend of one image"
        );
        assert_eq!(grid.tasks.len(), 3 * 3 * 2);
        let auto = grid
            .tasks
            .iter()
            .filter(|t| t.params.style_weight.is_auto());
        assert_eq!(auto.count(), 3 * 2 * 2);

        // `submit` uploads each image of a blend once and names it by its key.
        assert_eq!(local_inputs(text).unwrap(), ["c.jpg", "a.jpg", "b.png"]);
        let keys: BTreeMap<String, String> =
            [("a.jpg", "inputs/aa.jpg"), ("b.png", "inputs/bb.png")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect();
        let submitted = parse(&grid_with_input_keys(text, &keys).unwrap()).unwrap();
        assert_eq!(
            submitted.styles[1].to_string(),
            "blend:0.75=inputs/aa.jpg|0.25=inputs/bb.png"
        );
        let ids = submitted.identified_tasks();
        assert_eq!(ids.len(), 18, "every point is its own render");
    }

    #[test]
    fn submitted_grids_keep_the_names_people_gave_their_inputs_and_ids_ignore_them() {
        let text =
            "content = \"photos/chelsea.png\"\nstyle = [\"starry.jpg\", \"s3://b/scream.jpg\"]\n";
        let keys: BTreeMap<String, String> = [
            ("photos/chelsea.png", "inputs/cc.png"),
            ("starry.jpg", "inputs/ss.jpg"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let submitted = grid_with_input_keys(text, &keys).unwrap();
        let names: Vec<(String, String)> = input_names(&submitted).into_iter().collect();
        assert_eq!(
            names,
            [
                ("inputs/cc.png".to_owned(), "chelsea.png".to_owned()),
                ("inputs/ss.jpg".to_owned(), "starry.jpg".to_owned())
            ]
        );
        let mut unnamed: toml::Table = submitted.parse().unwrap();
        unnamed.remove("names").expect("written");
        let ids = |text: &str| -> Vec<String> {
            let grid = parse(text).unwrap();
            grid.identified_tasks()
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        assert_eq!(ids(&submitted), ids(&toml::to_string(&unnamed).unwrap()));
        // Names are text.
        let wrong = "content = \"a.png\"\nstyle = \"b.png\"\n[names]\n\"a.png\" = 3\n";
        assert!(parse(wrong).is_err());
        assert!(input_names("not toml [").is_empty());
    }

    #[test]
    fn every_input_entry_is_visited_with_its_key() {
        let text = r#"
content = ["c.jpg", "s3://b/c.png"]
style = ["a.jpg", { blend = ["a.jpg", "b.png"] }]
[grid]
init = ["noise", "start.jpg"]
size = 32
[weights]
vgg19 = "s3://models/vgg19.safetensors"
"#;
        let entries = input_entries(text).unwrap();
        let entries: Vec<(&str, &str)> = entries
            .iter()
            .map(|(key, entry)| (key.as_str(), entry.as_str()))
            .collect();
        assert_eq!(
            entries,
            [
                ("content", "c.jpg"),
                ("content", "s3://b/c.png"),
                ("style", "a.jpg"),
                ("style", "a.jpg"),
                ("style", "b.png"),
                ("grid.init", "start.jpg"),
                ("weights.vgg19", "s3://models/vgg19.safetensors"),
            ]
        );
    }

    #[test]
    fn malformed_blends_are_refused_with_their_line() {
        for (style, needle) in [
            (
                r#"{ blend = ["a.jpg", "b.jpg"], weights = [1] }"#,
                "needs 2 weights",
            ),
            (r#"{ blend = ["a.jpg"], weights = [0] }"#, "positive"),
            (r#"{ images = ["a.jpg"] }"#, "unknown key 'images'"),
            (r#"{ weights = [1] }"#, "needs a list of images"),
            (r#"[1]"#, "expected a file name or a blend"),
            (r#""blend:1=a.jpg|1=b.jpg""#, "a blend's text"),
        ] {
            let err = parse(&format!("content = \"c.jpg\"\n\nstyle = {style}\n")).unwrap_err();
            assert_eq!(
                (err.line, err.key.as_deref()),
                (Some(3), Some("style")),
                "{err}"
            );
            assert!(err.message.contains(needle), "{err}");
        }
    }

    #[test]
    fn layer_sets_and_alternatives() {
        let grid = parse(
            r#"
content = "c.jpg"
style = "s.jpg"
[grid]
style_layers = ["relu1_1,relu2_1:0.5", ["relu1_1"]]
content_layers = "relu4_2"
"#,
        )
        .unwrap();
        assert_eq!(grid.tasks.len(), 2);
        assert_eq!(grid.tasks[0].params.style_layers.len(), 2);
        assert_eq!(grid.tasks[0].params.style_layers[1].weight, 0.5);
        assert_eq!(grid.tasks[1].params.style_layers.len(), 1);
        assert_eq!(grid.name, "study");
    }

    #[test]
    fn style_layers_by_depth_where_the_backbone_has_them() {
        let grid = parse(
            r#"
content = "c.jpg"
style = ["s.jpg", "t.jpg"]
preview_every = 10
max_task_time = "90m"
[grid]
backbone = ["vgg16", "vgg19", "googlenet"]
style_depth = [5, 13, 16]
"#,
        )
        .unwrap();
        // vgg16 lacks 16 stages, googlenet 13 and 16: 9 - 3 points, per style.
        assert_eq!(grid.tasks.len(), 2 * 6);
        assert_eq!(grid.skipped, 2 * 3);
        assert_eq!(grid.preview_every, 10);
        assert_eq!(
            grid.max_task_time,
            Some(std::time::Duration::from_secs(5400))
        );
        let deepest_vgg19 = grid
            .tasks
            .iter()
            .filter(|t| t.params.backbone == Backbone::Vgg19)
            .map(|t| t.params.style_layers.len())
            .max();
        assert_eq!(deepest_vgg19, Some(16));
        let googlenet = grid
            .tasks
            .iter()
            .find(|t| t.params.backbone == Backbone::GoogLeNet)
            .unwrap();
        let names: Vec<&str> = googlenet
            .params
            .style_layers
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["conv1", "conv2", "conv3", "inception3a", "inception3b"]
        );
        assert_eq!(
            parse("content = \"c\"\nstyle = \"s\"\n")
                .unwrap()
                .preview_every,
            0
        );
    }

    #[test]
    fn a_repeated_point_is_one_task() {
        let grid = parse(
            "content = \"c.jpg\"\nstyle = [\"s.jpg\", \"s.jpg\"]\n[grid]\nsize = [64, 64, 128]\n",
        )
        .unwrap();
        assert_eq!(grid.tasks.len(), 2);
    }

    #[test]
    fn points_that_differ_only_in_what_the_render_ignores_are_one_render() {
        let grid = parse(
            "content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\noptimizer = [\"adam\", \"lbfgs\"]\n\
             line_search = [\"none\", \"strong_wolfe\"]\nhistory_size = [10, 100]\n\
             init = [\"content\", \"noise\"]\nseed = [1, 2]\n",
        )
        .unwrap();
        // Adam: 1 optimiser point; L-BFGS: 2 x 2. Content: 1 seed; noise: 2.
        assert_eq!(grid.identified_tasks().len(), (1 + 4) * (1 + 2));
        for (_, task) in grid.identified_tasks() {
            let p = &task.params;
            if p.optimizer.kind == OptimizerKind::Adam {
                assert_eq!(p.optimizer.history_size, 100);
            }
            if p.init == Init::Content {
                assert_eq!(p.seed, 0);
            }
        }
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_line() {
        let cases = [
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nsize = 64\nbackbon = \"vgg19\"\n", "study.toml:5", "backbon"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nbackbone = [\"vgg19\", \"resnet\"]\n", "study.toml:4: grid.backbone", "resnet"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\n\nsize = \"big\"\n", "study.toml:5: grid.size", "whole number"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nsize = [64, 100000]\n", "study.toml:4: grid.size", "100000"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nbackbone = \"googlenet\"\nstyle_layers = \"relu1_1\"\n", "study.toml:5: grid.style_layers", "relu1_1"),
            ("content = \"c.jpg\"\nstyle = []\n", "study.toml:2: style", "empty"),
            ("style = \"s.jpg\"\n", "study.toml", "content"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[weights]\nresnet = \"r.safetensors\"\n", "study.toml:4: weights.resnet", "resnet"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nsize = [64,\n", "study.toml:4", ""),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nstyle_layers = \"relu1_1\"\nstyle_depth = 5\n", "study.toml:5: grid.style_depth", "not both"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nbackbone = \"vgg16\"\nstyle_depth = [14, 20]\n", "study.toml:5: grid.style_depth", "13"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nstyle_depth = 0\n", "study.toml:4: grid.style_depth", "at least 1"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\npreview_every = -1\n", "study.toml:3: preview_every", "range"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\nmax_task_time = \"soon\"\n", "study.toml:3: max_task_time", "not a duration"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\niterations = 1000000\n", "study.toml:4: grid.iterations", "at most 100000"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nhistory_size = 5000\n", "study.toml:4: grid.history_size", "at most 1000"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nstyle_layers = \"relu1_1,relu1_1\"\n", "study.toml:4: grid.style_layers", "twice"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[weights]\nVGG19 = \"a.safetensors\"\nvgg19 = \"b.safetensors\"\n", "study.toml:", "given twice"),
            ("content = [\"c.jpg\", \"\"]\nstyle = \"s.jpg\"\n", "study.toml:1: content", "empty name"),
            ("content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\ninit = [\"noise\", \"nosie\"]\n", "study.toml:4: grid.init", "'nosie'"),
        ];
        for (text, location, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(location),
                "'{err}' should start with '{location}'"
            );
            assert!(err.contains(needle), "'{err}' should mention '{needle}'");
        }
    }

    #[test]
    fn task_ids_depend_on_parameters_and_inputs_only() {
        let a = RenderParams::new(Backbone::Vgg19);
        let b = RenderParams {
            size: 256,
            ..a.clone()
        };
        let inputs = [("content", "aa"), ("style", "bb")];
        assert_eq!(task_id(&a, &inputs), task_id(&a.clone(), &inputs));
        assert_ne!(task_id(&a, &inputs), task_id(&b, &inputs));
        assert_ne!(
            task_id(&a, &inputs),
            task_id(&a, &[("content", "aa"), ("style", "cc")])
        );
        assert_ne!(
            task_id(&a, &inputs),
            task_id(&a, &[("content", "bb"), ("style", "aa")])
        );
        assert_eq!(task_id(&a, &inputs).len(), 32);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn digests_come_from_content_addressed_keys_only() {
        let sha = "a".repeat(64);
        assert_eq!(input_digest(&format!("inputs/{sha}.png")), sha);
        assert_eq!(
            input_digest("s3://bucket/photo.png"),
            "s3://bucket/photo.png"
        );
        assert_eq!(input_digest("inputs/short.png"), "inputs/short.png");
    }

    #[test]
    fn the_same_inputs_under_two_names_are_one_task() {
        let sha = "b".repeat(64);
        let grid = parse(&format!(
            "content = [\"inputs/{sha}.png\", \"inputs/{sha}.jpg\"]\nstyle = \"s.jpg\"\n"
        ))
        .unwrap();
        assert_eq!(grid.tasks.len(), 2);
        assert_eq!(grid.identified_tasks().len(), 1);
    }

    #[test]
    fn the_shipped_study_grids_expand_as_their_comments_say() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let full = read_grid(&examples.join("seed-study.toml")).unwrap();
        assert_eq!((full.tasks.len(), full.skipped), (100, 20));
        assert_eq!(full.weights.len(), 3);
        let small = read_grid(&examples.join("seed-study-small.toml")).unwrap();
        assert_eq!((small.tasks.len(), small.skipped), (16, 8));
        assert!(small.weights.is_empty());
        let readme = read_grid(&examples.join("starry-cat.toml")).unwrap();
        assert_eq!((readme.tasks.len(), readme.skipped), (8, 0));
        assert_eq!(readme.weights_for(Backbone::Vgg16), PRETRAINED);
    }

    #[test]
    fn a_hundred_thousand_point_grid_expands() {
        let sizes: Vec<String> = (0..1000).map(|i| (64 + i).to_string()).collect();
        let text = format!(
            "content = \"c.jpg\"\nstyle = \"s.jpg\"\n[grid]\nseed = [{}]\nsize = [{}]\n",
            (0..100)
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(","),
            sizes.join(",")
        );
        let grid = parse(&text).unwrap();
        assert_eq!(grid.tasks.len(), 100_000);
    }

    #[test]
    fn pretrained_weights_become_the_installed_file_and_nothing_else_changes() {
        let file = Path::new("study.toml");
        let text = "content = \"c.png\"\nstyle = \"s.png\"\n[grid]\nbackbone = [\"vgg16\", \"vgg19\"]\n[weights]\nvgg16 = \"pretrained\"\nvgg19 = \"v19.safetensors\"\n";
        let installed =
            |b: Backbone| (b == Backbone::Vgg16).then(|| PathBuf::from("/w/vgg16.safetensors"));
        let resolved = grid_with_pretrained_weights(file, text, &installed).unwrap();
        let grid = parse_grid(file, &resolved).unwrap();
        assert_eq!(grid.weights[&Backbone::Vgg16], "/w/vgg16.safetensors");
        assert_eq!(grid.weights[&Backbone::Vgg19], "v19.safetensors");
        assert_eq!(
            local_inputs(&resolved).unwrap(),
            ["c.png", "s.png", "/w/vgg16.safetensors", "v19.safetensors"]
        );

        let without = "content = \"c.png\"\nstyle = \"s.png\"\n";
        assert_eq!(
            grid_with_pretrained_weights(file, without, &installed).unwrap(),
            without
        );

        let missing = text.replace("vgg19 = \"v19.safetensors\"", "vgg19 = \"pretrained\"");
        let error = grid_with_pretrained_weights(file, &missing, &installed).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("weights.vgg19"));
        assert!(
            error
                .to_string()
                .contains("no pretrained weights are installed for vgg19"),
            "{error}"
        );
    }
}
