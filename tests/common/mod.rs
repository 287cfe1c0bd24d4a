//! Shared helpers of the integration tests: the real fixtures, the binary, and openssl as an
//! independent oracle.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The real kubeadm trees, copied into the repository (tests/fixtures/kubeadm-real).
pub fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubeadm-real");
    let mut trees: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    trees.sort();
    assert!(
        trees.len() >= 6,
        "expected the six real trees in {}",
        root.display()
    );
    trees
}

/// A test that cannot run here (a tool, a runtime, root missing) fails — unless the person asked
/// for a quick run (`KCR_QUICK=1`): then it says so loudly, on the terminal itself, and skips.
/// Returns only in a quick run.
pub fn cannot_run(what: &str) {
    if std::env::var_os("KCR_QUICK").is_some() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("\n!!! SKIPPED (KCR_QUICK): {what}\n\n").as_bytes(),
        );
        return;
    }
    panic!(
        "{what}. `sudo bash tests/run.sh` installs and starts everything the tests need; \
         `KCR_QUICK=1 cargo test` skips, loudly, what cannot run here"
    );
}

/// Copies a directory tree (files keep their modes).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Every regular file below `dir`, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_below(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Now, to the second (what `--now` is given).
pub fn now() -> OffsetDateTime {
    let n = OffsetDateTime::now_utc();
    n.replace_nanosecond(0).unwrap()
}

/// Runs the binary with a nonexistent config (defaults) and `--now`.
pub fn run(now: OffsetDateTime, args: &[&str]) -> Output {
    run_with_config(now, Path::new("/nonexistent/kube-cert-renewer.toml"), args)
}

/// Runs the binary with a given config file.
pub fn run_with_config(now: OffsetDateTime, config: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"))
        .arg("--config")
        .arg(config)
        .arg("--now")
        .arg(now.format(&Rfc3339).unwrap())
        .args(args)
        .output()
        .expect("run kube-cert-renewer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked: {stderr}"
    );
    out
}

/// `check -o json` on a kubernetes dir: (exit code, JSON).
pub fn check_json(now: OffsetDateTime, dir: &Path) -> (i32, serde_json::Value) {
    let out = run(
        now,
        &[
            "check",
            "-o",
            "json",
            "--kubernetes-dir",
            dir.to_str().unwrap(),
        ],
    );
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check -o json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), json)
}

/// `check` text output: (exit code, stdout, stderr).
pub fn check_text(now: OffsetDateTime, dir: &Path) -> (i32, String, String) {
    let out = run(now, &["check", "--kubernetes-dir", dir.to_str().unwrap()]);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs openssl; returns (success, stdout+stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// NotAfter (or NotBefore) of a PEM file as openssl reads it, in RFC 3339.
pub fn openssl_date(cert: &Path, which: &str) -> String {
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-dateopt",
        "iso_8601",
        which,
    ]);
    assert!(ok, "openssl x509 failed on {}: {text}", cert.display());
    // e.g. "notAfter=2019-09-06 10:41:55Z"
    let value = text.trim().split_once('=').unwrap().1.trim();
    value.replacen(' ', "T", 1)
}

/// Writes the certificate embedded in a kubeconfig (first client-certificate-data) to a file.
/// Independent of the product's YAML code on purpose: a line scan, as a shell script would do.
pub fn extract_kubeconfig_cert(kubeconfig: &Path, out: &Path) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("client-certificate-data:"))
        .unwrap_or_else(|| panic!("no client-certificate-data in {}", kubeconfig.display()));
    let b64 = line.split_once(':').unwrap().1.trim();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    std::fs::write(out, pem).unwrap();
}

/// The CA file of a kubeadm CA name.
pub fn ca_file(pki: &Path, ca: &str) -> PathBuf {
    match ca {
        "ca" => pki.join("ca.crt"),
        "etcd-ca" => pki.join("etcd/ca.crt"),
        "front-proxy-ca" => pki.join("front-proxy-ca.crt"),
        other => panic!("unknown CA {other}"),
    }
}

/// Finds an element by name in a JSON array field.
pub fn by_name<'a>(json: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    json[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {json}"))
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}: {json}"))
}

/// Every file below `dir` with its bytes.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|f| {
            let d = std::fs::read(&f).unwrap();
            (f, d)
        })
        .collect()
}

