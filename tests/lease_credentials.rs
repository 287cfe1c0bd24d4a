//! The least-privilege Lease identity (issue 21, item 5): `lease-credentials --print-rbac`
//! prints a Role + RoleBinding that kubectl agrees with, `--issue` writes a kubeconfig of the
//! product's own (client certificate of the cluster CA, checked with openssl) through the
//! backed-up write path, the Lease is then taken with it by default (the fake API records the
//! client certificate that wrote the Lease), `check` says which identity takes the Lease and
//! warns when it is cluster-admin, and `renew` renews the credential with the others.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kube_cert_renewer::config::Config;
use kube_cert_renewer::coordination::{self, KubeApi, credentials};
use kube_cert_renewer::demo::fake_api::{self, LeaseStore};
use kube_cert_renewer::demo::nodegen::{self, NodeSpec};

const ISSUED_SUBJECT: &str = "O=kube-cert-renewer:lease-holders, CN=kube-cert-renewer:cp-1";

/// A generated node whose kubeconfigs point at `server` (the fake API).
fn node_at(tmp: &Path, server: Option<&str>) -> PathBuf {
    let dir = tmp.join("k");
    nodegen::generate(&dir, &NodeSpec::new(now(), 30)).unwrap();
    if let Some(server) = server {
        let admin = dir.join("admin.conf");
        let text = std::fs::read_to_string(&admin).unwrap();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("server: "))
            .unwrap()
            .to_string();
        std::fs::write(
            &admin,
            text.replace(&line, &format!("    server: {server}")),
        )
        .unwrap();
    }
    dir
}

