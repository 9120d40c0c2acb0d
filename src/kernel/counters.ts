import { promises as fs } from 'node:fs';
import { run } from '../util/exec.js';

/**
 * The kernel's counters that /metrics shows, read in batches whatever the number of containers:
 * every link of berthd's namespace from one read of /proc/self/net/dev (no process at all), and
 * berth's own nft tables from one `nft -j list table` each. Only berth's tables are read.
 */

export interface LinkCounters {
  rxBytes: number; rxPackets: number; rxDrops: number;
  txBytes: number; txPackets: number; txDrops: number;
}

/** /proc/net/dev's text: two header lines, then `name: 16 numbers` per link. */
export function parseNetDev(text: string): Map<string, LinkCounters> {
  const out = new Map<string, LinkCounters>();
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const f = line.slice(colon + 1).trim().split(/\s+/).map(Number);
    if (f.length < 16 || f.some((n) => !Number.isFinite(n))) continue;
    out.set(line.slice(0, colon).trim(), { rxBytes: f[0]!, rxPackets: f[1]!, rxDrops: f[3]!, txBytes: f[8]!, txPackets: f[9]!, txDrops: f[11]! });
  }
  return out;
}

/** Every link of the calling process's network namespace (berthd's). */
export async function linkCounters(): Promise<Map<string, LinkCounters>> {
  return parseNetDev(await fs.readFile('/proc/self/net/dev', 'utf8'));
}

/** A counted rule, named by its comment. */
export interface RuleCounter { family: string; chain: string; comment: string; packets: number; bytes: number }
/** One element of a map whose elements carry counters: its key's parts, its value's parts. */
export interface ElementCounter { family: string; map: string; key: Array<string | number>; value: Array<string | number>; packets: number }
export interface NftCounters { rules: RuleCounter[]; elements: ElementCounter[] }

type Json = Record<string, any>;

function parts(v: unknown): Array<string | number> {
  if (v && typeof v === 'object' && Array.isArray((v as Json).concat)) return (v as Json).concat as Array<string | number>;
  return [v as string | number];
}

/** `nft -j list table …` output: commented rules with a counter, and map elements with one. */
export function parseNftCounters(json: string): NftCounters {
  const out: NftCounters = { rules: [], elements: [] };
  const doc = JSON.parse(json) as { nftables?: Json[] };
  for (const item of doc.nftables ?? []) {
    if (item.rule) {
      const r = item.rule as Json;
      const counter = (r.expr as Json[] | undefined)?.find((e) => e.counter)?.counter as Json | undefined;
      if (counter && typeof r.comment === 'string') out.rules.push({ family: r.family, chain: r.chain, comment: r.comment, packets: counter.packets ?? 0, bytes: counter.bytes ?? 0 });
    } else if (item.map) {
      const m = item.map as Json;
      for (const el of (m.elem ?? []) as Json[]) {
        const [key, value] = el as unknown as [Json, unknown];
        const counter = key?.elem?.counter as Json | undefined;
        if (!counter) continue;
        out.elements.push({ family: m.family, map: m.name, key: parts(key.elem.val), value: parts(value), packets: counter.packets ?? 0 });
      }
    }
  }
  return out;
}

/** The counters of berth's tables that exist now (`ip berth`, `ip6 berth`, `bridge berth`, the overlays' `netdev berth`), read at once. */
export async function nftCounters(table: string): Promise<NftCounters> {
  const lists = await Promise.all(['ip', 'ip6', 'bridge', 'netdev'].map((family) => run('nft', ['-j', 'list', 'table', family, table])));
  const out: NftCounters = { rules: [], elements: [] };
  for (const r of lists) {
    // A table that does not exist (no IPv6 network, no guard yet) has nothing to count.
    if (r.code !== 0) continue;
    const c = parseNftCounters(r.stdout);
    out.rules.push(...c.rules);
    out.elements.push(...c.elements);
  }
  return out;
}
