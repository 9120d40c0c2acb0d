import { dropUdpFlowsTo } from '../kernel/conntrack.js';
import { nftApply } from '../kernel/nft.js';
import { run } from '../util/exec.js';
import { errorMessage } from '../util/errors.js';
import { forEachLimited } from '../util/serial.js';
import { balancerChanges, type BalancerShape } from './balancerdiff.js';

/** One service address as a sandbox balances it: its VIP and the addresses of its running tasks. */
export interface VipEntry { service: string; vip: string; backends: string[] }

/** Connections a node's balancers sent to one backend of a service. */
export interface BackendHits { service: string; backend: string; connections: number }

export const LB_TABLE = 'berth_svc';

const ipPart = (ip: string) => ip.replace(/[.:]/g, '_');
/** A VIP's chain: by service and VIP (a container on two of a service's networks balances two VIPs). */
const chainOf = (e: VipEntry) => `svc_${e.service.slice(0, 12)}_${ipPart(e.vip)}`;
/** A backend's chain, named by its address: a backend that stays keeps its chain across changes. */
const backendChain = (e: VipEntry, ip: string) => `${chainOf(e)}_${ipPart(ip)}`;

/**
 * A backend's connection counter is a named nft object: one per service and backend address,
 * whatever the chains around it, so it outlives a table made whole again (the table's
 * replacement re-declares it) while its backend stays.
 */
export const hitCounter = (service: string, ip: string): string => `h_${service.slice(0, 12)}_${ipPart(ip)}`;

const byVip = (entries: VipEntry[]) => [...entries].sort((a, b) => a.vip.localeCompare(b.vip));
const liveOf = (entries: VipEntry[]) => byVip(entries).filter((e) => e.backends.length);
const backendsOf = (e: VipEntry) => [...new Set(e.backends)].sort();

/** Every backend's counter, with the service and address it counts. */
export function countersOf(entries: VipEntry[]): Map<string, { service: string; backend: string }> {
  return new Map(liveOf(entries).flatMap((e) => backendsOf(e).map((ip) => [hitCounter(e.service, ip), { service: e.service, backend: ip }] as const)));
}

/** The VIP chain's one rule: straight to the only backend, or numgen over them. */
function dispatch(e: VipEntry): string {
  const list = backendsOf(e);
  if (list.length === 1) return `goto ${backendChain(e, list[0]!)}`;
  return `numgen inc mod ${list.length} vmap { ${list.map((ip, i) => `${i} : goto ${backendChain(e, ip)}`).join(', ')} }`;
}

const dnat = (e: VipEntry, ip: string) => `counter name "${hitCounter(e.service, ip)}" dnat to ${ip}`;

/**
 * The balancer table of one container's namespace, as nft text (pure, unit-tested). As Docker
 * balances in each container's sandbox (IPVS there), so replies come back to the same namespace
 * whatever host the backend is on: the nat `output` hook sends a new connection to a VIP through a
 * verdict map (one element per VIP, so a service added is one element) to the VIP's chain, which
 * picks a backend in turn with `numgen inc mod N` (round robin, as Docker's IPVS schedules by
 * default; kube-proxy picks at random); the backend's chain counts the connection on the
 * backend's counter and DNATs to it (kube-proxy's nftables mode, without its masquerade: the
 * client's own address is the source, the backend answers it directly). A VIP with no running
 * task is rejected at once in a filter chain (a nat chain cannot reject) instead of leaving the
 * client waiting. The port is kept: a VIP balances every port, as Docker's does.
 */
