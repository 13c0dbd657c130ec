//! A task's style: one image, or a blend of several (neural-style's
//! `-style_blend_weights`), whose style target at each layer is the weighted sum
//! of the images' Gram matrices.
//!
//! A grid writes a blend as one value of `style`:
//!
//! ```toml
//! style = ["starry_night.jpg", { blend = ["starry_night.jpg", "the_scream.jpg"], weights = [3, 1] }]
//! ```
//!
//! Weights are relative: they are divided by their sum (without `weights`, the
//! images count equally). The farm passes a style around as text (a task's
//! `style_key`): an image's key or path as it is, a blend as
//! `blend:0.75=KEY|0.25=KEY` ([`Style`]'s `Display` and [`Style::parse`]).

use std::fmt;

use crate::grid::input_digest;

/// What starts the text of a blend.
const BLEND: &str = "blend:";

/// One image, or a blend: images with weights that sum to 1, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Style {
    parts: Vec<(String, f64)>,
}

impl Style {
    /// One image (its path, key or URL).
    pub fn image(image: impl Into<String>) -> Style {
        Style {
            parts: vec![(image.into(), 1.0)],
        }
    }

    /// A blend of `parts` (image, relative weight); an image given twice counts
    /// with the sum of its weights, and a blend of one image is that image.
    pub fn blend(parts: impl IntoIterator<Item = (String, f64)>) -> Result<Style, String> {
        Style::merged(parts)?.normalised()
    }

    /// `parts` checked, each image once.
    fn merged(parts: impl IntoIterator<Item = (String, f64)>) -> Result<Style, String> {
        let mut merged: Vec<(String, f64)> = Vec::new();
        for (image, weight) in parts {
            if image.trim().is_empty() {
                return Err("an empty name names no file".into());
            }
            if !(weight.is_finite() && weight > 0.0) {
                return Err(format!(
                    "blend weights must be positive numbers, got {weight} for {image}"
                ));
            }
            match merged.iter_mut().find(|(seen, _)| *seen == image) {
                Some((_, sum)) => *sum += weight,
                None => merged.push((image, weight)),
            }
        }
        if merged.is_empty() {
            return Err("a blend needs at least one image".into());
        }
        if merged.len() > 1 {
            if let Some((image, _)) = merged.iter().find(|(image, _)| image.contains('|')) {
                return Err(format!("'{image}': a blended image's name cannot hold |"));
            }
        }
        Ok(Style { parts: merged })
    }

    /// The weights divided by their sum, summed in an order that does not depend
    /// on how the images were listed (the task id must not either).
    fn normalised(mut self) -> Result<Style, String> {
        let mut weights: Vec<f64> = self.parts.iter().map(|(_, w)| *w).collect();
        weights.sort_unstable_by(f64::total_cmp);
        let total: f64 = weights.iter().sum();
        if !total.is_finite() {
            return Err("blend weights are too large to add up".into());
        }
        for (_, weight) in &mut self.parts {
            *weight /= total;
        }
        if self.parts.len() == 1 {
            self.parts[0].1 = 1.0;
        }
        Ok(self)
    }

    /// Reads what [`Display`](fmt::Display) writes; any other text is one image.
    pub fn parse(text: &str) -> Result<Style, String> {
        let Some(parts) = text.strip_prefix(BLEND) else {
            return Ok(Style::image(text));
        };
        let parts = parts
            .split('|')
            .map(|part| {
                let (weight, image) = part
                    .split_once('=')
                    .ok_or_else(|| format!("'{part}' is not WEIGHT=IMAGE"))?;
                let weight = weight
                    .parse::<f64>()
                    .map_err(|_| format!("'{weight}' is not a blend weight"))?;
                Ok((image.to_owned(), weight))
            })
            .collect::<Result<Vec<_>, String>>()
            .and_then(Style::merged)
            .map_err(|e| format!("style '{text}': {e}"))?;
        // Written normalised: kept as written, so that the text reads back as it
        // was (dividing again by a sum a last bit off 1 would not).
        let total: f64 = parts.images().map(|(_, w)| w).sum();
        if (total - 1.0).abs() < 1e-9 {
            Ok(parts)
        } else {
            parts.normalised()
        }
    }

    /// The images and their weights (1 for a single image).
    pub fn images(&self) -> impl Iterator<Item = (&str, f64)> {
        self.parts
            .iter()
            .map(|(image, weight)| (image.as_str(), *weight))
    }

    pub fn is_blend(&self) -> bool {
        self.parts.len() > 1
    }

    /// The same style with each image renamed (a path by its store key).
    pub fn map_images(&self, mut rename: impl FnMut(&str) -> String) -> Style {
        Style {
            parts: self
                .parts
                .iter()
                .map(|(image, weight)| (rename(image), *weight))
                .collect(),
        }
    }

    /// What identifies the style in a task id: an image's content digest (see
    /// [`input_digest`]); for a blend, its images' digests with their weights,
    /// in an order that does not depend on how the grid listed them.
    pub fn digest(&self) -> String {
        if !self.is_blend() {
            return input_digest(&self.parts[0].0).to_owned();
        }
        let mut parts: Vec<String> = self
            .parts
            .iter()
            .map(|(image, weight)| format!("{weight}={}", input_digest(image)))
            .collect();
        parts.sort_unstable_by(|a, b| {
            let image = |p: &str| p.split_once('=').map(|(_, i)| i.to_owned());
            image(a).cmp(&image(b)).then_with(|| a.cmp(b))
        });
        format!("{BLEND}{}", parts.join("|"))
    }

