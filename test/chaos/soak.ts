import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { run } from '../../src/util/exec.js';
import { exec, type TestHost } from '../integration/harness.js';
import { findViolations } from './invariants.js';

/**
 * The soak of issue 22: many run/rm cycles, then minutes of DNS and published-port traffic, with
 * berthd's RSS, open descriptors and threads and the kernel objects berth makes sampled along the
 * way. The curve goes into docs/reliability.md; flat is the promise.
 */
export interface Sample {
  phase: string;
  at: string; // cycles done, or minutes of traffic
  elapsedS: number;
  rssMB: number;
  fds: number;
  threads: number;
  links: number;
  nftElements: number;
  mounts: number;
  containers: number;
}

export interface SoakReport {
  cycles: number;
  failedCycles: number;
  trafficMinutes: number;
  dnsQueries: number;
  httpOk: number;
  httpFailed: number;
  samples: Sample[];
  violations: string[];
}

async function sample(host: TestHost, phase: string, at: string, t0: number): Promise<Sample> {
  const pid = host.daemonPid!;
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const field = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  const fds = (await fs.readdir(`/proc/${pid}/fd`)).length;
  const links = (await run('ip', ['-n', host.netns, '-o', 'link', 'show'])).stdout.split('\n').filter(Boolean).length;
  const ruleset = (await host.inNetns('nft', ['list', 'ruleset'])).stdout;
  // Elements of berth's maps and sets: one "key : value" or "key" entry per line inside elements = { … }.
  const nftElements = [...ruleset.matchAll(/elements = \{([^}]*)\}/g)].reduce((a, m) => a + m[1]!.split(',').filter((x) => x.trim()).length, 0);
  const mounts = (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(host.dir)).length;
  const list = await host.api('GET', '/containers/json?all=1', undefined, {}, { timeoutMs: 30_000 });
  return {
    phase, at, elapsedS: Math.round((Date.now() - t0) / 1000), rssMB: Math.round(field('VmRSS') / 102.4) / 10, fds, threads: field('Threads'),
    links, nftElements, mounts, containers: (list.json as unknown[]).length,
  };
}

