//! How a network expects its input: the preprocessing its weights were trained with.

use std::fmt;
use std::str::FromStr;

/// ImageNet statistics that torchvision's weights expect their inputs normalised with.
pub(crate) const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub(crate) const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The ImageNet mean pixel of the original Caffe VGG, in BGR order and 0..255 units.
const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

/// The input convention of a weights file, recorded in its metadata (`convention`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InputConvention {
    /// torchvision's: RGB in [0, 1], minus ImageNet's mean, divided by its standard
    /// deviation. Files that record no convention are taken to be torchvision's.
    #[default]
    Torchvision,
    /// Caffe's (the original VGG, Keras's `preprocess_input`): BGR in [0, 255] minus
    /// the ImageNet mean pixel.
    Caffe,
}

impl InputConvention {
    pub const ALL: [InputConvention; 2] = [InputConvention::Torchvision, InputConvention::Caffe];

    pub fn name(self) -> &'static str {
        match self {
            InputConvention::Torchvision => "torchvision",
            InputConvention::Caffe => "caffe",
        }
    }

    /// Whether the network's first convolution reads BGR rather than RGB.
    pub(crate) fn bgr(self) -> bool {
        self == InputConvention::Caffe
    }

    /// Per channel of the network's input (in its channel order), the `mean` and `std`
    /// with which an image `x` in [0, 1] becomes the input `(x - mean) / std`.
    pub(crate) fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            InputConvention::Torchvision => (IMAGENET_MEAN, IMAGENET_STD),
            // 255 x - m  =  (x - m / 255) / (1 / 255)
            InputConvention::Caffe => (CAFFE_MEAN_BGR.map(|m| m / 255.0), [1.0 / 255.0; 3]),
        }
    }

    /// What feature maps are multiplied by before the losses see them. A network
    /// trained on 0..255 inputs has activations about 255 times those of one trained
    /// on [0, 1]-scale inputs; dividing them by 255 puts the losses back on the
    /// scale that the default content and style weights were chosen for
    /// (docs/weights.md). Since ReLU and max pooling commute with a positive scale,
    /// this is the same network with its biases divided by 255, fed `x - m / 255`.
    pub fn feature_scale(self) -> f64 {
        match self {
            InputConvention::Torchvision => 1.0,
            InputConvention::Caffe => 1.0 / 255.0,
        }
    }
}

impl fmt::Display for InputConvention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InputConvention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InputConvention::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown input convention '{s}' (torchvision or caffe)"))
    }
}
