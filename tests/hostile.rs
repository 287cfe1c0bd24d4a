//! The hostile-input corpus (issue 12): files that are broken, huge, malicious or in the wrong
//! place, and directories other users may write. Every case runs the binary — `check`, and
//! `renew all --no-restart` (plus `restart` or a config where it matters) — on a generated node
//! and asserts: no panic (exit code not 101, no "panicked"), no hang (each run is killed after
//! 30 s), a message naming the file and what is wrong, the exit code the README documents, and,
//! when a renewal is refused, a kubernetes dir byte- and mode-identical to before, with no backup
//! and no journal left.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kube_cert_renewer::demo::nodegen::{self, GeneratedCa, LeafTemplate, NodeSpec};
use kube_cert_renewer::pki::keys::KeyAlgorithm;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long one run of the binary may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(30);

/// What one run of the binary did.
#[derive(Debug)]
struct Ran {
    code: i32,
    out: String,
    err: String,
    took: Duration,
}

impl Ran {
    /// stdout and stderr together (check's problems go to stdout, refusals to stderr).
    fn said(&self) -> String {
        format!("{}{}", self.out, self.err)
    }
}

/// A generated node (ECDSA P-256, leaves 100 days from expiry: `check` exits 0) in a temp dir:
/// `<tmp>/k` is the kubernetes dir, `<tmp>/state` the state dir.
struct Node {
    tmp: tempfile::TempDir,
    now: OffsetDateTime,
    /// The kubernetes dir (below `tmp`, or elsewhere for the non-UTF-8 case).
    dir: PathBuf,
    state: PathBuf,
}

impl Node {
    fn new() -> Node {
        Node::with(|_| {})
    }

    fn with(edit: impl FnOnce(&mut NodeSpec)) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("k");
        let state = tmp.path().join("state");
        Node::generate(tmp, dir, state, edit)
    }

    fn generate(
        tmp: tempfile::TempDir,
        dir: PathBuf,
        state: PathBuf,
        edit: impl FnOnce(&mut NodeSpec),
    ) -> Node {
        let now = now();
        let mut spec = NodeSpec::new(now, 100);
        spec.key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.manifests = false;
        edit(&mut spec);
        nodegen::generate(&dir, &spec).unwrap();
        Node {
            tmp,
            now,
            dir,
            state,
        }
    }

    fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }

    /// Runs the binary on this node (its dirs, `--now`) with `config` as the config file's text
    /// (`None`: defaults) and `args` after the global options; fails on a panic or a hang.
    fn exec(&self, config: Option<&str>, args: &[&OsStr]) -> Ran {
        let config_path = match config {
            Some(text) => {
                let path = self.tmp.path().join("config.toml");
                std::fs::write(&path, text).unwrap();
                path
            }
            None => PathBuf::from("/nonexistent/kube-cert-renewer.toml"),
        };
        let mut all: Vec<OsString> = vec![
            "--config".into(),
            config_path.into(),
            "--now".into(),
            self.now.format(&Rfc3339).unwrap().into(),
            "--kubernetes-dir".into(),
            self.dir.clone().into(),
            "--state-dir".into(),
            self.state.clone().into(),
            // never a real runtime: the restart part must be refused before anything changes
            "--runtime-endpoint".into(),
            "unix:///nonexistent/kcr-hostile.sock".into(),
        ];
        all.extend(args.iter().map(|a| a.to_os_string()));
        run_bounded(&all)
    }

    fn run(&self, config: Option<&str>, args: &[&str]) -> Ran {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.exec(config, &args)
    }

    fn check(&self) -> Ran {
        self.run(None, &["check"])
    }

    fn renew(&self) -> Ran {
        self.run(None, &["renew", "all", "--no-restart"])
    }

    /// Everything below the kubernetes dir and the state dir, as it is now.
    fn tree(&self) -> Tree {
        let mut t = tree(&self.dir);
        t.extend(tree(&self.state));
        t
    }

    /// `check` reports `file` unreadable saying `why` (exit 2, "unreadable" in the README).
    fn assert_check_unreadable(&self, file: &Path, why: &str) -> Ran {
        let before = self.tree();
        let ran = self.check();
        assert_eq!(ran.code, 2, "check must say unreadable (exit 2): {ran:?}");
        assert_names(&ran, file, why);
        assert_eq!(before, self.tree(), "check must never write");
        ran
    }

    /// A run that must be refused with `code`: the message names `file` and says `why`, and
    /// nothing changed.
    fn assert_refused(&self, args: &[&str], code: i32, file: &Path, why: &str) -> Ran {
        let before = self.tree();
        let ran = self.run(None, args);
        assert_eq!(
            ran.code, code,
            "{args:?} must be refused with {code}: {ran:?}"
        );
        assert_names(&ran, file, why);
        self.assert_unchanged(&before, &ran);
        ran
    }

    /// Nothing changed: the tree as `before`, no backup, no journal.
    fn assert_unchanged(&self, before: &Tree, ran: &Ran) {
        let mut after = self.tree();
        // taking the node lock may create the state dir and its lock file: not a change
        after.retain(|p, _| !p.starts_with(&self.state) || before.contains_key(p));
        assert_eq!(
            before, &after,
            "a refusal must leave everything byte- and mode-identical: {ran:?}"
        );
        let backups = self.state.join("backups");
        assert!(
            std::fs::read_dir(&backups).map_or(true, |mut d| d.next().is_none()),
            "a refusal must leave no backup: {ran:?}"
        );
        assert!(!self.state.join("journal.json").exists(), "{ran:?}");
    }
}

/// Runs the binary with `args`, killing it after [`HANG`]; fails on a panic or a hang.
fn run_bounded(args: &[OsString]) -> Ran {
    let out_dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run kube-cert-renewer");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kube-cert-renewer {args:?} hung (killed after {HANG:?}): {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    let ran = Ran {
        code: status.code().unwrap_or(-1),
        out: read(&out_path),
        err: read(&err_path),
        took,
    };
    assert!(
        ran.code != 101 && !ran.err.contains("panicked"),
        "kube-cert-renewer {args:?} panicked: {ran:?}"
    );
    assert!(ran.code >= 0, "killed by a signal: {ran:?}");
    ran
}

/// After `renew --no-restart`, `check` says the restart is pending (exit 1) and nothing else.
fn assert_restart_pending(node: &Node) {
    let ran = node.check();
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.out.contains("kube-cert-renewer restart"), "{ran:?}");
    assert!(!ran.out.contains("Problems:"), "{ran:?}");
}

/// The message names `file` and says `why`.
fn assert_names(ran: &Ran, file: &Path, why: &str) {
    let said = ran.said();
    let name = file.display().to_string();
    assert!(
        said.contains(&name),
        "the message must name {name}: {ran:?}"
    );
    assert!(said.contains(why), "the message must say {why:?}: {ran:?}");
}

