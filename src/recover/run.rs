//! Carrying out a recovery: read the node and the snapshots, plan, build every new file in
//! memory and check it, then write everything as one journaled step (the same write path as a
//! renewal: staged, backed up, renamed; undone as a whole after a crash).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use time::OffsetDateTime;

use crate::config::Config;
use crate::pki::cert::CertFacts;
use crate::pki::inventory::{parse_cert_bundle, read_bounded};
use crate::pki::keys::{self, KeyAlgorithm, KeyEncoding};
use crate::pki::kubeadm::{self, CaSpec};
use crate::pki::kubeconfig::{self, NewCredentials};
use crate::pki::pem;
use crate::pki::profile;
use crate::pki::reissue::{self, Signer};
use crate::recover::facts::{self, NodeFacts};
use crate::recover::plan::{
    self, Action, EffectiveCa, Layout, Observed, OnNode, Place, Plan, SnapshotFiles, Template,
};
use crate::renew::execute::{self, Change, RenewError};
use crate::state::snapshot;

/// What `recover` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Plan and build only.
    pub dry_run: bool,
    /// Draw from this snapshot only (a name from `recover --list`, or its path).
    pub from: Option<String>,
    /// A kubeadm config file for the facts a re-issue from scratch needs.
    pub kubeadm_config: Option<PathBuf>,
    /// CAs (`ca`, `etcd-ca`, `front-proxy-ca`) or `sa` the operator wants generated here because
    /// they are gone everywhere.
    pub new_cas: BTreeSet<String>,
    /// Restore a static-pod manifest whose Kubernetes version differs from the surviving ones
    /// (a snapshot from before a `kubeadm upgrade`) instead of leaving it missing.
    pub allow_version_skew: bool,
}

/// One line of the report per thing done (or to be done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// kubeadm's name or the file's.
    pub name: String,
    /// The files written.
    pub files: Vec<PathBuf>,
    /// What was done: "restored from snapshot …", "re-issued (…)".
    pub how: String,
}

/// What a recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What was (or would be) written.
    pub steps: Vec<Step>,
    /// Files nothing could bring back, with what to do.
    pub unrecoverable: Vec<plan::Unrecoverable>,
    /// Cluster-level secrets gone everywhere: nothing was written; the procedures say what to
    /// do.
    pub stops: Vec<(plan::Stop, String)>,
    /// Notes: where the node's facts came from, CAs treated as external…
    pub notes: Vec<String>,
    /// The backup of files replaced (a recovery mostly creates files).
    pub backup: Option<PathBuf>,
    /// kubeadm's names whose certificates changed: the restart they need.
    pub recovered: Vec<String>,
}

/// Why a recovery did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverError {
    /// A CA or `sa.key` is gone everywhere: nothing written; the outcome holds the procedures.
    Stopped(Box<Outcome>),
    /// Bad input or a check failed: nothing written.
    Refused(Vec<String>),
    /// Failed while writing; the message says in which state the node is.
    Failed(String),
    /// Could not run: a directory it would write in is not trusted.
    CannotRun(String),
}

impl std::fmt::Display for RecoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoverError::Stopped(o) => write!(
                f,
                "stopped, nothing was written: gone from the node and every snapshot: {}",
                o.stops
                    .iter()
                    .map(|(s, _)| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            RecoverError::Refused(r) => {
                write!(f, "refused, nothing was written: {}", r.join("; "))
            }
            RecoverError::Failed(m) | RecoverError::CannotRun(m) => f.write_str(m),
        }
    }
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        self.steps == other.steps && self.recovered == other.recovered
    }
}
impl Eq for Outcome {}

