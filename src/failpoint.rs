//! Failpoints: named places where a test can make the process die as a crash would
//! (`KUBE_CERT_RENEWER_FAILPOINT=<name>` aborts there), or stop there until killed
//! (`<name>:pause`, so a test can SIGKILL it at a known point). Costs one env lookup per place.

/// The environment variable naming the failpoint to trigger.
pub const ENV: &str = "KUBE_CERT_RENEWER_FAILPOINT";

/// Aborts the process (no unwinding, no cleanup: like SIGKILL) when `name` is the armed one;
/// blocks forever when `name:pause` is.
pub fn hit(name: &str) {
    let Ok(armed) = std::env::var(ENV) else {
        return;
    };
    if armed == name {
        eprintln!("kube-cert-renewer: failpoint {name} hit, aborting");
        std::process::abort();
    }
    if armed.strip_suffix(":pause") == Some(name) {
        eprintln!("kube-cert-renewer: failpoint {name} hit, pausing until killed");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
