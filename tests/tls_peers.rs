//! Real TLS peers accept renewed certificates: Debian's etcd serving the renewed etcd server
//! certificate and requiring client certificates, etcdctl presenting the renewed clients, and
//! `openssl s_server` / `s_client` with the renewed apiserver and admin.conf credentials.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A renewed node: the real v1.16 tree.
fn renewed_node(tmp: &Path) -> PathBuf {
    let dir = tmp.join("k");
    let now = now();
    let tree = fixtures()
        .into_iter()
        .find(|t| t.ends_with("v1.16-stacked-etcd"))
        .expect("the v1.16 fixture");
    copy_tree(&tree, &dir);
    let (code, out, err) = renew(now, &dir, &tmp.join("state"), &["all"]);
    assert_eq!(code, 0, "{out}{err}");
    dir
}

/// The serial of the certificate a TLS server presents (client cert optional). With `http`, an
/// HTTP request must also be answered (so a server that rejects the client cert after a TLS 1.3
/// handshake counts as a failure).
fn served_serial(port: u16, ca: &Path, client: Option<(&Path, &Path)>) -> Result<String, String> {
    served_serial_http(port, ca, client, false)
}

fn served_serial_http(
    port: u16,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    http: bool,
) -> Result<String, String> {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
        "-CAfile".into(),
        ca.display().to_string(),
        "-verify_return_error".into(),
    ];
    if let Some((cert, key)) = client {
        args.extend([
            "-cert".into(),
            cert.display().to_string(),
            "-key".into(),
            key.display().to_string(),
        ]);
    }
    if http {
        args.push("-ign_eof".into());
    }
    let mut child = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        if http {
            let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if http && !text.contains("HTTP/1.0 200 ok") {
        return Err(format!(
            "no HTTP answer (client certificate refused?): {text}"
        ));
    }
    let begin = text.find("-----BEGIN CERTIFICATE-----").ok_or_else(|| {
        format!(
            "no certificate: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let end =
        text.find("-----END CERTIFICATE-----").ok_or("no end")? + "-----END CERTIFICATE-----".len();
    let pem_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pem_file.path(), &text[begin..end]).unwrap();
    if !text.contains("Verify return code: 0 (ok)") {
        return Err(format!("verification failed: {text}"));
    }
    Ok(openssl_serial(pem_file.path()))
}

fn etcdctl_health(port: u16, pki: &Path, cert: &str) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &format!("https://127.0.0.1:{port}"),
            "--cacert",
            pki.join("etcd/ca.crt").to_str().unwrap(),
            "--cert",
            pki.join(format!("{cert}.crt")).to_str().unwrap(),
            "--key",
            pki.join(format!("{cert}.key")).to_str().unwrap(),
            "--dial-timeout",
            "3s",
            "endpoint",
            "health",
        ])
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("is healthy"), text)
}

#[test]
fn etcd_serves_the_renewed_server_certificate_and_accepts_the_renewed_clients() {
    if !have("etcd", "real-TLS-peer") || !have("etcdctl", "real-TLS-peer") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = renewed_node(tmp.path());
    let pki = dir.join("pki");
    let (etcd, client) = start_etcd(tmp.path(), &pki);
    wait_etcd_healthy(tmp.path(), || {
        match etcdctl_health(client, &pki, "etcd/healthcheck-client") {
            (true, _) => Ok(()),
            (false, text) => Err(text),
        }
    });
    let (ok, text) = etcdctl_health(client, &pki, "apiserver-etcd-client");
    assert!(ok, "apiserver-etcd-client rejected: {text}");
    // Control: a client certificate from the cluster CA is refused, so client auth is real.
    let (ok, _) = etcdctl_health(client, &pki, "apiserver-kubelet-client");
    assert!(
        !ok,
        "etcd accepted a certificate from the wrong CA: client-cert-auth is not in force"
    );
    // The certificate etcd serves is the renewed one.
    let served = served_serial(
        client,
        &pki.join("etcd/ca.crt"),
        Some((
            &pki.join("etcd/healthcheck-client.crt"),
            &pki.join("etcd/healthcheck-client.key"),
        )),
    )
    .unwrap();
    assert_eq!(served, openssl_serial(&pki.join("etcd/server.crt")));
    drop(etcd);
}

#[test]
fn openssl_peers_accept_the_renewed_apiserver_and_admin_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = renewed_node(tmp.path());
    let pki = dir.join("pki");
    let admin_crt = tmp.path().join("admin.crt");
    let admin_key = tmp.path().join("admin.key");
    extract_kubeconfig_cert(&dir.join("admin.conf"), &admin_crt);
    extract_kubeconfig_key(&dir.join("admin.conf"), &admin_key);
    // Requires a client certificate from ca.crt.
    let (_server, port) = s_server(&pki, "apiserver", &["-Verify", "1", "-verify_return_error"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        match served_serial_http(
            port,
            &pki.join("ca.crt"),
            Some((&admin_crt, &admin_key)),
            true,
        ) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "s_client never succeeded: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(served, openssl_serial(&pki.join("apiserver.crt")));
    // Control: the server really requires a client certificate from ca.crt.
    let wrong = served_serial_http(
        port,
        &pki.join("ca.crt"),
        Some((
            &pki.join("front-proxy-client.crt"),
            &pki.join("front-proxy-client.key"),
        )),
        true,
    );
    assert!(
        wrong.is_err(),
        "s_server accepted a client certificate from another CA: the check proves nothing"
    );
    let none = served_serial_http(port, &pki.join("ca.crt"), None, true);
    assert!(
        none.is_err(),
        "s_server accepted a client without a certificate"
    );
    // A strict client also checks the name: the renewed certificate still carries the SANs.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            pki.join("ca.crt").to_str().unwrap(),
            "-cert",
            admin_crt.to_str().unwrap(),
            "-key",
            admin_key.to_str().unwrap(),
            "-verify_return_error",
            "-verify_hostname",
            "kubernetes.default.svc",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
