//! Frozen feature networks: VGG16, VGG19, GoogLeNet and Inception v3, built like
//! torchvision's so that torchvision's state dicts load unchanged.
//!
//! Parameters never require grad, so autograd only ever computes the input's gradient.

mod arch;
mod convention;
pub(crate) mod weights;

use std::path::Path;

use pastiche_spec::{Backbone, Precision};
use tch::{Device, Kind, Tensor};

use arch::{architecture, BranchOp, ConvShape, InceptionBlock, LayerSpec, Pool};
pub(crate) use arch::{has_transform_input, Shape};
pub use convention::InputConvention;
use convention::{IMAGENET_MEAN, IMAGENET_STD};
use weights::{InitRule, ParamSource, RandomParams, SafetensorsFile};

use crate::error::Result;

/// Every render without `--weights` uses the same random network, so that renders
/// differ only by their parameters.
pub const RANDOM_WEIGHTS_SEED: u64 = 0;

struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: i64,
    /// Rows, columns.
    padding: [i64; 2],
}

impl Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.stride;
        Ok(x.f_conv2d(
            &self.weight,
            self.bias.as_ref(),
            [s, s],
            self.padding,
            [1, 1],
            1,
        )?)
    }

    /// Convolution, then ReLU in place: the convolution's backward pass needs its
    /// input, not its output, so the output can be overwritten.
    fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = self.forward(x)?;
        Ok(y.f_relu_()?)
    }
}

fn max_pool(x: &Tensor, p: &Pool) -> Result<Tensor> {
    Ok(x.f_max_pool2d(
        [p.kernel, p.kernel],
        [p.stride, p.stride],
        [p.padding, p.padding],
        [1, 1],
        p.ceil_mode,
    )?)
}

enum Step {
    Conv(Conv),
    MaxPool(Pool),
    AvgPool(Pool),
}

impl Step {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Step::Conv(conv) => conv.forward_relu(x),
            Step::MaxPool(p) => max_pool(x, p),
            Step::AvgPool(p) => Ok(x.f_avg_pool2d(
                [p.kernel, p.kernel],
                [p.stride, p.stride],
                [p.padding, p.padding],
                p.ceil_mode,
                true, // count_include_pad, as F.avg_pool2d
                None,
            )?),
        }
    }
}

/// One path through an inception block (see [`arch::Branch`]).
struct Branch {
    steps: Vec<Step>,
    fork: Vec<Conv>,
}

struct Inception {
    branches: Vec<Branch>,
}

impl Inception {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut outputs = Vec::new();
        for branch in &self.branches {
            let mut y = x.shallow_clone();
            for step in &branch.steps {
                y = step.forward(&y)?;
            }
            if branch.fork.is_empty() {
                outputs.push(y);
            } else {
                for conv in &branch.fork {
                    outputs.push(conv.forward_relu(&y)?);
                }
            }
        }
        Ok(Tensor::f_cat(&outputs, 1)?)
    }

    fn convs_mut(&mut self) -> impl Iterator<Item = &mut Conv> {
        self.branches.iter_mut().flat_map(|branch| {
            let steps = branch.steps.iter_mut().filter_map(|step| match step {
                Step::Conv(conv) => Some(conv),
                Step::MaxPool(_) | Step::AvgPool(_) => None,
            });
            steps.chain(branch.fork.iter_mut())
        })
    }
}

enum Layer {
    Conv(Conv),
    Relu,
    MaxPool(Pool),
    /// torchvision's BasicConv2d with its eval-mode batch norm folded into the
    /// convolution: `w * g / sqrt(v + eps)`, `b - m * g / sqrt(v + eps)`.
    BasicConv(Conv),
    Inception(Box<Inception>),
}

impl Layer {
    /// `input_is_kept`: the input is a requested feature, so it must not be
    /// overwritten by an in-place ReLU.
    fn forward(&self, x: Tensor, input_is_kept: bool) -> Result<Tensor> {
        Ok(match self {
            Layer::Conv(conv) => conv.forward(&x)?,
            Layer::Relu if input_is_kept => x.f_relu()?,
            Layer::Relu => {
                let mut x = x;
                x.f_relu_()?
            }
            Layer::MaxPool(p) => max_pool(&x, p)?,
            Layer::BasicConv(conv) => conv.forward_relu(&x)?,
            Layer::Inception(block) => block.forward(&x)?,
        })
    }
}

