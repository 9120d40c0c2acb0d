import { join } from 'node:path';
import type { ContainerRuntime } from '../runtime/runtime.js';
import { errorMessage } from '../util/errors.js';
import { shortId } from '../util/ids.js';
import { afterProbe, probeCommand, timings } from './health.js';
import type { ContainerRecord } from './types.js';
import { resolveUser } from './users.js';

/** Runs each container's health probe every Interval while its run lasts (Docker's monitor). */
export class HealthMonitor {
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly o: {
    runtime: ContainerRuntime;
    current: (id: string) => ContainerRecord | undefined;
    bundleDir: (c: ContainerRecord) => string;
    /** Persists the record and emits the health_status event when the status changed. */
    changed: (c: ContainerRecord, statusChanged: boolean) => Promise<void>;
  }) {}

  watch(c: ContainerRecord): void {
    const argv = probeCommand(c.Config.Healthcheck);
    if (!argv) return;
    this.unwatch(c.Id);
    const t = timings(c.Config.Healthcheck!);
    const startedAt = c.State.StartedAt;
    const tick = async () => {
      const cur = this.o.current(c.Id);
      if (!cur?.State.Running || cur.State.StartedAt !== startedAt) return;
      if (!cur.State.Paused) await this.probe(cur, argv, t.timeoutMs).catch((e) => console.error(`berthd: health check ${shortId(c.Id)}: ${errorMessage(e)}`));
      if (this.timers.has(c.Id) && cur.State.Running && cur.State.StartedAt === startedAt) {
        this.timers.set(c.Id, setTimeout(() => void tick(), t.intervalMs));
      }
    };
    this.timers.set(c.Id, setTimeout(() => void tick(), t.intervalMs));
  }

  unwatch(id: string): void {
    clearTimeout(this.timers.get(id));
    this.timers.delete(id);
  }

  private async probe(c: ContainerRecord, argv: string[], timeoutMs: number): Promise<void> {
    const start = new Date();
    let output = '';
    let exitCode: number;
    try {
      const user = await resolveUser(join(this.o.bundleDir(c), 'rootfs'), c.Config.User);
      const proc = await this.o.runtime.exec({ id: c.Id, args: argv, env: c.Config.Env, user, tty: false });
      proc.stdin.end();
      proc.stdout.on('data', (d: Buffer) => { output += d.toString(); });
      proc.stderr?.on('data', (d: Buffer) => { output += d.toString(); });
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<number>((resolve) => { timer = setTimeout(() => resolve(-1), timeoutMs); });
      exitCode = await Promise.race([proc.exited, timedOut]);
      clearTimeout(timer);
      if (exitCode === -1) output = `Health check exceeded timeout (${timeoutMs / 1000}s)`;
    } catch (e) {
      exitCode = -1;
      output = errorMessage(e);
    }
    if (!this.timers.has(c.Id) || !c.State.Running || !c.State.Health) return;
    const before = c.State.Health.Status;
    c.State.Health = afterProbe(c.State.Health, { Start: start.toISOString(), End: new Date().toISOString(), ExitCode: exitCode, Output: output },
      start.getTime() - Date.parse(c.State.StartedAt), c.Config.Healthcheck!);
    await this.o.changed(c, c.State.Health.Status !== before);
  }
}
