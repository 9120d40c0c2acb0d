/**
 * `npm run chaos`: the long forms of issue 22's suite, each in a throwaway test host (its own
 * network namespace, root and socket), cleaned up even on failure.
 *
 *   npm run chaos -- [--seed N] [--cycles N] [--minutes N] [--workers N] [--no-pull] [--no-build] [--keep-going]
 *   npm run chaos -- --fuzz N [--seed N]
 *   npm run chaos -- --archive-fuzz N [--seed N]
 *   npm run chaos -- --soak [--soak-cycles N] [--traffic-minutes M] [--parallel N]
 *   npm run chaos -- --hosts [--seed N] [--cycles N] [--minutes N] [--faults a,b]   (three lab hosts, faults across them;
 *                    --faults takes only these kinds: berthd, partition, etcd-leader, quorum, host-restart)
 *   add --write-doc to put the figures into docs/reliability.md
 *
 * Exit status 1 when anything was found (a violation, a hang, a 5xx for malformed input, a leak).
 * A hang across hosts names a directory that keeps every berthd's and etcd member's log.
 * Ctrl-C, or the reader of its output going away (`| head`), stops a run and takes its host or lab
 * down (across hosts: after the cycle under way).
 */
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT, TestHost } from '../integration/harness.js';
import { runArchiveFuzz } from './archivefuzz.js';
import { runFuzz } from './fuzz.js';
import { FAULTS, runMultihostChaos, type HostFault, type MultihostReport } from './multihost.js';
import { runSoak, soakTable } from './soak.js';
import { runChaos, type ChaosReport } from './workload.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
const num = (name: string, dflt: number) => (arg(name) !== undefined ? Number(arg(name)) : dflt);

const DOC = join(PACKAGE_ROOT, 'docs', 'reliability.md');

/** Replaces the text between <!-- NAME:begin --> and <!-- NAME:end --> in docs/reliability.md. */
async function writeSection(name: string, text: string): Promise<void> {
  if (!existsSync(DOC)) return;
  const doc = await fs.readFile(DOC, 'utf8');
  const re = new RegExp(`(<!-- ${name}:begin -->\\n)[\\s\\S]*?(<!-- ${name}:end -->)`);
  if (!re.test(doc)) { console.error(`chaos: no ${name} section in ${DOC}`); return; }
  await fs.writeFile(DOC, doc.replace(re, (_m, a: string, b: string) => `${a}${text}\n${b}`));
  console.log(`chaos: wrote the ${name} figures into docs/reliability.md`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : 0;
}

function chaosFigures(r: ChaosReport, leaks: string[]): string {
  const ops = Object.entries(r.operations).sort();
  const total = ops.reduce((a, [, o]) => a + o.ok + o.refused + o.serverError + o.interrupted, 0);
  return [
    `Run of ${new Date().toISOString().slice(0, 10)}: \`npm run chaos -- --seed ${r.seed} --cycles ${r.cycles}\` (${Math.round(r.durationMs / 60000)} min).`,
    '',
    `| figure | value |`, `|---|---|`,
    `| fault cycles survived | ${r.cycles} |`,
    ...Object.entries(r.faults).map(([k, v]) => `| faults: ${k} | ${v}${k === 'runc' ? ` (${r.runcMissed} found no runc alive)` : ''} |`),
    `| operations | ${total} (${ops.map(([k, o]) => `${k} ${o.ok + o.refused + o.serverError + o.interrupted}`).join(', ')}) |`,
    `| operations cut by a fault (connection lost) | ${ops.reduce((a, [, o]) => a + o.interrupted, 0)} |`,
    `| DNS checks (every running container by name, removed names NXDOMAIN) | ${r.dnsChecks} |`,
    `| berthd restarts: median / slowest until /_ping answers | ${median(r.restartsMs)} / ${Math.max(0, ...r.restartsMs)} ms |`,
    `| hangs (an operation or a restart past its bound) | ${r.hangs.length} |`,
    `| invariant violations (leaks, duplicate addresses, store/kernel disagreements) | ${r.violations.length} |`,
    `| restart-policy or survivor violations | ${r.policyViolations.length} |`,
    `| leaks after the run (TestHost.destroy) | ${leaks.length} |`,
    '',
    `5xx answers seen while faults were injected: ${Object.keys(r.serverErrors).length ? Object.entries(r.serverErrors).map(([k, v]) => `\`${k}\` ×${v}`).join('; ') : 'none'}.`,
  ].join('\n');
}

function multihostFigures(r: MultihostReport): string {
  const sorted = [...r.convergeMs].sort((a, b) => a - b);
  const at = (q: number) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : 0;
  return [
    `Run of ${new Date().toISOString().slice(0, 10)}: \`npm run chaos -- --hosts --seed ${r.seed} --cycles ${r.cycles}\` (${Math.round(r.durationMs / 60000)} min).`,
    '',
    `| figure | value |`, `|---|---|`,
    `| fault cycles survived | ${r.cycles} |`,
    ...Object.entries(r.faults).map(([k, v]) => `| faults: ${k} | ${v} |`),
    `| operations (ok / failed while faults were injected) | ${Object.entries(r.operations).map(([k, v]) => `${k} ${v.ok}/${v.failed}`).join(', ')} |`,
    `| every node Ready → every host agrees: median / slowest | ${at(0.5)} / ${sorted[sorted.length - 1] ?? 0} ms |`,
    `| hangs | ${r.hangs.length} |`,
    `| violations (stale or missing FDB, neighbour, name or VIP entries, shared addresses, lost containers, tasks lost or duplicated) | ${r.violations.length} |`,
    `| leaks after the run (Lab.destroy) | ${r.leaks.length} |`,
  ].join('\n');
}

