import { randomBytes } from 'node:crypto';
import { IPAM_DRIVER, pluginError, type PluginManager } from '../plugins/manager.js';
import { NotFoundError } from '../util/errors.js';
import type { PoolState } from './ipam.js';
import type { Pool6State } from './ipam6.js';
import type { AddressLease, Ipam, PoolRequest, PoolsGiven } from './ipamdriver.js';
import type { NetworkRecord } from './types.js';

/** libnetwork's labels in IPAM calls (netlabel, ipamapi). */
const GATEWAY_LABEL = 'com.docker.network.gateway';
const REQUEST_ADDRESS_TYPE = 'RequestAddressType';

const MAC_LABEL = 'com.docker.network.endpoint.macaddress';

type Pool = PoolState | Pool6State;

/** A random locally administered unicast MAC (libnetwork's GenerateRandomMAC). */
function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

function splitCidr(cidr: string, what: string, plugin: string): { ip: string; prefix: number } {
  const m = /^([0-9a-fA-F.:]+)\/(\d{1,3})$/.exec(cidr ?? '');
  if (!m) throw pluginError(plugin, new Error(`${what}: not an address with a prefix: "${cidr}"`));
  return { ip: m[1]!, prefix: Number(m[2]) };
}

/**
 * An IPAM that is a Docker plugin (libnetwork's remote IPAM): the pools and addresses are the
 * plugin's; the record keeps the PoolIDs and which endpoint holds which address, so a release
 * after a restart names the same pool and address. Calls in libnetwork's order: the default
 * address space, the pool, the gateway (unless the pool's data names one), auxiliary addresses.
 */
export class RemoteIpam implements Ipam {
  constructor(readonly name: string, private readonly plugins: PluginManager) {}

  /** Finds and activates the plugin; Docker's 404 when it is nowhere. */
  async activate(): Promise<void> {
    await this.plugins.get(this.name, IPAM_DRIVER);
  }

  private async call<T extends { Err?: string }>(method: string, body: unknown): Promise<T> {
    const p = await this.plugins.get(this.name, IPAM_DRIVER);
    try {
      const r = (await p.client.call<T>(`${IPAM_DRIVER}.${method}`, body)) ?? ({} as T);
      if (typeof r.Err === 'string' && r.Err) throw new Error(`remote: ${r.Err}`);
      return r;
    } catch (e) {
      throw pluginError(this.name, e);
    }
  }

  async requestPools(req: { v4?: PoolRequest; v6?: PoolRequest; enableIPv6: boolean; options?: Record<string, string> }): Promise<PoolsGiven> {
    const spaces = await this.call<{ LocalDefaultAddressSpace?: string; GlobalDefaultAddressSpace?: string; Err?: string }>('GetDefaultAddressSpaces', undefined);
    const space = spaces.LocalDefaultAddressSpace ?? '';
    const got: Pool[] = [];
    try {
      const v4 = await this.requestPool(space, req.v4, req.options ?? {}, false, got);
      if (!req.enableIPv6) return { pools: [v4 as PoolState] };
      const v6 = await this.requestPool(space, req.v6, req.options ?? {}, true, got);
      return { pools: [v4 as PoolState], pools6: [v6 as Pool6State] };
    } catch (e) {
      for (const p of got.reverse()) await this.releasePool(p).catch((u: Error) => console.error(`berthd: ${u.message}`));
      throw e;
    }
  }

  private async requestPool(space: string, req: PoolRequest | undefined, options: Record<string, string>, v6: boolean, got: Pool[]): Promise<Pool> {
    const r = await this.call<{ PoolID?: string; Pool?: string; Data?: Record<string, string> | null; Err?: string }>('RequestPool', {
      AddressSpace: space, Pool: req?.subnet ?? '', SubPool: req?.ipRange ?? '', Options: options, V6: v6,
    });
    if (!r.PoolID || !r.Pool) throw pluginError(this.name, new Error('RequestPool: the answer has no PoolID or Pool'));
    splitCidr(r.Pool, 'RequestPool', this.name);
    const pool: PoolState = { subnet: r.Pool, gateway: '', auxAddresses: {}, allocated: {}, poolId: r.PoolID, addressSpace: space, ...(req?.ipRange ? { ipRange: req.ipRange } : {}) };
    got.push(pool);
    const fromData = r.Data?.[GATEWAY_LABEL];
    if (fromData && !req?.gateway) {
      pool.gateway = splitCidr(fromData, 'RequestPool gateway', this.name).ip;
    } else {
      const gw = await this.call<{ Address?: string; Err?: string }>('RequestAddress', { PoolID: r.PoolID, Address: req?.gateway ?? '', Options: { [REQUEST_ADDRESS_TYPE]: GATEWAY_LABEL } });
      pool.gateway = splitCidr(gw.Address ?? '', 'RequestAddress (gateway)', this.name).ip;
    }
    for (const [k, ip] of Object.entries(req?.aux ?? {})) {
      await this.call('RequestAddress', { PoolID: r.PoolID, Address: ip, Options: null });
      pool.auxAddresses[k] = ip;
    }
    return v6 ? { subnet: pool.subnet, gateway: pool.gateway, allocated: {}, poolId: pool.poolId!, addressSpace: space } : pool;
  }

