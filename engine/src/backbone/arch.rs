//! The backbones layer for layer as torchvision builds them, without weights:
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
    /// Height and width.
    pub kernel: [i64; 2],
    pub stride: i64,
    /// Rows above and below, columns left and right.
    pub padding: [i64; 2],
}

impl ConvShape {
    /// A square kernel, stride 1, padded to keep the size.
    fn new(cin: i64, cout: i64, kernel: i64) -> Self {
        ConvShape {
            cin,
            cout,
            kernel: [kernel; 2],
            stride: 1,
            padding: [kernel / 2; 2],
        }
    }
}

/// One step of an inception block's branch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BranchOp {
    /// torchvision's `BasicConv2d` (see [`LayerSpec::BasicConv`]), named as a
    /// module of the block (`branch1x1`, `branch2.0`).
    Conv(&'static str, ConvShape),
    MaxPool(Pool),
}

/// One path through an inception block: its steps in sequence, then, where
/// `fork` is not empty, those convolutions side by side on the result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Branch {
    pub ops: Vec<BranchOp>,
    pub fork: Vec<(&'static str, ConvShape)>,
}

impl Branch {
    fn convs(convs: &[(&'static str, ConvShape)]) -> Self {
        Branch {
            ops: convs
                .iter()
                .map(|&(name, shape)| BranchOp::Conv(name, shape))
                .collect(),
            fork: Vec::new(),
        }
    }

    fn pooled(pool: BranchOp, convs: &[(&'static str, ConvShape)]) -> Self {
        let mut branch = Branch::convs(convs);
        branch.ops.insert(0, pool);
        branch
    }

    /// The branch's outputs, concatenated in this order, as torchvision's blocks
    /// concatenate theirs; each forked convolution is an output of its own.
    fn outputs(&self, input: Shape) -> Vec<Shape> {
        let last = self
            .ops
            .iter()
            .fold(input, |shape, op| op.output_shape(shape));
        if self.fork.is_empty() {
            vec![last]
        } else {
            self.fork
                .iter()
                .map(|(_, conv)| conv_output(conv, last))
                .collect()
        }
    }

    /// Elements of every tensor the branch creates, its outputs included.
    fn activation_elements(&self, input: Shape) -> i64 {
        let mut shape = input;
        let mut elements = 0;
        for op in &self.ops {
            shape = op.output_shape(shape);
            elements += match op {
                // conv output, ReLU output
                BranchOp::Conv(..) => 2 * volume(shape),
                BranchOp::MaxPool(_) => volume(shape),
            };
        }
        elements
            + self
                .fork
                .iter()
                .map(|(_, conv)| 2 * volume(conv_output(conv, shape)))
                .sum::<i64>()
    }
}

impl BranchOp {
    fn output_shape(&self, input: Shape) -> Shape {
        match self {
            BranchOp::Conv(_, conv) => conv_output(conv, input),
            BranchOp::MaxPool(pool) => pool_output(pool, input),
        }
    }
}

/// torchvision's inception blocks: branches run on the same input, their outputs
/// concatenated along the channels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InceptionBlock {
    pub branches: Vec<Branch>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LayerSpec {
    /// A convolution with bias (VGG), parameters `{prefix}.weight`, `{prefix}.bias`.
    Conv(ConvShape),
    Relu,
    MaxPool(Pool),
    /// torchvision's `BasicConv2d`: convolution without bias, batch norm (eps 1e-3),
    /// ReLU; parameters `{prefix}.conv.weight`, `{prefix}.bn.*`.
    BasicConv(ConvShape),
    /// Parameters `{prefix}.{conv name}.conv.weight`, `{prefix}.{conv name}.bn.*`.
    Inception(InceptionBlock),
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
    // torchvision's `Inception(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`.
    let inception = |cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj| {
        LayerSpec::Inception(InceptionBlock {
            branches: vec![
                Branch::convs(&[("branch1", ConvShape::new(cin, ch1x1, 1))]),
                Branch::convs(&[
                    ("branch2.0", ConvShape::new(cin, ch3x3red, 1)),
                    ("branch2.1", ConvShape::new(ch3x3red, ch3x3, 3)),
                ]),
                // torchvision's "5x5" branch uses a 3x3 kernel (a known quirk its
                // weights keep).
                Branch::convs(&[
                    ("branch3.0", ConvShape::new(cin, ch5x5red, 1)),
                    ("branch3.1", ConvShape::new(ch5x5red, ch5x5, 3)),
                ]),
                Branch::pooled(
                    BranchOp::MaxPool(Pool {
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                        ceil_mode: true,
                    }),
                    &[("branch4.1", ConvShape::new(cin, pool_proj, 1))],
                ),
            ],
        })
    };
    let specs = [
        LayerSpec::BasicConv(ConvShape {
            cin: 3,
            cout: 64,
            kernel: [7, 7],
            stride: 2,
            padding: [3, 3],
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

fn volume((c, h, w): Shape) -> i64 {
    c * h * w
}

fn conv_out(len: i64, kernel: i64, stride: i64, padding: i64) -> i64 {
    let span = len + 2 * padding - kernel;
    if span < 0 {
        0
    } else {
        span / stride + 1
    }
}

fn conv_output(conv: &ConvShape, (_, h, w): Shape) -> Shape {
    let [kh, kw] = conv.kernel;
    let [ph, pw] = conv.padding;
    (
        conv.cout,
        conv_out(h, kh, conv.stride, ph),
        conv_out(w, kw, conv.stride, pw),
    )
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

fn pool_output(pool: &Pool, (c, h, w): Shape) -> Shape {
    (c, pool_out(h, pool), pool_out(w, pool))
}

impl InceptionBlock {
    fn output_shape(&self, input: Shape) -> Shape {
        let outputs: Vec<Shape> = self
            .branches
            .iter()
            .flat_map(|branch| branch.outputs(input))
            .collect();
        let (_, h, w) = outputs[0];
        debug_assert!(
            outputs.iter().all(|&(_, oh, ow)| (oh, ow) == (h, w)),
            "branches disagree on the size: {outputs:?}"
        );
        (outputs.iter().map(|&(c, _, _)| c).sum(), h, w)
    }
}

impl LayerSpec {
    pub fn output_shape(&self, input: Shape) -> Shape {
        match self {
            LayerSpec::Conv(conv) | LayerSpec::BasicConv(conv) => conv_output(conv, input),
            LayerSpec::Relu => input,
            LayerSpec::MaxPool(pool) => pool_output(pool, input),
            LayerSpec::Inception(block) => block.output_shape(input),
        }
    }

    /// Elements of every tensor the forward pass creates inside this layer, the
    /// output included: what autograd keeps alive for the backward pass.
    pub fn activation_elements(&self, input: Shape) -> i64 {
        let output = volume(self.output_shape(input));
        match self {
            // conv output, batch-norm-folded ReLU output
            LayerSpec::BasicConv(_) => 2 * output,
            // each branch's tensors, then the concatenation
            LayerSpec::Inception(block) => {
                block
                    .branches
                    .iter()
                    .map(|branch| branch.activation_elements(input))
                    .sum::<i64>()
                    + output
            }
            _ => output,
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
