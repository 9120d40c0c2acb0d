import { addNodeUser, removeNodeUser, setManager } from './access.js';
import { peerManagers, withMemberRemoved } from './leaving.js';
import { SpareUsers, spareOf } from './spareuser.js';
import { clientUrl, peerUrl } from './etcdmember.js';
import { NOT_MANAGER, NO_LEADER, NO_MANAGER, UnavailableError, badToken, invalid, nodeNotFound, outOfSequence, rpcError } from './errors.js';
import { caDigest, goTime, newJoinToken, newNodeId, parseJoinToken } from './ids.js';
import type { JoinAnswer, JoinRequest } from './joinwire.js';
import { K, type AliveRecord, type ClusterRecord, type NodeRecord, type Spec, type TokensRecord } from './keys.js';
import { certDer, checkCa, signCsr, type Pem } from './pki.js';
import { beginRotation, expirySec, issueFor, issuerOf, normPem, trustOf } from './rotation.js';
import { SK } from './services.js';
import type { Session } from './session.js';
import type { Versioned } from './store.js';
import { clusterInfo, defaultSpec, nodeView, swarmView, type Liveness } from './views.js';
import { Steps } from '../util/steps.js';

export interface NodeFilters { id?: string[]; name?: string[]; role?: string[]; membership?: string[]; 'node.label'?: string[]; label?: string[] }
export interface NodeSpecBody { Name?: string; Labels?: Record<string, string>; Role?: string; Availability?: string }
interface CaConfigBody { NodeCertExpiry?: number; ExternalCAs?: unknown[]; SigningCACert?: string; SigningCAKey?: string; ForceRotate?: number }

/** Go's time.Duration.String() for whole seconds ("1h0m0s", "1m30s", "45s"). */
export function goDuration(sec: number): string {
  const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
  return h ? `${h}h${m}m${s}s` : m ? `${m}m${s}s` : `${s}s`;
}

/**
 * swarmkit's check of a spec's CA settings (controlapi validateClusterSpec), and the parts berth
 * keeps: the signing CA's key never goes into the stored spec (Docker hides both on read).
 */
export function caSettings(ca: CaConfigBody | undefined, minExpirySec: number): { kept: Record<string, unknown>; signing?: Pem } {
  const { SigningCACert, SigningCAKey, ...kept } = ca ?? {};
  if (kept.NodeCertExpiry && kept.NodeCertExpiry < minExpirySec * 1e9) {
    throw rpcError('InvalidArgument', `minimum certificate expiry time is: ${goDuration(minExpirySec)}`);
  }
  if (kept.ExternalCAs?.length) throw rpcError('InvalidArgument', 'berth has no external CA support: nodes get their certificates from the managers');
  if (SigningCAKey && !SigningCACert) throw rpcError('InvalidArgument', 'if a signing CA key is provided, the signing CA cert must also be provided');
  if (SigningCACert && !SigningCAKey) throw rpcError('InvalidArgument', 'a signing CA cert needs its signing CA key (berth has no external CA)');
  if (!SigningCACert) return { kept };
  const signing = { cert: normPem(SigningCACert), key: SigningCAKey! };
  const bad = checkCa(signing);
  if (bad) throw rpcError('InvalidArgument', bad);
  return { kept, signing };
}

/** How long after a join its manager makes the next spare node ID. */
const SPARE_AFTER_MS = 1000;

/**
 * What managers answer: swarm inspect and update, nodes, the Swarm section of /info, and joins.
 * Every call reads the store afresh (a read is about a millisecond), so no node serves stale state.
 */
export class Control {
  readonly spares: SpareUsers;

  constructor(private readonly session: () => Session | undefined, private readonly o: { leaseTtlSec: number; external?: string[]; minCertExpirySec?: number; log?: (m: string) => void }) {
    this.spares = new SpareUsers(!o.external, o.log ?? (() => undefined));
  }

  get minCertExpirySec(): number { return this.o.minCertExpirySec ?? 3600; }

