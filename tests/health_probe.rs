//! The TLS health probe against real peers as oracles: `openssl s_server` serving a generated
//! node's apiserver certificate (RSA and ECDSA, TLS 1.3 and 1.2) and Debian's etcd requiring
//! client certificates; plus the failure modes a restart must tell apart (refused, silent,
//! untrusted).

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use kube_cert_renewer::demo::nodegen::{NodeSpec, generate};
use kube_cert_renewer::node::health::{ClientCert, Probe, etcd_healthy, https_get, serial_hex};
use kube_cert_renewer::pki::keys::KeyAlgorithm;

/// A freshly generated kubeadm-shaped node (leaves valid 30 more days).
fn node(tmp: &Path, spec: impl FnOnce(NodeSpec) -> NodeSpec) -> PathBuf {
    let dir = tmp.join("node");
    generate(&dir, &spec(NodeSpec::new(now(), 30))).unwrap();
    dir.join("pki")
}

/// Probes `path` on `addr` without a client certificate, trusting `ca`, with a 5 s timeout.
fn get(addr: SocketAddr, path: &str, ca: &Path) -> Result<Probe, String> {
    https_get(addr, path, ca, None, Duration::from_secs(5))
}

/// Prints a probe's error and checks that it names the address probed and says `what`.
fn assert_error_names(err: &str, addr: SocketAddr, what: &str) {
    eprintln!("{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains(what), "{err}");
}

/// Checks that what began at `started` took less than `limit`.
fn assert_took_less(started: Instant, limit: Duration, what: &str) {
    let took = started.elapsed();
    assert!(took < limit, "{what} took {took:?}");
}

/// The cluster CA file of a freshly generated node in `tmp`.
fn cluster_ca(tmp: &Path) -> PathBuf {
    node(tmp, |s| s).join("ca.crt")
}

/// A plain TCP server on 127.0.0.1 whose connections `serve` handles in a thread.
fn tcp_server(serve: impl FnOnce(TcpListener) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || serve(listener));
    addr
}

/// `openssl s_server -www` serving `pki/apiserver.crt`, asking for (not requiring) a client
/// certificate, plus `extra` flags.
fn apiserver_s_server(pki: &Path, extra: &[&str]) -> (Guard, u16) {
    let mut args = vec!["-verify", "1"];
    args.extend_from_slice(extra);
    s_server(pki, "apiserver", &args)
}

/// Probes an s_server of `pki` and checks it served exactly `apiserver.crt`.
fn assert_serves_apiserver(pki: &Path, port: u16) {
    let probe = get(local(port), "/readyz", &pki.join("ca.crt")).unwrap();
    assert_eq!(probe.status, 200, "{}", probe.body);
    // s_server -www answers with an HTML page about the session.
    assert!(
        probe.body.contains("<HTML>") || probe.body.contains("<html>"),
        "{}",
        probe.body
    );
    assert_eq!(
        serial_hex(&probe.served_leaf_der).unwrap(),
        openssl_serial(&pki.join("apiserver.crt"))
    );
}

#[test]
fn s_server_with_the_apiserver_certificate_is_probed_and_its_serial_matches_openssl() {
    if !have("openssl", "health-probe") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let (_server, port) = apiserver_s_server(&pki, &[]);
    assert_serves_apiserver(&pki, port);
    // A bundle holding the right CA among others is trusted too.
    let bundle = tmp.path().join("bundle.crt");
    let mut text = std::fs::read_to_string(pki.join("etcd/ca.crt")).unwrap();
    text.push_str(&std::fs::read_to_string(pki.join("front-proxy-ca.crt")).unwrap());
    text.push_str(&std::fs::read_to_string(pki.join("ca.crt")).unwrap());
    std::fs::write(&bundle, text).unwrap();
    let probe = get(local(port), "/", &bundle).unwrap();
    assert_eq!(probe.status, 200);
}

#[test]
fn a_leaf_from_another_ca_is_untrusted_and_the_error_names_its_issuer() {
    if !have("openssl", "health-probe") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let (_server, port) = apiserver_s_server(&pki, &[]);
    let err = get(local(port), "/readyz", &pki.join("etcd/ca.crt")).unwrap_err();
    assert_error_names(&err, local(port), "untrusted");
    // The leaf's issuer (the cluster CA, CN=kubernetes) and the CA file tried are both named.
    assert!(err.contains("issuer CN=kubernetes"), "{err}");
    assert!(err.contains("etcd/ca.crt"), "{err}");
    // Control: the same server with the right CA is fine, so the refusal was about trust.
    assert_serves_apiserver(&pki, port);
}

