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

/// Formats ms since the epoch as RFC 3339 in UTC to the millisecond,
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (store events, where two times a few ms apart must differ).
pub fn format_utc_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
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