export function lbTable(entries: VipEntry[]): string {
  const live = liveOf(entries);
  const empty = byVip(entries).filter((e) => !e.backends.length);
  const lines = [
    `table ip ${LB_TABLE} {`,
    ...[...countersOf(entries).keys()].flatMap((c) => [`  counter ${c} {`, '  }']),
    '  map vips {',
    '    type ipv4_addr : verdict',
    ...(live.length ? [`    elements = { ${live.map((e) => `${e.vip} : goto ${chainOf(e)}`).join(', ')} }`] : []),
    '  }',
    '  set empty {',
    '    type ipv4_addr',
    ...(empty.length ? [`    elements = { ${empty.map((e) => e.vip).join(', ')} }`] : []),
    '  }',
    '  chain out {',
    '    type nat hook output priority -100; policy accept;',
    '    ip daddr vmap @vips',
    '  }',
    '  chain reject_empty {',
    '    type filter hook output priority 0; policy accept;',
    '    ip daddr @empty meta l4proto tcp reject with tcp reset',
    '    ip daddr @empty reject',
    '  }',
  ];
  for (const e of live) {
    lines.push(`  chain ${chainOf(e)} {`, `    ${dispatch(e)}`, '  }');
    for (const ip of backendsOf(e)) lines.push(`  chain ${backendChain(e, ip)} {`, `    ${dnat(e, ip)}`, '  }');
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

/**
 * The script that takes a sandbox's table from `before` (what berth applied there; undefined when
 * unknown) to `after`, in one transaction. From a known table it is only what differs, as the
 * routing mesh's changes (kube-proxy's nftables mode updates the same way): a VIP's element and
 * chains come or go, a VIP whose backends changed gets the chains of its new backends, its
 * dispatch rule replaced, and the chains of its old ones deleted; a backend gone loses its
 * counter. Its cost follows what changed, not the number of services. From an unknown table
 * (the first apply, or one changed behind berth's back) the table is made whole. No entries: no
 * table.
 */
const VIP_SHAPE: BalancerShape<VipEntry> = {
  table: `ip ${LB_TABLE}`, map: 'vips', same: (old, e) => e.service === old.service,
  chain: chainOf, backendChain, backends: backendsOf, dispatch, dnat,
};

export function lbScript(before: VipEntry[] | undefined, after: VipEntry[]): string {
  const t = `ip ${LB_TABLE}`;
  if (!before?.length || !after.length) return `table ${t}\ndelete table ${t}\n${after.length ? lbTable(after) : ''}`;
  const out: string[] = [];
  const emptyBefore = new Set(byVip(before).filter((e) => !e.backends.length).map((e) => e.vip));
  const emptyAfter = new Set(byVip(after).filter((e) => !e.backends.length).map((e) => e.vip));
  for (const vip of emptyBefore) if (!emptyAfter.has(vip)) out.push(`delete element ${t} empty { ${vip} }`);
  for (const vip of emptyAfter) if (!emptyBefore.has(vip)) out.push(`add element ${t} empty { ${vip} }`);
  const countersBefore = countersOf(before);
  const countersAfter = countersOf(after);
  for (const c of countersAfter.keys()) if (!countersBefore.has(c)) out.push(`add counter ${t} ${c}`);
  const byKey = (entries: VipEntry[]) => new Map(liveOf(entries).map((e) => [e.vip, e]));
  out.push(...balancerChanges(VIP_SHAPE, byKey(before), byKey(after)));
  for (const c of countersBefore.keys()) if (!countersAfter.has(c)) out.push(`delete counter ${t} ${c}`);
  return out.length ? out.join('\n') + '\n' : '';
}

/** The named counters of a sandbox's table (`nft -j list counters`): name → packets, which for a nat chain's counter is connections. */
export function parseCounters(json: string): Map<string, number> {
  const doc = JSON.parse(json) as { nftables?: Array<{ counter?: { name?: string; packets?: number } }> };
  return new Map((doc.nftables ?? []).flatMap((i) => (i.counter?.name ? [[i.counter.name, i.counter.packets ?? 0] as const] : [])));
}

async function readCounters(netns: string): Promise<Map<string, number>> {
  const r = await run('nft', ['-j', 'list', 'counters', 'table', 'ip', LB_TABLE], { netns });
  if (r.code !== 0) throw new Error(r.stderr.trim() || `nft exited ${r.code}`);
  return parseCounters(r.stdout);
}

interface Applied { netns: string; entries: VipEntry[]; counted: Map<string, number> }

const backendSet = (entries: VipEntry[]) => new Set(entries.flatMap((e) => e.backends));

/**
 * The balancer tables of this host's sandboxes, each changed in one transaction when what it
 * should hold changed (connections keep their conntrack entries, new ones see the new backends).
 * A namespace takes its table with it when it goes.
 *
 * Each backend's connections are counted in each sandbox; `hits()` sums them over the sandboxes.
 * The count a sandbox or a counter had when it went, as the last scrape read it, is kept, so a
 * backend's total never goes down while this berthd runs (Prometheus would take a drop for a
 * restart of the counter). A leaving backend's connections since that scrape are not counted:
 * reading counters makes `nft` load the whole table (2.5 s at 10,000 services), which a change of
 * the balancer must not wait for.
 */
export class ServiceBalancers {
  private readonly applied = new Map<string, Applied>();
  private readonly retired = new Map<string, number>();
  private readonly identity = new Map<string, { service: string; backend: string }>();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly log: (m: string) => void) {}

  /** Makes these sandboxes' tables agree with `want` (container id → namespace and entries); forgets sandboxes not listed when `all`. */
  sync(want: Map<string, { netns: string; entries: VipEntry[] }>, all: boolean): Promise<void> {
    return this.serial(async () => {
      if (all) for (const id of [...this.applied.keys()]) if (!want.has(id)) this.forget(id);
      await Promise.all([...want].map(async ([id, w]) => {
        let had = this.applied.get(id);
        if (had && had.netns !== w.netns) { this.forget(id); had = undefined; }
        // No table before or after: nothing to do; otherwise the script says what differs ('' when nothing).
        if (!had?.entries.length && !w.entries.length) return;
        const script = lbScript(had?.entries, w.entries);
        if (had && !script) return;
        const counters = countersOf(w.entries);
        for (const [name, who] of counters) this.identity.set(name, who);
        try {
          let remade = !had;
          await nftApply(script, { netns: w.netns }).catch(async (e) => {
            if (!had) throw e;
            // The table was not what berth last applied (changed by hand): made whole, counters anew.
            this.log(`services: balancer of ${id.slice(0, 12)} remade: ${errorMessage(e)}`);
            await nftApply(lbScript(undefined, w.entries), { netns: w.netns });
            remade = true;
          });
          for (const [c, n] of had?.counted ?? []) if (remade || !counters.has(c)) this.retire(c, n);
          const counted = new Map([...counters.keys()].map((c) => [c, remade ? 0 : had?.counted.get(c) ?? 0]));
          this.applied.set(id, { netns: w.netns, entries: w.entries, counted });
          // New datagrams of a flow to a backend that left would still go to it: its flows go too.
          const kept = backendSet(w.entries);
          for (const ip of backendSet(had?.entries ?? [])) {
            if (!kept.has(ip)) await dropUdpFlowsTo(ip, w.netns).catch((e: Error) => this.log(`services: ${id.slice(0, 12)}: ${e.message}`));
          }
        } catch (e) {
          // The namespace went meanwhile (the container stopped): nothing to balance there.
          this.forget(id);
          this.log(`services: balancer of ${id.slice(0, 12)}: ${errorMessage(e)}`);
        }
      }));
    });
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
      out = [...total].flatMap(([c, connections]) => {
        const who = this.identity.get(c);
        return who ? [{ ...who, connections }] : [];
      });
    }).then(() => out);
  }

  private async read(a: Applied): Promise<void> {
    const now = await readCounters(a.netns);
    for (const c of a.counted.keys()) {
      const n = now.get(c);
      if (n !== undefined) a.counted.set(c, n);
    }
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
