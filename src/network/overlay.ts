import { BadRequestError, ConflictError, ForbiddenError } from '../util/errors.js';
import { formatCidr, overlaps, parseCidr, size, type Subnet } from './ipam.js';

/**
 * The overlay driver's pure parts: names, options, the cluster-wide choice of subnets and VNIs,
 * the endpoint records hosts share, and the difference between the peers a VXLAN device holds
 * and those it should. No kernel and no store here, so all of it is unit-tested.
 */

export const OPT_VXLANID = 'com.docker.network.driver.overlay.vxlanid_list';
export const OPT_ENCRYPTED = 'encrypted';
/** Docker's swarm VNIs start here (ovmanager.go); below is for classic overlay. */
export const FIRST_VNI = 4096;
export const MAX_VNI = 2 ** 24 - 1;
/** What VXLAN over IPv4 adds to each frame: outer IP 20, UDP 8, VXLAN 8, inner Ethernet 14. */
export const VXLAN_OVERHEAD = 50;

/**
 * Kernel names: the prefixes are berth's, and the rest is the network id (15 bytes at most). The
 * host's link on a network (`bov-`) is its macvlan child of the VXLAN device (`bvx-`).
 */
export const OVERLAY_HOST_PREFIX = 'bov-';
export const VXLAN_PREFIX = 'bvx-';
export const overlayHostLink = (id: string) => `${OVERLAY_HOST_PREFIX}${id.slice(0, 11)}`;
export const vxlanDevice = (id: string) => `${VXLAN_PREFIX}${id.slice(0, 11)}`;

/** Every swarm network's subnet and VNI, as the store keeps them in one record. */
export interface OverlayAlloc { subnets: Record<string, string>; vnis: Record<string, string> }

export const emptyAlloc = (): OverlayAlloc => ({ subnets: {}, vnis: {} });

/**
 * A subnet for a new network: the first of `size` bits in the cluster's default address pools
 * that overlaps no swarm network's subnet nor anything in `avoid` (the hosts' own underlay).
 */
export function pickSubnet(pools: string[], subnetSize: number, taken: string[], avoid: Subnet[] = []): string {
  const used = [...taken.map(parseCidr), ...avoid];
  for (const text of pools) {
    const pool = parseCidr(text);
    const prefix = Math.max(subnetSize, pool.prefix);
    for (let base = pool.base; base < pool.base + size(pool.prefix); base += size(prefix)) {
      const c: Subnet = { base, prefix };
      if (!used.some((u) => overlaps(u, c))) return formatCidr(c);
    }
  }
  throw new ForbiddenError('could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network: all predefined address pools have been fully subnetted');
}

/** A subnet the user gave must overlap no other swarm network's. */
export function checkSubnetFree(subnet: string, taken: string[]): void {
  const s = parseCidr(subnet);
  if (taken.some((t) => overlaps(parseCidr(t), s))) throw new ForbiddenError('Pool overlaps with other one on this address space');
}

/** The VNI option as Docker reads it: a comma list whose first entry is the network's (one subnet here). */
export function parseVni(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const first = v.split(',')[0]!.trim();
  const n = Number(first);
  if (!/^\d+$/.test(first) || n < 1 || n > MAX_VNI) throw new BadRequestError(`invalid vxlan id value "${first}" passed`);
  return n;
}

/** The VNI for a new network: the one asked for if free, else the lowest free from 4096. */
export function pickVni(alloc: OverlayAlloc, subnet: string, want?: number): number {
  if (want !== undefined) {
    if (alloc.vnis[String(want)]) throw new ConflictError(`could not obtain vxlan id for pool ${subnet}: requested bit is already allocated`);
    return want;
  }
  for (let v = FIRST_VNI; v <= MAX_VNI; v++) if (!alloc.vnis[String(v)]) return v;
  throw new ForbiddenError('could not obtain vxlan id: no bit available');
}

