//! The maintenance window: a cron expression in a time zone, shifted per node.
//!
//! - Five fields (crontab's `minute hour day-of-month month day-of-week`) or six (a leading
//!   `second`), with croner's extensions (`MON#1` = the first Monday, `L` = last).
//! - **Day of month and day of week are ANDed** when both are given, as systemd's `OnCalendar=`
//!   does: `0 3 1-7 * MON` is the first Monday of the month (classic cron ORs them and would
//!   fire on every Monday and on days 1 to 7).
//! - Times are local to the configured IANA time zone (default: the node's). A window on a
//!   local time the clock skips (spring forward) fires once, at the first instant after the
//!   gap; one on a time the clock repeats (fall back) fires once, on its first pass.
//! - `window_spread`: each node starts its window a fixed delay after the calendar's instant,
//!   derived from its node name, within the spread — the control-plane nodes of one cluster never
//!   restart together, even before a cluster-wide lock exists.
//!
//! Pure: every function takes the instant it is asked about, so years of windows compute in
//! milliseconds in tests.

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use time::OffsetDateTime;

/// The default window: the first Monday of every month at 03:00 local time.
pub const DEFAULT_SCHEDULE: &str = "0 3 1-7 * MON";

/// A parsed calendar of windows for one node.
#[derive(Debug, Clone)]
pub struct Calendar {
    cron: Cron,
    zone: TimeZone,
    zone_name: String,
    /// This node's delay after each calendar instant.
    offset: Duration,
}

/// Parses `window_spread` ("1h", "30m", "90s", "2h30m", "0"): a duration no longer than a day.
pub fn parse_spread(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use s, m, h or d)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: a number must come before {c:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!(
            "{text:?}: the number {number} has no unit (s, m, h or d)"
        ));
    }
    if total > 86_400 {
        return Err(format!("{text:?}: at most a day"));
    }
    Ok(Duration::from_secs(total))
}

