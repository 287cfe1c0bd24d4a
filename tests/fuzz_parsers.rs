//! Property-based fuzzing of every parser that reads a file an operator, a broken copy or an
//! attacker can put on a node (issue 12, "Fuzzing"): the PEM reader and the certificate-bundle
//! parser, the kubeconfig reader and its in-place editor, the static-pod manifest reader with the
//! health check derived from it, the two state-dir records (the intent journal, read and
//! acted on by `journal::recover`, and the restart-pending record), and what `recover` reads
//! to rebuild a node: a kubeadm config (`facts::parse_kubeadm_config`, then `facts::gather`),
//! the snapshots' MANIFESTs (`snapshot::list`/`broken`/`Snapshot::read`), and the planner itself
//! (`plan::plan_secrets`/`plan_leaves` over a damaged node and damaged snapshots).
//!
//! Why: these run as root on every command and in the daemon, over files the product does not
//! control. A panic there is a crashed daemon (or a renewal stopped half-way); a wrong "success"
//! is worse. So each target gets arbitrary input, and mutations (truncation, byte flips, deleted
//! and duplicated ranges, inserted garbage and syntax tokens, DER for PEM) of real material: a
//! node made by `demo::nodegen::generate` and the published kubeadm trees in
//! `tests/fixtures/kubeadm-real`; certificates also get changes that keep their DER well-formed
//! (new contents, tags or dates for one element), so the parse reaches names, dates and
//! extensions, and manifests get arbitrary values for the flags the health check reads.
//! Besides "never panics" (a panic fails the case and proptest shrinks it to a minimal input)
//! each target asserts what must hold of its answer: errors are non-empty text naming the file
//! where the reader knows it; a PEM block re-encodes to itself; a cut inside a PEM block is
//! refused; an edited kubeconfig keeps every byte outside the replaced values and reads back with
//! the new credentials, and rewrites that keep its meaning (comments, quoting, CRLF, flow style)
//! never stop the edit; a journal that is garbage is refused with
//! nothing touched, a failed recovery keeps the journal as it was, and a restart-pending record
//! that cannot be read is never overwritten. Journals that parse are only run when every path
//! they name lies in the case's sandbox (a mutation could point one at the host).
//! A kubeadm config (the published v1beta1 file, v1beta3/v1beta4 Init/Cluster/Join documents
//! and a legacy one, mutated, or JSON with arbitrary values for every field read) parses to
//! trimmed, non-empty values or an error, and the facts gathered with it name the node, the
//! config's values winning where it is the most specific source. A planted snapshot MANIFEST
//! (arbitrary, mutated from one `snapshot::take` wrote, or lines of climbing, absolute and odd
//! copy paths) never makes a listed snapshot's copy lie outside its own directory (what keeps a
//! MANIFEST from making `recover` read an arbitrary file), and never hides the good snapshot
//! beside it. The planner, over a generated node with files deleted, mutated, swapped for
//! another cluster's or unreadable, and 0–2 damaged snapshots: restores only files missing from
//! the node (or a CA key there that cannot sign for its certificate, by a copy that can), byte
//! for byte the named snapshot's copy, and only files the newest snapshot has;
//! re-issues from templates that parse; reports an unreadable secret as a refusal and a CA or
//! `sa.key` gone everywhere as a stop (then, as in `recover`, no second phase runs).
//!
//! cargo-fuzz is not used: it needs `cargo-fuzz` and a fuzz crate outside this package, and CI
//! runs `cargo test` on stable. This is proptest over the same entry points, with a bounded
//! number of cases per target in `cargo test`; `KCR_FUZZ_CASES=<n>` raises every target to at
//! least `n` cases for a long local run (`PROPTEST_RNG_SEED` replays a run). Each target writes
//! one line to stderr, `fuzz <target>: <n> cases (<k> accepted), 0 panics, <seconds>s`, where
//! "accepted" counts the inputs the entry point took (parsed, edited, recovered): how deep the
//! cases reached.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError};
use time::OffsetDateTime;

use kube_cert_renewer::config::NodePaths;
use kube_cert_renewer::demo::nodegen::{self, NodeSpec};
use kube_cert_renewer::node::manifest::StaticPod;
use kube_cert_renewer::node::{manifest, restart};
use kube_cert_renewer::pki::cert::CertFacts;
use kube_cert_renewer::pki::keys::{self, KeyAlgorithm, KeyEncoding};
use kube_cert_renewer::pki::kubeadm;
use kube_cert_renewer::pki::kubeconfig::{self, ClientCert, NewCredentials};
use kube_cert_renewer::pki::{inventory, pem};
use kube_cert_renewer::recover::facts::{self, FactSources};
use kube_cert_renewer::recover::plan::{
    self, Action, EffectiveCa, Layout, LeafOptions, Observed, OnNode, Plan, SnapshotFiles, Template,
};
use kube_cert_renewer::state::journal::{self, FileIntent, Intent, ParkedManifest};
use kube_cert_renewer::state::snapshot::{self, Taken};
use kube_cert_renewer::state::{pending, store};

// ---------------------------------------------------------------------------------------------
// Case counts and the execution tally.

