//! What a re-issue from scratch needs to know about the node, gathered from whatever survived.
//!
//! A certificate rebuilt without its old copy needs the node's name, its advertise address, the
//! service IP, the DNS domain, the control-plane endpoint, the extra SANs and the kubeadm version
//! (subjects and extensions changed between releases). Each fact is taken from the most specific
//! source that has it — the static-pod manifests (what the node really runs), a kubeadm config,
//! surviving or snapshot certificates and kubeconfigs — and `sources` says where each came from,
//! so `recover` can show the operator what it is about to sign. Pure: callers read the files.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::node::manifest::{PodContainer, StaticPod, image_tag};
use crate::pki::cert::CertFacts;
use crate::pki::kubeconfig::{self, ClientCert};

/// A Kubernetes minor release, the granularity at which kubeadm's profiles change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version (1).
    pub major: u32,
    /// Minor version (e.g. 18 for v1.18.2).
    pub minor: u32,
}

impl Version {
    /// `major.minor`, for comparisons written as in the release notes.
    pub const fn new(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    /// Reads `v1.18.2`, `1.18`, `v1.30.0-rc.1`, `stable-1.14`; `None` for `stable`, `latest` and
    /// anything else without a `major.minor`.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let text = text.rsplit('-').find(|part| {
            let p = part.strip_prefix('v').unwrap_or(part);
            p.split('.')
                .take(2)
                .filter(|n| n.parse::<u32>().is_ok())
                .count()
                == 2
        })?;
        let text = text.strip_prefix('v').unwrap_or(text);
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Version { major, minor })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Everything a kubeadm profile needs about the node, with where each fact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// kubeadm's `nodeRegistration.name`: the etcd member name, the first DNS SAN, the kubelet's
    /// identity.
    pub node_name: String,
    /// The API server's advertise address (`localAPIEndpoint.advertiseAddress`).
    pub advertise_address: Option<IpAddr>,
    /// The API server's secure port (`--secure-port`, default 6443).
    pub apiserver_port: u16,
    /// First usable IP of the service CIDR (the `kubernetes` Service's cluster IP).
    pub service_ip: Option<IpAddr>,
    /// The cluster DNS domain (`networking.dnsDomain`, default `cluster.local`).
    pub dns_domain: String,
    /// `controlPlaneEndpoint` as written in a kubeadm config (`host` or `host:port`), or learned
    /// from a surviving kubeconfig whose server differs from the local endpoint.
    pub control_plane_endpoint: Option<String>,
    /// `apiServer.certSANs`, or the extra SANs of a surviving apiserver certificate.
    pub apiserver_cert_sans: Vec<String>,
    /// `etcd.local.serverCertSANs`, or the extras of a surviving etcd-server certificate.
    pub etcd_server_cert_sans: Vec<String>,
    /// `etcd.local.peerCertSANs`, or the extras of a surviving etcd-peer certificate.
    pub etcd_peer_cert_sans: Vec<String>,
    /// The Kubernetes release whose kubeadm rules apply; `None` = current kubeadm.
    pub version: Option<Version>,
    /// True when `version` was not read but inferred from certificates: it is then the newest
    /// release whose kubeadm writes certificates shaped like the surviving ones, not necessarily
    /// the release the cluster runs.
    pub version_inferred: bool,
    /// kubeadm's cluster name (kubeconfig cluster entry, `clusterName`, default `kubernetes`).
    pub cluster_name: String,
    /// One human line per fact: its value and where it came from.
    pub sources: Vec<String>,
}

/// What `gather` may read: every field is optional evidence.
#[derive(Debug, Clone, Copy, Default)]
pub struct FactSources<'a> {
    /// The node's (or a snapshot's) static pods.
    pub manifests: &'a [StaticPod],
    /// Text of a kubeadm config file (multi-document YAML).
    pub kubeadm_config: Option<&'a str>,
    /// (file name like `admin.conf`, text) of surviving or snapshot kubeconfigs.
    pub kubeconfigs: &'a [(String, String)],
    /// (kubeadm name like `apiserver`, `etcd-server`, `kubelet.conf`, or a CA name) of surviving
    /// or snapshot certificates, maybe expired.
    pub certs: &'a [(String, CertFacts)],
    /// The daemon config's node name: wins when given.
    pub node_name_hint: Option<&'a str>,
    /// The machine's hostname: last resort for the node name (kubeadm's own default).
    pub hostname: Option<&'a str>,
}

/// The fields of a kubeadm config (any of InitConfiguration, ClusterConfiguration,
/// JoinConfiguration, legacy MasterConfiguration) that re-issuing needs; the rest is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeadmConfig {
    /// `nodeRegistration.name` (legacy `nodeName`).
    pub node_name: Option<String>,
    /// `localAPIEndpoint.advertiseAddress` (v1alpha3 `apiEndpoint`, legacy `api`).
    pub advertise_address: Option<String>,
    /// `localAPIEndpoint.bindPort`.
    pub bind_port: Option<u16>,
    /// `controlPlaneEndpoint`.
    pub control_plane_endpoint: Option<String>,
    /// `kubernetesVersion`.
    pub kubernetes_version: Option<String>,
    /// `networking.serviceSubnet`.
    pub service_subnet: Option<String>,
    /// `networking.dnsDomain`.
    pub dns_domain: Option<String>,
    /// `clusterName`.
    pub cluster_name: Option<String>,
    /// `apiServer.certSANs` (v1alpha3 `apiServerCertSANs`).
    pub apiserver_cert_sans: Vec<String>,
    /// `etcd.local.serverCertSANs`.
    pub etcd_server_cert_sans: Vec<String>,
    /// `etcd.local.peerCertSANs`.
    pub etcd_peer_cert_sans: Vec<String>,
}

