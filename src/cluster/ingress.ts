import type { BackendHits, ServiceBalancers, VipEntry } from '../network/servicelb.js';
import type { EndpointRecord } from '../network/overlay.js';
import { MESH_TABLE, portKey, replaceScript, type MeshPort } from '../network/ingressmesh.js';
import { LEGACY_HOST_PORTS_TABLE } from '../network/lbkinds.js';
import type { NetworkRecord } from '../network/types.js';
import { errorMessage } from '../util/errors.js';
import { ROOT } from './keys.js';
import type { PortConfig } from './publish.js';
import type { ServiceRecord, TaskRecord } from './servicemodel.js';
import type { WatchEvent } from './store.js';

/**
 * The names this host's ingress endpoint has in the store and in `network inspect ingress`:
 * Docker's, whose ingress sandbox it stands for.
 */
export const INGRESS_SBOX = 'ingress-sbox';
export const INGRESS_ENDPOINT = 'ingress-endpoint';
/** The mesh's table in berthd's namespace, and the host-mode ports' table of an older berth, which published them itself. */
export const HOST_TABLES = [MESH_TABLE, LEGACY_HOST_PORTS_TABLE];
/** The mesh's one balancer in the balancer's terms: berthd's own namespace (the empty path). */
const HOST = { id: 'mesh', netns: '' };

/** What the mesh needs of this host (the daemon implements it with the network controller). */
export interface IngressHost {
  /** This host's record of a swarm network, once it has made it. */
  network(id: string): NetworkRecord | undefined;
  /**
   * Gives this host an address of its own on the ingress network (an endpoint in the store, the
   * address on the host's ingress bridge), if it has none there; the address.
   */
  ensureEndpoint(n: NetworkRecord): Promise<{ ip: string }>;
  /** Takes this host's ingress endpoint away, if any (idempotent). */
  removeEndpoint(): Promise<void>;
  /** The store's endpoints of a swarm network. */
  endpointsOf(networkId: string): EndpointRecord[];
  /** Whether a local container has an endpoint on a network. */
  attached(containerId: string, networkId: string): boolean;
  /** Joins a running local container to a network (a task whose service began to publish). */
  attach(containerId: string, networkId: string): Promise<void>;
  /** A balancer of published ports that SNATs to this host's ingress address (ServiceBalancers of lbkinds' `meshKind`). */
  balancer(hostIp: string): PortBalancer;
  /** Applies an nft script in berthd's namespace. */
  nft(script: string): Promise<void>;
}

export type PortBalancer = Pick<ServiceBalancers, 'sync' | 'hits'>;

interface RunningTask { service: string; container: string; node: string }

/**
 * The routing mesh on one host, following the same store view as its overlay networks (a
 * SwarmNetworks follower, so "applied everywhere" covers it): while the swarm has an `ingress`
 * network this host holds an address of its own on it, and balances every published ingress port
 * of any service in its own namespace over the ingress addresses of the service's running tasks,
 * SNATing to that address (a task leaves the balancer when its record stops being running and
 * desired running, before its agent stops it). Docker sends the connection through an ingress
 * sandbox first; here that was a second namespace and NAT on every connection's way, and
 * 1.09-1.26x a `mode=host` port's latency at the task's own node. Host-mode ports are not the
 * mesh's: each task's container publishes its own, where it runs (taskruntime.ts).
 */
