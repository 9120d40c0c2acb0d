import { setSysctl } from '../kernel/sysctl.js';
import { BadRequestError, ConflictError } from '../util/errors.js';
import { deleteLink, ensureBridge, joinEndpoint, macFor } from './bridge.js';
import type { CreateContext, EndpointJoin, EndpointLeave, NetworkDriver } from './driver.js';
import { parseCidr } from './ipam.js';
import { parseCidr6 } from './ipam6.js';
import { OPT_BRIDGE_NAME, OPT_DEFAULT_BRIDGE, OPT_HOST_BINDING, OPT_ICC, OPT_MASQ, OPT_MTU, optBool, parseMtu } from './options.js';
import type { NetworkRecord } from './types.js';

const KNOWN_OPTS = [OPT_BRIDGE_NAME, OPT_ICC, OPT_MASQ, OPT_MTU, OPT_HOST_BINDING, OPT_DEFAULT_BRIDGE];

/** The host end of an endpoint's veth, named after the endpoint so the host side alone can find it. */
function hostIfname(endpointId: string): string {
  return `vb${endpointId.slice(0, 11)}`;
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
  readonly hostFirewall = true;
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
    if (bridge.length > 15) throw new BadRequestError(`bridge name ${bridge} is longer than 15 characters`);
    if (ctx.others.some((o) => o.bridge === bridge)) throw new ConflictError(`bridge ${bridge} is already used by another network`);
    n.bridge = bridge;
  }

  async ensureNetwork(n: NetworkRecord): Promise<void> {
    const pool = n.pools![0]!;
    const pool6 = n.pools6?.[0];
    await ensureBridge({
      name: n.bridge!, gatewayCidr: `${pool.gateway}/${parseCidr(pool.subnet).prefix}`, mtu: n.mtu ?? this.mtuDefault(), mac: macFor(pool.gateway),
      ...(pool6 ? { gateway6Cidr: `${pool6.gateway}/${parseCidr6(pool6.subnet).prefix}` } : {}),
    });
    // The host's own connections to 127.0.0.1:PORT are DNATed out through the bridge; the kernel
    // only routes a loopback source out of an interface that allows it (this bridge, nothing else).
    await setSysctl(`net.ipv4.conf.${n.bridge}.route_localnet`, 1);
  }

  async deleteNetwork(n: NetworkRecord): Promise<void> {
    if (n.bridge) await deleteLink(n.bridge);
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
