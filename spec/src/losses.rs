//! One row of a render's loss log (`losses.csv`).

use serde::{Deserialize, Serialize};

pub const LOSSES_CSV_HEADER: &str = "iteration,content,style,tv,total";

/// The header of a multi-scale render's log: each row also names the size
/// (the longer side, in pixels) it was computed at. Iterations count on across
/// scales, so a scale's first row has the iteration of the previous one's last.
pub const LOSSES_CSV_HEADER_WITH_SCALE: &str = "iteration,content,style,tv,total,scale";

/// The weighted loss terms after `iteration` optimiser steps:
/// `content` = alpha * L_c, `style` = beta * L_s, `tv` = gamma * TV, `total` their sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossRecord {
    pub iteration: u32,
    pub content: f64,
    pub style: f64,
    pub tv: f64,
    pub total: f64,
}

impl LossRecord {
    /// One CSV line without the newline. Rust prints the shortest decimal that
    /// round-trips, so a reader gets back exactly the f64 that was written.
    pub fn to_csv_row(&self) -> String {
        format!(
            "{},{},{},{},{}",
            self.iteration, self.content, self.style, self.tv, self.total
        )
    }

    /// A row as [`to_csv_row`](Self::to_csv_row) writes it, or with a trailing
    /// `scale` as a multi-scale log's rows have (see
    /// [`LOSSES_CSV_HEADER_WITH_SCALE`]), read through [`scale_of_csv_row`].
    pub fn parse_csv_row(line: &str) -> Option<LossRecord> {
        let fields: Vec<&str> = line.trim().split(',').collect();
        match fields.len() {
            5 => {}
            6 => {
                fields[5].parse::<u32>().ok()?;
            }
            _ => return None,
        }
        let mut fields = fields.into_iter();
        let record = LossRecord {
            iteration: fields.next()?.parse().ok()?,
            content: fields.next()?.parse().ok()?,
            style: fields.next()?.parse().ok()?,
            tv: fields.next()?.parse().ok()?,
            total: fields.next()?.parse().ok()?,
        };
        Some(record)
    }
}

/// The `scale` column of a multi-scale log's row; `None` for a row without one.
pub fn scale_of_csv_row(line: &str) -> Option<u32> {
    let mut fields = line.trim().split(',').skip(5);
    let scale = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_round_trip_exactly() {
        let record = LossRecord {
            iteration: 50,
            content: 354.69123456789,
            style: 1.0e-7 / 3.0,
            tv: 0.0,
            total: 354.69123456789 + 1.0e-7 / 3.0,
        };
        assert_eq!(
            LossRecord::parse_csv_row(&record.to_csv_row()),
            Some(record)
        );
        assert_eq!(LossRecord::parse_csv_row("1,2,3,4"), None);
        assert_eq!(LossRecord::parse_csv_row("1,2,3,4,5,x"), None);
        assert_eq!(LossRecord::parse_csv_row("1,2,3,4,5,6,7"), None);
        // A multi-scale log's row: the scale is its own column.
        let scaled = format!("{},256", record.to_csv_row());
        assert_eq!(LossRecord::parse_csv_row(&scaled), Some(record));
        assert_eq!(scale_of_csv_row(&scaled), Some(256));
        assert_eq!(scale_of_csv_row(&record.to_csv_row()), None);
    }
}
