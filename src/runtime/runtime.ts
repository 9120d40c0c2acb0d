import type { Readable, Writable } from 'node:stream';

/** One open attachment to a running container's stdio. */
export interface AttachSession {
  /** Bytes for the container's stdin; ending it closes the container's stdin (unless it stays open). */
  stdin: Writable;
  /** Called for every chunk of output, with 1 for stdout and 2 for stderr. */
  onOutput(cb: (stream: 1 | 2, data: Buffer) => void): void;
  /** Stops and restarts the output while a slow client catches up: what is not read waits in the kernel, not in berthd. */
  pause(): void;
  resume(): void;
  /** Resolves when the container's side closes (it exited) or close() was called. */
  closed: Promise<void>;
  close(): void;
}

export interface CreateOptions {
  id: string;
  name: string;
  bundle: string;
  logPath: string;
  tty: boolean;
  openStdin: boolean;
  /** Keep the container's stdin open after an attached client goes away (docker run -dit). */
  leaveStdinOpen: boolean;
  /**
   * The mounts below the runtime's mount root that this container uses (its rootfs, its network
   * namespace pin, volumes on mounts of their own). Given, the runtime runs without the others.
   */
  keepMounts?: string[];
}

export interface ExecOptions {
  id: string;
  args: string[];
  env: string[];
  cwd?: string;
  user?: { uid: number; gid: number; additionalGids?: number[] };
  tty: boolean;
  privileged?: boolean;
  cols?: number;
  rows?: number;
}

/** A process started by exec: either pipes (no TTY) or a pseudo terminal. */
export interface ExecProcess {
  pid: number;
  stdin: Writable;
  stdout: Readable;
  /** undefined with a TTY, where everything comes out of stdout. */
  stderr?: Readable;
  exited: Promise<number>;
  resize(cols: number, rows: number): void;
}

export interface RuntimeState { status: 'created' | 'running' | 'stopped' | 'paused' | 'creating'; pid: number }

/** What the engine needs from an OCI runtime and its monitor. runc under conmon implements it. */
export interface ContainerRuntime {
  /** Creates the container (process not yet running) and returns its pid. */
  create(opts: CreateOptions): Promise<number>;
  start(id: string): Promise<void>;
  kill(id: string, signal: string): Promise<void>;
  /** Changes a running container's cgroup limits (OCI LinuxResources). */
  update(id: string, resources: Record<string, unknown>): Promise<void>;
  /** Freezes / thaws every process of the container (the cgroup freezer). */
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  delete(id: string): Promise<void>;
  state(id: string): Promise<RuntimeState | undefined>;
  attach(bundle: string): Promise<AttachSession>;
  resize(bundle: string, rows: number, cols: number): Promise<void>;
  exec(opts: ExecOptions): Promise<ExecProcess>;
  /** Pids of every process in the container. */
  pids(id: string): Promise<number[]>;
  /** Called once per container exit with its exit code, also for exits that happened while berthd was down. */
  onExit(cb: (id: string, exitCode: number) => void): void;
  /** The recorded exit code, if the container has exited; with `since` (ms), one recorded before it is an earlier run's, removed. */
  exitCode(id: string, since?: number): Promise<number | undefined>;
  clearExit(id: string): Promise<void>;
  /** After a daemon restart: takes over watching a running container (its monitor may be gone); `initPid` as runc reported it, 0 if unknown. */
  adopt(id: string, bundle: string, initPid: number): void;
  /** After a daemon restart, for a container not recorded as running: ends a monitor the previous berthd started for it (and what that monitor was still running). */
  endStrayMonitor(id: string, bundle: string): Promise<void>;
  close(): void;
}

/** The runtime refused to create or start the container (bad command, bad spec). */
export class RuntimeCreateError extends Error {}
