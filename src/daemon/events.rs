//! The journal's vocabulary: one function per kind of event, each with its stable
//! `MESSAGE_ID`, its priority and its structured fields (`CERT_NAME`, `CERT_PATH`, `NOT_AFTER`,
//! `DAYS_LEFT`, `CA_NAME`, `COMPONENT`, `STATE_DIR`, `ACTION`, `OUTCOME`), so a run by hand and
//! the daemon say the same thing and `journalctl MESSAGE_ID=…` finds every occurrence. The
//! catalog in `systemd/kube-cert-renewer.catalog` explains each one (`journalctl -x`).
//!
//! Priorities: warning for the warning threshold, error for critical, expired and every
//! failure, notice for what went well.

use time::OffsetDateTime;
use tracing::{error, info, warn};

use crate::node::restart;
use crate::renew::execute;
use crate::report::rfc3339;

/// The kinds of event, each with its journal `MESSAGE_ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A certificate fell below the warning threshold.
    Expiring,
    /// A certificate fell below the critical threshold.
    Critical,
    /// A certificate expired.
    Expired,
    /// A certificate's NotBefore is still ahead: issued under a clock that was ahead, or this
    /// clock is behind. No TLS peer accepts it.
    NotYetValid,
    /// The daemon's memory holds instants later than now: the clock was ahead when they were
    /// recorded (or is behind now); they are not trusted.
    ClockSuspect,
    /// A certificate was renewed.
    Renewed,
    /// A renewal was refused or failed.
    RenewalFailed,
    /// Components were restarted and verified.
    Restarted,
    /// A restart failed.
    RestartFailed,
    /// Renewed certificates were put back after their restart failed.
    RolledBack,
    /// A component still runs older certificates than the ones on disk.
    RestartPending,
    /// A new configuration was refused; the old one stays.
    ConfigInvalid,
    /// A restart waits for the cluster-wide Lease: another node holds it, or the API does not
    /// answer.
    LeaseWaiting,
    /// A restart goes on without the Lease (the API does not answer and an exception applies).
    LeaseBypassed,
    /// kubeadm files are missing from the node (deleted), not merely expiring.
    FilesMissing,
    /// Missing files were brought back (restored from a snapshot or re-issued).
    Recovered,
    /// A recovery was refused, failed, or stopped because a CA or `sa.key` is gone everywhere.
    RecoveryFailed,
    /// A CA's key file is there but does not parse or does not match its certificate: the CA
    /// cannot sign, and the next renewal would fail.
    CaKeyDamaged,
    /// The state dir may be written by another user: the daemon does no job there until root
    /// makes it its own again.
    StateDirUntrusted,
    /// A CA caps certificates: they end at its end, and no renewal can extend them; only a
    /// rotation of the CA can.
    CaCapsRenewal,
}

impl Kind {
    /// Every kind, for the catalog and its test.
    pub const ALL: [Kind; 20] = [
        Kind::Expiring,
        Kind::Critical,
        Kind::Expired,
        Kind::NotYetValid,
        Kind::ClockSuspect,
        Kind::Renewed,
        Kind::RenewalFailed,
        Kind::Restarted,
        Kind::RestartFailed,
        Kind::RolledBack,
        Kind::RestartPending,
        Kind::ConfigInvalid,
        Kind::LeaseWaiting,
        Kind::LeaseBypassed,
        Kind::FilesMissing,
        Kind::Recovered,
        Kind::RecoveryFailed,
        Kind::CaKeyDamaged,
        Kind::StateDirUntrusted,
        Kind::CaCapsRenewal,
    ];

