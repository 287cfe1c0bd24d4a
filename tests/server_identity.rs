//! The HTTPS client verifies the server as client-go would (issue 21, item 4): a certificate
//! the cluster CA signed for someone else — a kubelet's client certificate, a server
//! certificate for another name, a CA:TRUE certificate served as a leaf — is refused by every
//! caller (the Lease look of `check`, the Lease acquisition, the credential proofs, etcd's
//! member list and member health), while what kubeadm really issues (generated trees and the
//! real fixtures of v1.8 to v1.18, renewed) still verifies.
//!
//! The stand-in server answers whatever each caller asks (a Lease held by `IMPOSTOR`, `/api`,
//! etcd's member list and health), so a caller that believed it would go on as if it talked
//! to the real thing: each refusal is the verifier's.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kube_cert_renewer::coordination::{self, KubeApi, NotAcquired};
use kube_cert_renewer::demo::fake_api::LeaseStore;
use kube_cert_renewer::demo::nodegen::{self, GeneratedCa, LeafTemplate, NodeSpec};
use kube_cert_renewer::node::etcd_cluster::{self, Cluster, MEMBER_LIST_PATH};
use kube_cert_renewer::node::health::{Target, https_get_from};
use kube_cert_renewer::node::proof::{ProofError, prove_kubeconfig};
use kube_cert_renewer::node::restart::StaticPods;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A TLS server on 127.0.0.1 serving `cert_pem` (chain) with `key_pem` and answering every
/// request as the caller hopes: the Lease from `store` (planted as held by IMPOSTOR), etcd's
/// member list (one member, this server) and `/health`, and `200` to anything else (`/api`).
/// It asks for no client certificate. Runs until the test process ends.
fn impostor(cert_pem: &[u8], key_pem: &[u8]) -> (SocketAddr, LeaseStore) {
    let chain: Vec<CertificateDer<'static>> = kube_cert_renewer::pki::pem::parse(cert_pem)
        .unwrap()
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.der))
        .collect();
    let key_der = kube_cert_renewer::pki::pem::parse(key_pem)
        .unwrap()
        .remove(0)
        .der;
    let key = PrivateKeyDer::try_from(key_der).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let store = LeaseStore::new();
    store.plant("IMPOSTOR", 3600);
    let served = store.clone();
    let members = format!(
        r#"{{"header":{{"cluster_id":"7","member_id":"1"}},"members":[{{"ID":"1","name":"cp-1","peerURLs":["https://{addr}"],"clientURLs":["https://{addr}"]}}]}}"#
    );
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let (config, store, members) = (config.clone(), served.clone(), members.clone());
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, sock);
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&raw).to_string();
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let body = if path.starts_with("/apis/coordination.k8s.io/") {
                    store.handle(method, path, b"").1.to_string()
                } else if path == MEMBER_LIST_PATH {
                    members
                } else if path == "/health" {
                    r#"{"health":"true"}"#.to_string()
                } else {
                    r#"{"kind":"APIVersions","versions":["v1"]}"#.to_string()
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (addr, store)
}

/// A generated kubeadm-shaped node (advertise address 127.0.0.1, as kubeadm on a one-address
/// host), its `/etc/kubernetes`.
fn node(tmp: &Path) -> PathBuf {
    let dir = tmp.join("k");
    nodegen::generate(&dir, &NodeSpec::new(now(), 30)).unwrap();
    dir
}

/// A certificate served in place of the real server's, and the words its refusal must say.
struct Impostor {
    what: &'static str,
    cert: Vec<u8>,
    key: Vec<u8>,
    refused_for: &'static str,
}

/// A leaf of `ca` (`pki/<base>.crt`) made by openssl with the extensions `ext`.
fn openssl_leaf(pki: &Path, base: &str, ext: &str, out: &Path) -> (Vec<u8>, Vec<u8>) {
    std::fs::create_dir_all(out).unwrap();
    let (key, csr, crt, extfile) = (
        out.join("leaf.key"),
        out.join("leaf.csr"),
        out.join("leaf.crt"),
        out.join("ext.cnf"),
    );
    std::fs::write(&extfile, ext).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, said) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
    ]);
    assert!(ok, "{said}");
    let (ok, said) = openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&pki.join(format!("{base}.crt"))),
        "-CAkey",
        &s(&pki.join(format!("{base}.key"))),
        "-set_serial",
        "4242",
        "-days",
        "30",
        "-extfile",
        &s(&extfile),
        "-out",
        &s(&crt),
    ]);
    assert!(ok, "{said}");
    (std::fs::read(crt).unwrap(), std::fs::read(key).unwrap())
}

