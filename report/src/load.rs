//! Reading a job's outputs and inputs from the store. What a task lacks is noted,
//! never an error: only a store that cannot be read fails the report.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use image::{imageops::FilterType, RgbImage};
use pastiche_spec::layout;
use pastiche_spec::store::{Store, StoreError};
use pastiche_spec::{
    FinishedTask, LossRecord, Style, LOSSES_CSV_HEADER, LOSSES_CSV_HEADER_WITH_SCALE,
};

use crate::{Outcome, ReportError, ReportJob, ReportTask};

/// Thumbnails are made this big (longer side); the sheet draws them at most this big.
pub(crate) const THUMB: u32 = 160;

/// How many objects are read at once.
const CONCURRENT_READS: usize = 16;

pub(crate) struct TaskData<'a> {
    pub task: &'a ReportTask,
    /// The loss log, in file order (empty when there is none).
    pub losses: Vec<LossRecord>,
    /// The pastiche, fitted in `THUMB` x `THUMB`.
    pub thumb: Option<RgbImage>,
    /// The attempt whose files are the task's result (task.json says); 0 for none.
    pub result_attempt: u32,
    /// Whether the store has a readable pastiche / loss log for this task.
    pub has_pastiche: bool,
    pub has_losses: bool,
    /// beta as the render chose it (`style_weight = "auto"`), from task.json.
    pub chosen_style_weight: Option<f64>,
    /// The stored files, kept for a standalone report.
    pub pastiche_bytes: Option<Vec<u8>>,
    pub losses_bytes: Option<Vec<u8>>,
    /// What was wrong with the task's outputs.
    pub notes: Vec<String>,
}

pub(crate) struct JobData<'a> {
    pub tasks: Vec<TaskData<'a>>,
    /// Content and style images by store key, fitted in `THUMB` x `THUMB`
    /// (`None`: missing or unreadable).
    pub inputs: HashMap<String, Option<RgbImage>>,
    /// Problems with the inputs.
    pub notes: Vec<String>,
}

pub(crate) async fn load<'a>(
    store: &Store,
    job: &'a ReportJob,
    keep_originals: bool,
) -> Result<JobData<'a>, ReportError> {
    let tasks: Vec<TaskData<'a>> = futures::stream::iter(&job.tasks)
        .map(|task| load_task(store, &job.id, task, keep_originals))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;

    // Every image once: contents, styles, and the images of blended styles.
    let mut keys: Vec<String> = Vec::new();
    let mut blends: Vec<(&str, Style)> = Vec::new();
    let mut notes = Vec::new();
    for task in &job.tasks {
        let style = Style::parse(&task.style_key).unwrap_or_else(|e| {
            notes.push(format!("task {}: {e}", task.id));
            Style::image("")
        });
        let images = style.images().map(|(key, _)| key.to_owned());
        for key in std::iter::once(task.content_key.clone()).chain(images) {
            if !key.is_empty() && !keys.contains(&key) {
                keys.push(key);
            }
        }
        if style.is_blend() && !blends.iter().any(|(key, _)| *key == task.style_key) {
            blends.push((&task.style_key, style));
        }
    }
    let loaded: Vec<(String, Result<RgbImage, String>)> = futures::stream::iter(keys)
        .map(|key| async move {
            let image = match optional(store.get(&key).await)? {
                None => Err("missing".to_owned()),
                Some(bytes) => thumbnail(&bytes),
            };
            Ok::<_, ReportError>((key, image))
        })
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    let mut inputs = HashMap::new();
    for (key, image) in loaded {
        match image {
            Ok(image) => {
                inputs.insert(key, Some(image));
            }
            Err(why) => {
                notes.push(format!("input {key}: {why}"));
                inputs.insert(key, None);
            }
        }
    }
    for (key, style) in blends {
        let parts: Option<Vec<&RgbImage>> = style
            .images()
            .map(|(image, _)| inputs.get(image).and_then(Option::as_ref))
            .collect();
        let thumb = parts.map(|parts| side_by_side(&parts));
        inputs.insert(key.to_owned(), thumb);
    }
    Ok(JobData {
        tasks,
        inputs,
        notes,
    })
}

/// A blend's images in one `THUMB` x `THUMB` thumbnail, left to right.
fn side_by_side(images: &[&RgbImage]) -> RgbImage {
    let width = (THUMB / images.len().max(1) as u32).max(1);
    let parts: Vec<RgbImage> = images.iter().map(|i| fit_in(i, width, THUMB)).collect();
    let height = parts.iter().map(RgbImage::height).max().unwrap_or(1);
    let mut out = RgbImage::from_pixel(width * parts.len() as u32, height, image::Rgb([255; 3]));
    for (i, part) in parts.iter().enumerate() {
        let y = (height - part.height()) / 2;
        image::imageops::replace(&mut out, part, i64::from(width) * i as i64, i64::from(y));
    }
    out
}

