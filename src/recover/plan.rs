//! Planning a recovery: a pure function of what the node and the snapshots hold (read before,
//! as bytes), the options and the time. It decides, file by file, what is kept, restored from a
//! snapshot, derived, re-issued, generated on request — or why it must stop.
//!
//! Two phases, because a leaf's fate depends on the CA it will be signed by: first the
//! cluster's secrets (the three CAs and `sa.key`), then the leaves and kubeconfigs against the
//! CAs as they will be once the first phase is done.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::config::NodePaths;
use crate::pki::cert::CertFacts;
use crate::pki::inventory::{ca_bundle, ca_key_match, parse_cert_bundle};
use crate::pki::keys;
use crate::pki::keys::{key_matches_bundle, public_matches};
use crate::pki::kubeadm::{self, CaSpec, LeafFile};
use crate::pki::kubeconfig::{self, ClientCert};
use crate::pki::pem;

/// What one file of the node is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnNode {
    /// It exists; its bytes.
    Present(Vec<u8>),
    /// It does not exist.
    Missing,
    /// It exists but cannot be read (the reason names the file).
    Unreadable(String),
}

/// One snapshot's files, read: original path → (bytes, mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFiles {
    /// The snapshot's name.
    pub name: String,
    /// Its files.
    pub files: BTreeMap<PathBuf, (Vec<u8>, u32)>,
}

/// Everything the plan looks at.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The node's files the plan asks about (see [`wanted_paths`]) and every file a snapshot
    /// has.
    pub node: BTreeMap<PathBuf, OnNode>,
    /// The snapshots to draw from, newest first (one with `--from`).
    pub snapshots: Vec<SnapshotFiles>,
}

impl Observed {
    fn on_node(&self, path: &Path) -> &OnNode {
        self.node.get(path).unwrap_or(&OnNode::Missing)
    }

    fn present(&self, path: &Path) -> Option<&[u8]> {
        match self.on_node(path) {
            OnNode::Present(d) => Some(d),
            _ => None,
        }
    }

    /// Whether the node should have `path`: the newest snapshot has it (see [`Self::copies`]).
    fn expected(&self, path: &Path) -> bool {
        self.snapshots
            .first()
            .is_some_and(|newest| newest.files.contains_key(path))
    }

    /// The snapshots that have `path`, newest first, with their copy — only when the newest
    /// snapshot has it: the newest says which files the node should have (a file removed on
    /// purpose and recorded with `snapshot --force` is not brought back from an older one);
    /// older generations only supply content the newest's copy cannot (expired, another CA).
    fn copies<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = (&'a str, &'a [u8], u32)> {
        let expected = self.expected(path);
        self.snapshots
            .iter()
            .filter(move |_| expected)
            .filter_map(move |s| {
                s.files
                    .get(path)
                    .map(|(d, mode)| (s.name.as_str(), d.as_slice(), *mode))
            })
    }
}

/// The files of the node the plan reasons about, by role.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The pki dir.
    pub pki: PathBuf,
    /// The kubeconfig dir.
    pub kubeconfigs: PathBuf,
    /// The manifests dir.
    pub manifests: PathBuf,
}

impl Layout {
    /// The layout of a node's paths.
    pub fn of(paths: &NodePaths) -> Layout {
        Layout {
            pki: paths.pki.clone(),
            kubeconfigs: paths.kubeconfigs.clone(),
            manifests: paths.manifests.clone(),
        }
    }

    fn ca_files(&self, spec: CaSpec) -> (PathBuf, PathBuf) {
        (
            self.pki.join(format!("{}.crt", spec.base)),
            self.pki.join(format!("{}.key", spec.base)),
        )
    }

    fn sa(&self) -> (PathBuf, PathBuf) {
        (self.pki.join("sa.key"), self.pki.join("sa.pub"))
    }

    /// Where a leaf (kubeadm's name, or `kubelet.conf`) lives.
    pub fn leaf_place(&self, name: &str) -> Option<Place> {
        if name == kubeadm::KUBELET_CONF {
            return Some(Place::Kubeconfig(self.kubeconfigs.join(name)));
        }
        let spec = kubeadm::LEAVES.iter().find(|l| l.name == name)?;
        Some(match spec.file {
            LeafFile::PemPair(base) => Place::Pair {
                cert: self.pki.join(format!("{base}.crt")),
                key: self.pki.join(format!("{base}.key")),
            },
            LeafFile::Kubeconfig(file) => Place::Kubeconfig(self.kubeconfigs.join(file)),
        })
    }

    fn etcd_manifest(&self) -> PathBuf {
        self.manifests.join("etcd.yaml")
    }
}

/// Every node file the plan asks about by name (the snapshots add theirs).
pub fn wanted_paths(layout: &Layout) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for spec in kubeadm::CAS {
        let (c, k) = layout.ca_files(spec);
        out.extend([c, k]);
    }
    let (k, p) = layout.sa();
    out.extend([k, p]);
    for name in kubeadm::LEAVES
        .iter()
        .map(|l| l.name)
        .chain([kubeadm::KUBELET_CONF])
    {
        if let Some(place) = layout.leaf_place(name) {
            out.extend(place.files().into_iter().map(Path::to_path_buf));
        }
    }
    for m in KUBEADM_MANIFESTS {
        out.push(layout.manifests.join(m));
    }
    out
}

/// kubeadm's four static-pod manifests.
pub const KUBEADM_MANIFESTS: [&str; 4] = [
    "etcd.yaml",
    "kube-apiserver.yaml",
    "kube-controller-manager.yaml",
    "kube-scheduler.yaml",
];

/// Where one leaf lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A `.crt` + `.key` pair.
    Pair {
        /// The certificate.
        cert: PathBuf,
        /// Its key.
        key: PathBuf,
    },
    /// A kubeconfig with embedded credentials.
    Kubeconfig(PathBuf),
}

impl Place {
    /// Its files.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Place::Pair { cert, key } => vec![cert, key],
            Place::Kubeconfig(p) => vec![p],
        }
    }
}

/// What a re-issued certificate copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// A certificate (surviving, or a snapshot's): subject, SANs, usages copied faithfully.
    Cert {
        /// Its DER.
        der: Vec<u8>,
        /// Where it came from, for the report.
        from: String,
    },
    /// A kubeconfig (a snapshot's copy): its text kept, credentials and CA data replaced.
    Kubeconfig {
        /// The text.
        text: String,
        /// Its embedded certificate (DER), the template of the new one.
        der: Vec<u8>,
        /// Where it came from.
        from: String,
    },
    /// Nothing left of it anywhere: kubeadm's profile, from the node's facts.
    Profile,
}

