//! A kubelet stand-in for tests and the demo.
//!
//! Why it exists: the restart step parks static-pod manifests, waits (over the CRI, by kubelet's
//! labels) for the old containers to exit, moves the manifests back and waits for new containers
//! that serve the new certificates. That logic is only believable when it has been seen working
//! against a real container runtime doing what kubelet does for static pods — but a real kubelet
//! wants an API server, a node registration and images we cannot pull. This module is the
//! static-pod part of kubelet's job and nothing else: it watches a manifests dir and drives a real
//! CRI runtime (containerd) with kubelet's sandbox/container metadata, labels and annotations, so
//! the product cannot tell it from kubelet.
//!
//! The manifests stay realistic kubeadm ones; only the program each container runs is swapped for
//! a host program that uses the same files through the same volumes (see [`container_command`]):
//! `openssl s_server` serves the API server's certificate (and refuses client certificates its
//! client CA did not sign), Debian's real `etcd` runs with the manifest's own flags, the
//! controller-manager and scheduler check their kubeconfig and serve `/healthz` on their secure
//! port.
//! Host `/usr`, `/lib`, `/lib64` and `/etc/ssl` are bind-mounted read-only so those programs run
//! inside a tiny busybox image.
//!
//! Never meant for a real node: it creates missing hostPath directories like kubelet does, and
//! tears down only what it created.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::task::JoinSet;

use crate::node::cri::{
    Container, ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState,
    CreateContainerRequest, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListPodSandboxRequest, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxState, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, RuntimeClient, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, StringMap,
};
use crate::node::manifest::{self, PodContainer, StaticPod};

use crate::node::cri::short_id;
pub use crate::node::cri::{
    CONTAINER_NAME_LABEL, POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL,
};
pub use crate::node::manifest::static_pod_name as pod_name;
/// Annotation kubelet puts on a static pod's sandbox: where the pod came from (`file`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation kubelet puts on a static pod's sandbox: the manifest hash (= the pod UID).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation kubelet puts on containers: how many times this container was restarted.
pub const RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Pod annotation for fault tests: a shell command run (`/bin/sh -c <value>`) instead of the
/// component's mapped program, e.g. `exit 1` for an API server that never comes back.
pub const COMMAND_ANNOTATION: &str = "kube-cert-renewer.test/command";
/// The image every container (and, by containerd's config, every sandbox) runs: the busybox image
/// `tests/support/containerd-env.sh` imports, since no registry is reachable.
pub const DEFAULT_IMAGE: &str = "docker.io/local/pause:1";
/// `PATH` of every container: host programs come through the `/usr` bind mount, busybox's
/// applets live in the image's `/bin`.
pub const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host directories bind-mounted read-only into every container so host programs (openssl, etcd)
/// and their libraries and OpenSSL config are found. `/lib` and `/lib64` are symlinks into `/usr`
/// on merged-/usr Debian; a bind mount follows them.
const HOST_MOUNTS: [&str; 4] = ["/usr", "/lib", "/lib64", "/etc/ssl"];

/// Longest a single CRI call may take before it counts as failed and is retried at a later poll;
/// shorter than the client's 2 min default so a hung runtime does not hold up shutdown for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the same error about the same pod stays quiet before it is printed again: a runtime
/// that is down would otherwise print one line per pod per poll.
const REPEAT_QUIET: Duration = Duration::from_secs(10);

/// Rounds of teardown tried at shutdown before giving up on a sandbox and reporting it.
const SHUTDOWN_ROUNDS: usize = 3;

/// What to run. Build it with [`Options::new`] so new fields keep their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The static-pod manifests dir to watch (kubelet's `staticPodPath`).
    pub manifests_dir: PathBuf,
    /// The CRI runtime's socket, e.g. a private containerd's.
    pub runtime_socket: PathBuf,
    /// Node name: static pods are named `<name>-<node name>` and their UID depends on it, which
    /// also keeps parallel tests sharing one runtime apart.
    pub node_name: String,
    /// How often the manifests dir and the runtime are looked at (100 ms by default); bounds how
    /// fast a parked or restored manifest is noticed.
    pub poll: Duration,
    /// Delay before an exited container is recreated (500 ms by default): kubelet's crash-loop
    /// back-off, fixed and short so fault tests stay fast.
    pub restart_backoff: Duration,
    /// Grace period of `StopContainer` (2 s by default; sent in whole seconds, rounded up): how
    /// long a container may take to exit on SIGTERM before it is killed.
    pub stop_grace: Duration,
    /// Where containers' logs go (`<dir>/<namespace>_<pod>_<uid>/<container>/<attempt>.log`, as
    /// kubelet's `/var/log/pods`); `None` discards them.
    pub log_dir: Option<PathBuf>,
    /// Image every container is created from ([`DEFAULT_IMAGE`] by default); the manifest's
    /// image cannot be pulled here.
    pub image: String,
    /// When set, every stretch of time spent in runtime calls that stop or start a pod is
    /// recorded here, so a benchmark can subtract the runtime's own work from a restart.
    pub runtime_spans: Option<SpanLog>,
}

/// Time spans (start, end) of runtime work, shared with the caller.
#[derive(Clone, Default)]
pub struct SpanLog(pub Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>);

impl SpanLog {
    /// Records one span.
    fn record(&self, start: Instant, end: Instant) {
        if let Ok(mut spans) = self.0.lock() {
            spans.push((start, end));
        }
    }

