//! Planning a renewal: a pure function of (inventory, options, now). No I/O and no clock reads,
//! so `--dry-run` prints it as is and most of the decision logic is unit-tested here.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::pki::cert::CertFacts;
use crate::pki::inventory::{Cap, Entry, Inventory, Kind, Signer, Source, State};
use crate::pki::kubeadm;
use crate::pki::reissue::{self, Validity};

/// Which certificates a `renew` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// kubeadm's set: the 7 leaves and admin/super-admin/controller-manager/scheduler.conf.
    All,
    /// Those of kubeadm's set expiring within `renew_before_days`.
    Due,
    /// These kubeadm names (plus `kubelet.conf`).
    Names(Vec<String>),
}

/// What the plan depends on besides the inventory.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which certificates.
    pub selection: Selection,
    /// Validity of the new certificates in days.
    pub validity_days: u32,
    /// Keep the existing private keys.
    pub reuse_keys: bool,
    /// `Due` threshold in days.
    pub renew_before_days: u32,
    /// The instant of the renewal.
    pub now: OffsetDateTime,
}

/// One certificate to re-issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// kubeadm's name.
    pub name: String,
    /// Where it lives (read and written through this).
    pub source: Source,
    /// The CA that verifiably signed it, which signs the new one.
    pub ca: &'static str,
    /// Current NotAfter.
    pub old_not_after: OffsetDateTime,
    /// The new validity window.
    pub validity: Validity,
    /// Keep the key file as it is.
    pub reuse_key: bool,
    /// It already ends at its CA's end ([`Cap::reached_by`]): re-issued only because it was
    /// asked for by name or with `all`, or is not valid yet; the new one ends no later.
    pub at_cap: bool,
}

/// A certificate left alone, and why (not a failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// kubeadm's name.
    pub name: String,
    /// Why it is not renewed.
    pub reason: String,
}

/// A reason the whole run must stop before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// kubeadm's name.
    pub name: String,
    /// What is wrong, naming the file.
    pub reason: String,
}

/// The plan of one `renew`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// What will be re-issued, in kubeadm's order.
    pub renew: Vec<Item>,
    /// What is left alone, and why.
    pub skip: Vec<Skip>,
    /// What stops the run.
    pub refuse: Vec<Refusal>,
}

const DAY: i64 = 86_400;

fn selected<'a>(
    inventory: &'a Inventory,
    options: &Options,
) -> Result<Vec<&'a Entry>, Vec<Refusal>> {
    // kubeadm's set, plus kubelet.conf so the output says why it is left alone.
    let kubeadm_set = || {
        inventory
            .leaves
            .iter()
            .chain(
                inventory
                    .others
                    .iter()
                    .filter(|e| e.kind == Kind::KubeletClient),
            )
            .collect::<Vec<_>>()
    };
    match &options.selection {
        Selection::All | Selection::Due => Ok(kubeadm_set()),
        Selection::Names(names) => {
            let mut out = Vec::new();
            let mut unknown = Vec::new();
            for name in names {
                match inventory.leaf(name) {
                    Some(e) if !out.iter().any(|o: &&Entry| o.name == e.name) => out.push(e),
                    Some(_) => {}
                    None => unknown.push(Refusal {
                        name: name.clone(),
                        reason: format!(
                            "unknown certificate name {name:?}; known: {}, {}",
                            kubeadm::LEAVES.map(|l| l.name).join(", "),
                            kubeadm::KUBELET_CONF
                        ),
                    }),
                }
            }
            if unknown.is_empty() {
                Ok(out)
            } else {
                Err(unknown)
            }
        }
    }
}

/// For each CA whose key is on the node: the certificate of its file that matches the key (the
/// one that will sign), or why it cannot sign. Read by `renewal::load_signers`.
pub type SigningCerts = BTreeMap<&'static str, Result<CertFacts, String>>;

