//! The values of an answer as far as the probe understands them (null, numbers, text,
//! times) and reading freshness from them.

use super::*;

/// One value of the answer, as far as the probe needs to understand it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    /// Milliseconds since the Unix epoch.
    Time(i64),
    /// A type the probe does not read, by name.
    Other(String),
}

impl Cell {
    /// How it is shown in messages.
    pub(super) fn show(&self) -> String {
        match self {
            Cell::Null => "NULL".to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Text(t) => {
                let t: String = t.chars().take(80).collect();
                format!("'{t}'")
            }
            Cell::Time(ms) => fmt_utc(*ms, UtcPrecision::Seconds),
            Cell::Other(ty) => format!("<{ty}>"),
        }
    }

    /// The time this value stands for, in milliseconds since the Unix epoch.
    pub(super) fn time_ms(&self) -> Result<i64, String> {
        match self {
            Cell::Time(ms) => Ok(*ms),
            Cell::Int(i) => Ok(unix_number_ms(*i as f64)),
            Cell::Float(f) if f.is_finite() => Ok(unix_number_ms(*f)),
            Cell::Text(t) => parse_time_text(t),
            Cell::Null => Err("is NULL".to_string()),
            Cell::Float(_) => Err("is not a finite number".to_string()),
            Cell::Other(ty) => Err(format!(
                "has type {ty}, which the probe does not read as a time (cast it to a \
                 timestamp or a number)"
            )),
        }
    }
}

/// A Unix time in s, ms, us or ns, told apart by magnitude (10^11 s is the year 5138, 10^11 ms
/// the year 1973), in milliseconds.
pub(super) fn unix_number_ms(v: f64) -> i64 {
    let a = v.abs();
    let ms = if a < 1e11 {
        v * 1e3
    } else if a < 1e14 {
        v
    } else if a < 1e17 {
        v / 1e3
    } else {
        v / 1e6
    };
    ms as i64
}

/// A date-time text (with an offset, or taken as UTC without one), a date, or a number.
pub(super) fn parse_time_text(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    // PostgreSQL writes offsets as `+00`, which jiff reads only with minutes.
    if let Some(ts) = t
        .rfind(['+', '-'])
        .filter(|&i| i > 10 && t[i + 1..].len() == 2)
        .and_then(|_| format!("{t}:00").parse::<jiff::Timestamp>().ok())
    {
        return Ok(ts.as_millisecond());
    }
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>() {
        if let Ok(z) = dt.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(z.timestamp().as_millisecond());
        }
    }
    if let Ok(n) = t.parse::<f64>() {
        if n.is_finite() {
            return Ok(unix_number_ms(n));
        }
    }
    Err(format!("'{t}' is not a date-time"))
}

/// Milliseconds since the Unix epoch, now.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An age as people read it: `42 s`, `3.5 min`, `2.1 h`, `3.0 days`.
pub(super) fn fmt_age(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else if secs < 2.0 * 86_400.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
}
