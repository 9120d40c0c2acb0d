import { ipBatch, ipJson, linkExists } from '../kernel/netns.js';
import { setSysctl } from '../kernel/sysctl.js';
import { ApiError, BadRequestError, ForbiddenError } from '../util/errors.js';
import { OPT_MTU, parseMtu } from './options.js';
import type { CreateContext, EndpointJoin, EndpointLeave, NetworkDriver } from './driver.js';
import { overlaps, parseCidr } from './ipam.js';
import type { NetworkRecord } from './types.js';

export const OPT_PARENT = 'parent';
const MACVLAN_MODES = ['bridge', 'private', 'vepa', 'passthru'];
const IPVLAN_MODES = ['l2', 'l3', 'l3s'];

/** Kernel names of the veth pair berth makes as the parent of an internal network without one. */
export function internalParentNames(networkId: string): { parent: string; peer: string } {
  return { parent: `bmi${networkId.slice(0, 11)}`, peer: `bmj${networkId.slice(0, 11)}` };
}

/** Docker names a macvlan network in its errors by its dummy link name, dm-<id12> (di- for ipvlan). */
function dockerName(n: NetworkRecord): string {
  return `${n.Driver === 'ipvlan' ? 'di' : 'dm'}-${n.Id.slice(0, 12)}`;
}

/** The MTU of a link in berthd's namespace, when it exists (a VLAN parent to be made does not yet). */
async function linkMtu(name: string | undefined): Promise<number | undefined> {
  if (!name) return undefined;
  try {
    return (await ipJson<Array<{ mtu?: number }>>(undefined, ['link', 'show', 'dev', name]))[0]?.mtu;
  } catch {
    return undefined;
  }
}

/** An error of the kernel that says "this link type does not exist here". */
function unknownType(e: unknown): boolean {
  return /unknown device type|not supported|operation not supported/i.test(e instanceof Error ? e.message : String(e));
}

/**
 * The macvlan and ipvlan drivers: each container gets a child of a parent link in berthd's
 * namespace, created directly inside the container's namespace under its final name, so nothing
 * half-made is ever visible on the host side. Children share the parent's wire: they reach other
 * machines on it directly, with no bridge, NAT or firewall of berth's in the path, and (a kernel
 * rule of macvlan) never the parent's own host.
 */
export class VlanDriver implements NetworkDriver {
  readonly avoidsRoutedSubnets = false;
  readonly publishes = false;
  readonly hostFirewall = false;
  readonly ipv6 = true;

  constructor(readonly name: 'macvlan' | 'ipvlan', private readonly mtuDefault: () => number) {}

  private get modeOption(): string { return this.name === 'macvlan' ? 'macvlan_mode' : 'ipvlan_mode'; }

  async configure(n: NetworkRecord, ctx: CreateContext): Promise<void> {
    const known = [OPT_PARENT, this.modeOption, OPT_MTU];
    for (const k of Object.keys(n.Options)) {
      if (!known.includes(k)) throw new BadRequestError(`unknown ${this.name} driver option ${k}`);
    }
    if (!ctx.subnetGiven) {
      throw new BadRequestError(`${this.name} networks need a subnet (--subnet): it must be the subnet of the parent's link, which berth cannot guess`);
    }
    const modes = this.name === 'macvlan' ? MACVLAN_MODES : IPVLAN_MODES;
    const mode = n.Options[this.modeOption] || modes[0]!;
    if (!modes.includes(mode)) {
      throw new BadRequestError(`requested ${this.name} mode '${mode}' is not valid, '${modes[0]}' mode is the ${this.name} driver default`);
    }
    if (n.Options[OPT_MTU] !== undefined) n.mtu = parseMtu(n.Options[OPT_MTU], ctx.mtuDefault);
    const parent = n.Options[OPT_PARENT];
    if (!parent) {
      if (!n.Internal) {
        throw new BadRequestError(`${this.name} networks need a parent interface (-o parent=IFACE) unless they are --internal`);
      }
      n.parent = internalParentNames(n.Id).parent;
      n.parentOwned = true;
    } else {
      if (parent === 'lo') throw new BadRequestError(`loopback interface is not a valid ${this.name} parent link`);
      if (parent.length > 15 || !/^[a-zA-Z0-9_.@-]+$/.test(parent)) throw new BadRequestError(`invalid parent interface name ${parent}`);
      n.parent = parent;
      // Where the kernel has no ipvlan, that is the one thing worth saying, before any other check.
      if (this.name === 'ipvlan' && (await linkExists(parent))) await this.probeIpvlan(n);
      const sharer = ctx.others.find((o) => o.parent === parent && (o.Driver === 'macvlan' || o.Driver === 'ipvlan'));
      if (await linkExists(parent)) {
        // A VLAN sub-interface another network made stays berth's, so the last user removes it.
        n.parentOwned = !!sharer?.parentOwned;
      } else {
        const vlan = /^(.+)\.(\d+)$/.exec(parent);
        if (!vlan || !(await linkExists(vlan[1]!))) throw new BadRequestError(`-o parent interface was not found on the host: ${parent}`);
        const id = Number(vlan[2]);
        if (id < 1 || id > 4094) throw new BadRequestError(`vlan id must be between 1-4094, received: ${id}`);
        n.parentOwned = true;
      }
      this.checkSharing(n, mode, ctx.others);
      const parentMtu = await linkMtu(n.Options[OPT_MTU] !== undefined ? parent : undefined);
      if (n.mtu && parentMtu && n.mtu > parentMtu) {
        throw new BadRequestError(`the MTU of a ${this.name} network (${n.mtu}) cannot exceed its parent's (${parentMtu})`);
      }
    }
    // Options stay as the user gave them, as in Docker's inspect (compose compares them).
  }

