#!/usr/bin/env bash
# Builds berth's native pieces: berth-attach, the small C helper that reaches conmon's
# SOCK_SEQPACKET attach socket; berth-netns.node, the N-API addon that creates and releases network
# namespaces, opens the embedded resolver's sockets inside them and serves its UDP hot path, writes berthd's own nftables set elements and a service balancer's inside a sandbox; and
# berth-spawn, which starts berthd's short-lived commands without forking berthd; berth-cni, the CNI
# plugin executable that hands its call to berthd (bin/berth-cni links to it); and berth-runc,
# conmon's runtime, which runs runc without the other containers' mounts; and berth-nftset, the
# same balancer writes as a program, to make one by hand (Node's
# headers ship with Debian's nodejs).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
if [ ! -x build/berth-attach ] || [ native/berth-attach.c -nt build/berth-attach ]; then
  cc -O2 -Wall -Wextra -o build/berth-attach native/berth-attach.c
fi
if [ ! -f build/berth-netns.node ] || [ native/berth-netns.c -nt build/berth-netns.node ] || [ native/berth-dnsfast.c -nt build/berth-netns.node ] || [ native/berth-veth.c -nt build/berth-netns.node ] || [ native/berth-peers.c -nt build/berth-netns.node ] || [ native/berth-nftelems.c -nt build/berth-netns.node ] || [ native/berth-nftsetin.c -nt build/berth-netns.node ] || [ native/berth-nftset-core.h -nt build/berth-netns.node ] || [ native/berth-nfnl.h -nt build/berth-netns.node ] || [ native/berth-nl.h -nt build/berth-netns.node ] || [ native/berth-napi.h -nt build/berth-netns.node ]; then
  cc -O2 -Wall -Wextra -shared -fPIC -pthread -DNODE_GYP_MODULE_NAME=berth_netns -I/usr/include/node \
    -o build/berth-netns.node native/berth-netns.c native/berth-dnsfast.c native/berth-veth.c native/berth-peers.c native/berth-nftelems.c native/berth-nftsetin.c
fi
if [ ! -x build/berth-spawn ] || [ native/berth-spawn.c -nt build/berth-spawn ]; then
  cc -O2 -Wall -Wextra -o build/berth-spawn native/berth-spawn.c
fi
if [ ! -x build/berth-cni ] || [ native/berth-cni.c -nt build/berth-cni ]; then
  cc -O2 -Wall -Wextra -o build/berth-cni native/berth-cni.c
fi
if [ ! -x build/berth-runc ] || [ native/berth-runc.c -nt build/berth-runc ]; then
  cc -O2 -Wall -Wextra -o build/berth-runc native/berth-runc.c
fi
if [ ! -x build/berth-nftset ] || [ native/berth-nftset.c -nt build/berth-nftset ] || [ native/berth-nfnl.h -nt build/berth-nftset ] || [ native/berth-nftset-core.h -nt build/berth-nftset ]; then
  cc -O2 -Wall -Wextra -o build/berth-nftset native/berth-nftset.c
fi
