import type * as Cockatiel from 'cockatiel';
import type * as Etcd from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';
import { requireCjs } from '../util/cjs.js';
import { errorMessage } from '../util/errors.js';
import { NO_LEADER, UnavailableError } from './errors.js';
import { EndpointHealth } from './health.js';

/**
 * The cluster store: typed JSON records in etcd with their revisions, compare-and-swap, leases and
 * prefix watches. Nothing here knows what a node or a network is: the cluster, and later the
 * overlay driver, IPAM and services, use these calls with their own keys (keys.ts).
 */

export interface Versioned<T> { value: T; modRevision: number }
export interface Cmp { key: string; target: 'Mod' | 'Create' | 'Version'; value: number }
export interface TlsFiles { ca: Buffer; cert: Buffer; key: Buffer }
export type WatchEvent<T> = { type: 'put'; key: string; value: T; modRevision: number } | { type: 'delete'; key: string; modRevision: number };

/** Keys and values of a range, by key; a value that is not JSON (not berth's) is left out. */
function versioned<T>(kvs: ReadonlyArray<{ key: Buffer; value: Buffer; mod_revision: string }>): Map<string, Versioned<T>> {
  const out = new Map<string, Versioned<T>>();
  for (const kv of kvs) {
    try { out.set(kv.key.toString(), { value: JSON.parse(kv.value.toString()) as T, modRevision: Number(kv.mod_revision) }); } catch { /* a foreign value */ }
  }
  return out;
}

/** etcd's default limit on the operations of one transaction (`--max-txn-ops`). */
export const MAX_TXN_OPS = 128;
/** A call that has not answered by then is a store without quorum (or out of reach). */
const CALL_MS = 5000;
/** The longest a call waits for this node's own member to come back from a restart. */
const HOLD_MS = 15_000;
/** A read answers in a millisecond; one that takes seconds is a store without a leader. */
const READ_MS = 2000;
/** How long a watch may take to start or to be cancelled before the store is taken for unreachable. */
const WATCH_MS = 3000;
/** How long a member asked for its status directly may take to answer before it counts as down. */
const MEMBER_STATUS_MS = 1500;

/** etcd's range end for "every key with this prefix". */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  b[b.length - 1]! += 1;
  return b;
}

let lib: typeof Etcd | undefined;
let faults: typeof Cockatiel | undefined;
/** etcd3 (and gRPC under it) is loaded only by a daemon that is in a cluster. */
function etcd3(): typeof Etcd {
  return (lib ??= requireCjs('etcd3') as typeof Etcd);
}

export class ClusterStore {
  readonly client: Etcd.Etcd3;
  /** This node's own member (a manager's), for reads when the cluster has no leader. */
  private readonly localClient?: Etcd.Etcd3;

  /** Which members answer, when there are several to choose from. */
  private readonly health?: EndpointHealth;
  /** A client of one member, with this node's credentials and no retries (a probe's). */
  private readonly memberClient: (hosts: string[]) => Etcd.Etcd3;

