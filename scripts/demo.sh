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
# A step that is meant to fail: show the error and go on.
expect_fail() { say "berth $*   # expected to fail"; if berth "$@"; then echo "demo: that should have failed" >&2; exit 1; fi; }

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

echo; echo "== The default bridge: addresses work, names do not =="
made+=(demo-a1 demo-a2 demo-n1 demo-n2 demo-both demo-web demo-s1 demo-s2)
step run -dit --name demo-a1 busybox
step run -dit --name demo-a2 busybox
step network inspect bridge -f '{{range .Containers}}{{.Name}} {{.IPv4Address}}{{"\n"}}{{end}}'
a2_ip=$(berth inspect -f '{{.NetworkSettings.IPAddress}}' demo-a2)
step exec demo-a1 ping -c 2 "$a2_ip"
expect_fail exec demo-a1 ping -c 1 -W 1 demo-a2

echo; echo "== A user-defined bridge: berth's DNS answers container names; networks are isolated =="
berth network rm demo-net >/dev/null 2>&1 || true   # left by an interrupted run
step network create demo-net
step run -dit --name demo-n1 --network demo-net busybox
step run -dit --name demo-n2 --network demo-net busybox
step exec demo-n1 ping -c 2 demo-n2
step exec demo-n1 cat /etc/resolv.conf
expect_fail exec demo-n1 ping -c 1 -W 1 demo-a1
expect_fail exec demo-n1 ping -c 1 -W 1 "$a2_ip"
step run -dit --name demo-both busybox
step network connect demo-net demo-both
step exec demo-both sh -c "ping -c 1 demo-n1 && ping -c 1 $a2_ip"
step run -d --name demo-s1 --network demo-net --network-alias search busybox sleep 300
step run -d --name demo-s2 --network demo-net --network-alias search busybox sleep 300
step run --rm --network demo-net busybox nslookup search

echo; echo "== Publishing a port: kernel NAT, no proxy process =="
port=${BERTH_DEMO_PORT:-18080}
step run -d --name demo-web -p "127.0.0.1:$port:80" busybox sh -c 'mkdir -p /www && echo "<h1>hello from $(hostname), through berth</h1>" > /www/index.html && exec httpd -f -p 80 -h /www'
step port demo-web
say "fetch http://127.0.0.1:$port/"
for _ in $(seq 1 50); do
  page=$(node -e "fetch('http://127.0.0.1:$port/').then(r => r.text()).then(t => process.stdout.write(t), () => process.exit(1))" 2>/dev/null) && break
  sleep 0.1
done
echo "${page:?the published port did not answer}"
step ps
step rm -f "${made[@]}"
made=()
step network rm demo-net

echo; echo "== macvlan: containers with their own MAC on a parent link (here an internal one berth makes) =="
made+=(demo-m1)
berth network rm demo-mac >/dev/null 2>&1 || true   # left by an interrupted run
step network create -d macvlan --internal --subnet 10.99.0.0/24 demo-mac
step run -d --name demo-m1 --network demo-mac busybox sleep 300
step run --rm --network demo-mac busybox sh -c 'ip -o link show eth0; ping -c 1 -W 2 demo-m1'
step rm -f demo-m1
made=()
step network rm demo-mac

# Several hosts, each in a namespace of its own (BERTH_DEMO_CLUSTER=0 leaves this part out).
if [ "${BERTH_DEMO_CLUSTER:-1}" = 1 ]; then bash scripts/demo-cluster.sh; fi
echo; echo "demo: done"
