//! Restart over the CRI on real containerd, with the kubelet stand-in running each static pod
//! of a generated kubeadm node as kubelet would (openssl s_server for kube-apiserver, Debian's
//! etcd for etcd, sleep for the controller-manager and the scheduler).
//!
//! Oracles independent of the code under test: `openssl s_client` for the served certificate,
//! `etcdctl endpoint health`, and `ctr` (containerd's own CLI) for container ids and states.
//!
//! Needs the private containerd that `.ci/run` starts (`KCR_CONTAINERD_SOCKET`); without it
//! every test here fails (or, in a quick run, `KCR_QUICK=1`, says so loudly and skips).

mod common;

use common::standin_node::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use kube_cert_renewer::node::cri::RuntimeClient;
use kube_cert_renewer::node::restart::{self, HealthCheck, Settings, StaticPods, TlsProbes};

#[test]
fn renew_then_restart_serves_the_new_certificates() {
    let Some(node) = running_node("renew", START_60, |_| {}) else {
        return;
    };
    let before = node.manifests_snapshot();
    let old_api = serial_of(&node.pki("apiserver.crt"));
    assert_eq!(
        served_serial(node.spec.apiserver_port),
        Some(old_api.clone())
    );
    let old_etcd = serial_of(&node.pki("etcd/server.crt"));
    assert_eq!(
        served_serial(node.spec.etcd_client_port),
        Some(old_etcd.clone())
    );
    let old_ids: BTreeMap<&str, String> = COMPONENTS
        .iter()
        .map(|c| (*c, node.running_id(c).unwrap()))
        .collect();

    let out = node.run(&["renew", "all"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}\n{}", node.standin_log());
    assert!(log.contains("every manifest is back in place"), "{log}");

    let new_api = serial_of(&node.pki("apiserver.crt"));
    assert_ne!(new_api, old_api);
    assert_eq!(
        served_serial(node.spec.apiserver_port),
        Some(new_api),
        "kube-apiserver does not serve the renewed certificate"
    );
    let new_etcd = serial_of(&node.pki("etcd/server.crt"));
    assert_ne!(new_etcd, old_etcd);
    assert_eq!(served_serial(node.spec.etcd_client_port), Some(new_etcd));
    assert!(
        node.etcd_healthy(),
        "etcdctl endpoint health with the renewed client cert"
    );
    for c in COMPONENTS {
        let now = node.running_id(c).expect("running");
        assert_ne!(now, old_ids[c], "{c} kept its container");
    }
    node.assert_manifests_back(&before, "");
}

#[test]
fn restart_all_gives_every_component_a_new_container() {
    let Some(node) = running_node("all", START_60, |_| {}) else {
        return;
    };
    let before = node.manifests_snapshot();
    let old: BTreeMap<&str, BTreeMap<String, bool>> = COMPONENTS
        .iter()
        .map(|c| (*c, node.containers(c)))
        .collect();
    let out = node.run(&["restart"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out),
        node.standin_log()
    );
    for c in COMPONENTS {
        let id = node.running_id(c).expect("running after restart");
        assert!(
            !old[c].contains_key(&id),
            "{c}: {id} is not a new container"
        );
        // the old ones are not running any more
        for old_id in old[c].keys() {
            assert_ne!(
                node.containers(c).get(old_id),
                Some(&true),
                "{c}: {old_id} still runs"
            );
        }
    }
    assert_eq!(node.manifests_snapshot(), before);
}

#[test]
fn affected_after_renewing_scheduler_conf_restarts_only_the_scheduler() {
    let Some(node) = running_node("sched", START_60, |_| {}) else {
        return;
    };
    let old: BTreeMap<&str, String> = COMPONENTS
        .iter()
        .map(|c| (*c, node.running_id(c).unwrap()))
        .collect();
    let out = node.run(&["renew", "scheduler.conf"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out),
        node.standin_log()
    );
    let log = text(&out);
    let table: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.starts_with("COMPONENT"))
        .skip(1)
        .take_while(|l| l.starts_with("kube-") || l.starts_with("etcd"))
        .collect();
    assert_eq!(table.len(), 1, "{log}");
    assert!(table[0].starts_with("kube-scheduler "), "{log}");
    for c in COMPONENTS {
        let containers = node.containers(c);
        if c == "kube-scheduler" {
            let now = node.running_id(c).expect("running");
            assert_ne!(now, old[c], "the scheduler was not restarted");
            assert!(!containers.contains_key(&old[c]), "its old pod is gone");
        } else {
            assert_eq!(
                node.running_id(c).as_ref(),
                Some(&old[c]),
                "{c} was restarted but nothing of it was renewed: {containers:?}\n{log}\n{}\n{}",
                node.standin_log(),
                node.container_logs(c)
            );
        }
    }
}

