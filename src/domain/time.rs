//! Wall-clock timestamps as milliseconds since the Unix epoch, and their Twilio rendering.
//!
//! May depend on: chrono.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    Utc::now().timestamp_millis()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the only date form Twilio's libraries parse.
pub fn twilio_date(ms: Millis) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) if (0..=9999).contains(&t.year()) => digits(&t, None),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// RFC 3339 with milliseconds, for the native API and webhooks.
pub fn rfc3339_ms(ms: Millis) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) if (0..=9999).contains(&t.year()) => digits(&t, Some(t.timestamp_subsec_millis())),
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm]Z` for a four-digit year, written digit by digit: these dates
/// are rendered for every user in every answer, and chrono's formatter interprets its format
/// string each time.
fn digits(t: &DateTime<Utc>, millis: Option<u32>) -> String {
    fn push(out: &mut Vec<u8>, value: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    }
    let mut out = Vec::with_capacity(24);
    push(&mut out, t.year() as u32, 4);
    out.push(b'-');
    push(&mut out, t.month(), 2);
    out.push(b'-');
    push(&mut out, t.day(), 2);
    out.push(b'T');
    push(&mut out, t.hour(), 2);
    out.push(b':');
    push(&mut out, t.minute(), 2);
    out.push(b':');
    // A leap second (never produced from milliseconds since the epoch) would show as 60.
    push(&mut out, t.second(), 2);
    if let Some(ms) = millis {
        out.push(b'.');
        push(&mut out, ms.min(999), 3);
    }
    out.push(b'Z');
    String::from_utf8(out).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp into milliseconds.
pub fn parse_rfc3339(value: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_dates_have_no_fraction_and_a_z() {
        assert_eq!(twilio_date(1_438_286_400_123), "2015-07-30T20:00:00Z");
        assert_eq!(rfc3339_ms(1_438_286_400_123), "2015-07-30T20:00:00.123Z");
        assert_eq!(
            parse_rfc3339("2015-07-30T20:00:00.123Z"),
            Some(1_438_286_400_123)
        );
    }

    #[test]
    fn hand_written_dates_match_chrono_everywhere() {
        let samples = [
            0,
            1,
            -1,
            999,
            1_438_286_400_123,
            951_782_400_000,     // 2000-02-29
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001, // year -1: chrono's own rendering
            253_402_300_800_000, // year 10000: chrono's own rendering
        ];
        let mut ms: i64 = -86_400_000 * 400;
        let mut all = samples.to_vec();
        while ms < 4_102_444_800_000 {
            all.push(ms);
            ms += 86_399_987 * 7 + 123; // every weekday, hour and millisecond drift
        }
        for ms in all {
            let t = DateTime::<Utc>::from_timestamp_millis(ms).expect("in range");
            assert_eq!(
                twilio_date(ms),
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "{ms}"
            );
            assert_eq!(
                rfc3339_ms(ms),
                t.to_rfc3339_opts(SecondsFormat::Millis, true),
                "{ms}"
            );
        }
    }
}
