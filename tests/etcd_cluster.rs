//! The etcd quorum check against a real etcd cluster: three generated nodes of one cluster
//! (shared CAs, their own advertise addresses 127.0.0.11–13 and ports), each member started as a
//! plain process with the command of its node's generated `etcd.yaml`. The check must let any
//! member restart while all three are healthy, refuse once one is gone — naming it — and let a
//! one-member cluster restart.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use kube_cert_renewer::demo::nodegen::{NodeSpec, generate};
use kube_cert_renewer::node::etcd_cluster::{Cluster, MEMBER_LIST_PATH, may_stop_local, members};
use kube_cert_renewer::node::health::{
    ClientCert, Identity, Probe, Request, Target, Trust, etcd_healthy, https_get, request,
};

const TIMEOUT: Duration = Duration::from_secs(3);

/// One generated node and its running etcd member.
struct Node {
    name: String,
    dir: PathBuf,
    addresses: Vec<SocketAddr>,
    etcd: Option<Guard>,
}

impl Node {
    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    fn start(&mut self) {
        let (guard, addresses) = spawn_etcd_of_manifest(&self.dir);
        self.addresses = addresses;
        self.etcd = Some(guard);
    }

    /// SIGKILL, as a crash or a pulled plug would stop it.
    fn kill(&mut self) {
        drop(self.etcd.take());
    }

    fn may_stop(&self) -> Result<String, String> {
        may_stop_local(&self.addresses, &self.pki(), TIMEOUT)
    }

    /// A POST of `body` to etcd's gRPC gateway with the healthcheck client's certificate;
    /// fails the test unless etcd answers.
    fn gateway(&self, path: &str, body: &str) -> Probe {
        let etcd = self.pki().join("etcd");
        let identity = Identity::from_files(ClientCert {
            cert: &etcd.join("healthcheck-client.crt"),
            key: &etcd.join("healthcheck-client.key"),
        })
        .unwrap();
        let ca_pem = std::fs::read(etcd.join("ca.crt")).unwrap();
        request(
            &Target::ip(self.addresses[0]),
            &Request {
                method: "POST",
                path,
                json: Some(body.as_bytes()),
            },
            &Trust::Cas {
                pem: &ca_pem,
                source: "etcd/ca.crt",
            },
            Some(&identity),
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{} {path}: {e}", self.name))
    }

    /// The member's own `/health`, independently of the code under test.
    fn healthy(&self) -> Result<(), String> {
        let etcd = self.pki().join("etcd");
        let probe = https_get(
            self.addresses[0],
            "/health",
            &etcd.join("ca.crt"),
            Some(ClientCert {
                cert: &etcd.join("healthcheck-client.crt"),
                key: &etcd.join("healthcheck-client.key"),
            }),
            TIMEOUT,
        )?;
        if probe.status == 200 && etcd_healthy(&probe.body) {
            Ok(())
        } else {
            Err(format!(
                "{}: HTTP {} {}",
                self.name, probe.status, probe.body
            ))
        }
    }
}

/// Every node's etcd.log, for a failure message.
fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "--- {} etcd.log:\n{}",
                n.name,
                std::fs::read_to_string(n.dir.join("etcd.log")).unwrap_or_default()
            )
        })
        .collect()
}