#[test]
fn an_apiserver_that_never_comes_back_gets_the_old_certificates_back() {
    // kube-apiserver refuses to start with anything but the certificate it has now: a renewal
    // breaks it, and only the restored backup brings it back.
    let Some(node) = running_node(
        "broken",
        "restart_stop_timeout_secs = 30\nrestart_start_timeout_secs = 6\n",
        apiserver_accepts_only_current_cert,
    ) else {
        return;
    };
    let before = node.manifests_snapshot();
    let old_api = serial_of(&node.pki("apiserver.crt"));
    let old_files = common::snapshot(&node.dir().join("pki"));

    let out = node.run(&["renew", "all"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    // the stand-in's apiserver exits at once with the new certificate: seen running but never
    // healthy, or (on a busy machine, between two polls) never seen running at all
    assert!(
        log.contains("kube-apiserver did not answer healthy")
            || log.contains("kube-apiserver did not start a new container"),
        "{log}"
    );
    assert!(log.contains("previous certificates were restored"), "{log}");
    assert!(log.contains("running healthy again"), "{log}");
    // every certificate is the old one again, byte for byte, and served
    assert_eq!(common::snapshot(&node.dir().join("pki")), old_files);
    assert_eq!(served_serial(node.spec.apiserver_port), Some(old_api));
    node.assert_manifests_back(&before, "");
}

#[test]
fn a_restart_killed_after_parking_is_finished_by_the_next_command() {
    let Some(node) = running_node("kill", START_60, |_| {}) else {
        return;
    };
    let before = node.manifests_snapshot();
    let mut child = node
        .command(
            &["restart"],
            &[("KUBE_CERT_RENEWER_FAILPOINT", "restart.after-park:pause")],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.parked().len() < 4 {
        assert!(Instant::now() < deadline, "nothing was parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        common::snapshot(&node.manifests()).is_empty(),
        "manifests should be parked"
    );

    // the stand-in stops the parked pods, as kubelet would
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.running_id("kube-apiserver").is_some() {
        assert!(Instant::now() < deadline, "parked apiserver still runs");
        std::thread::sleep(Duration::from_millis(100));
    }

    // any command, even a read-only check, puts them back first
    let out = node.run(&["check"]);
    let log = text(&out);
    assert!(log.contains("put back"), "{log}");
    node.assert_manifests_back(&before, "");
    node.wait_up();
}

#[test]
fn containerd_stopped_in_the_middle() {
    // Its own containerd, which this test stops.
    if containerd().is_none() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("kcr-c.")
        .tempdir_in("/tmp")
        .unwrap();
    let ctrd = dir.path().join("c");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/containerd-env.sh"
    );
    let started = Command::new("bash")
        .args([script, "start", ctrd.to_str().unwrap()])
        .output()
        .unwrap();
    struct Stop(String, PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .args([&self.0, "stop", self.1.to_str().unwrap()])
                .status();
        }
    }
    let _stop = Stop(script.to_string(), ctrd.clone());
    assert!(started.status.success(), "{}", text(&started));

    let node = start_node(
        ctrd.join("containerd.sock"),
        "stop",
        "restart_stop_timeout_secs = 5\nrestart_start_timeout_secs = 10\n",
        |_| {},
    );
    let before = node.manifests_snapshot();

    // stop containerd itself once parked (its shims and containers live on, as with
    // `systemctl stop containerd`)
    let (status, out) = node.restart_interrupted_pid(&["restart"], |_| {
        let pid = std::fs::read_to_string(ctrd.join("containerd.pid")).unwrap();
        signal(pid.trim(), "-KILL");
    });
    assert_ne!(status.code(), Some(0), "{out}");
    assert!(out.contains("container runtime stopped answering"), "{out}");
    node.assert_manifests_back(&before, &out);
}

#[test]
fn sigterm_while_parked_puts_the_manifests_back_before_exiting() {
    // A scheduler that ignores SIGTERM: the runtime needs its whole grace period to stop it,
    // which holds the restart in its wait while the manifest is parked.
    let Some(node) = running_node("sigterm", START_60, |dir| {
        let manifest = dir.join("manifests/kube-scheduler.yaml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let text = text.replacen(
            "  annotations:\n",
            "  annotations:\n    kube-cert-renewer.test/command: \"trap '' TERM; exec sleep 2147483647\"\n",
            1,
        );
        std::fs::write(&manifest, text).unwrap();
    }) else {
        return;
    };
    let before = node.manifests_snapshot();
    let (status, err) =
        node.restart_interrupted_pid(&["restart", "kube-scheduler"], |pid| signal(pid, "-TERM"));
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(err.contains("put back"), "{err}");
    node.assert_manifests_back(&before, "");
    assert!(!node.state().join("journal.json").exists());
}

#[test]
fn the_demo_renews_and_restarts_on_the_stand_in() {
    let Some(socket) = containerd() else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"))
        .arg(format!("--runtime-endpoint=unix://{}", socket.display()))
        .arg("demo")
        .output()
        .unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let serial = |prefix: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {log}"))
            .trim()
            .to_string()
    };
    let before = serial("kube-apiserver serves the certificate with serial ");
    let after = serial("kube-apiserver now serves the certificate with serial ");
    assert_ne!(before, after, "{log}");
    assert!(log.contains("every manifest is back in place"), "{log}");
    // the deleted pki/ came back from the snapshot the renewal took, and is what is served
    assert!(log.contains("an operator's mistake"), "{log}");
    assert!(log.contains("restored from snapshot 000001-"), "{log}");
    assert!(!log.contains("re-issued"), "{log}");
}

#[test]
fn an_apiserver_bound_to_one_address_is_probed_there() {
    // --bind-address=<node IP> (here another loopback address): nothing answers on 127.0.0.1.
    let Some(node) = running_node("bind", START_60, |dir| {
        let manifest = dir.join("manifests/kube-apiserver.yaml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let text = text.replacen(
            "    - --secure-port=",
            "    - --bind-address=127.0.0.2\n    - --secure-port=",
            1,
        );
        std::fs::write(&manifest, text).unwrap();
    }) else {
        return;
    };
    assert_eq!(node.api_host, "127.0.0.2");
    assert_eq!(
        served_serial(node.spec.apiserver_port),
        None,
        "not on 127.0.0.1"
    );
    let out = node.run(&["renew", "apiserver"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}\n{}", node.standin_log());
    assert!(!log.contains("restored"), "{log}");
    assert_eq!(
        node.api_serial(),
        Some(serial_of(&node.pki("apiserver.crt"))),
        "the renewed certificate is served on the bound address"
    );
}

/// `check` with thresholds under the node's 3 days, so its exit code speaks of the control
/// plane only: (exit code, stdout).
fn check_control_plane(node: &Node) -> (i32, String) {
    let out = node.run(&["check", "--warn-days", "2", "--critical-days", "1"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn renewed_without_restart_stays_pending_until_renew_due_restarts_it() {
    let Some(node) = running_node(
        "pending",
        &format!("{START_60}renew_before_days = 1\n"),
        |_| {},
    ) else {
        return;
    };
    let old_api = serial_of(&node.pki("apiserver.crt"));
    let sched = node.running_id("kube-scheduler").unwrap();
    let out = node.run(&["renew", "apiserver", "scheduler.conf", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("the restart is pending"),
        "{}",
        text(&out)
    );
    let new_api = serial_of(&node.pki("apiserver.crt"));

    // the old certificate still runs: check says so, with what to run
    let (code, report) = check_control_plane(&node);
    assert_eq!(code, 1, "{report}");
    let today = common::now().date().to_string();
    assert!(
        report.contains(&format!("kube-apiserver: restart pending since {today}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("it serves serial {old_api}"))
            && report.contains(&format!("the file on disk has serial {new_api}")),
        "{report}"
    );
    assert!(
        report.contains("run `kube-cert-renewer restart kube-apiserver kube-scheduler`"),
        "{report}"
    );

    // a --due run with nothing due finishes the pending restart
    let out = node.run(&["renew", "--due"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}\n{}", node.standin_log());
    assert!(log.contains("Nothing to renew"), "{log}");
    assert_eq!(node.api_serial(), Some(new_api));
    assert_ne!(node.running_id("kube-scheduler").unwrap(), sched);
    let (code, report) = check_control_plane(&node);
    assert_eq!(code, 0, "{report}");
    assert!(!report.contains("restart pending"), "{report}");
}

#[test]
fn a_kubelet_that_does_not_react_costs_one_park_and_keeps_the_new_certificates() {
    let Some(node) = running_node(
        "frozen",
        "restart_stop_timeout_secs = 3\nrestart_start_timeout_secs = 30\n",
        |_| {},
    ) else {
        return;
    };
    let before = node.manifests_snapshot();
    let old_api = serial_of(&node.pki("apiserver.crt"));
    let api = node.running_id("kube-apiserver").unwrap();
    let standin = node.standin.as_ref().unwrap().id().to_string();
    signal(&standin, "-STOP"); // a hung kubelet
    let out = node.run(&["renew", "apiserver"]);
    signal(&standin, "-CONT");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("kube-apiserver still running 3s after"),
        "{log}"
    );
    assert!(log.contains("never tried"), "{log}");
    assert!(!log.contains("restored"), "{log}");
    let new_api = serial_of(&node.pki("apiserver.crt"));
    assert_ne!(new_api, old_api, "the renewed certificate stays");
    node.assert_manifests_back(&before, &log);
    assert_eq!(
        node.running_id("kube-apiserver"),
        Some(api),
        "never stopped"
    );
    let (code, report) = check_control_plane(&node);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("kube-apiserver: restart pending"),
        "{report}"
    );
    // once the kubelet reacts again, a restart finishes the job
    let out = node.run(&["restart", "kube-apiserver"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(node.api_serial(), Some(new_api));
    assert_eq!(check_control_plane(&node).0, 0);
}

#[test]
fn restart_leaves_other_static_pods_alone_and_one_broken_manifest_blocks_only_itself() {
    let Some(node) = running_node("vip", START_60, |dir| {
        // a kube-vip-like static pod beside kubeadm's: it holds the HA address
        let sched = std::fs::read_to_string(dir.join("manifests/kube-scheduler.yaml")).unwrap();
        let vip = sched
            .replace("kube-scheduler", "kube-vip")
            .lines()
            .filter(|l| !l.contains("--kubeconfig") && !l.contains("--leader-elect"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("manifests/kube-vip.yaml"), vip + "\n").unwrap();
    }) else {
        return;
    };
    let vip = node.running_id("kube-vip").expect("kube-vip runs");
    let old: BTreeMap<&str, String> = COMPONENTS
        .iter()
        .map(|c| (*c, node.running_id(c).unwrap()))
        .collect();
    let out = node.run(&["restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        node.running_id("kube-vip"),
        Some(vip.clone()),
        "kube-vip bounced unasked"
    );
    for c in COMPONENTS {
        assert_ne!(
            node.running_id(c).as_ref(),
            Some(&old[c]),
            "{c} not restarted"
        );
    }
    // named, it restarts
    let out = node.run(&["restart", "kube-vip"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let vip2 = node.running_id("kube-vip").unwrap();
    assert_ne!(vip2, vip);

    // etcd's manifest becomes unusable: the others still restart, etcd is named as the problem
    let etcd = node.manifests().join("etcd.yaml");
    let etcd_text = std::fs::read_to_string(&etcd).unwrap();
    std::fs::write(
        &etcd,
        etcd_text.replace(
            "- --listen-client-urls=https://127.0.0.1",
            "- --listen-client-urls=https://node-1",
        ),
    )
    .unwrap();
    let sched = node.running_id("kube-scheduler").unwrap();
    let out = node.run(&["restart", "kube-scheduler"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_ne!(node.running_id("kube-scheduler").unwrap(), sched);
    let out = node.run(&["restart"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("cannot restart etcd") && log.contains("etcd.yaml"),
        "{log}"
    );
    assert!(log.contains("every manifest is back in place"), "{log}");
    assert_eq!(node.running_id("kube-vip"), Some(vip2));
}

#[test]
fn the_daemon_renews_a_node_three_days_from_expiry_at_once_and_sees_a_hand_made_change() {
    let Some(node) = running_node("daemon", START_60, |_| {}) else {
        return;
    };
    let before = node.manifests_snapshot();
    let old_api = serial_of(&node.pki("apiserver.crt"));
    let mut notify = common::NotifySocket::bind(node.tmp.path());
    let daemon = common::Daemon::start(
        node.command(&[], &[]),
        &notify,
        node.tmp.path().join("daemon.log"),
    );
    let said = || daemon.said();
    // not at the window (a week or more away): at once, by the emergency rule
    let status = notify.wait_for("a finished run", Duration::from_secs(180), |m| {
        m.contains("renewed 11, ok")
    });
    let new_api = serial_of(&node.pki("apiserver.crt"));
    assert_ne!(new_api, old_api);
    assert_eq!(node.api_serial(), Some(new_api), "{}", said());
    assert_eq!(
        served_serial(node.spec.etcd_client_port),
        Some(serial_of(&node.pki("etcd/server.crt")))
    );
    assert!(said().contains("EMERGENCY renewal"), "{}", said());
    assert!(status.contains("soonest: "), "{status}");
    node.assert_manifests_back(&before, &said());

    // its own restart parked and returned the watched manifests: no snapshot of a half-parked
    // node (each holds every manifest as it is), and the daemon settles
    std::thread::sleep(Duration::from_secs(7));
    let taken = said().matches("snapshot taken").count();
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(node.state().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.extension().is_none())
        .collect();
    snapshots.sort();
    assert!(snapshots.len() >= 2, "{snapshots:?}: {}", said());
    for snapshot in &snapshots {
        for (manifest, bytes) in before
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "yaml"))
        {
            let copy = snapshot.join(manifest.strip_prefix(node.dir()).unwrap());
            assert_eq!(
                std::fs::read(&copy).ok().as_ref(),
                Some(bytes),
                "{}",
                copy.display()
            );
        }
    }
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        said().matches("snapshot taken").count(),
        taken,
        "{}",
        said()
    );

    // an operator re-issues front-proxy-client by hand for 20 days: seen within seconds
    let pki = node.dir().join("pki");
    let csr = node.tmp.path().join("fp.csr");
    let (ok, text) = common::openssl(&[
        "req",
        "-new",
        "-key",
        pki.join("front-proxy-client.key").to_str().unwrap(),
        "-subj",
        "/CN=front-proxy-client",
        "-out",
        csr.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let fresh = node.tmp.path().join("fp.crt");
    let (ok, text) = common::openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        pki.join("front-proxy-ca.crt").to_str().unwrap(),
        "-CAkey",
        pki.join("front-proxy-ca.key").to_str().unwrap(),
        "-days",
        "20",
        "-out",
        fresh.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let changed = Instant::now();
    std::fs::rename(&fresh, pki.join("front-proxy-client.crt")).unwrap();
    notify.wait_for("the new status", Duration::from_secs(15), |m| {
        m.contains("warning: front-proxy-client")
    });
    assert!(
        changed.elapsed() < Duration::from_secs(10),
        "{:?}",
        changed.elapsed()
    );
    daemon.wait_said(
        "front-proxy-client expires in 19 days",
        Duration::from_secs(5),
    );
}

#[test]
fn the_daemon_finishes_a_restart_left_pending_once_the_runtime_answers() {
    let Some(node) = running_node("dpending", START_60, |_| {}) else {
        return;
    };
    let out = node.run(&["renew", "all", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let new_api = serial_of(&node.pki("apiserver.crt"));
    assert_ne!(
        node.api_serial(),
        Some(new_api.clone()),
        "not restarted yet"
    );
    let mut notify = common::NotifySocket::bind(node.tmp.path());
    let daemon = common::Daemon::start(
        node.command(&[], &[]),
        &notify,
        node.tmp.path().join("daemon.log"),
    );
    let said = || daemon.said();
    let first = notify.wait_for("a status", Duration::from_secs(30), |m| {
        m.contains("STATUS=next window")
    });
    assert!(
        first.contains("restart pending: etcd, kube-apiserver"),
        "{first}"
    );
    notify.wait_for("the pending restart done", Duration::from_secs(120), |m| {
        m.contains("STATUS=next window") && !m.contains("restart pending")
    });
    assert_eq!(node.api_serial(), Some(new_api), "{}", said());
    assert!(
        said().contains("retrying the pending restart"),
        "{}",
        said()
    );
    assert!(
        said().contains("still runs older certificates"),
        "alerted while pending: {}",
        said()
    );
    let (code, report) = check_control_plane(&node);
    assert!(!report.contains("restart pending"), "{report}");
    assert_ne!(code, 2, "{report}");
}

/// Issue 18, on real containerd: the CAs end in 5 days, the leaves in 3. The daemon, looked at
/// hour after hour and a day later (time travel: each start is one look at the node, on a clock
/// `--now` moves on, its memory kept in the state dir), renews the leaves once — up to the
/// CAs' end, as openssl reads them — and restarts the control plane once. From then on they
/// are capped: no renewal, no restart (ctr sees the same containers, openssl the same served
/// serial), no critical alert of their own, the CA's capping alert and `STATUS=` instead.
#[test]
fn the_daemon_renews_leaves_its_ca_caps_once_and_restarts_once() {
    let Some(socket) = containerd() else {
        return;
    };
    let node = start_node_of(
        socket,
        "capped",
        START_60,
        |s| s.ca_not_after = s.leaf_not_after + time::Duration::days(2),
        |_| {},
    );
    // every look but the day-later one at or before the real clock (the runtime's peers judge
    // what is served by it)
    let start = common::now() - time::Duration::hours(5);
    let looks = [0, 1, 2, 3, 4, 25].map(|h| start + time::Duration::hours(h));
    let mut logs = Vec::new();
    let mut after_first = None;
    for (i, at) in looks.iter().enumerate() {
        let dir = node.tmp.path().join(format!("look-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut notify = common::NotifySocket::bind(&dir);
        let mut daemon = common::Daemon::start(
            node.command_at(*at, &[], &[]),
            &notify,
            dir.join("daemon.log"),
        );
        let is_status = |m: &str, prefix: &str| m.lines().any(|l| l.starts_with(prefix));
        notify.wait_for("READY=1", Duration::from_secs(60), |m| {
            m.lines().any(|l| l == "READY=1")
        });
        // after READY=1, the first STATUS= that is not "working" ends the look (and its job)
        let status = notify.wait_for("the look done", Duration::from_secs(240), |m| {
            is_status(m, "STATUS=") && !is_status(m, "STATUS=working")
        });
        daemon.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "still running after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let said = daemon.said();
        if i > 0 {
            assert!(
                status.contains(
                    "CAPPED: 11 certificate(s) end with their CA (ca, etcd-ca, front-proxy-ca)"
                ),
                "look {i}: {status}"
            );
            assert!(!said.contains("apiserver expires in"), "look {i}: {said}");
        }
        let state = (
            serial_of(&node.pki("apiserver.crt")),
            node.running_id("kube-apiserver"),
            node.running_id("etcd"),
        );
        match &after_first {
            None => after_first = Some(state),
            Some(first) => assert_eq!(&state, first, "look {i} changed the node: {said}"),
        }
        logs.push(said);
    }
    let all = logs.join("\n");
    let count = |what: &str| all.matches(what).count();
    assert_eq!(count("EMERGENCY renewal"), 1, "{all}");
    assert_eq!(count("apiserver renewed until"), 1, "{all}");
    assert_eq!(count("etcd-server renewed until"), 1, "{all}");
    for component in COMPONENTS {
        assert_eq!(
            count(&format!("{component} restarted and healthy")),
            1,
            "{component}: {all}"
        );
    }
    assert_eq!(
        common::openssl_date(&node.pki("apiserver.crt"), "-enddate"),
        common::openssl_date(&node.pki("ca.crt"), "-enddate"),
        "renewed up to the CA's end"
    );
    assert_eq!(
        node.api_serial(),
        Some(serial_of(&node.pki("apiserver.crt")))
    );
    // the CA said it, once as news and a day later as a reminder
    assert!(
        logs[0].contains("CA ca ends on") && logs[0].contains("caps 6 certificate(s)"),
        "{}",
        logs[0]
    );
    assert!(
        logs[5].contains("CA ca ends on") && logs[5].contains("reminder"),
        "{}",
        logs[5]
    );
    assert!(
        logs[1..5].iter().all(|l| !l.contains("CA ca ends on")),
        "{all}"
    );
}

/// Settings for a restart run from a test through the library (poll 100 ms).
fn library_settings(node: &Node, start_timeout: Duration, settle: Duration) -> Settings {
    Settings {
        poll: Duration::from_millis(100),
        stop_timeout: Duration::from_secs(30),
        start_timeout,
        settle,
        node_name: Some(node.node_name.clone()),
    }
}

/// A tokio runtime and a CRI client of the node's containerd, for restarts run through the
/// library (the renew command does not hand the proofs their kubeconfigs yet).
fn runtime_client(node: &Node) -> (tokio::runtime::Runtime, RuntimeClient) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(RuntimeClient::connect(&node.socket))
        .unwrap()
        .with_request_timeout(restart::RUNTIME_REQUEST_TIMEOUT);
    (rt, client)
}

/// A restart of all four components of a generated node, judged by the new probes: the
/// controller-manager and the scheduler by `/healthz` on their secure ports — with a settle
/// period longer than the start timeout, so settling could never pass them — and the four
/// kubeconfigs `renew all` renews proven against the restarted API server.
#[test]
fn a_restart_of_all_four_is_proven_healthy_by_healthz_and_credential_proofs() {
    let Some(node) = running_node("proven", START_60, |_| {}) else {
        return;
    };
    let before = node.manifests_snapshot();
    let pods = StaticPods::read(&node.manifests()).unwrap();
    let (components, problems) = pods.kubeadm();
    assert!(problems.is_empty(), "{problems:?}");
    for (name, port) in [
        ("kube-controller-manager", node.controller_manager_port),
        ("kube-scheduler", node.scheduler_port),
    ] {
        let c = components.iter().find(|c| c.name == name).unwrap();
        assert_eq!(
            c.health,
            HealthCheck::Healthz(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        );
    }
    let kubeconfigs: Vec<PathBuf> = KUBECONFIGS.iter().map(|c| node.dir().join(c)).collect();
    let probes = TlsProbes::for_pki(&node.dir().join("pki")).proving(kubeconfigs, &pods);
    assert_eq!(
        probes.apiserver,
        [SocketAddr::from(([127, 0, 0, 1], node.spec.apiserver_port))]
    );
    let old: BTreeMap<&str, String> = COMPONENTS
        .iter()
        .map(|c| (*c, node.running_id(c).unwrap()))
        .collect();
    let (rt, client) = runtime_client(&node);
    let settings = library_settings(&node, Duration::from_secs(60), Duration::from_secs(3600));
    let started = Instant::now();
    let outcome = rt
        .block_on(restart::restart(
            &client,
            &probes,
            &components,
            &node.state(),
            &settings,
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", node.standin_log()));
    eprintln!(
        "restart of four, judged by their health endpoints and 4 credential proofs: {:?}",
        started.elapsed()
    );
    for line in &outcome.proven {
        eprintln!("  {line}");
    }
    assert_eq!(outcome.restarted.len(), 4);
    for r in &outcome.restarted {
        assert_ne!(
            old[r.name.as_str()],
            r.new_id,
            "{} kept its container",
            r.name
        );
        assert_eq!(node.running_id(&r.name).as_ref(), Some(&r.new_id), "ctr");
    }
    assert_eq!(outcome.proven.len(), 4, "{:?}", outcome.proven);
    for (line, conf) in outcome.proven.iter().zip(KUBECONFIGS) {
        assert!(
            line.contains(&format!("/{conf}: "))
                && line.contains(&format!(
                    "accepted by the local kube-apiserver at 127.0.0.1:{}",
                    node.spec.apiserver_port
                )),
            "{line}"
        );
    }
    assert!(healthz_ok(node.controller_manager_port));
    assert!(healthz_ok(node.scheduler_port));
    node.assert_manifests_back(&before, "");
}

/// Every file a renewal may touch: the pki dir and the kubeconfigs, with their bytes.
fn credentials_snapshot(node: &Node) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = common::snapshot(&node.dir().join("pki"));
    for conf in KUBECONFIGS {
        let file = node.dir().join(conf);
        let data = std::fs::read(&file).unwrap();
        files.insert(file, data);
    }
    files
}

/// The one backup dir a renewal made in the node's state dir since `known`.
fn new_backup(node: &Node, known: &BTreeSet<PathBuf>) -> PathBuf {
    let made: Vec<PathBuf> = std::fs::read_dir(node.state().join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !known.contains(p))
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    made[0].clone()
}

/// A renewed kubeconfig the API server refuses is caught by the credential proof and rolled
/// back, after a restart and without one.
///
/// The scenario: a CA rotation begun by hand in the wrong order (Kubernetes' "manual rotation of
/// CA certificates" has the new CA trusted by kube-apiserver's `--client-ca-file` first).
/// kube-apiserver reads its client CA from its own copy, `client-ca.crt`, as hardened setups
/// keep it apart from the CA that signs; the operator has put a new CA in front of the old one
/// in `ca.crt` and its key in `ca.key`, but not into `client-ca.crt`. Everything still works —
/// every certificate in use is signed by the old CA — until a renewal signs `admin.conf` and
/// `scheduler.conf` with the new key: the API server refuses them (the stand-in with a TLS
/// alert; the real one would answer 401, or 403 as system:anonymous), while the scheduler comes
/// back serving `/healthz` all the same. Only the proof sees it; the files must come back byte
/// for byte.
#[test]
fn a_kubeconfig_the_apiserver_refuses_is_caught_by_the_proof_and_rolled_back() {
    use kube_cert_renewer::node::proof::{prove_kubeconfig, prove_or_restore};
    let Some(node) = running_node(
        "refused",
        "restart_stop_timeout_secs = 30\nrestart_start_timeout_secs = 30\n",
        |dir| {
            std::fs::copy(dir.join("pki/ca.crt"), dir.join("pki/client-ca.crt")).unwrap();
            let manifest = dir.join("manifests/kube-apiserver.yaml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            let changed = text.replace(
                "- --client-ca-file=/etc/kubernetes/pki/ca.crt\n",
                "- --client-ca-file=/etc/kubernetes/pki/client-ca.crt\n",
            );
            assert_ne!(changed, text);
            std::fs::write(&manifest, changed).unwrap();
        },
    ) else {
        return;
    };
    let pki = node.dir().join("pki");
    let local = SocketAddr::from(([127, 0, 0, 1], node.spec.apiserver_port));
    // the rotation begins: a new CA in front of the old one, and its key
    let new_ca = node.tmp.path().join("new-ca");
    std::fs::create_dir_all(&new_ca).unwrap();
    let (ok, out) = common::openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kubernetes",
        "-days",
        "3650",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
        "-keyout",
        new_ca.join("ca.key").to_str().unwrap(),
        "-out",
        new_ca.join("ca.crt").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let mut bundle = std::fs::read(new_ca.join("ca.crt")).unwrap();
    bundle.extend(std::fs::read(pki.join("ca.crt")).unwrap());
    std::fs::write(pki.join("ca.crt"), bundle).unwrap();
    std::fs::copy(new_ca.join("ca.key"), pki.join("ca.key")).unwrap();
    // still working: the kubeconfigs are the old CA's
    for conf in KUBECONFIGS {
        prove_kubeconfig(
            &node.dir().join(conf),
            &pki,
            &[local],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("before the renewal: {e}"));
    }
    let before = credentials_snapshot(&node);
    let manifests_before = node.manifests_snapshot();

    // 1. scheduler.conf and admin.conf renewed; the scheduler restarted, then proven
    let out = node.run(&["renew", "scheduler.conf", "admin.conf", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let backup = new_backup(&node, &BTreeSet::new());
    assert_ne!(credentials_snapshot(&node), before, "nothing was renewed");
    let pods = StaticPods::read(&node.manifests()).unwrap();
    let components =
        restart::named_components(&node.manifests(), &["kube-scheduler".to_string()]).unwrap();
    let renewed = vec![
        node.dir().join("scheduler.conf"),
        node.dir().join("admin.conf"),
    ];
    let probes = TlsProbes::for_pki(&pki).proving(renewed, &pods);
    let scheduler = node.running_id("kube-scheduler").unwrap();
    let (rt, client) = runtime_client(&node);
    let settings = library_settings(&node, Duration::from_secs(30), Duration::from_secs(2));
    let err = rt
        .block_on(restart::restart_with_rollback(
            &client,
            &probes,
            &components,
            &node.state(),
            &settings,
            Some(&backup),
        ))
        .unwrap_err();
    eprintln!("{err}");
    for conf in ["scheduler.conf", "admin.conf"] {
        assert!(
            err.contains(&node.dir().join(conf).display().to_string()),
            "names {conf}: {err}"
        );
    }
    assert!(err.contains("a renewed credential does not work"), "{err}");
    assert!(err.contains(&format!("kube-apiserver at {local}")), "{err}");
    assert!(err.contains("refused it in the TLS handshake"), "{err}");
    assert!(err.contains("previous certificates were restored"), "{err}");
    assert!(err.contains("running healthy again"), "{err}");
    assert_eq!(
        credentials_snapshot(&node),
        before,
        "not restored byte for byte"
    );
    node.assert_manifests_back(&manifests_before, &err);
    assert_ne!(node.running_id("kube-scheduler").unwrap(), scheduler);
    assert!(healthz_ok(node.scheduler_port));
    assert_eq!(
        rt.block_on(proof_now(&probes)),
        Ok(2),
        "the old ones are accepted"
    );

    // 2. admin.conf alone: nothing to restart, proven all the same, and put back
    let known: BTreeSet<PathBuf> = [backup].into();
    let out = node.run(&["renew", "admin.conf", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let backup = new_backup(&node, &known);
    let admin = TlsProbes::for_pki(&pki).proving(vec![node.dir().join("admin.conf")], &pods);
    let err = rt
        .block_on(prove_or_restore(
            &admin,
            &node.state(),
            Some(&backup),
            &settings,
        ))
        .unwrap_err();
    eprintln!("{err}");
    assert!(
        err.contains(&node.dir().join("admin.conf").display().to_string()),
        "{err}"
    );
    assert!(err.contains("previous certificates were restored"), "{err}");
    assert!(err.contains("the API server accepts them"), "{err}");
    assert_eq!(
        credentials_snapshot(&node),
        before,
        "not restored byte for byte"
    );
}

/// One proof attempt of `probes`: how many credentials were proven.
async fn proof_now(probes: &TlsProbes) -> Result<usize, String> {
    use kube_cert_renewer::node::restart::Probes;
    probes
        .prove_credentials()
        .map(|lines| lines.len())
        .map_err(|e| e.to_string())
}

/// `renew all` with the default settings on a healthy node whose four components all have a
/// health endpoint: how long the whole run takes, printed (machines vary too much to assert it).
#[test]
fn renew_all_with_default_settings_on_a_healthy_node() {
    let Some(node) = running_node("timed", "", |_| {}) else {
        return;
    };
    std::fs::write(node.config(), "# the defaults\n").unwrap();
    let old_api = serial_of(&node.pki("apiserver.crt"));
    let started = Instant::now();
    let out = node.run(&["renew", "all"]);
    let took = started.elapsed();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}\n{}", node.standin_log());
    eprintln!("renew all + restart of 4 with the default settings: {took:?}\n{log}");
    let new_api = serial_of(&node.pki("apiserver.crt"));
    assert_ne!(new_api, old_api);
    assert_eq!(node.api_serial(), Some(new_api));
    assert!(healthz_ok(node.controller_manager_port));
    assert!(healthz_ok(node.scheduler_port));
}
