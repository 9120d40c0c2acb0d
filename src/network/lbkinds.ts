/**
 * The balancer tables berth keeps with the same slot layout (lbtable.ts): a container sandbox's
 * service VIPs and the routing mesh's published ports in berthd's namespace.
 * They differ in what a key and a backend are, in the DNAT a slot does, and in the hooks that lead
 * a connection to the table.
 */

export interface TableKind {
  /** The table's name (family ip). */
  readonly table: string;
  /** The verdict map from a key to the key's chain, read by the kind's hooks. */
  readonly dispatchMap: string;
  /** nft's type of a key, and of a backend (a slot map's data). */
  readonly keyType: string;
  readonly dataType: string;
  /** The start of a bucket chain's name (`_b` and the bucket's number follow). */
  readonly chainPrefix: string;
  /** The match of a key in its bucket chain's rule, as nft text; and the key back from that text (undefined: not a key's match). */
  match(key: string): string;
  keyOfMatch(text: string): string | undefined;
  /** Whether a key without backends is rejected at once (listed in set `empty`) or simply absent. */
  readonly rejectsEmpty: boolean;
  /** The rule of slot chain `to<i>`: DNAT to the backend that map `slot<i>` has for the key. */
  slotRule(slotMap: string): string;
  /** The table's hooked chains (and any set they read) as lines of its text; `empty`: keys without backends. */
  hooks(empty: string[]): string[];
  /** The address whose UDP flows go when this backend of this key leaves; undefined when its flows are not UDP. */
  udpTarget(key: string, backend: string): string | undefined;
  /** The address a backend's connections go to, for counts by backend. */
  address(backend: string): string;
}

/**
 * A container sandbox's service VIPs: the nat `output` hook sends a new connection to a VIP
 * through map `vips` to the VIP's bucket chain; every port of a VIP is balanced (Docker's VIPs balance
 * every port), so any backend may hold UDP flows.
 */
export const VIP_KIND: TableKind = {
  table: 'berth_svc',
  dispatchMap: 'vips',
  keyType: 'ipv4_addr',
  dataType: 'ipv4_addr',
  chainPrefix: 'svc',
  match: (vip) => `ip daddr ${vip}`,
  keyOfMatch: (text) => /^ip daddr (\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1],
  rejectsEmpty: true,
  slotRule: (map) => `dnat to ip daddr map @${map}`,
  // A VIP with no running task is rejected in a filter chain (a nat chain cannot reject) instead of leaving the client waiting.
  hooks: (empty) => [
    '  set empty {',
    '    type ipv4_addr',
    ...(empty.length ? [`    elements = { ${empty.join(', ')} }`] : []),
    '  }',
    '  chain out {',
    '    type nat hook output priority -100; policy accept;',
    '    ip daddr vmap @vips',
    '  }',
    '  chain reject_empty {',
    '    type filter hook output priority 0; policy accept;',
    '    ip daddr @empty meta l4proto tcp reject with tcp reset',
    '    ip daddr @empty reject',
    '  }',
  ],
  udpTarget: (_vip, backend) => backend,
  address: (backend) => backend,
};

/** The bit of a connection's conntrack mark that says the routing mesh chose its backend (and so SNATs it). */
export const MESH_CT_MARK = '0x00100000';

/**
 * The routing mesh's published ports, balanced in berthd's namespace itself (kube-proxy's way): a
 * key is `proto . port`, a backend a task's ingress address and the port it listens on. A new
 * connection to any local address on a published port goes through map `ports` to the port's
 * bucket chain, before berth's own port maps (priority -110: a published service port is the
 * cluster's, not a container's). The slot that takes it marks the connection, and every marked
 * connection is SNATed to this host's ingress address (`hostIp`, on the ingress bridge, its own
 * in the cluster): the task's reply comes back here, whichever node the task runs on. The mark
 * keeps the SNAT to the mesh's connections: a `mode=host` port's client keeps its address. A port
 * without a running task has no element: the kernel refuses it (RST, ICMP unreachable).
 */
export function meshKind(hostIp: string): TableKind {
  const dispatch = '    fib daddr type local meta l4proto . th dport vmap @ports';
  return {
    table: 'berth_mesh',
    dispatchMap: 'ports',
    keyType: 'inet_proto . inet_service',
    dataType: 'ipv4_addr . inet_service',
    chainPrefix: 'port',
    rejectsEmpty: false,
    // As nft lists it: `meta l4proto tcp` and the transport header's port.
    match: (key) => { const [proto, port] = key.split(' . '); return `${proto} dport ${port}`; },
    keyOfMatch: (text) => { const m = /^(tcp|udp) dport (\d+)$/.exec(text); return m ? `${m[1]} . ${m[2]}` : undefined; },
    slotRule: (map) => `ct mark set ct mark | ${MESH_CT_MARK} dnat ip to meta l4proto . th dport map @${map}`,
    udpTarget: (port, backend) => (port.startsWith('udp ') ? backend.split(' . ')[0] : undefined),
    address: (backend) => backend.split(' . ')[0]!,
    hooks: () => [
      '  chain prerouting {',
      '    type nat hook prerouting priority -110; policy accept;',
      dispatch,
      '  }',
      '  chain output {',
      '    type nat hook output priority -110; policy accept;',
      dispatch,
      '  }',
      // Before berth's own source NAT (priority 100): the first binding of a connection wins.
      '  chain postrouting {',
      '    type nat hook postrouting priority 90; policy accept;',
      `    ct mark & ${MESH_CT_MARK} == ${MESH_CT_MARK} ct status dnat snat ip to ${hostIp}`,
      '  }',
    ],
  };
}

/** The table where an older berth balanced a node's host-mode ports (now each task's container publishes its own): removed where found. */
export const LEGACY_HOST_PORTS_TABLE = 'berth_hostports';

const PROTOCOLS: Record<string, number> = { tcp: 6, udp: 17 };

/**
 * A key or backend as berth-nftset takes it: the bytes the kernel stores, in hex. A single IPv4
 * address is its 4 bytes; in a concatenation (`tcp . 8080`, `10.0.0.5 . 80`) each part fills a
 * 32-bit register, in network order from its first byte (as `nft --debug=netlink` shows).
 */
export function elementHex(text: string): string {
  const parts = text.split(' . ');
  return parts.map((p) => {
    if (/^\d+\.\d+\.\d+\.\d+$/.test(p)) return p.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join('');
    const proto = PROTOCOLS[p];
    if (proto !== undefined) return proto.toString(16).padStart(2, '0') + '000000';
    if (/^\d+$/.test(p) && Number(p) < 65536) return Number(p).toString(16).padStart(4, '0') + '0000';
    throw new Error(`no element encoding for ${JSON.stringify(p)} in ${JSON.stringify(text)}`);
  }).join('');
}
