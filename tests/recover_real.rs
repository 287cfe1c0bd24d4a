//! `recover` on the real kubeadm trees, judged by openssl and x509-parser.
//!
//! Each tree with a pki is copied, snapshotted (its leaves are expired then: the snapshot's
//! copies can only serve as templates), renewed (so that `check` can be healthy afterwards),
//! and then loses, in turn, each leaf certificate, each leaf key, each CA certificate and key,
//! `sa.key`, `sa.pub`, each kubeconfig, each manifest, every other file, all of `pki/` and the
//! whole kubernetes dir. After each `recover`, the node must be whole again: restored files
//! byte-identical to the snapshot's copy, re-issued ones faithful to the deleted certificate
//! and signed by kubeadm's CA for them, everything else untouched.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use base64::Engine;
use common::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Relative path → bytes.
type Files = BTreeMap<PathBuf, Vec<u8>>;

/// Every file below `dir` by relative path, with its bytes.
fn rel_files(dir: &Path) -> Files {
    snapshot(dir)
        .into_iter()
        .map(|(p, d)| (p.strip_prefix(dir).unwrap().to_path_buf(), d))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Copies a tree keeping the modes of files and directories (the state dir is 0700, and the
/// product refuses directories others could write in).
fn clone_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode(src))).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            clone_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// The fixtures are read-only: gives the copy kubeadm's modes (keys and kubeconfigs 0600).
fn make_writable(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            make_writable(&path);
        } else {
            let name = path.to_string_lossy();
            let m = if name.ends_with(".key") || name.ends_with(".conf") {
                0o600
            } else {
                0o644
            };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        }
    }
}

/// Runs the binary on a node: global flags, then `args`; optionally with a failpoint armed.
fn kcr(
    now: OffsetDateTime,
    k: &Path,
    state: &Path,
    config: Option<&Path>,
    failpoint: Option<&str>,
    args: &[&str],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"));
    cmd.arg("--config")
        .arg(config.unwrap_or(Path::new("/nonexistent/config.toml")))
        .arg("--now")
        .arg(now.format(&Rfc3339).unwrap())
        .arg("--kubernetes-dir")
        .arg(k)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove(kube_cert_renewer::failpoint::ENV);
    if let Some(fp) = failpoint {
        cmd.env(kube_cert_renewer::failpoint::ENV, fp);
    }
    let out = cmd.output().expect("run kube-cert-renewer");
    if failpoint.is_none() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "the binary panicked: {stderr}"
        );
    }
    out
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The CA file (relative) that signs a leaf pair by kubeadm's mapping (certlist.go).
fn ca_of_pair(rel_base: &str) -> &'static str {
    match rel_base {
        "pki/apiserver" | "pki/apiserver-kubelet-client" => "ca",
        "pki/front-proxy-client" => "front-proxy-ca",
        "pki/apiserver-etcd-client"
        | "pki/etcd/server"
        | "pki/etcd/peer"
        | "pki/etcd/healthcheck-client" => "etcd-ca",
        other => panic!("not a kubeadm leaf: {other}"),
    }
}

const CA_BASES: [&str; 3] = ["pki/ca", "pki/front-proxy-ca", "pki/etcd/ca"];

/// What a file of the tree is, for what `recover` must do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// One half of a leaf pair (base without extension).
    Leaf(String),
    /// A kubeconfig with embedded credentials.
    EmbeddedKubeconfig,
    /// Anything restored byte for byte (CAs, sa, manifests, kubeadm.conf, a kubeconfig that
    /// points at files).
    Verbatim,
}

fn kind(rel: &Path, original: &[u8]) -> Kind {
    let s = rel.to_string_lossy();
    if let Some(base) = s.strip_suffix(".crt").or_else(|| s.strip_suffix(".key"))
        && s.starts_with("pki/")
        && !CA_BASES.contains(&base)
        && base != "pki/sa"
    {
        return Kind::Leaf(base.to_string());
    }
    if s.ends_with(".conf")
        && !s.contains('/')
        && String::from_utf8_lossy(original).contains("client-certificate-data:")
    {
        return Kind::EmbeddedKubeconfig;
    }
    Kind::Verbatim
}