export class IngressMesh {
  private ingressId?: string;
  /** Services that publish through the mesh, with their ingress ports. */
  private readonly services = new Map<string, { ports: PortConfig[] }>();
  private readonly running = new Map<string, RunningTask>();
  /** The same by service: a pass read every running task for each publishing service. */
  private readonly runningOf = new Map<string, Map<string, RunningTask>>();
  /** This host's address on the ingress network, once made. */
  private endpoint?: { ip: string; network: string };
  /** The mesh's balancer, for the address it SNATs to (a table of published ports, kept as a container's VIPs are). */
  private lb?: { ip: string; lb: PortBalancer };
  /** Whether the tables a killed berthd or an older berth left were dealt with (the first pass does it). */
  private cleared = false;
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
   * Connections this node balanced to each service backend through the routing mesh (the mesh
   * table's slot elements). A backend's count lasts while it stays a backend of that port in its slot.
   */
  async hits(): Promise<Array<BackendHits & { via: 'ingress' }>> {
    const exists = (id: string) => this.services.has(id);
    return (await this.lb?.lb.hits(exists) ?? []).map((h) => ({ ...h, via: 'ingress' as const }));
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

  /** The host's endpoint and table brought in step; calls that come while one runs share one more pass. */
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
    // Making or removing the endpoint waits until every host applied it, this one included:
    // never inside the store follower's turn, so in the background.
    if (this.endpoint?.network !== net?.Id) this.startLifecycle();
    const endpoint = this.endpoint && this.endpoint.network === net?.Id ? this.endpoint : undefined;
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
    const lb = await this.balancer(endpoint?.ip);
    const entries = balanced(ingressPorts);
    // While the swarm has an ingress network and this host's endpoint on it is still being taken
    // up (after a restart) there is no balancer yet: what a killed berthd left keeps balancing new
    // connections until then, rather than none.
    if (!this.cleared && (lb || !this.ingressId)) {
      // What a killed berthd left: its table is replaced whole by this one's first sync with
      // ports (one transaction, so new connections find one table or the other; the ones it
      // balanced keep their NAT in conntrack either way), or goes now when there is none to sync.
      // An older berth's host-mode table goes.
      await this.host.nft((lb && entries.length ? '' : replaceScript(MESH_TABLE, '')) + replaceScript(LEGACY_HOST_PORTS_TABLE, ''));
      this.cleared = true;
    }
    await lb?.sync(new Map([[HOST.id, { netns: HOST.netns, entries }]]), true);
  }

  /**
   * The balancer that SNATs to this address. Another address is another table (its postrouting
   * rule names the address): the old one goes first, and the new one is made whole with its
   * first ports (counts start again, as its connections do).
   */
  private async balancer(ip: string | undefined): Promise<PortBalancer | undefined> {
    if (this.lb?.ip === ip) return this.lb?.lb;
    if (this.lb) await this.host.nft(replaceScript(MESH_TABLE, ''));
    this.lb = ip ? { ip, lb: this.host.balancer(ip) } : undefined;
    return this.lb?.lb;
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

  /** Makes (or removes) the host's endpoint until it matches the ingress network; then balances again. */
  private startLifecycle(): void {
    if (this.lifecycle || this.closed) return;
    this.lifecycle = (async () => {
      while (!this.closed) {
        const net = this.wanted();
        if (this.endpoint?.network === net?.Id) return;
        if (this.endpoint) await this.dropEndpoint();
        if (net) {
          const ep = await this.host.ensureEndpoint(net);
          this.endpoint = { ...ep, network: net.Id };
        }
      }
    })().then(() => { this.lifecycle = undefined; void this.sync(); }, (e) => {
      this.log(`ingress: this host's ingress endpoint: ${errorMessage(e)}; trying again`);
      // A half-made endpoint goes before the next try (removal is idempotent).
      void this.host.removeEndpoint().catch(() => undefined).finally(() => {
        setTimeout(() => { this.lifecycle = undefined; void this.sync(); }, 2000).unref();
      });
    });
  }

  private async dropEndpoint(): Promise<void> {
    this.endpoint = undefined;
    await this.host.removeEndpoint();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.pending?.catch(() => undefined);
    await this.lifecycle?.catch(() => undefined);
  }

  /** This host leaves the swarm: the published ports and the host's ingress endpoint go. */
  async leave(): Promise<void> {
    await this.close();
    await this.host.nft(HOST_TABLES.map((t) => replaceScript(t, '')).join('')).catch((e) => this.log(`ingress: ${errorMessage(e)}`));
    this.lb = undefined;
    await this.dropEndpoint().catch((e) => this.log(`ingress: ${errorMessage(e)}`));
  }
}

/**
 * A balancer's entries for these ports: each port by `proto . port`, its backends the tasks'
 * `address . target`. A port without a running task is left out: the table refuses it.
 */
function balanced(ports: MeshPort[]): VipEntry[] {
  return ports.filter((p) => p.backends.length).map((p) => ({ service: p.service, vip: portKey(p), backends: p.backends.map((ip) => `${ip} . ${p.target}`) }));
}
