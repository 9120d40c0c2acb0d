import type { PoolState } from './ipam.js';
import type { Pool6State } from './ipam6.js';

/** A network as berth stores it; the public fields are Docker's inspect fields. */
export interface NetworkRecord {
  Name: string;
  Id: string;
  Created: string;
  Scope: 'local';
  Driver: 'bridge' | 'host' | 'null' | 'macvlan' | 'ipvlan';
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
  pools?: PoolState[];
  /** The IPv6 subnet of a dual-stack network (EnableIPv6). */
  pools6?: Pool6State[];
  /** Kernel side (macvlan/ipvlan): the parent link in berthd's namespace. */
  parent?: string;
  /** berth made the parent (a VLAN sub-interface, or the veth of an internal network): the last network using it removes it. */
  parentOwned?: boolean;
}

/** One container's membership of one network: what the user asked for and, while running, what it got. */
export interface EndpointState {
  NetworkID: string;
  IPAMConfig: { IPv4Address?: string; IPv6Address?: string } | null;
  Links: string[] | null;
  Aliases: string[] | null;
  EndpointID: string;
  Gateway: string;
  IPAddress: string;
  IPPrefixLen: number;
  MacAddress: string;
  /** Interface name inside the container (eth0, eth1, …) while connected. */
  ifname: string;
  /** On dual-stack networks, while connected. */
  GlobalIPv6Address?: string;
  GlobalIPv6PrefixLen?: number;
  IPv6Gateway?: string;
  /** Set with --mac-address. */
  requestedMac?: string;
}

export const PREDEFINED = ['bridge', 'host', 'none'];
