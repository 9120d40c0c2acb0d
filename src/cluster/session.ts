import type { Server } from 'node:https';
import type { Lease } from 'etcd3';
import { promises as fs } from 'node:fs';
import { errorMessage } from '../util/errors.js';
import { EtcdMember, clientUrl, peerUrl } from './etcdmember.js';
import { K, type NodeRecord } from './keys.js';
import type { JoinAnswer, JoinRequest } from './joinwire.js';
import { serveJoins } from './joinwire.js';
import { Presence } from './presence.js';
import type { LocalState, LocalStateFiles } from './state.js';
import { ClusterStore } from './store.js';
import { goTime } from './ids.js';

export interface SessionOptions {
  files: LocalStateFiles;
  leaseTtlSec: number;
  /** An external store's endpoints (berthd --cluster-store): no member is run here then. */
  external?: string[];
  log: (m: string) => void;
  /** Called when this node was removed from the cluster by a manager (node rm --force). */
  onRemoved: () => void;
  handleJoin: (s: Session, r: JoinRequest, remote: string) => Promise<JoinAnswer>;
}

/**
 * The running parts of one node's membership: its store client, its presence, its etcd member
 * and join endpoint while it is a manager, and the watch on its own node record through which
 * managers promote, demote or remove it. Role changes are applied one at a time.
 */
export class Session {
  store: ClusterStore;
  member?: EtcdMember;
  private joins?: Server;
  private presence: Presence;
  private stopWatch?: () => Promise<void>;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private refresher?: NodeJS.Timeout;
  /** Hear of each new presence lease: records written under the old one must be written again. */
  private readonly leaseListeners: Array<(lease: Lease) => void> = [];

  constructor(public state: LocalState, private readonly o: SessionOptions, store: ClusterStore) {
    this.store = store;
    this.presence = this.newPresence(store);
  }

  private newPresence(store: ClusterStore): Presence {
    const p = new Presence(store, K.aliveOf(this.state.nodeId), () => ({ Addr: this.state.addr, Since: goTime() }), this.o.leaseTtlSec, this.o.log);
    p.onLease = (lease) => { for (const l of this.leaseListeners) l(lease); };
    return p;
  }

  /** This node's presence lease while it holds one: its own records are written under it. */
  get lease(): Lease | undefined { return this.presence.current; }

  onLease(cb: (lease: Lease) => void): void {
    this.leaseListeners.push(cb);
  }

  static async connect(state: LocalState, o: SessionOptions): Promise<ClusterStore> {
    if (o.external) return new ClusterStore(o.external);
    return new ClusterStore(state.endpoints, await o.files.readTls(), localUrl(state));
  }

  memberFor(state: LocalState, initialCluster: string, memberState: 'new' | 'existing'): EtcdMember {
    return new EtcdMember({
      name: state.nodeId, addr: this.listenHost(state), dir: this.o.files.dir, tlsDir: this.o.files.tlsDir,
      initialCluster, state: memberState, clusterToken: state.clusterId,
    }, this.o.log);
  }

  /** Where this node's member and join endpoint listen: the listen address, or the advertised one. */
  listenHost(state: LocalState = this.state): string {
    const h = state.listenAddr.replace(/:\d+$/, '');
    return h === '0.0.0.0' || h === '' ? state.addr : h;
  }

  async start(): Promise<void> {
    this.presence.start();
    if (this.state.role === 'manager') await this.startJoins();
    const mine = await this.watchSelf();
    // A change made while this berthd was down is applied now.
    this.enqueue(() => (mine ? this.reconcile(mine.value) : this.removed()));
    this.refresher = setInterval(() => {
      this.queue = this.queue.then(() => this.refreshEndpoints()).catch(() => undefined);
    }, 5000);
    this.refresher.unref();
  }

  private async watchSelf(): Promise<{ value: NodeRecord } | undefined> {
    const rev = await this.store.revision();
    const mine = await this.store.get<NodeRecord>(K.node(this.state.nodeId));
    this.stopWatch = await this.store.watch<NodeRecord>(K.node(this.state.nodeId), rev + 1, (e) => {
      this.enqueue(() => (e.type === 'delete' ? this.removed() : this.reconcile(e.value)));
    });
    return mine;
  }

  /**
   * The store's client follows the managers: a node that joined when there was one manager must
   * not lose the store when that one goes. Every few seconds the members' client URLs are read
   * from the node records; when they changed, the state file is updated and the client replaced
   * (presence and watch move to the new one; the presence key never lapses).
   */
  private async refreshEndpoints(): Promise<void> {
    if (this.closed || this.o.external) return;
    const nodes = await this.store.list<NodeRecord>(K.nodes);
    const urls = [...nodes.values()].filter((n) => n.value.MemberId).map((n) => clientUrl(n.value.Addr)).sort();
    if (urls.length === 0 || urls.join() === [...this.store.endpoints].sort().join()) return;
    this.state = { ...this.state, endpoints: urls };
    await this.o.files.save(this.state);
    const old = this.store;
    const next = new ClusterStore(urls, await this.o.files.readTls(), localUrl(this.state));
    await this.stopWatch?.().catch(() => undefined);
    await this.presence.stop(false);
    this.store = next;
    this.presence = this.newPresence(next);
    this.presence.start();
    await this.watchSelf();
    // Calls still running on the old client finish first.
    setTimeout(() => old.close(), 5000).unref();
  }

