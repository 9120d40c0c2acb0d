import { ipBatch, ipJson } from '../kernel/netns.js';
import { setSysctl } from '../kernel/sysctl.js';

/**
 * The bridge driver's kernel side: a Linux bridge per network in berthd's namespace, and a veth
 * pair per endpoint with one end in the container's namespace. Each call is one or two `ip -batch`
 * runs, whatever the number of commands.
 */

export interface BridgeSpec { name: string; gatewayCidr: string; mtu: number; mac: string; gateway6Cidr?: string }

export async function linkExists(name: string): Promise<boolean> {
  try {
    await ipJson(undefined, ['link', 'show', 'dev', name]);
    return true;
  } catch {
    return false;
  }
}

export async function ensureBridge(b: BridgeSpec): Promise<void> {
  const cmds: string[] = [];
  if (!(await linkExists(b.name))) {
    // A fixed MAC keeps the gateway's address stable as ports come and go (Podman's stale-ARP bug).
    await ipBatch(undefined, [`link add name ${b.name} address ${b.mac} mtu ${b.mtu} type bridge`]);
  } else {
    // A bridge left from an earlier run keeps only the gateway addresses it should have.
    const info = await ipJson<Array<{ addr_info?: Array<{ family: string; local: string; prefixlen: number }> }>>(undefined, ['addr', 'show', 'dev', b.name]);
    for (const a of info[0]?.addr_info ?? []) {
      const cidr = `${a.local}/${a.prefixlen}`;
      if (a.family === 'inet' && cidr !== b.gatewayCidr) cmds.push(`addr del ${cidr} dev ${b.name}`);
      if (a.family === 'inet6' && !a.local.startsWith('fe80:') && cidr !== b.gateway6Cidr) cmds.push(`addr del ${cidr} dev ${b.name}`);
    }
  }
  // The host may disable IPv6 on new interfaces by default; a dual-stack bridge needs it (its own sysctl only).
  if (b.gateway6Cidr) await setSysctl(`net.ipv6.conf.${b.name}.disable_ipv6`, 0);
  cmds.push(`addr replace ${b.gatewayCidr} dev ${b.name}`);
  // No duplicate address detection: the gateway must answer the moment a container joins.
  if (b.gateway6Cidr) cmds.push(`addr replace ${b.gateway6Cidr} dev ${b.name} nodad`);
  cmds.push(`link set ${b.name} up`);
  await ipBatch(undefined, cmds);
}

export async function deleteBridge(name: string): Promise<void> {
  if (await linkExists(name)) await ipBatch(undefined, [`link del ${name}`]);
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
  /** berthd's pid: its namespace is where the host end of the veth goes. */
  daemonPid: number;
}

/**
 * Creates the veth inside the container's namespace and sends its peer out to berthd's, so the
 * container side is configured before anyone can see it.
 */
export async function joinEndpoint(j: JoinSpec): Promise<void> {
  const inside = [
    `link add name ${j.ifname} address ${j.mac} mtu ${j.mtu} type veth peer name ${j.hostIf} mtu ${j.mtu} netns ${j.daemonPid}`,
    `addr add ${j.addressCidr} dev ${j.ifname}`,
    `link set ${j.ifname} up`,
  ];
  if (j.gateway) inside.push(`route replace default via ${j.gateway} dev ${j.ifname}`);
  if (j.address6Cidr) inside.push(`addr add ${j.address6Cidr} dev ${j.ifname} nodad`);
  if (j.gateway6) inside.push(`route replace default via ${j.gateway6} dev ${j.ifname}`);
  await ipBatch(j.netnsPath, inside);
  try {
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

/** Deleting the container end removes the pair. */
export async function leaveEndpoint(netnsPath: string, ifname: string): Promise<void> {
  await ipBatch(netnsPath, [`link del ${ifname}`]);
}

/** MTU of the interface that carries the default route, or 1500 without one. */
export async function uplinkMtu(): Promise<number> {
  try {
    const routes = await ipJson<Array<{ dst: string; dev?: string }>>(undefined, ['route', 'show', 'default']);
    const dev = routes[0]?.dev;
    if (!dev) return 1500;
    const links = await ipJson<Array<{ mtu: number }>>(undefined, ['link', 'show', 'dev', dev]);
    return links[0]?.mtu ?? 1500;
  } catch {
    return 1500;
  }
}

/** Subnets of the routes in berthd's namespace, so new networks do not overlap them. */
export async function routedSubnets(): Promise<string[]> {
  try {
    const routes = await ipJson<Array<{ dst: string }>>(undefined, ['-4', 'route', 'show', 'table', 'all']);
    return routes.map((r) => r.dst).filter((d) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(d) && !d.startsWith('127.'));
  } catch {
    return [];
  }
}

/** Docker's MAC scheme: 02:42 followed by the IPv4 address. */
export function macFor(ip: string): string {
  return ['02', '42', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}
