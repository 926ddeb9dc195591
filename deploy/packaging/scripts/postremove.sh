#!/bin/sh
# cohort package: after the files were removed.
#   deb postrm:  remove | purge | upgrade NEW-VERSION | failed-upgrade OLD-VERSION
#                | abort-install [OLD-VERSION] | abort-upgrade OLD-VERSION | disappear ...
#   rpm %postun: 0 (erase) | 1 or more (upgrade)
#
# remove (deb) and erase (rpm) keep the data: /var/lib/cohort (the store,
# its keys, the outbox, the egress log, the certificates), the coordinator's
# /var/lib/cohort-coordinator and the user cohort. A reinstall picks them up.
#
# purge (deb only; dpkg has already deleted the unchanged config files)
# deletes both data directories, the enablement links and the user and
# group cohort. Files an administrator added to /etc/cohort (certificates,
# keys, tokens) are kept and listed.
#
# POSIX sh with set -eu (no pipefail in dash, Debian's /bin/sh).
set -eu

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || :
fi

case "${1:-}" in
purge) ;;
remove | 0)
	echo "cohort: /var/lib/cohort (the agent's store, keys and outbox) and the user cohort stay until the package is purged"
	exit 0
	;;
*) exit 0 ;;
esac

for unit in cohort-agent.service cohort-coordinator.service; do
	rm -f "/etc/systemd/system/multi-user.target.wants/$unit"
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl reset-failed "$unit" >/dev/null 2>&1 || :
	fi
done
rm -rf /var/lib/cohort /var/lib/cohort-coordinator
if [ -d /etc/cohort ]; then
	if rmdir /etc/cohort 2>/dev/null; then
		:
	else
		echo "cohort: kept /etc/cohort, which holds files the package did not install:"
		ls -A /etc/cohort
	fi
fi
if getent passwd cohort >/dev/null; then
	userdel cohort || echo "cohort: could not delete the user cohort (a process of it still runs?)"
fi
if getent group cohort >/dev/null; then
	groupdel cohort || :
fi
exit 0
