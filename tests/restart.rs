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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use kube_cert_renewer::demo::nodegen::{self, NodeSpec};
use kube_cert_renewer::node::cri::RuntimeClient;
use kube_cert_renewer::node::restart::{self, HealthCheck, Settings, StaticPods, TlsProbes};

/// The private containerd's socket, or None (loud) when the environment has none.
fn containerd() -> Option<PathBuf> {
    match std::env::var_os("KCR_CONTAINERD_SOCKET") {
        Some(s) if Path::new(&s).exists() => Some(PathBuf::from(s)),
        _ => {
            let msg = "KCR_CONTAINERD_SOCKET is not set to a running containerd's socket: the \
                       restart tests on real containerd cannot run (start one with \
                       `bash tests/support/containerd-env.sh start /tmp/kcr-c` and export \
                       KCR_CONTAINERD_SOCKET=/tmp/kcr-c/containerd.sock)";
            common::cannot_run(msg);
            None
        }
    }
}

/// A generated node, its state dir and config, and the stand-in running its pods.
struct Node {
    tmp: tempfile::TempDir,
    socket: PathBuf,
    node_name: String,
    spec: NodeSpec,
    /// Where kube-apiserver listens: its manifest's --bind-address, else 127.0.0.1.
    api_host: String,
    /// The secure ports of kube-controller-manager and kube-scheduler (their `/healthz`).
    controller_manager_port: u16,
    scheduler_port: u16,
    standin: Option<Child>,
}

impl Node {
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("k")
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn manifests(&self) -> PathBuf {
        self.dir().join("manifests")
    }
    fn config(&self) -> PathBuf {
        self.tmp.path().join("config.toml")
    }
    fn pki(&self, f: &str) -> PathBuf {
        self.dir().join("pki").join(f)
    }

    /// Runs the product against this node (with its config and the runtime endpoint).
    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"));
        c.args(["--config", self.config().to_str().unwrap()])
            .args(["--kubernetes-dir", self.dir().to_str().unwrap()])
            .args(["--state-dir", self.state().to_str().unwrap()])
            .arg(format!(
                "--runtime-endpoint=unix://{}",
                self.socket.display()
            ))
            .args([
                "--now",
                &common::now()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
            ])
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn start_standin(&mut self) {
        let log = std::fs::File::create(self.tmp.path().join("standin.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"))
            .arg(format!(
                "--runtime-endpoint=unix://{}",
                self.socket.display()
            ))
            .arg("kubelet-standin")
            .args(["--manifests-dir", self.manifests().to_str().unwrap()])
            .args(["--node-name", &self.node_name])
            .args(["--log-dir", self.tmp.path().join("logs").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.standin = Some(child);
    }

    fn standin_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("standin.log")).unwrap_or_default()
    }

