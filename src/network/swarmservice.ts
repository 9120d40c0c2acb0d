import type { NetworkRecord } from './types.js';

/** Swarm-scope networks' creation and removal, through the cluster (present while this host is in a swarm). */
export interface SwarmNetworkService {
  /** `notManager`: the refusal on a worker (Docker words it one way for overlay, another for a plugin). */
  create(body: Record<string, unknown>, notManager?: string): Promise<{ Id: string; Warning: string }>;
  remove(n: NetworkRecord): Promise<void>;
  /** Docker's `Peers` of a swarm network's inspect: the nodes with endpoints on it. */
  peersView(n: NetworkRecord): Array<{ Name: string; IP: string }>;
  /** Members of the network's inspect that are no container: this host's ingress endpoint (Docker's `ingress-sbox`). */
  sandboxMembers?(n: NetworkRecord): Record<string, { Name: string; EndpointID: string; MacAddress: string; IPv4Address: string; IPv6Address: string }>;
}

/** Docker's answer to an overlay create on a host that is no swarm manager (daemon/network.go). */
export const NOT_A_MANAGER = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.';

/** libnetwork's answer to a create on a global-scope plugin from a swarm worker (controller.go NewNetwork). */
export const FROM_WORKER = 'Cannot create a multi-host network from a worker node. Please create the network from a manager node.';
