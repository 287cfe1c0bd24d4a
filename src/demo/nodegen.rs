//! Builds throwaway kubeadm-shaped nodes: the demo's node and the test suites' inputs.
//!
//! Subjects, SANs, usages and file layout follow what `kubeadm init` writes (kubeadm-pki.md §1),
//! so everything that works here works on a real node. Never used on a real node.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::pki::keys::{self, KeyAlgorithm, KeyEncoding};
use crate::pki::kubeadm;

/// What node to build.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node name (etcd CN, apiserver SAN, kubelet identity).
    pub node_name: String,
    /// The API server's advertise address.
    pub advertise_address: IpAddr,
    /// Key algorithm of the leaves.
    pub key_algorithm: KeyAlgorithm,
    /// Key algorithm of the CAs.
    pub ca_key_algorithm: KeyAlgorithm,
    /// Key encoding of every key file; `None` = what kubeadm writes (PKCS#1 / SEC1).
    pub key_encoding: Option<KeyEncoding>,
    /// Leaf validity.
    pub leaf_not_before: OffsetDateTime,
    /// Leaf expiry.
    pub leaf_not_after: OffsetDateTime,
    /// CA validity.
    pub ca_not_before: OffsetDateTime,
    /// CA expiry.
    pub ca_not_after: OffsetDateTime,
    /// Write super-admin.conf (init node of kubeadm ≥ 1.29).
    pub super_admin: bool,
    /// Stacked etcd (the etcd CA and its four leaves).
    pub etcd: bool,
    /// Write static-pod manifests.
    pub manifests: bool,
    /// kubelet.conf points at this rotated-cert file (written too) instead of embedding a cert.
    pub kubelet_cert_file: Option<PathBuf>,
    /// All three CAs get the subject `CN=kubernetes`, as kubeadm ≤ 1.11 made them.
    pub same_ca_subject: bool,
    /// Expiry of the kubelet's client certificate when it differs from the other leaves (the
    /// kubelet rotates its own, so on a real node it is usually fresh).
    pub kubelet_not_after: Option<OffsetDateTime>,
    /// kube-apiserver's `--secure-port` in the manifest.
    pub apiserver_port: u16,
    /// etcd's client port in the manifest.
    pub etcd_client_port: u16,
    /// etcd's peer port in the manifest.
    pub etcd_peer_port: u16,
    /// kube-controller-manager's `--secure-port` (where its `/healthz` is probed). At its
    /// default, 10257, the manifest leaves the flag out, as kubeadm does; any other port is
    /// written with `--bind-address=127.0.0.1`, so several nodes on one machine do not clash.
    pub controller_manager_port: u16,
    /// kube-scheduler's `--secure-port`, the same way (default 10259).
    pub scheduler_port: u16,
    /// A kubernetes dir generated before for another node of the same cluster: its CA pairs
    /// (`ca`, `front-proxy-ca`, `etcd/ca`) and `sa.key`/`sa.pub` are copied instead of made,
    /// because the control-plane nodes of one cluster share them (kubeadm copies them on
    /// `join --control-plane`), and etcd members only trust peers signed by their own etcd CA.
    /// The spec's CA validity and key algorithm do not apply to copied CAs. `None`: a fresh
    /// cluster with its own CAs.
    pub shared_cas_from: Option<PathBuf>,
    /// etcd's `--initial-cluster` (`name=https://ip:peerport,...`), written with
    /// `--initial-cluster-state=new`, so several generated nodes bootstrap one multi-member etcd
    /// cluster together. `None`: a one-member cluster of this node alone, as `kubeadm init`
    /// writes it.
    pub etcd_initial_cluster: Option<String>,
}

