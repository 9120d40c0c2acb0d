import type { PortMapping } from '../model/network.js';
import type { NetworkRecord } from './types.js';

/** An endpoint as the firewall sees it: where policy and source checks attach. */
export interface FirewallEndpoint {
  containerId: string;
  endpointId: string;
  networkId: string;
  ip: string;
  ip6?: string;
  mac: string;
}

/**
 * The host firewall behind one interface, as libnetwork keeps iptables below its drivers: networks
 * whose driver asks for it (`hostFirewall`), published ports, and hooks for each endpoint that
 * joins or leaves (where network policy and anti-spoofing rules go). berth's nftables text is the
 * one implementation; the controller never builds rules itself.
 */
export interface Firewall {
  /** The whole state at once, at start: whatever an earlier run left in berth's tables is replaced. */
  sync(networks: NetworkRecord[], ports: PortMapping[]): Promise<void>;
  /** Adds one network to the `others` already there, in one transaction. */
  addNetwork(n: NetworkRecord, others: NetworkRecord[]): Promise<void>;
  removeNetwork(n: NetworkRecord, remaining: NetworkRecord[]): Promise<void>;
  endpointJoined(n: NetworkRecord, ep: FirewallEndpoint): Promise<void>;
  endpointLeft(n: NetworkRecord, ep: FirewallEndpoint): Promise<void>;
  addPorts(mappings: PortMapping[]): Promise<void>;
  removePorts(mappings: PortMapping[]): Promise<void>;
  /** `berthd --cleanup`: every table of berth's; returns the problems met. */
  removeAll(): Promise<string[]>;
}
