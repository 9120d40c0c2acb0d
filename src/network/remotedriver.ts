import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { ipBatch, ipJson } from '../kernel/netns.js';
import { NETWORK_DRIVER, pluginError, type ActivePlugin, type NetworkCapabilities, type PluginManager } from '../plugins/manager.js';
import { readJson, writeJsonAtomic } from '../store/atomic.js';
import { ApiError, BadRequestError } from '../util/errors.js';
import type { CreateContext, EndpointJoin, EndpointLeave, NetworkDriver } from './driver.js';
import { endpointOptions, hasPorts, sandboxOptions } from './remoteoptions.js';
import { SwarmCopies, type SwarmPlane } from './remoteswarm.js';
import type { NetworkRecord } from './types.js';

/** Docker's option keys in a remote CreateNetwork (libnetwork netlabel). */
const GENERIC = 'com.docker.network.generic';
const ENABLE_IPV6 = 'com.docker.network.enable_ipv6';
const INTERNAL = 'com.docker.network.internal';

/** What berth must remember of an endpoint between its join and its leave (a restart may come between). */
interface EndpointState {
  networkId: string;
  endpointId: string;
  /** Set once CreateEndpoint answered; Join, the interface and external connectivity follow. */
  created?: boolean;
  joined?: boolean;
  srcName?: string;
  ifname?: string;
  netnsPath?: string;
  external?: boolean;
}

interface JoinResponse {
  InterfaceName?: { SrcName?: string; DstName?: string; DstPrefix?: string } | null;
  Gateway?: string;
  GatewayIPv6?: string;
  StaticRoutes?: Array<{ Destination?: string; RouteType?: number; NextHop?: string }> | null;
  DisableGatewayService?: boolean;
  Err?: string;
}

const LINK_NAME = /^[a-zA-Z0-9_.-]{1,15}$/;

/** The IPAM data of a network as Docker hands it to drivers (driverapi.IPAMData's JSON). */
export function ipamData(n: NetworkRecord, v6: boolean): Array<Record<string, unknown>> {
  const pools = v6 ? n.pools6 ?? [] : n.pools ?? [];
  return pools.map((p) => {
    const prefix = p.subnet.split('/')[1];
    const aux = 'auxAddresses' in p ? p.auxAddresses : undefined;
    return {
      AddressSpace: p.addressSpace ?? 'LocalDefault', Pool: p.subnet,
      ...(p.gateway ? { Gateway: `${p.gateway}/${prefix}` } : {}),
      ...(aux && Object.keys(aux).length ? { AuxAddresses: Object.fromEntries(Object.entries(aux).map(([k, ip]) => [k, `${ip}/${prefix}`])) } : {}),
    };
  });
}

/**
 * A network driver that is a Docker plugin (libnetwork's remote driver): every step of a network's
 * and an endpoint's life is a call to the plugin, in Docker's order with Docker's payloads; berth
 * moves the interface the plugin names into the container and configures it, as libnetwork's
 * sandbox does. Nothing here is contacted before first use, so a berthd restart does not wait for
 * plugins. What was asked of the plugin is kept in small state files, so a leave after a restart
 * undoes exactly what was done.
 */
export class RemoteDriver implements NetworkDriver {
  readonly avoidsRoutedSubnets = true;
  /** The plugin carries the traffic: no published ports, no host firewall of berth's. */
  readonly publishes = false;
  readonly hostFirewall = false;
  readonly external = true;
  /** What GetCapabilities said, once the plugin has been activated. */
  private caps?: NetworkCapabilities;
  private readonly copies: SwarmCopies;

  /** `plane`: the cluster's side while this host is in a swarm, for global-scope plugins' networks. */
  constructor(readonly name: string, private readonly plugins: PluginManager, private readonly stateDir: string, plane: () => SwarmPlane | undefined = () => undefined) {
    this.copies = new SwarmCopies(name, plane, {
      create: (n) => this.createCopy(n), remove: (n) => this.deleteNetwork(n, []), inUse: (id) => this.inUse(id),
    });
  }