/// The impostors for a server whose certificates `pki/<base>` signs: `client` is a client-only
/// certificate of that CA (the kubelet's for the cluster CA), plus a server certificate for
/// another node's name and address, and a CA:TRUE one with the right names.
fn impostors(dir: &Path, base: &str, client: (Vec<u8>, Vec<u8>), tmp: &Path) -> Vec<Impostor> {
    let pki = dir.join("pki");
    let ca = GeneratedCa::load(&pki, base).unwrap();
    let (cert, key) = nodegen::make_leaf(
        &LeafTemplate {
            cn: "kube-apiserver".into(),
            org: None,
            sans: vec!["cp-other".into(), "10.9.9.9".into()],
            server: true,
            client: true,
        },
        &ca,
        &NodeSpec::new(now(), 30),
    )
    .unwrap();
    let ca_leaf = openssl_leaf(
        &pki,
        base,
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature,keyEncipherment,\
         keyCertSign\nextendedKeyUsage=serverAuth,clientAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:kubernetes,DNS:localhost\n",
        &tmp.join(format!("ca-leaf-{}", base.replace('/', "-"))),
    );
    vec![
        Impostor {
            what: "a client certificate of the CA",
            cert: client.0,
            key: client.1,
            refused_for: "is not a server certificate: its extended key usage is clientAuth",
        },
        Impostor {
            what: "a server certificate for another name",
            cert: cert.into_bytes(),
            key: key.into_bytes(),
            refused_for: "it names cp-other, 10.9.9.9",
        },
        Impostor {
            what: "a CA:TRUE certificate served as a leaf",
            cert: ca_leaf.0,
            key: ca_leaf.1,
            refused_for: "is a CA certificate (CA:TRUE)",
        },
    ]
}

/// The kubelet's client certificate and key (signed by the cluster CA, clientAuth only, no
/// SANs), out of kubelet.conf.
fn kubelet_client(dir: &Path, tmp: &Path) -> (Vec<u8>, Vec<u8>) {
    let (cert, key) = (tmp.join("kubelet.crt"), tmp.join("kubelet.key"));
    extract_kubeconfig_cert(&dir.join("kubelet.conf"), &cert);
    extract_kubeconfig_key(&dir.join("kubelet.conf"), &key);
    let (_, text) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
}

/// A copy of `dir/admin.conf` pointing at `addr`.
fn admin_conf_at(dir: &Path, addr: SocketAddr, out: &Path) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("admin.conf")).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("server: "))
        .unwrap()
        .to_string();
    std::fs::write(
        out,
        text.replace(&line, &format!("    server: https://{addr}")),
    )
    .unwrap();
    out.to_path_buf()
}

fn lease_settings() -> coordination::Settings {
    coordination::Settings {
        me: "cp-1".into(),
        duration_secs: 30,
        wait: Duration::from_millis(1500),
        max_backoff: Duration::from_millis(300),
    }
}

/// What every API-server caller makes of the server at `addr`: Ok(()) when it believed it,
/// else each caller's error.
fn api_callers(
    dir: &Path,
    addr: SocketAddr,
    tmp: &Path,
) -> Vec<(&'static str, Result<(), String>)> {
    let conf = admin_conf_at(dir, addr, &tmp.join(format!("admin-{}.conf", addr.port())));
    let api = KubeApi::from_kubeconfig(&conf, TIMEOUT).unwrap();
    let look = coordination::holder(&api)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let taken =
        match coordination::acquire(Arc::new(api), &lease_settings(), true, &mut |_| {}, &|| {
            false
        }) {
            Ok(held) => {
                drop(held);
                Ok(())
            }
            Err(NotAcquired::TimedOut(m)) if m.contains("held by IMPOSTOR") => Ok(()),
            Err(e) => Err(e.to_string()),
        };
    let proof = prove_kubeconfig(&conf, &dir.join("pki"), &[addr], TIMEOUT)
        .map(|_| ())
        .map_err(|e| match e {
            ProofError::Rejected(m) => format!("REJECTED (evidence against the credential): {m}"),
            ProofError::Inconclusive(m) => m,
        });
    vec![
        ("the Lease look", look),
        ("the Lease acquisition", taken),
        ("the credential proof", proof),
    ]
}

