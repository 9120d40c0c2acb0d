import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { nftApply, nftCommands, nftDeleteTable } from '../kernel/nft.js';
import { createNetns, deleteNetns, netnsExists } from '../kernel/netns.js';
import { readJson, removeStaleTemps, writeJsonAtomic } from '../store/atomic.js';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../util/errors.js';
import { newId } from '../util/ids.js';
import { run } from '../util/exec.js';
import type { ContainerRecord } from '../engine/types.js';
import { macFor, routedSubnets, uplinkMtu } from './bridge.js';
import { BridgeDriver, OPT_BRIDGE_NAME, OPT_HOST_BINDING, OPT_ICC, OPT_MASQ, OPT_MTU, optBool } from './bridgedriver.js';
import type { NetworkDriver } from './driver.js';
import { VlanDriver } from './macvlan.js';
import { addNetworkScript, buildRuleset, deleteNetworkScript, portElements, TABLE, type BridgeRules } from './firewall.js';
import { portRequests, PortReservations, type PortMapping, type PortRequest } from './ports.js';
import { allocate, formatCidr, newPool, nextPoolSubnet, overlaps, parseCidr, release } from './ipam.js';
import { allocate6, canonicalIPv6, contains6, formatCidr6, isIPv6, newPool6, nextPool6Subnet, overlaps6, parseCidr6, parseIPv6, release6 } from './ipam6.js';
import { PREDEFINED, type EndpointState, type NetworkRecord } from './types.js';
import type { DnsServer } from '../dns/server.js';
import { programSandboxRedirect } from '../dns/sandbox.js';

/** What a container's run needs from networking: a namespace to join and the addresses it got. */
export interface SandboxInfo {
  /** undefined: share the daemon's namespace (host mode). */
  netnsPath?: string;
  addresses: string[];
  shareHostNetwork: boolean;
  /** The container resolves through berth's embedded DNS (nameserver 127.0.0.11). */
  embeddedDns: boolean;
}

export interface ControllerOptions {
  root: string;
  /** CIDR of the default bridge (--bip), e.g. 172.17.0.1/16. */
  bip?: string;
  defaultBridgeName?: string;
}

/**
 * The network side of the engine, in Docker's CNM terms: networks and the endpoints that join
 * containers' sandboxes to them. It owns what every driver shares (IPAM, endpoints, the embedded
 * DNS, published ports); the drivers (`driver.ts`: bridge, macvlan, ipvlan) and the firewall sit
 * below it; the engine above only calls setUp/tearDown/connect/disconnect. host and none have no
 * driver: they are sandbox modes, not networks with endpoints.
 */
export class NetworkController {
  readonly networks = new Map<string, NetworkRecord>();
  private readonly dir: string;
  readonly netnsDir: string;
  private mtuDefault = 1500;
  private dns?: DnsServer;
  private gen = 0;
  /** Bumped on every endpoint change (changed()), so derived views (DNS) know when to rebuild. */
  get generation(): number {
    return this.gen;
  }

  /**
   * An endpoint on these networks changed, of this container. The resolver's answer caches of
   * those networks' members and of the container are emptied in the same step, so the change is
   * visible to the next query.
   */
  private changed(networks: string[], containerId: string): void {
    this.gen++;
    this.dns?.directoryChanged({ networks, containers: [containerId] });
  }
  /** The resolver port each running container's 127.0.0.11:53 is sent to, to skip rewriting the rule unchanged. */
  private readonly dnsProgrammed = new Map<string, number>();
  private readonly ports = new PortReservations();
  /** The registry of network drivers: the only place that maps a Driver name to code. */
  private readonly drivers: Map<string, NetworkDriver>;
  /** The record write in flight per network (see save()). */
  private readonly saving = new Map<string, Promise<void>>();
  /** Running containers found at start, whose in-namespace resolvers must be opened again. */
  private adopted: ContainerRecord[] = [];

  constructor(private readonly o: ControllerOptions) {
    this.dir = join(o.root, 'networks');
    this.netnsDir = join(o.root, 'netns');
    const mtu = () => this.mtuDefault;
    this.drivers = new Map<string, NetworkDriver>([
      ['bridge', new BridgeDriver(mtu)], ['macvlan', new VlanDriver('macvlan', mtu)], ['ipvlan', new VlanDriver('ipvlan', mtu)],
    ]);
  }

  /** The driver behind a network; undefined for host and none. */
  private driverOf(n: NetworkRecord): NetworkDriver | undefined {
    return this.drivers.get(n.Driver);
  }

