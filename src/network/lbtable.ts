/**
 * A service balancer table as plain data: its text made whole, the script of what differs
 * between two contents, and the reading of its counters (pure, unit-tested; the applying is
 * servicelb.ts's). A container sandbox's VIPs and the routing mesh's published ports share the
 * layout; what differs between them is their `TableKind` (lbkinds.ts).
 */

import { VIP_KIND, type TableKind } from './lbkinds.js';

/**
 * One key of a balancer and the backends of its running tasks: a service's VIP and the tasks'
 * addresses (VIP_KIND), or a published port `proto . port` and the tasks' `address . port`
 * (meshKind).
 */
export interface VipEntry { service: string; vip: string; backends: string[] }

export const LB_TABLE = VIP_KIND.table;

/** What a sandbox holds: a list, or (what ServiceBalancers keeps, to merge a patch into) a map by VIP. */
export type Entries = readonly VipEntry[] | ReadonlyMap<string, VipEntry>;
const sizeOf = (e: Entries) => ('size' in e ? e.size : e.length);
const valuesOf = (e: Entries): Iterable<VipEntry> => ('size' in e ? e.values() : e);

/**
 * A key's rule (its match, then the next slot in turn) is in one of BUCKETS chains, by a hash of
 * the key, not in a chain of its own: the kernel's commit of any change walks every chain of the
 * namespace, so a chain per VIP made each backend change at 10,000 services cost 0.5-1 ms more
 * than at 100 (the same 9,900 chains, empty and in another table, cost the 100-service table as
 * much). A packet meets the VIPs of its bucket in turn: about 40 matches of an address at 10,000
 * services, next to nothing beside a connection's setup; and the rule's own `numgen` still counts
 * for its VIP alone (a counter shared by VIPs would send a client alternating between two VIPs to
 * the same backend of each). A bucket's chain lives while it has a VIP.
 */
export const BUCKETS = 256;
export function bucketOf(key: string): number {
  // FNV-1a: cheap, stable across runs (a restarted berthd finds its keys where it left them).
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0) % BUCKETS;
}
const bucketChain = (b: number, kind: TableKind) => `${kind.chainPrefix}_b${b}`;

/**
 * The live (balanced) keys of some buckets around a change: whether the bucket had any before it
 * (so its chain is there), and its keys after it, arranged.
 */
export interface Buckets { had(b: number): boolean; now(b: number): VipEntry[] }

/** The live (balanced) entries by bucket, of the buckets `keep` takes (all unless told). */
function byBucket(entries: Iterable<VipEntry>, keep: (b: number) => boolean = () => true): Map<number, VipEntry[]> {
  const out = new Map<number, VipEntry[]>();
  for (const e of entries) {
    if (!e.backends.length) continue;
    const b = bucketOf(e.vip);
    if (keep(b)) out.set(b, out.get(b) ?? []).get(b)!.push(e);
  }
  return out;
}

/** `Buckets` for the touched buckets of a change from `before` to `after` (both whole): one walk of each. */
export function bucketsAround(before: Entries, after: Iterable<VipEntry>, touched: ReadonlySet<number>): Buckets {
  const keep = (b: number) => touched.has(b);
  const had = touched.size ? byBucket(valuesOf(before), keep) : new Map<number, VipEntry[]>();
  const now = touched.size ? byBucket(after, keep) : new Map<number, VipEntry[]>();
  return { had: (b) => had.has(b), now: (b) => now.get(b) ?? [] };
}

const byVip = (entries: VipEntry[]) => [...entries].sort((a, b) => (a.vip < b.vip ? -1 : a.vip > b.vip ? 1 : 0));
const liveOf = (entries: VipEntry[]) => byVip(entries).filter((e) => e.backends.length);
const distinct = (e: VipEntry) => [...new Set(e.backends)];

/**
 * A backend's connections are counted by its element of the `backends` map (`vip . slot`), which
 * lives while the backend keeps its slot; its key says whose they are.
 */
export const hitKey = (service: string, vip: string, slot: number, backend: string): string => `${service} ${vip} ${slot} ${backend}`;

