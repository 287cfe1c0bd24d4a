# kube-cert-renewer %post: what %systemd_post and a first-install enable --now would do, in plain
# shell (cargo-generate-rpm does not expand rpm macros). $1 = 1 on install, 2+ on upgrade.
mkdir -p /var/lib/kube-cert-renewer && chmod 0700 /var/lib/kube-cert-renewer
[ -d /etc/kubernetes ] || mkdir -m 0755 /etc/kubernetes
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	journalctl --update-catalog >/dev/null 2>&1 || :
	if [ "$1" -eq 1 ]; then
		systemctl enable --now kube-cert-renewer.service >/dev/null 2>&1 || :
	fi
elif [ "$1" -eq 1 ]; then
	systemctl enable kube-cert-renewer.service >/dev/null 2>&1 || :
fi