    /// Total time covered by the recorded spans that lie within `[from, to]` (overlapping
    /// spans counted once: stops of several pods run concurrently).
    pub fn covered(&self, from: Instant, to: Instant) -> Duration {
        let mut spans: Vec<(Instant, Instant)> = match self.0.lock() {
            Ok(spans) => spans
                .iter()
                .filter(|(s, e)| *s >= from && *e <= to)
                .copied()
                .collect(),
            Err(_) => return Duration::ZERO,
        };
        spans.sort();
        let mut total = Duration::ZERO;
        let mut current: Option<(Instant, Instant)> = None;
        for (s, e) in spans {
            current = match current {
                Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
                Some((cs, ce)) => {
                    total += ce - cs;
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        if let Some((cs, ce)) = current {
            total += ce - cs;
        }
        total
    }
}

impl std::fmt::Debug for SpanLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanLog")
    }
}

impl PartialEq for SpanLog {
    fn eq(&self, other: &SpanLog) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SpanLog {}

impl Options {
    /// Options with the defaults above, for one manifests dir, runtime and node.
    pub fn new(
        manifests_dir: impl Into<PathBuf>,
        runtime_socket: impl Into<PathBuf>,
        node_name: impl Into<String>,
    ) -> Options {
        Options {
            manifests_dir: manifests_dir.into(),
            runtime_socket: runtime_socket.into(),
            node_name: node_name.into(),
            poll: Duration::from_millis(100),
            restart_backoff: Duration::from_millis(500),
            stop_grace: Duration::from_secs(2),
            log_dir: None,
            image: DEFAULT_IMAGE.to_owned(),
            runtime_spans: None,
        }
    }
}

/// Runs the stand-in until `shutdown` completes, then stops and removes every pod sandbox it
/// created (and only those), including pods whose manifest is still there.
///
/// Errors during the run (runtime down, unreadable manifest, a container that cannot be created)
/// are printed to stderr with the pod's name and retried at the next poll, as kubelet would. `Err`
/// is returned only when the stand-in cannot start (bad options, runtime unreachable) or when
/// sandboxes it created could not be removed at shutdown (they are named, so the leftover is not
/// silent).
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let client = connect(&options).await?;
    serve(client, options, shutdown).await
}

/// A stand-in running on its own thread (with its own tokio runtime), for synchronous callers
/// such as tests and the demo. Dropping it stops it too, so a panicking test still cleans up its
/// containers.
#[derive(Debug)]
pub struct Running {
    /// Set to ask the thread to shut down.
    stop: Arc<AtomicBool>,
    /// The thread, until joined.
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

/// Starts [`run`] on a new thread and returns once it is connected to the runtime, so a setup
/// failure (no runtime at the socket) is this call's `Err` rather than a later surprise.
pub fn spawn(options: Options) -> Result<Running, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name(format!("standin-{}", options.node_name))
        .spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("kubelet stand-in: cannot build a tokio runtime: {e}"));
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            runtime.block_on(async move {
                let client = match connect(&options).await {
                    Ok(client) => {
                        let _ = ready_tx.send(Ok(()));
                        client
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let shutdown = async move {
                    while !flag.load(Ordering::Acquire) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                serve(client, options, shutdown).await
            })
        })
        .map_err(|e| format!("kubelet stand-in: cannot start a thread: {e}"))?;
    let running = Running {
        stop,
        thread: Some(thread),
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(running),
        // Joined here so `Drop` does not print the same error a second time.
        Ok(Err(e)) => Err(running.stop().err().unwrap_or(e)),
        Err(_) => Err(running
            .stop()
            .err()
            .unwrap_or_else(|| "kubelet stand-in: thread ended before connecting".to_owned())),
    }
}

impl Running {
    /// Shuts the stand-in down and waits until every pod it created is gone; the result is
    /// [`run`]'s.
    pub fn stop(mut self) -> Result<(), String> {
        self.join()
    }

    /// Signals and joins the thread (shared by `stop` and `Drop`); later calls are no-ops.
    fn join(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err("kubelet stand-in: its thread panicked".to_owned())),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.join() {
            eprintln!("{e}");
        }
    }
}

/// The UID kubelet would give the static pod of this manifest on this node: kubelet hashes the
/// manifest together with the node name, so the same file gives the same UID on one node and
/// a changed file a new one. (kubelet uses an MD5 of its decoded object; a SHA-256 of the bytes,
/// cut to the same 32 hex digits, has the same properties.)
pub fn pod_uid(manifest_bytes: &[u8], node_name: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(manifest_bytes);
    ctx.update(b"\0");
    ctx.update(node_name.as_bytes());
    let digest = ctx.finish();
    crate::pki::cert::hex(&digest.as_ref()[..16])
}

/// What the container runs instead of the component's real binary, as one argv (CRI `command`).
///
/// The mapping keeps each component's observable behaviour that the restart step depends on:
/// - `kube-apiserver`: `openssl s_server` on `--secure-port` (default 6443), on
///   `--bind-address` when that names one address, with
///   `--tls-cert-file`/`--tls-private-key-file`, asking for (not requiring) a client certificate
///   against `--client-ca-file` and refusing one that CA did not sign with a TLS alert (the real
///   one answers such a request 401, or 403 as `system:anonymous`: refused either way), so a
///   renewed kubeconfig the real one would not accept is refused here too; `-www` answers any
///   GET with 200.
/// - `etcd`: the real etcd with the manifest's own flags.
/// - `kube-controller-manager`, `kube-scheduler`: exit unless `--kubeconfig` is readable, else
///   serve `/healthz` answering `ok` over TLS on `--bind-address` (when it names one address) at
///   `--secure-port` (default 10257 and 10259), with a self-signed certificate made at start, as
///   the real ones do (`openssl s_server -WWW` from a directory holding only that file);
///   `--secure-port=0` (no secure serving): run until killed.
/// - anything else: run until killed.
///
/// The pod annotation [`COMMAND_ANNOTATION`] overrides all of it with `/bin/sh -c <value>`. Paths
/// are used as the container sees them; the manifest's volumes make them valid inside. The
/// component is recognised by the program name (`argv[0]`), else by the container name.
pub fn container_command(pod: &StaticPod, container: &PodContainer) -> Result<Vec<String>, String> {
    if let Some(command) = pod.annotations.get(COMMAND_ANNOTATION) {
        return Ok(strings(&["/bin/sh", "-c", command]));
    }
    let program = container
        .argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|a| a.to_str())
        .filter(|a| !a.is_empty())
        .unwrap_or(&container.name);
    // Busybox and coreutils sleep both take this (no "infinity" needed); about 68 years.
    const FOREVER: &str = "2147483647";
    match program {
        "kube-apiserver" => {
            let port = container.flag("secure-port").unwrap_or("6443");
            let port_number = port
                .parse::<u16>()
                .map_err(|_| format!("kube-apiserver: --secure-port {port:?} is not a port"))?;
            let flag = |name: &str| {
                container
                    .flag(name)
                    .ok_or_else(|| format!("kube-apiserver: the manifest has no --{name}"))
            };
            let accept = accept_address(container, port_number);
            let mut argv = strings(&[
                "/usr/bin/openssl",
                "s_server",
                "-accept",
                &accept,
                "-cert",
                flag("tls-cert-file")?,
                "-key",
                flag("tls-private-key-file")?,
            ]);
            if let Some(ca) = container.flag("client-ca-file") {
                // -verify asks for a certificate without requiring one (anonymous requests
                // stay possible); -verify_return_error turns one the CA did not sign into a
                // handshake failure instead of a note in the log.
                argv.extend(strings(&[
                    "-CAfile",
                    ca,
                    "-verify",
                    "1",
                    "-verify_return_error",
                ]));
            }
            argv.push("-www".to_owned());
            Ok(argv)
        }
        "etcd" => {
            let mut argv = vec!["/usr/bin/etcd".to_owned()];
            argv.extend(container.argv.iter().skip(1).cloned());
            Ok(argv)
        }
        "kube-controller-manager" | "kube-scheduler" => {
            let Some(kubeconfig) = container.flag("kubeconfig") else {
                return Ok(strings(&[
                    "/bin/sh",
                    "-c",
                    &format!("exec sleep {FOREVER}"),
                ]));
            };
            let default_port = if program == "kube-controller-manager" {
                crate::node::restart::CONTROLLER_MANAGER_PORT
            } else {
                crate::node::restart::SCHEDULER_PORT
            };
            let port = match container.flag("secure-port") {
                None => default_port,
                Some(p) => p
                    .parse::<u16>()
                    .map_err(|_| format!("{program}: --secure-port {p:?} is not a port"))?,
            };
            // The values go in as "$1".., never into the script text: no quoting to get wrong.
            if port == 0 {
                return Ok(strings(&[
                    "/bin/sh",
                    "-c",
                    &format!("test -r \"$1\" && exec sleep {FOREVER}"),
                    "sh",
                    kubeconfig,
                ]));
            }
            Ok(strings(&[
                "/bin/sh",
                "-c",
                HEALTHZ_SCRIPT,
                "sh",
                kubeconfig,
                &accept_address(container, port),
                program,
            ]))
        }
        _ => Ok(strings(&[
            "/bin/sh",
            "-c",
            &format!("exec sleep {FOREVER}"),
        ])),
    }
}

