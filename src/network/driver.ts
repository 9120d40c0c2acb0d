import type { CniResult } from '../cni/spec.js';
import { ForbiddenError } from '../util/errors.js';
import type { AddressLease } from './ipamdriver.js';
import type { NetworkRecord } from './types.js';

/**
 * The network driver interface, after libnetwork's driverapi and netavark's driver trait: the
 * layers above keep what every driver shares (records, IPAM, endpoints, DNS, published ports, the
 * firewall) and ask a driver only for its kernel side. Drivers are registered by name in the
 * registry (the daemon does it at start: `NetworkRegistry.registerDriver`); nothing tests a
 * driver's name to decide what to do, it asks the driver's capabilities below. Drivers do not
 * import each other.
 */

/** What the controller hands a driver when a container's endpoint joins its sandbox. */
export interface EndpointJoin {
  /** The container's network namespace (a bind mount under berth's root). */
  netnsPath: string;
  /** Interface name inside the container: eth0, eth1, … */
  ifname: string;
  endpointId: string;
  mac: string;
  /** The endpoint's address with the subnet's prefix length. */
  addressCidr: string;
  /** Set when this endpoint carries the container's default route. */
  gateway?: string;
  /** On dual-stack networks: the IPv6 address with its prefix length, and the IPv6 default route. */
  address6Cidr?: string;
  gateway6?: string;
  /** Who the endpoint is for: drivers that publish endpoints to other hosts (overlay) need it for their DNS. */
  owner?: { containerId: string; name: string; aliases: string[]; labels?: Record<string, string> };
  /** Whether the user chose the address (--ip): a clash is then the user's error, not a race to retry. */
  requestedIp?: boolean;
  /** Whether the user chose the MAC (--mac-address): a plugin is told only a MAC the user chose, as Docker tells it. */
  requestedMac?: boolean;
  /** Whether the MAC is fixed, by the user or by an IPAM that required one: a plugin must use it. */
  macFixed?: boolean;
  /** The container's exposed and published ports, for drivers that map ports themselves (a plugin is told them). */
  ports?: { bindings: Record<string, Array<{ HostIp?: string; HostPort?: string }> | null>; publishAll: boolean; exposed: string[] };
}

/**
 * An address another host claimed at the same moment (a cluster-wide IPAM): the sandbox takes the
 * next free address and joins again; with an address the user asked for, it is Docker's 403.
 */
export class AddressTakenError extends ForbiddenError {
  constructor() { super('Address already in use'); }
}

/** The endpoint whose interface leaves a sandbox. */
export interface EndpointLeave {
  /** '' when the namespace is already gone (a crash's leftovers): only host-side objects remain. */
  netnsPath: string;
  ifname: string;
  endpointId: string;
  /** Its IPv4 address, where the sandbox's journal has it (a driver that keys its own state by it finds it after a restart). */
  ip?: string;
}

/** What a join may tell the sandbox beyond the MAC. */
export interface JoinResult {
  mac: string;
  /** The addresses the driver's backend gave (drivers that own addresses: berth's IPAM gave none). */
  lease?: AddressLease;
  /** A CNI chain's result, shown in inspect. */
  cni?: CniResult;
}

export interface CreateContext {
  /** Every other network berth has, to check shared resources (bridge names, parents). */
  others: NetworkRecord[];
  /** MTU for new networks that do not set one (the host uplink's). */
  mtuDefault: number;
  /** Whether the user gave the subnet (some drivers cannot pick one). */
  subnetGiven: boolean;
}

