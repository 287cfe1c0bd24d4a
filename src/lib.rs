//! kube-cert-renewer: keeps the certificates of a kubeadm control-plane node from expiring.
//!
//! The pipeline is `inventory → plan → renew → restart → verify`; each stage is a module, with
//! pure logic at the core and file/runtime I/O at the edges.

pub mod cert;
pub mod cli;
pub mod config;
pub mod cri;
pub mod demo;
pub mod failpoint;
pub mod health;
pub mod inventory;
pub mod journal;
pub mod keys;
pub mod kubeadm;
pub mod kubeconfig;
pub mod manifest;
pub mod node_status;
pub mod nodegen;
pub mod pem;
pub mod pending;
pub mod plan;
pub mod reissue;
pub mod renewal;
pub mod report;
pub mod restart;
/// The kubelet stand-in: tests and the demo only (feature `test-support`, never in a release
/// build).
#[cfg(feature = "test-support")]
pub mod standin;
pub mod status;
pub mod store;
