import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { HangError, lookup, probePing } from '../integration/harness.js';
import { Lab, type LabHost } from '../integration/lab.js';
import { Rng } from './rng.js';

/**
 * Chaos across hosts: a swarm of three managers on the lab's underlay with one overlay network,
 * containers run and removed on every host by concurrent clients while one fault a cycle strikes —
 * a host's berthd killed with -9, a host cut off the underlay for longer than the lease TTL, the
 * etcd leader's member killed, two of three managers cut off (quorum lost) — and healed. After each
 * cycle, once every node is Ready, the hosts must agree with what runs, within a bound:
 *   - no two endpoints share an address, on any host;
 *   - each host's VXLAN FDB and neighbour entries are exactly the other hosts' running endpoints,
 *     each pointing at its owner's VTEP (no stale entry, none missing);
 *   - from a container on each host, every running container's name answers with its address and
 *     the names of containers removed this cycle are NXDOMAIN (names are never stale);
 *   - a container on one host reaches every container on the others;
 *   - every container that ran before the cycle and no client removed still runs.
 * Seeded: the same seed makes the same choices (faults, moments, operations).
 */

export type HostFault = 'berthd' | 'partition' | 'etcd-leader' | 'quorum';
const FAULTS: HostFault[] = ['berthd', 'partition', 'etcd-leader', 'quorum'];
const NET = 'mh';
const MAX_CONTAINERS = 9;

export interface MultihostOptions {
  seed: number;
  cycles: number;
  minutes?: number;
  leaseTtlSec?: number;
  /** How long after every node is Ready the hosts may take to agree. */
  convergeMs?: number;
  opTimeoutMs?: number;
  /** Ends the run after the cycle under way (the lab is still taken down). */
  signal?: AbortSignal;
  log: (line: string) => void;
}

export interface MultihostReport {
  seed: number;
  cycles: number;
  faults: Record<HostFault, number>;
  operations: Record<string, { ok: number; failed: number }>;
  /** Milliseconds from every node Ready to the start of the look that found every host agreeing, per cycle. */
  convergeMs: number[];
  violations: Array<{ cycle: number; fault: HostFault; what: string }>;
  hangs: string[];
  durationMs: number;
  leaks: string[];
}

