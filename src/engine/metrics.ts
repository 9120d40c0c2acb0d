import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { cpus, totalmem } from 'node:os';
import { BadRequestError } from '../util/errors.js';
import { run } from '../util/exec.js';

/** `docker top`: runs ps on the host and keeps the rows whose PID belongs to the container. */
export async function topProcesses(pids: number[], psArgs: string): Promise<{ Titles: string[]; Processes: string[][] }> {
  const args = psArgs.trim() ? psArgs.trim().split(/\s+/) : ['-ef'];
  const r = await run('ps', args);
  // ps_args ps refuses, or that leave out the PID column, are the client's mistake: a 400 with
  // ps's own first line (Docker answers 500 for both; the fuzz suite holds berth to a 4xx).
  if (r.code !== 0) throw new BadRequestError(`Error running ps: ${r.stderr.trim().split('\n')[0] || `exit status ${r.code}`}`);
  const lines = r.stdout.split('\n').filter((l) => l.trim() !== '');
  const titles = (lines[0] ?? '').trim().split(/\s+/);
  const pidCol = titles.indexOf('PID');
  if (pidCol < 0) throw new BadRequestError(`Couldn't find PID field in ps output`);
  const wanted = new Set(pids.map(String));
  const processes: string[][] = [];
  for (const line of lines.slice(1)) {
    const fields = line.trim().split(/\s+/);
    // The last column (the command) may contain spaces: join what is left over into it.
    const row = [...fields.slice(0, titles.length - 1), fields.slice(titles.length - 1).join(' ')];
    if (wanted.has(row[pidCol] ?? '')) processes.push(row);
  }
  return { Titles: titles, Processes: processes };
}

