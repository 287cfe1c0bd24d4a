//! `renew` in the middle of Kubernetes' manual CA rotation (kubernetes.io, "Manual Rotation of
//! CA Certificates"): `pki/ca.crt` (and `etcd/ca.crt`, `front-proxy-ca.crt`) hold a bundle of
//! the old and the new CA, in either order, and the `.key` beside it is the new CA's key, while
//! every leaf on the node is still signed by the old CA.
//!
//! openssl is the oracle, each CA alone in its own file: a renewed leaf must verify against the
//! CA whose key is the `.key` and must not verify against the other one; every renewed
//! kubeconfig must carry the whole bundle, in the file's order, as `certificate-authority-data`;
//! the CA files themselves are never written.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use common::*;
use kube_cert_renewer::demo::nodegen::{self, NodeSpec};
use kube_cert_renewer::pki::keys::KeyAlgorithm;

/// kubeadm's name of a leaf and where it lives: a pki base name (`<pki>/<file>.crt`), or a
/// kubeconfig (`<dir>/<file>`, a name ending in `.conf`).
type Leaf = (&'static str, &'static str);

/// The leaves kubeadm signs with `ca` (kubelet.conf aside: `renew all` leaves it alone).
const CA_LEAVES: [Leaf; 6] = [
    ("apiserver", "apiserver"),
    ("apiserver-kubelet-client", "apiserver-kubelet-client"),
    ("admin.conf", "admin.conf"),
    ("super-admin.conf", "super-admin.conf"),
    ("controller-manager.conf", "controller-manager.conf"),
    ("scheduler.conf", "scheduler.conf"),
];
const ETCD_CA_LEAVES: [Leaf; 4] = [
    ("etcd-server", "etcd/server"),
    ("etcd-peer", "etcd/peer"),
    ("etcd-healthcheck-client", "etcd/healthcheck-client"),
    ("apiserver-etcd-client", "apiserver-etcd-client"),
];
const FRONT_PROXY_CA_LEAVES: [Leaf; 1] = [("front-proxy-client", "front-proxy-client")];

/// Where the new CA stands in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    NewFirst,
    OldFirst,
}

/// Whose key the `.key` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyOf {
    New,
    Old,
    Neither,
}

/// The key type of the new CA (the old ones are ECDSA P-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewKey {
    Rsa2048,
    EcdsaP256,
}

/// A node in a temp dir. Commands run at the wall clock of the moment, not the node's making:
/// the CAs openssl makes during a test are valid from their making (no backdating), and `check`
/// rightly calls a certificate before its NotBefore not yet valid.
struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    /// A kubeadm init node (super-admin.conf, stacked etcd) whose leaves have 100 days left, so
    /// `check` finds nothing to warn about before or after the renewal.
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let now = now();
        let mut spec = NodeSpec::new(now, 100);
        spec.key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.manifests = false;
        nodegen::generate(&tmp.path().join("k"), &spec).unwrap();
        std::fs::create_dir(tmp.path().join("work")).unwrap();
        Node { tmp }
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
    /// Scratch files of the test (CA copies, certificates taken out of kubeconfigs).
    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }
    fn renew(&self, args: &[&str]) -> (i32, String, String) {
        renew(now(), &self.dir(), &self.state(), args)
    }
    /// `check -o json` with a state dir no run has used: `renew --no-restart` leaves a restart
    /// pending in the node's own state dir (exit 1 by design), which is not the point here.
    fn check(&self) -> (i32, serde_json::Value, String) {
        let dir = self.dir();
        let state = self.tmp.path().join("check-state");
        let out = run(
            now(),
            &[
                "--kubernetes-dir",
                dir.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "check",
                "-o",
                "json",
            ],
        );
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check -o json printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (
            out.status.code().unwrap(),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    /// The leaf's certificate as a PEM file (taken out of its kubeconfig by a line scan).
    fn cert_of(&self, (name, file): Leaf) -> PathBuf {
        if file.ends_with(".conf") {
            let out = self.work().join(format!("{name}.client.pem"));
            extract_kubeconfig_cert(&self.dir().join(file), &out);
            out
        } else {
            self.pki().join(format!("{file}.crt"))
        }
    }
    /// The bytes of every file the renewal must not write: the CA files and kubelet.conf.
    fn untouchables(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        [
            "pki/ca.crt",
            "pki/ca.key",
            "pki/etcd/ca.crt",
            "pki/etcd/ca.key",
            "pki/front-proxy-ca.crt",
            "pki/front-proxy-ca.key",
            "kubelet.conf",
        ]
        .iter()
        .map(|f| {
            let path = self.dir().join(f);
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect()
    }
}

/// `openssl verify -CAfile ca cert` plus `extra` (no partial chains: the CA file must hold the
/// root that signed it).
fn verify(ca: &Path, cert: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    args.extend(["-CAfile", ca.to_str().unwrap(), cert.to_str().unwrap()]);
    openssl(&args)
}

/// The issuer (or subject) with the string type of each attribute, as openssl prints it: Go's
/// crypto/x509, which kube-apiserver and kubectl use, chains by the raw bytes of these names.
fn name_with_types(cert: &Path, which: &str) -> String {
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        which,
        "-nameopt",
        "RFC2253,show_type",
    ]);
    assert!(ok, "{}: {text}", cert.display());
    text.trim().split_once('=').unwrap().1.to_string()
}

/// The certificates of a PEM text as DER, in order: a line scan independent of the product's
/// reader.
fn pem_certs(data: &[u8]) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(data).expect("PEM is text");
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match (line, &mut body) {
            ("-----BEGIN CERTIFICATE-----", None) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(b64)) => {
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .unwrap(),
                );
                body = None;
            }
            (l, Some(b64)) => b64.push_str(l),
            _ => {}
        }
    }
    assert!(body.is_none(), "unterminated PEM block in {text}");
    out
}

