//! Durations as people write them, in flags and in grid files.

use std::time::Duration;

/// The longest duration anything here takes: a year.
const LONGEST: Duration = Duration::from_secs(366 * 86_400);

/// Parses `30s`, `500ms`, `2m`, `2h`, `30d` or a bare number of seconds; zero,
/// negative and longer than a year are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (ms, s, m, h or d)"
            ))
        }
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("'{text}' must be positive"));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= LONGEST => Ok(duration),
        _ => Err(format!("'{text}' is longer than a year")),
    }
}

/// A duration as [`parse_duration`] reads it back, in its largest whole unit:
/// `2h`, `90m`, `45s`, `1500ms`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        m if m > 0 && m % 86_400_000 == 0 => format!("{}d", m / 86_400_000),
        m if m > 0 && m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m > 0 && m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
        for too_long in ["367d", "99999999999999999999", "10000000000000000000s"] {
            let err = parse_duration(too_long).unwrap_err();
            assert!(err.contains("longer than a year"), "{err}");
        }
    }

    #[test]
    fn durations_format_as_they_parse() {
        for text in ["30d", "2h", "90m", "45s", "1500ms"] {
            let duration = parse_duration(text).unwrap();
            assert_eq!(format_duration(duration), text);
        }
    }
}