/// A backbone with its weights on one device.
pub struct FeatureNet {
    backbone: Backbone,
    layers: Vec<(&'static str, Layer)>,
    /// GoogLeNet's and Inception v3's `transform_input`, as a per-channel affine
    /// map applied after ImageNet normalisation.
    input_transform: Option<(Tensor, Tensor)>,
    convention: InputConvention,
    mean: Tensor,
    std: Tensor,
    device: Device,
    /// The weights' and activations' kind inside the network; features leave it
    /// as fp32 whatever this is.
    precision: Precision,
}

impl FeatureNet {
    /// Loads `weights` (a safetensors file with torchvision's names and, in its
    /// metadata, its input convention), or without it a seeded random network
    /// initialised as torchvision initialises one.
    pub fn load(backbone: Backbone, weights: Option<&Path>, device: Device) -> Result<Self> {
        Self::load_with(backbone, weights, device, Precision::Fp32)
    }

    /// As [`load`](Self::load), with the convolutions in `precision`: for bf16 the
    /// weights are cast once, here (the same rounding as PyTorch's autocast, which
    /// casts them again at every call), and [`extract`](Self::extract) runs the
    /// layers on bf16 activations and returns fp32 features.
    pub fn load_with(
        backbone: Backbone,
        weights: Option<&Path>,
        device: Device,
        precision: Precision,
    ) -> Result<Self> {
        let mut net = match weights {
            Some(path) => Self::build(backbone, &mut SafetensorsFile::open(path)?, device)?,
            None => Self::build(
                backbone,
                &mut RandomParams::new(RANDOM_WEIGHTS_SEED),
                device,
            )?,
        };
        net.set_precision(precision)?;
        Ok(net)
    }

