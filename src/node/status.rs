//! What `check` reports about the node beyond its certificate files: static-pod manifests an
//! interrupted restart left parked (their pods are stopped: whatever state dir recorded it), and
//! components still running older certificates than the ones on disk (the restart-pending
//! record), with what each serves when it has a TLS endpoint that answers.

use std::path::{Path, PathBuf};

use crate::node::restart::{Served, StaticPods, TlsProbes};

/// A file in the parking dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The parked file.
    pub file: PathBuf,
    /// Where kubelet reads it.
    pub manifest: PathBuf,
    /// A manifest of that name is in the manifests dir (the parked file is a leftover copy); if
    /// not, its pod is stopped until the file goes back.
    pub in_place: bool,
}

/// One component waiting for its restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRestart {
    /// The static pod.
    pub component: String,
    /// What the record says: since when, and for which certificates.
    pub waiting: crate::state::pending::Waiting,
    /// What it serves now, when it has a TLS endpoint (Ok(None) without one).
    pub served: Result<Option<Served>, String>,
}

/// The node's control-plane state as `check` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Files in the parking dir.
    pub parked: Vec<Parked>,
    /// Components waiting for a restart.
    pub pending: Vec<WaitingRestart>,
    /// What could not be read (the record, the parking dir), naming the file.
    pub problems: Vec<String>,
    /// An interrupted run that could not be finished or undone (the journal's recovery said
    /// why): the node is half-way through a step until a human decides.
    pub unfinished: Option<String>,
    /// What `check` saw of the cluster-wide restart Lease (`None`: coordination is off).
    pub lease: Option<LeaseLook>,
}

/// The restart Lease as `check` sees it: with which identity it is taken, and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLook {
    /// The kubeconfig the Lease is taken with.
    pub kubeconfig: PathBuf,
    /// Whom its client certificate authenticates as, or why that cannot be read.
    pub identity: Result<crate::coordination::credentials::ClientIdentity, String>,
    /// The holder (`None`: nobody), or why the API was not or could not be asked.
    pub holder: Result<Option<LeaseHolder>, String>,
}

/// The holder of the restart Lease, as `check` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The node holding it.
    pub holder: String,
    /// Its last renewal (or acquisition), by that node's clock.
    pub renewed: Option<time::OffsetDateTime>,
}

/// The files of the parking dir beside `manifests_dir`.
pub fn parked(manifests_dir: &Path) -> Result<Vec<Parked>, String> {
    let dir = crate::node::restart::parking_dir(manifests_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut parked = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let manifest = manifests_dir.join(entry.file_name());
        parked.push(Parked {
            file: entry.path(),
            in_place: manifest.symlink_metadata().is_ok(),
            manifest,
        });
    }
    parked.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(parked)
}

/// Looks at the parking dir and the restart-pending record of `state_dir`, probing each
/// pending component's TLS endpoint with `probes`.
pub fn gather(manifests_dir: &Path, state_dir: &Path, probes: &TlsProbes) -> NodeStatus {
    let mut status = NodeStatus::default();
    match parked(manifests_dir) {
        Ok(p) => status.parked = p,
        Err(e) => status.problems.push(e),
    }
    let pending = match crate::state::pending::load(state_dir) {
        Ok(p) => p,
        Err(e) => {
            status.problems.push(e);
            return status;
        }
    };
    if pending.is_empty() {
        return status;
    }
    let pods = StaticPods::read(manifests_dir);
    for (component, waiting) in pending {
        let served = match &pods {
            Ok(pods) => match pods.usable.iter().find(|c| c.name == component) {
                Some(c) => probes.served(c),
                None => Err(pods
                    .why_not(&component)
                    .unwrap_or_else(|| "no manifest on this node".into())),
            },
            Err(e) => Err(e.clone()),
        };
        status.pending.push(WaitingRestart {
            component,
            waiting,
            served,
        });
    }
    status.pending.sort_by(|a, b| {
        crate::node::restart::restart_rank(&a.component)
            .cmp(&crate::node::restart::restart_rank(&b.component))
    });
    status
}