/// `snapshot` without the files a run keeps beside its targets while it may still be undone
/// (`.<name>.kcr-prev`, `.<name>.kcr-tmp.*`): the tree as an operator sees it.
pub fn visible_snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut s = snapshot(dir);
    s.retain(|p, _| !is_in_flight(p));
    s
}

/// A file a run keeps beside its targets while it may still be undone.
pub fn is_in_flight(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.starts_with('.') && (name.ends_with(".kcr-prev") || name.contains(".kcr-tmp."))
}

/// Runs `renew` on a kubernetes dir with a state dir: (exit code, stdout, stderr).
pub fn renew(
    now: OffsetDateTime,
    dir: &Path,
    state: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut all = vec![
        "--kubernetes-dir",
        dir.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "renew",
        // the certificate part only; the restart tests run on containerd (tests/restart.rs)
        "--no-restart",
    ];
    all.extend_from_slice(args);
    let out = run(now, &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// openssl's text dump of a certificate without what a renewal must change (serial, validity,
/// public key, signature value, key identifiers): what must stay equal.
pub fn identity_text(cert: &Path) -> String {
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-text",
        "-certopt",
        "no_serial,no_validity,no_pubkey,no_sigdump",
    ]);
    assert!(ok, "{text}");
    let mut out = Vec::new();
    let mut skip_next = false;
    for line in text.lines() {
        if skip_next {
            skip_next = false;
            continue;
        }
        if line.contains("Subject Key Identifier") || line.contains("Authority Key Identifier") {
            skip_next = true;
            continue;
        }
        out.push(line.to_string());
    }
    out.join("\n")
}

