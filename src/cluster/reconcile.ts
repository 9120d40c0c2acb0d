import { HostPortUse, taskHostPorts } from './hostports.js';
import { goTime } from './ids.js';
import { desiredReplicas, hostModePorts, isTerminal, loadsNode, matches, updateConfigOf, upToDateWith, type NodeView, type ServiceRecord, type TaskRecord, type UpdateStatus } from './servicemodel.js';

/**
 * The orchestrator's decisions as a pure function: given the services, the tasks and the nodes,
 * which tasks to write (new ones, and changes of desired state or placement) and which to delete.
 * The leader runs it whenever the store changes and writes the result; it is idempotent, so a new
 * leader, or the same one again, reaches the same state from whatever was written before.
 *
 * A replicated service has slots 1..Replicas; a global one a slot per eligible node. Each slot's
 * latest task (highest Attempt) is the one that counts: a running one on a live, active node stays;
 * one on a dead or drained node is shut down and replaced at once; one that failed or completed is
 * replaced per the restart policy (after its delay); a pending one is placed when a node fits.
 */

export interface Decisions {
  put: TaskRecord[];
  delete: string[];
  /** Services whose rolling update changed state; `rollback`: the failure action asks for the previous spec. */
  status: Array<{ id: string; UpdateStatus: UpdateStatus; rollback?: boolean }>;
  /** The earliest time (ms) a delayed restart is due, when one is waiting. */
  wakeAt?: number;
}

/** Old tasks kept per slot for `service ps` (Docker's default task history limit). */
export const HISTORY = 5;

/**
 * A pass over some services only: those whose records or tasks changed since the last pass
 * (`services` then holds only these, of those that exist). A placement spreads over every
 * service's tasks: `load` is every node's count of tasks desired running, kept by the caller, and
 * `tasks` then needs to hold only the tasks of these services; without `load`, `tasks` is every
 * task and the count is made from it.
 */
export interface Scope { ids: ReadonlySet<string>; exists: (serviceId: string) => boolean; load?: ReadonlyMap<string, number> }

/** Each node's count of tasks desired running (what a placement spreads over). */
export function runningLoad(tasks: Iterable<TaskRecord>): Map<string, number> {
  const load = new Map<string, number>();
  for (const t of tasks) if (loadsNode(t)) load.set(t.NodeID, (load.get(t.NodeID) ?? 0) + 1);
  return load;
}

