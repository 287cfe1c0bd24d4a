//! A minimal client for the Kubernetes CRI (Container Runtime Interface) `RuntimeService`.
//!
//! Static control-plane pods only pick up renewed certificates when their containers restart, and
//! the kubelet does not restart them on its own. We talk to the container runtime (containerd,
//! CRI-O) directly over its unix socket with gRPC to stop the old container so the kubelet starts
//! a fresh one.
//!
//! Why hand-written messages: the official `api.proto` must not be vendored into this repository
//! and `cargo build` must not need `protoc`. So this module declares, with `prost` derive macros,
//! only the small subset of `runtime.v1` messages we use. Field numbers and types follow the
//! published CRI v1 API (k8s.io/cri-api `pkg/apis/runtime/v1`); protobuf field numbers never
//! change once published, and fields we do not declare are skipped by `prost` when decoding, so a
//! subset decodes newer runtimes' responses correctly.
//!
//! Wire names: package `runtime.v1`, service `RuntimeService`, so every RPC path is
//! `/runtime.v1.RuntimeService/<Method>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// How a message's string-to-string map fields are represented: ordered, so encoding and
/// debug output are deterministic.
pub type StringMap = BTreeMap<String, String>;

// ---------------------------------------------------------------------------------------------
// Version
// ---------------------------------------------------------------------------------------------

/// Request for `Version`: the cheapest RPC, used to check that the socket speaks CRI v1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    /// Version of the kubelet runtime API the caller speaks (informational).
    #[prost(string, tag = "1")]
    pub version: String,
}

/// Response of `Version`: identifies the runtime, for logs and error messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    /// Version of the kubelet runtime API.
    #[prost(string, tag = "1")]
    pub version: String,
    /// Name of the container runtime (e.g. `containerd`).
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    /// Version of the container runtime.
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// CRI API version the runtime serves (e.g. `v1`).
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

// ---------------------------------------------------------------------------------------------
// Namespaces and security contexts
// ---------------------------------------------------------------------------------------------

/// How a Linux namespace is shared; control-plane static pods use `Node` for the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NamespaceMode {
    /// Shared by all containers of the pod.
    Pod = 0,
    /// Private to one container.
    Container = 1,
    /// The node's (host's) namespace.
    Node = 2,
    /// The namespace of another container, named by `NamespaceOption::target_id`.
    Target = 3,
}

/// Namespace choices for a sandbox or container; needed to ask for host networking.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    /// Network namespace.
    #[prost(enumeration = "NamespaceMode", tag = "1")]
    pub network: i32,
    /// PID namespace.
    #[prost(enumeration = "NamespaceMode", tag = "2")]
    pub pid: i32,
    /// IPC namespace.
    #[prost(enumeration = "NamespaceMode", tag = "3")]
    pub ipc: i32,
    /// Target container ID when a mode is `Target`.
    #[prost(string, tag = "4")]
    pub target_id: String,
}

/// Linux security settings of a sandbox; carries the namespace options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    /// Namespaces of the sandbox.
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
    /// Whether privileged containers will run in this sandbox.
    #[prost(bool, tag = "6")]
    pub privileged: bool,
}

/// Linux-specific sandbox configuration.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    /// Parent cgroup of the sandbox (cgroupfs syntax).
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    /// Security settings of the sandbox.
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

/// Linux security settings of a container; carries its namespace options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerSecurityContext {
    /// Run the container privileged.
    #[prost(bool, tag = "2")]
    pub privileged: bool,
    /// Namespaces of the container.
    #[prost(message, optional, tag = "3")]
    pub namespace_options: Option<NamespaceOption>,
}

/// Linux-specific container configuration.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerConfig {
    /// Security settings of the container.
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxContainerSecurityContext>,
}

// ---------------------------------------------------------------------------------------------
// Pod sandboxes
// ---------------------------------------------------------------------------------------------

/// Identity of a pod sandbox; the runtime builds the sandbox name from it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    /// Pod name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Pod UID.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Pod namespace.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// Attempt number of creating the sandbox.
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// Everything needed to create a pod sandbox (also re-sent with `CreateContainer`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    /// Identity of the sandbox.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Hostname; may be empty with a `Node` network namespace.
    #[prost(string, tag = "2")]
    pub hostname: String,
    /// Host directory for the containers' log files.
    #[prost(string, tag = "3")]
    pub log_directory: String,
    /// Labels, used to select sandboxes.
    #[prost(btree_map = "string, string", tag = "6")]
    pub labels: StringMap,
    /// Annotations, opaque to the runtime.
    #[prost(btree_map = "string, string", tag = "7")]
    pub annotations: StringMap,
    /// Linux-specific configuration.
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

