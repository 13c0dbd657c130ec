//! The three backbones layer for layer as torchvision builds them, without weights:
//! enough to name every layer, find its parameters and infer every output shape.

use pastiche_spec::Backbone;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pool {
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub ceil_mode: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ConvShape {
    pub cin: i64,
    pub cout: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl ConvShape {
    fn new(cin: i64, cout: i64, kernel: i64) -> Self {
        ConvShape {
            cin,
            cout,
            kernel,
            stride: 1,
            padding: kernel / 2,
        }
    }
}

/// torchvision's `Inception(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct InceptionShape {
    pub cin: i64,
    pub ch1x1: i64,
    pub ch3x3red: i64,
    pub ch3x3: i64,
    pub ch5x5red: i64,
    pub ch5x5: i64,
    pub pool_proj: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LayerSpec {
    /// A convolution with bias (VGG), parameters `{prefix}.weight`, `{prefix}.bias`.
    Conv(ConvShape),
    Relu,
    MaxPool(Pool),
    /// torchvision's `BasicConv2d`: convolution without bias, batch norm (eps 1e-3),
    /// ReLU; parameters `{prefix}.conv.weight`, `{prefix}.bn.*`.
    BasicConv(ConvShape),
    Inception(InceptionShape),
}

/// One named layer and where its parameters live in torchvision's state dict.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArchLayer {
    pub name: &'static str,
    pub param_prefix: String,
    pub spec: LayerSpec,
}

pub(crate) fn architecture(backbone: Backbone) -> Vec<ArchLayer> {
    match backbone {
        Backbone::Vgg16 => vgg(&[2, 2, 3, 3, 3], backbone.layers()),
        Backbone::Vgg19 => vgg(&[2, 2, 4, 4, 4], backbone.layers()),
        Backbone::GoogLeNet => googlenet(backbone.layers()),
    }
}

/// VGG's `features`: blocks of 3x3 conv + ReLU, each block ending in a 2x2 max pool;
/// widths 64, 128, 256, 512, 512. Parameters are `features.{index}.*`.
fn vgg(convs_per_block: &[usize; 5], names: &'static [&'static str]) -> Vec<ArchLayer> {
    const WIDTHS: [i64; 5] = [64, 128, 256, 512, 512];
    let mut specs = Vec::new();
    let mut cin = 3;
    for (&convs, &width) in convs_per_block.iter().zip(&WIDTHS) {
        for _ in 0..convs {
            specs.push(LayerSpec::Conv(ConvShape::new(cin, width, 3)));
            specs.push(LayerSpec::Relu);
            cin = width;
        }
        specs.push(LayerSpec::MaxPool(Pool {
            kernel: 2,
            stride: 2,
            padding: 0,
            ceil_mode: false,
        }));
    }
    assert_eq!(specs.len(), names.len(), "VGG layer names out of step");
    specs
        .into_iter()
        .zip(names)
        .enumerate()
        .map(|(index, (spec, name))| ArchLayer {
            name,
            param_prefix: format!("features.{index}"),
            spec,
        })
        .collect()
}

fn googlenet(names: &'static [&'static str]) -> Vec<ArchLayer> {
    let pool = |kernel| {
        LayerSpec::MaxPool(Pool {
            kernel,
            stride: 2,
            padding: 0,
            ceil_mode: true,
        })
    };
    let inception = |cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj| {
        LayerSpec::Inception(InceptionShape {
            cin,
            ch1x1,
            ch3x3red,
            ch3x3,
            ch5x5red,
            ch5x5,
            pool_proj,
        })
    };
    let specs = [
        LayerSpec::BasicConv(ConvShape {
            cin: 3,
            cout: 64,
            kernel: 7,
            stride: 2,
            padding: 3,
        }),
        pool(3),
        LayerSpec::BasicConv(ConvShape::new(64, 64, 1)),
        LayerSpec::BasicConv(ConvShape::new(64, 192, 3)),
        pool(3),
        inception(192, 64, 96, 128, 16, 32, 32),
        inception(256, 128, 128, 192, 32, 96, 64),
        pool(3),
        inception(480, 192, 96, 208, 16, 48, 64),
        inception(512, 160, 112, 224, 24, 64, 64),
        inception(512, 128, 128, 256, 24, 64, 64),
        inception(512, 112, 144, 288, 32, 64, 64),
        inception(528, 256, 160, 320, 32, 128, 128),
        pool(2),
        inception(832, 256, 160, 320, 32, 128, 128),
        inception(832, 384, 192, 384, 48, 128, 128),
    ];
    assert_eq!(
        specs.len(),
        names.len(),
        "GoogLeNet layer names out of step"
    );
    specs
        .into_iter()
        .zip(names)
        .map(|(spec, name)| ArchLayer {
            name,
            param_prefix: name.to_string(),
            spec,
        })
        .collect()
}

