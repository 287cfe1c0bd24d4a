//! Executes the certificate part of a plan: build and validate everything in memory, then back
//! up, journal and write atomically. Storage is reached only through `inventory::Source`, so
//! the logic is the same for a PEM pair and a kubeconfig.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::config::NodePaths;
use crate::failpoint;
use crate::pki::cert::CertFacts;
use crate::pki::inventory::{Inventory, Source};
use crate::pki::keys::{self, KeyAlgorithm, PrivateKey};
use crate::pki::kubeconfig::{self, ClientCert, NewCredentials};
use crate::pki::pem;
use crate::pki::reissue::{self, Signer};
use crate::renew::plan::{Item, Plan, SigningCerts, Skip};
use crate::state::journal::{self, FileIntent, Intent};
use crate::state::store;

/// One file that changes, with its complete new content.
#[derive(Debug, Clone)]
pub struct Change {
    /// The file.
    pub path: PathBuf,
    /// Its new bytes.
    pub data: Vec<u8>,
    /// The certificate it belongs to (kubeadm's name): the files of one certificate (its key and
    /// itself) change together or not at all.
    pub group: String,
    /// The mode of a file that does not exist yet (a recovery creates it); an existing file
    /// keeps its own.
    pub new_mode: u32,
}

/// What happened (or, in a dry run, would happen) to one certificate.
#[derive(Debug, Clone)]
pub struct Renewed {
    /// kubeadm's name.
    pub name: String,
    /// Where it lives (the PEM file, or the kubeconfig).
    pub path: PathBuf,
    /// The CA that signed the new certificate.
    pub ca: &'static str,
    /// NotAfter before.
    pub old_not_after: OffsetDateTime,
    /// NotAfter after.
    pub new_not_after: OffsetDateTime,
    /// The new certificate's serial (hex).
    pub serial: String,
    /// e.g. "new RSA-2048 key (RSA PRIVATE KEY)" or "key kept".
    pub key_action: String,
}

/// The result of a renewal.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What was renewed (or would be).
    pub renewed: Vec<Renewed>,
    /// What was left alone, and why.
    pub skipped: Vec<Skip>,
    /// Where the replaced files were saved (none in a dry run or when nothing changed).
    pub backup: Option<PathBuf>,
    /// Things the operator should know (validity capped at the CA's end…).
    pub warnings: Vec<String>,
    /// Every file written (or that would be).
    pub files: Vec<PathBuf>,
}

/// One item built: its file changes, its summary and its warnings.
type Built = (Vec<Change>, Renewed, Vec<String>);

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// A CA ready to sign: the bundle certificate that matches its key, the key, and the CA file's
/// certificates as PEM (what kubeconfigs get as `certificate-authority-data`).
pub struct SigningCa {
    facts: CertFacts,
    key: PrivateKey,
    cert_file: PathBuf,
    bundle_pem: Vec<u8>,
}

impl SigningCa {
    /// What signs with this CA (its certificate that matches the key, and the key).
    pub fn signer(&self) -> Signer<'_> {
        Signer {
            cert_der: &self.facts.der,
            key: &self.key.pair,
        }
    }

    /// The certificate of the CA file that matches the key.
    pub fn cert(&self) -> &CertFacts {
        &self.facts
    }

    /// The CA file's certificates as PEM (a kubeconfig's `certificate-authority-data`).
    pub fn bundle_pem(&self) -> &[u8] {
        &self.bundle_pem
    }
}

/// Loads the key of every CA that has one, and finds the certificate of its file that the key
/// belongs to (in a bundle, the new CA of a rotation may come first or last).
pub fn load_signers(inventory: &Inventory) -> BTreeMap<&'static str, Result<SigningCa, String>> {
    inventory
        .ca_files
        .iter()
        .filter(|f| f.has_key)
        .map(|file| {
            let loaded = (|| {
                let key_data = read(&file.key_path)?;
                let (key, facts) = crate::pki::inventory::ca_key_match(
                    &key_data,
                    &file.bundle,
                    &file.key_path,
                    &file.cert_path,
                )?;
                let facts = facts.clone();
                let bundle_pem = file
                    .bundle
                    .iter()
                    .map(|c| pem::encode("CERTIFICATE", &c.der))
                    .collect::<String>()
                    .into_bytes();
                Ok(SigningCa {
                    facts,
                    key,
                    cert_file: file.cert_path.clone(),
                    bundle_pem,
                })
            })();
            (file.spec.name, loaded)
        })
        .collect()
}

/// What the (pure) planner needs to know of the signers.
pub fn signing_certs(signers: &BTreeMap<&'static str, Result<SigningCa, String>>) -> SigningCerts {
    signers
        .iter()
        .map(|(name, s)| {
            (
                *name,
                s.as_ref().map(|s| s.facts.clone()).map_err(Clone::clone),
            )
        })
        .collect()
}

