import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, constants as fsConstants, readFileSync, watch, write as fsWrite, writeFileSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import type * as Pty from 'node-pty';
import { requireCjs } from '../util/cjs.js';

const pty = requireCjs('node-pty') as typeof Pty;
import { run, runOk, type RunResult } from '../util/exec.js';
import { pidAlive } from '../util/process.js';
import { ExitWatch, liveMonitor } from './exitwatch.js';
import {
  RuntimeCreateError, type AttachSession, type ContainerRuntime, type CreateOptions, type ExecOptions, type ExecProcess, type RuntimeState,
} from './runtime.js';

export { RuntimeCreateError };

/** How long a `runc create` under conmon may take before the start gives up on it. */
const CREATE_BOUND_MS = Number(process.env.BERTH_CREATE_BOUND_MS ?? 60_000);

/** How long a conmon may hold its container's init without its runtime and without a report. */
const ORPHANED_CREATE_MS = Number(process.env.BERTH_ORPHANED_CREATE_MS ?? 3000);

/** The children of a process (/proc/PID/task/PID/children), empty once it is gone. */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

export interface ConmonRuntimeOptions {
  /** runc's --root: berth's containers only, so `runc list` never shows another engine's. */
  runcRoot: string;
  /** Where conmon writes one file per exited container, named by id, holding the exit code. */
  exitDir: string;
  attachHelper: string;
  runcPath?: string;
  conmonPath?: string;
  /** native/berth-runc.c: what conmon runs as its runtime; it runs runc without berth's other mounts. */
  runcShim?: string;
  /** A private mount of berth's own holding every per-container mount (kernel/mount.ts ensurePrivateBind). */
  mountRoot?: string;
}

/**
 * runc supervised by conmon. conmon holds each container's stdio, writes its log and records its
 * exit code, so containers keep running while berthd restarts; berthd learns of exits from the
 * exit directory, which also covers exits that happened while it was down.
 */
export class ConmonRuntime implements ContainerRuntime {
  private readonly runc: string;
  private readonly conmon: string;
  private watcher?: FSWatcher;
  private exitCallbacks: Array<(id: string, code: number) => void> = [];
  private readonly monitors = new Map<string, ChildProcess>();
  private readonly exits: ExitWatch;

  constructor(private readonly opts: ConmonRuntimeOptions) {
    this.runc = opts.runcPath ?? '/usr/sbin/runc';
    this.conmon = opts.conmonPath ?? '/usr/bin/conmon';
    this.exits = new ExitWatch({ exitDir: opts.exitDir, onExitRecorded: (id) => void this.reportExit(id), log: (l) => console.error(l) });
  }

  async init(): Promise<void> {
    await fs.mkdir(this.opts.runcRoot, { recursive: true, mode: 0o700 });
    await fs.mkdir(this.opts.exitDir, { recursive: true, mode: 0o700 });
    this.watcher = watch(this.opts.exitDir, (_event, name) => {
      if (name && /^[0-9a-f]{64}$/.test(name)) void this.reportExit(name);
    });
  }

  /** Reports exits recorded while nobody was watching (daemon restart). */
  async pendingExits(): Promise<string[]> {
    return (await fs.readdir(this.opts.exitDir)).filter((n) => /^[0-9a-f]{64}$/.test(n));
  }

  private async reportExit(id: string): Promise<void> {
    const code = await this.exitCode(id);
    if (code === undefined) return;
    for (const cb of this.exitCallbacks) cb(id, code);
  }

  /**
   * After a restart: a running container's conmon is no child of this berthd, so its death (or a
   * container whose conmon died while berthd was down) is noticed by the exit watch.
   */
  adopt(id: string, bundle: string, initPid?: number): void {
    this.exits.adopt(id, bundle, initPid);
  }