interface Endpoint { host: number; id: string; name: string; ip: string; mac: string }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runMultihostChaos(o: MultihostOptions): Promise<MultihostReport> {
  const ttl = o.leaseTtlSec ?? 3;
  const opTimeoutMs = o.opTimeoutMs ?? 45_000;
  const convergeMs = o.convergeMs ?? 20_000;
  const rng = new Rng(o.seed);
  const t0 = Date.now();
  const report: MultihostReport = {
    seed: o.seed, cycles: 0, faults: { berthd: 0, partition: 0, 'etcd-leader': 0, quorum: 0 }, operations: {},
    convergeMs: [], violations: [], hangs: [], durationMs: 0, leaks: [],
  };
  const lab = await Lab.create(3, { leaseTtlSec: ttl, seedBusybox: true });
  const hosts = lab.hosts;
  let seq = 0;
  try {
    await lab.formSwarm(2);
    const created = await hosts[0]!.host.api('POST', '/networks/create', { Name: NET, Driver: 'overlay', Attachable: true, CheckDuplicate: true });
    if (created.status !== 201) throw new Error(`creating ${NET}: ${created.status} ${created.body}`);
    const netId = String(created.json.Id);
    // One probe per host: the containers every check asks from.
    for (const h of hosts) {
      const r = await h.host.api('POST', `/containers/create?name=probe${h.index}`, { Image: 'busybox', Cmd: ['sleep', '1000000'], HostConfig: { NetworkMode: NET } });
      if (r.status !== 201) throw new Error(`${h.name}: probe: ${r.status} ${r.body}`);
      const s = await h.host.api('POST', `/containers/probe${h.index}/start`);
      if (s.status !== 204) throw new Error(`${h.name}: probe start: ${s.status} ${s.body}`);
    }
    const count = (op: string, ok: boolean) => {
      const c = (report.operations[op] ??= { ok: 0, failed: 0 });
      if (ok) c.ok++; else c.failed++;
    };
    /** An API call bounded by the op timeout; a call past it is a hang. */
    const call = async (h: LabHost, op: string, method: string, path: string, body?: unknown) => {
      try {
        const r = await h.host.api(method, path, body, {}, { timeoutMs: opTimeoutMs });
        count(op, r.status < 300);
        return r;
      } catch (e) {
        const m = (e as Error).message;
        if (e instanceof HangError) report.hangs.push(`${h.name}: ${method} ${path}: ${m}`);
        count(op, false);
        return undefined;
      }
    };

    for (let cycle = 1; cycle <= o.cycles; cycle++) {
      if (o.signal?.aborted || (o.minutes !== undefined && Date.now() - t0 > o.minutes * 60_000)) break;
      // The first four cycles take each fault once.
      const fault = cycle <= FAULTS.length ? FAULTS[cycle - 1]! : rng.pick(FAULTS)!;
      report.faults[fault]++;
      const before = await runningEndpoints(hosts);
      const removed = new Set<string>();
      const untouchable = new Set(before.filter((e) => e.name.startsWith('probe')).map((e) => e.id));
      const touched = new Set<string>();

      let stop = false;
      const worker = async () => {
        while (!stop) {
          const h = rng.pick(hosts)!;
          const all = await runningEndpoints(hosts).catch(() => before);
          const mine = all.filter((e) => e.host === h.index && !untouchable.has(e.id));
          const total = all.length - hosts.length;
          if (total < MAX_CONTAINERS && rng.chance(0.65)) {
            const name = `mh${++seq}`;
            const r = await call(h, 'create', 'POST', `/containers/create?name=${name}`, {
              Image: 'busybox', Cmd: ['sleep', '1000000'], HostConfig: { NetworkMode: NET },
              NetworkingConfig: { EndpointsConfig: { [NET]: { Aliases: [`al${seq}`] } } },
            });
            if (r?.status === 201) {
              touched.add(r.json.Id);
              await call(h, 'start', 'POST', `/containers/${r.json.Id}/start`);
            }
          } else {
            const victim = rng.pick(mine);
            if (victim) {
              touched.add(victim.id);
              const r = await call(h, 'rm', 'DELETE', `/containers/${victim.id}?force=1`);
              if (r?.status === 204) removed.add(victim.name);
            }
          }
          await sleep(rng.int(300));
        }
      };
      const workers = [worker(), worker()];
      await sleep(200 + rng.int(800));
      const what = await inject(lab, fault, rng, ttl);
      await sleep(rng.int(1000));
      stop = true;
      await Promise.all(workers);
      report.cycles = cycle;

      // Settle: every node Ready as every manager sees it.
      try {
        await waitUntil(async () => {
          for (const h of hosts) {
            const n = await h.host.api('GET', '/nodes', undefined, {}, { timeoutMs: 5000 }).catch(() => undefined);
            if (n?.status !== 200) return false;
            const nodes = n.json as Array<{ Status: { State: string } }>;
            if (nodes.length !== hosts.length || nodes.some((x) => x.Status.State !== 'ready')) return false;
          }
          return true;
        }, 60_000);
      } catch {
        report.hangs.push(`cycle ${cycle}: not every node Ready within 60 s of "${what}"`);
        break;
      }
      const readyAt = Date.now();
      let problems: string[] = [];
      // When the look that found them agreeing began (0: at the first look after all were Ready).
      let agreedAt = readyAt;
      for (;;) {
        agreedAt = Date.now();
        problems = await check(hosts, netId, removed, rng);
        if (!problems.length || Date.now() - readyAt > convergeMs) break;
        await sleep(500);
      }
      // Survivors: what ran before and no client touched runs still.
      const now = new Set((await runningEndpoints(hosts)).map((e) => e.id));
      for (const e of before) if (!touched.has(e.id) && !now.has(e.id)) problems.push(`${e.name} on lab${e.host} ran before the cycle, untouched, and runs no more`);
      if (problems.length) {
        for (const p of problems) report.violations.push({ cycle, fault, what: p });
        o.log(`cycle ${cycle}: ${what}; VIOLATIONS: ${problems.join('; ')}`);
      } else {
        report.convergeMs.push(agreedAt - readyAt);
        o.log(`cycle ${cycle}: ${what}; ${now.size} running; hosts agree ${agreedAt - readyAt} ms after every node was Ready (the look took ${Date.now() - agreedAt} ms)`);
      }
    }
  } finally {
    report.leaks = await lab.destroy();
    report.durationMs = Date.now() - t0;
  }
  return report;
}

