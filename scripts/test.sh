#!/usr/bin/env bash
# Runs every test: unit tests in parallel, then integration tests one file at a time (each starts
# its own berthd inside its own test network namespace).
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
exec node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
