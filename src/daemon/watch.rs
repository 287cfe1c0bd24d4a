//! The continuous watch: inotify on every directory holding a certificate the node depends on,
//! so an operator running `kubeadm certs renew` by hand (or a kubelet rotating its certificate)
//! is seen within seconds, not at the next hourly look.
//!
//! Directories, not files: certificates are replaced by rename, which a watch on the old file
//! would miss. A directory that does not exist yet (a node before `kubeadm init`) is watched
//! through its nearest existing parent. Pure open/read events are ignored.
//!
//! The manifests dir is watched too: a `kubeadm upgrade` rewrites the manifests, and the look
//! that follows takes a fresh snapshot (the daemon's own restart parks and returns them while
//! it holds the node lock and a journal entry says so: no snapshot is taken then, and the
//! changes it made are forgotten once its job is done).
//!
//! A burst of changes is let settle ([`Settle`]) with a deadline, so a directory written
//! without pause delays the next look by [`SETTLE_MAX`] at most, and never holds up the rest
//! of the loop (signals, the watchdog, the window), which waits in the same place.
//!
//! An `extra_paths` directory another user may write is not watched (the trust rule of
//! [`crate::state::trust`]): such a user could otherwise keep the root daemon looking without
//! pause. Its certificates are still read at every look.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::pki::inventory::{Inventory, Source};

/// How long a burst of changes must have been quiet before the daemon looks.
pub const SETTLE_QUIET: Duration = Duration::from_millis(1500);

/// The longest the daemon waits after the first change of a burst, however long it goes on.
pub const SETTLE_MAX: Duration = Duration::from_secs(5);

/// A burst of changes settling: the look comes [`SETTLE_QUIET`] after the last change, but no
/// later than [`SETTLE_MAX`] after the first — a deadline, not a sliding sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    first: Instant,
    last: Instant,
}

impl Settle {
    /// A burst whose first change came at `at`.
    pub fn new(at: Instant) -> Settle {
        Settle {
            first: at,
            last: at,
        }
    }

    /// The burst with one more change, at `at`.
    pub fn changed(self, at: Instant) -> Settle {
        Settle {
            first: self.first,
            last: self.last.max(at),
        }
    }

    /// When to look.
    pub fn deadline(self) -> Instant {
        (self.last + SETTLE_QUIET).min(self.first + SETTLE_MAX)
    }
}

/// The directories of a node to watch, and those left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirs {
    /// Watched.
    pub watched: Vec<PathBuf>,
    /// `extra_paths` directories other users may write, one line each saying which and why
    /// (said once in the journal).
    pub not_watched: Vec<String>,
}

/// The nearest existing directory at or above `dir`.
fn existing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf)
}

/// The directories to watch for a node: the pki dir and its etcd dir, the kubeconfig dir, the
/// manifests dir, the directory of the kubelet's rotated certificate, and the fixed part of
/// each `extra_paths` glob — each replaced by its nearest existing ancestor when it does not
/// exist; an `extra_paths` one only when nobody but root (or this user) may write it.
pub fn dirs_of(config: &Config, inventory: &Inventory) -> Dirs {
    let paths = config.paths();
    let mut dirs = vec![
        paths.pki.clone(),
        paths.pki.join("etcd"),
        paths.kubeconfigs,
        paths.manifests,
    ];
    for entry in inventory.others.iter() {
        if let Source::KubeconfigFileRef { cert, .. } = &entry.source
            && let Some(parent) = cert.parent()
        {
            dirs.push(parent.to_path_buf());
        }
    }
    let mut watched: Vec<PathBuf> = dirs.iter().filter_map(|d| existing(d)).collect();
    let mut not_watched = Vec::new();
    let me = crate::state::trust::Me::current();
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
        let Some(dir) = existing(&dir) else {
            continue;
        };
        if watched.contains(&dir) {
            continue;
        }
        match crate::state::trust::check_dir(&dir, me) {
            Ok(()) => watched.push(dir),
            Err(why) => not_watched.push(format!(
                "not watching {} (extra_paths {pattern:?}): {why}; its certificates are still \
                 read at every look, at least hourly",
                dir.display()
            )),
        }
    }
    watched.sort();
    watched.dedup();
    not_watched.sort();
    not_watched.dedup();
    Dirs {
        watched,
        not_watched,
    }
}

/// A watch on a set of directories; [`Watch::changed`] resolves at the next change under them.
pub struct Watch {
    dirs: Vec<PathBuf>,
    // kept alive for as long as the watch
    _watcher: Option<RecommendedWatcher>,
    // one slot: changes seen and not yet asked for are one change
    events: mpsc::Receiver<()>,
    /// Why the watch could not be set up (the hourly look still covers everything).
    pub problem: Option<String>,
}

impl Watch {
    /// Watches `dirs` (non-recursively).
    pub fn new(dirs: Vec<PathBuf>) -> Watch {
        let (tx, events) = mpsc::channel(1);
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, EventKind::Access(_))
            {
                // full: a change is already waiting to be seen
                let _ = tx.try_send(());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_settles_by_a_deadline_however_long_it_goes_on() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // one change: quiet for 1.5 s
        let one = Settle::new(t0);
        assert_eq!(one.deadline(), t0 + SETTLE_QUIET);
        // a short burst: 1.5 s after its last change
        let short = one.changed(t0 + ms(400)).changed(t0 + ms(800));
        assert_eq!(short.deadline(), t0 + ms(800) + SETTLE_QUIET);
        // a change every 0.3 s for a minute: never later than 5 s after the first
        let mut storm = Settle::new(t0);
        for i in 1..200 {
            storm = storm.changed(t0 + ms(300 * i));
            assert!(storm.deadline() <= t0 + SETTLE_MAX);
        }
        assert_eq!(storm.deadline(), t0 + SETTLE_MAX);
        // a change reported late changes nothing
        assert_eq!(short.changed(t0).deadline(), short.deadline());
    }
}
