import { promises as fs } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiError } from '../util/errors.js';
import { createVethInside, hostIpDeletions, ipBatch, ipJson, linkExists } from './netns.js';
import { setSysctl } from './sysctl.js';

/**
 * Linux bridges and veth pairs: a bridge per network in berthd's namespace, and a veth pair per
 * endpoint with one end in the container's namespace (the bridge and overlay drivers' kernel
 * side). Each call is one or two `ip -batch` runs, whatever the number of commands.
 */

export interface BridgeSpec {
  name: string; gatewayCidr: string; mtu: number; mac: string; gateway6Cidr?: string;
  /**
   * The bridge existed before berth (a user's `-o com.docker.network.bridge.name=`): berth only
   * adds its gateway addresses and never deletes, renames or strips anything of it.
   */
  adopted?: boolean;
  /** An address the host itself holds on the bridge besides the gateway (an overlay's ingress endpoint, as `ADDR/32`). */
  hostCidr?: string;
}

/** What a link of berthd's namespace is: undefined when absent, else its kind ('' for a physical link or lo). */
export async function linkKind(name: string): Promise<string | undefined> {
  try {
    const info = await ipJson<Array<{ linkinfo?: { info_kind?: string } }>>(undefined, ['-d', 'link', 'show', 'dev', name]);
    return info[0] ? info[0].linkinfo?.info_kind ?? '' : undefined;
  } catch {
    return undefined;
  }
}

/** Docker's refusal (libnetwork's bridge driver, a plain error there, hence 500). */
export function notABridge(name: string): ApiError {
  return new ApiError(500, `existing interface ${name} is not a bridge`);
}

/** Addresses (CIDR) of a link of berthd's namespace, link-local IPv6 left out. */
export async function linkAddresses(name: string): Promise<string[]> {
  return (await linkState(name)).addresses;
}

/** A link's MAC and addresses (CIDR, link-local IPv6 left out), in one `ip` run. */
async function linkState(name: string): Promise<{ mac: string; addresses: string[] }> {
  const info = await ipJson<Array<{ address?: string; addr_info?: Array<{ family: string; local: string; prefixlen: number }> }>>(undefined, ['addr', 'show', 'dev', name]);
  return {
    mac: info[0]?.address ?? '',
    addresses: (info[0]?.addr_info ?? [])
      .filter((a) => a.family === 'inet' || (a.family === 'inet6' && !a.local.startsWith('fe80:')))
      .map((a) => `${a.local}/${a.prefixlen}`),
  };
}

/** Runs `ip` commands in berthd's namespace (nothing when the list is empty). */
export async function ipBatchHost(commands: string[]): Promise<void> {
  await ipBatch(undefined, commands);
}

/** An interface's own sysctl, by path: names may contain dots, which the dotted form would split. */
export async function ifSysctl(family: 'ipv4' | 'ipv6', ifname: string, key: string, value?: string | number): Promise<string> {
  const path = `/proc/sys/net/${family}/conf/${ifname}/${key}`;
  if (value !== undefined) await fs.writeFile(path, String(value));
  return (await fs.readFile(path, 'utf8')).trim();
}

export async function ensureBridge(b: BridgeSpec): Promise<void> {
  if (b.adopted) return ensureAdoptedBridge(b);
  const setUp = [`addr replace ${b.gatewayCidr} dev ${b.name}`];
  if (b.hostCidr) setUp.push(`addr replace ${b.hostCidr} dev ${b.name}`);
  // No duplicate address detection: the gateway must answer the moment a container joins.
  if (b.gateway6Cidr) setUp.push(`addr replace ${b.gateway6Cidr} dev ${b.name} nodad`);
  setUp.push(`link set ${b.name} up`);
  // A fixed MAC keeps the gateway's address stable as ports come and go (Podman's stale-ARP bug).
  const add = `link add name ${b.name} address ${b.mac} mtu ${b.mtu} type bridge`;
  // The host may disable IPv6 on new interfaces by default; a dual-stack bridge needs it (its own sysctl only).
  const enableIPv6 = !!b.gateway6Cidr && (await newLinksLackIPv6());
  try {
    // The usual case, a new bridge, is one `ip` run.
    if (enableIPv6) {
      await ipBatch(undefined, [add]);
      await ifSysctl('ipv6', b.name, 'disable_ipv6', 0);
      await ipBatch(undefined, setUp);
    } else {
      await ipBatch(undefined, [add, ...setUp]);
    }
  } catch (e) {
    if (!/File exists/.test((e as Error).message)) throw e;
    // The name is taken. Only a bridge can be berth's own from an earlier run; anything else
    // (eth0, lo, a user's dummy) is never touched: its addresses stay as they are.
    if ((await linkKind(b.name)) !== 'bridge') throw notABridge(b.name);
    // A bridge left from an earlier run keeps only the addresses it should have, and gets the MAC
    // it should have (an ingress bridge of an older berth had its gateway's).
    const have = await linkState(b.name);
    const stale = have.addresses.filter((cidr) => cidr !== b.gatewayCidr && cidr !== b.gateway6Cidr && cidr !== b.hostCidr).map((cidr) => `addr del ${cidr} dev ${b.name}`);
    // Only when it differs: setting a MAC, even the same one, flushes the link's neighbours.
    const mac = have.mac.toLowerCase() === b.mac.toLowerCase() ? [] : [`link set ${b.name} address ${b.mac}`];
    if (b.gateway6Cidr) await ifSysctl('ipv6', b.name, 'disable_ipv6', 0);
    await ipBatch(undefined, [...stale, ...mac, ...setUp]);
  }
}

