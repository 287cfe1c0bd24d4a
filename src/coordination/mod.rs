//! One control-plane node restarting at a time, across the cluster: a `coordination.k8s.io/v1`
//! Lease (`kube-system/kube-cert-renewer`) taken before any restart, renewed while held, released
//! once this node is healthy again plus a settle delay.
//!
//! The API is reached over the product's own HTTPS client ([`crate::node::health::request`])
//! rather than the kube crate: three calls on one object do not justify doubling the binary
//! (5.9 → 12.7 MB) and the cold build (3 → 5+ min) that kube + k8s-openapi cost
//! (dependencies.md), nor a second TLS stack next to the one the probes already use.
//!
//! [`lease`] holds the pure rules (what to do next given what was seen when); this module does
//! the I/O around them: [`LeaseApi`] is the seam (the real [`KubeApi`] from a kubeconfig, a fake
//! in the tests), [`acquire`] waits and takes, [`Held`] renews in the background until
//! [`Held::release`].

pub mod credentials;
pub mod lease;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::node::health::{self, Identity, Request, Target, Trust};
use crate::pki::kubeconfig::{self, ClientCert};
use lease::{Lease, Next, Seen};

/// Why a call to the Lease API did not give a Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 409: someone wrote the Lease since it was read (or created it first). A lost race, to
    /// be settled by reading again — never by retrying the same write.
    Conflict,
    /// No API answered as an API server: connection refused, timeout, TLS failure, a server
    /// error, an answer that is not a Lease. The message says which.
    Unreachable(String),
    /// The API answered and refused (401, 403, 422...): a configuration problem that waiting
    /// does not fix.
    Refused(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Conflict => f.write_str("conflict (409): the Lease changed meanwhile"),
            ApiError::Unreachable(m) | ApiError::Refused(m) => f.write_str(m),
        }
    }
}

/// The three calls the Lease needs. Implemented over HTTPS by [`KubeApi`]; a test implements
/// it in memory. `Send + Sync` because the holder renews from its own thread.
pub trait LeaseApi: Send + Sync {
    /// GET the Lease; `None` when it does not exist (404).
    fn get(&self) -> Result<Option<Lease>, ApiError>;
    /// POST a new Lease (409 when it exists already).
    fn create(&self, body: &serde_json::Value) -> Result<Lease, ApiError>;
    /// PUT the Lease (409 when its resourceVersion is stale).
    fn replace(&self, body: &serde_json::Value) -> Result<Lease, ApiError>;
    /// Where the API is, for messages.
    fn describe(&self) -> String;
}

/// The cluster API as a kubeconfig of the node reaches it.
#[derive(Clone)]
pub struct KubeApi {
    kubeconfig: PathBuf,
    server: String,
    /// The cluster's `tls-server-name`, verified instead of the URL's host when set.
    tls_server_name: Option<String>,
    ca_pem: Vec<u8>,
    identity: Identity,
    timeout: Duration,
}

