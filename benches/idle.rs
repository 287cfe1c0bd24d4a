//! The daemon's idle footprint: resident memory, CPU time per idle day and wake-ups per minute
//! of `kube-cert-renewer run` watching a healthy kubeadm node, with the watchdog of the unit
//! (WatchdogSec=60s, pinged every 30 s). Run with `cargo bench --bench idle` (release build);
//! `KCR_IDLE_SECS` sets the idle period measured (default 300). Targets: RSS ≤ 16 MiB, idle
//! CPU ≤ 2 s a day.
//!
//! CPU per day = the idle rate over the measured period × 86,400 s, plus 24 hourly looks at the
//! node, each measured by making the daemon look (a file touched in the pki dir wakes it).

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_cert_renewer::demo::nodegen::{self, NodeSpec};

/// (RSS KiB, CPU seconds, context switches) of a process and all its threads. CPU time from
/// each thread's schedstat (nanoseconds; /proc/PID/stat counts 10 ms ticks, too coarse for an
/// idle process).
fn sample(pid: u32) -> (u64, f64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let mut cpu_ns = 0u64;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let sched = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        cpu_ns += sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let s = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for key in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
            switches += s
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (rss, cpu_ns as f64 / 1e9, switches)
}

fn main() {
    let idle_secs: u64 = std::env::var("KCR_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let tmp = tempfile::tempdir().expect("temp dir");
    let now = time::OffsetDateTime::now_utc();
    let mut spec = NodeSpec::new(now, 200);
    spec.manifests = false;
    nodegen::generate(&tmp.path().join("k"), &spec).expect("node");
    let notify_path = tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"))
        .args(["--config", "/nonexistent"])
        .arg("--kubernetes-dir")
        .arg(tmp.path().join("k"))
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["run", "--log-to", "stderr"])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "60000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let pid = child.id();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(n) = notify.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon never said READY=1");
    }
    // drain the notify socket in the background (pings every 30 s)
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let _ = notify.recv(&mut buf);
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    let (rss0, cpu0, sw0) = sample(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (rss1, cpu1, sw1) = sample(pid);
    let idle_cpu = cpu1 - cpu0;
    let wakeups_per_min = (sw1 - sw0) as f64 / idle_secs as f64 * 60.0;
    // the cost of one look at the node
    let looks = 5;
    let (_, cpu_a, _) = sample(pid);
    for i in 0..looks {
        std::fs::write(tmp.path().join(format!("k/pki/touch-{i}")), b"x").unwrap();
        std::thread::sleep(Duration::from_secs(3));
    }
    let (rss2, cpu_b, _) = sample(pid);
    let per_look = (cpu_b - cpu_a) / f64::from(looks);
    let per_day = idle_cpu / idle_secs as f64 * 86_400.0 + 24.0 * per_look;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let rss = rss0.max(rss1).max(rss2);
    println!(
        "idle footprint of `kube-cert-renewer run` (healthy node, WatchdogSec=60s), {idle_secs} s idle:"
    );
    println!("| what | measured | target |");
    println!("|---|---|---|");
    println!(
        "| resident memory (VmRSS, max) | {:.1} MiB | ≤ 16 MiB |",
        rss as f64 / 1024.0
    );
    println!(
        "| CPU per idle day (idle rate × 86,400 s + 24 hourly looks at {:.0} ms each) | {per_day:.2} s | ≤ 2 s |",
        per_look * 1000.0
    );
    println!(
        "| wake-ups per minute (context switches of all threads) | {wakeups_per_min:.1} | — |"
    );
    println!(
        "| CPU over the {idle_secs} s idle period | {:.4} s | — |",
        idle_cpu
    );
}
