# Sourced by scripts/test.sh and scripts/bench.sh: installs what the tests
# and benchmarks need from Debian when it is missing (protoc, Mosquitto,
# Chromium for the dashboard's browser test), without starting Debian's
# mosquitto service (tests and benchmarks start their own brokers).
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # Install without starting Debian's mosquitto service: tests run their own.
  printf '#!/bin/sh\nexit 101\n' > /tmp/cohort-policy-rc.d && chmod +x /tmp/cohort-policy-rc.d
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    $sudo cp /tmp/cohort-policy-rc.d /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  $sudo rm -f /usr/sbin/policy-rc.d
  trap - EXIT
fi