#[test]
fn nothing_listening_is_connection_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    // Any parseable CA file: the probe never gets as far as TLS.
    let ca = cluster_ca(tmp.path());
    let port = free_port();
    let started = Instant::now();
    let err = get(local(port), "/readyz", &ca).unwrap_err();
    assert_error_names(&err, local(port), "connection refused");
    assert_took_less(started, Duration::from_secs(3), "refusal");
}

#[test]
fn a_server_that_accepts_and_never_answers_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = cluster_ca(tmp.path());
    // Accepts and holds connections open without a byte, until the test ends.
    let addr = tcp_server(|listener| {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let started = Instant::now();
    let err = https_get(addr, "/readyz", &ca, None, Duration::from_secs(1)).unwrap_err();
    assert_error_names(&err, addr, "timed out");
    assert_took_less(started, Duration::from_secs(4), "the 1 s timeout");
}

#[test]
fn a_server_that_answers_garbage_is_bad_http_or_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = cluster_ca(tmp.path());
    let addr = tcp_server(|listener| {
        use std::io::Write;
        if let Some(Ok(mut conn)) = listener.incoming().next() {
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n");
        }
    });
    let err = get(addr, "/readyz", &ca).unwrap_err();
    assert_error_names(&err, addr, "TLS handshake");
}

#[test]
fn etcd_health_answers_with_the_healthcheck_client_and_serves_the_server_certificate() {
    if !have("etcd", "health-probe") || !have("openssl", "health-probe") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let (_etcd, port) = start_etcd(tmp.path(), &pki);
    let ca = pki.join("etcd/ca.crt");
    let cert = pki.join("etcd/healthcheck-client.crt");
    let key = pki.join("etcd/healthcheck-client.key");
    let client = || {
        Some(ClientCert {
            cert: &cert,
            key: &key,
        })
    };
    // etcd listens before it has elected itself leader: /health says false until then.
    let probe = wait_etcd_healthy(tmp.path(), || {
        match https_get(
            local(port),
            "/health",
            &ca,
            client(),
            Duration::from_secs(10),
        ) {
            Ok(p) if p.status == 200 && etcd_healthy(&p.body) => Ok(p),
            last => Err(format!("{last:?}")),
        }
    });
    assert!(probe.body.contains("\"health\":\"true\""), "{}", probe.body);
    assert_eq!(
        serial_hex(&probe.served_leaf_der).unwrap(),
        openssl_serial(&pki.join("etcd/server.crt"))
    );

    // Without a client certificate etcd refuses: an error, or at least no healthy 200.
    let anonymous = https_get(local(port), "/health", &ca, None, Duration::from_secs(10));
    eprintln!("etcd without a client certificate: {anonymous:?}");
    match &anonymous {
        Err(e) => assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}"),
        Ok(p) => assert!(p.status != 200 || !etcd_healthy(&p.body), "{p:?}"),
    }
    // A client certificate from the wrong CA (the cluster CA) is refused as well.
    let wrong_cert = pki.join("apiserver-kubelet-client.crt");
    let wrong_key = pki.join("apiserver-kubelet-client.key");
    let wrong = https_get(
        local(port),
        "/health",
        &ca,
        Some(ClientCert {
            cert: &wrong_cert,
            key: &wrong_key,
        }),
        Duration::from_secs(10),
    );
    eprintln!("etcd with a client certificate from the wrong CA: {wrong:?}");
    assert!(
        match &wrong {
            Err(_) => true,
            Ok(p) => p.status != 200 || !etcd_healthy(&p.body),
        },
        "{wrong:?}"
    );
}

#[test]
fn an_ecdsa_node_is_probed_too() {
    if !have("openssl", "health-probe") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| NodeSpec {
        key_algorithm: KeyAlgorithm::EcdsaP256,
        ca_key_algorithm: KeyAlgorithm::EcdsaP256,
        ..s
    });
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        pki.join("apiserver.crt").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(ok && text.contains("id-ecPublicKey"), "{text}");
    let (_server, port) = apiserver_s_server(&pki, &[]);
    assert_serves_apiserver(&pki, port);
}

#[test]
fn tls12_handshake_signatures_are_verified_for_rsa_and_ecdsa() {
    if !have("openssl", "health-probe") {
        return;
    }
    for algorithm in [KeyAlgorithm::Rsa(2048), KeyAlgorithm::EcdsaP256] {
        let tmp = tempfile::tempdir().unwrap();
        let pki = node(tmp.path(), |s| NodeSpec {
            key_algorithm: algorithm,
            ca_key_algorithm: algorithm,
            ..s
        });
        let (_server, port) = apiserver_s_server(&pki, &["-tls1_2"]);
        assert_serves_apiserver(&pki, port);
    }
}

