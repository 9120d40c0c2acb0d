import { linkAddresses } from './bridge.js';
import { nftApply } from './nft.js';
import { ipBatch, ipJson } from './netns.js';

/**
 * An overlay network's links on a host: macvlan children (bridge mode) of its VXLAN device. The
 * host's own child holds the gateway (and the ingress endpoint's address); each container's child
 * is made inside its namespace. Frames between them, and to and from the VXLAN device, go from
 * one child to the other within macvlan: no bridge, no veth pair, which is what a VXLAN overlay
 * costs most on top of the encapsulation (docs/architecture.md, "Overlay networks", has the numbers).
 */

export interface HostLinkSpec {
  name: string;
  /** The network's VXLAN device. */
  lower: string;
  mac: string;
  gatewayCidr: string;
  mtu: number;
  /** An address the host itself holds besides the gateway (the ingress endpoint's, as `ADDR/32`). */
  hostCidr?: string;
}

interface LinkDetail { ifname: string; link?: string; address?: string; mtu?: number; linkinfo?: { info_kind?: string; info_data?: { mode?: string } } }

/** Makes the host's child, or brings one left by an earlier run in line (an older berth's bridge of that name is replaced); true when it is new. */
export async function ensureHostLink(s: HostLinkSpec): Promise<boolean> {
  const setUp = [`addr replace ${s.gatewayCidr} dev ${s.name}`, ...(s.hostCidr ? [`addr replace ${s.hostCidr} dev ${s.name}`] : []), `link set ${s.name} up`];
  const have = (await ipJson<LinkDetail[]>(undefined, ['-d', 'link', 'show', 'dev', s.name]).catch(() => []))[0];
  if (have) {
    if (have.linkinfo?.info_kind === 'macvlan' && have.link === s.lower && have.linkinfo.info_data?.mode === 'bridge') {
      const stale = (await linkAddresses(s.name)).filter((c) => c !== s.gatewayCidr && c !== s.hostCidr).map((c) => `addr del ${c} dev ${s.name}`);
      // Only when it differs: setting a MAC, even the same one, flushes the link's neighbours.
      const mac = have.address?.toLowerCase() === s.mac.toLowerCase() ? [] : [`link set ${s.name} address ${s.mac}`];
      const mtu = have.mtu === s.mtu ? [] : [`link set ${s.name} mtu ${s.mtu}`];
      await ipBatch(undefined, [...stale, ...mac, ...mtu, ...setUp]);
      return false;
    }
    await ipBatch(undefined, [`link del ${s.name}`]);
  }
  await ipBatch(undefined, [`link add link ${s.lower} name ${s.name} address ${s.mac} mtu ${s.mtu} type macvlan mode bridge`, ...setUp]);
  return true;
}

export interface ChildJoin {
  netnsPath: string;
  ifname: string;
  lower: string;
  mac: string;
  mtu: number;
  addressCidr: string;
  gateway?: string;
  /** nft script the child's namespace gets before the child is up (its source guard). */
  guard: string;
}

/**
 * Gives a container its child of the network's VXLAN device: made inside its namespace under its
 * final name, guarded there, and only then configured and up, so nothing unguarded ever sends.
 */
export async function joinChild(j: ChildJoin): Promise<void> {
  await ipBatch(undefined, [`link add link ${j.lower} name ${j.ifname} address ${j.mac} mtu ${j.mtu} netns ${j.netnsPath} type macvlan mode bridge`]);
  try {
    await nftApply(j.guard, { netns: j.netnsPath });
    const inside = [`addr add ${j.addressCidr} dev ${j.ifname}`, `link set ${j.ifname} up`];
    if (j.gateway) inside.push(`route replace default via ${j.gateway} dev ${j.ifname}`);
    await ipBatch(j.netnsPath, inside);
  } catch (e) {
    await ipBatch(j.netnsPath, [`link del ${j.ifname}`]).catch(() => undefined);
    throw e;
  }
}

/** Takes a container's child away (its guard stays, unhooked, until a link of that name replaces it). */
export async function leaveChild(netnsPath: string, ifname: string): Promise<void> {
  await ipBatch(netnsPath, [`link del ${ifname}`]);
}

/** Links of berthd's namespace whose names start with `prefix`, of any kind. */
export async function linksNamed(prefix: string): Promise<string[]> {
  const links = await ipJson<LinkDetail[]>(undefined, ['link', 'show']).catch(() => [] as LinkDetail[]);
  return links.map((l) => l.ifname).filter((n) => n.startsWith(prefix));
}