    fn build(backbone: Backbone, src: &mut dyn ParamSource, device: Device) -> Result<Self> {
        let mut layers = Vec::new();
        for layer in architecture(backbone) {
            let prefix = &layer.param_prefix;
            let loaded = match layer.spec {
                LayerSpec::Conv(shape) => Layer::Conv(vgg_conv(src, prefix, shape)?),
                LayerSpec::Relu => Layer::Relu,
                LayerSpec::MaxPool(pool) => Layer::MaxPool(pool),
                LayerSpec::BasicConv(shape) => Layer::BasicConv(basic_conv(src, prefix, shape)?),
                LayerSpec::Inception(block) => {
                    Layer::Inception(Box::new(inception(src, prefix, block)?))
                }
            };
            layers.push((layer.name, loaded));
        }
        let per_channel = |values: [f32; 3]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(&values)?
                .f_view([1, 3, 1, 1])?
                .f_to_device(device)?)
        };
        let convention = src.convention();
        let input_transform = if has_transform_input(backbone)
            && convention == InputConvention::Torchvision
            && src.transform_input()
        {
            // torchvision: x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5
            let scale = IMAGENET_STD.map(|s| s / 0.5);
            let shift = [0, 1, 2].map(|c| (IMAGENET_MEAN[c] - 0.5) / 0.5);
            Some((per_channel(scale)?, per_channel(shift)?))
        } else {
            None
        };
        let (mean, std) = convention.mean_std();
        let mut net = FeatureNet {
            backbone,
            layers,
            input_transform,
            convention,
            mean: per_channel(mean)?,
            std: per_channel(std)?,
            device,
            precision: Precision::Fp32,
        };
        net.move_to(device)?;
        Ok(net)
    }

    fn move_to(&mut self, device: Device) -> Result<()> {
        for conv in self.convs_mut() {
            conv.weight =
                channels_last(&conv.weight.f_to_device(device)?)?.set_requires_grad(false);
            if let Some(bias) = conv.bias.as_mut() {
                *bias = bias.f_to_device(device)?.set_requires_grad(false);
            }
        }
        Ok(())
    }

    /// Casts the weights and biases from fp32 (as built) to `precision`'s kind.
    fn set_precision(&mut self, precision: Precision) -> Result<()> {
        let kind = kind_of(precision);
        for conv in self.convs_mut() {
            conv.weight = conv.weight.f_to_kind(kind)?.set_requires_grad(false);
            if let Some(bias) = conv.bias.as_mut() {
                *bias = bias.f_to_kind(kind)?.set_requires_grad(false);
            }
        }
        self.precision = precision;
        Ok(())
    }

    fn convs_mut(&mut self) -> Vec<&mut Conv> {
        let mut convs = Vec::new();
        for (_, layer) in &mut self.layers {
            match layer {
                Layer::Conv(c) | Layer::BasicConv(c) => convs.push(c),
                Layer::Inception(block) => convs.extend(block.convs_mut()),
                Layer::Relu | Layer::MaxPool(_) => {}
            }
        }
        convs
    }

    pub fn backbone(&self) -> Backbone {
        self.backbone
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn convention(&self) -> InputConvention {
        self.convention
    }

    /// Every weight and bias (after batch-norm folding).
    pub fn parameters(&mut self) -> Vec<Tensor> {
        self.convs_mut()
            .into_iter()
            .flat_map(|c| {
                std::iter::once(c.weight.shallow_clone())
                    .chain(c.bias.as_ref().map(Tensor::shallow_clone))
            })
            .collect()
    }

    /// The output shape of every layer for an `[1, 3, height, width]` input.
    pub fn layer_shapes(backbone: Backbone, height: i64, width: i64) -> Vec<Shape> {
        let mut shape = (3, height, width);
        architecture(backbone)
            .iter()
            .map(|layer| {
                shape = layer.spec.output_shape(shape);
                shape
            })
            .collect()
    }

    /// Elements allocated by one forward pass up to layer `deepest`, for memory guards.
    pub fn activation_elements(backbone: Backbone, height: i64, width: i64, deepest: usize) -> i64 {
        let mut shape = (3, height, width);
        architecture(backbone)[..=deepest]
            .iter()
            .map(|layer| {
                let elements = layer.spec.activation_elements(shape);
                shape = layer.spec.output_shape(shape);
                elements
            })
            .sum()
    }

    /// An RGB image in [0, 1] as the network's input, by the weights' convention.
    pub fn normalize(&self, image: &Tensor) -> Result<Tensor> {
        let image = if self.convention.bgr() {
            image.f_flip([1])?
        } else {
            image.shallow_clone()
        };
        Ok(image.f_sub(&self.mean)?.f_div(&self.std)?)
    }

    /// Feature maps of the layers at `wanted` (indices into `backbone.layers()`), in
    /// that order, from one forward pass of an image in [0, 1] that stops at the
    /// deepest of them; times the convention's
    /// [`feature_scale`](InputConvention::feature_scale), so that losses on every
    /// convention are on one scale.
    pub fn extract(&self, image: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        let features = self.extract_normalized(&self.normalize(image)?, wanted)?;
        let scale = self.convention.feature_scale();
        if scale == 1.0 {
            return Ok(features);
        }
        features
            .iter()
            .map(|f| Ok(f.f_mul_scalar(scale)?))
            .collect()
    }

    /// The network's own activations (unscaled) for an input already normalised as
    /// [`normalize`](Self::normalize) does; fp32 whatever the net's precision (in
    /// bf16 the input is cast at the first layer and the features back, as PyTorch's
    /// autocast does around its convolutions).
    pub fn extract_normalized(&self, input: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        let Some(&deepest) = wanted.iter().max() else {
            return Ok(Vec::new());
        };
        let x = match &self.input_transform {
            Some((scale, shift)) => input.f_mul(scale)?.f_add(shift)?,
            None => input.shallow_clone(),
        };
        let kind = kind_of(self.precision);
        let x = if x.kind() == kind {
            x
        } else {
            x.f_to_kind(kind)?
        };
        let mut x = channels_last(&x)?;
        let mut kept: Vec<Option<Tensor>> = (0..=deepest).map(|_| None).collect();
        for (index, (_, layer)) in self.layers[..=deepest].iter().enumerate() {
            let input_is_kept = index > 0 && kept[index - 1].is_some();
            x = layer.forward(x, input_is_kept)?;
            if wanted.contains(&index) {
                kept[index] = Some(x.shallow_clone());
            }
        }
        wanted
            .iter()
            .map(|&i| {
                let feature = kept[i].as_ref().expect("kept above");
                Ok(match feature.kind() {
                    Kind::Float => feature.shallow_clone(),
                    _ => feature.f_to_kind(Kind::Float)?,
                })
            })
            .collect()
    }
}

/// The tensor kind of the network's weights and activations.
fn kind_of(precision: Precision) -> Kind {
    match precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    }
}

