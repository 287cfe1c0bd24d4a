//! The daemon's loop: evaluate, act, tell, sleep.
//!
//! Each turn reads the node (inventory, pending restarts), asks [`decide`] what to do, raises
//! the alerts, runs the job it ordered (a window, a catch-up, an emergency renewal, or a pending
//! restart) through the same [`Job`] the CLI uses, then records, writes the metrics file and
//! the `STATUS=` line, and sleeps until the next window, an hour, a change under the watched
//! directories (let settle by a deadline), or a signal — one wait for all of them, so a storm
//! of changes holds up neither the window, nor the watchdog, nor SIGTERM. The node lock is
//! held only while a job works; a manual `renew` or `restart` meanwhile gets the usual
//! message, and a job waits for a manual run to finish.

use std::path::Path;
use std::time::Duration as StdDuration;

use time::OffsetDateTime;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::Config;
use crate::daemon::decide::{self, Decision, Memory, Policy, Watched, Why};
use crate::daemon::events::{self, CertAlert};
use crate::daemon::schedule::{self, Calendar};
use crate::daemon::watch::{Dirs, Settle, Watch};
use crate::daemon::{metrics, systemd};
use crate::pki::inventory::{self, Inventory, Kind};
use crate::renew::job::{self, Interrupt, Job, Quiet, RenewRequest, RestartStep};
use crate::renew::{execute, plan};
use crate::report::Report;
use crate::report::status::Thresholds;
use crate::state::{lock, pending};

/// How the daemon is started.
pub struct Start {
    /// Reads the configuration (file and command-line overrides); called again on SIGHUP.
    pub load: Box<dyn Fn() -> Result<Config, String>>,
    /// `--runtime-endpoint`, when given.
    pub runtime_endpoint: Option<String>,
    /// The daemon's clock minus the system's (0 in production; tests move the clock).
    pub clock_offset: time::Duration,
    /// Where the events go.
    pub log_to: events::LogTo,
}

/// The file of the daemon's memory in a state dir.
pub fn memory_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("daemon.json")
}

/// The memory kept in the state dir (a missing or unreadable one starts afresh: it only holds
/// what to say and when the last window ran). Never read through a link.
pub fn load_memory(state_dir: &Path) -> (Memory, Option<String>) {
    let path = memory_path(state_dir);
    match crate::state::nofollow::read_own(&path) {
        Ok(Some(data)) => match serde_json::from_slice(&data) {
            Ok(m) => (m, None),
            Err(e) => (
                Memory::default(),
                Some(format!(
                    "{}: unreadable ({e}); starting afresh",
                    path.display()
                )),
            ),
        },
        Ok(None) => (Memory::default(), None),
        Err(e) => (Memory::default(), Some(format!("{e}; starting afresh"))),
    }
}

fn save_memory(state_dir: &Path, memory: &Memory) -> Result<(), String> {
    crate::state::store::create_private_dir(state_dir)?;
    let text = serde_json::to_vec_pretty(memory).map_err(|e| e.to_string())?;
    crate::failpoint::hit("daemon.saving-state");
    crate::state::store::write_atomic(&memory_path(state_dir), &text, 0o600)
}

/// The calendar of a configuration for this node (its name picks its slot in the spread).
pub fn calendar_of(config: &Config, inventory: &Inventory) -> Result<Calendar, String> {
    let spread = schedule::parse_spread(&config.window_spread)?;
    let node = job::node_name(config, inventory).unwrap_or_else(hostname);
    Calendar::new(
        &config.schedule,
        config.timezone.as_deref(),
        schedule::node_offset(&node, spread),
    )
}

/// The kernel's host name: the node's name when neither the config nor kubelet.conf gives one.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// One look at the node.
struct Look {
    inventory: Inventory,
    certs: Vec<Watched>,
    pending: pending::Pending,
    /// kubeadm files gone from the node: those of the newest snapshot that no longer exist,
    /// and kubeadm's CAs and certificates the inventory finds missing.
    missing: Vec<String>,
    /// The node looks reset (see [`looks_reset`]), or every file of the newest snapshot is
    /// gone: alerted, never recovered automatically.
    wiped: bool,
    /// The CAs whose key file is there but cannot sign: (CA, key file, why).
    damaged_keys: Vec<(String, String, String)>,
    /// Why the state dir cannot be trusted ([`crate::state::trust::check_dir`]), when another
    /// user may write in it: then the daemon only watches and alerts.
    untrusted: Option<String>,
}

