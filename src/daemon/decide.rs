//! What the daemon does at one evaluation: a pure function of the certificates, the calendar,
//! what it remembers and the clock. No I/O, so ten years of windows run in milliseconds in
//! tests and the loop around it only reads, acts and sleeps.
//!
//! - **Alerts** when a certificate crosses a threshold (warning, critical, expired), not at
//!   every evaluation; plus one reminder a day while anything is not ok.
//! - **The window**: when a window has come (or was missed while the node was down), renew
//!   every renewable certificate that would otherwise fall below `critical_days` before the
//!   next window — `renew_before_days` at the least, more when the schedule is sparser.
//! - **Emergency**: a renewable certificate below `critical_days`, expired or not valid yet is
//!   renewed at once, outside the window; a failed attempt is retried an hour later.
//! - **Capped leaves** (ending at their CA's end: no renewal can extend them) are never due,
//!   by the window nor the emergency rule, and their warning and critical are left to their
//!   CA: one alert per CA naming them when they change, reminded daily.
//! - **A failed window** is not recorded as done: its job is tried again an hour later.
//! - **The clock**: what the memory recorded later than now was recorded under a clock that
//!   was ahead, and is not trusted (see [`trusted`]).
//! - **Pending restarts** are retried at every evaluation until one succeeds.
//! - **When to look again**: at the next window, and at least hourly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::daemon::events::{CertAlert, Kind};
use crate::daemon::schedule::Calendar;

const DAY: i64 = 86_400;

/// The longest the daemon sleeps without looking at the certificates again.
pub const MAX_SLEEP: Duration = Duration::hours(1);

/// How long after a failed emergency renewal the next attempt comes.
pub const EMERGENCY_RETRY: Duration = Duration::hours(1);

/// How long after a failed window (or catch-up) job the next attempt comes.
pub const WINDOW_RETRY: Duration = Duration::hours(1);

/// How far in the future of now a recorded instant may be and still be trusted: the wall
/// clock may be stepped back a little (NTP) between two evaluations; more is a clock that was
/// ahead.
pub const CLOCK_SLACK: Duration = Duration::minutes(10);

/// How long after a restart of pending components (that the runtime answered, and that failed)
/// the next attempt comes.
pub const PENDING_RETRY: Duration = Duration::hours(1);

/// One certificate as the daemon weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The alert's view of it: name, path, NotAfter, CA.
    pub cert: CertAlert,
    /// A CA (CA thresholds, never renewed).
    pub is_ca: bool,
    /// The product renews it when due (kubeadm's set, signed by a CA whose key is here).
    pub renewable: bool,
    /// It ends at its CA's end ([`crate::pki::inventory::Cap::reached_by`]), which is this:
    /// no renewal can extend it, so it is never due, and its CA speaks for it.
    pub capped: Option<OffsetDateTime>,
}

impl Watched {
    /// Whether a `renew --due` at `at` renewing what expires within `days` renews it (the rule
    /// of the planner, for the decisions and `schedule`): renewable, and not valid yet, or
    /// ending within the horizon and not at its CA's cap.
    pub fn due(&self, at: OffsetDateTime, days: u32) -> bool {
        let left = (self.cert.not_after - at).whole_seconds();
        self.renewable
            && (at < self.cert.not_before
                || (self.capped.is_none() && left < i64::from(days) * DAY))
    }
}

/// A CA that caps leaves, as the daemon says it: renewing them cannot extend them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capping {
    /// kubeadm's name of the CA.
    pub ca: String,
    /// Its certificate file (empty when the CA row is not among the watched).
    pub path: String,
    /// The earliest end it caps them at.
    pub at: OffsetDateTime,
    /// The leaves it caps, by name.
    pub leaves: Vec<String>,
    /// A daily reminder rather than news.
    pub reminder: bool,
}

/// The leaves each CA caps: CA name → (the earliest cap, the leaves' names).
pub fn capping(certs: &[Watched]) -> BTreeMap<String, (OffsetDateTime, Vec<String>)> {
    let mut out: BTreeMap<String, (OffsetDateTime, Vec<String>)> = BTreeMap::new();
    for w in certs.iter().filter(|w| !w.is_ca) {
        if let (Some(at), Some(ca)) = (w.capped, &w.cert.ca) {
            let entry = out.entry(ca.clone()).or_insert((at, Vec::new()));
            entry.0 = entry.0.min(at);
            entry.1.push(w.cert.name.clone());
        }
    }
    out
}

