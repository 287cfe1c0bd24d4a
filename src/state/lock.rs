//! One kube-cert-renewer at a time per node: an advisory lock on `<state-dir>/lock`, held by a
//! run (or by the daemon only while it works) and released when dropped — also when the
//! process dies, so a crash never leaves the node locked.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
}

/// Why the lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    /// Another kube-cert-renewer holds it (the message names the lock file).
    Busy(String),
    /// The state dir or the lock file cannot be used.
    Io(String),
    /// Users other than root may write in the state dir (see [`super::trust`]).
    Untrusted(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy(m) | LockError::Io(m) | LockError::Untrusted(m) => f.write_str(m),
        }
    }
}

fn open(state_dir: &Path) -> Result<File, LockError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| LockError::Io(format!("{}: {e}", state_dir.display())))?;
    let path = state_dir.join("lock");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LockError::Io(format!("{}: {e}", path.display())))
}

/// Takes the lock, or says that another run holds it.
pub fn try_acquire(state_dir: &Path) -> Result<NodeLock, LockError> {
    // in a dir others may write, `lock` could be their link to any file, and a journal theirs
    super::trust::check_dir(state_dir, super::trust::Me::current())
        .map_err(LockError::Untrusted)?;
    let file = open(state_dir)?;
    match file.try_lock() {
        Ok(()) => Ok(NodeLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Busy(format!(
            "{}: another kube-cert-renewer is working on this node",
            state_dir.join("lock").display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(format!(
            "{}: {e}",
            state_dir.join("lock").display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_and_the_lock_frees_when_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let held = try_acquire(tmp.path()).unwrap();
        let e = try_acquire(tmp.path()).unwrap_err();
        assert!(matches!(e, LockError::Busy(ref m) if m.contains("another kube-cert-renewer")));
        drop(held);
        try_acquire(tmp.path()).unwrap();
    }
}
