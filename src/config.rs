//! Configuration: TOML in, validated struct out.
//!
//! Every option has a default, so a missing config file is a valid configuration. Unknown keys
//! are refused (a typo must not silently become a default), and errors name the file, the key
//! and the line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the config file lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kube-cert-renewer/config.toml";
/// kubeadm's own default for `/etc/kubernetes`.
pub const DEFAULT_KUBERNETES_DIR: &str = "/etc/kubernetes";
/// Where backups, the intent journal and the lock live.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kube-cert-renewer";

/// The whole configuration, as read from TOML (all keys optional).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The node's kubeadm directory (`/etc/kubernetes`).
    pub kubernetes_dir: PathBuf,
    /// kubeadm's `certificatesDir`; defaults to `<kubernetes_dir>/pki`.
    pub pki_dir: Option<PathBuf>,
    /// Where `admin.conf` and friends live; defaults to `<kubernetes_dir>`.
    pub kubeconfig_dir: Option<PathBuf>,
    /// Static-pod manifests; defaults to `<kubernetes_dir>/manifests`.
    pub manifests_dir: Option<PathBuf>,
    /// Backups, journal and lock.
    pub state_dir: PathBuf,
    /// A leaf with fewer days left than this is in `warning`.
    pub warn_days: u32,
    /// A leaf with fewer days left than this is `critical`.
    pub critical_days: u32,
    /// A CA with fewer days left than this is in `warning` (CAs need a rotation, which takes
    /// planning, hence a year).
    pub ca_warn_days: u32,
    /// A CA with fewer days left than this is `critical`.
    pub ca_critical_days: u32,
    /// Globs of further certificate files to watch (monitor only, never renewed).
    pub extra_paths: Vec<String>,
    /// `renew --due` renews what expires within this many days.
    pub renew_before_days: u32,
    /// Validity of a renewed certificate, capped at its CA's NotAfter.
    pub validity_days: u32,
    /// Keep the existing private keys instead of generating new ones.
    pub reuse_keys: bool,
    /// How many backup generations to keep in `<state_dir>/backups`.
    pub keep_backups: usize,
    /// The CRI socket (`unix:///run/containerd/containerd.sock`, crictl's spelling); unset means
    /// the first that exists of containerd's, CRI-O's and cri-dockerd's default sockets.
    pub runtime_endpoint: Option<String>,
    /// Which control-plane components a renewal restarts.
    pub restart: RestartMode,
    /// How often the runtime is asked whether containers stopped or started, in milliseconds.
    pub restart_poll_ms: u64,
    /// How long parked components may take to stop, in seconds.
    pub restart_stop_timeout_secs: u64,
    /// How long restarted components may take to run again and answer healthy, in seconds.
    pub restart_start_timeout_secs: u64,
    /// How long a restarted component without a health endpoint (no secure port, an etcd
    /// without TLS, another static pod) must keep running, without a restart, to count as
    /// healthy, in seconds.
    pub restart_settle_secs: u64,
    /// The kubelet's node name, to tell this node's static pods (`<pod>-<node>`) from others
    /// in a shared runtime; unset means the name in kubelet.conf's client certificate
    /// (`system:node:<name>`), else no such filter.
    pub node_name: Option<String>,
    /// The daemon's maintenance window: a cron expression (5 fields, or 6 with seconds first);
    /// day of month and day of week are ANDed (see `daemon::schedule`).
    pub schedule: String,
    /// The IANA time zone of `schedule`; unset means the node's local zone.
    pub timezone: Option<String>,
    /// Each node starts its window a delay after the calendar's instant, derived from its node
    /// name, within this spread ("1h", "30m", "0").
    pub window_spread: String,
    /// Renew at once, outside the window, a certificate below `critical_days` or expired.
    pub emergency_renewal: bool,
    /// After each evaluation, write `check -o prometheus` plus the daemon's own metrics here
    /// (node-exporter's textfile collector), atomically.
    pub metrics_textfile: Option<PathBuf>,
    /// Take the cluster-wide restart Lease before any restart, so no two control-plane nodes
    /// restart at once. Off only makes sense on a cluster with one control-plane node.
    pub coordinate: bool,
    /// The kubeconfig that reaches the cluster API for the Lease; default
    /// `<kubeconfig_dir>/kube-cert-renewer.conf` once `lease-credentials --issue` wrote it (least
    /// privilege), else `<kubeconfig_dir>/admin.conf` (see `coordination::credentials`).
    pub lease_kubeconfig: Option<PathBuf>,
    /// `leaseDurationSeconds`: how long a node that stopped renewing (crashed) keeps others
    /// waiting. Renewed every third of it while held; longer than a whole restart may take
    /// (stop + start timeouts) by default, so that even renewals that all fail — the Lease
    /// kubeconfig reaching this node's own restarting API server — never let another node in
    /// before this one is done.
    pub lease_duration_secs: u64,
    /// How long to wait for the Lease (held by another node, or the API unreachable) before
    /// giving up; the restart then stays pending and is retried.
    pub lease_wait_secs: u64,
    /// How long the Lease is kept after this node's components are healthy, so load balancers
    /// see its API server back before the next node takes its own down.
    pub lease_settle_secs: u64,
    /// What to do when the cluster API does not answer and neither exception applies (this
    /// node's API server certificate expired, a single control-plane node).
    pub when_api_unreachable: WhenUnreachable,
    /// How many control-plane nodes the cluster has; 0 = find out (the local etcd's members).
    /// 1 lets a restart go on without the Lease when the API does not answer.
    pub control_plane_nodes: u32,
    /// Keep snapshots of the node's kubeadm files in the state dir (`recover` rebuilds a node
    /// from them). They hold the cluster's CA keys: turn off where keys must not be copied.
    pub snapshots: bool,
    /// How many snapshot generations to keep.
    pub keep_snapshots: usize,
    /// Let the daemon run `recover` by itself when files go missing (never generates a CA).
    pub auto_recover: bool,
    /// How long files must stay missing before `auto_recover` acts: time for an operator who
    /// removed them on purpose to say so (`snapshot --force`) or stop the daemon.
    pub auto_recover_after_secs: u64,
}

