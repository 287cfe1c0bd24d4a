//! Credential proofs: after a renewal, each renewed kubeconfig is shown to the API server, which
//! must accept its client certificate.
//!
//! A container that runs, even a component that answers its health endpoint, says nothing about
//! a client certificate: kube-controller-manager serves `/healthz` while every request it makes
//! with a refused `controller-manager.conf` fails, and `admin.conf` is used by no component at
//! all. So the proof is an authenticated request — `GET /api`, which kube-apiserver answers to
//! any authenticated user (RBAC's `system:discovery`) and, since 1.14, to no anonymous one — made
//! with the kubeconfig's own client certificate and key, trusting its own
//! `certificate-authority-data` (else the node's `ca.crt`), at the local kube-apiserver and at the
//! kubeconfig's server URL. It passes when the TLS handshake is accepted and the answer is neither
//! `401` nor a `403` naming `system:anonymous` (the API server ignored the certificate, e.g. one
//! its `--client-ca-file` does not trust while anonymous requests are allowed).
//!
//! Only evidence against the certificate counts against it: a TLS alert refusing it, a `401`, a
//! `403` as anonymous. A server that does not answer, or answers `5xx`, is retried until the
//! restart's deadline. The server URL is often a load balancer in front of every control-plane
//! node: what it refuses is refused, but when it cannot be reached from here the local API server
//! alone decides (and the line says so).
//!
//! # What can be proven on the node, and what cannot
//!
//! | certificate | proven by |
//! |---|---|
//! | `admin.conf`, `super-admin.conf`, `controller-manager.conf`, `scheduler.conf` | this module: the local kube-apiserver accepts the client certificate |
//! | `kubelet.conf` (when it embeds a certificate renewed on request) | this module too; the kubelet itself reads it only when it restarts, which is the operator's (`systemctl restart kubelet`) |
//! | `apiserver` | the restart's health probe: `/readyz` is served with exactly the certificate on disk (serial) |
//! | `apiserver-etcd-client` | kube-apiserver's `/readyz`, whose etcd check passes only when etcd accepted this client certificate |
//! | `etcd-server`, `etcd-healthcheck-client` | etcd's `/health` probe: served with the certificate on disk, answered only to the healthcheck client (`--client-cert-auth`) |
//! | `etcd-peer` | only by the other members of a multi-member etcd; a one-member etcd presents it to nobody |
//! | `apiserver-kubelet-client` | **not on the node**: kube-apiserver presents it only to kubelets serving on 10250 (logs, exec, port-forward); proving it takes a kubelet there and a request through the API server, neither of which a control-plane restart involves |
//! | `front-proxy-client` | **not on the node**: presented only to aggregated API servers (metrics-server and the like), which check it against the front-proxy CA; proving it takes one installed and reachable |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::node::health::{self, Identity, Request, Target, Trust};
use crate::node::restart::{Probes, Settings};
use crate::pki::kubeconfig::{self, ClientCert};

/// The kubeconfigs (kubeadm's names) whose client certificate the API server authenticates,
/// so a renewal of them can be proven here.
pub const PROVABLE_KUBECONFIGS: [&str; 6] = [
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
    crate::pki::kubeadm::KUBELET_CONF,
    crate::pki::kubeadm::LEASE_KUBECONFIG,
];

/// What the proof asks for: the API discovery root, served to every authenticated user and, on
/// kube-apiserver ≥ 1.14, to no anonymous one.
pub const PROOF_PATH: &str = "/api";

/// How many rejections in a row are believed. kube-apiserver loads its client CA before it
/// serves, so one rejection is already telling; three (a poll apart) rule out a server caught in
/// its last moments, without waiting the whole start timeout while a component runs with a
/// refused credential.
pub const REJECTIONS_BELIEVED: u32 = 3;

/// The files to prove out of a renewal's (kubeadm name, file) pairs: the kubeconfigs the API
/// server authenticates ([`PROVABLE_KUBECONFIGS`]), for [`crate::node::restart::TlsProbes`].
pub fn kubeconfigs_to_prove<'a>(
    renewed: impl IntoIterator<Item = (&'a str, &'a Path)>,
) -> Vec<PathBuf> {
    renewed
        .into_iter()
        .filter(|(name, _)| PROVABLE_KUBECONFIGS.contains(name))
        .map(|(_, file)| file.to_path_buf())
        .collect()
}

