#!/usr/bin/env bash
# Every test, on a fresh Debian 12 machine, as root: installs what the tests need, starts a
# private containerd, checks formatting and lints, runs the whole suite (`cargo test`: unit,
# real kubeadm trees, real containerd, etcd, journald), checks what the release binary contains,
# then builds the .deb and the .rpm and tests them (lintian, rpm, a booted systemd).
# `.ci/run` runs exactly this. A quick run without any of it: `KCR_QUICK=1 cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "tests/run.sh: run it as root (containers, mounts, a booted systemd)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
# openssl, etcd: oracles and TLS peers; e2fsprogs: chattr; containerd, runc, busybox-static:
# the real CRI runtime of the restart tests; systemd, util-linux: systemd-analyze, journald,
# journalctl, unshare; debootstrap, systemd-container, man-db: the booted-systemd package test;
# lintian, rpm, rpmlint: the package checks.
packages=(openssl etcd-server etcd-client e2fsprogs containerd runc busybox-static systemd
          util-linux debootstrap systemd-container man-db lintian rpm rpmlint)
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A private containerd (own root, state and socket) for the restart tests; stopped at the end
# whatever happens.
ctrd_dir=$(mktemp -d /tmp/kcr-ctrd.XXXXXX)
trap 'bash tests/support/containerd-env.sh stop "$ctrd_dir"' EXIT
socket_line=$(bash tests/support/containerd-env.sh start "$ctrd_dir" | tail -n 1)
export KCR_CONTAINERD_SOCKET="${socket_line#CONTAINERD_SOCKET=}"
echo "tests/run.sh: containerd at $KCR_CONTAINERD_SOCKET"
unset KCR_QUICK   # a full run: a test that cannot run fails

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo clippy -- -D warnings   # the release build, without the test feature
cargo test
bash tests/support/release-contents.sh
bash tests/support/packages.sh
echo "tests/run.sh: every test passed"
