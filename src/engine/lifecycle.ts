import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { unmount } from '../kernel/mount.js';
import type { NetworkService } from '../model/network.js';
import type { ImageStore } from '../images/types.js';
import type { ContainerRuntime } from '../runtime/runtime.js';
import { BadRequestError, ConflictError, NotModifiedError, errorMessage } from '../util/errors.js';
import { shortId } from '../util/ids.js';
import { PendingAttachments } from './attachments.js';
import { ContainerVolumes } from './containervolumes.js';
import type { EventBus } from './events.js';
import { HealthMonitor } from './healthmonitor.js';
import type { MountSpec } from './mounts.js';
import { VALID_NAME } from './names.js';
import { sandboxRef } from './netsandbox.js';
import { ContainerRecords } from './records.js';
import type { ContainerRecord, ContainerStatus } from './types.js';
import { VolumeStore } from './volumes.js';
import { ContainerWaits, raceTimeout } from './waits.js';

export interface EngineParts {
  root: string;
  images: ImageStore;
  runtime: ContainerRuntime;
  network: NetworkService;
  events: EventBus;
}

const SIGNALS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, USR1: 10, USR2: 12, TERM: 15, STOP: 19, CONT: 18 };
function signalNumber(sig: string): number | string { return /^\d+$/.test(sig) ? Number(sig) : SIGNALS[sig] ?? sig; }

/**
 * The part of the engine that runs a container's life after start: lookup, stop, kill, pause,
 * remove, rename, exits and restart policies, and freeing what a run held. (engine.ts adds
 * restore, create, start and the operations around them.)
 */
export abstract class Lifecycle {
  protected readonly records: ContainerRecords;
  protected readonly waits = new ContainerWaits();
  protected readonly vols: ContainerVolumes;
  protected readonly attachments: PendingAttachments;
  protected readonly health: HealthMonitor;

  constructor(protected readonly o: EngineParts) {
    this.records = new ContainerRecords(join(o.root, 'containers'));
    this.vols = new ContainerVolumes(new VolumeStore(join(o.root, 'volumes')), o.events, () => this.records.list());
    this.attachments = new PendingAttachments(o.runtime);
    this.health = new HealthMonitor({
      runtime: o.runtime, current: (id) => this.containers.get(id), bundleDir: (c) => this.bundleDir(c),
      changed: async (c, statusChanged) => {
        await this.records.save(c);
        if (statusChanged) this.containerEvent(c, `health_status: ${c.State.Health!.Status}`);
      },
    });
  }

  get containers(): Map<string, ContainerRecord> { return this.records.containers; }

  find(ref: string): ContainerRecord | undefined { return this.records.find(ref); }
  get(ref: string): ContainerRecord { return this.records.get(ref); }
  list(): ContainerRecord[] { return this.records.list(); }
  bundleDir(c: ContainerRecord): string { return this.records.bundleDir(c.Id); }
  logPath(c: ContainerRecord): string { return join(this.bundleDir(c), `${c.Id}-json.log`); }
  containerMounts(c: ContainerRecord): MountSpec[] { return this.vols.mountsOf(c); }
  volumeUsers(name: string): string[] { return this.vols.usersOf(name); }

  imageInUse(imageId: string): string | undefined {
    for (const c of this.containers.values()) if (c.Image === imageId) return c.Id;
    return undefined;
  }

  /**
   * A container event with Docker's attributes: the container's labels, image and name, so that
   * `events --filter label=…` (compose, testcontainers) matches every event of a labelled container.
   */
  containerEvent(c: ContainerRecord, action: string, extra: Record<string, string> = {}): void {
    this.o.events.emit('container', action, c.Id, { ...(c.Config.Labels ?? {}), image: c.Config.Image, name: c.Name.slice(1), ...extra });
  }

  // ---------------------------------------------------------------- stop / kill / pause / restart

  async stop(ref: string, timeoutSec?: number): Promise<void> {
    const c = this.get(ref);
    if (!c.State.Running) throw new NotModifiedError();
    c.ManuallyStopped = true;
    await this.stopRunning(c, timeoutSec ?? c.Config.StopTimeout ?? 10);
    this.containerEvent(c, 'stop');
  }

