import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BadRequestError, ForbiddenError } from '../util/errors.js';
import { formatIPv6, isIPv6, parseIPv6 } from '../util/ipv6.js';

export { formatIPv6, isIPv6, parseIPv6 };

/**
 * IPv6 address management for dual-stack networks. Addresses are 128-bit BigInts; a network
 * gets one IPv6 subnet (given, or a /64 from a unique-local /48 derived from the machine id as
 * Docker does), the first address as gateway, and addresses handed out in order after the last
 * one, as for IPv4. Pure data: the caller persists it.
 */

const MAX = (1n << 128n) - 1n;

export interface Subnet6 { base: bigint; prefix: number }

export function parseCidr6(s: string): Subnet6 {
  const m = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(s);
  if (!m || Number(m[2]) > 128) throw new BadRequestError(`invalid CIDR address: ${s}`);
  const prefix = Number(m[2]);
  const addr = parseIPv6(m[1]!);
  return { base: addr & ~hostMask(prefix) & MAX, prefix };
}

function hostMask(prefix: number): bigint {
  return (1n << BigInt(128 - prefix)) - 1n;
}

export function formatCidr6(s: Subnet6): string {
  return `${formatIPv6(s.base)}/${s.prefix}`;
}

export function contains6(s: Subnet6, ip: bigint): boolean {
  return (ip & ~hostMask(s.prefix) & MAX) === s.base;
}

export function overlaps6(a: Subnet6, b: Subnet6): boolean {
  const p = Math.min(a.prefix, b.prefix);
  const mask = ~hostMask(p) & MAX;
  return (a.base & mask) === (b.base & mask);
}

/** Canonical text for comparisons (what users type varies: leading zeros, case, "::"). */
export function canonicalIPv6(s: string): string {
  return formatIPv6(parseIPv6(s));
}

/**
 * The unique-local /48 Docker derives for automatic IPv6 subnets: fd00::/8 plus 40 bits of a hash
 * of the host's identity, so two machines' container networks are unlikely to collide.
 */
export function ulaBase(machineId = readMachineId()): Subnet6 {
  const h = createHash('sha256').update(machineId).digest();
  let n = 0xfdn;
  for (let i = 0; i < 5; i++) n = (n << 8n) | BigInt(h[i]!);
  return { base: n << 80n, prefix: 48 };
}

function readMachineId(): string {
  for (const f of ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    try {
      const id = readFileSync(f, 'utf8').trim();
      if (id) return id;
    } catch {
      // try the next one
    }
  }
  return 'berth';
}

/** The next /64 of the unique-local /48 that overlaps none in use. */
export function nextPool6Subnet(inUse: Subnet6[], base = ulaBase()): Subnet6 {
  for (let i = 0n; i < 1n << 16n; i++) {
    const candidate = { base: base.base | (i << 64n), prefix: 64 };
    if (!inUse.some((u) => overlaps6(u, candidate))) return candidate;
  }
  throw new ForbiddenError('could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network');
}

export interface Pool6State {
  subnet: string;
  gateway: string;
  allocated: Record<string, string>;
  last?: string;
  /** As PoolState's: a remote IPAM's pool. */
  poolId?: string;
  addressSpace?: string;
}

export function newPool6(subnetText: string, gateway?: string): Pool6State {
  const subnet = parseCidr6(subnetText);
  if (subnet.base !== parseIPv6(subnetText.split('/')[0]!)) {
    throw new BadRequestError(`invalid subnet ${subnetText}: it has host bits set (did you mean ${formatCidr6(subnet)}?)`);
  }
  if (subnet.prefix > 126) throw new BadRequestError(`invalid subnet ${subnetText}: too small for containers`);
  const gw = gateway ? parseIPv6(gateway) : subnet.base + 1n;
  if (!contains6(subnet, gw)) throw new BadRequestError(`no matching subnet for gateway ${gateway}`);
  return { subnet: formatCidr6(subnet), gateway: formatIPv6(gw), allocated: {} };
}

/** A requested address, or the next free one after the last handed out (the subnet router anycast and gateway excluded). */
export function allocate6(p: Pool6State, endpoint: string, requested?: string): string {
  const subnet = parseCidr6(p.subnet);
  const reserved = new Set([subnet.base, parseIPv6(p.gateway)]);
  if (requested) {
    const ip = parseIPv6(requested);
    const text = formatIPv6(ip);
    if (!contains6(subnet, ip)) throw new BadRequestError(`no available IPv6 address for ${requested}: it is not in subnet ${p.subnet}`);
    if (reserved.has(ip) || p.allocated[text]) throw new ForbiddenError('Address already in use');
    p.allocated[text] = endpoint;
    return text;
  }
  const count = 1n << BigInt(128 - subnet.prefix);
  const start = p.last ? parseIPv6(p.last) + 1n - subnet.base : 1n;
  // Scanning a /64 to the end is not an option: give up after as many tries as there are addresses in use.
  const tries = BigInt(Object.keys(p.allocated).length + 4);
  for (let i = 0n; i < tries && i < count; i++) {
    const ip = subnet.base + ((start + i) % count);
    const text = formatIPv6(ip);
    if (reserved.has(ip) || p.allocated[text]) continue;
    p.allocated[text] = endpoint;
    p.last = text;
    return text;
  }
  throw new ForbiddenError(`no available IPv6 addresses on this network's address pools: ${p.subnet}`);
}

export function release6(p: Pool6State, ip: string): void {
  delete p.allocated[canonicalIPv6(ip)];
}
