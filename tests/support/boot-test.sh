#!/usr/bin/env bash
# boot-test.sh DEB DEB_NEWER NODE_DIR: installs the .deb in a real booted systemd — a minimal
# Debian 12 rootfs booted with systemd-nspawn, systemd as PID 1 — holding NODE_DIR as its
# /etc/kubernetes, and checks what an operator sees: the service active with its STATUS= line,
# the expiry warning in `journalctl -o json` with its fields and MESSAGE_ID and in
# `journalctl -x` with its catalog text, `man kube-cert-renewer`, the timer in `list-timers`
# when enabled instead of the service, an upgrade to DEB_NEWER that keeps an edited config and
# the state and restarts the service, and `apt-get purge` leaving no file of the package.
#
# Needs root, debootstrap, systemd-container (nspawn) and a Debian mirror. The rootfs is built
# once and cached as a tarball in $KCR_CACHE (default /var/cache/kube-cert-renewer-ci).
set -euo pipefail
deb=$(realpath "$1"); deb_newer=$(realpath "$2"); node=$(realpath "$3")
cache=${KCR_CACHE:-/var/cache/kube-cert-renewer-ci}
rootfs_tar=$cache/rootfs-bookworm.tar
work=$(mktemp -d /tmp/kcr-boot.XXXXXX)
machine=kcr-boot-$$
cgroup=kcr-boot-$$
launcher= leader=
step() { printf '\n== boot-test: %s\n' "$*"; }
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*" >&2; [ -f "$work/console.log" ] && tail -30 "$work/console.log" >&2; exit 1; }

