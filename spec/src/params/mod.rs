//! The parameters of one render, as a user writes them on the command line or in a
//! grid: their types, their defaults ([`RenderParams::new`]), and the table that
//! says how each is written, bounded and shown ([`table`]).

pub mod table;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::layers::{Backbone, LayerError};
use table::{Param, Value, PARAMS};

/// Images are resized so that their longer side is `size`; below this the deeper
/// layers of every backbone have no pixels left. Some need more
/// ([`Backbone::min_size`]).
pub const MIN_SIZE: u32 = 32;
/// Far beyond any GPU of today for a VGG: refused before anything is allocated.
pub const MAX_SIZE: u32 = 16_384;
/// A ceiling on one render's length, so that a typo (an extra zero or three)
/// cannot hold a device for days; long renders are far below it.
pub const MAX_ITERATIONS: u32 = 100_000;
/// L-BFGS keeps 2 x history_size image-sized vectors: a larger history would
/// only exhaust memory.
pub const MAX_HISTORY_SIZE: usize = 1_000;

/// Where the pastiche starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// A copy of the content image.
    Content,
    /// Uniform white noise in [0, 1], drawn from the render's seed.
    Noise,
    /// A given image, resized to the content image's size.
    Image(PathBuf),
}

impl FromStr for Init {
    type Err = String;

    /// `content`, `noise` (in any case), or the path of an image file; a bare
    /// word is a typo, not a file name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("content") {
            Ok(Init::Content)
        } else if s.eq_ignore_ascii_case("noise") {
            Ok(Init::Noise)
        } else if std::path::Path::new(s).extension().is_some() {
            Ok(Init::Image(PathBuf::from(s)))
        } else {
            Err(format!(
                "'{s}' is neither content, noise nor an image file (such as start.png)"
            ))
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Content => f.write_str("content"),
            Init::Noise => f.write_str("noise"),
            Init::Image(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Lbfgs,
    Adam,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Lbfgs, OptimizerKind::Adam];

    /// torch.optim.LBFGS's default step; for Adam on [0, 1] pixels, a step that moves
    /// a pixel by a few levels of 255 per iteration.
    pub fn default_lr(self) -> f64 {
        match self {
            OptimizerKind::Lbfgs => 1.0,
            OptimizerKind::Adam => 0.02,
        }
    }
}

impl FromStr for OptimizerKind {
    type Err = ParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lbfgs" | "l-bfgs" => Ok(OptimizerKind::Lbfgs),
            "adam" => Ok(OptimizerKind::Adam),
            _ => Err(ParamError::UnknownOptimizer(s.to_owned())),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimizerKind::Lbfgs => "lbfgs",
            OptimizerKind::Adam => "adam",
        })
    }
}

/// The arithmetic of the backbone's convolutions. Gram matrices, losses, the
/// pastiche, its gradient and the optimiser's state are fp32 in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    /// bfloat16 weights and activations in the backbone (its forward and
    /// backward passes); features are cast back to fp32 for the losses.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::Fp32, Precision::Bf16];

    pub fn is_default(&self) -> bool {
        *self == Precision::default()
    }

    /// Bytes of one activation or weight in the backbone.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::Fp32 => 4,
            Precision::Bf16 => 2,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = ParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(ParamError::UnknownPrecision(s.to_owned())),
        }
    }
}

/// L-BFGS's line search, as torch.optim.LBFGS's `line_search_fn`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineSearch {
    /// A fixed step of `lr`: torch's default and the PyTorch style-transfer
    /// tutorial's. Cheaper per iteration, but it stalls when gradients are tiny (as
    /// with random-weight backbones: torch's curvature test `y.s > 1e-10` then never
    /// passes) and the loss can jump.
    None,
    /// Strong Wolfe conditions with cubic interpolation: a few more evaluations per
    /// iteration, and robust to the scale of the problem.
    #[default]
    StrongWolfe,
}

impl fmt::Display for LineSearch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineSearch::None => "none",
            LineSearch::StrongWolfe => "strong_wolfe",
        })
    }
}

