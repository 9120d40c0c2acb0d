import { parseIPv6 } from './ipam6.js';
import type { PortMapping } from './ports.js';

/**
 * berth's nftables rules for bridge networks, built as text from plain data so they can be checked
 * without a kernel. Everything lives in berth's own tables (`ip berth`, and `ip6 berth` while a
 * network has IPv6): built whole when berthd starts, then changed by element and chain updates in
 * one transaction each; no other table is read or written. Rules grow with the number of networks,
 * never with the number of containers.
 */

export interface BridgeRules {
  /** The network's id: its chains are named after it, since bridge names may be any string. */
  id: string;
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

type Family = 'ip' | 'ip6';

function subnetsOf(n: BridgeRules, family: Family): string[] {
  return family === 'ip' ? n.subnets : n.subnets6 ?? [];
}

/**
 * Each network has chains of its own, entered through verdict maps keyed by its bridge (forward)
 * and its subnets (postrouting). Adding or removing a network is then a few element and chain
 * updates in one transaction, never a rebuild of the table: replacing a table re-registers its
 * hooks, which costs the kernel ~10 ms on these machines, and rewrites every published port.
 */
function chainNames(n: BridgeRules) {
  const base = `n${n.id.slice(0, 12)}`;
  return { in: `${base}_in`, out: `${base}_out`, post: `${base}_post` };
}

/** The rules of one network's chains, by chain name. */
function networkChains(n: BridgeRules): Array<{ name: string; rules: string[] }> {
  const br = q(n.bridge);
  const names = chainNames(n);
  // An internal network carries nothing in or out, only between its own containers; any other
  // network never forwards to another berth bridge (isolation).
  // Counted (a counter costs only the dropped packets) and named, for /metrics (kernel/counters.ts).
  const chains = [{ name: names.in, rules: [n.internal ? `oifname != ${br} counter drop comment "internal"` : `oifname @bridges oifname != ${br} counter drop comment "isolation"`] }];
  if (n.internal) chains.push({ name: names.out, rules: [`iifname != ${br} counter drop comment "internal"`] });
  // Entered for the network's own source addresses. A container reaching its own network's
  // published port through the host comes back in the same bridge: masquerade it, or the reply
  // would bypass the DNAT.
  const post = [`oifname ${br} ct status dnat masquerade`];
  if (n.masquerade && !n.internal) post.push(`oifname != ${br} masquerade`);
  chains.push({ name: names.post, rules: post });
  return chains;
}

/** The maps through which the base chains enter a network's own chains. */
type VerdictMap = 'fwd_in' | 'fwd_out' | 'post_src';
const VERDICT_MAPS: VerdictMap[] = ['fwd_in', 'fwd_out', 'post_src'];

/** The verdict-map elements that lead into a network's chains, as [key, verdict]. */
function networkElements(n: BridgeRules, family: Family): Record<VerdictMap, Array<[string, string]>> {
  const names = chainNames(n);
  return {
    fwd_in: [[q(n.bridge), `jump ${names.in}`]],
    fwd_out: n.internal ? [[q(n.bridge), `jump ${names.out}`]] : [],
    post_src: subnetsOf(n, family).map((s) => [s, `jump ${names.post}`]),
  };
}

function mapped(entries: Array<[string, string]>): string[] {
  return entries.map(([key, verdict]) => `${key} : ${verdict}`);
}

/**
 * One element per key, the first network's: two records that claim one subnet (left by a crash
 * of an older berth between two creates) would otherwise make the whole table fail to load, and
 * with it berthd's start and its --cleanup.
 */
function firstPerKey(entries: Array<[string, string]>): Array<[string, string]> {
  const seen = new Set<string>();
  return entries.filter(([key]) => !seen.has(key) && !!seen.add(key));
}

function elementsLine(list: string[]): string[] {
  return list.length ? [`    elements = { ${list.join(', ')} }`] : [];
}

/**
 * A published-port map with its elements: one per port, whatever the total. Every element has a
 * counter: the DNAT rules look the maps up only in nat chains, which see the first packet of a
 * connection alone, so it counts connections (for /metrics) and costs nothing per packet after.
 */
function mapBlock(name: MapName, type: string, ports: PortMapping[]): string[] {
  return [`  map ${name} {`, `    type ${type}`, `    counter`, ...elementsLine(ports.filter((p) => mapFor(p) === name).map(element)), `  }`];
}

/** One family's whole table, replacing whatever table of that name exists. */
function table(family: Family, networks: BridgeRules[], ports: PortMapping[]): string[] {
  const v4 = family === 'ip';
  const addr = v4 ? 'ipv4_addr' : 'ipv6_addr';
  // Every network is in both tables: a bridge without IPv6 addresses must not forward IPv6 either.
  const els = networks.map((n) => networkElements(n, family));
  const dnat = v4 ? 'ip' : 'ip6';
  return [
    // Creating then deleting removes a table left by an earlier state without failing when none is.
    `table ${family} ${TABLE}`,
    `delete table ${family} ${TABLE}`,
    `table ${family} ${TABLE} {`,
    `  set bridges {`,
    `    type ifname`,
    ...elementsLine([...new Set(networks.map((n) => q(n.bridge)))]),
    `  }`,
    ...networks.flatMap((n) => networkChains(n).flatMap((c) => [`  chain ${c.name} {`, ...c.rules.map((r) => `    ${r}`), `  }`])),
    `  map fwd_in {`, `    type ifname : verdict`, ...elementsLine(mapped(firstPerKey(els.flatMap((e) => e.fwd_in)))), `  }`,
    `  map fwd_out {`, `    type ifname : verdict`, ...elementsLine(mapped(firstPerKey(els.flatMap((e) => e.fwd_out)))), `  }`,
    `  map post_src {`, `    type ${addr} : verdict`, `    flags interval`, ...elementsLine(mapped(firstPerKey(els.flatMap((e) => e.post_src)))), `  }`,
    ...(v4
      ? [
        ...mapBlock('pub_any', 'inet_proto . inet_service : ipv4_addr . inet_service', ports),
        ...mapBlock('pub_ip', 'ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service', ports),
        ...mapBlock('pub_lo', 'ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service', ports),
      ]
      : [
        ...mapBlock('pub6_any', 'inet_proto . inet_service : ipv6_addr . inet_service', ports),
        ...mapBlock('pub6_ip', 'ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service', ports),
      ]),
    `  chain prerouting {`,
    `    type nat hook prerouting priority -100; policy accept;`,
    `    fib daddr type local dnat ${dnat} to meta l4proto . th dport map @${v4 ? 'pub_any' : 'pub6_any'}`,
    `    fib daddr type local dnat ${dnat} to ${dnat} daddr . meta l4proto . th dport map @${v4 ? 'pub_ip' : 'pub6_ip'}`,
    `  }`,
    `  chain output {`,
    `    type nat hook output priority -100; policy accept;`,
    ...(v4
      ? [
        `    fib daddr type local dnat ip to meta l4proto . th dport map @pub_any`,
        `    fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub_ip`,
        // Ports bound to 127.0.0.1 are only in this chain: the host reaches them, its neighbours cannot.
        `    ip daddr 127.0.0.0/8 dnat ip to ip daddr . meta l4proto . th dport map @pub_lo`,
      ]
      : [
        // There is no IPv6 loopback variant: the kernel never routes ::1 off the host.
        `    ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @pub6_any`,
        `    ip6 daddr != ::1 fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6_ip`,
      ]),
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    // Published ports are reachable from everywhere, other berth networks included, as in Docker.
    `    ct status dnat accept`,
    // Nothing else may enter a container network from outside berth's bridges, whoever routes the
    // subnet at this host: only replies to what containers opened (Docker's DOCKER chain, whose
    // forward policy drops the rest). Bridged traffic within a network (br_netfilter shows it with
    // the bridge as both interfaces) and container-to-outside never match; the counter lets an
    // operator, and the tests, see what was dropped here.
    `    oifname @bridges iifname != @bridges ct state != { established, related } counter drop comment "unsolicited"`,
    `    iifname vmap @fwd_in`,
    `    oifname vmap @fwd_out`,
    `  }`,
    ...(v4
      ? [
        // route_localnet on berth's bridges (for 127.0.0.1-published ports) would let a container
        // reach the host's loopback services by sending to 127.0.0.0/8 via the gateway's MAC
        // (CVE-2020-8558; kube-proxy's fix): drop martian loopback arriving on a bridge unless it
        // belongs to a DNATed connection (replies to the host's own 127.0.0.1:PORT connections).
        `  chain input {`,
        `    type filter hook input priority filter; policy accept;`,
        `    iifname @bridges ip daddr 127.0.0.0/8 ct status & dnat != dnat counter drop comment "loopback"`,
        `  }`,
      ]
      : []),
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    // The host's own 127.0.0.1 connections to published ports leave through a bridge.
    ...(v4 ? [`    oifname @bridges ip saddr 127.0.0.0/8 masquerade`] : []),
    `    ${dnat} saddr vmap @post_src`,
    `  }`,
    `}`,
  ];
}

/** The whole ruleset from the state: applied at start, when anything may have changed meanwhile. */
export function buildRuleset(networks: BridgeRules[], ports: PortMapping[] = []): string {
  const dual = networks.some((n) => n.subnets6?.length);
  const lines = [
    ...table('ip', networks, ports),
    // The IPv6 table exists only while some network has IPv6: its nat hooks would otherwise turn
    // on connection tracking for all of the host's IPv6 traffic for nothing.
    ...(dual ? table('ip6', networks, ports) : [`table ip6 ${TABLE}`, `delete table ip6 ${TABLE}`]),
    // ICC off is the bridge ports' own `isolated` flag (set at join), not a rule: these kernels
    // have no bridge meta expressions. The `bridge berth` table (source guard, below) is not
    // rebuilt here: its elements are per endpoint, and no endpoint changes when this runs.
  ];
  return lines.join('\n') + '\n';
}

function addNetworkFamily(family: Family, n: BridgeRules): string[] {
  const t = `${family} ${TABLE}`;
  const e = networkElements(n, family);
  return [
    `add element ${t} bridges { ${q(n.bridge)} }`,
    ...networkChains(n).flatMap((c) => [`add chain ${t} ${c.name}`, ...c.rules.map((r) => `add rule ${t} ${c.name} ${r}`)]),
    ...VERDICT_MAPS.filter((m) => e[m].length).map((m) => `add element ${t} ${m} { ${mapped(e[m]).join(', ')} }`),
  ];
}

function deleteNetworkFamily(family: Family, n: BridgeRules): string[] {
  const t = `${family} ${TABLE}`;
  const e = networkElements(n, family);
  return [
    ...VERDICT_MAPS.filter((m) => e[m].length).map((m) => `delete element ${t} ${m} { ${e[m].map(([key]) => key).join(', ')} }`),
    `delete element ${t} bridges { ${q(n.bridge)} }`,
    ...networkChains(n).flatMap((c) => [`flush chain ${t} ${c.name}`, `delete chain ${t} ${c.name}`]),
  ];
}

/**
 * One transaction that adds network `n` to a ruleset built from `others` (the networks already
 * there): the same result as buildRuleset(others + n), without touching anything else.
 */
export function addNetworkScript(n: BridgeRules, others: BridgeRules[], ports: PortMapping[] = []): string {
  const lines = addNetworkFamily('ip', n);
  if (others.some((o) => o.subnets6?.length)) lines.push(...addNetworkFamily('ip6', n));
  else if (n.subnets6?.length) lines.push(...table('ip6', [...others, n], ports));
  return lines.join('\n') + '\n';
}

/** One transaction that removes network `n`, leaving the ruleset buildRuleset(remaining) would make. */
export function deleteNetworkScript(n: BridgeRules, remaining: BridgeRules[]): string {
  const lines = deleteNetworkFamily('ip', n);
  if (remaining.some((o) => o.subnets6?.length)) lines.push(...deleteNetworkFamily('ip6', n));
  else if (n.subnets6?.length) lines.push(`delete table ip6 ${TABLE}`);
  return lines.join('\n') + '\n';
}

/*
 * Source guard: no container may send as another (ARP or IP spoofing on a shared bridge), which
 * Docker allows. A table of the bridge family sees each frame with the bridge port it came in on
 * (the host end of the container's veth), before it is bridged or routed; per endpoint it holds
 * set elements only, so joining and leaving is an element update whatever the number of containers.
 * A port in `ports` may send only:
 *  - from its own MAC (`macs`);
 *  - ARP whose sender MAC and IPv4 address are its own (gratuitous ARP for its own address
 *    included), or an ARP probe from 0.0.0.0;
 *  - IPv4 from its own address (`src4`);
 *  - IPv6 from its own addresses (`src6`: its global one and the link-local one its MAC gives) or
 *    :: (DAD, MLD), and no neighbour advertisement for an address not its own (`nd6`; nft 1.0.6
 *    has no `icmpv6 taddr`, so the target is read as raw bytes 8..23 of the ICMPv6 header).
 * Nothing 802.1Q-tagged, which would carry frames past these checks. Ports not in `ports` (a
 * user's own port on a bridge berth uses) are left alone.
 */
const GUARD = `bridge ${TABLE}`;

/** The guard's tables, sets and chains; idempotent (elements already there stay), one nft transaction. */
export function guardTableScript(): string {
  const rules = [
    'iifname . ether saddr != @macs counter drop comment "spoofed-mac"',
    'ether type arp iifname . arp saddr ether . arp saddr ip @src4 accept',
    'ether type arp counter drop comment "spoofed-arp"',
    'ether type ip iifname . ether saddr . ip saddr @src4 accept',
    'ether type ip counter drop comment "spoofed-ipv4"',
    'icmpv6 type nd-neighbor-advert iifname . ether saddr . @th,64,128 != @nd6 counter drop comment "spoofed-nd"',
    'ether type ip6 iifname . ether saddr . ip6 saddr @src6 accept',
    'ether type ip6 ip6 saddr :: accept',
    'ether type ip6 counter drop comment "spoofed-ipv6"',
    'ether type { 8021q, 8021ad } counter drop comment "vlan-tagged"',
  ];
  return [
    `add table ${GUARD}`,
    `add set ${GUARD} ports { type ifname; }`,
    `add set ${GUARD} macs { type ifname . ether_addr; }`,
    `add set ${GUARD} src4 { type ifname . ether_addr . ipv4_addr; }`,
    `add set ${GUARD} src6 { type ifname . ether_addr . ipv6_addr; }`,
    `add set ${GUARD} nd6 { typeof iifname . ether saddr . @th,64,128; }`,
    // Before br_netfilter (priority 0) hands the frame to the IP hooks.
    `add chain ${GUARD} prerouting { type filter hook prerouting priority filter; policy accept; }`,
    `add chain ${GUARD} guard`,
    // The rules are written again each time (same transaction), so a start after an upgrade
    // carries the current ones; the sets, and so every running container's elements, stay.
    `flush chain ${GUARD} prerouting`,
    `flush chain ${GUARD} guard`,
    `add rule ${GUARD} prerouting iifname @ports jump guard`,
    ...rules.map((r) => `add rule ${GUARD} guard ${r}`),
  ].join('\n') + '\n';
}

/** What one endpoint may send from: its bridge port (the veth's host end), MAC and addresses. */
export interface EndpointSource { port: string; mac: string; ip: string; ip6?: string }

/**
 * The link-local address the kernel gives an interface with this MAC (EUI-64, RFC 4291 2.5.1):
 * containers cannot choose another, /proc/sys being read-only in them.
 */
export function linkLocalOf(mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  const hex = (hi: number, lo: number) => ((hi << 8) | lo).toString(16);
  return `fe80::${hex(b[0]! ^ 0x02, b[1]!)}:${hex(b[2]!, 0xff)}:${hex(0xfe, b[3]!)}:${hex(b[4]!, b[5]!)}`;
}

function ip6Elements(port: string, mac: string, ip6: string): Array<[string, string]> {
  return [['src6', `${port} . ${mac} . ${ip6}`], ['nd6', `${port} . ${mac} . 0x${parseIPv6(ip6).toString(16).padStart(32, '0')}`]];
}

/**
 * The link-local allowance of a port guarded by a berth that did not pin link-local addresses yet
 * (its containers still running after an upgrade): without it their neighbour discovery stops.
 */
export function linkLocalAllowance(ports: Array<{ port: string; mac: string }>): string {
  return ports.flatMap((p) => ip6Elements(q(p.port), p.mac, linkLocalOf(p.mac))).map(([set, el]) => `add element ${GUARD} ${set} { ${el} }`).join('\n') + '\n';
}

