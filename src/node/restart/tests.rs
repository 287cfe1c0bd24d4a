//! The restart orchestration against a fake runtime that behaves like kubelet + a runtime: it
//! looks at the real (temp) manifests dir at every question, stops the containers of a missing
//! manifest after a few questions, and starts a new container for a present one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::demo::nodegen::{self, NodeSpec};

/// What the fake kubelet does with a component.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    /// Stops after `stop_polls` questions once parked; starts when back.
    Normal,
    /// Never stops.
    Stuck,
    /// Starts, then exits after two questions, forever (a crash loop).
    CrashLoop,
}

struct FakeContainer {
    id: String,
    pod_name: String,
    running: bool,
    age: u32,
}

struct FakeKubelet {
    manifests: PathBuf,
    node: String,
    containers: RefCell<BTreeMap<String, Vec<FakeContainer>>>,
    behaviour: BTreeMap<String, Behaviour>,
    parked_polls: RefCell<BTreeMap<String, u32>>,
    stop_polls: u32,
    next_id: RefCell<u32>,
    /// The runtime answers this many questions, then fails every one.
    answers_left: RefCell<Option<u32>>,
    pinged: RefCell<bool>,
    sandbox_lingers: RefCell<std::collections::BTreeSet<String>>,
}

impl FakeKubelet {
    fn new(manifests: &Path, node: &str) -> FakeKubelet {
        let k = FakeKubelet {
            manifests: manifests.to_path_buf(),
            node: node.to_string(),
            containers: RefCell::new(BTreeMap::new()),
            behaviour: BTreeMap::new(),
            parked_polls: RefCell::new(BTreeMap::new()),
            stop_polls: 3,
            next_id: RefCell::new(1),
            answers_left: RefCell::new(None),
            pinged: RefCell::new(false),
            sandbox_lingers: RefCell::new(Default::default()),
        };
        for name in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "etcd",
        ] {
            k.start(name);
        }
        k
    }

    fn start(&self, name: &str) {
        let mut next = self.next_id.borrow_mut();
        let id = format!("{name}-{:04}", *next);
        *next += 1;
        self.containers
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .push(FakeContainer {
                id,
                pod_name: format!("{name}-{}", self.node),
                running: true,
                age: 0,
            });
    }

    /// One kubelet sync for `name`, as seen at a question about it.
    fn sync(&self, name: &str) {
        let present = self.manifests.join(format!("{name}.yaml")).exists();
        let behaviour = self
            .behaviour
            .get(name)
            .copied()
            .unwrap_or(Behaviour::Normal);
        let own = format!("{name}-{}", self.node);
        let running_now = {
            let mut all = self.containers.borrow_mut();
            let list = all.entry(name.to_string()).or_default();
            for c in list.iter_mut().filter(|c| c.running && c.pod_name == own) {
                c.age += 1;
                if behaviour == Behaviour::CrashLoop && c.age > 2 {
                    c.running = false;
                }
            }
            list.iter().any(|c| c.running && c.pod_name == own)
        };
        if present {
            self.parked_polls.borrow_mut().remove(name);
            if !running_now {
                self.start(name);
            }
        } else {
            let mut polls = self.parked_polls.borrow_mut();
            let n = polls.entry(name.to_string()).or_insert(0);
            *n += 1;
            if *n >= self.stop_polls && behaviour != Behaviour::Stuck {
                for c in self
                    .containers
                    .borrow_mut()
                    .entry(name.to_string())
                    .or_default()
                {
                    if c.pod_name == own {
                        c.running = false;
                    }
                }
            }
        }
    }

    fn ids(&self, name: &str) -> Vec<String> {
        self.containers.borrow()[name]
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    fn running(&self, name: &str) -> Vec<String> {
        self.containers.borrow()[name]
            .iter()
            .filter(|c| c.running)
            .map(|c| c.id.clone())
            .collect()
    }
}

impl Runtime for FakeKubelet {
    async fn ready_pods(&self, _namespace: &str) -> Result<Vec<String>, String> {
        if self.answers_left.borrow().is_some_and(|n| n == 0) {
            return Err("transport error: connection refused".into());
        }
        // a pod's sandbox stays ready one question longer than its last container
        let mut pods = self.sandbox_lingers.borrow_mut();
        let ready: Vec<String> = pods.iter().cloned().collect();
        pods.clear();
        for (name, list) in self.containers.borrow().iter() {
            if list
                .iter()
                .any(|c| c.running && c.pod_name == format!("{name}-{}", self.node))
            {
                pods.insert(format!("{name}-{}", self.node));
            }
        }
        Ok(ready)
    }

    async fn ping(&self) -> Result<String, String> {
        *self.pinged.borrow_mut() = true;
        match *self.answers_left.borrow() {
            Some(0) => Err("connection refused".into()),
            _ => Ok("fake 1".into()),
        }
    }

    async fn containers(
        &self,
        namespace: &str,
        container: &str,
    ) -> Result<Vec<ContainerInfo>, String> {
        if let Some(n) = self.answers_left.borrow_mut().as_mut() {
            if *n == 0 {
                return Err("transport error: connection refused".into());
            }
            *n -= 1;
        }
        assert_eq!(namespace, "kube-system");
        self.sync(container);
        Ok(self.containers.borrow()[container]
            .iter()
            .map(|c| ContainerInfo {
                id: c.id.clone(),
                pod_name: c.pod_name.clone(),
                running: c.running,
            })
            .collect())
    }
}

