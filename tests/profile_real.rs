//! Certificates and kubeconfigs re-issued from scratch with kubeadm's profiles, judged against
//! what real kubeadm wrote (tests/fixtures/kubeadm-real) and by `openssl verify`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use kube_cert_renewer::node::manifest;
use kube_cert_renewer::pki::cert::CertFacts;
use kube_cert_renewer::pki::kubeadm::{self, CaSpec, LeafFile};
use kube_cert_renewer::pki::kubeconfig::{self, ClientCert};
use kube_cert_renewer::pki::profile;
use kube_cert_renewer::pki::reissue::{self, Signer};
use kube_cert_renewer::pki::{keys, pem};
use kube_cert_renewer::recover::facts::{self, FactSources, NodeFacts, Version};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubeadm-real")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn first_cert(pem_bytes: &[u8]) -> Vec<u8> {
    pem::parse(pem_bytes)
        .unwrap()
        .into_iter()
        .find(|b| b.label == "CERTIFICATE")
        .unwrap()
        .der
}

fn cert_file(path: &Path) -> Vec<u8> {
    first_cert(&std::fs::read(path).unwrap())
}

/// The certificate a kubeconfig embeds, if it embeds one.
fn embedded(conf: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(conf).ok()?;
    match kubeconfig::credentials(&text, conf).ok()?.client {
        ClientCert::Embedded { cert_pem, .. } => Some(first_cert(&cert_pem)),
        ClientCert::Files { .. } => None,
    }
}

/// Every extension as (OID, critical, value bytes), in order.
fn extensions(der: &[u8]) -> Vec<(String, bool, Vec<u8>)> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.extensions()
        .iter()
        .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
        .collect()
}

fn sans(der: &[u8]) -> Vec<String> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    let mut out = Vec::new();
    for e in c.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = e.parsed_extension() {
            for n in &san.general_names {
                out.push(match n {
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => format!("IP:{}", IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                        _ => format!("IP:{}", IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                    },
                    other => format!("{other:?}"),
                });
            }
        }
    }
    out
}

fn subject_raw(der: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.subject().as_raw().to_vec()
}

struct CaFiles {
    cert_der: Vec<u8>,
    key: keys::PrivateKey,
}

fn ca_files(tree: &Path, ca: CaSpec) -> CaFiles {
    let cert = tree.join("pki").join(format!("{}.crt", ca.base));
    let key = keys::parse_private_key(
        &std::fs::read(tree.join("pki").join(format!("{}.key", ca.base))).unwrap(),
    )
    .unwrap();
    CaFiles {
        cert_der: cert_file(&cert),
        key,
    }
}

