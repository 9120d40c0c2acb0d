import { BadRequestError, ForbiddenError, NotFoundError } from '../util/errors.js';
import { allocate, contains, formatCidr, newPool, nextPoolSubnet, overlaps, parseCidr, parseIPv4, release, type PoolState, type Subnet } from './ipam.js';
import { allocate6, canonicalIPv6, contains6, formatCidr6, isIPv6, newPool6, nextPool6Subnet, overlaps6, parseCidr6, parseIPv6, release6, type Pool6State, type Subnet6 } from './ipam6.js';
import type { NetworkRecord } from './types.js';

/** IPAM.Config entries as a create request gives them. */
export interface PoolRequest {
  subnet?: string;
  gateway?: string;
  ipRange?: string;
  aux?: Record<string, string>;
}

/** The subnets already taken, which a new network's pools must not overlap. */
export interface UsedSubnets { v4: Subnet[]; v6: Subnet6[] }

/** What an endpoint got: its addresses with the subnet's prefix length and gateway. */
export interface AddressLease {
  ip: string;
  prefix: number;
  gateway: string;
  ip6?: string;
  prefix6?: number;
  gateway6?: string;
  /** The MAC the endpoint must have: one an IPAM that requires MACs was given with the request. */
  mac?: string;
}

/**
 * IPAM behind one front for IPv4 and IPv6, after libnetwork's ipamapi: pools for a network at
 * create time, addresses for an endpoint at join time. The state sits in the network's record, so
 * a record store shared by hosts shares the allocations with it. A remote IPAM plugin is one more
 * implementation, registered under its name; its answers come later, hence the promises.
 */
export interface Ipam {
  readonly name: string;
  /** Checks the requested pools, or picks free ones; throws Docker's errors and allocates nothing on failure. */
  requestPools(req: { v4?: PoolRequest; v6?: PoolRequest; enableIPv6: boolean; options?: Record<string, string> }, used: UsedSubnets): PoolsGiven | Promise<PoolsGiven>;
  /** Gives back what requestPools took (a remote IPAM's pools; the default IPAM's live in the record alone). */
  releasePools?(n: NetworkRecord): Promise<void>;
  /** Gives an endpoint its address(es): the requested ones, or the next free ones. */
  requestAddress(n: NetworkRecord, endpointId: string, want: { ip?: string; ip6?: string; mac?: string }): AddressLease | Promise<AddressLease>;
  /** Gives addresses back; with `owner`, only those still held by that endpoint (a crash's leftovers may have been reused). */
  releaseAddress(n: NetworkRecord, lease: { ip?: string; ip6?: string }, owner?: string): void | Promise<void>;
}

export interface PoolsGiven { pools: PoolState[]; pools6?: Pool6State[] }

/** Whether a subnet (either family, CIDR text) contains an address. */
export function subnetContains(subnet: string, ip: string): boolean {
  try {
    if (isIPv6(subnet)) return contains6(parseCidr6(subnet), parseIPv6(ip));
    return contains(parseCidr(subnet), parseIPv4(ip));
  } catch {
    return false;
  }
}

/** Docker's built-in IPAM: the default address pools, one subnet per family and network. */
export class DefaultIpam implements Ipam {
  readonly name = 'default';

  requestPools(req: { v4?: PoolRequest; v6?: PoolRequest; enableIPv6: boolean }, used: UsedSubnets): { pools: PoolState[]; pools6?: Pool6State[] } {
    let pool: PoolState;
    if (req.v4?.subnet) {
      pool = newPool(req.v4.subnet, { gateway: req.v4.gateway, ipRange: req.v4.ipRange, aux: req.v4.aux });
      const subnet = parseCidr(pool.subnet);
      if (used.v4.some((u) => overlaps(u, subnet))) throw new ForbiddenError('Pool overlaps with other one on this address space');
    } else {
      if (req.v4?.gateway || req.v4?.ipRange) throw new BadRequestError('a gateway or ip-range needs a subnet');
      pool = newPool(formatCidr(nextPoolSubnet(used.v4)));
    }
    if (!req.enableIPv6) return { pools: [pool] };
    let pool6: Pool6State;
    if (req.v6?.subnet) {
      pool6 = newPool6(req.v6.subnet, req.v6.gateway);
      if (used.v6.some((u) => overlaps6(u, parseCidr6(pool6.subnet)))) throw new ForbiddenError('Pool overlaps with other one on this address space');
    } else {
      pool6 = newPool6(formatCidr6(nextPool6Subnet(used.v6)));
    }
    return { pools: [pool], pools6: [pool6] };
  }

  requestAddress(n: NetworkRecord, endpointId: string, want: { ip?: string; ip6?: string }): AddressLease {
    const pool = n.pools?.[0];
    if (!pool) throw new NotFoundError(`network ${n.Name} has no address pool`);
    const pool6 = n.pools6?.[0];
    const ip = allocate(pool, endpointId, want.ip);
    if (!pool6) return { ip, prefix: parseCidr(pool.subnet).prefix, gateway: pool.gateway };
    try {
      const ip6 = allocate6(pool6, endpointId, want.ip6);
      return { ip, prefix: parseCidr(pool.subnet).prefix, gateway: pool.gateway, ip6, prefix6: parseCidr6(pool6.subnet).prefix, gateway6: pool6.gateway };
    } catch (e) {
      release(pool, ip);
      throw e;
    }
  }

  releaseAddress(n: NetworkRecord, lease: { ip?: string; ip6?: string }, owner?: string): void {
    const pool = n.pools?.[0];
    const pool6 = n.pools6?.[0];
    if (lease.ip && pool && (!owner || pool.allocated[lease.ip] === owner)) release(pool, lease.ip);
    if (lease.ip6 && pool6 && (!owner || pool6.allocated[canonicalIPv6(lease.ip6)] === owner)) release6(pool6, lease.ip6);
  }
}
