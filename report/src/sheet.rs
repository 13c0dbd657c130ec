//! The contact sheet: every pastiche of the job on one PNG grid, rows and columns
//! labelled by the parameters that vary, the content and style images at the edges.
//!
//! ```text
//! +--------------------------------------------------------------+
//! | title: job name; rows: a; columns: b x c                     |  TITLE_H
//! +------------------+-----------+-----------+-------------------+
//! | corner: content  | b=1, c=x  | b=1, c=y  | ...               |  column header
//! | and style images | (style)   |           |                   |
//! +------------------+-----------+-----------+-------------------+
//! | row header a=1   | cell      | cell      |                   |  CELL_H
//! | (content image)  | thumb +   |           |                   |
//! |                  | caption   |           |                   |
//! +------------------+-----------+-----------+-------------------+
//!    ROW_HEADER_W       CELL_W
//! ```

use std::collections::HashMap;
use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage};

use crate::axes::{format_number, Axes, Label, Param, SheetAxes};
use crate::font::{self, draw_fitted, draw_text, fit};
use crate::load::{self, JobData, TaskData, THUMB};
use crate::{Outcome, ReportError, ReportJob};

pub(crate) const PAD: u32 = 8;
/// Two caption lines at scale 1 below each thumbnail.
pub(crate) const CAPTION_H: u32 = 20;
pub(crate) const CELL_W: u32 = THUMB + 2 * PAD;
pub(crate) const CELL_H: u32 = PAD + THUMB + 4 + CAPTION_H + PAD;
pub(crate) const ROW_HEADER_W: u32 = 224;
/// The content and style images where they label a row, a column or the corner.
pub(crate) const HEAD_THUMB: u32 = 96;
/// One label in a header: the parameter's name at scale 1, then its value (a line
/// at scale 2, or two at scale 1).
pub(crate) const LINE_H: u32 = font::GLYPH + 2 + 18 + 4;
pub(crate) const TITLE_H: u32 = 48;
/// The corner with the job's single content and/or style image.
pub(crate) const CORNER_H: u32 = PAD + HEAD_THUMB + 4 + font::GLYPH + PAD;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const MUTED: Rgb<u8> = Rgb([90, 90, 90]);
const RULE: Rgb<u8> = Rgb([210, 210, 210]);
const LETTERBOX: Rgb<u8> = Rgb([236, 236, 236]);
pub(crate) const MARKED: Rgb<u8> = Rgb([185, 185, 185]);
const PENDING: Rgb<u8> = Rgb([225, 225, 225]);
pub(crate) const CROSS: Rgb<u8> = Rgb([210, 25, 25]);

/// The height of the column header band.
pub(crate) fn col_header_height(col_axes: usize, image_in_cols: bool, corner_images: bool) -> u32 {
    let image = if image_in_cols { HEAD_THUMB + 4 } else { 0 };
    let labels = PAD + image + col_axes as u32 * LINE_H + PAD;
    let corner = if corner_images { CORNER_H } else { 0 };
    labels.max(corner).max(2 * PAD + LINE_H)
}

/// Where each task sits: (row, column) of the grid.
pub(crate) struct Grid {
    pub rows: Vec<Vec<usize>>,
    pub cols: Vec<Vec<usize>>,
    pub cell_of_task: Vec<(usize, usize)>,
}

impl Grid {
    pub(crate) fn new(axes: &Axes, layout: &SheetAxes, tasks: usize) -> Grid {
        let rows = axes.combinations(&layout.rows, tasks);
        let cols = axes.combinations(&layout.cols, tasks);
        let index = |combos: &[Vec<usize>]| -> HashMap<Vec<usize>, usize> {
            combos
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, k)| (k, i))
                .collect()
        };
        let (row_index, col_index) = (index(&rows), index(&cols));
        let cell_of_task = (0..tasks)
            .map(|t| {
                (
                    row_index[&axes.key(&layout.rows, t)],
                    col_index[&axes.key(&layout.cols, t)],
                )
            })
            .collect();
        Grid {
            rows,
            cols,
            cell_of_task,
        }
    }
}

/// The contact sheet as a PNG.
pub(crate) fn contact_sheet(
    job: &ReportJob,
    axes: &Axes,
    layout: &SheetAxes,
    data: &JobData<'_>,
) -> Result<Vec<u8>, ReportError> {
    let img = draw(job, axes, layout, data);
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)?;
    Ok(png)
}