/// One step of a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Files copied back byte for byte from a snapshot.
    Restore {
        /// kubeadm's name of what they are (or the file name).
        name: String,
        /// (path, bytes, mode).
        files: Vec<(PathBuf, Vec<u8>, u32)>,
        /// The snapshot.
        from: String,
    },
    /// `sa.pub` written again from `sa.key` (its public half: nothing invented).
    DerivePublic {
        /// `sa.pub`.
        path: PathBuf,
        /// Its PEM.
        data: Vec<u8>,
    },
    /// A new CA (or `sa` key pair) generated here, because the operator asked (`--new-ca`).
    NewCa {
        /// `ca`, `etcd-ca`, `front-proxy-ca` or `sa`.
        name: String,
    },
    /// A certificate re-issued with a new key, signed by its CA.
    Reissue {
        /// kubeadm's name.
        name: String,
        /// Where it goes.
        place: Place,
        /// The CA that signs it.
        ca: &'static str,
        /// What it copies.
        template: Template,
        /// Why it is re-issued rather than restored.
        why: String,
    },
}

impl Action {
    /// kubeadm's name of what this action recovers.
    pub fn name(&self) -> &str {
        match self {
            Action::Restore { name, .. }
            | Action::NewCa { name }
            | Action::Reissue { name, .. } => name,
            Action::DerivePublic { .. } => "sa",
        }
    }
}

/// A cluster-level secret gone from the node and every snapshot: the run stops, nothing is
/// written, and the procedure is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// `ca`, `etcd-ca`, `front-proxy-ca` or `sa`.
    pub name: String,
    /// What exactly is gone.
    pub what: String,
}

/// A file nothing here can bring back, and what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrecoverable {
    /// The file.
    pub path: PathBuf,
    /// Why, and what to do.
    pub why: String,
}

/// The plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// What will be done, CAs and `sa` first.
    pub actions: Vec<Action>,
    /// Secrets gone everywhere (the run stops when any).
    pub stops: Vec<Stop>,
    /// Bad input: the run stops, nothing changes.
    pub refusals: Vec<String>,
    /// Files left missing.
    pub unrecoverable: Vec<Unrecoverable>,
    /// Things the operator should know.
    pub notes: Vec<String>,
}

impl Plan {
    /// Nothing to do at all.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
            && self.stops.is_empty()
            && self.refusals.is_empty()
            && self.unrecoverable.is_empty()
    }
}

/// A CA as it will be after the first phase.
#[derive(Debug, Clone)]
pub struct EffectiveCa {
    /// Every certificate of its file (a rotation leaves several).
    pub bundle: Vec<CertFacts>,
    /// Its file's bytes (what kubeconfigs get as `certificate-authority-data` for `ca`).
    pub bundle_pem: Vec<u8>,
    /// Its key's PEM (none: externally managed).
    pub key_pem: Option<Vec<u8>>,
    /// Generated by this run (`--new-ca`): every leaf it signs is re-issued.
    pub new: bool,
}

impl EffectiveCa {
    /// True when `cert` was signed by a certificate of this CA's file.
    pub fn signed(&self, cert: &CertFacts) -> bool {
        self.bundle.iter().any(|ca| cert.is_signed_by(ca))
    }
}

/// The first phase's result: its actions, and the CAs the second phase signs with (a CA that
/// `--new-ca` generates is added by the caller once generated).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// CA and `sa` actions, stops, refusals, notes.
    pub plan: Plan,
    /// The CAs as they will be.
    pub cas: BTreeMap<&'static str, EffectiveCa>,
    /// Whether the node runs etcd itself (stacked): then etcd's CA and leaves are expected.
    pub stacked_etcd: bool,
}

/// The leaves kubeadm signs with `spec`, as (name, place).
fn leaves_of(layout: &Layout, spec: CaSpec) -> Vec<(&'static str, Place)> {
    kubeadm::LEAVES
        .iter()
        .filter(|l| l.ca == spec)
        .map(|l| l.name)
        .chain((spec == kubeadm::CA).then_some(kubeadm::KUBELET_CONF))
        .filter_map(|n| Some((n, layout.leaf_place(n)?)))
        .collect()
}

/// The certificate a place holds on the node, if readable.
fn node_cert(observed: &Observed, place: &Place) -> Option<CertFacts> {
    match place {
        Place::Pair { cert, .. } => first_cert(observed.present(cert)?),
        Place::Kubeconfig(path) => {
            let text = std::str::from_utf8(observed.present(path)?).ok()?;
            match kubeconfig::credentials(text, path).ok()?.client {
                ClientCert::Embedded { cert_pem, .. } => first_cert(&cert_pem),
                ClientCert::Files { .. } => None,
            }
        }
    }
}

fn first_cert(data: &[u8]) -> Option<CertFacts> {
    parse_cert_bundle(data).ok()?.into_iter().next()
}

/// The first phase: the three CAs and `sa`.
pub fn plan_secrets(layout: &Layout, observed: &Observed, new_cas: &BTreeSet<String>) -> Secrets {
    let mut out = Secrets::default();
    // etcd runs here with TLS (kubeadm ≥ 1.10, stacked): its own certificates or its CA's key
    // exist or existed, or its manifest names them. Not `etcd/ca.crt` alone: kubeadm's external
    // etcd puts that (and apiserver-etcd-client) on the node too; and an etcd manifest alone
    // may be plain-HTTP etcd (kubeadm ≤ 1.9).
    let etcd_files = kubeadm::LOCAL_ETCD_FILES.map(|f| layout.pki.join(f));
    let manifest = layout.etcd_manifest();
    let uses_tls = kubeadm::etcd_manifest_uses_tls;
    out.stacked_etcd = etcd_files
        .iter()
        .any(|f| observed.present(f).is_some() || observed.copies(f).next().is_some())
        || observed.present(&manifest).is_some_and(uses_tls)
        || observed.copies(&manifest).any(|(_, d, _)| uses_tls(d));
    for spec in kubeadm::CAS {
        let needed = spec != kubeadm::ETCD_CA || out.stacked_etcd;
        plan_ca(layout, observed, spec, needed, new_cas, &mut out);
    }
    plan_sa(layout, observed, new_cas, &mut out.plan);
    for name in new_cas {
        let known = kubeadm::CAS.iter().any(|c| c.name == name) || name == "sa";
        if !known {
            out.plan.refusals.push(format!(
                "--new-ca {name}: unknown; one of ca, etcd-ca, front-proxy-ca, sa"
            ));
        }
    }
    out
}

