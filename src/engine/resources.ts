import { existsSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { BadRequestError } from '../util/errors.js';

/** The HostConfig resource fields berth applies (through the OCI spec at start, `runc update` later). */
export const RESOURCE_FIELDS = [
  'Memory', 'MemorySwap', 'MemoryReservation', 'NanoCpus', 'CpuShares', 'CpuPeriod', 'CpuQuota',
  'CpusetCpus', 'CpusetMems', 'PidsLimit', 'BlkioWeight',
] as const;

export type Resources = Partial<Record<(typeof RESOURCE_FIELDS)[number], number | string | null>>;

const num = (v: unknown): number => (typeof v === 'number' ? v : 0);
const MIN_MEMORY = 6 * 1024 * 1024;

/** Docker's checks (daemon/daemon_unix.go verifyPlatformContainerResources), with its messages. */
export function validateResources(r: Resources, ncpu = cpus().length): void {
  for (const k of RESOURCE_FIELDS) {
    const v = r[k];
    if (v === undefined || v === null) continue;
    const isString = k === 'CpusetCpus' || k === 'CpusetMems';
    if (isString ? typeof v !== 'string' : typeof v !== 'number') throw new BadRequestError(`invalid type for field HostConfig.${k}: expected ${isString ? 'string' : 'number'}`);
  }
  const memory = num(r.Memory);
  // Any non-zero value under 6MB, negative ones included (-1 is not "unlimited" for Memory).
  if (memory !== 0 && memory < MIN_MEMORY) throw new BadRequestError('Minimum memory limit allowed is 6MB');
  const swap = num(r.MemorySwap);
  if (swap > 0 && memory === 0) throw new BadRequestError('You should always set the Memory limit when using Memoryswap limit');
  if (swap > 0 && swap < memory) throw new BadRequestError('Minimum memoryswap limit should be larger than memory limit, see usage');
  const reservation = num(r.MemoryReservation);
  if (reservation > 0 && reservation < MIN_MEMORY) throw new BadRequestError('Minimum memory reservation allowed is 6MB');
  if (memory > 0 && reservation > 0 && memory < reservation) throw new BadRequestError('Minimum memory limit can not be less than memory reservation limit, see usage');
  const nano = num(r.NanoCpus);
  if (nano > 0 && (num(r.CpuPeriod) > 0 || num(r.CpuQuota) > 0)) {
    throw new BadRequestError(`Conflicting options: Nano CPUs and CPU ${num(r.CpuPeriod) > 0 ? 'Period' : 'Quota'} cannot both be set`);
  }
  if (nano < 0 || nano > ncpu * 1e9) throw new BadRequestError(`Range of CPUs is from 0.01 to ${ncpu}.00, as there are only ${ncpu} CPUs available`);
  const period = num(r.CpuPeriod);
  if (period !== 0 && (period < 1000 || period > 1_000_000)) throw new BadRequestError('CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)');
  const quota = num(r.CpuQuota);
  if (quota > 0 && quota < 1000) throw new BadRequestError('CPU cfs quota can not be less than 1ms (i.e. 1000)');
  const blkio = num(r.BlkioWeight);
  if (blkio > 0 && (blkio < 10 || blkio > 1000)) throw new BadRequestError('Range of blkio weight is from 10 to 1000');
}

/**
 * Whether the kernel accounts swap; Docker drops the swap limit otherwise (and runc would fail to
 * write it). cgroup v1 has memsw files in the memory hierarchy; cgroup v2 has memory.swap.max in
 * every non-root cgroup with the memory controller, so berthd's own cgroup (or the usual
 * init.scope) is asked.
 */
export function swapAccounting(root = '/sys/fs/cgroup'): boolean {
  if (!existsSync(`${root}/cgroup.controllers`)) return existsSync(`${root}/memory/memory.memsw.limit_in_bytes`);
  let own = '';
  try {
    own = /^0::(\/.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '';
  } catch { /* no procfs: fall back to init.scope */ }
  return [own, '/init.scope', '/system.slice'].some((cg) => cg !== '' && cg !== '/' && existsSync(`${root}${cg}/memory.swap.max`));
}

/** The OCI LinuxResources for the fields (devices left to the spec builder). */
export function ociResources(r: Resources, withSwap = swapAccounting()): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const memory: Record<string, number> = {};
  if (num(r.Memory) > 0) memory.limit = num(r.Memory);
  if (num(r.MemoryReservation) > 0) memory.reservation = num(r.MemoryReservation);
  // Docker's default with swap accounting: as much swap as memory (memory+swap = 2 × memory); -1 unlimited.
  if (withSwap && num(r.Memory) > 0) memory.swap = num(r.MemorySwap) !== 0 ? num(r.MemorySwap) : 2 * num(r.Memory);
  if (Object.keys(memory).length) out.memory = memory;
  const cpu: Record<string, number | string> = {};
  if (num(r.CpuShares) > 0) cpu.shares = num(r.CpuShares);
  if (num(r.NanoCpus) > 0) {
    // As Docker: a period of 100ms and the quota that gives NanoCpus/1e9 CPUs.
    cpu.period = 100_000;
    cpu.quota = Math.round((num(r.NanoCpus) * 100_000) / 1e9);
  }
  if (num(r.CpuPeriod) > 0) cpu.period = num(r.CpuPeriod);
  if (num(r.CpuQuota) !== 0) cpu.quota = num(r.CpuQuota);
  if (typeof r.CpusetCpus === 'string' && r.CpusetCpus) cpu.cpus = r.CpusetCpus;
  if (typeof r.CpusetMems === 'string' && r.CpusetMems) cpu.mems = r.CpusetMems;
  if (Object.keys(cpu).length) out.cpu = cpu;
  if (num(r.PidsLimit) !== 0) out.pids = { limit: num(r.PidsLimit) > 0 ? num(r.PidsLimit) : -1 };
  if (num(r.BlkioWeight) > 0) out.blockIO = { weight: num(r.BlkioWeight) };
  return out;
}

const ULIMITS = ['core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack', 'as'];
const IPC_SYSCTLS = ['kernel.msgmax', 'kernel.msgmnb', 'kernel.msgmni', 'kernel.sem', 'kernel.shmall', 'kernel.shmmax', 'kernel.shmmni', 'kernel.shm_rmid_forced'];

export interface ProcessLimits { Ulimits?: Array<{ Name: string; Soft: number; Hard: number }> | null; Sysctls?: Record<string, string> | null; ShmSize?: number | null; NetworkMode?: string }

/**
 * Ulimits, Sysctls and ShmSize with Docker's checks: only namespaced sysctls (IPC ones,
 * fs.mqueue.*, and net.* unless the container shares the host's network namespace).
 */
export function validateProcessLimits(p: ProcessLimits): void {
  if (p.Ulimits !== undefined && p.Ulimits !== null && !Array.isArray(p.Ulimits)) throw new BadRequestError('invalid type for field HostConfig.Ulimits: expected array');
  for (const u of p.Ulimits ?? []) {
    if (!u || typeof u.Name !== 'string' || !ULIMITS.includes(u.Name)) throw new BadRequestError(`invalid ulimit type: ${String(u?.Name)}`);
    if (typeof u.Soft !== 'number' || typeof u.Hard !== 'number') throw new BadRequestError(`invalid ulimit argument: ${u.Name}`);
    if (u.Soft > u.Hard) throw new BadRequestError(`ulimit soft limit must be less than or equal to hard limit: ${u.Soft} > ${u.Hard}`);
  }
  for (const k of Object.keys(p.Sysctls ?? {})) {
    const namespaced = IPC_SYSCTLS.includes(k) || k.startsWith('fs.mqueue.') || k.startsWith('net.');
    if (!namespaced) throw new BadRequestError(`sysctl '${k}' is not whitelisted`);
    if (k.startsWith('net.') && p.NetworkMode === 'host') throw new BadRequestError(`sysctl '${k}' not allowed in host network namespace`);
  }
  if (p.ShmSize !== undefined && p.ShmSize !== null && (typeof p.ShmSize !== 'number' || p.ShmSize < 0)) throw new BadRequestError('SHM size can not be less than 0');
}

export function ociRlimits(p: ProcessLimits): Array<{ type: string; soft: number; hard: number }> {
  return (p.Ulimits ?? []).map((u) => ({ type: `RLIMIT_${u.Name.toUpperCase()}`, soft: u.Soft, hard: u.Hard }));
}
