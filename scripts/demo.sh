#!/usr/bin/env bash
# Walks through berth with real containers. Starts berthd if it is not running (and stops it again
# at the end), so it leaves the machine as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."

SOCK=${BERTH_DEMO_SOCKET:-/run/berth/berth.sock}
ROOT=${BERTH_DEMO_ROOT:-/var/lib/berth}
berth() { node dist/src/cli/main.js -H "unix://$SOCK" "$@"; }
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step() { say "berth $*"; berth "$@"; }

started=""
if ! berth version >/dev/null 2>&1; then
  echo "demo: starting berthd (root $ROOT, socket $SOCK)"
  node dist/src/daemon/berthd.js --root "$ROOT" -H "unix://$SOCK" >/tmp/berthd-demo.log 2>&1 &
  started=$!
  for _ in $(seq 1 100); do berth version >/dev/null 2>&1 && break; sleep 0.1; done
fi
made=()
cleanup() {
  if [ ${#made[@]} -gt 0 ]; then berth rm -f "${made[@]}" >/dev/null 2>&1 || true; fi
  if [ -n "$started" ]; then
    kill "$started" 2>/dev/null || true
    wait "$started" 2>/dev/null || true
    node dist/src/daemon/berthd.js --root "$ROOT" --cleanup || true
  fi
}
trap cleanup EXIT

step version
step images

echo; echo "== Containers: run, ps, exec, logs =="
made+=(demo-b1 demo-talker)
step run -dit --name demo-b1 busybox
step ps
step exec demo-b1 sh -c 'echo "hello from $(hostname)"; uname -r'
step run -d --name demo-talker busybox sh -c 'for i in 1 2 3; do echo "line $i"; done'
step wait demo-talker
step logs demo-talker
step run --rm busybox echo "a one-off container, removed when it exits"
step top demo-b1
step stats --no-stream demo-b1

echo; echo "== Network modes of the foundation: none and host =="
step run --rm --network none busybox ip -o link
step run --rm --network host busybox sh -c 'ip -o link | wc -l'

step stop -t 1 demo-b1
step ps -a
step rm -f demo-b1 demo-talker
made=()

echo; echo "== macvlan: containers with their own MAC on a parent link (here an internal one berth makes) =="
made+=(demo-m1)
berth network rm demo-mac >/dev/null 2>&1 || true   # left by an interrupted run
step network create -d macvlan --internal --subnet 10.99.0.0/24 demo-mac
step run -d --name demo-m1 --network demo-mac busybox sleep 300
step run --rm --network demo-mac busybox sh -c 'ip -o link show eth0; ping -c 1 -W 2 demo-m1'
step rm -f demo-m1
made=()
step network rm demo-mac
echo; echo "demo: done"
