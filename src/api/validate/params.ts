import { timestampParamNs } from '../../engine/logs.js';
import { BadRequestError } from '../../util/errors.js';
import { boolParam } from '../http.js';

/**
 * Query parameters as Docker 20.10 reads them, with the words of the Go functions it uses
 * (strconv, timetypes, signal.ParseSignal). Docker answers some of these with a 500 (an untyped
 * error); berth answers 400 with the same words.
 */

/** strconv.ParseInt's refusal, which Docker passes on as the whole message. */
const parseIntError = (v: string) => new BadRequestError(`strconv.ParseInt: parsing "${v}": invalid syntax`);

/** timetypes.ParseTimestamps: "SECONDS[.NANOS]", as the logs endpoint takes `since`/`until`. */
export function checkUnixTimestamp(v: string | null): void {
  if (v === null || v === '') return;
  const [secs] = v.split('.', 1) as [string];
  if (!/^-?\d+$/.test(secs)) throw parseIntError(secs);
}

/**
 * The logs endpoints' query (a container's, a service's, a task's): the streams (one at least),
 * `since`/`until` as timetypes reads them, `tail` (a count, or all), `timestamps`, `follow`.
 */
export function logParams(q: URLSearchParams): { stdout: boolean; stderr: boolean; since: bigint; until: bigint; tail?: number; timestamps: boolean; follow: boolean } {
  const stdout = boolParam(q.get('stdout'));
  const stderr = boolParam(q.get('stderr'));
  if (!stdout && !stderr) throw new BadRequestError('Bad parameters: you must choose at least one stream');
  checkUnixTimestamp(q.get('since'));
  checkUnixTimestamp(q.get('until'));
  const tailParam = q.get('tail');
  const tail = !tailParam || tailParam === 'all' ? undefined : Number(tailParam);
  if (tail !== undefined && !Number.isInteger(tail)) throw new BadRequestError(`invalid value for tail: ${tailParam}`);
  return {
    stdout, stderr, since: timestampParamNs(q.get('since')), until: timestampParamNs(q.get('until')), ...(tail !== undefined ? { tail } : {}),
    timestamps: boolParam(q.get('timestamps')), follow: boolParam(q.get('follow')),
  };
}

const DURATION = /^([0-9]*(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$/;
const UNIT_NS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/**
 * timetypes.GetTimestamp then ParseTimestamps, as the events endpoint reads `since`/`until`: a Go
 * duration counts back from now, an RFC 3339 date or time is itself, a number is Unix seconds
 * with optional fraction. Returns nanoseconds since the epoch, or undefined when absent.
 */
export function parseEventTime(v: string | null, now = Date.now()): number | undefined {
  if (v === null || v === '') return undefined;
  if (DURATION.test(v)) {
    let ns = 0;
    for (const m of v.matchAll(/([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)/g)) ns += Number(m[1] || 0) * UNIT_NS[m[2]!]!;
    return now * 1e6 - ns;
  }
  if (/^\d+(\.\d+)?$/.test(v)) {
    const [s, frac = ''] = v.split('.');
    return Number(s) * 1e9 + Number(frac.padEnd(9, '0').slice(0, 9));
  }
  if (v.includes('-') || v.includes(':')) {
    const ms = Date.parse(v);
    if (Number.isNaN(ms)) throw new BadRequestError(`parsing time "${v}": cannot parse it as a date or time (RFC 3339)`);
    return ms * 1e6;
  }
  throw parseIntError(v.split('.', 1)[0]!);
}

/** Linux signal numbers by name (signal.SignalMap of Docker's pkg/signal, linux). */
const SIGNALS: Record<string, number> = {
  ABRT: 6, ALRM: 14, BUS: 7, CHLD: 17, CLD: 17, CONT: 18, FPE: 8, HUP: 1, ILL: 4, INT: 2, IO: 29, IOT: 6,
  KILL: 9, PIPE: 13, POLL: 29, PROF: 27, PWR: 30, QUIT: 3, SEGV: 11, STKFLT: 16, STOP: 19, SYS: 31, TERM: 15,
  TRAP: 5, TSTP: 20, TTIN: 21, TTOU: 22, URG: 23, USR1: 10, USR2: 12, VTALRM: 26, WINCH: 28, XCPU: 24, XFSZ: 25,
};

/** signal.ParseSignal: a number 1..64, a name, a name with SIG, or RTMIN+n / RTMAX-n. */
export function checkSignal(v: string): void {
  if (/^\d+$/.test(v)) {
    const n = Number(v);
    if (n >= 1 && n <= 64) return;
  } else {
    const name = v.toUpperCase().replace(/^SIG/, '');
    if (SIGNALS[name] !== undefined) return;
    const rt = /^RTM(IN|AX)([+-]\d+)?$/.exec(name);
    if (rt && Math.abs(Number(rt[2] ?? 0)) <= 15) return;
  }
  throw new BadRequestError(`Invalid signal: ${v}`);
}
