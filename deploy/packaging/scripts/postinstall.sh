#!/bin/sh
# cohort package: after the files are in place.
#   deb postinst: configure [OLD-VERSION] (none on a first install)
#                 | abort-upgrade | abort-remove | abort-deconfigure ...
#   rpm %post:    1 (first install) | 2 or more (upgrade)
#
# First install: enables cohort-agent.service for boot. It starts the agent
# only if /etc/cohort/agent.json was already filled in (it differs from the
# shipped default, /usr/share/cohort/agent.json, for example because
# configuration management put it there first); otherwise it says what to
# do next. cohort-coordinator.service is never enabled or started here.
#
# Upgrade (and deb reinstall): restarts each unit that is running, so it
# runs the new binary; never starts a stopped one, never changes whether a
# unit is enabled. Ownership and modes of /etc/cohort and /var/lib/cohort
# are set again; their contents are not touched.
#
# POSIX sh with set -eu (no pipefail in dash, Debian's /bin/sh).
set -eu

first=no
case "${1:-}" in
configure) [ -n "${2:-}" ] || first=yes ;;
1) first=yes ;;
esac

# The user is made by preinstall; make sure (a deb configure can run
# without a preinst, after an interrupted installation).
if ! getent group cohort >/dev/null; then
	groupadd --system cohort
fi
if ! getent passwd cohort >/dev/null; then
	useradd --system --gid cohort --home-dir /var/lib/cohort --no-create-home \
		--shell /usr/sbin/nologin --comment "Cohort federated learning" cohort
fi

# The data directory: the agent's only writable place (its unit's
# StateDirectory). Top level only: what is inside belongs to the agent.
mkdir -p /var/lib/cohort
chown cohort:cohort /var/lib/cohort
chmod 0700 /var/lib/cohort
# Configuration: readable by the agent (group cohort), writable by root.
chown root:cohort /etc/cohort
chmod 0750 /etc/cohort
if [ "$first" = yes ] && [ -f /etc/cohort/agent.json ]; then
	chown root:cohort /etc/cohort/agent.json
	chmod 0640 /etc/cohort/agent.json
fi

command -v systemctl >/dev/null 2>&1 || exit 0
# systemd runs as PID 1: not in a chroot or an image build.
running=no
[ -d /run/systemd/system ] && running=yes
[ "$running" = no ] || systemctl daemon-reload || :

if [ "$first" = yes ]; then
	systemctl enable cohort-agent.service || :
	if [ "$running" = yes ] && [ -f /etc/cohort/agent.json ] &&
		! cmp -s /etc/cohort/agent.json /usr/share/cohort/agent.json; then
		echo "cohort: /etc/cohort/agent.json is filled in: starting cohort-agent"
		systemctl start cohort-agent.service || :
	else
		cat <<'MSG'
cohort: cohort-agent is enabled but not started: /etc/cohort/agent.json is
still the default. Enroll this gateway and fill in the config, then start it:
  sudo -u cohort cohort agent enroll --config /etc/cohort/agent.json \
    --server https://COORDINATOR:7443 --ca /etc/cohort/federation-ca.crt \
    --token-file /etc/cohort/SITE.enroll
  edit /etc/cohort/agent.json: coordinators, renew.server, fhir_dir
  systemctl start cohort-agent; journalctl -u cohort-agent
(see /usr/share/doc/cohort/README.md)
MSG
	fi
elif [ "$running" = yes ]; then
	# Restart what runs, so that it runs the new binary.
	systemctl try-restart cohort-agent.service cohort-coordinator.service || :
fi
exit 0
