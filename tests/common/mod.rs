//! Shared helpers of the integration tests: the real fixtures, the binary, and openssl as an
//! independent oracle.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The real kubeadm trees beside the project, or `None` (said loudly) when they are absent.
pub fn fixtures() -> Option<Vec<PathBuf>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/kubeadm-real");
    if !root.is_dir() {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! {} is missing: tests against REAL kubeadm trees are SKIPPED\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
            root.display()
        );
        return None;
    }
    let mut trees: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    trees.sort();
    assert!(
        trees.len() >= 6,
        "expected the six real trees in {}",
        root.display()
    );
    Some(trees)
}

/// Copies a directory tree (files keep their modes).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Every regular file below `dir`, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_below(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Now, to the second (what `--now` is given).
pub fn now() -> OffsetDateTime {
    let n = OffsetDateTime::now_utc();
    n.replace_nanosecond(0).unwrap()
}

/// Runs the binary with a nonexistent config (defaults) and `--now`.
pub fn run(now: OffsetDateTime, args: &[&str]) -> Output {
    run_with_config(now, Path::new("/nonexistent/kube-cert-renewer.toml"), args)
}

/// Runs the binary with a given config file.
pub fn run_with_config(now: OffsetDateTime, config: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"))
        .arg("--config")
        .arg(config)
        .arg("--now")
        .arg(now.format(&Rfc3339).unwrap())
        .args(args)
        .output()
        .expect("run kube-cert-renewer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked: {stderr}"
    );
    out
}

/// `check -o json` on a kubernetes dir: (exit code, JSON).
pub fn check_json(now: OffsetDateTime, dir: &Path) -> (i32, serde_json::Value) {
    let out = run(
        now,
        &[
            "check",
            "-o",
            "json",
            "--kubernetes-dir",
            dir.to_str().unwrap(),
        ],
    );
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check -o json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), json)
}

/// `check` text output: (exit code, stdout, stderr).
pub fn check_text(now: OffsetDateTime, dir: &Path) -> (i32, String, String) {
    let out = run(now, &["check", "--kubernetes-dir", dir.to_str().unwrap()]);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs openssl; returns (success, stdout+stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// NotAfter (or NotBefore) of a PEM file as openssl reads it, in RFC 3339.
pub fn openssl_date(cert: &Path, which: &str) -> String {
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-dateopt",
        "iso_8601",
        which,
    ]);
    assert!(ok, "openssl x509 failed on {}: {text}", cert.display());
    // e.g. "notAfter=2019-09-06 10:41:55Z"
    let value = text.trim().split_once('=').unwrap().1.trim();
    value.replacen(' ', "T", 1)
}

/// Writes the certificate embedded in a kubeconfig (first client-certificate-data) to a file.
/// Independent of the product's YAML code on purpose: a line scan, as a shell script would do.
pub fn extract_kubeconfig_cert(kubeconfig: &Path, out: &Path) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("client-certificate-data:"))
        .unwrap_or_else(|| panic!("no client-certificate-data in {}", kubeconfig.display()));
    let b64 = line.split_once(':').unwrap().1.trim();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    std::fs::write(out, pem).unwrap();
}

/// The CA file of a kubeadm CA name.
pub fn ca_file(pki: &Path, ca: &str) -> PathBuf {
    match ca {
        "ca" => pki.join("ca.crt"),
        "etcd-ca" => pki.join("etcd/ca.crt"),
        "front-proxy-ca" => pki.join("front-proxy-ca.crt"),
        other => panic!("unknown CA {other}"),
    }
}

/// Finds an element by name in a JSON array field.
pub fn by_name<'a>(json: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    json[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {json}"))
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}: {json}"))
}

/// Every file below `dir` with its bytes.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|f| {
            let d = std::fs::read(&f).unwrap();
            (f, d)
        })
        .collect()
}

/// Runs `renew` on a kubernetes dir with a state dir: (exit code, stdout, stderr).
pub fn renew(
    now: OffsetDateTime,
    dir: &Path,
    state: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut all = vec![
        "--kubernetes-dir",
        dir.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "renew",
        // the certificate part only; the restart tests run on containerd (tests/restart.rs)
        "--no-restart",
    ];
    all.extend_from_slice(args);
    let out = run(now, &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// openssl's text dump of a certificate without what a renewal must change (serial, validity,
/// public key, signature value, key identifiers): what must stay equal.
pub fn identity_text(cert: &Path) -> String {
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-text",
        "-certopt",
        "no_serial,no_validity,no_pubkey,no_sigdump",
    ]);
    assert!(ok, "{text}");
    let mut out = Vec::new();
    let mut skip_next = false;
    for line in text.lines() {
        if skip_next {
            skip_next = false;
            continue;
        }
        if line.contains("Subject Key Identifier") || line.contains("Authority Key Identifier") {
            skip_next = true;
            continue;
        }
        out.push(line.to_string());
    }
    out.join("\n")
}

/// "Private-Key: (2048 bit, 2 primes)" and the curve, as openssl describes a key.
pub fn key_kind(key_pem: &Path) -> String {
    let (ok, text) = openssl(&["pkey", "-in", key_pem.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "{text}");
    text.lines()
        .filter(|l| {
            l.starts_with("Private-Key") || l.contains("ASN1 OID") || l.contains("NIST CURVE")
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// Writes the key embedded in a kubeconfig (client-key-data) to a file.
pub fn extract_kubeconfig_key(kubeconfig: &Path, out: &Path) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("client-key-data:"))
        .unwrap();
    let b64 = line.split_once(':').unwrap().1.trim();
    std::fs::write(
        out,
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
}

/// Verifies `cert` against exactly one of the node's CA files: the one `check` named.
pub fn assert_signed_only_by(pki: &Path, cert: &Path, ca_name: &str, context: &str) {
    let expected = ca_file(pki, ca_name);
    let (ok, text) = openssl(&[
        "verify",
        "-no_check_time",
        "-CAfile",
        expected.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(
        ok,
        "{context}: openssl does not confirm {ca_name} signed it: {text}"
    );
    for other in ["ca", "etcd-ca", "front-proxy-ca"] {
        let file = ca_file(pki, other);
        if other == ca_name || !file.exists() {
            continue;
        }
        let (ok, _) = openssl(&[
            "verify",
            "-no_check_time",
            "-CAfile",
            file.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(
            !ok,
            "{context}: {other} also verifies it; the CA choice is ambiguous"
        );
    }
}
