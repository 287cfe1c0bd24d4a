//! Durable file operations: staged replacement keeping mode and owner, undo by rename, and
//! backups.
//!
//! Invariant: a file we touch is at every instant either its old bytes or its complete new
//! bytes, and its old bytes are in a backup before it changes.
//!
//! A group of files (a key and its certificate, or every file of a renewal) is replaced in
//! three steps so that nothing after the first step needs free space: every new version is
//! written and fsynced beside its file first ([`stage`]; a full disk fails here, before anything
//! changed), the current version gets a second name in its directory ([`keep_previous`], a hard
//! link), then each new version is renamed over its file ([`swap_in`]). Undoing a swap is one
//! more rename ([`put_back`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes a directory's entries (renames, new files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> Result<String, String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: not a file path", path.display()))
}

/// The marker in the names of our temp files (`.<name>.kcr-tmp.<pid>.<n>`), so a crash's
/// leftovers (which may hold private keys) can be found and removed.
const TEMP_MARK: &str = ".kcr-tmp.";
/// The suffix of the second name a file keeps while a replacement may still be undone.
const PREVIOUS_MARK: &str = ".kcr-prev";
/// The suffix of the second name a file keeps while an undo may itself be undone.
const CURRENT_MARK: &str = ".kcr-new";

/// The file a path names, symlinks followed (a link is never replaced: its target is, as a
/// plain write would do). A path that does not exist is returned as it is.
pub fn resolve(path: &Path) -> Result<PathBuf, String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path)
            .map_err(|e| format!("{}: cannot resolve link: {e}", path.display())),
        _ => Ok(path.to_path_buf()),
    }
}