/// Request for `RunPodSandbox`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    /// Configuration of the new sandbox.
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    /// Runtime handler (RuntimeClass); empty selects the default.
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

/// Response of `RunPodSandbox`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    /// ID of the new sandbox.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// Request for `StopPodSandbox` (idempotent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxRequest {
    /// ID of the sandbox to stop.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// Response of `StopPodSandbox` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxResponse {}

/// Request for `RemovePodSandbox` (idempotent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovePodSandboxRequest {
    /// ID of the sandbox to remove.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// Response of `RemovePodSandbox` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovePodSandboxResponse {}

/// State of a pod sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PodSandboxState {
    /// `SANDBOX_READY`.
    Ready = 0,
    /// `SANDBOX_NOTREADY`.
    NotReady = 1,
}

/// Wrapper of [`PodSandboxState`], so a filter can tell "unset" from `Ready` (= 0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStateValue {
    /// The state.
    #[prost(enumeration = "PodSandboxState", tag = "1")]
    pub state: i32,
}

/// Filter of `ListPodSandbox`; all set fields must match.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxFilter {
    /// Sandbox ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Sandbox state.
    #[prost(message, optional, tag = "2")]
    pub state: Option<PodSandboxStateValue>,
    /// Labels that must all be present with these values.
    #[prost(btree_map = "string, string", tag = "3")]
    pub label_selector: StringMap,
}

/// Request for `ListPodSandbox`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxRequest {
    /// Optional filter.
    #[prost(message, optional, tag = "1")]
    pub filter: Option<PodSandboxFilter>,
}

/// Summary of one pod sandbox, as listed by `ListPodSandbox`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    /// Sandbox ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Identity of the sandbox.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Sandbox state.
    #[prost(enumeration = "PodSandboxState", tag = "3")]
    pub state: i32,
    /// Creation time, nanoseconds since the epoch.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// Labels.
    #[prost(btree_map = "string, string", tag = "5")]
    pub labels: StringMap,
    /// Annotations.
    #[prost(btree_map = "string, string", tag = "6")]
    pub annotations: StringMap,
}

/// Response of `ListPodSandbox`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxResponse {
    /// Matching sandboxes.
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

// ---------------------------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------------------------

/// Identity of a container within its sandbox; (name, attempt) is unique per sandbox.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    /// Container name (as in the pod spec, e.g. `kube-apiserver`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Attempt number of creating the container.
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// Reference to an image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    /// Image reference or ID.
    #[prost(string, tag = "1")]
    pub image: String,
    /// Annotations of the image reference.
    #[prost(btree_map = "string, string", tag = "2")]
    pub annotations: StringMap,
    /// Image reference as the user wrote it, when known.
    #[prost(string, tag = "18")]
    pub user_specified_image: String,
}

/// One environment variable.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Variable name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Variable value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A host path mounted into a container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    /// Path inside the container.
    #[prost(string, tag = "1")]
    pub container_path: String,
    /// Path on the host.
    #[prost(string, tag = "2")]
    pub host_path: String,
    /// Mount read-only.
    #[prost(bool, tag = "3")]
    pub readonly: bool,
}

/// Everything needed to create a container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    /// Identity of the container.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    /// Image to run.
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    /// Entrypoint.
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    /// Arguments of the entrypoint.
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    /// Working directory.
    #[prost(string, tag = "5")]
    pub working_dir: String,
    /// Environment variables.
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    /// Host mounts.
    #[prost(message, repeated, tag = "7")]
    pub mounts: Vec<Mount>,
    /// Labels, used to select containers.
    #[prost(btree_map = "string, string", tag = "9")]
    pub labels: StringMap,
    /// Annotations, opaque to the runtime.
    #[prost(btree_map = "string, string", tag = "10")]
    pub annotations: StringMap,
    /// Log file path, relative to the sandbox's `log_directory`.
    #[prost(string, tag = "11")]
    pub log_path: String,
    /// Linux-specific configuration.
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
}