/// What etcd's member list and member health make of the server at `addr`, with the etcd
/// credentials of `pki`.
fn etcd_callers(pki: &Path, addr: SocketAddr) -> Vec<(&'static str, Result<(), String>)> {
    let list = etcd_cluster::members(&[addr], pki, TIMEOUT).map(|_| ());
    let cluster = Cluster::from_json(&format!(
        r#"{{"header":{{"cluster_id":"7","member_id":"1"}},"members":[{{"ID":"1","name":"cp-1","clientURLs":["https://{addr}"]}},{{"ID":"2","name":"cp-2","clientURLs":["https://{addr}"]}}]}}"#
    ))
    .unwrap();
    let health = etcd_cluster::health_of(
        &Cluster {
            asked: Some(addr),
            ..cluster
        },
        pki,
        TIMEOUT,
    )
    .map_err(|e| e.to_string())
    .and_then(|h| {
        h.members
            .into_iter()
            .map(|m| m.health)
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ())
    });
    vec![
        ("etcd's member list", list),
        ("etcd's member health", health),
    ]
}

fn assert_all_believed(callers: &[(&str, Result<(), String>)], what: &str) {
    for (caller, result) in callers {
        assert!(result.is_ok(), "{caller} refused {what}: {result:?}");
    }
}

fn assert_all_refused(callers: &[(&str, Result<(), String>)], impostor: &Impostor) {
    for (caller, result) in callers {
        let err = match result {
            Ok(()) => panic!("{caller} believed {}", impostor.what),
            Err(e) => e,
        };
        eprintln!("{caller}, {}: {err}", impostor.what);
        assert!(err.contains(impostor.refused_for), "{caller}: {err}");
        assert!(
            !err.contains("REJECTED"),
            "{caller}: not the credential's fault: {err}"
        );
    }
}

#[test]
fn certificates_of_the_cluster_ca_for_someone_else_cannot_pose_as_the_api_server() {
    if !have("openssl", "server-identity") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = node(tmp.path());
    // the control: the real API server certificate is believed by every caller
    let pki = dir.join("pki");
    let (addr, _) = impostor(
        &std::fs::read(pki.join("apiserver.crt")).unwrap(),
        &std::fs::read(pki.join("apiserver.key")).unwrap(),
    );
    assert_all_believed(&api_callers(&dir, addr, tmp.path()), "apiserver.crt");
    let kubelet = kubelet_client(&dir, tmp.path());
    for impostor_cert in impostors(&dir, "ca", kubelet, tmp.path()) {
        let (addr, store) = impostor(&impostor_cert.cert, &impostor_cert.key);
        assert_all_refused(&api_callers(&dir, addr, tmp.path()), &impostor_cert);
        assert_eq!(
            store.writes().len(),
            1,
            "only the planted Lease: nothing was written"
        );
    }
}

#[test]
fn certificates_of_the_etcd_ca_for_someone_else_cannot_pose_as_an_etcd_member() {
    if !have("openssl", "server-identity") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = node(tmp.path());
    let pki = dir.join("pki");
    let (addr, _) = impostor(
        &std::fs::read(pki.join("etcd/server.crt")).unwrap(),
        &std::fs::read(pki.join("etcd/server.key")).unwrap(),
    );
    assert_all_believed(&etcd_callers(&pki, addr), "etcd/server.crt");
    // kube-apiserver's etcd client certificate: signed by the etcd CA, clientAuth only
    let client = (
        std::fs::read(pki.join("apiserver-etcd-client.crt")).unwrap(),
        std::fs::read(pki.join("apiserver-etcd-client.key")).unwrap(),
    );
    for impostor_cert in impostors(&dir, "etcd/ca", client, tmp.path()) {
        let (addr, _) = impostor(&impostor_cert.cert, &impostor_cert.key);
        assert_all_refused(&etcd_callers(&pki, addr), &impostor_cert);
    }
    // a cluster whose etcd trusts the cluster CA: the kubelet's client certificate is refused too
    let shared = tmp.path().join("shared-ca");
    std::fs::create_dir_all(shared.join("etcd")).unwrap();
    std::fs::copy(pki.join("ca.crt"), shared.join("etcd/ca.crt")).unwrap();
    for f in ["healthcheck-client.crt", "healthcheck-client.key"] {
        std::fs::copy(pki.join("etcd").join(f), shared.join("etcd").join(f)).unwrap();
    }
    let kubelet = kubelet_client(&dir, tmp.path());
    let (addr, _) = impostor(&kubelet.0, &kubelet.1);
    let refused = etcd_callers(&shared, addr);
    assert_all_refused(
        &refused,
        &Impostor {
            what: "the kubelet's client certificate",
            cert: Vec::new(),
            key: Vec::new(),
            refused_for: "is not a server certificate",
        },
    );
}

