/**
 * Keeps the topology current: one snapshot from the Engine API, then a new one after every
 * container or network event of the daemon's event stream. The stream is opened before the
 * first snapshot, so no change between the two is missed; a lost stream is reopened and
 * followed by a fresh snapshot.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { DaemonError, type Client } from '../cli/client.js';
import { errorMessage } from '../util/errors.js';
import { buildTopology, inspectSummary, type ApiContainer, type ApiInfo, type ApiNetwork, type ApiNode, type ApiPolicy, type ApiService, type ApiTask, type InspectSummary, type Topology } from './model.js';

/** Container events that change nothing the page shows. */
const QUIET = /^(exec_|attach$|resize$|top$|export$|archive-path$|extract-to-dir$|commit$|copy$)/;
/** Node state has no events here: a swarm's hosts are read again this often. */
const NODE_POLL_MS = 5000;
/** Events come in bursts (create, connect, start): one snapshot for a burst. */
const SETTLE_MS = 40;

export interface SourceStatus { connected: boolean; error?: string }

export class TopologySource {
  private readonly emitter = new EventEmitter();
  private topology?: Topology;
  private lastJson = '';
  private status: SourceStatus = { connected: false };
  private stream?: IncomingMessage;
  private closed = false;
  private refreshing?: Promise<void>;
  private dirty = false;
  private settle?: NodeJS.Timeout;
  private nodePoll?: NodeJS.Timeout;
  private retry?: NodeJS.Timeout;

  constructor(private readonly client: Client) {
    this.emitter.setMaxListeners(0);
  }

  get current(): Topology | undefined { return this.topology; }
  get state(): SourceStatus { return this.status; }

  /** Resolves once the first snapshot is taken; a daemon that cannot be reached fails it. */
  async start(): Promise<void> {
    await this.follow();
  }

  /** `change` with each new topology, `status` when the daemon is lost or found again. */
  on(event: 'change', cb: (t: Topology) => void): () => void;
  on(event: 'status', cb: (s: SourceStatus) => void): () => void;
  on(event: string, cb: (x: any) => void): () => void {
    this.emitter.on(event, cb);
    return () => this.emitter.off(event, cb);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.settle);
    clearTimeout(this.retry);
    clearInterval(this.nodePoll);
    this.stream?.destroy();
  }

  /** A digest of `GET /containers/{id}/json` and of the container's policy. */
  async inspect(ref: string): Promise<InspectSummary> {
    const c = await this.client.json('GET', `/containers/${encodeURIComponent(ref)}/json`);
    const policy = c.State?.Running ? await this.client.json<ApiPolicy>('GET', `/berth/policy/${encodeURIComponent(c.Id)}`).catch(() => undefined) : undefined;
    return inspectSummary(c, policy);
  }

  private async follow(): Promise<void> {
    const stream = await this.client.stream('GET', '/events', { query: { filters: JSON.stringify({ type: ['container', 'network'] }) } });
    if (this.closed) return void stream.destroy();
    this.stream = stream;
    let buf = '';
    stream.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        try {
          const ev = JSON.parse(line) as { Type?: string; Action?: string };
          if (ev.Type === 'network' || (ev.Type === 'container' && !QUIET.test(ev.Action ?? ''))) this.schedule();
        } catch { /* a torn line cannot happen on a healthy stream; the next snapshot covers it */ }
      }
    });
    const lost = (e?: Error) => {
      if (this.closed || this.stream !== stream) return;
      this.stream = undefined;
      this.setStatus({ connected: false, error: e ? errorMessage(e) : 'the daemon closed the event stream' });
      this.reconnect(500);
    };
    stream.on('error', lost);
    stream.on('close', () => lost());
    try {
      await this.refresh();
    } catch (e) {
      this.stream = undefined;
      stream.destroy();
      throw e;
    }
  }

  private reconnect(delayMs: number): void {
    if (this.closed) return;
    this.retry = setTimeout(() => {
      this.follow().catch((e) => {
        this.setStatus({ connected: false, error: errorMessage(e) });
        this.reconnect(Math.min(delayMs * 2, 5000));
      });
    }, delayMs);
  }

  private schedule(): void {
    clearTimeout(this.settle);
    this.settle = setTimeout(() => void this.refresh().catch(() => undefined), SETTLE_MS);
  }

  /** One snapshot at a time; a change during one is followed by another. */
  private refresh(): Promise<void> {
    if (this.refreshing) {
      this.dirty = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      try {
        do {
          this.dirty = false;
          const t = await this.snapshot();
          if (this.closed) return;
          this.setStatus({ connected: true });
          this.pollNodes(t.host.swarm === 'active');
          // A swarm's poll mostly finds nothing new: the pages are not redrawn for that.
          const json = JSON.stringify(t);
          if (json === this.lastJson) continue;
          this.lastJson = json;
          this.topology = t;
          this.emitter.emit('change', t);
        } while (this.dirty);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  private pollNodes(swarm: boolean): void {
    if (swarm && !this.nodePoll) this.nodePoll = setInterval(() => this.schedule(), NODE_POLL_MS);
    if (!swarm && this.nodePoll) {
      clearInterval(this.nodePoll);
      this.nodePoll = undefined;
    }
  }

  private async snapshot(): Promise<Topology> {
    const [info, networks, containers, policy] = await Promise.all([
      this.client.json<ApiInfo>('GET', '/info'),
      this.client.json<ApiNetwork[]>('GET', '/networks'),
      this.client.json<ApiContainer[]>('GET', '/containers/json', { query: { all: true } }),
      // A daemon without berth's policy routes (Docker's own) has none to show.
      this.client.json<ApiPolicy[]>('GET', '/berth/policy').catch((e) => (e instanceof DaemonError && e.status === 404 ? [] : Promise.reject(e))),
    ]);
    // Only a manager lists nodes; a worker shows itself.
    const manager = !!info.Swarm?.ControlAvailable;
    const [nodes, services, tasks] = manager ? await Promise.all([
      this.client.json<ApiNode[]>('GET', '/nodes').catch(() => undefined),
      this.client.json<ApiService[]>('GET', '/services').catch(() => undefined),
      this.client.json<ApiTask[]>('GET', '/tasks').catch(() => undefined),
    ]) : [];
    return buildTopology({ info, networks, containers, policy, ...(nodes ? { nodes } : {}), ...(services ? { services } : {}), ...(tasks ? { tasks } : {}) });
  }

  private setStatus(s: SourceStatus): void {
    if (s.connected === this.status.connected && s.error === this.status.error) return;
    this.status = s;
    this.emitter.emit('status', s);
  }
}
