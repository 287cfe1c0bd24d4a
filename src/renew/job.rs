//! The whole pipeline in one place — inventory → plan → renew → restart → verify — so that
//! `renew`, `restart` and the daemon run exactly the same steps. A job returns what happened as
//! data; the CLI prints it, the daemon logs it. The journal events (renewed, restarted, failed,
//! rolled back) are emitted here, so a run by hand and a run by the daemon say the same in the
//! journal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::{Config, RestartMode};
use crate::coordination;
use crate::daemon::events;
use crate::node::restart::{self, Component, Settings, StaticPods, TlsProbes};
use crate::pki::inventory::{self, Inventory};
use crate::renew::execute::{self, RenewError};
use crate::renew::plan::{self, Selection};
use crate::state::{journal, lock, pending, store};

/// What may cut a restart short: the CLI's signals, or the daemon asking to stop. Either way
/// the restart is dropped at an await point and the journal puts the manifests back before the
/// job returns.
#[derive(Debug, Clone)]
pub enum Interrupt {
    /// SIGINT, SIGTERM or SIGHUP to this process (a run by hand).
    Signals,
    /// The daemon's stop request: the job stops when the value becomes `true`.
    Flag(tokio::sync::watch::Receiver<bool>),
}

/// The context every job runs in: the configuration, the runtime endpoint given on the command
/// line (over the config's), the instant the job is about, and what may interrupt it.
pub struct Job<'a> {
    /// The effective configuration.
    pub config: &'a Config,
    /// `--runtime-endpoint`, when given.
    pub runtime_endpoint: Option<&'a str>,
    /// The clock: the instant renewals are dated and plans judged.
    pub now: OffsetDateTime,
    /// What stops a restart early.
    pub interrupt: Interrupt,
}

/// What a renewal asks for (the CLI's `renew` arguments, or the daemon's window).
#[derive(Debug, Clone)]
pub struct RenewRequest {
    /// Which certificates.
    pub selection: Selection,
    /// For [`Selection::Due`]: renew what expires within this many days (the config's
    /// `renew_before_days` for `renew --due`; computed from the calendar by the daemon).
    pub due_within_days: u32,
    /// Validity of the new certificates in days.
    pub validity_days: u32,
    /// Keep the private keys.
    pub reuse_keys: bool,
    /// Plan and validate only.
    pub dry_run: bool,
    /// Restart what the renewal (and any earlier one) left waiting.
    pub restart: bool,
}

/// Why a job did not run or did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Stopped before anything changed (each reason names its file).
    Refused(Vec<String>),
    /// Not started, nothing changed: the restart the renewal needs afterwards could not happen
    /// (an unusable manifest, no runtime answering).
    NotStarted(String),
    /// Failed after writing began; the message says in which state the node is.
    Failed(String),
    /// Could not even start: bad arguments, the lock is held, an interrupted earlier run needs a
    /// human.
    CannotRun(String),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Refused(reasons) => {
                write!(f, "refused, nothing was changed: {}", reasons.join("; "))
            }
            JobError::NotStarted(m) => write!(
                f,
                "not started, nothing was changed: the control plane could not be restarted \
                 afterwards: {m}"
            ),
            JobError::Failed(m) | JobError::CannotRun(m) => f.write_str(m),
        }
    }
}

/// What happened to the restart part of a job.
#[derive(Debug, Clone)]
pub enum RestartStep {
    /// Nothing renewed or pending feeds a static pod of this node (the notes say what has no
    /// manifest here).
    NotNeeded {
        /// Components left out and why.
        notes: Vec<String>,
    },
    /// Not done (`--no-restart`, a dry run): these would restart, and stay pending.
    NotDone {
        /// The components, in restart order.
        components: Vec<String>,
    },
    /// Done and verified.
    Done(Restarted),
    /// Tried and failed; the message tells the whole story (what was restored, what is
    /// pending).
    Failed {
        /// What the restart printed on the way (components left out and why).
        notes: Vec<String>,
        /// What went wrong.
        error: String,
    },
}

/// A restart that was carried out.
#[derive(Debug, Clone)]
pub struct Restarted {
    /// The runtime socket used.
    pub socket: PathBuf,
    /// Components left out and why (by mode, no manifest).
    pub notes: Vec<String>,
    /// What the restart did.
    pub outcome: restart::Outcome,
}

/// The report of a renewal job.
#[derive(Debug, Clone)]
pub struct RenewReport {
    /// The certificate part: renewed, skipped, backup, warnings.
    pub renewal: execute::Outcome,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// kubelet.conf was renewed: the kubelet reads it only at its start.
    pub kubelet_needs_restart: bool,
    /// The restart part.
    pub restart: RestartStep,
    /// Why no snapshot was taken afterwards, when one was due and could not be.
    pub snapshot_problem: Option<String>,
}

