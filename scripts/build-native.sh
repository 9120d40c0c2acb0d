#!/usr/bin/env bash
# Builds berth-attach, the small C helper that reaches conmon's SOCK_SEQPACKET attach socket.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
if [ ! -x build/berth-attach ] || [ native/berth-attach.c -nt build/berth-attach ]; then
  cc -O2 -Wall -Wextra -o build/berth-attach native/berth-attach.c
fi
