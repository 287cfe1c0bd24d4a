//! kubeadm's certificate profiles, for re-issuing a certificate or kubeconfig from scratch when
//! its old copy is gone (renewal copies the old certificate instead: see `reissue`).
//!
//! What kubeadm writes, per release, and reproduced here byte for byte where it matters:
//!
//! - subject `O=…` then `CN=…`, each its own RDN, PrintableString when Go would use it;
//! - keyUsage (critical) digitalSignature|keyEncipherment, plus keyCertSign for CAs;
//! - extendedKeyUsage serverAuth and/or clientAuth (non-critical), none on CAs;
//! - basicConstraints (critical): CA:TRUE on CAs; CA:FALSE on leaves from kubeadm 1.21
//!   (`BasicConstraintsValid: true` in `NewSignedCert`), absent before;
//! - subjectKeyIdentifier on CAs only (Go ≥ 1.15 adds it to CA templates), none on leaves;
//! - authorityKeyIdentifier = the CA's subjectKeyIdentifier when the CA has one (Go's rule);
//! - subjectAltName (non-critical): DNS names then IPs; DNS deduplicated and sorted from kubeadm
//!   1.19 (`RemoveDuplicateAltNames`), in kubeadm's order before; IPs deduplicated, order kept;
//! - extensions in Go's order: keyUsage, extKeyUsage, basicConstraints, SKI, AKI, SAN.
//!
//! Which names a profile carries follows kubeadm's `certlist.go` and `kubeconfig.go` for the
//! node's version (see `NodeFacts::version`; unknown = current kubeadm).

use std::net::IpAddr;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, KeyPair,
    SubjectPublicKeyInfo,
};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::kubeadm::CaSpec;
use crate::pki::kubeconfig::{self, ClientCert};
use crate::pki::reissue::{self, Signer, Validity};
use crate::recover::facts::{NodeFacts, Version, split_host_port};

/// What one kubeadm certificate says: subject, SANs, usages. Built by [`leaf_profile`] or
/// [`ca_profile`], signed by [`issue_leaf`] or [`issue_ca`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Subject CN.
    pub common_name: String,
    /// Subject O values (at most one in every kubeadm profile).
    pub organizations: Vec<String>,
    /// DNS SANs, in the order written.
    pub dns_names: Vec<String>,
    /// IP SANs, in the order written (after the DNS names).
    pub ip_addresses: Vec<IpAddr>,
    /// EKU serverAuth.
    pub server_auth: bool,
    /// EKU clientAuth.
    pub client_auth: bool,
    /// A CA certificate (self-signed by [`issue_ca`]).
    pub is_ca: bool,
    /// Write basicConstraints (critical; CA:TRUE or CA:FALSE). Leaves of kubeadm < 1.21 have none.
    pub basic_constraints: bool,
}

/// The kubeadm behaviours that changed between releases.
#[derive(Debug, Clone, Copy)]
struct Rules {
    /// `RemoveDuplicateAltNames` sorts the DNS SANs (kubernetes PR #92753, 1.19).
    sorted_dns: bool,
    /// Leaves carry basicConstraints CA:FALSE (PR #97266, 1.21).
    leaf_basic_constraints: bool,
    /// `kubeadm:cluster-admins` replaces `system:masters`, etcd clients lose their O (1.29).
    cluster_admins: bool,
    /// The etcd server certificate carries the advertise address (1.14).
    etcd_server_advertise: bool,
    /// etcd server/peer CNs were `kube-etcd` / `kube-etcd-peer` (1.10).
    legacy_etcd_cn: bool,
}

fn rules(version: Option<Version>) -> Rules {
    let at_least = |minor: u32| version.is_none_or(|v| v >= Version::new(1, minor));
    Rules {
        sorted_dns: at_least(19),
        leaf_basic_constraints: at_least(21),
        cluster_admins: at_least(29),
        etcd_server_advertise: at_least(14),
        legacy_etcd_cn: version == Some(Version::new(1, 10)),
    }
}

