//! Whose directories these are. The product runs as root and acts on what it finds in the state
//! dir (a journal makes it rename, restore or overwrite the files it names) and in the
//! kubernetes dir (it writes through what is there). A user who can write in either could plant
//! a journal, or swap a file for a link, and make root overwrite files of their choosing. So
//! before `renew`, `restart` or a job of the daemon begins, each of these directories must be
//! writable by nobody but root (or the user running the product), and so must every directory
//! above it — except that a sticky one above it (`/tmp`) is fine: nobody else can rename or
//! delete what is not theirs there.
//!
//! [`judge`] is the rule, pure over the mode and owner of one directory; [`check_dir`] and
//! [`check_node`] read the directories, and [`check_above`] those above a directory another
//! user may own (the metrics textfile's), which is written in without following a link.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The user and group the product runs as (effective ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

impl Me {
    /// The running process's effective ids, from `/proc/self/status`; root when that cannot be
    /// read (the stricter answer: only root's directories are then trusted).
    pub fn current() -> Me {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let effective = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|id| id.parse().ok())
                .unwrap_or(0)
        };
        Me {
            uid: effective("Uid:"),
            gid: effective("Gid:"),
        }
    }
}

/// Where a directory stands in the path checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// A directory above the one the product works in.
    Above,
    /// The directory the product works in (or, while it does not exist yet, the nearest one
    /// above it that does: whoever can write there can create it first).
    Itself,
}

/// Whether a directory of `mode` owned by `uid`:`gid` may be trusted by a process running as
/// `me`; the error says why not. Trusted: owned by root or by `me`, and writable by nobody else
/// — not by the world, and by its group only when that group is root's or `me`'s. A sticky
/// directory above ([`Place::Above`]) may be writable by anyone.
pub fn judge(mode: u32, uid: u32, gid: u32, me: Me, place: Place) -> Result<(), String> {
    let sticky = mode & 0o1000 != 0 && place == Place::Above;
    let perms = mode & 0o7777;
    if uid != 0 && uid != me.uid {
        return Err(format!(
            "owned by uid {uid} (mode {perms:04o}), not by root: that user could plant files \
             this run would act on as root"
        ));
    }
    if mode & 0o002 != 0 && !sticky {
        return Err(format!(
            "writable by every user (mode {perms:04o}, owner uid {uid}): anyone could plant \
             files this run would act on as root"
        ));
    }
    if mode & 0o020 != 0 && gid != 0 && gid != me.gid && !sticky {
        return Err(format!(
            "writable by group {gid} (mode {perms:04o}, owner uid {uid}): its members could \
             plant files this run would act on as root"
        ));
    }
    Ok(())
}

/// Every directory whose owner and mode decide who controls `path`: the path itself (or the
/// nearest existing directory above it) and every directory above, each link on the way
/// resolved — a link's own directory is checked as well as where it points.
fn dirs_of(path: &Path) -> Result<BTreeMap<PathBuf, Place>, String> {
    let mut existing = path;
    while std::fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return Ok(BTreeMap::new()),
        }
    }
    let mut dirs = BTreeMap::new();
    for prefix in existing.ancestors() {
        if prefix.as_os_str().is_empty() {
            continue;
        }
        let real = std::fs::canonicalize(prefix)
            .map_err(|e| format!("{}: cannot resolve: {e}", prefix.display()))?;
        for (i, dir) in real.ancestors().enumerate() {
            let place = if i == 0 && prefix == existing {
                Place::Itself
            } else {
                Place::Above
            };
            let seen = dirs.entry(dir.to_path_buf()).or_insert(place);
            *seen = (*seen).max(place);
        }
    }
    Ok(dirs)
}

/// Checks that `path` (a directory the product writes in, or will create) is controlled by
/// nobody but root or `me`; the error names the directory, its mode and owner.
pub fn check_dir(path: &Path, me: Me) -> Result<(), String> {
    judge_all(path, dirs_of(path)?, me)
}

/// Checks every directory above `path` as [`check_dir`] does (a sticky one is fine), but not
/// `path` itself: for a directory another user may own (node-exporter's textfile dir) that the
/// product writes in only through a handle it opened without following a link
/// ([`super::nofollow::write_in_shared_dir`]). Whoever may write above it could swap it for a
/// link; its owner can only change what is inside it.
pub fn check_above(path: &Path, me: Me) -> Result<(), String> {
    let above = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => dirs_of(parent)?
            .into_keys()
            .map(|dir| (dir, Place::Above))
            .collect(),
        _ => BTreeMap::new(),
    };
    judge_all(path, above, me)
}