/// "Private-Key: (2048 bit, 2 primes)" and the curve, as openssl describes a key.
pub fn key_kind(key_pem: &Path) -> String {
    let (ok, text) = openssl(&["pkey", "-in", key_pem.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "{text}");
    text.lines()
        .filter(|l| {
            l.starts_with("Private-Key") || l.contains("ASN1 OID") || l.contains("NIST CURVE")
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// Writes the key embedded in a kubeconfig (client-key-data) to a file.
pub fn extract_kubeconfig_key(kubeconfig: &Path, out: &Path) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("client-key-data:"))
        .unwrap();
    let b64 = line.split_once(':').unwrap().1.trim();
    std::fs::write(
        out,
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
}

/// Verifies `cert` against exactly one of the node's CA files: the one `check` named.
pub fn assert_signed_only_by(pki: &Path, cert: &Path, ca_name: &str, context: &str) {
    let expected = ca_file(pki, ca_name);
    let (ok, text) = openssl(&[
        "verify",
        "-no_check_time",
        "-CAfile",
        expected.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(
        ok,
        "{context}: openssl does not confirm {ca_name} signed it: {text}"
    );
    for other in ["ca", "etcd-ca", "front-proxy-ca"] {
        let file = ca_file(pki, other);
        if other == ca_name || !file.exists() {
            continue;
        }
        let (ok, _) = openssl(&[
            "verify",
            "-no_check_time",
            "-CAfile",
            file.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(
            !ok,
            "{context}: {other} also verifies it; the CA choice is ambiguous"
        );
    }
}

/// True when `tool` exists; otherwise the test cannot run ([`cannot_run`]). `tests` names the
/// tests that need it in that message, e.g. "health-probe".
pub fn have(tool: &str, tests: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        cannot_run(&format!(
            "{tool} is not installed: the {tests} test that needs it cannot run"
        ));
    }
    found
}

/// A TCP port that is free on 127.0.0.1 when asked.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999 by default): a port from that range may
    // be taken, while a component restarts, as the local port of some outgoing connection (a
    // probe, the CRI), and the component's restart then fails to bind. And never the same port
    // twice in one test process: a node of a parallel test frees its ports while it restarts.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1)
        ^ std::process::id();
    loop {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let port = 20_000 + (seed >> 8) % 12_000;
        let port = u16::try_from(port).unwrap();
        let mut given = GIVEN.lock().unwrap();
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
}

/// 127.0.0.1:`port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process (a server of a test) killed and reaped when the guard is dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(&local(port), Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The serial openssl reads from a PEM file, in lower-case hex (the health probe's format).
pub fn openssl_serial(cert: &Path) -> String {
    let (ok, text) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"]);
    assert!(ok, "{text}");
    text.trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// `openssl s_server -www` serving `name`.crt/.key of `pki` with `pki/ca.crt` as the client
/// CA; `args` says how clients are verified (`-verify 1`, `-Verify 1`, ...) and adds any other
/// flags. Returns once it listens, with its port.
pub fn s_server(pki: &Path, name: &str, args: &[&str]) -> (Guard, u16) {
    let port = free_port();
    let mut all = vec![
        "s_server".to_string(),
        "-accept".into(),
        port.to_string(),
        "-cert".into(),
        pki.join(format!("{name}.crt")).display().to_string(),
        "-key".into(),
        pki.join(format!("{name}.key")).display().to_string(),
        "-CAfile".into(),
        pki.join("ca.crt").display().to_string(),
        "-www".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let mut child = Command::new("openssl")
        .args(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    wait_listening(port, &mut child, "openssl s_server");
    (Guard(child), port)
}

/// Debian's etcd as a one-member cluster on `pki`'s etcd certificates, requiring client
/// certificates from `pki/etcd/ca.crt`; its data and `etcd.log` go to `tmp`. Returns once it
/// listens, with its client port; it may not be healthy yet (see [`wait_etcd_healthy`]).
pub fn start_etcd(tmp: &Path, pki: &Path) -> (Guard, u16) {
    let (client, peer) = (free_port(), free_port());
    let log = std::fs::File::create(tmp.join("etcd.log")).unwrap();
    let mut child = Command::new("etcd")
        .args([
            "--name",
            "n1",
            "--data-dir",
            tmp.join("etcd-data").to_str().unwrap(),
            "--listen-client-urls",
            &format!("https://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("https://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("https://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("https://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("n1=https://127.0.0.1:{peer}"),
            "--cert-file",
            pki.join("etcd/server.crt").to_str().unwrap(),
            "--key-file",
            pki.join("etcd/server.key").to_str().unwrap(),
            "--client-cert-auth",
            "--trusted-ca-file",
            pki.join("etcd/ca.crt").to_str().unwrap(),
            "--peer-cert-file",
            pki.join("etcd/peer.crt").to_str().unwrap(),
            "--peer-key-file",
            pki.join("etcd/peer.key").to_str().unwrap(),
            "--peer-client-cert-auth",
            "--peer-trusted-ca-file",
            pki.join("etcd/ca.crt").to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    wait_listening(client, &mut child, "etcd");
    (Guard(child), client)
}

/// Retries `health` every 200 ms for up to 30 s until it answers Ok: etcd listens before it has
/// elected itself leader, and is unhealthy until then. Fails with the last error and the
/// `etcd.log` that [`start_etcd`] wrote to `tmp`.
pub fn wait_etcd_healthy<T>(tmp: &Path, mut health: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match health() {
            Ok(healthy) => return healthy,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "etcd never became healthy: {last}\n{}",
            std::fs::read_to_string(tmp.join("etcd.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first line of a PEM file (`-----BEGIN RSA PRIVATE KEY-----` …): its encoding.
pub fn pem_label(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string()
}

/// `chattr +i` on a path for the life of the guard: a file nothing may replace or link, a
/// directory that takes no new file.
pub struct Immutable(PathBuf);
impl Immutable {
    pub fn new(p: PathBuf) -> Immutable {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "chattr +i {} failed (needs root and ext4/xfs)",
            p.display()
        );
        Immutable(p)
    }
}
impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// A tmpfs of `size` (e.g. "2m") mounted on a directory for the life of the guard: a small
/// filesystem a test can fill. Needs root; elsewhere the test cannot run ([`cannot_run`]).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            cannot_run(&format!(
                "cannot mount a tmpfs on {} ({}): the full-disk tests cannot run",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Fills the filesystem until not one more byte fits, except `spare` bytes held by a
    /// second file that is removed at the end (so exactly that much is free). Returns the
    /// filler files.
    pub fn fill(&self, spare: usize) -> Vec<PathBuf> {
        use std::io::Write;
        let hold = self.0.join(".hold");
        std::fs::write(&hold, vec![0u8; spare]).unwrap();
        let filler = self.0.join(".filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let mut chunk = 1 << 16;
        while chunk > 0 {
            match f.write(&vec![0u8; chunk]) {
                Ok(n) if n == chunk => {}
                _ => chunk /= 2,
            }
        }
        drop(f);
        std::fs::remove_file(&hold).unwrap();
        vec![filler]
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`: what a `Type=notify` service
/// sends, with when it arrived.
pub struct NotifySocket {
    sock: std::os::unix::net::UnixDatagram,
    pub path: PathBuf,
    /// Every message so far (each may hold several `KEY=VALUE` lines), with its arrival.
    pub seen: Vec<(Instant, String)>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// The next message, or None after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 65536];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push((Instant::now(), msg.clone()));
                Some(msg)
            }
            Err(_) => None,
        }
    }

    /// Waits (up to `timeout`) for a message `matches` accepts; fails with everything seen.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(msg) = self.recv(deadline.saturating_duration_since(Instant::now()))
                && matches(&msg)
            {
                return msg;
            }
        }
        panic!(
            "no {what} within {timeout:?}; seen: {:?}",
            self.seen.iter().map(|s| &s.1).collect::<Vec<_>>()
        );
    }
}

/// `kube-cert-renewer run` started by a test: its events go to `log` (stderr, human format),
/// its notify messages to a [`NotifySocket`]; SIGTERM and reaped when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `command` (the binary with its global options) as `run --log-to stderr`.
    pub fn start(mut command: Command, notify: &NotifySocket, log: PathBuf) -> Daemon {
        let child = command
            .args(["run", "--log-to", "stderr"])
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    /// What it said so far.
    pub fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`-HUP`, `-TERM`).
    pub fn signal(&self, which: &str) {
        assert!(
            Command::new("kill")
                .args([which, &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits (up to `timeout`) until it said `text`.
    pub fn wait_said(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.said().contains(text) {
            assert!(
                Instant::now() < deadline,
                "never said {text:?}: {}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's etcd run as a plain child process with exactly the command of a generated node's
/// `manifests/etcd.yaml` (`dir` is the node's kubernetes dir), container paths mapped onto the
/// host through the manifest's hostPath volumes, its output in `dir/etcd.log`. Returns with the
/// local client addresses the restart would probe (from `--listen-client-urls`), once etcd
/// accepts connections on the first; it may not be healthy yet (its peers may not be up).
pub fn spawn_etcd_of_manifest(dir: &Path) -> (Guard, Vec<SocketAddr>) {
    use kube_cert_renewer::node::manifest;
    use kube_cert_renewer::node::restart::{HealthCheck, health_check_of};
    let pod = manifest::read(&dir.join("manifests/etcd.yaml")).unwrap();
    let container = pod.container("etcd").expect("an etcd container");
    let args: Vec<String> = container.argv[1..]
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some((flag, value)) if value.starts_with('/') => {
                let host = pod
                    .host_path_of(container, Path::new(value))
                    .unwrap_or_else(|| panic!("{arg}: no hostPath volume holds it"));
                format!("{flag}={}", host.display())
            }
            _ => arg.clone(),
        })
        .collect();
    let addresses = match health_check_of(&pod).unwrap() {
        HealthCheck::Etcd(addresses) => addresses,
        other => panic!("etcd manifest probed as {other:?}"),
    };
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let mut child = Command::new("etcd")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let first = addresses[0];
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(&first, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "etcd of {} exited early: {status}\n{}",
                dir.display(),
                std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "etcd never listened on {first}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Guard(child), addresses)
}
pub mod standin_node;

/// A non-root system user made for one test (`useradd --system`, a name no other test uses),
/// removed when dropped — also when the test fails: the hostile local user of the trust cases.
pub struct TestUser {
    /// Its login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
}

impl TestUser {
    /// Makes the user; `None` (after [`cannot_run`]) when this is not root or `useradd` is
    /// missing.
    pub fn create() -> Option<TestUser> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0");
        if !root {
            cannot_run("a test with another user needs root (useradd)");
            return None;
        }
        if !have("useradd", "another user") || !have("runuser", "another user") {
            return None;
        }
        let name = format!(
            "kcr-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // useradd takes a lock on /etc/passwd: tests running at once may have to wait for it
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name)
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // from here on the guard removes it, whatever happens
        let mut user = TestUser { name, uid: 0 };
        let out = Command::new("id")
            .args(["-u", &user.name])
            .output()
            .unwrap();
        user.uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_ne!(user.uid, 0);
        Some(user)
    }

    /// Runs `program args` as this user (`runuser`), its output returned.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", &self.name, "--", program])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `program args` as this user and fails unless it succeeds.
    pub fn must(&self, program: &str, args: &[&str]) {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} as {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Gives `path` (not following a link) to this user.
    pub fn chown(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.uid)).unwrap();
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match Command::new("userdel").arg(&self.name).status() {
                // 6: no such user (gone already)
                Ok(s) if s.success() || s.code() == Some(6) => return,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        eprintln!(
            "userdel {} kept failing: remove the user by hand",
            self.name
        );
    }
}
