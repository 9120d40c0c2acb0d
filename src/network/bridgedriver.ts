import { deleteLink, ensureBridge, ifSysctl, ipBatchHost, joinEndpoint, linkAddresses, linkKind, notABridge } from '../kernel/bridge.js';
import { linkExists } from '../kernel/netns.js';
import { nftCommands } from '../kernel/nft.js';
import { BadRequestError, ConflictError } from '../util/errors.js';
import type { CreateContext, EndpointJoin, EndpointLeave, NetworkDriver } from './driver.js';
import { guardTableScript, linkLocalAllowance, type EndpointSource } from './firewall.js';
import { guardSetElements } from './guardread.js';
import { PortGuards } from './portguard.js';
import { parseCidr } from './ipam.js';
import { macFor } from './mac.js';
import { parseCidr6 } from './ipam6.js';
import { checkIfname, OPT_BRIDGE_NAME, OPT_DEFAULT_BRIDGE, OPT_HOST_BINDING, OPT_ICC, OPT_MASQ, OPT_MTU, optBool, parseMtu } from './options.js';
import type { NetworkRecord } from './types.js';

/** The prefix of the bridge names berth makes up (`bth-` and 11 characters of the network id). */
const BRIDGE_PREFIX = 'bth-';

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

  private readonly guards = new PortGuards();
  private guardReady?: Promise<void>;

  constructor(private readonly mtuDefault: () => number) {}

  hostLink(_n: NetworkRecord, endpointId: string): string {
    return hostIfname(endpointId);
  }

  hostBridge(n: NetworkRecord): string | undefined {
    return n.bridgeAdopted ? undefined : n.bridge;
  }

  /** The guard table, made (or its rules refreshed) once per berthd process; a failure is tried again. */
  private ensureGuard(): Promise<void> {
    this.guardReady ??= nftCommands(guardTableScript()).then(() => this.pruneGuard()).catch((e: Error) => {
      this.guardReady = undefined;
      throw e;
    });
    return this.guardReady;
  }

  async configure(n: NetworkRecord, ctx: CreateContext): Promise<void> {
    for (const k of Object.keys(n.Options)) {
      if (!KNOWN_OPTS.includes(k)) throw new BadRequestError(`unknown bridge driver option ${k}`);
    }
    n.mtu = parseMtu(n.Options[OPT_MTU], ctx.mtuDefault);
    optBool(n.Options[OPT_ICC], true);
    optBool(n.Options[OPT_MASQ], true);
    const bridge = n.Options[OPT_BRIDGE_NAME] ?? `${BRIDGE_PREFIX}${n.Id.slice(0, 11)}`;
    checkIfname(bridge);
    if (ctx.others.some((o) => o.bridge === bridge)) throw new ConflictError(`bridge ${bridge} is already used by another network`);
    // A name that is taken: Docker refuses anything but a bridge, and uses a bridge that exists.
    // berth records that the bridge was not its own, so `network rm` never deletes it.
    const kind = (await linkExists(bridge)) ? await linkKind(bridge) : undefined;
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
    // At a start, the guard's rules are brought up to date before any endpoint of the last berthd
    // sends again (once per process: later networks pay nothing).
    await this.ensureGuard();
  }

  async deleteNetwork(n: NetworkRecord): Promise<void> {
    if (!n.bridge) return;
    // A name berth generated is berth's by the naming rule (DESIGN.md): no `ip` process to ask.
    if (!n.bridgeAdopted && !n.Options[OPT_BRIDGE_NAME] && n.bridge.startsWith(BRIDGE_PREFIX)) return deleteLink(n.bridge);
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

  /**
   * Drops the elements of ports that no longer exist (their container's namespace went away
   * without a leave, or berthd died in between): the kernel is the truth for what exists.
   */
  private async pruneGuard(): Promise<void> {
    const ports = (await guardSetElements('ports')).filter((e): e is string => typeof e === 'string');
    const live = new Set<string>();
    for (const port of ports) {
      if (await linkExists(port)) live.add(port);
      else await this.guards.revoke(port);
    }
    if (!live.size) return;
    const macs = (await guardSetElements('macs')).filter((c): c is string[] => Array.isArray(c) && live.has(c[0]!));
    await nftCommands(linkLocalAllowance(macs.map(([port, mac]) => ({ port: port!, mac: mac! }))));
  }

  async join(n: NetworkRecord, j: EndpointJoin): Promise<void> {
    const hostIf = hostIfname(j.endpointId);
    // The port is guarded before it exists, so not one frame of it goes out unchecked.
    const src: EndpointSource = { port: hostIf, mac: j.mac, ip: j.addressCidr.split('/')[0]!, ...(j.address6Cidr ? { ip6: j.address6Cidr.split('/')[0]! } : {}) };
    // The allowance is written while the veth is made inside the namespace; the port joins the
    // bridge only once it is in place.
    const allowed = this.guards.allow(src, this.ensureGuard());
    try {
      await joinEndpoint({
        beforeAttach: allowed,
        netnsPath: j.netnsPath, ifname: j.ifname, hostIf, bridge: n.bridge!, mac: j.mac,
        addressCidr: j.addressCidr, gateway: j.gateway, address6Cidr: j.address6Cidr, gateway6: j.gateway6,
        isolated: !optBool(n.Options[OPT_ICC], true),
        mtu: n.mtu ?? this.mtuDefault(),
      });
    } catch (e) {
      await allowed.catch(() => undefined);
      await this.guards.revoke(hostIf);
      throw e;
    }
  }

  async leave(_n: NetworkRecord, ep: EndpointLeave): Promise<void> {
    const hostIf = hostIfname(ep.endpointId);
    // The port goes first: its allowances must not outlive the guard on it.
    await deleteLink(hostIf);
    // With the port gone its allowances match no frame (a new endpoint gets a port of another
    // name), so the disconnect does not wait for their nft transaction; one cut short by a crash
    // is pruned at the next start.
    void this.guards.revoke(hostIf);
  }

  forgetEndpoint(endpointId: string): Promise<void> {
    return this.guards.forget(hostIfname(endpointId));
  }
}

