//! Health probes over TLS: what the restart step asks of kube-apiserver and etcd after a restart.
//!
//! A restarted component that answers `200` proves little on its own: a process that did not
//! really restart still serves the OLD certificate. So a probe also returns the leaf the server
//! presented, and the caller compares its serial with the file it just wrote.
//!
//! The server is verified as client-go verifies it (rustls's `WebPkiServerVerifier`, i.e.
//! rustls-webpki): a chain to one of the CA certificates given (the node's CA file or a
//! kubeconfig's `certificate-authority-data`, never the system trust store), within its validity
//! period, an end-entity certificate (not CA:TRUE), the serverAuth extended key usage when it
//! names usages, and a SAN matching the name the connection is for ([`Target`]: the URL's host,
//! a kubeconfig's `tls-server-name`, or — for the local kube-apiserver dialled on loopback, which
//! kubeadm's certificate does not name — its advertise address or `kubernetes`). So a
//! certificate the cluster CA signed for someone else (a kubelet's client certificate, any
//! CSR-API certificate) cannot pose as the API server or as etcd. The one exception is
//! [`Trust::AnyServer`], for the self-signed `/healthz` of kube-controller-manager and
//! kube-scheduler.
//!
//! The same client carries the few cluster API calls the product makes (the Lease, credential
//! proofs, etcd's member list): [`request`] takes a method, a JSON body, credentials in memory
//! and a [`Trust`].
//!
//! The probe is synchronous and self-contained (one TCP connection, one request, one deadline)
//! because it runs once per restart from a blocking code path; an async runtime would add
//! nothing but moving parts.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::cert::CertFacts;
use crate::pki::pem;

/// The most body kept: health endpoints answer a few bytes; anything bigger is not a probe
/// answer worth holding in memory or in a report.
pub const MAX_BODY: usize = 64 * 1024;

/// The most raw response bytes read (headers, chunk framing and the kept body); past this the
/// probe stops reading instead of draining a server that never stops talking.
const MAX_RAW: usize = MAX_BODY + 16 * 1024;

/// What one HTTPS probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// HTTP status code of the response.
    pub status: u16,
    /// Response body (lossy UTF-8, at most 64 KiB kept).
    pub body: String,
    /// DER of the leaf certificate the server presented.
    pub served_leaf_der: Vec<u8>,
}

/// Client credentials to present (PEM files; key in PKCS#1, SEC1 or PKCS#8), because etcd runs
/// with `--client-cert-auth` and answers nobody without one.
#[derive(Debug, Clone, Copy)]
pub struct ClientCert<'a> {
    /// Certificate chain, leaf first.
    pub cert: &'a Path,
    /// Private key of the leaf.
    pub key: &'a Path,
}

/// GET `path` over HTTPS from `addr` (e.g. 127.0.0.1:2379), whose certificate must name that
/// address: [`https_get_from`] with [`Target::ip`].
pub fn https_get(
    addr: SocketAddr,
    path: &str,
    ca_file: &Path,
    client: Option<ClientCert<'_>>,
    timeout: Duration,
) -> Result<Probe, String> {
    https_get_from(&Target::ip(addr), path, ca_file, client, timeout)
}

/// GET `path` over HTTPS from `target`. The server must present a certificate that chains to one
/// of the CA certificates in `ca_file` (a PEM file that may hold a bundle) and is a server's for
/// the name `target` is verified as (see the module doc), and the TLS handshake signature must
/// verify with the leaf's key, so the server proves it holds the new key rather than replaying a
/// certificate. Every failure is an Err(String) naming the address and what went wrong
/// (connection refused, timeout, handshake failure, untrusted cert with its issuer or names, bad
/// HTTP), because the message ends up in an operator's log after a failed restart. `timeout`
/// bounds connect + handshake + whole response.
pub fn https_get_from(
    target: &Target,
    path: &str,
    ca_file: &Path,
    client: Option<ClientCert<'_>>,
    timeout: Duration,
) -> Result<Probe, String> {
    let call = || -> Result<Probe, String> {
        check_request(&Request::get(path), timeout)?;
        let ca_pem = std::fs::read(ca_file)
            .map_err(|e| format!("cannot read CA file {}: {e}", ca_file.display()))?;
        let identity = client.map(Identity::from_files).transpose()?;
        request(
            target,
            &Request::get(path),
            &Trust::Cas {
                pem: &ca_pem,
                source: &ca_file.display().to_string(),
            },
            identity.as_ref(),
            timeout,
        )
    };
    call().map_err(|e| format!("https://{}{path}: {e}", target.addr))
}

