//! The command line: global options and subcommands, turned into a [`Job`] of the library, and
//! what it returns printed. No orchestration lives here.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{self, Config};
use crate::renew::job::{self, Interrupt, Job, JobError, Observer, RenewRequest};
use crate::renew::plan::Selection;
use crate::report::Report;
use crate::report::runs;
use crate::report::status::Thresholds;

/// Keeps the certificates of a kubeadm control-plane node from ever expiring.
#[derive(Debug, Parser)]
#[command(name = "kube-cert-renewer", version, about, long_about = LONG_ABOUT, after_long_help = AFTER_LONG_HELP)]
pub struct Cli {
    /// Config file (a missing file means defaults).
    #[arg(long, global = true, default_value = config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// The node's kubeadm directory: DIR/pki, DIR/*.conf, DIR/manifests.
    #[arg(long, global = true)]
    pub kubernetes_dir: Option<PathBuf>,
    /// Our own state: backups, journal, lock.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// The container runtime's CRI socket, crictl's spelling (`unix:///run/containerd/containerd.sock`).
    #[arg(long, global = true, value_name = "ENDPOINT")]
    pub runtime_endpoint: Option<String>,
    /// Pretend the time is this RFC 3339 instant (tests and what-if questions).
    #[arg(long, global = true, hide = true, value_parser = parse_now)]
    pub now: Option<OffsetDateTime>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const LONG_ABOUT: &str = "Keeps the certificates of a kubeadm control-plane node from ever \
expiring. It inventories /etc/kubernetes/pki (and pki/etcd) and the client certificates of the \
kubeconfigs; `check` reports them like `kubeadm certs check-expiration`; `renew` re-issues them \
exactly as `kubeadm certs renew` would, with a backup and atomic writes, then restarts the \
static pods that use them over the CRI and checks they serve the new certificates, rolling back \
on failure; `restart` does the restart alone; `run` is the service (kube-cert-renewer.service): \
a monthly maintenance window, a continuous watch, emergency renewal, alerts in the journal.";

const AFTER_LONG_HELP: &str = "Files: /etc/kube-cert-renewer/config.toml (every key is optional; \
the example in the package lists them with their defaults), /var/lib/kube-cert-renewer (backups \
of every replaced file, the intent journal, the restart-pending record, the daemon's memory, the \
lock). Exit codes: 0 ok; 1 attention needed, or a renewal/restart refused or failed; 2 (check) \
critical, expired, unreadable, or a manifest parked; 3 the command could not run; 4 (recover) \
a CA or sa.key is gone from the node and every snapshot. Events: \
journalctl -u kube-cert-renewer, explained by `journalctl -x`. The units: \
kube-cert-renewer.service (the daemon), or kube-cert-renewer-renew.timer (a monthly `renew \
--due`, without a daemon).";

fn parse_now(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report every certificate on the node, like `kubeadm certs check-expiration`.
    Check(CheckArgs),
    /// Re-issue certificates exactly as `kubeadm certs renew` would, with backup and atomic writes.
    Renew(RenewArgs),
    /// Restart control-plane static pods over the CRI: park their manifests, wait for the
    /// containers to exit, put the manifests back, wait for new healthy containers.
    Restart(RestartArgs),
    /// Run as the node's service: renew in the maintenance window, watch every certificate,
    /// renew at once what gets critical, restart safely, alert through the journal.
    Run(RunArgs),
    /// Bring back missing kubeadm files (one key or the whole /etc/kubernetes): restored from
    /// the snapshots, else re-issued from the CAs as kubeadm would; then restart and verify.
    Recover(RecoverArgs),
    /// Take a snapshot of the node's kubeadm files now (the daemon keeps them fresh).
    Snapshot(SnapshotArgs),
    /// Show the next maintenance windows of this node and what would be due at each.
    Schedule(ScheduleArgs),
    /// The least-privilege identity for the restart Lease: print its Role and RoleBinding,
    /// issue its kubeconfig; without options, say which identity the Lease is taken with.
    LeaseCredentials(LeaseCredentialsArgs),
    /// Build a throwaway kubeadm-shaped node in a temp dir and run the product on it.
    Demo(DemoArgs),
    /// A kubelet stand-in for tests: runs the static pods of a manifests dir on a CRI runtime.
    #[cfg(feature = "test-support")]
    #[command(hide = true)]
    KubeletStandin(StandinArgs),
}

/// Options of `restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Static pods to restart; none means kubeadm's four (kube-apiserver, etcd,
    /// kube-controller-manager, kube-scheduler). Others (kube-vip, haproxy) only when named.
    pub components: Vec<String>,
}

