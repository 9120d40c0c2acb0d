import { Steps } from '../util/steps.js';
import { deleteLink, ifSysctl, ipBatchHost, linkAddresses } from '../kernel/bridge.js';
import { linkExists } from '../kernel/netns.js';
import { nftCommands } from '../kernel/nft.js';
import { ensureHostLink, joinChild, leaveChild, linksNamed } from '../kernel/overlaylinks.js';
import { ensureVxlan, peersOf, programPeers, vxlanDevices } from '../kernel/vxlan.js';
import { BadRequestError, ForbiddenError } from '../util/errors.js';
import type { CreateContext, EndpointJoin, EndpointLeave, NetworkDriver } from './driver.js';
import { parseCidr } from './ipam.js';
import { hostMacFor, macFor } from './mac.js';
import { OPT_MTU } from './options.js';
import { diffPeers, OPT_ENCRYPTED, OPT_VXLANID, OVERLAY_HOST_PREFIX, overlayHostLink, overlayMtu, parseVni, VXLAN_PREFIX, vxlanDevice, type Peer } from './overlay.js';
import {
  containerGuardScript, dropNetworkGuardScript, guardedPairs, networkGuardScript, overlayGuardScript, pairOps, writePairs,
} from './overlayguard.js';
import type { NetworkRecord } from './types.js';

/**
 * What the overlay driver needs of the cluster: this host's VTEP, the store's view of each
 * network's endpoints, and the claims and waits that make a change visible on every host before
 * the command that made it returns. The cluster side (swarmnetworks.ts) implements it while this
 * host is in a swarm; without it, overlay networks have no data plane here.
 */
export interface OverlayPlane {
  /** This host's data-path address and the cluster's VXLAN UDP port. */
  readonly vtep: { addr: string; port: number };
  /** MTU of the link that carries the data-path address. */
  underlayMtu(): Promise<number>;
  /** The VNI the store gave the network. */
  vniOf(n: NetworkRecord): number;
  /** The network's remote endpoints as peers; with `ips`, only those at these addresses. */
  peers(networkId: string, ips?: ReadonlySet<string>): Peer[];
  /** This host's endpoint as the store has it (its MAC and address), while it is there. */
  ownEndpoint(networkId: string, endpointId: string): { ip: string; mac: string } | undefined;
  /** Claims an address and publishes the endpoint under this host's lease; returns the store revision. */
  claim(n: NetworkRecord, ep: { endpointId: string; ip: string; mac: string; containerId: string; name: string; aliases: string[]; labels?: Record<string, string> }): Promise<number>;
  /** Withdraws an endpoint and its address; the revision of the removal, or undefined if there was none. */
  release(n: NetworkRecord, endpointId: string): Promise<number | undefined>;
  /** Returns once every live host has applied the store up to `revision` (or the bounded wait ran out). */
  appliedEverywhere(revision: number): Promise<void>;
}

/**
 * Docker's overlay driver, with the data plane in berthd's namespace: per network and host a VXLAN
 * device with learning off, whose FDB and neighbour entries are the store's remote endpoints, and
 * whose macvlan children (bridge mode) are the endpoints: each container's, inside its namespace,
 * and the host's own, holding the gateway address (the same on every host: each host is its own
 * containers' way out, as Docker's docker_gwbridge is). No bridge and no veth pair: a frame goes
 * from a container's child to the VXLAN device and out, which is most of what an overlay costs
 * beyond VXLAN itself. The host firewall carries the host's child like a bridge network's bridge
 * (isolation, NAT, published ports, --internal); what containers of one network send each other
 * never crosses it, so network policy lives in their namespaces (`policyInSandbox`), and the
 * source guard is overlayguard.ts's.
 */
export class OverlayDriver implements NetworkDriver {
  readonly name = 'overlay' as const;
  readonly scope = 'swarm' as const;
  readonly avoidsRoutedSubnets = false;
  readonly publishes = true;
  readonly hostFirewall = true;
  readonly policyInSandbox = true;
  readonly ipv6 = false;

  plane?: OverlayPlane;
  private guardReady?: Promise<void>;
  /** The peers each network's VXLAN device was last given, so a store change programs only the difference. */
  private readonly programmed = new Map<string, Map<string, Peer>>();
  /** The endpoint the host itself holds on a network, by network id (the routing mesh's on ingress). */
  private readonly hostEndpoints = new Map<string, { endpointId: string; ip: string }>();