/// The cases of one target: its default (sized so the whole file stays under a minute in a
/// debug build on two cores), raised to `KCR_FUZZ_CASES` when that is larger.
fn config(default_cases: u32) -> ProptestConfig {
    let cases = match std::env::var("KCR_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse::<u32>()
            .unwrap_or_else(|_| panic!("KCR_FUZZ_CASES={v:?} is not a number of cases"))
            .max(default_cases),
        Err(_) => default_cases,
    };
    ProptestConfig {
        cases,
        // A failure is shown shrunk; the fixed regression cases below are plain tests, so no
        // file is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Counts the executions of one target's property and reports them.
struct Runs {
    target: &'static str,
    count: AtomicU64,
    accepted: AtomicU64,
    started: Instant,
}

impl Runs {
    fn new(target: &'static str) -> Runs {
        Runs {
            target,
            count: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn hit(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a case whose input the entry point accepted (parsed, edited, recovered): how
    /// deep the inputs reach, and a check that the strategies are not all refused at the door.
    fn accepted(&self, accepted: bool) {
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One line on stderr (written directly, so the test harness does not swallow it). Only
    /// reached when every case passed: a panic or a failed property fails the test instead.
    fn report(&self, expected: u32) {
        let n = self.count.load(Ordering::Relaxed);
        assert!(
            n >= u64::from(expected),
            "{}: only {n} of {expected} cases ran",
            self.target
        );
        let accepted = self.accepted.load(Ordering::Relaxed);
        let line = format!(
            "fuzz {}: {n} cases ({accepted} accepted), 0 panics, {:.1}s\n",
            self.target,
            self.started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Runs one `proptest!` block under a tally: `fuzz!(target, default_cases, |runs, cfg| block)`.
macro_rules! fuzz {
    ($target:literal, $cases:expr, |$runs:ident, $cfg:ident| $block:block) => {{
        let $cfg = config($cases);
        // what the runner will do (PROPTEST_CASES, if set, has the last word)
        let expected = proptest::test_runner::contextualize_config($cfg.clone()).cases;
        let $runs = Runs::new($target);
        $block
        $runs.report(expected);
    }};
}

// ---------------------------------------------------------------------------------------------
// The corpus: real material from a generated node and the published kubeadm trees.

struct Corpus {
    /// PEM files: certificates, CA bundles, keys of every encoding, sa.pub.
    pem_files: Vec<Vec<u8>>,
    /// Certificates as DER (what a PEM file would be if someone converted it).
    der_certs: Vec<Vec<u8>>,
    /// Private keys as DER (a key where a certificate belongs).
    der_keys: Vec<Vec<u8>>,
    /// Every kubeconfig, embedded credentials or file references.
    kubeconfigs: Vec<String>,
    /// Every static-pod manifest.
    manifests: Vec<String>,
    /// Real replacement material for the kubeconfig editor: (cert PEM, key PEM, CA PEM).
    fresh: (Vec<u8>, Vec<u8>, Vec<u8>),
    /// kubeadm config files: the published one and documents in the newer API shapes.
    kubeadm_configs: Vec<String>,
    /// Every static-pod manifest that parses, as `facts::gather` gets them.
    pods: Vec<StaticPod>,
    /// The generated nodes, file by file (the planner's input: the files are gone from disk,
    /// the plan is a pure function of their bytes).
    nodes: Vec<GeneratedNode>,
    /// A snapshot `snapshot::take` made of the RSA node: its MANIFEST and its copies (path
    /// inside the snapshot → bytes).
    snapshot: (Vec<u8>, Vec<(PathBuf, Vec<u8>)>),
}

/// One generated node: its layout and every file below its kubernetes dir.
struct GeneratedNode {
    layout: Layout,
    /// The kubernetes dir, to name files by their place in it.
    root: PathBuf,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

/// A temp dir for one case, in memory when `/dev/shm` is there: thousands of cases each write a
/// few files, and on a disk those writes would be most of the run.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix(".kcr-fuzz").tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_below(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let now = OffsetDateTime::now_utc();
        let generated = scratch_dir();
        let rsa = generated.path().join("rsa");
        nodegen::generate(&rsa, &NodeSpec::new(now, 30)).unwrap();
        let ec = generated.path().join("ec");
        let mut spec = NodeSpec::new(now, 30);
        spec.key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.key_encoding = Some(KeyEncoding::Pkcs8);
        spec.kubelet_cert_file = Some(ec.join("kubelet-client-current.pem"));
        nodegen::generate(&ec, &spec).unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubeadm-real");

        // a snapshot of the RSA node, as the daemon takes it
        let paths = NodePaths {
            pki: rsa.join("pki"),
            kubeconfigs: rsa.clone(),
            manifests: rsa.join("manifests"),
            state: generated.path().join("state"),
        };
        let Ok(Taken::Created(snap)) = snapshot::take(&paths, &rsa, now, 3, false) else {
            panic!("no snapshot of the generated node")
        };
        let manifest = std::fs::read(snap.join("MANIFEST")).unwrap();
        let copies = store::backup_entries(&snap)
            .unwrap()
            .into_iter()
            .map(|(copy, _)| {
                let data = std::fs::read(&copy).unwrap();
                (copy.strip_prefix(&snap).unwrap().to_path_buf(), data)
            })
            .collect::<Vec<_>>();
        assert!(copies.len() > 30, "{}", copies.len());
        let nodes = [&rsa, &ec]
            .iter()
            .map(|k| {
                let mut below = Vec::new();
                files_below(k, &mut below);
                GeneratedNode {
                    layout: Layout {
                        pki: k.join("pki"),
                        kubeconfigs: k.to_path_buf(),
                        manifests: k.join("manifests"),
                    },
                    root: k.to_path_buf(),
                    files: below
                        .into_iter()
                        .map(|f| {
                            let data = std::fs::read(&f).unwrap();
                            (f, data)
                        })
                        .collect(),
                }
            })
            .collect();
        std::fs::remove_dir_all(generated.path().join("state")).unwrap();
        let published =
            std::fs::read_to_string(fixtures.join("v1.14-stacked-etcd/kubeadm.conf")).unwrap();

        let mut files = Vec::new();
        files_below(generated.path(), &mut files);
        files_below(&fixtures, &mut files);
        let mut corpus = Corpus {
            pem_files: Vec::new(),
            der_certs: Vec::new(),
            der_keys: Vec::new(),
            kubeconfigs: Vec::new(),
            manifests: Vec::new(),
            fresh: (
                std::fs::read(rsa.join("pki/apiserver-kubelet-client.crt")).unwrap(),
                std::fs::read(rsa.join("pki/apiserver-kubelet-client.key")).unwrap(),
                std::fs::read(rsa.join("pki/ca.crt")).unwrap(),
            ),
            kubeadm_configs: [published]
                .into_iter()
                .chain(KUBEADM_CONFIGS.iter().map(|c| c.to_string()))
                .collect(),
            pods: Vec::new(),
            nodes,
            snapshot: (manifest, copies),
        };
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
            match ext {
                "crt" | "key" | "pub" | "pem" => {
                    for block in pem::parse(&data).unwrap() {
                        if block.label == "CERTIFICATE" {
                            corpus.der_certs.push(block.der);
                        } else if block.label.ends_with("PRIVATE KEY") {
                            corpus.der_keys.push(block.der);
                        }
                    }
                    corpus.pem_files.push(data);
                }
                "conf" if String::from_utf8_lossy(&data).contains("current-context") => {
                    corpus.kubeconfigs.push(String::from_utf8(data).unwrap());
                }
                "yaml" if file.parent().is_some_and(|p| p.ends_with("manifests")) => {
                    let text = String::from_utf8(data).unwrap();
                    if let Ok(pod) = manifest::parse(&text, &file) {
                        corpus.pods.push(pod);
                    }
                    corpus.manifests.push(text);
                }
                _ => {}
            }
        }
        // A CA bundle of several certificates, as a CA rotation leaves it.
        let bundle: Vec<u8> = corpus
            .der_certs
            .iter()
            .take(3)
            .flat_map(|der| pem::encode("CERTIFICATE", der).into_bytes())
            .collect();
        corpus.pem_files.push(bundle);
        assert!(corpus.pem_files.len() > 60, "{}", corpus.pem_files.len());
        assert!(
            corpus.kubeconfigs.len() > 25,
            "{}",
            corpus.kubeconfigs.len()
        );
        assert!(corpus.manifests.len() > 15, "{}", corpus.manifests.len());
        assert!(corpus.pods.len() > 15, "{}", corpus.pods.len());
        corpus
    })
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// Text that means something to one of the parsers, for insertions.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "\n", "\r\n", "\r", " ", "  ", "\t", ":", ": ", "- ", "-", "#", "# c\n", "'", "\"", "\\", "{",
    "}", "[", "]", ",", "&a ", "*a", "<<: *a\n", "!!binary ", "!!str ", "!<tag> ", "|\n", ">-\n",
    "? ", "---\n", "...\n", "%YAML 1.2\n", "\u{feff}", "\u{0}", "\u{85}", "\u{2028}", "é", "~",
    "null", "yes", "0x1F", "1e309", "=", "==", "+/", "-----", "-----BEGIN CERTIFICATE-----\n",
    "-----END CERTIFICATE-----\n", "-----BEGIN RSA PRIVATE KEY-----\n", "Proc-Type: 4,ENCRYPTED\n",
    "current-context: ", "users:\n", "- name: ", "user:\n", "client-certificate-data: ",
    "client-key-data: ", "certificate-authority-data: ", "client-certificate: ", "contexts:\n",
    "context: ", "clusters:\n", "containers:\n", "command:\n", "--secure-port=", "--bind-address=",
    "--advertise-address=", "--listen-client-urls=", "https://", "https://[::]:",
    "https://localhost:", "0.0.0.0", "::", "[", "65536", "0", "{\"op\":", "\"renew\"", "\"park\"",
    "\"restore\"", "\"files\":[", "\"manifests\":[", "\"backup\":",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only what is before this point (a cut-off copy).
    Truncate(Index),
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Insert arbitrary bytes.
    Garbage(Index, Vec<u8>),
    /// Insert a token one of the parsers knows.
    Token(Index, &'static str),
    /// Delete up to this many bytes.
    Delete(Index, usize),
    /// Copy a range somewhere else (a duplicated line or key).
    Duplicate(Index, usize, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), vec(any::<u8>(), 1..16)).prop_map(|(i, g)| Mutation::Garbage(i, g)),
        3 => (any::<Index>(), select(TOKENS)).prop_map(|(i, t)| Mutation::Token(i, t)),
        2 => (any::<Index>(), 1..200usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1..200usize, any::<Index>())
            .prop_map(|(i, n, j)| Mutation::Duplicate(i, n, j)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..5)
}

fn mutate(data: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = data.len();
        match m {
            Mutation::Truncate(at) => data.truncate(at.index(len + 1)),
            Mutation::Flip(at, mask) if len > 0 => data[at.index(len)] ^= mask,
            Mutation::Flip(..) => {}
            Mutation::Garbage(at, bytes) => {
                let at = at.index(len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Token(at, token) => {
                let at = at.index(len + 1);
                data.splice(at..at, token.bytes());
            }
            Mutation::Delete(at, n) => {
                let at = at.index(len + 1);
                data.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(from, n, to) if len > 0 => {
                let from = from.index(len);
                let chunk = data[from..(from + n).min(len)].to_vec();
                let to = to.index(len + 1);
                data.splice(to..to, chunk);
            }
            Mutation::Duplicate(..) => {}
        }
    }
}

/// Bytes shown as an escaped string when proptest reports a failing input.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Arbitrary bytes.
fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes)
}

/// One of `seeds` as it is.
fn seed(seeds: &'static [Vec<u8>]) -> impl Strategy<Value = Bytes> {
    select(seeds).prop_map(Bytes)
}

/// A mutated copy of one of `seeds`, as bytes.
fn mutated(seeds: &'static [Vec<u8>]) -> impl Strategy<Value = Bytes> {
    (select(seeds), mutations()).prop_map(|(mut data, ms)| {
        mutate(&mut data, &ms);
        Bytes(data)
    })
}

/// A mutated copy of one of `seeds`, as text (invalid UTF-8 replaced, as a text reader must
/// see it after `read_to_string` accepted it).
fn mutated_text(seeds: &'static [String]) -> impl Strategy<Value = String> {
    (select(seeds), mutations()).prop_map(|(seed, ms)| {
        let mut data = seed.clone().into_bytes();
        mutate(&mut data, &ms);
        String::from_utf8_lossy(&data).into_owned()
    })
}

/// YAML-ish text: a soup of syntax tokens, key names and words.
fn token_soup() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            3 => select(TOKENS).prop_map(str::to_string),
            1 => "[a-zA-Z0-9@./=+-]{1,12}",
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

fn leak<T>(v: Vec<T>) -> &'static [T] {
    Vec::leak(v)
}

// ---------------------------------------------------------------------------------------------
// 1. The PEM reader and the certificate-bundle parser.

/// What must hold of any input: no panic; an error is text; a block re-encodes to itself; the
/// bundle parser finds exactly the CERTIFICATE blocks, each a certificate that re-parses.
/// Returns whether the bundle parser accepted it.
fn check_pem(data: &[u8]) -> Result<bool, TestCaseError> {
    let blocks = pem::parse(data);
    match &blocks {
        Ok(blocks) => {
            for b in blocks {
                prop_assert!(!b.der.is_empty(), "an empty block was returned");
                let again = pem::parse(pem::encode(&b.label, &b.der).as_bytes());
                prop_assert_eq!(again, Ok(vec![b.clone()]), "block does not re-encode");
            }
        }
        Err(e) => prop_assert!(!e.trim().is_empty(), "empty PEM error"),
    }
    match inventory::parse_cert_bundle(data) {
        Ok(certs) => {
            prop_assert!(!certs.is_empty(), "Ok with no certificate");
            if data.first() != Some(&0x30) {
                let n = blocks
                    .as_ref()
                    .map_err(|e| TestCaseError::fail(format!("bundle Ok, PEM Err: {e}")))?
                    .iter()
                    .filter(|b| b.label == "CERTIFICATE")
                    .count();
                prop_assert_eq!(certs.len(), n, "not every CERTIFICATE block is counted");
            }
            for c in &certs {
                prop_assert_eq!(&CertFacts::from_der(&c.der), &Ok(c.clone()));
            }
            Ok(true)
        }
        Err(e) => {
            prop_assert!(!e.trim().is_empty(), "empty bundle error");
            Ok(false)
        }
    }
}

const LABELS: &[&str] = &[
    "CERTIFICATE",
    "RSA PRIVATE KEY",
    "PRIVATE KEY",
    "",
    "X-----Y",
];

/// PEM-shaped text: BEGIN/END lines with labels, base64 lines (real or not), headers, junk.
fn pem_soup() -> impl Strategy<Value = Bytes> {
    let line = prop_oneof![
        select(LABELS).prop_map(|l| format!("-----BEGIN {l}-----")),
        select(LABELS).prop_map(|l| format!("-----END {l}-----")),
        "[A-Za-z0-9+/]{0,64}={0,3}",
        "[A-Za-z0-9+/= \t:-]{0,40}",
        vec(any::<u8>(), 0..48).prop_map(|d| STANDARD.encode(d)),
        Just("Proc-Type: 4,ENCRYPTED".to_string()),
    ];
    vec(line, 0..24).prop_map(|lines| Bytes(lines.join("\n").into_bytes()))
}

#[test]
fn pem_reader_and_bundles_on_arbitrary_input() {
    fuzz!("pem+bundle arbitrary", 4000, |runs, cfg| {
        proptest!(cfg, |(data in prop_oneof![bytes(2048), pem_soup()])| {
            runs.hit();
            runs.accepted(check_pem(&data)?);
        });
    });
}

#[test]
fn pem_reader_and_bundles_on_mutated_real_files() {
    let c = corpus();
    let seeds = leak(c.pem_files.clone());
    let ders = leak([c.der_certs.clone(), c.der_keys.clone()].concat());
    // the seeds themselves are valid: what the mutations start from is real
    for seed in seeds {
        check_pem(seed).unwrap();
        pem::parse(seed).unwrap();
    }
    for der in &c.der_certs {
        inventory::parse_cert_bundle(der).unwrap();
    }
    fuzz!("pem+bundle mutated (PEM and DER)", 9000, |runs, cfg| {
        proptest!(cfg, |(data in prop_oneof![mutated(seeds), mutated(ders), seed(ders)])| {
            runs.hit();
            runs.accepted(check_pem(&data)?);
        });
    });
}

/// One primitive element of a DER tree: where its tag byte is and where its contents are.
#[derive(Debug, Clone, Copy)]
struct Primitive {
    tag_at: usize,
    start: usize,
    len: usize,
}

/// The primitive elements of definite-length DER, depth first: constructed elements are
/// entered, and so are OCTET and BIT STRINGs that hold DER themselves (extension values, public
/// keys), so a change lands inside a SAN list or a basicConstraints as well. Returns whether
/// `der` was exactly a sequence of elements.
fn primitives(der: &[u8], base: usize, out: &mut Vec<Primitive>) -> bool {
    let mut at = 0;
    while at < der.len() {
        if at + 2 > der.len() {
            return false;
        }
        let tag = der[at];
        let first = der[at + 1] as usize;
        let (len, header) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 || at + 2 + n > der.len() {
                return false;
            }
            let len = der[at + 2..at + 2 + n]
                .iter()
                .fold(0usize, |acc, b| acc << 8 | *b as usize);
            (len, 2 + n)
        };
        let start = at + header;
        if start + len > der.len() {
            return false;
        }
        let contents = &der[start..start + len];
        // DER inside an OCTET STRING, or inside a BIT STRING after its unused-bits byte
        let nested = match tag {
            0x04 if contents.first() == Some(&0x30) => Some((contents, start)),
            0x03 if contents.starts_with(&[0x00, 0x30]) => Some((&contents[1..], start + 1)),
            _ => None,
        };
        let mut inner = Vec::new();
        if tag & 0x20 != 0 {
            if !primitives(contents, base + start, out) {
                return false;
            }
        } else if let Some((der, offset)) = nested
            && primitives(der, base + offset, &mut inner)
        {
            out.append(&mut inner);
        } else {
            out.push(Primitive {
                tag_at: base + at,
                start: base + start,
                len,
            });
        }
        at = start + len;
    }
    true
}

/// A change to a certificate that keeps its DER well-formed, so the parse gets past the
/// structure into the names, times, extensions and keys.
#[derive(Debug, Clone)]
enum DerMutation {
    /// New contents, same length, for one primitive element.
    Contents(Index, Vec<u8>),
    /// Another universal tag for one primitive element (a BMPString of odd length, a time
    /// that is an INTEGER…).
    Tag(Index, u8),
    /// New digits for a UTCTime or GeneralizedTime (Feb 30, hour 24, year 0000…).
    Time(Index, Vec<u8>),
}

fn der_mutation() -> impl Strategy<Value = DerMutation> {
    let tags = &[
        0x01u8, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x12, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1a, 0x1c,
        0x1e, 0x30, 0x31, 0xa0, 0x80, 0x00, 0x1f,
    ][..];
    prop_oneof![
        (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| DerMutation::Contents(i, b)),
        (any::<Index>(), select(tags)).prop_map(|(i, t)| DerMutation::Tag(i, t)),
        (any::<Index>(), vec(b'0'..=b'9', 14)).prop_map(|(i, d)| DerMutation::Time(i, d)),
    ]
}

fn mutate_der(der: &mut [u8], mutations: &[DerMutation]) {
    let mut elems = Vec::new();
    if !primitives(der, 0, &mut elems) || elems.is_empty() {
        return;
    }
    for m in mutations {
        match m {
            DerMutation::Contents(i, bytes) => {
                let e = elems[i.index(elems.len())];
                for (k, b) in der[e.start..e.start + e.len].iter_mut().enumerate() {
                    *b = bytes[k % bytes.len()];
                }
            }
            DerMutation::Tag(i, tag) => der[elems[i.index(elems.len())].tag_at] = *tag,
            DerMutation::Time(i, digits) => {
                let times: Vec<&Primitive> = elems
                    .iter()
                    .filter(|e| matches!(der[e.tag_at], 0x17 | 0x18) && e.len >= 2)
                    .collect();
                if times.is_empty() {
                    continue;
                }
                let e = *times[i.index(times.len())];
                let body = &mut der[e.start..e.start + e.len];
                let n = body.len() - 1;
                for (k, b) in body[..n].iter_mut().enumerate() {
                    *b = digits[k % digits.len()];
                }
            }
        }
    }
}

/// Certificates that parse after a DER-aware change: nothing on them panics either — the
/// signature check against a real CA and against itself, the time left.
fn check_cert_der(der: &[u8], ca: &CertFacts) -> Result<bool, TestCaseError> {
    let accepted = check_pem(der)?;
    if let Ok(facts) = CertFacts::from_der(der) {
        let _ = facts.is_signed_by(ca);
        let _ = ca.is_signed_by(&facts);
        let _ = facts.is_signed_by(&facts);
        let _ = facts.residual_seconds(OffsetDateTime::now_utc());
        let signer = inventory::find_signer(&facts, Some("ca"), &[]);
        prop_assert_eq!(signer, inventory::Signer::Unknown);
    }
    Ok(accepted)
}

#[test]
fn certificate_parser_on_structure_keeping_der_changes() {
    let c = corpus();
    let certs = leak(c.der_certs.clone());
    let ca = CertFacts::from_der(&pem::parse(&c.fresh.2).unwrap()[0].der).unwrap();
    let mut elems = Vec::new();
    assert!(primitives(&certs[0], 0, &mut elems));
    assert!(
        elems.len() > 20,
        "the DER walker found {} elements",
        elems.len()
    );
    fuzz!("certificate DER structure-aware", 10000, |runs, cfg| {
        proptest!(cfg, |(der in select(certs), ms in vec(der_mutation(), 1..4))| {
            runs.hit();
            let mut der = der;
            mutate_der(&mut der, &ms);
            runs.accepted(check_cert_der(&der, &ca)?);
            // and as PEM, as the files hold it
            check_pem(pem::encode("CERTIFICATE", &der).as_bytes())?;
        });
    });
}

/// Where the `-----BEGIN …-----` text of each block ends and where its `-----END …-----` text
/// ends, in a canonical PEM file (one block after another, no indentation).
fn block_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut begin = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare.starts_with("-----BEGIN ") {
            begin = Some(at + bare.len());
        } else if bare.starts_with("-----END ") {
            spans.push((begin.take().unwrap(), at + bare.len()));
        }
        at += line.len();
    }
    spans
}

#[test]
fn pem_cut_inside_a_block_is_refused() {
    let seeds = leak(corpus().pem_files.clone());
    fuzz!("pem truncation oracle", 6000, |runs, cfg| {
        proptest!(cfg, |(file in seed(seeds), cut in any::<Index>())| {
            runs.hit();
            let cut = cut.index(file.len() + 1);
            let spans = block_spans(std::str::from_utf8(&file).unwrap());
            let inside = spans.iter().any(|(begun, ended)| *begun <= cut && cut < *ended);
            let result = pem::parse(&file[..cut]);
            runs.accepted(result.is_ok());
            if inside {
                prop_assert!(result.is_err(), "a cut at {} inside a block was accepted", cut);
                prop_assert!(inventory::parse_cert_bundle(&file[..cut]).is_err());
            } else {
                let whole = spans.iter().filter(|(_, ended)| *ended <= cut).count();
                prop_assert_eq!(result.map(|b| b.len()), Ok(whole));
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// 2. The kubeconfig reader and its in-place editor.

const KUBECONFIG: &str = "/etc/kubernetes/admin.conf";

fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Whether `after` is `before` with only credential values replaced by new ones: each changed
/// value sits after its key name on the line, and every other byte of the line is kept.
fn line_edit_ok(before: &str, after: &str, values: &[(&str, String)]) -> bool {
    if before == after {
        return true;
    }
    // (the length test first: setting up a search for a long value costs its length)
    fn fits<'v>(
        values: &'v [(&'v str, String)],
        text: &str,
    ) -> impl Iterator<Item = &'v (&'v str, String)> {
        values.iter().filter(move |(_, v)| text.len() >= v.len())
    }
    fits(values, after).any(|(key, value)| {
        after.match_indices(value.as_str()).any(|(at, _)| {
            let kept = &after[..at];
            if !kept.contains(key) || !before.starts_with(kept) {
                return false;
            }
            // after the old value, `before` goes on with the text `after` keeps after the new
            // one, up to the next new value on the line if there is one
            let rest = &after[at + value.len()..];
            let tail = &before[at..];
            match fits(values, rest)
                .filter_map(|(_, v)| rest.find(v.as_str()))
                .min()
            {
                None => tail.ends_with(rest),
                Some(next) => tail
                    .match_indices(&rest[..next])
                    .any(|(k, _)| line_edit_ok(&tail[k..], rest, values)),
            }
        })
    })
}

/// The byte-keeping check itself: it accepts exactly a value swapped after its key.
#[test]
fn the_byte_keeping_check_refuses_any_other_change() {
    let values = [
        ("client-certificate-data", "NEWC".to_string()),
        ("client-key-data", "NEWK".to_string()),
    ];
    let ok = |a: &str, b: &str| line_edit_ok(a, b, &values);
    assert!(ok(
        "    client-key-data: OLD  # c",
        "    client-key-data: NEWK  # c"
    ));
    assert!(ok(
        "  client-key-data: 'OLD'\r",
        "  client-key-data: 'NEWK'\r"
    ));
    assert!(ok(
        "  user: {client-certificate-data: A, client-key-data: B}",
        "  user: {client-certificate-data: NEWC, client-key-data: NEWK}"
    ));
    assert!(!ok(
        "    client-key-data: OLD  # c",
        "    client-key-data: NEWK  # d"
    ));
    assert!(!ok(
        "    client-key-data: OLD",
        "    client-key-data:  NEWK"
    ));
    assert!(!ok("    client-key-data: OLD", "    client-key-data: NEWC"));
    assert!(!ok("    server: OLD", "    server: NEWK"));
    assert!(!ok(
        "  user: {client-certificate-data: A, client-key-data: B}",
        "  user: {client-certificate-data: NEWC; client-key-data: NEWK}"
    ));
}

/// Every line outside the replaced values kept, byte for byte (`\r` included), and at most one
/// line per replaced value changed.
fn only_credential_values_changed(
    before: &str,
    after: &str,
    new: &NewCredentials<'_>,
) -> Result<(), TestCaseError> {
    let mut values = vec![
        ("client-certificate-data", b64(new.cert_pem)),
        ("client-key-data", b64(new.key_pem)),
    ];
    if let Some(ca) = new.ca_pem {
        values.push(("certificate-authority-data", b64(ca)));
    }
    let a: Vec<&str> = before.split('\n').collect();
    let b: Vec<&str> = after.split('\n').collect();
    prop_assert_eq!(a.len(), b.len(), "the edit changed the number of lines");
    let mut changed = 0;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x != y {
            changed += 1;
            prop_assert!(
                line_edit_ok(x, y, &values),
                "line {} changed beyond a credential value:\n- {:?}\n+ {:?}",
                i + 1,
                x,
                y
            );
        }
    }
    prop_assert!(changed <= values.len(), "{} lines changed", changed);
    Ok(())
}

/// Reads `text`, edits it with `new`; when the edit succeeds, checks that it kept every other
/// byte and reads back with the new material. Returns whether the edit succeeded.
fn check_kubeconfig(text: &str, new: &NewCredentials<'_>) -> Result<bool, TestCaseError> {
    let path = Path::new(KUBECONFIG);
    let read = kubeconfig::credentials(text, path);
    if let Err(e) = &read {
        prop_assert!(!e.trim().is_empty(), "empty kubeconfig error");
    }
    let edited = match kubeconfig::replace_credentials(text, new) {
        Ok(out) => out,
        Err(e) => {
            prop_assert!(!e.trim().is_empty(), "empty edit error");
            return Ok(false);
        }
    };
    only_credential_values_changed(text, &edited, new)?;
    // The editor never decodes the values it replaces, so an edit may repair an undecodable
    // one; any other flaw of the original must stop it.
    let replaced = |e: &str| {
        ["client-certificate-data", "client-key-data"]
            .iter()
            .chain(new.ca_pem.map(|_| &"certificate-authority-data"))
            .any(|field| e.starts_with(&format!("{field} is not valid base64")))
    };
    let read = match read {
        Ok(read) => Some(read),
        Err(e) if replaced(&e) => None,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "edited an unreadable kubeconfig: {e}"
            )));
        }
    };
    if let Some(read) = &read {
        prop_assert!(
            matches!(read.client, ClientCert::Embedded { .. }),
            "edited a kubeconfig without embedded credentials"
        );
    }
    let back = kubeconfig::credentials(&edited, path)
        .map_err(|e| TestCaseError::fail(format!("the edited kubeconfig does not read: {e}")))?;
    prop_assert_eq!(
        &back.client,
        &ClientCert::Embedded {
            cert_pem: new.cert_pem.to_vec(),
            key_pem: Some(new.key_pem.to_vec()),
        }
    );
    if let Some(read) = read {
        prop_assert_eq!(&back.user, &read.user);
        prop_assert_eq!(&back.cluster, &read.cluster);
        prop_assert_eq!(&back.server, &read.server);
        let ca = new.ca_pem.map(<[u8]>::to_vec).or(read.ca_pem);
        prop_assert_eq!(back.ca_pem, ca);
    } else if let Some(ca) = new.ca_pem {
        prop_assert_eq!(back.ca_pem.as_deref(), Some(ca));
    }
    Ok(true)
}