impl KubeApi {
    /// Reads the kubeconfig (server URL, CA data, client certificate embedded or in files).
    pub fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<KubeApi, String> {
        let bytes = crate::pki::inventory::read_bounded(path)
            .map_err(|e| format!("cannot read the kubeconfig {}: {e}", path.display()))?
            .ok_or_else(|| format!("the kubeconfig {} does not exist", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("the kubeconfig {} is not UTF-8 text", path.display()))?;
        let creds = kubeconfig::credentials(&text, path)?;
        let server = creds
            .server
            .ok_or_else(|| format!("{}: the current context has no server", path.display()))?;
        let ca_pem = creds.ca_pem.ok_or_else(|| {
            format!(
                "{}: no certificate-authority-data to trust the API server with",
                path.display()
            )
        })?;
        let identity = match creds.client {
            ClientCert::Embedded {
                cert_pem,
                key_pem: Some(key_pem),
            } => Identity {
                cert_pem,
                key_pem,
                source: path.display().to_string(),
            },
            ClientCert::Files {
                cert,
                key: Some(key),
            } => Identity::from_files(health::ClientCert {
                cert: &cert,
                key: &key,
            })?,
            _ => {
                return Err(format!(
                    "{}: the current user has no client certificate and key",
                    path.display()
                ));
            }
        };
        Ok(KubeApi {
            kubeconfig: path.to_path_buf(),
            server,
            tls_server_name: creds.tls_server_name,
            ca_pem,
            identity,
            timeout,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Answer {
        let json = body.map(|b| b.to_string().into_bytes());
        let request = Request {
            method,
            path,
            json: json.as_deref(),
        };
        let source = format!("{} (certificate-authority-data)", self.kubeconfig.display());
        let trust = Trust::Cas {
            pem: &self.ca_pem,
            source: &source,
        };
        let targets = Target::of_url(&self.server).map_err(ApiError::Unreachable)?;
        let mut errors = Vec::new();
        let mut refused = false;
        for target in targets {
            let target = target.verified_as(self.tls_server_name.as_deref());
            match health::request(
                &target,
                &request,
                &trust,
                Some(&self.identity),
                self.timeout,
            ) {
                Ok(probe) => return Ok((probe.status, probe.body)),
                Err(e) => {
                    refused |= health::refused_client_certificate(&e);
                    errors.push(format!("{}: {e}", target.addr));
                }
            }
        }
        let what = format!("{method} {}{path}: {}", self.server, errors.join("; "));
        // the API answered, and refused this kubeconfig's certificate: not a network problem
        Err(if refused {
            ApiError::Refused(format!(
                "{what} (the client certificate of {})",
                self.kubeconfig.display()
            ))
        } else {
            ApiError::Unreachable(what)
        })
    }
}

type Answer = Result<(u16, String), ApiError>;

/// A Lease out of an API answer, or the error its status says.
fn lease_of(answer: Answer, what: &str) -> Result<Option<Lease>, ApiError> {
    let (status, body) = answer?;
    let message = || {
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| body.trim().chars().take(200).collect())
    };
    match status {
        200 | 201 => Lease::from_json(&body)
            .map(Some)
            .map_err(|e| ApiError::Unreachable(format!("{what}: HTTP {status}, but {e}"))),
        404 => Ok(None),
        409 => Err(ApiError::Conflict),
        401 | 403 | 400 | 422 => Err(ApiError::Refused(format!(
            "{what}: HTTP {status}: {}",
            message()
        ))),
        _ => Err(ApiError::Unreachable(format!(
            "{what}: HTTP {status}: {}",
            message()
        ))),
    }
}

impl LeaseApi for KubeApi {
    fn get(&self) -> Result<Option<Lease>, ApiError> {
        lease_of(
            self.call("GET", &lease::object_path(), None),
            "reading the Lease",
        )
    }

    fn create(&self, body: &serde_json::Value) -> Result<Lease, ApiError> {
        lease_of(
            self.call("POST", &lease::collection_path(), Some(body)),
            "creating the Lease",
        )?
        .ok_or_else(|| ApiError::Unreachable("creating the Lease: HTTP 404".into()))
    }

    fn replace(&self, body: &serde_json::Value) -> Result<Lease, ApiError> {
        lease_of(
            self.call("PUT", &lease::object_path(), Some(body)),
            "writing the Lease",
        )?
        .ok_or_else(|| ApiError::Unreachable("writing the Lease: HTTP 404 (deleted?)".into()))
    }

    fn describe(&self) -> String {
        format!("{} (from {})", self.server, self.kubeconfig.display())
    }
}

/// How this node takes the Lease.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name: the Lease's holderIdentity.
    pub me: String,
    /// `leaseDurationSeconds`: how long a silent holder keeps it.
    pub duration_secs: i64,
    /// How long to wait for it before giving up (the restart then stays pending).
    pub wait: Duration,
    /// Longest pause between two looks while waiting (the pauses grow up to it).
    pub max_backoff: Duration,
}

/// What the wait looks like, told as it changes (for `STATUS=`, the journal, a terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// Another node holds the Lease.
    HeldBy {
        /// That node.
        holder: String,
        /// When it would expire if that node stopped renewing it.
        expires_in_secs: u64,
    },
    /// The API does not answer (or not as an API server).
    Unreachable(String),
}

/// Why [`acquire`] returned without the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAcquired {
    /// The API did not answer at the first try: the caller decides whether to go on without
    /// the Lease (see `renew::job`), else calls [`acquire`] again with `unreachable_is_final`
    /// off to wait.
    Unreachable(String),
    /// The API refused: the kubeconfig may not read or write Leases.
    Refused(String),
    /// The wait ended without the Lease (the last thing seen is in the message).
    TimedOut(String),
}