/// The CAs of `inventory` whose key does not parse or does not match their certificate, as
/// (CA, key file, why).
fn damaged_keys(inventory: &Inventory) -> Vec<(String, String, String)> {
    inventory
        .cas
        .iter()
        .filter_map(|e| {
            let why = e.key_problem.clone()?;
            let key = match &e.source {
                inventory::Source::PemPair { key, .. } => key.display().to_string(),
                other => other.cert_path().display().to_string(),
            };
            Some((e.name.clone(), key, why))
        })
        .collect()
}

/// What `kubeadm reset` leaves: every CA and every kubeadm certificate and kubeconfig gone (or
/// absent by design), and none of kubeadm's static-pod manifests — whatever else stays in the
/// kubernetes dir (kubespray keeps its kubeadm config there, which reset does not delete). A
/// node in that state was retired or is being rebuilt on purpose: bringing its CA keys back
/// would undo the reset. Nothing at all there is a reset too (a node before `kubeadm init`).
/// The product's own Lease kubeconfig is not kubeadm's: reset leaves it, so it decides nothing.
fn looks_reset(inventory: &Inventory, kubeadm_manifests_left: bool) -> bool {
    let gone = |e: &inventory::Entry| {
        e.name == crate::pki::kubeadm::LEASE_KUBECONFIG
            || matches!(
                e.state,
                inventory::State::Missing | inventory::State::Absent(_)
            )
    };
    !kubeadm_manifests_left && inventory.cas.iter().chain(&inventory.leaves).all(gone)
}

/// The kubeadm files missing from the node (see [`Look::missing`]), and whether the node looks
/// reset ([`looks_reset`]) or every file of the newest snapshot is gone. Nothing while a run is
/// unfinished (a restart parks manifests). In a state dir another user may write (`state_trusted` false) its journal and snapshots are
/// not believed: only the certificates the inventory misses are said.
fn missing_files(
    config: &Config,
    inventory: &Inventory,
    state_trusted: bool,
) -> (Vec<String>, bool) {
    if state_trusted
        && crate::state::journal::pending(&config.state_dir)
            .map(|p| p.is_some())
            .unwrap_or(true)
    {
        return (Vec::new(), false);
    }
    let manifests = config.paths().manifests;
    let manifests_left = crate::recover::plan::KUBEADM_MANIFESTS
        .iter()
        .any(|m| std::fs::symlink_metadata(manifests.join(m)).is_ok());
    let mut wiped = looks_reset(inventory, manifests_left);
    let mut missing: Vec<String> = inventory
        .cas
        .iter()
        .chain(&inventory.leaves)
        .filter(|e| e.state == inventory::State::Missing)
        .map(|e| e.source.cert_path().display().to_string())
        .collect();
    if state_trusted
        && config.snapshots
        && let Ok(all) = crate::state::snapshot::list(&config.state_dir)
        && let Some(newest) = all.first()
    {
        let gone: Vec<String> = newest
            .files
            .keys()
            .filter(|p| std::fs::symlink_metadata(p).is_err())
            .map(|p| p.display().to_string())
            .collect();
        wiped |= !gone.is_empty() && gone.len() == newest.files.len();
        missing.extend(gone);
    }
    missing.sort();
    missing.dedup();
    (missing, wiped)
}

