//! `recover` end to end on a running node: real containerd, the kubelet stand-in running the
//! static pods (openssl s_server as kube-apiserver, Debian's etcd as etcd). Files are deleted
//! under the running control plane; `recover` brings them back and restarts the components, and
//! the oracles independent of the product (`openssl s_client`, `etcdctl`, `ctr`) show every
//! component running again and serving the certificates now on disk.
//!
//! Needs the private containerd that `.ci/run` starts (`KCR_CONTAINERD_SOCKET`); without it
//! every test here fails (or, in a quick run, `KCR_QUICK=1`, says so loudly and skips).

mod common;

use common::standin_node::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every kubeadm file below `dir`, by path relative to it (the generated node keeps etcd's data
/// dir there too; on a real node it is /var/lib/etcd, not a file `recover` knows).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    common::files_below(dir)
        .into_iter()
        .filter(|p| !p.starts_with(dir.join("etcd-data")))
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p.strip_prefix(dir).unwrap().to_path_buf(), data)
        })
        .collect()
}

/// After a recovery with its restart: every component runs and serves what is on disk now.
fn assert_serving_what_is_on_disk(node: &Node, context: &str) {
    node.wait_up();
    assert_eq!(
        node.api_serial(),
        Some(serial_of(&node.pki("apiserver.crt"))),
        "{context}: kube-apiserver serves the certificate on disk"
    );
    assert_eq!(
        served_serial(node.spec.etcd_client_port),
        Some(serial_of(&node.pki("etcd/server.crt"))),
        "{context}: etcd serves the certificate on disk"
    );
    assert!(node.etcd_healthy(), "{context}: etcdctl endpoint health");
    assert!(node.parked().is_empty(), "{context}: nothing left parked");
}

#[test]
fn the_whole_kubernetes_dir_deleted_under_running_pods_comes_back_from_the_snapshot() {
    let Some(node) = running_node("recover-all", START_60, |_| {}) else {
        return;
    };
    let out = node.run(&["snapshot"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = tree(&node.dir());
    std::fs::remove_dir_all(node.dir()).unwrap();

    let out = node.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("restored from snapshot"), "{said}");
    assert!(!said.contains("re-issued"), "every copy was valid: {said}");
    // the leaves are valid for days: every file comes back byte for byte
    let after = tree(&node.dir());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (path, data) in &before {
        assert!(after[path] == *data, "{} differs", path.display());
    }
    assert_serving_what_is_on_disk(&node, "after the recovery");
    // (the generated leaves have 3 days left: judged with thresholds below that)
    let out = node.run(&["check", "--warn-days", "2", "--critical-days", "1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check after recover: {}",
        text(&out)
    );
}

#[test]
fn pki_and_kubeconfigs_deleted_without_a_snapshot_are_reissued_and_served() {
    let Some(node) = running_node("recover-pki", START_60, |_| {}) else {
        return;
    };
    let manifests = node.manifests_snapshot();
    // only the CAs and sa survive: every leaf and kubeconfig is re-issued from kubeadm's profile
    let keep = [
        "ca.crt",
        "ca.key",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "sa.key",
        "sa.pub",
        "etcd/ca.crt",
        "etcd/ca.key",
    ];
    let pki = node.dir().join("pki");
    for file in common::files_below(&pki) {
        let rel = file
            .strip_prefix(&pki)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if !keep.contains(&rel.as_str()) {
            std::fs::remove_file(&file).unwrap();
        }
    }
    for conf in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
        "kubelet.conf",
    ] {
        let _ = std::fs::remove_file(node.dir().join(conf));
    }
    let old_api = served_serial(node.spec.apiserver_port);

    let out = node.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("from kubeadm's profile and the node's facts"),
        "{said}"
    );
    assert_serving_what_is_on_disk(&node, "after re-issuing from the CAs");
    assert_ne!(node.api_serial(), old_api, "a new serving certificate");
    node.assert_manifests_back(&manifests, "after the recovery");
    // the re-issued kubeconfigs are accepted by the CA the API server trusts
    for conf in ["admin.conf", "controller-manager.conf", "scheduler.conf"] {
        let cert = node.tmp.path().join(format!("{conf}.crt"));
        common::extract_kubeconfig_cert(&node.dir().join(conf), &cert);
        let (ok, out) = common::openssl(&[
            "verify",
            "-CAfile",
            node.pki("ca.crt").to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(ok, "{conf}: {out}");
    }
}