/// Probes that pass, or fail for the named components; credential proofs answer from a script.
struct FakeProbes {
    failing: Vec<&'static str>,
    serving_current: Vec<&'static str>,
    /// What each proof attempt answers, in turn (the last one forever); empty: nothing to prove.
    proofs: RefCell<Vec<Result<Vec<String>, crate::node::proof::ProofError>>>,
    /// How many proof attempts were made.
    proof_attempts: RefCell<u32>,
    /// Components that may not stop now, with why.
    refusing: Vec<(&'static str, &'static str)>,
}

impl Probes for FakeProbes {
    fn healthy(&self, c: &Component) -> Result<(), String> {
        if self.failing.contains(&c.name.as_str()) {
            Err("connection refused".into())
        } else {
            Ok(())
        }
    }
    fn serves_current(&self, c: &Component) -> Result<bool, String> {
        Ok(self.serving_current.contains(&c.name.as_str()))
    }
    fn may_stop(&self, c: &Component) -> Result<Option<String>, String> {
        match self.refusing.iter().find(|(n, _)| *n == c.name) {
            Some((_, why)) => Err((*why).to_string()),
            None => Ok(None),
        }
    }
    fn prove_credentials(&self) -> Result<Vec<String>, crate::node::proof::ProofError> {
        *self.proof_attempts.borrow_mut() += 1;
        let mut script = self.proofs.borrow_mut();
        match script.len() {
            0 => Ok(Vec::new()),
            1 => script[0].clone(),
            _ => script.remove(0),
        }
    }
}

fn healthy() -> FakeProbes {
    FakeProbes {
        failing: vec![],
        serving_current: vec![],
        proofs: RefCell::new(Vec::new()),
        proof_attempts: RefCell::new(0),
        refusing: Vec::new(),
    }
}

/// Healthy probes whose credential proofs answer `script` in turn.
fn proving(script: Vec<Result<Vec<String>, crate::node::proof::ProofError>>) -> FakeProbes {
    FakeProbes {
        proofs: RefCell::new(script),
        ..healthy()
    }
}

struct Node {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    state: PathBuf,
}

impl Node {
    fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }
}

fn node() -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k");
    let now = time::OffsetDateTime::now_utc();
    nodegen::generate(&dir, &NodeSpec::new(now, 3)).unwrap();
    let state = tmp.path().join("state");
    Node {
        _tmp: tmp,
        dir,
        state,
    }
}

fn settings(node: Option<&str>) -> Settings {
    Settings {
        poll: Duration::from_millis(1),
        stop_timeout: Duration::from_millis(300),
        start_timeout: Duration::from_millis(300),
        settle: Duration::from_millis(5),
        node_name: node.map(str::to_string),
    }
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    crate::node::manifest::list(dir)
        .unwrap()
        .into_iter()
        .map(|f| {
            let data = std::fs::read(&f).unwrap();
            (f, data)
        })
        .collect()
}

fn assert_all_back(n: &Node, before: &BTreeMap<PathBuf, Vec<u8>>) {
    assert_eq!(&snapshot(&n.manifests()), before, "manifests not all back");
    let parking = parking_dir(&n.manifests());
    if parking.exists() {
        assert_eq!(
            std::fs::read_dir(&parking).unwrap().count(),
            0,
            "parking dir not empty"
        );
    }
    assert!(
        crate::state::journal::pending(&n.state).unwrap().is_none(),
        "journal left behind"
    );
}

#[tokio::test]
async fn restart_all_gives_every_component_a_new_container() {
    let n = node();
    let before = snapshot(&n.manifests());
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    let components = all_components(&n.manifests()).unwrap();
    let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kube-apiserver",
            "etcd",
            "kube-controller-manager",
            "kube-scheduler"
        ],
        "kube-apiserver first"
    );
    let old: BTreeMap<String, Vec<String>> = names
        .iter()
        .map(|n| (n.to_string(), kubelet.ids(n)))
        .collect();
    let outcome = restart(
        &kubelet,
        &healthy(),
        &components,
        &n.state,
        &settings(Some("cp-1")),
    )
    .await
    .unwrap();
    assert_eq!(outcome.restarted.len(), 4);
    for r in &outcome.restarted {
        assert!(
            !old[&r.name].contains(&r.new_id),
            "{} kept its container",
            r.name
        );
        assert_eq!(kubelet.running(&r.name), vec![r.new_id.clone()]);
        assert_eq!(r.old_ids, old[&r.name]);
    }
    assert_all_back(&n, &before);
}

#[tokio::test]
async fn unreachable_runtime_touches_nothing() {
    let n = node();
    let before = snapshot(&n.manifests());
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    *kubelet.answers_left.borrow_mut() = Some(0);
    let components = all_components(&n.manifests()).unwrap();
    let err = restart(&kubelet, &healthy(), &components, &n.state, &settings(None))
        .await
        .unwrap_err();
    assert!(matches!(err, Failure::Runtime(_)), "{err:?}");
    assert!(err.to_string().contains("nothing was restarted"), "{err}");
    assert_eq!(snapshot(&n.manifests()), before);
    assert!(!parking_dir(&n.manifests()).exists(), "parking dir created");
    assert!(!crate::state::journal::path(&n.state).exists());
}

