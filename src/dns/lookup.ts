/**
 * Name lookup for the embedded DNS server, as pure data: which addresses a name has for one
 * asking container. Mirrors Docker's rules: only networks the asker shares with the target count;
 * "a.b.c" is tried as a name, then as "a.b" on network "c", then as "a" on network "b.c";
 * matching ignores case.
 */
import { ip6FromArpa } from '../util/ipv6.js';

export interface Endpoint {
  containerId: string;
  containerName: string;
  ip: string;
  /** The endpoint's IPv6 address on a dual-stack network. */
  ip6?: string;
  /** Names that resolve to this endpoint on its network: container name, aliases, short id. */
  names: string[];
}

export interface NetworkView { id: string; name: string; internal: boolean; endpoints: Endpoint[] }

/**
 * `links` are the asker's own `--link` aliases on user-defined networks: Docker answers them from
 * the embedded DNS for the linking container only, with the target's addresses on shared networks.
 */
export interface Asker { containerId: string; networks: NetworkView[]; links?: Map<string, string[]> }

export type Answer =
  | { kind: 'addresses'; ips: string[]; type: 'A' | 'AAAA' }
  | { kind: 'nodata' }
  | { kind: 'ptr'; name: string }
  | { kind: 'unknown' };

function endpointsNamed(net: NetworkView, name: string): Endpoint[] {
  return net.endpoints.filter((e) => e.names.some((n) => n.toLowerCase() === name));
}

/**
 * Addresses of one family for `qname` on the asker's networks, in Docker's order of attempts:
 * undefined when no container has the name, an empty list when one has it but no such address.
 */
export function resolveName(asker: Asker, qname: string, family: 4 | 6 = 4): string[] | undefined {
  const name = qname.toLowerCase().replace(/\.$/, '');
  const collect = (nets: NetworkView[], n: string) => {
    const found = nets.flatMap((net) => endpointsNamed(net, n));
    if (!found.length) return undefined;
    return [...new Set(found.map((e) => (family === 4 ? e.ip : e.ip6)).filter((ip): ip is string => !!ip))];
  };
  const linked = asker.links?.get(name);
  if (linked?.length) return family === 4 ? [...linked] : [];
  const direct = collect(asker.networks, name);
  if (direct) return direct;
  const labels = name.split('.');
  for (let split = labels.length - 1; split >= 1; split--) {
    const host = labels.slice(0, split).join('.');
    const netName = labels.slice(split).join('.');
    const nets = asker.networks.filter((n) => n.name.toLowerCase() === netName);
    if (nets.length) {
      const hit = collect(nets, host);
      if (hit) return hit;
    }
  }
  return undefined;
}

/** Reverse lookup of a container address on a shared network: "name.network". */
export function resolvePtr(asker: Asker, qname: string): string | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\.in-addr\.arpa\.?$/i.exec(qname);
  const ip = m ? [m[4], m[3], m[2], m[1]].join('.') : ip6FromArpa(qname);
  if (!ip) return undefined;
  for (const net of asker.networks) {
    const e = net.endpoints.find((x) => x.ip === ip || x.ip6 === ip);
    if (e) return `${e.containerName}.${net.name}`;
  }
  return undefined;
}

/** Fisher-Yates, so shared aliases are answered in a fresh order each time (round-robin). */
export function shuffled<T>(list: T[]): T[] {
  const a = [...list];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export function answer(asker: Asker, qname: string, qtype: string): Answer {
  if (qtype === 'PTR') {
    const ptr = resolvePtr(asker, qname);
    return ptr ? { kind: 'ptr', name: ptr } : { kind: 'unknown' };
  }
  const family = qtype === 'AAAA' ? 6 : 4;
  const ips = resolveName(asker, qname, family);
  if (!ips) return { kind: 'unknown' };
  if ((qtype === 'A' || qtype === 'AAAA' || qtype === 'ANY') && ips.length) return { kind: 'addresses', ips: shuffled(ips), type: family === 6 ? 'AAAA' : 'A' };
  // The name exists but has no record of this type (AAAA without IPv6, MX, …): NOERROR, no data.
  return { kind: 'nodata' };
}
