import { createReadStream, existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { ApiServer } from '../api/server.js';
import { MetricsServer } from '../api/metricsserver.js';
import { MetricsCollector } from '../metrics/collector.js';
import { Cluster } from '../cluster/cluster.js';
import type { ApiContext } from '../api/context.js';
import { Engine } from '../engine/engine.js';
import { EventBus } from '../engine/events.js';
import { ExecManager } from '../engine/exec.js';
import { LocalImageStore } from '../images/store.js';
import { RegistryService } from '../images/registry/service.js';
import { ensurePrivateBind, mountPointsUnder, releasePrivateBind } from '../kernel/mount.js';
import { deleteNetns, hostIp, hostIpDeletions } from '../kernel/netns.js';
import { hostNft } from '../kernel/nft.js';
import { NetworkController } from '../network/controller.js';
import { BridgeDriver } from '../network/bridgedriver.js';
import { CniDriver } from '../network/cnidriver.js';
import { CniRunner } from '../cni/runner.js';
import { CNI_CONF_DIRS, CNI_PLUGIN_DIRS } from '../cni/paths.js';
import { DefaultIpam } from '../network/ipamdriver.js';
import { VlanDriver } from '../network/macvlan.js';
import { RemoteDriver } from '../network/remotedriver.js';
import { RemoteIpam } from '../network/remoteipam.js';
import { DOCKER_PLUGIN_PATHS } from '../plugins/discovery.js';
import { PluginManager } from '../plugins/manager.js';
import { OverlayDriver } from '../network/overlaydriver.js';
import { SwarmNetworks } from '../cluster/swarmnetworks.js';
import { PluginDiscovery } from '../cluster/plugindiscovery.js';
import type { Session } from '../cluster/session.js';
import { K, type ClusterRecord } from '../cluster/keys.js';
import { NftFirewall } from '../network/nftfirewall.js';
import { LocalRecordStore, NetworkRegistry } from '../network/registry.js';
import { ContainerDirectory } from './dnsdirectory.js';
import { Tracer } from '../trace/tracer.js';
import { DnsServer } from '../dns/server.js';
import { ConmonRuntime } from '../runtime/conmon.js';
import { readJson, writeJsonAtomic } from '../store/atomic.js';
import { errorMessage } from '../util/errors.js';
import { newId } from '../util/ids.js';
import { run } from '../util/exec.js';
import { ATTACH_HELPER, BUSYBOX_TARBALL, RUNC_SHIM, VERSION } from './paths.js';
import { removeStaleScratch } from '../util/scratch.js';
import { Agent } from '../cluster/agent.js';
import { Orchestrator } from '../cluster/orchestrator.js';
import { ServiceNet } from '../cluster/servicenet.js';
import { ServiceBalancers } from '../network/servicelb.js';
import { PolicyPeers } from '../cluster/policypeers.js';
import { LogServer } from '../cluster/logstream.js';
import { readLogs } from '../engine/logs.js';
import { EngineTaskRuntime, type TaskService } from './taskruntime.js';
import { HOST_TABLES, IngressMesh } from '../cluster/ingress.js';
import { IngressEndpointFile, ingressHost } from './ingresshost.js';
import type { EndpointRecord } from '../network/overlay.js';
import { replaceScript } from '../network/ingressmesh.js';
import { nftApply } from '../kernel/nft.js';
import { ROOT } from '../cluster/keys.js';
import { SK } from '../cluster/services.js';
import type { ServiceRecord } from '../cluster/servicemodel.js';
import { Steps } from '../util/steps.js';

export interface DaemonOptions {
  /** Swarm membership: lease TTL of this node's presence, an external store, the name it shows. */
  cluster?: { leaseTtlSec?: number; minCertExpirySec?: number; store?: string[]; hostname?: string };
  root: string; socket: string; attachHelper?: string; seedBusybox?: boolean; debug?: boolean;
  /** A request with no answer for this long is logged with where its container's work is (0: never). */
  slowRequestSec?: number;
  bip?: string; bridge?: string; insecureRegistries?: string[]; resolvConf?: string;
  /** HOST:PORT where /metrics is also served over TCP (Docker's --metrics-addr). */
  metricsAddr?: string;
  /** Where Docker plugins are found (default: Docker's directories), and how long their calls may take. */
  plugins?: { socketDir?: string; specDirs?: string[]; retrySec?: number; callTimeoutSec?: number };
  /** Where CNI configuration lists and plugin executables are found (default: /etc/cni/net.d; /usr/lib/cni and /opt/cni/bin). */
  cni?: { confDirs?: string[]; pluginDirs?: string[]; timeoutSec?: number } }

interface DaemonIdentity { id: string }

/** Wires the layers together: store and drivers below, engine in the middle, API on top. */
export class Daemon {
  private server?: ApiServer;
  private metricsServer?: MetricsServer;
  private runtime?: ConmonRuntime;
  private registry?: NetworkRegistry;
  private cluster?: Cluster;
  engine?: Engine;
  private readonly overlay = new OverlayDriver();
  private swarmNetworks?: SwarmNetworks;
  /** While in a swarm: services' VIPs and balancers here, the task agent, the orchestrator (managers campaign to lead it). */
  private services?: { net: ServiceNet; agent: Agent; orchestrator: Orchestrator; mesh: IngressMesh; logs: LogServer };
  private readonly balancers = new ServiceBalancers((m) => console.error(`berthd: ${m}`));
  /** While in a swarm: other hosts' endpoints in this host's network policy sets. */
  private policyPeers?: PolicyPeers;
  /** Docker's plugins, and while in a swarm, their node discovery. */
  private plugins?: PluginManager;
  private pluginDiscovery?: PluginDiscovery;

  constructor(private readonly o: DaemonOptions) {}

  private async identity(): Promise<DaemonIdentity> {
    const path = join(this.o.root, 'daemon.json');
    const existing = await readJson<DaemonIdentity>(path);
    if (existing) return existing;
    const id: DaemonIdentity = { id: newId().slice(0, 36).toUpperCase() };
    await writeJsonAtomic(path, id);
    return id;
  }

  /** The network layer with every driver and IPAM registered: the one place that names them. */
  private networkLayer(): NetworkController {
    // Swarm networks live in the cluster store; this host keeps a copy of those it has made, so a
    // restart (or --cleanup) knows its kernel objects before the store is reachable.
    const registry = new NetworkRegistry({ local: new LocalRecordStore(join(this.o.root, 'networks')), swarm: new LocalRecordStore(join(this.o.root, 'swarm-networks')) });
    const mtu = () => network.mtu;
    registry.registerDriver(new BridgeDriver(mtu));
    registry.registerDriver(new VlanDriver('macvlan', mtu));
    registry.registerDriver(new VlanDriver('ipvlan', mtu));
    registry.registerDriver(this.overlay);
    const cni = this.o.cni ?? {};
    const runner = new CniRunner({ pluginDirs: cni.pluginDirs?.length ? cni.pluginDirs : CNI_PLUGIN_DIRS, cacheDir: join(this.o.root, 'cni', 'results'), timeoutMs: (cni.timeoutSec ?? 60) * 1000 });
    registry.registerDriver(new CniDriver(runner, cni.confDirs?.length ? cni.confDirs : CNI_CONF_DIRS));
    registry.registerIpam(new DefaultIpam());
    const p = this.o.plugins ?? {};
    const plugins = this.plugins = new PluginManager({
      paths: { sockets: p.socketDir ?? DOCKER_PLUGIN_PATHS.sockets, specs: p.specDirs?.length ? p.specDirs : DOCKER_PLUGIN_PATHS.specs },
      retryMs: (p.retrySec ?? 30) * 1000, callTimeoutMs: (p.callTimeoutSec ?? 60) * 1000,
    });
    const pluginState = join(this.o.root, 'plugins');
    registry.setPluginSource({ driver: (name) => new RemoteDriver(name, plugins, pluginState, () => this.overlay.plane), ipam: (name) => new RemoteIpam(name, plugins) });
    const network: NetworkController = new NetworkController({
      root: this.o.root, registry, firewall: new NftFirewall(), bip: this.o.bip, ...(this.o.bridge ? { defaultBridgeName: this.o.bridge } : {}), ...(this.o.resolvConf ? { hostResolvConf: this.o.resolvConf } : {}),
    });
    return network;
  }

  private async build(): Promise<{ engine: Engine; images: LocalImageStore; runtime: ConmonRuntime; network: NetworkController; identity: DaemonIdentity; dns: DnsServer }> {
    await fs.mkdir(this.o.root, { recursive: true, mode: 0o711 });
    // runc refuses a rootfs path through a symlink, and the mount table names resolved paths.
    this.o.root = await fs.realpath(this.o.root);
    const identity = await this.identity();
    const ownMount = await ensurePrivateBind(this.o.root);
    const runtime = new ConmonRuntime({
      runcRoot: join(this.o.root, 'runc'), exitDir: join(this.o.root, 'exits'),
      attachHelper: this.o.attachHelper ?? ATTACH_HELPER,
      ...(existsSync(RUNC_SHIM) ? { runcShim: RUNC_SHIM, ...(ownMount ? { mountRoot: this.o.root } : {}) } : {}),
    });
    await runtime.init();
    const images = new LocalImageStore(join(this.o.root, 'image'));
    await images.init();
    const network = this.networkLayer();
    this.registry = network.registry;
    await network.init();
    const engine = new Engine({ root: this.o.root, images, runtime, network, events: new EventBus() });
    await engine.restore();
    await engine.applyEndpointFixes(await network.adopt(engine.runningSandboxes()));
    const registry = network.registry;
    const dns = new DnsServer(new ContainerDirectory(() => [...engine.containers.values(), ...network.provided.members()], () => registry.networks, () => registry.generation, () => [...(this.swarmNetworks?.remoteEndpoints() ?? []), ...(this.services?.net.dnsEntries() ?? [])],
      (id, aliases) => this.services?.net.answers(id, aliases) ?? true), this.o.resolvConf);
    // A local container started or connected: its balancer table, if it is on a service's network.
    registry.onChange((c) => { if (c.containers.some(Boolean)) void this.services?.net.syncContainers(c.containers.filter(Boolean)); });
    await network.attachResolver(dns);
    return { engine, images, runtime, network, identity, dns };
  }

  async start(): Promise<void> {
    if (!existsSync(this.o.attachHelper ?? ATTACH_HELPER)) {
      throw new Error(`attach helper ${this.o.attachHelper ?? ATTACH_HELPER} is missing: run npm run build`);
    }
    const { engine, images, runtime, network, identity, dns } = await this.build();
    // A berthd killed while it applied a ruleset left its script file behind.
    void removeStaleScratch().catch(() => undefined);
    this.engine = engine;
    this.runtime = runtime;
    const tracer = this.tracer(engine, network);
    // A berthd killed mid-trace left its trace tables.
    await tracer.removeLeftovers().then((p) => p.forEach((x) => console.error(`berthd: trace tables: ${x}`)));
    if (this.o.seedBusybox !== false) await this.seedBusybox(engine);
    // As Docker's daemon does before it serves the API (not in build(): `--cleanup` starts nothing).
    await engine.applyRestartPolicies();
    this.cluster = this.makeCluster();
    this.cluster.onSession = (s, up, leaving) => this.swarmSession(s, up, leaving, network, engine);
    await this.cluster.restore();
    const metrics = this.metricsCollector(engine, network, dns, this.cluster);
    if (this.o.metricsAddr) {
      this.metricsServer = new MetricsServer(() => metrics.render());
      await this.metricsServer.listen(this.o.metricsAddr);
    }
    const api: ApiContext = {
      engine, network, runtime, execs: new ExecManager(engine, runtime), cluster: this.cluster, metrics: () => metrics.render(), tracer,
      registry: new RegistryService(images, { insecure: this.o.insecureRegistries ?? [] }),
      info: { id: identity.id, root: this.o.root, socket: this.o.socket, version: VERSION, startedAt: new Date(), hostname: this.o.cluster?.hostname ?? hostname() },
    };
    await fs.mkdir(join(this.o.socket, '..'), { recursive: true, mode: 0o755 });
    this.server = new ApiServer(api, this.o.debug, (this.o.slowRequestSec ?? 30) * 1000);
    await this.server.listen(this.o.socket);
    void network.collectGarbage().catch((e: Error) => console.error(`berthd: ${e.message}`));
  }

  private tracer(engine: Engine, network: NetworkController): Tracer {
    return new Tracer({
      root: this.o.root, containers: () => engine.containers.values(), get: (ref) => engine.get(ref), networks: () => network.registry.networks,
      policy: () => network.policy.all(), remotes: () => this.swarmNetworks?.remoteEndpoints() ?? [],
    });
  }

  /** What /metrics reads: the engine's records and counts, the networks and their drivers, the resolver, the swarm. */
  private metricsCollector(engine: Engine, network: NetworkController, dns: DnsServer, cluster: Cluster): MetricsCollector {
    const registry = network.registry;
    return new MetricsCollector({
      containers: () => engine.containers.values(),
      networks: () => registry.list(),
      hostLink: (n, endpointId) => registry.driverOf(n)?.hostLink?.(n, endpointId),
      life: engine.lifeStats,
      dns: () => dns.stats(),
      clusterNodes: async () => {
        if (!cluster.current) return undefined;
        const nodes = await cluster.control.listNodes();
        return nodes.map((n) => ({ role: String((n.Spec as { Role?: string })?.Role ?? ''), state: String((n.Status as { State?: string })?.State ?? '') }));
      },
      services: () => this.services?.net.stats(),
      serviceHits: async () => {
        const svc = this.services;
        if (!svc) return undefined;
        const [vip, mesh] = await Promise.all([this.balancers.hits((id) => svc.net.nameOf(id) !== undefined), svc.mesh.hits()]);
        return [...vip.map((h) => ({ ...h, via: 'vip' })), ...mesh].flatMap((h) => {
          const service = svc.net.nameOf(h.service);
          return service ? [{ ...h, service }] : [];
        });
      },
    });
  }

  /** Every live endpoint of this host's containers on a swarm network, disconnected (a failure is logged, the rest go on). */
  private async leaveSwarmNetworks(engine: Engine, network: NetworkController): Promise<void> {
    for (const c of [...engine.containers.values()]) {
      for (const [id, ep] of Object.entries(c.Endpoints ?? {})) {
        const n = network.registry.networks.get(id);
        if (n?.Scope !== 'swarm' || !ep.EndpointID) continue;
        await engine.disconnect(c.Id, id, true).catch((e) => console.error(`berthd: leaving the swarm: disconnecting ${c.Name.slice(1)} from ${n.Name}: ${errorMessage(e)}`));
      }
    }
  }

  /**
   * A swarm membership starts or ends: swarm networks follow the cluster store while it lasts.
   * Leaving the swarm takes its networks off this host; a daemon stop leaves them (and their
   * containers) as they are, for the next start to reconcile.
   */
  private async swarmSession(s: Session, up: boolean, leaving: boolean, network: NetworkController, engine: Engine): Promise<void> {
    if (!up) {
      const svc = this.services;
      this.services = undefined;
      if (svc) {
        await svc.orchestrator.close();
        await svc.logs.close();
        // Leaving takes the published ports and the host's ingress endpoint; a daemon stop leaves them serving.
        await (leaving ? svc.mesh.leave() : svc.mesh.close());
        // Leaving takes the task containers with it; a daemon stop leaves them running for the next start.
        await (leaving ? svc.agent.leave() : svc.agent.close());
      }
      // Docker's clearAttachableNetworks: leaving, the host's containers come off swarm networks
      // first (records and kernel), while the plane can still withdraw their endpoints; before the
      // policy sets are cleared, as the withdrawals' events still reach their follower.
      if (leaving && this.swarmNetworks) await this.leaveSwarmNetworks(engine, network);
      // Leaving takes other hosts' endpoints out of the policy sets; a daemon stop leaves the kernel as it is.
      if (leaving) await this.policyPeers?.clear().catch((e) => console.error(`berthd: network policy peers: ${errorMessage(e)}`));
      this.policyPeers = undefined;
      const discovery = this.pluginDiscovery;
      this.pluginDiscovery = undefined;
      await discovery?.close(leaving).catch((e) => console.error(`berthd: plugin discovery: ${errorMessage(e)}`));
      const sn = this.swarmNetworks;
      this.swarmNetworks = undefined;
      this.overlay.plane = undefined;
      network.swarm = undefined;
      if (sn) await (leaving ? sn.leave() : sn.close());
      return;
    }
    const steps = new Steps('the swarm side of a session');
    // Read when the session started its watches: one round trip less for init and join.
    const cluster = s.cluster ?? (await s.store.get<ClusterRecord>(K.cluster))?.value;
    // The ingress endpoint a killed berthd held is taken up again: its address stays on the bridge.
    const keptIngress = new IngressEndpointFile(join(this.o.root, 'ingress-endpoint.json'));
    const kept = await keptIngress.load();
    if (kept) this.overlay.adoptHost(kept.network, kept);
    // The swarm endpoints this host holds, from the engine's records, those berth-cni gave CNI
    // runtimes' containers, and its own ingress endpoint (a relist and the audit would otherwise
    // withdraw them as no one's).
    const isSwarm = (id: string) => network.registry.networks.get(id)?.Scope === 'swarm';
    const held = (): Array<Omit<EndpointRecord, 'Node' | 'Vtep'>> => [...engine.containers.values()].flatMap((c) => Object.entries(c.Endpoints ?? {})
      .filter(([id, ep]) => ep.EndpointID && ep.IPAddress && isSwarm(id))
      .map(([id, ep]) => ({ Network: id, EndpointID: ep.EndpointID, ContainerID: c.Id, Name: c.Name.slice(1), Aliases: ep.Aliases ?? [], IP: ep.IPAddress, Mac: ep.MacAddress,
        ...(Object.keys(c.Config.Labels ?? {}).length ? { Labels: c.Config.Labels! } : {}) })))
      .concat(network.provided.joinedEndpoints().filter((e) => isSwarm(e.Network)))
      .concat(keptIngress.record(this.overlay.hostMac()) ?? []);
    const sn = new SwarmNetworks(s, network.swarmSide, held, cluster?.DataPathPort ?? 4789, (m) => console.error(`berthd: ${m}`));
    this.swarmNetworks = sn;
    this.overlay.plane = sn;
    network.swarm = sn;
    const log = (m: string) => console.error(`berthd: ${m}`);
    const sandboxes = (only?: Iterable<string>) => (only ? [...only].flatMap((id) => engine.containers.get(id) ?? []) : [...engine.containers.values()])
      .filter((c) => c.NetnsPath && c.State.Status !== 'removing')
      .map((c) => ({ id: c.Id, netns: c.NetnsPath, networks: Object.entries(c.Endpoints ?? {}).filter(([, ep]) => ep.IPAddress).map(([id]) => id) }));
    const peers = new PolicyPeers({
      me: () => s.state.nodeId, endpointsOf: (id) => sn.endpointsOf(id), policy: network.policy,
      swarmNetworks: () => network.registry.list().filter((n) => n.Scope === 'swarm'),
    });
    sn.followers.push((events, full) => peers.follow(events, full));
    this.policyPeers = peers;
    if (this.plugins) {
      const discovery = new PluginDiscovery(this.plugins, () => ({ id: s.state.nodeId, addr: s.state.addr, dataPathAddr: s.state.dataPathAddr }), log);
      sn.followers.push((events, full) => discovery.follow(events, full));
      this.pluginDiscovery = discovery;
    }
    const net = new ServiceNet((id) => sn.endpointsOf(id), sandboxes, this.balancers, (ids) => network.registry.changed(ids, ''));
    sn.followers.push((events, full) => net.follow(events, full));
    const mesh = new IngressMesh(() => s.state.nodeId, ingressHost({ network, engine, overlay: this.overlay, kept: keptIngress, endpointsOf: (id) => sn.endpointsOf(id) }), log);
    sn.followers.push((events, full) => mesh.follow(events, full));
    const serviceFor = async (serviceId: string): Promise<TaskService> => {
      const ports = (await s.store.get<ServiceRecord>(SK.service(serviceId)))?.value.Endpoint.Ports ?? [];
      const ingress = ports.some((p) => p.PublishMode === 'ingress') ? mesh.ingress() ?? network.registry.list().find((n) => n.Scope === 'swarm' && n.Ingress)?.Id : undefined;
      return { ...(ingress ? { ingress } : {}), targetPorts: ports.map((p) => `${p.TargetPort}/${p.Protocol}`) };
    };
    const agent = new Agent(s, new EngineTaskRuntime(engine, (id) => net.hasVip(id), serviceFor), log, (r) => sn.appliedEverywhere(r));
    const orchestrator = new Orchestrator(s, log);
    // `service logs`: this node reads its tasks' logs for whichever manager asks.
    const logs = new LogServer(() => s.store, () => s.state.nodeId, {
      container: (id) => {
        const c = engine.find(id);
        return c ? { logPath: engine.logPath(c), running: () => !!engine.find(id)?.State.Running } : undefined;
      },
      read: readLogs,
    }, log);
    this.services = { net, agent, orchestrator, mesh, logs };
    this.cluster!.services.hooks = {
      findNetwork: (ref) => network.registry.find(ref), appliedEverywhere: (r) => sn.appliedEverywhere(r),
      ingress: () => network.registry.list().find((n) => n.Scope === 'swarm' && n.Ingress),
    };
    // `service logs` subscriptions need none of the networks: they start beside them.
    const logsUp = logs.start();
    // A new swarm's ingress goes into its empty store before this host's first list, which brings
    // it as it brings every network: `swarm init` returns once it is listed here, its bridge
    // follows. A swarm of an older berth gets it after the list (create checks names against it).
    const ingressFirst = s.newSwarm && s.state.role === 'manager';
    if (ingressFirst) await this.makeIngress(s, sn, false).catch((e) => log(`ingress: ${errorMessage(e)}`));
    // The agent lists its tasks beside the networks' list, and acts on them once this node follows
    // the networks: a task that publishes joins ingress, which must be listed here (its join
    // waits for the kernel side: SwarmNetworks.claim).
    let networksListed!: () => void;
    const agentUp = agent.start(new Promise<void>((resolve) => { networksListed = resolve; })).catch((e) => log(`agent: ${errorMessage(e)}`));
    steps.mark('parts made');
    try {
      await sn.startListed();
      steps.mark('networks listed');
      if (!ingressFirst && s.state.role === 'manager') await this.makeIngress(s, sn, true).catch((e) => log(`ingress: ${errorMessage(e)}`));
    } finally {
      networksListed();
    }
    orchestrator.start();
    // The agent's and the log server's watches are made behind the networks' on the store
    // client's one watch stream, one at a time: init and join return without waiting for them
    // (each starts from the revision it listed, so nothing is missed meanwhile).
    void agentUp;
    void logsUp.catch((e) => log(`service logs: ${errorMessage(e)}`));
    steps.done();
  }

  /**
   * Docker makes the `ingress` network when the swarm is made, from the default address pool;
   * a swarm whose ingress was removed does not get it back. The first manager to claim the mark
   * makes it (a swarm made by an older berth gets it at its next start).
   */
  private async makeIngress(s: Session, sn: SwarmNetworks, applied: boolean): Promise<void> {
    const mark = `${ROOT}ingress/made`;
    const r = await s.store.txn([{ key: mark, target: 'Create', value: 0 }], [{ key: mark, value: { At: new Date().toISOString() } }]);
    if (!r.ok) return;
    try {
      await sn.create({ Name: 'ingress', Driver: 'overlay', Ingress: true, Options: {}, Labels: {}, IPAM: { Driver: 'default' } }, undefined, { applied });
    } catch (e) {
      await s.store.txn([], [], [mark]).catch(() => undefined);
      throw e;
    }
  }

  private makeCluster(): Cluster {
    const c = this.o.cluster ?? {};
    return new Cluster({
      root: this.o.root, hostname: c.hostname ?? hostname(), engineVersion: VERSION, leaseTtlSec: c.leaseTtlSec ?? 5,
      ...(c.minCertExpirySec ? { minCertExpirySec: c.minCertExpirySec } : {}),
      ...(c.store?.length ? { external: c.store } : {}),
    });
  }

  /** A fresh store gets the busybox image that setup built from Debian's busybox-static. */
  private async seedBusybox(engine: Engine): Promise<void> {
    if (engine.images.list().length > 0 || !existsSync(BUSYBOX_TARBALL)) return;
    try {
      await engine.images.importRootfs(createReadStream(BUSYBOX_TARBALL), { repoTag: 'busybox:latest', changes: ['CMD ["sh"]'] });
    } catch (e) {
      console.error(`berthd: could not import busybox from ${BUSYBOX_TARBALL}: ${errorMessage(e)}`);
    }
  }

  async stop(): Promise<void> {
    await this.server?.close();
    await this.metricsServer?.close();
    await this.cluster?.close().catch(() => undefined);
    await this.registry?.flush();
    hostIp.close();
    hostIpDeletions.close();
    hostNft.close();
    this.runtime?.close();
  }

  /**
   * `berthd --cleanup`: stop every container and remove every kernel object berth made under this
   * root (namespaces, mounts), leaving the stored state so containers show as exited.
   */
  async cleanup(): Promise<string[]> {
    const problems: string[] = [];
    const { engine, runtime, network } = await this.build();
    await removeStaleScratch().catch(() => undefined);
    await engine.stopAllAndRelease();
    const runcRoot = join(this.o.root, 'runc');
    const list = await run('runc', ['--root', runcRoot, 'list', '-q']);
    for (const id of list.stdout.split('\n').filter(Boolean)) {
      await runtime.kill(id, 'KILL').catch(() => undefined);
      const r = await run('runc', ['--root', runcRoot, 'delete', '--force', id]);
      if (r.code !== 0) problems.push(`runc delete ${id}: ${r.stderr.trim()}`);
    }
    problems.push(...(await network.removeKernelObjects()));
    // The routing mesh's published ports (its address goes with the ingress bridge, above).
    for (const table of HOST_TABLES) await nftApply(replaceScript(table, '')).catch((e) => problems.push(`nft table ${table}: ${errorMessage(e)}`));
    problems.push(...(await this.tracer(engine, network).removeLeftovers()));
    // The etcd member outlives berthd on purpose; a cleanup ends it (the membership stays on disk).
    await this.makeCluster().stopMember().catch((e) => problems.push(`etcd member: ${errorMessage(e)}`));
    for (const p of await mountPointsUnder(join(this.o.root, 'netns'))) {
      await deleteNetns(p).catch((e) => problems.push(errorMessage(e)));
    }
    // Below the root everything mounted is berth's; at the root itself only berth's own bind is,
    // not a filesystem the administrator mounted there.
    for (const p of (await mountPointsUnder(this.o.root)).filter((p) => p !== this.o.root)) {
      const r = await run('umount', ['--lazy', p]);
      if (r.code !== 0) problems.push(`umount ${p}: ${r.stderr.trim()}`);
    }
    await releasePrivateBind(this.o.root).catch((e) => problems.push(errorMessage(e)));
    runtime.close();
    return problems;
  }
}
