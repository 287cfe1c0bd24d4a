//! Inventory: every certificate on the node, where it lives, what really signed it and when it
//! expires. Reads, never writes; its output is plain data for `plan` and `report`.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::config::NodePaths;
use crate::pki::cert::CertFacts;
use crate::pki::keys::{self, PrivateKey};
use crate::pki::kubeadm::{self, CaSpec, LeafFile, LeafSpec};
use crate::pki::kubeconfig::{self, ClientCert};
use crate::pki::pem;

/// What kind of certificate an entry is; decides thresholds, table and renewability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One of kubeadm's three CAs.
    Ca,
    /// One of the certificates `kubeadm certs renew all` knows.
    Leaf,
    /// The kubelet's client certificate (kubelet.conf).
    KubeletClient,
    /// A file under `extra_paths`: watched, never renewed.
    Extra,
}

/// Where a certificate lives: the seam renewal reads and writes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `.crt` + `.key` pair in the pki dir.
    PemPair {
        /// The certificate file.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
    /// Credentials embedded in a kubeconfig's current-context user.
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The user whose credentials these are.
        user: String,
    },
    /// A kubeconfig whose user points at certificate files (kubelet.conf → the kubelet's
    /// rotated `kubelet-client-current.pem`).
    KubeconfigFileRef {
        /// The kubeconfig file.
        kubeconfig: PathBuf,
        /// The certificate file it names.
        cert: PathBuf,
    },
    /// The `index`-th certificate of a watched file.
    File {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file (bundles hold several).
        index: usize,
    },
}

impl Source {
    /// The file that holds the certificate itself.
    pub fn cert_path(&self) -> &Path {
        match self {
            Source::PemPair { cert, .. } => cert,
            Source::Kubeconfig { path, .. } => path,
            Source::KubeconfigFileRef { cert, .. } => cert,
            Source::File { path, .. } => path,
        }
    }

    /// Every file behind this place: both files of a pair, a kubeconfig (and the file it points
    /// at), a watched file.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Source::PemPair { cert, key } => vec![cert, key],
            Source::Kubeconfig { path, .. } => vec![path],
            Source::KubeconfigFileRef { kubeconfig, cert } => vec![kubeconfig, cert],
            Source::File { path, .. } => vec![path],
        }
    }

    /// A short human description: the file, and the kubeconfig that points at it if any.
    pub fn describe(&self) -> String {
        match self {
            Source::KubeconfigFileRef { kubeconfig, cert } => format!(
                "{} (referenced by {})",
                cert.display(),
                kubeconfig.display()
            ),
            Source::File { path, index } if *index > 0 => {
                format!("{} (certificate #{})", path.display(), index + 1)
            }
            other => other.cert_path().display().to_string(),
        }
    }
}

/// What we found at an entry's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// A certificate was read.
    Present(Box<CertFacts>),
    /// Expected but not there.
    Missing,
    /// Not there, and that is normal on this node (the reason says why).
    Absent(String),
    /// There but unusable; the reason names the file and the problem.
    Unreadable(String),
}

/// Which CA really signed a leaf, found by verifying the signature (never by subject name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// Verified against (some certificate of) the named CA's file.
    Verified {
        /// kubeadm's CA name.
        ca: &'static str,
    },
    /// No known CA verifies it.
    Unknown,
    /// Not checked (CAs themselves, extra paths, unreadable entries).
    NotChecked,
}

/// One row of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// kubeadm's name (`apiserver`, `admin.conf`, `etcd-ca`…), or the path for extra files.
    pub name: String,
    /// What kind of certificate this is.
    pub kind: Kind,
    /// Where it lives.
    pub source: Source,
    /// The CA kubeadm's mapping assigns (leaves and kubelet.conf).
    pub expected_ca: Option<&'static str>,
    /// The CA that verifiably signed it.
    pub signer: Signer,
    /// Its CA (or, for a CA row, itself) has a certificate but no private key.
    pub externally_managed: bool,
    /// What was found.
    pub state: State,
    /// A CA row whose key file is there but cannot sign for it (it does not parse, or matches
    /// no certificate of the `.crt`): the reason, naming the key file. Its certificate is still
    /// read and shown, but the row is critical: the next renewal of anything it signs would
    /// fail, and the operator must hear of it before then.
    pub key_problem: Option<String>,
    /// For a leaf a known CA verifiably signed: the NotAfter no renewal of it can go past
    /// (see [`Cap`]). `None` for CAs, extra files and leaves no known CA signed.
    pub cap: Option<Cap>,
}