/// Reads the node's files the plan asks about, and every file of `snapshots`.
fn observe(layout: &Layout, snapshots: &[SnapshotFiles]) -> Observed {
    let mut paths: BTreeSet<PathBuf> = plan::wanted_paths(layout).into_iter().collect();
    for s in snapshots {
        paths.extend(s.files.keys().cloned());
    }
    let node = paths
        .into_iter()
        .map(|p| {
            let state = match read_bounded(&p) {
                Ok(Some(d)) => OnNode::Present(d),
                Ok(None) => OnNode::Missing,
                Err(e) => OnNode::Unreadable(e),
            };
            (p, state)
        })
        .collect();
    Observed {
        node,
        snapshots: snapshots.to_vec(),
    }
}

/// Reads the snapshots to draw from: all (newest first), or the one `--from` names. Only files
/// whose original place is one of the node's kubeadm dirs (`dirs`) are taken: a MANIFEST line
/// naming anything else is not a file a snapshot makes, and is left out with a note.
fn load_snapshots(
    all: &[snapshot::Snapshot],
    state: &Path,
    from: Option<&str>,
    dirs: &[PathBuf],
    notes: &mut Vec<String>,
) -> Result<Vec<SnapshotFiles>, String> {
    let chosen = match from {
        Some(name) => std::slice::from_ref(snapshot::find_in(all, state, name)?),
        None => all,
    };
    let allowed = |p: &Path| {
        p.is_absolute()
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && p.parent().is_some_and(|d| dirs.iter().any(|a| a == d))
    };
    let mut out = Vec::new();
    'snapshots: for s in chosen {
        let mut files = BTreeMap::new();
        for original in s.files.keys() {
            if !allowed(original) {
                notes.push(format!(
                    "snapshot {}: {} is outside the node's kubeadm dirs; left out",
                    s.name,
                    original.display()
                ));
                continue;
            }
            match s.read(original) {
                Ok(Some(copy)) => {
                    files.insert(original.clone(), copy);
                }
                Ok(None) => {}
                // one damaged snapshot does not keep the others from being used
                Err(e) => {
                    notes.push(format!("snapshot {} is unusable: {e}", s.name));
                    continue 'snapshots;
                }
            }
        }
        out.push(SnapshotFiles {
            name: s.name.clone(),
            files,
        });
    }
    if let (Some(name), true) = (from, out.is_empty()) {
        return Err(format!(
            "snapshot {name} cannot be used: {}",
            notes.join("; ")
        ));
    }
    Ok(out)
}

/// The procedure for a cluster-level secret gone everywhere: what it is, what a new one breaks,
/// what to do first.
pub fn procedure(name: &str) -> String {
    let copy = |files: &str| {
        format!(
            "First choice — if another control-plane node of this cluster still has it, copy \
             {files} from that node into this one (same paths, key mode 0600), then run \
             `kube-cert-renewer recover` again: nothing else in the cluster changes."
        )
    };
    match name {
        "ca" => format!(
            "The cluster CA (pki/ca.crt + pki/ca.key) signs the API server's serving \
             certificate, its client certificate to the kubelets, every kubeconfig \
             (admin/super-admin/controller-manager/scheduler.conf) and every kubelet's client \
             certificate; every pod trusts it (the kube-root-ca.crt ConfigMap).\n  {}\n  \
             Only if no node has it: `kube-cert-renewer recover --new-ca ca` generates a new \
             one here and re-issues this node's certificates and kubeconfigs with it. Then the \
             whole cluster must move to it: copy the new ca.crt/ca.key to every other \
             control-plane node and run `kube-cert-renewer renew all` there; every worker must \
             re-join (`kubeadm reset`, then `kubeadm join` with a new token) or get a new \
             kubelet.conf (`kubeadm kubeconfig user --org system:nodes --client-name \
             system:node:<node>`); hand out new kubeconfigs to users; restart the pods that use \
             service-account tokens so they see the new CA.",
            copy("/etc/kubernetes/pki/ca.crt and ca.key")
        ),
        "etcd-ca" => format!(
            "The etcd CA (pki/etcd/ca.crt + ca.key) signs every etcd member's server and peer \
             certificates, etcd's healthcheck client and the API server's etcd client; etcd \
             members accept only peers it signed.\n  {}\n  Only if no node has it: \
             `kube-cert-renewer recover --new-ca etcd-ca` generates a new one here and \
             re-issues this node's etcd and etcd-client certificates. With more than one etcd \
             member, every other member must get the same CA and new certificates from it (copy \
             the new etcd/ca.crt and ca.key there, then `kube-cert-renewer renew etcd-server \
             etcd-peer etcd-healthcheck-client apiserver-etcd-client`), or this member cannot \
             rejoin its peers.",
            copy("/etc/kubernetes/pki/etcd/ca.crt and ca.key")
        ),
        "front-proxy-ca" => format!(
            "The front-proxy CA (pki/front-proxy-ca.crt + .key) signs the API server's \
             front-proxy client certificate, which aggregated API servers (metrics-server, \
             custom APIs) trust through the extension-apiserver-authentication ConfigMap.\n  \
             {}\n  Only if no node has it: `kube-cert-renewer recover --new-ca front-proxy-ca` \
             generates a new one here; copy it to every other control-plane node and run \
             `kube-cert-renewer renew front-proxy-client` there, then restart the aggregated \
             API servers so they read the new CA.",
            copy("/etc/kubernetes/pki/front-proxy-ca.crt and front-proxy-ca.key")
        ),
        _ => format!(
            "The service-account key pair (pki/sa.key signs every service-account token, \
             pki/sa.pub verifies them) must be the same on every control-plane node.\n  {}\n  \
             Only if no node has it: `kube-cert-renewer recover --new-ca sa` generates a new \
             pair here. Every token issued so far stops working: copy the new pair to every \
             other control-plane node, restart their API servers and controller-managers, then \
             restart every pod that talks to the API (their tokens are re-issued).",
            copy("/etc/kubernetes/pki/sa.key and sa.pub")
        ),
    }
}

