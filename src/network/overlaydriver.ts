import { Steps } from '../util/steps.js';
import { deleteLink, ensureBridge, ifSysctl, ipBatchHost, joinEndpoint, linkAddresses } from '../kernel/bridge.js';
import { linkExists } from '../kernel/netns.js';
import { nftCommands } from '../kernel/nft.js';
import { bridgesNamed, ensureVxlan, peersOf, programPeers, vxlanDevices } from '../kernel/vxlan.js';
import { BadRequestError, ForbiddenError } from '../util/errors.js';
import type { CreateContext, EndpointJoin, EndpointLeave, NetworkDriver } from './driver.js';
import { guardTableScript, type EndpointSource } from './firewall.js';
import { guardedPairs } from './guardread.js';
import { portOp, remoteSourceOps, writeGuard } from './guardsets.js';
import { PortGuards } from './portguard.js';
import { parseCidr } from './ipam.js';
import { hostMacFor, macFor } from './mac.js';
import { OPT_MTU } from './options.js';
import { diffPeers, OPT_ENCRYPTED, OPT_VXLANID, OVERLAY_BRIDGE_PREFIX, overlayBridge, overlayMtu, parseVni, VXLAN_PREFIX, vxlanDevice, type Peer } from './overlay.js';
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
  /** The remote endpoints of a network, as the store has them now. */
  /** The network's remote endpoints as peers; with `ips`, only those at these addresses. */
  peers(networkId: string, ips?: ReadonlySet<string>): Peer[];
  /** Claims an address and publishes the endpoint under this host's lease; returns the store revision. */
  claim(n: NetworkRecord, ep: { endpointId: string; ip: string; mac: string; containerId: string; name: string; aliases: string[]; labels?: Record<string, string> }): Promise<number>;
  /** Withdraws an endpoint and its address; the revision of the removal, or undefined if there was none. */
  release(n: NetworkRecord, endpointId: string): Promise<number | undefined>;
  /** Returns once every live host has applied the store up to `revision` (or the bounded wait ran out). */
  appliedEverywhere(revision: number): Promise<void>;
}

/** The host end of an endpoint's veth: same rule as the bridge driver (`vb` + endpoint id), so leftovers are found alike. */
function hostIfname(endpointId: string): string {
  return `vb${endpointId.slice(0, 11)}`;
}

/**
 * Docker's overlay driver, with the data plane in berthd's namespace: per network and host a
 * bridge holding the gateway address (the same on every host: each host is its own containers'
 * way out, as Docker's docker_gwbridge is) and a VXLAN device with learning off whose FDB and
 * neighbour entries are the store's remote endpoints. The host firewall carries the bridge like
 * any bridge network's (isolation, NAT, published ports, --internal).
 */
export class OverlayDriver implements NetworkDriver {
  readonly name = 'overlay' as const;
  readonly scope = 'swarm' as const;
  readonly avoidsRoutedSubnets = false;
  readonly publishes = true;
  readonly hostFirewall = true;
  readonly ipv6 = false;

  hostBridge(n: NetworkRecord): string {
    return overlayBridge(n.Id);
  }

  plane?: OverlayPlane;
  private guardReady?: Promise<void>;
  private readonly guards = new PortGuards();
  /** The peers each network's VXLAN device was last given, so a store change programs only the difference. */
  private readonly programmed = new Map<string, Map<string, Peer>>();
  /** The endpoint the host itself holds on a network, by network id (the routing mesh's on ingress). */
  private readonly hostEndpoints = new Map<string, { endpointId: string; ip: string }>();

