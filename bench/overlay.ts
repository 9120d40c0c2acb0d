/**
 * node dist/bench/overlay.js [--quick] [--no-write] [--engines berth,docker] [--endpoints N] [--profile DIR]
 * The overlay across three hosts (namespaces on one underlay bridge, 1400-byte uplinks): berth's
 * lab (test/integration/lab.ts) and, where dockerd is installed, a lab of Docker 20.10 swarm hosts
 * laid out the same way (bench/swarmlab.ts) with its attachable swarm overlay, one after the
 * other, the same steps on each. Measures:
 *  - TCP throughput (iperf3) container → container across hosts, against the same between the
 *    two hosts' own namespaces over the underlay;
 *  - TCP connect + 1-byte echo round trips, same two paths;
 *  - both again over a VXLAN made by hand between the same two hosts at the overlay's MTU
 *    (bench/barevxlan.ts; in berth's lab): the kernel's own overlay path, the most an engine's
 *    can reach here;
 *  the paths taken in turn, round after round (5 rounds of a 3 s iperf3 and a fifth of the echoes
 *  each; 2 of 1 s in --quick), so a drift of the machine's load weighs on every path alike: the
 *  throughput is the median of a path's rounds, the echo's percentiles are over all its echoes;
 *  - `network connect` / `disconnect` of a running container (berth's return once every host has
 *    its FDB, neighbour and DNS entries), on the network as it is, and (berth only) again once it
 *    holds `--endpoints N` containers spread over the three hosts (default 1,000 in a full run;
 *    0 skips that part), alternating one by one with a network of 10 endpoints, their ratio the
 *    median of neighbouring pairs' with a 95 % bootstrap interval;
 *  - `run -d` on an overlay until the container answers by name from another host, and the misses
 *    of the first lookup right after `run` returns.
 * Throughput and echo run inside the containers' network namespaces (nsenter from the host), so
 * the busybox image needs no iperf3: the path measured is the container's own veth, bridge and
 * VXLAN device. Everything the bench makes is removed at the end, even on failure.
 */
import { mtuOf, withBareVxlan } from './barevxlan.js';
import { docker, formSwarm, onEachLab, type EngineLab, type LabHost } from './labs.js';
import { PACKAGE_ROOT } from '../src/daemon/paths.js';
import { emitSideResults } from './report.js';
import { argOf as arg, log, median, now, pairedRatio, quantile, run } from './util.js';

const quick = process.argv.includes('--quick');
const write = !process.argv.includes('--no-write');
const N = quick ? 10 : 100;
const ENDPOINTS = Number(arg('--endpoints') ?? (quick ? 0 : 1000));
/** `--profile DIR`: each berthd's CPU profile of the alternating connect/disconnect part, written there. */
const PROFILE_DIR = arg('--profile');
if (PROFILE_DIR) process.env.BERTH_PROFILE_DIR = PROFILE_DIR;

const netnsOf = (h: LabHost, c: string) => docker(h, ['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', c]);
const ipOf = (h: LabHost, c: string) => docker(h, ['inspect', '-f', '{{(index .NetworkSettings.Networks "bench").IPAddress}}', c]);

/** iperf3 client from one namespace to a server started in another; Gbit/s. */
async function iperf(serverNs: string, clientNs: string, addr: string): Promise<number> {
  const srv = run('nsenter', [`--net=${serverNs}`, 'iperf3', '-s', '-1', '-B', addr]);
  await new Promise((r) => setTimeout(r, 500));
  const c = await run('nsenter', [`--net=${clientNs}`, 'iperf3', '-c', addr, '-t', quick ? '1' : '3', '--connect-timeout', '5000', '-J']);
  await srv;
  if (c.code !== 0) throw new Error(`iperf3: ${c.stderr || c.stdout}`);
  return JSON.parse(c.stdout).end.sum_received.bits_per_second / 1e9;
}

