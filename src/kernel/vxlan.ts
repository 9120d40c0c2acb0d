import { run } from '../util/exec.js';
import { nativeAddon } from '../util/cjs.js';
import { ipBatch, ipJson } from './netns.js';

/**
 * VXLAN devices and their static forwarding state, in berthd's namespace: the device, its FDB
 * entries (a remote MAC → the VTEP that hosts it) and neighbour entries (a remote IP → its MAC,
 * which the device's proxy answers ARP from). Learning is off and there is no default
 * destination: nothing floods, nothing is learnt from the wire; what is here is what the cluster
 * store says. The device is made with one `ip -batch` run; its entries are written over rtnetlink.
 */

export interface VxlanSpec { name: string; vni: number; local: string; port: number; mtu: number }

/** One remote endpoint as the device holds it. */
export interface Peer { ip: string; mac: string; vtep: string }

interface LinkInfo { ifname: string; mtu: number; master?: string; linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; port?: number; learning?: boolean; proxy?: boolean } } }

/**
 * Makes the device, or brings one left by an earlier run in line (a wrong VNI or address: made
 * again, which takes the network's macvlan children with it). An older berth put it on a bridge:
 * it leaves that. True when the device is new.
 */
export async function ensureVxlan(v: VxlanSpec): Promise<boolean> {
  const add = `link add name ${v.name} mtu ${v.mtu} type vxlan id ${v.vni} local ${v.local} dstport ${v.port} nolearning proxy`;
  const up = [`link set ${v.name} mtu ${v.mtu} up`];
  const have = await vxlanLink(v.name);
  if (have) {
    const d = have.linkinfo?.info_data ?? {};
    if (have.linkinfo?.info_kind === 'vxlan' && d.id === v.vni && d.local === v.local && d.port === v.port && d.learning === false && d.proxy === true) {
      if (have.master || have.mtu !== v.mtu) await ipBatch(undefined, [...(have.master ? [`link set ${v.name} nomaster`] : []), ...up]);
      return false;
    }
    await ipBatch(undefined, [`link del ${v.name}`]);
  }
  await ipBatch(undefined, [add, ...up]);
  return true;
}

async function vxlanLink(name: string): Promise<LinkInfo | undefined> {
  try {
    return (await ipJson<LinkInfo[]>(undefined, ['-d', 'link', 'show', 'dev', name]))[0];
  } catch {
    return undefined;
  }
}

/** Names of the VXLAN devices of berthd's namespace that start with `prefix`. */
export async function vxlanDevices(prefix: string): Promise<string[]> {
  const links = await ipJson<LinkInfo[]>(undefined, ['link', 'show', 'type', 'vxlan']).catch(() => [] as LinkInfo[]);
  return links.map((l) => l.ifname).filter((n) => n.startsWith(prefix));
}

/** The remote endpoints a device holds now: FDB entries with a destination, joined to its permanent neighbours. */
export async function peersOf(dev: string): Promise<{ fdb: Array<{ mac: string; vtep: string }>; neigh: Array<{ ip: string; mac: string }> }> {
  const fdbRun = await run('bridge', ['-j', 'fdb', 'show', 'dev', dev]);
  const fdb = fdbRun.code === 0 && fdbRun.stdout.trim()
    ? (JSON.parse(fdbRun.stdout) as Array<{ mac: string; dst?: string; flags?: string[] }>).filter((e) => e.dst && e.flags?.includes('self')).map((e) => ({ mac: e.mac, vtep: e.dst! }))
    : [];
  const neigh = (await ipJson<Array<{ dst: string; lladdr?: string }>>(undefined, ['neigh', 'show', 'dev', dev]).catch(() => []))
    .filter((n) => n.lladdr).map((n) => ({ ip: n.dst, mac: n.lladdr! }));
  return { fdb, neigh };
}

interface PeerOp { op: 'fdb-replace' | 'fdb-delete' | 'neigh-replace' | 'neigh-delete'; mac: string; ip?: string; vtep?: string }
const peersAddon = nativeAddon<{ programPeers(dev: string, ops: PeerOp[], tolerant: boolean): Promise<void> }>('berth-netns.node', 'overlay peers');

/**
 * Adds (or moves) and removes remote endpoints: neighbour entries with `ip`, FDB entries with
 * `vtep`, written over rtnetlink by the addon (native/berth-peers.c) rather than by a `bridge` and
 * an `ip` process, which every host started for each endpoint that came or went elsewhere. With
 * deletions, an entry already gone is no error (what a crash or the kernel removed).
 */
export async function programPeers(dev: string, add: Peer[], del: Peer[]): Promise<void> {
  // The FDB entry first: a neighbour answered before its MAC has a destination would send the
  // first frames nowhere; and a neighbour goes before its FDB entry for the same reason.
  const ops: PeerOp[] = [
    ...del.filter((p) => p.ip).map((p): PeerOp => ({ op: 'neigh-delete', mac: p.mac, ip: p.ip })),
    ...del.filter((p) => p.vtep).map((p): PeerOp => ({ op: 'fdb-delete', mac: p.mac, vtep: p.vtep })),
    ...add.map((p): PeerOp => ({ op: 'fdb-replace', mac: p.mac, vtep: p.vtep })),
    ...add.map((p): PeerOp => ({ op: 'neigh-replace', mac: p.mac, ip: p.ip })),
  ];
  if (ops.length) await peersAddon().programPeers(dev, ops, del.length > 0);
}