/// Runs the binary on `dir` with state in `tmp/state` and the default config.
fn run_on(dir: &Path, tmp: &Path, args: &[&str]) -> (i32, String, String) {
    let state = tmp.join("state");
    let mut all = vec![
        "--kubernetes-dir",
        dir.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = run(now(), &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_of(dir: &Path, tmp: &Path) -> Config {
    Config {
        kubernetes_dir: dir.to_path_buf(),
        state_dir: tmp.join("state"),
        ..Config::default()
    }
}

/// The fake Lease API, served with the node's own apiserver certificate (it names 127.0.0.1)
/// and verifying client certificates against the cluster CA, as kube-apiserver does.
fn fake_api_of(dir: &Path) -> fake_api::Served {
    let pki = dir.join("pki");
    fake_api::serve_verifying_clients(
        LeaseStore::new(),
        "127.0.0.1:0".parse().unwrap(),
        &std::fs::read(pki.join("apiserver.crt")).unwrap(),
        &std::fs::read(pki.join("apiserver.key")).unwrap(),
        &std::fs::read(pki.join("ca.crt")).unwrap(),
    )
    .unwrap()
}

#[test]
fn the_printed_rbac_grants_get_update_on_the_one_lease_and_create_and_kubectl_agrees() {
    if !have("kubectl", "lease-credentials") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = node_at(tmp.path(), None);
    let (code, yaml, err) = run_on(&dir, tmp.path(), &["lease-credentials", "--print-rbac"]);
    assert_eq!(code, 0, "{err}");
    let docs: Vec<serde_json::Value> = yaml
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{yaml}");
    let (role, binding) = (&docs[0], &docs[1]);
    assert_eq!(role["kind"], "Role");
    assert_eq!(role["metadata"]["namespace"], "kube-system");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{yaml}");
    for rule in rules {
        assert_eq!(
            rule["apiGroups"],
            serde_json::json!(["coordination.k8s.io"])
        );
        assert_eq!(rule["resources"], serde_json::json!(["leases"]));
    }
    assert_eq!(
        rules[0]["resourceNames"],
        serde_json::json!(["kube-cert-renewer"])
    );
    assert_eq!(rules[0]["verbs"], serde_json::json!(["get", "update"]));
    assert_eq!(rules[1]["verbs"], serde_json::json!(["create"]));
    assert!(rules[1].get("resourceNames").is_none());
    // kubectl builds the same RoleBinding from the names alone (offline, --dry-run=client)
    let role_name = role["metadata"]["name"].as_str().unwrap();
    let out = Command::new("kubectl")
        .env("KUBECONFIG", "/nonexistent")
        .args(["create", "rolebinding", role_name, "-n", "kube-system"])
        .arg(format!("--role={role_name}"))
        .arg(format!("--group={}", credentials::GROUP))
        .args(["--dry-run=client", "-o", "json"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    theirs["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("creationTimestamp");
    assert_eq!(binding, &theirs, "{yaml}");
}

#[test]
fn the_issued_credential_takes_the_lease_by_default_and_check_names_it() {
    if !have("openssl", "lease-credentials") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // the node must exist before the API can serve its certificate: make it, serve, repoint
    let dir = node_at(tmp.path(), None);
    let served = fake_api_of(&dir);
    let url = format!("https://{}", served.addr);
    let admin = dir.join("admin.conf");
    let text = std::fs::read_to_string(&admin).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("server: "))
        .unwrap()
        .to_string();
    std::fs::write(&admin, text.replace(&line, &format!("    server: {url}"))).unwrap();

    // before: the Lease is taken as cluster-admin, and check says so
    let (_, out, _) = run_on(&dir, tmp.path(), &["check"]);
    assert!(
        out.contains("Restart Lease taken as O=kubeadm:cluster-admins, CN=kubernetes-admin")
            && out.contains("CLUSTER-ADMIN"),
        "{out}"
    );
    let (code, out, _) = run_on(&dir, tmp.path(), &["lease-credentials"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("That is cluster-admin"), "{out}");

    let (code, out, err) = run_on(&dir, tmp.path(), &["lease-credentials", "--issue"]);
    assert_eq!(code, 0, "{out}{err}");
    let issued = dir.join("kube-cert-renewer.conf");
    assert!(
        err.contains(&format!("wrote {}", issued.display())),
        "{err}"
    );
    assert!(err.contains(ISSUED_SUBJECT), "{err}");
    let mode = std::fs::metadata(&issued).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // openssl: a client certificate of the cluster CA, for that subject, clientAuth only
    let cert = tmp.path().join("issued.crt");
    extract_kubeconfig_cert(&issued, &cert);
    let (ok, said) = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        dir.join("pki/ca.crt").to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(ok, "{said}");
    let (_, text) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        text.contains("Subject: O = kube-cert-renewer:lease-holders, CN = kube-cert-renewer:cp-1"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    // its key is the certificate's
    let key = tmp.path().join("issued.key");
    extract_kubeconfig_key(&issued, &key);
    let pubkey = |args: &[&str]| openssl(args).1;
    assert_eq!(
        pubkey(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]),
        pubkey(&["pkey", "-in", key.to_str().unwrap(), "-pubout"])
    );
    // the server is admin.conf's
    let issued_text = std::fs::read_to_string(&issued).unwrap();
    assert!(
        issued_text.contains(&format!("server: {url}")),
        "{issued_text}"
    );

    // the Lease is now taken with it by default, and the API saw that identity
    let config = config_of(&dir, tmp.path());
    assert_eq!(credentials::lease_kubeconfig(&config), issued);
    let api = KubeApi::from_kubeconfig(
        &credentials::lease_kubeconfig(&config),
        Duration::from_secs(5),
    )
    .unwrap();
    let settings = coordination::Settings {
        me: "cp-1".into(),
        duration_secs: 30,
        wait: Duration::from_secs(5),
        max_backoff: Duration::from_millis(200),
    };
    let held =
        coordination::acquire(Arc::new(api), &settings, true, &mut |_| {}, &|| false).unwrap();
    let writes = served.store.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].holder.as_deref(), Some("cp-1"));
    assert_eq!(writes[0].by.as_deref(), Some(ISSUED_SUBJECT), "{writes:?}");

    // check says who holds it and with which identity this node takes it (text and JSON)
    let (_, out, _) = run_on(&dir, tmp.path(), &["check"]);
    eprintln!("{out}");
    assert!(
        out.contains("Restart Lease kube-system/kube-cert-renewer: held by cp-1"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Restart Lease taken as {ISSUED_SUBJECT} ({})",
            issued.display()
        )),
        "{out}"
    );
    assert!(!out.contains("CLUSTER-ADMIN"), "{out}");
    // the inventory watches it with kubeadm's kubeconfigs
    assert!(out.contains("kube-cert-renewer.conf"), "{out}");
    let (_, json) = {
        let (code, out, err) = run_on(&dir, tmp.path(), &["check", "-o", "json"]);
        let json: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
        (code, json)
    };
    let credential = &json["restartLeaseCredential"];
    assert_eq!(credential["kubeconfig"], issued.to_str().unwrap());
    assert_eq!(credential["user"], "kube-cert-renewer:cp-1");
    assert_eq!(
        credential["groups"],
        serde_json::json!([credentials::GROUP])
    );
    assert_eq!(credential["clusterAdmin"], false);
    assert_eq!(json["restartLease"]["holderIdentity"], "cp-1");
    drop(held);
}

#[test]
fn renew_renews_the_issued_credential_and_issuing_again_keeps_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = node_at(tmp.path(), None);
    let (code, out, err) = run_on(&dir, tmp.path(), &["lease-credentials", "--issue"]);
    assert_eq!(code, 0, "{out}{err}");
    let issued = dir.join("kube-cert-renewer.conf");
    let cert = tmp.path().join("c.crt");
    extract_kubeconfig_cert(&issued, &cert);
    let first = openssl_serial(&cert);

    // issuing again replaces it, the old one saved in a backup
    let (code, _, err) = run_on(&dir, tmp.path(), &["lease-credentials", "--issue"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the file it replaced saved in"), "{err}");
    let backups = files_below(&tmp.path().join("state/backups"));
    assert!(
        backups
            .iter()
            .any(|f| f.ends_with("kube-cert-renewer.conf")),
        "{backups:?}"
    );
    extract_kubeconfig_cert(&issued, &cert);
    let second = openssl_serial(&cert);
    assert_ne!(first, second);

    // renew all renews it too, keeping its subject
    let (code, out, err) = renew(now(), &dir, &tmp.path().join("state"), &["all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kube-cert-renewer.conf"), "{out}");
    extract_kubeconfig_cert(&issued, &cert);
    assert_ne!(openssl_serial(&cert), second);
    let (_, text) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject"]);
    assert!(text.contains("CN = kube-cert-renewer:cp-1"), "{text}");
    let config = config_of(&dir, tmp.path());
    let identity = credentials::identity_of(&credentials::lease_kubeconfig(&config)).unwrap();
    assert_eq!(identity.subject, ISSUED_SUBJECT);
}

#[test]
fn without_the_cluster_ca_key_nothing_is_issued_and_the_error_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = node_at(tmp.path(), None);
    std::fs::remove_file(dir.join("pki/ca.key")).unwrap();
    let before = snapshot(&dir);
    let (code, out, err) = run_on(&dir, tmp.path(), &["lease-credentials", "--issue"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains(&dir.join("pki/ca.key").display().to_string()),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before);
}