  private mode(n: NetworkRecord): string {
    return n.Options[this.modeOption] || (this.name === 'macvlan' ? MACVLAN_MODES : IPVLAN_MODES)[0]!;
  }

  /** Several networks may share a parent, unless their subnets overlap or one is passthru. */
  private checkSharing(n: NetworkRecord, mode: string, others: NetworkRecord[]): void {
    const subnets = (n.pools ?? []).map((p) => parseCidr(p.subnet));
    for (const o of others) {
      if (o.parent !== n.parent || (o.Driver !== 'macvlan' && o.Driver !== 'ipvlan')) continue;
      if (o.Driver !== n.Driver) {
        throw new ForbiddenError(`network ${dockerName(o)} is already using parent interface ${n.parent} with the ${o.Driver} driver`);
      }
      if (mode === 'passthru') throw new ForbiddenError(`cannot use mode passthru, macvlan network ${dockerName(o)} is already using parent interface ${n.parent}`);
      if (o.Options.macvlan_mode === 'passthru') throw new ForbiddenError(`macvlan network ${dockerName(o)} is already using parent interface ${n.parent} in mode passthru`);
      const clash = (o.pools ?? []).find((p) => subnets.some((s) => overlaps(s, parseCidr(p.subnet))));
      if (clash) {
        throw new ForbiddenError(`network ${dockerName(o)} is already using parent interface ${n.parent} with an overlapping subnet ${clash.subnet}`);
      }
    }
  }

  async ensureNetwork(n: NetworkRecord): Promise<void> {
    const parent = n.parent!;
    if (!n.Options[OPT_PARENT]) {
      await this.ensureInternalParent(n);
    } else if (n.parentOwned && !(await linkExists(parent))) {
      const [, base, id] = /^(.+)\.(\d+)$/.exec(parent)!;
      try {
        await ipBatch(undefined, [`link add link ${base} name ${parent} type vlan id ${id}`, `link set ${parent} up`]);
      } catch (e) {
        await ipBatch(undefined, [`link del ${parent}`]).catch(() => undefined);
        if (unknownType(e)) {
          throw new ApiError(400, `cannot create the VLAN sub-interface ${parent}: this kernel has no 802.1q VLAN support (the 8021q module is missing)`);
        }
        throw e;
      }
    } else if (!(await linkExists(parent))) {
      // After a restart: a parent the user owns went away; endpoints fail until it is back.
      console.error(`berthd: parent interface ${parent} of network ${n.Name} is missing`);
      return;
    }
    if (this.name === 'ipvlan' && !n.Options[OPT_PARENT]) await this.probeIpvlan(n);
  }

