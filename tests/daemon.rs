//! `kube-cert-renewer run`, the daemon, from the outside: the systemd notify protocol on a
//! datagram socket standing in for systemd, its events read back from a real
//! `systemd-journald`, `schedule`, and its units checked by `systemd-analyze`.
//! (On a real containerd with the kubelet stand-in: tests/restart.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kube_cert_renewer::daemon::events::Kind;
use kube_cert_renewer::demo::nodegen::{self, LeafTemplate, NodeSpec};
use kube_cert_renewer::pki::keys::KeyAlgorithm;

/// A generated node (no manifests: nothing to restart) and its dirs.
struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new(days_left: i64) -> Node {
        Node::with_manifests(days_left, false)
    }
    /// With `manifests`, the static-pod manifests too (nothing runs them: the daemon must never
    /// need a restart on such a node).
    fn with_manifests(days_left: i64, manifests: bool) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = NodeSpec::new(now(), days_left);
        spec.key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
        spec.manifests = manifests;
        nodegen::generate(&tmp.path().join("k"), &spec).unwrap();
        Node { tmp }
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("k")
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn config(&self) -> PathBuf {
        self.tmp.path().join("config.toml")
    }
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"));
        c.arg("--config")
            .arg(self.config())
            .arg("--kubernetes-dir")
            .arg(self.dir())
            .arg("--state-dir")
            .arg(self.state())
            .args(args);
        c
    }
}

