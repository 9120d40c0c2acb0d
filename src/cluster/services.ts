import { formatIPv4, parseCidr } from '../network/ipam.js';
import type { NetworkRecord } from '../network/types.js';
import { ApiError, ConflictError, ForbiddenError, NotFoundError } from '../util/errors.js';
import { labelsMatch } from '../util/labels.js';
import { SerialQueue } from '../util/serial.js';
import { NOT_MANAGER, NO_MANAGER, UnavailableError, outOfSequence, rpcError } from './errors.js';
import { goTime, newNodeId } from './ids.js';
import { K, ROOT } from './keys.js';
import { readClaims, type ClaimOps } from './portclaims.js';
import { assignPorts, checkConflicts, needsIngress, normalisePorts, portKey, type PortConfig, type Publisher } from './publish.js';
import type { LogQuery } from '../engine/logs.js';
import { streamTaskLogs, type LogTask, type TaskDiscovery, type TaskLogLine } from './logstream.js';
import { isTerminal, normaliseSpec, upToDateWith, type ServiceRecord, type ServiceSpec, type TaskRecord, type VirtualIp } from './servicemodel.js';
import type { Session } from './session.js';
import type { Versioned } from './store.js';

/** Where services and tasks live in the store (beside keys.ts' layout). */
export const SK = {
  services: `${ROOT}services/`,
  service: (id: string) => `${ROOT}services/${id}`,
  /** A service's name, claimed by create-if-absent so two creates of one name cannot both win. */
  name: (name: string) => `${ROOT}servicenames/${name}`,
  tasks: `${ROOT}tasks/`,
  task: (id: string) => `${ROOT}tasks/${id}`,
  /** Held under the leader's presence lease: the manager whose orchestrator acts. */
  leader: `${ROOT}locks/orchestrator`,
};

export interface ServiceHooks {
  /** A network this host knows, by name, id or id prefix. */
  findNetwork(ref: string): NetworkRecord | undefined;
  /** Returns once every live host applied the store up to `revision` (its DNS and balancers). */
  appliedEverywhere(revision: number): Promise<void>;
  /** The swarm's ingress network, if it has one. */
  ingress(): NetworkRecord | undefined;
}

/** How long a VIP this manager claimed counts as taken before its view of the store must have it. */
const RECENT_VIP_MS = 10_000;

/** A spec's published ports, checked (a left-out published port is 0). */
const specPorts = (spec: ServiceSpec): PortConfig[] => normalisePorts(spec.EndpointSpec?.Ports, spec.EndpointSpec?.Mode ?? 'vip');
const publisher = (r: ServiceRecord): Publisher => ({ ID: r.ID, Name: r.Spec.Name, Ports: r.Endpoint.Ports ?? [] });

/** A record as clients see it: Version.Index is the record's store revision (what update compares). */
function view<T extends { Version: { Index: number } }>(v: Versioned<T>): T {
  const { Restarts: _r, NoRestart: _n, RestartAt: _a, Attempt: _t, SpecVersion: _s, Update: _u, UpdateStop: _us, ...rest } = v.value as T & Partial<TaskRecord>;
  return { ...rest, Version: { Index: v.modRevision } } as unknown as T;
}

/**
 * The managers' side of `docker service` and `/tasks`: records in the store, checked as Docker
 * checks them. The orchestrator (orchestrator.ts) turns services into tasks; this only writes what
 * the user asked for and waits until every host applied it (DNS names and VIP balancers).
 */
export class ServiceControl {
  /** Set by the daemon while this node is in a swarm. */
  hooks?: ServiceHooks;
  /**
   * A manager's writes that pick addresses and ports, one at a time: each reads what is free and
   * claims it in a transaction that fails if another took it meanwhile, so eight creates at once
   * all picked the same VIP, seven lost, and one that lost ten times in a row was refused "try
   * again" (found by bench/svcmany.js). Only the pick and its transaction wait here, not the wait
   * for every host to apply it; creates through other managers still race, and pick again.
   */
  private readonly allocation = new SerialQueue();
  /** VIPs this manager claimed lately, by address key, until when they count as taken here. */
  private readonly recentVips = new Map<string, number>();