  /**
   * A global-scope plugin's networks are swarm networks (libnetwork redirects their create to the
   * swarm manager): made through the cluster store and known on every host.
   */
  get scope(): 'swarm' | undefined {
    return this.caps?.Scope === 'global' ? 'swarm' : undefined;
  }

  /** The swarm's IPAM gives a swarm network IPv4 only here (as berth's overlay). */
  get ipv6(): boolean {
    return this.caps?.Scope !== 'global';
  }

  /** Finds and activates the plugin; Docker's 404 when it is nowhere. */
  async activate(): Promise<ActivePlugin> {
    const p = await this.plugins.get(this.name, NETWORK_DRIVER);
    this.caps = p.network;
    return p;
  }

  private async call<T extends { Err?: string }>(method: string, body: unknown): Promise<T> {
    const p = await this.activate();
    try {
      const r = await p.client.call<T>(`${NETWORK_DRIVER}.${method}`, body);
      if (r && typeof r.Err === 'string' && r.Err) throw new Error(`remote: ${r.Err}`);
      return r ?? ({} as T);
    } catch (e) {
      throw pluginError(this.name, e);
    }
  }

  /** A call whose absence from the plugin is no failure (libnetwork tolerates 404 for these). */
  private async optional(method: string, body: unknown): Promise<void> {
    try {
      await this.call(method, body);
    } catch (e) {
      if (e instanceof ApiError && / 404 page not found|: 404$/.test(e.message)) return;
      throw e;
    }
  }

  async configure(n: NetworkRecord, _ctx: CreateContext): Promise<void> {
    const p = await this.activate();
    // The swarm's pools are cluster-wide; an IPAM plugin's pool lives in one host's plugin.
    if (p.network?.Scope === 'global' && n.IPAM.Driver !== 'default') {
      throw new BadRequestError(`network plugin "${this.name}" is global-scope, so its networks are swarm networks, whose addresses berth takes from the swarm's IPAM: --ipam-driver ${n.IPAM.Driver} is not supported there`);
    }
    // Options belong to the plugin: berth passes them on unread, as Docker does.
  }

  /**
   * AllocateNetwork, once, on the manager that creates a swarm network (swarmkit's allocator):
   * the plugin is given the network's options and the swarm's pool, and what it answers becomes
   * the network's options everywhere, the ones each host's CreateNetwork carries (Docker keeps
   * them as the network's DriverState).
   */
  async allocate(n: NetworkRecord): Promise<void> {
    const ipv4 = (n.pools ?? []).map((p) => ({ AddressSpace: '', Pool: p.subnet, Gateway: `${p.gateway}/${p.subnet.split('/')[1]}` }));
    const r = await this.call<{ Options?: Record<string, unknown> | null; Err?: string }>('AllocateNetwork', { NetworkID: n.Id, Options: { ...n.Options }, IPv4Data: ipv4, IPv6Data: null });
    const options = r.Options ?? {};
    // Docker reads them into a map of strings, and fails the allocation when they are not.
    if (typeof options !== 'object' || Object.values(options).some((v) => typeof v !== 'string')) throw new ApiError(500, `plugin "${this.name}": AllocateNetwork answered Options that are not a map of strings`);
    n.Options = { ...(options as Record<string, string>) };
  }

  /** FreeNetwork, on the manager that removed the network, once every host has dropped it. */
  async free(n: NetworkRecord): Promise<void> {
    await this.call('FreeNetwork', { NetworkID: n.Id });
  }

  private networkFile(id: string): string { return join(this.stateDir, 'networks', `${id}.json`); }
  private endpointFile(id: string): string { return join(this.stateDir, 'endpoints', `${id}.json`); }

  private async saveEndpoint(s: EndpointState): Promise<void> {
    await fs.mkdir(join(this.stateDir, 'endpoints'), { recursive: true, mode: 0o700 });
    await writeJsonAtomic(this.endpointFile(s.endpointId), s);
  }

  /** A swarm network is made on this host by its first endpoint's join, not when it appears. */
  async ensureNetwork(n: NetworkRecord): Promise<void> {
    if (n.Scope !== 'swarm') await this.createCopy(n);
  }

