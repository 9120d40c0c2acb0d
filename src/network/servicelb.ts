import { dropUdpFlowsTo } from '../kernel/conntrack.js';
import { nftApply } from '../kernel/nft.js';
import { nativeAddon } from '../util/cjs.js';
import { run } from '../util/exec.js';
import { errorMessage } from '../util/errors.js';
import { forEachLimited } from '../util/serial.js';
import { elementHex, VIP_KIND, type TableKind } from './lbkinds.js';
import { elementArgs } from './lbbatch.js';
import { arrange, arrangeOne, bucketOf, changedVips, countersOf, hitKey, lbChanges, lbScript, parseCounters, SPARE_SLOTS, type Entries, type VipEntry } from './lbtable.js';

export { arrange, countersOf, lbScript, lbTable, parseCounters, LB_TABLE, type VipEntry } from './lbtable.js';

/** Connections a node's balancers sent to one backend of a service. */
export interface BackendHits { service: string; backend: string; connections: number }

/** An element a `~` argument deleted, with its count as the commit left it. */
interface GoneElement { set: string; key: string; packets: number }
const addon = nativeAddon<{ nftsetIn(netns: string, table: string, args: string[]): Promise<GoneElement[]> }>('berth-netns.node', 'service balancers');

type Change = readonly [VipEntry | undefined, VipEntry | undefined];

/**
 * The slot elements the changed VIPs had, by `slot<i>/<key in hex>` (as elementArgs writes them),
 * with the counter each is, and whether its backend stays but moves to a lower slot (its VIP has
 * fewer backends now). Their counts are read as the change deletes them: a moved backend's would
 * otherwise lose its connections since the last scrape on every scale-down, and a leaving one's
 * are then counted to its last connection.
 */
interface OldElement { slot: string; key: string; counter: string; moved: boolean }
function oldElements(changed: Change[]): Map<string, OldElement> {
  const out = new Map<string, OldElement>();
  for (const [old, e] of changed) {
    if (!old) continue;
    const stays = e && e.service === old.service ? e.backends : [];
    old.backends.forEach((ip, slot) => {
      const now = stays.indexOf(ip);
      out.set(`slot${slot}/${elementHex(old.vip)}`, { slot: `slot${slot}`, key: old.vip, counter: hitKey(old.service, old.vip, slot, ip), moved: now >= 0 && now !== slot });
    });
  }
  return out;
}

/**
 * A change of elements, bucket chains and their rules (all but a new slot or a table made whole)
 * goes over netlink from berthd itself, on a socket the addon makes inside the sandbox
 * (native/berth-nftsetin.c): it was a berth-nftset process, 3-10 ms quiet and 50 ms and more
 * under load, on every node, for each task that came or went, and an `nft` run (20-30 ms, more
 * with many services) for each service made or removed. The
 * old elements are deleted with the kernel's echo of their counters (`~`), as the commit leaves
 * them: there was an `nft get element` of the moved ones before each scale-down (16-23 ms under
 * load), and the connections between that read and the change were lost. The rest is an `nft`
 * script, with the moved counters read just before it. Returns the counts read.
 */
async function applyScript(script: string, netns: string, known: boolean, kind: TableKind, old: Map<string, OldElement>): Promise<Map<string, number>> {
  const args = known ? elementArgs(script, kind) : undefined;
  if (!args) {
    const moved = [...old.values()].filter((m) => m.moved);
    const counts = moved.length ? await readMoved(netns, moved, kind) : new Map<string, number>();
    await nftApply(script, { netns });
    return counts;
  }
  if (args.length <= 1) return new Map();
  const echoed = args.map((a, i) => (i > 0 && a.startsWith('-') && old.has(a.slice(1)) ? `~${a.slice(1)}` : a));
  const gone = await addon().nftsetIn(netns, echoed[0]!, echoed.slice(1));
  const counts = new Map<string, number>();
  for (const g of gone) {
    const m = old.get(`${g.set}/${g.key}`);
    if (m) counts.set(m.counter, g.packets);
  }
  return counts;
}

/** The moved elements' counts read before an `nft` script changes them: one `nft get element` per slot map. */
async function readMoved(netns: string, moved: OldElement[], kind: TableKind): Promise<Map<string, number>> {
  // By slot map, each key's counter.
  const bySlot = new Map<string, Map<string, string>>();
  for (const m of moved) bySlot.set(m.slot, (bySlot.get(m.slot) ?? new Map<string, string>()).set(m.key, m.counter));
  const out = new Map<string, number>();
  for (const [slot, counters] of bySlot) {
    const r = await run('nft', ['get', 'element', 'ip', kind.table, slot, `{ ${[...counters.keys()].join(', ')} }`], { netns });
    for (const m of r.stdout.matchAll(/([\w.]+(?: \. [\w.]+)*) counter packets (\d+) bytes \d+ : /g)) {
      const counter = counters.get(m[1]!);
      if (counter) out.set(counter, Number(m[2]));
    }
  }
  return out;
}

