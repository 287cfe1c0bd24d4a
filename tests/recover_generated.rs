//! `recover` without any snapshot, on generated kubeadm-shaped nodes: a node stripped down to
//! its CAs, `sa.key`/`sa.pub` and its manifests gets every leaf and kubeconfig back, re-issued
//! from kubeadm's profiles with the facts the manifests give — and the result is checked by
//! independent oracles, not by the product's own code: openssl (fields, signatures, TLS with
//! hostname and IP checks, client-certificate authentication) and a real etcd started from the
//! node's own `etcd.yaml`, reached by etcdctl. A CA or `sa.key` gone everywhere stops the run
//! (exit 4, procedure printed, nothing written) until `--new-ca` is given; a kubeadm config adds
//! its certSANs and controlPlaneEndpoint.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kube_cert_renewer::demo::nodegen::{self, NodeSpec};
use kube_cert_renewer::pki::keys::KeyAlgorithm;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The node's name (etcd `--name`, first DNS SAN, kubelet identity).
const NODE: &str = "cp-1";
/// The advertise address: a loopback alias other than 127.0.0.1, so that "the advertise
/// address is in the certificate" is a different check from "127.0.0.1 is".
const ADVERTISE: &str = "127.0.0.31";
/// What the tests that need them call the tools in a failure message.
const TESTS: &str = "recover-generated";

/// Every certificate/key pair kubeadm writes on a stacked-etcd control-plane node:
/// (kubeadm's name, path below the kubernetes dir without `.crt`/`.key`, the CA that signs it).
const PAIRS: [(&str, &str, &str); 7] = [
    ("apiserver", "pki/apiserver", "ca"),
    (
        "apiserver-kubelet-client",
        "pki/apiserver-kubelet-client",
        "ca",
    ),
    (
        "front-proxy-client",
        "pki/front-proxy-client",
        "front-proxy-ca",
    ),
    ("etcd-server", "pki/etcd/server", "etcd-ca"),
    ("etcd-peer", "pki/etcd/peer", "etcd-ca"),
    (
        "etcd-healthcheck-client",
        "pki/etcd/healthcheck-client",
        "etcd-ca",
    ),
    (
        "apiserver-etcd-client",
        "pki/apiserver-etcd-client",
        "etcd-ca",
    ),
];

/// The kubeconfigs every control-plane node has (all signed by `ca`).
const KUBECONFIGS: [&str; 4] = [
    "admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
    "kubelet.conf",
];

/// Written by `kubeadm init` only: never on a joined node, so never invented by a recovery.
const SUPER_ADMIN: &str = "super-admin.conf";

/// The CA pairs and `sa`: what survives in the main scenario.
const KEPT: [&str; 8] = [
    "pki/ca.crt",
    "pki/ca.key",
    "pki/front-proxy-ca.crt",
    "pki/front-proxy-ca.key",
    "pki/etcd/ca.crt",
    "pki/etcd/ca.key",
    "pki/sa.key",
    "pki/sa.pub",
];

/// Fails the test (or, with `KCR_QUICK`, skips it loudly) unless every tool is installed.
fn tools(names: &[&str]) -> bool {
    names.iter().all(|t| have(t, TESTS))
}

/// A generated node in its own temporary directory: `k` (the kubernetes dir), `state`,
/// `originals` (copies of what the test deleted).
struct Node {
    tmp: tempfile::TempDir,
    now: OffsetDateTime,
    api_port: u16,
}

impl Node {
    fn new(algorithm: KeyAlgorithm) -> Node {
        Node::advertising(algorithm, ADVERTISE)
    }

