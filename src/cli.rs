//! The command line: global options, subcommands, and the glue from arguments to the pipeline.

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
    /// Build a throwaway kubeadm-shaped node in a temp dir and run the product on it.
    Demo(DemoArgs),
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
    /// Do not restart the control plane afterwards (the only behaviour until the CRI slice).
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
    let report = Report::new(&inventory, now, &thresholds);
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
pub fn renew(config: &Config, args: &RenewArgs, now: OffsetDateTime) -> Result<i32, String> {
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
    if !args.dry_run {
        let mut components: Vec<&str> = outcome
            .renewed
            .iter()
            .filter_map(|r| crate::kubeadm::component_of(&r.name))
            .collect();
        components.sort();
        components.dedup();
        if !components.is_empty() {
            println!(
                "\nRestart {} so they use the new certificates (automatic restart over the CRI is not \
                 built yet: this run behaves as --no-restart).",
                components.join(", ")
            );
        }
    }
    Ok(0)
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

/// Parses arguments and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let now = cli.now.unwrap_or_else(OffsetDateTime::now_utc);
    let result = match &cli.command {
        Command::Check(args) => effective_config(&cli).and_then(|c| {
            // check only reads: when it cannot take the lock (another run is working, or no
            // permission) it leaves any pending recovery to that run and says so.
            if crate::journal::path(&c.state_dir).exists() {
                match lock(&c).and_then(|_lock| recover(&c)) {
                    Ok(()) => {}
                    Err(e) => {
                        eprintln!("kube-cert-renewer: warning: pending recovery not done: {e}")
                    }
                }
            }
            check(&c, args, now)
        }),
        Command::Renew(args) => effective_config(&cli).and_then(|c| {
            let _lock = lock(&c)?;
            recover(&c)?;
            renew(&c, args, now)
        }),
        Command::Demo(args) => crate::demo::run(args, now),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("kube-cert-renewer: error: {message}");
            // 2 is taken by "critical" in check; usage errors are clap's 2 as well.
            3
        }
    }
}