/// Issues `name` from scratch for `facts` with a fresh key of the real certificate's algorithm;
/// returns (DER, key PEM).
fn issue(tree: &Path, name: &str, ca: CaSpec, facts: &NodeFacts, real: &[u8]) -> (Vec<u8>, String) {
    let ca = ca_files(tree, ca);
    let real = CertFacts::from_der(real).unwrap();
    let algorithm = keys::algorithm_of_spki(&real.spki_der).unwrap();
    let key = keys::generate(algorithm).unwrap();
    let encoding = match algorithm {
        keys::KeyAlgorithm::Rsa(_) => keys::KeyEncoding::Pkcs1,
        _ => keys::KeyEncoding::Sec1,
    };
    let key_pem = keys::encode(&key, algorithm, encoding).unwrap();
    let ca_facts = CertFacts::from_der(&ca.cert_der).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let validity = reissue::validity(now, 365, ca_facts.not_after);
    let profile = profile::leaf_profile(name, facts).unwrap();
    let der = profile::issue_leaf(
        &profile,
        &rcgen::PublicKeyData::subject_public_key_info(&key),
        &Signer {
            cert_der: &ca.cert_der,
            key: &ca.key.pair,
        },
        validity,
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    (der, key_pem)
}

fn openssl_verify(ca: &Path, der: &[u8], scratch: &Path, label: &str) {
    let leaf = scratch.join(format!("{label}.pem"));
    std::fs::write(&leaf, pem::encode("CERTIFICATE", der)).unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(&leaf)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{label}: openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces every `*-data:` value so two kubeconfigs can be compared for shape.
fn mask_data(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once("-data: ") {
            Some((k, _)) => format!("{k}-data: X"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every leaf and kubeconfig of `tree`, re-issued from `facts`, against the real ones.
fn compare_tree(label: &str, original: &Path, facts: &NodeFacts) {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    copy_dir(original, &tree);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut compared = 0;
    let names = kubeadm::LEAVES
        .iter()
        .map(|s| (s.name, s.file, s.ca))
        .chain([(
            kubeadm::KUBELET_CONF,
            LeafFile::Kubeconfig(kubeadm::KUBELET_CONF),
            kubeadm::CA,
        )]);
    for (name, file, ca) in names {
        let what = format!("{label} {name}");
        let real = match file {
            LeafFile::PemPair(base) => {
                Some(cert_file(&tree.join("pki").join(format!("{base}.crt"))))
            }
            LeafFile::Kubeconfig(conf) => embedded(&tree.join(conf)),
        };
        if let LeafFile::Kubeconfig(conf) = file {
            let path = tree.join(conf);
            if !path.exists() {
                continue; // super-admin.conf before 1.29
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let real_creds = kubeconfig::credentials(&text, &path).unwrap();
            assert_eq!(
                Some(profile::server_url(conf, facts).unwrap()),
                real_creds.server,
                "{what}: server URL"
            );
        }
        let Some(real) = real else {
            continue; // kubelet.conf pointing at kubelet-client-current.pem
        };
        let (der, key_pem) = issue(&tree, name, ca, facts, &real);
        assert_eq!(subject_raw(&der), subject_raw(&real), "{what}: subject DER");
        assert_eq!(sans(&der), sans(&real), "{what}: SANs");
        // key usage, EKU, basic constraints (present or not), SANs: OID, criticality, bytes, order
        assert_eq!(extensions(&der), extensions(&real), "{what}: extensions");
        let ca_path = tree.join("pki").join(format!("{}.crt", ca.base));
        openssl_verify(&ca_path, &der, &scratch, &name.replace('/', "_"));
        if let LeafFile::Kubeconfig(conf) = file {
            let path = tree.join(conf);
            let ca_pem = std::fs::read(&ca_path).unwrap();
            let cert_pem = pem::encode("CERTIFICATE", &der);
            let url = profile::server_url(conf, facts).unwrap();
            let text = profile::kubeconfig_yaml(
                conf,
                &url,
                &ca_pem,
                cert_pem.as_bytes(),
                key_pem.as_bytes(),
                facts,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let back = kubeconfig::credentials(&text, &path).unwrap();
            let ClientCert::Embedded { cert_pem: got, .. } = &back.client else {
                panic!("{what}: not embedded");
            };
            assert_eq!(
                subject_raw(&first_cert(got)),
                subject_raw(&real),
                "{what}: kubeconfig cert subject"
            );
            assert_eq!(back.server.as_deref(), Some(url.as_str()));
            let real_text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                mask_data(&text),
                mask_data(&real_text),
                "{what}: kubeconfig shape"
            );
        }
        compared += 1;
    }
    assert!(
        compared >= 10,
        "{label}: only {compared} certificates compared"
    );
    // the fixture itself was never touched
    assert!(original.join("pki/ca.key").exists());
}

fn manifests_of(tree: &Path) -> Vec<manifest::StaticPod> {
    manifest::list(&tree.join("manifests"))
        .unwrap()
        .iter()
        .map(|f| manifest::parse(&std::fs::read_to_string(f).unwrap(), f).unwrap())
        .collect()
}

#[test]
fn profiles_reproduce_kubeadm_from_manifests() {
    for (dir, version, node, advertise) in [
        (
            "v1.14-stacked-etcd",
            (1, 14),
            "k8sdemo-master",
            "192.168.0.4",
        ),
        ("v1.16-stacked-etcd", (1, 16), "master1", "192.168.28.10"),
        ("v1.18-stacked-etcd", (1, 18), "master", "192.168.162.131"),
    ] {
        let tree = fixture(dir);
        let pods = manifests_of(&tree);
        let config = std::fs::read_to_string(tree.join("kubeadm.conf")).ok();
        let facts = facts::gather(&FactSources {
            manifests: &pods,
            kubeadm_config: config.as_deref(),
            ..FactSources::default()
        })
        .unwrap();
        assert_eq!(facts.node_name, node, "{dir}");
        assert_eq!(
            facts.advertise_address,
            Some(advertise.parse().unwrap()),
            "{dir}"
        );
        assert_eq!(
            facts.service_ip,
            Some("10.96.0.1".parse().unwrap()),
            "{dir}"
        );
        assert_eq!(facts.apiserver_port, 6443, "{dir}");
        assert_eq!(
            facts.version,
            Some(Version::new(version.0, version.1)),
            "{dir}"
        );
        assert!(!facts.version_inferred, "{dir}");
        assert_eq!(facts.control_plane_endpoint, None, "{dir}");
        assert!(
            facts
                .sources
                .iter()
                .any(|l| l.starts_with(&format!("node name {node}: "))),
            "{dir}: {:?}",
            facts.sources
        );
        compare_tree(dir, &tree, &facts);
    }
}

#[test]
fn profiles_reproduce_kubeadm_1_11_from_its_certificates() {
    let tree = fixture("v1.11-stacked-etcd");
    let certs: Vec<(String, CertFacts)> =
        [("apiserver", "apiserver"), ("etcd-server", "etcd/server")]
            .iter()
            .map(|(name, base)| {
                let der = cert_file(&tree.join("pki").join(format!("{base}.crt")));
                (name.to_string(), CertFacts::from_der(&der).unwrap())
            })
            .collect();
    let facts = facts::gather(&FactSources {
        certs: &certs,
        ..FactSources::default()
    })
    .unwrap();
    assert_eq!(facts.node_name, "kubernetesmaster");
    assert_eq!(
        facts.advertise_address,
        Some("172.16.50.33".parse().unwrap())
    );
    assert_eq!(facts.service_ip, Some("10.96.0.1".parse().unwrap()));
    assert_eq!(facts.dns_domain, "cluster.local");
    assert!(
        facts.apiserver_cert_sans.is_empty(),
        "{:?}",
        facts.apiserver_cert_sans
    );
    assert!(facts.etcd_server_cert_sans.is_empty());
    // only loopback IPs in etcd-server: the newest kubeadm writing that is 1.13
    assert_eq!(facts.version, Some(Version::new(1, 13)));
    assert!(facts.version_inferred);
    compare_tree("v1.11-stacked-etcd", &tree, &facts);
}

#[test]
fn kubeconfigs_of_1_29_give_the_version_and_the_node() {
    let tree = fixture("v1.29-kubeconfigs-only");
    let kubeconfigs: Vec<(String, String)> = std::fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    let facts = facts::gather(&FactSources {
        kubeconfigs: &kubeconfigs,
        ..FactSources::default()
    })
    .unwrap();
    assert!(
        facts.version.is_some_and(|v| v >= Version::new(1, 29)),
        "{:?}",
        facts.sources
    );
    assert!(facts.version_inferred);
    for name in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        let real = embedded(&tree.join(name)).unwrap();
        let p = profile::leaf_profile(name, &facts).unwrap();
        let (_, c) = X509Certificate::from_der(&real).unwrap();
        let orgs: Vec<String> = c
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(p.organizations, orgs, "{name}");
        assert_eq!(
            Some(p.common_name.as_str()),
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
        );
        assert!(p.basic_constraints, "{name}: 1.29 leaves carry CA:FALSE");
    }
}

/// Extensions with the key identifiers' values blanked (they depend on the keys).
fn shape(der: &[u8]) -> Vec<(String, bool, Vec<u8>)> {
    extensions(der)
        .into_iter()
        .map(|(oid, critical, value)| {
            let value = if oid == "2.5.29.14" || oid == "2.5.29.35" {
                Vec::new()
            } else {
                value
            };
            (oid, critical, value)
        })
        .collect()
}

#[test]
fn current_kubeadm_shapes_match_the_1_29_certificates() {
    let tree = fixture("v1.29-kubeconfigs-only");
    let text = std::fs::read_to_string(tree.join("admin.conf")).unwrap();
    let creds = kubeconfig::credentials(&text, &tree.join("admin.conf")).unwrap();
    let real_ca = first_cert(&creds.ca_pem.unwrap());
    // a CA made now has what kubeadm 1.29 made: subject, KU, BC, SKI, SAN DNS=CN, in that order
    let ca_key = keys::generate(keys::KeyAlgorithm::Rsa(2048)).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let ca_der = profile::issue_ca(&profile::ca_profile(kubeadm::CA), &ca_key, now, 3650).unwrap();
    assert_eq!(subject_raw(&ca_der), subject_raw(&real_ca));
    assert_eq!(shape(&ca_der), shape(&real_ca));
    let facts = NodeFacts {
        node_name: "cp".into(),
        advertise_address: Some("192.168.10.100".parse().unwrap()),
        apiserver_port: 6443,
        service_ip: Some("10.96.0.1".parse().unwrap()),
        dns_domain: "cluster.local".into(),
        control_plane_endpoint: None,
        apiserver_cert_sans: Vec::new(),
        etcd_server_cert_sans: Vec::new(),
        etcd_peer_cert_sans: Vec::new(),
        version: None,
        version_inferred: false,
        cluster_name: "kubernetes".into(),
        sources: Vec::new(),
    };
    let validity = reissue::validity(now, 365, now + time::Duration::days(3650));
    for name in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        let real = embedded(&tree.join(name)).unwrap();
        let key = keys::generate(keys::KeyAlgorithm::Rsa(2048)).unwrap();
        let der = profile::issue_leaf(
            &profile::leaf_profile(name, &facts).unwrap(),
            &rcgen::PublicKeyData::subject_public_key_info(&key),
            &Signer {
                cert_der: &ca_der,
                key: &ca_key,
            },
            validity,
        )
        .unwrap();
        assert_eq!(subject_raw(&der), subject_raw(&real), "{name}");
        // KU, EKU, BC CA:FALSE, AKI: as kubeadm 1.29 wrote them
        assert_eq!(shape(&der), shape(&real), "{name}");
        let scratch = tempfile::tempdir().unwrap();
        let ca_path = scratch.path().join("ca.crt");
        std::fs::write(&ca_path, pem::encode("CERTIFICATE", &ca_der)).unwrap();
        openssl_verify(&ca_path, &der, scratch.path(), "leaf");
    }
}
