//! `check`'s output: kubeadm's tables and JSON schema (so existing scripts keep working), plus
//! the prometheus text format with x509-certificate-exporter's metric names.

use std::fmt::Write;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub mod runs;
pub mod status;

use crate::node::status::{NodeStatus, WaitingRestart};
use crate::pki::inventory::{Entry, Inventory, Kind, Signer, Source, State};
use crate::report::status::{Status, Thresholds};

/// One entry with its computed status, ready to print.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The inventory entry.
    pub entry: &'a Entry,
    /// Its status at the report's `now`.
    pub status: Status,
}

/// A classified inventory at one instant.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The instant everything is measured against.
    pub now: OffsetDateTime,
    /// CA rows.
    pub cas: Vec<Row<'a>>,
    /// kubeadm's leaves.
    pub leaves: Vec<Row<'a>>,
    /// kubelet.conf and extra paths.
    pub others: Vec<Row<'a>>,
    /// Problems that are not expiry: unreadable files, unknown signers.
    pub problems: Vec<String>,
    /// Some leaf is signed by no known CA (needs attention even if not expiring).
    pub unknown_signer: bool,
    /// Parked manifests and pending restarts (empty unless [`Report::with_node`]).
    pub node: NodeStatus,
    /// The thresholds, for what pending components serve.
    thresholds: Thresholds,
}

impl<'a> Report<'a> {
    /// Classifies every entry of `inventory` at `now`.
    pub fn new(inventory: &'a Inventory, now: OffsetDateTime, t: &Thresholds) -> Report<'a> {
        let rows = |entries: &'a [Entry]| -> Vec<Row<'a>> {
            entries
                .iter()
                .map(|entry| Row {
                    entry,
                    status: status::classify(entry, now, t),
                })
                .collect()
        };
        let mut problems = Vec::new();
        let mut unknown_signer = false;
        for entry in inventory.entries() {
            if let State::Unreadable(reason) = &entry.state {
                problems.push(format!("{}: {reason}", entry.name));
            }
            if let Some(reason) = &entry.key_problem {
                problems.push(format!(
                    "{}: {reason}; the CA cannot sign (`kube-cert-renewer recover` restores a \
                     snapshot's copy that matches)",
                    entry.name
                ));
            }
            if let Some(note) = status::notes(entry, |ca| inventory.ca_file(ca).is_some()) {
                problems.push(note);
                unknown_signer = true;
            }
        }
        for (ca_file, cap, leaves) in status::capping(inventory) {
            problems.push(status::capping_note(ca_file, &cap, &leaves, now));
        }
        Report {
            now,
            cas: rows(&inventory.cas),
            leaves: rows(&inventory.leaves),
            others: rows(&inventory.others),
            problems,
            unknown_signer,
            node: NodeStatus::default(),
            thresholds: *t,
        }
    }

    /// Adds what `check` saw of the control plane: parked manifests and pending restarts.
    pub fn with_node(mut self, node: NodeStatus) -> Report<'a> {
        self.node = node;
        self
    }

    /// The status of what a pending component serves, when known.
    fn served_status(&self, w: &WaitingRestart) -> Option<Status> {
        match &w.served {
            Ok(Some(s)) => Some(status::of_leaf(&s.served, self.now, &self.thresholds)),
            _ => None,
        }
    }

    /// 0, 1 or 2 for the control plane: a parked manifest stops its pod (2); a leftover copy
    /// (1); a pending restart (1, or 2 when what runs is critical or expired).
    fn node_exit_code(&self) -> i32 {
        let parked = self
            .node
            .parked
            .iter()
            .map(|p| if p.in_place { 1 } else { 2 });
        let pending = self
            .node
            .pending
            .iter()
            .map(|w| self.served_status(w).map_or(1, |s| s.exit_code().max(1)));
        let problems = self.node.problems.iter().map(|_| 1);
        let unfinished = self.node.unfinished.iter().map(|_| 2);
        parked
            .chain(pending)
            .chain(problems)
            .chain(unfinished)
            .max()
            .unwrap_or(0)
    }