  /** The gateway and auxiliary addresses, then the pool (libnetwork's ipamRelease). */
  private async releasePool(p: Pool): Promise<void> {
    if (!p.poolId) return;
    if (p.gateway) await this.call('ReleaseAddress', { PoolID: p.poolId, Address: p.gateway }).catch((e: Error) => console.error(`berthd: ${e.message}`));
    for (const ip of Object.values('auxAddresses' in p ? p.auxAddresses : {})) {
      await this.call('ReleaseAddress', { PoolID: p.poolId, Address: ip }).catch((e: Error) => console.error(`berthd: ${e.message}`));
    }
    await this.call('ReleasePool', { PoolID: p.poolId });
  }

  async releasePools(n: NetworkRecord): Promise<void> {
    for (const p of [...(n.pools ?? []), ...(n.pools6 ?? [])]) await this.releasePool(p);
  }

  async requestAddress(n: NetworkRecord, endpointId: string, want: { ip?: string; ip6?: string; mac?: string }): Promise<AddressLease> {
    const pool = n.pools?.[0];
    if (!pool?.poolId) throw new NotFoundError(`network ${n.Name} has no address pool`);
    // An IPAM that requires MACs is told the endpoint's with each request; libnetwork picks a random one when the user gave none.
    const requiresMac = !!(await this.plugins.get(this.name, IPAM_DRIVER)).ipam?.RequiresMACAddress;
    const mac = requiresMac ? want.mac ?? randomMac() : undefined;
    const options = mac ? { [MAC_LABEL]: mac } : null;
    const a = await this.address(pool, endpointId, want.ip, options);
    const pool6 = n.pools6?.[0];
    if (!pool6?.poolId) return { ip: a.ip, prefix: a.prefix, gateway: pool.gateway, ...(mac ? { mac } : {}) };
    try {
      const a6 = await this.address(pool6, endpointId, want.ip6, options);
      return { ip: a.ip, prefix: a.prefix, gateway: pool.gateway, ip6: a6.ip, prefix6: a6.prefix, gateway6: pool6.gateway, ...(mac ? { mac } : {}) };
    } catch (e) {
      await this.releaseAddress(n, { ip: a.ip }, endpointId).catch(() => undefined);
      throw e;
    }
  }

  private async address(pool: Pool, endpointId: string, want: string | undefined, options: Record<string, string> | null): Promise<{ ip: string; prefix: number }> {
    const r = await this.call<{ Address?: string; Err?: string }>('RequestAddress', { PoolID: pool.poolId, Address: want ?? '', Options: options });
    const a = splitCidr(r.Address ?? '', 'RequestAddress', this.name);
    pool.allocated[a.ip] = endpointId;
    return a;
  }

  async releaseAddress(n: NetworkRecord, lease: { ip?: string; ip6?: string }, owner?: string): Promise<void> {
    const each: Array<[Pool | undefined, string | undefined]> = [[n.pools?.[0], lease.ip], [n.pools6?.[0], lease.ip6]];
    for (const [pool, ip] of each) {
      if (!pool?.poolId || !ip) continue;
      if (owner && pool.allocated[ip] !== undefined && pool.allocated[ip] !== owner) continue;
      delete pool.allocated[ip];
      // As libnetwork: a release the plugin refuses is logged, the endpoint goes anyway.
      await this.call('ReleaseAddress', { PoolID: pool.poolId, Address: ip }).catch((e: Error) => console.error(`berthd: ${e.message}`));
    }
  }
}
