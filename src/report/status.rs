//! Pure classification of an inventory entry against thresholds and the clock.

use time::OffsetDateTime;

use crate::config::Config;
use crate::pki::inventory::{Cap, Entry, Inventory, Kind, Signer, State};

/// How an entry stands; ordered by how much it needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Not there, and that is normal on this node.
    Absent,
    /// Valid for longer than the warning threshold.
    Ok,
    /// A leaf at its CA's cap ([`Cap::reached_by`]): no renewal can extend it, only a rotation
    /// of its CA, so it is never *due*. It counts in `check`'s exit code as its days left do:
    /// the word changes what is renewed, never the urgency (its CA's row, ending no later under
    /// wider thresholds, is normally as urgent; but mid-rotation the row shows the bundle's
    /// first certificate, which may not be the one that caps).
    Capped {
        /// What its days left give by the leaf thresholds: 0 ok, 1 warning, 2 critical.
        exit_code: i32,
    },
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
            Status::Capped { .. } => "capped",
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
            Status::Capped { exit_code } => exit_code,
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
    // expired and not-yet-valid stay what they are: the first is broken whatever caps it, the
    // second a renewal does fix (valid from now)
    if matches!(by_dates, Status::Ok | Status::Warning | Status::Critical)
        && entry.kind != Kind::Ca
        && entry.capped().is_some()
    {
        return Status::Capped {
            exit_code: by_dates.exit_code(),
        };
    }
    by_dates
}

/// The way out for certificates a CA caps, in one place so that the CA rotation command
/// replaces it when it exists: until then it names the Kubernetes procedure, never a command
/// that is not there.
pub const ROTATE_CA_ADVICE: &str = "only a rotation of the CA helps: follow Kubernetes' \
    \"Manually rotate CA certificates\" \
    (https://kubernetes.io/docs/tasks/tls/manual-rotation-of-ca-certificates/), in which \
    `kube-cert-renewer renew all` moves every certificate to the new CA once its key is in place \
    (`kube-cert-renewer rotate-ca` is planned, not available yet)";

/// The leaves each CA caps ([`Entry::capped`]), by CA in kubeadm's order: (the CA's file, the
/// earliest cap, the leaves' names). Only CAs that cap some leaf.
pub fn capping(inventory: &Inventory) -> Vec<(&crate::pki::inventory::CaFile, Cap, Vec<&str>)> {
    inventory
        .ca_files
        .iter()
        .filter_map(|file| {
            let capped: Vec<(&str, &Cap)> = inventory
                .leaves
                .iter()
                .chain(&inventory.others)
                .filter_map(|e| e.capped().map(|cap| (e.name.as_str(), cap)))
                .filter(|(_, cap)| cap.ca == file.spec.name)
                .collect();
            let cap = capped
                .iter()
                .map(|(_, cap)| **cap)
                .min_by_key(|c| c.not_after)?;
            Some((file, cap, capped.into_iter().map(|(n, _)| n).collect()))
        })
        .collect()
}