// Every field optional and typed loosely enough for all API versions: v1alpha3 … v1beta4.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDoc {
    #[serde(default)]
    node_registration: Option<RawNodeRegistration>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default, rename = "localAPIEndpoint")]
    local_api_endpoint: Option<RawEndpoint>,
    #[serde(default, rename = "apiEndpoint")]
    api_endpoint: Option<RawEndpoint>,
    #[serde(default)]
    api: Option<RawLegacyApi>,
    #[serde(default)]
    control_plane: Option<RawJoinControlPlane>,
    #[serde(default)]
    control_plane_endpoint: Option<String>,
    #[serde(default)]
    kubernetes_version: Option<String>,
    #[serde(default)]
    networking: Option<RawNetworking>,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    api_server: Option<RawApiServer>,
    #[serde(default, rename = "apiServerCertSANs")]
    api_server_cert_sans: Option<Vec<String>>,
    #[serde(default)]
    etcd: Option<RawEtcd>,
}

#[derive(Debug, Default, Deserialize)]
struct RawNodeRegistration {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEndpoint {
    #[serde(default)]
    advertise_address: Option<String>,
    #[serde(default)]
    bind_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLegacyApi {
    #[serde(default)]
    advertise_address: Option<String>,
    #[serde(default)]
    bind_port: Option<u16>,
    #[serde(default)]
    control_plane_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawJoinControlPlane {
    #[serde(default, rename = "localAPIEndpoint")]
    local_api_endpoint: Option<RawEndpoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetworking {
    #[serde(default)]
    service_subnet: Option<String>,
    #[serde(default)]
    dns_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawApiServer {
    #[serde(default, rename = "certSANs")]
    cert_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEtcd {
    #[serde(default)]
    local: Option<RawLocalEtcd>,
    // v1alpha1/2 kept them at etcd's top level
    #[serde(default, rename = "serverCertSANs")]
    server_cert_sans: Option<Vec<String>>,
    #[serde(default, rename = "peerCertSANs")]
    peer_cert_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLocalEtcd {
    #[serde(default, rename = "serverCertSANs")]
    server_cert_sans: Option<Vec<String>>,
    #[serde(default, rename = "peerCertSANs")]
    peer_cert_sans: Option<Vec<String>>,
}

/// Bigger than any kubeadm config; larger input is refused before YAML parsing.
const MAX_CONFIG_BYTES: usize = 1 << 20;

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Parses a kubeadm config file (all its documents); fields of later documents fill what earlier
/// ones left unset. Unknown fields and kinds are ignored; input is size- and alias-bounded.
pub fn parse_kubeadm_config(text: &str) -> Result<KubeadmConfig, String> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "not a kubeadm config: {} bytes (at most {MAX_CONFIG_BYTES} are parsed)",
            text.len()
        ));
    }
    let options = serde_saphyr::options! {
        alias_limits: serde_saphyr::alias_limits! { max_total_replayed_events: 10_000 },
    };
    let docs: Vec<RawDoc> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("").to_string();
            format!("not a valid kubeadm config (YAML): {first}")
        })?;
    let mut out = KubeadmConfig::default();
    fn fill<T>(slot: &mut Option<T>, value: Option<T>) {
        if slot.is_none() {
            *slot = value;
        }
    }
    fn fill_list(slot: &mut Vec<String>, value: Option<Vec<String>>) {
        if slot.is_empty()
            && let Some(v) = value
        {
            *slot = v.into_iter().map(|s| s.trim().to_string()).collect();
            slot.retain(|s| !s.is_empty());
        }
    }
    for doc in docs {
        fill(
            &mut out.node_name,
            non_empty(doc.node_registration.and_then(|n| n.name)),
        );
        fill(&mut out.node_name, non_empty(doc.node_name));
        let endpoints = [
            doc.local_api_endpoint,
            doc.api_endpoint,
            doc.control_plane.and_then(|c| c.local_api_endpoint),
        ];
        for endpoint in endpoints.into_iter().flatten() {
            fill(
                &mut out.advertise_address,
                non_empty(endpoint.advertise_address),
            );
            fill(&mut out.bind_port, endpoint.bind_port.filter(|p| *p != 0));
        }
        if let Some(api) = doc.api {
            fill(&mut out.advertise_address, non_empty(api.advertise_address));
            fill(&mut out.bind_port, api.bind_port.filter(|p| *p != 0));
            fill(
                &mut out.control_plane_endpoint,
                non_empty(api.control_plane_endpoint),
            );
        }
        fill(
            &mut out.control_plane_endpoint,
            non_empty(doc.control_plane_endpoint),
        );
        fill(
            &mut out.kubernetes_version,
            non_empty(doc.kubernetes_version),
        );
        if let Some(net) = doc.networking {
            fill(&mut out.service_subnet, non_empty(net.service_subnet));
            fill(&mut out.dns_domain, non_empty(net.dns_domain));
        }
        fill(&mut out.cluster_name, non_empty(doc.cluster_name));
        fill_list(
            &mut out.apiserver_cert_sans,
            doc.api_server.and_then(|a| a.cert_sans),
        );
        fill_list(&mut out.apiserver_cert_sans, doc.api_server_cert_sans);
        if let Some(etcd) = doc.etcd {
            let (server, peer) = match etcd.local {
                Some(local) => (local.server_cert_sans, local.peer_cert_sans),
                None => (None, None),
            };
            fill_list(&mut out.etcd_server_cert_sans, server);
            fill_list(&mut out.etcd_peer_cert_sans, peer);
            fill_list(&mut out.etcd_server_cert_sans, etcd.server_cert_sans);
            fill_list(&mut out.etcd_peer_cert_sans, etcd.peer_cert_sans);
        }
    }
    Ok(out)
}

/// The first usable address of a CIDR (kubeadm's `GetAPIServerVirtualIP`: network + 1). For a
/// dual-stack list (`a,b`) the first range counts, as kubeadm does.
pub fn first_service_ip(cidrs: &str) -> Result<IpAddr, String> {
    let cidr = cidrs.split(',').next().unwrap_or("").trim();
    let (addr, bits) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} is not a CIDR (no /prefix)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{cidr:?} is not a CIDR (bad address)"))?;
    let bits: u32 = bits
        .parse()
        .map_err(|_| format!("{cidr:?} is not a CIDR (bad prefix length)"))?;
    match addr {
        IpAddr::V4(v4) => {
            if bits > 30 {
                return Err(format!("{cidr:?} has no usable address for the service IP"));
            }
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            let net = u32::from(v4) & mask;
            Ok(IpAddr::V4((net + 1).into()))
        }
        IpAddr::V6(v6) => {
            if bits > 126 {
                return Err(format!("{cidr:?} has no usable address for the service IP"));
            }
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            let net = u128::from(v6) & mask;
            Ok(IpAddr::V6((net + 1).into()))
        }
    }
}