/// Request for `CreateContainer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerRequest {
    /// Sandbox to create the container in.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// Configuration of the container.
    #[prost(message, optional, tag = "2")]
    pub config: Option<ContainerConfig>,
    /// The configuration the sandbox was created with.
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

/// Response of `CreateContainer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerResponse {
    /// ID of the new container.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// Request for `StartContainer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StartContainerRequest {
    /// Container to start.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// Response of `StartContainer` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StartContainerResponse {}

/// Request for `StopContainer` (idempotent): SIGTERM, then SIGKILL after `timeout`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerRequest {
    /// Container to stop.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Grace period in seconds before the runtime kills the container; 0 kills at once.
    #[prost(int64, tag = "2")]
    pub timeout: i64,
}

/// Response of `StopContainer` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerResponse {}

/// Request for `RemoveContainer` (idempotent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveContainerRequest {
    /// Container to remove.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// Response of `RemoveContainer` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveContainerResponse {}

/// State of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ContainerState {
    /// `CONTAINER_CREATED`: created, not started.
    Created = 0,
    /// `CONTAINER_RUNNING`.
    Running = 1,
    /// `CONTAINER_EXITED`.
    Exited = 2,
    /// `CONTAINER_UNKNOWN`.
    Unknown = 3,
}

/// Wrapper of [`ContainerState`], so a filter can tell "unset" from `Created` (= 0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStateValue {
    /// The state.
    #[prost(enumeration = "ContainerState", tag = "1")]
    pub state: i32,
}

/// Filter of `ListContainers`; all set fields must match.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerFilter {
    /// Container ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Container state.
    #[prost(message, optional, tag = "2")]
    pub state: Option<ContainerStateValue>,
    /// Sandbox ID.
    #[prost(string, tag = "3")]
    pub pod_sandbox_id: String,
    /// Labels that must all be present with these values.
    #[prost(btree_map = "string, string", tag = "4")]
    pub label_selector: StringMap,
}

/// Request for `ListContainers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersRequest {
    /// Optional filter.
    #[prost(message, optional, tag = "1")]
    pub filter: Option<ContainerFilter>,
}

/// Summary of one container, as listed by `ListContainers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    /// Container ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Sandbox the container belongs to.
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    /// Identity of the container.
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
    /// Image the container was created from.
    #[prost(message, optional, tag = "4")]
    pub image: Option<ImageSpec>,
    /// Resolved reference (usually the image ID) of the image in use.
    #[prost(string, tag = "5")]
    pub image_ref: String,
    /// Container state.
    #[prost(enumeration = "ContainerState", tag = "6")]
    pub state: i32,
    /// Creation time, nanoseconds since the epoch.
    #[prost(int64, tag = "7")]
    pub created_at: i64,
    /// Labels.
    #[prost(btree_map = "string, string", tag = "8")]
    pub labels: StringMap,
    /// Annotations.
    #[prost(btree_map = "string, string", tag = "9")]
    pub annotations: StringMap,
}