/// How the in-process rustls server ends its one answer.
struct Answer {
    response: Vec<u8>,
    close_notify: bool,
    /// Keep the connection open this long after answering (ignoring `Connection: close`).
    linger: Duration,
}

/// A rustls server in a thread serving `pki/apiserver.crt` that answers one request with
/// `answer`: lets the tests shape what openssl and etcd never do (no close_notify, chunked
/// bodies, oversized bodies, connections held open).
fn rustls_server(pki: &Path, answer: Answer) -> SocketAddr {
    use kube_cert_renewer::pki::pem;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer};
    use std::io::{Read, Write};
    use std::sync::Arc;

    let chain: Vec<CertificateDer<'static>> =
        pem::parse(&std::fs::read(pki.join("apiserver.crt")).unwrap())
            .unwrap()
            .into_iter()
            .map(|b| CertificateDer::from(b.der))
            .collect();
    let key_block = pem::parse(&std::fs::read(pki.join("apiserver.key")).unwrap())
        .unwrap()
        .remove(0);
    assert_eq!(key_block.label, "RSA PRIVATE KEY");
    let key = PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(key_block.der));
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
    std::thread::spawn(move || {
        let Some(Ok(sock)) = listener.incoming().next() else {
            return;
        };
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tls.write_all(&answer.response);
        let _ = tls.flush();
        std::thread::sleep(answer.linger);
        if answer.close_notify {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        // Dropping closes TCP; without close_notify that is a truncation in TLS terms.
    });
    addr
}

fn answer(response: &[u8], close_notify: bool) -> Answer {
    Answer {
        response: response.to_vec(),
        close_notify,
        linger: Duration::ZERO,
    }
}

#[test]
fn an_answer_ended_without_close_notify_is_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let addr = rustls_server(
        &pki,
        answer(b"HTTP/1.0 200 OK\r\n\r\nok, no close_notify", false),
    );
    let probe = get(addr, "/livez", &pki.join("ca.crt")).unwrap();
    assert_eq!(
        (probe.status, probe.body.as_str()),
        (200, "ok, no close_notify")
    );
    assert_eq!(
        serial_hex(&probe.served_leaf_der).unwrap(),
        openssl_serial(&pki.join("apiserver.crt"))
    );
}

#[test]
fn a_chunked_answer_is_decoded() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let addr = rustls_server(
        &pki,
        answer(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
              9\r\n[-]etcd f\r\n6\r\nailed\n\r\n0\r\n\r\n",
            true,
        ),
    );
    let probe = get(addr, "/readyz", &pki.join("ca.crt")).unwrap();
    assert_eq!(
        (probe.status, probe.body.as_str()),
        (503, "[-]etcd failed\n")
    );
}

#[test]
fn a_complete_answer_is_not_held_up_by_a_server_that_keeps_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let addr = rustls_server(
        &pki,
        Answer {
            response: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            close_notify: true,
            linger: Duration::from_secs(8),
        },
    );
    let started = Instant::now();
    let probe = get(addr, "/readyz", &pki.join("ca.crt")).unwrap();
    assert_eq!((probe.status, probe.body.as_str()), (200, "ok"));
    assert_took_less(started, Duration::from_secs(4), "the complete answer");
}

#[test]
fn an_oversized_body_is_cut_at_64_kib() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let mut response = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    response.extend(std::iter::repeat_n(b'x', 300 * 1024));
    let addr = rustls_server(
        &pki,
        Answer {
            response,
            close_notify: true,
            linger: Duration::from_secs(8),
        },
    );
    let probe = get(addr, "/", &pki.join("ca.crt")).unwrap();
    assert_eq!(probe.status, 200);
    assert_eq!(probe.body.len(), 64 * 1024);
}

#[test]
fn a_tls_server_that_does_not_speak_http_is_bad_http() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let addr = rustls_server(&pki, answer(b"SSH-2.0-OpenSSH_9.2\r\n", true));
    let err = get(addr, "/readyz", &pki.join("ca.crt")).unwrap_err();
    assert_error_names(&err, addr, "bad HTTP status line");
}

