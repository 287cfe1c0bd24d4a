//! Reading and writing where a link must never be followed.
//!
//! The product runs as root. A link it did not make, followed, lets whoever made it steer a
//! read or a write of root's: a snapshot copy linked to another user's file would be restored
//! into `manifests/` with that user's bytes; a metrics file linked to `ca.key` would overwrite
//! the key. So the product's own files (the state dir's records, backup and snapshot copies) are
//! read with every component below a known directory opened `O_NOFOLLOW` ([`read_own`],
//! [`read_copy`]), and the one file written in a directory another user may own — the metrics
//! textfile — is written through a handle on that directory, never through its path
//! ([`write_in_shared_dir`]).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::pki::inventory::read_opened;
use crate::state::{store, trust};

/// Why opening `name` in `dir` failed: a link, said as such (the kernel says ELOOP or ENOTDIR
/// depending on the flags), or the error itself.
fn why_not_opened(dir: &OwnedFd, name: &Path, e: rustix::io::Errno) -> String {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
            "a symbolic link (links are never followed here)".into()
        }
        _ => std::io::Error::from(e).to_string(),
    }
}

/// Reads the regular file at `base/rel`, opening `base` as it is and every component of `rel`
/// with `O_NOFOLLOW` (a link anywhere below `base` is refused); at most
/// [`crate::pki::inventory::MAX_FILE_BYTES`]. `None` when it is not there. Returns the bytes and the file's mode.
fn read_below(base: &Path, rel: &Path) -> Result<Option<(Vec<u8>, u32)>, String> {
    let full = base.join(rel);
    let cannot = |why: String| format!("{}: cannot read: {why}", full.display());
    let names: Vec<&Path> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(Path::new(n)),
            _ => Err(cannot("not a plain relative path".into())),
        })
        .collect::<Result<_, _>>()?;
    let Some((last, dirs)) = names.split_last() else {
        return Err(cannot("no file name".into()));
    };
    let not_there = |e: rustix::io::Errno| e == rustix::io::Errno::NOENT;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = match rustix::fs::open(base, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if not_there(e) => return Ok(None),
        Err(e) => return Err(cannot(std::io::Error::from(e).to_string())),
    };
    let mut walked = base.to_path_buf();
    for name in dirs {
        walked.push(name);
        dir = match rustix::fs::openat(&dir, *name, dir_flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if not_there(e) => return Ok(None),
            Err(e) => {
                return Err(cannot(format!(
                    "{}: {}",
                    walked.display(),
                    why_not_opened(&dir, name, e)
                )));
            }
        };
    }
    // O_NONBLOCK: a FIFO put there is not waited on (and refused below, as not a regular file)
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match rustix::fs::openat(&dir, *last, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(e) if not_there(e) => return Ok(None),
        Err(e) => return Err(cannot(why_not_opened(&dir, last, e))),
    };
    let (data, meta) = read_opened(file).map_err(cannot)?;
    Ok(Some((data, meta.mode() & 0o7777)))
}

/// Reads one of the product's own files in its directory (`journal.json`, `daemon.json`,
/// `restart-pending.json`): a regular file, never read through a link. `None` when absent.
pub fn read_own(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{}: not a file path", path.display()));
    };
    Ok(read_below(dir, Path::new(name))?.map(|(data, _)| data))
}

/// Reads the copy `copy` kept inside the backup or snapshot directory `dir` (its `MANIFEST`
/// too), with its mode: the directory itself and every component below it are opened without
/// following a link, and only a regular file is read. `None` when it is not there.
pub fn read_copy(dir: &Path, copy: &Path) -> Result<Option<(Vec<u8>, u32)>, String> {
    let (Some(above), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(format!("{}: not a backup directory", dir.display()));
    };
    let inside = copy
        .strip_prefix(dir)
        .map_err(|_| format!("{}: not a copy inside {}", copy.display(), dir.display()))?;
    read_below(above, &Path::new(name).join(inside))
}

