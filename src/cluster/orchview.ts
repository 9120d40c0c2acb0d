import { K, type NodeRecord } from './keys.js';
import { SK } from './services.js';
import { loadsNode, type ServiceRecord, type TaskRecord } from './servicemodel.js';
import type { ClusterStore, Versioned, WatchEvent } from './store.js';

/**
 * The leading orchestrator's copy of what it decides on (services, tasks, nodes, presence), read
 * once and then kept by the store's watch. Each pass read all four from the store before: with
 * 10,000 services that was megabytes a pass, and a `service scale` waited most of a second for
 * the pass that acted on it (bench/svcmany.js).
 */
export class OrchestratorView {
  readonly services = new Map<string, Versioned<ServiceRecord>>();
  readonly tasks = new Map<string, Versioned<TaskRecord>>();
  readonly nodes = new Map<string, Versioned<NodeRecord>>();
  readonly alive = new Map<string, Versioned<unknown>>();
  /** Each service's tasks' keys (a pass over some services takes only their tasks' records). */
  readonly tasksOf = new Map<string, Set<string>>();
  /** Each node's count of tasks desired running, over every service (what a placement spreads over). */
  readonly running = new Map<string, number>();
  /** The store's history is in the copy up to here. */
  rev = 0;
  /**
   * Services whose record or tasks changed since the last `takeDirty`: a pass decides on them
   * alone. `all` after the read, and after a change of the nodes (placement may change anywhere).
   */
  private dirty: Set<string> | 'all' = 'all';
  /** The revision of the read: the watch's events up to it are in the copy already. */
  private readRev = 0;
  private readonly byPrefix = [[SK.services, this.services], [SK.tasks, this.tasks], [K.nodes, this.nodes], [K.alive, this.alive]] as Array<[string, Map<string, Versioned<unknown>>]>;

  static async load(store: Pick<ClusterStore, 'readManyAt'>): Promise<OrchestratorView> {
    const v = new OrchestratorView();
    const maps = v.byPrefix;
    const r = await store.readManyAt(maps.map(([p]) => p));
    maps.forEach(([, m], i) => { for (const [k, x] of r.found[i]!) m.set(k, x); });
    for (const [k, t] of v.tasks) v.indexTask(k, t.value);
    v.rev = v.readRev = r.revision;
    return v;
  }

  /**
   * One batch of the watch on the whole tree; whether anything the orchestrator decides on
   * changed. An event the copy has already (the watch may start below the read) is skipped.
   */
  apply(events: ReadonlyArray<WatchEvent<unknown>>): boolean {
    let changed = false;
    for (const e of events) {
      if (e.modRevision <= this.readRev) continue;
      this.rev = Math.max(this.rev, e.modRevision);
      const m = this.byPrefix.find(([p]) => e.key.startsWith(p))?.[1];
      if (!m) continue;
      changed = true;
      if (m === this.services) this.mark(e.key.slice(SK.services.length));
      else if (m === this.tasks) {
        const old = this.tasks.get(e.key)?.value;
        if (old) {
          this.count(old, -1);
          this.mark(old.ServiceID);
          const l = this.tasksOf.get(old.ServiceID);
          l?.delete(e.key);
          if (!l?.size) this.tasksOf.delete(old.ServiceID);
        }
        if (e.type === 'put') this.indexTask(e.key, e.value as TaskRecord);
      } else this.dirty = 'all';
      if (e.type === 'put') m.set(e.key, { value: e.value, modRevision: e.modRevision });
      else m.delete(e.key);
    }
    return changed;
  }

  /** The services changed since the last call (`all`: decide on every one), and none after it. */
  takeDirty(): Set<string> | 'all' {
    const d = this.dirty;
    this.dirty = new Set();
    return d;
  }

  private mark(serviceId: string): void {
    if (this.dirty !== 'all') this.dirty.add(serviceId);
  }

  private count(t: TaskRecord, by: number): void {
    if (!loadsNode(t)) return;
    const n = (this.running.get(t.NodeID) ?? 0) + by;
    if (n > 0) this.running.set(t.NodeID, n);
    else this.running.delete(t.NodeID);
  }

  private indexTask(key: string, t: TaskRecord): void {
    this.count(t, 1);
    this.mark(t.ServiceID);
    const l = this.tasksOf.get(t.ServiceID);
    if (l) l.add(key);
    else this.tasksOf.set(t.ServiceID, new Set([key]));
  }
}
