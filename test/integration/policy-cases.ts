/**
 * The policy truth table's cases and its expected verdicts, written apart from berth's own policy
 * code (it imports none of it): cases are structured data, rendered here into berth's label
 * grammar, and the verdict of each probe follows from Kubernetes' NetworkPolicy rules applied to
 * that data directly.
 */

export type Dir = 'ingress' | 'egress';
export interface PortSpec { proto: 'tcp' | 'udp'; from?: number; to?: number }
/** A peer: `any`, or labels (all equal) and/or a network key, or a CIDR with `N1`/`N2` for the case's subnets. */
export interface PeerSpec { any?: true; labels?: Record<string, string>; notLabels?: Record<string, string>; has?: string; hasNot?: string; network?: string; cidr?: string; except?: string[] }
export interface RuleSpec { dir: Dir; peer: PeerSpec; ports?: PortSpec[] }
export interface ContainerSpec { name: string; labels?: Record<string, string>; nets: string[]; isolate?: Dir[]; rules?: RuleSpec[] }
export interface NetSpec { isolate?: Dir[]; rules?: RuleSpec[]; macvlan?: true }
export interface Case { name: string; nets: Record<string, NetSpec>; containers: ContainerSpec[] }

/** The listeners every container has, and so the ports every pair is probed on. */
export const SLOTS: Array<['tcp' | 'udp', number]> = [['tcp', 80], ['tcp', 5432], ['udp', 5432], ['tcp', 8081]];

const A = { name: 'a', labels: { app: 'web' } };
const B = { name: 'b', labels: { app: 'api' } };
const C = { name: 'c', labels: { app: 'db' } };
const D = { name: 'd', labels: { role: 'ops' } };
const n1 = (x: { name: string; labels: Record<string, string> }, more: Partial<ContainerSpec> = {}): ContainerSpec => ({ ...x, nets: ['n1'], ...more });
const tcp = (from: number, to = from): PortSpec => ({ proto: 'tcp', from, to });
const udp = (from: number, to = from): PortSpec => ({ proto: 'udp', from, to });
const four = (over: Record<string, Partial<ContainerSpec>> = {}) => [A, B, C, D].map((x) => n1(x, over[x.name] ?? {}));

