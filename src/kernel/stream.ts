import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

/**
 * A long-lived `ip -force -batch -` or `nft -i` in berthd's namespace, fed commands on its stdin.
 * Starting either tool costs 4–6 ms here, most of it forking berthd itself; a command written to
 * one that is already running costs the kernel's time and well under a millisecond more. That
 * difference is most of `network create`, `rm`, `connect` and `disconnect`.
 *
 * Neither tool acknowledges a command that succeeds, so each group of commands is followed by a
 * marker: a read of a link or table that cannot exist, whose error message (on stderr, unbuffered,
 * in order) says the group is done. Whatever the tool wrote to stderr before the marker's error is
 * the group's own error. Groups run one at a time. When the tool exits (EOF when berthd dies, a
 * parse error that makes `ip` exit), the group in flight fails and the next one starts a new tool.
 */
export interface StreamDialect {
  argv: [string, ...string[]];
  /** The command that marks the end of a group, and how its error ends in stderr. */
  marker(token: string): { command: string; done: RegExp };
  /** The lines of a group as the tool reads them. */
  lines(commands: string[]): string[];
}

export const ipDialect: StreamDialect = {
  argv: ['ip', '-force', '-batch', '-'],
  marker: (token) => ({ command: `link show dev ${token}`, done: new RegExp(`Device "${token}" does not exist\\.\\nCommand failed -:\\d+\\n`) }),
  lines: (commands) => commands,
};

export const nftDialect: StreamDialect = {
  argv: ['nft', '-i'],
  // nft echoes the failing command with a caret line under the bad word.
  marker: (token) => ({ command: `list table ip ${token}`, done: new RegExp(`Error: [^\\n]*\\nlist table ip ${token}\\n[ ^~]*\\n`) }),
  // One line is one transaction in interactive mode: a group stays atomic as `a; b; c`.
  lines: (commands) => [commands.join('; ')],
};

const GROUP_TIMEOUT_MS = 30_000;

export class CommandStream {
  private child?: ChildProcessWithoutNullStreams;
  private stderr = '';
  private tail: Promise<unknown> = Promise.resolve();
  private seq = 0;
  private pending?: { done: RegExp; resolve: (errors: string) => void; reject: (e: Error) => void };

  constructor(private readonly dialect: StreamDialect) {}

  /** Runs one group of commands; rejects with the tool's error text when any of them failed. */
  run(commands: string[]): Promise<void> {
    const result = this.tail.then(() => this.runNow(commands));
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** The running tool's pid, if one runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Ends the tool (berthd shutting down); a later run() starts a new one. */
  close(): void {
    this.child?.stdin.end();
    this.child = undefined;
  }

  private start(): ChildProcessWithoutNullStreams {
    const [cmd, ...args] = this.dialect.argv;
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.stderr = '';
    child.stdout.resume();
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (this.child !== child) return;
      this.stderr += d;
      this.settle();
    });
    const gone = (why: string) => {
      if (this.child !== child) return;
      this.child = undefined;
      const p = this.pending;
      this.pending = undefined;
      p?.reject(new Error(`${cmd}: ${(this.stderr.trim() || why)}`));
    };
    child.on('error', (e) => gone(e.message));
    child.on('close', (code, signal) => gone(`exited (${signal ?? code})`));
    // A write after the tool died must not become an uncaught EPIPE.
    child.stdin.on('error', () => undefined);
    this.child = child;
    return child;
  }

  private settle(): void {
    const p = this.pending;
    if (!p) return;
    const m = p.done.exec(this.stderr);
    if (!m) return;
    const before = this.stderr.slice(0, m.index);
    this.stderr = this.stderr.slice(m.index + m[0].length);
    this.pending = undefined;
    p.resolve(before);
  }

  private async runNow(commands: string[]): Promise<void> {
    if (commands.length === 0) return;
    const child = this.child ?? this.start();
    const token = `berth-sync-${process.pid}-${++this.seq}`;
    const marker = this.dialect.marker(token);
    // Neither tool has ever been seen to hang, but a stuck one must not stall every later change.
    const timer = setTimeout(() => child.kill('SIGKILL'), GROUP_TIMEOUT_MS);
    const errors = await new Promise<string>((resolve, reject) => {
      this.pending = { done: marker.done, resolve, reject };
      child.stdin.write([...this.dialect.lines(commands), marker.command].join('\n') + '\n');
    }).finally(() => clearTimeout(timer));
    const text = errors.trim();
    if (text) throw new Error(`${this.dialect.argv[0]}: ${text}`);
  }
}
