//! Snapshots: a copy, in the state dir, of everything the node needs to rebuild its control
//! plane — the CAs and their keys, `sa.key`/`sa.pub`, every leaf and key, every kubeconfig, the
//! static-pod manifests and any other file kubeadm left in the kubernetes dir (its config). They
//! live outside `/etc/kubernetes`, so deleting that directory does not delete them, and
//! `recover` rebuilds the node from them.
//!
//! A snapshot is a backup directory ([`store::backup`]: complete or absent, modes and owners
//! kept, a `MANIFEST` of original paths) under `<state>/snapshots/<seq>-<stamp>/`, 0700 like the
//! whole state dir: these are the cluster's CA keys at rest, as secret as `/etc/kubernetes/pki`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::config::NodePaths;
use crate::pki::inventory::MAX_FILE_BYTES;
use crate::pki::kubeadm;
use crate::state::{journal, store};

/// The most files one snapshot copies: a kubeadm node has about 40; more is not a node's
/// control-plane files, and a snapshot must stay a bounded copy.
pub const MAX_FILES: usize = 1000;

/// Where the snapshots of a state dir live.
pub fn dir(state: &Path) -> PathBuf {
    state.join("snapshots")
}

/// One snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its name (`<sequence>-<UTC stamp>`), what `recover --from` takes.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Original path → the copy.
    pub files: BTreeMap<PathBuf, PathBuf>,
}

impl Snapshot {
    /// The copy's bytes and mode, when this snapshot has `original` (read bounded, like every
    /// file of the node, and never through a link: [`store::read_backup_copy`]).
    pub fn read(&self, original: &Path) -> Result<Option<(Vec<u8>, u32)>, String> {
        let Some(copy) = self.files.get(original) else {
            return Ok(None);
        };
        store::read_backup_copy(&self.dir, copy).map(Some)
    }
}

/// Every snapshot, newest first. Half-built ones (`.partial`, a crash while copying) are not
/// snapshots, nor is one whose MANIFEST cannot be read (see [`broken`]): one damaged snapshot
/// must not keep the others from being used.
pub fn list(state: &Path) -> Result<Vec<Snapshot>, String> {
    Ok(scan(state)?.0)
}

/// The snapshots that cannot be used, each with why (an unreadable MANIFEST).
pub fn broken(state: &Path) -> Vec<String> {
    scan(state).map(|(_, broken)| broken).unwrap_or_default()
}

/// Every usable snapshot, newest first ([`list`]), and those that cannot be used ([`broken`]),
/// from one read of the snapshots dir.
pub fn scan(state: &Path) -> Result<(Vec<Snapshot>, Vec<String>), String> {
    let root = dir(state);
    if std::fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "{}: a symbolic link (links are never followed in the state dir)",
            root.display()
        ));
    }
    let rd = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(format!("{}: {e}", root.display())),
    };
    let mut out = Vec::new();
    let mut broken = Vec::new();
    for entry in rd.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "partial") {
            continue;
        }
        // (the entry itself, not where a link would lead)
        match entry.file_type() {
            Ok(t) if t.is_dir() => {}
            Ok(t) if t.is_symlink() => {
                broken.push(format!(
                    "snapshot {name} is unusable: {}: a symbolic link (links are never followed \
                     here)",
                    path.display()
                ));
                continue;
            }
            _ => continue,
        }
        let files = match store::backup_entries(&path) {
            Ok(entries) => entries
                .into_iter()
                .map(|(copy, original)| (original, copy))
                .collect(),
            Err(e) => {
                broken.push(format!("snapshot {name} is unusable: {e}"));
                continue;
            }
        };
        out.push(Snapshot {
            name,
            dir: path,
            files,
        });
    }
    out.sort_by(|a, b| b.name.cmp(&a.name));
    Ok((out, broken))
}

/// The snapshot `name` (a name from [`list`] or a path to one).
pub fn find(state: &Path, name: &str) -> Result<Snapshot, String> {
    find_in(&list(state)?, state, name).cloned()
}

/// The snapshot `name` among `all` (a name or a directory), or why there is none.
pub fn find_in<'a>(all: &'a [Snapshot], state: &Path, name: &str) -> Result<&'a Snapshot, String> {
    let wanted = Path::new(name);
    all.iter()
        .find(|s| s.name == name || s.dir == wanted)
        .ok_or_else(|| {
            format!(
                "no snapshot {name:?} in {} (`kube-cert-renewer recover --list` shows them)",
                dir(state).display()
            )
        })
}

fn regular_files_in(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| {
            // links followed; only regular files a certificate, key or config could be
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MAX_FILE_BYTES)
        })
        .collect();
    found.sort();
    out.extend(found);
}