/// kubeadm's `appendSANsToAltNames`: an IP, else an RFC 1123 (possibly wildcard) DNS name; other
/// entries are dropped, as kubeadm drops them with a warning.
fn append_sans(dns: &mut Vec<String>, ips: &mut Vec<IpAddr>, sans: &[String]) {
    for san in sans {
        let san = san.trim();
        if let Ok(ip) = san.parse::<IpAddr>() {
            ips.push(ip);
        } else if is_dns_subdomain(san) || san.strip_prefix("*.").is_some_and(is_dns_subdomain) {
            dns.push(san.to_string());
        }
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn dedupe<T: PartialEq + Clone>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

fn finish_sans(rules: Rules, dns: Vec<String>, ips: Vec<IpAddr>) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = dedupe(&dns);
    if rules.sorted_dns {
        dns.sort();
    }
    let ips = dedupe(&ips.iter().map(|ip| ip.to_canonical()).collect::<Vec<_>>());
    (dns, ips)
}

fn client(cn: &str, org: Option<&str>) -> Profile {
    Profile {
        common_name: cn.to_string(),
        organizations: org.map(str::to_string).into_iter().collect(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        server_auth: false,
        client_auth: true,
        is_ca: false,
        basic_constraints: false,
    }
}

/// The profile kubeadm's `init` writes for `name` (one of `kubeadm::LEAVES` or `kubelet.conf`)
/// on this node. Fails for an unknown name, or when a fact the profile needs is missing.
/// `super-admin.conf` is returned for every version; kubeadm < 1.29 never writes it, and whether
/// to create it is the caller's decision.
pub fn leaf_profile(name: &str, facts: &NodeFacts) -> Result<Profile, String> {
    let rules = rules(facts.version);
    let node = facts.node_name.trim();
    if node.is_empty() {
        return Err("the node name is empty".into());
    }
    let admins = if rules.cluster_admins {
        "kubeadm:cluster-admins"
    } else {
        "system:masters"
    };
    let etcd_client_org = (!rules.cluster_admins).then_some("system:masters");
    let need_advertise = |what: &str| {
        facts
            .advertise_address
            .ok_or_else(|| format!("{what} needs the advertise address, which is unknown"))
    };
    let mut profile = match name {
        "apiserver" => {
            let advertise = need_advertise("apiserver")?;
            let service = facts
                .service_ip
                .ok_or("apiserver needs the service IP, which is unknown")?;
            let mut dns = vec![
                node.to_string(),
                "kubernetes".to_string(),
                "kubernetes.default".to_string(),
                "kubernetes.default.svc".to_string(),
                format!("kubernetes.default.svc.{}", facts.dns_domain),
            ];
            let mut ips = vec![service, advertise];
            if let Some(cpe) = facts
                .control_plane_endpoint
                .as_deref()
                .filter(|c| !c.trim().is_empty())
            {
                let (host, _) = split_host_port(cpe)
                    .map_err(|e| format!("controlPlaneEndpoint {cpe:?}: {e}"))?;
                match host.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => dns.push(host),
                }
            }
            append_sans(&mut dns, &mut ips, &facts.apiserver_cert_sans);
            let (dns, ips) = finish_sans(rules, dns, ips);
            Profile {
                dns_names: dns,
                ip_addresses: ips,
                server_auth: true,
                client_auth: false,
                ..client("kube-apiserver", None)
            }
        }
        "etcd-server" | "etcd-peer" => {
            let server = name == "etcd-server";
            let mut dns = vec![node.to_string(), "localhost".to_string()];
            let mut ips = Vec::new();
            if !server || rules.etcd_server_advertise {
                ips.push(need_advertise(name)?);
            }
            ips.extend([
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]);
            let extra = if server {
                &facts.etcd_server_cert_sans
            } else {
                &facts.etcd_peer_cert_sans
            };
            append_sans(&mut dns, &mut ips, extra);
            let (dns, ips) = finish_sans(rules, dns, ips);
            let cn = match (rules.legacy_etcd_cn, server) {
                (true, true) => "kube-etcd",
                (true, false) => "kube-etcd-peer",
                (false, _) => node,
            };
            Profile {
                dns_names: dns,
                ip_addresses: ips,
                server_auth: true,
                client_auth: true,
                ..client(cn, None)
            }
        }
        "apiserver-kubelet-client" => client("kube-apiserver-kubelet-client", Some(admins)),
        "apiserver-etcd-client" => client("kube-apiserver-etcd-client", etcd_client_org),
        "etcd-healthcheck-client" => client("kube-etcd-healthcheck-client", etcd_client_org),
        "front-proxy-client" => client("front-proxy-client", None),
        "admin.conf" => client("kubernetes-admin", Some(admins)),
        "super-admin.conf" => client("kubernetes-super-admin", Some("system:masters")),
        "controller-manager.conf" => client("system:kube-controller-manager", None),
        "scheduler.conf" => client("system:kube-scheduler", None),
        "kubelet.conf" => client(&format!("system:node:{node}"), Some("system:nodes")),
        other => return Err(format!("{other:?} is not a kubeadm certificate name")),
    };
    profile.basic_constraints = rules.leaf_basic_constraints;
    Ok(profile)
}

/// The profile of a kubeadm CA (`NewSelfSignedCACert`): CN `kubernetes`, `etcd-ca` or
/// `front-proxy-ca`, a DNS SAN equal to the CN, CA:TRUE. Written as current kubeadm does; CAs of
/// kubeadm ≤ 1.11 all had CN `kubernetes` and no SAN.
pub fn ca_profile(ca: CaSpec) -> Profile {
    let cn = match ca.name {
        "ca" => "kubernetes",
        other => other,
    };
    Profile {
        common_name: cn.to_string(),
        organizations: Vec::new(),
        dns_names: vec![cn.to_string()],
        ip_addresses: Vec::new(),
        server_auth: false,
        client_auth: false,
        is_ca: true,
        basic_constraints: true,
    }
}

// ---- DER building blocks for the extensions, written as Go's crypto/x509 writes them.

use crate::pki::keys::der_encode as der_tlv;

const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

fn ext(oid: &[u64], critical: bool, content: Vec<u8>) -> CustomExtension {
    let mut e = CustomExtension::from_oid_content(oid, content);
    e.set_criticality(critical);
    e
}

/// keyUsage as a minimal BIT STRING (Go trims trailing zero bits).
fn key_usage(is_ca: bool) -> CustomExtension {
    // digitalSignature (bit 0) | keyEncipherment (bit 2) [| keyCertSign (bit 5)]
    let byte: u8 = if is_ca { 0xa4 } else { 0xa0 };
    let unused = byte.trailing_zeros() as u8;
    ext(&[2, 5, 29, 15], true, der_tlv(0x03, &[unused, byte]))
}

fn extended_key_usage(profile: &Profile) -> Option<CustomExtension> {
    let mut oids = Vec::new();
    if profile.server_auth {
        oids.extend(der_tlv(0x06, OID_SERVER_AUTH));
    }
    if profile.client_auth {
        oids.extend(der_tlv(0x06, OID_CLIENT_AUTH));
    }
    (!oids.is_empty()).then(|| ext(&[2, 5, 29, 37], false, der_tlv(0x30, &oids)))
}

fn basic_constraints(is_ca: bool) -> CustomExtension {
    let content = if is_ca {
        der_tlv(0x01, &[0xff])
    } else {
        Vec::new()
    };
    ext(&[2, 5, 29, 19], true, der_tlv(0x30, &content))
}

fn subject_key_id(spki_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| format!("bad public key: {e}"))?;
    // RFC 5280 method 1, what Go (before 1.25) and openssl compute
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &parsed.subject_public_key.data,
    );
    Ok(digest.as_ref().to_vec())
}