    /// The "Control plane" lines of the text output: what is wrong and what to run.
    fn node_text(&self) -> String {
        let mut out = String::new();
        for w in &self.node.pending {
            let _ = write!(
                out,
                "  {}: restart pending since {} (renewed: {})",
                w.component,
                w.waiting.since,
                w.waiting.renewed.join(", ")
            );
            match &w.served {
                Ok(Some(s)) => {
                    let _ = write!(
                        out,
                        "; it serves serial {} expiring {} ({}), the file on disk has serial {}",
                        s.served.serial_hex,
                        expires(s.served.not_after),
                        self.served_status(w).map_or("", Status::as_str),
                        s.on_disk_serial
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = write!(out, "; cannot tell what it serves: {e}");
                }
            }
            out.push('\n');
        }
        if !self.node.pending.is_empty() {
            let names: Vec<&str> = self
                .node
                .pending
                .iter()
                .map(|w| w.component.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  They run older certificates than the ones on disk: run `kube-cert-renewer \
                 restart {}`",
                names.join(" ")
            );
        }
        for p in &self.node.parked {
            if p.in_place {
                let _ = writeln!(
                    out,
                    "  {} is a leftover copy of {} (which is in place): compare them, then \
                     delete the copy",
                    p.file.display(),
                    p.manifest.display()
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {} is PARKED: its static pod is stopped. Any kube-cert-renewer command run \
                     with the state dir of the run that parked it puts it back; or by hand: mv {} \
                     {}",
                    p.file.display(),
                    p.file.display(),
                    p.manifest.display()
                );
            }
        }
        for problem in &self.node.problems {
            let _ = writeln!(out, "  {problem}");
        }
        if let Some(why) = &self.node.unfinished {
            let _ = writeln!(out, "  UNFINISHED: {why}");
        }
        if let Some(look) = &self.node.lease {
            out.push_str(&lease_lines(look));
        }
        out
    }

    fn rows(&self) -> impl Iterator<Item = &Row<'a>> {
        self.cas.iter().chain(&self.leaves).chain(&self.others)
    }

    /// 0 when all is well, 1 when something needs attention soon, 2 when something needs
    /// action now (critical, expired, unreadable).
    pub fn exit_code(&self) -> i32 {
        let worst = self.rows().map(|r| r.status.exit_code()).max().unwrap_or(0);
        let worst = worst.max(self.node_exit_code());
        if self.unknown_signer {
            worst.max(1)
        } else {
            worst
        }
    }

