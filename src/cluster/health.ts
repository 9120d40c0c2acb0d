import type * as Cockatiel from 'cockatiel';
import type * as Etcd from 'etcd3';

/**
 * Which of the store's endpoints answer now, for a client of several members. etcd3 picks a member
 * at random for each call and stream, and gRPC notices a member whose packets are dropped (a
 * manager cut off the underlay) only when a call's deadline passes; a stream on it (a lease
 * keepalive, a watch) just goes quiet. A lease kept alive through that member lapses while the
 * node is fine, and every node that happened to pick it shows Down (etcd's own clientv3 avoids
 * this with gRPC keepalives and a balancer that sends nothing to a connection that stopped
 * answering). Here each member is asked for its status on a connection of its own a few times a
 * second; one that does not answer in time, or that knows no leader, is sick: calls skip it while
 * another member is well, and the streams that run on it are cancelled, so etcd3 opens them again
 * on a member that answers. It is well again when it answers.
 */

type Stream = { cancel(): void; once(ev: string, cb: () => void): unknown };
const isStream = (v: unknown): v is Stream => typeof (v as Stream | undefined)?.cancel === 'function' && typeof (v as Stream).once === 'function';

export class EndpointHealth {
  private readonly sick = new Set<string>();
  private readonly streams = new Map<string, Set<Stream>>();
  private readonly probes = new Map<string, Etcd.Etcd3>();
  private readonly asking = new Set<string>();
  private timer?: NodeJS.Timeout;
  private closed = false;
  /** When a member last fell sick: a call that failed on it is worth one more try elsewhere. */
  lastSickAt = 0;
  /** When a member last answered that it knows a leader: the store has one again after an election. */
  leaderSeenAt = 0;

  constructor(
    private readonly endpoints: string[],
    private readonly connect: (endpoint: string) => Etcd.Etcd3,
    private readonly faults: typeof Cockatiel,
    private readonly o: { periodMs: number; deadlineMs: number } = { periodMs: 250, deadlineMs: 750 },
  ) {
    this.timer = setInterval(() => { for (const e of this.endpoints) void this.probe(e); }, o.periodMs);
    this.timer.unref();
  }

  isSick(endpoint: string): boolean { return this.sick.has(endpoint); }

  /** Whether any member is well: with none, calls go everywhere as before (nothing better to do). */
  private anyWell(): boolean { return this.endpoints.some((e) => !this.sick.has(e)); }

  /**
   * The fault policy of one endpoint (etcd3's `faultHandling.host`): refuses calls while the
   * endpoint is sick and another is well (etcd3 then tries the next one), and notes the streams
   * opened through it.
   */
  gate(endpoint: string, inner: Cockatiel.IPolicy): Cockatiel.IPolicy {
    const self = this;
    return {
      onSuccess: inner.onSuccess, onFailure: inner.onFailure,
      async execute<T>(fn: (ctx: Cockatiel.IDefaultPolicyContext) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
        if (self.sick.has(endpoint) && self.anyWell()) throw new self.faults.BrokenCircuitError();
        const r = await inner.execute(fn, signal);
        if (isStream(r)) self.track(endpoint, r);
        return r;
      },
    } as Cockatiel.IPolicy;
  }

  private track(endpoint: string, s: Stream): void {
    let set = this.streams.get(endpoint);
    if (!set) this.streams.set(endpoint, (set = new Set()));
    set.add(s);
    const drop = () => set!.delete(s);
    s.once('close', drop);
    s.once('status', drop);
    s.once('error', drop);
  }

  private async probe(endpoint: string): Promise<void> {
    // One still waiting has had no answer yet: it decides when its deadline passes.
    if (this.asking.has(endpoint) || this.closed) return;
    this.asking.add(endpoint);
    let client = this.probes.get(endpoint);
    if (!client) this.probes.set(endpoint, (client = this.connect(endpoint)));
    let well: boolean;
    try {
      const s = await client.maintenance.status({ deadline: Date.now() + this.o.deadlineMs });
      well = s.leader !== '0';
      if (well) this.leaderSeenAt = Date.now();
    } catch (e) {
      // An answer that is a refusal (a member that lets this node ask nothing) still says it is
      // reachable; only silence or a broken connection is sickness.
      well = !/deadline|unavailable|cancel|connect|closed/i.test((e as Error).message ?? '');
      // A connection that let a call run into its deadline may be dead: the next probe dials anew.
      if (!well) {
        this.probes.delete(endpoint);
        client.close();
      }
    } finally {
      this.asking.delete(endpoint);
    }
    if (this.closed) return;
    if (well) {
      this.sick.delete(endpoint);
      return;
    }
    if (this.sick.has(endpoint)) return;
    this.sick.add(endpoint);
    this.lastSickAt = Date.now();
    if (!this.anyWell()) return;
    for (const s of this.streams.get(endpoint) ?? []) s.cancel();
    this.streams.delete(endpoint);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const c of this.probes.values()) c.close();
    this.probes.clear();
  }
}
