//! Kubeconfig files: find the current-context user's client credentials, and (for renewal)
//! replace them in place without touching a single other byte of the file.
//!
//! Rewriting by span rather than by re-serialising keeps comments, ordering and quoting exactly
//! as the operator (or kubeadm) left them, and never produces YAML that Go reads differently
//! (`yes`/`no`/`on` unquoted). The new text is re-parsed and checked before anyone writes it.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Option<Vec<RawNamedContext>>,
    #[serde(default)]
    clusters: Option<Vec<RawNamedCluster>>,
    #[serde(default)]
    users: Option<Vec<RawNamedUser>>,
}

#[derive(Debug, Deserialize)]
struct RawNamedContext {
    name: String,
    context: RawContext,
}

#[derive(Debug, Deserialize)]
struct RawContext {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawNamedCluster {
    name: String,
    cluster: RawCluster,
}

#[derive(Debug, Deserialize)]
struct RawCluster {
    #[serde(rename = "certificate-authority-data", default)]
    certificate_authority_data: Option<Spanned<String>>,
    #[serde(default)]
    server: Option<String>,
    #[serde(rename = "tls-server-name", default)]
    tls_server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawNamedUser {
    name: String,
    #[serde(default)]
    user: Option<RawUser>,
}

#[derive(Debug, Deserialize)]
struct RawUser {
    #[serde(rename = "client-certificate-data", default)]
    client_certificate_data: Option<Spanned<String>>,
    #[serde(rename = "client-key-data", default)]
    client_key_data: Option<Spanned<String>>,
    #[serde(rename = "client-certificate", default)]
    client_certificate: Option<String>,
    #[serde(rename = "client-key", default)]
    client_key: Option<String>,
}

/// Where the current-context user's client certificate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// `client-certificate-data` / `client-key-data`, decoded from base64.
    Embedded {
        /// PEM text of the certificate (may be a chain).
        cert_pem: Vec<u8>,
        /// PEM text of the key, when present.
        key_pem: Option<Vec<u8>>,
    },
    /// `client-certificate` / `client-key` file paths (relative ones resolved against the
    /// kubeconfig's directory, as kubectl does).
    Files {
        /// The certificate file.
        cert: PathBuf,
        /// The key file, when named.
        key: Option<PathBuf>,
    },
}

/// The credentials a kubeconfig uses in its current context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The current context's user name.
    pub user: String,
    /// The current context's cluster name.
    pub cluster: String,
    /// The cluster's server URL, if set.
    pub server: Option<String>,
    /// The cluster's `tls-server-name`: the name the server's certificate is verified as
    /// instead of the URL's host (client-go's `ServerName`).
    pub tls_server_name: Option<String>,
    /// The client certificate.
    pub client: ClientCert,
    /// The cluster's embedded CA bundle (`certificate-authority-data`), decoded.
    pub ca_pem: Option<Vec<u8>>,
}

fn decode_data(field: &str, value: &str) -> Result<Vec<u8>, String> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("{field} is not valid base64: {e}"))
}

struct Located<'a> {
    user: &'a RawUser,
    user_name: String,
    cluster: Option<&'a RawCluster>,
    cluster_name: String,
}

fn parse_raw(text: &str) -> Result<RawConfig, String> {
    // whoever read the file, a huge one is not parsed (the YAML parser would take seconds)
    let max = crate::pki::inventory::MAX_FILE_BYTES;
    if text.len() as u64 > max {
        return Err(format!(
            "not a kubeconfig: {} bytes, more than any kubeconfig (at most {} MiB are parsed)",
            text.len(),
            max >> 20
        ));
    }
    // kubeconfigs have no use for aliases: an alias bomb ("billion laughs") stops after 10,000
    // replayed events instead of the library's million
    let options = serde_saphyr::options! {
        alias_limits: serde_saphyr::alias_limits! { max_total_replayed_events: 10_000 },
    };
    serde_saphyr::from_str_with_options::<RawConfig>(text, options).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("").to_string();
        format!("not a valid kubeconfig (YAML): {first}")
    })
}

