import { promises as fs } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { mountOverlay, mountsHolding, unmount } from '../kernel/mount.js';
import type { EndpointState } from '../model/network.js';
import type { ImageStore } from '../images/types.js';
import { RuntimeCreateError, type AttachSession } from '../runtime/runtime.js';
import { BadRequestError, ConflictError, NotFoundError, NotModifiedError, errorMessage } from '../util/errors.js';
import { newId, shortId } from '../util/ids.js';
import { dirSize } from './archive.js';
import { newContainerRecord, normaliseCreateBody, type CreateBody } from './create.js';
import type { EventBus } from './events.js';
import { probeCommand, validateHealthcheck } from './health.js';
import { parseMounts, type MountSpec } from './mounts.js';
import { randomName, VALID_NAME } from './names.js';
import { sandboxRef, sandboxSpec } from './netsandbox.js';
import { ociResources } from './resources.js';
import { runSpec } from './runspec.js';
import { ZERO_TIME, type ContainerRecord } from './types.js';
import { parseUpdate } from './update.js';
import { Lifecycle, type EngineParts } from './lifecycle.js';
import type { WaitCondition, WaitResult } from './waits.js';

export type EngineOptions = EngineParts;

/** Docker's State.Status for an exit code a failed start leaves behind. */
function startFailureCode(message: string): number {
  if (/executable file not found|no such file or directory/i.test(message)) return 127;
  if (/permission denied/i.test(message)) return 126;
  return 128;
}

/**
 * The engine decides; drivers act. It owns the container records and their lifecycle, and is the
 * only place that changes them, one operation per container at a time. Networking is a
 * NetworkService to it: it hands over a narrow spec and records what it gets back.
 */
export class Engine extends Lifecycle {
  get events(): EventBus { return this.o.events; }
  get images(): ImageStore { return this.o.images; }
  get volumes() { return this.vols.store; }

  /**
   * Loads every container and reconciles it with what the kernel and runtime say: a container the
   * store thinks is running but whose process is gone becomes exited; one that is not running
   * holds nothing (a crash during its start may have left a runtime container, a mount, a sandbox).
   */
  async restore(): Promise<void> {
    // Policies stay off until applyRestartPolicies(): the network layer must first adopt the
    // running sandboxes and recover the rest, or a restart racing that recovery would lose its own.
    this.restoring = true;
    await this.restoreRecords();
  }

  private async restoreRecords(): Promise<void> {
    await this.vols.store.load();
    this.o.runtime.onExit((id, code) => {
      // An exit can race the container's removal (a restore finishing an interrupted rm -f): that
      // is logged, never left as a rejection that would end berthd while it is still starting.
      this.handleExit(id, code).catch((e: unknown) => console.error(`berthd: exit of ${id.slice(0, 12)}: ${errorMessage(e)}`));
    });
    for (const c of await this.records.loadAll()) {
      if (c.State.Status === 'removing') {
        await this.removeNow(c);
        continue;
      }
      if (c.State.Running) {
        // A state runc could not tell is taken as running: the runtime's exit watch looks at its process.
        const st = await this.o.runtime.state(c.Id).catch(() => ({ status: 'running' as const, pid: 0 }));
        if (st && (st.status === 'running' || st.status === 'paused')) {
          this.waits.expectExit(c.Id);
          // Only an exit recorded since this run began ends it: a stale one (an earlier run's) would kill it.
          const code = await this.o.runtime.exitCode(c.Id, Date.parse(c.State.StartedAt));
          if (code !== undefined) await this.handleExit(c.Id, code);
          else {
            this.o.runtime.adopt(c.Id, this.records.bundleDir(c.Id), st.pid);
            this.health.watch(c);
          }
        } else {
          const code = await this.o.runtime.exitCode(c.Id);
          // Which way a container the previous berthd left running was lost (chaos verdicts).
          console.error(`berthd: ${shortId(c.Id)} ${c.Name}: stopped while berthd was down (runc: ${st ? st.status : 'no such container'}; ${code === undefined ? 'no exit code recorded: exit 255' : `exit ${code}`})`);
          await this.handleExit(c.Id, code ?? 255);
        }
        continue;
      }
      // runc may hold a container that a crash kept the record from knowing was created or started,
      // and the monitor of that start may still be creating it.
      await this.o.runtime.endStrayMonitor(c.Id, this.records.bundleDir(c.Id));
      await this.o.runtime.delete(c.Id).catch((e) => console.error(`berthd: runc delete ${shortId(c.Id)}: ${errorMessage(e)}`));
      // A back-off the previous berthd did not live to finish: exited now; the policy decides again at daemon start.
      const wasRestarting = c.State.Restarting;
      if (wasRestarting) Object.assign(c.State, { Status: 'exited', Restarting: false });
      await this.releaseResources(c);
      if (c.NetnsPath || c.Published?.length || wasRestarting) await this.records.save(c);
    }
  }

