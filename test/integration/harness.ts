import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runOk } from '../../src/util/exec.js';

export const PACKAGE_ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..', '..');
export const BERTHD = join(PACKAGE_ROOT, 'dist', 'src', 'daemon', 'berthd.js');
export const BERTH_CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
/**
 * The docker CLI the tests drive: Debian's 20.10 client, which scripts/setup.sh unpacks into build/
 * (a stock machine has no other). BERTH_TEST_DOCKER points the suite at another client.
 */
export const DOCKER_CLI = process.env.BERTH_TEST_DOCKER ?? join(PACKAGE_ROOT, 'build', 'docker-20.10', 'usr', 'bin', 'docker');

let counter = 0;

/** An API call that did not complete within its bound. */
export class HangError extends Error {}

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
  /** Every berthd this host has run: what a killed one left in /tmp is found by its pid. */
  private readonly daemonPids: number[] = [];

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
  static async create(opts: { outside?: boolean; beforeDaemon?: (h: TestHost) => Promise<void>; daemonArgs?: string[] } = {}): Promise<TestHost> {
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
    host.daemonArgs = opts.daemonArgs ?? [];
    try {
      await opts.beforeDaemon?.(host);
      await host.startDaemon();
    } catch (e) {
      // A daemon that never came up (or a host whose setup failed) must not leave the test host's namespaces behind.
      await host.destroy().catch(() => undefined);
      throw e;
    }
    return host;
  }

  /** Arguments every start of this host's berthd gets (a cluster lab's lease TTL, node name). */
  daemonArgs: string[] = [];

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

  async startDaemon(extra: string[] = [], opts: { timeoutMs?: number } = {}): Promise<void> {
    // A second berthd on this root exits at once ("another berthd is using …") while the first
    // keeps answering, so the test passes and the first one leaks past destroy(). A berthd killed
    // by pid a moment ago may not have reported its exit yet: it gets two seconds to.
    const running = this.daemon;
    if (running && running.exitCode === null && running.signalCode === null) {
      const ended = await Promise.race([new Promise((r) => running.once('exit', () => r(true))), new Promise((r) => setTimeout(() => r(false), 2000))]);
      if (!ended) throw new Error(`berthd (pid ${running.pid}) of this test host is running: stop it before starting another`);
    }
    extra = [...this.daemonArgs, ...extra];
    // Upstream servers of the test's own: names berth forwards go to the fake outside host (or to
    // the test namespace's loopback), never to the machine's real resolvers.
    const resolvConf = join(this.dir, 'resolv.conf');
    await fs.writeFile(resolvConf, `nameserver ${this.outside ? '10.200.0.2' : '127.0.0.1'}\n`);
    const child = spawn('nsenter', [`--net=${this.netnsPath}`, process.execPath, BERTHD, '--root', this.root, '-H', `unix://${this.socket}`, '--resolv-conf', resolvConf, ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.daemon = child;
    if (child.pid) this.daemonPids.push(child.pid);
    child.stdout!.on('data', (d: Buffer) => { this.daemonLog += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { this.daemonLog += d.toString(); });
    const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
    for (;;) {
      if (child.exitCode !== null) throw new Error(`berthd exited (status ${child.exitCode}): ${this.daemonLog.slice(-3000)}`);
      try {
        const r = await this.api('GET', '/_ping', undefined, {}, { timeoutMs: 5000 });
        if (r.status === 200) return;
      } catch { /* not up yet */ }
      if (Date.now() > deadline) {
        // A daemon that never answered must not live on beside the next one (or past cleanup).
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
        this.daemon = undefined;
        throw new Error(`berthd did not come up within ${opts.timeoutMs ?? 20_000} ms: ${this.daemonLog.slice(-2000)}`);
      }
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

  /**
   * One API call. With `timeoutMs`, a call that has not completed by then fails with an error
   * naming it as a hang (its connection is destroyed), so a test never waits forever.
   */
  api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, opts: { timeoutMs?: number } = {}): Promise<ApiResponse> {
    return new Promise((resolvePromise, reject) => {
      let timer: NodeJS.Timeout | undefined;
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
      if (opts.timeoutMs) {
        timer = setTimeout(() => {
          reject(new HangError(`${method} ${path}: no complete answer within ${opts.timeoutMs} ms`));
          req.destroy();
        }, opts.timeoutMs);
        req.on('close', () => clearTimeout(timer));
      }
      req.end(data);
    });
  }

  /** The docker CLI (DOCKER_CLI) pointed at this host's berthd. */
  docker(args: string[], input?: string) {
    return run(DOCKER_CLI, ['-H', `unix://${this.socket}`, ...args], {
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
    // Scratch directories (nft scripts, openssl keys) of this host's berthds that are gone: the next start removes them.
    const stale = new RegExp(`^berth-(nft|pki)-(${this.daemonPids.join('|') || 'none'})-`);
    for (const name of await fs.readdir(tmpdir()).catch(() => [] as string[])) if (stale.test(name)) out.push(`scratch directory ${join(tmpdir(), name)}`);
    const runc = await run('runc', ['--root', join(this.root, 'runc'), 'list', '-q']);
    for (const id of runc.stdout.split('\n').filter(Boolean)) out.push(`runc container ${id}`);
    const ps = await run('ps', ['-eo', 'pid,stat,args']);
    for (const line of ps.stdout.split('\n')) {
      const [, stat] = line.trim().split(/\s+/);
      if ((line.includes('conmon') || line.includes('etcd')) && line.includes(this.root) && !stat?.startsWith('Z')) out.push(`process ${line.trim()}`);
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

export interface ExecResult { code: number; stdout: string; stderr: string; /** stdout and stderr in the order they came */ out: string }

/**
 * Runs `cmd` in a running container through the exec API and returns its exit code and output.
 * Throws when the exec cannot be created or started, or never reports an exit code: a probe that did
 * not run must fail the test, never read as "refused".
 */
export async function exec(host: TestHost, id: string, cmd: string[], opts: { User?: string; Env?: string[]; WorkingDir?: string } = {}): Promise<ExecResult> {
  const what = `exec ${JSON.stringify(cmd)} in ${id.slice(0, 12)}`;
  const ex = await host.api('POST', `/containers/${id}/exec`, { Cmd: cmd, AttachStdout: true, AttachStderr: true, ...opts });
  if (ex.status !== 201) throw new Error(`${what}: create answered ${ex.status} ${ex.body}`);
  const r = await host.api('POST', `/exec/${ex.json.Id}/start`, { Detach: false, Tty: false });
  if (r.status !== 200) throw new Error(`${what}: start answered ${r.status} ${r.body}`);
  const frames = demux(r.raw);
  const insp = await waitFor(async () => {
    const i = await host.api('GET', `/exec/${ex.json.Id}/json`);
    return i.status === 200 && i.json.Running === false && typeof i.json.ExitCode === 'number' ? i.json : undefined;
  }, `${what} to report its exit code`);
  return {
    code: insp.ExitCode as number,
    stdout: frames.filter(([s]) => s === 1).map(([, t]) => t).join(''),
    stderr: frames.filter(([s]) => s === 2).map(([, t]) => t).join(''),
    out: frames.map(([, t]) => t).join(''),
  };
}

/** exec's combined output, for positive checks (a failed create or start still throws). */
export async function execOut(host: TestHost, id: string, cmd: string[]): Promise<string> {
  return (await exec(host, id, cmd)).out;
}

/**
 * One busybox ping from a container. The answer is what happened, told apart by exit code and
 * message: 'reached' (exit 0, 1 received), 'lost' (exit 1, 100% packet loss: sent, nothing came
 * back), 'unreachable' (exit 1, no route to send it). Anything else (a missing tool, a bad name, a
 * broken container) throws, so a negative check cannot pass on a probe that never ran.
 */
export async function probePing(host: TestHost, id: string, target: string, opts: { v6?: boolean; waitSec?: number } = {}): Promise<'reached' | 'lost' | 'unreachable'> {
  const r = await exec(host, id, [opts.v6 ? 'ping6' : 'ping', '-c', '1', '-W', String(opts.waitSec ?? 1), target]);
  if (r.code === 0 && /1 packets received/.test(r.out)) return 'reached';
  if (r.code === 1 && /1 packets transmitted, 0 packets received, 100% packet loss/.test(r.out)) return 'lost';
  if (r.code === 1 && /Network unreachable|Network is unreachable/.test(r.out)) return 'unreachable';
  throw new Error(`ping ${target} from ${id.slice(0, 12)} did not run as a probe (exit ${r.code}): ${r.out}`);
}

/**
 * One TCP connect from a container with busybox nc's own connect timeout: 'connected',
 * 'refused' (an RST came back) or 'timeout' (nc gave up itself). Anything else throws.
 */
export async function probeTcp(host: TestHost, id: string, ip: string, port: number, waitSec = 2): Promise<'connected' | 'refused' | 'timeout'> {
  const r = await exec(host, id, ['nc', '-w', String(waitSec), ip, String(port)]);
  if (r.code === 0) return 'connected';
  if (r.code === 1 && /Connection refused/.test(r.out)) return 'refused';
  if (r.code === 1 && /timed out/.test(r.out)) return 'timeout';
  throw new Error(`nc ${ip} ${port} from ${id.slice(0, 12)} did not run as a probe (exit ${r.code}): ${r.out}`);
}

/**
 * busybox nslookup from a container. `rcode` is what the resolver said: NOERROR (with addresses,
 * or none for a name without records of the type), NXDOMAIN, SERVFAIL (the upstream it forwarded to
 * failed), or TIMEOUT (no server answered, which is never "the name is gone"). Anything else throws.
 */
export async function lookup(host: TestHost, id: string, name: string, type = 'A'): Promise<{ addrs: string[]; rcode: 'NOERROR' | 'NXDOMAIN' | 'SERVFAIL' | 'TIMEOUT'; out: string }> {
  const r = await exec(host, id, ['nslookup', `-type=${type}`, name]);
  const answer = r.out.split('\n').slice(2).join('\n');
  const addrs = [...answer.matchAll(/Address:\s*([0-9a-f.:]+)/g)].map((m) => m[1]!).filter((a) => !a.endsWith(':53'));
  if (/NXDOMAIN/.test(r.out)) return { addrs, rcode: 'NXDOMAIN', out: r.out };
  if (/SERVFAIL/.test(r.out)) return { addrs, rcode: 'SERVFAIL', out: r.out };
  if (/timed out|no servers could be reached/.test(r.out)) return { addrs, rcode: 'TIMEOUT', out: r.out };
  if (r.code === 0 || /Can't find .*: No answer/.test(r.out)) return { addrs, rcode: 'NOERROR', out: r.out };
  throw new Error(`nslookup ${name} in ${id.slice(0, 12)} did not run as a probe (exit ${r.code}): ${r.out}`);
}

/** An HTTP GET in Node, run in a namespace: no wget needed on the machine, and the timeout is the client's own. */
const FETCH = `const http = require('http'); const [url, ms] = process.argv.slice(1);
const out = (o) => { console.log(JSON.stringify(o)); process.exit(0); };
const req = http.get(url, { agent: false }, (res) => { let b = ''; res.setEncoding('utf8'); res.on('data', (d) => { b += d; }); res.on('end', () => out({ status: res.statusCode, body: b })); });
// The client's own deadline over connect and read alike (a request's socket timeout does not cover a SYN left unanswered).
setTimeout(() => out({ error: 'timeout' }), Number(ms));
req.on('error', (e) => out({ error: e.code || e.message }));`;

export type FetchResult = { status: number; body: string; error?: undefined } | { error: string; status?: undefined; body?: undefined };

/**
 * GET `url` from inside a namespace path (the test host's, the outside world's, a container's
 * sandbox). A refusal is { error: 'ECONNREFUSED' }, silence { error: 'timeout' } after `timeoutMs`.
 */
export async function fetchIn(netnsPath: string, url: string, timeoutMs = 2000): Promise<FetchResult> {
  const r = await run('nsenter', [`--net=${netnsPath}`, process.execPath, '-e', FETCH, url, String(timeoutMs)]);
  try {
    return JSON.parse(r.stdout) as FetchResult;
  } catch {
    throw new Error(`fetch ${url} did not run (exit ${r.code}): ${r.stdout} ${r.stderr}`);
  }
}

/**
 * The outside world's DNS server (10.200.0.2:53, UDP and TCP), for a host made with `outside`:
 * outside.test is 10.200.0.99, big.test is truncated over UDP and 20 addresses over TCP, every
 * other name NXDOMAIN. A name that reaches it was not answered by berth.
 */
const FAKE_UPSTREAM = `
const dgram = require('dgram'), net = require('net'), dns = require(${JSON.stringify(join(PACKAGE_ROOT, 'node_modules', 'dns-packet', 'index.js'))});
function answer(q, tcp) {
  const name = q.questions[0].name;
  const base = { type: 'response', id: q.id, flags: dns.RECURSION_AVAILABLE, questions: q.questions };
  if (name === 'outside.test') return { ...base, answers: [{ type: 'A', name, ttl: 60, data: '10.200.0.99' }] };
  if (name === 'big.test') {
    if (!tcp) return { ...base, flags: base.flags | dns.TRUNCATED_RESPONSE };
    return { ...base, answers: Array.from({ length: 20 }, (_, i) => ({ type: 'A', name, ttl: 60, data: '10.201.0.' + (i + 1) })) };
  }
  return { ...base, flags: base.flags | 3 };
}
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => u.send(dns.encode(answer(dns.decode(m), false)), r.port, r.address));
u.bind(53, '10.200.0.2');
net.createServer((s) => s.on('data', (d) => { const b = dns.encode(answer(dns.decode(d.subarray(2)), true)); const l = Buffer.alloc(2); l.writeUInt16BE(b.length); s.end(Buffer.concat([l, b])); })).listen(53, '10.200.0.2', () => console.log('ready'));
`;

export async function startFakeUpstream(host: TestHost): Promise<ChildProcess> {
  if (!host.outside) throw new Error('startFakeUpstream needs a host made with { outside: true }');
  const upstream = spawn('nsenter', [`--net=/run/netns/${host.outside}`, process.execPath, '-e', FAKE_UPSTREAM]);
  let out = '';
  upstream.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  await waitFor(async () => out.includes('ready'), 'fake upstream DNS');
  return upstream;
}