/// The decoded `certificate-authority-data` of a kubeconfig, by a line scan.
fn kubeconfig_ca_data(kubeconfig: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("certificate-authority-data:"))
        .collect();
    assert_eq!(lines.len(), 1, "{}: {text}", kubeconfig.display());
    let b64 = lines[0].split_once(':').unwrap().1.trim();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// A new self-signed CA made by openssl, as an operator following the rotation procedure would
/// make it: (certificate, key).
fn openssl_ca(dir: &Path, tag: &str, cn: &str, key: NewKey) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{tag}.crt"));
    let key_file = dir.join(format!("{tag}.key"));
    let subject = format!("/CN={cn}");
    let mut args = vec!["req", "-x509", "-nodes"];
    match key {
        NewKey::Rsa2048 => args.extend(["-newkey", "rsa:2048"]),
        NewKey::EcdsaP256 => {
            args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
    }
    args.extend([
        "-subj",
        &subject,
        "-days",
        "3650",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
        "-keyout",
        key_file.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let (ok, text) = openssl(&args);
    assert!(ok, "openssl req: {text}");
    let (ok, text) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign"), "{text}");
    assert!(text.contains("Subject Key Identifier"), "{text}");
    (cert, key_file)
}

/// One CA in the middle of its rotation.
struct Rotated {
    /// kubeadm's CA name.
    name: &'static str,
    /// `<pki>/<base>.crt`, now the bundle.
    bundle_file: PathBuf,
    /// The old CA certificate alone.
    old: PathBuf,
    /// The new CA certificate alone.
    new: PathBuf,
    order: Order,
    key_of: KeyOf,
    /// What kubeadm signs with this CA.
    leaves: Vec<Leaf>,
    /// Each leaf's certificate before the renewal.
    before: BTreeMap<&'static str, Vec<u8>>,
}

impl Rotated {
    /// The CA certificate alone that must have signed the renewed leaves, and the other one.
    fn signer_and_other(&self) -> (&Path, &Path) {
        match self.key_of {
            KeyOf::New => (&self.new, &self.old),
            KeyOf::Old => (&self.old, &self.new),
            KeyOf::Neither => panic!("nothing signs when the key matches neither"),
        }
    }
    /// The bundle's certificates as DER, in the file's order, from the single-CA files.
    fn expected_bundle(&self) -> Vec<Vec<u8>> {
        let old = pem_certs(&std::fs::read(&self.old).unwrap());
        let new = pem_certs(&std::fs::read(&self.new).unwrap());
        assert_eq!((old.len(), new.len()), (1, 1));
        match self.order {
            Order::NewFirst => vec![new[0].clone(), old[0].clone()],
            Order::OldFirst => vec![old[0].clone(), new[0].clone()],
        }
    }
}

/// Does on `node` what the rotation procedure does to one CA before anyone renews: the new CA is
/// put beside the old one in the CA file, in `order`, and the key file becomes `key_of`'s key.
/// Checks first that every leaf of that CA is the old CA's, as on a real node at that point.
fn begin_rotation(
    node: &Node,
    ca: &'static str,
    order: Order,
    key_of: KeyOf,
    new_key: NewKey,
) -> Rotated {
    let (base, cn, leaves): (&str, &str, &[Leaf]) = match ca {
        "ca" => ("ca", "kubernetes", &CA_LEAVES),
        "etcd-ca" => ("etcd/ca", "etcd-ca", &ETCD_CA_LEAVES),
        "front-proxy-ca" => ("front-proxy-ca", "front-proxy-ca", &FRONT_PROXY_CA_LEAVES),
        other => panic!("unknown CA {other}"),
    };
    let bundle_file = node.pki().join(format!("{base}.crt"));
    let key_file = node.pki().join(format!("{base}.key"));
    let old = node.work().join(format!("{ca}-old.crt"));
    std::fs::copy(&bundle_file, &old).unwrap();
    let (new, new_key_file) = openssl_ca(&node.work(), &format!("{ca}-new"), cn, new_key);
    // The same subject on both: only signatures and key ids tell them apart.
    let plain_subject = |cert: &Path| {
        let (ok, text) = openssl(&[
            "x509",
            "-in",
            cert.to_str().unwrap(),
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ]);
        assert!(ok, "{text}");
        text
    };
    assert_eq!(
        plain_subject(&old),
        plain_subject(&new),
        "{ca}: the new CA must have the old one's name"
    );
    let mut before = BTreeMap::new();
    for &leaf in leaves {
        let cert = node.cert_of(leaf);
        let (ok, text) = verify(&old, &cert, &[]);
        assert!(
            ok,
            "before the rotation {} is the old {ca}'s: {text}",
            leaf.0
        );
        let (ok, _) = verify(&new, &cert, &[]);
        assert!(!ok, "{} cannot verify against a CA made after it", leaf.0);
        before.insert(leaf.0, std::fs::read(&cert).unwrap());
    }
    let (old_pem, new_pem) = (std::fs::read(&old).unwrap(), std::fs::read(&new).unwrap());
    let bundle = match order {
        Order::NewFirst => [new_pem, old_pem].concat(),
        Order::OldFirst => [old_pem, new_pem].concat(),
    };
    std::fs::write(&bundle_file, &bundle).unwrap();
    match key_of {
        KeyOf::New => std::fs::write(&key_file, std::fs::read(&new_key_file).unwrap()).unwrap(),
        KeyOf::Old => {}
        KeyOf::Neither => {
            let stray = node.work().join(format!("{ca}-stray.key"));
            let (ok, text) = openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                stray.to_str().unwrap(),
            ]);
            assert!(ok, "{text}");
            std::fs::write(&key_file, std::fs::read(&stray).unwrap()).unwrap();
        }
    }
    // Every leaf still works during the rotation: the bundle holds its CA.
    for &leaf in leaves {
        let (ok, text) = verify(&bundle_file, &node.cert_of(leaf), &[]);
        assert!(ok, "{} against the bundle: {text}", leaf.0);
    }
    Rotated {
        name: ca,
        bundle_file,
        old,
        new,
        order,
        key_of,
        leaves: leaves.to_vec(),
        before,
    }
}

