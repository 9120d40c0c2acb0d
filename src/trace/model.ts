/**
 * `network trace` as pure data: from a snapshot of berth's model (containers, networks, published
 * ports, policy) it says which way a packet from container A to a target goes, what it meets, the
 * verdict and, for a failure, why and what to do. No kernel here: the probe (probe.ts) proves or
 * disproves what this predicts, and `agreement` compares the two.
 */
import { describePeer, describePorts, labelsMeet, type Direction, type PolicyRule } from '../network/policy/labels.js';
import type { EffectiveRule } from '../network/policy/rules.js';
import type { PortMapping } from '../model/network.js';
import { BadRequestError, ConflictError } from '../util/errors.js';

export type Proto = 'tcp' | 'udp' | 'icmp';

export interface TraceNetwork {
  id: string;
  name: string;
  driver: string;
  internal: boolean;
  /** The default bridge: addresses and NAT, no name resolution. */
  isDefault: boolean;
  bridge?: string;
  /** The VXLAN device of an overlay network on this host. */
  vxlan?: string;
  parent?: string;
  subnets: string[];
  gateways: string[];
  /** com.docker.network.bridge.enable_icc=false: the bridge ports are isolated from each other. */
  iccOff?: boolean;
}

export interface TraceEndpoint {
  networkId: string;
  endpointId: string;
  ip: string;
  ifname: string;
  aliases: string[];
}

export interface TraceContainer {
  id: string;
  name: string;
  running: boolean;
  netnsPath: string;
  labels: Record<string, string>;
  endpoints: TraceEndpoint[];
  published: PortMapping[];
  /** `--link TARGET:ALIAS` as given. */
  links: string[];
  /** `--add-host NAME:IP` as given: /etc/hosts lines. */
  extraHosts: string[];
}

/** One endpoint's policy as NetworkPolicy has it (absent: not isolated in any direction). */
export interface TracePolicy {
  endpointId: string;
  isolatedBy: Record<Direction, string[]>;
  rules: EffectiveRule[];
}

/** An endpoint of a swarm network on another host, as the cluster store has it. */
export interface TraceRemote { networkId: string; name: string; aliases: string[]; ip: string; host?: string }

export interface Snapshot {
  containers: TraceContainer[];
  networks: TraceNetwork[];
  policies: TracePolicy[];
  remotes: TraceRemote[];
  /** Addresses of berthd's namespace (the host): bridges' gateways and its own interfaces. */
  hostAddresses: string[];
}

export interface TargetSpec { host: string; port?: number; proto: Proto }

/** `B[:PORT[/PROTO]]`: a port without a protocol is TCP, no port is ICMP (a ping). */
export function parseTarget(s: string): TargetSpec {
  const m = /^([^:/\s]+)(?::(\d+)(?:\/(tcp|udp))?)?$/i.exec(s.trim());
  if (!m) throw new BadRequestError(`invalid trace target "${s}": expected B[:PORT[/PROTO]] (IPv4 only)`);
  const host = m[1]!;
  if (m[2] === undefined) return { host, proto: 'icmp' };
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new BadRequestError(`invalid port in trace target "${s}"`);
  return { host, port, proto: (m[3]?.toLowerCase() ?? 'tcp') as Proto };
}

export function isIPv4(s: string): boolean {
  return /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(s) && s.split('.').every((o) => Number(o) <= 255);
}