/// Reads the node: every certificate (with whether this product would renew it) and the
/// pending restarts.
fn look(config: &Config, now: OffsetDateTime) -> Look {
    let paths = config.paths();
    let inventory = inventory::scan(
        &paths,
        &inventory::Options {
            extra_paths: config.extra_paths.clone(),
        },
    );
    let signers = execute::load_signers(&inventory);
    let renewable: Vec<String> = plan::plan(
        &inventory,
        &execute::signing_certs(&signers),
        &plan::Options {
            selection: plan::Selection::All,
            validity_days: config.validity_days,
            reuse_keys: true,
            renew_before_days: config.renew_before_days,
            now,
        },
    )
    .renew
    .into_iter()
    .map(|i| i.name)
    .collect();
    let certs = inventory
        .entries()
        .filter_map(|e| {
            let facts = e.facts()?;
            Some(Watched {
                cert: CertAlert {
                    name: e.name.clone(),
                    path: e.source.describe(),
                    not_before: facts.not_before,
                    not_after: facts.not_after,
                    days_left: decide::days_left(facts.not_after, now),
                    ca: e.ca_name().map(str::to_string),
                },
                is_ca: e.kind == Kind::Ca,
                renewable: renewable.contains(&e.name),
                capped: e.capped().map(|cap| cap.not_after),
            })
        })
        .collect();
    let untrusted =
        crate::state::trust::check_dir(&config.state_dir, crate::state::trust::Me::current()).err();
    // what another user may have planted there is not believed (nor said as the node's)
    let pending = match untrusted {
        None => pending::load(&config.state_dir).unwrap_or_default(),
        Some(_) => pending::Pending::new(),
    };
    let (missing, wiped) = missing_files(config, &inventory, untrusted.is_none());
    let damaged_keys = damaged_keys(&inventory);
    Look {
        inventory,
        certs,
        pending,
        missing,
        wiped,
        damaged_keys,
        untrusted,
    }
}

/// The `STATUS=` line: the next window, the soonest expiry, the last run, what is pending.
fn status_line(
    calendar: &Calendar,
    decision: &Decision,
    look: &Look,
    memory: &Memory,
    now: OffsetDateTime,
) -> String {
    let mut parts = Vec::new();
    if let Some(why) = &look.untrusted {
        parts.push(format!(
            "REFUSING TO WORK: the state dir may be written by another user (no renewal, no \
             snapshot): {why}"
        ));
    }
    if !look.missing.is_empty() {
        parts.push(format!(
            "MISSING: {} kubeadm file(s), run `kube-cert-renewer recover`",
            look.missing.len()
        ));
    }
    if !look.damaged_keys.is_empty() {
        let names: Vec<&str> = look
            .damaged_keys
            .iter()
            .map(|(ca, ..)| ca.as_str())
            .collect();
        parts.push(format!(
            "CA KEY DAMAGED: {}, run `kube-cert-renewer recover`",
            names.join(", ")
        ));
    }
    let capping = decide::capping(&look.certs);
    if let Some(soonest) = capping.values().map(|(at, _)| *at).min() {
        let capped: usize = capping.values().map(|(_, leaves)| leaves.len()).sum();
        let cas: Vec<&str> = capping.keys().map(String::as_str).collect();
        parts.push(format!(
            "CAPPED: {capped} certificate(s) end with their CA ({}) in {}, only a CA rotation \
             extends them (see `kube-cert-renewer check`)",
            cas.join(", "),
            crate::report::human_duration((soonest - now).whole_seconds())
        ));
    }
    if let Some(next) = decision.next_window {
        parts.push(format!("next window {}", calendar.local_human(next)));
    }
    match look
        .certs
        .iter()
        .filter(|w| !w.is_ca)
        .min_by_key(|w| w.cert.not_after)
    {
        Some(w) => parts.push(format!(
            "soonest: {} in {}",
            w.cert.name,
            crate::report::human_duration((w.cert.not_after - now).whole_seconds())
        )),
        None => parts.push("no kubeadm certificates on this node (watching for them)".into()),
    }
    for (level, word) in [
        (decide::Level::Expired, "EXPIRED"),
        (decide::Level::NotYetValid, "NOT YET VALID"),
        (decide::Level::Critical, "critical"),
        (decide::Level::Warning, "warning"),
    ] {
        let names: Vec<&str> = decision
            .memory
            .levels
            .iter()
            .filter(|(_, l)| **l == level)
            .map(|(n, _)| n.as_str())
            .collect();
        if !names.is_empty() {
            parts.push(format!("{word}: {}", names.join(", ")));
        }
    }
    if let Some(run) = &memory.last_run {
        parts.push(format!(
            "last run {} renewed {}, {}",
            calendar.local_human(run.at).get(4..14).unwrap_or_default(),
            run.renewed,
            if run.success { "ok" } else { "FAILED" }
        ));
    }
    if !look.pending.is_empty() {
        parts.push(format!(
            "restart pending: {}",
            look.pending.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    parts.join(" · ")
}

/// What a job thread did.
enum Done {
    /// A renewal job ran (its report, or why it did not).
    Renewal(Result<job::RenewReport, job::JobError>),
    /// A restart of pending components ran.
    Restart(Result<job::RestartReport, job::JobError>),
    /// A recovery of missing files ran (`auto_recover`).
    Recovery(Result<job::RecoverReport, crate::recover::run::RecoverError>),
    /// The stop request came while waiting for the lock.
    Stopped,
}

/// What the job thread is asked to do.
#[derive(Clone)]
enum Work {
    Renew(RenewRequest),
    RestartPending,
    Recover,
}

/// Runs `work` on its own thread, holding the node lock (waiting for a manual run to finish
/// first), after finishing what an interrupted run left.
fn spawn_job(
    config: Config,
    endpoint: Option<String>,
    now: OffsetDateTime,
    stop: watch::Receiver<bool>,
    work: Work,
) -> tokio::sync::oneshot::Receiver<Done> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut said = false;
        let _lock = loop {
            match lock::try_acquire(&config.state_dir) {
                Ok(l) => break l,
                // not a lock to wait for: the state dir is not safe to work in
                Err(lock::LockError::Untrusted(why)) => {
                    let refused = job::JobError::CannotRun(why);
                    events::renewal_failed(&refused.to_string());
                    let _ = tx.send(match work {
                        Work::Renew(_) => Done::Renewal(Err(refused)),
                        Work::RestartPending => Done::Restart(Err(refused)),
                        Work::Recover => Done::Recovery(Err(
                            crate::recover::run::RecoverError::CannotRun(refused.to_string()),
                        )),
                    });
                    return;
                }
                Err(e) => {
                    if !said {
                        events::note(&format!("waiting for the node lock: {e}"));
                        said = true;
                    }
                    if *stop.borrow() {
                        let _ = tx.send(Done::Stopped);
                        return;
                    }
                    systemd::beat();
                    std::thread::sleep(StdDuration::from_secs(1));
                }
            }
        };
        if let Ok(Some(done)) = job::recover(&config) {
            events::note(&done);
        }
        let job = Job {
            config: &config,
            runtime_endpoint: endpoint.as_deref(),
            now,
            interrupt: Interrupt::Flag(stop),
        };
        let done = match work {
            Work::Renew(request) => Done::Renewal(job.renew(&request, &mut Quiet)),
            Work::RestartPending => Done::Restart(job.restart_pending(&mut Quiet)),
            Work::Recover => Done::Recovery(job.recover_files(
                &crate::recover::run::Request::default(),
                true,
                &mut Quiet,
            )),
        };
        let _ = tx.send(done);
    });
    rx
}