/// What to do when the Lease cannot be asked for (config `when_api_unreachable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnreachable {
    /// Wait (alerting) until the API answers, up to `lease_wait_secs`.
    #[default]
    Wait,
    /// Restart without the Lease (the operator accepts the risk of two nodes at once).
    Proceed,
}

/// Which components `renew` restarts (config `restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RestartMode {
    /// The components fed by what was renewed.
    #[default]
    Affected,
    /// All four kubeadm components (kube-apiserver, etcd, controller-manager, scheduler), as the
    /// operators' recipe does; never other static pods.
    All,
    /// Like `affected`, but not kube-apiserver or etcd when their TLS endpoint already serves
    /// the new certificate (they reload serving certificates by themselves).
    Minimal,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubernetes_dir: PathBuf::from(DEFAULT_KUBERNETES_DIR),
            pki_dir: None,
            kubeconfig_dir: None,
            manifests_dir: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            warn_days: 30,
            critical_days: 7,
            ca_warn_days: 365,
            ca_critical_days: 90,
            extra_paths: Vec::new(),
            renew_before_days: 65,
            validity_days: 365,
            reuse_keys: false,
            keep_backups: 12,
            runtime_endpoint: None,
            restart: RestartMode::Affected,
            restart_poll_ms: 200,
            restart_stop_timeout_secs: 120,
            restart_start_timeout_secs: 300,
            restart_settle_secs: 15,
            node_name: None,
            schedule: crate::daemon::schedule::DEFAULT_SCHEDULE.to_string(),
            timezone: None,
            window_spread: "1h".to_string(),
            emergency_renewal: true,
            metrics_textfile: None,
            coordinate: true,
            lease_kubeconfig: None,
            lease_duration_secs: 600,
            lease_wait_secs: 3600,
            lease_settle_secs: 10,
            when_api_unreachable: WhenUnreachable::Wait,
            control_plane_nodes: 0,
            snapshots: true,
            keep_snapshots: 5,
            auto_recover: false,
            auto_recover_after_secs: 600,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong key or value (the message names key and line).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// The values parse but make no sense together.
    #[error("invalid config file {path}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads `path`; a file that does not exist means "all defaults".
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Config::parse(&text, path)
    }

    /// Parses TOML text; `origin` is only used in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| {
            Err(ConfigError::Invalid {
                path: origin.to_path_buf(),
                message,
            })
        };
        // a hundred years: beyond it a threshold is a typo (and day counts stay far from overflow)
        for (key, value) in [
            ("warn_days", self.warn_days),
            ("critical_days", self.critical_days),
            ("ca_warn_days", self.ca_warn_days),
            ("ca_critical_days", self.ca_critical_days),
            ("renew_before_days", self.renew_before_days),
        ] {
            if value > 36_500 {
                return invalid(format!("{key} must be 0 to 36500, not {value}"));
            }
        }
        if self.keep_backups > 1000 {
            return invalid(format!(
                "keep_backups must be 1 to 1000, not {}",
                self.keep_backups
            ));
        }
        if self.auto_recover_after_secs > 86_400 {
            return invalid(format!(
                "auto_recover_after_secs must be at most a day (86400), not {}",
                self.auto_recover_after_secs
            ));
        }
        if !(1..=1000).contains(&self.keep_snapshots) {
            return invalid(format!(
                "keep_snapshots must be 1 to 1000, not {}",
                self.keep_snapshots
            ));
        }
        if self.control_plane_nodes > 1000 {
            return invalid(format!(
                "control_plane_nodes must be 0 (find out) to 1000, not {}",
                self.control_plane_nodes
            ));
        }
        if self.critical_days > self.warn_days {
            return invalid(format!(
                "critical_days ({}) must not exceed warn_days ({})",
                self.critical_days, self.warn_days
            ));
        }
        if self.ca_critical_days > self.ca_warn_days {
            return invalid(format!(
                "ca_critical_days ({}) must not exceed ca_warn_days ({})",
                self.ca_critical_days, self.ca_warn_days
            ));
        }
        if !(1..=36_500).contains(&self.validity_days) {
            return invalid(format!(
                "validity_days must be 1 to 36500, not {}",
                self.validity_days
            ));
        }
        if self.keep_backups == 0 {
            return invalid(
                "keep_backups must be at least 1: a renewal always keeps its backup".into(),
            );
        }
        if !(100..=250).contains(&self.restart_poll_ms) {
            return invalid(format!(
                "restart_poll_ms must be 100 to 250, not {}",
                self.restart_poll_ms
            ));
        }
        for (key, value) in [
            ("restart_stop_timeout_secs", self.restart_stop_timeout_secs),
            (
                "restart_start_timeout_secs",
                self.restart_start_timeout_secs,
            ),
        ] {
            if !(1..=3600).contains(&value) {
                return invalid(format!("{key} must be 1 to 3600, not {value}"));
            }
        }
        if self.restart_settle_secs >= self.restart_start_timeout_secs {
            return invalid(format!(
                "restart_settle_secs ({}) must be less than restart_start_timeout_secs ({}): \
                 the settle period runs inside the start timeout",
                self.restart_settle_secs, self.restart_start_timeout_secs
            ));
        }
        if !(3..=3600).contains(&self.lease_duration_secs) {
            return invalid(format!(
                "lease_duration_secs must be 3 to 3600, not {}",
                self.lease_duration_secs
            ));
        }
        if self.lease_wait_secs > 7 * 86_400 || self.lease_settle_secs > 3600 {
            return invalid(format!(
                "lease_wait_secs ({}) must be at most a week and lease_settle_secs ({}) at \
                 most an hour",
                self.lease_wait_secs, self.lease_settle_secs
            ));
        }
        if let Some(endpoint) = &self.runtime_endpoint
            && let Err(e) = runtime_socket(endpoint)
        {
            return invalid(format!("runtime_endpoint: {e}"));
        }
        if let Err(e) = crate::daemon::schedule::parse_spread(&self.window_spread) {
            return invalid(format!("window_spread: {e}"));
        }
        if let Err(e) = crate::daemon::schedule::Calendar::new(
            &self.schedule,
            self.timezone.as_deref(),
            std::time::Duration::ZERO,
        ) {
            return invalid(e);
        }
        for pattern in &self.extra_paths {
            if let Err(e) = glob::Pattern::new(pattern) {
                return invalid(format!("extra_paths: bad glob {pattern:?}: {e}"));
            }
        }
        Ok(())
    }

    /// The concrete directories this configuration points at.
    pub fn paths(&self) -> NodePaths {
        NodePaths {
            pki: self
                .pki_dir
                .clone()
                .unwrap_or_else(|| self.kubernetes_dir.join("pki")),
            kubeconfigs: self
                .kubeconfig_dir
                .clone()
                .unwrap_or_else(|| self.kubernetes_dir.clone()),
            manifests: self
                .manifests_dir
                .clone()
                .unwrap_or_else(|| self.kubernetes_dir.join("manifests")),
            state: self.state_dir.clone(),
        }
    }
}

