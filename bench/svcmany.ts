/**
 * node dist/bench/svcmany.js [--sizes 10,100,10000] [--rounds 10] [--poll-ms 2] [--no-write]   (npm run bench:svcmany)
 * A service's backend change end to end, on three lab hosts, with 10, 100 and 10,000 services in
 * the cluster (berth only: Docker 20.10's VIPs need IPVS, which this kernel lacks). One 2-replica
 * web service `web` (each task answers its hostname) and a client container on each host, all on
 * one overlay; a poller in each client's namespace GETs web's VIP over and over (a new connection
 * each, 2 ms apart, `--poll-ms`: each request forks an httpd in the task, which on a machine
 * with slow forks loads both cores and then times the bench's own load). Each round scales web to 3 (`service scale --detach`) and times, on each
 * host, the first answer from the new task against the moment its container started
 * (`State.StartedAt`: one clock for the whole lab) and against the moment its agent wrote it
 * running (the task's `Status.Timestamp`: from there on it is the cluster's propagation to every
 * host's balancers, and the pollers' own lag), then scales back to 2 and times the last
 * answer from the task that left against the scale's return; every failed request is counted.
 * Beside it, TCP connect + 1-byte echo through the VIP from lab1's client. The services added
 * between the sizes have no replicas: a task per service would be 10,000 containers, each with a
 * balancer of 10,000 VIPs, which a 2-core machine cannot hold (Docker's sandboxes would hold as
 * many IPVS services). So what grows here is the cluster around the change (the store, each host's
 * view and index of services, the orchestrator, DNS); a balancer of 10,000 VIPs in the kernel is
 * svclb.js's and svcconnect.js's. Never a timed test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { PACKAGE_ROOT } from '../src/daemon/paths.js';
import { Lab, type LabHost } from '../test/integration/lab.js';
import { docker, echo } from './labtools.js';
import { emitSideResults } from './report.js';
import { cleanupOnStop, log, median, quantile, option } from './util.js';

const write = !process.argv.includes('--no-write');
const SIZES = option('--sizes', '10,100,10000').split(',').map(Number);
const ROUNDS = Number(option('--rounds', '10'));
const POLL_MS = Number(option('--poll-ms', '2'));
const NET = 'svcm';
const WEB = ['busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'];
const epochMs = () => performance.timeOrigin + performance.now();

/** A poller's account: when each hostname answered first and last, and how many requests failed. */
interface Heard { first: Record<string, number>; last: Record<string, number>; failed: number; sent: number }

/**
 * A poller in `netns`, GETting `url` until it is stopped. It says each hostname the moment it is
 * first heard (`heard NAME`), so a round can wait for it; on SIGTERM it prints its whole account.
 */
class Poller {
  private readonly p: ChildProcess;
  private out = '';
  private readonly waiting = new Map<string, () => void>();
  private readonly seen = new Set<string>();