/// Decides what a `renew` does.
pub fn plan(inventory: &Inventory, signing: &SigningCerts, options: &Options) -> Plan {
    let mut plan = Plan::default();
    let entries = match selected(inventory, options) {
        Ok(e) => e,
        Err(refusals) => {
            plan.refuse = refusals;
            return plan;
        }
    };
    let explicit = matches!(options.selection, Selection::Names(_));
    for entry in entries {
        let name = entry.name.clone();
        let skip = |plan: &mut Plan, reason: String| {
            plan.skip.push(Skip {
                name: name.clone(),
                reason,
            })
        };
        let refuse = |plan: &mut Plan, reason: String| {
            plan.refuse.push(Refusal {
                name: name.clone(),
                reason,
            })
        };
        if entry.kind == Kind::KubeletClient && !explicit {
            let why = match &entry.source {
                Source::KubeconfigFileRef { cert, .. } => {
                    format!("the kubelet rotates it itself ({})", cert.display())
                }
                _ => "not in kubeadm's set; renew it with `renew kubelet.conf`".into(),
            };
            skip(&mut plan, why);
            continue;
        }
        let facts = match &entry.state {
            State::Present(f) => f,
            State::Missing => {
                skip(
                    &mut plan,
                    format!(
                        "missing: {} does not exist",
                        entry.source.cert_path().display()
                    ),
                );
                continue;
            }
            State::Absent(why) => {
                skip(&mut plan, format!("absent: {why}"));
                continue;
            }
            State::Unreadable(why) => {
                refuse(&mut plan, format!("cannot be parsed: {why}"));
                continue;
            }
        };
        if let Source::KubeconfigFileRef { cert, .. } = &entry.source {
            if entry.kind == Kind::KubeletClient {
                skip(
                    &mut plan,
                    format!("the kubelet rotates it itself ({})", cert.display()),
                );
            } else {
                refuse(
                    &mut plan,
                    format!(
                        "its kubeconfig points at {} instead of embedding it",
                        cert.display()
                    ),
                );
            }
            continue;
        }
        let expected = entry.expected_ca.unwrap_or(kubeadm::CA.name);
        let ca_row = inventory.cas.iter().find(|c| c.name == expected);
        if let Some(State::Unreadable(why)) = ca_row.map(|c| &c.state) {
            refuse(
                &mut plan,
                format!("its CA {expected} cannot be read: {why}"),
            );
            continue;
        }
        let ca = match entry.signer {
            Signer::Verified { ca } if ca == expected => ca,
            Signer::Verified { ca } => {
                refuse(
                    &mut plan,
                    format!(
                        "{} is signed by {ca}, but kubeadm signs it with {expected}; refusing to guess",
                        entry.source.describe()
                    ),
                );
                continue;
            }
            _ if inventory.ca_file(expected).is_none() => {
                skip(
                    &mut plan,
                    format!("its CA {expected} is not on this node: nothing here can re-sign it"),
                );
                continue;
            }
            _ => {
                refuse(
                    &mut plan,
                    format!(
                        "{} is not signed by any known CA; it cannot be re-signed",
                        entry.source.describe()
                    ),
                );
                continue;
            }
        };
        let Some(ca_file) = inventory.ca_file(ca) else {
            continue; // a verified signer always has its CA file
        };
        if !ca_file.has_key {
            skip(
                &mut plan,
                format!(
                    "its CA {ca} is externally managed ({} has no key)",
                    ca_file.cert_path.display()
                ),
            );
            continue;
        }
        let left = facts.residual_seconds(options.now);
        // a certificate not valid yet (issued under a clock that was ahead) is as due as an
        // expired one: every peer refuses it
        let not_yet_valid = options.now < facts.not_before;
        if options.selection == Selection::Due
            && left >= i64::from(options.renew_before_days) * DAY
            && !not_yet_valid
        {
            skip(&mut plan, format!("not due: {} days left", left / DAY));
            continue;
        }
        let signing_cert = match signing.get(ca) {
            Some(Ok(cert)) => cert,
            Some(Err(why)) => {
                refuse(&mut plan, why.clone());
                continue;
            }
            None => {
                refuse(&mut plan, format!("the key of CA {ca} was not loaded"));
                continue;
            }
        };
        if signing_cert.not_after <= options.now {
            refuse(
                &mut plan,
                format!(
                    "its CA {ca} ({}) expired on {}: it needs a CA rotation, not a renewal",
                    ca_file.cert_path.display(),
                    crate::report::rfc3339(signing_cert.not_after)
                ),
            );
            continue;
        }
        let ca_not_after = signing_cert.not_after;
        let cap = Cap {
            ca,
            not_after: ca_not_after,
        };
        let at_cap = cap.reached_by(facts.not_after);
        // a renewal would give it the end it has: never due (a named or `all` renewal is the
        // operator's intent, e.g. a compromised key, and goes ahead)
        if options.selection == Selection::Due && at_cap && !not_yet_valid {
            skip(
                &mut plan,
                format!(
                    "capped: it ends on {}, at the end of its CA {ca} ({}), so a renewal cannot \
                     extend it; {}",
                    crate::report::rfc3339(facts.not_after),
                    ca_file.cert_path.display(),
                    crate::report::status::ROTATE_CA_ADVICE
                ),
            );
            continue;
        }
        plan.renew.push(Item {
            name,
            source: entry.source.clone(),
            ca,
            old_not_after: facts.not_after,
            validity: reissue::validity(options.now, options.validity_days, ca_not_after),
            reuse_key: options.reuse_keys,
            at_cap,
        });
    }
    plan.refuse.extend(shared_files(inventory, &plan.renew));
    plan
}

