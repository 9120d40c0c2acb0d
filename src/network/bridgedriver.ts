import { BadRequestError, ConflictError } from '../util/errors.js';
import { checkIfname, deleteLink, ensureBridge, ifSysctl, ipBatchHost, joinEndpoint, linkAddresses, linkKind, macFor, notABridge } from './bridge.js';
import type { CreateContext, EndpointJoin, EndpointLeave, NetworkDriver } from './driver.js';
import { parseCidr } from './ipam.js';
import { parseCidr6 } from './ipam6.js';
import type { NetworkRecord } from './types.js';

export const OPT_BRIDGE_NAME = 'com.docker.network.bridge.name';
export const OPT_ICC = 'com.docker.network.bridge.enable_icc';
export const OPT_MASQ = 'com.docker.network.bridge.enable_ip_masquerade';
export const OPT_MTU = 'com.docker.network.driver.mtu';
export const OPT_HOST_BINDING = 'com.docker.network.bridge.host_binding_ipv4';
const KNOWN_OPTS = [OPT_BRIDGE_NAME, OPT_ICC, OPT_MASQ, OPT_MTU, OPT_HOST_BINDING, 'com.docker.network.bridge.default_bridge'];

/** The host end of an endpoint's veth, named after the endpoint so the host side alone can find it. */
function hostIfname(endpointId: string): string {
  return `vb${endpointId.slice(0, 11)}`;
}

export function optBool(v: string | undefined, def: boolean): boolean {
  if (v === undefined) return def;
  if (['true', '1'].includes(v)) return true;
  if (['false', '0'].includes(v)) return false;
  throw new BadRequestError(`invalid boolean value ${v}`);
}

export function parseMtu(v: string | undefined, def: number): number {
  const mtu = v ? Number(v) : def;
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new BadRequestError(`invalid MTU ${v}`);
  return mtu;
}

/**
 * The bridge driver: a Linux bridge per network in berthd's namespace, a veth per endpoint. Its
 * firewall rules (isolation, masquerade, published ports) are built by the controller from every
 * bridge network at once, since they are one nft table.
 */
export class BridgeDriver implements NetworkDriver {
  readonly name = 'bridge' as const;
  readonly avoidsRoutedSubnets = true;
  readonly publishes = true;
  readonly ipv6 = true;

  constructor(private readonly mtuDefault: () => number) {}

  async configure(n: NetworkRecord, ctx: CreateContext): Promise<void> {
    for (const k of Object.keys(n.Options)) {
      if (!KNOWN_OPTS.includes(k)) throw new BadRequestError(`unknown bridge driver option ${k}`);
    }
    n.mtu = parseMtu(n.Options[OPT_MTU], ctx.mtuDefault);
    optBool(n.Options[OPT_ICC], true);
    optBool(n.Options[OPT_MASQ], true);
    const bridge = n.Options[OPT_BRIDGE_NAME] ?? `bth-${n.Id.slice(0, 11)}`;
    checkIfname(bridge);
    if (ctx.others.some((o) => o.bridge === bridge)) throw new ConflictError(`bridge ${bridge} is already used by another network`);
    // A name that is taken: Docker refuses anything but a bridge, and uses a bridge that exists.
    // berth records that the bridge was not its own, so `network rm` never deletes it.
    const kind = await linkKind(bridge);
    if (kind !== undefined && kind !== 'bridge') throw notABridge(bridge);
    if (kind === 'bridge') {
      n.bridgeAdopted = { addresses: await linkAddresses(bridge), routeLocalnet: await ifSysctl('ipv4', bridge, 'route_localnet') };
    }
    n.bridge = bridge;
  }

  async ensureNetwork(n: NetworkRecord): Promise<void> {
    const pool = n.pools![0]!;
    const pool6 = n.pools6?.[0];
    await ensureBridge({
      name: n.bridge!, gatewayCidr: `${pool.gateway}/${parseCidr(pool.subnet).prefix}`, mtu: n.mtu ?? this.mtuDefault(), mac: macFor(pool.gateway),
      ...(pool6 ? { gateway6Cidr: `${pool6.gateway}/${parseCidr6(pool6.subnet).prefix}` } : {}),
      ...(n.bridgeAdopted ? { adopted: true } : {}),
    });
    // The host's own connections to 127.0.0.1:PORT are DNATed out through the bridge; the kernel
    // only routes a loopback source out of an interface that allows it (this bridge, nothing else).
    // firewall.ts drops what a container sends to 127.0.0.0/8 through it (CVE-2020-8558).
    await ifSysctl('ipv4', n.bridge!, 'route_localnet', 1);
  }

  async deleteNetwork(n: NetworkRecord): Promise<void> {
    if (!n.bridge) return;
    const kind = await linkKind(n.bridge);
    if (n.bridgeAdopted) {
      // Not berth's: take back only what berth added, and leave the link.
      if (kind !== 'bridge') return;
      const added = (await linkAddresses(n.bridge)).filter((a) => !n.bridgeAdopted!.addresses.includes(a) && this.gateways(n).includes(a));
      await ipBatchHost(added.map((a) => `addr del ${a} dev ${n.bridge}`));
      await ifSysctl('ipv4', n.bridge, 'route_localnet', n.bridgeAdopted.routeLocalnet).catch(() => undefined);
      return;
    }
    // Only a bridge can be berth's: a record naming another kind of link (a record written before
    // berth checked names, pointing at eth0 or lo) must never delete it.
    if (kind === 'bridge') await deleteLink(n.bridge);
  }

  /** The gateway addresses berth gives the network's bridge, as CIDRs. */
  private gateways(n: NetworkRecord): string[] {
    return [
      ...(n.pools ?? []).map((p) => `${p.gateway}/${parseCidr(p.subnet).prefix}`),
      ...(n.pools6 ?? []).map((p) => `${p.gateway}/${parseCidr6(p.subnet).prefix}`),
    ];
  }

  async join(n: NetworkRecord, j: EndpointJoin): Promise<void> {
    await joinEndpoint({
      netnsPath: j.netnsPath, ifname: j.ifname, hostIf: hostIfname(j.endpointId), bridge: n.bridge!, mac: j.mac,
      addressCidr: j.addressCidr, gateway: j.gateway, address6Cidr: j.address6Cidr, gateway6: j.gateway6,
      isolated: !optBool(n.Options[OPT_ICC], true),
      mtu: n.mtu ?? this.mtuDefault(), daemonPid: process.pid,
    });
  }

  async leave(_n: NetworkRecord, ep: EndpointLeave): Promise<void> {
    await deleteLink(hostIfname(ep.endpointId));
  }
}