  private ensureGuard(): Promise<void> {
    this.guardReady ??= nftCommands(overlayGuardScript()).catch((e: Error) => {
      this.guardReady = undefined;
      throw e;
    });
    return this.guardReady;
  }

  async configure(n: NetworkRecord, _ctx: CreateContext): Promise<void> {
    if (n.Options[OPT_ENCRYPTED] !== undefined) throw await encryptionRefusal();
    const plane = this.plane;
    if (!plane) throw new ForbiddenError('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.');
    parseVni(n.Options[OPT_VXLANID]);
    n.mtu = overlayMtu(n.Options[OPT_MTU], await plane.underlayMtu());
    n.bridge = overlayHostLink(n.Id);
  }

  async ensureNetwork(n: NetworkRecord): Promise<void> {
    // Before the cluster is back (a restart) there is no VTEP to bind: the cluster side makes the
    // data plane once it has listed the store.
    const plane = this.plane;
    if (!plane) return;
    const pool = n.pools![0]!;
    // This host's own underlay decides its MTU; an MTU option is the same everywhere.
    const mtu = overlayMtu(n.Options[OPT_MTU], await plane.underlayMtu());
    const hostLink = overlayHostLink(n.Id);
    const own = this.hostEndpoints.get(n.Id);
    // On ingress the host's link has the host's own MAC: the host holds an endpoint there (joinHost).
    const mac = n.Ingress ? this.hostMac()! : macFor(pool.gateway);
    const vx = vxlanDevice(n.Id);
    await this.ensureGuard();
    const vxMade = await ensureVxlan({ name: vx, vni: plane.vniOf(n), local: plane.vtep.addr, port: plane.vtep.port, mtu });
    const hostLinkMade = await ensureHostLink({ name: hostLink, lower: vx, gatewayCidr: `${pool.gateway}/${parseCidr(pool.subnet).prefix}`, mtu, mac, ...(own ? { hostCidr: `${own.ip}/32` } : {}) });
    // The guard's chains need the devices to bind to. A new device has no peers and no container
    // children until after this, so nothing reaches it unguarded meanwhile. A new VXLAN device
    // means a new host child too (the old one went with the old device).
    await nftCommands(networkGuardScript(vx, hostLink, { vx: vxMade, hostLink: vxMade || hostLinkMade }));
    await ifSysctl('ipv4', hostLink, 'route_localnet', 1);
    await this.syncPeers(n, true);
  }

  /**
   * Brings the network's VXLAN device in line with the store's remote endpoints. `full` reads the
   * kernel's entries (at start, after a restart) instead of trusting what this process programmed.
   */
  async syncPeers(n: NetworkRecord, full = false, ips?: ReadonlySet<string>): Promise<void> {
    const plane = this.plane;
    if (!plane) return;
    const vx = vxlanDevice(n.Id);
    const have = this.programmed.get(n.Id);
    // Only the addresses named, when the device's peers are known: every other address holds what
    // it was given, since the view changes only through the batches that name what they change.
    const only = !full && have ? ips : undefined;
    const want = plane.peers(n.Id, only);
    let allowed: Array<{ mac: string; ip: string }>;
    if (full || !have) {
      const k = await peersOf(vx);
      const { add, del } = diffPeers(k, want);
      await programPeers(vx, add, del);
      // This host's own endpoints' pairs (with their ARP probe) are the joins' to keep.
      allowed = (await guardedPairs(vx)).filter((p) => !p.probe);
    } else {
      const had = only ? [...only].flatMap((ip) => { const h = have.get(ip); return h ? [h] : []; }) : [...have.values()];
      const wantMap = new Map(want.map((p) => [p.ip, p]));
      const add = want.filter((p) => { const h = have.get(p.ip); return !h || h.mac !== p.mac || h.vtep !== p.vtep; });
      const del = had.filter((p) => { const w = wantMap.get(p.ip); return !w || w.mac !== p.mac || w.vtep !== p.vtep; });
      // A replaced entry (same IP, new MAC or VTEP) is written by the add: only the old FDB entry goes.
      await programPeers(vx, add, del.map((d) => (wantMap.has(d.ip) ? { ...d, ip: '' } : d)));
      allowed = had.map((p) => ({ mac: p.mac, ip: p.ip }));
    }
    const key = (p: { mac: string; ip: string }) => `${p.mac.toLowerCase()} ${p.ip}`;
    const wantKeys = new Set(want.map(key));
    const allowedKeys = new Set(allowed.map(key));
    const revoke = allowed.filter((a) => !wantKeys.has(key(a)));
    const grant = want.filter((p) => !allowedKeys.has(key(p)));
    // Allowances follow the FDB: granted after the entries exist, revoked before nothing remains.
    await writePairs([...pairOps(vx, revoke, 'delete'), ...pairOps(vx, grant, 'add')]).catch((e: Error) => console.error(`berthd: source guard of ${vx}: ${e.message}`));
    if (only && have) {
      const now = new Map(want.map((p) => [p.ip, p]));
      for (const ip of only) {
        const p = now.get(ip);
        if (p) have.set(ip, p);
        else have.delete(ip);
      }
    } else {
      this.programmed.set(n.Id, new Map(want.map((p) => [p.ip, p])));
    }
  }