  constructor(private readonly session: () => Session | undefined) {}

  /** Throws Docker's 503s unless this node is a swarm manager. */
  assertManager(): void {
    this.manager();
  }

  private manager(): Session {
    const s = this.session();
    if (!s) throw new UnavailableError(NO_MANAGER);
    if (s.state.role !== 'manager') throw new UnavailableError(NOT_MANAGER);
    return s;
  }

  private async all(s: Session): Promise<{ services: Array<Versioned<ServiceRecord>>; tasks: Array<Versioned<TaskRecord>> }> {
    const [svcs, tasks] = await s.store.readMany([{ key: SK.services, prefix: true }, { key: SK.tasks, prefix: true }]);
    return { services: [...svcs!.values()] as Array<Versioned<ServiceRecord>>, tasks: [...tasks!.values()] as Array<Versioned<TaskRecord>> };
  }

  /**
   * swarmkit's lookup: full id, then name, then a unique id prefix. The id and the name are keys
   * of their own: read all services (and their tasks, as it was) for each `inspect` or `update`
   * cost 300 ms with 10,000 services, twice in a `service scale` (bench/svcmany.js).
   */
  private async resolve(s: Session, ref: string): Promise<Versioned<ServiceRecord>> {
    const [byId, byName] = await s.store.readMany([{ key: SK.service(ref) }, { key: SK.name(ref) }]);
    const direct = byId!.values().next().value as Versioned<ServiceRecord> | undefined;
    if (direct && direct.value.ID === ref) return direct;
    const named = (byName!.values().next().value as Versioned<{ ID: string }> | undefined)?.value.ID;
    const found = named ? await s.store.get<ServiceRecord>(SK.service(named)) : undefined;
    if (found) return found;
    const services = [...(await s.store.list<ServiceRecord>(SK.services)).values()];
    const byPrefix = services.filter((v) => v.value.ID.startsWith(ref));
    if (byPrefix.length === 1) return byPrefix[0]!;
    if (byPrefix.length > 1) throw rpcError('InvalidArgument', `service ${ref} is ambiguous (${byPrefix.length} matches found)`);
    throw new NotFoundError(`service ${ref} not found`);
  }

  /** The networks a spec names, as ids; Docker's refusals for unknown and local networks. */
  private networks(spec: ServiceSpec): NetworkRecord[] {
    const hooks = this.hooks;
    const seen = new Set<string>();
    return (spec.TaskTemplate.Networks ?? []).map((n) => {
      const rec = hooks?.findNetwork(n.Target);
      if (!rec) throw new NotFoundError(`network ${n.Target} not found`);
      if (rec.Scope !== 'swarm') throw new ForbiddenError(`The network ${rec.Name} cannot be used with services. Only networks scoped to the swarm can be used, such as those created with the overlay driver.`);
      // swarmkit's validateTaskSpec words.
      if (seen.has(rec.Id)) throw rpcError('InvalidArgument', `duplicate network target ${n.Target} in the service spec`);
      seen.add(rec.Id);
      n.Target = rec.Id;
      return rec;
    });
  }

