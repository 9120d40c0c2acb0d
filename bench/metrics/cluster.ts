/**
 * A cluster of three hosts, berth's lab (test/integration/lab.ts, the hosts of `npm run lab`)
 * beside a lab of Docker 20.10 swarm hosts laid out the same way (bench/swarmlab.ts), in the same
 * run, interleaved: `swarm init`, `swarm join` of a worker and of a manager, `node ls`; then, on
 * a cluster of three managers, the time from a change through one host to its visibility through
 * every host: a node label update, read back with `node inspect` on each manager until it shows.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { FRESH_SINGLE_TIMING_FLAGS } from '../../src/cluster/etcdmember.js';
import type { BenchContext } from '../context.js';
import { Lab } from '../../test/integration/lab.js';
import { DockerLab } from '../swarmlab.js';
import { apiRequest, log, now, type ApiResponse } from '../util.js';

interface SwarmHost { name: string; addr: string; socket: string }
interface Cluster { engine: 'berth' | 'docker'; hosts: [SwarmHost, SwarmHost, SwarmHost] }

const api = (h: SwarmHost, method: string, path: string, body?: unknown): Promise<ApiResponse> => apiRequest(h.socket, method, `/v1.41${path}`, body, 60_000);

async function ok(h: SwarmHost, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  const r = await api(h, method, path, body);
  if (r.status >= 300) throw new Error(`${h.name}: ${method} ${path}: ${r.status} ${r.body.trim()}`);
  return r;
}

async function timed(h: SwarmHost, method: string, path: string, body?: unknown): Promise<number> {
  const t0 = now();
  await ok(h, method, path, body);
  return now() - t0;
}

const initBody = (h: SwarmHost) => ({ ListenAddr: `${h.addr}:2377`, AdvertiseAddr: h.addr, Spec: {} });
const joinBody = (h: SwarmHost, leader: SwarmHost, token: string) => ({ ListenAddr: `${h.addr}:2377`, AdvertiseAddr: h.addr, RemoteAddrs: [`${leader.addr}:2377`], JoinToken: token });

async function tokens(h: SwarmHost): Promise<{ Worker: string; Manager: string }> {
  return (await ok(h, 'GET', '/swarm')).json.JoinTokens;
}

/** Every host leaves (managers with --force), the joiners first; each must end up in no swarm. */
async function teardown(c: Cluster): Promise<void> {
  for (const h of [...c.hosts].reverse()) {
    const r = await api(h, 'POST', '/swarm/leave?force=1');
    if (r.status !== 200 && !/not part of a swarm/.test(r.body)) throw new Error(`${h.name}: swarm leave: ${r.status} ${r.body.trim()}`);
  }
}

/** Polls one host's `node inspect` until the label shows `value`; returns when it did. */
async function seen(h: SwarmHost, node: string, value: string, deadline: number): Promise<number | undefined> {
  while (now() < deadline) {
    const r = await api(h, 'GET', `/nodes/${node}`);
    if (r.status === 200 && r.json?.Spec?.Labels?.bench === value) return now();
  }
  return undefined;
}

/**
 * The floor under berth's `swarm init`: a fresh single etcd member with the timing flags berth's
 * init gives it, from
 * its spawn until it serves clients (it has elected itself), in the lab's underlay namespace on
 * its loopback (plain HTTP: no certificates to load, so a little under what berth's member takes).
 */
