import { Steps } from '../util/steps.js';
import { errorMessage } from '../util/errors.js';
import { goTime } from './ids.js';
import type { PortConfig } from './publish.js';
import { SK } from './services.js';
import { isTerminal, type TaskRecord, type TaskState } from './servicemodel.js';
import type { Session } from './session.js';
import type { WatchEvent } from './store.js';

/**
 * A task's container as the engine has it. `health`: the container's health check's verdict, when
 * it has one (a task runs only once healthy); `ports`: the task's host-mode ports as its running
 * container bound them; `startedAt`: when it started (ms), while it runs.
 */
export interface TaskContainer { id: string; running: boolean; exitCode: number; pid: number; error: string; health?: 'starting' | 'healthy' | 'unhealthy'; ports?: PortConfig[]; startedAt?: number }

/**
 * How long a started task's container may take to listen on the ports its service publishes or its
 * image exposes before it runs (and is a backend) anyway: Docker's would be a backend at once, and
 * refuse the connections the balancers send it until its process listens.
 */
export const LISTEN_WAIT_MS = 5000;
const LISTEN_POLL_MS = 15;
/** A task that waits longer than this to listen shows `starting` meanwhile. */
const STARTING_AFTER_MS = 500;

/** What the agent needs of the engine (the daemon implements it; the cluster never imports the engine). */
export interface TaskRuntime {
  /** Containers this host made for tasks, by task id. */
  taskContainers(): Map<string, TaskContainer>;
  /** One task's container (a step looks at its own task alone, every LISTEN_POLL_MS while it waits to listen). */
  taskContainer(taskId: string): TaskContainer | undefined;
  /** Creates and starts a task's container; returns it. */
  run(task: TaskRecord, nodeId: string): Promise<TaskContainer>;
  /** The ports (`80/tcp`) a running task container's service publishes or its image exposes that it does not listen on yet. */
  awaiting(containerId: string): Promise<string[]>;
  /** Stops (within the grace period) and removes a task's container. */
  remove(containerId: string, graceSec: number): Promise<void>;
  /** Calls back when a container of a task exits. */
  onExit(cb: (taskId: string) => void): () => void;
}

/**
 * The agent of one node: it follows the tasks the orchestrator assigns to this node and makes the
 * engine agree: a task desired running gets its container (found again by its task-id label after
 * a restart of berthd, so none is ever made twice), a task desired shut down loses it, and
 * containers of tasks no longer in the store are removed. It reports each task's state back
 * (running, complete, failed, rejected, shutdown) with compare-and-swap, as the orchestrator may
 * write the same record.
 */