/// The files a planned item writes: its certificate, its key unless kept, or its kubeconfig.
fn written(item: &Item) -> Vec<&std::path::Path> {
    match &item.source {
        Source::PemPair { cert, key } if item.reuse_key => vec![cert.as_path()],
        other => other.files(),
    }
}

/// Refusals for files that are one file under two names (a symlink, or a pair whose key and
/// certificate are the same file): writing one would change the other, and a certificate would
/// be left with a key that is not its own. Compared with every kubeadm file of the node —
/// CAs included, renewed or not — after resolving links.
fn shared_files(inventory: &Inventory, items: &[Item]) -> Vec<Refusal> {
    let others: Vec<(&str, &std::path::Path)> = inventory
        .cas
        .iter()
        .chain(&inventory.leaves)
        .chain(inventory.others.iter().filter(|e| e.kind != Kind::Extra))
        .flat_map(|e| e.source.files().into_iter().map(|f| (e.name.as_str(), f)))
        .collect();
    let mut refusals = Vec::new();
    for item in items {
        for file in written(item) {
            let real = inventory.real_path(file);
            let twin = others.iter().find(|(name, other)| {
                (*name != item.name || *other != file) && inventory.real_path(other) == real
            });
            if let Some((name, other)) = twin {
                let whose = if *name == item.name {
                    "its own other file".to_string()
                } else {
                    format!("a file of {name}")
                };
                refusals.push(Refusal {
                    name: item.name.clone(),
                    reason: format!(
                        "{} and {} ({whose}) are one file ({}): renewing would change both and \
                         leave a certificate with a key that is not its own. Give each its own \
                         file{}",
                        file.display(),
                        other.display(),
                        real.display(),
                        if matches!(item.source, Source::PemPair { .. }) && !item.reuse_key {
                            " (or, when only keys are shared, renew with --reuse-keys)"
                        } else {
                            ""
                        }
                    ),
                });
                break;
            }
        }
    }
    refusals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodePaths;
    use crate::demo::nodegen::{self, NodeSpec};
    use crate::pki::inventory;
    use crate::pki::keys::KeyAlgorithm;
    use time::Duration;

    fn node(days_left: i64) -> (tempfile::TempDir, Inventory, SigningCerts, OffsetDateTime) {
        node_with(days_left, |_| {})
    }

    fn node_with(
        days_left: i64,
        change: impl FnOnce(&mut NodeSpec),
    ) -> (tempfile::TempDir, Inventory, SigningCerts, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = NodeSpec::new(now, days_left);
        change(&mut spec);
        spec.key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.manifests = false;
        spec.super_admin = false;
        nodegen::generate(tmp.path(), &spec).unwrap();
        let paths = NodePaths {
            pki: tmp.path().join("pki"),
            kubeconfigs: tmp.path().to_path_buf(),
            manifests: tmp.path().join("manifests"),
            state: tmp.path().join("state"),
        };
        let inv = inventory::scan(&paths, &inventory::Options::default());
        let signing =
            crate::renew::execute::signing_certs(&crate::renew::execute::load_signers(&inv));
        (tmp, inv, signing, now)
    }

    fn options(selection: Selection, now: OffsetDateTime) -> Options {
        Options {
            selection,
            validity_days: 365,
            reuse_keys: false,
            renew_before_days: 45,
            now,
        }
    }

    #[test]
    fn all_is_kubeadms_set_in_kubeadms_order() {
        let (_t, inv, signing, now) = node(100);
        let p = plan(&inv, &signing, &options(Selection::All, now));
        let names: Vec<&str> = p.renew.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "admin.conf",
                "apiserver",
                "apiserver-etcd-client",
                "apiserver-kubelet-client",
                "controller-manager.conf",
                "etcd-healthcheck-client",
                "etcd-peer",
                "etcd-server",
                "front-proxy-client",
                "scheduler.conf"
            ]
        );
        assert_eq!(p.skip.len(), 2, "{:?}", p.skip);
        assert!(p.skip[0].name == "super-admin.conf" && p.skip[0].reason.starts_with("absent"));
        assert!(
            p.skip[1].name == "kubelet.conf" && p.skip[1].reason.contains("not in kubeadm's set")
        );
        assert!(p.refuse.is_empty());
        let i = &p.renew[1];
        assert_eq!(i.validity.not_before, now - Duration::minutes(5));
        assert_eq!(
            i.validity.not_after.unix_timestamp(),
            (now + Duration::days(365)).unix_timestamp()
        );
        assert!(!i.validity.capped);
    }

    #[test]
    fn due_takes_only_what_expires_within_the_threshold() {
        let (_t, inv, signing, now) = node(44);
        assert_eq!(
            plan(&inv, &signing, &options(Selection::Due, now))
                .renew
                .len(),
            10
        );
        let (_t, inv, signing, now) = node(46);
        let p = plan(&inv, &signing, &options(Selection::Due, now));
        assert!(p.renew.is_empty());
        assert!(
            p.skip
                .iter()
                .any(|s| s.reason.starts_with("not due: 45 days left")),
            "{:?}",
            p.skip
        );
    }

    #[test]
    fn due_takes_what_is_not_valid_yet() {
        // issued under a clock a year ahead: two years of life left, and no peer accepts it
        let (_t, inv, signing, now) = node_with(730, |spec| {
            spec.leaf_not_before = OffsetDateTime::now_utc() + Duration::days(365);
        });
        let p = plan(&inv, &signing, &options(Selection::Due, now));
        assert_eq!(p.renew.len(), 10, "{:?}", p.skip);
        assert!(p.refuse.is_empty(), "{:?}", p.refuse);
        // re-issued valid from now
        assert!(p.renew.iter().all(|i| i.validity.not_before < now));
    }

    #[test]
    fn names_pick_and_unknown_names_refuse() {
        let (_t, inv, signing, now) = node(100);
        let p = plan(
            &inv,
            &signing,
            &options(
                Selection::Names(vec!["scheduler.conf".into(), "kubelet.conf".into()]),
                now,
            ),
        );
        assert_eq!(
            p.renew.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["scheduler.conf", "kubelet.conf"]
        );
        let p = plan(
            &inv,
            &signing,
            &options(Selection::Names(vec!["apiservr".into()]), now),
        );
        assert!(p.renew.is_empty());
        assert!(p.refuse[0].reason.contains("unknown certificate name"));
    }

    #[test]
    fn validity_is_capped_at_the_ca() {
        let (_t, inv, signing, now) = node(100);
        let mut o = options(Selection::All, now);
        o.validity_days = 20_000;
        let p = plan(&inv, &signing, &o);
        let ca_end = signing["ca"].as_ref().unwrap().not_after;
        let item = p.renew.iter().find(|i| i.name == "apiserver").unwrap();
        assert!(item.validity.capped);
        assert_eq!(item.validity.not_after, ca_end);
    }

    /// A node whose CAs end `ca_days` from now and whose leaves end at `leaf_end(CA's end)`.
    fn node_near_its_cas_end(
        ca_days: i64,
        leaf_end: impl FnOnce(OffsetDateTime) -> OffsetDateTime,
    ) -> (tempfile::TempDir, Inventory, SigningCerts, OffsetDateTime) {
        node_with(3, |spec| {
            spec.ca_not_after = spec.leaf_not_after + Duration::days(ca_days - 3);
            spec.leaf_not_after = leaf_end(spec.ca_not_after);
        })
    }

    #[test]
    fn due_skips_a_leaf_at_its_cas_end_and_says_why() {
        let (_t, inv, signing, now) = node_near_its_cas_end(5, |ca_end| ca_end);
        let p = plan(&inv, &signing, &options(Selection::Due, now));
        assert!(p.renew.is_empty(), "{:?}", p.renew);
        assert!(p.refuse.is_empty(), "{:?}", p.refuse);
        let apiserver = p.skip.iter().find(|s| s.name == "apiserver").unwrap();
        assert!(
            apiserver.reason.starts_with("capped: it ends on")
                && apiserver.reason.contains("at the end of its CA ca (")
                && apiserver
                    .reason
                    .contains(crate::report::status::ROTATE_CA_ADVICE),
            "{}",
            apiserver.reason
        );
        // outliving its CA (old kubeadm did not cut leaves): skipped too
        let (_t, inv, signing, now) =
            node_near_its_cas_end(5, |ca_end| ca_end + Duration::days(30));
        let p = plan(&inv, &signing, &options(Selection::Due, now));
        assert!(p.renew.is_empty(), "{:?}", p.renew);
        // 61 s short of it: a renewal still extends it, so it is due
        let (_t, inv, signing, now) =
            node_near_its_cas_end(5, |ca_end| ca_end - Duration::seconds(61));
        let p = plan(&inv, &signing, &options(Selection::Due, now));
        assert_eq!(p.renew.len(), 10, "{:?}", p.skip);
        assert!(p.renew.iter().all(|i| !i.at_cap && i.validity.capped));
    }

    #[test]
    fn all_and_names_still_reissue_a_capped_leaf_and_mark_it() {
        let (_t, inv, signing, now) = node_near_its_cas_end(5, |ca_end| ca_end);
        let p = plan(&inv, &signing, &options(Selection::All, now));
        assert_eq!(p.renew.len(), 10, "{:?}", p.skip);
        let ca_end = signing["ca"].as_ref().unwrap().not_after;
        for item in &p.renew {
            assert!(item.at_cap, "{}", item.name);
            assert!(
                item.validity.not_after <= item.old_not_after,
                "{}",
                item.name
            );
        }
        assert_eq!(p.renew[1].validity.not_after, ca_end);
        let names = Selection::Names(vec!["apiserver".into()]);
        let p = plan(&inv, &signing, &options(names, now));
        assert_eq!(p.renew.len(), 1);
        assert!(p.renew[0].at_cap);
    }

    #[test]
    fn a_capped_leaf_not_valid_yet_is_still_due() {
        let (_t, inv, signing, _) = node_near_its_cas_end(5, |ca_end| ca_end);
        // judged before the leaves' NotBefore (a clock behind): a renewal makes them valid
        let before = inv.leaf("apiserver").unwrap().facts().unwrap().not_before;
        let p = plan(
            &inv,
            &signing,
            &options(Selection::Due, before - Duration::hours(1)),
        );
        assert_eq!(p.renew.len(), 10, "{:?}", p.skip);
        assert!(p.renew.iter().all(|i| i.at_cap));
    }

    /// Mid-rotation: `ca.crt` holds the old CA (ending in 5 days, which signed the leaves and
    /// caps them there) and a new one whose key is now `ca.key`. A renewal signs with the new
    /// CA and does extend them: they are not capped, and `--due` takes them.
    #[test]
    fn the_cap_is_the_ca_certificate_that_signs_the_renewal() {
        let (tmp, _, _, now) = node_near_its_cas_end(5, |ca_end| ca_end);
        let mut spec = NodeSpec::new(now, 100);
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        let new = nodegen::make_ca("kubernetes", &spec).unwrap();
        let pki = tmp.path().join("pki");
        let old = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
        std::fs::write(pki.join("ca.crt"), format!("{old}{}", new.cert_pem)).unwrap();
        std::fs::write(pki.join("ca.key"), &new.key_pem).unwrap();
        let paths = NodePaths {
            pki: pki.clone(),
            kubeconfigs: tmp.path().to_path_buf(),
            manifests: tmp.path().join("manifests"),
            state: tmp.path().join("state"),
        };
        let inv = inventory::scan(&paths, &inventory::Options::default());
        let apiserver = inv.leaf("apiserver").unwrap();
        assert_eq!(apiserver.signer, Signer::Verified { ca: "ca" });
        let cap = apiserver.cap.unwrap();
        assert!(cap.not_after > now + Duration::days(3000), "{cap:?}");
        assert_eq!(apiserver.capped(), None);
        let signing =
            crate::renew::execute::signing_certs(&crate::renew::execute::load_signers(&inv));
        let p = plan(&inv, &signing, &options(Selection::Due, now));
        let renewed: Vec<&str> = p.renew.iter().map(|i| i.name.as_str()).collect();
        assert!(renewed.contains(&"apiserver"), "{:?}", p.skip);
        // the etcd leaves, whose CA did not change, stay capped
        assert!(!renewed.contains(&"etcd-server"), "{renewed:?}");
        assert!(inv.leaf("etcd-server").unwrap().capped().is_some());
    }

    #[test]
    fn an_expired_ca_refuses() {
        let (_t, inv, signing, now) = node(100);
        let later = now + Duration::days(3650 * 2);
        let p = plan(&inv, &signing, &options(Selection::All, later));
        assert!(p.renew.is_empty());
        assert!(
            p.refuse
                .iter()
                .all(|r| r.reason.contains("needs a CA rotation")),
            "{:?}",
            p.refuse
        );
    }
}