/// Options of the hidden `kubelet-standin`.
#[cfg(feature = "test-support")]
#[derive(Debug, Args)]
pub struct StandinArgs {
    /// The manifests dir to watch.
    #[arg(long)]
    pub manifests_dir: PathBuf,
    /// The node name (pods are named `<pod>-<node>`).
    #[arg(long, default_value = "standin")]
    pub node_name: String,
    /// Where container logs go.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
}

/// Options of `renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// `all` (kubeadm's set), or kubeadm names: apiserver, apiserver-etcd-client,
    /// apiserver-kubelet-client, front-proxy-client, etcd-server, etcd-peer,
    /// etcd-healthcheck-client, admin.conf, super-admin.conf, controller-manager.conf,
    /// scheduler.conf, kubelet.conf.
    pub targets: Vec<String>,
    /// Only what expires within `renew_before_days` (config, default 45).
    #[arg(long, conflicts_with = "targets")]
    pub due: bool,
    /// Print the plan (and validate it) without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not restart the control plane afterwards (say what needs a restart instead).
    #[arg(long)]
    pub no_restart: bool,
    /// Keep the existing private keys byte for byte.
    #[arg(long)]
    pub reuse_keys: bool,
    /// Validity of the new certificates in days (config `validity_days`, default 365).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub validity: Option<u32>,
}

/// Options of `recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Say what would be restored, re-issued or left missing, and check it, without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Draw only from this snapshot (a name `--list` shows, or its directory).
    #[arg(long, value_name = "SNAPSHOT")]
    pub from: Option<String>,
    /// List the snapshots and exit.
    #[arg(long, conflicts_with_all = ["dry_run", "from", "new_ca"])]
    pub list: bool,
    /// A kubeadm config file (InitConfiguration/ClusterConfiguration) for what a certificate
    /// re-issued from scratch needs: extra SANs, the control-plane endpoint, the DNS domain.
    #[arg(long, value_name = "FILE")]
    pub kubeadm_config: Option<PathBuf>,
    /// Generate this CA (`ca`, `etcd-ca`, `front-proxy-ca`) or the `sa` key pair here when it is
    /// gone from the node and every snapshot. Every node of the cluster must then trust the new
    /// one: read the procedure `recover` prints without it first.
    #[arg(long, value_name = "NAME")]
    pub new_ca: Vec<String>,
    /// Restore a static-pod manifest even when its Kubernetes version (image tag) differs from
    /// the manifests still on the node (a snapshot from before a `kubeadm upgrade`); without it
    /// such a manifest is left missing, with the command that recreates it.
    #[arg(long)]
    pub allow_version_skew: bool,
    /// Do not restart the control plane afterwards.
    #[arg(long)]
    pub no_restart: bool,
}

/// Options of `lease-credentials`.
#[derive(Debug, Args)]
pub struct LeaseCredentialsArgs {
    /// Print the Role and RoleBinding (YAML for `kubectl apply -f -`) that let the Lease
    /// credential's group get, create and update the restart Lease, and nothing else.
    #[arg(long)]
    pub print_rbac: bool,
    /// Issue this node's Lease credential (a client certificate of the cluster CA, CN
    /// kube-cert-renewer:<node>, O kube-cert-renewer:lease-holders) into
    /// <kubeconfig dir>/kube-cert-renewer.conf, which the Lease then uses by default.
    #[arg(long)]
    pub issue: bool,
}