/// The CERTIFICATE AUTHORITY column of `name`'s row in a table `renew` printed.
fn table_ca<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find_map(|line| {
        let mut cells = line.split_whitespace();
        (cells.next() == Some(name)).then(|| cells.next()).flatten()
    })
}

/// Before the renewal: `check` finds the old CA's leaves in the bundle (the plan's signer) and
/// a dry run plans every one of them.
fn assert_renewable(node: &Node, rotations: &[&Rotated]) {
    let (code, json, err) = node.check();
    assert_eq!(code, 0, "check before the renewal: {json}\n{err}");
    let (code, out, err) = node.renew(&["all", "--dry-run"]);
    assert_eq!(code, 0, "dry run: {out}{err}");
    for rot in rotations {
        for &(name, _) in &rot.leaves {
            let row = by_name(&json, "certificates", name);
            assert_eq!(
                row["signedBy"], rot.name,
                "{name} before the renewal: {row}"
            );
            assert_eq!(
                table_ca(&out, name),
                Some(rot.name),
                "the dry run must plan {name} under {}: {out}",
                rot.name
            );
        }
    }
}

/// After a successful `renew all`: each leaf re-signed by the CA of the key, and by it alone;
/// each kubeconfig trusting the whole bundle; the CA files untouched; `check` clean.
fn assert_renewed_under(node: &Node, rot: &Rotated) {
    let (signer, other) = rot.signer_and_other();
    let expected_bundle = rot.expected_bundle();
    assert_eq!(
        pem_certs(&std::fs::read(&rot.bundle_file).unwrap()),
        expected_bundle,
        "{} must still be the bundle",
        rot.bundle_file.display()
    );
    for &leaf in &rot.leaves {
        let (name, file) = leaf;
        let cert = node.cert_of(leaf);
        assert_ne!(
            std::fs::read(&cert).unwrap(),
            rot.before[name],
            "{name} was not renewed"
        );
        let (ok, text) = verify(signer, &cert, &[]);
        assert!(
            ok,
            "{name} must be signed by the {} CA whose key is the key file ({:?}, {:?}): {text}",
            rot.name, rot.key_of, rot.order
        );
        let (ok, text) = verify(other, &cert, &[]);
        assert!(
            !ok,
            "{name} must not verify against the other {} CA alone ({:?}, {:?}): {text}",
            rot.name, rot.key_of, rot.order
        );
        // what the servers check during the rotation: the bundle as their client CA
        let (ok, text) = verify(&rot.bundle_file, &cert, &[]);
        assert!(ok, "{name} against the bundle: {text}");
        assert_eq!(
            name_with_types(&cert, "-issuer"),
            name_with_types(signer, "-subject"),
            "{name}: the issuer must be the signing CA's subject byte for byte (string types too)"
        );
        if file.ends_with(".conf") {
            let kubeconfig = node.dir().join(file);
            let ca_data = kubeconfig_ca_data(&kubeconfig);
            assert_eq!(
                pem_certs(&ca_data),
                expected_bundle,
                "{file}: certificate-authority-data must be the whole bundle in the file's \
                 order ({:?})",
                rot.order
            );
            // kubectl's view: this kubeconfig's CA data must accept the API server's new
            // serving certificate, for the address the kubeconfig names
            let ca_pem = node.work().join(format!("{name}.ca.pem"));
            std::fs::write(&ca_pem, &ca_data).unwrap();
            let (ok, text) = verify(
                &ca_pem,
                &node.pki().join("apiserver.crt"),
                &["-purpose", "sslserver", "-verify_ip", "127.0.0.1"],
            );
            assert!(ok, "{file}'s CA data must trust the API server: {text}");
            // kube-apiserver's view (--client-ca-file=ca.crt): a client certificate
            let (ok, text) = verify(&rot.bundle_file, &cert, &["-purpose", "sslclient"]);
            assert!(ok, "{file}'s client certificate for the API server: {text}");
        }
    }
}