/// Whether the runtime answers (before retrying a pending restart).
async fn runtime_answers(config: &Config, endpoint: Option<&str>) -> bool {
    let Ok(socket) =
        crate::config::resolve_runtime_socket(endpoint.or(config.runtime_endpoint.as_deref()))
    else {
        return false;
    };
    match crate::node::cri::RuntimeClient::connect(&socket).await {
        Ok(client) => client
            .with_request_timeout(StdDuration::from_secs(5))
            .version()
            .await
            .is_ok(),
        Err(_) => false,
    }
}

fn renew_request(config: &Config, due_within_days: u32) -> RenewRequest {
    RenewRequest {
        selection: plan::Selection::Due,
        due_within_days,
        validity_days: config.validity_days,
        reuse_keys: config.reuse_keys,
        dry_run: false,
        restart: true,
    }
}

/// How a finished job went: (success, certificates renewed), said in the journal.
fn outcome_of(done: &Done) -> (bool, usize) {
    match done {
        Done::Renewal(Ok(report)) => {
            let ok = !matches!(report.restart, RestartStep::Failed { .. });
            (ok, report.renewal.renewed.len())
        }
        Done::Renewal(Err(_)) => (false, 0),
        Done::Restart(Ok(report)) => (
            report.problems.is_empty() && !matches!(report.restart, RestartStep::Failed { .. }),
            0,
        ),
        Done::Restart(Err(e)) => {
            events::restart_failed(&[], &e.to_string());
            (false, 0)
        }
        Done::Recovery(Ok(report)) => (
            report.outcome.unrecoverable.is_empty()
                && !matches!(report.restart, RestartStep::Failed { .. }),
            report.outcome.steps.len(),
        ),
        // said in the journal by the job (recovery-failed)
        Done::Recovery(Err(_)) => (false, 0),
        Done::Stopped => (false, 0),
    }
}