/// How far before its cap a leaf may end and still count as at it: a renewal would gain it no
/// more than this, which is not worth a restart of the control plane.
pub const CAP_SLACK: time::Duration = time::Duration::MINUTE;

/// The end no renewal of a leaf can go past: the NotAfter of the CA certificate that signs its
/// renewals (a renewal is cut to it, as kubeadm does). Past it the chain no longer verifies, so
/// a leaf's life really ends there whatever its own NotAfter says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// kubeadm's name of the CA.
    pub ca: &'static str,
    /// That CA certificate's NotAfter.
    pub not_after: OffsetDateTime,
}

impl Cap {
    /// The rule every decision about capped leaves asks (`check`, the metrics, `renew --due`,
    /// the daemon): a leaf ending at `not_after` is *capped* — a renewal could not move its
    /// NotAfter later — when it ends at the cap, after it (old kubeadm did not cut leaves to
    /// their CA), or less than [`CAP_SLACK`] before it. Re-issuing such a leaf changes nothing
    /// but its serial, and costs a restart; only a rotation of the CA helps.
    pub fn reached_by(&self, not_after: OffsetDateTime) -> bool {
        not_after >= self.not_after - CAP_SLACK
    }
}

impl Entry {
    /// The certificate, when one was read.
    pub fn facts(&self) -> Option<&CertFacts> {
        match &self.state {
            State::Present(f) => Some(f),
            _ => None,
        }
    }

    /// The CA name to show: the verified signer; none when no known CA verifies it; kubeadm's
    /// mapping when the signature was not checked (the certificate could not be read).
    pub fn ca_name(&self) -> Option<&'static str> {
        match self.signer {
            Signer::Verified { ca } => Some(ca),
            Signer::Unknown => None,
            Signer::NotChecked => self.expected_ca,
        }
    }

    /// The cap this certificate has reached ([`Cap::reached_by`]), if it has.
    pub fn capped(&self) -> Option<&Cap> {
        let facts = self.facts()?;
        self.cap
            .as_ref()
            .filter(|cap| cap.reached_by(facts.not_after))
    }
}

/// A CA file as read: all certificates of its bundle, and whether its key exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    /// Which CA.
    pub spec: CaSpec,
    /// `<pki>/<base>.crt`.
    pub cert_path: PathBuf,
    /// `<pki>/<base>.key`.
    pub key_path: PathBuf,
    /// Every certificate in the file, in order (a rotation leaves old + new).
    pub bundle: Vec<CertFacts>,
    /// The key file exists.
    pub has_key: bool,
    /// The position in `bundle` of the certificate whose key is the key file (the one that signs
    /// renewals), when the key is there and matches one.
    pub signing: Option<usize>,
}

impl CaFile {
    /// The certificate a renewal of `leaf` (which this CA verifiably signed) is cut to: the one
    /// whose key is on the node, which signs the renewal; without a usable key (an external
    /// CA, a damaged key), the one that verified it.
    pub fn cap_for(&self, leaf: &CertFacts) -> Option<Cap> {
        let cert = match self.signing.and_then(|i| self.bundle.get(i)) {
            Some(cert) => cert,
            None => self.bundle.iter().find(|c| leaf.is_signed_by(c))?,
        };
        Some(Cap {
            ca: self.spec.name,
            not_after: cert.not_after,
        })
    }
}

/// Everything on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// The CA rows, in kubeadm's order.
    pub cas: Vec<Entry>,
    /// The readable CA files, for signature checks and signing.
    pub ca_files: Vec<CaFile>,
    /// kubeadm's renewable certificates, in kubeadm's order.
    pub leaves: Vec<Entry>,
    /// kubelet.conf and extra paths.
    pub others: Vec<Entry>,
    /// The file each path of the CAs, leaves and kubelet.conf really is (symlinks resolved, as a
    /// write would follow them), so planning sees two names for one file without doing I/O.
    pub real_paths: std::collections::BTreeMap<PathBuf, PathBuf>,
}

