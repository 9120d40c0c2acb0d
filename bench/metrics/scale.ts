/**
 * Scale: N containers on one user-defined network, one `run -d` after the other, one engine at a
 * time; the run latency of the first 20 against the last 20, and the daemon's memory with N
 * containers. Engines take turns whole rather than container by container: interleaved, each
 * engine's last 20 would also pay for the other engines' hundreds of containers (Docker's 200
 * shims alone hold 2.6 GiB), and the growth would measure the machine, not the engine. Then 500 published ports: `run -d -p` with none
 * published against with 500 already published.
 */
import type { BenchContext } from '../context.js';
import type { Engine } from '../engines.js';
import * as op from '../ops.js';
import { log, median, rssKiB } from '../util.js';

export async function memory(e: Engine): Promise<{ mib: number; procs: Record<string, number>; text: string }> {
  const procs = await e.countedProcs();
  let kib = 0;
  const counts: Record<string, number> = {};
  const byComm: Record<string, number> = {};
  for (const p of procs) {
    const k = await rssKiB(p.pid);
    kib += k;
    const c = p.comm === 'node' ? 'berthd' : p.comm;
    counts[c] = (counts[c] ?? 0) + 1;
    byComm[c] = (byComm[c] ?? 0) + k;
  }
  const text = Object.entries(counts).map(([c, n]) => `${n} ${c} (${(byComm[c]! / 1024).toFixed(1)} MiB)`).join(', ');
  return { mib: kib / 1024, procs: counts, text };
}

const MEM_GROUP = 'Daemon memory (RSS, MiB)';

export function defineMemory(ctx: BenchContext): void {
  ctx.results.define({ key: 'rss_idle', group: MEM_GROUP, label: 'idle (after start, busybox imported, no containers)', unit: 'MiB', better: 'lower' });
}

export async function memoryIdle(ctx: BenchContext): Promise<void> {
  defineMemory(ctx);
  for (const e of ctx.engines) {
    const m = await memory(e);
    ctx.results.add('rss_idle', e.name, m.mib);
    ctx.results.note('rss_idle', `${e.name}: ${m.text}`);
  }
}

export async function scale(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  const N = ctx.quick ? 40 : 200;
  const G = `Scale: ${N} containers on one network (ms)`;
  R.define({ key: 'scale_first20', group: G, label: '`run -d` latency, first 20 containers', unit: 'ms', better: 'lower' });
  R.define({ key: 'scale_last20', group: G, label: `\`run -d\` latency, last 20 containers (${N - 19}–${N})`, unit: 'ms', better: 'lower' });
  R.define({ key: 'scale_growth', group: G, label: 'growth: median(last 20) / median(first 20)', unit: 'x', better: 'lower' });
  R.define({ key: 'rss_scale', group: MEM_GROUP, label: `with ${N} running containers`, unit: 'MiB', better: 'lower' });

  const curves: Record<string, number[]> = {};
  for (const e of ctx.order(0)) {
    await op.networkCreate(e, 'bbscale');
    const c: number[] = [];
    curves[e.name] = c;
    for (let i = 0; i < N; i++) {
      c.push((await op.runDetached(e, `s${i + 1}`, { network: 'bbscale' })).ms);
      if ((i + 1) % 20 === 0) log(`scale: ${e.name} ${i + 1}/${N}: ${median(c.slice(-20)).toFixed(0)} ms`);
    }
    for (const v of c.slice(0, 20)) R.add('scale_first20', e.name, v);
    for (const v of c.slice(-20)) R.add('scale_last20', e.name, v);
    R.add('scale_growth', e.name, median(c.slice(-20)) / median(c.slice(0, 20)));
    const m = await memory(e);
    R.add('rss_scale', e.name, m.mib);
    R.note('rss_scale', `${e.name}: ${m.text}`);
    log(`scale: removing ${e.name}'s containers`);
    await e.removeAll();
  }
  R.extra.scaleCurves = curves;
}

export async function ports500(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  const P = ctx.quick ? 100 : 500;
  const G = `Many published ports (${P}), \`run -d -p\` of one more port (ms)`;
  R.define({ key: 'ports_run_none', group: G, label: '`run -d -p` with no ports published', unit: 'ms', better: 'lower' });
  R.define({ key: 'ports_run_many', group: G, label: `\`run -d -p\` with ${P} ports published`, unit: 'ms', better: 'lower' });
  R.define({ key: 'ports_growth', group: G, label: `growth: median(with ${P}) / median(with none)`, unit: 'x', better: 'lower', target: '≤ 1.2x' });
  R.define({ key: 'ports_publish_100', group: G, label: '`run -d` of one container publishing 100 ports', unit: 'ms', better: 'lower' });
  const reps = ctx.quick ? 3 : 10;
  const one = async (e: Engine, tag: string, i: number) => {
    const name = `p${tag}${i}`;
    const r = await op.runDetached(e, name, { network: 'bridge', ports: [{ host: 9000 + i, container: 80 }] });
    await op.rmForce(e, name);
    return r.ms;
  };
  // One engine at a time, as in scale(): with all engines' ports held at once (Docker's alone is
  // one docker-proxy process per port), the "many" half measured the machine's load, not the engine.
  for (const e of ctx.order(0)) {
    const none: number[] = [];
    const many: number[] = [];
    for (let i = -1; i < reps; i++) {
      const ms = await one(e, 'n', i + 1);
      if (i >= 0) { R.add('ports_run_none', e.name, ms); none.push(ms); }
    }
    for (let k = 0; k < P / 100; k++) {
      const ports = Array.from({ length: 100 }, (_, j) => ({ host: 20000 + k * 100 + j, container: 10000 + j }));
      const r = await op.runDetached(e, `many${k}`, { network: 'bridge', ports });
      R.add('ports_publish_100', e.name, r.ms);
    }
    for (let i = -1; i < reps; i++) {
      const ms = await one(e, 'm', i + 1);
      if (i >= 0) { R.add('ports_run_many', e.name, ms); many.push(ms); }
    }
    R.add('ports_growth', e.name, median(many) / median(none));
    await e.removeAll();
  }
}