/// The line `check` says for a CA that caps leaves: which CA, until when, which leaves, and
/// the way out.
pub fn capping_note(
    ca_file: &crate::pki::inventory::CaFile,
    cap: &Cap,
    leaves: &[&str],
    now: OffsetDateTime,
) -> String {
    let ends = if cap.not_after > now {
        format!(
            "ends on {} (in {})",
            crate::report::expires(cap.not_after),
            crate::report::human_duration((cap.not_after - now).whole_seconds())
        )
    } else {
        format!("ended on {}", crate::report::expires(cap.not_after))
    };
    format!(
        "{}: {} {ends} and caps {} certificate(s) there ({}): renewing them cannot extend them; \
         {ROTATE_CA_ADVICE}",
        cap.ca,
        ca_file.cert_path.display(),
        leaves.len(),
        leaves.join(", ")
    )
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
    use crate::pki::cert::CertFacts;
    use crate::pki::inventory::Source;

    fn facts(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertFacts {
        CertFacts {
            der: Vec::new(),
            subject: "CN=kube-apiserver".into(),
            issuer: "CN=kubernetes".into(),
            subject_cn: Some("kube-apiserver".into()),
            issuer_cn: Some("kubernetes".into()),
            serial_hex: "01".into(),
            not_before,
            not_after,
            spki_der: Vec::new(),
        }
    }

    /// The apiserver leaf valid from `not_before` to `not_after`, signed by `ca`, whose renewals
    /// are cut to `cap`.
    fn leaf(not_before: OffsetDateTime, not_after: OffsetDateTime, cap: OffsetDateTime) -> Entry {
        Entry {
            name: "apiserver".into(),
            kind: Kind::Leaf,
            source: Source::PemPair {
                cert: "/etc/kubernetes/pki/apiserver.crt".into(),
                key: "/etc/kubernetes/pki/apiserver.key".into(),
            },
            expected_ca: Some("ca"),
            signer: Signer::Verified { ca: "ca" },
            externally_managed: false,
            state: State::Present(Box::new(facts(not_before, not_after))),
            key_problem: None,
            cap: Some(Cap {
                ca: "ca",
                not_after: cap,
            }),
        }
    }

    const T: Thresholds = Thresholds {
        warn_days: 30,
        critical_days: 7,
        ca_warn_days: 365,
        ca_critical_days: 90,
    };

    #[test]
    fn a_leaf_is_capped_from_a_minute_before_its_cas_end_on() {
        let end = time::macros::datetime!(2027-01-10 12:00 UTC);
        let cap = Cap {
            ca: "ca",
            not_after: end,
        };
        let s = time::Duration::seconds;
        assert!(cap.reached_by(end), "exactly at the cap");
        assert!(cap.reached_by(end - s(59)));
        assert!(
            cap.reached_by(end - s(60)),
            "a renewal would gain a minute at most"
        );
        assert!(
            !cap.reached_by(end - s(61)),
            "a renewal would still extend it"
        );
        assert!(!cap.reached_by(end - time::Duration::days(30)));
        assert!(cap.reached_by(end + s(1)), "a leaf that outlives its CA");
        assert!(cap.reached_by(end + time::Duration::days(300)));
    }

    #[test]
    fn a_capped_leaf_says_so_and_counts_as_its_days_left_do() {
        let now = time::macros::datetime!(2027-01-10 12:00 UTC);
        let day = time::Duration::days(1);
        let year = time::Duration::days(365);
        let at = |days: i64| now + time::Duration::days(days);
        // at its CA's end: capped, with the urgency its days left give
        for (days, exit_code) in [(100, 0), (20, 1), (5, 2)] {
            let status = classify(&leaf(now - year, at(days), at(days)), now, &T);
            assert_eq!(status, Status::Capped { exit_code }, "{days} days");
            assert_eq!(status.as_str(), "capped");
            assert_eq!(status.exit_code(), exit_code);
        }
        // outliving its CA: capped too
        let e = leaf(now - year, at(400), at(200));
        assert_eq!(classify(&e, now, &T), Status::Capped { exit_code: 0 });
        assert_eq!(e.capped().map(|c| c.ca), Some("ca"));
        // 61 seconds short of the cap: a renewal would extend it
        let e = leaf(now - year, at(5) - time::Duration::seconds(61), at(5));
        assert_eq!(classify(&e, now, &T), Status::Critical);
        assert_eq!(e.capped(), None);
        // expired stays expired, not valid yet stays not valid yet (a renewal fixes that)
        let e = leaf(now - year, now - day, now - day);
        assert_eq!(classify(&e, now, &T), Status::Expired);
        let e = leaf(now + day, at(5), at(5));
        assert_eq!(classify(&e, now, &T), Status::NotYetValid);
        // no cap known (no known CA signed it): never capped
        let mut e = leaf(now - year, at(5), at(5));
        e.cap = None;
        assert_eq!(classify(&e, now, &T), Status::Critical);
    }

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