/// A node prepared once per tree; each case starts from a copy of it.
struct Node {
    label: String,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    k: PathBuf,
    state: PathBuf,
    base_k: PathBuf,
    base_state: PathBuf,
    /// The fixture's bytes (what the snapshot holds).
    original: Files,
    /// The tree after the renewal (what each case starts from).
    base: Files,
    /// The pristine snapshot's name.
    snap: String,
    /// `check -o json` on the base tree.
    baseline: serde_json::Value,
    /// When recover and check run.
    t1: OffsetDateTime,
}

fn fixture(label: &str) -> PathBuf {
    let path = fixtures()
        .into_iter()
        .find(|p| p.file_name().unwrap() == label)
        .unwrap_or_else(|| panic!("no fixture {label}"));
    assert!(path.join("pki").is_dir(), "{label} has no pki");
    path
}

impl Node {
    fn prepare(label: &str) -> Node {
        assert!(
            openssl(&["version"]).0,
            "openssl is needed as the independent oracle"
        );
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let k = root.join("k");
        let state = root.join("state");
        copy_tree(&fixture(label), &k);
        make_writable(&k);
        let original = rel_files(&k);
        let t0 = now() - time::Duration::minutes(10);
        let t1 = t0 + time::Duration::minutes(1);

        let out = kcr(t0, &k, &state, None, None, &["snapshot"]);
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let dir = stdout
            .trim()
            .strip_prefix("snapshot taken: ")
            .unwrap_or_else(|| panic!("{label}: {stdout}"));
        let snap = Path::new(dir)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // the snapshot is a faithful copy of every file
        let copy = rel_files(Path::new(dir));
        for (rel, data) in &original {
            assert_eq!(copy.get(rel), Some(data), "{label}: snapshot of {rel:?}");
        }

        // Renewed without a new snapshot: the only snapshot has the expired leaves. kubelet.conf
        // is not in kubeadm's `all`: renewed by name when it embeds its credentials.
        let config = root.join("no-snapshots.toml");
        std::fs::write(&config, "snapshots = false\n").unwrap();
        let out = kcr(
            t0,
            &k,
            &state,
            Some(&config),
            None,
            &["renew", "--no-restart", "all"],
        );
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        if kind(
            Path::new("kubelet.conf"),
            &original[Path::new("kubelet.conf")],
        ) == Kind::EmbeddedKubeconfig
        {
            let at = t0 + time::Duration::seconds(1);
            let args = ["renew", "--no-restart", "kubelet.conf"];
            let out = kcr(at, &k, &state, Some(&config), None, &args);
            assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        }
        let snaps = std::fs::read_dir(state.join("snapshots")).unwrap().count();
        assert_eq!(snaps, 1, "{label}: the renewal took no snapshot");

        let base = rel_files(&k);
        let (code, baseline) = check_json(t1, &k);
        assert_healthy(label, code, &baseline, &k, &format!("{label}: renewed"));
        let base_k = root.join("base-k");
        let base_state = root.join("base-state");
        clone_tree(&k, &base_k);
        clone_tree(&state, &base_state);
        Node {
            label: label.to_string(),
            _tmp: tmp,
            root,
            k,
            state,
            base_k,
            base_state,
            original,
            base,
            snap,
            baseline,
            t1,
        }
    }

    /// Puts the node and its state dir back as they were after the preparation.
    fn reset(&self) {
        for d in [&self.k, &self.state] {
            if d.exists() {
                std::fs::remove_dir_all(d).unwrap();
            }
        }
        clone_tree(&self.base_k, &self.k);
        clone_tree(&self.base_state, &self.state);
    }

    fn recover(&self, extra: &[&str]) -> Output {
        let mut args = vec!["recover", "--no-restart"];
        args.extend_from_slice(extra);
        kcr(self.t1, &self.k, &self.state, None, None, &args)
    }

    fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.join("scratch").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

/// The rows of `check -o json` that are not `ok`: (name, path).
fn lacking_rows(json: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for list in [
        "certificates",
        "certificateAuthorities",
        "otherCertificates",
    ] {
        for row in json[list]
            .as_array()
            .unwrap_or_else(|| panic!("no {list}: {json}"))
        {
            // "absent": super-admin.conf, which only kubeadm >= 1.29 writes
            if row["status"] != "ok" && row["status"] != "absent" {
                out.push((
                    row["name"].as_str().unwrap().to_string(),
                    row["path"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    out
}

/// Healthy but for what the fixture lacks on any copy: only v1.18's kubelet.conf points at the
/// kubelet's rotated PEM under /var/lib/kubelet, which is no part of the tree (check then
/// exits 1 for that one missing file).
fn assert_healthy(label: &str, code: i32, json: &serde_json::Value, k: &Path, context: &str) {
    let lacking = lacking_rows(json);
    for (name, path) in &lacking {
        assert!(
            path.starts_with("/var/lib/kubelet/")
                && !Path::new(path).starts_with(k)
                && label == "v1.18-stacked-etcd",
            "{context}: {name} ({path}) is not healthy: {json:#}"
        );
    }
    assert_eq!(
        code,
        if lacking.is_empty() { 0 } else { 1 },
        "{context}: check's exit code: {json:#}"
    );
}

/// `check -o json` is healthy (but for what the fixture lacks) and says what it said on the
/// renewed tree, row for row.
fn assert_check_healthy(node: &Node, context: &str) {
    let (code, json) = check_json(node.t1, &node.k);
    assert_healthy(&node.label, code, &json, &node.k, context);
    for list in [
        "certificates",
        "certificateAuthorities",
        "otherCertificates",
    ] {
        let rows =
            |j: &serde_json::Value| -> BTreeMap<String, (serde_json::Value, serde_json::Value)> {
                j[list]
                    .as_array()
                    .unwrap_or_else(|| panic!("no {list}: {j}"))
                    .iter()
                    .map(|r| {
                        (
                            r["name"].as_str().unwrap().to_string(),
                            (r["status"].clone(), r["missing"].clone()),
                        )
                    })
                    .collect()
            };
        let now = rows(&json);
        let before = rows(&node.baseline);
        assert_eq!(
            now, before,
            "{context}: check's {list} differ from the baseline"
        );
        for (name, (status, missing)) in &now {
            assert_ne!(status, "expired", "{context}: {name}");
            if *missing == true {
                // only what the fixture lacks on every node copy (v1.18's kubelet.conf points at
                // the kubelet's rotated PEM, which is not part of the tree)
                assert_eq!(before[name].1, true, "{context}: {name}");
            }
        }
    }
}

/// No temp or previous-version file left anywhere in the tree.
fn assert_no_leftovers(node: &Node, context: &str) {
    let left: Vec<PathBuf> = files_below(&node.k)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".kcr-"))
        .collect();
    assert!(left.is_empty(), "{context}: leftovers {left:?}");
}

/// The DER of every certificate of a PEM text.
fn pem_certs(data: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(data)
        .map(|p| p.unwrap())
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

/// Subject (DER), SANs (in order), KeyUsage, ExtendedKeyUsage and BasicConstraints with their
/// criticality, as x509-parser reads them.
fn identity_der(cert_pem: &[u8]) -> String {
    use x509_parser::prelude::*;
    let der = pem_certs(cert_pem).remove(0);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let mut out = format!("subject={:02x?}\n", cert.subject().as_raw());
    for ext in cert.extensions() {
        let line = match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                format!("san={:?}", san.general_names)
            }
            ParsedExtension::KeyUsage(ku) => format!("ku={:#06x}", ku.flags),
            ParsedExtension::ExtendedKeyUsage(eku) => format!("eku={eku:?}"),
            ParsedExtension::BasicConstraints(bc) => format!("bc={bc:?}"),
            _ => continue,
        };
        out.push_str(&format!("{line} critical={}\n", ext.critical));
    }
    out
}

/// The public key of a certificate and of a key, as openssl prints them: equal when they match.
fn assert_key_matches(cert: &Path, key: &Path, context: &str) {
    let (ok_c, a) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    let (ok_k, b) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert!(ok_c && ok_k, "{context}: {a}{b}");
    assert_eq!(a, b, "{context}: the key does not match the certificate");
}

/// A re-issued certificate (`new`) is faithful to the deleted one (`old`), signed by `ca` of the
/// node's pki (checked by openssl, at the current time), with `new_key` matching.
#[allow(clippy::too_many_arguments)]
fn assert_faithful_reissue(
    node: &Node,
    old: &Path,
    new: &Path,
    old_key: &Path,
    new_key: &Path,
    ca: &str,
    context: &str,
) {
    assert_eq!(
        identity_text(new),
        identity_text(old),
        "{context}: openssl's view"
    );
    assert_eq!(
        identity_der(&std::fs::read(new).unwrap()),
        identity_der(&std::fs::read(old).unwrap()),
        "{context}: subject/SAN/KU/EKU/BC"
    );
    let pki = node.k.join("pki");
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        ca_file(&pki, ca).to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert!(ok, "{context}: openssl verify against {ca}: {out}");
    assert_signed_only_by(&pki, new, ca, context);
    assert_key_matches(new, new_key, context);
    assert_eq!(key_kind(new_key), key_kind(old_key), "{context}: key kind");
    assert_eq!(
        pem_label(new_key),
        pem_label(old_key),
        "{context}: key encoding"
    );
    assert_ne!(
        std::fs::read(new_key).unwrap(),
        std::fs::read(old_key).unwrap(),
        "{context}: a re-issue has a new key"
    );
}

/// The value of `key:` on a kubeconfig's line, base64-decoded.
fn kubeconfig_field(text: &str, key: &str) -> Vec<u8> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}"));
    base64::engine::general_purpose::STANDARD
        .decode(line.split_once(':').unwrap().1.trim())
        .unwrap()
}

/// Checks a re-issued kubeconfig against the original text.
fn assert_kubeconfig_reissued(node: &Node, rel: &Path, scratch: &Path, context: &str) {
    let path = node.k.join(rel);
    let new_text = std::fs::read_to_string(&path).unwrap();
    let old_text = String::from_utf8(node.original[rel].clone()).unwrap();
    assert_eq!(
        old_text.lines().count(),
        new_text.lines().count(),
        "{context}: line count"
    );
    assert_eq!(
        old_text.ends_with('\n'),
        new_text.ends_with('\n'),
        "{context}: final newline"
    );
    let replaced = [
        "client-certificate-data",
        "client-key-data",
        "certificate-authority-data",
    ];
    for (a, b) in old_text.lines().zip(new_text.lines()) {
        let field = a.trim_start().split(':').next().unwrap();
        if replaced.contains(&field) {
            assert!(
                b.starts_with(&a[..a.find(':').unwrap() + 1]),
                "{context}: {a:?} became {b:?}"
            );
        } else {
            assert_eq!(a, b, "{context}: only the credentials may change");
        }
    }
    let servers = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.trim_start().starts_with("server:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(servers(&new_text), servers(&old_text), "{context}: server");
    assert!(!servers(&new_text).is_empty(), "{context}: a server URL");
    // CA data: the certificates of ca.crt
    assert_eq!(
        pem_certs(&kubeconfig_field(&new_text, "certificate-authority-data")),
        pem_certs(&std::fs::read(node.k.join("pki/ca.crt")).unwrap()),
        "{context}: certificate-authority-data"
    );
    let tag = rel.to_string_lossy().replace('/', "_");
    let (old_conf, old_cert, old_key, new_cert, new_key) = (
        scratch.join(format!("{tag}.old.conf")),
        scratch.join(format!("{tag}.old.crt")),
        scratch.join(format!("{tag}.old.key")),
        scratch.join(format!("{tag}.new.crt")),
        scratch.join(format!("{tag}.new.key")),
    );
    std::fs::write(&old_conf, &old_text).unwrap();
    extract_kubeconfig_cert(&old_conf, &old_cert);
    extract_kubeconfig_key(&old_conf, &old_key);
    extract_kubeconfig_cert(&path, &new_cert);
    extract_kubeconfig_key(&path, &new_key);
    assert_faithful_reissue(
        node, &old_cert, &new_cert, &old_key, &new_key, "ca", context,
    );
    // and not the renewal's credentials either
    let base_text = String::from_utf8(node.base[rel].clone()).unwrap();
    assert_ne!(
        kubeconfig_field(&base_text, "client-key-data"),
        kubeconfig_field(&new_text, "client-key-data"),
        "{context}: a new key"
    );
    assert_eq!(mode(&path), 0o600, "{context}: mode");
}

/// Deletes `targets` (relative; files or directories) from a fresh copy of the renewed node,
/// runs `recover`, and checks everything. Returns the number of files deleted.
fn deletion_case(node: &Node, targets: &[&str]) -> usize {
    let context = format!("{}: delete {}", node.label, targets.join(" + "));
    node.reset();
    let mut deleted: BTreeSet<PathBuf> = BTreeSet::new();
    for t in targets {
        let rel = Path::new(t);
        let abs = node.k.join(rel);
        if abs.is_dir() {
            deleted.extend(
                node.base
                    .keys()
                    .filter(|f| f.starts_with(rel) || t.is_empty())
                    .cloned(),
            );
            std::fs::remove_dir_all(&abs).unwrap();
        } else {
            assert!(abs.is_file(), "{context}: {t} is not in the tree");
            deleted.insert(rel.to_path_buf());
            std::fs::remove_file(&abs).unwrap();
        }
    }
    let out = node.recover(&[]);
    assert_eq!(out.status.code(), Some(0), "{context}: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("Recovered:"), "{context}: {stdout}");
    for rel in &deleted {
        assert!(
            stdout.contains(&node.k.join(rel).display().to_string()),
            "{context}: the report does not name {}: {stdout}",
            rel.display()
        );
    }
    assert_no_leftovers(node, &context);
    let after = rel_files(&node.k);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        node.base.keys().collect::<Vec<_>>(),
        "{context}: every file is back, and nothing else appeared"
    );

    // What may change: the deleted files, and the other half of a re-issued pair.
    let mut may_change: BTreeSet<PathBuf> = deleted.clone();
    let scratch = node.scratch(&context.replace(['/', ' ', ':', '+'], "_"));
    let mut reissued_pairs: BTreeSet<String> = BTreeSet::new();
    for rel in &deleted {
        let c = format!("{context}: {}", rel.display());
        match kind(rel, &node.original[rel]) {
            Kind::Leaf(base) => {
                may_change.insert(PathBuf::from(format!("{base}.crt")));
                may_change.insert(PathBuf::from(format!("{base}.key")));
                reissued_pairs.insert(base);
            }
            Kind::EmbeddedKubeconfig => assert_kubeconfig_reissued(node, rel, &scratch, &c),
            Kind::Verbatim => {
                assert_eq!(
                    after[rel], node.original[rel],
                    "{c}: not restored byte for byte from the snapshot"
                );
                let snap_copy = node.state.join("snapshots").join(&node.snap).join(rel);
                assert_eq!(
                    mode(&node.k.join(rel)),
                    mode(&snap_copy),
                    "{c}: mode of the restored file"
                );
            }
        }
    }
    for base in &reissued_pairs {
        let c = format!("{context}: {base}");
        let old_dir = scratch.join("original");
        let old_cert = old_dir.join(format!("{base}.crt"));
        let old_key = old_dir.join(format!("{base}.key"));
        std::fs::create_dir_all(old_cert.parent().unwrap()).unwrap();
        let crt_rel = PathBuf::from(format!("{base}.crt"));
        let key_rel = PathBuf::from(format!("{base}.key"));
        std::fs::write(&old_cert, &node.original[&crt_rel]).unwrap();
        std::fs::write(&old_key, &node.original[&key_rel]).unwrap();
        let new_cert = node.k.join(&crt_rel);
        let new_key = node.k.join(&key_rel);
        assert_faithful_reissue(
            node,
            &old_cert,
            &new_cert,
            &old_key,
            &new_key,
            ca_of_pair(base),
            &c,
        );
        assert_ne!(
            after[&key_rel], node.base[&key_rel],
            "{c}: not the renewal's key"
        );
        assert_eq!(mode(&new_key), 0o600, "{c}: key mode");
        assert_eq!(mode(&new_cert), 0o644, "{c}: certificate mode");
    }
    for (rel, data) in &node.base {
        if !may_change.contains(rel) {
            assert_eq!(
                &after[rel],
                data,
                "{context}: {} was not deleted and must not change",
                rel.display()
            );
        }
    }
    assert_check_healthy(node, &context);
    deleted.len()
}

/// Every deletion of the matrix, then the dry run and the intact tree. Returns counts.
fn deletion_matrix(label: &str) {
    let started = Instant::now();
    let node = Node::prepare(label);
    let mut cases: Vec<Vec<String>> = Vec::new();
    for rel in node.original.keys() {
        // every single file: leaf .crt and .key, CA .crt and .key, sa.key, sa.pub, each
        // kubeconfig, each manifest, kubeadm.conf
        cases.push(vec![rel.to_string_lossy().into_owned()]);
    }
    cases.push(vec!["pki".into()]);
    if node.original.keys().any(|p| p.starts_with("manifests")) {
        cases.push(vec!["manifests".into()]);
    }
    cases.push(vec![String::new()]); // the whole kubernetes dir
    let mut files = 0;
    for case in &cases {
        let targets: Vec<&str> = case.iter().map(String::as_str).collect();
        files += deletion_case(&node, &targets);
    }

    // An intact tree: nothing to recover, nothing written.
    node.reset();
    let before_k = snapshot(&node.k);
    let out = node.recover(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{label}: intact: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to recover"),
        "{label}: intact: {}",
        text(&out)
    );
    assert_eq!(snapshot(&node.k), before_k, "{label}: intact tree touched");

    // A dry run over the whole dir gone: writes nothing, says what it would do.
    node.reset();
    std::fs::remove_dir_all(&node.k).unwrap();
    let before_state = snapshot(&node.state);
    let out = node.recover(&["--dry-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{label}: dry run: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("dry run"), "{label}: {stdout}");
    for rel in node.base.keys() {
        assert!(
            stdout.contains(&node.k.join(rel).display().to_string()),
            "{label}: the dry run does not list {}: {stdout}",
            rel.display()
        );
    }
    assert!(
        !node.k.exists(),
        "{label}: the dry run created the kubernetes dir"
    );
    assert_eq!(
        snapshot(&node.state),
        before_state,
        "{label}: the dry run wrote in the state dir"
    );
    // a partial dry run (one leaf gone) too
    node.reset();
    std::fs::remove_file(node.k.join("pki/apiserver.crt")).unwrap();
    let (before_k, before_state) = (snapshot(&node.k), snapshot(&node.state));
    let out = node.recover(&["--dry-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{label}: dry run: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("apiserver"),
        "{label}: {}",
        text(&out)
    );
    assert_eq!(snapshot(&node.k), before_k, "{label}: dry run wrote");
    assert_eq!(
        snapshot(&node.state),
        before_state,
        "{label}: dry run wrote"
    );

    eprintln!(
        "{label}: {} deletion cases ({files} files deleted in all) + intact + 2 dry runs in {:?}",
        cases.len(),
        started.elapsed()
    );
}

#[test]
fn recover_every_deletion_v1_11() {
    deletion_matrix("v1.11-stacked-etcd");
}

#[test]
fn recover_every_deletion_v1_14() {
    deletion_matrix("v1.14-stacked-etcd");
}

#[test]
fn recover_every_deletion_v1_16() {
    deletion_matrix("v1.16-stacked-etcd");
}

#[test]
fn recover_every_deletion_v1_18() {
    deletion_matrix("v1.18-stacked-etcd");
}

/// `--from` draws from the named snapshot, not the newest.
#[test]
fn recover_from_an_older_snapshot() {
    let label = "v1.18-stacked-etcd";
    let tmp = tempfile::tempdir().unwrap();
    let k = tmp.path().join("k");
    let state = tmp.path().join("state");
    copy_tree(&fixture(label), &k);
    make_writable(&k);
    let t = now() - time::Duration::hours(3);
    // two renewals, each followed by its snapshot: two generations of valid leaves
    for (i, at) in [t, t + time::Duration::hours(1)].iter().enumerate() {
        let out = kcr(
            *at,
            &k,
            &state,
            None,
            None,
            &["renew", "--no-restart", "all"],
        );
        assert_eq!(out.status.code(), Some(0), "renewal {i}: {}", text(&out));
    }
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(state.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    snaps.sort();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let (older, newer) = (snaps[0].clone(), snaps[1].clone());
    let older_name = older.file_name().unwrap().to_str().unwrap().to_string();
    let out = kcr(t, &k, &state, None, None, &["recover", "--list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listed.contains(&older_name), "{listed}");
    let pair = ["pki/apiserver.crt", "pki/apiserver.key"];
    for p in pair {
        assert_ne!(
            std::fs::read(older.join(p)).unwrap(),
            std::fs::read(newer.join(p)).unwrap(),
            "the two snapshots differ in {p}"
        );
    }
    let before = rel_files(&k);
    let t2 = t + time::Duration::hours(2);
    // the newest first (a recovery takes a snapshot afterwards: of the newest's content here)
    for (from, expected) in [(None, &newer), (Some(older_name.as_str()), &older)] {
        for p in pair {
            std::fs::remove_file(k.join(p)).unwrap();
        }
        let mut args = vec!["recover", "--no-restart"];
        if let Some(name) = from {
            args.extend(["--from", name]);
        }
        let out = kcr(t2, &k, &state, None, None, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "--from {from:?}: {}",
            text(&out)
        );
        let after = rel_files(&k);
        for p in pair {
            assert_eq!(
                after[Path::new(p)],
                std::fs::read(expected.join(p)).unwrap(),
                "--from {from:?}: {p} is not the chosen snapshot's copy"
            );
        }
        for (rel, data) in &before {
            if !pair.contains(&rel.to_str().unwrap()) {
                assert_eq!(&after[rel], data, "--from {from:?}: {}", rel.display());
            }
        }
        let (code, json) = check_json(t2, &k);
        assert_healthy(label, code, &json, &k, &format!("--from {from:?}"));
    }
}

/// A CA or sa.key gone from the node with no snapshot at all: exit 4, the procedure, nothing
/// written; then `--new-ca ca` builds a new CA and re-issues everything it signs.
#[test]
fn secret_gone_everywhere_stops_then_new_ca() {
    for label in ["v1.11-stacked-etcd", "v1.18-stacked-etcd"] {
        let node = Node::prepare(label);
        for (gone, name) in [
            (&["pki/ca.crt", "pki/ca.key"][..], "ca"),
            (&["pki/sa.key"][..], "sa"),
        ] {
            let context = format!("{label}: {gone:?} gone, no snapshot");
            node.reset();
            std::fs::remove_dir_all(&node.state).unwrap(); // a fresh state dir: no snapshot
            for g in gone {
                std::fs::remove_file(node.k.join(g)).unwrap();
            }
            let before = snapshot(&node.k);
            let out = node.recover(&[]);
            assert_eq!(out.status.code(), Some(4), "{context}: {}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                stderr.contains(&format!("\n{name}: ")),
                "{context}: stderr does not name {name}: {stderr}"
            );
            assert!(
                stderr.contains("another control-plane node"),
                "{context}: {stderr}"
            );
            assert!(
                stderr.contains(&format!("--new-ca {name}")),
                "{context}: {stderr}"
            );
            assert_eq!(snapshot(&node.k), before, "{context}: the tree was touched");
            let state_files: Vec<PathBuf> = files_below(&node.state)
                .into_iter()
                .filter(|p| !p.ends_with("lock"))
                .collect();
            assert!(
                state_files.is_empty(),
                "{context}: no backup, journal or snapshot may be written: {state_files:?}"
            );
        }

        // --new-ca ca: a new CA, every leaf and kubeconfig it signs re-issued.
        let context = format!("{label}: --new-ca ca");
        node.reset();
        std::fs::remove_dir_all(&node.state).unwrap();
        for g in ["pki/ca.crt", "pki/ca.key"] {
            std::fs::remove_file(node.k.join(g)).unwrap();
        }
        let out = node.recover(&["--new-ca", "ca"]);
        assert_eq!(out.status.code(), Some(0), "{context}: {}", text(&out));
        let after = rel_files(&node.k);
        let pki = node.k.join("pki");
        assert_ne!(
            after[Path::new("pki/ca.crt")],
            node.base[Path::new("pki/ca.crt")]
        );
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            pki.join("ca.crt").to_str().unwrap(),
            pki.join("ca.crt").to_str().unwrap(),
        ]);
        assert!(ok, "{context}: the new CA is self-signed: {out}");
        assert_key_matches(&pki.join("ca.crt"), &pki.join("ca.key"), &context);
        let (_, ca_text) = openssl(&[
            "x509",
            "-in",
            pki.join("ca.crt").to_str().unwrap(),
            "-noout",
            "-text",
        ]);
        assert!(ca_text.contains("CA:TRUE"), "{context}: {ca_text}");
        let scratch = node.scratch("new-ca");
        let mut reissued = 0;
        for (rel, data) in &node.base {
            let c = format!("{context}: {}", rel.display());
            let signed_by_ca = match kind(rel, &node.original[rel]) {
                Kind::Leaf(base) => ca_of_pair(&base) == "ca",
                Kind::EmbeddedKubeconfig => true,
                Kind::Verbatim => false,
            };
            if rel == Path::new("pki/ca.crt") || rel == Path::new("pki/ca.key") {
                continue;
            }
            if !signed_by_ca {
                assert_eq!(&after[rel], data, "{c}: not signed by ca, must not change");
                continue;
            }
            assert_ne!(
                &after[rel], data,
                "{c}: signed by the old ca, must be re-issued"
            );
            reissued += 1;
            let (cert, key) = if rel.extension().unwrap() == "conf" {
                let (cert, key) = (
                    scratch.join(format!("{reissued}.crt")),
                    scratch.join(format!("{reissued}.key")),
                );
                extract_kubeconfig_cert(&node.k.join(rel), &cert);
                extract_kubeconfig_key(&node.k.join(rel), &key);
                let text = std::fs::read_to_string(node.k.join(rel)).unwrap();
                assert_eq!(
                    pem_certs(&kubeconfig_field(&text, "certificate-authority-data")),
                    pem_certs(&after[Path::new("pki/ca.crt")]),
                    "{c}: CA data is the new ca.crt"
                );
                (cert, key)
            } else {
                let base = rel.with_extension("");
                (
                    node.k.join(base.with_extension("crt")),
                    node.k.join(base.with_extension("key")),
                )
            };
            let (ok, out) = openssl(&[
                "verify",
                "-CAfile",
                pki.join("ca.crt").to_str().unwrap(),
                cert.to_str().unwrap(),
            ]);
            assert!(ok, "{c}: does not verify against the new ca.crt: {out}");
            assert_key_matches(&cert, &key, &c);
        }
        let embedded_kubelet = kind(
            Path::new("kubelet.conf"),
            &node.original[Path::new("kubelet.conf")],
        ) == Kind::EmbeddedKubeconfig;
        // apiserver + apiserver-kubelet-client (2 files each), admin, controller-manager,
        // scheduler, and kubelet.conf when it embeds its credentials
        assert_eq!(reissued, 4 + 3 + usize::from(embedded_kubelet), "{context}");
        let (code, json) = check_json(node.t1, &node.k);
        assert_healthy(label, code, &json, &node.k, &context);
    }
}

/// A recovery killed in the middle of its writes, then run again: as if it had not crashed.
#[test]
fn recover_killed_mid_write_then_run_again() {
    let node = Node::prepare("v1.14-stacked-etcd");
    node.reset();
    std::fs::remove_dir_all(&node.k).unwrap();
    let failpoint = "renew.after-write@3";
    let out = kcr(
        node.t1,
        &node.k,
        &node.state,
        None,
        Some(failpoint),
        &["recover", "--no-restart"],
    );
    assert_eq!(
        out.status.code(),
        None,
        "aborted by the failpoint: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {failpoint} hit")),
        "{}",
        text(&out)
    );
    assert!(
        node.state.join("journal.json").exists(),
        "the crash left its journal"
    );
    // the same checks as an uninterrupted whole-dir recovery, without resetting the node
    let context = "v1.14: recover after a crash at renew.after-write@3";
    let out = node.recover(&[]);
    assert_eq!(out.status.code(), Some(0), "{context}: {}", text(&out));
    assert!(
        !node.state.join("journal.json").exists(),
        "{context}: journal left"
    );
    assert_no_leftovers(&node, context);
    let after = rel_files(&node.k);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        node.base.keys().collect::<Vec<_>>(),
        "{context}"
    );
    let scratch = node.scratch("crash");
    for (rel, data) in &node.original {
        let c = format!("{context}: {}", rel.display());
        match kind(rel, data) {
            Kind::Verbatim => assert_eq!(&after[rel], data, "{c}: not restored byte for byte"),
            Kind::EmbeddedKubeconfig => assert_kubeconfig_reissued(&node, rel, &scratch, &c),
            Kind::Leaf(base) => {
                if rel.extension().unwrap() == "key" {
                    continue;
                }
                let old_cert = scratch.join(format!("{}.old.crt", base.replace('/', "_")));
                let old_key = scratch.join(format!("{}.old.key", base.replace('/', "_")));
                std::fs::write(&old_cert, data).unwrap();
                std::fs::write(&old_key, &node.original[&rel.with_extension("key")]).unwrap();
                assert_faithful_reissue(
                    &node,
                    &old_cert,
                    &node.k.join(rel),
                    &old_key,
                    &node.k.join(rel.with_extension("key")),
                    ca_of_pair(&base),
                    &c,
                );
            }
        }
    }
    assert_check_healthy(&node, context);
}

/// kubeadm 1.8 ran etcd without TLS: no etcd CA ever existed on this node.
#[test]
fn recover_every_deletion_v1_8_single() {
    deletion_matrix("v1.8-single");
}
