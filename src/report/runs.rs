//! What `renew` and `restart` print: the renewal table, the restart table, and what the
//! restart part of a job came to. Text only; the CLI and the demo print it as is.

use std::fmt::Write;

use crate::node::cri::short_id;
use crate::node::restart;
use crate::renew::execute;
use crate::renew::job::{RenewReport, RestartReport, RestartStep};
use crate::report::{expires, tabulate};

/// The certificate part of a renewal: what was renewed (or planned), skipped and why,
/// warnings, and where the backup is.
pub fn renewal_text(outcome: &execute::Outcome, dry_run: bool) -> String {
    let mut out = String::new();
    if outcome.renewed.is_empty() {
        out.push_str("Nothing to renew.\n");
    } else {
        out.push_str(if dry_run {
            "Plan (dry run: nothing is written):\n"
        } else {
            "Renewed:\n"
        });
        let mut rows = vec![
            [
                "CERTIFICATE",
                "CERTIFICATE AUTHORITY",
                "OLD EXPIRY",
                "NEW EXPIRY",
                "KEY",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for r in &outcome.renewed {
            rows.push(vec![
                r.name.clone(),
                r.ca.to_string(),
                expires(r.old_not_after),
                expires(r.new_not_after),
                r.key_action.clone(),
            ]);
        }
        out.push_str(&tabulate(&rows));
    }
    if !outcome.skipped.is_empty() {
        out.push_str("\nNot renewed:\n");
        for s in &outcome.skipped {
            let _ = writeln!(out, "  {}: {}", s.name, s.reason);
        }
    }
    for w in &outcome.warnings {
        let _ = writeln!(out, "\nwarning: {w}");
    }
    if let Some(b) = &outcome.backup {
        let _ = writeln!(out, "\nThe replaced files are backed up in {}", b.display());
    } else if dry_run && !outcome.files.is_empty() {
        let _ = writeln!(
            out,
            "\n{} files would be replaced (after a backup).",
            outcome.files.len()
        );
    }
    out
}

/// The restart table: each component's old and new container and when it stopped, ran and
/// answered healthy.
pub fn restart_text(outcome: &restart::Outcome) -> String {
    let secs = |d: std::time::Duration| format!("{:.2}s", d.as_secs_f64());
    let mut rows = vec![
        [
            "COMPONENT",
            "OLD CONTAINER",
            "NEW CONTAINER",
            "STOPPED",
            "RUNNING",
            "HEALTHY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &outcome.restarted {
        rows.push(vec![
            r.name.clone(),
            r.old_ids
                .iter()
                .map(|i| short_id(i))
                .collect::<Vec<_>>()
                .join(","),
            short_id(&r.new_id).to_string(),
            secs(r.stopped_after),
            secs(r.running_after),
            secs(r.healthy_after),
        ]);
    }
    let mut out = tabulate(&rows);
    for p in &outcome.proven {
        let _ = writeln!(out, "proven: {p}");
    }
    for n in &outcome.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(
        out,
        "Restarted in {} (stop phase {}, start phase {}); every manifest is back in place.",
        secs(outcome.total),
        secs(outcome.stop_phase),
        secs(outcome.start_phase)
    );
    out
}

/// The restart part of a job, for stdout: what restarted, or what would, or what is pending.
/// (A failure is for stderr: see [`restart_error`].)
pub fn restart_step_text(step: &RestartStep, dry_run: bool) -> String {
    let mut out = String::new();
    match step {
        RestartStep::NotNeeded { notes } => {
            for n in notes {
                let _ = writeln!(out, "{n}");
            }
        }
        RestartStep::NotDone { components } => {
            let _ = writeln!(
                out,
                "\n{} {} so they use the new certificates{}.",
                if dry_run { "Would restart" } else { "Restart" },
                components.join(", "),
                if dry_run {
                    ""
                } else {
                    " (--no-restart: not done; the restart is pending until `kube-cert-renewer \
                     restart` does it, and `check` says so)"
                }
            );
        }
        RestartStep::Done(done) => {
            for n in &done.notes {
                let _ = writeln!(out, "{n}");
            }
            out.push_str(&restart_text(&done.outcome));
        }
        RestartStep::Failed { notes, .. } => {
            for n in notes {
                let _ = writeln!(out, "{n}");
            }
        }
    }
    out
}

/// The error of a failed restart step, if any.
pub fn restart_error(step: &RestartStep) -> Option<&str> {
    match step {
        RestartStep::Failed { error, .. } => Some(error),
        _ => None,
    }
}

/// Everything a renewal job prints on stdout after its renewal table.
pub fn renew_report_tail(report: &RenewReport) -> String {
    let mut out = String::new();
    if report.kubelet_needs_restart {
        out.push_str(
            "\nkubelet.conf was renewed: restart the kubelet (systemctl restart kubelet) so it \
             uses the new certificate; it reads its kubeconfig only when it starts.\n",
        );
    }
    out.push_str(&restart_step_text(&report.restart, report.dry_run));
    if let Some(problem) = &report.snapshot_problem {
        let _ = writeln!(out, "warning: {problem}");
    }
    out
}

/// What a restart job could not restart, one line each.
pub fn restart_problems(report: &RestartReport) -> Vec<String> {
    report
        .problems
        .iter()
        .map(|p| format!("cannot restart {p}"))
        .collect()
}

/// What `recover` prints on stdout: each file brought back and how, what is left missing and
/// what to do, the notes (where the node's facts came from), then the restart.
pub fn recover_text(report: &crate::renew::job::RecoverReport) -> String {
    let mut out = String::new();
    let o = &report.outcome;
    if o.steps.is_empty() && o.unrecoverable.is_empty() {
        out.push_str("Nothing is missing: nothing to recover.\n");
    } else if !o.steps.is_empty() {
        out.push_str(if report.dry_run {
            "Recovery plan (dry run: nothing is written):\n"
        } else {
            "Recovered:\n"
        });
        for step in &o.steps {
            let files: Vec<String> = step.files.iter().map(|f| f.display().to_string()).collect();
            let _ = writeln!(out, "  {:<26} {}", step.name, step.how);
            if !files.is_empty() {
                let _ = writeln!(out, "  {:<26}   {}", "", files.join(", "));
            }
        }
    }
    if !o.unrecoverable.is_empty() {
        out.push_str("Left missing (nothing here can bring them back):\n");
        for u in &o.unrecoverable {
            let _ = writeln!(out, "  {}: {}", u.path.display(), u.why);
        }
    }
    if !o.notes.is_empty() {
        out.push_str("Notes:\n");
        for n in &o.notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    if let Some(backup) = &o.backup {
        let _ = writeln!(out, "Backup of the files replaced: {}", backup.display());
    }
    if let Some(s) = &report.snapshot {
        let _ = writeln!(out, "{s}");
    }
    out.push_str(&restart_step_text(&report.restart, report.dry_run));
    out
}

/// What `recover` prints on stderr when a CA or `sa.key` is gone everywhere: what is gone, and
/// the cluster-level procedure for each.
pub fn recover_stopped_text(outcome: &crate::recover::run::Outcome) -> String {
    let mut out = String::from(
        "kube-cert-renewer: recovery stopped, nothing was written: a cluster-level secret is \
         gone from this node and from every snapshot, and is never invented silently.\n",
    );
    for (stop, procedure) in &outcome.stops {
        let _ = writeln!(out, "\n{}: {}\n  {procedure}", stop.name, stop.what);
    }
    out
}