export function reconcile(services: ServiceRecord[], tasks: TaskRecord[], nodes: NodeView[], now: number, newId: () => string, scope?: Scope): Decisions {
  const out: Decisions = { put: [], delete: [], status: [] };
  const changed = new Map<string, TaskRecord>();
  // The same, by service: a rolling update reads its own service's changes of this pass.
  const changedOf = new Map<string, Map<string, TaskRecord>>();
  const original = new Map(tasks.map((t) => [t.ID, t]));
  // Each service's tasks desired running per node, made at its first placement and kept by put:
  // a placement used to filter the service's tasks and this pass's changes for every node it compared.
  const spreads = new Map<string, Map<string, number>>();
  // Host-mode ports in use per node, made at the first placement that needs it and kept by put.
  const svcById = new Map(services.map((s) => [s.ID, s]));
  const portsOf = (t: TaskRecord) => taskHostPorts(t, (id) => svcById.get(id));
  let hostPorts: HostPortUse | undefined;
  const hostPortUse = () => {
    if (hostPorts) return hostPorts;
    hostPorts = new HostPortUse(portsOf);
    for (const t of tasks) hostPorts.count(changed.get(t.ID) ?? t, 1);
    for (const t of changed.values()) if (!original.has(t.ID)) hostPorts.count(t, 1);
    return hostPorts;
  };
  const put = (t: TaskRecord) => {
    const spread = spreads.get(t.ServiceID);
    const prev = changed.get(t.ID) ?? original.get(t.ID);
    if (spread) {
      if (prev && loadsNode(prev)) spread.set(prev.NodeID, spread.get(prev.NodeID)! - 1);
      if (loadsNode(t)) spread.set(t.NodeID, (spread.get(t.NodeID) ?? 0) + 1);
    }
    if (hostPorts) {
      if (prev) hostPorts.count(prev, -1);
      hostPorts.count(t, 1);
    }
    changed.set(t.ID, t);
    let m = changedOf.get(t.ServiceID);
    if (!m) changedOf.set(t.ServiceID, (m = new Map()));
    m.set(t.ID, t);
  };
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const usable = (id: string | undefined) => { const n = id ? byId.get(id) : undefined; return !!n && n.ready && n.availability === 'active'; };
  // Active tasks per node, for spreading (counted over every service, as swarmkit's spread); this pass's changes move it.
  const load = scope?.load ? new Map(scope.load) : runningLoad(tasks);
  const svcIds = new Set(services.map((s) => s.ID));
  const exists = scope?.exists ?? ((id: string) => svcIds.has(id));
  const inScope = (id: string) => !scope || scope.ids.has(id);
  const at = goTime(new Date(now));
  const shut = (t: TaskRecord, extra: Partial<TaskRecord> = {}) => {
    if (t.DesiredState === 'shutdown' && !Object.keys(extra).length) return;
    const n = { ...t, ...extra, DesiredState: 'shutdown' as const, UpdatedAt: at };
    if (loadsNode(t)) load.set(t.NodeID, (load.get(t.NodeID) ?? 1) - 1);
    // A task never started (pending, or on a node gone before it ran) ends here.
    if (!t.NodeID || (!isTerminal(t.Status.State) && !byId.get(t.NodeID)?.ready && t.Status.State === 'assigned')) n.Status = { ...t.Status, State: 'shutdown', Message: 'shutdown', Timestamp: at };
    put(n);
  };

  // Tasks of removed services go; their records are deleted once they stopped (or their node is gone).
  for (const t of tasks) {
    if (!inScope(t.ServiceID) || exists(t.ServiceID)) continue;
    if (isTerminal(t.Status.State) || !t.NodeID || !byId.get(t.NodeID)?.ready) out.delete.push(t.ID);
    else shut(t);
  }

  // Each service's tasks: a filter of every task per service cost services × tasks each pass.
  const tasksOf = new Map<string, TaskRecord[]>();
  for (const t of tasks) {
    if (!inScope(t.ServiceID)) continue;
    const l = tasksOf.get(t.ServiceID);
    if (l) l.push(t);
    else tasksOf.set(t.ServiceID, [t]);
  }
  for (const svc of services) {
    if (!inScope(svc.ID)) continue;
    const mine = tasksOf.get(svc.ID) ?? [];
    const constraints = svc.Spec.TaskTemplate.Placement?.Constraints ?? [];
    const eligible = nodes.filter((n) => n.ready && n.availability === 'active' && matches(n, constraints));
    const global = !!svc.Spec.Mode.Global;
    const slots = new Map<string, TaskRecord[]>();
    for (const t of mine) {
      const key = global ? `node:${t.NodeID}` : `slot:${t.Slot}`;
      let l = slots.get(key);
      if (!l) slots.set(key, (l = []));
      l.push(t);
    }
    for (const l of slots.values()) l.sort((a, b) => a.Attempt - b.Attempt);
    const wanted = global ? eligible.map((n) => `node:${n.id}`) : Array.from({ length: desiredReplicas(svc.Spec) }, (_, i) => `slot:${i + 1}`);
    const wantedSet = new Set(wanted);

    // Slots no longer wanted (scaled down, a node no longer eligible): their tasks stop, and stopped ones go.
    for (const [key, l] of slots) {
      if (wantedSet.has(key)) continue;
      for (const t of l) {
        if (t.DesiredState === 'running') shut(t);
        else if (isTerminal(t.Status.State) || !usable(t.NodeID)) out.delete.push(t.ID);
      }
    }

    const place = (t: TaskRecord): { node?: NodeView; err?: string } => {
      if (global) return {};
      const ports = portsOf(t);
      const open = ports.length ? eligible.filter((n) => !hostPortUse().busy(n.id, ports)) : eligible;
      if (!open.length) {
        const up = nodes.filter((n) => n.ready && n.availability === 'active').length;
        // swarmkit's explanation: each filter's failures, the most first.
        const parts = ([
          [up - eligible.length, (n: string) => `scheduling constraints not satisfied on ${n}`],
          [eligible.length, (n: string) => `host-mode port already in use on ${n}`],
          [nodes.length - up, (n: string) => `${n} not available for new tasks`],
        ] as const).filter(([count]) => count > 0).sort((a, b) => b[0] - a[0]).map(([count, say]) => say(`${count} node${count === 1 ? '' : 's'}`));
        return { err: `no suitable node${parts.length ? ` (${parts.join('; ')})` : ''}` };
      }
      let spread = spreads.get(svc.ID);
      if (!spread) {
        const current = new Map(mine.map((t) => [t.ID, t]));
        for (const t of changedOf.get(svc.ID)?.values() ?? []) current.set(t.ID, t);
        spreads.set(svc.ID, (spread = runningLoad(current.values())));
      }
      const ofService = (id: string) => spread.get(id) ?? 0;
      let node = open[0]!;
      for (const n of open) {
        const d = ofService(n.id) - ofService(node.id) || (load.get(n.id) ?? 0) - (load.get(node.id) ?? 0) || n.id.localeCompare(node.id);
        if (d < 0) node = n;
      }
      return { node };
    };
    const make = (key: string, prev: TaskRecord | undefined, restarted: boolean, update = false) => {
      const nodeId = global ? key.slice('node:'.length) : undefined;
      const t: TaskRecord = {
        ID: newId(), Version: { Index: 0 }, CreatedAt: at, UpdatedAt: at, Labels: {},
        Spec: structuredClone(svc.Spec.TaskTemplate), ServiceID: svc.ID, ServiceAnnotations: { Name: svc.Spec.Name, ...(svc.Spec.Labels ? { Labels: svc.Spec.Labels } : {}) }, Endpoint: { Spec: { Mode: svc.Spec.EndpointSpec?.Mode ?? 'vip' }, Ports: hostModePorts(svc) }, SpecVersion: svc.Version.Index,
        ...(global ? {} : { Slot: Number(key.slice('slot:'.length)) }),
        Status: { Timestamp: at, State: 'new', Message: 'created' }, DesiredState: 'running',
        Attempt: prev ? prev.Attempt + 1 : 0, Restarts: prev ? (prev.Restarts ?? 0) + (restarted ? 1 : 0) : 0,
        ...(update || prev?.Update ? { Update: true } : {}),
      };
      assign(t, nodeId);
    };
    const pending = (t: TaskRecord, err: string) => {
      if (t.Status.State !== 'pending' || t.Status.Err !== err) put({ ...t, Status: { Timestamp: at, State: 'pending', Message: 'pending task scheduling', Err: err }, UpdatedAt: at });
    };
    const assign = (t: TaskRecord, nodeId?: string) => {
      const ports = portsOf(t);
      if (nodeId) {
        // A global task has its node; as swarmkit's preassigned tasks, it waits there while
        // another task holds one of its host-mode ports (the explanation without "no suitable node").
        if (ports.length && hostPortUse().busy(nodeId, ports, t)) return pending({ ...t, NodeID: nodeId }, 'host-mode port already in use on 1 node');
        t.NodeID = nodeId;
      } else {
        const p = place(t);
        if (!p.node) {
          return pending(t, p.err ?? 'no suitable node');
        }
        t.NodeID = p.node.id;
      }
      load.set(t.NodeID, (load.get(t.NodeID) ?? 0) + 1);
      put({ ...t, Status: { Timestamp: at, State: 'assigned', Message: 'scheduler assigned task to node' }, UpdatedAt: at });
    };

    for (const key of wanted) {
      const l = slots.get(key) ?? [];
      // History beyond Docker's limit goes.
      for (const old of l.slice(0, Math.max(0, l.length - HISTORY))) if (old.DesiredState === 'shutdown' && (isTerminal(old.Status.State) || !usable(old.NodeID))) out.delete.push(old.ID);
      const latest = l[l.length - 1];
      if (!latest) { make(key, undefined, false); continue; }
      if (latest.DesiredState === 'running') {
        if (latest.Status.State === 'pending' || latest.Status.State === 'new') { assign({ ...latest }, global ? key.slice(5) : undefined); continue; }
        if (!usable(latest.NodeID)) {
          // Its node died or drains: the task moves now (no restart delay: it did not fail).
          shut(latest);
          if (!global) make(key, latest, false);
          continue;
        }
        if (isTerminal(latest.Status.State)) {
          const decision = restartDecision(svc, latest, now);
          shut(latest, decision === 'never' ? { NoRestart: true } : { RestartAt: decision === 'now' ? now : decision });
          if (decision === 'now') make(key, latest, true);
          else if (typeof decision === 'number') out.wakeAt = Math.min(out.wakeAt ?? Infinity, decision);
        }
        continue;
      }
      // The latest was stopped: by a policy that ends the slot, by a restart that waits, or it moved.
      if (latest.NoRestart) continue;
      // A stop-first update: the replacement starts once the old task has stopped (or its node is gone).
      if (latest.UpdateStop && !isTerminal(latest.Status.State) && usable(latest.NodeID)) continue;
      if (latest.RestartAt !== undefined && latest.RestartAt > now) { out.wakeAt = Math.min(out.wakeAt ?? Infinity, latest.RestartAt); continue; }
      make(key, latest, latest.RestartAt !== undefined, latest.UpdateStop);
    }
    // Each wanted slot's tasks as this pass left them (changed ones in their new form, new ones added).
    const keyOf = (t: TaskRecord) => (global ? `node:${t.NodeID}` : `slot:${t.Slot}`);
    const current = new Map(wanted.map((k) => [k, (slots.get(k) ?? []).map((t) => changed.get(t.ID) ?? t)]));
    for (const t of changedOf.get(svc.ID)?.values() ?? []) {
      const l = current.get(keyOf(t));
      if (l && !l.some((x) => x.ID === t.ID)) l.push(t);
    }
    rollOut(svc, [...current.values()], { shut, make: (t) => make(keyOf(t), t, false, true), usable, now, at, out });
  }
  out.put = [...changed.values()];
  out.delete = [...new Set(out.delete)].filter((id) => !changed.has(id));
  return out;
}

