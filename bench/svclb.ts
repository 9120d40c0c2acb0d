/**
 * node dist/bench/svclb.js [--sizes 100,10000]   (berth only)
 * The kernel side of one backend change in a container's service balancer (issue 18: "with 10,000
 * services: one backend change ≤ 20 ms and ≤ 1.5x its cost at 100 services"): a scratch namespace
 * whose `berth_svc` table balances N VIPs of two backends each, then one backend of one service
 * replaced, timed as ServiceBalancers.sync does it (the walk of the N entries it is handed, and
 * the transaction of what differs: for a replaced backend, a slot's elements through
 * berth-nftset), at 100 and at 10,000 services (a namespace each), alternating; the last change
 * is then read back from the kernel. The replaced backend's UDP flows, which ServiceBalancers
 * drops after the change, are waited for and timed apart. Nothing but those namespaces is
 * touched; they go at the end.
 * This is the balancer alone: what decides the change (the store's watch, ServiceNet, which makes
 * the entries) is not in it.
 */
import { ServiceBalancers, type VipEntry } from '../src/network/servicelb.js';
import { run, runOk } from '../src/util/exec.js';
import { log, median, now, quantile } from './util.js';

const ROUNDS = 20;
const arg = process.argv.indexOf('--sizes');
/** The two table sizes compared (`--sizes 100,10000`). */
const [SMALL, LARGE] = (arg > 0 ? process.argv[arg + 1]! : '100,10000').split(',').map(Number) as [number, number];

function entries(n: number, swap: boolean): VipEntry[] {
  return Array.from({ length: n }, (_, i) => {
    const base = `10.${60 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    const vip = `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    // Two backends per service, each a distinct address; service 0's second backend is swapped.
    const second = i === 0 && swap ? '10.99.0.2' : `10.${80 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    return { service: `svc${String(i).padStart(12, '0')}x`, vip, backends: [base, second] };
  });
}

async function main(): Promise<void> {
  const names = [SMALL, LARGE].map((n) => `bblb${process.pid}n${n}`);
  for (const ns of names) await runOk('ip', ['netns', 'add', ns]);
  const netnsOf = (n: number) => `/run/netns/bblb${process.pid}n${n}`;
  const lb = new ServiceBalancers((m) => log(m));
  const times = new Map<number, number[]>([[SMALL, []], [LARGE, []]]);
  const drops: number[] = [];
  try {
    for (const n of times.keys()) {
      const t0 = now();
      await lb.sync(new Map([[`s${n}`, { netns: netnsOf(n), entries: entries(n, false) }]]), false);
      log(`${n} services: table made in ${(now() - t0).toFixed(0)} ms`);
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const n of r % 2 ? [LARGE, SMALL] : [SMALL, LARGE]) {
        // New objects every time, as ServiceNet hands them over; making them is ServiceNet's work, not timed.
        const want = new Map([[`s${n}`, { netns: netnsOf(n), entries: entries(n, r % 2 === 0) }]]);
        const t0 = now();
        await lb.sync(want, false);
        times.get(n)!.push(now() - t0);
        // The replaced backend's UDP flows are dropped after the change, not within it: timed apart.
        const t1 = now();
        await lb.flowsDropped();
        drops.push(now() - t1);
      }
    }
    // The last round put service 0's own second backend back: the kernel must have it.
    for (const n of times.keys()) {
      const listed = await runOk('nft', ['list', 'map', 'ip', 'berth_svc', 'slot1'], { netns: netnsOf(n) });
      if (!/10\.100\.0\.0 counter packets \d+ bytes \d+ : 10\.80\.0\.0\b/.test(listed)) throw new Error(`${n} services: the last change is not in the kernel`);
    }
  } finally {
    for (const ns of names) await run('ip', ['netns', 'del', ns]);
  }
  const p = (v: number[]) => `median ${median(v).toFixed(2)} ms, p90 ${quantile(v, 0.9).toFixed(2)} ms`;
  const a = times.get(SMALL)!;
  const b = times.get(LARGE)!;
  log(`one backend change, ${SMALL} services: ${p(a)}`);
  log(`one backend change, ${LARGE} services: ${p(b)} (${(median(b) / median(a)).toFixed(2)}x)`);
  log(`then the replaced backend's UDP flows dropped (conntrack -D, after the change): ${p(drops)}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