/// Why a proof did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// A server refused a credential (TLS alert, `401`, `403` as `system:anonymous`), or the
    /// kubeconfig is unusable: the renewed credential does not work.
    Rejected(String),
    /// Nothing could tell yet (no answer, `5xx`): worth asking again until the deadline.
    Inconclusive(String),
}

impl ProofError {
    /// The message, naming the kubeconfig, the address and what the server said or did.
    pub fn message(&self) -> &str {
        match self {
            ProofError::Rejected(m) | ProofError::Inconclusive(m) => m,
        }
    }
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// What one server made of one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated: the HTTP status it answered (`200`, or a `403` to a named user).
    Accepted(u16),
    /// Refused, and how.
    Rejected(String),
    /// Could not tell, and why.
    Inconclusive(String),
}

/// Judges the answer to the authenticated request: `401` and a `403` naming `system:anonymous`
/// refuse the certificate; a `5xx` or `429` (a server starting, a proxy without a backend) tells
/// nothing; anything else was answered to the certificate's user.
pub fn judge(status: u16, body: &str) -> Verdict {
    let said = || {
        let text: String = body.trim().chars().take(200).collect();
        if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    };
    match status {
        401 => Verdict::Rejected(format!(
            "answered 401 Unauthorized, so it does not accept the client certificate{}",
            said()
        )),
        403 if body.contains("system:anonymous") => Verdict::Rejected(format!(
            "answered 403 Forbidden to system:anonymous, so it ignored the client certificate \
             (not signed by a CA of its --client-ca-file?){}",
            said()
        )),
        429 | 500..=599 => Verdict::Inconclusive(format!("answered HTTP {status}{}", said())),
        _ => Verdict::Accepted(status),
    }
}

/// A kubeconfig's credential, ready to present.
struct Credential {
    identity: Identity,
    ca_pem: Vec<u8>,
    ca_source: String,
    server: Option<String>,
    /// The cluster's `tls-server-name`: what the server's certificate must name.
    tls_server_name: Option<String>,
    /// "client certificate CN=…, serial …", for messages.
    describe: String,
}

fn read(file: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("cannot read {what} {}: {e}", file.display()))
}

/// Reads the current-context credential of `file`; the CA is its `certificate-authority-data`,
/// else `pki/ca.crt`.
fn load(file: &Path, pki: &Path) -> Result<Credential, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read it: {e}"))?;
    let credentials = kubeconfig::credentials(&text, file)?;
    let (cert_pem, key_pem) = match credentials.client {
        ClientCert::Embedded {
            cert_pem,
            key_pem: Some(key_pem),
        } => (cert_pem, key_pem),
        ClientCert::Embedded { key_pem: None, .. } => {
            return Err(format!(
                "user {:?} has client-certificate-data but no client-key-data",
                credentials.user
            ));
        }
        ClientCert::Files {
            cert,
            key: Some(key),
        } => (
            read(&cert, "client certificate")?,
            read(&key, "client key")?,
        ),
        ClientCert::Files { cert, key: None } => {
            return Err(format!(
                "user {:?} names client-certificate {} but no client-key",
                credentials.user,
                cert.display()
            ));
        }
    };
    let leaf = crate::pki::inventory::parse_cert_bundle(&cert_pem)
        .map_err(|e| format!("its client certificate: {e}"))?;
    let leaf = leaf
        .first()
        .ok_or("its client certificate holds no certificate")?;
    let describe = format!(
        "client certificate {} (serial {})",
        leaf.subject, leaf.serial_hex
    );
    let (ca_pem, ca_source) = match credentials.ca_pem {
        Some(pem) => (
            pem,
            format!("the certificate-authority-data of {}", file.display()),
        ),
        None => {
            let ca = pki.join("ca.crt");
            (read(&ca, "CA file")?, ca.display().to_string())
        }
    };
    Ok(Credential {
        identity: Identity {
            cert_pem,
            key_pem,
            source: file.display().to_string(),
        },
        ca_pem,
        ca_source,
        server: credentials.server,
        tls_server_name: credentials.tls_server_name,
        describe,
    })
}