    /// The stable journal `MESSAGE_ID` (128 bits, hex, as systemd's catalog wants them).
    pub fn message_id(self) -> &'static str {
        match self {
            Kind::Expiring => "e25d74efa4dc4d658d9fc5e1ac85237d",
            Kind::Critical => "5bcbbd50f2864212bd43703953cd40d3",
            Kind::Expired => "d976ace9b36045b0a6193a0601be7095",
            Kind::NotYetValid => "b4fbb4344218416982cdeb0763e36326",
            Kind::ClockSuspect => "95060b476e4046da9166a56b2ad6982c",
            Kind::Renewed => "2683c2c5c16540aaa77fdadabd345c27",
            Kind::RenewalFailed => "aabd2af42b824c25beaea155c6ef516e",
            Kind::Restarted => "e9dd1294f7de4e319a70007f29ec3f0b",
            Kind::RestartFailed => "e7620d3ba19842fab268f79a3ee13d9d",
            Kind::RolledBack => "564050f5c6de45ad9832bb06e9a6b5aa",
            Kind::RestartPending => "ad2cf533d0504b4cac56384eb34506ff",
            Kind::ConfigInvalid => "bad79c2970464c8aade6aef919804bdf",
            Kind::LeaseWaiting => "3645b827b0a74b128d2f8daab4797442",
            Kind::LeaseBypassed => "721d6050c17d4240bfb2f6fd06701826",
            Kind::FilesMissing => "0b9c1d7e5a2f4c6e8d3b7a1f9e4c2d60",
            Kind::Recovered => "6f3e8a2c1b7d4e9f8a5c3d2b1e7f6a49",
            Kind::RecoveryFailed => "c84d2e7f1a9b4c3d8e6f5a2b7c1d9e03",
            Kind::CaKeyDamaged => "b8bdebe50cc84c93814bb64583d215ee",
            Kind::StateDirUntrusted => "fee2e8db21304cdaa7181662983a7cb7",
            Kind::CaCapsRenewal => "b69961936e7c4cc3a934300369e7548e",
        }
    }

    /// Its name (the `OUTCOME`-style word used in metrics and tests).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Expiring => "expiring",
            Kind::Critical => "critical",
            Kind::Expired => "expired",
            Kind::NotYetValid => "not-yet-valid",
            Kind::ClockSuspect => "clock-suspect",
            Kind::Renewed => "renewed",
            Kind::RenewalFailed => "renewal-failed",
            Kind::Restarted => "restarted",
            Kind::RestartFailed => "restart-failed",
            Kind::RolledBack => "rolled-back",
            Kind::RestartPending => "restart-pending",
            Kind::ConfigInvalid => "config-invalid",
            Kind::LeaseWaiting => "lease-waiting",
            Kind::LeaseBypassed => "lease-bypassed",
            Kind::FilesMissing => "files-missing",
            Kind::Recovered => "recovered",
            Kind::RecoveryFailed => "recovery-failed",
            Kind::CaKeyDamaged => "ca-key-damaged",
            Kind::StateDirUntrusted => "state-dir-untrusted",
            Kind::CaCapsRenewal => "ca-caps-renewal",
        }
    }
}

/// One certificate an alert is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAlert {
    /// kubeadm's name (or the path of an extra file).
    pub name: String,
    /// Where it lives.
    pub path: String,
    /// Its NotBefore (a certificate issued under a clock that was ahead is not valid yet).
    pub not_before: OffsetDateTime,
    /// Its NotAfter.
    pub not_after: OffsetDateTime,
    /// Whole days left (negative once expired).
    pub days_left: i64,
    /// The CA that signed it, when known.
    pub ca: Option<String>,
}

/// kubeadm files are gone from the node (`missing`: one line each, naming the file).
pub fn files_missing(missing: &[String], reminder: bool) {
    let kind = Kind::FilesMissing;
    let action = if reminder { "reminder" } else { "alert" };
    error!(
        message_id = kind.message_id(),
        cert_path = %missing.join(","), action = action, outcome = kind.name(),
        "{} kubeadm file(s) missing from the node: {}; `kube-cert-renewer recover` brings them back",
        missing.len(),
        missing.join(", ")
    );
}

