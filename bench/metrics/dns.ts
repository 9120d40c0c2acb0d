/**
 * Embedded DNS: dnsperf from inside a container's namespace against 127.0.0.11, for a container
 * name on the same user-defined network; then misses for a name queried the moment `run -d` returns.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { BenchContext } from '../context.js';
import * as op from '../ops.js';
import { cpuSeconds, log, median, now, quantile, run } from '../util.js';

interface PerfOut { qps: number; avgMs: number; lost: number; sent: number; completed: number; latencies: number[] }

async function dnsperf(clientPid: number, file: string, seconds: number, maxQps?: number): Promise<PerfOut> {
  const args = [`--net=${op.netnsOf(clientPid)}`, 'dnsperf', '-s', await op.resolverOf(clientPid), '-d', file, '-l', String(seconds), '-t', '2'];
  if (maxQps) args.push('-Q', String(Math.round(maxQps)), '-v');
  const r = await run('nsenter', args);
  const num = (re: RegExp) => { const m = re.exec(r.stdout); return m ? Number(m[1]) : NaN; };
  const latencies: number[] = [];
  if (maxQps) {
    // -v: one line per answered query, "> NOERROR name A 0.000123" (latency in seconds, last field)
    for (const line of r.stdout.split('\n')) {
      if (!line.startsWith('> ')) continue;
      const f = line.trim().split(/\s+/);
      const s = Number(f[f.length - 1]);
      if (Number.isFinite(s)) latencies.push(s * 1000);
    }
  }
  const out = {
    qps: num(/Queries per second:\s+([\d.]+)/),
    avgMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
    lost: num(/Queries lost:\s+(\d+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    completed: num(/Queries completed:\s+(\d+)/),
    latencies,
  };
  if (!Number.isFinite(out.qps)) throw new Error(`dnsperf: ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
  return out;
}

export async function dns(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  const G = 'Embedded DNS (dnsperf from a container namespace to its resolver: 127.0.0.11, or the gateway for Podman)';
  R.define({ key: 'dns_qps', group: G, label: 'queries/s for a container name (unlimited rate)', unit: 'q/s', better: 'higher', target: '≥ 1.5x Docker, no lost queries' });
  R.define({ key: 'dns_avg_latency', group: G, label: 'average latency at full load', unit: 'ms', better: 'lower' });
  R.define({ key: 'dns_daemon_cpu', group: G, label: 'daemon CPU during the full-load run (berthd / dockerd+containerd; % of one core)', unit: '%', better: 'lower' });
  R.define({ key: 'dns_lost', group: G, label: 'lost queries at full load (per run)', unit: 'queries', better: 'lower', target: '0' });
  R.define({ key: 'dns_p99_half', group: G, label: 'latency at half of Docker\'s rate (all queries; p99 shown when ≥ 50)', unit: 'ms', better: 'lower', target: 'p99 < 1 ms' });
  R.define({ key: 'dns_fresh_miss', group: G, label: 'misses for a name queried the moment `run -d` returns (per trial, 1 = miss)', unit: 'miss', better: 'lower', target: '0 misses' });

  const seconds = ctx.quick ? 3 : 10;
  const reps = ctx.quick ? 1 : 3;
  const client = new Map<string, number>();
  const file = join(ctx.engines[0]!.dir, '..', 'dns-queries.txt');
  await fs.writeFile(file, 'dnstarget A\n');
  for (const e of ctx.engines) {
    await op.networkCreate(e, 'bbdns');
    await op.runDetached(e, 'dnstarget', { network: 'bbdns' });
    await op.runDetached(e, 'dnsclient', { network: 'bbdns' });
    const pid = await op.containerPid(e, 'dnsclient');
    client.set(e.name, pid);
    if (!(await op.waitReachable(pid, 'dnstarget'))) R.note('dns_qps', `${e.name}: dnstarget never resolved`);
  }
  const dockerQps: number[] = [];
  for (let rep = 0; rep < reps; rep++) {
    for (const e of ctx.order(rep)) {
      const pids = (await e.countedProcs()).map((p) => p.pid);
      const c0 = await cpuSeconds(pids);
      const t0 = now();
      const p = await dnsperf(client.get(e.name)!, file, seconds);
      R.add('dns_daemon_cpu', e.name, (100 * (await cpuSeconds(pids) - c0)) / ((now() - t0) / 1000));
      log(`dns ${e.name}: ${Math.round(p.qps)} q/s, avg ${p.avgMs.toFixed(3)} ms, lost ${p.lost}/${p.sent}`);
      R.add('dns_qps', e.name, p.qps);
      R.add('dns_avg_latency', e.name, p.avgMs);
      R.add('dns_lost', e.name, p.lost);
      if (e.name === 'docker') dockerQps.push(p.qps);
    }
  }
  // Latency distribution at half of Docker's measured rate (or 40,000 q/s without Docker).
  const half = dockerQps.length ? median(dockerQps) / 2 : 40_000;
  R.note('dns_p99_half', `rate limited with dnsperf -Q ${Math.round(half)} (half of Docker's median q/s), ${seconds} s, every answered query's latency from dnsperf -v`);
  for (const e of ctx.order(0)) {
    const p = await dnsperf(client.get(e.name)!, file, seconds, half);
    for (const l of p.latencies) R.add('dns_p99_half', e.name, l);
    log(`dns ${e.name} at ${Math.round(half)} q/s: p50 ${quantile(p.latencies, 0.5).toFixed(3)} p99 ${quantile(p.latencies, 0.99).toFixed(3)} ms, lost ${p.lost}`);
    if (p.lost) R.note('dns_p99_half', `${e.name}: ${p.lost} lost of ${p.sent} at half rate`);
  }

  // Fresh names: query the moment run -d returns.
  const trials = ctx.quick ? 10 : 30;
  for (let i = 0; i < trials; i++) {
    for (const e of ctx.order(i)) {
      const name = `fresh${i}`;
      await op.runDetached(e, name, { network: 'bbdns' });
      const ip = await op.lookup(client.get(e.name)!, name);
      R.add('dns_fresh_miss', e.name, ip ? 0 : 1);
      await op.rmForce(e, name);
    }
  }
  for (const e of ctx.engines) {
    await op.rmForce(e, 'dnstarget');
    await op.rmForce(e, 'dnsclient');
    await op.networkRm(e, 'bbdns');
  }
}
