//! The intent journal: one small file in the state dir that records, before a step that can be
//! left half-done, how to undo it. Every command reads it first and finishes the undo, so a crash
//! or kill at any point leaves a node that a simple restart repairs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store;

/// What was in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Intent {
    /// Replacing renewed files; the backup holds every one of them as it was.
    Renew {
        /// The complete backup of every file being replaced.
        backup: PathBuf,
        /// The files being replaced.
        files: Vec<PathBuf>,
    },
}

/// The journal file of a state dir.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.json")
}

/// Records `intent` durably (before the step it describes begins).
pub fn record(state_dir: &Path, intent: &Intent) -> Result<(), String> {
    std::fs::create_dir_all(state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
    let text = serde_json::to_vec_pretty(intent).map_err(|e| e.to_string())?;
    store::write_atomic(&path(state_dir), &text, 0o600)
}

/// The pending intent, if a previous run was interrupted.
pub fn pending(state_dir: &Path) -> Result<Option<Intent>, String> {
    let p = path(state_dir);
    match std::fs::read(&p) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| format!("{}: unreadable journal: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Marks the step done.
pub fn clear(state_dir: &Path) -> Result<(), String> {
    let p = path(state_dir);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    }
    std::fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", state_dir.display()))
}

/// Undoes whatever an interrupted run left; returns a description of what was repaired.
pub fn recover(state_dir: &Path) -> Result<Option<String>, String> {
    match pending(state_dir)? {
        None => Ok(None),
        Some(Intent::Renew { backup, files }) => {
            let restored = store::restore(&backup)?;
            clear(state_dir)?;
            Ok(Some(format!(
                "an interrupted renewal was rolled back: {} of {} files restored from {}",
                restored.len(),
                files.len(),
                backup.display()
            )))
        }
    }
}
