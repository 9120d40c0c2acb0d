/**
 * The routing mesh's host table, `ip berth_mesh` in berthd's namespace, built from plain data
 * (pure, unit-tested; kernel/nft.ts applies it): a connection to any local address on a published
 * ingress port is DNATed to this node's ingress sandbox (same port); one on a host-mode port goes
 * straight to a local task (Docker's `mode=host`), picked in turn (`numgen inc`: round robin, as
 * IPVS schedules by default). A port with no element is not touched, so the kernel refuses it
 * (RST or ICMP unreachable): a service removed is refused at once.
 *
 * The ingress sandbox balances its published ports with the slot tables of a container's VIPs
 * (lbtable.ts, `ingressKind` in lbkinds.ts), so a backend change there is map elements that
 * berth-nftset writes without `nft`.
 *
 * The table is made whole once (`meshTable`); after that a change is only what differs
 * (`portChanges`, `ingressChanges`): a map element, a port's dispatch rule and the chains of the
 * backends that came or went, in one transaction, whatever the number of other services.
 */

import { balancerChanges, type BalancerShape } from './balancerdiff.js';

export type Proto = 'tcp' | 'udp';

/** One published port as a balancer sees it: its backends' addresses (tasks) and the port they listen on. */
export interface MeshPort { service: string; proto: Proto; published: number; target: number; backends: string[] }

export const MESH_TABLE = 'berth_mesh';

/** The prefix of a table's port chains and the verdict map that leads to them. */
interface Balancing { table: string; prefix: string; map: string }
export const HOST_PORTS: Balancing = { table: MESH_TABLE, prefix: 'hp', map: 'hostports' };

export const portKey = (p: { proto: Proto; published: number }): string => `${p.proto} . ${p.published}`;
const chainOf = (b: Balancing, p: MeshPort) => `${b.prefix}_${p.service.slice(0, 12)}_${p.proto}_${p.published}`;
/** A backend's chain is named by its address, so a backend that stays keeps its chain across changes. */
const backendChain = (b: Balancing, p: MeshPort, ip: string) => `${chainOf(b, p)}_${ip.replace(/\./g, '_')}`;
const backendsOf = (p: MeshPort) => [...new Set(p.backends)].sort();
const live = (ports: Iterable<MeshPort>) => [...ports].filter((p) => p.backends.length).sort((a, b) => a.proto.localeCompare(b.proto) || a.published - b.published);

/**
 * The port chain's rules: straight to the only backend, or each backend in turn without a set:
 * rule i sends one of every N-i connections that reach it to backend i (`numgen inc mod N-i 0`),
 * the last backend takes the rest; each rule's counter counts only what reaches it, so N backends
 * take connections 0, 1, …, N-1, 0, … exactly in turn. It was one rule with an anonymous verdict
 * map (`numgen inc mod N vmap { 0 : goto … }`), a kernel set per port: naming each new set scans
 * every set of the table and binding it walks the whole transaction, so a table of 7,000 ports
 * took 7.7 s to make, and every change paid for the sets already there.
 */
function dispatch(b: Balancing, p: MeshPort): string[] {
  const list = backendsOf(p);
  return list.map((ip, i) => (i < list.length - 1 ? `numgen inc mod ${list.length - i} 0 ` : '') + `goto ${backendChain(b, p, ip)}`);
}

/**
 * A port mapping needs the protocol matched in the same rule. The counter counts the backend's
 * connections (a nat chain sees a connection's first packet only); the comment names whose they
 * are, for /metrics. A backend's chain stays while it does, and so does its count.
 */
const hitComment = (service: string, ip: string) => `hits ${service} ${ip}`;
const dnat = (p: MeshPort, ip: string) => `meta l4proto ${p.proto} counter dnat ip to ${ip}:${p.target} comment "${hitComment(p.service, ip)}"`;

/** The service and backend a rule's counter counts, from its comment; undefined for any other rule. */
export function parseHitComment(comment: string): { service: string; backend: string } | undefined {
  const m = /^hits (\S+) (\S+)$/.exec(comment);
  return m ? { service: m[1]!, backend: m[2]! } : undefined;
}