#[tokio::test]
async fn an_etcd_that_may_not_stop_stops_nothing_at_all() {
    let n = node();
    let before = snapshot(&n.manifests());
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    let old = kubelet.ids("kube-apiserver");
    let probes = FakeProbes {
        refusing: vec![("etcd", "refusing to restart etcd: cp-3 is not healthy")],
        ..healthy()
    };
    let components = all_components(&n.manifests()).unwrap();
    let err = restart(&kubelet, &probes, &components, &n.state, &settings(None))
        .await
        .unwrap_err();
    assert!(matches!(err, Failure::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("cp-3 is not healthy"), "{err}");
    assert!(err.to_string().contains("nothing was restarted"), "{err}");
    // kube-apiserver comes first in the order, yet was not touched either
    assert_eq!(kubelet.ids("kube-apiserver"), old);
    assert_eq!(snapshot(&n.manifests()), before);
    assert!(!parking_dir(&n.manifests()).exists(), "parking dir created");
    assert!(!crate::state::journal::path(&n.state).exists());
}

#[tokio::test]
async fn a_component_that_never_stops_times_out_with_manifests_back() {
    let n = node();
    let before = snapshot(&n.manifests());
    let mut kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    kubelet.behaviour.insert("etcd".into(), Behaviour::Stuck);
    let components = all_components(&n.manifests()).unwrap();
    let err = restart(&kubelet, &healthy(), &components, &n.state, &settings(None))
        .await
        .unwrap_err();
    assert!(matches!(err, Failure::NotStopped(_)), "{err:?}");
    assert!(err.to_string().contains("etcd still running"), "{err}");
    assert_all_back(&n, &before);
}

#[tokio::test]
async fn runtime_gone_in_the_middle_is_a_runtime_failure_with_manifests_back() {
    let n = node();
    let before = snapshot(&n.manifests());
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    // enough answers for the ping and the old-id lists, then the runtime is gone
    *kubelet.answers_left.borrow_mut() = Some(5);
    let components = all_components(&n.manifests()).unwrap();
    let err = restart(&kubelet, &healthy(), &components, &n.state, &settings(None))
        .await
        .unwrap_err();
    assert!(matches!(err, Failure::Runtime(_)), "{err:?}");
    assert!(err.to_string().contains("stopped answering"), "{err}");
    assert_all_back(&n, &before);
}

/// Turns off the secure serving of the generated scheduler (`--secure-port=0`): it has no
/// health endpoint left, and is judged by settling.
fn scheduler_without_secure_port(n: &Node) {
    let file = n.manifests().join("kube-scheduler.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.contains("--secure-port="))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.replacen(
        "    - --kubeconfig=",
        "    - --secure-port=0\n    - --kubeconfig=",
        1,
    );
    std::fs::write(&file, text).unwrap();
}

#[tokio::test]
async fn crash_loop_fails_the_settle_period() {
    let n = node();
    scheduler_without_secure_port(&n);
    let before = snapshot(&n.manifests());
    let mut kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    kubelet
        .behaviour
        .insert("kube-scheduler".into(), Behaviour::CrashLoop);
    let components = named_components(&n.manifests(), &["kube-scheduler".into()]).unwrap();
    assert_eq!(components[0].health, HealthCheck::Settle);
    let mut s = settings(None);
    s.settle = Duration::from_millis(100);
    let err = restart(&kubelet, &healthy(), &components, &n.state, &s)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kube-scheduler exited"), "{err}");
    assert_all_back(&n, &before);
}

#[tokio::test]
async fn a_healthz_component_passes_as_soon_as_it_answers_without_settling() {
    let n = node();
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    let components = named_components(
        &n.manifests(),
        &["kube-controller-manager".into(), "kube-scheduler".into()],
    )
    .unwrap();
    for c in &components {
        assert!(matches!(c.health, HealthCheck::Healthz(_)), "{c:?}");
    }
    let mut s = settings(None);
    // a settle period the start timeout could never hold: only the probe can pass them
    s.settle = Duration::from_secs(3600);
    let outcome = restart(&kubelet, &healthy(), &components, &n.state, &s)
        .await
        .unwrap();
    assert_eq!(outcome.restarted.len(), 2);
}

#[tokio::test]
async fn a_healthz_component_that_crashes_before_answering_has_exited() {
    let n = node();
    let before = snapshot(&n.manifests());
    let mut kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    kubelet
        .behaviour
        .insert("kube-scheduler".into(), Behaviour::CrashLoop);
    let components = named_components(&n.manifests(), &["kube-scheduler".into()]).unwrap();
    let probes = FakeProbes {
        failing: vec!["kube-scheduler"],
        ..healthy()
    };
    let err = restart(&kubelet, &probes, &components, &n.state, &settings(None))
        .await
        .unwrap_err();
    assert!(matches!(err, Failure::Unhealthy(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("kube-scheduler exited") && text.contains("before it answered healthy"),
        "{text}"
    );
    assert!(
        text.contains("connection refused"),
        "the last answer: {text}"
    );
    assert_all_back(&n, &before);
}

#[tokio::test]
async fn credentials_are_proven_after_health_and_reported() {
    use crate::node::proof::ProofError;
    let n = node();
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    let components = named_components(&n.manifests(), &["kube-scheduler".into()]).unwrap();
    // not accepting requests yet, then one rejection, then accepted: a lone rejection is not
    // believed, and waiting is not failing
    let probes = proving(vec![
        Err(ProofError::Inconclusive("503 not ready".into())),
        Err(ProofError::Rejected("scheduler.conf: refused".into())),
        Ok(vec!["scheduler.conf: accepted".into()]),
    ]);
    let outcome = restart(&kubelet, &probes, &components, &n.state, &settings(None))
        .await
        .unwrap();
    assert_eq!(outcome.proven, ["scheduler.conf: accepted"]);
    assert_eq!(*probes.proof_attempts.borrow(), 3);
}

#[tokio::test]
async fn a_credential_that_is_never_proven_fails_the_restart_at_the_deadline() {
    use crate::node::proof::ProofError;
    let n = node();
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    let components = named_components(&n.manifests(), &["kube-scheduler".into()]).unwrap();
    let probes = proving(vec![Err(ProofError::Inconclusive(
        "/k/admin.conf: the local kube-apiserver at 127.0.0.1:6443: connection refused".into(),
    ))]);
    let err = restart(&kubelet, &probes, &components, &n.state, &settings(None))
        .await
        .unwrap_err();
    assert!(matches!(err, Failure::Unhealthy(_)), "{err:?}");
    assert!(
        err.to_string().contains("admin.conf") && err.to_string().contains("connection refused"),
        "{err}"
    );
    assert!(
        *probes.proof_attempts.borrow() > 3,
        "retried until the deadline"
    );
}

#[tokio::test]
async fn a_rejected_credential_rolls_the_renewal_back_and_restarts_again() {
    use crate::node::proof::ProofError;
    let n = node();
    let before = snapshot(&n.manifests());
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    let conf = n.dir.join("scheduler.conf");
    let original = std::fs::read(&conf).unwrap();
    let backup = back_up_then_renew(&n, &conf);
    let components = named_components(&n.manifests(), &["kube-scheduler".into()]).unwrap();
    let first_ids = kubelet.ids("kube-scheduler");
    let rejected = || {
        Err(ProofError::Rejected(format!(
            "{}: its client certificate CN=system:kube-scheduler is refused: the local \
             kube-apiserver at 127.0.0.1:6443 refused it in the TLS handshake",
            conf.display()
        )))
    };
    // rejected (three times: believed) with the renewed file, accepted once it is restored
    let probes = proving(vec![
        rejected(),
        rejected(),
        rejected(),
        Ok(vec!["accepted".into()]),
    ]);
    let err = restart_with_rollback(
        &kubelet,
        &probes,
        &components,
        &n.state,
        &settings(None),
        Some(&backup),
    )
    .await
    .unwrap_err();
    assert!(err.contains("a renewed credential does not work"), "{err}");
    assert!(err.contains("scheduler.conf"), "{err}");
    assert!(err.contains("previous certificates were restored"), "{err}");
    assert!(err.contains("running healthy again"), "{err}");
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        original,
        "backup not restored"
    );
    assert_eq!(*probes.proof_attempts.borrow(), 4);
    assert!(
        kubelet.ids("kube-scheduler").len() >= first_ids.len() + 2,
        "not restarted twice"
    );
    assert_all_back(&n, &before);
}

#[tokio::test]
async fn prove_or_restore_restores_only_on_a_rejection() {
    use crate::node::proof::{ProofError, prove_or_restore};
    let n = node();
    let conf = n.dir.join("admin.conf");
    let original = std::fs::read(&conf).unwrap();
    let s = settings(None);

    // proven: the renewed file stays, the lines come back
    let backup = back_up_then_renew(&n, &conf);
    let lines = prove_or_restore(
        &proving(vec![Ok(vec!["admin.conf: accepted".into()])]),
        &n.state,
        Some(&backup),
        &s,
    )
    .await
    .unwrap();
    assert_eq!(lines, ["admin.conf: accepted"]);
    assert_eq!(std::fs::read(&conf).unwrap(), b"the renewed one");

    // nothing answers: nothing shows the credential wrong, so it stays; the backup is named
    let err = prove_or_restore(
        &proving(vec![Err(ProofError::Inconclusive(
            "admin.conf: connection refused".into(),
        ))]),
        &n.state,
        Some(&backup),
        &s,
    )
    .await
    .unwrap_err();
    assert!(err.contains("could not be proven"), "{err}");
    assert!(err.contains(&backup.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&conf).unwrap(), b"the renewed one");

    // refused: the previous file comes back, and is proven in turn
    let err = prove_or_restore(
        &proving(vec![
            Err(ProofError::Rejected(
                "admin.conf: answered 401 Unauthorized".into(),
            )),
            Err(ProofError::Rejected(
                "admin.conf: answered 401 Unauthorized".into(),
            )),
            Err(ProofError::Rejected(
                "admin.conf: answered 401 Unauthorized".into(),
            )),
            Ok(vec!["admin.conf: accepted".into()]),
        ]),
        &n.state,
        Some(&backup),
        &s,
    )
    .await
    .unwrap_err();
    assert!(err.contains("admin.conf: answered 401"), "{err}");
    assert!(err.contains("previous certificates were restored"), "{err}");
    assert!(err.contains("the API server accepts them"), "{err}");
    assert_eq!(std::fs::read(&conf).unwrap(), original);
    assert!(crate::state::journal::pending(&n.state).unwrap().is_none());
}

/// Backs `cert` up as a renewal would, then replaces it with "the renewed one".
fn back_up_then_renew(n: &Node, cert: &Path) -> PathBuf {
    let backup = crate::state::store::backup(
        &n.state.join("backups"),
        "20260101T000000Z",
        &n.dir,
        &[cert.to_path_buf()],
    )
    .unwrap();
    std::fs::write(cert, b"the renewed one").unwrap();
    backup
}

#[tokio::test]
async fn unhealthy_after_restart_restores_the_backup_and_restarts_again() {
    let n = node();
    let before = snapshot(&n.manifests());
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    let cert = n.dir.join("pki/apiserver.crt");
    let original = std::fs::read(&cert).unwrap();
    let backup = back_up_then_renew(&n, &cert);
    let components = named_components(&n.manifests(), &["kube-apiserver".into()]).unwrap();
    let first_ids = kubelet.ids("kube-apiserver");
    let probes = FakeProbes {
        failing: vec!["kube-apiserver"],
        ..healthy()
    };
    let err = restart_with_rollback(
        &kubelet,
        &probes,
        &components,
        &n.state,
        &settings(None),
        Some(&backup),
    )
    .await
    .unwrap_err();
    assert!(err.contains("did not answer healthy"), "{err}");
    assert!(err.contains("previous certificates were restored"), "{err}");
    assert!(
        err.contains("restarting them again failed as well"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        original,
        "backup not restored"
    );
    assert!(
        kubelet.ids("kube-apiserver").len() >= first_ids.len() + 2,
        "not restarted twice"
    );
    assert_all_back(&n, &before);
}

#[tokio::test]
async fn a_kubelet_that_does_not_react_keeps_the_untried_certificates_and_parks_once() {
    let n = node();
    let before = snapshot(&n.manifests());
    let mut kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    kubelet
        .behaviour
        .insert("kube-apiserver".into(), Behaviour::Stuck);
    let cert = n.dir.join("pki/apiserver.crt");
    let backup = back_up_then_renew(&n, &cert);
    let components = named_components(&n.manifests(), &["kube-apiserver".into()]).unwrap();
    let ids = kubelet.ids("kube-apiserver");
    let err = restart_with_rollback(
        &kubelet,
        &healthy(),
        &components,
        &n.state,
        &settings(None),
        Some(&backup),
    )
    .await
    .unwrap_err();
    assert!(err.contains("still running"), "{err}");
    assert!(err.contains("never tried"), "{err}");
    assert!(!err.contains("restored"), "{err}");
    assert_eq!(std::fs::read(&cert).unwrap(), b"the renewed one");
    assert_eq!(
        kubelet.ids("kube-apiserver"),
        ids,
        "one park cycle, no restart"
    );
    assert!(crate::state::journal::pending(&n.state).unwrap().is_none());
    assert_all_back(&n, &before);
}

#[tokio::test]
async fn runtime_failure_keeps_the_renewed_certificates() {
    let n = node();
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    *kubelet.answers_left.borrow_mut() = Some(0);
    let cert = n.dir.join("pki/apiserver.crt");
    let backup = back_up_then_renew(&n, &cert);
    let components = all_components(&n.manifests()).unwrap();
    let err = restart_with_rollback(
        &kubelet,
        &healthy(),
        &components,
        &n.state,
        &settings(None),
        Some(&backup),
    )
    .await
    .unwrap_err();
    assert!(err.contains("renewed certificates stay in place"), "{err}");
    assert_eq!(std::fs::read(&cert).unwrap(), b"the renewed one");
}

#[tokio::test]
async fn other_nodes_pods_are_not_waited_for() {
    let n = node();
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    // a stuck scheduler of another "node" sharing the runtime
    kubelet
        .containers
        .borrow_mut()
        .get_mut("kube-scheduler")
        .unwrap()
        .push(FakeContainer {
            id: "other".into(),
            pod_name: "kube-scheduler-cp-2".into(),
            running: true,
            age: 0,
        });
    let components = named_components(&n.manifests(), &["kube-scheduler".into()]).unwrap();
    let outcome = restart(
        &kubelet,
        &healthy(),
        &components,
        &n.state,
        &settings(Some("cp-1")),
    )
    .await
    .unwrap();
    assert_eq!(outcome.restarted.len(), 1);
    assert!(outcome.notes.is_empty(), "{:?}", outcome.notes);
    // a wrong node name falls back to the namespace-wide search, and says so
    let outcome = restart(
        &kubelet,
        &healthy(),
        &components,
        &n.state,
        &settings(Some("cp-9")),
    )
    .await;
    let err = outcome.unwrap_err();
    assert!(
        err.to_string().contains("kube-scheduler still running"),
        "{err}"
    );
}

#[test]
fn pod_names_are_matched_exactly_or_by_prefix() {
    assert!(is_pod_of("etcd-cp-1", "etcd", Some("cp-1")));
    assert!(!is_pod_of("etcd-cp-10", "etcd", Some("cp-1")));
    assert!(is_pod_of("etcd-anything", "etcd", None));
    assert!(!is_pod_of("etcdx-cp-1", "etcd", None));
}

#[test]
fn affected_components_follow_kubeadm() {
    let n = node();
    let all = all_components(&n.manifests()).unwrap();
    let pick = |renewed: &[&str], mode| {
        let renewed: Vec<String> = renewed.iter().map(|s| s.to_string()).collect();
        let (chosen, notes) = choose(mode, &affected_names(&renewed), all.clone(), &healthy());
        (
            chosen.into_iter().map(|c| c.name).collect::<Vec<_>>(),
            notes,
        )
    };
    assert_eq!(
        pick(&["scheduler.conf"], RestartMode::Affected).0,
        ["kube-scheduler"]
    );
    assert_eq!(
        pick(
            &["apiserver-etcd-client", "front-proxy-client"],
            RestartMode::Affected
        )
        .0,
        ["kube-apiserver"]
    );
    assert_eq!(pick(&["etcd-peer"], RestartMode::Affected).0, ["etcd"]);
    assert!(
        pick(
            &["admin.conf", "etcd-healthcheck-client"],
            RestartMode::Affected
        )
        .0
        .is_empty()
    );
    assert_eq!(pick(&[], RestartMode::All).0.len(), 4);
    let everything = [
        "apiserver",
        "controller-manager.conf",
        "scheduler.conf",
        "etcd-server",
    ];
    assert_eq!(pick(&everything, RestartMode::Affected).0.len(), 4);

    let probes = FakeProbes {
        serving_current: vec!["kube-apiserver", "etcd"],
        ..healthy()
    };
    let renewed: Vec<String> = everything.iter().map(|s| s.to_string()).collect();
    let (chosen, notes) = choose(
        RestartMode::Minimal,
        &affected_names(&renewed),
        all.clone(),
        &probes,
    );
    let chosen: Vec<String> = chosen.into_iter().map(|c| c.name).collect();
    assert_eq!(chosen, ["kube-controller-manager", "kube-scheduler"]);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("already serves the renewed certificate"));

    // external etcd: no manifest, said so
    std::fs::remove_file(n.manifests().join("etcd.yaml")).unwrap();
    let all = all_components(&n.manifests()).unwrap();
    let (chosen, notes) = choose(
        RestartMode::Affected,
        &affected_names(&["etcd-server".to_string()]),
        all,
        &healthy(),
    );
    assert!(chosen.is_empty());
    assert!(notes[0].contains("no static-pod manifest"), "{notes:?}");
}

/// The health check of a one-container pod whose container is `name` with `flags`.
fn health_of(name: &str, flags: &[&str]) -> Result<HealthCheck, String> {
    let mut text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\nspec:\n  containers:\n  - name: {name}\n    command:\n    - {name}\n"
    );
    for f in flags {
        text.push_str(&format!("    - {f:?}\n"));
    }
    health_check_of(&crate::node::manifest::parse(
        &text,
        Path::new("/m/x.yaml"),
    )?)
}

#[test]
fn the_apiserver_is_probed_where_it_listens() {
    let api = |flags: &[&str]| match health_of("kube-apiserver", flags).unwrap() {
        HealthCheck::ApiServer(a) => a.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    // kubeadm's usual flags: every address, advertised at the node IP
    assert_eq!(
        api(&["--advertise-address=10.1.2.3", "--secure-port=6443"]),
        ["10.1.2.3:6443", "127.0.0.1:6443"]
    );
    // bound to the node IP only: loopback would never answer
    assert_eq!(
        api(&[
            "--advertise-address=10.1.2.3",
            "--bind-address=10.1.2.4",
            "--secure-port=443"
        ]),
        ["10.1.2.4:443"]
    );
    assert_eq!(
        api(&["--bind-address=0.0.0.0", "--advertise-address=10.1.2.3"]),
        ["10.1.2.3:6443", "127.0.0.1:6443"]
    );
    assert_eq!(
        api(&["--bind-address=::", "--advertise-address=fd00::3"]),
        ["[fd00::3]:6443", "[::1]:6443"]
    );
    assert_eq!(api(&[]), ["127.0.0.1:6443"]);
    let e = health_of("kube-apiserver", &["--bind-address=node1"]).unwrap_err();
    assert!(
        e.contains("/m/x.yaml") && e.contains("--bind-address"),
        "{e}"
    );
}

#[test]
fn etcd_is_probed_on_its_https_client_urls_and_without_tls_by_settling() {
    assert_eq!(
        health_of(
            "etcd",
            &["--listen-client-urls=https://127.0.0.1:2379,https://10.0.0.5:2379"]
        )
        .unwrap(),
        HealthCheck::Etcd(vec![
            "127.0.0.1:2379".parse().unwrap(),
            "10.0.0.5:2379".parse().unwrap()
        ])
    );
    assert_eq!(
        health_of("etcd", &["--listen-client-urls=https://10.0.0.5:2379"]).unwrap(),
        HealthCheck::Etcd(vec!["10.0.0.5:2379".parse().unwrap()])
    );
    // etcd without TLS (kubeadm 1.8): no certificate to check
    assert_eq!(
        health_of("etcd", &["--listen-client-urls=http://127.0.0.1:2379"]).unwrap(),
        HealthCheck::Settle
    );
    assert_eq!(health_of("etcd", &[]).unwrap(), HealthCheck::Settle);
}

#[test]
fn the_controller_manager_and_scheduler_are_probed_on_their_secure_port() {
    let healthz = |name: &str, flags: &[&str]| match health_of(name, flags).unwrap() {
        HealthCheck::Healthz(a) => a.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        other => panic!("{name} {flags:?}: {other:?}"),
    };
    // kubeadm's flags: loopback, default ports
    assert_eq!(
        healthz("kube-controller-manager", &["--bind-address=127.0.0.1"]),
        ["127.0.0.1:10257"]
    );
    assert_eq!(
        healthz("kube-scheduler", &["--bind-address=127.0.0.1"]),
        ["127.0.0.1:10259"]
    );
    // no bind address, or a wildcard one: every address, probed on loopback
    assert_eq!(healthz("kube-scheduler", &[]), ["127.0.0.1:10259"]);
    assert_eq!(
        healthz(
            "kube-scheduler",
            &["--bind-address=0.0.0.0", "--secure-port=20259"]
        ),
        ["127.0.0.1:20259"]
    );
    assert_eq!(
        healthz("kube-controller-manager", &["--bind-address=::"]),
        ["[::1]:10257"]
    );
    assert_eq!(
        healthz(
            "kube-controller-manager",
            &["--bind-address", "10.0.0.5", "--secure-port", "1234"]
        ),
        ["10.0.0.5:1234"]
    );
    // secure serving off: nothing to probe
    assert_eq!(
        health_of("kube-scheduler", &["--secure-port=0"]).unwrap(),
        HealthCheck::Settle
    );
    let e = health_of("kube-scheduler", &["--secure-port=http"]).unwrap_err();
    assert!(
        e.contains("/m/x.yaml") && e.contains("--secure-port"),
        "{e}"
    );
    let e = health_of("kube-controller-manager", &["--bind-address=localhost"]).unwrap_err();
    assert!(e.contains("--bind-address"), "{e}");
    // anything else has no endpoint we know
    assert_eq!(
        health_of("kube-vip", &["--secure-port=10259"]).unwrap(),
        HealthCheck::Settle
    );
}

#[test]
fn a_plain_http_liveness_probe_keeps_old_releases_on_settling() {
    let fixture = |tree: &str, file: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/kubeadm-real")
            .join(tree)
            .join("manifests")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let pod = crate::node::manifest::parse(&text, &path).unwrap();
        (
            health_check_of(&pod).unwrap(),
            health_check_of_manifest(&pod, &text).unwrap(),
        )
    };
    // kubeadm 1.8 and 1.16: kubelet probes 10252/10251 over HTTP; the secure port is absent
    // or asks for credentials
    for tree in ["v1.8-single", "v1.16-stacked-etcd"] {
        for file in ["kube-controller-manager.yaml", "kube-scheduler.yaml"] {
            let (by_flags, by_manifest) = fixture(tree, file);
            assert!(matches!(by_flags, HealthCheck::Healthz(_)), "{tree} {file}");
            assert_eq!(by_manifest, HealthCheck::Settle, "{tree} {file}");
        }
    }
    // kubeadm 1.18: HTTPS on the secure port, as the flags say
    assert_eq!(
        fixture("v1.18-stacked-etcd", "kube-controller-manager.yaml").1,
        HealthCheck::Healthz(vec!["127.0.0.1:10257".parse().unwrap()])
    );
    assert_eq!(
        fixture("v1.18-stacked-etcd", "kube-scheduler.yaml").1,
        HealthCheck::Healthz(vec!["127.0.0.1:10259".parse().unwrap()])
    );
    // the liveness probe of another container, or none, changes nothing
    assert_eq!(liveness_schemes("not: [yaml"), Vec::new());
    let apiserver = fixture("v1.16-stacked-etcd", "kube-apiserver.yaml");
    assert_eq!(apiserver.0, apiserver.1);
}

#[test]
fn health_checks_come_from_the_manifests_flags() {
    let n = node();
    let all = all_components(&n.manifests()).unwrap();
    let by = |name: &str| all.iter().find(|c| c.name == name).unwrap().health.clone();
    assert_eq!(
        by("kube-apiserver"),
        HealthCheck::ApiServer(vec!["127.0.0.1:6443".parse().unwrap()])
    );
    assert_eq!(
        by("etcd"),
        HealthCheck::Etcd(vec!["127.0.0.1:2379".parse().unwrap()])
    );
    assert!(
        matches!(by("kube-scheduler"), HealthCheck::Healthz(a) if a.len() == 1),
        "{:?}",
        by("kube-scheduler")
    );
    assert!(
        matches!(by("kube-controller-manager"), HealthCheck::Healthz(a) if a.len() == 1),
        "{:?}",
        by("kube-controller-manager")
    );
    let pods = StaticPods::read(&n.manifests()).unwrap();
    assert_eq!(
        pods.apiserver_addresses(),
        ["127.0.0.1:6443".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        local_address_of("https://0.0.0.0:2379").unwrap(),
        "127.0.0.1:2379".parse().unwrap()
    );
    assert_eq!(
        local_address_of("https://localhost:12379").unwrap(),
        "127.0.0.1:12379".parse().unwrap()
    );
    assert_eq!(
        local_address_of("https://[::1]:2379").unwrap(),
        "[::1]:2379".parse().unwrap()
    );
    assert!(local_address_of("http://127.0.0.1:2379").is_err());
    assert!(local_address_of("https://127.0.0.1").is_err());
    assert!(
        named_components(&n.manifests(), &["kube-nothing".into()])
            .unwrap_err()
            .contains("kube-apiserver")
    );
}

#[test]
fn recovery_puts_parked_manifests_back() {
    let n = node();
    let before = snapshot(&n.manifests());
    let parking = parking_dir(&n.manifests());
    std::fs::create_dir_all(&parking).unwrap();
    let parked: Vec<ParkedManifest> = before
        .keys()
        .map(|m| ParkedManifest {
            manifest: m.clone(),
            parked: parking.join(m.file_name().unwrap()),
        })
        .collect();
    crate::state::journal::record(
        &n.state,
        &Intent::Park {
            manifests: parked.clone(),
        },
    )
    .unwrap();
    // a crash after moving two of four
    for p in &parked[..2] {
        std::fs::rename(&p.manifest, &p.parked).unwrap();
    }
    let message = crate::state::journal::recover(&n.state).unwrap().unwrap();
    assert!(message.contains("put back"), "{message}");
    assert_all_back(&n, &before);
    // a parked manifest lost from both places is reported, the journal kept
    crate::state::journal::record(
        &n.state,
        &Intent::Park {
            manifests: parked.clone(),
        },
    )
    .unwrap();
    std::fs::remove_file(&parked[0].manifest).unwrap();
    let err = crate::state::journal::recover(&n.state).unwrap_err();
    assert!(err.contains("missing"), "{err}");
    assert!(crate::state::journal::pending(&n.state).unwrap().is_some());
}

#[tokio::test]
async fn a_stale_parked_copy_is_kept_aside_not_overwritten() {
    let n = node();
    let before = snapshot(&n.manifests());
    let kubelet = FakeKubelet::new(&n.manifests(), "cp-1");
    let parking = parking_dir(&n.manifests());
    std::fs::create_dir_all(&parking).unwrap();
    std::fs::write(parking.join("kube-scheduler.yaml"), b"an older manifest").unwrap();
    let components = named_components(&n.manifests(), &["kube-scheduler".into()]).unwrap();
    let outcome = restart(&kubelet, &healthy(), &components, &n.state, &settings(None))
        .await
        .unwrap();
    assert!(
        outcome.notes[0].contains("older parked copy"),
        "{:?}",
        outcome.notes
    );
    assert_eq!(snapshot(&n.manifests()), before);
    let kept: Vec<_> = std::fs::read_dir(&parking).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), b"an older manifest");
}

