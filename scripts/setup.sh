#!/usr/bin/env bash
# Installs whatever is missing for berth on Debian 12 (as root), then builds it. Safe to run again:
# it only installs what is absent and only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: berth needs root (containers, namespaces, mounts); run as root" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "setup: Node.js 20 or newer is required (found $(node --version))" >&2
  exit 1
fi

# System packages: the runtime and its monitor, the kernel tools berth drives, and compilers for
# the native pieces (the attach helper, node-pty).
packages=(runc conmon nftables iproute2 busybox-static procps util-linux attr tar gzip xz-utils bzip2 gcc g++ make python3 libc6-dev docker-compose)
# conntrack: a service balancer that drops a backend drops the UDP flows still going to it.
packages+=(conntrack)
# For the registry tests: the CNCF distribution server, htpasswd, openssl (the token server's
# certificate); zstd for zstd-compressed layers.
packages+=(docker-registry apache2-utils openssl zstd)
# The swarm store: etcd 3.4 members that berthd runs on managers (etcd-client's etcdctl is for
# looking inside a lab's store by hand).
packages+=(etcd-server etcd-client)
# The observability tests: Debian's OpenSSH server (remote hosts over ssh://, run by the test in its
# own namespace with its own keys and config) and Prometheus (scraping berthd's /metrics).
packages+=(openssh-server prometheus)
# The topology page's test drives Debian's chromium headless (through playwright-core, no
# browser download); chromium and chromium-common take about 350 MB.
packages+=(chromium)
# Real clients driven by the tests: the Docker SDK for Python (5.0.3 on Debian 12) and Ansible with
# its community.docker collection (3.4.7 in Debian 12's ansible 7.7). ansible is the heavy one
# (about 30 s and 260 MB installed, measured here); BERTH_SETUP_NO_ANSIBLE=1 leaves it out and its
# test then says it is skipped.
packages+=(python3-docker)
# CNI's reference plugins (bridge, host-local, portmap, firewall, tuning, macvlan … in /usr/lib/cni),
# which cni networks run.
packages+=(containernetworking-plugins)
# Podman 4.3 with its CNI backend: the real second consumer of berth-cni in the CNI test.
packages+=(podman)
if [ "${BERTH_SETUP_NO_ANSIBLE:-0}" != 1 ]; then packages+=(ansible); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's docker-registry would start a registry service on :5000; tests start their own, so
  # services stay down during the install (policy-rc.d) and the unit is disabled afterwards.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$status" = 0 ] || exit "$status"
  # Debian's docker-registry, etcd-server, openssh-server and prometheus would run services of their
  # own (a registry on :5000, an etcd on :2379, sshd on :22, Prometheus on :9090); the tests start
  # their own, so theirs stay disabled.
  for svc in docker-registry:docker-registry etcd-server:etcd openssh-server:ssh prometheus:prometheus; do
    pkg=${svc%%:*} unit=${svc##*:}
    [[ " ${missing[*]} " == *" $pkg "* ]] || continue
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    else
      update-rc.d "$unit" disable >/dev/null 2>&1 || true
      rm -f "/etc/systemd/system/multi-user.target.wants/$unit.service"
    fi
  done
fi

# Debian's docker CLI 20.10, for the compatibility tests next to the machine's newer docker CLI.
# Only the client is unpacked from the docker.io package into build/: no daemon is installed.
docker2010=build/docker-20.10/usr/bin/docker
if [ ! -x "$docker2010" ]; then
  echo "setup: unpacking the docker 20.10 CLI from Debian's docker.io"
  dl=$(mktemp -d)
  chmod 755 "$dl"
  (cd "$dl" && apt-get download docker.io >/dev/null 2>&1) || { apt-get update -qq && (cd "$dl" && apt-get download docker.io >/dev/null 2>&1); }
  mkdir -p build/docker-20.10
  dpkg-deb --fsys-tarfile "$dl"/docker.io_*.deb | tar -x -C build/docker-20.10 ./usr/bin/docker
  rm -rf "$dl"
fi

# npm packages: install when node_modules is missing or older than the manifest.
if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ] || { [ -f package-lock.json ] && [ package-lock.json -nt node_modules/.package-lock.json ]; }; then
  echo "setup: installing npm packages"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
fi

echo "setup: building"
npm run --silent build

if [ ! -s build/busybox.tar ] || [ scripts/mkbusybox.sh -nt build/busybox.tar ]; then
  echo "setup: making the busybox image from busybox-static"
  bash scripts/mkbusybox.sh build/busybox.tar
fi