export const CASES: Case[] = [
  { name: 'no policy: everything open', nets: { n1: {} }, containers: four() },
  { name: 'c isolated for ingress, no rule', nets: { n1: {} }, containers: four({ c: { isolate: ['ingress'] } }) },
  { name: 'c isolated for egress, no rule (replies to others pass)', nets: { n1: {} }, containers: four({ c: { isolate: ['egress'] } }) },
  { name: 'c accepts app=api on 5432/tcp', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [tcp(5432)] }] } }) },
  { name: 'c accepts app=api on every port', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } } }] } }) },
  { name: 'c accepts app=api on 5432/udp only', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [udp(5432)] }] } }) },
  { name: 'c accepts anyone on 80', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { any: true }, ports: [tcp(80)] }] } }) },
  { name: 'c accepts anyone on the range 8000-8100', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { any: true }, ports: [tcp(8000, 8100)] }] } }) },
  { name: 'rules add up: api on 5432, ops on everything', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [tcp(5432)] }, { dir: 'ingress', peer: { labels: { role: 'ops' } } }] } }) },
  { name: 'b may send only to app=db on 5432/tcp', nets: { n1: {} }, containers: four({ b: { rules: [{ dir: 'egress', peer: { labels: { app: 'db' } }, ports: [tcp(5432)] }] } }) },
  { name: 'both sides allow: b egress and c ingress agree', nets: { n1: {} }, containers: four({ b: { rules: [{ dir: 'egress', peer: { labels: { app: 'db' } }, ports: [tcp(5432)] }] }, c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [tcp(5432)] }] } }) },
  { name: 'both sides must allow: b egress on 80, c ingress on 5432', nets: { n1: {} }, containers: four({ b: { rules: [{ dir: 'egress', peer: { labels: { app: 'db' } }, ports: [tcp(80)] }] }, c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [tcp(5432)] }] } }) },
  { name: 'network default-deny ingress, a accepts anyone', nets: { n1: { isolate: ['ingress'] } }, containers: four({ a: { rules: [{ dir: 'ingress', peer: { any: true } }] } }) },
  { name: 'network default-deny egress, d may send anywhere', nets: { n1: { isolate: ['egress'] } }, containers: four({ d: { rules: [{ dir: 'egress', peer: { any: true } }] } }) },
  { name: 'network default-deny both ways, b to c on 5432 allowed on both sides', nets: { n1: { isolate: ['ingress', 'egress'] } }, containers: four({ b: { rules: [{ dir: 'egress', peer: { labels: { app: 'db' } }, ports: [tcp(5432)] }] }, c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [tcp(5432)] }] } }) },
  { name: 'network rule: every container accepts role=ops', nets: { n1: { rules: [{ dir: 'ingress', peer: { labels: { role: 'ops' } } }] } }, containers: four() },
  { name: 'selector app!=web (absent counts as not equal)', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { notLabels: { app: 'web' } } }] } }) },
  { name: 'selector: has the key app', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { has: 'app' } }] } }) },
  { name: 'selector: lacks the key app', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { hasNot: 'app' } }] } }) },
  {
    name: 'selector with two labels (both must match)', nets: { n1: {} },
    containers: [n1({ name: 'a', labels: { app: 'api' } }), n1({ name: 'b', labels: { app: 'api', env: 'prod' } }), n1({ name: 'c', labels: { app: 'db' } }, { rules: [{ dir: 'ingress', peer: { labels: { app: 'api', env: 'prod' } } }] }), n1({ name: 'd', labels: { env: 'prod' } })],
  },
  { name: 'c accepts a CIDR except a\'s address', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { cidr: 'N1.0/24', except: ['N1.2/32'] } }] } }) },
  { name: 'a may send to c\'s /32 on 5432/tcp only', nets: { n1: {} }, containers: four({ a: { rules: [{ dir: 'egress', peer: { cidr: 'N1.4/32' }, ports: [tcp(5432)] }] } }) },
  { name: 'CIDR with two exceptions', nets: { n1: {} }, containers: four({ d: { rules: [{ dir: 'ingress', peer: { cidr: 'N1.0/29', except: ['N1.2/32', 'N1.4/31'] } }] } }) },
  {
    name: 'by network: c on n1 and n2 accepts n2 only', nets: { n1: {}, n2: {} },
    containers: [n1(A), n1(B), { ...C, nets: ['n1', 'n2'], rules: [{ dir: 'ingress', peer: { network: 'n2' } }] }, { ...D, nets: ['n2'] }],
  },
  {
    name: 'labels and network together: app=api on n1', nets: { n1: {}, n2: {} },
    containers: [n1(A), { ...B, nets: ['n1', 'n2'] }, { ...C, nets: ['n1', 'n2'], rules: [{ dir: 'ingress', peer: { labels: { app: 'api' }, network: 'n1' } }] }, { name: 'd', labels: { app: 'api' }, nets: ['n2'] }],
  },
  {
    name: 'network isolation is per endpoint: n2 default-deny ingress, n1 open', nets: { n1: {}, n2: { isolate: ['ingress'] } },
    containers: [n1(A), n1(B), { ...C, nets: ['n1', 'n2'] }, { ...D, nets: ['n2'] }],
  },
  {
    name: 'c may send to network n1 only', nets: { n1: {}, n2: {} },
    containers: [n1(A), n1(B), { ...C, nets: ['n1', 'n2'], rules: [{ dir: 'egress', peer: { network: 'n1' } }] }, { ...D, nets: ['n2'] }],
  },
  { name: 'c accepts anyone on udp only', nets: { n1: {} }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { any: true }, ports: [{ proto: 'udp' }] }] } }) },
  {
    name: 'a accepts its own kind', nets: { n1: {} },
    containers: [n1(A, { rules: [{ dir: 'ingress', peer: { labels: { app: 'web' } } }] }), n1({ name: 'b', labels: { app: 'web' } }), n1(C), n1(D)],
  },
  { name: 'a isolated for egress, everyone may reach a', nets: { n1: {} }, containers: four({ a: { isolate: ['egress'] } }) },
  {
    name: 'd accepts three peers on three different ports', nets: { n1: {} },
    containers: four({ d: { rules: [{ dir: 'ingress', peer: { labels: { app: 'web' } }, ports: [tcp(80)] }, { dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [tcp(5432)] }, { dir: 'ingress', peer: { labels: { app: 'db' } }, ports: [udp(5432)] }] } }),
  },
  { name: 'one rule, a list of ports: 80 and 8081 and 5432/udp', nets: { n1: {} }, containers: four({ b: { rules: [{ dir: 'ingress', peer: { any: true }, ports: [tcp(80), tcp(8081), udp(5432)] }] } }) },
  { name: 'macvlan: c accepts app=api on 5432/tcp', nets: { n1: { macvlan: true } }, containers: four({ c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [tcp(5432)] }] } }) },
  {
    name: 'macvlan: network default-deny both ways, b to c on 5432', nets: { n1: { macvlan: true, isolate: ['ingress', 'egress'] } },
    containers: four({ b: { rules: [{ dir: 'egress', peer: { labels: { app: 'db' } }, ports: [tcp(5432)] }] }, c: { rules: [{ dir: 'ingress', peer: { labels: { app: 'api' } }, ports: [tcp(5432)] }] } }),
  },
  { name: 'macvlan: a may send to a CIDR except c', nets: { n1: { macvlan: true } }, containers: four({ a: { rules: [{ dir: 'egress', peer: { cidr: 'N1.0/24', except: ['N1.4/32'] } }] } }) },
  { name: 'macvlan: d isolated both ways, no rule', nets: { n1: { macvlan: true } }, containers: four({ d: { isolate: ['ingress', 'egress'] } }) },
];