/// The files a snapshot of this node copies: every regular file directly in the kubernetes dir
/// (kubeconfigs, kubeadm's config), in `pki/` and `pki/etcd/`, the manifests, and kubeadm's
/// kubeconfigs where the kubeconfig dir is elsewhere. Hidden files (our own temp and previous
/// versions) and files bigger than any certificate are left out.
pub fn node_files(paths: &NodePaths, kubernetes_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    regular_files_in(kubernetes_dir, &mut files);
    regular_files_in(&paths.pki, &mut files);
    regular_files_in(&paths.pki.join("etcd"), &mut files);
    if let Ok(manifests) = crate::node::manifest::list(&paths.manifests) {
        files.extend(manifests.into_iter().filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MAX_FILE_BYTES)
        }));
    }
    for name in kubeadm::LEAVES
        .iter()
        .filter_map(|l| match l.file {
            kubeadm::LeafFile::Kubeconfig(f) => Some(f),
            kubeadm::LeafFile::PemPair(_) => None,
        })
        .chain([kubeadm::KUBELET_CONF])
    {
        let path = paths.kubeconfigs.join(name);
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    files.dedup();
    files
}

/// What [`take`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// A new snapshot was written.
    Created(PathBuf),
    /// The newest snapshot already holds exactly these files and bytes.
    Unchanged(PathBuf),
    /// Not taken, and why (files the newest snapshot has are missing from the node: a snapshot
    /// of a damaged node would, generation after generation, push the good ones out).
    Skipped(String),
}

/// Why the node's cluster secrets must not be snapshotted now: a CA key that does not parse or
/// matches no certificate of its file, an `sa.key` that does not parse or does not match
/// `sa.pub`. Such a copy would push the good generations out, and a key once lost from every
/// generation is lost (a crash that left a 0-byte `ca.key`, another cluster's key copied in).
fn damaged_secret(paths: &NodePaths) -> Option<String> {
    use crate::pki::inventory::{ca_bundle, ca_key_match, read_bounded};
    use crate::pki::keys;
    let read = |p: &Path| read_bounded(p).ok().flatten();
    for spec in kubeadm::CAS {
        let cert = paths.pki.join(format!("{}.crt", spec.base));
        let key = paths.pki.join(format!("{}.key", spec.base));
        let (Some(cert_pem), Some(key_pem)) = (read(&cert), read(&key)) else {
            continue;
        };
        let judged = ca_bundle(&cert_pem)
            .map_err(|e| format!("{}: {e}", cert.display()))
            .and_then(|b| ca_key_match(&key_pem, &b, &key, &cert).map(|_| ()));
        if let Err(why) = judged {
            return Some(why);
        }
    }
    let sa_key = paths.pki.join("sa.key");
    if let Some(key_pem) = read(&sa_key) {
        let public = read(&paths.pki.join("sa.pub"));
        let whole = keys::parse_private_key(&key_pem).is_ok()
            && public.is_none_or(|p| keys::public_matches(&p, &key_pem));
        if !whole {
            return Some(format!(
                "{} does not parse or does not match sa.pub",
                sa_key.display()
            ));
        }
    }
    None
}

