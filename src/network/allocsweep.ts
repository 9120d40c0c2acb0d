import type { NetworkRecord } from './types.js';
import type { NetworkRegistry } from './registry.js';

/**
 * The allocations a record may keep only while an endpoint holds them. Every writer puts an
 * endpoint in a sandbox journal (or a berth-cni attachment file) before its address reaches the
 * network's record, and takes it out of there before the address is freed; so after a crash an
 * allocation whose endpoint neither names was cut short between the two (a disconnect whose
 * record write was lost, a start that never got as far as its journal) and is freed, or the
 * address would stay taken with nobody to give it back.
 */
export function unheldAllocations(n: NetworkRecord, held: ReadonlySet<string>): string[] {
  // Swarm networks keep theirs in the cluster store, plugins and CNI drivers in their own.
  if (n.Scope !== 'local' || (n.IPAM.Driver || 'default') !== 'default') return [];
  const freed: string[] = [];
  for (const pool of [...(n.pools ?? []), ...(n.pools6 ?? [])]) {
    for (const [ip, owner] of Object.entries(pool.allocated)) {
      if (held.has(owner)) continue;
      delete pool.allocated[ip];
      freed.push(ip);
    }
  }
  return freed;
}

/** After a restart, once sandboxes are adopted: frees, in every network, what no endpoint holds. */
export async function freeUnheldAddresses(registry: NetworkRegistry, held: ReadonlySet<string>): Promise<void> {
  for (const n of registry.list()) {
    const freed = unheldAllocations(n, held);
    if (!freed.length) continue;
    console.error(`berthd: network ${n.Name}: ${freed.join(', ')} freed: allocated to no endpoint (a crash cut a release short)`);
    await registry.save(n);
  }
}
