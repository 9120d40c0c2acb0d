import type { ContainerRecord } from '../../engine/types.js';
import { DEFAULT_BRIDGE } from '../../model/network.js';
import type { NetworkRegistry } from '../../network/registry.js';
import { isDefaultBridge, type NetworkRecord } from '../../network/types.js';

/** Docker's JSON views of networks and of a container's network settings: shapes clients parse. */

/** NetworkSettings.Networks entry name for the container's primary network. */
export function primaryNetworkName(c: ContainerRecord): string {
  const m = c.HostConfig.NetworkMode;
  return m === 'default' ? DEFAULT_BRIDGE : m;
}

export function networkNames(registry: NetworkRegistry, c: ContainerRecord): string[] {
  const mode = c.HostConfig.NetworkMode;
  if (mode === 'host' || mode === 'none') return [mode];
  if (mode.startsWith('container:')) return [];
  return Object.keys(c.Endpoints ?? {}).map((id) => registry.networks.get(id)?.Name ?? id);
}

/** NetworkSettings of container inspect (and the Networks part of ps). */
export function networkSettings(registry: NetworkRegistry, c: ContainerRecord): Record<string, unknown> {
  const networks: Record<string, object> = {};
  const mode = c.HostConfig.NetworkMode;
  const blank = { IPAMConfig: null, Links: null, Aliases: null, EndpointID: '', Gateway: '', IPAddress: '', IPPrefixLen: 0, IPv6Gateway: '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0, MacAddress: '', DriverOpts: null };
  if (mode === 'host' || mode === 'none') networks[mode] = { ...blank, NetworkID: registry.byName(mode)?.Id ?? '' };
  for (const [id, ep] of Object.entries(c.Endpoints ?? {})) {
    const n = registry.networks.get(id);
    const userDefined = !!n && !isDefaultBridge(n);
    networks[n?.Name ?? id] = {
      IPAMConfig: ep.IPAMConfig, Links: ep.Links,
      // docker-compose passes the short id among its aliases itself; Docker lists it once.
      Aliases: ep.Aliases || userDefined ? [...new Set([...(ep.Aliases ?? []), ...(userDefined && c.State.Running ? [c.Id.slice(0, 12)] : [])])] : null,
      NetworkID: id, EndpointID: ep.EndpointID, Gateway: ep.Gateway, IPAddress: ep.IPAddress, IPPrefixLen: ep.IPPrefixLen,
      IPv6Gateway: ep.IPv6Gateway ?? '', GlobalIPv6Address: ep.GlobalIPv6Address ?? '', GlobalIPv6PrefixLen: ep.GlobalIPv6PrefixLen ?? 0, MacAddress: ep.MacAddress, DriverOpts: null,
      // berth's own field (clients ignore fields they do not know): what a CNI list answered.
      ...(ep.CNI ? { CNI: ep.CNI } : {}),
    };
  }
  const def = c.Endpoints ? c.Endpoints[registry.byName(DEFAULT_BRIDGE)?.Id ?? ''] : undefined;
  return {
    Bridge: '',
    SandboxID: c.NetnsPath ? c.Id : '',
    HairpinMode: false,
    LinkLocalIPv6Address: '',
    LinkLocalIPv6PrefixLen: 0,
    Ports: portsView(c),
    SandboxKey: c.NetnsPath,
    SecondaryIPAddresses: null,
    SecondaryIPv6Addresses: null,
    // The top-level fields describe the default bridge endpoint, as in Docker.
    EndpointID: def?.EndpointID ?? '', Gateway: def?.Gateway ?? '', GlobalIPv6Address: '', GlobalIPv6PrefixLen: 0,
    IPAddress: def?.IPAddress ?? '', IPPrefixLen: def?.IPPrefixLen ?? 0, IPv6Gateway: '', MacAddress: def?.MacAddress ?? '',
    Networks: networks,
  };
}

/** NetworkSettings.Ports: every exposed port, with its host bindings while running. */
export function portsView(c: ContainerRecord): Record<string, Array<{ HostIp: string; HostPort: string }> | null> {
  const out: Record<string, Array<{ HostIp: string; HostPort: string }> | null> = {};
  if (!c.State.Running) return out;
  for (const p of Object.keys(c.Config.ExposedPorts ?? {})) out[p] = null;
  for (const m of c.Published ?? []) {
    const key = `${m.containerPort}/${m.proto}`;
    (out[key] ??= []).push({ HostIp: m.hostIp || (m.family === 6 ? '::' : '0.0.0.0'), HostPort: String(m.hostPort) });
  }
  return out;
}

/** GET /networks/{id} body. */
export function networkInspect(n: NetworkRecord, containers: ContainerRecord[], peers?: Array<{ Name: string; IP: string }>, external: Record<string, object> = {}): object {
  // Members that are no container of this engine: endpoints of CNI runtimes' containers
  // (berth-cni, under their runtime's id) and the ingress network's sandbox (`ingress-sbox`).
  const members: Record<string, object> = { ...external };
  for (const c of containers) {
    const ep = c.Endpoints?.[n.Id];
    if (ep && ep.EndpointID) {
      members[c.Id] = { Name: c.Name.slice(1), EndpointID: ep.EndpointID, MacAddress: ep.MacAddress, IPv4Address: `${ep.IPAddress}/${ep.IPPrefixLen}`, IPv6Address: ep.GlobalIPv6Address ? `${ep.GlobalIPv6Address}/${ep.GlobalIPv6PrefixLen}` : '' };
    } else if (c.State.Running && ((n.Name === 'host' || n.Name === 'none') && c.HostConfig.NetworkMode === n.Name)) {
      members[c.Id] = { Name: c.Name.slice(1), EndpointID: '', MacAddress: '', IPv4Address: '', IPv6Address: '' };
    }
  }
  return {
    Name: n.Name, Id: n.Id, Created: n.Created, Scope: n.Scope, Driver: n.Driver, EnableIPv6: n.EnableIPv6,
    IPAM: n.IPAM, Internal: n.Internal, Attachable: n.Attachable, Ingress: n.Ingress, ConfigFrom: n.ConfigFrom,
    ConfigOnly: n.ConfigOnly, Containers: members, Options: n.Options, Labels: n.Labels,
    // Swarm networks list the nodes that have endpoints on them; Docker omits an empty list.
    ...(peers?.length ? { Peers: peers } : {}),
  };
}
