import type { EndpointRecord } from '../network/overlay.js';
import type { PolicyEndpointInfo } from '../network/policy/policy.js';
import type { NetworkRecord } from '../network/types.js';
import { ROOT } from './keys.js';
import type { WatchEvent } from './store.js';

/** What the follower needs: the store's endpoints, this host's swarm networks, and the policy to tell. */
export interface PolicyPeersHost {
  me(): string;
  endpointsOf(networkId: string): EndpointRecord[];
  swarmNetworks(): NetworkRecord[];
  policy: {
    setPeers(networkId: string, networkName: string, list: PolicyEndpointInfo[]): Promise<void>;
    peerNetworks(): string[];
  };
}

const ENDPOINTS = `${ROOT}endpoints/`;
const NETWORKS = `${ROOT}networks/`;

/**
 * Network policy across hosts: a SwarmNetworks follower that hands each swarm network's
 * endpoints on other hosts, with their containers' labels, to this host's policy as selector set
 * members. It runs before the batch's revision is published, so a command that waits until every
 * host applied it (a `docker run` on another host, a `network connect`) returns once every host's
 * sets hold the new address.
 */
export class PolicyPeers {
  constructor(private readonly host: PolicyPeersHost) {}

  async follow(events: WatchEvent<unknown>[], full: boolean): Promise<void> {
    const touched = new Set<string>(full ? [...this.host.swarmNetworks().map((n) => n.Id), ...this.host.policy.peerNetworks()] : []);
    for (const e of events) {
      if (e.key.startsWith(ENDPOINTS)) touched.add(e.key.slice(ENDPOINTS.length).split('/')[0]!);
      else if (e.key.startsWith(NETWORKS)) touched.add(e.key.slice(NETWORKS.length));
    }
    if (!touched.size) return;
    const nets = new Map(this.host.swarmNetworks().map((n) => [n.Id, n]));
    const me = this.host.me();
    for (const id of touched) {
      const n = nets.get(id);
      const peers = n ? this.host.endpointsOf(id).filter((e) => e.Node !== me && e.IP).map((e) => peerInfo(e)) : [];
      await this.host.policy.setPeers(id, n?.Name ?? '', peers);
    }
  }

  /** Leaving the swarm: no peer of any swarm network stays in a set. */
  async clear(): Promise<void> {
    for (const id of this.host.policy.peerNetworks()) await this.host.policy.setPeers(id, '', []);
  }
}

function peerInfo(e: EndpointRecord): PolicyEndpointInfo {
  return { containerId: e.ContainerID, containerName: e.Name, labels: e.Labels ?? {}, endpointId: e.EndpointID, ip: e.IP, ifname: '', netnsPath: '' };
}
