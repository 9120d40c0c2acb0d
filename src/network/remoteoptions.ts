import type { EndpointJoin } from './driver.js';

/**
 * The options libnetwork hands a remote driver with an endpoint (daemon buildCreateEndpointOptions,
 * the sandbox's labels): the container's ports in Docker's wire form. Pure, so unit-tested.
 */

/** Whether an EndpointOperInfo answer holds ports (Docker asks once more when it does not). */
export function hasPorts(v: Record<string, unknown>): boolean {
  const some = (k: string) => Array.isArray(v[k]) && (v[k] as unknown[]).length > 0;
  return some('com.docker.network.endpoint.exposedports') || some('com.docker.network.portmap');
}

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, sctp: 132 };

/**
 * The container's ports as libnetwork hands them to drivers (daemon buildCreateEndpointOptions):
 * each exposed port, and a binding per published host port (one without a host port when
 * --publish-all leaves it unbound). A plugin that maps ports does it from these.
 */
export function portOptions(ports: EndpointJoin['ports']): { exposed: unknown[]; portmap: unknown[] } {
  const exposed: unknown[] = [];
  const portmap: unknown[] = [];
  if (!ports) return { exposed, portmap };
  // Docker's order (go-connections nat.SortPortMap): a higher host port first, then the lower port, tcp before others.
  const hostPort = (k: string) => Math.max(0, ...(ports.bindings?.[k] ?? []).map((b) => Number((b.HostPort ?? '').split('-')[0]) || 0));
  const num = (k: string) => Number(k.split('/')[0]);
  const keys = [...new Set([...ports.exposed, ...Object.keys(ports.bindings ?? {})])]
    .sort((x, y) => hostPort(y) - hostPort(x) || num(x) - num(y) || Number(!x.endsWith('/tcp') && x.includes('/')) - Number(!y.endsWith('/tcp') && y.includes('/')));
  for (const key of keys) {
    const [port, proto = 'tcp'] = key.split('/');
    const base = { Proto: PROTOCOLS[proto] ?? 6, Port: Number(port) };
    exposed.push(base);
    const list = ports.bindings?.[key] ?? [];
    for (const b of list) {
      const [start, end] = (b.HostPort ?? '').split('-').map((x) => (x ? Number(x) : 0));
      // Go's net.IP: an absent address marshals as "".
      portmap.push({ ...base, IP: '', HostIP: b.HostIp ?? '', HostPort: start ?? 0, HostPortEnd: end ?? start ?? 0 });
    }
    if (ports.publishAll && list.length === 0) portmap.push({ ...base, IP: '', HostIP: '', HostPort: 0, HostPortEnd: 0 });
  }
  return { exposed, portmap };
}

/** CreateEndpoint's options, as libnetwork's endpoint carries them. */
export function endpointOptions(j: EndpointJoin): Record<string, unknown> {
  const p = portOptions(j.ports);
  return {
    'com.docker.network.endpoint.exposedports': p.exposed, 'com.docker.network.portmap': p.portmap,
    ...(j.requestedMac ? { 'com.docker.network.endpoint.macaddress': j.mac } : {}),
  };
}

/** Join's and ProgramExternalConnectivity's options: the sandbox's labels, the same ports. */
export function sandboxOptions(j: EndpointJoin): Record<string, unknown> {
  const p = portOptions(j.ports);
  return { 'com.docker.network.endpoint.exposedports': p.exposed, 'com.docker.network.portmap': p.portmap };
}
