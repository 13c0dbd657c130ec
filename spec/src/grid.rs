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
//! Every `[grid]` key takes one value or a list of values; the renders are the
//! cartesian product of all lists times every content x style pair. For the layer
//! keys a value is itself a set of layers, so a list of alternatives is a list of
//! sets: `style_layers = "relu1_1,relu2_1"` is one set, `style_layers =
//! ["relu1_1,relu2_1", ["relu1_1"]]` two. `style_depth = [5, 8]` instead picks
//! each backbone's first N convolutional stages (see [`Backbone::conv_layers`]);
//! points that ask a backbone for more stages than it has are left out and
//! counted in [`Grid::skipped`].
//!
//! `preview_every = K` (top level) asks workers to upload the current iterate of
//! every task each K iterations; it is off by default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::{Spanned, Value};

use crate::{Backbone, Init, LineSearch, OptimizerKind, ParamError, RenderParams, StyleLayer};

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

/// The axes of `[grid]`, each one value or a list of them (checked when expanded).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Axes {
    backbone: Option<Spanned<Value>>,
    content_layers: Option<Spanned<Value>>,
    style_layers: Option<Spanned<Value>>,
    style_depth: Option<Spanned<Value>>,
    content_weight: Option<Spanned<Value>>,
    style_weight: Option<Spanned<Value>>,
    tv_weight: Option<Spanned<Value>>,
    init: Option<Spanned<Value>>,
    optimizer: Option<Spanned<Value>>,
    lr: Option<Spanned<Value>>,
    line_search: Option<Spanned<Value>>,
    history_size: Option<Spanned<Value>>,
    iterations: Option<Spanned<Value>>,
    size: Option<Spanned<Value>>,
    style_scale: Option<Spanned<Value>>,
    seed: Option<Spanned<Value>>,
    log_every: Option<Spanned<Value>>,
}

impl Axes {
    /// Where the grid sets `key`, if it does.
    fn span_of(&self, key: &str) -> Option<std::ops::Range<usize>> {
        let axis = match key {
            "backbone" => &self.backbone,
            "content_layers" => &self.content_layers,
            "style_layers" if self.style_depth.is_some() => &self.style_depth,
            "style_layers" => &self.style_layers,
            "style_depth" => &self.style_depth,
            "content_weight" => &self.content_weight,
            "style_weight" => &self.style_weight,
            "tv_weight" => &self.tv_weight,
            "init" => &self.init,
            "optimizer" => &self.optimizer,
            "lr" | "learning_rate" => &self.lr,
            "line_search" => &self.line_search,
            "history_size" => &self.history_size,
            "iterations" => &self.iterations,
            "size" => &self.size,
            "style_scale" => &self.style_scale,
            "seed" => &self.seed,
            "log_every" => &self.log_every,
            _ => return None,
        };
        axis.as_ref().map(Spanned::span)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    name: Option<Spanned<String>>,
    content: Spanned<Value>,
    style: Spanned<Value>,
    preview_every: Option<Spanned<Value>>,
    #[serde(default)]
    grid: Axes,
    #[serde(default)]
    weights: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// One render of a grid: its inputs as the grid names them, and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GridTask {
    pub content: String,
    pub style: String,
    pub params: RenderParams,
}

/// A parsed, checked grid file.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub name: String,
    /// Content and style images, paths or URLs as written.
    pub contents: Vec<String>,
    pub styles: Vec<String>,
    /// Backbone weights as written (a path or an object-store URL).
    pub weights: BTreeMap<Backbone, String>,
    /// Every render, content-major; each combination once.
    pub tasks: Vec<GridTask>,
    /// Parameter points left out because a backbone has fewer convolutional
    /// stages than `style_depth` asked for (per content x style pair).
    pub skipped: usize,
    /// Upload each task's current iterate every this many iterations (0: never).
    pub preview_every: u32,
}

impl Grid {
    /// The weights the grid names for `backbone`, or "" for random weights.
    pub fn weights_for(&self, backbone: Backbone) -> &str {
        self.weights.get(&backbone).map_or("", String::as_str)
    }