  /** The sandboxes of running containers, for the network layer to adopt after a restart. */
  runningSandboxes() {
    return this.list().filter((c) => c.State.Running).map(sandboxRef);
  }

  /** Endpoints the network layer corrected after a restart (an operation a crash cut short). */
  async applyEndpointFixes(fixes: Map<string, Record<string, EndpointState>>): Promise<void> {
    for (const [id, endpoints] of fixes) {
      const c = this.containers.get(id);
      if (!c) continue;
      c.Endpoints = endpoints;
      await this.records.save(c);
    }
  }

  // ---------------------------------------------------------------- create

  /** `swarmTask`: made by this node's swarm agent for a service task (never through the API). */
  async create(rawBody: unknown, nameParam: string | undefined, opts: { swarmTask?: boolean } = {}): Promise<{ Id: string; Warnings: string[] }> {
    const body: CreateBody = normaliseCreateBody(rawBody);
    let name: string;
    if (nameParam) {
      if (!VALID_NAME.test(nameParam)) {
        throw new BadRequestError(`Invalid container name (${nameParam}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
      }
      name = nameParam.startsWith('/') ? nameParam : `/${nameParam}`;
    } else {
      name = `/${randomName((n) => !!this.records.holderOf(`/${n}`))}`;
    }
    this.checkNameFree(name);
    if (!body.Image) throw new BadRequestError('Config.Image: image name must be given');
    // Docker names the reference with its default tag: "No such image: busybox:latest".
    const image = this.o.images.get(body.Image);
    const mode = body.HostConfig.NetworkMode || 'default';
    this.o.network.validateMode(mode);
    let sharedWith: ContainerRecord | undefined;
    if (mode.startsWith('container:')) {
      sharedWith = this.find(mode.slice('container:'.length));
      if (!sharedWith) throw new NotFoundError(`No such container: ${mode.slice('container:'.length)}`);
      if (body.Hostname) throw new BadRequestError('conflicting options: hostname and the network mode');
    }
    this.o.network.validatePortBindings(body.HostConfig.PortBindings ?? {});
    this.o.network.validateLabels?.({ ...(image.config.config?.Labels ?? {}), ...(body.Labels ?? {}) });
    const endpoints = this.o.network.initialEndpoints(mode, body.NetworkingConfig?.EndpointsConfig ?? {}, body.MacAddress, opts.swarmTask);
    validateHealthcheck((body as { Healthcheck?: unknown }).Healthcheck);
    const id = newId();
    const hostname = body.Hostname || (mode === 'host' ? osHostname() : sharedWith ? sharedWith.Config.Hostname : id.slice(0, 12));
    // Checked before the volumes are made: a refused create leaves no volume behind.
    newContainerRecord({ id, name, body, image, mode, hostname, ...(sharedWith ? { sharedWithId: sharedWith.Id } : {}), endpoints, anonymousVolumes: {} });
    // The name is taken again after the awaits below: a racing create of the same name loses with Docker's 409.
    const anonymousVolumes = await this.vols.createFor(body.HostConfig, body.Volumes ?? image.config.config?.Volumes ?? null);
    this.checkNameFree(name);
    const c = newContainerRecord({ id, name, body, image, mode, hostname, ...(sharedWith ? { sharedWithId: sharedWith.Id } : {}), endpoints, anonymousVolumes });
    this.records.add(c);
    try {
      await fs.mkdir(this.records.bundleDir(id), { recursive: true, mode: 0o700 });
      await this.records.save(c);
    } catch (e) {
      this.records.delete(c);
      throw e;
    }
    this.containerEvent(c, 'create');
    const warnings: string[] = [];
    if (mode === 'host' && (Object.keys(body.HostConfig.PortBindings ?? {}).length || body.HostConfig.PublishAllPorts)) {
      warnings.push('Published ports are discarded when using host network mode');
    }
    return { Id: id, Warnings: warnings };
  }

  private checkNameFree(name: string): void {
    const holder = this.records.holderOf(name);
    if (holder) {
      throw new ConflictError(`Conflict. The container name "${name}" is already in use by container "${holder}". You have to remove (or rename) that container to be able to reuse that name.`);
    }
  }

  // ---------------------------------------------------------------- start

  async start(ref: string): Promise<void> {
    const c = this.get(ref);
    await this.records.withLock(c.Id, 'a start', () => this.startLocked(c, false));
  }

  protected async startLocked(c: ContainerRecord, byPolicy: boolean): Promise<void> {
    if (c.State.Status === 'removing' || !this.containers.has(c.Id)) {
      throw new ConflictError(`container ${c.Id} is marked for removal and cannot be started`);
    }
    // Docker counts a restarting container as running: only its policy's timer starts it.
    if (c.State.Running || (c.State.Restarting && !byPolicy)) throw new NotModifiedError();
    if (!byPolicy) this.resetRestartManager(c);
    // A cancel meant for an earlier run (its stop failed, and the run ended some other way) is not this one's.
    this.restarts.takeCancelled(c.Id);
    const t0 = process.hrtime.bigint();
    const dir = this.records.bundleDir(c.Id);
    const rootfs = join(dir, 'rootfs');
    await this.o.runtime.clearExit(c.Id);
    let created = false;
    try {
      const image = this.o.images.get(c.Image);
      const mode = c.HostConfig.NetworkMode;
      const sharedWith = mode.startsWith('container:') ? this.get(mode.slice('container:'.length)) : undefined;
      // The root filesystem and the network sandbox need nothing of each other: both at once. Both
      // settle before a failure is thrown, so the cleanup below never races a half-done one.
      this.records.mark(c.Id, 'start: the root filesystem and the network sandbox');
      const [mounted, networked] = await Promise.allSettled([
        mountOverlay(this.o.images.layerDirs(image), join(dir, 'diff'), join(dir, 'work'), rootfs),
        this.o.network.setUp(sandboxSpec(c, dir, (r) => this.find(r)), sharedWith ? { netnsPath: sharedWith.NetnsPath, etcDir: this.records.bundleDir(sharedWith.Id) } : undefined),
      ]);
      if (networked.status === 'fulfilled') {
        const sandbox = networked.value;
        Object.assign(c, { NetnsPath: sandbox.netnsPath ?? '', Endpoints: sandbox.endpoints, Published: sandbox.published });
        this.o.network.endpointsRecorded(c.Id, Object.keys(sandbox.endpoints));
      }
      if (mounted.status === 'rejected') throw mounted.reason;
      if (networked.status === 'rejected') throw networked.reason;
      const binds = this.containerMounts(c);
      // Docker makes a missing -v source directory; a --mount source was checked at create.
      for (const b of parseMounts(c.HostConfig.Binds, null)) if (b.Type === 'bind') await fs.mkdir(b.Source, { recursive: true });
      await this.vols.fillNew(rootfs, binds);
      const spec = await runSpec(c, { rootfs, ...(c.NetnsPath ? { netnsPath: c.NetnsPath } : {}), etcFiles: networked.value.etcFiles, binds });
      if (c.Config.WorkingDir) await fs.mkdir(join(rootfs, c.Config.WorkingDir), { recursive: true });
      await fs.writeFile(join(dir, 'config.json'), JSON.stringify(spec));
      this.waits.expectExit(c.Id);
      this.records.mark(c.Id, 'start: the runtime creates the container');
      const keepMounts = [rootfs, ...(await mountsHolding(this.o.root, [c.NetnsPath, ...binds.map((b: MountSpec) => b.Source)]))];
      const pid = await this.o.runtime.create({
        id: c.Id, name: c.Name.slice(1), bundle: dir, logPath: this.logPath(c),
        tty: c.Config.Tty, openStdin: c.Config.OpenStdin, leaveStdinOpen: c.Config.OpenStdin && !c.Config.StdinOnce,
        keepMounts,
      });
      created = true;
      await this.attachments.connect(c.Id, dir);
      this.records.mark(c.Id, 'start: the runtime starts the process');
      await this.o.runtime.start(c.Id);
      Object.assign(c.State, {
        Status: 'running', Running: true, Restarting: false, Pid: pid, ExitCode: 0, Error: '',
        StartedAt: new Date().toISOString(), FinishedAt: ZERO_TIME,
      });
      c.ManuallyStopped = false;
      if (probeCommand(c.Config.Healthcheck)) c.State.Health = { Status: 'starting', FailingStreak: 0, Log: [] };
      else delete c.State.Health;
      await this.records.save(c);
      this.containerEvent(c, 'start');
      this.lifeStats.started(t0, true);
      this.health.watch(c);
    } catch (e) {
      this.lifeStats.started(t0, false);
      const message = errorMessage(e);
      this.records.mark(c.Id, `start failed (${message.slice(0, 80)}): undoing it`);
      this.attachments.fail(c.Id, e as Error);
      this.waits.signalExit(c.Id);
      if (created) await this.o.runtime.kill(c.Id, 'KILL').catch(() => undefined);
      await this.o.runtime.delete(c.Id).catch(() => undefined);
      await this.releaseResources(c);
      c.State.Error = message;
      c.State.ExitCode = startFailureCode(message);
      if (c.State.Status !== 'created') c.State.Status = 'exited';
      c.State.Running = false;
      c.State.Restarting = false;
      c.State.Pid = 0;
      await this.records.save(c);
      // Docker removes an auto-remove container whose start failed; `docker run --rm` waits for it.
      if (c.HostConfig.AutoRemove) {
        await this.removeNow(c).catch(() => undefined);
        await this.vols.removeAnonymous(c);
      }
      if (e instanceof RuntimeCreateError) {
        const code = c.State.ExitCode;
        const status = code === 127 || code === 126 ? 400 : 500;
        throw Object.assign(new BadRequestError(`OCI runtime create failed: ${message}: unknown`), { status });
      }
      throw e;
    }
  }

  // ---------------------------------------------------------------- networks

  /** `swarmTask`: the swarm agent joins a task to a network it may not attach to by hand (ingress). */
  async connect(ref: string, networkRef: string, cfg: Record<string, unknown>, opts: { swarmTask?: boolean } = {}): Promise<void> {
    const c = this.get(ref);
    const n = this.o.network.summary(networkRef);
    await this.records.withLock(c.Id, 'a network connect', async () => {
      const running = c.State.Running && c.NetnsPath ? c.NetnsPath : undefined;
      const got = await this.o.network.connect(sandboxSpec(c, this.records.bundleDir(c.Id), (r) => this.find(r)), running, c.Published ?? [], n.Id, cfg, opts.swarmTask);
      c.Endpoints = { ...(c.Endpoints ?? {}), [n.Id]: got.endpoint };
      c.Published = got.published;
      this.o.network.endpointsRecorded(c.Id, Object.keys(c.Endpoints));
      await this.records.save(c);
    });
    this.o.events.network('connect', n, { container: c.Id });
  }

  async disconnect(ref: string, networkRef: string, force: boolean): Promise<void> {
    const n = this.o.network.summary(networkRef);
    const c = this.find(ref);
    if (!c) {
      if (force) return;
      throw new NotFoundError(`No such container: ${ref}`);
    }
    await this.records.withLock(c.Id, 'a network disconnect', async () => {
      const running = c.State.Running && c.NetnsPath ? c.NetnsPath : undefined;
      const got = await this.o.network.disconnect(sandboxSpec(c, this.records.bundleDir(c.Id), (r) => this.find(r)), running, c.Published ?? [], n.Id);
      const endpoints = { ...(c.Endpoints ?? {}) };
      delete endpoints[n.Id];
      c.Endpoints = endpoints;
      c.Published = got.published;
      this.o.network.endpointsRecorded(c.Id, [...Object.keys(endpoints), n.Id]);
      await Promise.all([this.records.save(c), got.saved]);
    });
    this.o.events.network('disconnect', n, { container: c.Id });
  }

  // ---------------------------------------------------------------- update, attach, sizes

  async update(ref: string, body: Record<string, unknown>): Promise<{ Warnings: string[] }> {
    const c = this.get(ref);
    const { limits, merged, policy } = parseUpdate(c, body);
    await this.records.withLock(c.Id, 'an update', async () => {
      if (Object.keys(limits).length && c.State.Running) {
        await this.o.runtime.update(c.Id, ociResources(merged)).catch((e) => {
          throw new BadRequestError(`Cannot update container ${c.Id}: ${errorMessage(e)}`);
        });
      }
      Object.assign(c.HostConfig, limits);
      if (policy) c.HostConfig.RestartPolicy = policy;
      await this.records.save(c);
    });
    this.containerEvent(c, 'update');
    return { Warnings: [] };
  }

  /**
   * Attaches to a container's stdio. Before start, the session is connected as soon as the runtime
   * has created the container and before its process runs, so no early output is lost.
   */
  attach(ref: string): Promise<AttachSession> {
    const c = this.get(ref);
    if (c.State.Running) return this.o.runtime.attach(this.bundleDir(c));
    if (c.State.Status === 'created' || c.State.Status === 'exited') return this.attachments.wait(c.Id);
    throw new ConflictError('You cannot attach to a stopped container, start it first');
  }

  cancelPendingAttach(ref: string): void {
    const c = this.find(ref);
    if (c) this.attachments.fail(c.Id, new Error('attach cancelled'));
  }

  async resize(ref: string, rows: number, cols: number): Promise<void> {
    const c = this.get(ref);
    if (!c.State.Running) throw new ConflictError(`Container ${c.Id} is not running`);
    if (!c.Config.Tty) return;
    await this.o.runtime.resize(this.bundleDir(c), rows, cols);
  }

  /**
   * Runs `fn` with the container's root filesystem mounted, for `docker cp`: a running container's
   * own mount, or (stopped) the same overlay mounted for the call and unmounted after it, under the
   * container's lock so that a start cannot happen meanwhile.
   */
  async withRootfs<T>(ref: string, fn: (rootfs: string) => Promise<T>): Promise<T> {
    const c = this.get(ref);
    const dir = this.bundleDir(c);
    const rootfs = join(dir, 'rootfs');
    if (c.State.Running) return fn(rootfs);
    return this.records.withLock(c.Id, 'a copy to or from its files', async () => {
      if (!this.containers.has(c.Id) || c.State.Status === 'removing') throw new NotFoundError(`No such container: ${ref}`);
      if (c.State.Running) return fn(rootfs);
      await mountOverlay(this.o.images.layerDirs(this.o.images.get(c.Image)), join(dir, 'diff'), join(dir, 'work'), rootfs);
      try {
        return await fn(rootfs);
      } finally {
        if (!c.State.Running) await unmount(rootfs);
      }
    });
  }

  /** The container's own layer and its image's layers, bottom last, for `docker diff`. */
  layerPaths(ref: string): { upper: string; lowers: string[] } {
    const c = this.get(ref);
    return { upper: join(this.bundleDir(c), 'diff'), lowers: this.o.images.layerDirs(this.o.images.get(c.Image)) };
  }

  /** Docker's SizeRw (the container's own layer) and SizeRootFs (that plus its image), for `size=true`. */
  async containerSizes(c: ContainerRecord): Promise<{ SizeRw: number; SizeRootFs: number }> {
    const rw = await dirSize(join(this.bundleDir(c), 'diff'));
    return { SizeRw: rw, SizeRootFs: rw + (this.o.images.find(c.Image)?.size ?? 0) };
  }

  /** POST /containers/{id}/wait. Registering happens synchronously, before any await. */
  wait(ref: string, condition: WaitCondition = 'not-running'): Promise<WaitResult> {
    return this.waits.wait(this.get(ref), condition);
  }

  /** Stops every container and frees every kernel object: used by `berthd --cleanup`. */
  async stopAllAndRelease(): Promise<void> {
    await Promise.all(this.list().filter((c) => c.State.Running).map(async (c) => {
      this.stoppedByUser(c);
      await this.stopRunning(c, 0).catch((e) => console.error(`berthd: stopping ${shortId(c.Id)}: ${errorMessage(e)}`));
    }));
  }
}
