//! The intent journal: one small file in the state dir that records, before a step that can be
//! left half-done, how to finish or undo it. Every command reads it first (under the state-dir
//! lock), so a crash or kill at any point leaves a node that a simple restart repairs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::store;

/// One file a renewal replaces: where, and the SHA-256 of its old and new bytes, so recovery
/// can tell ours from someone else's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIntent {
    /// The file (symlinks resolved: the file really written).
    pub path: PathBuf,
    /// SHA-256 (hex) of the bytes before the renewal (kept in the backup); empty when the file
    /// did not exist (a recovery creates it, and undoing removes it).
    pub old_sha256: String,
    /// SHA-256 (hex) of the bytes the renewal writes.
    pub new_sha256: String,
    /// Files of one group (a certificate and its key) are undone together or not at all, so a
    /// pair is never left half old, half new. Empty: a group of its own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The old version's second name beside the file while the renewal may still be undone
    /// (undo is then a rename, which needs no free space); none: undo copies from the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PathBuf>,
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
        /// kubeadm's names of the certificates renewed: once the renewal is complete, the
        /// components they feed need a restart ([`crate::state::pending`]).
        #[serde(default)]
        renewed: Vec<String>,
        /// When the renewal ran (RFC 3339).
        #[serde(default)]
        at: String,
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
    crate::pki::cert::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

