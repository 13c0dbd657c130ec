//! The Gatys losses, normalised as in the PyTorch neural-style tutorial:
//!
//! - content  L_c = sum_l mean((F_l(x) - F_l(c))^2)
//! - Gram     G_l(x) = F_l(x) F_l(x)^T / (C H W)
//! - style    L_s = sum_l w_l mean((G_l(x) - G_l(s))^2)
//! - TV(x)    = mean of squared vertical differences + mean of squared horizontal ones
//! - total    L = alpha L_c + beta L_s + gamma TV
//!
//! beta is given, or chosen once per render (`style_weight = "auto"`, see
//! [`StyleWeight`]).

use pastiche_spec::{LossRecord, RenderParams, StyleWeight};
use tch::{Kind, Reduction, Tensor};

use crate::backbone::FeatureNet;
use crate::error::{EngineError, Result};

/// `[1, C, H, W]` features to their `[C, C]` Gram matrix divided by C H W.
pub fn gram(features: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = features.size4()?;
    let flat = features.f_reshape([n * c, h * w])?;
    Ok(flat
        .f_mm(&flat.f_tr()?)?
        .f_div_scalar((n * c * h * w) as f64)?)
}

pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.f_mse_loss(b, Reduction::Mean)?)
}

/// Total variation of a `[N, C, H, W]` image: the mean squared difference between
/// vertical neighbours plus that between horizontal ones.
pub fn total_variation(image: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = image.size4()?;
    let dy = image
        .f_narrow(2, 1, h - 1)?
        .f_sub(&image.f_narrow(2, 0, h - 1)?)?;
    let dx = image
        .f_narrow(3, 1, w - 1)?
        .f_sub(&image.f_narrow(3, 0, w - 1)?)?;
    Ok(dy
        .f_square()?
        .f_mean(None)?
        .f_add(&dx.f_square()?.f_mean(None)?)?)
}

/// The weighted terms of the loss at one point: alpha L_c, beta L_s, gamma TV, total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossTerms {
    pub content: f64,
    pub style: f64,
    pub tv: f64,
    pub total: f64,
}

impl LossTerms {
    pub fn at(self, iteration: u32) -> LossRecord {
        LossRecord {
            iteration,
            content: self.content,
            style: self.style,
            tv: self.tv,
            total: self.total,
        }
    }
}

/// The loss of one render: its targets, computed once without grad, and its weights.
pub struct GatysLoss<'net> {
    net: &'net FeatureNet,
    /// Layers to extract, ascending and without repeats (indices into the backbone).
    layers: Vec<usize>,
    /// (position in `layers`, F_l(c))
    content_targets: Vec<(usize, Tensor)>,
    /// (position in `layers`, G_l(s), w_l)
    style_targets: Vec<(usize, Tensor, f64)>,
    alpha: f64,
    beta: f64,
    gamma: f64,
}

