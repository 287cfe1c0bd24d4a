//! Restart of the control plane over the CRI, the way the operators' recipe does it but
//! watched instead of slept: park the static-pod manifests (kubelet stops the pods), poll the
//! runtime until the old containers have exited, put the manifests back, wait for new
//! containers, then check health with the new certificates.
//!
//! Crash safety: the parked manifests are in the journal before the first one moves, and every
//! command starts with [`crate::state::journal::recover`], which puts them back. Within one run, every
//! path out of [`restart`] after parking goes through [`unpark`].
//!
//! The runtime and the health probes are traits, so the orchestration is unit-tested against
//! fakes and integration-tested against real containerd with the kubelet stand-in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::RestartMode;
use crate::failpoint;
use crate::node::manifest::{self, StaticPod};
use crate::state::journal::{self, Intent, ParkedManifest};

/// Name of the parking directory, created next to the manifests dir (same filesystem, never
/// inside it, so kubelet cannot mistake a parked file for a manifest).
pub const PARKING_DIR_NAME: &str = ".kube-cert-renewer-parked";

/// One container as the restart sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Runtime id: a new id means a new container.
    pub id: String,
    /// The `io.kubernetes.pod.name` label.
    pub pod_name: String,
    /// Whether it is running now.
    pub running: bool,
}

/// The container runtime, reduced to what the restart asks of it.
#[allow(async_fn_in_trait)] // used generically on one thread; no Send bound needed
pub trait Runtime {
    /// Checks the runtime answers; returns its name and version for the report.
    async fn ping(&self) -> Result<String, String>;
    /// Every container (any state) kubelet made for `container` of a pod in `namespace`.
    async fn containers(
        &self,
        namespace: &str,
        container: &str,
    ) -> Result<Vec<ContainerInfo>, String>;
    /// The names of the pods of `namespace` whose sandbox is still ready: kubelet has not
    /// finished tearing them down, and a manifest returned now may meet the old pod.
    async fn ready_pods(&self, namespace: &str) -> Result<Vec<String>, String>;
}

impl Runtime for crate::node::cri::RuntimeClient {
    async fn ready_pods(&self, namespace: &str) -> Result<Vec<String>, String> {
        use crate::node::cri::{
            ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
        };
        let mut labels = BTreeMap::new();
        labels.insert(
            crate::node::cri::POD_NAMESPACE_LABEL.to_string(),
            namespace.to_string(),
        );
        let response = self
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    state: Some(PodSandboxStateValue {
                        state: PodSandboxState::Ready as i32,
                    }),
                    label_selector: labels,
                    ..Default::default()
                }),
            })
            .await?;
        Ok(response
            .items
            .into_iter()
            .filter_map(|p| p.labels.get(crate::node::cri::POD_NAME_LABEL).cloned())
            .collect())
    }

    async fn ping(&self) -> Result<String, String> {
        let v = self.version().await?;
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    async fn containers(
        &self,
        namespace: &str,
        container: &str,
    ) -> Result<Vec<ContainerInfo>, String> {
        use crate::node::cri::{ContainerFilter, ContainerState, ListContainersRequest};
        let mut labels = BTreeMap::new();
        labels.insert(
            crate::node::cri::POD_NAMESPACE_LABEL.to_string(),
            namespace.to_string(),
        );
        labels.insert(
            crate::node::cri::CONTAINER_NAME_LABEL.to_string(),
            container.to_string(),
        );
        let response = self
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    label_selector: labels,
                    ..Default::default()
                }),
            })
            .await?;
        Ok(response
            .containers
            .into_iter()
            .map(|c| ContainerInfo {
                running: c.state() == ContainerState::Running,
                pod_name: c
                    .labels
                    .get(crate::node::cri::POD_NAME_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                id: c.id,
            })
            .collect())
    }
}

/// How a component proves it is healthy after its restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// kube-apiserver: `/readyz` over HTTPS, serving `apiserver.crt`, at the first of these
    /// local addresses that answers.
    ApiServer(Vec<SocketAddr>),
    /// etcd: `/health` over HTTPS (with the healthcheck-client certificate), serving
    /// `etcd/server.crt`, at the first of these addresses that answers.
    Etcd(Vec<SocketAddr>),
    /// Anything else (controller-manager, scheduler, an etcd without TLS): running without a
    /// restart for the settle period.
    Settle,
}

/// One static pod to restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The pod's `metadata.name` (kubeadm: `kube-apiserver`, `etcd`, ...).
    pub name: String,
    /// The parsed manifest.
    pub pod: StaticPod,
    /// How to tell it is healthy.
    pub health: HealthCheck,
}

impl Component {
    /// The component of a parsed manifest, with the health check its flags call for.
    pub fn from_pod(pod: StaticPod) -> Result<Component, String> {
        let health = health_check_of(&pod)?;
        Ok(Component {
            name: pod.name.clone(),
            pod,
            health,
        })
    }
}