/// [`judge`]s each of `dirs`, on the way to `path`; the first refusal names its directory.
fn judge_all(path: &Path, dirs: BTreeMap<PathBuf, Place>, me: Me) -> Result<(), String> {
    for (dir, place) in dirs {
        let meta = std::fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        judge(meta.mode(), meta.uid(), meta.gid(), me, place).map_err(|why| {
            let what = if dir == path {
                String::new()
            } else {
                format!(" (on the way to {})", path.display())
            };
            format!(
                "{}{what}: {why}; refusing to work there (make it root's alone: chown root, \
                 chmod go-w)",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// Checks every directory a job of `config` writes in or acts on: the state dir, the kubernetes
/// dir, the pki dir (and `pki/etcd`), the kubeconfig dir and the manifests dir — and that their
/// paths are UTF-8 (see [`not_utf8`]).
pub fn check_node(config: &Config) -> Result<(), String> {
    let me = Me::current();
    let paths = config.paths();
    let etcd = paths.pki.join("etcd");
    for dir in [
        &config.state_dir,
        &config.kubernetes_dir,
        &paths.pki,
        &etcd,
        &paths.kubeconfigs,
        &paths.manifests,
    ] {
        if dir.to_str().is_none() {
            return Err(not_utf8(dir));
        }
        check_dir(dir, me)?;
    }
    Ok(())
}

/// Why nothing is written below a path that is not UTF-8: the journal, which must name every
/// file before it changes, records paths as JSON text.
pub fn not_utf8(path: &Path) -> String {
    format!(
        "{}: the path is not UTF-8, and the journal (JSON) records every path it writes; \
         refusing to work there (rename it)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Me = Me { uid: 0, gid: 0 };
    const USER: Me = Me {
        uid: 1000,
        gid: 1000,
    };

    #[test]
    fn only_root_or_me_may_write() {
        for (mode, uid, gid, me, place, ok) in [
            (0o40755, 0, 0, ROOT, Place::Itself, true),
            (0o40700, 0, 0, ROOT, Place::Itself, true),
            (0o40775, 0, 0, ROOT, Place::Itself, true), // group root
            (0o40775, 0, 4, ROOT, Place::Itself, false), // group adm may write
            (0o40777, 0, 0, ROOT, Place::Itself, false),
            (0o41777, 0, 0, ROOT, Place::Itself, false), // sticky is not enough for itself
            (0o41777, 0, 0, ROOT, Place::Above, true),   // /tmp above
            (0o40777, 0, 0, ROOT, Place::Above, false),
            (0o40755, 65534, 65534, ROOT, Place::Itself, false),
            (0o40700, 65534, 65534, ROOT, Place::Above, false),
            (0o40755, 1000, 1000, USER, Place::Itself, true),
            (0o40775, 1000, 1000, USER, Place::Itself, true), // a user private group
            (0o40755, 1001, 1000, USER, Place::Itself, false),
            (0o40755, 0, 0, USER, Place::Above, true),
        ] {
            let got = judge(mode, uid, gid, me, place);
            assert_eq!(
                got.is_ok(),
                ok,
                "{mode:o} {uid}:{gid} {me:?} {place:?}: {got:?}"
            );
        }
        let why = judge(0o40777, 0, 0, ROOT, Place::Itself).unwrap_err();
        assert!(why.contains("mode 0777"), "{why}");
        let why = judge(0o40755, 65534, 0, ROOT, Place::Itself).unwrap_err();
        assert!(why.contains("uid 65534"), "{why}");
    }

    #[test]
    fn the_directory_and_every_one_above_are_checked_links_resolved() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let me = Me::current();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        let inner = open.join("inner");
        std::fs::create_dir(&inner).unwrap();
        check_dir(&inner, me).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir(&inner, me).unwrap_err();
        assert!(
            e.starts_with(&format!("{} (on the way to", open.display())),
            "{e}"
        );
        // not there yet: whoever can write where it would be created controls it
        let e = check_dir(&open.join("new"), me).unwrap_err();
        assert!(e.contains("mode 0777"), "{e}");
        // a link in a trusted dir to a dir below an open one: where it points is checked
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&inner, &link).unwrap();
        assert!(check_dir(&link, me).unwrap_err().contains("mode 0777"));
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_dir(&link, me).unwrap();
    }

    #[test]
    fn above_a_shared_dir_everything_is_checked_but_the_dir_itself() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let me = Me::current();
        let above = tmp.path().join("above");
        let shared = above.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_dir(&shared, me).is_err());
        check_above(&shared, me).unwrap();
        // a sticky dir right above is fine (nobody renames what is not theirs there)
        std::fs::set_permissions(&above, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_above(&shared, me).unwrap();
        std::fs::set_permissions(&above, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_above(&shared, me).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "{} (on the way to {}",
                above.display(),
                shared.display()
            )),
            "{e}"
        );
    }
}