#[test]
fn a_ca_with_the_same_name_but_another_key_is_not_trusted() {
    // Two nodes: both cluster CAs are CN=kubernetes; only a signature check tells them apart.
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let other = tmp.path().join("other");
    generate(&other, &NodeSpec::new(now(), 30)).unwrap();
    let addr = rustls_server(&pki, answer(b"HTTP/1.0 200 OK\r\n\r\nok", true));
    let err = get(addr, "/readyz", &other.join("pki/ca.crt")).unwrap_err();
    eprintln!("{err}");
    assert!(err.contains("untrusted"), "{err}");
    assert!(err.contains("issuer CN=kubernetes"), "{err}");
}

#[test]
fn an_expired_served_leaf_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Leaves expired two days ago; the CA is still valid.
    let pki = node(tmp.path(), |s| NodeSpec {
        leaf_not_after: now() - time::Duration::days(2),
        ..s
    });
    let addr = rustls_server(&pki, answer(b"HTTP/1.0 200 OK\r\n\r\nok", true));
    let err = get(addr, "/readyz", &pki.join("ca.crt")).unwrap_err();
    assert_error_names(&err, addr, "expired");
}

// ---------------------------------------------------------------------------------------------
// Credential proofs: a kubeconfig's client certificate shown to an API server
// ---------------------------------------------------------------------------------------------

/// A copy of the node's `conf` (beside `pki`) whose server URL is `server`, at `out`.
fn kubeconfig_for(pki: &Path, conf: &str, server: &str, out: &Path) -> PathBuf {
    let text = std::fs::read_to_string(pki.parent().unwrap().join(conf)).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("server: "))
        .unwrap()
        .to_string();
    let changed = text.replace(&line, &format!("    server: {server}"));
    std::fs::write(out, changed).unwrap();
    out.to_path_buf()
}

/// Replaces the client certificate and key of kubeconfig `file` with those of `other`.
fn with_client_of(file: &Path, other: &Path) {
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap()
            .to_string()
    };
    let mut text = std::fs::read_to_string(file).unwrap();
    let theirs = std::fs::read_to_string(other).unwrap();
    for name in ["client-certificate-data:", "client-key-data:"] {
        text = text.replace(&field(&text, name), &field(&theirs, name));
    }
    std::fs::write(file, text).unwrap();
}

/// An API server stand-in that asks for a client certificate and refuses one `client_ca` did
/// not sign, as the kubelet stand-in's does (`extra` adds flags).
fn strict_apiserver(pki: &Path, client_ca: &Path, extra: &[&str]) -> (Guard, u16) {
    let mut args = vec![
        "-CAfile",
        client_ca.to_str().unwrap(),
        "-verify",
        "1",
        "-verify_return_error",
    ];
    args.extend_from_slice(extra);
    s_server(pki, "apiserver", &args)
}

