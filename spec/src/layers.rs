//! The backbones and the names users give their layers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A frozen classification network whose feature maps define the losses.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backbone {
    Vgg16,
    /// What a render uses when nothing says which.
    #[default]
    Vgg19,
    #[serde(rename = "googlenet")]
    GoogLeNet,
}

/// VGG16's layers in forward order: `conv{block}_{i}`, `relu{block}_{i}`, `pool{block}`.
pub const VGG16_LAYERS: &[&str] = &[
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", //
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2", //
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3", //
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4", //
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "pool5",
];

/// VGG19's layers in forward order.
pub const VGG19_LAYERS: &[&str] = &[
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", //
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2", //
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4",
    "pool3", //
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4",
    "pool4", //
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4",
    "pool5",
];

/// GoogLeNet's layers: torchvision's module names, in forward order.
pub const GOOGLENET_LAYERS: &[&str] = &[
    "conv1",
    "maxpool1",
    "conv2",
    "conv3",
    "maxpool2",
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "maxpool4",
    "inception5a",
    "inception5b",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    #[error("unknown backbone '{0}' (expected vgg16, vgg19 or googlenet)")]
    UnknownBackbone(String),
    #[error("{backbone} has no layer '{layer}'; its layers are: {}", backbone.layers().join(", "))]
    UnknownLayer { backbone: Backbone, layer: String },
}

impl Backbone {
    pub const ALL: [Backbone; 3] = [Backbone::Vgg16, Backbone::Vgg19, Backbone::GoogLeNet];

    pub fn name(self) -> &'static str {
        match self {
            Backbone::Vgg16 => "vgg16",
            Backbone::Vgg19 => "vgg19",
            Backbone::GoogLeNet => "googlenet",
        }
    }

    /// Every layer whose output can be used for a loss, in forward order.
    pub fn layers(self) -> &'static [&'static str] {
        match self {
            Backbone::Vgg16 => VGG16_LAYERS,
            Backbone::Vgg19 => VGG19_LAYERS,
            Backbone::GoogLeNet => GOOGLENET_LAYERS,
        }
    }

    /// Position of `layer` in forward order, or an error listing the valid names.
    pub fn layer_index(self, layer: &str) -> Result<usize, LayerError> {
        self.layers()
            .iter()
            .position(|name| *name == layer)
            .ok_or_else(|| LayerError::UnknownLayer {
                backbone: self,
                layer: layer.to_owned(),
            })
    }

    /// One output per convolutional stage, in forward order: VGG's `relu*` layers
    /// (13 for VGG16, 16 for VGG19), GoogLeNet's convolutions and inception blocks
    /// (12). Style layers "by depth" are the first N of these.
    pub fn conv_layers(self) -> Vec<&'static str> {
        self.layers()
            .iter()
            .copied()
            .filter(|l| match self {
                Backbone::Vgg16 | Backbone::Vgg19 => l.starts_with("relu"),
                Backbone::GoogLeNet => !l.starts_with("maxpool"),
            })
            .collect()
    }

    /// The first `depth` of [`conv_layers`](Self::conv_layers), or `None` when the
    /// backbone has fewer.
    pub fn first_conv_layers(self, depth: usize) -> Option<Vec<&'static str>> {
        let layers = self.conv_layers();
        (depth >= 1 && depth <= layers.len()).then(|| layers[..depth].to_vec())
    }

    /// Gatys et al.'s choice for VGG; the GoogLeNet equivalents sit at the same scales.
    pub fn default_content_layers(self) -> &'static [&'static str] {
        match self {
            Backbone::Vgg16 | Backbone::Vgg19 => &["relu4_2"],
            Backbone::GoogLeNet => &["inception3b"],
        }
    }

    pub fn default_style_layers(self) -> &'static [&'static str] {
        match self {
            Backbone::Vgg16 | Backbone::Vgg19 => {
                &["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
            }
            Backbone::GoogLeNet => &[
                "conv1",
                "conv3",
                "inception3a",
                "inception4a",
                "inception5a",
            ],
        }
    }
}

impl fmt::Display for Backbone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backbone {
    type Err = LayerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backbone::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| LayerError::UnknownBackbone(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg_layer_lists_follow_the_block_structure() {
        // VGG16 has 13 conv layers, VGG19 16, each followed by a ReLU; 5 pools each.
        for (backbone, convs) in [(Backbone::Vgg16, 13), (Backbone::Vgg19, 16)] {
            let layers = backbone.layers();
            assert_eq!(
                layers.iter().filter(|l| l.starts_with("conv")).count(),
                convs
            );
            assert_eq!(
                layers.iter().filter(|l| l.starts_with("relu")).count(),
                convs
            );
            assert_eq!(layers.iter().filter(|l| l.starts_with("pool")).count(), 5);
            for pair in layers.windows(2) {
                if let Some(suffix) = pair[0].strip_prefix("conv") {
                    assert_eq!(pair[1], format!("relu{suffix}"));
                }
            }
        }
    }

    #[test]
    fn style_depth_counts_conv_stages() {
        assert_eq!(Backbone::Vgg16.conv_layers().len(), 13);
        assert_eq!(Backbone::Vgg19.conv_layers().len(), 16);
        assert_eq!(Backbone::GoogLeNet.conv_layers().len(), 12);
        assert_eq!(
            Backbone::Vgg19.first_conv_layers(3).unwrap(),
            ["relu1_1", "relu1_2", "relu2_1"]
        );
        assert_eq!(
            Backbone::GoogLeNet.first_conv_layers(4).unwrap(),
            ["conv1", "conv2", "conv3", "inception3a"]
        );
        assert!(Backbone::Vgg16.first_conv_layers(14).is_none());
        assert!(Backbone::Vgg16.first_conv_layers(0).is_none());
    }

    #[test]
    fn defaults_name_real_layers() {
        for backbone in Backbone::ALL {
            for layer in backbone
                .default_content_layers()
                .iter()
                .chain(backbone.default_style_layers())
            {
                backbone.layer_index(layer).unwrap();
            }
        }
    }

    #[test]
    fn unknown_layer_error_names_the_layer_and_the_choices() {
        let err = Backbone::Vgg19
            .layer_index("relu9_9")
            .unwrap_err()
            .to_string();
        assert!(err.contains("relu9_9"), "{err}");
        assert!(err.contains("relu5_4"), "{err}");
        let err = "resnet50".parse::<Backbone>().unwrap_err().to_string();
        assert!(err.contains("resnet50"), "{err}");
    }

    #[test]
    fn backbone_names_round_trip() {
        for backbone in Backbone::ALL {
            assert_eq!(backbone.name().parse::<Backbone>().unwrap(), backbone);
            let json = serde_json::to_string(&backbone).unwrap();
            assert_eq!(json, format!("\"{}\"", backbone.name()));
        }
    }
}
