//! The kubelet stand-in against a real containerd: it must do for static pods what kubelet does
//! (labels, restarts, teardown), or the restart step proven against it proves nothing.
//!
//! Needs root, `containerd runc busybox-static openssl etcd-server etcd-client` and a private
//! containerd: `bash tests/support/containerd-env.sh start /tmp/kcr-c1`, then
//! `KCR_CONTAINERD_SOCKET=/tmp/kcr-c1/containerd.sock cargo test --test standin`, then `... stop`.
//! Without the variable every test fails (or, in a quick run, `KCR_QUICK=1`, skips loudly).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kube_cert_renewer::demo::nodegen::{self, NodeSpec};
use kube_cert_renewer::demo::standin::{
    self, CONFIG_HASH_ANNOTATION, CONFIG_SOURCE_ANNOTATION, CONTAINER_NAME_LABEL, Options,
    POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL, Running,
};
use kube_cert_renewer::node::cri::{
    Container, ContainerFilter, ContainerState, ListContainersRequest, ListPodSandboxRequest,
    NamespaceMode, NamespaceOption, PodSandbox, PodSandboxConfig, PodSandboxFilter,
    PodSandboxMetadata, PodSandboxState, RemovePodSandboxRequest, RunPodSandboxRequest,
    RuntimeClient, StopPodSandboxRequest, StringMap,
};
use time::OffsetDateTime;

const COMPONENTS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

/// The runtime socket; without one the tests cannot run (`common::cannot_run`).
fn socket() -> Option<PathBuf> {
    match std::env::var_os("KCR_CONTAINERD_SOCKET") {
        Some(s) if !s.is_empty() => Some(PathBuf::from(s)),
        _ => {
            common::cannot_run(
                "KCR_CONTAINERD_SOCKET is not set: the kubelet stand-in tests against a real \
                 containerd cannot run (bash tests/support/containerd-env.sh start /tmp/kcr-c1)",
            );
            None
        }
    }
}

/// A generated kubeadm node with its own ports and node name, so tests run in parallel on the
/// host network and in one runtime without seeing each other.
struct Node {
    dir: tempfile::TempDir,
    name: String,
    apiserver_port: u16,
    etcd_client_port: u16,
    /// The secure ports of kube-controller-manager and kube-scheduler.
    controller_manager_port: u16,
    scheduler_port: u16,
}

impl Node {
    fn new(tag: &str, keep: &[&str]) -> Node {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::Builder::new()
            .prefix("kcr-standin-")
            .tempdir_in("/tmp")
            .unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "{tag}-{}-{}-{:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos & 0xffff
        );
        // Free ports: bound together so the five differ, released just before use.
        let listeners: Vec<TcpListener> = (0..5)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let mut spec = NodeSpec::new(OffsetDateTime::now_utc(), 200);
        spec.node_name = name.clone();
        spec.apiserver_port = ports[0];
        spec.etcd_client_port = ports[1];
        spec.etcd_peer_port = ports[2];
        spec.controller_manager_port = ports[3];
        spec.scheduler_port = ports[4];
        nodegen::generate(dir.path(), &spec).unwrap();
        for component in COMPONENTS {
            if !keep.contains(&component) {
                std::fs::remove_file(dir.path().join(format!("manifests/{component}.yaml")))
                    .unwrap();
            }
        }
        Node {
            dir,
            name,
            apiserver_port: ports[0],
            etcd_client_port: ports[1],
            controller_manager_port: ports[3],
            scheduler_port: ports[4],
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn pod(&self, component: &str) -> String {
        standin::pod_name(component, &self.name)
    }

    fn options(&self, socket: &Path) -> Options {
        let mut options = Options::new(self.path("manifests"), socket, &self.name);
        options.log_dir = Some(self.path("logs"));
        options
    }

    /// Every container log the stand-in wrote, for a failing test's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![self.path("logs")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: String = text
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    out.push_str(&format!("--- {}\n{tail}\n", p.display()));
                }
            }
        }
        out
    }
}

async fn client(socket: &Path) -> RuntimeClient {
    RuntimeClient::connect(socket).await.unwrap()
}

