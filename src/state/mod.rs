//! What the product keeps so that a crash or a kill at any point leaves a node that a restart
//! of any command repairs: atomic writes and backups ([`store`]), the intent journal
//! ([`journal`]), the restart-pending record ([`pending`]), the one-run-at-a-time lock
//! ([`lock`]), and the snapshots of the node's kubeadm files that `recover` rebuilds a deleted
//! node from ([`snapshot`]). Whose directories may be trusted is [`trust`]; what is read or
//! written without following a link is [`nofollow`].

pub mod journal;
pub mod lock;
pub mod nofollow;
pub mod pending;
pub mod snapshot;
pub mod store;
pub mod trust;