/// How a certificate stands, ordered by gravity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Beyond the warning threshold.
    Ok,
    /// Inside the warning threshold.
    Warning,
    /// Inside the critical threshold.
    Critical,
    /// Before NotBefore (issued under a clock that was ahead): refused by every peer.
    #[serde(rename = "not-yet-valid")]
    NotYetValid,
    /// Past NotAfter.
    Expired,
}

impl Level {
    /// The alert kind of a level other than `Ok`.
    pub fn kind(self) -> Option<Kind> {
        match self {
            Level::Ok => None,
            Level::Warning => Some(Kind::Expiring),
            Level::Critical => Some(Kind::Critical),
            Level::NotYetValid => Some(Kind::NotYetValid),
            Level::Expired => Some(Kind::Expired),
        }
    }
}

/// The thresholds and switches the decision uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Leaf warning threshold, days.
    pub warn_days: u32,
    /// Leaf critical threshold, days.
    pub critical_days: u32,
    /// CA warning threshold, days.
    pub ca_warn_days: u32,
    /// CA critical threshold, days.
    pub ca_critical_days: u32,
    /// The least a window renews ahead, days.
    pub renew_before_days: u32,
    /// Renew below `critical_days` at once.
    pub emergency_renewal: bool,
}

impl From<&crate::config::Config> for Policy {
    fn from(c: &crate::config::Config) -> Self {
        Policy {
            warn_days: c.warn_days,
            critical_days: c.critical_days,
            ca_warn_days: c.ca_warn_days,
            ca_critical_days: c.ca_critical_days,
            renew_before_days: c.renew_before_days,
            emergency_renewal: c.emergency_renewal,
        }
    }
}

/// What the daemon keeps between evaluations (and across its restarts, in
/// `<state-dir>/daemon.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// The last window whose job ran and succeeded.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_window: Option<OffsetDateTime>,
    /// When the job of a window later than `last_window` last failed (it is tried again
    /// [`WINDOW_RETRY`] later).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub window_failed: Option<OffsetDateTime>,
    /// Each certificate's level at the last evaluation.
    #[serde(default)]
    pub levels: BTreeMap<String, Level>,
    /// When the last daily reminder went out.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_reminder: Option<OffsetDateTime>,
    /// When the last emergency renewal was tried.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_emergency: Option<OffsetDateTime>,
    /// The last job that ran: when, whether it succeeded, how many certificates it renewed.
    #[serde(default)]
    pub last_run: Option<LastRun>,
    /// When pending restarts were last said in the journal.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub pending_alerted: Option<OffsetDateTime>,
    /// When a pending restart was last tried (the runtime answered).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub pending_tried: Option<OffsetDateTime>,
    /// The leaves each CA capped at the last evaluation (CA → names): a change is news.
    #[serde(default)]
    pub capping: BTreeMap<String, Vec<String>>,
}

/// The last job the daemon ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// When it ran.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Everything asked for was done (renewed, restarted, verified).
    pub success: bool,
    /// How many certificates it renewed.
    pub renewed: usize,
}

/// Why a renewal job runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The window came.
    Window,
    /// A window passed while the daemon was not running.
    CatchUp,
    /// A certificate is below `critical_days` or expired.
    Emergency,
}

/// A renewal job to run now: renew what expires within `due_within_days`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewOrder {
    /// Why now.
    pub why: Why,
    /// The `--due` horizon of this run, days.
    pub due_within_days: u32,
    /// The window this run stands for (to remember once it ran).
    pub window: Option<OffsetDateTime>,
    /// Said in the journal: e.g. that a sparse schedule widened the horizon.
    pub note: Option<String>,
}

