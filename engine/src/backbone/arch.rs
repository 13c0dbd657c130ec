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
        Self::rect(cin, cout, [kernel, kernel])
    }

    /// A `height x width` kernel, stride 1, padded to keep the size: Inception v3
    /// factors its 7x7 and 3x3 convolutions into 1x7 and 7x1, 1x3 and 3x1.
    fn rect(cin: i64, cout: i64, kernel: [i64; 2]) -> Self {
        ConvShape {
            cin,
            cout,
            kernel,
            stride: 1,
            padding: kernel.map(|k| k / 2),
        }
    }

    /// A square kernel without padding: Inception v3's stem and grid reductions.
    fn unpadded(cin: i64, cout: i64, kernel: i64, stride: i64) -> Self {
        ConvShape {
            cin,
            cout,
            kernel: [kernel; 2],
            stride,
            padding: [0; 2],
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
    /// `F.avg_pool2d`: the padding counts in the average (`count_include_pad`).
    AvgPool(Pool),
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

    fn forked(self, fork: Vec<(&'static str, ConvShape)>) -> Self {
        Branch { fork, ..self }
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
                BranchOp::MaxPool(_) | BranchOp::AvgPool(_) => volume(shape),
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
            BranchOp::MaxPool(pool) | BranchOp::AvgPool(pool) => pool_output(pool, input),
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

/// Whether torchvision's model has `transform_input`: GoogLeNet and Inception v3,
/// whose pretrained weights expect inputs scaled to [-1, 1] rather than
/// ImageNet-normalised, and re-normalise them with it.
pub(crate) fn has_transform_input(backbone: Backbone) -> bool {
    matches!(backbone, Backbone::GoogLeNet | Backbone::InceptionV3)
}

pub(crate) fn architecture(backbone: Backbone) -> Vec<ArchLayer> {
    match backbone {
        Backbone::Vgg16 => vgg(&[2, 2, 3, 3, 3], backbone.layers()),
        Backbone::Vgg19 => vgg(&[2, 2, 4, 4, 4], backbone.layers()),
        Backbone::GoogLeNet => named_as_modules(backbone, googlenet()),
        Backbone::InceptionV3 => named_as_modules(backbone, inception_v3()),
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

fn googlenet() -> Vec<LayerSpec> {
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
    vec![
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
    ]
}

/// Layers named as torchvision's modules, their parameters under those names.
fn named_as_modules(backbone: Backbone, specs: Vec<LayerSpec>) -> Vec<ArchLayer> {
    let names = backbone.layers();
    assert_eq!(
        specs.len(),
        names.len(),
        "{backbone} layer names out of step"
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

/// torchvision's `Inception3` without its auxiliary classifier: a stem of
/// unpadded convolutions and max pools, then `InceptionA` to `InceptionE`.
fn inception_v3() -> Vec<LayerSpec> {
    let basic = LayerSpec::BasicConv;
    let pool = || {
        LayerSpec::MaxPool(Pool {
            kernel: 3,
            stride: 2,
            padding: 0,
            ceil_mode: false,
        })
    };
    vec![
        basic(ConvShape::unpadded(3, 32, 3, 2)),
        basic(ConvShape::unpadded(32, 32, 3, 1)),
        basic(ConvShape::new(32, 64, 3)),
        pool(),
        basic(ConvShape::new(64, 80, 1)),
        basic(ConvShape::unpadded(80, 192, 3, 1)),
        pool(),
        inception_a(192, 32),
        inception_a(256, 64),
        inception_a(288, 64),
        inception_b(288),
        inception_c(768, 128),
        inception_c(768, 160),
        inception_c(768, 160),
        inception_c(768, 192),
        inception_d(768),
        inception_e(1280),
        inception_e(2048),
    ]
}

/// The 3x3 average pool (stride 1, padded) before the pool branch's 1x1
/// convolution in `InceptionA`, `InceptionC` and `InceptionE`.
fn average_pool() -> BranchOp {
    BranchOp::AvgPool(Pool {
        kernel: 3,
        stride: 1,
        padding: 1,
        ceil_mode: false,
    })
}

/// The 3x3 stride-2 max pool that is a branch of its own in the grid
/// reductions, `InceptionB` and `InceptionD`.
fn reducing_pool() -> Branch {
    Branch::pooled(
        BranchOp::MaxPool(Pool {
            kernel: 3,
            stride: 2,
            padding: 0,
            ceil_mode: false,
        }),
        &[],
    )
}

/// torchvision's `InceptionA(in_channels, pool_features)`: `Mixed_5b` to `Mixed_5d`.
fn inception_a(cin: i64, pool_features: i64) -> LayerSpec {
    LayerSpec::Inception(InceptionBlock {
        branches: vec![
            Branch::convs(&[("branch1x1", ConvShape::new(cin, 64, 1))]),
            Branch::convs(&[
                ("branch5x5_1", ConvShape::new(cin, 48, 1)),
                ("branch5x5_2", ConvShape::new(48, 64, 5)),
            ]),
            Branch::convs(&[
                ("branch3x3dbl_1", ConvShape::new(cin, 64, 1)),
                ("branch3x3dbl_2", ConvShape::new(64, 96, 3)),
                ("branch3x3dbl_3", ConvShape::new(96, 96, 3)),
            ]),
            Branch::pooled(
                average_pool(),
                &[("branch_pool", ConvShape::new(cin, pool_features, 1))],
            ),
        ],
    })
}

/// torchvision's `InceptionB`: `Mixed_6a`, from 35x35 to 17x17 at 299 px.
fn inception_b(cin: i64) -> LayerSpec {
    LayerSpec::Inception(InceptionBlock {
        branches: vec![
            Branch::convs(&[("branch3x3", ConvShape::unpadded(cin, 384, 3, 2))]),
            Branch::convs(&[
                ("branch3x3dbl_1", ConvShape::new(cin, 64, 1)),
                ("branch3x3dbl_2", ConvShape::new(64, 96, 3)),
                ("branch3x3dbl_3", ConvShape::unpadded(96, 96, 3, 2)),
            ]),
            reducing_pool(),
        ],
    })
}

/// torchvision's `InceptionC(in_channels, channels_7x7)`: `Mixed_6b` to `Mixed_6e`.
fn inception_c(cin: i64, c7: i64) -> LayerSpec {
    LayerSpec::Inception(InceptionBlock {
        branches: vec![
            Branch::convs(&[("branch1x1", ConvShape::new(cin, 192, 1))]),
            Branch::convs(&[
                ("branch7x7_1", ConvShape::new(cin, c7, 1)),
                ("branch7x7_2", ConvShape::rect(c7, c7, [1, 7])),
                ("branch7x7_3", ConvShape::rect(c7, 192, [7, 1])),
            ]),
            Branch::convs(&[
                ("branch7x7dbl_1", ConvShape::new(cin, c7, 1)),
                ("branch7x7dbl_2", ConvShape::rect(c7, c7, [7, 1])),
                ("branch7x7dbl_3", ConvShape::rect(c7, c7, [1, 7])),
                ("branch7x7dbl_4", ConvShape::rect(c7, c7, [7, 1])),
                ("branch7x7dbl_5", ConvShape::rect(c7, 192, [1, 7])),
            ]),
            Branch::pooled(
                average_pool(),
                &[("branch_pool", ConvShape::new(cin, 192, 1))],
            ),
        ],
    })
}

/// torchvision's `InceptionD`: `Mixed_7a`, from 17x17 to 8x8 at 299 px.
fn inception_d(cin: i64) -> LayerSpec {
    LayerSpec::Inception(InceptionBlock {
        branches: vec![
            Branch::convs(&[
                ("branch3x3_1", ConvShape::new(cin, 192, 1)),
                ("branch3x3_2", ConvShape::unpadded(192, 320, 3, 2)),
            ]),
            Branch::convs(&[
                ("branch7x7x3_1", ConvShape::new(cin, 192, 1)),
                ("branch7x7x3_2", ConvShape::rect(192, 192, [1, 7])),
                ("branch7x7x3_3", ConvShape::rect(192, 192, [7, 1])),
                ("branch7x7x3_4", ConvShape::unpadded(192, 192, 3, 2)),
            ]),
            reducing_pool(),
        ],
    })
}

/// torchvision's `InceptionE`: `Mixed_7b`, `Mixed_7c`. Two branches end in a
/// 1x3 and a 3x1 convolution of the same input, side by side.
fn inception_e(cin: i64) -> LayerSpec {
    let split = |[across, down]: [&'static str; 2]| {
        vec![
            (across, ConvShape::rect(384, 384, [1, 3])),
            (down, ConvShape::rect(384, 384, [3, 1])),
        ]
    };
    LayerSpec::Inception(InceptionBlock {
        branches: vec![
            Branch::convs(&[("branch1x1", ConvShape::new(cin, 320, 1))]),
            Branch::convs(&[("branch3x3_1", ConvShape::new(cin, 384, 1))])
                .forked(split(["branch3x3_2a", "branch3x3_2b"])),
            Branch::convs(&[
                ("branch3x3dbl_1", ConvShape::new(cin, 448, 1)),
                ("branch3x3dbl_2", ConvShape::new(448, 384, 3)),
            ])
            .forked(split(["branch3x3dbl_3a", "branch3x3dbl_3b"])),
            Branch::pooled(
                average_pool(),
                &[("branch_pool", ConvShape::new(cin, 192, 1))],
            ),
        ],
    })
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

    fn shapes_at(backbone: Backbone, side: i64) -> Vec<(&'static str, Shape)> {
        let mut shape = (3, side, side);
        architecture(backbone)
            .iter()
            .map(|layer| {
                shape = layer.spec.output_shape(shape);
                (layer.name, shape)
            })
            .collect()
    }

    #[test]
    fn inception_v3_shapes_are_torchvisions_at_299_px() {
        // The sizes torchvision's Inception3._forward notes, layer by layer.
        let seen: std::collections::HashMap<_, _> =
            shapes_at(Backbone::InceptionV3, 299).into_iter().collect();
        assert_eq!(seen["Conv2d_1a_3x3"], (32, 149, 149));
        assert_eq!(seen["Conv2d_2a_3x3"], (32, 147, 147));
        assert_eq!(seen["Conv2d_2b_3x3"], (64, 147, 147));
        assert_eq!(seen["maxpool1"], (64, 73, 73));
        assert_eq!(seen["Conv2d_3b_1x1"], (80, 73, 73));
        assert_eq!(seen["Conv2d_4a_3x3"], (192, 71, 71));
        assert_eq!(seen["maxpool2"], (192, 35, 35));
        assert_eq!(seen["Mixed_5b"], (256, 35, 35));
        assert_eq!(seen["Mixed_5d"], (288, 35, 35));
        assert_eq!(seen["Mixed_6a"], (768, 17, 17));
        assert_eq!(seen["Mixed_6e"], (768, 17, 17));
        assert_eq!(seen["Mixed_7a"], (1280, 8, 8));
        assert_eq!(seen["Mixed_7b"], (2048, 8, 8));
        assert_eq!(seen["Mixed_7c"], (2048, 8, 8));
    }

    #[test]
    fn every_layer_has_pixels_at_the_smallest_size_and_not_below() {
        for backbone in Backbone::ALL {
            let min = i64::from(backbone.min_size());
            let empty = |side| {
                shapes_at(backbone, side)
                    .into_iter()
                    .find(|(_, (_, h, w))| *h < 1 || *w < 1)
            };
            assert_eq!(empty(min), None, "{backbone} at {min} px");
        }
        // torchvision's 75 px is Inception v3's smallest input, not merely a safe one.
        assert_eq!(
            shapes_at(Backbone::InceptionV3, 74).last().unwrap(),
            &("Mixed_7c", (2048, 0, 0))
        );
    }

    #[test]
    fn inception_v3_parameters_use_torchvision_names() {
        let layers = architecture(Backbone::InceptionV3);
        let mixed_7b = layers.iter().find(|l| l.name == "Mixed_7b").unwrap();
        let LayerSpec::Inception(block) = &mixed_7b.spec else {
            panic!("Mixed_7b is an inception block");
        };
        let names: Vec<&str> = block
            .branches
            .iter()
            .flat_map(|b| {
                let ops = b.ops.iter().filter_map(|op| match op {
                    BranchOp::Conv(name, _) => Some(*name),
                    _ => None,
                });
                ops.chain(b.fork.iter().map(|(name, _)| *name))
            })
            .collect();
        assert_eq!(
            names,
            [
                "branch1x1",
                "branch3x3_1",
                "branch3x3_2a",
                "branch3x3_2b",
                "branch3x3dbl_1",
                "branch3x3dbl_2",
                "branch3x3dbl_3a",
                "branch3x3dbl_3b",
                "branch_pool",
            ]
        );
        assert_eq!(mixed_7b.param_prefix, "Mixed_7b");
    }
}
