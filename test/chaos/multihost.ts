import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';
import { HangError, lookup, mountsUnder, probePing } from '../integration/harness.js';
import { Lab, type LabHost } from '../integration/lab.js';
import { Rng } from './rng.js';

/**
 * Chaos across hosts: a swarm of three managers on the lab's underlay with one overlay network,
 * containers run and removed on every host by concurrent clients while one fault a cycle strikes —
 * a host's berthd killed with -9, a host cut off the underlay for longer than the lease TTL, the
 * etcd leader's member killed, two of three managers cut off (quorum lost), a whole host restarted
 * (every process of it killed and its kernel state gone, as a reboot leaves it) — and healed. A
 * replicated service on the overlay is scaled by the clients meanwhile, and its task containers are
 * among those they remove. After each cycle, once every node is Ready, the hosts must agree with
 * what runs, within a bound:
 *   - no two endpoints share an address, on any host;
 *   - each host's VXLAN FDB and neighbour entries are exactly the other hosts' running endpoints,
 *     each pointing at its owner's VTEP (no stale entry, none missing);
 *   - from a container on each host, every running container's name answers with its address and
 *     the names of containers removed this cycle are NXDOMAIN (names are never stale);
 *   - a container on one host reaches every container on the others;
 *   - every container that ran before the cycle and no client removed still runs (but those of a
 *     restarted host, which a reboot stops);
 *   - the service runs exactly its replica count of tasks, one per slot, each a task the
 *     orchestrator wants running (no task lost or duplicated); from every host `tasks.SVC` answers
 *     exactly their addresses, `SVC` its VIP, and the balancer in each probe's namespace sends the
 *     VIP to exactly them (no stale VIP backend).
 * Seeded: the same seed makes the same choices (faults, moments, operations).
 */

export type HostFault = 'berthd' | 'partition' | 'etcd-leader' | 'quorum' | 'host-restart';
export const FAULTS: HostFault[] = ['berthd', 'partition', 'etcd-leader', 'quorum', 'host-restart'];
const NET = 'mh';
const SVC = 'mhsvc';
const MAX_CONTAINERS = 9;
const MAX_REPLICAS = 4;

export interface MultihostOptions {
  seed: number;
  cycles: number;
  minutes?: number;
  leaseTtlSec?: number;
  /** Only these faults, in turn from a seeded pick (replaying one kind of finding); every kind when absent. */
  faults?: HostFault[];
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
  /** The first few answers of each operation that failed (faults make some fail; these say how). */
  failures: Record<string, string[]>;
  hangs: string[];
  durationMs: number;
  leaks: string[];
}