/// Whom the server must be: what a probe or an API call trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// A server certificate for the target's name, chaining to one of the CA certificates of
    /// this PEM bundle (from the node's pki dir or a kubeconfig's
    /// `certificate-authority-data`); `source` names it in messages.
    Cas {
        /// The PEM bundle.
        pem: &'a [u8],
        /// Where it came from (a file, a kubeconfig).
        source: &'a str,
    },
    /// Any leaf, as long as the server proves it holds its key. Only for the `/healthz` of
    /// kube-controller-manager and kube-scheduler: they serve a self-signed certificate they make
    /// at start (kubelet's own liveness probes do not verify it either), so there is no CA to
    /// check it against — and nothing but `ok` is believed from them.
    AnyServer,
}

/// A client certificate and its key in memory (PEM), from files or from a kubeconfig.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The leaf's private key (PKCS#1, SEC1 or PKCS#8).
    pub key_pem: Vec<u8>,
    /// Where it came from, for messages.
    pub source: String,
}

impl Identity {
    /// Reads a certificate and key file pair.
    pub fn from_files(files: ClientCert<'_>) -> Result<Identity, String> {
        Ok(Identity {
            cert_pem: std::fs::read(files.cert).map_err(|e| {
                format!(
                    "cannot read client certificate {}: {e}",
                    files.cert.display()
                )
            })?,
            key_pem: std::fs::read(files.key)
                .map_err(|e| format!("cannot read client key {}: {e}", files.key.display()))?,
            source: format!("{} / {}", files.cert.display(), files.key.display()),
        })
    }
}

/// Where to connect, and whom the certificate must name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The socket address connected to.
    pub addr: SocketAddr,
    /// The URL's host when it was a name (a control-plane endpoint such as
    /// `k8s-api.example:6443`), sent as SNI and `Host`; `None` for an IP address.
    pub host_name: Option<String>,
    /// The DNS name or IP address the served certificate must carry instead of the host dialled
    /// (`host_name`, else the address), never sent: a kubeconfig's `tls-server-name` (as
    /// client-go verifies it), or the local kube-apiserver's identity when it is dialled on
    /// loopback (see [`Target::local_apiserver`]).
    pub verify_as: Option<String>,
}

/// The name a loopback connection to the local kube-apiserver is verified as when its manifest
/// gives no other address: the Service name kubeadm puts in every API server certificate
/// (v1.8 to today).
pub const APISERVER_SERVICE_NAME: &str = "kubernetes";

impl Target {
    /// An IP address, no name: no SNI, so kube-apiserver serves its default certificate; the
    /// certificate must name that address.
    pub fn ip(addr: SocketAddr) -> Target {
        Target {
            addr,
            host_name: None,
            verify_as: None,
        }
    }

    /// This target, its certificate verified as `name` (a kubeconfig's `tls-server-name`) when
    /// one is given.
    pub fn verified_as(self, name: Option<&str>) -> Target {
        Target {
            verify_as: name.map(str::to_string).or(self.verify_as),
            ..self
        }
    }

    /// The local kube-apiserver at each of `addresses` (from its manifest: the bind address, or
    /// the advertise address then loopback). A non-loopback address must be named by the
    /// certificate, as it is for any client dialling it; kubeadm's certificate never names
    /// loopback, so a loopback address is verified as the first non-loopback address of the list
    /// (the advertise address, which kubeadm always puts in it), else as
    /// [`APISERVER_SERVICE_NAME`].
    pub fn local_apiserver(addresses: &[SocketAddr]) -> Vec<Target> {
        let advertised = addresses
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| APISERVER_SERVICE_NAME.to_string());
        addresses
            .iter()
            .map(|addr| {
                let target = Target::ip(*addr);
                if addr.ip().is_loopback() {
                    target.verified_as(Some(&advertised))
                } else {
                    target
                }
            })
            .collect()
    }

    /// The name the served certificate must carry (see [`Target::verify_as`]).
    pub fn expected_name(&self) -> Result<ServerName<'static>, String> {
        let name = match (&self.verify_as, &self.host_name) {
            (Some(name), _) | (None, Some(name)) => name.clone(),
            (None, None) => return Ok(ServerName::IpAddress(self.addr.ip().into())),
        };
        ServerName::try_from(name.clone())
            .map_err(|e| format!("{name:?} is not a valid server name: {e}"))
    }

    /// The targets of an `https://host[:port]` URL (a kubeconfig's `server`): a name is resolved
    /// (every address it has, in the resolver's order), the port defaults to 443.
    pub fn of_url(url: &str) -> Result<Vec<Target>, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url:?} is not an https:// URL"))?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{url:?}: {p:?} is not a port"))?,
        };
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![Target::ip(SocketAddr::new(ip, port))]);
        }
        use std::net::ToSocketAddrs;
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: cannot resolve {host}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{url:?}: {host} has no address"));
        }
        Ok(addrs
            .into_iter()
            .map(|addr| Target {
                addr,
                host_name: Some(host.to_string()),
                verify_as: None,
            })
            .collect())
    }
}

