//! The command line: global options, subcommands, and the glue from arguments to the pipeline.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{self, Config};
use crate::inventory;
use crate::report::Report;
use crate::status::Thresholds;

/// Keeps the certificates of a kubeadm control-plane node from ever expiring.
#[derive(Debug, Parser)]
#[command(name = "kube-cert-renewer", version, about)]
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

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the throwaway node instead of deleting it at the end.
    #[arg(long)]
    pub keep: bool,
}

/// The configuration after applying command-line overrides.
pub fn effective_config(cli: &Cli) -> Result<Config, String> {
    let mut config = Config::load(&cli.config).map_err(|e| e.to_string())?;
    if let Some(dir) = &cli.kubernetes_dir {
        config.kubernetes_dir = dir.clone();
    }
    if let Some(dir) = &cli.state_dir {
        config.state_dir = dir.clone();
    }
    // The journal and backups record paths; they must not depend on the working directory.
    let absolute =
        |p: &std::path::Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
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

/// Runs `check`; returns the process exit code.
pub fn check(config: &Config, args: &CheckArgs, now: OffsetDateTime) -> Result<i32, String> {
    let mut thresholds = Thresholds::from(config);
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
    let inventory = inventory::scan(
        &config.paths(),
        &inventory::Options {
            extra_paths: config.extra_paths.clone(),
        },
    );
    // check only reads the node, but first finishes what an interrupted run left when it can
    // take the lock; when another run holds it, that run will (said on stderr). A recovery that
    // needs a human is reported with the rest.
    let mut unfinished = None;
    if crate::journal::path(&config.state_dir).exists() {
        match lock(config) {
            Ok(_lock) => unfinished = recover(config).err(),
            Err(e) => eprintln!("kube-cert-renewer: warning: pending recovery not done: {e}"),
        }
    }
    let paths = config.paths();
    let mut node =
        crate::node_status::gather(&paths.manifests, &config.state_dir, &tls_probes(&paths));
    node.unfinished = unfinished;
    let report = Report::new(&inventory, now, &thresholds).with_node(node);
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

/// Finishes or undoes whatever an interrupted run left (the intent journal), before anything else.
pub fn recover(config: &Config) -> Result<(), String> {
    if let Some(done) = crate::journal::recover(&config.state_dir)? {
        eprintln!("kube-cert-renewer: {done}");
    }
    Ok(())
}

/// Holds the state-dir lock: one writer per node at a time.
pub fn lock(config: &Config) -> Result<std::fs::File, String> {
    let dir = &config.state_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.try_lock().map_err(|_| {
        format!(
            "{}: another kube-cert-renewer is working on this node",
            path.display()
        )
    })?;
    Ok(file)
}

/// Runs `renew`; returns the process exit code (0 only when everything requested and
/// renewable was renewed).
pub fn renew(
    cli_endpoint: Option<&str>,
    config: &Config,
    args: &RenewArgs,
    now: OffsetDateTime,
) -> Result<i32, String> {
    use crate::plan::{self, Selection};
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
    let paths = config.paths();
    let inventory = inventory::scan(&paths, &inventory::Options::default());
    let signers = crate::renewal::load_signers(&inventory);
    let plan = plan::plan(
        &inventory,
        &crate::renewal::signing_certs(&signers),
        &plan::Options {
            selection,
            validity_days: args.validity.unwrap_or(config.validity_days),
            reuse_keys: args.reuse_keys || config.reuse_keys,
            renew_before_days: config.renew_before_days,
            now,
        },
    );
    // Whatever the restart afterwards needs is checked before anything is written: a manifest
    // that cannot be used or a runtime that does not answer must not leave renewed files behind
    // with the old ones still in use. What restarts: the components fed by this renewal and
    // any a previous renewal left waiting (`renew --no-restart`, a restart that failed).
    let pending_before = crate::pending::load(&config.state_dir)?;
    let planned: Vec<String> = plan.renew.iter().map(|i| i.name.clone()).collect();
    let mut wanted: BTreeSet<String> = crate::restart::affected_names(&planned)
        .into_iter()
        .map(str::to_string)
        .collect();
    wanted.extend(pending_before.keys().cloned());
    if config.restart == crate::config::RestartMode::All
        && (!planned.is_empty() || !pending_before.is_empty())
    {
        wanted.extend(crate::restart::KUBEADM_COMPONENTS.map(str::to_string));
    }
    let will_restart =
        !args.dry_run && !args.no_restart && plan.refuse.is_empty() && !wanted.is_empty();
    let pods = if will_restart {
        match precheck_restart(cli_endpoint, config, &wanted) {
            Ok(pods) => Some(pods),
            Err(e) => {
                eprintln!(
                    "kube-cert-renewer: renewal not started, nothing was changed: the control \
                     plane could not be restarted afterwards: {e}\n  (renew with --no-restart to \
                     renew anyway and restart later)"
                );
                return Ok(1);
            }
        }
    } else {
        None
    };
    let outcome = match crate::renewal::execute(
        &plan,
        &signers,
        &paths,
        &config.kubernetes_dir,
        config.keep_backups,
        now,
        args.dry_run,
    ) {
        Ok(o) => o,
        Err(crate::renewal::RenewError::Refused(errors)) => {
            eprintln!("kube-cert-renewer: renewal refused, nothing was changed:");
            for e in errors {
                eprintln!("  {e}");
            }
            return Ok(1);
        }
        Err(crate::renewal::RenewError::Failed(e)) => {
            eprintln!("kube-cert-renewer: renewal failed: {e}");
            return Ok(1);
        }
    };
    print!("{}", describe_outcome(&outcome, args.dry_run));
    let renewed: Vec<String> = outcome.renewed.iter().map(|r| r.name.clone()).collect();
    if renewed.iter().any(|r| r == crate::kubeadm::KUBELET_CONF) && !args.dry_run {
        println!(
            "\nkubelet.conf was renewed: restart the kubelet (systemctl restart kubelet) so it \
             uses the new certificate; it reads its kubeconfig only when it starts."
        );
    }
    if args.dry_run || args.no_restart {
        let mut named: BTreeSet<String> = crate::restart::affected_names(&renewed)
            .into_iter()
            .map(str::to_string)
            .collect();
        named.extend(pending_before.keys().cloned());
        if config.restart == crate::config::RestartMode::All && !named.is_empty() {
            named.extend(crate::restart::KUBEADM_COMPONENTS.map(str::to_string));
        }
        if !named.is_empty() {
            println!(
                "\n{} {} so they use the new certificates{}.",
                if args.dry_run {
                    "Would restart"
                } else {
                    "Restart"
                },
                {
                    let mut named: Vec<String> = named.into_iter().collect();
                    named.sort_by(|a, b| {
                        crate::restart::restart_rank(a).cmp(&crate::restart::restart_rank(b))
                    });
                    named.join(", ")
                },
                if args.dry_run {
                    ""
                } else {
                    " (--no-restart: not done; the restart is pending until \
                     `kube-cert-renewer restart` does it, and `check` says so)"
                }
            );
        }
        return Ok(0);
    }
    // Checked before the renewal; none means nothing renewed or pending feeds a static pod.
    let Some(pods) = pods else {
        return Ok(0);
    };
    let pending = crate::pending::load(&config.state_dir)?;
    let wanted: BTreeSet<&str> = pending.keys().map(String::as_str).collect();
    let probes = tls_probes(&paths);
    let (available, _) = pods.kubeadm();
    let (components, notes) = crate::restart::choose(config.restart, &wanted, available, &probes);
    for n in &notes {
        println!("{n}");
    }
    if components.is_empty() {
        return Ok(0);
    }
    let node = node_name(config, &inventory);
    match run_restart(
        cli_endpoint,
        config,
        node,
        &components,
        outcome.backup.as_deref(),
    ) {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("kube-cert-renewer: {e}");
            Ok(1)
        }
    }
}

/// Checks what a restart of the `wanted` components will need — their manifests usable, a
/// runtime socket, a runtime that answers — and returns the node's static pods. A component
/// with no manifest on the node (external etcd) is not needed; one with an unusable manifest
/// is an error.
fn precheck_restart(
    cli_endpoint: Option<&str>,
    config: &Config,
    wanted: &BTreeSet<String>,
) -> Result<crate::restart::StaticPods, String> {
    let pods = crate::restart::StaticPods::read(&config.paths().manifests)?;
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
    let socket = runtime_socket(cli_endpoint, config)?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    tokio.block_on(async {
        let client = crate::cri::RuntimeClient::connect(&socket)
            .await?
            .with_request_timeout(RUNTIME_REQUEST_TIMEOUT);
        crate::restart::Runtime::ping(&client).await.map(drop)
    })?;
    Ok(pods)
}

/// Deadline of one CRI call during a restart: the waits poll, so one slow answer must not
/// stretch them by the client's default two minutes.
const RUNTIME_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves at the first SIGINT, SIGTERM or SIGHUP, with its name; never when the handlers
/// cannot be installed.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

/// The health probes for a node.
fn tls_probes(paths: &config::NodePaths) -> crate::restart::TlsProbes {
    crate::restart::TlsProbes {
        pki: paths.pki.clone(),
        timeout: std::time::Duration::from_secs(5),
    }
}

/// The CRI socket to use: `--runtime-endpoint`, else `runtime_endpoint` in the config, else the
/// first of the default sockets that exists.
pub fn runtime_socket(cli_endpoint: Option<&str>, config: &Config) -> Result<PathBuf, String> {
    if let Some(endpoint) = cli_endpoint.or(config.runtime_endpoint.as_deref()) {
        return config::runtime_socket(endpoint);
    }
    config::DEFAULT_RUNTIME_SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "no container runtime socket found (tried {}); set runtime_endpoint in the \
                 config or --runtime-endpoint",
                config::DEFAULT_RUNTIME_SOCKETS.join(", ")
            )
        })
}

