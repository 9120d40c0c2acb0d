import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { CniResult } from '../cni/spec.js';
import { nftDeleteTable } from '../kernel/nft.js';
import { ipJson, loopbackUp, netnsExists } from '../kernel/netns.js';
import { RESOLVER_ADDRESS } from '../model/network.js';
import { readJson, removeStaleTemps, writeJsonAtomic } from '../store/atomic.js';
import { ApiError, BadRequestError, NotFoundError } from '../util/errors.js';
import { newId } from '../util/ids.js';
import { SerialQueue } from '../util/serial.js';
import { macFor } from './mac.js';
import type { NetworkRegistry } from './registry.js';
import type { Resolver } from './resolver.js';
import type { NetworkRecord } from './types.js';

/** What a CNI runtime asks through berth-cni (POST /berth/cni/{add,del,check}). */
export interface ProvideRequest {
  /** The berth network, by name or id. */
  network: string;
  containerId: string;
  netns: string;
  ifname: string;
  /** The name berth's DNS answers for the container (K8S_POD_NAME, as runtimes pass it). */
  name?: string;
  aliases?: string[];
  /** The runtime's configuration list: GC frees only what was made through a list of that name. */
  list?: string;
}

/** One runtime container's endpoint on a berth network, as kept on disk until its DEL. */
interface Provided {
  key: string;
  networkId: string;
  endpointId: string;
  containerId: string;
  netns: string;
  ifname: string;
  name: string;
  aliases: string[];
  list: string;
  ip: string;
  prefix: number;
  gateway: string;
  mac: string;
  /** Set once the driver's join finished; a crash before leaves an entry whose DEL undoes what may exist. */
  joined?: boolean;
}

/** A provided endpoint as the DNS directory sees a container (DirectoryMember's shape). */
export interface ProvidedMember {
  Id: string;
  Name: string;
  Endpoints: Record<string, { IPAddress: string; Aliases: string[] | null; Links: null }>;
  HostConfig: { Links: null; Dns: null };
}

const RESOLVER_TABLE = 'berth_dns';

/**
 * berth as a CNI plugin's backend: a CNI runtime's container (podman's, a kubelet's) gets an
 * endpoint on a berth network through the network's own driver, with an address from berth's
 * IPAM, berth's isolation and its embedded DNS (a resolver inside the runtime's namespace, as a
 * berth container has), and its name answers for berth's containers. Each endpoint is written to
 * disk before anything is made, so a DEL after a kill -9 of berthd undoes exactly what exists.
 */
export class CniProvider {
  private readonly entries = new Map<string, Provided>();
  private readonly queue = new SerialQueue();
  /** Per namespace, the clean-up still running there (a resolver table being deleted). */
  private readonly cleaning = new Map<string, Promise<void>>();
  private resolver?: Resolver;

  constructor(private readonly d: {
    registry: NetworkRegistry; dir: string; redirectResolver: (netnsPath: string, port: number, fresh: boolean) => Promise<void>;
    /** Whether the container is berth's own (berth's CNI runner calling berth-cni): its sandbox already has the resolver. */
    ownSandbox: (containerId: string) => boolean;
  }) {}

  async load(): Promise<void> {
    await fs.mkdir(this.d.dir, { recursive: true, mode: 0o700 });
    await removeStaleTemps(this.d.dir);
    for (const f of await fs.readdir(this.d.dir)) {
      const e = f.endsWith('.json') ? await readJson<Provided>(join(this.d.dir, f)) : undefined;
      if (e) this.entries.set(e.key, e);
    }
  }

  /** The resolver answers from now on; the resolvers of endpoints made before a restart are opened again. */
  async attachResolver(r: Resolver): Promise<void> {
    this.resolver = r;
    for (const e of this.entries.values()) {
      if (e.joined && (await netnsExists(e.netns))) await this.serveDns(e).catch((x: Error) => console.error(`berthd: embedded DNS for CNI container ${e.containerId.slice(0, 12)}: ${x.message}`));
    }
  }

  inUse(networkId: string): boolean {
    return [...this.entries.values()].some((e) => e.networkId === networkId);
  }

  /** The provided endpoints as DNS directory members: their names answer on their networks. */
  /** Endpoints handed out, joined or not: their addresses are held. */
  endpointIds(): string[] {
    return [...this.entries.values()].map((e) => e.endpointId);
  }

  /**
   * Joined endpoints as a host's own endpoint records: on a swarm network they are this host's
   * in the cluster store as its containers' are, and are written again and kept there alike.
   */
  joinedEndpoints(): Array<{ Network: string; EndpointID: string; ContainerID: string; Name: string; Aliases: string[]; IP: string; Mac: string }> {
    return [...this.entries.values()].filter((e) => e.joined)
      .map((e) => ({ Network: e.networkId, EndpointID: e.endpointId, ContainerID: e.containerId, Name: e.name, Aliases: e.aliases, IP: e.ip, Mac: e.mac }));
  }

