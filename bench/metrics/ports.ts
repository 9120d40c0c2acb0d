/**
 * Published ports: iperf3 throughput through 127.0.0.1, through the engine namespace's own address
 * (the "host IP") and straight to the container address; TCP connect+echo latency through the
 * published port and direct. Clients run in the engine's namespace (its "host"), servers in the
 * container's namespace (nsenter --net=/proc/PID/ns/net), for every engine alike.
 */
import { join } from 'node:path';
import type { BenchContext } from '../context.js';
import { HOST_IP, PACKAGE_ROOT, type Engine } from '../engines.js';
import * as op from '../ops.js';
import { listProcs, log, run, sleep } from '../util.js';

const TOOLS = join(PACKAGE_ROOT, 'dist', 'bench', 'tools');
const IPERF_PORT = 5201;
const ECHO_PORT = 7000;

async function waitListening(pid: number, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await run('nsenter', [`--net=${op.netnsOf(pid)}`, 'ss', '-Hltn', `sport = :${port}`]);
    if (r.stdout.trim()) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

async function iperf(e: Engine, target: string, seconds: number): Promise<number> {
  const r = await e.inHost('iperf3', ['-c', target, '-p', String(IPERF_PORT), '-t', String(seconds), '-J']);
  try {
    const j = JSON.parse(r.stdout);
    if (j.error) throw new Error(j.error);
    return j.end.sum_received.bits_per_second / 1e9;
  } catch (err) {
    throw new Error(`iperf3 ${e.name} → ${target}: ${err} ${r.stderr.slice(-300)}`);
  }
}

async function tcpping(e: Engine, target: string, count: number): Promise<number[]> {
  const r = await e.inHost(process.execPath, [join(TOOLS, 'tcpping.js'), target, String(ECHO_PORT), String(count)]);
  if (r.code !== 0) throw new Error(`tcpping ${e.name} → ${target}: ${r.stderr.slice(-300)}`);
  return JSON.parse(r.stdout) as number[];
}

export async function ports(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  const G = 'Published ports (iperf3 and TCP connect+echo from the engine\'s host namespace)';
  const paths = [
    { key: 'lo', label: 'via 127.0.0.1', target: () => '127.0.0.1' },
    { key: 'hostip', label: `via the host IP (${HOST_IP})`, target: () => HOST_IP },
    { key: 'direct', label: 'direct to the container IP', target: (ip: string) => ip },
  ];
  for (const p of paths) {
    R.define({ key: `iperf_${p.key}`, group: G, label: `iperf3 throughput ${p.label}`, unit: 'Gbit/s', better: 'higher',
      ...(p.key !== 'direct' ? { target: '≥ 0.95x the direct path (of the same engine)' } : {}) });
  }
  for (const p of paths) {
    R.define({ key: `connect_${p.key}`, group: G, label: `TCP connect+echo latency ${p.label}`, unit: 'ms', better: 'lower',
      ...(p.key !== 'direct' ? { target: '≤ 1.1x the direct path (of the same engine)' } : {}) });
  }
  R.define({ key: 'userland_proxies', group: G, label: 'userland proxy processes for the 2 published ports', unit: 'processes', better: 'lower', target: '0' });

  const seconds = ctx.quick ? 2 : 5;
  // Single iperf3 runs on this shared 2-core VM swing by ±30%; five interleaved repetitions, with
  // the path order reversed every other one, keep a published path and its direct path side by side.
  const reps = ctx.quick ? 1 : 5;
  const pings = ctx.quick ? 50 : 300;
  const ip = new Map<string, string>();
  for (const e of ctx.engines) {
    await op.runDetached(e, 'srv', { network: 'bridge', ports: [{ host: IPERF_PORT, container: IPERF_PORT }, { host: ECHO_PORT, container: ECHO_PORT }] });
    const pid = await op.containerPid(e, 'srv');
    ip.set(e.name, await op.containerIp(e, 'srv', 'bridge'));
    e.spawnHelper(op.netnsOf(pid), 'iperf3', ['-s', '-p', String(IPERF_PORT)]);
    e.spawnHelper(op.netnsOf(pid), process.execPath, [join(TOOLS, 'echo.js'), String(ECHO_PORT)]);
    await waitListening(pid, IPERF_PORT);
    await waitListening(pid, ECHO_PORT);
    const procs = await listProcs();
    const proxies = procs.filter((p) => p.comm === 'docker-proxy' && p.ppid === e.daemonPid).length;
    R.add('userland_proxies', e.name, proxies);
  }
  for (let rep = 0; rep < reps; rep++) {
    for (const p of rep % 2 ? [...paths].reverse() : paths) {
      for (const e of ctx.order(rep)) {
        const t = p.target(ip.get(e.name)!);
        try {
          const g = await iperf(e, t, seconds);
          log(`iperf3 ${e.name} ${p.key}: ${g.toFixed(2)} Gbit/s`);
          R.add(`iperf_${p.key}`, e.name, g);
        } catch (err) { R.note(`iperf_${p.key}`, `${e.name}: ${String(err).slice(0, 200)}`); log(String(err)); }
        try {
          for (const ms of await tcpping(e, t, pings)) R.add(`connect_${p.key}`, e.name, ms);
        } catch (err) { R.note(`connect_${p.key}`, `${e.name}: ${String(err).slice(0, 200)}`); log(String(err)); }
      }
    }
  }
  for (const e of ctx.engines) {
    await e.killHelpers();
    await op.rmForce(e, 'srv');
  }
}