fn plan_ca(
    layout: &Layout,
    observed: &Observed,
    spec: CaSpec,
    needed: bool,
    new_cas: &BTreeSet<String>,
    out: &mut Secrets,
) {
    let (cert_path, key_path) = layout.ca_files(spec);
    let plan = &mut out.plan;
    let asked_new = new_cas.contains(spec.name);
    for p in [&cert_path, &key_path] {
        if let OnNode::Unreadable(why) = observed.on_node(p) {
            plan.refusals.push(why.clone());
            return;
        }
    }
    let node_bundle = match observed.present(&cert_path).map(ca_bundle) {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            plan.refusals.push(format!("{}: {e}", cert_path.display()));
            return;
        }
        None => None,
    };
    let node_key = observed.present(&key_path).map(<[u8]>::to_vec);
    let refuse_new = |plan: &mut Plan, state: &str| {
        if asked_new {
            plan.refusals.push(format!(
                "--new-ca {}: {state}; a new CA would replace one that works (and force every \
                 node of the cluster to re-join)",
                spec.name
            ));
        }
    };
    // the leaves that survive on the node and name this CA: a snapshot's CA must have signed them
    let survivors: Vec<CertFacts> = leaves_of(layout, spec)
        .iter()
        .filter_map(|(_, place)| node_cert(observed, place))
        .collect();
    let effective =
        |bundle: Vec<CertFacts>, bundle_pem: Vec<u8>, key_pem: Option<Vec<u8>>| EffectiveCa {
            bundle,
            bundle_pem,
            key_pem,
            new: false,
        };
    match (node_bundle, node_key) {
        (Some(bundle), Some(key)) => {
            refuse_new(plan, "it is on the node");
            let pem = observed.present(&cert_path).unwrap_or_default().to_vec();
            let Err(why) = ca_key_match(&key, &bundle, &key_path, &cert_path) else {
                out.cas.insert(spec.name, effective(bundle, pem, Some(key)));
                return;
            };
            // a key there but damaged (truncated, another cluster's): the newest snapshot's
            // copy that is the certificate's key replaces it; the bad one goes to the backup
            let found = observed
                .copies(&key_path)
                .find(|(_, copy, _)| key_matches_bundle(copy, &bundle));
            match found {
                Some((from, good, mode)) => {
                    plan.notes.push(format!(
                        "{why}: replaced by the copy of snapshot {from}, which matches (the \
                         damaged file is kept in the backup)"
                    ));
                    plan.actions
                        .push(restore_one(spec.name, &key_path, good, mode, from));
                    out.cas
                        .insert(spec.name, effective(bundle, pem, Some(good.to_vec())));
                }
                None => plan.refusals.push(format!(
                    "{why}; no snapshot has a copy that matches: copy {} from another \
                     control-plane node",
                    key_path.display()
                )),
            }
        }
        (Some(bundle), None) => {
            refuse_new(plan, "its certificate is on the node");
            let pem = observed.present(&cert_path).unwrap_or_default().to_vec();
            let found = observed
                .copies(&key_path)
                .find(|(_, key, _)| key_matches_bundle(key, &bundle));
            if let Some((from, key, mode)) = found {
                plan.actions
                    .push(restore_one(spec.name, &key_path, key, mode, from));
                out.cas
                    .insert(spec.name, effective(bundle, pem, Some(key.to_vec())));
            } else if observed.copies(&key_path).next().is_some() {
                plan.refusals.push(format!(
                    "{} is missing and no snapshot's copy matches {} (the CA changed since the \
                     snapshots): copy the key from another control-plane node",
                    key_path.display(),
                    cert_path.display()
                ));
            } else {
                plan.notes.push(format!(
                    "{}: no key, on the node or in any snapshot: treated as externally managed \
                     (if it was not, copy {} from another control-plane node)",
                    spec.name,
                    key_path.display()
                ));
                out.cas.insert(spec.name, effective(bundle, pem, None));
            }
        }
        (None, Some(key)) => {
            refuse_new(plan, "its key is on the node");
            let found = observed.copies(&cert_path).find_map(|(from, data, mode)| {
                let bundle = ca_bundle(data).ok()?;
                key_matches_bundle(&key, &bundle).then_some((from, data, mode, bundle))
            });
            match found {
                Some((from, data, mode, bundle)) => {
                    plan.actions
                        .push(restore_one(spec.name, &cert_path, data, mode, from));
                    out.cas
                        .insert(spec.name, effective(bundle, data.to_vec(), Some(key)));
                }
                None => plan.stops.push(Stop {
                    name: spec.name.to_string(),
                    what: format!(
                        "{} is gone from the node and from every snapshot (its key {} \
                         survives)",
                        cert_path.display(),
                        key_path.display()
                    ),
                }),
            }
        }
        (None, None) => {
            // the newest snapshot whose pair is whole and signed what survives
            let mut stale = None;
            let found = observed.snapshots.iter().find_map(|s| {
                if !observed.expected(&cert_path) {
                    return None;
                }
                let (cert, cert_mode) = s.files.get(&cert_path)?;
                let bundle = ca_bundle(cert).ok()?;
                let key = s
                    .files
                    .get(&key_path)
                    .filter(|_| observed.expected(&key_path));
                if let Some((key, _)) = key
                    && !key_matches_bundle(key, &bundle)
                {
                    return None;
                }
                if survivors
                    .iter()
                    .any(|leaf| !bundle.iter().any(|ca| leaf.is_signed_by(ca)))
                {
                    stale = Some(s.name.clone());
                    return None;
                }
                Some((s.name.as_str(), cert, *cert_mode, key, bundle))
            });
            match found {
                Some((from, cert, cert_mode, key, bundle)) => {
                    refuse_new(plan, "a snapshot has it");
                    let mut files = vec![(cert_path.clone(), cert.clone(), cert_mode)];
                    if let Some((key, mode)) = key {
                        files.push((key_path.clone(), key.clone(), *mode));
                    } else {
                        plan.notes.push(format!(
                            "{}: the snapshot has no key: it stays externally managed",
                            spec.name
                        ));
                    }
                    plan.actions.push(Action::Restore {
                        name: spec.name.to_string(),
                        files,
                        from: from.to_string(),
                    });
                    out.cas.insert(
                        spec.name,
                        effective(bundle, cert.clone(), key.map(|(k, _)| k.clone())),
                    );
                }
                None if !needed => {}
                None if asked_new => plan.actions.push(Action::NewCa {
                    name: spec.name.to_string(),
                }),
                None => plan.stops.push(Stop {
                    name: spec.name.to_string(),
                    what: match stale {
                        Some(snap) => format!(
                            "{} and its key are gone from the node; the snapshot {snap} has a \
                             CA that did not sign the certificates still on the node (the CA \
                             changed since)",
                            cert_path.display()
                        ),
                        None => format!(
                            "{} and {} are gone from the node and from every snapshot",
                            cert_path.display(),
                            key_path.display()
                        ),
                    },
                }),
            }
        }
    }
}