/// A file's bytes (as a hash: the corpus holds 100 MB files) and mode; a link's target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    File { sha256: String, mode: u32, uid: u32 },
    Link(PathBuf),
    Dir { mode: u32, uid: u32 },
    Other { mode: u32 },
}

type Tree = BTreeMap<PathBuf, Item>;

/// Everything below `dir`, links not followed.
fn tree(dir: &Path) -> Tree {
    let mut out = Tree::new();
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return out;
    };
    let item = if meta.file_type().is_symlink() {
        Item::Link(std::fs::read_link(dir).unwrap())
    } else if meta.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            out.extend(tree(&entry.unwrap().path()));
        }
        Item::Dir {
            mode: meta.mode(),
            uid: meta.uid(),
        }
    } else if meta.is_file() {
        let data = std::fs::read(dir).unwrap();
        Item::File {
            sha256: kube_cert_renewer::state::journal::sha256(&data),
            mode: meta.mode(),
            uid: meta.uid(),
        }
    } else {
        Item::Other { mode: meta.mode() }
    };
    out.insert(dir.to_path_buf(), item);
    out
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// Root is needed to chown to another user, to mount a tmpfs and to know root still writes
/// read-only files; without it the case cannot run ([`cannot_run`]).
fn am_root(what: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if !root {
        cannot_run(&format!("{what} needs root"));
    }
    root
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

/// The DER of the first PEM block of a file.
fn der_of(pem_file: &Path) -> Vec<u8> {
    let data = std::fs::read(pem_file).unwrap();
    kube_cert_renewer::pki::pem::parse(&data).unwrap()[0]
        .der
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Broken certificate and key files
// ---------------------------------------------------------------------------------------------

#[test]
fn broken_certificate_files_are_unreadable_rows_and_refused_renewals() {
    let pem = |label: &str, der: &[u8]| kube_cert_renewer::pki::pem::encode(label, der);
    let probe = Node::new();
    let cert_pem = std::fs::read_to_string(probe.pki("apiserver.crt")).unwrap();
    let key_pem = std::fs::read_to_string(probe.pki("apiserver.key")).unwrap();
    let der = der_of(&probe.pki("apiserver.crt"));
    // a DER-looking start (SEQUENCE, two length bytes), then noise
    let garbage_der: Vec<u8> = [0x30, 0x82, 0x01, 0x00]
        .into_iter()
        .chain((0..256u32).map(|i| (i * 37 + 11) as u8))
        .collect();
    // one flipped bit in the signature: parses, but no CA verifies it
    let mut flipped = der.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x01;
    let lines: Vec<&str> = cert_pem.lines().collect();
    let cut_inside = format!(
        "{}\n{}\n{}\n",
        lines[0],
        lines[1..lines.len() / 2].join("\n"),
        lines[lines.len() - 1]
    );
    // (what, the file's bytes, what the message says)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty file", Vec::new(), "no PEM data"),
        (
            "text garbage",
            b"this is not a certificate\n".repeat(40),
            "no PEM data",
        ),
        (
            "binary garbage",
            (0..4096u32).map(|i| (i * 7 + 0x81) as u8).collect(),
            "not PEM text (binary data)",
        ),
        (
            "garbage DER in a PEM envelope",
            pem("CERTIFICATE", &garbage_der).into_bytes(),
            "not a valid X.509 certificate",
        ),
        (
            "truncated PEM (no END line)",
            cert_pem.as_bytes()[..cert_pem.len() / 2].to_vec(),
            "truncated (no END line)",
        ),
        (
            "PEM cut short inside its envelope",
            cut_inside.into_bytes(),
            "not a valid X.509 certificate",
        ),
        (
            "bad base64",
            cert_pem.replacen('M', "*", 3).into_bytes(),
            "bad base64",
        ),
        ("DER where PEM is expected", der.clone(), "DER, not PEM"),
        (
            "a private key where the certificate belongs",
            key_pem.clone().into_bytes(),
            "no CERTIFICATE block",
        ),
        (
            "an encrypted-key header",
            format!(
                "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n{}",
                lines[1..].join("\n")
            )
            .into_bytes(),
            "PEM headers",
        ),
    ];
    drop(probe);
    for (what, bytes, why) in cases {
        let node = Node::new();
        let file = node.pki("apiserver.crt");
        std::fs::write(&file, &bytes).unwrap();
        let ran = node.assert_check_unreadable(&file, why);
        assert!(
            ran.out.contains("!UNREADABLE! apiserver"),
            "{what}: {ran:?}"
        );
        // the rest of the node is still reported
        assert!(ran.out.contains("admin.conf"), "{what}: {ran:?}");
        let ran = node.assert_refused(&["renew", "all", "--no-restart"], 1, &file, why);
        assert!(
            ran.err.contains("renewal refused, nothing was changed"),
            "{what}: {ran:?}"
        );
        // the same file in a kubeconfig's client-certificate-data
        let conf = node.dir.join("scheduler.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        let b64 = |d: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(d)
        };
        let old = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))
            .unwrap()
            .to_string();
        if !bytes.is_empty() {
            std::fs::write(&conf, text.replace(&old, &b64(&bytes))).unwrap();
            let ran = node.check();
            assert_eq!(ran.code, 2, "{what} in scheduler.conf: {ran:?}");
            assert_names(&ran, &conf, why);
        }
    }
    // one bit flipped in the signature: it parses, but no CA verifies it (README: "a leaf no
    // known CA signed" is check's 1, and a refusal of the renewal)
    let node = Node::new();
    let file = node.pki("apiserver.crt");
    std::fs::write(&file, pem("CERTIFICATE", &flipped)).unwrap();
    let ran = node.check();
    assert_eq!(ran.code, 1, "{ran:?}");
    assert_names(&ran, &file, "is not signed by any known CA");
    node.assert_refused(
        &["renew", "all", "--no-restart"],
        1,
        &file,
        "is not signed by any known CA",
    );
}

#[test]
fn broken_key_files_refuse_the_renewal_naming_the_key() {
    let probe = Node::new();
    let cert_pem = std::fs::read(probe.pki("apiserver.crt")).unwrap();
    let key_der = der_of(&probe.pki("apiserver.key"));
    let other_key = std::fs::read(probe.pki("front-proxy-client.key")).unwrap();
    drop(probe);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"garbage\n".to_vec(), "no PRIVATE KEY block"),
        ("DER where PEM is expected", key_der, "not PEM text"),
        (
            "a certificate where the key belongs",
            cert_pem,
            "no PRIVATE KEY block",
        ),
        ("another certificate's key", other_key, "does not match"),
    ];
    for (what, bytes, why) in cases {
        let node = Node::new();
        let key = node.pki("apiserver.key");
        std::fs::write(&key, &bytes).unwrap();
        // check reports certificates; it does not read keys (README, `check`)
        let ran = node.check();
        assert_eq!(ran.code, 0, "{what}: {ran:?}");
        let ran = node.assert_refused(&["renew", "all", "--no-restart"], 1, &key, why);
        assert!(ran.err.contains("apiserver"), "{what}: {ran:?}");
    }
}