async function readCounters(netns: string, entries: Entries, kind: TableKind): Promise<Map<string, number>> {
  const r = await run('nft', ['-j', 'list', 'table', 'ip', kind.table], { netns });
  if (r.code !== 0) throw new Error(r.stderr.trim() || `nft exited ${r.code}`);
  return parseCounters(r.stdout, entries);
}

/**
 * What berth applied in a sandbox: the arranged entries by VIP, how many VIPs have each number of
 * backends (the slots needed are the largest, which a patch of a few VIPs must know without
 * walking the others), the slots the table has (`built`: at least those, see `slotsBuilt`), each
 * element's count as last read, how many slots hold each backend, and the balanced VIPs of each
 * bucket chain (which a patch writes again whole when one of them changes).
 */
interface Applied { netns: string; entries: Map<string, VipEntry>; lengths: Map<number, number>; built: number; counted: Map<string, number>; uses: Map<string, number>; buckets: BucketIndex }

type BucketIndex = Map<number, Map<string, VipEntry>>;
function indexBuckets(entries: Iterable<VipEntry>): BucketIndex {
  const index: BucketIndex = new Map();
  for (const e of entries) place(index, e);
  return index;
}
/** A VIP into its bucket's entry of the index, if it is balanced (has backends; one without is in no bucket chain). */
function place(index: BucketIndex, e: VipEntry): void {
  if (!e.backends.length) return;
  const b = bucketOf(e.vip);
  const members = index.get(b) ?? new Map<string, VipEntry>();
  index.set(b, members.set(e.vip, e));
}
function unplace(index: BucketIndex, e: VipEntry): void {
  const b = bucketOf(e.vip);
  const members = index.get(b);
  if (members?.delete(e.vip) && !members.size) index.delete(b);
}

/**
 * A change of some of a sandbox's VIPs only: `entries` as they are now (the others stay as they
 * were applied), `removed` VIPs that went (any of them also in `entries` stays). `whole` gives
 * every entry of the sandbox, for a sandbox whose table berth does not know (yet, or any more).
 */
export interface LbPatch { netns: string; entries: VipEntry[]; removed: string[]; whole: () => VipEntry[] }

const slotsIn = (lengths: Map<number, number>) => Math.max(0, ...lengths.keys());
/** The slots a table has after a change: what its VIPs need and the spare when made whole (lbTable), else also any it had (lbtable's `slotsBuilt`). */
const builtAfter = (whole: boolean, had: number, lengths: Map<number, number>) => (whole ? slotsIn(lengths) + SPARE_SLOTS : Math.max(had, slotsIn(lengths)));
function countLength(lengths: Map<number, number>, n: number, by: number): void {
  const c = (lengths.get(n) ?? 0) + by;
  if (c > 0) lengths.set(n, c);
  else lengths.delete(n);
}

/**
 * The balancer tables of this host's sandboxes, each changed in one transaction when what it
 * should hold changed (connections keep their conntrack entries, new ones see the new backends).
 * A namespace takes its table with it when it goes.
 *
 * Each backend's connections are counted in each sandbox; `hits()` sums them over the sandboxes.
 * The count a sandbox or a counter had when it went is kept, so a backend's total never goes down
 * while this berthd runs (Prometheus would take a drop for a restart of the counter): a counter
 * that a change of elements deletes is read as it goes (see `oldElements`); one that goes by an
 * `nft` script (a VIP removed, a sandbox gone) keeps what the last scrape read, as reading all
 * counters is a listing of the whole table, which a change of the balancer must not wait for (a
 * backend that moves to a lower slot is still read before such a script).
 */
export class ServiceBalancers {
  private readonly applied = new Map<string, Applied>();
  private readonly retired = new Map<string, number>();
  private readonly identity = new Map<string, { service: string; backend: string }>();
  private queue: Promise<void> = Promise.resolve();
  private flows: Promise<void> = Promise.resolve();

  /** `kind`: the VIPs of container sandboxes unless told (the routing mesh's ports are the other kind). */
  constructor(private readonly log: (m: string) => void, private readonly kind: TableKind = VIP_KIND) {}

  /**
   * Makes these sandboxes' tables agree with `want` (container id → namespace and entries);
   * forgets the sandboxes `gone`, or every one not listed when `all`.
   */
  sync(want: Map<string, { netns: string; entries: VipEntry[] }>, all: boolean, gone: string[] = []): Promise<void> {
    return this.serial(async () => {
      for (const id of all ? [...this.applied.keys()].filter((id) => !want.has(id)) : gone) this.forget(id);
      await Promise.all([...want].map(([id, w]) => this.syncOne(id, w.netns, w.entries)));
    });
  }