async fn load_task<'a>(
    store: &Store,
    job: &str,
    task: &'a ReportTask,
    keep_originals: bool,
) -> Result<TaskData<'a>, ReportError> {
    let mut data = TaskData {
        task,
        losses: Vec::new(),
        thumb: None,
        result_attempt: 0,
        has_pastiche: false,
        has_losses: false,
        chosen_style_weight: None,
        pastiche_bytes: None,
        losses_bytes: None,
        notes: Vec::new(),
    };
    // Only a finished task is sure to have outputs; the others are reported as they are.
    if task.outcome != Outcome::Done {
        return Ok(data);
    }
    // The record names the attempt whose files are the result.
    let record = optional(store.get(&layout::task_record_key(job, &task.id)?).await)?;
    let Some(attempt) = record.as_deref().and_then(FinishedTask::attempt_in) else {
        data.notes
            .push(format!("{} is missing or unreadable", layout::TASK_JSON));
        return Ok(data);
    };
    data.result_attempt = attempt;
    data.chosen_style_weight = record
        .as_deref()
        .and_then(FinishedTask::chosen_style_weight_in);
    let key = |name| layout::attempt_file_key(job, &task.id, attempt, name);
    let (pastiche_file, losses_file) = (layout::PASTICHE_PNG, layout::LOSSES_CSV);

    match optional(store.get(&key(pastiche_file)?).await)? {
        None => data.notes.push(format!("{pastiche_file} is missing")),
        Some(bytes) => match thumbnail(&bytes) {
            Ok(thumb) => {
                data.thumb = Some(thumb);
                data.has_pastiche = true;
                if keep_originals {
                    data.pastiche_bytes = Some(bytes.to_vec());
                }
            }
            Err(why) => data
                .notes
                .push(format!("{pastiche_file} is unreadable: {why}")),
        },
    }

    match optional(store.get(&key(losses_file)?).await)? {
        None => data.notes.push(format!("{losses_file} is missing")),
        Some(bytes) => {
            let (losses, bad) = parse_losses(&String::from_utf8_lossy(&bytes));
            if bad > 0 {
                data.notes
                    .push(format!("{losses_file} has {bad} unreadable line(s)"));
            }
            data.losses = losses;
            data.has_losses = true;
            if keep_originals {
                data.losses_bytes = Some(bytes.to_vec());
            }
        }
    }
    Ok(data)
}

/// The records of a loss log, and how many lines could not be read.
pub(crate) fn parse_losses(text: &str) -> (Vec<LossRecord>, usize) {
    let mut records = Vec::new();
    let mut bad = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == LOSSES_CSV_HEADER || line == LOSSES_CSV_HEADER_WITH_SCALE {
            continue;
        }
        match LossRecord::parse_csv_row(line) {
            Some(record) => records.push(record),
            None => bad += 1,
        }
    }
    (records, bad)
}

fn optional<T>(result: Result<T, StoreError>) -> Result<Option<T>, ReportError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Decodes a PNG or JPEG (told apart by content), upright, and fits it in
/// `THUMB` x `THUMB`.
fn thumbnail(bytes: &[u8]) -> Result<RgbImage, String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    let image = pastiche_spec::upright::decode(reader).map_err(|e| e.to_string())?;
    Ok(fit(&image.to_rgb8(), THUMB))
}

/// `image` scaled (up or down) so that its longer side is `side`.
pub(crate) fn fit(image: &RgbImage, side: u32) -> RgbImage {
    fit_in(image, side, side)
}

/// `image` scaled (up or down) as large as it fits in `width` x `height`.
fn fit_in(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return RgbImage::new(1, 1);
    }
    let scale = (f64::from(width) / f64::from(w)).min(f64::from(height) / f64::from(h));
    let nw = ((f64::from(w) * scale).round() as u32).clamp(1, width);
    let nh = ((f64::from(h) * scale).round() as u32).clamp(1, height);
    if (nw, nh) == (w, h) {
        return image.clone();
    }
    image::imageops::resize(image, nw, nh, FilterType::Triangle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_logs_are_read_line_by_line() {
        let text = format!("{LOSSES_CSV_HEADER}\n50,1.5,2,0,3.5\n\nnot,a,row\n100,1,1,0,2\n");
        let (records, bad) = parse_losses(&text);
        assert_eq!(bad, 1);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].iteration, 100);
        assert_eq!(records[0].total, 3.5);
    }

    #[test]
    fn images_fit_their_box() {
        let wide = RgbImage::new(400, 100);
        assert_eq!(fit(&wide, 160).dimensions(), (160, 40));
        let small = RgbImage::new(40, 40);
        assert_eq!(fit(&small, 160).dimensions(), (160, 160));
        let thin = RgbImage::new(1, 1000);
        assert_eq!(fit(&thin, 160).dimensions(), (1, 160));
    }
}