impl<'net> GatysLoss<'net> {
    /// `content` and the style images are `[1, 3, H, W]` images in [0, 1] on the
    /// net's device; the style target of a layer is the sum of the images' Gram
    /// matrices, each times its blend weight.
    pub fn new(
        net: &'net FeatureNet,
        params: &RenderParams,
        content: &Tensor,
        styles: &[(Tensor, f64)],
    ) -> Result<Self> {
        let backbone = net.backbone();
        let content_layers = params
            .content_layers
            .iter()
            .map(|name| backbone.layer_index(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(pastiche_spec::ParamError::from)?;
        let style_layers = params
            .style_layers
            .iter()
            .map(|layer| Ok((backbone.layer_index(&layer.name)?, layer.weight)))
            .collect::<Result<Vec<_>, pastiche_spec::LayerError>>()
            .map_err(pastiche_spec::ParamError::from)?;
        let mut layers: Vec<usize> = content_layers
            .iter()
            .copied()
            .chain(style_layers.iter().map(|(i, _)| *i))
            .collect();
        layers.sort_unstable();
        layers.dedup();
        let position = |index: usize| layers.binary_search(&index).expect("collected above");

        let (content_targets, style_targets) = tch::no_grad(|| -> Result<_> {
            let of_content = net.extract(content, &layers)?;
            let content_targets = content_layers
                .iter()
                .map(|&i| (position(i), of_content[position(i)].shallow_clone()))
                .collect();
            let mut grams: Vec<Option<Tensor>> = style_layers.iter().map(|_| None).collect();
            for (style, blend_weight) in styles {
                let of_style = net.extract(style, &layers)?;
                for (sum, &(i, _)) in grams.iter_mut().zip(&style_layers) {
                    let term = gram(&of_style[position(i)])?.f_mul_scalar(*blend_weight)?;
                    *sum = Some(match sum.take() {
                        None => term,
                        Some(sum) => sum.f_add(&term)?,
                    });
                }
            }
            let style_targets = style_layers
                .iter()
                .zip(grams)
                .map(|(&(i, w), gram)| (position(i), gram.expect("a style has an image"), w))
                .collect();
            Ok((content_targets, style_targets))
        })?;
        let mut loss = GatysLoss {
            net,
            layers,
            content_targets,
            style_targets,
            alpha: params.content_weight,
            beta: 1.0,
            gamma: params.tv_weight,
        };
        loss.beta = match params.style_weight {
            StyleWeight::Fixed(beta) => beta,
            StyleWeight::Auto { ratio } => ratio * loss.balance(content, styles)?,
        };
        Ok(loss)
    }

    /// beta, the style loss's weight: as given, or as `auto` chose it.
    pub fn style_weight(&self) -> f64 {
        self.beta
    }

    /// Sets beta, as a resumed render's checkpoint recorded it.
    pub fn set_style_weight(&mut self, beta: f64) {
        self.beta = beta;
    }

    /// The beta of `style_weight = "auto"` (see [`StyleWeight`]): `alpha L_c` of
    /// the style images (each resized to the content's size, weighted as in the
    /// blend) over `L_s` of the content image. Each term is then measured in units
    /// of the distance between the two images, and neither outweighs the other
    /// whatever the images' contrast or the layers' scales.
    fn balance(&self, content: &Tensor, styles: &[(Tensor, f64)]) -> Result<f64> {
        debug_assert_eq!(self.beta, 1.0, "measured unweighted");
        let (_, _, height, width) = content.size4()?;
        tch::no_grad(|| {
            let style_at_content = Self::to_host(&self.terms(content)?)?.style;
            let mut content_at_style = 0.0;
            for (style, blend_weight) in styles {
                let resized = style.f_upsample_bilinear2d([height, width], false, None, None)?;
                content_at_style += blend_weight * Self::to_host(&self.terms(&resized)?)?.content;
            }
            if !(content_at_style.is_finite() && content_at_style > 0.0) {
                return Err(EngineError::Unbalanced(
                    "the style image has the content image's features",
                ));
            }
            if !(style_at_content.is_finite() && style_at_content > 0.0) {
                return Err(EngineError::Unbalanced(
                    "the content image already has the style's Gram matrices",
                ));
            }
            Ok(content_at_style / style_at_content)
        })
    }

    /// alpha L_c, beta L_s, gamma TV and their sum, as scalar tensors.
    fn terms(&self, image: &Tensor) -> Result<[Tensor; 4]> {
        let features = self.net.extract(image, &self.layers)?;
        self.terms_of(&features, image)
    }

    /// [`terms`](Self::terms) from `image`'s features, already extracted.
    fn terms_of(&self, features: &[Tensor], image: &Tensor) -> Result<[Tensor; 4]> {
        let zero = || Tensor::f_zeros([], (Kind::Float, image.device()));
        let mut content = zero()?;
        for (at, target) in &self.content_targets {
            content = content.f_add(&mse(&features[*at], target)?)?;
        }
        let mut style = zero()?;
        for (at, target, weight) in &self.style_targets {
            style = style.f_add(&mse(&gram(&features[*at])?, target)?.f_mul_scalar(*weight)?)?;
        }
        let content = content.f_mul_scalar(self.alpha)?;
        let style = style.f_mul_scalar(self.beta)?;
        // TV needs no feature maps; skip it when it does not count.
        let tv = if self.gamma == 0.0 {
            zero()?
        } else {
            total_variation(image)?.f_mul_scalar(self.gamma)?
        };
        let total = content.f_add(&style)?.f_add(&tv)?;
        Ok([content, style, tv, total])
    }

    fn to_host(terms: &[Tensor; 4]) -> Result<LossTerms> {
        Ok(Self::to_host_batch(std::slice::from_ref(terms))?.remove(0))
    }

    /// The loss at `image` and its gradient with respect to the image (and nothing
    /// else: the network's weights never require grad).
    pub fn evaluate(&self, image: &Tensor) -> Result<(LossTerms, Tensor)> {
        let mut evaluated = Self::evaluate_batch(&[(self, image)])?;
        Ok(evaluated.remove(0))
    }

    /// [`evaluate`](Self::evaluate) for each of several renders' losses at its
    /// image, in as few batches as can be: one for the items of each image size
    /// and set of layers ([`evaluate_batch`](Self::evaluate_batch)), in the
    /// order they first appear. A batch that fails (out of memory, say) is
    /// evaluated again an item at a time, so that each item gets its own
    /// outcome. Results come in the items' order.
    pub fn evaluate_many(items: &[(&Self, &Tensor)]) -> Vec<Result<(LossTerms, Tensor)>> {
        let mut groups: Vec<(Vec<i64>, &[usize], Vec<usize>)> = Vec::new();
        for (index, (loss, image)) in items.iter().enumerate() {
            let size = image.size();
            match groups
                .iter_mut()
                .find(|(s, layers, _)| *s == size && *layers == loss.layers.as_slice())
            {
                Some((_, _, members)) => members.push(index),
                None => groups.push((size, &loss.layers, vec![index])),
            }
        }
        let mut results: Vec<Option<Result<(LossTerms, Tensor)>>> =
            items.iter().map(|_| None).collect();
        for (_, _, members) in groups {
            let batch: Vec<_> = members.iter().map(|&i| items[i]).collect();
            match Self::evaluate_batch(&batch) {
                Ok(evaluated) => {
                    for (&i, evaluated) in members.iter().zip(evaluated) {
                        results[i] = Some(Ok(evaluated));
                    }
                }
                Err(_) if members.len() > 1 => {
                    for &i in &members {
                        results[i] =
                            Some(Self::evaluate_batch(&[items[i]]).map(|mut e| e.remove(0)));
                    }
                }
                Err(err) => results[members[0]] = Some(Err(err)),
            }
        }
        results
            .into_iter()
            .map(|result| result.expect("every item is in a group"))
            .collect()
    }

    /// [`evaluate`](Self::evaluate) for several renders' losses, each at its
    /// `[1, 3, H, W]` image, in one forward and one backward pass over the
    /// images stacked into a batch. The losses share a net and their layers,
    /// and the images their size. An item's terms and gradient are its own: the
    /// backbone treats each image of a batch apart (no batch normalisation), and
    /// the gradient of the sum of the items' totals with respect to an item's
    /// image is the gradient of its own total.
    pub fn evaluate_batch(items: &[(&Self, &Tensor)]) -> Result<Vec<(LossTerms, Tensor)>> {
        let (first, _) = items.first().expect("a batch has an item");
        for (loss, _) in items {
            assert!(
                std::ptr::eq(loss.net, first.net) && loss.layers == first.layers,
                "a batch's losses share their net and layers"
            );
        }
        let images = items
            .iter()
            .map(|(_, image)| image.f_detach())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let leaf = Tensor::f_cat(&images, 0)?.set_requires_grad(true);
        let features = first.net.extract(&leaf, &first.layers)?;
        let mut terms = Vec::with_capacity(items.len());
        for (index, (loss, _)) in items.iter().enumerate() {
            let index = index as i64;
            let own = features
                .iter()
                .map(|f| f.f_narrow(0, index, 1))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            terms.push(loss.terms_of(&own, &leaf.f_narrow(0, index, 1)?)?);
        }
        let totals = Tensor::f_stack(&terms.iter().map(|t| &t[3]).collect::<Vec<_>>(), 0)?;
        let mut grads =
            Tensor::f_run_backward(&[&totals.f_sum(Kind::Float)?], &[&leaf], false, false)?;
        let grad = grads.remove(0);
        let values = Self::to_host_batch(&terms)?;
        values
            .into_iter()
            .enumerate()
            .map(|(index, values)| Ok((values, grad.f_narrow(0, index as i64, 1)?)))
            .collect()
    }

    /// Several items' terms, copied to the host at once.
    fn to_host_batch(terms: &[[Tensor; 4]]) -> Result<Vec<LossTerms>> {
        let flat: Vec<&Tensor> = terms.iter().flatten().collect();
        let values = Vec::<f64>::try_from(Tensor::f_stack(&flat, 0)?.f_to_kind(Kind::Double)?)?;
        Ok(values
            .chunks_exact(4)
            .map(|v| LossTerms {
                content: v[0],
                style: v[1],
                tv: v[2],
                total: v[3],
            })
            .collect())
    }

    /// The loss at `image`, without a backward pass.
    pub fn measure(&self, image: &Tensor) -> Result<LossTerms> {
        tch::no_grad(|| Self::to_host(&self.terms(image)?))
    }
}
