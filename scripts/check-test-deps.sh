#!/usr/bin/env bash
# Says what the test suite needs and this machine lacks, all at once, before any test runs.
# scripts/setup.sh installs all of it on Debian 12; the tests use nothing else of the machine's.
cd "$(dirname "$0")/.."
missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (Debian package $2)"); }
need_cmd runc runc
need_cmd conmon conmon
need_cmd nft nftables
need_cmd conntrack conntrack
need_cmd ip iproute2
need_cmd nsenter util-linux
need_cmd setpriv util-linux
need_cmd ss iproute2
need_cmd tc iproute2
need_cmd ps procps
need_cmd busybox busybox-static
need_cmd tar tar
need_cmd gzip gzip
need_cmd xz xz-utils
need_cmd zstd zstd
need_cmd docker-compose docker-compose
need_cmd docker-registry docker-registry
need_cmd htpasswd apache2-utils
need_cmd openssl openssl
need_cmd etcd etcd-server
need_cmd etcdctl etcd-client
need_cmd script bsdutils
[ -x /usr/sbin/sshd ] || missing+=("/usr/sbin/sshd (Debian package openssh-server)")
need_cmd ssh-keygen openssh-client
need_cmd prometheus prometheus
[ -x /usr/bin/chromium ] || missing+=("/usr/bin/chromium (Debian package chromium)")
[ -x /usr/lib/cni/bridge ] || missing+=("/usr/lib/cni/bridge (Debian package containernetworking-plugins)")
need_cmd podman podman
docker_cli=${BERTH_TEST_DOCKER:-build/docker-20.10/usr/bin/docker}
[ -x "$docker_cli" ] || missing+=("the docker CLI at $docker_cli (scripts/setup.sh unpacks Debian's docker.io client there; BERTH_TEST_DOCKER names another)")
[ -s build/busybox.tar ] || missing+=("build/busybox.tar (scripts/setup.sh makes it from busybox-static)")
for f in build/berth-attach build/berth-spawn build/berth-runc build/berth-netns.node; do
  [ -e "$f" ] || missing+=("$f (npm run build)")
done
[ -d dist/test ] || missing+=("dist/test (npm run build)")
[ -d node_modules/dns-packet ] || missing+=("node_modules (npm ci)")
[ -d node_modules/playwright-core ] || missing+=("node_modules/playwright-core (npm ci)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: this machine lacks what the tests use; run scripts/setup.sh (as root, Debian 12) or install:" >&2
  for m in "${missing[@]}"; do echo "  - $m" >&2; done
  exit 1
fi
