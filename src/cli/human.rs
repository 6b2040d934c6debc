//! Times and sizes written for people: UTC in ISO 8601 (`2026-12-04T15:02:11Z`) with a
//! relative part (`in 41 s`, `3 h ago`), and sizes in B/KiB/MiB. Operators compare what
//! `dispatch status` says with `juju debug-log` and `juju show-status-log`, which speak UTC;
//! raw unix seconds help nobody. What a person types back (`--since 10m`, `--until
//! 2026-12-04T15:00:00Z`) is read here too.

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

/// How long something took, as people read it: milliseconds below a second (`12.34 ms`),
/// seconds from there (`2.50 s`).
pub fn took(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.2} ms")
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

/// Days since 1970-01-01 of a civil date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time as a person writes one on the command line: an RFC 3339 time
/// (`2026-12-04T15:02:11Z`, `2026-12-04T16:02:11.5+01:00`, a space for the `T`), or a duration
/// back from `now` (`90s`, `10m`, `2h`, `1d`, `1w`). As the first and last unix nanosecond it
/// covers: `15:02:11.123Z`, copied from a view that prints milliseconds, covers that whole
/// millisecond, so `--until` it includes the dispatch printed with it.
pub fn parse_time(text: &str, now: SystemTime) -> Result<(i64, i64), String> {
    let text = text.trim();
    let wrong = || {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-12-04T15:02:11Z) nor a duration back \
             from now (90s, 10m, 2h, 1d, 1w)"
        )
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let (count, unit) = text.split_at(text.len().saturating_sub(1));
    if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) {
        let count: i64 = count.parse().map_err(|_| wrong())?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(wrong()),
        };
        let at = now - count.saturating_mul(seconds).saturating_mul(1_000_000_000);
        return Ok((at, at));
    }
    parse_rfc3339(text).ok_or_else(wrong)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, as the first and last unix nanosecond of the
/// second or fraction written.
fn parse_rfc3339(text: &str) -> Option<(i64, i64)> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: i64 = 0;
    let mut resolution: i64 = 1_000_000_000;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &fraction[..digits.min(9)];
        resolution = 10_i64.pow(9 - kept.len() as u32);
        nanos = kept.parse::<i64>().ok()? * resolution;
        rest = &fraction[digits..];
    }
    let offset_seconds: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 3_600 + minutes * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let seconds =
        days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second)
            - offset_seconds;
    let first = seconds * 1_000_000_000 + nanos;
    Some((first, first + resolution - 1))
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

    #[test]
    fn times_are_read_as_rfc_3339_or_as_durations_back_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_944_531); // 2025-12-05T14:22:11Z
        let at = |text: &str| parse_time(text, now).map(|(first, _)| first);
        let last = |text: &str| parse_time(text, now).map(|(_, last)| last);
        assert_eq!(at("2025-12-05T14:22:11Z"), Ok(1_764_944_531_000_000_000));
        assert_eq!(last("2025-12-05T14:22:11Z"), Ok(1_764_944_531_999_999_999));
        assert_eq!(
            at("2025-12-05 15:22:11.25+01:00"),
            Ok(1_764_944_531_250_000_000)
        );
        assert_eq!(
            last("2025-12-05 15:22:11.25+01:00"),
            Ok(1_764_944_531_259_999_999)
        );
        assert_eq!(at("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            at("2024-02-29T00:00:00-00:30"),
            Ok(1_709_166_600_000_000_000)
        );
        assert_eq!(at("10m"), Ok(1_764_944_531_000_000_000 - 600_000_000_000));
        assert_eq!(last("10m"), at("10m"));
        assert_eq!(at("1d"), Ok(1_764_944_531_000_000_000 - 86_400_000_000_000));
        for wrong in [
            "yesterday",
            "10x",
            "-5m",
            "2025-13-01T00:00:00Z",
            "2025-12-05T14:22:11",
            "2025-12-05",
            "",
        ] {
            let error = at(wrong).unwrap_err();
            assert!(error.contains("RFC 3339"), "{wrong}: {error}");
        }
        // What `utc_millis` writes reads back.
        let written = utc_millis(1_764_944_531_123_456_789);
        assert_eq!(at(&written), Ok(1_764_944_531_123_000_000));
        assert_eq!(
            last(&written),
            Ok(1_764_944_531_123_999_999),
            "the whole millisecond"
        );
    }
}
