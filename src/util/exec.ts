import { spawn, type ChildProcessWithoutNullStreams, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

export interface RunResult { code: number; stdout: string; stderr: string }

/** `netns`: run inside the network namespace pinned at that path (the child enters it before exec). */
type RunOptions = SpawnOptions & { input?: string | Buffer; netns?: string };

/**
 * Runs a program to completion and collects its output. Never throws for a non-zero exit; rejects
 * when the program cannot be started (ENOENT, as Node's spawn does). Plain runs go through
 * berth-spawn (below); runs with spawn options of their own use Node's spawn.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const { input, netns, ...spawnOpts } = opts;
  if (Object.keys(spawnOpts).length === 0 && spawner.available()) return spawner.run(cmd, args, input, netns);
  if (netns) return runWithNode('nsenter', [`--net=${netns}`, cmd, ...args], { input, ...spawnOpts });
  return runWithNode(cmd, args, { input, ...spawnOpts });
}

function runWithNode(cmd: string, args: string[], opts: SpawnOptions & { input?: string | Buffer }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const { input, ...spawnOpts } = opts;
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...spawnOpts });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({
      code: code ?? (signal ? 128 : 1),
      stdout: Buffer.concat(out).toString(),
      stderr: Buffer.concat(err).toString(),
    }));
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/** Like run(), but throws with the program's stderr when it fails. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
  }
  return r.stdout;
}

/**
 * Client of native/berth-spawn.c. Node starts a child by forking itself, which costs in proportion
 * to the parent's memory (3-5 ms for berthd, more as it holds more containers); the small helper
 * forks in well under a millisecond, and can start the child inside a network namespace. One helper
 * serves every run() of the process; it is started on first use and does not keep the process
 * alive while idle.
 */
class Spawner {
  private readonly path = fileURLToPath(new URL('../../../build/berth-spawn', import.meta.url));
  private present?: boolean;
  private child?: ChildProcessWithoutNullStreams;
  private received: Buffer = Buffer.alloc(0);
  private seq = 0;
  private readonly pending = new Map<number, { cmd: string; resolve: (r: RunResult) => void; reject: (e: Error) => void }>();

  available(): boolean {
    this.present ??= existsSync(this.path);
    return this.present;
  }

  run(cmd: string, args: string[], input?: string | Buffer, netns = ''): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const child = this.child ?? this.start();
      const id = ++this.seq;
      const parts = [cmd, ...args].map((a) => Buffer.from(a));
      const stdin = input === undefined ? Buffer.alloc(0) : Buffer.from(input);
      const ns = Buffer.from(netns);
      const frame: Buffer[] = [u32(id), u32(ns.length), ns, u32(parts.length)];
      for (const p of parts) frame.push(u32(p.length), p);
      frame.push(u32(stdin.length), stdin);
      const body = Buffer.concat(frame);
      this.pending.set(id, { cmd, resolve, reject });
      this.hold(true);
      child.stdin.write(Buffer.concat([u32(body.length), body]));
    });
  }

  private start(): ChildProcessWithoutNullStreams {
    const child = spawn(this.path, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.received = Buffer.alloc(0);
    child.stdout.on('data', (d: Buffer) => this.take(d));
    child.stderr.on('data', (d: Buffer) => process.stderr.write(d));
    child.stdin.on('error', () => undefined);
    const gone = (why: string) => {
      if (this.child !== child) return;
      this.child = undefined;
      const waiting = [...this.pending.values()];
      this.pending.clear();
      for (const p of waiting) p.reject(new Error(`berth-spawn ${why} while running ${p.cmd}`));
    };
    child.on('error', (e) => gone(e.message));
    child.on('close', (code, signal) => gone(`exited (${signal ?? code})`));
    return child;
  }

  /** The helper keeps the process alive only while a run is in flight. */
  private hold(on: boolean): void {
    const c = this.child;
    if (!c) return;
    const streams = [c.stdout, c.stderr, c.stdin] as unknown as Array<{ ref?: () => void; unref?: () => void }>;
    if (on) { c.ref(); for (const s of streams) s.ref?.(); } else { c.unref(); for (const s of streams) s.unref?.(); }
  }

  private take(d: Buffer): void {
    this.received = this.received.length ? Buffer.concat([this.received, d]) : d;
    while (this.received.length >= 4) {
      const len = this.received.readUInt32LE(0);
      if (this.received.length < 4 + len) break;
      const f = this.received.subarray(4, 4 + len);
      this.received = this.received.subarray(4 + len);
      const id = f.readUInt32LE(0);
      const status = f.readInt32LE(4);
      const outLen = f.readUInt32LE(8);
      const stdout = f.subarray(12, 12 + outLen).toString();
      const stderr = f.subarray(16 + outLen, 16 + outLen + f.readUInt32LE(12 + outLen)).toString();
      const p = this.pending.get(id);
      if (!p) continue;
      this.pending.delete(id);
      if (status < 0) {
        const code = Object.entries(constants.errno).find(([, v]) => v === -status)?.[0] ?? `errno ${-status}`;
        p.reject(Object.assign(new Error(`spawn ${p.cmd} ${code}`), { code }));
      } else {
        p.resolve({ code: status, stdout, stderr });
      }
    }
    if (this.pending.size === 0) this.hold(false);
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

const spawner = new Spawner();
