# kube-cert-renewer %postun: what %systemd_postun_with_restart does. $1 = 0 on erase, 1 on
# upgrade. Config and state are kept on erase (rpm has no purge).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart kube-cert-renewer.service >/dev/null 2>&1 || :
	fi
fi
