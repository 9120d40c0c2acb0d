/**
 * The engines under test, each private to the run: its own network namespace (bb-<engine>-<pid>),
 * its own state directory under a mkdtemp dir, its own API socket. Nothing here touches the
 * machine's own network namespace: the daemons are started with `nsenter --net=` (not
 * `ip netns exec`, which remounts /sys and hides the cgroup mounts runc needs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { apiRequest, listProcs, log, now, run, runOk, sleep, type ApiResponse, type ProcInfo } from './util.js';

export const PACKAGE_ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..');
/** BENCH_BERTHD=path/to/berthd.js measures another build of berth (a clean worktree, say). */
const BERTHD = process.env.BENCH_BERTHD || join(PACKAGE_ROOT, 'dist', 'src', 'daemon', 'berthd.js');
export const BUSYBOX_TAR = join(PACKAGE_ROOT, 'build', 'busybox.tar');
export const DOCKER_CLI = existsSync('/usr/local/bin/docker') ? '/usr/local/bin/docker' : 'docker';
/** The engine namespace's own non-loopback address ("the host IP" for published-port tests). */
export const HOST_IP = '10.250.0.2';

export type EngineName = 'berth' | 'docker' | 'podman';

export abstract class Engine {
  readonly netns: string;
  readonly dir: string;
  readonly socket: string;
  protected daemon?: ChildProcess;
  protected logFile: string;
  version = '';
  /** Processes started by the bench itself inside this engine's namespaces (iperf3, echo servers). */
  readonly helpers = new Set<ChildProcess>();

  /** `netns`: a name of the caller's (several engines of one kind, as in the cluster lab). */
  constructor(readonly name: EngineName, dir: string, netns?: string) {
    this.netns = netns ?? `bb-${name}-${process.pid}`;
    this.dir = dir;
    this.socket = join(dir, `${name}.sock`);
    this.logFile = join(dir, `${name}d.log`);
  }

  get netnsPath(): string { return `/run/netns/${this.netns}`; }

  api(method: string, path: string, body?: unknown): Promise<ApiResponse> {
    return apiRequest(this.socket, method, `/v1.41${path}`, body);
  }

  async apiOk(method: string, path: string, body?: unknown): Promise<any> {
    const r = await this.api(method, path, body);
    if (r.status >= 300) throw new Error(`${this.name}: ${method} ${path}: ${r.status} ${r.body.trim()}`);
    return r.json;
  }

  /** The docker CLI pointed at this engine. */
  cli(args: string[]) {
    return run(DOCKER_CLI, ['-H', `unix://${this.socket}`, ...args], {
      env: { ...process.env, DOCKER_CONFIG: join(this.dir, 'cli-config') },
    });
  }

  /** Runs a command inside this engine's ("host") namespace. */
  inHost(cmd: string, args: string[]) {
    return run('nsenter', [`--net=${this.netnsPath}`, cmd, ...args]);
  }