/// New material: real PEM from the generated node, or arbitrary bytes.
type Material = (Bytes, Bytes, Option<Bytes>);

fn new_material() -> impl Strategy<Value = Material> {
    let (cert, key, ca) = corpus().fresh.clone();
    let (cert, key, ca) = (Bytes(cert), Bytes(key), Bytes(ca));
    let arbitrary = || vec(any::<u8>(), 1..64).prop_map(Bytes);
    prop_oneof![
        Just((cert.clone(), key.clone(), Some(ca))),
        Just((cert, key, None)),
        (arbitrary(), arbitrary(), proptest::option::of(arbitrary())),
    ]
}

fn credentials_of(m: &Material) -> NewCredentials<'_> {
    NewCredentials {
        cert_pem: &m.0,
        key_pem: &m.1,
        ca_pem: m.2.as_deref(),
    }
}

#[test]
fn kubeconfig_reader_and_editor_on_arbitrary_text() {
    fuzz!("kubeconfig arbitrary", 4000, |runs, cfg| {
        proptest!(cfg, |(text in prop_oneof![any::<String>(), token_soup()], m in new_material())| {
            runs.hit();
            runs.accepted(check_kubeconfig(&text, &credentials_of(&m))?);
        });
    });
}

#[test]
fn kubeconfig_reader_and_editor_on_mutated_real_kubeconfigs() {
    let seeds = leak(corpus().kubeconfigs.clone());
    fuzz!("kubeconfig mutated", 3500, |runs, cfg| {
        proptest!(cfg, |(text in mutated_text(seeds), m in new_material())| {
            runs.hit();
            runs.accepted(check_kubeconfig(&text, &credentials_of(&m))?);
        });
    });
}

/// Rewrites that keep a kubeconfig meaning the same: the editor must still succeed on them.
#[derive(Debug, Clone)]
enum Benign {
    /// A comment line before line n (ASCII, or with multi-byte characters that shift every
    /// byte offset after it).
    CommentLine(Index, bool),
    /// A comment after the value on every line holding a value.
    TrailingComments,
    /// Every base64 value in single or double quotes.
    Quote(char),
    /// CRLF line ends.
    Crlf,
    /// A blank line before line n.
    BlankLine(Index),
    /// Every user's mapping in flow style: `user: {client-certificate-data: …, …}` (both
    /// values on one line).
    FlowUsers,
    /// The key names in double quotes.
    QuotedKeys,
}

fn benign() -> impl Strategy<Value = Benign> {
    prop_oneof![
        (any::<Index>(), any::<bool>()).prop_map(|(i, u)| Benign::CommentLine(i, u)),
        Just(Benign::TrailingComments),
        select(&['\'', '"'][..]).prop_map(Benign::Quote),
        Just(Benign::Crlf),
        any::<Index>().prop_map(Benign::BlankLine),
        Just(Benign::FlowUsers),
        Just(Benign::QuotedKeys),
    ]
}

