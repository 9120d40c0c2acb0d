import { promises as fs, watch } from 'node:fs';

/** One entry of a conmon k8s-file log: "<RFC3339Nano> <stdout|stderr> <F|P> <content>". */
export interface LogEntry { time: string; stream: 1 | 2; data: Buffer }

export interface LogQuery {
  stdout: boolean;
  stderr: boolean;
  /** Unix seconds (may be fractional); 0 for no bound. */
  /** Nanoseconds since the epoch; 0n for no bound. Both bounds are inclusive, as Docker's. */
  since: bigint;
  until: bigint;
  /** Number of lines from the end, or undefined for all. */
  tail?: number;
  timestamps: boolean;
}

/** Parses complete lines; partial ("P") records are joined with the record that completes them. */
export function parseLogLines(text: string, partial: { buf?: LogEntry }): LogEntry[] {
  const out: LogEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const s1 = line.indexOf(' ');
    const s2 = line.indexOf(' ', s1 + 1);
    const s3 = line.indexOf(' ', s2 + 1);
    if (s1 < 0 || s2 < 0) continue;
    const time = line.slice(0, s1);
    const stream = line.slice(s1 + 1, s2) === 'stderr' ? 2 : 1;
    const tag = s3 < 0 ? line.slice(s2 + 1) : line.slice(s2 + 1, s3);
    const content = s3 < 0 ? '' : line.slice(s3 + 1);
    const full = tag !== 'P';
    const data = Buffer.from(full ? content + '\n' : content);
    if (partial.buf && partial.buf.stream === stream) {
      partial.buf.data = Buffer.concat([partial.buf.data, data]);
    } else {
      if (partial.buf) out.push(partial.buf);
      partial.buf = { time, stream, data };
    }
    if (full) {
      out.push(partial.buf);
      partial.buf = undefined;
    }
  }
  return out;
}

/**
 * Nanoseconds since the epoch of an RFC 3339 time (conmon writes nine fraction digits). Not through
 * Date, which keeps milliseconds: `logs --since` of a line's own timestamp must include that line.
 */
export function rfc3339Ns(t: string): bigint {
  const m = /^([^.]+?)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)$/.exec(t);
  if (!m) return BigInt(Date.parse(t) || 0) * 1_000_000n;
  return BigInt(Date.parse(m[1]! + m[3]!) || 0) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0').slice(0, 9) || '0');
}

/** Docker's since/until query value, "SECONDS[.NANOSECONDS]" (the CLI turns other forms into it); 0n when absent. */
export function timestampParamNs(v: string | null): bigint {
  const m = /^(-?\d+)(?:\.(\d{1,9}))?$/.exec((v ?? '').trim());
  if (!m) return 0n;
  return BigInt(m[1]!) * 1_000_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

function matches(e: LogEntry, q: LogQuery): boolean {
  if (e.stream === 1 && !q.stdout) return false;
  if (e.stream === 2 && !q.stderr) return false;
  if (!q.since && !q.until) return true;
  const t = rfc3339Ns(e.time);
  if (q.since && t < q.since) return false;
  if (q.until && t > q.until) return false;
  return true;
}

export function formatEntry(e: LogEntry, timestamps: boolean): Buffer {
  if (!timestamps) return e.data;
  // Docker prints UTC RFC3339Nano; conmon writes the local offset, so normalise.
  const ns = e.time.match(/\.(\d+)/)?.[1] ?? '0';
  const iso = new Date(e.time).toISOString().replace(/\.\d+Z$/, `.${ns.padEnd(9, '0')}Z`);
  return Buffer.concat([Buffer.from(`${iso} `), e.data]);
}

/**
 * Reads a container's log, then (follow) keeps reading as it grows until isDone() says the
 * container has stopped and everything written has been read, or until aborted.
 */
export async function readLogs(
  path: string, q: LogQuery, emit: (e: LogEntry) => void,
  follow?: { isDone: () => boolean; signal: AbortSignal },
): Promise<void> {
  let offset = 0;
  const partial: { buf?: LogEntry } = {};
  let carry = '';
  const readMore = async (): Promise<LogEntry[]> => {
    let fh;
    try { fh = await fs.open(path, 'r'); } catch { return []; }
    try {
      const { size } = await fh.stat();
      if (size < offset) offset = 0; // rotated or truncated
      if (size === offset) return [];
      const buf = Buffer.alloc(size - offset);
      await fh.read(buf, 0, buf.length, offset);
      offset = size;
      const text = carry + buf.toString('utf8');
      const lastNl = text.lastIndexOf('\n');
      carry = text.slice(lastNl + 1);
      return parseLogLines(text.slice(0, lastNl + 1), partial).filter((e) => matches(e, q));
    } finally {
      await fh.close();
    }
  };
  let first = await readMore();
  if (q.tail !== undefined && q.tail >= 0) first = q.tail === 0 ? [] : first.slice(-q.tail);
  first.forEach(emit);
  if (!follow) return;
  await new Promise<void>((resolve) => {
    let busy = false;
    let again = false;
    const watcher = (() => { try { return watch(path, () => void tick()); } catch { return undefined; } })();
    const timer = setInterval(() => void tick(), 250);
    const finish = () => { watcher?.close(); clearInterval(timer); resolve(); };
    follow.signal.addEventListener('abort', finish, { once: true });
    const tick = async (): Promise<void> => {
      if (busy) { again = true; return; }
      busy = true;
      try {
        do {
          again = false;
          const done = follow.isDone();
          (await readMore()).forEach(emit);
          if (done) { finish(); return; }
        } while (again);
      } finally {
        busy = false;
      }
    };
  });
}
