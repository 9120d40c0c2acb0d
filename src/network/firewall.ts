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

type MapName = 'pub_any' | 'pub_ip' | 'pub_lo' | 'pub6_any' | 'pub6_ip';

/** Which map a published port lives in: every address, one address, or loopback only (IPv4). */
function mapFor(p: PortMapping): MapName {
  if (p.family === 6) return p.hostIp ? 'pub6_ip' : 'pub6_any';
  if (!p.hostIp) return 'pub_any';
  return p.hostIp.startsWith('127.') ? 'pub_lo' : 'pub_ip';
}

function elementKey(p: PortMapping): string {
  return p.hostIp ? `${p.hostIp} . ${p.proto} . ${p.hostPort}` : `${p.proto} . ${p.hostPort}`;
}

function element(p: PortMapping): string {
  return `${elementKey(p)} : ${p.containerIp} . ${p.containerPort}`;
}

/** An nft batch that adds (or deletes) published ports: one map element each, whatever the total. */
export function portElements(ports: PortMapping[], op: 'add' | 'delete'): string {
  return ports.map((p) => `${op} element ${p.family === 6 ? 'ip6' : 'ip'} ${TABLE} ${mapFor(p)} { ${op === 'add' ? element(p) : elementKey(p)} }`).join('\n') + '\n';
}

function q(name: string): string {
  return `"${name.replace(/"/g, '')}"`;
}

/** The per-bridge rules of one address family: isolation (forward), masquerade and hairpin (postrouting). */
function bridgeRules(networks: BridgeRules[], family: 'ip' | 'ip6'): { forward: string[]; nat: string[]; hairpin: string[] } {
  const forward: string[] = [];
  const nat: string[] = [];
  const hairpin: string[] = [];
  for (const n of networks) {
    const br = q(n.bridge);
    const subnets = family === 'ip' ? n.subnets : n.subnets6 ?? [];
    if (n.internal) {
      // An internal network carries nothing in or out, only between its own containers.
      forward.push(`iifname ${br} oifname != ${br} drop`);
      forward.push(`oifname ${br} iifname != ${br} drop`);
    } else {
      // Isolation: a bridge never forwards to another berth bridge.
      forward.push(`iifname ${br} oifname @bridges oifname != ${br} drop`);
    }
    if (n.masquerade && !n.internal) {
      for (const s of subnets) nat.push(`${family} saddr ${s} oifname != ${br} masquerade`);
    }
    // A container reaching its own network's published port through the host comes back in the
    // same bridge: masquerade it, or the reply would bypass the DNAT.
    for (const s of subnets) hairpin.push(`oifname ${br} ${family} saddr ${s} ct status dnat masquerade`);
  }
  return { forward, nat, hairpin };
}

/** A published-port map with its elements: one per port, whatever the total. */
function mapBlock(name: MapName, type: string, ports: PortMapping[]): string[] {
  const list = ports.filter((p) => mapFor(p) === name).map(element);
  return [`  map ${name} {`, `    type ${type}`, ...(list.length ? [`    elements = { ${list.join(', ')} }`] : []), `  }`];
}

export function buildRuleset(networks: BridgeRules[], ports: PortMapping[] = []): string {
  const bridges = networks.map((n) => q(n.bridge));
  const { forward, nat, hairpin } = bridgeRules(networks, 'ip');
  const lines = [
    `table ip ${TABLE}`,
    `delete table ip ${TABLE}`,
    `table ip ${TABLE} {`,
    `  set bridges {`,
    `    type ifname`,
    ...(bridges.length ? [`    elements = { ${bridges.join(', ')} }`] : []),
    `  }`,
    ...mapBlock('pub_any', 'inet_proto . inet_service : ipv4_addr . inet_service', ports),
    ...mapBlock('pub_ip', 'ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service', ports),
    ...mapBlock('pub_lo', 'ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service', ports),
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
    ...ipv6Table(networks, ports),
    // ICC off is the bridge ports' own `isolated` flag (set at join), not a rule: these kernels
    // have no bridge meta expressions. A table from an earlier berth is removed.
    `table bridge ${TABLE}`,
    `delete table bridge ${TABLE}`,
  ];
  return lines.join('\n') + '\n';
}

/**
 * The same isolation, masquerade and published ports for dual-stack networks, in `ip6 berth`; the
 * table exists only while some network has IPv6.
 */
function ipv6Table(networks: BridgeRules[], ports: PortMapping[]): string[] {
  const dual = networks.filter((n) => n.subnets6?.length);
  // Creating then deleting removes a table left by an earlier state without failing when none is.
  const reset = [`table ip6 ${TABLE}`, `delete table ip6 ${TABLE}`];
  if (!dual.length) return reset;
  const { forward, nat, hairpin } = bridgeRules(networks, 'ip6');
  return [
    ...reset,
    `table ip6 ${TABLE} {`,
    `  set bridges {`,
    `    type ifname`,
    `    elements = { ${networks.map((n) => q(n.bridge)).join(', ')} }`,
    `  }`,
    ...mapBlock('pub6_any', 'inet_proto . inet_service : ipv6_addr . inet_service', ports),
    ...mapBlock('pub6_ip', 'ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service', ports),
    // IPv6 published ports: DNAT to the container's IPv6 address (there is no loopback variant:
    // the kernel never routes ::1 off the host).
    `  chain prerouting {`,
    `    type nat hook prerouting priority -100; policy accept;`,
    `    fib daddr type local dnat ip6 to meta l4proto . th dport map @pub6_any`,
    `    fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6_ip`,
    `  }`,
    `  chain output {`,
    `    type nat hook output priority -100; policy accept;`,
    `    ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @pub6_any`,
    `    ip6 daddr != ::1 fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6_ip`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    `    ct status dnat accept`,
    ...forward.map((r) => `    ${r}`),
    `  }`,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    ...hairpin.map((r) => `    ${r}`),
    ...nat.map((r) => `    ${r}`),
    `  }`,
    `}`,
  ];
}
