import { errorMessage } from '../util/errors.js';
import { goTime, newNodeId } from './ids.js';
import { K, ROOT, type NodeRecord } from './keys.js';
import { reconcile, type Decisions } from './reconcile.js';
import { SK } from './services.js';
import type { NodeView, ServiceRecord, TaskRecord } from './servicemodel.js';
import type { Session } from './session.js';
import type { Cmp, Versioned } from './store.js';

/** How often a manager that does not lead tries to, and the leader checks it still does. */
const CAMPAIGN_MS = 1000;
/** Tasks written per transaction (each is a compare and a put; etcd's limit is 128 operations). */
const TXN_CHUNK = 60;

/**
 * The orchestrator of one manager. Managers campaign for one key held under their presence lease
 * (create-if-absent): the holder leads; when it dies its lease lapses, the key goes with it, and
 * the next manager's campaign (every second) takes it, so a new leader acts within the lease TTL
 * plus a second. The leader watches the store and runs `reconcile` after every change; each
 * write compares the records it read and the leader key's creation, so a deposed leader, or a
 * task an agent changed meanwhile, makes the write fail and the next pass start from fresh reads.
 */
export class Orchestrator {
  private leaderRev = 0;
  private timer?: NodeJS.Timeout;
  private wake?: NodeJS.Timeout;
  private stopWatch?: () => Promise<void>;
  private running?: Promise<void>;
  private again = false;
  private closed = false;

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
        // Still ours; a pass now and then catches anything a lost watch missed.
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
      const leaseId = await lease.grant();
      const r = await store.txn([{ key: SK.leader, target: 'Create', value: 0 }], [{ key: SK.leader, value: { Node: this.session.state.nodeId }, lease: leaseId }]);
      if (!r.ok) return this.stepDown();
      this.leaderRev = r.revision;
      this.log(`orchestrator: this node leads (revision ${r.revision})`);
      this.stopWatch = await store.watchBatches(ROOT, r.revision + 1, (events) => {
        if (events.some((e) => /^(services|tasks|nodes|alive)\//.test(e.key.slice(ROOT.length)))) this.kick();
      }, () => { /* the periodic check above runs a pass */ });
      this.kick();
    } catch (e) {
      this.log(`orchestrator: ${errorMessage(e)}`);
    }
  }

  private async stepDown(): Promise<void> {
    if (!this.leaderRev) return;
    this.leaderRev = 0;
    await this.stopWatch?.().catch(() => undefined);
    this.stopWatch = undefined;
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
          await new Promise((r) => setTimeout(r, 200));
          this.again = true;
        }
      } while (this.again && !this.closed && this.leaderRev);
    })().finally(() => { this.running = undefined; });
  }

  private async pass(): Promise<void> {
    const store = this.session.store;
    const [svcs, tasks, nodes, alive] = await store.readMany([
      { key: SK.services, prefix: true }, { key: SK.tasks, prefix: true }, { key: K.nodes, prefix: true }, { key: K.alive, prefix: true },
    ]);
    const up = new Set([...alive!.keys()].map((k) => k.slice(K.alive.length)));
    const views: NodeView[] = [...(nodes!.values() as Iterable<Versioned<NodeRecord>>)].map(({ value: n }) => ({
      id: n.ID, hostname: n.Description?.Hostname ?? '', role: n.Spec.Role, labels: n.Spec.Labels ?? {}, availability: n.Spec.Availability, ready: up.has(n.ID),
    }));
    const taskRecs = tasks as Map<string, Versioned<TaskRecord>>;
    const d = reconcile([...(svcs!.values() as Iterable<Versioned<ServiceRecord>>)].map((v) => v.value), [...taskRecs.values()].map((v) => v.value), views, Date.now(), newNodeId);
    clearTimeout(this.wake);
    if (d.wakeAt !== undefined) {
      this.wake = setTimeout(() => this.kick(), Math.max(0, d.wakeAt - Date.now()) + 10);
      this.wake.unref();
    }
    let ok = await this.writeStatus(d.status, svcs as Map<string, Versioned<ServiceRecord>>);
    if (!d.put.length && !d.delete.length && ok) return;
    // etcd takes at most 128 operations per transaction: large decisions go in chunks, each
    // checked on its own (a chunk that loses a race makes the next pass start from fresh reads).
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
    }
    if (!ok) {
      // Deposed, or an agent wrote a task meanwhile: read again (unless no longer leading).
      const cur = await store.get<{ Node: string }>(SK.leader);
      if (!cur || cur.value.Node !== this.session.state.nodeId) return this.stepDown();
      // A moment's pause before reading again: two writers racing should not spin the store.
      await new Promise((r) => setTimeout(r, 50));
      this.again = true;
    }
  }

  /**
   * A rolling update's state on its service record (what `docker service update` waits on); for a
   * rollback its failure action asked for, the previous spec comes back too (its ports stay:
   * their claims are the current spec's). Each write compares the record read.
   */
  private async writeStatus(status: Decisions['status'], svcs: Map<string, Versioned<ServiceRecord>>): Promise<boolean> {
    let ok = true;
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
    }
    return ok;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.wake);
    await this.stepDown();
    await this.running?.catch(() => undefined);
  }
}
