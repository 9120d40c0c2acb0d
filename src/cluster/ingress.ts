import type { BackendHits, ServiceBalancers, VipEntry } from '../network/servicelb.js';
import type { EndpointRecord } from '../network/overlay.js';
import { ingressChanges, MESH_TABLE, meshTable, portKey, replaceScript, type MeshPort } from '../network/ingressmesh.js';
import { LEGACY_HOST_PORTS_TABLE } from '../network/lbkinds.js';
import type { NetworkRecord } from '../network/types.js';
import { errorMessage } from '../util/errors.js';
import { ROOT } from './keys.js';
import type { PortConfig } from './publish.js';
import type { ServiceRecord, TaskRecord } from './servicemodel.js';
import type { WatchEvent } from './store.js';

/** The ingress sandbox's identity: Docker's names, shown by `network inspect ingress`. */
export const INGRESS_SBOX = 'ingress-sbox';
export const INGRESS_ENDPOINT = 'ingress-endpoint';
/**
 * The tables the mesh keeps in berthd's namespace (the ingress sandbox's go with its namespace),
 * and the host-mode ports' table of an older berth, which published them itself.
 */
export const HOST_TABLES = [MESH_TABLE, LEGACY_HOST_PORTS_TABLE];

/** What the mesh needs of this host (the daemon implements it with the network controller). */
export interface IngressHost {
  /** This host's record of a swarm network, once it has made it. */
  network(id: string): NetworkRecord | undefined;
  /** Makes the ingress sandbox on this network if it is not there; its namespace and ingress address. */
  ensureSandbox(n: NetworkRecord): Promise<{ netns: string; ip: string }>;
  /** Removes the ingress sandbox, if any (idempotent). */
  removeSandbox(): Promise<void>;
  /** The store's endpoints of a swarm network. */
  endpointsOf(networkId: string): EndpointRecord[];
  /** Whether a local container has an endpoint on a network. */
  attached(containerId: string, networkId: string): boolean;
  /** Joins a running local container to a network (a task whose service began to publish). */
  attach(containerId: string, networkId: string): Promise<void>;
  /** A balancer of published ports for an ingress sandbox at this address (ServiceBalancers of lbkinds' `ingressKind`). */
  sandboxBalancer(sandboxIp: string): PortBalancer;
  /** Applies an nft script in berthd's namespace. */
  nft(script: string): Promise<void>;
}

export type PortBalancer = Pick<ServiceBalancers, 'sync' | 'hits'>;

interface RunningTask { service: string; container: string; node: string }

/**
 * The routing mesh on one host, following the same store view as its overlay networks (a
 * SwarmNetworks follower, so "applied everywhere" covers it): while the swarm has an `ingress`
 * network this host keeps an ingress sandbox on it, DNATs every published ingress port of any
 * service to that sandbox, and balances there over the ingress addresses of the service's running
 * tasks (a task leaves the balancer when its record stops being running and desired running,
 * before its agent stops it). Host-mode ports are not the mesh's: each task's container
 * publishes its own, where it runs (taskruntime.ts).
 */
export class IngressMesh {
  private ingressId?: string;
  /** Services that publish through the mesh, with their ingress ports. */
  private readonly services = new Map<string, { ports: PortConfig[] }>();
  private readonly running = new Map<string, RunningTask>();
  /** The same by service: a pass read every running task for each publishing service. */
  private readonly runningOf = new Map<string, Map<string, RunningTask>>();
  private sandbox?: { netns: string; ip: string; network: string };
  /** What the kernel holds, as last applied: changes are applied as differences from it. */
  private hostState?: { sandboxIp?: string; ingress: Set<string> };
  /** The ingress sandbox's balancer (a table of published ports, kept as a container's VIPs are). */
  private sandboxLb?: { netns: string; ip: string; lb: PortBalancer };
  private pending?: Promise<void>;
  private again = false;
  private closed = false;

  constructor(private readonly me: () => string, private readonly host: IngressHost, private readonly log: (m: string) => void) {}