  members(): ProvidedMember[] {
    const byContainer = new Map<string, ProvidedMember>();
    for (const e of this.entries.values()) {
      if (!e.joined) continue;
      const m = byContainer.get(e.containerId) ?? { Id: e.containerId, Name: `/${e.name}`, Endpoints: {}, HostConfig: { Links: null, Dns: null } };
      m.Endpoints[e.networkId] = { IPAddress: e.ip, Aliases: e.aliases.length ? e.aliases : null, Links: null };
      byContainer.set(e.containerId, m);
    }
    return [...byContainer.values()];
  }

  /** The network's provided endpoints in the shape of network inspect's Containers entries. */
  inspectMembers(networkId: string): Record<string, { Name: string; EndpointID: string; MacAddress: string; IPv4Address: string; IPv6Address: string }> {
    const out: Record<string, { Name: string; EndpointID: string; MacAddress: string; IPv4Address: string; IPv6Address: string }> = {};
    for (const e of this.entries.values()) {
      // berth's own containers (berth's runner calling berth-cni) are listed on their cni network already.
      if (e.networkId !== networkId || !e.joined || this.d.ownSandbox(e.containerId)) continue;
      out[e.containerId] = { Name: e.name, EndpointID: e.endpointId, MacAddress: e.mac, IPv4Address: `${e.ip}/${e.prefix}`, IPv6Address: '' };
    }
    return out;
  }

  private network(ref: string): NetworkRecord {
    const n = this.d.registry.find(ref);
    if (!n) throw new NotFoundError(`network ${ref} not found`);
    const driver = this.d.registry.driverOf(n);
    if (!driver || driver.ownsAddresses || driver.external) throw new BadRequestError(`network ${n.Name} (driver ${n.Driver}) cannot take CNI containers: berth-cni serves berth's own bridge and overlay networks`);
    return n;
  }

  private keyOf(n: NetworkRecord, containerId: string, ifname: string): string {
    const safe = (s: string) => s.replace(/[^a-zA-Z0-9_.-]/g, '_');
    return `${n.Id.slice(0, 12)}-${safe(containerId)}-${safe(ifname)}`;
  }

  private file(key: string): string {
    return join(this.d.dir, `${key}.json`);
  }

  private async save(e: Provided): Promise<void> {
    this.entries.set(e.key, e);
    await writeJsonAtomic(this.file(e.key), e);
  }

  add(req: ProvideRequest): Promise<CniResult> {
    return this.queue.run(async () => {
      const n = this.network(req.network);
      const key = this.keyOf(n, req.containerId, req.ifname);
      const had = this.entries.get(key);
      if (had?.joined) return this.result(had);
      if (had) await this.undo(had);
      if (!(await netnsExists(req.netns)) && !(await fs.stat(req.netns).then((s) => !s.isDirectory(), () => false))) {
        throw new BadRequestError(`CNI_NETNS ${req.netns} is no network namespace`);
      }
      const driver = this.d.registry.driverOf(n)!;
      const ipam = this.d.registry.ipamOf(n);
      const endpointId = newId();
      const lease = await ipam.requestAddress(n, endpointId, {});
      const e: Provided = {
        key, networkId: n.Id, endpointId, containerId: req.containerId, netns: req.netns, ifname: req.ifname,
        name: req.name || req.containerId.slice(0, 12), aliases: req.aliases ?? [], list: req.list ?? '', ip: lease.ip, prefix: lease.prefix,
        gateway: n.Internal ? '' : lease.gateway, mac: lease.mac || macFor(lease.ip),
      };
      try {
        await Promise.all([this.save(e), this.d.registry.save(n)]);
        const got = await driver.join(n, {
          netnsPath: e.netns, ifname: e.ifname, endpointId, mac: e.mac, addressCidr: `${e.ip}/${e.prefix}`,
          ...(e.gateway ? { gateway: e.gateway } : {}), owner: { containerId: e.containerId, name: e.name, aliases: e.aliases },
        });
        if (got?.mac) e.mac = got.mac;
        e.joined = true;
        await this.save(e);
        this.d.registry.changed([n.Id], e.containerId);
        await this.serveDns(e);
      } catch (x) {
        await this.undo(e).catch(() => undefined);
        throw x;
      }
      return this.result(e);
    });
  }

  del(req: Pick<ProvideRequest, 'network' | 'containerId' | 'ifname'> & { netns?: string }): Promise<void> {
    return this.queue.run(async () => {
      const n = this.d.registry.find(req.network);
      // A network gone, or an attachment never made or already deleted: DEL is idempotent.
      if (!n) return;
      const e = this.entries.get(this.keyOf(n, req.containerId, req.ifname));
      if (e) await this.undo(e);
    });
  }

