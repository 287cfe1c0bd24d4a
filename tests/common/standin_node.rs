//! A generated kubeadm node whose static pods run on the private containerd under the kubelet
//! stand-in (a child process), with the oracles the restart and crash tests share: `ctr` for
//! containers, `openssl s_client` for served serials, the node's files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube_cert_renewer::demo::nodegen::{self, NodeSpec};

/// The private containerd's socket, or None (loud) when the environment has none.
pub fn containerd() -> Option<PathBuf> {
    match std::env::var_os("KCR_CONTAINERD_SOCKET") {
        Some(s) if Path::new(&s).exists() => Some(PathBuf::from(s)),
        _ => {
            let msg = "KCR_CONTAINERD_SOCKET is not set to a running containerd's socket: the \
                       restart tests on real containerd cannot run (start one with \
                       `bash tests/support/containerd-env.sh start /tmp/kcr-c` and export \
                       KCR_CONTAINERD_SOCKET=/tmp/kcr-c/containerd.sock)";
            super::cannot_run(msg);
            None
        }
    }
}

/// A generated node, its state dir and config, and the stand-in running its pods.
pub struct Node {
    pub tmp: tempfile::TempDir,
    pub socket: PathBuf,
    pub node_name: String,
    pub spec: NodeSpec,
    /// Where kube-apiserver listens: its manifest's --bind-address, else 127.0.0.1.
    pub api_host: String,
    /// The secure ports of kube-controller-manager and kube-scheduler (their `/healthz`).
    pub controller_manager_port: u16,
    pub scheduler_port: u16,
    pub standin: Option<Child>,
}

impl Node {
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("k")
    }
    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    pub fn manifests(&self) -> PathBuf {
        self.dir().join("manifests")
    }
    pub fn config(&self) -> PathBuf {
        self.tmp.path().join("config.toml")
    }
    pub fn pki(&self, f: &str) -> PathBuf {
        self.dir().join("pki").join(f)
    }

    /// Runs the product against this node (with its config and the runtime endpoint).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.command_at(super::now(), args, env)
    }

    /// [`Node::command`] on a clock of the test's (`--now`): time travel for the daemon.
    pub fn command_at(
        &self,
        now: time::OffsetDateTime,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Command {
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
                &now.format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
            ])
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    pub fn start_standin(&mut self) {
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

    pub fn standin_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("standin.log")).unwrap_or_default()
    }

    /// Every log file the runtime wrote for a component's containers (for failure messages).
    pub fn container_logs(&self, component: &str) -> String {
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
    pub fn api_serial(&self) -> Option<String> {
        served_serial_at(&format!("{}:{}", self.api_host, self.spec.apiserver_port))
    }

    pub fn pod(&self, component: &str) -> String {
        format!("{component}-{}", self.node_name)
    }

    /// (container id, running) of a component's containers, from `ctr`.
    pub fn containers(&self, component: &str) -> BTreeMap<String, bool> {
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

    pub fn running_id(&self, component: &str) -> Option<String> {
        self.containers(component)
            .into_iter()
            .find(|(_, r)| *r)
            .map(|(id, _)| id)
    }

    /// Waits until every component runs and kube-apiserver, etcd, the controller-manager and the
    /// scheduler answer.
    pub fn wait_up(&self) {
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
    pub fn serves_healthz(&self, component: &str, port: u16) -> bool {
        let manifest = self.manifests().join(format!("{component}.yaml"));
        let own_command = std::fs::read_to_string(manifest)
            .is_ok_and(|t| t.contains(kube_cert_renewer::demo::standin::COMMAND_ANNOTATION));
        own_command || healthz_ok(port)
    }

    /// `etcdctl endpoint health` with the node's healthcheck-client credentials.
    pub fn etcd_healthy(&self) -> bool {
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
    pub fn restart_interrupted_pid(
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

    pub fn manifests_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        super::snapshot(&self.manifests())
    }

    /// Every manifest is back byte for byte and nothing is left parked.
    pub fn assert_manifests_back(&self, before: &BTreeMap<PathBuf, Vec<u8>>, context: &str) {
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

    pub fn parked(&self) -> Vec<PathBuf> {
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

pub const COMPONENTS: [&str; 4] = [
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Sends a signal (`-TERM`, `-KILL`) to a pid.
pub fn signal(pid: &str, which: &str) {
    assert!(
        Command::new("kill")
            .args([which, pid])
            .status()
            .unwrap()
            .success()
    );
}

pub fn ctr(sock: &str, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .args(["-a", sock, "-n", "k8s.io"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The serial (lower-case hex) of the certificate served on 127.0.0.1:port, read by openssl.
pub fn served_serial(port: u16) -> Option<String> {
    served_serial_at(&format!("127.0.0.1:{port}"))
}

/// The serial (lower-case hex) of the certificate served at `address` (host:port).
pub fn served_serial_at(address: &str) -> Option<String> {
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
pub fn healthz_ok(port: u16) -> bool {
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

pub fn serial_of(cert: &Path) -> String {
    let (ok, text) = super::openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"]);
    assert!(ok, "{text}");
    text.trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// A node whose leaves expire in 3 days, its pods running under the stand-in on the
/// environment's containerd (None, loudly, when there is none).
pub fn running_node(tag: &str, config_extra: &str, adjust: impl FnOnce(&Path)) -> Option<Node> {
    Some(start_node(containerd()?, tag, config_extra, adjust))
}

/// A node on the containerd at `socket`: generated with free ports and a unique node name,
/// `adjust`ed, then run by the stand-in until every component is up.
pub fn start_node(
    socket: PathBuf,
    tag: &str,
    config_extra: &str,
    adjust: impl FnOnce(&Path),
) -> Node {
    start_node_of(socket, tag, config_extra, |_| {}, adjust)
}

/// [`start_node`] with the node's spec `edit`ed first (its CAs' validity, …).
pub fn start_node_of(
    socket: PathBuf,
    tag: &str,
    config_extra: &str,
    edit: impl FnOnce(&mut NodeSpec),
    adjust: impl FnOnce(&Path),
) -> Node {
    let tmp = tempfile::Builder::new()
        .prefix("kcr-restart.")
        .tempdir()
        .unwrap();
    let node_name = format!("{tag}-{}", std::process::id());
    let mut spec = NodeSpec::new(super::now(), 3);
    spec.node_name = node_name.clone();
    spec.apiserver_port = super::free_port();
    spec.etcd_client_port = super::free_port();
    spec.etcd_peer_port = super::free_port();
    // their own secure ports: the nodes of parallel tests share the host network (the demo's
    // node keeps 10257 and 10259)
    spec.controller_manager_port = super::free_port();
    spec.scheduler_port = super::free_port();
    edit(&mut spec);
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
pub const KUBECONFIGS: [&str; 4] = [
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

/// The start timeout of the tests that expect success (generous: CI machines are slow).
pub const START_60: &str = "restart_stop_timeout_secs = 30\nrestart_start_timeout_secs = 60\n";

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Makes the node's kube-apiserver (its stand-in) refuse to start with any certificate but the
/// one it has now, so a renewal breaks it and only a restored backup brings it back.
pub fn apiserver_accepts_only_current_cert(dir: &Path) {
    let cert = dir.join("pki/apiserver.crt");
    let out = Command::new("sha256sum").arg(&cert).output().unwrap();
    let old_hash = String::from_utf8_lossy(&out.stdout)
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
}