/// The public key of a key file as openssl derives it (`None`: openssl cannot read the key).
fn openssl_public_of_key(key: &Path) -> Option<String> {
    let (ok, text) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    ok.then_some(text)
}

/// The public key of a certificate as openssl reads it.
fn openssl_public_of_cert(cert: &Path) -> String {
    let (ok, text) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    assert!(ok, "{text}");
    text
}

/// A CA key that is there but cannot sign — another key of the same algorithm swapped in, a
/// truncated file, a key of another algorithm — is a critical CA row in `check` (every output),
/// refuses the renewal, and `recover` puts back the snapshot's copy that matches the
/// certificate (openssl agrees), keeping the damaged one in the backup.
#[test]
fn a_damaged_ca_key_is_critical_in_check_and_recover_restores_the_good_copy() {
    if !have("openssl", "hostile") {
        return;
    }
    let cases: [(&str, &str, &str); 3] = [
        ("ca.key", "swapped", "another ECDSA-P256 key: not this CA's"),
        (
            "etcd/ca.key",
            "truncated",
            "does not parse as a private key",
        ),
        (
            "front-proxy-ca.key",
            "other algorithm",
            "the key is RSA-2048, the certificate ECDSA-P256",
        ),
    ];
    for (file, damage, why) in cases {
        let node = Node::new();
        let key = node.pki(file);
        let cert = key.with_extension("crt");
        let ca = match file {
            "ca.key" => "ca",
            "etcd/ca.key" => "etcd-ca",
            _ => "front-proxy-ca",
        };
        let ran = node.run(None, &["snapshot"]);
        assert_eq!(ran.code, 0, "{ran:?}");
        let good = std::fs::read(&key).unwrap();
        let bad = match damage {
            "swapped" => {
                let (ok, text) = openssl(&[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ]);
                assert!(ok, "{text}");
                text.into_bytes()
            }
            "truncated" => good[..good.len() / 2].to_vec(),
            _ => {
                let (ok, text) = openssl(&[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ]);
                assert!(ok, "{text}");
                text.into_bytes()
            }
        };
        std::fs::write(&key, &bad).unwrap();
        // openssl agrees the key cannot sign for the certificate
        assert_ne!(
            openssl_public_of_key(&key),
            Some(openssl_public_of_cert(&cert)),
            "{damage}"
        );

        // check: exit 2, the CA row critical, the reason naming the key file
        let before = node.tree();
        let ran = node.check();
        assert_eq!(ran.code, 2, "{damage}: {ran:?}");
        assert_names(&ran, &key, why);
        let row = ran
            .out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ca))
            .unwrap_or_else(|| panic!("no {ca} row: {ran:?}"));
        assert!(row.ends_with("critical"), "{damage}: {row}");
        let ran = node.run(None, &["check", "-o", "json"]);
        assert_eq!(ran.code, 2, "{damage}: {ran:?}");
        let json: serde_json::Value = serde_json::from_str(&ran.out).unwrap();
        let row = by_name(&json, "certificateAuthorities", ca);
        assert_eq!(row["status"], "critical", "{damage}: {row}");
        assert_eq!(
            row["missing"], false,
            "its certificate is still shown: {row}"
        );
        let reason = row["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&key.display().to_string()) && reason.contains(why),
            "{damage}: {row}"
        );
        let ran = node.run(None, &["check", "-o", "prometheus"]);
        let series = format!(
            "kube_cert_renewer_ca_key_damaged{{name=\"{ca}\",filepath=\"{}\"}} 1",
            key.display()
        );
        assert!(ran.out.lines().any(|l| l == series), "{damage}: {ran:?}");
        assert!(
            ran.out.lines().any(|l| l == "x509_read_errors 1"),
            "{ran:?}"
        );
        assert_eq!(before, node.tree(), "check must never write");

        // renew: refused naming the key, nothing changed
        node.assert_refused(&["renew", "all", "--no-restart"], 1, &key, why);

        // recover --dry-run: offers the snapshot's good copy, writes nothing
        let ran = node.run(None, &["recover", "--dry-run", "--no-restart"]);
        assert_eq!(ran.code, 0, "{damage}: {ran:?}");
        assert_names(&ran, &key, "restored from snapshot 000001-");
        node.assert_unchanged(&before, &ran);

        // recover: the good key back, the damaged one in the backup
        let ran = node.run(None, &["recover", "--no-restart"]);
        assert_eq!(ran.code, 0, "{damage}: {ran:?}");
        assert_eq!(std::fs::read(&key).unwrap(), good, "{damage}: {ran:?}");
        assert_eq!(mode_of(&key), 0o600);
        assert_eq!(
            openssl_public_of_key(&key),
            Some(openssl_public_of_cert(&cert)),
            "{damage}"
        );
        let kept = files_below(&node.state.join("backups"))
            .into_iter()
            .any(|p| p.ends_with(Path::new("pki").join(file)) && std::fs::read(&p).unwrap() == bad);
        assert!(
            kept,
            "{damage}: the damaged key is not in a backup: {ran:?}"
        );
        let ran = node.check();
        assert_eq!(ran.code, 0, "{damage}: {ran:?}");
    }
    // no snapshot with a matching copy: refused, naming the key, nothing changed
    let node = Node::new();
    let key = node.pki("ca.key");
    std::fs::copy(node.pki("front-proxy-ca.key"), &key).unwrap();
    node.assert_refused(
        &["recover", "--no-restart"],
        1,
        &key,
        "no snapshot has a copy that matches",
    );
}

#[test]
fn a_ca_file_holding_a_leaf_is_not_a_ca() {
    // the leaf alone, then the leaf with its own key as the CA key (a consistent pair)
    for with_its_key in [false, true] {
        let node = Node::new();
        let ca = node.pki("ca.crt");
        std::fs::copy(node.pki("apiserver.crt"), &ca).unwrap();
        if with_its_key {
            std::fs::copy(node.pki("apiserver.key"), node.pki("ca.key")).unwrap();
        }
        node.assert_check_unreadable(&ca, "is not a CA");
        node.assert_refused(&["renew", "all", "--no-restart"], 1, &ca, "is not a CA");
    }
}