/// The health check of a static pod, from kubeadm's flags in its manifest.
///
/// kube-apiserver listens on `--bind-address` (default: every address) at `--secure-port`
/// (default 6443): a specific bind address is the only one probed; a wildcard one is probed at
/// `--advertise-address`, then on loopback. etcd: the https URLs of `--listen-client-urls`, in
/// order (a wildcard host is probed on loopback); an etcd without TLS has no certificate to
/// check and is judged by settling.
pub fn health_check_of(pod: &StaticPod) -> Result<HealthCheck, String> {
    let file = pod.file.display();
    if let Some(c) = pod.container("kube-apiserver") {
        let port = match c.flag("secure-port") {
            None => 6443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{file}: --secure-port={p} is not a port"))?,
        };
        let ip_flag = |name: &str| -> Result<Option<IpAddr>, String> {
            c.flag(name)
                .map(|v| {
                    v.parse::<IpAddr>()
                        .map_err(|_| format!("{file}: --{name}={v} is not an IP address"))
                })
                .transpose()
        };
        let bind = ip_flag("bind-address")?;
        let addresses = match bind {
            Some(ip) if !ip.is_unspecified() => vec![ip],
            _ => {
                let mut v: Vec<IpAddr> = ip_flag("advertise-address")?
                    .filter(|ip| !ip.is_unspecified())
                    .into_iter()
                    .collect();
                v.push(loopback_for(bind));
                v.dedup();
                v
            }
        };
        return Ok(HealthCheck::ApiServer(
            addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        ));
    }
    if let Some(c) = pod.container("etcd") {
        let urls = c
            .flag("listen-client-urls")
            .unwrap_or("http://localhost:2379");
        let mut addresses = Vec::new();
        for url in urls
            .split(',')
            .map(str::trim)
            .filter(|u| u.starts_with("https://"))
        {
            let address =
                local_address_of(url).map_err(|e| format!("{file}: --listen-client-urls: {e}"))?;
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        if addresses.is_empty() {
            return Ok(HealthCheck::Settle);
        }
        return Ok(HealthCheck::Etcd(addresses));
    }
    Ok(HealthCheck::Settle)
}

/// The loopback address that reaches a server bound to the wildcard `bind` (IPv6 for `::`).
fn loopback_for(bind: Option<IpAddr>) -> IpAddr {
    match bind {
        Some(IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    }
}

/// The address to probe for a listen URL: `https://HOST:PORT`, with `localhost` and unspecified
/// hosts (0.0.0.0, [::]) probed on loopback.
fn local_address_of(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} is not an https:// URL"))?;
    let host_port = rest.split('/').next().unwrap_or_default();
    let (host, port) = host_port
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{url:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host == "localhost" {
        loopback_for(None)
    } else {
        host.parse()
            .map_err(|_| format!("{url:?}: {host:?} is not an IP address"))?
    };
    let ip = if ip.is_unspecified() {
        loopback_for(Some(ip))
    } else {
        ip
    };
    Ok(SocketAddr::new(ip, port))
}

/// Health probes with the certificates on disk.
pub trait Probes {
    /// One attempt: Ok when the component answers healthy and serves the certificate that is on
    /// disk now; Err says what it saw.
    fn healthy(&self, component: &Component) -> Result<(), String>;
    /// Whether the component's TLS endpoint already serves the certificate on disk (for
    /// `minimal`); Ok(false) for components without one.
    fn serves_current(&self, component: &Component) -> Result<bool, String>;
}

/// Deadline of one CRI call during a restart: the waits poll, so one slow answer must not
/// stretch them by the client's default two minutes.
pub const RUNTIME_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The real probes: TLS to the local endpoints with the node's pki dir.
#[derive(Debug, Clone)]
pub struct TlsProbes {
    /// kubeadm's certificatesDir.
    pub pki: PathBuf,
    /// Bound on one probe (connect, handshake, response).
    pub timeout: Duration,
}

impl TlsProbes {
    /// The probes of a node whose certificates are in `pki`, each bounded to 5 s.
    pub fn for_pki(pki: &Path) -> TlsProbes {
        TlsProbes {
            pki: pki.to_path_buf(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Serial of the certificate in `file` (the first of the file).
    fn serial_on_disk(file: &Path) -> Result<String, String> {
        let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let certs = crate::pki::inventory::parse_cert_bundle(&data)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        certs
            .first()
            .map(|c| c.serial_hex.clone())
            .ok_or_else(|| format!("{}: no certificate", file.display()))
    }

    /// What the endpoint serves: the probe, and the serial expected from disk.
    fn probe(
        &self,
        component: &Component,
    ) -> Result<Option<(crate::node::health::Probe, String)>, String> {
        use crate::node::health::ClientCert;
        match &component.health {
            HealthCheck::ApiServer(addresses) => {
                // Present apiserver-kubelet-client when there is one: /readyz is open to
                // anonymous requests by default, but not where anonymous auth is off.
                let cert = self.pki.join("apiserver-kubelet-client.crt");
                let key = self.pki.join("apiserver-kubelet-client.key");
                let client = (cert.exists() && key.exists()).then(|| ClientCert {
                    cert: &cert,
                    key: &key,
                });
                let probe =
                    self.first_answer(addresses, "/readyz", &self.pki.join("ca.crt"), client)?;
                Ok(Some((
                    probe,
                    Self::serial_on_disk(&self.pki.join("apiserver.crt"))?,
                )))
            }
            HealthCheck::Etcd(addresses) => {
                let etcd = self.pki.join("etcd");
                let cert = etcd.join("healthcheck-client.crt");
                let key = etcd.join("healthcheck-client.key");
                let client = Some(ClientCert {
                    cert: &cert,
                    key: &key,
                });
                let probe =
                    self.first_answer(addresses, "/health", &etcd.join("ca.crt"), client)?;
                Ok(Some((
                    probe,
                    Self::serial_on_disk(&etcd.join("server.crt"))?,
                )))
            }
            HealthCheck::Settle => Ok(None),
        }
    }

    /// GETs `path` from the first address that answers; the error lists what each one said.
    fn first_answer(
        &self,
        addresses: &[SocketAddr],
        path: &str,
        ca: &Path,
        client: Option<crate::node::health::ClientCert<'_>>,
    ) -> Result<crate::node::health::Probe, String> {
        let mut errors = Vec::new();
        for address in addresses {
            match crate::node::health::https_get(*address, path, ca, client, self.timeout) {
                Ok(probe) => return Ok(probe),
                Err(e) => errors.push(format!("{address}: {e}")),
            }
        }
        Err(errors.join("; "))
    }
}

/// The certificate a component serves, and the one on its certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The served certificate.
    pub served: crate::pki::cert::CertFacts,
    /// The serial of the certificate on disk (hex).
    pub on_disk_serial: String,
}

impl TlsProbes {
    /// What `component` serves now, next to what is on disk; `None` for a component without a
    /// TLS endpoint. (`check` uses it to show the certificate a pending restart would replace.)
    pub fn served(&self, component: &Component) -> Result<Option<Served>, String> {
        let Some((probe, on_disk_serial)) = self.probe(component)? else {
            return Ok(None);
        };
        Ok(Some(Served {
            served: crate::pki::cert::CertFacts::from_der(&probe.served_leaf_der)?,
            on_disk_serial,
        }))
    }
}

impl Probes for TlsProbes {
    fn healthy(&self, component: &Component) -> Result<(), String> {
        let Some((probe, expected)) = self.probe(component)? else {
            return Ok(());
        };
        let served = crate::node::health::serial_hex(&probe.served_leaf_der)?;
        if served != expected {
            return Err(format!(
                "serves the certificate with serial {served}, not the one on disk ({expected})"
            ));
        }
        let ok = match component.health {
            HealthCheck::Etcd(_) => {
                probe.status == 200 && crate::node::health::etcd_healthy(&probe.body)
            }
            _ => probe.status == 200,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "answered HTTP {}: {}",
                probe.status,
                probe.body.trim().chars().take(200).collect::<String>()
            ))
        }
    }

    fn serves_current(&self, component: &Component) -> Result<bool, String> {
        match self.probe(component)? {
            None => Ok(false),
            Some((probe, expected)) => {
                Ok(crate::node::health::serial_hex(&probe.served_leaf_der)? == expected)
            }
        }
    }
}

/// Timing of a restart.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Interval between two questions to the runtime (or two health probes).
    pub poll: Duration,
    /// Bound on waiting for the old containers to exit.
    pub stop_timeout: Duration,
    /// Bound on waiting for the new containers to run and answer healthy.
    pub start_timeout: Duration,
    /// How long a component without a health endpoint must keep running.
    pub settle: Duration,
    /// Only containers whose pod name ends with `-<node>` count (kubelet names static pods
    /// `<name>-<node>`); `None` counts every pod of the namespace.
    pub node_name: Option<String>,
}

impl Settings {
    /// The settings of a configuration (node name resolved by the caller).
    pub fn from_config(config: &crate::config::Config, node_name: Option<String>) -> Settings {
        Settings {
            poll: Duration::from_millis(config.restart_poll_ms),
            stop_timeout: Duration::from_secs(config.restart_stop_timeout_secs),
            start_timeout: Duration::from_secs(config.restart_start_timeout_secs),
            settle: Duration::from_secs(config.restart_settle_secs),
            node_name,
        }
    }
}

/// What happened to one component.
#[derive(Debug, Clone)]
pub struct Restarted {
    /// The component.
    pub name: String,
    /// Its containers before (any state).
    pub old_ids: Vec<String>,
    /// The container running now.
    pub new_id: String,
    /// From parking until no container of it ran.
    pub stopped_after: Duration,
    /// From the return of the manifests until the new container ran.
    pub running_after: Duration,
    /// From the return of the manifests until it was healthy.
    pub healthy_after: Duration,
}

/// The report of a successful restart.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The restarted components, in restart order.
    pub restarted: Vec<Restarted>,
    /// Things worth telling (components skipped and why, a filter that did not match).
    pub notes: Vec<String>,
    /// The whole restart, wall time.
    pub total: Duration,
    /// From parking until every old container had exited.
    pub stop_phase: Duration,
    /// From the return of the manifests until every new container ran.
    pub start_phase: Duration,
}

