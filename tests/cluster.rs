//! Three control-plane nodes of one cluster on one real containerd, each with its own kubelet
//! stand-in, state dir and config, a real 3-member etcd cluster among them, and an in-process
//! fake of the cluster API's Lease endpoints (over HTTPS, with the cluster's CA). All three are
//! renewed at the same instant; the test watches the runtime itself, every 100 ms, and asserts
//! that at no sample were two nodes' control planes down together, and that etcd kept a
//! majority of its members serving throughout.
//!
//! Also here: the rules for an API that does not answer (an expired API server certificate
//! proceeds, a valid one waits and gives up with the restart pending).

mod common;

use common::standin_node::{containerd, text};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_cert_renewer::demo::fake_api::{self, LeaseStore};
use kube_cert_renewer::demo::nodegen::{self, GeneratedCa, LeafTemplate, NodeSpec};
use kube_cert_renewer::demo::standin;
use kube_cert_renewer::node::health::{self, ClientCert};
use kube_cert_renewer::node::restart::Runtime;

const COMPONENTS: [&str; 4] = [
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Where a test's nodes live.
fn cluster_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kcr-cluster.")
        .tempdir()
        .unwrap()
}

/// One control-plane node: its kubernetes dir, state, config, and its kubelet stand-in.
struct Node {
    name: String,
    root: PathBuf,
    spec: NodeSpec,
    standin: Option<standin::Running>,
}

impl Node {
    fn dir(&self) -> PathBuf {
        self.root.join("k")
    }
    fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    fn command(&self, socket: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"));
        c.args(["--config", self.config().to_str().unwrap()])
            .args(["--kubernetes-dir", self.dir().to_str().unwrap()])
            .args(["--state-dir", self.state().to_str().unwrap()])
            .arg(format!("--runtime-endpoint=unix://{}", socket.display()))
            .args(args);
        c
    }

