import { arch, cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { ApiError, errorMessage } from '../util/errors.js';
import { checkLocal, resolveAdvertise, resolveDataPath, resolveListen } from './addr.js';
import { Control, caSettings } from './control.js';
import { EtcdMember, clientUrl, peerUrl } from './etcdmember.js';
import { NOT_MANAGER, NO_SWARM, SWARM_EXISTS, UnavailableError, invalid, leaveManagerError } from './errors.js';
import { goTime, newJoinToken, newNodeId, parseJoinToken } from './ids.js';
import { K, type ClusterRecord, type NodeRecord, type Spec } from './keys.js';
import { enableAccess } from './access.js';
import { tellStoreLeaving } from './leaving.js';
import { certDer, makeCa, makeCsr, signCsr, type Pem } from './pki.js';
import { requestJoin, type JoinRequest } from './joinwire.js';
import { Session, promoteWhenSynced, type SessionOptions } from './session.js';
import { LocalStateFiles, type LocalState } from './state.js';
import { ClusterStore } from './store.js';
import { defaultSpec } from './views.js';
import { expirySec, normPem } from './rotation.js';
import { ServiceControl } from './services.js';
import { Steps } from '../util/steps.js';

export interface ClusterOptions {
  root: string;
  hostname: string;
  engineVersion: string;
  leaseTtlSec: number;
  /** The shortest NodeCertExpiry a spec may ask for (Docker's is an hour; tests ask less). */
  minCertExpirySec?: number;
  /** `berthd --cluster-store`: etcd client URLs of an existing store (no member is run here). */
  external?: string[];
  log?: (m: string) => void;
}

export interface InitRequest { ListenAddr?: string; AdvertiseAddr?: string; DataPathAddr?: string; DataPathPort?: number; DefaultAddrPool?: string[]; SubnetSize?: number; ForceNewCluster?: boolean; Spec?: Spec }
export interface JoinBody { ListenAddr?: string; AdvertiseAddr?: string; DataPathAddr?: string; RemoteAddrs?: string[]; JoinToken?: string }

/**
 * This node's place in a cluster: not in one, or in one through a Session. Init, join and leave
 * change that, one at a time; each either completes or leaves nothing behind (no state file, no
 * member, no record in the store).
 */
export class Cluster {
  private session?: Session;
  private readonly files: LocalStateFiles;
  private busy: Promise<unknown> = Promise.resolve();
  readonly control: Control;
  /** `docker service` and `/tasks` on this node (a manager's answer; others get Docker's refusal). */
  readonly services: ServiceControl;
  private readonly log: (m: string) => void;

  constructor(private readonly o: ClusterOptions) {
    this.files = new LocalStateFiles(join(o.root, 'cluster'));
    this.log = o.log ?? ((m) => console.error(`berthd: ${m}`));
    this.control = new Control(() => this.session, { ...o, log: this.log });
    this.services = new ServiceControl(() => this.session);
  }

  /**
   * Hears of a membership that started (init, join, a restart back into the cluster) and of one
   * that ends (`leaving`: this node left the swarm, or a daemon stop when false).
   */
  onSession?: (s: Session, up: boolean, leaving: boolean) => Promise<void>;

  private async started(s: Session): Promise<void> {
    this.control.spares.prepare(s);
    await this.onSession?.(s, true, false).catch((e) => this.log(`cluster: ${errorMessage(e)}`));
  }

  /**
   * A node key and its request made ahead of time: init and join would otherwise wait for openssl
   * to make one. It never leaves this process and is used once.
   */
  private spareKey?: Promise<{ key: string; csr: string }>;
  private takeKey(): Promise<{ key: string; csr: string }> {
    const k = this.spareKey ?? makeCsr();
    this.spareKey = undefined;
    return k;
  }

  /**
   * A cluster CA made ahead of time the same way, for `swarm init`: openssl takes about 10 ms to
   * make one, and init would wait for it. Like the spare key it never leaves this process, is
   * used once, and a new one is made for the next init; its validity starts when it was made
   * (node certificates are backdated a minute anyway).
   */
  private spareCa?: Promise<Pem>;
  private takeCa(): Promise<Pem> {
    const ca = this.spareCa ?? makeCa();
    this.spareCa = undefined;
    return ca;
  }

  /** Makes the spare key and CA while the node is in no swarm: at start, and again after a leave or a failed init or join. */
  private prepareKey(): void {
    if (this.session) return;
    if (!this.spareKey) {
      const k = makeCsr();
      k.catch(() => { if (this.spareKey === k) this.spareKey = undefined; });
      this.spareKey = k;
    }
    if (!this.spareCa) {
      const ca = makeCa();
      ca.catch(() => { if (this.spareCa === ca) this.spareCa = undefined; });
      this.spareCa = ca;
    }
  }

  /** The running membership, if any (routes use it to pick Docker's answer). */
  get current(): Session | undefined { return this.session; }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.busy.then(fn, fn);
    this.busy = p.catch(() => undefined);
    return p;
  }

  private sessionOptions(): SessionOptions {
    return {
      files: this.files, leaseTtlSec: this.o.leaseTtlSec, log: this.log,
      ...(this.o.external ? { external: this.o.external } : {}),
      handleJoin: (s, r, remote) => this.control.handleJoin(s, r, remote),
      renew: (s, nodeId, csr) => this.control.renew(s, nodeId, csr),
      onRemoved: () => void this.serial(() => this.teardown(false)),
    };
  }

  /** At daemon start: a node that was in a cluster goes back into it (its member first). */
  async restore(): Promise<void> {
    const state = await this.files.load();
    if (!state) return this.prepareKey();
    const so = this.sessionOptions();
    const store = await Session.connect(state, so);
    const session = new Session(state, so, store);
    if (state.member && !this.o.external) {
      session.member = session.memberFor(state, state.initialCluster ?? `${state.nodeId}=${peerUrl(session.listenHost(state))}`, state.memberState ?? 'new');
      await session.member.start();
    }
    this.session = session;
    // The store may still be electing a leader (or unreachable): keep trying in the background,
    // the daemon serves its API meanwhile and shows the swarm as it can.
    const attempt = async (): Promise<void> => {
      try {
        await session.start();
        await this.started(session);
      } catch (e) {
        // Its etcd user is gone: a manager removed this node (node rm --force) while it was down.
        if (/permission denied|user name not found/.test(errorMessage(e)) && this.session === session) {
          this.log('cluster: this node was removed from the swarm while it was down');
          await this.serial(() => this.teardown(false));
          return;
        }
        this.log(`cluster: store not reachable yet (${errorMessage(e)}); retrying`);
        await new Promise((r) => setTimeout(r, 1000));
        if (this.session === session) return attempt();
      }
    };
    void attempt();
  }

  description(): NodeRecord['Description'] {
    return {
      Hostname: this.o.hostname,
      Platform: { Architecture: arch() === 'x64' ? 'x86_64' : arch(), OS: 'linux' },
      Resources: { NanoCPUs: cpus().length * 1e9, MemoryBytes: totalmem() },
      Engine: { EngineVersion: this.o.engineVersion, Plugins: [{ Type: 'Log', Name: 'json-file' }, ...['bridge', 'host', 'ipvlan', 'macvlan', 'null', 'overlay'].map((Name) => ({ Type: 'Network', Name })), { Type: 'Volume', Name: 'local' }] },
    };
  }

  init(req: InitRequest): Promise<string> {
    return this.serial(async () => {
      if (this.session && req.ForceNewCluster) return this.forceNewCluster(this.session);
      if (this.session) throw new UnavailableError(SWARM_EXISTS);
      const steps = new Steps('swarm init');
      const spec = req.Spec ?? {};
      const { kept, signing } = caSettings(spec.CAConfig as Parameters<typeof caSettings>[0], this.control.minCertExpirySec);
      if (signing) throw invalid('berth makes the cluster CA at init: rotate to your own with "swarm ca --rotate --ca-cert --ca-key" afterwards');
      if (spec.Name && spec.Name !== 'default') throw invalid('swarm spec must be named "default"');
      if ((spec.EncryptionConfig as { AutoLockManagers?: boolean } | undefined)?.AutoLockManagers) throw invalid('berth does not support autolock: the store is not encrypted at rest');
      const port = req.DataPathPort || 4789;
      if (port < 1024 || port > 49151) throw invalid(`data path port ${port} is out of range (1024-49151)`);
      const pools = req.DefaultAddrPool?.length ? req.DefaultAddrPool : ['10.0.0.0/8'];
      for (const p of pools) if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(p)) throw invalid(`invalid default address pool ${p}`);
      const subnetSize = req.SubnetSize || 24;
      if (subnetSize > 29 || subnetSize < 1) throw invalid(`invalid subnet size ${subnetSize}`);
      const listen = await resolveListen(req.ListenAddr);
      const adv = await resolveAdvertise(req.AdvertiseAddr, listen);
      await checkLocal(adv.host, listen.host);
      const dataPath = await resolveDataPath(req.DataPathAddr, adv.host);
      const clusterId = newNodeId();
      const nodeId = newNodeId();
      steps.mark('checks');
      const [made, { key, csr }] = await Promise.all([this.takeCa(), this.takeKey()]);
      steps.mark('ca and key');
      const ca = { ...made, cert: normPem(made.cert) };
      const clusterSpec = defaultSpec({ ...spec, CAConfig: kept });
      const cert = await signCsr(ca, csr, { nodeId, role: 'manager', clusterId, ips: [...new Set([adv.host, listen.host].filter((h) => h !== '0.0.0.0'))], expirySec: expirySec(clusterSpec) });
      const state: LocalState = {
        nodeId, clusterId, role: 'manager', addr: adv.host, port: adv.port, listenAddr: `${listen.host}:${listen.port}`, dataPathAddr: dataPath,
        endpoints: this.o.external ?? [clientUrl(adv.host)], member: !this.o.external,
      };
      const so = this.sessionOptions();
      let member: EtcdMember | undefined;
      let store: ClusterStore | undefined;
      try {
        steps.mark('sign');
        await this.files.writeTls(ca.cert, cert, key);
        store = await Session.connect(state, so, { ca: Buffer.from(ca.cert), cert: Buffer.from(cert), key: Buffer.from(key) });
        const session = new Session(state, so, store);
        if (!this.o.external) {
          state.initialCluster = `${nodeId}=${peerUrl(session.listenHost(state))}`;
          state.memberState = 'new';
          member = session.memberFor(state, state.initialCluster, 'new');
          await member.start();
        }
        steps.mark('etcd spawned');
        const memberId = this.o.external ? undefined : (await waitForStore(store, 15_000, member)).ID;
        steps.mark('etcd ready');
        const now = goTime();
        const caDer = certDer(ca.cert);
        const rec: NodeRecord = {
          ID: nodeId, CreatedAt: now, UpdatedAt: now, Spec: { Labels: {}, Role: 'manager', Availability: 'active' },
          Description: this.description(), Addr: adv.host, Port: adv.port, ...(memberId ? { MemberId: memberId } : {}),
          Tls: { Issuer: ca.cert, Trust: [ca.cert] },
        };
        const cluster: ClusterRecord = { ID: clusterId, CreatedAt: now, UpdatedAt: now, Spec: clusterSpec, DataPathPort: port, DefaultAddrPool: pools, SubnetSize: subnetSize, CaCert: ca.cert };
        // The records only into a store that holds no swarm yet; the access rules beside them (an
        // external store's are its operator's, berth's own members get berth's).
        const records = [[K.cluster, cluster], [K.tokens, { Worker: newJoinToken(caDer), Manager: newJoinToken(caDer) }], [K.ca, ca], [K.node(nodeId), rec]] as const;
        const [made] = await Promise.all([
          store.txn([{ key: K.cluster, target: 'Create', value: 0 }], records.map(([key, value]) => ({ key, value }))),
          this.o.external ? undefined : enableAccess(store, nodeId),
        ]);
        if (!made.ok) {
          const existing = await store.get<ClusterRecord>(K.cluster);
          throw invalid(`the cluster store already holds swarm ${existing?.value.ID ?? '(unknown)'}: join it instead`);
        }
        steps.mark('records and access');
        session.member = member;
        session.newSwarm = true;
        this.session = session;
        await startSaving(session, cert, this.files.save(state));
        steps.mark('session');
        await this.started(session);
        steps.mark('started');
        steps.done();
        return nodeId;
      } catch (e) {
        if (this.session?.state.nodeId === nodeId) this.session = undefined;
        if (this.o.external && store) await store.apply([], [K.node(nodeId)]).catch(() => undefined);
        store?.close();
        await member?.stop();
        await this.files.wipe();
        this.prepareKey();
        throw e;
      }
    });
  }

  /** Docker's `swarm init --force-new-cluster` on a node already in a swarm (see Session.forceNewCluster). */
  private async forceNewCluster(s: Session): Promise<string> {
    if (s.state.role !== 'manager') throw new UnavailableError(NOT_MANAGER);
    if (this.o.external) throw invalid('--force-new-cluster: the cluster store is an external etcd (--cluster-store) that berth does not run; restore its quorum there');
    this.log('cluster: forcing a new cluster of this manager alone (--force-new-cluster)');
    await s.forceNewCluster();
    return s.state.nodeId;
  }

  join(req: JoinBody): Promise<void> {
    return this.serial(async () => {
      if (this.session) throw new UnavailableError(SWARM_EXISTS);
      const remotes = req.RemoteAddrs ?? [];
      if (remotes.length === 0) throw invalid('at least 1 RemoteAddr is required to join');
      const remote = /:\d+$/.test(remotes[0]!) ? remotes[0]! : `${remotes[0]}:2377`;
      if (!parseJoinToken(req.JoinToken ?? '')) throw new ApiError(500, 'invalid join token');
      const listen = await resolveListen(req.ListenAddr);
      // Optional when joining: the manager sees the address the request came from.
      const adv = await resolveAdvertise(req.AdvertiseAddr, listen).catch((e) => { if (req.AdvertiseAddr) throw e; return undefined; });
      if (adv && req.AdvertiseAddr) await checkLocal(adv.host, listen.host);
      const steps = new Steps('swarm join');
      const { key, csr } = await this.takeKey();
      steps.mark('key');
      const jr: JoinRequest = { token: req.JoinToken!, csr, addr: adv?.host ?? '', port: adv?.port ?? listen.port, hostname: this.o.hostname, description: this.description() };
      const answer = await requestJoin(remote, jr);
      steps.mark('join request');
      const addr = answer.addr;
      const state: LocalState = {
        nodeId: answer.nodeId, clusterId: answer.clusterId, role: answer.role, addr, port: jr.port,
        listenAddr: `${listen.host}:${listen.port}`, dataPathAddr: await resolveDataPath(req.DataPathAddr, addr),
        endpoints: this.o.external ?? answer.endpoints, member: answer.role === 'manager' && !this.o.external,
      };
      const so = this.sessionOptions();
      let store: ClusterStore | undefined;
      let member: EtcdMember | undefined;
      try {
        store = await Session.connect(state, so, { ca: Buffer.from(answer.ca), cert: Buffer.from(answer.cert), key: Buffer.from(key) });
        // A first read opens the store's connection (TCP, TLS, HTTP/2: a few ms) while the files
        // are written: the TLS files, then (a worker's, final already) the state file. Its fsync
        // is kept off the store's busy moments (the new node's first writes).
        const opened = store.get(K.node(answer.nodeId)).catch(() => undefined);
        // A manager's member, added as a learner: promoted before the state file names its endpoint.
        const learner = state.member ? answer.memberId : undefined;
        await Promise.all([opened, this.files.writeTls(answer.ca, answer.cert, key).then(() => (learner ? undefined : this.files.save(state)))]);
        steps.mark('files, store connection');
        const session = new Session(state, so, store);
        if (learner) {
          state.initialCluster = answer.initialCluster!;
          state.memberState = 'existing';
          member = session.memberFor(state, state.initialCluster, 'existing');
          await member.start();
          steps.mark('etcd spawned');
          await promoteWhenSynced(store, learner);
          steps.mark('promoted');
          state.endpoints = [...new Set([...state.endpoints, clientUrl(addr)])];
        }
        session.member = member;
        this.session = session;
        await startSaving(session, answer.cert, learner ? this.files.save(state) : Promise.resolve(), answer.present);
        steps.mark('session');
        await this.started(session);
        steps.mark('started');
        steps.done();
      } catch (e) {
        this.session = undefined;
        // Undo what the manager made for us: the learner member and the node record.
        if (store) {
          if (answer.memberId) await store.removeMember(answer.memberId).catch(() => undefined);
          await store.apply([], [K.node(answer.nodeId), K.aliveOf(answer.nodeId)]).catch(() => undefined);
          store.close();
        }
        await member?.stop();
        await this.files.wipe();
        this.prepareKey();
        throw e;
      }
    });
  }

  leave(force: boolean): Promise<void> {
    return this.serial(async () => {
      const s = this.session;
      if (!s) throw new UnavailableError(NO_SWARM);
      // A node demoted a moment ago may not have acted on it yet: the managers' record decides.
      const demoted = s.state.role === 'manager' && (await s.store.get<NodeRecord>(K.node(s.state.nodeId)).catch(() => undefined))?.value.Spec.Role === 'worker';
      if (s.state.role === 'manager' && !force && !demoted) {
        const { reachable, unreachable } = await this.control.managerCounts().catch(() => ({ reachable: 0, unreachable: 0 }));
        throw leaveManagerError(reachable, unreachable);
      }
      await this.teardown(true);
    });
  }

  /**
   * Takes this node out: as a manager with peers, its member leaves the store's cluster first (so
   * the others keep their quorum arithmetic right) and its record becomes a worker's; as the last
   * manager the whole swarm ends with it.
   */
  private async teardown(leaving: boolean): Promise<void> {
    const s = this.session;
    if (!s) return;
    this.session = undefined;
    const id = s.state.nodeId;
    await this.onSession?.(s, false, true).catch((e) => this.log(`cluster: ${errorMessage(e)}`));
    await s.quiesce();
    if (leaving) {
      await tellStoreLeaving(s, { external: Boolean(this.o.external) })
        .catch((e) => this.log(`cluster: leaving without telling the store: ${errorMessage(e)}`));
    }
    await s.close(true);
    await this.files.wipe();
    this.prepareKey();
  }

  /** Daemon shutdown: the membership stays (state file, member process); only this berthd goes. */
  async close(): Promise<void> {
    if (this.session) await this.onSession?.(this.session, false, false).catch(() => undefined);
    await this.session?.close(false);
  }

  /** `berthd --cleanup`: the member process goes too, the state stays for the next start. */
  async stopMember(): Promise<void> {
    const state = await this.files.load();
    if (!state?.member) return;
    await new EtcdMember({ name: state.nodeId, addr: state.addr, dir: this.files.dir, tlsDir: this.files.tlsDir, initialCluster: '', state: 'existing', clusterToken: '' }).stop();
  }
}

/** The new store answers once its member has elected itself; that takes about a second. */
async function waitForStore(store: ClusterStore, timeoutMs: number, member?: EtcdMember): Promise<{ ID: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // A member that cannot even start (its address taken, its data unreadable) will not come up.
    if (member && member.restarts >= 2) throw new UnavailableError(`the cluster store did not start: ${await member.lastLog()}`);
    try {
      const m = await store.members();
      if (m[0]) { await store.revision(); return m[0]; }
    } catch (e) {
      if (Date.now() > deadline) throw new UnavailableError(`the cluster store did not start: ${errorMessage(e)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Starts a new session while its state file is written: the two are independent, and init or
 * join returns only once both are done. The TLS files were written before either, so a crash
 * never leaves a state file without them; a failed start waits for the write before the caller
 * wipes the files.
 */
async function startSaving(session: Session, cert: string, saving: Promise<void>, present?: boolean): Promise<void> {
  const [up, saved] = await Promise.allSettled([session.start(cert, present), saving]);
  if (up.status === 'rejected') throw up.reason;
  if (saved.status === 'rejected') throw saved.reason;
}
