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
    /// kube-controller-manager and kube-scheduler: `/healthz` over HTTPS on their secure port,
    /// answering `ok`, at the first of these addresses that answers, while the new container
    /// runs. They serve a certificate they make themselves at start, so any server certificate
    /// is taken (the server must still prove its key): what this proves is that the process
    /// started with the renewed kubeconfig and serves, in seconds instead of a settle period.
    Healthz(Vec<SocketAddr>),
    /// Anything else (a pod without a health endpoint, an etcd without TLS, a controller-manager
    /// or scheduler without secure serving): running without a restart for the settle period.
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

    /// The component of a manifest parsed from `text`, whose liveness probes may say more than
    /// its flags (see [`health_check_of_manifest`]).
    pub fn from_manifest(pod: StaticPod, text: &str) -> Result<Component, String> {
        let health = health_check_of_manifest(&pod, text)?;
        Ok(Component {
            name: pod.name.clone(),
            pod,
            health,
        })
    }
}

/// The secure port kube-controller-manager serves `/healthz` on unless `--secure-port` says
/// otherwise.
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;

/// The secure port kube-scheduler serves `/healthz` on unless `--secure-port` says otherwise.
pub const SCHEDULER_PORT: u16 = 10259;

/// The health check of a static pod, from kubeadm's flags in its manifest.
///
/// kube-apiserver listens on `--bind-address` (default: every address) at `--secure-port`
/// (default 6443): a specific bind address is the only one probed; a wildcard one is probed at
/// `--advertise-address`, then on loopback. etcd: the https URLs of `--listen-client-urls`, in
/// order (a wildcard host is probed on loopback); an etcd without TLS has no certificate to
/// check and is judged by settling. kube-controller-manager and kube-scheduler: `/healthz` on
/// `--secure-port` (default [`CONTROLLER_MANAGER_PORT`], [`SCHEDULER_PORT`]; `0` turns secure
/// serving off, so they are judged by settling) at `--bind-address` (kubeadm writes
/// 127.0.0.1; a wildcard or absent one is probed on loopback).
pub fn health_check_of(pod: &StaticPod) -> Result<HealthCheck, String> {
    let file = pod.file.display();
    let ip_flag =
        |c: &crate::node::manifest::PodContainer, name: &str| -> Result<Option<IpAddr>, String> {
            c.flag(name)
                .map(|v| {
                    v.parse::<IpAddr>()
                        .map_err(|_| format!("{file}: --{name}={v} is not an IP address"))
                })
                .transpose()
        };
    for (name, default_port) in [
        ("kube-controller-manager", CONTROLLER_MANAGER_PORT),
        ("kube-scheduler", SCHEDULER_PORT),
    ] {
        let Some(c) = pod.container(name) else {
            continue;
        };
        let port = match c.flag("secure-port") {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) => return Ok(HealthCheck::Settle),
                Ok(port) => port,
                Err(_) => return Err(format!("{file}: --secure-port={p} is not a port")),
            },
        };
        let ip = match ip_flag(c, "bind-address")? {
            Some(ip) if !ip.is_unspecified() => ip,
            bind => loopback_for(bind),
        };
        return Ok(HealthCheck::Healthz(vec![SocketAddr::new(ip, port)]));
    }
    if let Some(c) = pod.container("kube-apiserver") {
        let port = match c.flag("secure-port") {
            None => 6443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{file}: --secure-port={p} is not a port"))?,
        };
        let ip_flag = |name: &str| ip_flag(c, name);
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

/// [`health_check_of`], except that a controller-manager or scheduler whose manifest (`text`)
/// has kubelet probe its health over plain HTTP is judged by settling.
///
/// Why: kubeadm's manifests had kubelet probe them on the insecure port (10252, 10251) over HTTP
/// until a release between 1.16 and 1.18 (the real trees in `tests/fixtures`: 1.8 to 1.16 HTTP,
/// 1.18 HTTPS on 10257/10259). On those older releases the secure port is absent (≤ 1.11) or
/// may want credentials for `/healthz`, so probing it could fail a healthy component and roll a
/// good renewal back; kubelet's own probe is the safer witness of what the component serves.
pub fn health_check_of_manifest(pod: &StaticPod, text: &str) -> Result<HealthCheck, String> {
    let health = health_check_of(pod)?;
    if let HealthCheck::Healthz(_) = health {
        let names = ["kube-controller-manager", "kube-scheduler"];
        if liveness_schemes(text)
            .iter()
            .any(|(container, scheme)| names.contains(&container.as_str()) && scheme == "HTTP")
        {
            return Ok(HealthCheck::Settle);
        }
    }
    Ok(health)
}

#[derive(serde::Deserialize)]
struct ProbedPod {
    #[serde(default)]
    spec: Option<ProbedSpec>,
}

#[derive(serde::Deserialize)]
struct ProbedSpec {
    #[serde(default)]
    containers: Vec<ProbedContainer>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProbedContainer {
    #[serde(default)]
    name: String,
    #[serde(default)]
    liveness_probe: Option<ProbedProbe>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProbedProbe {
    #[serde(default)]
    http_get: Option<ProbedHttpGet>,
}

#[derive(serde::Deserialize)]
struct ProbedHttpGet {
    #[serde(default)]
    scheme: Option<String>,
}

/// (container name, upper-case scheme) of every container whose liveness probe is an
/// `httpGet` (Kubernetes' default scheme is HTTP). A manifest this cannot read has none: its
/// flags decide.
fn liveness_schemes(text: &str) -> Vec<(String, String)> {
    let Ok(pod) = serde_saphyr::from_str::<ProbedPod>(text) else {
        return Vec::new();
    };
    pod.spec
        .map(|s| s.containers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let get = c.liveness_probe?.http_get?;
            let scheme = get.scheme.unwrap_or_else(|| "HTTP".into());
            Some((c.name, scheme.to_ascii_uppercase()))
        })
        .collect()
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
    /// One attempt at proving that the API server accepts every renewed credential (see
    /// [`crate::node::proof`]): Ok with a line per credential proven (none when there is nothing
    /// to prove), or why not — a rejection, or nothing that could tell yet.
    fn prove_credentials(&self) -> Result<Vec<String>, crate::node::proof::ProofError>;
    /// Whether the component may be stopped without taking something the cluster needs: for
    /// etcd, the other members healthy and a quorum left (see [`crate::node::etcd_cluster`]).
    /// Ok with a note worth telling, or Err saying why not. Components with nothing to protect
    /// may always stop.
    fn may_stop(&self, _component: &Component) -> Result<Option<String>, String> {
        Ok(None)
    }
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
    /// Kubeconfigs whose client certificate the API server must accept once every component is
    /// healthy (the renewed ones; empty: nothing to prove).
    pub kubeconfigs: Vec<PathBuf>,
    /// Where the local kube-apiserver answers (its [`HealthCheck::ApiServer`] addresses), for
    /// the proofs; empty when the node has none (then only a kubeconfig's server URL can).
    pub apiserver: Vec<SocketAddr>,
    /// The local etcd member's certificates (server or peer) had expired before this renewal:
    /// it serves no client and no peer accepts it, so stopping it takes nothing from the
    /// cluster (and its member list, which needs a working member, cannot be asked).
    pub etcd_certs_expired: bool,
}

impl TlsProbes {
    /// The probes of a node whose certificates are in `pki`, each bounded to 5 s, proving no
    /// credential.
    pub fn for_pki(pki: &Path) -> TlsProbes {
        TlsProbes {
            pki: pki.to_path_buf(),
            timeout: Duration::from_secs(5),
            kubeconfigs: Vec::new(),
            apiserver: Vec::new(),
            etcd_certs_expired: false,
        }
    }

    /// These probes, also proving the client certificates of `kubeconfigs` against the
    /// kube-apiserver of `pods` (and each kubeconfig's server URL) after a restart.
    pub fn proving(mut self, kubeconfigs: Vec<PathBuf>, pods: &StaticPods) -> TlsProbes {
        self.kubeconfigs = kubeconfigs;
        self.apiserver = pods.apiserver_addresses();
        self
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
                let targets = crate::node::health::Target::local_apiserver(addresses);
                let probe =
                    self.first_answer(&targets, "/readyz", &self.pki.join("ca.crt"), client)?;
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
                // kubeadm's etcd server certificate names loopback and the advertise address
                let targets: Vec<_> = addresses
                    .iter()
                    .map(|a| crate::node::health::Target::ip(*a))
                    .collect();
                let probe = self.first_answer(&targets, "/health", &etcd.join("ca.crt"), client)?;
                Ok(Some((
                    probe,
                    Self::serial_on_disk(&etcd.join("server.crt"))?,
                )))
            }
            HealthCheck::Healthz(_) | HealthCheck::Settle => Ok(None),
        }
    }

    /// `/healthz` of a controller-manager or scheduler: the first address that answers must say
    /// `200 ok`. No client certificate (kubelet's probe sends none) and any server certificate.
    fn healthz(&self, addresses: &[SocketAddr]) -> Result<(), String> {
        use crate::node::health::{Request, Target, Trust, request};
        let mut errors = Vec::new();
        for address in addresses {
            match request(
                &Target::ip(*address),
                &Request::get("/healthz"),
                &Trust::AnyServer,
                None,
                self.timeout,
            ) {
                Ok(probe) if probe.status == 200 && probe.body.trim() == "ok" => return Ok(()),
                Ok(probe) => {
                    return Err(format!(
                        "https://{address}/healthz answered HTTP {}: {}",
                        probe.status,
                        probe.body.trim().chars().take(200).collect::<String>()
                    ));
                }
                Err(e) => errors.push(format!("https://{address}/healthz: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// GETs `path` from the first target that answers; the error lists what each one said.
    fn first_answer(
        &self,
        targets: &[crate::node::health::Target],
        path: &str,
        ca: &Path,
        client: Option<crate::node::health::ClientCert<'_>>,
    ) -> Result<crate::node::health::Probe, String> {
        let mut errors = Vec::new();
        for target in targets {
            match crate::node::health::https_get_from(target, path, ca, client, self.timeout) {
                Ok(probe) => return Ok(probe),
                Err(e) => errors.push(format!("{}: {e}", target.addr)),
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
        if let HealthCheck::Healthz(addresses) = &component.health {
            return self.healthz(addresses);
        }
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

    fn prove_credentials(&self) -> Result<Vec<String>, crate::node::proof::ProofError> {
        crate::node::proof::prove_all(&self.kubeconfigs, &self.pki, &self.apiserver, self.timeout)
    }

    fn may_stop(&self, component: &Component) -> Result<Option<String>, String> {
        let HealthCheck::Etcd(addresses) = &component.health else {
            return Ok(None);
        };
        // A local member that takes no connection at all (not running), or whose serving
        // certificate has expired (no client accepts it), gives the cluster nothing a restart
        // could take away. Any other failure to ask it is a refusal: a member that does not
        // answer its client port may still vote over its peer port.
        if self.etcd_certs_expired {
            return Ok(Some(
                "etcd: the local member's certificates had expired: it serves no client and no \
                 peer accepts it, a restart takes nothing from the cluster"
                    .into(),
            ));
        }
        let listening = addresses
            .iter()
            .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_millis(500)).is_ok());
        if !listening {
            return Ok(Some(
                "etcd: the local member takes no connection: restarting it takes nothing from \
                 the cluster"
                    .into(),
            ));
        }
        if let Err(e) = crate::node::etcd_cluster::members(addresses, &self.pki, self.timeout)
            && e.contains(" expired at ")
        {
            return Ok(Some(format!(
                "etcd: the local member serves an expired certificate ({e}): it serves no \
                 client already, a restart takes nothing from the cluster"
            )));
        }
        crate::node::etcd_cluster::may_stop_local(addresses, &self.pki, self.timeout).map(Some)
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
    /// How long a component without a health endpoint ([`HealthCheck::Settle`]) must keep
    /// running.
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
    /// One line per renewed credential the API server was seen to accept after the restart
    /// (see [`crate::node::proof`]).
    pub proven: Vec<String>,
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
    /// A component may not stop now (etcd would lose a healthy member the cluster needs):
    /// nothing was touched.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Runtime(m)
            | Failure::NotStopped(m)
            | Failure::Unhealthy(m)
            | Failure::Files(m)
            | Failure::Refused(m) => f.write_str(m),
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
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()));
            let pod = text
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|text| manifest::parse(text, &file));
            let name = pod.as_ref().map(|p| p.name.clone()).unwrap_or_else(|_| {
                file.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            });
            let component = pod
                .and_then(|pod| Component::from_manifest(pod, text.as_deref().unwrap_or_default()));
            match component {
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

    /// Where the node's kube-apiserver answers, from its manifest (empty without a usable one):
    /// where renewed credentials are proven.
    pub fn apiserver_addresses(&self) -> Vec<SocketAddr> {
        self.usable
            .iter()
            .find_map(|c| match &c.health {
                HealthCheck::ApiServer(addresses) => Some(addresses.clone()),
                _ => None,
            })
            .unwrap_or_default()
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
    // What must not stop now (etcd without a quorum to spare) stops nothing at all.
    for c in components {
        match probes.may_stop(c) {
            Ok(Some(note)) => outcome.notes.push(note),
            Ok(None) => {}
            Err(why) => {
                return Err(Failure::Refused(format!("{why}; nothing was restarted")));
            }
        }
    }

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
    failpoint::hit("restart.after-journal");
    let parked_at = Instant::now();
    for (i, p) in parked.iter().enumerate() {
        if i > 0 {
            failpoint::hit_nth("restart.after-park", i);
        }
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
    failpoint::hit("restart.after-unpark");
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
    // Healthy components prove their own certificates; the renewed kubeconfigs are proven
    // against the API server (which may serve TLS a little before it accepts requests, so this
    // is retried within the same deadline).
    outcome.proven = crate::node::proof::wait_proven(probes, settings.poll, deadline)
        .await
        .map_err(|e| Failure::Unhealthy(format!("a renewed credential does not work: {e}")))?;
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
    failpoint::hit("restart.waiting-exit");
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
/// kube-apiserver and etcd through their probes; the controller-manager and the scheduler
/// through `/healthz` while their new container runs; a component without a health endpoint
/// must keep its new container running for the settle period (from when it was seen running).
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
    failpoint::hit("restart.before-health");
    let mut first_round = true;
    loop {
        for (i, c) in components.iter().enumerate() {
            if passed[i].is_some() {
                continue;
            }
            let (new_id, running_since) = &new_ids[i];
            if let HealthCheck::Healthz(_) = c.health {
                // Asked after the probe: the answer counts only if the new container still ran
                // then (anything else on the port, or a container that crashed after
                // answering, proves nothing).
                let answer = probes.healthy(c);
                let Some(running) =
                    still_running(runtime, c, new_id, node_name, deadline, &mut last[i]).await?
                else {
                    continue;
                };
                if !running {
                    return Err(Failure::Unhealthy(format!(
                        "{} exited (container {}) before it answered healthy{}",
                        c.name,
                        crate::node::cri::short_id(new_id),
                        answer
                            .err()
                            .map(|e| format!(" (last answer: {e})"))
                            .unwrap_or_default()
                    )));
                }
                match answer {
                    Ok(()) => passed[i] = Some(returned_at.elapsed()),
                    Err(e) => last[i] = e,
                }
            } else if c.health == HealthCheck::Settle {
                let Some(running) =
                    still_running(runtime, c, new_id, node_name, deadline, &mut last[i]).await?
                else {
                    continue;
                };
                if !running {
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
        if first_round {
            // every component asked once, some perhaps answered
            failpoint::hit("restart.during-health");
            first_round = false;
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

/// Whether `c`'s new container `new_id` still runs: `None` when the runtime did not answer
/// this round (`last` says why; asked again next round), a runtime failure once it has not
/// answered by `deadline`.
async fn still_running(
    runtime: &impl Runtime,
    c: &Component,
    new_id: &str,
    node_name: Option<&str>,
    deadline: Instant,
    last: &mut String,
) -> Result<Option<bool>, Failure> {
    match component_containers(runtime, c, node_name).await {
        Ok(list) => Ok(Some(list.iter().any(|x| x.id == new_id && x.running))),
        Err(e) if Instant::now() >= deadline => Err(Failure::Runtime(format!(
            "the container runtime stopped answering while {} was checked: {e}",
            c.name
        ))),
        Err(e) => {
            *last = e;
            Ok(None)
        }
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
        Failure::NotStopped(_) | Failure::Refused(_) => {
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
    let restored = restore_backup(state_dir, backup).map_err(|e| {
        format!(
            "restart with the renewed certificates failed: {failure}; restoring the previous \
             certificates from {} failed too: {e}",
            backup.display()
        )
    })?;
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

/// Puts every file of `backup` back (journalled, so a crash in the middle is redone by the
/// next command) and tells the journal; returns the files restored. Shared by the rollback
/// after a failed restart and the one after a failed credential proof.
pub fn restore_backup(state_dir: &Path, backup: &Path) -> Result<Vec<PathBuf>, String> {
    let restored = journal::restore_intent(backup)
        .and_then(|intent| journal::record(state_dir, &intent))
        .and_then(|()| {
            failpoint::hit("restart.during-restore");
            crate::state::store::restore(backup)
        })
        .and_then(|restored| journal::clear(state_dir).map(|()| restored))?;
    crate::daemon::events::rolled_back(backup, restored.len());
    Ok(restored)
}

#[cfg(test)]
mod tests;