  /**
   * Without a dummy link type on these kernels, an internal network's parent is a veth pair of
   * berth's. The far end is up (a child has no carrier otherwise) but deaf: no ARP, no IPv6, no
   * forwarding, so nothing on the network can reach berthd's namespace through it.
   */
  private async ensureInternalParent(n: NetworkRecord): Promise<void> {
    const { parent, peer } = internalParentNames(n.Id);
    if (!(await linkExists(parent))) {
      await ipBatch(undefined, [`link del ${peer}`]).catch(() => undefined);
      await ipBatch(undefined, [
        `link add name ${parent} mtu ${n.mtu ?? this.mtuDefault()} type veth peer name ${peer} mtu ${n.mtu ?? this.mtuDefault()}`,
        `link set ${peer} arp off`,
      ]);
    }
    for (const dev of [parent, peer]) {
      // Best effort, as before: a host without IPv6 has no disable_ipv6 to set.
      await setSysctl(`net.ipv6.conf.${dev}.disable_ipv6`, 1).catch(() => undefined);
      await setSysctl(`net.ipv4.conf.${dev}.forwarding`, 0).catch(() => undefined);
    }
    await ipBatch(undefined, [`link set ${peer} up`, `link set ${parent} up`]);
  }

  /**
   * Where the kernel has no ipvlan, say so at create time rather than at the first container: a
   * throwaway child of the parent, deleted in the same batch, is the only reliable test.
   */
  private async probeIpvlan(n: NetworkRecord): Promise<void> {
    const probe = `bmp${n.Id.slice(0, 11)}`;
    try {
      await ipBatch(undefined, [`link add link ${n.parent} name ${probe} type ipvlan mode l2`, `link del ${probe}`]);
    } catch (e) {
      await ipBatch(undefined, [`link del ${probe}`]).catch(() => undefined);
      if (unknownType(e)) throw new ApiError(400, 'ipvlan networks are not available: this kernel has no ipvlan support (the ipvlan module is missing)');
      throw e;
    }
  }

  async deleteNetwork(n: NetworkRecord, remaining: NetworkRecord[]): Promise<void> {
    if (!n.parentOwned || !n.parent) return;
    if (remaining.some((o) => o.parent === n.parent)) return;
    if (!n.Options[OPT_PARENT]) {
      // Deleting one end of a veth removes both.
      const { parent, peer } = internalParentNames(n.Id);
      for (const dev of [parent, peer]) if (await linkExists(dev)) await ipBatch(undefined, [`link del ${dev}`]).catch(() => undefined);
      return;
    }
    if (await linkExists(n.parent)) await ipBatch(undefined, [`link del ${n.parent}`]);
  }

  async join(n: NetworkRecord, j: EndpointJoin): Promise<{ mac: string }> {
    const mode = this.mode(n);
    const mtu = n.mtu ? ` mtu ${n.mtu}` : '';
    // ipvlan children share the parent's MAC; macvlan children each have their own.
    const address = this.name === 'macvlan' ? ` address ${j.mac}` : '';
    await ipBatch(undefined, [`link add link ${n.parent} name ${j.ifname}${address}${mtu} netns ${j.netnsPath} type ${this.name} mode ${mode}`]);
    try {
      const inside = [`addr add ${j.addressCidr} dev ${j.ifname}`];
      // No duplicate address detection: the address is the container's the moment it runs.
      if (j.address6Cidr) inside.push(`addr add ${j.address6Cidr} dev ${j.ifname} nodad`);
      inside.push(`link set ${j.ifname} up`);
      // In ipvlan's L3 modes the parent's host routes; there is no gateway to ARP for (as in Docker).
      const l3 = this.name === 'ipvlan' && mode !== 'l2';
      if (j.gateway) inside.push(l3 ? `route replace default dev ${j.ifname}` : `route replace default via ${j.gateway} dev ${j.ifname}`);
      if (j.gateway6) inside.push(l3 ? `route replace ::/0 dev ${j.ifname}` : `route replace default via ${j.gateway6} dev ${j.ifname}`);
      await ipBatch(j.netnsPath, inside);
      if (this.name === 'macvlan') return { mac: j.mac };
      const info = await ipJson<Array<{ address?: string }>>(j.netnsPath, ['link', 'show', 'dev', j.ifname]);
      return { mac: info[0]?.address ?? '' };
    } catch (e) {
      await ipBatch(j.netnsPath, [`link del ${j.ifname}`]).catch(() => undefined);
      throw e;
    }
  }

  async leave(_n: NetworkRecord, ep: EndpointLeave): Promise<void> {
    // The child lives only inside the container's namespace: with the namespace gone, so is it
    // (and an empty path must never become a deletion in berthd's own namespace).
    if (!ep.netnsPath) return;
    await ipBatch(ep.netnsPath, [`link del ${ep.ifname}`]);
  }
}
