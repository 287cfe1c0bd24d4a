//! `kube-cert-renewer demo`: the product end to end on a throwaway node, so anyone can see what
//! it does without a cluster.

/// The Lease endpoints of the cluster API, in process: tests only (feature `test-support`).
#[cfg(feature = "test-support")]
pub mod fake_api;
pub mod nodegen;
/// The kubelet stand-in: tests and the demo only (feature `test-support`, never in a release
/// build).
#[cfg(feature = "test-support")]
pub mod standin;

use time::OffsetDateTime;

use crate::config::Config;
use crate::demo::nodegen::NodeSpec;
use crate::renew::execute;
use crate::renew::job::{self, Interrupt, Job, Observer, RenewRequest};
use crate::renew::plan::Selection;
use crate::report::status::Thresholds;
use crate::report::{Report, runs};

/// Prints the renewal table as the demo's renewal goes.
struct Print;

impl Observer for Print {
    fn renewed(&mut self, renewal: &execute::Outcome, dry_run: bool) {
        print!("{}", runs::renewal_text(renewal, dry_run));
    }
}

/// What `check` prints, and its exit code.
fn show_check(job: &Job) -> i32 {
    let checked = job.check();
    let report = Report::new(&checked.inventory, job.now, &Thresholds::from(job.config))
        .with_node(checked.node);
    print!("{}", report.text());
    report.exit_code()
}

/// Builds the node, shows `check`, renews it (dry run, then for real), shows `check` again, and
/// cleans up unless asked to `keep` it. With a runtime endpoint, the node's static pods run
/// under the kubelet stand-in and the renewal restarts them over the CRI.
pub fn run(keep: bool, now: OffsetDateTime, runtime_endpoint: Option<&str>) -> Result<i32, String> {
    let dir = tempfile::Builder::new()
        .prefix("kube-cert-renewer-demo.")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let kubernetes_dir = dir.path().join("etc-kubernetes");
    let state_dir = dir.path().join("state");
    println!(
        "== Building a throwaway kubeadm node in {}",
        kubernetes_dir.display()
    );
    println!(
        "   (3 CAs, 7 PKI leaves and 4 kubeconfigs 5 days from expiry; kubelet.conf points at"
    );
    println!("    the kubelet's own rotated certificate, as on every node since kubeadm 1.17)\n");
    let mut spec = NodeSpec::new(now, 5);
    spec.kubelet_cert_file = Some(
        dir.path()
            .join("var/lib/kubelet/pki/kubelet-client-current.pem"),
    );
    spec.kubelet_not_after = Some(now + time::Duration::days(300));
    let socket = runtime_endpoint
        .map(crate::config::runtime_socket)
        .transpose()?;
    if socket.is_some() {
        spec.node_name = format!("demo-{}", std::process::id());
        spec.apiserver_port = free_port()?;
        spec.etcd_client_port = free_port()?;
        spec.etcd_peer_port = free_port()?;
    }
    nodegen::generate(&kubernetes_dir, &spec)?;
    let config = Config {
        kubernetes_dir: kubernetes_dir.clone(),
        state_dir,
        runtime_endpoint: runtime_endpoint.map(str::to_string),
        restart_settle_secs: 3,
        restart_start_timeout_secs: 60,
        ..Config::default()
    };
    let standin = match &socket {
        Some(socket) => Some(start_standin(&kubernetes_dir, socket, &spec)?),
        None => None,
    };
    let job = Job {
        config: &config,
        runtime_endpoint,
        now,
        interrupt: Interrupt::Signals,
    };
    println!(
        "== kube-cert-renewer check --kubernetes-dir {}\n",
        kubernetes_dir.display()
    );
    let code = show_check(&job);
    println!("\n(check exit code {code}: 0 ok, 1 warning, 2 critical/expired/unreadable)");

    let request = |dry_run| RenewRequest {
        selection: Selection::All,
        due_within_days: config.renew_before_days,
        validity_days: config.validity_days,
        reuse_keys: false,
        dry_run,
        restart: standin.is_some(),
    };
    let _lock = job::lock(&config).map_err(|e| e.to_string())?;
    println!("\n== kube-cert-renewer renew all --dry-run\n");
    let dry = job
        .renew(&request(true), &mut Print)
        .map_err(|e| e.to_string())?;
    print!("{}", runs::renew_report_tail(&dry));
    if standin.is_some() {
        println!("\n== kube-cert-renewer renew all\n");
    } else {
        println!("\n== kube-cert-renewer renew all --no-restart");
        println!(
            "   (no --runtime-endpoint: not restarting; give it a private containerd's socket to \
             see the restart)\n"
        );
    }
    let renewed = job
        .renew(&request(false), &mut Print)
        .map_err(|e| e.to_string())?;
    print!("{}", runs::renew_report_tail(&renewed));
    if let Some(e) = runs::restart_error(&renewed.restart) {
        return Err(e.to_string());
    }
    // the renewal refreshed the node's snapshot: a deleted pki/ comes back from it
    let pki = kubernetes_dir.join("pki");
    println!(
        "\n== rm -r {}   (an operator's mistake)\n== kube-cert-renewer recover\n",
        pki.display()
    );
    std::fs::remove_dir_all(&pki).map_err(|e| format!("{}: {e}", pki.display()))?;
    let recovered = job
        .recover_files(
            &crate::recover::run::Request::default(),
            standin.is_some(),
            &mut Print,
        )
        .map_err(|e| e.to_string())?;
    print!("{}", runs::recover_text(&recovered));
    drop(_lock);
    if let Some(running) = standin {
        let served = wait_served(&kubernetes_dir, spec.apiserver_port)?;
        println!("\nkube-apiserver now serves the certificate with serial {served}");
        #[cfg(feature = "test-support")]
        running.stop()?;
        #[cfg(not(feature = "test-support"))]
        match running {}
    }
    println!("\n== kube-cert-renewer check (after)\n");
    let after = show_check(&job);
    println!("\n(check exit code {after})");
    if keep {
        let kept = dir.keep();
        println!("\nKept the demo node in {}", kept.display());
    }
    Ok(0)
}

