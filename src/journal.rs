//! The intent journal: one small file in the state dir that records, before a step that can be
//! left half-done, how to finish or undo it. Every command reads it first (under the state-dir
//! lock), so a crash or kill at any point leaves a node that a simple restart repairs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store;

/// One file a renewal replaces: where, and the SHA-256 of its old and new bytes, so recovery
/// can tell ours from someone else's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIntent {
    /// The file.
    pub path: PathBuf,
    /// SHA-256 (hex) of the bytes before the renewal (kept in the backup).
    pub old_sha256: String,
    /// SHA-256 (hex) of the bytes the renewal writes.
    pub new_sha256: String,
}

/// What was in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Intent {
    /// Replacing renewed files; the backup holds every one of them as it was.
    Renew {
        /// The complete backup of every file being replaced.
        backup: PathBuf,
        /// The files being replaced.
        files: Vec<FileIntent>,
    },
    /// Static-pod manifests moved out of the manifests dir to stop their pods.
    Park {
        /// Every manifest of the restart, whether or not it has been moved yet.
        manifests: Vec<ParkedManifest>,
    },
    /// Putting a backup back after a restart with the new certificates failed; restoring is
    /// idempotent, so an interrupted one is simply done again.
    Restore {
        /// The backup being restored.
        backup: PathBuf,
        /// Each file being put back: `old_sha256` is what the renewal wrote (there now),
        /// `new_sha256` the backup's copy. A file that is neither is someone else's and stops
        /// the recovery.
        #[serde(default)]
        files: Vec<FileIntent>,
    },
}

/// One manifest of a restart: its place in the manifests dir and its place while parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedManifest {
    /// Where kubelet reads it.
    pub manifest: PathBuf,
    /// Where it waits, outside the manifests dir, on the same filesystem.
    pub parked: PathBuf,
}

/// The journal file of a state dir.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.json")
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256(data: &[u8]) -> String {
    crate::cert::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

/// Records `intent` durably (before the step it describes begins). Refuses to replace an
/// intent still pending: that one describes a step not finished yet, whose record must not be
/// lost (callers recover or clear first).
pub fn record(state_dir: &Path, intent: &Intent) -> Result<(), String> {
    std::fs::create_dir_all(state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
    if pending(state_dir)?.is_some() {
        return Err(format!(
            "{}: an unfinished step is still recorded; it must be recovered before another \
             begins",
            path(state_dir).display()
        ));
    }
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

/// Where each journaled file stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileNow {
    Old,
    New,
    Foreign,
}

fn file_now(f: &FileIntent) -> FileNow {
    match std::fs::read(&f.path).map(|d| sha256(&d)) {
        // recorded as absent (an empty hash) and still absent
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && f.old_sha256.is_empty() => {
            FileNow::Old
        }
        Ok(h) if h == f.new_sha256 => FileNow::New,
        Ok(h) if h == f.old_sha256 => FileNow::Old,
        _ => FileNow::Foreign,
    }
}

/// Finishes or undoes whatever an interrupted run left; returns what was done. The caller must
/// hold the state-dir lock.
pub fn recover(state_dir: &Path) -> Result<Option<String>, String> {
    match pending(state_dir)? {
        None => Ok(None),
        Some(Intent::Renew { backup, files }) => {
            recover_renew(state_dir, &backup, &files).map(Some)
        }
        Some(Intent::Park { manifests }) => {
            let message = unpark(&manifests)?;
            clear(state_dir)?;
            Ok(Some(message))
        }
        Some(Intent::Restore { backup, files }) => {
            for f in &files {
                store::remove_temp_files(&f.path);
                if file_now(f) == FileNow::Foreign {
                    return Err(format!(
                        "an interrupted restore of {} cannot be finished: {} was changed by \
                         something else since (journal: {}). Decide which version to keep, then \
                         delete the journal.",
                        backup.display(),
                        f.path.display(),
                        path(state_dir).display()
                    ));
                }
            }
            let restored = store::restore(&backup)?;
            clear(state_dir)?;
            Ok(Some(format!(
                "an interrupted restore of {} was finished ({} files)",
                backup.display(),
                restored.len()
            )))
        }
    }
}

/// Moves every parked manifest back into the manifests dir (rename, then fsync both dirs).
/// A manifest that is already back is left alone; one that is both back and still parked (an
/// operator put a new one in place meanwhile) keeps the operator's and leaves the parked copy
/// where it is, said in the message. Only a manifest found in neither place is an error.
pub fn unpark(manifests: &[ParkedManifest]) -> Result<String, String> {
    let mut moved = Vec::new();
    let mut notes = Vec::new();
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    for m in manifests {
        let back = m.manifest.symlink_metadata().is_ok();
        let parked = m.parked.symlink_metadata().is_ok();
        match (back, parked) {
            (false, true) => {
                // every manifest is tried, whatever happened to the others
                let moved_back = std::fs::rename(&m.parked, &m.manifest)
                    .map_err(|e| {
                        format!(
                            "cannot move {} back to {}: {e}",
                            m.parked.display(),
                            m.manifest.display()
                        )
                    })
                    .and_then(|()| {
                        [m.manifest.parent(), m.parked.parent()]
                            .into_iter()
                            .flatten()
                            .try_for_each(|dir| {
                                store::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))
                            })
                    });
                match moved_back {
                    Ok(()) => moved.push(m.manifest.display().to_string()),
                    Err(e) => failed.push(e),
                }
            }
            (true, true) => notes.push(format!(
                "{} was put back by someone else; the parked copy stays in {}",
                m.manifest.display(),
                m.parked.display()
            )),
            (true, false) => {}
            (false, false) => missing.push(m.manifest.display().to_string()),
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "{} (the journal keeps the rest of the record; the next command tries again)",
            failed.join("; ")
        ));
    }
    if !missing.is_empty() {
        return Err(format!(
            "parked manifests are missing from both the manifests dir and the parking dir: {}. \
             Put them back by hand (a backup of every file renewed is under the state dir's \
             backups/), then delete the journal",
            missing.join(", ")
        ));
    }
    let mut message = if moved.is_empty() {
        "an interrupted restart had already put every manifest back".to_string()
    } else {
        format!(
            "an interrupted restart had left manifests parked; put back: {}",
            moved.join(", ")
        )
    };
    for n in notes {
        message.push_str("; ");
        message.push_str(&n);
    }
    Ok(message)
}

