/**
 * npm run bench [-- --quick] [--only GROUP,…] [--engines berth,docker]
 * Starts each engine private to the run, runs the metric groups interleaved, writes the results,
 * and removes everything it made, even on failure or Ctrl-C.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import type { BenchContext } from './context.js';
import { BUSYBOX_TAR, makeBaseDir, makeEngine, PACKAGE_ROOT, type Engine, type EngineName } from './engines.js';
import { api } from './metrics/api.js';
import { cluster } from './metrics/cluster.js';
import { dns } from './metrics/dns.js';
import { lifecycle } from './metrics/lifecycle.js';
import { policy } from './metrics/policy.js';
import { ports } from './metrics/ports.js';
import { pull } from './metrics/pull.js';
import { memoryIdle, ports500, scale } from './metrics/scale.js';
import { renderLatest, writeAll, type Meta } from './report.js';
import { Results } from './results.js';
import { listProcs, log, run } from './util.js';

const GROUPS: Record<string, (ctx: BenchContext) => Promise<void> | void> = {
  memory: memoryIdle, lifecycle, api, dns, ports, scale, ports500, pull, cluster, policy,
};
/** Groups that start engines of their own (labs of hosts): a run of only these starts no single-host engine. */
const SELF_CONTAINED = new Set(['cluster']);