impl Inventory {
    /// Every entry: CAs, leaves, others.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.cas.iter().chain(&self.leaves).chain(&self.others)
    }

    /// The CA file of a CA, when it was readable.
    pub fn ca_file(&self, name: &str) -> Option<&CaFile> {
        self.ca_files.iter().find(|c| c.spec.name == name)
    }

    /// The file `path` really is (itself when it is no link or was not inventoried).
    pub fn real_path<'p>(&'p self, path: &'p Path) -> &'p Path {
        self.real_paths.get(path).map_or(path, PathBuf::as_path)
    }

    /// A leaf by kubeadm's name (or `kubelet.conf`).
    pub fn leaf(&self, name: &str) -> Option<&Entry> {
        self.leaves
            .iter()
            .chain(&self.others)
            .find(|e| e.name == name && e.kind != Kind::Extra)
    }
}

/// What to inventory besides kubeadm's fixed set.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Globs of extra certificate files to watch.
    pub extra_paths: Vec<String>,
}

/// The most read of one certificate, key or kubeconfig file. Real ones are a few KiB (a CA
/// bundle of a thousand certificates is about 1.5 MiB); a bigger file is none of them, and is
/// reported without being read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why a file is not one the inventory reads: not a regular file (opening a FIFO would wait for
/// a writer, a device may never end), or bigger than [`MAX_FILE_BYTES`].
pub(crate) fn not_readable(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    };
    if let Some(kind) = kind {
        return Some(format!("not a regular file ({kind})"));
    }
    (meta.len() > MAX_FILE_BYTES).then(|| {
        format!(
            "{} bytes, more than any certificate, key or kubeconfig (at most {} MiB are read)",
            meta.len(),
            MAX_FILE_BYTES >> 20
        )
    })
}

/// Why the file at `path` (links followed) cannot be read, if it is there and cannot; `None`
/// when it is readable or missing.
fn unreadable_file(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(meta) => not_readable(&meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Reads a certificate, key or kubeconfig file: `None` when it does not exist; never more than
/// [`MAX_FILE_BYTES`], never a file that is not a regular one (the error says why).
pub fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    /// `O_NONBLOCK` (Linux, x86_64 and aarch64): should a FIFO be swapped in after the look
    /// below, opening it does not wait for a writer.
    const O_NONBLOCK: i32 = 0o4000;
    let cannot = |why: String| format!("{}: cannot read: {why}", path.display());
    match std::fs::metadata(path) {
        Ok(meta) => {
            if let Some(why) = not_readable(&meta) {
                return Err(cannot(why));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot(e.to_string())),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|e| cannot(e.to_string()))?;
    read_opened(file)
        .map(|(data, _)| Some(data))
        .map_err(cannot)
}

/// Reads a file already opened: refused unless it is a regular file (what stood at the path
/// may have been swapped since it was looked at), never more than [`MAX_FILE_BYTES`]. Returns
/// the bytes and the file's metadata; the error says why, for the caller to name the file.
pub(crate) fn read_opened(file: std::fs::File) -> Result<(Vec<u8>, std::fs::Metadata), String> {
    use std::io::Read;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if let Some(why) = not_readable(&meta) {
        return Err(why);
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or_default());
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("grew past {MAX_FILE_BYTES} bytes while read"));
    }
    Ok((data, meta))
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    read_bounded(path)
}

/// Parses all CERTIFICATE blocks of a PEM file (or a single DER certificate).
pub fn parse_cert_bundle(data: &[u8]) -> Result<Vec<CertFacts>, String> {
    if data.first() == Some(&0x30) {
        return Ok(vec![CertFacts::from_der(data)?]);
    }
    certs_of_blocks(&pem::parse(data)?)
}

/// Like [`parse_cert_bundle`], for kubeadm's own files, which must be PEM: kubeadm,
/// kube-apiserver, etcd and client-go read no other encoding, so a DER file there is broken.
fn parse_pem_cert_bundle(data: &[u8]) -> Result<Vec<CertFacts>, String> {
    if data.first() == Some(&0x30) {
        return Err(
            "DER, not PEM: kubeadm, kube-apiserver, etcd and the kubelet read only PEM \
             (`openssl x509 -inform der` converts it)"
                .into(),
        );
    }
    parse_cert_bundle(data)
}