    /// kubeadm's two tables, plus a STATUS column, the kubelet/extra table and the problems.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut table = vec![cells(&[
            "CERTIFICATE",
            "EXPIRES",
            "RESIDUAL TIME",
            "CERTIFICATE AUTHORITY",
            "EXTERNALLY MANAGED",
            "STATUS",
        ])];
        table.extend(self.leaves.iter().map(|r| self.kubeadm_row(r, true)));
        out.push_str(&tabulate(&table));
        out.push('\n');
        let mut table = vec![cells(&[
            "CERTIFICATE AUTHORITY",
            "EXPIRES",
            "RESIDUAL TIME",
            "EXTERNALLY MANAGED",
            "STATUS",
        ])];
        table.extend(self.cas.iter().map(|r| self.kubeadm_row(r, false)));
        out.push_str(&tabulate(&table));
        if !self.others.is_empty() {
            out.push('\n');
            let mut table = vec![cells(&[
                "OTHER CERTIFICATE",
                "EXPIRES",
                "RESIDUAL TIME",
                "STATUS",
                "SOURCE",
            ])];
            for row in &self.others {
                let e = row.entry;
                let (date, left) = match e.facts() {
                    Some(f) => (
                        expires(f.not_after),
                        human_duration(f.residual_seconds(self.now)),
                    ),
                    None => (String::new(), String::new()),
                };
                table.push(vec![
                    e.name.clone(),
                    date,
                    left,
                    row.status.as_str().to_string(),
                    e.source.describe(),
                ]);
            }
            out.push_str(&tabulate(&table));
        }
        let absent: Vec<String> = self
            .rows()
            .filter_map(|r| match &r.entry.state {
                State::Absent(why) => Some(format!("  {}: {why}", r.entry.name)),
                _ => None,
            })
            .collect();
        if !absent.is_empty() {
            out.push_str("\nAbsent by design:\n");
            for line in absent {
                out.push_str(&line);
                out.push('\n');
            }
        }
        let node = self.node_text();
        if !node.is_empty() {
            out.push_str("\nControl plane:\n");
            out.push_str(&node);
        }
        if !self.problems.is_empty() {
            out.push_str("\nProblems:\n");
            for p in &self.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
        out
    }

    /// One row of kubeadm's tables (with the CA column for leaves), plus STATUS.
    fn kubeadm_row(&self, row: &Row<'_>, with_ca: bool) -> Vec<String> {
        let e = row.entry;
        let mut cells = match e.facts() {
            Some(f) => vec![
                e.name.clone(),
                expires(f.not_after),
                human_duration(f.residual_seconds(self.now)),
            ],
            None => vec![
                format!("{} {}", missing_tag(row.status), e.name),
                String::new(),
                String::new(),
            ],
        };
        let present = e.facts().is_some();
        if with_ca {
            cells.push(if present {
                // no CA verifies it: say so rather than name the one kubeadm would assume
                e.ca_name().unwrap_or("-").to_string()
            } else {
                String::new()
            });
        }
        cells.push(if present {
            format!("{:<8}", yes_no(e.externally_managed))
        } else {
            String::new()
        });
        cells.push(row.status.as_str().to_string());
        cells
    }

    /// kubeadm's `CertificateExpirationInfo` (output.kubeadm.k8s.io/v1alpha3), same keys, plus
    /// extra keys (status, path, …) and an `otherCertificates` list.
    pub fn json(&self) -> Value {
        json!({
            "kind": "CertificateExpirationInfo",
            "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
            "certificates": self.leaves.iter().map(|r| self.json_row(r, true)).collect::<Vec<_>>(),
            "certificateAuthorities": self.cas.iter().map(|r| self.json_row(r, false)).collect::<Vec<_>>(),
            "otherCertificates": self.others.iter().map(|r| self.json_row(r, true)).collect::<Vec<_>>(),
            "problems": self.problems.iter().chain(&self.node.problems).collect::<Vec<_>>(),
            "unfinished": self.node.unfinished,
            "restartLease": self.node.lease.as_ref().and_then(|look| match &look.holder {
                Ok(Some(h)) => Some(json!({
                    "holderIdentity": h.holder,
                    "renewTime": h.renewed.map(rfc3339),
                })),
                Ok(None) => Some(json!({"holderIdentity": null})),
                Err(_) => None,
            }),
            "restartLeaseCredential": self.node.lease.as_ref().map(lease_credential_json),
            "restartPending": self.node.pending.iter().map(|w| {
                let mut obj = json!({
                    "component": w.component,
                    "since": w.waiting.since,
                    "renewed": w.waiting.renewed,
                });
                match &w.served {
                    Ok(Some(s)) => {
                        obj["servedSerialNumber"] = json!(s.served.serial_hex);
                        obj["servedExpirationDate"] = json!(rfc3339(s.served.not_after));
                        obj["servedStatus"] = json!(self.served_status(w).map(Status::as_str));
                        obj["onDiskSerialNumber"] = json!(s.on_disk_serial);
                    }
                    Ok(None) => {}
                    Err(e) => obj["reason"] = json!(e),
                }
                obj
            }).collect::<Vec<_>>(),
            "parkedManifests": self.node.parked.iter().map(|p| json!({
                "file": p.file.display().to_string(),
                "manifest": p.manifest.display().to_string(),
                "manifestInPlace": p.in_place,
            })).collect::<Vec<_>>(),
        })
    }

    fn json_row(&self, row: &Row<'_>, with_ca: bool) -> Value {
        let e = row.entry;
        let mut obj = serde_json::Map::new();
        obj.insert("name".into(), json!(e.name));
        match e.facts() {
            Some(f) => {
                obj.insert("expirationDate".into(), json!(rfc3339(f.not_after)));
                obj.insert("residualTime".into(), json!(f.residual_seconds(self.now)));
                if with_ca && let Some(ca) = e.ca_name() {
                    obj.insert("caName".into(), json!(ca));
                }
                if let Some(cap) = e.capped() {
                    obj.insert("cappedBy".into(), json!(cap.ca));
                    obj.insert("cappedAt".into(), json!(rfc3339(cap.not_after)));
                }
                obj.insert("externallyManaged".into(), json!(e.externally_managed));
                obj.insert("missing".into(), json!(false));
            }
            None => {
                obj.insert("expirationDate".into(), Value::Null);
                obj.insert("residualTime".into(), json!(0));
                obj.insert("externallyManaged".into(), json!(e.externally_managed));
                obj.insert("missing".into(), json!(true));
            }
        }
        obj.insert("status".into(), json!(row.status.as_str()));
        obj.insert(
            "path".into(),
            json!(e.source.cert_path().display().to_string()),
        );
        if let Source::KubeconfigFileRef { kubeconfig, .. } = &e.source {
            obj.insert("kubeconfig".into(), json!(kubeconfig.display().to_string()));
        }
        if e.kind == Kind::Ca {
            let caps: Vec<&str> = self
                .rows()
                .filter(|r| r.entry.capped().is_some_and(|cap| cap.ca == e.name))
                .map(|r| r.entry.name.as_str())
                .collect();
            obj.insert("caps".into(), json!(caps));
        }
        if let Some(f) = e.facts() {
            obj.insert("notBefore".into(), json!(rfc3339(f.not_before)));
            obj.insert("serialNumber".into(), json!(f.serial_hex));
            obj.insert("subject".into(), json!(f.subject));
            obj.insert("issuer".into(), json!(f.issuer));
            if e.kind != Kind::Ca && e.kind != Kind::Extra {
                let signed_by = match e.signer {
                    Signer::Verified { ca } => json!(ca),
                    _ => Value::Null,
                };
                obj.insert("signedBy".into(), signed_by);
            }
        }
        match &e.state {
            State::Absent(why) => {
                obj.insert("reason".into(), json!(why));
            }
            State::Unreadable(why) => {
                obj.insert("reason".into(), json!(why));
            }
            State::Present(_) => {
                if let Some(why) = &e.key_problem {
                    obj.insert("reason".into(), json!(why));
                }
            }
            State::Missing => {}
        }
        Value::Object(obj)
    }

    /// Prometheus text exposition with x509-certificate-exporter's metric names.
    pub fn prometheus(&self) -> String {
        let mut labelled = Vec::new();
        let mut read_errors = 0u64;
        let mut damaged_keys = Vec::new();
        for row in self.rows() {
            if row.entry.key_problem.is_some()
                && let Source::PemPair { key, .. } = &row.entry.source
            {
                // counted as a read error too, so alerts on x509_read_errors fire
                read_errors += 1;
                damaged_keys.push((row.entry.name.as_str(), key));
            }
            match row.entry.facts() {
                Some(f) => labelled.push((prom_labels(row.entry, f), f, row.entry)),
                None if matches!(row.status, Status::Missing | Status::Unreadable) => {
                    read_errors += 1
                }
                None => {}
            }
        }
        let mut out = String::new();
        type Value<'v> = &'v dyn Fn(&crate::pki::cert::CertFacts, &Entry) -> i64;
        let mut family = |name: &str, help: &str, value: Value<'_>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (labels, f, e) in &labelled {
                let _ = writeln!(out, "{name}{{{labels}}} {}", value(f, e));
            }
        };
        family(
            "x509_cert_not_before",
            "Indicates the certificate's not before timestamp",
            &|f, _| f.not_before.unix_timestamp(),
        );
        family(
            "x509_cert_not_after",
            "Indicates the certificate's not after timestamp",
            &|f, _| f.not_after.unix_timestamp(),
        );
        let now = self.now;
        family(
            "x509_cert_expired",
            "Indicates if the certificate is expired",
            &|f, _| i64::from(f.not_after <= now),
        );
        family(
            "kube_cert_renewer_cert_not_yet_valid",
            "Indicates if the certificate's not before is still ahead (every TLS peer refuses it)",
            &|f, _| i64::from(now < f.not_before),
        );
        family(
            "kube_cert_renewer_cert_capped",
            "Indicates if the certificate ends at its CA's end, so that no renewal can extend it \
             (only a rotation of the CA)",
            &|_, e| i64::from(e.capped().is_some()),
        );
        let _ = writeln!(
            out,
            "# HELP x509_read_errors Indicates the number of read failure(s)"
        );
        let _ = writeln!(out, "# TYPE x509_read_errors gauge");
        let _ = writeln!(out, "x509_read_errors {read_errors}");
        let _ = writeln!(
            out,
            "# HELP kube_cert_renewer_ca_key_damaged A CA key file that does not parse or does \
             not match its certificate (the CA cannot sign)"
        );
        let _ = writeln!(out, "# TYPE kube_cert_renewer_ca_key_damaged gauge");
        for (name, key) in damaged_keys {
            let _ = writeln!(
                out,
                "kube_cert_renewer_ca_key_damaged{{name=\"{}\",filepath=\"{}\"}} 1",
                escape_label(name),
                escape_label(&key.display().to_string())
            );
        }
        let _ = writeln!(
            out,
            "# HELP kube_cert_renewer_restart_pending A component runs older certificates than \
             the ones on disk until it is restarted"
        );
        let _ = writeln!(out, "# TYPE kube_cert_renewer_restart_pending gauge");
        for w in &self.node.pending {
            let _ = writeln!(
                out,
                "kube_cert_renewer_restart_pending{{component=\"{}\"}} 1",
                escape_label(&w.component)
            );
        }
        let _ = writeln!(
            out,
            "# HELP kube_cert_renewer_parked_manifests Static-pod manifests left parked by an \
             interrupted restart (their pods are stopped)"
        );
        let _ = writeln!(out, "# TYPE kube_cert_renewer_parked_manifests gauge");
        let stopped = self.node.parked.iter().filter(|p| !p.in_place).count();
        let _ = writeln!(out, "kube_cert_renewer_parked_manifests {stopped}");
        out
    }
}

