//! `recover` from snapshots on generated trees whose certificates are all valid: every file
//! deleted in turn (each certificate, each key, each CA, `sa.*`, each kubeconfig, each
//! manifest), then all of `pki/`, then the whole kubernetes dir, must come back byte for byte
//! with its mode; a snapshot older than a renewal is never used for a pair it no longer
//! matches; and `renew` keeps the snapshot fresh. (Expired leaves re-issued from snapshot
//! copies: tests/recover_real.rs; no snapshot at all: tests/recover_generated.rs.)

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use kube_cert_renewer::demo::nodegen::{NodeSpec, generate};

/// Every file below `dir` with its bytes and mode.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    files_below(dir)
        .into_iter()
        .map(|p| {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
            (p.clone(), (std::fs::read(&p).unwrap(), mode))
        })
        .collect()
}

struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = NodeSpec::new(now(), 100);
        spec.super_admin = true;
        generate(&tmp.path().join("k"), &spec).unwrap();
        std::fs::write(tmp.path().join("config.toml"), "").unwrap();
        Node { tmp }
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("k")
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        self.run_at(now(), args)
    }
    fn run_at(&self, at: time::OffsetDateTime, args: &[&str]) -> std::process::Output {
        let k = self.dir();
        let s = self.tmp.path().join("state");
        let mut all = vec![
            "--kubernetes-dir",
            k.to_str().unwrap(),
            "--state-dir",
            s.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run_with_config(at, &self.tmp.path().join("config.toml"), &all)
    }
}

