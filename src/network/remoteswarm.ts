import { ForbiddenError } from '../util/errors.js';
import { KeyedQueue } from '../util/serial.js';
import type { EndpointJoin, EndpointLeave } from './driver.js';
import type { NetworkRecord } from './types.js';

/**
 * What a global-scope plugin's swarm network needs of the cluster: the address claims and waits
 * overlay networks use too (the cluster's swarm networks give both).
 */
export interface SwarmPlane {
  /** Claims an address and publishes the endpoint under this host's lease; returns the store revision. */
  claim(n: NetworkRecord, ep: { endpointId: string; ip: string; mac: string; containerId: string; name: string; aliases: string[]; labels?: Record<string, string> }): Promise<number>;
  /** Withdraws an endpoint and its address; the revision of the removal, or undefined if there was none. */
  release(n: NetworkRecord, endpointId: string): Promise<number | undefined>;
  /** Returns once every live host has applied the store up to `revision` (or the bounded wait ran out). */
  appliedEverywhere(revision: number): Promise<void>;
}

/** The plugin calls around one host's copy of a network (RemoteDriver's). */
export interface HostCopy {
  /** CreateNetwork, unless this host made it already (a restart remembers). */
  create(n: NetworkRecord): Promise<void>;
  /** DeleteNetwork, if this host made it. */
  remove(n: NetworkRecord): Promise<void>;
  /** Whether any endpoint of this host is on the network, in whatever state (the state files say). */
  inUse(networkId: string): Promise<boolean>;
}

/**
 * A global-scope plugin's swarm network on one host, as Docker's swarm nodes run them: the
 * network exists everywhere in the store, but the plugin hears CreateNetwork on a host only when
 * that host's first endpoint joins it, and DeleteNetwork when its last one has left (Docker's
 * executor creates the network for an attachment or task and removes it when they go,
 * daemon/cluster/executor/container). Addresses are claimed in the store as overlay ones are,
 * so the swarm's IPAM holds them cluster-wide and other hosts resolve the endpoint by name.
 */
export class SwarmCopies {
  /** Create and delete of one network, one at a time. */
  private readonly lock = new KeyedQueue();
  /** Joins between their CreateNetwork and their state file (or their failure): the network is in use meanwhile. */
  private readonly joining = new Map<string, number>();

  constructor(private readonly plugin: string, private readonly plane: () => SwarmPlane | undefined, private readonly copy: HostCopy) {}

  private planeOr(n: NetworkRecord): SwarmPlane {
    const plane = this.plane();
    if (!plane) throw new ForbiddenError(`network ${n.Name} is a swarm network of plugin "${this.plugin}" and this node is not in the swarm`);
    return plane;
  }

  /**
   * The claim first: an address another host took a moment before fails the join with nothing
   * asked of the plugin (the sandbox retries with the next address). A failure after undoes the
   * claim and, if nothing else uses the network here, the host's copy.
   */
  async join<T>(n: NetworkRecord, j: EndpointJoin, attach: () => Promise<T>): Promise<T> {
    const plane = this.planeOr(n);
    const revision = await plane.claim(n, {
      endpointId: j.endpointId, ip: j.addressCidr.split('/')[0]!, mac: j.mac, containerId: j.owner?.containerId ?? '',
      name: j.owner?.name ?? '', aliases: j.owner?.aliases ?? [], labels: j.owner?.labels ?? {},
    });
    this.joining.set(n.Id, (this.joining.get(n.Id) ?? 0) + 1);
    let result: T;
    try {
      await this.lock.run(n.Id, () => this.copy.create(n));
      result = await attach();
    } catch (e) {
      this.done(n.Id);
      await plane.release(n, j.endpointId).catch(() => undefined);
      await this.dropIfUnused(n).catch((u: Error) => console.error(`berthd: plugin ${this.plugin}: network ${n.Name}: ${u.message}`));
      throw e;
    }
    this.done(n.Id);
    // Every live host has the endpoint (its DNS answers the name) before `run` returns.
    await plane.appliedEverywhere(revision);
    return result;
  }

  /** The endpoint goes from the plugin, then from the store; the host's copy goes with its last endpoint. */
  async leave(n: NetworkRecord, ep: EndpointLeave, detach: () => Promise<void>): Promise<void> {
    let failure: unknown;
    await detach().catch((e) => { failure = e; });
    const plane = this.plane();
    const revision = await plane?.release(n, ep.endpointId).catch(() => undefined);
    await this.dropIfUnused(n);
    if (revision !== undefined) await plane!.appliedEverywhere(revision);
    if (failure) throw failure;
  }

  private done(id: string): void {
    const left = (this.joining.get(id) ?? 1) - 1;
    if (left > 0) this.joining.set(id, left);
    else this.joining.delete(id);
  }

  private dropIfUnused(n: NetworkRecord): Promise<void> {
    return this.lock.run(n.Id, async () => {
      if (this.joining.get(n.Id) || (await this.copy.inUse(n.Id))) return;
      await this.copy.remove(n);
    });
  }
}