/// Response of `ListContainers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersResponse {
    /// Matching containers.
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Label kubelet puts on containers with the container's name: what the restart step selects by.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Label kubelet puts on sandboxes and containers with the pod's name (`<name>-<node name>` for
/// a static pod), so one node's pods can be told from another's in a shared runtime.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label kubelet puts on sandboxes and containers with the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label kubelet puts on sandboxes and containers with the pod's UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// The first 13 characters of a container or sandbox id, as crictl shows them.
pub fn short_id(id: &str) -> &str {
    id.get(..13).unwrap_or(id)
}

/// Fully-qualified gRPC service name, the prefix of every RPC path.
const SERVICE: &str = "runtime.v1.RuntimeService";

/// Builds the static gRPC path of a `RuntimeService` method at compile time.
macro_rules! rpc_path {
    ($method:literal) => {
        concat!("/runtime.v1.RuntimeService/", $method)
    };
}

/// Default deadline of one RPC; the kubelet's `--runtime-request-timeout` default is also 2 min.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long [`RuntimeClient::connect`] waits for the socket to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response accepted, as the kubelet does (tonic's default of 4 MiB is too small for
/// `ListContainers` on a busy node).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Client of the CRI `RuntimeService` on a unix socket.
///
/// Cheap to clone (clones share one HTTP/2 connection). Every method returns a `String` error
/// naming the RPC, so callers can report it as is; nothing here panics on network data.
#[derive(Clone, Debug)]
pub struct RuntimeClient {
    /// The gRPC client over the socket's channel.
    inner: Grpc<Channel>,
    /// Deadline of each RPC (plus the grace period, for `StopContainer`).
    request_timeout: Duration,
}

/// Renders an error with its whole `source()` chain: tonic's top-level messages alone
/// ("transport error") do not say what went wrong.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

impl RuntimeClient {
    /// Connects to the runtime's CRI socket (e.g. `/run/containerd/containerd.sock`).
    ///
    /// Connects eagerly, so a missing socket or a runtime that is down is reported here rather
    /// than at the first RPC.
    pub async fn connect(socket_path: &Path) -> Result<RuntimeClient, String> {
        let display = socket_path.display();
        let path = socket_path
            .to_str()
            .ok_or_else(|| format!("CRI socket path {display} is not valid UTF-8"))?;
        let endpoint = Endpoint::from_shared(format!("unix://{path}"))
            .map_err(|e| format!("CRI socket path {display}: {}", error_chain(&e)))?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot connect to CRI socket {display}: {}",
                    error_chain(&e)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "cannot connect to CRI socket {display}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ));
            }
        };
        Ok(RuntimeClient {
            inner: Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Returns the client with another per-RPC deadline (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> RuntimeClient {
        self.request_timeout = timeout;
        self
    }

    /// Sends one unary RPC with a deadline and turns every failure into a message naming it.
    async fn unary<Req, Resp>(
        &self,
        method: &'static str,
        path: &'static str,
        request: Req,
        deadline: Duration,
    ) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.inner.clone();
        let call = async move {
            grpc.ready()
                .await
                .map_err(|e| format!("CRI {SERVICE}/{method}: connection not ready: {e}"))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                let mut text = format!(
                    "CRI {SERVICE}/{method} failed: {:?}: {}",
                    status.code(),
                    status.message()
                );
                if let Some(source) = std::error::Error::source(&status) {
                    let _ = write!(text, " ({})", error_chain(source));
                }
                text
            })
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "CRI {SERVICE}/{method}: no answer within {}s",
                deadline.as_secs()
            )),
        }
    }

    /// `Version`: checks the runtime is reachable and speaks CRI v1.
    pub async fn version(&self) -> Result<VersionResponse, String> {
        let request = VersionRequest {
            version: "v1".to_owned(),
        };
        self.unary(
            "Version",
            rpc_path!("Version"),
            request,
            self.request_timeout,
        )
        .await
    }

    /// `RunPodSandbox`: creates and starts a pod sandbox.
    /// (Only the kubelet stand-in calls this: not in release builds.)
    #[cfg(feature = "test-support")]
    pub async fn run_pod_sandbox(
        &self,
        request: RunPodSandboxRequest,
    ) -> Result<RunPodSandboxResponse, String> {
        self.unary(
            "RunPodSandbox",
            rpc_path!("RunPodSandbox"),
            request,
            self.request_timeout,
        )
        .await
    }

    /// `StopPodSandbox`: stops a sandbox and every container in it.
    /// (Only the kubelet stand-in calls this: not in release builds.)
    #[cfg(feature = "test-support")]
    pub async fn stop_pod_sandbox(
        &self,
        request: StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse, String> {
        self.unary(
            "StopPodSandbox",
            rpc_path!("StopPodSandbox"),
            request,
            self.request_timeout,
        )
        .await
    }

    /// `RemovePodSandbox`: removes a sandbox and its containers.
    /// (Only the kubelet stand-in calls this: not in release builds.)
    #[cfg(feature = "test-support")]
    pub async fn remove_pod_sandbox(
        &self,
        request: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse, String> {
        self.unary(
            "RemovePodSandbox",
            rpc_path!("RemovePodSandbox"),
            request,
            self.request_timeout,
        )
        .await
    }

    /// `ListPodSandbox`: lists sandboxes matching a filter.
    pub async fn list_pod_sandbox(
        &self,
        request: ListPodSandboxRequest,
    ) -> Result<ListPodSandboxResponse, String> {
        self.unary(
            "ListPodSandbox",
            rpc_path!("ListPodSandbox"),
            request,
            self.request_timeout,
        )
        .await
    }

    /// `CreateContainer`: creates (without starting) a container in a sandbox.
    /// (Only the kubelet stand-in calls this: not in release builds.)
    #[cfg(feature = "test-support")]
    pub async fn create_container(
        &self,
        request: CreateContainerRequest,
    ) -> Result<CreateContainerResponse, String> {
        self.unary(
            "CreateContainer",
            rpc_path!("CreateContainer"),
            request,
            self.request_timeout,
        )
        .await
    }

    /// `StartContainer`: starts a created container.
    /// (Only the kubelet stand-in calls this: not in release builds.)
    #[cfg(feature = "test-support")]
    pub async fn start_container(
        &self,
        request: StartContainerRequest,
    ) -> Result<StartContainerResponse, String> {
        self.unary(
            "StartContainer",
            rpc_path!("StartContainer"),
            request,
            self.request_timeout,
        )
        .await
    }

    /// `StopContainer`: stops a container; the deadline is extended by its grace period so a
    /// slow but orderly shutdown is not reported as a failure.
    /// (Only the kubelet stand-in calls this: not in release builds.)
    #[cfg(feature = "test-support")]
    pub async fn stop_container(
        &self,
        request: StopContainerRequest,
    ) -> Result<StopContainerResponse, String> {
        let grace = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        let deadline = self.request_timeout.saturating_add(grace);
        self.unary(
            "StopContainer",
            rpc_path!("StopContainer"),
            request,
            deadline,
        )
        .await
    }

    /// `RemoveContainer`: removes a container (killing it first if it still runs).
    /// (Only the kubelet stand-in calls this: not in release builds.)
    #[cfg(feature = "test-support")]
    pub async fn remove_container(
        &self,
        request: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, String> {
        self.unary(
            "RemoveContainer",
            rpc_path!("RemoveContainer"),
            request,
            self.request_timeout,
        )
        .await
    }

    /// `ListContainers`: lists containers matching a filter (e.g. a container-name label).
    pub async fn list_containers(
        &self,
        request: ListContainersRequest,
    ) -> Result<ListContainersResponse, String> {
        self.unary(
            "ListContainers",
            rpc_path!("ListContainers"),
            request,
            self.request_timeout,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Protobuf key byte of a length-delimited field (wire type 2) with a small field number.
    fn key_len_delimited(field: u8) -> u8 {
        (field << 3) | 2
    }

    #[test]
    fn container_config_uses_published_field_numbers() {
        let config = ContainerConfig {
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        };
        // Field 15 (linux), wire type 2, empty body.
        assert_eq!(config.encode_to_vec(), vec![key_len_delimited(15), 0]);

        let mut labels = StringMap::new();
        labels.insert("a".to_owned(), "b".to_owned());
        let config = ContainerConfig {
            labels,
            ..Default::default()
        };
        // Field 9 (labels): one map entry {1: "a", 2: "b"}.
        assert_eq!(
            config.encode_to_vec(),
            vec![key_len_delimited(9), 6, 0x0a, 1, b'a', 0x12, 1, b'b']
        );
    }

    #[test]
    fn host_network_sandbox_encodes_node_mode() {
        let linux = LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                privileged: false,
            }),
            ..Default::default()
        };
        // linux.security_context(2) { namespace_options(1) { network(1) = 2 } }
        assert_eq!(linux.encode_to_vec(), vec![0x12, 4, 0x0a, 2, 0x08, 2]);
    }

    #[test]
    fn container_decodes_and_skips_unknown_fields() {
        // id(1)="c", state(6)=RUNNING, image_id(10)="x" (a newer field we do not declare).
        let bytes = [0x0a, 1, b'c', 0x30, 1, 0x52, 1, b'x'];
        let container = Container::decode(&bytes[..]).expect("valid protobuf");
        assert_eq!(container.id, "c");
        assert_eq!(container.state(), ContainerState::Running);
    }

    #[test]
    fn stop_container_request_timeout_is_field_2_varint() {
        let request = StopContainerRequest {
            container_id: "c".to_owned(),
            timeout: 30,
        };
        assert_eq!(request.encode_to_vec(), vec![0x0a, 1, b'c', 0x10, 30]);
    }

    #[tokio::test]
    async fn connect_to_missing_socket_is_an_error_not_a_panic() {
        let err = RuntimeClient::connect(Path::new("/nonexistent/cri.sock"))
            .await
            .expect_err("no socket there");
        assert!(err.contains("/nonexistent/cri.sock"), "{err}");
    }
}
