//! The running control plane: the container runtime over the CRI ([`cri`]), static-pod
//! manifests ([`manifest`]), the watched restart with its rollback ([`restart`]), the TLS health
//! probes ([`health`]), the proofs that renewed credentials are accepted ([`proof`]), whether
//! the etcd cluster can spare the local member for a restart ([`etcd_cluster`]) and what `check`
//! sees of it ([`status`]).

pub mod cri;
pub mod etcd_cluster;
pub mod health;
pub mod manifest;
pub mod proof;
pub mod restart;
pub mod status;