    fn advertising(algorithm: KeyAlgorithm, advertise: &str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let now = now();
        let api_port = free_port();
        let spec = NodeSpec {
            node_name: NODE.into(),
            advertise_address: advertise.parse().unwrap(),
            key_algorithm: algorithm,
            ca_key_algorithm: algorithm,
            apiserver_port: api_port,
            etcd_client_port: free_port(),
            etcd_peer_port: free_port(),
            ..NodeSpec::new(now, 200)
        };
        nodegen::generate(&tmp.path().join("k"), &spec).unwrap();
        Node { tmp, now, api_port }
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
    fn file(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }
    fn original(&self, rel: &str) -> PathBuf {
        self.tmp.path().join("originals").join(rel)
    }
    fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `recover` with this node's dirs: (exit code, stdout, stderr).
    fn recover(&self, args: &[&str]) -> (i32, String, String) {
        let (dir, state) = (self.dir(), self.state());
        let mut all = vec![
            "--kubernetes-dir",
            dir.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "recover",
        ];
        all.extend_from_slice(args);
        let out = run(self.now, &all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Moves `rel` into `originals/` (same relative path): deleted from the node, kept for
    /// comparison.
    fn take(&self, rel: &str) {
        let (from, to) = (self.file(rel), self.original(rel));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        std::fs::remove_file(&from).unwrap();
    }

    /// Deletes every leaf pair and every kubeconfig (super-admin.conf too): what is left is the
    /// CAs, `sa.key`/`sa.pub` and the manifests.
    fn strip_to_cas(&self) {
        for (_, base, _) in PAIRS {
            self.take(&format!("{base}.crt"));
            self.take(&format!("{base}.key"));
        }
        for conf in KUBECONFIGS.iter().chain([&SUPER_ADMIN]) {
            self.take(conf);
        }
        let mut left: Vec<String> = files_below(&self.pki())
            .iter()
            .map(|p| {
                p.strip_prefix(self.dir())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        left.sort();
        let mut kept: Vec<String> = KEPT.iter().map(|s| s.to_string()).collect();
        kept.sort();
        assert_eq!(
            left, kept,
            "the stripped pki dir must hold only the CAs and sa"
        );
        for conf in KUBECONFIGS.iter().chain([&SUPER_ADMIN]) {
            assert!(!self.file(conf).exists());
        }
        for m in [
            "etcd.yaml",
            "kube-apiserver.yaml",
            "kube-controller-manager.yaml",
            "kube-scheduler.yaml",
        ] {
            assert!(self.file(&format!("manifests/{m}")).exists(), "{m}");
        }
    }

    /// A node generated, stripped to its CAs, and recovered (`recover --no-restart`, exit 0).
    fn recovered(algorithm: KeyAlgorithm, extra: &[&str]) -> (Node, String) {
        let node = Node::new(algorithm);
        node.strip_to_cas();
        let mut args = vec!["--no-restart"];
        args.extend_from_slice(extra);
        let (code, out, err) = node.recover(&args);
        assert_eq!(code, 0, "recover must bring everything back:\n{out}\n{err}");
        (node, out)
    }

    /// The client certificate and key of a kubeconfig, written to `<name>.crt`/`.key` in the
    /// scratch dir (by a line scan independent of the product's YAML code).
    fn kubeconfig_credentials(&self, conf: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.scratch(&format!("{conf}.crt")),
            self.scratch(&format!("{conf}.key")),
        );
        extract_kubeconfig_cert(&self.file(conf), &cert);
        extract_kubeconfig_key(&self.file(conf), &key);
        (cert, key)
    }
}

/// What must stay equal between a certificate kubeadm wrote and its re-issue, as openssl reads
/// it: subject, issuer, and keyUsage, extendedKeyUsage, basicConstraints, subjectAltName with
/// their criticality (by name: the order of extensions is not part of the comparison).
fn fields(cert: &Path) -> BTreeMap<String, String> {
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-subject",
        "-issuer",
        "-nameopt",
        "RFC2253",
        "-ext",
        "keyUsage,extendedKeyUsage,basicConstraints,subjectAltName",
    ]);
    assert!(ok, "{}: {text}", cert.display());
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("subject=") {
            out.insert("subject".to_string(), v.to_string());
        } else if let Some(v) = line.strip_prefix("issuer=") {
            out.insert("issuer".to_string(), v.to_string());
        } else if line.starts_with("X509v3 ") {
            let (name, rest) = line.split_once(':').unwrap();
            let critical = if rest.contains("critical") {
                "critical"
            } else {
                "not critical"
            };
            out.insert(name.to_string(), format!("{critical}:"));
            current = Some(name.to_string());
        } else if let Some(name) = &current {
            out.get_mut(name).unwrap().push_str(line.trim());
        }
    }
    for required in ["subject", "issuer"] {
        assert!(out.contains_key(required), "{}: {text}", cert.display());
    }
    out
}

/// The SAN list as openssl prints it (`DNS:a, IP Address:1.2.3.4`), split.
fn sans(cert: &Path) -> Vec<String> {
    fields(cert)
        .get("X509v3 Subject Alternative Name")
        .map(|v| {
            v.trim_start_matches("not critical:")
                .split(", ")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `openssl verify` of `cert` against exactly `ca_file`: (ok, output).
fn verify(ca_file: &Path, cert: &Path) -> (bool, String) {
    openssl(&[
        "verify",
        "-CAfile",
        ca_file.to_str().unwrap(),
        cert.to_str().unwrap(),
    ])
}

/// The public key of a certificate and of a private key, as openssl derives them: equal when
/// the key is the certificate's.
fn assert_key_is_certs(cert: &Path, key: &Path, context: &str) {
    let (ok1, from_cert) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    let (ok2, from_key) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert!(ok1 && ok2, "{context}: {from_cert}{from_key}");
    assert_eq!(
        from_cert, from_key,
        "{context}: the key is not the certificate's"
    );
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A kubeconfig's text with its client credentials (which a re-issue must change) masked.
fn kubeconfig_shape(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| match l.split_once(':') {
            Some((k, _))
                if k.trim() == "client-certificate-data" || k.trim() == "client-key-data" =>
            {
                format!("{k}: <masked>")
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `server:` of a kubeconfig, by a line scan.
fn kubeconfig_server(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("server:")
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no server in {}", path.display()))
}

/// The `certificate-authority-data` of a kubeconfig, decoded.
fn kubeconfig_ca(path: &Path) -> Vec<u8> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).unwrap();
    let b64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("certificate-authority-data:")
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no certificate-authority-data in {}", path.display()));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn not_after(cert: &Path) -> OffsetDateTime {
    OffsetDateTime::parse(&openssl_date(cert, "-enddate"), &Rfc3339).unwrap()
}

/// Runs `openssl s_client` against 127.0.0.1:`port` with `args`; sends `request` (then waits
/// for the server to close) or nothing (handshake, then EOF). Killed after 20 s.
/// Returns (exit status success, stdout+stderr).
fn s_client(tmp: &Path, port: u16, args: &[&str], request: Option<&str>) -> (bool, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let out_file = tmp.join(format!("s_client.{n}.out"));
    let mut all = vec![
        "s_client".to_string(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    if request.is_some() {
        // read until the server closes, not until our stdin ends
        all.push("-ign_eof".into());
    }
    let out = std::fs::File::create(&out_file).unwrap();
    let mut child = Command::new("openssl")
        .args(&all)
        .stdin(Stdio::piped())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("openssl s_client");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(r) = request {
            let _ = stdin.write_all(r.as_bytes());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "openssl {} hung: {}",
                all.join(" "),
                std::fs::read_to_string(&out_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.success(),
        std::fs::read_to_string(&out_file).unwrap_or_default(),
    )
}

/// `etcdctl` (API v3) against `endpoint` with a client pair, then `args`.
fn etcdctl(
    endpoint: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    args: &[&str],
) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--cacert",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--dial-timeout",
            "3s",
        ])
        .args(args)
        .output()
        .expect("run etcdctl")
}

/// `etcdctl endpoint health` against `endpoint` with a client pair: Ok when healthy.
fn etcdctl_health(endpoint: &str, ca: &Path, cert: &Path, key: &Path) -> Result<String, String> {
    let out = etcdctl(
        endpoint,
        ca,
        cert,
        key,
        &["--command-timeout", "5s", "endpoint", "health"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains("is healthy") {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `etcdctl put` then `get` of one key with a client pair: the value read back.
fn etcdctl_put_get(endpoint: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    let base = |args: &[&str]| {
        let out = etcdctl(endpoint, ca, cert, key, args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    base(&["put", "/registry/kcr-test", "recovered"]);
    base(&["get", "--print-value-only", "/registry/kcr-test"])
}

/// Nothing a writing run leaves in the state dir: no backup, journal, snapshot, restart record.
fn assert_no_run_traces(state: &Path, context: &str) {
    let listing: Vec<PathBuf> = files_below(state);
    let nonempty = |d: &str| {
        std::fs::read_dir(state.join(d))
            .map(|rd| rd.count() > 0)
            .unwrap_or(false)
    };
    assert!(
        !nonempty("backups")
            && !nonempty("snapshots")
            && !state.join("journal.json").exists()
            && !state.join("restart-pending.json").exists(),
        "{context}: a run that wrote nothing left traces in the state dir: {listing:?}"
    );
}

// ---------------------------------------------------------------------------------------------

/// Requirement 1: every leaf and kubeconfig comes back, as kubeadm issued it.
#[test]
fn a_node_stripped_to_its_cas_gets_every_leaf_back_as_kubeadm_issued_it() {
    if !tools(&["openssl"]) {
        return;
    }
    let node = Node::new(KeyAlgorithm::Rsa(2048));
    node.strip_to_cas();

    let kept: Vec<Vec<u8>> = KEPT
        .iter()
        .map(|rel| std::fs::read(node.file(rel)).unwrap())
        .collect();
    // a dry run first: the plan, nothing written
    let before = snapshot(&node.dir());
    let (code, out, err) = node.recover(&["--dry-run", "--no-restart"]);
    assert_eq!(code, 0, "dry run:\n{out}\n{err}");
    let planned = |name: &str| {
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    };
    for name in PAIRS.iter().map(|p| p.0).chain(KUBECONFIGS) {
        assert!(planned(name), "the dry run must plan {name}:\n{out}");
    }
    assert!(
        !planned(SUPER_ADMIN),
        "super-admin.conf must not be planned:\n{out}"
    );
    assert_eq!(before, snapshot(&node.dir()), "a dry run writes nothing");
    assert_no_run_traces(&node.state(), "dry run");

    let (code, out, err) = node.recover(&["--no-restart"]);
    assert_eq!(code, 0, "recover must bring everything back:\n{out}\n{err}");

    // check agrees: every leaf present and ok
    let (code, json) = check_json(node.now, &node.dir());
    assert_eq!(code, 0, "check after the recovery: {json:#}");
    for (name, _, ca) in PAIRS {
        let entry = by_name(&json, "certificates", name);
        assert_eq!(entry["status"], "ok", "{name}: {entry}");
        assert_eq!(entry["signedBy"], ca, "{name}: {entry}");
    }
    for conf in ["admin.conf", "controller-manager.conf", "scheduler.conf"] {
        let entry = by_name(&json, "certificates", conf);
        assert_eq!(entry["status"], "ok", "{conf}: {entry}");
    }
    assert_eq!(
        by_name(&json, "otherCertificates", "kubelet.conf")["status"],
        "ok"
    );

    let earliest = node.now + time::Duration::days(364);
    for (name, base, ca) in PAIRS {
        let (crt, key) = (
            node.file(&format!("{base}.crt")),
            node.file(&format!("{base}.key")),
        );
        let (old_crt, old_key) = (
            node.original(&format!("{base}.crt")),
            node.original(&format!("{base}.key")),
        );
        assert_eq!(
            fields(&old_crt),
            fields(&crt),
            "{name}: subject, issuer, SANs or usages differ from what kubeadm wrote"
        );
        assert_signed_only_by(&node.pki(), &crt, ca, name);
        assert_key_is_certs(&crt, &key, name);
        assert_eq!(key_kind(&old_key), key_kind(&key), "{name}: key kind");
        assert_eq!(pem_label(&old_key), pem_label(&key), "{name}: key encoding");
        assert_eq!(mode(&crt), 0o644, "{name}.crt mode");
        assert_eq!(mode(&key), 0o600, "{name}.key mode");
        assert!(not_after(&crt) >= earliest, "{name}: valid for a year");
        assert_ne!(
            std::fs::read(&old_key).unwrap(),
            std::fs::read(&key).unwrap(),
            "{name}: a new key, not the deleted one"
        );
    }
    for conf in KUBECONFIGS {
        let path = node.file(conf);
        assert!(path.exists(), "{conf} was not recovered");
        assert_eq!(
            kubeconfig_shape(&node.original(conf)),
            kubeconfig_shape(&path),
            "{conf}: laid out differently from what kubeadm wrote"
        );
        assert_eq!(mode(&path), 0o600, "{conf} mode");
        let (crt, key) = node.kubeconfig_credentials(conf);
        let old = node.scratch(&format!("{conf}.old.crt"));
        extract_kubeconfig_cert(&node.original(conf), &old);
        assert_eq!(fields(&old), fields(&crt), "{conf}: certificate differs");
        assert_signed_only_by(&node.pki(), &crt, "ca", conf);
        assert_key_is_certs(&crt, &key, conf);
        assert!(not_after(&crt) >= earliest, "{conf}: valid for a year");
    }
    // super-admin.conf exists only where `kubeadm init` ran: with no copy anywhere it is not
    // invented (check reports it absent, which is no error: exit 0 above)
    assert!(
        !node.file(SUPER_ADMIN).exists(),
        "super-admin.conf must not be invented"
    );
    // the survivors are untouched
    for (rel, data) in KEPT.iter().zip(&kept) {
        assert_eq!(&std::fs::read(node.file(rel)).unwrap(), data, "{rel}");
    }
}

/// Requirement 2: the recovered API server certificate serves TLS for its IP and names.
#[test]
fn the_recovered_apiserver_certificate_serves_tls_for_its_names() {
    if !tools(&["openssl"]) {
        return;
    }
    let (node, _) = Node::recovered(KeyAlgorithm::Rsa(2048), &[]);
    let pki = node.pki();
    let ca = pki.join("ca.crt");
    let (_server, port) = s_server(&pki, "apiserver", &[]);
    let ca = ca.to_str().unwrap();
    let client = |extra: &[&str]| {
        let mut args = vec!["-CAfile", ca, "-verify_return_error"];
        args.extend_from_slice(extra);
        s_client(node.tmp.path(), port, &args, None)
    };
    let (ok, text) = client(&["-verify_ip", ADVERTISE]);
    assert!(
        ok && text.contains("Verify return code: 0 (ok)"),
        "advertise IP: {text}"
    );
    let (ok, text) = client(&["-verify_ip", "10.96.0.1"]);
    assert!(
        ok && text.contains("Verify return code: 0 (ok)"),
        "service IP: {text}"
    );
    for name in ["kubernetes.default.svc", "kubernetes", NODE] {
        let (ok, text) = client(&["-servername", name, "-verify_hostname", name]);
        assert!(
            ok && text.contains("Verify return code: 0 (ok)"),
            "{name}: {text}"
        );
    }
    // negative controls: a name and an IP the certificate does not carry
    let (ok, text) = client(&[
        "-servername",
        "not-a-san.example",
        "-verify_hostname",
        "not-a-san.example",
    ]);
    assert!(
        !ok && !text.contains("Verify return code: 0 (ok)"),
        "a name not in the certificate must fail: {text}"
    );
    let (ok, text) = client(&["-verify_ip", "127.0.0.99"]);
    assert!(
        !ok && !text.contains("Verify return code: 0 (ok)"),
        "an IP not in the certificate must fail: {text}"
    );
}

/// Requirement 3: a real etcd runs on the recovered certificates, and its clients get in.
#[test]
fn a_real_etcd_runs_on_the_recovered_certificates() {
    if !tools(&["openssl", "etcd", "etcdctl"]) {
        return;
    }
    let (node, _) = Node::recovered(KeyAlgorithm::Rsa(2048), &[]);
    let pki = node.pki();
    let (_etcd, addresses) = spawn_etcd_of_manifest(&node.dir());
    assert!(
        addresses
            .iter()
            .any(|a| a.ip() == ADVERTISE.parse::<IpAddr>().unwrap()),
        "etcd must listen on the advertise address too: {addresses:?}"
    );
    let ca = pki.join("etcd/ca.crt");
    let healthcheck = (
        pki.join("etcd/healthcheck-client.crt"),
        pki.join("etcd/healthcheck-client.key"),
    );
    let apiserver_client = (
        pki.join("apiserver-etcd-client.crt"),
        pki.join("apiserver-etcd-client.key"),
    );
    for address in &addresses {
        // etcdctl checks the server certificate's IP SAN against the address dialled
        let endpoint = format!("https://{address}");
        wait_etcd_healthy(&node.dir(), || {
            etcdctl_health(&endpoint, &ca, &healthcheck.0, &healthcheck.1)
        });
        etcdctl_health(&endpoint, &ca, &apiserver_client.0, &apiserver_client.1)
            .unwrap_or_else(|e| panic!("apiserver-etcd-client at {endpoint}: {e}"));
    }
    let endpoint = format!("https://{}", addresses[0]);
    assert_eq!(
        etcdctl_put_get(&endpoint, &ca, &apiserver_client.0, &apiserver_client.1).trim(),
        "recovered",
        "the API server's etcd client must read and write"
    );
    // negative control: etcd requires a client certificate of its own CA
    let foreign = (
        pki.join("front-proxy-client.crt"),
        pki.join("front-proxy-client.key"),
    );
    assert!(
        etcdctl_health(&endpoint, &ca, &foreign.0, &foreign.1).is_err(),
        "a client certificate of another CA must be refused"
    );
    // the peer listener serves the recovered peer certificate for the advertise address, and
    // accepts it as a client (how the members of a cluster reach each other)
    let peer_port = std::fs::read_to_string(node.file("manifests/etcd.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("- --listen-peer-urls=")
                .map(str::to_string)
        })
        .and_then(|u| u.rsplit(':').next().map(str::to_string))
        .expect("--listen-peer-urls in etcd.yaml");
    let (ok, text) = {
        let mut args = vec![
            "s_client".to_string(),
            "-connect".into(),
            format!("{ADVERTISE}:{peer_port}"),
        ];
        for a in [
            "-CAfile",
            ca.to_str().unwrap(),
            "-cert",
            pki.join("etcd/peer.crt").to_str().unwrap(),
            "-key",
            pki.join("etcd/peer.key").to_str().unwrap(),
            "-verify_return_error",
            "-verify_ip",
            ADVERTISE,
        ] {
            args.push(a.to_string());
        }
        let out = Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    assert!(
        ok && text.contains("Verify return code: 0 (ok)"),
        "etcd's peer listener: {text}"
    );
}

/// Requirement 4: the kubeconfigs point where kubeadm points them, and their credentials are
/// accepted by a server that requires client certificates from ca.crt.
#[test]
fn the_recovered_kubeconfigs_point_at_the_api_server_and_authenticate() {
    if !tools(&["openssl"]) {
        return;
    }
    let (node, _) = Node::recovered(KeyAlgorithm::Rsa(2048), &[]);
    let pki = node.pki();
    let local = format!("https://{ADVERTISE}:{}", node.api_port);
    for conf in KUBECONFIGS {
        // no controlPlaneEndpoint anywhere: every kubeconfig gets the local endpoint
        assert_eq!(kubeconfig_server(&node.file(conf)), local, "{conf}");
        assert_eq!(
            kubeconfig_ca(&node.file(conf)),
            std::fs::read(pki.join("ca.crt")).unwrap(),
            "{conf}: certificate-authority-data must be ca.crt"
        );
        let (crt, _) = node.kubeconfig_credentials(conf);
        let (ok, text) = verify(&pki.join("ca.crt"), &crt);
        assert!(ok, "{conf}: {text}");
    }
    let (_server, port) = s_server(&pki, "apiserver", &["-Verify", "1", "-verify_return_error"]);
    let ca = pki.join("ca.crt");
    let request = "GET / HTTP/1.0\r\n\r\n";
    let call = |cert: &Path, key: &Path| {
        s_client(
            node.tmp.path(),
            port,
            &[
                "-CAfile",
                ca.to_str().unwrap(),
                "-verify_return_error",
                "-verify_ip",
                ADVERTISE,
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
            ],
            Some(request),
        )
    };
    for (conf, cn) in [
        ("admin.conf", "kubernetes-admin"),
        ("controller-manager.conf", "system:kube-controller-manager"),
        ("scheduler.conf", "system:kube-scheduler"),
        ("kubelet.conf", "system:node:cp-1"),
    ] {
        let (crt, key) = node.kubeconfig_credentials(conf);
        let (ok, text) = call(&crt, &key);
        assert!(
            ok && text.contains("HTTP/1.0 200 ok"),
            "{conf}: its credentials must be accepted: {text}"
        );
        // s_server's page shows the client certificate it verified
        let page = text.split_once("HTTP/1.0 200 ok").unwrap().1;
        let seen = page
            .split_once("Client certificate")
            .unwrap_or_else(|| panic!("{conf}: the server saw no client certificate: {text}"))
            .1;
        assert!(
            seen.contains(&format!("CN={cn}")) || seen.contains(&format!("CN = {cn}")),
            "{conf}: the server must have seen CN={cn}: {page}"
        );
    }
    // negative control: a client certificate ca did not sign is refused
    let (_, text) = call(
        &pki.join("front-proxy-client.crt"),
        &pki.join("front-proxy-client.key"),
    );
    assert!(
        !text.contains("HTTP/1.0 200 ok"),
        "a certificate of another CA must be refused: {text}"
    );
}

/// Requirement 5: a CA or sa.key gone everywhere stops the run (exit 4, the procedure, nothing
/// written); `--new-ca ca` then makes a new cluster CA and re-issues everything it signs.
#[test]
fn a_ca_or_sa_key_gone_everywhere_stops_until_new_ca_is_asked_for() {
    if !tools(&["openssl"]) {
        return;
    }
    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            "ca",
            &["pki/ca.crt", "pki/ca.key"],
            &["pki/ca.crt", "--new-ca ca", "another control-plane node"],
        ),
        (
            "etcd-ca",
            &["pki/etcd/ca.crt", "pki/etcd/ca.key"],
            &[
                "pki/etcd/ca.crt",
                "--new-ca etcd-ca",
                "another control-plane node",
            ],
        ),
        (
            "front-proxy-ca",
            &["pki/front-proxy-ca.crt", "pki/front-proxy-ca.key"],
            &[
                "pki/front-proxy-ca.crt",
                "--new-ca front-proxy-ca",
                "another control-plane node",
            ],
        ),
        (
            "sa",
            &["pki/sa.key"],
            &["pki/sa.key", "--new-ca sa", "another control-plane node"],
        ),
    ];
    for (name, gone, says) in cases {
        let node = Node::new(KeyAlgorithm::EcdsaP256);
        // some leaves are gone too: the stop must not write them either
        for rel in
            gone.iter()
                .copied()
                .chain(["pki/apiserver.crt", "pki/apiserver.key", "admin.conf"])
        {
            node.take(rel);
        }
        let before = snapshot(&node.dir());
        let (code, out, err) = node.recover(&["--no-restart"]);
        assert_eq!(code, 4, "{name} gone everywhere:\n{out}\n{err}");
        assert!(
            err.lines().any(|l| l.starts_with(&format!("{name}: "))),
            "stderr must name {name}:\n{err}"
        );
        for s in says {
            assert!(
                err.contains(s),
                "{name}: the procedure must say {s:?}:\n{err}"
            );
        }
        assert_eq!(
            before,
            snapshot(&node.dir()),
            "{name}: a stopped recovery must leave the tree byte-identical"
        );
        assert_no_run_traces(&node.state(), name);
        // a dry run stops the same way
        let (code, _, err) = node.recover(&["--dry-run", "--no-restart"]);
        assert_eq!(code, 4, "{name} (dry run): {err}");
        assert_eq!(before, snapshot(&node.dir()), "{name} (dry run)");
    }

    // --new-ca ca: a new cluster CA, and every certificate it signs re-issued against it
    let node = Node::new(KeyAlgorithm::EcdsaP256);
    for rel in [
        "pki/ca.crt",
        "pki/ca.key",
        "pki/apiserver.crt",
        "pki/apiserver.key",
        "admin.conf",
    ] {
        node.take(rel);
    }
    let (code, _, err) = node.recover(&["--no-restart"]);
    assert_eq!(code, 4, "{err}");
    // what --new-ca ca must leave alone: the other CAs, their leaves, sa
    let untouched = [
        "pki/front-proxy-ca.crt",
        "pki/front-proxy-ca.key",
        "pki/front-proxy-client.crt",
        "pki/front-proxy-client.key",
        "pki/etcd/ca.crt",
        "pki/etcd/ca.key",
        "pki/etcd/server.crt",
        "pki/etcd/server.key",
        "pki/etcd/peer.crt",
        "pki/etcd/peer.key",
        "pki/etcd/healthcheck-client.crt",
        "pki/etcd/healthcheck-client.key",
        "pki/apiserver-etcd-client.crt",
        "pki/apiserver-etcd-client.key",
        "pki/sa.key",
        "pki/sa.pub",
    ];
    let kept: BTreeMap<&str, Vec<u8>> = untouched
        .iter()
        .map(|r| (*r, std::fs::read(node.file(r)).unwrap()))
        .collect();
    // the survivors signed by the old ca, before
    let survivors_before: BTreeMap<&str, Vec<u8>> = [
        "pki/apiserver-kubelet-client.crt",
        "controller-manager.conf",
        "scheduler.conf",
        "kubelet.conf",
        SUPER_ADMIN,
    ]
    .iter()
    .map(|r| (*r, std::fs::read(node.file(r)).unwrap()))
    .collect();
    let (code, out, err) = node.recover(&["--new-ca", "ca", "--no-restart"]);
    assert_eq!(code, 0, "--new-ca ca:\n{out}\n{err}");
    let pki = node.pki();
    let new_ca = pki.join("ca.crt");
    let old_ca = node.original("pki/ca.crt");
    assert_ne!(
        std::fs::read(&new_ca).unwrap(),
        std::fs::read(&old_ca).unwrap(),
        "a new ca.crt"
    );
    assert_eq!(
        fields(&old_ca),
        fields(&new_ca),
        "the new CA must be a kubeadm CA like the old"
    );
    assert_key_is_certs(&new_ca, &pki.join("ca.key"), "new ca");
    assert_eq!(mode(&pki.join("ca.key")), 0o600);
    for (rel, data) in &kept {
        assert_eq!(
            &std::fs::read(node.file(rel)).unwrap(),
            data,
            "{rel}: --new-ca ca must not touch it"
        );
    }
    for (rel, data) in &survivors_before {
        assert_ne!(
            &std::fs::read(node.file(rel)).unwrap(),
            data,
            "{rel}: signed by the old ca, it must be replaced"
        );
    }
    // every certificate ca signs: against the new CA, not the old; identity kept
    let mut signed: Vec<(String, PathBuf, PathBuf)> = vec![
        (
            "apiserver".into(),
            pki.join("apiserver.crt"),
            node.original("pki/apiserver.crt"),
        ),
        (
            "apiserver-kubelet-client".into(),
            pki.join("apiserver-kubelet-client.crt"),
            PathBuf::new(),
        ),
    ];
    let old_kubelet_client = node.scratch("apiserver-kubelet-client.old.crt");
    std::fs::write(
        &old_kubelet_client,
        &survivors_before["pki/apiserver-kubelet-client.crt"],
    )
    .unwrap();
    signed[1].2 = old_kubelet_client;
    for conf in KUBECONFIGS.iter().chain([&SUPER_ADMIN]) {
        let (crt, _) = node.kubeconfig_credentials(conf);
        let old = node.scratch(&format!("{conf}.old.crt"));
        if *conf == "admin.conf" {
            extract_kubeconfig_cert(&node.original(conf), &old);
        } else {
            let old_conf = node.scratch(&format!("{conf}.old"));
            std::fs::write(&old_conf, &survivors_before[conf]).unwrap();
            extract_kubeconfig_cert(&old_conf, &old);
        }
        assert_eq!(
            kubeconfig_ca(&node.file(conf)),
            std::fs::read(&new_ca).unwrap(),
            "{conf}: certificate-authority-data must be the new ca.crt"
        );
        signed.push((conf.to_string(), crt, old));
    }
    for (name, crt, old) in &signed {
        let (ok, text) = verify(&new_ca, crt);
        assert!(ok, "{name}: must verify against the new ca: {text}");
        let (ok, _) = verify(&old_ca, crt);
        assert!(!ok, "{name}: must no longer verify against the old ca");
        assert_eq!(fields(old), fields(crt), "{name}: identity changed");
    }
    assert_key_is_certs(
        &pki.join("apiserver.crt"),
        &pki.join("apiserver.key"),
        "apiserver",
    );
    let (code, json) = check_json(node.now, &node.dir());
    assert_eq!(code, 0, "check after --new-ca ca: {json:#}");
}

/// Requirement 6: a kubeadm config's certSANs and controlPlaneEndpoint are honoured.
#[test]
fn a_kubeadm_config_adds_its_cert_sans_and_control_plane_endpoint() {
    if !tools(&["openssl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("kubeadm.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeadm.k8s.io/v1beta3\n\
         kind: ClusterConfiguration\n\
         controlPlaneEndpoint: lb.example.com:6443\n\
         apiServer:\n  \
           certSANs:\n  \
           - extra.example.com\n  \
           - 10.0.0.99\n",
    )
    .unwrap();
    let (node, out) = Node::recovered(
        KeyAlgorithm::EcdsaP256,
        &["--kubeadm-config", config.to_str().unwrap()],
    );
    let apiserver = node.file("pki/apiserver.crt");
    // kubeadm (≥ 1.19, `RemoveDuplicateAltNames`) writes the DNS names sorted, then the IPs in
    // its order: service IP, advertise address, certSANs IPs
    assert_eq!(
        sans(&apiserver),
        [
            "DNS:cp-1",
            "DNS:extra.example.com",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "DNS:lb.example.com",
            "IP Address:10.96.0.1",
            &format!("IP Address:{ADVERTISE}"),
            "IP Address:10.0.0.99",
        ],
        "apiserver SANs\n{out}"
    );
    assert_signed_only_by(&node.pki(), &apiserver, "ca", "apiserver");
    // the load balancer's name and the extra IP verify over TLS too
    let (_server, port) = s_server(&node.pki(), "apiserver", &[]);
    let ca = node.pki().join("ca.crt");
    for check in [
        vec![
            "-servername",
            "lb.example.com",
            "-verify_hostname",
            "lb.example.com",
        ],
        vec!["-verify_ip", "10.0.0.99"],
    ] {
        let mut args = vec!["-CAfile", ca.to_str().unwrap(), "-verify_return_error"];
        args.extend(check.iter().copied());
        let (ok, text) = s_client(node.tmp.path(), port, &args, None);
        assert!(
            ok && text.contains("Verify return code: 0 (ok)"),
            "{check:?}: {text}"
        );
    }
    // kubeadm: admin.conf and kubelet.conf name the control-plane endpoint; the
    // controller-manager and the scheduler talk to their local API server
    let local = format!("https://{ADVERTISE}:{}", node.api_port);
    for (conf, server) in [
        ("admin.conf", "https://lb.example.com:6443"),
        ("kubelet.conf", "https://lb.example.com:6443"),
        ("controller-manager.conf", local.as_str()),
        ("scheduler.conf", local.as_str()),
    ] {
        assert_eq!(kubeconfig_server(&node.file(conf)), server, "{conf}");
    }
    // the other leaves do not take the API server's extras
    for rel in ["pki/etcd/server.crt", "pki/etcd/peer.crt"] {
        let s = sans(&node.file(rel));
        assert_eq!(
            s,
            [
                "DNS:cp-1",
                "DNS:localhost",
                &format!("IP Address:{ADVERTISE}"),
                "IP Address:127.0.0.1",
                "IP Address:0:0:0:0:0:0:0:1",
            ],
            "{rel}"
        );
    }
}

/// kubeadm deduplicates the IP SANs (`RemoveDuplicateAltNames`): with the advertise address on
/// 127.0.0.1 itself, the etcd certificates carry 127.0.0.1 once. (nodegen writes it twice there:
/// it does not deduplicate, which is why the other tests advertise on another loopback address.)
#[test]
fn an_advertise_address_of_127_0_0_1_is_written_once_as_kubeadm_does() {
    if !tools(&["openssl"]) {
        return;
    }
    let node = Node::advertising(KeyAlgorithm::EcdsaP256, "127.0.0.1");
    node.strip_to_cas();
    let (code, out, err) = node.recover(&["--no-restart"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for rel in ["pki/etcd/server.crt", "pki/etcd/peer.crt"] {
        assert_eq!(
            sans(&node.file(rel)),
            [
                "DNS:cp-1",
                "DNS:localhost",
                "IP Address:127.0.0.1",
                "IP Address:0:0:0:0:0:0:0:1",
            ],
            "{rel}"
        );
    }
    assert_eq!(
        sans(&node.file("pki/apiserver.crt")),
        [
            "DNS:cp-1",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "IP Address:10.96.0.1",
            "IP Address:127.0.0.1",
        ]
    );
    let local = format!("https://127.0.0.1:{}", node.api_port);
    for conf in KUBECONFIGS {
        assert_eq!(kubeconfig_server(&node.file(conf)), local, "{conf}");
    }
}