/// `sa.pub` of a key: its public half as PEM `PUBLIC KEY`, as kubeadm writes it.
pub fn public_pem(key_pem: &[u8]) -> Result<Vec<u8>, String> {
    let key = keys::parse_private_key(key_pem)?;
    Ok(pem::encode(
        "PUBLIC KEY",
        &rcgen::PublicKeyData::subject_public_key_info(&key.pair),
    )
    .into_bytes())
}

fn plan_sa(layout: &Layout, observed: &Observed, new_cas: &BTreeSet<String>, plan: &mut Plan) {
    let (key_path, pub_path) = layout.sa();
    for p in [&key_path, &pub_path] {
        if let OnNode::Unreadable(why) = observed.on_node(p) {
            plan.refusals.push(why.clone());
            return;
        }
    }
    let asked_new = new_cas.contains("sa");
    let node_pub = observed.present(&pub_path);
    let key = match observed.present(&key_path) {
        Some(key) => {
            if asked_new {
                plan.refusals.push(format!(
                    "--new-ca sa: {} is on the node; a new one would invalidate every \
                     service-account token of the cluster",
                    key_path.display()
                ));
            }
            if let Err(e) = keys::parse_private_key(key) {
                plan.refusals.push(format!("{}: {e}", key_path.display()));
                return;
            }
            key.to_vec()
        }
        None => {
            let found = observed.copies(&key_path).find(|(_, key, _)| {
                keys::parse_private_key(key).is_ok()
                    && node_pub.is_none_or(|p| public_matches(p, key))
            });
            match found {
                Some((from, key, mode)) => {
                    let mut files = vec![(key_path.clone(), key.to_vec(), mode)];
                    // sa.pub from the same snapshot, when it is missing too and matches
                    if node_pub.is_none()
                        && observed.expected(&pub_path)
                        && let Some(s) = observed.snapshots.iter().find(|s| s.name == from)
                        && let Some((p, pmode)) = s.files.get(&pub_path)
                        && public_matches(p, key)
                    {
                        files.push((pub_path.clone(), p.clone(), *pmode));
                    }
                    let restored_pub = files.len() == 2;
                    plan.actions.push(Action::Restore {
                        name: "sa".into(),
                        files,
                        from: from.to_string(),
                    });
                    if restored_pub {
                        return;
                    }
                    key.to_vec()
                }
                None if asked_new => {
                    plan.actions.push(Action::NewCa { name: "sa".into() });
                    return;
                }
                None => {
                    plan.stops.push(Stop {
                        name: "sa".into(),
                        what: format!(
                            "{} is gone from the node and from every snapshot",
                            key_path.display()
                        ),
                    });
                    return;
                }
            }
        }
    };
    // sa.pub: kept when it matches, else derived from the key (nothing invented)
    match node_pub {
        Some(p) if public_matches(p, &key) => {}
        Some(_) => plan.refusals.push(format!(
            "{} does not match {}",
            pub_path.display(),
            key_path.display()
        )),
        None => match public_pem(&key) {
            Ok(data) => {
                // byte-identical from a snapshot when one has this very public key
                let copy = observed
                    .copies(&pub_path)
                    .find(|(_, p, _)| public_matches(p, &key) && *p == data.as_slice());
                match copy {
                    Some((from, p, mode)) => plan
                        .actions
                        .push(restore_one("sa", &pub_path, p, mode, from)),
                    None => plan.actions.push(Action::DerivePublic {
                        path: pub_path.clone(),
                        data,
                    }),
                }
            }
            Err(e) => plan.refusals.push(format!("{}: {e}", key_path.display())),
        },
    }
}

/// What the second phase needs besides the observations.
#[derive(Debug, Clone)]
pub struct LeafOptions {
    /// The instant of the recovery: a copy expired by then is re-issued, not restored.
    pub now: OffsetDateTime,
    /// Restore a static-pod manifest whose Kubernetes version differs from the surviving
    /// manifests' (with a warning) instead of leaving it out (see [`version_skew`]).
    pub allow_version_skew: bool,
}

/// Why the snapshot copy `data` of the manifest `path` must not come back as it is: it runs
/// another Kubernetes version (its image tag) than a kubeadm manifest still on the node — a
/// snapshot from before a `kubeadm upgrade`. Restored, it would start that component at the
/// old version beside upgraded ones (outside Kubernetes' version-skew policy when it is the
/// API server), with the old version's flags. `None` when the versions agree, or either side
/// has no version (etcd, a non-kubeadm pod, nothing left to compare with).
pub fn version_skew(
    layout: &Layout,
    observed: &Observed,
    path: &Path,
    data: &[u8],
) -> Option<String> {
    let version_of = |bytes: &[u8], p: &Path| {
        let text = std::str::from_utf8(bytes).ok()?;
        let pod = crate::node::manifest::parse(text, p).ok()?;
        pod.kubernetes_version().map(str::to_string)
    };
    let restored = version_of(data, path)?;
    let surviving: Vec<String> = KUBEADM_MANIFESTS
        .iter()
        .map(|m| layout.manifests.join(m))
        .filter(|p| p != path)
        .filter_map(|p| {
            let version = version_of(observed.present(&p)?, &p)?;
            (version != restored).then(|| format!("{} runs {version}", p.display()))
        })
        .collect();
    (!surviving.is_empty()).then(|| {
        format!(
            "the snapshot's copy runs {restored}, but {} (a `kubeadm upgrade` since the \
             snapshot?)",
            surviving.join(", ")
        )
    })
}

/// True when `cert` + `key_pem` make a usable pair signed by `ca` and valid at `now`.
fn usable(cert: &CertFacts, key_pem: &[u8], ca: &EffectiveCa, now: OffsetDateTime) -> bool {
    !ca.new
        && cert.not_after > now
        && ca.signed(cert)
        && keys::parse_private_key(key_pem)
            .is_ok_and(|k| keys::matches_spki(&k.pair, &cert.spki_der))
}

/// The embedded cert, key and CA data of a kubeconfig text.
fn kubeconfig_parts(text: &str, path: &Path) -> Option<(CertFacts, Vec<u8>, Option<Vec<u8>>)> {
    let creds = kubeconfig::credentials(text, path).ok()?;
    match creds.client {
        ClientCert::Embedded {
            cert_pem,
            key_pem: Some(key),
        } => Some((first_cert(&cert_pem)?, key, creds.ca_pem)),
        _ => None,
    }
}