const VALUED = ['seed', 'cycles', 'minutes', 'workers', 'fuzz', 'archive-fuzz', 'soak-cycles', 'traffic-minutes', 'parallel', 'faults'];
const FLAGS = ['hosts', 'soak', 'no-pull', 'no-build', 'keep-going', 'write-doc'];

/** The usage is this file's own header: one text to keep true. */
async function usage(): Promise<string> {
  const src = await fs.readFile(new URL(import.meta.url), 'utf8').catch(() => '');
  const header = /\/\*\*\n([\s\S]*?)\*\//.exec(src)?.[1] ?? '';
  return header.split('\n').map((l) => l.replace(/^ \* ?/, '')).join('\n').trim();
}

/**
 * A mistyped option must not start a run of a thousand cycles (`--help` did). Every argument is
 * a known flag, or a known option and its value.
 */
function badArguments(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const name = args[i]!.replace(/^--/, '');
    if (!args[i]!.startsWith('--')) return `unexpected argument ${args[i]}`;
    if (FLAGS.includes(name)) continue;
    if (!VALUED.includes(name)) return `unknown option ${args[i]}`;
    if (args[i + 1] === undefined || args[i + 1]!.startsWith('--')) return `${args[i]} needs a value`;
    i++;
  }
  return undefined;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) { console.log(await usage()); return 0; }
  const bad = badArguments(args);
  if (bad) { console.error(`chaos: ${bad}\n\n${await usage()}`); return 2; }
  const seed = num('seed', Date.now() % 1_000_000);
  // A reader that goes away (`npm run chaos | head`) made the next line an uncaught EPIPE, and the
  // run died with its lab still up (berthds, etcd members, namespaces): it now stops as on SIGINT,
  // taking its lab down, and its lines go nowhere.
  const readerGone = new AbortController();
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    readerGone.abort();
  });
  if (flag('hosts')) {
    const cycles = num('cycles', 100);
    const minutes = arg('minutes') !== undefined ? Number(arg('minutes')) : undefined;
    const faults = arg('faults')?.split(',').filter(Boolean) as HostFault[] | undefined;
    const unknown = faults?.filter((f) => !FAULTS.includes(f));
    if (unknown?.length) throw new Error(`--faults: no fault ${unknown.join(', ')} (there are ${FAULTS.join(', ')})`);
    const only = faults?.length ? ` --faults ${faults.join(',')}` : '';
    console.log(`chaos: across hosts, seed ${seed}, up to ${cycles} cycles (replay: npm run chaos -- --hosts --seed ${seed} --cycles ${cycles}${only})`);
    const stop = new AbortController();
    process.once('SIGINT', () => { console.log('chaos: stopping after this cycle (the lab is taken down)'); stop.abort(); });
    readerGone.signal.addEventListener('abort', () => stop.abort());
    const r = await runMultihostChaos({ seed, cycles, ...(faults?.length ? { faults } : {}), ...(minutes !== undefined ? { minutes } : {}), signal: stop.signal, log: (l) => console.log(`chaos: ${l}`) });
    console.log(`chaos: ${JSON.stringify(r, null, 1)}`);
    if (flag('write-doc')) await writeSection('multihost', multihostFigures(r));
    return r.violations.length + r.hangs.length + r.leaks.length ? 1 : 0;
  }
  const host = await TestHost.create({ outside: true });
  let found = 0;
  const cleanup = async () => {
    const leaks = await host.destroy();
    if (leaks.length) console.log(`chaos: LEAKS after cleanup: ${leaks.join('; ')}`);
    return leaks;
  };
  process.once('SIGINT', () => { void cleanup().then(() => process.exit(130)); });
  readerGone.signal.addEventListener('abort', () => { void cleanup().then(() => process.exit(141)); });
  try {
    if (arg('fuzz')) {
      const runs = num('fuzz', 1000);
      console.log(`chaos: fuzzing ${runs} requests, seed ${seed} (replay: npm run chaos -- --fuzz ${runs} --seed ${seed})`);
      await host.api('POST', '/networks/create', { Name: 'fzn', IPAM: { Config: [{ Subnet: '10.83.0.0/24' }] } });
      await host.api('POST', '/volumes/create', { Name: 'fzv' });
      await host.runDetached({ Cmd: ['sleep', '3600'], HostConfig: { NetworkMode: 'fzn' } }, 'fz');
      const r = await runFuzz(host, { runs, seed, fixtures: { container: 'fz', network: 'fzn', volume: 'fzv', image: 'busybox' } });
      console.log(`chaos: fuzz: ${r.tried} requests, by status ${JSON.stringify(r.byStatus)}`);
      for (const f of r.failures) console.log(`chaos: FOUND ${f}`);
      found += r.failures.length;
      const leaks = await cleanup();
      found += leaks.length;
      if (flag('write-doc')) await writeSection('fuzz', `Last long fuzz: \`npm run chaos -- --fuzz ${runs} --seed ${seed}\`: ${r.tried} requests (${Object.entries(r.byStatus).map(([k, v]) => `${k}: ${v}`).join(', ')}), ${r.failures.length} findings, ${leaks.length} leaks.`);
      return found ? 1 : 0;
    }
    if (arg('archive-fuzz')) {
      const runs = num('archive-fuzz', 1000);
      console.log(`chaos: fuzzing ${runs} archives, seed ${seed} (replay: npm run chaos -- --archive-fuzz ${runs} --seed ${seed})`);
      await host.runDetached({ Cmd: ['sleep', '3600'], HostConfig: { NetworkMode: 'none' } }, 'tarfz');
      const r = await runArchiveFuzz(host, { runs, seed, container: 'tarfz' });
      console.log(`chaos: archive fuzz: ${r.tried} archives, by status ${JSON.stringify(r.byStatus)}`);
      for (const f of r.failures) console.log(`chaos: FOUND ${f}`);
      found += r.failures.length;
      const leaks = await cleanup();
      found += leaks.length;
      if (flag('write-doc')) await writeSection('archivefuzz', `Last long archive fuzz: \`npm run chaos -- --archive-fuzz ${runs} --seed ${seed}\`: ${r.tried} archives (${Object.entries(r.byStatus).map(([k, v]) => `${k}: ${v}`).join(', ')}), ${r.failures.length} findings, ${leaks.length} leaks.`);
      return found ? 1 : 0;
    }
    if (flag('soak')) {
      const cycles = num('soak-cycles', 10_000);
      const minutes = num('traffic-minutes', 60);
      console.log(`chaos: soak of ${cycles} run/rm cycles and ${minutes} min of DNS and published-port traffic`);
      const r = await runSoak(host, { cycles, trafficMinutes: minutes, parallel: num('parallel', 4), log: (l) => console.log(`chaos: ${l}`) });
      console.log(soakTable(r));
      console.log(`chaos: soak: ${r.cycles} cycles (${r.failedCycles} failed), ${r.dnsQueries} DNS lookups and ${r.httpOk} HTTP fetches answered (${r.httpFailed} failed) in ${minutes} min; violations: ${r.violations.join('; ') || 'none'}`);
      found += r.violations.length + r.failedCycles + r.httpFailed;
      const leaks = await cleanup();
      found += leaks.length;
      if (flag('write-doc')) {
        await writeSection('soak', [
          `Run of ${new Date().toISOString().slice(0, 10)}: \`npm run chaos -- --soak --soak-cycles ${cycles} --traffic-minutes ${minutes}\`: ${r.cycles} run/rm cycles (${r.failedCycles} failed, ${Math.ceil(r.cycles / 4)} of them with a published port), then ${minutes} min of traffic: ${r.dnsQueries} DNS lookups by name from a container, ${r.httpOk} HTTP fetches (container to container by name, and through the published port from the host) answered, ${r.httpFailed} failed. Invariant violations: ${r.violations.length}; leaks after the run: ${leaks.length}.`,
          '',
          soakTable(r),
        ].join('\n'));
      }
      return found ? 1 : 0;
    }
    const cycles = num('cycles', 1000);
    const minutes = arg('minutes') !== undefined ? Number(arg('minutes')) : undefined;
    console.log(`chaos: seed ${seed}, up to ${cycles} cycles${minutes ? ` or ${minutes} min` : ''} (replay: npm run chaos -- --seed ${seed} --cycles ${cycles})`);
    const r = await runChaos(host, {
      seed, cycles, ...(minutes !== undefined ? { minutes } : {}), workers: num('workers', 4), pull: !flag('no-pull'), build: !flag('no-build'),
      keepGoing: flag('keep-going'), log: (l) => console.log(`chaos: ${l}`),
    });
    console.log(`chaos: ${JSON.stringify(r, null, 1)}`);
    found += r.violations.length + r.hangs.length + r.policyViolations.length;
    const leaks = await cleanup();
    found += leaks.length;
    console.log(`chaos: ${r.cycles} cycles, faults ${JSON.stringify(r.faults)}, ${r.violations.length} violations, ${r.hangs.length} hangs, ${r.policyViolations.length} policy violations, ${leaks.length} leaks`);
    if (flag('write-doc')) await writeSection('chaos', chaosFigures(r, leaks));
    return found ? 1 : 0;
  } catch (e) {
    console.error(`chaos: ${(e as Error).stack}`);
    await cleanup().catch(() => undefined);
    return 2;
  }
}

process.exit(await main());
