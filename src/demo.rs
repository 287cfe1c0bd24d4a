//! `kube-cert-renewer demo`: the product end to end on a throwaway node, so anyone can see what
//! it does without a cluster.

use time::OffsetDateTime;

use crate::cli::{CheckArgs, DemoArgs, Output, RenewArgs};
use crate::config::Config;
use crate::nodegen::{self, NodeSpec};

/// Builds the node, shows `check`, renews it (dry run, then for real), shows `check` again, and
/// cleans up unless asked to keep it.
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
    println!(
        "   (3 CAs, 7 PKI leaves and 4 kubeconfigs 5 days from expiry; kubelet.conf points at"
    );
    println!("    the kubelet's own rotated certificate, as on every node since kubeadm 1.17)\n");
    let mut spec = NodeSpec::new(now, 5);
    spec.kubelet_cert_file = Some(
        dir.path()
            .join("var/lib/kubelet/pki/kubelet-client-current.pem"),
    );
    spec.kubelet_not_after = Some(now + time::Duration::days(300));
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
    let text_check = CheckArgs {
        output: Output::Text,
        warn_days: None,
        critical_days: None,
    };
    let code = crate::cli::check(&config, &text_check, now)?;
    println!("\n(check exit code {code}: 0 ok, 1 warning, 2 critical/expired/unreadable)");

    println!("\n== kube-cert-renewer renew all --dry-run\n");
    let renew_args = |dry_run| RenewArgs {
        targets: vec!["all".into()],
        due: false,
        dry_run,
        no_restart: true,
        reuse_keys: false,
        validity: None,
    };
    let dry = crate::cli::renew(&config, &renew_args(true), now)?;
    if dry != 0 {
        return Ok(dry);
    }
    println!("\n== kube-cert-renewer renew all --no-restart\n");
    let renewed = crate::cli::renew(&config, &renew_args(false), now)?;
    if renewed != 0 {
        return Ok(renewed);
    }
    println!("\n== kube-cert-renewer check (after)\n");
    let after = crate::cli::check(&config, &text_check, now)?;
    println!("\n(check exit code {after})");
    if args.keep {
        let kept = dir.keep();
        println!("\nKept the demo node in {}", kept.display());
    }
    Ok(0)
}