  /**
   * Role changes run one at a time; one that fails (the store busy re-forming) is tried again
   * from the record as it then is, until it holds.
   */
  private enqueue(step: () => Promise<void>): void {
    this.queue = this.queue.then(step).catch((err) => {
      this.o.log(`cluster: ${errorMessage(err)}${(err as Error).cause ? ` (${errorMessage((err as Error).cause)})` : ''}; trying again`);
      setTimeout(() => {
        if (this.closed) return;
        this.enqueue(async () => {
          const cur = await this.store.get<NodeRecord>(K.node(this.state.nodeId));
          return cur ? this.reconcile(cur.value) : this.removed();
        });
      }, 2000).unref();
    });
  }

  private async startJoins(): Promise<void> {
    if (this.joins) return;
    const tls = await this.o.files.readTls();
    this.joins = await serveJoins({ host: this.listenHost(), port: this.state.port, cert: tls.cert.toString(), key: tls.key.toString(), ca: tls.ca.toString() },
      (r, remote) => this.o.handleJoin(this, r, remote));
  }

  private async stopJoins(): Promise<void> {
    const j = this.joins;
    this.joins = undefined;
    if (j) await new Promise((r) => { j.close(r); j.closeAllConnections(); });
  }

  /** Brings this node's running parts in line with what managers decided for it. */
  private async reconcile(rec: NodeRecord): Promise<void> {
    if (this.closed) return;
    if (rec.Spec.Role === 'manager' && this.state.role !== 'manager') await this.becomeManager();
    else if (rec.Spec.Role === 'worker' && this.state.role === 'manager') await this.becomeWorker();
  }

  private async removed(): Promise<void> {
    if (this.closed) return;
    this.o.log('cluster: this node was removed from the swarm');
    this.o.onRemoved();
  }

  /** Promotion: this node adds its own member as a learner, starts it, and has it promoted. */
  private async becomeManager(): Promise<void> {
    const s = { ...this.state, role: 'manager' as const };
    if (this.o.external) {
      this.state = s;
      await this.o.files.save(s);
      await this.startJoins();
      return;
    }
    const { id, members } = await this.store.addLearner(peerUrl(this.listenHost()));
    const initial = members.map((m) => `${m.name || s.nodeId}=${m.peerURLs[0]}`).join(',');
    const member = this.memberFor(s, initial, 'existing');
    try {
      await member.start();
      await promoteWhenSynced(this.store, id);
      await this.setMemberId(id);
    } catch (e) {
      await this.store.removeMember(id).catch(() => undefined);
      await member.stop();
      await fs.rm(member.dataDir, { recursive: true, force: true });
      throw e;
    }
    this.member = member;
    this.state = { ...s, member: true, initialCluster: initial, memberState: 'existing', endpoints: [...new Set([...this.state.endpoints, clientUrl(s.addr)])] };
    await this.o.files.save(this.state);
    await this.startJoins();
  }

  /** Demotion: the manager that decided it removed our member already; stop it and its data. */
  private async becomeWorker(): Promise<void> {
    await this.stopJoins();
    if (this.member) {
      await this.member.stop();
      await fs.rm(this.member.dataDir, { recursive: true, force: true });
      this.member = undefined;
    }
    const endpoints = this.state.endpoints.filter((u) => u !== clientUrl(this.state.addr));
    this.state = { ...this.state, role: 'worker', member: false, endpoints };
    delete this.state.initialCluster;
    delete this.state.memberState;
    await this.o.files.save(this.state);
  }

  private async setMemberId(id: string): Promise<void> {
    for (let i = 0; i < 20; i++) {
      const cur = await this.store.get<NodeRecord>(K.node(this.state.nodeId));
      if (!cur) return;
      if (await this.store.update(K.node(this.state.nodeId), { ...cur.value, MemberId: id, UpdatedAt: goTime() }, cur.modRevision)) return;
    }
    throw new Error('could not record the etcd member of this node');
  }

  /** Stops reacting to managers' decisions (a node on its way out must not also be promoted). */
  async quiesce(): Promise<void> {
    this.closed = true;
    clearInterval(this.refresher);
    await this.stopWatch?.().catch(() => undefined);
    this.stopWatch = undefined;
    await this.queue.catch(() => undefined);
  }

  /** Stops the running parts. `leaving`: revoke the presence (Down at once) and stop the member. */
  async close(leaving: boolean): Promise<void> {
    await this.quiesce();
    await this.presence.stop(leaving);
    await this.stopJoins();
    if (leaving) await this.member?.stop();
    else this.member?.detach();
    this.store.close();
  }
}

/** A manager's own member answers on loopback inside its namespace (its certificate names 127.0.0.1). */
function localUrl(state: LocalState): string | undefined {
  return state.member ? clientUrl('127.0.0.1') : undefined;
}

/** A learner can be promoted only once it has caught up with the leader; that takes a moment. */
export async function promoteWhenSynced(store: ClusterStore, id: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await store.promote(id);
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`the new etcd member did not catch up: ${errorMessage(e)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}
