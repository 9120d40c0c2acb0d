import { BadRequestError, ForbiddenError } from '../util/errors.js';

/**
 * IPv4 address management as Docker does it: subnets from the default local pools in Docker's
 * order, the first host address as gateway, and per-network allocation that skips the network,
 * broadcast, gateway and auxiliary addresses. Pure data: the caller persists it.
 */

export interface Subnet { base: number; prefix: number }

export function parseIPv4(s: string): number {
  const parts = s.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new BadRequestError(`invalid IP address: ${s}`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIPv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(s: string): Subnet {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(s);
  if (!m || Number(m[2]) > 32) throw new BadRequestError(`invalid CIDR address: ${s}`);
  const prefix = Number(m[2]);
  const addr = parseIPv4(m[1]!);
  return { base: addr - (addr % size(prefix)), prefix };
}

export function formatCidr(s: Subnet): string {
  return `${formatIPv4(s.base)}/${s.prefix}`;
}

export function size(prefix: number): number {
  return 2 ** (32 - prefix);
}

export function contains(s: Subnet, ip: number): boolean {
  return ip >= s.base && ip < s.base + size(s.prefix);
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  return a.base < b.base + size(b.prefix) && b.base < a.base + size(a.prefix);
}

/** Docker's default local address pools (libnetwork ipamutils): base and the size carved from it. */
export const DEFAULT_POOLS: Array<{ base: string; size: number }> = [
  { base: '172.17.0.0/16', size: 16 },
  { base: '172.18.0.0/16', size: 16 },
  { base: '172.19.0.0/16', size: 16 },
  { base: '172.20.0.0/14', size: 16 },
  { base: '172.24.0.0/14', size: 16 },
  { base: '172.28.0.0/14', size: 16 },
  { base: '192.168.0.0/16', size: 20 },
];

/** The next default-pool subnet that overlaps none in use (by networks or the host's routes). */
export function nextPoolSubnet(inUse: Subnet[]): Subnet {
  for (const pool of DEFAULT_POOLS) {
    const p = parseCidr(pool.base);
    for (let base = p.base; base < p.base + size(p.prefix); base += size(pool.size)) {
      const candidate = { base, prefix: pool.size };
      if (!inUse.some((u) => overlaps(u, candidate))) return candidate;
    }
  }
  // Docker 20.10's words, then those of later Docker releases, so a search for either finds it.
  throw new ForbiddenError('could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network: all predefined address pools have been fully subnetted');
}

export interface PoolState {
  subnet: string;
  /** Range containers are allocated from (--ip-range); the whole subnet when absent. */
  ipRange?: string;
  gateway: string;
  auxAddresses: Record<string, string>;
  /** Allocated container addresses → endpoint id. */
  allocated: Record<string, string>;
  /** Where the last allocation ended, so freed addresses are not reused at once (as Docker). */
  last?: string;
  /** A remote IPAM's pool: its PoolID and address space (the plugin keeps the allocations). */
  poolId?: string;
  addressSpace?: string;
}

export function newPool(subnetText: string, opts: { gateway?: string; ipRange?: string; aux?: Record<string, string> } = {}): PoolState {
  const subnet = parseCidr(subnetText);
  if (formatCidr(subnet) !== subnetText) {
    throw new BadRequestError(`invalid subnet ${subnetText}: it has host bits set (did you mean ${formatCidr(subnet)}?)`);
  }
  if (subnet.prefix > 30) throw new BadRequestError(`invalid subnet ${subnetText}: too small for containers`);
  const gateway = opts.gateway ?? formatIPv4(subnet.base + 1);
  const gw = parseIPv4(gateway);
  if (!contains(subnet, gw)) throw new BadRequestError(`no matching subnet for gateway ${gateway}`);
  if (opts.ipRange) {
    const r = parseCidr(opts.ipRange);
    if (!contains(subnet, r.base) || !contains(subnet, r.base + size(r.prefix) - 1)) {
      throw new BadRequestError(`invalid ip-range ${opts.ipRange}: not inside subnet ${subnetText}`);
    }
  }
  for (const [name, ip] of Object.entries(opts.aux ?? {})) {
    if (!contains(subnet, parseIPv4(ip))) throw new BadRequestError(`no matching subnet for aux-address ${name}=${ip}`);
  }
  return { subnet: subnetText, ipRange: opts.ipRange, gateway, auxAddresses: opts.aux ?? {}, allocated: {} };
}

function reserved(p: PoolState): Set<number> {
  const s = parseCidr(p.subnet);
  const out = new Set<number>([s.base, s.base + size(s.prefix) - 1, parseIPv4(p.gateway)]);
  for (const ip of Object.values(p.auxAddresses)) out.add(parseIPv4(ip));
  return out;
}

/** Allocates an address for an endpoint: a requested one, or the next free one after the last. */
export function allocate(p: PoolState, endpoint: string, requested?: string): string {
  const subnet = parseCidr(p.subnet);
  const res = reserved(p);
  if (requested) {
    const ip = parseIPv4(requested);
    if (!contains(subnet, ip)) throw new BadRequestError(`no available IPv4 address for ${requested}: it is not in subnet ${p.subnet}`);
    if (res.has(ip) || p.allocated[requested]) throw new ForbiddenError(`Address already in use`);
    p.allocated[requested] = endpoint;
    return requested;
  }
  const range = p.ipRange ? parseCidr(p.ipRange) : subnet;
  const first = range.base;
  const count = size(range.prefix);
  const start = p.last ? parseIPv4(p.last) + 1 - first : 0;
  for (let i = 0; i < count; i++) {
    const ip = first + ((start + i) % count);
    if (res.has(ip) || !contains(subnet, ip)) continue;
    const text = formatIPv4(ip);
    if (p.allocated[text]) continue;
    p.allocated[text] = endpoint;
    p.last = text;
    return text;
  }
  throw new ForbiddenError(`no available IPv4 addresses on this network's address pools: ${p.subnet}`);
}

export function release(p: PoolState, ip: string): void {
  delete p.allocated[ip];
}