fn draw(job: &ReportJob, axes: &Axes, layout: &SheetAxes, data: &JobData<'_>) -> RgbImage {
    let grid = Grid::new(axes, layout, data.tasks.len());
    let image_in = |list: &[usize]| list.iter().any(|&a| axes.varied[a].param.is_image());
    let corner: Vec<(&str, &str)> = match data.tasks.first() {
        None => vec![],
        Some(first) => [
            (Param::Content, "content", first.task.content_key.as_str()),
            (Param::Style, "style", first.task.style_key.as_str()),
        ]
        .into_iter()
        .filter(|(param, _, _)| axes.find(*param).is_none())
        .map(|(_, label, key)| (label, key))
        .collect(),
    };
    let header_h = col_header_height(
        layout.cols.len(),
        image_in(&layout.cols),
        !corner.is_empty(),
    );
    let width = ROW_HEADER_W + grid.cols.len().max(1) as u32 * CELL_W;
    let height = TITLE_H + header_h + grid.rows.len() as u32 * CELL_H;
    let mut img = RgbImage::from_pixel(width, height, WHITE);

    // Title: the job, and what the rows and columns are.
    let title = fit(&job.name, width - 2 * PAD, 1);
    draw_text(
        &mut img,
        PAD.into(),
        PAD.into(),
        &title.lines[0],
        title.scale,
        INK,
    );
    let names = |list: &[usize]| {
        if list.is_empty() {
            "-".to_owned()
        } else {
            list.iter()
                .map(|&a| axes.varied[a].param.name())
                .collect::<Vec<_>>()
                .join(" x ")
        }
    };
    let subtitle = format!(
        "job {} - {} tasks - rows: {} - columns: {}",
        job.id,
        data.tasks.len(),
        names(&layout.rows),
        names(&layout.cols)
    );
    let max_chars = ((width - 2 * PAD) / font::GLYPH) as usize;
    let subtitle: String = subtitle.chars().take(max_chars).collect();
    draw_text(
        &mut img,
        PAD.into(),
        (PAD + 16 + 8).into(),
        &subtitle,
        1,
        MUTED,
    );

    // Corner: the job's single content and/or style image.
    let n = corner.len() as u32;
    let mut x = PAD
        + (ROW_HEADER_W - 2 * PAD).saturating_sub(n * HEAD_THUMB + n.saturating_sub(1) * PAD) / 2;
    for (label, key) in &corner {
        let top = TITLE_H + PAD;
        draw_input(&mut img, data, key, x, top, HEAD_THUMB);
        let lines = font::wrap(label, HEAD_THUMB, 1);
        draw_fitted(
            &mut img,
            x.into(),
            (top + HEAD_THUMB + 4).into(),
            HEAD_THUMB,
            &lines,
            MUTED,
        );
        x += HEAD_THUMB + PAD;
    }

    // Column headers.
    for (c, key) in grid.cols.iter().enumerate() {
        let x0 = ROW_HEADER_W + c as u32 * CELL_W;
        let labels = axes.describe(&layout.cols, key);
        header(&mut img, data, &labels, (x0, TITLE_H), (CELL_W, header_h));
        vline(&mut img, x0, TITLE_H, height - TITLE_H);
    }
    hline(&mut img, 0, TITLE_H + header_h, width);

    // Rows: a header, then the cells.
    for (r, key) in grid.rows.iter().enumerate() {
        let y0 = TITLE_H + header_h + r as u32 * CELL_H;
        let labels = axes.describe(&layout.rows, key);
        header(&mut img, data, &labels, (0, y0), (ROW_HEADER_W, CELL_H));
        hline(&mut img, 0, y0 + CELL_H - 1, width);
    }
    let mut drawn = vec![false; grid.rows.len() * grid.cols.len()];
    for (task, &(r, c)) in data.tasks.iter().zip(&grid.cell_of_task) {
        let slot = r * grid.cols.len() + c;
        if std::mem::replace(&mut drawn[slot], true) {
            continue; // two entries for one point of the grid: the first is shown
        }
        let x0 = ROW_HEADER_W + c as u32 * CELL_W;
        let y0 = TITLE_H + header_h + r as u32 * CELL_H;
        cell(&mut img, task, x0, y0);
    }
    img
}

/// A row or column header in the box at `(x0, y0)` of size `(w, h)`, centred
/// vertically: the images among `labels` as pictures, then each label's parameter
/// name and value.
fn header(
    img: &mut RgbImage,
    data: &JobData<'_>,
    labels: &[Label],
    (x0, y0): (u32, u32),
    (w, h): (u32, u32),
) {
    let inner = w - 2 * PAD;
    let keys: Vec<&str> = labels
        .iter()
        .filter(|l| l.param.is_image())
        .map(|l| l.id.as_str())
        .collect();
    let images = if keys.is_empty() { 0 } else { HEAD_THUMB + 4 };
    let block = images + labels.len() as u32 * LINE_H;
    let mut y = y0 + PAD.max(h.saturating_sub(block) / 2);
    if !keys.is_empty() {
        let n = keys.len() as u32;
        let side = HEAD_THUMB.min((inner - (n - 1) * 4) / n);
        let mut x = x0 + PAD + (inner - (n * side + (n - 1) * 4)) / 2;
        for key in keys {
            draw_input(img, data, key, x, y, side);
            x += side + 4;
        }
        y += HEAD_THUMB + 4;
    }
    for label in labels {
        let name = font::wrap(label.param.name(), inner, 1);
        draw_fitted(img, (x0 + PAD).into(), y.into(), inner, &name, MUTED);
        let value = fit(&label.value, inner, 2);
        draw_fitted(
            img,
            (x0 + PAD).into(),
            (y + font::GLYPH + 2).into(),
            inner,
            &value,
            INK,
        );
        y += LINE_H;
    }
}