function chainBlocks(b: Balancing, p: MeshPort): string[] {
  return [
    `  chain ${chainOf(b, p)} {`, ...dispatch(b, p).map((r) => `    ${r}`), '  }',
    ...backendsOf(p).flatMap((ip) => [`  chain ${backendChain(b, p, ip)} {`, `    ${dnat(p, ip)}`, '  }']),
  ];
}

function elements(list: string[]): string[] {
  return list.length ? [`    elements = { ${list.join(', ')} }`] : [];
}

/** The host's table whole: `ingress` ports to the sandbox's address (when there is one), `host` ports to this node's own tasks. */
export function meshTable(sandboxIp: string | undefined, ingress: Array<{ proto: Proto; port: number }>, host: MeshPort[]): string {
  const ing = sandboxIp ? [...ingress].sort((a, b) => a.proto.localeCompare(b.proto) || a.port - b.port) : [];
  const hp = live(host);
  const rules = [
    '    fib daddr type local dnat ip to meta l4proto . th dport map @ingress',
    '    fib daddr type local meta l4proto . th dport vmap @hostports',
  ];
  return [
    `table ip ${MESH_TABLE} {`,
    '  map ingress {',
    '    type inet_proto . inet_service : ipv4_addr . inet_service',
    ...elements(ing.map((p) => `${p.proto} . ${p.port} : ${sandboxIp} . ${p.port}`)),
    '  }',
    '  map hostports {',
    '    type inet_proto . inet_service : verdict',
    ...elements(hp.map((p) => `${portKey(p)} : goto ${chainOf(HOST_PORTS, p)}`)),
    '  }',
    // Before berth's own nat chains (priority -100): the first NAT binding of a connection wins,
    // and a published service port is the cluster's, not a container's.
    '  chain prerouting {',
    '    type nat hook prerouting priority -110; policy accept;',
    ...rules,
    '  }',
    '  chain output {',
    '    type nat hook output priority -110; policy accept;',
    ...rules,
    '  }',
    ...hp.flatMap((p) => chainBlocks(HOST_PORTS, p)),
    '}',
  ].join('\n') + '\n';
}

/** The script that replaces a table by `text`, or removes it when `text` is empty; idempotent. */
export function replaceScript(table: string, text: string): string {
  return `table ip ${table}\ndelete table ip ${table}\n${text}`;
}

/**
 * The commands that take a balanced port map from `before` to `after` (ports by `portKey`; a port
 * without backends is absent from the kernel): new ports get their chains and then their element;
 * a changed port gets the chains of its new backends, its dispatch rule replaced, then the chains
 * of backends gone deleted; a port gone loses its element before its chains. Kube-proxy's
 * nftables mode updates the same way. Empty when nothing differs.
 */
export function portChanges(b: Balancing, before: Map<string, MeshPort>, after: Map<string, MeshPort>): string[] {
  const shape: BalancerShape<MeshPort> = {
    table: `ip ${b.table}`, map: b.map,
    // Now another service's port or another target: out whole, and the new one added.
    same: (old, p) => p.service === old.service && p.target === old.target,
    chain: (p) => chainOf(b, p), backendChain: (p, ip) => backendChain(b, p, ip), backends: backendsOf,
    dispatch: (p) => dispatch(b, p), dnat,
  };
  const byKey = (ports: Map<string, MeshPort>) => new Map(live(ports.values()).map((p) => [portKey(p), p]));
  return balancerChanges(shape, byKey(before), byKey(after));
}

/** The host's ingress map elements from `before` to `after` (port keys), all pointing at `sandboxIp`. */
export function ingressChanges(sandboxIp: string, before: Set<string>, after: Set<string>): string[] {
  const t = `ip ${MESH_TABLE}`;
  return [
    ...[...before].filter((k) => !after.has(k)).sort().map((k) => `delete element ${t} ingress { ${k} }`),
    ...[...after].filter((k) => !before.has(k)).sort().map((k) => `add element ${t} ingress { ${k} : ${sandboxIp} . ${k.split(' . ')[1]} }`),
  ];
}
