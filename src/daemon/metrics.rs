//! The metrics textfile for node-exporter's textfile collector: everything `check -o
//! prometheus` says, plus the daemon's own gauges, written atomically after each evaluation.

use std::fmt::Write;
use std::path::Path;

use time::OffsetDateTime;

/// The daemon's own gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonGauges {
    /// When the last job ran, and whether it did all it was asked.
    pub last_run: Option<(OffsetDateTime, bool)>,
    /// The next window.
    pub next_window: Option<OffsetDateTime>,
}

/// The daemon's gauges in the text exposition format.
pub fn gauges_text(g: &DaemonGauges) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: i64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    };
    if let Some((at, success)) = g.last_run {
        gauge(
            "kube_cert_renewer_last_run_timestamp_seconds",
            "When the daemon last ran a renewal or restart job",
            at.unix_timestamp(),
        );
        gauge(
            "kube_cert_renewer_last_run_success",
            "Whether that job did everything it was asked (1) or not (0)",
            i64::from(success),
        );
    }
    if let Some(next) = g.next_window {
        gauge(
            "kube_cert_renewer_next_window_timestamp_seconds",
            "When the next maintenance window opens",
            next.unix_timestamp(),
        );
    }
    out
}

/// Writes `check`'s metrics and the daemon's gauges to `path`, atomically (a scrape never sees
/// half a file). Its directory is usually node-exporter's user's, so it is written without
/// ever following a link there ([`crate::state::nofollow::write_in_shared_dir`]).
pub fn write(path: &Path, check: &str, gauges: &DaemonGauges) -> Result<(), String> {
    let mut text = check.to_string();
    text.push_str(&gauges_text(gauges));
    crate::state::nofollow::write_in_shared_dir(path, text.as_bytes(), 0o644)
}
