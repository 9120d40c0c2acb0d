import { ConflictError, BadRequestError, ForbiddenError, NotFoundError } from '../util/errors.js';
import { newId } from '../util/ids.js';
import type { CreateContext } from './driver.js';
import { formatCidr, newPool, parseCidr } from './ipam.js';
import { formatCidr6, isIPv6, parseCidr6 } from './ipam6.js';
import type { PoolRequest, UsedSubnets } from './ipamdriver.js';
import type { NetworkRegistry } from './registry.js';
import type { NetworkRecord } from './types.js';

/**
 * `POST /networks/create`, up to the record: the body checked as Docker checks it, the driver's
 * options, IPAM pools. Nothing is written and nothing made in the kernel here, so a refusal leaves
 * nothing behind.
 */
export async function newNetworkRecord(registry: NetworkRegistry, body: Record<string, unknown>, o: { mtuDefault: number; used: (avoidRoutes: boolean) => Promise<UsedSubnets> }): Promise<NetworkRecord> {
  const name = body.Name;
  // libnetwork refuses only a blank name: the name is a label, never a kernel object's name.
  if (typeof name !== 'string' || name.trim() === '') throw new BadRequestError('network name must be given');
  // API <= 1.43: only CheckDuplicate true refuses a name in use; otherwise a second network of that
  // name is made (the caller warns), and the name then resolves to neither.
  if (body.CheckDuplicate === true && registry.byName(name)) throw new ConflictError(`network with name ${name} already exists`);
  const driverName = (body.Driver as string | undefined) || 'bridge';
  const driver = await registry.loadDriver(driverName);
  if (!driver) {
    if (driverName === 'host' || driverName === 'null') throw new ForbiddenError(`only one instance of "${driverName}" network is allowed`);
    throw new NotFoundError(`plugin "${driverName}" not found`);
  }
  const enableIPv6 = !!body.EnableIPv6;
  if (enableIPv6 && !driver.ipv6) throw new BadRequestError(`berth's ${driverName} driver has no IPv6 yet`);
  const options = checkStringMap(body.Options, 'Options');
  const labels = checkStringMap(body.Labels, 'Labels');
  const ipamBody = (body.IPAM ?? {}) as { Driver?: string; Config?: Array<Record<string, unknown>>; Options?: Record<string, string> };
  const ipam = await registry.loadIpam(ipamBody.Driver || 'default');
  if (!ipam) throw new NotFoundError(`plugin "${ipamBody.Driver}" not found`);
  const configs = Array.isArray(ipamBody.Config) ? ipamBody.Config : [];
  const family6 = (c: Record<string, unknown>) => isIPv6(String(c.Subnet ?? c.Gateway ?? ''));
  const configs6 = configs.filter(family6);
  const configs4 = configs.filter((c) => !family6(c));
  if (configs4.length > 1) throw new BadRequestError(`berth ${driverName} networks take one IPv4 subnet`);
  if (configs6.length > 1) throw new BadRequestError(`berth ${driverName} networks take one IPv6 subnet`);
  // Docker 20.10 records an IPv6 subnet given without EnableIPv6 and gives containers IPv4 only.
  const unused6 = !enableIPv6 ? configs6 : [];
  const v4 = poolRequest(configs4[0]);
  const v6 = enableIPv6 ? poolRequest(configs6[0]) : undefined;
  if (v4 && !v4.subnet && (v4.gateway || v4.ipRange)) throw new BadRequestError('a gateway or ip-range needs a subnet');
  // A subnet with host bits set is recorded as given and used as its network (Docker's IPAM does so).
  const given4 = v4?.subnet;
  const given6 = v6?.subnet;
  if (v4?.subnet) v4.subnet = formatCidr(parseCidr(v4.subnet));
  if (v6?.subnet) v6.subnet = formatCidr6(parseCidr6(v6.subnet));
  for (const c of unused6) if (c.Subnet) parseCidr6(String(c.Subnet));
  const n: NetworkRecord = {
    Name: name, Id: newId(), Created: new Date().toISOString(), Scope: 'local', Driver: driver.name, EnableIPv6: false,
    IPAM: { Driver: ipam.name, Options: ipamBody.Options ?? {}, Config: [] },
    Internal: !!body.Internal, Attachable: !!body.Attachable, Ingress: false, ConfigFrom: { Network: '' }, ConfigOnly: false,
    Options: options, Labels: labels,
  };
  // The driver speaks first, so its own refusals (a parent shared with an overlapping subnet)
  // come before the generic overlap error.
  const ctx: CreateContext = { others: registry.list(), mtuDefault: o.mtuDefault, subnetGiven: !!v4?.subnet };
  // The pool as the user gave it, for the driver's checks: no IPAM is asked twice (a plugin's pools are real).
  if (v4?.subnet) n.pools = [newPool(v4.subnet, { ...(v4.gateway ? { gateway: v4.gateway } : {}), ...(v4.ipRange ? { ipRange: v4.ipRange } : {}), ...(v4.aux ? { aux: v4.aux } : {}) })];
  if (driver.ownsAddresses) {
    // The driver's backend assigns addresses (a CNI list's IPAM plugin): berth's IPAM takes no part.
    if (v4 || v6 || configs6.length || (ipamBody.Driver && ipamBody.Driver !== 'default')) {
      throw new BadRequestError(`${driverName} networks take their addresses from the driver's own IPAM: --subnet, --gateway, --ip-range and --ipam-driver do not apply`);
    }
    await driver.configure(n, ctx);
    return n;
  }
  await driver.configure(n, ctx);
  // A macvlan subnet is normally the parent's own LAN, which the host routes: only the other
  // networks count for it.
  const pools = await ipam.requestPools({ ...(v4 ? { v4 } : {}), ...(v6 ? { v6 } : {}), enableIPv6, options: n.IPAM.Options ?? {} }, await o.used(driver.avoidsRoutedSubnets));
  n.pools = pools.pools;
  const pool = pools.pools[0]!;
  n.IPAM.Config = [{ Subnet: given4 ?? pool.subnet, Gateway: pool.gateway, ...(pool.ipRange ? { IPRange: pool.ipRange } : {}), ...(Object.keys(pool.auxAddresses).length ? { AuxiliaryAddresses: pool.auxAddresses } : {}) }];
  if (pools.pools6) {
    n.pools6 = pools.pools6;
    n.EnableIPv6 = true;
    n.IPAM.Config.push({ Subnet: given6 ?? pools.pools6[0]!.subnet, Gateway: pools.pools6[0]!.gateway });
  }
  for (const c of unused6) n.IPAM.Config.push({ Subnet: String(c.Subnet ?? ''), ...(c.Gateway ? { Gateway: String(c.Gateway) } : {}) });
  return n;
}