function parseArgs(argv: string[]) {
  const o = { render: false, quick: false, only: Object.keys(GROUPS), engines: ['berth', 'docker'] as EngineName[], write: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = () => { const v = a.includes('=') ? a.split('=')[1]! : argv[++i]; if (!v) throw new Error(`${a} needs a value`); return v; };
    if (a === '--quick') o.quick = true;
    else if (a.startsWith('--only')) o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a.startsWith('--engines')) o.engines = val().split(',').map((s) => s.trim()) as EngineName[];
    else if (a === '--no-write') o.write = false;
    else if (a === '--render') o.render = true;
    else if (a === '-h' || a === '--help') {
      process.stdout.write(`usage: npm run bench -- [--quick] [--only ${Object.keys(GROUPS).join(',')}] [--engines berth,docker,podman] [--no-write] [--render]\n`);
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  for (const g of o.only) if (!GROUPS[g]) throw new Error(`unknown group ${g} (groups: ${Object.keys(GROUPS).join(', ')})`);
  for (const e of o.engines) if (!['berth', 'docker', 'podman'].includes(e)) throw new Error(`unknown engine ${e} (berth, docker, podman)`);
  return o;
}

async function leakCheck(engines: Engine[], base: string): Promise<string[]> {
  const leaks: string[] = [];
  const ns = await run('ip', ['netns', 'list']);
  for (const line of ns.stdout.split('\n')) {
    const n = line.split(' ')[0];
    if (n && engines.some((e) => e.netns === n)) leaks.push(`netns ${n}`);
  }
  for (const p of await listProcs()) {
    if (p.pid !== process.pid && p.cmdline.includes(base)) leaks.push(`process ${p.pid} ${p.cmdline.slice(0, 100)}`);
  }
  const mi = await fs.readFile('/proc/self/mountinfo', 'utf8');
  for (const l of mi.split('\n')) if (l.split(' ')[4]?.startsWith(base)) leaks.push(`mount ${l.split(' ')[4]}`);
  if (existsSync(base)) leaks.push(`directory ${base}`);
  const host = await run('ip', ['link', 'show', 'docker0']);
  if (host.code === 0) leaks.push('docker0 in the host namespace');
  return leaks;
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.render) {
    await renderLatest(PACKAGE_ROOT);
    log('rewrote docs/benchmarks.md from bench/results/latest.json');
    return 0;
  }
  if (process.getuid?.() !== 0) throw new Error('the bench needs root');
  if (!existsSync(BUSYBOX_TAR)) throw new Error(`${BUSYBOX_TAR} missing: run npm run setup`);
  if (opts.engines.includes('podman') && (await run('sh', ['-c', 'command -v podman && command -v netavark || test -x /usr/lib/podman/netavark'])).code !== 0) {
    log('installing podman (scripts/bench-setup.sh with BENCH_PODMAN=1)');
    const r = await run('bash', [join(PACKAGE_ROOT, 'scripts', 'bench-setup.sh')], { env: { ...process.env, BENCH_PODMAN: '1' }, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.code !== 0) throw new Error('bench-setup.sh failed for podman');
  }
  const t0 = Date.now();
  const base = await makeBaseDir();
  const engines: Engine[] = [];
  let cleaning: Promise<string[]> | undefined;
  const cleanup = () => (cleaning ??= (async () => {
    const leaks: string[] = [];
    for (const e of engines) leaks.push(...(await e.stop().catch((err) => [`${e.name} stop: ${err}`])));
    await fs.rm(base, { recursive: true, force: true }).catch(() => undefined);
    leaks.push(...await leakCheck(engines, base));
    return leaks;
  })());
  const onSignal = (sig: string) => {
    log(`${sig}: cleaning up`);
    void cleanup().then((l) => { if (l.length) log(`leaks: ${l.join('; ')}`); process.exit(130); });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const results = new Results();
  let failed = false;
  try {
    for (const name of opts.engines) engines.push(await makeEngine(name, base));
    for (const e of opts.only.every((g) => SELF_CONTAINED.has(g)) ? [] : engines) {
      log(`starting ${e.name} in netns ${e.netns}`);
      await e.start();
      log(`${e.name} ${e.version} up`);
    }
    const ctx: BenchContext = {
      engines, results, quick: opts.quick, base,
      // A B, B A, … (with three engines: rotate).
      order: (rep) => {
        if (engines.length <= 2) return rep % 2 === 0 ? engines : [...engines].reverse();
        const k = ((rep % engines.length) + engines.length) % engines.length;
        return [...engines.slice(k), ...engines.slice(0, k)];
      },
    };
    const ordered = Object.keys(GROUPS).filter((g) => opts.only.includes(g));
    for (const g of ordered) {
      log(`== ${g}`);
      try {
        await GROUPS[g]!(ctx);
      } catch (err) {
        failed = true;
        const msg = `${g}: ${err instanceof Error ? err.message : String(err)}`;
        log(`FAILED ${msg}`);
        results.errors.push(msg);
        for (const e of engines) await e.removeAll().catch(() => undefined);
      }
    }
    if (opts.write) {
      const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
      let commit = '';
      try {
        commit = execFileSync('git', ['-C', PACKAGE_ROOT, 'rev-parse', '--short', 'HEAD']).toString().trim();
        const dirty = execFileSync('git', ['-C', PACKAGE_ROOT, 'status', '--porcelain', '--', 'src']).toString().trim();
        if (dirty) commit += ' + uncommitted changes in src/';
      } catch { /* no git */ }
      const meta: Meta = {
        date: new Date().toISOString().slice(0, 19) + 'Z',
        mode: opts.quick ? 'quick' : 'full',
        engines: Object.fromEntries(engines.map((e) => [e.name, e.version])),
        machine: {
          cores: cpus().length, cpu: cpus()[0]?.model ?? '?', memGiB: Math.round(totalmem() / 2 ** 30), kernel: release(),
          node: process.version, dockerServer: engines.find((e) => e.name === 'docker')?.version || String(results.extra.dockerVersion ?? 'not run'),
          berth: `${pkg.version}${commit ? ` (${commit})` : ''}`,
        },
        command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
        durationS: (Date.now() - t0) / 1000,
      };
      // A run of some groups replaces those groups' numbers and keeps the others' from the last run.
      const partial = Object.keys(GROUPS).some((g) => !opts.only.includes(g));
      await writeAll(PACKAGE_ROOT, meta, results, engines.map((e) => e.name), partial);
      log('wrote bench/results/latest.json and docs/benchmarks.md');
    }
    for (const m of results.summary()) {
      const parts = Object.entries(m.engines).map(([k, v]) => `${k} ${v.median.toFixed(3)}/${v.p90.toFixed(3)}`);
      log(`${m.key}: ${parts.join(' ')}${m.ratio !== undefined ? ` ratio ${m.ratio.toFixed(2)}` : ''}`);
    }
  } catch (err) {
    failed = true;
    log(`FAILED: ${err instanceof Error ? err.stack : String(err)}`);
    for (const e of engines) log(`${e.name} log:\n${await e.logTail()}`);
  } finally {
    const leaks = await cleanup();
    if (leaks.length) { log(`LEAKS: ${leaks.join('; ')}`); failed = true; } else log('clean: no namespaces, processes, mounts or directories left');
  }
  return failed ? 1 : 0;
}

main().then((code) => process.exit(code), (err) => { log(String(err)); process.exit(2); });
