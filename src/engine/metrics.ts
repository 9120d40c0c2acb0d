import { promises as fs } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { runOk } from '../util/exec.js';

/** `docker top`: runs ps on the host and keeps the rows whose PID belongs to the container. */
export async function topProcesses(pids: number[], psArgs: string): Promise<{ Titles: string[]; Processes: string[][] }> {
  const args = psArgs.trim() ? psArgs.trim().split(/\s+/) : ['-ef'];
  const out = await runOk('ps', args);
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  const titles = (lines[0] ?? '').trim().split(/\s+/);
  const pidCol = titles.indexOf('PID');
  if (pidCol < 0) throw new Error(`Couldn't find PID field in ps output`);
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
 * One sample in the API's ContainerStats shape, read from the cgroup v1 hierarchy runc made for
 * the container (`/berth/<id>` under each controller).
 */
export async function sampleStats(cgroup: string, pid: number, name: string, id: string): Promise<Record<string, unknown>> {
  const base = '/sys/fs/cgroup';
  const [usage, perCpu, sys, memUsage, memLimit, memStat, pidsCur, pidsMax, nets, blk] = await Promise.all([
    readNumber(`${base}/cpuacct${cgroup}/cpuacct.usage`),
    fs.readFile(`${base}/cpuacct${cgroup}/cpuacct.usage_percpu`, 'utf8').then((t) => t.trim().split(/\s+/).map(Number)).catch(() => [] as number[]),
    systemCpuNs(),
    readNumber(`${base}/memory${cgroup}/memory.usage_in_bytes`),
    readNumber(`${base}/memory${cgroup}/memory.limit_in_bytes`),
    readKeyValues(`${base}/memory${cgroup}/memory.stat`),
    readNumber(`${base}/pids${cgroup}/pids.current`),
    fs.readFile(`${base}/pids${cgroup}/pids.max`, 'utf8').then((t) => t.trim()).catch(() => 'max'),
    netStats(pid),
    fs.readFile(`${base}/blkio${cgroup}/blkio.throttle.io_service_bytes_recursive`, 'utf8').catch(() => ''),
  ]);
  const acct = await readKeyValues(`${base}/cpuacct${cgroup}/cpuacct.stat`);
  const blkio = blk.split('\n').map((l) => l.trim().split(/\s+/)).filter((f) => f.length === 3)
    .map(([dev, op, value]) => {
      const [major, minor] = (dev ?? '0:0').split(':').map(Number);
      return { major, minor, op, value: Number(value) };
    });
  return {
    read: new Date().toISOString(),
    preread: '0001-01-01T00:00:00Z',
    name: `/${name}`,
    id,
    pids_stats: { current: pidsCur ?? 0, ...(pidsMax !== 'max' ? { limit: Number(pidsMax) } : {}) },
    blkio_stats: {
      io_service_bytes_recursive: blkio, io_serviced_recursive: null, io_queue_recursive: null,
      io_service_time_recursive: null, io_wait_time_recursive: null, io_merged_recursive: null,
      io_time_recursive: null, sectors_recursive: null,
    },
    num_procs: 0,
    storage_stats: {},
    cpu_stats: {
      cpu_usage: {
        total_usage: usage ?? 0, percpu_usage: perCpu.filter((n) => !Number.isNaN(n)),
        usage_in_kernelmode: (acct.system ?? 0) * 10_000_000, usage_in_usermode: (acct.user ?? 0) * 10_000_000,
      },
      system_cpu_usage: sys,
      online_cpus: cpus().length,
      throttling_data: { periods: 0, throttled_periods: 0, throttled_time: 0 },
    },
    precpu_stats: { cpu_usage: { total_usage: 0, usage_in_kernelmode: 0, usage_in_usermode: 0 }, throttling_data: { periods: 0, throttled_periods: 0, throttled_time: 0 } },
    memory_stats: {
      usage: memUsage ?? 0,
      max_usage: memStat.max_usage_in_bytes ?? memUsage ?? 0,
      stats: memStat,
      // An unlimited cgroup reports a huge number; Docker clients expect the host's memory then.
      limit: memLimit === undefined || memLimit > totalmem() ? totalmem() : memLimit,
    },
    networks: nets,
  };
}