    /// Every task with its id (see [`task_id`]), in grid order; a task the grid
    /// lists twice (the same inputs under two names) once.
    pub fn identified_tasks(&self) -> Vec<(String, &GridTask)> {
        let mut seen = std::collections::HashSet::new();
        self.tasks
            .iter()
            .filter_map(|task| {
                let id = task_id(
                    &task.params,
                    &[
                        ("content", input_digest(&task.content)),
                        ("style", input_digest(&task.style)),
                        ("weights", self.weights_for(task.params.backbone)),
                    ],
                );
                seen.insert(id.clone()).then_some((id, task))
            })
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

/// A `[grid]` choice of style layers: by name, or the first N conv stages.
#[derive(Debug, Clone)]
enum StyleChoice {
    Layers(Vec<StyleLayer>),
    Depth(usize),
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
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> GridError {
        GridError {
            file: self.file.to_owned(),
            line: span.map(|s| self.line_of(s.start)),
            key: (!key.is_empty()).then(|| key.to_owned()),
            message: message.into(),
        }
    }

    /// One value or a list of them, each converted by `parse`.
    fn axis<T: fmt::Debug>(
        &self,
        key: &str,
        value: &Option<Spanned<Value>>,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Option<Vec<T>>, GridError> {
        let Some(value) = value else { return Ok(None) };
        let items: Vec<&Value> = match value.get_ref() {
            Value::Array(items) if items.is_empty() => {
                return Err(self.error(
                    key,
                    Some(value.span()),
                    "an empty list leaves nothing to render",
                ))
            }
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let values = items
            .into_iter()
            .map(|item| parse(item).map_err(|m| self.error(key, Some(value.span()), m)))
            .collect::<Result<Vec<T>, _>>()?;
        Ok(Some(distinct(values)))
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

fn parse_str<T: std::str::FromStr>(value: &Value) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    match value {
        Value::String(s) => s.parse().map_err(|e: T::Err| e.to_string()),
        other => Err(format!("expected a string, found {}", other.type_str())),
    }
}

fn parse_f64(value: &Value) -> Result<f64, String> {
    match value {
        Value::Float(f) => Ok(*f),
        Value::Integer(i) => Ok(*i as f64),
        other => Err(format!("expected a number, found {}", other.type_str())),
    }
}

fn parse_uint<T: TryFrom<i64>>(value: &Value) -> Result<T, String> {
    match value {
        Value::Integer(i) => T::try_from(*i).map_err(|_| format!("{i} is out of range")),
        other => Err(format!(
            "expected a whole number, found {}",
            other.type_str()
        )),
    }
}

fn parse_strings(value: &Value) -> Result<Vec<String>, String> {
    let strings = parse_string_list(value)?;
    if strings.iter().any(|s| s.trim().is_empty()) {
        return Err("an empty name names no file".into());
    }
    Ok(strings)
}

fn parse_string_list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("expected strings, found {}", other.type_str())),
            })
            .collect(),
        Value::Array(_) => Err("an empty list leaves nothing to render".into()),
        other => Err(format!(
            "expected a string or a list of strings, found {}",
            other.type_str()
        )),
    }
}

/// A set of layers: `"a,b"` or `["a", "b"]`.
fn parse_layer_set(value: &Value) -> Result<Vec<String>, String> {
    let names: Vec<String> = match value {
        Value::String(s) => s.split(',').map(|l| l.trim().to_owned()).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.trim().to_owned()),
                other => Err(format!("expected layer names, found {}", other.type_str())),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("expected layer names, found {}", other.type_str())),
    };
    if names.iter().any(String::is_empty) {
        return Err("empty layer name".into());
    }
    if let Some(twice) = names
        .iter()
        .enumerate()
        .find_map(|(i, n)| names[..i].contains(n).then_some(n))
    {
        return Err(format!("layer '{twice}' is listed twice in one set"));
    }
    Ok(names)
}