/// Options of `snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Take it even when files of the newest snapshot are missing now (removed on purpose).
    #[arg(long)]
    pub force: bool,
}

/// Output formats of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// kubeadm's tables plus status.
    Text,
    /// kubeadm's CertificateExpirationInfo JSON.
    Json,
    /// Prometheus text exposition (x509-certificate-exporter metric names).
    Prometheus,
}

/// Options of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Days left below which a leaf is in warning (default from config: 30).
    #[arg(long)]
    pub warn_days: Option<u32>,
    /// Days left below which a leaf is critical (default from config: 7).
    #[arg(long)]
    pub critical_days: Option<u32>,
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where the events go: the journal when one listens, else stderr (`auto`), or either.
    #[arg(long, value_enum, default_value_t = crate::daemon::events::LogTo::Auto)]
    pub log_to: crate::daemon::events::LogTo,
}

/// Options of `schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// How many windows to show.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub next: u16,
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the throwaway node instead of deleting it at the end.
    #[arg(long)]
    pub keep: bool,
}

/// The configuration after applying command-line overrides.
pub fn effective_config(cli: &Cli) -> Result<Config, String> {
    load_config(
        &cli.config,
        cli.kubernetes_dir.as_deref(),
        cli.state_dir.as_deref(),
    )
}

/// Reads the config file and applies the directories given on the command line.
fn load_config(
    file: &Path,
    kubernetes_dir: Option<&Path>,
    state_dir: Option<&Path>,
) -> Result<Config, String> {
    let mut config = Config::load(file).map_err(|e| e.to_string())?;
    if let Some(dir) = kubernetes_dir {
        config.kubernetes_dir = dir.to_path_buf();
    }
    if let Some(dir) = state_dir {
        config.state_dir = dir.to_path_buf();
    }
    // The journal and backups record paths; they must not depend on the working directory.
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    config.kubernetes_dir = absolute(&config.kubernetes_dir)?;
    config.state_dir = absolute(&config.state_dir)?;
    for dir in [
        &mut config.pki_dir,
        &mut config.kubeconfig_dir,
        &mut config.manifests_dir,
    ]
    .into_iter()
    .flatten()
    {
        *dir = absolute(dir)?;
    }
    Ok(config)
}

/// Prints the steps of a job as they happen.
struct Print;

impl Observer for Print {
    fn renewed(&mut self, renewal: &crate::renew::execute::Outcome, dry_run: bool) {
        print!("{}", runs::renewal_text(renewal, dry_run));
    }

    fn restarting(&mut self, components: &[String], socket: &Path) {
        println!(
            "\nRestarting {} over the CRI at {}",
            components.join(", "),
            socket.display()
        );
    }

    fn lease(&mut self, line: &str) {
        println!("{line}");
    }
}

/// Runs `check` and prints its report; returns the exit code.
pub fn check(job: &Job, args: &CheckArgs) -> Result<i32, String> {
    let mut thresholds = Thresholds::from(job.config);
    if let Some(w) = args.warn_days {
        thresholds.warn_days = w;
    }
    if let Some(c) = args.critical_days {
        thresholds.critical_days = c;
    }
    if thresholds.critical_days > thresholds.warn_days {
        return Err(format!(
            "--critical-days ({}) must not exceed --warn-days ({})",
            thresholds.critical_days, thresholds.warn_days
        ));
    }
    let checked = job.check();
    for note in &checked.notes {
        eprintln!("kube-cert-renewer: {note}");
    }
    let report = Report::new(&checked.inventory, job.now, &thresholds).with_node(checked.node);
    match args.output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).map_err(|e| e.to_string())?
        ),
        Output::Prometheus => print!("{}", report.prometheus()),
    }
    Ok(report.exit_code())
}