/// One HTTP request: method, path (with query), and a JSON body for writes.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, `PUT`.
    pub method: &'a str,
    /// Path and query, e.g. `/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x`.
    pub path: &'a str,
    /// A JSON body, sent with `Content-Type: application/json`.
    pub json: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// A GET of `path`.
    pub fn get(path: &'a str) -> Request<'a> {
        Request {
            method: "GET",
            path,
            json: None,
        }
    }
}

/// Serial of a DER certificate as lower-case hex without separators (same format as
/// crate::pki::cert::CertFacts::serial_hex), so a served leaf compares directly with the file on disk.
pub fn serial_hex(der: &[u8]) -> Result<String, String> {
    CertFacts::from_der(der).map(|facts| facts.serial_hex)
}

/// True when an etcd `/health` answer says the member is healthy (`"health":"true"`; a JSON
/// boolean `true` is accepted too). A substring test would also match `"reason":"health:true"`
/// style noise, so the JSON is parsed.
pub fn etcd_healthy(body: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(body.trim()) {
        Ok(value) => match value.get("health") {
            Some(serde_json::Value::String(s)) => s == "true",
            Some(serde_json::Value::Bool(b)) => *b,
            _ => false,
        },
        Err(_) => false,
    }
}

/// Refuses, before any I/O, a request that cannot be sent as asked.
fn check_request(req: &Request<'_>, timeout: Duration) -> Result<(), String> {
    let path = req.path;
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid request path {path:?} (must start with / and hold no spaces)"
        ));
    }
    if !["GET", "POST", "PUT", "DELETE"].contains(&req.method) {
        return Err(format!("unsupported HTTP method {:?}", req.method));
    }
    if timeout.is_zero() {
        return Err("zero timeout".into());
    }
    Ok(())
}