/// The delay of `node` inside `spread`: a stable hash of the node name, so every node of a
/// cluster has its own slot and keeps it across restarts.
pub fn node_offset(node: &str, spread: Duration) -> Duration {
    let secs = spread.as_secs();
    if secs == 0 {
        return Duration::ZERO;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, node.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    Duration::from_secs(u64::from_be_bytes(first) % secs)
}

fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_second(t.unix_timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn to_offset(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Calendar {
    /// Parses `expression` in `zone` (an IANA name; `None` = the node's local zone), with this
    /// node's delay `offset` (see [`node_offset`]). Errors name what is wrong.
    pub fn new(expression: &str, zone: Option<&str>, offset: Duration) -> Result<Calendar, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(true)
            .build()
            .parse(expression)
            .map_err(|e| format!("schedule {expression:?}: {e}"))?;
        let (zone, zone_name) = match zone {
            Some(name) => (
                TimeZone::get(name).map_err(|e| format!("timezone {name:?}: {e}"))?,
                name.to_string(),
            ),
            None => {
                let zone = TimeZone::system();
                let name = zone.iana_name().unwrap_or("UTC").to_string();
                (zone, name)
            }
        };
        Ok(Calendar {
            cron,
            zone,
            zone_name,
            offset,
        })
    }

    /// The time zone's name (for messages).
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// This node's delay after each calendar instant.
    pub fn offset(&self) -> Duration {
        self.offset
    }

    fn zoned(&self, t: Timestamp) -> Zoned {
        t.to_zoned(self.zone.clone())
    }

    fn shift(&self, t: Timestamp, forward: bool) -> Timestamp {
        let offset = jiff::SignedDuration::from_secs(
            i64::try_from(self.offset.as_secs()).unwrap_or(i64::MAX),
        );
        let shifted = if forward {
            t.checked_add(offset)
        } else {
            t.checked_sub(offset)
        };
        shifted.unwrap_or(t)
    }

    /// The first window strictly after `t`.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        // windows are calendar instants + offset: the first instant o with o + offset > t
        let base = self.zoned(self.shift(to_timestamp(t), false));
        let next = self.cron.find_next_occurrence(&base, false).ok()?;
        Some(to_offset(self.shift(next.timestamp(), true)))
    }

    /// The last window at or before `t`.
    pub fn last_at_or_before(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let base = self.zoned(self.shift(to_timestamp(t), false));
        let previous = self.cron.find_previous_occurrence(&base, true).ok()?;
        Some(to_offset(self.shift(previous.timestamp(), true)))
    }

    /// The next `n` windows after `t`.
    pub fn next_n(&self, t: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(w) => {
                    out.push(w);
                    at = w;
                }
                None => break,
            }
        }
        out
    }

    /// A window in the calendar's zone, RFC 3339 with its offset (`2026-12-07T03:00:00+01:00`).
    pub fn local_rfc3339(&self, t: OffsetDateTime) -> String {
        self.zoned(to_timestamp(t))
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    /// A window in the calendar's zone for humans (`Mon 2026-12-07 03:00 CET`).
    pub fn local_human(&self, t: OffsetDateTime) -> String {
        self.zoned(to_timestamp(t))
            .strftime("%a %Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> OffsetDateTime {
        OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn windows(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let c = Calendar::new(expr, Some(zone), Duration::ZERO).unwrap();
        c.next_n(at(from), n)
            .into_iter()
            .map(|w| c.local_rfc3339(w))
            .collect()
    }

    #[test]
    fn the_default_is_the_first_monday_of_each_month_at_three() {
        assert_eq!(
            windows(DEFAULT_SCHEDULE, "Europe/Berlin", "2026-11-29T00:00:00Z", 4),
            [
                "2026-12-07T03:00:00+01:00",
                "2027-01-04T03:00:00+01:00",
                "2027-02-01T03:00:00+01:00",
                "2027-03-01T03:00:00+01:00",
            ]
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_are_anded_not_ored() {
        // classic cron would fire on every Monday AND on days 1-7
        let w = windows("0 3 1-7 * 1", "UTC", "2026-11-29T00:00:00Z", 3);
        assert_eq!(
            w,
            [
                "2026-12-07T03:00:00+00:00",
                "2027-01-04T03:00:00+00:00",
                "2027-02-01T03:00:00+00:00",
            ]
        );
        // the nth-weekday spelling means the same
        assert_eq!(
            w,
            windows("0 3 * * MON#1", "UTC", "2026-11-29T00:00:00Z", 3)
        );
        // six fields: a leading seconds field
        assert_eq!(
            w,
            windows("0 0 3 1-7 * MON", "UTC", "2026-11-29T00:00:00Z", 3)
        );
    }

    #[test]
    fn a_skipped_or_repeated_local_hour_fires_exactly_once() {
        // Europe/Berlin: 2027-03-28 02:00 → 03:00 (02:30 does not exist);
        // 2027-10-31 03:00 → 02:00 (02:30 happens twice)
        let spring = windows("30 2 * * *", "Europe/Berlin", "2027-03-26T12:00:00Z", 4);
        assert_eq!(
            spring,
            [
                "2027-03-27T02:30:00+01:00",
                "2027-03-28T03:00:00+02:00",
                "2027-03-29T02:30:00+02:00",
                "2027-03-30T02:30:00+02:00",
            ]
        );
        let autumn = windows("30 2 * * *", "Europe/Berlin", "2027-10-29T12:00:00Z", 4);
        assert_eq!(
            autumn,
            [
                "2027-10-30T02:30:00+02:00",
                "2027-10-31T02:30:00+02:00",
                "2027-11-01T02:30:00+01:00",
                "2027-11-02T02:30:00+01:00",
            ]
        );
    }

    #[test]
    fn each_node_has_its_own_slot_inside_the_spread() {
        let spread = parse_spread("1h").unwrap();
        assert_eq!(spread, Duration::from_secs(3600));
        let offsets: Vec<Duration> = ["cp-1", "cp-2", "cp-3"]
            .iter()
            .map(|n| node_offset(n, spread))
            .collect();
        assert!(offsets.iter().all(|o| *o < spread));
        assert_ne!(offsets[0], offsets[1]);
        assert_ne!(offsets[1], offsets[2]);
        assert_eq!(node_offset("cp-1", spread), offsets[0], "stable");
        let c = Calendar::new(DEFAULT_SCHEDULE, Some("UTC"), offsets[0]).unwrap();
        let first = c.next_after(at("2026-11-29T00:00:00Z")).unwrap();
        assert_eq!(first, at("2026-12-07T03:00:00Z") + offsets[0]);
        // inside the delay, the window is still ahead; just after, the next month's is
        let during = at("2026-12-07T03:00:00Z") + offsets[0] / 2;
        assert_eq!(c.next_after(during).unwrap(), first);
        assert_eq!(c.last_at_or_before(first).unwrap(), first);
        assert_eq!(
            c.last_at_or_before(first + time::Duration::days(3))
                .unwrap(),
            first
        );
        assert_eq!(parse_spread("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_spread("0").unwrap(), Duration::ZERO);
        assert!(parse_spread("2x").is_err());
        assert!(parse_spread("30").is_err());
        assert!(parse_spread("2d").is_err());
    }

    #[test]
    fn bad_expressions_and_zones_are_errors_naming_them() {
        let e = Calendar::new("0 3 * *", Some("UTC"), Duration::ZERO).unwrap_err();
        assert!(e.contains("schedule \"0 3 * *\""), "{e}");
        let e = Calendar::new(DEFAULT_SCHEDULE, Some("Mars/Olympus"), Duration::ZERO).unwrap_err();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }
}
