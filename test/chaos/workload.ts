import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import tar from 'tar-stream';
import { HangError, startFakeUpstream, TestHost, type ApiResponse } from '../integration/harness.js';
import { startRegistry, type RegistryServer } from '../integration/registry-server.js';
import { berthCgroups, conmons, findViolations, inspectAll, runcProcesses } from './invariants.js';
import { Rng } from './rng.js';
import { run } from '../../src/util/exec.js';

/**
 * The chaos workload of issue 22: concurrent mixed operations through the API while faults are
 * injected at random moments, and after each fault the invariants of invariants.ts, the restart
 * policies and "every survivor still runs" are checked. Seeded: the same seed makes the same
 * choices (the timing of a real kernel still varies, so a replay reproduces the schedule, not
 * every interleaving).
 */
export type FaultKind = 'berthd' | 'conmon' | 'runc' | 'everything' | 'container-process';
export const FAULT_KINDS: FaultKind[] = ['berthd', 'conmon', 'runc', 'everything', 'container-process'];

export interface ChaosOptions {
  seed: number;
  cycles: number;
  /** Stop after this many minutes even if cycles remain. */
  minutes?: number;
  /** Concurrent clients per cycle. */
  workers?: number;
  /** Look names up every N cycles (each lookup is an exec); 0 never. */
  dnsEvery?: number;
  /** Pull from a registry the run starts, and build tiny images. */
  pull?: boolean;
  build?: boolean;
  /** Bound on every API call (ms): a call past it is a hang, and a hang is a failure. */
  opTimeoutMs?: number;
  /** Stop at the first cycle with a violation (the default) or go on and count. */
  keepGoing?: boolean;
  log?: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  cycles: number;
  durationMs: number;
  faults: Record<FaultKind, number>;
  /** runc faults for which no runc process was alive at the moment. */
  runcMissed: number;
  operations: Record<string, { ok: number; refused: number; serverError: number; interrupted: number }>;
  /** Distinct 5xx answers (method path → message), which a fault may explain or not. */
  serverErrors: Record<string, number>;
  hangs: string[];
  /**
   * What was seen at each hang while the call was still under way: the container's state, the
   * runc and conmon processes alive and for how long, berthd's lines about the container, and the
   * calls that touched it. CI shows only a failure's message, so this is what a hang there leaves.
   */
  hangEvidence: string[];
  /** The slowest answered calls (ms, cycle, call): a tail growing toward the bound shows before a hang does. */
  slowest: Array<{ ms: number; cycle: number; call: string }>;
  /** Invariant violations (leaks, duplicate addresses, disagreements), by cycle. */
  violations: Array<{ cycle: number; fault: FaultKind; what: string[] }>;
  /** Violations seen once that were gone 3 s later (a policy restart under way while the check read). */
  transient: Array<{ cycle: number; fault: FaultKind; what: string[] }>;
  /** Restart policies not honoured, and survivors that stopped running. */
  policyViolations: Array<{ cycle: number; fault: FaultKind; what: string }>;
  dnsChecks: number;
  /** How long each berthd restart took until it answered /_ping (ms). */
  restartsMs: number[];
}

interface Ctx {
  host: TestHost;
  rng: Rng;
  opts: Required<Pick<ChaosOptions, 'opTimeoutMs'>> & ChaosOptions;
  report: ChaosReport;
  seq: number;
  knownIds: Set<string>;
  orphans: Set<string>;
  removedNames: string[];
  /** Containers stopped through the API (no restart policy applies until started again). */
  manuallyStopped: Set<string>;
  /**
   * Stops (and restarts) that failed or got no answer: their signal may have gone, and Docker
   * cancels the policy before it sends it, so the run they aimed at may end without a restart. The
   * cancel lives in the daemon's memory: a berthd restart clears the set.
   */
  stopsFailed: Set<string>;
  /** Containers an operation touched in this cycle. */
  touched: Set<string>;
  daemonDown: boolean;
  registry?: RegistryServer;
  /** The API calls of this cycle and the one before, as they ended: written beside a finding's berthd log. */
  calls: string[];
  previousCalls: string[];
  cycle: number;
  /** Where this cycle's part of berthd's log begins. */
  cycleLogFrom: number;
}

const MAX_CONTAINERS = 12;
const MAX_NETWORKS = 4;
const PORT_BASE = 21000;

