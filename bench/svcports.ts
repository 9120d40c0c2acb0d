/**
 * node dist/bench/svcports.js [--sizes 50,100,200,250,400] [--passes 10] [--nft-sizes 1000,4000,7000] [--no-write]
 *   (npm run bench:svcports; berth only)
 * Many published ingress ports on a lab of three hosts (issue 18: "≥ 1,000 published ingress
 * ports"; Docker's swarm stalls at 128, swarmkit#2958, and its mesh needs IPVS, which this kernel
 * lacks, so there is no Docker side). Services of 2 replicas (busybox httpd on port 80, answering
 * its hostname), one per size, each publishing that many ingress ports (`-p FIRST-LAST:80`, which
 * the docker CLI turns into one port each, all to target 80), created one after the other with
 * `--detach` and timed until the CLI returns (berth's create returns once every host applied
 * it) and until its first and last port answer on every node (tasks started, their endpoints in
 * every node's mesh table); the time per port of each size shows whether anything grows
 * faster than the ports. Then
 * every published port is asked on every node from the underlay's namespace (one HTTP GET each,
 * a new connection each), and must answer with a hostname of one of that port's service's tasks.
 * Then, on the largest service, `service update --publish-add` of one port and `--publish-rm` of
 * it, each timed to the CLI's return and checked (the new port answers on every node, the removed
 * one is refused on every node). First, apart from the lab, what one node's mesh table
 * costs in the kernel at 1,000, 4,000 and 7,000 ports (`sandboxCosts`). Everything is removed at
 * the end, even on failure.
 */
import { loadavg } from 'node:os';
import { Lab, type LabHost } from '../test/integration/lab.js';
import { PACKAGE_ROOT } from '../src/daemon/paths.js';
import { meshKind } from '../src/network/lbkinds.js';
import { ServiceBalancers, type VipEntry } from '../src/network/servicelb.js';
import { docker } from './labtools.js';
import { emitSideResults } from './report.js';
import { log, median, now, run, runOk, sleep, option } from './util.js';

const SIZES = option('--sizes', '50,100,200,250,400').split(',').map(Number);
const write = !process.argv.includes('--no-write');
/** Sweeps of every port on every node before giving up (the last tasks' endpoints may still be on their way). */
const PASSES = Number(option('--passes', '10'));
/** Sizes of the mesh's table timed by themselves in a scratch namespace (`--nft-sizes`, '' for none). */
const NFT_SIZES = option('--nft-sizes', '1000,4000,7000').split(',').filter(Boolean).map(Number);
const FIRST_PORT = 20000;
const WEB = ['busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'];

/** GETs from inside a namespace, `parallel` at a time (one Node process, a new connection each); the answers, '' for a failure. */
async function fetchMany(netns: string, urls: string[], parallel = 8): Promise<string[]> {
  const script = `const http=require('http');const urls=JSON.parse(require('fs').readFileSync(0,'utf8'));const out=new Array(urls.length);let next=0;
const one=(u)=>new Promise((res)=>{const r=http.get(u,{agent:false,timeout:3000},(s)=>{let b='';s.on('data',(d)=>b+=d);s.on('end',()=>res(b.trim()));});r.on('error',()=>res(''));r.on('timeout',()=>{r.destroy();res('');});});
const worker=async()=>{while(next<urls.length){const i=next++;out[i]=await one(urls[i]);}};
Promise.all(Array.from({length:${parallel}},worker)).then(()=>console.log(JSON.stringify(out)));`;
  const r = await run('nsenter', [`--net=${netns}`, process.execPath, '-e', script], { input: JSON.stringify(urls) });
  if (r.code !== 0) throw new Error(`fetch: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

/** The short ids of a service's running task containers, over the lab's hosts (their hostnames). */
async function taskNames(lab: Lab, service: string): Promise<string[]> {
  const ids = await Promise.all(lab.hosts.map((h) => docker(h, ['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${service}`])));
  return ids.flatMap((s) => s.split('\n').filter(Boolean)).map((id) => id.slice(0, 12));
}

/**
 * What a node's mesh table costs by its number of published ports (two backends each,
 * services of 1,000 ports), in a scratch namespace of its own, applied as IngressMesh applies it
 * (a ServiceBalancers of the ingress kind: `nft -f` for a table made whole or new slots,
 * berth-nftset for elements): the table made whole (a node's first pass, or a berthd restarted),
 * one port's backend replaced, and a task of a 1,000-port service added (a backend more on each of
 * its ports), the first time (a slot map more, through `nft`) and again after it left (the slot
 * stays: elements and rules only); sizes interleaved over three rounds; medians.
 */
