import type { ConfList } from '../cni/spec.js';
import type { PoolState } from './ipam.js';
import type { Pool6State } from './ipam6.js';

import { DEFAULT_BRIDGE } from '../model/network.js';

export { PREDEFINED, type EndpointState } from '../model/network.js';

/**
 * Where a network's record lives: `local` networks under this daemon's root; `swarm` and `global`
 * ones in the cluster's store, seen by every host.
 */
export type NetworkScope = 'local' | 'swarm' | 'global';

/** A network as berth stores it; the public fields are Docker's inspect fields. */
export interface NetworkRecord {
  Name: string;
  Id: string;
  Created: string;
  Scope: NetworkScope;
  /** A registered driver's name (bridge, macvlan, …), or host/null for the sandbox modes. */
  Driver: string;
  EnableIPv6: boolean;
  IPAM: { Driver: string; Options: Record<string, string> | null; Config: Array<{ Subnet: string; Gateway?: string; IPRange?: string; AuxiliaryAddresses?: Record<string, string> }> };
  Internal: boolean;
  Attachable: boolean;
  Ingress: boolean;
  ConfigFrom: { Network: string };
  ConfigOnly: boolean;
  Options: Record<string, string>;
  Labels: Record<string, string>;
  /** Kernel side (bridge driver only). */
  bridge?: string;
  /**
   * Set when the bridge existed before the network (a user's bridge named with
   * com.docker.network.bridge.name): berth uses it but never deletes it. `addresses` are the ones
   * it had then, which `network rm` leaves; `routeLocalnet` its sysctl then, put back at rm.
   * Absent means berth made the bridge.
   */
  bridgeAdopted?: { addresses: string[]; routeLocalnet: string };
  mtu?: number;
  /** IPAM state: the IPv4 pool and its allocations. */
  pools?: PoolState[];
  /** The IPv6 subnet of a dual-stack network (EnableIPv6). */
  pools6?: Pool6State[];
  /** Kernel side (macvlan/ipvlan): the parent link in berthd's namespace. */
  parent?: string;
  /** berth made the parent (a VLAN sub-interface, or the veth of an internal network): the last network using it removes it. */
  parentOwned?: boolean;
  /** CNI networks: the configuration list as it was at create (a DEL must not depend on the file), where it came from, the version it runs at. */
  cni?: { source: string; list: ConfList; version: string };
}

/** The default bridge has addresses and NAT but no embedded DNS, no aliases and no static IPs (Docker's rule). */
export function isDefaultBridge(n: NetworkRecord): boolean {
  return n.Name === DEFAULT_BRIDGE;
}
