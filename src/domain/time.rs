//! Wall-clock timestamps as milliseconds since the Unix epoch, and their Twilio rendering.
//!
//! May depend on: chrono.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    Utc::now().timestamp_millis()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the only date form Twilio's libraries parse.
pub fn twilio_date(ms: Millis) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// RFC 3339 with milliseconds, for the native API and webhooks.
pub fn rfc3339_ms(ms: Millis) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
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
}
