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
    /// Build a throwaway kubeadm-shaped node in a temp dir and run the product on it.
    Demo(DemoArgs),
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

/// Parses arguments and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let now = cli.now.unwrap_or_else(OffsetDateTime::now_utc);
    let result = match &cli.command {
        Command::Check(args) => effective_config(&cli).and_then(|c| check(&c, args, now)),
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
