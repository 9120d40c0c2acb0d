/**
 * node dist/bench/servicecreate.js [--quick] [--no-write] [--engines berth,docker]   (npm run bench:servicecreate)
 * `docker service create` of a 3-replica web service until every replica answers from outside
 * (the underlay), on berth's lab (test/integration/lab.ts) and on a lab of Docker 20.10 swarm
 * hosts laid out the same way (bench/swarmlab.ts), one after the other. berth's service publishes
 * through its routing mesh (one port on every node, balanced by nftables); Docker's routing mesh
 * and VIPs need IPVS, which this kernel lacks, so Docker's service is what works here: `dnsrr`
 * with a `mode=host` port, one task per node (`--replicas-max-per-node 1`), each answering on its
 * own node. The clock runs from the create request until a poller in the underlay's namespace
 * (a fresh connection every 20 ms, round the nodes' addresses) has heard each replica's hostname;
 * then the service is removed and its port must go quiet before the next round. Never a timed test.
 */
import { spawn } from 'node:child_process';
import { PACKAGE_ROOT } from '../src/daemon/paths.js';
import { emitSideResults } from './report.js';
import { docker, formSwarm, onEachLab, type EngineLab } from './labs.js';
import { log, median, quantile } from './util.js';

const quick = process.argv.includes('--quick');
const write = !process.argv.includes('--no-write');
const ROUNDS = quick ? 2 : 8;
const REPLICAS = 3;
const WEB = ['busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'];

/**
 * A poller in `netns`: GETs the URLs in turn, a fresh connection each, until it has heard `want`
 * distinct answers (or, with want 0, until none answers for a whole turn); resolves with the
 * epoch time (ms, sub-ms precision) of the request that completed it.
 */
function poll(netns: string, urls: string[], want: number, timeoutMs: number): Promise<number> {
  const script = `const http=require('http');const urls=${JSON.stringify(urls)};const want=${want};const seen=new Set();let quiet=0;const end=Date.now()+${timeoutMs};
const get=(u)=>new Promise((res)=>{const r=http.get(u,{agent:false,timeout:500},(s)=>{let b='';s.on('data',(d)=>b+=d);s.on('end',()=>res(s.statusCode===200?b.trim():''));});r.on('error',()=>res(''));r.on('timeout',()=>{r.destroy();res('');});});
(async()=>{for(let i=0;Date.now()<end;i++){const a=await get(urls[i%urls.length]);const at=performance.timeOrigin+performance.now();
if(want>0){if(a)seen.add(a);if(seen.size>=want){console.log(at);return;}}else{quiet=a?0:quiet+1;if(quiet>=urls.length){console.log(at);return;}}
await new Promise((r)=>setTimeout(r,20));}process.exit(3);})();`;
  return new Promise((resolve, reject) => {
    const p = spawn('nsenter', [`--net=${netns}`, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('close', (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`poller: exit ${code} ${err}`))));
  });
}

async function measure(lab: EngineLab): Promise<Record<string, unknown>> {
  const [h0] = lab.hosts;
  await formSwarm(lab);
  const times: number[] = [];
  for (let round = -1; round < ROUNDS; round++) {
    const port = 8100 + round + 1;
    const urls = lab.hosts.map((h) => `http://${h.addr}:${port}/`);
    const publish = lab.engine === 'berth' ? ['--publish', `published=${port},target=80`]
      : ['--endpoint-mode', 'dnsrr', '--replicas-max-per-node', '1', '--publish', `mode=host,published=${port},target=80`];
    const t0 = performance.timeOrigin + performance.now();
    const answered = poll(lab.clientNetns, urls, REPLICAS, 120_000);
    await docker(h0, ['service', 'create', '--detach', '--name', `sc${port}`, '--replicas', String(REPLICAS), ...publish, ...WEB]);
    const ms = (await answered) - t0;
    // Round -1 warms both up (the image's first use on each node).
    if (round >= 0) times.push(ms);
    log(`${lab.engine}: round ${round + 1}: ${ms.toFixed(0)} ms`);
    await docker(h0, ['service', 'rm', `sc${port}`]);
    await poll(lab.clientNetns, urls, 0, 60_000);
  }
  return { create_until_all_answer_ms: { p50: median(times), p90: quantile(times, 0.9), n: times.length, all: times.map((t) => Math.round(t)) } };
}

async function main(): Promise<void> {
  const results: Record<string, unknown> = { when: new Date().toISOString(), quick, rounds: ROUNDS, replicas: REPLICAS };
  await onEachLab('bench:servicecreate', results, measure);
  const b = (results.berth as { create_until_all_answer_ms?: { p50: number } } | undefined)?.create_until_all_answer_ms;
  const d = (results.docker as { create_until_all_answer_ms?: { p50: number } } | undefined)?.create_until_all_answer_ms;
  if (b && d) results.ratio_p50 = b.p50 / d.p50;
  await emitSideResults(PACKAGE_ROOT, 'servicecreate', results, { write, quick, log });
}

main().catch((e) => { console.error(e); process.exit(1); });
