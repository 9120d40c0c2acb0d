import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runOk } from '../../src/util/exec.js';

export const PACKAGE_ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..', '..');
const BERTHD = join(PACKAGE_ROOT, 'dist', 'src', 'daemon', 'berthd.js');
export const BERTH_CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');

let counter = 0;

export interface ApiResponse { status: number; headers: Record<string, string | string[] | undefined>; body: string; raw: Buffer; json: any }

/**
 * A throwaway "test host": a network namespace of its own with a berthd inside it, its own root
 * directory and socket. Nothing a test does can reach the machine's real network.
 */
export class TestHost {
  readonly netns: string;
  readonly dir: string;
  readonly root: string;
  readonly socket: string;
  private daemon?: ChildProcess;
  daemonLog = '';

  private constructor(name: string, dir: string) {
    this.netns = name;
    this.dir = dir;
    this.root = join(dir, 'root');
    this.socket = join(dir, 'berth.sock');
  }

  /**
   * With `outside`, a second namespace plays the world beyond the host: linked by a veth
   * (10.200.0.1 here, 10.200.0.2 there, MTU 1400 like these machines' uplink), with the test
   * host's default route pointing at it and no route back to container subnets.
   */
  static async create(opts: { outside?: boolean } = {}): Promise<TestHost> {
    const name = `bt${process.pid}x${counter++}`;
    const dir = await fs.mkdtemp(join(tmpdir(), 'berth-it-'));
    const host = new TestHost(name, dir);
    await runOk('ip', ['netns', 'add', name]);
    await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    if (opts.outside) {
      host.outside = `${name}o`;
      await runOk('ip', ['netns', 'add', host.outside]);
      await runOk('ip', ['-n', name, '-batch', '-'], {
        input: [
          `link add btvo0 mtu 1400 type veth peer name btvo1 mtu 1400 netns ${host.outside}`,
          'addr add 10.200.0.1/24 dev btvo0', 'link set btvo0 up', 'route add default via 10.200.0.2',
        ].join('\n') + '\n',
      });
      await runOk('ip', ['-n', host.outside, '-batch', '-'], {
        input: ['link set lo up', 'addr add 10.200.0.2/24 dev btvo1', 'link set btvo1 up'].join('\n') + '\n',
      });
    }
    try {
      await host.startDaemon();
    } catch (e) {
      // A daemon that never came up must not leave the test host's namespaces behind.
      await host.destroy().catch(() => undefined);
      throw e;
    }
    return host;
  }

  /** Name of the "outside world" namespace, when there is one. */
  outside?: string;

  inOutside(cmd: string, args: string[]) {
    return run('nsenter', [`--net=/run/netns/${this.outside}`, cmd, ...args]);
  }

  get netnsPath(): string { return `/run/netns/${this.netns}`; }

  /** Runs a command inside the test host's network namespace (nsenter keeps /sys and cgroups). */
  inNetns(cmd: string, args: string[], input?: string) {
    return run('nsenter', [`--net=${this.netnsPath}`, cmd, ...args], input !== undefined ? { input } : {});
  }

