import { randomBytes } from 'node:crypto';
import type { LogEntry, LogQuery } from '../engine/logs.js';
import { errorMessage } from '../util/errors.js';
import { K, ROOT } from './keys.js';
import type { ClusterStore, WatchEvent } from './store.js';

/**
 * `docker service logs` across nodes, through the cluster store (swarmkit's manager asks its
 * workers through the dispatcher's log broker; berth's nodes already share the store): the
 * manager that answers the API writes a subscription (which tasks, on which nodes, which part of
 * their logs), under a lease of its own; each node with a task named there reads that task
 * container's log and writes the lines back in ordered batches under the same lease; the manager
 * streams them to its client as they come. A node done with a non-follow read says so. Revoking
 * the lease (the client went, or the read is complete) takes the subscription and every batch
 * with it, and tells the nodes to stop following; a manager that dies takes them with its lease.
 * Following a service, the manager adds the tasks that start later to the subscription (as
 * swarmkit's log broker does), and their nodes read those too, whole.
 */

const SUBS = `${ROOT}logs/subs/`;
const DATA = `${ROOT}logs/data/`;
/** A batch is written when it holds this much, or this long after its first line. */
const BATCH_BYTES = 64 * 1024;
const BATCH_MS = 100;
/** The subscription's lease: renewed while the manager streams. */
const LEASE_TTL_SEC = 10;
/** How long a non-follow read waits for a node that has not answered at all. */
const NODE_WAIT_MS = 10_000;

export interface LogTask { ID: string; NodeID: string; ServiceID: string; ContainerID: string }
export interface Subscription { lease: string; tasks: LogTask[]; query: Omit<LogQuery, 'since' | 'until'> & { since: string; until: string }; follow: boolean }
/** One line as it travels: task, stream, conmon's time, the line's bytes (base64). */
interface WireLine { t: string; s: 1 | 2; ts: string; d: string }
interface Batch { lines?: WireLine[]; done?: true; error?: string }

export interface TaskLogLine { task: LogTask; entry: LogEntry }

/** Calls `found` with each task that gets a container from now on, until the returned stop is called. */
export type TaskDiscovery = (found: (t: LogTask) => void) => Promise<() => Promise<void>>;

/**
 * The manager's side: streams the tasks' lines to `emit` until every node with a task is done
 * (or gone, or silent for NODE_WAIT_MS) or, following, until `signal` aborts; a follow with
 * `discover` reads the tasks it finds later too. Returns the nodes whose part is missing.
 */
export async function streamTaskLogs(
  store: ClusterStore, tasks: LogTask[], query: LogQuery, follow: boolean, emit: (l: TaskLogLine) => void, signal: AbortSignal, discover?: TaskDiscovery,
): Promise<string[]> {
  const byId = new Map(tasks.map((t) => [t.ID, t]));
  const alive = new Set((await store.list(K.alive)).keys());
  const pending = new Set(tasks.map((t) => t.NodeID).filter((n) => alive.has(K.aliveOf(n))));
  const missing = new Set(tasks.map((t) => t.NodeID).filter((n) => !pending.has(n)));
  const discovering = follow && !!discover;
  if (!pending.size && !discovering) return [...missing];
  const id = randomBytes(8).toString('hex');
  const lease = store.client.lease(LEASE_TTL_SEC, { autoKeepAlive: true });
  // Through the store's call: without quorum no lease is granted, and the client's words would be a 500.
  const leaseId = await store.call(() => lease.grant()).catch((e: unknown) => { lease.release(); throw e; });
  let stopWatch: (() => Promise<void>) | undefined;
  let stopDiscovery: (() => Promise<void>) | undefined;
  try {
    const answered = new Set<string>();
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => { finish = resolve; });
    const onEvents = (events: WatchEvent<Batch>[]) => {
      for (const e of events) {
        if (e.type !== 'put') continue;
        const node = e.key.slice(`${DATA}${id}/`.length).split('/')[0]!;
        answered.add(node);
        for (const l of e.value.lines ?? []) {
          const task = byId.get(l.t);
          if (task) emit({ task, entry: { time: l.ts, stream: l.s, data: Buffer.from(l.d, 'base64') } });
        }
        // Following, the batches would pile up in the store for as long as the client reads: each goes once streamed.
        if (follow) void store.delete(e.key).catch(() => undefined);
        if (e.value.done) {
          if (e.value.error) missing.add(node);
          pending.delete(node);
          if (!pending.size && !follow) finish();
        }
      }
    };
    const rev = await store.revision();
    stopWatch = await store.watchBatches<Batch>(`${DATA}${id}/`, rev + 1, onEvents, () => finish());
    const sub: Subscription = {
      lease: leaseId, tasks, follow,
      query: { stdout: query.stdout, stderr: query.stderr, tail: query.tail, timestamps: query.timestamps, since: String(query.since), until: String(query.until) },
    };
    await store.txn([], [{ key: `${SUBS}${id}`, value: sub, lease: leaseId }]);
    if (discovering) {
      // The subscription grows, one write after another, so the nodes see every task it names.
      let updating: Promise<unknown> = Promise.resolve();
      stopDiscovery = await discover!((t) => {
        if (byId.has(t.ID)) return;
        byId.set(t.ID, t);
        sub.tasks = [...sub.tasks, t];
        const value = { ...sub };
        updating = updating.then(() => store.txn([], [{ key: `${SUBS}${id}`, value, lease: leaseId }])).catch(() => undefined);
      });
    }
    signal.addEventListener('abort', () => finish(), { once: true });
    lease.on('lost', () => finish());
    const silent = follow ? undefined : setTimeout(() => {
      for (const n of pending) if (!answered.has(n)) { missing.add(n); pending.delete(n); }
      if (!pending.size) finish();
    }, NODE_WAIT_MS);
    await finished;
    clearTimeout(silent);
    for (const n of pending) if (!follow) missing.add(n);
    return [...missing];
  } finally {
    await stopDiscovery?.().catch(() => undefined);
    await stopWatch?.().catch(() => undefined);
    await lease.revoke().catch(() => undefined);
  }
}

