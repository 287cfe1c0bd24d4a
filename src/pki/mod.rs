//! What is on the node, read and never written here: PEM and DER certificates, private keys,
//! kubeconfigs, kubeadm's fixed names and CA mapping, the inventory built from them, and the
//! faithful re-issue of one certificate.

pub mod cert;
pub mod inventory;
pub mod keys;
pub mod kubeadm;
pub mod kubeconfig;
pub mod pem;
pub mod profile;
pub mod reissue;
