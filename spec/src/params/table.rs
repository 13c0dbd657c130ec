//! The render parameters, each declared once: its name and aliases, how it is
//! written (in a grid file, as a flag), its bounds, how it is shown, and when the
//! render reads it. Grid expansion, `pastiche render`'s flags, the report's axes
//! and `pastiche plan` all come from [`PARAMS`]; the defaults are
//! [`RenderParams::new`]'s.
//!
//! Adding a parameter: docs/adding-a-parameter.md.

use std::fmt;
use std::str::FromStr;

use super::{
    Init, LineSearch, OptimizerKind, Precision, RenderParams, StyleLayer, StyleWeight,
    MAX_HISTORY_SIZE, MAX_ITERATIONS, MAX_SIZE,
};
use crate::Backbone;

/// A parameter's value, as a grid file or a flag gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A weight, a learning rate, a scale.
    Number(f64),
    /// A count or a size.
    Whole(u64),
    /// A name: a backbone, an optimizer, a start.
    Word(String),
    /// A set of layers, each `name` or `name:weight`.
    Layers(Vec<String>),
    /// Whole numbers in order: sizes, iteration counts (`128,256`).
    Wholes(Vec<u64>),
}

impl fmt::Display for Value {
    /// As a person writes it in a grid: `1e4`, `300`, `vgg19`, `relu1_1,relu2_1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(v) => f.write_str(&format_number(*v)),
            Value::Whole(v) => write!(f, "{v}"),
            Value::Word(w) => f.write_str(w),
            Value::Layers(layers) => f.write_str(&layers.join(",")),
            Value::Wholes(values) => {
                let values: Vec<String> = values.iter().map(u64::to_string).collect();
                f.write_str(&values.join(","))
            }
        }
    }
}

/// How a grid file may write a parameter's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    /// A number, or a word the parameter knows (`style_weight = "auto"`).
    NumberOrWord,
    Whole,
    Word,
    /// On or off: `true` or `false` in a grid file; a flag without a value is on.
    Switch,
    /// Layer names, as `"a,b"` or `["a", "b"]`; style layers also take a number
    /// of convolutional stages.
    Layers,
    /// Whole numbers in order, as `"128,256"` or `[128, 256]` (one value: a grid
    /// varies it with a list of those, `[[128], [128, 256]]`).
    Wholes,
}

impl Kind {
    /// What a value of this kind is, for "expected ..." messages.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Number => "a number",
            Kind::NumberOrWord => "a number or a word",
            Kind::Switch => "true or false",
            Kind::Whole => "a whole number",
            Kind::Word => "a string",
            Kind::Layers => "layer names",
            Kind::Wholes => "whole numbers",
        }
    }
}

/// A value as a report and `pastiche plan` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// What tells values apart.
    pub id: String,
    /// As shown: `1e4`, `first 5`.
    pub label: String,
    /// Where it sorts (`None`: in order of appearance).
    pub rank: Option<f64>,
}

