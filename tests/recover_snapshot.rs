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
        let k = self.dir();
        let s = self.tmp.path().join("state");
        let mut all = vec![
            "--kubernetes-dir",
            k.to_str().unwrap(),
            "--state-dir",
            s.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run_with_config(now(), &self.tmp.path().join("config.toml"), &all)
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