/** A finished task's slot: started again now, at a later time (ms), or never (the restart policy's decision). */
export function restartDecision(svc: ServiceRecord, t: TaskRecord, now: number): 'now' | 'never' | number {
  const rp = svc.Spec.TaskTemplate.RestartPolicy ?? {};
  const cond = rp.Condition ?? 'any';
  if (cond === 'none') return 'never';
  if (cond === 'on-failure' && t.Status.State === 'complete') return 'never';
  if (rp.MaxAttempts && (t.Restarts ?? 0) >= rp.MaxAttempts) return 'never';
  const delayMs = Math.floor((rp.Delay ?? 5e9) / 1e6);
  const due = Date.parse(t.Status.Timestamp) + delayMs;
  return Number.isNaN(due) || due <= now ? 'now' : due;
}

interface RollOutOps {
  shut: (t: TaskRecord, extra?: Partial<TaskRecord>) => void;
  /** A replacement of this task, from the current spec, in its slot. */
  make: (t: TaskRecord) => void;
  usable: (nodeId: string | undefined) => boolean;
  now: number;
  at: string;
  out: Decisions;
}

/**
 * Docker's rolling update (swarmkit's updater) over the slots of one service, each given as all
 * its tasks: tasks of an older spec are replaced `Parallelism` at a time (0: all at once), a
 * batch after the previous one runs and `Delay` passed, stopping the old task first (stop-first)
 * or once its replacement runs (start-first). A replacement that fails within `Monitor` of its
 * making counts against `MaxFailureRatio`; past it the update pauses, goes on, or rolls back
 * (`FailureAction`). `UpdateStatus` follows: updating, paused, completed (rollback_* for a rollback).
 */
