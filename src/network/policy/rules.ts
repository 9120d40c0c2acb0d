import { createHash } from 'node:crypto';
import type { Direction, LabelReq, PolicyRule, PortRange } from './labels.js';

/**
 * The nftables text of network policy, built from plain data (no kernel, unit-tested).
 *
 * Everything lives in a table of its own, `inet berth-policy`: an accept in berth's other tables
 * does not stop a drop here, so policy denies hold whatever isolation and published ports allow,
 * and neither side's incremental scripts touch the other. The same text serves two places:
 *  - berthd's namespace ("host"), for endpoints of drivers that the host firewall carries
 *    (bridges): `forward` sees traffic between containers (bridged frames reach the IP hooks
 *    through br_netfilter, which berth turns on per bridge rather than assuming) and routed
 *    traffic, `input` what containers send to the host, `output` what the host sends to them.
 *    Endpoints are found by address (the source guard makes addresses trustworthy).
 *  - a container's own namespace ("netns"), for macvlan/ipvlan endpoints, whose traffic never
 *    crosses the host's netfilter; endpoints are found by interface.
 * Each peer selector is one set (`sel_<hash>_4`, `_6`) of member addresses, so a container joining
 * or leaving a selected group is one element update whatever the number of peers or policies.
 * Each isolated endpoint has one chain per direction: its allow rules `return` (so the other
 * side's chain is still asked: both must allow), then a counted drop. Replies pass first
 * (`ct state established,related`).
 */

export const POLICY_TABLE = 'berth-policy';
const T = `inet ${POLICY_TABLE}`;

export type Placement = 'host' | 'netns';

export interface Selector { labels: LabelReq[]; network?: string }

/** A rule as one endpoint has it, with where it came from (container label or network label). */
export interface EffectiveRule extends PolicyRule { source: 'container' | 'network' }

/** What the table needs of one isolated endpoint. */
export interface PolicedEndpoint {
  endpointId: string;
  ip: string;
  ip6?: string;
  /** Interface inside the container (netns placement). */
  ifname: string;
  isolate: Direction[];
  rules: EffectiveRule[];
}

export function canonicalSelector(s: Selector): string {
  const reqs = s.labels.map((r) => `${r.op}:${r.key}${r.value !== undefined ? `=${r.value}` : ''}`).sort();
  return JSON.stringify([reqs, s.network ?? null]);
}

/** The set names of a selector: stable across restarts, the same for the same selector everywhere. */
export function selectorName(s: Selector): string {
  return `sel_${createHash('sha1').update(canonicalSelector(s)).digest('hex').slice(0, 12)}`;
}

export function chainName(endpointId: string, d: Direction): string {
  return `ep_${endpointId.slice(0, 16)}_${d === 'ingress' ? 'in' : 'out'}`;
}

/** A comment nft accepts on one line of `nft -i` (no quotes, no `;`), at most 128 bytes. */
function comment(text: string): string {
  return `comment "${text.replace(/[^A-Za-z0-9_.:/=,!@ -]/g, '_').slice(0, 120)}"`;
}

export const DENY_COMMENT = 'deny';

function portClauses(ports: PortRange[], family: 'ip' | 'ip6' | 'any'): string[] {
  if (!ports.length) return [''];
  const out: string[] = [];
  const protos = [...new Set(ports.map((p) => p.proto))];
  for (const proto of protos) {
    const of = ports.filter((p) => p.proto === proto);
    if (proto === 'icmp') {
      out.push(family === 'ip' ? 'meta l4proto icmp' : family === 'ip6' ? 'meta l4proto ipv6-icmp' : 'meta l4proto { icmp, ipv6-icmp }');
    } else if (of.some((p) => p.from === undefined)) {
      out.push(`meta l4proto ${proto}`);
    } else {
      const list = of.map((p) => (p.to !== p.from ? `${p.from}-${p.to}` : `${p.from}`));
      out.push(`meta l4proto ${proto} th dport { ${[...new Set(list)].join(', ')} }`);
    }
  }
  return out;
}