/** The keys of a VIP's elements (entries as `arrange` made them), with the service and address each counts. */
export function countersOf(entries: VipEntry[]): Map<string, { service: string; backend: string }> {
  return new Map(entries.flatMap((e) => e.backends.map((ip, slot) => [hitKey(e.service, e.vip, slot, ip), { service: e.service, backend: ip }] as const)));
}

function sameSet(a: string[], b: string[]): boolean {
  if (a.length === b.length) {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    if (i === a.length) return true;
  }
  return a.every((ip) => b.includes(ip)) && b.every((ip) => a.includes(ip));
}

/**
 * `before`'s entry for each VIP of `after`: by position while both lists keep their order (the
 * common case: the same services, one of them changed), by a map of VIPs once they do not.
 */
function previous(before: Entries, after: VipEntry[]): Array<VipEntry | undefined> {
  if ('size' in before) return after.map((e) => before.get(e.vip));
  let byVip: Map<string, VipEntry> | undefined;
  const out = new Array<VipEntry | undefined>(after.length);
  for (let i = 0; i < after.length; i++) {
    const e = after[i]!;
    const same = before[i];
    if (same !== undefined && same.vip === e.vip) out[i] = same;
    else out[i] = (byVip ??= new Map(before.map((o) => [o.vip, o]))).get(e.vip);
  }
  return out;
}

/**
 * The entries of `after` with each VIP's backends distinct and in slot order: a backend that
 * stays keeps its slot (and so its element and its count), a new one takes a free slot, and when a
 * VIP has fewer backends the ones above the new count move down into the free slots. From
 * nothing, sorted. A VIP that did not change is `before`'s own object, so what follows looks at
 * the VIPs that changed only: a sandbox with 10,000 services is walked once, not sorted or
 * written out at every change.
 */
export function arrange(before: Entries | undefined, after: VipEntry[]): VipEntry[] {
  const prev = previous(before ?? [], after);
  return after.map((e, i) => arrangeOne(prev[i], e));
}

/** One VIP of `arrange`: `old` (what the sandbox has for the VIP) itself when nothing changed. */
export function arrangeOne(old: VipEntry | undefined, e: VipEntry): VipEntry {
  if (old !== undefined && old.service === e.service && sameSet(old.backends, e.backends)) return old;
  const want = [...new Set(e.backends)].sort();
  if (!old || old.service !== e.service) return { ...e, backends: want };
  const slots: Array<string | undefined> = old.backends.slice(0, want.length).map((ip) => (want.includes(ip) ? ip : undefined));
  const fill = want.filter((ip) => !slots.includes(ip));
  return { ...e, backends: Array.from({ length: want.length }, (_, j) => slots[j] ?? fill.shift()!) };
}

/** The VIPs that differ between two arranged lists: [before's entry or undefined, after's entry or undefined]. */
export function changedVips(before: Entries, after: VipEntry[]): Array<[VipEntry | undefined, VipEntry | undefined]> {
  const prev = previous(before, after);
  const out: Array<[VipEntry | undefined, VipEntry | undefined]> = [];
  let kept = 0;
  for (let i = 0; i < after.length; i++) {
    if (prev[i]) kept++;
    if (prev[i] !== after[i]) out.push([prev[i], after[i]]);
  }
  // VIPs gone: only looked for when some of before's are not in after.
  if (kept < sizeOf(before)) {
    const now = new Set(after.map((e) => e.vip));
    for (const old of valuesOf(before)) if (!now.has(old.vip)) out.push([old, undefined]);
  }
  return out;
}

/**
 * Slot i of every VIP is element `vip` of map `slot<i>`, reached through chain `to<i>`; a table
 * made whole has as many slots as its VIP with the most backends, and SPARE_SLOTS more.
 */
const slotMap = (i: number) => `slot${i}`;
const slotChain = (i: number) => `to${i}`;
/**
 * The empty slots a table is made with (and its rr maps up to them): a service scaled up by one,
 * or updated start-first (the new task runs beside the old one for a moment), then needs only
 * elements and its bucket's rules, which berthd writes itself; a new slot is an `nft` run,
 * 60-130 ms on a loaded node, and held up that node's next changes. An empty slot costs a packet
 * nothing: no VIP's rule reaches it.
 */
export const SPARE_SLOTS = 1;
function slotsOf(entries: Entries): number {
  let n = 0;
  for (const e of valuesOf(entries)) n = Math.max(n, e.backends.length);
  return n;
}

