#!/bin/sh
# cohort package: before the files are unpacked.
#   deb preinst: install [OLD-VERSION] | upgrade OLD-VERSION | abort-upgrade NEW-VERSION
#   rpm %pre:    1 (install) | 2 or more (upgrade)
#
# Creates the system group and user cohort, which own /var/lib/cohort in
# the package, so they must exist before dpkg or rpm unpacks it. Nothing
# else: an existing user is left as it is.
#
# POSIX sh with set -eu (no pipefail in dash, Debian's /bin/sh): maintainer
# scripts run under /bin/sh on both families.
set -eu

if ! getent group cohort >/dev/null; then
	groupadd --system cohort
fi
if ! getent passwd cohort >/dev/null; then
	useradd --system --gid cohort --home-dir /var/lib/cohort --no-create-home \
		--shell /usr/sbin/nologin --comment "Cohort federated learning" cohort
fi
exit 0
