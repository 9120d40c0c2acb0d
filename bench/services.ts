/**
 * node dist/bench/services.js [--quick] [--no-write] [--updates N]   (npm run bench:services)
 * Services on three lab hosts (namespaces on one underlay bridge), berth only: Docker 20.10's
 * routing mesh needs IPVS, which this kernel lacks (moby#24005), so its VIP and mesh cannot be
 * measured here. In one run:
 *  - spread: 1,200 HTTP requests (each a new connection) to a 4-replica service through its VIP
 *    from a container on another host, and 1,200 through the published port, 400 to each node's
 *    address from the underlay namespace; each request answers its task's hostname; the
 *    per-task share's worst distance from even;
 *  - TCP connect + 1-byte echo from a client container to the VIP against straight to the tasks in
 *    turn (the same tasks serve both, in the same order as the VIP's round robin), in five
 *    alternating rounds, and iperf3 to a one-task service's VIP against straight to its task;
 *  - TCP connect + 1-byte echo from the underlay through the routing mesh (entered at one node)
 *    against a plain container's own `-p` port on that node; and to one task of a one-replica
 *    service through the mesh at its own node and at another against its own `mode=host` port,
 *    and iperf3 the same three ways;
 *  - a rolling update (`service update --force`, one task at a time) under about 200 requests/s
 *    through the VIP, `--updates` times (1): requests sent and lost, and why and when any was.
 * Everything is removed at the end, even on failure.
 */
import { Lab, type LabHost } from '../test/integration/lab.js';
import { PACKAGE_ROOT } from '../src/daemon/paths.js';
import { docker, echo } from './labtools.js';
import { emitSideResults } from './report.js';
import { log, median, option, quantile, run } from './util.js';

const quick = process.argv.includes('--quick');
const write = !process.argv.includes('--no-write');
const REQUESTS = quick ? 120 : 1200;
const ECHOES = quick ? 20 : 300;
const UPDATES = Number(option('--updates', '1'));
if (!(UPDATES >= 1)) throw new Error('--updates takes a number of updates, 1 or more');
/** A run's percentiles, as each part reports them. */
const pcts = (v: number[]) => ({ p50: median(v), p90: quantile(v, 0.9), p99: quantile(v, 0.99) });
const WEB = ['busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'];

