import { Steps } from '../util/steps.js';
import type { RemoteEndpoint } from '../daemon/dnsdirectory.js';
import type { EndpointRecord } from '../network/overlay.js';
import type { LbPatch, ServiceBalancers, VipEntry } from '../network/servicelb.js';
import { ROOT } from './keys.js';
import type { ServiceRecord, TaskRecord } from './servicemodel.js';
import type { WatchEvent } from './store.js';

/** A local container as the balancers need it: its namespace and the networks it is on. */
export interface LocalSandbox { id: string; netns: string; networks: string[] }

/** A service's VIP on each of its networks, and the aliases its attachment to each gives it (`docker stack deploy` names a stack's service by its short name so). */
interface SvcView { name: string; vips: Map<string, string>; aliases: Map<string, string[]>; replicas?: number }

/**
 * A network's endpoints by the `tasks.NAME` aliases they carry (what makes them a backend of
 * service NAME), each endpoint's names and container, and each container's endpoints (a task that
 * starts or stops changes the services its container's endpoints name).
 */
interface NetIndex { byName: Map<string, EndpointRecord[]>; names: Map<string, { names: string[]; container: string }>; containers: Map<string, Set<string>> }

const taskNames = (e: EndpointRecord) => [...new Set((e.Aliases ?? []).filter((a) => a.startsWith('tasks.')).map((a) => a.slice('tasks.'.length)))];

function indexEndpoint(ix: NetIndex, e: EndpointRecord): string[] {
  const names = taskNames(e);
  if (!names.length) return names;
  ix.names.set(e.EndpointID, { names, container: e.ContainerID });
  const mine = ix.containers.get(e.ContainerID);
  if (mine) mine.add(e.EndpointID);
  else ix.containers.set(e.ContainerID, new Set([e.EndpointID]));
  for (const n of names) {
    const l = ix.byName.get(n);
    if (l) l.push(e);
    else ix.byName.set(n, [e]);
  }
  return names;
}

