//! An in-process stand-in for the cluster API's Lease endpoints, for tests: what the API server
//! does with `coordination.k8s.io/v1` Leases — GET (404 when absent), POST (409 when it exists),
//! PUT (409 when the resourceVersion quoted is not the current one), a new resourceVersion at
//! every write — and nothing else. Expiry is not the server's business (clients judge it), as
//! with the real API server.
//!
//! [`LeaseStore`] is the object and its rules, usable directly as a
//! [`crate::coordination::LeaseApi`]; [`serve`] puts it behind HTTPS on loopback so the product's
//! real client talks to it exactly as it would to kube-apiserver. Every write is recorded with
//! its instant, so a test can replay who held the Lease when. Tests only (feature
//! `test-support`).

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::coordination::lease::{self, Lease};
use crate::coordination::{ApiError, LeaseApi};

/// One write the store accepted: when, and who held the Lease after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseWrite {
    /// When it happened.
    pub at: Instant,
    /// The holder after the write (`None` once released).
    pub holder: Option<String>,
    /// The resourceVersion it made.
    pub resource_version: u64,
    /// Who wrote it: the subject of the client certificate (served with
    /// [`serve_verifying_clients`]), `None` when none was presented or asked for.
    pub by: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    object: Option<Value>,
    version: u64,
    writes: Vec<LeaseWrite>,
    conflicts: u64,
    /// While set, every call fails as an unreachable API would (connection refused).
    down: bool,
}

/// The Lease object with the API server's rules, shared between threads.
#[derive(Debug, Clone, Default)]
pub struct LeaseStore {
    state: Arc<Mutex<State>>,
}

/// A status and a JSON body, as the API answers.
type Reply = (u16, Value);

fn status(code: u16, reason: &str, message: &str) -> Reply {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

impl LeaseStore {
    /// An empty API: no Lease yet.
    pub fn new() -> LeaseStore {
        LeaseStore::default()
    }

    /// Every accepted write, in order.
    pub fn writes(&self) -> Vec<LeaseWrite> {
        self.state
            .lock()
            .map(|s| s.writes.clone())
            .unwrap_or_default()
    }

    /// How many writes were refused with 409.
    pub fn conflicts(&self) -> u64 {
        self.state.lock().map(|s| s.conflicts).unwrap_or_default()
    }

    /// Makes the API unreachable (`true`) or back (`false`).
    pub fn set_down(&self, down: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.down = down;
        }
    }

    /// Puts a Lease there as another node would have left it (e.g. a crashed holder's).
    pub fn plant(&self, holder: &str, duration_secs: i64) {
        let now = time::OffsetDateTime::now_utc();
        let mut body = lease::new_lease(holder, duration_secs, now);
        if let Ok(mut s) = self.state.lock() {
            s.version += 1;
            body["metadata"]["resourceVersion"] = json!(s.version.to_string());
            s.object = Some(body);
            let w = LeaseWrite {
                at: Instant::now(),
                holder: Some(holder.to_string()),
                resource_version: s.version,
                by: None,
            };
            s.writes.push(w);
        }
    }

    /// Handles one request as kube-apiserver would: `method` on `path` with `body`.
    pub fn handle(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        self.handle_as(method, path, body, None)
    }

    /// [`LeaseStore::handle`] for the client `by` (its certificate's subject), recorded with
    /// each write.
    pub fn handle_as(&self, method: &str, path: &str, body: &[u8], by: Option<&str>) -> Reply {
        let Ok(mut s) = self.state.lock() else {
            return status(500, "InternalError", "poisoned");
        };
        let object_path = lease::object_path();
        let collection = lease::collection_path();
        let path = path.split('?').next().unwrap_or_default();
        match (method, path) {
            ("GET", p) if p == object_path => match &s.object {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", "leases \"kube-cert-renewer\" not found"),
            },
            ("POST", p) if p == collection => {
                if s.object.is_some() {
                    s.conflicts += 1;
                    return status(409, "AlreadyExists", "leases \"kube-cert-renewer\" exists");
                }
                let Ok(mut o) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "body is not JSON");
                };
                if o.pointer("/metadata/name").and_then(Value::as_str) != Some(lease::NAME) {
                    return status(422, "Invalid", "metadata.name must be kube-cert-renewer");
                }
                s.version += 1;
                o["metadata"]["resourceVersion"] = json!(s.version.to_string());
                o["metadata"]["uid"] = json!("fake-uid-1");
                s.object = Some(o.clone());
                self.record(&mut s, &o, by);
                (201, o)
            }
            ("PUT", p) if p == object_path => {
                let Ok(mut o) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "body is not JSON");
                };
                if s.object.is_none() {
                    return status(404, "NotFound", "leases \"kube-cert-renewer\" not found");
                }
                let quoted = o
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if quoted != s.version.to_string() {
                    s.conflicts += 1;
                    return status(
                        409,
                        "Conflict",
                        "Operation cannot be fulfilled on leases.coordination.k8s.io \
                         \"kube-cert-renewer\": the object has been modified; please apply your \
                         changes to the latest version and try again",
                    );
                }
                s.version += 1;
                o["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.object = Some(o.clone());
                self.record(&mut s, &o, by);
                (200, o)
            }
            _ => status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        }
    }

    fn record(&self, s: &mut State, o: &Value, by: Option<&str>) {
        let holder = o
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .map(str::to_string);
        let w = LeaseWrite {
            at: Instant::now(),
            holder,
            resource_version: s.version,
            by: by.map(str::to_string),
        };
        s.writes.push(w);
    }

    fn is_down(&self) -> bool {
        self.state.lock().map(|s| s.down).unwrap_or(true)
    }

    fn answer(&self, method: &str, path: &str, body: &[u8]) -> Result<Option<Lease>, ApiError> {
        if self.is_down() {
            return Err(ApiError::Unreachable(
                "connection refused (fake API down)".into(),
            ));
        }
        let (code, value) = self.handle(method, path, body);
        match code {
            200 | 201 => Lease::from_json(&value.to_string())
                .map(Some)
                .map_err(ApiError::Unreachable),
            404 => Ok(None),
            409 => Err(ApiError::Conflict),
            _ => Err(ApiError::Refused(value.to_string())),
        }
    }
}

