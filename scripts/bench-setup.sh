#!/usr/bin/env bash
# Installs what `npm run bench` needs, with apt-get, only when missing: Docker 20.10 (docker.io: its
# dockerd and containerd), dnsperf, iperf3, and podman with netavark + aardvark-dns when asked
# (BENCH_PODMAN=1, or --engines including podman).
# Safety: installing docker.io must never start a dockerd on the machine's own network. A policy-rc.d
# that refuses every service start is put in place first (only if none exists, and removed again
# afterwards), and afterwards we check that no docker0 link and no dockerd/containerd runs outside
# the bench's own namespaces.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then echo "bench-setup: run as root" >&2; exit 1; fi

packages=(docker.io dnsperf iperf3 busybox-static)
if [ "${BENCH_PODMAN:-0}" = 1 ]; then packages+=(podman netavark aardvark-dns); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# bench-setup: no service starts while installing\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup() { if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT
  echo "bench-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: no docker-proxy wrappers/cgroupfs-mount/etc beyond what dockerd needs.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  cleanup
  trap - EXIT
fi

# Verify nothing started on the host network.
bad=0
if ip link show docker0 >/dev/null 2>&1; then
  echo "bench-setup: DANGER: a docker0 link exists in the host namespace" >&2; bad=1
fi
hostns=$(readlink /proc/self/ns/net)
for pid in $(pgrep -x dockerd || true) $(pgrep -x containerd || true); do
  ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null || true)
  if [ "$ns" = "$hostns" ]; then
    echo "bench-setup: DANGER: $(cat /proc/$pid/comm) (pid $pid) runs in the host network namespace" >&2; bad=1
  fi
done
if [ "$bad" != 0 ]; then exit 1; fi
for b in dockerd containerd containerd-shim-runc-v2 dnsperf iperf3; do
  command -v "$b" >/dev/null || { echo "bench-setup: $b missing after install" >&2; exit 1; }
done
echo "bench-setup: ok ($(dockerd --version))"