/// The certificates of a CA file's bytes, which must all be CAs.
pub fn ca_bundle(data: &[u8]) -> Result<Vec<CertFacts>, String> {
    let bundle = parse_cert_bundle(data)?;
    only_cas(&bundle)?;
    Ok(bundle)
}

/// A CA file must hold CA certificates only: a leaf there would sign nothing that verifies, or,
/// with its own key beside it, sign certificates no client accepts.
pub fn only_cas(bundle: &[CertFacts]) -> Result<(), String> {
    for (i, cert) in bundle.iter().enumerate() {
        if !cert.is_ca() {
            let which = if bundle.len() > 1 {
                format!("certificate #{} ({})", i + 1, cert.subject)
            } else {
                format!("its certificate ({})", cert.subject)
            };
            return Err(format!(
                "{which} is not a CA (no basicConstraints CA:TRUE): a CA file must hold CA \
                 certificates"
            ));
        }
    }
    Ok(())
}

/// The CA key `key_pem` (read from `key_path`) parsed, and the certificate of its CA file's
/// `bundle` (from `cert_path`) it is the private key of — or why it cannot sign for that CA,
/// naming the key file: one check for `check`, the renewal, the snapshot and `recover`, so all
/// four judge a CA key alike (another cluster's key copied in, a truncated file, a key of
/// another algorithm).
pub fn ca_key_match<'b>(
    key_pem: &[u8],
    bundle: &'b [CertFacts],
    key_path: &Path,
    cert_path: &Path,
) -> Result<(PrivateKey, &'b CertFacts), String> {
    let key = keys::parse_private_key(key_pem).map_err(|e| {
        format!(
            "{}: does not parse as a private key ({e})",
            key_path.display()
        )
    })?;
    if let Some(cert) = bundle
        .iter()
        .find(|c| keys::matches_spki(&key.pair, &c.spki_der))
    {
        return Ok((key, cert));
    }
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key.pair);
    let algorithm = |der: &[u8]| {
        keys::algorithm_of_spki(der).map_or_else(|_| "unknown".to_string(), |a| a.to_string())
    };
    let mine = algorithm(&spki);
    let theirs: Vec<String> = bundle.iter().map(|c| algorithm(&c.spki_der)).collect();
    let how = if theirs.iter().all(|t| *t == mine) {
        format!("another {mine} key: not this CA's")
    } else {
        format!("the key is {mine}, the certificate {}", theirs.join(" / "))
    };
    Err(format!(
        "{}: this key matches no certificate in {} ({how})",
        key_path.display(),
        cert_path.display()
    ))
}

fn certs_of_blocks(blocks: &[pem::Block]) -> Result<Vec<CertFacts>, String> {
    let certs: Vec<&pem::Block> = blocks.iter().filter(|b| b.label == "CERTIFICATE").collect();
    if certs.is_empty() {
        return Err(if blocks.is_empty() {
            "no PEM data (empty or not a certificate file)".into()
        } else {
            "no CERTIFICATE block in the file".into()
        });
    }
    certs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            CertFacts::from_der(&b.der).map_err(|e| {
                if certs.len() > 1 {
                    format!("certificate #{}: {e}", i + 1)
                } else {
                    e
                }
            })
        })
        .collect()
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn read_ca(pki: &Path, spec: CaSpec) -> (Entry, Option<CaFile>) {
    let cert_path = pki.join(format!("{}.crt", spec.base));
    let key_path = pki.join(format!("{}.key", spec.base));
    let has_key = exists(&key_path);
    let mut entry = Entry {
        name: spec.name.to_string(),
        kind: Kind::Ca,
        source: Source::PemPair {
            cert: cert_path.clone(),
            key: key_path.clone(),
        },
        expected_ca: None,
        signer: Signer::NotChecked,
        externally_managed: false,
        state: State::Missing,
        key_problem: None,
        cap: None,
    };
    let data = match read_file(&cert_path) {
        Ok(Some(d)) => d,
        Ok(None) => return (entry, None),
        Err(e) => {
            entry.state = State::Unreadable(e);
            return (entry, None);
        }
    };
    match parse_pem_cert_bundle(&data).and_then(|b| only_cas(&b).map(|()| b)) {
        Ok(bundle) => {
            entry.externally_managed = !has_key;
            entry.state = State::Present(Box::new(bundle[0].clone()));
            // a key that cannot be read (a FIFO, a huge file) is never opened to sign
            let key_problem = unreadable_file(&key_path).filter(|_| has_key);
            let mut signing = None;
            if let Some(why) = &key_problem {
                entry.externally_managed = false;
                entry.state =
                    State::Unreadable(format!("{}: cannot read: {why}", key_path.display()));
            } else if has_key {
                // read to be judged, never to sign here (the renewal reads it again)
                entry.key_problem = match read_bounded(&key_path) {
                    Ok(Some(key)) => match ca_key_match(&key, &bundle, &key_path, &cert_path) {
                        Ok((_, cert)) => {
                            signing = bundle.iter().position(|c| std::ptr::eq(c, cert));
                            None
                        }
                        Err(e) => Some(e),
                    },
                    Ok(None) => None,
                    Err(e) => Some(e),
                };
            }
            let file = CaFile {
                spec,
                cert_path,
                key_path,
                bundle,
                has_key: has_key && key_problem.is_none(),
                signing,
            };
            (entry, Some(file))
        }
        Err(e) => {
            entry.state = State::Unreadable(format!("{}: {e}", cert_path.display()));
            (entry, None)
        }
    }
}