impl std::fmt::Display for NotAcquired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAcquired::Unreachable(m) => write!(f, "the cluster API is unreachable: {m}"),
            NotAcquired::Refused(m) => write!(f, "the cluster API refused: {m}"),
            NotAcquired::TimedOut(m) => f.write_str(m),
        }
    }
}

/// Takes the Lease for `settings.me`, waiting (with growing pauses up to `max_backoff`) while
/// another node holds it and renews it, until `settings.wait` has passed. With
/// `unreachable_is_final`, an API that does not answer at the first look returns at once (so
/// the caller can apply its rules); otherwise it is waited for like a holder. `tell` hears each
/// change of what is being waited for; `stop` is asked between pauses and ends the wait.
pub fn acquire(
    api: Arc<dyn LeaseApi>,
    settings: &Settings,
    unreachable_is_final: bool,
    tell: &mut dyn FnMut(&Waiting),
    stop: &dyn Fn() -> bool,
) -> Result<Held, NotAcquired> {
    if settings.me.trim().is_empty() {
        return Err(NotAcquired::Refused(
            "this node has no name to hold the Lease with (set node_name in the config)".into(),
        ));
    }
    let started = Instant::now();
    let now_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut seen: Option<Seen> = None;
    let mut pause = Duration::from_millis(250);
    let mut last_told: Option<Waiting> = None;
    let mut last_seen: Option<Waiting> = None;
    let mut first = true;
    loop {
        let waiting = match try_take(api.as_ref(), settings, &mut seen, now_ms()) {
            Ok(Ok(lease)) => return Ok(Held::start(api, settings, lease)),
            Ok(Err(waiting)) => Some(waiting),
            // a lost race: look again soon, never write again blindly
            Err(ApiError::Conflict) => {
                seen = None;
                None
            }
            Err(ApiError::Refused(m)) => return Err(NotAcquired::Refused(m)),
            Err(ApiError::Unreachable(m)) => {
                if first && unreachable_is_final {
                    return Err(NotAcquired::Unreachable(m));
                }
                Some(Waiting::Unreachable(m))
            }
        };
        first = false;
        if let Some(waiting) = &waiting {
            let changed = match (&last_told, waiting) {
                (Some(Waiting::HeldBy { holder: a, .. }), Waiting::HeldBy { holder: b, .. }) => {
                    a != b
                }
                (Some(Waiting::Unreachable(_)), Waiting::Unreachable(_)) => false,
                _ => true,
            };
            if changed {
                tell(waiting);
                last_told = Some(waiting.clone());
            }
            last_seen = Some(waiting.clone());
        }
        if started.elapsed() >= settings.wait || stop() {
            let what = match &last_seen {
                Some(Waiting::HeldBy { holder, .. }) => format!("held by {holder}"),
                Some(Waiting::Unreachable(m)) => format!("the cluster API did not answer: {m}"),
                None => "every write lost a race with another node's".into(),
            };
            let why = if stop() { "a stop request" } else { "the wait" };
            return Err(NotAcquired::TimedOut(format!(
                "the restart Lease {}/{} was not acquired within {}s ({why} ended it; {what})",
                lease::NAMESPACE,
                lease::NAME,
                started.elapsed().as_secs()
            )));
        }
        let this_pause = if waiting.is_some() {
            pause
        } else {
            Duration::from_millis(100)
        };
        sleep_unless(
            this_pause.min(settings.wait.saturating_sub(started.elapsed())),
            stop,
        );
        if waiting.is_some() {
            pause = (pause * 2).min(settings.max_backoff.max(Duration::from_millis(250)));
        }
    }
}