/// Splits a `host`, `host:port`, `[v6]:port` or bare IPv6 endpoint (kubeadm's `ParseHostPort`).
pub fn split_host_port(endpoint: &str) -> Result<(String, Option<u16>), String> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Err("empty endpoint".into());
    }
    if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{endpoint:?}: unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{endpoint:?}: bad port"))?,
            ),
            None if after.is_empty() => None,
            None => return Err(format!("{endpoint:?}: junk after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    match endpoint.matches(':').count() {
        0 => Ok((endpoint.to_string(), None)),
        1 => {
            let (host, port) = endpoint.split_once(':').unwrap_or((endpoint, ""));
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{endpoint:?}: bad port"))?;
            if host.is_empty() {
                return Err(format!("{endpoint:?}: no host"));
            }
            Ok((host.to_string(), Some(port)))
        }
        _ => endpoint
            .parse::<std::net::Ipv6Addr>()
            .map(|_| (endpoint.to_string(), None))
            .map_err(|_| format!("{endpoint:?}: not host, host:port or an IPv6 address")),
    }
}

/// The `host:port` part of a URL like `https://10.0.0.1:6443/path`.
fn url_authority(url: &str) -> Option<&str> {
    let rest = url.trim().split_once("://").map(|(_, r)| r)?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then_some(authority)
}

/// A static pod of the control plane by its kubeadm name, and its main container.
fn pod<'a>(manifests: &'a [StaticPod], name: &str) -> Option<(&'a StaticPod, &'a PodContainer)> {
    let pod = manifests.iter().find(|p| p.name == name).or_else(|| {
        manifests
            .iter()
            .find(|p| p.labels.get("component").map(String::as_str) == Some(name))
    })?;
    let container = pod.container(name).or_else(|| pod.containers.first())?;
    Some((pod, container))
}

/// What facts need from one certificate.
#[derive(Debug, Default)]
struct CertView {
    cn: Option<String>,
    orgs: Vec<String>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    has_basic_constraints: bool,
    has_extensions: bool,
}

