//! Domain types to and from their protobuf messages. A message that does not make a
//! valid domain value is an `InvalidArgument` for whoever sent it.

use std::path::PathBuf;

use pastiche_spec::{
    Backbone, Init, LineSearch, LossRecord, OptimizerKind, OptimizerSpec, Precision, RenderParams,
    StyleLayer, StyleWeight,
};

use crate::pb;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConversionError {
    pub field: &'static str,
    pub reason: String,
}

impl ConversionError {
    pub fn missing(field: &'static str) -> Self {
        ConversionError {
            field,
            reason: "missing".into(),
        }
    }
}

impl From<ConversionError> for tonic::Status {
    fn from(err: ConversionError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

impl From<Backbone> for pb::Backbone {
    fn from(b: Backbone) -> Self {
        match b {
            Backbone::Vgg16 => pb::Backbone::Vgg16,
            Backbone::Vgg19 => pb::Backbone::Vgg19,
            Backbone::GoogLeNet => pb::Backbone::Googlenet,
            Backbone::InceptionV3 => pb::Backbone::InceptionV3,
        }
    }
}

impl TryFrom<pb::Backbone> for Backbone {
    type Error = ConversionError;

    fn try_from(b: pb::Backbone) -> Result<Self, Self::Error> {
        match b {
            pb::Backbone::Vgg16 => Ok(Backbone::Vgg16),
            pb::Backbone::Vgg19 => Ok(Backbone::Vgg19),
            pb::Backbone::Googlenet => Ok(Backbone::GoogLeNet),
            pb::Backbone::InceptionV3 => Ok(Backbone::InceptionV3),
            pb::Backbone::Unspecified => Err(ConversionError::missing("backbone")),
        }
    }
}

impl From<OptimizerKind> for pb::OptimizerKind {
    fn from(k: OptimizerKind) -> Self {
        match k {
            OptimizerKind::Lbfgs => pb::OptimizerKind::Lbfgs,
            OptimizerKind::Adam => pb::OptimizerKind::Adam,
        }
    }
}

impl TryFrom<pb::OptimizerKind> for OptimizerKind {
    type Error = ConversionError;

    fn try_from(k: pb::OptimizerKind) -> Result<Self, Self::Error> {
        match k {
            pb::OptimizerKind::Lbfgs => Ok(OptimizerKind::Lbfgs),
            pb::OptimizerKind::Adam => Ok(OptimizerKind::Adam),
            pb::OptimizerKind::Unspecified => Err(ConversionError::missing("optimizer")),
        }
    }
}

impl From<LineSearch> for pb::LineSearch {
    fn from(l: LineSearch) -> Self {
        match l {
            LineSearch::None => pb::LineSearch::None,
            LineSearch::StrongWolfe => pb::LineSearch::StrongWolfe,
        }
    }
}

impl TryFrom<pb::LineSearch> for LineSearch {
    type Error = ConversionError;

    fn try_from(l: pb::LineSearch) -> Result<Self, Self::Error> {
        match l {
            pb::LineSearch::None => Ok(LineSearch::None),
            pb::LineSearch::StrongWolfe => Ok(LineSearch::StrongWolfe),
            pb::LineSearch::Unspecified => Err(ConversionError::missing("line_search")),
        }
    }
}

impl From<Precision> for pb::Precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::Fp32 => pb::Precision::Fp32,
            Precision::Bf16 => pb::Precision::Bf16,
        }
    }
}

impl TryFrom<pb::Precision> for Precision {
    type Error = ConversionError;

    /// Unspecified is what a coordinator older than the field sends: fp32.
    fn try_from(p: pb::Precision) -> Result<Self, Self::Error> {
        Ok(match p {
            pb::Precision::Unspecified | pb::Precision::Fp32 => Precision::Fp32,
            pb::Precision::Bf16 => Precision::Bf16,
        })
    }
}

impl From<&Init> for pb::Init {
    fn from(init: &Init) -> Self {
        let start = match init {
            Init::Content => pb::init::Start::Content(true),
            Init::Noise => pb::init::Start::Noise(true),
            Init::Image(path) => pb::init::Start::Image(path.to_string_lossy().into_owned()),
        };
        pb::Init { start: Some(start) }
    }
}

impl TryFrom<pb::Init> for Init {
    type Error = ConversionError;

    fn try_from(init: pb::Init) -> Result<Self, Self::Error> {
        match init.start.ok_or_else(|| ConversionError::missing("init"))? {
            pb::init::Start::Content(_) => Ok(Init::Content),
            pb::init::Start::Noise(_) => Ok(Init::Noise),
            pb::init::Start::Image(key) => Ok(Init::Image(PathBuf::from(key))),
        }
    }
}

impl From<&RenderParams> for pb::RenderParams {
    fn from(p: &RenderParams) -> Self {
        pb::RenderParams {
            backbone: pb::Backbone::from(p.backbone).into(),
            content_layers: p.content_layers.clone(),
            style_layers: p
                .style_layers
                .iter()
                .map(|l| pb::StyleLayer {
                    name: l.name.clone(),
                    weight: l.weight,
                })
                .collect(),
            content_weight: p.content_weight,
            style_weight: match p.style_weight {
                StyleWeight::Fixed(beta) => beta,
                // A worker older than `auto` refuses the task rather than
                // rendering it with no style at all.
                StyleWeight::Auto { .. } => f64::NAN,
            },
            style_balance: match p.style_weight {
                StyleWeight::Fixed(_) => 0.0,
                StyleWeight::Auto { ratio } => ratio,
            },
            tv_weight: p.tv_weight,
            init: Some((&p.init).into()),
            optimizer: pb::OptimizerKind::from(p.optimizer.kind).into(),
            lr: p.optimizer.lr,
            history_size: p.optimizer.history_size as u32,
            line_search: pb::LineSearch::from(p.optimizer.line_search).into(),
            iterations: p.iterations,
            size: p.size,
            style_scale: p.style_scale,
            seed: p.seed,
            log_every: p.log_every,
            original_colors: p.original_colors,
            stop_tolerance: p.stop_tolerance,
            stop_window: p.stop_window,
            scales: p.scales.clone(),
            scale_iterations: p.scale_iterations.clone(),
            precision: pb::Precision::from(p.precision).into(),
        }
    }
}

