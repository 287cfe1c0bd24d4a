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
            Status::Expired => "expired",
            Status::Unreadable => "unreadable",
        }
    }

    /// `check`'s exit code for this status: 0 fine, 1 attention, 2 act now.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Absent | Status::Ok => 0,
            Status::Missing | Status::Warning => 1,
            Status::Critical | Status::Expired | Status::Unreadable => 2,
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
    let by_expiry = by_days_left(facts.residual_seconds(now), warn, critical);
    // a CA whose key cannot sign: critical whatever its expiry (the next renewal would fail)
    if entry.key_problem.is_some() {
        return by_expiry.max(Status::Critical);
    }
    by_expiry
}

/// The status of a leaf certificate that is not a file of the node (one a component serves).
pub fn of_leaf(facts: &crate::pki::cert::CertFacts, now: OffsetDateTime, t: &Thresholds) -> Status {
    by_days_left(facts.residual_seconds(now), t.warn_days, t.critical_days)
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