/**
 * Map `rr<n>` sends 0…n-1 to slot chains to0…to<n-1>: one per number of backends, shared by every
 * VIP with that many. An anonymous map per VIP (`vmap { 0 : goto to0, … }`, what the rule held
 * before) cost the kernel a set each: naming each new one scans every set of the table and binding
 * it walks the whole transaction, so a table of 10,000 VIPs took 8.5 s to make (0.43 s with shared
 * maps), and each rule added later paid for the 10,000 sets already there.
 */
const rrMap = (n: number) => `rr${n}`;
const rrElements = (n: number) => Array.from({ length: n }, (_, i) => `${i} : goto ${slotChain(i)}`).join(', ');
const rrType = (n: number) => `typeof numgen inc mod ${n} : verdict`;

/** What a VIP's rule does after its match: the next slot in turn (each VIP's `numgen` counts for itself: the counter is the rule's). */
function dispatch(e: VipEntry): string {
  if (e.backends.length === 1) return `goto ${slotChain(0)}`;
  return `numgen inc mod ${e.backends.length} vmap @${rrMap(e.backends.length)}`;
}
/** A bucket chain's rules: its keys in order, each its match and its dispatch. */
const bucketRules = (members: VipEntry[], kind: TableKind) => byVip(members).map((e) => `${kind.match(e.vip)} ${dispatch(e)}`);

/** The numbers of backends that need a map `rr<n>` in a table of `slots` slots. */
const rrRange = (from: number, to: number) => Array.from({ length: Math.max(0, to - Math.max(from, 1)) }, (_, i) => Math.max(from, 1) + 1 + i);

/**
 * The balancer table of one container's namespace, as nft text (pure, unit-tested); `entries` as
 * `arrange` made them. As Docker balances in each container's sandbox (IPVS there), so replies
 * come back to the same namespace whatever host the backend is on: the nat `output` hook sends a
 * new connection to a VIP through a verdict map (one element per VIP) to the VIP's bucket chain
 * (see BUCKETS), whose rule for the VIP takes the next slot in turn with `numgen inc mod N` (round robin, as Docker's IPVS
 * schedules by default; kube-proxy picks at random) and goes to that slot's chain, shared by all
 * VIPs, which DNATs to the backend its map has for the VIP and counts the connection on that
 * element (kube-proxy's nftables mode keeps a chain per backend instead; without its masquerade:
 * the client's own address is the source). So a backend that comes or goes is an element of a
 * slot's map and nothing else while its VIP keeps its number of backends: `nft` is not needed
 * for it (see `elementArgs` in lbbatch.ts), and the kernel checks the element against the one rule that reads
 * that map, not against a rule per VIP. A VIP with no running task is rejected at once in a
 * filter chain (a nat chain cannot reject) instead of leaving the client waiting. The port is
 * kept: a VIP balances every port, as Docker's does.
 */