/** TCP connect + 1-byte echo, `n` times, from one namespace to an echo server in another; ms each. */
async function echo(serverNs: string, clientNs: string, addr: string, n: number): Promise<number[]> {
  // The server ends itself after the n-th connection closes (or after a deadline): nothing to kill.
  const server = `let k=0;require('net').createServer((s)=>{s.pipe(s);if(++k>=${n})s.on('close',()=>process.exit(0))}).listen(7007,'${addr}');setTimeout(()=>process.exit(0),${n * 200 + 20000})`;
  const srv = run('nsenter', [`--net=${serverNs}`, process.execPath, '-e', server]);
  await new Promise((r) => setTimeout(r, 800));
  const client = `const net=require('net');(async()=>{const out=[];for(let i=0;i<${n};i++){const t=process.hrtime.bigint();await new Promise((res,rej)=>{const s=net.connect(7007,'${addr}',()=>s.write('x'));s.on('data',()=>{s.destroy();res();});s.on('error',rej);});out.push(Number(process.hrtime.bigint()-t)/1e6);}console.log(JSON.stringify(out));process.exit(0)})()`;
  const c = await run('nsenter', [`--net=${clientNs}`, process.execPath, '-e', client]);
  await srv;
  if (c.code !== 0) throw new Error(`echo: ${c.stderr}`);
  return JSON.parse(c.stdout) as number[];
}

interface Path { name: string; server: string; client: string; addr: string }

/** Throughput and echo over each path, the paths in turn round after round; `iperf_<path>_gbps` and `echo_<path>_ms`. */
async function throughputAndEcho(engine: string, paths: Path[]): Promise<Record<string, unknown>> {
  const rounds = quick ? 2 : 5;
  const gbps = new Map(paths.map((p) => [p.name, [] as number[]]));
  const echoes = new Map(paths.map((p) => [p.name, [] as number[]]));
  for (let r = 0; r < rounds; r++) {
    log(`${engine}: throughput and echo, round ${r + 1} of ${rounds} (${paths.map((p) => p.name).join(', ')})`);
    for (const p of paths) {
      gbps.get(p.name)!.push(await iperf(p.server, p.client, p.addr));
      echoes.get(p.name)!.push(...await echo(p.server, p.client, p.addr, Math.ceil(N / rounds)));
    }
  }
  return Object.fromEntries(paths.flatMap((p) => {
    const e = echoes.get(p.name)!;
    return [[`iperf_${p.name}_gbps`, median(gbps.get(p.name)!)], [`echo_${p.name}_ms`, { p50: median(e), p99: quantile(e, 0.99) }]];
  }));
}

