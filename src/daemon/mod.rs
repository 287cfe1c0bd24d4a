//! `kube-cert-renewer run`: the service an operator installs and forgets.
//!
//! It renews on a calendar ([`schedule`]), watches every certificate between windows, renews at
//! once what gets critically close, finishes restarts left pending, tells systemd how it is
//! doing ([`systemd`]) and raises alerts in the journal ([`events`]). Each evaluation is a pure
//! decision ([`decide`]) over the inventory, the calendar and the clock; the loop around it
//! only reads, sleeps and acts.

pub mod decide;
pub mod events;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod systemd;
pub mod watch;