    /// The last lines of every container log of this node (for failure messages).
    fn logs(&self) -> String {
        let mut out = String::new();
        for pod in std::fs::read_dir(self.root.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for container in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for log in std::fs::read_dir(container.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(8).collect();
                    out.push_str(&format!("--- {}\n", log.path().display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// etcd's client address on loopback.
    fn etcd_addr(&self) -> SocketAddr {
        common::local(self.spec.etcd_client_port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.standin.take() {
            let _ = s.stop();
        }
    }
}

/// Generates `n` nodes of one cluster under `root` (shared CAs, one etcd cluster), each with
/// free ports and a config pointing its Lease at `lease_url`; `extra` is appended to each
/// config.
fn make_cluster(
    root: &Path,
    n: usize,
    days_left: i64,
    lease_url: Option<&str>,
    extra: &str,
) -> Vec<Node> {
    let tag = std::process::id();
    let mut specs: Vec<NodeSpec> = (1..=n)
        .map(|i| {
            let mut spec = NodeSpec::new(common::now(), days_left);
            spec.node_name = format!("cp{i}-{tag}");
            spec.apiserver_port = common::free_port();
            spec.etcd_client_port = common::free_port();
            spec.etcd_peer_port = common::free_port();
            spec.controller_manager_port = common::free_port();
            spec.scheduler_port = common::free_port();
            spec
        })
        .collect();
    let initial: Vec<String> = specs.iter().map(NodeSpec::etcd_peer_entry).collect();
    let mut nodes = Vec::new();
    for (i, spec) in specs.iter_mut().enumerate() {
        let node_root = root.join(&spec.node_name);
        if n > 1 {
            spec.etcd_initial_cluster = Some(initial.join(","));
        }
        if i > 0 {
            spec.shared_cas_from = Some(root.join(nodes_first_name(&initial)).join("k"));
        }
        nodegen::generate(&node_root.join("k"), spec).unwrap();
        let mut config = format!(
            "restart_poll_ms = 100\nnode_name = \"{}\"\nlease_duration_secs = 3\n\
             lease_settle_secs = 1\n{extra}",
            spec.node_name
        );
        if let Some(url) = lease_url {
            let lease_conf = node_root.join("lease.conf");
            let admin = std::fs::read_to_string(node_root.join("k/admin.conf")).unwrap();
            let server_line = admin
                .lines()
                .find(|l| l.trim_start().starts_with("server:"))
                .unwrap()
                .to_string();
            std::fs::write(
                &lease_conf,
                admin.replace(&server_line, &format!("    server: {url}")),
            )
            .unwrap();
            config.push_str(&format!(
                "lease_kubeconfig = \"{}\"\n",
                lease_conf.display()
            ));
        }
        std::fs::write(node_root.join("config.toml"), config).unwrap();
        nodes.push(Node {
            name: spec.node_name.clone(),
            root: node_root,
            spec: spec.clone(),
            standin: None,
        });
    }
    nodes
}

/// The first node's name, from the `--initial-cluster` entries (`name=url`).
fn nodes_first_name(initial: &[String]) -> String {
    initial[0].split('=').next().unwrap().to_string()
}

fn start_standins(nodes: &mut [Node], socket: &Path) {
    for node in nodes.iter_mut() {
        let mut options = standin::Options::new(node.dir().join("manifests"), socket, &node.name);
        options.log_dir = Some(node.root.join("logs"));
        node.standin = Some(standin::spawn(options).unwrap());
    }
}

/// The runtime as the test sees it: a CRI client with the tokio runtime its channel lives on.
struct Cri {
    rt: tokio::runtime::Runtime,
    client: kube_cert_renewer::node::cri::RuntimeClient,
}

fn connect(socket: &Path) -> Cri {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(kube_cert_renewer::node::cri::RuntimeClient::connect(socket))
        .unwrap()
        .with_request_timeout(Duration::from_secs(5));
    Cri { rt, client }
}

/// Which nodes have at least one of the four components without a running container.
fn down_nodes(cri: &Cri, nodes: &[String]) -> Vec<String> {
    cri.rt.block_on(async {
        let mut listed = Vec::new();
        for c in COMPONENTS {
            let list = cri.client.containers("kube-system", c).await;
            listed.push((c, list.unwrap_or_else(|e| panic!("the runtime: {e}"))));
        }
        nodes
            .iter()
            .filter(|node| {
                !listed.iter().all(|(c, list)| {
                    list.iter()
                        .any(|x| x.running && x.pod_name == format!("{c}-{node}"))
                })
            })
            .cloned()
            .collect()
    })
}

/// GET `path` from the etcd member at `addr` with the healthcheck-client credentials of `pki`.
fn etcd_get(addr: SocketAddr, pki: &Path, path: &str) -> Option<health::Probe> {
    let etcd = pki.join("etcd");
    let cert = etcd.join("healthcheck-client.crt");
    let key = etcd.join("healthcheck-client.key");
    let client = Some(ClientCert {
        cert: &cert,
        key: &key,
    });
    let timeout = Duration::from_millis(800);
    health::https_get(addr, path, &etcd.join("ca.crt"), client, timeout).ok()
}

/// How many etcd members serve (answer `/version` over TLS with the node's credentials).
fn etcd_serving(nodes: &[(SocketAddr, PathBuf)]) -> usize {
    nodes
        .iter()
        .filter(|(addr, pki)| etcd_get(*addr, pki, "/version").is_some_and(|p| p.status == 200))
        .count()
}

/// Waits until every node's four components run and, when `etcd_serves`, every etcd member
/// answers healthy (a node with expired certificates has an etcd nobody can talk to).
fn wait_all_up(client: &Cri, nodes: &[Node], etcd_serves: bool) {
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let members: Vec<(SocketAddr, PathBuf)> = nodes
        .iter()
        .map(|n| (n.etcd_addr(), n.dir().join("pki")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let down = down_nodes(client, &names);
        if down.is_empty() && !etcd_serves {
            return;
        }
        if down.is_empty() && etcd_serving(&members) == nodes.len() {
            let healthy = members.iter().all(|(addr, pki)| {
                etcd_get(*addr, pki, "/health").is_some_and(|p| health::etcd_healthy(&p.body))
            });
            if healthy {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not come up: down {down:?}\n{}",
            nodes.iter().map(Node::logs).collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The fake API, served with a certificate of the cluster's CA (which the kubeconfigs trust).
fn serve_fake_api(first: &Node, store: LeaseStore) -> fake_api::Served {
    let pki = first.dir().join("pki");
    let ca = GeneratedCa::load(&pki, "ca").unwrap();
    let (cert, key) = nodegen::make_leaf(
        &LeafTemplate {
            cn: "kube-apiserver-fake".into(),
            org: None,
            sans: vec!["127.0.0.1".into()],
            server: true,
            client: false,
        },
        &ca,
        &first.spec,
    )
    .unwrap();
    fake_api::serve(
        store,
        "127.0.0.1:0".parse().unwrap(),
        cert.as_bytes(),
        key.as_bytes(),
    )
    .unwrap()
}

#[test]
fn three_nodes_renewed_in_one_window_never_restart_together_and_etcd_keeps_quorum() {
    let Some(socket) = containerd() else { return };
    if !common::have("etcd", "the three-node cluster test") {
        return;
    }
    let tmp = cluster_dir();
    let store = LeaseStore::new();
    // the nodes must exist before the API's certificate can be signed by their CA: make them,
    // then point their Lease at the API once it listens
    let mut nodes = make_cluster(tmp.path(), 3, 20, Some("https://127.0.0.1:1"), "");
    let served = serve_fake_api(&nodes[0], store.clone());
    for node in &nodes {
        let conf = node.root.join("lease.conf");
        let text = std::fs::read_to_string(&conf)
            .unwrap()
            .replace("https://127.0.0.1:1", &format!("https://{}", served.addr));
        std::fs::write(&conf, text).unwrap();
    }
    start_standins(&mut nodes, &socket);
    let client = connect(&socket);
    wait_all_up(&client, &nodes, true);

    // the watcher: every 100 ms, which nodes are down and how many etcd members serve
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let members: Vec<(SocketAddr, PathBuf)> = nodes
        .iter()
        .map(|n| (n.etcd_addr(), n.dir().join("pki")))
        .collect();
    let samples = Arc::new(Mutex::new(Vec::<(Instant, Vec<String>, usize)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (samples, stop, socket) = (samples.clone(), stop.clone(), socket.clone());
        std::thread::spawn(move || {
            let client = connect(&socket);
            while !stop.load(Ordering::SeqCst) {
                let down = down_nodes(&client, &names);
                let serving = etcd_serving(&members);
                samples
                    .lock()
                    .unwrap()
                    .push((Instant::now(), down, serving));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // a node that crashed holding the Lease left it behind: it must expire first; `check`
    // shows who holds it
    store.plant("crashed-node", 3);
    let holder = |node: &Node| {
        let out = node
            .command(&socket, &["check", "-o", "json"])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["restartLease"]["holderIdentity"].clone()
    };
    assert_eq!(holder(&nodes[1]), "crashed-node");
    let text_check = nodes[1].command(&socket, &["check"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&text_check.stdout)
            .contains("Restart Lease kube-system/kube-cert-renewer: held by crashed-node"),
        "{}",
        text(&text_check)
    );
    // one window: all three at once
    let started = Instant::now();
    let children: Vec<_> = nodes
        .iter()
        .map(|n| {
            n.command(&socket, &["renew", "all"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    for (node, out) in nodes.iter().zip(&outputs) {
        assert_eq!(out.status.code(), Some(0), "{}: {}", node.name, text(out));
    }
    println!("what the last node said:\n{}", text(&outputs[2]));

    // the runtime's timeline: never two nodes down in one sample; every node was seen down
    let samples = samples.lock().unwrap().clone();
    assert!(samples.len() > 20, "too few samples: {}", samples.len());
    let mut seen_down = BTreeSet::new();
    for (at, down, serving) in &samples {
        assert!(
            down.len() <= 1,
            "{:?} after the start, two nodes were down together: {down:?}",
            *at - started
        );
        assert!(
            *serving >= 2,
            "{:?} after the start, only {serving} etcd member(s) served",
            *at - started
        );
        seen_down.extend(down.iter().cloned());
    }
    let all: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(
        seen_down, all,
        "each node's restart was seen by the watcher"
    );

    // the Lease's own record: the crashed node's lease taken only after its duration, then
    // three holders, one after the other, each released, renewed while held
    let writes = store.writes();
    assert_eq!(writes[0].holder.as_deref(), Some("crashed-node"));
    let first_take = &writes[1];
    assert!(
        first_take.at - started >= Duration::from_secs(3),
        "the crashed node's Lease was taken {:?} after the start, before it expired",
        first_take.at - started
    );
    let mut holders = Vec::new();
    let mut current: Option<String> = None;
    for w in &writes[1..] {
        if let (Some(h), Some(new)) = (&current, &w.holder) {
            assert_eq!(h, new, "the Lease was taken from a live holder: {writes:?}");
        }
        if let Some(h) = &w.holder
            && current.is_none()
        {
            holders.push(h.clone());
        }
        current = w.holder.clone();
    }
    assert_eq!(current, None, "released at the end: {writes:?}");
    let distinct: BTreeSet<String> = holders.iter().cloned().collect();
    assert_eq!(distinct, all, "every node held the Lease: {holders:?}");
    assert!(
        writes.len() > 1 + 2 * nodes.len(),
        "no renewal while held (3 s leases, renewed every second): {writes:?}"
    );
    // every node found the crashed node's Lease first, waited, and said so
    let waited = outputs
        .iter()
        .filter(|o| {
            String::from_utf8_lossy(&o.stdout).contains("waiting for the restart Lease: held by")
        })
        .count();
    assert_eq!(waited, 3, "every node waited and said so");
    println!(
        "three nodes renewed and restarted one at a time in {took:?} ({} samples, {} Lease writes, \
         {} conflicts)",
        samples.len(),
        writes.len(),
        store.conflicts()
    );
    // and the cluster is whole again, the Lease free
    wait_all_up(&client, &nodes, true);
    assert_eq!(holder(&nodes[0]), serde_json::Value::Null);

    // one member down (its manifest moved away: its kubelet stops it): another node refuses
    // to restart its own etcd, says why, and touches nothing
    let third = &nodes[2];
    let manifest = third.dir().join("manifests/etcd.yaml");
    let aside = third.root.join("etcd.yaml.aside");
    std::fs::rename(&manifest, &aside).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while down_nodes(&client, std::slice::from_ref(&third.name)).is_empty() {
        assert!(Instant::now() < deadline, "the third etcd did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    // everything but etcd's data, which a running member keeps writing
    let files = |node: &Node| {
        let mut all = common::snapshot(&node.dir());
        all.retain(|p, _| !p.starts_with(node.dir().join("etcd-data")));
        all
    };
    let before = files(&nodes[0]);
    let out = nodes[0]
        .command(&socket, &["restart", "etcd"])
        .output()
        .unwrap();
    let said = text(&out);
    println!("the refusal:\n{said}");
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("refusing to restart etcd"), "{said}");
    assert!(
        said.contains(&third.name),
        "the unhealthy member is named: {said}"
    );
    assert!(said.contains("nothing was restarted"), "{said}");
    let after = files(&nodes[0]);
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    assert!(changed.is_empty(), "nothing changed, but: {changed:?}");
    assert!(
        down_nodes(&client, &[nodes[0].name.clone()]).is_empty(),
        "its etcd kept running"
    );
    std::fs::rename(&aside, &manifest).unwrap();
    wait_all_up(&client, &nodes, true);
}

/// The API does not answer (nothing listens at the Lease's server) on a node that says it has
/// three control-plane nodes: with its API server certificate expired it restarts anyway
/// (nothing left to protect), and says so.
#[test]
fn api_down_and_own_apiserver_certificate_expired_restarts_without_the_lease() {
    let Some(socket) = containerd() else { return };
    if !common::have("etcd", "the API-down test") {
        return;
    }
    let tmp = cluster_dir();
    let dead = format!("https://127.0.0.1:{}", common::free_port());
    let mut nodes = make_cluster(
        tmp.path(),
        1,
        -3,
        Some(&dead),
        "control_plane_nodes = 3\nlease_wait_secs = 120\n",
    );
    start_standins(&mut nodes, &socket);
    let client = connect(&socket);
    wait_all_up(&client, &nodes, false);
    let started = Instant::now();
    let out = nodes[0]
        .command(&socket, &["renew", "all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("restarting without the Lease")
            && stdout.contains("kube-apiserver certificate has expired"),
        "{}",
        text(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "it did not wait for the Lease"
    );
}

/// The same API down, but the node's certificates are valid and it is one of three: it waits
/// (saying so), gives up after lease_wait_secs, restarts nothing and leaves the restart pending.
#[test]
fn api_down_with_valid_certificates_waits_then_leaves_the_restart_pending() {
    let Some(socket) = containerd() else { return };
    let tmp = cluster_dir();
    let dead = format!("https://127.0.0.1:{}", common::free_port());
    let nodes = make_cluster(
        tmp.path(),
        1,
        20,
        Some(&dead),
        "control_plane_nodes = 3\nlease_wait_secs = 3\n",
    );
    let started = Instant::now();
    let out = nodes[0]
        .command(&socket, &["renew", "all"])
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(started.elapsed() >= Duration::from_secs(3), "{all}");
    assert!(
        all.contains("waiting for the cluster API (restart Lease)"),
        "{all}"
    );
    assert!(all.contains("not restarted"), "{all}");
    assert!(all.contains("was not acquired within"), "{all}");
    // renewed on disk, nothing restarted: all four wait for their restart
    let check = nodes[0]
        .command(&socket, &["check", "-o", "json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let pending: BTreeSet<&str> = json["restartPending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["component"].as_str().unwrap())
        .collect();
    assert_eq!(pending, COMPONENTS.into_iter().collect(), "{json}");
}

/// The daemon, in an emergency renewal (certificates 3 days from expiry), with the API down
/// and three control-plane nodes: the wait for the Lease shows in `STATUS=` and in its events,
/// then the restart stays pending.
#[test]
fn the_daemon_shows_the_wait_for_the_lease_in_its_status_and_events() {
    let Some(socket) = containerd() else { return };
    let tmp = cluster_dir();
    let dead = format!("https://127.0.0.1:{}", common::free_port());
    let nodes = make_cluster(
        tmp.path(),
        1,
        3,
        Some(&dead),
        "control_plane_nodes = 3\nlease_wait_secs = 4\n",
    );
    let mut notify = common::NotifySocket::bind(tmp.path());
    let daemon = common::Daemon::start(
        nodes[0].command(&socket, &[]),
        &notify,
        tmp.path().join("daemon.log"),
    );
    notify.wait_for("the wait in STATUS=", Duration::from_secs(60), |m| {
        m.lines()
            .any(|l| l.starts_with("STATUS=waiting for the cluster API (restart Lease)"))
    });
    daemon.wait_said("waits for the restart Lease", Duration::from_secs(10));
    daemon.wait_said("was not acquired within 4s", Duration::from_secs(30));
    daemon.signal("-TERM");
    let pending = std::fs::read_to_string(nodes[0].state().join("restart-pending.json")).unwrap();
    assert!(pending.contains("kube-apiserver"), "{pending}");
}