  /** The device and the host's link (which takes the containers' children with it), then their guard. */
  private async removeDevices(vx: string, hostLink: string): Promise<void> {
    const pairs = await guardedPairs(vx);
    await deleteLink(vx);
    await deleteLink(hostLink);
    await nftCommands(dropNetworkGuardScript(vx, hostLink)).catch(() => undefined);
    await writePairs(pairs.flatMap((p) => pairOps(vx, [p], 'delete', p.probe))).catch(() => undefined);
  }

  async deleteNetwork(n: NetworkRecord): Promise<void> {
    await this.removeDevices(vxlanDevice(n.Id), overlayHostLink(n.Id));
    this.programmed.delete(n.Id);
    this.hostEndpoints.delete(n.Id);
  }

  async removeOrphans(keep: NetworkRecord[]): Promise<void> {
    const kept = new Set(keep.map((n) => n.Id.slice(0, 11)));
    const orphan = (name: string, prefix: string) => name.startsWith(prefix) && !kept.has(name.slice(prefix.length));
    for (const vx of await vxlanDevices(VXLAN_PREFIX)) if (orphan(vx, VXLAN_PREFIX)) await this.removeDevices(vx, `${OVERLAY_HOST_PREFIX}${vx.slice(VXLAN_PREFIX.length)}`);
    // A host link without its device (or an older berth's bridge of that name).
    for (const l of await linksNamed(OVERLAY_HOST_PREFIX)) if (orphan(l, OVERLAY_HOST_PREFIX)) await deleteLink(l);
  }

  async join(n: NetworkRecord, j: EndpointJoin): Promise<void> {
    const plane = this.plane;
    if (!plane) throw new ForbiddenError(`network ${n.Name} is a swarm network and this node is not in the swarm`);
    const ip = j.addressCidr.split('/')[0]!;
    const st = new Steps(`an overlay join on ${n.Name}`);
    const revision = await plane.claim(n, {
      endpointId: j.endpointId, ip, mac: j.mac, containerId: j.owner?.containerId ?? '', name: j.owner?.name ?? '', aliases: j.owner?.aliases ?? [], labels: j.owner?.labels ?? {},
    });
    st.mark('claim');
    const vx = vxlanDevice(n.Id);
    try {
      await this.ensureGuard();
      await writePairs(pairOps(vx, [{ mac: j.mac, ip }], 'add', true));
      await joinChild({
        netnsPath: j.netnsPath, ifname: j.ifname, lower: vx, mac: j.mac, addressCidr: j.addressCidr, ...(j.gateway ? { gateway: j.gateway } : {}),
        mtu: overlayMtu(n.Options[OPT_MTU], await plane.underlayMtu()), guard: containerGuardScript(j.ifname, j.mac, ip),
      });
    } catch (e) {
      await this.revokeLocal(n, j.endpointId, ip);
      await plane.release(n, j.endpointId).catch(() => undefined);
      throw e;
    }
    st.mark('kernel');
    // Every live host has the endpoint in its FDB, neighbour table and DNS before `run` returns.
    await plane.appliedEverywhere(revision);
    st.mark('applied everywhere');
    st.done();
  }

