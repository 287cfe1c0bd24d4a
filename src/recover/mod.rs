//! Recovery of a node whose files were deleted: from the snapshots the daemon keeps, else
//! re-issued from the CAs with kubeadm's profiles.

pub mod facts;
pub mod plan;
pub mod run;
