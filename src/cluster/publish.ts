import { rpcError } from './errors.js';

/**
 * A service's published ports (`--publish`), in Docker's shapes (API v1.41 EndpointPortConfig),
 * and the pure rules around them: what a spec may carry, which published port a port left out
 * gets, and which other service's port a new one collides with (swarmkit's controlapi and port
 * allocator). Nothing here touches the store or the kernel.
 */

export type Protocol = 'tcp' | 'udp';
export type PublishMode = 'ingress' | 'host';

export interface PortConfig { Name?: string; Protocol: Protocol; TargetPort: number; PublishedPort: number; PublishMode: PublishMode }

/** swarmkit's dynamic range for ingress ports a spec leaves out (portallocator.go). */
export const DYNAMIC_FIRST = 30000;
export const DYNAMIC_LAST = 32767;

const invalidArg = (desc: string) => rpcError('InvalidArgument', desc);

const isPort = (p: unknown, zero: boolean): p is number => typeof p === 'number' && Number.isInteger(p) && p >= (zero ? 0 : 1) && p <= 65535;

/** The spec's ports checked and given Docker's defaults (tcp, ingress); a PublishedPort of 0 is still to be assigned. */
export function normalisePorts(raw: unknown, endpointMode: 'vip' | 'dnsrr'): PortConfig[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalidArg('EndpointSpec: Ports must be a list');
  const out: PortConfig[] = [];
  const seen = new Set<string>();
  for (const r of raw as Array<Record<string, unknown>>) {
    const proto = (r.Protocol ?? 'tcp') as string;
    if (proto === 'sctp') throw invalidArg('berth publishes tcp and udp ports only: sctp is not supported');
    if (proto !== 'tcp' && proto !== 'udp') throw invalidArg(`EndpointSpec: invalid protocol ${proto}`);
    const mode = (r.PublishMode ?? 'ingress') as string;
    if (mode !== 'ingress' && mode !== 'host') throw invalidArg(`EndpointSpec: invalid publish mode ${mode}`);
    if (!isPort(r.TargetPort, false)) throw invalidArg(`EndpointSpec: invalid target port ${String(r.TargetPort)}`);
    const published = r.PublishedPort ?? 0;
    if (!isPort(published, true)) throw invalidArg(`EndpointSpec: invalid published port ${String(published)}`);
    // swarmkit validateEndpointSpec: a dnsrr service has no VIP, so nothing for the mesh to balance.
    if (mode === 'ingress' && endpointMode === 'dnsrr') throw invalidArg('EndpointSpec: port published with ingress mode can\'t be used with dnsrr mode');
    if (published) {
      const key = `${published}/${proto}/${mode}`;
      if (seen.has(key)) throw invalidArg('EndpointSpec: duplicate published ports provided');
      seen.add(key);
    }
    out.push({ ...(typeof r.Name === 'string' && r.Name ? { Name: r.Name } : {}), Protocol: proto, TargetPort: r.TargetPort, PublishedPort: published, PublishMode: mode });
  }
  return out;
}

/** The port as Docker's JSON has it: a published port of 0 (none given, or none assigned) is left out. */
export const withoutZeroPort = (p: PortConfig): PortConfig => (p.PublishedPort ? p : (({ PublishedPort: _p, ...rest }) => rest as PortConfig)(p));

/** `PROTO/PORT`: the key of a published port in the store's claims and in conflict checks. */
export const portKey = (p: { Protocol: Protocol; PublishedPort: number }): string => `${p.Protocol}/${p.PublishedPort}`;

/** A service as the conflict check sees it. */
export interface Publisher { ID: string; Name: string; Ports: PortConfig[] }

/**
 * swarmkit's checkPortConflicts: an ingress port is the cluster's one, so it collides with any
 * other service's port of that number and protocol; host ports of several services may share a
 * number (each node binds its own), but not with an ingress port. Throws Docker's words.
 */
export function checkConflicts(ports: PortConfig[], others: Publisher[]): void {
  for (const pc of ports) {
    if (!pc.PublishedPort) continue;
    for (const s of others) {
      for (const o of s.Ports) {
        if (o.Protocol !== pc.Protocol || o.PublishedPort !== pc.PublishedPort) continue;
        if (pc.PublishMode === 'host' && o.PublishMode === 'ingress') throw invalidArg(`port '${pc.PublishedPort}' is already in use by service '${s.Name}' (${s.ID}) as a host-published port`);
        if (pc.PublishMode === 'ingress') throw invalidArg(`port '${pc.PublishedPort}' is already in use by service '${s.Name}' (${s.ID}) as an ingress port`);
      }
    }
  }
}

/**
 * Ingress ports with no published port get the lowest free one of the dynamic range, as swarmkit's
 * allocator does; a port the service published before keeps its number (`previous`, matched by
 * target, protocol and mode). A host-mode port is left as it is (swarmkit does not allocate them):
 * with no number, each task's container binds any free port of its node. `taken`: PROTO/PORT keys
 * in use by other services.
 */
export function assignPorts(ports: PortConfig[], taken: Set<string>, previous: PortConfig[] = []): PortConfig[] {
  const used = new Set([...taken, ...ports.filter((p) => p.PublishedPort).map(portKey)]);
  const kept = [...previous];
  return ports.map((p) => {
    if (p.PublishedPort) return p;
    if (p.PublishMode === 'host') return withoutZeroPort(p);
    const i = kept.findIndex((q) => q.TargetPort === p.TargetPort && q.Protocol === p.Protocol && q.PublishMode === p.PublishMode && !used.has(portKey(q)));
    if (i >= 0) {
      const q = kept.splice(i, 1)[0]!;
      used.add(portKey(q));
      return { ...p, PublishedPort: q.PublishedPort };
    }
    for (let n = DYNAMIC_FIRST; n <= DYNAMIC_LAST; n++) {
      const k = portKey({ Protocol: p.Protocol, PublishedPort: n });
      if (used.has(k)) continue;
      used.add(k);
      return { ...p, PublishedPort: n };
    }
    throw rpcError('Unknown', 'port allocation failed: the dynamic port range 30000-32767 is exhausted');
  });
}

/** Whether a service's ports need the routing mesh (and its tasks an endpoint on `ingress`). */
export const needsIngress = (ports: PortConfig[]): boolean => ports.some((p) => p.PublishMode === 'ingress');