/** `count` sequential GETs from inside a namespace (one Node process, a new connection each); the answers. */
async function fetchMany(netns: string, urls: string[]): Promise<string[]> {
  const script = `const http=require('http');const urls=JSON.parse(process.argv[1]);(async()=>{const out=[];for(const u of urls){out.push(await new Promise((res)=>{const r=http.get(u,{agent:false,timeout:3000},(s)=>{let b='';s.on('data',(d)=>b+=d);s.on('end',()=>res(b.trim()));});r.on('error',()=>res(''));r.on('timeout',()=>{r.destroy();res('');});}));}console.log(JSON.stringify(out));})()`;
  const r = await run('nsenter', [`--net=${netns}`, process.execPath, '-e', script, JSON.stringify(urls)]);
  if (r.code !== 0) throw new Error(`fetch: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

/** The largest relative distance of a task's share from 1/n, over the answers (a failed request counts against). */
function spread(answers: string[], tasks: string[]): { worst: number; failed: number; perTask: Record<string, number> } {
  const perTask = Object.fromEntries(tasks.map((t) => [t, 0]));
  let failed = 0;
  for (const a of answers) { if (a in perTask) perTask[a]!++; else failed++; }
  const even = answers.length / tasks.length;
  return { worst: Math.max(...Object.values(perTask).map((c) => Math.abs(c - even) / even)), failed, perTask };
}

/** iperf3 from `clientNs` to `addr`, with a one-shot server in each of `serverNss`; Gbit/s. */
async function iperf(serverNss: string[], clientNs: string, addr: string, ports = { listen: 5201, to: 5201 }): Promise<number> {
  const servers = serverNss.map((ns) => run('nsenter', [`--net=${ns}`, 'iperf3', '-s', '-1', '-p', String(ports.listen)]));
  await new Promise((r) => setTimeout(r, 800));
  const c = await run('nsenter', [`--net=${clientNs}`, 'iperf3', '-c', addr, '-p', String(ports.to), '-t', quick ? '2' : '5', '-J']);
  await run('pkill', ['-f', 'iperf3 -s -1']);
  await Promise.all(servers);
  if (c.code !== 0) throw new Error(`iperf3: ${c.stderr || c.stdout}`);
  return JSON.parse(c.stdout).end.sum_received.bits_per_second / 1e9;
}

async function main(): Promise<void> {
  const results: Record<string, unknown> = { when: new Date().toISOString(), quick, requests: REQUESTS };
  log('lab of 3 hosts');
  const lab = await Lab.create(3, { leaseTtlSec: 3, seedBusybox: true });
  try {
    const [h0, h1] = lab.hosts as [LabHost, LabHost];
    await lab.formSwarm(0);
    // The underlay's own address: the "outside" client of the published port.
    await lab.underlayAddress('10.99.0.250/24');
    await docker(h0, ['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.50.0.0/24', 'svcb']);
    await docker(h0, ['service', 'create', '--name', 'web', '--replicas', '4', '--network', 'svcb', '-p', '8080:80', '--update-delay', '1s', '--update-monitor', '1s', '--stop-grace-period', '1s', ...WEB]);
    await docker(h1, ['run', '-d', '--name', 'client', '--network', 'svcb', 'busybox', 'sleep', '36000']);
    const clientNs = await docker(h1, ['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', 'client']);
    const vip = (JSON.parse(await docker(h0, ['service', 'inspect', 'web']))[0].Endpoint.VirtualIPs as Array<{ NetworkID: string; Addr: string }>)
      .find((v) => v.Addr.startsWith('10.50.'))!.Addr.split('/')[0]!;
    const taskContainers = async () => (await Promise.all(lab.hosts.map(async (h) => (await docker(h, ['ps', '-q', '--no-trunc', '--filter', 'label=com.docker.swarm.service.name=web'])).split('\n').filter(Boolean)
      .map(async (id) => ({ host: h, id, short: id.slice(0, 12), ns: await docker(h, ['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', id]), ip: await docker(h, ['inspect', '-f', '{{(index .NetworkSettings.Networks "svcb").IPAddress}}', id]) }))))).flat();
    const tasks = await Promise.all(await taskContainers());
    const names = tasks.map((t) => t.short);
    log(`tasks: ${tasks.map((t) => `${t.short}@${t.host.name}`).join(', ')}; VIP ${vip}`);

    log('spread through the VIP and through every node\'s published port');
    const viaVip = spread(await fetchMany(clientNs, Array.from({ length: REQUESTS }, () => `http://${vip}/`)), names);
    const meshUrls = Array.from({ length: REQUESTS }, (_, i) => `http://${lab.hosts[i % 3]!.addr}:8080/`);
    const viaMesh = spread(await fetchMany(`/run/netns/${lab.underlay}`, meshUrls), names);
    results.spread_vip = viaVip;
    results.spread_mesh = viaMesh;

    log('latency and throughput: the VIP against straight to the tasks');
    // Straight to the tasks in turn, as the VIP's round robin takes them (some on the client's
    // host, some across the overlay): one task alone would compare a hot server process, maybe a
    // local one, against the VIP's spread. Five rounds each, in turn, so a drift of the machine's
    // load falls on both alike.
    const servers = tasks.map((t) => t.ns);
    const ev: number[] = [];
    const ed: number[] = [];
    for (let r = 0; r < 5; r++) {
      ev.push(...await echo(servers, clientNs, vip, ECHOES / 5));
      ed.push(...await echo(servers, clientNs, tasks.map((t) => t.ip), ECHOES / 5));
    }
    results.echo_vip_ms = pcts(ev);
    results.echo_direct_ms = pcts(ed);
    // iperf3's control and data connections are two connections, which a balancer over four tasks
    // sends to different tasks (Docker's IPVS as well): throughput through a VIP of one task.
    await docker(h0, ['service', 'create', '--name', 'solo', '--network', 'svcb', 'busybox', 'sleep', '36000']);
    const solo = (JSON.parse(await docker(h0, ['service', 'inspect', 'solo']))[0].Endpoint.VirtualIPs as Array<{ Addr: string }>)[0]!.Addr.split('/')[0]!;
    const soloTask = (await Promise.all(lab.hosts.map(async (h) => (await docker(h, ['ps', '-q', '--filter', 'label=com.docker.swarm.service.name=solo'])).split('\n').filter(Boolean).map((id) => ({ h, id }))))).flat()[0]!;
    const soloNs = await docker(soloTask.h, ['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', soloTask.id]);
    const soloIp = await docker(soloTask.h, ['inspect', '-f', '{{(index .NetworkSettings.Networks "svcb").IPAddress}}', soloTask.id]);
    results.iperf_vip_gbps = await iperf([soloNs], clientNs, solo);
    results.iperf_direct_gbps = await iperf([soloNs], clientNs, soloIp);

    log('latency from outside: the routing mesh against a container\'s own published port');
    // The mesh to the echo port of web's tasks, entered at lab0 (a task there or on another node,
    // in turn); against a plain container on lab0 publishing the same port with `-p` (a DNAT to a
    // local container: the shortest way in from outside).
    await docker(h0, ['service', 'update', '--publish-add', 'published=7007,target=7007', 'web']);
    await docker(h0, ['run', '-d', '--name', 'plain', '-p', '7008:7007', 'busybox', 'sleep', '36000']);
    const plainNs = await docker(h0, ['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', 'plain']);
    const underlayNs = `/run/netns/${lab.underlay}`;
    const em = await echo(tasks.map((t) => t.ns), underlayNs, `${h0.addr}:7007`, ECHOES);
    const ep = await echo([plainNs], underlayNs, `${h0.addr}:7008`, ECHOES);
    results.echo_mesh_ms = pcts(em);
    results.echo_published_ms = pcts(ep);
    // Only the echo runs listened on 7007: a published port the tasks never listen on would hold
    // each new task out of the balancers for LISTEN_WAIT_MS.
    await docker(h0, ['service', 'update', '--publish-rm', 'published=7007,target=7007', 'web']);
    // Where the mesh's time goes: one task, reached through the mesh at its own node and at
    // another, against its own `mode=host` port (straight to the task from outside, Docker's way
    // around the mesh), in five alternating rounds.
    await docker(h0, ['service', 'create', '--name', 'edge', '--network', 'svcb', '-p', 'published=7009,target=7007', '-p', 'published=7010,target=7007,mode=host', 'busybox', 'sleep', '36000']);
    const edgeTask = (await Promise.all(lab.hosts.map(async (h) => ({ h, id: (await docker(h, ['ps', '-q', '--filter', 'label=com.docker.swarm.service.name=edge'])).split('\n')[0] })))).find((x) => x.id)!;
    const edgeHost = edgeTask.h;
    const otherHost = lab.hosts.find((h) => h !== edgeHost)!;
    const edgeNs = await docker(edgeHost, ['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', edgeTask.id!]);
    const meshLocal: number[] = [];
    const meshRemote: number[] = [];
    const hostPort: number[] = [];
    for (let r = 0; r < 5; r++) {
      meshLocal.push(...await echo([edgeNs], underlayNs, `${edgeHost.addr}:7009`, ECHOES / 5));
      hostPort.push(...await echo([edgeNs], underlayNs, `${edgeHost.addr}:7010`, ECHOES / 5));
      meshRemote.push(...await echo([edgeNs], underlayNs, `${otherHost.addr}:7009`, ECHOES / 5));
    }
    results.echo_mesh_local_ms = pcts(meshLocal);
    results.echo_mesh_remote_ms = pcts(meshRemote);
    results.echo_host_mode_ms = pcts(hostPort);
    results.mesh_over_host_mode_p50 = { local: median(meshLocal) / median(hostPort), remote: median(meshRemote) / median(hostPort) };
    log(`one task from outside, p50: mesh at its node ${median(meshLocal).toFixed(3)} ms, at another ${median(meshRemote).toFixed(3)}, its mode=host port ${median(hostPort).toFixed(3)}`);
    // The same three ways in, by throughput (iperf3's two connections reach the one task).
    const iperfTo = (h: LabHost, port: number) => iperf([edgeNs], underlayNs, h.addr, { listen: 7007, to: port });
    results.iperf_mesh_local_gbps = await iperfTo(edgeHost, 7009);
    results.iperf_host_mode_gbps = await iperfTo(edgeHost, 7010);
    results.iperf_mesh_remote_gbps = await iperfTo(otherHost, 7009);
    log(`one task from outside, iperf3: mesh at its node ${(results.iperf_mesh_local_gbps as number).toFixed(1)} Gbit/s, at another ${(results.iperf_mesh_remote_gbps as number).toFixed(1)}, its mode=host port ${(results.iperf_host_mode_gbps as number).toFixed(1)}`);
    await docker(h0, ['service', 'rm', 'edge']);

    log(`${UPDATES} rolling update(s) under about 200 requests/s through the VIP`);
    const loadScript = `const http=require('http');let sent=0,lost=0;const why={};const at=[];const fire=()=>{sent++;const r=http.get('http://${vip}/',{agent:false,timeout:3000},(s)=>{s.resume();});r.on('error',(e)=>{lost++;at.push(Date.now());why[e.code||e.message]=(why[e.code||e.message]||0)+1;});r.on('timeout',()=>{r.destroy();});};const t=setInterval(fire,5);process.on('SIGTERM',()=>{clearInterval(t);setTimeout(()=>{console.log(JSON.stringify({sent,lost,why,lost_at:at}));process.exit(0)},3500);});`;
    const updates: Array<{ seconds: number; sent: number; lost: number; why: Record<string, number>; lost_at: number[] }> = [];
    for (let u = 0; u < UPDATES; u++) {
      const load = run('nsenter', [`--net=${clientNs}`, process.execPath, '-e', loadScript]);
      await new Promise((r) => setTimeout(r, 1000));
      const t0 = Date.now();
      await docker(h0, ['service', 'update', '--force', 'web']);
      const seconds = (Date.now() - t0) / 1000;
      await new Promise((r) => setTimeout(r, 1000));
      await run('pkill', ['-TERM', '-f', 'setInterval\\(fire,5\\)']);
      const got = { seconds, ...JSON.parse((await load).stdout || '{}') } as (typeof updates)[number];
      updates.push(got);
      log(`update ${u + 1}: ${seconds.toFixed(1)} s, ${got.sent} sent, ${got.lost} lost${got.lost ? ` ${JSON.stringify(got.why)}` : ''}`);
      if (got.lost) {
        // Where the losses fell among the tasks' changes (the load began about 1 s before the update).
        const tasksNow = (await h0.host.api('GET', '/tasks?filters=' + encodeURIComponent(JSON.stringify({ service: ['web'] })))).json as Array<{ Slot: number; DesiredState: string; Status: { State: string; Timestamp: string } }>;
        const changed = tasksNow.map((t) => ({ t, at: Date.parse(t.Status.Timestamp) - t0 })).filter((x) => x.at >= 0).sort((a, b) => a.at - b.at);
        log(`  lost at ${JSON.stringify(got.lost_at.map((x) => x - t0))} ms after the update began; tasks then: ${changed.map((x) => `slot ${x.t.Slot} ${x.t.Status.State} at ${x.at}`).join(', ')}`);
      }
    }
    results.update_seconds = updates[0]!.seconds;
    results.update_under_load = { sent: updates.reduce((a, x) => a + x.sent, 0), lost: updates.reduce((a, x) => a + x.lost, 0), updates };
  } finally {
    const leaks = await lab.destroy();
    if (leaks.length) log(`LEAKS: ${leaks.join('; ')}`);
  }
  await emitSideResults(PACKAGE_ROOT, 'services', results, { write, quick, log });
}

main().catch((e) => { console.error(e); process.exit(1); });