async function readNumber(path: string): Promise<number | undefined> {
  try {
    const n = Number((await fs.readFile(path, 'utf8')).trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

async function readKeyValues(path: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  try {
    for (const line of (await fs.readFile(path, 'utf8')).split('\n')) {
      const [k, v] = line.split(/\s+/);
      if (k && v !== undefined) out[k] = Number(v);
    }
  } catch { /* controller not mounted */ }
  return out;
}

/** Total host CPU time in nanoseconds, from the first line of /proc/stat (USER_HZ = 100). */
async function systemCpuNs(): Promise<number> {
  const line = (await fs.readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const ticks = line.split(/\s+/).slice(1, 8).reduce((a, b) => a + Number(b), 0);
  return ticks * 10_000_000;
}

async function netStats(pid: number): Promise<Record<string, object>> {
  const nets: Record<string, object> = {};
  if (!pid) return nets;
  try {
    const text = await fs.readFile(`/proc/${pid}/net/dev`, 'utf8');
    for (const line of text.split('\n').slice(2)) {
      const m = /^\s*([^:]+):\s*(.*)$/.exec(line);
      if (!m || m[1] === 'lo') continue;
      const f = m[2]!.trim().split(/\s+/).map(Number);
      nets[m[1]!] = {
        rx_bytes: f[0], rx_packets: f[1], rx_errors: f[2], rx_dropped: f[3],
        tx_bytes: f[8], tx_packets: f[9], tx_errors: f[10], tx_dropped: f[11],
      };
    }
  } catch { /* process gone */ }
  return nets;
}

/**
 * Where the container cgroups are and how they read. cgroup v2 (the unified hierarchy, the only one
 * on stock Debian 12 and Ubuntu 22.04+) has `cgroup.controllers` at its root; otherwise each v1
 * controller is a hierarchy of its own below the root (this machine's hybrid layout, whose unified
 * hierarchy at `unified/` holds no controllers but cpu.stat).
 */
export interface CgroupLayout { version: 1 | 2; root: string }

export function detectCgroupLayout(root = '/sys/fs/cgroup'): CgroupLayout {
  return { version: existsSync(join(root, 'cgroup.controllers')) ? 2 : 1, root };
}

/** What either layout gives, in Docker's units (ns for CPU, bytes for memory and I/O). */
export interface CgroupSample {
  cpuTotalNs: number;
  cpuUserNs: number;
  cpuSystemNs: number;
  perCpuNs?: number[];
  throttling: { periods: number; throttled_periods: number; throttled_time: number };
  memUsage?: number;
  memMaxUsage?: number;
  memLimit?: number;
  memStat: Record<string, number>;
  pidsCurrent?: number;
  pidsLimit?: number;
  io: Array<{ major: number; minor: number; op: string; value: number }>;
}

/** cgroup v1: one directory per controller (`cpuacct/berth/<id>`, `memory/berth/<id>`, …). */
export async function readCgroupV1(root: string, cgroup: string): Promise<CgroupSample> {
  const [usage, perCpu, memUsage, memLimit, memStat, pidsCur, pidsMax, blk, acct, cpuStat] = await Promise.all([
    readNumber(`${root}/cpuacct${cgroup}/cpuacct.usage`),
    fs.readFile(`${root}/cpuacct${cgroup}/cpuacct.usage_percpu`, 'utf8').then((t) => t.trim().split(/\s+/).map(Number)).catch(() => [] as number[]),
    readNumber(`${root}/memory${cgroup}/memory.usage_in_bytes`),
    readNumber(`${root}/memory${cgroup}/memory.limit_in_bytes`),
    readKeyValues(`${root}/memory${cgroup}/memory.stat`),
    readNumber(`${root}/pids${cgroup}/pids.current`),
    fs.readFile(`${root}/pids${cgroup}/pids.max`, 'utf8').then((t) => t.trim()).catch(() => 'max'),
    fs.readFile(`${root}/blkio${cgroup}/blkio.throttle.io_service_bytes_recursive`, 'utf8').catch(() => ''),
    readKeyValues(`${root}/cpuacct${cgroup}/cpuacct.stat`),
    readKeyValues(`${root}/cpu${cgroup}/cpu.stat`),
  ]);
  const maxUsage = await readNumber(`${root}/memory${cgroup}/memory.max_usage_in_bytes`);
  return {
    cpuTotalNs: usage ?? 0,
    // cpuacct.stat counts USER_HZ ticks (100 a second).
    cpuUserNs: (acct.user ?? 0) * 10_000_000,
    cpuSystemNs: (acct.system ?? 0) * 10_000_000,
    perCpuNs: perCpu.filter((n) => !Number.isNaN(n)),
    throttling: { periods: cpuStat.nr_periods ?? 0, throttled_periods: cpuStat.nr_throttled ?? 0, throttled_time: cpuStat.throttled_time ?? 0 },
    ...(memUsage !== undefined ? { memUsage } : {}),
    ...(maxUsage !== undefined ? { memMaxUsage: maxUsage } : {}),
    ...(memLimit !== undefined ? { memLimit } : {}),
    memStat,
    ...(pidsCur !== undefined ? { pidsCurrent: pidsCur } : {}),
    ...(pidsMax !== 'max' && Number.isFinite(Number(pidsMax)) ? { pidsLimit: Number(pidsMax) } : {}),
    io: blk.split('\n').map((l) => l.trim().split(/\s+/)).filter((f) => f.length === 3)
      .map(([dev, op, value]) => {
        const [major, minor] = (dev ?? '0:0').split(':').map(Number);
        return { major: major ?? 0, minor: minor ?? 0, op: op ?? '', value: Number(value) };
      }),
  };
}

/**
 * cgroup v2: every controller's files in the one directory `<root><cgroup>`. A file of a controller
 * not enabled for the cgroup is absent and its figures are left out (on this machine's hybrid
 * layout only cpu.stat and cgroup.threads exist there), as Docker leaves them.
 */
export async function readCgroupV2(dir: string): Promise<CgroupSample> {
  const [cpu, memCurrent, memMax, memPeak, memStat, pidsCur, pidsMax, ioStat, threads] = await Promise.all([
    readKeyValues(join(dir, 'cpu.stat')),
    readNumber(join(dir, 'memory.current')),
    fs.readFile(join(dir, 'memory.max'), 'utf8').then((t) => t.trim()).catch(() => undefined),
    readNumber(join(dir, 'memory.peak')),
    readKeyValues(join(dir, 'memory.stat')),
    readNumber(join(dir, 'pids.current')),
    fs.readFile(join(dir, 'pids.max'), 'utf8').then((t) => t.trim()).catch(() => 'max'),
    fs.readFile(join(dir, 'io.stat'), 'utf8').catch(() => ''),
    // Without the pids controller, the cgroup's threads are still listed: their count is pids.current.
    fs.readFile(join(dir, 'cgroup.threads'), 'utf8').then((t) => t.split('\n').filter(Boolean).length).catch(() => undefined),
  ]);
  const io: CgroupSample['io'] = [];
  // "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0": Docker reports the bytes as read/write.
  for (const line of ioStat.split('\n')) {
    const [dev, ...fields] = line.trim().split(/\s+/);
    if (!dev || !/^\d+:\d+$/.test(dev)) continue;
    const [major, minor] = dev.split(':').map(Number) as [number, number];
    const kv = Object.fromEntries(fields.map((f) => f.split('=')).map(([k, v]) => [k, Number(v)]));
    if (kv.rbytes !== undefined) io.push({ major, minor, op: 'read', value: kv.rbytes });
    if (kv.wbytes !== undefined) io.push({ major, minor, op: 'write', value: kv.wbytes });
  }
  const pidsCurrent = pidsCur ?? threads;
  return {
    cpuTotalNs: (cpu.usage_usec ?? 0) * 1000,
    cpuUserNs: (cpu.user_usec ?? 0) * 1000,
    cpuSystemNs: (cpu.system_usec ?? 0) * 1000,
    throttling: { periods: cpu.nr_periods ?? 0, throttled_periods: cpu.nr_throttled ?? 0, throttled_time: (cpu.throttled_usec ?? 0) * 1000 },
    ...(memCurrent !== undefined ? { memUsage: memCurrent } : {}),
    ...(memPeak !== undefined ? { memMaxUsage: memPeak } : {}),
    ...(memMax !== undefined && memMax !== 'max' && Number.isFinite(Number(memMax)) ? { memLimit: Number(memMax) } : {}),
    memStat,
    ...(pidsCurrent !== undefined ? { pidsCurrent } : {}),
    ...(pidsMax !== 'max' && Number.isFinite(Number(pidsMax)) ? { pidsLimit: Number(pidsMax) } : {}),
    io,
  };
}

/** The container's cgroup figures from whichever layout the host has. */
export function readCgroup(layout: CgroupLayout, cgroup: string): Promise<CgroupSample> {
  return layout.version === 2 ? readCgroupV2(join(layout.root, cgroup)) : readCgroupV1(layout.root, cgroup);
}

let hostLayout: CgroupLayout | undefined;

/**
 * One sample in the API's ContainerStats shape, from the cgroup runc made for the container
 * (`cgroup`, e.g. `/berth/<id>`), in the host's layout unless `layout` says otherwise.
 */
export async function sampleStats(cgroup: string, pid: number, name: string, id: string, layout: CgroupLayout = hostLayout ??= detectCgroupLayout()): Promise<Record<string, unknown>> {
  const [cg, sys, nets] = await Promise.all([readCgroup(layout, cgroup), systemCpuNs(), netStats(pid)]);
  const v2 = layout.version === 2;
  return {
    read: new Date().toISOString(),
    preread: '0001-01-01T00:00:00Z',
    name: `/${name}`,
    id,
    pids_stats: { ...(cg.pidsCurrent !== undefined ? { current: cg.pidsCurrent } : {}), ...(cg.pidsLimit !== undefined ? { limit: cg.pidsLimit } : {}) },
    blkio_stats: {
      io_service_bytes_recursive: cg.io, io_serviced_recursive: null, io_queue_recursive: null,
      io_service_time_recursive: null, io_wait_time_recursive: null, io_merged_recursive: null,
      io_time_recursive: null, sectors_recursive: null,
    },
    num_procs: 0,
    storage_stats: {},
    cpu_stats: {
      cpu_usage: {
        total_usage: cg.cpuTotalNs,
        // cgroup v2 has no per-CPU figures; Docker leaves the field out there.
        ...(cg.perCpuNs ? { percpu_usage: cg.perCpuNs } : {}),
        usage_in_kernelmode: cg.cpuSystemNs, usage_in_usermode: cg.cpuUserNs,
      },
      system_cpu_usage: sys,
      online_cpus: cpus().length,
      throttling_data: cg.throttling,
    },
    precpu_stats: { cpu_usage: { total_usage: 0, usage_in_kernelmode: 0, usage_in_usermode: 0 }, throttling_data: { periods: 0, throttled_periods: 0, throttled_time: 0 } },
    memory_stats: {
      usage: cg.memUsage ?? 0,
      // v1 has a high-water mark; v2 only since memory.peak (Linux 5.19), and Docker omits it on v2.
      ...(!v2 ? { max_usage: cg.memMaxUsage ?? cg.memStat.max_usage_in_bytes ?? cg.memUsage ?? 0 } : {}),
      stats: cg.memStat,
      // An unlimited cgroup reports a huge number (v1) or "max" (v2); Docker clients expect the host's memory then.
      limit: cg.memLimit === undefined || cg.memLimit > totalmem() ? totalmem() : cg.memLimit,
    },
    networks: nets,
  };
}