async fn containers(client: &RuntimeClient, labels: &[(&str, &str)]) -> Vec<Container> {
    let label_selector: StringMap = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                label_selector,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .containers
}

/// The containers of one component of this node, selected the way the restart step selects
/// them (plus the pod name, which keeps parallel tests apart).
async fn component(client: &RuntimeClient, node: &Node, name: &str) -> Vec<Container> {
    let pod = node.pod(name);
    containers(
        client,
        &[
            (POD_NAMESPACE_LABEL, "kube-system"),
            (CONTAINER_NAME_LABEL, name),
            (POD_NAME_LABEL, &pod),
        ],
    )
    .await
}

fn running(list: &[Container]) -> Vec<&Container> {
    list.iter()
        .filter(|c| c.state() == ContainerState::Running)
        .collect()
}

async fn sandboxes(client: &RuntimeClient, labels: &[(&str, &str)]) -> Vec<PodSandbox> {
    let label_selector: StringMap = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    client
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .items
}

/// Waits until `check` returns `Some`, polling every 50 ms; panics with `what` and the node's
/// container logs after `timeout`.
async fn wait_for<T, F, Fut>(node: &Node, timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\ncontainer logs:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_running(client: &RuntimeClient, node: &Node, name: &str) -> Container {
    wait_for(
        node,
        Duration::from_secs(30),
        &format!("{name} RUNNING"),
        || async {
            running(&component(client, node, name).await)
                .first()
                .map(|c| (*c).clone())
        },
    )
    .await
}

fn openssl_serial(args: &[&str], stdin_file: Option<&Path>) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args(args).stderr(Stdio::null());
    match stdin_file {
        Some(f) => cmd.stdin(std::fs::File::open(f).ok()?),
        None => cmd.stdin(Stdio::null()),
    };
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && text.starts_with("serial=")).then_some(text)
}

/// The serial of the certificate the server on `port` presents (openssl as the oracle).
fn served_serial(port: u16) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = tempfile::tempdir().ok()?;
    let pem = dir.path().join("served.pem");
    std::fs::write(&pem, &out.stdout).ok()?;
    openssl_serial(&["x509", "-noout", "-serial"], Some(&pem))
}

