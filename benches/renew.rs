//! Benchmark of `renew all` on a full RSA-2048 kubeadm node (11 certificates), with fresh keys
//! and with `--reuse-keys`, against the same node renewed by a shell loop of openssl commands
//! (one `x509 -req` per certificate, `genrsa` too for fresh keys), on the same machine in the
//! same run. Run with `cargo bench --bench renew`. Targets: ≥ 20× with reused keys, ≥ 5× fresh.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kube_cert_renewer::demo::nodegen::{self, NodeSpec};
use time::OffsetDateTime;

const OPENSSL_LOOP: &str = r#"#!/bin/bash
# What operators paste: renew every kubeadm certificate with openssl, one at a time.
set -e
K=$1; FRESH=$2; P=$K/pki
sign() { # cert key ca ca-key
  if [ "$FRESH" = 1 ]; then openssl genrsa -traditional -out "$2" 2048 2>/dev/null; fi
  openssl x509 -x509toreq -in "$1" -signkey "$2" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$3" -CAkey "$4" -set_serial "$RANDOM$RANDOM$RANDOM" \
    -days 365 -copy_extensions copyall -out "$1" 2>/dev/null
  rm -f "$1.csr"
}
for c in apiserver apiserver-kubelet-client; do sign $P/$c.crt $P/$c.key $P/ca.crt $P/ca.key; done
sign $P/front-proxy-client.crt $P/front-proxy-client.key $P/front-proxy-ca.crt $P/front-proxy-ca.key
for c in etcd/server etcd/peer etcd/healthcheck-client apiserver-etcd-client; do
  sign $P/$c.crt $P/$c.key $P/etcd/ca.crt $P/etcd/ca.key
done
for f in admin super-admin controller-manager scheduler; do
  c=$K/$f.conf
  grep client-certificate-data: $c | awk '{print $2}' | base64 -d > $c.crt
  grep client-key-data: $c | awk '{print $2}' | base64 -d > $c.key
  sign $c.crt $c.key $P/ca.crt $P/ca.key
  sed -i "s|client-certificate-data: .*|client-certificate-data: $(base64 -w0 $c.crt)|; s|client-key-data: .*|client-key-data: $(base64 -w0 $c.key)|" $c
  rm -f $c.crt $c.key
done
"#;

fn copy_tree(src: &Path, dst: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cp -a failed");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_runs(
    runs: usize,
    template: &Path,
    scratch: &Path,
    mut cmd: impl FnMut(&Path, &Path) -> Command,
) -> Duration {
    let samples = (0..runs)
        .map(|i| {
            let dir = scratch.join(format!(
                "run-{}-{i}",
                scratch.read_dir().map(|r| r.count()).unwrap_or(0)
            ));
            copy_tree(template, &dir);
            let state = dir.with_extension("state");
            let mut c = cmd(&dir, &state);
            let t = Instant::now();
            let out = c.output().expect("run");
            let elapsed = t.elapsed();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            elapsed
        })
        .collect();
    median(samples)
}

fn main() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let template = tmp.path().join("template");
    let mut spec = NodeSpec::new(OffsetDateTime::now_utc(), 5);
    spec.manifests = false;
    nodegen::generate(&template, &spec).expect("node");
    let script = tmp.path().join("openssl-loop.sh");
    std::fs::write(&script, OPENSSL_LOOP).expect("script");
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    let runs = 7;
    let ours = |extra: &'static [&'static str]| {
        move |dir: &Path, state: &Path| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_kube-cert-renewer"));
            c.args(["--config", "/nonexistent"])
                .arg("--kubernetes-dir")
                .arg(dir)
                .arg("--state-dir")
                .arg(state)
                .args(["renew", "all", "--no-restart"])
                .args(extra);
            c
        }
    };
    let shell = |fresh: &'static str| {
        let script = script.clone();
        move |dir: &Path, _: &Path| {
            let mut c = Command::new("bash");
            c.arg(&script).arg(dir).arg(fresh);
            c
        }
    };
    let ours_reuse = time_runs(runs, &template, &scratch, ours(&["--reuse-keys"]));
    let loop_reuse = time_runs(runs, &template, &scratch, shell("0"));
    let ours_fresh = time_runs(runs, &template, &scratch, ours(&[]));
    let loop_fresh = time_runs(runs, &template, &scratch, shell("1"));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "renew all, full RSA-2048 node (11 certificates), median of {runs} runs, whole processes:"
    );
    println!(
        "  reused keys: kube-cert-renewer {:.0} ms, openssl loop {:.0} ms -> {:.1}x (target >= 20x)",
        ms(ours_reuse),
        ms(loop_reuse),
        loop_reuse.as_secs_f64() / ours_reuse.as_secs_f64()
    );
    println!(
        "  fresh keys:  kube-cert-renewer {:.0} ms, openssl loop {:.0} ms -> {:.1}x (target >= 5x)",
        ms(ours_fresh),
        ms(loop_fresh),
        loop_fresh.as_secs_f64() / ours_fresh.as_secs_f64()
    );
}