async function sandboxCosts(sizes: number[]): Promise<Record<string, { whole_ms: number; one_backend_ms: number; task_of_1000_ports_ms: number; task_again_ms: number }>> {
  const ns = `bbsp${process.pid}`;
  const netns = `/run/netns/${ns}`;
  const table = (n: number, extra?: string): VipEntry[] => Array.from({ length: n }, (_, i) => ({
    service: `svc${String(Math.floor(i / 1000)).padStart(9, '0')}`,
    vip: `tcp . ${FIRST_PORT + i}`,
    backends: ['10.0.0.2 . 80', '10.0.0.3 . 80', ...(extra && i < 1000 ? [`${extra} . 80`] : [])],
  }));
  const times = new Map(sizes.map((n) => [n, { whole: [] as number[], one: [] as number[], task: [] as number[], again: [] as number[] }]));
  await runOk('ip', ['netns', 'add', ns]);
  try {
    for (let r = 0; r < 3; r++) {
      for (const n of r % 2 ? [...sizes].reverse() : sizes) {
        const t = times.get(n)!;
        const failures: string[] = [];
        const lb = new ServiceBalancers((m) => failures.push(m), meshKind('10.0.0.1'));
        const timed = async (entries: VipEntry[]) => {
          const t0 = now();
          await lb.sync(new Map([['bench', { netns, entries }]]), true);
          if (failures.length) throw new Error(`the mesh table of ${n} ports: ${failures.join('; ')}`);
          return now() - t0;
        };
        const base = table(n);
        t.whole.push(await timed(base));
        const swapped = [{ ...base[0]!, backends: ['10.0.0.2 . 80', '10.0.0.9 . 80'] }, ...base.slice(1)];
        t.one.push(await timed(swapped), await timed(base));
        t.task.push(await timed(table(n, '10.0.0.7')));
        await timed(base);
        t.again.push(await timed(table(n, '10.0.0.7')));
        await timed([]);
        log(`mesh table of ${n} ports: whole ${t.whole.at(-1)!.toFixed(0)} ms, one backend replaced ${t.one.slice(-2).map((x) => x.toFixed(0)).join('/')} ms, a task of a 1,000-port service ${t.task.at(-1)!.toFixed(0)} ms (again ${t.again.at(-1)!.toFixed(0)}); load ${loadavg()[0]!.toFixed(2)}`);
      }
    }
  } finally {
    await run('ip', ['netns', 'del', ns]);
  }
  return Object.fromEntries([...times].map(([n, t]) => [String(n), { whole_ms: median(t.whole), one_backend_ms: median(t.one), task_of_1000_ports_ms: median(t.task), task_again_ms: median(t.again) }]));
}