impl NodeSpec {
    /// A kubeadm ≥ 1.29 init node with RSA-2048 keys whose leaves expire `days_left` after `now`.
    pub fn new(now: OffsetDateTime, days_left: i64) -> NodeSpec {
        NodeSpec {
            node_name: "cp-1".into(),
            advertise_address: IpAddr::from([127, 0, 0, 1]),
            key_algorithm: KeyAlgorithm::Rsa(2048),
            ca_key_algorithm: KeyAlgorithm::Rsa(2048),
            key_encoding: None,
            leaf_not_before: now - Duration::days(365 - days_left),
            leaf_not_after: now + Duration::days(days_left),
            ca_not_before: now - Duration::days(365 - days_left),
            ca_not_after: now + Duration::days(3650 - 365 + days_left),
            super_admin: true,
            etcd: true,
            manifests: true,
            kubelet_cert_file: None,
            same_ca_subject: false,
            kubelet_not_after: None,
            apiserver_port: 6443,
            etcd_client_port: 2379,
            etcd_peer_port: 2380,
            controller_manager_port: CONTROLLER_MANAGER_PORT,
            scheduler_port: SCHEDULER_PORT,
            shared_cas_from: None,
            etcd_initial_cluster: None,
        }
    }

    /// This node's entry of etcd's `--initial-cluster`: `name=https://advertise:peerport`, to
    /// join with the other members' entries by commas.
    pub fn etcd_peer_entry(&self) -> String {
        format!(
            "{}={}",
            self.node_name,
            https_url(self.advertise_address, self.etcd_peer_port)
        )
    }

    fn encoding_for(&self, algorithm: KeyAlgorithm) -> KeyEncoding {
        self.key_encoding.unwrap_or(match algorithm {
            KeyAlgorithm::Rsa(_) => KeyEncoding::Pkcs1,
            _ => KeyEncoding::Sec1,
        })
    }
}

/// A generated CA: certificate, key and its issuer handle for signing.
pub struct GeneratedCa {
    /// PEM of the certificate.
    pub cert_pem: String,
    /// PEM of the key (in the node's encoding).
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl GeneratedCa {
    /// The CA pair `<base>.crt`/`<base>.key` of an existing pki dir (e.g. `etcd/ca`), to sign
    /// another node's leaves with the same CA: the files are kept byte for byte, and the key
    /// must be the certificate's, or every leaf signed with it would fail verification.
    pub fn load(pki: &Path, base: &str) -> Result<GeneratedCa, String> {
        let cert_file = pki.join(format!("{base}.crt"));
        let key_file = pki.join(format!("{base}.key"));
        let cert_pem = std::fs::read_to_string(&cert_file)
            .map_err(|e| format!("cannot read CA certificate {}: {e}", cert_file.display()))?;
        let key_pem = std::fs::read_to_string(&key_file)
            .map_err(|e| format!("cannot read CA key {}: {e}", key_file.display()))?;
        let key = keys::parse_private_key(key_pem.as_bytes())
            .map_err(|e| format!("CA key {}: {e}", key_file.display()))?;
        let certs = crate::pki::inventory::parse_cert_bundle(cert_pem.as_bytes())
            .map_err(|e| format!("CA certificate {}: {e}", cert_file.display()))?;
        let first = certs.first().ok_or_else(|| {
            format!(
                "CA certificate {} holds no certificate",
                cert_file.display()
            )
        })?;
        if !keys::matches_spki(&key.pair, &first.spki_der) {
            return Err(format!(
                "CA key {} is not the key of {}",
                key_file.display(),
                cert_file.display()
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key.pair)
            .map_err(|e| format!("CA certificate {} cannot sign: {e}", cert_file.display()))?;
        Ok(GeneratedCa {
            cert_pem,
            key_pem,
            issuer,
        })
    }
}

/// `https://ip:port`, with an IPv6 address in brackets.
fn https_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}:{port}"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
    }
}

fn serial() -> Result<SerialNumber, String> {
    crate::pki::reissue::random_serial()
}