#[test]
fn check_does_not_show_a_lease_an_impostor_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = node(tmp.path());
    let kubelet = kubelet_client(&dir, tmp.path());
    let (addr, _) = impostor(&kubelet.0, &kubelet.1);
    let conf = admin_conf_at(&dir, addr, &tmp.path().join("lease.conf"));
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!("lease_kubeconfig = \"{}\"\n", conf.display()),
    )
    .unwrap();
    let out = run_with_config(
        now(),
        &config,
        &[
            "--kubernetes-dir",
            dir.to_str().unwrap(),
            "--state-dir",
            tmp.path().join("state").to_str().unwrap(),
            "check",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(!text.contains("IMPOSTOR"), "{text}");
    assert!(
        text.contains("Restart Lease kube-system/kube-cert-renewer: cannot be asked")
            && text.contains("is not a server certificate"),
        "{text}"
    );
}

#[test]
fn the_real_kubeadm_certificates_of_v1_8_to_v1_18_still_verify_once_renewed() {
    let tmp = tempfile::tempdir().unwrap();
    let trees: Vec<PathBuf> = fixtures()
        .into_iter()
        .filter(|t| t.join("pki/apiserver.key").exists())
        .collect();
    assert!(trees.len() >= 5, "{trees:?}");
    for tree in trees {
        let name = tree.file_name().unwrap().to_string_lossy().to_string();
        let dir = tmp.path().join(&name);
        copy_tree(&tree, &dir);
        let (code, out, err) = renew(
            now(),
            &dir,
            &tmp.path().join(format!("state-{name}")),
            &["all"],
        );
        assert_eq!(code, 0, "{name}: {out}{err}");
        let pki = dir.join("pki");
        let (addr, _) = impostor(
            &std::fs::read(pki.join("apiserver.crt")).unwrap(),
            &std::fs::read(pki.join("apiserver.key")).unwrap(),
        );
        // the addresses the restart would probe, from the manifest when the tree has one
        // (advertise address, then loopback), on this test's port
        let addresses: Vec<SocketAddr> = match StaticPods::read(&dir.join("manifests")) {
            Ok(pods) if !pods.apiserver_addresses().is_empty() => pods
                .apiserver_addresses()
                .into_iter()
                .map(|a| SocketAddr::new(a.ip(), addr.port()))
                .collect(),
            _ => vec![addr],
        };
        let loopback = Target::local_apiserver(&addresses)
            .into_iter()
            .find(|t| t.addr.ip().is_loopback())
            .unwrap();
        eprintln!("{name}: {loopback:?}");
        let probe = https_get_from(&loopback, "/readyz", &pki.join("ca.crt"), None, TIMEOUT);
        assert!(probe.is_ok(), "{name}: {probe:?}");
        // the same certificate at an address it does not name is refused
        let bare = https_get_from(
            &Target::ip(addr),
            "/readyz",
            &pki.join("ca.crt"),
            None,
            TIMEOUT,
        );
        assert!(
            bare.as_ref()
                .is_err_and(|e| e.contains("is not for 127.0.0.1")),
            "{name}: {bare:?}"
        );
        if pki.join("etcd/server.key").exists() {
            let (addr, _) = impostor(
                &std::fs::read(pki.join("etcd/server.crt")).unwrap(),
                &std::fs::read(pki.join("etcd/server.key")).unwrap(),
            );
            assert_all_believed(
                &etcd_callers(&pki, addr),
                &format!("{name} etcd/server.crt"),
            );
        }
    }
    // the oracle agrees on the shape: openssl verifies a renewed apiserver.crt for the names
    let pki = tmp.path().join("v1.16-stacked-etcd/pki");
    let out = Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "kubernetes",
            "-CAfile",
        ])
        .arg(pki.join("ca.crt"))
        .arg(pki.join("apiserver.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