/// The report of a restart job (`restart`, or the daemon finishing a pending restart).
#[derive(Debug, Clone)]
pub struct RestartReport {
    /// Components that could not be restarted, each with why (unusable manifest, parked).
    pub problems: Vec<String>,
    /// The restart itself; `NotNeeded` when there was nothing to restart.
    pub restart: RestartStep,
}

/// Told as a job goes, so a person watching sees the steps as they happen (the daemon ignores
/// it: its events go to the journal).
pub trait Observer {
    /// The certificate part is done (or planned, in a dry run).
    fn renewed(&mut self, _renewal: &execute::Outcome, _dry_run: bool) {}
    /// A restart of `components` over `socket` begins.
    fn restarting(&mut self, _components: &[String], _socket: &Path) {}
    /// The restart waits for the cluster-wide Lease, or goes on without it (`line` says which).
    fn lease(&mut self, _line: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// The kubelet's node name: the config's, else the one in kubelet.conf's client certificate
/// (`CN=system:node:<name>`).
pub fn node_name(config: &Config, inventory: &Inventory) -> Option<String> {
    if let Some(name) = &config.node_name {
        return Some(name.clone());
    }
    inventory
        .entries()
        .find(|e| e.name == crate::pki::kubeadm::KUBELET_CONF)
        .and_then(|e| e.facts())
        .and_then(|f| f.subject_cn.as_deref())
        .and_then(|cn| cn.strip_prefix("system:node:"))
        .map(str::to_string)
}

/// Finishes or undoes whatever an interrupted run left (the intent journal), under the node
/// lock that the caller holds; returns what was done, to tell.
pub fn recover(config: &Config) -> Result<Option<String>, JobError> {
    let done = journal::recover(&config.state_dir).map_err(JobError::CannotRun)?;
    // a run killed while staging (before its journal) leaves temp files beside the targets, one
    // killed while writing its own records leaves them in the state dir
    let paths = config.paths();
    for dir in [
        paths.pki.clone(),
        paths.pki.join("etcd"),
        paths.kubeconfigs,
        config.state_dir.clone(),
    ] {
        crate::state::store::remove_temp_files_in(&dir);
    }
    crate::state::store::remove_partial_backups(&config.state_dir.join("backups"));
    // a snapshot half-copied when the run died holds CA keys too
    crate::state::store::remove_partial_backups(&crate::state::snapshot::dir(&config.state_dir));
    Ok(done)
}

/// Takes the node lock or says who holds it.
pub fn lock(config: &Config) -> Result<lock::NodeLock, JobError> {
    crate::state::trust::check_node(config).map_err(JobError::CannotRun)?;
    lock::try_acquire(&config.state_dir).map_err(|e| JobError::CannotRun(e.to_string()))
}

/// What `check` looks at: every certificate, and the control plane's state.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Every certificate of the node (with the config's `extra_paths`).
    pub inventory: Inventory,
    /// Parked manifests, pending restarts, an unfinished earlier run.
    pub node: crate::node::status::NodeStatus,
    /// What the recovery did, or why it was left to another run (for stderr).
    pub notes: Vec<String>,
}

/// The report of a recovery job.
#[derive(Debug, Clone)]
pub struct RecoverReport {
    /// The files part: what was restored, re-issued, left missing.
    pub outcome: crate::recover::run::Outcome,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The restart of what the recovered certificates feed.
    pub restart: RestartStep,
    /// What happened to the snapshot taken afterwards.
    pub snapshot: Option<String>,
}

impl Job<'_> {
    /// Reads the node for `check`. Only reads, except that it first finishes what an
    /// interrupted run left when it can take the lock; when another run holds it, that run
    /// will. A recovery that needs a human is reported with the rest.
    pub fn check(&self) -> Checked {
        let config = self.config;
        let mut notes = Vec::new();
        let mut unfinished = None;
        if journal::path(&config.state_dir).exists() {
            match lock(config) {
                Ok(_lock) => match recover(config) {
                    Ok(done) => notes.extend(done),
                    Err(e) => unfinished = Some(e.to_string()),
                },
                Err(e) => notes.push(format!("warning: pending recovery not done: {e}")),
            }
        }
        let paths = config.paths();
        let inventory = inventory::scan(
            &paths,
            &inventory::Options {
                extra_paths: config.extra_paths.clone(),
            },
        );
        let mut node = crate::node::status::gather(
            &paths.manifests,
            &config.state_dir,
            &TlsProbes::for_pki(&paths.pki),
        );
        node.unfinished = unfinished;
        node.lease = self.lease_look(&inventory);
        Checked {
            inventory,
            node,
            notes,
        }
    }

    fn runtime_socket(&self) -> Result<PathBuf, String> {
        crate::config::resolve_runtime_socket(
            self.runtime_endpoint
                .or(self.config.runtime_endpoint.as_deref()),
        )
    }