  // ---------------------------------------------------------------- lifecycle

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await fs.mkdir(this.netnsDir, { recursive: true, mode: 0o700 });
    await removeStaleTemps(this.dir);
    for (const f of await fs.readdir(this.dir)) {
      if (f.endsWith(REMOVING)) {
        // `network rm` returned but berthd died before the kernel side was gone: finish it.
        const n = await readJson<NetworkRecord>(join(this.dir, f));
        if (n) await this.driverOf(n)?.deleteNetwork(n, []).catch((e: Error) => console.error(`berthd: removing network ${n.Name}: ${e.message}`));
        await fs.rm(join(this.dir, f), { force: true });
        continue;
      }
      if (!f.endsWith('.json')) continue;
      const n = await readJson<NetworkRecord>(join(this.dir, f));
      if (n) this.networks.set(n.Id, n);
    }
    this.mtuDefault = await uplinkMtu();
    await run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    if (!this.byName('host')) await this.save(this.predefined('host', 'host'));
    if (!this.byName('none')) await this.save(this.predefined('none', 'null'));
    if (!this.byName('bridge')) await this.createDefaultBridge();
    for (const n of this.networks.values()) {
      // One network whose kernel side cannot be made again (a parent link gone) must not stop the rest.
      await this.driverOf(n)?.ensureNetwork(n).catch((e: Error) => console.error(`berthd: network ${n.Name}: ${e.message}`));
    }
    await this.syncFirewall();
  }

  private predefined(name: string, driver: NetworkRecord['Driver']): NetworkRecord {
    return {
      Name: name, Id: newId(), Created: new Date().toISOString(), Scope: 'local', Driver: driver, EnableIPv6: false,
      IPAM: { Driver: 'default', Options: null, Config: [] }, Internal: false, Attachable: false, Ingress: false,
      ConfigFrom: { Network: '' }, ConfigOnly: false, Options: {}, Labels: {},
    };
  }

  private async createDefaultBridge(): Promise<void> {
    let subnet: string;
    let gateway: string | undefined;
    if (this.o.bip) {
      const [ip, prefix] = this.o.bip.split('/');
      subnet = formatCidr(parseCidr(`${ip}/${prefix ?? '16'}`));
      gateway = ip;
    } else {
      subnet = formatCidr(nextPoolSubnet(await this.usedSubnets()));
    }
    const n = this.predefined('bridge', 'bridge');
    n.Options = {
      'com.docker.network.bridge.default_bridge': 'true', [OPT_ICC]: 'true', [OPT_MASQ]: 'true',
      [OPT_HOST_BINDING]: '0.0.0.0', [OPT_BRIDGE_NAME]: this.o.defaultBridgeName ?? 'berth0', [OPT_MTU]: String(this.mtuDefault),
    };
    n.pools = [newPool(subnet, { gateway })];
    n.IPAM.Config = [{ Subnet: subnet, Gateway: n.pools[0]!.gateway }];
    n.bridge = n.Options[OPT_BRIDGE_NAME];
    n.mtu = this.mtuDefault;
    await this.save(n);
  }

  /**
   * Writes a network's record. Writes of one record run one after the other and each takes the
   * record as it is when it starts, so concurrent joins (compose starting a project) can never
   * leave an older allocation state on disk last.
   */
  private save(n: NetworkRecord): Promise<void> {
    this.networks.set(n.Id, n);
    const next = (this.saving.get(n.Id) ?? Promise.resolve()).catch(() => undefined)
      .then(() => writeJsonAtomic(join(this.dir, `${n.Id}.json`), n));
    this.saving.set(n.Id, next);
    next.finally(() => { if (this.saving.get(n.Id) === next) this.saving.delete(n.Id); }).catch(() => undefined);
    return next;
  }

  private rules(except?: string): BridgeRules[] {
    return [...this.networks.values()].filter((n) => n.Driver === 'bridge' && n.Id !== except).map(bridgeRules);
  }

  async syncFirewall(): Promise<void> {
    await nftApply(buildRuleset(this.rules(), this.ports.mappings()));
  }

  /** The ports a container asks for: its bindings, plus every exposed port with -P. */
  private portRequestsFor(c: ContainerRecord, n: NetworkRecord): PortRequest[] {
    const bindings: Record<string, Array<{ HostIp?: string; HostPort?: string }> | null> = { ...(c.HostConfig.PortBindings ?? {}) };
    if (c.HostConfig.PublishAllPorts) {
      for (const p of Object.keys(c.Config.ExposedPorts ?? {})) if (!bindings[p]?.length) bindings[p] = [{ HostIp: '', HostPort: '' }];
    }
    const hostIp = n.Options[OPT_HOST_BINDING];
    return portRequests(bindings, hostIp && hostIp !== '0.0.0.0' ? hostIp : '');
  }

  /** The endpoint published ports lead to: the container's first non-internal bridge network. */
  private publishTarget(c: ContainerRecord): { n: NetworkRecord; ip: string; ip6?: string } | undefined {
    for (const [id, ep] of Object.entries(c.Endpoints ?? {})) {
      const n = this.networks.get(id);
      if (n && this.driverOf(n)?.publishes && !n.Internal && ep.IPAddress) return { n, ip: ep.IPAddress, ...(ep.GlobalIPv6Address ? { ip6: ep.GlobalIPv6Address } : {}) };
    }
    return undefined;
  }

  /** Reserves the host ports and adds one map element per port; all or nothing. */
  async publish(c: ContainerRecord): Promise<PortMapping[]> {
    const target = this.publishTarget(c);
    if (!target) return [];
    const requests = this.portRequestsFor(c, target.n);
    if (!requests.length) return [];
    const mappings = await this.ports.reserve(c.Id, requests, { ip: target.ip, ...(target.ip6 ? { ip6: target.ip6 } : {}) });
    try {
      await nftCommands(portElements(mappings, 'add'));
    } catch (e) {
      this.ports.release(c.Id);
      throw e;
    }
    return mappings;
  }

  async unpublish(c: ContainerRecord): Promise<void> {
    const mappings = this.ports.release(c.Id);
    if (mappings.length) await nftCommands(portElements(mappings, 'delete'));
  }

  /** After a restart: hold again the ports of containers that kept running, then rebuild the rules. */
  async adopt(running: ContainerRecord[]): Promise<void> {
    for (const c of running) {
      if (!c.Published?.length) continue;
      const requests: PortRequest[] = c.Published.map((p) => ({ proto: p.proto, hostIp: p.hostIp, hostPorts: [p.hostPort, p.hostPort], containerPort: p.containerPort, family: p.family ?? 4 }));
      const ip = c.Published.find((p) => p.family !== 6)?.containerIp ?? '';
      const ip6 = c.Published.find((p) => p.family === 6)?.containerIp;
      await this.ports.reserve(c.Id, requests, { ip, ...(ip6 ? { ip6 } : {}) }).catch((e: Error) => {
        console.error(`berthd: could not hold the published ports of ${c.Id.slice(0, 12)} again: ${e.message}`);
      });
    }
    await this.syncFirewall();
    this.adopted = running;
  }

  /**
   * Opens again the in-namespace resolvers of the running containers found at start: berthd held
   * their sockets, which died with the previous process.
   */
  async attachDns(dns: DnsServer): Promise<void> {
    this.dns = dns;
    for (const c of this.adopted.filter((a) => this.usesEmbeddedDns(a))) {
      await this.programDns(c).catch((e: Error) => console.error(`berthd: embedded DNS for ${c.Id.slice(0, 12)}: ${e.message}`));
    }
    this.adopted = [];
  }

  /** User-defined networks have the embedded DNS; the default bridge, host and none do not. */
  private hasDns(n: NetworkRecord): boolean {
    return !!this.driverOf(n) && n.Name !== 'bridge';
  }

  /**
   * Gives a container on a user-defined network its resolver: sockets on 127.0.0.11 inside its own
   * namespace, served by berthd, with 127.0.0.11:53 sent to their port (Docker's layout, for every
   * driver). A container left with no such network loses them.
   */
  private async programDns(c: ContainerRecord, newNamespace = false): Promise<boolean> {
    if (!this.dns || !c.NetnsPath) return false;
    const served = Object.entries(c.Endpoints ?? {}).some(([id, ep]) => {
      const n = this.networks.get(id);
      return !!n && this.hasDns(n) && !!ep.IPAddress;
    });
    if (!served) {
      this.dns.closeSandbox(c.Id);
      this.dnsProgrammed.delete(c.Id);
      return false;
    }
    const fresh = !this.dns.hasSandbox(c.Id);
    const port = this.dns.serveSandbox(c.Id, c.NetnsPath);
    // connect/disconnect of another network leaves the resolver as it was: skip the nft run.
    if (this.dnsProgrammed.get(c.Id) === port) return true;
    this.dnsProgrammed.delete(c.Id);
    try {
      await programSandboxRedirect(c.NetnsPath, port, newNamespace);
      this.dnsProgrammed.set(c.Id, port);
    } catch (e) {
      if (fresh) this.dns.closeSandbox(c.Id);
      throw e;
    }
    return true;
  }

  /** A container's names changed (rename): the embedded DNS's view and its answer cache must follow. */
  namesChanged(c: ContainerRecord): void {
    this.changed(Object.keys(c.Endpoints ?? {}), c.Id);
  }

  /** Whether a container with these endpoints gets the embedded resolver (a user-defined network). */
  usesEmbeddedDns(c: ContainerRecord): boolean {
    return Object.keys(c.Endpoints ?? {}).some((id) => {
      const n = this.networks.get(id);
      return !!n && this.hasDns(n);
    });
  }

  /** `berthd --cleanup`: removes every network's kernel objects and berth's nft tables. */
  async removeKernelObjects(): Promise<string[]> {
    const problems: string[] = [];
    this.dns?.closeAll();
    for (const n of this.networks.values()) {
      await this.driverOf(n)?.deleteNetwork(n, []).catch((e: Error) => problems.push(e.message));
    }
    await nftDeleteTable('ip', TABLE).catch((e: Error) => problems.push(e.message));
    await nftDeleteTable('bridge', TABLE).catch((e: Error) => problems.push(e.message));
    await nftDeleteTable('ip6', TABLE).catch((e: Error) => problems.push(e.message));
    return problems;
  }

  // ---------------------------------------------------------------- lookup

  byName(name: string): NetworkRecord | undefined {
    return [...this.networks.values()].find((n) => n.Name === name);
  }

  /** By full id, name, or unique id prefix, as Docker resolves network references. */
  find(ref: string): NetworkRecord | undefined {
    const exact = this.networks.get(ref) ?? this.byName(ref);
    if (exact) return exact;
    const matches = [...this.networks.values()].filter((n) => n.Id.startsWith(ref));
    if (matches.length > 1) throw new BadRequestError(`network ${ref} is ambiguous (${matches.length} matches found based on ID prefix)`);
    return matches[0];
  }

  get(ref: string): NetworkRecord {
    const n = this.find(ref);
    if (!n) throw new NotFoundError(`network ${ref} not found`);
    return n;
  }

  list(): NetworkRecord[] {
    return [...this.networks.values()].sort((a, b) => a.Created.localeCompare(b.Created));
  }

  private async usedSubnets(withRoutes = true) {
    const subnets = [...this.networks.values()].flatMap((n) => (n.pools ?? []).map((p) => parseCidr(p.subnet)));
    if (withRoutes) for (const r of await routedSubnets()) subnets.push(parseCidr(r));
    return subnets;
  }

  // ---------------------------------------------------------------- create / remove

  async create(body: Record<string, unknown>): Promise<{ Id: string; Warning: string }> {
    const name = body.Name;
    if (typeof name !== 'string' || name === '') throw new BadRequestError('network name must be given');
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) throw new BadRequestError(`invalid network name "${name}"`);
    if (this.byName(name)) throw new ConflictError(`network with name ${name} already exists`);
    const driverName = (body.Driver as string | undefined) || 'bridge';
    const driver = this.drivers.get(driverName);
    if (!driver) {
      if (driverName === 'host' || driverName === 'null') throw new ForbiddenError(`only one instance of "${driverName}" network is allowed`);
      throw new NotFoundError(`plugin "${driverName}" not found`);
    }
    const enableIPv6 = !!body.EnableIPv6;
    if (enableIPv6 && !driver.ipv6) throw new BadRequestError(`berth's ${driverName} driver has no IPv6 yet`);
    const options = checkStringMap(body.Options, 'Options');
    const labels = checkStringMap(body.Labels, 'Labels');
    const ipam = (body.IPAM ?? {}) as { Driver?: string; Config?: Array<Record<string, unknown>>; Options?: Record<string, string> };
    if (ipam.Driver && ipam.Driver !== 'default') throw new NotFoundError(`plugin "${ipam.Driver}" not found`);
    const configs = Array.isArray(ipam.Config) ? ipam.Config : [];
    const family6 = (c: Record<string, unknown>) => isIPv6(String(c.Subnet ?? c.Gateway ?? ''));
    const configs6 = configs.filter(family6);
    const configs4 = configs.filter((c) => !family6(c));
    if (configs4.length > 1) throw new BadRequestError(`berth ${driverName} networks take one IPv4 subnet`);
    if (configs6.length > 1) throw new BadRequestError(`berth ${driverName} networks take one IPv6 subnet`);
    if (configs6.length && !enableIPv6) throw new BadRequestError(`IPv6 subnet ${String(configs6[0]!.Subnet)} given without IPv6 enabled (--ipv6)`);
    let pool;
    const cfg = configs4[0];
    if (cfg?.Subnet) {
      parseCidr(String(cfg.Subnet));
      pool = newPool(String(cfg.Subnet), {
        gateway: cfg.Gateway ? String(cfg.Gateway) : undefined,
        ipRange: cfg.IPRange ? String(cfg.IPRange) : undefined,
        aux: (cfg.AuxiliaryAddresses as Record<string, string> | undefined) ?? undefined,
      });
    } else {
      if (cfg?.Gateway || cfg?.IPRange) throw new BadRequestError('a gateway or ip-range needs a subnet');
    }
    const id = newId();
    const n: NetworkRecord = {
      Name: name, Id: id, Created: new Date().toISOString(), Scope: 'local', Driver: driver.name, EnableIPv6: false,
      IPAM: { Driver: 'default', Options: ipam.Options ?? {}, Config: [] },
      Internal: !!body.Internal, Attachable: !!body.Attachable, Ingress: false, ConfigFrom: { Network: '' }, ConfigOnly: false,
      Options: options, Labels: labels, ...(pool ? { pools: [pool] } : {}),
    };
    // The driver speaks first, so its own refusals (a parent shared with an overlapping subnet)
    // come before the generic overlap error.
    await driver.configure(n, { others: [...this.networks.values()], mtuDefault: this.mtuDefault, subnetGiven: !!pool });
    // A macvlan subnet is normally the parent's own LAN, which the host routes: only the other
    // networks count for it.
    const used = await this.usedSubnets(driver.avoidsRoutedSubnets);
    if (pool) {
      const subnet = parseCidr(pool.subnet);
      if (used.some((u) => overlaps(u, subnet))) throw new ForbiddenError('Pool overlaps with other one on this address space');
    } else {
      pool = newPool(formatCidr(nextPoolSubnet(used)));
      n.pools = [pool];
    }
    n.IPAM.Config = [{ Subnet: pool.subnet, Gateway: pool.gateway, ...(pool.ipRange ? { IPRange: pool.ipRange } : {}), ...(Object.keys(pool.auxAddresses).length ? { AuxiliaryAddresses: pool.auxAddresses } : {}) }];
    if (enableIPv6) {
      const cfg6 = configs6[0];
      const used6 = [...this.networks.values()].flatMap((o) => (o.pools6 ?? []).map((p) => parseCidr6(p.subnet)));
      let pool6;
      if (cfg6?.Subnet) {
        pool6 = newPool6(String(cfg6.Subnet), cfg6.Gateway ? String(cfg6.Gateway) : undefined);
        if (used6.some((u) => overlaps6(u, parseCidr6(pool6!.subnet)))) throw new ForbiddenError('Pool overlaps with other one on this address space');
      } else {
        pool6 = newPool6(formatCidr6(nextPool6Subnet(used6)));
      }
      n.pools6 = [pool6];
      n.EnableIPv6 = true;
      n.IPAM.Config.push({ Subnet: pool6.subnet, Gateway: pool6.gateway });
    }
    try {
      // Recorded before the kernel objects exist: a crash in between leaves a record that the next
      // start completes (ensureNetwork is idempotent), never kernel objects nobody knows about.
      await this.save(n);
      // The rules name the bridge, not its index: they need not wait for the link to exist.
      await Promise.all([
        driver.ensureNetwork(n),
        n.Driver === 'bridge' ? nftCommands(addNetworkScript(bridgeRules(n), this.rules(n.Id))) : undefined,
      ]);
    } catch (e) {
      this.networks.delete(n.Id);
      await fs.rm(join(this.dir, `${n.Id}.json`), { force: true });
      await driver.deleteNetwork(n, [...this.networks.values()]).catch(() => undefined);
      await this.syncFirewall().catch(() => undefined);
      throw e;
    }
    return { Id: id, Warning: '' };
  }

  async remove(ref: string, containers: ContainerRecord[]): Promise<NetworkRecord> {
    const n = this.get(ref);
    if (PREDEFINED.includes(n.Name)) throw new ForbiddenError(`${n.Name} is a pre-defined network and cannot be removed`);
    if (containers.some((c) => c.Endpoints?.[n.Id]?.EndpointID)) {
      throw new ForbiddenError(`error while removing network: network ${n.Name} id ${n.Id} has active endpoints`);
    }
    const file = join(this.dir, `${n.Id}.json`);
    // A write still in flight (the last disconnect's) would bring the record back after the rename.
    await this.saving.get(n.Id)?.catch(() => undefined);
    await Promise.all([
      // A crash before the bridge is deleted leaves this tombstone, which the next start finishes.
      fs.rename(file, `${file}${REMOVING}`),
      n.Driver === 'bridge' ? nftCommands(deleteNetworkScript(bridgeRules(n), this.rules(n.Id))) : undefined,
    ]);
    this.networks.delete(n.Id);
    await this.driverOf(n)?.deleteNetwork(n, [...this.networks.values()]);
    await fs.rm(`${file}${REMOVING}`, { force: true });
    return n;
  }

  // ---------------------------------------------------------------- containers

  /** Checks a NetworkMode at create time, so a bad one fails before anything exists. */
  validateMode(mode: string): void {
    if (['none', 'host', 'default', 'bridge'].includes(mode) || mode.startsWith('container:')) return;
    this.get(mode);
  }

  /** The endpoints a new container starts with, from its NetworkMode and EndpointsConfig. */
  initialEndpoints(mode: string, endpointsConfig: Record<string, unknown>, macAddress?: string): Record<string, EndpointState> {
    if (mode === 'none' || mode === 'host' || mode.startsWith('container:')) return {};
    const n = this.get(mode === 'default' ? 'bridge' : mode);
    const cfg = (endpointsConfig[mode] ?? endpointsConfig[n.Name] ?? {}) as Record<string, unknown>;
    const ep = this.endpointFromConfig(n, cfg, macAddress);
    return { [n.Id]: ep };
  }

  endpointFromConfig(n: NetworkRecord, cfg: Record<string, unknown>, macAddress?: string): EndpointState {
    const ipam = (cfg.IPAMConfig ?? null) as { IPv4Address?: string; IPv6Address?: string } | null;
    if (ipam?.IPv6Address) {
      if (!n.pools6?.length) throw new BadRequestError(`user specified IPv6 address ${ipam.IPv6Address} on network ${n.Name}, which has no IPv6`);
      if (!parseCidr6(n.pools6[0]!.subnet) || !subnet6Contains(n.pools6[0]!.subnet, ipam.IPv6Address)) {
        throw new BadRequestError(`no configured subnet contains IP address ${ipam.IPv6Address}`);
      }
    }
    const aliases = Array.isArray(cfg.Aliases) ? (cfg.Aliases as string[]) : null;
    if (ipam?.IPv4Address) {
      if (n.Name === 'bridge') throw new BadRequestError('user specified IP address is supported on user defined networks only');
      const pool = n.pools![0]!;
      if (!parseCidr(`${pool.subnet}`) || !subnetContains(pool.subnet, ipam.IPv4Address)) {
        throw new BadRequestError(`no configured subnet contains IP address ${ipam.IPv4Address}`);
      }
    }
    if (aliases && n.Name === 'bridge') throw new BadRequestError('network-scoped alias is supported only for containers in user defined networks');
    return {
      NetworkID: n.Id,
      IPAMConfig: ipam?.IPv4Address || ipam?.IPv6Address ? { ...(ipam.IPv4Address ? { IPv4Address: ipam.IPv4Address } : {}), ...(ipam.IPv6Address ? { IPv6Address: canonicalIPv6(ipam.IPv6Address) } : {}) } : null,
      Links: Array.isArray(cfg.Links) ? (cfg.Links as string[]) : null, Aliases: aliases,
      EndpointID: '', Gateway: '', IPAddress: '', IPPrefixLen: 0, MacAddress: '', ifname: '',
      ...(macAddress || cfg.MacAddress ? { requestedMac: (macAddress || cfg.MacAddress) as string } : {}),
    };
  }

  netnsPathFor(c: ContainerRecord): string {
    return join(this.netnsDir, c.Id.slice(0, 12));
  }

  /** Creates the container's sandbox and joins it to each of its networks. */
  async setUp(c: ContainerRecord, sharedWith?: ContainerRecord): Promise<SandboxInfo> {
    const mode = c.HostConfig.NetworkMode;
    if (mode === 'host') return { addresses: [], shareHostNetwork: true, embeddedDns: false };
    if (mode.startsWith('container:')) {
      if (!sharedWith?.NetnsPath) throw new ConflictError(`cannot join network of a non running container: ${mode.slice(10)}`);
      return { netnsPath: sharedWith.NetnsPath, addresses: [], shareHostNetwork: false, embeddedDns: false };
    }
    const path = this.netnsPathFor(c);
    await createNetns(path);
    c.NetnsPath = path;
    try {
      let index = 0;
      for (const [netId, ep] of Object.entries(c.Endpoints ?? {})) {
        await this.join(c, this.get(netId), ep, index === 0, index);
        index++;
      }
      await this.programDns(c, true);
    } catch (e) {
      await this.tearDown(c).catch(() => undefined);
      throw e;
    }
    return {
      netnsPath: path, addresses: Object.values(c.Endpoints ?? {}).flatMap((e) => [e.IPAddress, e.GlobalIPv6Address ?? '']).filter(Boolean),
      shareHostNetwork: false, embeddedDns: this.usesEmbeddedDns(c),
    };
  }

  private async join(c: ContainerRecord, n: NetworkRecord, ep: EndpointState, defaultRoute: boolean, index: number): Promise<void> {
    const driver = this.driverOf(n);
    if (!driver) throw new BadRequestError(`container cannot be connected to network ${n.Name}`);
    const pool = n.pools![0]!;
    const endpointId = newId();
    const ip = allocate(pool, endpointId, ep.IPAMConfig?.IPv4Address);
    const pool6 = n.pools6?.[0];
    let ip6: string | undefined;
    let persisted: Promise<void> | undefined;
    try {
      if (pool6) ip6 = allocate6(pool6, endpointId, ep.IPAMConfig?.IPv6Address);
      // The allocation goes to disk while the kernel works, so a crash never leaves an interface
      // holding an address the record does not know of.
      persisted = this.save(n);
      const prefix6 = pool6 ? parseCidr6(pool6.subnet).prefix : 0;
      const prefix = parseCidr(pool.subnet).prefix;
      let mac = ep.requestedMac || macFor(ip);
      const ifname = `eth${index}`;
      const got = await driver.join(n, {
        netnsPath: c.NetnsPath!, ifname, endpointId, mac, addressCidr: `${ip}/${prefix}`,
        gateway: defaultRoute && !n.Internal ? pool.gateway : undefined,
        ...(ip6 ? { address6Cidr: `${ip6}/${prefix6}`, gateway6: defaultRoute && !n.Internal ? pool6!.gateway : undefined } : {}),
      });
      if (got) mac = got.mac;
      Object.assign(ep, { EndpointID: endpointId, IPAddress: ip, IPPrefixLen: prefix, Gateway: n.Internal ? '' : pool.gateway, MacAddress: mac, ifname });
      if (ip6) Object.assign(ep, { GlobalIPv6Address: ip6, GlobalIPv6PrefixLen: prefix6, IPv6Gateway: n.Internal ? '' : pool6!.gateway });
      this.changed([n.Id], c.Id);
      await persisted;
    } catch (e) {
      await persisted?.catch(() => undefined);
      release(pool, ip);
      if (pool6 && ip6) release6(pool6, ip6);
      if (persisted) await this.save(n).catch(() => undefined);
      throw e;
    }
  }

  private async releaseEndpoint(c: ContainerRecord, ep: EndpointState): Promise<void> {
    const n = this.networks.get(ep.NetworkID);
    if (n?.pools && ep.IPAddress) {
      release(n.pools[0]!, ep.IPAddress);
      if (n.pools6?.[0] && ep.GlobalIPv6Address) release6(n.pools6[0], ep.GlobalIPv6Address);
      await this.save(n);
    }
    Object.assign(ep, { EndpointID: '', IPAddress: '', IPPrefixLen: 0, Gateway: '', MacAddress: '', ifname: '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0, IPv6Gateway: '' });
    this.changed([ep.NetworkID], c.Id);
  }

  /** Frees addresses and the sandbox. Safe to call twice; collects errors instead of stopping. */
  async tearDown(c: ContainerRecord): Promise<void> {
    const errors: string[] = [];
    this.dnsProgrammed.delete(c.Id);
    await this.unpublish(c).catch((e: Error) => errors.push(e.message));
    // berthd's sockets inside the namespace would keep it, and its interfaces, alive.
    this.dns?.closeSandbox(c.Id);
    const mode = c.HostConfig.NetworkMode;
    const ownNetns = !!c.NetnsPath && !mode.startsWith('container:');
    for (const ep of Object.values(c.Endpoints ?? {})) {
      const n = this.networks.get(ep.NetworkID);
      const driver = n && this.driverOf(n);
      // Interfaces go before their namespace: the kernel frees a dead namespace's interfaces late,
      // and meanwhile a macvlan child stays on the parent's wire with its address and MAC, and a
      // veth's host end on its bridge, visible to the host.
      if (ownNetns && driver && n && ep.ifname && (await netnsExists(c.NetnsPath!))) {
        await driver.leave(n, { netnsPath: c.NetnsPath!, ifname: ep.ifname, endpointId: ep.EndpointID }).catch(() => undefined);
      }
      await this.releaseEndpoint(c, ep).catch((e: Error) => errors.push(e.message));
    }
    if (ownNetns) await deleteNetns(c.NetnsPath!).catch((e: Error) => errors.push(e.message));
    if (errors.length) throw new Error(errors.join('; '));
  }

  /** Joins a (running or stopped) container to one more network. */
  async connect(c: ContainerRecord, n: NetworkRecord, cfg: Record<string, unknown>): Promise<void> {
    const mode = c.HostConfig.NetworkMode;
    if (mode === 'host' || mode === 'none' || mode.startsWith('container:')) {
      throw new BadRequestError(`container sharing network namespace with another container or host cannot be connected to any other network`);
    }
    if (!this.driverOf(n)) throw new ForbiddenError(`container cannot be disconnected from host network or connected to host network`);
    c.Endpoints ??= {};
    if (c.Endpoints[n.Id]) throw new ForbiddenError(`endpoint with name ${c.Name.slice(1)} already exists in network ${n.Name}`);
    const ep = this.endpointFromConfig(n, cfg);
    if (c.State.Running && c.NetnsPath) {
      const used = new Set(Object.values(c.Endpoints).map((e) => e.ifname));
      let index = 0;
      while (used.has(`eth${index}`)) index++;
      await this.join(c, n, ep, Object.keys(c.Endpoints).length === 0, index);
    }
    c.Endpoints[n.Id] = ep;
    this.changed([n.Id], c.Id);
    if (c.State.Running) await this.programDns(c);
  }

  async disconnect(c: ContainerRecord, n: NetworkRecord): Promise<void> {
    const ep = c.Endpoints?.[n.Id];
    if (!ep) throw new ForbiddenError(`container ${c.Id} is not connected to network ${n.Name}`);
    if (c.State.Running && c.NetnsPath && ep.ifname) await this.driverOf(n)!.leave(n, { netnsPath: c.NetnsPath, ifname: ep.ifname, endpointId: ep.EndpointID });
    await this.releaseEndpoint(c, ep);
    delete c.Endpoints![n.Id];
    this.changed([n.Id], c.Id);
    if (c.State.Running) await this.programDns(c);
  }

  /** NetworkSettings.Networks entry name for the container's primary network. */
  networkName(c: ContainerRecord): string {
    const m = c.HostConfig.NetworkMode;
    return m === 'default' ? 'bridge' : m;
  }

  networkNames(c: ContainerRecord): string[] {
    const mode = c.HostConfig.NetworkMode;
    if (mode === 'host' || mode === 'none') return [mode];
    if (mode.startsWith('container:')) return [];
    return Object.keys(c.Endpoints ?? {}).map((id) => this.networks.get(id)?.Name ?? id);
  }

  settings(c: ContainerRecord): Record<string, unknown> {
    const networks: Record<string, object> = {};
    const mode = c.HostConfig.NetworkMode;
    const blank = { IPAMConfig: null, Links: null, Aliases: null, EndpointID: '', Gateway: '', IPAddress: '', IPPrefixLen: 0, IPv6Gateway: '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0, MacAddress: '', DriverOpts: null };
    if (mode === 'host' || mode === 'none') networks[mode] = { ...blank, NetworkID: this.byName(mode)?.Id ?? '' };
    for (const [id, ep] of Object.entries(c.Endpoints ?? {})) {
      const n = this.networks.get(id);
      networks[n?.Name ?? id] = {
        IPAMConfig: ep.IPAMConfig, Links: ep.Links,
        // docker-compose passes the short id among its aliases itself; Docker lists it once.
        Aliases: ep.Aliases || n?.Name !== 'bridge' ? [...new Set([...(ep.Aliases ?? []), ...(n?.Name !== 'bridge' && c.State.Running ? [c.Id.slice(0, 12)] : [])])] : null,
        NetworkID: id, EndpointID: ep.EndpointID, Gateway: ep.Gateway, IPAddress: ep.IPAddress, IPPrefixLen: ep.IPPrefixLen,
        IPv6Gateway: ep.IPv6Gateway ?? '', GlobalIPv6Address: ep.GlobalIPv6Address ?? '', GlobalIPv6PrefixLen: ep.GlobalIPv6PrefixLen ?? 0, MacAddress: ep.MacAddress, DriverOpts: null,
      };
    }
    const def = c.Endpoints ? c.Endpoints[this.byName('bridge')?.Id ?? ''] : undefined;
    return {
      Bridge: '',
      SandboxID: c.NetnsPath ? c.Id : '',
      HairpinMode: false,
      LinkLocalIPv6Address: '',
      LinkLocalIPv6PrefixLen: 0,
      Ports: this.portsView(c),
      SandboxKey: c.NetnsPath,
      SecondaryIPAddresses: null,
      SecondaryIPv6Addresses: null,
      // The top-level fields describe the default bridge endpoint, as in Docker.
      EndpointID: def?.EndpointID ?? '', Gateway: def?.Gateway ?? '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0,
      IPAddress: def?.IPAddress ?? '', IPPrefixLen: def?.IPPrefixLen ?? 0, IPv6Gateway: '', MacAddress: def?.MacAddress ?? '',
      Networks: networks,
    };
  }

  /** NetworkSettings.Ports: every exposed port, with its host bindings while running. */
  portsView(c: ContainerRecord): Record<string, Array<{ HostIp: string; HostPort: string }> | null> {
    const out: Record<string, Array<{ HostIp: string; HostPort: string }> | null> = {};
    if (!c.State.Running) return out;
    for (const p of Object.keys(c.Config.ExposedPorts ?? {})) out[p] = null;
    for (const m of c.Published ?? []) {
      const key = `${m.containerPort}/${m.proto}`;
      (out[key] ??= []).push({ HostIp: m.hostIp || (m.family === 6 ? '::' : '0.0.0.0'), HostPort: String(m.hostPort) });
    }
    return out;
  }

  /** GET /networks/{id} body. */
  inspect(n: NetworkRecord, containers: ContainerRecord[]): object {
    const members: Record<string, object> = {};
    for (const c of containers) {
      const ep = c.Endpoints?.[n.Id];
      if (ep && ep.EndpointID) {
        members[c.Id] = { Name: c.Name.slice(1), EndpointID: ep.EndpointID, MacAddress: ep.MacAddress, IPv4Address: `${ep.IPAddress}/${ep.IPPrefixLen}`, IPv6Address: ep.GlobalIPv6Address ? `${ep.GlobalIPv6Address}/${ep.GlobalIPv6PrefixLen}` : '' };
      } else if (c.State.Running && ((n.Name === 'host' || n.Name === 'none') && c.HostConfig.NetworkMode === n.Name)) {
        members[c.Id] = { Name: c.Name.slice(1), EndpointID: '', MacAddress: '', IPv4Address: '', IPv6Address: '' };
      }
    }
    return {
      Name: n.Name, Id: n.Id, Created: n.Created, Scope: n.Scope, Driver: n.Driver, EnableIPv6: n.EnableIPv6,
      IPAM: n.IPAM, Internal: n.Internal, Attachable: n.Attachable, Ingress: n.Ingress, ConfigFrom: n.ConfigFrom,
      ConfigOnly: n.ConfigOnly, Containers: members, Options: n.Options, Labels: n.Labels,
    };
  }
}

/** Suffix of a removed network's record until its kernel side is gone. */
const REMOVING = '.removing';

function bridgeRules(n: NetworkRecord): BridgeRules {
  return {
    id: n.Id, bridge: n.bridge!, subnets: (n.pools ?? []).map((p) => p.subnet), subnets6: (n.pools6 ?? []).map((p) => p.subnet), internal: n.Internal,
    masquerade: optBool(n.Options[OPT_MASQ], true),
  };
}

function checkStringMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v) || Object.values(v as object).some((x) => typeof x !== 'string')) {
    throw new BadRequestError(`invalid type for field ${field}: expected object of strings`);
  }
  return { ...(v as Record<string, string>) };
}

function subnetContains(subnet: string, ip: string): boolean {
  const s = parseCidr(subnet);
  const n = parseCidr(`${ip}/32`).base;
  return n >= s.base && n < s.base + 2 ** (32 - s.prefix);
}

function subnet6Contains(subnet: string, ip: string): boolean {
  try {
    return contains6(parseCidr6(subnet), parseIPv6(ip));
  } catch {
    return false;
  }
}
