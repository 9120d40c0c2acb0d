import type { RemoteEndpoint } from '../daemon/dnsdirectory.js';
import type { EndpointRecord } from '../network/overlay.js';
import type { ServiceBalancers, VipEntry } from '../network/servicelb.js';
import { ROOT } from './keys.js';
import type { ServiceRecord, TaskRecord } from './servicemodel.js';
import type { WatchEvent } from './store.js';

/** A local container as the balancers need it: its namespace and the networks it is on. */
export interface LocalSandbox { id: string; netns: string; networks: string[] }

/** A service's VIP on each of its networks, and the aliases its attachment to each gives it (`docker stack deploy` names a stack's service by its short name so). */
interface SvcView { name: string; vips: Map<string, string>; aliases: Map<string, string[]>; replicas?: number }

/** One service as this host sees it, for /metrics. */
export interface ServiceStat { service: string; replicas?: number; running: number; backends: Array<{ network: string; count: number }> }

/**
 * Services as one host's data plane sees them, following the same store view as its overlay
 * networks (a SwarmNetworks follower): each service's VIP per network, whose backends are the
 * endpoints of that network named `tasks.SERVICE` whose task is running and desired running (the
 * store's task record: a task leaves every balancer before its agent stops it, and joins only once
 * its process started; endpoints live under their host's lease, so a dead host's tasks leave with
 * it). It answers the DNS (`SERVICE` and the attachment's aliases → VIP, as Docker's service
 * bindings; task names, `tasks.SERVICE` and `tasks.ALIAS`, come with the endpoints) and keeps the
 * balancer table of every local sandbox on such a network in step.
 */
export class ServiceNet {
  private readonly services = new Map<string, SvcView>();
  /**
   * Tasks running and desired running, with their container and networks: only their containers
   * are backends, and only they answer their task names (a task leaves the balancers and the DNS
   * before it is stopped, as libnetwork's service binding is removed when a task is deactivated).
   */
  private readonly running = new Map<string, { service: string; container: string; networks: string[] }>();
  private live = new Set<string>();
  private pending?: Promise<void>;
  private again = false;

  constructor(
    private readonly endpointsOf: (networkId: string) => EndpointRecord[],
    private readonly sandboxes: () => LocalSandbox[],
    private readonly balancers: ServiceBalancers,
    /** Tells the DNS its names on these networks changed. */
    private readonly changed: (networkIds: string[]) => void,
  ) {}

  /** A SwarmNetworks follower: services' records change the VIPs; any batch may change backends. */
  async follow(events: WatchEvent<unknown>[], full: boolean): Promise<void> {
    const touched = new Set<string>();
    if (full) {
      for (const r of this.running.values()) for (const n of r.networks) touched.add(n);
      this.services.clear();
      this.running.clear();
    }
    for (const e of events) {
      const rest = e.key.slice(ROOT.length);
      if (rest.startsWith('tasks/')) {
        const id = rest.slice('tasks/'.length);
        const t = e.type === 'put' ? (e.value as TaskRecord) : undefined;
        const was = this.running.get(id);
        const container = t && t.DesiredState === 'running' && t.Status.State === 'running' ? t.Status.ContainerStatus?.ContainerID : undefined;
        if (container) {
          const networks = [...new Set([...(t!.Spec.Networks ?? []).map((n) => n.Target), ...(t!.NetworksAttachments ?? []).map((a) => a.Network.ID)])];
          this.running.set(id, { service: t!.ServiceID, container, networks });
          if (was?.container !== container) for (const n of networks) touched.add(n);
        } else if (was) {
          this.running.delete(id);
          for (const n of was.networks) touched.add(n);
        }
        continue;
      }
      if (!rest.startsWith('services/')) continue;
      const id = rest.slice('services/'.length);
      for (const n of this.services.get(id)?.vips.keys() ?? []) touched.add(n);
      if (e.type === 'put') {
        const s = e.value as ServiceRecord;
        // Only the service's own networks balance its VIP: its VIP on ingress is the routing mesh's
        // (Docker's IPVS in the ingress sandbox), and answering the service's name with it would
        // give a task on both a second address.
        const own = new Set((s.Spec.TaskTemplate.Networks ?? []).map((n) => n.Target));
        const vips = new Map((s.Endpoint.VirtualIPs ?? []).filter((v) => own.has(v.NetworkID)).map((v) => [v.NetworkID, v.Addr.split('/')[0]!]));
        const aliases = new Map((s.Spec.TaskTemplate.Networks ?? []).map((n) => [n.Target, n.Aliases ?? []]));
        this.services.set(id, { name: s.Spec.Name, vips, aliases, ...(s.Spec.Mode.Replicated ? { replicas: s.Spec.Mode.Replicated.Replicas ?? 1 } : {}) });
        for (const n of vips.keys()) touched.add(n);
      } else {
        this.services.delete(id);
      }
    }
    this.live = new Set([...this.running.values()].map((r) => r.container));
    if (touched.size) this.changed([...touched]);
    await this.syncAll();
  }