  /** CHECK: the endpoint is recorded and its interface has its address in the runtime's namespace. */
  async check(req: ProvideRequest): Promise<void> {
    const n = this.network(req.network);
    const e = this.entries.get(this.keyOf(n, req.containerId, req.ifname));
    if (!e?.joined) throw new NotFoundError(`no endpoint of container ${req.containerId} (${req.ifname}) on network ${n.Name}`);
    const addrs = await ipJson<Array<{ addr_info?: Array<{ local?: string }> }>>(e.netns, ['addr', 'show', 'dev', e.ifname]).catch(() => undefined);
    if (!addrs) throw new NotFoundError(`interface ${e.ifname} of container ${req.containerId} is gone`);
    if (!addrs.some((a) => a.addr_info?.some((i) => i.local === e.ip))) throw new ApiError(500, `interface ${e.ifname} of container ${req.containerId} has lost its address ${e.ip}`);
  }

  /**
   * GC: every endpoint on the network, made through a list of this name, whose attachment the
   * runtime no longer lists goes (another runtime's endpoints on the same network stay, unless it
   * uses a list of the same name). Returns how many.
   */
  gc(network: string, list: string, valid: Array<{ containerID: string; ifname: string }>): Promise<number> {
    return this.queue.run(async () => {
      const n = this.network(network);
      const keep = new Set(valid.map((v) => this.keyOf(n, v.containerID, v.ifname)));
      const stale = [...this.entries.values()].filter((e) => e.networkId === n.Id && (e.list ?? '') === list && !keep.has(e.key));
      for (const e of stale) await this.undo(e);
      return stale.length;
    });
  }

  /** STATUS: the network exists and can take containers. */
  status(network: string): void {
    this.network(network);
  }

  /** The interface out, the address back, the resolver closed with the container's last endpoint; the entry last. */
  private async undo(e: Provided): Promise<void> {
    const n = this.d.registry.networks.get(e.networkId);
    const alive = await netnsExists(e.netns) || (await fs.stat(e.netns).then((s) => !s.isDirectory(), () => false));
    if (n) {
      await this.d.registry.driverOf(n)?.leave(n, { netnsPath: alive ? e.netns : '', ifname: e.ifname, endpointId: e.endpointId }).catch((x: Error) => console.error(`berthd: CNI DEL of ${e.containerId.slice(0, 12)}: ${x.message}`));
      await this.d.registry.ipamOf(n).releaseAddress(n, { ip: e.ip }, e.endpointId);
    }
    this.entries.delete(e.key);
    // The record and the attachment's file together: an allocation a crash keeps in the record
    // is one no attachment names, which the next start frees (allocsweep.ts).
    await Promise.all([n ? this.d.registry.save(n) : undefined, fs.rm(this.file(e.key), { force: true })]);
    if (!this.d.ownSandbox(e.containerId) && ![...this.entries.values()].some((x) => x.containerId === e.containerId)) {
      this.resolver?.closeSandbox(e.containerId);
      // Deleting a table waits for RCU grace periods (~14 ms here): the DEL does not wait for it,
      // an ADD into the same namespace does (serveDns), and a namespace gone meanwhile took it along.
      if (alive) this.cleanUp(e.netns, () => nftDeleteTable('ip', RESOLVER_TABLE, e.netns));
    }
    if (n) this.d.registry.changed([n.Id], e.containerId);
  }

  /** Runs `job` after the namespace's earlier clean-ups; its failure is no one's (the namespace may be gone). */
  private cleanUp(netns: string, job: () => Promise<void>): void {
    const next = (this.cleaning.get(netns) ?? Promise.resolve()).then(job).catch(() => undefined);
    this.cleaning.set(netns, next);
    void next.then(() => { if (this.cleaning.get(netns) === next) this.cleaning.delete(netns); });
  }

  private async serveDns(e: Provided): Promise<void> {
    if (!this.resolver || this.d.ownSandbox(e.containerId)) return;
    await this.cleaning.get(e.netns);
    // The resolver listens on 127.0.0.11: loopback must be up, which a runtime without the
    // loopback plugin has not done yet (it is what that plugin would do).
    loopbackUp(e.netns);
    const port = this.resolver.serveSandbox(e.containerId, e.netns);
    await this.d.redirectResolver(e.netns, port, false);
  }

  private result(e: Provided): CniResult {
    return {
      cniVersion: '1.1.0',
      interfaces: [{ name: e.ifname, mac: e.mac, sandbox: e.netns }],
      ips: [{ address: `${e.ip}/${e.prefix}`, ...(e.gateway ? { gateway: e.gateway } : {}), interface: 0 }],
      routes: e.gateway ? [{ dst: '0.0.0.0/0', gw: e.gateway }] : [],
      // berth's embedded DNS inside the container's namespace, as a berth container has it.
      dns: { nameservers: [RESOLVER_ADDRESS], options: ['ndots:0'] },
    };
  }
}