/// The exit code of a job's error, said on stderr: 1 when it ran and failed or refused, 3 when
/// it could not run.
fn job_error(e: JobError) -> Result<i32, String> {
    match e {
        JobError::Refused(reasons) => {
            eprintln!("kube-cert-renewer: renewal refused, nothing was changed:");
            for r in reasons {
                eprintln!("  {r}");
            }
            Ok(1)
        }
        JobError::NotStarted(e) => {
            eprintln!(
                "kube-cert-renewer: renewal not started, nothing was changed: the control plane \
                 could not be restarted afterwards: {e}\n  (renew with --no-restart to renew \
                 anyway and restart later)"
            );
            Ok(1)
        }
        JobError::Failed(e) => {
            eprintln!("kube-cert-renewer: renewal failed: {e}");
            Ok(1)
        }
        JobError::CannotRun(e) => Err(e),
    }
}

/// Runs `renew`; returns the exit code (0 only when everything requested and renewable was
/// renewed, and restarted when that was asked for).
pub fn renew(job: &Job, args: &RenewArgs) -> Result<i32, String> {
    let selection = if args.due {
        Selection::Due
    } else if args.targets.is_empty() {
        return Err("say what to renew: `all`, `--due`, or certificate names".into());
    } else if args.targets.iter().any(|t| t == "all") {
        if args.targets.len() > 1 {
            return Err("`all` cannot be combined with names".into());
        }
        Selection::All
    } else {
        Selection::Names(args.targets.clone())
    };
    let request = RenewRequest {
        selection,
        due_within_days: job.config.renew_before_days,
        validity_days: args.validity.unwrap_or(job.config.validity_days),
        reuse_keys: args.reuse_keys || job.config.reuse_keys,
        dry_run: args.dry_run,
        restart: !args.no_restart,
    };
    let report = match job.renew(&request, &mut Print) {
        Ok(report) => report,
        Err(e) => return job_error(e),
    };
    print!("{}", runs::renew_report_tail(&report));
    match runs::restart_error(&report.restart) {
        Some(e) => {
            eprintln!("kube-cert-renewer: {e}");
            Ok(1)
        }
        None => Ok(0),
    }
}

/// Runs `restart`: the named static pods, or kubeadm's four. A component whose manifest is
/// unusable is reported (exit 1) without keeping the others from their restart.
pub fn restart(job: &Job, args: &RestartArgs) -> Result<i32, String> {
    let report = match job.restart(&args.components, &mut Print) {
        Ok(report) => report,
        Err(e) => return job_error(e),
    };
    for p in runs::restart_problems(&report) {
        eprintln!("kube-cert-renewer: {p}");
    }
    print!("{}", runs::restart_step_text(&report.restart, false));
    if let Some(e) = runs::restart_error(&report.restart) {
        eprintln!("kube-cert-renewer: {e}");
        return Ok(1);
    }
    if matches!(report.restart, job::RestartStep::NotNeeded { .. }) && report.problems.is_empty() {
        println!(
            "No kubeadm static pods in {}: nothing to restart.",
            job.config.paths().manifests.display()
        );
    }
    Ok(if report.problems.is_empty() { 0 } else { 1 })
}

/// Exit code of `recover` when a CA or `sa.key` is gone from the node and every snapshot.
pub const EXIT_SECRET_GONE: i32 = 4;

