//! Times and sizes written for people: UTC in ISO 8601 (`2026-12-04T15:02:11Z`) with a
//! relative part (`in 41 s`, `3 h ago`), and sizes in B/KiB/MiB. Operators compare what
//! `dispatch status` says with `juju debug-log` and `juju show-status-log`, which speak UTC;
//! raw unix seconds help nobody.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Civil date and time in UTC of a unix time in seconds (proleptic Gregorian calendar).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    // Days to year/month/day: H. Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (second_of_day / 3600) as u32,
        (second_of_day % 3600 / 60) as u32,
        (second_of_day % 60) as u32,
    )
}

fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// `2026-12-04T15:02:11Z`
pub fn utc(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs(time));
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2026-12-04T15:02:11.123Z`, from unix nanoseconds (how traces record their times).
pub fn utc_millis(unix_nanos: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_nanos.div_euclid(1_000_000_000));
    let millis = unix_nanos.rem_euclid(1_000_000_000) / 1_000_000;
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

/// `20261204T150211Z` (ISO 8601 basic format: fit for file names).
pub fn compact_utc(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs(time));
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// A unix time in seconds as a `SystemTime`.
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A span of time in the largest unit that keeps it readable: `41 s`, `12 min`, `3 h`, `2 d`.
pub fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7_199 => format!("{} min", secs / 60),
        7_200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// `2026-12-04T15:02:11Z, in 41 s` or `2026-12-04T15:02:11Z, 3 h ago`, relative to `now`.
pub fn utc_and_relative(time: SystemTime, now: SystemTime) -> String {
    let relative = match time.duration_since(now) {
        Ok(ahead) if ahead.as_secs() == 0 => "now".to_string(),
        Ok(ahead) => format!("in {}", span(ahead)),
        Err(behind) if behind.duration().as_secs() == 0 => "now".to_string(),
        Err(behind) => format!("{} ago", span(behind.duration())),
    };
    format!("{}, {relative}", utc(time))
}

/// `512 B`, `20.0 KiB`, `40.0 MiB`.
pub fn bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / KIB / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_are_iso_8601() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(utc(from_unix_secs(1_796_396_531)), "2026-12-04T15:02:11Z");
        assert_eq!(
            compact_utc(from_unix_secs(1_796_396_531)),
            "20261204T150211Z"
        );
        // Leap day, end of a year, and a leap century.
        assert_eq!(utc(from_unix_secs(1_709_208_000)), "2024-02-29T12:00:00Z");
        assert_eq!(utc(from_unix_secs(1_767_225_599)), "2025-12-31T23:59:59Z");
        assert_eq!(utc(from_unix_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn relative_times_say_how_far_and_which_way() {
        let now = from_unix_secs(1_796_396_531);
        assert_eq!(
            utc_and_relative(now + Duration::from_secs(41), now),
            "2026-12-04T15:02:52Z, in 41 s"
        );
        assert_eq!(
            utc_and_relative(now - Duration::from_secs(3 * 3600 + 5), now),
            "2026-12-04T12:02:06Z, 3 h ago"
        );
        assert!(utc_and_relative(now, now).ends_with(", now"));
        assert_eq!(span(Duration::from_secs(600)), "10 min");
        assert_eq!(span(Duration::from_secs(3 * 86_400)), "3 d");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(20 * 1024), "20.0 KiB");
        assert_eq!(bytes(40 * 1024 * 1024), "40.0 MiB");
    }
}
