//! Benchmark of the restart overhead: the wall time of a restart minus the time the container
//! runtime itself spent stopping and starting the containers (every runtime call the kubelet
//! stand-in makes to tear a pod down or bring it up is timed, overlaps counted once). What is
//! left is ours: noticing that the old containers exited, moving manifests, noticing the new
//! ones, and the health probes — plus the stand-in's own reaction time (it polls the manifests
//! dir every 20 ms here, like kubelet reacting to inotify).
//!
//! Needs a containerd (`KCR_CONTAINERD_SOCKET`, see tests/support/containerd-env.sh); run with
//! `cargo bench --bench restart`. Target: ≤ 0.5 s.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use kube_cert_renewer::demo::nodegen::{self, NodeSpec};
use kube_cert_renewer::demo::standin;
use kube_cert_renewer::node::cri;
use kube_cert_renewer::node::restart::{self, Settings, TlsProbes};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let Some(socket) = std::env::var_os("KCR_CONTAINERD_SOCKET") else {
        eprintln!(
            "KCR_CONTAINERD_SOCKET is not set: start a private containerd with \
             `bash tests/support/containerd-env.sh start /tmp/kcr-b` and export \
             KCR_CONTAINERD_SOCKET=/tmp/kcr-b/containerd.sock; skipped"
        );
        return;
    };
    let socket = std::path::PathBuf::from(socket);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("k");
    let mut spec = NodeSpec::new(time::OffsetDateTime::now_utc(), 30);
    spec.node_name = format!("bench-{}", std::process::id());
    spec.apiserver_port = free_port();
    spec.etcd_client_port = free_port();
    spec.etcd_peer_port = free_port();
    nodegen::generate(&dir, &spec).expect("node");

    let spans = standin::SpanLog::default();
    let mut options = standin::Options::new(dir.join("manifests"), &socket, &spec.node_name);
    options.poll = Duration::from_millis(20);
    options.runtime_spans = Some(spans.clone());
    let running = standin::spawn(options).expect("stand-in");

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let client = tokio
        .block_on(cri::RuntimeClient::connect(&socket))
        .expect("runtime");
    let probes = TlsProbes::for_pki(&dir.join("pki"));
    let all = restart::all_components(&dir.join("manifests")).expect("manifests");
    let pick = |names: &[&str]| -> Vec<restart::Component> {
        all.iter()
            .filter(|c| names.contains(&c.name.as_str()))
            .cloned()
            .collect()
    };
    // wait until the node is up (a first restart of everything does it)
    let settings = |poll_ms: u64| Settings {
        poll: Duration::from_millis(poll_ms),
        stop_timeout: Duration::from_secs(60),
        start_timeout: Duration::from_secs(60),
        settle: Duration::ZERO,
        node_name: Some(spec.node_name.clone()),
    };
    std::thread::sleep(Duration::from_secs(2));
    tokio
        .block_on(restart::restart(
            &client,
            &probes,
            &all,
            &tmp.path().join("state"),
            &settings(100),
        ))
        .expect("warm-up restart");

    println!(
        "restart overhead = wall time − time the runtime spent stopping and starting (median of 9)"
    );
    println!(
        "{:<56} {:>9} {:>9} {:>9}",
        "what", "wall", "runtime", "overhead"
    );
    let cases: [(&str, &[&str], u64); 4] = [
        (
            "kube-apiserver, poll 200 ms (default)",
            &["kube-apiserver"],
            200,
        ),
        ("kube-apiserver, poll 100 ms", &["kube-apiserver"], 100),
        (
            "apiserver + controller-manager + scheduler, poll 200 ms",
            &[
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ],
            200,
        ),
        (
            "all four incl. etcd (its own ~1 s start counts here)",
            &[
                "kube-apiserver",
                "etcd",
                "kube-controller-manager",
                "kube-scheduler",
            ],
            200,
        ),
    ];
    for (label, names, poll) in cases {
        let components = pick(names);
        let mut walls = Vec::new();
        let mut runtimes = Vec::new();
        let mut overheads = Vec::new();
        for _ in 0..9 {
            let t0 = Instant::now();
            let outcome = tokio
                .block_on(restart::restart(
                    &client,
                    &probes,
                    &components,
                    &tmp.path().join("state"),
                    &settings(poll),
                ))
                .expect("restart");
            let t1 = Instant::now();
            let wall = t1 - t0;
            let runtime = spans.covered(t0, t1);
            assert_eq!(outcome.restarted.len(), components.len());
            walls.push(wall);
            runtimes.push(runtime);
            overheads.push(wall.saturating_sub(runtime));
        }
        println!(
            "{:<56} {:>9} {:>9} {:>9}",
            label,
            ms(median(walls)),
            ms(median(runtimes)),
            ms(median(overheads))
        );
    }
    running.stop().expect("stand-in stop");
}
