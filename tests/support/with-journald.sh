#!/usr/bin/env bash
# with-journald.sh STORE CMD...: runs CMD beside a private systemd-journald that stores into
# STORE, in a mount namespace of its own, so CMD finds a journal at the standard socket path
# (/run/systemd/journal/socket) without touching the machine's. Read STORE back afterwards with
# `journalctl -D STORE`. Needs root and systemd's journald (Debian: package systemd).
set -euo pipefail
if [ "${KCR_IN_JOURNALD_NS:-}" != 1 ]; then
  exec env KCR_IN_JOURNALD_NS=1 unshare --mount --propagation private "$0" "$@"
fi
store=$1; shift
mkdir -p "$store"
# private /run/systemd and /run/log (this namespace only), the store as /var/log/journal
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir -p /run/log && mount -t tmpfs -o mode=0755 tmpfs /run/log
mkdir -p /var/log/journal && mount --bind "$store" /var/log/journal
mkdir -p /run/systemd/journal /run/systemd/journald.conf.d
cat > /run/systemd/journald.conf.d/test.conf <<'CONF'
[Journal]
Storage=persistent
ReadKMsg=no
RateLimitBurst=0
ForwardToSyslog=no
ForwardToWall=no
CONF
# journald writes to the store at once instead of waiting for a flush request
touch /run/systemd/journal/flushed
/lib/systemd/systemd-journald &
journald=$!
for _ in $(seq 300); do [ -S /run/systemd/journal/socket ] && break; sleep 0.02; done
[ -S /run/systemd/journal/socket ] || { echo "with-journald: journald did not start" >&2; exit 1; }
status=0
"$@" || status=$?
journalctl --sync 2>/dev/null || true
kill "$journald"; wait "$journald" 2>/dev/null || true
exit "$status"