/// Makes a self-signed CA the way kubeadm does (CN, SAN DNS = CN, CA usages).
pub fn make_ca(cn: &str, spec: &NodeSpec) -> Result<GeneratedCa, String> {
    let key = keys::generate(spec.ca_key_algorithm)?;
    let mut params = CertificateParams::new(vec![cn.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.not_before = spec.ca_not_before;
    params.not_after = spec.ca_not_after;
    params.serial_number = Some(serial()?);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_pem = keys::encode(
        &key,
        spec.ca_key_algorithm,
        spec.encoding_for(spec.ca_key_algorithm),
    )?;
    Ok(GeneratedCa {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(params, key),
    })
}

/// What a kubeadm leaf carries.
#[derive(Debug, Clone)]
pub struct LeafTemplate {
    /// Subject CN.
    pub cn: String,
    /// Subject O, if any.
    pub org: Option<String>,
    /// SANs: DNS names and IPs as strings.
    pub sans: Vec<String>,
    /// serverAuth.
    pub server: bool,
    /// clientAuth.
    pub client: bool,
}

/// Signs a kubeadm-style leaf; returns (cert PEM, key PEM).
pub fn make_leaf(
    template: &LeafTemplate,
    ca: &GeneratedCa,
    spec: &NodeSpec,
) -> Result<(String, String), String> {
    let key = keys::generate(spec.key_algorithm)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(org) = &template.org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org.as_str());
    }
    params
        .distinguished_name
        .push(DnType::CommonName, template.cn.as_str());
    for san in &template.sans {
        params.subject_alt_names.push(match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.as_str().try_into().map_err(|e| format!("{e}"))?),
        });
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if template.server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if template.client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.not_before = spec.leaf_not_before;
    params.not_after = spec.leaf_not_after;
    params.serial_number = Some(serial()?);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|e| e.to_string())?;
    let key_pem = keys::encode(
        &key,
        spec.key_algorithm,
        spec.encoding_for(spec.key_algorithm),
    )?;
    Ok((cert.pem(), key_pem))
}

fn write(path: &Path, data: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A kubeconfig exactly as kubeadm lays it out.
pub fn kubeconfig_text(
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: {user}\n  name: {user}@kubernetes\ncurrent-context: {user}@kubernetes\nkind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        STANDARD.encode(ca_pem),
        STANDARD.encode(cert_pem),
        STANDARD.encode(key_pem),
    )
}

fn kubeconfig_with_files(server: &str, ca_pem: &str, user: &str, file: &Path) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: {user}\n  name: {user}@kubernetes\ncurrent-context: {user}@kubernetes\nkind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate: {f}\n    client-key: {f}\n",
        STANDARD.encode(ca_pem),
        f = file.display(),
    )
}