/// An input image fitted in a `side` square at (x, y), or a grey square if unreadable.
fn draw_input(img: &mut RgbImage, data: &JobData<'_>, key: &str, x: u32, y: u32, side: u32) {
    match data.inputs.get(key).and_then(Option::as_ref) {
        Some(picture) => blit_centred(img, &load::fit(picture, side), x, y, side),
        None => {
            fill(img, x, y, side, side, MARKED);
            let text = fit("missing", side, 1);
            draw_fitted(img, x.into(), (y + side / 2 - 4).into(), side, &text, INK);
        }
    }
}

fn cell(img: &mut RgbImage, data: &TaskData<'_>, x0: u32, y0: u32) {
    let (bx, by) = (x0 + PAD, y0 + PAD);
    let task = data.task;
    let mark = |img: &mut RgbImage, label: &str, background: Rgb<u8>, cross: bool| {
        fill(img, bx, by, THUMB, THUMB, background);
        if cross {
            diagonal_cross(img, bx, by, THUMB, CROSS);
        }
        let text = fit(label, THUMB - 2 * PAD, 1);
        let (tw, th) = (font::text_width(&text.lines[0], text.scale), text.height());
        let (lx, ly) = (bx + (THUMB - tw) / 2, by + (THUMB - th) / 2);
        fill(img, lx - 4, ly - 4, tw + 8, th + 8, WHITE);
        draw_fitted(
            img,
            bx.into(),
            ly.into(),
            THUMB,
            &text,
            if cross { CROSS } else { INK },
        );
    };
    match (&task.outcome, &data.thumb) {
        (Outcome::Done, Some(thumb)) => {
            fill(img, bx, by, THUMB, THUMB, LETTERBOX);
            blit_centred(img, thumb, bx, by, THUMB);
        }
        (Outcome::Done, None) => mark(img, "MISSING", MARKED, false),
        (Outcome::Failed { .. }, _) => mark(img, "FAILED", MARKED, true),
        (Outcome::Cancelled, _) => mark(img, "CANCELLED", MARKED, true),
        (Outcome::Unfinished, _) => mark(img, "UNFINISHED", PENDING, false),
    }

    // Caption: the task's short id, then its final total loss or what went wrong.
    let chars = (THUMB / font::GLYPH) as usize;
    let short: String = task.id.chars().take(8).collect();
    let first = match task.outcome {
        Outcome::Done => short,
        ref other => format!("{short} {}", other.label()),
    };
    let second = match (&task.outcome, data.losses.last()) {
        (Outcome::Failed { error }, _) => error.clone(),
        (_, Some(last)) => format!("loss {}", compact(last.total)),
        _ => String::new(),
    };
    let y = by + THUMB + 4;
    let clip = |s: &str| {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(chars)
            .collect::<String>()
    };
    draw_text(img, bx.into(), y.into(), &clip(&first), 1, INK);
    let color = if matches!(task.outcome, Outcome::Failed { .. }) {
        CROSS
    } else {
        MUTED
    };
    draw_text(img, bx.into(), (y + 10).into(), &clip(&second), 1, color);
}

/// A loss in a few characters: `354.69`, `1.23e6`.
pub(crate) fn compact(v: f64) -> String {
    if v != 0.0 && v.is_finite() && (v.abs() >= 1e5 || v.abs() < 1e-2) {
        format!("{v:.2e}")
    } else if v.is_finite() {
        format!("{v:.2}")
    } else {
        format_number(v)
    }
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: Rgb<u8>) {
    for py in y..(y + h).min(img.height()) {
        for px in x..(x + w).min(img.width()) {
            img.put_pixel(px, py, color);
        }
    }
}

fn hline(img: &mut RgbImage, x: u32, y: u32, w: u32) {
    fill(img, x, y, w, 1, RULE);
}

fn vline(img: &mut RgbImage, x: u32, y: u32, h: u32) {
    fill(img, x, y, 1, h, RULE);
}

/// Draws `picture` centred in the `side` square at (x, y).
fn blit_centred(img: &mut RgbImage, picture: &RgbImage, x: u32, y: u32, side: u32) {
    let (w, h) = picture.dimensions();
    let ox = x + side.saturating_sub(w) / 2;
    let oy = y + side.saturating_sub(h) / 2;
    image::imageops::replace(img, picture, ox.into(), oy.into());
}

/// Both diagonals of the `side` square at (x, y), 5 pixels thick.
fn diagonal_cross(img: &mut RgbImage, x: u32, y: u32, side: u32, color: Rgb<u8>) {
    for t in 0..side {
        for d in -2i64..=2 {
            for px in [i64::from(x + t) + d, i64::from(x + side - 1 - t) + d] {
                if px >= i64::from(x) && px < i64::from(x + side) {
                    img.put_pixel(px as u32, y + t, color);
                }
            }
        }
    }
}
