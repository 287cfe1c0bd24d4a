//! The systemd notify protocol (`Type=notify`): ready, status line, watchdog, reloading,
//! stopping. Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.
//!
//! The watchdog is fed from the loop that does the work, and only while that work moves:
//! every waiting or working loop of a job calls [`beat`], and the daemon pings only when the
//! last beat is recent — a job hung in a syscall or a deadlock stops the pings, and systemd
//! restarts the service (whose first act is to put any parked manifest back).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    // a notify that cannot be delivered changes nothing for the node: never an error
    let _ = sd_notify::notify(states);
}

/// `READY=1`: startup (and any recovery it had to do) is finished.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// `STATUS=…`: the line `systemctl status` shows.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC` (what `Type=notify-reload` expects), on SIGHUP.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`: shutting down (after putting every parked manifest back).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when systemd set one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

static LAST_BEAT_MS: AtomicU64 = AtomicU64::new(0);

/// Says that the work in progress is moving (called by every loop that waits or works).
pub fn beat() {
    let ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
    LAST_BEAT_MS.store(ms, Ordering::Relaxed);
}

/// Whether the last [`beat`] is more recent than `within`.
pub fn moving(within: Duration) -> bool {
    let now = epoch().elapsed();
    let last = Duration::from_millis(LAST_BEAT_MS.load(Ordering::Relaxed));
    now.saturating_sub(last) <= within
}