  protected async stopRunning(c: ContainerRecord, timeoutSec: number): Promise<void> {
    const exited = this.waits.exited(c.Id);
    await this.thaw(c);
    if (timeoutSec !== 0) {
      await this.o.runtime.kill(c.Id, c.Config.StopSignal || 'SIGTERM');
      // A negative timeout waits for as long as the process takes, as in Docker.
      if (timeoutSec < 0) await exited;
      if (timeoutSec < 0 || (await raceTimeout(exited, timeoutSec * 1000))) return void (await this.records.settled(c.Id));
    }
    await this.o.runtime.kill(c.Id, 'KILL');
    await exited;
    await this.records.settled(c.Id);
  }

  async kill(ref: string, signal = 'KILL'): Promise<void> {
    const c = this.get(ref);
    if (!c.State.Running) throw new ConflictError(`Cannot kill container: ${ref}: Container ${c.Id} is not running`);
    const sig = /^\d+$/.test(signal) ? signal : signal.toUpperCase().replace(/^SIG/, '');
    if (sig === 'KILL' || sig === '9') c.ManuallyStopped = true;
    await this.o.runtime.kill(c.Id, sig);
    if (sig === 'KILL' || sig === '9') await this.thaw(c);
    this.containerEvent(c, 'kill', { signal: String(signalNumber(sig)) });
  }

  async pause(ref: string): Promise<void> {
    const c = this.get(ref);
    await this.records.withLock(c.Id, async () => {
      if (!c.State.Running) throw new ConflictError(`Container ${c.Id} is not running`);
      if (c.State.Paused) throw new ConflictError(`Container ${c.Id} is already paused`);
      await this.o.runtime.pause(c.Id);
      Object.assign(c.State, { Paused: true, Status: 'paused' as ContainerStatus });
      await this.records.save(c);
    });
    this.containerEvent(c, 'pause');
  }

  async unpause(ref: string): Promise<void> {
    const c = this.get(ref);
    await this.records.withLock(c.Id, async () => {
      if (!c.State.Paused) throw new ConflictError(`Container ${c.Id} is not paused`);
      await this.thaw(c);
    });
    this.containerEvent(c, 'unpause');
  }

  /** A frozen process never handles a signal, not even SIGKILL: stop, kill and rm thaw it first, as Docker does. */
  protected async thaw(c: ContainerRecord): Promise<void> {
    if (!c.State.Paused) return;
    await this.o.runtime.resume(c.Id);
    Object.assign(c.State, { Paused: false, Status: (c.State.Running ? 'running' : c.State.Status) as ContainerStatus });
    await this.records.save(c);
  }

  abstract start(ref: string): Promise<void>;

  async restart(ref: string, timeoutSec?: number): Promise<void> {
    const c = this.get(ref);
    if (c.State.Running) {
      c.ManuallyStopped = true;
      await this.stopRunning(c, timeoutSec ?? c.Config.StopTimeout ?? 10);
    }
    await this.start(c.Id);
    this.containerEvent(c, 'restart');
  }

  // ---------------------------------------------------------------- remove / rename / prune

  async remove(ref: string, opts: { force?: boolean; volumes?: boolean }): Promise<void> {
    const c = this.get(ref);
    if (c.State.Paused && !opts.force) {
      throw new ConflictError(`You cannot remove a paused container ${c.Id}. Unpause and then stop the container before attempting removal or force remove`);
    }
    if (c.State.Running && !opts.force) {
      throw new ConflictError(`You cannot remove a running container ${c.Id}. Stop the container before attempting removal or force remove`);
    }
    if (c.State.Running) {
      c.ManuallyStopped = true;
      await this.o.runtime.kill(c.Id, 'KILL');
      await this.thaw(c);
      await this.waits.exited(c.Id);
      await this.records.settled(c.Id);
    }
    await this.records.withLock(c.Id, async () => {
      if (!this.containers.has(c.Id)) return;
      c.State.Status = 'removing';
      await this.records.save(c);
      await this.removeNow(c);
    });
    if (opts.volumes) await this.vols.removeAnonymous(c);
  }

  protected async removeNow(c: ContainerRecord): Promise<void> {
    await this.o.runtime.delete(c.Id).catch(() => undefined);
    await this.releaseResources(c);
    await this.o.runtime.clearExit(c.Id);
    await fs.rm(this.bundleDir(c), { recursive: true, force: true });
    this.records.delete(c);
    this.containerEvent(c, 'destroy');
    this.waits.notify(c, ['not-running', 'next-exit', 'removed']);
  }

