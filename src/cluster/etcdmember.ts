import { spawn } from 'node:child_process';
import { openSync, closeSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { pidAlive } from '../util/process.js';

/**
 * One etcd member run by berthd on a manager. The process is started in its own session with its
 * log in a file, so it outlives a berthd killed with -9 (the store stays up for the other nodes);
 * the next berthd adopts it through its pid file. A member that dies is started again with
 * back-off while it is wanted.
 */

export const CLIENT_PORT = 2379;
export const PEER_PORT = 2380;

export interface MemberConfig {
  name: string;
  /** Underlay address it serves clients and peers on (and loopback for clients, inside the host). */
  addr: string;
  dir: string;
  tlsDir: string;
  initialCluster: string;
  state: 'new' | 'existing';
  clusterToken: string;
}

/**
 * Members talk over one underlay segment (a LAN), not etcd's default WAN-ish 100/1000 ms: a new
 * single member elects itself after 1 to 10 heartbeats (etcd fast-forwards the rest of its
 * election ticks), so this halves what `swarm init` waits for its store, and a lost leader is
 * replaced twice as fast. Pre-vote keeps a member that was cut off from calling an election that
 * would unseat a healthy leader when it comes back. (The bench starts etcd alone with these too.)
 */
export const TIMING_FLAGS = ['--heartbeat-interval=50', '--election-timeout=500', '--pre-vote'];

/**
 * The timings of a brand-new single-member cluster (`swarm init`): it elects itself after 1 to 10
 * heartbeats of 25 ms (25–250 ms) instead of 50–500 ms, most of what init waits for. They stay
 * with that process after other managers join (a restart takes TIMING_FLAGS), and that is safe:
 * raft's safety never rests on timing, and etcd serves linearizable reads by a quorum round
 * (ReadIndex), not by a leader's lease, so a short timeout cannot make a read stale. What a short
 * timeout can cost is availability. As a follower it asks for a pre-vote sooner, which the others
 * refuse while they still hear their leader (etcd runs raft with check-quorum: a leader's
 * followers ignore candidates within their own, longer, timeout). As the leader it steps down if
 * no majority answered any of its heartbeats for 250 ms: with two managers, a second member
 * stalled that long (a slow fsync on a loaded machine) costs about a second without a leader,
 * which 500 ms would ride out. With 150 ms, ingress.test's two managers once went without a
 * leader for seconds on this 2-core machine under load (not pinned on the timeout: a rerun
 * passed), so it is 250 ms, etcd's own ratio of ten heartbeats to a timeout, at half the other
 * members' timings.
 */
export const FRESH_SINGLE_TIMING_FLAGS = ['--heartbeat-interval=25', '--election-timeout=250', '--pre-vote'];

export const peerUrl = (addr: string) => `https://${addr}:${PEER_PORT}`;
export const clientUrl = (addr: string) => `https://${addr}:${CLIENT_PORT}`;

export class EtcdMember {
  private pid?: number;
  private wanted = false;
  private timer?: NodeJS.Timeout;
  private backoffMs = 200;
  restarts = 0;

  constructor(private readonly c: MemberConfig, private readonly log: (m: string) => void = () => undefined) {}

  get dataDir(): string { return join(this.c.dir, 'etcd'); }
  private get pidFile(): string { return join(this.c.dir, 'etcd.pid'); }
  get currentPid(): number | undefined { return this.pid; }
  /** The CAs the running process was started with: etcd reads its trusted CAs only then. */
  private get trustFile(): string { return join(this.c.dir, 'etcd.trust'); }
  /** Set for one start: `--force-new-cluster` (swarm init --force-new-cluster). */
  private forceNew = false;

  /** Starts the member, or adopts the one a previous berthd left running. */
  async start(): Promise<void> {
    this.wanted = true;
    const old = Number(await fs.readFile(this.pidFile, 'utf8').catch(() => ''));
    if (old && pidAlive(old) && (await this.isOurs(old))) {
      this.pid = old;
    } else {
      await this.spawn();
    }
    this.watch();
  }

  private async isOurs(pid: number): Promise<boolean> {
    const cmd = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    return cmd.split('\0').includes(`--data-dir=${this.dataDir}`);
  }

  private async spawn(): Promise<void> {
    const c = this.c;
    const tls = (f: string) => join(c.tlsDir, f);
    const args = [
      `--name=${c.name}`, `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${clientUrl(c.addr)},${clientUrl('127.0.0.1')}`, `--advertise-client-urls=${clientUrl(c.addr)}`,
      `--listen-peer-urls=${peerUrl(c.addr)}`, `--initial-advertise-peer-urls=${peerUrl(c.addr)}`,
      `--initial-cluster=${c.initialCluster}`, `--initial-cluster-state=${c.state}`, `--initial-cluster-token=${c.clusterToken}`,
      `--cert-file=${tls('node.crt')}`, `--key-file=${tls('node.key')}`, `--trusted-ca-file=${tls('ca.crt')}`, '--client-cert-auth',
      `--peer-cert-file=${tls('node.crt')}`, `--peer-key-file=${tls('node.key')}`, `--peer-trusted-ca-file=${tls('ca.crt')}`, '--peer-client-cert-auth',
      // Nothing on plain HTTP, no metrics listener, no v2 API: the listeners above are all there is.
      '--enable-v2=false', '--logger=zap', '--log-outputs=stderr',
      // etcd's own check refuses any member change until every voter has been connected for 5 s,
      // learners included, which add nothing to quorum: the second of two managers joining one
      // after the other waited 5 s for it. berth adds members only as learners, etcd still
      // promotes a learner only once it caught up, and removals keep swarmkit's rule, which berth
      // checks itself (Control.checkDemote: none that loses quorum; a forced leave may, as Docker's).
      '--strict-reconfig-check=false',
      // LAN timings (TIMING_FLAGS above); shorter for a new cluster of this member alone.
      ...(await this.freshSingle() ? FRESH_SINGLE_TIMING_FLAGS : TIMING_FLAGS),
      // etcd keeps every revision unless told otherwise, and berth writes all the time (presence
      // renewals, applied revisions, log batches): left alone the store grows until its quota and
      // then refuses every write. History older than ten minutes goes; a watch that has to start
      // further back is told so and lists again (store.ts watchBatches), as Kubernetes' compaction
      // of its etcd every five minutes works.
      '--auto-compaction-mode=periodic', '--auto-compaction-retention=10m',
      // Once: the member rewrites the membership to itself alone; later starts must not again.
      ...(this.forceNew ? ['--force-new-cluster'] : []),
    ];
    this.forceNew = false;
    const trust = await fs.readFile(tls('ca.crt'), 'utf8');
    await fs.mkdir(c.dir, { recursive: true, mode: 0o700 });
    const fd = openSync(join(c.dir, 'etcd.log'), 'a');
    try {
      const child = spawn('etcd', args, { detached: true, stdio: ['ignore', fd, fd] });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
      this.pid = child.pid!;
      // Reaped by us while we live; after a berthd restart the adopted one is watched by pid.
      child.on('exit', () => { if (this.pid === child.pid) this.pid = undefined; });
      child.unref();
    } finally {
      closeSync(fd);
    }
    await fs.writeFile(this.pidFile, String(this.pid));
    await fs.writeFile(this.trustFile, trust);
  }

  /** A new cluster of this member alone, started for the first time (no data yet): `swarm init`. */
  private async freshSingle(): Promise<boolean> {
    if (this.c.state !== 'new' || this.c.initialCluster.includes(',')) return false;
    return fs.access(this.dataDir).then(() => false, () => true);
  }

  /** The CA bundle the running member trusts; undefined when it is not known (an older berth started it). */
  async loadedTrust(): Promise<string | undefined> {
    return fs.readFile(this.trustFile, 'utf8').catch(() => undefined);
  }

  /** Stops and starts the member again (to read new trusted CAs, or once with --force-new-cluster). */
  async restart(o: { forceNewCluster?: boolean } = {}): Promise<void> {
    await this.stop();
    this.forceNew = Boolean(o.forceNewCluster);
    await this.start();
  }

  private watch(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (!this.wanted) return;
      if (this.pid !== undefined && pidAlive(this.pid)) {
        this.backoffMs = 200;
        return;
      }
      this.pid = undefined;
      clearInterval(this.timer);
      const wait = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 5000);
      setTimeout(() => {
        if (!this.wanted) return;
        this.restarts++;
        this.log(`etcd member ${this.c.name} exited; starting it again (restart ${this.restarts})`);
        this.spawn().catch((e) => this.log(`etcd restart failed: ${(e as Error).message}`)).finally(() => this.watch());
      }, wait).unref();
    }, 250);
    this.timer.unref();
  }

  /** The member's last complaint, for an error that says why it did not start. */
  async lastLog(): Promise<string> {
    const text = await fs.readFile(join(this.c.dir, 'etcd.log'), 'utf8').catch(() => '');
    const line = text.trim().split('\n').reverse().find((l) => /"level":"(fatal|error)"/.test(l)) ?? '';
    try {
      const j = JSON.parse(line) as { msg?: string; error?: string };
      return [j.msg, j.error].filter(Boolean).join(': ');
    } catch { return line.slice(0, 300); }
  }

  /** Leaves the member running (a berthd that stops keeps the store up); stops supervising it. */
  detach(): void {
    clearInterval(this.timer);
  }

  /** Stops the member for good (leave, demote): SIGTERM, then SIGKILL after a bound. */
  async stop(): Promise<void> {
    this.wanted = false;
    clearInterval(this.timer);
    const pid = this.pid ?? (Number(await fs.readFile(this.pidFile, 'utf8').catch(() => '')) || undefined);
    if (pid && pidAlive(pid) && (await this.isOurs(pid))) {
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + 5000;
      while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
      while (pidAlive(pid)) await new Promise((r) => setTimeout(r, 20));
    }
    this.pid = undefined;
    await fs.rm(this.pidFile, { force: true });
  }
}