/// Finds which CA signed `facts`: the expected CA first, then the others; each CA file may be a
/// bundle, and every certificate in it is tried.
pub fn find_signer(facts: &CertFacts, expected: Option<&str>, cas: &[CaFile]) -> Signer {
    let ordered = cas
        .iter()
        .filter(|c| Some(c.spec.name) == expected)
        .chain(cas.iter().filter(|c| Some(c.spec.name) != expected));
    for ca in ordered {
        if ca.bundle.iter().any(|ca_cert| facts.is_signed_by(ca_cert)) {
            return Signer::Verified { ca: ca.spec.name };
        }
    }
    Signer::Unknown
}

fn leaf_entry(
    name: &str,
    kind: Kind,
    expected_ca: Option<&'static str>,
    source: Source,
    state: State,
) -> Entry {
    Entry {
        name: name.to_string(),
        kind,
        source,
        expected_ca,
        signer: Signer::NotChecked,
        externally_managed: false,
        state,
        key_problem: None,
        cap: None,
    }
}

/// Reads a kubeconfig's current-context client certificate.
fn read_kubeconfig(path: &Path, name: &str, kind: Kind, expected_ca: &'static str) -> Entry {
    let entry =
        |source: Source, state: State| leaf_entry(name, kind, Some(expected_ca), source, state);
    let unlocated = Source::Kubeconfig {
        path: path.to_path_buf(),
        user: String::new(),
    };
    let text = match read_file(path) {
        Ok(Some(d)) => match String::from_utf8(d) {
            Ok(t) => t,
            Err(_) => {
                let why = format!("{}: not a text file", path.display());
                return entry(unlocated, State::Unreadable(why));
            }
        },
        Ok(None) => return entry(unlocated, State::Missing),
        Err(e) => return entry(unlocated, State::Unreadable(e)),
    };
    let creds = match kubeconfig::credentials(&text, path) {
        Ok(c) => c,
        Err(e) => {
            return entry(
                unlocated,
                State::Unreadable(format!("{}: {e}", path.display())),
            );
        }
    };
    match creds.client {
        ClientCert::Embedded { cert_pem, .. } => {
            let state = match parse_pem_cert_bundle(&cert_pem) {
                Ok(mut certs) => State::Present(Box::new(certs.swap_remove(0))),
                Err(e) => {
                    State::Unreadable(format!("{}: client-certificate-data: {e}", path.display()))
                }
            };
            let source = Source::Kubeconfig {
                path: path.to_path_buf(),
                user: creds.user,
            };
            entry(source, state)
        }
        ClientCert::Files { cert, .. } => {
            let state = leaf_file_state(&cert);
            let source = Source::KubeconfigFileRef {
                kubeconfig: path.to_path_buf(),
                cert,
            };
            entry(source, state)
        }
    }
}

