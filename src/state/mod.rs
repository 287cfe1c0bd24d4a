//! What the product keeps so that a crash or a kill at any point leaves a node that a restart
//! of any command repairs: atomic writes and backups ([`store`]), the intent journal
//! ([`journal`]), the restart-pending record ([`pending`]) and the one-run-at-a-time lock
//! ([`lock`]).

pub mod journal;
pub mod lock;
pub mod pending;
pub mod store;
pub mod trust;
