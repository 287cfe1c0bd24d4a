//! The running control plane: the container runtime over the CRI ([`cri`]), static-pod
//! manifests ([`manifest`]), the watched restart with its rollback ([`restart`]), the TLS health
//! probes ([`health`]) and what `check` sees of it ([`status`]).

pub mod cri;
pub mod health;
pub mod manifest;
pub mod restart;
pub mod status;