  async rename(ref: string, newName: string): Promise<void> {
    const c = this.get(ref);
    if (!VALID_NAME.test(newName)) {
      throw new BadRequestError(`Invalid container name (${newName}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
    }
    const name = newName.startsWith('/') ? newName : `/${newName}`;
    const holder = this.records.holderOf(name);
    if (holder && holder !== c.Id) {
      throw new ConflictError(`Conflict. The container name "${name}" is already in use by container "${holder}". You have to remove (or rename) that container to be able to reuse that name.`);
    }
    const old = c.Name;
    this.records.rename(c, name);
    this.o.network.endpointsRecorded(c.Id, Object.keys(c.Endpoints ?? {}));
    await this.records.save(c);
    this.containerEvent(c, 'rename', { oldName: old });
  }

  async prune(filterLabels: (c: ContainerRecord) => boolean): Promise<{ ContainersDeleted: string[]; SpaceReclaimed: number }> {
    const deleted: string[] = [];
    for (const c of this.list()) {
      if (c.State.Running || c.State.Status === 'removing' || !filterLabels(c)) continue;
      await this.remove(c.Id, {});
      deleted.push(c.Id);
    }
    return { ContainersDeleted: deleted, SpaceReclaimed: 0 };
  }

  // ---------------------------------------------------------------- exits

  /** Frees what a run held: its sandbox and its rootfs mount. Safe to call twice. */
  protected async releaseResources(c: ContainerRecord): Promise<void> {
    const errors: string[] = [];
    await this.o.network.tearDown(sandboxRef(c)).catch((e) => errors.push(errorMessage(e)));
    c.NetnsPath = '';
    c.Published = [];
    for (const ep of Object.values(c.Endpoints ?? {})) {
      Object.assign(ep, { EndpointID: '', IPAddress: '', IPPrefixLen: 0, Gateway: '', MacAddress: '', ifname: '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0, IPv6Gateway: '' });
    }
    this.o.network.endpointsRecorded(c.Id, Object.keys(c.Endpoints ?? {}));
    await unmount(join(this.bundleDir(c), 'rootfs')).catch((e) => errors.push(errorMessage(e)));
    if (errors.length) console.error(`berthd: releasing ${shortId(c.Id)}: ${errors.join('; ')}`);
  }

  protected async handleExit(id: string, code: number): Promise<void> {
    const c = this.containers.get(id);
    // A process can exit before start() has marked it running (`run --rm busybox true`): the
    // start holds the lock, so queue behind it rather than lose the exit.
    if (!c || (!c.State.Running && !this.waits.expectsExit(id))) return;
    // The exit directory can report one exit twice; only the call that recorded it goes on.
    let recorded = false;
    await this.records.withLock(id, async () => {
      if (!c.State.Running) return;
      recorded = true;
      await this.o.runtime.delete(id).catch((e) => console.error(`berthd: runc delete ${shortId(id)}: ${errorMessage(e)}`));
      await this.releaseResources(c);
      Object.assign(c.State, {
        Status: 'exited' as ContainerStatus, Running: false, Paused: false, Restarting: false, Pid: 0, ExitCode: code,
        FinishedAt: new Date().toISOString(),
      });
      await this.records.save(c);
      this.waits.signalExit(id);
    });
    if (!recorded) return;
    this.health.unwatch(id);
    this.containerEvent(c, 'die', { exitCode: String(code) });
    this.waits.notify(c, ['not-running', 'next-exit']);
    if (c.HostConfig.AutoRemove) {
      await this.remove(id, { force: true, volumes: true }).catch((e) => console.error(`berthd: auto-remove ${shortId(id)}: ${errorMessage(e)}`));
      return;
    }
    if (this.shouldRestart(c)) {
      c.RestartCount++;
      setTimeout(() => { void this.start(id).catch(() => undefined); }, Math.min(100 * 2 ** Math.min(c.RestartCount, 10), 60_000));
    }
  }

  private shouldRestart(c: ContainerRecord): boolean {
    const p = c.HostConfig.RestartPolicy;
    if (c.ManuallyStopped || !p?.Name || p.Name === 'no') return false;
    if (p.Name === 'on-failure') return c.State.ExitCode !== 0 && (!p.MaximumRetryCount || c.RestartCount < p.MaximumRetryCount);
    return p.Name === 'always' || p.Name === 'unless-stopped';
  }
}