  async create(body: unknown): Promise<{ ID: string }> {
    const s = this.manager();
    const spec = normaliseSpec(body);
    if (!spec.Name) spec.Name = `svc-${newNodeId().slice(0, 8)}`;
    const nets = this.networks(spec);
    const ports = specPorts(spec);
    this.checkIngress(ports);
    const id = newNodeId();
    const now = goTime();
    const rec: ServiceRecord = { ID: id, Version: { Index: 0 }, CreatedAt: now, UpdatedAt: now, Spec: spec, Endpoint: { Spec: { Mode: spec.EndpointSpec!.Mode!, ...(spec.EndpointSpec!.Ports ? { Ports: spec.EndpointSpec!.Ports } : {}) } } };
    for (let attempt = 0; attempt < 10; attempt++) {
      const r = await this.allocation.run(async () => {
        const assigned = await this.assign(s, ports, id, []);
        if (assigned.length) rec.Endpoint.Ports = assigned;
        const claims = await this.claims(s, id, [], assigned);
        // As Docker's allocator: a service publishing through the routing mesh has a VIP on ingress too (listed first).
        const ingress = spec.EndpointSpec!.Mode === 'vip' && needsIngress(ports) ? this.hooks?.ingress() : undefined;
        const vips = spec.EndpointSpec!.Mode === 'vip' ? await this.pickVips(s, [...(ingress ? [ingress] : []), ...nets], attempt > 0) : [];
        if (vips.length) rec.Endpoint.VirtualIPs = vips.map((v) => ({ NetworkID: v.net.Id, Addr: `${v.ip}/${parseCidr(v.net.pools![0]!.subnet).prefix}` }));
        const r = await s.store.txn(
          [{ key: SK.name(spec.Name), target: 'Create', value: 0 }, ...vips.map((v) => ({ key: K.address(v.net.Id, v.ip), target: 'Create' as const, value: 0 })), ...claims.cmp],
          [{ key: SK.name(spec.Name), value: { ID: id } }, { key: SK.service(id), value: rec }, ...vips.map((v) => ({ key: K.address(v.net.Id, v.ip), value: { EndpointID: `vip-${id}` } })), ...claims.puts],
          claims.deletes,
        );
        if (r.ok) this.pickedVips(vips.map((v) => K.address(v.net.Id, v.ip)));
        return r;
      });
      if (r.ok) {
        await this.hooks?.appliedEverywhere(r.revision);
        return { ID: id };
      }
      const named = await s.store.get<{ ID: string }>(SK.name(spec.Name));
      // The store client sends a transaction again when its connection broke before the answer:
      // a name that is this create's own says the first one was applied.
      if (named?.value.ID === id) {
        await this.hooks?.appliedEverywhere(named.modRevision);
        return { ID: id };
      }
      if (named) throw new ApiError(409, `rpc error: code = AlreadyExists desc = service ${spec.Name} already exists`);
      // A VIP or a published port was taken meanwhile (by another manager's create): pick again,
      // a little later each time so that two managers do not keep picking alike.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * (attempt + 1)));
    }
    throw new ConflictError('the network addresses kept changing under this create: try again');
  }

  /**
   * The claim operations that move a service's ingress ports from `had` to `want` (portclaims.ts);
   * a port another service holds is Docker's refusal (its record would have said so already,
   * unless that service came meanwhile).
   */
  private async claims(s: Session, id: string, had: PortConfig[], want: PortConfig[]): Promise<ClaimOps> {
    const c = await readClaims((keys) => s.store.readAt(keys), id, had, want);
    if (!('taken' in c)) return c;
    const other = (await s.store.get<ServiceRecord>(SK.service(c.taken.holder)))?.value;
    throw rpcError('InvalidArgument', `port '${c.taken.port}' is already in use by service '${other?.Spec.Name ?? ''}' (${c.taken.holder}) as an ingress port`);
  }

  /** swarmkit's allocator: a published ingress port needs the ingress network. */
  private checkIngress(ports: PortConfig[]): void {
    if (needsIngress(ports) && !this.hooks?.ingress()) throw rpcError('FailedPrecondition', 'service needs ingress network, but no ingress network is present');
  }