fn subject_alt_names(profile: &Profile) -> Result<Option<CustomExtension>, String> {
    let mut names = Vec::new();
    for dns in &profile.dns_names {
        if !dns.is_ascii() || dns.is_empty() {
            return Err(format!("DNS SAN {dns:?} is not an ASCII name"));
        }
        names.extend(der_tlv(0x82, dns.as_bytes()));
    }
    for ip in &profile.ip_addresses {
        match ip.to_canonical() {
            IpAddr::V4(v4) => names.extend(der_tlv(0x87, &v4.octets())),
            IpAddr::V6(v6) => names.extend(der_tlv(0x87, &v6.octets())),
        }
    }
    Ok((!names.is_empty()).then(|| ext(&[2, 5, 29, 17], false, der_tlv(0x30, &names))))
}

/// Go's `encoding/asn1` picks PrintableString when every character allows it, else UTF8String.
fn dn_value(text: &str) -> Result<DnValue, String> {
    let printable = text.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b' ' | b'\'' | b'(' | b')' | b'+' | b',' | b'-' | b'.' | b'/' | b':' | b'=' | b'?'
            )
    });
    if printable {
        Ok(DnValue::PrintableString(text.try_into().map_err(|_| {
            format!("{text:?} is not a PrintableString")
        })?))
    } else {
        Ok(DnValue::Utf8String(text.to_string()))
    }
}