function poolRequest(c: Record<string, unknown> | undefined): PoolRequest | undefined {
  if (!c) return undefined;
  return {
    ...(c.Subnet ? { subnet: String(c.Subnet) } : {}), ...(c.Gateway ? { gateway: String(c.Gateway) } : {}),
    ...(c.IPRange ? { ipRange: String(c.IPRange) } : {}),
    ...(c.AuxiliaryAddresses ? { aux: c.AuxiliaryAddresses as Record<string, string> } : {}),
  };
}

function checkStringMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v) || Object.values(v as object).some((x) => typeof x !== 'string')) {
    throw new BadRequestError(`invalid type for field ${field}: expected object of strings`);
  }
  return { ...(v as Record<string, string>) };
}

/**
 * The subnets networks take, for the picker and the overlap check: a network's pools, or, for one
 * whose addresses another IPAM hands out (a CNI list's plugin), the subnets its record lists.
 */
export function subnetsOf(networks: Iterable<NetworkRecord>): UsedSubnets {
  const used: UsedSubnets = { v4: [], v6: [] };
  for (const n of networks) {
    if (n.pools?.length || n.pools6?.length) {
      used.v4.push(...(n.pools ?? []).map((p) => parseCidr(p.subnet)));
      used.v6.push(...(n.pools6 ?? []).map((p) => parseCidr6(p.subnet)));
      continue;
    }
    for (const c of n.IPAM.Config ?? []) {
      if (!c.Subnet) continue;
      if (isIPv6(c.Subnet.split('/')[0]!)) used.v6.push(parseCidr6(c.Subnet));
      else used.v4.push(parseCidr(c.Subnet));
    }
  }
  return used;
}