  /** The ports checked against every other service's and numbered; `previous`: this service's numbers so far. */
  private async assign(s: Session, ports: PortConfig[], self: string, previous: PortConfig[]): Promise<PortConfig[]> {
    if (!ports.length) return [];
    const others = (await this.all(s)).services.map((v) => publisher(v.value)).filter((p) => p.ID !== self);
    checkConflicts(ports, others);
    return assignPorts(ports, new Set(others.flatMap((o) => o.Ports.map(portKey))), previous);
  }

  /**
   * An update that starts or stops publishing through the routing mesh gains or loses the
   * service's VIP on ingress (Docker's allocator): the VIP list to write, if it changes, and the
   * address keys to claim and to free.
   */
  private async ingressVipChange(s: Session, cur: ServiceRecord, spec: ServiceSpec, ports: PortConfig[], fromStore: boolean): Promise<{ vips?: VirtualIp[]; added: string[]; dropped: string[] }> {
    const ingress = this.hooks?.ingress();
    const vips = cur.Endpoint.VirtualIPs ?? [];
    const had = ingress ? vips.find((v) => v.NetworkID === ingress.Id) : undefined;
    const wants = !!ingress && spec.EndpointSpec!.Mode === 'vip' && needsIngress(ports);
    if (wants && !had) {
      const [v] = await this.pickVips(s, [ingress!], fromStore);
      return { vips: [{ NetworkID: ingress!.Id, Addr: `${v!.ip}/${parseCidr(ingress!.pools![0]!.subnet).prefix}` }, ...vips], added: [K.address(ingress!.Id, v!.ip)], dropped: [] };
    }
    if (!wants && had) return { vips: vips.filter((v) => v !== had), added: [], dropped: [K.address(had.NetworkID, had.Addr.split('/')[0]!)] };
    return { added: [], dropped: [] };
  }

  /**
   * A free address per network for the VIP, from the top of the subnet (containers take from the
   * bottom). The network's pool holds every address this host's view of the store has claimed, and
   * the VIPs this manager claimed lately are kept until the view has them: the first try picks
   * from those alone, since reading every claim of the network from the store made each create
   * cost as much as the claims (about 10,000 with 10,000 services). A try that lost (the view was
   * behind, or another manager picked alike) reads the store's claims.
   */
  private async pickVips(s: Session, nets: NetworkRecord[], fromStore = false): Promise<Array<{ net: NetworkRecord; ip: string }>> {
    const out: Array<{ net: NetworkRecord; ip: string }> = [];
    const now = Date.now();
    for (const [k, until] of this.recentVips) if (until < now) this.recentVips.delete(k);
    for (const net of nets) {
      const pool = net.pools?.[0];
      if (!pool) throw new ApiError(500, `network ${net.Name} has no address pool`);
      const taken = fromStore ? new Set((await s.store.list(`${K.ipam}${net.Id}/`)).keys()) : undefined;
      const sub = parseCidr(pool.subnet);
      const last = sub.base + 2 ** (32 - sub.prefix) - 2;
      let ip: string | undefined;
      for (let a = last; a > sub.base; a--) {
        const text = formatIPv4(a);
        const key = K.address(net.Id, text);
        if (text === pool.gateway || pool.allocated[text] || this.recentVips.has(key) || taken?.has(key)) continue;
        ip = text;
        break;
      }
      if (!ip) throw new ApiError(500, `could not allocate a virtual IP on network ${net.Name}: the subnet is full`);
      out.push({ net, ip });
    }
    return out;
  }

  /** Notes the VIPs a write claimed (their address keys), for the picks that follow before the view has them. */
  private pickedVips(keys: string[]): void {
    for (const key of keys) this.recentVips.set(key, Date.now() + RECENT_VIP_MS);
  }