/// Writes a whole kubeadm-shaped `/etc/kubernetes` under `dir`.
pub fn generate(dir: &Path, spec: &NodeSpec) -> Result<(), String> {
    let pki = dir.join("pki");
    let node = spec.node_name.as_str();
    let adv = spec.advertise_address.to_string();
    // kubeadm writes the API server's endpoint: advertise address and bind port
    let server = https_url(spec.advertise_address, spec.apiserver_port);
    let ca_cn = |cn: &'static str| {
        if spec.same_ca_subject {
            "kubernetes"
        } else {
            cn
        }
    };
    let shared = spec.shared_cas_from.as_ref().map(|d| d.join("pki"));
    // The CAs of the cluster this node joins, or new ones.
    let ca_pair = |base: &str, cn: &'static str| match &shared {
        Some(from) => GeneratedCa::load(from, base),
        None => make_ca(cn, spec),
    };
    let ca = ca_pair("ca", "kubernetes")?;
    let fp_ca = ca_pair("front-proxy-ca", ca_cn("front-proxy-ca"))?;
    write(&pki.join("ca.crt"), &ca.cert_pem, 0o644)?;
    write(&pki.join("ca.key"), &ca.key_pem, 0o600)?;
    write(&pki.join("front-proxy-ca.crt"), &fp_ca.cert_pem, 0o644)?;
    write(&pki.join("front-proxy-ca.key"), &fp_ca.key_pem, 0o600)?;
    let t = |cn: &str, org: Option<&str>, sans: &[&str], server: bool, client: bool| LeafTemplate {
        cn: cn.into(),
        org: org.map(str::to_string),
        sans: sans.iter().map(|s| s.to_string()).collect(),
        server,
        client,
    };
    let mut leaves: Vec<(&str, LeafTemplate, &GeneratedCa)> = vec![
        (
            "apiserver",
            t(
                "kube-apiserver",
                None,
                &[
                    node,
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                    "10.96.0.1",
                    &adv,
                ],
                true,
                false,
            ),
            &ca,
        ),
        (
            "apiserver-kubelet-client",
            t(
                "kube-apiserver-kubelet-client",
                Some("kubeadm:cluster-admins"),
                &[],
                false,
                true,
            ),
            &ca,
        ),
        (
            "front-proxy-client",
            t("front-proxy-client", None, &[], false, true),
            &fp_ca,
        ),
    ];
    let etcd_ca = if spec.etcd {
        let etcd_ca = ca_pair("etcd/ca", ca_cn("etcd-ca"))?;
        write(&pki.join("etcd/ca.crt"), &etcd_ca.cert_pem, 0o644)?;
        write(&pki.join("etcd/ca.key"), &etcd_ca.key_pem, 0o600)?;
        Some(etcd_ca)
    } else {
        None
    };
    if let Some(etcd_ca) = &etcd_ca {
        let etcd_sans = [node, "localhost", adv.as_str(), "127.0.0.1", "::1"];
        leaves.push((
            "etcd/server",
            t(node, None, &etcd_sans, true, true),
            etcd_ca,
        ));
        leaves.push(("etcd/peer", t(node, None, &etcd_sans, true, true), etcd_ca));
        leaves.push((
            "etcd/healthcheck-client",
            t("kube-etcd-healthcheck-client", None, &[], false, true),
            etcd_ca,
        ));
        leaves.push((
            "apiserver-etcd-client",
            t("kube-apiserver-etcd-client", None, &[], false, true),
            etcd_ca,
        ));
    }
    for (base, template, signer) in &leaves {
        let (cert, key) = make_leaf(template, signer, spec)?;
        write(&pki.join(format!("{base}.crt")), &cert, 0o644)?;
        write(&pki.join(format!("{base}.key")), &key, 0o600)?;
    }
    // sa.key / sa.pub: never renewed, present on every node, the same on all of one cluster.
    let (sa_key, sa_pub) = match &shared {
        Some(from) => {
            let read = |name: &str| {
                let file = from.join(name);
                std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))
            };
            (read("sa.key")?, read("sa.pub")?)
        }
        None => {
            let sa = keys::generate(KeyAlgorithm::Rsa(2048))?;
            (
                keys::encode(&sa, KeyAlgorithm::Rsa(2048), KeyEncoding::Pkcs1)?,
                sa.public_key_pem(),
            )
        }
    };
    write(&pki.join("sa.key"), &sa_key, 0o600)?;
    write(&pki.join("sa.pub"), &sa_pub, 0o600)?;

    let mut confs = vec![
        (
            "admin.conf",
            "kubernetes-admin",
            Some("kubeadm:cluster-admins"),
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            None,
        ),
        ("scheduler.conf", "system:kube-scheduler", None),
    ];
    if spec.super_admin {
        confs.push((
            "super-admin.conf",
            "kubernetes-super-admin",
            Some("system:masters"),
        ));
    }
    for (file, cn, org) in confs {
        let (cert, key) = make_leaf(&t(cn, org, &[], false, true), &ca, spec)?;
        write(
            &dir.join(file),
            &kubeconfig_text(&server, &ca.cert_pem, cn, &cert, &key),
            0o600,
        )?;
    }
    let kubelet_user = format!("system:node:{node}");
    let mut kubelet_spec = spec.clone();
    if let Some(end) = spec.kubelet_not_after {
        kubelet_spec.leaf_not_after = end;
        kubelet_spec.leaf_not_before = end - Duration::days(365);
    }
    let (cert, key) = make_leaf(
        &t(&kubelet_user, Some("system:nodes"), &[], false, true),
        &ca,
        &kubelet_spec,
    )?;
    let kubelet_conf = match &spec.kubelet_cert_file {
        Some(file) => {
            write(file, &format!("{cert}{key}"), 0o600)?;
            kubeconfig_with_files(&server, &ca.cert_pem, &kubelet_user, file)
        }
        None => kubeconfig_text(&server, &ca.cert_pem, &kubelet_user, &cert, &key),
    };
    write(&dir.join(kubeadm::KUBELET_CONF), &kubelet_conf, 0o600)?;
    if spec.manifests {
        write_manifests(dir, spec)?;
    }
    Ok(())
}

