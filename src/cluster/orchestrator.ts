import { errorMessage } from '../util/errors.js';
import { goTime, newNodeId } from './ids.js';
import { K, ROOT } from './keys.js';
import { hostPortsOf, taskHostPorts } from './hostports.js';
import { reconcile, type Decisions } from './reconcile.js';
import { SK } from './services.js';
import type { NodeView, ServiceRecord, TaskRecord } from './servicemodel.js';
import type { Session } from './session.js';
import { OrchestratorView } from './orchview.js';
import type { Cmp, Versioned } from './store.js';

/** How often a manager that does not lead tries to, and the leader checks it still does. */
const CAMPAIGN_MS = 1000;
/** Every this many campaigns the leader's pass decides on every service, not only those changed. */
const SWEEP_TICKS = 5;
/** Tasks written per transaction (each is a compare and a put; etcd's limit is 128 operations). */
const TXN_CHUNK = 60;

/**
 * The orchestrator of one manager. Managers campaign for one key held under their presence lease
 * (create-if-absent): the holder leads; when it dies its lease lapses, the key goes with it, and
 * the next manager's campaign (every second) takes it, so a new leader acts within the lease TTL
 * plus a second. The leader keeps a view of the store by its watch (orchview.ts) and runs
 * `reconcile` on it after every change; each write compares the records the decision was made on
 * and the leader key's creation, so a deposed leader, or a task an agent changed meanwhile, makes
 * the write fail, and the next pass decides once the view holds that change.
 */
export class Orchestrator {
  private leaderRev = 0;
  private timer?: NodeJS.Timeout;
  private wake?: NodeJS.Timeout;
  private stopWatch?: () => Promise<void>;
  private running?: Promise<void>;
  private again = false;
  private closed = false;
  /** What passes decide on, kept by the watch; unset until read (again). */
  private view?: OrchestratorView;
  private following?: Promise<void>;
  /** The view's revision at the last check: one that stands still behind the store is read again. */
  private checkedRev = 0;
  /** The next pass decides on every service: after a failed one, at a wake, and now and then. */
  private sweepDue = true;
  private wakeAt?: number;
  private ticks = 0;

  constructor(private readonly session: Session, private readonly log: (m: string) => void) {}

  get leading(): boolean { return this.leaderRev > 0; }

  start(): void {
    const tick = () => {
      if (this.closed) return;
      void this.campaign().finally(() => {
        if (!this.closed) this.timer = setTimeout(tick, CAMPAIGN_MS);
      });
    };
    tick();
  }

  private async campaign(): Promise<void> {
    const store = this.session.store;
    const lease = this.session.lease;
    if (!lease || this.session.state.role !== 'manager') return this.stepDown();
    try {
      const cur = await store.get<{ Node: string }>(SK.leader);
      if (cur && this.leaderRev && cur.value.Node === this.session.state.nodeId) {
        // Still ours; a pass now and then catches anything a timer missed, and a view that fell
        // behind the store (a watch that died without a word) is read again.
        await this.checkView();
        if (++this.ticks % SWEEP_TICKS === 0) this.sweepDue = true;
        this.kick();
        return;
      }
      if (cur && !this.leaderRev && cur.value.Node === this.session.state.nodeId) {
        // Ours, yet this process does not lead: a campaign whose answer was lost (its write timed
        // out while quorum was lost and committed once it came back), or a previous berthd's. Kept,
        // it made every manager stand down while this host's lease lived (chaos across hosts, seed
        // 4242: no task for seven cycles). Given up, so the next campaign starts clean.
        await store.txn([{ key: SK.leader, target: 'Mod', value: cur.modRevision }], [], [SK.leader]);
        return;
      }
      if (cur) return this.stepDown();
      const leaseId = await store.call(() => lease.grant());
      const r = await store.txn([{ key: SK.leader, target: 'Create', value: 0 }], [{ key: SK.leader, value: { Node: this.session.state.nodeId }, lease: leaseId }]);
      if (!r.ok) return this.stepDown();
      this.leaderRev = r.revision;
      this.log(`orchestrator: this node leads (revision ${r.revision})`);
      await this.follow();
      this.kick();
    } catch (e) {
      this.log(`orchestrator: ${errorMessage(e)}`);
    }
  }