/// Where a request went, in an operator's words.
fn place(target: &Target, local: bool, url: Option<&str>) -> String {
    match (local, url) {
        (true, _) => format!("the local kube-apiserver at {}", target.addr),
        (false, Some(url)) => format!("its server {url} ({})", target.addr),
        (false, None) => target.addr.to_string(),
    }
}

/// One attempt at proving `file`'s client certificate: at every address in `local` (the node's
/// kube-apiserver; one of them must accept it) and at the kubeconfig's server URL (which must
/// not refuse it). Ok is the line to report.
pub fn prove_kubeconfig(
    file: &Path,
    pki: &Path,
    local: &[SocketAddr],
    timeout: Duration,
) -> Result<String, ProofError> {
    let name = file.display();
    let credential =
        load(file, pki).map_err(|e| ProofError::Rejected(format!("{name}: unusable: {e}")))?;
    let mut targets: Vec<(Target, bool)> = Target::local_apiserver(local)
        .into_iter()
        .map(|t| (t, true))
        .collect();
    let mut notes = Vec::new();
    if let Some(url) = &credential.server {
        match Target::of_url(url) {
            Ok(found) => {
                for t in found {
                    let t = t.verified_as(credential.tls_server_name.as_deref());
                    let known = |k: &Target| k.addr == t.addr && k.host_name == t.host_name;
                    if !targets.iter().any(|(k, _)| known(k)) {
                        targets.push((t, false));
                    }
                }
            }
            Err(e) => notes.push(format!("its server URL was not tried: {e}")),
        }
    }
    let trust = Trust::Cas {
        pem: &credential.ca_pem,
        source: &credential.ca_source,
    };
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    let mut local_errors = Vec::new();
    let mut local_accepted = false;
    for (target, is_local) in &targets {
        let place = place(target, *is_local, credential.server.as_deref());
        let verdict = match health::request(
            target,
            &Request::get(PROOF_PATH),
            &trust,
            Some(&credential.identity),
            timeout,
        ) {
            Ok(answer) => judge(answer.status, &answer.body),
            Err(e) if health::refused_client_certificate(&e) => {
                Verdict::Rejected(format!("refused it in the TLS handshake: {e}"))
            }
            Err(e) => Verdict::Inconclusive(e),
        };
        match verdict {
            Verdict::Accepted(status) => {
                local_accepted |= is_local;
                accepted.push(format!("{place} (HTTP {status})"));
            }
            Verdict::Rejected(why) => rejected.push(format!("{place} {why}")),
            Verdict::Inconclusive(why) if *is_local => local_errors.push(format!("{place}: {why}")),
            Verdict::Inconclusive(why) => notes.push(format!("not proven at {place}: {why}")),
        }
    }
    let describe = &credential.describe;
    if !rejected.is_empty() {
        return Err(ProofError::Rejected(format!(
            "{name}: its {describe} is refused: {}",
            rejected.join("; ")
        )));
    }
    if targets.is_empty() {
        return Err(ProofError::Inconclusive(format!(
            "{name}: no API server to ask (no local kube-apiserver, no usable server URL{})",
            notes.iter().map(|n| format!("; {n}")).collect::<String>()
        )));
    }
    if (!local.is_empty() && !local_accepted) || accepted.is_empty() {
        let mut why = local_errors;
        why.extend(notes);
        return Err(ProofError::Inconclusive(format!(
            "{name}: its {describe} could not be proven: {}",
            why.join("; ")
        )));
    }
    let mut line = format!("{name}: {describe} accepted by {}", accepted.join(" and "));
    for n in notes {
        line.push_str(&format!("; {n}"));
    }
    Ok(line)
}