#[test]
fn a_kubeconfig_is_proven_at_the_local_apiserver_and_refused_by_one_that_does_not_trust_it() {
    use kube_cert_renewer::node::health::refused_client_certificate;
    use kube_cert_renewer::node::proof::{ProofError, prove_kubeconfig};
    if !have("openssl", "health-probe") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let other = tmp.path().join("other");
    generate(&other, &NodeSpec::new(now(), 30)).unwrap();
    for tls in [&[][..], &["-tls1_2"][..]] {
        let (_server, port) = strict_apiserver(&pki, &pki.join("ca.crt"), tls);
        let url = format!("https://127.0.0.1:{port}");
        let conf = kubeconfig_for(&pki, "scheduler.conf", &url, &tmp.path().join("s.conf"));
        let line = prove_kubeconfig(&conf, &pki, &[local(port)], Duration::from_secs(5)).unwrap();
        eprintln!("{tls:?}: {line}");
        assert!(
            line.contains(&format!(
                "accepted by the local kube-apiserver at 127.0.0.1:{port}"
            )),
            "{line}"
        );
        assert!(line.contains("CN=system:kube-scheduler"), "{line}");
        // the same kubeconfig with another cluster's client certificate: a TLS alert
        with_client_of(&conf, &other.join("scheduler.conf"));
        let err =
            prove_kubeconfig(&conf, &pki, &[local(port)], Duration::from_secs(5)).unwrap_err();
        eprintln!("{tls:?}: {err}");
        match &err {
            ProofError::Rejected(m) => {
                assert!(m.contains("s.conf"), "{m}");
                assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}");
                assert!(m.contains("refused it in the TLS handshake"), "{m}");
                assert!(refused_client_certificate(m), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_server_url_that_refuses_counts_one_that_cannot_be_reached_does_not() {
    use kube_cert_renewer::node::proof::{ProofError, prove_kubeconfig};
    if !have("openssl", "health-probe") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let other = tmp.path().join("other");
    generate(&other, &NodeSpec::new(now(), 30)).unwrap();
    let (_local, local_port) = strict_apiserver(&pki, &pki.join("ca.crt"), &[]);
    // the server URL is a load balancer in front of an API server trusting another client CA
    let (_remote, remote_port) = strict_apiserver(&pki, &other.join("pki/ca.crt"), &[]);
    let conf = kubeconfig_for(
        &pki,
        "admin.conf",
        &format!("https://localhost:{remote_port}"),
        &tmp.path().join("a.conf"),
    );
    // kubeadm's certificate does not name localhost: that URL's server is not believed at all
    // (as client-go would refuse it), so the local API server alone decides
    let line = prove_kubeconfig(&conf, &pki, &[local(local_port)], Duration::from_secs(5)).unwrap();
    eprintln!("{line}");
    assert!(
        line.contains("not proven at its server https://localhost:")
            && line.contains("is not for localhost"),
        "{line}"
    );
    // with the name the certificate has as its tls-server-name, as client-go needs it too
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        &format!("    server: https://localhost:{remote_port}\n"),
        &format!("    server: https://localhost:{remote_port}\n    tls-server-name: kubernetes\n"),
    );
    assert!(text.contains("tls-server-name"));
    std::fs::write(&conf, text).unwrap();
    let err =
        prove_kubeconfig(&conf, &pki, &[local(local_port)], Duration::from_secs(5)).unwrap_err();
    eprintln!("{err}");
    match &err {
        ProofError::Rejected(m) => {
            assert!(
                m.contains(&format!("its server https://localhost:{remote_port}")),
                "{m}"
            );
            assert!(!m.contains(&format!("127.0.0.1:{local_port}")), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // the server URL does not answer: the local API server alone decides, and the line says so
    let closed = free_port();
    let conf = kubeconfig_for(
        &pki,
        "admin.conf",
        &format!("https://127.0.0.1:{closed}"),
        &tmp.path().join("b.conf"),
    );
    let line = prove_kubeconfig(&conf, &pki, &[local(local_port)], Duration::from_secs(5)).unwrap();
    eprintln!("{line}");
    assert!(
        line.contains("accepted by the local kube-apiserver"),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "not proven at its server https://127.0.0.1:{closed}"
        )) && line.contains("connection refused"),
        "{line}"
    );
    // no local API server and nothing at the URL: nothing is proven, nothing refused
    let err = prove_kubeconfig(&conf, &pki, &[], Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(&err, ProofError::Inconclusive(m) if m.contains("could not be proven")),
        "{err:?}"
    );
}

#[test]
fn what_the_api_server_answers_decides_a_401_or_403_as_anonymous_is_a_refusal() {
    use kube_cert_renewer::node::proof::{ProofError, prove_kubeconfig};
    let tmp = tempfile::tempdir().unwrap();
    let pki = node(tmp.path(), |s| s);
    let prove = |response: &[u8]| {
        let addr = rustls_server(&pki, answer(response, true));
        let conf = kubeconfig_for(
            &pki,
            "controller-manager.conf",
            &format!("https://{addr}"),
            &tmp.path().join(format!("{}.conf", addr.port())),
        );
        prove_kubeconfig(&conf, &pki, &[addr], Duration::from_secs(5))
    };
    let status = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"system:anonymous\" cannot get path \"/api\"","reason":"Forbidden","details":{},"code":403}"#;
    let anonymous = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{status}",
        status.len()
    );
    let anonymous = anonymous.as_bytes();
    let err = prove(anonymous).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, ProofError::Rejected(m) if m.contains("403 Forbidden to system:anonymous")),
        "{err:?}"
    );
    let err =
        prove(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nUnauthorized").unwrap_err();
    assert!(
        matches!(&err, ProofError::Rejected(m) if m.contains("401 Unauthorized")),
        "{err:?}"
    );
    let err = prove(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\nnot ready")
        .unwrap_err();
    assert!(
        matches!(&err, ProofError::Inconclusive(m) if m.contains("503")),
        "{err:?}"
    );
    // authenticated, only not allowed that path: the certificate works
    let named = "forbidden: User \"system:kube-controller-manager\" cannot get path \"/api\"";
    let line = prove(
        format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{named}",
            named.len()
        )
        .as_bytes(),
    )
    .unwrap();
    assert!(line.contains("(HTTP 403)"), "{line}");
}