  /** Starts a long-running helper inside a namespace; it is killed at stop(). */
  spawnHelper(netPath: string, cmd: string, args: string[]): ChildProcess {
    const child = spawn('nsenter', [`--net=${netPath}`, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.resume();
    child.stderr!.resume();
    this.helpers.add(child);
    child.once('exit', () => this.helpers.delete(child));
    return child;
  }

  async killHelpers(): Promise<void> {
    const all = [...this.helpers];
    await Promise.all(all.map((c) => new Promise<void>((r) => {
      if (c.exitCode !== null || c.signalCode !== null) return r();
      c.once('exit', () => r());
      c.kill('SIGKILL');
    })));
  }

  protected async makeNetns(): Promise<void> {
    await runOk('ip', ['netns', 'add', this.netns]);
    await runOk('ip', ['-n', this.netns, '-batch', '-'], [
      'link set lo up',
      // no dummy module on these kernels: a veth pair with both ends in the namespace
      'link add bbhost0 type veth peer name bbhost1',
      `addr add ${HOST_IP}/24 dev bbhost0`,
      'link set bbhost0 up',
      'link set bbhost1 up',
    ].join('\n') + '\n');
  }

  protected spawnDaemon(cmd: string, args: string[]): void {
    const out = createWriteStream(this.logFile, { flags: 'a' });
    const child = spawn('nsenter', [`--net=${this.netnsPath}`, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
    this.daemon = child;
  }

  protected async waitPing(timeoutMs: number): Promise<void> {
    const deadline = now() + timeoutMs;
    for (;;) {
      if (this.daemon && this.daemon.exitCode !== null) throw new Error(`${this.name} daemon exited: ${await this.logTail()}`);
      try {
        const r = await apiRequest(this.socket, 'GET', '/_ping', undefined, 2000);
        if (r.status === 200) break;
      } catch { /* not up yet */ }
      if (now() > deadline) throw new Error(`${this.name} daemon did not come up: ${await this.logTail()}`);
      await sleep(100);
    }
    const v = await this.apiOk('GET', '/version');
    this.version = String(v?.Version ?? '?');
  }

  async logTail(): Promise<string> {
    try { return (await fs.readFile(this.logFile, 'utf8')).split('\n').slice(-15).join('\n'); } catch { return ''; }
  }

  protected async stopDaemon(timeoutMs: number): Promise<void> {
    const d = this.daemon;
    if (!d || d.exitCode !== null || d.signalCode !== null) return;
    const exited = new Promise<void>((r) => d.once('exit', () => r()));
    d.kill('SIGTERM'); // nsenter execs the daemon, so this pid is the daemon's own
    const t = await Promise.race([exited.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!t) { d.kill('SIGKILL'); await exited; }
    this.daemon = undefined;
  }

  get daemonPid(): number | undefined { return this.daemon?.pid; }

  /** Removes all containers and networks the bench made (best effort, quick). */
  async removeAll(): Promise<void> {
    const cs = await this.api('GET', '/containers/json?all=1').catch(() => undefined);
    const ids: string[] = Array.isArray(cs?.json) ? cs!.json.map((c: any) => c.Id) : [];
    for (let i = 0; i < ids.length; i += 8) {
      await Promise.all(ids.slice(i, i + 8).map((id) => this.api('DELETE', `/containers/${id}?force=1`).catch(() => undefined)));
    }
    const ns = await this.api('GET', '/networks').catch(() => undefined);
    for (const n of Array.isArray(ns?.json) ? ns!.json : []) {
      if (!['bridge', 'host', 'none'].includes(n.Name)) await this.api('DELETE', `/networks/${n.Id}`).catch(() => undefined);
    }
  }

  /** Daemon-side processes counted for memory: see countedProcs() of each engine. */
  abstract countedProcs(): Promise<ProcInfo[]>;
  abstract start(): Promise<void>;
  /** Stops everything and removes the namespace and the directory; returns what leaked. */
  abstract stop(): Promise<string[]>;

  /** Pids of the processes whose network namespace is this engine's namespace. */
  async procsInNetns(ps?: ProcInfo[]): Promise<Set<number>> {
    const out = new Set<number>();
    let ino: number;
    try { ino = (await fs.stat(this.netnsPath)).ino; } catch { return out; }
    for (const p of ps ?? await listProcs()) {
      try { if ((await fs.readlink(`/proc/${p.pid}/ns/net`)) === `net:[${ino}]`) out.add(p.pid); } catch { /* gone */ }
    }
    return out;
  }

  protected async finalCleanup(extraProcs: (p: ProcInfo) => boolean): Promise<string[]> {
    const leaks: string[] = [];
    await this.killHelpers();
    // Anything still running that mentions our directory (shims, containerd, conmon), lives in our
    // namespace, or matches.
    for (let round = 0; round < 2; round++) {
      const ps = await listProcs();
      const inNs = await this.procsInNetns(ps);
      const left = ps.filter((p) => p.pid !== process.pid && (p.cmdline.includes(this.dir) || inNs.has(p.pid) || extraProcs(p)));
      if (left.length === 0) break;
      for (const p of left) {
        if (round === 1) leaks.push(`process ${p.pid} ${p.cmdline.slice(0, 120)} (killed)`);
        try { process.kill(p.pid, round === 0 ? 'SIGTERM' : 'SIGKILL'); } catch { /* gone */ }
      }
      await sleep(1500);
    }
    for (const m of await mountsUnder(this.dir)) {
      const r = await run('umount', [m]);
      if (r.code !== 0) await run('umount', ['--lazy', m]);
    }
    const still = await mountsUnder(this.dir);
    for (const m of still) leaks.push(`mount ${m}`);
    await run('ip', ['netns', 'del', this.netns]);
    if (existsSync(this.netnsPath)) leaks.push(`netns ${this.netns}`);
    if (still.length === 0) await fs.rm(this.dir, { recursive: true, force: true }).catch((e) => leaks.push(`rm ${this.dir}: ${e}`));
    return leaks;
  }
}

export async function mountsUnder(prefix: string): Promise<string[]> {
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8');
  return [...new Set(info.split('\n').map((l) => l.split(' ')[4]).filter((p): p is string => !!p && p.startsWith(prefix)))]
    .sort((a, b) => b.length - a.length);
}

export class BerthEngine extends Engine {
  /** The build measured: this checkout's, BENCH_BERTHD's, or another given by `npm run bench:ab`. */
  berthd = BERTHD;

  get root(): string { return join(this.dir, 'root'); }

  async start(): Promise<void> {
    await this.makeNetns();
    this.spawnDaemon(process.execPath, [this.berthd, '--root', this.root, '-H', `unix://${this.socket}`]);
    await this.waitPing(30_000);
    // berthd seeds busybox into an empty store by itself; wait until it is there.
    const deadline = now() + 30_000;
    while (now() < deadline) {
      const r = await this.api('GET', '/images/busybox/json');
      if (r.status === 200) return;
      await sleep(200);
    }
    throw new Error('berth: busybox image did not appear');
  }

  /** berthd itself and every conmon under its root (runc exits after start; containers are not counted). */
  async countedProcs(): Promise<ProcInfo[]> {
    const ps = await listProcs();
    return ps.filter((p) => p.pid === this.daemonPid || (p.comm === 'conmon' && p.cmdline.includes(this.root)));
  }

  async stop(): Promise<string[]> {
    const leaks: string[] = [];
    await this.killHelpers();
    await this.stopDaemon(20_000).catch((e) => leaks.push(`stop berthd: ${e}`));
    if (existsSync(this.netnsPath) && existsSync(this.berthd)) {
      const r = await run('nsenter', [`--net=${this.netnsPath}`, process.execPath, this.berthd, '--root', this.root, '--cleanup', '--no-seed-busybox']);
      if (r.code !== 0) leaks.push(`berthd --cleanup: ${r.stderr.trim().slice(0, 300)}`);
    }
    leaks.push(...await this.finalCleanup(() => false));
    return leaks;
  }
}

export class DockerEngine extends Engine {
  private proxies = new Set<number>();

  /** dockerd 20.10 writes its libtrust key to /etc/docker/key.json; remove it afterwards if it was not there. */
  private keyExisted = true;
  /** dockerd/containerd also make /run/docker/plugins and /run/containerd/s; removed afterwards when they were not there and are empty. */
  private runDirsExisted: Record<string, boolean> = {};

  async start(): Promise<void> {
    this.keyExisted = existsSync('/etc/docker/key.json');
    for (const d of ['/run/docker', '/run/containerd']) this.runDirsExisted[d] = existsSync(d);
    await this.makeNetns();
    await fs.writeFile(join(this.dir, 'daemon.json'), '{}\n');
    // dockerd starts and supervises its own containerd, with state under exec-root and data under data-root.
    this.spawnDaemon('dockerd', [
      '--config-file', join(this.dir, 'daemon.json'),
      '--data-root', join(this.dir, 'data'),
      '--exec-root', join(this.dir, 'exec'),
      '--pidfile', join(this.dir, 'docker.pid'),
      '-H', `unix://${this.socket}`,
      '--iptables=true',
    ]);
    await this.waitPing(60_000);
    const r = await this.cli(['import', BUSYBOX_TAR, 'busybox:latest']);
    if (r.code !== 0) throw new Error(`docker import: ${r.stderr}`);
  }

  /**
   * dockerd, its containerd, every containerd-shim of this run, and docker-proxy processes
   * (children of dockerd).
   */
  async countedProcs(): Promise<ProcInfo[]> {
    const ps = await listProcs();
    const dpid = this.daemonPid;
    return ps.filter((p) => {
      if (p.pid === dpid) return true;
      if (p.ppid === dpid && (p.comm === 'containerd' || p.comm === 'docker-proxy')) return true;
      return p.comm.startsWith('containerd-shim') && p.cmdline.includes(this.dir);
    });
  }

  async stop(): Promise<string[]> {
    const leaks: string[] = [];
    await this.killHelpers();
    const dpid = this.daemonPid;
    if (dpid) for (const p of await listProcs()) if (p.ppid === dpid && p.comm === 'docker-proxy') this.proxies.add(p.pid);
    if (this.daemon && this.daemon.exitCode === null) await this.removeAll().catch(() => undefined);
    await this.stopDaemon(30_000).catch((e) => leaks.push(`stop dockerd: ${e}`));
    const proxies = this.proxies;
    leaks.push(...await this.finalCleanup((p) => proxies.has(p.pid) && p.comm === 'docker-proxy'));
    if (!this.keyExisted) await fs.rm('/etc/docker/key.json', { force: true });
    for (const [d, existed] of Object.entries(this.runDirsExisted)) {
      if (existed) continue;
      const files = await run('find', [d, '-not', '-type', 'd']);
      if (files.code === 0 && files.stdout.trim() === '') await fs.rm(d, { recursive: true, force: true });
      else if (files.stdout.trim()) leaks.push(`files left under ${d}: ${files.stdout.trim().split('\n').slice(0, 3).join(' ')}`);
    }
    return leaks;
  }
}

/**
 * Podman 4.3's Docker-compatible API service (`podman system service`), with netavark and
 * aardvark-dns, runc (crun refuses this machine's cgroup layout), cgroupfs, and every path it
 * knows of under its own directory.
 */
export class PodmanEngine extends Engine {
  /** Global paths podman may create; removed afterwards when they were not there before and hold nothing. */
  private globals: Record<string, boolean> = {};
  private static readonly GLOBAL_PATHS = ['/dev/shm/libpod_lock', '/run/containers', '/run/libpod', '/var/lib/containers', '/run/netavark', '/run/containers/networks'];

  private flags(): string[] {
    return [
      '--root', join(this.dir, 'storage'), '--runroot', join(this.dir, 'run'), '--tmpdir', join(this.dir, 'tmp'),
      '--network-config-dir', join(this.dir, 'networks'), '--storage-driver', 'overlay',
      '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', '--runtime', 'runc',
    ];
  }

  async start(): Promise<void> {
    for (const p of PodmanEngine.GLOBAL_PATHS) this.globals[p] = existsSync(p);
    await this.makeNetns();
    const conf = join(this.dir, 'containers.conf');
    await fs.writeFile(conf, [
      // Podman asks for nofile 1048576 and nproc 4194304 by default, above the hard limits this
      // session runs with, and runc gets EPERM (even when asked for exactly the current hard limits);
      // lower limits work. Docker and berth set none (containers inherit).
      '[containers]', 'default_ulimits = ["nofile=16384:16384", "nproc=30000:30000"]',
      '[engine]', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', 'runtime = "runc"',
      `tmp_dir = "${join(this.dir, 'tmp')}"`,
      '[network]', 'network_backend = "netavark"', `network_config_dir = "${join(this.dir, 'networks')}"`, '',
    ].join('\n'));
    process.env.CONTAINERS_CONF = conf; // inherited by the service (and nothing else of ours uses it)
    // The pull metric's local registry speaks plain HTTP on loopback (Docker and berth allow that by default).
    const registries = join(this.dir, 'registries.conf');
    await fs.writeFile(registries, 'unqualified-search-registries = []\n[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n');
    process.env.CONTAINERS_REGISTRIES_CONF = registries;
    this.spawnDaemon('podman', [...this.flags(), 'system', 'service', '--time=0', `unix://${this.socket}`]);
    await this.waitPing(60_000);
    const r = await this.cli(['import', BUSYBOX_TAR, 'busybox:latest']);
    if (r.code !== 0) throw new Error(`podman import: ${r.stderr}`);
  }

  /** The service process, every conmon of this run, and aardvark-dns. */
  async countedProcs(): Promise<ProcInfo[]> {
    const ps = await listProcs();
    const mine = await this.procsInNetns(ps);
    return ps.filter((p) => p.pid === this.daemonPid || (p.comm === 'conmon' && p.cmdline.includes(this.dir))
      || (p.comm === 'aardvark-dns' && mine.has(p.pid)));
  }

  async stop(): Promise<string[]> {
    const leaks: string[] = [];
    await this.killHelpers();
    if (this.daemon && this.daemon.exitCode === null) await this.removeAll().catch(() => undefined);
    await this.stopDaemon(30_000).catch((e) => leaks.push(`stop podman: ${e}`));
    leaks.push(...await this.finalCleanup(() => false));
    for (const [p, existed] of Object.entries(this.globals)) {
      if (existed || !existsSync(p)) continue;
      // Not there before this run and nothing else here uses podman: netavark's ipam.db, podman's blob cache…
      await fs.rm(p, { recursive: true, force: true });
    }
    return leaks;
  }
}

export async function makeEngine(name: EngineName, base: string): Promise<Engine> {
  const dir = await fs.mkdtemp(join(base, `${name}-`));
  if (name === 'podman') return new PodmanEngine(name, dir);
  return name === 'berth' ? new BerthEngine(name, dir) : new DockerEngine(name, dir);
}

export async function makeBaseDir(): Promise<string> {
  return fs.mkdtemp(join(tmpdir(), 'bb-'));
}

export { log };

/** dockerd in a private mount namespace whose /etc/docker is `etcDocker`: its plugin discovery sees only the spec files put there. */
export class PrivateDocker extends DockerEngine {
  constructor(dir: string, private readonly etcDocker: string) { super('docker', dir); }
  protected override spawnDaemon(cmd: string, args: string[]): void {
    super.spawnDaemon('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/docker && exec "$@"', this.etcDocker, cmd, ...args]);
  }
}
