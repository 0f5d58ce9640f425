//! Times and durations written by people.
//!
//! Times: `2026-10-05 08:00` (UTC), `2026-10-05T08:00:00Z`, or RFC 3339 with an offset; kept as
//! milliseconds since the Unix epoch, in UTC.
//!
//! Durations: `30s`, `5m`, `1h 30m`, `2d`. This module holds the one duration parser of the
//! project ([`parse_duration`], [`parse_duration_in`]): every duration a user can type is
//! range-checked here, so nothing downstream can overflow adding or multiplying it.

use std::time::Duration;

/// An inclusive range of durations a setting accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// Shortest accepted value.
    pub min: Duration,
    /// Longest accepted value.
    pub max: Duration,
}

impl DurationRange {
    /// A range from `min` to `max`, both included.
    pub const fn new(min: Duration, max: Duration) -> Self {
        DurationRange { min, max }
    }

    /// Whether `d` lies in the range.
    pub fn contains(&self, d: Duration) -> bool {
        self.min <= d && d <= self.max
    }
}

/// Longest duration gridprobe accepts anywhere: 100 years. Sums and small multiples of
/// such durations fit in a `Duration` and in i64 milliseconds many times over.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The range of [`parse_duration`]: more than zero, at most [`MAX_DURATION`].
pub const ANY_DURATION: DurationRange = DurationRange::new(Duration::from_nanos(1), MAX_DURATION);

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const DAY: u64 = 86_400;

/// `interval` (`[defaults]`, `[[probe]]`, overrides): 1s to 31 days.
pub const INTERVAL: DurationRange = DurationRange::new(secs(1), secs(31 * DAY));
/// `timeout` (`[defaults]`, `[[probe]]`, overrides): 100ms to 7 days.
pub const TIMEOUT: DurationRange = DurationRange::new(ms(100), secs(7 * DAY));
/// `retry_interval`: 100ms to 1 day.
pub const RETRY_INTERVAL: DurationRange = DurationRange::new(ms(100), secs(DAY));
/// `freshness` of a probe: 1s to 400 days.
pub const FRESHNESS: DurationRange = DurationRange::new(secs(1), secs(400 * DAY));
/// `[server] retention`: 1 hour to 100 years.
pub const RETENTION: DurationRange = DurationRange::new(secs(3600), MAX_DURATION);
/// `[server] shutdown_grace`: 1ms to 1 hour.
pub const SHUTDOWN_GRACE: DurationRange = DurationRange::new(ms(1), secs(3600));
/// `[server] startup_spread`: 1ms to 7 days.
pub const STARTUP_SPREAD: DurationRange = DurationRange::new(ms(1), secs(7 * DAY));
/// `[server] schedule_lease`: 1s to 10 minutes.
pub const SCHEDULE_LEASE: DurationRange = DurationRange::new(secs(1), secs(600));
/// `[server.self_check] interval`: 1s to 1 hour.
pub const SELF_CHECK_INTERVAL: DurationRange = DurationRange::new(secs(1), secs(3600));
/// `[server.self_check] timeout`: 100ms to 1 minute.
pub const SELF_CHECK_TIMEOUT: DurationRange = DurationRange::new(ms(100), secs(60));
/// `[access] session_lifetime` (login sessions of the dashboard): 1s to 7 days.
pub const SESSION_LIFETIME: DurationRange = DurationRange::new(secs(1), secs(7 * DAY));
/// `[[publish]] stream_max_age`: 1s to 10 years.
pub const STREAM_MAX_AGE: DurationRange = DurationRange::new(secs(1), secs(3650 * DAY));
/// `[[publish]] heartbeat` (STOMP): 1s to 10 minutes.
pub const STOMP_HEARTBEAT: DurationRange = DurationRange::new(secs(1), secs(600));
/// `[[publish]] receipt_timeout` (STOMP): 1s to 10 minutes.
pub const STOMP_RECEIPT_TIMEOUT: DurationRange = DurationRange::new(secs(1), secs(600));

/// `[agents] no_agent_after`: 5s to 1 day.
pub const NO_AGENT_AFTER: DurationRange = DurationRange::new(secs(5), secs(DAY));
/// `[agents] grace`: 1s to 1 hour.
pub const AGENT_GRACE: DurationRange = DurationRange::new(secs(1), secs(3600));

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not a duration at all (or zero); the message says why.
    Invalid(String),
    /// A duration, but outside the accepted range (or too large to represent).
    OutOfRange {
        /// The text as written.
        text: String,
        /// The range it had to lie in.
        range: DurationRange,
        /// Whether it was above the range (else below).
        too_long: bool,
    },
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationError::Invalid(msg) => f.write_str(msg),
            DurationError::OutOfRange {
                text,
                range,
                too_long,
            } => write!(
                f,
                "duration `{text}` is too {}: write between {} and {}",
                if *too_long { "long" } else { "short" },
                format_duration(range.min),
                format_duration(range.max)
            ),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration such as `30s`, `5m`, `1h 30m`, `2d`: greater than zero and at most
/// [`MAX_DURATION`] (100 years), so callers may add and double it without overflow.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, ANY_DURATION).map_err(|e| e.to_string())
}