impl LeaseApi for LeaseStore {
    fn get(&self) -> Result<Option<Lease>, ApiError> {
        self.answer("GET", &lease::object_path(), b"")
    }

    fn create(&self, body: &Value) -> Result<Lease, ApiError> {
        self.answer(
            "POST",
            &lease::collection_path(),
            body.to_string().as_bytes(),
        )?
        .ok_or_else(|| ApiError::Unreachable("404".into()))
    }

    fn replace(&self, body: &Value) -> Result<Lease, ApiError> {
        self.answer("PUT", &lease::object_path(), body.to_string().as_bytes())?
            .ok_or_else(|| ApiError::Unreachable("404".into()))
    }

    fn describe(&self) -> String {
        "the in-memory Lease store".into()
    }
}

/// The store served over HTTPS on loopback; stops when dropped.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The store behind it.
    pub store: LeaseStore,
    stop: Arc<AtomicBool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Serves `store` over HTTPS at `addr` (port 0 for any), with the server certificate `cert_pem`
/// (chain) and key `key_pem`; requests are not asked for a client certificate.
pub fn serve(
    store: LeaseStore,
    addr: SocketAddr,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Served, String> {
    serve_with(store, addr, cert_pem, key_pem, None)
}

/// [`serve`], asking for a client certificate signed by a CA of `client_ca_pem` (as
/// kube-apiserver's `--client-ca-file`; a request without one is still answered) and recording
/// its subject with each write ([`LeaseWrite::by`]), so a test can tell which identity took the
/// Lease.
pub fn serve_verifying_clients(
    store: LeaseStore,
    addr: SocketAddr,
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<Served, String> {
    serve_with(store, addr, cert_pem, key_pem, Some(client_ca_pem))
}

fn serve_with(
    store: LeaseStore,
    addr: SocketAddr,
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Served, String> {
    let chain: Vec<CertificateDer<'static>> = crate::pki::pem::parse(cert_pem)?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.der))
        .collect();
    let key_block = crate::pki::pem::parse(key_pem)?
        .into_iter()
        .next()
        .ok_or("no key block")?;
    let key = PrivateKeyDer::try_from(key_block.der).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for block in crate::pki::pem::parse(pem)? {
                roots
                    .add(CertificateDer::from(block.der))
                    .map_err(|e| e.to_string())?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    let config = Arc::new(config);
    let listener = TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let (thread_stop, thread_store) = (stop.clone(), store.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if thread_stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(sock) = conn else { continue };
            if thread_store.is_down() {
                continue; // dropped: the client sees the connection closed
            }
            let (config, store) = (config.clone(), thread_store.clone());
            std::thread::spawn(move || {
                let _ = one_exchange(sock, config, &store);
            });
        }
    });
    Ok(Served { addr, store, stop })
}

/// Reads one HTTP/1.1 request over TLS and answers it.
fn one_exchange(
    sock: TcpStream,
    config: Arc<rustls::ServerConfig>,
    store: &LeaseStore,
) -> Result<(), String> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_end, length) = loop {
        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..i]).to_string();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
    };
    while raw.len() < head_end + length {
        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let body = &raw[head_end..(head_end + length).min(raw.len())];
    let by = tls
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::pki::cert::CertFacts::from_der(leaf.as_ref()).ok())
        .map(|facts| facts.subject);
    let (code, value) = store.handle_as(&method, &path, body, by.as_deref());
    let text = value.to_string();
    let reply = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    );
    tls.write_all(reply.as_bytes()).map_err(|e| e.to_string())?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}
