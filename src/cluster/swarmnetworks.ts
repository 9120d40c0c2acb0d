import { setTimeout as sleep } from 'node:timers/promises';
import { EtcdLeaseInvalidError, type Lease } from 'etcd3';
import { ipJson } from '../kernel/netns.js';
import { routedSubnets } from '../kernel/routes.js';
import { AddressTakenError } from '../network/driver.js';
import { overlaps, parseCidr } from '../network/ipam.js';
import type { OverlayPlane } from '../network/overlaydriver.js';
import { checkSubnetFree, emptyAlloc, OPT_VXLANID, parseVni, peersFor, peersView, pickSubnet, pickVni, type EndpointRecord, type OverlayAlloc, type Peer } from '../network/overlay.js';
import type { NetworkRecord } from '../network/types.js';
import { ApiError, ConflictError, errorMessage, ForbiddenError, NotFoundError } from '../util/errors.js';
import { INGRESS_SBOX } from './ingress.js';
import { ownDrift } from './ownaudit.js';
import { NO_MANAGER, NOT_MANAGER, UnavailableError } from './errors.js';
import { K, ROOT, type ClusterRecord, type NodeRecord } from './keys.js';
import type { Session } from './session.js';
import { deleteKeys, retryAuthOld, writeGroups, type ClusterStore, type WatchEvent } from './store.js';

/** What the network layer does when the store's swarm networks change (the controller implements it). */
export interface SwarmNetworkHost {
  /** The swarm networks this host has now (its registry's, cached on disk across restarts). */
  swarmNetworks(): NetworkRecord[];
  /** A network record by id, as the registry holds it (its pools are the allocation mirror). */
  network(id: string): NetworkRecord | undefined;
  /** Makes a swarm network exist here: record, kernel objects, firewall. Idempotent. */
  adoptSwarmNetwork(n: NetworkRecord): Promise<void>;
  /** adoptSwarmNetwork's first half: the record alone (listed and inspected here from now on). */
  registerSwarmNetwork(n: NetworkRecord): Promise<void>;
  /** adoptSwarmNetwork's second half, for a registered record: kernel objects and firewall. */
  makeSwarmNetwork(n: NetworkRecord): Promise<void>;
  /** Makes a known swarm network's kernel side again (after a restart): idempotent, and corrects what differs. */
  ensureSwarmNetwork(n: NetworkRecord): Promise<void>;
  /** Removes a swarm network from this host. */
  dropSwarmNetwork(n: NetworkRecord): Promise<void>;
  /**
   * The remote endpoints of these networks changed: kernel peers and DNS follow. `full`: re-read
   * the kernel; `touched`: by network, the only addresses whose endpoints changed (a batch's).
   */
  peersChanged(networkIds: string[], full: boolean, touched?: ReadonlyMap<string, ReadonlySet<string>>): Promise<void>;
  /** Builds a record for a create request (checks, options, IPAM) with the subnet chosen by the cluster. */
  newRecord(body: Record<string, unknown>): Promise<NetworkRecord>;
  /** The driver's own allocation for a new network (a global-scope plugin's AllocateNetwork); false when it has none. */
  allocate(n: NetworkRecord): Promise<boolean>;
  /** Frees what allocate took (FreeNetwork). */
  free(n: NetworkRecord): Promise<void>;
  /** Subnets of every network of this host (local and swarm): routes to them are berth's own. */
  ownSubnets(): string[];
  /** Removes overlay kernel objects of no network in `keep`. */
  removeOrphans(keep: NetworkRecord[]): Promise<void>;
}

/** How long a change waits for the other hosts before its command returns anyway (a host that died holds its lease that long). */
const APPLY_WAIT_MS = 5000;
/** How long a join waits for presence to renew a lapsed lease (it retries every second). */
const LEASE_RENEWAL_WAIT_MS = 3000;
/** How long a network's removal waits for the endpoints of tasks on their way out. */
const TASK_EXIT_WAIT_MS = 30_000;
/** How often a host checks that its watch keeps up with the store. */
const STALE_CHECK_MS = 3000;
/** How old a claim must be before its endpoint, named by no container here, is taken for leaked. */
const LEAK_AFTER_MS = 30_000;
/** Released endpoints remembered before they are checked against the engine's records again. */
const RELEASED_PRUNE_AT = 64;

/**
 * Swarm-scope networks on one host, kept in step with the cluster store: the host lists the
 * store at revision R and watches from R+1 (listing again if the watch is lost, as after a
 * compaction), applies each change to its kernel (VXLAN peers) and DNS, and then publishes the
 * revision it has applied. A command that changed the store (network create/rm, an endpoint
 * joining or leaving) returns once every live host has published a revision at least its own, so
 * no host answers from a stale view. This host's endpoints are written under its presence lease:
 * if the host dies they vanish with it, on every host, within the lease TTL.
 */
export class SwarmNetworks implements OverlayPlane {
  private readonly nets = new Map<string, { rec: NetworkRecord; mod: number }>();
  private readonly eps = new Map<string, Map<string, EndpointRecord>>();
  /**
   * The same by address, kept with it: a batch's peers and mirror look up the addresses it named
   * rather than walk every endpoint of the network. One address may name two endpoints for a
   * moment (one leaving, one claiming it).
   */
  private readonly epsByIp = new Map<string, Map<string, EndpointRecord[]>>();
  /**
   * Address claims, network by network. Unlike endpoints they are not under any lease: a host whose
   * berthd is down keeps its containers' addresses (they still run, and come back into the store
   * with it), so no other host can hand one out meanwhile. They go with their endpoint's release,
   * the host's reconciliation, its leaving, its removal (`node rm`) or the network's removal.
   */
  private readonly claims = new Map<string, Map<string, AddressClaim>>();
  /** This host's own endpoints, written again under each new lease. */
  private readonly mine = new Map<string, EndpointRecord>();
  private readonly alive = new Set<string>();
  private readonly applied = new Map<string, number>();
  private readonly nodes = new Map<string, { name: string; addr: string }>();
  private waiters: Array<{ revision: number; done: () => void }> = [];
  private queue: Promise<void> = Promise.resolve();
  private stopWatch?: () => Promise<void>;
  private closed = false;
  private published = 0;
  /** The newest store revision this host's view holds (its last list, or the last event its watch brought). */
  private seen = 0;
  private staleChecks?: NodeJS.Timeout;
  private behindSince = 0;
  /** The store client the watch runs on. */
  private watchedStore?: ClusterStore;
  private relisting?: Promise<void>;
  /** Networks whose kernel side failed to follow a batch, and the timer that tries them again. */
  private readonly dirty = new Set<string>();
  private resyncTimer?: NodeJS.Timeout;
  /** Keys of this host's released endpoints the store has not taken the deletion of yet. */
  private readonly withdrawals = new Set<string>();
  /**
   * Endpoints released whose container's record may still name them (the engine forgets an
   * endpoint after its teardown, which releases it first): a relist in between must not take them
   * for held and write them back, where no container would ever release them again.
   */
  private readonly released = new Set<string>();
  private withdrawTimer?: NodeJS.Timeout;
  /** When this process claimed each of its endpoints (the audit leaves a join in flight alone). */
  private readonly claimedAt = new Map<string, number>();
  /** What the last audit found: a finding acts only when the next audit finds it again. */
  private drift = new Set<string>();
  /** How often the view is checked against the store (and this host's endpoints audited); tests shorten it. */
  checkEveryMs = STALE_CHECK_MS;
  leakAfterMs = LEAK_AFTER_MS;
  private publishing?: Promise<void>;
  private mtu?: number;
  readonly vtep: { addr: string; port: number };
  /**
   * Others that follow the same store view (service VIPs and balancers): each hears every batch
   * (`full` after a list, with every item) once this host's networks applied it, and before the
   * revision is published, so "applied everywhere" covers what they do too.
   */
  readonly followers: Array<(events: WatchEvent<unknown>[], full: boolean) => Promise<void>> = [];

