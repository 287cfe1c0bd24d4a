//! The least-privilege identity the restart Lease is taken with: instead of `admin.conf`
//! (cluster-admin), a client certificate of the product's own — CN `kube-cert-renewer:<node>`,
//! O [`GROUP`] — signed by the cluster CA into `<kubeconfig dir>/kube-cert-renewer.conf`
//! ([`LEASE_KUBECONFIG`]), and a Role + RoleBinding ([`rbac_yaml`]) that lets that group get,
//! create and update the one Lease and nothing else.
//!
//! The file is the Lease's kubeconfig by default once it exists ([`lease_kubeconfig`]); the
//! inventory lists it with kubeadm's kubeconfigs, so `check` watches it and `renew` / the daemon
//! renew it like `admin.conf` (same CA, same atomic, backed-up, journaled writes).

use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::Config;
pub use crate::pki::kubeadm::LEASE_KUBECONFIG;
use crate::pki::kubeconfig::{self, ClientCert};
use crate::pki::{inventory, keys, pem, profile, reissue};

/// The group (subject O) of every node's Lease credential: what the RoleBinding binds.
pub const GROUP: &str = "kube-cert-renewer:lease-holders";

/// The name of the Role and of the RoleBinding.
pub const ROLE: &str = "kube-cert-renewer:restart-lease";

/// Groups that make a client cluster-admin on a kubeadm cluster: `system:masters` (bound by the
/// API server itself, unrevocable) and `kubeadm:cluster-admins` (bound to `cluster-admin` by
/// kubeadm ≥ 1.29 for `admin.conf`).
pub const CLUSTER_ADMIN_GROUPS: [&str; 2] = ["system:masters", "kubeadm:cluster-admins"];

/// The user (subject CN) of `node`'s Lease credential: one per node, so the API server's audit
/// log tells them apart.
pub fn user_of(node: &str) -> String {
    format!("kube-cert-renewer:{node}")
}

/// The kubeconfig the Lease is taken with: the config's `lease_kubeconfig`, else the product's
/// own [`LEASE_KUBECONFIG`] once issued, else `admin.conf`.
pub fn lease_kubeconfig(config: &Config) -> PathBuf {
    if let Some(file) = &config.lease_kubeconfig {
        return file.clone();
    }
    let kubeconfigs = config.paths().kubeconfigs;
    let own = kubeconfigs.join(LEASE_KUBECONFIG);
    if own.symlink_metadata().is_ok() {
        own
    } else {
        kubeconfigs.join("admin.conf")
    }
}

/// Whom a kubeconfig's client certificate authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The kubeconfig.
    pub kubeconfig: PathBuf,
    /// The certificate's subject, as openssl prints it (`O=…, CN=…`).
    pub subject: String,
    /// Its CN: the user name the API server sees.
    pub user: Option<String>,
    /// Its O values: the groups the API server sees.
    pub groups: Vec<String>,
}

impl ClientIdentity {
    /// True when this identity is cluster-admin on a kubeadm cluster (see
    /// [`CLUSTER_ADMIN_GROUPS`]): more than the Lease needs.
    pub fn cluster_admin(&self) -> bool {
        self.groups
            .iter()
            .any(|g| CLUSTER_ADMIN_GROUPS.contains(&g.as_str()))
    }
}

/// Reads the identity of `kubeconfig`'s current-context user (embedded certificate or file).
pub fn identity_of(kubeconfig: &Path) -> Result<ClientIdentity, String> {
    let name = kubeconfig.display();
    let bytes = inventory::read_bounded(kubeconfig)
        .map_err(|e| format!("cannot read {name}: {e}"))?
        .ok_or_else(|| format!("{name} does not exist"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8 text"))?;
    let credentials = kubeconfig::credentials(&text, kubeconfig)?;
    let cert_pem = match credentials.client {
        ClientCert::Embedded { cert_pem, .. } => cert_pem,
        ClientCert::Files { cert, .. } => inventory::read_bounded(&cert)
            .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
            .ok_or_else(|| format!("{} (named by {name}) does not exist", cert.display()))?,
    };
    let der = pem::parse(&cert_pem)
        .map_err(|e| format!("{name}: client certificate: {e}"))?
        .into_iter()
        .find(|b| b.label == "CERTIFICATE")
        .map(|b| b.der)
        .ok_or_else(|| format!("{name}: the client certificate holds no CERTIFICATE"))?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| format!("{name}: the client certificate is not valid X.509: {e}"))?;
    let text_of = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attr.as_str().map(str::to_string).ok()
    };
    Ok(ClientIdentity {
        kubeconfig: kubeconfig.to_path_buf(),
        subject: cert.subject().to_string(),
        user: cert.subject().iter_common_name().next().and_then(text_of),
        groups: cert
            .subject()
            .iter_organization()
            .filter_map(text_of)
            .collect(),
    })
}