fn same_certs(a: &[u8], b: &[u8]) -> bool {
    match (parse_cert_bundle(a), parse_cert_bundle(b)) {
        (Ok(a), Ok(b)) => a.iter().map(|c| &c.der).eq(b.iter().map(|c| &c.der)),
        _ => false,
    }
}

/// The second phase: every leaf and kubeconfig, then every other file a snapshot has.
pub fn plan_leaves(
    layout: &Layout,
    observed: &Observed,
    secrets: &Secrets,
    options: &LeafOptions,
    plan: &mut Plan,
) {
    let now = options.now;
    let mut handled: BTreeSet<PathBuf> = BTreeSet::new();
    for spec in kubeadm::CAS {
        let (c, k) = layout.ca_files(spec);
        handled.extend([c, k]);
    }
    let (k, p) = layout.sa();
    handled.extend([k, p]);
    let names = kubeadm::LEAVES
        .iter()
        .map(|l| (l.name, l.ca, l.etcd, l.optional))
        .chain([(kubeadm::KUBELET_CONF, kubeadm::CA, false, false)]);
    let fresh = observed.snapshots.is_empty();
    for (name, ca_spec, etcd, optional) in names {
        let Some(place) = layout.leaf_place(name) else {
            continue;
        };
        let anywhere = place
            .files()
            .iter()
            .any(|f| observed.present(f).is_some() || observed.copies(f).next().is_some());
        if etcd && !secrets.stacked_etcd {
            continue;
        }
        if optional && !anywhere {
            continue; // super-admin.conf exists only on the node where `kubeadm init` ran
        }
        if name == kubeadm::KUBELET_CONF && !anywhere && !fresh {
            continue;
        }
        // (skipped ones above — external etcd's client certificate — are restored verbatim
        // below when the newest snapshot has them)
        handled.extend(place.files().into_iter().map(Path::to_path_buf));
        if let Some(why) = place
            .files()
            .iter()
            .find_map(|f| match observed.on_node(f) {
                OnNode::Unreadable(why) => Some(why.clone()),
                _ => None,
            })
        {
            plan.refusals.push(why);
            continue;
        }
        let Some(ca) = secrets.cas.get(ca_spec.name) else {
            // its CA is gone and the run stops (a stop was recorded), or not needed here
            continue;
        };
        match &place {
            Place::Pair { cert, key } => {
                plan_pair(name, &place, cert, key, ca_spec, ca, observed, now, plan)
            }
            Place::Kubeconfig(path) => {
                plan_kubeconfig(name, &place, path, ca_spec, ca, observed, now, plan)
            }
        }
    }
    // every other file a snapshot has (manifests, kubeadm's config…), verbatim
    let others: BTreeMap<&Path, (&str, &[u8], u32)> = observed
        .snapshots
        .first()
        .map(|newest| {
            newest
                .files
                .iter()
                .map(|(p, (d, mode))| (p.as_path(), (newest.name.as_str(), d.as_slice(), *mode)))
                .collect()
        })
        .unwrap_or_default();
    for (path, (from, data, mode)) in others {
        if handled.contains(path) {
            continue;
        }
        match observed.on_node(path) {
            OnNode::Missing => {
                let skew = (path.parent() == Some(layout.manifests.as_path()))
                    .then(|| version_skew(layout, observed, path, data))
                    .flatten();
                match skew {
                    Some(why) if !options.allow_version_skew => {
                        plan.unrecoverable.push(Unrecoverable {
                            path: path.to_path_buf(),
                            why: format!(
                                "not restored: {why}; recreate it at the surviving version with \
                                 `kubeadm init phase {} --config <your kubeadm config>`, or \
                                 restore the old one anyway with `kube-cert-renewer recover \
                                 --allow-version-skew`",
                                init_phase(
                                    &path
                                        .file_name()
                                        .map(|n| n.to_string_lossy().into_owned())
                                        .unwrap_or_default()
                                )
                            ),
                        });
                        continue;
                    }
                    Some(why) => plan.notes.push(format!(
                        "WARNING: {} restored at another version (--allow-version-skew): {why}",
                        path.display()
                    )),
                    None => {}
                }
                plan.actions.push(Action::Restore {
                    name: path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    files: vec![(path.to_path_buf(), data.to_vec(), mode)],
                    from: from.to_string(),
                });
            }
            OnNode::Unreadable(why) => plan.refusals.push(why.clone()),
            OnNode::Present(_) => {}
        }
    }
    // kubeadm's manifests that nothing can bring back — when this node has static pods at all
    // (some kubeadm manifest on the node or in a snapshot: a tree without any is not one whose
    // manifests went missing)
    let had_manifests = KUBEADM_MANIFESTS.iter().any(|m| {
        let path = layout.manifests.join(m);
        observed.present(&path).is_some() || observed.copies(&path).next().is_some()
    });
    for m in KUBEADM_MANIFESTS.iter().filter(|_| had_manifests) {
        let path = layout.manifests.join(m);
        if *m == "etcd.yaml" && !secrets.stacked_etcd {
            continue;
        }
        let coming = plan.actions.iter().any(|a| match a {
            Action::Restore { files, .. } => files.iter().any(|(p, _, _)| *p == path),
            _ => false,
        });
        let said = plan.unrecoverable.iter().any(|u| u.path == path);
        if observed.present(&path).is_none() && !coming && !said {
            let phase = init_phase(m);
            plan.unrecoverable.push(Unrecoverable {
                path,
                why: format!(
                    "no snapshot has it; recreate it with `kubeadm init phase {phase} --config \
                     <your kubeadm config>` (the kubelet starts it by itself)"
                ),
            });
        }
    }
}

/// The `kubeadm init phase` that writes kubeadm's manifest `name` (`kube-apiserver.yaml` →
/// `control-plane apiserver`).
fn init_phase(name: &str) -> &'static str {
    match name {
        "etcd.yaml" => "etcd local",
        "kube-apiserver.yaml" => "control-plane apiserver",
        "kube-controller-manager.yaml" => "control-plane controller-manager",
        "kube-scheduler.yaml" => "control-plane scheduler",
        _ => "control-plane <component>",
    }
}

/// Restoring one file of `name` from the snapshot `from`.
fn restore_one(name: &str, path: &Path, data: &[u8], mode: u32, from: &str) -> Action {
    Action::Restore {
        name: name.to_string(),
        files: vec![(path.to_path_buf(), data.to_vec(), mode)],
        from: from.to_string(),
    }
}