  private ensureGuard(): Promise<void> {
    this.guardReady ??= nftCommands(guardTableScript()).catch((e: Error) => {
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
    n.bridge = overlayBridge(n.Id);
  }

  async ensureNetwork(n: NetworkRecord): Promise<void> {
    // Before the cluster is back (a restart) there is no VTEP to bind: the cluster side makes the
    // data plane once it has listed the store.
    const plane = this.plane;
    if (!plane) return;
    const pool = n.pools![0]!;
    // This host's own underlay decides its MTU; an MTU option is the same everywhere.
    const mtu = overlayMtu(n.Options[OPT_MTU], await plane.underlayMtu());
    const bridge = overlayBridge(n.Id);
    const own = this.hostEndpoints.get(n.Id);
    // The ingress bridge has the host's own MAC: the host holds an endpoint there (joinHost).
    const mac = n.Ingress ? this.hostMac()! : macFor(pool.gateway);
    await ensureBridge({ name: bridge, gatewayCidr: `${pool.gateway}/${parseCidr(pool.subnet).prefix}`, mtu, mac, ...(own ? { hostCidr: `${own.ip}/32` } : {}) });
    await ifSysctl('ipv4', bridge, 'route_localnet', 1);
    await this.ensureGuard();
    const vx = vxlanDevice(n.Id);
    // The port is guarded before it joins the bridge: no frame from the wire enters unchecked.
    await writeGuard([portOp(vx, 'add')]);
    await ensureVxlan({ name: vx, vni: plane.vniOf(n), local: plane.vtep.addr, port: plane.vtep.port, mtu, bridge });
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
      allowed = await guardedPairs(vx);
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
    const ops = [...remoteSourceOps(vx, revoke, 'delete'), ...remoteSourceOps(vx, grant, 'add')];
    await writeGuard(ops).catch((e: Error) => console.error(`berthd: source guard of ${vx}: ${e.message}`));
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

  async deleteNetwork(n: NetworkRecord): Promise<void> {
    const vx = vxlanDevice(n.Id);
    const allowed = await guardedPairs(vx);
    await deleteLink(vx);
    await writeGuard([portOp(vx, 'delete')]).catch(() => undefined);
    await writeGuard(remoteSourceOps(vx, allowed, 'delete')).catch(() => undefined);
    await deleteLink(overlayBridge(n.Id));
    this.programmed.delete(n.Id);
    this.hostEndpoints.delete(n.Id);
  }

  async removeOrphans(keep: NetworkRecord[]): Promise<void> {
    const kept = new Set(keep.flatMap((n) => [vxlanDevice(n.Id), overlayBridge(n.Id)]));
    for (const vx of await vxlanDevices(VXLAN_PREFIX)) {
      if (kept.has(vx)) continue;
      const allowed = await guardedPairs(vx);
      await deleteLink(vx);
      await writeGuard([portOp(vx, 'delete'), ...remoteSourceOps(vx, allowed, 'delete')]).catch(() => undefined);
    }
    for (const br of await bridgesNamed(OVERLAY_BRIDGE_PREFIX)) if (!kept.has(br)) await deleteLink(br);
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
    const hostIf = hostIfname(j.endpointId);
    const src: EndpointSource = { port: hostIf, mac: j.mac, ip };
    const allowed = this.guards.allow(src, this.ensureGuard());
    try {
      await joinEndpoint({
        beforeAttach: allowed, netnsPath: j.netnsPath, ifname: j.ifname, hostIf, bridge: overlayBridge(n.Id), mac: j.mac,
        addressCidr: j.addressCidr, gateway: j.gateway, mtu: overlayMtu(n.Options[OPT_MTU], await plane.underlayMtu()),
      });
    } catch (e) {
      await allowed.catch(() => undefined);
      await this.guards.revoke(hostIf);
      await plane.release(n, j.endpointId).catch(() => undefined);
      throw e;
    }
    st.mark('kernel');
    // Every live host has the endpoint in its FDB, neighbour table and DNS before `run` returns.
    await plane.appliedEverywhere(revision);
    st.mark('applied everywhere');
    st.done();
  }

  async leave(n: NetworkRecord, ep: EndpointLeave): Promise<void> {
    const st = new Steps(`an overlay leave from ${n.Name}`);
    const hostIf = hostIfname(ep.endpointId);
    let revision: number | undefined;
    try {
      await deleteLink(hostIf);
      await this.guards.revoke(hostIf);
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
   * container's is, with the bridge's own MAC (the host's, `hostMacFor`), and its address on the
   * bridge (as /32: the gateway keeps the subnet's route). Frames the host sends on the network
   * then carry the pair the other hosts' source guards expect of this endpoint, and frames for it
   * from the wire reach the host as the bridge's own. Returns once every live host applied it.
   */
  async joinHost(n: NetworkRecord, ep: { endpointId: string; ip: string; containerId: string; name: string }): Promise<void> {
    const plane = this.plane;
    if (!plane || !n.Ingress) throw new ForbiddenError(`network ${n.Name}: only a swarm's ingress network takes this host's own endpoint`);
    const revision = await plane.claim(n, { ...ep, mac: this.hostMac()!, aliases: [] });
    try {
      this.hostEndpoints.set(n.Id, { endpointId: ep.endpointId, ip: ep.ip });
      await ipBatchHost([`addr replace ${ep.ip}/32 dev ${overlayBridge(n.Id)}`]);
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

  /** The host's endpoint a restarted berthd takes up again: the network's bridge keeps its address. */
  adoptHost(networkId: string, ep: { endpointId: string; ip: string }): void {
    this.hostEndpoints.set(networkId, { endpointId: ep.endpointId, ip: ep.ip });
  }

  /** Takes the host's endpoint off the network (idempotent): its address, then its record. */
  async leaveHost(n: NetworkRecord, endpointId: string): Promise<void> {
    const own = this.hostEndpoints.get(n.Id);
    if (own?.endpointId === endpointId) {
      this.hostEndpoints.delete(n.Id);
      const bridge = overlayBridge(n.Id);
      if (await linkExists(bridge) && (await linkAddresses(bridge)).includes(`${own.ip}/32`)) await ipBatchHost([`addr del ${own.ip}/32 dev ${bridge}`]);
    }
    const revision = await this.plane?.release(n, endpointId);
    if (revision !== undefined) await this.plane!.appliedEverywhere(revision);
  }

  forgetEndpoint(endpointId: string): Promise<void> {
    return this.guards.forget(hostIfname(endpointId));
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
