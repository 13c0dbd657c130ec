//! The backbones and the names users give their layers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::params::MIN_SIZE;

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
    #[serde(rename = "inception_v3")]
    InceptionV3,
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

/// Inception v3's layers: torchvision's module names, in forward order (its
/// auxiliary classifier, `AuxLogits`, is not part of the feature network).
pub const INCEPTION_V3_LAYERS: &[&str] = &[
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    #[error("unknown backbone '{0}' (expected vgg16, vgg19, googlenet or inception_v3)")]
    UnknownBackbone(String),
    #[error("{backbone} has no layer '{layer}'; its layers are: {}", backbone.layers().join(", "))]
    UnknownLayer { backbone: Backbone, layer: String },
}

impl Backbone {
    pub const ALL: [Backbone; 4] = [
        Backbone::Vgg16,
        Backbone::Vgg19,
        Backbone::GoogLeNet,
        Backbone::InceptionV3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backbone::Vgg16 => "vgg16",
            Backbone::Vgg19 => "vgg19",
            Backbone::GoogLeNet => "googlenet",
            Backbone::InceptionV3 => "inception_v3",
        }
    }

    /// The network as people write it: the founding study's tables, messages.
    pub fn title(self) -> &'static str {
        match self {
            Backbone::Vgg16 => "VGG16",
            Backbone::Vgg19 => "VGG19",
            Backbone::GoogLeNet => "GoogLeNet",
            Backbone::InceptionV3 => "Inception v3",
        }
    }

    /// The smallest `size` (longer side, in pixels) a render may ask for: below
    /// it a square image has no pixels left in the deepest layers. Inception v3's
    /// unpadded stride-2 convolutions and pools need 75 px, torchvision's
    /// `min_size` for it; the others go down to [`MIN_SIZE`].
    pub fn min_size(self) -> u32 {
        match self {
            Backbone::Vgg16 | Backbone::Vgg19 | Backbone::GoogLeNet => MIN_SIZE,
            Backbone::InceptionV3 => 75,
        }
    }

    /// Every layer whose output can be used for a loss, in forward order.
    pub fn layers(self) -> &'static [&'static str] {
        match self {
            Backbone::Vgg16 => VGG16_LAYERS,
            Backbone::Vgg19 => VGG19_LAYERS,
            Backbone::GoogLeNet => GOOGLENET_LAYERS,
            Backbone::InceptionV3 => INCEPTION_V3_LAYERS,
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
    /// (12), Inception v3's (16). Style layers "by depth" are the first N of these.
    pub fn conv_layers(self) -> Vec<&'static str> {
        self.layers()
            .iter()
            .copied()
            .filter(|l| match self {
                Backbone::Vgg16 | Backbone::Vgg19 => l.starts_with("relu"),
                Backbone::GoogLeNet | Backbone::InceptionV3 => !l.starts_with("maxpool"),
            })
            .collect()
    }

    /// The first `depth` of [`conv_layers`](Self::conv_layers), or `None` when the
    /// backbone has fewer.
    pub fn first_conv_layers(self, depth: usize) -> Option<Vec<&'static str>> {
        let layers = self.conv_layers();
        (depth >= 1 && depth <= layers.len()).then(|| layers[..depth].to_vec())
    }

    /// Gatys et al.'s choice for VGG; the GoogLeNet and Inception v3 equivalents
    /// sit at the same scales. Content: the second stage at 1/8 of the input's
    /// resolution (VGG's `relu4_2`, GoogLeNet's `inception3b`, Inception v3's
    /// `Mixed_5c`).
    pub fn default_content_layers(self) -> &'static [&'static str] {
        match self {
            Backbone::Vgg16 | Backbone::Vgg19 => &["relu4_2"],
            Backbone::GoogLeNet => &["inception3b"],
            Backbone::InceptionV3 => &["Mixed_5c"],
        }
    }

    /// Style: one stage at each of the five scales. Inception v3's stem ends in a
    /// 1x1 then a 3x3 convolution at 1/4, as GoogLeNet's does, and the 3x3 is
    /// taken as GoogLeNet's `conv3` is; at 1/16 and 1/32 the first block after
    /// the reduction (`Mixed_6a`, `Mixed_7a`, which play GoogLeNet's max pools'
    /// part), as GoogLeNet's `inception4a` and `inception5a` follow its pools.
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
            Backbone::InceptionV3 => &[
                "Conv2d_1a_3x3",
                "Conv2d_4a_3x3",
                "Mixed_5b",
                "Mixed_6b",
                "Mixed_7b",
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
        assert_eq!(Backbone::InceptionV3.conv_layers().len(), 16);
        assert_eq!(
            Backbone::Vgg19.first_conv_layers(3).unwrap(),
            ["relu1_1", "relu1_2", "relu2_1"]
        );
        assert_eq!(
            Backbone::GoogLeNet.first_conv_layers(4).unwrap(),
            ["conv1", "conv2", "conv3", "inception3a"]
        );
        assert_eq!(
            Backbone::InceptionV3.first_conv_layers(4).unwrap(),
            [
                "Conv2d_1a_3x3",
                "Conv2d_2a_3x3",
                "Conv2d_2b_3x3",
                "Conv2d_3b_1x1"
            ]
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
        for backbone in Backbone::ALL {
            assert!(err.contains(backbone.name()), "{err}");
        }
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