  constructor(private readonly session: Session, private readonly host: SwarmNetworkHost, private readonly localEndpoints: () => Array<Omit<EndpointRecord, 'Node' | 'Vtep'>>, port: number, private readonly log: (m: string) => void) {
    this.vtep = { addr: session.state.dataPathAddr || session.state.addr, port };
    session.onLease((lease) => {
      if (this.closed) return;
      // A republish refused (a leader change right after a partition healed) is tried again while
      // its lease is the current one: nothing else would write these endpoints until the next lease.
      const republish = (): void => void this.enqueue(() => this.republish(lease)).catch(() => {
        if (!this.closed && this.session.lease === lease) setTimeout(republish, 1000).unref();
      });
      republish();
      // A new lease comes with a new store client when the session reconnected (new endpoints, a
      // CA rotation, a renewed certificate): the old client, and the watch on it, are closed soon.
      if (this.watchedStore && this.store !== this.watchedStore) void this.retryRelist();
    });
  }

  private get store() { return this.session.store; }
  private get me(): string { return this.session.state.nodeId; }

  // ---------------------------------------------------------------- list, watch, apply

  /** Settles once the first list is applied here (kernel objects, followers, the revision published), or failed. */
  private firstApply: Promise<void> = Promise.resolve();
  /** Set during the first list: called once the store's networks are in this host's registry. */
  private onRegistered?: () => void;

  /**
   * The first list; if the store does not answer, it is tried again in the background until it
   * does. Returns once the store's networks are this host's records (`network ls` and inspect
   * show them, as right after Docker's join): the kernel side, about 50 ms of `ip` and `nft` for
   * each network, goes on in the background, and an endpoint's claim waits for it (claim), so no
   * container joins a network whose bridge is not there yet. `swarm init` and `join` need not
   * wait for it, as Docker's do not wait for their ingress sandbox. start() waits for all of it.
   */
  async startListed(): Promise<void> {
    const registered = new Promise<void>((resolve) => { this.onRegistered = resolve; });
    this.firstApply = (async () => {
      try {
        await this.relist();
      } catch (e) {
        this.log(`overlay: listing the store: ${errorMessage(e)}; trying again`);
      } finally {
        this.onRegistered?.();
        this.onRegistered = undefined;
      }
      // Failed, or the client was replaced while it listed (a new lease before the first list is not followed).
      if (this.watchedStore !== this.store) void this.retryRelist();
    })();
    await registered;
  }

  /** startListed, and the rest of the first list's work too. */
  async start(): Promise<void> {
    await this.startListed();
    await this.firstApply;
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const p = this.queue.then(step);
    this.queue = p.catch((e) => this.log(`overlay: ${errorMessage(e)}`));
    return p;
  }

  /** Lists everything under the cluster's root at one revision, reconciles this host with it, and watches from the next. */
  private async relist(): Promise<void> {
    await this.stopWatch?.().catch(() => undefined);
    this.stopWatch = undefined;
    if (this.closed) return;
    const store = this.store;
    const { items, revision } = await store.listAt<unknown>(ROOT);
    await this.enqueue(async () => {
      this.nets.clear();
      this.eps.clear();
      this.epsByIp.clear();
      this.claims.clear();
      this.alive.clear();
      this.applied.clear();
      this.nodes.clear();
      for (const [key, v] of items) this.take({ type: 'put', key, value: v.value, modRevision: v.modRevision });
      await this.reconcile();
      await this.tellFollowers([...items].map(([key, v]) => ({ type: 'put' as const, key, value: v.value, modRevision: v.modRevision })), true);
      await this.publish(revision);
    });
    this.stopWatch = await store.watchBatches<unknown>(ROOT, revision + 1, (events) => void this.enqueue(() => this.applyBatch(events)), (e) => {
      if (this.closed) return;
      this.log(`overlay: the store's watch was lost (${errorMessage(e)}); listing again`);
      void this.retryRelist();
    });
    this.watchedStore = store;
    this.seen = Math.max(this.seen, revision);
    this.watchStaleness();
    this.checkWaiters();
  }

  /**
   * A network whose kernel step failed in a batch (a peer update on a device that is gone, say) is
   * made to agree with the view again a moment later, and again until it does: the view already
   * holds the batch's change, so no later batch would make it (`docker stack rm` left the stack's
   * network on two hosts when a peer update failed in the batch that removed it). The watch goes on
   * meanwhile, so the host keeps following every other change.
   */
  private resyncSoon(): void {
    if (this.closed || this.resyncTimer || !this.dirty.size) return;
    this.resyncTimer = setTimeout(() => {
      this.resyncTimer = undefined;
      const ids = [...this.dirty];
      this.dirty.clear();
      void this.enqueue(async () => {
        for (const id of ids) {
          await this.applyNetwork(id, true).catch(this.failedNetwork(id));
        }
        this.resyncSoon();
      });
    }, 1000);
    this.resyncTimer.unref();
  }

  /** A network's kernel step failed: logged, and tried again by resyncSoon. */
  private failedNetwork(id: string): (e: unknown) => void {
    return (e) => { this.dirty.add(id); this.log(`overlay: network ${id.slice(0, 12)}: ${errorMessage(e)}; trying again`); };
  }

  /** Makes this host's side of one network agree with the view: made, dropped, or (`full`) made again and its peers rewritten. */
  private async applyNetwork(id: string, full: boolean): Promise<void> {
    const s = this.nets.get(id);
    const have = this.host.network(id);
    if (s && !have) await this.host.adoptSwarmNetwork(this.localRecord(s.rec));
    else if (!s && have) {
      await this.host.dropSwarmNetwork(have);
      // Endpoints that outlive their network here are the host's own ingress endpoint (removal refuses any
      // other): they leave the store with it rather than be published again under each lease.
      const left = [...this.mine.values()].filter((e) => e.Network === id);
      for (const e of left) this.mine.delete(e.EndpointID);
      if (left.length) await deleteKeys(this.store, left.map((e) => K.endpoint(id, e.EndpointID))).catch((e) => this.log(`overlay: ${errorMessage(e)}`));
    } else if (s && have && full) {
      await this.host.ensureSwarmNetwork(have);
      await this.host.peersChanged([id], true);
    }
  }