fn locate(raw: &RawConfig) -> Result<Located<'_>, String> {
    let current = raw
        .current_context
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or("no current-context")?;
    // client-go keeps the last of duplicate names; rather than guess, refuse them.
    let unique = |kind: &str, count: usize, name: &str| {
        if count > 1 {
            Err(format!(
                "{count} {kind} are named {name:?}; refusing an ambiguous kubeconfig"
            ))
        } else {
            Ok(())
        }
    };
    let contexts = raw.contexts.iter().flatten();
    unique(
        "contexts",
        contexts.clone().filter(|c| c.name == current).count(),
        current,
    )?;
    let context = contexts
        .clone()
        .find(|c| c.name == current)
        .ok_or_else(|| format!("current-context {current:?} is not among the contexts"))?;
    let user_name = context
        .context
        .user
        .clone()
        .ok_or_else(|| format!("context {current:?} names no user"))?;
    let cluster_name = context.context.cluster.clone().unwrap_or_default();
    let users = raw
        .users
        .iter()
        .flatten()
        .filter(|u| u.name == user_name)
        .count();
    unique("users", users, &user_name)?;
    let clusters = raw
        .clusters
        .iter()
        .flatten()
        .filter(|c| c.name == cluster_name)
        .count();
    unique("clusters", clusters, &cluster_name)?;
    let user = raw
        .users
        .iter()
        .flatten()
        .find(|u| u.name == user_name)
        .and_then(|u| u.user.as_ref())
        .ok_or_else(|| format!("user {user_name:?} of context {current:?} is not defined"))?;
    let cluster = raw
        .clusters
        .iter()
        .flatten()
        .find(|c| c.name == cluster_name)
        .map(|c| &c.cluster);
    Ok(Located {
        user,
        user_name,
        cluster,
        cluster_name,
    })
}

/// Reads the current-context credentials from kubeconfig text; `path` resolves relative files.
pub fn credentials(text: &str, path: &Path) -> Result<Credentials, String> {
    let raw = parse_raw(text)?;
    let found = locate(&raw)?;
    let client = if let Some(data) = &found.user.client_certificate_data {
        let key_pem = match &found.user.client_key_data {
            Some(k) => Some(decode_data("client-key-data", &k.value)?),
            None => None,
        };
        ClientCert::Embedded {
            cert_pem: decode_data("client-certificate-data", &data.value)?,
            key_pem,
        }
    } else if let Some(cert) = &found.user.client_certificate {
        let base = path.parent().unwrap_or(Path::new("/"));
        ClientCert::Files {
            cert: base.join(cert),
            key: found.user.client_key.as_ref().map(|k| base.join(k)),
        }
    } else {
        return Err(format!(
            "user {:?} has no client certificate (neither client-certificate-data nor client-certificate)",
            found.user_name
        ));
    };
    let ca_pem = match found
        .cluster
        .and_then(|c| c.certificate_authority_data.as_ref())
    {
        Some(d) => Some(decode_data("certificate-authority-data", &d.value)?),
        None => None,
    };
    Ok(Credentials {
        user: found.user_name,
        cluster: found.cluster_name,
        server: found.cluster.and_then(|c| c.server.clone()),
        tls_server_name: found.cluster.and_then(|c| c.tls_server_name.clone()),
        client,
        ca_pem,
    })
}

/// New embedded credentials for the current-context user.
#[derive(Debug, Clone)]
pub struct NewCredentials<'a> {
    /// PEM of the new client certificate.
    pub cert_pem: &'a [u8],
    /// PEM of the (new or kept) client key.
    pub key_pem: &'a [u8],
    /// PEM of the CA bundle to sync into `certificate-authority-data` (kubeadm ≥ 1.18 does).
    pub ca_pem: Option<&'a [u8]>,
}

fn span_range(text: &str, field: &str, s: &Spanned<String>) -> Result<(usize, usize), String> {
    let span = s.referenced.span();
    let (Some(start), Some(len)) = (span.byte_offset(), span.byte_len()) else {
        return Err(format!("cannot locate {field} in the file"));
    };
    let (start, end) = (start as usize, (start + len) as usize);
    let slice = text
        .get(start..end)
        .ok_or_else(|| format!("cannot locate {field} in the file"))?;
    // Only plain or quoted one-line scalars are rewritten; anything else (block scalars,
    // escapes) could change meaning under a naive replacement.
    let inner = if slice == s.value {
        (start, end)
    } else if slice.len() >= 2
        && ((slice.starts_with('"') && slice.ends_with('"'))
            || (slice.starts_with('\'') && slice.ends_with('\'')))
        && slice[1..slice.len() - 1] == s.value
    {
        (start + 1, end - 1)
    } else {
        return Err(format!(
            "{field} is not written as a plain one-line value; refusing to rewrite it"
        ));
    };
    Ok(inner)
}