interface Endpoint {
  host: number; id: string; name: string; ip: string; mac: string;
  /** Set for a service's task container: its task id and slot, from Docker's labels. */
  task?: { id: string; service: string; slot: string };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runMultihostChaos(o: MultihostOptions): Promise<MultihostReport> {
  const ttl = o.leaseTtlSec ?? 3;
  const opTimeoutMs = o.opTimeoutMs ?? 45_000;
  const convergeMs = o.convergeMs ?? 20_000;
  const rng = new Rng(o.seed);
  const t0 = Date.now();
  const report: MultihostReport = {
    seed: o.seed, cycles: 0, faults: { berthd: 0, partition: 0, 'etcd-leader': 0, quorum: 0, 'host-restart': 0 }, operations: {},
    convergeMs: [], violations: [], failures: {}, hangs: [], durationMs: 0, leaks: [],
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
    const svc = await hosts[0]!.host.api('POST', '/services/create', {
      Name: SVC, Mode: { Replicated: { Replicas: 2 } }, Networks: [{ Target: NET }],
      // A task that ends on SIGTERM, as a real server does: a stop takes a moment, not the grace period.
      TaskTemplate: { ContainerSpec: { Image: 'busybox', Command: ['sh', '-c', "trap 'exit 0' TERM; while :; do sleep 1; done"] }, RestartPolicy: { Condition: 'any', Delay: 500_000_000 } },
    });
    if (svc.status !== 201) throw new Error(`creating service ${SVC}: ${svc.status} ${svc.body}`);
    await waitUntil(async () => (await runningEndpoints(hosts)).filter((e) => e.task).length === 2, 60_000);
    const count = (op: string, ok: boolean) => {
      const c = (report.operations[op] ??= { ok: 0, failed: 0 });
      if (ok) c.ok++; else c.failed++;
    };
    /** An API call bounded by the op timeout; a call past it is a hang. */
    const call = async (h: LabHost, op: string, method: string, path: string, body?: unknown) => {
      try {
        const r = await h.host.api(method, path, body, {}, { timeoutMs: opTimeoutMs });
        count(op, r.status < 300);
        const seen = (report.failures[op] ??= []);
        if (r.status >= 300 && seen.length < 3) seen.push(`${h.name}: ${r.status} ${r.body.trim().slice(0, 160)}`);
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
      // The first cycles take each fault once.
      const kinds = o.faults?.length ? o.faults : FAULTS;
      const fault = cycle <= kinds.length ? kinds[cycle - 1]! : rng.pick(kinds)!;
      report.faults[fault]++;
      // Each berthd log is marked where the cycle begins: a violation shows what each host said since.
      const logFrom = hosts.map((h) => h.host.daemonLog.length);
      mark(hosts, `cycle ${cycle} (${fault}) begins`);
      const before = await runningEndpoints(hosts);
      const removed = new Set<string>();
      const problems0: string[] = [];
      const untouchable = new Set(before.filter((e) => e.name.startsWith('probe')).map((e) => e.id));
      const touched = new Set<string>();

      let stop = false;
      const worker = async () => {
        while (!stop) {
          const h = rng.pick(hosts)!;
          const all = await runningEndpoints(hosts).catch(() => before);
          const mine = all.filter((e) => e.host === h.index && !untouchable.has(e.id));
          const total = all.filter((e) => !e.task).length - hosts.length;
          if (rng.chance(0.15)) {
            // The orchestrator's side under the same faults: the replica count changes.
            const cur = await call(h, 'service inspect', 'GET', `/services/${SVC}`);
            if (cur?.status === 200) {
              const spec = cur.json.Spec as { Mode: { Replicated: { Replicas: number } } };
              spec.Mode.Replicated.Replicas = 1 + rng.int(MAX_REPLICAS);
              await call(h, 'service scale', 'POST', `/services/${SVC}/update?version=${cur.json.Version.Index}`, spec);
            }
          } else if (total < MAX_CONTAINERS && rng.chance(0.65)) {
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
              const r = await call(h, victim.task ? 'rm task' : 'rm', 'DELETE', `/containers/${victim.id}?force=1`);
              // A task's container is replaced by another of another name: its own name must go.
              if (r?.status === 204) removed.add(victim.name);
            }
          }
          await sleep(rng.int(300));
        }
      };
      const workers = [worker(), worker()];
      await sleep(200 + rng.int(800));
      const { what, restarted } = await inject(lab, fault, rng, ttl);
      mark(hosts, `healed: ${what}`);
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
        // What each manager saw, and every berthd's log, so that a hang can be read afterwards.
        const views = await Promise.all(hosts.map(async (h) => {
          const n = await h.host.api('GET', '/nodes', undefined, {}, { timeoutMs: 5000 }).catch((e: Error) => e);
          if (n instanceof Error) return `${h.name}: ${n.message}`;
          if (n.status !== 200) return `${h.name}: ${n.status} ${n.body.slice(0, 200)}`;
          return `${h.name}: ${(n.json as Array<{ Description: { Hostname: string }; Status: { State: string } }>).map((x) => `${x.Description.Hostname} ${x.Status.State}`).join(', ')}`;
        }));
        const logs = await fs.mkdtemp(join(tmpdir(), 'berth-chaos-hang-'));
        await lab.saveLogs(logs);
        // Each member logs beside its pid file (etcdmember.ts), which the etcd-leader fault reads.
        for (const h of hosts) await fs.copyFile(join(h.host.root, 'cluster', 'etcd.log'), join(logs, `${h.name}-etcd.log`)).catch(() => undefined);
        report.hangs.push(`cycle ${cycle}: not every node Ready within 60 s of "${what}" (${views.join('; ')}; berthd logs in ${logs})`);
        break;
      }
      if (restarted !== undefined) {
        // The probe of a rebooted host is started again, as its user would (restart policy none).
        const h = hosts[restarted]!;
        const s = await call(h, 'start probe', 'POST', `/containers/probe${h.index}/start`);
        if (s?.status !== 204 && s?.status !== 304) problems0.push(`${h.name}: probe${h.index} does not start after the restart: ${s?.status} ${s?.body}`);
      }
      const readyAt = Date.now();
      let problems: string[] = [...problems0];
      // When the look that found them agreeing began (0: at the first look after all were Ready).
      let agreedAt = readyAt;
      let firstLook: string[] | undefined;
      for (;;) {
        agreedAt = Date.now();
        problems = [...problems0, ...(await check(hosts, netId, removed, rng))];
        firstLook ??= problems;
        if (!problems.length || Date.now() - readyAt > convergeMs) break;
        await sleep(500);
      }
      // What the hosts still disagreed on at the first look: where the time to agree went.
      if (firstLook.length && !problems.length) o.log(`cycle ${cycle}: at the first look: ${firstLook.slice(0, 4).join('; ')}`);
      // Survivors: what ran before and no client touched runs still.
      const now = new Set((await runningEndpoints(hosts)).map((e) => e.id));
      // A task may move (its node cut off) and a reboot stops what ran on the host: the service
      // checks cover tasks, and a restarted host's probe is started again.
      for (const e of before) {
        if (touched.has(e.id) || now.has(e.id) || e.task || e.host === restarted) continue;
        problems.push(`${e.name} on lab${e.host} ran before the cycle, untouched, and runs no more`);
      }
      if (problems.length) {
        for (const p of problems) report.violations.push({ cycle, fault, what: p });
        o.log(`cycle ${cycle}: ${what}; VIOLATIONS: ${problems.join('; ')}`);
        for (const [i, h] of hosts.entries()) o.log(`cycle ${cycle}: ${h.name} berthd said:\n${saidSince(h, logFrom[i]!)}`);
      } else {
        report.convergeMs.push(agreedAt - readyAt);
        o.log(`cycle ${cycle}: ${what}; ${now.size} running; hosts agree ${agreedAt - readyAt} ms after every node was Ready (the look took ${Date.now() - agreedAt} ms)`);
      }
    }
  } finally {
    // BERTH_MH_LOGS=DIR keeps every host's berthd log of the run (for a violation's replay).
    const logs = process.env.BERTH_MH_LOGS;
    if (logs) await lab.saveLogs(logs);
    report.leaks = await lab.destroy();
    report.durationMs = Date.now() - t0;
  }
  return report;
}