impl FromStr for LineSearch {
    type Err = ParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "none" => Ok(LineSearch::None),
            "strong_wolfe" => Ok(LineSearch::StrongWolfe),
            _ => Err(ParamError::UnknownLineSearch(s.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// L-BFGS only: how many curvature pairs are remembered.
    pub history_size: usize,
    /// L-BFGS only.
    pub line_search: LineSearch,
}

impl OptimizerSpec {
    pub fn new(kind: OptimizerKind) -> Self {
        OptimizerSpec {
            kind,
            lr: kind.default_lr(),
            history_size: 100,
            line_search: LineSearch::default(),
        }
    }
}

/// beta, the style loss's weight: a number, or chosen by the render from the
/// content and style it is given (`auto`, or `auto:R` for R times the balance).
///
/// `auto` measures each term in units of the distance between the two images:
/// `beta = R alpha L_c(style) / L_s(content)`, the content loss of the style image
/// (resized to the content's size) over the style loss of the content image. A
/// style of strong contrast has large Gram matrices and gets a small beta, a
/// faint one a large beta, where a fixed beta would overwhelm the first or not
/// show the second. The weight chosen is recorded in `task.json` and weights the
/// logged losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StyleWeight {
    Fixed(f64),
    Auto { ratio: f64 },
}

impl StyleWeight {
    pub fn is_auto(self) -> bool {
        matches!(self, StyleWeight::Auto { .. })
    }
}

impl fmt::Display for StyleWeight {
    /// `1e6`, `auto`, `auto:0.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StyleWeight::Fixed(beta) => f.write_str(&table::format_number(*beta)),
            StyleWeight::Auto { ratio } if *ratio == 1.0 => f.write_str("auto"),
            StyleWeight::Auto { ratio } => write!(f, "auto:{}", table::format_number(*ratio)),
        }
    }
}

impl FromStr for StyleWeight {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let auto = s
            .get(..4)
            .filter(|head| head.eq_ignore_ascii_case("auto"))
            .map(|_| &s[4..]);
        match auto {
            Some("") => Ok(StyleWeight::Auto { ratio: 1.0 }),
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|ratio| ratio.trim().parse().ok())
                .map(|ratio| StyleWeight::Auto { ratio })
                .ok_or_else(|| format!("'{s}' is not auto or auto:RATIO (such as auto:0.5)")),
            None => s
                .parse()
                .map(StyleWeight::Fixed)
                .map_err(|_| format!("'{s}' is neither a number nor auto")),
        }
    }
}

// As a number when fixed, so that the ids of tasks with a fixed beta are those
// they had before `auto` existed; `"auto"` or `"auto:R"` otherwise.
impl Serialize for StyleWeight {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StyleWeight::Fixed(beta) => serializer.serialize_f64(*beta),
            auto => serializer.collect_str(auto),
        }
    }
}

impl<'de> Deserialize<'de> for StyleWeight {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(f64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(beta) => Ok(StyleWeight::Fixed(beta)),
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A style layer and its weight `w_l` in the style loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StyleLayer {
    pub name: String,
    pub weight: f64,
}

impl FromStr for StyleLayer {
    type Err = ParamError;

    /// `relu1_1` (weight 1) or `relu1_1:0.5`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, weight) = match s.split_once(':') {
            None => (s, 1.0),
            Some((name, weight)) => {
                let weight = weight
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| ParamError::BadLayerWeight(s.to_owned()))?;
                (name, weight)
            }
        };
        Ok(StyleLayer {
            name: name.trim().to_owned(),
            weight,
        })
    }
}

impl fmt::Display for StyleLayer {
    /// `relu1_1`, or `relu1_1:0.5` where the weight is not 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weight == 1.0 {
            f.write_str(&self.name)
        } else {
            write!(f, "{}:{}", self.name, table::format_number(self.weight))
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// A value out of its parameter's bounds (the message names it).
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// A value that does not exist for this render: a style depth deeper than
    /// the backbone. A grid leaves such points out.
    #[error("{message}")]
    DoesNotFit {
        param: &'static str,
        message: String,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("unknown optimizer '{0}' (expected lbfgs or adam)")]
    UnknownOptimizer(String),
    #[error("unknown line search '{0}' (expected none or strong_wolfe)")]
    UnknownLineSearch(String),
    #[error("unknown precision '{0}' (expected fp32 or bf16)")]
    UnknownPrecision(String),
    #[error("bad style layer '{0}': expected NAME or NAME:WEIGHT")]
    BadLayerWeight(String),
}

impl ParamError {
    /// The parameter at fault, where there is one.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            ParamError::Invalid { param, .. } | ParamError::DoesNotFit { param, .. } => Some(param),
            _ => None,
        }
    }
}