/// Waits up to 30 s until `ok` holds for the result of `f`, failing with the last result and
/// every member's log.
fn wait_for<T: std::fmt::Debug>(
    nodes: &[Node],
    what: &str,
    mut f: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = f();
        if ok(&last) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; last: {last:?}\n{}",
            logs(nodes)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Generates the nodes of one cluster in `tmp`: the first makes the CAs, the others reuse them;
/// each has its own advertise address and ports, and every etcd manifest lists all members.
fn generate_cluster(tmp: &Path, count: u8) -> Vec<Node> {
    let specs: Vec<NodeSpec> = (1..=count)
        .map(|i| NodeSpec {
            node_name: format!("cp-{i}"),
            advertise_address: IpAddr::from([127, 0, 0, 10 + i]),
            apiserver_port: free_port(),
            etcd_client_port: free_port(),
            etcd_peer_port: free_port(),
            ..NodeSpec::new(now(), 30)
        })
        .collect();
    let initial_cluster = specs
        .iter()
        .map(NodeSpec::etcd_peer_entry)
        .collect::<Vec<_>>()
        .join(",");
    let first = tmp.join("cp-1");
    specs
        .into_iter()
        .map(|spec| {
            let dir = tmp.join(&spec.node_name);
            let spec = NodeSpec {
                shared_cas_from: (dir != first).then(|| first.clone()),
                etcd_initial_cluster: Some(initial_cluster.clone()),
                ..spec
            };
            generate(&dir, &spec).unwrap();
            Node {
                name: spec.node_name,
                dir,
                addresses: Vec::new(),
                etcd: None,
            }
        })
        .collect()
}

#[test]
fn three_members_may_restart_one_at_a_time_only_while_all_are_healthy() {
    if !have("etcd", "etcd-cluster") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = generate_cluster(tmp.path(), 3);

    // One cluster: the CAs are the same files, the leaves differ and name their own address.
    for name in [
        "ca.crt",
        "ca.key",
        "front-proxy-ca.crt",
        "etcd/ca.crt",
        "etcd/ca.key",
        "sa.key",
    ] {
        let of = |n: &Node| std::fs::read(n.pki().join(name)).unwrap();
        assert_eq!(of(&nodes[0]), of(&nodes[1]), "{name} shared");
        assert_eq!(of(&nodes[0]), of(&nodes[2]), "{name} shared");
    }
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        nodes[1].pki().join("etcd/peer.crt").to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(
        ok && text.contains("IP Address:127.0.0.12") && text.contains("DNS:cp-2"),
        "{text}"
    );

    for node in &mut nodes {
        node.start();
    }
    let _healthy = wait_for(
        &nodes,
        "all three members healthy",
        || nodes.iter().map(Node::healthy).collect::<Vec<_>>(),
        |all| all.iter().all(Result::is_ok),
    );

    // The real member list, through the gateway, as the check reads it.
    let answer = nodes[0].gateway(MEMBER_LIST_PATH, "{}");
    eprintln!("member list: HTTP {} {}", answer.status, answer.body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    // uint64 as JSON strings, etcd's own field names.
    assert!(json["header"]["member_id"].is_string(), "{json}");
    for m in json["members"].as_array().unwrap() {
        assert!(m["ID"].is_string(), "{m}");
        assert!(
            m["peerURLs"].is_array() && m["clientURLs"].is_array(),
            "{m}"
        );
    }
    let cluster: Cluster = members(&nodes[0].addresses, &nodes[0].pki(), TIMEOUT).unwrap();
    let local = cluster
        .members
        .iter()
        .find(|m| m.id == cluster.local_id)
        .unwrap();
    assert_eq!(local.name, "cp-1");
    let mut names: Vec<&str> = cluster.members.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["cp-1", "cp-2", "cp-3"]);
    let cp3 = cluster.members.iter().find(|m| m.name == "cp-3").unwrap();
    let cp3_url = format!("https://127.0.0.13:{}", nodes[2].addresses[0].port());
    assert_eq!(cp3.client_urls, std::slice::from_ref(&cp3_url));

    // All healthy: every node may restart its member.
    for node in &nodes {
        let note = node
            .may_stop()
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", node.name, logs(&nodes)));
        eprintln!("{}: {note}", node.name);
        assert!(note.contains("3 members, all healthy"), "{note}");
        assert!(note.contains("2 of 3 keep quorum"), "{note}");
    }

    // cp-3 dies. At once, while cp-1 and cp-2 may still be electing a new leader (and answer
    // /health false meanwhile), a restart is refused, cp-3 named.
    nodes[2].kill();
    let why = nodes[0].may_stop().unwrap_err();
    eprintln!("cp-1, just after cp-3 died: {why}");
    assert!(
        why.contains(&format!("cp-3 ({cp3_url}) is not healthy")),
        "{why}"
    );
    // Once the election is over, cp-1 and cp-2 make a quorum and the cluster serves; still
    // neither may restart, and only cp-3 is blamed.
    let _healthy = wait_for(
        &nodes,
        "cp-1 and cp-2 healthy without cp-3",
        || [nodes[0].healthy(), nodes[1].healthy()],
        |both| both.iter().all(Result::is_ok),
    );
    for node in &nodes[..2] {
        let why = node.may_stop().unwrap_err();
        eprintln!("{}: {why}", node.name);
        assert!(why.starts_with("refusing to restart etcd: "), "{why}");
        assert!(
            why.contains(&format!("cp-3 ({cp3_url}) is not healthy")),
            "{why}"
        );
        assert!(why.contains("connection refused"), "{why}");
        assert!(
            why.contains("3 voting members need 2 for quorum, and only 1 healthy would be left"),
            "{why}"
        );
        assert_eq!(
            why.matches("is not healthy").count(),
            1,
            "only cp-3 is blamed: {why}"
        );
    }
    // The dead member's own node cannot ask anyone: it refuses, and says why.
    let why = nodes[2].may_stop().unwrap_err();
    eprintln!("cp-3: {why}");
    assert!(
        why.starts_with("refusing to restart etcd: the local member does not answer"),
        "{why}"
    );
    assert!(why.contains(&nodes[2].addresses[0].to_string()), "{why}");
    assert!(why.contains("connection refused"), "{why}");

    // cp-3 back (same data dir): restarts are allowed again.
    nodes[2].start();
    let note = wait_for(
        &nodes,
        "cp-1 allowed again",
        || nodes[0].may_stop(),
        Result::is_ok,
    );
    assert!(note.unwrap().contains("3 members, all healthy"));

    // A learner added but never started (a `kubeadm join` whose etcd did not come up): it does
    // not vote, but a restart waits until the join is settled.
    let learner_url = format!("https://127.0.0.14:{}", free_port());
    // etcd refuses to add a member ("unhealthy cluster", 503) until every member has been
    // connected for a few seconds, and cp-3 has just come back.
    let body = format!(r#"{{"peerURLs":["{learner_url}"],"isLearner":true}}"#);
    let added = wait_for(
        &nodes,
        "a learner added",
        || nodes[0].gateway("/v3/cluster/member/add", &body),
        |p| p.status == 200,
    );
    eprintln!("member add: HTTP {} {}", added.status, added.body);
    let added: serde_json::Value = serde_json::from_str(&added.body).unwrap();
    let learner_id = added["member"]["ID"].as_str().unwrap().to_string();
    let list = nodes[0].gateway(MEMBER_LIST_PATH, "{}");
    eprintln!("member list with a learner: {}", list.body);
    let cluster = members(&nodes[0].addresses, &nodes[0].pki(), TIMEOUT).unwrap();
    let learner = cluster
        .members
        .iter()
        .find(|m| m.id.to_string() == learner_id)
        .unwrap();
    assert!(learner.is_learner && learner.name.is_empty() && learner.client_urls.is_empty());
    assert_eq!(learner.peer_urls, std::slice::from_ref(&learner_url));
    let why = nodes[1].may_stop().unwrap_err();
    eprintln!("cp-2 with a learner not started: {why}");
    let hex = format!("{:x}", learner.id);
    assert!(
        why.contains(&format!(
            "learner member {hex} ({learner_url}, not started yet) is not healthy: \
             it advertises no client URL"
        )),
        "{why}"
    );
    assert!(why.contains("2 of 3 would keep quorum (2 needed)"), "{why}");
    let removed = nodes[0].gateway(
        "/v3/cluster/member/remove",
        &format!(r#"{{"ID":"{learner_id}"}}"#),
    );
    assert_eq!(removed.status, 200, "{}", removed.body);
    let note = nodes[1].may_stop().unwrap();
    assert!(note.contains("3 members, all healthy"), "{note}");

    // Two down: the one left has no quorum; it still lists its members, but is unhealthy itself.
    nodes[1].kill();
    nodes[2].kill();
    let why = wait_for(
        &nodes,
        "cp-1 sees no quorum",
        || nodes[0].may_stop(),
        |r| {
            r.as_ref()
                .is_err_and(|e| e.contains("cp-2 (") && e.contains("cp-3 ("))
        },
    )
    .unwrap_err();
    eprintln!("cp-1 alone: {why}");
    assert!(why.contains("only 0 healthy would be left (none)"), "{why}");
    assert!(why.contains("itself is not healthy either"), "{why}");
}

#[test]
fn a_one_member_cluster_may_restart() {
    if !have("etcd", "etcd-cluster") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cp-1");
    // kubeadm init's shape: no --initial-cluster given, the node alone, on loopback.
    generate(
        &dir,
        &NodeSpec {
            etcd_client_port: free_port(),
            etcd_peer_port: free_port(),
            ..NodeSpec::new(now(), 30)
        },
    )
    .unwrap();
    let mut node = Node {
        name: "cp-1".into(),
        dir,
        addresses: Vec::new(),
        etcd: None,
    };
    node.start();
    let nodes = std::slice::from_ref(&node);
    wait_for(
        nodes,
        "the member healthy",
        || node.healthy(),
        Result::is_ok,
    )
    .unwrap();
    let note = node.may_stop().unwrap();
    eprintln!("{note}");
    assert!(
        note.contains("single member (cp-1 (https://127.0.0.1:"),
        "{note}"
    );
}
