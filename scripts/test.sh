#!/usr/bin/env bash
# Runs every test in two streams side by side, each one file at a time: the multi-host files (each
# a lab of hosts: namespaces on an underlay, etcd members, a berthd per host), with the unit tests
# and the single-host chaos run to even the two out, and the other single-host files (each with one
# berthd in a test namespace of its own). Every file names its namespaces, roots and sockets after
# its own pid, so the streams share nothing; two labs never run at once, because two would be six
# etcds and six berthds on CI's two cores.
# BERTH_TEST_SERIAL=1 runs every file one after the other in one stream (slower, one log).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test: the integration tests need root" >&2
  exit 1
fi
# Everything the tests use, said at once, instead of a dozen files failing one by one.
bash scripts/check-test-deps.sh
files=()
while IFS= read -r f; do files+=("$f"); done < <(find dist/test -name '*.test.js' | sort)
if [ ${#files[@]} -eq 0 ]; then
  echo "test: no tests found under dist/test" >&2
  exit 1
fi
if [ "${BERTH_TEST_SERIAL:-}" = 1 ]; then
  exec node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
fi

labs=() others=()
for f in "${files[@]}"; do
  if [[ $f == dist/test/unit/* || $f == */chaos.test.js ]] || grep -q -E "from '\./lab\.js'|from '\.\./chaos/multihost\.js'" "$f"; then
    labs+=("$f")
  else
    others+=("$f")
  fi
done

# A stream's lines carry its name, so the two interleaved in one log can still be read apart. Each
# stream is kept in a file too: the one that ends first has its failures buried under the other's
# output, and CI shows only a log's tail, so the failures of both are said again at the end.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
stream() {
  local name=$1; shift
  node --test --test-concurrency=1 --test-reporter=spec "$@" 2>&1 | sed -u "s/^/[$name] /" | tee "$logs/$name"
  return "${PIPESTATUS[0]}"
}
failures() {
  local name=$1
  # The spec reporter ends a failed run with a section of its own, headed "failing tests:".
  if grep -q '✖ failing tests:' "$logs/$name"; then
    echo "test: [$name] failed:"
    sed -n '/✖ failing tests:/,$p' "$logs/$name" | head -n 200
  else
    echo "test: [$name] failed; its lines marked ✖:"
    grep '✖' "$logs/$name" | head -n 50
  fi
}
start=$SECONDS
stream hosts "${labs[@]}" & hosts_pid=$!
stream host "${others[@]}" & host_pid=$!
hosts_rc=0 host_rc=0
wait "$hosts_pid" || hosts_rc=$?
wait "$host_pid" || host_rc=$?
[ "$hosts_rc" = 0 ] || failures hosts
[ "$host_rc" = 0 ] || failures host
echo "test: [hosts] ${#labs[@]} files (exit $hosts_rc) and [host] ${#others[@]} files (exit $host_rc) in $((SECONDS - start)) s"
[ "$hosts_rc" = 0 ] && [ "$host_rc" = 0 ]
