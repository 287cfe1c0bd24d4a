//! `renew` over generated trees: key kinds, reuse, dry run, bundles, same-named CAs, external
//! CAs, and every refusal (which must leave the tree byte-identical and name the file).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kube_cert_renewer::demo::nodegen::{self, LeafTemplate, NodeSpec};
use kube_cert_renewer::pki::keys::{KeyAlgorithm, KeyEncoding};
use time::{Duration, OffsetDateTime};

struct Node {
    /// A small filesystem holding the node and its state dir (unmounted before `tmp` goes).
    tmpfs: Option<Tmpfs>,
    tmp: tempfile::TempDir,
    now: OffsetDateTime,
}

impl Node {
    fn new(days_left: i64, edit: impl FnOnce(&mut NodeSpec)) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        Node::generate(tmp, None, days_left, edit)
    }

    /// A node whose kubernetes dir and state dir share one small tmpfs, as /etc and /var/lib
    /// share the root filesystem of most nodes (None, loudly, where no tmpfs can be mounted).
    fn on_tmpfs(size: &str) -> Option<Node> {
        let tmp = tempfile::tempdir().unwrap();
        let tmpfs = Tmpfs::mount(tmp.path(), size)?;
        Some(Node::generate(tmp, Some(tmpfs), 5, |_| {}))
    }

    fn generate(
        tmp: tempfile::TempDir,
        tmpfs: Option<Tmpfs>,
        days_left: i64,
        edit: impl FnOnce(&mut NodeSpec),
    ) -> Node {
        let now = now();
        let mut spec = NodeSpec::new(now, days_left);
        spec.key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.manifests = false;
        edit(&mut spec);
        nodegen::generate(&tmp.path().join("k"), &spec).unwrap();
        Node { tmpfs, tmp, now }
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("k")
    }
    fn pki(&self) -> PathBuf {
        self.dir().join("pki")
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    /// Runs the binary on this node (its dirs, `--now`) with `config` as the config file's text
    /// (`None`: defaults) and `args` after the global options.
    fn run(&self, config: Option<&str>, args: &[&str]) -> std::process::Output {
        let config_path = match config {
            Some(text) => {
                let path = self.tmp.path().join("config.toml");
                std::fs::write(&path, text).unwrap();
                path
            }
            None => PathBuf::from("/nonexistent/kube-cert-renewer.toml"),
        };
        let (dir, state) = (self.dir(), self.state());
        let mut all = vec![
            "--kubernetes-dir",
            dir.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run_with_config(self.now, &config_path, &all)
    }
    fn renew(&self, args: &[&str]) -> (i32, String, String) {
        renew(self.now, &self.dir(), &self.state(), args)
    }
    /// Runs a renewal that must be refused: exit 1, the message names `file`, nothing changes.
    fn assert_refused(&self, args: &[&str], file: &Path, why: &str) {
        let before = snapshot(&self.dir());
        let (code, out, err) = self.renew(args);
        assert_eq!(code, 1, "must be refused: {out}{err}");
        assert!(
            err.contains(&file.display().to_string()),
            "the message must name {}: {err}",
            file.display()
        );
        assert!(err.contains(why), "the message must say {why:?}: {err}");
        assert_eq!(
            before,
            snapshot(&self.dir()),
            "a refusal must leave the tree byte-identical"
        );
        assert!(
            !self.state().join("backups").exists()
                || std::fs::read_dir(self.state().join("backups"))
                    .unwrap()
                    .count()
                    == 0
        );
    }
}

fn backup_dirs(state: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(state.join("backups"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn fresh_keys_keep_algorithm_size_and_encoding() {
    let cases = [
        (KeyAlgorithm::Rsa(2048), Some(KeyEncoding::Pkcs8)),
        (KeyAlgorithm::Rsa(3072), None),
        (KeyAlgorithm::EcdsaP256, None),
        (KeyAlgorithm::EcdsaP256, Some(KeyEncoding::Pkcs8)),
        (KeyAlgorithm::EcdsaP384, None),
    ];
    for (algorithm, encoding) in cases {
        let node = Node::new(5, |s| {
            s.key_algorithm = algorithm;
            s.key_encoding = encoding;
        });
        let old_key = node.tmp.path().join("old.key");
        std::fs::copy(node.pki().join("apiserver.key"), &old_key).unwrap();
        let old_cert = node.tmp.path().join("old.crt");
        std::fs::copy(node.pki().join("apiserver.crt"), &old_cert).unwrap();
        let (code, out, err) = node.renew(&["apiserver", "admin.conf"]);
        assert_eq!(code, 0, "{algorithm}: {out}{err}");
        let new_key = node.pki().join("apiserver.key");
        assert_eq!(key_kind(&new_key), key_kind(&old_key), "{algorithm}");
        assert_eq!(
            pem_label(&new_key),
            pem_label(&old_key),
            "{algorithm} {encoding:?}"
        );
        assert_ne!(
            std::fs::read(&new_key).unwrap(),
            std::fs::read(&old_key).unwrap()
        );
        assert_eq!(
            identity_text(&node.pki().join("apiserver.crt")),
            identity_text(&old_cert)
        );
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            node.pki().join("ca.crt").to_str().unwrap(),
            node.pki().join("apiserver.crt").to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        // The kubeconfig's key keeps its encoding too.
        let k = node.tmp.path().join("admin.key");
        extract_kubeconfig_key(&node.dir().join("admin.conf"), &k);
        assert_eq!(pem_label(&k), pem_label(&old_key), "{algorithm}");
        // AKI = the CA's SKI.
        let (_, ca_text) = openssl(&[
            "x509",
            "-in",
            node.pki().join("ca.crt").to_str().unwrap(),
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
        ]);
        let (_, leaf_text) = openssl(&[
            "x509",
            "-in",
            node.pki().join("apiserver.crt").to_str().unwrap(),
            "-noout",
            "-ext",
            "authorityKeyIdentifier",
        ]);
        let ski = ca_text.lines().nth(1).unwrap().trim().to_string();
        assert!(
            leaf_text.contains(&ski),
            "AKI {leaf_text} must equal the CA's SKI {ski}"
        );
    }
}

#[test]
fn reuse_keys_keeps_key_files_byte_for_byte() {
    let node = Node::new(5, |_| {});
    let before = snapshot(&node.dir());
    let (code, out, err) = node.renew(&["all", "--reuse-keys"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("key kept"), "{out}");
    let after = snapshot(&node.dir());
    for (file, data) in &before {
        let name = file.file_name().unwrap().to_string_lossy();
        if name.ends_with(".key") {
            assert_eq!(&after[file], data, "{} must not change", file.display());
        }
    }
    assert_ne!(
        before[&node.pki().join("apiserver.crt")],
        after[&node.pki().join("apiserver.crt")]
    );
    let (_, a) = openssl(&[
        "x509",
        "-in",
        node.pki().join("apiserver.crt").to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]);
    let (_, b) = openssl(&[
        "pkey",
        "-in",
        node.pki().join("apiserver.key").to_str().unwrap(),
        "-pubout",
    ]);
    assert_eq!(a, b);
    let old = node.tmp.path().join("old-admin.key");
    std::fs::write(&old, &before[&node.dir().join("admin.conf")]).unwrap();
    extract_kubeconfig_key(&old, &node.tmp.path().join("a1"));
    extract_kubeconfig_key(&node.dir().join("admin.conf"), &node.tmp.path().join("a2"));
    assert_eq!(
        std::fs::read(node.tmp.path().join("a1")).unwrap(),
        std::fs::read(node.tmp.path().join("a2")).unwrap()
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let node = Node::new(5, |_| {});
    let before = snapshot(&node.dir());
    let (code, out, err) = node.renew(&["all", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run"), "{out}");
    for name in ["apiserver", "etcd-peer", "admin.conf", "super-admin.conf"] {
        assert!(
            out.lines().any(|l| l.starts_with(name)),
            "{name} missing from the plan: {out}"
        );
    }
    assert!(out.contains("new ECDSA-P256 key (EC PRIVATE KEY)"), "{out}");
    assert_eq!(before, snapshot(&node.dir()));
    assert!(backup_dirs(&node.state()).is_empty());
}

#[test]
fn a_ca_bundle_signs_with_the_certificate_matching_the_key() {
    let node = Node::new(5, |_| {});
    let mut spec = NodeSpec::new(node.now, 5);
    spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
    let other = nodegen::make_ca("kubernetes", &spec).unwrap();
    let real = std::fs::read_to_string(node.pki().join("ca.crt")).unwrap();
    let bundle = format!("{}{}", other.cert_pem, real);
    std::fs::write(node.pki().join("ca.crt"), &bundle).unwrap();
    std::fs::write(node.tmp.path().join("real-ca.crt"), &real).unwrap();
    let (code, out, err) = node.renew(&["all"]);
    assert_eq!(code, 0, "{out}{err}");
    for cert in ["apiserver.crt", "apiserver-kubelet-client.crt"] {
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            node.tmp.path().join("real-ca.crt").to_str().unwrap(),
            node.pki().join(cert).to_str().unwrap(),
        ]);
        assert!(
            ok,
            "{cert} must be signed by the bundle's certificate that matches ca.key: {text}"
        );
    }
    // kubeconfigs now trust the whole bundle.
    let text = std::fs::read_to_string(node.dir().join("admin.conf")).unwrap();
    use base64::Engine;
    assert!(text.contains(&base64::engine::general_purpose::STANDARD.encode(&bundle)));
}

#[test]
fn three_same_named_cas_each_sign_their_own() {
    let node = Node::new(5, |s| s.same_ca_subject = true);
    let (code, out, err) = node.renew(&["all"]);
    assert_eq!(code, 0, "{out}{err}");
    let pki = node.pki();
    assert_signed_only_by(&pki, &pki.join("apiserver.crt"), "ca", "apiserver");
    assert_signed_only_by(
        &pki,
        &pki.join("apiserver-etcd-client.crt"),
        "etcd-ca",
        "apiserver-etcd-client",
    );
    assert_signed_only_by(&pki, &pki.join("etcd/peer.crt"), "etcd-ca", "etcd-peer");
    assert_signed_only_by(
        &pki,
        &pki.join("front-proxy-client.crt"),
        "front-proxy-ca",
        "front-proxy-client",
    );
}

#[test]
fn only_the_etcd_ca_key_present_renews_the_etcd_leaves_and_skips_the_rest() {
    let node = Node::new(5, |_| {});
    std::fs::remove_file(node.pki().join("ca.key")).unwrap();
    std::fs::remove_file(node.pki().join("front-proxy-ca.key")).unwrap();
    let before = snapshot(&node.dir());
    let (code, out, err) = node.renew(&["all"]);
    assert_eq!(
        code, 0,
        "external CAs are skipped, not failures: {out}{err}"
    );
    let after = snapshot(&node.dir());
    let changed: Vec<String> = before
        .keys()
        .filter(|f| before[*f] != after[*f])
        .map(|f| f.strip_prefix(node.dir()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        changed,
        [
            "pki/apiserver-etcd-client.crt",
            "pki/apiserver-etcd-client.key",
            "pki/etcd/healthcheck-client.crt",
            "pki/etcd/healthcheck-client.key",
            "pki/etcd/peer.crt",
            "pki/etcd/peer.key",
            "pki/etcd/server.crt",
            "pki/etcd/server.key"
        ]
    );
    assert!(
        out.contains("apiserver: its CA ca is externally managed"),
        "{out}"
    );
    assert!(
        out.contains("front-proxy-client: its CA front-proxy-ca is externally managed"),
        "{out}"
    );
}

#[test]
fn an_expired_ca_is_refused() {
    let node = Node::new(-30, |s| {
        s.ca_not_after = s.leaf_not_after + Duration::days(1)
    });
    node.assert_refused(&["all"], &node.pki().join("ca.crt"), "needs a CA rotation");
}

#[test]
fn a_swapped_key_is_refused() {
    let node = Node::new(5, |_| {});
    std::fs::copy(
        node.pki().join("front-proxy-client.key"),
        node.pki().join("apiserver.key"),
    )
    .unwrap();
    node.assert_refused(
        &["all"],
        &node.pki().join("apiserver.key"),
        "does not match",
    );
}

#[test]
fn a_leaf_from_an_unknown_ca_is_refused() {
    let node = Node::new(5, |_| {});
    let mut spec = NodeSpec::new(node.now, 5);
    spec.key_algorithm = KeyAlgorithm::EcdsaP256;
    spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
    let stranger = nodegen::make_ca("front-proxy-ca", &spec).unwrap();
    let t = LeafTemplate {
        cn: "front-proxy-client".into(),
        org: None,
        sans: vec![],
        server: false,
        client: true,
    };
    let (cert, key) = nodegen::make_leaf(&t, &stranger, &spec).unwrap();
    std::fs::write(node.pki().join("front-proxy-client.crt"), cert).unwrap();
    std::fs::write(node.pki().join("front-proxy-client.key"), key).unwrap();
    node.assert_refused(
        &["all"],
        &node.pki().join("front-proxy-client.crt"),
        "not signed by any known CA",
    );
}

#[test]
fn unparseable_files_are_refused() {
    let node = Node::new(5, |_| {});
    let f = node.pki().join("etcd/peer.crt");
    let pem = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, &pem[..pem.len() / 3]).unwrap();
    node.assert_refused(&["all"], &f, "truncated");
    let node = Node::new(5, |_| {});
    std::fs::write(node.dir().join("scheduler.conf"), "]]] nope").unwrap();
    node.assert_refused(
        &["all"],
        &node.dir().join("scheduler.conf"),
        "not a valid kubeconfig",
    );
    let node = Node::new(5, |_| {});
    std::fs::write(
        node.pki().join("apiserver.key"),
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    node.assert_refused(
        &["apiserver"],
        &node.pki().join("apiserver.key"),
        "unusable",
    );
}

/// Makes a path immutable (even root cannot replace it) until dropped.
#[test]
fn an_unwritable_target_changes_nothing() {
    // A directory that refuses new files: caught before the first write.
    let node = Node::new(5, |_| {});
    let _guard = Immutable::new(node.pki().join("etcd"));
    node.assert_refused(&["all"], &node.pki().join("etcd"), "cannot write there");
    drop(_guard);
    // A file that refuses to be replaced, late in the run: the files already written are
    // rolled back from the backup.
    let node = Node::new(5, |_| {});
    let before = snapshot(&node.dir());
    let target = node.dir().join("scheduler.conf");
    let guard = Immutable::new(target.clone());
    let (code, out, err) = node.renew(&["all"]);
    drop(guard);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&target.display().to_string()) && err.contains("restored from the backup"),
        "{err}"
    );
    assert_eq!(
        before,
        snapshot(&node.dir()),
        "every written file must be rolled back"
    );
    assert!(!node.state().join("journal.json").exists());
}

#[test]
fn validity_is_capped_at_the_ca_with_a_warning() {
    let node = Node::new(5, |s| {
        s.ca_not_after = s.leaf_not_after + Duration::days(100)
    });
    let (code, out, err) = node.renew(&["apiserver"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warning: apiserver: validity capped at the end of CA ca"),
        "{out}"
    );
    assert_eq!(
        openssl_date(&node.pki().join("apiserver.crt"), "-enddate"),
        openssl_date(&node.pki().join("ca.crt"), "-enddate")
    );
}

#[test]
fn a_crash_in_the_middle_is_rolled_back_by_the_next_run() {
    for failpoint in ["renew.after-journal", "renew.after-write@1"] {
        let node = Node::new(5, |_| {});
        let before = snapshot(&node.dir());
        crash_at(&node, failpoint);
        if failpoint == "renew.after-write@1" {
            assert_ne!(
                before,
                snapshot(&node.dir()),
                "one file was replaced before the crash"
            );
        }
        let (code, _, err) = node.renew(&["all", "--dry-run"]);
        assert_eq!(code, 0);
        assert!(err.contains("interrupted renewal was rolled back"), "{err}");
        assert_eq!(
            before,
            snapshot(&node.dir()),
            "{failpoint}: the next run restores the node"
        );
        assert!(!node.state().join("journal.json").exists());
    }
}

fn crash_at(node: &Node, failpoint: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"))
        .env("KUBE_CERT_RENEWER_FAILPOINT", failpoint)
        .args([
            "--config",
            "/nonexistent",
            "--kubernetes-dir",
            node.dir().to_str().unwrap(),
            "--state-dir",
            node.state().to_str().unwrap(),
            "renew",
            "all",
            "--no-restart",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "{failpoint}: the process must have died"
    );
    assert!(node.state().join("journal.json").exists());
}

#[test]
fn a_crash_after_the_last_write_completes_instead_of_undoing() {
    let node = Node::new(5, |_| {});
    let before = snapshot(&node.dir());
    crash_at(&node, "renew.before-journal-clear");
    let renewed = visible_snapshot(&node.dir());
    assert_ne!(before, renewed);
    let (code, _, err) = node.renew(&["all", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(err.contains("it is complete"), "{err}");
    assert_eq!(
        renewed,
        snapshot(&node.dir()),
        "a complete renewal is kept, and the previous versions kept for an undo are gone"
    );
    assert!(!node.state().join("journal.json").exists());
}

#[test]
fn a_file_changed_by_someone_else_after_a_crash_is_left_for_a_human() {
    let node = Node::new(5, |_| {});
    crash_at(&node, "renew.after-write@1");
    // Say the operator ran `kubeadm certs renew admin.conf` meanwhile: admin.conf is neither old nor ours.
    let admin = node.dir().join("admin.conf");
    let mut text = std::fs::read_to_string(&admin).unwrap();
    text.push_str("# edited\n");
    std::fs::write(&admin, text).unwrap();
    let before = snapshot(&node.dir());
    let (code, _, err) = node.renew(&["all", "--dry-run"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&admin.display().to_string()) && err.contains("changed by something else"),
        "{err}"
    );
    assert_eq!(before, snapshot(&node.dir()), "nothing is touched");
    assert!(
        node.state().join("journal.json").exists(),
        "the journal is kept"
    );
    // check says so as something to act on now, naming the file
    let out = node.run(None, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("UNFINISHED") && text.contains(&admin.display().to_string()),
        "{text}"
    );
}

#[test]
fn a_leaf_verified_by_another_ca_than_kubeadms_is_refused() {
    let node = Node::new(5, |_| {});
    std::fs::copy(
        node.pki().join("apiserver-kubelet-client.crt"),
        node.pki().join("front-proxy-client.crt"),
    )
    .unwrap();
    std::fs::copy(
        node.pki().join("apiserver-kubelet-client.key"),
        node.pki().join("front-proxy-client.key"),
    )
    .unwrap();
    node.assert_refused(
        &["all"],
        &node.pki().join("front-proxy-client.crt"),
        "kubeadm signs it with front-proxy-ca",
    );
}

#[test]
fn a_corrupt_ca_file_is_refused_not_skipped() {
    let node = Node::new(5, |_| {});
    let ca = node.pki().join("etcd/ca.crt");
    let text = std::fs::read_to_string(&ca).unwrap();
    std::fs::write(&ca, &text[..text.len() / 2]).unwrap();
    node.assert_refused(&["all"], &ca, "cannot be read");
}

#[test]
fn a_broken_kubelet_conf_does_not_block_renew_all() {
    let node = Node::new(5, |_| {});
    std::fs::write(node.dir().join("kubelet.conf"), "not: [a kubeconfig").unwrap();
    let (code, out, err) = node.renew(&["all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kubelet.conf: not in kubeadm's set"), "{out}");
}

#[test]
fn absurd_validity_is_an_error_not_a_panic() {
    let node = Node::new(5, |_| {});
    let (code, _, err) = node.renew(&["all", "--validity", "4000000"]);
    assert_eq!(code, 3, "a bad command line: {err}");
    let out = node.run(Some("validity_days = 4000000\n"), &["renew", "all"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("validity_days"));
}

#[test]
fn backups_are_pruned_to_keep_backups() {
    let node = Node::new(5, |_| {});
    let config = node.tmp.path().join("config.toml");
    std::fs::write(&config, "keep_backups = 2\n").unwrap();
    for i in 0..3 {
        let out = run_with_config(
            node.now + Duration::seconds(i),
            &config,
            &[
                "--kubernetes-dir",
                node.dir().to_str().unwrap(),
                "--state-dir",
                node.state().to_str().unwrap(),
                "renew",
                "scheduler.conf",
                "--no-restart",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(backup_dirs(&node.state()).len(), 2);
}

#[test]
fn kubelet_conf_is_renewed_only_on_request_and_never_when_it_points_at_kubelets_file() {
    let node = Node::new(5, |_| {});
    let (_, out, _) = node.renew(&["all"]);
    assert!(out.contains("kubelet.conf: not in kubeadm's set"), "{out}");
    assert!(!out.contains("restart the kubelet"), "{out}");
    let (code, out, err) = node.renew(&["kubelet.conf"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with("kubelet.conf")), "{out}");
    assert!(
        out.contains("kubelet.conf was renewed: restart the kubelet (systemctl restart kubelet)"),
        "{out}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let pem = tmp.path().join("kubelet-client-current.pem");
    let node = Node::new(5, |s| s.kubelet_cert_file = Some(pem.clone()));
    let before = snapshot(&node.dir());
    let (code, out, _) = node.renew(&["kubelet.conf"]);
    assert_eq!(code, 0);
    assert!(out.contains("the kubelet rotates it itself"), "{out}");
    assert_eq!(before, snapshot(&node.dir()));
}

#[test]
fn due_renews_only_what_is_due() {
    let node = Node::new(100, |_| {});
    let before = snapshot(&node.dir());
    let (code, out, _) = node.renew(&["--due"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Nothing to renew") && out.contains("not due"),
        "{out}"
    );
    assert_eq!(before, snapshot(&node.dir()));
    let node = Node::new(20, |_| {});
    let (code, out, _) = node.renew(&["--due"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("apiserver ")), "{out}");
}

#[test]
fn a_restart_that_cannot_happen_refuses_the_renewal_before_writing() {
    // Manifests present, so `renew all` would restart kube-apiserver & co. afterwards; with no
    // runtime answering, nothing may be renewed (the new files would sit unused next to
    // processes still holding the old ones).
    let node = Node::new(3, |s| s.manifests = true);
    let before = snapshot(&node.dir());
    let out = node.run(
        None,
        &[
            "--runtime-endpoint",
            "unix:///nonexistent/containerd.sock",
            "renew",
            "all",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("renewal not started, nothing was changed"),
        "{err}"
    );
    assert!(err.contains("/nonexistent/containerd.sock"), "{err}");
    assert_eq!(before, snapshot(&node.dir()));

    // A manifest that cannot be read is named, and refuses the renewal too.
    let manifest = node.dir().join("manifests/kube-scheduler.yaml");
    std::fs::write(&manifest, "spec: [not a pod").unwrap();
    let before = snapshot(&node.dir());
    let out = node.run(None, &["renew", "scheduler.conf"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&manifest.display().to_string()), "{err}");
    assert_eq!(before, snapshot(&node.dir()));
}

#[test]
fn nothing_due_restarts_nothing_even_in_restart_all_mode() {
    // The monthly `renew --due` with nothing due must not bounce the control plane: no
    // runtime is even asked (this one does not exist).
    let node = Node::new(100, |s| s.manifests = true);
    let out = node.run(
        Some("restart = \"all\"\nruntime_endpoint = \"unix:///nonexistent/containerd.sock\"\n"),
        &["renew", "--due"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Nothing to renew"), "{text}");
    assert!(
        !text.contains("nonexistent"),
        "the runtime was asked: {text}"
    );
}

#[test]
fn dry_run_names_what_would_be_restarted_by_mode() {
    let node = Node::new(3, |s| s.manifests = true);
    let (code, out, err) = node.renew(&["scheduler.conf", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Would restart kube-scheduler so they"),
        "{out}"
    );
    let out = node.run(
        Some("restart = \"all\"\n"),
        &["renew", "scheduler.conf", "--dry-run"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "Would restart kube-apiserver, etcd, kube-controller-manager, kube-scheduler so they"
        ),
        "{text}"
    );
}

/// A node whose etcd peer certificate was issued for the server's key, with `etcd/peer.key` a
/// symlink to `etcd/server.key`, as hand-made PKIs do. openssl makes the certificate.
fn node_with_shared_etcd_key() -> Node {
    let node = Node::new(5, |_| {});
    let etcd = node.pki().join("etcd");
    let ext = node.tmp.path().join("peer.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:cp-1,DNS:localhost,IP:127.0.0.1\n\
         extendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    let csr = node.tmp.path().join("peer.csr");
    let (ok, text) = openssl(&[
        "req",
        "-new",
        "-key",
        etcd.join("server.key").to_str().unwrap(),
        "-subj",
        "/CN=cp-1",
        "-out",
        csr.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        etcd.join("ca.crt").to_str().unwrap(),
        "-CAkey",
        etcd.join("ca.key").to_str().unwrap(),
        "-days",
        "5",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        etcd.join("peer.crt").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    std::fs::remove_file(etcd.join("peer.key")).unwrap();
    std::os::unix::fs::symlink("server.key", etcd.join("peer.key")).unwrap();
    node
}

/// The public key of a certificate and of a key file, as openssl prints them.
fn cert_and_key_match(cert: &Path, key: &Path) -> bool {
    let (ok, a) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    assert!(ok, "{a}");
    let (ok, b) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert!(ok, "{b}");
    a == b
}

#[test]
fn two_names_for_one_key_are_refused_whichever_is_renewed() {
    let node = node_with_shared_etcd_key();
    let (peer_key, server_key) = (
        node.pki().join("etcd/peer.key"),
        node.pki().join("etcd/server.key"),
    );
    assert!(cert_and_key_match(
        &node.pki().join("etcd/peer.crt"),
        &peer_key
    ));
    for args in [
        &["etcd-server", "etcd-peer"][..],
        &["etcd-server"],
        &["etcd-peer"],
        &["all"],
    ] {
        node.assert_refused(args, &peer_key, "are one file");
        node.assert_refused(args, &server_key, "are one file");
    }
    // Keys kept: nothing is written twice, and both pairs stay whole.
    let (code, out, err) = node.renew(&["all", "--reuse-keys"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        std::fs::symlink_metadata(&peer_key)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    for cert in ["etcd/peer.crt", "etcd/server.crt"] {
        assert!(
            cert_and_key_match(&node.pki().join(cert), &server_key),
            "{cert}"
        );
    }
}

#[test]
fn a_link_into_an_unwritable_directory_is_refused_up_front() {
    // etcd/server.crt lives elsewhere, in a directory that takes no new file; the link's own
    // directory takes them. The check must look where the file really is.
    let node = Node::new(5, |_| {});
    let elsewhere = node.tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = node.pki().join("etcd/server.crt");
    std::fs::rename(&link, elsewhere.join("server.crt")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("server.crt"), &link).unwrap();
    let _guard = Immutable::new(elsewhere.clone());
    node.assert_refused(&["all"], &elsewhere, "cannot write there");
}

#[test]
fn a_full_disk_refuses_before_anything_changes() {
    let Some(node) = Node::on_tmpfs("2m") else {
        return;
    };
    let before = snapshot(&node.dir());
    node.tmpfs.as_ref().unwrap().fill(8192);
    let (code, out, err) = node.renew(&["all"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        before,
        snapshot(&node.dir()),
        "byte-identical, no temp file left"
    );
    assert!(
        backup_dirs(&node.state()).is_empty(),
        "no backup, partial or not"
    );
    assert!(!node.state().join("journal.json").exists());
}

#[test]
fn a_crash_mid_renewal_is_undone_on_a_completely_full_disk() {
    let Some(node) = Node::on_tmpfs("2m") else {
        return;
    };
    let before = snapshot(&node.dir());
    crash_at(&node, "renew.after-write@4");
    assert_ne!(
        before,
        visible_snapshot(&node.dir()),
        "files were replaced before the crash"
    );
    node.tmpfs.as_ref().unwrap().fill(0);
    // any command recovers first; undoing is renames, which need no free space
    let out = node.run(None, &["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted renewal was rolled back"), "{err}");
    assert_eq!(before, snapshot(&node.dir()), "the node is back as it was");
    assert!(!node.state().join("journal.json").exists());
}

#[test]
fn an_undo_that_cannot_finish_keeps_each_pair_whole_and_tries_every_file() {
    let node = Node::new(5, |_| {});
    let before = snapshot(&node.dir());
    // admin.conf, apiserver.crt and apiserver.key are new when it dies
    crash_at(&node, "renew.after-write@3");
    let (crt, key) = (
        node.pki().join("apiserver.crt"),
        node.pki().join("apiserver.key"),
    );
    assert_ne!(before[&key], std::fs::read(&key).unwrap());
    let guard = Immutable::new(key.clone());
    let out = node.run(None, &["renew", "all", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&key.display().to_string()), "{err}");
    // the apiserver pair stayed wholly new; the other group (admin.conf) was still rolled back
    assert!(cert_and_key_match(&crt, &key));
    assert_ne!(before[&crt], std::fs::read(&crt).unwrap());
    assert_eq!(
        before[&node.dir().join("admin.conf")],
        std::fs::read(node.dir().join("admin.conf")).unwrap()
    );
    assert!(
        node.state().join("journal.json").exists(),
        "kept for the next try"
    );
    drop(guard);
    let (code, _, err) = node.renew(&["all", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("interrupted renewal was rolled back"), "{err}");
    assert_eq!(before, snapshot(&node.dir()));
}

#[test]
fn a_crash_between_the_writes_and_the_restart_leaves_a_restart_pending_that_check_reports() {
    let node = Node::new(5, |_| {});
    // relaxed thresholds: what is not renewed (kubelet.conf, 5 days) is not the point here
    let check =
        |node: &Node| node.run(None, &["check", "--warn-days", "2", "--critical-days", "1"]);
    let out = check(&node);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    crash_at(&node, "renew.before-journal-clear");
    let out = check(&node);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("kube-apiserver: restart pending since"),
        "{text}"
    );
    assert!(
        text.contains(
            "run `kube-cert-renewer restart kube-apiserver etcd kube-controller-manager \
             kube-scheduler`"
        ),
        "{text}"
    );
    let out = node.run(None, &["check", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pending: Vec<&str> = json["restartPending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["component"].as_str().unwrap())
        .collect();
    assert_eq!(
        pending,
        [
            "kube-apiserver",
            "etcd",
            "kube-controller-manager",
            "kube-scheduler"
        ]
    );
    let out = node.run(None, &["check", "-o", "prometheus"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kube_cert_renewer_restart_pending{component=\"etcd\"} 1"),
        "{text}"
    );
}

#[test]
fn parked_manifests_fail_check_whatever_the_state_dir() {
    let node = Node::new(100, |s| s.manifests = true);
    let parking = node.dir().join(".kube-cert-renewer-parked");
    std::fs::create_dir(&parking).unwrap();
    // a killed restart whose journal lives in another state dir
    std::fs::rename(
        node.dir().join("manifests/kube-apiserver.yaml"),
        parking.join("kube-apiserver.yaml"),
    )
    .unwrap();
    // and a leftover copy of a manifest that is in place
    std::fs::copy(
        node.dir().join("manifests/etcd.yaml"),
        parking.join("etcd.yaml"),
    )
    .unwrap();
    let out = node.run(None, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "{} is PARKED: its static pod is stopped",
            parking.join("kube-apiserver.yaml").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "mv {} {}",
            parking.join("kube-apiserver.yaml").display(),
            node.dir().join("manifests/kube-apiserver.yaml").display()
        )),
        "{text}"
    );
    assert!(text.contains("leftover copy"), "{text}");
    // the copy alone is only a warning
    std::fs::rename(
        parking.join("kube-apiserver.yaml"),
        node.dir().join("manifests/kube-apiserver.yaml"),
    )
    .unwrap();
    let out = node.run(None, &["check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The serials of every certificate `renew all` renews on a generated node, read by openssl:
/// the PEM leaves and the kubeconfigs' embedded ones.
fn serials(node: &Node) -> std::collections::BTreeMap<String, String> {
    let pki = node.pki();
    let mut out = std::collections::BTreeMap::new();
    for leaf in [
        "apiserver",
        "apiserver-kubelet-client",
        "apiserver-etcd-client",
        "front-proxy-client",
        "etcd/server",
        "etcd/peer",
        "etcd/healthcheck-client",
    ] {
        out.insert(
            leaf.to_string(),
            openssl_serial(&pki.join(format!("{leaf}.crt"))),
        );
    }
    for conf in KUBECONFIGS {
        let cert = node.tmp.path().join(format!("{conf}.crt"));
        extract_kubeconfig_cert(&node.dir().join(conf), &cert);
        out.insert(conf.to_string(), openssl_serial(&cert));
    }
    out
}

const KUBECONFIGS: [&str; 4] = [
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

/// Issue 18: the CA ends in 5 days. The first `renew --due` renews every leaf (3 days left) up
/// to the CA's end, as openssl reads them; the second re-issues nothing — every serial and byte
/// stays — and says why, naming the way out; so does the dry run. A renewal by name (operator
/// intent) still re-issues, and says the new certificate ends no later.
#[test]
fn a_leaf_at_its_cas_end_is_renewed_by_due_once_and_never_again() {
    let node = Node::new(3, |s| s.ca_not_after = s.leaf_not_after + Duration::days(2));
    let ca_end = openssl_date(&node.pki().join("ca.crt"), "-enddate");
    let before = serials(&node);
    let (code, out, err) = node.renew(&["--due"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = serials(&node);
    for (name, serial) in &first {
        assert_ne!(serial, &before[name], "{name} was not renewed: {out}");
    }
    assert_eq!(
        openssl_date(&node.pki().join("apiserver.crt"), "-enddate"),
        ca_end,
        "renewed up to the CA's end"
    );
    let front_proxy_end = openssl_date(&node.pki().join("front-proxy-ca.crt"), "-enddate");
    assert_eq!(
        openssl_date(&node.pki().join("front-proxy-client.crt"), "-enddate"),
        front_proxy_end
    );

    // again: nothing is due, nothing changes
    let tree = snapshot(&node.dir());
    let (code, out, err) = node.renew(&["--due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Nothing to renew."), "{out}");
    assert_eq!(serials(&node), first, "{out}");
    assert_eq!(tree, snapshot(&node.dir()), "{out}");
    let apiserver = out
        .lines()
        .find(|l| l.starts_with("  apiserver: "))
        .unwrap_or_else(|| panic!("no reason for apiserver: {out}"));
    assert!(
        apiserver.contains("capped: it ends on")
            && apiserver.contains("at the end of its CA ca")
            && apiserver.contains("Manually rotate CA certificates")
            && apiserver.contains("`kube-cert-renewer rotate-ca` is planned"),
        "{apiserver}"
    );
    assert_eq!(backup_dirs(&node.state()).len(), 1, "no second backup");
    let (code, out, err) = node.renew(&["--due", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Nothing to renew."), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("  etcd-server: capped: it ends on")),
        "{out}"
    );

    // by name it is re-issued, and says it ends no later
    let (code, out, err) = node.renew(&["apiserver"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(serials(&node)["apiserver"], first["apiserver"]);
    assert_eq!(
        openssl_date(&node.pki().join("apiserver.crt"), "-enddate"),
        ca_end
    );
    assert!(
        out.contains("warning: apiserver: validity capped at the end of CA ca")
            && out.contains("where it already ended: this renewal does not extend it"),
        "{out}"
    );
}