/// A CA's key cannot sign for it (`reason` names the key file and what is wrong): alerted when
/// first seen, then daily as a `reminder`.
pub fn ca_key_damaged(ca: &str, key_path: &str, reason: &str, reminder: bool) {
    let kind = Kind::CaKeyDamaged;
    let action = if reminder { "reminder" } else { "alert" };
    error!(
        message_id = kind.message_id(),
        ca_name = ca,
        cert_path = key_path,
        action = action,
        outcome = kind.name(),
        "CA {ca} cannot sign: {reason}; `kube-cert-renewer recover` restores a snapshot's copy \
         that matches its certificate"
    );
}

/// A CA caps certificates (`capping`: which, and until when): renewing them cannot extend
/// them. Said when that changes, then daily as a reminder; names the way out.
pub fn ca_caps_renewal(capping: &crate::daemon::decide::Capping, now: OffsetDateTime) {
    let kind = Kind::CaCapsRenewal;
    let action = if capping.reminder {
        "reminder"
    } else {
        "alert"
    };
    let not_after = rfc3339(capping.at);
    let days = crate::daemon::decide::days_left(capping.at, now);
    let ca = capping.ca.as_str();
    let ends = if capping.at > now {
        format!("ends on {not_after} (in {days} days)")
    } else {
        format!("ended on {not_after}")
    };
    warn!(
        message_id = kind.message_id(),
        ca_name = ca, cert_name = %capping.leaves.join(","), cert_path = %capping.path,
        not_after = %not_after, days_left = days, action, outcome = kind.name(),
        "CA {ca} {ends} and caps {} certificate(s) there ({}): renewing them cannot extend \
         them, so they are not renewed again; {}",
        capping.leaves.len(),
        capping.leaves.join(", "),
        crate::report::status::ROTATE_CA_ADVICE
    );
}

/// Missing files were brought back; those nothing could bring back are said as a failure.
pub fn recovered(outcome: &crate::recover::run::Outcome) {
    for u in &outcome.unrecoverable {
        let failed = Kind::RecoveryFailed;
        error!(
            message_id = failed.message_id(),
            cert_path = %u.path.display(), action = "recover", outcome = failed.name(),
            "recovery: {} is still missing: {}",
            u.path.display(), u.why
        );
    }
    let kind = Kind::Recovered;
    for step in &outcome.steps {
        let files: Vec<String> = step.files.iter().map(|f| f.display().to_string()).collect();
        info!(
            message_id = kind.message_id(),
            cert_name = %step.name, cert_path = %files.join(","), action = "recover",
            outcome = kind.name(),
            "{} {}: {}",
            step.name, step.how, files.join(", ")
        );
    }
}

/// A recovery did not happen (refused, failed, or stopped for a secret gone everywhere).
pub fn recovery_failed(error: &crate::recover::run::RecoverError) {
    let kind = Kind::RecoveryFailed;
    error!(
        message_id = kind.message_id(),
        action = "recover",
        outcome = kind.name(),
        "recovery: {error}"
    );
}

/// The state dir `dir` may be written by another user (`why` names the directory, its mode and
/// owner): no renewal, restart, recovery, snapshot or record of the daemon's until it is
/// root's alone again; the certificates are still watched and alerted.
pub fn state_dir_untrusted(dir: &std::path::Path, why: &str, reminder: bool) {
    let kind = Kind::StateDirUntrusted;
    let action = if reminder { "reminder" } else { "alert" };
    error!(
        message_id = kind.message_id(),
        state_dir = %dir.display(), action = action, outcome = "refused",
        "the state dir {} may be written by another user: {why}. No renewal, restart, recovery \
         or snapshot until it is root's alone (the certificates are still watched)",
        dir.display()
    );
}