  /** The session of a manager, or Docker's 503 for a node with no swarm or a worker. */
  private manager(): Session {
    const s = this.session();
    if (!s) throw new UnavailableError(NO_MANAGER);
    if (s.state.role !== 'manager') throw new UnavailableError(NOT_MANAGER);
    return s;
  }

  private async cluster(s: Session): Promise<Versioned<ClusterRecord>> {
    const c = await s.store.get<ClusterRecord>(K.cluster);
    if (!c) throw new UnavailableError(NO_MANAGER);
    return c;
  }

  async inspect(): Promise<Record<string, unknown>> {
    const s = this.manager();
    const [c, t] = await Promise.all([this.cluster(s), s.store.get<TokensRecord>(K.tokens)]);
    return swarmView(c, t!.value);
  }

  async update(version: number, spec: Spec, rotate: { worker: boolean; manager: boolean }): Promise<void> {
    const s = this.manager();
    if (spec.Name && spec.Name !== 'default') throw invalid('swarm spec must be named "default"');
    if ((spec.EncryptionConfig as { AutoLockManagers?: boolean } | undefined)?.AutoLockManagers) throw invalid('berth does not support autolock: the store is not encrypted at rest');
    const c = await this.cluster(s);
    if (c.modRevision !== version) throw outOfSequence();
    const ca = spec.CAConfig as CaConfigBody | undefined;
    const { kept, signing } = caSettings(ca, this.minCertExpirySec);
    const nextSpec = defaultSpec({ ...spec, CAConfig: kept });
    // `swarm ca --rotate` bumps ForceRotate; --ca-cert/--ca-key name the CA to rotate to.
    const was = (c.value.Spec.CAConfig as CaConfigBody | undefined)?.ForceRotate ?? 0;
    if ((ca?.ForceRotate ?? 0) !== was || (signing && signing.cert !== normPem(c.value.CaCert))) {
      if (c.value.Rotation) throw rpcError('FailedPrecondition', 'a root CA rotation is already in progress: wait for it to finish');
      // The join tokens change when the rotation ends (they carry the new root's digest).
      if (!(await beginRotation(s.store, c, nextSpec, signing))) throw outOfSequence();
      return;
    }
    const next: ClusterRecord = { ...c.value, Spec: nextSpec, UpdatedAt: goTime() };
    if (!rotate.worker && !rotate.manager) {
      if (!(await s.store.update(K.cluster, next, version))) throw outOfSequence();
      return;
    }
    const t = (await s.store.get<TokensRecord>(K.tokens))!.value;
    const der = certDer(c.value.CaCert);
    const tokens = { Worker: rotate.worker ? newJoinToken(der) : t.Worker, Manager: rotate.manager ? newJoinToken(der) : t.Manager };
    // The version check and both writes as one transaction: a rotation never half-happens.
    const r = await s.store.call(() => s.store.client.if(K.cluster, 'Mod', '==', version)
      .then(s.store.client.put(K.cluster).value(JSON.stringify(next)), s.store.client.put(K.tokens).value(JSON.stringify(tokens))).commit());
    if (!r.succeeded) throw outOfSequence();
  }

  unlockKey(): { UnlockKey: string } {
    this.manager();
    return { UnlockKey: '' };
  }

  private async liveness(s: Session, caCert: string, known?: Map<string, unknown>): Promise<Liveness> {
    const external = Boolean(this.o.external);
    const readAt = Date.now();
    const [alive, leader, lock] = await Promise.all([
      known ?? s.store.list<AliveRecord>(K.alive), external ? undefined : s.store.leaderRecent(),
      external ? s.store.get<{ Node: string }>(SK.leader) : undefined,
    ]);
    if (s.store.degraded) {
      // An election of a second or two: the presence read before it is as good as any within a
      // lease's TTL (a node that died since would show Ready that long anyway), as swarmkit's
      // managers answer from the state they last knew. Past that, nobody can say.
      const last = this.lastLive;
      if (last?.session === s && Date.now() - last.at <= this.o.leaseTtlSec * 1000) return { ...last.live, caCert };
      return { alive: new Set(), caCert, external, unknown: s.state.nodeId };
    }
    const live: Liveness = {
      alive: new Set([...alive.keys()].map((k) => k.slice(K.alive.length))), caCert, external,
      ...(leader ? { leaderMember: leader } : {}), ...(lock ? { leaderNode: lock.value.Node } : {}),
    };
    this.lastLive = { session: s, at: readAt, live };
    return live;
  }
  private lastLive?: { session: Session; at: number; live: Liveness };

