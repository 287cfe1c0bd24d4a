#!/usr/bin/env bash
# The packages, built and checked the way an operator meets them:
#   - both built by packaging/dist.sh (and a higher version, for the upgrade);
#   - lintian: no error on the .deb (the warnings allowed are listed, and justified in the README);
#   - the .rpm: its files, modes, config flag and scriptlets; rpmlint errors only those
#     cargo-generate-rpm cannot fix; installed with `rpm -i --root` into a scratch root, its
#     %post run there;
#   - the .deb installed, upgraded and purged in a booted systemd (tests/support/boot-test.sh).
# Needs root, lintian, rpm, rpmlint, debootstrap, systemd-container (tests/run.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
newer="$version.1"
DEB_VERSION=$newer bash packaging/dist.sh > /dev/null
bash packaging/dist.sh
deb=target/dist/kube-cert-renewer_${version}-1_amd64.deb
deb_newer=target/dist/kube-cert-renewer_${newer}-1_amd64.deb
rpm=target/dist/kube-cert-renewer-${version}-1.x86_64.rpm
for f in "$deb" "$deb_newer" "$rpm"; do [ -s "$f" ] || fail "$f was not built"; done

echo "== lintian"
# initial-upload-closes-no-bugs: only the Debian archive cares (a first upload closes an ITP bug)
allowed_lintian='initial-upload-closes-no-bugs'
lint=$(lintian --pedantic "$deb" 2>&1 | grep -v 'running with root privileges' || true)
echo "$lint"
if grep -E '^E: ' <<<"$lint"; then fail "lintian errors"; fi
if grep -E '^W: ' <<<"$lint" | grep -vE "$allowed_lintian"; then fail "unexpected lintian warnings"; fi
ok "lintian: no error, no warning but: $allowed_lintian"

echo "== rpm"
expected=$(cat <<'EOF'
/etc/kube-cert-renewer/config.toml
/usr/bin/kube-cert-renewer
/usr/lib/systemd/catalog/kube-cert-renewer.catalog
/usr/lib/systemd/system/kube-cert-renewer-renew.service
/usr/lib/systemd/system/kube-cert-renewer-renew.timer
/usr/lib/systemd/system/kube-cert-renewer.service
/usr/share/bash-completion/completions/kube-cert-renewer
/usr/share/doc/kube-cert-renewer/README.md
/usr/share/fish/vendor_completions.d/kube-cert-renewer.fish
/usr/share/licenses/kube-cert-renewer/LICENSE
/usr/share/man/man8/kube-cert-renewer-check.8.gz
/usr/share/man/man8/kube-cert-renewer-demo.8.gz
/usr/share/man/man8/kube-cert-renewer-lease-credentials.8.gz
/usr/share/man/man8/kube-cert-renewer-recover.8.gz
/usr/share/man/man8/kube-cert-renewer-renew.8.gz
/usr/share/man/man8/kube-cert-renewer-restart.8.gz
/usr/share/man/man8/kube-cert-renewer-run.8.gz
/usr/share/man/man8/kube-cert-renewer-schedule.8.gz
/usr/share/man/man8/kube-cert-renewer-snapshot.8.gz
/usr/share/man/man8/kube-cert-renewer.8.gz
/usr/share/zsh/site-functions/_kube-cert-renewer
EOF
)
[ "$(rpm -qpl "$rpm")" = "$expected" ] && ok "rpm -qpl: the expected files" \
  || { rpm -qpl "$rpm"; fail "rpm -qpl"; }
[ "$(rpm -qpc "$rpm")" = /etc/kube-cert-renewer/config.toml ] && ok "rpm -qpc: the config" || fail "rpm -qpc"
flags=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILENAMES}\n]' "$rpm")
grep -qx 'cn -rw-r--r-- /etc/kube-cert-renewer/config.toml' <<<"$flags" \
  && ok "config is %config(noreplace), 0644" || { echo "$flags"; fail "config flags"; }
grep -qx ' -rwxr-xr-x /usr/bin/kube-cert-renewer' <<<"$flags" && ok "binary 0755" || fail "binary mode"
scripts=$(rpm -qp --scripts "$rpm")
for want in 'chmod 0700 /var/lib/kube-cert-renewer' 'enable --now kube-cert-renewer.service' \
            'disable --now kube-cert-renewer.service' 'try-restart kube-cert-renewer.service'; do
  grep -qF -- "$want" <<<"$scripts" || { echo "$scripts"; fail "scriptlets lack: $want"; }
done
ok "scriptlets: state dir, enable+start on install, stop+disable on erase, try-restart on upgrade"
# what cargo-generate-rpm 0.21 cannot set (signature, Packager, Group, %changelog, BuildHost)
allowed_rpmlint='no-signature|no-packager-tag|no-group-tag|no-changelogname-tag|no-buildhost-tag'
rlint=$(rpmlint "$rpm" 2>&1 || true)
echo "$rlint" | grep -E ': [EW]: '
if grep -E ': E: ' <<<"$rlint" | grep -vE "$allowed_rpmlint"; then fail "unexpected rpmlint errors"; fi
ok "rpmlint: no error but those cargo-generate-rpm cannot fix ($allowed_rpmlint)"

# installed into a scratch root: the files land with their modes, and %post runs there
scratch=$(mktemp -d /tmp/kcr-rpmroot.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/bin" "$scratch/usr/bin" "$scratch/dev"
cp /bin/busybox "$scratch/bin/busybox"
for tool in sh mkdir chmod; do ln -s busybox "$scratch/bin/$tool"; done
mknod -m 666 "$scratch/dev/null" c 1 3
rpm --root "$scratch" --initdb
rpm --root "$scratch" -i --nodeps --ignorearch "$rpm"
[ "$(stat -c %a "$scratch/usr/bin/kube-cert-renewer")" = 755 ] && ok "installed binary 0755" || fail "mode"
cmp -s "$scratch/etc/kube-cert-renewer/config.toml" config.example.toml && ok "config installed" || fail "config"
[ "$(stat -c %a "$scratch/var/lib/kube-cert-renewer")" = 700 ] && ok "%post made the state dir 0700" \
  || fail "%post did not make the state dir"
[ "$(rpm --root "$scratch" -q --qf '%{VERSION}-%{RELEASE}' kube-cert-renewer)" = "$version-1" ] \
  && ok "rpm -q in the scratch root: $version-1" || fail "rpm -q"
rpm --root "$scratch" -e --nodeps kube-cert-renewer
[ -d "$scratch/var/lib/kube-cert-renewer" ] && [ ! -e "$scratch/usr/bin/kube-cert-renewer" ] \
  && ok "rpm -e removes the files and keeps the state" || fail "rpm -e"

echo "== the .deb in a booted systemd"
node=$(mktemp -d /tmp/kcr-node.XXXXXX)
trap 'rm -rf "$scratch" "$node"' EXIT
cargo run --release --locked --example kubeadm-node -- "$node/kubernetes" 20 kcr-node > /dev/null
bash tests/support/boot-test.sh "$deb" "$deb_newer" "$node/kubernetes"