/** A line in every host's berthd log, with the time: where a cycle and its fault are. */
function mark(hosts: LabHost[], what: string): void {
  for (const h of hosts) h.host.daemonLog += `=== chaos ${new Date().toISOString().slice(11, 23)}: ${what}\n`;
}

/** What a host's berthd logged from an offset on, without Node's warnings, the last 80 lines at most. */
function saidSince(h: LabHost, from: number): string {
  const lines = h.host.daemonLog.slice(from).split('\n').filter((l) => l && !/DEP0123|trace-deprecation/.test(l));
  return lines.slice(-80).map((l) => `  ${l}`).join('\n');
}

async function inject(lab: Lab, fault: HostFault, rng: Rng, ttl: number): Promise<{ what: string; restarted?: number }> {
  const hosts = lab.hosts;
  if (fault === 'host-restart') {
    const h = rng.pick(hosts)!;
    await reboot(h);
    await sleep(rng.int(1500));
    await h.host.startDaemon([], { timeoutMs: 90_000 });
    return { what: `${h.name} restarted (every process killed, its kernel state gone)`, restarted: h.index };
  }
  return { what: await injectFault(lab, fault, rng, ttl) };
}

/**
 * A host's reboot without the machine's: berthd, its etcd member, every conmon and container
 * process killed with -9; then what a reboot wipes: the host's links (but its uplink) and nft
 * tables, and every mount under its root (container root filesystems, namespace pins, whose
 * namespaces then go with their interfaces). Files under the root stay, as on a disk.
 */
async function reboot(h: LabHost): Promise<void> {
  const root = h.host.root;
  await h.host.stopDaemon('SIGKILL');
  const containers = await run('runc', ['--root', join(root, 'runc'), 'list', '-f', 'json']);
  for (const c of (JSON.parse(containers.stdout || 'null') ?? []) as Array<{ pid: number }>) {
    if (c.pid > 0) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone already */ } }
  }
  const ps = await run('ps', ['-eo', 'pid,args']);
  for (const line of ps.stdout.split('\n')) {
    const [pid, ...args] = line.trim().split(/\s+/);
    if (pid && Number(pid) !== process.pid && args.join(' ').includes(root)) { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ } }
  }
  await waitUntil(async () => !(await run('ps', ['-eo', 'args'])).stdout.split('\n').some((l) => l.includes(root) && !l.startsWith('ps ')), 15_000);
  const links = await h.host.inNetns('ip', ['-o', 'link', 'show']);
  const drop = links.stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0]).filter((n): n is string => !!n && n !== 'lo' && !n.startsWith('btv'));
  if (drop.length) await h.host.inNetns('ip', ['-batch', '-'], drop.map((n) => `link del ${n}`).join('\n') + '\n');
  for (const t of (await h.host.inNetns('nft', ['list', 'tables'])).stdout.split('\n').filter(Boolean)) {
    await h.host.inNetns('nft', ['delete', ...t.split(' ')]);
  }
  for (const m of await mountsUnder(root)) await run('umount', ['--lazy', m]);
}