/// A certificate crossed into (or, as a daily `reminder`, is still in) the state of `kind`:
/// [`Kind::Expiring`], [`Kind::Critical`], [`Kind::NotYetValid`] or [`Kind::Expired`].
pub fn certificate(kind: Kind, cert: &CertAlert, reminder: bool) {
    let action = if reminder { "reminder" } else { "alert" };
    let not_after = rfc3339(cert.not_after);
    let ca = cert.ca.as_deref().unwrap_or("");
    let days = cert.days_left;
    match kind {
        Kind::Expiring => warn!(
            message_id = kind.message_id(),
            cert_name = %cert.name, cert_path = %cert.path, not_after = %not_after,
            days_left = days, ca_name = ca, action, outcome = kind.name(),
            "{} expires in {days} days ({not_after}): below the warning threshold",
            cert.name
        ),
        Kind::Critical => error!(
            message_id = kind.message_id(),
            cert_name = %cert.name, cert_path = %cert.path, not_after = %not_after,
            days_left = days, ca_name = ca, action, outcome = kind.name(),
            "{} expires in {days} days ({not_after}): CRITICAL",
            cert.name
        ),
        Kind::NotYetValid => {
            let not_before = rfc3339(cert.not_before);
            error!(
                message_id = kind.message_id(),
                cert_name = %cert.name, cert_path = %cert.path, not_before = %not_before,
                not_after = %not_after, days_left = days, ca_name = ca, action,
                outcome = kind.name(),
                "{} is not valid before {not_before}: issued under a clock that was ahead, or \
                 this clock is behind; no TLS peer accepts it: CRITICAL",
                cert.name
            )
        }
        _ => error!(
            message_id = Kind::Expired.message_id(),
            cert_name = %cert.name, cert_path = %cert.path, not_after = %not_after,
            days_left = days, ca_name = ca, action, outcome = Kind::Expired.name(),
            "{} EXPIRED on {not_after}",
            cert.name
        ),
    }
}

/// The daemon's memory held instants later than now (`what`: which, and what is done instead).
pub fn clock_suspect(what: &str) {
    let kind = Kind::ClockSuspect;
    warn!(
        message_id = kind.message_id(),
        action = "evaluate",
        outcome = kind.name(),
        "the clock was ahead when the daemon recorded its state, or is behind now: {what}"
    );
}

/// A renewal wrote new certificates: one event per certificate.
pub fn renewed(outcome: &execute::Outcome) {
    let kind = Kind::Renewed;
    for r in &outcome.renewed {
        let not_after = rfc3339(r.new_not_after);
        info!(
            message_id = kind.message_id(),
            cert_name = %r.name, cert_path = %r.path.display(), not_after = %not_after,
            ca_name = r.ca, serial = %r.serial, action = "renew", outcome = kind.name(),
            "{} renewed until {not_after} ({})",
            r.name, r.key_action
        );
    }
}

/// A renewal was refused before anything changed.
pub fn renewal_refused(reasons: &[String]) {
    let kind = Kind::RenewalFailed;
    error!(
        message_id = kind.message_id(),
        action = "renew",
        outcome = "refused",
        "renewal refused, nothing was changed: {}",
        reasons.join("; ")
    );
}

/// A renewal failed after writing began.
pub fn renewal_failed(message: &str) {
    let kind = Kind::RenewalFailed;
    error!(
        message_id = kind.message_id(),
        action = "renew",
        outcome = "failed",
        "renewal failed: {message}"
    );
}

/// Components were restarted and verified.
pub fn restarted(outcome: &restart::Outcome) {
    let kind = Kind::Restarted;
    for r in &outcome.restarted {
        info!(
            message_id = kind.message_id(),
            component = %r.name, action = "restart", outcome = kind.name(),
            "{} restarted and healthy after {:.1}s",
            r.name,
            r.healthy_after.as_secs_f64()
        );
    }
}

/// A restart failed.
pub fn restart_failed(components: &[String], message: &str) {
    let kind = Kind::RestartFailed;
    error!(
        message_id = kind.message_id(),
        component = %components.join(","), action = "restart", outcome = "failed",
        "restart of {} failed: {message}",
        components.join(", ")
    );
}

/// Renewed certificates were put back from `backup` after their restart failed.
pub fn rolled_back(backup: &std::path::Path, files: usize) {
    let kind = Kind::RolledBack;
    error!(
        message_id = kind.message_id(),
        backup = %backup.display(), action = "rollback", outcome = kind.name(),
        "the previous certificates were restored from {} ({files} files)",
        backup.display()
    );
}