/// Recovery of an interrupted renewal:
///
/// - every file already new: the renewal completed, only the journal is cleared;
/// - a mix of old and new: every new file is put back from the backup (old pairs again);
/// - a file that is neither (changed by someone else since): nothing is touched, the journal is
///   kept, and the error says which file needs a human.
fn recover_renew(state_dir: &Path, backup: &Path, files: &[FileIntent]) -> Result<String, String> {
    for f in files {
        store::remove_temp_files(&f.path);
    }
    let states: Vec<FileNow> = files.iter().map(file_now).collect();
    if let Some(i) = states.iter().position(|s| *s == FileNow::Foreign) {
        return Err(format!(
            "an interrupted renewal cannot be recovered: {} was changed by something else since \
             (backup of the originals: {}; journal: {}). Decide which version to keep, then \
             delete the journal.",
            files[i].path.display(),
            backup.display(),
            path(state_dir).display()
        ));
    }
    if states.iter().all(|s| *s == FileNow::New) {
        clear(state_dir)?;
        return Ok(format!(
            "an interrupted renewal had written all {} files; it is complete (backup: {})",
            files.len(),
            backup.display()
        ));
    }
    let copies = store::backup_entries(backup)?;
    let mut restored = 0;
    for (f, state) in files.iter().zip(&states) {
        if *state != FileNow::New {
            continue;
        }
        let (copy, _) = copies
            .iter()
            .find(|(_, original)| original == &f.path)
            .ok_or_else(|| {
                format!(
                    "{}: not in the backup {}",
                    f.path.display(),
                    backup.display()
                )
            })?;
        let data = std::fs::read(copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        if sha256(&data) != f.old_sha256 {
            return Err(format!(
                "{}: the backup copy is not the original",
                copy.display()
            ));
        }
        store::write_atomic(&f.path, &data, 0o600)?;
        restored += 1;
    }
    clear(state_dir)?;
    Ok(format!(
        "an interrupted renewal was rolled back: {restored} of {} files restored from {}",
        files.len(),
        backup.display()
    ))
}

/// The journal record of putting `backup` back over the files there now.
pub fn restore_intent(backup: &Path) -> Result<Intent, String> {
    let mut files = Vec::new();
    for (copy, original) in store::backup_entries(backup)? {
        let saved = std::fs::read(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        let now = match std::fs::read(&original) {
            Ok(data) => sha256(&data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("{}: {e}", original.display())),
        };
        files.push(FileIntent {
            path: original,
            old_sha256: now,
            new_sha256: sha256(&saved),
        });
    }
    Ok(Intent::Restore {
        backup: backup.to_path_buf(),
        files,
    })
}