#[test]
fn a_certificate_with_ten_thousand_sans_is_read_and_renewed_faithfully() {
    if !have("openssl", "hostile") {
        return;
    }
    const SANS: usize = 10_000;
    let node = Node::new();
    let spec = {
        let mut s = NodeSpec::new(node.now, 100);
        s.key_algorithm = KeyAlgorithm::EcdsaP256;
        s
    };
    let ca = GeneratedCa::load(&node.dir.join("pki"), "ca").unwrap();
    let template = LeafTemplate {
        cn: "kube-apiserver".into(),
        org: None,
        sans: (0..SANS)
            .map(|i| format!("host-{i}.example.internal"))
            .collect(),
        server: true,
        client: false,
    };
    let (cert, key) = nodegen::make_leaf(&template, &ca, &spec).unwrap();
    let file = node.pki("apiserver.crt");
    std::fs::write(&file, &cert).unwrap();
    std::fs::write(node.pki("apiserver.key"), &key).unwrap();
    let size = cert.len();

    let ran = node.check();
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.took < Duration::from_secs(5),
        "check took {:?}",
        ran.took
    );
    let old = node.tmp.path().join("old.crt");
    std::fs::copy(&file, &old).unwrap();
    let ran = node.run(None, &["renew", "apiserver", "--no-restart"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.took < Duration::from_secs(10),
        "renew took {:?}",
        ran.took
    );
    // every SAN kept, in order (openssl is the oracle)
    assert_eq!(identity_text(&file), identity_text(&old));
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        file.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok, "{text}");
    assert_eq!(text.matches("DNS:").count(), SANS);
    assert_ne!(openssl_serial(&file), openssl_serial(&old));
    eprintln!(
        "hostile: {SANS} SANs ({size} bytes of PEM): check and renew in {:?}",
        ran.took
    );
}

// ---------------------------------------------------------------------------------------------
// Files that never end: huge, a FIFO, a device
// ---------------------------------------------------------------------------------------------

