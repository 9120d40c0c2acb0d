/**
 * Moving bytes between the terminal and a container: the multiplexed stdout/stderr framing the
 * API uses without a TTY, raw mode and window size with one, and docker's JSON message streams.
 */
import { Transform, type Duplex, type Readable, type Writable } from 'node:stream';

/**
 * Splits the API's multiplexed stream (8-byte header: stream byte, 3 zero bytes, big-endian
 * length) into stdout and stderr. Frames may arrive split across chunks.
 */
export class Demuxer extends Transform {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly out: Writable, private readonly err: Writable) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (this.pending.length >= 8) {
      const size = this.pending.readUInt32BE(4);
      if (this.pending.length < 8 + size) break;
      const kind = this.pending[0];
      const payload = this.pending.subarray(8, 8 + size);
      (kind === 2 ? this.err : this.out).write(payload);
      this.pending = this.pending.subarray(8 + size);
    }
    done();
  }
}

/** Splits a multiplexed buffer into [stream, text] pairs (for tests and small outputs). */
export function demuxBuffer(buf: Buffer): Array<[number, string]> {
  const out: Array<[number, string]> = [];
  let off = 0;
  while (off + 8 <= buf.length) {
    const size = buf.readUInt32BE(off + 4);
    out.push([buf[off]!, buf.subarray(off + 8, off + 8 + size).toString('utf8')]);
    off += 8 + size;
  }
  return out;
}

/** Copies a container's output to ours: raw with a TTY, demultiplexed without. Resolves at EOF. */
export function pipeOutput(src: Readable, tty: boolean, out: Writable = process.stdout, err: Writable = process.stderr): Promise<void> {
  return new Promise((resolve) => {
    const sink = tty ? src : src.pipe(new Demuxer(out, err));
    if (tty) src.on('data', (c: Buffer) => out.write(c));
    else sink.resume();
    let finished = false;
    const finish = () => { if (!finished) { finished = true; resolve(); } };
    src.on('end', finish);
    src.on('close', finish);
    src.on('error', finish);
  });
}

export interface InteractiveSession {
  /** Resolves when the container side closes the stream. */
  done: Promise<void>;
  /** Puts the terminal back as it was. */
  restore(): void;
}

/**
 * Wires a hijacked socket to this process: our stdin to the container (when asked), its output
 * to ours. With a TTY our terminal goes raw so keys such as Ctrl-C reach the container, and
 * window size changes are forwarded through `resize`.
 */
export function interactive(socket: Duplex, opts: { tty: boolean; stdin: boolean; resize?: (h: number, w: number) => void }): InteractiveSession {
  const stdin = process.stdin;
  const rawTerminal = opts.tty && opts.stdin && stdin.isTTY;
  if (rawTerminal) stdin.setRawMode(true);
  const onResize = () => {
    if (process.stdout.isTTY && opts.resize) opts.resize(process.stdout.rows, process.stdout.columns);
  };
  if (opts.tty && process.stdout.isTTY) {
    process.stdout.on('resize', onResize);
    onResize();
  }
  if (opts.stdin) {
    stdin.on('data', (c: Buffer) => socket.write(c));
    // EOF on our stdin closes the container's: half-close so its output can still arrive.
    stdin.on('end', () => socket.end());
    stdin.resume();
  }
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    if (rawTerminal) stdin.setRawMode(false);
    process.stdout.off('resize', onResize);
    stdin.pause();
    stdin.removeAllListeners('data');
    stdin.removeAllListeners('end');
  };
  const done = pipeOutput(socket, opts.tty).then(() => restore());
  return { done, restore };
}

/** One line of docker's JSON message stream (pull, load, import, build). */
interface JsonMessage { stream?: string; status?: string; id?: string; progress?: string; error?: string; errorDetail?: { message?: string } }

/**
 * Prints a JSON message stream the way docker does without a terminal: `stream` text as is,
 * status lines with their id. An `error` message ends it with a rejection.
 */
export async function printJsonMessages(src: Readable, out: Writable = process.stdout): Promise<void> {
  let buf = '';
  let failure: string | undefined;
  const handle = (line: string) => {
    if (!line.trim()) return;
    let msg: JsonMessage;
    try {
      msg = JSON.parse(line) as JsonMessage;
    } catch {
      out.write(`${line}\n`);
      return;
    }
    if (msg.error || msg.errorDetail?.message) failure = msg.errorDetail?.message ?? msg.error;
    else if (msg.stream !== undefined) out.write(msg.stream);
    else if (msg.status !== undefined) out.write(`${msg.id ? `${msg.id}: ` : ''}${msg.status}${msg.progress ? ` ${msg.progress}` : ''}\n`);
  };
  for await (const chunk of src) {
    buf += (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      handle(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  }
  handle(buf);
  if (failure !== undefined) throw new Error(failure);
}
