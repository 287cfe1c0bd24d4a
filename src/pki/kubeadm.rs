//! What kubeadm puts on a control-plane node: names, files and which CA signs what.
//!
//! Pure data, so every other module (inventory, plan, report) speaks kubeadm's names and the
//! mapping lives in one place. Facts from kubeadm's `certlist.go` and `renewal` package.

/// The three kubeadm certificate authorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaSpec {
    /// kubeadm's name (`ca`, `etcd-ca`, `front-proxy-ca`).
    pub name: &'static str,
    /// Path of `<base>.crt` / `<base>.key` relative to the pki dir.
    pub base: &'static str,
}

/// The cluster CA.
pub const CA: CaSpec = CaSpec {
    name: "ca",
    base: "ca",
};
/// The etcd CA.
pub const ETCD_CA: CaSpec = CaSpec {
    name: "etcd-ca",
    base: "etcd/ca",
};
/// The front-proxy (aggregation layer) CA.
pub const FRONT_PROXY_CA: CaSpec = CaSpec {
    name: "front-proxy-ca",
    base: "front-proxy-ca",
};

/// All CAs in kubeadm's report order.
pub const CAS: [CaSpec; 3] = [CA, ETCD_CA, FRONT_PROXY_CA];

/// Where a kubeadm-managed leaf lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafFile {
    /// `<pki>/<base>.crt` + `<pki>/<base>.key`.
    PemPair(&'static str),
    /// The client credentials embedded in `<kubeconfig dir>/<file>`.
    Kubeconfig(&'static str),
}

/// One certificate that `kubeadm certs renew all` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafSpec {
    /// kubeadm's name in `renew` and `check-expiration`.
    pub name: &'static str,
    /// Where it lives.
    pub file: LeafFile,
    /// The CA kubeadm signs it with.
    pub ca: CaSpec,
    /// Present only on some nodes by design (`super-admin.conf` exists only on the init node).
    pub optional: bool,
    /// Belongs to stacked etcd: absent by design with external etcd (and before etcd TLS).
    pub etcd: bool,
}

const fn pem(name: &'static str, base: &'static str, ca: CaSpec, etcd: bool) -> LeafSpec {
    LeafSpec {
        name,
        file: LeafFile::PemPair(base),
        ca,
        optional: false,
        etcd,
    }
}

const fn conf(name: &'static str, optional: bool) -> LeafSpec {
    LeafSpec {
        name,
        file: LeafFile::Kubeconfig(name),
        ca: CA,
        optional,
        etcd: false,
    }
}

/// kubeadm's renewable certificates, in its (sorted-by-name) order.
pub const LEAVES: [LeafSpec; 11] = [
    conf("admin.conf", false),
    pem("apiserver", "apiserver", CA, false),
    pem(
        "apiserver-etcd-client",
        "apiserver-etcd-client",
        ETCD_CA,
        true,
    ),
    pem(
        "apiserver-kubelet-client",
        "apiserver-kubelet-client",
        CA,
        false,
    ),
    conf("controller-manager.conf", false),
    pem(
        "etcd-healthcheck-client",
        "etcd/healthcheck-client",
        ETCD_CA,
        true,
    ),
    pem("etcd-peer", "etcd/peer", ETCD_CA, true),
    pem("etcd-server", "etcd/server", ETCD_CA, true),
    pem(
        "front-proxy-client",
        "front-proxy-client",
        FRONT_PROXY_CA,
        false,
    ),
    conf("scheduler.conf", false),
    conf("super-admin.conf", true),
];

/// Files (relative to the pki dir) whose presence shows the node runs etcd itself (stacked,
/// with TLS): its serving, peer and healthcheck certificates and its CA's key. Not
/// `etcd/ca.crt` alone — kubeadm's external-etcd setup copies that onto the node too.
pub const LOCAL_ETCD_FILES: [&str; 4] = [
    "etcd/ca.key",
    "etcd/server.crt",
    "etcd/peer.crt",
    "etcd/healthcheck-client.crt",
];

/// True when an etcd static-pod manifest runs etcd with TLS (kubeadm ≥ 1.10): then its
/// certificates belong on the node. kubeadm ≤ 1.9 ran etcd on plain HTTP, without any.
pub fn etcd_manifest_uses_tls(manifest: &[u8]) -> bool {
    let text = String::from_utf8_lossy(manifest);
    text.contains("--cert-file") || text.contains("--peer-cert-file")
}

/// Not kubeadm's: the product's own kubeconfig for the restart Lease (a least-privilege client
/// certificate of the cluster CA, `lease-credentials --issue`). Inventoried and renewed with
/// kubeadm's kubeconfigs once it exists.
pub const LEASE_KUBECONFIG: &str = "kube-cert-renewer.conf";

/// The kubelet's kubeconfig: not renewed by kubeadm (the kubelet rotates its own client cert),
/// but we report it, and renew an embedded one on explicit request.
pub const KUBELET_CONF: &str = "kubelet.conf";

/// The static-pod component that reads a certificate, so a renewal knows what to restart.
/// `None` for certificates no control-plane component serves or presents (admin.conf,
/// super-admin.conf, etcd-healthcheck-client, kubelet.conf).
pub fn component_of(name: &str) -> Option<&'static str> {
    match name {
        "apiserver"
        | "apiserver-kubelet-client"
        | "apiserver-etcd-client"
        | "front-proxy-client" => Some("kube-apiserver"),
        "controller-manager.conf" => Some("kube-controller-manager"),
        "scheduler.conf" => Some("kube-scheduler"),
        "etcd-server" | "etcd-peer" => Some("etcd"),
        _ => None,
    }
}