/// Records `intent` durably (before the step it describes begins). Refuses to replace an
/// intent still pending: that one describes a step not finished yet, whose record must not be
/// lost (callers recover or clear first).
pub fn record(state_dir: &Path, intent: &Intent) -> Result<(), String> {
    store::create_private_dir(state_dir)?;
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

/// The pending intent, if a previous run was interrupted (never read through a link: a
/// journal makes root rename, restore or overwrite the files it names).
pub fn pending(state_dir: &Path) -> Result<Option<Intent>, String> {
    let p = path(state_dir);
    match crate::state::nofollow::read_own(&p)? {
        Some(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| format!("{}: unreadable journal: {e}", p.display())),
        None => Ok(None),
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
        Some(Intent::Renew {
            backup,
            files,
            renewed,
            at,
        }) => recover_renew(state_dir, &backup, &files, &renewed, &at).map(Some),
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
/// - every file already new: the renewal completed; the restart it needs is recorded and the
///   journal cleared;
/// - a mix of old and new: every new file is put back (by renaming its kept previous version
///   back, else from the backup), group by group so a pair is wholly old or wholly new. Every
///   group is tried whatever happened to the others; the journal is kept while one fails;
/// - a file that is neither (changed by someone else since): nothing is touched, the journal is
///   kept, and the error says which file needs a human.
fn recover_renew(
    state_dir: &Path,
    backup: &Path,
    files: &[FileIntent],
    renewed: &[String],
    at: &str,
) -> Result<String, String> {
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
    for f in files {
        store::remove_temp_files(&f.path);
    }
    if states.iter().all(|s| *s == FileNow::New) {
        crate::state::pending::add(state_dir, renewed, at)?;
        forget_previous(files)?;
        clear(state_dir)?;
        return Ok(format!(
            "an interrupted renewal had written all {} files; it is complete (backup: {})",
            files.len(),
            backup.display()
        ));
    }
    let copies = store::backup_entries(backup)?;
    let mut restored = 0;
    let mut failed = Vec::new();
    // a file without a group is a group of its own
    let key = |i: usize, f: &FileIntent| {
        if f.group.is_empty() {
            format!("#{i}")
        } else {
            f.group.clone()
        }
    };
    let mut groups: Vec<String> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let k = key(i, f);
        if !groups.contains(&k) {
            groups.push(k);
        }
    }
    for group in &groups {
        let members: Vec<(&FileIntent, FileNow)> = files
            .iter()
            .zip(&states)
            .enumerate()
            .filter(|(i, (f, _))| key(*i, f) == *group)
            .map(|(_, (f, s))| (f, *s))
            .collect();
        match undo_group(&members, &copies, backup) {
            Ok(count) => restored += count,
            Err(e) => failed.push(e),
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "an interrupted renewal could not be wholly rolled back (each pair is either wholly \
             old or wholly new; the journal {} is kept and the next run tries again): {}",
            path(state_dir).display(),
            failed.join("; ")
        ));
    }
    forget_previous(files)?;
    clear(state_dir)?;
    Ok(format!(
        "an interrupted renewal was rolled back: {restored} of {} files restored from {}",
        files.len(),
        backup.display()
    ))
}

/// Puts back the new files of one group, all or none. First everything is prepared — the old
/// version found (its kept previous version, or the backup copy checked and staged) and the new
/// version given a second name so it can come back — and nothing has changed if that fails.
/// Then each file is renamed into place; if one rename fails, the files of the group already
/// put back get their new version back, so the pair stays wholly new.
fn undo_group(
    members: &[(&FileIntent, FileNow)],
    copies: &[(PathBuf, PathBuf)],
    backup: &Path,
) -> Result<usize, String> {
    struct Undo<'a> {
        file: &'a FileIntent,
        old: Old<'a>,
        new_copy: PathBuf,
    }
    enum Old<'a> {
        Kept(&'a Path),
        Staged(store::Staged),
        /// The file did not exist before (a recovery created it): undone by removing it.
        Absent,
    }
    fn forget(undos: &[Undo]) {
        for u in undos {
            if let Old::Staged(s) = &u.old {
                store::discard(std::slice::from_ref(s));
            }
            let _ = store::remove_if_there(&u.new_copy);
        }
    }
    let mut undos: Vec<Undo> = Vec::new();
    for (f, state) in members {
        if *state != FileNow::New {
            continue;
        }
        let prepared = (|| {
            let kept = f
                .previous
                .as_deref()
                .filter(|p| std::fs::read(p).is_ok_and(|data| sha256(&data) == f.old_sha256));
            let old = match kept {
                Some(previous) => Old::Kept(previous),
                None if f.old_sha256.is_empty() => Old::Absent,
                None => {
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
                    let (data, _) = store::read_backup_copy(backup, copy)?;
                    if sha256(&data) != f.old_sha256 {
                        return Err(format!(
                            "{}: the backup copy is not the original",
                            copy.display()
                        ));
                    }
                    Old::Staged(store::stage(&f.path, &data, 0o600)?)
                }
            };
            match store::keep_current(&f.path) {
                Ok(new_copy) => Ok(Undo {
                    file: f,
                    old,
                    new_copy,
                }),
                Err(e) => {
                    if let Old::Staged(s) = &old {
                        store::discard(std::slice::from_ref(s));
                    }
                    Err(e)
                }
            }
        })();
        match prepared {
            Ok(u) => undos.push(u),
            Err(e) => {
                forget(&undos);
                return Err(format!("{e}; its group was left renewed"));
            }
        }
    }
    for (i, u) in undos.iter().enumerate() {
        let done = match &u.old {
            Old::Kept(previous) => store::put_back(previous, &u.file.path),
            Old::Staged(staged) => store::swap_in(staged),
            Old::Absent => store::remove_if_there(&u.file.path),
        };
        if let Err(e) = done {
            let redone: Vec<String> = undos[..i]
                .iter()
                .filter_map(|back| store::put_back(&back.new_copy, &back.file.path).err())
                .collect();
            forget(&undos);
            return Err(if redone.is_empty() {
                format!("{e}; its group was left renewed")
            } else {
                format!(
                    "{e}; and its group could not be made whole again: {}",
                    redone.join("; ")
                )
            });
        }
    }
    forget(&undos);
    Ok(undos.len())
}

/// Removes the previous versions a renewal kept (once it is complete or undone).
fn forget_previous(files: &[FileIntent]) -> Result<(), String> {
    for f in files {
        if f.previous.is_some() {
            store::remove_previous(&f.path)?;
        }
    }
    Ok(())
}

/// The journal record of putting `backup` back over the files there now.
pub fn restore_intent(backup: &Path) -> Result<Intent, String> {
    let mut files = Vec::new();
    for (copy, original) in store::backup_entries(backup)? {
        let (saved, _) = store::read_backup_copy(backup, &copy)?;
        let now = match std::fs::read(&original) {
            Ok(data) => sha256(&data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("{}: {e}", original.display())),
        };
        files.push(FileIntent {
            path: original,
            old_sha256: now,
            new_sha256: sha256(&saved),
            group: String::new(),
            previous: None,
        });
    }
    Ok(Intent::Restore {
        backup: backup.to_path_buf(),
        files,
    })
}