  async list(filters: Record<string, string[]> = {}, status = false): Promise<ServiceRecord[]> {
    const s = this.manager();
    const { services, tasks } = await this.all(s);
    const ok = (v: ServiceRecord) => (!filters.id || filters.id.some((p) => v.ID.startsWith(p)))
      && (!filters.name || filters.name.some((n) => v.Spec.Name.startsWith(n)))
      && (!filters.mode || filters.mode.includes(v.Spec.Mode.Global ? 'global' : 'replicated'))
      && (!filters.label || labelsMatch(v.Spec.Labels, filters.label));
    const tasksOf = new Map<string, TaskRecord[]>();
    if (status) {
      for (const { value: t } of tasks) {
        const l = tasksOf.get(t.ServiceID);
        if (l) l.push(t);
        else tasksOf.set(t.ServiceID, [t]);
      }
    }
    return services.filter((v) => ok(v.value)).map((v) => {
      const out = view(v);
      if (status) {
        const mine = tasksOf.get(v.value.ID) ?? [];
        const running = mine.filter((t) => t.Status.State === 'running' && t.DesiredState === 'running').length;
        const desired = v.value.Spec.Mode.Global ? mine.filter((t) => t.DesiredState === 'running').length : v.value.Spec.Mode.Replicated?.Replicas ?? 0;
        (out as ServiceRecord & { ServiceStatus?: unknown }).ServiceStatus = { RunningTasks: running, DesiredTasks: desired, CompletedTasks: 0 };
      }
      return out;
    });
  }

  async inspect(ref: string): Promise<ServiceRecord> {
    return view(await this.resolve(this.manager(), ref));
  }

  /** Replicas, mode-independent fields, and rollback to the previous spec; VIPs stay as they are. */
  async update(ref: string, version: number, body: unknown, rollback: boolean): Promise<{ Warnings: string[] | null }> {
    const s = this.manager();
    const cur = await this.resolve(s, ref);
    if (cur.modRevision !== version) throw outOfSequence();
    let spec: ServiceSpec;
    if (rollback) {
      if (!cur.value.PreviousSpec) throw rpcError('FailedPrecondition', `service ${cur.value.ID} does not have a previous spec`);
      spec = cur.value.PreviousSpec;
    } else {
      spec = normaliseSpec(body);
    }
    if (spec.Name !== cur.value.Spec.Name) throw rpcError('Unknown', 'renaming services is not supported');
    if (!!spec.Mode.Global !== !!cur.value.Spec.Mode.Global) throw rpcError('Unknown', 'service mode change is not allowed');
    if (spec.EndpointSpec?.Mode !== cur.value.Spec.EndpointSpec?.Mode) throw rpcError('Unknown', 'berth cannot change a service\'s endpoint mode yet');
    const nets = this.networks(spec).map((n) => n.Id).sort().join(',');
    if (nets !== (cur.value.Spec.TaskTemplate.Networks ?? []).map((n) => n.Target).sort().join(',')) throw rpcError('Unknown', 'berth cannot change a service\'s networks yet');
    const ports = specPorts(spec);
    this.checkIngress(ports);
    // As swarmkit's: the update's state starts afresh (the orchestrator sets "updating" once it
    // replaces a task); a rollback says so from the start.
    const { UpdateStatus: _was, ...kept } = cur.value;
    const updatedAt = goTime();
    // A claim block that another service's ports changed meanwhile fails the transaction while
    // this service's record stands still: pick again then, not the user's problem.
    for (let attempt = 0; attempt < 10; attempt++) {
      const r = await this.allocation.run(async () => {
        const assigned = await this.assign(s, ports, cur.value.ID, cur.value.Endpoint.Ports ?? []);
        const endpoint: ServiceRecord['Endpoint'] = { ...cur.value.Endpoint, Spec: { Mode: spec.EndpointSpec!.Mode!, ...(spec.EndpointSpec!.Ports ? { Ports: spec.EndpointSpec!.Ports } : {}) } };
        if (assigned.length) endpoint.Ports = assigned;
        else delete endpoint.Ports;
        const ingressVip = await this.ingressVipChange(s, cur.value, spec, ports, attempt > 0);
        if (ingressVip.vips) endpoint.VirtualIPs = ingressVip.vips;
        if (!endpoint.VirtualIPs?.length) delete endpoint.VirtualIPs;
        const next: ServiceRecord = {
          ...kept, Spec: spec, PreviousSpec: cur.value.Spec, UpdatedAt: updatedAt, Endpoint: endpoint,
          ...(rollback ? { UpdateStatus: { State: 'rollback_started' as const, StartedAt: updatedAt, Message: 'manually requested rollback' } } : {}),
        };
        const claims = await this.claims(s, cur.value.ID, cur.value.Endpoint.Ports ?? [], assigned);
        const r = await s.store.txn(
          [{ key: SK.service(cur.value.ID), target: 'Mod', value: cur.modRevision }, ...ingressVip.added.map((key) => ({ key, target: 'Create' as const, value: 0 })), ...claims.cmp],
          [{ key: SK.service(cur.value.ID), value: next }, ...ingressVip.added.map((key) => ({ key, value: { EndpointID: `vip-${cur.value.ID}` } })), ...claims.puts],
          [...ingressVip.dropped, ...claims.deletes],
        );
        if (r.ok) this.pickedVips(ingressVip.added);
        return r;
      });
      if (r.ok) {
        await this.hooks?.appliedEverywhere(r.revision);
        return { Warnings: null };
      }
      const now = await s.store.get<ServiceRecord>(SK.service(cur.value.ID));
      // This update's own record, its first copy applied and its answer lost (see create).
      if (now && now.value.UpdatedAt === updatedAt && now.value.PreviousSpec && now.modRevision !== cur.modRevision) {
        await this.hooks?.appliedEverywhere(now.modRevision);
        return { Warnings: null };
      }
      if (now?.modRevision !== cur.modRevision) break;
    }
    throw outOfSequence();
  }