/// `  user:` and the lines of its block as one flow-style line.
fn flow_users(lines: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = lines.into_iter().peekable();
    while let Some(line) = lines.next() {
        if line != "  user:" {
            out.push(line);
            continue;
        }
        let mut pairs = Vec::new();
        while let Some(next) = lines.next_if(|l| l.starts_with("    ") && !l.starts_with("     ")) {
            pairs.push(next.trim().to_string());
        }
        out.push(format!("  user: {{{}}}", pairs.join(", ")));
    }
    out
}

fn apply_benign(text: &str, rewrites: &[Benign]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // first, while every user is still a plain block
    if rewrites.iter().any(|r| matches!(r, Benign::FlowUsers)) {
        lines = flow_users(lines);
    }
    let mut crlf = false;
    for r in rewrites {
        match r {
            Benign::FlowUsers => {}
            Benign::QuotedKeys => {
                for l in &mut lines {
                    for key in [
                        "client-certificate-data",
                        "client-key-data",
                        "certificate-authority-data",
                    ] {
                        *l = l.replace(&format!("{key}:"), &format!("\"{key}\":"));
                    }
                }
            }
            Benign::CommentLine(at, unicode) => {
                let at = at.index(lines.len() + 1);
                let text = if *unicode {
                    "# é ✓ 𝄞: ü"
                } else {
                    "# kept: client-key-data: x"
                };
                lines.insert(at, text.to_string());
            }
            Benign::BlankLine(at) => {
                let at = at.index(lines.len() + 1);
                lines.insert(at, String::new());
            }
            Benign::TrailingComments => {
                for l in &mut lines {
                    if l.contains("-data: ") {
                        l.push_str("  # comment");
                    }
                }
            }
            Benign::Quote(q) => {
                for l in &mut lines {
                    if let Some((key, value)) = l.split_once("-data: ")
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
                    {
                        *l = format!("{key}-data: {q}{value}{q}");
                    }
                }
            }
            Benign::Crlf => crlf = true,
        }
    }
    let end = if crlf { "\r\n" } else { "\n" };
    lines.iter().map(|l| format!("{l}{end}")).collect()
}

#[test]
fn kubeconfig_editor_keeps_working_through_harmless_rewrites() {
    let c = corpus();
    let embedded: Vec<String> = c
        .kubeconfigs
        .iter()
        .filter(|k| {
            matches!(
                kubeconfig::credentials(k, Path::new(KUBECONFIG)).map(|c| c.client),
                Ok(ClientCert::Embedded { .. })
            )
        })
        .cloned()
        .collect();
    assert!(embedded.len() > 20, "{}", embedded.len());
    let seeds = leak(embedded);
    fuzz!("kubeconfig harmless rewrites", 1800, |runs, cfg| {
        proptest!(cfg, |(seed in select(seeds), rewrites in vec(benign(), 0..4), m in new_material())| {
            runs.hit();
            let text = apply_benign(&seed, &rewrites);
            let edited = check_kubeconfig(&text, &credentials_of(&m))?;
            runs.accepted(edited);
            prop_assert!(edited, "the edit of a harmlessly rewritten kubeconfig failed");
        });
    });
}

// ---------------------------------------------------------------------------------------------
// 3. The manifest reader and the health check taken from it.

/// Reads `data` as the manifest file `file`; checks that errors name the file and that a
/// parsed pod gives a health check (or an error naming the file) without panicking.
fn check_manifest(file: &Path, data: &[u8]) -> Result<Option<restart::HealthCheck>, TestCaseError> {
    std::fs::write(file, data).unwrap();
    let name = file.display().to_string();
    let pod = match manifest::read(file) {
        Ok(pod) => pod,
        Err(e) => {
            prop_assert!(e.contains(&name), "the error does not name the file: {}", e);
            return Ok(None);
        }
    };
    prop_assert!(!pod.name.is_empty() && !pod.containers.is_empty());
    let text = String::from_utf8_lossy(data);
    let by_manifest = restart::health_check_of_manifest(&pod, &text);
    match restart::health_check_of(&pod) {
        Ok(h) => {
            prop_assert!(by_manifest.is_ok());
            Ok(Some(h))
        }
        Err(e) => {
            prop_assert!(e.contains(&name), "the error does not name the file: {}", e);
            prop_assert!(by_manifest.is_err());
            Ok(None)
        }
    }
}

#[test]
fn manifest_reader_on_mutated_real_manifests_and_arbitrary_bytes() {
    let seeds = leak(
        corpus()
            .manifests
            .iter()
            .map(|m| m.clone().into_bytes())
            .collect(),
    );
    let tmp = scratch_dir();
    let file = tmp.path().join("kube-apiserver.yaml");
    for seed in seeds {
        let health = check_manifest(&file, seed).unwrap();
        assert!(health.is_some(), "a real manifest gives no health check");
    }
    fuzz!("manifest mutated+arbitrary", 6000, |runs, cfg| {
        proptest!(cfg, |(data in prop_oneof![
            4 => mutated(seeds),
            1 => bytes(1024),
            1 => token_soup().prop_map(|t| Bytes(t.into_bytes())),
        ])| {
            runs.hit();
            runs.accepted(check_manifest(&file, &data)?.is_some());
        });
    });
}

/// A flag value: the shapes kubeadm writes, and broken ones.
fn flag_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,6}",
        "-?[0-9]{1,3}",
        Just("0".to_string()),
        Just("65535".to_string()),
        "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|::|::1|\\[::\\]|10\\.0\\.0\\.[0-9]{1,3}|localhost|é|)",
        "(https?://)?(\\[?[0-9a-f:.]{0,20}\\]?|localhost)(:[0-9]{0,6})?(/[a-z]{0,4})?",
        "(https://[a-z0-9:.\\[\\]]{0,16},?){1,4}",
        // printable text only: JSON lets control characters through that YAML refuses
        "[ -~é€]{0,16}",
    ]
}

fn structured_manifest() -> impl Strategy<Value = String> {
    let name = select(
        &[
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "etcd",
            "other",
        ][..],
    );
    let flag = select(
        &[
            "secure-port",
            "bind-address",
            "advertise-address",
            "listen-client-urls",
            "port",
        ][..],
    );
    let arg = prop_oneof![
        (flag.clone(), flag_value()).prop_map(|(f, v)| vec![format!("--{f}={v}")]),
        (flag, flag_value()).prop_map(|(f, v)| vec![format!("--{f}"), v]),
        flag_value().prop_map(|v| vec![v]),
    ];
    let container = (name, vec(arg, 0..6), any::<bool>()).prop_map(|(name, args, probe)| {
        let mut c = serde_json::json!({
            "name": name,
            "image": "registry.k8s.io/x:v1",
            "command": [name],
            "args": args.concat(),
        });
        if probe {
            c["livenessProbe"] = serde_json::json!({"httpGet": {"port": 10259, "scheme": "HTTP"}});
        }
        c
    });
    vec(container, 1..3).prop_map(|containers| {
        // JSON is YAML: the text is valid whatever the values, so every case reaches the flags.
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": containers[0]["name"], "namespace": "kube-system"},
            "spec": {"hostNetwork": true, "containers": containers},
        })
        .to_string()
    })
}

#[test]
fn health_check_of_manifests_with_arbitrary_flags() {
    let tmp = scratch_dir();
    let file = tmp.path().join("etcd.yaml");
    fuzz!("manifest flags -> health check", 3000, |runs, cfg| {
        proptest!(cfg, |(text in structured_manifest())| {
            runs.hit();
            std::fs::write(&file, &text).unwrap();
            prop_assert!(manifest::read(&file).is_ok(), "a valid pod was refused");
            runs.accepted(check_manifest(&file, text.as_bytes())?.is_some());
        });
    });
}

// ---------------------------------------------------------------------------------------------
// 4. The intent journal (read and acted on by `recover`) and the restart-pending record.

/// A sandbox for one case: a state dir, a node with files, a parking dir, a backup, and a
/// sentinel no journal names.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    /// node files: (path, old bytes, new bytes)
    files: Vec<(PathBuf, Vec<u8>, Vec<u8>)>,
    backup: PathBuf,
    manifests: Vec<ParkedManifest>,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = scratch_dir();
        let root = tmp.path().to_path_buf();
        let state = root.join("state");
        let pki = root.join("node/pki");
        let manifests = root.join("node/manifests");
        let parked = root.join("parked");
        let backup = state.join("backups/20260101T000000Z");
        for d in [&state, &pki, &manifests, &parked, &backup] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(root.join("sentinel"), b"never named by a journal").unwrap();
        let mut files = Vec::new();
        let mut backup_manifest = String::new();
        for name in ["a.crt", "a.key", "b.crt", "b.key"] {
            let path = pki.join(name);
            let old = format!("old {name}").into_bytes();
            let new = format!("new {name}").into_bytes();
            std::fs::write(&path, &old).unwrap();
            std::fs::write(backup.join(name), &old).unwrap();
            backup_manifest.push_str(&format!("{name}\t{}\n", path.display()));
            files.push((path, old, new));
        }
        std::fs::write(backup.join("MANIFEST"), backup_manifest).unwrap();
        let manifests = ["etcd.yaml", "kube-apiserver.yaml"]
            .iter()
            .map(|name| {
                std::fs::write(manifests.join(name), format!("manifest {name}")).unwrap();
                ParkedManifest {
                    manifest: manifests.join(name),
                    parked: parked.join(name),
                }
            })
            .collect();
        Sandbox {
            _tmp: tmp,
            root,
            state,
            files,
            backup,
            manifests,
        }
    }

    fn journal(&self) -> PathBuf {
        journal::path(&self.state)
    }

    /// Every entry below the root: files with their bytes, dirs and links by kind.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                if meta.is_dir() {
                    out.insert(p.clone(), b"<dir>".to_vec());
                    walk(&p, out);
                } else if meta.file_type().is_symlink() {
                    out.insert(p.clone(), b"<link>".to_vec());
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &mut out);
        out
    }

    /// True when every path the intent names lies inside the sandbox (so acting on it can only
    /// touch the sandbox).
    fn confines(&self, intent: &Intent) -> bool {
        let inside = |p: &Path| {
            p.starts_with(&self.root) && !p.components().any(|c| c == Component::ParentDir)
        };
        let file_ok = |f: &FileIntent| inside(&f.path) && f.previous.as_deref().is_none_or(inside);
        match intent {
            Intent::Renew { backup, files, .. } | Intent::Restore { backup, files } => {
                inside(backup) && files.iter().all(file_ok)
            }
            Intent::Park { manifests } => manifests
                .iter()
                .all(|m| inside(&m.manifest) && inside(&m.parked)),
        }
    }

    /// The journals a real run writes here: a renewal, a parking, a restore.
    fn real_journals(&self) -> Vec<Vec<u8>> {
        let intents = [
            Intent::Renew {
                backup: self.backup.clone(),
                files: self
                    .files
                    .iter()
                    .map(|(path, old, new)| FileIntent {
                        path: path.clone(),
                        old_sha256: journal::sha256(old),
                        new_sha256: journal::sha256(new),
                        group: "a".into(),
                        previous: None,
                    })
                    .collect(),
                renewed: vec!["apiserver".into(), "admin.conf".into()],
                at: "2026-01-01T00:00:00Z".into(),
            },
            Intent::Park {
                manifests: self.manifests.clone(),
            },
            Intent::Restore {
                backup: self.backup.clone(),
                files: Vec::new(),
            },
        ];
        intents
            .iter()
            .map(|i| serde_json::to_vec_pretty(i).unwrap())
            .collect()
    }
}

/// Plants `data` as the journal and runs recovery. Garbage is refused with every byte of the
/// sandbox as it was (the state dir included: the journal stays for a human); a journal that
/// parses and names only sandbox paths is acted on, and the sentinel no journal names is never
/// touched; an error keeps the journal as it was, success removes it.
/// Returns whether recovery succeeded.
fn check_journal(sandbox: &Sandbox, data: &[u8]) -> Result<bool, TestCaseError> {
    std::fs::write(sandbox.journal(), data).unwrap();
    let before = sandbox.snapshot();
    match serde_json::from_slice::<Intent>(data) {
        Err(_) => {
            let read = journal::pending(&sandbox.state);
            let e = read
                .err()
                .ok_or_else(|| TestCaseError::fail("garbage read as a journal"))?;
            prop_assert!(
                e.contains("journal.json"),
                "the error does not name the file: {}",
                e
            );
            let recovered = journal::recover(&sandbox.state);
            prop_assert!(recovered.is_err(), "garbage was recovered: {:?}", recovered);
            prop_assert!(
                sandbox.snapshot() == before,
                "refusing garbage changed files"
            );
            Ok(false)
        }
        Ok(intent) => {
            if !sandbox.confines(&intent) {
                // A mutation pointed it outside the sandbox: never act on that.
                return Ok(false);
            }
            let outcome = journal::recover(&sandbox.state);
            let after = sandbox.snapshot();
            let sentinel = sandbox.root.join("sentinel");
            prop_assert_eq!(after.get(&sentinel), before.get(&sentinel));
            match outcome {
                Ok(_) => {
                    prop_assert!(!sandbox.journal().exists(), "recovered, journal kept");
                    Ok(true)
                }
                Err(e) => {
                    prop_assert!(!e.trim().is_empty());
                    prop_assert_eq!(
                        std::fs::read(sandbox.journal()).ok(),
                        Some(data.to_vec()),
                        "failed, journal not kept as it was"
                    );
                    Ok(false)
                }
            }
        }
    }
}

