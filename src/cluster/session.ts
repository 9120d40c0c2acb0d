import type { Server } from 'node:https';
import type { Lease } from 'etcd3';
import { promises as fs } from 'node:fs';
import { errorMessage } from '../util/errors.js';
import { EtcdMember, clientUrl, peerUrl } from './etcdmember.js';
import { K, type ClusterRecord, type NodeRecord } from './keys.js';
import type { JoinAnswer, JoinRequest } from './joinwire.js';
import { requestRenew, serveJoins } from './joinwire.js';
import { certValidity, issuedBy, makeCsr } from './pki.js';
import { advanceRotation, issuerOf, pemList, renewAt, renewalTimer, trustOf, wantedIssuer } from './rotation.js';
import { Presence } from './presence.js';
import type { LocalState, LocalStateFiles } from './state.js';
import { ClusterStore, type TlsFiles, type Versioned } from './store.js';
import { goTime } from './ids.js';
import { Steps } from '../util/steps.js';

export interface SessionOptions {
  files: LocalStateFiles;
  leaseTtlSec: number;
  /** An external store's endpoints (berthd --cluster-store): no member is run here then. */
  external?: string[];
  log: (m: string) => void;
  /** Called when this node was removed from the cluster by a manager (node rm --force). */
  onRemoved: () => void;
  handleJoin: (s: Session, r: JoinRequest, remote: string) => Promise<JoinAnswer>;
  /** A manager's signing of a node certificate (Control.renew). */
  renew: (s: Session, nodeId: string, csr: string) => Promise<string>;
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
  private stopClusterWatch?: () => Promise<void>;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private refresher?: NodeJS.Timeout;
  /** Hear of each new presence lease: records written under the old one must be written again. */
  private readonly leaseListeners: Array<(lease: Lease) => void> = [];
  private renewTimer?: NodeJS.Timeout;
  /** Set while the cluster record shows a CA rotation: managers then move it on (rotation.ts). */
  private rotating = false;
  private driving = false;
  private driver?: NodeJS.Timeout;
  /** Set by `swarm init` for the session of the swarm it made: its store holds no networks yet. */
  newSwarm = false;
  /** The cluster record as the last start of the watches read it (the data path port is fixed at init). */
  cluster?: ClusterRecord;

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

  /** A store client with this node's certificate: `tls` when init or join has it in hand (just written), else read. */
  static async connect(state: LocalState, o: SessionOptions, tls?: TlsFiles): Promise<ClusterStore> {
    if (o.external) return new ClusterStore(o.external);
    return new ClusterStore(state.endpoints, tls ?? await o.files.readTls(), localUrl(state));
  }