/// The kubelet's node name: the config's, else the one in kubelet.conf's client certificate
/// (`CN=system:node:<name>`).
fn node_name(config: &Config, inventory: &inventory::Inventory) -> Option<String> {
    if let Some(name) = &config.node_name {
        return Some(name.clone());
    }
    inventory
        .entries()
        .find(|e| e.name == crate::kubeadm::KUBELET_CONF)
        .and_then(|e| e.facts())
        .and_then(|f| f.subject_cn.as_deref())
        .and_then(|cn| cn.strip_prefix("system:node:"))
        .map(str::to_string)
}

/// Restarts `components` over the CRI and prints what happened; with `backup`, a failed
/// restart puts the backed-up certificates back and restarts again.
pub fn run_restart(
    cli_endpoint: Option<&str>,
    config: &Config,
    node_name: Option<String>,
    components: &[crate::restart::Component],
    backup: Option<&std::path::Path>,
) -> Result<(), String> {
    use crate::restart::{self, Settings};
    let socket = runtime_socket(cli_endpoint, config)
        .map_err(|e| format!("cannot restart {}: {e}", names_of(components)))?;
    let settings = Settings::from_config(config, node_name);
    let probes = tls_probes(&config.paths());
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    println!(
        "\nRestarting {} over the CRI at {}",
        names_of(components),
        socket.display()
    );
    let outcome = tokio.block_on(async {
        let client = match crate::cri::RuntimeClient::connect(&socket).await {
            Ok(client) => client.with_request_timeout(RUNTIME_REQUEST_TIMEOUT),
            Err(e) => {
                return Ok(Err(format!(
                    "cannot restart {}: {e}; nothing was restarted",
                    names_of(components)
                )));
            }
        };
        let work = restart::restart_with_rollback(
            &client,
            &probes,
            components,
            &config.state_dir,
            &settings,
            backup,
        );
        tokio::select! {
            result = work => Ok(result),
            signal = interrupted() => Err(signal),
        }
    });
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => return Err(e),
        Err(signal) => {
            // The restart was dropped at an await point: finish what its journal says.
            eprintln!("kube-cert-renewer: {signal}: stopping the restart, putting everything back");
            let recovered = crate::journal::recover(&config.state_dir)
                .map(|m| m.unwrap_or_else(|| "nothing was left to put back".into()))
                .unwrap_or_else(|e| format!("putting things back failed: {e}"));
            return Err(format!("interrupted by {signal}: {recovered}"));
        }
    };
    print!("{}", describe_restart(&outcome));
    Ok(())
}

