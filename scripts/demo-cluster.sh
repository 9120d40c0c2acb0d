#!/usr/bin/env bash
# The demo's multi-host part: three berth hosts on this machine (the lab: network namespaces on a
# private underlay bridge, each with its own berthd), made into a swarm with berth's CLI, one of
# them cut off and back, then taken apart. The lab goes down at the end, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH_LAB_STATE=${BERTH_LAB_STATE:-/run/berth-demo-lab.json}
export BERTH_LAB_LEASE_TTL=3
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

echo; echo "== Many hosts: a swarm of three berth hosts on etcd =="
say "npm run lab -- up 3"
node dist/test/lab/main.js up 3
trap 'say "npm run lab -- down"; node dist/test/lab/main.js down' EXIT
mapfile -t hosts < <(node -e "for (const h of require(process.env.BERTH_LAB_STATE).hosts) console.log(h.dockerHost)")
underlay=$(node -e "console.log(require(process.env.BERTH_LAB_STATE).underlay)")
on() { local h=$1; shift; say "lab$h \$ berth $*"; node dist/src/cli/main.js -H "${hosts[$h]}" "$@"; }
quiet() { local h=$1; shift; node dist/src/cli/main.js -H "${hosts[$h]}" "$@"; }
wait_for() { # host, text that `node ls` must show
  for _ in $(seq 1 60); do quiet "$1" node ls --format '{{.Hostname}} {{.Status}}' | grep -qx "$2" && return 0; sleep 0.5; done
  echo "demo: node ls never showed '$2'" >&2; return 1
}

on 0 swarm init --advertise-addr 10.99.0.1
mt=$(quiet 0 swarm join-token -q manager)
wt=$(quiet 0 swarm join-token -q worker)
on 1 swarm join --token "$mt" --advertise-addr 10.99.0.2 10.99.0.1:2377
on 2 swarm join --token "$wt" 10.99.0.1:2377
on 1 node ls
on 0 node update --label-add zone=east lab2
on 1 node inspect -f '{{.Spec.Labels}} {{.Status.Addr}}' lab2
say "lab2 \$ berth node ls   # expected to fail: a worker does not answer for the cluster"
if quiet 2 node ls; then echo "demo: that should have failed" >&2; exit 1; fi

say "# cut lab2 off the underlay: it shows Down within the lease TTL (3 s here)"
ip -n "$underlay" link set btvh2 down
wait_for 0 'lab2 Down'
on 0 node ls
ip -n "$underlay" link set btvh2 up
wait_for 0 'lab2 Ready'
on 0 node ls

on 0 node demote lab1
on 1 swarm leave
on 2 swarm leave
on 0 swarm leave --force