  /** The service and its VIPs go now; its tasks stop and go through the orchestrator. */
  async remove(ref: string): Promise<void> {
    const s = this.manager();
    const cur = await this.resolve(s, ref);
    const vips = (cur.value.Endpoint.VirtualIPs ?? []).map((v) => K.address(v.NetworkID, v.Addr.split('/')[0]!));
    for (let attempt = 0; attempt < 10; attempt++) {
      const r = await this.allocation.run(async () => {
        const claims = await this.claims(s, cur.value.ID, cur.value.Endpoint.Ports ?? [], []);
        return s.store.txn([{ key: SK.service(cur.value.ID), target: 'Mod', value: cur.modRevision }, ...claims.cmp], claims.puts, [SK.service(cur.value.ID), SK.name(cur.value.Spec.Name), ...vips, ...claims.deletes]);
      });
      if (r.ok) return this.hooks?.appliedEverywhere(r.revision);
      const now = await s.store.get(SK.service(cur.value.ID));
      // Gone: this removal's first copy was applied and its answer lost (see create).
      if (!now) return this.hooks?.appliedEverywhere(await s.store.revision());
      if (now.modRevision !== cur.modRevision) break;
    }
    throw new ConflictError(`service ${ref} changed while it was being removed: try again`);
  }

  async tasks(filters: Record<string, string[]> = {}): Promise<TaskRecord[]> {
    const s = this.manager();
    const { services, tasks } = await this.all(s);
    const svcIds = (refs: string[]) => new Set(services.filter((v) => refs.some((r) => v.value.ID === r || v.value.Spec.Name === r || v.value.ID.startsWith(r))).map((v) => v.value.ID));
    const wantSvc = filters.service ? svcIds(filters.service) : undefined;
    const nodes = filters.node ? await this.nodeIds(s, filters.node) : undefined;
    const name = (t: TaskRecord) => `${t.ServiceAnnotations.Name}.${t.Slot ?? t.NodeID}`;
    const labelsOf = new Map(services.map((v) => [v.value.ID, v.value.Spec.Labels ?? {}]));
    const current = new Map(services.map((v) => [v.value.ID, upToDateWith(v.value)]));
    return tasks.filter((v) => {
      const t = v.value;
      if (wantSvc && !wantSvc.has(t.ServiceID)) return false;
      if (nodes && !nodes.has(t.NodeID ?? '')) return false;
      if (filters.id && !filters.id.some((p) => t.ID.startsWith(p))) return false;
      if (filters.name && !filters.name.some((n) => name(t).startsWith(n))) return false;
      if (filters['desired-state'] && !filters['desired-state'].some((d) => (d === 'accepted' ? !isTerminal(t.Status.State) : t.DesiredState === d))) return false;
      // swarmkit matches a task's service's labels (`docker stack ps` asks by the stack's label).
      if (filters.label && !labelsMatch(labelsOf.get(t.ServiceID) ?? t.ServiceAnnotations.Labels, filters.label)) return false;
      // The CLI's progress counts only tasks of the service's current spec.
      if (filters['_up-to-date']?.includes('true')) {
        if (!current.get(t.ServiceID)?.(t)) return false;
      }
      return true;
    }).map(view);
  }

