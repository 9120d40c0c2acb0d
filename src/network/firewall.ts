import type { PortMapping } from './ports.js';

/**
 * berth's nftables rules for bridge networks, built as text from plain data so they can be checked
 * without a kernel. Everything lives in berth's own table (`ip berth`), replaced atomically on
 * every change; no other table is read or written. Rules grow with the number of networks, never
 * with the number of containers.
 */

export interface BridgeRules {
  bridge: string;
  subnets: string[];
  /** IPv6 subnets of a dual-stack network. */
  subnets6?: string[];
  internal: boolean;
  masquerade: boolean;
}

export const TABLE = 'berth';

type MapName = 'pub_any' | 'pub_ip' | 'pub_lo';

/** Which map a published port lives in: every address, one address, or loopback only. */
function mapFor(p: PortMapping): MapName {
  if (!p.hostIp) return 'pub_any';
  return p.hostIp.startsWith('127.') ? 'pub_lo' : 'pub_ip';
}

function elementKey(p: PortMapping): string {
  return mapFor(p) === 'pub_any' ? `${p.proto} . ${p.hostPort}` : `${p.hostIp} . ${p.proto} . ${p.hostPort}`;
}

function element(p: PortMapping): string {
  return `${elementKey(p)} : ${p.containerIp} . ${p.containerPort}`;
}

/** An nft batch that adds (or deletes) published ports: one map element each, whatever the total. */
export function portElements(ports: PortMapping[], op: 'add' | 'delete'): string {
  return ports.map((p) => `${op} element ip ${TABLE} ${mapFor(p)} { ${op === 'add' ? element(p) : elementKey(p)} }`).join('\n') + '\n';
}

function q(name: string): string {
  return `"${name.replace(/"/g, '')}"`;
}

export function buildRuleset(networks: BridgeRules[], ports: PortMapping[] = []): string {
  const bridges = networks.map((n) => q(n.bridge));
  const forward: string[] = [];
  const nat: string[] = [];
  const hairpin: string[] = [];
  for (const n of networks) {
    const br = q(n.bridge);
    if (n.internal) {
      // An internal network carries nothing in or out, only between its own containers.
      forward.push(`iifname ${br} oifname != ${br} drop`);
      forward.push(`oifname ${br} iifname != ${br} drop`);
    } else {
      // Isolation: a bridge never forwards to another berth bridge.
      forward.push(`iifname ${br} oifname @bridges oifname != ${br} drop`);
    }
    if (n.masquerade && !n.internal) {
      for (const s of n.subnets) nat.push(`ip saddr ${s} oifname != ${br} masquerade`);
    }
    // A container reaching its own network's published port through the host comes back in the
    // same bridge: masquerade it, or the reply would bypass the DNAT.
    for (const s of n.subnets) hairpin.push(`oifname ${br} ip saddr ${s} ct status dnat masquerade`);
  }
  const elements = (name: MapName) => {
    const list = ports.filter((p) => mapFor(p) === name).map(element);
    return list.length ? [`    elements = { ${list.join(', ')} }`] : [];
  };
  const lines = [
    `table ip ${TABLE}`,
    `delete table ip ${TABLE}`,
    `table ip ${TABLE} {`,
    `  set bridges {`,
    `    type ifname`,
    ...(bridges.length ? [`    elements = { ${bridges.join(', ')} }`] : []),
    `  }`,
    `  map pub_any {`,
    `    type inet_proto . inet_service : ipv4_addr . inet_service`,
    ...elements('pub_any'),
    `  }`,
    `  map pub_ip {`,
    `    type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service`,
    ...elements('pub_ip'),
    `  }`,
    `  map pub_lo {`,
    `    type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service`,
    ...elements('pub_lo'),
    `  }`,
    `  chain prerouting {`,
    `    type nat hook prerouting priority -100; policy accept;`,
    `    fib daddr type local dnat ip to meta l4proto . th dport map @pub_any`,
    `    fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub_ip`,
    `  }`,
    `  chain output {`,
    `    type nat hook output priority -100; policy accept;`,
    // Ports bound to 127.0.0.1 are only in this chain: the host reaches them, its neighbours cannot.
    `    fib daddr type local dnat ip to meta l4proto . th dport map @pub_any`,
    `    fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub_ip`,
    `    ip daddr 127.0.0.0/8 dnat ip to ip daddr . meta l4proto . th dport map @pub_lo`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    // Published ports are reachable from everywhere, other berth networks included, as in Docker.
    `    ct status dnat accept`,
    ...forward.map((r) => `    ${r}`),
    `  }`,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    // The host's own 127.0.0.1 connections to published ports leave through a bridge.
    `    oifname @bridges ip saddr 127.0.0.0/8 masquerade`,
    ...hairpin.map((r) => `    ${r}`),
    ...nat.map((r) => `    ${r}`),
    `  }`,
    `}`,
    ...ipv6Table(networks),
    // ICC off is the bridge ports' own `isolated` flag (set at join), not a rule: these kernels
    // have no bridge meta expressions. A table from an earlier berth is removed.
    `table bridge ${TABLE}`,
    `delete table bridge ${TABLE}`,
  ];
  return lines.join('\n') + '\n';
}

/**
 * The same isolation and masquerade for dual-stack networks, in `ip6 berth`; the table exists only
 * while some network has IPv6. Published ports stay IPv4 for now.
 */
function ipv6Table(networks: BridgeRules[]): string[] {
  const dual = networks.filter((n) => n.subnets6?.length);
  // Creating then deleting removes a table left by an earlier state without failing when none is.
  const reset = [`table ip6 ${TABLE}`, `delete table ip6 ${TABLE}`];
  if (!dual.length) return reset;
  const forward: string[] = [];
  const nat: string[] = [];
  for (const n of networks) {
    const br = q(n.bridge);
    if (n.internal) {
      forward.push(`iifname ${br} oifname != ${br} drop`, `oifname ${br} iifname != ${br} drop`);
    } else {
      forward.push(`iifname ${br} oifname @bridges oifname != ${br} drop`);
    }
    if (n.masquerade && !n.internal) for (const s of n.subnets6 ?? []) nat.push(`ip6 saddr ${s} oifname != ${br} masquerade`);
  }
  return [
    ...reset,
    `table ip6 ${TABLE} {`,
    `  set bridges {`,
    `    type ifname`,
    `    elements = { ${networks.map((n) => q(n.bridge)).join(', ')} }`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    ...forward.map((r) => `    ${r}`),
    `  }`,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    ...nat.map((r) => `    ${r}`),
    `  }`,
    `}`,
  ];
}
