//! Failpoints: named places where a test can make the process die as a crash would
//! (`KUBE_CERT_RENEWER_FAILPOINT=<name>` aborts there), or stop there until killed
//! (`<name>:pause`, so a test can SIGKILL it at a known point). A place passed several times
//! (one per file written) is armed for its n-th pass as `<name>@<n>`.
//!
//! Only in builds with the `test-support` feature (what `cargo test` builds): in a release
//! build every failpoint is an empty inline function, so no environment variable can make an
//! installed binary abort.

/// The environment variable naming the failpoint to trigger.
pub const ENV: &str = "KUBE_CERT_RENEWER_FAILPOINT";

/// Aborts the process (no unwinding, no cleanup: like SIGKILL) when `name` is the armed one;
/// blocks forever when `name:pause` is.
#[inline(always)]
pub fn hit(name: &str) {
    #[cfg(feature = "test-support")]
    armed::hit(name);
    #[cfg(not(feature = "test-support"))]
    let _ = name;
}

/// [`hit`] for the `n`-th pass (from 1) through a place passed several times: armed as
/// `<name>@<n>`.
#[inline(always)]
pub fn hit_nth(name: &str, n: usize) {
    #[cfg(feature = "test-support")]
    armed::hit(&format!("{name}@{n}"));
    #[cfg(not(feature = "test-support"))]
    let _ = (name, n);
}

#[cfg(feature = "test-support")]
mod armed {
    pub fn hit(name: &str) {
        let Ok(armed) = std::env::var(super::ENV) else {
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
}