  constructor(readonly endpoints: string[], tls?: TlsFiles, local?: string) {
    const { Etcd3, isRecoverableError } = etcd3();
    const c = (faults ??= requireCjs('cockatiel') as typeof Cockatiel);
    const credentials = {
      ...(tls ? { credentials: { rootCertificate: tls.ca, certChain: tls.cert, privateKey: tls.key } } : {}),
      // gRPC refuses an answer over 4 MB by default: a list of the services, or a host's relist,
      // failed for good once a cluster held about 6,000 services (bench/svcmany.js). etcdctl
      // takes answers of any size too.
      grpcOptions: { 'grpc.max_receive_message_length': -1 },
    };
    this.memberClient = (hosts) => new Etcd3({ hosts, ...credentials, faultHandling: { host: () => c.noop, global: c.noop } });
    if (endpoints.length > 1) this.health = new EndpointHealth(endpoints, (e) => this.memberClient([e]), c);
    const breaker = () => c.circuitBreaker(c.handleWhen((e) => isRecoverableError(e) && !/unhealthy cluster/.test(e.message)), { halfOpenAfter: 1000, breaker: new c.ConsecutiveBreaker(3) });
    this.client = new Etcd3({
      // etcd3's default breaker shuts a host out for 5 s after three failures: with one endpoint,
      // or while a member rejoins, that is 5 s of a store that looks dead. A second is enough to
      // steer calls to the other members.
      faultHandling: {
        // etcd's "unhealthy cluster" (a member change refused for a moment) says nothing of the
        // host's health: it must not shut the host out.
        host: (h) => (this.health ? this.health.gate(h, breaker()) : c.noop),
        global: c.retry(c.handleWhen(isRecoverableError), { maxAttempts: 3 }),
      },
      hosts: endpoints,
      ...credentials,
      // Streams (watches, keepalives) live on; single calls get a deadline so a store without
      // quorum answers with an error instead of holding the API request forever.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_MS }),
    });
    if (local) {
      this.localClient = new Etcd3({
        hosts: [local],
        ...credentials,
        faultHandling: { host: () => c.noop, global: c.noop },
        defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + READ_MS }),
      });
    }
  }

  close(): void {
    this.health?.close();
    this.client.close();
    this.localClient?.close();
  }

  /** Set while this node's own member restarts (a CA rotation): calls wait for it, bounded. */
  private held?: Promise<unknown>;

  /**
   * Holds calls while `restart` runs: with a single manager its member is the whole store, and a
   * read during its restart would be a 503 that Docker (whose raft never restarts) never gives.
   */
  holdWhile(restart: Promise<unknown>): void {
    const p = restart.catch(() => undefined).finally(() => { if (this.held === p) this.held = undefined; });
    this.held = p;
  }

  /** Runs a store call, turning a lost quorum or an unreachable store into Docker's 503. */
  async call<T>(fn: () => Promise<T>): Promise<T> {
    if (this.held) await Promise.race([this.held, new Promise((r) => setTimeout(r, HOLD_MS).unref())]);
    try {
      return await retryAuthOld(fn);
    } catch (e) {
      const E = etcd3();
      if (e instanceof E.GRPCDeadlineExceededError || e instanceof E.GRPCUnavailableError || /deadline|no leader|circuit/i.test(errorMessage(e))) {
        console.error(`berthd: cluster store: ${errorMessage(e)}`);
        throw Object.assign(new UnavailableError(NO_LEADER), { cause: e });
      }
      throw e;
    }
  }

  /**
   * Reads are linearizable while the store has a leader. Without one (quorum lost) they are
   * served from a member's own copy, as Docker's managers read their local raft store: reads keep
   * working, changes do not. `degraded` says which it was, for views that must not claim liveness
   * they could not check (leases do not expire without a leader).
   */
  private degradedAt = 0;
  private degradedUntil = 0;
  get degraded(): boolean {
    if (Date.now() >= this.degradedUntil) return false;
    // A member that named a leader after the reads failed: the election is over, so the next read
    // may be linearizable again (etcd's election timeout is well under a read's deadline, so that
    // leader is not the one that went quiet).
    return !(this.health && this.health.leaderSeenAt > this.degradedAt);
  }

  private async read<T>(fn: (client: Etcd.Etcd3, serializable: boolean) => Promise<T>): Promise<T> {
    if (!this.degraded) {
      const t0 = Date.now();
      try {
        return await this.call(() => fn(this.client, false));
      } catch (e) {
        if (!(e instanceof UnavailableError)) throw e;
        // It may have gone to a member that fell silent meanwhile: calls now skip it, so one
        // more try tells a store without a leader from one member lost.
        if (this.health && this.health.lastSickAt >= t0) {
          try { return await this.call(() => fn(this.client, false)); } catch (e2) { if (!(e2 instanceof UnavailableError)) throw e2; }
        }
        this.degradedAt = Date.now();
        this.degradedUntil = this.degradedAt + 3000;
      }
    }
    return this.call(() => fn(this.localClient ?? this.client, true));
  }

  async get<T>(key: string): Promise<Versioned<T> | undefined> {
    const r = await this.read((c, ser) => c.get(key).serializable(ser).options({ deadline: Date.now() + READ_MS }).exec());
    const kv = r.kvs[0];
    return kv ? { value: JSON.parse(kv.value.toString()) as T, modRevision: Number(kv.mod_revision) } : undefined;
  }

  async list<T>(prefix: string): Promise<Map<string, Versioned<T>>> {
    const r = await this.read((c, ser) => c.getAll().prefix(prefix).serializable(ser).options({ deadline: Date.now() + READ_MS }).exec());
    const out = new Map<string, Versioned<T>>();
    for (const kv of r.kvs) out.set(kv.key.toString(), { value: JSON.parse(kv.value.toString()) as T, modRevision: Number(kv.mod_revision) });
    return out;
  }

  /**
   * Several keys and prefixes read in one round trip (a read-only transaction: one linearizable
   * read for all of them, or one serializable read without a leader). An API call that needs a
   * node, the cluster and the presence keys costs one store read, not three.
   */
  async readMany(reads: Array<{ key: string; prefix?: boolean }>): Promise<Array<Map<string, Versioned<unknown>>>> {
    const r = await this.read((c, ser) => c.kv.txn({
      compare: [], failure: [],
      success: reads.map((x) => ({ request_range: { key: Buffer.from(x.key), ...(x.prefix ? { range_end: prefixEnd(x.key) } : {}), serializable: ser } })),
    }, { deadline: Date.now() + READ_MS }));
    return r.responses.map((op) => {
      const out = new Map<string, Versioned<unknown>>();
      for (const kv of op.response_range.kvs) out.set(kv.key.toString(), { value: JSON.parse(kv.value.toString()), modRevision: Number(kv.mod_revision) });
      return out;
    });
  }

  /** Prefixes read together, linearizable, with the revision they were read at (a watch from the next one misses nothing). */
  async readManyAt(prefixes: string[]): Promise<{ revision: number; found: Array<Map<string, Versioned<unknown>>> }> {
    const r = await this.call(() => this.client.kv.txn({
      compare: [], failure: [], success: prefixes.map((p) => ({ request_range: { key: Buffer.from(p), range_end: prefixEnd(p) } })),
    }));
    return {
      revision: Number(r.header.revision),
      found: r.responses.map((op) => versioned(op.response_range.kvs)),
    };
  }

  /** Keys read together, linearizable, with the revision they were read at (a watch from the next one misses nothing). */
  async readAt(keys: string[]): Promise<{ revision: number; found: Array<Versioned<unknown> | undefined> }> {
    const r = await this.call(() => this.client.kv.txn({
      compare: [], failure: [], success: keys.map((k) => ({ request_range: { key: Buffer.from(k) } })),
    }));
    return {
      revision: Number(r.header.revision),
      found: r.responses.map((op) => {
        const kv = op.response_range.kvs[0];
        return kv ? { value: JSON.parse(kv.value.toString()), modRevision: Number(kv.mod_revision) } : undefined;
      }),
    };
  }

  async put(key: string, value: unknown): Promise<number> {
    const r = await this.call(() => this.client.put(key).value(JSON.stringify(value)).exec());
    return Number(r.header.revision);
  }

  /** Writes only if the key does not exist; false when it does. */
  async create(key: string, value: unknown): Promise<boolean> {
    const r = await this.call(() => this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(JSON.stringify(value))).commit());
    return r.succeeded;
  }

  /** Writes only if the key is still at `modRevision` (optimistic concurrency, Docker's version index). */
  async update(key: string, value: unknown, modRevision: number): Promise<boolean> {
    const r = await this.call(() => this.client.if(key, 'Mod', '==', modRevision).then(this.client.put(key).value(JSON.stringify(value))).commit());
    return r.succeeded;
  }

  /** A lease of `ttlSec` that nobody keeps alive here: what is written under it lapses unless taken over. */
  async grantLease(ttlSec: number): Promise<string> {
    const lease = this.client.lease(ttlSec, { autoKeepAlive: false });
    lease.on('lost', () => undefined);
    try {
      return await this.call(() => lease.grant());
    } finally {
      lease.release();
    }
  }

  /** Several writes and deletes as one transaction: all or nothing. */
  async apply(puts: Array<[string, unknown]>, deletes: string[] = []): Promise<void> {
    const ops = [
      ...puts.map(([k, v]) => ({ request_put: { key: Buffer.from(k), value: Buffer.from(JSON.stringify(v)) } })),
      ...deletes.map((k) => ({ request_delete_range: { key: Buffer.from(k) } })),
    ];
    await this.call(() => this.client.kv.txn({ compare: [], success: ops, failure: [] }));
  }

  /**
   * One transaction with conditions: `cmp` are compared first, and only if all hold are the puts
   * (each under its lease, if given) and deletes applied. Returns whether they held and the
   * store's revision after it, which is the revision of the writes when they happened.
   */
  async txn(cmp: Cmp[], puts: Array<{ key: string; value: unknown; lease?: string }>, deletes: string[] = []): Promise<{ ok: boolean; revision: number }> {
    const field = { Mod: 'mod_revision', Create: 'create_revision', Version: 'version' } as const;
    const r = await this.call(() => this.client.kv.txn({
      compare: cmp.map((c) => ({ key: Buffer.from(c.key), target: c.target, result: 'Equal', [field[c.target]]: String(c.value) })),
      success: [
        ...puts.map((p) => ({ request_put: { key: Buffer.from(p.key), value: Buffer.from(JSON.stringify(p.value)), ...(p.lease ? { lease: p.lease } : {}) } })),
        ...deletes.map((k) => ({ request_delete_range: { key: Buffer.from(k) } })),
      ],
      failure: [],
    }));
    return { ok: r.succeeded, revision: Number(r.header.revision) };
  }

  /** A list with the revision it was read at: a watch from the revision after misses nothing. */
  async listAt<T>(prefix: string): Promise<{ items: Map<string, Versioned<T>>; revision: number }> {
    const r = await this.call(() => this.client.getAll().prefix(prefix).exec());
    return { items: versioned<T>(r.kvs), revision: Number(r.header.revision) };
  }

  /**
   * Watches a prefix from a revision on, delivering each response's events together (one batch
   * is one step of the store's history). `onLost` hears of a watch the store cancelled (its start
   * revision was compacted away): the caller lists again.
   */
  async watchBatches<T>(prefix: string, fromRevision: number, onBatch: (events: WatchEvent<T>[]) => void, onLost: (e: Error) => void): Promise<() => Promise<void>> {
    const { w, stop, live } = await this.openWatch(prefix, fromRevision);
    w.on('data', (res) => {
      if (!live()) return;
      const events: WatchEvent<T>[] = [];
      for (const ev of res.events) {
        const key = ev.kv.key.toString();
        const modRevision = Number(ev.kv.mod_revision);
        if (ev.type === 'Delete') { events.push({ type: 'delete', key, modRevision }); continue; }
        try { events.push({ type: 'put', key, value: JSON.parse(ev.kv.value.toString()) as T, modRevision }); } catch { /* a foreign value */ }
      }
      if (events.length) onBatch(events);
    });
    w.on('error', (e) => { if (live()) onLost(e); });
    return stop;
  }

  /**
   * A watcher, and a stop that always ends. etcd3's cancel writes a cancel request and waits for
   * the server's answer: on a stream whose connection died without a word (a host cut off) the
   * answer never comes, and a relist waiting on it hung for good, its host's view frozen with no
   * log (a removed network stayed listed). A stopped watcher's late events are dropped, so a
   * caller that listed again never sees the older history after the newer.
   */
  private async openWatch(prefix: string, fromRevision: number): Promise<{ w: Etcd.Watcher; stop: () => Promise<void>; live: () => boolean }> {
    let stopped = false;
    const made = this.client.watch().prefix(prefix).startRevision(String(fromRevision)).create();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new UnavailableError(`watching the cluster store: no answer in ${WATCH_MS} ms`)), WATCH_MS); });
    let w: Etcd.Watcher;
    try {
      w = await Promise.race([made, timedOut]);
    } catch (e) {
      // One that connects later is cancelled then, not left delivering to nobody.
      void made.then((late) => late.cancel()).catch(() => undefined);
      throw e;
    } finally {
      clearTimeout(timer);
    }
    const stop = async (): Promise<void> => {
      if (stopped) return;
      stopped = true;
      await Promise.race([w.cancel().catch(() => undefined), sleep(WATCH_MS)]);
      w.removeAllListeners();
      // An error emitted with no listener would throw in berthd.
      w.on('error', () => undefined);
    };
    return { w, stop, live: () => !stopped };
  }

  async delete(key: string): Promise<void> {
    await this.call(() => this.client.delete().key(key).exec());
  }

  async deletePrefix(prefix: string): Promise<void> {
    await this.call(() => this.client.delete().prefix(prefix).exec());
  }

  /**
   * Watches a prefix from a revision on (the one after a list, so nothing falls between).
   * Returns a stop function.
   */
  async watch<T>(prefix: string, fromRevision: number, onEvent: (e: WatchEvent<T>) => void): Promise<() => Promise<void>> {
    const { w, stop, live } = await this.openWatch(prefix, fromRevision);
    w.on('put', (kv) => {
      if (!live()) return;
      try { onEvent({ type: 'put', key: kv.key.toString(), value: JSON.parse(kv.value.toString()) as T, modRevision: Number(kv.mod_revision) }); } catch { /* a foreign value */ }
    });
    w.on('delete', (kv) => { if (live()) onEvent({ type: 'delete', key: kv.key.toString(), modRevision: Number(kv.mod_revision) }); });
    w.on('error', () => undefined);
    return stop;
  }

  async revision(): Promise<number> {
    // A key every node may read (workers are kept to /berth/v1/).
    const r = await this.call(() => this.client.get('/berth/v1/cluster').exec());
    return Number(r.header.revision);
  }

  // Membership of the store's own etcd cluster (managers run its members).
  async members(): Promise<Array<{ ID: string; name: string; peerURLs: string[]; clientURLs: string[]; isLearner: boolean }>> {
    const r = await this.call(() => this.client.cluster.memberList({}));
    return r.members.map((m) => ({ ID: m.ID, name: m.name, peerURLs: m.peerURLs, clientURLs: m.clientURLs, isLearner: m.isLearner }));
  }

  /**
   * Whether each member (by its client URLs) is up: asked for its status directly, all at once, it
   * answers within MEMBER_STATUS_MS and knows a leader. This is quorum as etcd counts it, which
   * the berthd beside a member says nothing of: a member outlives its berthd, and a berthd may run
   * beside a member that died.
   */
  async membersUp(clientUrls: string[][]): Promise<boolean[]> {
    return Promise.all(clientUrls.map(async (urls) => {
      if (!urls.length) return false;
      const client = this.memberClient(urls);
      try {
        return (await client.maintenance.status({ deadline: Date.now() + MEMBER_STATUS_MS })).leader !== '0';
      } catch {
        return false;
      } finally {
        client.close();
      }
    }));
  }

  /**
   * etcd refuses a membership change until every voting member has been connected for its health
   * interval (5 s, --strict-reconfig-check): right after a join, a promotion or a restart it says
   * "unhealthy cluster" for a moment, so that answer is waited out.
   */
  private async reconfig<T>(fn: () => Promise<T>, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (!/unhealthy cluster|not enough started members|circuit breaker is open/.test(errorMessage(e)) || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async addLearner(peerURL: string): Promise<{ id: string; members: Array<{ ID: string; name: string; peerURLs: string[] }> }> {
    const r = await this.call(() => this.reconfig(() => this.client.cluster.memberAdd({ peerURLs: [peerURL], isLearner: true })));
    return { id: r.member.ID, members: r.members.map((m) => ({ ID: m.ID, name: m.name, peerURLs: m.peerURLs })) };
  }

  async promote(id: string): Promise<void> {
    await this.call(() => this.client.cluster.memberPromote({ ID: id }));
  }

  async removeMember(id: string): Promise<void> {
    await this.call(() => this.reconfig(() => this.client.cluster.memberRemove({ ID: id })));
  }

  /** The etcd member that leads now, asked of any reachable member. */
  async leader(): Promise<string | undefined> {
    try {
      const r = await this.call(() => this.client.maintenance.status());
      return r.leader === '0' ? undefined : r.leader;
    } catch { return undefined; }
  }

  /**
   * The leader as known a moment ago (at most `maxAgeMs`): views mark the leading manager with
   * it, and asking every `node ls` cost a status call more than the reads themselves.
   */
  private leaderSeen?: { at: number; value: Promise<string | undefined> };
  leaderRecent(maxAgeMs = 1000): Promise<string | undefined> {
    if (!this.leaderSeen || Date.now() - this.leaderSeen.at > maxAgeMs) this.leaderSeen = { at: Date.now(), value: this.leader() };
    return this.leaderSeen.value;
  }
}

/**
 * etcd checks a request's permissions against the access rules as they were when the request
 * arrived, and refuses it when they changed before it applied ("revision of auth store is old"):
 * any write racing a join (a new node's user and role) met that. The refusal comes before the
 * request does anything, so it is sent again.
 */
export async function retryAuthOld<T>(fn: () => Promise<T>, tries = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= tries || !/revision of auth store is old/.test(errorMessage(e))) throw e;
      await sleep(i * 2);
    }
  }
}