    /// As people read it: `starry.jpg`, or `starry.jpg 75% + scream.jpg 25%`,
    /// each image named by `name`.
    pub fn label(&self, name: impl Fn(&str) -> String) -> String {
        if !self.is_blend() {
            return name(&self.parts[0].0);
        }
        self.parts
            .iter()
            .map(|(image, weight)| format!("{} {}%", name(image), percent(*weight)))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// `0.75` as `75`, `1/3` as `33.3`.
fn percent(weight: f64) -> String {
    let percent = (weight * 1000.0).round() / 10.0;
    format!("{percent}")
}

impl fmt::Display for Style {
    /// An image as it is; a blend as `blend:0.75=KEY|0.25=KEY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_blend() {
            return f.write_str(&self.parts[0].0);
        }
        f.write_str(BLEND)?;
        for (i, (image, weight)) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            write!(f, "{weight}={image}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blend(parts: &[(&str, f64)]) -> Result<Style, String> {
        Style::blend(parts.iter().map(|(i, w)| (i.to_string(), *w)))
    }

    #[test]
    fn weights_are_relative_and_a_blend_of_one_image_is_that_image() {
        let style = blend(&[("a.jpg", 3.0), ("b.png", 1.0)]).unwrap();
        let parts: Vec<(&str, f64)> = style.images().collect();
        assert_eq!(parts, [("a.jpg", 0.75), ("b.png", 0.25)]);
        assert_eq!(blend(&[("a.jpg", 2.0)]).unwrap(), Style::image("a.jpg"));
        assert_eq!(
            blend(&[("a.jpg", 1.0), ("a.jpg", 1.0)]).unwrap(),
            Style::image("a.jpg")
        );
        assert!(blend(&[("a.jpg", 0.0)]).unwrap_err().contains("positive"));
        assert!(blend(&[]).is_err());
    }

    #[test]
    fn the_order_of_a_blends_images_changes_nothing() {
        // 0.1 + 0.2 + 0.7 is 1, 0.7 + 0.2 + 0.1 a last bit less.
        let names = ["a", "b", "c", "d"].map(|n| format!("inputs/{n}.jpg"));
        let parts: Vec<(String, f64)> = names.iter().cloned().zip([0.1, 0.2, 0.7]).collect();
        let forward = Style::blend(parts.clone()).unwrap();
        let backward = Style::blend(parts.into_iter().rev()).unwrap();
        assert_eq!(forward.digest(), backward.digest());
        for style in [forward, backward] {
            assert_eq!(Style::parse(&style.to_string()).unwrap(), style);
        }
        // Weights of every small blend of integers read back as they were written.
        for weights in [
            [4.0, 3.0, 6.0, 7.0],
            [1.0, 1.0, 1.0, 7.0],
            [3.0, 5.0, 9.0, 11.0],
        ] {
            let style = Style::blend(names.iter().cloned().zip(weights)).unwrap();
            assert_eq!(Style::parse(&style.to_string()).unwrap(), style);
        }
    }

    #[test]
    fn a_single_image_may_hold_any_character() {
        assert_eq!(
            Style::blend([("a|b.jpg".to_owned(), 1.0)]).unwrap(),
            Style::image("a|b.jpg")
        );
        let err = blend(&[("a|b.jpg", 1.0), ("c.jpg", 1.0)]).unwrap_err();
        assert!(err.contains("cannot hold |"), "{err}");
        assert!(blend(&[("a.jpg", 1e308), ("b.jpg", 1e308)]).is_err());
    }

    #[test]
    fn the_text_form_reads_back() {
        let style = blend(&[("inputs/a.jpg", 1.0), ("s3://b/c.png", 2.0)]).unwrap();
        let text = style.to_string();
        assert!(text.starts_with("blend:"), "{text}");
        assert_eq!(Style::parse(&text).unwrap(), style);
        assert_eq!(
            Style::parse("art/x.jpg").unwrap(),
            Style::image("art/x.jpg")
        );
        assert_eq!(Style::image("art/x.jpg").to_string(), "art/x.jpg");
        assert!(Style::parse("blend:heavy=a.jpg").is_err());
    }

    #[test]
    fn a_blend_is_identified_by_its_images_contents_in_any_order() {
        let (a, b) = (format!("inputs/{}.jpg", "a".repeat(64)), "inputs/x.png");
        let one = blend(&[(&a, 1.0), (b, 3.0)]).unwrap();
        let other = blend(&[(b, 0.75), (&a, 0.25)]).unwrap();
        assert_eq!(one.digest(), other.digest());
        assert_ne!(
            one.digest(),
            blend(&[(&a, 3.0), (b, 1.0)]).unwrap().digest()
        );
        assert_eq!(Style::image(a.as_str()).digest(), "a".repeat(64));
    }

    #[test]
    fn blends_are_labelled_with_names_and_shares() {
        let style = blend(&[("art/starry.jpg", 2.0), ("art/scream.jpg", 1.0)]).unwrap();
        let name = |image: &str| image.rsplit('/').next().unwrap().to_owned();
        assert_eq!(style.label(name), "starry.jpg 66.7% + scream.jpg 33.3%");
        assert_eq!(Style::image("art/starry.jpg").label(name), "starry.jpg");
    }
}