/** What a node's log server reads of its engine. */
export interface LocalLogs {
  /** A local container's log path and whether it runs, if it is here. */
  container(id: string): { logPath: string; running: () => boolean } | undefined;
  read(path: string, q: LogQuery, emit: (e: LogEntry) => void, follow?: { isDone: () => boolean; signal: AbortSignal }): Promise<void>;
}

/**
 * A node's side: answers the subscriptions that name tasks on this node, while the session lasts.
 */
export class LogServer {
  /** The subscriptions being answered: how to stop one, and how to read more of its tasks. */
  private readonly running = new Map<string, { ac: AbortController; add: (tasks: LogTask[]) => void }>();
  private stopWatch?: () => Promise<void>;
  private closed = false;
  private retry?: NodeJS.Timeout;

  /** `store` is asked anew at each (re)start: a session that reconnects gets a new client. */
  constructor(private readonly store: () => ClusterStore, private readonly me: () => string, private readonly local: LocalLogs, private readonly log: (m: string) => void) {}

  async start(): Promise<void> {
    if (this.closed) return;
    try {
      const store = this.store();
      const { items, revision } = await store.listAt<Subscription>(SUBS);
      for (const [key, v] of items) this.begin(key.slice(SUBS.length), v.value);
      const stop = await store.watchBatches<Subscription>(SUBS, revision + 1, (events) => {
        for (const e of events) {
          const id = e.key.slice(SUBS.length);
          if (e.type === 'put') this.begin(id, e.value);
          else this.running.get(id)?.ac.abort();
        }
      }, () => this.again());
      // Closed while the watch was being made (start is not waited for): it goes at once.
      if (this.closed) return void (await stop().catch(() => undefined));
      this.stopWatch = stop;
    } catch {
      this.again();
    }
  }

  /** The watch ended (the store went away or the client was replaced): listed and watched again soon. */
  private again(): void {
    if (this.closed) return;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => void this.stopWatch?.().catch(() => undefined).then(() => this.start()), 1000);
    this.retry.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    await this.stopWatch?.().catch(() => undefined);
    for (const r of this.running.values()) r.ac.abort();
  }

  private begin(id: string, sub: Subscription): void {
    const mine = sub.tasks.filter((t) => t.NodeID === this.me());
    const answering = this.running.get(id);
    // A followed subscription that grew: the tasks it names now are read too.
    if (answering) return answering.add(mine);
    if (!mine.length) return;
    const ac = new AbortController();
    const answer = this.answer(id, sub, mine, ac.signal);
    this.running.set(id, { ac, add: answer.add });
    void answer.done.catch((e) => this.log(`service logs: ${errorMessage(e)}`)).finally(() => this.running.delete(id));
  }

  /**
   * One subscription's answer: batches of the lines of the tasks given to `add`, in order. The
   * tasks named at the start are read as asked (tail, since); one added while following is read
   * whole, its first lines having been written before this node heard of it. A non-follow answer
   * ends with a `done` batch once its reads end; a follow lasts until the subscription goes.
   */
  private answer(id: string, sub: Subscription, first: LogTask[], signal: AbortSignal): { add: (tasks: LogTask[]) => void; done: Promise<void> } {
    let seq = 0;
    let lines: WireLine[] = [];
    let bytes = 0;
    let timer: NodeJS.Timeout | undefined;
    let writing: Promise<void> = Promise.resolve();
    const key = () => `${DATA}${id}/${this.me()}/${String(seq++).padStart(10, '0')}`;
    const write = (b: Batch) => {
      // One batch after another, so the manager sees them in the order they were read.
      writing = writing.then(() => this.store().txn([], [{ key: key(), value: b, lease: sub.lease }]).then(() => undefined));
      return writing;
    };
    const flush = () => {
      clearTimeout(timer);
      timer = undefined;
      if (!lines.length) return;
      void write({ lines }).catch(() => undefined);
      lines = [];
      bytes = 0;
    };
    const asked: LogQuery = { ...sub.query, since: BigInt(sub.query.since), until: BigInt(sub.query.until) };
    const { tail: _tail, ...whole } = asked;
    let error: string | undefined;
    const reading = new Set<string>();
    const reads: Array<Promise<void>> = [];
    let later = false;
    const add = (tasks: LogTask[]) => {
      for (const t of tasks) {
        if (reading.has(t.ID)) continue;
        reading.add(t.ID);
        const c = this.local.container(t.ContainerID);
        if (!c) continue;
        reads.push(this.local.read(c.logPath, later ? whole : asked, (e) => {
          lines.push({ t: t.ID, s: e.stream, ts: e.time, d: e.data.toString('base64') });
          bytes += e.data.length;
          if (bytes >= BATCH_BYTES) flush();
          else timer ??= setTimeout(flush, BATCH_MS);
        }, sub.follow ? { isDone: () => !c.running(), signal } : undefined).catch((e) => { error = errorMessage(e); }));
      }
      later = true;
    };
    add(first);
    const done = (async () => {
      // Reads added while these ran are awaited too.
      for (let n = 0; n < reads.length;) {
        const upTo = reads.length;
        await Promise.all(reads.slice(n, upTo));
        n = upTo;
      }
      if (sub.follow && !signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      flush();
      if (!sub.follow && !signal.aborted) await write({ done: true, ...(error ? { error } : {}) });
      else await writing.catch(() => undefined);
    })();
    return { add, done };
  }
}