export class Agent {
  private readonly tasks = new Map<string, TaskRecord>();
  /** The store revision of each task's record as last seen. */
  private readonly revs = new Map<string, number>();
  private readonly busy = new Map<string, Promise<void>>();
  private stopWatch?: () => Promise<void>;
  private unsubscribe?: () => void;
  private closed = false;
  private listed = false;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly session: Session, private readonly runtime: TaskRuntime, private readonly log: (m: string) => void,
    /** Returns once every live host applied the store up to a revision (their balancers dropped a task). */
    private readonly appliedEverywhere: (revision: number) => Promise<void> = async () => undefined,
  ) {}

  private get me(): string { return this.session.state.nodeId; }

  /** Settles when this node follows the networks its tasks join: no task is acted on before. */
  private networks: Promise<unknown> = Promise.resolve();

  /** Lists and watches the tasks at once; acts on them once `networks` settles. */
  async start(networks: Promise<unknown> = Promise.resolve()): Promise<void> {
    this.networks = networks.catch(() => undefined);
    this.unsubscribe = this.runtime.onExit((taskId) => this.converge(taskId));
    // A watch lost (or a report that failed) is caught up by a slow periodic pass.
    const tick = () => { if (this.closed) return; void this.relist().catch((e) => this.log(`agent: ${errorMessage(e)}`)).finally(() => { if (this.closed) return; this.timer = setTimeout(tick, 5000); this.timer.unref(); }); };
    this.timer = setTimeout(tick, 5000);
    this.timer.unref();
    await this.relist();
  }

  private async relist(): Promise<void> {
    if (this.closed) return;
    await this.stopWatch?.().catch(() => undefined);
    const { items, revision } = await this.session.store.listAt<TaskRecord>(SK.tasks);
    this.tasks.clear();
    for (const v of items.values()) if (v.value.NodeID === this.me) { this.tasks.set(v.value.ID, v.value); this.revs.set(v.value.ID, v.modRevision); }
    this.listed = true;
    const stop = await this.session.store.watchBatches<TaskRecord>(SK.tasks, revision + 1, (events) => this.take(events), () => { /* the periodic relist */ });
    // Closed while the watch was being made (start is not waited for): it goes at once.
    if (this.closed) return void (await stop().catch(() => undefined));
    this.stopWatch = stop;
    for (const id of new Set([...this.tasks.keys(), ...this.runtime.taskContainers().keys()])) this.converge(id);
  }

  private take(events: WatchEvent<TaskRecord>[]): void {
    for (const e of events) {
      const id = e.key.slice(SK.tasks.length);
      if (e.type === 'put' && e.value.NodeID === this.me) { this.tasks.set(id, e.value); this.revs.set(id, e.modRevision); }
      else { this.tasks.delete(id); this.revs.delete(id); }
      this.converge(id);
    }
  }

  /** One task at a time per id; a change while it works runs it again after. */
  private converge(id: string): void {
    if (this.closed || !this.listed) return;
    const prev = this.busy.get(id);
    const next = (prev ?? this.networks).then(() => this.step(id)).catch((e) => this.log(`agent: task ${id}: ${errorMessage(e)}`));
    this.busy.set(id, next);
    void next.finally(() => { if (this.busy.get(id) === next) this.busy.delete(id); });
  }

  private async step(id: string): Promise<void> {
    if (this.closed) return;
    const t = this.tasks.get(id);
    const c = this.runtime.taskContainer(id);
    if (!t) {
      // Deleted from the store (its service removed), or never ours: its container goes.
      if (c) await this.runtime.remove(c.id, 10);
      return;
    }
    const grace = Math.ceil((t.Spec.ContainerSpec.StopGracePeriod ?? 10e9) / 1e9);
    if (t.DesiredState !== 'running') {
      // Every host's balancer drops the task (it follows the same record) before it stops: no
      // new connection goes to a task on its way out.
      if (c?.running) await this.appliedEverywhere(this.revs.get(id) ?? 0);
      if (c) await this.runtime.remove(c.id, grace);
      if (!isTerminal(t.Status.State)) await this.report(id, 'shutdown', 'shutdown', c);
      return;
    }
    if (isTerminal(t.Status.State)) {
      // Finished and reported; the orchestrator decides what next. A container left running (a
      // report made while berthd was down cannot be) is stopped.
      if (c?.running) await this.runtime.remove(c.id, grace);
      return;
    }
    if (c) {
      if (c.running && c.health === 'unhealthy') {
        // As swarmkit's executor: an unhealthy task has failed; its container goes, the restart policy decides.
        await this.runtime.remove(c.id, grace);
        await this.report(id, 'failed', 'started', c, 'task: non-zero exit (137): dockerexec: unhealthy container');
      } else if (c.running && c.health === 'starting') {
        // Not a backend, and not counted as updated, until its health check passes.
        if (t.Status.State !== 'starting') await this.report(id, 'starting', 'starting', c);
      } else if (c.running) {
        if (t.Status.State !== 'running') await this.whenListening(id, t, c);
      } else {
        await this.report(id, c.exitCode === 0 ? 'complete' : 'failed', c.exitCode === 0 ? 'finished' : 'started', c, c.exitCode === 0 ? undefined : c.error || `task: non-zero exit (${c.exitCode})`);
      }
      return;
    }
    if (t.Status.State === 'running') {
      // Its container was removed from under it.
      await this.report(id, 'failed', 'started', undefined, 'task: the container was removed');
      return;
    }
    if (t.Status.State !== 'assigned' && t.Status.State !== 'accepted' && t.Status.State !== 'preparing' && t.Status.State !== 'starting') return;
    try {
      const st = new Steps(`task ${id}'s start`);
      const made = await this.runtime.run(t, this.me);
      st.mark('run');
      if (made.running && made.health !== 'starting') await this.whenListening(id, t, made);
      else await this.report(id, made.running ? 'starting' : made.exitCode === 0 ? 'complete' : 'failed', 'started', made);
      st.mark('reported');
      st.done();
    } catch (e) {
      await this.report(id, 'rejected', 'preparing', undefined, errorMessage(e));
    }
  }

  /**
   * A started task runs, and so becomes a backend of every balancer, once its container listens on
   * the ports its service publishes or its image exposes (a health check, when it has one, said
   * so already): a connection the VIP or the mesh sent it before would be refused. It is looked at
   * again shortly until then, for at most LISTEN_WAIT_MS.
   */
  private async whenListening(id: string, t: TaskRecord, c: TaskContainer): Promise<void> {
    const since = Date.now() - (c.startedAt ?? 0);
    const waiting = !c.health && since < LISTEN_WAIT_MS ? await this.runtime.awaiting(c.id) : [];
    if (!waiting.length) return this.report(id, 'running', 'started', c);
    if (since >= STARTING_AFTER_MS && t.Status.State !== 'starting') await this.report(id, 'starting', `starting: not listening on ${waiting.join(', ')} yet`, c);
    setTimeout(() => this.converge(id), LISTEN_POLL_MS).unref();
  }

  /** Writes a task's status, unless the record moved on meanwhile in a way that makes it moot. */
  private async report(id: string, state: TaskState, message: string, c?: TaskContainer, err?: string): Promise<void> {
    const store = this.session.store;
    for (let attempt = 0; attempt < 10; attempt++) {
      // The first try writes over the record as this agent's watch last had it (the compare says
      // whether it still is): a read first made every report two round trips to the store, and a
      // task's arrival in every balancer waits for its report.
      const seen = this.tasks.get(id);
      const seenRev = this.revs.get(id);
      const cur = attempt === 0 && seen && seenRev !== undefined ? { value: seen, modRevision: seenRev } : await store.get<TaskRecord>(SK.task(id));
      if (!cur || cur.value.NodeID !== this.me || isTerminal(cur.value.Status.State)) return;
      const now = goTime();
      const next: TaskRecord = {
        ...cur.value, UpdatedAt: now,
        Status: {
          Timestamp: now, State: state, Message: message, ...(err ? { Err: err } : {}),
          ...(c ? { ContainerStatus: { ContainerID: c.id, PID: c.running ? c.pid : 0, ExitCode: c.exitCode } } : cur.value.Status.ContainerStatus ? { ContainerStatus: cur.value.Status.ContainerStatus } : {}),
          // As Docker's: the ports while the container publishes them, an empty status after.
          PortStatus: (state === 'running' || state === 'starting') && c?.ports?.length ? { Ports: c.ports } : {},
        },
      };
      const r = await store.txn([{ key: SK.task(id), target: 'Mod', value: cur.modRevision }], [{ key: SK.task(id), value: next }]);
      if (r.ok) {
        this.tasks.set(id, next);
        this.revs.set(id, r.revision);
        return;
      }
    }
    throw new Error(`task ${id}: its record kept changing while its state (${state}) was reported`);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.unsubscribe?.();
    await this.stopWatch?.().catch(() => undefined);
    await Promise.all([...this.busy.values()]).catch(() => undefined);
  }

  /** This node left the swarm: every task container goes. */
  async leave(): Promise<void> {
    await this.close();
    for (const c of this.runtime.taskContainers().values()) await this.runtime.remove(c.id, 10).catch((e) => this.log(`agent: ${errorMessage(e)}`));
  }
}

