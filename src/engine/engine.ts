import { promises as fs, readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { mountOverlay, mountsHolding, unmount } from '../kernel/mount.js';
import { containerResolvConf, hostsFile } from '../network/etcfiles.js';
import type { NetworkController } from '../network/controller.js';
import { portRequests } from '../network/ports.js';
import type { ImageStore } from '../images/types.js';
import type { AttachSession, ContainerRuntime } from '../runtime/runtime.js';
import { RuntimeCreateError } from '../runtime/conmon.js';
import { boundingCapabilities, buildSpec, capabilitySet } from '../runtime/spec.js';
import { ociSeccomp, parseSecurityOpt } from '../runtime/seccomp.js';
import { ociMounts, parseMounts, parseTmpfs, type MountSpec } from './mounts.js';
import { checkVolumeName, VolumeStore } from './volumes.js';
import { dirSize, resolveInRoot } from './archive.js';
import { afterProbe, probeCommand, timings, validateHealthcheck, type HealthConfig } from './health.js';
import { ociResources, ociRlimits, RESOURCE_FIELDS, validateResources, type ProcessLimits, type Resources } from './resources.js';
import { readJson, removeStaleTemps, writeJsonAtomic } from '../store/atomic.js';
import { runOk } from '../util/exec.js';
import { BadRequestError, ConflictError, NotFoundError, NotModifiedError, errorMessage } from '../util/errors.js';
import { newId, shortId } from '../util/ids.js';
import { EventBus } from './events.js';
import { randomName, VALID_NAME } from './names.js';
import { resolveUser } from './users.js';
import { normaliseCreateBody, type CreateBody } from './create.js';
import { ZERO_TIME, type ContainerRecord, type ContainerStatus, type HostConfig, type RestartPolicy } from './types.js';

export interface EngineOptions {
  root: string;
  images: ImageStore;
  runtime: ContainerRuntime;
  network: NetworkController;
  events: EventBus;
  /** The host's resolver configuration: upstream servers for containers (default /etc/resolv.conf). */
  hostResolvConf?: string;
}

type WaitCondition = 'not-running' | 'next-exit' | 'removed';

interface Waiter { condition: WaitCondition; resolve: (r: { StatusCode: number; Error: null | { Message: string } }) => void }

/** Docker's State.Status for an exit code a failed start leaves behind. */
function startFailureCode(message: string): number {
  if (/executable file not found|no such file or directory/i.test(message)) return 127;
  if (/permission denied/i.test(message)) return 126;
  return 128;
}

/** berthd's bounding set, read once: the capabilities a container can be given on this host. */
const AVAILABLE_CAPS = boundingCapabilities(readFileSync('/proc/self/status', 'utf8'));
const SIGNALS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, USR1: 10, USR2: 12, TERM: 15, STOP: 19, CONT: 18 };
function signalNumber(sig: string): number | string { return /^\d+$/.test(sig) ? Number(sig) : SIGNALS[sig] ?? sig; }

/**
 * The engine decides; drivers act. It owns the container records and their lifecycle, and is the
 * only place that changes them, one operation per container at a time.
 */
export class Engine {
  readonly containers = new Map<string, ContainerRecord>();
  private readonly names = new Map<string, string>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly waiters = new Map<string, Waiter[]>();
  /** Resolvers for "this run of the container has exited", keyed by id. */
  private readonly exitSignals = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  /** Attach sessions requested before start: connected right after the runtime creates the container. */
  private readonly pendingAttach = new Map<string, Array<(s: AttachSession | Error) => void>>();
  private readonly containersDir: string;

  readonly volumes: VolumeStore;

  constructor(private readonly o: EngineOptions) {
    this.containersDir = join(o.root, 'containers');
    this.volumes = new VolumeStore(join(o.root, 'volumes'));
  }

  get events(): EventBus { return this.o.events; }
  get images(): ImageStore { return this.o.images; }
  get network(): NetworkController { return this.o.network; }

  // ---------------------------------------------------------------- persistence and restore

  private dir(id: string): string { return join(this.containersDir, id); }

  private async save(c: ContainerRecord): Promise<void> {
    await writeJsonAtomic(join(this.dir(c.Id), 'container.json'), c);
  }

  /**
   * Loads every container and reconciles it with what the kernel and runtime say: a container the
   * store thinks is running but whose process is gone becomes exited, and whatever it held is freed.
   */
  async restore(): Promise<void> {
    await fs.mkdir(this.containersDir, { recursive: true, mode: 0o700 });
    await this.volumes.load();
    this.o.runtime.onExit((id, code) => { void this.handleExit(id, code); });
    for (const id of await fs.readdir(this.containersDir)) {
      await removeStaleTemps(this.dir(id));
      const c = await readJson<ContainerRecord>(join(this.dir(id), 'container.json'));
      if (!c) {
        // Created directory, crashed before the record was written: nothing else exists for it.
        await fs.rm(this.dir(id), { recursive: true, force: true });
        continue;
      }
      this.containers.set(c.Id, c);
      this.names.set(c.Name, c.Id);
      if (c.State.Status === 'removing') {
        await this.removeNow(c);
        continue;
      }
      if (c.State.Running) {
        const st = await this.o.runtime.state(c.Id);
        if (st && (st.status === 'running' || st.status === 'paused')) {
          this.exitSignals.set(c.Id, deferred());
          const code = await this.o.runtime.exitCode(c.Id);
          if (code !== undefined) await this.handleExit(c.Id, code);
          else this.watchHealth(c);
        } else {
          await this.handleExit(c.Id, (await this.o.runtime.exitCode(c.Id)) ?? 255);
        }
      } else if (c.NetnsPath) {
        await this.releaseResources(c);
        await this.save(c);
      }
    }
  }

  // ---------------------------------------------------------------- lookup