function ipInt(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

export function inSubnet(ip: string, cidr: string): boolean {
  const [base, bits] = cidr.split('/') as [string, string | undefined];
  if (!isIPv4(ip) || !isIPv4(base)) return false;
  const size = 2 ** (32 - Number(bits ?? 32));
  return Math.floor(ipInt(base) / size) === Math.floor(ipInt(ip) / size);
}

/** What the probe should see if the model is right. */
export interface Expectation {
  /** delivered: an answer came (connected, refused, echo reply) or, for UDP, it arrived. */
  outcome: 'delivered' | 'dropped' | 'no-route' | 'not-resolved';
  /** Who answers: the target container (its namespace sees the packet), the host, or a host outside. */
  at?: 'container' | 'host' | 'outside';
  /** The comment of the nft rule that drops it. */
  dropBy?: string;
}

export interface Reason { code: string; message: string; fix: string }

export interface DnsStep {
  name: string;
  /** hosts: A's /etc/hosts has it (--add-host, legacy --link); berth: the embedded DNS answered; none: nobody on A's networks has it; forwarded: asked upstream. */
  answer: 'hosts' | 'berth' | 'none' | 'forwarded';
  networks: string[];
  addresses: string[];
  note: string;
}

export interface Plan {
  from: { id: string; name: string };
  target: TargetSpec & { spec: string; ip?: string; kind?: 'container' | 'host' | 'outside'; container?: string; remoteHost?: string };
  dns?: DnsStep;
  hops: string[];
  /** The nft chains and elements of berth's tables the packet meets, in order. */
  nft: string[];
  verdict: 'reachable' | 'blocked';
  reason?: Reason;
  expect: Expectation;
  /** What the probe must match on: the address the packet is sent to and, after DNAT, where it lands. */
  probe?: { ip: string; port?: number; proto: Proto; sourceIp?: string; landsOn?: { containerId: string; name: string; ip: string; port?: number; netnsPath: string } };
}

function netOf(s: Snapshot, id: string): TraceNetwork | undefined {
  return s.networks.find((n) => n.id === id);
}

/** A's endpoints, eth0 first: the first one carries the default route unless its network is internal. */
function ordered(c: TraceContainer): TraceEndpoint[] {
  return [...c.endpoints].sort((a, b) => a.ifname.localeCompare(b.ifname, undefined, { numeric: true }));
}

function networkNames(s: Snapshot, c: TraceContainer): string {
  return ordered(c).map((e) => netOf(s, e.networkId)?.name ?? e.networkId.slice(0, 12)).join(', ') || 'no network';
}

/** The names an endpoint answers to on its network: container name, aliases, short id (Docker's). */
function namesOf(c: TraceContainer, e: TraceEndpoint): string[] {
  return [c.name, ...e.aliases, c.id.slice(0, 12)].map((n) => n.toLowerCase());
}

/** Name resolution from A's point of view, as the embedded DNS would answer (src/dns/lookup.ts's rules). */
export function resolveFrom(s: Snapshot, a: TraceContainer, name: string): DnsStep {
  const q = name.toLowerCase();
  const userNets = a.endpoints.map((e) => netOf(s, e.networkId)).filter((n): n is TraceNetwork => !!n && !n.isDefault);
  const running = s.containers.filter((c) => c.running);
  // libc reads /etc/hosts before it asks DNS: --add-host, and legacy links on the default bridge.
  const added = a.extraHosts.map((h) => h.split(':')).find(([n]) => n?.toLowerCase() === q);
  if (added?.[1]) return { name, answer: 'hosts', networks: [], addresses: [added.slice(1).join(':')], note: `${a.name}'s /etc/hosts has it (--add-host)` };
  if (!userNets.length) {
    for (const link of a.links) {
      const [target, alias] = link.split(':') as [string, string | undefined];
      const t = running.find((c) => c.name === target.replace(/^\//, '') || (target.length >= 12 && c.id.startsWith(target)));
      const ip = t?.endpoints[0]?.ip;
      if (t && ip && [alias, t.name, t.id.slice(0, 12)].some((x) => x?.toLowerCase() === q)) {
        return { name, answer: 'hosts', networks: [], addresses: [ip], note: `${a.name}'s /etc/hosts has it (legacy --link ${link} on the default bridge)` };
      }
    }
    const holder = running.find((c) => c.endpoints.some((e) => namesOf(c, e).includes(q)));
    return {
      name, answer: 'none', networks: [], addresses: [],
      note: `${a.name} is only on the default bridge, which has no name resolution (Docker's rule): ${a.name} asks the host's DNS servers for "${name}"${holder ? ', which do not know containers' : ''}`,
    };
  }
  for (const link of a.links) {
    const [target, alias] = link.split(':');
    if ((alias ?? target)?.toLowerCase() !== q) continue;
    const t = running.find((c) => c.name === target?.replace(/^\//, ''));
    const shared = t ? t.endpoints.filter((e) => userNets.some((n) => n.id === e.networkId)) : [];
    if (shared.length) return { name, answer: 'berth', networks: shared.map((e) => netOf(s, e.networkId)!.name), addresses: shared.map((e) => e.ip), note: `--link alias of ${t!.name}` };
  }
  const hits: Array<{ net: TraceNetwork; ip: string }> = [];
  for (const n of userNets) {
    for (const c of running) for (const e of c.endpoints) if (e.networkId === n.id && e.ip && namesOf(c, e).includes(q)) hits.push({ net: n, ip: e.ip });
    for (const r of s.remotes) if (r.networkId === n.id && [r.name, ...r.aliases].map((x) => x.toLowerCase()).includes(q)) hits.push({ net: n, ip: r.ip });
  }
  // "name.network": the name on that network only.
  if (!hits.length) {
    const labels = q.split('.');
    for (let split = labels.length - 1; split >= 1 && !hits.length; split--) {
      const host = labels.slice(0, split).join('.');
      const n = userNets.find((x) => x.name.toLowerCase() === labels.slice(split).join('.'));
      if (!n) continue;
      for (const c of running) for (const e of c.endpoints) if (e.networkId === n.id && e.ip && namesOf(c, e).includes(host)) hits.push({ net: n, ip: e.ip });
    }
  }
  if (hits.length) {
    const nets = [...new Set(hits.map((h) => h.net.name))];
    return { name, answer: 'berth', networks: nets, addresses: [...new Set(hits.map((h) => h.ip))], note: `the embedded DNS (127.0.0.11) answers from network${nets.length > 1 ? 's' : ''} ${nets.join(', ')}` };
  }
  const elsewhere = running.filter((c) => c.endpoints.some((e) => namesOf(c, e).includes(q)));
  if (elsewhere.length) return { name, answer: 'none', networks: [], addresses: [], note: `"${name}" exists only on networks ${a.name} is not on` };
  return { name, answer: 'forwarded', networks: [], addresses: [], note: `no container or alias "${name}" on ${a.name}'s networks: the embedded DNS forwards it to the host's DNS servers` };
}

function matchesRule(r: PolicyRule, peer: { ip: string; labels?: Record<string, string>; network: string }, proto: Proto, port: number | undefined): boolean {
  const p = r.peer;
  if (p.kind === 'cidr') {
    if (p.family !== 4 || !inSubnet(peer.ip, p.cidr) || p.except.some((x) => inSubnet(peer.ip, x))) return false;
  } else if (p.kind === 'select') {
    if (!peer.labels || !labelsMeet(p.labels, peer.labels)) return false;
    if (p.network !== undefined && p.network !== peer.network) return false;
  }
  if (!r.ports.length) return true;
  return r.ports.some((pr) => pr.proto === proto && (proto === 'icmp' || pr.from === undefined || (port !== undefined && port >= pr.from && port <= (pr.to ?? pr.from))));
}

interface PolicyVerdict { allowed: boolean; by?: string; text: string }

/** One side's policy for one direction: whether it lets this packet through, and which label decides. */
export function policyDecides(pol: TracePolicy | undefined, d: Direction, peer: { ip: string; labels?: Record<string, string>; network: string }, proto: Proto, port: number | undefined): PolicyVerdict {
  if (!pol || !pol.isolatedBy[d].length) return { allowed: true, text: `not isolated for ${d}` };
  const rules = pol.rules.filter((r) => r.direction === d);
  const hit = rules.find((r) => matchesRule(r, peer, proto, port));
  if (hit) return { allowed: true, by: hit.label, text: `${hit.source === 'network' ? 'network label ' : ''}${hit.label} allows it` };
  const allows = rules.map((r) => `${describePeer(r.peer)} on ${describePorts(r.ports)}`);
  return {
    allowed: false, by: pol.isolatedBy[d].join(', '),
    text: `isolated for ${d} by ${pol.isolatedBy[d].join(', ')}${allows.length ? `, which allows only ${allows.join('; ')}` : ', which allows nothing'}`,
  };
}

/** Where a host port leads: the published mapping that would DNAT it, and why not when none does. */
function publishedAt(s: Snapshot, ip: string, t: TargetSpec): { map?: { m: PortMapping; c: TraceContainer; mapName: string }; loopback?: PortMapping; elsewhere?: PortMapping } {
  const all = s.containers.flatMap((c) => (c.running ? c.published.filter((m) => m.family !== 6).map((m) => ({ m, c })) : []));
  const same = all.filter(({ m }) => m.proto === t.proto && m.hostPort === t.port);
  const any = same.find(({ m }) => !m.hostIp || m.hostIp === '0.0.0.0');
  if (any) return { map: { ...any, mapName: 'pub_any' } };
  const exact = same.find(({ m }) => m.hostIp === ip);
  if (exact) return { map: { ...exact, mapName: 'pub_ip' } };
  const lo = same.find(({ m }) => m.hostIp.startsWith('127.'));
  if (lo) return { loopback: lo.m };
  return { elsewhere: same[0]?.m };
}

function blocked(p: Plan, reason: Reason, expect: Expectation): Plan {
  return { ...p, verdict: 'blocked', reason, expect };
}

function containerByIp(s: Snapshot, ip: string): { c: TraceContainer; e: TraceEndpoint } | undefined {
  for (const c of s.containers) if (c.running) for (const e of c.endpoints) if (e.ip === ip) return { c, e };
  return undefined;
}

function hopInto(s: Snapshot, n: TraceNetwork): string {
  if (n.vxlan) return `VXLAN device ${n.vxlan} (network ${n.name}; its containers are macvlan children of it, and so is the host's link ${n.bridge ?? ''}, the gateway)`;
  if (n.bridge) return `bridge ${n.bridge} (network ${n.name}${n.vxlan ? `, VXLAN device ${n.vxlan}` : ''})`;
  if (n.parent) return `${n.driver} parent ${n.parent} (network ${n.name})`;
  return `network ${n.name} (${n.driver})`;
}

/**
 * The path from container `a` to `spec`, from berth's model alone. `dnsAnswer` is what the probe
 * got for a name the embedded DNS forwards upstream (berth cannot know it beforehand).
 */
export function plan(s: Snapshot, a: TraceContainer, spec: string, dnsAnswer?: string[]): Plan {
  const t = parseTarget(spec);
  const base: Plan = { from: { id: a.id, name: a.name }, target: { ...t, spec }, hops: [], nft: [], verdict: 'reachable', expect: { outcome: 'delivered' } };
  // Docker's status and wording for an exec into a stopped container.
  if (!a.running || !a.netnsPath) throw new ConflictError(`Container ${a.id} is not running`);
  const eps = ordered(a);
  if (!eps.length) throw new BadRequestError(`container ${a.name} has no network endpoint to trace from (network mode none or host)`);
  let p = base;
  let ip: string | undefined;
  const aFirst = netOf(s, eps[0]!.networkId);
  if (t.host.toLowerCase() === 'host') {
    // The host as A sees it: the gateway of A's first network (its default route).
    ip = aFirst?.gateways[0];
    if (!ip) throw new BadRequestError(`${a.name}'s network ${aFirst?.name ?? ''} has no gateway on the host`);
  } else if (isIPv4(t.host)) {
    ip = t.host;
  } else {
    const dns = resolveFrom(s, a, t.host);
    p = { ...p, dns };
    if (dns.answer === 'berth' || dns.answer === 'hosts') ip = dns.addresses[0];
    else if (dns.answer === 'forwarded' && dnsAnswer?.length) ip = dnsAnswer[0];
    if (!ip) {
      const holders = s.containers.filter((c) => c.running && c.endpoints.some((e) => namesOf(c, e).includes(t.host.toLowerCase())));
      const holderNets = [...new Set(holders.flatMap((c) => c.endpoints.map((e) => netOf(s, e.networkId)).filter((n): n is TraceNetwork => !!n)))];
      const userHolderNets = holderNets.filter((n) => !n.isDefault);
      const aUser = eps.map((e) => netOf(s, e.networkId)).filter((n): n is TraceNetwork => !!n && !n.isDefault);
      let reason: Reason;
      if (!aUser.length) {
        const target = holders[0]?.name ?? t.host;
        const net = userHolderNets[0]?.name;
        reason = {
          code: 'default-bridge-no-dns',
          message: `${a.name} is on the default bridge only, which has no name resolution: "${t.host}" does not resolve`,
          fix: net ? `connect ${a.name} to ${target}'s network: docker network connect ${net} ${a.name}`
            : `put both on a user-defined network: docker network create NET && docker network connect NET ${a.name} && docker network connect NET ${target}`,
        };
      } else if (holders.length) {
        const h = holders[0]!;
        const aNet = aUser[0]!.name;
        reason = {
          code: 'name-not-on-shared-network',
          message: `${a.name} and ${h.name} share no network where "${t.host}" resolves: ${h.name} is on ${holderNets.map((n) => n.name).join(', ')}, ${a.name} on ${networkNames(s, a)}`,
          fix: userHolderNets.length
            ? `connect one of them to the other's network: docker network connect ${userHolderNets[0]!.name} ${a.name} (or docker network connect ${aNet} ${h.name})`
            : `connect ${h.name} to ${a.name}'s network (names do not resolve on the default bridge): docker network connect ${aNet} ${h.name}`,
        };
      } else {
        reason = { code: 'unknown-name', message: `"${t.host}" is not a container or alias on ${a.name}'s networks and the host's DNS servers did not resolve it`, fix: `check the name (docker ps), or start the container on one of ${a.name}'s networks: ${networkNames(s, a)}` };
      }
      return blocked(p, reason, { outcome: 'not-resolved' });
    }
  }
  const target = { ...p.target, ip };
  p = { ...p, target };
  const hops: string[] = [];
  const nft: string[] = [];
  // First hop: the endpoint whose subnet holds the target, else the default route (eth0, unless internal).
  const direct = eps.find((e) => netOf(s, e.networkId)?.subnets.some((sub) => inSubnet(ip!, sub)));
  const out = direct ?? eps[0]!;
  const outNet = netOf(s, out.networkId)!;
  const dest = containerByIp(s, ip);
  const isHost = s.hostAddresses.includes(ip) || s.networks.some((n) => n.gateways.includes(ip!));
  hops.push(`${a.name}: namespace ${a.netnsPath.split('/').pop()}, ${out.ifname} ${out.ip} on network ${outNet.name}${direct ? '' : ' (default route)'}`);
  if (!direct && (outNet.internal || !outNet.gateways.length)) {
    return blocked({ ...p, hops, nft, probe: { ip, ...(t.port ? { port: t.port } : {}), proto: t.proto, sourceIp: out.ip } }, {
      code: 'internal',
      message: `network ${outNet.name} is internal: ${a.name} has no route out of it, so ${ip} is unreachable`,
      fix: `connect ${a.name} to a network that is not internal (docker network connect NET ${a.name}), or create ${outNet.name} without --internal`,
    }, { outcome: 'no-route' });
  }
  const pol = (e: TraceEndpoint) => s.policies.find((x) => x.endpointId === e.endpointId);
  // An overlay's endpoints are macvlan children of its VXLAN device: no veth, no bridge, and what
  // they send each other never crosses berthd's namespace.
  const viaBridge = !!outNet.bridge && !outNet.vxlan;
  hops.push(viaBridge ? `veth ${out.ifname} → host end on ${hopInto(s, outNet)}` : outNet.vxlan ? `macvlan child ${out.ifname} → ${hopInto(s, outNet)}` : hopInto(s, outNet));
  const checkPolicy = (to: { c: TraceContainer; e: TraceEndpoint }, port: number | undefined, proto: Proto): Reason | undefined => {
    const toNet = netOf(s, to.e.networkId)!;
    const egress = policyDecides(pol(out), 'egress', { ip: to.e.ip, labels: to.c.labels, network: toNet.name }, proto, port);
    const ingress = policyDecides(pol(to.e), 'ingress', { ip: out.ip, labels: a.labels, network: outNet.name }, proto, port);
    const where = viaBridge ? 'host' : 'namespace';
    nft.push(`inet berth-policy (${where}): ${a.name} egress: ${egress.text}`, `inet berth-policy (${where}): ${to.c.name} ingress: ${ingress.text}`);
    if (!egress.allowed) return { code: 'policy-egress', message: `network policy: ${a.name} is ${egress.text}`, fix: `add a label to ${a.name} allowing it, e.g. berth.policy.egress.${to.c.name}=labels:KEY=VALUE${port ? ` ports:${port}` : ''} matching ${to.c.name}'s labels` };
    if (!ingress.allowed) return { code: 'policy-ingress', message: `network policy: ${to.c.name} is ${ingress.text}; ${a.name} (labels ${Object.entries(a.labels).filter(([k]) => !k.startsWith('berth.policy.')).map(([k, v]) => `${k}=${v}`).join(',') || 'none'}) matches none of it`, fix: `give ${a.name} labels that ${to.c.name}'s berth.policy.ingress rule selects, or add a rule to ${to.c.name} (berth.policy.ingress.NAME=labels:KEY=VALUE${port ? ` ports:${port}` : ''})` };
    return undefined;
  };
  const landing = (to: { c: TraceContainer; e: TraceEndpoint }, port?: number) => ({ containerId: to.c.id, name: to.c.name, ip: to.e.ip, ...(port ? { port } : {}), netnsPath: to.c.netnsPath });
  const probe = { ip, ...(t.port ? { port: t.port } : {}), proto: t.proto, sourceIp: out.ip };

  if (dest && direct && dest.e.networkId === out.networkId) {
    // Same network: bridged (or on the parent's wire), never routed.
    const n = outNet;
    p = { ...p, target: { ...target, kind: 'container', container: dest.c.name } };
    if (viaBridge) nft.push(`ip berth forward (br_netfilter, within ${n.bridge}): iifname vmap @fwd_in → chain of ${n.name}: same bridge, not dropped`);
    const denied = checkPolicy(dest, t.port, t.proto);
    hops.push(`${dest.c.name}: ${dest.e.ifname} ${dest.e.ip} (namespace ${dest.c.netnsPath.split('/').pop()})`);
    const q = { ...p, hops, nft, probe: { ...probe, landsOn: landing(dest, t.port) } };
    if (n.iccOff && dest.c.id !== a.id) {
      // The bridge itself refuses it (its ports' isolated flag), before any nft rule.
      return blocked(q, {
        code: 'icc-disabled',
        message: `network ${n.name} has inter-container communication off (com.docker.network.bridge.enable_icc=false): its containers reach the gateway and published ports, not each other`,
        fix: `publish the port (-p) and use the host's address, or put both on a network without enable_icc=false`,
      }, { outcome: 'dropped' });
    }
    if (denied) return blocked(q, denied, { outcome: 'dropped', dropBy: 'deny' });
    return { ...q, expect: { outcome: 'delivered', at: 'container' } };
  }
  if (!direct || dest) {
    // Leaves A's network through its gateway: routed by the host.
    hops.push(`host (berthd's namespace): routed from ${outNet.bridge ?? outNet.name}`);
  }
  if (dest) {
    const dn = netOf(s, dest.e.networkId)!;
    p = { ...p, target: { ...target, kind: 'container', container: dest.c.name } };
    nft.push(`ip berth forward: iifname vmap @fwd_in → ${outNet.name}'s chain: oifname ${dn.bridge ?? dn.name} is another berth bridge → drop "isolation"`);
    hops.push(`✗ ${hopInto(s, dn)}: not forwarded`);
    return blocked({ ...p, hops, nft, probe: { ...probe, landsOn: landing(dest, t.port) } }, {
      code: 'isolated-networks',
      message: `${a.name} (${networkNames(s, a)}) and ${dest.c.name} (${networkNames(s, dest.c)}) share no network, and berth isolates networks from each other`,
      fix: `connect one of them to the other's network: docker network connect ${dn.name} ${a.name} (or docker network connect ${outNet.name} ${dest.c.name}), or publish the port (-p) and use the host's address`,
    }, { outcome: 'dropped', dropBy: 'isolation' });
  }
  if (isHost) {
    p = { ...p, target: { ...target, kind: 'host' } };
    if (t.proto === 'icmp') {
      hops.push(`host answers for ${ip} itself`);
      return { ...p, hops, nft, probe, expect: { outcome: 'delivered', at: 'host' } };
    }
    const pub = publishedAt(s, ip, t);
    if (pub.map) {
      const { m, c, mapName } = pub.map;
      const to = { c, e: c.endpoints.find((e) => e.ip === m.containerIp)! };
      p = { ...p, target: { ...p.target, container: c.name } };
      nft.push(`ip berth prerouting: fib daddr type local dnat via map @${mapName} element ${m.hostIp ? `${m.hostIp} . ` : ''}${m.proto} . ${m.hostPort} : ${m.containerIp} . ${m.containerPort}`);
      const dn = to.e ? netOf(s, to.e.networkId) : undefined;
      nft.push(`ip berth forward: ct status dnat accept${dn?.bridge === outNet.bridge ? ` (hairpin: masqueraded by ${outNet.name}'s postrouting chain)` : ''}`);
      hops.push(`DNAT ${ip}:${t.port} → ${m.containerIp}:${m.containerPort} (published by ${c.name})`);
      if (dn) hops.push(hopInto(s, dn));
      hops.push(`${c.name}: ${to.e?.ifname ?? '?'} ${m.containerIp}:${m.containerPort}`);
      const q = { ...p, hops, nft, probe: { ...probe, landsOn: landing(to, m.containerPort) } };
      const denied = to.e ? checkPolicy(to, m.containerPort, t.proto) : undefined;
      if (denied) return blocked(q, denied, { outcome: 'dropped', dropBy: 'deny' });
      return { ...q, expect: { outcome: 'delivered', at: 'container' } };
    }
    const refused: Expectation = { outcome: 'delivered', at: 'host' };
    if (pub.loopback) {
      nft.push(`ip berth prerouting: no element for ${t.proto} . ${t.port} in @pub_any or @pub_ip (the loopback-only @pub_lo is consulted only in the output chain, for the host's own connections)`);
      hops.push(`host: nothing forwards ${ip}:${t.port}; the host itself answers`);
      return blocked({ ...p, hops, nft, probe }, {
        code: 'published-loopback-only',
        message: `port ${t.port}/${t.proto} is published on ${pub.loopback.hostIp} only (${pub.loopback.containerIp}:${pub.loopback.containerPort}): only the host itself reaches it, not ${a.name}`,
        fix: `publish it on every address (-p ${t.port}:${pub.loopback.containerPort}) or on ${ip} (-p ${ip}:${t.port}:${pub.loopback.containerPort}), or connect ${a.name} to the container's network`,
      }, refused);
    }
    nft.push(`ip berth prerouting: no element for ${t.proto} . ${t.port} in @pub_any or @pub_ip`);
    hops.push(`host: nothing forwards ${ip}:${t.port}; the host itself answers`);
    return blocked({ ...p, hops, nft, probe }, {
      code: 'not-published',
      message: pub.elsewhere
        ? `port ${t.port}/${t.proto} is published on ${pub.elsewhere.hostIp} only, not on ${ip}`
        : `port ${t.port}/${t.proto} is not published on the host: no container has -p ${t.port}`,
      fix: pub.elsewhere ? `connect to ${pub.elsewhere.hostIp}:${t.port}, or publish on every address (-p ${t.port}:${pub.elsewhere.containerPort})` : `run the container with -p ${t.port}:PORT (its port), or reach it on a network both share`,
    }, refused);
  }
  const remote = s.remotes.find((r) => r.ip === ip);
  if (remote) {
    const rn = netOf(s, remote.networkId);
    p = { ...p, target: { ...target, kind: 'container', container: remote.name, ...(remote.host ? { remoteHost: remote.host } : {}) } };
    if (direct?.networkId !== remote.networkId) {
      return blocked({ ...p, hops, nft, probe }, {
        code: 'isolated-networks',
        message: `${a.name} (${networkNames(s, a)}) is not on ${rn?.name ?? 'the overlay network'}, where ${remote.name} (on ${remote.host ?? 'another host'}) is, and berth isolates networks from each other`,
        fix: `connect ${a.name} to it: docker network connect ${rn?.name ?? 'NET'} ${a.name}`,
      }, { outcome: 'dropped' });
    }
    nft.push(`${a.name} egress: ${policyDecides(pol(out), 'egress', { ip: remote.ip, network: outNet.name }, t.proto, t.port).text}; ${remote.name}'s ingress is enforced on its own host`);
    hops.push(`VXLAN device ${outNet.vxlan ?? '(overlay)'}: encapsulated to ${remote.host ?? 'its host'}`, `${remote.name} ${remote.ip} on ${remote.host ?? 'another host'}`);
    return { ...p, hops, nft, probe, expect: { outcome: 'delivered', at: 'outside' } };
  }
  // Outside: masqueraded out of the host's own route.
  p = { ...p, target: { ...target, kind: 'outside' } };
  nft.push(`ip berth forward: iifname vmap @fwd_in → ${outNet.name}'s chain: not a berth bridge, not dropped`);
  nft.push(`ip berth postrouting: ip saddr vmap @post_src → ${outNet.name}'s chain: masquerade to the host's address`);
  hops.push(`NAT: masqueraded to the host's address, out by the host's own route to ${ip}`);
  return { ...p, hops, nft, probe, expect: { outcome: 'delivered', at: 'outside' } };
}

/** One line of `nft monitor trace`, as the probe collects it. */
export interface TraceLine { netns: string; where?: string; id: string; family: string; table: string; chain: string; kind: 'packet' | 'rule' | 'policy'; text: string; verdict?: string; comment?: string }

/** Parses one `trace id …` line; other lines (ruleset events) give undefined. */
export function parseTraceLine(netns: string, line: string): TraceLine | undefined {
  // A rule's counter values say nothing about this packet: only that the rule counts.
  const m = /^trace id (\S+) (\S+) (\S+) (\S+) (.*)$/.exec(line.trim().replace(/counter packets \d+ bytes \d+/g, 'counter'));
  if (!m) return undefined;
  const [, id, family, table, chain, rest] = m as unknown as [string, string, string, string, string, string];
  if (rest.startsWith('packet: ')) return { netns, id, family, table, chain, kind: 'packet', text: rest.slice(8).trim() };
  if (rest.startsWith('policy ')) return { netns, id, family, table, chain, kind: 'policy', text: rest.trim(), verdict: rest.slice(7).trim() };
  const r = /^(?:rule )?(.*?)\s*\(verdict ([^)]*)\)\s*$/.exec(rest);
  if (!r) return undefined;
  const comment = /comment "([^"]*)"/.exec(r[1]!)?.[1];
  return { netns, id, family, table, chain, kind: 'rule', text: r[1]!, verdict: r[2]!, ...(comment !== undefined ? { comment } : {}) };
}

export interface ProbeResult {
  kind: Proto | 'dns';
  /** connected, refused, timeout, unreachable (TCP); reply, timeout, unreachable (ICMP); sent (UDP); resolved, not-resolved (DNS). */
  result: string;
  output: string;
  addresses?: string[];
  /** The traced packet reached the target container's namespace. */
  arrived: boolean;
  /** The host delivered it to itself (input hook). */
  hostInput: boolean;
  /** It left the host towards a host outside (postrouting, not into a berth bridge). */
  leftHost: boolean;
  lines: TraceLine[];
}

/** Whether the probe saw what the model predicted; the reason when not. */
export function agreement(p: Plan, r: ProbeResult): { agrees: boolean; why?: string } {
  const e = p.expect;
  const drops = r.lines.filter((l) => l.kind === 'rule' && l.verdict === 'drop');
  const got = r.kind === 'dns'
    ? (r.result === 'resolved' ? 'delivered' : 'not-resolved')
    : r.result === 'unreachable' ? 'no-route'
      : r.result === 'connected' || r.result === 'refused' || r.result === 'reply' ? 'delivered'
        : r.result === 'sent' ? (r.arrived || (e.at === 'host' && r.hostInput) || (e.at === 'outside' && r.leftHost) ? 'delivered' : 'dropped')
          : 'dropped';
  if (got !== e.outcome) return { agrees: false, why: `the model expected ${e.outcome}${e.at ? ` at the ${e.at}` : ''}, the probe got ${r.result}` };
  if (e.outcome === 'dropped' && e.dropBy && !drops.some((d) => d.comment === e.dropBy)) {
    return { agrees: false, why: `the model expected the rule "${e.dropBy}" to drop it; the trace shows ${drops.length ? drops.map((d) => `${d.table} ${d.chain}: ${d.text}`).join('; ') : 'no drop by any rule'}` };
  }
  if (e.outcome === 'delivered' && e.at === 'container' && !r.arrived) return { agrees: false, why: 'the model expected the packet in the target container\'s namespace; the trace never saw it there' };
  if (e.outcome === 'delivered' && e.at === 'host' && r.arrived) return { agrees: false, why: 'the model expected the host to answer; the packet reached a container' };
  if (e.outcome === 'delivered' && e.at === 'host' && r.kind !== 'dns' && !r.hostInput) return { agrees: false, why: 'the model expected the host to take the packet (input hook); the trace never saw it there' };
  return { agrees: true };
}