/// Starts the daemon on `command` with its notify socket in `dir` and its log in the node's
/// temp dir, and waits for READY=1.
fn start_ready(node: &Node, command: Command, dir: &Path, log: &str) -> (NotifySocket, Daemon) {
    let mut notify = NotifySocket::bind(dir);
    let daemon = Daemon::start(command, &notify, node.tmp.path().join(log));
    notify.wait_for("READY=1", Duration::from_secs(60), |m| {
        has_line(m, "READY=1")
    });
    (notify, daemon)
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[test]
fn the_daemon_speaks_the_notify_protocol() {
    let node = Node::new(100);
    std::fs::write(node.config(), "restart_poll_ms = 100\n").unwrap();
    let mut notify = NotifySocket::bind(node.tmp.path());
    let mut command = node.command(&[]);
    command
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID");
    let mut daemon = Daemon::start(command, &notify, node.tmp.path().join("daemon.log"));
    notify.wait_for("READY=1", Duration::from_secs(60), |m| {
        has_line(m, "READY=1")
    });
    let status = notify
        .seen
        .iter()
        .flat_map(|(_, m)| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .next_back()
        .map(str::to_string)
        .expect("a STATUS= line before READY=1");
    assert!(
        status.contains("next window ") && status.contains("soonest: "),
        "{status}"
    );

    // the watchdog: pinged every half WATCHDOG_USEC, never a whole one apart
    let start = Instant::now();
    let mut pings = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        if let Some(m) = notify.recv(Duration::from_millis(200))
            && has_line(&m, "WATCHDOG=1")
        {
            pings.push(Instant::now());
        }
    }
    assert!(
        (4..=8).contains(&pings.len()),
        "{} pings in 3 s",
        pings.len()
    );
    for pair in pings.windows(2) {
        assert!(
            pair[1] - pair[0] < Duration::from_millis(1000),
            "{:?}",
            pair[1] - pair[0]
        );
    }

    // SIGHUP with a bad config: RELOADING=1 + MONOTONIC_USEC, the old config kept, READY=1
    std::fs::write(node.config(), "warn_dayz = 3\n").unwrap();
    daemon.signal("-HUP");
    let reloading = notify.wait_for("RELOADING=1", Duration::from_secs(10), |m| {
        has_line(m, "RELOADING=1")
    });
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    notify.wait_for("READY=1 after the reload", Duration::from_secs(10), |m| {
        has_line(m, "READY=1")
    });
    daemon.wait_said("the new configuration is invalid", Duration::from_secs(5));
    assert!(daemon.said().contains("warn_dayz"), "{}", daemon.said());
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "it keeps running"
    );

    // a good one is applied
    std::fs::write(node.config(), "restart_poll_ms = 150\n").unwrap();
    daemon.signal("-HUP");
    notify.wait_for("RELOADING=1", Duration::from_secs(10), |m| {
        has_line(m, "RELOADING=1")
    });
    notify.wait_for("READY=1", Duration::from_secs(10), |m| {
        has_line(m, "READY=1")
    });
    daemon.wait_said("configuration reloaded", Duration::from_secs(5));

    // SIGTERM: STOPPING=1, exit 0
    daemon.signal("-TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(10), |m| {
        has_line(m, "STOPPING=1")
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", daemon.said());
}

/// A certificate file signed by a CA of its own, valid until `days` from now (negative: expired).
fn extra_cert(path: &Path, cn: &str, days: i64) {
    let mut spec = NodeSpec::new(now(), days);
    spec.key_algorithm = KeyAlgorithm::EcdsaP256;
    spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
    spec.leaf_not_before = now() - time::Duration::days(30);
    spec.leaf_not_after = now() + time::Duration::days(days);
    let ca = nodegen::make_ca("extra-ca", &spec).unwrap();
    let template = LeafTemplate {
        cn: cn.into(),
        org: None,
        sans: vec![],
        server: false,
        client: true,
    };
    let (cert, _) = nodegen::make_leaf(&template, &ca, &spec).unwrap();
    std::fs::write(path, cert).unwrap();
}

#[test]
fn events_reach_a_real_journald_with_their_ids_priorities_and_fields() {
    for tool in ["unshare", "journalctl"] {
        if !have(tool, "journald") {
            return;
        }
    }
    if !Path::new("/lib/systemd/systemd-journald").exists() {
        cannot_run("/lib/systemd/systemd-journald is missing: the journald test cannot run");
        return;
    }
    // every leaf 3 days from expiry (critical: renewed at once), plus two watched files
    let node = Node::new(3);
    let extra = node.tmp.path().join("extra");
    std::fs::create_dir(&extra).unwrap();
    extra_cert(&extra.join("warn.pem"), "warn", 20);
    extra_cert(&extra.join("gone.pem"), "gone", -2);
    let good = format!("extra_paths = [\"{}/*.pem\"]\n", extra.display());
    std::fs::write(node.config(), &good).unwrap();
    let store = node.tmp.path().join("journal");
    let script = node.tmp.path().join("inside.sh");
    std::fs::write(
        &script,
        r#"set -u
"$BIN" --config "$CFG" --kubernetes-dir "$K" --state-dir "$S" run --log-to journal &
pid=$!
# the emergency renewal is done once the daemon recorded it, and looks again right after
for _ in $(seq 300); do grep -q '"renewed": 11' "$S/daemon.json" 2>/dev/null && break; sleep 0.1; done
sleep 1
printf 'warn_dayz = 3\n' > "$CFG"
kill -HUP $pid
sleep 1
kill -TERM $pid
wait $pid
# a renewal by hand that is refused
printf 'garbage\n' > "$K/pki/front-proxy-client.crt"
"$BIN" --config /nonexistent --kubernetes-dir "$K" --state-dir "$S" renew front-proxy-client --no-restart
# a key goes missing: the daemon alerts at its first look
rm "$K/pki/apiserver.key"
printf '\n' > "$CFG"
"$BIN" --config "$CFG" --kubernetes-dir "$K" --state-dir "$S" run --log-to journal &
pid=$!
sleep 2
kill -TERM $pid
wait $pid
# a recovery by hand refused (an unreadable certificate), then one that brings the key back
"$BIN" --config /nonexistent --kubernetes-dir "$K" --state-dir "$S" recover --no-restart
rm "$K/pki/front-proxy-client.crt"
"$BIN" --config /nonexistent --kubernetes-dir "$K" --state-dir "$S" recover --no-restart
# a CA key truncated: the daemon alerts it at its first look
head -c 100 "$K/pki/etcd/ca.key" > "$K/pki/etcd/ca.key.cut" && mv "$K/pki/etcd/ca.key.cut" "$K/pki/etcd/ca.key"
"$BIN" --config "$CFG" --kubernetes-dir "$K" --state-dir "$S" run --log-to journal &
pid=$!
sleep 2
kill -TERM $pid
wait $pid
exit 0
"#,
    )
    .unwrap();
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/with-journald.sh"
        ))
        .arg(&store)
        .arg("bash")
        .arg(&script)
        .env("BIN", env!("CARGO_BIN_EXE_kube-cert-renewer"))
        .env("CFG", node.config())
        .env("K", node.dir())
        .env("S", node.state())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = Command::new("journalctl")
        .args(["--no-pager", "--all", "-o", "json", "-D"])
        .arg(&store)
        .arg("SYSLOG_IDENTIFIER=kube-cert-renewer")
        .output()
        .unwrap();
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: Kind| -> Vec<&serde_json::Value> {
        entries
            .iter()
            .filter(|e| e["MESSAGE_ID"] == kind.message_id())
            .collect()
    };
    let field = |e: &serde_json::Value, f: &str| e[f].as_str().unwrap_or_default().to_string();
    let dump = || {
        entries
            .iter()
            .map(|e| format!("{} {}", field(e, "MESSAGE_ID"), field(e, "MESSAGE")))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // critical leaves, alerted at the first look: error priority, every field
    let critical = of(Kind::Critical);
    let api = critical
        .iter()
        .find(|e| field(e, "CERT_NAME") == "apiserver")
        .unwrap_or_else(|| panic!("no critical alert for apiserver:\n{}", dump()));
    assert_eq!(field(api, "PRIORITY"), "3");
    assert!(
        field(api, "CERT_PATH").ends_with("pki/apiserver.crt"),
        "{api}"
    );
    assert_eq!(field(api, "DAYS_LEFT"), "2");
    assert_eq!(field(api, "CA_NAME"), "ca");
    assert!(field(api, "NOT_AFTER").ends_with('Z'), "{api}");
    assert_eq!(field(api, "ACTION"), "alert");
    assert_eq!(field(api, "OUTCOME"), "critical");
    // the watched files: warning priority for the warning threshold, error once expired
    let warn = of(Kind::Expiring);
    assert!(
        warn.iter()
            .any(|e| field(e, "CERT_PATH").ends_with("warn.pem") && field(e, "PRIORITY") == "4"),
        "{}",
        dump()
    );
    assert!(
        of(Kind::Expired)
            .iter()
            .any(|e| field(e, "CERT_PATH").ends_with("gone.pem") && field(e, "PRIORITY") == "3"),
        "{}",
        dump()
    );
    // renewed at once: eleven notices with the new expiry
    let renewed = of(Kind::Renewed);
    assert_eq!(renewed.len(), 11, "{}", dump());
    for e in &renewed {
        assert_eq!(field(e, "PRIORITY"), "5");
        assert_eq!(field(e, "ACTION"), "renew");
        assert_eq!(field(e, "OUTCOME"), "renewed");
        assert!(
            field(e, "NOT_AFTER")
                .starts_with(&(now() + time::Duration::days(365)).year().to_string())
        );
    }
    // nothing restarted them (no static pods here): pending, said as an error
    let pending = of(Kind::RestartPending);
    assert!(
        pending
            .iter()
            .any(|e| field(e, "COMPONENT") == "kube-apiserver" && field(e, "PRIORITY") == "3"),
        "{}",
        dump()
    );
    // the bad reload, and the refused renewal by hand
    let invalid = of(Kind::ConfigInvalid);
    assert_eq!(invalid.len(), 1, "{}", dump());
    assert!(field(invalid[0], "MESSAGE").contains("warn_dayz"));
    assert_eq!(field(invalid[0], "PRIORITY"), "3");
    let refused = of(Kind::RenewalFailed);
    assert!(
        refused.iter().any(|e| field(e, "OUTCOME") == "refused"
            && field(e, "MESSAGE").contains("front-proxy-client.crt")),
        "{}",
        dump()
    );
    // the missing key: alerted by the daemon (error), a refused recovery, then a recovery
    let missing = of(Kind::FilesMissing);
    assert!(
        missing
            .iter()
            .any(|e| field(e, "CERT_PATH").contains("pki/apiserver.key")
                && field(e, "PRIORITY") == "3"
                && field(e, "OUTCOME") == "files-missing"),
        "{}",
        dump()
    );
    let failed = of(Kind::RecoveryFailed);
    assert!(
        failed
            .iter()
            .any(|e| field(e, "MESSAGE").contains("front-proxy-client.crt")
                && field(e, "PRIORITY") == "3"),
        "{}",
        dump()
    );
    let recovered = of(Kind::Recovered);
    assert!(
        recovered
            .iter()
            .any(|e| field(e, "CERT_NAME") == "apiserver"
                && field(e, "CERT_PATH").contains("pki/apiserver.key")
                && field(e, "PRIORITY") == "5"),
        "{}",
        dump()
    );
    // the truncated CA key: an error naming the CA, the key file and what is wrong
    let damaged = of(Kind::CaKeyDamaged);
    assert!(
        damaged.iter().any(|e| field(e, "CA_NAME") == "etcd-ca"
            && field(e, "CERT_PATH").ends_with("pki/etcd/ca.key")
            && field(e, "PRIORITY") == "3"
            && field(e, "OUTCOME") == "ca-key-damaged"
            && field(e, "MESSAGE").contains("does not parse as a private key")),
        "{}",
        dump()
    );
}