/// The next snapshot's name: a sequence number, then the UTC stamp. Snapshots are ordered by the
/// number, never by the clock (one taken while the clock ran ahead must not stay "newest").
fn next_name(all: &[Snapshot], now: OffsetDateTime) -> String {
    let last = all
        .iter()
        .filter_map(|s| s.name.split('-').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!(
        "{:06}-{}",
        last.saturating_add(1),
        crate::renew::execute::stamp(now)
    )
}

/// The SHA-256 of each file, or the first error.
fn hashes(files: &[PathBuf]) -> Result<BTreeMap<PathBuf, String>, String> {
    files
        .iter()
        .map(|f| {
            let data = crate::pki::inventory::read_bounded(f)?
                .ok_or_else(|| format!("{}: vanished while the snapshot was taken", f.display()))?;
            Ok((f.clone(), journal::sha256(&data)))
        })
        .collect()
}

/// Takes a snapshot of the node when it differs from the newest one; keeps `keep` of them.
/// `force` takes it even when files of the newest snapshot are missing now (the operator
/// removed them on purpose). The caller holds the node lock.
pub fn take(
    paths: &NodePaths,
    kubernetes_dir: &Path,
    now: OffsetDateTime,
    keep: usize,
    force: bool,
) -> Result<Taken, String> {
    if journal::pending(&paths.state)?.is_some() {
        return Ok(Taken::Skipped(
            "an interrupted run is not finished yet (the next command finishes it)".into(),
        ));
    }
    if let Some(why) = damaged_secret(paths) {
        return Ok(Taken::Skipped(format!(
            "{why}: a damaged secret is never snapshotted over good copies"
        )));
    }
    let files = node_files(paths, kubernetes_dir);
    if files.len() > MAX_FILES {
        return Err(format!(
            "{} files in the node's kubernetes, pki and manifests dirs, more than a snapshot \
             copies ({MAX_FILES})",
            files.len()
        ));
    }
    if files.is_empty() {
        return Ok(Taken::Skipped(format!(
            "nothing to copy: {} holds no kubeadm file",
            kubernetes_dir.display()
        )));
    }
    let now_hashes = hashes(&files)?;
    let all = list(&paths.state)?;
    if let Some(newest) = all.first() {
        let missing: Vec<String> = newest
            .files
            .keys()
            .filter(|p| !now_hashes.contains_key(*p))
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() && !force {
            return Ok(Taken::Skipped(format!(
                "files of the newest snapshot ({}) are missing from the node: {}; run \
                 `kube-cert-renewer recover`, or `snapshot --force` if they were removed on \
                 purpose",
                newest.name,
                missing.join(", ")
            )));
        }
        if missing.is_empty() && newest.files.len() == now_hashes.len() {
            let same = newest.files.iter().all(|(original, copy)| {
                store::read_backup_copy(&newest.dir, copy)
                    .is_ok_and(|(d, _)| now_hashes.get(original) == Some(&journal::sha256(&d)))
            });
            if same {
                return Ok(Taken::Unchanged(newest.dir.clone()));
            }
        }
    }
    let root = dir(&paths.state);
    let created = store::backup(&root, &next_name(&all, now), kubernetes_dir, &files)?;
    // a file that changed while it was copied would make a snapshot of two moments
    let after = hashes(&files)?;
    if after != now_hashes {
        let _ = std::fs::remove_dir_all(&created);
        return Err("the node's files changed while the snapshot was taken; try again".into());
    }
    store::prune_backups(&root, keep.max(1), Some(&created))?;
    Ok(Taken::Created(created))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(root: &Path) -> NodePaths {
        let k = root.join("k");
        std::fs::create_dir_all(k.join("pki/etcd")).unwrap();
        std::fs::create_dir_all(k.join("manifests")).unwrap();
        std::fs::write(k.join("pki/ca.crt"), b"ca").unwrap();
        std::fs::write(k.join("pki/apiserver.key"), b"key").unwrap();
        std::fs::write(k.join("pki/etcd/ca.crt"), b"etcd").unwrap();
        std::fs::write(k.join("pki/.apiserver.key.kcr-prev"), b"hidden").unwrap();
        std::fs::write(k.join("admin.conf"), b"admin").unwrap();
        std::fs::write(k.join("manifests/etcd.yaml"), b"pod").unwrap();
        NodePaths {
            pki: k.join("pki"),
            kubeconfigs: k.clone(),
            manifests: k.join("manifests"),
            state: root.join("state"),
        }
    }

    #[test]
    fn taken_when_changed_skipped_when_damaged_pruned_to_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = node(tmp.path());
        let k = tmp.path().join("k");
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap();
        let Taken::Created(first) = take(&paths, &k, t(0), 2, false).unwrap() else {
            panic!("first snapshot not created")
        };
        let snap = &list(&paths.state).unwrap()[0];
        assert_eq!(snap.dir, first);
        assert_eq!(snap.files.len(), 5, "{:?}", snap.files.keys());
        assert_eq!(
            snap.read(&k.join("pki/apiserver.key")).unwrap().unwrap().0,
            b"key"
        );
        assert!(
            snap.read(&k.join("pki/.apiserver.key.kcr-prev"))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            take(&paths, &k, t(60), 2, false).unwrap(),
            Taken::Unchanged(first.clone())
        );
        std::fs::write(k.join("admin.conf"), b"renewed").unwrap();
        assert!(matches!(
            take(&paths, &k, t(120), 2, false).unwrap(),
            Taken::Created(_)
        ));
        std::fs::remove_file(k.join("pki/apiserver.key")).unwrap();
        let skipped = take(&paths, &k, t(180), 2, false).unwrap();
        assert!(
            matches!(&skipped, Taken::Skipped(why) if why.contains("apiserver.key")),
            "{skipped:?}"
        );
        assert!(matches!(
            take(&paths, &k, t(240), 2, true).unwrap(),
            Taken::Created(_)
        ));
        let all = list(&paths.state).unwrap();
        assert_eq!(all.len(), 2, "pruned to two generations");
        assert!(all[0].name > all[1].name, "newest first");
        assert!(!first.exists(), "the oldest went");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir(&paths.state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