  /**
   * A watch can stop bringing events without saying so (a stream on a connection that died while
   * the host was cut off): the host then keeps a view that never changes again (a worker back from
   * a partition kept a removed network listed). So every few seconds it asks the store for its
   * revision; a view still behind it at the next look lists again. Docker's NetworkDB repairs
   * missed gossip the same way, with a periodic bulk sync.
   */
  private watchStaleness(): void {
    if (this.staleChecks) return;
    const check = async () => {
      if (this.closed || this.relisting) return;
      const { revision } = await this.store.listAt<unknown>(`${ROOT}networks/`);
      if (revision <= this.seen) {
        this.behindSince = 0;
        await this.enqueue(() => this.audit());
        return;
      }
      if (!this.behindSince) { this.behindSince = revision; return; }
      // Behind at two looks in a row, and not even up to what the first look saw: the watch is stuck.
      if (this.seen < this.behindSince) {
        this.log(`overlay: the store's watch brought nothing past revision ${this.seen} while the store is at ${revision}; listing again`);
        this.behindSince = 0;
        await this.retryRelist();
      } else this.behindSince = revision;
    };
    this.staleChecks = setInterval(() => void check().catch(() => undefined), this.checkEveryMs);
    this.staleChecks.unref();
  }

  /**
   * With a view that is up to date, this host's endpoints in it must be those it holds, and those
   * it holds must be its containers' (ownaudit.ts says how they drift apart). A difference found at
   * two audits in a row is mended: written again, or withdrawn.
   */
  private async audit(): Promise<void> {
    const lease = this.session.lease;
    if (this.closed || this.relisting || !lease) return;
    const found = ownDrift({
      me: this.me, mine: this.mine, store: this.eps, networks: this.nets, claims: this.claims, pending: this.pending,
      withdrawing: this.withdrawals, named: new Set(this.localEndpoints().map((e) => e.EndpointID)), claimedAt: this.claimedAt,
      now: Date.now(), leakAfterMs: this.leakAfterMs,
    });
    const act = [...found].filter(([k]) => this.drift.has(k)).map(([, d]) => d);
    this.drift = new Set(found.keys());
    const missing: EndpointRecord[] = [];
    for (const { kind, endpoint: e } of act) {
      if (kind === 'missing') { missing.push(e); continue; }
      this.log(`overlay: endpoint ${e.EndpointID.slice(0, 12)} (${e.Name || e.ContainerID.slice(0, 12)}, ${e.IP}) ${kind === 'leaked' ? 'is held by no container here' : 'is this host\'s in the store but not held here'}: withdrawn`);
      if (kind === 'leaked') { this.mine.delete(e.EndpointID); this.claimedAt.delete(e.EndpointID); }
      this.withdrawals.add(K.endpoint(e.Network, e.EndpointID));
      if (this.claims.get(e.Network)?.get(e.IP)?.EndpointID === e.EndpointID) this.withdrawals.add(K.address(e.Network, e.IP));
    }
    this.withdrawSoon(0);
    if (missing.length) {
      this.log(`overlay: ${missing.map((e) => `${e.Name || e.EndpointID.slice(0, 12)} (${e.IP})`).join(', ')} of this host missing from the store: written again`);
      await this.republish(lease, missing);
    }
  }

  /**
   * One relist at a time: a lost watch and a new store client can ask at once. A client replaced
   * while a relist ran leaves its watch on the old client, which dies silently when that client is
   * closed (a CA rotation replaces clients more than once): so it lists again until the watch is on
   * the current one.
   */
  private retryRelist(): Promise<void> {
    this.relisting ??= (async () => {
      while (!this.closed) {
        try {
          await this.relist();
          if (this.watchedStore === this.store) return;
        } catch (e) {
          this.log(`overlay: listing the store: ${errorMessage(e)}`);
          await sleep(1000);
        }
      }
    })().finally(() => { this.relisting = undefined; });
    return this.relisting;
  }

  /**
   * Files one event into the view; returns the network whose endpoints changed, or whether a
   * network record did, and the addresses a claim or an endpoint named before and after it.
   */
  private take(e: WatchEvent<unknown>): { net?: string; endpointsOf?: string; addresses?: { net: string; ips: Array<string | undefined> } } {
    const rest = e.key.slice(ROOT.length);
    const [kind, a, b] = rest.split('/');
    if (kind === 'networks' && a) {
      if (e.type === 'put') this.nets.set(a, { rec: e.value as NetworkRecord, mod: e.modRevision });
      else this.nets.delete(a);
      return { net: a };
    }
    if (kind === 'endpoints' && a && b) {
      const was = this.eps.get(a)?.get(b);
      fileTwoLevel(this.eps, a, b, e);
      const now = e.type === 'put' ? (e.value as EndpointRecord) : undefined;
      this.indexByIp(a, was, now);
      return { endpointsOf: a, addresses: { net: a, ips: [was?.IP, now?.IP] } };
    }
    if (kind === 'ipam' && a && b) {
      fileTwoLevel(this.claims, a, b, e);
      return { addresses: { net: a, ips: [b] } };
    }
    if (kind === 'alive' && a) {
      if (e.type === 'put') this.alive.add(a);
      else this.alive.delete(a);
    } else if (kind === 'applied' && a) {
      if (e.type === 'put') this.applied.set(a, Number((e.value as { Revision?: number }).Revision ?? 0));
      else this.applied.delete(a);
    } else if (kind === 'nodes' && a) {
      if (e.type === 'put') {
        const n = e.value as NodeRecord;
        this.nodes.set(a, { name: n.Description?.Hostname ?? a, addr: n.Addr });
      } else {
        this.nodes.delete(a);
      }
    }
    return {};
  }