/** The allow lines of one rule (without verdict): one per family and protocol it covers. */
export function ruleMatches(r: PolicyRule): string[] {
  const field = r.direction === 'ingress' ? 'saddr' : 'daddr';
  const p = r.peer;
  if (p.kind === 'any') return portClauses(r.ports, 'any');
  if (p.kind === 'cidr') {
    const f = p.family === 4 ? 'ip' : 'ip6';
    const peer = `${f} ${field} ${p.cidr}${p.except.length ? ` ${f} ${field} != { ${p.except.join(', ')} }` : ''}`;
    return portClauses(r.ports, f).map((c) => `${peer}${c ? ` ${c}` : ''}`);
  }
  const name = selectorName(p);
  return (['ip', 'ip6'] as const).flatMap((f) => portClauses(r.ports, f).map((c) => `${f} ${field} @${name}_${f === 'ip' ? 4 : 6}${c ? ` ${c}` : ''}`));
}

/** One endpoint's chain for one direction: its allows, each counted, then the counted deny. */
export function chainRules(ep: PolicedEndpoint, d: Direction): string[] {
  const lines = ep.rules.filter((r) => r.direction === d).flatMap((r) => ruleMatches(r).map((m) => `${m ? `${m} ` : ''}counter return ${comment(ruleTag(r))}`));
  return [...lines, `counter drop ${comment(DENY_COMMENT)}`];
}

/** What a rule's counters are found by: the label, prefixed for a network's. */
export function ruleTag(r: EffectiveRule): string {
  return r.source === 'network' ? `net:${r.label}` : r.label;
}

/** The selectors an endpoint's rules use. */
export function selectorsOf(ep: PolicedEndpoint): Selector[] {
  const out = new Map<string, Selector>();
  for (const r of ep.rules) if (r.peer.kind === 'select') out.set(selectorName(r.peer), { labels: r.peer.labels, ...(r.peer.network ? { network: r.peer.network } : {}) });
  return [...out.values()];
}

/** The verdict-map elements that send an endpoint's traffic to its chains, per map. */
function dispatch(ep: PolicedEndpoint, placement: Placement): Array<{ map: string; key: string; chain: string }> {
  const out: Array<{ map: string; key: string; chain: string }> = [];
  for (const d of ep.isolate) {
    const chain = chainName(ep.endpointId, d);
    const dir = d === 'ingress' ? 'in' : 'out';
    if (placement === 'netns') {
      out.push({ map: `${dir}_if`, key: `"${ep.ifname}"`, chain });
    } else {
      out.push({ map: `${dir}4`, key: ep.ip, chain });
      if (ep.ip6) out.push({ map: `${dir}6`, key: ep.ip6, chain });
    }
  }
  return out;
}

const ND = 'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept';

/** A base chain of the table: every one accepts replies and neighbour discovery before its own rules. */
function baseChain(hook: 'input' | 'output' | 'forward', rules: string[]): string[] {
  return [
    `  chain ${hook} {`,
    `    type filter hook ${hook} priority filter; policy accept;`,
    `    ct state established,related accept`,
    ...rules.map((r) => `    ${r}`),
    `  }`,
  ];
}

function baseChains(placement: Placement): string[] {
  if (placement === 'netns') {
    return [
      // The embedded DNS answers on 127.0.0.11 inside the namespace: loopback is never policed.
      ...baseChain('input', ['iifname "lo" accept', ND, 'iifname vmap @in_if']),
      ...baseChain('output', ['oifname "lo" accept', ND, 'oifname vmap @out_if']),
    ];
  }
  return [
    // The sender's egress first, then the receiver's ingress: an allow only returns.
    ...baseChain('forward', [ND, 'ip saddr vmap @out4', 'ip6 saddr vmap @out6', 'ip daddr vmap @in4', 'ip6 daddr vmap @in6']),
    ...baseChain('input', [ND, 'ip saddr vmap @out4', 'ip6 saddr vmap @out6']),
    ...baseChain('output', [ND, 'ip daddr vmap @in4', 'ip6 daddr vmap @in6']),
  ];
}