fn prom_labels(e: &Entry, f: &crate::pki::cert::CertFacts) -> String {
    let path = e.source.cert_path();
    let mut labels = vec![
        ("name", e.name.clone()),
        ("filepath", path.display().to_string()),
        (
            "filename",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        ("serial_number", f.serial_hex.clone()),
        ("subject_CN", f.subject_cn.clone().unwrap_or_default()),
        ("issuer_CN", f.issuer_cn.clone().unwrap_or_default()),
    ];
    if let Source::Kubeconfig { user, .. } = &e.source {
        labels.push(("embedded_kind", "user".into()));
        labels.push(("embedded_key", user.clone()));
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn cells(s: &[&str]) -> Vec<String> {
    s.iter().map(|c| c.to_string()).collect()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn missing_tag(status: Status) -> &'static str {
    match status {
        Status::Unreadable => "!UNREADABLE!",
        _ => "!MISSING!",
    }
}

/// kubeadm's date format, `Jan 02, 2006 15:04 MST`, in UTC.
pub fn expires(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt =
        time::macros::format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");
    t.format(&fmt).unwrap_or_else(|_| t.to_string())
}

/// The `check` lines about the restart Lease: who holds it (or why it could not be asked), and
/// which identity this node takes it with — warned about when that is cluster-admin.
fn lease_lines(look: &crate::node::status::LeaseLook) -> String {
    use crate::coordination::lease::{NAME, NAMESPACE};
    let mut out = match &look.holder {
        Ok(Some(h)) => format!(
            "  Restart Lease {NAMESPACE}/{NAME}: held by {}{}\n",
            h.holder,
            h.renewed
                .map(|t| format!(" (last renewed {})", rfc3339(t)))
                .unwrap_or_default()
        ),
        Ok(None) => format!("  Restart Lease {NAMESPACE}/{NAME}: free\n"),
        Err(e) => format!(
            "  Restart Lease {NAMESPACE}/{NAME}: cannot be asked with {}: {e}\n",
            look.kubeconfig.display()
        ),
    };
    match &look.identity {
        Ok(id) if id.cluster_admin() => out.push_str(&format!(
            "  Restart Lease taken as {} ({}): CLUSTER-ADMIN, more than the Lease needs; \
             `kube-cert-renewer lease-credentials --print-rbac --issue` sets up a \
             least-privilege identity\n",
            id.subject,
            id.kubeconfig.display()
        )),
        Ok(id) => out.push_str(&format!(
            "  Restart Lease taken as {} ({})\n",
            id.subject,
            id.kubeconfig.display()
        )),
        Err(e) => out.push_str(&format!(
            "  Restart Lease credential {}: {e}\n",
            look.kubeconfig.display()
        )),
    }
    out
}

/// `restartLeaseCredential` of `check -o json`: the kubeconfig, its identity, and whether it is
/// cluster-admin; `error` when it cannot be read, `leaseError` when the API could not be asked.
fn lease_credential_json(look: &crate::node::status::LeaseLook) -> Value {
    let mut obj = match &look.identity {
        Ok(id) => json!({
            "kubeconfig": look.kubeconfig,
            "subject": id.subject,
            "user": id.user,
            "groups": id.groups,
            "clusterAdmin": id.cluster_admin(),
        }),
        Err(e) => json!({"kubeconfig": look.kubeconfig, "error": e}),
    };
    if let Err(e) = &look.holder {
        obj["leaseError"] = json!(e);
    }
    obj
}

/// RFC 3339 in UTC with whole seconds, as Go's metav1.Time marshals.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Kubernetes' `duration.HumanDuration` (what `kubeadm certs check-expiration` ≥ 1.31 prints).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// Go's tabwriter as kubeadm configures it (minwidth 10, padding 3, spaces): every cell but the
/// last of a line is padded to its column's width.
pub fn tabulate(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max((cell.chars().count() + 3).max(10));
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let _ = write!(line, "{cell:<width$}", width = widths[i]);
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_matches_kubernetes() {
        let day = 86_400;
        assert_eq!(human_duration(-5), "<invalid>");
        assert_eq!(human_duration(-1), "0s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(47 * 3600), "47h");
        assert_eq!(human_duration(3 * day + 5 * 3600), "3d5h");
        assert_eq!(human_duration(364 * day + 3600), "364d");
        assert_eq!(human_duration((2 * 365 + 327) * day), "2y327d");
        assert_eq!(human_duration(3650 * day), "10y");
        assert_eq!(human_duration(9 * 365 * day), "9y");
    }

    #[test]
    fn kubeadm_date_format() {
        let t = time::macros::datetime!(2026-08-19 09:03:37 UTC);
        assert_eq!(expires(t), "Aug 19, 2026 09:03 UTC");
        assert_eq!(rfc3339(t), "2026-08-19T09:03:37Z");
    }

    #[test]
    fn tabulate_pads_like_go_tabwriter() {
        let rows = vec![
            cells(&["CERTIFICATE", "EXPIRES", "LAST"]),
            cells(&["ca", "x", "y"]),
        ];
        assert_eq!(
            tabulate(&rows),
            "CERTIFICATE   EXPIRES   LAST\nca            x         y\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