    /// Renews what `request` asks for, then restarts what needs it (unless told not to); then
    /// the snapshot is refreshed — after the restart, so that renewed files a failed restart
    /// rolled back never become the newest snapshot. Refreshed even when nothing was renewed:
    /// in timer mode `renew --due` is the only thing that looks at the node, and a manifest
    /// changed since (a `kubeadm upgrade`) must reach the snapshots before a recovery needs
    /// them (an unchanged node costs a hash of its files). The caller holds the node lock and
    /// has run [`recover`].
    pub fn renew(
        &self,
        request: &RenewRequest,
        observer: &mut dyn Observer,
    ) -> Result<RenewReport, JobError> {
        let mut report = self.renew_and_restart(request, observer)?;
        if !report.dry_run
            && !matches!(report.restart, RestartStep::Failed { .. })
            && let Some(Err(e)) = self.refresh_snapshot(false)
        {
            report.snapshot_problem = Some(e);
        }
        Ok(report)
    }

    fn renew_and_restart(
        &self,
        request: &RenewRequest,
        observer: &mut dyn Observer,
    ) -> Result<RenewReport, JobError> {
        crate::state::trust::check_node(self.config).map_err(JobError::CannotRun)?;
        let config = self.config;
        let paths = config.paths();
        let inventory = inventory::scan(&paths, &inventory::Options::default());
        let signers = execute::load_signers(&inventory);
        let plan = plan::plan(
            &inventory,
            &execute::signing_certs(&signers),
            &plan::Options {
                selection: request.selection.clone(),
                validity_days: request.validity_days,
                reuse_keys: request.reuse_keys,
                renew_before_days: request.due_within_days,
                now: self.now,
            },
        );
        // What restarts afterwards: the components fed by this renewal and any a previous
        // renewal left waiting (`renew --no-restart`, a restart that failed). Whatever that
        // needs is checked before anything is written: an unusable manifest or a runtime that
        // does not answer must not leave renewed files behind with the old ones in use.
        let pending_before = pending::load(&config.state_dir).map_err(JobError::CannotRun)?;
        let planned: Vec<String> = plan.renew.iter().map(|i| i.name.clone()).collect();
        let wanted = wanted_components(config.restart, &planned, &pending_before);
        let will_restart =
            request.restart && !request.dry_run && plan.refuse.is_empty() && !wanted.is_empty();
        let pods = if will_restart {
            Some(
                self.precheck_restart(&wanted)
                    .map_err(JobError::NotStarted)?,
            )
        } else {
            None
        };
        let renewal = match execute::execute(
            &plan,
            &signers,
            &paths,
            &config.kubernetes_dir,
            config.keep_backups,
            self.now,
            request.dry_run,
        ) {
            Ok(o) => o,
            Err(RenewError::Refused(reasons)) => {
                events::renewal_refused(&reasons);
                return Err(JobError::Refused(reasons));
            }
            Err(RenewError::Failed(e)) => {
                events::renewal_failed(&e);
                return Err(JobError::Failed(e));
            }
        };
        if !request.dry_run {
            events::renewed(&renewal);
        }
        observer.renewed(&renewal, request.dry_run);
        let renewed: Vec<String> = renewal.renewed.iter().map(|r| r.name.clone()).collect();
        let kubelet_needs_restart = !request.dry_run
            && renewed
                .iter()
                .any(|r| r == crate::pki::kubeadm::KUBELET_CONF);
        let report = |restart| RenewReport {
            renewal: renewal.clone(),
            dry_run: request.dry_run,
            kubelet_needs_restart,
            restart,
            snapshot_problem: None,
        };
        if request.dry_run || !request.restart {
            let named = wanted_components(config.restart, &renewed, &pending_before);
            return Ok(report(if named.is_empty() {
                RestartStep::NotNeeded { notes: Vec::new() }
            } else {
                RestartStep::NotDone {
                    components: in_restart_order(named),
                }
            }));
        }
        // The renewed kubeconfigs the API server authenticates: proven after the restart (or
        // on their own when nothing restarts), before the Lease is released.
        let kubeconfigs = crate::node::proof::kubeconfigs_to_prove(
            renewal
                .renewed
                .iter()
                .map(|r| (r.name.as_str(), r.path.as_path())),
        );
        // Checked before the renewal; none means nothing renewed or pending feeds a static pod.
        let Some(pods) = pods else {
            let step = self.prove_only(
                kubeconfigs,
                &inventory,
                renewal.backup.as_deref(),
                Vec::new(),
            );
            return Ok(report(step));
        };
        let pending = pending::load(&config.state_dir).map_err(JobError::Failed)?;
        let wanted: BTreeSet<&str> = pending.keys().map(String::as_str).collect();
        let (available, _) = pods.kubeadm();
        let probes = TlsProbes::for_pki(&paths.pki).proving(kubeconfigs.clone(), &pods);
        let (components, notes) = restart::choose(config.restart, &wanted, available, &probes);
        if components.is_empty() {
            let step = self.prove_only(kubeconfigs, &inventory, renewal.backup.as_deref(), notes);
            return Ok(report(step));
        }
        let step = self.restart_components(
            &components,
            probes,
            &inventory,
            renewal.backup.as_deref(),
            notes,
            observer,
        );
        Ok(report(step))
    }