/// Runs `recover`; returns the exit code: 0 everything missing is back (and restarted healthy);
/// 1 refused, failed, or something left missing; 4 a CA or `sa.key` is gone everywhere (the
/// procedure is printed, nothing written).
pub fn recover(job: &Job, args: &RecoverArgs) -> Result<i32, String> {
    use crate::recover::run::{RecoverError, Request};
    if args.list {
        let all = crate::state::snapshot::list(&job.config.state_dir)?;
        if all.is_empty() {
            println!(
                "No snapshot in {}.",
                crate::state::snapshot::dir(&job.config.state_dir).display()
            );
        }
        for s in all {
            println!("{}\t{} files\t{}", s.name, s.files.len(), s.dir.display());
        }
        return Ok(0);
    }
    let request = Request {
        dry_run: args.dry_run,
        from: args.from.clone(),
        kubeadm_config: args.kubeadm_config.clone(),
        new_cas: args.new_ca.iter().cloned().collect(),
        allow_version_skew: args.allow_version_skew,
    };
    match job.recover_files(&request, !args.no_restart, &mut Print) {
        Ok(report) => {
            print!("{}", runs::recover_text(&report));
            if let Some(e) = runs::restart_error(&report.restart) {
                eprintln!("kube-cert-renewer: {e}");
                return Ok(1);
            }
            Ok(if report.outcome.unrecoverable.is_empty() {
                0
            } else {
                1
            })
        }
        Err(RecoverError::Stopped(outcome)) => {
            eprint!("{}", runs::recover_stopped_text(&outcome));
            Ok(EXIT_SECRET_GONE)
        }
        Err(RecoverError::Refused(reasons)) => {
            eprintln!("kube-cert-renewer: recovery refused, nothing was written:");
            for r in reasons {
                eprintln!("  {r}");
            }
            Ok(1)
        }
        Err(RecoverError::Failed(e)) => {
            eprintln!("kube-cert-renewer: recovery failed: {e}");
            Ok(1)
        }
        Err(RecoverError::CannotRun(e)) => Err(e),
    }
}

/// Runs `snapshot`: 0 taken or unchanged, 1 not taken (files missing), 3 snapshots are off.
pub fn snapshot(job: &Job, args: &SnapshotArgs) -> Result<i32, String> {
    match job.refresh_snapshot(args.force) {
        None => Err("snapshots are turned off (config `snapshots = false`)".into()),
        Some(Ok(line)) => {
            println!("{line}");
            Ok(0)
        }
        Some(Err(e)) => {
            eprintln!("kube-cert-renewer: {e}");
            Ok(1)
        }
    }
}

/// Runs `lease-credentials`: the RBAC on stdout (so it pipes into kubectl), what was issued or
/// which identity takes the Lease on stderr; 0, or 1 when the Lease is taken as cluster-admin
/// (without options).
pub fn lease_credentials(job: &Job, args: &LeaseCredentialsArgs) -> Result<i32, String> {
    use crate::coordination::credentials;
    if args.print_rbac {
        print!("{}", credentials::rbac_yaml());
    }
    if args.issue {
        let issued = job.issue_lease_credentials()?;
        eprintln!(
            "wrote {}: {} (valid until {}){}; the restart Lease is taken with it from now on \
             (apply the RBAC once per cluster: kube-cert-renewer lease-credentials --print-rbac \
             | kubectl apply -f -)",
            issued.file.display(),
            issued.identity.subject,
            crate::report::rfc3339(issued.not_after),
            issued
                .backup
                .map(|b| format!(", the file it replaced saved in {}", b.display()))
                .unwrap_or_default()
        );
        if job.config.lease_kubeconfig.is_some() {
            eprintln!(
                "note: the config's lease_kubeconfig still names another kubeconfig; remove it \
                 to use {}",
                issued.file.display()
            );
        }
    }
    if args.print_rbac || args.issue {
        return Ok(0);
    }
    let kubeconfig = credentials::lease_kubeconfig(job.config);
    let identity = credentials::identity_of(&kubeconfig)?;
    println!(
        "The restart Lease is taken with {} as {}",
        kubeconfig.display(),
        identity.subject
    );
    if identity.cluster_admin() {
        println!(
            "That is cluster-admin. Least privilege: kube-cert-renewer lease-credentials \
             --print-rbac | kubectl apply -f - (once), then kube-cert-renewer lease-credentials \
             --issue (on each control-plane node)"
        );
        return Ok(1);
    }
    Ok(0)
}

/// Runs the kubelet stand-in until SIGINT/SIGTERM.
#[cfg(feature = "test-support")]
fn standin(cli_endpoint: Option<&str>, args: &StandinArgs) -> Result<i32, String> {
    let endpoint = cli_endpoint.ok_or("kubelet-standin needs --runtime-endpoint")?;
    let socket = config::runtime_socket(endpoint)?;
    let mut options = crate::demo::standin::Options::new(
        args.manifests_dir.clone(),
        socket,
        args.node_name.clone(),
    );
    options.log_dir = args.log_dir.clone();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    tokio.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        crate::demo::standin::run(options, shutdown).await
    })?;
    Ok(0)
}

