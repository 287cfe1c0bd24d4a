#!/usr/bin/env bash
# Private containerd (CRI v1) for integration tests; see /work/shared/docs/test-environment.md.
#   containerd-env.sh start DIR   -> last stdout line: CONTAINERD_SOCKET=DIR/containerd.sock
#   containerd-env.sh stop DIR    -> kills everything started from DIR, unmounts, removes DIR
# Needs root and: apt-get install -y containerd runc busybox-static
set -euo pipefail

die() { echo "containerd-env: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: $0 start|stop DIR"
CMD=$1
D=$(realpath -m -- "$2")          # absolute: config paths and the shim match below rely on it
SOCK=$D/containerd.sock
# unix socket paths are limited to 107 bytes; the ttrpc one is the longest we create
[ ${#SOCK} -le 100 ] || die "DIR path too long for a unix socket: $D"
ctr_() { ctr -a "$SOCK" "$@"; }
# is PID our containerd? (guards against a stale pid file whose pid was reused)
ours() { [ -n "$1" ] && tr '\0' ' ' 2>/dev/null </proc/"$1"/cmdline | grep -qF -- "--config $D/config.toml"; }

write_config() {
  mkdir -p "$D/cni/net.d" "$D/cni/bin" "$D/opt"
  cat >"$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""          # debug/metrics listeners stay off (empty address = disabled)
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"       # default /opt/containerd would be shared with the system
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/local/pause:1"
  restrict_oom_score_adj = true   # root here lacks CAP_SYS_RESOURCE; RunPodSandbox fails otherwise
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"        # exec/attach streaming on a random loopback port
  [plugins."io.containerd.grpc.v1.cri".cni]
    # empty private dirs: CNI stays "not ready", which only matters for non-host-network pods
    bin_dir = "$D/cni/bin"
    conf_dir = "$D/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"        # no overlayfs requirement
EOF
}

# OCI image layout tarball with one uncompressed busybox layer, built without network.
build_image() {
  local b=$D/image-build r=$D/image-build/rootfs
  rm -rf "$b"; mkdir -p "$r/bin" "$r/tmp" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$b/oci/blobs/sha256"
  cp /bin/busybox "$r/bin/busybox"
  for t in sh sleep cat true false echo ls env id ps kill mkdir rm touch printf test grep wc; do
    ln -s busybox "$r/bin/$t"
  done
  # deterministic layer: sorted names, fixed mtime and ownership
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$r" -cf "$b/layer.tar" .
  blob() { # FILE -> moves it into blobs/, prints "digest size"
    local h s; h=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
    mv "$1" "$b/oci/blobs/sha256/$h"; echo "sha256:$h $s"
  }
  local layer cfg man
  layer=$(blob "$b/layer.tar")
  printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sleep","inf"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "${layer% *}" >"$b/config.json"
  cfg=$(blob "$b/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
    "${cfg% *}" "${cfg#* }" "${layer% *}" "${layer#* }" >"$b/manifest.json"
  man=$(blob "$b/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' \
    "${man% *}" "${man#* }" >"$b/oci/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$b/oci/oci-layout"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$b/oci" -cf "$D/image.tar" .
  rm -rf "$b"
}

# Starts containerd from DIR and imports the image; fails (containerd killed) when the import
# does not show up.
launch() {
  local t
  containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
  echo $! >"$D/containerd.pid"
  for t in $(seq 200); do   # up to 20 s
    ctr_ version >/dev/null 2>&1 && break
    kill -0 "$(cat "$D/containerd.pid")" 2>/dev/null || { tail -20 "$D/containerd.log" >&2; die "containerd exited"; }
    [ "$t" -lt 200 ] || { tail -20 "$D/containerd.log" >&2; die "containerd socket not answering after 20 s"; }
    sleep 0.1
  done
  # docker.io/ name: CRI normalises references, a bare local/pause:1 would not be found.
  # --snapshotter native: unpack for the snapshotter CRI uses (ctr defaults to overlayfs).
  if ctr_ -n k8s.io images import --snapshotter native --base-name docker.io/local/pause \
       --index-name docker.io/local/pause:1 "$D/image.tar" >"$D/import.log" 2>&1 \
     && ctr_ -n k8s.io images ls -q | grep -qx 'docker.io/local/pause:1'; then
    return 0
  fi
  kill -KILL "$(cat "$D/containerd.pid")" 2>/dev/null || true
  return 1
}

start() {
  local t
  for t in containerd ctr runc; do command -v $t >/dev/null || die "'$t' not found; apt-get install -y containerd runc busybox-static"; done
  [ -x /bin/busybox ] || die "/bin/busybox not found; apt-get install -y busybox-static"
  ! ours "$(cat "$D/containerd.pid" 2>/dev/null)" || die "a containerd from $D is already running (stop it first)"
  mkdir -p "$D"
  write_config
  # on failure kill that containerd but keep DIR (and its logs) for inspection
  trap '[ $? -eq 0 ] || { kill -KILL "$(cat "$D/containerd.pid")" 2>/dev/null
        echo "containerd-env: start failed; see $D/containerd.log, then run stop $D" >&2; }' EXIT
  build_image
  # A fresh containerd sometimes loses the image it was just given (ctr: "content digest …:
  # not found" on unpack, then again on every retry with the same daemon; seen on a busy
  # machine with other containerds running): start over from an empty root, up to 3 times.
  for t in 1 2 3; do
    launch && { echo "CONTAINERD_SOCKET=$SOCK"; return 0; }
    echo "containerd-env: image import failed (attempt $t): $(tail -1 "$D/import.log")" >&2
    sleep 0.5
    rm -rf "$D/root" "$D/state"
  done
  tail -30 "$D/containerd.log" >&2
  die "image import failed"
}

stop() {
  local pid="" ns id i m
  [ -f "$D/containerd.pid" ] && pid=$(cat "$D/containerd.pid" 2>/dev/null || true)
  if [ -S "$SOCK" ] && timeout 5 ctr -a "$SOCK" version >/dev/null 2>&1; then
    # kill and delete every task (CRI sandboxes and containers are tasks in k8s.io)
    for ns in $(timeout 5 ctr -a "$SOCK" namespaces ls -q 2>/dev/null); do
      for id in $(timeout 5 ctr -a "$SOCK" -n "$ns" tasks ls -q 2>/dev/null); do
        timeout 5 ctr -a "$SOCK" -n "$ns" tasks kill -a -s KILL "$id" >/dev/null 2>&1 || true
      done
      for id in $(timeout 5 ctr -a "$SOCK" -n "$ns" tasks ls -q 2>/dev/null); do
        timeout 5 ctr -a "$SOCK" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
      done
    done
  fi
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done   # 10 s (~2 s usual)
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # shims outlive containerd by design (theirs carry "-address DIR/containerd.sock"); kill their
  # children first (each container's init; killing a pid-namespace init kills the namespace)
  local shims=" "
  for i in /proc/[0-9]*; do
    case "$(tr '\0' ' ' 2>/dev/null <"$i/cmdline" || true)" in
      *containerd-shim*" $SOCK "*) shims+="${i#/proc/} " ;;
    esac
  done
  if [ "$shims" != " " ]; then
    for i in /proc/[0-9]*; do   # ppid: 2nd field after "(comm) " in /proc/PID/stat
      m=$(sed 's/.*) //' "$i/stat" 2>/dev/null | cut -d' ' -f2 || true)
      case "$shims" in *" $m "*) kill -KILL "${i#/proc/}" 2>/dev/null || true ;; esac
    done
    kill -KILL $shims 2>/dev/null || true
    sleep 0.2
  fi
  # unmount deepest first; /proc/mounts escapes spaces etc. as octal, printf %b undoes it
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$D" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts |
           while read -r m; do printf '%b\n' "$m"; done | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
  rm -rf -- "$D" 2>/dev/null || { sleep 1; rm -rf -- "$D" || true; }
  return 0
}

case $CMD in start) start ;; stop) stop ;; *) die "usage: $0 start|stop DIR" ;; esac