    /// Issues this node's least-privilege Lease credential (`lease-credentials --issue`): for
    /// the node name of the config, else kubelet.conf's, else the host name. The caller holds the
    /// node lock.
    pub fn issue_lease_credentials(&self) -> Result<coordination::credentials::Issued, String> {
        let config = self.config;
        let inventory = inventory::scan(&config.paths(), &inventory::Options::default());
        let node = node_name(config, &inventory).unwrap_or_else(crate::daemon::run::hostname);
        coordination::credentials::issue(config, &node, self.now)
    }

    /// Takes a snapshot of the node's kubeadm files when the config keeps them (after every
    /// change the product makes, and when the daemon sees one); says what happened.
    pub fn refresh_snapshot(&self, force: bool) -> Option<Result<String, String>> {
        if !self.config.snapshots {
            return None;
        }
        let paths = self.config.paths();
        let taken = crate::state::snapshot::take(
            &paths,
            &self.config.kubernetes_dir,
            self.now,
            self.config.keep_snapshots,
            force,
        );
        Some(taken.and_then(|t| match t {
            crate::state::snapshot::Taken::Created(dir) => {
                Ok(format!("snapshot taken: {}", dir.display()))
            }
            crate::state::snapshot::Taken::Unchanged(dir) => {
                Ok(format!("snapshot unchanged: {}", dir.display()))
            }
            crate::state::snapshot::Taken::Skipped(why) => {
                Err(format!("snapshot not taken: {why}"))
            }
        }))
    }

    /// Brings back the node's missing kubeadm files (from snapshots, else re-issued from the
    /// CAs), then restarts what they feed unless told not to. The caller holds the node lock
    /// and has run [`recover`].
    pub fn recover_files(
        &self,
        request: &crate::recover::run::Request,
        restart: bool,
        observer: &mut dyn Observer,
    ) -> Result<RecoverReport, crate::recover::run::RecoverError> {
        use crate::recover::run::RecoverError;
        crate::state::trust::check_node(self.config).map_err(RecoverError::CannotRun)?;
        let outcome = crate::recover::run::recover(self.config, request, self.now);
        match &outcome {
            Ok(o) if !request.dry_run && (!o.steps.is_empty() || !o.unrecoverable.is_empty()) => {
                events::recovered(o)
            }
            Err(e) => events::recovery_failed(e),
            _ => {}
        }
        let outcome = outcome?;
        let mut report = RecoverReport {
            dry_run: request.dry_run,
            restart: RestartStep::NotNeeded { notes: Vec::new() },
            snapshot: None,
            outcome,
        };
        if request.dry_run {
            if !report.outcome.recovered.is_empty() {
                report.restart = RestartStep::NotDone {
                    components: in_restart_order(wanted_components(
                        self.config.restart,
                        &report.outcome.recovered,
                        &pending::Pending::default(),
                    )),
                };
            }
            return Ok(report);
        }
        if !report.outcome.steps.is_empty() && report.outcome.unrecoverable.is_empty() {
            report.snapshot = self
                .refresh_snapshot(false)
                .map(|r| r.unwrap_or_else(|e| e));
        }
        let pending = pending::load(&self.config.state_dir).unwrap_or_default();
        if pending.is_empty() {
            return Ok(report);
        }
        if !restart {
            report.restart = RestartStep::NotDone {
                components: in_restart_order(pending.keys().cloned().collect()),
            };
            return Ok(report);
        }
        report.restart = match self.restart_pending(observer) {
            Ok(r) => r.restart,
            Err(e) => RestartStep::Failed {
                notes: Vec::new(),
                error: e.to_string(),
            },
        };
        Ok(report)
    }

    /// Restarts the named static pods, or kubeadm's four (`names` empty). A component whose
    /// manifest is unusable is reported without keeping the others from their restart. The
    /// caller holds the node lock and has run [`recover`].
    pub fn restart(
        &self,
        names: &[String],
        observer: &mut dyn Observer,
    ) -> Result<RestartReport, JobError> {
        let manifests = self.config.paths().manifests;
        let pods = StaticPods::read(&manifests).map_err(JobError::CannotRun)?;
        let (components, problems) = if names.is_empty() {
            pods.kubeadm()
        } else {
            pods.named(names).map_err(JobError::CannotRun)?
        };
        Ok(self.restart_chosen(components, problems, Vec::new(), observer))
    }