async function inject(lab: Lab, fault: HostFault, rng: Rng, ttl: number): Promise<string> {
  const hosts = lab.hosts;
  switch (fault) {
    case 'berthd': {
      const h = rng.pick(hosts)!;
      await h.host.stopDaemon('SIGKILL');
      await sleep(rng.int(1500));
      await h.host.startDaemon([], { timeoutMs: 90_000 });
      return `berthd of ${h.name} killed`;
    }
    case 'partition': {
      const h = rng.pick(hosts)!;
      await lab.partition(h);
      await sleep((ttl + 1) * 1000 + rng.int(2000));
      await lab.heal(h);
      return `${h.name} cut off the underlay past the lease TTL`;
    }
    case 'etcd-leader': {
      const leader = await leaderOf(hosts);
      if (!leader) return 'no etcd leader found to kill';
      const pid = Number(await fs.readFile(join(leader.host.root, 'cluster', 'etcd.pid'), 'utf8').catch(() => '0'));
      if (pid > 0) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone already */ } }
      return `etcd member of the leader ${leader.name} killed`;
    }
    case 'quorum': {
      const cut = [...hosts].sort(() => rng.next() - 0.5).slice(0, 2);
      for (const h of cut) await lab.partition(h);
      await sleep(3000 + rng.int(3000));
      for (const h of cut) await lab.heal(h);
      return `quorum lost: ${cut.map((h) => h.name).join(' and ')} cut off`;
    }
  }
}

async function leaderOf(hosts: LabHost[]): Promise<LabHost | undefined> {
  for (const h of hosts) {
    const r = await h.host.api('GET', '/nodes', undefined, {}, { timeoutMs: 5000 }).catch(() => undefined);
    if (r?.status !== 200) continue;
    const n = (r.json as Array<{ Description: { Hostname: string }; ManagerStatus?: { Leader?: boolean } }>).find((x) => x.ManagerStatus?.Leader);
    if (n) return hosts.find((x) => x.name === n.Description.Hostname);
  }
  return undefined;
}

async function waitUntil(fn: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn().catch(() => false))) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(300);
  }
}

