//! Failpoints: named places where a test can make the process die as a crash would
//! (`KUBE_CERT_RENEWER_FAILPOINT=<name>` aborts there). Costs one env lookup per place.

/// The environment variable naming the failpoint to trigger.
pub const ENV: &str = "KUBE_CERT_RENEWER_FAILPOINT";

/// Aborts the process (no unwinding, no cleanup: like SIGKILL) when `name` is the armed one.
pub fn hit(name: &str) {
    if std::env::var(ENV).is_ok_and(|armed| armed == name) {
        eprintln!("kube-cert-renewer: failpoint {name} hit, aborting");
        std::process::abort();
    }
}