/// Sends `req` over HTTPS to `target` and reads the whole answer (at most [`MAX_BODY`] of body):
/// the server must satisfy `trust` and prove its key in the handshake; `client` is presented
/// when the server asks. Errors say what went wrong in an operator's words (see [`https_get`]);
/// `timeout` bounds the whole exchange.
pub fn request(
    target: &Target,
    req: &Request<'_>,
    trust: &Trust<'_>,
    client: Option<&Identity>,
    timeout: Duration,
) -> Result<Probe, String> {
    let path = req.path;
    check_request(req, timeout)?;
    let addr = target.addr;
    let deadline = Instant::now() + timeout;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(ServerVerifier::new(
        trust,
        target.expected_name()?,
        &provider,
    )?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let config = match client {
        Some(identity) => {
            let (chain, key) = load_identity(identity)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {} unusable: {e}", identity.source))?
        }
        None => builder.with_no_client_auth(),
    };
    // An IP server name sends no SNI: kube-apiserver then serves its default certificate (the
    // one being renewed) rather than an --tls-sni-cert-key one matching some name we guessed.
    // A name from a URL is sent, as kubectl does (a load balancer may route by it).
    let server_name = match &target.host_name {
        Some(name) => ServerName::try_from(name.clone())
            .map_err(|e| format!("{name:?} is not a valid server name: {e}"))?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let conn = ClientConnection::new(Arc::new(config), server_name)
        .map_err(|e| format!("TLS setup: {e}"))?;

    let sock = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(sock) => sock,
        Err(e) => {
            return Err(match e.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    format!("connect timed out after {timeout:?}")
                }
                _ => format!("cannot connect: {e}"),
            });
        }
    };
    let _ = sock.set_nodelay(true);
    let mut tls = StreamOwned::new(conn, DeadlineSocket { sock, deadline });

    // Handshake explicitly, so its failures are told apart from the HTTP exchange's.
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            if let Some(why) = verifier.rejection() {
                return Err(why);
            }
            return Err(match e.kind() {
                io::ErrorKind::TimedOut => {
                    format!("timed out after {timeout:?} during the TLS handshake")
                }
                io::ErrorKind::UnexpectedEof => {
                    "server closed the connection during the TLS handshake".to_string()
                }
                io::ErrorKind::ConnectionReset => {
                    "connection reset during the TLS handshake".to_string()
                }
                _ => format!("TLS handshake failed: {e}{}", client_cert_hint(&e)),
            });
        }
    }
    let served_leaf_der = tls
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.as_ref().to_vec())
        .ok_or("server presented no certificate")?;

    let host = match &target.host_name {
        Some(name) => format!("{name}:{}", addr.port()),
        None => addr.to_string(),
    };
    let mut request = format!(
        "{} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json, */*\r\n\
         User-Agent: kube-cert-renewer/{}\r\nConnection: close\r\n",
        req.method,
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    match req.json {
        Some(body) => {
            request.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            request.extend_from_slice(body);
        }
        None if req.method != "GET" => request.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        None => request.extend_from_slice(b"\r\n"),
    }
    if let Err(e) = tls.write_all(&request).and_then(|()| tls.flush()) {
        return Err(exchange_error("sending the request", &e, timeout));
    }

    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if raw.len() >= MAX_RAW || response_complete(&raw) {
            break;
        }
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The server dropped TCP without close_notify after answering (openssl s_server
            // sends one, not every server does): what arrived is enough to judge.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => {
                return Err(if raw.is_empty() {
                    exchange_error("waiting for the response", &e, timeout)
                } else {
                    exchange_error("reading the response", &e, timeout)
                });
            }
        }
    }
    // Politeness only: the answer is in hand whatever the server does with this.
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);

    if raw.is_empty() {
        return Err("server closed the connection without answering \
             (did it reject the client certificate?)"
            .into());
    }
    let (status, body) = parse_response(&raw, raw.len() >= MAX_RAW)?;
    let kept = &body[..body.len().min(MAX_BODY)];
    Ok(Probe {
        status,
        body: String::from_utf8_lossy(kept).into_owned(),
        served_leaf_der,
    })
}

/// Describes an I/O error after the handshake; a TLS alert here usually means the server
/// refused our client certificate (TLS 1.3 reports that only after the client's Finished).
fn exchange_error(during: &str, e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut => format!("timed out after {timeout:?} {during}"),
        io::ErrorKind::UnexpectedEof => {
            format!("server closed the connection {during} (did it reject the client certificate?)")
        }
        io::ErrorKind::ConnectionReset => format!("connection reset {during}"),
        io::ErrorKind::InvalidData => format!("TLS error {during}: {e}{}", client_cert_hint(e)),
        _ => format!("I/O error {during}: {e}"),
    }
}

/// A hint when the server's alert says it refused our client certificate (or its absence): the
/// bare alert name does not tell an operator which side to look at.
fn client_cert_hint(e: &io::Error) -> &'static str {
    use rustls::AlertDescription as A;
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(
            A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::UnsupportedCertificate
            | A::AccessDenied,
        )) => CLIENT_CERT_REFUSED_HINT,
        _ => "",
    }
}

/// What [`client_cert_hint`] appends: the words [`refused_client_certificate`] looks for.
const CLIENT_CERT_REFUSED_HINT: &str =
    " (the server refused the client certificate, or its absence)";

/// True when a [`request`] error says the server answered our client certificate with a TLS
/// alert refusing it (unknown CA, bad or expired certificate, access denied): the one failure
/// that proves something about the credential rather than about the network or the server, so
/// a credential proof can tell "refused" from "not reachable yet".
pub fn refused_client_certificate(error: &str) -> bool {
    error.contains(CLIENT_CERT_REFUSED_HINT.trim_start())
}

/// A socket whose every read and write gets the time left until one deadline, so a server that
/// trickles bytes cannot stretch the probe past its timeout.
struct DeadlineSocket {
    sock: TcpStream,
    deadline: Instant,
}

impl DeadlineSocket {
    fn remaining(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
        } else {
            Ok(left)
        }
    }
}

/// Linux reports an expired SO_RCVTIMEO/SO_SNDTIMEO as EAGAIN; rustls would take that for a
/// non-blocking socket, so it becomes the timeout it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, e)
    } else {
        e
    }
}

