//! `check` over trees the project generates: every key kind and encoding, CA bundles, external
//! CAs, same-subject CAs, and the ways files break. openssl is the oracle where it fits.

mod common;

use std::path::Path;

use common::*;
use kube_cert_renewer::demo::nodegen::{self, LeafTemplate, NodeSpec};
use kube_cert_renewer::pki::keys::{KeyAlgorithm, KeyEncoding};
use time::OffsetDateTime;

fn node(
    now: OffsetDateTime,
    days_left: i64,
    edit: impl FnOnce(&mut NodeSpec),
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = NodeSpec::new(now, days_left);
    spec.manifests = false;
    edit(&mut spec);
    nodegen::generate(tmp.path(), &spec).unwrap();
    tmp
}

fn statuses(json: &serde_json::Value, list: &str) -> Vec<(String, String)> {
    json[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_all_leaves(json: &serde_json::Value, status: &str) {
    for (name, s) in statuses(json, "certificates") {
        assert_eq!(s, status, "{name}");
    }
}

#[test]
fn every_key_algorithm_and_encoding_gives_the_right_rows_and_exit_code() {
    let now = now();
    let cases = [
        (KeyAlgorithm::Rsa(2048), None),
        (KeyAlgorithm::Rsa(2048), Some(KeyEncoding::Pkcs8)),
        (KeyAlgorithm::Rsa(3072), None),
        (KeyAlgorithm::Rsa(4096), Some(KeyEncoding::Pkcs8)),
        (KeyAlgorithm::EcdsaP256, None),
        (KeyAlgorithm::EcdsaP256, Some(KeyEncoding::Pkcs8)),
        (KeyAlgorithm::EcdsaP384, None),
    ];
    for (algorithm, encoding) in cases {
        let tmp = node(now, 20, |s| {
            s.key_algorithm = algorithm;
            s.ca_key_algorithm = if algorithm == KeyAlgorithm::EcdsaP384 {
                algorithm
            } else {
                KeyAlgorithm::EcdsaP256
            };
            s.key_encoding = encoding;
        });
        let key = std::fs::read_to_string(tmp.path().join("pki/apiserver.key")).unwrap();
        let expected_label = encoding.unwrap_or(match algorithm {
            KeyAlgorithm::Rsa(_) => KeyEncoding::Pkcs1,
            _ => KeyEncoding::Sec1,
        });
        assert!(key.starts_with(&format!("-----BEGIN {}-----", expected_label.label())));
        // openssl reads the key the generator wrote, and it is the certificate's key.
        let (ok, text) = openssl(&[
            "pkey",
            "-in",
            tmp.path().join("pki/apiserver.key").to_str().unwrap(),
            "-pubout",
        ]);
        assert!(ok, "{algorithm}: {text}");
        let (ok2, cert_pub) = openssl(&[
            "x509",
            "-in",
            tmp.path().join("pki/apiserver.crt").to_str().unwrap(),
            "-noout",
            "-pubkey",
        ]);
        assert!(ok2);
        assert_eq!(text, cert_pub, "{algorithm}");

        let (code, json) = check_json(now, tmp.path());
        assert_eq!(
            code, 1,
            "{algorithm} {encoding:?}: 20 days left is a warning"
        );
        assert_all_leaves(&json, "warning");
        assert_eq!(
            by_name(&json, "otherCertificates", "kubelet.conf")["status"],
            "warning"
        );
        for (name, s) in statuses(&json, "certificateAuthorities") {
            assert_eq!(s, "ok", "{name}");
        }
        for leaf in json["certificates"].as_array().unwrap() {
            let ca = leaf["caName"].as_str().unwrap();
            assert_eq!(leaf["signedBy"], ca);
        }
    }
}

#[test]
fn thresholds_decide_the_exit_code() {
    let now = now();
    for (days, code, status) in [
        (100, 0, "ok"),
        (20, 1, "warning"),
        (3, 2, "critical"),
        (-2, 2, "expired"),
    ] {
        let tmp = node(now, days, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
        let (got, json) = check_json(now, tmp.path());
        assert_eq!(got, code, "{days} days");
        assert_all_leaves(&json, status);
        if days < 0 {
            let (_, text, _) = check_text(now, tmp.path());
            let line = text.lines().find(|l| l.starts_with("apiserver ")).unwrap();
            assert!(line.contains("<invalid>"), "{line}");
            assert!(
                by_name(&json, "certificates", "apiserver")["residualTime"]
                    .as_i64()
                    .unwrap()
                    < 0
            );
        }
    }
    // Flags override the config's thresholds.
    let tmp = node(now, 20, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
    let out = run(
        now,
        &[
            "check",
            "--warn-days",
            "10",
            "--critical-days",
            "5",
            "--kubernetes-dir",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_ca_bundle_is_searched_for_the_real_signer() {
    let now = now();
    let tmp = node(now, 100, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
    let spec = NodeSpec::new(now, 100);
    // A rotation in progress: a new CA with the same subject first, the old (real) one second.
    let other = nodegen::make_ca("kubernetes", &spec).unwrap();
    let ca = tmp.path().join("pki/ca.crt");
    let old = std::fs::read_to_string(&ca).unwrap();
    std::fs::write(&ca, format!("{}{}", other.cert_pem, old)).unwrap();
    let (code, json) = check_json(now, tmp.path());
    assert_eq!(code, 0);
    assert_eq!(
        by_name(&json, "certificates", "apiserver")["signedBy"],
        "ca"
    );
    assert_eq!(
        by_name(&json, "certificates", "admin.conf")["signedBy"],
        "ca"
    );
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        tmp.path().join("pki/apiserver.crt").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
}

#[test]
fn an_external_ca_is_reported_and_marks_its_leaves() {
    let now = now();
    let tmp = node(now, 100, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
    std::fs::remove_file(tmp.path().join("pki/front-proxy-ca.key")).unwrap();
    let (code, json) = check_json(now, tmp.path());
    assert_eq!(code, 0, "an external CA is not a failure");
    assert_eq!(
        by_name(&json, "certificateAuthorities", "front-proxy-ca")["externallyManaged"],
        true
    );
    assert_eq!(
        by_name(&json, "certificates", "front-proxy-client")["externallyManaged"],
        true
    );
    assert_eq!(
        by_name(&json, "certificateAuthorities", "ca")["externallyManaged"],
        false
    );
    assert_eq!(
        by_name(&json, "certificates", "apiserver")["externallyManaged"],
        false
    );
    let (_, text, _) = check_text(now, tmp.path());
    let line = text
        .lines()
        .find(|l| l.starts_with("front-proxy-client"))
        .unwrap();
    assert!(line.contains("yes"), "{line}");
}

#[test]
fn three_cas_with_the_same_subject_are_told_apart() {
    let now = now();
    let tmp = node(now, 100, |s| {
        s.key_algorithm = KeyAlgorithm::EcdsaP256;
        s.same_ca_subject = true;
    });
    let pki = tmp.path().join("pki");
    let (_, json) = check_json(now, tmp.path());
    for ca in json["certificateAuthorities"].as_array().unwrap() {
        assert_eq!(ca["subject"], "CN=kubernetes");
    }
    for leaf in json["certificates"].as_array().unwrap() {
        let ca = leaf["signedBy"].as_str().unwrap();
        let path = leaf["path"].as_str().unwrap();
        let cert = if path.ends_with(".conf") {
            let out = tmp.path().join("x.pem");
            extract_kubeconfig_cert(Path::new(path), &out);
            out
        } else {
            path.into()
        };
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            ca_file(&pki, ca).to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(ok, "{}: {text}", leaf["name"]);
    }
    assert_eq!(
        by_name(&json, "certificates", "etcd-server")["signedBy"],
        "etcd-ca"
    );
    assert_eq!(
        by_name(&json, "certificates", "front-proxy-client")["signedBy"],
        "front-proxy-ca"
    );
}

#[test]
fn broken_files_are_unreadable_rows_naming_the_file_and_change_nothing() {
    let now = now();
    let tmp = node(now, 100, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
    let dir = tmp.path();
    // A truncated PEM, a kubeconfig that is not YAML, a "file" that cannot be read.
    let apiserver = dir.join("pki/apiserver.crt");
    let pem = std::fs::read_to_string(&apiserver).unwrap();
    std::fs::write(&apiserver, &pem[..pem.len() / 2]).unwrap();
    std::fs::write(dir.join("scheduler.conf"), "{{{ this: is not [yaml").unwrap();
    std::fs::remove_file(dir.join("pki/etcd/server.crt")).unwrap();
    std::fs::create_dir(dir.join("pki/etcd/server.crt")).unwrap();
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = files_below(dir)
        .into_iter()
        .map(|f| {
            let d = std::fs::read(&f).unwrap();
            (f, d)
        })
        .collect();

    let (code, json) = check_json(now, dir);
    assert_eq!(code, 2);
    for name in ["apiserver", "scheduler.conf", "etcd-server"] {
        let e = by_name(&json, "certificates", name);
        assert_eq!(e["status"], "unreadable", "{name}");
        assert_eq!(e["missing"], true, "{name}");
    }
    let problems = json["problems"].as_array().unwrap();
    let find = |needle: &str| {
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains(needle))
    };
    assert!(
        find(&format!(
            "{}: PEM block CERTIFICATE opened at line 1 is truncated",
            apiserver.display()
        )),
        "{problems:?}"
    );
    assert!(
        find(&format!(
            "{}: not a valid kubeconfig",
            dir.join("scheduler.conf").display()
        )),
        "{problems:?}"
    );
    assert!(
        find(&format!(
            "{}: cannot read",
            dir.join("pki/etcd/server.crt").display()
        )),
        "{problems:?}"
    );
    assert_eq!(by_name(&json, "certificates", "admin.conf")["status"], "ok");

    let (_, text, _) = check_text(now, dir);
    assert!(text.contains("!UNREADABLE! apiserver"), "{text}");
    assert!(text.contains("Problems:"), "{text}");
    let after: Vec<(std::path::PathBuf, Vec<u8>)> = files_below(dir)
        .into_iter()
        .map(|f| {
            let d = std::fs::read(&f).unwrap();
            (f, d)
        })
        .collect();
    assert_eq!(before, after, "check must never write");
}

#[test]
fn a_leaf_from_an_unknown_ca_is_flagged() {
    let now = now();
    let tmp = node(now, 100, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
    let mut spec = NodeSpec::new(now, 100);
    spec.key_algorithm = KeyAlgorithm::EcdsaP256;
    let stranger = nodegen::make_ca("front-proxy-ca", &spec).unwrap();
    let template = LeafTemplate {
        cn: "front-proxy-client".into(),
        org: None,
        sans: vec![],
        server: false,
        client: true,
    };
    let (cert, key) = nodegen::make_leaf(&template, &stranger, &spec).unwrap();
    std::fs::write(tmp.path().join("pki/front-proxy-client.crt"), cert).unwrap();
    std::fs::write(tmp.path().join("pki/front-proxy-client.key"), key).unwrap();
    let (code, json) = check_json(now, tmp.path());
    assert_eq!(code, 1, "an unverifiable leaf needs attention");
    let e = by_name(&json, "certificates", "front-proxy-client");
    assert_eq!(e["signedBy"], serde_json::Value::Null);
    // no CA name is made up for it (kubeadm's omitempty caName), in JSON or in the table
    assert!(e.get("caName").is_none(), "{e}");
    let (_, text, _) = check_text(now, tmp.path());
    let row = text
        .lines()
        .find(|l| l.starts_with("front-proxy-client "))
        .unwrap();
    let columns: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(columns[3], "-", "{row}");
    assert!(
        json["problems"][0]
            .as_str()
            .unwrap()
            .contains("not signed by any known CA"),
        "{json}"
    );
}

#[test]
fn prometheus_output_matches_openssl() {
    let now = now();
    let tmp = node(now, 20, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
    let out = run(
        now,
        &[
            "check",
            "-o",
            "prometheus",
            "--kubernetes-dir",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let cert = tmp.path().join("pki/apiserver.crt");
    let line = text
        .lines()
        .find(|l| l.starts_with("x509_cert_not_after{name=\"apiserver\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!("filepath=\"{}\"", cert.display())),
        "{line}"
    );
    assert!(line.contains("filename=\"apiserver.crt\""), "{line}");
    assert!(line.contains("subject_CN=\"kube-apiserver\""), "{line}");
    let value: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let expected = time::OffsetDateTime::parse(
        &openssl_date(&cert, "-enddate"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(value, expected.unix_timestamp());
    assert!(
        text.contains("x509_cert_expired{name=\"admin.conf\""),
        "{text}"
    );
    assert!(
        text.contains("embedded_kind=\"user\",embedded_key=\"kubernetes-admin\""),
        "{text}"
    );
    assert!(text.contains("# TYPE x509_cert_not_before gauge"));
    assert!(text.lines().any(|l| l == "x509_read_errors 0"), "{text}");
    // 3 CAs + 11 leaves + kubelet.conf
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("x509_cert_not_after{"))
            .count(),
        15
    );
}

#[test]
fn extra_paths_are_watched_bundles_split_keys_skipped_garbage_reported() {
    let now = now();
    let tmp = node(now, 100, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
    let extra = tmp.path().join("extra");
    std::fs::create_dir(&extra).unwrap();
    let ca = std::fs::read_to_string(tmp.path().join("pki/ca.crt")).unwrap();
    let etcd = std::fs::read_to_string(tmp.path().join("pki/etcd/ca.crt")).unwrap();
    std::fs::write(extra.join("bundle.pem"), format!("{ca}{etcd}")).unwrap();
    std::fs::copy(
        tmp.path().join("pki/apiserver.key"),
        extra.join("node-key.pem"),
    )
    .unwrap();
    std::fs::write(extra.join("garbage.pem"), "hello").unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!("extra_paths = [\"{}/*.pem\"]\n", extra.display()),
    )
    .unwrap();
    let out = run_with_config(
        now,
        &config,
        &[
            "check",
            "-o",
            "json",
            "--kubernetes-dir",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "garbage is unreadable");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bundle = extra.join("bundle.pem").display().to_string();
    assert_eq!(
        by_name(&json, "otherCertificates", &bundle)["subject"],
        "CN=kubernetes"
    );
    assert_eq!(
        by_name(&json, "otherCertificates", &format!("{bundle}#2"))["subject"],
        "CN=etcd-ca"
    );
    let garbage = extra.join("garbage.pem").display().to_string();
    assert_eq!(
        by_name(&json, "otherCertificates", &garbage)["status"],
        "unreadable"
    );
    let others = json["otherCertificates"].as_array().unwrap();
    assert!(
        others
            .iter()
            .all(|e| !e["name"].as_str().unwrap().contains("node-key")),
        "key files are skipped"
    );
}

#[test]
fn a_bad_config_is_an_error_naming_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "warn_days = 30\ncritcal_days = 5\n").unwrap();
    let out = run_with_config(
        now(),
        &config,
        &["check", "--kubernetes-dir", tmp.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(config.to_str().unwrap()), "{err}");
    assert!(
        err.contains("critcal_days") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn a_bad_command_line_is_exit_code_3_not_checks_critical() {
    let now = now();
    let tmp = node(now, 100, |s| s.key_algorithm = KeyAlgorithm::EcdsaP256);
    let dir = tmp.path().to_str().unwrap();
    for args in [
        &["check", "-o", "yaml", "--kubernetes-dir", dir][..],
        &["no-such-command"],
        &["renew", "all", "--validity", "0", "--kubernetes-dir", dir],
    ] {
        let out = run(now, args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(run(now, &["--help"]).status.code(), Some(0));
}

/// Issue 18: the CA ends in 5 days and the leaves end with it (as a capped renewal leaves them;
/// openssl reads the same NotAfter). They are `capped` in the text table, the JSON (with the
/// CA that caps them) and the metrics; a leaf two minutes short of its CA's end is not (a
/// renewal would still extend it); the exit code stays 2 (the CAs are critical), and the
/// problems name the way out without a command that does not exist.
#[test]
fn leaves_at_their_cas_end_are_capped_in_every_format() {
    let now = now();
    let ca_end = now + time::Duration::days(5);
    let tmp = node(now, 5, |s| {
        s.key_algorithm = KeyAlgorithm::EcdsaP256;
        s.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        s.ca_not_after = ca_end;
        s.leaf_not_after = ca_end;
    });
    let pki = tmp.path().join("pki");
    assert_eq!(
        openssl_date(&pki.join("apiserver.crt"), "-enddate"),
        openssl_date(&pki.join("ca.crt"), "-enddate")
    );
    // front-proxy-client two minutes short of its CA's end
    let mut spec = NodeSpec::new(now, 5);
    spec.key_algorithm = KeyAlgorithm::EcdsaP256;
    spec.leaf_not_after = ca_end - time::Duration::minutes(2);
    let ca = nodegen::GeneratedCa::load(&pki, "front-proxy-ca").unwrap();
    let template = LeafTemplate {
        cn: "front-proxy-client".into(),
        org: None,
        sans: vec![],
        server: false,
        client: true,
    };
    let (cert, key) = nodegen::make_leaf(&template, &ca, &spec).unwrap();
    std::fs::write(pki.join("front-proxy-client.crt"), cert).unwrap();
    std::fs::write(pki.join("front-proxy-client.key"), key).unwrap();

    let (code, json) = check_json(now, tmp.path());
    assert_eq!(code, 2, "the CAs are critical: {json}");
    let api = by_name(&json, "certificates", "apiserver");
    assert_eq!(api["status"], "capped", "{api}");
    assert_eq!(api["cappedBy"], "ca");
    assert_eq!(
        api["cappedAt"],
        by_name(&json, "certificateAuthorities", "ca")["expirationDate"]
    );
    assert_eq!(
        by_name(&json, "certificates", "etcd-peer")["cappedBy"],
        "etcd-ca"
    );
    assert_eq!(
        by_name(&json, "otherCertificates", "kubelet.conf")["status"],
        "capped"
    );
    let fp = by_name(&json, "certificates", "front-proxy-client");
    assert_eq!(fp["status"], "critical", "{fp}");
    assert!(fp.get("cappedBy").is_none(), "{fp}");
    let ca_row = by_name(&json, "certificateAuthorities", "ca");
    assert_eq!(ca_row["status"], "critical");
    let caps: Vec<&str> = ca_row["caps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"apiserver")
            && caps.contains(&"admin.conf")
            && caps.contains(&"kubelet.conf"),
        "{caps:?}"
    );
    assert!(
        by_name(&json, "certificateAuthorities", "front-proxy-ca")["caps"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let problems: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let note = problems
        .iter()
        .find(|p| p.starts_with("ca: "))
        .unwrap_or_else(|| panic!("no note for ca: {problems:?}"));
    assert!(
        note.contains("caps 7 certificate(s)")
            && note.contains("Manually rotate CA certificates")
            && note.contains(
                "https://kubernetes.io/docs/tasks/tls/manual-rotation-of-ca-certificates/"
            )
            && note.contains("`kube-cert-renewer rotate-ca` is planned, not available yet"),
        "{note}"
    );
    assert!(
        !problems.iter().any(|p| p.starts_with("front-proxy-ca: ")),
        "{problems:?}"
    );

    let (code, text, _) = check_text(now, tmp.path());
    assert_eq!(code, 2);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
            .to_string()
    };
    assert!(row("apiserver").ends_with(" capped"), "{text}");
    assert!(row("etcd-server").ends_with(" capped"), "{text}");
    assert!(row("front-proxy-client").ends_with(" critical"), "{text}");
    assert!(row("kubelet.conf").contains(" capped "), "{text}");
    assert!(text.contains("\nProblems:\n  ca: "), "{text}");

    let out = run(
        now,
        &[
            "check",
            "-o",
            "prometheus",
            "--kubernetes-dir",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let prom = String::from_utf8_lossy(&out.stdout);
    let gauge = |name: &str| {
        prom.lines()
            .find(|l| {
                l.starts_with("kube_cert_renewer_cert_capped{")
                    && l.contains(&format!("name=\"{name}\""))
            })
            .unwrap_or_else(|| panic!("no capped gauge of {name}: {prom}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(gauge("apiserver"), "1");
    assert_eq!(gauge("kubelet.conf"), "1");
    assert_eq!(gauge("front-proxy-client"), "0");
    assert_eq!(gauge("ca"), "0");
    assert!(
        prom.contains("# TYPE kube_cert_renewer_cert_capped gauge"),
        "{prom}"
    );
}