/// The controller-manager's and scheduler's stand-in (`$1` kubeconfig, `$2` where to accept,
/// `$3` the component): a self-signed P-256 certificate made at start, as theirs is, kept out
/// of the served directory, which holds only `healthz`. `exec`, so SIGTERM reaches s_server
/// (which binds with SO_REUSEADDR: the port is free again as soon as it exits).
const HEALTHZ_SCRIPT: &str = r#"test -r "$1" || exit 1
mkdir -p /tmp/tls /tmp/www && cd /tmp/www || exit 1
/usr/bin/openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" -days 365 -keyout /tmp/tls/key.pem -out /tmp/tls/cert.pem || exit 1
printf ok > healthz || exit 1
exec /usr/bin/openssl s_server -quiet -accept "$2" -cert /tmp/tls/cert.pem -key /tmp/tls/key.pem -WWW"#;

/// Where an `openssl s_server` standing in for `container` accepts: `--bind-address` when it
/// names one address (as the real components do), else every address (the port alone).
fn accept_address(container: &PodContainer, port: u16) -> String {
    match container
        .flag("bind-address")
        .map(str::parse::<std::net::IpAddr>)
    {
        Some(Ok(ip)) if !ip.is_unspecified() => std::net::SocketAddr::new(ip, port).to_string(),
        _ => port.to_string(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Connects and checks the socket speaks CRI v1: the only failures `run` reports as `Err`.
async fn connect(options: &Options) -> Result<RuntimeClient, String> {
    if options.node_name.is_empty() {
        return Err("kubelet stand-in: the node name is empty".to_owned());
    }
    if options.poll.is_zero() {
        return Err("kubelet stand-in: the poll interval is zero".to_owned());
    }
    let client = RuntimeClient::connect(&options.runtime_socket)
        .await
        .map_err(|e| format!("kubelet stand-in: {e}"))?
        .with_request_timeout(REQUEST_TIMEOUT);
    client
        .version()
        .await
        .map_err(|e| format!("kubelet stand-in: {e}"))?;
    Ok(client)
}

/// The poll loop, then the shutdown teardown.
async fn serve(
    client: RuntimeClient,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut kubelet = StandIn::new(client, options);
    loop {
        kubelet.poll_once().await;
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep(kubelet.options.poll) => {}
        }
    }
    kubelet.shut_down().await
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// A manifest that parsed: the pod plus what the stand-in derives from the bytes.
#[derive(Debug, Clone)]
struct Desired {
    pod: StaticPod,
    /// [`pod_uid`] of the bytes.
    uid: String,
    /// hostPath volume name → its `type` (`DirectoryOrCreate`, `FileOrCreate`, …), which
    /// `manifest::StaticPod` does not keep; read here so creating missing paths is kubelet-like.
    host_path_types: BTreeMap<String, String>,
}

/// A manifest file as last read, so unchanged files are not parsed (or complained about) again.
struct Seen {
    /// SHA-256 of the bytes: a changed file is a new pod, as for kubelet.
    digest: Vec<u8>,
    parsed: Result<Desired, String>,
}

#[derive(Deserialize)]
struct TypesPod {
    #[serde(default)]
    spec: Option<TypesSpec>,
}

#[derive(Deserialize)]
struct TypesSpec {
    #[serde(default)]
    volumes: Vec<TypesVolume>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypesVolume {
    name: String,
    #[serde(default)]
    host_path: Option<TypesHostPath>,
}

#[derive(Deserialize)]
struct TypesHostPath {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// hostPath volume name → type; a manifest this cannot read gives an empty map (paths are then
/// left to the runtime, which creates missing ones as directories).
fn host_path_types(text: &str) -> BTreeMap<String, String> {
    let Ok(pod) = serde_saphyr::from_str::<TypesPod>(text) else {
        return BTreeMap::new();
    };
    pod.spec
        .map(|s| s.volumes)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| Some((v.name, v.host_path?.kind?)))
        .collect()
}

fn parse_manifest(bytes: &[u8], file: &Path, node_name: &str) -> Result<Desired, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", file.display()))?;
    let pod = manifest::parse(text, file)?;
    Ok(Desired {
        uid: pod_uid(bytes, node_name),
        host_path_types: host_path_types(text),
        pod,
    })
}

// ---------------------------------------------------------------------------------------------
// Container and sandbox configuration
// ---------------------------------------------------------------------------------------------

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        // Control-plane static pods use the host network; it is also the only kind of sandbox
        // that works without CNI.
        network: NamespaceMode::Node as i32,
        // POD, not kubelet's default CONTAINER: the sandbox's pause process is PID 1 and the
        // program is not. A PID-1 process gets no default signal actions, so openssl or sleep
        // would ignore StopContainer's SIGTERM and every stop would last the whole grace period.
        pid: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        target_id: String::new(),
    }
}

fn sandbox_config(
    desired: &Desired,
    node_name: &str,
    attempt: u32,
    log_dir: Option<&Path>,
) -> PodSandboxConfig {
    let pod = &desired.pod;
    let name = pod_name(&pod.name, node_name);
    let mut labels = pod.labels.clone();
    labels.insert(POD_NAME_LABEL.to_owned(), name.clone());
    labels.insert(POD_NAMESPACE_LABEL.to_owned(), pod.namespace.clone());
    labels.insert(POD_UID_LABEL.to_owned(), desired.uid.clone());
    let mut annotations = pod.annotations.clone();
    annotations.insert(CONFIG_SOURCE_ANNOTATION.to_owned(), "file".to_owned());
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), desired.uid.clone());
    let log_directory = log_dir
        .map(|d| {
            d.join(format!("{}_{name}_{}", pod.namespace, desired.uid))
                .display()
                .to_string()
        })
        .unwrap_or_default();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name,
            uid: desired.uid.clone(),
            namespace: pod.namespace.clone(),
            attempt,
        }),
        hostname: String::new(),
        log_directory,
        labels,
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                privileged: false,
            }),
        }),
    }
}