export function lbTable(entries: VipEntry[], kind: TableKind = VIP_KIND): string {
  const live = liveOf(entries).map((e) => ({ ...e, backends: distinct(e) }));
  const empty = kind.rejectsEmpty ? byVip(entries).filter((e) => !e.backends.length).map((e) => e.vip) : [];
  const slots = Array.from({ length: slotsOf(live) + SPARE_SLOTS }, (_, i) => i);
  const lines = [`table ip ${kind.table} {`];
  for (const i of slots) {
    const elements = live.filter((e) => e.backends.length > i).map((e) => `${e.vip} : ${e.backends[i]}`);
    lines.push(`  map ${slotMap(i)} {`, `    type ${kind.keyType} : ${kind.dataType}`, '    counter', ...(elements.length ? [`    elements = { ${elements.join(', ')} }`] : []), '  }');
  }
  for (const n of rrRange(0, slots.length)) lines.push(`  map ${rrMap(n)} {`, `    ${rrType(n)}`, `    elements = { ${rrElements(n)} }`, '  }');
  lines.push(
    `  map ${kind.dispatchMap} {`,
    `    type ${kind.keyType} : verdict`,
    ...(live.length ? [`    elements = { ${live.map((e) => `${e.vip} : goto ${bucketChain(bucketOf(e.vip), kind)}`).join(', ')} }`] : []),
    '  }',
    ...kind.hooks(empty),
  );
  for (const i of slots) lines.push(`  chain ${slotChain(i)} {`, `    ${kind.slotRule(slotMap(i))}`, '  }');
  for (const [b, members] of [...byBucket(live)].sort((x, y) => x[0] - y[0])) {
    lines.push(`  chain ${bucketChain(b, kind)} {`, ...bucketRules(members, kind).map((r) => `    ${r}`), '  }');
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

/**
 * The script that takes a sandbox's table from `before` (what berth applied there, as `arrange`
 * made it; undefined when unknown) to `after` (arranged from it), in one transaction. From a known
 * table it is only what differs: a VIP that comes or goes is its map element, its slots'
 * elements and its bucket's rules (or its element of the reject set); a VIP whose backends
 * changed is the elements of the slots that changed, and its bucket's rules only when its number
 * of backends changed; slots come before the first VIP that needs them, and stay (`built`: the slots the
 * table has, which may be more than `before` needs, see `slotsBuilt`; unless told, what lbTable
 * made for `before`). Its cost follows what
 * changed, not the number of services. From an unknown table (the first apply, or one changed
 * behind berth's back) the table is made whole. No entries: no table.
 */
export function lbScript(before: Entries | undefined, after: VipEntry[], built = before ? slotsOf(before) + SPARE_SLOTS : 0, kind: TableKind = VIP_KIND): string {
  const t = `ip ${kind.table}`;
  if (!before || !sizeOf(before) || !after.length) return `table ${t}\ndelete table ${t}\n${after.length ? lbTable(after, kind) : ''}`;
  const changes = changedVips(before, after);
  if (!changes.length) return '';
  // Only a change of some VIP's number of backends can need more slots.
  const resized = changes.some(([old, e]) => old?.backends.length !== e?.backends.length);
  return lbChanges(changes, built, resized ? slotsBuilt(after, built) : built, kind, (touched) => bucketsAround(before, after, touched));
}

/**
 * The slots a known table has after a change to `after`, when it had `built`: slots once made stay
 * while the table does (an empty one costs a packet nothing, as no VIP's rule reaches it), so a
 * VIP that grows back into them is its elements and its rule, which berth-nftset writes without
 * `nft` (a service scaled 2 → 3 → 2 → 3 made and deleted slot 2 and map rr3 each time, and `nft`
 * took 50 ms to read a sandbox of 10,000 VIPs before each).
 */
function slotsBuilt(after: Entries, built: number): number {
  return Math.max(built, slotsOf(after));
}

/**
 * `lbScript`'s difference, for these changed VIPs ([before's entry or undefined, after's or
 * undefined], each arranged) of a known, non-empty table that stays non-empty. The numbers of
 * slots before and after are the caller's: they are the whole table's (its VIP with the most
 * backends), which the changed VIPs alone do not tell when they are a patch of some VIPs only;
 * and so are the other VIPs of a touched bucket (`around`, asked for the buckets touched).
 */
export function lbChanges(changes: ReadonlyArray<readonly [VipEntry | undefined, VipEntry | undefined]>, wasSlots: number, slots: number, kind: TableKind, around: (touched: ReadonlySet<number>) => Buckets): string {
  const t = `ip ${kind.table}`;
  const gone: string[] = [];
  const came: string[] = [];
  const touched = new Set<number>();
  const slotsGone = (e: VipEntry, from: number) => e.backends.slice(from).map((_, i) => `delete element ${t} ${slotMap(from + i)} { ${e.vip} }`);
  const slotCame = (e: VipEntry, slot: number) => `add element ${t} ${slotMap(slot)} { ${e.vip} : ${e.backends[slot]} }`;
  const remove = (e: VipEntry) => {
    if (!e.backends.length) { if (kind.rejectsEmpty) gone.push(`delete element ${t} empty { ${e.vip} }`); return; }
    gone.push(`delete element ${t} ${kind.dispatchMap} { ${e.vip} }`, ...slotsGone(e, 0));
    touched.add(bucketOf(e.vip));
  };
  const add = (e: VipEntry) => {
    if (!e.backends.length) { if (kind.rejectsEmpty) came.push(`add element ${t} empty { ${e.vip} }`); return; }
    came.push(...e.backends.map((_, i) => slotCame(e, i)), `add element ${t} ${kind.dispatchMap} { ${e.vip} : goto ${bucketChain(bucketOf(e.vip), kind)} }`);
    touched.add(bucketOf(e.vip));
  };
  for (const [old, e] of changes) {
    if (!e || !old || old.service !== e.service || !old.backends.length || !e.backends.length) {
      if (old) remove(old);
      if (e) add(e);
      continue;
    }
    const had = old.backends;
    const has = e.backends;
    const changed = has.flatMap((ip, slot) => (had[slot] === ip ? [] : [slot]));
    came.push(...changed.filter((slot) => slot < had.length).map((slot) => `delete element ${t} ${slotMap(slot)} { ${e.vip} }`));
    came.push(...slotsGone(old, has.length), ...changed.map((slot) => slotCame(e, slot)));
    if (had.length !== has.length) touched.add(bucketOf(e.vip));
  }
  const first: string[] = [];
  const last: string[] = [];
  for (let i = wasSlots; i < slots; i++) {
    first.push(`add map ${t} ${slotMap(i)} { type ${kind.keyType} : ${kind.dataType}; counter; }`, `add chain ${t} ${slotChain(i)}`, `add rule ${t} ${slotChain(i)} ${kind.slotRule(slotMap(i))}`);
  }
  // The rr maps after the slot chains they go to, and gone before them (no rule uses them by then).
  for (const n of rrRange(wasSlots, slots)) first.push(`add map ${t} ${rrMap(n)} { ${rrType(n)}; }`, `add element ${t} ${rrMap(n)} { ${rrElements(n)} }`);
  // A touched bucket's rules are written again whole (a rule has no name to be replaced by without
  // keeping the kernel's handles): the VIPs of one bucket, about 40 at 10,000 services. Its chain
  // comes before the map elements that go to it, and goes after them.
  const buckets = around(touched);
  const rules: string[] = [];
  for (const b of [...touched].sort((x, y) => x - y)) {
    const chain = `${t} ${bucketChain(b, kind)}`;
    const now = buckets.now(b);
    if (!buckets.had(b)) { if (now.length) first.push(`add chain ${chain}`); }
    else rules.push(`flush chain ${chain}`);
    rules.push(...bucketRules(now, kind).map((r) => `add rule ${chain} ${r}`));
    if (buckets.had(b) && !now.length) rules.push(`delete chain ${chain}`);
  }
  for (const n of rrRange(slots, wasSlots)) last.push(`delete map ${t} ${rrMap(n)}`);
  for (let i = slots; i < wasSlots; i++) last.push(`flush chain ${t} ${slotChain(i)}`, `delete chain ${t} ${slotChain(i)}`, `delete map ${t} ${slotMap(i)}`);
  const out = [...first, ...gone, ...came, ...rules, ...last];
  return out.length ? out.join('\n') + '\n' : '';
}

/** The slot maps' elements (`nft -j list table`): key → packets, which for a nat chain's lookup is connections. */
export function parseCounters(json: string, entries: Entries): Map<string, number> {
  const service = new Map([...valuesOf(entries)].map((e) => [e.vip, e.service]));
  // A concatenation (`tcp . 8080`, `10.0.0.5 . 80`) is listed as its parts.
  type Value = string | { concat?: Array<string | number> };
  const text = (v: Value | undefined) => (typeof v === 'object' ? v.concat?.join(' . ') : v);
  type Elem = [{ elem?: { val?: Value; counter?: { packets?: number } } }, Value];
  const doc = JSON.parse(json) as { nftables?: Array<{ map?: { name?: string; elem?: Elem[] } }> };
  const out = new Map<string, number>();
  for (const i of doc.nftables ?? []) {
    const slot = /^slot(\d+)$/.exec(i.map?.name ?? '')?.[1];
    if (slot === undefined) continue;
    for (const [k, backend] of i.map?.elem ?? []) {
      const key = text(k.elem?.val);
      const svc = key === undefined ? undefined : service.get(key);
      if (svc !== undefined) out.set(hitKey(svc, key!, Number(slot), text(backend) ?? ''), k.elem?.counter?.packets ?? 0);
    }
  }
  return out;
}