  private async applyBatch(events: WatchEvent<unknown>[]): Promise<void> {
    if (this.closed) return;
    for (const e of events) this.seen = Math.max(this.seen, e.modRevision);
    const nets = new Set<string>();
    const endpointsOf = new Set<string>();
    /** The addresses each network's claims and endpoints in this batch name, before and after. */
    const addresses = new Map<string, Set<string>>();
    let relevant = 0;
    for (const e of events) {
      const t = this.take(e);
      if (t.net) nets.add(t.net);
      if (t.endpointsOf) endpointsOf.add(t.endpointsOf);
      if (t.addresses) {
        const ips = addresses.get(t.addresses.net) ?? addresses.set(t.addresses.net, new Set()).get(t.addresses.net)!;
        for (const ip of t.addresses.ips) if (ip) ips.add(ip);
      }
      if (t.net || t.endpointsOf || e.key.startsWith(`${ROOT}services/`) || e.key.startsWith(`${ROOT}tasks/`)) relevant = Math.max(relevant, e.modRevision);
    }
    this.withdrawUnclaimed(events);
    for (const id of nets) await this.applyNetwork(id, false).catch(this.failedNetwork(id));
    for (const [id, ips] of addresses) this.mirrorAddresses(id, ips);
    const changed = [...endpointsOf].filter((id) => this.host.network(id) && !this.dirty.has(id));
    if (changed.length) {
      // One network's failure must not hold back the others' peers.
      // Only the addresses the batch named: a peer sync of the whole network at each endpoint that
      // came or went cost every host time in the network's size (1,000 endpoints: each connect and
      // disconnect 12-16 % slower than on a network of 10).
      await this.host.peersChanged(changed, false, addresses).catch(async () => {
        for (const id of changed) await this.host.peersChanged([id], false, addresses).catch(this.failedNetwork(id));
      });
    }
    this.resyncSoon();
    await this.tellFollowers(events, false);
    if (relevant) await this.publish(relevant);
    this.checkWaiters();
  }

  /**
   * An endpoint of this host's in the store that it neither holds nor is claiming: a claim whose
   * answer was lost (its transaction timed out while quorum was lost, so the join failed and was
   * undone here, and it committed once quorum came back). Left alone it stood as a peer on every
   * host until this one listed again (chaos across hosts, seed 4242, cycles 11 to 14): withdrawn.
   */
  private withdrawUnclaimed(events: WatchEvent<unknown>[]): void {
    let found = false;
    for (const e of events) {
      if (e.type !== 'put' || !e.key.startsWith(K.endpoints)) continue;
      const r = e.value as EndpointRecord;
      if (r.Node !== this.me || this.mine.has(r.EndpointID) || this.pending.has(r.EndpointID)) continue;
      this.log(`overlay: endpoint ${r.EndpointID.slice(0, 12)} (${r.IP}) is in the store but no longer this host's: withdrawn`);
      this.withdrawals.add(K.endpoint(r.Network, r.EndpointID)).add(K.address(r.Network, r.IP));
      found = true;
    }
    if (found) this.withdrawSoon(0);
  }

  private async tellFollowers(events: WatchEvent<unknown>[], full: boolean): Promise<void> {
    for (const f of this.followers) await f(events, full).catch((e) => this.log(`overlay: ${errorMessage(e)}`));
  }

  /** The registry's copy of a store record: its pools carry the cluster's allocations as seen here. */
  private localRecord(rec: NetworkRecord): NetworkRecord {
    const n = structuredClone(rec);
    for (const p of n.pools ?? []) p.allocated = {};
    const pool = n.pools?.[0];
    if (pool) for (const [ip, ep] of this.claimed(n.Id)) pool.allocated[ip] = ep;
    return n;
  }

  /**
   * The registry's pool of a network holds every address the store has claimed, so the next local
   * allocation picks a free one; addresses allocated here but not yet claimed stay.
   */
  private mirrorAllocations(id: string): void {
    const pool = this.host.network(id)?.pools?.[0];
    if (!pool) return;
    const claimed = this.claimed(id);
    this.mirror(pool.allocated, new Set([...Object.keys(pool.allocated), ...claimed.keys()]), (ip) => claimed.get(ip));
  }

  /**
   * mirrorAllocations for the addresses a batch touched. Mirroring the whole network at each batch
   * cost as many steps as it has claims, on every host, at every VIP claimed or container joined:
   * about 10,000 with 10,000 services (bench/svcmany.js).
   */
  private mirrorAddresses(id: string, ips: ReadonlySet<string>): void {
    const pool = this.host.network(id)?.pools?.[0];
    if (!pool) return;
    // As claimed(), for one address.
    const endpointAt = (ip: string) => this.epsByIp.get(id)?.get(ip)?.[0]?.EndpointID;
    this.mirror(pool.allocated, ips, (ip) => this.claims.get(id)?.get(ip)?.EndpointID ?? endpointAt(ip));
  }

  /** Each address to its holder in the store, or freed when it has none, unless it is this host's own join in flight. */
  private mirror(allocated: Record<string, string>, ips: Iterable<string>, holderOf: (ip: string) => string | undefined): void {
    for (const ip of ips) {
      const holder = holderOf(ip);
      if (holder) allocated[ip] = holder;
      else if (allocated[ip] !== undefined && !this.pending.has(allocated[ip]!)) delete allocated[ip];
    }
  }

  /** Every address of a network the store holds: its claims, and the endpoints' own (claims of an older berth were leased with them). */
  private claimed(id: string): Map<string, string> {
    const out = new Map([...(this.claims.get(id) ?? [])].map(([ip, c]) => [ip, c.EndpointID]));
    for (const e of this.eps.get(id)?.values() ?? []) if (!out.has(e.IP)) out.set(e.IP, e.EndpointID);
    return out;
  }

  /** Endpoints between their local allocation and their claim in the store. */
  private readonly pending = new Set<string>();

  /**
   * After a list: the store's networks exist here and no others; this host's endpoints in the
   * store are those its running containers hold (others a crash left are withdrawn), under the
   * current lease; the kernel's peers are read back and corrected.
   */
  private async reconcile(): Promise<void> {
    // Records first, all of them, then the kernel (start() returns in between). A record that
    // cannot be registered (no such driver here) is adopted below, which says why.
    const fresh = new Set<string>();
    await Promise.all([...this.nets.values()].filter((s) => !this.host.network(s.rec.Id)).map((s) => this.host.registerSwarmNetwork(this.localRecord(s.rec))
      .then(() => { fresh.add(s.rec.Id); }, () => undefined)));
    this.onRegistered?.();
    for (const n of this.host.swarmNetworks()) if (!this.nets.has(n.Id)) await this.host.dropSwarmNetwork(n);
    for (const s of this.nets.values()) {
      const have = this.host.network(s.rec.Id);
      if (!have) {
        await this.host.adoptSwarmNetwork(this.localRecord(s.rec));
      } else if (fresh.has(s.rec.Id)) {
        await this.host.makeSwarmNetwork(have);
      } else {
        this.mirrorAllocations(s.rec.Id);
        await this.host.ensureSwarmNetwork(have);
      }
    }
    await this.host.removeOrphans([...this.nets.values()].map((s) => s.rec));
    // The endpoints of this host's running containers are in the store (written again under the
    // current lease, in case the last one lapsed while berthd was down); others of this host's a
    // crash left in the store are withdrawn.
    const local = this.pruneReleased();
    const held = new Map(local.filter((e) => this.nets.has(e.Network) && !this.released.has(e.EndpointID)).map((e) => [e.EndpointID, { ...e, Mac: e.Mac.toLowerCase(), Node: this.me, Vtep: this.vtep.addr }]));
    // Endpoints this process claimed stay too: a join between its claim and the engine's record.
    for (const e of held.values()) this.mine.set(e.EndpointID, e);
    const stale = new Set<string>();
    for (const [net, m] of this.eps) {
      for (const e of m.values()) if (e.Node === this.me && !this.mine.has(e.EndpointID)) stale.add(K.endpoint(net, e.EndpointID)).add(K.address(net, e.IP));
    }
    for (const [net, m] of this.claims) {
      for (const [ip, c] of m) if (c.Node === this.me && !this.mine.has(c.EndpointID) && !this.pending.has(c.EndpointID)) stale.add(K.address(net, ip));
    }
    // Claims of networks gone from the store (removed while this host was away).
    for (const net of this.claims.keys()) if (!this.nets.has(net)) for (const ip of this.claims.get(net)!.keys()) stale.add(K.address(net, ip));
    if (stale.size) await deleteKeys(this.store, [...stale]);
    const lease = this.session.lease;
    if (lease) await this.republish(lease);
    await this.host.peersChanged([...this.nets.keys()], true);
  }