/// One attempt at proving every kubeconfig of `kubeconfigs` (concurrently: a server URL that
/// does not answer costs one timeout, not one per file). Any rejection makes the whole a
/// rejection, naming every one; else any inconclusive one makes it inconclusive.
pub fn prove_all(
    kubeconfigs: &[PathBuf],
    pki: &Path,
    local: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<String>, ProofError> {
    let results: Vec<Result<String, ProofError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = kubeconfigs
            .iter()
            .map(|file| scope.spawn(move || prove_kubeconfig(file, pki, local, timeout)))
            .collect();
        handles
            .into_iter()
            .zip(kubeconfigs)
            .map(|(handle, file)| {
                handle.join().unwrap_or_else(|_| {
                    Err(ProofError::Inconclusive(format!(
                        "{}: the proof's thread panicked",
                        file.display()
                    )))
                })
            })
            .collect()
    });
    let mut proven = Vec::new();
    let mut rejected = Vec::new();
    let mut inconclusive = Vec::new();
    for result in results {
        match result {
            Ok(line) => proven.push(line),
            Err(ProofError::Rejected(why)) => rejected.push(why),
            Err(ProofError::Inconclusive(why)) => inconclusive.push(why),
        }
    }
    if !rejected.is_empty() {
        rejected.extend(inconclusive);
        return Err(ProofError::Rejected(rejected.join("; ")));
    }
    if !inconclusive.is_empty() {
        return Err(ProofError::Inconclusive(inconclusive.join("; ")));
    }
    Ok(proven)
}