/// Checks every parameter `backbone` needs from `src`, as loading it would.
pub(crate) fn check_params(backbone: Backbone, src: &mut dyn ParamSource) -> Result<()> {
    FeatureNet::build(backbone, src, Device::Cpu).map(drop)
}

/// The `features.N` prefixes of a VGG's convolutions in forward order, with their
/// weight shapes; none for the inception networks.
pub(crate) fn vgg_convs(backbone: Backbone) -> Vec<(String, [i64; 4])> {
    architecture(backbone)
        .into_iter()
        .filter_map(|layer| match layer.spec {
            LayerSpec::Conv(shape) => Some((layer.param_prefix, conv_weight_shape(&shape))),
            _ => None,
        })
        .collect()
}

/// The same NCHW tensor stored channel-innermost (NHWC), PyTorch's `channels_last`
/// memory format, which tch has no name for: libtorch infers it from the strides.
/// oneDNN's and cuDNN's convolutions are faster on it, and they keep it for
/// their outputs.
fn channels_last(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])?)
}

fn conv_weight_shape(shape: &ConvShape) -> [i64; 4] {
    let [kh, kw] = shape.kernel;
    [shape.cout, shape.cin, kh, kw]
}

fn vgg_conv(src: &mut dyn ParamSource, prefix: &str, shape: ConvShape) -> Result<Conv> {
    Ok(Conv {
        weight: src.tensor(
            &format!("{prefix}.weight"),
            &conv_weight_shape(&shape),
            InitRule::KaimingNormalFanOut,
        )?,
        bias: Some(src.tensor(&format!("{prefix}.bias"), &[shape.cout], InitRule::Zeros)?),
        stride: shape.stride,
        padding: shape.padding,
    })
}

fn basic_conv(src: &mut dyn ParamSource, prefix: &str, shape: ConvShape) -> Result<Conv> {
    const BN_EPS: f64 = 1e-3; // torchvision's BasicConv2d
    let c = shape.cout;
    let weight = src.tensor(
        &format!("{prefix}.conv.weight"),
        &conv_weight_shape(&shape),
        // Not torchvision's trunc_normal_ (std 0.01 for GoogLeNet, 0.1 for Inception
        // v3): with batch norm in eval mode at its initial statistics nothing
        // renormalises, so activations shrink ~10x per layer (GoogLeNet) and the
        // style gradient vanishes, or grow ~10x per block (Inception v3) and the
        // deepest layers swamp the losses. Kaiming's init keeps the growth to
        // about 2x per block in both.
        InitRule::KaimingNormalFanOut,
    )?;
    let mut bn = |name: &str, init| -> Result<Tensor> {
        Ok(src
            .tensor(&format!("{prefix}.bn.{name}"), &[c], init)?
            .f_to_kind(Kind::Double)?)
    };
    let gamma = bn("weight", InitRule::Ones)?;
    let beta = bn("bias", InitRule::Zeros)?;
    let mean = bn("running_mean", InitRule::Zeros)?;
    let var = bn("running_var", InitRule::Ones)?;
    // Folded in double precision so the fold adds no error of its own.
    let scale = gamma.f_div(&var.f_add_scalar(BN_EPS)?.f_sqrt()?)?;
    let folded = weight
        .f_to_kind(Kind::Double)?
        .f_mul(&scale.f_view([-1, 1, 1, 1])?)?;
    let bias = beta.f_sub(&mean.f_mul(&scale)?)?;
    Ok(Conv {
        weight: folded.f_to_kind(Kind::Float)?,
        bias: Some(bias.f_to_kind(Kind::Float)?),
        stride: shape.stride,
        padding: shape.padding,
    })
}

fn inception(src: &mut dyn ParamSource, prefix: &str, block: InceptionBlock) -> Result<Inception> {
    let mut conv = |name: &str, shape| basic_conv(src, &format!("{prefix}.{name}"), shape);
    let mut branches = Vec::new();
    for branch in block.branches {
        let mut steps = Vec::new();
        for op in branch.ops {
            steps.push(match op {
                BranchOp::Conv(name, shape) => Step::Conv(conv(name, shape)?),
                BranchOp::MaxPool(pool) => Step::MaxPool(pool),
                BranchOp::AvgPool(pool) => Step::AvgPool(pool),
            });
        }
        let fork = branch
            .fork
            .into_iter()
            .map(|(name, shape)| conv(name, shape))
            .collect::<Result<_>>()?;
        branches.push(Branch { steps, fork });
    }
    Ok(Inception { branches })
}