/// The certificate and key of one place, as they are now.
struct Current {
    cert: CertFacts,
    key: PrivateKey,
    /// For kubeconfigs: the whole file text, rewritten by span.
    kubeconfig_text: Option<String>,
}

fn first_cert(data: &[u8], path: &Path) -> Result<CertFacts, String> {
    crate::pki::inventory::parse_cert_bundle(data)
        .map(|mut v| v.swap_remove(0))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a key and checks it belongs to the certificate; `what` names it in errors.
fn matching_key(cert: &CertFacts, key_pem: &[u8], what: &str) -> Result<PrivateKey, String> {
    let key = keys::parse_private_key(key_pem).map_err(|e| format!("{what}: {e}"))?;
    if !keys::matches_spki(&key.pair, &cert.spki_der) {
        return Err(format!("{what} does not match its certificate"));
    }
    Ok(key)
}

fn read_current(source: &Source) -> Result<Current, String> {
    match source {
        Source::PemPair { cert, key } => {
            let cert_facts = first_cert(&read(cert)?, cert)?;
            let key_parsed = matching_key(&cert_facts, &read(key)?, &key.display().to_string())?;
            Ok(Current {
                cert: cert_facts,
                key: key_parsed,
                kubeconfig_text: None,
            })
        }
        Source::Kubeconfig { path, .. } => {
            let text = String::from_utf8(read(path)?)
                .map_err(|_| format!("{}: not a text file", path.display()))?;
            let creds = kubeconfig::credentials(&text, path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let ClientCert::Embedded { cert_pem, key_pem } = creds.client else {
                return Err(format!(
                    "{}: the client certificate is not embedded",
                    path.display()
                ));
            };
            let key_pem =
                key_pem.ok_or_else(|| format!("{}: no client-key-data", path.display()))?;
            let cert_facts = first_cert(&cert_pem, path)?;
            let what = format!("{}: client-key-data", path.display());
            let key_parsed = matching_key(&cert_facts, &key_pem, &what)?;
            Ok(Current {
                cert: cert_facts,
                key: key_parsed,
                kubeconfig_text: Some(text),
            })
        }
        other => Err(format!("{}: cannot be renewed from here", other.describe())),
    }
}

/// Builds and validates one item: returns what changes and a summary.
fn build(
    item: &Item,
    ca: &SigningCa,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Change>, Renewed), String> {
    let current = read_current(&item.source)?;
    let algorithm: KeyAlgorithm = keys::algorithm_of_spki(&current.cert.spki_der)
        .map_err(|e| format!("{}: {e}", item.source.describe()))?;
    let validity = item.validity;
    if item.at_cap {
        warnings.push(format!(
            "{}: validity capped at the end of CA {} ({}), where it already ended: this renewal \
             does not extend it; {}",
            item.name,
            item.ca,
            crate::report::rfc3339(validity.not_after),
            crate::report::status::ROTATE_CA_ADVICE
        ));
    } else if validity.capped {
        warnings.push(format!(
            "{}: validity capped at the end of CA {} ({})",
            item.name,
            item.ca,
            crate::report::rfc3339(validity.not_after)
        ));
    }
    let (new_pair_pem, key_action, new_pair) = if item.reuse_key {
        (current.key.pem.clone(), "key kept".to_string(), None)
    } else {
        let pair = keys::generate(algorithm)?;
        let pem_text = keys::encode(&pair, algorithm, current.key.encoding)?;
        (
            pem_text.into_bytes(),
            format!("new {algorithm} key ({})", current.key.encoding.label()),
            Some(pair),
        )
    };
    let subject_key = new_pair.as_ref().unwrap_or(&current.key.pair);
    let signer = Signer {
        cert_der: &ca.facts.der,
        key: &ca.key.pair,
    };
    let new_der = reissue::reissue(
        &current.cert.der,
        &rcgen::PublicKeyData::subject_public_key_info(subject_key),
        &signer,
        validity,
    )
    .map_err(|e| format!("{}: {e}", item.source.describe()))?;
    // Validate before anything is written: chain, key, faithful copy.
    let new_facts = CertFacts::from_der(&new_der)?;
    if !new_facts.is_signed_by(&ca.facts) || !new_facts.names_issuer(&ca.facts) {
        return Err(format!(
            "{}: the new certificate does not verify against {}",
            item.name,
            ca.cert_file.display()
        ));
    }
    if !keys::matches_spki(subject_key, &new_facts.spki_der) {
        return Err(format!(
            "{}: the new certificate does not match its key",
            item.name
        ));
    }
    reissue::check_faithful(&current.cert.der, &new_der)
        .map_err(|e| format!("{}: {e}", item.source.describe()))?;
    let cert_pem = pem::encode("CERTIFICATE", &new_der);

    let mut changes = Vec::new();
    match (&item.source, &current.kubeconfig_text) {
        (Source::PemPair { cert, key }, _) => {
            changes.push(Change {
                path: cert.clone(),
                data: cert_pem.into_bytes(),
                group: item.name.clone(),
                new_mode: 0o644,
            });
            if !item.reuse_key {
                changes.push(Change {
                    path: key.clone(),
                    data: new_pair_pem,
                    group: item.name.clone(),
                    new_mode: 0o600,
                });
            }
        }
        (Source::Kubeconfig { path, .. }, Some(text)) => {
            let rewritten = kubeconfig::replace_credentials(
                text,
                &NewCredentials {
                    cert_pem: cert_pem.as_bytes(),
                    key_pem: &new_pair_pem,
                    ca_pem: Some(&ca.bundle_pem),
                },
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            changes.push(Change {
                path: path.clone(),
                data: rewritten.into_bytes(),
                group: item.name.clone(),
                new_mode: 0o600,
            });
        }
        _ => {
            return Err(format!(
                "{}: cannot be renewed from here",
                item.source.describe()
            ));
        }
    }
    let summary = Renewed {
        name: item.name.clone(),
        path: item.source.cert_path().to_path_buf(),
        ca: item.ca,
        old_not_after: item.old_not_after,
        new_not_after: new_facts.not_after,
        serial: new_facts.serial_hex,
        key_action,
    };
    Ok((changes, summary))
}

/// A UTC timestamp usable as a directory name.
pub fn stamp(now: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    now.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Why a renewal did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewError {
    /// Stopped before the first write: the node is exactly as it was.
    Refused(Vec<String>),
    /// Failed after writing began; the message says what state the node was left in.
    Failed(String),
}

/// Runs the plan. Every refusal and every build or validation error stops the run before the
/// first write; a write error rolls back from the backup.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    plan: &Plan,
    signers: &BTreeMap<&'static str, Result<SigningCa, String>>,
    paths: &NodePaths,
    backup_base: &Path,
    keep_backups: usize,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<Outcome, RenewError> {
    if !plan.refuse.is_empty() {
        return Err(RenewError::Refused(
            plan.refuse
                .iter()
                .map(|r| format!("{}: {}", r.name, r.reason))
                .collect(),
        ));
    }
    let mut outcome = Outcome {
        skipped: plan.skip.clone(),
        ..Outcome::default()
    };
    let mut work: Vec<(&Item, &SigningCa)> = Vec::new();
    let mut errors = Vec::new();
    for item in &plan.renew {
        match signers.get(item.ca) {
            Some(Ok(ca)) => work.push((item, ca)),
            Some(Err(e)) => errors.push(format!("{}: {e}", item.name)),
            None => errors.push(format!(
                "{}: the key of CA {} was not loaded",
                item.name, item.ca
            )),
        }
    }
    if !errors.is_empty() {
        return Err(RenewError::Refused(errors));
    }
    // Items are independent and key generation dominates: with fresh keys, build them on one
    // worker per core. (Each new thread seeds its own random generator, which costs more than
    // signing, so reused keys stay on this thread.)
    let build_one = |(item, ca): &(&Item, &SigningCa)| {
        crate::daemon::systemd::beat();
        let mut warnings = Vec::new();
        build(item, ca, &mut warnings)
            .map(|(changes, summary)| (changes, summary, warnings))
            .map_err(|e| format!("{}: {e}", item.name))
    };
    let fresh_keys = work.iter().filter(|(item, _)| !item.reuse_key).count();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(fresh_keys);
    let built: Vec<Result<Built, String>> = if workers <= 1 {
        work.iter().map(build_one).collect()
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut results: Vec<(usize, Result<Built, String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(w) = work.get(i) else { break done };
                            done.push((i, build_one(w)));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![(
                            usize::MAX,
                            Err("internal error: a renewal worker panicked".into()),
                        )]
                    })
                })
                .collect()
        });
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    };
    let mut changes = Vec::new();
    for result in built {
        match result {
            Ok((mut c, summary, mut warnings)) => {
                changes.append(&mut c);
                outcome.renewed.push(summary);
                outcome.warnings.append(&mut warnings);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(RenewError::Refused(errors));
    }
    // The files really written: a symlink's target (the link itself never changes).
    for c in &mut changes {
        c.path = store::resolve(&c.path).map_err(|e| RenewError::Refused(vec![e]))?;
    }
    outcome.files = changes.iter().map(|c| c.path.clone()).collect();
    if dry_run || changes.is_empty() {
        return Ok(outcome);
    }
    let renewed: Vec<String> = outcome.renewed.iter().map(|r| r.name.clone()).collect();
    let written = write_changes(&changes, &renewed, paths, backup_base, keep_backups, now)?;
    outcome.warnings.extend(written.warnings);
    outcome.backup = written.backup;
    Ok(outcome)
}

/// What [`write_changes`] did.
#[derive(Debug, Clone)]
pub struct Written {
    /// The backup of every file replaced (none when every file was new: a recovery that only
    /// creates files keeps no empty backup, which would push a real one out).
    pub backup: Option<PathBuf>,
    /// Things the operator should know (old backups not pruned).
    pub warnings: Vec<String>,
}

/// Writes `changes` as one journaled step: each new version staged beside its file (a full disk
/// stops here, nothing changed), a backup of every file replaced, the journal, then one rename
/// per file; `renewed` (kubeadm's names) are recorded as waiting for a restart. A file that
/// does not exist yet is created (undoing removes it). Shared by `renew` and `recover`.
pub fn write_changes(
    changes: &[Change],
    renewed: &[String],
    paths: &NodePaths,
    backup_base: &Path,
    keep_backups: usize,
    now: OffsetDateTime,
) -> Result<Written, RenewError> {
    let refused = |e: String| RenewError::Refused(vec![e]);
    for c in changes {
        // leftovers of a crash before this run's journal existed (they may hold keys)
        store::remove_temp_files(&c.path);
    }
    let mut intents = Vec::new();
    let mut replaced = Vec::new();
    for c in changes {
        let old = crate::pki::inventory::read_bounded(&c.path).map_err(refused)?;
        if old.is_some() {
            replaced.push(c.path.clone());
        }
        intents.push(FileIntent {
            path: c.path.clone(),
            old_sha256: old.as_deref().map(journal::sha256).unwrap_or_default(),
            new_sha256: journal::sha256(&c.data),
            group: c.group.clone(),
            previous: match old {
                Some(_) => Some(store::previous_path(&c.path).map_err(refused)?),
                None => None,
            },
        });
    }
    // Every new file is written beside its target first: a full disk or a directory that
    // refuses new files stops the run here, with nothing changed.
    let staged = store::stage_all(
        changes
            .iter()
            .map(|c| (c.path.as_path(), &c.data[..], c.new_mode)),
    )
    .map_err(|e| refused(format!("{e}; nothing was changed")))?;
    let backups = paths.state.join("backups");
    let backup = store::backup(&backups, &stamp(now), backup_base, &replaced)
        .and_then(|backup| {
            failpoint::hit("renew.after-backup");
            journal::record(
                &paths.state,
                &Intent::Renew {
                    backup: backup.clone(),
                    files: intents.clone(),
                    renewed: renewed.to_vec(),
                    at: crate::report::rfc3339(now),
                },
            )
            .map(|()| backup)
        })
        .map_err(|e| {
            store::discard(&staged);
            refused(e)
        })?;
    failpoint::hit("renew.after-journal");
    // From here on an error is undone by the journal's recovery: each replaced file's previous
    // version is renamed back (no free space needed), pair by pair.
    let undo = |e: String| {
        store::discard(&staged);
        let state = match journal::recover(&paths.state) {
            Ok(_) => "every file was restored from the backup".to_string(),
            Err(r) => {
                format!("ROLLBACK FAILED: {r}; the journal is kept and the next run retries")
            }
        };
        RenewError::Failed(format!("{e}; {state}"))
    };
    for (i, (s, intent)) in staged.iter().zip(&intents).enumerate() {
        let kept = match intent.previous {
            Some(_) => store::keep_previous(&s.target).map(|_| ()),
            None => Ok(()),
        };
        kept.and_then(|()| store::swap_in(s)).map_err(undo)?;
        failpoint::hit_nth("renew.after-write", i + 1);
    }
    failpoint::hit("renew.before-journal-clear");
    let finished = crate::state::pending::add(&paths.state, renewed, &crate::report::rfc3339(now))
        .and_then(|()| {
            failpoint::hit("renew.after-pending");
            staged
                .iter()
                .try_for_each(|s| store::remove_previous(&s.target))
        })
        .and_then(|()| journal::clear(&paths.state));
    if let Err(e) = finished {
        return Err(RenewError::Failed(format!(
            "every file was renewed, but the run could not be closed ({e}); the next run will \
             see the renewal complete and finish it"
        )));
    }
    let mut warnings = Vec::new();
    if replaced.is_empty() {
        // it held nothing (the journal needed its name); no generation of backups is used up
        let _ = std::fs::remove_dir_all(&backup);
        return Ok(Written {
            backup: None,
            warnings,
        });
    }
    if let Err(e) = store::prune_backups(&backups, keep_backups, Some(&backup)) {
        warnings.push(format!("old backups not pruned: {e}"));
    }
    Ok(Written {
        backup: Some(backup),
        warnings,
    })
}