  /** The cluster, a prefix or key, and the presence keys, in one store read. */
  private async withLiveness(s: Session, read: { key: string; prefix?: boolean }): Promise<{ c: Versioned<ClusterRecord>; found: Map<string, Versioned<unknown>>; live: Liveness }> {
    const [cs, found, alive] = await s.store.readMany([{ key: K.cluster }, read, { key: K.alive, prefix: true }]);
    const c = cs!.get(K.cluster) as Versioned<ClusterRecord> | undefined;
    if (!c) throw new UnavailableError(NO_MANAGER);
    return { c, found: found!, live: await this.liveness(s, c.value.CaCert, alive) };
  }

  async managerCounts(): Promise<{ reachable: number; unreachable: number }> {
    const s = this.manager();
    const [nodes, alive] = await Promise.all([s.store.list<NodeRecord>(K.nodes), s.store.list<AliveRecord>(K.alive)]);
    const managers = [...nodes.values()].filter((n) => n.value.Spec.Role === 'manager');
    const reachable = managers.filter((n) => alive.has(K.aliveOf(n.value.ID))).length;
    return { reachable, unreachable: managers.length - reachable };
  }

  /** Docker's lookup order: full ID, then name (the hostname), then a unique ID prefix. */
  private async resolve(s: Session, ref: string): Promise<Versioned<NodeRecord>> {
    const exact = await s.store.get<NodeRecord>(K.node(ref));
    if (exact) return exact;
    const all = [...(await s.store.list<NodeRecord>(K.nodes)).values()];
    const byName = all.filter((n) => (n.value.Spec.Name || n.value.Description.Hostname) === ref);
    if (byName.length === 1) return byName[0]!;
    const byPrefix = all.filter((n) => n.value.ID.startsWith(ref));
    if (byPrefix.length === 1 && ref.length > 0) return byPrefix[0]!;
    if (byPrefix.length > 1 || byName.length > 1) throw invalid(`node ${ref} is ambiguous (${Math.max(byPrefix.length, byName.length)} matches found)`);
    throw nodeNotFound(ref);
  }

  async listNodes(f: NodeFilters = {}): Promise<Array<Record<string, unknown>>> {
    const s = this.manager();
    const { found, live } = await this.withLiveness(s, { key: K.nodes, prefix: true });
    const nodes = found as Map<string, Versioned<NodeRecord>>;
    const labelsMatch = (labels: Record<string, string>, want: string[] | undefined) => (want ?? []).every((w) => {
      const [k, v] = w.split('=', 2) as [string, string | undefined];
      return k in labels && (v === undefined || labels[k] === v);
    });
    return [...nodes.values()]
      .filter((n) => !f.id?.length || f.id.some((p) => n.value.ID.startsWith(p)))
      .filter((n) => !f.name?.length || f.name.some((p) => (n.value.Spec.Name || n.value.Description.Hostname).startsWith(p)))
      .filter((n) => !f.role?.length || f.role.includes(n.value.Spec.Role))
      .filter((n) => !f.membership?.length || f.membership.includes('accepted'))
      .filter((n) => labelsMatch(n.value.Spec.Labels, f['node.label']))
      .map((n) => nodeView(n, live));
  }

  async getNode(ref: string): Promise<Record<string, unknown>> {
    const s = this.manager();
    // By full ID (what clients that list first send): one read.
    const { found, live } = await this.withLiveness(s, { key: K.node(ref) });
    const exact = found.get(K.node(ref)) as Versioned<NodeRecord> | undefined;
    if (exact) return nodeView(exact, live);
    const n = await this.resolve(s, ref);
    const c = await this.cluster(s);
    return nodeView(n, await this.liveness(s, c.value.CaCert));
  }

