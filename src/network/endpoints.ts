import type { EndpointState } from '../model/network.js';
import { BadRequestError, ForbiddenError } from '../util/errors.js';
import { subnetContains } from './ipamdriver.js';
import { canonicalIPv6 } from './ipam6.js';
import type { NetworkRegistry } from './registry.js';
import { isDefaultBridge, type NetworkRecord } from './types.js';

/** The sandbox modes that have no endpoints of their own. */
export function hasNoEndpoints(mode: string): boolean {
  return mode === 'host' || mode === 'none' || mode.startsWith('container:');
}

/**
 * Whether berth makes (and pins) a namespace of the container's own: every mode but `host` and
 * `container:`. A `none` container has one (loopback only), though it joins no network.
 */
export function ownsNamespace(mode: string): boolean {
  return mode !== 'host' && !mode.startsWith('container:');
}

/** Checks a NetworkMode at create time, so a bad one fails before anything exists. */
export function validateMode(registry: NetworkRegistry, mode: string): void {
  if (['none', 'host', 'default', 'bridge'].includes(mode) || mode.startsWith('container:')) return;
  registry.get(mode);
}

/** An endpoint as the user asked for it (EndpointsConfig), checked against the network; nothing allocated yet. */
export function endpointFromConfig(n: NetworkRecord, cfg: Record<string, unknown>, macAddress?: string, swarmTask = false): EndpointState {
  // Docker's words, from swarmkit through the daemon: only attachable swarm networks take containers
  // (a service's task, made by the node's agent, takes any).
  if (n.Scope === 'swarm' && !n.Attachable && !swarmTask) throw new ForbiddenError(`Could not attach to network ${n.Name}: rpc error: code = PermissionDenied desc = network ${n.Name} not manually attachable`);
  const ipam = (cfg.IPAMConfig ?? null) as { IPv4Address?: string; IPv6Address?: string } | null;
  if (ipam?.IPv6Address) {
    if (!n.pools6?.length) throw new BadRequestError(`user specified IPv6 address ${ipam.IPv6Address} on network ${n.Name}, which has no IPv6`);
    if (!subnetContains(n.pools6[0]!.subnet, ipam.IPv6Address)) throw new BadRequestError(`no configured subnet contains IP address ${ipam.IPv6Address}`);
  }
  const aliases = Array.isArray(cfg.Aliases) ? (cfg.Aliases as string[]) : null;
  if (ipam?.IPv4Address) {
    if (isDefaultBridge(n)) throw new BadRequestError('user specified IP address is supported on user defined networks only');
    if (!n.pools?.[0] || !subnetContains(n.pools[0].subnet, ipam.IPv4Address)) {
      throw new BadRequestError(`no configured subnet contains IP address ${ipam.IPv4Address}`);
    }
  }
  // Docker checks len(Aliases): the CLI's `network connect` sends an empty list.
  if (aliases?.length && isDefaultBridge(n)) throw new BadRequestError('network-scoped alias is supported only for containers in user defined networks');
  return {
    NetworkID: n.Id,
    IPAMConfig: ipam?.IPv4Address || ipam?.IPv6Address ? { ...(ipam.IPv4Address ? { IPv4Address: ipam.IPv4Address } : {}), ...(ipam.IPv6Address ? { IPv6Address: canonicalIPv6(ipam.IPv6Address) } : {}) } : null,
    Links: Array.isArray(cfg.Links) ? (cfg.Links as string[]) : null, Aliases: aliases,
    EndpointID: '', Gateway: '', IPAddress: '', IPPrefixLen: 0, MacAddress: '', ifname: '',
    ...(macAddress || cfg.MacAddress ? { requestedMac: (macAddress || cfg.MacAddress) as string } : {}),
  };
}

/** The endpoints a new container starts with, from its NetworkMode and EndpointsConfig. */
export function initialEndpoints(registry: NetworkRegistry, mode: string, endpointsConfig: Record<string, unknown>, macAddress?: string, swarmTask = false): Record<string, EndpointState> {
  if (hasNoEndpoints(mode)) return {};
  const n = registry.get(mode === 'default' ? 'bridge' : mode);
  const cfg = (endpointsConfig[mode] ?? endpointsConfig[n.Name] ?? {}) as Record<string, unknown>;
  return { [n.Id]: endpointFromConfig(n, cfg, macAddress, swarmTask) };
}

/** Whether a network answers names through the embedded DNS: every driver's network but the default bridge. */
export function hasEmbeddedDns(registry: NetworkRegistry, n: NetworkRecord): boolean {
  return !!registry.driverOf(n) && !isDefaultBridge(n);
}

/** Whether a container with these endpoints gets the embedded resolver; `addressed` counts only connected ones. */
export function usesEmbeddedDns(registry: NetworkRegistry, endpoints: Record<string, EndpointState>, addressed = false): boolean {
  return Object.entries(endpoints).some(([id, ep]) => {
    const n = registry.networks.get(id);
    return !!n && hasEmbeddedDns(registry, n) && (!addressed || !!ep.IPAddress);
  });
}

/** The endpoint published ports lead to: the first connected, non-internal endpoint of a driver that publishes. */
export function publishTarget(registry: NetworkRegistry, endpoints: Record<string, EndpointState>): { n: NetworkRecord; ip: string; ip6?: string } | undefined {
  for (const [id, ep] of Object.entries(endpoints)) {
    const n = registry.networks.get(id);
    if (n && registry.driverOf(n)?.publishes && !n.Internal && ep.IPAddress) return { n, ip: ep.IPAddress, ...(ep.GlobalIPv6Address ? { ip6: ep.GlobalIPv6Address } : {}) };
  }
  return undefined;
}
