import { BadRequestError } from '../util/errors.js';

/**
 * Docker's HEALTHCHECK (daemon/health.go): a probe command run in the container every Interval;
 * Retries failures in a row make it unhealthy, one success healthy; failures during StartPeriod
 * do not count while it is still starting. The rules are pure data here; the engine runs probes.
 */

export interface HealthConfig { Test?: string[] | null; Interval?: number; Timeout?: number; StartPeriod?: number; Retries?: number }
export interface HealthLogEntry { Start: string; End: string; ExitCode: number; Output: string }
export type HealthStatus = 'starting' | 'healthy' | 'unhealthy';
export interface Health { Status: HealthStatus; FailingStreak: number; Log: HealthLogEntry[] }

const SECOND_NS = 1_000_000_000;
export const DEFAULTS = { interval: 30 * SECOND_NS, timeout: 30 * SECOND_NS, startPeriod: 0, retries: 3 };
const MAX_LOG_ENTRIES = 5;
const MAX_OUTPUT = 4096;

/** The argv a probe runs, or undefined when the container has no health check (none, or NONE). */
export function probeCommand(hc: HealthConfig | null | undefined): string[] | undefined {
  const test = hc?.Test;
  if (!test || test.length === 0 || test[0] === 'NONE') return undefined;
  if (test[0] === 'CMD') return test.slice(1);
  if (test[0] === 'CMD-SHELL') return ['/bin/sh', '-c', test.slice(1).join(' ')];
  return undefined;
}

/** Docker's create-time checks on Healthcheck, with its messages. */
export function validateHealthcheck(hc: unknown): void {
  if (hc === undefined || hc === null) return;
  if (typeof hc !== 'object' || Array.isArray(hc)) throw new BadRequestError('invalid type for field Healthcheck: expected object');
  const h = hc as Record<string, unknown>;
  if (h.Test !== undefined && h.Test !== null && (!Array.isArray(h.Test) || h.Test.some((x) => typeof x !== 'string'))) {
    throw new BadRequestError('invalid type for field Healthcheck.Test: expected array of strings');
  }
  const test = (h.Test ?? []) as string[];
  if (test.length && !['NONE', 'CMD', 'CMD-SHELL'].includes(test[0]!)) throw new BadRequestError(`unknown health check type: ${test[0]}`);
  for (const k of ['Interval', 'Timeout', 'StartPeriod'] as const) {
    const v = h[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number') throw new BadRequestError(`invalid type for field Healthcheck.${k}: expected number`);
    if (v !== 0 && v < 1_000_000) throw new BadRequestError(`${k} in Healthcheck cannot be less than 1ms`);
  }
  if (h.Retries !== undefined && h.Retries !== null && (typeof h.Retries !== 'number' || h.Retries < 0)) {
    throw new BadRequestError('Retries in Healthcheck cannot be negative');
  }
}

export function timings(hc: HealthConfig): { intervalMs: number; timeoutMs: number; startPeriodMs: number; retries: number } {
  const ms = (ns: number | undefined, def: number) => Math.max(1, Math.round((ns || def) / 1e6));
  return {
    intervalMs: ms(hc.Interval, DEFAULTS.interval),
    timeoutMs: ms(hc.Timeout, DEFAULTS.timeout),
    startPeriodMs: (hc.StartPeriod || DEFAULTS.startPeriod) / 1e6,
    retries: hc.Retries || DEFAULTS.retries,
  };
}

/** The state after one probe. `sinceStartMs` is how long the container had been running when it began. */
export function afterProbe(h: Health, entry: HealthLogEntry, sinceStartMs: number, hc: HealthConfig): Health {
  const t = timings(hc);
  const log = [...h.Log, { ...entry, Output: entry.Output.slice(0, MAX_OUTPUT) }].slice(-MAX_LOG_ENTRIES);
  if (entry.ExitCode === 0) return { Status: 'healthy', FailingStreak: 0, Log: log };
  // Still starting and inside the start period: a failure is logged but not counted.
  if (h.Status === 'starting' && sinceStartMs < t.startPeriodMs) return { ...h, Log: log };
  const streak = h.FailingStreak + 1;
  return { Status: streak >= t.retries ? 'unhealthy' : h.Status, FailingStreak: streak, Log: log };
}