/// Sleeps `pause` in small steps, returning early once `stop` says so.
fn sleep_unless(pause: Duration, stop: &dyn Fn() -> bool) {
    let until = Instant::now() + pause;
    while Instant::now() < until && !stop() {
        crate::daemon::systemd::beat();
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
}

/// One look: the Lease taken (Ok(Ok)), or what is being waited for (Ok(Err)).
fn try_take(
    api: &dyn LeaseApi,
    settings: &Settings,
    seen: &mut Option<Seen>,
    now_ms: u64,
) -> Result<Result<Lease, Waiting>, ApiError> {
    let current = api.get()?;
    if let Some(l) = &current {
        *seen = Some(lease::observe(seen.take(), l, now_ms));
    }
    let now = OffsetDateTime::now_utc();
    match lease::next(
        current.as_ref(),
        seen.as_ref(),
        &settings.me,
        now_ms,
        settings.duration_secs,
    ) {
        Next::Create => api
            .create(&lease::new_lease(&settings.me, settings.duration_secs, now))
            .map(Ok),
        Next::Take { .. } => {
            let Some(l) = current else {
                return Err(ApiError::Conflict);
            };
            api.replace(&lease::taken(&l, &settings.me, settings.duration_secs, now))
                .map(Ok)
        }
        Next::Ours => {
            let Some(l) = current else {
                return Err(ApiError::Conflict);
            };
            api.replace(&lease::taken(&l, &settings.me, settings.duration_secs, now))
                .map(Ok)
        }
        Next::Wait {
            holder,
            expires_in_secs,
        } => Ok(Err(Waiting::HeldBy {
            holder,
            expires_in_secs,
        })),
    }
}

/// The Lease, held: a thread renews it every third of its duration until [`Held::release`] (or
/// until dropped, which stops renewing and lets it expire — what a crash does too).
pub struct Held {
    /// Set by the renewer when the Lease can no longer be counted on (taken by another node,
    /// or not renewed for two thirds of its duration), with why.
    lost: Arc<std::sync::Mutex<Option<String>>>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<(Lease, Vec<String>)>>,
    api: Arc<dyn LeaseApi>,
    me: String,
    /// When it was taken.
    pub since: Instant,
}

impl Held {
    fn start(api: Arc<dyn LeaseApi>, settings: &Settings, taken: Lease) -> Held {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let every = Duration::from_secs(u64::try_from(settings.duration_secs.max(3)).unwrap_or(3))
            .checked_div(3)
            .unwrap_or(Duration::from_secs(1));
        let renewer_api = api.clone();
        let me = settings.me.clone();
        let lost = Arc::new(std::sync::Mutex::new(None::<String>));
        let renewer_lost = lost.clone();
        // past this without a renewal, a waiting node may take it any moment now
        let trust_for = every * 2;
        let renewer = std::thread::spawn(move || {
            let mut current = taken;
            let mut problems = Vec::new();
            let mut renewed_at = Instant::now();
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(every) {
                let why = match renew_once(renewer_api.as_ref(), &current, &me) {
                    Ok(l) => {
                        current = l;
                        renewed_at = Instant::now();
                        continue;
                    }
                    Err(e) => e,
                };
                crate::daemon::events::note(&format!("could not renew the restart Lease: {why}"));
                if (why.contains("was taken by") || renewed_at.elapsed() >= trust_for)
                    && let Ok(mut slot) = renewer_lost.lock()
                {
                    slot.get_or_insert_with(|| why.clone());
                }
                problems.push(why);
            }
            (current, problems)
        });
        Held {
            lost,
            stop: Some(stop_tx),
            renewer: Some(renewer),
            api,
            me: settings.me.clone(),
            since: Instant::now(),
        }
    }

    /// Why the Lease can no longer be counted on (taken by another node, or not renewed for two
    /// thirds of its duration), if so: checked before anything stops, reported after.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// Waits `settle` (still renewing: load balancers put this node's API server back in
    /// rotation meanwhile), then lets go of the Lease so the next node need not wait for it to
    /// expire. Returns what went wrong on the way, if anything (never fatal: an unreleased
    /// Lease expires by itself).
    pub fn release(mut self, settle: Duration, stop: &dyn Fn() -> bool) -> Vec<String> {
        sleep_unless(settle, stop);
        let Some((mut current, mut problems)) = self.stop_renewing() else {
            return vec![
                "the Lease renewer stopped unexpectedly; the Lease expires by itself".into(),
            ];
        };
        for _ in 0..5 {
            let now = OffsetDateTime::now_utc();
            match self.api.replace(&lease::released(&current, now)) {
                Ok(_) => return problems,
                Err(ApiError::Conflict) => match self.api.get() {
                    Ok(Some(l)) if l.holder.as_deref() == Some(self.me.as_str()) => current = l,
                    Ok(_) => return problems, // someone else's already (it had expired)
                    Err(e) => {
                        problems.push(format!("releasing the Lease: {e}"));
                        return problems;
                    }
                },
                Err(e) => {
                    problems.push(format!("releasing the Lease: {e} (it expires by itself)"));
                    return problems;
                }
            }
        }
        problems.push("releasing the Lease: it kept changing (it expires by itself)".into());
        problems
    }

    /// Stops the renewer; the Lease as last written, or `None` when the renewer died.
    fn stop_renewing(&mut self) -> Option<(Lease, Vec<String>)> {
        self.stop.take();
        self.renewer.take().and_then(|r| r.join().ok())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(r) = self.renewer.take() {
            let _ = r.join();
        }
    }
}

/// One renewal; a 409 (someone touched the object) is settled by reading it again, and only
/// renewed if it is still ours.
fn renew_once(api: &dyn LeaseApi, current: &Lease, me: &str) -> Result<Lease, String> {
    let now = OffsetDateTime::now_utc();
    match api.replace(&lease::renewed(current, now)) {
        Ok(l) => Ok(l),
        Err(ApiError::Conflict) => match api.get() {
            Ok(Some(l)) if l.holder.as_deref() == Some(me) => api
                .replace(&lease::renewed(&l, now))
                .map_err(|e| e.to_string()),
            Ok(Some(l)) => Err(format!(
                "the Lease was taken by {} (renewals failed for longer than its duration?)",
                l.holder.unwrap_or_else(|| "nobody".into())
            )),
            Ok(None) => Err("the Lease was deleted".into()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Who holds the Lease, for `check`: `Ok(None)` when nobody does.
pub fn holder(api: &dyn LeaseApi) -> Result<Option<(String, Option<OffsetDateTime>)>, ApiError> {
    Ok(api
        .get()?
        .and_then(|l| l.holder.map(|h| (h, l.renew_time.or(l.acquire_time)))))
}

/// Why a restart may go on without the Lease when the API cannot be asked, or `None` (wait).
/// Nothing is left to protect when this node's API server already serves an expired certificate
/// (no client accepts it) or when it is the only control-plane node; past that, only the
/// operator's `when_api_unreachable = "proceed"` allows it.
pub fn without_lease(
    own_apiserver_expired: bool,
    control_plane_nodes: Option<(u32, &str)>,
    policy: crate::config::WhenUnreachable,
) -> Option<String> {
    if own_apiserver_expired {
        return Some(
            "this node's kube-apiserver certificate has expired: it serves no client already"
                .into(),
        );
    }
    if let Some((1, source)) = control_plane_nodes {
        return Some(format!(
            "this is the only control-plane node ({source}): no other API server to keep up"
        ));
    }
    if policy == crate::config::WhenUnreachable::Proceed {
        return Some("when_api_unreachable = \"proceed\"".into());
    }
    None
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use super::*;
    use crate::demo::fake_api::LeaseStore;
    use std::sync::Mutex;

    fn settings(me: &str, duration_secs: i64, wait_ms: u64) -> Settings {
        Settings {
            me: me.into(),
            duration_secs,
            wait: Duration::from_millis(wait_ms),
            max_backoff: Duration::from_millis(200),
        }
    }

    #[test]
    fn going_on_without_the_lease_needs_a_reason() {
        use crate::config::WhenUnreachable::{Proceed, Wait};
        assert!(without_lease(true, None, Wait).unwrap().contains("expired"));
        assert!(
            without_lease(false, Some((1, "etcd has 1 member")), Wait)
                .unwrap()
                .contains("only control-plane node (etcd has 1 member)")
        );
        assert_eq!(without_lease(false, Some((3, "etcd")), Wait), None);
        assert_eq!(without_lease(false, None, Wait), None);
        assert!(without_lease(false, Some((3, "etcd")), Proceed).is_some());
    }

    #[test]
    fn three_nodes_racing_hold_it_one_after_the_other() {
        let store = LeaseStore::new();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = ["cp-1", "cp-2", "cp-3"]
            .into_iter()
            .map(|me| {
                let (store, spans) = (store.clone(), spans.clone());
                std::thread::spawn(move || {
                    let api: Arc<dyn LeaseApi> = Arc::new(store);
                    let held =
                        acquire(api, &settings(me, 5, 20_000), false, &mut |_| {}, &|| false)
                            .unwrap();
                    let start = Instant::now();
                    std::thread::sleep(Duration::from_millis(300));
                    let end = Instant::now();
                    assert!(held.release(Duration::ZERO, &|| false).is_empty());
                    spans.lock().unwrap().push((me, start, end));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut spans = spans.lock().unwrap().clone();
        spans.sort_by_key(|s| s.1);
        assert_eq!(spans.len(), 3);
        for pair in spans.windows(2) {
            assert!(pair[0].2 <= pair[1].1, "overlap: {pair:?}");
        }
        // the store's own record: holders never change without a release in between
        let writes = store.writes();
        let mut holder: Option<String> = None;
        for w in &writes {
            if let (Some(h), Some(new)) = (&holder, &w.holder) {
                assert_eq!(h, new, "taken from a live holder: {writes:?}");
            }
            holder = w.holder.clone();
        }
        assert_eq!(holder, None, "released at the end");
    }

    #[test]
    fn a_crashed_holders_lease_is_taken_after_its_duration_a_renewed_one_never() {
        let store = LeaseStore::new();
        store.plant("cp-crashed", 2);
        let api: Arc<dyn LeaseApi> = Arc::new(store.clone());
        let started = Instant::now();
        let mut told = Vec::new();
        let held = acquire(
            api.clone(),
            &settings("cp-1", 2, 10_000),
            false,
            &mut |w| told.push(w.clone()),
            &|| false,
        )
        .unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        assert!(matches!(&told[0], Waiting::HeldBy { holder, .. } if holder == "cp-crashed"));

        // cp-1 holds it and keeps renewing (every 2/3 s): cp-2 waits 4 s and never gets it
        let err = acquire(
            api.clone(),
            &settings("cp-2", 2, 4_000),
            false,
            &mut |_| {},
            &|| false,
        )
        .err()
        .unwrap();
        assert!(
            matches!(&err, NotAcquired::TimedOut(m) if m.contains("held by cp-1")),
            "{err}"
        );
        assert!(
            store.writes().len() >= 5,
            "renewals happened: {:?}",
            store.writes()
        );
        drop(held); // a crash: no release
        let again = acquire(
            api,
            &settings("cp-2", 2, 10_000),
            false,
            &mut |_| {},
            &|| false,
        );
        assert!(again.is_ok());
    }

    #[test]
    fn a_holder_whose_renewals_fail_knows_it_can_no_longer_count_on_the_lease() {
        let store = LeaseStore::new();
        let api: Arc<dyn LeaseApi> = Arc::new(store.clone());
        let held = acquire(api, &settings("cp-1", 3, 5_000), true, &mut |_| {}, &|| {
            false
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(held.lost(), None, "renewed every second: still counted on");
        store.set_down(true);
        std::thread::sleep(Duration::from_millis(3500));
        let lost = held
            .lost()
            .expect("two thirds of the duration without a renewal");
        assert!(lost.contains("fake API down"), "{lost}");
    }

    #[test]
    fn an_api_that_keeps_answering_409_ends_at_the_deadline() {
        struct AlwaysConflict;
        impl LeaseApi for AlwaysConflict {
            fn get(&self) -> Result<Option<Lease>, ApiError> {
                Ok(None)
            }
            fn create(&self, _: &serde_json::Value) -> Result<Lease, ApiError> {
                Err(ApiError::Conflict)
            }
            fn replace(&self, _: &serde_json::Value) -> Result<Lease, ApiError> {
                Err(ApiError::Conflict)
            }
            fn describe(&self) -> String {
                "always 409".into()
            }
        }
        let started = Instant::now();
        let err = acquire(
            Arc::new(AlwaysConflict),
            &settings("cp-1", 3, 1_000),
            false,
            &mut |_| {},
            &|| false,
        )
        .err()
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("lost a race"), "{err}");
        let empty = acquire(
            Arc::new(AlwaysConflict),
            &settings(" ", 3, 1_000),
            false,
            &mut |_| {},
            &|| false,
        )
        .err()
        .unwrap();
        assert!(matches!(empty, NotAcquired::Refused(_)), "{empty}");
    }

    #[test]
    fn an_unreachable_api_is_reported_at_once_or_waited_for() {
        let store = LeaseStore::new();
        store.set_down(true);
        let api: Arc<dyn LeaseApi> = Arc::new(store.clone());
        let err = acquire(
            api.clone(),
            &settings("cp-1", 5, 5_000),
            true,
            &mut |_| {},
            &|| false,
        )
        .err()
        .unwrap();
        assert!(matches!(err, NotAcquired::Unreachable(_)), "{err}");
        let back = store.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(800));
            back.set_down(false);
        });
        let mut told = Vec::new();
        let held = acquire(
            api,
            &settings("cp-1", 5, 10_000),
            false,
            &mut |w| told.push(w.clone()),
            &|| false,
        );
        t.join().unwrap();
        assert!(held.is_ok());
        assert!(matches!(told[0], Waiting::Unreachable(_)), "{told:?}");
    }

    #[test]
    fn the_http_client_speaks_to_the_served_store() {
        use crate::demo::nodegen;
        let dir = tempfile::tempdir().unwrap();
        let spec = nodegen::NodeSpec::new(time::OffsetDateTime::now_utc(), 200);
        nodegen::generate(dir.path(), &spec).unwrap();
        let ca = nodegen::GeneratedCa::load(&dir.path().join("pki"), "ca").unwrap();
        let (cert, key) = nodegen::make_leaf(
            &nodegen::LeafTemplate {
                cn: "fake-apiserver".into(),
                org: None,
                sans: vec!["127.0.0.1".into()],
                server: true,
                client: false,
            },
            &ca,
            &spec,
        )
        .unwrap();
        let served = crate::demo::fake_api::serve(
            LeaseStore::new(),
            "127.0.0.1:0".parse().unwrap(),
            cert.as_bytes(),
            key.as_bytes(),
        )
        .unwrap();
        let admin = dir.path().join("admin.conf");
        let text = std::fs::read_to_string(&admin).unwrap().replace(
            "https://127.0.0.1:6443",
            &format!("https://{}", served.addr),
        );
        std::fs::write(&admin, text).unwrap();
        let api: Arc<dyn LeaseApi> =
            Arc::new(KubeApi::from_kubeconfig(&admin, Duration::from_secs(5)).unwrap());
        assert_eq!(holder(api.as_ref()).unwrap(), None);
        let held = acquire(
            api.clone(),
            &settings("cp-1", 30, 5_000),
            true,
            &mut |_| {},
            &|| false,
        )
        .unwrap();
        assert_eq!(holder(api.as_ref()).unwrap().unwrap().0, "cp-1");
        // a stale write is a conflict, not an error
        let stale = api.get().unwrap().unwrap();
        api.replace(&lease::renewed(&stale, time::OffsetDateTime::now_utc()))
            .unwrap();
        assert_eq!(
            api.replace(&lease::renewed(&stale, time::OffsetDateTime::now_utc())),
            Err(ApiError::Conflict)
        );
        assert!(held.release(Duration::ZERO, &|| false).is_empty());
        assert_eq!(holder(api.as_ref()).unwrap(), None);
        assert_eq!(served.store.writes().last().unwrap().holder, None);
    }
}