fn file_serial(cert: &Path) -> String {
    openssl_serial(
        &["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()],
        None,
    )
    .unwrap()
}

async fn wait_serving(node: &Node, expected_serial: &str) {
    let port = node.apiserver_port;
    wait_for(
        node,
        Duration::from_secs(20),
        "kube-apiserver stand-in serving apiserver.crt",
        || async move { served_serial(port).filter(|s| s == expected_serial) },
    )
    .await;
}

/// Stops the stand-in (asserting it cleaned up without error).
fn stop(kubelet: Running) {
    let start = Instant::now();
    kubelet.stop().expect("stand-in shutdown");
    eprintln!("stand-in shutdown took {:?}", start.elapsed());
}

#[tokio::test]
async fn runs_a_generated_control_plane_with_kubelet_labels() {
    let Some(socket) = socket() else { return };
    let node = Node::new("all", &COMPONENTS);
    let kubelet = standin::spawn(node.options(&socket)).unwrap();
    let client = client(&socket).await;
    let start = Instant::now();
    for name in COMPONENTS {
        let c = wait_running(&client, &node, name).await;
        let pod = node.pod(name);
        let manifest = std::fs::read(node.path(&format!("manifests/{name}.yaml"))).unwrap();
        let uid = standin::pod_uid(&manifest, &node.name);
        let want: StringMap = [
            (CONTAINER_NAME_LABEL, name),
            (POD_NAME_LABEL, pod.as_str()),
            (POD_NAMESPACE_LABEL, "kube-system"),
            (POD_UID_LABEL, uid.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(c.labels, want, "container labels of {name}");
        assert_eq!(c.metadata.as_ref().unwrap().name, name);
        let sbx = sandboxes(&client, &[(POD_NAME_LABEL, &pod)]).await;
        assert_eq!(sbx.len(), 1, "{name}: one sandbox");
        let sandbox = &sbx[0];
        assert_eq!(sandbox.id, c.pod_sandbox_id);
        assert_eq!(sandbox.state(), PodSandboxState::Ready);
        let mut want_sandbox = want.clone();
        want_sandbox.remove(CONTAINER_NAME_LABEL);
        want_sandbox.insert("component".into(), name.into());
        want_sandbox.insert("tier".into(), "control-plane".into());
        assert_eq!(sandbox.labels, want_sandbox, "sandbox labels of {name}");
        assert_eq!(sandbox.annotations[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(sandbox.annotations[CONFIG_HASH_ANNOTATION], uid);
        let metadata = sandbox.metadata.as_ref().unwrap();
        assert_eq!(
            (metadata.name.as_str(), metadata.namespace.as_str()),
            (pod.as_str(), "kube-system")
        );
    }
    eprintln!("all four RUNNING after {:?}", start.elapsed());

    wait_serving(&node, &file_serial(&node.path("pki/apiserver.crt"))).await;
    let pki = |f: &str| node.path(&format!("pki/etcd/{f}")).display().to_string();
    let endpoint = format!("https://127.0.0.1:{}", node.etcd_client_port);
    wait_for(
        &node,
        Duration::from_secs(30),
        "etcd endpoint health",
        || {
            let args = [
                "--endpoints".to_owned(),
                endpoint.clone(),
                "--cacert".to_owned(),
                pki("ca.crt"),
                "--cert".to_owned(),
                pki("healthcheck-client.crt"),
                "--key".to_owned(),
                pki("healthcheck-client.key"),
                "--dial-timeout".to_owned(),
                "2s".to_owned(),
                "endpoint".to_owned(),
                "health".to_owned(),
            ];
            async move {
                let out = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(&args)
                    .output()
                    .ok()?;
                out.status.success().then_some(())
            }
        },
    )
    .await;
    eprintln!("apiserver and etcd serving after {:?}", start.elapsed());
    stop(kubelet);
}

#[tokio::test]
async fn parked_manifest_stops_its_pod_and_restored_one_starts_a_new_container() {
    let Some(socket) = socket() else { return };
    let node = Node::new("park", &["kube-apiserver", "kube-scheduler"]);
    let kubelet = standin::spawn(node.options(&socket)).unwrap();
    let client = client(&socket).await;
    let old = wait_running(&client, &node, "kube-apiserver").await;
    let scheduler = wait_running(&client, &node, "kube-scheduler").await;
    let serial = file_serial(&node.path("pki/apiserver.crt"));
    wait_serving(&node, &serial).await;

    let manifest = node.path("manifests/kube-apiserver.yaml");
    let parked = node.path("parked/kube-apiserver.yaml");
    std::fs::create_dir_all(parked.parent().unwrap()).unwrap();
    let pod = node.pod("kube-apiserver");
    let t0 = Instant::now();
    std::fs::rename(&manifest, &parked).unwrap();
    wait_for(
        &node,
        Duration::from_secs(15),
        "apiserver stopped",
        || async {
            running(&component(&client, &node, "kube-apiserver").await)
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let stopped = t0.elapsed();
    wait_for(
        &node,
        Duration::from_secs(15),
        "apiserver sandbox removed",
        || async {
            sandboxes(&client, &[(POD_NAME_LABEL, &pod)])
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let removed = t0.elapsed();
    assert!(
        served_serial(node.apiserver_port).is_none(),
        "nothing serves on the apiserver port once it is parked"
    );

    let t1 = Instant::now();
    std::fs::rename(&parked, &manifest).unwrap();
    let new = wait_running(&client, &node, "kube-apiserver").await;
    let restarted = t1.elapsed();
    assert_ne!(new.id, old.id, "a new container, not the old one");
    assert_ne!(new.pod_sandbox_id, old.pod_sandbox_id, "a new sandbox");
    wait_serving(&node, &serial).await;
    let serving = t1.elapsed();
    eprintln!(
        "park: no RUNNING container after {stopped:?}, sandbox removed after {removed:?}; \
         restore: RUNNING after {restarted:?}, serving TLS after {serving:?}"
    );
    let still = running(&component(&client, &node, "kube-scheduler").await)
        .iter()
        .map(|c| c.id.clone())
        .collect::<Vec<_>>();
    assert_eq!(still, vec![scheduler.id], "the other pod was left alone");
    stop(kubelet);
}

#[tokio::test]
async fn crashing_container_is_recreated_with_new_ids_and_old_ones_removed() {
    let Some(socket) = socket() else { return };
    let node = Node::new("crash", &["kube-apiserver"]);
    let manifest = node.path("manifests/kube-apiserver.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let faulty = text.replacen(
        "  annotations:\n",
        &format!(
            "  annotations:\n    {}: exit 1\n",
            standin::COMMAND_ANNOTATION
        ),
        1,
    );
    assert_ne!(
        faulty, text,
        "the generated manifest has an annotations block"
    );
    std::fs::write(&manifest, faulty).unwrap();
    let kubelet = standin::spawn(node.options(&socket)).unwrap();
    let client = client(&socket).await;

    let mut ids = BTreeSet::new();
    // id → (first, last) time it was seen RUNNING
    let mut running_spans: BTreeMap<String, (Instant, Instant)> = BTreeMap::new();
    let mut most_listed = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let list = component(&client, &node, "kube-apiserver").await;
        most_listed = most_listed.max(list.len());
        for c in &list {
            ids.insert(c.id.clone());
            if c.state() == ContainerState::Running {
                let now = Instant::now();
                running_spans.entry(c.id.clone()).or_insert((now, now)).1 = now;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "crash loop: {} distinct containers in 4 s, at most {most_listed} listed at once",
        ids.len()
    );
    assert!(ids.len() >= 2, "recreated: {ids:?}\n{}", node.logs());
    assert!(
        most_listed <= 2,
        "older exited containers are removed (the latest one is kept): {most_listed} listed"
    );
    for (id, (first, last)) in &running_spans {
        assert!(
            *last - *first < Duration::from_secs(1),
            "{id} stayed RUNNING for {:?}",
            *last - *first
        );
    }
    let attempts: BTreeSet<u32> = component(&client, &node, "kube-apiserver")
        .await
        .iter()
        .filter_map(|c| c.metadata.as_ref().map(|m| m.attempt))
        .collect();
    assert!(
        attempts.iter().any(|a| *a >= 1),
        "attempts count up: {attempts:?}"
    );
    stop(kubelet);
}

#[tokio::test]
async fn shutdown_removes_its_own_sandboxes_and_leaves_others_alone() {
    let Some(socket) = socket() else { return };
    let node = Node::new("shut", &["kube-apiserver", "kube-scheduler"]);
    let client = client(&socket).await;
    let foreign_name = format!("foreign-{}", node.name);
    let foreign = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: foreign_name.clone(),
                    uid: format!("uid-{}", node.name),
                    namespace: "kube-system".into(),
                    attempt: 0,
                }),
                labels: [(POD_NAME_LABEL.to_owned(), foreign_name.clone())].into(),
                linux: Some(kube_cert_renewer::node::cri::LinuxPodSandboxConfig {
                    security_context: Some(
                        kube_cert_renewer::node::cri::LinuxSandboxSecurityContext {
                            namespace_options: Some(NamespaceOption {
                                network: NamespaceMode::Node as i32,
                                ..Default::default()
                            }),
                            privileged: false,
                        },
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;

    let kubelet = standin::spawn(node.options(&socket)).unwrap();
    wait_running(&client, &node, "kube-apiserver").await;
    wait_running(&client, &node, "kube-scheduler").await;
    stop(kubelet);

    for name in ["kube-apiserver", "kube-scheduler"] {
        let pod = node.pod(name);
        assert!(
            sandboxes(&client, &[(POD_NAME_LABEL, &pod)])
                .await
                .is_empty(),
            "{pod}: sandbox removed at shutdown although its manifest is still there"
        );
        assert!(
            containers(&client, &[(POD_NAME_LABEL, &pod)])
                .await
                .is_empty(),
            "{pod}: containers removed"
        );
    }
    let left = sandboxes(&client, &[(POD_NAME_LABEL, &foreign_name)]).await;
    let still_there =
        left.len() == 1 && left[0].id == foreign && left[0].state() == PodSandboxState::Ready;
    // Clean up the foreign sandbox before asserting, so a failure leaves nothing behind.
    let _ = client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: foreign.clone(),
        })
        .await;
    let _ = client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: foreign.clone(),
        })
        .await;
    assert!(still_there, "the foreign sandbox was left alone: {left:?}");
}

#[tokio::test]
async fn pods_that_ignore_sigterm_are_stopped_concurrently() {
    let Some(socket) = socket() else { return };
    let node = Node::new("slow", &["kube-controller-manager", "kube-scheduler"]);
    for name in ["kube-controller-manager", "kube-scheduler"] {
        let manifest = node.path(&format!("manifests/{name}.yaml"));
        let text = std::fs::read_to_string(&manifest).unwrap();
        let stubborn = text.replacen(
            "  annotations:\n",
            &format!(
                "  annotations:\n    {}: \"trap '' TERM; while :; do sleep 1; done\"\n",
                standin::COMMAND_ANNOTATION
            ),
            1,
        );
        assert_ne!(stubborn, text);
        std::fs::write(&manifest, stubborn).unwrap();
    }
    let options = node.options(&socket);
    let grace = options.stop_grace;
    let kubelet = standin::spawn(options).unwrap();
    let client = client(&socket).await;
    wait_running(&client, &node, "kube-controller-manager").await;
    wait_running(&client, &node, "kube-scheduler").await;

    std::fs::create_dir_all(node.path("parked")).unwrap();
    let t0 = Instant::now();
    for name in ["kube-controller-manager", "kube-scheduler"] {
        std::fs::rename(
            node.path(&format!("manifests/{name}.yaml")),
            node.path(&format!("parked/{name}.yaml")),
        )
        .unwrap();
    }
    wait_for(&node, Duration::from_secs(15), "both stopped", || async {
        let kcm = running(&component(&client, &node, "kube-controller-manager").await).is_empty();
        let sched = running(&component(&client, &node, "kube-scheduler").await).is_empty();
        (kcm && sched).then_some(())
    })
    .await;
    let took = t0.elapsed();
    eprintln!("two SIGTERM-ignoring pods stopped in {took:?} (grace {grace:?})");
    assert!(took >= grace, "the grace period was honoured: {took:?}");
    assert!(
        took < grace * 2,
        "stops ran concurrently, not one after the other: {took:?}"
    );
    stop(kubelet);
}

/// What the component mapping relies on: host programs run inside the busybox image, the program
/// is not PID 1 (a PID-1 process ignores SIGTERM and every stop would take the whole grace
/// period), and a manifest's own mount below `/etc/ssl` is on top of the host `/etc/ssl` bind.
#[tokio::test]
async fn container_runs_host_programs_is_not_pid_1_and_keeps_nested_ssl_mounts() {
    let Some(socket) = socket() else { return };
    let node = Node::new("ssl", &[]);
    let certs = node.path("my-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("marker"), "x").unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  annotations:
    {}: "test $$ != 1 && test -f /etc/ssl/certs/marker && test -f /etc/ssl/openssl.cnf && /usr/bin/openssl version && exec sleep 2147483647"
  name: ssl-probe
  namespace: kube-system
spec:
  hostNetwork: true
  containers:
  - name: ssl-probe
    image: registry.k8s.io/pause:3.9
    volumeMounts:
    - mountPath: /etc/ssl/certs
      name: ca-certs
      readOnly: true
  volumes:
  - hostPath:
      path: {}
      type: DirectoryOrCreate
    name: ca-certs
"#,
        standin::COMMAND_ANNOTATION,
        certs.display()
    );
    std::fs::write(node.path("manifests/ssl-probe.yaml"), manifest).unwrap();
    let kubelet = standin::spawn(node.options(&socket)).unwrap();
    let client = client(&socket).await;
    let pod = node.pod("ssl-probe");
    let first = wait_running(&client, &node, "ssl-probe").await;
    // A failing test would exit at once and be recreated: the same container must stay up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = containers(&client, &[(POD_NAME_LABEL, &pod)]).await;
    let ids: Vec<(&str, ContainerState)> =
        list.iter().map(|c| (c.id.as_str(), c.state())).collect();
    assert_eq!(
        ids,
        vec![(first.id.as_str(), ContainerState::Running)],
        "{}",
        node.logs()
    );
    stop(kubelet);
}

/// GET `/healthz` on 127.0.0.1:`port` with the crate's client, trusting any server certificate
/// (the component makes its own at start): (status, body, served leaf).
fn healthz(port: u16) -> Result<(u16, String, Vec<u8>), String> {
    use kube_cert_renewer::node::health::{Request, Target, Trust, request};
    let target = Target::ip(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    request(
        &target,
        &Request::get("/healthz"),
        &Trust::AnyServer,
        None,
        Duration::from_secs(5),
    )
    .map(|p| (p.status, p.body, p.served_leaf_der))
}

/// The controller-manager and scheduler stand-ins answer `/healthz` like the real ones, where
/// the product's health check (from the same manifest) looks for them, each with a certificate
/// it made itself; a parked one stops and frees its port at once, and comes back with a new
/// certificate.
#[tokio::test]
async fn controller_manager_and_scheduler_serve_healthz_on_their_secure_ports() {
    use kube_cert_renewer::node::restart::{self, HealthCheck, Probes, TlsProbes};
    let Some(socket) = socket() else { return };
    let node = Node::new("healthz", &["kube-controller-manager", "kube-scheduler"]);
    let kubelet = standin::spawn(node.options(&socket)).unwrap();
    let client = client(&socket).await;
    let components = restart::all_components(&node.path("manifests")).unwrap();
    let probes = TlsProbes::for_pki(&node.path("pki"));
    let mut first_leaf = BTreeMap::new();
    for (name, port) in [
        ("kube-controller-manager", node.controller_manager_port),
        ("kube-scheduler", node.scheduler_port),
    ] {
        wait_running(&client, &node, name).await;
        let (status, body, leaf) = wait_for(
            &node,
            Duration::from_secs(20),
            &format!("{name} /healthz"),
            || async move { healthz(port).ok() },
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "ok"), "{name}");
        let facts = kube_cert_renewer::pki::cert::CertFacts::from_der(&leaf).unwrap();
        assert_eq!(facts.subject_cn.as_deref(), Some(name), "{name}");
        assert_eq!(facts.subject, facts.issuer, "{name}: self-signed");
        first_leaf.insert(name, leaf);
        // the product's own health check finds it from the manifest, and passes
        let component = components.iter().find(|c| c.name == name).unwrap();
        assert_eq!(
            component.health,
            HealthCheck::Healthz(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
        );
        probes.healthy(component).unwrap();
    }
    // nothing else is served from where healthz is: the key stays private
    let (status, body, _) = {
        use kube_cert_renewer::node::health::{Request, Target, Trust, request};
        let target = Target::ip(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            node.scheduler_port,
        )));
        let p = request(
            &target,
            &Request::get("/../tls/key.pem"),
            &Trust::AnyServer,
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        (p.status, p.body, ())
    };
    assert!(
        !body.contains("PRIVATE KEY"),
        "the key is served: {status} {body}"
    );

    // parked: the pod stops and its port is free for anyone to bind
    std::fs::create_dir_all(node.path("parked")).unwrap();
    let manifest = node.path("manifests/kube-scheduler.yaml");
    let parked = node.path("parked/kube-scheduler.yaml");
    let t0 = Instant::now();
    std::fs::rename(&manifest, &parked).unwrap();
    let port = node.scheduler_port;
    wait_for(
        &node,
        Duration::from_secs(15),
        "the scheduler stopped",
        || async {
            running(&component(&client, &node, "kube-scheduler").await)
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let stopped = t0.elapsed();
    // the process is gone with its container: the port can be bound at once
    wait_for(
        &node,
        Duration::from_secs(2),
        "the scheduler's port free",
        || async move { TcpListener::bind(("127.0.0.1", port)).ok().map(drop) },
    )
    .await;
    eprintln!(
        "parked scheduler: stopped after {stopped:?}, port free after {:?}",
        t0.elapsed()
    );
    assert!(healthz(port).is_err());
    let t1 = Instant::now();
    std::fs::rename(&parked, &manifest).unwrap();
    let (status, _, leaf) = wait_for(
        &node,
        Duration::from_secs(20),
        "the scheduler's /healthz again",
        || async move { healthz(port).ok() },
    )
    .await;
    eprintln!("restored scheduler: /healthz after {:?}", t1.elapsed());
    assert_eq!(status, 200);
    assert_ne!(
        leaf, first_leaf["kube-scheduler"],
        "a new process makes a new certificate"
    );
    stop(kubelet);
}

/// Replaces the client certificate and key of a kubeconfig with another one's (a line edit, as
/// a hand-made kubeconfig would be).
fn with_client_of(kubeconfig: &Path, other: &Path, out: &Path) {
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name}"))
            .to_string()
    };
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let theirs = std::fs::read_to_string(other).unwrap();
    let mut mixed = text.clone();
    for name in ["client-certificate-data:", "client-key-data:"] {
        mixed = mixed.replace(&field(&text, name), &field(&theirs, name));
    }
    assert_ne!(mixed, text);
    std::fs::write(out, mixed).unwrap();
}

/// The API server stand-in refuses a client certificate its `--client-ca-file` did not sign
/// (so a renewed kubeconfig the real one would refuse is refused here too), still answers
/// requests without one, and the credential proof tells the two apart.
#[tokio::test]
async fn the_apiserver_refuses_a_client_certificate_its_client_ca_did_not_sign() {
    use kube_cert_renewer::node::health::{
        Request, Target, Trust, refused_client_certificate, request,
    };
    use kube_cert_renewer::node::proof::{ProofError, prove_kubeconfig};
    let Some(socket) = socket() else { return };
    let node = Node::new("clientca", &["kube-apiserver"]);
    let other = Node::new("otherca", &[]);
    let kubelet = standin::spawn(node.options(&socket)).unwrap();
    let client = client(&socket).await;
    wait_running(&client, &node, "kube-apiserver").await;
    wait_serving(&node, &file_serial(&node.path("pki/apiserver.crt"))).await;
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], node.apiserver_port));
    let ca = std::fs::read(node.path("pki/ca.crt")).unwrap();
    let ask = || {
        request(
            &Target::ip(local),
            &Request::get("/api"),
            &Trust::Cas {
                pem: &ca,
                source: "ca.crt",
            },
            None,
            Duration::from_secs(5),
        )
    };
    assert_eq!(
        ask().unwrap().status,
        200,
        "anonymous requests still answered"
    );

    let pki = node.path("pki");
    let line = prove_kubeconfig(
        &node.path("admin.conf"),
        &pki,
        &[local],
        Duration::from_secs(5),
    )
    .unwrap();
    eprintln!("{line}");
    assert!(
        line.contains("accepted by the local kube-apiserver"),
        "{line}"
    );

    // admin.conf with the client certificate and key of another cluster's admin
    let foreign = node.path("foreign-admin.conf");
    with_client_of(
        &node.path("admin.conf"),
        &other.path("admin.conf"),
        &foreign,
    );
    let err = prove_kubeconfig(&foreign, &pki, &[local], Duration::from_secs(5)).unwrap_err();
    eprintln!("{err}");
    match &err {
        ProofError::Rejected(m) => {
            assert!(m.contains("foreign-admin.conf"), "{m}");
            assert!(m.contains(&local.to_string()), "{m}");
            assert!(m.contains("refused it in the TLS handshake"), "{m}");
            assert!(refused_client_certificate(m), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // and the server lives on for the next client
    assert_eq!(ask().unwrap().status, 200);
    stop(kubelet);
}
