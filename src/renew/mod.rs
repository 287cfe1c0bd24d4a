//! Renewal: the pure [`plan`] of what to re-issue, its [`execute`]ion (build and validate in
//! memory, back up, journal, write), and the [`job`] that runs the whole pipeline —
//! inventory, plan, renewal, restart, verification — for the CLI and the daemon alike.

pub mod execute;
pub mod job;
pub mod plan;