fn parse_style_layer_set(value: &Value) -> Result<Vec<StyleLayer>, String> {
    parse_layer_set(value)?
        .iter()
        .map(|l| l.parse::<StyleLayer>().map_err(|e| e.to_string()))
        .collect()
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
    let contents = parse_strings(raw.content.get_ref())
        .map(distinct)
        .map_err(|m| ctx.error("content", Some(raw.content.span()), m))?;
    let styles = parse_strings(raw.style.get_ref())
        .map(distinct)
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

    let axes = &raw.grid;
    let backbones = ctx.axis("grid.backbone", &axes.backbone, parse_str::<Backbone>)?;
    let content_layers = ctx.axis("grid.content_layers", &axes.content_layers, parse_layer_set)?;
    let style_layers = match (&axes.style_layers, &axes.style_depth) {
        (Some(_), Some(depth)) => {
            return Err(ctx.error(
                "grid.style_depth",
                Some(depth.span()),
                "give style_layers or style_depth, not both",
            ))
        }
        (_, Some(_)) => ctx.axis(
            "grid.style_depth",
            &axes.style_depth,
            |v| match parse_uint::<usize>(v)? {
                0 => Err("a depth counts layers: at least 1".into()),
                depth => Ok(StyleChoice::Depth(depth)),
            },
        )?,
        _ => ctx.axis("grid.style_layers", &axes.style_layers, |v| {
            parse_style_layer_set(v).map(StyleChoice::Layers)
        })?,
    };
    let preview_every = match &raw.preview_every {
        None => 0,
        Some(value) => parse_uint::<u32>(value.get_ref())
            .map_err(|m| ctx.error("preview_every", Some(value.span()), m))?,
    };
    let content_weights = ctx.axis("grid.content_weight", &axes.content_weight, parse_f64)?;
    let style_weights = ctx.axis("grid.style_weight", &axes.style_weight, parse_f64)?;
    let tv_weights = ctx.axis("grid.tv_weight", &axes.tv_weight, parse_f64)?;
    let inits = ctx.axis("grid.init", &axes.init, parse_str::<Init>)?;
    let optimizers = ctx.axis(
        "grid.optimizer",
        &axes.optimizer,
        parse_str::<OptimizerKind>,
    )?;
    let lrs = ctx.axis("grid.lr", &axes.lr, parse_f64)?;
    let line_searches = ctx.axis(
        "grid.line_search",
        &axes.line_search,
        parse_str::<LineSearch>,
    )?;
    let history_sizes = ctx.axis("grid.history_size", &axes.history_size, parse_uint::<usize>)?;
    let iterations = ctx.axis("grid.iterations", &axes.iterations, parse_uint::<u32>)?;
    let sizes = ctx.axis("grid.size", &axes.size, parse_uint::<u32>)?;
    let style_scales = ctx.axis("grid.style_scale", &axes.style_scale, parse_f64)?;
    let seeds = ctx.axis("grid.seed", &axes.seed, parse_uint::<u64>)?;
    let log_everys = ctx.axis("grid.log_every", &axes.log_every, parse_uint::<u32>)?;

    // Each axis as (its length, its key); index vectors walk the product.
    let lens = [
        backbones.as_ref().map_or(1, Vec::len),
        content_layers.as_ref().map_or(1, Vec::len),
        style_layers.as_ref().map_or(1, Vec::len),
        content_weights.as_ref().map_or(1, Vec::len),
        style_weights.as_ref().map_or(1, Vec::len),
        tv_weights.as_ref().map_or(1, Vec::len),
        inits.as_ref().map_or(1, Vec::len),
        optimizers.as_ref().map_or(1, Vec::len),
        lrs.as_ref().map_or(1, Vec::len),
        line_searches.as_ref().map_or(1, Vec::len),
        history_sizes.as_ref().map_or(1, Vec::len),
        iterations.as_ref().map_or(1, Vec::len),
        sizes.as_ref().map_or(1, Vec::len),
        style_scales.as_ref().map_or(1, Vec::len),
        seeds.as_ref().map_or(1, Vec::len),
        log_everys.as_ref().map_or(1, Vec::len),
    ];
    let points = lens
        .iter()
        .chain([&contents.len(), &styles.len()])
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
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
    let mut index = [0usize; 16];
    loop {
        let backbone = pick(&backbones, index[0]).unwrap_or(Backbone::Vgg19);
        let mut params = RenderParams::new(backbone);
        if let Some(layers) = pick(&content_layers, index[1]) {
            params.content_layers = layers;
        }
        let mut in_backbone = true;
        match pick(&style_layers, index[2]) {
            Some(StyleChoice::Layers(layers)) => params.style_layers = layers,
            Some(StyleChoice::Depth(depth)) => match backbone.first_conv_layers(depth) {
                Some(layers) => {
                    params.style_layers = layers
                        .into_iter()
                        .map(|name| StyleLayer {
                            name: name.to_owned(),
                            weight: 1.0,
                        })
                        .collect()
                }
                None => in_backbone = false,
            },
            None => {}
        }
        params.content_weight = pick(&content_weights, index[3]).unwrap_or(params.content_weight);
        params.style_weight = pick(&style_weights, index[4]).unwrap_or(params.style_weight);
        params.tv_weight = pick(&tv_weights, index[5]).unwrap_or(params.tv_weight);
        params.init = pick(&inits, index[6]).unwrap_or(params.init);
        let optimizer = pick(&optimizers, index[7]).unwrap_or(params.optimizer.kind);
        params.optimizer.kind = optimizer;
        params.optimizer.lr = pick(&lrs, index[8]).unwrap_or(optimizer.default_lr());
        params.optimizer.line_search =
            pick(&line_searches, index[9]).unwrap_or(params.optimizer.line_search);
        params.optimizer.history_size =
            pick(&history_sizes, index[10]).unwrap_or(params.optimizer.history_size);
        params.iterations = pick(&iterations, index[11]).unwrap_or(params.iterations);
        params.size = pick(&sizes, index[12]).unwrap_or(params.size);
        params.style_scale = pick(&style_scales, index[13]).unwrap_or(params.style_scale);
        params.seed = pick(&seeds, index[14]).unwrap_or(params.seed);
        params.log_every = pick(&log_everys, index[15]).unwrap_or(params.log_every);
        params.validate().map_err(|e| {
            let key = key_of(&e, &params);
            let span = axes.span_of(key.trim_start_matches("grid."));
            ctx.error(&key, span, format!("{e} (for {backbone})"))
        })?;
        if in_backbone {
            params_points.push(params.normalised());
        } else {
            skipped += 1;
        }

        // Odometer: the last axis turns fastest.
        let mut axis = lens.len();
        loop {
            if axis == 0 {
                break;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < lens[axis] {
                break;
            }
            index[axis] = 0;
        }
        if index.iter().all(|&i| i == 0) {
            break;
        }
    }

    let skipped = skipped * contents.len() * styles.len();
    if params_points.is_empty() {
        return Err(ctx.error(
            "grid.style_depth",
            axes.span_of("style_depth"),
            "no backbone of the grid has that many convolutional stages \
             (vgg16 has 13, vgg19 16, googlenet 12)",
        ));
    }
    // Every axis holds distinct values (see `axis`), so every combination is a
    // distinct render: no need to compare the (possibly 100,000) tasks.
    let mut tasks = Vec::with_capacity(points);
    for content in &contents {
        for style in &styles {
            for params in &params_points {
                tasks.push(GridTask {
                    content: content.clone(),
                    style: style.clone(),
                    params: params.clone(),
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
        skipped,
        preview_every,
    })
}

/// The `i`th value of an axis the grid sets.
fn pick<T: Clone>(axis: &Option<Vec<T>>, i: usize) -> Option<T> {
    axis.as_ref().map(|values| values[i].clone())
}

/// The grid key a parameter error is about, where it names one.
fn key_of(error: &ParamError, params: &RenderParams) -> String {
    match error {
        ParamError::Layer(crate::LayerError::UnknownLayer { layer, .. })
            if params.content_layers.contains(layer) =>
        {
            "grid.content_layers".into()
        }
        ParamError::Layer(_) | ParamError::BadLayerWeight(_) => "grid.style_layers".into(),
        ParamError::NoLayers(which) => format!("grid.{which}_layers"),
        ParamError::OutOfRange { name, .. } => match *name {
            "learning rate" => "grid.lr".into(),
            "style layer weight" => "grid.style_layers".into(),
            name => format!("grid.{}", name.replace(' ', "_")),
        },
        ParamError::UnknownOptimizer(_) => "grid.optimizer".into(),
        ParamError::UnknownLineSearch(_) => "grid.line_search".into(),
    }
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
    let mut hasher = Sha256::new();
    hasher.update(b"pastiche-task-v1\n");
    hasher.update(serde_json::to_vec(params).expect("params serialise"));
    for (role, digest) in input_digests {
        hasher.update(format!("\n{role}={digest}").as_bytes());
    }
    let digest = hasher.finalize();
    // 128 bits: no collision in any number of grids a farm will see.
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes`, in lowercase hex: how inputs are named in the object store.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