/// The socket path of a CRI endpoint given as crictl spells it (`unix:///path`) or as a plain
/// absolute path; other transports are refused (the CRI on Linux is a unix socket).
pub fn runtime_socket(endpoint: &str) -> Result<PathBuf, String> {
    let path = match endpoint.split_once("://") {
        Some(("unix", path)) => path,
        Some((scheme, _)) => {
            return Err(format!(
                "{endpoint:?}: only unix:// endpoints are supported, not {scheme}://"
            ));
        }
        None => endpoint,
    };
    if !path.starts_with('/') {
        return Err(format!("{endpoint:?}: the socket path must be absolute"));
    }
    Ok(PathBuf::from(path))
}

/// The default CRI sockets, in the order crictl tries them.
pub const DEFAULT_RUNTIME_SOCKETS: [&str; 3] = [
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
];

/// The CRI socket to use: `endpoint` (the command line's, else the config's), else the first
/// of the default sockets that exists.
pub fn resolve_runtime_socket(endpoint: Option<&str>) -> Result<PathBuf, String> {
    if let Some(endpoint) = endpoint {
        return runtime_socket(endpoint);
    }
    DEFAULT_RUNTIME_SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "no container runtime socket found (tried {}); set runtime_endpoint in the \
                 config or --runtime-endpoint",
                DEFAULT_RUNTIME_SOCKETS.join(", ")
            )
        })
}

