//! Timestamps in UTC, formatted by `humantime` (the calendar arithmetic is its, not ours): RFC 3339 with
//! milliseconds for records (`2026-11-29T12:00:01.250Z`), and a plain form for people (`2026-11-29 12:00:01`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second `humantime` formats (the end of year 9999): later times print as it.
const LAST_FORMATTABLE_SECOND: u64 = 253_402_300_799;

/// Now, as an RFC 3339 UTC string with milliseconds.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// `t` as an RFC 3339 UTC string with milliseconds. Times before 1970 print as the epoch.
pub fn format_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(formattable(t)).to_string()
}

/// `t` as `YYYY-MM-DD HH:MM:SS` (UTC, whole seconds), for human output. Times before 1970 print as the epoch.
pub fn format_utc_seconds(t: SystemTime) -> String {
    let mut text = humantime::format_rfc3339_seconds(formattable(t)).to_string();
    text.pop(); // the `Z`
    text.replacen('T', " ", 1)
}

/// `t` within what `humantime` formats (it panics before the epoch and fails after year 9999).
fn formattable(t: SystemTime) -> SystemTime {
    t.clamp(UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(LAST_FORMATTABLE_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates_format() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_250)), "2000-02-29T00:00:00.250Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_954_801)), "2026-11-29T12:20:01.000Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH - Duration::from_secs(1)), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc_seconds(UNIX_EPOCH + Duration::from_millis(1_795_954_801_750)), "2026-11-29 12:20:01");
        assert_eq!(format_utc_seconds(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)), "9999-12-31 23:59:59");
    }
}