/// Parses a duration and checks it lies in `range`; the error quotes the text and names the
/// bounds, e.g. "duration `10000000000000000000s` is too long: write between 1s and 31days".
pub fn parse_duration_in(s: &str, range: DurationRange) -> Result<Duration, DurationError> {
    let out_of_range = |too_long| DurationError::OutOfRange {
        text: s.to_string(),
        range,
        too_long,
    };
    let d = match humantime::parse_duration(s.trim()) {
        Ok(d) => d,
        // More than u64 seconds: out of range like any other too long value.
        Err(humantime::DurationError::NumberOverflow) => return Err(out_of_range(true)),
        Err(e) => {
            return Err(DurationError::Invalid(format!(
                "invalid duration `{s}`: {e}"
            )))
        }
    };
    if d.is_zero() {
        return Err(DurationError::Invalid(format!(
            "invalid duration `{s}`: must be greater than zero"
        )));
    }
    if !range.contains(d) {
        return Err(out_of_range(d > range.max));
    }
    Ok(d)
}

/// Parses a UTC time or an RFC 3339 time with offset to ms since the epoch.
pub fn parse_utc(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    // Civil times without an offset are UTC, as in GOCDB's FORMATED_START_DATE.
    let civil = t.replacen(' ', "T", 1);
    if let Ok(dt) = civil.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| format!("invalid time `{t}`: {e}"));
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| format!("invalid time `{t}`: {e}"));
    }
    Err(format!("invalid time `{t}`"))
}

/// Formats ms since the epoch as `YYYY-MM-DD HH:MM` UTC.
pub fn format_utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Formats ms since the epoch as RFC 3339 in UTC to the millisecond,
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (store events, where two times a few ms apart must differ).
pub fn format_utc_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Formats a duration in the compact form people write in configs: `7d`, `1h30m`, `90s` is
/// `1m30s`, `1.5s`, `250ms`. Units are days, hours, minutes and seconds (the seconds with up to
/// three decimals); below one second, milliseconds (with up to three decimals). Zero is `0s`.
pub fn format_duration(d: std::time::Duration) -> String {
    /// `12`, `1.5`, `0.25`: up to three decimals, trailing zeros dropped.
    fn decimal(whole: u64, thousandths: u32) -> String {
        if thousandths == 0 {
            return whole.to_string();
        }
        let frac = format!("{thousandths:03}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
    if d.is_zero() {
        return "0s".to_string();
    }
    if d.as_secs() == 0 {
        let micros = d.subsec_micros();
        return format!("{}ms", decimal(u64::from(micros / 1000), micros % 1000));
    }
    let secs = d.as_secs();
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let millis = d.subsec_millis();
    let mut out = String::new();
    for (n, unit) in [(days, "d"), (hours, "h"), (minutes, "m")] {
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
        }
    }
    if seconds > 0 || millis > 0 {
        out.push_str(&decimal(seconds, millis));
        out.push('s');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let ms = 1_759_651_200_000; // 2025-10-05 08:00:00 UTC
        assert_eq!(parse_utc("2025-10-05 08:00"), Ok(ms));
        assert_eq!(parse_utc("2025-10-05T08:00:00Z"), Ok(ms));
        assert_eq!(parse_utc("2025-10-05T10:00:00+02:00"), Ok(ms));
        assert_eq!(parse_utc("2025-10-05"), Ok(ms - 8 * 3_600_000));
        assert!(parse_utc("yesterday").is_err());
        assert_eq!(format_utc(ms), "2025-10-05 08:00");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn durations_out_of_range_are_refused_with_the_bounds() {
        // Fits in a Duration but would overflow any sum: refused, not a panic later.
        let e = parse_duration_in("10000000000000000000s", INTERVAL)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too long: write between 1s and 31d"), "{e}");
        let e = parse_duration("18446744073709551615s").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        // Beyond u64 seconds: humantime's overflow, said in words.
        let e = parse_duration("99999999999999999999999s").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        let e = parse_duration_in("10ms", INTERVAL).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        assert_eq!(
            parse_duration_in("31d", INTERVAL),
            Ok(Duration::from_secs(31 * 86_400))
        );
        assert_eq!(parse_duration("99y").map(|d| d <= MAX_DURATION), Ok(true));
        assert!(parse_duration("101y").is_err());
    }
}

#[cfg(test)]
mod format_duration_tests {
    use std::time::Duration;

    use super::format_duration;

    #[test]
    fn compact_forms() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(1), "0.001ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(600), "600ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(1250), "1.25s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(60_500), "1m0.5s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(604_800), "7d"),
            (Duration::from_secs(86_400 + 3600 + 60 + 1), "1d1h1m1s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text, "{d:?}");
        }
    }

    #[test]
    fn the_largest_duration_does_not_overflow() {
        let text = format_duration(Duration::MAX);
        assert!(text.starts_with("213503982334601d"), "{text}");
        assert!(text.ends_with("s"), "{text}");
    }

    #[test]
    fn formatted_durations_parse_back() {
        for secs in [
            1, 59, 60, 61, 3599, 3600, 5400, 86_399, 86_400, 604_800, 1_000_000,
        ] {
            let d = Duration::from_secs(secs);
            let text = format_duration(d);
            assert_eq!(humantime::parse_duration(&text), Ok(d), "{text}");
        }
    }
}