  async removeNode(ref: string, force: boolean): Promise<void> {
    const s = this.manager();
    const n = await this.resolve(s, ref);
    const id = n.value.ID;
    if (n.value.Spec.Role === 'manager') {
      throw rpcError('FailedPrecondition', `node ${id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal`);
    }
    const alive = await s.store.get(K.aliveOf(id));
    if (alive && !force) throw rpcError('FailedPrecondition', `node ${id} is not down and can't be removed`);
    // The addresses its containers held on swarm networks are free once the node is gone.
    const claims = [...(await s.store.list<{ Node?: string }>(K.ipam))].filter(([, v]) => v.value.Node === id).map(([k]) => k);
    await s.store.apply([], [K.node(id), K.aliveOf(id), ...claims]);
    if (!this.o.external) await removeNodeUser(s.store, id);
  }

  async updateNode(ref: string, version: number, spec: NodeSpecBody): Promise<void> {
    const s = this.manager();
    const n = await this.resolve(s, ref);
    if (n.modRevision !== version) throw outOfSequence();
    const role = spec.Role || n.value.Spec.Role;
    const availability = spec.Availability || n.value.Spec.Availability;
    if (role !== 'manager' && role !== 'worker') throw invalid(`invalid role "${spec.Role}", only worker and manager are supported`);
    if (!['active', 'pause', 'drain'].includes(availability)) throw invalid(`invalid availability "${spec.Availability}", only active, drain and pause are supported`);
    const next: NodeRecord = { ...n.value, UpdatedAt: goTime(), Spec: { ...(spec.Name ? { Name: spec.Name } : {}), Labels: spec.Labels ?? {}, Role: role, Availability: availability as NodeRecord['Spec']['Availability'] } };
    if (n.value.Spec.Role === 'manager' && role === 'worker') {
      await this.checkDemote(s, n.value);
      // A manager demoting itself loses its own member first: what follows goes to the others'.
      const own = !this.o.external && n.value.ID === s.state.nodeId && n.value.MemberId;
      const nodes = own ? [...(await s.store.list<NodeRecord>(K.nodes)).values()].map((r) => r.value) : [];
      const peers = own ? await peerManagers(s.store, nodes, n.value.ID, false) : undefined;
      // The member goes first: a demoted node whose member stayed would still count in quorum.
      await withMemberRemoved(s, n.value.MemberId, peers, async (store) => {
        delete next.MemberId;
        if (!this.o.external) await setManager(store, n.value.ID, false);
        if (!(await store.update(K.node(n.value.ID), next, version))) throw outOfSequence();
      });
      return;
    }
    // A promoted node adds its own member: it needs etcd's root role before it sees the change.
    if (n.value.Spec.Role === 'worker' && role === 'manager' && !this.o.external) await setManager(s.store, n.value.ID, true);
    if (!(await s.store.update(K.node(n.value.ID), next, version))) throw outOfSequence();
  }

  /**
   * swarmkit's rules: never the last manager, never a removal that loses quorum. Quorum is the
   * store's, as swarmkit asks raft which members are reachable: the voting members that would
   * remain, each asked for its status (a manager whose member is no longer in the store, after
   * --force-new-cluster, costs none). With an external store no manager runs a member, and the
   * managers' presence is what there is to count.
   */
  private async checkDemote(s: Session, target: NodeRecord): Promise<void> {
    const managers = [...(await s.store.list<NodeRecord>(K.nodes)).values()].filter((n) => n.value.Spec.Role === 'manager');
    if (managers.length <= 1) throw rpcError('FailedPrecondition', 'attempting to demote the last manager of the swarm');
    let remaining: number;
    let up: number;
    if (this.o.external) {
      const alive = await s.store.list(K.alive);
      const others = managers.filter((n) => n.value.ID !== target.ID);
      remaining = others.length;
      up = others.filter((n) => alive.has(K.aliveOf(n.value.ID))).length;
    } else {
      const voters = (await s.store.members()).filter((m) => !m.isLearner);
      if (!voters.some((m) => m.ID === target.MemberId)) return;
      const others = voters.filter((m) => m.ID !== target.MemberId);
      remaining = others.length;
      up = (await s.store.membersUp(others.map((m) => m.clientURLs))).filter(Boolean).length;
    }
    if (up < Math.floor(remaining / 2) + 1) throw rpcError('FailedPrecondition', "can't remove member from the raft: this would result in a loss of quorum");
  }