#[test]
fn a_100_mb_file_a_fifo_and_a_device_are_refused_without_reading_them() {
    const BIG: u64 = 100 << 20;
    for target in ["apiserver.crt", "apiserver.key", "admin.conf"] {
        let node = Node::new();
        let file = if target.ends_with(".conf") {
            node.dir.join(target)
        } else {
            node.pki(target)
        };
        // a real file, then 100 MB (a sparse tail: writing it costs nothing)
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.set_len(BIG).unwrap();
        drop(f);
        // (check reads no keys, but a key it could not read makes the pair unusable)
        let ran = node.assert_check_unreadable(&file, "104857600 bytes");
        assert!(
            ran.took < Duration::from_secs(3),
            "{target}: check took {:?}",
            ran.took
        );
        let ran = node.assert_refused(
            &["renew", "all", "--no-restart"],
            1,
            &file,
            "104857600 bytes",
        );
        assert!(
            ran.took < Duration::from_secs(3),
            "{target}: renew took {:?}",
            ran.took
        );
    }
    // a FIFO nobody writes (opening it would block forever) and /dev/zero (never ends)
    for (target, kind) in [
        ("apiserver.crt", "fifo"),
        ("apiserver.key", "/dev/zero"),
        ("ca.key", "fifo"),
    ] {
        let node = Node::new();
        let file = node.pki(target);
        std::fs::remove_file(&file).unwrap();
        if kind == "fifo" {
            let ok = Command::new("mkfifo")
                .arg(&file)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mkfifo {}", file.display());
        } else {
            std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        }
        node.assert_check_unreadable(&file, "not a regular file");
        node.assert_refused(
            &["renew", "all", "--no-restart"],
            1,
            &file,
            "not a regular file",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile YAML
// ---------------------------------------------------------------------------------------------

/// A "billion laughs" document: 9 levels of 9 aliases each, 9^9 ≈ 387 million nodes expanded.
fn alias_bomb() -> String {
    let mut s = String::from("x-lol0: &l0 \"lol\"\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 9].join(", ");
        s.push_str(&format!("x-lol{i}: &l{i} [{refs}]\n"));
    }
    s
}

#[test]
fn a_kubeconfig_alias_bomb_is_refused_at_once() {
    for place in ["top", "preferences", "user"] {
        let node = Node::new();
        let conf = node.dir.join("admin.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        let bomb = alias_bomb();
        let hostile = match place {
            // extra top-level keys (ignored by the reader), the bomb in the ignored value, and
            // the bomb where the reader looks
            "top" => format!("{bomb}{text}"),
            "preferences" => text.replace(
                "preferences: {}\n",
                &format!(
                    "preferences:\n{}",
                    bomb.lines().map(|l| format!("  {l}\n")).collect::<String>()
                ),
            ),
            _ => format!(
                "{bomb}{}",
                text.replace("  user:\n", "  user:\n    x-lol: *l9\n")
            ),
        };
        std::fs::write(&conf, &hostile).unwrap();
        let ran = node.assert_check_unreadable(&conf, "not a valid kubeconfig (YAML)");
        assert!(
            ran.took < Duration::from_secs(3),
            "{place}: check took {:?}",
            ran.took
        );
        let ran = node.assert_refused(
            &["renew", "all", "--no-restart"],
            1,
            &conf,
            "not a valid kubeconfig (YAML)",
        );
        assert!(
            ran.took < Duration::from_secs(3),
            "{place}: renew took {:?}",
            ran.took
        );
    }
}

#[test]
fn duplicate_yaml_keys_in_a_kubeconfig_are_refused() {
    let probe = Node::new();
    let other_cert = std::fs::read(probe.pki("front-proxy-client.crt")).unwrap();
    drop(probe);
    let b64 = |d: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(d)
    };
    for key in ["current-context", "client-certificate-data", "users"] {
        let node = Node::new();
        let conf = node.dir.join("admin.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        let hostile = match key {
            "current-context" => text.replace(
                "current-context:",
                "current-context: elsewhere\ncurrent-context:",
            ),
            // a second certificate under the same key: which one would Go use?
            "client-certificate-data" => text.replace(
                "    client-key-data:",
                &format!(
                    "    client-certificate-data: {}\n    client-key-data:",
                    b64(&other_cert)
                ),
            ),
            _ => format!("{text}users: []\n"),
        };
        assert_ne!(hostile, text);
        std::fs::write(&conf, &hostile).unwrap();
        node.assert_check_unreadable(&conf, "duplicate");
        node.assert_refused(&["renew", "all", "--no-restart"], 1, &conf, "duplicate");
    }
}

// ---------------------------------------------------------------------------------------------
// Links, names, modes, filesystems
// ---------------------------------------------------------------------------------------------

/// A link in pki pointing outside the kubernetes dir is followed, as kubeadm and the
/// components follow it: `check` reads through it, `renew` replaces the file it points at and
/// keeps the link — but only where nobody but root may write: a target directory others can
/// write is refused, naming it.
#[test]
fn a_link_out_of_pki_is_followed_only_into_a_directory_root_alone_writes() {
    for open in [false, true] {
        let node = Node::new();
        let outside = node.tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        for name in ["apiserver.crt", "apiserver.key"] {
            std::fs::rename(node.pki(name), outside.join(name)).unwrap();
            std::os::unix::fs::symlink(outside.join(name), node.pki(name)).unwrap();
        }
        let ran = node.check();
        assert_eq!(ran.code, 0, "check reads through the link: {ran:?}");
        if open {
            chmod(&outside, 0o777);
            let before = tree(&outside);
            let ran = node.assert_refused(
                &["renew", "all", "--no-restart"],
                1,
                &outside,
                "writable by every user (mode 0777",
            );
            assert!(ran.err.contains("not written"), "{ran:?}");
            assert_eq!(before, tree(&outside), "the link's target must not change");
            continue;
        }
        let old = std::fs::read(outside.join("apiserver.crt")).unwrap();
        let ran = node.renew();
        assert_eq!(ran.code, 0, "{ran:?}");
        assert!(
            std::fs::symlink_metadata(node.pki("apiserver.crt"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
        assert_ne!(std::fs::read(outside.join("apiserver.crt")).unwrap(), old);
        assert_eq!(mode_of(&outside.join("apiserver.key")), 0o600);
        assert_restart_pending(&node);
    }
}

/// A manifests dir that is a link is read through it (kubelet reads its staticPodPath the
/// same way); a renewal that would restart is still refused before writing when the runtime
/// does not answer, and `restart` changes nothing.
#[test]
fn a_manifests_dir_that_is_a_link_is_read_through_it_and_nothing_changes() {
    let node = Node::with(|s| s.manifests = true);
    let real = node.tmp.path().join("elsewhere");
    std::fs::rename(node.dir.join("manifests"), &real).unwrap();
    std::os::unix::fs::symlink(&real, node.dir.join("manifests")).unwrap();
    let ran = node.check();
    assert_eq!(ran.code, 0, "{ran:?}");
    let before = {
        let mut t = node.tree();
        t.extend(tree(&real));
        t
    };
    let ran = node.run(None, &["renew", "all"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.err.contains("renewal not started, nothing was changed")
            && ran.err.contains("/nonexistent/kcr-hostile.sock"),
        "{ran:?}"
    );
    // (no Lease: with the default `coordinate = true` a restart first waits up to
    // lease_wait_secs for a cluster API that is not there, before it asks the runtime)
    let ran2 = node.run(Some("coordinate = false\n"), &["restart"]);
    assert_eq!(ran2.code, 1, "{ran2:?}");
    assert!(
        ran2.said().contains("/nonexistent/kcr-hostile.sock"),
        "{ran2:?}"
    );
    let mut after = node.tree();
    after.extend(tree(&real));
    after.retain(|p, _| !p.starts_with(&node.state) || before.contains_key(p));
    assert_eq!(before, after, "{ran:?}\n{ran2:?}");
    assert!(!node.dir.join(".kube-cert-renewer-parked").exists());
}

#[test]
fn non_utf8_names_are_shown_and_do_not_stop_anything() {
    // files with names that are not UTF-8 in pki, watched through extra_paths
    let node = Node::new();
    let garbage = node
        .dir
        .join("pki")
        .join(OsStr::from_bytes(b"bad-\xff\xfe.crt"));
    std::fs::write(&garbage, b"not a certificate\n").unwrap();
    let copy = node
        .dir
        .join("pki")
        .join(OsStr::from_bytes(b"copy-\xe9.crt"));
    std::fs::copy(node.pki("apiserver.crt"), &copy).unwrap();
    let config = format!("extra_paths = [\"{}/pki/*.crt\"]\n", node.dir.display());
    for output in ["text", "json", "prometheus"] {
        let ran = node.run(Some(&config), &["check", "-o", output]);
        assert_eq!(ran.code, 2, "{output}: {ran:?}");
        // (prometheus only counts read errors, as x509-certificate-exporter does)
        assert!(
            output == "prometheus" || ran.out.contains("bad-\u{fffd}\u{fffd}.crt"),
            "{output}: {ran:?}"
        );
        assert!(ran.out.contains("copy-\u{fffd}.crt"), "{output}: {ran:?}");
    }
    let ran = node.renew();
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(garbage.exists() && copy.exists());

    // the whole node below a directory whose name is not UTF-8
    let tmp = tempfile::tempdir().unwrap();
    let odd = tmp.path().join(OsStr::from_bytes(b"n\xf6de"));
    let node = Node::generate(tmp, odd.join("k"), odd.join("state"), |_| {});
    let ran = node.check();
    assert_eq!(ran.code, 0, "{ran:?}");
    // the journal records paths as JSON text: renew and restart refuse to start, naming the
    // directory, before anything is written
    for args in [&["renew", "all", "--no-restart"][..], &["restart"]] {
        let ran = node.assert_refused(args, 3, &odd, "the path is not UTF-8");
        assert!(ran.err.contains("refusing to work there"), "{ran:?}");
    }
}

#[test]
fn read_only_files_are_renewed_and_keep_their_modes() {
    if !am_root("the read-only-files case (root writes files of mode 0444)") {
        return;
    }
    let node = Node::new();
    let modes = [
        ("pki/apiserver.crt", 0o444),
        ("pki/apiserver.key", 0o400),
        ("pki/etcd/server.crt", 0o440),
        ("admin.conf", 0o400),
    ];
    for (file, mode) in modes {
        chmod(&node.dir.join(file), mode);
    }
    let before = snapshot(&node.dir);
    let ran = node.renew();
    assert_eq!(ran.code, 0, "{ran:?}");
    for (file, mode) in modes {
        let path = node.dir.join(file);
        assert_ne!(
            std::fs::read(&path).unwrap(),
            before[&path],
            "{file} renewed"
        );
        assert_eq!(mode_of(&path), mode, "{file} keeps its mode");
    }
    assert_restart_pending(&node);
}

#[test]
fn a_state_dir_on_another_filesystem_works() {
    if !am_root("the state-dir-on-a-tmpfs case") {
        return;
    }
    // the mount point in a temp dir of its own: unmounted (dropped) after the node, before
    // its own dir goes
    let mount_dir = tempfile::tempdir().unwrap();
    let mount = mount_dir.path().to_path_buf();
    let Some(_tmpfs) = Tmpfs::mount(&mount, "8m") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k");
    let node = Node::generate(tmp, dir, mount.join("state"), |_| {});
    assert_ne!(
        std::fs::metadata(&node.dir).unwrap().dev(),
        std::fs::metadata(&mount).unwrap().dev()
    );
    for _ in 0..2 {
        let ran = node.renew();
        assert_eq!(ran.code, 0, "{ran:?}");
        assert!(
            ran.out.contains(&mount.display().to_string()),
            "backup on the tmpfs: {ran:?}"
        );
    }
    assert!(!node.state.join("journal.json").exists());
    assert_restart_pending(&node);
}

// ---------------------------------------------------------------------------------------------
// Directories other users may write
// ---------------------------------------------------------------------------------------------

#[test]
fn a_state_or_kubernetes_dir_another_user_may_write_is_refused() {
    if !am_root("the untrusted-directories case (chown to uid 65534)") {
        return;
    }
    // (which dir, how it is opened up, what the message says)
    let cases: [(&str, &str, &str); 7] = [
        ("state", "0777", "writable by every user (mode 0777"),
        ("state", "65534", "owned by uid 65534"),
        ("k", "0777", "writable by every user (mode 0777"),
        ("k", "65534", "owned by uid 65534"),
        ("k/pki", "0777", "writable by every user (mode 0777"),
        ("k/pki/etcd", "g+w 65534", "writable by group 65534"),
        ("k/manifests", "1777", "writable by every user (mode 1777"),
    ];
    for (which, how, why) in cases {
        let node = Node::with(|s| s.manifests = true);
        let dir = node.tmp.path().join(which);
        std::fs::create_dir_all(&dir).unwrap();
        match how {
            "0777" => chmod(&dir, 0o777),
            "1777" => chmod(&dir, 0o1777),
            "65534" => chown(&dir, 65534),
            _ => {
                std::os::unix::fs::lchown(&dir, Some(0), Some(65534)).unwrap();
                chmod(&dir, 0o775);
            }
        }
        for args in [
            &["renew", "all", "--no-restart"][..],
            &["renew", "all", "--dry-run"],
            &["restart"],
        ] {
            let ran = node.assert_refused(args, 3, &dir, why);
            assert!(
                ran.err.contains("refusing to work there"),
                "{which} {how}: {ran:?}"
            );
        }
        // check only reads: it still reports
        let ran = node.check();
        assert_eq!(ran.code, 0, "{which} {how}: {ran:?}");
    }
}

/// What an open state dir would allow: a journal planted by another user that makes root copy
/// the user's file over one of root's. With the dir open, no command acts on it; the same
/// journal in a dir only root writes is acted on (proving the case is real).
#[test]
fn a_journal_planted_in_an_open_state_dir_is_not_acted_on() {
    if !am_root("the planted-journal case") {
        return;
    }
    use kube_cert_renewer::state::{journal, store};
    let node = Node::new();
    let victim = node.pki("ca.key");
    let precious = std::fs::read(&victim).unwrap();
    // the attacker's "backup" of ca.key, holding the attacker's bytes
    let backup = store::backup(
        &node.state.join("backups"),
        "planted",
        &node.dir,
        std::slice::from_ref(&victim),
    )
    .unwrap();
    std::fs::write(backup.join("pki/ca.key"), b"the attacker's key\n").unwrap();
    let intent = journal::restore_intent(&backup).unwrap();
    journal::record(&node.state, &intent).unwrap();
    chmod(&node.state, 0o777);
    let before = node.tree();
    for args in [&["renew", "all", "--no-restart"][..], &["restart"]] {
        let ran = node.run(None, args);
        assert_eq!(ran.code, 3, "{args:?}: {ran:?}");
        assert_names(&ran, &node.state, "writable by every user");
        assert_eq!(std::fs::read(&victim).unwrap(), precious);
    }
    // check only reads: it says on stderr why the journal is left alone (its exit code is
    // about the certificates; a parked manifest would still show as one)
    let ran = node.check();
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.err.contains("pending recovery not done"), "{ran:?}");
    assert_names(&ran, &node.state, "writable by every user");
    assert_eq!(before, node.tree(), "{ran:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), precious);
    // the control: in a dir only root writes, the journal is acted on
    chmod(&node.state, 0o700);
    let ran = node.check();
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"the attacker's key\n",
        "{ran:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration out of range
// ---------------------------------------------------------------------------------------------

#[test]
fn every_numeric_config_key_just_outside_its_range_is_exit_3_naming_it() {
    let node = Node::new();
    // each key at the first value outside its range, on both sides where there are two
    let cases: &[(&str, &str)] = &[
        ("warn_days = 36501", "warn_days"),
        ("critical_days = 36501\nwarn_days = 36500", "critical_days"),
        ("warn_days = 6", "critical_days"),
        ("ca_warn_days = 36501", "ca_warn_days"),
        ("ca_critical_days = 366", "ca_critical_days"),
        ("renew_before_days = 36501", "renew_before_days"),
        ("validity_days = 0", "validity_days"),
        ("validity_days = 36501", "validity_days"),
        ("keep_backups = 0", "keep_backups"),
        ("keep_backups = 1001", "keep_backups"),
        ("restart_poll_ms = 99", "restart_poll_ms"),
        ("restart_poll_ms = 251", "restart_poll_ms"),
        ("restart_stop_timeout_secs = 0", "restart_stop_timeout_secs"),
        (
            "restart_stop_timeout_secs = 3601",
            "restart_stop_timeout_secs",
        ),
        (
            "restart_start_timeout_secs = 0",
            "restart_start_timeout_secs",
        ),
        (
            "restart_start_timeout_secs = 3601",
            "restart_start_timeout_secs",
        ),
        ("restart_settle_secs = 300", "restart_settle_secs"),
        ("lease_duration_secs = 2", "lease_duration_secs"),
        ("lease_duration_secs = 3601", "lease_duration_secs"),
        ("lease_wait_secs = 604801", "lease_wait_secs"),
        ("lease_settle_secs = 3601", "lease_settle_secs"),
        ("control_plane_nodes = 1001", "control_plane_nodes"),
        ("keep_snapshots = 0", "keep_snapshots"),
        ("keep_snapshots = 1001", "keep_snapshots"),
        ("auto_recover_after_secs = 86401", "auto_recover_after_secs"),
        ("snapshots = 1", "snapshots"),
        // not numbers of the key's type at all
        ("warn_days = -1", "warn_days"),
        ("critical_days = 4294967296", "critical_days"),
        ("keep_backups = 18446744073709551616", "keep_backups"),
        ("restart_poll_ms = 1e3", "restart_poll_ms"),
        ("validity_days = nan", "validity_days"),
    ];
    for (text, key) in cases {
        for args in [
            &["check"][..],
            &["renew", "all", "--no-restart"],
            &["schedule"],
        ] {
            let ran = node.run(Some(&format!("{text}\n")), args);
            assert_eq!(ran.code, 3, "{text} ({args:?}): {ran:?}");
            assert!(
                ran.err.contains(key) && ran.err.contains("config.toml"),
                "{text} ({args:?}) must name {key} and the file: {ran:?}"
            );
        }
    }
    // at the edges, inside: accepted
    let edges = "warn_days = 36500\ncritical_days = 36500\nca_warn_days = 36500\n\
                 ca_critical_days = 0\nrenew_before_days = 36500\nvalidity_days = 36500\n\
                 keep_backups = 1000\nrestart_poll_ms = 250\nrestart_stop_timeout_secs = 3600\n\
                 restart_start_timeout_secs = 3600\nrestart_settle_secs = 3599\n\
                 lease_duration_secs = 3600\nlease_wait_secs = 604800\nlease_settle_secs = 3600\n\
                 control_plane_nodes = 1000\nkeep_snapshots = 1000\n\
                 auto_recover_after_secs = 86400\n";
    let ran = node.run(Some(edges), &["check"]);
    assert!(ran.code != 3, "{ran:?}");
}

// ---------------------------------------------------------------------------------------------
// Another user's links (issue 21): nothing root writes or reads follows a link it did not make
// ---------------------------------------------------------------------------------------------

/// The `MESSAGE_ID` of the daemon's alert that its state dir may be written by another user
/// (`state-dir-untrusted`, as the README and the catalog give it).
const STATE_DIR_UNTRUSTED: &str = "fee2e8db21304cdaa7181662983a7cb7";

impl Node {
    /// `run` on this node with `config` as its config file's text: its events in
    /// `<tmp>/<name>/daemon.log`, its notify messages on a socket in `<tmp>/<name>/`.
    fn daemon(&self, config: &str, name: &str) -> (Daemon, NotifySocket) {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let notify = NotifySocket::bind(&dir);
        let mut command = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"));
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--kubernetes-dir")
            .arg(&self.dir)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["--runtime-endpoint", "unix:///nonexistent/kcr-hostile.sock"]);
        let daemon = Daemon::start(command, &notify, dir.join("daemon.log"));
        (daemon, notify)
    }
}

/// Waits until `done` holds, at most `timeout`; says whether it did.
fn eventually(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The textfile collector's dir belongs to another user (node-exporter's, as usual), who links
/// the metrics file to `ca.key`: the daemon replaces the link with its metrics and `ca.key`
/// keeps its bytes. With a directory above the textfile's open to everyone, the write is
/// refused, said once.
#[test]
fn a_metrics_textfile_another_user_links_to_a_key_is_replaced_never_written_through() {
    let Some(user) = TestUser::create() else {
        return;
    };
    let node = Node::new();
    chmod(node.tmp.path(), 0o755);
    let above = node.tmp.path().join("node-exporter");
    let textfile = above.join("textfile");
    std::fs::create_dir_all(&textfile).unwrap();
    user.chown(&textfile);
    let prom = textfile.join("kcr.prom");
    let victim = node.pki("ca.key");
    let precious = std::fs::read(&victim).unwrap();
    user.must(
        "ln",
        &["-s", victim.to_str().unwrap(), prom.to_str().unwrap()],
    );
    let config = format!("metrics_textfile = \"{}\"\n", prom.display());
    let (daemon, mut notify) = node.daemon(&config, "metrics");
    notify.wait_for("READY=1", Duration::from_secs(60), |m| {
        m.lines().any(|l| l == "READY=1")
    });
    eventually(Duration::from_secs(30), || {
        !is_link(&prom) || std::fs::read(&victim).unwrap() != precious
    });
    assert!(
        std::fs::read(&victim).unwrap() == precious,
        "ca.key must never receive the metrics: {}",
        daemon.said()
    );
    let meta = std::fs::symlink_metadata(&prom).unwrap();
    assert!(meta.is_file(), "the link is replaced by the metrics file");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains("x509_cert_not_after{"), "{text}");

    // the directory above the textfile's opened to everyone: the user could swap the textfile
    // dir for a link into pki; nothing is written there any more, and that is said once
    chmod(&above, 0o777);
    std::fs::remove_file(&prom).unwrap();
    user.must(
        "ln",
        &["-s", victim.to_str().unwrap(), prom.to_str().unwrap()],
    );
    for _ in 0..2 {
        daemon.signal("-HUP");
        daemon.wait_said("configuration reloaded", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1500));
    }
    let said = daemon.said();
    let refusal = format!("{} (on the way to", above.display());
    assert_eq!(
        said.matches("cannot write the metrics file").count(),
        1,
        "said once: {said}"
    );
    assert!(
        said.contains(&refusal) && said.contains("writable by every user (mode 0777"),
        "{said}"
    );
    assert!(is_link(&prom), "the refused write leaves the dir alone");
    assert!(std::fs::read(&victim).unwrap() == precious, "{said}");
}

/// A state dir open to everyone (0777, or 1777 like /tmp) with `daemon.json` linked by another
/// user to a file of root's: the daemon alerts (its own MESSAGE_ID, the STATUS= line), writes
/// nothing there and takes no snapshot — and once root makes the dir its own again, resumes by
/// itself, replacing the link rather than writing through it.
#[test]
fn the_daemon_refuses_a_state_dir_another_user_may_write_until_it_is_fixed() {
    let Some(user) = TestUser::create() else {
        return;
    };
    for mode in [0o777, 0o1777] {
        let node = Node::new();
        chmod(node.tmp.path(), 0o755);
        std::fs::create_dir(&node.state).unwrap();
        chmod(&node.state, mode);
        let victim = node.tmp.path().join("victim");
        std::fs::write(&victim, b"root's own bytes\n").unwrap();
        chmod(&victim, 0o600);
        let memory = node.state.join("daemon.json");
        user.must(
            "ln",
            &["-s", victim.to_str().unwrap(), memory.to_str().unwrap()],
        );
        // and a restart-pending record of theirs: not believed, not said as the node's
        let planted = node.state.join("restart-pending.json");
        user.must(
            "sh",
            &[
                "-c",
                &format!(
                    "echo '{{\"kube-apiserver\":{{\"since\":\"2026-01-01T00:00:00Z\",\
                     \"renewed\":[\"apiserver\"]}}}}' > {}",
                    planted.display()
                ),
            ],
        );
        let (daemon, mut notify) = node.daemon("", &format!("state-{mode:o}"));
        let refusing = |m: &str| {
            m.lines()
                .any(|l| l.starts_with("STATUS=") && l.contains("REFUSING"))
        };
        let status = notify.wait_for("STATUS= refusing", Duration::from_secs(60), refusing);
        assert!(
            status.contains(&node.state.display().to_string()),
            "{status}"
        );
        daemon.wait_said(STATE_DIR_UNTRUSTED, Duration::from_secs(10));
        let said = daemon.said();
        assert!(
            said.contains(&format!("writable by every user (mode {mode:04o}")),
            "{said}"
        );
        // another look changes nothing either
        daemon.signal("-HUP");
        daemon.wait_said("configuration reloaded", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            std::fs::read(&victim).unwrap() == b"root's own bytes\n",
            "{}",
            daemon.said()
        );
        assert!(is_link(&memory), "nothing written in the state dir");
        assert!(
            !node.state.join("snapshots").exists(),
            "no snapshot taken: {}",
            daemon.said()
        );
        assert_eq!(
            daemon.said().matches(STATE_DIR_UNTRUSTED).count(),
            1,
            "alerted once (then daily): {}",
            daemon.said()
        );
        assert!(
            !daemon
                .said()
                .contains("kube-apiserver still runs older certificates"),
            "the planted record is not believed: {}",
            daemon.said()
        );

        // root makes it its own again (removing what it did not put there, as the catalog
        // says): the daemon sees it and goes back to work by itself
        std::fs::remove_file(&planted).unwrap();
        chmod(&node.state, 0o700);
        daemon.wait_said("snapshot taken", Duration::from_secs(90));
        notify.wait_for("STATUS= no longer refusing", Duration::from_secs(30), |m| {
            m.lines().any(|l| l.starts_with("STATUS=")) && !refusing(m)
        });
        assert!(eventually(Duration::from_secs(10), || !is_link(&memory)));
        assert!(std::fs::read(&victim).unwrap() == b"root's own bytes\n");
        let saved = std::fs::read(&memory).unwrap();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&saved).is_ok(),
            "daemon.json is the daemon's own file now"
        );
        drop(daemon);
    }
}

/// A state dir (and its backups/ and snapshots/) the product creates is root's alone from the
/// first command that creates it: another user cannot even list it.
#[test]
fn a_state_dir_the_product_creates_is_root_s_alone_from_the_first_command() {
    let Some(user) = TestUser::create() else {
        return;
    };
    let commands: [&[&str]; 5] = [
        &["check"],
        &["renew", "all", "--dry-run"],
        &["renew", "all", "--no-restart"],
        &["snapshot"],
        &["recover", "--dry-run", "--no-restart"],
    ];
    for args in commands {
        let node = Node::new();
        chmod(node.tmp.path(), 0o755);
        let ran = node.run(None, args);
        assert!(ran.code != 3, "{args:?}: {ran:?}");
        if args == ["check"] && !node.state.exists() {
            continue;
        }
        assert_eq!(mode_of(&node.state), 0o700, "{args:?}: {ran:?}");
        for sub in ["backups", "snapshots"] {
            let dir = node.state.join(sub);
            if dir.exists() {
                assert_eq!(mode_of(&dir), 0o700, "{args:?}: {sub}");
            }
        }
        let listed = user.run("ls", &[node.state.to_str().unwrap()]);
        assert!(!listed.status.success(), "{args:?}: another user lists it");
    }
    // the daemon's first start too
    let node = Node::new();
    chmod(node.tmp.path(), 0o755);
    let (daemon, _notify) = node.daemon("", "first-start");
    daemon.wait_said("snapshot taken", Duration::from_secs(60));
    assert_eq!(mode_of(&node.state), 0o700);
    assert_eq!(mode_of(&node.state.join("snapshots")), 0o700);
    assert!(
        !user
            .run("ls", &[node.state.to_str().unwrap()])
            .status
            .success()
    );
}

/// The one snapshot directory of a state dir.
fn only_snapshot(state: &Path) -> PathBuf {
    let all: Vec<PathBuf> = std::fs::read_dir(state.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0].clone()
}

/// A snapshot whose copy of a manifest is a link to another user's file (or whose `manifests/`
/// is a link to another user's dir): `recover` reads no copy through a link — it names the
/// copy — and the manifests dir gets none of the user's bytes.
#[test]
fn recover_never_reads_a_snapshot_copy_through_a_link() {
    let Some(user) = TestUser::create() else {
        return;
    };
    for through in ["the copy", "its directory"] {
        let node = Node::with(|s| s.manifests = true);
        chmod(node.tmp.path(), 0o755);
        let ran = node.run(None, &["snapshot"]);
        assert_eq!(ran.code, 0, "{ran:?}");
        let snap = only_snapshot(&node.state);
        // the user's own file, which they may change at any time
        let theirs = node.tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        user.chown(&theirs);
        let foreign = theirs.join("kube-apiserver.yaml");
        user.must(
            "sh",
            &[
                "-c",
                &format!("echo 'the user says' > {}", foreign.display()),
            ],
        );
        let copy = snap.join("manifests/kube-apiserver.yaml");
        let named = match through {
            "the copy" => {
                std::fs::remove_file(&copy).unwrap();
                std::os::unix::fs::symlink(&foreign, &copy).unwrap();
                copy.clone()
            }
            _ => {
                let dir = snap.join("manifests");
                std::fs::remove_dir_all(&dir).unwrap();
                std::os::unix::fs::symlink(&theirs, &dir).unwrap();
                dir
            }
        };
        let manifest = node.dir.join("manifests/kube-apiserver.yaml");
        std::fs::remove_file(&manifest).unwrap();
        let ran = node.run(None, &["recover", "--no-restart"]);
        for file in files_below(&node.dir) {
            assert!(
                std::fs::read(&file).unwrap() != b"the user says\n",
                "{through}: the user's bytes reached {}: {ran:?}",
                file.display()
            );
        }
        assert_names(&ran, &named, "a symbolic link");
    }
}

/// A backup copy that is a link to another user's file (the backup an interrupted restore
/// names in the journal): the restore reads no copy through a link — it names the copy —
/// and `ca.key` keeps its bytes.
#[test]
fn a_restore_never_reads_a_backup_copy_through_a_link() {
    let Some(user) = TestUser::create() else {
        return;
    };
    use kube_cert_renewer::state::{journal, store};
    let node = Node::new();
    chmod(node.tmp.path(), 0o755);
    let victim = node.pki("ca.key");
    let precious = std::fs::read(&victim).unwrap();
    let backup = store::backup(
        &node.state.join("backups"),
        "interrupted",
        &node.dir,
        std::slice::from_ref(&victim),
    )
    .unwrap();
    let intent = journal::restore_intent(&backup).unwrap();
    journal::record(&node.state, &intent).unwrap();
    let theirs = node.tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    user.chown(&theirs);
    let foreign = theirs.join("ca.key");
    user.must(
        "sh",
        &[
            "-c",
            &format!("echo 'the user says' > {}", foreign.display()),
        ],
    );
    let copy = backup.join("pki/ca.key");
    std::fs::remove_file(&copy).unwrap();
    std::os::unix::fs::symlink(&foreign, &copy).unwrap();
    // check finishes what an interrupted run left, when it can
    let ran = node.check();
    assert!(std::fs::read(&victim).unwrap() == precious, "{ran:?}");
    assert_names(&ran, &copy, "a symbolic link");
    assert!(node.state.join("journal.json").exists(), "kept for a human");
}