/// What one evaluation decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Alerts to raise now: (kind, certificate, is a daily reminder).
    pub alerts: Vec<(Kind, CertAlert, bool)>,
    /// The CAs that cap leaves, to say now (when that changed, and as a daily reminder).
    pub capping: Vec<Capping>,
    /// A renewal to run now.
    pub renew: Option<RenewOrder>,
    /// Retry the restart the pending record asks for (no renewal runs now).
    pub restart_pending: bool,
    /// The next window (for `STATUS=` and metrics).
    pub next_window: Option<OffsetDateTime>,
    /// When to evaluate again at the latest.
    pub next_wake: OffsetDateTime,
    /// The memory after this evaluation (levels, reminder, what [`trusted`] set aside); the
    /// caller records the job with [`after_job`] once it is done.
    pub memory: Memory,
    /// The recorded instants not trusted at this evaluation (later than now), each said with
    /// what replaces it: the clock was ahead when they were recorded, or is behind now.
    pub distrusted: Vec<String>,
}

/// The level of `w` at `now` (the thresholds as `check` applies them).
pub fn level(w: &Watched, now: OffsetDateTime, policy: &Policy) -> Level {
    use crate::report::status::Status;
    let (warn, critical) = if w.is_ca {
        (policy.ca_warn_days, policy.ca_critical_days)
    } else {
        (policy.warn_days, policy.critical_days)
    };
    match crate::report::status::by_validity(
        w.cert.not_before,
        w.cert.not_after,
        now,
        warn,
        critical,
    ) {
        Status::Expired => Level::Expired,
        Status::NotYetValid => Level::NotYetValid,
        Status::Critical => Level::Critical,
        Status::Warning => Level::Warning,
        _ => Level::Ok,
    }
}

/// Whole days left, rounded down (negative once expired), as the alerts say it.
pub fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (not_after - now).whole_seconds().div_euclid(DAY)
}

/// The `--due` horizon of a window run at `now`: what would fall below `critical_days` before
/// the window after it, and `renew_before_days` at the least. Returns the days and, when the
/// schedule made it wider than `renew_before_days`, a note saying so.
pub fn window_horizon(
    calendar: &Calendar,
    now: OffsetDateTime,
    policy: &Policy,
) -> (u32, Option<String>) {
    let gap_days = calendar
        .next_after(now)
        .map(|next| {
            let secs = (next - now).whole_seconds().max(0);
            u32::try_from((secs + DAY - 1) / DAY).unwrap_or(u32::MAX)
        })
        .unwrap_or(0);
    let needed = gap_days.saturating_add(policy.critical_days);
    if needed > policy.renew_before_days {
        (
            needed,
            Some(format!(
                "the next window is {gap_days} days away: renewing what expires within {needed} \
                 days (more than renew_before_days = {}) so nothing falls below critical_days \
                 ({}) before it",
                policy.renew_before_days, policy.critical_days
            )),
        )
    } else {
        (policy.renew_before_days, None)
    }
}

/// The memory as far as it can be trusted at `now`, and what was set aside (one line each).
///
/// The rule: an instant recorded later than `now + CLOCK_SLACK` was recorded under a clock that
/// was ahead (or this one is behind), and is no evidence of anything.
/// - `last_window`: the window run then may be a window that has not come yet. It is replaced
///   by the newest trustworthy evidence of work on the node — the newest NotBefore among the
///   node's certificates that is not itself in the future — as the window at or before it
///   (give or take the slack, never later than now; nothing later is taken as done: the last
///   window since, if any, is caught up, renewing only what is due). With no such
///   certificate it is forgotten, as at a first start.
/// - the emergency, window and pending-restart retries, the reminder and the pending alert:
///   forgotten (a timer a year ahead would hold them off for a year).
///
/// `last_run` stays: it is what happened, for the status line, and decides nothing.
pub fn trusted(
    now: OffsetDateTime,
    certs: &[Watched],
    calendar: &Calendar,
    memory: &Memory,
) -> (Memory, Vec<String>) {
    let latest = now + CLOCK_SLACK;
    let ahead = |t: &Option<OffsetDateTime>| t.is_some_and(|t| t > latest);
    let said = |what: &str, t: OffsetDateTime| {
        format!(
            "{what} {} is later than now ({})",
            crate::report::rfc3339(t),
            crate::report::rfc3339(now)
        )
    };
    let mut memory = memory.clone();
    let mut distrusted = Vec::new();
    if let Some(recorded) = memory.last_window.filter(|t| *t > latest) {
        let evidence = certs
            .iter()
            .map(|w| w.cert.not_before)
            .filter(|t| *t <= latest)
            .max();
        // renewals write NotBefore a few minutes back (see `reissue::validity`): a certificate
        // renewed by a window stands for that window
        memory.last_window =
            evidence.and_then(|t| calendar.last_at_or_before((t + CLOCK_SLACK).min(now)));
        distrusted.push(match (evidence, memory.last_window) {
            (Some(issued), Some(window)) => format!(
                "{}; the last window taken as run is {}, the one before the newest valid \
                 certificate (issued {})",
                said("the last window run", recorded),
                crate::report::rfc3339(window),
                crate::report::rfc3339(issued)
            ),
            _ => format!(
                "{}; forgotten, as at a first start",
                said("the last window run", recorded)
            ),
        });
    }
    for (what, field) in [
        ("the failed window's job", &mut memory.window_failed),
        ("the last emergency renewal", &mut memory.last_emergency),
        ("the last pending-restart retry", &mut memory.pending_tried),
        ("the last reminder", &mut memory.last_reminder),
        (
            "the last restart-pending alert",
            &mut memory.pending_alerted,
        ),
    ] {
        if ahead(field)
            && let Some(t) = field.take()
        {
            distrusted.push(format!("{}; forgotten", said(what, t)));
        }
    }
    (memory, distrusted)
}