  private async stepDown(): Promise<void> {
    if (!this.leaderRev) return;
    this.leaderRev = 0;
    this.view = undefined;
    await this.stopWatch?.().catch(() => undefined);
    this.stopWatch = undefined;
  }

  /** Reads the view afresh and watches on from its revision (one at a time). */
  private follow(): Promise<void> {
    this.following ??= (async () => {
      await this.stopWatch?.().catch(() => undefined);
      this.stopWatch = undefined;
      this.view = undefined;
      const view = await OrchestratorView.load(this.session.store);
      if (!this.leaderRev || this.closed) return;
      this.view = view;
      this.checkedRev = view.rev;
      this.stopWatch = await this.session.store.watchBatches(ROOT, view.rev + 1, (events) => {
        if (this.view === view && view.apply(events)) this.kick();
      }, () => {
        if (this.view === view) this.view = undefined;
        this.kick();
      });
    })().finally(() => { this.following = undefined; });
    return this.following;
  }

  private async checkView(): Promise<void> {
    const view = this.view;
    if (!view) return;
    const rev = await this.session.store.revision();
    if (rev > view.rev && view.rev === this.checkedRev && this.view === view) {
      this.log(`orchestrator: its view stood at revision ${view.rev} while the store went on to ${rev}: reading it again`);
      this.view = undefined;
    }
    this.checkedRev = view.rev;
  }

  /** Waits until the view holds the store's history up to `rev`; one that does not within a second is read again. */
  private async caughtUp(rev: number): Promise<void> {
    for (const end = Date.now() + 1000; Date.now() < end; await new Promise((r) => setTimeout(r, 5))) {
      if (!this.view || this.view.rev >= rev) return;
    }
    this.view = undefined;
  }