/**
 * The MTU of a network's interfaces on a host: what the user asked for, or the host's underlay
 * link minus VXLAN's overhead (not Docker's fixed 1450, which black-holes big packets on an
 * underlay below 1500, libnetwork#2661). An MTU the underlay cannot carry is refused.
 */
export function overlayMtu(option: string | undefined, underlayMtu: number): number {
  const max = underlayMtu - VXLAN_OVERHEAD;
  if (option === undefined || option === '') return max;
  const mtu = Number(option);
  if (!/^\d+$/.test(option) || mtu < 68) throw new BadRequestError(`invalid MTU ${option}`);
  if (mtu > max) throw new BadRequestError(`invalid MTU ${option}: the underlay link carries ${underlayMtu} bytes and VXLAN takes ${VXLAN_OVERHEAD} of them, so at most ${max}`);
  return mtu;
}

/** One endpoint of a swarm network as every host sees it (in the store, under its host's lease). */
export interface EndpointRecord {
  Network: string;
  EndpointID: string;
  ContainerID: string;
  /** The container's name without the slash, and its aliases on this network: the DNS answers them. */
  Name: string;
  Aliases: string[];
  IP: string;
  Mac: string;
  /** The node that hosts it, and that node's data-path address (the VTEP its frames go to). */
  Node: string;
  Vtep: string;
  /** The container's labels, where it has any: other hosts' network policy selects it by them. */
  Labels?: Record<string, string>;
}

export interface Peer { ip: string; mac: string; vtep: string }

/** The remote endpoints a host's VXLAN device of this network must hold: every other node's. */
export function peersFor(endpoints: Iterable<EndpointRecord>, self: string, ips?: ReadonlySet<string>): Peer[] {
  const out: Peer[] = [];
  for (const e of endpoints) if (e.Node !== self && (!ips || ips.has(e.IP))) out.push({ ip: e.IP, mac: e.Mac.toLowerCase(), vtep: e.Vtep });
  return out;
}

/**
 * What to change so that a device holding `have` holds exactly `want`: an entry whose MAC or VTEP
 * changed is replaced; an entry of the kernel's the store does not name is removed.
 */
export function diffPeers(have: { fdb: Array<{ mac: string; vtep: string }>; neigh: Array<{ ip: string; mac: string }> }, want: Peer[]): { add: Peer[]; del: Peer[] } {
  const fdb = new Map(have.fdb.map((f) => [f.mac.toLowerCase(), f.vtep]));
  const neigh = new Map(have.neigh.map((n) => [n.ip, n.mac.toLowerCase()]));
  const wantByMac = new Map(want.map((p) => [p.mac, p]));
  const wantByIp = new Map(want.map((p) => [p.ip, p]));
  const add = want.filter((p) => fdb.get(p.mac) !== p.vtep || neigh.get(p.ip) !== p.mac);
  const del: Peer[] = [];
  for (const [mac, vtep] of fdb) if (!wantByMac.has(mac)) del.push({ ip: '', mac, vtep });
  for (const [ip, mac] of neigh) if (!wantByIp.has(ip)) {
    const same = del.find((d) => d.mac === mac && !d.ip);
    if (same) same.ip = ip;
    else del.push({ ip, mac, vtep: '' });
  }
  return { add, del };
}

/** Docker's `Peers` of a swarm network's inspect: the nodes that have endpoints on it. */
export function peersView(endpoints: Iterable<EndpointRecord>, nodes: Map<string, { name: string; addr: string }>): Array<{ Name: string; IP: string }> {
  const seen = new Map<string, { Name: string; IP: string }>();
  for (const e of endpoints) {
    if (seen.has(e.Node)) continue;
    const n = nodes.get(e.Node);
    seen.set(e.Node, { Name: n?.name ?? e.Node, IP: e.Vtep || n?.addr || '' });
  }
  return [...seen.values()].sort((a, b) => a.IP.localeCompare(b.IP, undefined, { numeric: true }));
}