function rollOut(svc: ServiceRecord, slots: TaskRecord[][], o: RollOutOps): void {
  const rollingBack = svc.UpdateStatus?.State.startsWith('rollback') ?? false;
  const cfg = updateConfigOf(svc.Spec, rollingBack);
  const upToDate = upToDateWith(svc);
  const latest = (l: TaskRecord[]) => l.reduce<TaskRecord | undefined>((a, t) => (!a || t.Attempt > a.Attempt ? t : a), undefined);
  const status = svc.UpdateStatus;
  const set = (u: UpdateStatus, rollback = false) => o.out.status.push({ id: svc.ID, UpdateStatus: u, ...(rollback ? { rollback } : {}) });

  // start-first: the old task of a slot stops once its replacement runs.
  for (const l of slots) {
    const last = latest(l);
    if (!last || last.DesiredState !== 'running' || last.Status.State !== 'running') continue;
    for (const t of l) if (t !== last && t.DesiredState === 'running') o.shut(t);
  }

  const stale: TaskRecord[] = [];
  let inFlight = 0;
  for (const l of slots) {
    const last = latest(l);
    if (!last) continue;
    if (last.UpdateStop && !isTerminal(last.Status.State)) { inFlight++; continue; }
    // A replacement of an older spec that ended its slot (a failed update, --restart-condition
    // none): the spec it ran is gone (rolled back, or updated again), so the slot runs the current one.
    if (last.DesiredState !== 'running' && last.Update && last.NoRestart && !upToDate(last)) { stale.push(last); continue; }
    if (last.DesiredState !== 'running') continue;
    if (!upToDate(last)) {
      if (!isTerminal(last.Status.State) && o.usable(last.NodeID)) stale.push(last);
    } else if (last.Update && last.Status.State !== 'running' && !isTerminal(last.Status.State)) {
      inFlight++;
    }
  }
  const since = status?.StartedAt ? Date.parse(status.StartedAt) : 0;
  const mine = slots.flat().filter((t) => t.Update && upToDate(t) && Date.parse(t.CreatedAt) >= since);
  const monitorMs = cfg.Monitor / 1e6;
  const failed = mine.filter((t) => ['failed', 'rejected'].includes(t.Status.State) && Date.parse(t.Status.Timestamp) - Date.parse(t.CreatedAt) <= monitorMs);
  const lastRunning = Math.max(0, ...mine.filter((t) => t.Status.State === 'running').map((t) => Date.parse(t.Status.Timestamp)));
  const active = !!status && ['updating', 'rollback_started'].includes(status.State);
  const wake = (at: number) => { o.out.wakeAt = Math.min(o.out.wakeAt ?? Infinity, at); };

  if (status && ['paused', 'rollback_paused'].includes(status.State)) return;
  if (!stale.length && !inFlight && !active) return;
  if (!active) {
    // A new update begins (its spec was written with no status, as swarmkit clears it).
    set({ State: 'updating', StartedAt: o.at, Message: 'update in progress' });
    return;
  }
  if (failed.length && cfg.FailureAction !== 'continue' && failed.length > cfg.MaxFailureRatio * Math.max(1, mine.length)) {
    if (cfg.FailureAction === 'rollback' && !rollingBack && svc.PreviousSpec) {
      set({ State: 'rollback_started', StartedAt: o.at, Message: `update rolled back due to failure or early termination of task ${failed[0]!.ID}` }, true);
    } else {
      set({ ...status, State: rollingBack ? 'rollback_paused' : 'paused', Message: `update paused due to failure or early termination of task ${failed[0]!.ID}` });
    }
    return;
  }
  if (!stale.length && !inFlight) {
    // As swarmkit's: the last batch is watched for one more monitor period before the update is done.
    if (mine.length && lastRunning + monitorMs > o.now) return wake(lastRunning + monitorMs);
    set({ ...status, State: rollingBack ? 'rollback_completed' : 'completed', CompletedAt: o.at, Message: rollingBack ? 'rollback completed' : 'update completed' });
    return;
  }
  // The next batch waits for the previous one to run, then for the delay.
  if (inFlight) return;
  if (mine.length && lastRunning + cfg.Delay / 1e6 > o.now) return wake(lastRunning + cfg.Delay / 1e6);
  const batch = cfg.Parallelism === 0 ? stale : stale.slice(0, cfg.Parallelism);
  for (const t of batch) {
    if (cfg.Order === 'start-first' || t.DesiredState !== 'running') o.make(t);
    else o.shut(t, { UpdateStop: true });
  }
}