/**
 * Writes that need no atomicity between their groups (a host's endpoints written again, stale
 * keys withdrawn), in as many transactions as etcd's limit of 128 operations per transaction
 * asks (`--max-txn-ops`): one transaction for all of them failed as soon as a host held more
 * than 64 endpoints, and a host that could not write its endpoints again after a lease lapsed
 * stopped following the cluster. A group (an endpoint and its address claim) is never split.
 * Returns each group's revision, in order.
 */
export async function writeGroups(store: Pick<ClusterStore, 'txn'>, groups: Array<{ puts?: Array<{ key: string; value: unknown; lease?: string }>; deletes?: string[] }>): Promise<number[]> {
  const revisions: number[] = [];
  let batch: typeof groups = [];
  let ops = 0;
  const flush = async () => {
    if (!batch.length) return;
    const r = await store.txn([], batch.flatMap((g) => g.puts ?? []), batch.flatMap((g) => g.deletes ?? []));
    for (let i = 0; i < batch.length; i++) revisions.push(r.revision);
    batch = [];
    ops = 0;
  };
  for (const g of groups) {
    const size = (g.puts?.length ?? 0) + (g.deletes?.length ?? 0);
    if (size > MAX_TXN_OPS) throw new Error(`a group of ${size} writes is more than one transaction takes (${MAX_TXN_OPS})`);
    if (ops + size > MAX_TXN_OPS) await flush();
    batch.push(g);
    ops += size;
  }
  await flush();
  return revisions;
}

/** Deletes keys, in transactions of etcd's size (see writeGroups); the revision of the last. */
export async function deleteKeys(store: Pick<ClusterStore, 'txn'>, keys: string[]): Promise<number> {
  const r = await writeGroups(store, keys.map((k) => ({ deletes: [k] })));
  return r.at(-1) ?? 0;
}