  /**
   * This host's endpoints, written again under a new lease (the old one's keys are gone or going),
   * with their address claims (outside any lease). A claim another endpoint holds is never
   * overwritten: that endpoint stays out of the store, and the log says so. `only`: these of them
   * (the audit's, found missing).
   */
  private async republish(lease: Lease, only?: EndpointRecord[]): Promise<void> {
    if (!this.mine.size) return;
    const id = await this.store.call(() => lease.grant());
    const groups: Array<{ puts: Array<{ key: string; value: unknown; lease?: string }> }> = [];
    const written: EndpointRecord[] = [];
    for (const e of only ?? this.mine.values()) {
      const holder = this.claims.get(e.Network)?.get(e.IP);
      if (holder && holder.EndpointID !== e.EndpointID) {
        this.log(`overlay: address ${e.IP} of ${e.Name} is claimed by endpoint ${holder.EndpointID.slice(0, 12)} of node ${this.nodes.get(holder.Node)?.name ?? holder.Node}: ${e.Name} stays out of the cluster's view`);
        continue;
      }
      written.push(e);
      groups.push({ puts: [{ key: K.endpoint(e.Network, e.EndpointID), value: e, lease: id }, { key: K.address(e.Network, e.IP), value: claimOf(e) }] });
    }
    if (!groups.length) return;
    const revisions = await writeGroups(this.store, groups);
    const revisionOf = new Map(written.map((e, i) => [e.EndpointID, revisions[i]!]));
    // An endpoint released while this write was on its way (its container removed during a lease
    // change) was written back after its release deleted it, under the live lease: a stale peer on
    // every host (chaos across hosts). It goes again, and its address claim only if still this write's.
    for (const e of written.filter((x) => !this.mine.has(x.EndpointID))) {
      try {
        await this.store.txn([], [], [K.endpoint(e.Network, e.EndpointID)]);
        await this.store.txn([{ key: K.address(e.Network, e.IP), target: 'Mod', value: revisionOf.get(e.EndpointID)! }], [], [K.address(e.Network, e.IP)]);
      } catch {
        this.withdrawals.add(K.endpoint(e.Network, e.EndpointID));
        this.withdrawSoon();
      }
    }
  }

  /** Publishes the revision this host has applied; writes coalesce, the latest wins. */
  private async publish(revision: number): Promise<void> {
    if (revision <= this.published) return;
    this.published = revision;
    this.applied.set(this.me, Math.max(this.applied.get(this.me) ?? 0, revision));
    this.checkWaiters();
    if (this.publishing) return;
    this.publishing = (async () => {
      let sent = 0;
      let failures = 0;
      while (sent < this.published && !this.closed) {
        const lease = this.session.lease;
        if (!lease) break;
        const r = this.published;
        try {
          await retryAuthOld(() => lease.put(K.appliedOf(this.me)).value(JSON.stringify({ Revision: r })).exec());
        } catch (e) {
          // Tried again: no later change may come to publish it, and until it is out every other
          // host's command waits its full bound on this one (helper-18 saw "revision N not applied
          // within 5000 ms" after a member restarted).
          if (!failures++) this.log(`overlay: publishing the applied revision: ${errorMessage(e)}; trying again`);
          await sleep(Math.min(2000, 100 * 2 ** failures));
          continue;
        }
        sent = r;
      }
    })().finally(() => { this.publishing = undefined; });
  }

  private checkWaiters(): void {
    if (!this.waiters.length) return;
    const live = [...this.alive];
    if (!live.includes(this.me)) live.push(this.me);
    this.waiters = this.waiters.filter((w) => {
      if (live.every((n) => (this.applied.get(n) ?? 0) >= w.revision)) {
        w.done();
        return false;
      }
      return true;
    });
  }