  /**
   * Changes only the VIPs a patch names in each of these sandboxes (the others are left as
   * applied, unread): a backend change at 10,000 services costs what it costs at 100. Patches and
   * syncs apply in the order they are called.
   */
  patch(want: Map<string, LbPatch>): Promise<void> {
    return this.serial(async () => {
      // A batch that changed no service still hands over every sandbox (so that a lost table is
      // made whole): those it has nothing for are passed over here, not each in a promise of its own.
      const acts = [...want].filter(([id, p]) => p.entries.length || p.removed.length || this.applied.get(id)?.netns !== p.netns);
      await Promise.all(acts.map(async ([id, p]) => {
        const had = this.applied.get(id);
        if (!had || had.netns !== p.netns) return this.syncOne(id, p.netns, p.whole());
        const changed: Change[] = [];
        const named = new Set<string>();
        for (const e of p.entries) {
          named.add(e.vip);
          const old = had.entries.get(e.vip);
          const now = arrangeOne(old, e);
          if (now !== old) changed.push([old, now]);
        }
        for (const vip of p.removed) {
          const old = had.entries.get(vip);
          if (old && !named.has(vip)) changed.push([old, undefined]);
        }
        if (!changed.length) return;
        const wasBuilt = had.built;
        const wasEmpty = !had.entries.size;
        // Merged in place: a sandbox whose change fails is forgotten, and made whole at its next change.
        const hadBucket = new Map<number, boolean>();
        for (const [old, e] of changed) {
          const b = bucketOf((old ?? e)!.vip);
          if (!hadBucket.has(b)) hadBucket.set(b, had.buckets.has(b));
          if (old) { had.entries.delete(old.vip); countLength(had.lengths, old.backends.length, -1); unplace(had.buckets, old); }
          if (e) { had.entries.set(e.vip, e); countLength(had.lengths, e.backends.length, 1); place(had.buckets, e); }
        }
        // A table that was not there, or goes: made whole, or deleted.
        const whole = wasEmpty || !had.entries.size;
        const built = builtAfter(whole, wasBuilt, had.lengths);
        const around = () => ({ had: (b: number) => hadBucket.get(b) ?? had.buckets.has(b), now: (b: number) => [...(had.buckets.get(b)?.values() ?? [])] });
        const script = whole ? lbScript(undefined, [...had.entries.values()], 0, this.kind) : lbChanges(changed, wasBuilt, built, this.kind, around);
        await this.commit(id, p.netns, had, had.entries, had.lengths, built, changed, script, had.buckets);
      }));
    });
  }

  private async syncOne(id: string, netns: string, want: VipEntry[]): Promise<void> {
    let had = this.applied.get(id);
    if (had && had.netns !== netns) { this.forget(id); had = undefined; }
    if (!had?.entries.size && !want.length) {
      // Known to have no table, so that a patch need not ask for the whole of a sandbox on no service's network.
      if (!had) this.applied.set(id, { netns, entries: new Map(), lengths: new Map(), built: 0, counted: new Map(), uses: new Map(), buckets: new Map() });
      return;
    }
    const entries = arrange(had?.entries, want);
    const script = lbScript(had?.entries, entries, had?.built, this.kind);
    if (had && !script) return;
    const changed = had ? changedVips(had.entries, entries) : entries.map((e) => [undefined, e] as const);
    const lengths = new Map<number, number>();
    for (const e of entries) countLength(lengths, e.backends.length, 1);
    const built = builtAfter(!had?.entries.size || !entries.length, had?.built ?? 0, lengths);
    await this.commit(id, netns, had, new Map(entries.map((e) => [e.vip, e])), lengths, built, changed, script, indexBuckets(entries));
  }