  /**
   * A start the previous berthd was making when it was killed leaves its conmon behind, still
   * waiting on a `runc create` that may finish after the restart's `runc delete`: the container
   * then stays created and its conmon waits on it for good (chaos seed 7331, cycle 451: "conmon
   * monitors …, which is not running"). Its process group (conmon, started in a session of its
   * own, and the runc it started) is killed before the delete.
   */
  async endStrayMonitor(id: string, bundle: string): Promise<void> {
    const pid = liveMonitor(id, bundle).live;
    if (!pid) return;
    console.error(`berthd: ${id.slice(0, 12)}: the monitor of a start that was never recorded (conmon ${pid}) is ended`);
    try { process.kill(-pid, 'SIGKILL'); } catch { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    for (let i = 0; i < 40 && pidAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  }

  onExit(cb: (id: string, exitCode: number) => void): void {
    this.exitCallbacks.push(cb);
  }

  async exitCode(id: string, since?: number): Promise<number | undefined> {
    try {
      const file = join(this.opts.exitDir, id);
      // Written before the run began: an earlier run's, which must not end this one (nor make a
      // watch take it for this run's): it goes.
      if (since !== undefined && (await fs.stat(file)).mtimeMs < since) {
        console.error(`berthd: ${id.slice(0, 12)}: an exit recorded before its run began is an earlier run's: removed`);
        await fs.rm(file, { force: true });
        return undefined;
      }
      const text = (await fs.readFile(file, 'utf8')).trim();
      if (text === '') return undefined;
      const code = Number.parseInt(text, 10);
      return Number.isNaN(code) ? undefined : code;
    } catch {
      return undefined;
    }
  }

  async clearExit(id: string): Promise<void> {
    await fs.rm(join(this.opts.exitDir, id), { force: true });
  }

  create(o: CreateOptions): Promise<number> {
    // A new run: whatever watched the container's last one is done with it.
    this.exits.forget(o.id);
    const args = [
      '--api-version', '1', '--sync',
      '-c', o.id, '-u', o.id, '-n', o.name,
      '-r', this.opts.runcShim ?? this.runc,
      ...this.shimArgs(o.keepMounts).flatMap((a) => ['--runtime-arg', a]),
      '--runtime-arg', '--root', '--runtime-arg', this.opts.runcRoot,
      '-b', o.bundle, '-p', join(o.bundle, 'pidfile'),
      '--exit-dir', this.opts.exitDir, '--persist-dir', join(o.bundle, 'conmon'),
      '--full-attach', '-l', `k8s-file:${o.logPath}`,
      '--conmon-pidfile', join(o.bundle, 'conmon.pid'),
    ];
    if (o.tty) args.push('-t');
    if (o.openStdin) args.push('-i');
    if (o.leaveStdinOpen) args.push('--leave-stdin-open');
    return fs.mkdir(join(o.bundle, 'conmon'), { recursive: true }).then(() => new Promise<number>((resolve, reject) => {
      // detached: conmon must outlive berthd, so it gets its own session and no signals from ours.
      const child = spawn(this.conmon, args, {
        detached: true,
        stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
        env: { ...process.env, _OCI_SYNCPIPE: '3' },
        cwd: o.bundle,
      });
      this.monitors.set(o.id, child);
      child.unref();
      // conmon 2.1.6 with --sync stays berthd's child and never writes its --conmon-pidfile: berthd
      // writes it, so a later berthd finds the monitor alive and need not watch the run itself.
      if (child.pid) {
        try { writeFileSync(join(o.bundle, 'conmon.pid'), String(child.pid)); } catch { /* the run is then watched as an orphan after a restart */ }
      }
      let stderr = '';
      let buf = '';
      let settled = false;
      let created = false;
      const settle = (err: Error | undefined, pid?: number) => {
        if (settled) return;
        settled = true;
        created = !err;
        clearTimeout(bound);
        clearInterval(orphaned);
        if (err) reject(err); else resolve(pid!);
      };
      // A conmon that neither reports the container nor exits (its runc create was killed at an
      // unlucky moment: npm run chaos, seed 20261205, cycle 51) must not hold the start, and the
      // container's lock, forever: past the bound it is killed and the create fails.
      const bound = setTimeout(() => {
        try { child.kill('SIGKILL'); } catch { /* gone */ }
        settle(new RuntimeCreateError(`conmon did not report the container within ${CREATE_BOUND_MS / 1000} s${stderr ? `: ${cleanRuncMessage(stderr)}` : ''}`));
      }, CREATE_BOUND_MS);
      bound.unref();
      // The usual way to get there: the runtime (`runc create`) killed after it started the
      // container's init. conmon, a subreaper, then holds that init and waits for a report that
      // never comes. A healthy create reports within milliseconds of its runtime's exit, so a
      // conmon left with no runtime child and no report for a few seconds is failed at once.
      let runtimeGoneSince = 0;
      const orphaned = setInterval(() => {
        if (!child.pid) return;
        const kids = childrenOf(child.pid);
        if (!kids.length || kids.some((k) => / create /.test(commandLine(k)))) { runtimeGoneSince = 0; return; }
        runtimeGoneSince ||= Date.now();
        if (Date.now() - runtimeGoneSince < ORPHANED_CREATE_MS) return;
        try { child.kill('SIGKILL'); } catch { /* gone */ }
        settle(new RuntimeCreateError(`the runtime exited without reporting the container${stderr ? `: ${cleanRuncMessage(stderr)}` : ''}`));
      }, 100);
      orphaned.unref();
      child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
      const sync = child.stdio[3] as NodeJS.ReadableStream;
      sync.on('data', (d: Buffer) => {
        buf += d.toString();
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        try {
          const msg = JSON.parse(buf.slice(0, nl)) as { data: number; message?: string };
          if (msg.data > 0) settle(undefined, msg.data);
          else settle(new RuntimeCreateError(cleanRuncMessage(msg.message ?? stderr)));
        } catch (e) {
          settle(e as Error);
        }
      });
      // The sync socket and stderr must not keep berthd's event loop alive.
      (sync as unknown as { unref?: () => void }).unref?.();
      (child.stderr as unknown as { unref?: () => void }).unref?.();
      child.on('error', (e) => settle(e));
      child.on('exit', (code) => {
        settle(new RuntimeCreateError(cleanRuncMessage(stderr) || `conmon exited with status ${code}`));
        // The monitor of a run that has ended and been replaced by a newer one says nothing of it.
        if (this.monitors.get(o.id) !== child) return;
        this.monitors.delete(o.id);
        // A create that failed made no run to watch (the engine deletes what it left).
        if (!created) return;
        // A monitor that exits normally wrote an exit file: the watch reports it at once (the
        // directory watch's event may have been coalesced). One that was killed wrote none, and
        // the watch waits for the container's process to end.
        this.exits.orphaned(o.id, o.bundle);
      });
    }));
  }

  /**
   * runc copies and reads the whole mount table of its caller, so with every running container it
   * would get slower: the shim (native/berth-runc.c) detaches berth's mount root for it and puts
   * back the mounts in `keep`. Without a shim, or without a mount root of berth's, plain runc.
   */
  private shimArgs(keep: string[] | undefined): string[] {
    if (!this.opts.runcShim) return [];
    const args = [`--berth-runc=${this.runc}`];
    if (this.opts.mountRoot && keep) args.push(`--berth-mount-root=${this.opts.mountRoot}`, ...keep.map((k) => `--berth-keep=${k}`));
    return args;
  }

  /**
   * The command line of a runc subcommand other than create. None of them needs a mount of berth's
   * (they work on runc's state directory, the container's cgroups, or join its namespaces), so they
   * go through the shim with nothing kept and do not slow down as containers accumulate either.
   */
  private runcCommand(args: string[]): [string, string[]] {
    return [this.opts.runcShim ?? this.runc, [...this.shimArgs([]), '--root', this.opts.runcRoot, ...args]];
  }

  async start(id: string): Promise<void> {
    const r = await run(...this.runcCommand(['start', id]));
    if (r.code !== 0) throw new RuntimeCreateError(runcFailure('start', r));
  }

  /**
   * An idempotent runc command (kill, delete, state), run again while runc dies without a word (it
   * was killed: nothing on stderr), up to `attempts` runs, rather than failing the user's stop or
   * rm with an empty 500.
   */
  private async runcIdempotent(args: string[], attempts = 2): Promise<RunResult> {
    for (let attempt = 1; ; attempt++) {
      const r = await run(...this.runcCommand(args));
      if (r.code === 0 || r.stderr.trim() || attempt >= attempts) return r;
    }
  }

  async kill(id: string, signal: string): Promise<void> {
    const r = await this.runcIdempotent(['kill', id, signal]);
    if (r.code !== 0 && !/not running|container not running|does not exist|process already finished/i.test(r.stderr)) {
      throw new Error(runcFailure('kill', r));
    }
  }

  async update(id: string, resources: Record<string, unknown>): Promise<void> {
    const r = await run(...this.runcCommand(['update', '--resources', '-', id]), { input: JSON.stringify(resources) });
    if (r.code !== 0) throw new Error(runcFailure('update', r));
  }

  async pause(id: string): Promise<void> {
    const r = await run(...this.runcCommand(['pause', id]));
    if (r.code !== 0) throw new Error(runcFailure('pause', r));
  }

  async resume(id: string): Promise<void> {
    const r = await run(...this.runcCommand(['resume', id]));
    if (r.code !== 0 && !/not paused/i.test(r.stderr)) throw new Error(runcFailure('resume', r));
  }

  async delete(id: string): Promise<void> {
    // The run has ended (its exit is being handled) or the container goes: nothing left to watch,
    // and its monitor's own exit, which may come later, is no news (chaos verdict "running,
    // untouched, exited 255": a late look at an ended run wrote 255 after the next run's start had
    // cleared the exit directory, and a later berthd restart read it as the new run's exit).
    this.exits.forget(id);
    this.monitors.delete(id);
    // runc's whole record of a container is its directory under runc's root: without one (the
    // exit's delete came first, as for every `rm` of a container that ran) runc would only answer
    // "does not exist", after a start of its own (~4 ms). Its cgroups are looked after either way.
    if (await fs.stat(join(this.opts.runcRoot, id)).then(() => true, () => false)) {
      const r = await this.runcIdempotent(['delete', '--force', id]);
      if (r.code !== 0 && !/does not exist|not exist/i.test(r.stderr)) {
        throw new Error(runcFailure('delete', r));
      }
    }
    await removeCgroups(id);
  }

  /**
   * undefined only when runc says the container does not exist: a runc that died without a word
   * (killed) is asked again, and then is an error, never "stopped" (an orphan watch took a
   * running container for exited that way: npm run chaos, seed 20261206).
   */
  async state(id: string): Promise<RuntimeState | undefined> {
    const r = await this.runcIdempotent(['state', id], 3);
    if (r.code === 0) {
      const s = JSON.parse(r.stdout) as { status: RuntimeState['status']; pid: number };
      return { status: s.status, pid: s.pid };
    }
    if (/does not exist|not exist|no such/i.test(r.stderr)) return undefined;
    throw new Error(runcFailure('state', r));
  }

  async pids(id: string): Promise<number[]> {
    const out = await runOk(...this.runcCommand(['ps', '--format', 'json', id]));
    return (JSON.parse(out || '[]') as number[] | null) ?? [];
  }

  attach(bundle: string): Promise<AttachSession> {
    return new Promise((resolve, reject) => {
      const helper = spawn(this.opts.attachHelper, [join(bundle, 'attach')], { stdio: ['pipe', 'pipe', 'pipe'] });
      let pending: Buffer = Buffer.alloc(0);
      let handshake = false;
      let stderr = '';
      const listeners: Array<(s: 1 | 2, d: Buffer) => void> = [];
      const closed = new Promise<void>((res) => helper.on('close', () => res()));
      helper.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      helper.stdin.on('error', () => { /* the container side went away; closed resolves */ });
      helper.on('error', reject);
      helper.on('close', () => { if (!handshake) reject(new Error(stderr.trim() || 'attach failed')); });
      helper.stdout.on('data', (d: Buffer) => {
        pending = pending.length ? Buffer.concat([pending, d]) : d;
        if (!handshake) {
          if (pending.length < 5) return;
          pending = pending.subarray(5);
          handshake = true;
          resolve(session);
        }
        // Frames from the helper: stream byte (2 stdout, 3 stderr), 4-byte length, payload.
        while (pending.length >= 5) {
          const len = pending.readUInt32BE(1);
          if (pending.length < 5 + len) break;
          const stream = pending[0] === 3 ? 2 : 1;
          const payload = pending.subarray(5, 5 + len);
          pending = pending.subarray(5 + len);
          for (const l of listeners) l(stream, payload);
        }
      });
      const session: AttachSession = {
        stdin: helper.stdin,
        onOutput: (cb) => { listeners.push(cb); },
        pause: () => { helper.stdout.pause(); },
        resume: () => { helper.stdout.resume(); },
        closed,
        close: () => { helper.kill('SIGTERM'); },
      };
    });
  }

  async resize(bundle: string, rows: number, cols: number): Promise<void> {
    // conmon's control fifo; opening it non-blocking fails with ENXIO when conmon is gone.
    const fh = await fs.open(join(bundle, 'ctl'), fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    try {
      await fh.write(`1 ${Math.min(rows, 1000)} ${Math.min(cols, 1000)}\n`);
    } finally {
      await fh.close();
    }
  }

  async exec(o: ExecOptions): Promise<ExecProcess> {
    const args = ['exec'];
    if (o.tty) args.push('--tty');
    if (o.cwd) args.push('--cwd', o.cwd);
    if (o.user) {
      args.push('--user', `${o.user.uid}:${o.user.gid}`);
      for (const g of o.user.additionalGids ?? []) args.push('--additional-gids', String(g));
    }
    for (const e of o.env) args.push('--env', e);
    args.push(o.id, ...o.args);
    const [cmd, argv] = this.runcCommand(args);

    if (o.tty) {
      const term = pty.spawn(cmd, argv, {
        name: 'xterm', cols: o.cols || 80, rows: o.rows || 24, encoding: null, env: process.env as Record<string, string>,
      });
      const stdout = new PassThrough();
      // Output a client does not read stops the terminal, as a pipe's would stop the process.
      term.onData((d: string | Buffer) => {
        if (stdout.write(typeof d === 'string' ? Buffer.from(d) : d)) return;
        term.pause();
        stdout.once('drain', () => term.resume());
      });
      let ended = false;
      const stdin = ptyInput((term as unknown as { fd: number }).fd, () => ended);
      const exited = new Promise<number>((res) => term.onExit(({ exitCode }) => {
        ended = true;
        // node-pty may report exit before the last output is read; let it drain first.
        setTimeout(() => { stdout.end(); res(exitCode); }, 20);
      }));
      return { pid: term.pid, stdin, stdout, exited, resize: (c, r) => { try { term.resize(c, r); } catch { /* exited */ } } };
    }
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => { /* process exited before reading its input */ });
    const exited = new Promise<number>((res, rej) => {
      child.on('error', rej);
      child.on('close', (code, signal) => res(code ?? (signal ? 128 + (signalNumber(signal) ?? 0) : 1)));
    });
    return { pid: child.pid ?? 0, stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, exited, resize: () => {} };
  }

  close(): void {
    this.exits.close();
    this.watcher?.close();
  }
}


/**
 * A terminal's input, written to its master one chunk at a time: node-pty's own write queues
 * whatever it is given, so a client flooding the stdin of a TTY exec whose process did not read
 * grew berthd by all of it. Here the next chunk is taken only once the kernel took this one, and
 * the client waits as it would on a pipe. After the process ended, its input is dropped (the
 * descriptor is closed then and its number may belong to something else).
 */
function ptyInput(master: number, ended: () => boolean): Writable {
  const put = (buf: Buffer, done: () => void): void => {
    if (ended() || !buf.length) return done();
    fsWrite(master, buf, (err, n) => {
      if (err?.code === 'EAGAIN') return void setTimeout(() => put(buf, done), 2);
      if (err) return done();
      put(buf.subarray(n), done);
    });
  };
  return new Writable({ highWaterMark: 64 * 1024, write: (chunk: Buffer, _encoding, done) => put(chunk, () => done()) });
}

/** runc wraps its errors in logrus lines; keep the message a user can act on. */
/** runc's own message, or what became of it when it said nothing (killed, say). */
function runcFailure(verb: string, r: RunResult): string {
  return cleanRuncMessage(r.stderr) || `runc ${verb} exited with status ${r.code} and no message`;
}

export function cleanRuncMessage(text: string): string {
  const lines = text.trim().split('\n').filter((l) => l.trim() !== '');
  const msgs = lines.map((l) => {
    const m = /msg="((?:[^"\\]|\\.)*)"/.exec(l);
    return m ? m[1]!.replace(/\\"/g, '"').replace(/\\\\/g, '\\') : l;
  });
  return msgs.join('; ');
}