/// Runs the daemon until SIGTERM or SIGINT; returns the process exit code.
pub fn run(start: Start) -> Result<i32, String> {
    let to = events::init_logging(start.log_to)?;
    let mut config = (start.load)()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let now = || OffsetDateTime::now_utc() + start.clock_offset;
        let endpoint = start.runtime_endpoint.clone();
        let (mut term, mut int, mut hup) = (
            signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
            signal(SignalKind::hangup()).map_err(|e| e.to_string())?,
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let ping_every = systemd::watchdog_interval();
        let mut pinger = tokio::time::interval(ping_every.unwrap_or(StdDuration::from_secs(3600)));
        pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        events::note(&format!(
            "kube-cert-renewer {} watching {} (state in {}, logging to the {to})",
            env!("CARGO_PKG_VERSION"),
            config.kubernetes_dir.display(),
            config.state_dir.display()
        ));
        let mut look_now = look(&config, now());
        // a memory another user may have planted is not believed
        let (mut memory, note) = match look_now.untrusted {
            None => load_memory(&config.state_dir),
            Some(_) => (Memory::default(), None),
        };
        if let Some(note) = note {
            events::note(&note);
        }
        let mut calendar = calendar_of(&config, &look_now.inventory)?;
        // the extra_paths dirs left unwatched, each said once
        let mut unwatched_said = std::collections::BTreeSet::new();
        let mut watch = watch_of(watched_dirs(&config, &look_now), None, &mut unwatched_said);
        let mut ready = false;
        let mut last_status = String::new();
        // missing files: alerted when the set changes, reminded daily; auto-recovered at most
        // once an hour (a recovery that cannot finish must not loop)
        let mut missing_alerted: (Vec<String>, Option<OffsetDateTime>) = (Vec::new(), None);
        let mut missing_since: Option<OffsetDateTime> = None;
        // damaged CA keys: alerted when the set changes, reminded daily
        let mut damaged_alerted: (Vec<(String, String, String)>, Option<OffsetDateTime>) =
            (Vec::new(), None);
        let mut recovered_at: Option<OffsetDateTime> = None;
        let mut reset_said = false;
        // the state dir refused: said when first seen or changed, reminded daily
        let mut untrusted_said: Option<(String, OffsetDateTime)> = None;
        let mut metrics_said: Option<String> = None;
        let grace = time::Duration::seconds(
            i64::try_from(config.auto_recover_after_secs).unwrap_or(i64::MAX),
        );
        let mut stopping = false;
        'evaluate: loop {
            // a job ordered by this evaluation runs first, then the node is looked at again
            let t = now();
            let decision = decide::decide(
                t,
                &look_now.certs,
                &calendar,
                &Policy::from(&config),
                &memory,
                !look_now.pending.is_empty(),
            );
            if !decision.distrusted.is_empty() {
                events::clock_suspect(&decision.distrusted.join("; "));
            }
            for (kind, cert, reminder) in &decision.alerts {
                events::certificate(*kind, cert, *reminder);
            }
            for capping in &decision.capping {
                events::ca_caps_renewal(capping, t);
            }
            memory = decision.memory.clone();
            alert_pending(&look_now.pending, &mut memory, t);
            alert_untrusted(
                &config.state_dir,
                look_now.untrusted.as_deref(),
                &mut untrusted_said,
                t,
            );
            // in a state dir another user may write, nothing is done but watching and alerting
            let refusing = look_now.untrusted.is_some();
            if look_now.missing.is_empty() {
                missing_alerted = (Vec::new(), None);
                missing_since = None;
                if !refusing {
                    refresh_snapshot(&config, t);
                }
            } else if missing_alerted.0 != look_now.missing
                || missing_alerted.1.is_none_or(|at| t - at >= time::Duration::DAY)
            {
                events::files_missing(&look_now.missing, missing_alerted.0 == look_now.missing);
                missing_alerted = (look_now.missing.clone(), Some(t));
            }
            if look_now.damaged_keys.is_empty() {
                damaged_alerted = (Vec::new(), None);
            } else if damaged_alerted.0 != look_now.damaged_keys
                || damaged_alerted.1.is_none_or(|at| t - at >= time::Duration::DAY)
            {
                let reminder = damaged_alerted.0 == look_now.damaged_keys;
                for (ca, key, why) in &look_now.damaged_keys {
                    events::ca_key_damaged(ca, key, why, reminder);
                }
                damaged_alerted = (look_now.damaged_keys.clone(), Some(t));
            }
            if !look_now.missing.is_empty() && missing_since.is_none() {
                missing_since = Some(t);
            }
            let recover_due = missing_since.map(|since| since + grace);
            if config.auto_recover && look_now.wiped && !look_now.missing.is_empty() {
                if !reset_said {
                    events::note(
                        "auto_recover: not recovering: the node looks reset (every CA, \
                         certificate, kubeconfig and static-pod manifest of kubeadm is gone, as \
                         after `kubeadm reset`); run `kube-cert-renewer recover` by hand if \
                         that was not meant",
                    );
                    reset_said = true;
                }
            } else {
                reset_said = false;
            }
            let recover_now = config.auto_recover
                && !refusing
                && !look_now.missing.is_empty()
                && !look_now.wiped
                && recover_due.is_some_and(|due| t >= due)
                && recovered_at.is_none_or(|at| t - at >= time::Duration::HOUR);
            if !ready {
                // started: the first look is done (a job it orders may take minutes, longer
                // than systemd waits for a start)
                systemd::status(&status_line(&calendar, &decision, &look_now, &memory, t));
                systemd::ready();
                ready = true;
            }
            let work = match &decision.renew {
                _ if refusing => None,
                _ if recover_now && !stopping => {
                    events::note(&format!(
                        "auto_recover: {} kubeadm file(s) missing, recovering",
                        look_now.missing.len()
                    ));
                    recovered_at = Some(t);
                    Some(Work::Recover)
                }
                Some(order) if !stopping => {
                    events::note(&format!(
                        "{}: renewing what expires within {} days{}",
                        match order.why {
                            Why::Window => "maintenance window",
                            Why::CatchUp => "catching up a window that has not run (missed \
                                             while not running, or its job failed)",
                            Why::Emergency => "EMERGENCY renewal (below critical_days)",
                        },
                        order.due_within_days,
                        order.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
                    ));
                    Some(Work::Renew(renew_request(&config, order.due_within_days)))
                }
                None if decision.restart_pending
                    && !stopping
                    && runtime_answers(&config, endpoint.as_deref()).await =>
                {
                    events::note("the runtime answers: retrying the pending restart");
                    memory.pending_tried = Some(t);
                    Some(Work::RestartPending)
                }
                _ => None,
            };
            if let Some(work) = work {
                systemd::status(&format!("working: {}", match &work {
                    Work::Renew(_) => "renewal",
                    Work::RestartPending => "pending restart",
                    Work::Recover => "recovery of missing files",
                }));
                systemd::beat();
                let mut done_rx =
                    spawn_job(config.clone(), endpoint.clone(), t, stop_rx.clone(), work);
                let done = loop {
                    tokio::select! {
                        done = &mut done_rx => break done.unwrap_or(Done::Stopped),
                        _ = pinger.tick() => {
                            if ping_every.is_some_and(systemd::moving) {
                                systemd::watchdog();
                            }
                        }
                        _ = term.recv() => { stopping = true; systemd::stopping(); let _ = stop_tx.send(true); }
                        _ = int.recv() => { stopping = true; systemd::stopping(); let _ = stop_tx.send(true); }
                    }
                };
                let (success, renewed) = outcome_of(&done);
                let window = match (&done, &decision.renew) {
                    (Done::Renewal(_), Some(order)) => order.window,
                    _ => None,
                };
                memory = decide::after_job(&memory, t, window, success, renewed);
                if let Err(e) = save_memory(&config.state_dir, &memory) {
                    events::note(&format!("cannot record the daemon's state: {e}"));
                }
                if stopping {
                    break 'evaluate;
                }
                watch.drain();
                look_now = look(&config, now());
                continue 'evaluate;
            }
            if !refusing && let Err(e) = save_memory(&config.state_dir, &memory) {
                events::note(&format!("cannot record the daemon's state: {e}"));
            }
            write_metrics(
                &config,
                &look_now.inventory,
                &memory,
                &decision,
                t,
                &mut metrics_said,
            );
            let line = status_line(&calendar, &decision, &look_now, &memory, t);
            if line != last_status {
                systemd::status(&line);
                last_status = line;
            }
            if !ready {
                systemd::ready();
                ready = true;
            }
            if stopping {
                break;
            }
            // sleep until the next look; while a restart waits for the runtime, ask it every
            // minute
            let mut wake = decision.next_wake;
            if decision.restart_pending || refusing {
                wake = wake.min(t + time::Duration::MINUTE);
            }
            if config.auto_recover
                && !look_now.wiped
                && let Some(due) = recover_due
                && due > t
            {
                wake = wake.min(due);
            }
            let wait = (wake - now())
                .try_into()
                .unwrap_or(StdDuration::ZERO)
                .max(StdDuration::from_millis(100));
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            // a burst of changes (a renewal by hand) settles before the look, by a deadline
            let mut settle: Option<Settle> = None;
            loop {
                let settled = tokio::time::sleep_until(tokio::time::Instant::from_std(
                    settle.map_or_else(|| std::time::Instant::now() + wait, Settle::deadline),
                ));
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = watch.changed() => {
                        let at = std::time::Instant::now();
                        settle = Some(settle.map_or(Settle::new(at), |s| s.changed(at)));
                    }
                    _ = settled, if settle.is_some() => break,
                    _ = pinger.tick() => {
                        if ping_every.is_some() {
                            systemd::beat();
                            systemd::watchdog();
                        }
                    }
                    _ = hup.recv() => {
                        systemd::reloading();
                        match (start.load)().and_then(|c| {
                            calendar_of(&c, &look_now.inventory).map(|cal| (c, cal))
                        }) {
                            Ok((c, cal)) => {
                                config = c;
                                calendar = cal;
                                events::note("configuration reloaded");
                            }
                            Err(e) => events::config_invalid(&e),
                        }
                        systemd::ready();
                        break;
                    }
                    _ = term.recv() => { stopping = true; break; }
                    _ = int.recv() => { stopping = true; break; }
                }
            }
            if stopping {
                systemd::stopping();
                break;
            }
            look_now = look(&config, now());
            watch = watch_of(watched_dirs(&config, &look_now), Some(watch), &mut unwatched_said);
            watch.drain();
        }
        // whatever a cut-short job left is put back before the process ends
        if let Ok(_lock) = lock::try_acquire(&config.state_dir)
            && let Ok(Some(done)) = job::recover(&config)
        {
            events::note(&done);
        }
        events::note("stopped");
        Ok(0)
    })
}