/// Runs the node's static pods under the kubelet stand-in and waits until its API server
/// answers.
#[cfg(feature = "test-support")]
fn start_standin(
    kubernetes_dir: &std::path::Path,
    socket: &std::path::Path,
    spec: &NodeSpec,
) -> Result<crate::demo::standin::Running, String> {
    println!(
        "== Running its static pods on the runtime at {} under the kubelet stand-in",
        socket.display()
    );
    println!(
        "   (kube-apiserver = openssl s_server on :{}, etcd = Debian's etcd on :{}, \
         controller-manager and scheduler = openssl s_server answering /healthz on their secure ports)\n",
        spec.apiserver_port, spec.etcd_client_port
    );
    let running = crate::demo::standin::spawn(crate::demo::standin::Options::new(
        kubernetes_dir.join("manifests"),
        socket.to_path_buf(),
        spec.node_name.clone(),
    ))?;
    let served = wait_served(kubernetes_dir, spec.apiserver_port)?;
    println!("kube-apiserver serves the certificate with serial {served}\n");
    Ok(running)
}

/// A release build has no kubelet stand-in (it runs a test annotation's shell command on a CRI
/// socket, which an installed binary must not be able to do).
#[cfg(not(feature = "test-support"))]
fn start_standin(
    _kubernetes_dir: &std::path::Path,
    _socket: &std::path::Path,
    _spec: &NodeSpec,
) -> Result<std::convert::Infallible, String> {
    Err(
        "the demo's restart needs the kubelet stand-in, which this build leaves out (it is \
         test-only); run the demo from a build with `--features test-support`, or without \
         --runtime-endpoint"
            .into(),
    )
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Waits (up to a minute) until the stand-in's API server answers, and returns the serial it
/// serves.
fn wait_served(kubernetes_dir: &std::path::Path, port: u16) -> Result<String, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ca = kubernetes_dir.join("pki/ca.crt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match crate::node::health::https_get(
            addr,
            "/readyz",
            &ca,
            None,
            std::time::Duration::from_secs(2),
        ) {
            Ok(probe) => return crate::node::health::serial_hex(&probe.served_leaf_der),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(format!(
                    "the stand-in's kube-apiserver did not come up: {e}"
                ));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}
