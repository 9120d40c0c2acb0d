import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { unmount } from '../kernel/mount.js';
import type { NetworkService } from '../model/network.js';
import type { ImageStore, ImageUser } from '../images/types.js';
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
import { ZERO_TIME, type ContainerRecord, type ContainerStatus } from './types.js';
import { VolumeStore } from './volumes.js';
import { ContainerWaits, raceTimeout } from './waits.js';
import { signalAndSettle, thaw } from './stopping.js';
import { policyRestarts, portHolder, RestartManager } from './restartmanager.js';
import { LifecycleStats } from './lifestats.js';

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
  protected readonly restarts = new RestartManager();
  /** Starts and stops with their durations, for /metrics. */
  readonly lifeStats = new LifecycleStats();
  /**
   * From restore() until applyRestartPolicies(), exits are recorded but no policy is applied: that
   * call applies them once the network layer has adopted and recovered sandboxes, and `berthd
   * --cleanup`, which restores too, never starts anything.
   */
  protected restoring = false;

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

  /** A container using the image, a running one first (Docker's rmi names a running user before a stopped one). */
  imageInUse(imageId: string): ImageUser | undefined {
    let stopped: ImageUser | undefined;
    for (const c of this.containers.values()) {
      if (c.Image !== imageId) continue;
      if (c.State.Running || c.State.Restarting) return { id: c.Id, running: true };
      stopped ??= { id: c.Id, running: false };
    }
    return stopped;
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
    // Docker counts a restarting container as running: stop ends the back-off and answers 204.
    if (c.State.Restarting && (await this.cancelRestart(c))) return void this.containerEvent(c, 'stop');
    if (!c.State.Running) throw new NotModifiedError();
    this.stoppedByUser(c);
    await this.stopRunning(c, timeoutSec ?? c.Config.StopTimeout ?? 10);
    this.containerEvent(c, 'stop');
  }

  /** Stop, SIGKILL, rm -f, restart: recorded for unless-stopped, and this run's policy cancelled. */
  protected stoppedByUser(c: ContainerRecord): void {
    c.ManuallyStopped = true;
    this.restarts.cancelNextExit(c.Id);
  }

  protected async stopRunning(c: ContainerRecord, timeoutSec: number): Promise<void> {
    const t0 = process.hrtime.bigint();
    // Taken before the thaw: the process may exit as soon as it is thawed.
    const exited = this.waits.exited(c.Id);
    await thaw(this.o.runtime, this.records, c);
    await signalAndSettle(this.o.runtime, this.records, c, exited, timeoutSec);
    this.lifeStats.stopped(t0);
  }

  /**
   * Sends a signal. SIGKILL answers only once the container has stopped, as Docker's Kill
   * (daemon/kill.go) waits for not-running: clients remove the container next without force
   * (Ansible's docker_container absent does kill, then DELETE, and got 409 "cannot remove a
   * running container"). The wait is registered before the signal so the exit cannot be missed,
   * and bounded so a container whose monitor is gone cannot hang the call.
   */
  async kill(ref: string, signal = 'KILL'): Promise<void> {
    const c = this.get(ref);
    const sig = /^\d+$/.test(signal) ? signal : signal.toUpperCase().replace(/^SIG/, '');
    const sigkill = sig === 'KILL' || sig === '9';
    if (c.State.Restarting) {
      // No process between runs: Docker sends nothing, and SIGKILL ends the back-off (ExitOnNext).
      if (sigkill) await this.cancelRestart(c);
      this.containerEvent(c, 'kill', { signal: String(signalNumber(sig)) });
      return;
    }
    if (!c.State.Running) throw new ConflictError(`Cannot kill container: ${ref}: Container ${c.Id} is not running`);
    if (sigkill) {
      this.stoppedByUser(c);
      // Thawed first, as stop does: runc 1.1 thaws a paused container itself after SIGKILL, so
      // a resume sent after the signal raced the exit's `runc delete` and failed with
      // "container does not exist" (a 500 for `kill` of a paused container).
      await thaw(this.o.runtime, this.records, c);
    }
    const stopped = sigkill ? this.waits.wait(c, 'not-running') : undefined;
    await this.o.runtime.kill(c.Id, sig);
    this.containerEvent(c, 'kill', { signal: String(signalNumber(sig)) });
    if (stopped) await raceTimeout(stopped, 10_000);
  }

  async pause(ref: string): Promise<void> {
    const c = this.get(ref);
    await this.records.withLock(c.Id, 'a pause', async () => {
      if (c.State.Restarting) throw new ConflictError(restartingMessage(c.Id));
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
    await this.records.withLock(c.Id, 'an unpause', async () => {
      if (!c.State.Paused) throw new ConflictError(`Container ${c.Id} is not paused`);
      await thaw(this.o.runtime, this.records, c);
    });
    this.containerEvent(c, 'unpause');
  }

  /** For the log line of a request about this container that has had no answer for long. */
  progressOf(ref: string): string | undefined {
    const c = this.find(ref);
    return c && this.records.progress(c.Id);
  }

  abstract start(ref: string): Promise<void>;
  /** Starts under the container's lock; `byPolicy` for a restart policy's start, which keeps the restart count. */
  protected abstract startLocked(c: ContainerRecord, byPolicy: boolean): Promise<void>;

  async restart(ref: string, timeoutSec?: number): Promise<void> {
    const c = this.get(ref);
    if (c.State.Restarting) await this.cancelRestart(c);
    if (c.State.Running) {
      this.stoppedByUser(c);
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
    if ((c.State.Running || c.State.Restarting) && !opts.force) throw cannotRemoveRunning(c);
    if (c.State.Restarting) await this.cancelRestart(c);
    if (c.State.Running) {
      this.stoppedByUser(c);
      await this.o.runtime.kill(c.Id, 'KILL');
      await thaw(this.o.runtime, this.records, c);
      await this.waits.exited(c.Id);
      await this.records.settled(c.Id);
    }
    await this.records.withLock(c.Id, 'a removal', async () => {
      if (!this.containers.has(c.Id)) return;
      // A start queued ahead of this removal may have made it run since the look above (chaos seed 46008).
      if ((c.State.Running || c.State.Restarting) && !opts.force) throw cannotRemoveRunning(c);
      c.State.Status = 'removing';
      await this.records.save(c);
      await this.removeNow(c);
    });
    if (opts.volumes) await this.vols.removeAnonymous(c);
  }

  protected async removeNow(c: ContainerRecord): Promise<void> {
    // `runc delete --force` ends a run still going (one a queued start began after rm -f looked).
    // Its exit will find no container to record it on, so the run's end is said here: a stop
    // waiting for that exit waited for ever (chaos seed 46008: stop, rm -f and a start at once).
    await this.o.runtime.delete(c.Id).catch(() => undefined);
    this.waits.signalExit(c.Id);
    this.health.unwatch(c.Id);
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
      Object.assign(ep, { EndpointID: '', IPAddress: '', IPPrefixLen: 0, Gateway: '', MacAddress: '', ifname: '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0, IPv6Gateway: '', CNI: undefined });
    }
    this.o.network.endpointsRecorded(c.Id, Object.keys(c.Endpoints ?? {}));
    await unmount(join(this.bundleDir(c), 'rootfs')).catch((e) => errors.push(errorMessage(e)));
    if (errors.length) console.error(`berthd: releasing ${shortId(c.Id)}: ${errors.join('; ')}`);
  }

  protected handleExit(id: string, code: number): Promise<void> {
    return this.waits.recordingExit(this.recordExit(id, code));
  }

  private async recordExit(id: string, code: number): Promise<void> {
    const c = this.containers.get(id);
    // A process can exit before start() has marked it running (`run --rm busybox true`): the
    // start holds the lock, so queue behind it rather than lose the exit.
    if (!c || (!c.State.Running && !this.waits.expectsExit(id))) return;
    // The exit directory can report one exit twice; only the call that recorded it goes on.
    let recorded = false;
    let restartIn = 0;
    await this.records.withLock(id, 'the recording of its exit', async () => {
      // Removed meanwhile (its directory is gone): nothing to record.
      if (!c.State.Running || c.State.Status === 'removing' || !this.containers.has(id)) return;
      recorded = true;
      this.records.mark(id, 'exit: runc delete');
      await this.o.runtime.delete(id).catch((e) => console.error(`berthd: runc delete ${shortId(id)}: ${errorMessage(e)}`));
      this.records.mark(id, 'exit: releasing its network sandbox and root filesystem');
      await this.releaseResources(c);
      // Docker's handleContainerExit: a stop or kill cancelled the restart manager (ExitOnNext),
      // otherwise the policy decides; a restart is counted when it is decided, and the container
      // shows "restarting" until the back-off has passed.
      const cancelled = this.restarts.takeCancelled(id);
      const restart = !this.restoring && !c.HostConfig.AutoRemove && !cancelled && policyRestarts(c, code);
      if (restart) {
        restartIn = this.restarts.nextDelay(c.Id, Date.now() - Date.parse(c.State.StartedAt));
        c.RestartCount++;
      }
      Object.assign(c.State, {
        Status: (restart ? 'restarting' : 'exited') as ContainerStatus, Running: false, Paused: false, Restarting: restart, Pid: 0, ExitCode: code,
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
    if (restartIn) this.scheduleRestart(c, restartIn);
  }

  // ---------------------------------------------------------------- restart policies

  private scheduleRestart(c: ContainerRecord, delayMs: number): void {
    this.restarts.schedule(c.Id, delayMs, () => {
      void this.records.withLock(c.Id, 'its restart policy', async () => {
        // A stop, kill, rm or restart during the back-off has cancelled it.
        if (!c.State.Restarting || !this.containers.has(c.Id)) return;
        await this.startLocked(c, true);
      }).catch((e) => {
        // As Docker: a restart that fails leaves the container stopped, with no further attempt.
        console.error(`berthd: restarting ${shortId(c.Id)}: ${errorMessage(e)}${portHolder(e, this.containers)}`);
        this.waits.notify(c, ['not-running', 'next-exit']);
      });
    });
  }

  /**
   * Ends a pending restart (Docker's ExitOnNext: stop, SIGKILL, rm -f, restart): the container
   * stays exited, marked as stopped by the user. False if the restart had already begun.
   */
  private async cancelRestart(c: ContainerRecord): Promise<boolean> {
    return this.records.withLock(c.Id, 'the end of its restart back-off', async () => {
      if (!c.State.Restarting) return false;
      this.restarts.cancel(c.Id);
      Object.assign(c.State, { Status: 'exited' as ContainerStatus, Restarting: false });
      c.ManuallyStopped = true;
      await this.records.save(c);
      this.waits.notify(c, ['not-running', 'next-exit']);
      return true;
    });
  }

  /** A user's start (or the daemon's at boot) begins with a fresh restart manager, as Docker's containerStart(reset=true). */
  protected resetRestartManager(c: ContainerRecord): void {
    c.RestartCount = 0;
    this.restarts.reset(c.Id);
  }

  /**
   * Docker's daemon start (daemon/daemon.go restore): every container that has run before, is not
   * running, and whose policy restarts it with a fresh restart manager is started again, as a user
   * start would (RestartCount back to 0). A fresh manager has not been cancelled, so a stop by the
   * user only counts for unless-stopped: `always` comes back after `docker stop`, and so does
   * `on-failure` after a stop that left a non-zero exit code (moby#35166, Docker 20.10's behaviour).
   * Called once the daemon is up; never by `berthd --cleanup`.
   */
  async applyRestartPolicies(): Promise<void> {
    // As Docker's restore finishes with the containers that died while it was down before it starts
    // any: a dead run's exit still being recorded holds its host ports, and a policy's start racing
    // it was refused "port is already allocated" (chaos seeds 7331 cycle 432, 424242 cycle 663).
    await this.waits.allRecorded();
    this.restoring = false;
    const due = this.list().filter((c) => c.State.Status === 'exited' && !c.State.Running && c.State.StartedAt !== ZERO_TIME && policyRestarts(c, c.State.ExitCode));
    await Promise.all(due.map((c) => this.start(c.Id).catch((e) => console.error(`berthd: starting ${shortId(c.Id)} for its restart policy: ${errorMessage(e)}${portHolder(e, this.containers)}`))));
  }
}

/** Docker's errContainerIsRestarting. */
export function restartingMessage(id: string): string {
  return `Container ${id} is restarting, wait until the container is running`;
}

/** Docker's refusal to remove a running (or restarting) container without force. */
function cannotRemoveRunning(c: ContainerRecord): ConflictError {
  return new ConflictError(`You cannot remove a ${c.State.Restarting ? 'restarting' : 'running'} container ${c.Id}. Stop the container before attempting removal or force remove`);
}