/**
 * A bridge the user made: as with Docker, the network uses it, but berth adds only what is
 * missing (its gateway addresses, up) and removes nothing. It must still be a bridge.
 */
async function ensureAdoptedBridge(b: BridgeSpec): Promise<void> {
  const kind = await linkKind(b.name);
  if (kind === undefined) throw new Error(`bridge ${b.name} of this network no longer exists (it was not made by berth, so berth does not make it again)`);
  if (kind !== 'bridge') throw notABridge(b.name);
  const have = await linkAddresses(b.name);
  const cmds: string[] = [];
  if (!have.includes(b.gatewayCidr)) cmds.push(`addr add ${b.gatewayCidr} dev ${b.name}`);
  if (b.gateway6Cidr && !have.includes(b.gateway6Cidr)) {
    await ifSysctl('ipv6', b.name, 'disable_ipv6', 0);
    cmds.push(`addr add ${b.gateway6Cidr} dev ${b.name} nodad`);
  }
  cmds.push(`link set ${b.name} up`);
  await ipBatch(undefined, cmds);
}

async function newLinksLackIPv6(): Promise<boolean> {
  const v = await fs.readFile('/proc/sys/net/ipv6/conf/default/disable_ipv6', 'utf8').catch(() => '1');
  return v.trim() !== '0';
}

export interface JoinSpec {
  netnsPath: string;
  ifname: string;
  hostIf: string;
  bridge: string;
  mac: string;
  addressCidr: string;
  gateway?: string;
  address6Cidr?: string;
  gateway6?: string;
  /** Isolated bridge port: no traffic to other isolated ports (ICC off). */
  isolated?: boolean;
  mtu: number;
  /** Settles when the port may join the bridge (its source guard is in place): awaited only then. */
  beforeAttach?: Promise<void>;
}

/**
 * Creates the veth inside the container's namespace and sends its peer out to berthd's, so the
 * container side is configured before anyone can see it.
 */
export async function joinEndpoint(j: JoinSpec): Promise<void> {
  await createVethInside({
    netnsPath: j.netnsPath, ifname: j.ifname, hostIf: j.hostIf, mac: j.mac, mtu: j.mtu, address: j.addressCidr,
    ...(j.gateway ? { gateway: j.gateway } : {}),
    ...(j.address6Cidr ? { address6: j.address6Cidr } : {}),
    ...(j.gateway6 ? { gateway6: j.gateway6 } : {}),
  });
  // A bridge port needs no IPv6 of its own (the bridge forwards its frames and holds the gateway).
  // With it each host end had a link-local address and its routes, and the kernel walks the whole
  // IPv6 routing table of berthd's namespace at every link removal: with 333 containers on a host
  // a veth took 31 ms to delete instead of 20, and held the kernel's netlink lock that long.
  await setSysctl(`net.ipv6.conf.${j.hostIf}.disable_ipv6`, 1).catch(() => undefined);
  try {
    await j.beforeAttach;
    // Hairpin lets a container reach itself through its own published port: with br_netfilter the
    // DNAT happens at the bridge and the frame must go back out the port it came in on.
    // ICC off (enable_icc=false) is the port's `isolated` flag: isolated ports reach the bridge
    // itself (the gateway, published ports) but never each other.
    const flags = `hairpin on${j.isolated ? ' isolated on' : ''}`;
    await ipBatch(undefined, [`link set ${j.hostIf} master ${j.bridge}`, `link set dev ${j.hostIf} type bridge_slave ${flags}`, `link set ${j.hostIf} up`]);
  } catch (e) {
    await ipBatch(j.netnsPath, [`link del ${j.ifname}`]).catch(() => undefined);
    throw e;
  }
}

/**
 * Deletes a link of berthd's namespace (a bridge, or a veth's host end, which takes the container
 * end with it); one already gone is fine. The kernel takes a link (both ends of a veth) down and out of its namespace's list at once, then waits for RCU grace periods
 * before it acknowledges: ~15 ms for a veth, ~40 ms for a bridge, while only memory is being freed
 * and nothing a container or a user can see is left. So this returns as soon as the link has left
 * berthd's own namespace (a lookup by name, no process needed) or `ip` answers, whichever comes first.
 */
export async function deleteLink(name: string): Promise<void> {
  const deleted = hostIpDeletions.run([`link del ${name}`]).catch((e: Error) => {
    if (!/Cannot find device/.test(e.message)) throw e;
  });
  let finished = false;
  const unlisted = (async () => {
    // Give `ip` the time to send its request before the first look.
    await sleep(1);
    while (!finished && (await linkExists(name))) await sleep(1);
  })();
  try {
    await Promise.race([deleted, unlisted]);
  } finally {
    finished = true;
  }
  // Once unlisted the rest is the kernel's own cleanup; a late error of `ip` is only logged.
  deleted.catch((e: Error) => console.error(`berthd: deleting ${name}: ${e.message}`));
}