/// The watch on `dirs`: `current` when it watches those already, else a new one (its problem
/// said); each directory left unwatched is said once (`said` remembers).
fn watch_of(
    dirs: Dirs,
    current: Option<Watch>,
    said: &mut std::collections::BTreeSet<String>,
) -> Watch {
    for line in dirs.not_watched {
        if said.insert(line.clone()) {
            events::note(&line);
        }
    }
    match current {
        Some(watch) if watch.dirs() == dirs.watched.as_slice() => watch,
        _ => {
            let watch = Watch::new(dirs.watched);
            if let Some(p) = &watch.problem {
                events::note(p);
            }
            watch
        }
    }
}

/// Takes a snapshot of the node when it changed (the node is whole: nothing missing), under the
/// node lock; a manual run holding the lock is left alone (the next look takes it).
fn refresh_snapshot(config: &Config, now: OffsetDateTime) {
    if !config.snapshots {
        return;
    }
    let Ok(_lock) = lock::try_acquire(&config.state_dir) else {
        return;
    };
    let taken = crate::state::snapshot::take(
        &config.paths(),
        &config.kubernetes_dir,
        now,
        config.keep_snapshots,
        false,
    );
    match taken {
        Ok(crate::state::snapshot::Taken::Created(dir)) => {
            events::note(&format!("snapshot taken: {}", dir.display()))
        }
        Ok(_) => {}
        Err(e) => events::note(&format!("snapshot not taken: {e}")),
    }
}