/// Asks `probes` to prove the credentials every `poll` until they pass, a rejection is seen
/// [`REJECTIONS_BELIEVED`] times in a row, or `deadline` passes (one attempt at least).
pub async fn wait_proven(
    probes: &impl Probes,
    poll: Duration,
    deadline: Instant,
) -> Result<Vec<String>, ProofError> {
    let mut rejections = 0;
    loop {
        let last = match probes.prove_credentials() {
            Ok(lines) => return Ok(lines),
            Err(ProofError::Rejected(why)) => {
                rejections += 1;
                if rejections >= REJECTIONS_BELIEVED {
                    return Err(ProofError::Rejected(why));
                }
                ProofError::Rejected(why)
            }
            Err(other) => {
                rejections = 0;
                other
            }
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        crate::daemon::systemd::beat();
        tokio::time::sleep(poll).await;
    }
}

/// For a renewal that restarted nothing — the renewed kubeconfigs feed no static pod (only
/// `admin.conf`, say) — proves them as a restart would, and when the API server refuses one,
/// puts every file of `backup` back as [`crate::node::restart::restart_with_rollback`] does.
///
/// Ok holds a line per credential proven. The error says what happened to the files: restored
/// after a rejection (and whether the API server accepts the previous credentials), or left in
/// place when nothing answered within `settings.start_timeout` (nothing showed they are wrong;
/// the backup is named).
pub async fn prove_or_restore(
    probes: &impl Probes,
    state_dir: &Path,
    backup: Option<&Path>,
    settings: &Settings,
) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + settings.start_timeout;
    let why = match wait_proven(probes, settings.poll, deadline).await {
        Ok(lines) => return Ok(lines),
        Err(ProofError::Inconclusive(why)) => {
            return Err(format!(
                "the renewed credentials could not be proven within {}s: {why}. They stay in \
                 place{}",
                settings.start_timeout.as_secs(),
                backup
                    .map(|b| format!(" (the previous ones are in {})", b.display()))
                    .unwrap_or_default()
            ));
        }
        Err(ProofError::Rejected(why)) => why,
    };
    let Some(backup) = backup else {
        return Err(format!("a renewed credential does not work: {why}"));
    };
    let restored = crate::node::restart::restore_backup(state_dir, backup).map_err(|e| {
        format!(
            "a renewed credential does not work: {why}; restoring the previous certificates \
             from {} failed too: {e}",
            backup.display()
        )
    })?;
    let again = match wait_proven(
        probes,
        settings.poll,
        Instant::now() + settings.start_timeout,
    )
    .await
    {
        Ok(_) => "the API server accepts them".to_string(),
        Err(e) => format!("but the API server does not accept them either: {e}"),
    };
    Err(format!(
        "a renewed credential does not work: {why}. The previous certificates were restored \
         from {} ({} files): {again}",
        backup.display(),
        restored.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubeconfigs_the_api_server_authenticates_are_proven() {
        let renewed = [
            ("admin.conf", Path::new("/k/admin.conf")),
            ("apiserver", Path::new("/k/pki/apiserver.crt")),
            ("scheduler.conf", Path::new("/k/scheduler.conf")),
            (
                "front-proxy-client",
                Path::new("/k/pki/front-proxy-client.crt"),
            ),
            ("kubelet.conf", Path::new("/k/kubelet.conf")),
        ];
        assert_eq!(
            kubeconfigs_to_prove(renewed),
            [
                PathBuf::from("/k/admin.conf"),
                PathBuf::from("/k/scheduler.conf"),
                PathBuf::from("/k/kubelet.conf")
            ]
        );
    }

    #[test]
    fn answers_are_judged_by_what_they_say_of_the_certificate() {
        assert_eq!(
            judge(200, "{\"kind\":\"APIVersions\"}"),
            Verdict::Accepted(200)
        );
        // authenticated but not authorized: the certificate was accepted
        let named = r#"{"kind":"Status","message":"forbidden: User \"system:kube-scheduler\" cannot get path \"/api\""}"#;
        assert_eq!(judge(403, named), Verdict::Accepted(403));
        assert_eq!(judge(404, ""), Verdict::Accepted(404));
        let anonymous = r#"{"kind":"Status","status":"Failure","message":"forbidden: User \"system:anonymous\" cannot get path \"/api\"","reason":"Forbidden","code":403}"#;
        match judge(403, anonymous) {
            Verdict::Rejected(why) => {
                assert!(why.contains("ignored the client certificate"), "{why}");
                assert!(why.contains("system:anonymous"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        match judge(401, "Unauthorized") {
            Verdict::Rejected(why) => assert!(why.contains("401 Unauthorized"), "{why}"),
            other => panic!("{other:?}"),
        }
        for status in [429, 500, 503] {
            assert!(
                matches!(judge(status, "not ready"), Verdict::Inconclusive(_)),
                "{status}"
            );
        }
    }

    #[test]
    fn an_unusable_kubeconfig_is_rejected_without_asking_anyone() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("admin.conf");
        let local = ["127.0.0.1:9".parse().unwrap()];
        let err = prove_kubeconfig(&file, tmp.path(), &local, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&err, ProofError::Rejected(m) if m.contains("admin.conf") && m.contains("cannot read")),
            "{err:?}"
        );
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n- name: a\n  context:\n    \
             cluster: c\n    user: u\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:9\n\
             users:\n- name: u\n  user:\n    client-certificate-data: AAAA\n",
        )
        .unwrap();
        let err = prove_kubeconfig(&file, tmp.path(), &local, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&err, ProofError::Rejected(m) if m.contains("no client-key-data")),
            "{err:?}"
        );
    }

    #[test]
    fn nothing_listening_is_inconclusive_and_names_the_kubeconfig_and_address() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("k");
        crate::demo::nodegen::generate(
            &dir,
            &crate::demo::nodegen::NodeSpec::new(time::OffsetDateTime::now_utc(), 30),
        )
        .unwrap();
        // a port nothing listens on (bound, then released)
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let local: SocketAddr = ([127, 0, 0, 1], port).into();
        let file = dir.join("scheduler.conf");
        let err = prove_all(
            std::slice::from_ref(&file),
            &dir.join("pki"),
            &[local],
            Duration::from_secs(2),
        )
        .unwrap_err();
        match err {
            ProofError::Inconclusive(m) => {
                assert!(m.contains("scheduler.conf"), "{m}");
                assert!(m.contains(&local.to_string()), "{m}");
                assert!(m.contains("connection refused"), "{m}");
                assert!(m.contains("CN=system:kube-scheduler"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // nothing to prove is proven at once
        assert_eq!(
            prove_all(&[], &dir.join("pki"), &[local], Duration::from_secs(1)),
            Ok(Vec::new())
        );
    }
}
