import type { EndpointState } from '../model/network.js';
import { BadRequestError } from '../util/errors.js';
import { newId } from '../util/ids.js';
import type { NetworkDriver } from './driver.js';
import type { AddressLease } from './ipamdriver.js';
import type { JournalEndpoint, SandboxJournal } from './journal.js';
import type { NetworkRegistry } from './registry.js';
import type { NetworkRecord } from './types.js';

/** One endpoint about to be joined: its network, driver, lease and interface name. */
export interface Plan { n: NetworkRecord; driver: NetworkDriver; ep: EndpointState; entry: JournalEndpoint; lease: AddressLease; defaultRoute: boolean }

/**
 * Leases an address for each endpoint (none for a driver that brings its own) and names its
 * interface, then adds them to the journal; nothing of the kernel is touched yet. Interfaces are
 * numbered from `firstIndex`; only the first gets the default route (when `defaultRoute`).
 */
export async function planEndpoints(registry: NetworkRegistry, endpoints: Record<string, EndpointState>, journal: SandboxJournal, firstIndex: number, defaultRoute = true): Promise<Plan[]> {
  const plans: Plan[] = [];
  try {
    let index = firstIndex;
    for (const [netId, ep] of Object.entries(endpoints)) {
      const n = registry.get(netId);
      const driver = registry.driverOf(n);
      if (!driver) throw new BadRequestError(`container cannot be connected to network ${n.Name}`);
      const endpointId = newId();
      // A driver that owns addresses (CNI) brings them from its join: nothing to lease here.
      const lease = driver.ownsAddresses ? { ip: '', prefix: 0, gateway: '' }
        : await registry.ipamOf(n).requestAddress(n, endpointId, { ...(ep.IPAMConfig?.IPv4Address ? { ip: ep.IPAMConfig.IPv4Address } : {}), ...(ep.IPAMConfig?.IPv6Address ? { ip6: ep.IPAMConfig.IPv6Address } : {}), ...(ep.requestedMac ? { mac: ep.requestedMac } : {}) });
      const entry: JournalEndpoint = { networkId: n.Id, endpointId, ip: lease.ip, ...(lease.ip6 ? { ip6: lease.ip6 } : {}), ifname: `eth${index}` };
      plans.push({ n, driver, ep, entry, lease, defaultRoute: defaultRoute && index === firstIndex });
      index++;
    }
  } catch (e) {
    await releaseLeases(registry, plans);
    throw e;
  }
  journal.endpoints.push(...plans.map((p) => p.entry));
  return plans;
}

export async function releaseLeases(registry: NetworkRegistry, plans: Plan[]): Promise<void> {
  for (const p of plans) if (!p.driver.ownsAddresses) await registry.ipamOf(p.n).releaseAddress(p.n, p.lease, p.entry.endpointId);
}
