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
        }
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
    let server = format!("https://{adv}:6443");
    let ca = make_ca("kubernetes", spec)?;
    let ca_cn = |cn: &'static str| {
        if spec.same_ca_subject {
            "kubernetes"
        } else {
            cn
        }
    };
    let fp_ca = make_ca(ca_cn("front-proxy-ca"), spec)?;
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
        let etcd_ca = make_ca(ca_cn("etcd-ca"), spec)?;
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
    // sa.key / sa.pub: never renewed, present on every node.
    let sa = keys::generate(KeyAlgorithm::Rsa(2048))?;
    write(
        &pki.join("sa.key"),
        &keys::encode(&sa, KeyAlgorithm::Rsa(2048), KeyEncoding::Pkcs1)?,
        0o600,
    )?;
    write(&pki.join("sa.pub"), &sa.public_key_pem(), 0o600)?;

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
    let kcm = vec![
        "kube-controller-manager".to_string(),
        "--kubeconfig=/etc/kubernetes/controller-manager.conf".into(),
        format!("--cluster-signing-cert-file={}", p("ca.crt")),
        format!("--cluster-signing-key-file={}", p("ca.key")),
        format!("--root-ca-file={}", p("ca.crt")),
        format!("--service-account-private-key-file={}", p("sa.key")),
        "--leader-elect=true".into(),
    ];
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
    let sched = vec![
        "kube-scheduler".to_string(),
        "--kubeconfig=/etc/kubernetes/scheduler.conf".into(),
        "--leader-elect=true".into(),
    ];
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
        let etcd = vec![
            "etcd".to_string(),
            format!("--advertise-client-urls=https://{adv}:{client_port}"),
            format!("--cert-file={}", p("etcd/server.crt")),
            "--client-cert-auth=true".into(),
            format!("--data-dir={POD_ETCD_DATA}"),
            format!("--initial-advertise-peer-urls=https://{adv}:{peer_port}"),
            format!(
                "--initial-cluster={}=https://{adv}:{peer_port}",
                spec.node_name
            ),
            format!("--key-file={}", p("etcd/server.key")),
            if spec.advertise_address.is_loopback() {
                format!("--listen-client-urls=https://127.0.0.1:{client_port}")
            } else {
                format!(
                    "--listen-client-urls=https://127.0.0.1:{client_port},https://{adv}:{client_port}"
                )
            },
            format!("--listen-peer-urls=https://{adv}:{peer_port}"),
            format!("--name={}", spec.node_name),
            format!("--peer-cert-file={}", p("etcd/peer.crt")),
            "--peer-client-cert-auth=true".into(),
            format!("--peer-key-file={}", p("etcd/peer.key")),
            format!("--peer-trusted-ca-file={}", p("etcd/ca.crt")),
            "--snapshot-count=10000".into(),
            format!("--trusted-ca-file={}", p("etcd/ca.crt")),
        ];
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