/// Everything that decides what a render computes, apart from its input images and
/// the backbone's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderParams {
    pub backbone: Backbone,
    pub content_layers: Vec<String>,
    pub style_layers: Vec<StyleLayer>,
    /// alpha: weight of the content loss.
    pub content_weight: f64,
    /// beta: weight of the style loss.
    pub style_weight: StyleWeight,
    /// gamma: weight of the total-variation loss.
    pub tv_weight: f64,
    pub init: Init,
    pub optimizer: OptimizerSpec,
    pub iterations: u32,
    /// Longer side of the content image, in pixels.
    pub size: u32,
    /// The style image's longer side is the content's times this.
    pub style_scale: f64,
    pub seed: u64,
    /// A loss row is logged every this many iterations, and at the last.
    pub log_every: u32,
    /// Keep the content's colours: the pastiche's luminance with the content's
    /// chroma (YUV, as neural-style's `-original_colors`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_colors: bool,
    /// Early stopping: the render stops after iteration k when the total loss
    /// fell by less than this fraction over the last `stop_window` iterations,
    /// (L[k - w] - L[k]) / L[k - w] < stop_tolerance. 0: off, every iteration runs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stop_tolerance: f64,
    /// w, the window of [`stop_tolerance`](Self::stop_tolerance), in iterations.
    /// A window rather than one iteration's decrease, because single iterations
    /// are noisy (Adam oscillates; an L-BFGS iteration may barely move after a
    /// good one) while the trend over tens of iterations is not; the default is
    /// `log_every`'s, so that the rule reads as the decrease between two rows of
    /// a default loss log.
    #[serde(
        default = "default_stop_window",
        skip_serializing_if = "is_default_stop_window"
    )]
    pub stop_window: u32,
    /// The backbone's convolutions in bf16 ([`Precision`]); the losses stay fp32.
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    pub precision: Precision,
    /// Multi-scale, coarse to fine: the sizes rendered before `size`, each
    /// starting from the previous one's result resized up, with a fresh
    /// optimiser. Increasing, each below `size`. Empty: `size` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scales: Vec<u32>,
    /// Iterations at each of `scales`: one count for all, or one each. Empty:
    /// `iterations` at each. `iterations` is always the count at `size`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_iterations: Vec<u32>,
}

/// One scale of a render: its size and its iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub size: u32,
    pub iterations: u32,
}

/// [`RenderParams::stop_window`]'s default.
pub const DEFAULT_STOP_WINDOW: u32 = 50;

fn default_stop_window() -> u32 {
    DEFAULT_STOP_WINDOW
}