  constructor(netns: string, url: string) {
    const script = `const http=require('http');const h={first:{},last:{},failed:0,sent:0};let stop=false;
const get=()=>new Promise((res)=>{const r=http.get(${JSON.stringify(url)},{agent:false,timeout:1000},(s)=>{let b='';s.on('data',(d)=>b+=d);s.on('end',()=>res(s.statusCode===200?b.trim():''));});r.on('error',()=>res(''));r.on('timeout',()=>{r.destroy();res('');});});
process.on('SIGTERM',()=>{stop=true;});
(async()=>{while(!stop){h.sent++;const a=await get();const at=performance.timeOrigin+performance.now();
if(!a)h.failed++;else{if(!(a in h.first)){h.first[a]=at;console.log('heard '+a);}h.last[a]=at;}
await new Promise((r)=>setTimeout(r,${POLL_MS}));}console.log('account '+JSON.stringify(h));process.exit(0);})();`;
    this.p = spawn('nsenter', [`--net=${netns}`, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.p.stdout!.on('data', (d: Buffer) => {
      this.out += d.toString();
      for (const m of this.out.matchAll(/^heard (\S+)$/gm)) {
        this.seen.add(m[1]!);
        this.waiting.get(m[1]!)?.();
      }
    });
  }

  /** Resolves once `name` has answered (at once if it has). */
  heard(name: string, timeoutMs: number): Promise<void> {
    if (this.seen.has(name)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${name} never answered`)), timeoutMs);
      this.waiting.set(name, () => { clearTimeout(t); resolve(); });
    });
  }

  async stop(): Promise<Heard> {
    const closed = new Promise((r) => this.p.once('close', r));
    this.p.kill('SIGTERM');
    await closed;
    const m = /^account (.*)$/m.exec(this.out);
    if (!m) throw new Error(`poller gave no account: ${this.out.slice(-500)}`);
    return JSON.parse(m[1]!) as Heard;
  }
}

const stats = (v: number[]) => ({ p50: median(v), p90: quantile(v, 0.9), p99: quantile(v, 0.99), max: Math.max(...v), n: v.length });

async function main(): Promise<void> {
  const results: Record<string, unknown> = { when: new Date().toISOString(), rounds: ROUNDS, sizes: SIZES, pollMs: POLL_MS };
  log('lab of 3 hosts');
  const lab = await Lab.create(3, { leaseTtlSec: 3, seedBusybox: true });
  // A run of 10,000 services takes minutes: one stopped early still takes its lab down.
  cleanupOnStop(() => lab.destroy());
  try {
    const hosts = lab.hosts as LabHost[];
    const h0 = hosts[0]!;
    await lab.formSwarm(0);
    await docker(h0, ['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.60.0.0/16', NET]);
    await docker(h0, ['service', 'create', '--detach', '--name', 'web', '--replicas', '2', '--network', NET, '--stop-grace-period', '1s', ...WEB]);
    const clients = await Promise.all(hosts.map(async (h) => {
      await docker(h, ['run', '-d', '--name', `client-${h.name}`, '--network', NET, 'busybox', 'sleep', '36000']);
      return { h, ns: await docker(h, ['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', `client-${h.name}`]) };
    }));
    const vip = (JSON.parse(await docker(h0, ['service', 'inspect', 'web']))[0].Endpoint.VirtualIPs as Array<{ Addr: string }>)[0]!.Addr.split('/')[0]!;
    /** web's running tasks: container id (its hostname), host, namespace. */
    const tasks = async () => (await Promise.all(hosts.map(async (h) => (await docker(h, ['ps', '-q', '--filter', 'label=com.docker.swarm.service.name=web'])).split('\n').filter(Boolean)
      .map((id) => ({ h, id }))))).flat();
    const waitTasks = async (n: number) => {
      for (let i = 0; i < 600; i++) {
        const t = await tasks();
        if (t.length === n) return t;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`web never had ${n} tasks`);
    };
    await waitTasks(2);
    let services = 1;
    const grow = async (to: number) => {
      const t0 = Date.now();
      const from = services;
      let next = services;
      const one = async () => {
        for (;;) {
          const i = next++;
          if (i >= to) return;
          const r = await h0.host.api('POST', '/services/create', {
            Name: `idle${i}`, Mode: { Replicated: { Replicas: 0 } },
            TaskTemplate: { ContainerSpec: { Image: 'busybox', Args: ['sleep', '3600'] }, Networks: [{ Target: NET }] },
          });
          if (r.status !== 201) throw new Error(`service create idle${i}: ${r.status} ${r.body}`);
          if ((i + 1) % 1000 === 0) log(`${i + 1} services, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        }
      };
      await Promise.all(Array.from({ length: 8 }, one));
      services = to;
      const s = (Date.now() - t0) / 1000;
      log(`${to - from} services created in ${s.toFixed(1)} s`);
      return s;
    };

    const bySize: Record<string, unknown> = {};
    for (const size of SIZES) {
      const created = size > services ? await grow(size) : 0;
      // Let every host's view of the new services settle before timing anything.
      await new Promise((r) => setTimeout(r, 3000));
      log(`${size} services: ${ROUNDS} rounds of scale 2 → 3 → 2`);
      const added: number[] = [];
      const addedFromCli: number[] = [];
      const addedFromRunning: number[] = [];
      // A poller's time per request: a VIP of 3 backends sends every third new connection of a
      // client to the new one, so a first answer comes up to 3 of these after its balancer has it.
      const period: number[] = [];
      const removed: number[] = [];
      let failed = 0;
      let sent = 0;
      for (let round = 0; round < ROUNDS; round++) {
        const before = new Set((await tasks()).map((t) => t.id));
        const pollers = clients.map((c) => new Poller(c.ns, `http://${vip}/`));
        const polling0 = epochMs();
        await Promise.all([...before].map((id) => Promise.all(pollers.map((p) => p.heard(id, 10_000)))));
        const up0 = epochMs();
        await docker(h0, ['service', 'scale', '--detach', 'web=3']);
        const grown = await waitTasks(3);
        const fresh = grown.find((t) => !before.has(t.id))!;
        await Promise.all(pollers.map((p) => p.heard(fresh.id, 20_000)));
        const started = Date.parse(await docker(fresh.h, ['inspect', '-f', '{{.State.StartedAt}}', fresh.id]));
        const records = (await h0.host.api('GET', `/tasks?filters=${encodeURIComponent(JSON.stringify({ service: ['web'] }))}`)).json as Array<{ Status: { State: string; Timestamp: string; ContainerStatus?: { ContainerID: string } } }>;
        const record = records.find((t) => t.Status.ContainerStatus?.ContainerID.startsWith(fresh.id));
        if (record?.Status.State !== 'running') throw new Error(`web's new task ${fresh.id}: its record says ${record?.Status.State ?? 'nothing'}`);
        const runningAt = Date.parse(record.Status.Timestamp);
        const down0 = epochMs();
        await docker(h0, ['service', 'scale', '--detach', 'web=2']);
        const downReturned = epochMs();
        const left = await waitTasks(2);
        const gone = grown.find((t) => !left.some((l) => l.id === t.id))!;
        // The task stops 1 s after it left the balancers at most (its grace period): a poller
        // still hearing it after that would show as a late last answer.
        await new Promise((r) => setTimeout(r, 1500));
        const heard = await Promise.all(pollers.map((p) => p.stop()));
        const pollingMs = epochMs() - polling0;
        for (const h of heard) {
          period.push(pollingMs / Math.max(1, h.sent));
          added.push(h.first[fresh.id]! - started);
          addedFromRunning.push(h.first[fresh.id]! - runningAt);
          addedFromCli.push(h.first[fresh.id]! - up0);
          removed.push((h.last[gone.id] ?? down0) - downReturned);
          failed += h.failed;
          sent += h.sent;
        }
      }
      const clientNs = clients[1]!.ns;
      const echoes = await echo((await Promise.all((await tasks()).map(async (t) => docker(t.h, ['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', t.id])))), clientNs, vip, 300);
      bySize[size] = {
        create_seconds: created,
        added_after_start_ms: stats(added), added_after_running_ms: stats(addedFromRunning), request_period_ms: stats(period), added_after_scale_ms: stats(addedFromCli),
        last_answer_after_scale_down_ms: stats(removed), requests: sent, failed, echo_vip_ms: stats(echoes),
      };
      log(JSON.stringify(bySize[size]));
    }
    results.bySize = bySize;
  } finally {
    const leaks = await lab.destroy();
    if (leaks.length) log(`LEAKS: ${leaks.join('; ')}`);
  }
  await emitSideResults(PACKAGE_ROOT, 'svcmany', results, { write, quick: false, log });
}

main().catch((e) => { console.error(e); process.exit(1); });