  /** CreateNetwork, once: a restart finds the network made and asks nothing of the plugin. */
  private async createCopy(n: NetworkRecord): Promise<void> {
    if (await readJson(this.networkFile(n.Id))) return;
    const options: Record<string, unknown> = { [GENERIC]: { ...n.Options }, [ENABLE_IPV6]: n.EnableIPv6 };
    if (n.Internal) options[INTERNAL] = true;
    await this.call('CreateNetwork', { NetworkID: n.Id, Options: options, IPv4Data: ipamData(n, false), IPv6Data: ipamData(n, true) });
    await fs.mkdir(join(this.stateDir, 'networks'), { recursive: true, mode: 0o700 });
    await writeJsonAtomic(this.networkFile(n.Id), { id: n.Id });
  }

  async deleteNetwork(n: NetworkRecord, _remaining: NetworkRecord[]): Promise<void> {
    if (!(await readJson(this.networkFile(n.Id)))) return;
    // A swarm network dropped here with endpoints still on it (this node left the swarm, or the
    // network was removed while this node was away): the plugin hears them leave first, as Docker
    // disconnects a node's containers from attachable networks when it leaves.
    if (n.Scope === 'swarm') {
      for (const s of await this.endpointsOn(n.Id)) await this.undo(s, s.netnsPath ?? '').catch(() => undefined);
    }
    await this.call('DeleteNetwork', { NetworkID: n.Id });
    await fs.rm(this.networkFile(n.Id), { force: true });
  }

  /**
   * CreateEndpoint, Join, the interface into the container, ProgramExternalConnectivity for the
   * endpoint that carries the default route, EndpointOperInfo: libnetwork's sequence. A failure
   * at any step undoes the earlier ones, so nothing is left half-made (the caller frees the address).
   */
  /** Whether an endpoint of this host, in any state, is on the network. */
  private async inUse(networkId: string): Promise<boolean> {
    return (await this.endpointsOn(networkId)).length > 0;
  }

  private async endpointsOn(networkId: string): Promise<EndpointState[]> {
    const dir = join(this.stateDir, 'endpoints');
    const out: EndpointState[] = [];
    for (const f of await fs.readdir(dir).catch(() => [] as string[])) {
      const s = f.endsWith('.json') ? await readJson<EndpointState>(join(dir, f)).catch(() => undefined) : undefined;
      if (s?.networkId === networkId) out.push(s);
    }
    return out;
  }

  async join(n: NetworkRecord, j: EndpointJoin): Promise<{ mac: string }> {
    return n.Scope === 'swarm' ? this.copies.join(n, j, () => this.attach(n, j)) : this.attach(n, j);
  }

  private async attach(n: NetworkRecord, j: EndpointJoin): Promise<{ mac: string }> {
    const s: EndpointState = { networkId: n.Id, endpointId: j.endpointId };
    // Written before the plugin is asked, so a crash between the two still finds it at the leave.
    await this.saveEndpoint(s);
    try {
      return await this.joinSteps(n, j, s);
    } catch (e) {
      await this.undo(s, j.netnsPath).catch((u: Error) => console.error(`berthd: plugin ${this.name}: undoing endpoint ${j.endpointId.slice(0, 12)}: ${u.message}`));
      throw e;
    }
  }