#[test]
fn journal_recovery_on_arbitrary_and_mutated_journals() {
    let template = Sandbox::new();
    let reals = leak(template.real_journals());
    let root = template.root.clone();
    fuzz!("journal recover arbitrary+mutated", 3000, |runs, cfg| {
        proptest!(cfg, |(data in prop_oneof![
            1 => bytes(512),
            1 => token_soup().prop_map(|t| Bytes(t.into_bytes())),
            3 => mutated(reals),
        ])| {
            runs.hit();
            // the real journals name the template's paths: make this case's sandbox answer
            // to them by rewriting the root
            let sandbox = Sandbox::new();
            let data = replace_bytes(&data, root.to_str().unwrap(), sandbox.root.to_str().unwrap());
            runs.accepted(check_journal(&sandbox, &data)?);
        });
    });
}

fn replace_bytes(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// One file of a structured renewal journal: what is on disk now and what the journal says.
#[derive(Debug, Clone)]
struct FileCase {
    /// 0 old bytes, 1 new bytes, 2 something else, 3 absent.
    now: u8,
    /// 0 the real old hash, 1 empty (recorded absent), 2 garbage.
    old_hash: u8,
    /// 0 the real new hash, 1 garbage.
    new_hash: u8,
    group: u8,
    /// 0 none, 1 a kept previous version with the old bytes, 2 one with other bytes, 3 named
    /// but missing.
    previous: u8,
    /// The backup copy is intact.
    backup_ok: bool,
}

fn file_case() -> impl Strategy<Value = FileCase> {
    (0..4u8, 0..3u8, 0..2u8, 0..3u8, 0..4u8, any::<bool>()).prop_map(
        |(now, old_hash, new_hash, group, previous, backup_ok)| FileCase {
            now,
            old_hash,
            new_hash,
            group,
            previous,
            backup_ok,
        },
    )
}

#[derive(Debug, Clone)]
enum JournalCase {
    Renew {
        files: Vec<FileCase>,
        backup_missing: bool,
        pending_garbage: bool,
    },
    Park {
        /// per manifest: 0 parked, 1 back, 2 both, 3 neither
        where_: Vec<u8>,
    },
    Restore {
        /// per file: 0 renewed bytes, 1 backup bytes, 2 other bytes
        now: Vec<u8>,
    },
}

fn journal_case() -> impl Strategy<Value = JournalCase> {
    prop_oneof![
        (vec(file_case(), 1..5), any::<bool>(), any::<bool>()).prop_map(
            |(files, backup_missing, pending_garbage)| JournalCase::Renew {
                files,
                backup_missing,
                pending_garbage
            }
        ),
        vec(0..4u8, 1..3).prop_map(|where_| JournalCase::Park { where_ }),
        vec(0..3u8, 1..5).prop_map(|now| JournalCase::Restore { now }),
    ]
}

/// Builds the sandbox state a structured case describes and its journal.
fn plant(sandbox: &Sandbox, case: &JournalCase) -> Intent {
    match case {
        JournalCase::Renew {
            files,
            backup_missing,
            pending_garbage,
        } => {
            if *backup_missing {
                std::fs::remove_file(sandbox.backup.join("MANIFEST")).unwrap();
            }
            if *pending_garbage {
                std::fs::write(pending::path(&sandbox.state), b"{garbage").unwrap();
            }
            let intents = files
                .iter()
                .zip(&sandbox.files)
                .map(|(c, (path, old, new))| {
                    match c.now {
                        0 => std::fs::write(path, old).unwrap(),
                        1 => std::fs::write(path, new).unwrap(),
                        2 => std::fs::write(path, b"someone else's").unwrap(),
                        _ => std::fs::remove_file(path).unwrap(),
                    }
                    if !c.backup_ok {
                        let name = path.file_name().unwrap();
                        std::fs::write(sandbox.backup.join(name), b"corrupt copy").unwrap();
                    }
                    let previous = (c.previous > 0).then(|| {
                        let p = path.with_file_name(format!(
                            ".{}.kcr-prev",
                            path.file_name().unwrap().to_string_lossy()
                        ));
                        match c.previous {
                            1 => std::fs::write(&p, old).unwrap(),
                            2 => std::fs::write(&p, b"other").unwrap(),
                            _ => {}
                        }
                        p
                    });
                    FileIntent {
                        path: path.clone(),
                        old_sha256: match c.old_hash {
                            0 => journal::sha256(old),
                            1 => String::new(),
                            _ => "f00".into(),
                        },
                        new_sha256: match c.new_hash {
                            0 => journal::sha256(new),
                            _ => "ba5".into(),
                        },
                        group: format!("g{}", c.group),
                        previous,
                    }
                })
                .collect();
            Intent::Renew {
                backup: sandbox.backup.clone(),
                files: intents,
                renewed: vec!["apiserver".into(), "etcd-server".into()],
                at: "2026-01-01T00:00:00Z".into(),
            }
        }
        JournalCase::Park { where_ } => {
            let manifests: Vec<ParkedManifest> = sandbox
                .manifests
                .iter()
                .take(where_.len())
                .cloned()
                .collect();
            for (m, w) in manifests.iter().zip(where_) {
                let data = std::fs::read(&m.manifest).unwrap();
                match w {
                    0 => std::fs::rename(&m.manifest, &m.parked).unwrap(),
                    1 => {}
                    2 => std::fs::write(&m.parked, &data).unwrap(),
                    _ => std::fs::remove_file(&m.manifest).unwrap(),
                }
            }
            Intent::Park { manifests }
        }
        JournalCase::Restore { now } => {
            let files = now
                .iter()
                .zip(&sandbox.files)
                .map(|(w, (path, old, new))| {
                    match w {
                        0 => std::fs::write(path, new).unwrap(),
                        1 => std::fs::write(path, old).unwrap(),
                        _ => std::fs::write(path, b"someone else's").unwrap(),
                    }
                    FileIntent {
                        path: path.clone(),
                        old_sha256: journal::sha256(new),
                        new_sha256: journal::sha256(old),
                        group: String::new(),
                        previous: None,
                    }
                })
                .collect();
            Intent::Restore {
                backup: sandbox.backup.clone(),
                files,
            }
        }
    }
}

/// Where a journaled file stands, as `recover` must judge it (its documented rules).
fn stands(f: &FileIntent) -> &'static str {
    match std::fs::read(&f.path) {
        Err(_) if f.old_sha256.is_empty() => "old",
        Ok(d) if journal::sha256(&d) == f.new_sha256 => "new",
        Ok(d) if journal::sha256(&d) == f.old_sha256 => "old",
        _ => "foreign",
    }
}

#[test]
fn journal_recovery_on_structured_journals() {
    fuzz!("journal recover structured", 3000, |runs, cfg| {
        proptest!(cfg, |(case in journal_case())| {
            runs.hit();
            let sandbox = Sandbox::new();
            let intent = plant(&sandbox, &case);
            let data = serde_json::to_vec_pretty(&intent).unwrap();
            std::fs::write(sandbox.journal(), &data).unwrap();
            let before = sandbox.snapshot();
            let foreign = match &intent {
                Intent::Renew { files, .. } => files.iter().any(|f| stands(f) == "foreign"),
                _ => false,
            };
            runs.accepted(check_journal(&sandbox, &data)?);
            if foreign {
                // documented: a file changed by someone else stops recovery with nothing touched
                prop_assert!(sandbox.journal().exists());
                prop_assert!(sandbox.snapshot() == before, "a foreign file, yet files changed");
            }
            if !sandbox.journal().exists() {
                match &intent {
                    Intent::Renew { files, .. } => {
                        let now: Vec<&str> = files.iter().map(stands).collect();
                        prop_assert!(
                            now.iter().all(|s| *s == "old") || now.iter().all(|s| *s == "new"),
                            "recovered to a mix: {:?}",
                            now
                        );
                    }
                    Intent::Park { manifests } => {
                        for m in manifests {
                            prop_assert!(m.manifest.exists(), "{} not back", m.manifest.display());
                        }
                    }
                    Intent::Restore { files, .. } => {
                        for f in files {
                            prop_assert_eq!(stands(f), "new", "{} not restored", f.path.display());
                        }
                    }
                }
            }
        });
    });
}

/// A restart-pending record, read back: garbage is an error naming the file, and neither `add`
/// nor `done` ever overwrites a record they cannot read.
/// Returns whether the record was readable.
fn check_pending(state: &Path, data: &[u8]) -> Result<bool, TestCaseError> {
    let file = pending::path(state);
    std::fs::write(&file, data).unwrap();
    match pending::load(state) {
        Ok(record) => {
            let renewed: Vec<String> = record
                .values()
                .flat_map(|w| w.renewed.iter().cloned())
                .chain(["apiserver".to_string()])
                .collect();
            pending::add(state, &renewed, "2026-01-01T00:00:00Z")
                .map_err(|e| TestCaseError::fail(format!("add on a readable record: {e}")))?;
            let after = pending::load(state)
                .map_err(|e| TestCaseError::fail(format!("add wrote an unreadable record: {e}")))?;
            for name in record.keys() {
                prop_assert!(after.contains_key(name), "add lost {}", name);
            }
            prop_assert!(after.contains_key("kube-apiserver"));
            let names: Vec<&str> = after.keys().map(String::as_str).collect();
            pending::done(state, &names).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(pending::load(state).is_ok_and(|r| r.is_empty()));
            Ok(true)
        }
        Err(e) => {
            prop_assert!(
                e.contains("restart-pending.json"),
                "not naming the file: {}",
                e
            );
            prop_assert!(pending::add(state, &["apiserver".into()], "x").is_err());
            prop_assert!(pending::done(state, &["kube-apiserver"]).is_err());
            prop_assert_eq!(
                std::fs::read(&file).unwrap(),
                data,
                "a corrupt record was replaced"
            );
            Ok(false)
        }
    }
}