  /** A SwarmNetworks follower. */
  async follow(events: WatchEvent<unknown>[], full: boolean): Promise<void> {
    if (full) { this.services.clear(); this.running.clear(); this.runningOf.clear(); this.ingressId = undefined; }
    for (const e of events) {
      const rest = e.key.slice(ROOT.length);
      if (rest.startsWith('networks/')) {
        const id = rest.slice('networks/'.length);
        if (e.type === 'put' && (e.value as NetworkRecord).Ingress) this.ingressId = id;
        else if (this.ingressId === id) this.ingressId = undefined;
      } else if (rest.startsWith('services/')) {
        const id = rest.slice('services/'.length);
        const ports = e.type === 'put' ? ((e.value as ServiceRecord).Endpoint.Ports ?? []).filter((p) => p.PublishMode === 'ingress') : [];
        if (ports.length) this.services.set(id, { ports });
        else this.services.delete(id);
      } else if (rest.startsWith('tasks/')) {
        const id = rest.slice('tasks/'.length);
        const t = e.type === 'put' ? (e.value as TaskRecord) : undefined;
        const c = t?.Status.ContainerStatus?.ContainerID;
        this.forgetTask(id);
        if (t && c && t.NodeID && t.DesiredState === 'running' && t.Status.State === 'running') {
          const r = { service: t.ServiceID, container: c, node: t.NodeID };
          this.running.set(id, r);
          let of = this.runningOf.get(r.service);
          if (!of) this.runningOf.set(r.service, (of = new Map()));
          of.set(id, r);
        }
      }
    }
    await this.sync();
  }

  /**
   * Connections this node balanced to each service backend through the routing mesh (the ingress
   * sandbox's slot elements). A backend's count lasts while it stays a backend of that port in its slot.
   */
  async hits(): Promise<Array<BackendHits & { via: 'ingress' }>> {
    const exists = (id: string) => this.services.has(id);
    return (await this.sandboxLb?.lb.hits(exists) ?? []).map((h) => ({ ...h, via: 'ingress' as const }));
  }

  private forgetTask(id: string): void {
    const had = this.running.get(id);
    if (!had) return;
    this.running.delete(id);
    const of = this.runningOf.get(had.service);
    of?.delete(id);
    if (of && !of.size) this.runningOf.delete(had.service);
  }

  /** The ingress network's id, while the swarm has one. */
  ingress(): string | undefined {
    return this.ingressId;
  }

  /** Whether a service's tasks need an endpoint on `ingress` (it publishes an ingress port). */
  needsIngress(serviceId: string): boolean {
    return this.services.has(serviceId);
  }

  /** Host and sandbox brought in step; calls that come while one runs share one more pass. */
  sync(): Promise<void> {
    if (this.pending) { this.again = true; return this.pending; }
    this.pending = (async () => {
      do {
        this.again = false;
        await this.syncOnce().catch((e) => this.log(`ingress: ${errorMessage(e)}`));
      } while (this.again && !this.closed);
    })().finally(() => { this.pending = undefined; });
    return this.pending;
  }

  private async syncOnce(): Promise<void> {
    if (this.closed) return;
    const net = this.wanted();
    // Making or removing the sandbox joins or leaves the overlay, which waits until every host
    // applied it, this one included: never inside the store follower's turn, so in the background.
    if (this.sandbox?.network !== net?.Id) this.startLifecycle();
    const sandbox = this.sandbox && this.sandbox.network === net?.Id ? this.sandbox : undefined;
    const ingressPorts: MeshPort[] = [];
    // Each container's ingress addresses, read once: a filter of every endpoint per port cost
    // ports × endpoints each pass.
    const ingressIps = new Map<string, string[]>();
    for (const e of net ? this.host.endpointsOf(net.Id) : []) {
      const l = ingressIps.get(e.ContainerID);
      if (l) l.push(e.IP);
      else ingressIps.set(e.ContainerID, [e.IP]);
    }
    for (const [id, s] of this.services) {
      const tasks = [...this.runningOf.get(id)?.values() ?? []];
      if (net && this.needsIngress(id)) for (const t of tasks) if (t.node === this.me()) this.attach(t.container, net.Id);
      const backends = tasks.flatMap((t) => ingressIps.get(t.container) ?? []).sort();
      for (const p of s.ports) ingressPorts.push({ service: id, proto: p.Protocol, published: p.PublishedPort, target: p.TargetPort, backends });
    }
    if (sandbox) await this.sandboxBalancer(sandbox).sync(new Map([[INGRESS_SBOX, { netns: sandbox.netns, entries: balanced(ingressPorts) }]]), true);
    const ingress = new Set(sandbox ? ingressPorts.map(portKey) : []);
    const hs = this.hostState;
    const cmds = hs && hs.sandboxIp === sandbox?.ip ? (sandbox ? ingressChanges(sandbox.ip, hs.ingress, ingress) : []) : undefined;
    this.hostState = undefined;
    // Made whole (the first pass): the host-mode table an older berth made goes too.
    await this.apply(cmds, () => replaceScript(MESH_TABLE, meshTable(sandbox?.ip, ingressPorts.map((p) => ({ proto: p.proto, port: p.published }))))
      + replaceScript(LEGACY_HOST_PORTS_TABLE, ''));
    this.hostState = { ...(sandbox ? { sandboxIp: sandbox.ip } : {}), ingress };
  }

