#!/bin/sh
# cohort package: before the files are removed.
#   deb prerm:  remove | upgrade NEW-VERSION | deconfigure ... | failed-upgrade OLD-VERSION
#   rpm %preun: 0 (erase) | 1 or more (upgrade: another version stays)
#
# Removal stops the agent and the coordinator. An upgrade leaves them
# running: postinstall restarts them on the new binary once it is in place.
# rpm has no purge, so an rpm erase also disables the units; a deb remove
# keeps them enabled (the links come back to life on a reinstall) and purge
# removes the links.
#
# POSIX sh with set -eu (no pipefail in dash, Debian's /bin/sh).
set -eu

case "${1:-}" in
remove | deconfigure | 0) ;;
*) exit 0 ;;
esac
command -v systemctl >/dev/null 2>&1 || exit 0
units="cohort-agent.service cohort-coordinator.service"
if [ -d /run/systemd/system ]; then
	# shellcheck disable=SC2086 # two unit names
	systemctl stop $units || :
fi
if [ "$1" = 0 ]; then
	# shellcheck disable=SC2086
	systemctl --no-reload disable $units || :
fi
exit 0