  /** Finds a container by full id, name (with or without "/") or unique id prefix, as Docker does. */
  find(ref: string): ContainerRecord | undefined {
    const byId = this.containers.get(ref);
    if (byId) return byId;
    const byName = this.names.get(ref.startsWith('/') ? ref : `/${ref}`);
    if (byName) return this.containers.get(byName);
    if (!/^[0-9a-f]+$/.test(ref)) return undefined;
    const matches = [...this.containers.values()].filter((c) => c.Id.startsWith(ref));
    if (matches.length > 1) throw new BadRequestError(`Multiple IDs found with provided prefix: ${ref}`);
    return matches[0];
  }

  get(ref: string): ContainerRecord {
    const c = this.find(ref);
    if (!c) throw new NotFoundError(`No such container: ${ref}`);
    return c;
  }

  list(): ContainerRecord[] {
    return [...this.containers.values()].sort((a, b) => b.Created.localeCompare(a.Created));
  }

  imageInUse(imageId: string): string | undefined {
    for (const c of this.containers.values()) if (c.Image === imageId) return c.Id;
    return undefined;
  }

  /** Serialises operations on one container: start, stop and remove never interleave. */
  private async withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.locks.set(id, settled);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === settled) this.locks.delete(id);
    }
  }

  /**
   * A container event with Docker's attributes: the container's labels, image and name, so that
   * `events --filter label=…` (compose, testcontainers) matches every event of a labelled container.
   */
  containerEvent(c: ContainerRecord, action: string, extra: Record<string, string> = {}): void {
    this.o.events.emit('container', action, c.Id, { ...(c.Config.Labels ?? {}), image: c.Config.Image, name: c.Name.slice(1), ...extra });
  }

  // ---------------------------------------------------------------- create

  async create(rawBody: unknown, nameParam: string | undefined): Promise<{ Id: string; Warnings: string[] }> {
    const body: CreateBody = normaliseCreateBody(rawBody);
    let name: string;
    if (nameParam) {
      if (!VALID_NAME.test(nameParam)) {
        throw new BadRequestError(`Invalid container name (${nameParam}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
      }
      name = nameParam.startsWith('/') ? nameParam : `/${nameParam}`;
    } else {
      name = `/${randomName((n) => this.names.has(`/${n}`))}`;
    }
    const holder = this.names.get(name);
    if (holder) {
      throw new ConflictError(`Conflict. The container name "${name}" is already in use by container "${holder}". You have to remove (or rename) that container to be able to reuse that name.`);
    }
    if (!body.Image) throw new BadRequestError('Config.Image: image name must be given');
    const image = this.o.images.find(body.Image);
    if (!image) throw new NotFoundError(`No such image: ${body.Image}`);
    const mode = body.HostConfig.NetworkMode || 'default';
    this.o.network.validateMode(mode);
    let sharedWith: ContainerRecord | undefined;
    if (mode.startsWith('container:')) {
      sharedWith = this.find(mode.slice('container:'.length));
      if (!sharedWith) throw new NotFoundError(`No such container: ${mode.slice('container:'.length)}`);
      if (body.Hostname) throw new BadRequestError('conflicting options: hostname and the network mode');
    }
    portRequests(body.HostConfig.PortBindings ?? {});
    const endpoints = this.o.network.initialEndpoints(mode, body.NetworkingConfig?.EndpointsConfig ?? {}, body.MacAddress);

    const imgCfg = image.config.config ?? {};
    // An explicit entrypoint resets the image's Cmd, as in Docker.
    const entrypoint = body.Entrypoint !== undefined ? nonEmpty(body.Entrypoint) : imgCfg.Entrypoint ?? null;
    const cmd = body.Cmd !== undefined ? nonEmpty(body.Cmd) : body.Entrypoint !== undefined ? null : imgCfg.Cmd ?? null;
    const argv = [...(entrypoint ?? []), ...(cmd ?? [])];
    if (argv.length === 0) throw new BadRequestError('No command specified');

    const id = newId();
    const env = mergeEnv(imgCfg.Env ?? [], body.Env ?? []);
    validateHealthcheck((body as { Healthcheck?: unknown }).Healthcheck);
    // Last, once everything else is checked: a refused create leaves no volume behind.
    const anonymousVolumes = await this.createVolumes(body.HostConfig, body.Volumes ?? imgCfg.Volumes ?? null);
    // The image's HEALTHCHECK unless the request sets one; a Test of its own replaces the image's.
    const healthcheck = { ...((imgCfg as { Healthcheck?: HealthConfig }).Healthcheck ?? {}), ...((body as { Healthcheck?: HealthConfig }).Healthcheck ?? {}) } as HealthConfig;
    if (!healthcheck.Test?.length) delete healthcheck.Test;
    const c: ContainerRecord = {
      Id: id,
      Created: new Date().toISOString(),
      Path: argv[0]!,
      Args: argv.slice(1),
      Name: name,
      Image: image.id,
      Config: {
        Hostname: body.Hostname || (mode === 'host' ? osHostname() : sharedWith ? sharedWith.Config.Hostname : id.slice(0, 12)),
        Domainname: body.Domainname ?? '',
        User: body.User ?? imgCfg.User ?? '',
        AttachStdin: body.AttachStdin ?? false,
        AttachStdout: body.AttachStdout ?? false,
        AttachStderr: body.AttachStderr ?? false,
        ExposedPorts: { ...(imgCfg.ExposedPorts ?? {}), ...(body.ExposedPorts ?? {}) },
        Tty: body.Tty ?? false,
        OpenStdin: body.OpenStdin ?? false,
        StdinOnce: body.StdinOnce ?? false,
        Env: env,
        Cmd: cmd,
        Image: body.Image,
        Volumes: body.Volumes ?? imgCfg.Volumes ?? null,
        WorkingDir: body.WorkingDir || imgCfg.WorkingDir || '',
        Entrypoint: entrypoint,
        OnBuild: null,
        Labels: { ...(imgCfg.Labels ?? {}), ...(body.Labels ?? {}) },
        ...(body.StopSignal || imgCfg.StopSignal ? { StopSignal: body.StopSignal || imgCfg.StopSignal } : {}),
        ...(body.StopTimeout !== undefined ? { StopTimeout: body.StopTimeout } : {}),
        ...(Object.keys(healthcheck).length ? { Healthcheck: healthcheck } : {}),
      },
      HostConfig: { ...body.HostConfig, NetworkMode: sharedWith ? `container:${sharedWith.Id}` : mode },
      NetworkingConfig: { EndpointsConfig: body.NetworkingConfig?.EndpointsConfig ?? {} },
      State: {
        Status: 'created', Running: false, Paused: false, Restarting: false, OOMKilled: false, Dead: false,
        Pid: 0, ExitCode: 0, Error: '', StartedAt: ZERO_TIME, FinishedAt: ZERO_TIME,
      },
      RestartCount: 0,
      ManuallyStopped: false,
      NetnsPath: '',
      Endpoints: endpoints,
      ...(Object.keys(anonymousVolumes).length ? { AnonymousVolumes: anonymousVolumes } : {}),
    };
    await fs.mkdir(this.dir(id), { recursive: true, mode: 0o700 });
    await this.save(c);
    this.containers.set(id, c);
    this.names.set(name, id);
    this.containerEvent(c, 'create');
    const warnings: string[] = [];
    if (mode === 'host' && (Object.keys(body.HostConfig.PortBindings ?? {}).length || body.HostConfig.PublishAllPorts)) {
      warnings.push('Published ports are discarded when using host network mode');
    }
    return { Id: id, Warnings: warnings };
  }

  // ---------------------------------------------------------------- start

  async start(ref: string): Promise<void> {
    const c = this.get(ref);
    await this.withLock(c.Id, () => this.startLocked(c));
  }

  private async startLocked(c: ContainerRecord): Promise<void> {
    if (c.State.Status === 'removing' || !this.containers.has(c.Id)) {
      throw new ConflictError(`container ${c.Id} is marked for removal and cannot be started`);
    }
    if (c.State.Running) throw new NotModifiedError();
    const dir = this.dir(c.Id);
    const rootfs = join(dir, 'rootfs');
    await this.o.runtime.clearExit(c.Id);
    let created = false;
    try {
      const image = this.o.images.get(c.Image);
      const mode = c.HostConfig.NetworkMode;
      const sharedWith = mode.startsWith('container:') ? this.get(mode.slice('container:'.length)) : undefined;
      // The root filesystem and the network sandbox need nothing of each other: both at once. Both
      // settle before a failure is thrown, so the cleanup below never races a half-done one.
      const [mounted, networked] = await Promise.allSettled([
        mountOverlay(this.o.images.layerDirs(image), join(dir, 'diff'), join(dir, 'work'), rootfs),
        this.o.network.setUp(c, sharedWith),
      ]);
      if (mounted.status === 'rejected') throw mounted.reason;
      if (networked.status === 'rejected') throw networked.reason;
      const sandbox = networked.value;
      c.NetnsPath = sandbox.netnsPath ?? '';
      c.Published = await this.o.network.publish(c);
      const etc = sharedWith
        ? { hosts: join(this.dir(sharedWith.Id), 'hosts'), hostname: join(this.dir(sharedWith.Id), 'hostname'), resolvConf: join(this.dir(sharedWith.Id), 'resolv.conf') }
        : await this.writeEtcFiles(c, sandbox.addresses, sandbox.shareHostNetwork, sandbox.embeddedDns);
      const user = await resolveUser(rootfs, c.Config.User);
      const env = [...c.Config.Env];
      // Docker gives every container a PATH when neither the image nor the user set one.
      if (!env.some((e) => e.startsWith('PATH='))) env.unshift('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
      if (!env.some((e) => e.startsWith('HOSTNAME='))) env.push(`HOSTNAME=${c.Config.Hostname}`);
      if (c.Config.Tty && !env.some((e) => e.startsWith('TERM='))) env.push('TERM=xterm');
      const binds = this.containerMounts(c);
      // Docker makes a missing -v source directory; a --mount source was checked at create.
      for (const b of parseMounts(c.HostConfig.Binds, null)) if (b.Type === 'bind') await fs.mkdir(b.Source, { recursive: true });
      await this.fillNewVolumes(rootfs, binds);
      const security = parseSecurityOpt((c.HostConfig as { SecurityOpt?: string[] | null }).SecurityOpt);
      const caps = capabilitySet(c.HostConfig.Privileged, c.HostConfig.CapAdd ?? [], c.HostConfig.CapDrop ?? [], AVAILABLE_CAPS);
      const spec = buildSpec({
        args: [c.Path, ...c.Args], env, cwd: c.Config.WorkingDir || '/', user, tty: c.Config.Tty,
        hostname: c.Config.Hostname, rootfs, netnsPath: sandbox.netnsPath, etcFiles: etc,
        cgroupsPath: `/berth/${c.Id}`, privileged: c.HostConfig.Privileged,
        capabilities: caps,
        readonlyRootfs: c.HostConfig.ReadonlyRootfs,
        extraMounts: ociMounts([...binds, ...parseTmpfs((c.HostConfig as { Tmpfs?: Record<string, string> }).Tmpfs)]),
        resources: ociResources(c.HostConfig as Resources),
        rlimits: ociRlimits(c.HostConfig as ProcessLimits),
        sysctl: (c.HostConfig as ProcessLimits).Sysctls ?? undefined,
        shmSize: (c.HostConfig as ProcessLimits).ShmSize ?? undefined,
        seccomp: ociSeccomp(security.seccomp, caps, c.HostConfig.Privileged),
        noNewPrivileges: security.noNewPrivileges,
      });
      if (c.Config.WorkingDir) await fs.mkdir(join(rootfs, c.Config.WorkingDir), { recursive: true });
      await fs.writeFile(join(dir, 'config.json'), JSON.stringify(spec));
      this.exitSignals.set(c.Id, deferred());
      const keepMounts = [rootfs, ...(await mountsHolding(this.o.root, [sandbox.netnsPath ?? '', ...binds.map((b) => b.Source)]))];
      const pid = await this.o.runtime.create({
        id: c.Id, name: c.Name.slice(1), bundle: dir, logPath: this.logPath(c),
        tty: c.Config.Tty, openStdin: c.Config.OpenStdin, leaveStdinOpen: c.Config.OpenStdin && !c.Config.StdinOnce,
        keepMounts,
      });
      created = true;
      await this.connectPendingAttach(c);
      await this.o.runtime.start(c.Id);
      Object.assign(c.State, {
        Status: 'running', Running: true, Restarting: false, Pid: pid, ExitCode: 0, Error: '',
        StartedAt: new Date().toISOString(), FinishedAt: ZERO_TIME,
      });
      c.ManuallyStopped = false;
      if (probeCommand(c.Config.Healthcheck)) c.State.Health = { Status: 'starting', FailingStreak: 0, Log: [] };
      else delete c.State.Health;
      await this.save(c);
      this.containerEvent(c, 'start');
      this.watchHealth(c);
    } catch (e) {
      const message = errorMessage(e);
      this.failPendingAttach(c, e as Error);
      this.exitSignals.get(c.Id)?.resolve();
      this.exitSignals.delete(c.Id);
      if (created) await this.o.runtime.kill(c.Id, 'KILL').catch(() => undefined);
      await this.o.runtime.delete(c.Id).catch(() => undefined);
      await this.releaseResources(c);
      c.State.Error = message;
      c.State.ExitCode = startFailureCode(message);
      if (c.State.Status !== 'created') c.State.Status = 'exited';
      c.State.Running = false;
      c.State.Pid = 0;
      await this.save(c);
      // Docker removes an auto-remove container whose start failed; `docker run --rm` waits for it.
      if (c.HostConfig.AutoRemove) {
        await this.removeNow(c).catch(() => undefined);
        await this.removeAnonymousVolumes(c);
      }
      if (e instanceof RuntimeCreateError) {
        const code = c.State.ExitCode;
        const status = code === 127 || code === 126 ? 400 : 500;
        throw Object.assign(new BadRequestError(`OCI runtime create failed: ${message}: unknown`), { status });
      }
      throw e;
    }
  }

  logPath(c: ContainerRecord): string {
    return join(this.dir(c.Id), `${c.Id}-json.log`);
  }

  private async writeEtcFiles(c: ContainerRecord, addresses: string[], shareHost: boolean, embeddedDns: boolean) {
    const dir = this.dir(c.Id);
    const files = { hosts: join(dir, 'hosts'), hostname: join(dir, 'hostname'), resolvConf: join(dir, 'resolv.conf') };
    let hosts: string;
    if (shareHost) {
      hosts = await fs.readFile('/etc/hosts', 'utf8').catch(() => hostsFile({ hostname: c.Config.Hostname, addresses: [], extraHosts: [] }));
      for (const h of c.HostConfig.ExtraHosts ?? []) {
        const i = h.indexOf(':');
        if (i > 0) hosts += `${h.slice(i + 1)}\t${h.slice(0, i)}\n`;
      }
    } else {
      hosts = hostsFile({ hostname: c.Config.Hostname, domainname: c.Config.Domainname, addresses, extraHosts: [...(c.HostConfig.ExtraHosts ?? []), ...this.linkHosts(c)] });
    }
    const resolv = await this.resolvConf(c, shareHost, embeddedDns);
    await Promise.all([
      fs.writeFile(files.hosts, hosts),
      fs.writeFile(files.hostname, `${c.Config.Hostname}\n`),
      fs.writeFile(files.resolvConf, resolv),
    ]);
    return files;
  }

  /** Rewrites resolv.conf in place: the container sees it through a bind mount of this very file. */
  private async rewriteResolvConf(c: ContainerRecord): Promise<void> {
    await fs.writeFile(join(this.dir(c.Id), 'resolv.conf'), await this.resolvConf(c, false, this.o.network.usesEmbeddedDns(c)));
  }

  private resolvConf(c: ContainerRecord, shareHostNetwork: boolean, embeddedDns: boolean): Promise<string> {
    return containerResolvConf({
      dns: c.HostConfig.Dns ?? [], dnsSearch: c.HostConfig.DnsSearch ?? [], dnsOptions: c.HostConfig.DnsOptions ?? [],
      shareHostNetwork, embeddedDns, ...(this.o.hostResolvConf ? { hostResolvConf: this.o.hostResolvConf } : {}),
    });
  }

  /** Legacy --link on the default bridge: NAME:IP lines for each linked container and its alias. */
  private linkHosts(c: ContainerRecord): string[] {
    const out: string[] = [];
    for (const link of c.HostConfig.Links ?? []) {
      const [target, alias] = link.split(':') as [string, string | undefined];
      const other = this.find(target.replace(/^\//, ''));
      if (!other?.State.Running) continue;
      const ip = Object.values(other.Endpoints ?? {}).find((e) => e.IPAddress)?.IPAddress;
      if (!ip) continue;
      const aliasName = alias ? alias.split('/').pop()! : '';
      const names = [aliasName, other.Id.slice(0, 12), other.Name.slice(1)].filter((x, i, a) => x && a.indexOf(x) === i);
      out.push(`${names.join(' ')}:${ip}`);
    }
    return out;
  }

  // ---------------------------------------------------------------- networks

  async connect(ref: string, networkRef: string, cfg: Record<string, unknown>): Promise<void> {
    const c = this.get(ref);
    const n = this.o.network.get(networkRef);
    await this.withLock(c.Id, async () => {
      const hadEmbeddedDns = this.o.network.usesEmbeddedDns(c);
      await this.o.network.connect(c, n, cfg);
      await this.save(c);
      // Like Docker's sandbox, which starts its resolver when the first endpoint that needs one
      // joins: a container started on the default bridge learns names once it joins a user network.
      if (c.State.Running && !hadEmbeddedDns && this.o.network.usesEmbeddedDns(c)) await this.rewriteResolvConf(c);
    });
    this.o.events.emit('network', 'connect', n.Id, { container: c.Id, name: n.Name, type: n.Driver });
  }

  async disconnect(ref: string, networkRef: string, force: boolean): Promise<void> {
    const n = this.o.network.get(networkRef);
    const c = this.find(ref);
    if (!c) {
      if (force) return;
      throw new NotFoundError(`No such container: ${ref}`);
    }
    await this.withLock(c.Id, async () => {
      await this.o.network.disconnect(c, n);
      await this.save(c);
    });
    this.o.events.emit('network', 'disconnect', n.Id, { container: c.Id, name: n.Name, type: n.Driver });
  }

  /**
   * Runs `fn` with the container's root filesystem mounted, for `docker cp`: a running container's
   * own mount, or (stopped) the same overlay mounted for the call and unmounted after it, under the
   * container's lock so that a start cannot happen meanwhile.
   */
  async withRootfs<T>(ref: string, fn: (rootfs: string) => Promise<T>): Promise<T> {
    const c = this.get(ref);
    const rootfs = join(this.dir(c.Id), 'rootfs');
    if (c.State.Running) return fn(rootfs);
    return this.withLock(c.Id, async () => {
      if (!this.containers.has(c.Id) || c.State.Status === 'removing') throw new NotFoundError(`No such container: ${ref}`);
      if (c.State.Running) return fn(rootfs);
      const dir = this.dir(c.Id);
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
    return { upper: join(this.dir(c.Id), 'diff'), lowers: this.o.images.layerDirs(this.o.images.get(c.Image)) };
  }

  // ---------------------------------------------------------------- volumes

  /**
   * Named volumes a create mentions are made if missing (as Docker does); each anonymous one
   * (`--mount type=volume` without a source, `-v /path`, the image's VOLUME) gets a new volume.
   * Returns destination → name of the anonymous ones, which the container record keeps.
   */
  private async createVolumes(hc: HostConfig, configVolumes: Record<string, object> | null): Promise<Record<string, string>> {
    const mounts = parseMounts(hc.Binds, (hc as { Mounts?: unknown }).Mounts);
    for (const m of mounts) if (m.Type === 'volume' && m.Name) checkVolumeName(m.Name);
    for (const m of mounts) {
      if (m.Type === 'volume' && m.Name) {
        const { created, volume } = await this.volumes.create({ Name: m.Name });
        if (created) this.o.events.emit('volume', 'create', volume.Name, { driver: 'local' });
      }
    }
    const anonymous: Record<string, string> = {};
    const taken = new Set(mounts.filter((m) => m.Type === 'bind' || m.Name).map((m) => m.Destination));
    const wanted = [...mounts.filter((m) => m.Type === 'volume' && !m.Name).map((m) => m.Destination), ...Object.keys(configVolumes ?? {})];
    for (const dest of wanted) {
      if (taken.has(dest) || anonymous[dest]) continue;
      const { volume } = await this.volumes.create({ anonymous: true });
      this.o.events.emit('volume', 'create', volume.Name, { driver: 'local' });
      anonymous[dest] = volume.Name;
    }
    return anonymous;
  }

  /** Every mount of the container with its host path: binds, named volumes and its anonymous ones. */
  containerMounts(c: ContainerRecord): MountSpec[] {
    const anon = { ...(c.AnonymousVolumes ?? {}) };
    const out = parseMounts(c.HostConfig.Binds, (c.HostConfig as { Mounts?: unknown }).Mounts).map((m) => {
      if (m.Type !== 'volume') return m;
      const name = m.Name || anon[m.Destination] || '';
      delete anon[m.Destination];
      return { ...m, Name: name, Source: name ? this.volumes.mountpoint(name) : '' };
    }).filter((m) => m.Type === 'tmpfs' || m.Source);
    for (const [dest, name] of Object.entries(anon)) {
      if (out.some((m) => m.Destination === dest)) continue;
      out.push({ Type: 'volume', Name: name, Source: this.volumes.mountpoint(name), Destination: dest, Mode: '', RW: true, Propagation: '' });
    }
    return out;
  }

  /** Docker's SizeRw (the container's own layer) and SizeRootFs (that plus its image), for `size=true`. */
  async containerSizes(c: ContainerRecord): Promise<{ SizeRw: number; SizeRootFs: number }> {
    const rw = await dirSize(join(this.dir(c.Id), 'diff'));
    return { SizeRw: rw, SizeRootFs: rw + (this.o.images.find(c.Image)?.size ?? 0) };
  }

  /** Ids of the containers (any state) that mount a volume: such a volume cannot be removed. */
  volumeUsers(name: string): string[] {
    return this.list().filter((c) => this.containerMounts(c).some((m) => m.Type === 'volume' && m.Name === name)).map((c) => c.Id);
  }

  /**
   * Docker copies what the image has at a volume's destination into the volume when the volume is
   * still empty (unless nocopy), so `-v data:/etc/app` starts with the image's files.
   */
  private async fillNewVolumes(rootfs: string, mounts: MountSpec[]): Promise<void> {
    for (const m of mounts) {
      if (m.Type !== 'volume' || m.NoCopy || !m.Name || !(await this.volumes.isEmpty(m.Name))) continue;
      const from = await resolveInRoot(rootfs, m.Destination);
      const st = await fs.stat(from).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      await runOk('cp', ['-a', '--', `${from}/.`, m.Source]);
    }
  }

  /** `rm -v`: the anonymous volumes go with the container; named ones stay, as with Docker. */
  private async removeAnonymousVolumes(c: ContainerRecord): Promise<void> {
    for (const name of Object.values(c.AnonymousVolumes ?? {})) {
      if (!this.volumes.find(name) || this.volumeUsers(name).length) continue;
      await this.volumes.remove(name, []).catch((e) => console.error(`berthd: removing volume ${name}: ${errorMessage(e)}`));
      this.o.events.emit('volume', 'destroy', name, { driver: 'local' });
    }
  }

  // ---------------------------------------------------------------- health checks

  private readonly healthTimers = new Map<string, NodeJS.Timeout>();

  /** Runs the container's health probe every Interval while this run lasts (Docker's monitor). */
  private watchHealth(c: ContainerRecord): void {
    const argv = probeCommand(c.Config.Healthcheck);
    if (!argv) return;
    this.unwatchHealth(c.Id);
    const t = timings(c.Config.Healthcheck!);
    const startedAt = c.State.StartedAt;
    const tick = async () => {
      const cur = this.containers.get(c.Id);
      if (!cur?.State.Running || cur.State.StartedAt !== startedAt) return;
      if (!cur.State.Paused) await this.probe(cur, argv, t.timeoutMs).catch((e) => console.error(`berthd: health check ${shortId(c.Id)}: ${errorMessage(e)}`));
      if (this.healthTimers.has(c.Id) && cur.State.Running && cur.State.StartedAt === startedAt) {
        this.healthTimers.set(c.Id, setTimeout(() => void tick(), t.intervalMs));
      }
    };
    this.healthTimers.set(c.Id, setTimeout(() => void tick(), t.intervalMs));
  }

  private unwatchHealth(id: string): void {
    clearTimeout(this.healthTimers.get(id));
    this.healthTimers.delete(id);
  }

  private async probe(c: ContainerRecord, argv: string[], timeoutMs: number): Promise<void> {
    const start = new Date();
    let output = '';
    let exitCode: number;
    try {
      const user = await resolveUser(join(this.dir(c.Id), 'rootfs'), c.Config.User);
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
    if (!this.healthTimers.has(c.Id) || !c.State.Running || !c.State.Health) return;
    const before = c.State.Health.Status;
    c.State.Health = afterProbe(c.State.Health, { Start: start.toISOString(), End: new Date().toISOString(), ExitCode: exitCode, Output: output },
      start.getTime() - Date.parse(c.State.StartedAt), c.Config.Healthcheck!);
    await this.save(c);
    if (c.State.Health.Status !== before) this.containerEvent(c, `health_status: ${c.State.Health.Status}`);
  }

  /** Frees what a run held: rootfs mount and network namespace. Safe to call twice. */
  private async releaseResources(c: ContainerRecord): Promise<void> {
    const errors: string[] = [];
    await this.o.network.tearDown(c).catch((e) => errors.push(errorMessage(e)));
    c.NetnsPath = '';
    c.Published = [];
    await unmount(join(this.dir(c.Id), 'rootfs')).catch((e) => errors.push(errorMessage(e)));
    if (errors.length) console.error(`berthd: releasing ${shortId(c.Id)}: ${errors.join('; ')}`);
  }

  // ---------------------------------------------------------------- exit handling

  private async handleExit(id: string, code: number): Promise<void> {
    const c = this.containers.get(id);
    // A process can exit before start() has marked it running (`run --rm busybox true`): the
    // start holds the lock, so queue behind it rather than lose the exit.
    if (!c || (!c.State.Running && !this.exitSignals.has(id))) return;
    // The exit directory can report one exit twice; only the call that recorded it goes on.
    let recorded = false;
    await this.withLock(id, async () => {
      if (!c.State.Running) return;
      recorded = true;
      await this.o.runtime.delete(id).catch((e) => console.error(`berthd: runc delete ${shortId(id)}: ${errorMessage(e)}`));
      await this.releaseResources(c);
      Object.assign(c.State, {
        Status: 'exited' as ContainerStatus, Running: false, Paused: false, Restarting: false, Pid: 0, ExitCode: code,
        FinishedAt: new Date().toISOString(),
      });
      await this.save(c);
      this.exitSignals.get(id)?.resolve();
      this.exitSignals.delete(id);
    });
    if (!recorded) return;
    this.unwatchHealth(id);
    this.containerEvent(c, 'die', { exitCode: String(code) });
    this.notifyWaiters(c, ['not-running', 'next-exit']);
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

  private notifyWaiters(c: ContainerRecord, conditions: WaitCondition[]): void {
    const list = this.waiters.get(c.Id);
    if (!list) return;
    const keep: Waiter[] = [];
    for (const w of list) {
      if (conditions.includes(w.condition)) {
        w.resolve({ StatusCode: c.State.ExitCode, Error: c.State.Error ? { Message: c.State.Error } : null });
      } else keep.push(w);
    }
    if (keep.length) this.waiters.set(c.Id, keep); else this.waiters.delete(c.Id);
  }

  /** POST /containers/{id}/wait. Registering happens synchronously, before any await. */
  wait(ref: string, condition: WaitCondition = 'not-running'): Promise<{ StatusCode: number; Error: null | { Message: string } }> {
    const c = this.get(ref);
    if (condition === 'not-running' && !c.State.Running) {
      return Promise.resolve({ StatusCode: c.State.ExitCode, Error: null });
    }
    return new Promise((resolve) => {
      const list = this.waiters.get(c.Id) ?? [];
      list.push({ condition, resolve });
      this.waiters.set(c.Id, list);
    });
  }

  // ---------------------------------------------------------------- stop / kill / restart

  async stop(ref: string, timeoutSec?: number): Promise<void> {
    const c = this.get(ref);
    if (!c.State.Running) throw new NotModifiedError();
    c.ManuallyStopped = true;
    const t = timeoutSec ?? c.Config.StopTimeout ?? 10;
    await this.stopRunning(c, t);
    this.containerEvent(c, 'stop');
  }

  private async stopRunning(c: ContainerRecord, timeoutSec: number): Promise<void> {
    const exited = this.exitSignals.get(c.Id)?.promise ?? Promise.resolve();
    await this.thaw(c);
    if (timeoutSec !== 0) {
      await this.o.runtime.kill(c.Id, c.Config.StopSignal || 'SIGTERM');
      // A negative timeout waits for as long as the process takes, as in Docker.
      if (timeoutSec < 0) await exited;
      if (timeoutSec < 0 || (await raceTimeout(exited, timeoutSec * 1000))) return void (await this.exitSettled(c));
    }
    await this.o.runtime.kill(c.Id, 'KILL');
    await exited;
    await this.exitSettled(c);
  }

  /** Waits until handleExit has finished its bookkeeping for the current run. */
  private async exitSettled(c: ContainerRecord): Promise<void> {
    await (this.locks.get(c.Id) ?? Promise.resolve());
  }

  async kill(ref: string, signal = 'KILL'): Promise<void> {
    const c = this.get(ref);
    if (!c.State.Running) {
      throw new ConflictError(`Cannot kill container: ${ref}: Container ${c.Id} is not running`);
    }
    const sig = /^\d+$/.test(signal) ? signal : signal.toUpperCase().replace(/^SIG/, '');
    if (sig === 'KILL' || sig === '9') c.ManuallyStopped = true;
    await this.o.runtime.kill(c.Id, sig);
    if (sig === 'KILL' || sig === '9') await this.thaw(c);
    this.containerEvent(c, 'kill', { signal: String(signalNumber(sig)) });
  }

  async pause(ref: string): Promise<void> {
    const c = this.get(ref);
    await this.withLock(c.Id, async () => {
      if (!c.State.Running) throw new ConflictError(`Container ${c.Id} is not running`);
      if (c.State.Paused) throw new ConflictError(`Container ${c.Id} is already paused`);
      await this.o.runtime.pause(c.Id);
      Object.assign(c.State, { Paused: true, Status: 'paused' as ContainerStatus });
      await this.save(c);
    });
    this.containerEvent(c, 'pause');
  }

  async unpause(ref: string): Promise<void> {
    const c = this.get(ref);
    await this.withLock(c.Id, async () => {
      if (!c.State.Paused) throw new ConflictError(`Container ${c.Id} is not paused`);
      await this.thaw(c);
    });
    this.containerEvent(c, 'unpause');
  }

  /** A frozen process never handles a signal, not even SIGKILL: stop, kill and rm thaw it first, as Docker does. */
  private async thaw(c: ContainerRecord): Promise<void> {
    if (!c.State.Paused) return;
    await this.o.runtime.resume(c.Id);
    Object.assign(c.State, { Paused: false, Status: (c.State.Running ? 'running' : c.State.Status) as ContainerStatus });
    await this.save(c);
  }

  /**
   * POST /containers/{id}/update: the restart policy and the resource limits berth applies (a
   * running container's cgroup changes at once through `runc update`). As in Docker, a zero or empty
   * field means "leave as it is"; fields berth cannot apply are refused rather than ignored.
   */
  async update(ref: string, body: Record<string, unknown>): Promise<{ Warnings: string[] }> {
    const c = this.get(ref);
    const given = Object.entries(body).filter(([, v]) => v !== null && v !== undefined && v !== 0 && v !== '' && !(Array.isArray(v) && v.length === 0));
    const unsupported = given.filter(([k]) => k !== 'RestartPolicy' && !(RESOURCE_FIELDS as readonly string[]).includes(k));
    if (unsupported.length) throw new BadRequestError(`berth does not support updating ${unsupported.map(([k]) => k).join(', ')}`);
    const limits = Object.fromEntries(given.filter(([k]) => k !== 'RestartPolicy')) as Resources;
    const merged = { ...(c.HostConfig as Resources), ...limits };
    validateResources(merged);
    const rp = body.RestartPolicy as Record<string, unknown> | undefined;
    let policy: RestartPolicy | undefined;
    if (rp !== undefined && rp !== null && (rp.Name || rp.MaximumRetryCount)) {
      if (typeof rp !== 'object' || (rp.Name !== undefined && typeof rp.Name !== 'string') || (rp.MaximumRetryCount !== undefined && typeof rp.MaximumRetryCount !== 'number')) {
        throw new BadRequestError('invalid type for field RestartPolicy');
      }
      const name = (rp.Name as string | undefined) || 'no';
      if (!['no', 'always', 'unless-stopped', 'on-failure'].includes(name)) throw new BadRequestError(`invalid restart policy '${name}'`);
      const max = (rp.MaximumRetryCount as number | undefined) ?? 0;
      if (name !== 'on-failure' && max !== 0) throw new BadRequestError(`maximum retry count cannot be used with restart policy '${name}'`);
      if (c.HostConfig.AutoRemove && name !== 'no') {
        throw new ConflictError('Restart policy cannot be updated because AutoRemove is enabled for the container');
      }
      policy = { Name: name, MaximumRetryCount: max };
    }
    await this.withLock(c.Id, async () => {
      if (Object.keys(limits).length && c.State.Running) {
        await this.o.runtime.update(c.Id, ociResources(merged)).catch((e) => {
          throw new BadRequestError(`Cannot update container ${c.Id}: ${errorMessage(e)}`);
        });
      }
      Object.assign(c.HostConfig, limits);
      if (policy) c.HostConfig.RestartPolicy = policy;
      await this.save(c);
    });
    this.containerEvent(c, 'update');
    return { Warnings: [] };
  }

  async restart(ref: string, timeoutSec?: number): Promise<void> {
    const c = this.get(ref);
    if (c.State.Running) {
      c.ManuallyStopped = true;
      await this.stopRunning(c, timeoutSec ?? c.Config.StopTimeout ?? 10);
    }
    await this.start(c.Id);
    this.containerEvent(c, 'restart');
  }

  // ---------------------------------------------------------------- remove

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
      await (this.exitSignals.get(c.Id)?.promise ?? Promise.resolve());
      await this.exitSettled(c);
    }
    await this.withLock(c.Id, async () => {
      if (!this.containers.has(c.Id)) return;
      c.State.Status = 'removing';
      await this.save(c);
      await this.removeNow(c);
    });
    if (opts.volumes) await this.removeAnonymousVolumes(c);
  }

  private async removeNow(c: ContainerRecord): Promise<void> {
    await this.o.runtime.delete(c.Id).catch(() => undefined);
    await this.releaseResources(c);
    await this.o.runtime.clearExit(c.Id);
    await fs.rm(this.dir(c.Id), { recursive: true, force: true });
    this.containers.delete(c.Id);
    if (this.names.get(c.Name) === c.Id) this.names.delete(c.Name);
    this.containerEvent(c, 'destroy');
    this.notifyWaiters(c, ['not-running', 'next-exit', 'removed']);
  }

  async rename(ref: string, newName: string): Promise<void> {
    const c = this.get(ref);
    if (!VALID_NAME.test(newName)) {
      throw new BadRequestError(`Invalid container name (${newName}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
    }
    const name = newName.startsWith('/') ? newName : `/${newName}`;
    const holder = this.names.get(name);
    if (holder && holder !== c.Id) {
      throw new ConflictError(`Conflict. The container name "${name}" is already in use by container "${holder}". You have to remove (or rename) that container to be able to reuse that name.`);
    }
    this.names.delete(c.Name);
    const old = c.Name;
    c.Name = name;
    this.names.set(name, c.Id);
    this.o.network.namesChanged(c);
    await this.save(c);
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

  // ---------------------------------------------------------------- attach

  /**
   * Attaches to a container's stdio. Before start, the session is connected as soon as the runtime
   * has created the container and before its process runs, so no early output is lost.
   */
  attach(ref: string): Promise<AttachSession> {
    const c = this.get(ref);
    if (c.State.Running) return this.o.runtime.attach(this.dir(c.Id));
    if (c.State.Status === 'created' || c.State.Status === 'exited') {
      return new Promise((resolve, reject) => {
        const list = this.pendingAttach.get(c.Id) ?? [];
        list.push((s) => (s instanceof Error ? reject(s) : resolve(s)));
        this.pendingAttach.set(c.Id, list);
      });
    }
    throw new ConflictError('You cannot attach to a stopped container, start it first');
  }

  cancelPendingAttach(ref: string): void {
    const c = this.find(ref);
    if (c) this.failPendingAttach(c, new Error('attach cancelled'));
  }

  private async connectPendingAttach(c: ContainerRecord): Promise<void> {
    const list = this.pendingAttach.get(c.Id);
    if (!list) return;
    this.pendingAttach.delete(c.Id);
    await Promise.all(list.map(async (cb) => {
      try { cb(await this.o.runtime.attach(this.dir(c.Id))); } catch (e) { cb(e as Error); }
    }));
  }

  private failPendingAttach(c: ContainerRecord, e: Error): void {
    const list = this.pendingAttach.get(c.Id);
    this.pendingAttach.delete(c.Id);
    for (const cb of list ?? []) cb(e);
  }

  async resize(ref: string, rows: number, cols: number): Promise<void> {
    const c = this.get(ref);
    if (!c.State.Running) throw new ConflictError(`Container ${c.Id} is not running`);
    if (!c.Config.Tty) return;
    await this.o.runtime.resize(this.dir(c.Id), rows, cols);
  }

  bundleDir(c: ContainerRecord): string { return this.dir(c.Id); }

  // ---------------------------------------------------------------- shutdown

  /** Stops every container and frees every kernel object: used by `berthd --cleanup`. */
  async stopAllAndRelease(): Promise<void> {
    await Promise.all(this.list().filter((c) => c.State.Running).map(async (c) => {
      c.ManuallyStopped = true;
      await this.stopRunning(c, 0).catch((e) => console.error(`berthd: stopping ${shortId(c.Id)}: ${errorMessage(e)}`));
    }));
  }
}

function nonEmpty(v: string[] | null | undefined): string[] | null {
  return v && v.length ? v : null;
}

function mergeEnv(base: string[], overrides: string[]): string[] {
  const out = new Map<string, string>();
  for (const e of [...base, ...overrides]) {
    const k = e.includes('=') ? e.slice(0, e.indexOf('=')) : e;
    out.set(k, e);
  }
  return [...out.values()];
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => { resolve = r; });
  return { promise, resolve };
}

/** True when `p` settled within `ms`. */
async function raceTimeout(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<boolean>((r) => { timer = setTimeout(() => r(false), ms); });
  const ok = await Promise.race([p.then(() => true), t]);
  clearTimeout(timer);
  return ok;
}