/// Removes the temp files a crashed run may have left beside `path`.
pub fn remove_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}{TEMP_MARK}", name.to_string_lossy());
    if let Ok(rd) = fs::read_dir(dir) {
        for entry in rd.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Removes every temp file of ours in `dir` (a run killed while staging leaves them, and they
/// may hold private keys). Only under the node lock: no other run is writing then.
pub fn remove_temp_files_in(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for entry in rd.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(TEMP_MARK) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Removes the previous version kept beside `path` (see [`keep_previous`]), if any.
pub fn remove_previous(path: &Path) -> Result<(), String> {
    remove_if_there(&previous_path(path)?)
}

/// Removes `path`; one that is not there is fine.
pub fn remove_if_there(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A new version of a file, complete and fsynced beside it, not yet in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The file it replaces (symlinks resolved).
    pub target: PathBuf,
    /// The temp file holding the new bytes, in the target's directory.
    pub temp: PathBuf,
}

/// A temp file name beside `name` that this process has not used yet: `.<name>.kcr-tmp.<pid>.<n>`
/// (with the clock's nanoseconds: two processes may share a PID, e.g. PID 1 of two containers).
pub(crate) fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(".{name}{TEMP_MARK}{}.{n}{nanos:x}", std::process::id())
}

/// Creates a temp file for `name` with `create` (which must fail on a name that exists: it is
/// never opened), trying other names while they are taken. Returns the name and what `create`
/// made; the error says why nothing was created.
pub(crate) fn create_unique<T>(
    name: &str,
    mut create: impl FnMut(&str) -> std::io::Result<T>,
) -> Result<(String, T), std::io::Error> {
    let mut last = None;
    for _ in 0..64 {
        let temp = temp_name(name);
        match create(&temp) {
            Ok(made) => return Ok((temp, made)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temp file name")))
}

/// Creates a temp file beside `target` under a name nobody else uses ([`create_unique`]).
fn create_temp(target: &Path) -> Result<(PathBuf, File), String> {
    let dir = parent(target);
    let name = file_name(target)?;
    let (temp, file) = create_unique(&name, |temp| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(temp))
    })
    .map_err(|e| format!("{}: cannot write there: {e}", dir.display()))?;
    Ok((dir.join(temp), file))
}

/// Checks that a file of the node may be written where `path` leads (links followed, as a
/// plain write would): a link may point anywhere, so the file goes only where nobody but root
/// may write ([`super::trust`]), and only below a UTF-8 path (the journal records it). Returns
/// the file really written.
pub fn check_target(path: &Path) -> Result<PathBuf, String> {
    let target = resolve(path)?;
    if target.to_str().is_none() {
        return Err(super::trust::not_utf8(&target));
    }
    super::trust::check_dir(parent(&target), super::trust::Me::current())
        .map_err(|e| format!("{}: not written: {e}", path.display()))?;
    Ok(target)
}

/// Writes the new version of `path` beside it: the current file's mode and owner (or
/// `new_mode` for a new file), fsynced. A link is followed, into a directory only root may
/// write ([`check_target`]). Nothing is replaced yet; on error nothing is left.
pub fn stage(path: &Path, data: &[u8], new_mode: u32) -> Result<Staged, String> {
    let target = check_target(path)?;
    let original = fs::metadata(&target).ok();
    stage_beside(target, original, data, new_mode)
}

/// Writes `data` beside `target` with `original`'s mode and owner (or `new_mode`), fsynced.
fn stage_beside(
    target: PathBuf,
    original: Option<fs::Metadata>,
    data: &[u8],
    new_mode: u32,
) -> Result<Staged, String> {
    let (temp, mut file) = create_temp(&target)?;
    let written = (|| -> std::io::Result<()> {
        file.write_all(data)?;
        match &original {
            Some(meta) => {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
                file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            }
            None => file.set_permissions(fs::Permissions::from_mode(new_mode))?,
        }
        file.sync_all()
    })();
    drop(file);
    match written {
        Ok(()) => Ok(Staged { target, temp }),
        Err(e) => {
            // ours: created above with create_new
            let _ = fs::remove_file(&temp);
            Err(format!("{}: cannot write: {e}", target.display()))
        }
    }
}

/// Stages every change (path, bytes, mode if the file is new), or none: every target is
/// checked first ([`check_target`]), and on the first error the temp files already written are
/// removed.
pub fn stage_all<'a>(
    changes: impl IntoIterator<Item = (&'a Path, &'a [u8], u32)>,
) -> Result<Vec<Staged>, String> {
    let changes: Vec<(&Path, &[u8], u32)> = changes.into_iter().collect();
    for (path, _, _) in &changes {
        check_target(path)?;
    }
    let mut staged = Vec::new();
    for (path, data, new_mode) in changes {
        match stage(path, data, new_mode) {
            Ok(s) => {
                staged.push(s);
                crate::failpoint::hit_nth("renew.after-stage", staged.len());
            }
            Err(e) => {
                discard(&staged);
                return Err(e);
            }
        }
    }
    Ok(staged)
}

/// Removes staged temp files that will not be swapped in.
pub fn discard(staged: &[Staged]) {
    for s in staged {
        let _ = fs::remove_file(&s.temp);
    }
}

/// Where [`keep_previous`] keeps the current version of `target`: `.<name>.kcr-prev` beside it.
pub fn previous_path(target: &Path) -> Result<PathBuf, String> {
    Ok(parent(target).join(format!(".{}{PREVIOUS_MARK}", file_name(target)?)))
}

/// Gives the current version of `target` a second name beside it (a hard link: no data is
/// copied, so this works on a full disk), so that undoing the swap is a rename. A stale
/// previous version (left by a finished run) is replaced. Returns the second name.
pub fn keep_previous(target: &Path) -> Result<PathBuf, String> {
    second_name(target, &previous_path(target)?)
}

/// Like [`keep_previous`], under `.<name>.kcr-new`: the version an undo is about to replace,
/// so that the undo of a pair can itself be undone when its second file cannot be put back.
pub fn keep_current(target: &Path) -> Result<PathBuf, String> {
    let name = parent(target).join(format!(".{}{CURRENT_MARK}", file_name(target)?));
    second_name(target, &name)
}

fn second_name(target: &Path, name: &Path) -> Result<PathBuf, String> {
    let _ = fs::remove_file(name);
    fs::hard_link(target, name)
        .map_err(|e| format!("{}: cannot keep the current version: {e}", target.display()))?;
    Ok(name.to_path_buf())
}

/// Puts a staged file in place (rename, then fsync of the directory).
pub fn swap_in(staged: &Staged) -> Result<(), String> {
    fs::rename(&staged.temp, &staged.target)
        .and_then(|()| sync_dir(parent(&staged.target)))
        .map_err(|e| format!("{}: cannot write: {e}", staged.target.display()))
}

/// Puts a version kept under a second name back in place, by rename (needs no space).
pub fn put_back(previous: &Path, target: &Path) -> Result<(), String> {
    fs::rename(previous, target)
        .and_then(|()| sync_dir(parent(target)))
        .map_err(|e| {
            format!(
                "{}: cannot put {} back: {e}",
                target.display(),
                previous.display()
            )
        })
}

/// Replaces `path`, one of the product's own files (in the state dir, a backup's `MANIFEST`),
/// with `data` atomically: a temp file in the same directory, the current file's mode and
/// owner (or `new_mode` for a new file), fsync, rename, fsync of the directory.
///
/// Refused unless the directory, and every one above, is root's alone ([`super::trust`]):
/// another user's link or planted file there could make root write where they choose. A link
/// in place of the file is never followed: the rename replaces the link itself.
pub fn write_atomic(path: &Path, data: &[u8], new_mode: u32) -> Result<(), String> {
    super::trust::check_dir(parent(path), super::trust::Me::current())
        .map_err(|e| format!("{}: not written: {e}", path.display()))?;
    let current = fs::symlink_metadata(path).ok().filter(|m| m.is_file());
    let staged = stage_beside(path.to_path_buf(), current, data, new_mode)?;
    swap_in(&staged).inspect_err(|_| discard(std::slice::from_ref(&staged)))
}

/// Creates `dir` (and every missing directory above it) with mode 0700: the state dir and its
/// `backups/` and `snapshots/` hold copies of private keys, root's alone from the first command
/// that creates them. An existing directory keeps its mode (its trust is judged, not changed).
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: cannot create: {e}", dir.display()))
}

/// Where a file's copy goes inside a backup: its path relative to `base` when below it, else its
/// absolute path under `_root/`.
pub fn backup_relative(path: &Path, base: &Path) -> PathBuf {
    match path.strip_prefix(base) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => Path::new("_root").join(path.strip_prefix("/").unwrap_or(path)),
    }
}