/// `check` after the renewal: exit 0, every renewed row ok, a year left, signed by its CA.
fn assert_check_clean(node: &Node, rotations: &[&Rotated]) {
    let (code, json, err) = node.check();
    assert_eq!(code, 0, "check after the renewal: {json}\n{err}");
    for rot in rotations {
        for &(name, _) in &rot.leaves {
            let row = by_name(&json, "certificates", name);
            assert_eq!(row["status"], "ok", "{row}");
            assert_eq!(row["signedBy"], rot.name, "{row}");
            assert!(
                row["residualTime"].as_i64().unwrap() > 364 * 86_400,
                "{name} must have been renewed for a year: {row}"
            );
        }
    }
}

/// The whole scenario for `ca` alone: rotation begun, `renew all`, every check.
fn rotate_ca_and_renew(order: Order, key_of: KeyOf, new_key: NewKey) -> (Node, Rotated) {
    let node = Node::new();
    let rot = begin_rotation(&node, "ca", order, key_of, new_key);
    assert_renewable(&node, &[&rot]);
    let untouchables = node.untouchables();
    let (code, out, err) = node.renew(&["all"]);
    assert_eq!(code, 0, "{order:?}, key {key_of:?}: {out}{err}");
    for &(name, _) in &rot.leaves {
        assert_eq!(table_ca(&out, name), Some("ca"), "{name} renewed: {out}");
    }
    assert_eq!(
        untouchables,
        node.untouchables(),
        "the CA files and kubelet.conf must not be written"
    );
    assert_renewed_under(&node, &rot);
    assert_check_clean(&node, &[&rot]);
    (node, rot)
}