/** The running containers on the overlay, host by host, as each host's engine has them. */
async function runningEndpoints(hosts: LabHost[]): Promise<Endpoint[]> {
  const out: Endpoint[] = [];
  for (const h of hosts) {
    const r = await h.host.api('GET', '/containers/json', undefined, {}, { timeoutMs: 15_000 });
    if (r.status !== 200) throw new Error(`${h.name}: containers: ${r.status}`);
    for (const c of r.json as Array<{ Id: string; Names: string[]; State: string; NetworkSettings?: { Networks?: Record<string, { IPAddress: string; MacAddress: string }> } }>) {
      const ep = c.NetworkSettings?.Networks?.[NET];
      if (c.State !== 'running' || !ep) continue;
      out.push({ host: h.index, id: c.Id, name: c.Names[0]!.replace(/^\//, ''), ip: ep.IPAddress, mac: ep.MacAddress.toLowerCase() });
    }
  }
  return out;
}

/** Everything that must hold once the hosts agree; an empty list when it does. */
async function check(hosts: LabHost[], netId: string, removed: Set<string>, rng: Rng): Promise<string[]> {
  const problems: string[] = [];
  let eps: Endpoint[];
  try { eps = await runningEndpoints(hosts); } catch (e) { return [(e as Error).message]; }
  const byIp = new Map<string, Endpoint>();
  for (const e of eps) {
    const other = byIp.get(e.ip);
    if (other) problems.push(`address ${e.ip} held by ${other.name} on lab${other.host} and ${e.name} on lab${e.host}`);
    byIp.set(e.ip, e);
  }
  const vx = `bvx-${netId.slice(0, 11)}`;
  for (const h of hosts) {
    const want = eps.filter((e) => e.host !== h.index);
    const fdb = JSON.parse((await h.host.inNetns('bridge', ['-j', 'fdb', 'show', 'dev', vx])).stdout || '[]') as Array<{ mac: string; dst?: string }>;
    const got = new Map(fdb.filter((f) => f.dst).map((f) => [f.mac.toLowerCase(), f.dst!]));
    for (const e of want) {
      const dst = got.get(e.mac);
      if (!dst) problems.push(`${h.name}: no FDB entry for ${e.name} (${e.mac}) on lab${e.host}`);
      else if (dst !== `10.99.0.${e.host + 1}`) problems.push(`${h.name}: FDB sends ${e.name} to ${dst}, not lab${e.host}`);
    }
    for (const mac of got.keys()) if (!want.some((e) => e.mac === mac)) problems.push(`${h.name}: stale FDB entry ${mac} → ${got.get(mac)}`);
    const neigh = JSON.parse((await h.host.inNetns('ip', ['-j', 'neigh', 'show', 'dev', vx])).stdout || '[]') as Array<{ dst: string; lladdr?: string }>;
    for (const e of want) if (!neigh.some((n) => n.dst === e.ip && n.lladdr?.toLowerCase() === e.mac)) problems.push(`${h.name}: no neighbour entry ${e.ip} → ${e.mac} (${e.name})`);
    for (const n of neigh) if (!want.some((e) => e.ip === n.dst)) problems.push(`${h.name}: stale neighbour entry ${n.dst}`);
  }
  if (problems.length) return problems;
  // Names, from each host's probe: all names from one, a sample from the others.
  const asker = rng.int(hosts.length);
  for (const h of hosts) {
    const probe = `probe${h.index}`;
    const names = h.index === asker ? eps.map((e) => e.name) : eps.filter(() => rng.chance(0.3)).map((e) => e.name);
    for (const name of names) {
      const want = byIp.get(eps.find((e) => e.name === name)!.ip)!;
      const r = await lookup(h.host, probe, name).catch((e: Error) => ({ rcode: e.message, addrs: [] as string[] }));
      if (r.rcode !== 'NOERROR' || r.addrs.join() !== want.ip) problems.push(`${h.name}: ${name} answers ${r.rcode} ${r.addrs.join(',')}, not ${want.ip}`);
    }
    for (const name of removed) {
      if (eps.some((e) => e.name === name)) continue;
      // berth does not know it and forwards it: the lab's hosts have no upstream, so SERVFAIL is
      // as good as NXDOMAIN here; an answer, or no answer at all, is not.
      const r = await lookup(h.host, probe, name).catch((e: Error) => ({ rcode: e.message, addrs: [] as string[] }));
      if (r.rcode !== 'NXDOMAIN' && r.rcode !== 'SERVFAIL') problems.push(`${h.name}: removed ${name} answers ${r.rcode} ${r.addrs.join(',')}`);
    }
  }
  if (problems.length) return problems;
  // Reachability: one host's probe to every container on the others.
  const from = hosts[rng.int(hosts.length)]!;
  for (const e of eps.filter((x) => x.host !== from.index)) {
    const r = await probePing(from.host, `probe${from.index}`, e.ip, { waitSec: 1 }).catch((err: Error) => err.message);
    if (r !== 'reached') problems.push(`${from.name}: ${e.name} (${e.ip}) on lab${e.host} ${r}`);
  }
  return problems;
}