/** The case's subnets: `N1` → 10.91.<case>, `N2` → 10.92.<case>. */
export function subnetPrefix(caseIndex: number, net: string): string {
  return `10.${90 + Number(net.slice(1))}.${caseIndex}`;
}

/** A container's address on a network: .2, .3 … in the order the case lists containers. */
export function addressOf(caseIndex: number, c: Case, name: string, net: string): string {
  return `${subnetPrefix(caseIndex, net)}.${c.containers.findIndex((x) => x.name === name) + 2}`;
}

function cidrText(caseIndex: number, s: string): string {
  return s.replace(/N(\d)/g, (_m, k: string) => subnetPrefix(caseIndex, `n${k}`));
}

/** A rule in berth's label grammar. */
export function ruleLabel(caseIndex: number, netName: (key: string) => string, r: RuleSpec): string {
  const p = r.peer;
  const terms: string[] = [];
  if (p.any) terms.push('any');
  const reqs = [
    ...Object.entries(p.labels ?? {}).map(([k, v]) => `${k}=${v}`), ...Object.entries(p.notLabels ?? {}).map(([k, v]) => `${k}!=${v}`),
    ...(p.has ? [p.has] : []), ...(p.hasNot ? [`!${p.hasNot}`] : []),
  ];
  if (reqs.length) terms.push(`labels:${reqs.join(',')}`);
  if (p.network) terms.push(`network:${netName(p.network)}`);
  if (p.cidr) terms.push(`cidr:${cidrText(caseIndex, p.cidr)}`);
  if (p.except?.length) terms.push(`except:${p.except.map((e) => cidrText(caseIndex, e)).join(',')}`);
  if (r.ports?.length) terms.push(`ports:${r.ports.map((x) => (x.from === undefined ? x.proto : `${x.from}${x.to !== x.from ? `-${x.to}` : ''}/${x.proto}`)).join(',')}`);
  return terms.join(' ');
}

export function policyLabels(caseIndex: number, netName: (key: string) => string, spec: { isolate?: Dir[]; rules?: RuleSpec[] }): Record<string, string> {
  const out: Record<string, string> = {};
  if (spec.isolate?.length) out['berth.policy.isolate'] = spec.isolate.join(',');
  (spec.rules ?? []).forEach((r, i) => { out[`berth.policy.${r.dir}.r${i}`] = ruleLabel(caseIndex, netName, r); });
  return out;
}

// ---------------------------------------------------------------- the expected verdicts

function ipInCidr(ip: string, cidr: string): boolean {
  const [base, bits] = cidr.split('/') as [string, string];
  const n = (a: string) => a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  return Math.floor(n(ip) / size) === Math.floor(n(base) / size);
}

function peerMatches(caseIndex: number, c: Case, p: PeerSpec, peer: ContainerSpec, net: string): boolean {
  if (p.any) return true;
  if (p.cidr) {
    const ip = addressOf(caseIndex, c, peer.name, net);
    return ipInCidr(ip, cidrText(caseIndex, p.cidr)) && !(p.except ?? []).some((e) => ipInCidr(ip, cidrText(caseIndex, e)));
  }
  const labels = peer.labels ?? {};
  if (Object.entries(p.labels ?? {}).some(([k, v]) => labels[k] !== v)) return false;
  if (Object.entries(p.notLabels ?? {}).some(([k, v]) => labels[k] === v)) return false;
  if (p.has && !(p.has in labels)) return false;
  if (p.hasNot && p.hasNot in labels) return false;
  // A network peer is an address on that network: the one the traffic comes from or goes to.
  if (p.network && p.network !== net) return false;
  return true;
}

function portMatches(ports: PortSpec[] | undefined, proto: string, port: number): boolean {
  if (!ports?.length) return true;
  return ports.some((p) => p.proto === proto && (p.from === undefined || (p.from <= port && port <= (p.to ?? p.from))));
}

/** Whether `self`'s endpoint on `net` lets this flow with `peer` pass in direction `dir`. */
function sideAllows(caseIndex: number, c: Case, self: ContainerSpec, net: string, dir: Dir, peer: ContainerSpec, proto: string, port: number): boolean {
  const netSpec = c.nets[net]!;
  const rules = [...(self.rules ?? []), ...(netSpec.rules ?? [])].filter((r) => r.dir === dir);
  const isolated = rules.length > 0 || !!self.isolate?.includes(dir) || !!netSpec.isolate?.includes(dir);
  if (!isolated) return true;
  return rules.some((r) => peerMatches(caseIndex, c, r.peer, peer, net) && portMatches(r.ports, proto, port));
}

/** Kubernetes' rule: the sender's egress and the receiver's ingress must both allow. */
export function expected(caseIndex: number, c: Case, src: ContainerSpec, dst: ContainerSpec, net: string, proto: string, port: number): boolean {
  return sideAllows(caseIndex, c, src, net, 'egress', dst, proto, port) && sideAllows(caseIndex, c, dst, net, 'ingress', src, proto, port);
}
