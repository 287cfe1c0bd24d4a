#!/usr/bin/env bash
# Builds the .deb and the .rpm into target/dist:
#   kube-cert-renewer_<version>-1_amd64.deb   kube-cert-renewer-<version>-1.x86_64.rpm
# with the release binary (no test-support feature), the units, the journal catalog, the
# config as a conffile, a man page and completions generated from the CLI.
# Needs cargo-deb and cargo-generate-rpm: installed into $KCR_TOOLS (default
# /var/cache/kube-cert-renewer-ci/tools) when missing. `DEB_VERSION=0.1.1 bash packaging/dist.sh`
# builds a package of another version (the upgrade test).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${KCR_TOOLS:-/var/cache/kube-cert-renewer-ci/tools}
export PATH="$tools/bin:$PATH"
command -v cargo-deb >/dev/null || cargo install --locked --root "$tools" cargo-deb@3.8.0
command -v cargo-generate-rpm >/dev/null || cargo install --locked --root "$tools" cargo-generate-rpm@0.21.1

cargo build --release --locked --bin kube-cert-renewer
rm -rf target/dist/assets && mkdir -p target/dist/assets
cargo run --release --locked --example dist-assets -- target/dist/assets >/dev/null
# the example builds the library again with the test feature: rebuild the shipped binary
# without it, and prove it is that one
cargo build --release --locked --bin kube-cert-renewer
if grep -aq kube-cert-renewer.test/command target/release/kube-cert-renewer; then
  echo "dist: target/release/kube-cert-renewer has the test-only stand-in" >&2; exit 1
fi
version_args=()
[ -n "${DEB_VERSION:-}" ] && version_args=(--deb-version "$DEB_VERSION-1")
cargo deb --no-build --no-strip --output target/dist/ "${version_args[@]}"
rpm_args=()
[ -n "${DEB_VERSION:-}" ] && rpm_args=(--set-metadata "version = \"$DEB_VERSION\"")
cargo generate-rpm --payload-compress gzip --output target/dist/ "${rpm_args[@]}"
ls -1 target/dist/*.deb target/dist/*.rpm