    /// Restarts what the restart-pending record names (the daemon's retry once the runtime
    /// answers again).
    pub fn restart_pending(&self, observer: &mut dyn Observer) -> Result<RestartReport, JobError> {
        crate::state::trust::check_node(self.config).map_err(JobError::CannotRun)?;
        let pending = pending::load(&self.config.state_dir).map_err(JobError::CannotRun)?;
        if pending.is_empty() {
            return Ok(RestartReport {
                problems: Vec::new(),
                restart: RestartStep::NotNeeded { notes: Vec::new() },
            });
        }
        let names: Vec<String> = pending.keys().cloned().collect();
        let pods = StaticPods::read(&self.config.paths().manifests).map_err(JobError::CannotRun)?;
        let problems = names
            .iter()
            .filter_map(|n| pods.why_not(n).map(|why| format!("{n}: {why}")))
            .collect();
        let components = pods
            .usable
            .into_iter()
            .filter(|c| names.contains(&c.name))
            .collect();
        let kubeconfig_dir = self.config.paths().kubeconfigs;
        let renewed: BTreeSet<String> = pending
            .values()
            .flat_map(|w| w.renewed.iter().cloned())
            .collect();
        let files: Vec<(String, PathBuf)> = renewed
            .into_iter()
            .map(|n| {
                let file = kubeconfig_dir.join(&n);
                (n, file)
            })
            .collect();
        let kubeconfigs = crate::node::proof::kubeconfigs_to_prove(
            files.iter().map(|(n, f)| (n.as_str(), f.as_path())),
        );
        Ok(self.restart_chosen(components, problems, kubeconfigs, observer))
    }

    fn restart_chosen(
        &self,
        components: Vec<Component>,
        problems: Vec<String>,
        kubeconfigs: Vec<PathBuf>,
        observer: &mut dyn Observer,
    ) -> RestartReport {
        if components.is_empty() {
            return RestartReport {
                problems,
                restart: RestartStep::NotNeeded { notes: Vec::new() },
            };
        }
        let paths = self.config.paths();
        let inventory = inventory::scan(&paths, &inventory::Options::default());
        // what a pending restart waits for includes renewed kubeconfigs: proven too
        let probes = match StaticPods::read(&paths.manifests) {
            Ok(pods) => TlsProbes::for_pki(&paths.pki).proving(kubeconfigs, &pods),
            Err(_) => TlsProbes::for_pki(&paths.pki),
        };
        let step =
            self.restart_components(&components, probes, &inventory, None, Vec::new(), observer);
        RestartReport {
            problems,
            restart: step,
        }
    }

    /// Checks what a restart of the `wanted` components will need — their manifests usable, a
    /// runtime socket, a runtime that answers — and returns the node's static pods. A component
    /// with no manifest on the node (external etcd) is not needed; an unusable one is an error.
    fn precheck_restart(&self, wanted: &BTreeSet<String>) -> Result<StaticPods, String> {
        let pods = StaticPods::read(&self.config.paths().manifests)?;
        let problems: Vec<String> = wanted
            .iter()
            .filter_map(|n| pods.why_not(n).map(|why| format!("{n}: {why}")))
            .collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if !wanted
            .iter()
            .any(|n| pods.usable.iter().any(|c| &c.name == n))
        {
            return Ok(pods);
        }
        let socket = self.runtime_socket()?;
        block_on(async {
            let client = crate::node::cri::RuntimeClient::connect(&socket)
                .await?
                .with_request_timeout(restart::RUNTIME_REQUEST_TIMEOUT);
            restart::Runtime::ping(&client).await.map(drop)
        })??;
        Ok(pods)
    }

