import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runOk } from '../../src/util/exec.js';
import { TestHost, waitFor } from './harness.js';

/**
 * A lab of berth hosts on one machine: each host a TestHost (its own namespace, berthd, root and
 * socket) with an uplink veth into one shared underlay namespace, where a bridge joins them on
 * 10.99.0.0/24. The underlay is a namespace of its own, so nothing of the lab touches the machine's
 * network. The cluster tests and `npm run lab` both use this.
 */

let labs = 0;
export const UNDERLAY_PREFIX = '10.99.0.';

export interface LabOptions {
  leaseTtlSec?: number;
  seedBusybox?: boolean;
  /** berthd --cluster-min-cert-expiry: lets a test ask for certificates of seconds. */
  minCertExpirySec?: number;
  /** An etcd of the lab's own in the underlay namespace, handed to every berthd as --cluster-store. */
  externalStore?: boolean;
  /** More berthd arguments for host `index` (its own plugin directory, say). */
  hostArgs?: (index: number) => string[];
}

export const STORE_ADDR = '10.99.0.254';

export class LabHost {
  constructor(readonly host: TestHost, readonly index: number, readonly lab: Lab) {}
  get addr(): string { return `${UNDERLAY_PREFIX}${this.index + 1}`; }
  get name(): string { return `lab${this.index}`; }
  get dockerHost(): string { return `unix://${this.host.socket}`; }
  /** The underlay side of its uplink: taking it down cuts the host off like a pulled cable. */
  get port(): string { return `btvh${this.index}`; }
}

export class Lab {
  readonly underlay: string;
  readonly hosts: LabHost[] = [];
  private store?: { proc: ChildProcess; dir: string; log: string };

  private constructor(readonly o: LabOptions) {
    this.underlay = `bt${process.pid}u${labs++}`;
  }

  static async create(n: number, o: LabOptions = {}): Promise<Lab> {
    const lab = new Lab(o);
    try {
      await runOk('ip', ['netns', 'add', lab.underlay]);
      await runOk('ip', ['-n', lab.underlay, '-batch', '-'], { input: 'link set lo up\nlink add btub0 type bridge\nlink set btub0 up\n' });
      if (o.externalStore) await lab.startStore();
      // Hosts come up one after another: each berthd start is CPU-heavy on this 2-core machine.
      for (let i = 0; i < n; i++) await lab.addHost();
    } catch (e) {
      await lab.destroy().catch(() => undefined);
      throw e;
    }
    return lab;
  }