#[test]
fn schedule_shows_the_next_windows_and_what_is_due() {
    let node = Node::new(50);
    std::fs::write(
        node.config(),
        "timezone = \"Europe/Berlin\"\nwindow_spread = \"0\"\n",
    )
    .unwrap();
    let out = node
        .command(&["--now", "2026-11-29T12:00:00Z", "schedule", "--next", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert!(
        lines[0]
            .starts_with("2026-12-07T03:00:00+01:00  due within 65 days: admin.conf, apiserver"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("2027-01-04T03:00:00+01:00  due within 65 days: admin.conf"),
        "{text}"
    );
    assert!(lines[2].starts_with("2027-02-01T03:00:00+01:00"), "{text}");
    // systemd's own calendar (the timer unit's OnCalendar=) agrees on the instants, from now
    if have("systemd-analyze", "schedule") {
        let ours = node.command(&["schedule", "--next", "3"]).output().unwrap();
        let ours: Vec<String> = String::from_utf8_lossy(&ours.stdout)
            .lines()
            .skip(1)
            .map(|l| {
                let local = l.split_whitespace().next().unwrap();
                let t = time::OffsetDateTime::parse(
                    local,
                    &time::format_description::well_known::Rfc3339,
                )
                .unwrap()
                .to_offset(time::UtcOffset::UTC);
                format!(
                    "{} {:02}:{:02}:{:02} UTC",
                    t.date(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .collect();
        let sd = Command::new("systemd-analyze")
            .args([
                "calendar",
                "--iterations=3",
                "Mon *-*-1..7 03:00:00 Europe/Berlin",
            ])
            .env("TZ", "UTC")
            .output()
            .unwrap();
        let sd = String::from_utf8_lossy(&sd.stdout);
        let theirs: Vec<String> = sd
            .lines()
            .filter(|l| l.contains("Next elapse:") || l.contains("Iter. #"))
            .map(|l| l.split_once(": ").unwrap().1.trim()[4..].to_string())
            .collect();
        assert_eq!(ours.len(), 3, "{sd}");
        assert_eq!(ours, theirs, "{sd}");
    }
}

#[test]
fn the_units_verify_clean_and_the_service_is_hardened() {
    if !have("systemd-analyze", "unit") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["usr/bin", "bin", "etc/systemd/system", "lib/systemd"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy(
        env!("CARGO_BIN_EXE_kube-cert-renewer"),
        r.join("usr/bin/kube-cert-renewer"),
    )
    .unwrap();
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    assert!(
        Command::new("cp")
            .args(["-a", "/lib/systemd/system"])
            .arg(r.join("lib/systemd"))
            .status()
            .unwrap()
            .success()
    );
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let names = [
        "kube-cert-renewer.service",
        "kube-cert-renewer-renew.service",
        "kube-cert-renewer-renew.timer",
    ];
    for name in names {
        std::fs::copy(units.join(name), r.join("etc/systemd/system").join(name)).unwrap();
    }
    for name in names {
        // verify exits 0 even on unknown keys: any output is a failure (--man=no: the man page
        // comes with the package)
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", r.display()))
            .arg(r.join("etc/systemd/system").join(name))
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(units.join("kube-cert-renewer.service"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let score: f64 = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for kube-cert-renewer.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score: {said}"));
    assert!(score <= 3.0, "exposure {score}: {said}");
    assert!(out.status.success(), "{said}");
}

#[test]
fn the_daemon_waits_for_a_manual_run_to_finish_and_writes_its_metrics() {
    if !have("flock", "lock") {
        return;
    }
    let node = Node::new(3);
    let metrics = node.tmp.path().join("textfile/kcr.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    std::fs::write(
        node.config(),
        format!("metrics_textfile = \"{}\"\n", metrics.display()),
    )
    .unwrap();
    std::fs::create_dir_all(node.state()).unwrap();
    // a manual run holds the node lock for 3 s
    let mut manual = Command::new("flock")
        .arg(node.state().join("lock"))
        .args(["sleep", "3"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut notify = NotifySocket::bind(node.tmp.path());
    let daemon = Daemon::start(
        node.command(&[]),
        &notify,
        node.tmp.path().join("daemon.log"),
    );
    notify.wait_for("the emergency renewal done", Duration::from_secs(60), |m| {
        m.contains("renewed 11, ok")
    });
    let said = daemon.said();
    assert!(
        said.contains("waiting for the node lock") && said.contains("another kube-cert-renewer"),
        "{said}"
    );
    assert!(
        manual.try_wait().unwrap().is_some(),
        "renewed only once the manual run ended"
    );
    let _ = manual.wait();
    // the metrics file, for node-exporter's textfile collector
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&metrics).unwrap_or_default();
        if text.contains("kube_cert_renewer_last_run_success") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("x509_cert_not_after{"), "{text}");
    assert!(
        text.contains("kube_cert_renewer_last_run_success 1"),
        "{text}"
    );
    assert!(
        text.contains("kube_cert_renewer_last_run_timestamp_seconds "),
        "{text}"
    );
    assert!(
        text.contains("kube_cert_renewer_next_window_timestamp_seconds "),
        "{text}"
    );
    // nothing restarted them (no static pods): each waits, said in the metrics too
    assert!(
        text.contains("kube_cert_renewer_restart_pending{component=\"kube-apiserver\"} 1"),
        "{text}"
    );
    drop(daemon);
}

/// The daemon keeps a snapshot of the node, alerts (its own MESSAGE_ID, the STATUS= line) when
/// kubeadm files go missing, and with `auto_recover = true` brings them back by itself.
#[test]
fn the_daemon_snapshots_alerts_missing_files_and_recovers_them() {
    let node = Node::new(100);
    std::fs::write(node.config(), "restart_poll_ms = 100\n").unwrap();
    let key = node.dir().join("pki/apiserver.key");
    let original = std::fs::read(&key).unwrap();
    let (mut notify, mut daemon) =
        start_ready(&node, node.command(&[]), node.tmp.path(), "daemon.log");
    daemon.wait_said("snapshot taken", Duration::from_secs(20));
    let snapshots = node.state().join("snapshots");
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 1);

    std::fs::remove_file(&key).unwrap();
    let status = notify.wait_for("STATUS= with MISSING", Duration::from_secs(30), |m| {
        m.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("MISSING: 1 kubeadm file"))
    });
    assert!(status.contains("kube-cert-renewer recover"), "{status}");
    daemon.wait_said(
        "kubeadm file(s) missing from the node",
        Duration::from_secs(10),
    );
    assert!(
        daemon.said().contains(&key.display().to_string()),
        "{}",
        daemon.said()
    );
    assert!(
        !key.exists(),
        "auto_recover is off by default: nothing recovered"
    );
    assert_eq!(
        std::fs::read_dir(&snapshots).unwrap().count(),
        1,
        "no snapshot of a damaged node"
    );
    daemon.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    // auto_recover: the key comes back, byte for byte, from the snapshot
    std::fs::write(
        node.config(),
        "restart_poll_ms = 100\nauto_recover = true\nauto_recover_after_secs = 2\n",
    )
    .unwrap();
    let again = node.tmp.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let (_notify, daemon) = start_ready(&node, node.command(&[]), &again, "daemon2.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !key.exists() {
        assert!(
            Instant::now() < deadline,
            "not recovered: {}",
            daemon.said()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read(&key).unwrap(), original);
    daemon.wait_said("restored from snapshot", Duration::from_secs(10));
    let mut daemon = daemon;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon keeps running after a recovery: {}",
        daemon.said()
    );
    daemon.signal("-TERM");
}

/// The config line of a daily window at `at`'s time of day (UTC, no spread): a window that
/// comes seconds into a test.
fn daily_at(at: time::OffsetDateTime) -> String {
    format!(
        "schedule = \"{} {} {} * * *\"\ntimezone = \"UTC\"\nwindow_spread = \"0\"\n",
        at.second(),
        at.minute(),
        at.hour()
    )
}

/// A file rewritten every `every` on a thread of its own until dropped: an event storm in a
/// watched directory.
struct Storm {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Storm {
    fn start(file: PathBuf, every: Duration) -> Storm {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut writes = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&file, format!("{writes}\n")).unwrap();
                writes += 1;
                std::thread::sleep(every);
            }
            writes
        });
        Storm {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it; returns how many writes it made.
    fn end(&mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.end();
    }
}

/// The daemon's memory file, parsed.
fn memory_of(node: &Node) -> serde_json::Value {
    let text = std::fs::read(node.state().join("daemon.json")).unwrap_or_default();
    serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null)
}

fn instant(value: &serde_json::Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        value
            .as_str()
            .unwrap_or_else(|| panic!("not an instant: {value}")),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Waits for the daemon to exit; returns its exit code, or fails after `within`.
fn exits_within(daemon: &mut Daemon, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            return s.code();
        }
        assert!(
            Instant::now() < deadline,
            "still running {within:?} after SIGTERM: {}",
            daemon.said()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An event storm (a file of the pki dir rewritten every 0.3 s, for many times the 1.5 s a burst
/// settles in) starves nothing: WATCHDOG=1 keeps coming at half `WATCHDOG_USEC`, the window
/// that comes during the storm runs on time, and SIGTERM is answered within seconds.
#[test]
fn an_event_storm_starves_neither_the_watchdog_nor_the_window_nor_sigterm() {
    let node = Node::new(40);
    let window = now() + time::Duration::seconds(15);
    std::fs::write(
        node.config(),
        format!("restart_poll_ms = 100\n{}", daily_at(window)),
    )
    .unwrap();
    let mut command = node.command(&[]);
    command
        .env("WATCHDOG_USEC", "3000000")
        .env_remove("WATCHDOG_PID");
    let (mut notify, mut daemon) = start_ready(&node, command, node.tmp.path(), "daemon.log");
    let mut storm = Storm::start(node.dir().join("pki/storm.txt"), Duration::from_millis(300));
    let began = Instant::now();
    let mut pings = vec![began];
    let mut window_ran = None;
    while began.elapsed() < Duration::from_secs(25) {
        if let Some(m) = notify.recv(Duration::from_millis(200))
            && has_line(&m, "WATCHDOG=1")
        {
            pings.push(Instant::now());
        }
        if window_ran.is_none() && daemon.said().contains("maintenance window: renewing") {
            window_ran = Some(now());
        }
    }
    pings.push(Instant::now());
    let longest = pings
        .windows(2)
        .map(|p| p[1] - p[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest < Duration::from_secs(3),
        "{} pings in 25 s of storm, {longest:?} without one (WATCHDOG_USEC is 3 s): {}",
        pings.len() - 2,
        daemon.said()
    );
    let ran = window_ran.unwrap_or_else(|| panic!("the window never ran: {}", daemon.said()));
    assert!(
        ran - window < time::Duration::seconds(10),
        "the window of {window} ran at {ran}"
    );
    assert_eq!(
        daemon.said().matches(" renewed until ").count(),
        11,
        "{}",
        daemon.said()
    );
    // SIGTERM in the middle of the storm
    daemon.signal("-TERM");
    assert_eq!(exits_within(&mut daemon, Duration::from_secs(5)), Some(0));
    assert!(storm.end() > 60, "the storm kept writing");
}

/// An `extra_paths` directory other users may write is not watched, said once: a write there
/// steers nothing (it is read at the next look another cause brings).
#[test]
fn an_extra_paths_dir_other_users_may_write_is_not_watched() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::new(100);
    let open = node.tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    extra_cert(&open.join("fine.pem"), "fine", 300);
    std::fs::write(
        node.config(),
        format!("extra_paths = [\"{}/*.pem\"]\n", open.display()),
    )
    .unwrap();
    let (mut notify, mut daemon) =
        start_ready(&node, node.command(&[]), node.tmp.path(), "daemon.log");
    let said = format!("not watching {}", open.display());
    daemon.wait_said(&said, Duration::from_secs(5));
    // an expired certificate dropped there is not looked at because of the write
    extra_cert(&open.join("gone.pem"), "gone", -2);
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(5) {
        if let Some(m) = notify.recv(Duration::from_millis(200)) {
            assert!(!m.contains("EXPIRED"), "a look came from the open dir: {m}");
        }
    }
    // a change in a watched dir brings the look that reads it
    std::fs::write(node.dir().join("pki/note.txt"), "x").unwrap();
    let status = notify.wait_for("the expired extra file", Duration::from_secs(15), |m| {
        m.contains("EXPIRED")
    });
    assert!(status.contains("gone.pem"), "{status}");
    // a reload watches the same dirs and says nothing again
    daemon.signal("-HUP");
    daemon.wait_said("configuration reloaded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.said().matches(&said).count(), 1, "{}", daemon.said());
    daemon.signal("-TERM");
    assert_eq!(exits_within(&mut daemon, Duration::from_secs(20)), Some(0));
}

/// The snapshots of a node, oldest first.
fn snapshots_of(node: &Node) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(node.state().join("snapshots"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    all.retain(|p| p.is_dir() && p.extension().is_none());
    all.sort();
    all
}

/// A manifest rewritten (what `kubeadm upgrade` does) is seen: the daemon snapshots the new
/// manifest within seconds, not at its next hourly look.
#[test]
fn a_manifest_change_makes_the_daemon_take_a_snapshot() {
    let node = Node::with_manifests(100, true);
    std::fs::write(node.config(), "restart_poll_ms = 100\n").unwrap();
    let (_notify, mut daemon) =
        start_ready(&node, node.command(&[]), node.tmp.path(), "daemon.log");
    daemon.wait_said("snapshot taken", Duration::from_secs(20));
    assert_eq!(snapshots_of(&node).len(), 1);
    let manifest = node.dir().join("manifests/kube-scheduler.yaml");
    let mut upgraded = std::fs::read(&manifest).unwrap();
    upgraded.extend_from_slice(b"# upgraded\n");
    let staged = node.dir().join("manifests/.kube-scheduler.yaml.new");
    std::fs::write(&staged, &upgraded).unwrap();
    std::fs::rename(&staged, &manifest).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while snapshots_of(&node).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no snapshot of the new manifest: {}",
            daemon.said()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let newest = snapshots_of(&node).pop().unwrap();
    assert_eq!(
        std::fs::read(newest.join("manifests/kube-scheduler.yaml")).unwrap(),
        upgraded
    );
    daemon.signal("-TERM");
    assert_eq!(exits_within(&mut daemon, Duration::from_secs(20)), Some(0));
}

/// A window whose job failed (a certificate that cannot be parsed refuses the renewal) is not
/// recorded as done.
#[test]
fn a_window_whose_job_failed_is_not_recorded() {
    let node = Node::new(40);
    std::fs::write(node.dir().join("pki/front-proxy-client.crt"), "garbage\n").unwrap();
    let window = now() + time::Duration::seconds(8);
    std::fs::write(node.config(), daily_at(window)).unwrap();
    let (_notify, mut daemon) =
        start_ready(&node, node.command(&[]), node.tmp.path(), "daemon.log");
    daemon.wait_said("maintenance window: renewing", Duration::from_secs(30));
    daemon.wait_said("renewal refused", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while memory_of(&node)["last_run"]["success"] != false {
        assert!(Instant::now() < deadline, "{}", memory_of(&node));
        std::thread::sleep(Duration::from_millis(100));
    }
    let memory = memory_of(&node);
    assert!(
        instant(&memory["last_window"]) < window,
        "the failed window was recorded: {memory}"
    );
    daemon.signal("-TERM");
    assert_eq!(exits_within(&mut daemon, Duration::from_secs(20)), Some(0));
}

/// The clock a year ahead, then back: the daemon renewed under the wrong clock (certificates
/// not valid for a year) and recorded its window a year ahead. Back on the real clock, `check`
/// says those certificates are `not-yet-valid` (critical, exit 2, in every format), the daemon
/// alerts them, re-issues them valid from now, and runs the real window.
#[test]
fn a_clock_a_year_ahead_then_back_skips_no_window_and_heals_what_it_issued() {
    let node = Node::new(100);
    let pki = node.dir().join("pki");
    std::fs::write(node.config(), "timezone = \"UTC\"\nwindow_spread = \"0\"\n").unwrap();
    let ahead = now() + time::Duration::days(365);
    let ahead_text = ahead
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut notify = NotifySocket::bind(node.tmp.path());
    let mut daemon = Daemon::start(
        node.command(&["--now", &ahead_text]),
        &notify,
        node.tmp.path().join("daemon-ahead.log"),
    );
    notify.wait_for(
        "the renewal under the clock ahead",
        Duration::from_secs(60),
        |m| m.contains("renewed 11, ok"),
    );
    daemon.signal("-TERM");
    assert_eq!(exits_within(&mut daemon, Duration::from_secs(20)), Some(0));
    let recorded = instant(&memory_of(&node)["last_window"]);
    assert!(recorded > now() + time::Duration::days(300), "{recorded}");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        pki.join("ca.crt").to_str().unwrap(),
        pki.join("apiserver.crt").to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("not yet valid"), "{text}");

    // back on the real clock: check says so, in every format
    let (code, json) = check_json(now(), &node.dir());
    assert_eq!(code, 2, "{json}");
    assert_eq!(
        by_name(&json, "certificates", "apiserver")["status"],
        "not-yet-valid"
    );
    assert_eq!(
        by_name(&json, "certificateAuthorities", "ca")["status"],
        "ok"
    );
    let (code, text, _) = check_text(now(), &node.dir());
    assert_eq!(code, 2);
    let row = text.lines().find(|l| l.starts_with("apiserver ")).unwrap();
    assert!(row.ends_with("not-yet-valid"), "{row}");
    let out = run(
        now(),
        &[
            "check",
            "-o",
            "prometheus",
            "--kubernetes-dir",
            node.dir().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let prom = String::from_utf8_lossy(&out.stdout);
    let gauge = |name: &str| {
        prom.lines()
            .find(|l| {
                l.starts_with("kube_cert_renewer_cert_not_yet_valid{")
                    && l.contains(&format!("name=\"{name}\""))
            })
            .unwrap_or_else(|| panic!("no not-yet-valid gauge of {name}: {prom}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(gauge("apiserver"), "1");
    assert_eq!(gauge("ca"), "0");
    // `renew --due --dry-run` counts it as due
    let (code, text, err) = renew(now(), &node.dir(), &node.state(), &["--due", "--dry-run"]);
    assert_eq!(code, 0, "{text}{err}");
    let planned = text.split("\nNot renewed:").next().unwrap();
    assert!(planned.starts_with("Plan (dry run"), "{text}");
    assert!(
        planned.lines().any(|l| l.starts_with("apiserver ")),
        "{text}"
    );

    // the daemon on the real clock, a window coming in seconds
    let window = now() + time::Duration::seconds(15);
    std::fs::write(node.config(), daily_at(window)).unwrap();
    let again = node.tmp.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let mut notify = NotifySocket::bind(&again);
    let mut daemon = Daemon::start(
        node.command(&[]),
        &notify,
        node.tmp.path().join("daemon.log"),
    );
    let first = notify.wait_for("a STATUS=", Duration::from_secs(60), |m| {
        m.lines().any(|l| l.starts_with("STATUS="))
    });
    assert!(first.contains("NOT YET VALID: "), "{first}");
    assert!(first.contains("apiserver"), "{first}");
    daemon.wait_said("apiserver is not valid before", Duration::from_secs(10));
    daemon.wait_said("clock", Duration::from_secs(10));
    notify.wait_for("a renewal", Duration::from_secs(60), |m| {
        m.contains("renewed 11, ok")
    });
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        pki.join("ca.crt").to_str().unwrap(),
        pki.join("apiserver.crt").to_str().unwrap(),
    ]);
    assert!(ok, "re-issued valid from now: {text}");
    daemon.wait_said("maintenance window: renewing", Duration::from_secs(40));
    let memory = memory_of(&node);
    assert!(
        instant(&memory["last_window"]) <= now(),
        "the window recorded is the real one: {memory}"
    );
    let (_, json) = check_json(now(), &node.dir());
    assert_eq!(by_name(&json, "certificates", "apiserver")["status"], "ok");
    daemon.signal("-TERM");
    assert_eq!(exits_within(&mut daemon, Duration::from_secs(20)), Some(0));
}

/// A CA key that cannot sign (another key swapped in) is alerted at the daemon's first look and
/// shown in `STATUS=`; once the good key is back, `STATUS=` says nothing of it.
#[test]
fn the_daemon_alerts_a_damaged_ca_key() {
    let node = Node::new(100);
    std::fs::write(node.config(), "restart_poll_ms = 100\n").unwrap();
    let key = node.dir().join("pki/front-proxy-ca.key");
    let good = std::fs::read(&key).unwrap();
    std::fs::copy(node.dir().join("pki/ca.key"), &key).unwrap();
    let mut notify = NotifySocket::bind(node.tmp.path());
    let daemon = Daemon::start(
        node.command(&[]),
        &notify,
        node.tmp.path().join("daemon.log"),
    );
    let status = notify.wait_for(
        "STATUS= with CA KEY DAMAGED",
        Duration::from_secs(60),
        |m| {
            m.lines()
                .any(|l| l.starts_with("STATUS=") && l.contains("CA KEY DAMAGED: front-proxy-ca"))
        },
    );
    assert!(status.contains("kube-cert-renewer recover"), "{status}");
    daemon.wait_said("CA front-proxy-ca cannot sign", Duration::from_secs(10));
    assert!(
        daemon.said().contains(&format!(
            "{}: this key matches no certificate",
            key.display()
        )),
        "{}",
        daemon.said()
    );
    // the good key back: the watch sees it, and STATUS= no longer says it
    std::fs::write(&key, &good).unwrap();
    notify.wait_for(
        "STATUS= without CA KEY DAMAGED",
        Duration::from_secs(30),
        |m| {
            m.lines()
                .any(|l| l.starts_with("STATUS=") && !l.contains("CA KEY DAMAGED"))
        },
    );
    daemon.signal("-TERM");
}

/// What `kubeadm reset` leaves — every CA, certificate, kubeconfig and static-pod manifest
/// gone, the kubeadm config file a tool like kubespray keeps in /etc/kubernetes still there — is
/// alerted but never auto-recovered: bringing the CA keys back would undo the reset.
#[test]
fn auto_recover_leaves_a_reset_node_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = NodeSpec::new(now(), 100);
    spec.key_algorithm = KeyAlgorithm::EcdsaP256;
    spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
    nodegen::generate(&tmp.path().join("k"), &spec).unwrap();
    let node = Node { tmp };
    let kubeadm_config = node.dir().join("kubeadm-config.yaml");
    std::fs::write(
        &kubeadm_config,
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n",
    )
    .unwrap();
    // the product's own Lease credential: not kubeadm's, so reset leaves it
    let out = node
        .command(&["lease-credentials", "--issue"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lease_conf = node.dir().join("kube-cert-renewer.conf");
    assert!(lease_conf.exists());
    // a snapshot of the whole node
    let out = node.command(&["snapshot"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // kubeadm reset: pki/, kubeadm's kubeconfigs, the manifests (its config file stays)
    let mut removed = Vec::new();
    for dir in ["pki", "pki/etcd", "manifests", ""] {
        for entry in std::fs::read_dir(node.dir().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let conf = path.extension().is_some_and(|e| e == "conf") && path != lease_conf;
            if path.is_file() && (!dir.is_empty() || conf) {
                std::fs::remove_file(&path).unwrap();
                removed.push(path);
            }
        }
    }
    assert!(removed.len() > 30, "{removed:?}");
    std::fs::write(
        node.config(),
        "restart_poll_ms = 100\nauto_recover = true\nauto_recover_after_secs = 0\n",
    )
    .unwrap();
    let mut notify = NotifySocket::bind(node.tmp.path());
    let mut daemon = Daemon::start(
        node.command(&[]),
        &notify,
        node.tmp.path().join("daemon.log"),
    );
    notify.wait_for("STATUS= with MISSING", Duration::from_secs(60), |m| {
        m.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("MISSING:"))
    });
    // said in the very evaluation that would otherwise recover (the grace is 0)
    daemon.wait_said("the node looks reset", Duration::from_secs(10));
    daemon.wait_said(
        "kubeadm file(s) missing from the node",
        Duration::from_secs(10),
    );
    daemon.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let back: Vec<&PathBuf> = removed.iter().filter(|p| p.exists()).collect();
    assert!(back.is_empty(), "brought back: {back:?}\n{}", daemon.said());
    assert!(
        !daemon.said().contains("missing, recovering"),
        "{}",
        daemon.said()
    );
    assert!(kubeadm_config.exists());
    assert!(
        lease_conf.exists(),
        "kubeadm reset leaves it; so did the daemon"
    );

    // one file gone from a whole node is still recovered (the control case)
    let out = node.command(&["recover", "--no-restart"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = node.dir().join("pki/apiserver.key");
    std::fs::remove_file(&key).unwrap();
    let again = node.tmp.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let (_notify, daemon) = start_ready(&node, node.command(&[]), &again, "daemon2.log");
    daemon.wait_said("restored from snapshot", Duration::from_secs(30));
    assert!(key.exists(), "{}", daemon.said());
    assert!(!daemon.said().contains("looks reset"), "{}", daemon.said());
    daemon.signal("-TERM");
}
