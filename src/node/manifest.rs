//! Static-pod manifests, read the way kubelet reads them: which files in the manifests dir count,
//! and the few facts the restart step and the kubelet stand-in need (container names, flags,
//! hostPath volumes).
//!
//! Only reads; the restart step moves manifests as opaque files and never rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One static pod as declared in its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPod {
    /// The manifest file.
    pub file: PathBuf,
    /// `metadata.name` (kubelet names the pod `<name>-<node name>`).
    pub name: String,
    /// `metadata.namespace` (kube-system for kubeadm's pods).
    pub namespace: String,
    /// `metadata.labels` (kubeadm sets `component` and `tier`).
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `spec.containers`.
    pub containers: Vec<PodContainer>,
    /// `spec.volumes` that are hostPath volumes: name → host path.
    pub host_paths: BTreeMap<String, PathBuf>,
}

/// One container of a static pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    /// `name`: what kubelet puts in the `io.kubernetes.container.name` label.
    pub name: String,
    /// `image`.
    pub image: String,
    /// `command` followed by `args`, as the container runs them.
    pub argv: Vec<String>,
    /// `volumeMounts`.
    pub mounts: Vec<VolumeMount>,
}

/// One `volumeMounts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume's name.
    pub volume: String,
    /// Where it appears in the container.
    pub mount_path: PathBuf,
    /// `readOnly`.
    pub read_only: bool,
}

#[derive(Deserialize)]
struct RawPod {
    #[serde(default)]
    metadata: RawMeta,
    spec: RawSpec,
}

#[derive(Deserialize, Default)]
struct RawMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    host_network: bool,
    #[serde(default)]
    containers: Vec<RawContainer>,
    #[serde(default)]
    volumes: Vec<RawVolume>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContainer {
    name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    volume_mounts: Vec<RawMount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMount {
    name: String,
    mount_path: PathBuf,
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawVolume {
    name: String,
    #[serde(default)]
    host_path: Option<RawHostPath>,
}

#[derive(Deserialize)]
struct RawHostPath {
    path: PathBuf,
}

/// Whether kubelet would read this directory entry as a manifest: kubelet ignores names that
/// start with a dot, and only regular files count.
pub fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.')
}

/// The manifest files of a manifests dir, sorted by name. A missing dir is an empty list (a
/// worker node has none); an unreadable one is an error naming it.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_file = entry
            .file_type()
            .map(|t| t.is_file() || t.is_symlink())
            .unwrap_or(false);
        if is_file && is_manifest_name(name) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and parses one manifest (YAML or JSON); errors name the file.
pub fn read(file: &Path) -> Result<StaticPod, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    parse(&text, file)
}

/// Parses manifest text; `file` is recorded and used in messages.
pub fn parse(text: &str, file: &Path) -> Result<StaticPod, String> {
    let raw: RawPod = serde_saphyr::from_str(text)
        .map_err(|e| format!("{}: not a pod manifest: {e}", file.display()))?;
    if raw.metadata.name.is_empty() {
        return Err(format!("{}: the pod has no metadata.name", file.display()));
    }
    if raw.spec.containers.is_empty() {
        return Err(format!("{}: the pod has no containers", file.display()));
    }
    let host_paths = raw
        .spec
        .volumes
        .into_iter()
        .filter_map(|v| v.host_path.map(|h| (v.name, h.path)))
        .collect();
    Ok(StaticPod {
        file: file.to_path_buf(),
        name: raw.metadata.name,
        namespace: raw
            .metadata
            .namespace
            .unwrap_or_else(|| "default".to_string()),
        labels: raw.metadata.labels,
        annotations: raw.metadata.annotations,
        host_network: raw.spec.host_network,
        containers: raw
            .spec
            .containers
            .into_iter()
            .map(|c| PodContainer {
                name: c.name,
                image: c.image,
                argv: c.command.into_iter().chain(c.args).collect(),
                mounts: c
                    .volume_mounts
                    .into_iter()
                    .map(|m| VolumeMount {
                        volume: m.name,
                        mount_path: m.mount_path,
                        read_only: m.read_only,
                    })
                    .collect(),
            })
            .collect(),
        host_paths,
    })
}

/// The tag of an image reference (`reg/x/kube-apiserver:v1.18.2@sha256:…` → `v1.18.2`).
pub fn image_tag(image: &str) -> Option<&str> {
    let image = image.split('@').next()?;
    let last = image.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag)
}

/// The images of kubeadm's control plane that carry the Kubernetes version as their tag (etcd's
/// tag is etcd's own version).
const VERSIONED_IMAGES: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The pod name kubelet gives a static pod: the manifest's name, a dash and the node name.
pub fn static_pod_name(manifest_name: &str, node_name: &str) -> String {
    format!("{manifest_name}-{node_name}")
}

impl StaticPod {
    /// The Kubernetes version this pod runs: the tag of its kube-apiserver,
    /// kube-controller-manager or kube-scheduler image (whatever the registry), `None` for any
    /// other pod (etcd, kube-vip) or an untagged image. What tells a manifest from before a
    /// `kubeadm upgrade` from one after it.
    pub fn kubernetes_version(&self) -> Option<&str> {
        self.containers.iter().find_map(|c| {
            let repository = c.image.split('@').next()?.rsplit('/').next()?;
            let name = repository.split(':').next()?;
            VERSIONED_IMAGES
                .contains(&name)
                .then(|| image_tag(&c.image))
                .flatten()
        })
    }

