//! The `kube-cert-renewer` binary: everything lives in the library; this only sets the exit code.

fn main() {
    std::process::exit(kube_cert_renewer::cli::main());
}