function unindexEndpoint(ix: NetIndex, id: string): string[] {
  const had = ix.names.get(id);
  if (!had) return [];
  ix.names.delete(id);
  const mine = ix.containers.get(had.container);
  mine?.delete(id);
  if (!mine?.size) ix.containers.delete(had.container);
  const names = had.names;
  for (const n of names) {
    const l = ix.byName.get(n)?.filter((e) => e.EndpointID !== id) ?? [];
    if (l.length) ix.byName.set(n, l);
    else ix.byName.delete(n);
  }
  return names;
}

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
  /** The containers of `running`, each with its number of tasks there. */
  private readonly live = new Map<string, number>();
  /** Service ids by name: an endpoint names the services it is a backend of by name. */
  private readonly byName = new Map<string, Set<string>>();
  /**
   * Endpoints of the networks looked at so far, by name: made in one pass over a network's
   * endpoints when first needed (again at each whole sync) and kept in step by the endpoints'
   * events after that, so neither a sandbox's entries nor a batch's walk all endpoints per service.
   */
  private index = new Map<string, NetIndex>();
  private pending?: Promise<void>;
  private again = false;

  constructor(
    private readonly endpointsOf: (networkId: string) => EndpointRecord[],
    /** The local sandboxes: every one, or those of these containers. */
    private readonly sandboxes: (only?: Iterable<string>) => LocalSandbox[],
    private readonly balancers: ServiceBalancers,
    /** Tells the DNS its names on these networks changed. */
    private readonly changed: (networkIds: string[]) => void,
  ) {}

  /**
   * A SwarmNetworks follower: services' records change the VIPs; any batch may change backends.
   * A batch after the first list hands each sandbox only the VIPs of the services it changed (a
   * task that starts or stops, a service's record, a backend's endpoint), so a backend change costs
   * the same at 10,000 services as at 100; a full batch, and a batch whose effect this cannot tell,
   * sync every sandbox whole.
   */
  async follow(events: WatchEvent<unknown>[], full: boolean): Promise<void> {
    const touched = new Set<string>();
    if (full) {
      for (const r of this.running.values()) for (const n of r.networks) touched.add(n);
      this.services.clear();
      this.byName.clear();
      this.running.clear();
      this.live.clear();
      this.index.clear();
    }
    // A local sandbox on a network not indexed yet (it came since the last whole sync): what its
    // endpoints were before this batch, and so which services it changes there, is not known.
    let unsure = full || this.sandboxes().some((sb) => sb.networks.some((n) => !this.index.has(n)));
    const changed = new Set<string>();
    const names = new Set<string>();
    /** The VIPs each service changed by its record had before the batch: those it no longer has leave the tables. */
    const vipsBefore = new Map<string, string[]>();
    for (const e of events) {
      const rest = e.key.slice(ROOT.length);
      if (rest.startsWith('tasks/')) {
        const id = rest.slice('tasks/'.length);
        const t = e.type === 'put' ? (e.value as TaskRecord) : undefined;
        const was = this.running.get(id);
        const container = t && t.DesiredState === 'running' && t.Status.State === 'running' ? t.Status.ContainerStatus?.ContainerID : undefined;
        if (container) {
          const networks = [...new Set([...(t!.Spec.Networks ?? []).map((n) => n.Target), ...(t!.NetworksAttachments ?? []).map((a) => a.Network.ID)])];
          if (was) this.unlive(was.container);
          this.running.set(id, { service: t!.ServiceID, container, networks });
          this.live.set(container, (this.live.get(container) ?? 0) + 1);
          if (was?.container !== container) {
            for (const n of networks) touched.add(n);
            for (const r of was ? [was, this.running.get(id)!] : [this.running.get(id)!]) { changed.add(r.service); this.namesOf(r.container, names); }
          }
        } else if (was) {
          this.running.delete(id);
          this.unlive(was.container);
          for (const n of was.networks) touched.add(n);
          changed.add(was.service);
          this.namesOf(was.container, names);
        }
        continue;
      }
      if (rest.startsWith('endpoints/')) {
        if (full) continue;
        const [, net, ep] = rest.split('/');
        if (!net || !ep) continue;
        const ix = this.index.get(net);
        if (ix) {
          for (const n of unindexEndpoint(ix, ep)) names.add(n);
          if (e.type === 'put') for (const n of indexEndpoint(ix, e.value as EndpointRecord)) names.add(n);
        }
        continue;
      }
      if (!rest.startsWith('services/')) continue;
      const id = rest.slice('services/'.length);
      const old = this.services.get(id);
      if (!vipsBefore.has(id)) vipsBefore.set(id, [...(old?.vips.values() ?? [])]);
      changed.add(id);
      for (const n of old?.vips.keys() ?? []) touched.add(n);
      if (old) this.byName.get(old.name)?.delete(id);
      if (e.type === 'put') {
        const s = e.value as ServiceRecord;
        // Only the service's own networks balance its VIP: its VIP on ingress is the routing mesh's
        // (Docker's IPVS in the ingress sandbox), and answering the service's name with it would
        // give a task on both a second address.
        const own = new Set((s.Spec.TaskTemplate.Networks ?? []).map((n) => n.Target));
        const vips = new Map((s.Endpoint.VirtualIPs ?? []).filter((v) => own.has(v.NetworkID)).map((v) => [v.NetworkID, v.Addr.split('/')[0]!]));
        const aliases = new Map((s.Spec.TaskTemplate.Networks ?? []).map((n) => [n.Target, n.Aliases ?? []]));
        this.services.set(id, { name: s.Spec.Name, vips, aliases, ...(s.Spec.Mode.Replicated ? { replicas: s.Spec.Mode.Replicated.Replicas ?? 1 } : {}) });
        this.byName.set(s.Spec.Name, (this.byName.get(s.Spec.Name) ?? new Set()).add(id));
        for (const n of vips.keys()) touched.add(n);
      } else {
        this.services.delete(id);
      }
    }
    for (const n of names) for (const id of this.byName.get(n) ?? []) changed.add(id);
    const st = new Steps(() => `a batch of ${events.length} events changing ${changed.size} services`);
    if (touched.size) this.changed([...touched]);
    st.mark('dns');
    if (unsure) await this.syncAll();
    else await this.patchAll(changed, [...vipsBefore.values()].flat());
    st.mark(unsure ? 'sync' : 'patch');
    if (changed.size) st.done();
  }

  /** Adds the names a container's endpoints make it a backend of, on the networks indexed (every local sandbox's). */
  private namesOf(container: string, into: Set<string>): void {
    for (const ix of this.index.values()) for (const ep of ix.containers.get(container) ?? []) for (const n of ix.names.get(ep)?.names ?? []) into.add(n);
  }

  private unlive(container: string): void {
    const n = (this.live.get(container) ?? 1) - 1;
    if (n > 0) this.live.set(container, n);
    else this.live.delete(container);
  }

  /**
   * Hands each local sandbox the entries of these services on its networks, and the VIPs they may
   * have lost; every sandbox, even with nothing, so that one whose table berth lost (a failed
   * change) is made whole at the next batch, as when every batch synced every sandbox.
   */
  private patchAll(services: Set<string>, removed: string[]): Promise<void> {
    const want = new Map<string, LbPatch>();
    for (const sb of this.sandboxes()) {
      const entries: VipEntry[] = [];
      for (const id of services) {
        const s = this.services.get(id);
        for (const net of s ? sb.networks : []) {
          const vip = s!.vips.get(net);
          if (vip) entries.push({ service: id, vip, backends: this.backendsOf(net, s!.name) });
        }
      }
      want.set(sb.id, { netns: sb.netns, entries, removed, whole: () => this.entriesFor(sb.networks) });
    }
    return want.size ? this.balancers.patch(want) : Promise.resolve();
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
    const running = new Map<string, number>();
    for (const r of this.running.values()) running.set(r.service, (running.get(r.service) ?? 0) + 1);
    return [...this.services].map(([id, s]) => ({
      service: s.name,
      ...(s.replicas !== undefined ? { replicas: s.replicas } : {}),
      running: running.get(id) ?? 0,
      backends: [...s.vips.keys()].map((network) => ({ network, count: this.backendsOf(network, s.name).length })),
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
    // Every network of the sandbox indexed, so that a later endpoint's event there says which services it changes.
    for (const net of networks) this.indexOf(net);
    const out: VipEntry[] = [];
    for (const [id, s] of this.services) {
      for (const net of networks) {
        const vip = s.vips.get(net);
        if (vip) out.push({ service: id, vip, backends: this.backendsOf(net, s.name) });
      }
    }
    return out;
  }

  /** The addresses of a service's running tasks on a network. */
  private backendsOf(net: string, name: string): string[] {
    const eps = this.indexOf(net).byName.get(name) ?? [];
    return [...new Set(eps.filter((e) => this.live.has(e.ContainerID)).map((e) => e.IP))];
  }

  private indexOf(net: string): NetIndex {
    let ix = this.index.get(net);
    if (!ix) {
      ix = { byName: new Map(), names: new Map(), containers: new Map() };
      for (const e of this.endpointsOf(net)) indexEndpoint(ix, e);
      this.index.set(net, ix);
    }
    return ix;
  }

  /**
   * The tables of these local containers (started, connected, disconnected or gone) brought in
   * step with what they are on now: the others' do not depend on this host's containers (their
   * backends come from the store). A whole sync did every sandbox at each local start, each table
   * made from every service (1.4 s of the manager's 50 in bench/svcmany.js at 10,000 services).
   */
  syncContainers(ids: string[]): Promise<void> {
    const mine = new Set(ids);
    const want = new Map(this.sandboxes(mine).filter((sb) => mine.has(sb.id)).map((sb) => [sb.id, { netns: sb.netns, entries: this.entriesFor(sb.networks) }]));
    return this.balancers.sync(want, false, ids.filter((id) => !want.has(id)));
  }

  /** Every local sandbox's table brought in step; calls that come while one runs share one more pass. */
  syncAll(): Promise<void> {
    if (this.pending) { this.again = true; return this.pending; }
    this.pending = (async () => {
      do {
        this.again = false;
        // Whole from the endpoints themselves, not from what the events made of them.
        this.index = new Map();
        const want = new Map(this.sandboxes().map((sb) => [sb.id, { netns: sb.netns, entries: this.entriesFor(sb.networks) }]));
        await this.balancers.sync(want, true);
      } while (this.again);
    })().finally(() => { this.pending = undefined; });
    return this.pending;
  }
}