    /// The container with this name, if the pod has one.
    pub fn container(&self, name: &str) -> Option<&PodContainer> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// Where a path seen inside `container` lives on the host, through the hostPath volume
    /// mounted deepest above it; `None` when no hostPath volume covers it.
    pub fn host_path_of(&self, container: &PodContainer, inside: &Path) -> Option<PathBuf> {
        container
            .mounts
            .iter()
            .filter(|m| inside.starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.components().count())
            .and_then(|m| {
                let host = self.host_paths.get(&m.volume)?;
                let rest = inside.strip_prefix(&m.mount_path).ok()?;
                Some(if rest.as_os_str().is_empty() {
                    host.clone()
                } else {
                    host.join(rest)
                })
            })
    }
}

impl PodContainer {
    /// The value of a command-line flag (`--name=value` or `--name value`); the last one wins,
    /// as with Go's flag parsing.
    pub fn flag(&self, name: &str) -> Option<&str> {
        let long = format!("--{name}");
        let with_eq = format!("--{name}=");
        let mut found = None;
        let mut args = self.argv.iter().peekable();
        while let Some(arg) = args.next() {
            if let Some(value) = arg.strip_prefix(&with_eq) {
                found = Some(value);
            } else if *arg == long
                && let Some(next) = args.peek().filter(|n| !n.starts_with("--"))
            {
                found = Some(next.as_str());
                args.next();
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APISERVER: &str = r#"apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --secure-port=6443
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --etcd-servers
    - https://127.0.0.1:2379
    image: registry.k8s.io/kube-apiserver:v1.30.0
    name: kube-apiserver
    volumeMounts:
    - mountPath: /etc/ssl/certs
      name: ca-certs
      readOnly: true
    - mountPath: /etc/kubernetes/pki
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  volumes:
  - hostPath:
      path: /etc/ssl/certs
      type: DirectoryOrCreate
    name: ca-certs
  - hostPath:
      path: /srv/node/pki
      type: DirectoryOrCreate
    name: k8s-certs
  - name: scratch
    emptyDir: {}
status: {}
"#;

    #[test]
    fn reads_kubeadm_apiserver_manifest() {
        let pod = parse(APISERVER, Path::new("kube-apiserver.yaml")).unwrap();
        assert_eq!(pod.name, "kube-apiserver");
        assert_eq!(pod.namespace, "kube-system");
        assert!(pod.host_network);
        assert_eq!(pod.labels["component"], "kube-apiserver");
        let c = pod.container("kube-apiserver").unwrap();
        assert_eq!(c.flag("secure-port"), Some("6443"));
        assert_eq!(c.flag("etcd-servers"), Some("https://127.0.0.1:2379"));
        assert_eq!(c.flag("missing"), None);
        assert_eq!(
            pod.host_path_of(c, Path::new("/etc/kubernetes/pki/apiserver.crt")),
            Some(PathBuf::from("/srv/node/pki/apiserver.crt"))
        );
        assert_eq!(pod.host_path_of(c, Path::new("/var/lib/etcd")), None);
        assert_eq!(pod.host_paths.len(), 2, "emptyDir is not a hostPath");
    }

    #[test]
    fn image_tags_and_the_kubernetes_version() {
        assert_eq!(
            image_tag("k8s.gcr.io/kube-apiserver:v1.18.2"),
            Some("v1.18.2")
        );
        assert_eq!(
            image_tag("localhost:5000/kube-apiserver:v1.30.1@sha256:abc"),
            Some("v1.30.1")
        );
        assert_eq!(image_tag("localhost:5000/kube-apiserver"), None);
        let pod = parse(APISERVER, Path::new("kube-apiserver.yaml")).unwrap();
        assert_eq!(pod.kubernetes_version(), Some("v1.30.0"));
        let other = |image: &str| {
            let text = APISERVER.replace("registry.k8s.io/kube-apiserver:v1.30.0", image);
            parse(&text, Path::new("x.yaml")).unwrap()
        };
        assert_eq!(
            other("mirror:5000/k8s/kube-scheduler:v1.31.2@sha256:ab").kubernetes_version(),
            Some("v1.31.2")
        );
        assert_eq!(
            other("registry.k8s.io/etcd:3.5.15-0").kubernetes_version(),
            None
        );
        assert_eq!(
            other("ghcr.io/kube-vip/kube-vip:v0.8.0").kubernetes_version(),
            None
        );
        assert_eq!(
            other("registry.k8s.io/kube-apiserver").kubernetes_version(),
            None
        );
    }

    #[test]
    fn bad_manifests_are_errors_naming_the_file() {
        for text in [
            "not: [yaml",
            "kind: Pod\nmetadata:\n  name: x\n",
            "metadata:\n  name: x\nspec:\n  containers: []\n",
        ] {
            let err = parse(text, Path::new("/m/bad.yaml")).unwrap_err();
            assert!(err.contains("/m/bad.yaml"), "{err}");
        }
    }

    #[test]
    fn dot_files_and_dirs_are_not_manifests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("etcd.yaml"), "x").unwrap();
        std::fs::write(dir.path().join(".etcd.yaml.swp"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let files = list(dir.path()).unwrap();
        assert_eq!(files, vec![dir.path().join("etcd.yaml")]);
        assert!(list(&dir.path().join("absent")).unwrap().is_empty());
    }
}
