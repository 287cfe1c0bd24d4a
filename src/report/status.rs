//! Pure classification of an inventory entry against thresholds and the clock.

use time::OffsetDateTime;

use crate::config::Config;
use crate::pki::inventory::{Entry, Kind, Signer, State};

/// How an entry stands; ordered by how much it needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Not there, and that is normal on this node.
    Absent,
    /// Valid for longer than the warning threshold.
    Ok,
    /// Expected but not there.
    Missing,
    /// Inside the warning threshold.
    Warning,
    /// Inside the critical threshold.
    Critical,
    /// Before NotBefore: issued under a clock that was ahead (or this clock is behind). Every
    /// TLS peer refuses it now, as it would an expired one.
    NotYetValid,
    /// Past NotAfter.
    Expired,
    /// There but unusable.
    Unreadable,
}

impl Status {
    /// The word used in tables, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Absent => "absent",
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::NotYetValid => "not-yet-valid",
            Status::Expired => "expired",
            Status::Unreadable => "unreadable",
        }
    }

    /// `check`'s exit code for this status: 0 fine, 1 attention, 2 act now.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Absent | Status::Ok => 0,
            Status::Missing | Status::Warning => 1,
            Status::Critical | Status::NotYetValid | Status::Expired | Status::Unreadable => 2,
        }
    }
}

/// Day thresholds for leaves and for CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Leaf warning threshold, days.
    pub warn_days: u32,
    /// Leaf critical threshold, days.
    pub critical_days: u32,
    /// CA warning threshold, days.
    pub ca_warn_days: u32,
    /// CA critical threshold, days.
    pub ca_critical_days: u32,
}

impl From<&Config> for Thresholds {
    fn from(c: &Config) -> Self {
        Thresholds {
            warn_days: c.warn_days,
            critical_days: c.critical_days,
            ca_warn_days: c.ca_warn_days,
            ca_critical_days: c.ca_critical_days,
        }
    }
}

const DAY: i64 = 86_400;

/// The status of one entry at `now`.
pub fn classify(entry: &Entry, now: OffsetDateTime, t: &Thresholds) -> Status {
    let facts = match &entry.state {
        State::Present(f) => f,
        State::Missing => return Status::Missing,
        State::Absent(_) => return Status::Absent,
        State::Unreadable(_) => return Status::Unreadable,
    };
    let (warn, critical) = if entry.kind == Kind::Ca {
        (t.ca_warn_days, t.ca_critical_days)
    } else {
        (t.warn_days, t.critical_days)
    };
    let by_dates = by_validity(facts.not_before, facts.not_after, now, warn, critical);
    // a CA whose key cannot sign: critical whatever its expiry (the next renewal would fail)
    if entry.key_problem.is_some() {
        return by_dates.max(Status::Critical);
    }
    by_dates
}

/// The status of a leaf certificate that is not a file of the node (one a component serves).
pub fn of_leaf(facts: &crate::pki::cert::CertFacts, now: OffsetDateTime, t: &Thresholds) -> Status {
    by_validity(
        facts.not_before,
        facts.not_after,
        now,
        t.warn_days,
        t.critical_days,
    )
}

/// The status at `now` of a certificate valid from `not_before` to `not_after`, against day
/// thresholds: expired past NotAfter, not yet valid before NotBefore (no slack: Go's and
/// OpenSSL's verifiers allow none), else by the days left. The one rule `check`, the metrics
/// and the daemon share.
pub fn by_validity(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    warn: u32,
    critical: u32,
) -> Status {
    let left = (not_after - now).whole_seconds();
    if left > 0 && now < not_before {
        Status::NotYetValid
    } else {
        by_days_left(left, warn, critical)
    }
}

/// The status of a certificate with `left` seconds to go, against day thresholds.
pub fn by_days_left(left: i64, warn: u32, critical: u32) -> Status {
    if left <= 0 {
        Status::Expired
    } else if left < i64::from(critical) * DAY {
        Status::Critical
    } else if left < i64::from(warn) * DAY {
        Status::Warning
    } else {
        Status::Ok
    }
}

/// Problems beyond expiry that an operator must see (a leaf no known CA signed).
pub fn notes(entry: &Entry, ca_present: impl Fn(&str) -> bool) -> Option<String> {
    if entry.signer == Signer::Unknown
        && let Some(ca) = entry.expected_ca
        && ca_present(ca)
    {
        return Some(format!(
            "{}: {} is not signed by any known CA (expected {ca}); it cannot be renewed here",
            entry.name,
            entry.source.describe()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_before_its_not_before_is_not_yet_valid_and_urgent() {
        let now = time::macros::datetime!(2027-01-10 12:00 UTC);
        let year = time::Duration::days(365);
        let second = time::Duration::SECOND;
        // issued under a clock a year ahead: a long life left, and yet unusable
        let status = by_validity(now + year, now + 2 * year, now, 30, 7);
        assert_eq!(status, Status::NotYetValid);
        assert_eq!(status.as_str(), "not-yet-valid");
        assert_eq!(status.exit_code(), 2);
        assert!(status > Status::Critical && status < Status::Expired);
        // valid from this very second: ok
        assert_eq!(by_validity(now, now + year, now, 30, 7), Status::Ok);
        assert_eq!(
            by_validity(now + second, now + year, now, 30, 7),
            Status::NotYetValid
        );
        // the expiry rules are unchanged
        assert_eq!(
            by_validity(now - year, now + time::Duration::days(3), now, 30, 7),
            Status::Critical
        );
        assert_eq!(by_validity(now - year, now, now, 30, 7), Status::Expired);
    }
}