  async appliedEverywhere(revision: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.done !== done);
        const late = [...this.alive].filter((n) => (this.applied.get(n) ?? 0) < revision).map((n) => this.nodes.get(n)?.name ?? n);
        this.log(`overlay: revision ${revision} not applied within ${APPLY_WAIT_MS} ms by ${late.join(', ')}`);
        resolve();
      }, APPLY_WAIT_MS);
      const done = () => { clearTimeout(timer); resolve(); };
      this.waiters.push({ revision, done });
      this.checkWaiters();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.resyncTimer);
    clearTimeout(this.withdrawTimer);
    clearInterval(this.staleChecks);
    // A leave right after a join: the first list's watch is made before it is stopped.
    await this.firstApply;
    await this.stopWatch?.().catch(() => undefined);
    for (const w of this.waiters) w.done();
    this.waiters = [];
    await this.queue.catch(() => undefined);
  }

  /** This host left the swarm: its swarm networks go from it. */
  async leave(): Promise<void> {
    // Its addresses are free for the cluster once it has gone (best effort: a lost store leaves them
    // to `node rm`).
    const own = [...this.claims].flatMap(([net, m]) => [...m].filter(([, c]) => c.Node === this.me).map(([ip]) => K.address(net, ip)));
    if (own.length) await deleteKeys(this.store, own).catch((e) => this.log(`overlay: releasing this node's addresses: ${errorMessage(e)}`));
    await this.close();
    for (const n of this.host.swarmNetworks()) await this.host.dropSwarmNetwork(n).catch((e) => this.log(`overlay: ${errorMessage(e)}`));
  }

  // ---------------------------------------------------------------- OverlayPlane

  async underlayMtu(): Promise<number> {
    if (this.mtu) return this.mtu;
    const links = await ipJson<Array<{ ifname: string; mtu: number; addr_info?: Array<{ local: string }> }>>(undefined, ['addr', 'show']);
    const link = links.find((l) => l.addr_info?.some((a) => a.local === this.vtep.addr));
    if (!link) throw new Error(`no link of this host has the data-path address ${this.vtep.addr}`);
    this.mtu = link.mtu;
    return link.mtu;
  }

  vniOf(n: NetworkRecord): number {
    const v = parseVni((this.nets.get(n.Id)?.rec ?? n).Options[OPT_VXLANID]);
    if (v === undefined) throw new Error(`network ${n.Name} has no VNI`);
    return v;
  }

  peers(networkId: string, ips?: ReadonlySet<string>): Peer[] {
    if (!ips) return peersFor(this.eps.get(networkId)?.values() ?? [], this.me);
    const byIp = this.epsByIp.get(networkId);
    return peersFor([...ips].flatMap((ip) => byIp?.get(ip) ?? []), this.me);
  }

  ownEndpoint(networkId: string, endpointId: string): { ip: string; mac: string } | undefined {
    const r = this.mine.get(endpointId) ?? this.eps.get(networkId)?.get(endpointId);
    return r && r.Network === networkId && r.Node === this.me ? { ip: r.IP, mac: r.Mac } : undefined;
  }

  /** Keeps epsByIp in step with an endpoint's event: `was` its record before, `now` after. */
  private indexByIp(net: string, was: EndpointRecord | undefined, now: EndpointRecord | undefined): void {
    let m = this.epsByIp.get(net);
    if (!m) this.epsByIp.set(net, (m = new Map()));
    for (const r of [was, now]) {
      if (!r) continue;
      const others = (m.get(r.IP) ?? []).filter((o) => o.EndpointID !== r.EndpointID);
      if (r === now) others.push(now);
      if (others.length) m.set(r.IP, others);
      else m.delete(r.IP);
    }
  }

  /** Endpoints of other hosts, for the DNS: every swarm network's. */
  *remoteEndpoints(): Iterable<EndpointRecord> {
    for (const m of this.eps.values()) for (const e of m.values()) if (e.Node !== this.me) yield e;
  }

  /** Every endpoint of a network, for inspect's Peers. */
  endpointsOf(networkId: string): EndpointRecord[] {
    return [...(this.eps.get(networkId)?.values() ?? [])];
  }

  sandboxMembers(n: NetworkRecord): Record<string, { Name: string; EndpointID: string; MacAddress: string; IPv4Address: string; IPv6Address: string }> {
    const prefix = n.pools?.[0] ? parseCidr(n.pools[0].subnet).prefix : 24;
    const sbox = [...this.mine.values()].find((e) => e.Network === n.Id && e.ContainerID === INGRESS_SBOX);
    return sbox ? { [INGRESS_SBOX]: { Name: sbox.Name, EndpointID: sbox.EndpointID, MacAddress: sbox.Mac, IPv4Address: `${sbox.IP}/${prefix}`, IPv6Address: '' } } : {};
  }

  peersView(n: NetworkRecord): Array<{ Name: string; IP: string }> {
    return peersView(this.endpointsOf(n.Id), this.nodes);
  }

  async claim(n: NetworkRecord, ep: { endpointId: string; ip: string; mac: string; containerId: string; name: string; aliases: string[]; labels?: Record<string, string> }): Promise<number> {
    // Right after a join the networks are listed here before their bridges exist (start).
    await this.firstApply;
    this.pending.add(ep.endpointId);
    try {
      try {
        return await this.claimUnder(this.session.lease, n, ep);
      } catch (e) {
        // The lease lapsed (the node was cut off past its TTL) and presence is taking a new one:
        // the join waits for it, briefly, rather than failing with etcd's own words (chaos across
        // hosts saw a start answered 500 "Lease NOT_FOUND").
        if (!(e instanceof EtcdLeaseInvalidError)) throw e;
        const lapsed = this.session.lease;
        const deadline = Date.now() + LEASE_RENEWAL_WAIT_MS;
        while (this.session.lease === lapsed && Date.now() < deadline) await sleep(100);
        if (this.session.lease === lapsed) throw new UnavailableError(`this node's lease in the cluster store lapsed and is not renewed yet: swarm networks cannot be joined now`);
        return await this.claimUnder(this.session.lease, n, ep);
      }
    } finally {
      this.pending.delete(ep.endpointId);
    }
  }

  private async claimUnder(lease: Lease | undefined, n: NetworkRecord, ep: { endpointId: string; ip: string; mac: string; containerId: string; name: string; aliases: string[]; labels?: Record<string, string> }): Promise<number> {
    if (!lease) throw new UnavailableError('the cluster store cannot be reached from this node: swarm networks cannot be joined now');
    const leaseId = await this.store.call(() => lease.grant());
    const rec: EndpointRecord = {
      Network: n.Id, EndpointID: ep.endpointId, ContainerID: ep.containerId, Name: ep.name, Aliases: ep.aliases,
      IP: ep.ip, Mac: ep.mac.toLowerCase(), Node: this.me, Vtep: this.vtep.addr, ...(ep.labels && Object.keys(ep.labels).length ? { Labels: ep.labels } : {}),
    };
    const known = this.nets.get(n.Id);
    if (!known || (known.rec as NetworkRecord & { removing?: boolean }).removing) throw new NotFoundError(`network ${n.Name} not found`);
    const r = await this.store.txn(
      [{ key: K.network(n.Id), target: 'Mod', value: known.mod }, { key: K.address(n.Id, ep.ip), target: 'Create', value: 0 }],
      [{ key: K.address(n.Id, ep.ip), value: claimOf(rec) }, { key: K.endpoint(n.Id, ep.endpointId), value: rec, lease: leaseId }],
    );
    let revision = r.revision;
    if (!r.ok) {
      const held = await this.store.get<AddressClaim>(K.address(n.Id, ep.ip));
      // etcd's client sends a transaction again when its connection broke before the answer (a
      // leader killed): the first one may have been applied, and the second then fails on the
      // claim it made itself. That claim and the endpoint are this join's: taking them for an
      // address in use left them in the store under this host's lease, no one's (the audits of
      // chaos across hosts withdrew such endpoints after etcd leaders were killed).
      if (held?.value.EndpointID === ep.endpointId) revision = held.modRevision;
      else {
        const net = await this.store.get<NetworkRecord & { removing?: boolean }>(K.network(n.Id));
        if (!net || net.value.removing) throw new NotFoundError(`network ${n.Name} not found`);
        if (held) throw new AddressTakenError();
        throw new ConflictError(`network ${n.Name} changed while the endpoint joined: try again`);
      }
    }
    this.mine.set(ep.endpointId, rec);
    this.claimedAt.set(ep.endpointId, Date.now());
    // Presence took a new lease while this was written: the old lease takes the key with it when
    // it lapses, and the new lease's republish may have run before this endpoint was in `mine`
    // (chaos across hosts, seed 182562: an endpoint missing from the store for good).
    const current = this.session.lease;
    if (current && current !== lease) this.enqueue(() => this.republish(current));
    return revision;
  }

  async release(n: NetworkRecord, endpointId: string): Promise<number | undefined> {
    this.released.add(endpointId);
    // Pruned at each relist, and here too: a host that never relists would keep every one.
    if (this.released.size > RELEASED_PRUNE_AT) this.pruneReleased();
    const rec = this.mine.get(endpointId) ?? this.eps.get(n.Id)?.get(endpointId);
    if (!rec) return undefined;
    this.mine.delete(endpointId);
    this.claimedAt.delete(endpointId);
    const keys = [K.endpoint(n.Id, endpointId), K.address(n.Id, rec.IP)];
    try {
      return (await this.store.txn([], [], keys)).revision;
    } catch (e) {
      // The store takes no change now (quorum lost, say): the container is gone here all the same,
      // and its record goes once the store takes changes again. Left alone it stayed, under this
      // host's live lease, as a stale peer on every other host (chaos across hosts, a quorum loss).
      this.log(`overlay: withdrawing endpoint ${endpointId.slice(0, 12)}: ${errorMessage(e)}; trying again`);
      for (const k of keys) this.withdrawals.add(k);
      this.withdrawSoon();
      return undefined;
    }
  }

  /** Forgets the released endpoints the engine no longer names; returns the local endpoints it read. */
  private pruneReleased(): Array<Omit<EndpointRecord, 'Node' | 'Vtep'>> {
    const local = this.localEndpoints();
    const named = new Set(local.map((e) => e.EndpointID));
    for (const id of this.released) if (!named.has(id)) this.released.delete(id);
    return local;
  }

  /** Deletes the keys of endpoints whose release the store refused, until it takes them. */
  private withdrawSoon(delayMs = 500): void {
    if (this.closed || this.withdrawTimer || !this.withdrawals.size) return;
    // The timer stays set until its deletes have settled: a call meanwhile (a release, the audit)
    // waits for them rather than sending the same keys a second time beside them.
    this.withdrawTimer = setTimeout(() => {
      const keys = [...this.withdrawals];
      void deleteKeys(this.store, keys).then(
        () => { this.withdrawTimer = undefined; for (const k of keys) this.withdrawals.delete(k); this.withdrawSoon(); },
        () => { this.withdrawTimer = undefined; this.withdrawSoon(Math.min(5000, Math.max(500, delayMs * 2))); },
      );
    }, delayMs);
    this.withdrawTimer.unref();
  }

  // ---------------------------------------------------------------- create and remove (managers)

  private checkManager(refusal = NO_MANAGER): void {
    if (this.session.state.role !== 'manager') throw new ForbiddenError(refusal);
  }

  /**
   * `applied: false` returns once the record is in the store, before any host applied it: for a
   * new swarm's ingress network, written before this host's first list (which then brings it).
   */
  async create(body: Record<string, unknown>, notManager?: string, o: { applied: boolean } = { applied: true }): Promise<{ Id: string; Warning: string }> {
    this.checkManager(notManager);
    const name = String(body.Name ?? '');
    if ([...this.nets.values()].some((s) => s.rec.Name === name)) throw new ConflictError(`network with name ${name} already exists`);
    // swarmkit's controlapi: one ingress network per swarm.
    const ingress = [...this.nets.values()].find((s) => s.rec.Ingress);
    if (body.Ingress && ingress) throw new ApiError(409, `rpc error: code = AlreadyExists desc = ingress network (${ingress.rec.Id}) is already present`);
    const cluster = (await this.store.get<ClusterRecord>(K.cluster))?.value;
    const ipam = (body.IPAM ?? {}) as { Config?: Array<Record<string, unknown>> };
    const given = ipam.Config?.find((c) => c.Subnet);
    const wantVni = parseVni(((body.Options ?? {}) as Record<string, string>)[OPT_VXLANID]);
    for (let attempt = 0; attempt < 20; attempt++) {
      const cur = await this.store.get<OverlayAlloc>(K.overlayAlloc);
      const alloc = cur?.value ?? emptyAlloc();
      const taken = Object.keys(alloc.subnets);
      const avoid = await this.underlaySubnets();
      let subnet: string;
      if (given) {
        subnet = String(given.Subnet);
        checkSubnetFree(subnet, taken);
        if (avoid.some((a) => overlaps(a, parseCidr(subnet)))) {
          throw new ForbiddenError('Pool overlaps with other one on this address space');
        }
      } else {
        subnet = pickSubnet(cluster?.DefaultAddrPool ?? ['10.0.0.0/8'], cluster?.SubnetSize ?? 24, taken, avoid);
      }
      const config = given ? ipam.Config! : [{ Subnet: subnet }];
      const n = await this.host.newRecord({ ...body, IPAM: { ...(body.IPAM as object ?? {}), Config: config } });
      n.Scope = 'swarm';
      n.Ingress = !!body.Ingress;
      for (const p of n.pools ?? []) { p.allocated = {}; delete p.last; }
      const vnis = { ...alloc.vnis };
      // A driver that allocates for itself (a global-scope plugin) takes no VNI; overlay does.
      const own = await this.host.allocate(n);
      if (!own) {
        const vni = pickVni(alloc, subnet, wantVni);
        n.Options[OPT_VXLANID] = String(vni);
        vnis[String(vni)] = n.Id;
      }
      const next: OverlayAlloc = { subnets: { ...alloc.subnets, [n.pools![0]!.subnet]: n.Id }, vnis };
      // What the driver allocated is given back if the record is not written (a conflict, the store down).
      const unallocate = () => (own ? this.host.free(n).catch((e) => this.log(`network ${n.Name}: ${errorMessage(e)}`)) : undefined);
      const r = await this.store.txn(
        [{ key: K.overlayAlloc, target: cur ? 'Mod' : 'Create', value: cur?.modRevision ?? 0 }, { key: K.network(n.Id), target: 'Create', value: 0 }],
        [{ key: K.overlayAlloc, value: next }, { key: K.network(n.Id), value: n }],
      ).catch(async (e) => { await unallocate(); throw e; });
      let revision = r.revision;
      if (!r.ok) {
        // The record's id is new: found, it is this create's own, sent again by the store's
        // client after the first one's answer was lost (see claimUnder).
        const mine = await this.store.get(K.network(n.Id));
        if (!mine) { await unallocate(); continue; }
        revision = mine.modRevision;
      }
      if (o.applied) await this.appliedEverywhere(revision);
      return { Id: n.Id, Warning: '' };
    }
    throw new ConflictError('the swarm network allocation kept changing under this create: try again');
  }

  /** Subnets new networks must not take: every node's underlay address, and this host's routes (berth's own bridges' aside). */
  private async underlaySubnets(): Promise<ReturnType<typeof parseCidr>[]> {
    const out = [...this.nodes.values()].filter((n) => n.addr).map((n) => parseCidr(`${n.addr}/32`));
    out.push(parseCidr(`${this.vtep.addr}/32`));
    const own = new Set(this.host.ownSubnets());
    for (const r of await routedSubnets()) if (!own.has(r)) out.push(parseCidr(r));
    return out;
  }

  /**
   * Removes a swarm network everywhere. The record is first marked (joins compare its revision,
   * so none can slip in), then the store's endpoints are checked: any, on any host, and the mark
   * is taken back and the removal refused.
   */
  private inUse(n: NetworkRecord, ignore: (e: EndpointRecord) => boolean): Promise<ForbiddenError | undefined> {
    return inUseOf(this.store, n, (id) => this.nodes.get(id)?.name ?? id, ignore);
  }

  async remove(n: NetworkRecord): Promise<void> {
    if (this.session.state.role !== 'manager') throw new UnavailableError(NOT_MANAGER);
    const cur = await this.store.get<NetworkRecord & { removing?: boolean }>(K.network(n.Id));
    if (!cur) throw new NotFoundError(`network ${n.Name} not found`);
    if (cur.value.Ingress) {
      // swarmkit's removeIngressNetwork: not while a service publishes through the mesh.
      const services = await this.store.list<{ ID: string; Endpoint?: { Ports?: Array<{ PublishMode?: string }> } }>(`${ROOT}services/`);
      const user = [...services.values()].find((v) => v.value.Endpoint?.Ports?.some((p) => p.PublishMode === 'ingress'));
      if (user) throw new ForbiddenError(`rpc error: code = FailedPrecondition desc = ingress network cannot be removed because service ${user.value.ID} depends on it`);
    }
    const mark = await this.store.txn([{ key: K.network(n.Id), target: 'Mod', value: cur.modRevision }], [{ key: K.network(n.Id), value: { ...cur.value, removing: true } }]);
    if (!mark.ok) throw new ConflictError(`network ${n.Name} changed while it was being removed: try again`);
    // The hosts' ingress endpoints belong to the network, not to users: they leave with it.
    const refusal = await this.inUse(n, (e) => !!cur.value.Ingress && e.ContainerID === INGRESS_SBOX);
    if (refusal) {
      await this.store.txn([{ key: K.network(n.Id), target: 'Mod', value: mark.revision }], [{ key: K.network(n.Id), value: cur.value }]);
      throw refusal;
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      const a = await this.store.get<OverlayAlloc>(K.overlayAlloc);
      const alloc = a?.value ?? emptyAlloc();
      const next: OverlayAlloc = {
        subnets: Object.fromEntries(Object.entries(alloc.subnets).filter(([, id]) => id !== n.Id)),
        vnis: Object.fromEntries(Object.entries(alloc.vnis).filter(([, id]) => id !== n.Id)),
      };
      const r = await this.store.txn(
        [{ key: K.overlayAlloc, target: a ? 'Mod' : 'Create', value: a?.modRevision ?? 0 }, { key: K.network(n.Id), target: 'Mod', value: mark.revision }],
        [{ key: K.overlayAlloc, value: next }], [K.network(n.Id)],
      );
      if (r.ok) {
        // Claims a host that is down still holds (its endpoints lapsed with its lease): the network is gone.
        await this.store.deletePrefix(K.addressesOf(n.Id)).catch((e) => this.log(`overlay: ${errorMessage(e)}`));
      }
      if (!r.ok) continue;
      await this.appliedEverywhere(r.revision);
      // Once every host has dropped it (swarmkit frees a network's driver state after its removal).
      await this.host.free(cur.value).catch((e) => this.log(`network ${n.Name}: ${errorMessage(e)}`));
      return;
    }
    throw new ConflictError('the swarm network allocation kept changing under this removal: try again');
  }
}

