import { request } from 'node:http';
import { run, type RunResult } from '../src/util/exec.js';

export { run };
export type { RunResult };

/** The value after flag `name` on the command line (undefined when the flag is not there). */
export const argOf = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
/** The value after flag `name`, or `dflt` without the flag (a flag without its value gives undefined, which its parse refuses). */
export const option = (name: string, dflt: string): string => (process.argv.indexOf(name) > 0 ? argOf(name)! : dflt);

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const now = () => Number(process.hrtime.bigint()) / 1e6;

export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}
export const median = (v: number[]) => quantile(v, 0.5);
export const p90 = (v: number[]) => quantile(v, 0.9);

/** mulberry32, seeded: resamples the same way run after run (a plain LCG in doubles loses its low bits past 2^53 and repeats itself). */
function seeded(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
const resample = (v: number[], rand: () => number) => v.map(() => v[Math.floor(rand() * v.length)]!);

/** Median of the pairwise ratios b[i]/a[i] (each pair measured side by side), with a 95 % percentile bootstrap interval of that median. */
export function pairedRatio(a: number[], b: number[], resamples = 2000, seed = 1): { median: number; lo: number; hi: number } {
  const ratios = a.map((x, i) => b[i]! / x);
  const rand = seeded(seed);
  const meds: number[] = [];
  for (let r = 0; r < resamples; r++) meds.push(median(resample(ratios, rand)));
  meds.sort((x, y) => x - y);
  return { median: median(ratios), lo: meds[Math.floor(resamples * 0.025)]!, hi: meds[Math.floor(resamples * 0.975)]! };
}

/** The ratio b/a of quantile q with a 95 % percentile bootstrap interval (each arm resampled by itself). */
export function quantileRatio(a: number[], b: number[], q: number, resamples = 1000, seed = 1): { ratio: number; lo: number; hi: number } {
  const rand = seeded(seed);
  const rs: number[] = [];
  for (let r = 0; r < resamples; r++) rs.push(quantile(resample(b, rand), q) / quantile(resample(a, rand), q));
  rs.sort((x, y) => x - y);
  return { ratio: quantile(b, q) / quantile(a, q), lo: rs[Math.floor(resamples * 0.025)]!, hi: rs[Math.floor(resamples * 0.975)]! };
}

export function log(...args: unknown[]): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${args.map(String).join(' ')}\n`);
}

export async function runOk(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await run(cmd, args, input !== undefined ? { input } : {});
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
  return r.stdout;
}

export interface ApiResponse { status: number; body: string; raw: Buffer; json: any }

/** One HTTP request to a Docker Engine API socket; a fresh connection each time (as the docker CLI does). */
export function apiRequest(socket: string, method: string, path: string, body?: unknown, timeoutMs = 120_000): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = request({
      socketPath: socket, method, path,
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': String(data.length) } : {},
      timeout: timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const text = raw.toString();
        let json: unknown;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, body: text, raw, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** RSS in KiB of one process, 0 if it is gone. */
export async function rssKiB(pid: number): Promise<number> {
  try {
    const { readFile } = await import('node:fs/promises');
    const s = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)/.exec(s);
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

export interface ProcInfo { pid: number; ppid: number; comm: string; cmdline: string }

export async function listProcs(): Promise<ProcInfo[]> {
  const { readdir, readFile } = await import('node:fs/promises');
  const out: ProcInfo[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = await readFile(`/proc/${d}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' ');
      if (fields[0] === 'Z') continue;
      const cmdline = (await readFile(`/proc/${d}/cmdline`, 'utf8')).replace(/\0/g, ' ').trim();
      out.push({ pid: Number(d), ppid: Number(fields[1]), comm, cmdline });
    } catch { /* gone */ }
  }
  return out;
}

/** CPU seconds (user + system) used so far by these processes; gone processes count 0. */
export async function cpuSeconds(pids: number[]): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch { /* gone */ }
  }
  return ticks / 100; // USER_HZ is 100 on Linux
}

const onStop = new Set<() => Promise<unknown>>();

/**
 * Runs `cleanup` if the bench is stopped (SIGINT, SIGTERM) before the returned function is
 * called: what a `finally` would have removed (a lab, scratch namespaces) goes even then. The
 * cleanups of a stop run newest first, then the process exits 130.
 */
export function cleanupOnStop(cleanup: () => Promise<unknown>): () => void {
  if (!onStop.size) {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        log(`${sig}: removing what the bench made`);
        void (async () => {
          for (const c of [...onStop].reverse()) await c().catch((e: Error) => log(`cleanup: ${e.message}`));
        })().finally(() => process.exit(130));
      });
    }
  }
  onStop.add(cleanup);
  return () => { onStop.delete(cleanup); };
}