  private async joinSteps(n: NetworkRecord, j: EndpointJoin, s: EndpointState): Promise<{ mac: string }> {
    const iface = { Address: j.addressCidr, AddressIPv6: j.address6Cidr ?? '', MacAddress: j.macFixed ? j.mac : '' };
    const created = await this.call<{ Interface?: { Address?: string; AddressIPv6?: string; MacAddress?: string } | null; Err?: string }>('CreateEndpoint', {
      NetworkID: n.Id, EndpointID: j.endpointId, Interface: iface, Options: endpointOptions(j),
    }).catch((e: Error) => {
      // libnetwork's words around a refused endpoint.
      throw e instanceof ApiError ? new ApiError(e.status, `failed to create endpoint ${j.owner?.name ?? j.endpointId.slice(0, 12)} on network ${n.Name}: ${e.message}`) : e;
    });
    s.created = true;
    await this.saveEndpoint(s);
    const back = created.Interface ?? {};
    // An address berth's IPAM gave cannot be changed by the driver (libnetwork's rule).
    if ((back.Address && iface.Address) || (back.AddressIPv6 && iface.AddressIPv6)) {
      throw new ApiError(500, `plugin "${this.name}": driver modified interface address: ${back.Address || back.AddressIPv6}`);
    }
    if (back.MacAddress && iface.MacAddress) throw new ApiError(500, `plugin "${this.name}": driver modified interface MAC address: ${back.MacAddress}`);
    const joined = await this.call<JoinResponse>('Join', { NetworkID: n.Id, EndpointID: j.endpointId, SandboxKey: j.netnsPath, Options: sandboxOptions(j) });
    s.joined = true;
    const src = joined.InterfaceName?.SrcName ?? '';
    if (!LINK_NAME.test(src)) throw new ApiError(500, `plugin "${this.name}": Join named no usable interface (SrcName "${src}")`);
    s.srcName = src;
    s.netnsPath = j.netnsPath;
    s.ifname = await this.destinationName(j, joined.InterfaceName!);
    await this.saveEndpoint(s);
    const mac = back.MacAddress || iface.MacAddress;
    await this.checkMovable(src);
    try {
      await ipBatch(undefined, [`link set ${src} netns ${j.netnsPath}`]);
    } catch (e) {
      throw new ApiError(500, `plugin "${this.name}": moving interface ${src} into the container: ${(e as Error).message.split('\n')[0]}`);
    }
    const inside = [`link set ${src} name ${s.ifname}`];
    if (mac) inside.push(`link set ${s.ifname} address ${mac}`);
    inside.push(`addr add ${j.addressCidr} dev ${s.ifname}`);
    if (j.address6Cidr) inside.push(`addr add ${j.address6Cidr} dev ${s.ifname} nodad`);
    inside.push(`link set ${s.ifname} up`);
    // The gateway is the plugin's to give; with none, the container has no default route on this network.
    const carriesDefault = j.gateway !== undefined;
    if (carriesDefault && joined.Gateway) inside.push(`route replace default via ${joined.Gateway} dev ${s.ifname}`);
    if (carriesDefault && joined.GatewayIPv6) inside.push(`route replace default via ${joined.GatewayIPv6} dev ${s.ifname}`);
    for (const r of joined.StaticRoutes ?? []) {
      if (!r.Destination) continue;
      // RouteType 1 is CONNECTED (on the link), 0 NEXTHOP (through NextHop).
      inside.push(r.RouteType === 1 || !r.NextHop ? `route replace ${r.Destination} dev ${s.ifname}` : `route replace ${r.Destination} via ${r.NextHop} dev ${s.ifname}`);
    }
    try {
      await ipBatch(j.netnsPath, inside);
    } catch (e) {
      throw new ApiError(500, `plugin "${this.name}": configuring interface ${src} as ${s.ifname}: ${(e as Error).message.split('\n')[0]}`);
    }
    if (carriesDefault && !n.Internal) {
      await this.optional('ProgramExternalConnectivity', { NetworkID: n.Id, EndpointID: j.endpointId, Options: sandboxOptions(j) });
      s.external = true;
      await this.saveEndpoint(s);
    }
    // Docker reads the endpoint's operational data for its port map, and once more when that held no ports.
    const info1 = await this.operInfo(n, j);
    if (!hasPorts(info1)) await this.operInfo(n, j);
    const info = await ipJson<Array<{ address?: string }>>(j.netnsPath, ['link', 'show', 'dev', s.ifname]);
    return { mac: info[0]?.address ?? mac };
  }

  private async operInfo(n: NetworkRecord, j: EndpointJoin): Promise<Record<string, unknown>> {
    try {
      const r = await this.call<{ Value?: Record<string, unknown> | null; Err?: string }>('EndpointOperInfo', { NetworkID: n.Id, EndpointID: j.endpointId });
      return r.Value ?? {};
    } catch (e) {
      if (e instanceof ApiError && / 404 page not found|: 404$/.test(e.message)) return {};
      throw e;
    }
  }