export async function runSoak(host: TestHost, opts: { cycles: number; trafficMinutes: number; parallel?: number; samples?: number; log?: (l: string) => void }): Promise<SoakReport> {
  const log = opts.log ?? (() => undefined);
  const t0 = Date.now();
  const report: SoakReport = { cycles: 0, failedCycles: 0, trafficMinutes: opts.trafficMinutes, dnsQueries: 0, httpOk: 0, httpFailed: 0, samples: [], violations: [] };
  const net = await host.api('POST', '/networks/create', { Name: 'soak', IPAM: { Config: [{ Subnet: '10.84.0.0/16' }] } });
  if (net.status !== 201) throw new Error(`network: ${net.status} ${net.body}`);
  const add = async (phase: string, at: string) => {
    const s = await sample(host, phase, at, t0);
    report.samples.push(s);
    log(`${phase} ${at}: rss ${s.rssMB} MB, fds ${s.fds}, threads ${s.threads}, links ${s.links}, nft elements ${s.nftElements}, mounts ${s.mounts}, containers ${s.containers}`);
  };
  await add('start', '0');

  // Run/rm cycles, `parallel` at a time; every fourth publishes a random port, all have an alias.
  const parallel = opts.parallel ?? 4;
  const every = Math.max(1, Math.floor(opts.cycles / (opts.samples ?? 10)));
  let next = 0;
  let nextSample = every;
  const api = (m: string, p: string, b?: unknown) => host.api(m, p, b, {}, { timeoutMs: 60_000 });
  await Promise.all(Array.from({ length: parallel }, async () => {
    for (;;) {
      const n = next++;
      if (n >= opts.cycles) return;
      try {
        const c = await api('POST', '/containers/create', {
          Image: 'busybox', Cmd: ['sleep', '600'],
          ...(n % 4 === 0 ? { ExposedPorts: { '80/tcp': {} }, HostConfig: { NetworkMode: 'soak', PortBindings: { '80/tcp': [{ HostPort: '' }] } } } : { HostConfig: { NetworkMode: 'soak' } }),
          NetworkingConfig: { EndpointsConfig: { soak: { Aliases: [`s${n}`] } } },
        });
        if (c.status !== 201) throw new Error(`create ${c.status} ${c.body}`);
        const s = await api('POST', `/containers/${c.json.Id}/start`);
        const r = await api('DELETE', `/containers/${c.json.Id}?force=1`);
        if (s.status !== 204 || r.status !== 204) throw new Error(`start ${s.status} ${s.body} rm ${r.status} ${r.body}`);
      } catch (e) {
        report.failedCycles++;
        if (report.failedCycles <= 5) log(`cycle ${n}: ${(e as Error).message}`);
      }
      report.cycles++;
      if (report.cycles >= nextSample) {
        nextSample += every;
        await add('run/rm', String(report.cycles));
      }
    }
  }));
  await add('run/rm', `${report.cycles} (end)`);
  report.violations.push(...await findViolations(host));

  if (opts.trafficMinutes > 0) {
    // A server answering HTTP, published on a fixed port; a client container that resolves the
    // server's name and fetches from it in a loop; and a client in the test host's namespace that
    // fetches through the published port (127.0.0.1, route_localnet and DNAT).
    const srv = await host.runDetached({ Cmd: ['sh', '-c', 'mkdir -p /w && echo ok > /w/index.html && exec httpd -f -p 80 -h /w'], ExposedPorts: { '80/tcp': {} }, HostConfig: { NetworkMode: 'soak', PortBindings: { '80/tcp': [{ HostPort: '28080' }] } } }, 'srv');
    const cli = await host.runDetached({ Cmd: ['sh', '-c', 'i=0; while true; do nslookup srv >/dev/null 2>&1 && i=$((i+1)) && echo $i > /tmp/dns; wget -q -O /dev/null http://srv/ && echo x >> /tmp/http; done'], HostConfig: { NetworkMode: 'soak' } }, 'cli');
    const loop = `const http=require('http');let ok=0,bad=0;const end=Date.now()+${opts.trafficMinutes * 60_000};
function one(){if(Date.now()>end){console.log(JSON.stringify({ok,bad}));process.exit(0);}
const r=http.get('http://127.0.0.1:28080/',{agent:false,timeout:2000},(res)=>{res.resume();res.on('end',()=>{res.statusCode===200?ok++:bad++;setImmediate(one);});});
r.on('timeout',()=>r.destroy(new Error('timeout')));r.on('error',()=>{bad++;setTimeout(one,50);});}
one();`;
    const child = spawn('nsenter', [`--net=${host.netnsPath}`, process.execPath, '-e', loop], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    const done = new Promise((r) => child.on('exit', r));
    const interval = Math.max(30_000, (opts.trafficMinutes * 60_000) / 10);
    const tEnd = Date.now() + opts.trafficMinutes * 60_000;
    while (Date.now() < tEnd) {
      await new Promise((r) => setTimeout(r, Math.min(interval, Math.max(0, tEnd - Date.now()))));
      await add('traffic', `${((Date.now() - (tEnd - opts.trafficMinutes * 60_000)) / 60_000).toFixed(1)} min`);
    }
    await done;
    try {
      const r = JSON.parse(out) as { ok: number; bad: number };
      report.httpOk = r.ok;
      report.httpFailed = r.bad;
    } catch { report.violations.push(`published-port client: ${out}`); }
    report.dnsQueries = Number((await exec(host, cli, ['cat', '/tmp/dns'])).stdout.trim()) || 0;
    const wgets = (await exec(host, cli, ['wc', '-l', '/tmp/http'])).stdout.trim().split(/\s+/)[0];
    report.httpOk += Number(wgets) || 0;
    for (const id of [srv, cli]) await host.api('DELETE', `/containers/${id}?force=1`);
    await add('end', 'after traffic');
  }
  report.violations.push(...await findViolations(host));
  return report;
}

/** The curve as a markdown table. */
export function soakTable(r: SoakReport): string {
  const head = '| phase | at | elapsed [s] | berthd RSS [MB] | open fds | threads | links | nft elements | mounts | containers |\n|---|---|---|---|---|---|---|---|---|---|';
  return [head, ...r.samples.map((s) => `| ${s.phase} | ${s.at} | ${s.elapsedS} | ${s.rssMB} | ${s.fds} | ${s.threads} | ${s.links} | ${s.nftElements} | ${s.mounts} | ${s.containers} |`)].join('\n');
}