#[test]
fn the_journal_never_replaces_an_unfinished_step() {
    let n = node();
    let parked = vec![ParkedManifest {
        manifest: n.manifests().join("etcd.yaml"),
        parked: parking_dir(&n.manifests()).join("etcd.yaml"),
    }];
    crate::state::journal::record(
        &n.state,
        &Intent::Park {
            manifests: parked.clone(),
        },
    )
    .unwrap();
    let err = crate::state::journal::record(
        &n.state,
        &Intent::Restore {
            backup: n.state.join("backups/x"),
            files: Vec::new(),
        },
    )
    .unwrap_err();
    assert!(err.contains("unfinished step"), "{err}");
    assert_eq!(
        crate::state::journal::pending(&n.state).unwrap(),
        Some(Intent::Park { manifests: parked })
    );
}

#[test]
fn an_interrupted_restore_is_redone_but_never_over_a_foreign_file() {
    let n = node();
    let cert = n.dir.join("pki/apiserver.crt");
    let key = n.dir.join("pki/apiserver.key");
    let (cert0, key0) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let backup = crate::state::store::backup(
        &n.state.join("backups"),
        "20260101T000000Z",
        &n.dir,
        &[cert.clone(), key.clone()],
    )
    .unwrap();
    std::fs::write(&cert, b"renewed cert").unwrap();
    std::fs::write(&key, b"renewed key").unwrap();
    let intent = crate::state::journal::restore_intent(&backup).unwrap();
    crate::state::journal::record(&n.state, &intent).unwrap();
    // killed after putting the key back, before the certificate
    std::fs::write(&key, &key0).unwrap();
    let message = crate::state::journal::recover(&n.state).unwrap().unwrap();
    assert!(message.contains("interrupted restore"), "{message}");
    assert_eq!(std::fs::read(&cert).unwrap(), cert0);
    assert_eq!(std::fs::read(&key).unwrap(), key0);

    // the same, but someone renewed by hand before the next run: left for a human
    std::fs::write(&cert, b"renewed cert").unwrap();
    let intent = crate::state::journal::restore_intent(&backup).unwrap();
    crate::state::journal::record(&n.state, &intent).unwrap();
    std::fs::write(&cert, b"kubeadm certs renew, by hand").unwrap();
    let err = crate::state::journal::recover(&n.state).unwrap_err();
    assert!(err.contains(&cert.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        b"kubeadm certs renew, by hand"
    );
    assert!(crate::state::journal::pending(&n.state).unwrap().is_some());
}