impl Read for DeadlineSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.sock.set_read_timeout(Some(left))?;
        self.sock.read(buf).map_err(timed_out)
    }
}

impl Write for DeadlineSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.sock.set_write_timeout(Some(left))?;
        self.sock.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Parses the client chain and key with the crate's strict PEM reader, so a broken file gets the
/// same precise message here as everywhere else.
fn load_identity(
    identity: &Identity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let source = &identity.source;
    let chain: Vec<CertificateDer<'static>> = pem::parse(&identity.cert_pem)
        .map_err(|e| format!("client certificate {source}: {e}"))?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.der))
        .collect();
    if chain.is_empty() {
        return Err(format!(
            "client certificate {source} holds no CERTIFICATE block"
        ));
    }
    let blocks = pem::parse(&identity.key_pem).map_err(|e| format!("client key {source}: {e}"))?;
    let key = blocks
        .into_iter()
        .find_map(|b| match b.label.as_str() {
            "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(b.der))),
            "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(b.der))),
            "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(b.der))),
            _ => None,
        })
        .ok_or_else(|| format!("client key {source} holds no RSA/EC/PKCS#8 PRIVATE KEY block"))?;
    Ok((chain, key))
}

/// Verifies the server as client-go would (see the module doc): rustls's WebPki verifier for
/// the chain, dates, end-entity, serverAuth and name checks, with `expected` as the name
/// whatever SNI was sent; then turns its refusal into an operator's sentence about the
/// certificate served.
#[derive(Debug)]
struct ServerVerifier {
    /// `None` trusts any leaf ([`Trust::AnyServer`]).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// Where the CAs came from, and their subjects, for messages.
    ca_source: String,
    ca_subjects: Vec<String>,
    /// The name the certificate must carry.
    expected: ServerName<'static>,
    algorithms: WebPkiSupportedAlgorithms,
    /// Why the last leaf was refused, in words for the operator; rustls's own error type would
    /// only say "invalid peer certificate: …" without the certificate it is about.
    rejected: Mutex<Option<String>>,
}

impl ServerVerifier {
    fn new(
        trust: &Trust<'_>,
        expected: ServerName<'static>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<ServerVerifier, String> {
        let mut verifier = ServerVerifier {
            webpki: None,
            ca_source: String::new(),
            ca_subjects: Vec::new(),
            expected,
            algorithms: provider.signature_verification_algorithms,
            rejected: Mutex::new(None),
        };
        let Trust::Cas { pem, source } = trust else {
            return Ok(verifier);
        };
        let mut roots = RootCertStore::empty();
        for block in pem::parse(pem).map_err(|e| format!("CA file {source}: {e}"))? {
            if block.label != "CERTIFICATE" {
                continue;
            }
            let n = verifier.ca_subjects.len() + 1;
            let (_, ca) = X509Certificate::from_der(&block.der).map_err(|e| {
                format!("CA file {source}: certificate {n} is not valid X.509: {e}")
            })?;
            verifier.ca_subjects.push(ca.subject().to_string());
            roots
                .add(CertificateDer::from(block.der.clone()))
                .map_err(|e| {
                    format!("CA file {source}: certificate {n} cannot be trusted as a CA: {e}")
                })?;
        }
        if roots.is_empty() {
            return Err(format!("CA file {source} holds no CERTIFICATE block"));
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("CA file {source}: {e}"))?;
        verifier.webpki = Some(webpki);
        verifier.ca_source = source.to_string();
        Ok(verifier)
    }

    fn rejection(&self) -> Option<String> {
        self.rejected.lock().ok().and_then(|r| r.clone())
    }