/// Copies `files` into a new backup directory `<backups>/<stamp>/`, keeping paths relative to
/// `base`, modes and owners, plus a `MANIFEST` of original paths. The directory appears
/// complete or not at all: it is built as `<stamp>.partial` (removed again on failure: it may
/// hold copies of private keys), then renamed.
pub fn backup(
    backups: &Path,
    stamp: &str,
    base: &Path,
    files: &[PathBuf],
) -> Result<PathBuf, String> {
    let err = |p: &Path, e: std::io::Error| format!("backup: {}: {e}", p.display());
    // copies of private keys go only where nobody but root may look or write, never through a
    // link: the directory is made 0700 (and made so again: it is ours alone)
    super::trust::check_dir(backups, super::trust::Me::current())
        .map_err(|e| format!("backup: {e}"))?;
    if fs::symlink_metadata(backups).is_ok_and(|m| !m.is_dir()) {
        return Err(format!(
            "backup: {}: not a directory (a link there is never followed)",
            backups.display()
        ));
    }
    create_private_dir(backups).map_err(|e| format!("backup: {e}"))?;
    fs::set_permissions(backups, fs::Permissions::from_mode(0o700)).map_err(|e| err(backups, e))?;
    let mut final_dir = backups.join(stamp);
    let mut n = 1;
    while final_dir.exists() {
        final_dir = backups.join(format!("{stamp}-{n}"));
        n += 1;
    }
    let partial = final_dir.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| err(&partial, e))?;
    }
    let built = (|| {
        create_private_dir(&partial).map_err(|e| format!("backup: {e}"))?;
        let mut manifest = String::new();
        for file in files {
            let rel = backup_relative(file, base);
            let to = partial.join(&rel);
            let dir = parent(&to).to_path_buf();
            create_private_dir(&dir).map_err(|e| format!("backup: {e}"))?;
            let data = fs::read(file).map_err(|e| err(file, e))?;
            let meta = fs::metadata(file).map_err(|e| err(file, e))?;
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to)
                .map_err(|e| err(&to, e))?;
            out.write_all(&data).map_err(|e| err(&to, e))?;
            std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| err(&to, e))?;
            out.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| err(&to, e))?;
            out.sync_all().map_err(|e| err(&to, e))?;
            sync_dir(&dir).map_err(|e| err(&dir, e))?;
            manifest.push_str(&format!("{}\t{}\n", rel.display(), file.display()));
        }
        write_atomic(&partial.join("MANIFEST"), manifest.as_bytes(), 0o600)?;
        fs::rename(&partial, &final_dir).map_err(|e| err(&final_dir, e))?;
        sync_dir(backups).map_err(|e| err(backups, e))
    })();
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    Ok(final_dir)
}