/// `component` still runs certificates older than the ones on disk (since `since`).
pub fn restart_pending(component: &str, since: &str, renewed: &[String]) {
    let kind = Kind::RestartPending;
    error!(
        message_id = kind.message_id(),
        component, since, cert_name = %renewed.join(","), action = "restart",
        outcome = "pending",
        "{component} still runs older certificates than the ones on disk (renewed {since}: {}); \
         it needs a restart",
        renewed.join(", ")
    );
}

/// A reloaded configuration was refused; the running one stays.
pub fn config_invalid(message: &str) {
    let kind = Kind::ConfigInvalid;
    error!(
        message_id = kind.message_id(),
        action = "reload",
        outcome = "rejected",
        "the new configuration is invalid and was not applied (the previous one stays): {message}"
    );
}

/// A restart waits for the restart Lease (`why`: who holds it, or what the API said).
pub fn lease_waiting(components: &[String], why: &str) {
    let kind = Kind::LeaseWaiting;
    warn!(
        message_id = kind.message_id(),
        component = %components.join(","), action = "restart", outcome = "waiting",
        "restart of {} waits for the restart Lease: {why}",
        components.join(", ")
    );
}

/// A restart goes on without the restart Lease, and why that is allowed.
pub fn lease_bypassed(components: &[String], why: &str) {
    let kind = Kind::LeaseBypassed;
    warn!(
        message_id = kind.message_id(),
        component = %components.join(","), action = "restart", outcome = "without-lease",
        "restart of {} goes on WITHOUT the restart Lease: {why}",
        components.join(", ")
    );
}

/// An ordinary line of the daemon's story (window run, waiting for the lock, …).
pub fn note(message: &str) {
    info!("{message}");
}

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTo {
    /// The journal when one listens, else stderr in a human format.
    Auto,
    /// The journal only (nothing when none listens): a run by hand, whose own output is for
    /// the person at the terminal.
    #[value(skip)]
    JournalOnly,
    /// The journal (an error to start when none listens).
    Journal,
    /// stderr, in a human format.
    Stderr,
}

/// Routes events as `to` says; returns where they go ("journal" or "stderr") or why the
/// journal cannot be used.
pub fn init_logging(to: LogTo) -> Result<&'static str, String> {
    use tracing_subscriber::layer::SubscriberExt;
    let journald = match to {
        LogTo::Stderr => None,
        _ => tracing_journald::layer().ok().map(|layer| {
            layer
                .with_field_prefix(None)
                .with_syslog_identifier("kube-cert-renewer".into())
        }),
    };
    if to == LogTo::Journal && journald.is_none() {
        return Err("no journal listens at /run/systemd/journal/socket".into());
    }
    let where_to = if journald.is_some() {
        "journal"
    } else {
        "stderr"
    };
    let stderr = (journald.is_none() && to != LogTo::JournalOnly).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(false)
    });
    // our events from info up; the libraries' (the gRPC stack) only when something is wrong
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("kube_cert_renewer", tracing::Level::INFO)
        .with_default(tracing::Level::WARN);
    let subscriber = tracing_subscriber::registry()
        .with(journald)
        .with(stderr)
        .with(filter);
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(where_to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_catalog_entry_and_a_distinct_id() {
        let catalog = include_str!("../../systemd/kube-cert-renewer.catalog");
        let mut ids = std::collections::BTreeSet::new();
        for kind in Kind::ALL {
            let id = kind.message_id();
            assert_eq!(id.len(), 32, "{kind:?}");
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{kind:?}");
            assert!(ids.insert(id), "{kind:?} shares its id");
            assert_eq!(
                catalog.matches(&format!("-- {id}\n")).count(),
                1,
                "{kind:?} ({id}) must have exactly one catalog entry"
            );
        }
        assert_eq!(catalog.matches("\n-- ").count(), Kind::ALL.len());
    }
}
