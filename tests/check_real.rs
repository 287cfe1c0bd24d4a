//! `check` over the real kubeadm trees in ../shared/fixtures, with openssl as the oracle.

mod common;

use common::*;

#[test]
fn every_certificate_is_found_with_the_ca_openssl_confirms_and_the_dates_openssl_reads() {
    let trees = fixtures();
    let now = now();
    for tree in trees {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("k");
        copy_tree(&tree, &dir);
        let pki = dir.join("pki");
        let (code, json) = check_json(now, &dir);
        let label = tree.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(code, 2, "{label}: expired leaves must give exit code 2");
        assert_eq!(json["kind"], "CertificateExpirationInfo");
        assert_eq!(json["apiVersion"], "output.kubeadm.k8s.io/v1alpha3");

        let all: Vec<&serde_json::Value> = [
            "certificates",
            "certificateAuthorities",
            "otherCertificates",
        ]
        .iter()
        .flat_map(|k| json[*k].as_array().unwrap())
        .collect();
        // Every certificate file in the tree appears, with openssl's dates to the second.
        for file in files_below(&dir) {
            let is_cert = file.extension().is_some_and(|e| e == "crt");
            let is_conf = file.extension().is_some_and(|e| e == "conf")
                && std::fs::read_to_string(&file)
                    .unwrap()
                    .contains("client-certificate-data:");
            if !is_cert && !is_conf {
                continue;
            }
            let entry = all
                .iter()
                .find(|e| e["path"] == file.to_str().unwrap())
                .unwrap_or_else(|| panic!("{label}: {} not reported", file.display()));
            assert_eq!(entry["missing"], false, "{label}: {}", file.display());
            let pem = if is_conf {
                let out = tmp.path().join("extracted.pem");
                extract_kubeconfig_cert(&file, &out);
                out
            } else {
                file.clone()
            };
            assert_eq!(
                entry["expirationDate"],
                openssl_date(&pem, "-enddate"),
                "{label}: {}",
                file.display()
            );
            assert_eq!(
                entry["notBefore"],
                openssl_date(&pem, "-startdate"),
                "{label}: {}",
                file.display()
            );
            let expires = time::OffsetDateTime::parse(
                entry["expirationDate"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert_eq!(entry["residualTime"], (expires - now).whole_seconds());
            if let Some(ca) = entry["caName"].as_str() {
                if ca_file(&pki, ca).exists() {
                    assert_signed_only_by(&pki, &pem, ca, &format!("{label}: {}", file.display()));
                    assert_eq!(entry["signedBy"], ca, "{label}: {}", file.display());
                } else {
                    // Nothing to verify against (kubeconfigs-only tree): never claimed verified.
                    assert_eq!(
                        entry["signedBy"],
                        serde_json::Value::Null,
                        "{label}: {}",
                        file.display()
                    );
                }
            }
        }
        // Leaves that are absent are reported as such, never silently dropped.
        assert_eq!(
            json["certificates"].as_array().unwrap().len(),
            11,
            "{label}"
        );
        assert_eq!(
            json["certificateAuthorities"].as_array().unwrap().len(),
            3,
            "{label}"
        );
    }
}

#[test]
fn kubeconfigs_only_tree_is_reported_without_crashing() {
    let trees = fixtures();
    let tree = trees
        .iter()
        .find(|t| t.ends_with("v1.29-kubeconfigs-only"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(tree, tmp.path());
    let (code, json) = check_json(now(), tmp.path());
    assert_eq!(code, 2);
    for name in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        let e = by_name(&json, "certificates", name);
        assert_eq!(e["missing"], false, "{name}");
        assert_eq!(e["status"], "expired", "{name}");
    }
    for name in [
        "apiserver",
        "apiserver-kubelet-client",
        "front-proxy-client",
    ] {
        let e = by_name(&json, "certificates", name);
        assert_eq!(e["missing"], true, "{name}");
        assert_eq!(e["expirationDate"], serde_json::Value::Null);
        assert_eq!(e["status"], "missing");
    }
    assert_eq!(
        by_name(&json, "certificateAuthorities", "ca")["status"],
        "missing"
    );
    let (_, text, _) = check_text(now(), tmp.path());
    assert!(text.contains("!MISSING! apiserver"), "{text}");
}

#[test]
fn kubelet_conf_file_reference_is_shown_as_such() {
    let trees = fixtures();
    let tree = trees
        .iter()
        .find(|t| t.ends_with("v1.18-stacked-etcd"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(tree, tmp.path());
    let (_, json) = check_json(now(), tmp.path());
    let kubelet = by_name(&json, "otherCertificates", "kubelet.conf");
    assert_eq!(
        kubelet["path"],
        "/var/lib/kubelet/pki/kubelet-client-current.pem"
    );
    assert_eq!(
        kubelet["kubeconfig"],
        tmp.path().join("kubelet.conf").to_str().unwrap()
    );
    let (_, text, _) = check_text(now(), tmp.path());
    let line = text
        .lines()
        .find(|l| l.starts_with("kubelet.conf"))
        .unwrap();
    assert!(
        line.contains("/var/lib/kubelet/pki/kubelet-client-current.pem (referenced by"),
        "{line}"
    );
    // kubeadm's own table does not list kubelet.conf.
    assert!(
        json["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "kubelet.conf")
    );
}

#[test]
fn same_subject_cas_of_v1_11_are_told_apart_by_signature() {
    let trees = fixtures();
    let tree = trees
        .iter()
        .find(|t| t.ends_with("v1.11-stacked-etcd"))
        .unwrap();
    let (_, json) = check_json(now(), tree);
    for ca in json["certificateAuthorities"].as_array().unwrap() {
        assert_eq!(ca["subject"], "CN=kubernetes");
    }
    assert_eq!(
        by_name(&json, "certificates", "apiserver-etcd-client")["caName"],
        "etcd-ca"
    );
    assert_eq!(
        by_name(&json, "certificates", "front-proxy-client")["caName"],
        "front-proxy-ca"
    );
    assert_eq!(by_name(&json, "certificates", "apiserver")["caName"], "ca");
}

#[test]
fn the_fixtures_are_the_published_trees_unchanged() {
    // every file of every tree, as it was copied in (tests/fixtures/SHA256SUMS), and no other
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let out = std::process::Command::new("sha256sum")
        .args(["--check", "--strict", "--quiet", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .count();
    let present = fixtures()
        .iter()
        .map(|t| files_below(t).len())
        .sum::<usize>();
    assert_eq!(
        listed, present,
        "a file was added to or removed from the fixtures"
    );
}