/// The Role and RoleBinding the Lease credential needs, as YAML for `kubectl apply -f -`: get
/// and update on the one Lease (`resourceNames`), and create on Leases of its namespace —
/// Kubernetes RBAC cannot restrict `create` to a name, because the object has no name yet when
/// the request is authorized. The comments say how to do without that rule.
pub fn rbac_yaml() -> String {
    use crate::coordination::lease::{NAME, NAMESPACE};
    format!(
        "# kube-cert-renewer: what the restart Lease credential ({LEASE_KUBECONFIG}, group {GROUP})\n\
         # may do, and nothing more. Apply once per cluster: kubectl apply -f -\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: Role\n\
         metadata:\n\
         \x20 name: {role}\n\
         \x20 namespace: {NAMESPACE}\n\
         rules:\n\
         - apiGroups: [\"coordination.k8s.io\"]\n\
         \x20 resources: [\"leases\"]\n\
         \x20 resourceNames: [\"{NAME}\"]\n\
         \x20 verbs: [\"get\", \"update\"]\n\
         # RBAC cannot limit create to one name: this rule lets the group create any Lease in\n\
         # {NAMESPACE} that does not exist yet (it can read or change none but {NAME}). To grant\n\
         # no create at all, create the Lease once yourself (kubectl create -n {NAMESPACE} -f - with\n\
         # apiVersion coordination.k8s.io/v1, kind Lease, metadata.name {NAME}) and delete this rule.\n\
         - apiGroups: [\"coordination.k8s.io\"]\n\
         \x20 resources: [\"leases\"]\n\
         \x20 verbs: [\"create\"]\n\
         ---\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: RoleBinding\n\
         metadata:\n\
         \x20 name: {role}\n\
         \x20 namespace: {NAMESPACE}\n\
         roleRef:\n\
         \x20 apiGroup: rbac.authorization.k8s.io\n\
         \x20 kind: Role\n\
         \x20 name: {role}\n\
         subjects:\n\
         - apiGroup: rbac.authorization.k8s.io\n\
         \x20 kind: Group\n\
         \x20 name: {GROUP}\n",
        role = ROLE,
    )
}

/// What [`issue`] wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The kubeconfig.
    pub file: PathBuf,
    /// Who it authenticates as.
    pub identity: ClientIdentity,
    /// Its end of validity.
    pub not_after: OffsetDateTime,
    /// The backup of the file it replaced, if any.
    pub backup: Option<PathBuf>,
}

/// Issues `node`'s Lease credential into `<kubeconfig dir>/kube-cert-renewer.conf`: a new key (the
/// cluster CA's algorithm, as kubeadm keeps one per cluster), a client certificate of the cluster
/// CA for CN [`user_of`] `node`, O [`GROUP`], valid `validity_days` (capped at the CA's end), in a
/// kubeconfig with `admin.conf`'s server and cluster name and the CA file as its CA data. Written
/// as renewals write (staged, backed up, journaled, renamed); a file already there is replaced.
/// The caller holds the node lock.
pub fn issue(config: &Config, node: &str, now: OffsetDateTime) -> Result<Issued, String> {
    let paths = config.paths();
    if node.trim().is_empty() {
        return Err(
            "this node has no name to issue the Lease credential for (set node_name)".into(),
        );
    }
    let inventory = inventory::scan(&paths, &inventory::Options::default());
    let signers = crate::renew::execute::load_signers(&inventory);
    let ca = match signers.get(crate::pki::kubeadm::CA.name) {
        Some(Ok(ca)) => ca,
        Some(Err(e)) => return Err(format!("the cluster CA cannot sign: {e}")),
        None => {
            return Err(format!(
                "the cluster CA key {} is not on this node (or unreadable): issue the credential \
                 on a control-plane node that has it",
                paths.pki.join("ca.key").display()
            ));
        }
    };
    let admin = paths.kubeconfigs.join("admin.conf");
    let admin_text = std::fs::read_to_string(&admin)
        .map_err(|e| format!("cannot read {} (for the server URL): {e}", admin.display()))?;
    let admin_creds = kubeconfig::credentials(&admin_text, &admin)?;
    let server = admin_creds
        .server
        .ok_or_else(|| format!("{}: the current context has no server", admin.display()))?;
    let algorithm = keys::algorithm_of_spki(&ca.cert().spki_der)?;
    let (pair, key_pem) = crate::recover::run::new_key(algorithm)?;
    let user = user_of(node);
    let profile = profile::Profile {
        common_name: user.clone(),
        organizations: vec![GROUP.to_string()],
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        server_auth: false,
        client_auth: true,
        is_ca: false,
        basic_constraints: true,
    };
    let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
    let validity = reissue::validity(now, config.validity_days, ca.cert().not_after);
    let der = profile::issue_leaf(&profile, &spki, &ca.signer(), validity)?;
    let facts = crate::pki::cert::CertFacts::from_der(&der)?;
    if !facts.is_signed_by(ca.cert()) || !keys::matches_spki(&pair, &facts.spki_der) {
        return Err("the new certificate does not verify against the CA or its key".into());
    }
    let cert_pem = pem::encode("CERTIFICATE", &der).into_bytes();
    let text = profile::kubeconfig_yaml_for(
        LEASE_KUBECONFIG,
        &user,
        &admin_creds.cluster,
        &server,
        ca.bundle_pem(),
        &cert_pem,
        &key_pem,
    )?;
    let file = paths.kubeconfigs.join(LEASE_KUBECONFIG);
    let written = crate::renew::execute::write_changes(
        &[crate::renew::execute::Change {
            path: file.clone(),
            data: text.into_bytes(),
            group: LEASE_KUBECONFIG.to_string(),
            new_mode: 0o600,
        }],
        &[],
        &paths,
        &config.kubernetes_dir,
        config.keep_backups,
        now,
    )
    .map_err(|e| match e {
        crate::renew::execute::RenewError::Refused(why) => {
            format!("nothing was written: {}", why.join("; "))
        }
        crate::renew::execute::RenewError::Failed(why) => why,
    })?;
    Ok(Issued {
        identity: identity_of(&file)?,
        file,
        not_after: facts.not_after,
        backup: written.backup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_groups_are_cluster_admin_the_lease_group_is_not() {
        let id = |groups: &[&str]| ClientIdentity {
            kubeconfig: PathBuf::from("x.conf"),
            subject: String::new(),
            user: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(id(&["system:masters"]).cluster_admin());
        assert!(id(&["kubeadm:cluster-admins"]).cluster_admin());
        assert!(!id(&[GROUP]).cluster_admin());
        assert!(!id(&[]).cluster_admin());
    }
}