export interface NetworkDriver {
  readonly name: string;
  /** Whether new subnets must avoid the host's routes (a macvlan subnet is usually the parent's LAN). */
  readonly avoidsRoutedSubnets: boolean;
  /** Whether the driver gives endpoints IPv6 addresses on networks created with EnableIPv6. */
  readonly ipv6?: boolean;
  /** Whether published ports (-p) can lead to this driver's endpoints. */
  readonly publishes: boolean;
  /**
   * Whether the host firewall carries this driver's networks (isolation, NAT, published ports):
   * true for a bridge in berthd's namespace; false for macvlan, whose traffic never crosses it.
   */
  readonly hostFirewall: boolean;
  /**
   * Set when the host firewall carries only the network's routed traffic, while its endpoints
   * reach each other without crossing berthd's namespace (overlay's macvlan children): network
   * policy then lives in each container's namespace, as for drivers without the host firewall.
   */
  readonly policyInSandbox?: boolean;
  /**
   * Checks the driver options and fills the record's driver fields (Options normalised, kernel
   * names). Leaves nothing in the kernel (a probe for a link type is made and deleted at once), so
   * a refusal leaves nothing behind.
   */
  configure(n: NetworkRecord, ctx: CreateContext): Promise<void>;
  /** Makes (or, after a restart, checks again) the network's kernel objects. Idempotent. */
  ensureNetwork(n: NetworkRecord): Promise<void>;
  /** Removes what ensureNetwork made; `remaining` are the networks that stay. Idempotent. */
  deleteNetwork(n: NetworkRecord, remaining: NetworkRecord[]): Promise<void>;
  /**
   * Gives the container its interface on this network, configured before anyone can use it.
   * Returns the MAC the interface really has when the driver cannot choose it (ipvlan).
   */
  join(n: NetworkRecord, j: EndpointJoin): Promise<JoinResult | void>;
  /** Removes the container's interface on this network. */
  leave(n: NetworkRecord, ep: EndpointLeave): Promise<void>;
  /**
   * The endpoint's network is gone from this host (a swarm network removed, or pruned, while
   * the endpoint was still on it): frees what the driver holds in berthd's namespace for it, if
   * anything, without the network's record. Called on every driver, so it is a no-op for others'.
   */
  forgetEndpoint?(endpointId: string): Promise<void>;
  /**
   * The endpoint's link in berthd's namespace whose counters are its traffic (a veth's host end),
   * for /metrics; absent for drivers whose endpoints have none there (a macvlan child lives only
   * in the container's namespace).
   */
  hostLink?(n: NetworkRecord, endpointId: string): string | undefined;
  /** The bridge in berthd's namespace the network's endpoints hang off, where there is one (network policy asks br_netfilter of it). */
  hostBridge?(n: NetworkRecord): string | undefined;
  /**
   * `swarm` for drivers whose networks live in the cluster store and exist on every host
   * (overlay): they are created and removed through the cluster, not this host's records alone.
   */
  readonly scope?: 'swarm';
  /**
   * The driver's own cluster-wide allocation for a new swarm network, made once on the manager that
   * creates it (a global-scope plugin's AllocateNetwork, as swarmkit's allocator asks it): it may
   * replace the record's Options, which every host's copy then carries. Drivers without it (overlay)
   * get a VNI from the cluster instead.
   */
  allocate?(n: NetworkRecord): Promise<void>;
  /** Undoes allocate, once the network is gone from every host (FreeNetwork). */
  free?(n: NetworkRecord): Promise<void>;
  /**
   * Brings the network's view of remote endpoints (a VXLAN device's peers) in line with the store;
   * `full` re-reads the kernel; `ips`, when given, are the only addresses whose endpoints changed
   * since the last sync (a store batch names them), so only those are looked at.
   */
  syncPeers?(n: NetworkRecord, full: boolean, ips?: ReadonlySet<string>): Promise<void>;
  /**
   * Set for a plugin's driver: the network's objects are the plugin's, not berth's, so
   * `berthd --cleanup` (which removes berth's kernel objects) leaves them and asks it nothing.
   */
  readonly external?: boolean;
  /**
   * Set when the driver's backend assigns addresses itself (a CNI list's IPAM plugin): berth's IPAM
   * holds no pool for its networks and leases nothing; join returns the addresses.
   */
  readonly ownsAddresses?: boolean;
  /**
   * After a restart's recovery: frees what the driver still holds for endpoints that are gone
   * (`live` tells whether a sandbox holds an endpoint now: asked at the moment of each decision, as
   * containers start and stop meanwhile).
   */
  collectGarbage?(networks: NetworkRecord[], live: (endpointId: string) => boolean): Promise<void>;
  /** Removes kernel objects of this driver's naming that belong to none of `keep` (a crash's leftovers). */
  removeOrphans?(keep: NetworkRecord[]): Promise<void>;
}