fn is_default_stop_window(window: &u32) -> bool {
    *window == DEFAULT_STOP_WINDOW
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

impl RenderParams {
    /// The defaults of `pastiche render` for `backbone`.
    pub fn new(backbone: Backbone) -> Self {
        RenderParams {
            backbone,
            content_layers: backbone
                .default_content_layers()
                .iter()
                .map(|l| l.to_string())
                .collect(),
            style_layers: backbone
                .default_style_layers()
                .iter()
                .map(|l| StyleLayer {
                    name: l.to_string(),
                    weight: 1.0,
                })
                .collect(),
            content_weight: 1.0,
            style_weight: StyleWeight::Fixed(1e6),
            tv_weight: 0.0,
            init: Init::Content,
            optimizer: OptimizerSpec::new(OptimizerKind::Lbfgs),
            iterations: 300,
            size: 512,
            style_scale: 1.0,
            seed: 0,
            log_every: 50,
            original_colors: false,
            stop_tolerance: 0.0,
            stop_window: DEFAULT_STOP_WINDOW,
            scales: Vec::new(),
            scale_iterations: Vec::new(),
            precision: Precision::Fp32,
        }
    }

    /// A render with the values `given` returns (by parameter), every other
    /// parameter at its default, which may depend on those given (a backbone's
    /// layers, an optimizer's learning rate). Not yet checked: see
    /// [`validate`](Self::validate).
    pub fn with_values<'a>(
        given: impl Fn(&Param) -> Option<&'a Value>,
    ) -> Result<RenderParams, ParamError> {
        let backbone = &PARAMS[0];
        debug_assert_eq!(backbone.name, "backbone", "the table starts with it");
        let mut params = RenderParams::new(Backbone::default());
        if let Some(value) = given(backbone) {
            backbone
                .set(&mut params, value)
                .expect("every backbone exists");
            params = RenderParams::new(params.backbone);
        }
        for param in &PARAMS[1..] {
            let value = match given(param) {
                Some(value) => value.clone(),
                None => match param.derived_default_in(&params) {
                    Some(value) => value,
                    None => continue,
                },
            };
            param
                .set(&mut params, &value)
                .map_err(|message| ParamError::DoesNotFit {
                    param: param.name,
                    message,
                })?;
        }
        Ok(params)
    }

    /// These parameters with what the render does not read reset to its default
    /// (Adam has no history or line search; only a noise start uses the seed),
    /// so that grid points that differ only there are one render.
    pub fn normalised(mut self) -> Self {
        for param in PARAMS {
            if !param.applies_to(&self) {
                let default = param.default_in(&self);
                param.set(&mut self, &default).expect("defaults fit");
            }
        }
        self
    }

    /// Checks everything that needs no image and no tensor, in table order; the
    /// error names the parameter.
    pub fn validate(&self) -> Result<(), ParamError> {
        for param in PARAMS {
            param.check(self).map_err(|message| ParamError::Invalid {
                param: param.name,
                message,
            })?;
        }
        Ok(())
    }

    /// Whether the render stops after `iteration` steps, given the total loss
    /// `window_ago` (after `iteration - stop_window` steps) and `now`: early
    /// stopping is on, a whole window has run, and the loss fell by less than
    /// `stop_tolerance` of itself over it (or rose).
    pub fn stops_at(&self, iteration: u32, window_ago: f64, now: f64) -> bool {
        self.stop_tolerance > 0.0
            && iteration >= self.stop_window
            && iteration < self.iterations
            && (window_ago <= 0.0 || (window_ago - now) / window_ago < self.stop_tolerance)
    }

    /// The scales the render runs, coarse to fine: those of `scales`, then
    /// `size` with `iterations`.
    pub fn stages(&self) -> Vec<Stage> {
        let coarse = self.scales.iter().enumerate().map(|(i, &size)| Stage {
            size,
            iterations: match self.scale_iterations.as_slice() {
                [] => self.iterations,
                [all] => *all,
                each => each[i],
            },
        });
        coarse
            .chain(std::iter::once(Stage {
                size: self.size,
                iterations: self.iterations,
            }))
            .collect()
    }

    /// Iterations over all scales.
    pub fn total_iterations(&self) -> u32 {
        self.stages().iter().map(|s| s.iterations).sum()
    }

    /// Whether a loss row is logged after `iteration` steps.
    pub fn logs_at(&self, iteration: u32) -> bool {
        iteration == self.iterations || (iteration > 0 && iteration % self.log_every == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_style_image_is_bounded_like_the_content() {
        let params = |size, style_scale| RenderParams {
            size,
            style_scale,
            ..RenderParams::new(Backbone::Vgg19)
        };
        assert!(params(2048, 8.0).validate().is_ok());
        let err = params(8192, 8.0).validate().unwrap_err().to_string();
        assert!(err.contains("65536 px"), "{err}");
    }

    #[test]
    fn starts_are_words_in_any_case_or_image_files() {
        assert_eq!("Noise".parse(), Ok(Init::Noise));
        assert_eq!("CONTENT".parse(), Ok(Init::Content));
        assert_eq!(
            "dir/start.png".parse(),
            Ok(Init::Image("dir/start.png".into()))
        );
        let typo = "nosie".parse::<Init>().unwrap_err();
        assert!(typo.contains("'nosie' is neither"), "{typo}");
    }

    #[test]
    fn defaults_are_valid_for_every_backbone() {
        for backbone in Backbone::ALL {
            RenderParams::new(backbone).validate().unwrap();
        }
    }

    #[test]
    fn a_size_below_the_backbones_smallest_input_is_refused_naming_both() {
        let at = |backbone, size| {
            RenderParams {
                size,
                ..RenderParams::new(backbone)
            }
            .validate()
        };
        at(Backbone::InceptionV3, 75).unwrap();
        at(Backbone::GoogLeNet, 74).unwrap();
        let err = at(Backbone::InceptionV3, 74).unwrap_err();
        assert_eq!(err.param(), Some("size"));
        let err = err.to_string();
        assert!(err.contains("inception_v3") && err.contains("75"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let base = RenderParams::new(Backbone::Vgg19);
        let cases: Vec<(RenderParams, &str)> = vec![
            (
                RenderParams {
                    size: 100_000,
                    ..base.clone()
                },
                "size",
            ),
            (
                RenderParams {
                    size: 4,
                    ..base.clone()
                },
                "size",
            ),
            (
                RenderParams {
                    iterations: 0,
                    ..base.clone()
                },
                "iterations",
            ),
            (
                RenderParams {
                    style_weight: StyleWeight::Fixed(f64::NAN),
                    ..base.clone()
                },
                "style_weight must be a finite number",
            ),
            (
                RenderParams {
                    style_weight: StyleWeight::Auto { ratio: 0.0 },
                    ..base.clone()
                },
                "positive ratio",
            ),
            (
                RenderParams {
                    style_weight: StyleWeight::Auto { ratio: 1.0 },
                    content_weight: 0.0,
                    ..base.clone()
                },
                "content_weight must be > 0",
            ),
            (
                RenderParams {
                    content_weight: -1.0,
                    ..base.clone()
                },
                "content_weight",
            ),
            (
                RenderParams {
                    style_scale: 0.0,
                    ..base.clone()
                },
                "style_scale",
            ),
            (
                RenderParams {
                    content_layers: vec!["conv9".into()],
                    ..base.clone()
                },
                "conv9",
            ),
            (
                RenderParams {
                    style_layers: vec![],
                    ..base.clone()
                },
                "no style layers",
            ),
        ];
        for (params, needle) in cases {
            let err = params.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "'{err}' should mention '{needle}'");
        }
    }

    #[test]
    fn a_fixed_style_weight_is_written_as_the_number_it_always_was() {
        // The task id hashes this JSON: a fixed beta must not change it.
        assert_eq!(
            serde_json::to_value(StyleWeight::Fixed(1e5)).unwrap(),
            serde_json::json!(1e5)
        );
        assert_eq!(
            serde_json::to_value(StyleWeight::Auto { ratio: 0.25 }).unwrap(),
            "auto:0.25"
        );
        for weight in [
            StyleWeight::Fixed(1e5),
            StyleWeight::Auto { ratio: 1.0 },
            StyleWeight::Auto { ratio: 0.25 },
        ] {
            let json = serde_json::to_string(&weight).unwrap();
            assert_eq!(serde_json::from_str::<StyleWeight>(&json).unwrap(), weight);
        }
        assert_eq!("AUTO".parse(), Ok(StyleWeight::Auto { ratio: 1.0 }));
        assert_eq!("auto:2".parse(), Ok(StyleWeight::Auto { ratio: 2.0 }));
        assert_eq!("1e4".parse(), Ok(StyleWeight::Fixed(1e4)));
        for bad in ["auto:", "automatic", "heavy"] {
            assert!(bad.parse::<StyleWeight>().is_err(), "{bad}");
        }
    }

    #[test]
    fn style_layers_parse_with_optional_weight() {
        let plain: StyleLayer = "relu1_1".parse().unwrap();
        assert_eq!((plain.name.as_str(), plain.weight), ("relu1_1", 1.0));
        let weighted: StyleLayer = "relu2_1:0.25".parse().unwrap();
        assert_eq!((weighted.name.as_str(), weighted.weight), ("relu2_1", 0.25));
        assert!("relu2_1:heavy".parse::<StyleLayer>().is_err());
    }

    #[test]
    fn log_points_are_multiples_and_the_last() {
        let params = RenderParams {
            iterations: 120,
            log_every: 50,
            ..RenderParams::new(Backbone::Vgg16)
        };
        let logged: Vec<u32> = (0..=120).filter(|&i| params.logs_at(i)).collect();
        assert_eq!(logged, vec![50, 100, 120]);
    }

    /// The task id hashes the parameters' JSON: a parameter added later must
    /// leave it alone at its default (`skip_serializing_if`), or every id of
    /// every existing grid changes. See docs/adding-a-parameter.md.
    #[test]
    fn a_parameter_at_its_default_leaves_task_ids_alone() {
        const IN_EVERY_ID: [&str; 13] = [
            "backbone",
            "content_layers",
            "style_layers",
            "content_weight",
            "style_weight",
            "tv_weight",
            "init",
            "optimizer",
            "iterations",
            "size",
            "style_scale",
            "seed",
            "log_every",
        ];
        for backbone in Backbone::ALL {
            let json = serde_json::to_value(RenderParams::new(backbone)).unwrap();
            let mut keys: Vec<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort_unstable();
            let mut expected = IN_EVERY_ID.to_vec();
            expected.sort_unstable();
            assert_eq!(
                keys, expected,
                "a new parameter entered the id at its default"
            );
        }
    }

    #[test]
    fn bf16_enters_the_id_and_fp32_does_not() {
        let base = RenderParams::new(Backbone::Vgg19);
        let json = |p: &RenderParams| serde_json::to_value(p).unwrap();
        assert!(json(&base).get("precision").is_none());
        let bf16 = RenderParams {
            precision: Precision::Bf16,
            ..base.clone()
        };
        let written = json(&bf16.clone().normalised());
        assert_eq!(written["precision"], "bf16");
        assert_eq!(
            serde_json::from_value::<RenderParams>(written).unwrap(),
            bf16
        );
        // Records written before precision existed read as fp32.
        let old: RenderParams = serde_json::from_value(json(&base)).unwrap();
        assert_eq!(old.precision, Precision::Fp32);
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("bfloat16".parse::<Precision>(), Ok(Precision::Bf16));
        let err = "bf17".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("fp32 or bf16"), "{err}");
    }

    #[test]
    fn early_stopping_enters_the_id_only_when_on() {
        let base = RenderParams::new(Backbone::Vgg19);
        let json = |p: &RenderParams| serde_json::to_value(p).unwrap();
        // A window without a tolerance is not read: one render, one id.
        let window_alone = RenderParams {
            stop_window: 10,
            ..base.clone()
        }
        .normalised();
        assert_eq!(json(&window_alone), json(&base));
        let on = RenderParams {
            stop_tolerance: 1e-3,
            stop_window: 10,
            ..base.clone()
        };
        let written = json(&on.clone().normalised());
        assert_eq!(written["stop_tolerance"], 1e-3);
        assert_eq!(written["stop_window"], 10);
        assert_eq!(serde_json::from_value::<RenderParams>(written).unwrap(), on);
        let default_window = json(&RenderParams {
            stop_tolerance: 1e-3,
            ..base.clone()
        });
        assert!(
            default_window.get("stop_window").is_none(),
            "{default_window}"
        );
        // Records written before early stopping read as "off".
        let old: RenderParams = serde_json::from_value(json(&base)).unwrap();
        assert_eq!((old.stop_tolerance, old.stop_window), (0.0, 50));
    }

    #[test]
    fn a_render_stops_when_the_loss_falls_too_little_over_the_window() {
        let params = RenderParams {
            iterations: 100,
            stop_tolerance: 0.01,
            stop_window: 10,
            ..RenderParams::new(Backbone::Vgg16)
        };
        assert!(!params.stops_at(9, 100.0, 100.0), "not a whole window yet");
        assert!(params.stops_at(10, 100.0, 99.5), "0.5% < 1%");
        assert!(params.stops_at(10, 100.0, 101.0), "it rose");
        assert!(!params.stops_at(10, 100.0, 98.0), "2% >= 1%");
        assert!(!params.stops_at(100, 100.0, 100.0), "the last is not early");
        let off = RenderParams {
            stop_tolerance: 0.0,
            ..params.clone()
        };
        assert!(!off.stops_at(10, 100.0, 100.0));
        for (bad, needle) in [
            (
                RenderParams {
                    stop_tolerance: -0.1,
                    ..params.clone()
                },
                "stop_tolerance",
            ),
            (
                RenderParams {
                    stop_window: 0,
                    ..params.clone()
                },
                "stop_window must be at least 1",
            ),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "'{err}' should mention '{needle}'");
        }
    }

    #[test]
    fn normalising_resets_what_the_render_does_not_read() {
        let mut adam = RenderParams::new(Backbone::Vgg16);
        adam.optimizer = OptimizerSpec::new(OptimizerKind::Adam);
        adam.optimizer.history_size = 5;
        adam.optimizer.line_search = LineSearch::None;
        adam.seed = 7;
        let normalised = adam.clone().normalised();
        assert_eq!(normalised.optimizer.history_size, 100);
        assert_eq!(normalised.optimizer.line_search, LineSearch::StrongWolfe);
        assert_eq!(normalised.seed, 0, "a content start reads no seed");
        assert_eq!(normalised.optimizer.lr, adam.optimizer.lr);
        let noise = RenderParams {
            init: Init::Noise,
            ..adam
        };
        assert_eq!(noise.normalised().seed, 7);
    }

    #[test]
    fn params_serialise_to_readable_json() {
        let params = RenderParams::new(Backbone::GoogLeNet);
        let json = serde_json::to_value(&params).unwrap();
        assert_eq!(json["backbone"], "googlenet");
        assert_eq!(json["optimizer"]["kind"], "lbfgs");
        assert_eq!(json["init"], "content");
        let back: RenderParams = serde_json::from_value(json).unwrap();
        assert_eq!(back, params);
    }
}
