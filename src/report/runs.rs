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
