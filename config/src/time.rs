//! Times written by people: `2026-10-05 08:00` (UTC), `2026-10-05T08:00:00Z`, or RFC 3339 with
//! an offset. Everything is kept as milliseconds since the Unix epoch, in UTC.

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