  /** Runs a pass now, or one more after the running one. */
  private kick(): void {
    if (this.closed || !this.leaderRev) return;
    if (this.running) { this.again = true; return; }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          await this.pass();
        } catch (e) {
          this.log(`orchestrator: ${errorMessage(e)}`);
          // The services it had taken as changed are no longer marked: the next pass takes all.
          this.sweepDue = true;
          await new Promise((r) => setTimeout(r, 200));
          this.again = true;
        }
      } while (this.again && !this.closed && this.leaderRev);
    })().finally(() => { this.running = undefined; });
  }

  private async pass(): Promise<void> {
    const store = this.session.store;
    if (!this.view) await this.follow();
    const view = this.view;
    if (!view) return;
    const dirty = view.takeDirty();
    const full = dirty === 'all' || this.sweepDue;
    this.sweepDue = false;
    if (!full && !dirty.size) return;
    // Copies of the records decided on: the watch changes the view while this pass writes, and
    // each write must compare them. A pass over some services copies only theirs.
    const svcs = new Map(full ? view.services : []);
    const taskRecs = new Map(full ? view.tasks : []);
    if (!full) {
      const take = (id: string) => {
        const s = view.services.get(SK.service(id));
        if (s) svcs.set(SK.service(id), s);
        for (const k of view.tasksOf.get(id) ?? []) taskRecs.set(k, view.tasks.get(k)!);
      };
      for (const id of dirty) take(id);
      // A placement that publishes host-mode ports must see every task that holds such a port:
      // the other services with host-mode ports, or with tasks that still hold some (made before
      // an update took them away), come along, out of scope (not decided on).
      if ([...svcs.values()].some((s) => hostPortsOf(s.value).length)) {
        const holds = (id: string) => [...view.tasksOf.get(id) ?? []].some((k) => {
          const t = view.tasks.get(k)!.value;
          return t.DesiredState === 'running' && taskHostPorts(t, () => undefined).length > 0;
        });
        for (const s of view.services.values()) if (!svcs.has(SK.service(s.value.ID)) && (hostPortsOf(s.value).length || holds(s.value.ID))) take(s.value.ID);
      }
    }
    const up = new Set([...view.alive.keys()].map((k) => k.slice(K.alive.length)));
    const views: NodeView[] = [...view.nodes.values()].map(({ value: n }) => ({
      id: n.ID, hostname: n.Description?.Hostname ?? '', role: n.Spec.Role, labels: n.Spec.Labels ?? {}, availability: n.Spec.Availability, ready: up.has(n.ID),
    }));
    // A pass over some services reads only their tasks, and the view's count of every node's load.
    const tasks = [...taskRecs.values()].map((v) => v.value);
    const scope = full ? undefined : { ids: dirty, exists: (id: string) => view.services.has(SK.service(id)), load: view.running };
    const d = reconcile([...svcs.values()].map((v) => v.value), tasks, views, Date.now(), newNodeId, scope);
    // A pass over some services may only bring the wake forward (one too early is a whole pass
    // that finds nothing due); a whole pass sets it.
    const soonest = Math.min(d.wakeAt ?? Infinity, full ? Infinity : this.wakeAt ?? Infinity);
    const wakeAt = soonest === Infinity ? undefined : soonest;
    if (full || wakeAt !== this.wakeAt) {
      clearTimeout(this.wake);
      this.wakeAt = wakeAt;
      if (this.wakeAt !== undefined) {
        this.wake = setTimeout(() => { this.sweepDue = true; this.kick(); }, Math.max(0, this.wakeAt - Date.now()) + 10);
        this.wake.unref();
      }
    }
    const status = await this.writeStatus(d.status, svcs);
    let ok = status.ok;
    let written = status.written;
    // etcd takes at most 128 operations per transaction: large decisions go in chunks, each
    // checked on its own (a chunk that loses a race makes the next pass decide again, once the view holds what won).
    const ops: Array<{ put?: TaskRecord; del?: string }> = [...d.put.map((put) => ({ put })), ...d.delete.map((del) => ({ del }))];
    for (let i = 0; i < ops.length && ok; i += TXN_CHUNK) {
      const chunk = ops.slice(i, i + TXN_CHUNK);
      const cmp: Cmp[] = [{ key: SK.leader, target: 'Create', value: this.leaderRev }];
      for (const o of chunk) {
        const id = o.put?.ID ?? o.del!;
        const had = taskRecs.get(SK.task(id));
        cmp.push(had ? { key: SK.task(id), target: 'Mod', value: had.modRevision } : { key: SK.task(id), target: 'Create', value: 0 });
      }
      const r = await store.txn(cmp, chunk.filter((o) => o.put).map((o) => ({ key: SK.task(o.put!.ID), value: o.put })), chunk.filter((o) => o.del).map((o) => SK.task(o.del!)));
      ok = r.ok;
      if (ok) written = r.revision;
    }
    // The next pass decides on what this one wrote: a task placed and not yet in the view would be placed twice.
    if (ok) return this.caughtUp(written);
    // What this pass decided on is decided again, whole (its services are no longer marked).
    this.sweepDue = true;
    // Deposed, or an agent wrote a task meanwhile: decide again on the view once it has that
    // write, and this pass's own (unless no longer leading).
    const cur = await store.get<{ Node: string }>(SK.leader);
    if (!cur || cur.value.Node !== this.session.state.nodeId) return this.stepDown();
    await this.caughtUp(await store.revision());
    // A moment's pause before deciding again: two writers racing should not spin the store.
    await new Promise((r) => setTimeout(r, 50));
    this.again = true;
  }

  /**
   * A rolling update's state on its service record (what `docker service update` waits on); for a
   * rollback its failure action asked for, the previous spec comes back too (its ports stay:
   * their claims are the current spec's). Each write compares the record read.
   */
  private async writeStatus(status: Decisions['status'], svcs: Map<string, Versioned<ServiceRecord>>): Promise<{ ok: boolean; written: number }> {
    let ok = true;
    let written = 0;
    for (const u of status) {
      const had = svcs.get(SK.service(u.id));
      if (!had) continue;
      let next: ServiceRecord = { ...had.value, UpdateStatus: u.UpdateStatus };
      if (u.rollback && had.value.PreviousSpec) {
        const back = { ...had.value.PreviousSpec, EndpointSpec: had.value.Spec.EndpointSpec };
        next = { ...next, Spec: back, PreviousSpec: had.value.Spec, UpdatedAt: goTime() };
      }
      const r = await this.session.store.txn([{ key: SK.leader, target: 'Create', value: this.leaderRev }, { key: SK.service(u.id), target: 'Mod', value: had.modRevision }], [{ key: SK.service(u.id), value: next }]);
      if (!r.ok) ok = false;
      else written = r.revision;
    }
    return { ok, written };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.wake);
    await this.stepDown();
    await this.running?.catch(() => undefined);
  }
}