function maps(placement: Placement): Array<{ name: string; type: string }> {
  return placement === 'netns'
    ? [{ name: 'in_if', type: 'ifname' }, { name: 'out_if', type: 'ifname' }]
    : [{ name: 'in4', type: 'ipv4_addr' }, { name: 'out4', type: 'ipv4_addr' }, { name: 'in6', type: 'ipv6_addr' }, { name: 'out6', type: 'ipv6_addr' }];
}

export interface SetContent { name: string; v4: string[]; v6: string[] }

function elems(list: string[]): string {
  return list.length ? ` elements = { ${list.join(', ')} }` : '';
}

/**
 * The whole table of one place, replacing whatever table of that name is there in one
 * transaction (no moment without it): at start, from the records of the running containers.
 */
export function buildPolicyTable(placement: Placement, endpoints: PolicedEndpoint[], sets: SetContent[]): string {
  const lines = [`table ${T}`, `delete table ${T}`, `table ${T} {`];
  for (const s of sets) {
    lines.push(`  set ${s.name}_4 { type ipv4_addr;${elems(s.v4)} }`, `  set ${s.name}_6 { type ipv6_addr;${elems(s.v6)} }`);
  }
  for (const ep of endpoints) {
    for (const d of ep.isolate) lines.push(`  chain ${chainName(ep.endpointId, d)} {`, ...chainRules(ep, d).map((r) => `    ${r}`), `  }`);
  }
  const all = endpoints.flatMap((ep) => dispatch(ep, placement));
  for (const m of maps(placement)) {
    lines.push(`  map ${m.name} { type ${m.type} : verdict;${elems(all.filter((e) => e.map === m.name).map((e) => `${e.key} : jump ${e.chain}`))} }`);
  }
  lines.push(...baseChains(placement), `}`);
  return lines.join('\n') + '\n';
}

/** One-line commands (one transaction) that add a selector's sets with their members. */
export function addSetCommands(s: SetContent): string[] {
  return [
    `add set ${T} ${s.name}_4 { type ipv4_addr; }`,
    `add set ${T} ${s.name}_6 { type ipv6_addr; }`,
    ...(s.v4.length ? [`add element ${T} ${s.name}_4 { ${s.v4.join(', ')} }`] : []),
    ...(s.v6.length ? [`add element ${T} ${s.name}_6 { ${s.v6.join(', ')} }`] : []),
  ];
}

export function deleteSetCommands(name: string): string[] {
  return [`delete set ${T} ${name}_4`, `delete set ${T} ${name}_6`];
}

/** A member joining (`add`) or leaving (`delete`) a selector's sets. */
export function memberCommands(op: 'add' | 'delete', name: string, ip: string, ip6?: string): string[] {
  return [`${op} element ${T} ${name}_4 { ${ip} }`, ...(ip6 ? [`${op} element ${T} ${name}_6 { ${ip6} }`] : [])];
}

/** An isolated endpoint's chains and dispatch elements (its selectors' sets must exist). */
export function addEndpointCommands(ep: PolicedEndpoint, placement: Placement): string[] {
  const out: string[] = [];
  for (const d of ep.isolate) {
    const c = chainName(ep.endpointId, d);
    out.push(`add chain ${T} ${c}`, ...chainRules(ep, d).map((r) => `add rule ${T} ${c} ${r}`));
  }
  for (const e of dispatch(ep, placement)) out.push(`add element ${T} ${e.map} { ${e.key} : jump ${e.chain} }`);
  return out;
}

export function deleteEndpointCommands(ep: PolicedEndpoint, placement: Placement): string[] {
  const out = dispatch(ep, placement).map((e) => `delete element ${T} ${e.map} { ${e.key} }`);
  for (const d of ep.isolate) out.push(`flush chain ${T} ${chainName(ep.endpointId, d)}`, `delete chain ${T} ${chainName(ep.endpointId, d)}`);
  return out;
}