/// The memory after a job that started at `at` (`window`: the window a renewal job stood
/// for): the run is recorded; the window only when the job succeeded — a failed one stays due
/// and is tried again [`WINDOW_RETRY`] later.
pub fn after_job(
    memory: &Memory,
    at: OffsetDateTime,
    window: Option<OffsetDateTime>,
    success: bool,
    renewed: usize,
) -> Memory {
    let mut next = memory.clone();
    next.last_run = Some(LastRun {
        at,
        success,
        renewed,
    });
    if let Some(window) = window {
        if success {
            next.last_window = Some(window);
            next.window_failed = None;
        } else {
            next.window_failed = Some(at);
        }
    }
    next
}

/// Decides one evaluation at `now`.
pub fn decide(
    now: OffsetDateTime,
    certs: &[Watched],
    calendar: &Calendar,
    policy: &Policy,
    memory: &Memory,
    restart_pending: bool,
) -> Decision {
    let (memory, distrusted) = trusted(now, certs, calendar, memory);
    let memory = &memory;
    let mut next = memory.clone();
    let mut alerts = Vec::new();
    let mut levels = BTreeMap::new();
    let ca_levels: BTreeMap<&str, Level> = certs
        .iter()
        .filter(|w| w.is_ca)
        .map(|w| (w.cert.name.as_str(), level(w, now, policy)))
        .collect();
    for w in certs {
        let mut now_level = level(w, now, policy);
        // a capped leaf's warning or critical is its CA's matter, said by the CA's own alerts
        // and the capping one — unless its CA's row is less grave (its thresholds are lower,
        // or the row shows another certificate of a bundle than the one that caps)
        if w.capped.is_some()
            && matches!(now_level, Level::Warning | Level::Critical)
            && w.cert
                .ca
                .as_deref()
                .and_then(|ca| ca_levels.get(ca))
                .is_some_and(|ca_level| *ca_level >= now_level)
        {
            now_level = Level::Ok;
        }
        let before = memory
            .levels
            .get(&w.cert.name)
            .copied()
            .unwrap_or(Level::Ok);
        if now_level > before
            && let Some(kind) = now_level.kind()
        {
            alerts.push((kind, w.cert.clone(), false));
        }
        levels.insert(w.cert.name.clone(), now_level);
    }
    next.levels = levels;
    let not_ok: Vec<&Watched> = certs
        .iter()
        .filter(|w| {
            next.levels
                .get(&w.cert.name)
                .is_some_and(|l| *l > Level::Ok)
        })
        .collect();
    let capped_now = capping(certs);
    let capping_of = |ca: &str, (at, leaves): &(OffsetDateTime, Vec<String>), reminder| Capping {
        ca: ca.to_string(),
        path: certs
            .iter()
            .find(|w| w.is_ca && w.cert.name == ca)
            .map(|w| w.cert.path.clone())
            .unwrap_or_default(),
        at: *at,
        leaves: leaves.clone(),
        reminder,
    };
    let mut capping_alerts: Vec<Capping> = capped_now
        .iter()
        .filter(|(ca, (_, leaves))| memory.capping.get(*ca) != Some(leaves))
        .map(|(ca, capped)| capping_of(ca, capped, false))
        .collect();
    next.capping = capped_now
        .iter()
        .map(|(ca, (_, leaves))| (ca.clone(), leaves.clone()))
        .collect();
    if !alerts.is_empty() || !capping_alerts.is_empty() {
        // a crossing counts as the day's word on the matter
        next.last_reminder = Some(now);
    } else if (!not_ok.is_empty() || !capped_now.is_empty())
        && memory
            .last_reminder
            .is_none_or(|last| now - last >= Duration::DAY)
    {
        for w in &not_ok {
            if let Some(kind) = next.levels[&w.cert.name].kind() {
                alerts.push((kind, w.cert.clone(), true));
            }
        }
        for (ca, capped) in &capped_now {
            capping_alerts.push(capping_of(ca, capped, true));
        }
        next.last_reminder = Some(now);
    }

    let next_window = calendar.next_after(now);
    let due_window = calendar.last_at_or_before(now);
    let mut renew = None;
    // a failed window's job waits for its retry (and so does the emergency rule meanwhile: the
    // retry renews at least as much)
    let mut window_retry_at = None;
    if memory.last_window.is_none() {
        // the first start ever: windows before it were not missed, they were not ours (a
        // fresh install must not restart the control plane outside the window; what cannot
        // wait is renewed by the emergency rule)
        next.last_window = due_window;
    } else if let Some(window) = due_window
        && memory.last_window.is_some_and(|last| last < window)
        && let Some(at) = memory
            .window_failed
            .filter(|failed| *failed >= window)
            .map(|failed| failed + WINDOW_RETRY)
            .filter(|at| now < *at)
    {
        window_retry_at = Some(at);
    } else if let Some(window) = due_window
        && memory.last_window.is_some_and(|last| last < window)
    {
        let (due_within_days, mut note) = window_horizon(calendar, now, policy);
        if let Some(failed) = memory.window_failed.filter(|failed| *failed >= window) {
            let retry = format!(
                "the job of the window of {} failed at {}: trying again",
                crate::report::rfc3339(window),
                crate::report::rfc3339(failed)
            );
            note = Some(note.map_or(retry.clone(), |n| format!("{retry}; {n}")));
        }
        renew = Some(RenewOrder {
            why: if now - window < MAX_SLEEP {
                Why::Window
            } else {
                Why::CatchUp
            },
            due_within_days,
            window: Some(window),
            note,
        });
    }
    let emergency =
        policy.emergency_renewal && certs.iter().any(|w| w.due(now, policy.critical_days));
    let emergency_retry_at = memory.last_emergency.map(|t| t + EMERGENCY_RETRY);
    if renew.is_none()
        && window_retry_at.is_none()
        && emergency
        && emergency_retry_at.is_none_or(|at| now >= at)
    {
        renew = Some(RenewOrder {
            why: Why::Emergency,
            due_within_days: policy.critical_days,
            window: None,
            note: None,
        });
        next.last_emergency = Some(now);
    }
    let mut next_wake = now + MAX_SLEEP;
    if let Some(w) = next_window {
        next_wake = next_wake.min(w);
    }
    if let Some(at) = window_retry_at {
        next_wake = next_wake.min(at);
    }
    if emergency
        && renew.is_none()
        && let Some(at) = emergency_retry_at
    {
        next_wake = next_wake.min(at.max(now));
    }
    let pending_retry_at = memory.pending_tried.map(|t| t + PENDING_RETRY);
    let retry_pending =
        restart_pending && renew.is_none() && pending_retry_at.is_none_or(|at| now >= at);
    if restart_pending
        && !retry_pending
        && let Some(at) = pending_retry_at
    {
        next_wake = next_wake.min(at.max(now + Duration::SECOND));
    }
    Decision {
        alerts,
        capping: capping_alerts,
        restart_pending: retry_pending,
        renew,
        next_window,
        next_wake,
        memory: next,
        distrusted,
    }
}

#[cfg(test)]
mod tests;
