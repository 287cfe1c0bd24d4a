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

/// Opens (or creates, 0600) the lock file, never through a link; the state dir is created 0700
/// when it is not there yet.
fn open(state_dir: &Path) -> Result<File, LockError> {
    use std::os::unix::fs::OpenOptionsExt;
    super::store::create_private_dir(state_dir).map_err(LockError::Io)?;
    let path = state_dir.join("lock");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| {
            let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            let why = if link {
                "a symbolic link (never followed in the state dir)".to_string()
            } else {
                e.to_string()
            };
            LockError::Io(format!("{}: {why}", path.display()))
        })
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

    #[test]
    fn the_lock_is_never_opened_through_a_link_and_a_new_state_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("new/state");
        drop(try_acquire(&state).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("lock")), 0o600);
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"root's").unwrap();
        std::fs::remove_file(state.join("lock")).unwrap();
        std::os::unix::fs::symlink(&victim, state.join("lock")).unwrap();
        let e = try_acquire(&state).unwrap_err();
        assert!(
            matches!(&e, LockError::Io(m) if m.contains("lock: a symbolic link")),
            "{e:?}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's");
    }
}