/// Returns the kubeconfig text with the current-context user's embedded certificate and key (and
/// optionally the cluster's CA data) replaced; every other byte is kept. Fails, changing
/// nothing, when the result would not read back as exactly the intended change.
pub fn replace_credentials(text: &str, new: &NewCredentials<'_>) -> Result<String, String> {
    let raw = parse_raw(text)?;
    let found = locate(&raw)?;
    let cert = found
        .user
        .client_certificate_data
        .as_ref()
        .ok_or("the current user has no embedded client-certificate-data")?;
    let key = found
        .user
        .client_key_data
        .as_ref()
        .ok_or("the current user has no embedded client-key-data")?;
    let mut edits = vec![
        (
            span_range(text, "client-certificate-data", cert)?,
            STANDARD.encode(new.cert_pem),
        ),
        (
            span_range(text, "client-key-data", key)?,
            STANDARD.encode(new.key_pem),
        ),
    ];
    if let Some(ca) = new.ca_pem {
        match found
            .cluster
            .and_then(|c| c.certificate_authority_data.as_ref())
        {
            Some(data) => edits.push((
                span_range(text, "certificate-authority-data", data)?,
                STANDARD.encode(ca),
            )),
            None => {
                return Err(format!(
                    "cluster {:?} has no embedded certificate-authority-data to sync",
                    found.cluster_name
                ));
            }
        }
    }
    edits.sort_by_key(|((start, _), _)| std::cmp::Reverse(*start));
    let mut out = text.to_string();
    for ((start, end), value) in &edits {
        out.replace_range(*start..*end, value);
    }
    // Read the result back: the current user must now carry exactly the new material.
    let check = credentials(&out, Path::new("/"))?;
    let ClientCert::Embedded { cert_pem, key_pem } = &check.client else {
        return Err("rewritten kubeconfig lost its embedded credentials".into());
    };
    if cert_pem != new.cert_pem || key_pem.as_deref() != Some(new.key_pem) {
        return Err("rewritten kubeconfig does not read back the new credentials".into());
    }
    if let Some(ca) = new.ca_pem
        && check.ca_pem.as_deref() != Some(ca)
    {
        return Err("rewritten kubeconfig does not read back the new CA data".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cert: &str, key: &str) -> String {
        format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://10.0.0.1:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    namespace: \"no\"\n    user: kubernetes-admin\n  name: kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\nkind: Config\npreferences: {{}}\nusers:\n- name: other\n  user:\n    client-certificate-data: {}\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            STANDARD.encode("CA"),
            STANDARD.encode("OTHER"),
            STANDARD.encode(cert),
            STANDARD.encode(key)
        )
    }

    #[test]
    fn reads_current_user() {
        let c = credentials(&sample("CERT", "KEY"), Path::new("/k/admin.conf")).unwrap();
        assert_eq!(c.user, "kubernetes-admin");
        assert_eq!(
            c.client,
            ClientCert::Embedded {
                cert_pem: b"CERT".to_vec(),
                key_pem: Some(b"KEY".to_vec())
            }
        );
        assert_eq!(c.ca_pem.as_deref(), Some(&b"CA"[..]));
    }

    #[test]
    fn replaces_only_the_current_user() {
        let before = sample("CERT", "KEY");
        let after = replace_credentials(
            &before,
            &NewCredentials {
                cert_pem: b"NEWCERT",
                key_pem: b"NEWKEY",
                ca_pem: Some(b"NEWCA"),
            },
        )
        .unwrap();
        let expected = before
            .replace(&STANDARD.encode("CERT"), &STANDARD.encode("NEWCERT"))
            .replace(&STANDARD.encode("KEY"), &STANDARD.encode("NEWKEY"))
            .replace(&STANDARD.encode("CA"), &STANDARD.encode("NEWCA"));
        assert_eq!(after, expected);
        assert!(after.contains(&STANDARD.encode("OTHER")));
        assert!(after.contains("namespace: \"no\""));
    }

    #[test]
    fn file_references_resolve_relative_to_the_kubeconfig() {
        let text = "current-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\nusers:\n- name: u\n  user:\n    client-certificate: pki/u.pem\n    client-key: /abs/u.pem\n";
        let c = credentials(text, Path::new("/etc/kubernetes/kubelet.conf")).unwrap();
        assert_eq!(
            c.client,
            ClientCert::Files {
                cert: PathBuf::from("/etc/kubernetes/pki/u.pem"),
                key: Some(PathBuf::from("/abs/u.pem"))
            }
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = sample("CERT", "KEY").replace("- name: other", "- name: kubernetes-admin");
        let err = credentials(&text, Path::new("x")).unwrap_err();
        assert!(
            err.contains("2 users are named \"kubernetes-admin\""),
            "{err}"
        );
    }

    #[test]
    fn not_yaml_is_a_clear_error() {
        let err = credentials("{{{ not: yaml", Path::new("x")).unwrap_err();
        assert!(err.contains("not a valid kubeconfig"), "{err}");
    }
}