/// Channels, height and width of a feature map.
pub(crate) type Shape = (i64, i64, i64);

fn conv_out(len: i64, kernel: i64, stride: i64, padding: i64) -> i64 {
    let span = len + 2 * padding - kernel;
    if span < 0 {
        0
    } else {
        span / stride + 1
    }
}

fn pool_out(len: i64, pool: &Pool) -> i64 {
    let span = len + 2 * pool.padding - pool.kernel;
    if span < 0 {
        return 0;
    }
    if !pool.ceil_mode {
        return span / pool.stride + 1;
    }
    let mut out = (span + pool.stride - 1) / pool.stride + 1;
    // As PyTorch: the last window must start inside the input or its left padding.
    if (out - 1) * pool.stride >= len + pool.padding {
        out -= 1;
    }
    out
}

impl LayerSpec {
    pub fn output_shape(&self, (c, h, w): Shape) -> Shape {
        match self {
            LayerSpec::Conv(conv) | LayerSpec::BasicConv(conv) => (
                conv.cout,
                conv_out(h, conv.kernel, conv.stride, conv.padding),
                conv_out(w, conv.kernel, conv.stride, conv.padding),
            ),
            LayerSpec::Relu => (c, h, w),
            LayerSpec::MaxPool(pool) => (c, pool_out(h, pool), pool_out(w, pool)),
            LayerSpec::Inception(i) => (i.ch1x1 + i.ch3x3 + i.ch5x5 + i.pool_proj, h, w),
        }
    }

    /// Elements of every tensor the forward pass creates inside this layer, the
    /// output included: what autograd keeps alive for the backward pass.
    pub fn activation_elements(&self, input: Shape) -> i64 {
        let (c, h, w) = self.output_shape(input);
        match self {
            // conv output, batch-norm-folded ReLU output
            LayerSpec::BasicConv(_) => 2 * c * h * w,
            LayerSpec::Inception(i) => {
                let hw = h * w;
                // each branch's convs with their ReLUs, the pooled input, the concatenation
                2 * hw * (i.ch1x1 + i.ch3x3red + i.ch3x3 + i.ch5x5red + i.ch5x5 + i.pool_proj)
                    + hw * i.cin
                    + c * hw
            }
            _ => c * h * w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_spec_crate() {
        for backbone in Backbone::ALL {
            let names: Vec<_> = architecture(backbone).iter().map(|l| l.name).collect();
            assert_eq!(names, backbone.layers());
        }
    }

    #[test]
    fn vgg_parameters_use_torchvision_indices() {
        let vgg19 = architecture(Backbone::Vgg19);
        let conv5_4 = vgg19.iter().find(|l| l.name == "conv5_4").unwrap();
        assert_eq!(conv5_4.param_prefix, "features.34");
        let vgg16 = architecture(Backbone::Vgg16);
        let conv4_2 = vgg16.iter().find(|l| l.name == "conv4_2").unwrap();
        assert_eq!(conv4_2.param_prefix, "features.19");
    }

    #[test]
    fn shapes_follow_pytorch_pooling_rules() {
        // Known torchvision output sizes for a 224 px input.
        let mut shape = (3, 224, 224);
        let mut seen = std::collections::HashMap::new();
        for layer in architecture(Backbone::GoogLeNet) {
            shape = layer.spec.output_shape(shape);
            seen.insert(layer.name, shape);
        }
        assert_eq!(seen["conv1"], (64, 112, 112));
        assert_eq!(seen["maxpool1"], (64, 56, 56));
        assert_eq!(seen["inception3b"], (480, 28, 28));
        assert_eq!(seen["inception4e"], (832, 14, 14));
        assert_eq!(seen["inception5b"], (1024, 7, 7));
        let mut shape = (3, 37, 50);
        for layer in architecture(Backbone::Vgg16) {
            shape = layer.spec.output_shape(shape);
        }
        assert_eq!(shape, (512, 1, 1));
    }
}