  private async nodeIds(s: Session, refs: string[]): Promise<Set<string>> {
    const nodes = [...(await s.store.list<{ ID: string; Description?: { Hostname?: string }; Spec?: { Name?: string } }>(K.nodes)).values()].map((v) => v.value);
    return new Set(nodes.filter((n) => refs.some((r) => r === n.ID || n.Description?.Hostname === r || n.Spec?.Name === r || n.ID.startsWith(r))).map((n) => n.ID)
      .concat(refs.includes('self') ? [s.state.nodeId] : []));
  }

  /**
   * `service logs` / `task logs`: the tasks' lines from whichever nodes run them (logstream.ts);
   * the nodes whose part could not be read are returned. Tasks that never had a container have no log.
   */
  async logs(kind: 'service' | 'task', ref: string, query: LogQuery, follow: boolean, emit: (l: TaskLogLine) => void, signal: AbortSignal): Promise<{ missing: string[] }> {
    const s = this.manager();
    const serviceId = kind === 'service' ? (await this.resolve(s, ref)).value.ID : undefined;
    const tasks = kind === 'task' ? [await this.task(ref)] : (await this.all(s)).tasks.map((v) => v.value).filter((t) => t.ServiceID === serviceId);
    const logTask = (t: TaskRecord): LogTask[] => (t.NodeID && t.Status.ContainerStatus?.ContainerID ? [{ ID: t.ID, NodeID: t.NodeID, ServiceID: t.ServiceID, ContainerID: t.Status.ContainerStatus.ContainerID }] : []);
    // Following a service, as Docker does, the tasks that get a container later are read too: the
    // ones the watch sees, and any that did between the listing above and the watch's start.
    const discover: TaskDiscovery | undefined = serviceId && follow ? async (found) => {
      const ofService = (t: TaskRecord) => { if (t.ServiceID === serviceId) for (const l of logTask(t)) found(l); };
      const stop = await s.store.watchBatches<TaskRecord>(SK.tasks, (await s.store.revision()) + 1, (events) => {
        for (const e of events) if (e.type === 'put') ofService(e.value);
      }, () => undefined);
      for (const t of (await this.all(s)).tasks) ofService(t.value);
      return stop;
    } : undefined;
    return { missing: await streamTaskLogs(s.store, tasks.flatMap(logTask), query, follow, emit, signal, discover) };
  }

  async task(ref: string): Promise<TaskRecord> {
    const s = this.manager();
    const { tasks } = await this.all(s);
    const t = tasks.find((v) => v.value.ID === ref) ?? (() => { const l = tasks.filter((v) => v.value.ID.startsWith(ref)); return l.length === 1 ? l[0] : undefined; })();
    if (!t) throw new NotFoundError(`task ${ref} not found`);
    return view(t);
  }
}