/// The first certificate of a file (what kubeadm reads), as an entry state.
fn leaf_file_state(cert: &Path) -> State {
    match read_file(cert) {
        Ok(Some(data)) => match parse_pem_cert_bundle(&data) {
            Ok(mut certs) => State::Present(Box::new(certs.swap_remove(0))),
            Err(e) => State::Unreadable(format!("{}: {e}", cert.display())),
        },
        Ok(None) => State::Missing,
        Err(e) => State::Unreadable(e),
    }
}

fn read_pem_leaf(pki: &Path, spec: &LeafSpec, base: &str) -> Entry {
    let cert = pki.join(format!("{base}.crt"));
    let key = pki.join(format!("{base}.key"));
    let mut state = leaf_file_state(&cert);
    // the renewal reads the key: one that cannot be read makes the pair unusable
    if let (State::Present(_), Some(why)) = (&state, unreadable_file(&key)) {
        state = State::Unreadable(format!("{}: cannot read: {why}", key.display()));
    }
    leaf_entry(
        spec.name,
        Kind::Leaf,
        Some(spec.ca.name),
        Source::PemPair { cert, key },
        state,
    )
}

/// No etcd with TLS of this node's own: none of [`kubeadm::LOCAL_ETCD_FILES`] and no etcd
/// manifest naming certificates (an external etcd's CA certificate and client pair may still
/// be here; a plain-HTTP etcd of kubeadm ≤ 1.9 has none).
fn no_local_etcd(pki: &Path, manifests: &Path) -> bool {
    let manifest_tls = read_bounded(&manifests.join("etcd.yaml"))
        .ok()
        .flatten()
        .is_some_and(|m| kubeadm::etcd_manifest_uses_tls(&m));
    !kubeadm::LOCAL_ETCD_FILES
        .iter()
        .any(|f| exists(&pki.join(f)))
        && !manifest_tls
}

/// The files whose names are not UTF-8 that the last component of `pattern` matches: the glob
/// crate skips such names (its FIXME #9639), and a watched file must not vanish silently. Only
/// for a pattern whose directory part has no wildcard; the name is matched as shown (lossily).
fn non_utf8_matches(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let (Some(dir), Some(last)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let wild = |s: &str| s.contains(['*', '?', '[']);
    let (Some(dir_text), Ok(last)) = (dir.to_str(), glob::Pattern::new(last)) else {
        return Vec::new();
    };
    if wild(dir_text) || dir_text.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_str().is_none() && last.matches(&n.to_string_lossy()))
        .map(|n| dir.join(n))
        .collect()
}

fn expand_extra_paths(patterns: &[String]) -> (Vec<PathBuf>, Vec<Entry>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for pattern in patterns {
        match glob::glob(pattern) {
            Ok(paths) => {
                for p in paths {
                    match p {
                        Ok(path) => files.push(path),
                        Err(e) => errors.push(leaf_entry(
                            &e.path().display().to_string(),
                            Kind::Extra,
                            None,
                            Source::File {
                                path: e.path().to_path_buf(),
                                index: 0,
                            },
                            State::Unreadable(format!("{}: {}", e.path().display(), e.error())),
                        )),
                    }
                }
                files.extend(non_utf8_matches(pattern));
            }
            Err(e) => errors.push(leaf_entry(
                pattern,
                Kind::Extra,
                None,
                Source::File {
                    path: PathBuf::from(pattern),
                    index: 0,
                },
                State::Unreadable(format!("extra_paths: bad glob {pattern:?}: {e}")),
            )),
        }
    }
    files.sort();
    files.dedup();
    (files, errors)
}