/// The directories of one node, resolved: the filesystem root every module works under.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePaths {
    /// kubeadm's certificatesDir.
    pub pki: PathBuf,
    /// Directory of the kubeconfig files.
    pub kubeconfigs: PathBuf,
    /// Static-pod manifests.
    pub manifests: PathBuf,
    /// Our own state: backups, journal, lock.
    pub state: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&dir.path().join("nope.toml")).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.paths().pki, PathBuf::from("/etc/kubernetes/pki"));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::parse("warn_days = 20\nwarn_dayz = 3\n", Path::new("/x/c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x/c.toml"), "{err}");
        assert!(err.contains("warn_dayz"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = Config::parse("\n\ncritical_days = \"seven\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("critical_days"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn thresholds_must_be_ordered() {
        let err = Config::parse("warn_days = 5\ncritical_days = 9\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("critical_days"), "{err}");
    }

    #[test]
    fn example_config_shows_the_defaults() {
        let example = include_str!("../config.example.toml");
        let parsed = Config::parse(example, Path::new("config.example.toml")).unwrap();
        assert_eq!(parsed, Config::default());
        // every key is at least mentioned (commented or not)
        for key in [
            "pki_dir",
            "kubeconfig_dir",
            "manifests_dir",
            "runtime_endpoint",
            "restart",
            "restart_poll_ms",
            "restart_stop_timeout_secs",
            "restart_start_timeout_secs",
            "restart_settle_secs",
            "node_name",
            "keep_backups",
            "reuse_keys",
            "schedule",
            "timezone",
            "window_spread",
            "emergency_renewal",
            "metrics_textfile",
        ] {
            assert!(
                example.contains(&format!("{key} =")),
                "{key} missing from the example"
            );
        }
    }

    #[test]
    fn runtime_endpoints_in_crictl_spelling() {
        assert_eq!(
            runtime_socket("unix:///run/containerd/containerd.sock").unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            runtime_socket("/var/run/crio/crio.sock").unwrap(),
            PathBuf::from("/var/run/crio/crio.sock")
        );
        assert!(runtime_socket("tcp://127.0.0.1:1234").is_err());
        assert!(runtime_socket("unix://relative.sock").is_err());
        let err = Config::parse(
            "runtime_endpoint = \"npipe:////./pipe/x\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("runtime_endpoint"), "{err}");
        let c = Config::parse("restart = \"minimal\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.restart, RestartMode::Minimal);
        assert!(Config::parse("restart = \"some\"\n", Path::new("c.toml")).is_err());
    }

    #[test]
    fn the_window_is_checked_when_the_config_is_read() {
        for (text, key) in [
            ("schedule = \"0 3 * *\"\n", "schedule"),
            ("timezone = \"Nowhere/Land\"\n", "Nowhere/Land"),
            ("window_spread = \"2 hours\"\n", "window_spread"),
        ] {
            let err = Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains("c.toml"), "{err}");
        }
        let c = Config::parse(
            "schedule = \"0 4 * */3 SUN#2\"\ntimezone = \"America/New_York\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.timezone.as_deref(), Some("America/New_York"));
    }

    #[test]
    fn explicit_dirs_override_kubernetes_dir() {
        let c = Config::parse(
            "kubernetes_dir = \"/k\"\npki_dir = \"/elsewhere/pki\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let p = c.paths();
        assert_eq!(p.pki, PathBuf::from("/elsewhere/pki"));
        assert_eq!(p.kubeconfigs, PathBuf::from("/k"));
        assert_eq!(p.manifests, PathBuf::from("/k/manifests"));
    }
}