/// Plans a re-issue by `ca`, or — when that CA has no key here — records the file as one only
/// a snapshot could have brought back.
fn push_reissue(
    plan: &mut Plan,
    name: &str,
    place: &Place,
    ca_spec: CaSpec,
    ca: &EffectiveCa,
    template: Template,
    why: String,
) {
    if ca.key_pem.is_none() {
        let path = place
            .files()
            .first()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        plan.unrecoverable.push(Unrecoverable {
            path,
            why: format!(
                "{name}: its CA {} is externally managed (no key here) and no snapshot has a \
                 usable copy: get it from whoever manages that CA",
                ca_spec.name
            ),
        });
        return;
    }
    plan.actions.push(Action::Reissue {
        name: name.to_string(),
        place: place.clone(),
        ca: ca_spec.name,
        template,
        why,
    });
}

#[allow(clippy::too_many_arguments)]
fn plan_pair(
    name: &str,
    place: &Place,
    cert_path: &Path,
    key_path: &Path,
    ca_spec: CaSpec,
    ca: &EffectiveCa,
    observed: &Observed,
    now: OffsetDateTime,
    plan: &mut Plan,
) {
    let node_cert = observed.present(cert_path).map(parse_cert_bundle);
    let node_key = observed.present(key_path);
    let node_cert = match node_cert {
        Some(Ok(mut certs)) => Some(certs.swap_remove(0)),
        Some(Err(e)) => {
            plan.refusals.push(format!("{}: {e}", cert_path.display()));
            return;
        }
        None => None,
    };
    let reissue = |plan: &mut Plan, template: Template, why: String| {
        push_reissue(plan, name, place, ca_spec, ca, template, why)
    };
    let snapshot_template = || {
        observed.copies(cert_path).find_map(|(from, data, _)| {
            Some(Template::Cert {
                der: first_cert(data)?.der,
                from: format!("snapshot {from}"),
            })
        })
    };
    match (node_cert, node_key) {
        (Some(cert), Some(_)) if ca.new => reissue(
            plan,
            Template::Cert {
                der: cert.der,
                from: "the node".into(),
            },
            format!("signed by the old {}", ca_spec.name),
        ),
        (Some(_), Some(_)) => {}
        (Some(cert), None) => {
            let copy = observed
                .copies(key_path)
                .find(|(_, key, _)| usable(&cert, key, ca, now));
            match copy {
                Some((from, key, mode)) => plan
                    .actions
                    .push(restore_one(name, key_path, key, mode, from)),
                None => reissue(
                    plan,
                    Template::Cert {
                        der: cert.der,
                        from: "the node".into(),
                    },
                    format!(
                        "{} is missing and no snapshot has it for this certificate",
                        key_path.display()
                    ),
                ),
            }
        }
        (None, Some(key)) => {
            let copy = observed
                .copies(cert_path)
                .find(|(_, data, _)| first_cert(data).is_some_and(|c| usable(&c, key, ca, now)));
            match copy {
                Some((from, data, mode)) => plan
                    .actions
                    .push(restore_one(name, cert_path, data, mode, from)),
                None => reissue(
                    plan,
                    snapshot_template().unwrap_or(Template::Profile),
                    format!(
                        "{} is missing and no snapshot has a valid copy for its key",
                        cert_path.display()
                    ),
                ),
            }
        }
        (None, None) => {
            let whole = observed.snapshots.iter().find_map(|s| {
                if !(observed.expected(cert_path) && observed.expected(key_path)) {
                    return None;
                }
                let (cert, cmode) = s.files.get(cert_path)?;
                let (key, kmode) = s.files.get(key_path)?;
                let facts = first_cert(cert)?;
                usable(&facts, key, ca, now).then(|| Action::Restore {
                    name: name.to_string(),
                    files: vec![
                        (cert_path.to_path_buf(), cert.clone(), *cmode),
                        (key_path.to_path_buf(), key.clone(), *kmode),
                    ],
                    from: s.name.clone(),
                })
            });
            match whole {
                Some(action) => plan.actions.push(action),
                None => {
                    let template = snapshot_template();
                    let why = if template.is_some() {
                        "missing; every snapshot's copy is expired or signed by another CA"
                    } else {
                        "missing, and in no snapshot"
                    };
                    reissue(plan, template.unwrap_or(Template::Profile), why.into())
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_kubeconfig(
    name: &str,
    place: &Place,
    path: &Path,
    ca_spec: CaSpec,
    ca: &EffectiveCa,
    observed: &Observed,
    now: OffsetDateTime,
    plan: &mut Plan,
) {
    let reissue = |plan: &mut Plan, template: Template, why: String| {
        push_reissue(plan, name, place, ca_spec, ca, template, why)
    };
    if let Some(data) = observed.present(path) {
        if ca.new {
            let text = String::from_utf8_lossy(data).into_owned();
            match kubeconfig_parts(&text, path) {
                Some((cert, _, _)) => reissue(
                    plan,
                    Template::Kubeconfig {
                        der: cert.der,
                        text,
                        from: "the node".into(),
                    },
                    format!("signed by the old {}", ca_spec.name),
                ),
                None => plan.notes.push(format!(
                    "{}: not re-issued for the new {}: its credentials are not embedded",
                    path.display(),
                    ca_spec.name
                )),
            }
        }
        return;
    }
    let mut template = None;
    for (from, data, mode) in observed.copies(path) {
        let Ok(text) = std::str::from_utf8(data) else {
            continue;
        };
        let Ok(creds) = kubeconfig::credentials(text, path) else {
            continue;
        };
        if let ClientCert::Files { .. } = creds.client {
            // kubelet.conf pointing at the kubelet's rotated certificate: no secret inside
            plan.actions.push(restore_one(name, path, data, mode, from));
            return;
        }
        let Some((cert, key, ca_pem)) = kubeconfig_parts(text, path) else {
            continue;
        };
        let ca_synced = ca_pem.is_some_and(|p| same_certs(&p, &ca.bundle_pem));
        if usable(&cert, &key, ca, now) && ca_synced {
            plan.actions.push(restore_one(name, path, data, mode, from));
            return;
        }
        if template.is_none() {
            template = Some(Template::Kubeconfig {
                text: text.to_string(),
                der: cert.der,
                from: format!("snapshot {from}"),
            });
        }
    }
    let why = if template.is_some() {
        "missing; every snapshot's copy is expired or from another CA"
    } else {
        "missing, and in no snapshot"
    };
    reissue(plan, template.unwrap_or(Template::Profile), why.into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::nodegen::{NodeSpec, generate};
    use crate::pki::keys::KeyAlgorithm;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    /// A generated node (ECDSA keys: fast), its layout, and every file's bytes.
    fn node(days_left: i64) -> (tempfile::TempDir, Layout, BTreeMap<PathBuf, Vec<u8>>) {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = NodeSpec::new(now(), days_left);
        spec.key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        let k = tmp.path().join("k");
        generate(&k, &spec).unwrap();
        let layout = Layout {
            pki: k.join("pki"),
            kubeconfigs: k.clone(),
            manifests: k.join("manifests"),
        };
        let mut files = BTreeMap::new();
        for dir in [
            k.clone(),
            k.join("pki"),
            k.join("pki/etcd"),
            k.join("manifests"),
        ] {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                if e.path().is_file() {
                    files.insert(e.path(), std::fs::read(e.path()).unwrap());
                }
            }
        }
        (tmp, layout, files)
    }

    /// What the plan sees when `gone` were deleted after a snapshot of `files`.
    fn observed(files: &BTreeMap<PathBuf, Vec<u8>>, gone: &[PathBuf], snapshot: bool) -> Observed {
        let node = files
            .iter()
            .map(|(p, d)| {
                let state = if gone.contains(p) {
                    OnNode::Missing
                } else {
                    OnNode::Present(d.clone())
                };
                (p.clone(), state)
            })
            .collect();
        let snapshots = if snapshot {
            vec![SnapshotFiles {
                name: "s1".into(),
                files: files
                    .iter()
                    .map(|(p, d)| (p.clone(), (d.clone(), 0o600)))
                    .collect(),
            }]
        } else {
            Vec::new()
        };
        Observed { node, snapshots }
    }

    fn full_plan(layout: &Layout, observed: &Observed, new_cas: &[&str]) -> (Secrets, Plan) {
        full_plan_with(layout, observed, new_cas, false)
    }

    fn full_plan_with(
        layout: &Layout,
        observed: &Observed,
        new_cas: &[&str],
        allow_version_skew: bool,
    ) -> (Secrets, Plan) {
        let new: BTreeSet<String> = new_cas.iter().map(|s| s.to_string()).collect();
        let mut secrets = plan_secrets(layout, observed, &new);
        let mut plan = std::mem::take(&mut secrets.plan);
        if plan.stops.is_empty() && plan.refusals.is_empty() {
            plan_leaves(
                layout,
                observed,
                &secrets,
                &LeafOptions {
                    now: now(),
                    allow_version_skew,
                },
                &mut plan,
            );
        }
        (secrets, plan)
    }

    fn restored(plan: &Plan) -> Vec<&Path> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Restore { files, .. } => Some(files),
                _ => None,
            })
            .flatten()
            .map(|(p, _, _)| p.as_path())
            .collect()
    }

    fn reissued(plan: &Plan) -> Vec<(&str, &Template)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Reissue { name, template, .. } => Some((name.as_str(), template)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_intact_node_needs_nothing() {
        let (_t, layout, files) = node(100);
        let (_, plan) = full_plan(&layout, &observed(&files, &[], true), &[]);
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_valid_copy_is_restored_an_expired_one_is_a_template() {
        let (_t, layout, files) = node(100);
        let key = layout.pki.join("apiserver.key");
        let (_, plan) = full_plan(
            &layout,
            &observed(&files, std::slice::from_ref(&key), true),
            &[],
        );
        assert_eq!(restored(&plan), vec![key.as_path()]);
        assert!(reissued(&plan).is_empty());

        // the leaves expired: the snapshot's copies are templates, nothing is restored but CAs
        let (_t, layout, files) = node(-3);
        let gone: Vec<PathBuf> = files
            .keys()
            .filter(|p| !p.starts_with(layout.pki.join("etcd")))
            .cloned()
            .collect();
        let (_, plan) = full_plan(&layout, &observed(&files, &gone, true), &[]);
        let ca = layout.pki.join("ca.key");
        assert!(restored(&plan).contains(&ca.as_path()));
        let names: Vec<&str> = reissued(&plan).iter().map(|(n, _)| *n).collect();
        for n in [
            "apiserver",
            "admin.conf",
            "front-proxy-client",
            "apiserver-etcd-client",
        ] {
            assert!(names.contains(&n), "{n} not re-issued: {names:?}");
        }
        assert!(
            reissued(&plan)
                .iter()
                .all(|(_, t)| !matches!(t, Template::Profile))
        );
    }

    #[test]
    fn a_surviving_cert_whose_key_is_gone_is_its_own_template() {
        let (_t, layout, files) = node(100);
        let key = layout.pki.join("apiserver.key");
        let (_, plan) = full_plan(
            &layout,
            &observed(&files, std::slice::from_ref(&key), false),
            &[],
        );
        match reissued(&plan).as_slice() {
            [("apiserver", Template::Cert { from, .. })] => assert_eq!(from, "the node"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_ca_gone_everywhere_stops_and_new_ca_reissues_what_it_signed() {
        let (_t, layout, files) = node(100);
        let gone = [layout.pki.join("ca.crt"), layout.pki.join("ca.key")];
        let (_, plan) = full_plan(&layout, &observed(&files, &gone, false), &[]);
        assert_eq!(plan.stops.len(), 1, "{plan:?}");
        assert_eq!(plan.stops[0].name, "ca");
        assert!(plan.actions.is_empty());

        // asked for: the CA is generated, and everything it signed is re-issued
        let (mut secrets, mut plan) = full_plan(&layout, &observed(&files, &gone, false), &["ca"]);
        assert!(plan.actions.contains(&Action::NewCa { name: "ca".into() }));
        // (the caller adds the generated CA before the second phase)
        secrets.cas.insert(
            "ca",
            EffectiveCa {
                bundle: Vec::new(),
                bundle_pem: Vec::new(),
                key_pem: Some(Vec::new()),
                new: true,
            },
        );
        plan_leaves(
            &layout,
            &observed(&files, &gone, false),
            &secrets,
            &LeafOptions {
                now: now(),
                allow_version_skew: false,
            },
            &mut plan,
        );
        let names: Vec<&str> = reissued(&plan).iter().map(|(n, _)| *n).collect();
        for n in [
            "apiserver",
            "apiserver-kubelet-client",
            "admin.conf",
            "scheduler.conf",
        ] {
            assert!(names.contains(&n), "{n}: {names:?}");
        }
        assert!(!names.contains(&"front-proxy-client"), "{names:?}");

        // refused when the CA is still there
        let (_, plan) = full_plan(&layout, &observed(&files, &[], false), &["ca"]);
        assert!(
            plan.refusals.iter().any(|r| r.contains("--new-ca ca")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_stale_snapshot_ca_is_not_restored_over_newer_leaves() {
        let (_t, layout, files) = node(100);
        let (_t2, layout2, other) = node(100);
        // the snapshot holds another cluster's CA (the CA changed since the snapshot)
        let mut snap = files.clone();
        for n in ["ca.crt", "ca.key"] {
            snap.insert(layout.pki.join(n), other[&layout2.pki.join(n)].clone());
        }
        let gone = [layout.pki.join("ca.crt"), layout.pki.join("ca.key")];
        let mut obs = observed(&files, &gone, false);
        obs.snapshots = vec![SnapshotFiles {
            name: "old".into(),
            files: snap.into_iter().map(|(p, d)| (p, (d, 0o600))).collect(),
        }];
        let (_, plan) = full_plan(&layout, &obs, &[]);
        assert_eq!(plan.stops.len(), 1, "{plan:?}");
        assert!(
            plan.stops[0].what.contains("did not sign"),
            "{:?}",
            plan.stops
        );
    }

    #[test]
    fn sa_pub_is_derived_and_sa_key_never_invented() {
        let (_t, layout, files) = node(100);
        let public = layout.pki.join("sa.pub");
        let (_, plan) = full_plan(
            &layout,
            &observed(&files, std::slice::from_ref(&public), false),
            &[],
        );
        match plan.actions.as_slice() {
            [Action::DerivePublic { path, data }] => {
                assert_eq!(path, &public);
                assert!(public_matches(data, &files[&layout.pki.join("sa.key")]));
            }
            other => panic!("{other:?}"),
        }
        let key = layout.pki.join("sa.key");
        let (_, plan) = full_plan(
            &layout,
            &observed(&files, std::slice::from_ref(&key), false),
            &[],
        );
        assert_eq!(
            plan.stops
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["sa"]
        );
    }

    #[test]
    fn a_node_without_manifests_or_etcd_tls_is_not_missing_them() {
        // no static pods ever (a tree published without manifests): nothing is "left missing"
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = NodeSpec::new(now(), 100);
        spec.key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.manifests = false;
        let k = tmp.path().join("k");
        generate(&k, &spec).unwrap();
        let layout = Layout {
            pki: k.join("pki"),
            kubeconfigs: k.clone(),
            manifests: k.join("manifests"),
        };
        let files: BTreeMap<PathBuf, Vec<u8>> = [k.clone(), k.join("pki"), k.join("pki/etcd")]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
            .filter(|e| e.path().is_file())
            .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
            .collect();
        let (_, plan) = full_plan(&layout, &observed(&files, &[], true), &[]);
        assert!(plan.is_empty(), "{plan:?}");

        // an etcd manifest without TLS (kubeadm ≤ 1.9) asks for no etcd CA
        let (_t, layout, mut files) = node(100);
        files.retain(|p, _| {
            !p.starts_with(layout.pki.join("etcd"))
                && !p.ends_with("apiserver-etcd-client.crt")
                && !p.ends_with("apiserver-etcd-client.key")
        });
        files.insert(
            layout.manifests.join("etcd.yaml"),
            b"apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    - etcd\n    - --listen-client-urls=http://127.0.0.1:2379\n".to_vec(),
        );
        let (secrets, plan) = full_plan(&layout, &observed(&files, &[], true), &[]);
        assert!(!secrets.stacked_etcd);
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn unreadable_input_refuses_everything() {
        let (_t, layout, files) = node(100);
        let mut obs = observed(&files, &[layout.pki.join("apiserver.key")], true);
        obs.node.insert(
            layout.pki.join("front-proxy-client.crt"),
            OnNode::Unreadable("front-proxy-client.crt: a FIFO".into()),
        );
        let (_, plan) = full_plan(&layout, &obs, &[]);
        assert!(plan.refusals.iter().any(|r| r.contains("FIFO")), "{plan:?}");
    }

    #[test]
    fn a_damaged_ca_key_is_replaced_by_the_snapshot_copy_that_matches() {
        let (_tmp, layout, files) = node(100);
        let key = layout.pki.join("ca.key");
        let mut damaged = files.clone();
        damaged.insert(
            key.clone(),
            files[&layout.pki.join("front-proxy-ca.key")].clone(),
        );
        let mut seen = observed(&damaged, &[], false);
        seen.snapshots = observed(&files, &[], true).snapshots;
        let (secrets, plan) = full_plan(&layout, &seen, &[]);
        assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
        assert_eq!(restored(&plan), vec![key.as_path()]);
        assert_eq!(
            secrets.cas["ca"].key_pem.as_deref(),
            Some(files[&key].as_slice())
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("matches no certificate")),
            "{:?}",
            plan.notes
        );
        // no snapshot: refused, naming the key
        let (_, plan) = full_plan(&layout, &observed(&damaged, &[], false), &[]);
        assert!(
            plan.refusals
                .iter()
                .any(|r| r.contains(&key.display().to_string())
                    && r.contains("no snapshot has a copy that matches")),
            "{:?}",
            plan.refusals
        );
    }

    #[test]
    fn a_manifest_of_another_version_than_the_survivors_is_left_out_unless_allowed() {
        let (_tmp, layout, files) = node(100);
        let apiserver = layout.manifests.join("kube-apiserver.yaml");
        let mut upgraded = files.clone();
        for m in ["kube-controller-manager.yaml", "kube-scheduler.yaml"] {
            let path = layout.manifests.join(m);
            let text = String::from_utf8(files[&path].clone()).unwrap();
            upgraded.insert(path, text.replace(":v1.30.0", ":v1.31.0").into_bytes());
        }
        let mut seen = observed(&upgraded, std::slice::from_ref(&apiserver), false);
        seen.snapshots = observed(&files, &[], true).snapshots;
        let (_, plan) = full_plan(&layout, &seen, &[]);
        assert!(restored(&plan).is_empty(), "{:?}", restored(&plan));
        let left: Vec<_> = plan
            .unrecoverable
            .iter()
            .filter(|u| u.path == apiserver)
            .collect();
        assert_eq!(left.len(), 1, "{:?}", plan.unrecoverable);
        assert!(left[0].why.contains("runs v1.30.0"), "{}", left[0].why);
        assert!(
            left[0].why.contains("control-plane apiserver"),
            "{}",
            left[0].why
        );
        let (_, plan) = full_plan_with(&layout, &seen, &[], true);
        assert_eq!(restored(&plan), vec![apiserver.as_path()]);
        assert!(plan.unrecoverable.is_empty(), "{:?}", plan.unrecoverable);
        assert!(
            plan.notes.iter().any(|n| n.starts_with("WARNING")),
            "{:?}",
            plan.notes
        );
        // the same versions: restored without a word
        let seen = observed(&files, std::slice::from_ref(&apiserver), true);
        let (_, plan) = full_plan(&layout, &seen, &[]);
        assert_eq!(restored(&plan), vec![apiserver.as_path()]);
        assert!(
            plan.notes.iter().all(|n| !n.starts_with("WARNING")),
            "{:?}",
            plan.notes
        );
    }
}
