//! Text on the contact sheet: an embedded 8x8 bitmap font, so that the report
//! builds and renders on a machine without any font installed.

use image::{Rgb, RgbImage};

/// A glyph's side, in pixels at scale 1.
pub(crate) const GLYPH: u32 = 8;

/// How wide `text` is at `scale`.
pub(crate) fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Draws `text` with its top-left corner at (`x`, `y`), clipped to the image.
/// Characters outside ASCII are drawn as `?`.
pub(crate) fn draw_text(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    text: &str,
    scale: u32,
    color: Rgb<u8>,
) {
    let scale = i64::from(scale.max(1));
    for (n, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        let left = x + n as i64 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = left + col * scale + dx;
                        let py = y + row as i64 * scale + dy;
                        if px >= 0
                            && py >= 0
                            && (px as u32) < img.width()
                            && (py as u32) < img.height()
                        {
                            img.put_pixel(px as u32, py as u32, color);
                        }
                    }
                }
            }
        }
    }
}

/// Text laid out to fit a width: one line at scale 2 when it fits, else up to
/// `max_lines` lines at scale 1, the last cut short with `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fitted {
    pub scale: u32,
    pub lines: Vec<String>,
}

impl Fitted {
    pub(crate) fn height(&self) -> u32 {
        let n = self.lines.len() as u32;
        n * GLYPH * self.scale + n.saturating_sub(1) * 2
    }
}

pub(crate) fn fit(text: &str, width: u32, max_lines: usize) -> Fitted {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text_width(&text, 2) <= width {
        return Fitted {
            scale: 2,
            lines: vec![text],
        };
    }
    wrap(&text, width, max_lines)
}

/// Text at scale 1 in up to `max_lines` lines of `width`, the last cut short with `..`.
pub(crate) fn wrap(text: &str, width: u32, max_lines: usize) -> Fitted {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let per_line = (width / GLYPH).max(1) as usize;
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = chars.chunks(per_line).map(|c| c.iter().collect()).collect();
    if lines.len() > max_lines.max(1) {
        lines.truncate(max_lines.max(1));
        let last = lines.last_mut().expect("one line at least");
        let keep: String = last.chars().take(per_line.saturating_sub(2)).collect();
        *last = format!("{keep}..");
    }
    Fitted { scale: 1, lines }
}

/// Draws fitted text centred horizontally in `[x, x + width)`, from `y` down.
pub(crate) fn draw_fitted(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    width: u32,
    text: &Fitted,
    color: Rgb<u8>,
) {
    let line_h = i64::from(GLYPH * text.scale + 2);
    for (i, line) in text.lines.iter().enumerate() {
        let w = text_width(line, text.scale);
        let left = x + (i64::from(width) - i64::from(w)).max(0) / 2;
        draw_text(img, left, y + i as i64 * line_h, line, text.scale, color);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_and_clipped() {
        let mut img = RgbImage::from_pixel(40, 20, Rgb([255, 255, 255]));
        draw_text(&mut img, 0, 0, "H", 2, Rgb([0, 0, 0]));
        let dark = img.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        assert!(dark > 20, "{dark} pixels");
        assert!(img.get_pixel(20, 0).0 == [255, 255, 255]);
        // Off the edges: no panic.
        draw_text(&mut img, -10, 15, "xyz\u{e9}", 3, Rgb([0, 0, 0]));
    }

    #[test]
    fn long_text_wraps_and_is_cut() {
        assert_eq!(fit("vgg16", 160, 2).scale, 2);
        let f = fit("relu1_1,relu2_1,relu3_1,relu4_1,relu5_1", 80, 2);
        assert_eq!(f.scale, 1);
        assert_eq!(f.lines, ["relu1_1,re", "lu2_1,re.."]);
        assert_eq!(f.height(), 18);
    }
}