fn subject(profile: &Profile) -> Result<DistinguishedName, String> {
    if profile.common_name.is_empty() {
        return Err("must specify a CommonName".into());
    }
    if profile.organizations.len() > 1 {
        return Err("more than one O would need a multi-valued RDN, which is not supported".into());
    }
    let mut dn = DistinguishedName::new();
    for org in &profile.organizations {
        dn.push(DnType::OrganizationName, dn_value(org)?);
    }
    dn.push(DnType::CommonName, dn_value(&profile.common_name)?);
    Ok(dn)
}

/// Signs a leaf certificate for `profile` with the subject key `subject_spki_der`, as kubeadm's
/// `NewSignedCert` would; returns its DER.
pub fn issue_leaf(
    profile: &Profile,
    subject_spki_der: &[u8],
    signer: &Signer<'_>,
    validity: Validity,
) -> Result<Vec<u8>, String> {
    if profile.is_ca {
        return Err("a CA profile is issued with issue_ca, not as a leaf".into());
    }
    let eku = extended_key_usage(profile).ok_or("must specify at least one ExtKeyUsage")?;
    let (_, ca) = X509Certificate::from_der(signer.cert_der)
        .map_err(|e| format!("cannot parse the CA certificate: {e}"))?;
    // rcgen panics on an empty RDN and refuses multi-valued ones: check first.
    if ca.subject().iter().any(|rdn| rdn.iter().count() != 1) {
        return Err("the CA's subject has an empty or multi-valued RDN".into());
    }
    let ca_ski = ca
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(profile)?;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(reissue::random_serial()?);
    params.is_ca = rcgen::IsCa::NoCa;
    params.use_authority_key_identifier_extension = false;
    params.custom_extensions.push(key_usage(false));
    params.custom_extensions.push(eku);
    if profile.basic_constraints {
        params.custom_extensions.push(basic_constraints(false));
    }
    if let Some(ski) = ca_ski.filter(|s| !s.is_empty()) {
        let aki = der_tlv(0x30, &der_tlv(0x80, &ski));
        params
            .custom_extensions
            .push(ext(&[2, 5, 29, 35], false, aki));
    }
    if let Some(san) = subject_alt_names(profile)? {
        params.custom_extensions.push(san);
    }
    let spki = SubjectPublicKeyInfo::from_der(subject_spki_der)
        .map_err(|e| format!("bad subject public key: {e}"))?;
    crate::pki::reissue::sign(&params, &spki, signer)
}

