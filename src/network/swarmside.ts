import type { NetworkDriver } from './driver.js';
import { newNetworkRecord } from './netcreate.js';
import type { NetworkRegistry } from './registry.js';
import type { NetworkRecord } from './types.js';

/** What the swarm side needs of the controller: its default MTU, its firewall and its removal. */
export interface SwarmSideHooks {
  mtuDefault(): number;
  /** Puts a network in the host firewall (healing a ruleset a crash left out of step). */
  firewallAdd(n: NetworkRecord): Promise<void>;
  /** Removes a network's record, firewall, pools and kernel side, as `network rm` does. */
  removeNow(n: NetworkRecord, driver: NetworkDriver | undefined): Promise<void>;
}

/**
 * This host's side of the swarm networks (cluster/swarmnetworks.ts's SwarmNetworkHost): the
 * cluster's view makes them here, keeps their peers in step and drops them, through the same
 * registry and drivers as local networks.
 */
export class SwarmNetworkSide {
  constructor(private readonly registry: NetworkRegistry, private readonly o: SwarmSideHooks) {}

  swarmNetworks(): NetworkRecord[] {
    return this.registry.list().filter((n) => n.Scope === 'swarm');
  }

  network(id: string): NetworkRecord | undefined {
    const n = this.registry.networks.get(id);
    return n?.Scope === 'swarm' ? n : undefined;
  }

  ownSubnets(): string[] {
    return this.registry.list().flatMap((n) => (n.pools ?? []).map((p) => p.subnet));
  }

  /** A create request's record for the cluster: the same checks as a local network's, nothing written. */
  newRecord(body: Record<string, unknown>): Promise<NetworkRecord> {
    return newNetworkRecord(this.registry, body, { mtuDefault: this.o.mtuDefault(), used: async () => ({ v4: [], v6: [] }) });
  }

  async adoptSwarmNetwork(n: NetworkRecord): Promise<void> {
    await this.registerSwarmNetwork(n);
    await this.makeSwarmNetwork(n);
  }

  private swarmDriver(n: NetworkRecord): NetworkDriver {
    const driver = this.registry.driverOf(n);
    if (!driver) throw new Error(`swarm network ${n.Name}: no ${n.Driver} driver on this host`);
    return driver;
  }

  async registerSwarmNetwork(n: NetworkRecord): Promise<void> {
    this.swarmDriver(n);
    await this.registry.add(n);
  }

  async makeSwarmNetwork(n: NetworkRecord): Promise<void> {
    const driver = this.swarmDriver(n);
    await Promise.all([driver.ensureNetwork(n), driver.hostFirewall ? this.o.firewallAdd(n) : undefined]);
    this.registry.changed([n.Id], '');
  }

  /** The driver's own swarm-level allocation (a global-scope plugin's AllocateNetwork); false for drivers with none. */
  async allocate(n: NetworkRecord): Promise<boolean> {
    const d = this.registry.driverOf(n);
    return d?.allocate ? d.allocate(n).then(() => true) : false;
  }

  async free(n: NetworkRecord): Promise<void> { await this.registry.driverOf(n)?.free?.(n); }

  async ensureSwarmNetwork(n: NetworkRecord): Promise<void> {
    await this.registry.driverOf(n)?.ensureNetwork(n);
  }

  async dropSwarmNetwork(n: NetworkRecord): Promise<void> {
    const driver = this.registry.driverOf(n);
    await this.o.removeNow(n, driver);
    this.registry.changed([n.Id], '');
  }

  async peersChanged(networkIds: string[], full: boolean, touched?: ReadonlyMap<string, ReadonlySet<string>>): Promise<void> {
    for (const id of networkIds) {
      const n = this.registry.networks.get(id);
      if (n) await this.registry.driverOf(n)?.syncPeers?.(n, full, touched?.get(id) ?? (touched ? new Set() : undefined));
    }
    this.registry.changed(networkIds, '');
  }

  removeOrphans(keep: NetworkRecord[]): Promise<void> {
    return Promise.all(this.registry.registeredDrivers().map((d) => d.removeOrphans?.(keep))).then(() => undefined);
  }
}