/// The directories to watch: the node's ([`crate::daemon::watch::dirs_of`]) and, while the state
/// dir is refused, the state dir (or its nearest existing parent), so that root making it its
/// own again is seen at once (a chmod is an event on the directory itself).
fn watched_dirs(config: &Config, look: &Look) -> crate::daemon::watch::Dirs {
    let mut dirs = crate::daemon::watch::dirs_of(config, &look.inventory);
    if look.untrusted.is_some()
        && let Some(dir) = config.state_dir.ancestors().find(|a| a.is_dir())
    {
        dirs.watched.push(dir.to_path_buf());
        dirs.watched.sort();
        dirs.watched.dedup();
    }
    dirs
}

/// Says in the journal that the state dir is refused (`why`): when first seen or when the reason
/// changes, then once a day; and, once, when it is root's alone again.
fn alert_untrusted(
    dir: &Path,
    why: Option<&str>,
    said: &mut Option<(String, OffsetDateTime)>,
    now: OffsetDateTime,
) {
    match (why, said.as_ref()) {
        (None, None) => {}
        (None, Some(_)) => {
            events::note(&format!(
                "the state dir {} is root's alone again: back to work",
                dir.display()
            ));
            *said = None;
        }
        (Some(why), Some((before, at))) if before == why && now - *at < time::Duration::DAY => {}
        (Some(why), before) => {
            let reminder = before.is_some_and(|(b, _)| b == why);
            events::state_dir_untrusted(dir, why, reminder);
            *said = Some((why.to_string(), now));
        }
    }
}