fn enum_field<P: TryFrom<i32>, D: TryFrom<P, Error = ConversionError>>(
    field: &'static str,
    value: i32,
) -> Result<D, ConversionError> {
    let parsed = P::try_from(value).map_err(|_| ConversionError {
        field,
        reason: format!("unknown value {value}"),
    })?;
    D::try_from(parsed)
}

impl TryFrom<pb::RenderParams> for RenderParams {
    type Error = ConversionError;

    /// Also checks the result, so a worker never starts on parameters a user could
    /// not have written.
    fn try_from(p: pb::RenderParams) -> Result<Self, Self::Error> {
        let params = RenderParams {
            backbone: enum_field::<pb::Backbone, _>("backbone", p.backbone)?,
            content_layers: p.content_layers,
            style_layers: p
                .style_layers
                .into_iter()
                .map(|l| StyleLayer {
                    name: l.name,
                    weight: l.weight,
                })
                .collect(),
            content_weight: p.content_weight,
            style_weight: if p.style_balance > 0.0 {
                StyleWeight::Auto {
                    ratio: p.style_balance,
                }
            } else {
                StyleWeight::Fixed(p.style_weight)
            },
            tv_weight: p.tv_weight,
            init: p
                .init
                .ok_or_else(|| ConversionError::missing("init"))?
                .try_into()?,
            optimizer: OptimizerSpec {
                kind: enum_field::<pb::OptimizerKind, _>("optimizer", p.optimizer)?,
                lr: p.lr,
                history_size: p.history_size as usize,
                line_search: enum_field::<pb::LineSearch, _>("line_search", p.line_search)?,
            },
            iterations: p.iterations,
            size: p.size,
            style_scale: p.style_scale,
            seed: p.seed,
            log_every: p.log_every,
            original_colors: p.original_colors,
            stop_tolerance: p.stop_tolerance,
            stop_window: match p.stop_window {
                0 => pastiche_spec::DEFAULT_STOP_WINDOW,
                window => window,
            },
            scales: p.scales,
            scale_iterations: p.scale_iterations,
            precision: enum_field::<pb::Precision, _>("precision", p.precision)?,
        };
        params.validate().map_err(|e| ConversionError {
            field: "params",
            reason: e.to_string(),
        })?;
        Ok(params)
    }
}

impl From<&LossRecord> for pb::LossRecord {
    fn from(r: &LossRecord) -> Self {
        pb::LossRecord {
            iteration: r.iteration,
            content: r.content,
            style: r.style,
            tv: r.tv,
            total: r.total,
        }
    }
}

impl From<&pb::LossRecord> for LossRecord {
    fn from(r: &pb::LossRecord) -> Self {
        LossRecord {
            iteration: r.iteration,
            content: r.content,
            style: r.style,
            tv: r.tv,
            total: r.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_params_round_trip_for_every_variant() {
        for backbone in Backbone::ALL {
            for init in [
                Init::Content,
                Init::Noise,
                Init::Image("inputs/ab.png".into()),
            ] {
                for kind in [OptimizerKind::Lbfgs, OptimizerKind::Adam] {
                    let mut params = RenderParams::new(backbone);
                    params.init = init.clone();
                    params.optimizer = OptimizerSpec::new(kind);
                    params.optimizer.line_search = LineSearch::None;
                    params.style_layers[0].weight = 0.25;
                    let wire = pb::RenderParams::from(&params);
                    assert_eq!(RenderParams::try_from(wire).unwrap(), params);
                    // The painter's controls.
                    params.style_weight = StyleWeight::Auto { ratio: 0.5 };
                    params.original_colors = true;
                    params.stop_tolerance = 1e-3;
                    params.stop_window = 20;
                    params.scales = vec![96, 128];
                    params.scale_iterations = vec![30, 20];
                    params.precision = Precision::Bf16;
                    let wire = pb::RenderParams::from(&params);
                    assert_eq!(RenderParams::try_from(wire).unwrap(), params);
                }
            }
        }
    }

    #[test]
    fn an_older_coordinators_unset_precision_reads_as_fp32() {
        let mut wire = pb::RenderParams::from(&RenderParams::new(Backbone::Vgg19));
        wire.precision = 0;
        let params = RenderParams::try_from(wire.clone()).unwrap();
        assert_eq!(params.precision, Precision::Fp32);
        wire.precision = 7;
        assert!(RenderParams::try_from(wire)
            .unwrap_err()
            .to_string()
            .contains("precision"));
    }

    #[test]
    fn invalid_messages_are_invalid_arguments() {
        let mut wire = pb::RenderParams::from(&RenderParams::new(Backbone::Vgg19));
        wire.backbone = 0;
        let status = tonic::Status::from(RenderParams::try_from(wire.clone()).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("backbone"));

        wire.backbone = 99;
        assert!(RenderParams::try_from(wire.clone())
            .unwrap_err()
            .reason
            .contains("99"));

        let mut wire = pb::RenderParams::from(&RenderParams::new(Backbone::Vgg19));
        wire.size = 1_000_000;
        assert!(RenderParams::try_from(wire)
            .unwrap_err()
            .reason
            .contains("size"));
    }
}