#[test]
fn new_then_old_bundle_with_the_new_key_signs_with_the_new_ca() {
    // the new CA is RSA, the old one ECDSA: the signature algorithm follows the signing key
    let (node, rot) = rotate_ca_and_renew(Order::NewFirst, KeyOf::New, NewKey::Rsa2048);
    // kubelet.conf, renewed on request, gets the same: new CA, whole bundle
    let (code, out, err) = node.renew(&["kubelet.conf"]);
    assert_eq!(code, 0, "{out}{err}");
    let kubelet = node.work().join("kubelet.client.pem");
    extract_kubeconfig_cert(&node.dir().join("kubelet.conf"), &kubelet);
    assert!(verify(&rot.new, &kubelet, &[]).0, "kubelet.conf: new CA");
    assert!(
        !verify(&rot.old, &kubelet, &[]).0,
        "kubelet.conf: not the old CA"
    );
    assert_eq!(
        pem_certs(&kubeconfig_ca_data(&node.dir().join("kubelet.conf"))),
        rot.expected_bundle()
    );
}

#[test]
fn old_then_new_bundle_with_the_new_key_signs_with_the_new_ca() {
    rotate_ca_and_renew(Order::OldFirst, KeyOf::New, NewKey::EcdsaP256);
}

#[test]
fn a_ca_key_matching_neither_certificate_of_the_bundle_is_refused() {
    let node = Node::new();
    begin_rotation(
        &node,
        "ca",
        Order::NewFirst,
        KeyOf::Neither,
        NewKey::EcdsaP256,
    );
    let before = snapshot(&node.dir());
    let (code, out, err) = node.renew(&["all"]);
    assert_eq!(code, 1, "must be refused: {out}{err}");
    let key = node.pki().join("ca.key").display().to_string();
    assert!(err.contains(&key), "the message must name {key}: {err}");
    assert!(err.contains("matches no certificate"), "{err}");
    assert_eq!(
        before,
        snapshot(&node.dir()),
        "a refusal must leave the tree byte-identical"
    );
    let backups = node.state().join("backups");
    assert!(
        !backups.exists() || std::fs::read_dir(&backups).unwrap().next().is_none(),
        "nothing may be backed up"
    );
}

#[test]
fn a_bundle_distributed_before_the_new_key_keeps_signing_with_the_old_ca() {
    // new + old: the key's certificate is not the first one
    rotate_ca_and_renew(Order::NewFirst, KeyOf::Old, NewKey::EcdsaP256);
}

#[test]
fn etcd_and_front_proxy_bundles_sign_with_their_new_cas() {
    let node = Node::new();
    let rotations = [
        begin_rotation(&node, "ca", Order::NewFirst, KeyOf::New, NewKey::EcdsaP256),
        begin_rotation(
            &node,
            "etcd-ca",
            Order::NewFirst,
            KeyOf::New,
            NewKey::Rsa2048,
        ),
        begin_rotation(
            &node,
            "front-proxy-ca",
            Order::NewFirst,
            KeyOf::New,
            NewKey::EcdsaP256,
        ),
    ];
    let all: Vec<&Rotated> = rotations.iter().collect();
    assert_renewable(&node, &all);
    let untouchables = node.untouchables();
    let (code, out, err) = node.renew(&["all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(untouchables, node.untouchables());
    for rot in &rotations {
        assert_renewed_under(&node, rot);
    }
    // and no leaf verifies against a CA that is not its own (the three new CAs are distinct)
    for rot in &rotations {
        for other in rotations.iter().filter(|o| o.name != rot.name) {
            for &leaf in &rot.leaves {
                let (ok, _) = verify(&other.bundle_file, &node.cert_of(leaf), &[]);
                assert!(!ok, "{} verifies against {}", leaf.0, other.name);
            }
        }
    }
    assert_check_clean(&node, &all);
}