  /**
   * A store client that talks only to the members at these hosts: for what this node writes
   * after its own member left the store's cluster (a removed member stops serving, and a call
   * the client sends it is lost).
   */
  async storeAt(hosts: string[]): Promise<ClusterStore> {
    return new ClusterStore(hosts.map((h) => clientUrl(h)), await this.o.files.readTls());
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

  /**
   * `cert`: this node's certificate when the caller has it in hand (init, join), else it is read.
   * `present`: its presence key is in the store already (a worker's join wrote it): this node's
   * own lease and presence follow without being waited for.
   */
  async start(cert?: string, present = false): Promise<void> {
    // Independent round trips, together: a node ls right after init or join shows this node
    // Ready (its presence is written), and its join endpoint is up. The watches are made behind
    // (from the revision read here, so nothing is missed meanwhile): etcd's client makes a
    // stream's watches one at a time, each a round trip.
    const st = new Steps('session start');
    const [, , seen] = await Promise.all([
      present ? void this.presence.start() : this.presence.start().then(() => st.mark('presence')),
      this.state.role === 'manager' ? this.startJoins() : undefined,
      this.watchStore(false).then((x) => { st.mark('watches'); return x; }),
    ]);
    // A change made while this berthd was down is applied now.
    this.catchUp(seen);
    this.refresher = setInterval(() => {
      this.queue = this.queue.then(() => this.refreshEndpoints()).catch(() => undefined);
    }, 5000);
    this.refresher.unref();
    this.driver = setInterval(() => void this.drive(), 1000);
    this.driver.unref();
    await this.scheduleRenewal(cert);
    st.mark('renewal');
    st.done();
  }

  /**
   * Watches this node's record (role changes, removal) and the cluster's (its CA) from one
   * revision on; returns the records as of that revision. With `wait` false it returns once they
   * are read, and a watch that cannot be made is tried again (rewatch).
   */
  private async watchStore(wait = true): Promise<{ mine?: { value: NodeRecord }; cluster?: { value: ClusterRecord } }> {
    const store = this.store;
    const { revision: rev, found } = await store.readAt([K.node(this.state.nodeId), K.cluster]);
    const mine = found[0] as Versioned<NodeRecord> | undefined;
    const cluster = found[1] as Versioned<ClusterRecord> | undefined;
    const made = this.makeWatches(store, rev);
    if (wait) await made;
    else {
      made.catch((e) => {
        if (this.closed || this.store !== store) return;
        this.o.log(`cluster: watching the store: ${errorMessage(e)}; trying again`);
        void this.stopWatches().then(() => this.rewatch());
      });
    }
    this.rotating = Boolean(cluster?.value.Rotation);
    if (cluster) this.cluster = cluster.value;
    return { ...(mine ? { mine } : {}), ...(cluster ? { cluster } : {}) };
  }

  private async makeWatches(store: ClusterStore, rev: number): Promise<void> {
    const [node, cl] = await Promise.allSettled([
      store.watch<NodeRecord>(K.node(this.state.nodeId), rev + 1, (e) => {
        this.enqueue(() => (e.type === 'delete' ? this.removed() : this.reconcile(e.value)));
      }),
      store.watch<ClusterRecord>(K.cluster, rev + 1, (e) => {
        if (e.type === 'put' && e.key === K.cluster) this.enqueueCa(() => this.followCa(e.value));
      }),
    ]);
    // Made for a session that ended, or a client replaced meanwhile: they go at once.
    if (this.closed || this.store !== store) {
      for (const w of [node, cl]) if (w.status === 'fulfilled') await w.value().catch(() => undefined);
      return;
    }
    // A watch made when the other failed is kept where stopWatches finds it, not leaked.
    if (node.status === 'fulfilled') this.stopWatch = node.value;
    if (cl.status === 'fulfilled') this.stopClusterWatch = cl.value;
    if (node.status === 'rejected') throw node.reason;
    if (cl.status === 'rejected') throw cl.reason;
  }

  /** Applies the records as they were when the watches began: what changed while none ran. */
  private catchUp({ mine, cluster }: { mine?: { value: NodeRecord }; cluster?: { value: ClusterRecord } }): void {
    this.enqueue(() => (mine ? this.reconcile(mine.value) : this.removed()));
    if (cluster) this.enqueueCa(() => this.followCa(cluster.value));
  }

  /**
   * Watches on a new client, tried until they hold. A reconnect in the trust step of a rotation
   * meets the managers' members restarting; a node left without watches would never hear of the
   * issue step (nor of a promotion or its removal), and the rotation would wait for it forever.
   */
  private async rewatch(): Promise<void> {
    for (let delay = 250; !this.closed; delay = Math.min(delay * 2, 2000)) {
      try {
        this.catchUp(await this.watchStore());
        return;
      } catch (e) {
        await this.stopWatches();
        this.o.log(`cluster: watching the store: ${errorMessage(e)}; trying again`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private async stopWatches(): Promise<void> {
    await Promise.all([this.stopWatch?.().catch(() => undefined), this.stopClusterWatch?.().catch(() => undefined)]);
    this.stopWatch = undefined;
    this.stopClusterWatch = undefined;
  }

  /**
   * The store's client follows the managers: a node that joined when there was one manager must
   * not lose the store when that one goes. Every few seconds the members' client URLs are read
   * from the node records; when they changed, the state file is updated and the client replaced.
   */
  private async refreshEndpoints(): Promise<void> {
    if (this.closed || this.o.external) return;
    const nodes = await this.store.list<NodeRecord>(K.nodes);
    const urls = [...nodes.values()].filter((n) => n.value.MemberId).map((n) => clientUrl(n.value.Addr)).sort();
    if (urls.length === 0 || urls.join() === [...this.store.endpoints].sort().join()) return;
    this.state = { ...this.state, endpoints: urls };
    await this.o.files.save(this.state);
    await this.reconnect();
  }

  /**
   * A new client of the store, with the state's endpoints and the TLS files as they are now (a
   * client's credentials are fixed when it is made). Presence and watches move to it; the
   * presence key never lapses.
   */
  private async reconnect(): Promise<void> {
    if (this.o.external) return;
    const old = this.store;
    const next = new ClusterStore(this.state.endpoints, await this.o.files.readTls(), localUrl(this.state));
    await this.stopWatches();
    await this.presence.stop(false);
    this.store = next;
    this.presence = this.newPresence(next);
    void this.presence.start();
    await this.rewatch();
    // Calls still running on the old client finish first.
    setTimeout(() => old.close(), 5000).unref();
  }

  /** CA steps run in the same queue as role changes; one that fails is tried again from the record as it then is. */
  private enqueueCa(step: () => Promise<void>): void {
    this.queue = this.queue.then(step).catch((err) => {
      this.o.log(`cluster: certificates: ${errorMessage(err)}; trying again`);
      setTimeout(() => {
        if (this.closed) return;
        this.enqueueCa(async () => {
          const c = await this.store.get<ClusterRecord>(K.cluster);
          if (c) await this.followCa(c.value);
        });
      }, 2000).unref();
    });
  }

  /**
   * Brings this node's TLS in line with the cluster's CA: the CAs it trusts (its own files, its
   * member, which reads them only when it starts, its join endpoint) and the CA its certificate
   * comes from; then says so in its record, which is what a rotation waits for.
   */
  private async followCa(c: ClusterRecord): Promise<void> {
    if (this.closed) return;
    this.rotating = Boolean(c.Rotation);
    const trust = trustOf(c);
    const bundle = trust.join('');
    const tls = await this.o.files.readTls();
    let changed = false;
    let rejoin = false;
    if (pemList(tls.ca.toString()).join('') !== bundle) {
      await this.o.files.writeCa(bundle);
      changed = rejoin = true;
    }
    if (this.member) {
      const loaded = await this.member.loadedTrust();
      if (loaded !== undefined && pemList(loaded).join('') !== bundle) await this.restartMember();
    }
    let cert = tls.cert.toString();
    const want = wantedIssuer(c);
    if (want && !issuedBy(cert, want)) {
      cert = await this.renewCert();
      changed = true;
      // A join endpoint keeps the old CA's certificate until the rotation ends: joiners pin the
      // root their token names, and the tokens change only then.
      rejoin ||= !c.Rotation;
    }
    if (changed) await this.reconnect();
    if (rejoin && this.state.role === 'manager') await this.restartJoins();
    if (changed) await this.scheduleRenewal();
    await this.recordTls({ Issuer: issuerOf(c, cert) ?? '', Trust: trust });
  }

  /** A manager moves a CA rotation on when every node has done its part. */
  private async drive(): Promise<void> {
    if (!this.rotating || this.driving || this.closed || this.state.role !== 'manager') return;
    this.driving = true;
    try { await advanceRotation(this.store); } catch (e) { this.o.log(`cluster: CA rotation: ${errorMessage(e)}`); } finally { this.driving = false; }
  }

  /** A new key and certificate for this node, signed by the CA that signs now. */
  private async renewCert(): Promise<string> {
    const { key, csr } = await makeCsr();
    let cert: string | undefined;
    if (this.state.role === 'manager') {
      cert = await this.o.renew(this, this.state.nodeId, csr);
    } else {
      // A worker asks a manager, with the certificate it has as its proof of who it is.
      const tls = await this.o.files.readTls();
      const managers = [...(await this.store.list<NodeRecord>(K.nodes)).values()].filter((n) => n.value.Spec.Role === 'manager');
      const errors: string[] = [];
      for (const m of managers) {
        try { cert = await requestRenew(`${m.value.Addr}:${m.value.Port}`, tls, csr); break; } catch (e) { errors.push(errorMessage(e)); }
      }
      if (!cert) throw new Error(`no manager renewed this node's certificate: ${errors.join('; ') || 'no managers'}`);
    }
    await this.o.files.writeCert(cert, key);
    return cert;
  }

  /** Renews this node's certificate before it expires (rotation.ts renewAt), and again after each renewal. */
  private async scheduleRenewal(cert?: string): Promise<void> {
    clearTimeout(this.renewTimer);
    if (this.closed) return;
    const at = renewAt(certValidity(cert ?? (await this.o.files.readTls()).cert.toString()));
    this.armRenewal(at);
  }

  private armRenewal(at: number): void {
    const t = renewalTimer(at);
    this.renewTimer = setTimeout(() => (t.renew ? this.enqueueRenewal() : this.armRenewal(at)), t.delayMs);
    this.renewTimer.unref();
  }

  private enqueueRenewal(): void {
    this.queue = this.queue.then(async () => {
      if (this.closed) return;
      const c = await this.store.get<ClusterRecord>(K.cluster);
      const cert = await this.renewCert();
      this.o.log('cluster: renewed this node\'s certificate');
      await this.reconnect();
      if (this.state.role === 'manager' && !c?.value.Rotation) await this.restartJoins();
      if (c) await this.recordTls({ Issuer: issuerOf(c.value, cert) ?? '', Trust: trustOf(c.value) });
      await this.scheduleRenewal();
    }).catch((err) => {
      this.o.log(`cluster: certificate renewal: ${errorMessage(err)}; trying again`);
      clearTimeout(this.renewTimer);
      this.renewTimer = setTimeout(() => { if (!this.closed) this.enqueueRenewal(); }, 5000);
      this.renewTimer.unref();
    });
  }

  private async recordTls(tls: NonNullable<NodeRecord['Tls']>): Promise<void> {
    for (let i = 0; i < 20; i++) {
      const cur = await this.store.get<NodeRecord>(K.node(this.state.nodeId));
      if (!cur || JSON.stringify(cur.value.Tls) === JSON.stringify(tls)) return;
      if (await this.store.update(K.node(this.state.nodeId), { ...cur.value, Tls: tls }, cur.modRevision)) return;
    }
    throw new Error('could not record the TLS state of this node');
  }

  /**
   * Restarts this manager's member so it reads the trusted CAs again. Members restart one at a
   * time (a lock in the store) and each is serving again before the lock goes, so quorum holds.
   */
  private async restartMember(): Promise<void> {
    const member = this.member!;
    const deadline = Date.now() + 120_000;
    const lock = this.store.client.lock(K.memberRestartLock).ttl(30);
    for (;;) {
      try { await this.store.call(() => lock.acquire()); break; } catch (e) {
        if (Date.now() > deadline) throw new Error(`could not take the member restart lock: ${errorMessage(e)}`);
        await new Promise((r) => setTimeout(r, 300 + Math.random() * 400));
      }
    }
    try {
      this.o.log('cluster: restarting this node\'s etcd member to read the cluster CAs again');
      const back = (async () => {
        await member.restart();
        await waitServing(new ClusterStore([clientUrl('127.0.0.1')], await this.o.files.readTls()), 60_000);
      })();
      this.store.holdWhile(back);
      await back;
    } finally {
      await lock.release().catch(() => undefined);
    }
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
    const cert = tls.cert.toString();
    // The chain up to the CA that issued this certificate: a joiner pins that CA by its digest.
    const chain = pemList(tls.ca.toString()).filter((ca) => issuedBy(cert, ca)).join('');
    this.joins = await serveJoins({ host: this.listenHost(), port: this.state.port, cert, key: tls.key.toString(), ca: tls.ca.toString(), chain }, {
      join: (r, remote) => this.o.handleJoin(this, r, remote),
      renew: async (nodeId, r) => ({ cert: await this.o.renew(this, nodeId, r.csr) }),
    });
  }

  private async restartJoins(): Promise<void> {
    await this.stopJoins();
    await this.startJoins();
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

  /**
   * `swarm init --force-new-cluster` on a manager whose cluster lost quorum: its member starts
   * once with etcd's --force-new-cluster, which makes it the only member, keeping the data. The
   * other managers are no longer members: they show Unreachable until demoted and removed, and
   * must leave and join again.
   */
  async forceNewCluster(): Promise<void> {
    const member = this.member;
    if (!member) throw new Error('this manager runs no etcd member');
    await member.restart({ forceNewCluster: true });
    await waitServing(new ClusterStore([clientUrl('127.0.0.1')], await this.o.files.readTls()), 60_000);
    this.state = { ...this.state, endpoints: [clientUrl(this.state.addr)], initialCluster: `${this.state.nodeId}=${peerUrl(this.listenHost())}` };
    await this.o.files.save(this.state);
    await this.reconnect();
    const self = (await this.store.members()).find((m) => m.name === this.state.nodeId);
    if (self) await this.setMemberId(self.ID);
  }

  /** Stops reacting to managers' decisions (a node on its way out must not also be promoted). */
  async quiesce(): Promise<void> {
    this.closed = true;
    clearInterval(this.refresher);
    clearInterval(this.driver);
    clearTimeout(this.renewTimer);
    await this.stopWatches();
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
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/** Waits until a restarted member serves again and knows a leader; closes the client it was given. */
async function waitServing(local: ClusterStore, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  try {
    while (!(await local.leader())) {
      if (Date.now() > deadline) throw new Error('the restarted etcd member did not serve again in time');
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    local.close();
  }
}
