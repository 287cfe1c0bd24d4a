//! Writes a kubeadm-shaped `/etc/kubernetes` (three CAs, the seven PKI leaves, five
//! kubeconfigs; no static-pod manifests) whose leaves expire in DAYS days — to try the product
//! on, and for the package test in a booted systemd.
//! `cargo run --example kubeadm-node -- DIR DAYS [NODE_NAME]`

use kube_cert_renewer::demo::nodegen::{self, NodeSpec};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(days)) = (args.next(), args.next()) else {
        return Err("usage: kubeadm-node DIR DAYS [NODE_NAME]".into());
    };
    let days: i64 = days
        .parse()
        .map_err(|_| format!("{days:?} is not a number of days"))?;
    let mut spec = NodeSpec::new(time::OffsetDateTime::now_utc(), days);
    spec.manifests = false;
    if let Some(name) = args.next() {
        spec.node_name = name;
    }
    nodegen::generate(std::path::Path::new(&dir), &spec)?;
    println!("a kubeadm node in {dir}, leaves expiring in {days} days");
    Ok(())
}