/// A CA ready to sign.
struct SigningKey {
    cert: CertFacts,
    key: rcgen::KeyPair,
}

fn signing_key(ca: &EffectiveCa) -> Result<Option<SigningKey>, String> {
    let Some(key_pem) = &ca.key_pem else {
        return Ok(None);
    };
    let key = keys::parse_private_key(key_pem)?;
    let cert = ca
        .bundle
        .iter()
        .find(|c| keys::matches_spki(&key.pair, &c.spki_der))
        .ok_or("the CA key matches no certificate of its file")?
        .clone();
    Ok(Some(SigningKey {
        cert,
        key: key.pair,
    }))
}

/// kubeadm's PEM encoding for a key of `algorithm`.
fn kubeadm_encoding(algorithm: KeyAlgorithm) -> KeyEncoding {
    match algorithm {
        KeyAlgorithm::Rsa(_) => KeyEncoding::Pkcs1,
        _ => KeyEncoding::Sec1,
    }
}

/// A new key of `algorithm` and its PEM as kubeadm writes it (also the Lease credential's).
pub(crate) fn new_key(algorithm: KeyAlgorithm) -> Result<(rcgen::KeyPair, Vec<u8>), String> {
    let pair = keys::generate(algorithm)?;
    let text = keys::encode(&pair, algorithm, kubeadm_encoding(algorithm))?;
    Ok((pair, text.into_bytes()))
}

/// CA certificates kubeadm makes last ten years.
const CA_DAYS: u32 = 3650;