fn said(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_file_deleted_in_turn_comes_back_byte_for_byte() {
    let node = Node::new();
    let out = node.run(&["snapshot"]);
    assert!(out.status.success(), "{}", said(&out));
    let original = tree(&node.dir());
    assert!(original.len() >= 30, "{} files", original.len());
    let mut cases: Vec<(String, Vec<PathBuf>)> = original
        .keys()
        .map(|p| (p.display().to_string(), vec![p.clone()]))
        .collect();
    let pki = node.dir().join("pki");
    cases.push((
        "all of pki/".into(),
        original
            .keys()
            .filter(|p| p.starts_with(&pki))
            .cloned()
            .collect(),
    ));
    cases.push((
        "the whole kubernetes dir".into(),
        original.keys().cloned().collect(),
    ));
    for (case, gone) in &cases {
        for p in gone {
            std::fs::remove_file(p).unwrap();
        }
        if case == "the whole kubernetes dir" {
            std::fs::remove_dir_all(node.dir()).unwrap();
        }
        let out = node.run(&["recover", "--no-restart"]);
        assert_eq!(out.status.code(), Some(0), "{case}: {}", said(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("re-issued"),
            "{case}: every copy is valid: {stdout}"
        );
        let now_tree = tree(&node.dir());
        assert_eq!(
            now_tree.keys().collect::<Vec<_>>(),
            original.keys().collect::<Vec<_>>(),
            "{case}: the same files"
        );
        for (p, (data, mode)) in &original {
            let (d, m) = &now_tree[p];
            assert!(d == data, "{case}: {} differs", p.display());
            assert_eq!(m, mode, "{case}: {} mode", p.display());
        }
        // nothing missing: a second run has nothing to do and writes nothing
        let out = node.run(&["recover", "--no-restart"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("nothing to recover"),
            "{case}: {}",
            said(&out)
        );
    }
    let (code, json) = check_json(now(), &node.dir());
    assert!(code <= 1, "{json}");
    for cert in json["certificates"].as_array().unwrap() {
        assert_eq!(cert["missing"], false, "{cert}");
    }
}

#[test]
fn a_pair_renewed_after_the_snapshot_is_reissued_not_mixed_with_the_old_copy() {
    let node = Node::new();
    assert!(node.run(&["snapshot"]).status.success());
    // renewed with snapshots off: the snapshot still holds the old apiserver pair
    std::fs::write(node.tmp.path().join("config.toml"), "snapshots = false\n").unwrap();
    let out = node.run(&["renew", "apiserver", "--no-restart"]);
    assert!(out.status.success(), "{}", said(&out));
    std::fs::write(node.tmp.path().join("config.toml"), "").unwrap();
    let cert = node.dir().join("pki/apiserver.crt");
    let key = node.dir().join("pki/apiserver.key");
    let renewed = std::fs::read(&cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("re-issued by ca"), "{stdout}");
    // the old key would not match the renewed certificate: both are new and match
    assert_ne!(std::fs::read(&cert).unwrap(), renewed);
    let pubkey = |args: &[&str]| openssl(args).1;
    assert_eq!(
        pubkey(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]),
        pubkey(&["pkey", "-in", key.to_str().unwrap(), "-pubout"])
    );
    assert_eq!(
        identity_text(&cert),
        {
            let old = node.tmp.path().join("renewed.crt");
            std::fs::write(&old, &renewed).unwrap();
            identity_text(&old)
        },
        "the same subject, SANs and usages"
    );
}

#[test]
fn renew_refreshes_the_snapshot_and_a_damaged_node_is_never_snapshotted() {
    let node = Node::new();
    assert!(node.run(&["snapshot"]).status.success());
    let out = node.run(&["renew", "all", "--no-restart"]);
    assert!(out.status.success(), "{}", said(&out));
    let out = node.run(&["recover", "--list"]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        list.lines().count(),
        2,
        "renew took a second snapshot: {list}"
    );
    // the newest snapshot holds the renewed apiserver certificate
    let newest = list.lines().next().unwrap().split('\t').nth(2).unwrap();
    assert_eq!(
        std::fs::read(Path::new(newest).join("pki/apiserver.crt")).unwrap(),
        std::fs::read(node.dir().join("pki/apiserver.crt")).unwrap()
    );
    std::fs::remove_file(node.dir().join("pki/ca.key")).unwrap();
    let out = node.run(&["snapshot"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("ca.key"), "{}", said(&out));
    let out = node.run(&["recover", "--list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    // the snapshots are root's alone
    let snapshots = node.tmp.path().join("state/snapshots");
    assert_eq!(
        std::fs::metadata(&snapshots).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // a snapshot half-copied by a run that died (it holds CA keys) is swept by the next command
    let partial = snapshots.join("20261129T000000Z.partial");
    std::fs::create_dir_all(partial.join("pki")).unwrap();
    std::fs::write(partial.join("pki/ca.key"), b"secret").unwrap();
    let out = node.run(&["recover", "--no-restart", "--dry-run"]);
    assert!(!partial.exists(), "{}", said(&out));
}

#[test]
fn a_snapshot_manifest_naming_a_file_elsewhere_is_never_written_there() {
    let node = Node::new();
    assert!(node.run(&["snapshot"]).status.success());
    let out = node.run(&["recover", "--list"]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    let snap = PathBuf::from(list.lines().next().unwrap().split('\t').nth(2).unwrap());
    // a MANIFEST line (root's file, but still) pointing outside the node's kubeadm dirs
    let outside = node.tmp.path().join("outside.txt");
    let escape = node.dir().join("pki/../../escaped.txt");
    std::fs::write(snap.join("planted"), b"planted").unwrap();
    let mut manifest = std::fs::read_to_string(snap.join("MANIFEST")).unwrap();
    manifest.push_str(&format!("planted\t{}\n", outside.display()));
    manifest.push_str(&format!("planted\t{}\n", escape.display()));
    std::fs::write(snap.join("MANIFEST"), manifest).unwrap();
    std::fs::remove_file(node.dir().join("pki/apiserver.key")).unwrap();
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(node.dir().join("pki/apiserver.key").exists());
    assert!(!outside.exists(), "written outside the node's dirs");
    assert!(!node.tmp.path().join("escaped.txt").exists());
    assert!(
        said(&out).contains("outside the node's kubeadm dirs"),
        "{}",
        said(&out)
    );
}

/// The names `recover --list` shows, newest first.
fn snapshot_names(node: &Node) -> Vec<String> {
    let out = node.run(&["recover", "--list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect()
}

#[test]
fn a_file_removed_on_purpose_and_recorded_stays_removed() {
    let node = Node::new();
    assert!(node.run(&["snapshot"]).status.success());
    let super_admin = node.dir().join("super-admin.conf");
    std::fs::remove_file(&super_admin).unwrap();
    // recorded: the older generation still has it, but the newest says it is gone on purpose
    let out = node.run(&["snapshot"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let out = node.run(&["snapshot", "--force"]);
    assert!(out.status.success(), "{}", said(&out));
    std::fs::remove_file(node.dir().join("pki/apiserver.key")).unwrap();
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(node.dir().join("pki/apiserver.key").exists());
    assert!(!super_admin.exists(), "brought back: {}", said(&out));
    // drawn from the older snapshot on purpose, it does come back
    let older = snapshot_names(&node).last().unwrap().clone();
    let out = node.run(&["recover", "--no-restart", "--from", &older]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(super_admin.exists(), "{}", said(&out));
}

#[test]
fn a_damaged_ca_key_is_never_snapshotted_over_the_good_copies() {
    let node = Node::new();
    assert!(node.run(&["snapshot"]).status.success());
    let key = node.dir().join("pki/ca.key");
    let good = std::fs::read(&key).unwrap();
    std::fs::write(&key, b"").unwrap();
    let out = node.run(&["snapshot"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("ca.key"), "{}", said(&out));
    assert_eq!(snapshot_names(&node).len(), 1);
    // the good key is still in the snapshot, and comes back when the damaged one is removed
    std::fs::remove_file(&key).unwrap();
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(std::fs::read(&key).unwrap(), good);
}

#[test]
fn snapshots_are_ordered_by_sequence_not_by_the_clock() {
    let node = Node::new();
    let ahead = now() + time::Duration::days(30);
    assert!(node.run_at(ahead, &["snapshot"]).status.success());
    let scheduler = node.dir().join("manifests/kube-scheduler.yaml");
    let mut text = std::fs::read_to_string(&scheduler).unwrap();
    text.push_str("# changed after the clock was fixed\n");
    std::fs::write(&scheduler, &text).unwrap();
    assert!(node.run(&["snapshot"]).status.success());
    let names = snapshot_names(&node);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("000002-"), "{names:?}");
    std::fs::remove_file(&scheduler).unwrap();
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(std::fs::read_to_string(&scheduler).unwrap(), text);
}

#[test]
fn a_recovery_that_only_creates_files_keeps_no_backup_and_a_damaged_snapshot_is_skipped() {
    let node = Node::new();
    assert!(node.run(&["snapshot"]).status.success());
    let conf = node.dir().join("scheduler.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("# second generation\n");
    std::fs::write(&conf, &text).unwrap();
    assert!(node.run(&["snapshot"]).status.success());
    let names = snapshot_names(&node);
    let snapshots = node.tmp.path().join("state/snapshots");
    // the older snapshot lost a copy; the newer one is whole
    std::fs::remove_file(snapshots.join(&names[1]).join("admin.conf")).unwrap();
    // a MANIFEST naming a copy outside its snapshot makes that snapshot unusable, not the run
    let third = snapshots.join("000000-broken");
    std::fs::create_dir_all(&third).unwrap();
    std::fs::write(third.join("MANIFEST"), "/etc/passwd\t/x/admin.conf\n").unwrap();
    std::fs::remove_file(&conf).unwrap();
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), text);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("000000-broken is unusable"), "{stdout}");
    assert!(!stdout.contains("Backup of the files replaced"), "{stdout}");
    let backups = node.tmp.path().join("state/backups");
    let kept = std::fs::read_dir(&backups).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "an empty backup generation was kept");
}

#[test]
fn an_external_etcd_node_is_whole_and_its_client_pair_is_restored_verbatim() {
    // kubeadm's external-etcd layout on a real tree: etcd's CA certificate and the API server's
    // etcd client pair, no etcd CA key, no etcd certificates of its own, no etcd manifest
    let tmp = tempfile::tempdir().unwrap();
    let tree = fixtures()
        .into_iter()
        .find(|t| t.ends_with("v1.18-stacked-etcd"))
        .unwrap();
    let k = tmp.path().join("k");
    copy_tree(&tree, &k);
    for f in files_below(&k) {
        let mut perms = std::fs::metadata(&f).unwrap().permissions();
        perms.set_mode(0o600);
        std::fs::set_permissions(&f, perms).unwrap();
    }
    for f in [
        "pki/etcd/ca.key",
        "pki/etcd/server.crt",
        "pki/etcd/server.key",
        "pki/etcd/peer.crt",
        "pki/etcd/peer.key",
        "pki/etcd/healthcheck-client.crt",
        "pki/etcd/healthcheck-client.key",
        "manifests/etcd.yaml",
    ] {
        std::fs::remove_file(k.join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("config.toml"), "").unwrap();
    let node = Node { tmp };
    let (_, text, _) = check_text(now(), &node.dir());
    for name in ["etcd-server", "etcd-peer", "etcd-healthcheck-client"] {
        let row = text.lines().find(|l| l.contains(name)).unwrap_or_default();
        // kubeadm's table prints `!MISSING!` for both; the STATUS column tells them apart
        assert!(
            row.trim_end().ends_with("absent"),
            "{name} not absent: {text}"
        );
    }
    let out = node.run(&["snapshot"]);
    assert!(out.status.success(), "{}", said(&out));
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(said(&out).contains("nothing to recover"), "{}", said(&out));
    let client = node.dir().join("pki/apiserver-etcd-client.crt");
    let bytes = std::fs::read(&client).unwrap();
    std::fs::remove_file(&client).unwrap();
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(std::fs::read(&client).unwrap(), bytes);
    assert!(!node.dir().join("manifests/etcd.yaml").exists());
    assert!(!said(&out).contains("etcd local"), "{}", said(&out));
}

/// `kubeadm upgrade` as the manifests show it: kubeadm's control-plane images at `to`.
fn upgrade_manifests(node: &Node, from: &str, to: &str) {
    for m in [
        "kube-apiserver.yaml",
        "kube-controller-manager.yaml",
        "kube-scheduler.yaml",
    ] {
        let path = node.dir().join("manifests").join(m);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!(":{from}")), "{m}: {text}");
        std::fs::write(&path, text.replace(&format!(":{from}"), &format!(":{to}"))).unwrap();
    }
}

/// The newest snapshot's directory.
fn newest_snapshot(node: &Node) -> PathBuf {
    let out = node.run(&["recover", "--list"]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    PathBuf::from(list.lines().next().unwrap().split('\t').nth(2).unwrap())
}

/// In timer mode `renew --due` is the only run that looks at the node: it refreshes the
/// snapshot even when nothing is due, so manifests changed since (a `kubeadm upgrade`) are in
/// the newest snapshot before a recovery needs them. A dry run takes none.
#[test]
fn renew_due_with_nothing_due_still_snapshots_changed_manifests() {
    let node = Node::new();
    // leaves 100 days from expiry: nothing is due within renew_before_days (65)
    let out = node.run(&["renew", "--due", "--no-restart"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(!said(&out).contains("renewed until"), "{}", said(&out));
    assert_eq!(snapshot_names(&node).len(), 1, "{}", said(&out));
    upgrade_manifests(&node, "v1.30.0", "v1.31.0");
    let out = node.run(&["renew", "--due", "--no-restart", "--dry-run"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(snapshot_names(&node).len(), 1, "a dry run writes nothing");
    let out = node.run(&["renew", "--due", "--no-restart"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(snapshot_names(&node).len(), 2, "{}", said(&out));
    let copy = newest_snapshot(&node).join("manifests/kube-apiserver.yaml");
    let text = std::fs::read_to_string(copy).unwrap();
    assert!(text.contains("kube-apiserver:v1.31.0"), "{text}");
}

/// A manifest from a snapshot taken before a `kubeadm upgrade` is not restored beside the
/// upgraded ones (it would start kube-apiserver at v1.30 under a v1.31 controller-manager and
/// scheduler): it is left missing with the reason and what to run, while everything else comes
/// back; `--allow-version-skew` restores it anyway, saying so.
#[test]
fn a_manifest_from_before_an_upgrade_is_not_restored_beside_upgraded_ones() {
    let node = Node::new();
    assert!(node.run(&["snapshot"]).status.success());
    // upgraded since the snapshot (no run took one in between)
    upgrade_manifests(&node, "v1.30.0", "v1.31.0");
    let apiserver = node.dir().join("manifests/kube-apiserver.yaml");
    let old_copy =
        std::fs::read(newest_snapshot(&node).join("manifests/kube-apiserver.yaml")).unwrap();
    std::fs::remove_file(&apiserver).unwrap();
    let key = node.dir().join("pki/apiserver.key");
    std::fs::remove_file(&key).unwrap();

    let out = node.run(&["recover", "--dry-run", "--no-restart"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    for word in [
        apiserver.display().to_string(),
        "runs v1.30.0".into(),
        "kube-controller-manager.yaml runs v1.31.0".into(),
        "--allow-version-skew".into(),
        "kubeadm init phase control-plane".into(),
    ] {
        assert!(said(&out).contains(&word), "{word}: {}", said(&out));
    }
    assert!(
        !apiserver.exists() && !key.exists(),
        "a dry run writes nothing"
    );

    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(!apiserver.exists(), "restored at v1.30: {}", said(&out));
    assert!(key.exists(), "the rest comes back: {}", said(&out));

    let out = node.run(&["recover", "--no-restart", "--allow-version-skew"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(std::fs::read(&apiserver).unwrap(), old_copy);
    assert!(said(&out).contains("WARNING"), "{}", said(&out));
    assert!(said(&out).contains("runs v1.30.0"), "{}", said(&out));

    // no upgrade: the same manifest comes back without a word
    let node = Node::new();
    assert!(node.run(&["snapshot"]).status.success());
    let apiserver = node.dir().join("manifests/kube-apiserver.yaml");
    std::fs::remove_file(&apiserver).unwrap();
    let out = node.run(&["recover", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(apiserver.exists());
    assert!(!said(&out).contains("WARNING"), "{}", said(&out));
}