/// A job run by hand: interrupted by the terminal's signals.
fn by_hand<'a>(config: &'a Config, endpoint: Option<&'a str>, now: OffsetDateTime) -> Job<'a> {
    Job {
        config,
        runtime_endpoint: endpoint,
        now,
        interrupt: Interrupt::Signals,
    }
}

/// Parses arguments and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are answers (0); a bad command line is exit code 3, like
            // every other failure to run (clap's own 2 means "critical" in check's codes)
            let _ = e.print();
            return if e.use_stderr() { 3 } else { 0 };
        }
    };
    let now = cli.now.unwrap_or_else(OffsetDateTime::now_utc);
    let endpoint = cli.runtime_endpoint.as_deref();
    if matches!(
        cli.command,
        Command::Renew(_) | Command::Restart(_) | Command::Recover(_)
    ) {
        // a run by hand tells the journal what it did, as the daemon does (its own output is
        // for the person at the terminal)
        let _ = crate::daemon::events::init_logging(crate::daemon::events::LogTo::JournalOnly);
    }
    // A writing command holds the node lock and first finishes whatever an interrupted run left.
    let locked = |config: &Config| -> Result<crate::state::lock::NodeLock, String> {
        let held = job::lock(config).map_err(|e| e.to_string())?;
        if let Some(done) = job::recover(config).map_err(|e| e.to_string())? {
            eprintln!("kube-cert-renewer: {done}");
        }
        Ok(held)
    };
    let result = match &cli.command {
        Command::Check(args) => {
            effective_config(&cli).and_then(|c| check(&by_hand(&c, endpoint, now), args))
        }
        Command::Renew(args) => effective_config(&cli).and_then(|c| {
            let _lock = locked(&c)?;
            renew(&by_hand(&c, endpoint, now), args)
        }),
        Command::Restart(args) => effective_config(&cli).and_then(|c| {
            let _lock = locked(&c)?;
            restart(&by_hand(&c, endpoint, now), args)
        }),
        Command::Recover(args) => effective_config(&cli).and_then(|c| {
            if args.list {
                return recover(&by_hand(&c, endpoint, now), args);
            }
            let _lock = locked(&c)?;
            recover(&by_hand(&c, endpoint, now), args)
        }),
        Command::Snapshot(args) => effective_config(&cli).and_then(|c| {
            let _lock = locked(&c)?;
            snapshot(&by_hand(&c, endpoint, now), args)
        }),
        #[cfg(feature = "test-support")]
        Command::KubeletStandin(args) => standin(endpoint, args),
        Command::Run(args) => {
            let offset = cli
                .now
                .map(|n| n - OffsetDateTime::now_utc())
                .unwrap_or_default();
            crate::daemon::run::run(crate::daemon::run::Start {
                load: {
                    let (file, k, s) = (
                        cli.config.clone(),
                        cli.kubernetes_dir.clone(),
                        cli.state_dir.clone(),
                    );
                    Box::new(move || load_config(&file, k.as_deref(), s.as_deref()))
                },
                runtime_endpoint: cli.runtime_endpoint.clone(),
                clock_offset: offset,
                log_to: args.log_to,
            })
        }
        Command::Schedule(args) => effective_config(&cli).and_then(|c| {
            print!(
                "{}",
                crate::daemon::run::schedule_text(&c, now, usize::from(args.next))?
            );
            Ok(0)
        }),
        Command::Demo(args) => crate::demo::run(args.keep, now, endpoint),
        Command::LeaseCredentials(args) => effective_config(&cli).and_then(|c| {
            let _lock = if args.issue { Some(locked(&c)?) } else { None };
            lease_credentials(&by_hand(&c, endpoint, now), args)
        }),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("kube-cert-renewer: error: {message}");
            // the command could not run (see the README's exit codes; 2 is check's "critical")
            3
        }
    }
}