/// The mounts of one container: the read-only host program dirs, then each volumeMount whose
/// volume is a hostPath. A manifest mount at the same container path replaces the host one.
/// Order does not matter to containerd (it mounts shallow paths first), so a manifest's
/// `/etc/ssl/certs` lands on top of the `/etc/ssl` bind either way.
fn container_mounts(
    pod: &StaticPod,
    container: &PodContainer,
    host_exists: impl Fn(&Path) -> bool,
) -> (Vec<Mount>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut mounts: Vec<Mount> = HOST_MOUNTS
        .iter()
        .filter(|p| host_exists(Path::new(p)))
        .filter(|p| {
            !container
                .mounts
                .iter()
                .any(|m| m.mount_path == Path::new(p))
        })
        .map(|p| Mount {
            container_path: (*p).to_owned(),
            host_path: (*p).to_owned(),
            readonly: true,
        })
        .collect();
    for m in &container.mounts {
        match pod.host_paths.get(&m.volume) {
            Some(host) => mounts.push(Mount {
                container_path: m.mount_path.display().to_string(),
                host_path: host.display().to_string(),
                readonly: m.read_only,
            }),
            None => warnings.push(format!(
                "container {}: volume {:?} is not a hostPath volume; not mounted",
                container.name, m.volume
            )),
        }
    }
    (mounts, warnings)
}

/// Creates missing hostPath paths as kubelet does for `DirectoryOrCreate` (0755 dir) and
/// `FileOrCreate` (empty 0644 file); other types are left alone (the runtime creates a missing
/// untyped path as a directory).
fn prepare_host_paths(desired: &Desired) -> Vec<String> {
    let mut warnings = Vec::new();
    for (volume, path) in &desired.pod.host_paths {
        let kind = desired.host_path_types.get(volume).map(String::as_str);
        let result = match kind {
            Some("DirectoryOrCreate") if !path.exists() => std::fs::create_dir_all(path),
            Some("FileOrCreate") if !path.exists() => path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(path)
                        .map(drop)
                }),
            _ => Ok(()),
        };
        if let Err(e) = result {
            warnings.push(format!(
                "cannot create hostPath {} of volume {volume}: {e}",
                path.display()
            ));
        }
    }
    warnings
}

/// The container's configuration, attempt 0; [`launch`] fills in the attempt.
fn container_config(
    desired: &Desired,
    container: &PodContainer,
    node_name: &str,
    image: &str,
) -> (ContainerConfig, Vec<String>) {
    let pod = &desired.pod;
    let mut warnings = Vec::new();
    let command = container_command(pod, container).unwrap_or_else(|e| {
        // A manifest the mapping cannot run becomes a crash-looping container that says why,
        // which is what a real kubelet would show for a component with bad flags.
        warnings.push(e.clone());
        strings(&["/bin/sh", "-c", "echo \"$1\" >&2; exit 1", "sh", &e])
    });
    let (mounts, mount_warnings) = container_mounts(pod, container, Path::exists);
    warnings.extend(mount_warnings);
    let labels: StringMap = [
        (CONTAINER_NAME_LABEL, container.name.as_str()),
        (POD_NAME_LABEL, &pod_name(&pod.name, node_name)),
        (POD_NAMESPACE_LABEL, pod.namespace.as_str()),
        (POD_UID_LABEL, desired.uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command,
        envs: vec![KeyValue {
            key: "PATH".to_owned(),
            value: CONTAINER_PATH.to_owned(),
        }],
        mounts,
        labels,
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                privileged: false,
                namespace_options: Some(namespaces()),
            }),
        }),
        ..Default::default()
    };
    (config, warnings)
}

/// `StopContainer`'s timeout is whole seconds; a fraction rounds up so the grace is never cut.
fn grace_seconds(grace: Duration) -> i64 {
    let whole = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i64::try_from(whole).unwrap_or(i64::MAX)
}

/// Whether a CRI error says the object is already gone, which for a stop or remove is success.
fn is_not_found(error: &str) -> bool {
    error.contains("failed: NotFound:") || error.contains("not found")
}

// ---------------------------------------------------------------------------------------------
// Runtime state
// ---------------------------------------------------------------------------------------------

/// One container of a running pod, across its restarts.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    /// Configuration at attempt 0.
    config: ContainerConfig,
    /// Attempt (and restart count) of the next container created.
    next_attempt: u32,
    /// The newest container; after it exits it is kept (for its logs) until the next restart.
    current: Option<String>,
    /// When the newest container was first seen not running (or failed to be created).
    down_since: Option<Instant>,
}

/// A pod sandbox this stand-in created and still owns.
#[derive(Debug, Clone)]
struct LivePod {
    /// `<namespace>/<pod name>`: what logs name and what serialises an old and a new pod of the
    /// same manifest name.
    full_name: String,
    uid: String,
    sandbox_id: String,
    sandbox_config: PodSandboxConfig,
    slots: Vec<Slot>,
}

/// Everything needed to start a pod, built synchronously before the concurrent starts.
struct PodPlan {
    full_name: String,
    uid: String,
    sandbox_config: PodSandboxConfig,
    slots: Vec<Slot>,
}

/// Result of one pod start task.
struct Started {
    full_name: String,
    pod: Result<LivePod, String>,
    warnings: Vec<String>,
}

/// Prints to stderr, holding back the same message about the same pod for [`REPEAT_QUIET`].
#[derive(Default)]
struct Log {
    prefix: String,
    last: HashMap<String, (String, Instant)>,
}

impl Log {
    fn say(&mut self, key: &str, message: &str) {
        let now = Instant::now();
        if let Some((last, at)) = self.last.get(key)
            && last == message
            && now.duration_since(*at) < REPEAT_QUIET
        {
            return;
        }
        eprintln!("{}{key}: {message}", self.prefix);
        self.last.insert(key.to_owned(), (message.to_owned(), now));
    }

    fn event(&self, key: &str, message: &str) {
        eprintln!("{}{key}: {message}", self.prefix);
    }
}

/// The stand-in's state between polls.
struct StandIn {
    client: RuntimeClient,
    options: Options,
    log: Log,
    seen: HashMap<PathBuf, Seen>,
    /// Running pods by UID.
    live: BTreeMap<String, LivePod>,
    /// Teardowns in flight: each returns its pod and how it went.
    stopping: JoinSet<(LivePod, Result<(), String>)>,
    /// `full_name` → teardowns in flight for it; a pod waits for the old one of the same name.
    stopping_names: HashMap<String, usize>,
    /// Teardowns that failed, retried at the next poll.
    failed: Vec<LivePod>,
    /// UID → next sandbox attempt, so a re-created pod never collides with a leftover.
    sandbox_attempts: HashMap<String, u32>,
}

impl StandIn {
    fn new(client: RuntimeClient, options: Options) -> StandIn {
        StandIn {
            log: Log {
                prefix: format!("kubelet stand-in [{}] ", options.node_name),
                last: HashMap::new(),
            },
            client,
            options,
            seen: HashMap::new(),
            live: BTreeMap::new(),
            stopping: JoinSet::new(),
            stopping_names: HashMap::new(),
            failed: Vec::new(),
            sandbox_attempts: HashMap::new(),
        }
    }

