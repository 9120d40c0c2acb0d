import type { EndpointRecord } from '../network/overlay.js';
import { INGRESS_SBOX } from './ingress.js';
import { K } from './keys.js';

/**
 * How this host's own endpoints differ from its view of the store. The store is written on each
 * change (a claim, a release, a new lease's republish), and a write that failed was never looked
 * at again: a republish refused once (a leader change right after a partition healed) left the
 * host's containers out of every other host's view for good, and a release skipped left a
 * removed container in it (chaos across hosts, seed 38069: a stale and a missing FDB entry on two
 * hosts, 20 s after every node was Ready). Docker's NetworkDB repairs the same drift with its
 * periodic bulk sync; this is berth's form of it, one finding per endpoint.
 */
export type OwnDrift =
  /** Held here but not in the store: written again. */
  | { kind: 'missing'; endpoint: EndpointRecord }
  /** In the store as this host's, but not held here: withdrawn. */
  | { kind: 'extra'; endpoint: EndpointRecord }
  /** Held here though no container of the engine's names it (its release never came): released. */
  | { kind: 'leaked'; endpoint: EndpointRecord };

export interface OwnView {
  me: string;
  /** The endpoints this host holds (written under its lease). */
  mine: ReadonlyMap<string, EndpointRecord>;
  /** Every endpoint of the view, network by network. */
  store: ReadonlyMap<string, ReadonlyMap<string, EndpointRecord>>;
  /** The networks of the view, by id (an endpoint of a network gone is not written again). */
  networks: { has(id: string): boolean };
  /** Address claims of the view, network by network: who holds each address. */
  claims: ReadonlyMap<string, ReadonlyMap<string, { EndpointID: string }>>;
  /** Joins between their local allocation and their claim: neither missing nor extra yet. */
  pending: ReadonlySet<string>;
  /** Store keys whose deletion is being retried already. */
  withdrawing: ReadonlySet<string>;
  /** Endpoints the engine's container records name. */
  named: ReadonlySet<string>;
  /** When this process claimed each endpoint: a join still running is not in the engine's records yet. */
  claimedAt: ReadonlyMap<string, number>;
  now: number;
  /** How old a claim must be before its endpoint, named by no container, counts as leaked. */
  leakAfterMs: number;
}

export function ownDrift(v: OwnView): Map<string, OwnDrift> {
  const out = new Map<string, OwnDrift>();
  for (const e of v.mine.values()) {
    if (v.pending.has(e.EndpointID)) continue;
    const old = v.now - (v.claimedAt.get(e.EndpointID) ?? 0) > v.leakAfterMs;
    // The host's ingress endpoint is the network's, not a container's.
    if (e.ContainerID !== INGRESS_SBOX && !v.named.has(e.EndpointID) && old) {
      out.set(`leaked ${e.EndpointID}`, { kind: 'leaked', endpoint: e });
      continue;
    }
    if (!v.networks.has(e.Network) || v.store.get(e.Network)?.has(e.EndpointID)) continue;
    // Another endpoint holds its address: republish keeps it out and says so.
    const holder = v.claims.get(e.Network)?.get(e.IP);
    if (holder && holder.EndpointID !== e.EndpointID) continue;
    out.set(`missing ${e.EndpointID}`, { kind: 'missing', endpoint: e });
  }
  for (const m of v.store.values()) {
    for (const e of m.values()) {
      if (e.Node !== v.me || v.mine.has(e.EndpointID) || v.pending.has(e.EndpointID)) continue;
      if (v.withdrawing.has(K.endpoint(e.Network, e.EndpointID))) continue;
      out.set(`extra ${e.EndpointID}`, { kind: 'extra', endpoint: e });
    }
  }
  return out;
}
