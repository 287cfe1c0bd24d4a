# kube-cert-renewer %preun: what %systemd_preun does. $1 = 0 on erase, 1 on upgrade.
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable --now kube-cert-renewer.service kube-cert-renewer-renew.timer >/dev/null 2>&1 || :
fi
