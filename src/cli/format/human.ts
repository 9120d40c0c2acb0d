/** Human-readable numbers and times exactly as docker prints them (go-units, Go's time package). */
import { formatG } from '../gotemplate.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

/** units.HumanDuration: "Less than a second", "3 seconds", "About a minute", "2 hours", "3 weeks". */
export function humanDuration(ms: number): string {
  const seconds = Math.trunc(ms / SECOND);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.trunc(ms / MINUTE);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  // go-units rounds hours to the nearest, but days and longer from that rounded number.
  const hours = Math.trunc(ms / HOUR + 0.5);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.trunc(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.trunc(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.trunc(hours / 24 / 30)} months`;
  return `${Math.trunc(ms / HOUR / 24 / 365)} years`;
}

const DECIMAL = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
const BINARY = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB', 'ZiB', 'YiB'];

function scale(size: number, base: number, units: string[]): [number, string] {
  let i = 0;
  while (size >= base && i < units.length - 1) {
    size /= base;
    i++;
  }
  return [size, units[i]!];
}

/** units.HumanSizeWithPrecision: decimal units, `precision` significant digits ("4.26MB"). */
export function humanSize(bytes: number, precision = 3): string {
  const [n, unit] = scale(bytes, 1000, DECIMAL);
  return `${formatG(n, precision)}${unit}`;
}

/** units.HumanSize: like humanSize with 4 significant digits (prune's "Total reclaimed space"). */
export function humanSize4(bytes: number): string {
  return humanSize(bytes, 4);
}

/** units.BytesSize: binary units, 4 significant digits ("1.5MiB"), used by stats and info. */
export function bytesSize(bytes: number): string {
  const [n, unit] = scale(bytes, 1024, BINARY);
  return `${formatG(n, 4)}${unit}`;
}

/** stringid.TruncateID: drop an algorithm prefix and keep 12 characters. */
export function truncateId(id: string): string {
  const i = id.indexOf(':');
  const bare = i >= 0 ? id.slice(i + 1) : id;
  return bare.length > 12 ? bare.slice(0, 12) : bare;
}

/** docker's formatter.Ellipsis: cut to a display width, ending in "…". */
export function ellipsis(s: string, max: number): string {
  if (max <= 0) return '';
  const runes = [...s];
  if (max === 1) return runes[0] ?? '';
  if (runes.length <= max) return s;
  return `${runes.slice(0, max - 1).join('')}…`;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

function zoneOffset(d: Date): string {
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const a = Math.abs(off);
  return `${sign}${pad2(Math.floor(a / 60))}${pad2(a % 60)}`;
}

function zoneName(d: Date): string {
  try {
    const part = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(d).find((p) => p.type === 'timeZoneName');
    if (part && /^[A-Z]{2,5}$/.test(part.value)) return part.value;
  } catch { /* no Intl data: fall through */ }
  // Go prints the numeric offset when the zone has no abbreviation.
  return zoneOffset(d);
}

/**
 * Go's time.Time.String() in the local zone: "2006-01-02 15:04:05.999999999 -0700 MST", the
 * fraction only when non-zero (docker's CreatedAt columns). `nanos` carries digits below a ms.
 */
export function goTimeString(d: Date, nanos?: number): string {
  const date = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  const time = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const ns = nanos ?? d.getMilliseconds() * 1e6;
  const frac = ns ? `.${String(ns).padStart(9, '0').replace(/0+$/, '')}` : '';
  return `${date} ${time}${frac} ${zoneOffset(d)} ${zoneName(d)}`;
}

/** Parses an RFC 3339 timestamp keeping its nanoseconds, which Date alone would lose. */
export function parseRfc3339(s: string): { date: Date; nanos: number } | undefined {
  const ms = Date.parse(s);
  if (Number.isNaN(ms)) return undefined;
  const frac = /\.(\d+)/.exec(s)?.[1] ?? '';
  const nanos = Number(frac.slice(0, 9).padEnd(9, '0'));
  return { date: new Date(ms), nanos };
}

/** RFC 3339 with nine fractional digits in the local zone, as `docker events` prints times. */
export function rfc3339NanoFixed(timeNano: number): string {
  const ms = Math.floor(timeNano / 1e6);
  const d = new Date(ms);
  const nanos = String(Math.round(timeNano % 1e9)).padStart(9, '0');
  const off = zoneOffset(d);
  const zone = off === '+0000' ? 'Z' : `${off.slice(0, 3)}:${off.slice(3)}`;
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${nanos}${zone}`;
}

/** "3 minutes ago" from a unix time in seconds. */
export function ago(unixSeconds: number, now = Date.now()): string {
  return `${humanDuration(now - unixSeconds * 1000)} ago`;
}

const GO_DURATION = /^([0-9]*(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$/;
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };

/** Go's time.ParseDuration ("1h30m", "10s", "1.5h"), in milliseconds. */
export function parseGoDuration(s: string): number | undefined {
  const neg = s.startsWith('-');
  const body = s.replace(/^[+-]/, '');
  if (body === '0') return 0;
  if (!GO_DURATION.test(body)) return undefined;
  let total = 0;
  for (const m of body.matchAll(/([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)/g)) total += Number(m[1]) * UNIT_MS[m[2]!]!;
  return neg ? -total : total;
}

/**
 * docker's timetypes.GetTimestamp for --since/--until: a Go duration is relative to now, a unix
 * timestamp passes through, dates (RFC 3339 and shorter forms) become unix seconds.
 */
export function apiTimestamp(value: string, now = Date.now()): string {
  const d = parseGoDuration(value);
  if (d !== undefined) return secondsWithNanos(now - d);
  if (/^-?\d+(\.\d+)?$/.test(value)) return value;
  let text = value;
  // Dates without a zone are local time, as in docker.
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) text += 'T00:00:00';
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(text)) {
    const ms = new Date(text).getTime();
    if (!Number.isNaN(ms)) return secondsWithNanos(ms);
  }
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new Error(`failed to parse value as time or duration: "${value}"`);
  return secondsWithNanos(ms);
}

function secondsWithNanos(ms: number): string {
  const s = Math.floor(ms / 1000);
  const ns = Math.round((ms - s * 1000) * 1e6);
  return `${s}.${String(ns).padStart(9, '0')}`;
}