/**
 * Why a swarm network cannot go now, as swarmkit's removeNetwork says it: a service that names it,
 * a task that runs or is meant to, or a container attached to it. Tasks on their way out (their
 * service removed or their desired state past running) do not hold it, as in swarmkit: the removal
 * waits for their endpoints instead (`docker stack rm` removes the services, then at once the
 * networks), and refuses only if they outlast TASK_EXIT_WAIT_MS.
 */
async function inUseOf(store: ClusterStore, n: NetworkRecord, nodeName: (id: string) => string, ignore: (e: EndpointRecord) => boolean): Promise<ForbiddenError | undefined> {
  const inUse = (what: string) => new ForbiddenError(`rpc error: code = FailedPrecondition desc = network ${n.Id} is in use by ${what}`);
  const [services, tasks] = await store.readMany([{ key: `${ROOT}services/`, prefix: true }, { key: `${ROOT}tasks/`, prefix: true }]);
  for (const v of services!.values()) {
    const svc = v.value as { ID: string; Spec: { TaskTemplate: { Networks?: Array<{ Target: string }> } } };
    if ((svc.Spec.TaskTemplate.Networks ?? []).some((t) => t.Target === n.Id)) return inUse(`service ${svc.ID}`);
  }
  const wanted = new Set<string>();
  for (const v of tasks!.values()) {
    const t = v.value as { DesiredState: string; Status: { ContainerStatus?: { ContainerID?: string } } };
    if (t.DesiredState === 'running' && t.Status.ContainerStatus?.ContainerID) wanted.add(t.Status.ContainerStatus.ContainerID);
  }
  const deadline = Date.now() + TASK_EXIT_WAIT_MS;
  for (;;) {
    const eps = [...(await store.list<EndpointRecord>(K.endpointsOf(n.Id))).values()].map((v) => v.value).filter((e) => !ignore(e));
    // A task's endpoint answers `tasks.SERVICE` (the task runtime names it so); any other is a container's.
    const isTask = (e: EndpointRecord) => !!e.Aliases?.some((a) => a.startsWith('tasks.'));
    const holder = eps.find((e) => !isTask(e) || wanted.has(e.ContainerID));
    if (holder) return inUse(`${isTask(holder) ? 'task' : 'container'} ${holder.ContainerID || holder.EndpointID} on node ${nodeName(holder.Node)}`);
    if (!eps.length) return undefined;
    if (Date.now() > deadline) return inUse(`task ${eps[0]!.ContainerID} on node ${nodeName(eps[0]!.Node)}, which is still stopping`);
    await sleep(200);
  }
}

/** An address claim in the store: which endpoint of which node holds it. */
export interface AddressClaim { EndpointID: string; Node: string }

function claimOf(e: EndpointRecord): AddressClaim {
  return { EndpointID: e.EndpointID, Node: e.Node };
}

/** Files a put or delete of `a/b` into a map of maps (the inner map made on first put). */
function fileTwoLevel<V>(m: Map<string, Map<string, V>>, a: string, b: string, e: WatchEvent<unknown>): void {
  if (e.type === 'put') {
    let inner = m.get(a);
    if (!inner) m.set(a, (inner = new Map()));
    inner.set(b, e.value as V);
  } else {
    m.get(a)?.delete(b);
  }
}
