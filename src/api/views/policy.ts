import { describePeer, describePorts, DIRECTIONS, type Direction } from '../../network/policy/labels.js';
import type { Known, NetworkPolicy } from '../../network/policy/policy.js';
import { chainName, DENY_COMMENT, ruleTag } from '../../network/policy/rules.js';

/** One direction of one endpoint as `berth network policy inspect` shows it. */
export interface DirectionView {
  /** Isolated: only what Rules allow passes (and replies). Not isolated: everything may. */
  Isolated: boolean;
  /** The labels that made it isolated. */
  IsolatedBy: string[];
  /** Packets dropped here (connection attempts no rule allowed), from the deny rule's counter. */
  Denied: number;
  Rules: Array<{ Label: string; Source: 'container' | 'network'; Peer: string; Ports: string; Peers: string[]; Matched: number }>;
}

export interface EndpointPolicyView {
  Network: string;
  NetworkID: string;
  IPAddress: string;
  IPv6Address: string;
  /** Where the rules live: berthd's namespace (bridges) or the container's own (macvlan, ipvlan). */
  EnforcedIn: 'host' | 'container';
  Ingress: DirectionView;
  Egress: DirectionView;
}

function members(policy: NetworkPolicy, ep: Known, d: Direction): DirectionView['Rules'] {
  return (ep.policed?.rules ?? []).filter((r) => r.direction === d).map((r) => {
    const p = r.peer;
    const peers = p.kind === 'select'
      ? policy.membersOf(p).filter((m) => m.endpointId !== ep.endpointId).map((m) => `${m.containerName} ${m.ip}${m.ip6 ? ` ${m.ip6}` : ''} (${m.networkName})`)
      : [p.kind === 'any' ? 'any address' : describePeer(p)];
    return { Label: r.label, Source: r.source, Peer: describePeer(p), Ports: describePorts(r.ports), Peers: peers, Matched: 0 };
  });
}

export async function endpointPolicyView(policy: NetworkPolicy, ep: Known): Promise<EndpointPolicyView> {
  const counters = ep.policed ? await policy.counters(ep) : new Map<string, Map<string, number>>();
  const dir = (d: Direction): DirectionView => {
    const isolated = !!ep.policed?.isolate.includes(d);
    const chain = counters.get(chainName(ep.endpointId, d));
    const rules = members(policy, ep, d);
    (ep.policed?.rules ?? []).filter((r) => r.direction === d).forEach((r, i) => { rules[i]!.Matched = chain?.get(ruleTag(r)) ?? 0; });
    return { Isolated: isolated, IsolatedBy: ep.isolatedBy[d], Denied: chain?.get(DENY_COMMENT) ?? 0, Rules: rules };
  };
  const [Ingress, Egress] = DIRECTIONS.map(dir) as [DirectionView, DirectionView];
  return { Network: ep.networkName, NetworkID: ep.networkId, IPAddress: ep.ip, IPv6Address: ep.ip6 ?? '', EnforcedIn: ep.placement === 'host' ? 'host' : 'container', Ingress, Egress };
}
