# Sourced by scripts/test.sh and scripts/bench.sh: installs what the tests
# and benchmarks need from Debian when it is missing (protoc, Mosquitto,
# Chromium for the dashboard's browser test; docker-compose for the compose
# testbed, debootstrap and rpm for the package tests, where Docker is
# installed), without starting Debian's mosquitto service (tests and
# benchmarks start their own brokers).
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v chromium >/dev/null || need+=(chromium)
if command -v docker >/dev/null; then
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v rpm >/dev/null || need+=(rpm)
fi
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