/** The steps on one lab; its figures. */
async function measure(lab: EngineLab): Promise<Record<string, unknown>> {
  const results: Record<string, unknown> = {};
  const [h0, h1, h2] = lab.hosts;
  await formSwarm(lab);
  // Room for the --endpoints part (a /20), clear of the labs' underlays.
  await docker(h0, ['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.210.0.0/20', 'bench']);
  await docker(h0, ['run', '-d', '--name', 's0', '--network', 'bench', 'busybox', 'sleep', '36000']);
  // A worker sees an attachable overlay once a container of its own asks for it (Docker's too).
  await docker(h1, ['run', '-d', '--name', 's1', '--network', 'bench', 'busybox', 'sleep', '36000']);
  const [ns0, ns1, ip1] = await Promise.all([netnsOf(h0, 's0'), netnsOf(h1, 's1'), ipOf(h1, 's1')]);

  const paths: Path[] = [{ name: 'underlay', server: h1.netnsPath, client: h0.netnsPath, addr: h1.addr }, { name: 'overlay', server: ns1, client: ns0, addr: ip1 }];
  // The kernel's own VXLAN between the same two hosts, at the same MTU: the most any engine's
  // overlay can do here. In berth's lab only: Docker's hosts drop bridged traffic they did not
  // make (its FORWARD policy, with br_netfilter), and the kernel's path is the same in both.
  if (lab.engine === 'berth') {
    await withBareVxlan([h0!, h1!], await mtuOf(ns0), async (client, server, addr) => {
      Object.assign(results, await throughputAndEcho(lab.engine, [...paths, { name: 'bare_vxlan', server, client, addr }]));
    });
  } else {
    Object.assign(results, await throughputAndEcho(lab.engine, paths));
  }

  log(`${lab.engine}: connect / disconnect`);
  await docker(h2, ['run', '-d', '--name', 'hop', 'busybox', 'sleep', '36000']);
  /** `n` connects and disconnects of `hop` on `net`, their times added to `into`'s. */
  const hopOn = async (net: string, n: number, into = { conn: [] as number[], disc: [] as number[] }) => {
    for (let i = 0; i < n; i++) {
      let t = now();
      await docker(h2, ['network', 'connect', net, 'hop']);
      into.conn.push(now() - t);
      t = now();
      await docker(h2, ['network', 'disconnect', net, 'hop']);
      into.disc.push(now() - t);
    }
    return into;
  };
  const summary = ({ conn, disc }: { conn: number[]; disc: number[] }) => ({ connect: { p50: median(conn), p99: quantile(conn, 0.99) }, disconnect: { p50: median(disc), p99: quantile(disc, 0.99) } });
  const hops = async () => summary(await hopOn('bench', N));
  const small = await hops();
  results.connect_ms = small.connect;
  results.disconnect_ms = small.disconnect;
  results.endpoints_before = 2;

  log(`${lab.engine}: run until reachable by name from another host`);
  const runMs: number[] = [];
  const reachMs: number[] = [];
  let misses = 0;
  for (let i = 0; i < N; i++) {
    const t0 = now();
    await docker(h2, ['run', '-d', '--name', `r${i}`, '--network', 'bench', 'busybox', 'sleep', '36000']);
    runMs.push(now() - t0);
    let first = true;
    const deadline = now() + 60_000;
    for (;;) {
      const r = await h1.cli(['exec', 's1', 'nslookup', `r${i}`]);
      if (r.code === 0 && /Address(?: 1)?:\s+\d/.test(r.stdout.split('Name:')[1] ?? '')) break;
      if (now() > deadline) throw new Error(`${lab.engine}: r${i} never answered by name on ${h1.name}`);
      if (first) misses++;
      first = false;
    }
    reachMs.push(now() - t0);
  }
  results.run_ms = { p50: median(runMs), p99: quantile(runMs, 0.99) };
  results.run_until_named_ms = { p50: median(reachMs), p99: quantile(reachMs, 0.99) };
  results.first_lookup_misses = misses;

  if (ENDPOINTS > 0 && lab.engine === 'berth') {
    // s0, s1 and the run part's containers are on it already (hop only while it hops).
    const have = N + 2;
    log(`${lab.engine}: filling the network to ${ENDPOINTS} endpoints`);
    // One client per host at a time: the hosts fill side by side.
    await Promise.all(lab.hosts.map(async (h, k) => {
      for (let i = have + k; i < ENDPOINTS; i += lab.hosts.length) await docker(h, ['run', '-d', '--name', `f${i}`, '--network', 'bench', 'busybox', 'sleep', '36000']);
    }));
    // Against a network of 10 endpoints at the same time, round after round (the full network's
    // part, then the small one's): the same machine, the same containers running, so what differs
    // is the network's size alone. Measured one after the other instead, a drift of the machine
    // (the 1,000 containers just started) weighed on one side only, and runs read 0.9x to 1.6x.
    await docker(h0, ['network', 'create', '-d', 'overlay', '--attachable', 'bench10']);
    await Promise.all(lab.hosts.map(async (h, k) => {
      for (let i = k; i < 9; i += lab.hosts.length) await docker(h, ['run', '-d', '--name', `t${i}`, '--network', 'bench10', 'busybox', 'sleep', '36000']);
    }));
    // One connect and disconnect on each network in turn, the order swapped every other time: each
    // pair of neighbours is measured under the same load, so their ratios are paired (rounds of 20
    // on each side left a drift of a few percent between the sides).
    const full = { conn: [] as number[], disc: [] as number[] };
    const ten = { conn: [] as number[], disc: [] as number[] };
    const profile = () => { if (PROFILE_DIR) for (const h of lab.hosts) { const pid = h.daemonPid?.(); if (pid) process.kill(pid, 'SIGUSR2'); } };
    profile();
    for (let i = 0; i < N; i++) {
      if (i % 2) { await hopOn('bench10', 1, ten); await hopOn('bench', 1, full); } else { await hopOn('bench', 1, full); await hopOn('bench10', 1, ten); }
    }
    profile();
    const big = summary(full);
    const tens = summary(ten);
    const paired = { connect: pairedRatio(ten.conn, full.conn), disconnect: pairedRatio(ten.disc, full.disc) };
    results.full_over_ten_paired = paired;
    results.endpoints_after = Math.max(ENDPOINTS, have);
    results.connect_ms_full = big.connect;
    results.disconnect_ms_full = big.disconnect;
    results.connect_ms_ten = tens.connect;
    results.disconnect_ms_ten = tens.disconnect;
    results.full_over_ten = { connect_p50: big.connect.p50 / tens.connect.p50, disconnect_p50: big.disconnect.p50 / tens.disconnect.p50, connect_p99: big.connect.p99 / tens.connect.p99, disconnect_p99: big.disconnect.p99 / tens.disconnect.p99 };
    const said = (r: { median: number; lo: number; hi: number }) => `${r.median.toFixed(3)}x [${r.lo.toFixed(3)}, ${r.hi.toFixed(3)}]`;
    log(`full/ten of neighbouring pairs, median with its 95 % bootstrap interval: connect ${said(paired.connect)}, disconnect ${said(paired.disconnect)}`);
    log(`connect p50 ${tens.connect.p50.toFixed(1)} ms on 10 endpoints → ${big.connect.p50.toFixed(1)} on ${ENDPOINTS}, disconnect ${tens.disconnect.p50.toFixed(1)} → ${big.disconnect.p50.toFixed(1)}, in alternating rounds (the fresh lab's: ${small.connect.p50.toFixed(1)} and ${small.disconnect.p50.toFixed(1)})`);
  }
  return results;
}

