//! `kube-cert-renewer demo`: the product end to end on a throwaway node, so anyone can see what
//! it does without a cluster.

use time::OffsetDateTime;

use crate::cli::{CheckArgs, DemoArgs, Output};
use crate::config::Config;
use crate::nodegen::{self, NodeSpec};

/// Builds the node, shows `check`, and cleans up unless asked to keep it.
pub fn run(args: &DemoArgs, now: OffsetDateTime) -> Result<i32, String> {
    let dir = tempfile::Builder::new()
        .prefix("kube-cert-renewer-demo.")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let kubernetes_dir = dir.path().join("etc-kubernetes");
    let state_dir = dir.path().join("state");
    println!(
        "== Building a throwaway kubeadm node in {}",
        kubernetes_dir.display()
    );
    println!("   (3 CAs, 7 PKI leaves and 5 kubeconfigs, leaves 5 days from expiry)\n");
    let spec = NodeSpec::new(now, 5);
    nodegen::generate(&kubernetes_dir, &spec)?;
    let config = Config {
        kubernetes_dir: kubernetes_dir.clone(),
        state_dir,
        ..Config::default()
    };
    println!(
        "== kube-cert-renewer check --kubernetes-dir {}\n",
        kubernetes_dir.display()
    );
    let code = crate::cli::check(
        &config,
        &CheckArgs {
            output: Output::Text,
            warn_days: None,
            critical_days: None,
        },
        now,
    )?;
    println!("\n(check exit code {code}: 0 ok, 1 warning, 2 critical/expired/unreadable)");
    if args.keep {
        let kept = dir.keep();
        println!("\nKept the demo node in {}", kept.display());
    }
    Ok(0)
}