  /** GET /info's Swarm section, as Docker's Cluster.Info: never fails, says what it could not read. */
  async info(): Promise<Record<string, unknown>> {
    const s = this.session();
    if (!s) return { NodeID: '', NodeAddr: '', LocalNodeState: 'inactive', ControlAvailable: false, Error: '', RemoteManagers: null };
    const out: Record<string, unknown> = { NodeID: s.state.nodeId, NodeAddr: s.state.addr, LocalNodeState: 'active', ControlAvailable: s.state.role === 'manager', Error: '', RemoteManagers: null };
    try {
      const nodes = [...(await s.store.list<NodeRecord>(K.nodes)).values()];
      const managers = nodes.filter((n) => n.value.Spec.Role === 'manager');
      out.RemoteManagers = managers.map((n) => ({ NodeID: n.value.ID, Addr: `${n.value.Addr}:${n.value.Port}` }));
      if (s.state.role === 'manager') {
        out.Nodes = nodes.length;
        out.Managers = managers.length;
        out.Cluster = clusterInfo(await this.cluster(s));
      }
      if (s.store.degraded) out.Error = NO_LEADER;
    } catch (e) {
      out.Error = (e as Error).message;
    }
    return out;
  }

  /**
   * A certificate for a node of the cluster (renewal, CA rotation), by the CA that signs now. Its
   * subject comes from the node's record, not the request: the caller proved who it is by the
   * certificate it connected with (a worker) or is this manager itself.
   */
  async renew(s: Session, nodeId: string, csr: string): Promise<string> {
    if (s.state.role !== 'manager') throw new UnavailableError(NOT_MANAGER);
    const [c, rec] = await Promise.all([this.cluster(s), s.store.get<NodeRecord>(K.node(nodeId))]);
    if (!rec) throw nodeNotFound(nodeId);
    return issueFor(s.store, c.value, rec.value, csr);
  }