/// Self-signs a CA certificate for `profile` with `key`, valid from `now` − 5 min for `days`
/// (kubeadm's default is 3650); returns its DER.
pub fn issue_ca(
    profile: &Profile,
    key: &KeyPair,
    now: time::OffsetDateTime,
    days: u32,
) -> Result<Vec<u8>, String> {
    if !profile.is_ca {
        return Err("a leaf profile is issued with issue_leaf, not as a CA".into());
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(profile)?;
    let not_before = now - reissue::BACKDATE;
    let not_after = now + time::Duration::days(i64::from(days));
    params.not_before = not_before.replace_nanosecond(0).unwrap_or(not_before);
    params.not_after = not_after.replace_nanosecond(0).unwrap_or(not_after);
    params.serial_number = Some(reissue::random_serial()?);
    params.is_ca = rcgen::IsCa::NoCa;
    params.use_authority_key_identifier_extension = false;
    params.custom_extensions.push(key_usage(true));
    if let Some(eku) = extended_key_usage(profile) {
        params.custom_extensions.push(eku);
    }
    params.custom_extensions.push(basic_constraints(true));
    let ski = subject_key_id(&rcgen::PublicKeyData::subject_public_key_info(key))?;
    params
        .custom_extensions
        .push(ext(&[2, 5, 29, 14], false, der_tlv(0x04, &ski)));
    if let Some(san) = subject_alt_names(profile)? {
        params.custom_extensions.push(san);
    }
    let cert = params
        .self_signed(key)
        .map_err(|e| format!("self-signing failed: {e}"))?;
    Ok(cert.der().to_vec())
}

fn https(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The server URL kubeadm writes in kubeconfig `name`: the control-plane endpoint for admin,
/// super-admin and kubelet (port defaulting to the API server's), else — and always for the
/// controller-manager and scheduler — the local endpoint `https://advertise:port`.
pub fn server_url(kubeconfig_name: &str, facts: &NodeFacts) -> Result<String, String> {
    let local = || {
        facts
            .advertise_address
            .map(|ip| https(&ip.to_string(), facts.apiserver_port))
            .ok_or_else(|| {
                format!("{kubeconfig_name} needs the advertise address, which is unknown")
            })
    };
    match kubeconfig_name {
        "admin.conf" | "super-admin.conf" | "kubelet.conf" => {
            match facts
                .control_plane_endpoint
                .as_deref()
                .filter(|c| !c.trim().is_empty())
            {
                Some(cpe) => {
                    let (host, port) = split_host_port(cpe)
                        .map_err(|e| format!("controlPlaneEndpoint {cpe:?}: {e}"))?;
                    Ok(https(&host, port.unwrap_or(facts.apiserver_port)))
                }
                None => local(),
            }
        }
        "controller-manager.conf" | "scheduler.conf" => local(),
        other => Err(format!("{other:?} is not a kubeadm kubeconfig")),
    }
}

/// A YAML scalar as Go's yaml writer leaves it: plain when unambiguous, else double-quoted.
fn yaml_scalar(value: &str) -> String {
    let safe = !value.is_empty()
        && value.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'_' | b'/' | b'@' | b'+' | b'=')
                || (i > 0 && matches!(b, b'-' | b':' | b'[' | b']'))
        })
        && !value.ends_with(':')
        && value.parse::<f64>().is_err()
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
        );
    if safe {
        value.to_string()
    } else {
        serde_json::Value::String(value.to_string()).to_string()
    }
}

/// The kubeconfig kubeadm writes for `name` (`CreateBasic` + embedded client credentials): one
/// cluster, one context `<user>@<cluster>`, one user named after the certificate's CN. The text
/// is checked to read back through `kubeconfig::credentials` before it is returned.
pub fn kubeconfig_yaml(
    name: &str,
    server_url: &str,
    ca_bundle_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    facts: &NodeFacts,
) -> Result<String, String> {
    let user = leaf_profile(name, facts)?.common_name;
    let cluster = if facts.cluster_name.trim().is_empty() {
        "kubernetes"
    } else {
        facts.cluster_name.trim()
    };
    kubeconfig_yaml_for(
        name,
        &user,
        cluster,
        server_url,
        ca_bundle_pem,
        cert_pem,
        key_pem,
    )
}

