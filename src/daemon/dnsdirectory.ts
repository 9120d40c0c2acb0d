import type { Asker, NetworkView } from '../dns/lookup.js';
import type { DnsDirectory } from '../dns/server.js';
import { parseLink, type EndpointState } from '../model/network.js';
import { isDefaultBridge, type NetworkRecord } from '../network/types.js';

/**
 * What the directory reads of a container: berth's own records, and the endpoints CNI runtimes'
 * containers hold through berth-cni, which answer and ask alike.
 */
export interface DirectoryMember {
  Id: string;
  Name: string;
  Endpoints?: Record<string, Pick<EndpointState, 'IPAddress' | 'Aliases' | 'Links'> & { GlobalIPv6Address?: string }> | null;
  HostConfig: { Links?: string[] | null; Dns?: string[] | null };
}

/** A swarm network's endpoint on another host: enough to answer its names. */
export interface RemoteEndpoint { Network: string; ContainerID: string; Name: string; Aliases: string[]; IP: string }

/**
 * The DNS server's view of containers, derived from the engine's records and the network registry
 * (the daemon joins the two: the DNS imports neither). Views are rebuilt only
 * when an endpoint changes (generation bump), so finding the asker costs one map lookup.
 */
export class ContainerDirectory implements DnsDirectory {
  private builtFor = -1;
  private byContainer = new Map<string, Asker & { upstreams: string[] }>();

  constructor(
    private readonly containers: () => Iterable<DirectoryMember>,
    private readonly networks: () => Map<string, NetworkRecord>,
    /** Bumped by the network controller whenever an endpoint changes. */
    readonly generation: () => number,
    /** Endpoints of swarm networks on other hosts, as the cluster store has them. */
    private readonly remote: () => Iterable<RemoteEndpoint> = () => [],
    /** Whether an endpoint's names are answered now (a swarm task's only while it runs and is wanted). */
    private readonly answers: (containerId: string, aliases: readonly string[]) => boolean = () => true,
  ) {}

  askerFor(containerId: string): (Asker & { upstreams: string[] }) | undefined {
    if (this.builtFor !== this.generation()) this.rebuild();
    return this.byContainer.get(containerId);
  }

  lastAskerFor(containerId: string): Asker | undefined {
    return this.byContainer.get(containerId);
  }

  private rebuild(): void {
    this.builtFor = this.generation();
    const nets = this.networks();
    const views = new Map<string, NetworkView>();
    // Containers that hold an address: a start records its endpoints (and bumps the generation)
    // before it marks the container running, and a restart (policy or API) starts from 'exited',
    // so a filter on the state would build the view without it and keep that view until the next
    // endpoint change. An exit releases the addresses, so holding one is the test.
    // One container may come twice: as berth's and with endpoints it holds through berth-cni
    // (berth's own CNI runner calling berth-cni): its endpoints are merged, berth's record first.
    const merged = new Map<string, DirectoryMember>();
    for (const c of this.containers()) {
      const had = merged.get(c.Id);
      merged.set(c.Id, had ? { ...had, Endpoints: { ...had.Endpoints, ...c.Endpoints } } : c);
    }
    const running = [...merged.values()].filter((c) => Object.values(c.Endpoints ?? {}).some((ep) => ep.IPAddress));
    for (const c of running) {
      for (const [netId, ep] of Object.entries(c.Endpoints ?? {})) {
        const n = nets.get(netId);
        if (!n || isDefaultBridge(n) || !ep.IPAddress) continue;
        if (n.Scope === 'swarm' && !this.answers(c.Id, ep.Aliases ?? [])) continue;
        let view = views.get(netId);
        if (!view) views.set(netId, (view = { id: netId, name: n.Name, internal: n.Internal, endpoints: [] }));
        view.endpoints.push({
          containerId: c.Id, containerName: c.Name.slice(1), ip: ep.IPAddress,
          ...(ep.GlobalIPv6Address ? { ip6: ep.GlobalIPv6Address } : {}),
          names: [c.Name.slice(1), ...(ep.Aliases ?? []), c.Id.slice(0, 12)],
        });
      }
    }
    for (const e of this.remote()) {
      const n = nets.get(e.Network);
      if (!n || (e.ContainerID && !this.answers(e.ContainerID, e.Aliases))) continue;
      let view = views.get(e.Network);
      if (!view) views.set(e.Network, (view = { id: e.Network, name: n.Name, internal: n.Internal, endpoints: [] }));
      const names = [e.Name, ...e.Aliases, ...(e.ContainerID ? [e.ContainerID.slice(0, 12)] : [])].filter(Boolean);
      view.endpoints.push({ containerId: e.ContainerID, containerName: e.Name, ip: e.IP, names });
    }
    const byContainer = new Map<string, Asker & { upstreams: string[] }>();
    for (const c of running) {
      const mine = Object.keys(c.Endpoints ?? {}).map((id) => views.get(id)).filter((v): v is NetworkView => !!v);
      if (!mine.length) continue;
      const asker = { containerId: c.Id, networks: mine, links: linkAliases(c, mine), upstreams: c.HostConfig.Dns ?? [] };
      byContainer.set(c.Id, asker);
    }
    this.byContainer = byContainer;
  }
}

/**
 * `--link TARGET:ALIAS` on user-defined networks (HostConfig.Links and each endpoint's Links, as
 * docker-compose sends them): ALIAS answers with TARGET's addresses on the networks both share.
 */
function linkAliases(c: DirectoryMember, mine: NetworkView[]): Map<string, string[]> | undefined {
  const links = [...(c.HostConfig.Links ?? []), ...Object.values(c.Endpoints ?? {}).flatMap((ep) => ep.Links ?? [])];
  if (!links.length) return undefined;
  const out = new Map<string, string[]>();
  for (const link of links) {
    const parsed = parseLink(link);
    const target = parsed.target;
    const alias = parsed.alias.toLowerCase();
    if (!target || !alias) continue;
    const ips = mine.flatMap((net) => net.endpoints
      .filter((e) => e.containerName === target || (target.length >= 12 && e.containerId.startsWith(target)))
      .map((e) => e.ip));
    if (ips.length) out.set(alias, [...new Set([...(out.get(alias) ?? []), ...ips])]);
  }
  return out.size ? out : undefined;
}