fn read_extra_file(path: &Path, out: &mut Vec<Entry>) {
    let name = path.display().to_string();
    let source = |index| Source::File {
        path: path.to_path_buf(),
        index,
    };
    // a directory the glob matched: nothing to watch
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let data = match read_bounded(path) {
        Ok(Some(d)) => d,
        // vanished between glob and read
        Ok(None) => return,
        Err(e) => {
            out.push(leaf_entry(
                &name,
                Kind::Extra,
                None,
                source(0),
                State::Unreadable(e),
            ));
            return;
        }
    };
    // A key file matched by a broad glob is not a problem: skip it silently.
    if data.first() != Some(&0x30)
        && let Ok(blocks) = pem::parse(&data)
        && !blocks.is_empty()
        && blocks
            .iter()
            .all(|b| b.label.ends_with("PRIVATE KEY") || b.label == "PUBLIC KEY")
    {
        return;
    }
    match parse_cert_bundle(&data) {
        Ok(certs) => {
            for (index, facts) in certs.into_iter().enumerate() {
                let name = if index == 0 {
                    name.clone()
                } else {
                    format!("{name}#{}", index + 1)
                };
                out.push(leaf_entry(
                    &name,
                    Kind::Extra,
                    None,
                    source(index),
                    State::Present(Box::new(facts)),
                ));
            }
        }
        Err(e) => out.push(leaf_entry(
            &name,
            Kind::Extra,
            None,
            source(0),
            State::Unreadable(format!("{}: {e}", path.display())),
        )),
    }
}

/// Reads the whole node.
pub fn scan(paths: &NodePaths, options: &Options) -> Inventory {
    let pki = &paths.pki;
    let etcd_absent = no_local_etcd(pki, &paths.manifests);
    let mut cas = Vec::new();
    let mut ca_files = Vec::new();
    for spec in kubeadm::CAS {
        let (mut entry, file) = read_ca(pki, spec);
        if spec == kubeadm::ETCD_CA && etcd_absent && entry.state == State::Missing {
            entry.state =
                State::Absent("no local etcd (external etcd, or etcd without TLS)".into());
        }
        cas.push(entry);
        ca_files.extend(file);
    }
    let externally_managed = |ca: &str| {
        ca_files.iter().any(|f| f.spec.name == ca && !f.has_key)
            && !cas
                .iter()
                .any(|e| e.name == ca && matches!(e.state, State::Unreadable(_)))
    };

    let mut leaves = Vec::new();
    for spec in &kubeadm::LEAVES {
        let mut entry = match spec.file {
            LeafFile::PemPair(base) => read_pem_leaf(pki, spec, base),
            LeafFile::Kubeconfig(file) => read_kubeconfig(
                &paths.kubeconfigs.join(file),
                spec.name,
                Kind::Leaf,
                spec.ca.name,
            ),
        };
        if entry.state == State::Missing {
            if spec.optional {
                entry.state =
                    State::Absent("exists only on the node where `kubeadm init` ran".into());
            } else if spec.etcd && etcd_absent {
                entry.state =
                    State::Absent("no local etcd (external etcd, or etcd without TLS)".into());
            }
        }
        leaves.push(entry);
    }
    // the product's own Lease credential, once issued: renewed like kubeadm's kubeconfigs
    let own = paths.kubeconfigs.join(kubeadm::LEASE_KUBECONFIG);
    if own.symlink_metadata().is_ok() {
        leaves.push(read_kubeconfig(
            &own,
            kubeadm::LEASE_KUBECONFIG,
            Kind::Leaf,
            kubeadm::CA.name,
        ));
    }

    let mut others = vec![read_kubeconfig(
        &paths.kubeconfigs.join(kubeadm::KUBELET_CONF),
        kubeadm::KUBELET_CONF,
        Kind::KubeletClient,
        kubeadm::CA.name,
    )];

    for entry in leaves.iter_mut().chain(others.iter_mut()) {
        if let State::Present(facts) = &entry.state {
            entry.signer = find_signer(facts, entry.expected_ca, &ca_files);
            if let Signer::Verified { ca } = entry.signer {
                entry.cap = ca_files
                    .iter()
                    .find(|f| f.spec.name == ca)
                    .and_then(|f| f.cap_for(facts));
            }
        }
        if let Some(ca) = entry.ca_name().or(entry.expected_ca) {
            entry.externally_managed = externally_managed(ca);
        }
    }

    let (files, mut errors) = expand_extra_paths(&options.extra_paths);
    others.append(&mut errors);
    for file in files {
        read_extra_file(&file, &mut others);
    }

    let real_paths = cas
        .iter()
        .chain(&leaves)
        .chain(others.iter().filter(|e| e.kind != Kind::Extra))
        .flat_map(|e| e.source.files())
        .filter_map(|p| Some((p.to_path_buf(), std::fs::canonicalize(p).ok()?)))
        .collect();
    Inventory {
        cas,
        ca_files,
        leaves,
        others,
        real_paths,
    }
}