/// kube-controller-manager's default secure port (no flag in kubeadm's manifest).
const CONTROLLER_MANAGER_PORT: u16 = 10257;
/// kube-scheduler's default secure port (no flag in kubeadm's manifest).
const SCHEDULER_PORT: u16 = 10259;

/// The flags that move a controller-manager or scheduler off its default secure port: none at
/// the default (kubeadm's manifest), else loopback and the port.
fn secure_serving(port: u16, default: u16) -> Vec<String> {
    if port == default {
        Vec::new()
    } else {
        vec![
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
        ]
    }
}

/// Container-side paths, as kubeadm writes them; hostPath volumes map them onto `dir`.
const POD_PKI: &str = "/etc/kubernetes/pki";
const POD_ETCD_DATA: &str = "/var/lib/etcd";

/// One kubeadm-style static pod: a single container, host network, hostPath volumes given as
/// (name, host path, container path, read only).
fn pod_manifest(name: &str, command: &[String], volumes: &[(&str, PathBuf, &str, bool)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    kube-cert-renewer.test/generated: \"true\"\n  labels:\n    component: {name}\n    tier: control-plane\n  name: {name}\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n"
    );
    for c in command {
        s.push_str(&format!("    - {c}\n"));
    }
    s.push_str(&format!(
        "    image: registry.k8s.io/{name}:v1.30.0\n    imagePullPolicy: IfNotPresent\n    name: {name}\n    volumeMounts:\n"
    ));
    for (volume, _, mount_path, read_only) in volumes {
        s.push_str(&format!(
            "    - mountPath: {mount_path}\n      name: {volume}\n"
        ));
        if *read_only {
            s.push_str("      readOnly: true\n");
        }
    }
    s.push_str("  hostNetwork: true\n  priorityClassName: system-node-critical\n  volumes:\n");
    for (volume, host, _, _) in volumes {
        let kind = if host.extension().is_some_and(|e| e == "conf") {
            "FileOrCreate"
        } else {
            "DirectoryOrCreate"
        };
        s.push_str(&format!(
            "  - hostPath:\n      path: {}\n      type: {kind}\n    name: {volume}\n",
            host.display()
        ));
    }
    s.push_str("status: {}\n");
    s
}