function signalNumber(sig: string): number | undefined {
  const table: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGPIPE: 13 };
  return table[sig];
}

/**
 * The cgroups of container `id` (cgroupsPath /berth/<id>) that runc left: a `runc create` killed
 * after it made them and before it saved its state leaves directories that `runc delete` cannot
 * find (found by npm run chaos). rmdir removes only empty ones, so a cgroup with a live process in
 * it stays; both layouts: /sys/fs/cgroup/<controller>/berth/<id> (v1, hybrid) and
 * /sys/fs/cgroup/berth/<id> (v2).
 */
export async function removeCgroups(id: string, base = '/sys/fs/cgroup'): Promise<void> {
  if (!/^[0-9a-f]{64}$/.test(id)) return;
  const dirs = [join(base, 'berth', id)];
  for (const e of await fs.readdir(base, { withFileTypes: true }).catch(() => [])) {
    if (e.isDirectory() && e.name !== 'berth') dirs.push(join(base, e.name, 'berth', id));
  }
  for (const d of dirs) await removeCgroupDir(d);
}

/**
 * A killed `runc create` can leave its half-made container's `runc init` alive for a moment (it
 * notices the broken pipe and exits on its own): the cgroup is then busy. The processes in a
 * cgroup named by a container being deleted are that container's, so they are killed, as
 * `runc delete --force` kills them, and the directory is tried again (seed 151227, cycle 952).
 */
async function removeCgroupDir(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      await fs.rmdir(dir);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EBUSY') return;
    }
    const procs = await fs.readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const pid of procs.split('\n').map(Number).filter((p) => p > 1)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone already */ }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