/// The (backup copy, original path) pairs of a backup directory.
pub fn backup_entries(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let manifest = dir.join("MANIFEST");
    let data = super::nofollow::read_copy(dir, &manifest)?
        .ok_or_else(|| format!("{}: missing", manifest.display()))?
        .0;
    let text =
        String::from_utf8(data).map_err(|e| format!("{}: not UTF-8: {e}", manifest.display()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (rel, original) = line
                .split_once('\t')
                .ok_or_else(|| format!("{}: malformed line {line:?}", manifest.display()))?;
            // a copy lives inside its backup: a relative path of plain names, no `..`, no root
            let inside = !rel.is_empty()
                && Path::new(rel)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(format!(
                    "{}: {rel:?} is not a path inside the backup",
                    manifest.display()
                ));
            }
            Ok((dir.join(rel), PathBuf::from(original)))
        })
        .collect()
}

/// The bytes and mode of the copy `copy` inside the backup `dir`, read without following a
/// link ([`super::nofollow::read_copy`]); the error names the copy.
pub fn read_backup_copy(dir: &Path, copy: &Path) -> Result<(Vec<u8>, u32), String> {
    super::nofollow::read_copy(dir, copy)?
        .ok_or_else(|| format!("{}: listed in its MANIFEST but missing", copy.display()))
}

/// Puts every file of a backup back in place: all of them or none. Every file that differs is
/// staged first (a full disk fails there, with nothing changed), then each is renamed into
/// place. A file keeps its current mode and owner; one that vanished gets the backed-up mode.
/// A copy is never read through a link ([`read_backup_copy`]).
pub fn restore(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut originals = Vec::new();
    let mut staged = Vec::new();
    let result = (|| -> Result<(), String> {
        for (copy, original) in backup_entries(dir)? {
            let (data, mode) = read_backup_copy(dir, &copy)?;
            if fs::read(&original).ok().as_deref() != Some(&data[..]) {
                staged.push(stage(&original, &data, mode)?);
            }
            originals.push(original);
        }
        Ok(())
    })();
    if let Err(e) = result {
        discard(&staged);
        return Err(format!("nothing was restored: {e}"));
    }
    for (i, s) in staged.iter().enumerate() {
        if let Err(e) = swap_in(s) {
            discard(&staged[i..]);
            return Err(e);
        }
    }
    Ok(originals)
}