/// One render parameter. See the module's documentation.
pub struct Param {
    /// The grid key; with dashes, the flag (`style_weight`, `--style-weight`).
    pub name: &'static str,
    /// Other names grids, flags and report filters accept.
    pub aliases: &'static [&'static str],
    /// One line for `--help`.
    pub help: &'static str,
    pub kind: Kind,
    parse: fn(&str) -> Result<Value, String>,
    get: fn(&RenderParams) -> Value,
    /// `Err`: the value does not exist for this point (a style depth deeper
    /// than the backbone), which a grid leaves out.
    set: fn(&mut RenderParams, &Value) -> Result<(), String>,
    /// The bounds, as a message naming the parameter.
    check: fn(&RenderParams) -> Result<(), String>,
    /// Whether the render reads the parameter, given the others: where it does
    /// not, grid points that differ only here are one render.
    applies: fn(&RenderParams) -> bool,
    /// For a default that depends on another parameter than the backbone (the
    /// learning rate, on the optimizer); the others are [`RenderParams::new`]'s.
    derived_default: Option<fn(&RenderParams) -> Value>,
    /// For `--help`, where `derived_default` is set.
    default_help: Option<fn() -> String>,
    /// Where the value is not shown as it is written.
    show: Option<fn(&RenderParams) -> Shown>,
    /// Whether a value names an input file (a starting image), which `submit`
    /// uploads.
    names_file: fn(&str) -> bool,
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Param {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Param {}

impl Param {
    /// A parameter with no bounds, read by every render, shown as written.
    const fn new(
        name: &'static str,
        kind: Kind,
        help: &'static str,
        parse: fn(&str) -> Result<Value, String>,
        get: fn(&RenderParams) -> Value,
        set: fn(&mut RenderParams, &Value) -> Result<(), String>,
    ) -> Param {
        Param {
            name,
            aliases: &[],
            help,
            kind,
            parse,
            get,
            set,
            check: |_| Ok(()),
            applies: |_| true,
            derived_default: None,
            default_help: None,
            show: None,
            names_file: |_| false,
        }
    }

    const fn also_called(mut self, aliases: &'static [&'static str]) -> Param {
        self.aliases = aliases;
        self
    }

    const fn bounded_by(mut self, check: fn(&RenderParams) -> Result<(), String>) -> Param {
        self.check = check;
        self
    }

    const fn read_when(mut self, applies: fn(&RenderParams) -> bool) -> Param {
        self.applies = applies;
        self
    }

    const fn default_from(
        mut self,
        default: fn(&RenderParams) -> Value,
        help: fn() -> String,
    ) -> Param {
        self.derived_default = Some(default);
        self.default_help = Some(help);
        self
    }

    const fn shown_as(mut self, show: fn(&RenderParams) -> Shown) -> Param {
        self.show = Some(show);
        self
    }

    const fn names_files(mut self, names_file: fn(&str) -> bool) -> Param {
        self.names_file = names_file;
        self
    }

    /// The parameter called `name` (or an alias of it), dashes and case aside.
    pub fn find(name: &str) -> Option<&'static Param> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        PARAMS
            .iter()
            .find(|p| p.name == name || p.aliases.contains(&name.as_str()))
    }

    /// Reads a value as a flag or a grid file writes it.
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        (self.parse)(text.trim())
    }

    /// Reads one value of a grid file; lists of alternatives are the caller's.
    pub fn parse_toml(&self, value: &toml::Value) -> Result<Value, String> {
        let text = match (self.kind, value) {
            (Kind::Number | Kind::NumberOrWord, toml::Value::Float(v)) => v.to_string(),
            (
                Kind::Number | Kind::NumberOrWord | Kind::Whole | Kind::Layers,
                toml::Value::Integer(v),
            ) => v.to_string(),
            (Kind::Word | Kind::NumberOrWord | Kind::Layers, toml::Value::String(s)) => s.clone(),
            (Kind::Switch, toml::Value::Boolean(on)) => on.to_string(),
            (Kind::Wholes, toml::Value::Integer(v)) => v.to_string(),
            (Kind::Wholes, toml::Value::String(s)) => s.clone(),
            (Kind::Wholes, toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(v) => Ok(v.to_string()),
                    other => Err(format!(
                        "expected whole numbers, found {}",
                        other.type_str()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            (Kind::Layers, toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!("expected layer names, found {}", other.type_str())),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            (kind, other) => {
                return Err(format!(
                    "expected {}, found {}",
                    kind.expected(),
                    other.type_str()
                ))
            }
        };
        self.parse(&text)
    }

    pub fn get(&self, params: &RenderParams) -> Value {
        (self.get)(params)
    }

    /// Sets the parameter; `Err` says why the value does not exist for this
    /// render (a style depth deeper than its backbone).
    pub fn set(&self, params: &mut RenderParams, value: &Value) -> Result<(), String> {
        (self.set)(params, value)
    }

    pub fn check(&self, params: &RenderParams) -> Result<(), String> {
        (self.check)(params)
    }

    pub fn applies_to(&self, params: &RenderParams) -> bool {
        (self.applies)(params)
    }

    /// The value the parameter takes in `params` when nothing sets it.
    pub fn default_in(&self, params: &RenderParams) -> Value {
        match self.derived_default {
            Some(default) => default(params),
            None => self.get(&RenderParams::new(params.backbone)),
        }
    }

    /// Where another parameter decides the default: that default, for `params`.
    pub fn derived_default_in(&self, params: &RenderParams) -> Option<Value> {
        self.derived_default.map(|default| default(params))
    }

    /// The default as `--help` says it: one value, or one per backbone.
    pub fn default_text(&self) -> String {
        if let Some(help) = self.default_help {
            return help();
        }
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for backbone in Backbone::ALL {
            let value = self.get(&RenderParams::new(backbone)).to_string();
            match groups.iter_mut().find(|(v, _)| *v == value) {
                Some((_, backbones)) => backbones.push(backbone.name()),
                None => groups.push((value, vec![backbone.name()])),
            }
        }
        if self.name == "backbone" || groups.len() == 1 {
            let text = self
                .get(&RenderParams::new(Backbone::default()))
                .to_string();
            // An empty list (no `scales`).
            return if text.is_empty() { "none".into() } else { text };
        }
        groups
            .iter()
            .map(|(value, backbones)| format!("{value} for {}", backbones.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn shown(&self, params: &RenderParams) -> Shown {
        if let Some(show) = self.show {
            return show(params);
        }
        let value = self.get(params);
        let rank = match value {
            Value::Number(v) => Some(v),
            Value::Whole(v) => Some(v as f64),
            Value::Word(_) | Value::Layers(_) | Value::Wholes(_) => None,
        };
        let id = match &value {
            // Exactly, where the label rounds.
            Value::Number(v) => v.to_string(),
            other => other.to_string(),
        };
        Shown {
            id,
            label: value.to_string(),
            rank,
        }
    }

    /// Whether `value` (a grid's text) names an input file.
    pub fn names_file(&self, value: &str) -> bool {
        (self.names_file)(value)
    }

    /// Whether values compare as numbers (in report filters).
    pub fn is_numeric(&self) -> bool {
        matches!(self.kind, Kind::Number | Kind::NumberOrWord | Kind::Whole)
    }

    /// Whether the parameter is on or off (a flag without a value turns it on).
    pub fn is_switch(&self) -> bool {
        self.kind == Kind::Switch
    }
}

// ---------------------------------------------------------------------------
// The table. Order matters: a parameter is set after those its default depends
// on (the backbone first, the optimizer before the learning rate), and reports
// list parameters in this order.

pub static PARAMS: &[Param] = &[
    Param::new(
        "backbone",
        Kind::Word,
        "vgg16, vgg19, googlenet or inception_v3",
        word::<Backbone>,
        |p| Value::Word(p.backbone.to_string()),
        |p, v| {
            p.backbone = parsed(v);
            Ok(())
        },
    )
    // Backbones sort in their usual order, not alphabetically.
    .shown_as(|p| Shown {
        id: p.backbone.to_string(),
        label: p.backbone.to_string(),
        rank: Backbone::ALL
            .iter()
            .position(|b| *b == p.backbone)
            .map(|i| i as f64),
    }),
    Param::new(
        "content_layers",
        Kind::Layers,
        "Comma-separated content layers",
        layer_names,
        |p| Value::Layers(p.content_layers.clone()),
        |p, v| {
            p.content_layers = layers(v).to_vec();
            Ok(())
        },
    )
    .bounded_by(|p| {
        if p.content_layers.is_empty() {
            return Err("no content layers given".into());
        }
        for layer in &p.content_layers {
            p.backbone.layer_index(layer).map_err(|e| e.to_string())?;
        }
        Ok(())
    }),
    Param::new(
        "style_layers",
        Kind::Layers,
        "Comma-separated style layers, each NAME or NAME:WEIGHT; or N, the first N \
         convolutional stages (vgg16 has 13, vgg19 16, googlenet 12, inception_v3 16)",
        style_layer_names,
        |p| Value::Layers(p.style_layers.iter().map(StyleLayer::to_string).collect()),
        |p, v| {
            p.style_layers = match v {
                Value::Whole(depth) => p
                    .backbone
                    .first_conv_layers(*depth as usize)
                    .ok_or_else(|| {
                        format!(
                            "{} has {} convolutional stages, not {depth}",
                            p.backbone,
                            p.backbone.conv_layers().len()
                        )
                    })?
                    .into_iter()
                    .map(|name| StyleLayer {
                        name: name.to_owned(),
                        weight: 1.0,
                    })
                    .collect(),
                layers_value => layers(layers_value)
                    .iter()
                    .map(|l| l.parse().expect("parsed before"))
                    .collect(),
            };
            Ok(())
        },
    )
    .also_called(&["style_depth"])
    .bounded_by(|p| {
        if p.style_layers.is_empty() {
            return Err("no style layers given".into());
        }
        for layer in &p.style_layers {
            p.backbone
                .layer_index(&layer.name)
                .map_err(|e| e.to_string())?;
            non_negative("style layer weight", layer.weight)?;
        }
        Ok(())
    })
    // Layers chosen by depth read as such, and compare equal across backbones.
    .shown_as(|p| {
        let names: Vec<&str> = p.style_layers.iter().map(|l| l.name.as_str()).collect();
        let by_depth = p.style_layers.iter().all(|l| l.weight == 1.0)
            && p.backbone.first_conv_layers(names.len()).as_deref() == Some(names.as_slice());
        if by_depth {
            let label = format!("first {}", names.len());
            Shown {
                id: label.clone(),
                label,
                rank: Some(names.len() as f64),
            }
        } else {
            let label = p
                .style_layers
                .iter()
                .map(StyleLayer::to_string)
                .collect::<Vec<_>>()
                .join(",");
            Shown {
                id: label.clone(),
                label,
                rank: None,
            }
        }
    }),
    Param::new(
        "content_weight",
        Kind::Number,
        "alpha: weight of the content loss",
        number,
        |p| Value::Number(p.content_weight),
        |p, v| {
            p.content_weight = num(v);
            Ok(())
        },
    )
    .bounded_by(|p| non_negative("content_weight", p.content_weight)),
    Param::new(
        "style_weight",
        Kind::NumberOrWord,
        "beta: weight of the style loss; or auto (auto:R for R times more style): \
         R alpha L_c(style image) / L_s(content image), see docs/balance.md",
        style_weight,
        |p| match p.style_weight {
            StyleWeight::Fixed(beta) => Value::Number(beta),
            auto => Value::Word(auto.to_string()),
        },
        |p, v| {
            p.style_weight = match v {
                Value::Number(beta) => StyleWeight::Fixed(*beta),
                auto => parsed(auto),
            };
            Ok(())
        },
    )
    .bounded_by(|p| match p.style_weight {
        StyleWeight::Fixed(beta) => non_negative("style_weight", beta),
        StyleWeight::Auto { ratio } => {
            if !(ratio.is_finite() && ratio > 0.0) {
                return Err(format!(
                    "style_weight auto:RATIO needs a positive ratio, got {ratio}"
                ));
            }
            if p.content_weight <= 0.0 {
                return Err(
                    "style_weight auto balances style against content: content_weight \
                     must be > 0"
                        .into(),
                );
            }
            Ok(())
        }
    }),
    Param::new(
        "tv_weight",
        Kind::Number,
        "gamma: weight of the total-variation loss (smoothness)",
        number,
        |p| Value::Number(p.tv_weight),
        |p, v| {
            p.tv_weight = num(v);
            Ok(())
        },
    )
    .bounded_by(|p| non_negative("tv_weight", p.tv_weight)),
    Param::new(
        "init",
        Kind::Word,
        "Start from `content`, seeded white `noise`, or the path of an image",
        word::<Init>,
        |p| Value::Word(p.init.to_string()),
        |p, v| {
            p.init = parsed(v);
            Ok(())
        },
    )
    .names_files(|text| matches!(text.parse(), Ok(Init::Image(_)))),
    Param::new(
        "optimizer",
        Kind::Word,
        "lbfgs or adam",
        word::<OptimizerKind>,
        |p| Value::Word(p.optimizer.kind.to_string()),
        |p, v| {
            p.optimizer.kind = parsed(v);
            Ok(())
        },
    ),
    Param::new(
        "lr",
        Kind::Number,
        "Learning rate",
        number,
        |p| Value::Number(p.optimizer.lr),
        |p, v| {
            p.optimizer.lr = num(v);
            Ok(())
        },
    )
    .also_called(&["learning_rate"])
    .default_from(
        |p| Value::Number(p.optimizer.kind.default_lr()),
        || {
            OptimizerKind::ALL
                .map(|k| format!("{} for {k}", format_number(k.default_lr())))
                .join(", ")
        },
    )
    .bounded_by(|p| {
        let lr = p.optimizer.lr;
        if lr.is_finite() && lr > 0.0 {
            Ok(())
        } else {
            Err(format!("lr must be a positive number, got {lr}"))
        }
    }),
    Param::new(
        "line_search",
        Kind::Word,
        "L-BFGS line search: strong_wolfe, or none (a fixed step, as the PyTorch \
         tutorial; cheaper per iteration but stalls on random-weight backbones)",
        word::<LineSearch>,
        |p| Value::Word(p.optimizer.line_search.to_string()),
        |p, v| {
            p.optimizer.line_search = parsed(v);
            Ok(())
        },
    )
    .read_when(uses_lbfgs),
    Param::new(
        "history_size",
        Kind::Whole,
        "L-BFGS history size",
        whole::<u32>,
        |p| Value::Whole(p.optimizer.history_size as u64),
        |p, v| {
            p.optimizer.history_size = count(v) as usize;
            Ok(())
        },
    )
    .read_when(uses_lbfgs)
    .bounded_by(|p| {
        between(
            "history_size",
            p.optimizer.history_size as u64,
            MAX_HISTORY_SIZE as u64,
        )
    }),
    Param::new(
        "iterations",
        Kind::Whole,
        "Optimiser iterations (one L-BFGS iteration or one Adam step each)",
        whole::<u32>,
        |p| Value::Whole(p.iterations.into()),
        |p, v| {
            p.iterations = count(v) as u32;
            Ok(())
        },
    )
    .bounded_by(|p| between("iterations", p.iterations.into(), MAX_ITERATIONS.into())),
    Param::new(
        "stop_tolerance",
        Kind::Number,
        "Stop early when the total loss fell by less than this fraction of itself over \
         the last stop_window iterations (0: off, run every iteration)",
        number,
        |p| Value::Number(p.stop_tolerance),
        |p, v| {
            p.stop_tolerance = num(v);
            Ok(())
        },
    )
    .bounded_by(|p| non_negative("stop_tolerance", p.stop_tolerance)),
    Param::new(
        "stop_window",
        Kind::Whole,
        "The window of stop_tolerance, in iterations",
        whole::<u32>,
        |p| Value::Whole(p.stop_window.into()),
        |p, v| {
            p.stop_window = count(v) as u32;
            Ok(())
        },
    )
    .read_when(|p| p.stop_tolerance > 0.0)
    .bounded_by(|p| between("stop_window", p.stop_window.into(), MAX_ITERATIONS.into())),
    Param::new(
        "size",
        Kind::Whole,
        "Longer side of the pastiche in pixels",
        whole::<u32>,
        |p| Value::Whole(p.size.into()),
        |p, v| {
            p.size = count(v) as u32;
            Ok(())
        },
    )
    .bounded_by(|p| {
        let min = p.backbone.min_size();
        if (min..=MAX_SIZE).contains(&p.size) {
            Ok(())
        } else {
            Err(format!(
                "size must be between {min} and {MAX_SIZE} pixels for {}, got {}",
                p.backbone, p.size
            ))
        }
    }),
    Param::new(
        "scales",
        Kind::Wholes,
        "Multi-scale: the sizes rendered before --size, coarse to fine, each from the \
         previous result resized up (e.g. 256,512 with --size 1024)",
        wholes,
        |p| Value::Wholes(p.scales.iter().map(|&s| s.into()).collect()),
        |p, v| {
            let mut scales: Vec<u32> = list(v).iter().map(|&s| s as u32).collect();
            // The output size may close the list, as people write it: it is `size`.
            if scales.last() == Some(&p.size) {
                scales.pop();
            }
            p.scales = scales;
            Ok(())
        },
    )
    .bounded_by(|p| {
        let min = p.backbone.min_size();
        let increasing = p.scales.windows(2).all(|w| w[0] < w[1]);
        let in_range = p.scales.iter().all(|&s| s >= min && s < p.size);
        if increasing && in_range {
            Ok(())
        } else {
            Err(format!(
                "scales must increase, each at least {min} px and below size ({}, the \
                 last scale), got {}",
                p.size,
                Value::Wholes(p.scales.iter().map(|&s| s.into()).collect())
            ))
        }
    }),
    Param::new(
        "scale_iterations",
        Kind::Wholes,
        "Iterations at each of --scales: one count for all, or one each (none: \
         --iterations at each)",
        wholes,
        |p| Value::Wholes(p.scale_iterations.iter().map(|&n| n.into()).collect()),
        |p, v| {
            let counts: Vec<u32> = list(v).iter().map(|&n| n as u32).collect();
            // As many iterations as at the output size is the default: one
            // render. (A list of the wrong length is kept, for the check to refuse.)
            let fits = counts.len() == 1 || counts.len() == p.scales.len();
            p.scale_iterations = if fits && counts.iter().all(|&n| n == p.iterations) {
                Vec::new()
            } else {
                counts
            };
            Ok(())
        },
    )
    .read_when(|p| !p.scales.is_empty())
    .bounded_by(|p| {
        let counts = &p.scale_iterations;
        if ![0, 1, p.scales.len()].contains(&counts.len()) {
            return Err(format!(
                "scale_iterations takes one count for all scales or one for each of the {}, got {}",
                p.scales.len(),
                counts.len()
            ));
        }
        match counts.iter().find(|&&n| n == 0 || n > MAX_ITERATIONS) {
            Some(n) => Err(format!(
                "scale_iterations must be between 1 and {MAX_ITERATIONS}, got {n}"
            )),
            None => Ok(()),
        }
    }),
    Param::new(
        "style_scale",
        Kind::Number,
        "The style image's longer side, relative to the pastiche's",
        number,
        |p| Value::Number(p.style_scale),
        |p, v| {
            p.style_scale = num(v);
            Ok(())
        },
    )
    .bounded_by(|p| {
        let scale = p.style_scale;
        if !(scale.is_finite() && scale > 0.0 && scale <= 8.0) {
            return Err(format!("style_scale must be in (0, 8], got {scale}"));
        }
        // The style image is resized to size x style scale: the same bound holds.
        let style_side = f64::from(p.size) * scale;
        if style_side > f64::from(MAX_SIZE) {
            return Err(format!(
                "style_scale must be at most {MAX_SIZE} / size (the style image's side, \
                 {style_side} px, is too large), got {scale}"
            ));
        }
        Ok(())
    }),
    Param::new(
        "original_colors",
        Kind::Switch,
        "Keep the content's colours: the pastiche's luminance, the content's chroma",
        switch,
        |p| Value::Word(p.original_colors.to_string()),
        |p, v| {
            p.original_colors = parsed(v);
            Ok(())
        },
    )
    .also_called(&["original_colours"]),
    Param::new(
        "seed",
        Kind::Whole,
        "Seed of the white-noise start",
        whole::<u64>,
        |p| Value::Whole(p.seed),
        |p, v| {
            p.seed = count(v);
            Ok(())
        },
    )
    .read_when(|p| p.init == Init::Noise),
    Param::new(
        "log_every",
        Kind::Whole,
        "Log the losses every this many iterations (and at the last)",
        whole::<u32>,
        |p| Value::Whole(p.log_every.into()),
        |p, v| {
            p.log_every = count(v) as u32;
            Ok(())
        },
    )
    .bounded_by(|p| at_least_one("log_every", p.log_every.into())),
    Param::new(
        "precision",
        Kind::Word,
        "fp32, or bf16: the backbone's convolutions in bfloat16 (losses, Gram matrices \
         and the optimiser stay fp32)",
        word::<Precision>,
        |p| Value::Word(p.precision.to_string()),
        |p, v| {
            p.precision = parsed(v);
            Ok(())
        },
    ),
];

// ---------------------------------------------------------------------------
// Parsers: each turns the text of a flag or a grid value into a canonical value,
// so that `VGG19` and `vgg19` are one point of a grid.

fn number(text: &str) -> Result<Value, String> {
    text.parse()
        .map(Value::Number)
        .map_err(|_| format!("'{text}' is not a number"))
}

/// `"128,256"`: whole numbers in order; `""` or `none`: none.
fn wholes(text: &str) -> Result<Value, String> {
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(Value::Wholes(Vec::new()));
    }
    let values = text
        .split(',')
        .map(|v| {
            let v = v.trim();
            v.parse::<u32>()
                .map(u64::from)
                .map_err(|_| format!("'{v}' is not a whole number >= 0"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Value::Wholes(values))
}

/// A style weight: a number, or `auto` / `auto:R`.
fn style_weight(text: &str) -> Result<Value, String> {
    Ok(match text.parse::<StyleWeight>()? {
        StyleWeight::Fixed(beta) => Value::Number(beta),
        auto => Value::Word(auto.to_string()),
    })
}

/// On or off, as people write it: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`.
fn switch(text: &str) -> Result<Value, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(Value::Word("true".into())),
        "false" | "no" | "off" | "0" => Ok(Value::Word("false".into())),
        _ => Err(format!("'{text}' is neither true nor false")),
    }
}

/// A whole number that fits `T`.
fn whole<T: TryFrom<u64>>(text: &str) -> Result<Value, String> {
    let value: u64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number >= 0"))?;
    T::try_from(value)
        .map(|_| Value::Whole(value))
        .map_err(|_| format!("{value} is out of range"))
}

/// A word its type reads, written back as the type writes it.
fn word<T: FromStr + fmt::Display>(text: &str) -> Result<Value, String>
where
    T::Err: fmt::Display,
{
    text.parse::<T>()
        .map(|v| Value::Word(v.to_string()))
        .map_err(|e| e.to_string())
}

/// `"a,b"`: a set of layer names, none empty and none twice.
fn layer_names(text: &str) -> Result<Value, String> {
    let names: Vec<String> = text.split(',').map(|l| l.trim().to_owned()).collect();
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
    Ok(Value::Layers(names))
}

/// Style layers by name (`relu1_1,relu2_1:0.5`), or by depth (`5`).
fn style_layer_names(text: &str) -> Result<Value, String> {
    if let Ok(depth) = text.parse::<u64>() {
        return match depth {
            0 => Err("a depth counts layers: at least 1".into()),
            depth => Ok(Value::Whole(depth)),
        };
    }
    let Value::Layers(names) = layer_names(text)? else {
        unreachable!("layer_names reads layers")
    };
    let layers = names
        .iter()
        .map(|l| l.parse::<StyleLayer>().map(|l| l.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let names: Vec<&str> = layers
        .iter()
        .map(|l| l.split(':').next().unwrap_or(l))
        .collect();
    if let Some(twice) = names
        .iter()
        .enumerate()
        .find_map(|(i, n)| names[..i].contains(n).then_some(n))
    {
        return Err(format!("layer '{twice}' is listed twice in one set"));
    }
    Ok(Value::Layers(layers))
}

// Accessors for values the parameter's own parser made: another variant is a bug.

fn num(value: &Value) -> f64 {
    match value {
        Value::Number(v) => *v,
        other => unreachable!("a number parameter got {other:?}"),
    }
}

fn count(value: &Value) -> u64 {
    match value {
        Value::Whole(v) => *v,
        other => unreachable!("a whole-number parameter got {other:?}"),
    }
}

fn list(value: &Value) -> &[u64] {
    match value {
        Value::Wholes(values) => values,
        other => unreachable!("a whole-numbers parameter got {other:?}"),
    }
}

fn layers(value: &Value) -> &[String] {
    match value {
        Value::Layers(layers) => layers,
        other => unreachable!("a layers parameter got {other:?}"),
    }
}

fn parsed<T: FromStr>(value: &Value) -> T
where
    T::Err: fmt::Debug,
{
    match value {
        Value::Word(word) => word.parse().expect("parsed before"),
        other => unreachable!("a word parameter got {other:?}"),
    }
}

// Bounds and conditions shared by several parameters.

fn uses_lbfgs(p: &RenderParams) -> bool {
    p.optimizer.kind == OptimizerKind::Lbfgs
}

fn non_negative(name: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be a finite number >= 0, got {value}"))
    }
}

fn at_least_one(name: &str, value: u64) -> Result<(), String> {
    between(name, value, u64::MAX)
}

fn between(name: &str, value: u64, max: u64) -> Result<(), String> {
    if (1..=max).contains(&value) {
        Ok(())
    } else if value == 0 {
        Err(format!("{name} must be at least 1, got {value}"))
    } else {
        Err(format!("{name} must be at most {max}, got {value}"))
    }
}

/// Numbers as a person writes them in a grid: `1e4`, `0.5`, `300`.
pub fn format_number(v: f64) -> String {
    if v != 0.0 && v.is_finite() && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_found_by_name_alias_and_flag_spelling() {
        assert_eq!(Param::find("style_weight").unwrap().name, "style_weight");
        assert_eq!(
            Param::find("--style-weight".trim_start_matches('-'))
                .unwrap()
                .name,
            "style_weight"
        );
        assert_eq!(Param::find("Learning-Rate").unwrap().name, "lr");
        assert_eq!(Param::find("style_depth").unwrap().name, "style_layers");
        assert!(
            Param::find("content").is_none(),
            "images are not render parameters"
        );
        let mut names: Vec<&str> = PARAMS
            .iter()
            .flat_map(|p| std::iter::once(p.name).chain(p.aliases.iter().copied()))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a name used twice");
    }

    #[test]
    fn values_read_back_as_they_are_written() {
        let mut varied = RenderParams::new(Backbone::GoogLeNet);
        varied.style_layers[1].weight = 0.25;
        varied.init = Init::Image("inputs/start.png".into());
        varied.optimizer.kind = OptimizerKind::Adam;
        varied.optimizer.lr = 1e-3;
        varied.style_weight = StyleWeight::Fixed(1e5);
        varied.original_colors = true;
        varied.stop_tolerance = 1e-3;
        varied.stop_window = 20;
        varied.scales = vec![128, 256];
        varied.scale_iterations = vec![100, 50];
        varied.precision = Precision::Bf16;
        let mut auto = RenderParams::new(Backbone::Vgg19);
        auto.style_weight = StyleWeight::Auto { ratio: 0.5 };
        for params in [RenderParams::new(Backbone::Vgg16), varied, auto] {
            for param in PARAMS {
                let value = param.get(&params);
                assert_eq!(
                    param.parse(&value.to_string()),
                    Ok(value.clone()),
                    "{param:?}"
                );
                let mut copy = RenderParams::new(params.backbone);
                copy.optimizer.kind = params.optimizer.kind;
                param.set(&mut copy, &value).unwrap();
                assert_eq!(param.get(&copy), value, "{param:?}");
            }
        }
    }

    #[test]
    fn defaults_follow_the_parameters_they_depend_on() {
        let adam = Value::Word("adam".into());
        let googlenet = Value::Word("googlenet".into());
        let params = RenderParams::with_values(|p| match p.name {
            "optimizer" => Some(&adam),
            "backbone" => Some(&googlenet),
            _ => None,
        })
        .unwrap();
        assert_eq!(params.optimizer.lr, OptimizerKind::Adam.default_lr());
        assert_eq!(params.content_layers, ["inception3b"]);
        let lr = Param::find("lr").unwrap();
        assert_eq!(lr.default_text(), "1 for lbfgs, 0.02 for adam");
        let content = Param::find("content_layers").unwrap();
        assert_eq!(
            content.default_text(),
            "relu4_2 for vgg16, vgg19; inception3b for googlenet; Mixed_5c for inception_v3"
        );
        assert_eq!(Param::find("style_weight").unwrap().default_text(), "1e6");
        assert_eq!(Param::find("backbone").unwrap().default_text(), "vgg19");
    }

    #[test]
    fn a_style_depth_beyond_the_backbone_does_not_fit() {
        let depth = Value::Whole(14);
        let vgg16 = Value::Word("vgg16".into());
        let err = RenderParams::with_values(|p| match p.name {
            "style_layers" => Some(&depth),
            "backbone" => Some(&vgg16),
            _ => None,
        })
        .unwrap_err();
        assert!(matches!(
            err,
            crate::ParamError::DoesNotFit {
                param: "style_layers",
                ..
            }
        ));
        assert!(err.to_string().contains("vgg16 has 13"), "{err}");
    }

    #[test]
    fn grid_values_of_the_wrong_type_say_what_was_expected() {
        let size = Param::find("size").unwrap();
        let err = size
            .parse_toml(&toml::Value::String("big".into()))
            .unwrap_err();
        assert_eq!(err, "expected a whole number, found string");
        assert_eq!(
            size.parse_toml(&toml::Value::Integer(64)),
            Ok(Value::Whole(64))
        );
        assert!(size
            .parse_toml(&toml::Value::Integer(-1))
            .unwrap_err()
            .contains("-1"));
        assert!(size
            .parse("5000000000")
            .unwrap_err()
            .contains("out of range"));
        let weight = Param::find("style_weight").unwrap();
        assert_eq!(
            weight.parse_toml(&toml::Value::Integer(10)),
            Ok(Value::Number(10.0))
        );
        let layers = Param::find("style_layers").unwrap();
        let set = toml::Value::Array(vec!["relu1_1".into(), "relu2_1:0.5".into()]);
        assert_eq!(
            layers.parse_toml(&set),
            Ok(Value::Layers(vec!["relu1_1".into(), "relu2_1:0.5".into()]))
        );
        assert_eq!(
            layers.parse_toml(&toml::Value::Integer(5)),
            Ok(Value::Whole(5))
        );
        assert!(layers
            .parse("relu1_1,relu1_1:2")
            .unwrap_err()
            .contains("twice"));
        assert!(layers.parse("0").unwrap_err().contains("at least 1"));
        let backbone = Param::find("backbone").unwrap();
        assert_eq!(backbone.parse("VGG16"), Ok(Value::Word("vgg16".into())));
        assert_eq!(
            weight.parse_toml(&toml::Value::String("Auto:0.5".into())),
            Ok(Value::Word("auto:0.5".into()))
        );
        let colors = Param::find("original_colours").unwrap();
        assert_eq!(
            colors.parse_toml(&toml::Value::Boolean(true)),
            Ok(Value::Word("true".into()))
        );
        assert_eq!(colors.parse("no"), Ok(Value::Word("false".into())));
        assert_eq!(
            colors.parse_toml(&toml::Value::Integer(1)).unwrap_err(),
            "expected true or false, found integer"
        );
    }
}
