//! Benchmark of `check`: a full kubeadm node, and 10,000 certificates under `extra_paths`.
//! Run with `cargo bench --bench check`. Targets: a node in ≤ 10 ms, ≥ 50,000 certificates/s.

use std::time::{Duration, Instant};

use kube_cert_renewer::config::Config;
use kube_cert_renewer::demo::nodegen::{self, LeafTemplate, NodeSpec};
use kube_cert_renewer::pki::inventory::{self, Options};
use kube_cert_renewer::pki::keys::KeyAlgorithm;
use kube_cert_renewer::report::Report;
use kube_cert_renewer::report::status::Thresholds;
use time::OffsetDateTime;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One whole `check`: inventory, classification and the (default) text rendering.
fn check_once(config: &Config, now: OffsetDateTime) -> usize {
    let inv = inventory::scan(
        &config.paths(),
        &Options {
            extra_paths: config.extra_paths.clone(),
        },
    );
    let report = Report::new(&inv, now, &Thresholds::from(config));
    report.text().len() + inv.others.len()
}

fn main() {
    let now = OffsetDateTime::now_utc();
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = tmp.path().join("node");
    nodegen::generate(&node, &NodeSpec::new(now, 20)).expect("generate node");
    let config = Config {
        kubernetes_dir: node.clone(),
        ..Config::default()
    };
    for _ in 0..20 {
        check_once(&config, now);
    }
    let samples: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(check_once(&config, now));
            t.elapsed()
        })
        .collect();
    let node_median = median(samples);
    println!(
        "check of a full RSA-2048 kubeadm node (15 certificates, signatures verified): median {:.3} ms over 200 runs",
        node_median.as_secs_f64() * 1e3
    );

    // 10,000 certificate files: 100 distinct ECDSA leaves, each written 100 times.
    let extra = tmp.path().join("extra");
    std::fs::create_dir(&extra).expect("mkdir");
    let mut spec = NodeSpec::new(now, 200);
    spec.key_algorithm = KeyAlgorithm::EcdsaP256;
    spec.ca_key_algorithm = KeyAlgorithm::EcdsaP256;
    let ca = nodegen::make_ca("bench-ca", &spec).expect("ca");
    let certs: Vec<String> = (0..100)
        .map(|i| {
            let t = LeafTemplate {
                cn: format!("leaf-{i}"),
                org: None,
                sans: vec![format!("leaf-{i}.example")],
                server: true,
                client: false,
            };
            nodegen::make_leaf(&t, &ca, &spec).expect("leaf").0
        })
        .collect();
    let total = 10_000;
    for i in 0..total {
        std::fs::write(
            extra.join(format!("cert-{i:05}.pem")),
            &certs[i % certs.len()],
        )
        .expect("write");
    }
    let big = Config {
        kubernetes_dir: tmp.path().join("empty"),
        extra_paths: vec![format!("{}/*.pem", extra.display())],
        ..Config::default()
    };
    check_once(&big, now);
    let samples: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(check_once(&big, now));
            t.elapsed()
        })
        .collect();
    let big_median = median(samples);
    let scan_only = median(
        (0..10)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(inventory::scan(
                    &big.paths(),
                    &Options {
                        extra_paths: big.extra_paths.clone(),
                    },
                ));
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "  of which inventory (glob, read, parse): {:.1} ms",
        scan_only.as_secs_f64() * 1e3
    );
    println!(
        "check of {total} certificates under extra_paths: median {:.1} ms over 10 runs = {:.0} certificates/s",
        big_median.as_secs_f64() * 1e3,
        total as f64 / big_median.as_secs_f64()
    );
}