fn names_of(components: &[crate::restart::Component]) -> String {
    components
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_restart(outcome: &crate::restart::Outcome) -> String {
    use crate::cri::short_id as short;
    let secs = |d: std::time::Duration| format!("{:.2}s", d.as_secs_f64());
    let mut rows = vec![
        [
            "COMPONENT",
            "OLD CONTAINER",
            "NEW CONTAINER",
            "STOPPED",
            "RUNNING",
            "HEALTHY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &outcome.restarted {
        rows.push(vec![
            r.name.clone(),
            r.old_ids
                .iter()
                .map(|i| short(i))
                .collect::<Vec<_>>()
                .join(","),
            short(&r.new_id).to_string(),
            secs(r.stopped_after),
            secs(r.running_after),
            secs(r.healthy_after),
        ]);
    }
    let mut out = crate::report::tabulate(&rows);
    for n in &outcome.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(&format!(
        "Restarted in {} (stop phase {}, start phase {}); every manifest is back in place.\n",
        secs(outcome.total),
        secs(outcome.stop_phase),
        secs(outcome.start_phase)
    ));
    out
}

/// Runs `restart`: the named static pods, or kubeadm's four. A component whose manifest is
/// unusable is reported (exit 1) without keeping the others from their restart.
pub fn restart(
    cli_endpoint: Option<&str>,
    config: &Config,
    args: &RestartArgs,
) -> Result<i32, String> {
    let manifests = config.paths().manifests;
    let pods = crate::restart::StaticPods::read(&manifests)?;
    let (components, problems) = if args.components.is_empty() {
        pods.kubeadm()
    } else {
        pods.named(&args.components)?
    };
    for p in &problems {
        eprintln!("kube-cert-renewer: cannot restart {p}");
    }
    if components.is_empty() {
        if problems.is_empty() {
            println!(
                "No kubeadm static pods in {}: nothing to restart.",
                manifests.display()
            );
            return Ok(0);
        }
        return Ok(1);
    }
    let inventory = inventory::scan(&config.paths(), &inventory::Options::default());
    let node = node_name(config, &inventory);
    match run_restart(cli_endpoint, config, node, &components, None) {
        Ok(()) if problems.is_empty() => Ok(0),
        Ok(()) => Ok(1),
        Err(e) => {
            eprintln!("kube-cert-renewer: {e}");
            Ok(1)
        }
    }
}

fn describe_outcome(outcome: &crate::renewal::Outcome, dry_run: bool) -> String {
    use crate::report::{expires, tabulate};
    let mut out = String::new();
    if outcome.renewed.is_empty() {
        out.push_str("Nothing to renew.\n");
    } else {
        out.push_str(if dry_run {
            "Plan (dry run: nothing is written):\n"
        } else {
            "Renewed:\n"
        });
        let mut rows = vec![
            [
                "CERTIFICATE",
                "CERTIFICATE AUTHORITY",
                "OLD EXPIRY",
                "NEW EXPIRY",
                "KEY",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for r in &outcome.renewed {
            rows.push(vec![
                r.name.clone(),
                r.ca.to_string(),
                expires(r.old_not_after),
                expires(r.new_not_after),
                r.key_action.clone(),
            ]);
        }
        out.push_str(&tabulate(&rows));
    }
    if !outcome.skipped.is_empty() {
        out.push_str("\nNot renewed:\n");
        for s in &outcome.skipped {
            out.push_str(&format!("  {}: {}\n", s.name, s.reason));
        }
    }
    for w in &outcome.warnings {
        out.push_str(&format!("\nwarning: {w}\n"));
    }
    if let Some(b) = &outcome.backup {
        out.push_str(&format!(
            "\nThe replaced files are backed up in {}\n",
            b.display()
        ));
    } else if dry_run && !outcome.files.is_empty() {
        out.push_str(&format!(
            "\n{} files would be replaced (after a backup).\n",
            outcome.files.len()
        ));
    }
    out
}

/// Runs the kubelet stand-in until SIGINT/SIGTERM.
#[cfg(feature = "test-support")]
fn standin(cli_endpoint: Option<&str>, args: &StandinArgs) -> Result<i32, String> {
    let endpoint = cli_endpoint.ok_or("kubelet-standin needs --runtime-endpoint")?;
    let socket = config::runtime_socket(endpoint)?;
    let mut options =
        crate::standin::Options::new(args.manifests_dir.clone(), socket, args.node_name.clone());
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
        crate::standin::run(options, shutdown).await
    })?;
    Ok(0)
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
    let result = match &cli.command {
        Command::Check(args) => effective_config(&cli).and_then(|c| check(&c, args, now)),
        Command::Renew(args) => effective_config(&cli).and_then(|c| {
            let _lock = lock(&c)?;
            recover(&c)?;
            renew(cli.runtime_endpoint.as_deref(), &c, args, now)
        }),
        Command::Restart(args) => effective_config(&cli).and_then(|c| {
            let _lock = lock(&c)?;
            recover(&c)?;
            restart(cli.runtime_endpoint.as_deref(), &c, args)
        }),
        #[cfg(feature = "test-support")]
        Command::KubeletStandin(args) => standin(cli.runtime_endpoint.as_deref(), args),
        Command::Demo(args) => crate::demo::run(args, now, cli.runtime_endpoint.as_deref()),
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