/// Replaces `path` with `data` atomically in a directory that may be another user's (the
/// textfile collector's dir belongs to node-exporter's user): every directory above it must be
/// root's alone ([`trust::check_above`]), and the directory itself is opened once, without
/// following a link (its owner could swap it for one into `pki/`), and written only through
/// that handle — a temp file created in it `O_EXCL|O_NOFOLLOW`, written,
/// chmod'ed and fsynced through its descriptor, then renamed onto the name, which replaces
/// whatever is there, a link included, without following it. The current file's mode (less
/// its setuid, setgid and sticky bits) and owner are kept when it is a regular file; a new one
/// gets `new_mode`, owned by us.
pub fn write_in_shared_dir(path: &Path, data: &[u8], new_mode: u32) -> Result<(), String> {
    use std::io::Write;
    let failed = |why: String| format!("{}: not written: {why}", path.display());
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(failed("not a file path".into()));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    // the directories above are resolved (they are root's alone, checked below); the
    // directory itself is its owner's to swap for a link, so it is opened without following one
    let (above, dir_name) = match (parent.parent(), parent.file_name()) {
        (Some(above), Some(dir_name)) => (
            if above.as_os_str().is_empty() {
                Path::new(".")
            } else {
                above
            },
            Path::new(dir_name),
        ),
        _ => (parent, Path::new(".")),
    };
    let above =
        std::fs::canonicalize(above).map_err(|e| failed(format!("{}: {e}", above.display())))?;
    let dir_path = above.join(dir_name);
    trust::check_above(&dir_path, trust::Me::current()).map_err(failed)?;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let above_fd = rustix::fs::open(&above, dir_flags, Mode::empty())
        .map_err(|e| failed(format!("{}: {e}", above.display())))?;
    let dir = rustix::fs::openat(
        &above_fd,
        dir_name,
        dir_flags | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| {
        failed(format!(
            "{}: {}",
            dir_path.display(),
            why_not_opened(&above_fd, dir_name, e)
        ))
    })?;
    let current = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
    let name_text = name.to_string_lossy();
    let (temp, fd) = store::create_unique(&name_text, |temp| {
        rustix::fs::openat(
            &dir,
            temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(std::io::Error::from)
    })
    .map_err(|e| failed(format!("{}: {e}", dir_path.display())))?;
    let mut file = File::from(fd);
    let written = (|| -> std::io::Result<()> {
        file.write_all(data)?;
        let mode = match &current {
            Some(st) => {
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                )?;
                // no setuid, setgid or sticky bit: another user's hard link may have been
                // what stood there
                st.st_mode & 0o777
            }
            None => new_mode,
        };
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
        rustix::fs::fsync(&file)?;
        rustix::fs::renameat(&dir, temp.as_str(), &dir, name)?;
        Ok(rustix::fs::fsync(&dir)?)
    })();
    drop(file);
    written.map_err(|e| {
        // ours, by its descriptor's name: created above with O_EXCL (gone if the rename happened)
        let _ = rustix::fs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
        failed(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn own_files_and_copies_are_never_read_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"theirs").unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("journal.json"), b"{}").unwrap();
        assert_eq!(
            read_own(&state.join("journal.json")).unwrap().unwrap(),
            b"{}"
        );
        assert_eq!(read_own(&state.join("absent.json")).unwrap(), None);
        symlink(outside.join("secret"), state.join("daemon.json")).unwrap();
        let e = read_own(&state.join("daemon.json")).unwrap_err();
        assert!(
            e.contains("daemon.json") && e.contains("a symbolic link"),
            "{e}"
        );
        // a copy, a directory on its way, the backup dir itself: each a link, each refused
        let backup = state.join("backups/1");
        std::fs::create_dir_all(backup.join("pki")).unwrap();
        std::fs::write(backup.join("pki/ca.key"), b"ours").unwrap();
        std::fs::set_permissions(
            backup.join("pki/ca.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let copy = backup.join("pki/ca.key");
        assert_eq!(
            read_copy(&backup, &copy).unwrap().unwrap(),
            (b"ours".to_vec(), 0o600)
        );
        symlink(outside.join("secret"), backup.join("pki/sa.key")).unwrap();
        let e = read_copy(&backup, &backup.join("pki/sa.key")).unwrap_err();
        assert!(
            e.contains("pki/sa.key: cannot read: a symbolic link"),
            "{e}"
        );
        symlink(&outside, backup.join("etcd")).unwrap();
        let e = read_copy(&backup, &backup.join("etcd/secret")).unwrap_err();
        assert!(e.contains("backups/1/etcd: a symbolic link"), "{e}");
        let linked = state.join("backups/2");
        symlink(&backup, &linked).unwrap();
        let e = read_copy(&linked, &linked.join("pki/ca.key")).unwrap_err();
        assert!(e.contains("backups/2: a symbolic link"), "{e}");
        // not a regular file
        std::fs::create_dir(backup.join("pki/dir.crt")).unwrap();
        let e = read_copy(&backup, &backup.join("pki/dir.crt")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_link_in_a_shared_dir_is_replaced_and_an_open_dir_above_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let above = tmp.path().join("above");
        let shared = above.join("textfile");
        std::fs::create_dir_all(&shared).unwrap();
        // the dir itself may be anyone's: here open to all
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let victim = tmp.path().join("ca.key");
        std::fs::write(&victim, b"key").unwrap();
        let prom = shared.join("kcr.prom");
        symlink(&victim, &prom).unwrap();
        write_in_shared_dir(&prom, b"metrics\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"key");
        let meta = std::fs::symlink_metadata(&prom).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o7777, 0o644);
        assert_eq!(std::fs::read(&prom).unwrap(), b"metrics\n");
        // a regular file keeps its mode; nothing is left beside it
        std::fs::set_permissions(&prom, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_in_shared_dir(&prom, b"again\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&prom).unwrap(), b"again\n");
        assert_eq!(std::fs::metadata(&prom).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 1);
        // but never a setuid, setgid or sticky bit (a hard link to a binary may stand there)
        std::fs::set_permissions(&prom, std::fs::Permissions::from_mode(0o6755)).unwrap();
        write_in_shared_dir(&prom, b"plain\n", 0o644).unwrap();
        assert_eq!(std::fs::metadata(&prom).unwrap().mode() & 0o7777, 0o755);
        // the dir above open to all: whoever may write there could swap the dir for a link
        std::fs::set_permissions(&above, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_in_shared_dir(&prom, b"refused\n", 0o644).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "{}: not written: {}",
                prom.display(),
                above.display()
            )) && e.contains("mode 0777"),
            "{e}"
        );
        assert_eq!(std::fs::read(&prom).unwrap(), b"plain\n");
        // the dir's owner swaps it for a link into another dir (the one above is sticky, as
        // /tmp): nothing is written where the link points
        std::fs::set_permissions(&above, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let pki = tmp.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        std::fs::rename(&shared, above.join("moved")).unwrap();
        symlink(&pki, &shared).unwrap();
        let e = write_in_shared_dir(&prom, b"through\n", 0o644).unwrap_err();
        assert!(e.contains("a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&pki).unwrap().count(), 0);
    }
}