fn write_manifests(dir: &Path, spec: &NodeSpec) -> Result<(), String> {
    let p = |f: &str| format!("{POD_PKI}/{f}");
    let adv = spec.advertise_address.to_string();
    let api_port = spec.apiserver_port;
    let (client_port, peer_port) = (spec.etcd_client_port, spec.etcd_peer_port);
    let mut apiserver = vec![
        "kube-apiserver".to_string(),
        format!("--advertise-address={adv}"),
        "--allow-privileged=true".into(),
        "--authorization-mode=Node,RBAC".into(),
        format!("--client-ca-file={}", p("ca.crt")),
        "--enable-bootstrap-token-auth=true".into(),
        format!(
            "--kubelet-client-certificate={}",
            p("apiserver-kubelet-client.crt")
        ),
        format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
        format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
        format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
        format!("--secure-port={api_port}"),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        "--service-cluster-ip-range=10.96.0.0/12".into(),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
    ];
    if spec.etcd {
        apiserver.extend([
            format!("--etcd-cafile={}", p("etcd/ca.crt")),
            format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
            format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
            format!("--etcd-servers=https://127.0.0.1:{client_port}"),
        ]);
    }
    let pki_volume = ("k8s-certs", dir.join("pki"), POD_PKI, true);
    let manifests = dir.join("manifests");
    write(
        &manifests.join("kube-apiserver.yaml"),
        &pod_manifest(
            "kube-apiserver",
            &apiserver,
            std::slice::from_ref(&pki_volume),
        ),
        0o600,
    )?;
    let mut kcm = vec!["kube-controller-manager".to_string()];
    kcm.extend(secure_serving(
        spec.controller_manager_port,
        CONTROLLER_MANAGER_PORT,
    ));
    kcm.extend([
        "--kubeconfig=/etc/kubernetes/controller-manager.conf".into(),
        format!("--cluster-signing-cert-file={}", p("ca.crt")),
        format!("--cluster-signing-key-file={}", p("ca.key")),
        format!("--root-ca-file={}", p("ca.crt")),
        format!("--service-account-private-key-file={}", p("sa.key")),
        "--leader-elect=true".into(),
    ]);
    write(
        &manifests.join("kube-controller-manager.yaml"),
        &pod_manifest(
            "kube-controller-manager",
            &kcm,
            &[
                pki_volume.clone(),
                (
                    "kubeconfig",
                    dir.join("controller-manager.conf"),
                    "/etc/kubernetes/controller-manager.conf",
                    true,
                ),
            ],
        ),
        0o600,
    )?;
    let mut sched = vec!["kube-scheduler".to_string()];
    sched.extend(secure_serving(spec.scheduler_port, SCHEDULER_PORT));
    sched.extend([
        "--kubeconfig=/etc/kubernetes/scheduler.conf".into(),
        "--leader-elect=true".into(),
    ]);
    write(
        &manifests.join("kube-scheduler.yaml"),
        &pod_manifest(
            "kube-scheduler",
            &sched,
            &[(
                "kubeconfig",
                dir.join("scheduler.conf"),
                "/etc/kubernetes/scheduler.conf",
                true,
            )],
        ),
        0o600,
    )?;
    if spec.etcd {
        let ip = spec.advertise_address;
        let client_url = https_url(ip, client_port);
        let peer_url = https_url(ip, peer_port);
        // kubeadm listens on loopback and on the advertise address, which is what the other
        // members and the API servers of other nodes reach; on loopback itself, once.
        let loopback = if ip.is_ipv6() {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
        };
        let listen_client = if ip == loopback {
            client_url.clone()
        } else {
            format!("{},{client_url}", https_url(loopback, client_port))
        };
        let mut etcd = vec![
            "etcd".to_string(),
            format!("--advertise-client-urls={client_url}"),
            format!("--cert-file={}", p("etcd/server.crt")),
            "--client-cert-auth=true".into(),
            format!("--data-dir={POD_ETCD_DATA}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!(
                "--initial-cluster={}",
                spec.etcd_initial_cluster
                    .clone()
                    .unwrap_or_else(|| spec.etcd_peer_entry())
            ),
        ];
        if spec.etcd_initial_cluster.is_some() {
            etcd.push("--initial-cluster-state=new".into());
        }
        etcd.extend([
            format!("--key-file={}", p("etcd/server.key")),
            format!("--listen-client-urls={listen_client}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--name={}", spec.node_name),
            format!("--peer-cert-file={}", p("etcd/peer.crt")),
            "--peer-client-cert-auth=true".into(),
            format!("--peer-key-file={}", p("etcd/peer.key")),
            format!("--peer-trusted-ca-file={}", p("etcd/ca.crt")),
            "--snapshot-count=10000".into(),
            format!("--trusted-ca-file={}", p("etcd/ca.crt")),
        ]);
        write(
            &manifests.join("etcd.yaml"),
            &pod_manifest(
                "etcd",
                &etcd,
                &[
                    ("etcd-data", dir.join("etcd-data"), POD_ETCD_DATA, false),
                    (
                        "etcd-certs",
                        dir.join("pki/etcd"),
                        "/etc/kubernetes/pki/etcd",
                        true,
                    ),
                ],
            ),
            0o600,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    fn etcd_flags(dir: &Path) -> Vec<String> {
        let pod = crate::node::manifest::read(&dir.join("manifests/etcd.yaml")).unwrap();
        pod.container("etcd").unwrap().argv.clone()
    }

    fn der(file: &Path) -> Vec<u8> {
        crate::pki::inventory::parse_cert_bundle(&std::fs::read(file).unwrap()).unwrap()[0]
            .der
            .clone()
    }

    #[test]
    fn a_lone_node_bootstraps_a_one_member_etcd_as_kubeadm_init_does() {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &NodeSpec::new(OffsetDateTime::now_utc(), 30)).unwrap();
        let flags = etcd_flags(tmp.path());
        for expected in [
            "--advertise-client-urls=https://127.0.0.1:2379",
            "--initial-advertise-peer-urls=https://127.0.0.1:2380",
            "--initial-cluster=cp-1=https://127.0.0.1:2380",
            "--listen-client-urls=https://127.0.0.1:2379",
            "--listen-peer-urls=https://127.0.0.1:2380",
        ] {
            assert!(flags.iter().any(|f| f == expected), "{expected}: {flags:?}");
        }
        assert!(
            !flags
                .iter()
                .any(|f| f.starts_with("--initial-cluster-state")),
            "{flags:?}"
        );
    }

    #[test]
    fn nodes_of_one_cluster_share_its_cas_and_list_every_member() {
        let tmp = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let spec = |i: u8| NodeSpec {
            node_name: format!("cp-{i}"),
            advertise_address: IpAddr::from([10, 0, 0, i]),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ..NodeSpec::new(now, 30)
        };
        let members = [spec(1), spec(2)]
            .iter()
            .map(NodeSpec::etcd_peer_entry)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            members,
            "cp-1=https://10.0.0.1:2380,cp-2=https://10.0.0.2:2380"
        );
        let (one, two) = (tmp.path().join("cp-1"), tmp.path().join("cp-2"));
        generate(
            &one,
            &NodeSpec {
                etcd_initial_cluster: Some(members.clone()),
                ..spec(1)
            },
        )
        .unwrap();
        generate(
            &two,
            &NodeSpec {
                shared_cas_from: Some(one.clone()),
                etcd_initial_cluster: Some(members.clone()),
                ..spec(2)
            },
        )
        .unwrap();
        for shared in [
            "ca.crt",
            "ca.key",
            "front-proxy-ca.crt",
            "front-proxy-ca.key",
            "etcd/ca.crt",
            "etcd/ca.key",
            "sa.key",
            "sa.pub",
        ] {
            let read = |dir: &Path| std::fs::read(dir.join("pki").join(shared)).unwrap();
            assert_eq!(read(&one), read(&two), "{shared}");
        }
        assert_ne!(
            std::fs::read(one.join("pki/etcd/peer.crt")).unwrap(),
            std::fs::read(two.join("pki/etcd/peer.crt")).unwrap()
        );
        // cp-2's peer certificate: signed by the shared etcd CA, naming cp-2's own address.
        let ca_der = der(&one.join("pki/etcd/ca.crt"));
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        for leaf in ["etcd/peer.crt", "etcd/server.crt"] {
            let leaf_der = der(&two.join("pki").join(leaf));
            let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();
            cert.verify_signature(Some(ca.public_key()))
                .unwrap_or_else(|e| panic!("{leaf}: {e}"));
            assert_eq!(cert.issuer(), ca.subject(), "{leaf}");
            let sans = cert.subject_alternative_name().unwrap().unwrap();
            let ips: Vec<Vec<u8>> = sans
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::IPAddress(ip) => Some(ip.to_vec()),
                    _ => None,
                })
                .collect();
            assert!(ips.contains(&vec![10, 0, 0, 2]), "{leaf}: {ips:?}");
            assert!(ips.contains(&vec![127, 0, 0, 1]), "{leaf}: {ips:?}");
        }
        let flags = etcd_flags(&two);
        for expected in [
            "--name=cp-2".to_string(),
            format!("--initial-cluster={members}"),
            "--initial-cluster-state=new".into(),
            "--advertise-client-urls=https://10.0.0.2:2379".into(),
            "--listen-client-urls=https://127.0.0.1:2379,https://10.0.0.2:2379".into(),
            "--listen-peer-urls=https://10.0.0.2:2380".into(),
        ] {
            assert!(flags.contains(&expected), "{expected}: {flags:?}");
        }
    }

    #[test]
    fn controller_manager_and_scheduler_ports_are_written_only_off_their_defaults() {
        let flags = |dir: &Path, name: &str| {
            let pod =
                crate::node::manifest::read(&dir.join(format!("manifests/{name}.yaml"))).unwrap();
            pod.container(name).unwrap().argv.clone()
        };
        let tmp = tempfile::tempdir().unwrap();
        let spec = NodeSpec {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ca_key_algorithm: KeyAlgorithm::EcdsaP256,
            ..NodeSpec::new(OffsetDateTime::now_utc(), 30)
        };
        let (default, moved) = (tmp.path().join("default"), tmp.path().join("moved"));
        generate(&default, &spec).unwrap();
        for name in ["kube-controller-manager", "kube-scheduler"] {
            let argv = flags(&default, name);
            assert!(
                !argv
                    .iter()
                    .any(|f| f.starts_with("--secure-port") || f.starts_with("--bind-address")),
                "{argv:?}"
            );
        }
        generate(
            &moved,
            &NodeSpec {
                controller_manager_port: 20257,
                scheduler_port: 20259,
                ..spec
            },
        )
        .unwrap();
        for (name, port) in [
            ("kube-controller-manager", 20257),
            ("kube-scheduler", 20259),
        ] {
            let argv = flags(&moved, name);
            assert_eq!(
                argv[1..3],
                [
                    "--bind-address=127.0.0.1".to_string(),
                    format!("--secure-port={port}")
                ],
                "{argv:?}"
            );
        }
    }

    #[test]
    fn sharing_cas_of_a_dir_without_them_names_the_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = generate(
            &tmp.path().join("cp-2"),
            &NodeSpec {
                shared_cas_from: Some(tmp.path().join("nowhere")),
                ..NodeSpec::new(OffsetDateTime::now_utc(), 30)
            },
        )
        .unwrap_err();
        assert!(err.contains("cannot read CA certificate"), "{err}");
        assert!(err.contains("nowhere/pki/ca.crt"), "{err}");
    }

    #[test]
    fn a_ca_key_that_is_not_the_certificates_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = NodeSpec {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ca_key_algorithm: KeyAlgorithm::EcdsaP256,
            ..NodeSpec::new(OffsetDateTime::now_utc(), 30)
        };
        generate(tmp.path(), &spec).unwrap();
        let pki = tmp.path().join("pki");
        std::fs::copy(pki.join("front-proxy-ca.key"), pki.join("ca.key")).unwrap();
        let err = GeneratedCa::load(&pki, "ca").err().unwrap();
        assert!(err.contains("is not the key of"), "{err}");
        assert!(err.contains("pki/ca.crt"), "{err}");
    }
}