async function etcdAlone(underlay: string, base: string): Promise<number> {
  const dir = await fs.mkdtemp(join(base, 'etcd-floor-'));
  const url = 'http://127.0.0.1:23790';
  const t0 = now();
  const p = spawn('nsenter', [`--net=/run/netns/${underlay}`, 'etcd', '--name=floor', `--data-dir=${join(dir, 'data')}`, `--listen-client-urls=${url}`, `--advertise-client-urls=${url}`,
    '--listen-peer-urls=http://127.0.0.1:23800', '--initial-advertise-peer-urls=http://127.0.0.1:23800', '--initial-cluster=floor=http://127.0.0.1:23800', '--logger=zap', ...FRESH_SINGLE_TIMING_FLAGS], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((r) => p.once('exit', r));
  try {
    return await new Promise<number>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`etcd alone did not serve within 20 s: ${out.slice(-500)}`)), 20_000);
      p.stderr!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('serving client traffic')) { clearTimeout(timer); resolve(now() - t0); }
      });
      p.once('exit', () => { clearTimeout(timer); reject(new Error(`etcd alone exited: ${out.slice(-500)}`)); });
    });
  } finally {
    p.kill('SIGKILL');
    await exited;
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export async function cluster(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  const group = 'Cluster of three hosts (ms, lower is better)';
  R.define({ key: 'swarm_init', group, label: '`swarm init`', unit: 'ms', better: 'lower', target: '≤ 0.5x Docker' });
  R.define({ key: 'etcd_alone', group, label: 'a fresh etcd member alone, from spawn until it serves (the floor under berth\'s `swarm init`)', unit: 'ms', better: 'lower' });
  R.define({ key: 'swarm_join_worker', group, label: '`swarm join` (worker)', unit: 'ms', better: 'lower', target: '≤ 0.5x Docker' });
  R.define({ key: 'swarm_join_manager', group, label: '`swarm join` (manager)', unit: 'ms', better: 'lower', target: '≤ 0.5x Docker' });
  R.define({ key: 'node_ls', group, label: '`node ls` (3 nodes)', unit: 'ms', better: 'lower' });
  R.define({ key: 'node_update', group, label: '`node update` (a label, through one manager)', unit: 'ms', better: 'lower' });
  R.define({ key: 'cluster_visibility', group, label: 'a change through one host until every host shows it (node label, `node inspect` on each of 3 managers)', unit: 'ms', better: 'lower', target: 'p99 ≤ 50 ms' });

  const wants = ctx.engines.map((e) => e.name);
  const loadAtStart = loadavg()[0]!;
  let berthLab: Lab | undefined;
  let dockerLab: DockerLab | undefined;
  const leaks: string[] = [];
  try {
    const clusters: Cluster[] = [];
    if (wants.includes('berth')) {
      log('cluster: starting a lab of 3 berth hosts');
      berthLab = await Lab.create(3, { leaseTtlSec: 3 });
      clusters.push({ engine: 'berth', hosts: berthLab.hosts.map((h) => ({ name: h.name, addr: h.addr, socket: h.host.socket })) as Cluster['hosts'] });
    }
    if (wants.includes('docker')) {
      log('cluster: starting a lab of 3 Docker 20.10 hosts');
      dockerLab = await DockerLab.create(3, ctx.base);
      R.extra.dockerVersion = dockerLab.hosts[0]!.version;
      clusters.push({ engine: 'docker', hosts: dockerLab.hosts.map((h) => ({ name: h.netns, addr: h.addr, socket: h.socket })) as Cluster['hosts'] });
    }
    const order = (rep: number) => (rep % 2 === 0 ? clusters : [...clusters].reverse());

    const reps = ctx.quick ? 2 : 5;
    for (let rep = -1; rep < reps; rep++) {
      const record = rep >= 0; // the first cycle warms up (page cache, first etcd and raft files)
      for (const c of order(rep)) {
        const add = (k: string, v: number) => { if (record) R.add(k, c.engine, v); };
        const [h0, h1, h2] = c.hosts;
        if (c.engine === 'berth') add('etcd_alone', await etcdAlone(berthLab!.underlay, ctx.base));
        add('swarm_init', await timed(h0, 'POST', '/swarm/init', initBody(h0)));
        const t = await tokens(h0);
        add('swarm_join_worker', await timed(h1, 'POST', '/swarm/join', joinBody(h1, h0, t.Worker)));
        add('swarm_join_manager', await timed(h2, 'POST', '/swarm/join', joinBody(h2, h0, t.Manager)));
        for (let i = 0; i < 20; i++) add('node_ls', await timed(h0, 'GET', '/nodes'));
        await teardown(c);
      }
    }

    // Visibility: three managers, one cluster per engine, writes interleaved in blocks.
    const writes = ctx.quick ? 100 : 1000;
    const targets = new Map<string, { id: string; spec: Record<string, unknown> }>();
    for (const c of clusters) {
      const [h0, h1, h2] = c.hosts;
      await ok(h0, 'POST', '/swarm/init', initBody(h0));
      const t = await tokens(h0);
      for (const h of [h1, h2]) await ok(h, 'POST', '/swarm/join', joinBody(h, h0, t.Manager));
      const self = (await ok(h1, 'GET', '/info')).json.Swarm.NodeID as string;
      // Every manager answers for the cluster before the writes begin.
      for (const h of c.hosts) {
        const deadline = now() + 60_000;
        while ((await api(h, 'GET', `/nodes/${self}`)).status !== 200) {
          if (now() > deadline) throw new Error(`${c.engine}: ${h.name} does not answer node inspect`);
        }
      }
      targets.set(c.engine, { id: self, spec: (await ok(h0, 'GET', `/nodes/${self}`)).json.Spec });
    }
    const block = 50;
    for (let start = 0; start < writes; start += block) {
      for (const c of order(start / block)) {
        const target = targets.get(c.engine)!;
        const [h0] = c.hosts;
        for (let i = start; i < Math.min(start + block, writes); i++) {
          const version = (await ok(h0, 'GET', `/nodes/${target.id}`)).json.Version.Index as number;
          const value = String(i);
          const spec = { ...target.spec, Labels: { bench: value } };
          const t0 = now();
          await ok(h0, 'POST', `/nodes/${target.id}/update?version=${version}`, spec);
          R.add('node_update', c.engine, now() - t0);
          const deadline = t0 + 10_000;
          const at = await Promise.all(c.hosts.map((h) => seen(h, target.id, value, deadline)));
          if (at.some((x) => x === undefined)) {
            R.note('cluster_visibility', `${c.engine}: write ${i} not seen on every host within 10 s`);
            continue;
          }
          R.add('cluster_visibility', c.engine, Math.max(...(at as number[])) - t0);
        }
      }
    }
    R.note('cluster_visibility', 'measured from the start of the update request until a `node inspect` on each of the three managers (polled back to back, each a fresh connection) shows the new label; so it includes the write itself and one read of every host. Docker\'s managers forward control API calls to the raft leader, berth\'s read the store (linearizable etcd reads), so on both a read reflects every committed write.');
    const loadAtEnd = loadavg()[0]!;
    const busy = Math.max(loadAtStart, loadAtEnd) > cpus().length;
    R.note('swarm_init', `${busy ? 'the machine was busy with other work: ' : ''}load average ${loadAtStart.toFixed(1)} at the start of this group and ${loadAtEnd.toFixed(1)} at its end, on ${cpus().length} cores${busy ? '; both engines saw the same load (interleaved), the ratios are the numbers to read' : ''}`);
    R.note('swarm_init', 'until the API call returns; both engines with --advertise-addr and --listen-addr on the host\'s underlay address. berth takes a CA and node key made ahead of time (openssl), signs the node certificate and starts an etcd member, and returns once the member leads, the records and etcd\'s access rules are written, the node\'s presence is written and its own records read (its watches are made behind) and the ingress network is in the store and listed on the host (its bridge, VXLAN and sandbox follow in the background, as Docker\'s ingress setup does); Docker starts its raft node and CA in-process. The etcd member\'s own start (the row "a fresh etcd member alone") is a floor under berth\'s init while it runs etcd as a process: 0.5x Docker leaves only what is above that floor for the CA, the records, the access rules, the presence and the watches.');
    R.note('etcd_alone', `the flags of berth's member for a new single-member cluster (${FRESH_SINGLE_TIMING_FLAGS.join(' ')}; src/cluster/etcdmember.ts says why they are safe once other managers join); a new single member fast-forwards its election ticks, so it elects itself after 1 to 10 heartbeats (25–250 ms), the rest is the process start. Measured right before each berth \`swarm init\`.`);
    R.note('swarm_join_worker', 'until the API call returns. berth: the joiner pins the CA by the token\'s digest and sends its request on that same TLS connection; the manager signs the certificate (in-process) and writes the node\'s record and presence in one transaction, under a node ID whose etcd user it made ahead of time (the presence under a lease the joiner takes over); the joiner opens its store connection while it writes its files, and the call returns once the node\'s own records are read and the swarm networks (ingress) are listed on it, its watches made behind. Their kernel side (bridge, VXLAN, nft) follows in the background and a container\'s join waits for it, as Docker\'s ingress setup follows its join.');
    R.note('swarm_join_manager', 'berth: the manager\'s etcd member joins as a learner and is promoted once it has caught up, before the call returns.');
    // After the notes: a teardown that fails (Docker's `swarm leave` timing out) must not lose them.
    for (const c of clusters) await teardown(c);
  } finally {
    if (berthLab) leaks.push(...(await berthLab.destroy().catch((e) => [`berth lab: ${e}`])));
    if (dockerLab) leaks.push(...(await dockerLab.destroy().catch((e) => [`docker lab: ${e}`])));
    if (leaks.length) throw new Error(`cluster labs left: ${leaks.join('; ')}`);
  }
}
