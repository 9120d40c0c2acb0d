import { join } from 'node:path';
import type { ContainerRuntime, ExecProcess } from '../runtime/runtime.js';
import { BadRequestError, ConflictError, NotFoundError } from '../util/errors.js';
import { newId } from '../util/ids.js';
import type { Engine } from './engine.js';
import { restartingMessage } from './lifecycle.js';
import { resolveUser } from './users.js';

export interface ExecRecord {
  ID: string;
  ContainerID: string;
  Running: boolean;
  ExitCode: number | null;
  ProcessConfig: { tty: boolean; entrypoint: string; arguments: string[]; privileged: boolean; user: string };
  OpenStdin: boolean;
  OpenStderr: boolean;
  OpenStdout: boolean;
  CanRemove: boolean;
  DetachKeys: string;
  Pid: number;
  Env: string[];
  WorkingDir: string;
  started: boolean;
  process?: ExecProcess;
}

/** Exec sessions (docker exec): created, then started once, then inspectable for their exit code. */
export class ExecManager {
  private readonly execs = new Map<string, ExecRecord>();

  constructor(private readonly engine: Engine, private readonly runtime: ContainerRuntime) {}

  create(containerRef: string, body: Record<string, unknown>): { Id: string } {
    const c = this.engine.get(containerRef);
    if (c.State.Restarting) throw new ConflictError(restartingMessage(c.Id));
    if (!c.State.Running) throw new ConflictError(`Container ${c.Id} is not running`);
    if (c.State.Paused) throw new ConflictError(`Container ${c.Id} is paused, unpause the container before exec`);
    const cmd = body.Cmd;
    if (!Array.isArray(cmd) || cmd.length === 0 || cmd.some((x) => typeof x !== 'string')) {
      throw new BadRequestError('No exec command specified');
    }
    for (const f of ['Env'] as const) {
      const v = body[f];
      if (v !== undefined && v !== null && (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))) {
        throw new BadRequestError(`invalid type for field ${f}: expected array of strings`);
      }
    }
    const id = newId();
    const [entrypoint, ...args] = cmd as string[];
    this.execs.set(id, {
      ID: id, ContainerID: c.Id, Running: false, ExitCode: null,
      ProcessConfig: { tty: !!body.Tty, entrypoint: entrypoint!, arguments: args, privileged: !!body.Privileged, user: (body.User as string) ?? '' },
      OpenStdin: !!body.AttachStdin, OpenStderr: !!body.AttachStderr, OpenStdout: !!body.AttachStdout,
      CanRemove: false, DetachKeys: '', Pid: 0,
      Env: (body.Env as string[]) ?? [], WorkingDir: (body.WorkingDir as string) ?? '', started: false,
    });
    this.engine.containerEvent(c, `exec_create: ${cmd.join(' ')}`, { execID: id });
    return { Id: id };
  }

  get(id: string): ExecRecord {
    const e = this.execs.get(id);
    if (!e) throw new NotFoundError(`No such exec instance: ${id}`);
    return e;
  }

  async start(id: string, opts: { tty?: boolean; cols?: number; rows?: number }): Promise<ExecProcess> {
    const e = this.get(id);
    if (e.started) throw new ConflictError(`Error: Exec command ${id} has already run`);
    const c = this.engine.get(e.ContainerID);
    if (!c.State.Running) throw new ConflictError(`Container ${c.Id} is not running`);
    e.started = true;
    const rootfs = join(this.engine.bundleDir(c), 'rootfs');
    const user = await resolveUser(rootfs, e.ProcessConfig.user || c.Config.User);
    const tty = opts.tty ?? e.ProcessConfig.tty;
    const proc = await this.runtime.exec({
      id: c.Id, args: [e.ProcessConfig.entrypoint, ...e.ProcessConfig.arguments], env: e.Env,
      cwd: e.WorkingDir || undefined, user, tty, privileged: e.ProcessConfig.privileged,
      cols: opts.cols, rows: opts.rows,
    });
    e.Running = true;
    e.Pid = proc.pid;
    e.process = proc;
    this.engine.containerEvent(c, `exec_start: ${[e.ProcessConfig.entrypoint, ...e.ProcessConfig.arguments].join(' ')}`, { execID: id });
    void proc.exited.then((code) => {
      e.Running = false;
      e.ExitCode = code;
      e.process = undefined;
      this.engine.containerEvent(c, 'exec_die', { execID: id, exitCode: String(code) });
      // Docker forgets finished exec sessions after a while; keep them long enough to be inspected.
      setTimeout(() => this.execs.delete(id), 5 * 60_000).unref();
    }, () => { e.Running = false; });
    return proc;
  }

  resize(id: string, rows: number, cols: number): void {
    const e = this.get(id);
    e.process?.resize(cols, rows);
  }

  inspect(id: string): object {
    const e = this.get(id);
    const c = this.engine.find(e.ContainerID);
    return {
      ID: e.ID, Running: e.Running, ExitCode: e.ExitCode, ProcessConfig: e.ProcessConfig,
      OpenStdin: e.OpenStdin, OpenStderr: e.OpenStderr, OpenStdout: e.OpenStdout, CanRemove: e.CanRemove,
      ContainerID: e.ContainerID, DetachKeys: e.DetachKeys, Pid: e.Pid,
      ...(c ? {} : {}),
    };
  }

  /** ExecIDs shown in container inspect. */
  idsFor(containerId: string): string[] | null {
    const ids = [...this.execs.values()].filter((e) => e.ContainerID === containerId).map((e) => e.ID);
    return ids.length ? ids : null;
  }
}