  /**
   * berth moves only a link a plugin can have made for the endpoint: a virtual one (veth, macvlan …)
   * that is no bridge and belongs to no bridge. A plugin naming the host's own NIC, loopback or a
   * bridge port (berth's or anyone's) is refused rather than obeyed.
   */
  private async checkMovable(src: string): Promise<void> {
    let link: { linkinfo?: { info_kind?: string; info_slave_kind?: string }; master?: string } | undefined;
    try {
      link = (await ipJson<Array<typeof link>>(undefined, ['-d', 'link', 'show', 'dev', src]))[0];
    } catch {
      throw new ApiError(500, `plugin "${this.name}": Join named interface ${src}, which does not exist`);
    }
    const kind = link?.linkinfo?.info_kind;
    if (!kind || kind === 'bridge' || link?.master || link?.linkinfo?.info_slave_kind) {
      throw new ApiError(500, `plugin "${this.name}": Join named interface ${src}, which is not a free virtual link the plugin made: refused`);
    }
  }

  /** DstName as given; else DstPrefix and the next free index of that prefix (eth keeps berth's own numbering). */
  private async destinationName(j: EndpointJoin, names: { DstName?: string; DstPrefix?: string }): Promise<string> {
    if (names.DstName) {
      if (!LINK_NAME.test(names.DstName)) throw new ApiError(500, `plugin "${this.name}": bad DstName "${names.DstName}"`);
      return names.DstName;
    }
    const prefix = names.DstPrefix || 'eth';
    if (prefix === 'eth') return j.ifname;
    if (!/^[a-zA-Z_.-][a-zA-Z0-9_.-]{0,11}$/.test(prefix)) throw new ApiError(500, `plugin "${this.name}": bad DstPrefix "${prefix}"`);
    const links = await ipJson<Array<{ ifname: string }>>(j.netnsPath, ['link', 'show']);
    const used = new Set(links.map((l) => l.ifname));
    let i = 0;
    while (used.has(`${prefix}${i}`)) i++;
    return `${prefix}${i}`;
  }

  async leave(n: NetworkRecord, ep: EndpointLeave): Promise<void> {
    const detach = async () => {
      const s = await readJson<EndpointState>(this.endpointFile(ep.endpointId));
      if (s) await this.undo(s, ep.netnsPath);
    };
    return n.Scope === 'swarm' ? this.copies.leave(n, ep, detach) : detach();
  }

  /**
   * RevokeExternalConnectivity, Leave, the interface back to berthd's namespace under its first
   * name (as libnetwork gives it back, for the plugin to delete), DeleteEndpoint. Goes on past a
   * plugin that fails, so berth's side is always undone; the first failure is thrown at the end.
   */
  private async undo(s: EndpointState, netnsPath: string): Promise<void> {
    const errors: Error[] = [];
    const body = { NetworkID: s.networkId, EndpointID: s.endpointId };
    if (s.external) await this.optional('RevokeExternalConnectivity', body).catch((e: Error) => errors.push(e));
    if (s.joined) await this.call('Leave', body).catch((e: Error) => errors.push(e));
    if (s.srcName && s.ifname && netnsPath) {
      // Whichever name it has now: moved and renamed, or still under its first name when the configuration failed.
      for (const name of [s.ifname, s.srcName]) {
        const moved = await ipBatch(netnsPath, [`link set ${name} down`, `link set ${name} name ${s.srcName}`, `link set ${s.srcName} netns ${process.pid}`]).then(() => true, () => false);
        if (moved) break;
      }
    }
    if (s.created) await this.call('DeleteEndpoint', body).catch((e: Error) => errors.push(e));
    await fs.rm(this.endpointFile(s.endpointId), { force: true });
    for (const e of errors) console.error(`berthd: ${e.message}`);
    if (errors[0]) throw errors[0];
  }
}

export { portOptions } from './remoteoptions.js';