/// Why a restart failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The runtime could not be asked (unreachable before anything was touched, or gone during
    /// the restart): the certificates are not the problem.
    Runtime(String),
    /// The old containers kept running after their manifests were parked (a kubelet that does
    /// not react): the new certificates were never tried, so they are not the problem.
    NotStopped(String),
    /// A component did not come back, or not healthy, in time with the certificates on disk.
    Unhealthy(String),
    /// Files could not be moved (the message says which and where they are).
    Files(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Runtime(m)
            | Failure::NotStopped(m)
            | Failure::Unhealthy(m)
            | Failure::Files(m) => f.write_str(m),
        }
    }
}

/// Restart order: kube-apiserver first (its exit is what proves the old certificates are out of
/// use), then etcd, then the rest by name.
pub fn restart_rank(name: &str) -> (u8, &str) {
    match name {
        "kube-apiserver" => (0, name),
        "etcd" => (1, name),
        _ => (2, name),
    }
}

/// kubeadm's control-plane static pods: what `restart` and a renewal restart unless other pods
/// are named (a kube-vip or haproxy static pod carries the HA address: never bounced unasked).
pub const KUBEADM_COMPONENTS: [&str; 4] = [
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The static pods of a manifests dir, each standing on its own manifest: the ones that can be
/// restarted, and for each one that cannot, why (naming its file). One broken manifest never
/// keeps the others from being restarted.
#[derive(Debug, Clone, Default)]
pub struct StaticPods {
    /// The manifests dir.
    pub dir: PathBuf,
    /// Usable components, in restart order.
    pub usable: Vec<Component>,
    /// (pod name — the file's stem when the manifest cannot be parsed —, why it is unusable).
    pub unusable: Vec<(String, String)>,
    /// kubeadm components whose manifest is not in the manifests dir but in the parking dir:
    /// an interrupted restart left it there (name, parked file).
    pub parked: Vec<(String, PathBuf)>,
}

impl StaticPods {
    /// Reads every manifest of `manifests_dir`; only a directory that cannot be listed is an
    /// error.
    pub fn read(manifests_dir: &Path) -> Result<StaticPods, String> {
        let mut pods = StaticPods {
            dir: manifests_dir.to_path_buf(),
            ..StaticPods::default()
        };
        for file in manifest::list(manifests_dir)? {
            let pod = manifest::read(&file);
            let name = pod.as_ref().map(|p| p.name.clone()).unwrap_or_else(|_| {
                file.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            });
            match pod.and_then(Component::from_pod) {
                Ok(c) => pods.usable.push(c),
                Err(e) => pods.unusable.push((name, e)),
            }
        }
        pods.usable
            .sort_by(|a, b| restart_rank(&a.name).cmp(&restart_rank(&b.name)));
        let parking = parking_dir(manifests_dir);
        for name in KUBEADM_COMPONENTS {
            let parked = parking.join(format!("{name}.yaml"));
            let present = pods.usable.iter().any(|c| c.name == name)
                || pods.unusable.iter().any(|(n, _)| n == name);
            if !present && parked.exists() {
                pods.parked.push((name.to_string(), parked));
            }
        }
        Ok(pods)
    }

    /// Why the component `name` cannot be restarted, if it is known but unusable or parked.
    pub fn why_not(&self, name: &str) -> Option<String> {
        if let Some((_, why)) = self.unusable.iter().find(|(n, _)| n == name) {
            return Some(why.clone());
        }
        self.parked
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, file)| {
                format!(
                    "its manifest is parked in {} by an interrupted restart (its pod is stopped); \
                 run any kube-cert-renewer command with the state dir of that run, or move it \
                 back: mv {} {}/",
                    file.display(),
                    file.display(),
                    self.dir.display()
                )
            })
    }

    /// kubeadm's components present on the node, and why any of them cannot be restarted.
    pub fn kubeadm(&self) -> (Vec<Component>, Vec<String>) {
        let usable = self
            .usable
            .iter()
            .filter(|c| KUBEADM_COMPONENTS.contains(&c.name.as_str()))
            .cloned()
            .collect();
        let problems = KUBEADM_COMPONENTS
            .iter()
            .filter_map(|n| self.why_not(n).map(|why| format!("{n}: {why}")))
            .collect();
        (usable, problems)
    }

    /// The components named, and why any of them cannot be restarted; a name no manifest has
    /// is an error listing the pods there are.
    pub fn named(&self, names: &[String]) -> Result<(Vec<Component>, Vec<String>), String> {
        let mut problems = Vec::new();
        for n in names {
            if self.usable.iter().any(|c| &c.name == n) {
                continue;
            }
            match self.why_not(n) {
                Some(why) => problems.push(format!("{n}: {why}")),
                None => {
                    let known: Vec<&str> = self
                        .usable
                        .iter()
                        .map(|c| c.name.as_str())
                        .chain(self.unusable.iter().map(|(n, _)| n.as_str()))
                        .collect();
                    return Err(format!(
                        "no static pod named {n} (there are: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        let chosen = self
            .usable
            .iter()
            .filter(|c| names.contains(&c.name))
            .cloned()
            .collect();
        Ok((chosen, problems))
    }
}

/// kubeadm's components of the manifests dir, for callers that need every one of them usable
/// (tests, benches): an unusable one is an error.
pub fn all_components(manifests_dir: &Path) -> Result<Vec<Component>, String> {
    let (usable, problems) = StaticPods::read(manifests_dir)?.kubeadm();
    if problems.is_empty() {
        Ok(usable)
    } else {
        Err(problems.join("; "))
    }
}

/// The components named, from the manifests dir; an unknown or unusable one is an error.
pub fn named_components(manifests_dir: &Path, names: &[String]) -> Result<Vec<Component>, String> {
    let (chosen, problems) = StaticPods::read(manifests_dir)?.named(names)?;
    if problems.is_empty() {
        Ok(chosen)
    } else {
        Err(problems.join("; "))
    }
}

/// The components fed by the renewed certificates (kubeadm names in, pod names out).
pub fn affected_names(renewed: &[String]) -> BTreeSet<&'static str> {
    renewed
        .iter()
        .filter_map(|n| crate::pki::kubeadm::component_of(n))
        .collect()
}

/// What a renewal restarts, by mode, out of the components that `wanted` a restart (those the
/// restart-pending record names), with a note for each component left out and why. Pure apart
/// from `probes` (asked only in `minimal` mode).
pub fn choose(
    mode: RestartMode,
    wanted: &BTreeSet<&str>,
    available: Vec<Component>,
    probes: &impl Probes,
) -> (Vec<Component>, Vec<String>) {
    let mut notes = Vec::new();
    if mode == RestartMode::All {
        return (available, notes);
    }
    for name in wanted {
        if !available.iter().any(|c| c.name == *name) {
            notes.push(format!(
                "{name}: no static-pod manifest on this node, not restarted"
            ));
        }
    }
    let mut chosen = Vec::new();
    for c in available {
        if !wanted.contains(c.name.as_str()) {
            continue;
        }
        if mode == RestartMode::Minimal && c.health != HealthCheck::Settle {
            match probes.serves_current(&c) {
                Ok(true) => {
                    notes.push(format!(
                        "{}: already serves the renewed certificate (it reloads it by itself), \
                         not restarted",
                        c.name
                    ));
                    continue;
                }
                Ok(false) => {}
                Err(e) => notes.push(format!(
                    "{}: could not tell which certificate it serves ({e}); restarting it",
                    c.name
                )),
            }
        }
        chosen.push(c);
    }
    (chosen, notes)
}

/// The parking directory of a manifests dir: a hidden sibling, on the same filesystem.
pub fn parking_dir(manifests_dir: &Path) -> PathBuf {
    manifests_dir
        .parent()
        .unwrap_or(manifests_dir)
        .join(PARKING_DIR_NAME)
}

/// Creates the parking dir (mode 0700) and checks it is on the manifests dir's filesystem, so
/// parking is a rename(2) and never a copy.
fn prepare_parking(manifests_dir: &Path, parking: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let fail = |e: String| Failure::Files(e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parking)
        .map_err(|e| {
            fail(format!(
                "cannot create the parking dir {}: {e}",
                parking.display()
            ))
        })?;
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .map_err(|e| fail(format!("{}: {e}", p.display())))
    };
    if dev(manifests_dir)? != dev(parking)? {
        return Err(fail(format!(
            "the parking dir {} is not on the filesystem of {}: manifests must move by rename",
            parking.display(),
            manifests_dir.display()
        )));
    }
    Ok(())
}

/// Is `pod_name` kubelet's name for the static pod `pod` (`<pod>-<node>`; any node when the
/// node is not known)?
fn is_pod_of(pod_name: &str, pod: &str, node_name: Option<&str>) -> bool {
    match node_name {
        Some(node) => pod_name == manifest::static_pod_name(pod, node),
        None => pod_name
            .strip_prefix(pod)
            .is_some_and(|rest| rest.starts_with('-')),
    }
}

/// The containers of one component, narrowed to this node's pods when the filter is on.
async fn component_containers(
    runtime: &impl Runtime,
    c: &Component,
    node_name: Option<&str>,
) -> Result<Vec<ContainerInfo>, String> {
    let mut all = Vec::new();
    for container in &c.pod.containers {
        all.extend(
            runtime
                .containers(&c.pod.namespace, &container.name)
                .await?
                .into_iter()
                .filter(|x| is_pod_of(&x.pod_name, &c.name, node_name)),
        );
    }
    Ok(all)
}

/// Moves every manifest of `parked` back and clears the journal; the journal stays when a
/// move fails, so the next command retries.
pub fn unpark(state_dir: &Path, parked: &[ParkedManifest]) -> Result<String, Failure> {
    let message = journal::unpark(parked).map_err(Failure::Files)?;
    journal::clear(state_dir).map_err(Failure::Files)?;
    Ok(message)
}

/// Restarts `components` (none is a no-op): park, wait for exit, return, wait for new
/// containers, check health. Every manifest is back in place when this returns, unless moving
/// it back failed — then the error says so and the journal makes the next command retry.
pub async fn restart(
    runtime: &impl Runtime,
    probes: &impl Probes,
    components: &[Component],
    state_dir: &Path,
    settings: &Settings,
) -> Result<Outcome, Failure> {
    let start = Instant::now();
    let mut outcome = Outcome::default();
    if components.is_empty() {
        return Ok(outcome);
    }
    runtime.ping().await.map_err(|e| {
        Failure::Runtime(format!(
            "the container runtime does not answer, nothing was restarted: {e}"
        ))
    })?;

    // The containers of each component now (one listing), which node filter finds this node's
    // among them, and so the old containers of each component.
    let mut listed = Vec::new();
    for c in components {
        listed.push(
            component_containers(runtime, c, None)
                .await
                .map_err(Failure::Runtime)?,
        );
    }
    let mut node_name = settings.node_name.clone();
    if let Some(node) = &node_name {
        let any_at_all = listed.iter().any(|l| !l.is_empty());
        let any_ours = components.iter().zip(&listed).any(|(c, l)| {
            l.iter()
                .any(|x| is_pod_of(&x.pod_name, &c.name, Some(node)))
        });
        if any_at_all && !any_ours {
            outcome.notes.push(format!(
                "no container of a pod named <component>-{node} found; looking at every \
                 kube-system pod instead"
            ));
            node_name = None;
        }
    }
    let old: Vec<BTreeSet<String>> = components
        .iter()
        .zip(listed)
        .map(|(c, l)| {
            l.into_iter()
                .filter(|x| is_pod_of(&x.pod_name, &c.name, node_name.as_deref()))
                .map(|x| x.id)
                .collect()
        })
        .collect();

    // Park: journal first, then rename(2) each manifest out.
    let manifests_dir = components[0]
        .pod
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let parking = parking_dir(&manifests_dir);
    prepare_parking(&manifests_dir, &parking)?;
    let parked: Vec<ParkedManifest> = components
        .iter()
        .map(|c| ParkedManifest {
            manifest: c.pod.file.clone(),
            parked: parking.join(c.pod.file.file_name().unwrap_or_default()),
        })
        .collect();
    // A copy left in the parking dir by an earlier conflict is an older manifest: keep it, out
    // of the way, rather than letting this run's rename replace it.
    for p in &parked {
        if p.parked.symlink_metadata().is_ok() {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let aside = p.parked.with_file_name(format!(
                "{}.stale-{stamp}",
                p.parked.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::rename(&p.parked, &aside).map_err(|e| {
                Failure::Files(format!(
                    "cannot move the stale {} aside: {e}",
                    p.parked.display()
                ))
            })?;
            outcome.notes.push(format!(
                "an older parked copy of {} was kept as {}",
                p.manifest.display(),
                aside.display()
            ));
        }
    }
    journal::record(
        state_dir,
        &Intent::Park {
            manifests: parked.clone(),
        },
    )
    .map_err(Failure::Files)?;
    let parked_at = Instant::now();
    for p in &parked {
        if let Err(e) = std::fs::rename(&p.manifest, &p.parked) {
            let back = unpark(state_dir, &parked);
            return Err(Failure::Files(format!(
                "cannot park {} in {}: {e}{}",
                p.manifest.display(),
                parking.display(),
                back.err()
                    .map(|b| format!("; and then: {b}"))
                    .unwrap_or_default()
            )));
        }
    }
    for dir in [&manifests_dir, &parking] {
        if let Err(e) = crate::state::store::sync_dir(dir) {
            let _ = unpark(state_dir, &parked);
            return Err(Failure::Files(format!("{}: {e}", dir.display())));
        }
    }
    failpoint::hit("restart.after-park");

    // Wait for every old container to exit (kube-apiserver first in the order).
    let stopped = wait_stopped(
        runtime,
        components,
        node_name.as_deref(),
        settings,
        parked_at,
    )
    .await;
    failpoint::hit("restart.before-unpark");
    let unparked = unpark(state_dir, &parked);
    let returned_at = Instant::now();
    let stopped_after = match (stopped, unparked) {
        (Ok(s), Ok(message)) => {
            if message.contains("someone else") {
                outcome.notes.push(message);
            }
            s
        }
        (Err(e), Ok(_)) => return Err(e),
        (Ok(_), Err(e)) => return Err(e),
        (Err(e), Err(b)) => return Err(Failure::Files(format!("{e}; and then: {b}"))),
    };
    outcome.stop_phase = returned_at - parked_at;

    // Wait for new containers, then health.
    let deadline = returned_at + settings.start_timeout;
    let mut new_ids: Vec<(String, Instant)> = Vec::new();
    for (c, old_ids) in components.iter().zip(&old) {
        let id = wait_new_container(
            runtime,
            c,
            old_ids,
            node_name.as_deref(),
            settings,
            deadline,
        )
        .await?;
        new_ids.push((id, Instant::now()));
    }
    outcome.start_phase = returned_at.elapsed();
    let healthy_after = wait_all_healthy(
        runtime,
        probes,
        components,
        &new_ids,
        node_name.as_deref(),
        settings,
        deadline,
        returned_at,
    )
    .await?;
    for (i, c) in components.iter().enumerate() {
        outcome.restarted.push(Restarted {
            name: c.name.clone(),
            old_ids: old[i].iter().cloned().collect(),
            new_id: new_ids[i].0.clone(),
            stopped_after: stopped_after.get(i).copied().unwrap_or_default(),
            running_after: new_ids[i].1 - returned_at,
            healthy_after: healthy_after[i],
        });
    }
    outcome.total = start.elapsed();
    let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    if let Err(e) = crate::state::pending::done(state_dir, &names) {
        outcome.notes.push(format!(
            "the restart-pending record could not be updated: {e}"
        ));
    }
    Ok(outcome)
}

/// Polls until no container of any component runs; returns for each component how long after
/// parking it was seen stopped. Runtime errors are retried until the timeout (a runtime being
/// restarted by systemd comes back), then reported as such.
async fn wait_stopped(
    runtime: &impl Runtime,
    components: &[Component],
    node_name: Option<&str>,
    settings: &Settings,
    parked_at: Instant,
) -> Result<Vec<Duration>, Failure> {
    let deadline = parked_at + settings.stop_timeout;
    let mut stopped: Vec<Option<Duration>> = vec![None; components.len()];
    let mut last_error = None;
    loop {
        for (i, c) in components.iter().enumerate() {
            if stopped[i].is_some() {
                continue;
            }
            let answer = match component_containers(runtime, c, node_name).await {
                Ok(list) if list.iter().any(|x| x.running) => Ok(false),
                Ok(_) => runtime
                    .ready_pods(&c.pod.namespace)
                    .await
                    .map(|pods| !pods.iter().any(|p| is_pod_of(p, &c.name, node_name))),
                Err(e) => Err(e),
            };
            match answer {
                Ok(gone) => {
                    last_error = None;
                    if gone {
                        stopped[i] = Some(parked_at.elapsed());
                    }
                }
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        if stopped.iter().all(Option::is_some) {
            return Ok(stopped.into_iter().flatten().collect());
        }
        if Instant::now() >= deadline {
            let running: Vec<&str> = components
                .iter()
                .zip(&stopped)
                .filter(|(_, s)| s.is_none())
                .map(|(c, _)| c.name.as_str())
                .collect();
            return Err(match last_error {
                Some(e) => Failure::Runtime(format!(
                    "the container runtime stopped answering while waiting for {} to stop: {e}",
                    running.join(", ")
                )),
                None => Failure::NotStopped(format!(
                    "{} still running {}s after its manifest was parked: the kubelet did not \
                     react (is it running?); the manifests are back in place",
                    running.join(", "),
                    settings.stop_timeout.as_secs()
                )),
            });
        }
        crate::daemon::systemd::beat();
        tokio::time::sleep(settings.poll).await;
    }
}

/// Polls until a container of `c` that was not there before runs.
async fn wait_new_container(
    runtime: &impl Runtime,
    c: &Component,
    old_ids: &BTreeSet<String>,
    node_name: Option<&str>,
    settings: &Settings,
    deadline: Instant,
) -> Result<String, Failure> {
    loop {
        let last_error = match component_containers(runtime, c, node_name).await {
            Ok(list) => {
                if let Some(new) = list.iter().find(|x| x.running && !old_ids.contains(&x.id)) {
                    return Ok(new.id.clone());
                }
                None
            }
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => Failure::Runtime(format!(
                    "the container runtime stopped answering while waiting for {} to start: {e}",
                    c.name
                )),
                None => Failure::Unhealthy(format!(
                    "{} did not start a new container within {}s of its manifest's return",
                    c.name,
                    settings.start_timeout.as_secs()
                )),
            });
        }
        crate::daemon::systemd::beat();
        tokio::time::sleep(settings.poll).await;
    }
}

/// Polls every component's health, all in the same rounds, until each passed or the deadline:
/// kube-apiserver and etcd through their probes; a component without a health endpoint must
/// keep its new container running for the settle period (from when it was seen running).
/// Returns for each component when it passed, from the return of the manifests.
#[allow(clippy::too_many_arguments)]
async fn wait_all_healthy(
    runtime: &impl Runtime,
    probes: &impl Probes,
    components: &[Component],
    new_ids: &[(String, Instant)],
    node_name: Option<&str>,
    settings: &Settings,
    deadline: Instant,
    returned_at: Instant,
) -> Result<Vec<Duration>, Failure> {
    let mut passed: Vec<Option<Duration>> = vec![None; components.len()];
    let mut last: Vec<String> = vec![String::new(); components.len()];
    loop {
        for (i, c) in components.iter().enumerate() {
            if passed[i].is_some() {
                continue;
            }
            let (new_id, running_since) = &new_ids[i];
            if c.health == HealthCheck::Settle {
                let list = match component_containers(runtime, c, node_name).await {
                    Ok(list) => list,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(Failure::Runtime(format!(
                            "the container runtime stopped answering while {} settled: {e}",
                            c.name
                        )));
                    }
                    Err(e) => {
                        last[i] = e;
                        continue;
                    }
                };
                if !list.iter().any(|x| x.id == *new_id && x.running) {
                    return Err(Failure::Unhealthy(format!(
                        "{} exited (container {}) within {}s of starting",
                        c.name,
                        crate::node::cri::short_id(new_id),
                        settings.settle.as_secs()
                    )));
                }
                if running_since.elapsed() >= settings.settle {
                    passed[i] = Some(returned_at.elapsed());
                }
            } else {
                match probes.healthy(c) {
                    Ok(()) => passed[i] = Some(returned_at.elapsed()),
                    Err(e) => last[i] = e,
                }
            }
        }
        if passed.iter().all(Option::is_some) {
            return Ok(passed.into_iter().flatten().collect());
        }
        if Instant::now() >= deadline {
            let failing: Vec<String> = components
                .iter()
                .zip(&passed)
                .zip(&last)
                .filter(|((_, p), _)| p.is_none())
                .map(|((c, _), why)| {
                    if c.health == HealthCheck::Settle {
                        format!("{} did not settle", c.name)
                    } else {
                        format!("{} did not answer healthy: {why}", c.name)
                    }
                })
                .collect();
            return Err(Failure::Unhealthy(format!(
                "within {}s of the manifests' return, {}",
                settings.start_timeout.as_secs(),
                failing.join("; ")
            )));
        }
        crate::daemon::systemd::beat();
        tokio::time::sleep(settings.poll).await;
    }
}

/// Restarts, and when that fails for any reason other than the runtime itself, restores the
/// certificates of `backup` (if this restart follows a renewal) and restarts again with them.
/// Returns the outcome of the first attempt, or an error that tells the whole story.
pub async fn restart_with_rollback(
    runtime: &impl Runtime,
    probes: &impl Probes,
    components: &[Component],
    state_dir: &Path,
    settings: &Settings,
    backup: Option<&Path>,
) -> Result<Outcome, String> {
    let failure = match restart(runtime, probes, components, state_dir, settings).await {
        Ok(outcome) => return Ok(outcome),
        Err(f) => f,
    };
    let Some(backup) = backup else {
        return Err(format!("restart failed: {failure}"));
    };
    match failure {
        Failure::Unhealthy(_) => {}
        Failure::Runtime(_) => {
            return Err(format!(
                "restart failed: {failure}. The renewed certificates stay in place (they are not \
                 the problem; the backup is {}); kubelet starts the pods once the runtime is back, \
                 and the restart stays pending until one succeeds",
                backup.display()
            ));
        }
        Failure::NotStopped(_) => {
            return Err(format!(
                "restart failed: {failure}. The renewed certificates stay in place (they were \
                 never tried; the backup is {}); the restart stays pending until one succeeds",
                backup.display()
            ));
        }
        Failure::Files(_) => {
            // Manifests may still be parked and the journal says so: nothing else may begin.
            return Err(format!(
                "restart failed: {failure}. The renewed certificates stay in place (backup: {}); \
                 the next run of any command finishes putting the manifests back",
                backup.display()
            ));
        }
    }
    let restored = journal::restore_intent(backup)
        .and_then(|intent| journal::record(state_dir, &intent))
        .and_then(|()| {
            failpoint::hit("restart.during-restore");
            crate::state::store::restore(backup)
        })
        .and_then(|restored| journal::clear(state_dir).map(|()| restored))
        .map_err(|e| {
            format!(
                "restart with the renewed certificates failed: {failure}; restoring the previous \
             certificates from {} failed too: {e}",
                backup.display()
            )
        })?;
    crate::daemon::events::rolled_back(backup, restored.len());
    let again = match restart(runtime, probes, components, state_dir, settings).await {
        Ok(_) => "they are running healthy again with the previous certificates".to_string(),
        Err(e) => format!("but restarting them again failed as well: {e}"),
    };
    Err(format!(
        "restart with the renewed certificates failed: {failure}. The previous certificates \
         were restored from {} ({} files) and the components restarted again: {again}",
        backup.display(),
        restored.len()
    ))
}

#[cfg(test)]
mod tests;