  /** The balancer of this sandbox: a new sandbox's table is made whole (counts start again, as its connections do). */
  private sandboxBalancer(sandbox: { netns: string; ip: string }): PortBalancer {
    const had = this.sandboxLb;
    if (had?.netns === sandbox.netns && had.ip === sandbox.ip) return had.lb;
    this.sandboxLb = { ...sandbox, lb: this.host.sandboxBalancer(sandbox.ip) };
    return this.sandboxLb.lb;
  }

  /**
   * The host table's differences in one transaction, or the table made whole when its state is
   * unknown (the first pass) or a difference did not apply (someone changed the table).
   */
  private async apply(cmds: string[] | undefined, whole: () => string): Promise<void> {
    if (cmds && !cmds.length) return;
    if (cmds) {
      try {
        return await this.host.nft(cmds.join('\n') + '\n');
      } catch (e) {
        this.log(`ingress: a change to the host table did not apply (${errorMessage(e)}); making it whole`);
      }
    }
    await this.host.nft(whole());
  }

  /** The ingress network as this host has made it, while the swarm has one. */
  private wanted(): NetworkRecord | undefined {
    return this.ingressId ? this.host.network(this.ingressId) : undefined;
  }

  private lifecycle?: Promise<void>;
  private readonly attaching = new Set<string>();

  /**
   * A running task of a service that began to publish (`service update --publish-add`) joins
   * ingress where it runs, as a new task would at its start; in the background, as a join waits
   * for every host to apply it. It is a backend once its endpoint is in the store.
   */
  private attach(container: string, network: string): void {
    if (this.attaching.has(container) || this.host.attached(container, network) || this.closed) return;
    this.attaching.add(container);
    void this.host.attach(container, network)
      .catch((e) => this.log(`ingress: task container ${container.slice(0, 12)} joining ingress: ${errorMessage(e)}`))
      .finally(() => { this.attaching.delete(container); void this.sync(); });
  }

  /** Makes (or removes) the sandbox until it matches the ingress network; then balances again. */
  private startLifecycle(): void {
    if (this.lifecycle || this.closed) return;
    this.lifecycle = (async () => {
      while (!this.closed) {
        const net = this.wanted();
        if (this.sandbox?.network === net?.Id) return;
        if (this.sandbox) await this.dropSandbox();
        if (net) {
          const sb = await this.host.ensureSandbox(net);
          this.sandbox = { ...sb, network: net.Id };
        }
      }
    })().then(() => { this.lifecycle = undefined; void this.sync(); }, (e) => {
      this.log(`ingress: the ingress sandbox: ${errorMessage(e)}; trying again`);
      // A half-made sandbox goes before the next try (removal is idempotent).
      void this.host.removeSandbox().catch(() => undefined).finally(() => {
        setTimeout(() => { this.lifecycle = undefined; void this.sync(); }, 2000).unref();
      });
    });
  }

  private async dropSandbox(): Promise<void> {
    this.sandbox = undefined;
    this.sandboxLb = undefined;
    await this.host.removeSandbox();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.pending?.catch(() => undefined);
    await this.lifecycle?.catch(() => undefined);
  }

  /** This host leaves the swarm: the published ports and the sandbox go. */
  async leave(): Promise<void> {
    await this.close();
    await this.host.nft(HOST_TABLES.map((t) => replaceScript(t, '')).join('')).catch((e) => this.log(`ingress: ${errorMessage(e)}`));
    this.hostState = undefined;
    await this.dropSandbox().catch((e) => this.log(`ingress: ${errorMessage(e)}`));
  }
}

/**
 * A balancer's entries for these ports: each port by `proto . port`, its backends the tasks'
 * `address . target`. A port without a running task is left out: the table refuses it.
 */
function balanced(ports: MeshPort[]): VipEntry[] {
  return ports.filter((p) => p.backends.length).map((p) => ({ service: p.service, vip: portKey(p), backends: p.backends.map((ip) => `${ip} . ${p.target}`) }));
}