function emptyReport(seed: number): ChaosReport {
  return {
    seed, cycles: 0, durationMs: 0, runcMissed: 0, dnsChecks: 0, restartsMs: [],
    faults: Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>,
    operations: {}, serverErrors: {}, hangs: [], hangEvidence: [], slowest: [], violations: [], transient: [], policyViolations: [],
  };
}

/** One bounded API call, classified. Connection errors while berthd is down are "interrupted". */
async function call(ctx: Ctx, op: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse | undefined> {
  const o = (ctx.report.operations[op] ??= { ok: 0, refused: 0, serverError: 0, interrupted: 0 });
  const began = new Date().toISOString().slice(11, 23);
  const t0 = Date.now();
  const trace = (outcome: string) => ctx.calls.push(`${began}-${new Date().toISOString().slice(17, 23)} ${method} ${path}${body && typeof body === 'object' ? ` ${JSON.stringify(body).slice(0, 300)}` : ''} → ${outcome}`);
  try {
    const r = await ctx.host.api(method, path, body, headers, { timeoutMs: ctx.opts.opTimeoutMs });
    trace(`${r.status}${r.status >= 400 ? ` ${String(r.json?.message ?? r.body).slice(0, 200)}` : ''}`);
    noteDuration(ctx, Date.now() - t0, `${method} ${path} → ${r.status}`);
    if (r.status >= 500) {
      o.serverError++;
      const msg = `${method} ${path.replace(/[0-9a-f]{64}/g, 'ID').replace(/=[^&]*/g, '=…')} ${r.status} ${String(r.json?.message ?? r.body).slice(0, 160).replace(/[0-9a-f]{12,64}/g, 'ID')}`;
      ctx.report.serverErrors[msg] = (ctx.report.serverErrors[msg] ?? 0) + 1;
    } else if (r.status >= 400) o.refused++;
    else o.ok++;
    return r;
  } catch (e) {
    trace(`${(e as Error).message.slice(0, 120)}`);
    if (e instanceof HangError) {
      ctx.report.hangs.push(`cycle ${ctx.cycle}: ${e.message}${ctx.daemonDown ? ' (berthd was down)' : ''}`);
      ctx.report.hangEvidence.push(await hangEvidence(ctx, `${method} ${path}`).catch((x) => `evidence of ${method} ${path}: ${(x as Error).message}`));
      o.serverError++;
    } else o.interrupted++;
    return undefined;
  }
}

function noteDuration(ctx: Ctx, ms: number, what: string): void {
  const slowest = ctx.report.slowest;
  if (slowest.length >= 8 && ms <= slowest[slowest.length - 1]!.ms) return;
  slowest.push({ ms, cycle: ctx.cycle, call: what });
  slowest.sort((a, b) => b.ms - a.ms);
  slowest.length = Math.min(slowest.length, 8);
}

/** See ChaosReport.hangEvidence; bounded so a report stays readable. */
async function hangEvidence(ctx: Ctx, what: string): Promise<string> {
  const id = /[0-9a-f]{64}/.exec(what)?.[0];
  const key = id?.slice(0, 12);
  const mine = (l: string) => !key || l.includes(key) || l.includes(id!);
  const out = [`cycle ${ctx.cycle}, seed ${ctx.opts.seed}: ${what} had no answer after ${ctx.opts.opTimeoutMs} ms`];
  if (id) {
    const r = await ctx.host.api('GET', `/containers/${id}/json`, undefined, {}, { timeoutMs: 5000 }).catch((e) => ({ status: 0, json: undefined, body: (e as Error).message }));
    out.push(`inspect: ${r.status} ${r.status === 200 ? JSON.stringify({ State: r.json.State, RestartCount: r.json.RestartCount, Policy: r.json.HostConfig?.RestartPolicy?.Name }) : String(r.body).slice(0, 200)}`);
  }
  // Every runc of the host (one stuck on another container may hold this one up) and the container's conmon.
  const monitors = await conmons(ctx.host);
  const pids = [...(await runcProcesses(ctx.host)), ...(id ? monitors.get(id) ?? [] : [...monitors.values()].flat())];
  const ps = pids.length ? (await run('ps', ['-o', 'pid=,ppid=,stat=,etimes=,args=', '-p', pids.join(',')])).stdout : '';
  const procs = ps.split('\n').filter(Boolean).map((l) => `  ${l.trim().replace(/\s--?[\w-]+[ =]\/\S+/g, '').slice(0, 220)}`);
  out.push(`processes (pid ppid stat seconds, paths left out):`, ...procs);
  if (id) {
    // A start stuck in its create shows here: its processes and whether the cgroup is frozen.
    const dirs = (await berthCgroups()).get(id) ?? [];
    const freezer = dirs.find((d) => d.includes('/freezer/'));
    const freezerState = freezer ? (await fs.readFile(join(freezer, 'freezer.state'), 'utf8').catch(() => '?')).trim() : 'none';
    const members = dirs[0] ? (await fs.readFile(join(dirs[0], 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean) : [];
    const states = await Promise.all(members.map(async (p) => {
      const stat = await fs.readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
      return `${p}${stat.slice(stat.indexOf('('), stat.lastIndexOf(')') + 3)}`;
    }));
    out.push(`its cgroup: freezer ${freezerState}; processes ${states.join(', ') || 'none'}`);
  }
  const lines = ctx.host.daemonLog.split('\n').filter(Boolean);
  out.push(`berthd about it:`, ...lines.filter(mine).slice(-25).map((l) => `  ${l.slice(0, 300)}`));
  // What else berthd said meanwhile: a hang may wait on another container or a network.
  out.push(`berthd's other lines this cycle (the last 15):`, ...ctx.host.daemonLog.slice(ctx.cycleLogFrom).split('\n').filter((l) => l && !mine(l)).slice(-15).map((l) => `  ${l.slice(0, 300)}`));
  out.push(`calls on it (this cycle and the one before):`, ...[...ctx.previousCalls, ...ctx.calls].filter(mine).slice(-20).map((l) => `  ${l.slice(0, 200)}`));
  return out.join('\n');
}

async function containers(ctx: Ctx): Promise<Array<{ Id: string; Names: string[]; State: string }>> {
  const r = await call(ctx, 'list', 'GET', '/containers/json?all=1');
  return r?.status === 200 ? r.json : [];
}

async function userNetworks(ctx: Ctx): Promise<string[]> {
  const r = await call(ctx, 'list', 'GET', '/networks');
  return r?.status === 200 ? (r.json as Array<{ Name: string }>).map((n) => n.Name).filter((n) => n.startsWith('chn')) : [];
}

type Op = 'run' | 'rm' | 'connect' | 'disconnect' | 'netcreate' | 'netrm' | 'stop' | 'restart' | 'start' | 'pull' | 'build';

async function operation(ctx: Ctx, rng: Rng): Promise<void> {
  const weights: Record<Op, number> = { run: 6, rm: 3, connect: 2, disconnect: 2, netcreate: 1, netrm: 1, stop: 1, restart: 1, start: 1, pull: ctx.registry ? 1 : 0, build: ctx.opts.build ? 1 : 0 };
  const op = rng.weighted(weights);
  const n = ++ctx.seq;
  switch (op) {
    case 'run': {
      const all = await containers(ctx);
      if (all.length >= MAX_CONTAINERS) return void await removeOne(ctx, rng, all);
      const nets = await userNetworks(ctx);
      const net = rng.chance(0.8) ? rng.pick(nets) ?? 'bridge' : 'bridge';
      const policy = rng.pick([{ Name: 'no' }, { Name: 'always' }, { Name: 'on-failure', MaximumRetryCount: 3 }])!;
      const publish = rng.chance(0.5);
      const hostPort = rng.chance(0.5) ? String(PORT_BASE + rng.int(40)) : '';
      const body: Record<string, unknown> = {
        Image: ctx.registry && rng.chance(0.3) ? `${ctx.registry.addr}/busybox:latest` : 'busybox',
        // Longer than any run: a container that sleeps out its time and exits 0 is not one the faults lost
        // (seed 151227's cycle 558 verdict was a `sleep 3600` left untouched for an hour).
        Cmd: ['sleep', '1000000'],
        ...(publish ? { ExposedPorts: { '80/tcp': {} } } : {}),
        HostConfig: { NetworkMode: net, RestartPolicy: policy, ...(publish ? { PortBindings: { '80/tcp': [{ HostPort: hostPort }] } } : {}) },
        ...(net !== 'bridge' ? { NetworkingConfig: { EndpointsConfig: { [net]: { Aliases: [`al${n}`, ...(rng.chance(0.3) ? ['shared'] : [])] } } } } : {}),
      };
      const c = await call(ctx, 'create', 'POST', `/containers/create?name=ch${n}`, body);
      if (c?.status !== 201) return;
      ctx.knownIds.add(c.json.Id);
      ctx.touched.add(c.json.Id);
      await call(ctx, 'start', 'POST', `/containers/${c.json.Id}/start`);
      return;
    }
    case 'rm': return void await removeOne(ctx, rng, await containers(ctx));
    case 'connect': case 'disconnect': {
      const running = (await containers(ctx)).filter((c) => c.State === 'running');
      const c = rng.pick(running);
      const net = rng.pick(await userNetworks(ctx));
      if (!c || !net) return;
      ctx.touched.add(c.Id);
      await call(ctx, op, 'POST', `/networks/${net}/${op}`, op === 'connect' ? { Container: c.Id, EndpointConfig: { Aliases: [`cx${n}`] } } : { Container: c.Id, Force: rng.chance(0.3) });
      return;
    }
    case 'netcreate': {
      if ((await userNetworks(ctx)).length >= MAX_NETWORKS) return;
      await call(ctx, 'netcreate', 'POST', '/networks/create', { Name: `chn${n}`, CheckDuplicate: true });
      return;
    }
    case 'netrm': {
      const net = rng.pick(await userNetworks(ctx));
      if (net) await call(ctx, 'netrm', 'DELETE', `/networks/${net}`);
      return;
    }
    case 'stop': case 'restart': case 'start': {
      const all = await containers(ctx);
      const c = rng.pick(op === 'start' ? all.filter((x) => x.State !== 'running') : all.filter((x) => x.State === 'running'));
      if (!c) return;
      ctx.touched.add(c.Id);
      const r = await call(ctx, op, 'POST', `/containers/${c.Id}/${op}${op === 'start' ? '' : '?t=1'}`);
      if (op === 'stop' && r && r.status < 400) ctx.manuallyStopped.add(c.Id);
      if (op !== 'stop') ctx.manuallyStopped.delete(c.Id);
      if (op !== 'start' && (!r || r.status >= 500)) ctx.stopsFailed.add(c.Id);
      return;
    }
    case 'pull': {
      await call(ctx, 'pull', 'POST', `/images/create?fromImage=${encodeURIComponent(`${ctx.registry!.addr}/busybox`)}&tag=latest`);
      return;
    }
    case 'build': {
      const ctxTar = await dockerfileTar(`FROM busybox\nLABEL chaos=${n}\n${rng.chance(0.3) ? 'RUN echo built > /built\n' : ''}`);
      await call(ctx, 'build', 'POST', `/build?t=chaosbuild:${n % 3}&rm=1&forcerm=1`, ctxTar, { 'Content-Type': 'application/x-tar' });
      return;
    }
  }
}

async function removeOne(ctx: Ctx, rng: Rng, all: Array<{ Id: string; Names: string[] }>): Promise<void> {
  const c = rng.pick(all);
  if (!c) return;
  ctx.touched.add(c.Id);
  const r = await call(ctx, 'rm', 'DELETE', `/containers/${c.Id}?force=1`);
  if (r?.status === 204) {
    ctx.removedNames.push(c.Names[0]!.replace(/^\//, ''));
    ctx.orphans.delete(c.Id);
    ctx.manuallyStopped.delete(c.Id);
  }
}

function dockerfileTar(dockerfile: string): Promise<Buffer> {
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, dockerfile);
  pack.finalize();
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    pack.on('data', (c: unknown) => chunks.push(c as Buffer));
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Is `pid` a process of the container `id` (its cgroup names it)? Guards against a reused pid. */
async function pidOfContainer(pid: number, id: string): Promise<boolean> {
  return (await fs.readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '')).includes(id);
}

async function inject(ctx: Ctx, kind: FaultKind): Promise<string> {
  const { host, rng } = ctx;
  switch (kind) {
    case 'berthd': {
      ctx.daemonDown = true;
      await host.stopDaemon('SIGKILL');
      return 'berthd killed';
    }
    case 'everything': {
      ctx.daemonDown = true;
      await host.stopDaemon('SIGKILL');
      const all = await conmons(host);
      for (const [id, pids] of all) {
        for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
        ctx.orphans.add(id);
      }
      return `berthd and ${all.size} conmon killed`;
    }
    case 'conmon': {
      const all = [...(await conmons(host)).entries()];
      const hit = rng.pick(all);
      if (!hit) return 'conmon: none running';
      for (const p of hit[1]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
      ctx.orphans.add(hit[0]);
      return `conmon of ${hit[0].slice(0, 12)} killed`;
    }
    case 'runc': {
      // runc lives for tens of milliseconds: look for one for up to a second.
      const deadline = Date.now() + 1000;
      while (Date.now() < deadline) {
        const pids = await runcProcesses(host);
        const p = rng.pick(pids);
        if (p) {
          const args = (await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).split('\0');
          const id = args.find((a) => /^[0-9a-f]{64}$/.test(a));
          try { process.kill(p, 'SIGKILL'); } catch { continue; }
          // A runc create killed after it forked the container's init takes conmon with it: the
          // container may then run unmonitored, watched by berthd as an orphan (by design).
          if (id) { ctx.orphans.add(id); ctx.touched.add(id); }
          return `runc ${args.find((a) => ['create', 'start', 'state', 'kill', 'delete', 'exec', 'ps', 'update', 'pause', 'resume', 'init'].includes(a)) ?? args[0]} of ${id?.slice(0, 12) ?? '?'} killed`;
        }
        await sleep(5);
      }
      ctx.report.runcMissed++;
      return 'runc: none caught';
    }
    case 'container-process': {
      const running = (await inspectAll(host, ctx.opts.opTimeoutMs).catch(() => [])).filter((c) => c.State.Running && c.State.Pid > 0);
      const c = rng.pick(running);
      if (!c) return 'container-process: none running';
      if (!(await pidOfContainer(c.State.Pid, c.Id))) return 'container-process: pid changed';
      try { process.kill(c.State.Pid, 'SIGKILL'); } catch { return 'container-process: gone'; }
      ctx.touched.add(c.Id);
      return `process of ${c.Name} (${c.HostConfig.RestartPolicy?.Name ?? 'no'}) killed`;
    }
  }
}

function stoppedByUser(ctx: Ctx): Set<string> {
  return new Set([...ctx.manuallyStopped, ...ctx.stopsFailed]);
}

/** The restart policy's verdict on a container that is not running: may it stay so? */
/** The host ports running containers hold ("21029"): a port a stopped one could not bind is one of these, or leaked. */
function heldPorts(all: Array<{ State: { Running: boolean }; NetworkSettings: { Ports: Record<string, unknown[] | null> } }>): Set<string> {
  return new Set(all.filter((c) => c.State.Running).flatMap((c) => Object.values(c.NetworkSettings.Ports ?? {})
    .flatMap((bs) => (bs ?? []).map((b) => String((b as { HostPort?: string }).HostPort ?? '')))));
}

function mayStayDown(c: { Id: string; State: { Status: string; ExitCode: number; Error?: string }; HostConfig: { RestartPolicy?: { Name: string; MaximumRetryCount?: number } }; RestartCount: number }, manuallyStopped: Set<string>, daemonRestarted: boolean, held: Set<string>): boolean {
  if (c.State.Status === 'created' || manuallyStopped.has(c.Id)) return true;
  // A restart whose start failed is given up (Docker's restart manager does the same), unless
  // the daemon itself restarted since: Docker starts such containers again when it starts.
  if (c.State.Error && !daemonRestarted) return true;
  // Started again at the daemon's start, and refused its published port because a running
  // container holds it (another container took the port while this one was down): given up, as
  // Docker gives up a failed restart. A port nobody running holds would be a leak, and no excuse.
  const port = /Bind for [^ ]*:(\d+) failed: port is already allocated/.exec(c.State.Error ?? '')?.[1];
  if (port && held.has(port)) return true;
  // A network removed while the container was stopped (Docker allows that) can never be joined
  // again: no policy can bring such a container back, in Docker or here.
  if (c.State.Error && /network .* not found/i.test(c.State.Error)) return true;
  const p = c.HostConfig.RestartPolicy;
  if (!p?.Name || p.Name === 'no') return true;
  if (p.Name === 'on-failure') return c.State.ExitCode === 0 || (!!p.MaximumRetryCount && c.RestartCount >= p.MaximumRetryCount);
  return false;
}

export async function runChaos(host: TestHost, options: ChaosOptions): Promise<ChaosReport> {
  const opts = { opTimeoutMs: 45_000, workers: 4, dnsEvery: 5, ...options };
  const log = opts.log ?? (() => undefined);
  const ctx: Ctx = {
    host, rng: new Rng(opts.seed), opts, report: emptyReport(opts.seed), seq: 0,
    knownIds: new Set(), orphans: new Set(), removedNames: [], manuallyStopped: new Set(), stopsFailed: new Set(), touched: new Set(), daemonDown: false,
    calls: [], previousCalls: [], cycle: 0, cycleLogFrom: 0,
  };
  const t0 = Date.now();
  const upstream = await startFakeUpstream(host);
  try {
    if (opts.pull) {
      ctx.registry = await startRegistry(host, 5000);
      const tag = await host.api('POST', `/images/busybox/tag?repo=${encodeURIComponent(`${ctx.registry.addr}/busybox`)}&tag=latest`);
      if (tag.status !== 201) throw new Error(`tag: ${tag.status} ${tag.body}`);
      const push = await host.api('POST', `/images/${encodeURIComponent(`${ctx.registry.addr}/busybox`)}/push?tag=latest`, undefined, { 'X-Registry-Auth': Buffer.from('{}').toString('base64') }, { timeoutMs: 60_000 });
      if (push.status !== 200 || /"error"/.test(push.body)) throw new Error(`push: ${push.status} ${push.body.slice(-300)}`);
    }
    // BERTH_CHAOS_LOGS=DIR keeps berthd's log of every cycle with a finding (and of the cycle
    // before it: a verdict's container may have been started by the previous restart).
    const logs = process.env.BERTH_CHAOS_LOGS;
    let prevLogFrom = 0;
    for (let cycle = 1; cycle <= opts.cycles; cycle++) {
      if (opts.minutes && Date.now() - t0 > opts.minutes * 60_000) break;
      const rng = ctx.rng;
      const logFrom = host.daemonLog.length;
      const findingsBefore = ctx.report.policyViolations.length;
      const before = (await inspectAll(host, opts.opTimeoutMs).catch(() => [])).filter((c) => c.State.Running).map((c) => c.Id);
      ctx.touched = new Set();
      ctx.cycle = cycle;
      ctx.cycleLogFrom = logFrom;
      const hangsBefore = ctx.report.hangs.length;
      ctx.previousCalls = ctx.calls;
      ctx.calls = [];
      // The first cycles take every kind once, so even a short run injects each.
      const kind = cycle <= FAULT_KINDS.length ? FAULT_KINDS[cycle - 1]! : rng.weighted<FaultKind>({ berthd: 4, conmon: 2, runc: 2, everything: 1, 'container-process': 2 });
      const faultAt = 20 + rng.int(600);
      const tailMs = rng.int(400);
      let stop = false;
      const daemonRestarted = kind === 'berthd' || kind === 'everything';
      // Each client draws from its own generator, so its choices do not depend on the others' timing.
      const workers = Array.from({ length: opts.workers }, async (_, w) => {
        const own = new Rng(opts.seed * 7919 + cycle * 131 + w);
        while (!stop) {
          await operation(ctx, own);
          if (ctx.daemonDown) await sleep(30);
        }
      });
      await sleep(faultAt);
      const what = await inject(ctx, kind);
      ctx.report.faults[kind]++;
      if (ctx.daemonDown) {
        await sleep(rng.int(200));
        const t = Date.now();
        try {
          await host.startDaemon([], { timeoutMs: 90_000 });
        } catch (e) {
          ctx.report.hangs.push(`cycle ${cycle}: berthd did not answer within 90 s of its restart after "${what}": ${(e as Error).message.slice(-1500)}`);
          stop = true;
          await Promise.all(workers);
          break;
        }
        ctx.report.restartsMs.push(Date.now() - t);
        ctx.daemonDown = false;
        ctx.stopsFailed.clear();
      }
      await sleep(tailMs);
      stop = true;
      await Promise.all(workers);
      ctx.report.cycles = cycle;

      // Settle: restart policies get their backoff (100 ms doubling per restart), then are judged.
      const settleDeadline = Date.now() + 12_000;
      // The workers have stopped: who stopped what is settled for this cycle.
      const userStopped = stoppedByUser(ctx);
      const owedRestart = (c: Awaited<ReturnType<typeof inspectAll>>[number], held: Set<string>) =>
        !c.State.Running && !mayStayDown(c, userStopped, daemonRestarted, held) && 100 * 2 ** Math.min(c.RestartCount, 10) < 10_000;
      let all = await inspectAll(host, opts.opTimeoutMs);
      while (Date.now() < settleDeadline) {
        const held = heldPorts(all);
        const pending = all.filter((c) => owedRestart(c, held));
        if (!pending.length && !all.some((c) => c.State.Status === 'restarting')) break;
        await sleep(200);
        all = await inspectAll(host, opts.opTimeoutMs);
      }
      const held = heldPorts(all);
      for (const c of all) {
        if (owedRestart(c, held)) {
          ctx.report.policyViolations.push({ cycle, fault: kind, what: `${c.Name} (restart ${c.HostConfig.RestartPolicy?.Name}, RestartCount ${c.RestartCount}) is ${c.State.Status} exit ${c.State.ExitCode}${c.State.Error ? ` (${c.State.Error.slice(0, 100)})` : ''}${daemonRestarted ? ' after a berthd restart' : ''}` });
          // Judged once: taken out of the workload's way so the next cycles judge afresh.
          ctx.manuallyStopped.add(c.Id);
        }
      }
      for (const id of before) {
        const c = all.find((x) => x.Id === id);
        if (c && !c.State.Running && !ctx.touched.has(id)) {
          ctx.report.policyViolations.push({ cycle, fault: kind, what: `${c.Name} was running, untouched, and is ${c.State.Status} exit ${c.State.ExitCode} (started ${c.State.StartedAt}, finished ${c.State.FinishedAt}) after "${what}"` });
        }
      }
      const dns = opts.dnsEvery > 0 && cycle % opts.dnsEvery === 0;
      if (dns) ctx.report.dnsChecks++;
      const check = () => findViolations(host, { orphans: ctx.orphans, knownIds: ctx.knownIds, dnsSample: dns ? 3 : 0, removedNames: ctx.removedNames.slice(-3), timeoutMs: opts.opTimeoutMs });
      let v = await check();
      if (v.length) {
        // A restart policy's start may have been under way while the check read: what lasts counts.
        await sleep(3000);
        const again = await check();
        if (!again.length) ctx.report.transient.push({ cycle, fault: kind, what: v });
        else for (const c of await inspectAll(host, opts.opTimeoutMs).catch(() => [])) {
          if (again.some((x) => x.includes(c.Id.slice(0, 12)))) log(`  ${c.Name}: ${JSON.stringify({ State: c.State, RestartCount: c.RestartCount, SandboxKey: c.NetworkSettings.SandboxKey, Networks: c.NetworkSettings.Networks, Ports: c.NetworkSettings.Ports })}`);
        }
        v = again;
      }
      for (const id of [...ctx.orphans]) if (!all.some((c) => c.Id === id && c.State.Running)) ctx.orphans.delete(id);
      log(`cycle ${cycle}: ${what} at ${faultAt} ms; ${all.filter((c) => c.State.Running).length}/${all.length} running; ${v.length ? `VIOLATIONS: ${v.join('; ')}` : 'invariants hold'}`);
      if (logs && (v.length || ctx.report.policyViolations.length > findingsBefore || ctx.report.hangs.length > hangsBefore)) {
        await fs.writeFile(join(logs, `cycle-${cycle}.log`), host.daemonLog.slice(prevLogFrom)).catch(() => undefined);
        await fs.writeFile(join(logs, `cycle-${cycle}.calls`), [`# cycle ${cycle - 1}`, ...ctx.previousCalls, `# cycle ${cycle}: ${what} at ${faultAt} ms`, ...ctx.calls, ''].join('\n')).catch(() => undefined);
      }
      prevLogFrom = logFrom;
      if (v.length) {
        ctx.report.violations.push({ cycle, fault: kind, what: v });
        if (!opts.keepGoing) break;
      }
      if (ctx.report.hangs.length && !opts.keepGoing) break;
    }
  } finally {
    ctx.report.durationMs = Date.now() - t0;
    upstream.kill('SIGKILL');
    await ctx.registry?.stop().catch(() => undefined);
    // A daemon left down stays down: TestHost.destroy runs berthd --cleanup itself.
  }
  return ctx.report;
}