    /// Restarts `components` over the CRI, with the rollback to `backup` when this restart
    /// follows a renewal; an interruption puts everything back before returning. The restart
    /// runs inside the cluster-wide Lease (see [`Job::take_lease`]); `before` is the node as it
    /// was before the renewal (whether its API server certificate had expired).
    fn restart_components(
        &self,
        components: &[Component],
        probes: TlsProbes,
        before: &Inventory,
        backup: Option<&Path>,
        notes: Vec<String>,
        observer: &mut dyn Observer,
    ) -> RestartStep {
        let node_name = node_name(self.config, before);
        let names: Vec<String> = components.iter().map(|c| c.name.clone()).collect();
        let failed = |error: String| {
            events::restart_failed(&names, &error);
            RestartStep::Failed {
                notes: notes.clone(),
                error,
            }
        };
        let socket = match self.runtime_socket() {
            Ok(s) => s,
            Err(e) => return failed(format!("cannot restart {}: {e}", names.join(", "))),
        };
        // a runtime that does not answer is said at once, not after a wait for the Lease
        let ping = block_on(async {
            let client = crate::node::cri::RuntimeClient::connect(&socket)
                .await?
                .with_request_timeout(restart::RUNTIME_REQUEST_TIMEOUT);
            restart::Runtime::ping(&client).await.map(drop)
        });
        if let Err(e) = ping.and_then(|r| r) {
            return failed(format!(
                "cannot restart {}: {e}; nothing was restarted",
                names.join(", ")
            ));
        }
        let mut lease = match self.take_lease(
            components,
            before,
            node_name.as_deref(),
            backup,
            observer,
        ) {
            Ok(lease) => lease,
            Err(e) => {
                return failed(format!(
                    "not restarted: {e}. The renewed certificates stay in place and the restart \
                     stays pending (retried by the daemon, or `kube-cert-renewer restart`)"
                ));
            }
        };
        observer.restarting(&names, &socket);
        let mut probes = probes;
        probes.etcd_certs_expired = before
            .entries()
            .filter(|e| e.name == "etcd-server" || e.name == "etcd-peer")
            .filter_map(|e| e.facts())
            .any(|f| f.not_after <= self.now);
        let settings = Settings::from_config(self.config, node_name);
        let state_dir = &self.config.state_dir;
        let interrupt = self.interrupt.clone();
        let outcome = block_on(async {
            let client = match crate::node::cri::RuntimeClient::connect(&socket).await {
                Ok(client) => client.with_request_timeout(restart::RUNTIME_REQUEST_TIMEOUT),
                Err(e) => {
                    return Ok(Err(format!(
                        "cannot restart {}: {e}; nothing was restarted",
                        names.join(", ")
                    )));
                }
            };
            let work = restart::restart_with_rollback(
                &client, &probes, components, state_dir, &settings, backup,
            );
            tokio::select! {
                result = work => Ok(result),
                why = interrupted(interrupt) => Err(why),
            }
        });
        let stop = self.stop_check();
        let step = match outcome {
            Err(e) => failed(e),
            Ok(Ok(Ok(mut outcome))) => {
                if let Some(held) = lease.as_ref().and_then(coordination::Held::lost) {
                    outcome.notes.push(format!(
                        "the restart Lease could not be counted on during the restart: {held}"
                    ));
                }
                // healthy: held a little longer for load balancers, then let go
                if let Some(held) = lease.take() {
                    let settle = Duration::from_secs(self.config.lease_settle_secs);
                    outcome.notes.extend(held.release(settle, &stop));
                }
                events::restarted(&outcome);
                RestartStep::Done(Restarted {
                    socket,
                    notes,
                    outcome,
                })
            }
            Ok(Ok(Err(e))) => failed(e),
            Ok(Err(why)) => {
                // The restart was dropped at an await point: finish what its journal says.
                failed(format!(
                    "interrupted by {why}: {}",
                    finish_journal(state_dir)
                ))
            }
        };
        // Not healthy (or not known to be): the Lease is not released but left to expire
        // (lease_duration_secs), so no other node stops its control plane meanwhile.
        if let Some(held) = lease {
            drop(held);
            events::note(&format!(
                "the restart Lease is left to expire ({}s) rather than released: this node's \
                 control plane was not seen healthy",
                self.config.lease_duration_secs
            ));
        }
        step
    }

