//! The continuous watch: inotify on every directory holding a certificate the node depends on,
//! so an operator running `kubeadm certs renew` by hand (or a kubelet rotating its certificate)
//! is seen within seconds, not at the next hourly look.
//!
//! Directories, not files: certificates are replaced by rename, which a watch on the old file
//! would miss. A directory that does not exist yet (a node before `kubeadm init`) is watched
//! through its nearest existing parent. Pure open/read events are ignored.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::pki::inventory::{Inventory, Source};

/// The directories to watch for a node: the pki dir and its etcd dir, the kubeconfig dir, the
/// directory of the kubelet's rotated certificate, and the fixed part of each `extra_paths`
/// glob — each replaced by its nearest existing ancestor when it does not exist.
pub fn dirs_of(config: &Config, inventory: &Inventory) -> Vec<PathBuf> {
    let paths = config.paths();
    let mut dirs = vec![paths.pki.clone(), paths.pki.join("etcd"), paths.kubeconfigs];
    for entry in inventory.others.iter() {
        if let Source::KubeconfigFileRef { cert, .. } = &entry.source
            && let Some(parent) = cert.parent()
        {
            dirs.push(parent.to_path_buf());
        }
    }
    for pattern in &config.extra_paths {
        let fixed: PathBuf = Path::new(pattern)
            .components()
            .take_while(|c| {
                !c.as_os_str()
                    .to_string_lossy()
                    .contains(['*', '?', '[', '{'])
            })
            .collect();
        // the last fixed component may be a file name
        let dir = if fixed.as_os_str() == pattern.as_str() {
            fixed.parent().map(Path::to_path_buf).unwrap_or(fixed)
        } else {
            fixed
        };
        dirs.push(dir);
    }
    let mut existing: Vec<PathBuf> = dirs
        .into_iter()
        .filter_map(|d| d.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf))
        .collect();
    existing.sort();
    existing.dedup();
    existing
}

/// A watch on a set of directories; [`Watch::changed`] resolves at the next change under them.
pub struct Watch {
    dirs: Vec<PathBuf>,
    // kept alive for as long as the watch
    _watcher: Option<RecommendedWatcher>,
    events: mpsc::UnboundedReceiver<()>,
    /// Why the watch could not be set up (the hourly look still covers everything).
    pub problem: Option<String>,
}

impl Watch {
    /// Watches `dirs` (non-recursively).
    pub fn new(dirs: Vec<PathBuf>) -> Watch {
        let (tx, events) = mpsc::unbounded_channel();
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        };
        let mut problem = None;
        let watcher = match notify::recommended_watcher(handler) {
            Ok(mut watcher) => {
                for dir in &dirs {
                    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                        problem = Some(format!("cannot watch {}: {e}", dir.display()));
                    }
                }
                Some(watcher)
            }
            Err(e) => {
                problem = Some(format!("cannot start the file watch: {e}"));
                None
            }
        };
        Watch {
            dirs,
            _watcher: watcher,
            events,
            problem,
        }
    }

    /// The directories watched.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Resolves at the next change (never, when the watch could not be set up).
    pub async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Forgets the changes seen so far (after an evaluation that looked at everything, or our
    /// own writes).
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }
}