  /** Plain HTTP, but only on the underlay, a namespace no one else reaches. */
  private async startStore(): Promise<void> {
    await runOk('ip', ['-n', this.underlay, 'addr', 'add', `${STORE_ADDR}/24`, 'dev', 'btub0']);
    const dir = await fs.mkdtemp(join(tmpdir(), 'berth-lab-etcd-'));
    const url = `http://${STORE_ADDR}:2379`;
    const proc = spawn('nsenter', [`--net=/run/netns/${this.underlay}`, 'etcd', '--name=lab', `--data-dir=${join(dir, 'data')}`,
      `--listen-client-urls=${url}`, `--advertise-client-urls=${url}`, `--listen-peer-urls=http://127.0.0.1:2380`,
      '--initial-advertise-peer-urls=http://127.0.0.1:2380', '--initial-cluster=lab=http://127.0.0.1:2380', '--logger=zap'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.store = { proc, dir, log: '' };
    proc.stderr!.on('data', (d: Buffer) => { this.store!.log += d.toString(); });
    await waitFor(async () => this.store!.log.includes('serving client traffic') || proc.exitCode !== null, 'the lab etcd', 20_000);
    if (proc.exitCode !== null) throw new Error(`the lab etcd exited: ${this.store.log.slice(-2000)}`);
  }

  get storeUrl(): string | undefined { return this.store ? `etcd://${STORE_ADDR}:2379` : undefined; }

  async addHost(): Promise<LabHost> {
    const index = this.hosts.length;
    const args = [...(this.store ? ['--cluster-store', `etcd://${STORE_ADDR}:2379`] : []),'--node-hostname', `lab${index}`, '--cluster-lease-ttl', String(this.o.leaseTtlSec ?? 3),
      ...(this.o.minCertExpirySec ? ['--cluster-min-cert-expiry', String(this.o.minCertExpirySec)] : []), ...(this.o.seedBusybox ? [] : ['--no-seed-busybox']), ...(this.o.hostArgs?.(index) ?? [])];
    const host = await TestHost.create({
      daemonArgs: args,
      beforeDaemon: async (h) => {
        await runOk('ip', ['-n', h.netns, '-batch', '-'], {
          input: [
            `link add btvu0 mtu 1400 type veth peer name btvh${index} mtu 1400 netns ${this.underlay}`,
            `addr add ${UNDERLAY_PREFIX}${index + 1}/24 dev btvu0`, 'link set btvu0 up',
          ].join('\n') + '\n',
        });
        await runOk('ip', ['-n', this.underlay, 'link', 'set', `btvh${index}`, 'master', 'btub0', 'up']);
      },
    });
    const lh = new LabHost(host, index, this);
    this.hosts.push(lh);
    return lh;
  }

  /** Gives the underlay namespace an address of its own: a far end that no overlay routes to. */
  /**
   * Makes a swarm through the docker CLI: the first host inits, `managers` more join as managers,
   * the rest of the hosts as workers. Throws with the CLI's words if a step fails.
   */
  async formSwarm(managers: number): Promise<void> {
    const [first, ...rest] = this.hosts;
    const ok = async (h: LabHost, args: string[]): Promise<string> => {
      const r = await h.host.docker(args);
      if (r.code !== 0) throw new Error(`${h.name}: docker ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.trim();
    };
    await ok(first!, ['swarm', 'init', '--advertise-addr', first!.addr]);
    const mt = await ok(first!, ['swarm', 'join-token', '-q', 'manager']);
    const wt = await ok(first!, ['swarm', 'join-token', '-q', 'worker']);
    for (const [i, h] of rest.entries()) {
      await ok(h, ['swarm', 'join', '--token', i < managers ? mt : wt, ...(i < managers ? ['--advertise-addr', h.addr] : []), `${first!.addr}:2377`]);
    }
  }

  async underlayAddress(cidr: string): Promise<void> {
    await runOk('ip', ['-n', this.underlay, 'addr', 'replace', cidr, 'dev', 'btub0']);
  }

  /** Cuts a host off the underlay (its own link stays up: the far end goes dark). */
  async partition(h: LabHost): Promise<void> {
    await runOk('ip', ['-n', this.underlay, 'link', 'set', h.port, 'down']);
  }

  async heal(h: LabHost): Promise<void> {
    await runOk('ip', ['-n', this.underlay, 'link', 'set', h.port, 'up']);
  }

  /** Each host's whole berthd log so far, as DIR/NAME.log (best effort: a log is no test's outcome). */
  async saveLogs(dir: string): Promise<void> {
    for (const h of this.hosts) await fs.writeFile(join(dir, `${h.name}.log`), h.host.daemonLog).catch(() => undefined);
  }

  /** Everything goes, past errors; returns what is left over so a test can fail on it. */
  async destroy(): Promise<string[]> {
    const leaks: string[] = [];
    // BERTH_LAB_LOGS=DIR (an existing directory) keeps each host's whole berthd log there as NAME.log;
    // any other value prints the end of each.
    const logs = process.env.BERTH_LAB_LOGS;
    if (logs) {
      if (await fs.stat(logs).then((s) => s.isDirectory(), () => false)) await this.saveLogs(logs);
      else for (const h of this.hosts) console.error(`--- ${h.name} berthd log\n${h.host.daemonLog.slice(-4000)}`);
    }
    for (const h of [...this.hosts].reverse()) leaks.push(...(await h.host.destroy().catch((e) => [`host ${h.name}: ${e}`])));
    if (this.store) {
      const p = this.store.proc;
      if (p.exitCode === null) {
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        await exited;
      }
      await fs.rm(this.store.dir, { recursive: true, force: true });
    }
    await run('ip', ['netns', 'del', this.underlay]);
    if (existsSync(`/run/netns/${this.underlay}`)) leaks.push(`netns ${this.underlay} still exists`);
    return leaks;
  }
}

/** Polls a docker CLI command until its output satisfies `ok`; returns that output. */
export async function waitForOutput(fn: () => Promise<{ code: number; stdout: string; stderr: string }>, ok: (out: string) => boolean, what: string, timeoutMs = 15_000): Promise<string> {
  let last = '';
  try {
    return await waitFor(async () => {
      const r = await fn();
      last = `${r.code} ${r.stdout}${r.stderr}`;
      return r.code === 0 && ok(r.stdout) ? r.stdout : undefined;
    }, what, timeoutMs);
  } catch (e) {
    throw new Error(`${(e as Error).message}; last: ${last}`);
  }
}

/** The docker CLI on a lab host: its trimmed output, or a failed assertion naming the host and command. */
export async function dockerOk(h: LabHost, args: string[]): Promise<string> {
  const r = await h.host.docker(args);
  assert.equal(r.code, 0, `${h.name}: docker ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

/** The docker CLI on a lab host must fail, with `message` in its stderr. */
export async function dockerFails(h: LabHost, args: string[], message: RegExp | string): Promise<void> {
  const r = await h.host.docker(args);
  assert.notEqual(r.code, 0, `${h.name}: docker ${args.join(' ')} should have failed`);
  if (typeof message === 'string') assert.ok(r.stderr.includes(message), `stderr: ${r.stderr}`);
  else assert.match(r.stderr, message);
}

/** A service's tasks as a manager lists them (GET /tasks filtered by service), in the caller's shape. */
export async function serviceTasks<T>(h: LabHost, service: string): Promise<T[]> {
  const r = await h.host.api('GET', `/tasks?filters=${encodeURIComponent(JSON.stringify({ service: [service] }))}`);
  assert.equal(r.status, 200, r.body);
  return r.json as T[];
}
