//! kube-cert-renewer: keeps the certificates of a kubeadm control-plane node from expiring.
//!
//! One pipeline, run once by a CLI command or unattended by the daemon:
//!
//! ```text
//! inventory ──► plan ──► renew ──► restart ──► verify
//!  (read)      (pure)   (write)   (CRI)       (TLS)
//! ```
//!
//! - [`pki`]: what is on the node — certificates, keys, kubeconfigs, kubeadm's names — read into
//!   an [`pki::inventory::Inventory`], and the faithful re-issue of one certificate;
//! - [`renew`]: the pure plan, its execution (build, back up, journal, write), and
//!   [`renew::job`], the whole pipeline that `renew`, `restart` and the daemon all call;
//! - [`node`]: the container runtime (CRI), static-pod manifests, the watched restart and the
//!   TLS health probes;
//! - [`state`]: what survives a crash — atomic writes and backups, the intent journal, the
//!   restart-pending record, the node lock;
//! - [`recover`]: rebuilding deleted kubeadm files from snapshots, else from the CAs with
//!   kubeadm's profiles;
//! - [`coordination`]: the cluster-wide Lease that lets one control-plane node restart at a time;
//! - [`report`]: `check`'s tables, JSON and metrics;
//! - [`daemon`]: `run` — the calendar window, the watch, systemd and journald;
//! - [`demo`]: the throwaway kubeadm-shaped node of `demo` and the tests, apart from the product.
//!
//! Pure logic sits at the core (plan, schedule decisions, classification); files, the runtime and
//! the clock are reached at the edges, passed in so tests can replace them.

pub mod cli;
pub mod config;
pub mod coordination;
pub mod daemon;
pub mod demo;
pub mod failpoint;
pub mod node;
pub mod pki;
pub mod recover;
pub mod renew;
pub mod report;
pub mod state;
