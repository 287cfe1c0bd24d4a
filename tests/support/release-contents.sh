#!/usr/bin/env bash
# What a package ships is a plain build, without the `test-support` feature that `cargo test`
# turns on. Checks that such a build has no kubelet stand-in (it runs a manifest annotation as
# /bin/sh -c on a CRI socket), none of the CRI calls only the stand-in makes, and no failpoint
# an environment variable can trigger; and that the README's demo still works with it.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --bin kube-cert-renewer
bin=target/debug/kube-cert-renewer
fail() { echo "release-contents: $*" >&2; exit 1; }

for text in kube-cert-renewer.test/command KUBE_CERT_RENEWER_FAILPOINT RuntimeService/RunPodSandbox RuntimeService/CreateContainer RuntimeService/StopContainer; do
  if grep -aq "$text" "$bin"; then fail "the plain build contains \"$text\""; fi
done
grep -aq RuntimeService/ListContainers "$bin" || fail "the check itself is broken: ListContainers not found in $bin"

set +e
out=$("$bin" kubelet-standin --manifests-dir /nonexistent 2>&1); code=$?
set -e
[ "$code" = 3 ] || fail "kubelet-standin: exit $code, expected 3 (no such command): $out"
grep -q "unrecognized subcommand" <<<"$out" || fail "kubelet-standin was not refused: $out"

# the demo renews a throwaway node; an armed failpoint does nothing in this build
out=$(KUBE_CERT_RENEWER_FAILPOINT=renew.after-journal "$bin" demo 2>&1) \
  || fail "demo failed (or a failpoint fired): $out"
grep -q "Renewed:" <<<"$out" || fail "demo renewed nothing: $out"

set +e
out=$("$bin" --runtime-endpoint unix:///nonexistent.sock demo 2>&1); code=$?
set -e
[ "$code" = 3 ] && grep -q "test-only" <<<"$out" \
  || fail "demo with a runtime endpoint must say the stand-in is test-only (exit $code): $out"
echo "release-contents: ok (no stand-in, no test-only CRI calls, no failpoints; the demo works)"