    /// Every log file the runtime wrote for a component's containers (for failure messages).
    fn container_logs(&self, component: &str) -> String {
        let mut out = String::new();
        let logs = self.tmp.path().join("logs");
        let Ok(pods) = std::fs::read_dir(&logs) else {
            return out;
        };
        for pod in pods.flatten() {
            let dir = pod.path().join(component);
            for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", f.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The serial kube-apiserver serves, read by openssl.
    fn api_serial(&self) -> Option<String> {
        served_serial_at(&format!("{}:{}", self.api_host, self.spec.apiserver_port))
    }

    fn pod(&self, component: &str) -> String {
        format!("{component}-{}", self.node_name)
    }

    /// (container id, running) of a component's containers, from `ctr`.
    fn containers(&self, component: &str) -> BTreeMap<String, bool> {
        let sock = self.socket.to_str().unwrap();
        let list = ctr(
            sock,
            &[
                "containers",
                "ls",
                "-q",
                // one filter, comma-joined: separate filters would be OR-ed (and match the
                // pod's sandbox too)
                &format!(
                    "labels.\"io.kubernetes.pod.name\"=={},labels.\"io.kubernetes.container.name\"=={component}",
                    self.pod(component)
                ),
            ],
        );
        let tasks = ctr(sock, &["tasks", "ls"]);
        let running: BTreeSet<&str> = tasks
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(2) == Some("RUNNING"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        list.lines()
            .map(|id| (id.to_string(), running.contains(id)))
            .collect()
    }

    fn running_id(&self, component: &str) -> Option<String> {
        self.containers(component)
            .into_iter()
            .find(|(_, r)| *r)
            .map(|(id, _)| id)
    }

    /// Waits until every component runs and kube-apiserver, etcd, the controller-manager and the
    /// scheduler answer.
    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all_running = COMPONENTS.iter().all(|c| self.running_id(c).is_some());
            if all_running
                && self.api_serial().is_some()
                && self.etcd_healthy()
                && self.serves_healthz("kube-controller-manager", self.controller_manager_port)
                && self.serves_healthz("kube-scheduler", self.scheduler_port)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the stand-in did not bring the node up: {}",
                self.standin_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether `component` answers `/healthz` on `port`, or runs a test's own command instead
    /// (which serves nothing).
    fn serves_healthz(&self, component: &str, port: u16) -> bool {
        let manifest = self.manifests().join(format!("{component}.yaml"));
        let own_command = std::fs::read_to_string(manifest)
            .is_ok_and(|t| t.contains(kube_cert_renewer::demo::standin::COMMAND_ANNOTATION));
        own_command || healthz_ok(port)
    }

    /// `etcdctl endpoint health` with the node's healthcheck-client credentials.
    fn etcd_healthy(&self) -> bool {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!(
                "--endpoints=https://127.0.0.1:{}",
                self.spec.etcd_client_port
            ))
            .arg(format!("--cacert={}", self.pki("etcd/ca.crt").display()))
            .arg(format!(
                "--cert={}",
                self.pki("etcd/healthcheck-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                self.pki("etcd/healthcheck-client.key").display()
            ))
            .args([
                "--dial-timeout=2s",
                "--command-timeout=3s",
                "endpoint",
                "health",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs the product with `args`, calls `interrupt` with its pid as soon as a manifest is
    /// parked, and returns how it ended and its stderr.
    fn restart_interrupted_pid(
        &self,
        args: &[&str],
        interrupt: impl FnOnce(&str),
    ) -> (std::process::ExitStatus, String) {
        let mut run = self
            .command(args, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.parked().is_empty() {
            assert!(Instant::now() < deadline, "nothing was parked");
            std::thread::sleep(Duration::from_millis(5));
        }
        interrupt(&run.id().to_string());
        let status = run.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status, err)
    }

    fn manifests_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        common::snapshot(&self.manifests())
    }

    /// Every manifest is back byte for byte and nothing is left parked.
    fn assert_manifests_back(&self, before: &BTreeMap<PathBuf, Vec<u8>>, context: &str) {
        assert_eq!(
            &self.manifests_snapshot(),
            before,
            "manifests not back byte for byte {context}"
        );
        assert!(
            self.parked().is_empty(),
            "still parked: {:?}",
            self.parked()
        );
    }

    fn parked(&self) -> Vec<PathBuf> {
        let dir = self.dir().join(".kube-cert-renewer-parked");
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.standin.take() {
            // SIGTERM: the stand-in removes every pod it created
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const COMPONENTS: [&str; 4] = [
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Sends a signal (`-TERM`, `-KILL`) to a pid.
fn signal(pid: &str, which: &str) {
    assert!(
        Command::new("kill")
            .args([which, pid])
            .status()
            .unwrap()
            .success()
    );
}

fn ctr(sock: &str, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .args(["-a", sock, "-n", "k8s.io"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The serial (lower-case hex) of the certificate served on 127.0.0.1:port, read by openssl.
fn served_serial(port: u16) -> Option<String> {
    served_serial_at(&format!("127.0.0.1:{port}"))
}

/// The serial (lower-case hex) of the certificate served at `address` (host:port).
fn served_serial_at(address: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {address} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let serial = text.trim().strip_prefix("serial=")?;
    Some(serial.to_ascii_lowercase())
}

/// Whether `/healthz` on 127.0.0.1:`port` answers `200` with `ok`, asked by `openssl
/// s_client` (an oracle apart from the product's client).
fn healthz_ok(port: u16) -> bool {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | \
             timeout 5 openssl s_client -connect 127.0.0.1:{port} -quiet -ign_eof 2>/dev/null"
        ))
        .output();
    let Ok(out) = out else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    text.starts_with("HTTP/1.0 200") && text.trim_end().ends_with("\nok")
}

fn serial_of(cert: &Path) -> String {
    let (ok, text) = common::openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"]);
    assert!(ok, "{text}");
    text.trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// A node whose leaves expire in 3 days, its pods running under the stand-in on the
/// environment's containerd (None, loudly, when there is none).
fn running_node(tag: &str, config_extra: &str, adjust: impl FnOnce(&Path)) -> Option<Node> {
    Some(start_node(containerd()?, tag, config_extra, adjust))
}

/// A node on the containerd at `socket`: generated with free ports and a unique node name,
/// `adjust`ed, then run by the stand-in until every component is up.
fn start_node(socket: PathBuf, tag: &str, config_extra: &str, adjust: impl FnOnce(&Path)) -> Node {
    let tmp = tempfile::Builder::new()
        .prefix("kcr-restart.")
        .tempdir()
        .unwrap();
    let node_name = format!("{tag}-{}", std::process::id());
    let mut spec = NodeSpec::new(common::now(), 3);
    spec.node_name = node_name.clone();
    spec.apiserver_port = common::free_port();
    spec.etcd_client_port = common::free_port();
    spec.etcd_peer_port = common::free_port();
    // their own secure ports: the nodes of parallel tests share the host network (the demo's
    // node keeps 10257 and 10259)
    spec.controller_manager_port = common::free_port();
    spec.scheduler_port = common::free_port();
    let (controller_manager_port, scheduler_port) =
        (spec.controller_manager_port, spec.scheduler_port);
    let dir = tmp.path().join("k");
    nodegen::generate(&dir, &spec).unwrap();
    adjust(&dir);
    std::fs::write(
        tmp.path().join("config.toml"),
        // one control-plane node: no other API server to keep up, the restart Lease is not needed
        format!(
            "restart_poll_ms = 100\nrestart_settle_secs = 2\ncontrol_plane_nodes = 1\n{config_extra}"
        ),
    )
    .unwrap();
    let api_host = std::fs::read_to_string(dir.join("manifests/kube-apiserver.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("- --bind-address=")
                .map(str::to_string)
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    let mut node = Node {
        tmp,
        socket,
        node_name,
        spec,
        api_host,
        controller_manager_port,
        scheduler_port,
        standin: None,
    };
    node.start_standin();
    node.wait_up();
    node
}

/// The kubeconfigs whose client certificates `renew all` renews and the proofs prove.
const KUBECONFIGS: [&str; 4] = [
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

/// The start timeout of the tests that expect success (generous: CI machines are slow).
const START_60: &str = "restart_stop_timeout_secs = 30\nrestart_start_timeout_secs = 60\n";

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

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
    let mut old_hash = String::new();
    let Some(node) = running_node(
        "broken",
        "restart_stop_timeout_secs = 30\nrestart_start_timeout_secs = 6\n",
        |dir| {
            let cert = dir.join("pki/apiserver.crt");
            let out = Command::new("sha256sum").arg(&cert).output().unwrap();
            old_hash = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            let manifest = dir.join("manifests/kube-apiserver.yaml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            let port = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("- --secure-port="))
                .unwrap()
                .to_string();
            let command = format!(
                "test \"$(/usr/bin/sha256sum < /etc/kubernetes/pki/apiserver.crt)\" = '{old_hash}  -' \
             || exit 1; exec /usr/bin/openssl s_server -accept {port} -cert \
             /etc/kubernetes/pki/apiserver.crt -key /etc/kubernetes/pki/apiserver.key -www"
            );
            let text = text.replacen(
                "  annotations:\n",
                &format!(
                    "  annotations:\n    kube-cert-renewer.test/command: {}\n",
                    serde_json::to_string(&command).unwrap()
                ),
                1,
            );
            std::fs::write(&manifest, text).unwrap();
        },
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
