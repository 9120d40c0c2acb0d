import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setSysctl } from '../kernel/sysctl.js';
import type { EndpointState, NetworkService, NetworkSummary, PortBindings, PortMapping, SandboxRef, SandboxSpec, SandboxState } from '../model/network.js';
import { ApiError, BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../util/errors.js';
import { SerialQueue } from '../util/serial.js';
import { routedSubnets, uplinkMtu } from '../kernel/routes.js';
import { endpointFromConfig, initialEndpoints, hasNoEndpoints, validateMode } from './endpoints.js';
import type { NetworkDriver } from './driver.js';
import type { Firewall } from './firewallapi.js';
import { formatCidr, nextPoolSubnet, parseCidr } from './ipam.js';
import type { UsedSubnets } from './ipamdriver.js';
import { newNetworkRecord, subnetsOf } from './netcreate.js';
import { PortMapper } from './portmapper.js';
import { defaultBridgeRecord, predefined } from './predefined.js';
import { portRequests } from './ports.js';
import { parsePolicyLabels } from './policy/labels.js';
import { NetworkPolicy } from './policy/policy.js';
import type { NetworkRegistry } from './registry.js';
import type { Resolver } from './resolver.js';
import { JoinGate } from './joingate.js';
import { kernelNamespaces, type NamespaceOps } from './namespaces.js';
import { Sandboxes } from './sandbox.js';
import { freeUnheldAddresses } from './allocsweep.js';
import { SwarmNetworkSide } from './swarmside.js';
import { CniProvider } from './cniprovider.js';
import { FROM_WORKER, NOT_A_MANAGER, type SwarmNetworkService } from './swarmservice.js';
import { PREDEFINED, type NetworkRecord } from './types.js';

export type { SwarmNetworkService } from './swarmservice.js';

export interface ControllerOptions {
  root: string;
  /** The records, with the drivers and IPAM already registered (the daemon does it). */
  registry: NetworkRegistry;
  firewall: Firewall;
  namespaces?: NamespaceOps;
  /** CIDR of the default bridge (--bip), e.g. 172.17.0.1/16. */
  bip?: string;
  defaultBridgeName?: string;
  /** The host's resolv.conf, read for containers' upstream servers. */
  hostResolvConf?: string;
  /** MTU of the host's uplink; read from the kernel when absent. */
  mtu?: number;
}

/**
 * The network layer's front, in Docker's CNM terms: networks (created and removed here), and the
 * sandboxes that join containers to them (sandbox.ts). It holds no rule of its own about drivers:
 * it asks the registry for them, the firewall for rules, the sandboxes for endpoints. The engine
 * sees it only as a NetworkService.
 */
export class NetworkController implements NetworkService {
  readonly registry: NetworkRegistry;
  readonly ports: PortMapper;
  /** Network policy (berth.policy.* labels) on this host's endpoints. */
  readonly policy: NetworkPolicy;
  private readonly firewall: Firewall;
  private readonly sandboxes: Sandboxes;
  private mtuDefault = 1500;
  /** MTU for networks that set none: the host uplink's (drivers read it through this). */
  get mtu(): number { return this.mtuDefault; }
  /** Names being created right now: a second create of one of them is a conflict, not a race. */
  private readonly creating = new Set<string>();
  private readonly allocating = new SerialQueue();
  private readonly gate: JoinGate;
  /** Endpoints of CNI runtimes' containers, made through berth-cni. */
  readonly provided: CniProvider;
  /** Set while this host is in a swarm (the daemon wires the cluster's side in). */
  swarm?: SwarmNetworkService;
  /** Swarm networks as the cluster's view makes and drops them here (SwarmNetworks' host). */
  readonly swarmSide: SwarmNetworkSide;

  constructor(private readonly o: ControllerOptions) {
    this.registry = o.registry;
    this.gate = new JoinGate((id) => o.registry.networks.get(id)?.Name);
    this.firewall = o.firewall;
    this.ports = new PortMapper(o.firewall);
    this.policy = new NetworkPolicy({ get: (id) => o.registry.networks.get(id), policyOnHost: (n) => { const d = o.registry.driverOf(n); return !!d?.hostFirewall && !d.policyInSandbox; }, bridgeOf: (n) => o.registry.driverOf(n)?.hostBridge?.(n) });
    this.sandboxes = new Sandboxes({
      registry: o.registry, firewall: o.firewall, ports: this.ports, namespaces: o.namespaces ?? kernelNamespaces, policy: this.policy,
      netnsDir: join(o.root, 'netns'), journalDir: join(o.root, 'sandboxes'), ...(o.hostResolvConf ? { hostResolvConf: o.hostResolvConf } : {}),
    });
    const ns = o.namespaces ?? kernelNamespaces;
    this.swarmSide = new SwarmNetworkSide(o.registry, {
      mtuDefault: () => this.mtuDefault,
      firewallAdd: (n) => this.healing(this.firewall.addNetwork(n, this.firewalled(n.Id))),
      removeNow: (n, driver) => this.removeNow(n, driver),
    });
    this.provided = new CniProvider({ registry: o.registry, dir: join(o.root, 'cni', 'provided'), redirectResolver: (p, port, fresh) => ns.redirectResolver(p, port, fresh), ownSandbox: (id) => this.sandboxes.has(id) });
  }

  // ---------------------------------------------------------------- lifecycle

  async init(): Promise<void> {
    await mkdir(join(this.o.root, 'netns'), { recursive: true, mode: 0o700 });
    // A `network rm` that returned before berthd died halfway: its kernel side goes now.
    await this.registry.load(async (n) => {
      await this.registry.ipamOf(n).releasePools?.(n).catch((e: Error) => console.error(`berthd: network ${n.Name}: ${e.message}`));
      await this.registry.driverOf(n)?.deleteNetwork(n, []);
    });
    await this.sandboxes.load();
    await this.provided.load();
    this.mtuDefault = this.o.mtu ?? (await uplinkMtu());
    await setSysctl('net.ipv4.ip_forward', 1);
    if (!this.registry.byName('host')) await this.registry.add(predefined('host', 'host'));
    if (!this.registry.byName('none')) await this.registry.add(predefined('none', 'null'));
    if (!this.registry.byName('bridge')) await this.createDefaultBridge();
    for (const n of this.registry.networks.values()) {
      // One network whose kernel side cannot be made again (a parent link gone) must not stop the rest.
      await this.registry.driverOf(n)?.ensureNetwork(n).catch((e: Error) => console.error(`berthd: network ${n.Name}: ${e.message}`));
    }
    await this.firewall.sync(this.firewalled(), []);
  }

  /**
   * After a restart: the running containers' sandboxes are checked against their journals and their
   * ports held again; every other journal's leftovers are removed; then the rules are built whole.
   * Returns the endpoints of containers whose record must change (an operation a crash cut short).
   */
  async adopt(running: SandboxRef[]): Promise<Map<string, Record<string, EndpointState>>> {
    const fixes = await this.sandboxes.adopt(running);
    await this.sandboxes.recover(running);
    await freeUnheldAddresses(this.registry, new Set([...this.sandboxes.liveEndpoints(), ...this.provided.endpointIds()]));
    await this.firewall.sync(this.firewalled(), this.ports.mappings());
    await this.policy.sync(running.flatMap((r) => Object.entries(fixes.get(r.id) ?? r.endpoints).flatMap(([netId, ep]) => {
      const n = this.registry.networks.get(netId);
      if (!n || !ep.EndpointID || !ep.IPAddress || !r.netnsPath) return [];
      return [{ n, info: {
        containerId: r.id, containerName: r.name ?? r.id.slice(0, 12), labels: r.labels ?? {}, endpointId: ep.EndpointID, ip: ep.IPAddress,
        ...(ep.GlobalIPv6Address ? { ip6: ep.GlobalIPv6Address } : {}), ifname: ep.ifname, netnsPath: r.netnsPath,
      } }];
    })));
    return fixes;
  }

  /**
   * After a restart, once the API answers (a CNI plugin may be berth-cni, which calls it): drivers
   * free what they still hold for endpoints that are gone.
   */
  async collectGarbage(): Promise<void> {
    const live = (id: string) => this.sandboxes.liveEndpoints().has(id);
    for (const d of this.registry.registeredDrivers()) {
      await d.collectGarbage?.(this.registry.list(), live).catch((e: Error) => console.error(`berthd: ${d.name} driver: ${e.message}`));
    }
  }

  /** The resolver answers for sandboxes from here on; adopted ones get theirs back. */
  async attachResolver(resolver: Resolver): Promise<void> {
    this.registry.onChange((c) => resolver.directoryChanged(c));
    await this.sandboxes.attachResolver(resolver);
    await this.provided.attachResolver(resolver);
  }

  /** `berthd --cleanup`: removes every network's kernel objects and berth's firewall tables. */
  async removeKernelObjects(): Promise<string[]> {
    const problems: string[] = [];
    this.sandboxes.closeResolvers();
    for (const n of this.registry.networks.values()) {
      const d = this.registry.driverOf(n);
      if (!d?.external) await d?.deleteNetwork(n, []).catch((e: Error) => problems.push(e.message));
    }
    for (const d of this.registry.registeredDrivers()) await d.removeOrphans?.([]).catch((e: Error) => problems.push(e.message));
    problems.push(...(await this.firewall.removeAll()));
    problems.push(...(await this.policy.removeAll()));
    return problems;
  }

  /**
   * A network's incremental rules met elements a crash left behind (an add that finds its key
   * taken, a delete that finds it gone): the whole ruleset is rebuilt from the records instead,
   * which is what the kernel should hold, rather than failing the user's create or rm with 500.
   */
  private async healing(change: Promise<void>, except?: string): Promise<void> {
    try {
      await change;
    } catch (e) {
      if (!/File exists|No such file or directory|does not exist/.test((e as Error).message)) throw e;
      console.error(`berthd: firewall out of step with the records (${(e as Error).message.split('\n')[0]}): rebuilt`);
      await this.firewall.sync(this.firewalled(except), this.ports.mappings());
    }
  }

  /** The networks the host firewall carries: those whose driver asks for it. */
  private firewalled(except?: string): NetworkRecord[] {
    return this.registry.list().filter((n) => n.Id !== except && this.registry.driverOf(n)?.hostFirewall);
  }

  private async createDefaultBridge(): Promise<void> {
    const subnet = this.o.bip ? undefined : formatCidr(nextPoolSubnet((await this.usedSubnets(true)).v4));
    const n = defaultBridgeRecord({ bip: this.o.bip, subnet, bridgeName: this.o.defaultBridgeName ?? 'berth0', mtu: this.mtuDefault });
    // The same rules as a user's bridge name: an existing link that is not a bridge (eth0, lo) is
    // refused, an existing bridge is used and never deleted (berthd -b/--bridge, as Docker's -b).
    await this.registry.driverOf(n)!.configure(n, { others: this.registry.list(), mtuDefault: this.mtuDefault, subnetGiven: true });
    await this.registry.add(n);
  }

  private async usedSubnets(withRoutes: boolean): Promise<UsedSubnets> {
    const used = subnetsOf(this.registry.networks.values());
    if (withRoutes) for (const r of await routedSubnets()) used.v4.push(parseCidr(r));
    return used;
  }

  // ---------------------------------------------------------------- networks

  async create(body: Record<string, unknown>): Promise<{ Id: string; Warning: string }> {
    const driverName = typeof body.Driver === 'string' ? body.Driver : '';
    // A plugin is activated to learn its scope; outside a swarm Docker answers 403 for overlay, 500 for a plugin.
    const swarmDriver = driverName ? await this.registry.loadDriver(driverName) : undefined;
    if (swarmDriver?.scope === 'swarm') {
      const plugin = swarmDriver.external ? `plugin "${driverName}" is a global-scope network driver, whose networks are swarm networks: ` : '';
      if (!this.swarm) throw plugin ? new ApiError(500, `${plugin}${NOT_A_MANAGER}`) : new ForbiddenError(NOT_A_MANAGER);
      if (typeof body.Name !== 'string' || body.Name.trim() === '') throw new BadRequestError('network name must be given');
      return this.swarm.create(body, plugin ? `${plugin}${FROM_WORKER}` : undefined);
    }
    const name = typeof body.Name === 'string' ? body.Name : '';
    parsePolicyLabels(body.Labels as Record<string, string> | undefined);
    const checkDuplicate = body.CheckDuplicate === true;
    if (name && checkDuplicate && this.creating.has(name)) throw new ConflictError(`network with name ${name} already exists`);
    const existing = this.registry.byName(name);
    const reserved = checkDuplicate && !this.creating.has(name);
    if (reserved) this.creating.add(name);
    try {
      // The pool is chosen and the record saved under one lock: two creates at once would
      // otherwise both take the first free subnet (found by chaos.test, seed 859898).
      // The registry holds the record from the moment save is called, which is what the next
      // create's choice of pool sees; the write itself is awaited outside the lock.
      const { n, saved } = await this.allocating.run(async () => {
        const made = await newNetworkRecord(this.registry, body, { mtuDefault: this.mtuDefault, used: (routes) => this.usedSubnets(routes) });
        return { n: made, saved: this.registry.add(made) };
      });
      const driver = this.registry.driverOf(n)!;
      try {
        // Recorded before the kernel objects exist: a crash in between leaves a record that the next
        // start completes (ensureNetwork is idempotent), never kernel objects nobody knows about.
        await saved;
        // The rules name the bridge, not its index: they need not wait for the link to exist.
        await Promise.all([driver.ensureNetwork(n), driver.hostFirewall ? this.healing(this.firewall.addNetwork(n, this.firewalled(n.Id))) : undefined]);
      } catch (e) {
        await this.registry.discard(n);
        await driver.deleteNetwork(n, this.registry.list()).catch(() => undefined);
        await this.registry.ipamOf(n).releasePools?.(n).catch((u: Error) => console.error(`berthd: ${u.message}`));
        await this.firewall.sync(this.firewalled(), this.ports.mappings()).catch(() => undefined);
        throw e;
      }
      return { Id: n.Id, Warning: existing ? `Network with name ${name} (id : ${existing.Id}) already exists` : '' };
    } finally {
      if (reserved) this.creating.delete(name);
    }
  }

  /** Removes a network; `inUse` says whether any container has a live endpoint on it. */
  async remove(ref: string, inUse: (networkId: string) => boolean): Promise<NetworkRecord> {
    const n = this.registry.get(ref);
    // Another rm of it is under way: to this one the network is already gone (a second rename of
    // its record answered 500 ENOENT under chaos, seed 151227).
    if (this.gate.beingRemoved(n.Id)) throw new NotFoundError(`network ${ref} not found`);
    if (PREDEFINED.includes(n.Name)) throw new ForbiddenError(`${n.Name} is a pre-defined network and cannot be removed`);
    // An endpoint being joined right now is active too (libnetwork creates the endpoint first): a
    // rm in between would take the bridge from under the join, which then failed with 500.
    const driver = this.registry.driverOf(n);
    // A swarm network's endpoints are the cluster's to judge (swarm.remove, by swarmkit's rules:
    // the endpoints of tasks on their way out do not hold it, nor a host's ingress endpoint joining
    // right after `swarm init`, when Docker's tutorial removes ingress to make its own).
    if ((n.Scope !== 'swarm' && (inUse(n.Id) || this.gate.joined(n.Id))) || this.provided.inUse(n.Id)) throw new ForbiddenError(`error while removing network: network ${n.Name} id ${n.Id} has active endpoints`);
    if (n.Scope === 'swarm') {
      if (!this.swarm) throw new ForbiddenError(NOT_A_MANAGER);
      // Removed from the store everywhere; this host drops it as it applies the removal.
      await this.swarm.remove(n);
      return n;
    }
    await this.gate.whileRemoving(n.Id, () => this.removeNow(n, driver));
    return n;
  }

  private async removeNow(n: NetworkRecord, driver: NetworkDriver | undefined): Promise<void> {
    // A crash before the kernel side is gone leaves a tombstone, which the next start finishes.
    await Promise.all([
      this.registry.beginRemove(n),
      driver?.hostFirewall ? this.healing(this.firewall.removeNetwork(n, this.firewalled(n.Id)), n.Id) : undefined,
    ]);
    // The pools first, then the driver, in libnetwork's order; a pool the IPAM plugin will not
    // release is logged and the network goes anyway, as there.
    await this.registry.ipamOf(n).releasePools?.(n).catch((e: Error) => console.error(`berthd: network ${n.Name}: ${e.message}`));
    await driver?.deleteNetwork(n, this.registry.list());
    await this.registry.finishRemove(n);
  }

  // ---------------------------------------------------------------- the engine's side (NetworkService)

  validateMode(mode: string): void {
    validateMode(this.registry, mode);
  }

  validatePortBindings(bindings: PortBindings): void {
    portRequests(bindings);
  }

  validateLabels(labels: Record<string, string>): void {
    parsePolicyLabels(labels);
  }

  initialEndpoints(mode: string, endpointsConfig: Record<string, unknown>, macAddress?: string, swarmTask?: boolean): Record<string, EndpointState> {
    return initialEndpoints(this.registry, mode, endpointsConfig, macAddress, swarmTask);
  }

  summary(ref: string): NetworkSummary {
    const n = this.registry.get(ref);
    return { Id: n.Id, Name: n.Name, Driver: n.Driver };
  }

  setUp(spec: SandboxSpec, sharedWith?: { netnsPath: string; etcDir: string }): Promise<SandboxState> {
    return this.gate.whileJoining(Object.keys(spec.endpoints), () => this.sandboxes.setUp(spec, sharedWith));
  }

  tearDown(ref: SandboxRef): Promise<void> {
    return this.sandboxes.tearDown(ref);
  }

  async connect(spec: SandboxSpec, netnsPath: string | undefined, published: PortMapping[], networkRef: string, cfg: Record<string, unknown>, swarmTask = false): Promise<{ endpoint: EndpointState; published: PortMapping[] }> {
    const n = this.registry.get(networkRef);
    if (hasNoEndpoints(spec.mode)) {
      throw new BadRequestError('container sharing network namespace with another container or host cannot be connected to any other network');
    }
    if (!this.registry.driverOf(n)) throw new ForbiddenError('container cannot be disconnected from host network or connected to host network');
    if (spec.endpoints[n.Id]) throw new ForbiddenError(`endpoint with name ${spec.name} already exists in network ${n.Name}`);
    const ep = endpointFromConfig(n, cfg, undefined, swarmTask);
    if (!netnsPath) {
      this.registry.changed([n.Id], spec.id);
      return { endpoint: ep, published };
    }
    return this.gate.whileJoining([n.Id], () => this.sandboxes.connect(spec, netnsPath, published, n, ep));
  }

  async disconnect(spec: SandboxSpec, netnsPath: string | undefined, published: PortMapping[], networkRef: string): Promise<{ published: PortMapping[]; saved?: Promise<void> }> {
    const n = this.registry.get(networkRef);
    const ep = spec.endpoints[n.Id];
    if (!ep) throw new ForbiddenError(`container ${spec.id} is not connected to the network ${n.Name}`);
    if (!netnsPath || !ep.ifname) {
      if (netnsPath) console.error(`berthd: ${spec.id.slice(0, 12)}: disconnect from ${n.Name}: its endpoint has no interface recorded (the kernel is left to the journal)`);
      this.registry.changed([n.Id], spec.id);
      return { published };
    }
    return this.sandboxes.disconnect(spec, netnsPath, published, n);
  }

  endpointsRecorded(containerId: string, networkIds: string[]): void {
    this.registry.changed(networkIds, containerId);
  }
}