async function injectFault(lab: Lab, fault: Exclude<HostFault, 'host-restart'>, rng: Rng, ttl: number): Promise<string> {
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

/**
 * Who a stale FDB entry stands for, as the host behind it has it: a container of any state with
 * that MAC on the overlay (with its state), or a host's ingress endpoint, or nothing there at all.
 */
async function holderOf(hosts: LabHost[], vtep: string, mac: string): Promise<string> {
  const h = hosts.find((x) => `10.99.0.${x.index + 1}` === vtep);
  if (!h) return '';
  const r = await h.host.api('GET', '/containers/json?all=1', undefined, {}, { timeoutMs: 15_000 }).catch(() => undefined);
  const c = (r?.json as Array<{ Names: string[]; State: string; Status: string; NetworkSettings?: { Networks?: Record<string, { MacAddress: string }> } }> | undefined)
    ?.find((x) => x.NetworkSettings?.Networks?.[NET]?.MacAddress?.toLowerCase() === mac);
  return c ? ` (on ${h.name}: ${c.Names[0]} ${c.State}, ${c.Status})` : ` (on ${h.name}: no container has it)`;
}

/** The running containers on the overlay, host by host, as each host's engine has them. */
async function runningEndpoints(hosts: LabHost[]): Promise<Endpoint[]> {
  const out: Endpoint[] = [];
  for (const h of hosts) {
    const r = await h.host.api('GET', '/containers/json', undefined, {}, { timeoutMs: 15_000 });
    if (r.status !== 200) throw new Error(`${h.name}: containers: ${r.status}`);
    for (const c of r.json as Array<{ Id: string; Names: string[]; State: string; Labels?: Record<string, string>; NetworkSettings?: { Networks?: Record<string, { IPAddress: string; MacAddress: string }> } }>) {
      const ep = c.NetworkSettings?.Networks?.[NET];
      if (c.State !== 'running' || !ep) continue;
      const taskId = c.Labels?.['com.docker.swarm.task.id'];
      const taskName = c.Labels?.['com.docker.swarm.task.name'] ?? '';
      out.push({
        host: h.index, id: c.Id, name: c.Names[0]!.replace(/^\//, ''), ip: ep.IPAddress, mac: ep.MacAddress.toLowerCase(),
        ...(taskId ? { task: { id: taskId, service: c.Labels?.['com.docker.swarm.service.name'] ?? '', slot: taskName.split('.')[1] ?? '' } } : {}),
      });
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
    for (const mac of got.keys()) if (!want.some((e) => e.mac === mac)) problems.push(`${h.name}: stale FDB entry ${mac} → ${got.get(mac)}${await holderOf(hosts, got.get(mac)!, mac)}`);
    const neigh = JSON.parse((await h.host.inNetns('ip', ['-j', 'neigh', 'show', 'dev', vx])).stdout || '[]') as Array<{ dst: string; lladdr?: string }>;
    for (const e of want) if (!neigh.some((n) => n.dst === e.ip && n.lladdr?.toLowerCase() === e.mac)) problems.push(`${h.name}: no neighbour entry ${e.ip} → ${e.mac} (${e.name})`);
    for (const n of neigh) if (!want.some((e) => e.ip === n.dst)) problems.push(`${h.name}: stale neighbour entry ${n.dst}`);
  }
  if (problems.length) return problems;
  // Names, from each host's probe: all names from one, a sample from the others.
  const asker = rng.int(hosts.length);
  for (const h of hosts) {
    const probe = `probe${h.index}`;
    const plain = eps.filter((e) => !e.task);
    const names = h.index === asker ? plain.map((e) => e.name) : plain.filter(() => rng.chance(0.3)).map((e) => e.name);
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
  problems.push(...(await serviceProblems(hosts, eps)));
  if (problems.length) return problems;
  // Reachability: one host's probe to every container on the others.
  const from = hosts[rng.int(hosts.length)]!;
  for (const e of eps.filter((x) => x.host !== from.index)) {
    const r = await probePing(from.host, `probe${from.index}`, e.ip, { waitSec: 1 }).catch((err: Error) => err.message);
    if (r !== 'reached') problems.push(`${from.name}: ${e.name} (${e.ip}) on lab${e.host} ${r}`);
  }
  return problems;
}

/** No task lost or duplicated, and every host's names and balancers name exactly the running tasks. */
async function serviceProblems(hosts: LabHost[], eps: Endpoint[]): Promise<string[]> {
  const problems: string[] = [];
  const svc = await hosts[0]!.host.api('GET', `/services/${SVC}`, undefined, {}, { timeoutMs: 15_000 });
  if (svc.status !== 200) return [`service inspect: ${svc.status} ${svc.body}`];
  const replicas = Number(svc.json.Spec.Mode.Replicated.Replicas);
  const vip = String(svc.json.Endpoint?.VirtualIPs?.[0]?.Addr ?? '').split('/')[0];
  const tasks = eps.filter((e) => e.task?.service === SVC);
  if (tasks.length !== replicas) problems.push(`${SVC} runs ${tasks.length} task containers (${tasks.map((t) => `${t.name} on lab${t.host}`).join(', ')}), wants ${replicas}`);
  const slots = new Map<string, Endpoint[]>();
  for (const t of tasks) slots.set(t.task!.slot, [...(slots.get(t.task!.slot) ?? []), t]);
  for (const [slot, ts] of slots) if (ts.length > 1) problems.push(`${SVC} slot ${slot} runs twice: ${ts.map((t) => `${t.name} on lab${t.host}`).join(', ')}`);
  const filters = encodeURIComponent(JSON.stringify({ service: [SVC], 'desired-state': ['running'] }));
  const listed = await hosts[0]!.host.api('GET', `/tasks?filters=${filters}`, undefined, {}, { timeoutMs: 15_000 });
  if (listed.status !== 200) return [...problems, `tasks: ${listed.status} ${listed.body}`];
  const wanted = new Set((listed.json as Array<{ ID: string; DesiredState: string }>).filter((t) => t.DesiredState === 'running').map((t) => t.ID));
  for (const t of tasks) if (!wanted.has(t.task!.id)) problems.push(`${t.name} on lab${t.host} runs a task the orchestrator does not want running`);
  if (problems.length) return problems;
  const want = tasks.map((t) => t.ip).sort();
  for (const h of hosts) {
    const probe = `probe${h.index}`;
    const r = await lookup(h.host, probe, `tasks.${SVC}`).catch((e: Error) => ({ rcode: e.message, addrs: [] as string[] }));
    const got = [...r.addrs].sort();
    if (want.length ? r.rcode !== 'NOERROR' || got.join() !== want.join() : got.length) problems.push(`${h.name}: tasks.${SVC} answers ${r.rcode} ${got.join(',')}, not ${want.join(',')}`);
    const v = await lookup(h.host, probe, SVC).catch((e: Error) => ({ rcode: e.message, addrs: [] as string[] }));
    if (v.rcode !== 'NOERROR' || v.addrs.join() !== vip) problems.push(`${h.name}: ${SVC} answers ${v.rcode} ${v.addrs.join(',')}, not its VIP ${vip}`);
    const sandbox = await h.host.api('GET', `/containers/${probe}/json`);
    const key = String(sandbox.json?.NetworkSettings?.SandboxKey ?? '');
    const table = await run('nsenter', [`--net=${key}`, 'nft', 'list', 'table', 'ip', 'berth_svc']);
    // The VIP's element in each slot's map (berth_svc's slot maps: `vip counter packets N bytes N : backend`).
    const backends = [...table.stdout.matchAll(/([0-9.]+) counter packets \d+ bytes \d+ : ([0-9.]+)/g)].filter((m) => m[1] === vip).map((m) => m[2]!).sort();
    if (table.code !== 0 || backends.join() !== want.join()) problems.push(`${h.name}: the balancer in ${probe} sends ${SVC} to ${backends.join(',') || 'nothing'}${table.code ? ` (${table.stderr.trim()})` : ''}, not ${want.join(',')}`);
  }
  return problems;
}