  /**
   * Takes an endpoint of this host out of its device's guard (before its release, so the store
   * still has its record), or, for one whose record went before a kill, the kernel's pair at the
   * address the sandbox's journal names. The pairs of a network that goes, go with its devices.
   */
  private async revokeLocal(n: NetworkRecord, endpointId: string, ip?: string): Promise<void> {
    const vx = vxlanDevice(n.Id);
    let rec = this.plane?.ownEndpoint(n.Id, endpointId);
    if (!rec && ip) rec = (await guardedPairs(vx).catch(() => [])).find((p) => p.probe && p.ip === ip);
    if (!rec) return;
    await writePairs(pairOps(vx, [rec], 'delete', true)).catch((e: Error) => {
      if (!/No such file/.test(e.message)) console.error(`berthd: source guard of ${vx}: ${e.message}`);
    });
  }

  async leave(n: NetworkRecord, ep: EndpointLeave): Promise<void> {
    const st = new Steps(`an overlay leave from ${n.Name}`);
    let revision: number | undefined;
    try {
      // The child lives only inside the container's namespace: with the namespace gone, so is it.
      if (ep.netnsPath) await leaveChild(ep.netnsPath, ep.ifname);
      await this.revokeLocal(n, ep.endpointId, ep.ip);
      st.mark('kernel');
    } finally {
      // Released even when the kernel step failed: the container goes all the same (its caller
      // ignores the error), and an endpoint never released stays this host's in the store.
      revision = await this.plane?.release(n, ep.endpointId);
      st.mark('release');
    }
    if (revision !== undefined) await this.plane!.appliedEverywhere(revision);
    st.mark('applied everywhere');
    st.done();
  }

  /**
   * Gives the host itself an endpoint on the ingress network: claimed in the store as a
   * container's is, with the host link's own MAC (the host's, `hostMacFor`), and its address on
   * that link (as /32: the gateway keeps the subnet's route). Frames the host sends on the network
   * then carry the pair the other hosts' source guards expect of this endpoint, and frames for it
   * from the wire reach the host. Returns once every live host applied it.
   */
  async joinHost(n: NetworkRecord, ep: { endpointId: string; ip: string; containerId: string; name: string }): Promise<void> {
    const plane = this.plane;
    if (!plane || !n.Ingress) throw new ForbiddenError(`network ${n.Name}: only a swarm's ingress network takes this host's own endpoint`);
    const revision = await plane.claim(n, { ...ep, mac: this.hostMac()!, aliases: [] });
    try {
      this.hostEndpoints.set(n.Id, { endpointId: ep.endpointId, ip: ep.ip });
      await ipBatchHost([`addr replace ${ep.ip}/32 dev ${overlayHostLink(n.Id)}`]);
    } catch (e) {
      await this.leaveHost(n, ep.endpointId).catch(() => undefined);
      throw e;
    }
    await plane.appliedEverywhere(revision);
  }

  /** The MAC the host itself has on the ingress network, while it is in a swarm. */
  hostMac(): string | undefined {
    return this.plane && hostMacFor(this.plane.vtep.addr);
  }

  /** The host's endpoint a restarted berthd takes up again: the network's host link keeps its address. */
  adoptHost(networkId: string, ep: { endpointId: string; ip: string }): void {
    this.hostEndpoints.set(networkId, { endpointId: ep.endpointId, ip: ep.ip });
  }

  /** Takes the host's endpoint off the network (idempotent): its address, then its record. */
  async leaveHost(n: NetworkRecord, endpointId: string): Promise<void> {
    const own = this.hostEndpoints.get(n.Id);
    if (own?.endpointId === endpointId) {
      this.hostEndpoints.delete(n.Id);
      const link = overlayHostLink(n.Id);
      if (await linkExists(link) && (await linkAddresses(link)).includes(`${own.ip}/32`)) await ipBatchHost([`addr del ${own.ip}/32 dev ${link}`]);
    }
    const revision = await this.plane?.release(n, endpointId);
    if (revision !== undefined) await this.plane!.appliedEverywhere(revision);
  }
}

/**
 * `--opt encrypted` asks for IPsec ESP between the hosts (Docker: transport mode,
 * rfc4106(gcm(aes))). berth checks whether this kernel can hold such a security association at
 * all; where it cannot (the machines berth is built on: no esp4 in the kernel), it says so.
 */
async function encryptionRefusal(): Promise<BadRequestError> {
  const { probeEsp } = await import('../kernel/xfrm.js');
  const why = await probeEsp();
  return new BadRequestError(why
    ? `encrypted overlay networks need IPsec ESP with rfc4106(gcm(aes)) in the kernel, and this host's kernel has none (${why})`
    : 'encrypted overlay networks are not supported by berth yet');
}