/// Removes the half-built backups (`<stamp>.partial`) a killed run left in `backups`: they may
/// hold copies of private keys and no journal names them. Only under the node lock.
pub fn remove_partial_backups(backups: &Path) {
    let Ok(rd) = fs::read_dir(backups) else {
        return;
    };
    for dir in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        if dir.is_dir() && dir.extension().is_some_and(|e| e == "partial") {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Deletes the oldest complete backups beyond `keep`, and any partial one (a backup that failed
/// or was interrupted; it may hold copies of private keys).
///
/// `current` (the backup this run just made, which a rollback may still need) is never
/// removed, even when a clock that went backwards makes its name sort first.
pub fn prune_backups(
    backups: &Path,
    keep: usize,
    current: Option<&Path>,
) -> Result<Vec<PathBuf>, String> {
    let Ok(rd) = fs::read_dir(backups) else {
        return Ok(Vec::new());
    };
    let (partial, mut dirs): (Vec<PathBuf>, Vec<PathBuf>) = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .partition(|p| p.extension().is_some_and(|e| e == "partial"));
    dirs.sort();
    let keep = match current {
        Some(c) if dirs.iter().any(|d| d == c) => {
            dirs.retain(|d| d != c);
            keep.saturating_sub(1)
        }
        _ => keep,
    };
    let excess = dirs.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for dir in partial.into_iter().chain(dirs.into_iter().take(excess)) {
        fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        removed.push(dir);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_keeps_mode_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.key");
        fs::write(&f, b"old").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&f, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new");
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_node_file_s_link_is_written_through_and_crash_leftovers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("real.crt");
        let link = tmp.path().join("link.crt");
        fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let staged = stage(&link, b"new", 0o600).unwrap();
        assert_eq!(staged.target, target);
        swap_in(&staged).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let leftover = tmp.path().join(".real.crt.kcr-tmp.12345");
        fs::write(&leftover, b"secret").unwrap();
        remove_temp_files(&target);
        assert!(!leftover.exists());
        assert!(target.exists());
    }

    #[test]
    fn an_own_file_s_link_is_replaced_never_followed_and_an_open_dir_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("ca.key");
        fs::write(&victim, b"key").unwrap();
        let state = tmp.path().join("state");
        create_private_dir(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o7777, 0o700);
        let memory = state.join("daemon.json");
        std::os::unix::fs::symlink(&victim, &memory).unwrap();
        write_atomic(&memory, b"{}", 0o600).unwrap();
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"key",
            "the link's target untouched"
        );
        let meta = fs::symlink_metadata(&memory).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o7777, 0o600);
        // a directory another user may write: nothing is written there at all
        fs::set_permissions(&state, fs::Permissions::from_mode(0o1777)).unwrap();
        let e = write_atomic(&memory, b"{\"x\": 1}", 0o600).unwrap_err();
        assert!(
            e.starts_with(&format!("{}: not written: ", memory.display()))
                && e.contains("mode 1777"),
            "{e}"
        );
        assert_eq!(fs::read(&memory).unwrap(), b"{}");
        // nor a backup into it
        let e = backup(
            &state.join("backups"),
            "x",
            tmp.path(),
            std::slice::from_ref(&victim),
        )
        .unwrap_err();
        assert!(e.contains("mode 1777"), "{e}");
        assert!(!state.join("backups").exists());
    }

    #[test]
    fn a_restore_never_reads_a_copy_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("k");
        fs::create_dir_all(base.join("pki")).unwrap();
        let key = base.join("pki/ca.key");
        fs::write(&key, b"precious").unwrap();
        let dir = backup(
            &tmp.path().join("backups"),
            "20260101T000000Z",
            &base,
            std::slice::from_ref(&key),
        )
        .unwrap();
        let theirs = tmp.path().join("theirs.key");
        fs::write(&theirs, b"another user's").unwrap();
        let copy = dir.join("pki/ca.key");
        fs::remove_file(&copy).unwrap();
        std::os::unix::fs::symlink(&theirs, &copy).unwrap();
        fs::write(&key, b"changed").unwrap();
        let e = restore(&dir).unwrap_err();
        assert!(
            e.contains(&copy.display().to_string()) && e.contains("a symbolic link"),
            "{e}"
        );
        assert_eq!(fs::read(&key).unwrap(), b"changed", "nothing restored");
        // a MANIFEST that is a link is no backup either
        let manifest = dir.join("MANIFEST");
        fs::rename(&manifest, tmp.path().join("MANIFEST")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("MANIFEST"), &manifest).unwrap();
        let e = backup_entries(&dir).unwrap_err();
        assert!(e.contains("MANIFEST: cannot read: a symbolic link"), "{e}");
    }

    #[test]
    fn a_temp_name_another_process_holds_is_neither_used_nor_deleted() {
        // two processes with one PID (PID 1 of two containers): the other one's temp file
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.key");
        fs::write(&f, b"old").unwrap();
        let theirs = tmp
            .path()
            .join(format!(".a.key{TEMP_MARK}{}", std::process::id()));
        fs::write(&theirs, b"theirs").unwrap();
        let staged = stage(&f, b"new", 0o600).unwrap();
        assert_ne!(staged.temp, theirs);
        let again = stage(&f, b"newer", 0o600).unwrap();
        assert_ne!(
            again.temp, staged.temp,
            "two stagings never share a temp file"
        );
        discard(&[staged, again]);
        assert_eq!(fs::read(&theirs).unwrap(), b"theirs");
        // a failed staging (the directory refuses new files) removes nothing it did not create
        let ro = tmp.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::write(ro.join("b.crt"), b"old").unwrap();
        let foreign = ro.join(format!(".b.crt{TEMP_MARK}1"));
        fs::write(&foreign, b"foreign").unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
        // root ignores directory modes; only assert the foreign file survives either way
        let _ = stage(&ro.join("b.crt"), b"new", 0o600).map(|s| discard(&[s]));
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(fs::read(&foreign).unwrap(), b"foreign");
    }

    #[test]
    fn undo_is_a_rename_of_the_kept_previous_version() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.crt");
        fs::write(&f, b"old").unwrap();
        let staged = stage(&f, b"new", 0o600).unwrap();
        let previous = keep_previous(&f).unwrap();
        swap_in(&staged).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new");
        assert_eq!(fs::read(&previous).unwrap(), b"old");
        put_back(&previous, &f).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "nothing left beside"
        );
    }

    #[test]
    fn failed_and_interrupted_backups_leave_no_partial_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("k");
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("a.key"), b"secret").unwrap();
        let backups = tmp.path().join("backups");
        let e = backup(
            &backups,
            "20260101T000000Z",
            &base,
            &[base.join("a.key"), base.join("gone.key")],
        )
        .unwrap_err();
        assert!(e.contains("gone.key"), "{e}");
        assert_eq!(
            fs::read_dir(&backups).unwrap().count(),
            0,
            "the partial copy is gone"
        );
        // one a crash left behind is pruned
        let crashed = backups.join("20260102T000000Z.partial");
        fs::create_dir_all(&crashed).unwrap();
        fs::write(crashed.join("a.key"), b"secret").unwrap();
        let removed = prune_backups(&backups, 12, None).unwrap();
        assert_eq!(removed, vec![crashed.clone()]);
        assert!(!crashed.exists());
    }

    #[test]
    fn backup_restore_round_trip_and_prune() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("k");
        fs::create_dir_all(base.join("pki")).unwrap();
        let a = base.join("pki/a.crt");
        let outside = tmp.path().join("elsewhere.pem");
        fs::write(&a, b"A").unwrap();
        fs::write(&outside, b"O").unwrap();
        let backups = tmp.path().join("backups");
        let dir = backup(
            &backups,
            "20260101T000000Z",
            &base,
            &[a.clone(), outside.clone()],
        )
        .unwrap();
        assert_eq!(fs::read(dir.join("pki/a.crt")).unwrap(), b"A");
        assert!(
            dir.join("_root")
                .join(outside.strip_prefix("/").unwrap())
                .exists()
        );
        fs::write(&a, b"changed").unwrap();
        fs::write(&outside, b"changed").unwrap();
        restore(&dir).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"A");
        assert_eq!(fs::read(&outside).unwrap(), b"O");
        backup(
            &backups,
            "20260102T000000Z",
            &base,
            std::slice::from_ref(&a),
        )
        .unwrap();
        backup(
            &backups,
            "20260103T000000Z",
            &base,
            std::slice::from_ref(&a),
        )
        .unwrap();
        let removed = prune_backups(&backups, 2, None).unwrap();
        assert_eq!(removed, vec![dir]);
        // the current backup survives even when its name sorts first
        let older = backup(
            &backups,
            "20200101T000000Z",
            &base,
            std::slice::from_ref(&a),
        )
        .unwrap();
        let removed = prune_backups(&backups, 2, Some(&older)).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(older.exists());
    }
}