    async fn poll_once(&mut self) {
        self.reap_teardowns();
        for pod in std::mem::take(&mut self.failed) {
            self.begin_teardown(pod, None);
        }
        let Some(desired) = self.scan() else { return };
        let gone: Vec<String> = self
            .live
            .keys()
            .filter(|uid| !desired.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(pod) = self.live.remove(&uid) {
                self.begin_teardown(pod, Some("manifest removed or changed"));
            }
        }
        if !self.live.is_empty() {
            self.check_live().await;
        }
        self.start_new(&desired).await;
    }

    /// Reads the manifests dir; `None` when it cannot be read (pods are then left as they are,
    /// as kubelet does: an unreadable dir is not an empty one).
    fn scan(&mut self) -> Option<BTreeMap<String, Desired>> {
        let files = match manifest::list(&self.options.manifests_dir) {
            Ok(files) => files,
            Err(e) => {
                self.log.say("manifests", &e);
                return None;
            }
        };
        self.seen.retain(|file, _| files.contains(file));
        let mut desired = BTreeMap::new();
        for file in files {
            let bytes = match std::fs::read(&file) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.log
                        .say("manifests", &format!("{}: {e}", file.display()));
                    continue;
                }
            };
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
                .as_ref()
                .to_vec();
            if self.seen.get(&file).is_none_or(|s| s.digest != digest) {
                let parsed = parse_manifest(&bytes, &file, &self.options.node_name);
                if let Err(e) = &parsed {
                    self.log.say("manifests", e);
                }
                self.seen.insert(file.clone(), Seen { digest, parsed });
            }
            if let Some(Seen { parsed: Ok(d), .. }) = self.seen.get(&file) {
                desired.entry(d.uid.clone()).or_insert_with(|| d.clone());
            }
        }
        Some(desired)
    }

    /// Looks at the runtime once: pods whose sandbox died are torn down (and re-created once
    /// that is done), exited containers are restarted after the back-off.
    async fn check_live(&mut self) {
        let sandboxes = match self
            .client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
        {
            Ok(r) => r.items,
            Err(e) => {
                self.log.say("runtime", &e);
                return;
            }
        };
        let containers = match self
            .client
            .list_containers(ListContainersRequest { filter: None })
            .await
        {
            Ok(r) => r.containers,
            Err(e) => {
                self.log.say("runtime", &e);
                return;
            }
        };
        let dead: Vec<String> = self
            .live
            .iter()
            .filter(|(_, pod)| {
                !sandboxes
                    .iter()
                    .any(|s| s.id == pod.sandbox_id && s.state() == PodSandboxState::Ready)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in dead {
            if let Some(pod) = self.live.remove(&uid) {
                self.begin_teardown(pod, Some("sandbox is gone or not ready; re-creating"));
            }
        }
        let now = Instant::now();
        for pod in self.live.values_mut() {
            tend(
                &self.client,
                pod,
                &containers,
                &self.options,
                &mut self.log,
                now,
            )
            .await;
        }
    }

    /// Starts the pods of new manifests, all at once (as kubelet's pod workers do), except those
    /// whose previous pod of the same name is still being torn down.
    async fn start_new(&mut self, desired: &BTreeMap<String, Desired>) {
        let mut starts = JoinSet::new();
        for (uid, d) in desired {
            if self.live.contains_key(uid) {
                continue;
            }
            let full_name = format!(
                "{}/{}",
                d.pod.namespace,
                pod_name(&d.pod.name, &self.options.node_name)
            );
            if self.stopping_names.get(&full_name).is_some_and(|n| *n > 0)
                || self.failed.iter().any(|p| p.full_name == full_name)
            {
                continue;
            }
            let attempt = self.sandbox_attempts.entry(uid.clone()).or_insert(0);
            let plan = plan_pod(d, &self.options, *attempt);
            *attempt = attempt.saturating_add(1);
            let client = self.client.clone();
            let spans = self.options.runtime_spans.clone();
            starts.spawn(async move {
                let begin = Instant::now();
                let started = start_pod(client, plan).await;
                if let Some(spans) = spans {
                    spans.record(begin, Instant::now());
                }
                started
            });
        }
        while let Some(joined) = starts.join_next().await {
            let Ok(started) = joined else {
                self.log.say("runtime", "a pod start task panicked");
                continue;
            };
            for w in &started.warnings {
                self.log.say(&started.full_name, w);
            }
            match started.pod {
                Ok(pod) => {
                    self.log.event(
                        &pod.full_name,
                        &format!("started sandbox {}", short_id(&pod.sandbox_id)),
                    );
                    self.live.insert(pod.uid.clone(), pod);
                }
                Err(e) => self.log.say(&started.full_name, &e),
            }
        }
    }

    fn begin_teardown(&mut self, pod: LivePod, why: Option<&str>) {
        if let Some(why) = why {
            self.log.event(
                &pod.full_name,
                &format!("stopping sandbox {}: {why}", short_id(&pod.sandbox_id)),
            );
        }
        *self
            .stopping_names
            .entry(pod.full_name.clone())
            .or_insert(0) += 1;
        let client = self.client.clone();
        let grace = self.options.stop_grace;
        let spans = self.options.runtime_spans.clone();
        self.stopping.spawn(async move {
            let begin = Instant::now();
            let result = teardown(&client, &pod, grace).await;
            if let Some(spans) = spans {
                spans.record(begin, Instant::now());
            }
            (pod, result)
        });
    }

    /// Collects finished teardowns without waiting; failed ones are retried at the next poll.
    fn reap_teardowns(&mut self) {
        while let Some(joined) = self.stopping.try_join_next() {
            self.settle(joined);
        }
    }

    fn settle(&mut self, joined: Result<(LivePod, Result<(), String>), tokio::task::JoinError>) {
        let Ok((pod, result)) = joined else {
            self.log.say("runtime", "a pod teardown task panicked");
            return;
        };
        if let Some(n) = self.stopping_names.get_mut(&pod.full_name) {
            *n = n.saturating_sub(1);
        }
        match result {
            Ok(()) => self.log.event(
                &pod.full_name,
                &format!("removed sandbox {}", short_id(&pod.sandbox_id)),
            ),
            Err(e) => {
                self.log.say(
                    &pod.full_name,
                    &format!("cannot remove sandbox {}: {e}", short_id(&pod.sandbox_id)),
                );
                self.failed.push(pod);
            }
        }
    }

    /// Stops and removes every sandbox this stand-in created, concurrently, with a few retries.
    async fn shut_down(mut self) -> Result<(), String> {
        while let Some(joined) = self.stopping.join_next().await {
            self.settle(joined);
        }
        let pods: Vec<LivePod> = std::mem::take(&mut self.live).into_values().collect();
        for pod in pods {
            self.begin_teardown(pod, Some("shutting down"));
        }
        for round in 1..=SHUTDOWN_ROUNDS {
            while let Some(joined) = self.stopping.join_next().await {
                self.settle(joined);
            }
            if self.failed.is_empty() {
                return Ok(());
            }
            if round < SHUTDOWN_ROUNDS {
                tokio::time::sleep(self.options.poll.max(Duration::from_millis(200))).await;
                for pod in std::mem::take(&mut self.failed) {
                    self.begin_teardown(pod, None);
                }
            }
        }
        let left: Vec<String> = self
            .failed
            .iter()
            .map(|p| format!("{} (sandbox {})", p.full_name, p.sandbox_id))
            .collect();
        Err(format!(
            "kubelet stand-in [{}]: could not remove at shutdown: {}",
            self.options.node_name,
            left.join(", ")
        ))
    }
}

fn plan_pod(desired: &Desired, options: &Options, attempt: u32) -> (PodPlan, Vec<String>) {
    let mut warnings = prepare_host_paths(desired);
    let sandbox_config = sandbox_config(
        desired,
        &options.node_name,
        attempt,
        options.log_dir.as_deref(),
    );
    let slots = desired
        .pod
        .containers
        .iter()
        .map(|c| {
            let (config, w) = container_config(desired, c, &options.node_name, &options.image);
            warnings.extend(w);
            Slot {
                name: c.name.clone(),
                config,
                next_attempt: 0,
                current: None,
                down_since: None,
            }
        })
        .collect();
    let full_name = format!(
        "{}/{}",
        desired.pod.namespace,
        pod_name(&desired.pod.name, &options.node_name)
    );
    (
        PodPlan {
            full_name,
            uid: desired.uid.clone(),
            sandbox_config,
            slots,
        },
        warnings,
    )
}

/// Runs the sandbox, then creates and starts its containers. A container that cannot be started
/// does not fail the pod: it is retried after the back-off like a crashed one.
async fn start_pod(client: RuntimeClient, plan: (PodPlan, Vec<String>)) -> Started {
    let (plan, mut warnings) = plan;
    let full_name = plan.full_name.clone();
    let log_directory = plan.sandbox_config.log_directory.clone();
    if !log_directory.is_empty()
        && let Err(e) = std::fs::create_dir_all(&log_directory)
    {
        warnings.push(format!("cannot create log dir {log_directory}: {e}"));
    }
    let sandbox_id = match client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(plan.sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => r.pod_sandbox_id,
        Err(e) => {
            return Started {
                full_name,
                pod: Err(e),
                warnings,
            };
        }
    };
    let mut pod = LivePod {
        full_name: plan.full_name,
        uid: plan.uid,
        sandbox_id,
        sandbox_config: plan.sandbox_config,
        slots: plan.slots,
    };
    for slot in &mut pod.slots {
        match launch(&client, &pod.sandbox_id, &pod.sandbox_config, slot).await {
            Ok(id) => slot.current = Some(id),
            Err(e) => {
                warnings.push(format!("cannot start container {}: {e}", slot.name));
                slot.down_since = Some(Instant::now());
            }
        }
    }
    Started {
        full_name,
        pod: Ok(pod),
        warnings,
    }
}

/// Creates and starts the slot's next attempt; returns the new container's id. A container that
/// was created but would not start is removed again, so it never lingers as CREATED.
async fn launch(
    client: &RuntimeClient,
    sandbox_id: &str,
    sandbox_config: &PodSandboxConfig,
    slot: &mut Slot,
) -> Result<String, String> {
    let attempt = slot.next_attempt;
    slot.next_attempt = attempt.saturating_add(1);
    let mut config = slot.config.clone();
    if let Some(metadata) = config.metadata.as_mut() {
        metadata.attempt = attempt;
    }
    config
        .annotations
        .insert(RESTART_COUNT_ANNOTATION.to_owned(), attempt.to_string());
    if !sandbox_config.log_directory.is_empty() {
        let dir = Path::new(&sandbox_config.log_directory).join(&slot.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create log dir {}: {e}", dir.display()))?;
        config.log_path = format!("{}/{attempt}.log", slot.name);
    }
    let id = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await?
        .container_id;
    if let Err(e) = client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
    {
        let _ = client
            .remove_container(RemoveContainerRequest { container_id: id })
            .await;
        return Err(e);
    }
    Ok(id)
}

/// kubelet's restartPolicy Always for one pod: a container that is not running (exited, unknown,
/// or gone) is replaced after the back-off by a new one with the next attempt. Before that, the
/// slot's older containers are removed; the one that just exited stays, for its logs.
async fn tend(
    client: &RuntimeClient,
    pod: &mut LivePod,
    containers: &[Container],
    options: &Options,
    log: &mut Log,
    now: Instant,
) {
    for slot in &mut pod.slots {
        let state = slot
            .current
            .as_deref()
            .and_then(|id| containers.iter().find(|c| c.id == id))
            .map(Container::state);
        if matches!(
            state,
            Some(ContainerState::Running | ContainerState::Created)
        ) {
            slot.down_since = None;
            continue;
        }
        let since = *slot.down_since.get_or_insert(now);
        if now.duration_since(since) < options.restart_backoff {
            continue;
        }
        let stale = containers.iter().filter(|c| {
            c.pod_sandbox_id == pod.sandbox_id
                && c.labels.get(CONTAINER_NAME_LABEL) == Some(&slot.name)
                && Some(c.id.as_str()) != slot.current.as_deref()
        });
        for c in stale {
            if let Err(e) = client
                .remove_container(RemoveContainerRequest {
                    container_id: c.id.clone(),
                })
                .await
                && !is_not_found(&e)
            {
                log.say(&pod.full_name, &e);
            }
        }
        match launch(client, &pod.sandbox_id, &pod.sandbox_config, slot).await {
            Ok(id) => {
                log.event(
                    &pod.full_name,
                    &format!(
                        "container {} {}; started attempt {} as {}",
                        slot.name,
                        if state.is_some() { "exited" } else { "is gone" },
                        slot.next_attempt.saturating_sub(1),
                        short_id(&id)
                    ),
                );
                slot.current = Some(id);
                slot.down_since = None;
            }
            Err(e) => {
                log.say(
                    &pod.full_name,
                    &format!("cannot restart container {}: {e}", slot.name),
                );
                // A full back-off before the next try, not one per poll.
                slot.down_since = Some(now);
            }
        }
    }
}

/// Stops a pod as kubelet does: its containers with the grace period (concurrently), then the
/// sandbox, then removes the sandbox (which removes its containers). Gone objects count as done,
/// so a retry after a partial failure finishes the job.
async fn teardown(client: &RuntimeClient, pod: &LivePod, grace: Duration) -> Result<(), String> {
    let containers = client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.sandbox_id.clone(),
                ..Default::default()
            }),
        })
        .await?
        .containers;
    let mut stops = JoinSet::new();
    for c in containers {
        if matches!(c.state(), ContainerState::Exited) {
            continue;
        }
        let client = client.clone();
        stops.spawn(async move {
            client
                .stop_container(StopContainerRequest {
                    container_id: c.id,
                    timeout: grace_seconds(grace),
                })
                .await
        });
    }
    let mut first_error = None;
    while let Some(joined) = stops.join_next().await {
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_not_found(&e) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("stop task failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    for result in [
        client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
            })
            .await
            .map(drop),
        client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
            })
            .await
            .map(drop),
    ] {
        match result {
            Err(e) if !is_not_found(&e) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "cp-test";

    #[test]
    fn span_log_counts_overlaps_once_and_only_inside_the_window() {
        let log = SpanLog::default();
        let t = Instant::now();
        let ms = Duration::from_millis;
        log.record(t + ms(10), t + ms(30));
        log.record(t + ms(20), t + ms(40)); // overlaps: 10..40 = 30 ms
        log.record(t + ms(50), t + ms(60)); // 10 ms
        log.record(t + ms(90), t + ms(200)); // outside the window
        assert_eq!(log.covered(t, t + ms(100)), ms(40));
        assert_eq!(log.covered(t + ms(45), t + ms(100)), ms(10));
    }

    fn apiserver(extra_annotation: &str) -> String {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  annotations:
    kube-cert-renewer.test/generated: "true"{extra_annotation}
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --client-ca-file=/etc/kubernetes/pki/ca.crt
    - --secure-port=16443
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --tls-private-key-file=/etc/kubernetes/pki/apiserver.key
    image: registry.k8s.io/kube-apiserver:v1.30.0
    name: kube-apiserver
    volumeMounts:
    - mountPath: /etc/ssl/certs
      name: ca-certs
      readOnly: true
    - mountPath: /etc/kubernetes/pki
      name: k8s-certs
      readOnly: true
    - mountPath: /scratch
      name: scratch
  hostNetwork: true
  volumes:
  - hostPath:
      path: /srv/ssl-certs
      type: DirectoryOrCreate
    name: ca-certs
  - hostPath:
      path: /srv/node/pki
    name: k8s-certs
  - name: scratch
    emptyDir: {{}}
"#
        )
    }

    fn desired(text: &str) -> Desired {
        parse_manifest(text.as_bytes(), Path::new("/m/kube-apiserver.yaml"), NODE).unwrap()
    }

    fn pod_with(name: &str, argv: &[&str]) -> (StaticPod, PodContainer) {
        let container = PodContainer {
            name: name.to_owned(),
            image: String::new(),
            argv: strings(argv),
            mounts: Vec::new(),
        };
        let pod = StaticPod {
            file: PathBuf::from("/m/x.yaml"),
            name: name.to_owned(),
            namespace: "kube-system".to_owned(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            host_network: true,
            containers: vec![container.clone()],
            host_paths: BTreeMap::new(),
        };
        (pod, container)
    }

    #[test]
    fn apiserver_maps_to_openssl_s_server_with_its_own_files() {
        let d = desired(&apiserver(""));
        let argv = container_command(&d.pod, &d.pod.containers[0]).unwrap();
        assert_eq!(
            argv,
            strings(&[
                "/usr/bin/openssl",
                "s_server",
                "-accept",
                "16443",
                "-cert",
                "/etc/kubernetes/pki/apiserver.crt",
                "-key",
                "/etc/kubernetes/pki/apiserver.key",
                "-CAfile",
                "/etc/kubernetes/pki/ca.crt",
                "-verify",
                "1",
                "-verify_return_error",
                "-www",
            ])
        );
    }

    #[test]
    fn apiserver_without_serving_cert_is_an_error_and_default_port_is_6443() {
        let (pod, c) = pod_with("kube-apiserver", &["kube-apiserver", "--secure-port=x"]);
        assert!(container_command(&pod, &c).unwrap_err().contains("port"));
        let (pod, c) = pod_with(
            "kube-apiserver",
            &[
                "kube-apiserver",
                "--tls-cert-file=/c",
                "--tls-private-key-file=/k",
            ],
        );
        let argv = container_command(&pod, &c).unwrap();
        assert_eq!(argv[3], "6443");
        assert!(!argv.contains(&"-CAfile".to_owned()));
        let (pod, c) = pod_with("kube-apiserver", &["kube-apiserver"]);
        let (config, warnings) = container_config(
            &Desired {
                pod,
                uid: "u".into(),
                host_path_types: BTreeMap::new(),
            },
            &c,
            NODE,
            DEFAULT_IMAGE,
        );
        assert!(warnings[0].contains("--tls-cert-file"), "{warnings:?}");
        assert_eq!(config.command[..2], strings(&["/bin/sh", "-c"]));
        assert!(config.command[2].contains("exit 1"));
    }

    #[test]
    fn etcd_keeps_its_flags_and_others_sleep() {
        let (pod, c) = pod_with(
            "etcd",
            &["etcd", "--name=n1", "--data-dir", "/var/lib/etcd"],
        );
        assert_eq!(
            container_command(&pod, &c).unwrap(),
            strings(&["/usr/bin/etcd", "--name=n1", "--data-dir", "/var/lib/etcd"])
        );
        let (pod, c) = pod_with(
            "kube-scheduler",
            &[
                "kube-scheduler",
                "--kubeconfig=/etc/kubernetes/scheduler.conf",
                "--secure-port=0",
            ],
        );
        let argv = container_command(&pod, &c).unwrap();
        assert_eq!(argv[..2], strings(&["/bin/sh", "-c"]));
        assert!(
            argv[2].starts_with("test -r \"$1\" && exec sleep "),
            "{argv:?}"
        );
        assert_eq!(
            argv[3..],
            strings(&["sh", "/etc/kubernetes/scheduler.conf"])
        );
        let (pod, c) = pod_with("coredns", &["/coredns"]);
        assert!(container_command(&pod, &c).unwrap()[2].starts_with("exec sleep "));
    }

    #[test]
    fn controller_manager_and_scheduler_serve_healthz_where_their_flags_say() {
        let argv = |name: &str, flags: &[&str]| {
            let mut all = vec![name, "--kubeconfig=/etc/kubernetes/x.conf"];
            all.extend_from_slice(flags);
            let (pod, c) = pod_with(name, &all);
            container_command(&pod, &c).unwrap()
        };
        let kcm = argv("kube-controller-manager", &["--bind-address=127.0.0.1"]);
        assert_eq!(kcm[..3], strings(&["/bin/sh", "-c", HEALTHZ_SCRIPT]));
        assert_eq!(
            kcm[3..],
            strings(&[
                "sh",
                "/etc/kubernetes/x.conf",
                "127.0.0.1:10257",
                "kube-controller-manager"
            ])
        );
        assert_eq!(argv("kube-scheduler", &[])[5], "10259");
        assert_eq!(
            argv(
                "kube-scheduler",
                &["--bind-address=0.0.0.0", "--secure-port=20259"]
            )[5],
            "20259"
        );
        assert_eq!(
            argv("kube-scheduler", &["--bind-address=::1", "--secure-port=1"])[5],
            "[::1]:1"
        );
        let (pod, c) = pod_with(
            "kube-scheduler",
            &["kube-scheduler", "--kubeconfig=/k", "--secure-port=x"],
        );
        assert!(container_command(&pod, &c).unwrap_err().contains("port"));
        // the script checks the kubeconfig first and keeps the key out of what it serves
        assert!(HEALTHZ_SCRIPT.starts_with("test -r \"$1\" || exit 1"));
        assert!(HEALTHZ_SCRIPT.contains("cd /tmp/www") && !HEALTHZ_SCRIPT.contains("/tmp/www/"));
        assert!(HEALTHZ_SCRIPT.contains("-keyout /tmp/tls/key.pem"));
    }

    #[test]
    fn command_annotation_overrides_the_mapping() {
        let d = desired(&apiserver(&format!("\n    {COMMAND_ANNOTATION}: exit 1")));
        assert_eq!(
            container_command(&d.pod, &d.pod.containers[0]).unwrap(),
            strings(&["/bin/sh", "-c", "exit 1"])
        );
    }

    #[test]
    fn uid_depends_on_content_and_node() {
        let a = pod_uid(b"x", "n1");
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, pod_uid(b"x", "n1"));
        assert_ne!(a, pod_uid(b"x", "n2"));
        assert_ne!(a, pod_uid(b"y", "n1"));
        assert_ne!(pod_uid(b"ab", "c"), pod_uid(b"a", "bc"));
    }

    #[test]
    fn sandbox_has_kubelet_labels_annotations_and_namespaces() {
        let d = desired(&apiserver(""));
        let config = sandbox_config(&d, NODE, 2, Some(Path::new("/logs")));
        let metadata = config.metadata.clone().unwrap();
        assert_eq!(metadata.name, "kube-apiserver-cp-test");
        assert_eq!(metadata.namespace, "kube-system");
        assert_eq!(metadata.uid, d.uid);
        assert_eq!(metadata.attempt, 2);
        let labels: Vec<(&str, &str)> = config
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("component", "kube-apiserver"),
                (POD_NAME_LABEL, "kube-apiserver-cp-test"),
                (POD_NAMESPACE_LABEL, "kube-system"),
                (POD_UID_LABEL, d.uid.as_str()),
                ("tier", "control-plane"),
            ]
        );
        assert_eq!(config.annotations[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(config.annotations[CONFIG_HASH_ANNOTATION], d.uid);
        assert_eq!(
            config.log_directory,
            format!("/logs/kube-system_kube-apiserver-cp-test_{}", d.uid)
        );
        let ns = config
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .unwrap();
        assert_eq!(ns.network(), NamespaceMode::Node);
        assert_eq!(ns.pid(), NamespaceMode::Pod);
        assert!(sandbox_config(&d, NODE, 0, None).log_directory.is_empty());
    }

    #[test]
    fn container_has_kubelet_labels_and_host_mounts_then_volume_mounts() {
        let d = desired(&apiserver(""));
        let c = &d.pod.containers[0];
        let (config, warnings) = container_config(&d, c, NODE, DEFAULT_IMAGE);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("scratch"), "{warnings:?}");
        let labels: Vec<&str> = config.labels.keys().map(String::as_str).collect();
        assert_eq!(
            labels,
            vec![
                CONTAINER_NAME_LABEL,
                POD_NAME_LABEL,
                POD_NAMESPACE_LABEL,
                POD_UID_LABEL
            ]
        );
        assert_eq!(config.labels[CONTAINER_NAME_LABEL], "kube-apiserver");
        assert_eq!(config.labels[POD_NAME_LABEL], "kube-apiserver-cp-test");
        assert_eq!(config.image.unwrap().image, DEFAULT_IMAGE);
        assert_eq!(config.envs[0].value, CONTAINER_PATH);

        let (mounts, _) = container_mounts(&d.pod, c, |_| true);
        let seen: Vec<(&str, &str, bool)> = mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("/usr", "/usr", true),
                ("/lib", "/lib", true),
                ("/lib64", "/lib64", true),
                ("/etc/ssl", "/etc/ssl", true),
                ("/etc/ssl/certs", "/srv/ssl-certs", true),
                ("/etc/kubernetes/pki", "/srv/node/pki", true),
            ]
        );
        let (mounts, _) = container_mounts(&d.pod, c, |p| p != Path::new("/lib64"));
        assert!(!mounts.iter().any(|m| m.container_path == "/lib64"));
    }

    #[test]
    fn manifest_mount_replaces_host_mount_at_the_same_path() {
        let text = apiserver("").replace("mountPath: /etc/ssl/certs", "mountPath: /etc/ssl");
        let d = desired(&text);
        let (mounts, _) = container_mounts(&d.pod, &d.pod.containers[0], |_| true);
        let ssl: Vec<&str> = mounts
            .iter()
            .filter(|m| m.container_path == "/etc/ssl")
            .map(|m| m.host_path.as_str())
            .collect();
        assert_eq!(ssl, vec!["/srv/ssl-certs"]);
    }

    #[test]
    fn host_path_types_are_read_and_or_create_paths_are_created() {
        let d = desired(&apiserver(""));
        assert_eq!(d.host_path_types["ca-certs"], "DirectoryOrCreate");
        assert!(!d.host_path_types.contains_key("k8s-certs"));

        let dir = tempfile::tempdir().unwrap();
        let mut d = d;
        d.pod.host_paths = BTreeMap::from([
            ("a".to_owned(), dir.path().join("a/b")),
            ("f".to_owned(), dir.path().join("c/x.conf")),
            ("n".to_owned(), dir.path().join("untyped")),
        ]);
        d.host_path_types = BTreeMap::from([
            ("a".to_owned(), "DirectoryOrCreate".to_owned()),
            ("f".to_owned(), "FileOrCreate".to_owned()),
        ]);
        assert!(prepare_host_paths(&d).is_empty());
        assert!(dir.path().join("a/b").is_dir());
        assert!(dir.path().join("c/x.conf").is_file());
        assert!(!dir.path().join("untyped").exists());
    }

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(grace_seconds(Duration::ZERO), 0);
        assert_eq!(grace_seconds(Duration::from_secs(2)), 2);
        assert_eq!(grace_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn not_found_errors_count_as_done() {
        assert!(is_not_found(
            "CRI runtime.v1.RuntimeService/StopPodSandbox failed: NotFound: an error occurred"
        ));
        assert!(!is_not_found(
            "CRI runtime.v1.RuntimeService/StopPodSandbox failed: Unavailable: connection refused"
        ));
    }

    #[tokio::test]
    async fn run_without_a_runtime_is_a_setup_error() {
        let options = Options::new("/nonexistent", "/nonexistent/cri.sock", NODE);
        let err = run(options, std::future::pending()).await.unwrap_err();
        assert!(err.contains("/nonexistent/cri.sock"), "{err}");
        let err = spawn(Options::new("/x", "/nonexistent/cri.sock", ""))
            .map(drop)
            .unwrap_err();
        assert!(err.contains("node name"), "{err}");
    }
}