async function main(): Promise<void> {
  const total = SIZES.reduce((a, b) => a + b, 0);
  const results: Record<string, unknown> = { when: new Date().toISOString(), sizes: SIZES, total_ports: total, loadavg_start: loadavg() };
  if (NFT_SIZES.length) results.sandbox_table = await sandboxCosts(NFT_SIZES);
  log(`lab of 3 hosts; ${SIZES.length} services publishing ${total} ingress ports in all; load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const lab = await Lab.create(3, { leaseTtlSec: 3, seedBusybox: true });
  try {
    const [h0] = lab.hosts as [LabHost];
    await lab.formSwarm(0);
    await lab.underlayAddress('10.99.0.250/24');
    const underlayNs = `/run/netns/${lab.underlay}`;
    // A service with no port first, so the first timed create does not also pay for the nodes' ingress endpoints.
    await docker(h0, ['service', 'create', '--detach', '--name', 'warm', '-p', `${FIRST_PORT - 1}:80`, ...WEB]);
    const creates: Array<{ service: string; ports: number; first: number; ms: number; ms_per_port: number; answering_ms: number }> = [];
    let first = FIRST_PORT;
    for (const [i, n] of SIZES.entries()) {
      const name = `many${i}`;
      const t0 = now();
      await docker(h0, ['service', 'create', '--detach', '--name', name, '--replicas', '2', '-p', `${first}-${first + n - 1}:80`, ...WEB]);
      const ms = now() - t0;
      // Until its first and last ports answer on every node (its tasks started, their endpoints everywhere).
      const probe = lab.hosts.flatMap((h) => [first, first + n - 1].map((p) => `http://${h.addr}:${p}/`));
      let answering = NaN;
      while (now() - t0 < 120_000) {
        if ((await fetchMany(underlayNs, probe)).every((a) => a)) { answering = now() - t0; break; }
        await sleep(50);
      }
      const got = JSON.parse(await docker(h0, ['service', 'inspect', name]))[0].Endpoint.Ports as Array<{ PublishedPort: number }>;
      if (got.length !== n) throw new Error(`${name}: ${got.length} ports published, asked for ${n}`);
      creates.push({ service: name, ports: n, first, ms, ms_per_port: ms / n, answering_ms: answering });
      log(`create ${name} with ${n} ports (${first}-${first + n - 1}): returned in ${ms.toFixed(0)} ms (${(ms / n).toFixed(2)} ms a port), answering on every node in ${answering.toFixed(0)} ms; load ${loadavg()[0]!.toFixed(2)}`);
      first += n;
    }
    results.creates = creates;

    // Every port on every node, once the tasks run: each answer must be one of its service's tasks.
    const owners: Array<{ port: number; tasks: Set<string> }> = [];
    for (const c of creates) {
      let tasks: string[] = [];
      for (let t = 0; t < 120 && tasks.length < 2; t++) { tasks = await taskNames(lab, c.service); if (tasks.length < 2) await sleep(500); }
      if (tasks.length !== 2) throw new Error(`${c.service}: ${tasks.length} tasks running`);
      for (let p = c.first; p < c.first + c.ports; p++) owners.push({ port: p, tasks: new Set(tasks) });
    }
    const urls = lab.hosts.flatMap((h) => owners.map((o) => `http://${h.addr}:${o.port}/`));
    let answers: string[] = [];
    let wrong: string[] = [];
    const t0 = now();
    // The tasks' ingress endpoints reach every node's sandbox a little after the tasks run: a few passes.
    for (let pass = 0; pass < PASSES; pass++) {
      answers = await fetchMany(underlayNs, urls);
      wrong = urls.filter((_, i) => !owners[i % owners.length]!.tasks.has(answers[i]!));
      log(`pass ${pass + 1}: ${urls.length - wrong.length} of ${urls.length} (every port on every node) answered by their own service's tasks`);
      if (!wrong.length) break;
      await sleep(1000);
    }
    results.asked = { urls: urls.length, nodes: lab.hosts.length, ports: owners.length, wrong: wrong.length, examples: wrong.slice(0, 10), seconds: (now() - t0) / 1000 };
    if (wrong.length) throw new Error(`${wrong.length} of ${urls.length} did not answer right, e.g. ${wrong.slice(0, 5).join(' ')}`);
    const perTask = new Map<string, number>();
    for (const a of answers) perTask.set(a, (perTask.get(a) ?? 0) + 1);
    results.answers_per_task = Object.fromEntries(perTask);

    // One port more, and that port taken away again, on the service with the most ports.
    const big = creates.reduce((a, b) => (b.ports > a.ports ? b : a));
    const extra = first;
    let t1 = now();
    await docker(h0, ['service', 'update', '--detach', '--publish-add', `published=${extra},target=80`, big.service]);
    const addMs = now() - t1;
    const added = await fetchMany(underlayNs, lab.hosts.map((h) => `http://${h.addr}:${extra}/`));
    t1 = now();
    await docker(h0, ['service', 'update', '--detach', '--publish-rm', `published=${extra},target=80`, big.service]);
    const rmMs = now() - t1;
    const removed = await fetchMany(underlayNs, lab.hosts.map((h) => `http://${h.addr}:${extra}/`));
    results.update = { service: big.service, ports: big.ports, publish_add_ms: addMs, publish_rm_ms: rmMs, added_answers: added, removed_answers: removed };
    log(`update ${big.service} (${big.ports} ports): --publish-add ${addMs.toFixed(0)} ms (answers ${JSON.stringify(added)}), --publish-rm ${rmMs.toFixed(0)} ms (answers after ${JSON.stringify(removed)})`);
    // The update restarts the tasks (a new spec): the new port answers from the service's tasks, whichever they are now.
    if (added.some((a) => !a)) throw new Error(`the added port did not answer on every node: ${JSON.stringify(added)}`);
    if (removed.some((a) => a)) throw new Error(`the removed port still answers: ${JSON.stringify(removed)}`);
    results.loadavg_end = loadavg();
  } finally {
    const leaks = await lab.destroy();
    if (leaks.length) log(`LEAKS: ${leaks.join('; ')}`);
  }
  await emitSideResults(PACKAGE_ROOT, 'svcports', results, { write, quick: false, log });
}

main().catch((e) => { console.error(e); process.exit(1); });