async function main(): Promise<void> {
  const results: Record<string, unknown> = { when: new Date().toISOString(), quick, n: N };
  await onEachLab('bench:overlay', results, measure);
  const b = results.berth as Record<string, any> | undefined;
  const d = results.docker as Record<string, any> | undefined;
  for (const [engine, e] of [['berth', b], ['docker', d]] as const) {
    if (!e?.iperf_bare_vxlan_gbps) continue;
    e.vs_underlay = { iperf: e.iperf_overlay_gbps / e.iperf_underlay_gbps, echo_p50: e.echo_overlay_ms.p50 / e.echo_underlay_ms.p50 };
    e.vs_bare_vxlan = { iperf: e.iperf_overlay_gbps / e.iperf_bare_vxlan_gbps, echo_p50: e.echo_overlay_ms.p50 / e.echo_bare_vxlan_ms.p50 };
    e.bare_vxlan_vs_underlay = { iperf: e.iperf_bare_vxlan_gbps / e.iperf_underlay_gbps, echo_p50: e.echo_bare_vxlan_ms.p50 / e.echo_underlay_ms.p50 };
    log(`${engine}: overlay/underlay throughput ${e.vs_underlay.iperf.toFixed(2)}x, echo ${e.vs_underlay.echo_p50.toFixed(2)}x; the kernel's VXLAN by hand/underlay ${e.bare_vxlan_vs_underlay.iperf.toFixed(2)}x, ${e.bare_vxlan_vs_underlay.echo_p50.toFixed(2)}x; overlay/VXLAN by hand ${e.vs_bare_vxlan.iperf.toFixed(2)}x, ${e.vs_bare_vxlan.echo_p50.toFixed(2)}x`);
  }
  if (b && d) {
    results.ratios = {
      iperf_overlay: b.iperf_overlay_gbps / d.iperf_overlay_gbps,
      echo_overlay_p50: b.echo_overlay_ms.p50 / d.echo_overlay_ms.p50,
      run_until_named_p50: b.run_until_named_ms.p50 / d.run_until_named_ms.p50,
      connect_p50: b.connect_ms.p50 / d.connect_ms.p50,
      disconnect_p50: b.disconnect_ms.p50 / d.disconnect_ms.p50,
    };
  }
  await emitSideResults(PACKAGE_ROOT, 'overlay', results, { write, quick, log });
}

main().catch((e) => { console.error(e); process.exit(1); });
