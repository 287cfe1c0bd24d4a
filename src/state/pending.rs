//! The "restart pending" record: which control-plane components run with certificates older
//! than the ones on disk. Written when a renewal completes, removed component by component by a
//! verified restart, so that `renew --no-restart`, a crash between the writes and the restart,
//! or a restart that failed for reasons other than the certificates never leaves a node where
//! every command says "ok" while the old certificates keep running until they expire.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::store;

/// One component waiting for its restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// When its first not-yet-used renewal ran (RFC 3339).
    pub since: String,
    /// kubeadm's names of the certificates renewed for it since its last restart.
    pub renewed: Vec<String>,
}

/// The whole record: static-pod name → what it waits for.
pub type Pending = BTreeMap<String, Waiting>;

/// The record's file in a state dir.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("restart-pending.json")
}

/// The components waiting for a restart (empty when none); never read through a link.
pub fn load(state_dir: &Path) -> Result<Pending, String> {
    let p = path(state_dir);
    match crate::state::nofollow::read_own(&p)? {
        Some(data) => serde_json::from_slice(&data)
            .map_err(|e| format!("{}: unreadable restart-pending record: {e}", p.display())),
        None => Ok(Pending::new()),
    }
}

fn save(state_dir: &Path, pending: &Pending) -> Result<(), String> {
    let p = path(state_dir);
    if pending.is_empty() {
        return match std::fs::remove_file(&p) {
            Ok(()) => store::sync_dir(state_dir).map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", p.display())),
        };
    }
    let text = serde_json::to_vec_pretty(pending).map_err(|e| e.to_string())?;
    store::write_atomic(&p, &text, 0o600)
}

/// Records that the components fed by the `renewed` certificates (kubeadm names) must restart
/// to use them; `at` is when the renewal ran. Certificates no static pod uses add nothing.
pub fn add(state_dir: &Path, renewed: &[String], at: &str) -> Result<(), String> {
    let mut pending = load(state_dir)?;
    let before = pending.clone();
    for name in renewed {
        let Some(component) = crate::pki::kubeadm::component_of(name) else {
            continue;
        };
        let waiting = pending
            .entry(component.to_string())
            .or_insert_with(|| Waiting {
                since: at.to_string(),
                renewed: Vec::new(),
            });
        if !waiting.renewed.contains(name) {
            waiting.renewed.push(name.clone());
        }
    }
    if pending == before {
        return Ok(());
    }
    save(state_dir, &pending)
}

/// Removes `components` from the record: they were restarted and verified with the
/// certificates on disk.
pub fn done(state_dir: &Path, components: &[&str]) -> Result<(), String> {
    let mut pending = load(state_dir)?;
    let before = pending.len();
    pending.retain(|name, _| !components.contains(&name.as_str()));
    if pending.len() == before {
        return Ok(());
    }
    save(state_dir, &pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_accumulate_and_leave_one_by_one() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        assert!(load(state).unwrap().is_empty());
        add(state, &["admin.conf".into()], "2026-01-01T00:00:00Z").unwrap();
        assert!(!path(state).exists(), "admin.conf feeds no static pod");
        add(
            state,
            &["apiserver".into(), "scheduler.conf".into()],
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        add(
            state,
            &["front-proxy-client".into(), "apiserver".into()],
            "2026-02-01T00:00:00Z",
        )
        .unwrap();
        let pending = load(state).unwrap();
        assert_eq!(
            pending.keys().collect::<Vec<_>>(),
            ["kube-apiserver", "kube-scheduler"]
        );
        let api = &pending["kube-apiserver"];
        assert_eq!(
            api.since, "2026-01-01T00:00:00Z",
            "the oldest renewal counts"
        );
        assert_eq!(api.renewed, ["apiserver", "front-proxy-client"]);
        done(state, &["kube-apiserver", "etcd"]).unwrap();
        assert_eq!(
            load(state).unwrap().keys().collect::<Vec<_>>(),
            ["kube-scheduler"]
        );
        done(state, &["kube-scheduler"]).unwrap();
        assert!(!path(state).exists());
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(path(tmp.path()), b"{not json").unwrap();
        let e = load(tmp.path()).unwrap_err();
        assert!(e.contains("restart-pending.json"), "{e}");
    }
}
