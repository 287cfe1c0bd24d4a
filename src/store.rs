//! Durable file operations: atomic replace keeping mode and owner, and backups.
//!
//! Invariant: a file we touch is at every instant either its old bytes or its complete new
//! bytes, and its old bytes are in a backup before it changes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// The marker in the names of our temp files (`.<name>.kcr-tmp.<pid>`), so a crash's leftovers
/// (which may hold private keys) can be found and removed.
const TEMP_MARK: &str = ".kcr-tmp.";

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

/// Replaces `path` with `data` atomically: a temp file in the same directory, the current
/// file's mode and owner (or `new_mode` for a new file), fsync, rename, fsync of the directory.
/// A symlink is followed: its target is replaced, as a plain write would.
pub fn write_atomic(path: &Path, data: &[u8], new_mode: u32) -> Result<(), String> {
    let resolved = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path)
            .map_err(|e| format!("{}: cannot resolve link: {e}", path.display()))?,
        _ => path.to_path_buf(),
    };
    let path = resolved.as_path();
    let dir = parent(path);
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy();
    let original = fs::metadata(path).ok();
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        match &original {
            Some(meta) => {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
                file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            }
            None => file.set_permissions(fs::Permissions::from_mode(new_mode))?,
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(format!("{}: cannot write: {e}", path.display()));
    }
    Ok(())
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
/// complete or not at all (built as `<stamp>.partial`, then renamed).
pub fn backup(
    backups: &Path,
    stamp: &str,
    base: &Path,
    files: &[PathBuf],
) -> Result<PathBuf, String> {
    let err = |p: &Path, e: std::io::Error| format!("backup: {}: {e}", p.display());
    fs::create_dir_all(backups).map_err(|e| err(backups, e))?;
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
    fs::create_dir_all(&partial).map_err(|e| err(&partial, e))?;
    let mut manifest = String::new();
    for file in files {
        let rel = backup_relative(file, base);
        let to = partial.join(&rel);
        let dir = parent(&to).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
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
    sync_dir(backups).map_err(|e| err(backups, e))?;
    Ok(final_dir)
}

/// The (backup copy, original path) pairs of a backup directory.
pub fn backup_entries(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let manifest = dir.join("MANIFEST");
    let text = fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (rel, original) = line
                .split_once('\t')
                .ok_or_else(|| format!("{}: malformed line {line:?}", manifest.display()))?;
            Ok((dir.join(rel), PathBuf::from(original)))
        })
        .collect()
}

/// Puts every file of a backup back in place, atomically (a file keeps its current mode and
/// owner; one that vanished gets the backed-up mode).
pub fn restore(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut restored = Vec::new();
    for (copy, original) in backup_entries(dir)? {
        let data = fs::read(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        let meta = fs::metadata(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        if fs::read(&original).ok().as_deref() != Some(&data[..]) {
            write_atomic(&original, &data, meta.mode() & 0o7777)?;
        }
        restored.push(original);
    }
    Ok(restored)
}

/// Deletes the oldest complete backups beyond `keep`.
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
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.extension().is_none_or(|e| e != "partial"))
        .collect();
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
    for dir in dirs.into_iter().take(excess) {
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
    fn a_symlink_is_written_through_and_crash_leftovers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("real.crt");
        let link = tmp.path().join("link.crt");
        fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new", 0o600).unwrap();
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