    /// Says why `leaf_der` was refused with `error`, naming the certificate and what it lacks.
    fn explain(&self, leaf_der: &[u8], error: &rustls::Error) -> String {
        let Ok((_, leaf)) = X509Certificate::from_der(leaf_der) else {
            return format!("served certificate is not valid X.509: {error}");
        };
        let describe = format!(
            "served certificate (subject {}, serial {})",
            leaf.subject(),
            crate::pki::cert::hex(leaf.raw_serial())
        );
        let validity = leaf.validity();
        let expected = match &self.expected {
            ServerName::DnsName(name) => name.as_ref().to_string(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        };
        let rustls::Error::InvalidCertificate(why) = error else {
            return format!("{describe} refused: {error}");
        };
        match why {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "untrusted certificate: {describe} has issuer {} but is not signed by any CA in \
                 {} (which holds {})",
                leaf.issuer(),
                self.ca_source,
                self.ca_subjects.join("; ")
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "{describe} is not for {expected}: it names {} (another server's \
                     certificate)",
                    names_of(&leaf)
                )
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                format!(
                    "{describe} is not a server certificate: its extended key usage is {} \
                     (serverAuth needed; a client certificate cannot pose as a server)",
                    usages_of(&leaf)
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("{describe} expired at {}", rfc3339(&validity.not_after))
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!(
                    "{describe} is not valid before {} (clock skew?)",
                    rfc3339(&validity.not_before)
                )
            }
            _ if leaf.is_ca() => format!(
                "{describe} is a CA certificate (CA:TRUE): a server must present an end-entity \
                 certificate"
            ),
            _ => format!("{describe} refused: {error}"),
        }
    }
}

/// The SANs of `cert` (DNS names and IPs), for a message.
fn names_of(cert: &X509Certificate<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "no DNS name or IP address".to_string()
    } else {
        names.join(", ")
    }
}