  /** `SERVICE` and its aliases → its VIP, as DNS entries on each network (only containers on that network ask them). */
  *dnsEntries(): Iterable<RemoteEndpoint> {
    for (const s of this.services.values()) for (const [net, ip] of s.vips) yield { Network: net, ContainerID: '', Name: s.name, Aliases: s.aliases.get(net) ?? [], IP: ip };
  }

  /**
   * Whether an endpoint's names are answered: a task's (it answers `tasks.SERVICE`) only while its
   * task runs and is desired running; any other container's always.
   */
  answers(containerId: string, aliases: readonly string[]): boolean {
    return this.live.has(containerId) || !aliases.some((a) => a.startsWith('tasks.'));
  }

  /** Each service: its replicas wanted, its tasks running (and desired running), and the backends of its VIP on each network. */
  stats(): ServiceStat[] {
    return [...this.services].map(([id, s]) => ({
      service: s.name,
      ...(s.replicas !== undefined ? { replicas: s.replicas } : {}),
      running: [...this.running.values()].filter((r) => r.service === id).length,
      backends: [...s.vips.keys()].map((network) => ({ network, count: this.entriesFor([network]).find((e) => e.service === id)?.backends.length ?? 0 })),
    }));
  }

  /** A service's name by its id, while it exists. */
  nameOf(serviceId: string): string | undefined {
    return this.services.get(serviceId)?.name;
  }

  /** Whether a service balances through a VIP (not dnsrr): its tasks then do not answer its name. */
  hasVip(serviceId: string): boolean {
    return (this.services.get(serviceId)?.vips.size ?? 0) > 0;
  }

  /** The entries a sandbox on these networks balances. */
  entriesFor(networks: string[]): VipEntry[] {
    const out: VipEntry[] = [];
    const live = this.live;
    for (const [id, s] of this.services) {
      for (const net of networks) {
        const vip = s.vips.get(net);
        if (!vip) continue;
        const backends = this.endpointsOf(net).filter((e) => e.Aliases?.includes(`tasks.${s.name}`) && live.has(e.ContainerID)).map((e) => e.IP);
        out.push({ service: id, vip, backends: [...new Set(backends)] });
      }
    }
    return out;
  }

  /** Every local sandbox's table brought in step; calls that come while one runs share one more pass. */
  syncAll(): Promise<void> {
    if (this.pending) { this.again = true; return this.pending; }
    this.pending = (async () => {
      do {
        this.again = false;
        const want = new Map(this.sandboxes().map((sb) => [sb.id, { netns: sb.netns, entries: this.entriesFor(sb.networks) }]));
        await this.balancers.sync(want, true);
      } while (this.again);
    })().finally(() => { this.pending = undefined; });
    return this.pending;
  }
}