/// A generated CA's (or `sa` pair's) files, and for a CA what the second phase signs with.
type Generated = (Vec<Change>, Option<(&'static str, EffectiveCa)>);

/// Generates a CA (or the `sa` pair) the operator asked for: its files' changes and, for a CA,
/// what the second phase signs with.
fn generate_ca(
    layout: &Layout,
    name: &str,
    algorithm: KeyAlgorithm,
    now: OffsetDateTime,
) -> Result<Generated, String> {
    let (pair, key_pem) = new_key(algorithm)?;
    if name == "sa" {
        let public = pem::encode(
            "PUBLIC KEY",
            &rcgen::PublicKeyData::subject_public_key_info(&pair),
        );
        return Ok((
            vec![
                change(layout.pki.join("sa.key"), key_pem, "sa", 0o600),
                change(layout.pki.join("sa.pub"), public.into_bytes(), "sa", 0o600),
            ],
            None,
        ));
    }
    let spec: CaSpec = kubeadm::CAS
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("unknown CA {name}"))?;
    let der = profile::issue_ca(&profile::ca_profile(spec), &pair, now, CA_DAYS)?;
    let cert = CertFacts::from_der(&der)?;
    let cert_pem = pem::encode("CERTIFICATE", &der).into_bytes();
    let effective = EffectiveCa {
        bundle: vec![cert],
        bundle_pem: cert_pem.clone(),
        key_pem: Some(key_pem.clone()),
        new: true,
    };
    Ok((
        vec![
            change(
                layout.pki.join(format!("{}.crt", spec.base)),
                cert_pem,
                spec.name,
                0o644,
            ),
            change(
                layout.pki.join(format!("{}.key", spec.base)),
                key_pem,
                spec.name,
                0o600,
            ),
        ],
        Some((spec.name, effective)),
    ))
}

fn change(path: PathBuf, data: Vec<u8>, group: &str, new_mode: u32) -> Change {
    Change {
        path,
        data,
        group: group.to_string(),
        new_mode,
    }
}

/// The facts a re-issue from scratch needs, from what the node and the snapshots hold.
fn gather_facts(
    config: &Config,
    layout: &Layout,
    observed: &Observed,
    restored: &BTreeMap<PathBuf, Vec<u8>>,
    kubeadm_config: Option<&Path>,
) -> Result<NodeFacts, String> {
    // a file as it will be: the node's, else what this recovery restores, else the newest copy
    let best = |path: &Path| -> Option<Vec<u8>> {
        match observed.node.get(path) {
            Some(OnNode::Present(d)) => return Some(d.clone()),
            Some(OnNode::Unreadable(_)) => return None,
            _ => {}
        }
        restored.get(path).cloned().or_else(|| {
            observed
                .snapshots
                .iter()
                .find_map(|s| s.files.get(path).map(|(d, _)| d.clone()))
        })
    };
    let manifests: Vec<_> = plan::KUBEADM_MANIFESTS
        .iter()
        .map(|m| layout.manifests.join(m))
        .filter_map(|p| {
            let data = best(&p)?;
            let text = String::from_utf8(data).ok()?;
            crate::node::manifest::parse(&text, &p).ok()
        })
        .collect();
    let config_text = match kubeadm_config {
        Some(path) => Some(
            read_bounded(path)?
                .ok_or_else(|| format!("{}: no such file", path.display()))
                .and_then(|d| {
                    String::from_utf8(d).map_err(|_| format!("{}: not a text file", path.display()))
                })?,
        ),
        None => [
            "kubeadm.conf",
            "kubeadm.yaml",
            "kubeadm-config.yaml",
            "kubeadm.yml",
        ]
        .iter()
        .find_map(|n| best(&config.kubernetes_dir.join(n)))
        .and_then(|d| String::from_utf8(d).ok()),
    };
    let mut kubeconfigs = Vec::new();
    let mut certs = Vec::new();
    for name in kubeadm::LEAVES
        .iter()
        .map(|l| l.name)
        .chain([kubeadm::KUBELET_CONF])
    {
        match layout.leaf_place(name) {
            Some(Place::Kubeconfig(path)) => {
                if let Some(text) = best(&path).and_then(|d| String::from_utf8(d).ok()) {
                    kubeconfigs.push((name.to_string(), text));
                }
            }
            Some(Place::Pair { cert, .. }) => {
                if let Some(first) = best(&cert)
                    .and_then(|d| parse_cert_bundle(&d).ok())
                    .and_then(|c| c.into_iter().next())
                {
                    certs.push((name.to_string(), first));
                }
            }
            None => {}
        }
    }
    for (name, text) in &kubeconfigs {
        let path = layout.kubeconfigs.join(name);
        if let Ok(creds) = kubeconfig::credentials(text, &path)
            && let kubeconfig::ClientCert::Embedded { cert_pem, .. } = creds.client
            && let Some(first) = parse_cert_bundle(&cert_pem)
                .ok()
                .and_then(|c| c.into_iter().next())
        {
            certs.push((name.clone(), first));
        }
    }
    let hostname = Some(crate::daemon::run::hostname()).filter(|h| !h.is_empty());
    facts::gather(&facts::FactSources {
        manifests: &manifests,
        kubeadm_config: config_text.as_deref(),
        kubeconfigs: &kubeconfigs,
        certs: &certs,
        node_name_hint: config.node_name.as_deref(),
        hostname: hostname.as_deref(),
    })
}

/// Builds the files of one re-issue.
#[allow(clippy::too_many_arguments)]
fn build_reissue(
    name: &str,
    place: &Place,
    template: &Template,
    signer: &SigningKey,
    ca: &EffectiveCa,
    facts: Option<&NodeFacts>,
    validity_days: u32,
    now: OffsetDateTime,
) -> Result<Vec<Change>, String> {
    let template_der = match template {
        Template::Cert { der, .. } | Template::Kubeconfig { der, .. } => Some(der.as_slice()),
        Template::Profile => None,
    };
    let algorithm = match template_der {
        Some(der) => keys::algorithm_of_spki(&CertFacts::from_der(der)?.spki_der)?,
        // kubeadm gives every key of a cluster one algorithm: the CA's
        None => keys::algorithm_of_spki(&signer.cert.spki_der)?,
    };
    let (pair, key_pem) = new_key(algorithm)?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
    let validity = reissue::validity(now, validity_days, signer.cert.not_after);
    let sign = Signer {
        cert_der: &signer.cert.der,
        key: &signer.key,
    };
    let der = match template_der {
        Some(t) => {
            let der = reissue::reissue(t, &spki, &sign, validity)?;
            reissue::check_faithful(t, &der)?;
            der
        }
        None => {
            let facts = facts.ok_or("no facts about the node to build it from")?;
            let profile = profile::leaf_profile(name, facts)?;
            profile::issue_leaf(&profile, &spki, &sign, validity)?
        }
    };
    let facts_new = CertFacts::from_der(&der)?;
    if !facts_new.is_signed_by(&signer.cert)
        || !facts_new.names_issuer(&signer.cert)
        || !keys::matches_spki(&pair, &facts_new.spki_der)
    {
        return Err("the new certificate does not verify against its CA or key".into());
    }
    let cert_pem = pem::encode("CERTIFICATE", &der).into_bytes();
    Ok(match place {
        Place::Pair { cert, key } => vec![
            change(cert.clone(), cert_pem, name, 0o644),
            change(key.clone(), key_pem, name, 0o600),
        ],
        Place::Kubeconfig(path) => {
            let text = match template {
                Template::Kubeconfig { text, .. } => kubeconfig::replace_credentials(
                    text,
                    &NewCredentials {
                        cert_pem: &cert_pem,
                        key_pem: &key_pem,
                        ca_pem: Some(&ca.bundle_pem),
                    },
                )?,
                _ => {
                    let facts = facts.ok_or("no facts about the node to build it from")?;
                    let url = profile::server_url(name, facts)?;
                    profile::kubeconfig_yaml(
                        name,
                        &url,
                        &ca.bundle_pem,
                        &cert_pem,
                        &key_pem,
                        facts,
                    )?
                }
            };
            // it must read back as what was meant
            let creds = kubeconfig::credentials(&text, path)?;
            match creds.client {
                kubeconfig::ClientCert::Embedded { cert_pem: c, .. } if c == cert_pem => {}
                _ => return Err("the new kubeconfig does not read back".into()),
            }
            vec![change(path.clone(), text.into_bytes(), name, 0o600)]
        }
    })
}

/// Plans a recovery and, unless a dry run, carries it out. The caller holds the node lock and
/// has finished any interrupted run ([`crate::renew::job::recover`]).
pub fn recover(
    config: &Config,
    request: &Request,
    now: OffsetDateTime,
) -> Result<Outcome, RecoverError> {
    let paths = config.paths();
    let layout = Layout::of(&paths);
    let (all, mut broken) =
        snapshot::scan(&paths.state).map_err(|e| RecoverError::Refused(vec![e]))?;
    let dirs = [
        config.kubernetes_dir.clone(),
        paths.pki.clone(),
        paths.pki.join("etcd"),
        paths.kubeconfigs.clone(),
        paths.manifests.clone(),
    ];
    let snapshots = load_snapshots(
        &all,
        &paths.state,
        request.from.as_deref(),
        &dirs,
        &mut broken,
    )
    .map_err(|e| RecoverError::Refused(vec![e]))?;
    let observed = observe(&layout, &snapshots);
    let mut secrets = plan::plan_secrets(&layout, &observed, &request.new_cas);
    let mut outcome = Outcome {
        notes: broken,
        ..Outcome::default()
    };
    if !secrets.plan.refusals.is_empty() {
        return Err(RecoverError::Refused(secrets.plan.refusals));
    }
    if !secrets.plan.stops.is_empty() {
        outcome.stops = secrets
            .plan
            .stops
            .iter()
            .map(|s| (s.clone(), procedure(&s.name)))
            .collect();
        outcome.notes.extend(secrets.plan.notes.clone());
        return Err(RecoverError::Stopped(Box::new(outcome)));
    }
    // CAs asked for: generated in memory now, written with the rest
    let mut changes: Vec<Change> = Vec::new();
    let algorithm = secrets
        .cas
        .values()
        .find_map(|ca| ca.bundle.first())
        .and_then(|c| keys::algorithm_of_spki(&c.spki_der).ok())
        .unwrap_or(KeyAlgorithm::Rsa(2048));
    let mut plan: Plan = std::mem::take(&mut secrets.plan);
    for action in &plan.actions {
        if let Action::NewCa { name } = action {
            let (mut c, effective) = generate_ca(&layout, name, algorithm, now)
                .map_err(|e| RecoverError::Refused(vec![e]))?;
            changes.append(&mut c);
            if let Some((ca, eff)) = effective {
                secrets.cas.insert(ca, eff);
            }
            outcome.steps.push(Step {
                name: name.clone(),
                files: Vec::new(),
                how: "generated here (--new-ca)".into(),
            });
        }
    }
    plan::plan_leaves(
        &layout,
        &observed,
        &secrets,
        &plan::LeafOptions {
            now,
            allow_version_skew: request.allow_version_skew,
        },
        &mut plan,
    );
    if !plan.refusals.is_empty() {
        return Err(RecoverError::Refused(plan.refusals));
    }
    outcome.notes.extend(plan.notes.clone());
    outcome.unrecoverable = plan.unrecoverable.clone();
    // what this recovery restores, for the facts (a restored manifest tells the node's address)
    let restored: BTreeMap<PathBuf, Vec<u8>> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Restore { files, .. } => Some(files),
            _ => None,
        })
        .flatten()
        .map(|(p, d, _)| (p.clone(), d.clone()))
        .collect();
    let needs_facts = plan.actions.iter().any(|a| {
        matches!(
            a,
            Action::Reissue {
                template: Template::Profile,
                ..
            }
        )
    });
    let facts = if needs_facts {
        let f = gather_facts(
            config,
            &layout,
            &observed,
            &restored,
            request.kubeadm_config.as_deref(),
        )
        .map_err(|e| RecoverError::Refused(vec![format!("cannot re-issue from scratch: {e}")]))?;
        outcome.notes.extend(f.sources.iter().cloned());
        Some(f)
    } else {
        None
    };
    let mut signers: BTreeMap<&'static str, SigningKey> = BTreeMap::new();
    for (name, ca) in &secrets.cas {
        match signing_key(ca) {
            Ok(Some(s)) => {
                signers.insert(name, s);
            }
            Ok(None) => {}
            Err(e) => return Err(RecoverError::Refused(vec![format!("{name}: {e}")])),
        }
    }
    let mut errors = Vec::new();
    for action in &plan.actions {
        match action {
            Action::Restore { name, files, from } => {
                for (path, data, mode) in files {
                    changes.push(change(path.clone(), data.clone(), name, *mode));
                }
                outcome.steps.push(Step {
                    name: name.clone(),
                    files: files.iter().map(|(p, _, _)| p.clone()).collect(),
                    how: format!("restored from snapshot {from}"),
                });
            }
            Action::DerivePublic { path, data } => {
                changes.push(change(path.clone(), data.clone(), "sa", 0o600));
                outcome.steps.push(Step {
                    name: "sa".into(),
                    files: vec![path.clone()],
                    how: "written again from sa.key (its public half)".into(),
                });
            }
            Action::NewCa { .. } => {}
            Action::Reissue {
                name,
                place,
                ca,
                template,
                why,
            } => {
                let (Some(signer), Some(effective)) = (signers.get(ca), secrets.cas.get(ca)) else {
                    errors.push(format!("{name}: the key of CA {ca} is not usable"));
                    continue;
                };
                match build_reissue(
                    name,
                    place,
                    template,
                    signer,
                    effective,
                    facts.as_ref(),
                    config.validity_days,
                    now,
                ) {
                    Ok(mut c) => {
                        let files = c.iter().map(|c| c.path.clone()).collect();
                        changes.append(&mut c);
                        let copied = match template {
                            Template::Cert { from, .. } | Template::Kubeconfig { from, .. } => {
                                format!("copying the certificate from {from}")
                            }
                            Template::Profile => {
                                "from kubeadm's profile and the node's facts".into()
                            }
                        };
                        outcome.steps.push(Step {
                            name: name.clone(),
                            files,
                            how: format!("re-issued by {ca} with a new key, {copied} ({why})"),
                        });
                    }
                    Err(e) => errors.push(format!("{name}: {e}")),
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(RecoverError::Refused(errors));
    }
    // The certificates whose files change: the components that read them restart. A copy
    // restored from the newest snapshot is what they loaded (the snapshot is refreshed after
    // every change), so only re-issued ones and copies from an older generation need it.
    let newest = all.first().map(|s| s.name.clone());
    outcome.recovered = plan
        .actions
        .iter()
        .filter(|a| match a {
            Action::Restore { from, .. } => Some(from) != newest.as_ref(),
            _ => true,
        })
        .map(Action::name)
        .filter(|n| kubeadm::component_of(n).is_some())
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if request.dry_run || changes.is_empty() {
        return Ok(outcome);
    }
    for c in &mut changes {
        c.path =
            crate::state::store::resolve(&c.path).map_err(|e| RecoverError::Refused(vec![e]))?;
    }
    create_dirs(&changes).map_err(|e| RecoverError::Refused(vec![e]))?;
    match execute::write_changes(
        &changes,
        &outcome.recovered,
        &paths,
        &config.kubernetes_dir,
        config.keep_backups,
        now,
    ) {
        Ok(written) => {
            outcome.notes.extend(written.warnings);
            outcome.backup = written.backup;
            Ok(outcome)
        }
        Err(RenewError::Refused(r)) => Err(RecoverError::Refused(r)),
        Err(RenewError::Failed(e)) => Err(RecoverError::Failed(e)),
    }
}

/// Creates the directories the new files go in (kubeadm's mode 0755), each checked like every
/// directory the product writes in.
fn create_dirs(changes: &[Change]) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let me = crate::state::trust::Me::current();
    for c in changes {
        let Some(dir) = c.path.parent() else { continue };
        crate::state::trust::check_dir(dir, me)
            .map_err(|e| format!("{}: not written: {e}", c.path.display()))?;
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        }
    }
    Ok(())
}