#[test]
fn restart_pending_record_on_arbitrary_and_mutated_records() {
    let real = serde_json::to_vec_pretty(&serde_json::json!({
        "kube-apiserver": {"since": "2026-01-01T00:00:00Z", "renewed": ["apiserver", "front-proxy-client"]},
        "etcd": {"since": "2026-02-01T00:00:00Z", "renewed": ["etcd-server"]},
    }))
    .unwrap();
    let seeds = leak(vec![real]);
    let tmp = scratch_dir();
    fuzz!("restart-pending load", 6000, |runs, cfg| {
        proptest!(cfg, |(data in prop_oneof![
            1 => bytes(256),
            3 => mutated(seeds),
        ])| {
            runs.hit();
            runs.accepted(check_pending(tmp.path(), &data)?);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// 5. The kubeadm config parser, and the node facts gathered with what it read.

/// kubeadm configs in the shapes kubeadm writes since v1beta3 (and a legacy one), besides the
/// published v1beta1 file: every field `parse_kubeadm_config` reads, next to ones it ignores.
const KUBEADM_CONFIGS: &[&str] = &[
    r#"apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
bootstrapTokens:
- groups:
  - system:bootstrappers:kubeadm:default-node-token
  token: abcdef.0123456789abcdef
  ttl: 24h0m0s
  usages: [signing, authentication]
localAPIEndpoint:
  advertiseAddress: 10.0.0.10
  bindPort: 6443
nodeRegistration:
  criSocket: unix:///var/run/containerd/containerd.sock
  imagePullPolicy: IfNotPresent
  name: cp-1
  taints:
  - effect: NoSchedule
    key: node-role.kubernetes.io/control-plane
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.27.4
clusterName: prod
controlPlaneEndpoint: "api.example.com:6443"
certificatesDir: /etc/kubernetes/pki
imageRepository: registry.k8s.io
networking:
  dnsDomain: cluster.local
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
apiServer:
  certSANs:
  - api.example.com
  - 10.0.0.100
  - "  "
  extraArgs:
    authorization-mode: Node,RBAC
  timeoutForControlPlane: 4m0s
etcd:
  local:
    dataDir: /var/lib/etcd
    serverCertSANs: [etcd.example.com, 10.0.0.10]
    peerCertSANs:
    - 10.0.0.10
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"#,
    r#"apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: "fd00::10"
  bindPort: 8443
nodeRegistration:
  name: "cp-v6.example.com"
  kubeletExtraArgs:
  - name: node-ip
    value: fd00::10
timeouts:
  controlPlaneComponentHealthCheck: 4m0s
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: 1.31.0
controlPlaneEndpoint: "[fd00::100]:8443"
networking:
  serviceSubnet: "fd00:10:96::/108,10.96.0.0/16"
  dnsDomain: corp.internal
apiServer:
  certSANs: ["fd00::100", lb.corp.internal]
  extraArgs:
  - name: secure-port
    value: "8443"
encryptionAlgorithm: ECDSA-P256
"#,
    r#"apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: 10.0.0.100:6443
    token: abcdef.0123456789abcdef
    caCertHashes:
    - sha256:0000000000000000000000000000000000000000000000000000000000000000
controlPlane:
  certificateKey: 00112233445566778899aabbccddeeff
  localAPIEndpoint:
    advertiseAddress: 10.0.0.11
    bindPort: 6443
nodeRegistration:
  name: cp-2
"#,
    r#"apiVersion: kubeadm.k8s.io/v1alpha1
kind: MasterConfiguration
api:
  advertiseAddress: 192.168.1.5
  bindPort: 6443
  controlPlaneEndpoint: lb.local
nodeName: old-master
kubernetesVersion: stable-1.10
apiServerCertSANs:
- lb.local
etcd:
  serverCertSANs: [etcd.local]
networking:
  serviceSubnet: 10.96.0.0/12
"#,
];

/// A kubeadm config's text in JSON (YAML) with arbitrary values for every field the parser
/// reads, so each case reaches the node facts (addresses, CIDRs, endpoints, ports).
fn structured_kubeadm_config() -> impl Strategy<Value = String> {
    use serde_json::{Value, json};
    let text = || {
        prop_oneof![
            12 => flag_value().prop_map(Value::from),
            1 => Just(Value::Null),
            1 => any::<i64>().prop_map(Value::from),
            1 => Just(json!([])),
        ]
    };
    let cidr = prop_oneof![
        "(10\\.96\\.0\\.0|fd00::|::|0\\.0\\.0\\.0|255\\.255\\.255\\.255|1\\.2\\.3|)/[0-9]{0,3}",
        "[0-9a-f:./,]{0,24}",
    ];
    let port = prop_oneof![
        2 => Just(json!(0)),
        2 => Just(json!(6443)),
        2 => Just(json!(65535)),
        1 => Just(json!(65536)),
        1 => Just(json!(-1)),
        1 => Just(json!("6443")),
        6 => any::<u16>().prop_map(Value::from),
    ];
    let sans = vec(prop_oneof![flag_value(), Just("  ".to_string())], 0..4);
    (
        (text(), text(), port, text(), text()),
        (cidr, text(), text(), sans.clone(), sans.clone(), sans),
        select(&["v1beta3", "v1beta4", "v1alpha3", "v1beta1"][..]),
        any::<bool>(),
    )
        .prop_map(
            |(
                (name, address, port, endpoint, version),
                (subnet, domain, cluster, a, s, p),
                api,
                join,
            )| {
                let mut init = json!({
                    "apiVersion": format!("kubeadm.k8s.io/{api}"),
                    "kind": if join { "JoinConfiguration" } else { "InitConfiguration" },
                    "nodeRegistration": {"name": name},
                });
                let endpoint_doc = json!({"advertiseAddress": address, "bindPort": port});
                if join {
                    init["controlPlane"] = json!({"localAPIEndpoint": endpoint_doc});
                } else {
                    init["localAPIEndpoint"] = endpoint_doc;
                }
                let cluster = json!({
                    "apiVersion": format!("kubeadm.k8s.io/{api}"),
                    "kind": "ClusterConfiguration",
                    "controlPlaneEndpoint": endpoint,
                    "kubernetesVersion": version,
                    "clusterName": cluster,
                    "networking": {"serviceSubnet": subnet, "dnsDomain": domain},
                    "apiServer": {"certSANs": a},
                    "etcd": {"local": {"serverCertSANs": s, "peerCertSANs": p}},
                });
                format!("{init}\n---\n{cluster}\n")
            },
        )
}

/// Where a parsed config's value must be: trimmed, not empty.
fn check_value(field: &str, v: &Option<String>) -> Result<(), TestCaseError> {
    if let Some(v) = v {
        prop_assert!(
            !v.is_empty() && v.trim() == v,
            "{} is {:?}: not trimmed or empty",
            field,
            v
        );
    }
    Ok(())
}

/// Evidence besides the config that `gather` may get: some static pods, maybe the RSA node's
/// kubeconfigs and certificates, a name hint, a hostname.
#[derive(Debug, Clone)]
struct Evidence {
    pods: Vec<Index>,
    node_files: bool,
    hint: bool,
    hostname: bool,
}

fn evidence() -> impl Strategy<Value = Evidence> {
    (
        vec(any::<Index>(), 0..4),
        // (the node's certificates make a case several times slower)
        0..4u8,
        0..6u8,
        any::<bool>(),
    )
        .prop_map(|(pods, node_files, hint, hostname)| Evidence {
            pods,
            node_files: node_files == 0,
            hint: hint == 0,
            hostname,
        })
}

/// (file name, text) of kubeconfigs, and (kubeadm name, facts) of certificates.
type NodeEvidence = (Vec<(String, String)>, Vec<(String, CertFacts)>);

/// The kubeconfigs and certificates of the RSA node, as `recover` gives them to `gather`.
fn node_evidence() -> &'static NodeEvidence {
    static EVIDENCE: OnceLock<NodeEvidence> = OnceLock::new();
    EVIDENCE.get_or_init(|| {
        let node = &corpus().nodes[0];
        let mut kubeconfigs = Vec::new();
        let mut certs = Vec::new();
        for (path, data) in &node.files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                kubeconfigs.push((name, String::from_utf8(data.clone()).unwrap()));
            } else if let Some(base) = name.strip_suffix(".crt") {
                let kubeadm_name = match path.parent().is_some_and(|p| p.ends_with("etcd")) {
                    true => format!("etcd-{base}"),
                    false => base.to_string(),
                };
                let der = pem::parse(data).unwrap().remove(0).der;
                certs.push((kubeadm_name, CertFacts::from_der(&der).unwrap()));
            }
        }
        (kubeconfigs, certs)
    })
}

/// Parses `text` as a kubeadm config and gathers the node facts with it. Errors are text; what
/// parses is trimmed, non-empty, a non-zero port; gathered facts name the node, and the config's
/// values win where it is the most specific source. Returns whether the config parsed.
fn check_kubeadm_config(text: &str, ev: &Evidence) -> Result<bool, TestCaseError> {
    let parsed = facts::parse_kubeadm_config(text);
    match &parsed {
        Ok(c) => {
            for (field, v) in [
                ("nodeRegistration.name", &c.node_name),
                ("advertiseAddress", &c.advertise_address),
                ("controlPlaneEndpoint", &c.control_plane_endpoint),
                ("kubernetesVersion", &c.kubernetes_version),
                ("serviceSubnet", &c.service_subnet),
                ("dnsDomain", &c.dns_domain),
                ("clusterName", &c.cluster_name),
            ] {
                check_value(field, v)?;
            }
            prop_assert_ne!(c.bind_port, Some(0));
            for san in c
                .apiserver_cert_sans
                .iter()
                .chain(&c.etcd_server_cert_sans)
                .chain(&c.etcd_peer_cert_sans)
            {
                check_value("a certSAN", &Some(san.clone()))?;
            }
        }
        Err(e) => prop_assert!(!e.trim().is_empty(), "empty kubeadm config error"),
    }
    let pods: Vec<StaticPod> = ev
        .pods
        .iter()
        .map(|i| corpus().pods[i.index(corpus().pods.len())].clone())
        .collect();
    let (kubeconfigs, certs) = node_evidence();
    let sources = FactSources {
        manifests: &pods,
        kubeadm_config: Some(text),
        kubeconfigs: if ev.node_files { kubeconfigs } else { &[] },
        certs: if ev.node_files { certs } else { &[] },
        node_name_hint: ev.hint.then_some("hinted"),
        hostname: ev.hostname.then_some("the-host"),
    };
    match facts::gather(&sources) {
        Ok(f) => {
            prop_assert!(!f.node_name.trim().is_empty(), "an empty node name");
            prop_assert!(!f.sources.is_empty());
            if ev.hint {
                prop_assert_eq!(&f.node_name, "hinted");
            } else if let Ok(Some(name)) = parsed.as_ref().map(|c| &c.node_name) {
                prop_assert_eq!(&f.node_name, name, "the config's node name lost");
            }
            if let Ok(c) = &parsed {
                if let Some(d) = &c.dns_domain {
                    prop_assert_eq!(&f.dns_domain, d);
                }
                if let Some(e) = &c.control_plane_endpoint {
                    prop_assert_eq!(f.control_plane_endpoint.as_ref(), Some(e));
                }
                if !c.apiserver_cert_sans.is_empty() {
                    prop_assert_eq!(&f.apiserver_cert_sans, &c.apiserver_cert_sans);
                }
            }
        }
        Err(e) => {
            prop_assert!(!e.trim().is_empty(), "empty gather error");
            prop_assert!(
                !ev.hint && !ev.hostname,
                "no node name although a hint or hostname was given: {}",
                e
            );
            if let Ok(c) = &parsed {
                prop_assert!(c.node_name.is_none(), "the config names the node: {}", e);
            }
        }
    }
    Ok(parsed.is_ok())
}

#[test]
fn kubeadm_config_parser_and_node_facts() {
    let seeds = leak(corpus().kubeadm_configs.clone());
    // the seeds read as written
    let read: Vec<_> = seeds
        .iter()
        .map(|s| facts::parse_kubeadm_config(s).unwrap())
        .collect();
    assert_eq!(read[0].kubernetes_version.as_deref(), Some("v1.14.0"));
    assert_eq!(read[1].node_name.as_deref(), Some("cp-1"));
    assert_eq!(
        read[1].apiserver_cert_sans,
        ["api.example.com", "10.0.0.100"]
    );
    assert_eq!(read[1].etcd_peer_cert_sans, ["10.0.0.10"]);
    assert_eq!(read[2].bind_port, Some(8443));
    assert_eq!(
        read[2].control_plane_endpoint.as_deref(),
        Some("[fd00::100]:8443")
    );
    assert_eq!(read[3].advertise_address.as_deref(), Some("10.0.0.11"));
    assert_eq!(read[4].node_name.as_deref(), Some("old-master"));
    assert_eq!(read[4].etcd_server_cert_sans, ["etcd.local"]);
    fuzz!("kubeadm config + node facts", 2000, |runs, cfg| {
        proptest!(cfg, |(text in prop_oneof![
            1 => any::<String>(),
            1 => token_soup(),
            3 => mutated_text(seeds),
            2 => structured_kubeadm_config(),
        ], ev in evidence())| {
            runs.hit();
            runs.accepted(check_kubeadm_config(&text, &ev)?);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Snapshot MANIFESTs: what `recover` reads its copies by.

/// MANIFEST lines aimed at the containment check: copy paths that climb out, are absolute,
/// empty or odd, next to real ones, with real or arbitrary original paths.
fn manifest_lines(real: &'static [(String, String)]) -> impl Strategy<Value = Bytes> {
    let rel = prop_oneof![
        2 => select(real).prop_map(|(rel, _)| rel),
        2 => select(
            &[
                "..", "../..", "../../outside/secret", "../000002-real/pki/ca.key",
                "/etc/hostname", "pki/../../../outside/secret", "./pki/ca.crt", "pki/./ca.crt",
                "pki//ca.crt", "", ".", "pki/", "pki\\..\\..\\x", "~/x", "MANIFEST", "pki",
                "pki/etcd/../../..", "//", "/", "\u{0}", "pki/ca.crt\u{0}",
            ][..]
        )
        .prop_map(str::to_string),
        1 => "[a-z./]{0,14}",
    ];
    let original = prop_oneof![
        2 => select(real).prop_map(|(_, original)| original),
        1 => "(/[a-z.]{0,6}){0,4}",
        1 => any::<String>(),
    ];
    let sep = select(&["\t", "\t", "\t", " ", "\t\t", "", "\r\t"][..]);
    vec((rel, sep, original), 0..8).prop_map(|lines| {
        let text: Vec<String> = lines
            .into_iter()
            .map(|(rel, sep, original)| format!("{rel}{sep}{original}"))
            .collect();
        Bytes(text.join("\n").into_bytes())
    })
}

/// A state dir with two snapshots: `000002-real`, the real one (newest, never touched), and
/// `000001-x`, planted anew by each case; and a file outside both that no copy may be.
struct SnapshotSandbox {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    planted: PathBuf,
    outside: PathBuf,
}

impl SnapshotSandbox {
    fn new() -> SnapshotSandbox {
        let tmp = scratch_dir();
        let state = tmp.path().join("state");
        let real = snapshot::dir(&state).join("000002-real");
        let (manifest, copies) = &corpus().snapshot;
        for (rel, data) in copies {
            let to = real.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, data).unwrap();
        }
        std::fs::write(real.join("MANIFEST"), manifest).unwrap();
        let outside = tmp.path().join("outside/secret");
        std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
        std::fs::write(&outside, b"not a snapshot's file").unwrap();
        SnapshotSandbox {
            planted: snapshot::dir(&state).join("000001-x"),
            state,
            outside,
            _tmp: tmp,
        }
    }

    /// `000001-x` with some of the real copies (by index) and `manifest` as its MANIFEST.
    fn plant(&self, copies: &[Index], manifest: &[u8]) {
        let _ = std::fs::remove_dir_all(&self.planted);
        std::fs::create_dir_all(&self.planted).unwrap();
        let all = &corpus().snapshot.1;
        for i in copies {
            let (rel, data) = &all[i.index(all.len())];
            let to = self.planted.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, data).unwrap();
        }
        std::fs::write(self.planted.join("MANIFEST"), manifest).unwrap();
    }
}

/// Lists the snapshots with the planted MANIFEST: no panic; the real snapshot is always usable
/// and the planted one either listed or reported broken (with text); every copy of a listed
/// snapshot lies inside its own directory; reading any of them never panics, and gives that
/// copy's bytes. Returns whether the planted snapshot was listed.
fn check_snapshots(sandbox: &SnapshotSandbox) -> Result<bool, TestCaseError> {
    let listed = snapshot::list(&sandbox.state)
        .map_err(|e| TestCaseError::fail(format!("list failed: {e}")))?;
    let broken = snapshot::broken(&sandbox.state);
    prop_assert_eq!(listed.len() + broken.len(), 2, "{:?} {:?}", listed, broken);
    prop_assert_eq!(listed.first().map(|s| s.name.as_str()), Some("000002-real"));
    for b in &broken {
        prop_assert!(b.contains("000001-x"), "broken: {}", b);
    }
    let secret = std::fs::read(&sandbox.outside).unwrap();
    for s in &listed {
        for (original, copy) in &s.files {
            prop_assert!(
                copy.starts_with(&s.dir)
                    && copy != &s.dir
                    && !copy.components().any(|c| c == Component::ParentDir),
                "snapshot {}: {} is read from {}, outside {}",
                s.name,
                original.display(),
                copy.display(),
                s.dir.display()
            );
            match s.read(original) {
                Ok(Some((data, _))) => {
                    prop_assert_eq!(Some(data.clone()), std::fs::read(copy).ok());
                    prop_assert!(data != secret, "{} read the file outside", copy.display());
                }
                Ok(None) => return Err(TestCaseError::fail("a listed file reads as absent")),
                Err(e) => prop_assert!(!e.trim().is_empty()),
            }
        }
        let found = snapshot::find(&sandbox.state, &s.name)
            .map_err(|e| TestCaseError::fail(format!("find {}: {e}", s.name)))?;
        prop_assert_eq!(&found, s);
    }
    Ok(listed.len() == 2)
}

#[test]
fn snapshot_manifests_keep_copies_inside_their_snapshot() {
    let (manifest, _) = &corpus().snapshot;
    let real: Vec<(String, String)> = String::from_utf8(manifest.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let (rel, original) = l.split_once('\t').unwrap();
            (rel.to_string(), original.to_string())
        })
        .collect();
    let real = leak(real);
    let seeds = leak(vec![manifest.clone()]);
    let sandbox = SnapshotSandbox::new();
    // the real MANIFEST, planted with all its copies, lists and reads back
    sandbox.plant(&[], manifest);
    for (rel, data) in &corpus().snapshot.1 {
        let to = sandbox.planted.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, data).unwrap();
    }
    assert!(
        check_snapshots(&sandbox).unwrap(),
        "the real MANIFEST is not listed"
    );
    fuzz!("snapshot MANIFEST", 2500, |runs, cfg| {
        proptest!(cfg, |(data in prop_oneof![
            1 => bytes(512),
            1 => token_soup().prop_map(|t| Bytes(t.into_bytes())),
            3 => mutated(seeds),
            3 => manifest_lines(real),
        ], copies in vec(any::<Index>(), 0..6))| {
            runs.hit();
            sandbox.plant(&copies, &data);
            runs.accepted(check_snapshots(&sandbox)?);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// 7. The recover planner.

/// What happens to one file of the node before the recovery.
#[derive(Debug, Clone)]
enum Fate {
    Delete,
    Mutate(Vec<Mutation>),
    /// The other generated node's file at the same place (another cluster's CA, key, leaf).
    Foreign,
    Unreadable,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        6 => Just(Fate::Delete),
        3 => mutations().prop_map(Fate::Mutate),
        2 => Just(Fate::Foreign),
        1 => Just(Fate::Unreadable),
    ]
}

/// What happens to one file of a snapshot's copy of the node.
#[derive(Debug, Clone)]
enum SnapFate {
    Drop,
    Mutate(Vec<Mutation>),
    Foreign,
}

/// Which file an edit hits: any file of the node, or one of the cluster's secrets (the CAs,
/// their keys, `sa.key`/`sa.pub`), where a recovery's hard decisions are.
#[derive(Debug, Clone)]
enum Target {
    Any(Index),
    Secret(Index),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        2 => any::<Index>().prop_map(Target::Any),
        1 => any::<Index>().prop_map(Target::Secret),
    ]
}

impl Target {
    fn path<'a>(&self, node: &'a GeneratedNode) -> &'a PathBuf {
        let secret = |p: &&PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy();
            ["ca.crt", "ca.key", "sa.key", "sa.pub"]
                .iter()
                .any(|n| name.ends_with(n))
        };
        let pick = |paths: Vec<&'a PathBuf>, i: &Index| paths[i.index(paths.len())];
        match self {
            Target::Any(i) => pick(node.files.keys().collect(), i),
            Target::Secret(i) => pick(node.files.keys().filter(secret).collect(), i),
        }
    }
}

#[derive(Debug, Clone)]
struct SnapCase {
    /// Taken of the other node (another cluster), laid on this node's paths.
    foreign: bool,
    edits: Vec<(Target, SnapFate)>,
    mode: u32,
}

fn snap_case() -> impl Strategy<Value = SnapCase> {
    let edit = prop_oneof![
        3 => Just(SnapFate::Drop),
        2 => mutations().prop_map(SnapFate::Mutate),
        1 => Just(SnapFate::Foreign),
    ];
    (
        prop_oneof![4 => Just(false), 1 => Just(true)],
        vec((target(), edit), 0..6),
        select(&[0o600u32, 0o644][..]),
    )
        .prop_map(|(foreign, edits, mode)| SnapCase {
            foreign,
            edits,
            mode,
        })
}

#[derive(Debug, Clone)]
struct PlanCase {
    /// Which generated node (RSA, or ECDSA with a kubelet.conf naming its certificate files).
    node: usize,
    /// What was wiped first: 0 nothing, 1 the pki dir, 2 everything, 3 the leaves of pki,
    /// 4 the kubeconfigs, 5 the manifests.
    wipe: u8,
    edits: Vec<(Target, Fate)>,
    snapshots: Vec<SnapCase>,
    new_cas: BTreeSet<&'static str>,
    /// The recovery runs after the leaves expired.
    later: bool,
}

fn plan_case() -> impl Strategy<Value = PlanCase> {
    let new_ca = select(&["ca", "etcd-ca", "front-proxy-ca", "sa", "bogus"][..]);
    (
        0..2usize,
        prop_oneof![3 => Just(0u8), 1 => 1..6u8],
        vec((target(), fate()), 0..10),
        vec(snap_case(), 0..=2),
        prop_oneof![3 => Just(Vec::new()), 1 => vec(new_ca, 1..3)],
        prop_oneof![4 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(node, wipe, edits, snapshots, new_cas, later)| PlanCase {
            node,
            wipe,
            edits,
            snapshots,
            new_cas: new_cas.into_iter().collect(),
            later,
        })
}

/// The other node's file at `path`'s place (by its path inside the kubernetes dir).
fn foreign_bytes(node: usize, path: &Path) -> Option<Vec<u8>> {
    let nodes = &corpus().nodes;
    let (this, other) = (&nodes[node], &nodes[1 - node]);
    let rel = path.strip_prefix(&this.root).ok()?;
    other.files.get(&other.root.join(rel)).cloned()
}

/// The node's files as a case left them: bytes, or why unreadable; absent = deleted.
fn damaged_node(case: &PlanCase) -> BTreeMap<PathBuf, Result<Vec<u8>, String>> {
    let node = &corpus().nodes[case.node];
    let l = &node.layout;
    let wiped = |p: &Path| match case.wipe {
        1 => p.starts_with(&l.pki),
        2 => true,
        3 => {
            p.starts_with(&l.pki)
                && !kubeadm::CAS.iter().any(|c| {
                    p == l.pki.join(format!("{}.crt", c.base))
                        || p == l.pki.join(format!("{}.key", c.base))
                })
                && !p.ends_with("sa.key")
                && !p.ends_with("sa.pub")
        }
        4 => p.parent() == Some(l.kubeconfigs.as_path()),
        5 => p.starts_with(&l.manifests),
        _ => false,
    };
    let mut files: BTreeMap<PathBuf, Result<Vec<u8>, String>> = node
        .files
        .iter()
        .filter(|(p, _)| !wiped(p))
        .map(|(p, d)| (p.clone(), Ok(d.clone())))
        .collect();
    for (at, fate) in &case.edits {
        let path = at.path(node);
        match fate {
            Fate::Delete => {
                files.remove(path);
            }
            Fate::Mutate(ms) => {
                let mut data = node.files[path].clone();
                mutate(&mut data, ms);
                files.insert(path.clone(), Ok(data));
            }
            Fate::Foreign => {
                if let Some(d) = foreign_bytes(case.node, path) {
                    files.insert(path.clone(), Ok(d));
                }
            }
            Fate::Unreadable => {
                files.insert(
                    path.clone(),
                    Err(format!(
                        "{}: Permission denied (os error 13)",
                        path.display()
                    )),
                );
            }
        }
    }
    files
}

/// The snapshots of a case, newest first, read as `recover` reads them.
fn case_snapshots(case: &PlanCase) -> Vec<SnapshotFiles> {
    let node = &corpus().nodes[case.node];
    case.snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut files: BTreeMap<PathBuf, (Vec<u8>, u32)> = node
                .files
                .iter()
                .map(|(p, d)| {
                    let d = if s.foreign {
                        foreign_bytes(case.node, p).unwrap_or_else(|| d.clone())
                    } else {
                        d.clone()
                    };
                    (p.clone(), (d, s.mode))
                })
                .collect();
            for (at, fate) in &s.edits {
                let path = at.path(node);
                match fate {
                    SnapFate::Drop => {
                        files.remove(path);
                    }
                    SnapFate::Mutate(ms) => {
                        if let Some((d, _)) = files.get_mut(path) {
                            mutate(d, ms);
                        }
                    }
                    SnapFate::Foreign => {
                        if let (Some(f), Some((d, _))) =
                            (foreign_bytes(case.node, path), files.get_mut(path))
                        {
                            *d = f;
                        }
                    }
                }
            }
            SnapshotFiles {
                name: format!("{:06}-s", case.snapshots.len() - i),
                files,
            }
        })
        .collect()
}

/// The observation `recover` makes: every path the plan asks about and every file a snapshot
/// has, as it is on the node.
fn observe(case: &PlanCase) -> Observed {
    let layout = &corpus().nodes[case.node].layout;
    let disk = damaged_node(case);
    let snapshots = case_snapshots(case);
    let mut paths: BTreeSet<PathBuf> = plan::wanted_paths(layout).into_iter().collect();
    for s in &snapshots {
        paths.extend(s.files.keys().cloned());
    }
    let node = paths
        .into_iter()
        .map(|p| {
            let state = match disk.get(&p) {
                Some(Ok(d)) => OnNode::Present(d.clone()),
                Some(Err(why)) => OnNode::Unreadable(why.clone()),
                None => OnNode::Missing,
            };
            (p, state)
        })
        .collect();
    Observed { node, snapshots }
}

/// Both phases, as `recover::run::recover` chains them: the leaves only when the first phase
/// has no stop and no refusal, with the CAs `--new-ca` generates added as new.
fn full_plan(
    layout: &Layout,
    observed: &Observed,
    new_cas: &BTreeSet<String>,
    now: OffsetDateTime,
) -> (Plan, bool) {
    let mut secrets = plan::plan_secrets(layout, observed, new_cas);
    let mut plan = std::mem::take(&mut secrets.plan);
    if !plan.stops.is_empty() || !plan.refusals.is_empty() {
        return (plan, false);
    }
    for action in &plan.actions {
        if let Action::NewCa { name } = action
            && let Some(spec) = kubeadm::CAS.iter().find(|c| c.name == name)
        {
            secrets.cas.insert(
                spec.name,
                EffectiveCa {
                    bundle: Vec::new(),
                    bundle_pem: Vec::new(),
                    key_pem: Some(Vec::new()),
                    new: true,
                },
            );
        }
    }
    plan::plan_leaves(
        layout,
        observed,
        &secrets,
        &LeafOptions {
            now,
            allow_version_skew: false,
        },
        &mut plan,
    );
    (plan, true)
}

fn check_plan(case: &PlanCase) -> Result<bool, TestCaseError> {
    let node = &corpus().nodes[case.node];
    let layout = &node.layout;
    let observed = observe(case);
    let new_cas: BTreeSet<String> = case.new_cas.iter().map(|s| s.to_string()).collect();
    let now = corpus_now() + time::Duration::days(if case.later { 60 } else { 0 });
    let (plan, leaves) = full_plan(layout, &observed, &new_cas, now);
    let on_node = |p: &Path| observed.node.get(p).unwrap_or(&OnNode::Missing);
    let unreadable = |p: &Path| matches!(on_node(p), OnNode::Unreadable(_));
    let in_any = |p: &Path| observed.snapshots.iter().any(|s| s.files.contains_key(p));

    // the first phase reports what stops the run
    let ca_files = |base: &str| {
        [
            layout.pki.join(format!("{base}.crt")),
            layout.pki.join(format!("{base}.key")),
        ]
    };
    let sa = [layout.pki.join("sa.key"), layout.pki.join("sa.pub")];
    for files in kubeadm::CAS
        .iter()
        .map(|c| ca_files(c.base))
        .chain([sa.clone()])
    {
        let named: Vec<String> = files
            .iter()
            .filter(|p| unreadable(p))
            .map(|p| p.display().to_string())
            .collect();
        if !named.is_empty() {
            prop_assert!(
                plan.refusals
                    .iter()
                    .any(|r| named.iter().any(|n| r.contains(n.as_str()))),
                "unreadable {:?}, yet no refusal names it: {:?}",
                named,
                plan.refusals
            );
        }
    }
    let [ca_crt, ca_key] = ca_files("ca");
    let missing = |p: &Path| matches!(on_node(p), OnNode::Missing);
    if missing(&ca_crt) && missing(&ca_key) && !in_any(&ca_crt) && !new_cas.contains("ca") {
        prop_assert!(
            plan.stops.iter().any(|s| s.name == "ca"),
            "ca gone everywhere, no stop: {:?}",
            plan.stops
        );
    }
    if missing(&sa[0]) && !unreadable(&sa[1]) && !in_any(&sa[0]) && !new_cas.contains("sa") {
        prop_assert!(
            plan.stops.iter().any(|s| s.name == "sa"),
            "sa.key gone everywhere, no stop: {:?}",
            plan.stops
        );
    }
    if new_cas.contains("bogus") {
        prop_assert!(plan.refusals.iter().any(|r| r.contains("bogus")));
    }
    let runs = leaves && plan.refusals.is_empty();
    if case.wipe == 0 && case.edits.is_empty() && new_cas.is_empty() {
        prop_assert!(
            plan.is_empty(),
            "an intact node, yet a plan: {:?}",
            plan.actions.iter().map(Action::name).collect::<Vec<_>>()
        );
    }

    // every action
    let newest = observed.snapshots.first();
    for action in &plan.actions {
        match action {
            Action::Restore { name, files, from } => {
                prop_assert!(!files.is_empty());
                let snap = observed.snapshots.iter().find(|s| &s.name == from);
                let snap = snap.ok_or_else(|| {
                    TestCaseError::fail(format!("{name}: restored from unknown {from}"))
                })?;
                for (path, data, mode) in files {
                    // over a file on the node: only a CA key that cannot sign for the node's
                    // certificate, by a copy that can
                    if let OnNode::Present(there) = on_node(path) {
                        let bundle = kubeadm::CAS
                            .iter()
                            .find(|c| *path == layout.pki.join(format!("{}.key", c.base)))
                            .and_then(|c| {
                                match on_node(&layout.pki.join(format!("{}.crt", c.base))) {
                                    OnNode::Present(crt) => inventory::ca_bundle(crt).ok(),
                                    _ => None,
                                }
                            });
                        prop_assert!(
                            bundle.as_ref().is_some_and(|b| {
                                !keys::key_matches_bundle(there, b)
                                    && keys::key_matches_bundle(data, b)
                            }),
                            "{}: restores {}, which is on the node (and is no damaged CA key \
                             replaced by one that matches)",
                            name,
                            path.display()
                        );
                    }
                    prop_assert!(
                        !unreadable(path) || !runs,
                        "{}: restores over unreadable {}",
                        name,
                        path.display()
                    );
                    prop_assert_eq!(
                        snap.files.get(path),
                        Some(&(data.clone(), *mode)),
                        "{}: {} is not the copy of snapshot {}",
                        name,
                        path.display(),
                        from
                    );
                    prop_assert!(
                        newest.is_some_and(|s| s.files.contains_key(path)),
                        "{}: {} restored from {}, but the newest snapshot does not have it",
                        name,
                        path.display(),
                        from
                    );
                }
            }
            Action::Reissue {
                name,
                place,
                template,
                ..
            } => {
                for f in place.files() {
                    prop_assert!(!unreadable(f) || !runs, "{}: over unreadable", name);
                }
                match template {
                    Template::Cert { der, .. } | Template::Kubeconfig { der, .. } => {
                        prop_assert!(
                            CertFacts::from_der(der).is_ok(),
                            "{}: a template that does not parse",
                            name
                        );
                    }
                    Template::Profile => {}
                }
            }
            Action::DerivePublic { path, .. } => {
                prop_assert!(missing(path), "sa.pub derived over {}", path.display());
            }
            Action::NewCa { name } => {
                prop_assert!(new_cas.contains(name), "{} generated unasked", name);
            }
        }
    }
    Ok(runs && plan.stops.is_empty())
}

/// The instant the generated nodes were made for.
fn corpus_now() -> OffsetDateTime {
    static NOW: OnceLock<OffsetDateTime> = OnceLock::new();
    *NOW.get_or_init(|| {
        let leaf = pem::parse(&corpus().fresh.0).unwrap().remove(0).der;
        // the leaves were made with 30 days left
        CertFacts::from_der(&leaf).unwrap().not_after - time::Duration::days(30)
    })
}

#[test]
fn recover_planner_on_damaged_nodes_and_snapshots() {
    for node in 0..2 {
        let intact = PlanCase {
            node,
            wipe: 0,
            edits: Vec::new(),
            snapshots: vec![snap_case_plain()],
            new_cas: BTreeSet::new(),
            later: false,
        };
        check_plan(&intact).unwrap();
        // everything gone, one snapshot: all of it comes back
        let wiped = PlanCase { wipe: 2, ..intact };
        let observed = observe(&wiped);
        let (plan, leaves) = full_plan(
            &corpus().nodes[node].layout,
            &observed,
            &BTreeSet::new(),
            corpus_now(),
        );
        assert!(
            leaves && plan.refusals.is_empty() && plan.stops.is_empty(),
            "{plan:?}"
        );
        assert!(
            plan.actions
                .iter()
                .all(|a| matches!(a, Action::Restore { .. })),
            "{:?}",
            plan.actions.iter().map(Action::name).collect::<Vec<_>>()
        );
        assert!(check_plan(&wiped).unwrap());
    }
    fuzz!("recover planner", 500, |runs, cfg| {
        proptest!(cfg, |(case in plan_case())| {
            runs.hit();
            runs.accepted(check_plan(&case)?);
        });
    });
}

fn snap_case_plain() -> SnapCase {
    SnapCase {
        foreign: false,
        edits: Vec::new(),
        mode: 0o600,
    }
}

/// Two generations of snapshots of the RSA node: `000002-new` without the files `dropped`
/// names and with those `emptied` names as 0-byte copies, `000001-old` complete; on the node,
/// the files `gone` names deleted. Returns the planned restores of a file the newest snapshot
/// does not have, as "path from snapshot".
fn restored_past_the_newest(
    gone: &dyn Fn(&Path) -> bool,
    dropped: &dyn Fn(&Path) -> bool,
    emptied: &dyn Fn(&Path) -> bool,
) -> Vec<String> {
    let node = &corpus().nodes[0];
    let l = &node.layout;
    let newest = SnapshotFiles {
        name: "000002-new".into(),
        files: node
            .files
            .iter()
            .filter(|(p, _)| !dropped(p))
            .map(|(p, d)| {
                let d = if emptied(p) { Vec::new() } else { d.clone() };
                (p.clone(), (d, 0o600))
            })
            .collect(),
    };
    let old = SnapshotFiles {
        name: "000001-old".into(),
        files: node
            .files
            .iter()
            .map(|(p, d)| (p.clone(), (d.clone(), 0o600)))
            .collect(),
    };
    let mut paths: BTreeSet<PathBuf> = plan::wanted_paths(l).into_iter().collect();
    paths.extend(node.files.keys().cloned());
    let observed = Observed {
        node: paths
            .into_iter()
            .map(|p| {
                let state = match node.files.get(&p) {
                    Some(d) if !gone(&p) => OnNode::Present(d.clone()),
                    _ => OnNode::Missing,
                };
                (p, state)
            })
            .collect(),
        snapshots: vec![newest.clone(), old],
    };
    let (plan, _) = full_plan(l, &observed, &BTreeSet::new(), corpus_now());
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Restore { files, from, .. } => Some(
                files
                    .iter()
                    .filter(|(p, _, _)| !newest.files.contains_key(p))
                    .map(|(p, _, _)| {
                        let p = p.strip_prefix(&node.root).unwrap_or(p);
                        format!("{} from {from}", p.display())
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The newest snapshot decides which files the node should have (`Observed::copies`: "a file
/// removed on purpose and recorded with `snapshot --force` is not brought back from an older
/// one"). The minimal cases the planner target found, one per place of the planner:
#[test]
fn recover_planner_keeps_out_what_the_newest_snapshot_dropped() {
    let node = &corpus().nodes[0];
    let l = &node.layout;
    let named = |names: &'static [&'static str]| {
        move |p: &Path| {
            names
                .iter()
                .any(|n| p.strip_prefix(&node.root) == Ok(Path::new(n)))
        }
    };
    let none = |_: &Path| false;
    let mut wrong = Vec::new();
    // 1. etcd moved off the node (its CA, leaves and manifest, and the apiserver's etcd client
    // pair removed, recorded by `snapshot --force`), then the pki dir was deleted: the etcd CA
    // and its key come back from the older generation, though this node runs no etcd.
    let moved_out = |p: &Path| {
        p.starts_with(l.pki.join("etcd"))
            || p == l.manifests.join("etcd.yaml")
            || p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("apiserver-etcd-client"))
    };
    let wiped = |p: &Path| p.starts_with(&l.pki) || moved_out(p);
    wrong.extend(restored_past_the_newest(&wiped, &moved_out, &none));
    // 2. a leaf pair gone from the node, its certificate not in the newest snapshot: the pair is
    // restored whole from the older one (plan_pair, both files missing)
    let pair = named(&[
        "pki/etcd/healthcheck-client.crt",
        "pki/etcd/healthcheck-client.key",
    ]);
    let cert = named(&["pki/etcd/healthcheck-client.crt"]);
    wrong.extend(restored_past_the_newest(&pair, &cert, &none));
    // 3. sa.key and sa.pub gone, the newest snapshot without sa.pub and with an empty sa.key:
    // sa.pub comes back from the older generation with its key (plan_sa's companion copy)
    let sa = named(&["pki/sa.key", "pki/sa.pub"]);
    let sa_pub = named(&["pki/sa.pub"]);
    let sa_key = named(&["pki/sa.key"]);
    wrong.extend(restored_past_the_newest(&sa, &sa_pub, &sa_key));
    assert!(
        wrong.is_empty(),
        "restored though the newest snapshot has no copy: {wrong:#?}"
    );
}