  async startDaemon(extra: string[] = []): Promise<void> {
    // Upstream servers of the test's own: names berth forwards go to the fake outside host (or to
    // the test namespace's loopback), never to the machine's real resolvers.
    const resolvConf = join(this.dir, 'resolv.conf');
    await fs.writeFile(resolvConf, `nameserver ${this.outside ? '10.200.0.2' : '127.0.0.1'}\n`);
    const child = spawn('nsenter', [`--net=${this.netnsPath}`, process.execPath, BERTHD, '--root', this.root, '-H', `unix://${this.socket}`, '--resolv-conf', resolvConf, ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.daemon = child;
    child.stdout!.on('data', (d: Buffer) => { this.daemonLog += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { this.daemonLog += d.toString(); });
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`berthd exited: ${this.daemonLog}`);
      try {
        const r = await this.api('GET', '/_ping');
        if (r.status === 200) return;
      } catch { /* not up yet */ }
      if (Date.now() > deadline) throw new Error(`berthd did not come up: ${this.daemonLog}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops berthd: gracefully, or with SIGKILL to simulate a crash. Containers keep running. */
  async stopDaemon(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const d = this.daemon;
    if (!d || d.exitCode !== null) return;
    const exited = new Promise((r) => d.once('exit', r));
    // nsenter execs node, so the pid is berthd's own.
    d.kill(signal);
    await exited;
    this.daemon = undefined;
  }

  get daemonPid(): number | undefined { return this.daemon?.pid; }

  api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse> {
    return new Promise((resolvePromise, reject) => {
      const data = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      const req = request({
        socketPath: this.socket, method, path,
        headers: { ...(data ? { 'Content-Type': 'application/json', 'Content-Length': String(data.length) } : {}), ...headers },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks);
          const text = raw.toString();
          let json: unknown;
          try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
          resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, body: text, raw, json });
        });
        // berthd dying mid-response must fail the test, not leave it waiting forever.
        res.on('error', reject);
        res.on('close', () => { if (!res.complete) reject(new Error(`${method} ${path}: berthd closed the connection mid-response`)); });
      });
      req.on('error', reject);
      req.end(data);
    });
  }

  /** The real docker CLI pointed at this host's berthd. */
  docker(args: string[], input?: string) {
    return run('docker', ['-H', `unix://${this.socket}`, ...args], {
      env: { ...process.env, DOCKER_CONFIG: join(this.dir, 'docker-config') },
      ...(input !== undefined ? { input } : {}),
    });
  }

  /** berth's own CLI pointed at this host's berthd. */
  berth(args: string[], input?: string) {
    return run(process.execPath, [BERTH_CLI, '-H', `unix://${this.socket}`, ...args], input !== undefined ? { input } : {});
  }

  /** Creates and starts a container through the API, returns its id. */
  async runDetached(body: Record<string, unknown>, name?: string): Promise<string> {
    const c = await this.api('POST', `/containers/create${name ? `?name=${name}` : ''}`, { Image: 'busybox', ...body });
    if (c.status !== 201) throw new Error(`create: ${c.status} ${c.body}`);
    const s = await this.api('POST', `/containers/${c.json.Id}/start`);
    if (s.status !== 204) throw new Error(`start: ${s.status} ${s.body}`);
    return c.json.Id as string;
  }

  /**
   * Removes everything: containers, daemon, namespaces, mounts, the directory. Returns what leaked,
   * so a test can fail on it; cleanup goes on past errors.
   */
  async destroy(): Promise<string[]> {
    const leaks: string[] = [];
    await this.stopDaemon().catch(() => undefined);
    if (existsSync(BERTHD)) {
      const r = await run('nsenter', [`--net=${this.netnsPath}`, process.execPath, BERTHD, '--root', this.root, '--cleanup', '--no-seed-busybox']);
      if (r.code !== 0) leaks.push(`berthd --cleanup failed: ${r.stderr.trim()}`);
    }
    leaks.push(...(await this.leaks()));
    await run('ip', ['netns', 'del', this.netns]);
    if (this.outside) await run('ip', ['netns', 'del', this.outside]);
    const mounts = await mountsUnder(this.dir);
    for (const m of mounts) await run('umount', ['--lazy', m]);
    await fs.rm(this.dir, { recursive: true, force: true });
    if (existsSync(`/run/netns/${this.netns}`)) leaks.push(`netns ${this.netns} still exists`);
    if (this.outside && existsSync(`/run/netns/${this.outside}`)) leaks.push(`netns ${this.outside} still exists`);
    return leaks;
  }

  /** What berth made under this host that still exists. */
  async leaks(): Promise<string[]> {
    const out: string[] = [];
    for (const m of await mountsUnder(this.dir)) out.push(`mount ${m}`);
    const runc = await run('runc', ['--root', join(this.root, 'runc'), 'list', '-q']);
    for (const id of runc.stdout.split('\n').filter(Boolean)) out.push(`runc container ${id}`);
    const ps = await run('ps', ['-eo', 'pid,stat,args']);
    for (const line of ps.stdout.split('\n')) {
      const [, stat] = line.trim().split(/\s+/);
      if (line.includes('conmon') && line.includes(this.root) && !stat?.startsWith('Z')) out.push(`process ${line.trim()}`);
    }
    const links = await run('ip', ['-n', this.netns, '-o', 'link', 'show']);
    for (const l of links.stdout.split('\n').filter(Boolean)) {
      const name = l.split(': ')[1]?.split('@')[0];
      if (name && name !== 'lo' && !name.startsWith('btv')) out.push(`link ${name}`);
    }
    const nft = await this.inNetns('nft', ['list', 'tables']);
    for (const t of nft.stdout.split('\n').filter(Boolean)) out.push(`nft ${t}`);
    return out;
  }
}

export async function mountsUnder(prefix: string): Promise<string[]> {
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8');
  return [...new Set(info.split('\n').map((l) => l.split(' ')[4]).filter((p): p is string => !!p && p.startsWith(prefix)))]
    .sort((a, b) => b.length - a.length);
}

export async function waitFor<T>(fn: () => Promise<T | undefined | false>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Splits Docker's multiplexed stream into [stream, text] frames. */
export function demux(buf: Buffer): Array<[number, string]> {
  const out: Array<[number, string]> = [];
  let off = 0;
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off + 4);
    out.push([buf[off]!, buf.subarray(off + 8, off + 8 + len).toString()]);
    off += 8 + len;
  }
  return out;
}

export async function execOut(host: TestHost, id: string, cmd: string[]): Promise<string> {
  const ex = await host.api('POST', `/containers/${id}/exec`, { Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const r = await host.api('POST', `/exec/${ex.json.Id}/start`, { Detach: false, Tty: false });
  return demux(r.raw).map(([, s]) => s).join('');
}