  /** A join arriving at this manager's control port. */
  async handleJoin(s: Session, r: JoinRequest, remote: string): Promise<JoinAnswer> {
    if (s.state.role !== 'manager') throw new UnavailableError(NOT_MANAGER);
    const steps = new Steps('a join (manager side)');
    const parsed = parseJoinToken(r.token);
    // What a join reads, in one round trip: the cluster, the tokens, the nodes, the signing keys.
    const [cs, ts, all, cas] = await s.store.readMany([{ key: K.cluster }, { key: K.tokens }, { key: K.nodes, prefix: true }, { key: K.ca, prefix: true }]);
    const c = cs!.get(K.cluster) as Versioned<ClusterRecord> | undefined;
    const t = ts!.get(K.tokens) as Versioned<TokensRecord> | undefined;
    if (!c || !t) throw new UnavailableError(NO_MANAGER);
    if (!parsed || parsed.digest !== caDigest(certDer(c.value.CaCert))) throw badToken();
    const role = r.token === t.value.Manager ? 'manager' : r.token === t.value.Worker ? 'worker' : undefined;
    if (!role) throw badToken();
    const addr = r.addr || remote.replace(/^::ffff:/, '');
    // A node ID whose etcd user is made already (spareuser.ts); then the next one, once this join
    // is out of the store's way (its user and role changes would race the joiner's first writes).
    const spare = await this.spares.take(s);
    setTimeout(() => { if (this.session() === s) this.spares.prepare(s); }, SPARE_AFTER_MS).unref();
    const nodeId = spare ?? newNodeId();
    const usedSpare = spare ? [spareOf(s.state.nodeId)] : [];
    steps.mark('read');
    const signingCa = cas!.get(c.value.Rotation?.Phase === 'issue' ? K.caNext : K.ca)?.value as Pem | undefined;
    if (!signingCa) throw new Error('the cluster CA key is missing from the store');
    const nodes = [...(all as Map<string, Versioned<NodeRecord>>).values()];
    const endpoints = s.state.endpoints.length && !s.state.member ? s.state.endpoints
      : nodes.filter((n) => n.value.MemberId).map((n) => clientUrl(n.value.Addr));
    const manager = role === 'manager' && s.state.member;
    // During a CA rotation the joiner trusts both CAs, as every node then does.
    const trust = trustOf(c.value);
    const recordFor = (cert: string, memberId?: string): NodeRecord => {
      const now = goTime();
      return {
        ID: nodeId, CreatedAt: now, UpdatedAt: now, Spec: { Labels: {}, Role: role, Availability: 'active' },
        Description: { ...r.description, Hostname: r.hostname }, Addr: addr, Port: r.port || 2377,
        Tls: { Issuer: issuerOf(c.value, cert)!, Trust: trust }, ...(memberId ? { MemberId: memberId } : {}),
      };
    };
    // Its certificate, its etcd user and (for a manager) its member as a learner, all together.
    // A learner does not count towards quorum until promoted: a joiner that never comes up leaves
    // the cluster's quorum as it was. A worker's record needs only the certificate, so it is
    // written beside the user; a manager's names its member, so it follows the learner.
    // A worker's presence is written with its record, under a lease of the presence's TTL that
    // the worker takes over (its own presence writes the key again under its own lease): its
    // join need not wait for a lease grant and a write of its own, and a joiner that never comes
    // up shows Down when the lease lapses.
    const signing = signCsr(signingCa, r.csr, { nodeId, role, clusterId: c.value.ID, ips: [addr], expirySec: expirySec(c.value.Spec) });
    const presence: AliveRecord = { Addr: addr, Since: goTime() };
    const writeWorker = async () => {
      const [cert, lease] = await Promise.all([signing, s.store.grantLease(this.o.leaseTtlSec)]);
      await s.store.txn([], [{ key: K.node(nodeId), value: recordFor(cert) }, { key: K.aliveOf(nodeId), value: presence, lease }], usedSpare);
    };
    const [signed, user, learner, written] = await Promise.allSettled([
      signing,
      this.o.external ? undefined : spare ? (role === 'manager' ? setManager(s.store, nodeId, true) : undefined) : addNodeUser(s.store, nodeId, role),
      manager ? s.store.addLearner(peerUrl(addr)) : undefined,
      manager ? undefined : writeWorker(),
    ]);
    steps.mark('certificate, user, learner (a worker: record)');
    try {
      if (signed.status === 'rejected') throw signed.reason;
      if (user.status === 'rejected') throw user.reason;
      if (learner.status === 'rejected') throw learner.reason;
      if (written.status === 'rejected') throw written.reason;
      const cert = signed.value;
      const member = learner.value;
      if (!member) {
        steps.done();
        return { nodeId, clusterId: c.value.ID, role, addr, ca: trust.join(''), cert, endpoints, present: true };
      }
      await s.store.apply([[K.node(nodeId), recordFor(cert, member.id)]], usedSpare);
      steps.mark('record');
      steps.done();
      const initialCluster = member.members.map((m) => `${m.name || nodeId}=${m.peerURLs[0]}`).join(',');
      return { nodeId, clusterId: c.value.ID, role, addr, ca: trust.join(''), cert, endpoints, memberId: member.id, initialCluster };
    } catch (e) {
      if (learner.status === 'fulfilled' && learner.value) await s.store.removeMember(learner.value.id).catch(() => undefined);
      await s.store.apply([], [K.node(nodeId), K.aliveOf(nodeId)]).catch(() => undefined);
      await removeNodeUser(s.store, nodeId).catch(() => undefined);
      throw e;
    }
  }
}
