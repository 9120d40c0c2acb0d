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
    setPeers(networkId: string, networkName: string, list: PolicyEndpointInfo[], gone?: string[]): Promise<void>;
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
    const whole = new Set<string>(full ? [...this.host.swarmNetworks().map((n) => n.Id), ...this.host.policy.peerNetworks()] : []);
    // Endpoint changes are handed on one by one (the last event of each wins); a network record
    // that changed (made, removed, renamed) has its peers handed on whole.
    const changed = new Map<string, Map<string, EndpointRecord | undefined>>();
    for (const e of events) {
      if (e.key.startsWith(NETWORKS)) whole.add(e.key.slice(NETWORKS.length));
      if (!e.key.startsWith(ENDPOINTS)) continue;
      const [net, id] = e.key.slice(ENDPOINTS.length).split('/');
      if (!net || !id) continue;
      const m = changed.get(net) ?? new Map<string, EndpointRecord | undefined>();
      m.set(id, e.type === 'put' ? (e.value as EndpointRecord) : undefined);
      changed.set(net, m);
    }
    if (!whole.size && !changed.size) return;
    const nets = new Map(this.host.swarmNetworks().map((n) => [n.Id, n]));
    const me = this.host.me();
    const isPeer = (e: EndpointRecord | undefined): e is EndpointRecord => !!e && e.Node !== me && !!e.IP;
    for (const id of whole) {
      const n = nets.get(id);
      await this.host.policy.setPeers(id, n?.Name ?? '', n ? this.host.endpointsOf(id).filter(isPeer).map(peerInfo) : []);
    }
    for (const [id, m] of changed) {
      if (whole.has(id)) continue;
      const n = nets.get(id);
      if (!n) { await this.host.policy.setPeers(id, '', []); continue; }
      const came = [...m.values()].filter(isPeer);
      const gone = [...m].filter(([, e]) => !isPeer(e)).map(([ep]) => ep);
      await this.host.policy.setPeers(id, n.Name, came.map(peerInfo), gone);
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