/// Says in the journal which components still wait for their restart: when first seen, then
/// once a day.
fn alert_pending(pending: &pending::Pending, memory: &mut Memory, now: OffsetDateTime) {
    if pending.is_empty() {
        memory.pending_alerted = None;
        return;
    }
    if memory
        .pending_alerted
        .is_some_and(|at| now - at < time::Duration::DAY)
    {
        return;
    }
    for (component, waiting) in pending {
        events::restart_pending(component, &waiting.since, &waiting.renewed);
    }
    memory.pending_alerted = Some(now);
}

/// Writes the metrics textfile, when configured (a failure is said once, until it changes or a
/// write succeeds — `said` — and is never fatal).
fn write_metrics(
    config: &Config,
    inventory: &Inventory,
    memory: &Memory,
    decision: &Decision,
    now: OffsetDateTime,
    said: &mut Option<String>,
) {
    let Some(path) = &config.metrics_textfile else {
        return;
    };
    let node = crate::node::status::gather(
        &config.paths().manifests,
        &config.state_dir,
        &crate::node::restart::TlsProbes::for_pki(&config.paths().pki),
    );
    let report = Report::new(inventory, now, &Thresholds::from(config)).with_node(node);
    let gauges = metrics::DaemonGauges {
        last_run: memory.last_run.as_ref().map(|r| (r.at, r.success)),
        next_window: decision.next_window,
    };
    match metrics::write(path, &report.prometheus(), &gauges) {
        Ok(()) => *said = None,
        Err(e) if said.as_ref() != Some(&e) => {
            events::note(&format!("cannot write the metrics file: {e}"));
            *said = Some(e);
        }
        Err(_) => {}
    }
}

/// What `kube-cert-renewer schedule --next n` prints: the next `n` windows of this node (RFC
/// 3339 with the zone's offset) and what would be due at each if nothing were renewed before.
pub fn schedule_text(config: &Config, now: OffsetDateTime, n: usize) -> Result<String, String> {
    let look = look(config, now);
    let calendar = calendar_of(config, &look.inventory)?;
    let policy = Policy::from(config);
    let mut out = format!(
        "schedule {:?} in {} (day of month AND day of week); this node opens its window {} \
         after each (window_spread {})\n",
        config.schedule,
        calendar.zone_name(),
        crate::report::human_duration(i64::try_from(calendar.offset().as_secs()).unwrap_or(0)),
        config.window_spread
    );
    for window in calendar.next_n(now, n) {
        let (horizon, note) = decide::window_horizon(&calendar, window, &policy);
        let due: Vec<&str> = look
            .certs
            .iter()
            .filter(|w| w.due(window, horizon))
            .map(|w| w.cert.name.as_str())
            .collect();
        out.push_str(&format!(
            "{}  {}{}\n",
            calendar.local_rfc3339(window),
            if due.is_empty() {
                format!("nothing due within {horizon} days")
            } else {
                format!("due within {horizon} days: {}", due.join(", "))
            },
            note.map(|_| " (widened: the next window is far)")
                .unwrap_or_default()
        ));
    }
    Ok(out)
}