cleanup() {
  set +e
  if [ -n "$launcher" ] && kill -0 "$launcher" 2>/dev/null; then
    [ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null
    sleep 1
    kill -KILL "$launcher" 2>/dev/null
  fi
  for h in /sys/fs/cgroup/*/"$cgroup"; do
    [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

# --- a minimal Debian 12 with systemd, man-db and tzdata (cached) ---------------------------
if [ ! -s "$rootfs_tar" ]; then
  step "debootstrap a minbase bookworm (once; cached in $rootfs_tar)"
  mirror=$(sed -n 's/^URIs: *\(.*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  mkdir -p "$cache" "$work/build"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,man-db,tzdata,procps \
    bookworm "$work/build" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
  chroot "$work/build" apt-get clean
  echo kcr-node > "$work/build/etc/hostname"
  tar -C "$work/build" -cf "$rootfs_tar.tmp" . && mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$work/build"
fi
step "rootfs from $rootfs_tar"
mkdir -p "$work/root" "$work/assets"
tar -C "$work/root" -xf "$rootfs_tar"
cp "$deb" "$deb_newer" "$work/assets/"
cp -a "$node" "$work/assets/node"
# the node's /etc/kubernetes, there before the package comes
cp -a "$node" "$work/root/etc/kubernetes"

# --- boot: systemd as PID 1 under nspawn, in its own mount namespace and cgroup --------------
step "boot"
for h in /sys/fs/cgroup/*/; do
  mkdir -p "$h$cgroup"
  if [ -f "${h}cpuset.cpus" ]; then
    cat "${h}cpuset.cpus" > "$h$cgroup/cpuset.cpus"; cat "${h}cpuset.mems" > "$h$cgroup/cpuset.mems"
  fi
done
cat > "$work/launch" <<EOF
#!/bin/bash
for h in /sys/fs/cgroup/*/; do echo \$\$ > \${h}$cgroup/cgroup.procs; done
mount --make-rprivate /
# nspawn's scratch space stays off the host's /run/systemd
mount -t tmpfs tmpfs /run/systemd
# no host systemd to register with; the console goes to a file (a pty nobody reads would block)
exec systemd-nspawn --register=no --keep-unit --console=read-only -D "$work/root" \
  -M $machine --bind-ro="$work/assets":/opt/kcr -b
EOF
chmod +x "$work/launch"
unshare -m "$work/launch" > "$work/console.log" 2>&1 < /dev/null &
launcher=$!
cx() { nsenter -t "$leader" -m -u -i -p -- "$@"; }   # a command inside the booted system
# service_status PATTERN: `systemctl status` of the service once it matches PATTERN (grep -E),
# or as it is after 20 s
service_status() {
  local status=
  for _ in $(seq 100); do
    status=$(cx systemctl status kube-cert-renewer.service --no-pager 2>&1 || true)
    grep -Eq "$1" <<<"$status" && break
    sleep 0.2
  done
  printf '%s\n' "$status"
}
state=
for _ in $(seq 600); do
  leader=$(pgrep -P "$launcher" | head -1 || true)
  if [ -n "$leader" ]; then
    state=$(cx systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
  fi
  kill -0 "$launcher" 2>/dev/null || fail "the container exited while booting"
  sleep 0.1
done
case "$state" in running|degraded) ok "systemd booted ($state)" ;; *) fail "boot did not finish ($state)" ;; esac

# --- install ------------------------------------------------------------------------------
# every path of the system but the volatile and the bookkeeping ones (logs, caches, dpkg/apt/
# systemd state): what a package leaves behind shows up here
listing() {
  cx sh -c 'find / -xdev \( -path /proc -o -path /sys -o -path /run -o -path /tmp -o -path /var/log \
    -o -path /var/cache -o -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/lib/systemd \) -prune \
    -o -print | sort'
}
listing > "$work/files-before"
step "apt-get install $(basename "$deb")"
cx env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "/opt/kcr/$(basename "$deb")" \
  > "$work/install.log" 2>&1 || { cat "$work/install.log"; fail "install"; }
active=
for _ in $(seq 100); do
  active=$(cx systemctl is-active kube-cert-renewer.service || true)
  [ "$active" = active ] && break
  sleep 0.2
done
[ "$active" = active ] && ok "kube-cert-renewer.service active" || { cx systemctl status kube-cert-renewer --no-pager || true; fail "service $active"; }
[ "$(cx systemctl is-enabled kube-cert-renewer.service)" = enabled ] && ok "enabled" || fail "not enabled"
status=$(service_status 'Status: "next window')
echo "$status" | head -12
grep -q 'Status: "next window .* soonest: .* warning: ' <<<"$status" \
  && ok "systemctl status shows the STATUS= line" || fail "no STATUS= line"

# --- the journal: the warning with its fields and MESSAGE_ID, and its catalog text ---------
step "journal"
expiring=e25d74efa4dc4d658d9fc5e1ac85237d
json=
for _ in $(seq 100); do
  json=$(cx journalctl -u kube-cert-renewer.service -o json --no-pager MESSAGE_ID=$expiring CERT_NAME=apiserver || true)
  [ -n "$json" ] && break
  sleep 0.2
done
python3 - "$json" <<'PY' || fail "the expiry warning is not in the journal as it should be"
import json, sys
entry = json.loads(sys.argv[1].splitlines()[0])
for key, want in {"PRIORITY": "4", "CERT_NAME": "apiserver", "DAYS_LEFT": "19", "CA_NAME": "ca",
                  "ACTION": "alert", "OUTCOME": "expiring", "SYSLOG_IDENTIFIER": "kube-cert-renewer",
                  "_SYSTEMD_UNIT": "kube-cert-renewer.service"}.items():
    assert entry.get(key) == want, (key, entry.get(key), entry)
assert entry["CERT_PATH"] == "/etc/kubernetes/pki/apiserver.crt", entry
assert entry["NOT_AFTER"].endswith("Z"), entry
print("ok: expiring alert:", entry["MESSAGE"])
PY
cx journalctl -x -u kube-cert-renewer.service --no-pager MESSAGE_ID=$expiring > "$work/explained" 2>&1 || true
grep -q "A healthy node renews every certificate" "$work/explained" \
  && ok "journalctl -x shows the catalog text" || { cat "$work/explained"; fail "no catalog text"; }
# a node where nothing else restarts the components: the daemon says so
cx journalctl -u kube-cert-renewer.service --no-pager -o cat | head -5

# --- the man page ----------------------------------------------------------------------------
cx sh -c 'MANWIDTH=80 man kube-cert-renewer 2>/dev/null' > "$work/man" || true
grep -Eq "kube-cert-renewer +- +Keeps +the +certificates" "$work/man" && grep -q "SUBCOMMANDS" "$work/man" \
  && ok "man kube-cert-renewer" || { head "$work/man"; fail "man page"; }
cx sh -c 'man -w kube-cert-renewer-run' >/dev/null && ok "man kube-cert-renewer-run" || fail "man page of run"

# --- the timer instead of the service --------------------------------------------------------
step "timer"
cx systemctl disable --now kube-cert-renewer.service > /dev/null 2>&1
cx systemctl enable --now kube-cert-renewer-renew.timer > /dev/null 2>&1
cx systemctl list-timers --all --no-pager > "$work/timers"
grep -E 'NEXT|kube-cert-renewer' "$work/timers" || true
grep -q 'kube-cert-renewer-renew.timer' "$work/timers" && ok "list-timers shows kube-cert-renewer-renew.timer" \
  || fail "the timer is not listed"
cx systemctl disable --now kube-cert-renewer-renew.timer > /dev/null 2>&1
cx systemctl enable --now kube-cert-renewer.service > /dev/null 2>&1

# --- upgrade: the edited config and the state stay, the service restarts --------------------
step "upgrade to $(basename "$deb_newer")"
cx sed -i 's/^warn_days = 30$/warn_days = 31  # edited by the operator/' /etc/kube-cert-renewer/config.toml
cx grep -q 'edited by the operator' /etc/kube-cert-renewer/config.toml || fail "the config edit"
cx sha256sum /etc/kube-cert-renewer/config.toml > "$work/config-before"
for _ in $(seq 100); do cx test -s /var/lib/kube-cert-renewer/daemon.json && break; sleep 0.2; done
cx test -s /var/lib/kube-cert-renewer/daemon.json || fail "no daemon state to keep"
pid_before=$(cx systemctl show -P MainPID kube-cert-renewer.service)
cx env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  -o Dpkg::Options::=--force-confold "/opt/kcr/$(basename "$deb_newer")" > "$work/upgrade.log" 2>&1 \
  || { cat "$work/upgrade.log"; fail "upgrade"; }
cx sha256sum /etc/kube-cert-renewer/config.toml | cmp -s - "$work/config-before" \
  && ok "the edited config is kept" || fail "the config changed"
cx test -s /var/lib/kube-cert-renewer/daemon.json && ok "the state dir is kept" || fail "state lost"
version=$(cx dpkg-query -W -f '${Version}' kube-cert-renewer)
pid_after=
for _ in $(seq 100); do
  pid_after=$(cx systemctl show -P MainPID kube-cert-renewer.service)
  [ "$(cx systemctl is-active kube-cert-renewer.service)" = active ] && [ "$pid_after" != 0 ] \
    && [ "$pid_after" != "$pid_before" ] && break
  sleep 0.2
done
[ "$pid_after" != "$pid_before" ] && [ "$pid_after" != 0 ] \
  && ok "upgraded to $version, service restarted (pid $pid_before -> $pid_after)" \
  || { cat "$work/upgrade.log"; cx systemctl status kube-cert-renewer --no-pager || true
       fail "not restarted (pid $pid_before -> $pid_after)"; }

# --- purge: nothing of the package is left ---------------------------------------------------
step "apt-get purge"
cx env DEBIAN_FRONTEND=noninteractive apt-get purge -y kube-cert-renewer > "$work/purge.log" 2>&1 \
  || { cat "$work/purge.log"; fail "purge"; }
listing > "$work/files-after"
if diff "$work/files-before" "$work/files-after" > "$work/files-diff"; then
  ok "after purge the filesystem lists exactly what it listed before the install ($(wc -l < "$work/files-after") paths)"
else
  cat "$work/files-diff"; fail "files left behind (or lost) by install + purge"
fi

# --- a node that is not (yet) a control plane: it starts, says so, and sees `kubeadm init` --
step "a node without /etc/kubernetes"
cx rm -rf /etc/kubernetes
cx env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "/opt/kcr/$(basename "$deb")" \
  > "$work/install2.log" 2>&1 || { cat "$work/install2.log"; fail "install on a plain node"; }
status=$(service_status 'Status: ".*no kubeadm certificates on this node')
grep -q 'Active: active' <<<"$status" && grep -q 'no kubeadm certificates on this node' <<<"$status" \
  && ok "active on a plain node, and says there is nothing to watch yet" || { echo "$status"; fail "plain node"; }
# `kubeadm init` writes its tree: seen within seconds
cx sh -c 'mkdir -p /tmp/init && cp -a /opt/kcr/node/. /tmp/init/ && cp -a /tmp/init/. /etc/kubernetes/'
status=$(service_status 'Status: ".*soonest: ')
grep -q 'Status: ".*soonest: ' <<<"$status" && ok "the certificates of a new control plane are seen" \
  || { echo "$status"; fail "kubeadm init not noticed"; }

step "shutdown"
cx systemctl poweroff > /dev/null 2>&1 || true
for _ in $(seq 300); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
kill -0 "$launcher" 2>/dev/null && fail "the container did not stop"
launcher=
ok "the booted-systemd package test passed"