/// The extended key usages of `cert`, for a message.
fn usages_of(cert: &X509Certificate<'_>) -> String {
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return "absent".to_string();
    };
    let eku = eku.value;
    let mut usages = Vec::new();
    for (set, name) in [
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
        (eku.any, "any"),
    ] {
        if set {
            usages.push(name.to_string());
        }
    }
    usages.extend(eku.other.iter().map(|oid| oid.to_id_string()));
    if usages.is_empty() {
        "empty".to_string()
    } else {
        usages.join(", ")
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _sni: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        webpki
            .verify_server_cert(
                end_entity,
                intermediates,
                &self.expected,
                ocsp_response,
                now,
            )
            .inspect_err(|error| {
                if let Ok(mut slot) = self.rejected.lock() {
                    *slot = Some(self.explain(end_entity.as_ref(), error));
                }
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn rfc3339(t: &x509_parser::time::ASN1Time) -> String {
    t.to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`, `HTTP/1.0 200 ok`,
/// `HTTP/1.1 204`).
fn parse_status_line(line: &str) -> Result<u16, String> {
    let bad = || format!("bad HTTP status line {:?}", truncate(line, 80));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(bad)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Where the header block ends: (index of the first body byte).
fn header_end(raw: &[u8]) -> Option<usize> {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The parts of a header block the probe needs.
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let status = parse_status_line(lines.next().unwrap_or_default().trim_end())?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad HTTP Content-Length {value:?}"))?,
            );
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

/// True when `status` carries no body whatever the headers say.
fn bodiless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// True once the whole response is in `raw`, so the probe need not wait for the server to close
/// (some keep the connection open despite `Connection: close`).
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = header_end(raw) else {
        return false;
    };
    let Ok(head) = parse_head(&raw[..end]) else {
        // Malformed: stop reading and let parse_response say why.
        return true;
    };
    let body = &raw[end..];
    if bodiless(head.status) {
        true
    } else if head.chunked {
        matches!(decode_chunked(body), Ok((_, true)))
    } else if let Some(len) = head.content_length {
        body.len() >= len
    } else {
        false
    }
}

/// Decodes a chunked body: (data, whether the terminating zero chunk was seen).
fn decode_chunked(mut rest: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
            return Ok((out, false));
        };
        let size_line = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad HTTP chunk size {:?}", truncate(size_text, 20)))?;
        rest = &rest[eol + 1..];
        if size == 0 {
            return Ok((out, true));
        }
        if rest.len() < size {
            out.extend_from_slice(rest);
            return Ok((out, false));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        rest = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
            .unwrap_or(rest);
    }
}

/// Status and body of a raw HTTP/1.x response. `capped` says the probe stopped reading at its
/// size limit, so a short body is expected rather than a sign of a broken server.
fn parse_response(raw: &[u8], capped: bool) -> Result<(u16, Vec<u8>), String> {
    let end = header_end(raw).ok_or_else(|| {
        let first = String::from_utf8_lossy(&raw[..raw.len().min(80)]).into_owned();
        // A first line that is not HTTP gets that message; otherwise the head was cut short.
        match parse_status_line(first.lines().next().unwrap_or_default()) {
            Err(e) => e,
            Ok(_) => "HTTP response ended inside its headers".to_string(),
        }
    })?;
    let head = parse_head(&raw[..end])?;
    let rest = &raw[end..];
    let body = if bodiless(head.status) {
        Vec::new()
    } else if head.chunked {
        let (data, done) = decode_chunked(rest)?;
        if !done && !capped {
            return Err("HTTP chunked body ended without its last chunk".into());
        }
        data
    } else if let Some(len) = head.content_length {
        if rest.len() < len && !capped {
            return Err(format!(
                "HTTP body cut short: Content-Length {len} but {} bytes arrived",
                rest.len()
            ));
        }
        rest[..rest.len().min(len)].to_vec()
    } else {
        rest.to_vec()
    };
    Ok((head.status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status_line("HTTP/1.0 200 ok"), Ok(200));
        assert_eq!(parse_status_line("HTTP/1.1 204"), Ok(204));
        assert_eq!(
            parse_status_line("HTTP/1.1 503 Service Unavailable"),
            Ok(503)
        );
        for bad in [
            "",
            "HTTP/1.1",
            "HTTP/1.1 20 OK",
            "HTTP/1.1 2000 OK",
            "HTTP/1.1 abc OK",
            "HTTP/2 200",
            "SSH-2.0-OpenSSH_9.2",
            "HTTP/1.1 999 Nope",
            "\u{16}\u{3}\u{1}",
        ] {
            let err = parse_status_line(bad).unwrap_err();
            assert!(err.contains("bad HTTP status line"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn responses_with_length_chunks_or_until_close() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert!(response_complete(raw));
        assert_eq!(parse_response(raw, false), Ok((200, b"ok".to_vec())));

        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok";
        assert!(!response_complete(raw));
        assert!(
            parse_response(raw, false)
                .unwrap_err()
                .contains("cut short")
        );

        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        assert!(response_complete(raw));
        assert_eq!(
            parse_response(raw, false),
            Ok((200, b"hello, world".to_vec()))
        );
        let cut = &raw[..raw.len() - 7];
        assert!(!response_complete(cut));
        assert!(parse_response(cut, false).is_err());

        // openssl s_server -www: HTTP/1.0, no length, body until close; bare LF tolerated.
        let raw = b"HTTP/1.0 200 ok\nContent-type: text/html\n\n<HTML>x</HTML>";
        assert!(!response_complete(raw));
        assert_eq!(
            parse_response(raw, false),
            Ok((200, b"<HTML>x</HTML>".to_vec()))
        );

        let raw = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert!(response_complete(raw));
        assert_eq!(parse_response(raw, false), Ok((204, Vec::new())));
    }

    #[test]
    fn non_http_answers_are_errors() {
        assert!(
            parse_response(b"garbage without headers", false)
                .unwrap_err()
                .contains("bad HTTP status line")
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nServer: x", false)
                .unwrap_err()
                .contains("inside its headers")
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false)
                .unwrap_err()
                .contains("Content-Length")
        );
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            )
            .unwrap_err()
            .contains("chunk size")
        );
    }

    #[test]
    fn etcd_health_bodies() {
        assert!(etcd_healthy(r#"{"health":"true","reason":""}"#));
        assert!(etcd_healthy("{\"health\": \"true\"}\n"));
        assert!(etcd_healthy(r#"{"health":true}"#));
        assert!(!etcd_healthy(
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#
        ));
        assert!(!etcd_healthy(r#"{"reason":"health:\"true\""}"#));
        assert!(!etcd_healthy(r#"{"health":"TRUE-ish"}"#));
        assert!(!etcd_healthy(""));
        assert!(!etcd_healthy("<html>health true</html>"));
        assert!(!etcd_healthy(r#"["health","true"]"#));
    }

    #[test]
    fn serial_of_garbage_is_an_error() {
        assert!(serial_hex(b"not a certificate").is_err());
    }

    #[test]
    fn bad_paths_and_timeouts_are_refused_before_connecting() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ca = Path::new("/nonexistent/ca.crt");
        let err = https_get(addr, "/x y", ca, None, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("invalid request path"), "{err}");
        assert!(err.contains("127.0.0.1:9"), "{err}");
        let err = https_get(addr, "/x\r\nEvil: 1", ca, None, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("invalid request path"), "{err}");
        let err = https_get(addr, "/readyz", ca, None, Duration::ZERO).unwrap_err();
        assert!(err.contains("zero timeout"), "{err}");
        let err = https_get(addr, "/readyz", ca, None, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("cannot read CA file"), "{err}");
    }
}
