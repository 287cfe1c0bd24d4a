//! `renew all` over the real kubeadm trees, judged by openssl and kubectl.

mod common;

use std::path::{Path, PathBuf};

use common::*;

struct Place {
    cert: PathBuf,
    key: PathBuf,
}

/// Materialises the certificate and key of a renewable place into files openssl can read.
fn place(tree: &Path, scratch: &Path, name: &str, tag: &str) -> Place {
    let pki = tree.join("pki");
    let pair = |base: &str| Place {
        cert: pki.join(format!("{base}.crt")),
        key: pki.join(format!("{base}.key")),
    };
    match name {
        n if n.ends_with(".conf") => {
            let conf = tree.join(n);
            let cert = scratch.join(format!("{tag}-{n}.crt"));
            let key = scratch.join(format!("{tag}-{n}.key"));
            extract_kubeconfig_cert(&conf, &cert);
            extract_kubeconfig_key(&conf, &key);
            Place { cert, key }
        }
        "etcd-server" => pair("etcd/server"),
        "etcd-peer" => pair("etcd/peer"),
        "etcd-healthcheck-client" => pair("etcd/healthcheck-client"),
        other => pair(other),
    }
}

#[test]
fn renew_all_on_every_real_tree_is_kubeadm_faithful() {
    let trees = fixtures();
    let now = now();
    for tree in trees {
        let label = tree.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("k");
        let state = tmp.path().join("state");
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        copy_tree(&tree, &dir);
        let before = snapshot(&dir);
        let (_, plan_json) = check_json(now, &dir);

        let (code, out, err) = renew(now, &dir, &state, &["all"]);
        assert_eq!(code, 0, "{label}: {out}{err}");
        let after = snapshot(&dir);
        let (_, json) = check_json(now, &dir);

        let renewed: Vec<String> = plan_json["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["missing"] == false && c["signedBy"].is_string())
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        if label.contains("kubeconfigs-only") {
            assert!(renewed.is_empty());
            assert_eq!(
                before, after,
                "{label}: nothing can be re-signed, nothing may change"
            );
            assert!(out.contains("is not on this node"), "{out}");
            continue;
        }
        assert!(renewed.len() >= 6, "{label}: {renewed:?}");

        // Exactly the renewed files changed; everything else is byte-identical.
        let mut expected_changed: Vec<PathBuf> = Vec::new();
        for name in &renewed {
            if name.ends_with(".conf") {
                expected_changed.push(dir.join(name));
            } else {
                let p = place(&dir, &scratch, name, "x");
                expected_changed.push(p.cert);
                expected_changed.push(p.key);
            }
        }
        expected_changed.sort();
        let changed: Vec<PathBuf> = before
            .keys()
            .filter(|f| before[*f] != after[*f])
            .cloned()
            .collect();
        assert_eq!(changed, expected_changed, "{label}");
        assert_eq!(
            before.len(),
            after.len(),
            "{label}: no file may appear or vanish"
        );

        // The backup holds the originals byte for byte.
        let backups: Vec<PathBuf> = std::fs::read_dir(state.join("backups"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(backups.len(), 1);
        for file in &changed {
            let copy = backups[0].join(file.strip_prefix(&dir).unwrap());
            assert_eq!(
                std::fs::read(&copy).unwrap(),
                before[file],
                "{label}: backup of {}",
                file.display()
            );
        }
        let old_tree = tmp.path().join("old");
        copy_tree(&backups[0], &old_tree);
        for (file, data) in &before {
            let rel = file.strip_prefix(&dir).unwrap();
            if !old_tree.join(rel).exists() {
                std::fs::create_dir_all(old_tree.join(rel).parent().unwrap()).unwrap();
                std::fs::write(old_tree.join(rel), data).unwrap();
            }
        }

        for name in &renewed {
            let entry = by_name(&json, "certificates", name);
            let ca = entry["signedBy"].as_str().unwrap();
            assert_eq!(entry["status"], "ok", "{label}: {name}");
            let new = place(&dir, &scratch, name, "new");
            let old = place(&old_tree, &scratch, name, "old");
            // Signed by the right CA, as openssl sees it.
            let (ok, text) = openssl(&[
                "verify",
                "-CAfile",
                ca_file(&dir.join("pki"), ca).to_str().unwrap(),
                new.cert.to_str().unwrap(),
            ]);
            assert!(ok, "{label}: {name}: {text}");
            // Subject, SANs, key usage, EKU, basic constraints: equal (openssl's own rendering).
            assert_eq!(
                identity_text(&new.cert),
                identity_text(&old.cert),
                "{label}: {name}"
            );
            // Same key algorithm and size, same PEM label, but a new key.
            assert_eq!(key_kind(&new.key), key_kind(&old.key), "{label}: {name}");
            assert_eq!(pem_label(&new.key), pem_label(&old.key), "{label}: {name}");
            assert_ne!(
                std::fs::read(&new.key).unwrap(),
                std::fs::read(&old.key).unwrap(),
                "{label}: {name}"
            );
            // The key matches the new certificate.
            let (_, a) = openssl(&[
                "x509",
                "-in",
                new.cert.to_str().unwrap(),
                "-noout",
                "-pubkey",
            ]);
            let (_, b) = openssl(&["pkey", "-in", new.key.to_str().unwrap(), "-pubout"]);
            assert_eq!(a, b, "{label}: {name}");
            // Validity: now - 5 min .. now + 365 d.
            let not_before = openssl_date(&new.cert, "-startdate");
            let expected = (now - time::Duration::minutes(5))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            assert_eq!(not_before, expected, "{label}: {name}");
        }

        // kubectl (Go's client-go) reads every renewed kubeconfig and sees the new credentials.
        for name in renewed.iter().filter(|n| n.ends_with(".conf")) {
            let conf = dir.join(name);
            let out = std::process::Command::new("kubectl")
                .args([
                    "--kubeconfig",
                    conf.to_str().unwrap(),
                    "config",
                    "view",
                    "--raw",
                    "-o",
                    "jsonpath={.users[0].user.client-certificate-data}",
                ])
                .output()
                .expect("kubectl is installed (Debian's kubernetes-client)");
            assert!(
                out.status.success(),
                "{label}: kubectl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = std::fs::read_to_string(&conf).unwrap();
            assert!(
                text.contains(String::from_utf8_lossy(&out.stdout).trim()),
                "{label}: {name}"
            );
            // Only the credential lines changed; the rest of the file is as it was.
            let old_text = String::from_utf8(before[&conf].clone()).unwrap();
            let differing: Vec<&str> = old_text
                .lines()
                .zip(text.lines())
                .filter(|(a, b)| a != b)
                .map(|(a, _)| a.trim_start().split(':').next().unwrap())
                .collect();
            assert_eq!(old_text.lines().count(), text.lines().count());
            assert!(
                differing.iter().all(|k| [
                    "client-certificate-data",
                    "client-key-data",
                    "certificate-authority-data"
                ]
                .contains(k)),
                "{label}: {name}: {differing:?}"
            );
        }
    }
}
