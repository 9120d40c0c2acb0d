/**
 * npm run bench:ab -- --a PATH/berthd.js --b PATH/berthd.js [--reps N] [--label-a A] [--label-b B]
 *
 * Two builds of berth measured against each other on the lifecycle operations, each in its own
 * namespace and root, operation by operation in alternating order (A then B, then B then A), so
 * whatever else loads the machine loads both alike. The answer is the ratio B/A of each pair of
 * neighbouring measurements: its median with a 95 % bootstrap interval. An interval that holds 1.00
 * means "no difference this run can see" (the "within noise" of a refactoring that must not cost
 * anything). Never a timed test; prints a table and writes nothing.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BerthEngine } from './engines.js';
import * as op from './ops.js';
import { log, median, now, pairedRatio } from './util.js';

interface Args { a: string; b: string; reps: number; labelA: string; labelB: string }

function parseArgs(argv: string[]): Args {
  const o: Partial<Args> = { reps: 40, labelA: 'A', labelB: 'B' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = () => { const v = argv[++i]; if (!v) throw new Error(`${a} needs a value`); return v; };
    if (a === '--a') o.a = resolve(val());
    else if (a === '--b') o.b = resolve(val());
    else if (a === '--reps') o.reps = Number(val());
    else if (a === '--label-a') o.labelA = val();
    else if (a === '--label-b') o.labelB = val();
    else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: npm run bench:ab -- --a PATH/berthd.js --b PATH/berthd.js [--reps N] [--label-a A] [--label-b B]\n');
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (!o.a || !o.b) throw new Error('--a and --b name the two berthd.js builds to compare');
  if (!Number.isInteger(o.reps) || o.reps! < 5) throw new Error('--reps must be an integer of at least 5');
  return o as Args;
}

type Sample = Record<string, number>;

/** One repetition's operations on one engine: the lifecycle group's, in its order. */
async function once(e: BerthEngine, rep: number): Promise<Sample> {
  const out: Sample = {};
  const net = `abn${rep}`;
  out.network_create = await op.networkCreate(e, net);
  out.network_rm = await op.networkRm(e, net);
  const n = await op.runDetached(e, `none${rep}`, { network: 'none' });
  out.run_none = n.ms;
  out.rm_none = await op.rmForce(e, `none${rep}`);
  const name = `br${rep}`;
  out.run_bridge = (await op.runDetached(e, name, { network: 'ablife' })).ms;
  out.connect = await op.connect(e, 'ablife2', name);
  out.disconnect = await op.disconnect(e, 'ablife2', name);
  out.exec = await op.execTrue(e, name);
  out.rm_bridge = await op.rmForce(e, name);
  return out;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const base = await mkdtemp(join(tmpdir(), 'berth-ab-'));
  const engines = [args.a, args.b].map((path, i) => {
    const e = new BerthEngine('berth', join(base, i ? 'b' : 'a'), `bb-ab${i ? 'b' : 'a'}-${process.pid}`);
    e.berthd = path;
    return e;
  });
  const [A, B] = engines as [BerthEngine, BerthEngine];
  const samples: [Sample[], Sample[]] = [[], []];
  let failed = false;
  try {
    for (const e of engines) {
      await mkdir(e.dir, { recursive: true });
      await e.start();
      await op.networkCreate(e, 'ablife');
      await op.networkCreate(e, 'ablife2');
    }
    const t0 = now();
    for (let rep = -1; rep < args.reps; rep++) {
      // Repetition -1 warms both up; then the order swaps every repetition.
      const order = rep % 2 === 0 ? [0, 1] : [1, 0];
      const got: Sample[] = [];
      for (const i of order) got[i] = await once(engines[i]!, rep + 1);
      if (rep >= 0) { samples[0].push(got[0]!); samples[1].push(got[1]!); }
      if (rep >= 0 && (rep + 1) % 10 === 0) log(`ab: ${rep + 1}/${args.reps} repetitions (${Math.round((now() - t0) / 1000)} s)`);
    }
    const keys = Object.keys(samples[0][0]!);
    const rows = keys.map((k) => {
      const a = samples[0].map((s) => s[k]!);
      const b = samples[1].map((s) => s[k]!);
      const r = pairedRatio(a, b);
      const verdict = r.lo > 1 ? `${args.labelB} slower` : r.hi < 1 ? `${args.labelB} faster` : 'no difference seen';
      return `| ${k} | ${median(a).toFixed(1)} | ${median(b).toFixed(1)} | ${r.median.toFixed(2)} [${r.lo.toFixed(2)}, ${r.hi.toFixed(2)}] | ${verdict} |`;
    });
    process.stdout.write([
      '',
      `${args.labelA}: ${args.a}`,
      `${args.labelB}: ${args.b}`,
      `${args.reps} repetitions, alternating order; ms, medians; ratio ${args.labelB}/${args.labelA} of neighbouring pairs with its 95 % bootstrap interval`,
      '',
      `| operation | ${args.labelA} | ${args.labelB} | ${args.labelB}/${args.labelA} [95 %] | |`,
      '|---|---|---|---|---|',
      ...rows,
      '',
    ].join('\n'));
  } catch (e) {
    failed = true;
    log(`ab: ${(e as Error).message}`);
  } finally {
    for (const e of [A, B]) {
      await e.removeAll().catch(() => undefined);
      const leaks = await e.stop();
      if (leaks.length) { failed = true; log(`ab: left behind: ${leaks.join('; ')}`); }
    }
    await rm(base, { recursive: true, force: true });
  }
  return failed ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  main().then((code) => process.exit(code), (e) => { log(`ab: ${(e as Error).stack}`); process.exit(1); });
}