/// [`kubeconfig_yaml`] for any `user` (the CN the client certificate must have) of `cluster`:
/// also the product's own Lease kubeconfig (`coordination::credentials`).
pub fn kubeconfig_yaml_for(
    name: &str,
    user: &str,
    cluster: &str,
    server_url: &str,
    ca_bundle_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<String, String> {
    let user = user.to_string();
    let blocks =
        crate::pki::pem::parse(cert_pem).map_err(|e| format!("client certificate: {e}"))?;
    let der = blocks
        .iter()
        .find(|b| b.label == "CERTIFICATE")
        .map(|b| &b.der)
        .ok_or("the client certificate PEM holds no CERTIFICATE")?;
    let facts_of_cert = crate::pki::cert::CertFacts::from_der(der)?;
    if facts_of_cert.subject_cn.as_deref() != Some(user.as_str()) {
        return Err(format!(
            "the client certificate's CN {:?} is not {user:?}, the user {name} must have",
            facts_of_cert.subject_cn
        ));
    }
    let context = format!("{user}@{cluster}");
    let text = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {cluster_y}\ncontexts:\n- context:\n    cluster: {cluster_y}\n    user: {user_y}\n  name: {context_y}\ncurrent-context: {context_y}\nkind: Config\npreferences: {{}}\nusers:\n- name: {user_y}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = STANDARD.encode(ca_bundle_pem),
        server = yaml_scalar(server_url),
        cluster_y = yaml_scalar(cluster),
        user_y = yaml_scalar(&user),
        context_y = yaml_scalar(&context),
        cert = STANDARD.encode(cert_pem),
        key = STANDARD.encode(key_pem),
    );
    let back = kubeconfig::credentials(&text, Path::new(name))?;
    let embedded_ok = matches!(
        &back.client,
        ClientCert::Embedded { cert_pem: c, key_pem: Some(k) } if c == cert_pem && k == key_pem
    );
    if back.user != user
        || back.cluster != cluster
        || back.server.as_deref() != Some(server_url)
        || back.ca_pem.as_deref() != Some(ca_bundle_pem)
        || !embedded_ok
    {
        return Err(format!("the {name} written does not read back as intended"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::kubeadm;
    use crate::pki::pem;
    use x509_parser::prelude::GeneralName;

    fn facts(version: Option<Version>) -> NodeFacts {
        NodeFacts {
            node_name: "master".into(),
            advertise_address: Some("192.168.1.10".parse().unwrap()),
            apiserver_port: 6443,
            service_ip: Some("10.96.0.1".parse().unwrap()),
            dns_domain: "cluster.local".into(),
            control_plane_endpoint: None,
            apiserver_cert_sans: Vec::new(),
            etcd_server_cert_sans: Vec::new(),
            etcd_peer_cert_sans: Vec::new(),
            version,
            version_inferred: false,
            cluster_name: "kubernetes".into(),
            sources: Vec::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn apiserver_sans_follow_kubeadm_order_and_sorting_by_version() {
        let mut f = facts(Some(Version::new(1, 18)));
        f.control_plane_endpoint = Some("lb.example.com:8443".into());
        f.apiserver_cert_sans = vec![
            "192.0.2.7".into(),
            "extra.example.com".into(),
            "Not_Valid!".into(),
            "192.168.1.10".into(),
            "*.wild.example.com".into(),
        ];
        let p = leaf_profile("apiserver", &f).unwrap();
        assert_eq!(
            p.dns_names,
            [
                "master",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "lb.example.com",
                "extra.example.com",
                "*.wild.example.com"
            ]
        );
        assert_eq!(
            p.ip_addresses,
            [ip("10.96.0.1"), ip("192.168.1.10"), ip("192.0.2.7")]
        );
        assert!(p.server_auth && !p.client_auth && !p.basic_constraints);
        f.version = None;
        let p = leaf_profile("apiserver", &f).unwrap();
        assert_eq!(p.dns_names[0], "*.wild.example.com");
        assert_eq!(p.dns_names.last().unwrap(), "master");
        assert!(p.basic_constraints);
        f.control_plane_endpoint = Some("[fd00::5]:6443".into());
        let p = leaf_profile("apiserver", &f).unwrap();
        assert!(p.ip_addresses.contains(&ip("fd00::5")));
    }

    #[test]
    fn organizations_and_cns_change_with_the_version() {
        let old = facts(Some(Version::new(1, 28)));
        let new = facts(Some(Version::new(1, 29)));
        let unknown = facts(None);
        let org = |n: &str, f: &NodeFacts| leaf_profile(n, f).unwrap().organizations;
        assert_eq!(org("admin.conf", &old), ["system:masters"]);
        assert_eq!(org("admin.conf", &new), ["kubeadm:cluster-admins"]);
        assert_eq!(
            org("apiserver-kubelet-client", &unknown),
            ["kubeadm:cluster-admins"]
        );
        assert_eq!(org("etcd-healthcheck-client", &old), ["system:masters"]);
        assert!(org("etcd-healthcheck-client", &new).is_empty());
        assert!(org("apiserver-etcd-client", &unknown).is_empty());
        assert_eq!(org("super-admin.conf", &new), ["system:masters"]);
        assert_eq!(org("kubelet.conf", &new), ["system:nodes"]);
        assert_eq!(
            leaf_profile("kubelet.conf", &new).unwrap().common_name,
            "system:node:master"
        );
        let v110 = facts(Some(Version::new(1, 10)));
        assert_eq!(
            leaf_profile("etcd-server", &v110).unwrap().common_name,
            "kube-etcd"
        );
        assert_eq!(
            leaf_profile("etcd-peer", &v110).unwrap().common_name,
            "kube-etcd-peer"
        );
        assert_eq!(
            leaf_profile("etcd-peer", &old).unwrap().common_name,
            "master"
        );
        let v113 = facts(Some(Version::new(1, 13)));
        assert_eq!(
            leaf_profile("etcd-server", &v113).unwrap().ip_addresses,
            [ip("127.0.0.1"), ip("::1")]
        );
        assert_eq!(
            leaf_profile("etcd-server", &old).unwrap().ip_addresses,
            [ip("192.168.1.10"), ip("127.0.0.1"), ip("::1")]
        );
        assert!(leaf_profile("sa", &old).is_err());
        let mut no_ip = facts(None);
        no_ip.advertise_address = None;
        assert!(
            leaf_profile("apiserver", &no_ip)
                .unwrap_err()
                .contains("advertise")
        );
        assert!(leaf_profile("admin.conf", &no_ip).is_ok());
    }

    #[test]
    fn every_leaf_name_has_a_profile() {
        let f = facts(None);
        for spec in kubeadm::LEAVES {
            let p = leaf_profile(spec.name, &f).unwrap();
            assert!(p.server_auth || p.client_auth, "{}", spec.name);
            assert!(!p.is_ca);
        }
        assert!(leaf_profile(kubeadm::KUBELET_CONF, &f).is_ok());
    }

    #[test]
    fn server_urls() {
        let mut f = facts(None);
        assert_eq!(
            server_url("admin.conf", &f).unwrap(),
            "https://192.168.1.10:6443"
        );
        f.control_plane_endpoint = Some("lb.example.com".into());
        assert_eq!(
            server_url("admin.conf", &f).unwrap(),
            "https://lb.example.com:6443"
        );
        assert_eq!(
            server_url("scheduler.conf", &f).unwrap(),
            "https://192.168.1.10:6443"
        );
        f.control_plane_endpoint = Some("lb.example.com:443".into());
        assert_eq!(
            server_url("kubelet.conf", &f).unwrap(),
            "https://lb.example.com:443"
        );
        f.control_plane_endpoint = Some("fd00::9".into());
        assert_eq!(
            server_url("super-admin.conf", &f).unwrap(),
            "https://[fd00::9]:6443"
        );
        f.advertise_address = Some(ip("fd00::1"));
        assert_eq!(
            server_url("controller-manager.conf", &f).unwrap(),
            "https://[fd00::1]:6443"
        );
        assert!(server_url("apiserver", &f).is_err());
    }

    struct Ca {
        key: KeyPair,
        der: Vec<u8>,
    }

    fn make_ca(spec: CaSpec) -> Ca {
        let key = crate::pki::keys::generate(crate::pki::keys::KeyAlgorithm::EcdsaP256).unwrap();
        let der = issue_ca(
            &ca_profile(spec),
            &key,
            time::OffsetDateTime::now_utc(),
            3650,
        )
        .unwrap();
        Ca { key, der }
    }

    #[test]
    fn issued_ca_looks_like_kubeadm_s() {
        let ca = make_ca(kubeadm::ETCD_CA);
        let (_, cert) = X509Certificate::from_der(&ca.der).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=etcd-ca");
        assert_eq!(cert.issuer().as_raw(), cert.subject().as_raw());
        let oids: Vec<String> = cert
            .extensions()
            .iter()
            .map(|e| e.oid.to_id_string())
            .collect();
        assert_eq!(oids, ["2.5.29.15", "2.5.29.19", "2.5.29.14", "2.5.29.17"]);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.digital_signature() && ku.value.key_encipherment());
        assert!(ku.value.key_cert_sign());
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names, [GeneralName::DNSName("etcd-ca")]);
        assert_eq!(ca_profile(kubeadm::CA).common_name, "kubernetes");
        assert!(
            issue_ca(
                &leaf_profile("admin.conf", &facts(None)).unwrap(),
                &ca.key,
                time::OffsetDateTime::now_utc(),
                1
            )
            .is_err()
        );
    }

    #[test]
    fn issued_leaf_has_go_s_extension_order_and_aki() {
        let ca = make_ca(kubeadm::ETCD_CA);
        let f = facts(None);
        let profile = leaf_profile("etcd-server", &f).unwrap();
        let key = crate::pki::keys::generate(crate::pki::keys::KeyAlgorithm::EcdsaP256).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let validity = reissue::validity(now, 365, now + time::Duration::days(3650));
        let der = issue_leaf(
            &profile,
            &rcgen::PublicKeyData::subject_public_key_info(&key),
            &Signer {
                cert_der: &ca.der,
                key: &ca.key,
            },
            validity,
        )
        .unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(&ca.der).unwrap();
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
        let oids: Vec<String> = cert
            .extensions()
            .iter()
            .map(|e| e.oid.to_id_string())
            .collect();
        assert_eq!(
            oids,
            [
                "2.5.29.15",
                "2.5.29.37",
                "2.5.29.19",
                "2.5.29.35",
                "2.5.29.17"
            ]
        );
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && !bc.value.ca);
        let ca_ski = ca_cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let aki = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        assert_eq!(aki, ca_ski);
        assert_eq!(cert.subject().to_string(), "CN=master");
        // a CA profile is not a leaf; a profile without EKU is refused
        let signer = Signer {
            cert_der: &ca.der,
            key: &ca.key,
        };
        assert!(
            issue_leaf(
                &ca_profile(kubeadm::CA),
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                &signer,
                validity
            )
            .is_err()
        );
        let mut no_eku = profile.clone();
        no_eku.server_auth = false;
        no_eku.client_auth = false;
        assert!(
            issue_leaf(
                &no_eku,
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                &signer,
                validity
            )
            .is_err()
        );
    }

    #[test]
    fn subject_string_types_follow_go() {
        assert!(matches!(
            dn_value("system:masters").unwrap(),
            DnValue::PrintableString(_)
        ));
        assert!(matches!(dn_value("a_b").unwrap(), DnValue::Utf8String(_)));
        assert!(matches!(dn_value("x*").unwrap(), DnValue::Utf8String(_)));
    }

    #[test]
    fn kubeconfig_reads_back_and_refuses_a_wrong_cert() {
        let ca = make_ca(kubeadm::CA);
        let f = facts(None);
        let key = crate::pki::keys::generate(crate::pki::keys::KeyAlgorithm::EcdsaP256).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let validity = reissue::validity(now, 365, now + time::Duration::days(3650));
        let signer = Signer {
            cert_der: &ca.der,
            key: &ca.key,
        };
        let issue = |name: &str| {
            let der = issue_leaf(
                &leaf_profile(name, &f).unwrap(),
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                &signer,
                validity,
            )
            .unwrap();
            pem::encode("CERTIFICATE", &der)
        };
        let key_pem = crate::pki::keys::encode(
            &key,
            crate::pki::keys::KeyAlgorithm::EcdsaP256,
            crate::pki::keys::KeyEncoding::Sec1,
        )
        .unwrap();
        let ca_pem = pem::encode("CERTIFICATE", &ca.der);
        let cert_pem = issue("kubelet.conf");
        let url = server_url("kubelet.conf", &f).unwrap();
        let text = kubeconfig_yaml(
            "kubelet.conf",
            &url,
            ca_pem.as_bytes(),
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            &f,
        )
        .unwrap();
        assert!(
            text.contains("current-context: system:node:master@kubernetes\n"),
            "{text}"
        );
        assert!(text.contains("\n  name: kubernetes\n"));
        assert!(text.contains("preferences: {}\n"));
        let back =
            kubeconfig::credentials(&text, Path::new("/etc/kubernetes/kubelet.conf")).unwrap();
        assert_eq!(back.user, "system:node:master");
        assert_eq!(back.server.as_deref(), Some("https://192.168.1.10:6443"));
        let wrong = issue("admin.conf");
        let err = kubeconfig_yaml(
            "kubelet.conf",
            &url,
            ca_pem.as_bytes(),
            wrong.as_bytes(),
            key_pem.as_bytes(),
            &f,
        )
        .unwrap_err();
        assert!(err.contains("kubernetes-admin"), "{err}");
    }

    #[test]
    fn yaml_scalars_quote_only_when_needed() {
        assert_eq!(yaml_scalar("system:node:master"), "system:node:master");
        assert_eq!(
            yaml_scalar("https://[fd00::1]:6443"),
            "https://[fd00::1]:6443"
        );
        assert_eq!(yaml_scalar("yes"), "\"yes\"");
        assert_eq!(yaml_scalar("123"), "\"123\"");
        assert_eq!(yaml_scalar("a b"), "\"a b\"");
        assert_eq!(yaml_scalar("-x"), "\"-x\"");
        assert_eq!(yaml_scalar("x:"), "\"x:\"");
    }
}