  /** Applies a sandbox's script and keeps its counters' and backends' books by the VIPs it changed. */
  private async commit(id: string, netns: string, had: Applied | undefined, entries: Map<string, VipEntry>, lengths: Map<number, number>, built: number, changed: Change[], script: string, buckets: BucketIndex): Promise<void> {
    try {
      let remade = !had;
      const read = await applyScript(script, netns, !!had, this.kind, had ? oldElements(changed) : new Map<string, OldElement>()).catch(async (e) => {
        if (!had) throw e;
        // The table was not what berth last applied (changed by hand): made whole, counters anew.
        this.log(`services: balancer of ${id.slice(0, 12)} remade: ${errorMessage(e)}`);
        await nftApply(lbScript(undefined, [...entries.values()], 0, this.kind), { netns });
        remade = true;
        built = builtAfter(true, 0, lengths);
        return new Map<string, number>();
      });
      // The counts of the elements that stayed go on; those of elements gone are kept as retired (as they went, where read).
      let counted = had?.counted ?? new Map<string, number>();
      for (const [c, n] of read) if (counted.has(c)) counted.set(c, n);
      if (remade) {
        for (const [c, n] of counted) this.retire(c, n);
        counted = new Map();
      }
      for (const [old, e] of remade ? [...entries.values()].map((e) => [undefined, e] as const) : changed) {
        const keep = e ? countersOf([e]) : new Map<string, { service: string; backend: string }>();
        for (const c of old ? countersOf([old]).keys() : []) {
          if (!keep.has(c)) { this.retire(c, counted.get(c) ?? 0); counted.delete(c); }
        }
        for (const [c, who] of keep) if (!counted.has(c)) { counted.set(c, 0); this.identity.set(c, who); }
      }
      // A backend may be in two VIPs (a task on two of a service's networks): its flows go with its last slot.
      const uses = had?.uses ?? new Map<string, number>();
      const left: string[] = [];
      const targets = (e: VipEntry | undefined) => (e?.backends ?? []).flatMap((b) => this.kind.udpTarget(e!.vip, b) ?? []);
      for (const [old, e] of changed) {
        for (const ip of targets(e)) uses.set(ip, (uses.get(ip) ?? 0) + 1);
        for (const ip of targets(old)) {
          const n = (uses.get(ip) ?? 1) - 1;
          if (n > 0) uses.set(ip, n);
          else { uses.delete(ip); left.push(ip); }
        }
      }
      this.applied.set(id, { netns, entries, lengths, built, counted, uses, buckets });
      this.dropFlows(id, netns, left);
    } catch (e) {
      // The namespace went meanwhile (the container stopped): nothing to balance there.
      this.forget(id);
      this.log(`services: balancer of ${id.slice(0, 12)}: ${errorMessage(e)}`);
    }
  }

  /** Connections sent to each backend by this host's sandboxes: read in each sandbox now, plus what went with sandboxes and counters gone. */
  hits(serviceExists: (id: string) => boolean): Promise<BackendHits[]> {
    let out: BackendHits[] = [];
    return this.serial(async () => {
      // A removed service's counts go with it.
      for (const [c, who] of this.identity) if (!serviceExists(who.service)) { this.identity.delete(c); this.retired.delete(c); }
      await forEachLimited([...this.applied.values()], 8, (a) => this.read(a).catch(() => undefined));
      const total = new Map(this.retired);
      for (const a of this.applied.values()) for (const [c, n] of a.counted) total.set(c, (total.get(c) ?? 0) + n);
      // A backend's elements (one per VIP and slot it had) add up to its count.
      const sum = new Map<string, BackendHits>();
      for (const [c, connections] of total) {
        const who = this.identity.get(c);
        if (!who) continue;
        const backend = this.kind.address(who.backend);
        const k = `${who.service} ${backend}`;
        sum.set(k, { service: who.service, backend, connections: (sum.get(k)?.connections ?? 0) + connections });
      }
      out = [...sum.values()];
    }).then(() => out);
  }

  private async read(a: Applied): Promise<void> {
    if (!a.entries.size) return;
    const now = await readCounters(a.netns, a.entries, this.kind);
    for (const c of a.counted.keys()) {
      const n = now.get(c);
      if (n !== undefined) a.counted.set(c, n);
    }
  }

  /** Resolves once the UDP flows of every backend that left a balancer so far are dropped. */
  flowsDropped(): Promise<void> {
    return this.flows;
  }

  /**
   * New datagrams of a flow to a backend that left would still go to it: its flows go too, after
   * the change and without holding it up. `conntrack -D` walks the host's whole conntrack hash
   * (262,144 buckets here: 10-20 ms, whatever the number of services), which alone would be more
   * than a backend change is allowed; meanwhile a datagram of such a flow still reaches the dead
   * backend, as it did while the change was being made.
   */
  private dropFlows(id: string, netns: string, gone: string[]): void {
    if (!gone.length) return;
    this.flows = this.flows.then(async () => {
      for (const ip of gone) await dropUdpFlowsTo(ip, netns).catch((e: Error) => this.log(`services: ${id.slice(0, 12)}: ${e.message}`));
    });
  }

  private forget(id: string): void {
    const a = this.applied.get(id);
    if (!a) return;
    this.applied.delete(id);
    for (const [c, n] of a.counted) this.retire(c, n);
  }

  private retire(counter: string, n: number): void {
    if (n) this.retired.set(counter, (this.retired.get(counter) ?? 0) + n);
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const step = this.queue.then(fn);
    this.queue = step.catch(() => undefined);
    return step;
  }
}