fn view(der: &[u8]) -> Option<CertView> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut out = CertView {
        cn: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string),
        orgs: cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
        has_extensions: !cert.extensions().is_empty(),
        ..CertView::default()
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(_) => out.has_basic_constraints = true,
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                        GeneralName::IPAddress(bytes) => {
                            if let Ok(b) = <[u8; 4]>::try_from(*bytes) {
                                out.ips.push(IpAddr::from(b));
                            } else if let Ok(b) = <[u8; 16]>::try_from(*bytes) {
                                out.ips.push(IpAddr::from(b));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(out)
}

fn is_loopback(ip: &IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// The standard DNS names of the apiserver certificate (besides the node name).
fn standard_apiserver_dns(name: &str) -> bool {
    matches!(
        name,
        "kubernetes" | "kubernetes.default" | "kubernetes.default.svc"
    ) || name.starts_with("kubernetes.default.svc.")
}

/// Gathers the node facts from every source, most specific first. Fails only when no source
/// names the node; the error lists what was tried.
pub fn gather(sources: &FactSources<'_>) -> Result<NodeFacts, String> {
    let mut lines = Vec::new();
    let config = match sources.kubeadm_config {
        Some(text) => match parse_kubeadm_config(text) {
            Ok(c) => Some(c),
            Err(e) => {
                lines.push(format!("kubeadm config ignored: {e}"));
                None
            }
        },
        None => None,
    };
    let config = config.as_ref();
    let apiserver = pod(sources.manifests, "kube-apiserver").map(|(_, c)| c);
    let etcd = pod(sources.manifests, "etcd").map(|(_, c)| c);
    let controller_manager = pod(sources.manifests, "kube-controller-manager").map(|(_, c)| c);

    // Certificates by kubeadm name, including those embedded in kubeconfigs.
    let mut certs: Vec<(String, CertView)> = sources
        .certs
        .iter()
        .filter_map(|(name, facts)| view(&facts.der).map(|v| (name.clone(), v)))
        .collect();
    let mut kubeconfig_users: Vec<(String, String, Option<String>, Option<String>)> = Vec::new();
    for (file, text) in sources.kubeconfigs {
        let Ok(creds) = kubeconfig::credentials(text, Path::new(file)) else {
            continue;
        };
        if let ClientCert::Embedded { cert_pem, .. } = &creds.client
            && !certs.iter().any(|(n, _)| n == file)
            && let Ok(blocks) = crate::pki::pem::parse(cert_pem)
            && let Some(block) = blocks.iter().find(|b| b.label == "CERTIFICATE")
            && let Some(v) = view(&block.der)
        {
            certs.push((file.clone(), v));
        }
        kubeconfig_users.push((
            file.clone(),
            creds.user,
            creds.server,
            Some(creds.cluster).filter(|c| !c.is_empty()),
        ));
    }
    let cert = |name: &str| certs.iter().find(|(n, _)| n == name).map(|(_, v)| v);

    // --- node name
    let mut tried = Vec::new();
    let mut node_name: Option<(String, String)> = None;
    let mut offer = |value: Option<String>, source: &str, tried: &mut Vec<String>| {
        tried.push(source.to_string());
        if node_name.is_none()
            && let Some(v) = value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        {
            node_name = Some((v, source.to_string()));
        }
    };
    offer(
        sources.node_name_hint.map(str::to_string),
        "the configured node name",
        &mut tried,
    );
    offer(
        config.and_then(|c| c.node_name.clone()),
        "kubeadm config nodeRegistration.name",
        &mut tried,
    );
    offer(
        etcd.and_then(|c| c.flag("name")).map(str::to_string),
        "etcd manifest --name",
        &mut tried,
    );
    let kubelet_cn = cert("kubelet.conf")
        .and_then(|v| v.cn.as_deref())
        .and_then(|cn| cn.strip_prefix("system:node:"))
        .map(str::to_string);
    offer(
        kubelet_cn,
        "kubelet.conf certificate CN system:node:<name>",
        &mut tried,
    );
    let kubelet_user = kubeconfig_users
        .iter()
        .find(|(file, ..)| file == "kubelet.conf")
        .and_then(|(_, user, ..)| user.strip_prefix("system:node:"))
        .map(str::to_string);
    offer(
        kubelet_user,
        "kubelet.conf user system:node:<name>",
        &mut tried,
    );
    for name in ["etcd-server", "etcd-peer"] {
        let cn = cert(name)
            .and_then(|v| v.cn.clone())
            .filter(|cn| !cn.starts_with("kube-etcd"));
        offer(cn, &format!("{name} certificate CN"), &mut tried);
    }
    let apiserver_node = cert("apiserver").and_then(|v| {
        let extra: Vec<&String> = v
            .dns
            .iter()
            .filter(|d| !standard_apiserver_dns(d))
            .collect();
        // kubeadm < 1.19 writes the node name first; later releases sort the DNS names, so only
        // a single non-standard name is unambiguous.
        let first = v.dns.first().filter(|d| !standard_apiserver_dns(d));
        let unsorted = v.dns.windows(2).any(|w| w[0] > w[1]);
        match (first, unsorted, extra.len()) {
            (Some(first), true, _) => Some(first.clone()),
            (_, _, 1) => Some(extra[0].clone()),
            _ => None,
        }
    });
    offer(
        apiserver_node,
        "apiserver certificate's node-name DNS SAN",
        &mut tried,
    );
    offer(
        sources.hostname.map(str::to_string),
        "the hostname",
        &mut tried,
    );
    let Some((node_name, node_source)) = node_name else {
        return Err(format!(
            "the node name is unknown: none of {} gave one; set node_name in the config",
            tried.join(", ")
        ));
    };
    lines.push(format!("node name {node_name}: {node_source}"));

    // --- advertise address
    let mut advertise: Option<(IpAddr, String)> = None;
    let mut offer_ip = |value: Option<&str>, source: &str| {
        if advertise.is_none()
            && let Some(ip) = value.and_then(|v| v.trim().parse::<IpAddr>().ok())
            && !ip.is_unspecified()
        {
            advertise = Some((ip, source.to_string()));
        }
    };
    offer_ip(
        apiserver.and_then(|c| c.flag("advertise-address")),
        "kube-apiserver manifest --advertise-address",
    );
    offer_ip(
        config.and_then(|c| c.advertise_address.as_deref()),
        "kubeadm config localAPIEndpoint.advertiseAddress",
    );
    let peer_host = etcd
        .and_then(|c| c.flag("initial-advertise-peer-urls"))
        .and_then(|urls| urls.split(',').next())
        .and_then(url_authority)
        .and_then(|a| split_host_port(a).ok())
        .map(|(host, _)| host);
    offer_ip(
        peer_host.as_deref(),
        "etcd manifest --initial-advertise-peer-urls",
    );
    let peer_cert_ip = cert("etcd-peer")
        .and_then(|v| v.ips.iter().find(|ip| !is_loopback(ip)))
        .map(|ip| ip.to_string());
    offer_ip(
        peer_cert_ip.as_deref(),
        "etcd-peer certificate's first IP SAN",
    );
    // kubeadm writes [service IP, advertise address, controlPlaneEndpoint IP, certSANs IPs]: the
    // second is the advertise address whatever extras follow.
    let apiserver_cert_ip = cert("apiserver")
        .and_then(|v| v.ips.get(1))
        .map(|ip| ip.to_string());
    offer_ip(
        apiserver_cert_ip.as_deref(),
        "apiserver certificate's second IP SAN",
    );
    let advertise_address = advertise.as_ref().map(|(ip, _)| *ip);
    match &advertise {
        Some((ip, source)) => lines.push(format!("advertise address {ip}: {source}")),
        None => lines
            .push("advertise address unknown: no manifest, config or certificate has it".into()),
    }

    // --- port
    let (apiserver_port, port_source) = if let Some(p) = apiserver
        .and_then(|c| c.flag("secure-port"))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
    {
        (p, "kube-apiserver manifest --secure-port".to_string())
    } else if let Some(p) = config.and_then(|c| c.bind_port) {
        (p, "kubeadm config localAPIEndpoint.bindPort".to_string())
    } else if let Some(p) = kubeconfig_users
        .iter()
        .filter(|(file, ..)| file == "controller-manager.conf" || file == "scheduler.conf")
        .find_map(|(file, _, server, _)| {
            let (host, port) = split_host_port(url_authority(server.as_deref()?)?).ok()?;
            let ip: IpAddr = host.parse().ok()?;
            (Some(ip) == advertise_address)
                .then_some(port)?
                .map(|p| (p, file))
        })
    {
        (p.0, format!("{} server URL", p.1))
    } else {
        (6443, "kubeadm's default".to_string())
    };
    lines.push(format!("API server port {apiserver_port}: {port_source}"));

    // --- service IP
    let mut service: Option<(IpAddr, String)> = None;
    if let Some(range) = apiserver.and_then(|c| c.flag("service-cluster-ip-range")) {
        match first_service_ip(range) {
            Ok(ip) => {
                service = Some((
                    ip,
                    "kube-apiserver manifest --service-cluster-ip-range".into(),
                ))
            }
            Err(e) => lines.push(format!("--service-cluster-ip-range ignored: {e}")),
        }
    }
    if service.is_none()
        && let Some(subnet) = config.and_then(|c| c.service_subnet.as_deref())
    {
        match first_service_ip(subnet) {
            Ok(ip) => service = Some((ip, "kubeadm config networking.serviceSubnet".into())),
            Err(e) => lines.push(format!("networking.serviceSubnet ignored: {e}")),
        }
    }
    if service.is_none()
        && let Some(ip) = cert("apiserver").and_then(|v| v.ips.first())
    {
        service = Some((*ip, "apiserver certificate's first IP SAN".into()));
    }
    let (service_ip, service_source) = service.unwrap_or((
        IpAddr::from([10, 96, 0, 1]),
        "kubeadm's default (10.96.0.0/12)".into(),
    ));
    lines.push(format!("service IP {service_ip}: {service_source}"));

    // --- DNS domain
    let (dns_domain, dns_source) = if let Some(d) = config.and_then(|c| c.dns_domain.clone()) {
        (d, "kubeadm config networking.dnsDomain".to_string())
    } else if let Some(d) = cert("apiserver").and_then(|v| {
        v.dns
            .iter()
            .find_map(|d| d.strip_prefix("kubernetes.default.svc."))
            .filter(|d| !d.is_empty())
            .map(str::to_string)
    }) {
        (
            d,
            "apiserver certificate's kubernetes.default.svc.<domain> SAN".to_string(),
        )
    } else {
        ("cluster.local".to_string(), "kubeadm's default".to_string())
    };
    lines.push(format!("DNS domain {dns_domain}: {dns_source}"));

    // --- control-plane endpoint
    let mut control_plane_endpoint = None;
    if let Some(cpe) = config.and_then(|c| c.control_plane_endpoint.clone()) {
        lines.push(format!(
            "control-plane endpoint {cpe}: kubeadm config controlPlaneEndpoint"
        ));
        control_plane_endpoint = Some(cpe);
    } else {
        for file in ["admin.conf", "super-admin.conf", "kubelet.conf"] {
            let Some(server) = kubeconfig_users
                .iter()
                .find(|(f, ..)| f == file)
                .and_then(|(_, _, server, _)| server.as_deref())
            else {
                continue;
            };
            let Some(authority) = url_authority(server) else {
                continue;
            };
            let Ok((host, port)) = split_host_port(authority) else {
                continue;
            };
            let port = port.unwrap_or(443);
            let host_ip = host.parse::<IpAddr>().ok();
            let local = host_ip.is_some() && host_ip == advertise_address && port == apiserver_port;
            let loopback = host_ip.is_some_and(|ip| ip.is_loopback()) || host == "localhost";
            if !local && !loopback {
                let cpe = match host_ip {
                    Some(IpAddr::V6(_)) => format!("[{host}]:{port}"),
                    _ => format!("{host}:{port}"),
                };
                lines.push(format!(
                    "control-plane endpoint {cpe}: {file} server URL (differs from the local endpoint)"
                ));
                control_plane_endpoint = Some(cpe);
                break;
            }
        }
        if control_plane_endpoint.is_none() {
            lines.push(
                "control-plane endpoint none: no config sets it and no kubeconfig points elsewhere"
                    .into(),
            );
        }
    }
    let cpe_host = control_plane_endpoint
        .as_deref()
        .and_then(|c| split_host_port(c).ok())
        .map(|(h, _)| h);

    // --- extra SANs
    let render = |dns: &[String], ips: &[IpAddr]| -> Vec<String> {
        dns.iter()
            .cloned()
            .chain(ips.iter().map(IpAddr::to_string))
            .collect()
    };
    let apiserver_cert_sans = if config.is_some_and(|c| !c.apiserver_cert_sans.is_empty()) {
        let sans = config
            .map(|c| c.apiserver_cert_sans.clone())
            .unwrap_or_default();
        lines.push(format!(
            "apiserver extra SANs [{}]: kubeadm config apiServer.certSANs",
            sans.join(", ")
        ));
        sans
    } else if let Some(v) = cert("apiserver") {
        let dns: Vec<String> = v
            .dns
            .iter()
            .filter(|d| {
                **d != node_name
                    && !standard_apiserver_dns(d)
                    && Some(d.as_str()) != cpe_host.as_deref()
            })
            .cloned()
            .collect();
        let cpe_ip = cpe_host.as_deref().and_then(|h| h.parse::<IpAddr>().ok());
        let ips: Vec<IpAddr> = v
            .ips
            .iter()
            .filter(|ip| {
                **ip != service_ip && Some(**ip) != advertise_address && Some(**ip) != cpe_ip
            })
            .copied()
            .collect();
        let sans = render(&dns, &ips);
        lines.push(format!(
            "apiserver extra SANs [{}]: beyond kubeadm's defaults in the apiserver certificate",
            sans.join(", ")
        ));
        sans
    } else {
        Vec::new()
    };
    let etcd_extras = |name: &str, configured: Option<&Vec<String>>, lines: &mut Vec<String>| {
        if let Some(sans) = configured.filter(|s| !s.is_empty()) {
            lines.push(format!(
                "{name} extra SANs [{}]: kubeadm config etcd.local",
                sans.join(", ")
            ));
            return sans.clone();
        }
        let Some(v) = cert(name) else {
            return Vec::new();
        };
        let dns: Vec<String> = v
            .dns
            .iter()
            .filter(|d| **d != node_name && *d != "localhost")
            .cloned()
            .collect();
        let ips: Vec<IpAddr> = v
            .ips
            .iter()
            .filter(|ip| !ip.is_loopback() && Some(**ip) != advertise_address)
            .copied()
            .collect();
        let sans = render(&dns, &ips);
        if !sans.is_empty() {
            lines.push(format!(
                "{name} extra SANs [{}]: beyond kubeadm's defaults in the {name} certificate",
                sans.join(", ")
            ));
        }
        sans
    };
    let etcd_server_cert_sans = etcd_extras(
        "etcd-server",
        config.map(|c| &c.etcd_server_cert_sans),
        &mut lines,
    );
    let etcd_peer_cert_sans = etcd_extras(
        "etcd-peer",
        config.map(|c| &c.etcd_peer_cert_sans),
        &mut lines,
    );

    // --- version
    let mut version = None;
    let mut version_inferred = false;
    for (component, container) in [
        ("kube-apiserver", apiserver),
        ("kube-controller-manager", controller_manager),
        (
            "kube-scheduler",
            pod(sources.manifests, "kube-scheduler").map(|(_, c)| c),
        ),
    ] {
        if let Some(v) = container
            .and_then(|c| image_tag(&c.image))
            .and_then(Version::parse)
        {
            lines.push(format!("version {v}: {component} manifest image tag"));
            version = Some(v);
            break;
        }
    }
    if version.is_none()
        && let Some(v) = config
            .and_then(|c| c.kubernetes_version.as_deref())
            .and_then(Version::parse)
    {
        lines.push(format!("version {v}: kubeadm config kubernetesVersion"));
        version = Some(v);
    }
    if version.is_none() {
        let has_super_admin = kubeconfig_users
            .iter()
            .any(|(f, ..)| f == "super-admin.conf");
        match infer_version(&certs, advertise_address, has_super_admin) {
            Some((v, why)) => {
                lines.push(format!("version {v} (inferred): {why}"));
                version = Some(v);
                version_inferred = true;
            }
            None => lines.push(
                "version unknown: current kubeadm rules apply (no image tag, config or telling certificate)".into(),
            ),
        }
    }

    // --- cluster name
    let (cluster_name, cluster_source) =
        if let Some(c) = config.and_then(|c| c.cluster_name.clone()) {
            (c, "kubeadm config clusterName".to_string())
        } else if let Some(c) = controller_manager
            .and_then(|c| c.flag("cluster-name"))
            .filter(|c| !c.is_empty())
        {
            (
                c.to_string(),
                "kube-controller-manager manifest --cluster-name".to_string(),
            )
        } else if let Some((file, c)) = kubeconfig_users
            .iter()
            .find_map(|(file, _, _, cluster)| cluster.as_ref().map(|c| (file, c)))
        {
            (c.clone(), format!("{file} cluster name"))
        } else {
            ("kubernetes".to_string(), "kubeadm's default".to_string())
        };
    lines.push(format!("cluster name {cluster_name}: {cluster_source}"));

    Ok(NodeFacts {
        node_name,
        advertise_address,
        apiserver_port,
        service_ip: Some(service_ip),
        dns_domain,
        control_plane_endpoint,
        apiserver_cert_sans,
        etcd_server_cert_sans,
        etcd_peer_cert_sans,
        version,
        version_inferred,
        cluster_name,
        sources: lines,
    })
}

/// The newest release whose kubeadm writes certificates like these (or the oldest release the
/// evidence allows when nothing caps it), with the evidence in words.
fn infer_version(
    certs: &[(String, CertView)],
    advertise: Option<IpAddr>,
    has_super_admin: bool,
) -> Option<(Version, String)> {
    let mut upper: Option<(Version, String)> = None;
    let mut lower: Option<(Version, String)> = None;
    let mut at_most = |v: Version, why: String| {
        if upper.as_ref().is_none_or(|(u, _)| v < *u) {
            upper = Some((v, why));
        }
    };
    let mut at_least = |v: Version, why: String| {
        if lower.as_ref().is_none_or(|(l, _)| v > *l) {
            lower = Some((v, why));
        }
    };
    let masters = |v: &CertView| v.orgs.iter().any(|o| o == "system:masters");
    for (name, v) in certs {
        match name.as_str() {
            "admin.conf" | "apiserver-kubelet-client" => {
                if v.orgs.iter().any(|o| o == "kubeadm:cluster-admins") {
                    at_least(
                        Version::new(1, 29),
                        format!("{name} has O=kubeadm:cluster-admins (kubeadm >= 1.29)"),
                    );
                } else if masters(v) {
                    at_most(
                        Version::new(1, 28),
                        format!("{name} has O=system:masters (kubeadm <= 1.28)"),
                    );
                }
            }
            "etcd-healthcheck-client" | "apiserver-etcd-client" => {
                if masters(v) {
                    at_most(
                        Version::new(1, 28),
                        format!("{name} has O=system:masters (kubeadm <= 1.28)"),
                    );
                } else if v.orgs.is_empty() {
                    at_least(
                        Version::new(1, 29),
                        format!("{name} has no O (kubeadm >= 1.29)"),
                    );
                }
            }
            "super-admin.conf" => at_least(
                Version::new(1, 29),
                "super-admin.conf exists (kubeadm >= 1.29)".into(),
            ),
            "etcd-ca" | "front-proxy-ca" if v.cn.as_deref() == Some("kubernetes") => at_most(
                Version::new(1, 11),
                format!("{name} has CN kubernetes (kubeadm <= 1.11)"),
            ),
            _ => {}
        }
        let kubeadm_leaf = matches!(
            name.as_str(),
            "apiserver"
                | "apiserver-kubelet-client"
                | "apiserver-etcd-client"
                | "front-proxy-client"
                | "etcd-server"
                | "etcd-peer"
                | "etcd-healthcheck-client"
                | "admin.conf"
                | "super-admin.conf"
                | "controller-manager.conf"
                | "scheduler.conf"
        );
        if kubeadm_leaf && v.has_extensions {
            if v.has_basic_constraints {
                at_least(
                    Version::new(1, 21),
                    format!("{name} has basicConstraints (kubeadm >= 1.21)"),
                );
            } else {
                at_most(
                    Version::new(1, 20),
                    format!("{name} has no basicConstraints (kubeadm <= 1.20)"),
                );
            }
        }
        if name == "apiserver" && v.dns.windows(2).any(|w| w[0] > w[1]) {
            at_most(
                Version::new(1, 18),
                "apiserver DNS SANs are not sorted (kubeadm <= 1.18)".into(),
            );
        }
        if name == "etcd-server" {
            if v.cn.as_deref() == Some("kube-etcd") {
                at_most(
                    Version::new(1, 10),
                    "etcd-server has CN kube-etcd (kubeadm 1.10)".into(),
                );
            }
            let has_routable = v.ips.iter().any(|ip| !is_loopback(ip));
            let has_advertise = advertise.is_some_and(|a| v.ips.contains(&a));
            if !v.ips.is_empty() && !has_routable {
                at_most(
                    Version::new(1, 13),
                    "etcd-server has only loopback IP SANs (kubeadm <= 1.13)".into(),
                );
            } else if has_advertise {
                at_least(
                    Version::new(1, 14),
                    "etcd-server has the advertise address (kubeadm >= 1.14)".into(),
                );
            }
        }
    }
    if has_super_admin {
        at_least(
            Version::new(1, 29),
            "super-admin.conf exists (kubeadm >= 1.29)".into(),
        );
    }
    match (upper, lower) {
        (Some((u, why)), Some((l, lwhy))) if l > u => {
            Some((u, format!("{why}; conflicting evidence ignored: {lwhy}")))
        }
        (Some((u, why)), _) => Some((u, why)),
        (None, Some((l, why))) => Some((l, why)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pod(name: &str, image: &str, args: &[&str]) -> StaticPod {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\nspec:\n  containers:\n  - name: {name}\n    image: {image}\n    command:\n{}",
            args.iter()
                .map(|a| format!("    - {a}\n"))
                .collect::<String>()
        );
        crate::node::manifest::parse(&text, &PathBuf::from(format!("{name}.yaml"))).unwrap()
    }

    #[test]
    fn first_service_ip_masks_and_adds_one() {
        assert_eq!(
            first_service_ip("10.96.0.0/12").unwrap(),
            "10.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_service_ip("10.96.5.7/16").unwrap(),
            "10.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_service_ip("fd00:10:96::/108,10.96.0.0/12").unwrap(),
            "fd00:10:96::1".parse::<IpAddr>().unwrap()
        );
        assert!(first_service_ip("10.96.0.0").is_err());
        assert!(first_service_ip("10.96.0.0/32").is_err());
        assert!(first_service_ip("nonsense/8").is_err());
    }

    #[test]
    fn versions_parse_from_tags_and_config() {
        assert_eq!(Version::parse("v1.18.2"), Some(Version::new(1, 18)));
        assert_eq!(Version::parse("v1.30.0-rc.1"), Some(Version::new(1, 30)));
        assert_eq!(Version::parse("stable-1.14"), Some(Version::new(1, 14)));
        assert_eq!(Version::parse("1.29"), Some(Version::new(1, 29)));
        assert_eq!(Version::parse("stable"), None);
        assert_eq!(Version::parse("latest"), None);
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("lb.example.com").unwrap(),
            ("lb.example.com".into(), None)
        );
        assert_eq!(
            split_host_port("lb.example.com:8443").unwrap(),
            ("lb.example.com".into(), Some(8443))
        );
        assert_eq!(
            split_host_port("[fd00::1]:6443").unwrap(),
            ("fd00::1".into(), Some(6443))
        );
        assert_eq!(
            split_host_port("fd00::1").unwrap(),
            ("fd00::1".into(), None)
        );
        assert!(split_host_port("a:b:c").is_err());
        assert!(split_host_port("host:99999").is_err());
    }

    #[test]
    fn parses_every_config_generation() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\nnodeRegistration:\n  name: cp-1\nlocalAPIEndpoint:\n  advertiseAddress: 10.0.0.5\n  bindPort: 8443\n---\napiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: v1.27.3\ncontrolPlaneEndpoint: lb.example.com\nclusterName: prod\nnetworking:\n  serviceSubnet: 10.100.0.0/16\n  dnsDomain: corp.local\napiServer:\n  certSANs: [api.example.com, 192.0.2.10]\n  extraArgs:\n    foo: bar\netcd:\n  local:\n    serverCertSANs: [etcd.example.com]\n    peerCertSANs: [198.51.100.1]\nunknownField: {deep: [1, 2]}\n";
        let c = parse_kubeadm_config(text).unwrap();
        assert_eq!(c.node_name.as_deref(), Some("cp-1"));
        assert_eq!(c.advertise_address.as_deref(), Some("10.0.0.5"));
        assert_eq!(c.bind_port, Some(8443));
        assert_eq!(c.control_plane_endpoint.as_deref(), Some("lb.example.com"));
        assert_eq!(c.kubernetes_version.as_deref(), Some("v1.27.3"));
        assert_eq!(c.service_subnet.as_deref(), Some("10.100.0.0/16"));
        assert_eq!(c.dns_domain.as_deref(), Some("corp.local"));
        assert_eq!(c.cluster_name.as_deref(), Some("prod"));
        assert_eq!(c.apiserver_cert_sans, ["api.example.com", "192.0.2.10"]);
        assert_eq!(c.etcd_server_cert_sans, ["etcd.example.com"]);
        assert_eq!(c.etcd_peer_cert_sans, ["198.51.100.1"]);

        // v1alpha3: apiEndpoint and apiServerCertSANs; v1beta4 extraArgs as a list
        let old = "apiVersion: kubeadm.k8s.io/v1alpha3\nkind: InitConfiguration\napiEndpoint:\n  advertiseAddress: 10.1.1.1\n---\nkind: ClusterConfiguration\napiServerCertSANs: [x.example.com]\napiServer:\n  extraArgs:\n  - name: a\n    value: b\n";
        let c = parse_kubeadm_config(old).unwrap();
        assert_eq!(c.advertise_address.as_deref(), Some("10.1.1.1"));
        assert_eq!(c.apiserver_cert_sans, ["x.example.com"]);

        // join: controlPlane.localAPIEndpoint
        let join = "kind: JoinConfiguration\nnodeRegistration: {name: cp-2}\ncontrolPlane:\n  localAPIEndpoint: {advertiseAddress: 10.0.0.6, bindPort: 6443}\n";
        let c = parse_kubeadm_config(join).unwrap();
        assert_eq!(c.node_name.as_deref(), Some("cp-2"));
        assert_eq!(c.advertise_address.as_deref(), Some("10.0.0.6"));
    }

    #[test]
    fn garbage_configs_are_errors_not_panics() {
        for text in [
            "{{{",
            "- a\n- b\n",
            "nodeRegistration: 5\n",
            "localAPIEndpoint: {bindPort: 99999999}\n",
            "a: &a [*a, *a]\n",
            "\u{0}\u{1}",
        ] {
            let _ = parse_kubeadm_config(text);
        }
        let bomb = format!(
            "a: &a [x,x,x,x,x,x,x,x,x,x]\n{}",
            (0..9)
                .map(|i| format!(
                    "{}: &{} [{}]\n",
                    (b'b' + i) as char,
                    (b'b' + i) as char,
                    vec![format!("*{}", (b'a' + i) as char); 10].join(",")
                ))
                .collect::<String>()
        );
        let _ = parse_kubeadm_config(&bomb); // bounded: returns, whatever it says
        assert!(parse_kubeadm_config(&"x".repeat(MAX_CONFIG_BYTES + 1)).is_err());
        // empty documents are fine
        assert_eq!(parse_kubeadm_config("").unwrap(), KubeadmConfig::default());
    }

    #[test]
    fn manifests_give_every_fact() {
        let pods = [
            pod(
                "kube-apiserver",
                "registry.k8s.io/kube-apiserver:v1.30.2",
                &[
                    "kube-apiserver",
                    "--advertise-address=10.0.0.5",
                    "--secure-port=8443",
                    "--service-cluster-ip-range=fd00::/108,10.96.0.0/12",
                ],
            ),
            pod(
                "etcd",
                "registry.k8s.io/etcd:3.5.12-0",
                &[
                    "etcd",
                    "--name=cp-1",
                    "--initial-advertise-peer-urls=https://10.0.0.5:2380",
                ],
            ),
        ];
        let facts = gather(&FactSources {
            manifests: &pods,
            hostname: Some("ignored"),
            ..FactSources::default()
        })
        .unwrap();
        assert_eq!(facts.node_name, "cp-1");
        assert_eq!(facts.advertise_address, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(facts.apiserver_port, 8443);
        assert_eq!(facts.service_ip, Some("fd00::1".parse().unwrap()));
        assert_eq!(facts.dns_domain, "cluster.local");
        assert_eq!(facts.version, Some(Version::new(1, 30)));
        assert!(!facts.version_inferred);
        assert_eq!(facts.cluster_name, "kubernetes");
        assert!(
            facts
                .sources
                .iter()
                .any(|l| l == "node name cp-1: etcd manifest --name"),
            "{:?}",
            facts.sources
        );
    }

    #[test]
    fn precedence_hint_then_config_then_manifest() {
        let pods = [pod("etcd", "etcd:3", &["etcd", "--name=from-etcd"])];
        let config = "kind: InitConfiguration\nnodeRegistration: {name: from-config}\nlocalAPIEndpoint: {advertiseAddress: 10.9.9.9, bindPort: 7443}\n---\nkind: ClusterConfiguration\nkubernetesVersion: v1.22.0\nnetworking: {serviceSubnet: 10.100.0.0/16, dnsDomain: corp.local}\ncontrolPlaneEndpoint: lb.example.com\n";
        let mut sources = FactSources {
            manifests: &pods,
            kubeadm_config: Some(config),
            ..FactSources::default()
        };
        let facts = gather(&sources).unwrap();
        assert_eq!(facts.node_name, "from-config");
        assert_eq!(facts.advertise_address, Some("10.9.9.9".parse().unwrap()));
        assert_eq!(facts.apiserver_port, 7443);
        assert_eq!(facts.service_ip, Some("10.100.0.1".parse().unwrap()));
        assert_eq!(facts.dns_domain, "corp.local");
        assert_eq!(
            facts.control_plane_endpoint.as_deref(),
            Some("lb.example.com")
        );
        assert_eq!(facts.version, Some(Version::new(1, 22)));
        sources.node_name_hint = Some("from-hint");
        assert_eq!(gather(&sources).unwrap().node_name, "from-hint");
    }

    #[test]
    fn no_node_name_anywhere_is_an_error_listing_the_sources() {
        let err = gather(&FactSources::default()).unwrap_err();
        assert!(err.contains("etcd manifest --name"), "{err}");
        assert!(err.contains("the hostname"), "{err}");
        let facts = gather(&FactSources {
            hostname: Some("box"),
            ..FactSources::default()
        })
        .unwrap();
        assert_eq!(facts.node_name, "box");
        assert_eq!(facts.service_ip, Some("10.96.0.1".parse().unwrap()));
        assert_eq!(facts.apiserver_port, 6443);
        assert_eq!(facts.version, None);
        assert!(
            facts
                .sources
                .iter()
                .any(|l| l.contains("kubeadm's default"))
        );
    }

    #[test]
    fn control_plane_endpoint_is_learned_from_a_kubeconfig_pointing_elsewhere() {
        let conf = |server: &str| {
            format!(
                "apiVersion: v1\nclusters:\n- cluster:\n    server: {server}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: system:node:cp-1\n  name: system:node:cp-1@kubernetes\ncurrent-context: system:node:cp-1@kubernetes\nkind: Config\nusers:\n- name: system:node:cp-1\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n"
            )
        };
        let pods = [pod(
            "kube-apiserver",
            "kube-apiserver:v1.28.0",
            &["kube-apiserver", "--advertise-address=10.0.0.5"],
        )];
        let kubeconfigs = [(
            "kubelet.conf".to_string(),
            conf("https://lb.example.com:443"),
        )];
        let facts = gather(&FactSources {
            manifests: &pods,
            kubeconfigs: &kubeconfigs,
            ..FactSources::default()
        })
        .unwrap();
        assert_eq!(facts.node_name, "cp-1", "from the kubelet.conf user");
        assert_eq!(
            facts.control_plane_endpoint.as_deref(),
            Some("lb.example.com:443")
        );
        let local = [("kubelet.conf".to_string(), conf("https://10.0.0.5:6443"))];
        let facts = gather(&FactSources {
            manifests: &pods,
            kubeconfigs: &local,
            ..FactSources::default()
        })
        .unwrap();
        assert_eq!(facts.control_plane_endpoint, None);
    }
}