    /// Proves renewed kubeconfigs when nothing restarts (only `admin.conf` renewed, say): the
    /// local API server must accept each, else the renewal is undone from `backup`. Skipped,
    /// with a note, when this node's kube-apiserver does not even accept connections (nothing
    /// to prove them against; the renewal is not what keeps it down).
    fn prove_only(
        &self,
        kubeconfigs: Vec<PathBuf>,
        before: &Inventory,
        backup: Option<&Path>,
        mut notes: Vec<String>,
    ) -> RestartStep {
        if kubeconfigs.is_empty() {
            return RestartStep::NotNeeded { notes };
        }
        let paths = self.config.paths();
        let pods = match StaticPods::read(&paths.manifests) {
            Ok(pods) => pods,
            Err(e) => {
                notes.push(format!("renewed kubeconfigs not proven: {e}"));
                return RestartStep::NotNeeded { notes };
            }
        };
        let addresses = pods.apiserver_addresses();
        let listens = addresses
            .iter()
            .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_millis(500)).is_ok());
        if !listens {
            notes.push(
                "renewed kubeconfigs not proven: no kube-apiserver answers on this node".into(),
            );
            return RestartStep::NotNeeded { notes };
        }
        let probes = TlsProbes::for_pki(&paths.pki).proving(kubeconfigs, &pods);
        let mut settings = Settings::from_config(self.config, node_name(self.config, before));
        // a running API server answers at once; a longer wait would only delay the verdict
        settings.start_timeout = settings.start_timeout.min(Duration::from_secs(30));
        let state_dir = self.config.state_dir.clone();
        let interrupt = self.interrupt.clone();
        let outcome = block_on(async {
            tokio::select! {
                r = crate::node::proof::prove_or_restore(&probes, &state_dir, backup, &settings) => Ok(r),
                why = interrupted(interrupt) => Err(why),
            }
        });
        let error = match outcome {
            Ok(Ok(Ok(lines))) => {
                notes.extend(lines);
                return RestartStep::NotNeeded { notes };
            }
            Ok(Ok(Err(e))) | Err(e) => e,
            Ok(Err(why)) => format!(
                "interrupted by {why} while proving the renewed kubeconfigs: {}",
                finish_journal(&state_dir)
            ),
        };
        events::renewal_failed(&error);
        RestartStep::Failed { notes, error }
    }

    /// Takes the cluster-wide restart Lease before `components` restart, waiting while another
    /// node holds it. `Ok(None)`: going on without it (coordination off, or the API does not
    /// answer and [`coordination::without_lease`] allows it — said in the journal). `Err`: not
    /// acquired in time; nothing may restart.
    fn take_lease(
        &self,
        components: &[Component],
        before: &Inventory,
        node_name: Option<&str>,
        backup: Option<&Path>,
        observer: &mut dyn Observer,
    ) -> Result<Option<coordination::Held>, String> {
        let config = self.config;
        let names: Vec<String> = components.iter().map(|c| c.name.clone()).collect();
        if !config.coordinate {
            return Ok(None);
        }
        let me = node_name
            .map(str::to_string)
            .unwrap_or_else(crate::daemon::run::hostname);
        let settings = coordination::Settings {
            me,
            duration_secs: i64::try_from(config.lease_duration_secs).unwrap_or(60),
            wait: Duration::from_secs(config.lease_wait_secs),
            max_backoff: Duration::from_secs(5),
        };
        let kubeconfig = coordination::credentials::lease_kubeconfig(config);
        let stop = self.stop_check();
        let observer = std::cell::RefCell::new(observer);
        let mut tell = |waiting: &coordination::Waiting| {
            let line = match waiting {
                coordination::Waiting::HeldBy {
                    holder,
                    expires_in_secs,
                } => format!(
                    "waiting for the restart Lease: held by {holder} (it expires {expires_in_secs}s \
                     after that node's last renewal)"
                ),
                coordination::Waiting::Unreachable(m) => {
                    format!("waiting for the cluster API (restart Lease): {m}")
                }
            };
            events::lease_waiting(&names, &line);
            crate::daemon::systemd::status(&line);
            observer.borrow_mut().lease(&line);
        };
        let api = coordination::KubeApi::from_kubeconfig(&kubeconfig, Duration::from_secs(5));
        let first = match &api {
            Ok(api) => coordination::acquire(
                std::sync::Arc::new(api.clone()),
                &settings,
                true,
                &mut tell,
                &stop,
            ),
            Err(e) => Err(coordination::NotAcquired::Unreachable(e.clone())),
        };
        let unreachable = match first {
            Ok(held) => return Ok(Some(held)),
            Err(coordination::NotAcquired::Unreachable(m)) => m,
            Err(coordination::NotAcquired::Refused(m)) => {
                // The API refused the kubeconfig this renewal just rewrote: take the Lease with
                // the credentials it replaced; the proof after the restart judges the new ones
                // (and rolls them back).
                let previous = backup
                    .map(|b| b.join(store::backup_relative(&kubeconfig, &config.kubernetes_dir)))
                    .filter(|p| p.exists());
                let Some(previous) = previous else {
                    return Err(format!("the cluster API refused: {m}"));
                };
                let old =
                    coordination::KubeApi::from_kubeconfig(&previous, Duration::from_secs(5))?;
                observer.borrow_mut().lease(&format!(
                    "the cluster API refused the renewed {} ({m}); taking the restart Lease with \
                     its previous credentials ({})",
                    kubeconfig.display(),
                    previous.display()
                ));
                return coordination::acquire(
                    std::sync::Arc::new(old),
                    &settings,
                    false,
                    &mut tell,
                    &stop,
                )
                .map(Some)
                .map_err(|e| e.to_string());
            }
            Err(e) => return Err(e.to_string()),
        };
        let expired = self.apiserver_expired(components, before);
        let nodes = self.control_plane_nodes(components);
        // "proceed" covers an API that does not answer, not a kubeconfig that cannot be read
        let policy = if api.is_ok() {
            config.when_api_unreachable
        } else {
            crate::config::WhenUnreachable::Wait
        };
        if let Some(why) = coordination::without_lease(
            expired,
            nodes.as_ref().map(|(n, source)| (*n, source.as_str())),
            policy,
        ) {
            let line = format!("the cluster API does not answer ({unreachable}); {why}");
            events::lease_bypassed(&names, &line);
            observer
                .borrow_mut()
                .lease(&format!("restarting without the Lease: {line}"));
            return Ok(None);
        }
        let Ok(api) = api else {
            return Err(format!(
                "the restart Lease cannot be asked for: {unreachable}"
            ));
        };
        tell(&coordination::Waiting::Unreachable(unreachable));
        coordination::acquire(std::sync::Arc::new(api), &settings, false, &mut tell, &stop)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The restart Lease, for `check`: the identity it is taken with and who holds it. The
    /// API is asked only when coordination is on and the Lease's kubeconfig holds a valid client
    /// certificate (an expired one would only be refused).
    fn lease_look(&self, inventory: &Inventory) -> Option<crate::node::status::LeaseLook> {
        let config = self.config;
        if !config.coordinate {
            return None;
        }
        let kubeconfig = coordination::credentials::lease_kubeconfig(config);
        let identity = coordination::credentials::identity_of(&kubeconfig);
        let expired = inventory
            .entries()
            .find(|e| inventory.real_path(e.source.cert_path()) == inventory.real_path(&kubeconfig))
            .and_then(|e| e.facts())
            .is_some_and(|f| f.not_after <= self.now);
        let holder = if expired {
            Err(format!(
                "not asked: the client certificate of {} has expired",
                kubeconfig.display()
            ))
        } else {
            coordination::KubeApi::from_kubeconfig(&kubeconfig, Duration::from_secs(2))
                .and_then(|api| coordination::holder(&api).map_err(|e| e.to_string()))
                .map(|held| {
                    held.map(|(holder, renewed)| crate::node::status::LeaseHolder {
                        holder,
                        renewed,
                    })
                })
        };
        Some(crate::node::status::LeaseLook {
            kubeconfig,
            identity,
            holder,
        })
    }

    /// Whether this node's API server had an expired certificate: the one it serves now, or
    /// (when it does not answer) the one on disk before the renewal.
    fn apiserver_expired(&self, components: &[Component], before: &Inventory) -> bool {
        let probes = TlsProbes::for_pki(&self.config.paths().pki);
        if let Some(api) = components.iter().find(|c| c.name == "kube-apiserver")
            && let Ok(Some(served)) = probes.served(api)
        {
            return served.served.not_after <= self.now;
        }
        before
            .entries()
            .find(|e| e.name == "apiserver")
            .and_then(|e| e.facts())
            .is_some_and(|f| f.not_after <= self.now)
    }

    /// How many control-plane nodes there are and how that is known: the config's, else the
    /// member count of the local etcd (stacked etcd: one member per control-plane node).
    fn control_plane_nodes(&self, components: &[Component]) -> Option<(u32, String)> {
        if self.config.control_plane_nodes > 0 {
            return Some((
                self.config.control_plane_nodes,
                "control_plane_nodes in the config".into(),
            ));
        }
        let pods;
        let etcd = match components.iter().find(|c| c.name == "etcd") {
            Some(c) => c,
            None => {
                pods = StaticPods::read(&self.config.paths().manifests).ok()?;
                pods.usable.iter().find(|c| c.name == "etcd")?
            }
        };
        let restart::HealthCheck::Etcd(addresses) = &etcd.health else {
            return None;
        };
        let cluster = crate::node::etcd_cluster::members(
            addresses,
            &self.config.paths().pki,
            Duration::from_secs(3),
        )
        .ok()?;
        let n = u32::try_from(cluster.members.len()).ok()?;
        Some((n, format!("the local etcd has {n} member(s)")))
    }

    /// Whether the job has been asked to stop (the daemon's flag; a signal ends a CLI run).
    fn stop_check(&self) -> impl Fn() -> bool + use<> {
        let flag = match &self.interrupt {
            Interrupt::Flag(flag) => Some(flag.clone()),
            Interrupt::Signals => None,
        };
        move || flag.as_ref().is_some_and(|f| *f.borrow())
    }
}

/// After an interruption dropped a step at an await point: what the journal's recovery did.
fn finish_journal(state_dir: &Path) -> String {
    journal::recover(state_dir)
        .map(|m| m.unwrap_or_else(|| "nothing was left to undo".into()))
        .unwrap_or_else(|e| format!("undoing it failed: {e}"))
}

/// The components a restart is wanted for: fed by `renewed` or waiting in `pending`; with
/// `restart = "all"`, kubeadm's four as soon as anything is.
fn wanted_components(
    mode: RestartMode,
    renewed: &[String],
    pending: &pending::Pending,
) -> BTreeSet<String> {
    let mut wanted: BTreeSet<String> = restart::affected_names(renewed)
        .into_iter()
        .map(str::to_string)
        .collect();
    wanted.extend(pending.keys().cloned());
    if mode == RestartMode::All && (!renewed.is_empty() || !pending.is_empty()) {
        wanted.extend(restart::KUBEADM_COMPONENTS.map(str::to_string));
    }
    wanted
}

fn in_restart_order(names: BTreeSet<String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort_by(|a, b| restart::restart_rank(a).cmp(&restart::restart_rank(b)));
    names
}

/// Runs a future to completion on a fresh single-threaded runtime (jobs are synchronous; only
/// the CRI and the waits are async).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok(runtime.block_on(future))
}

/// Resolves when the job is asked to stop: at the first SIGINT, SIGTERM or SIGHUP (never when
/// the handlers cannot be installed), or when the daemon's flag turns true.
async fn interrupted(interrupt: Interrupt) -> String {
    match interrupt {
        Interrupt::Signals => {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = int.recv() => "SIGINT".into(),
                _ = term.recv() => "SIGTERM".into(),
                _ = hup.recv() => "SIGHUP".into(),
            }
        }
        Interrupt::Flag(mut flag) => {
            while !*flag.borrow_and_update() {
                if flag.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
            "a stop request".into()
        }
    }
}
