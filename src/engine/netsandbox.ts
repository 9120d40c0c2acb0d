import { parseLink, type SandboxRef, type SandboxSpec } from '../model/network.js';
import type { ContainerRecord } from './types.js';

/** What the network layer is told of a container: a narrow copy of its record, never the record. */
export function sandboxSpec(c: ContainerRecord, etcDir: string, find: (ref: string) => ContainerRecord | undefined): SandboxSpec {
  return {
    id: c.Id, name: c.Name.slice(1), hostname: c.Config.Hostname, domainname: c.Config.Domainname,
    mode: c.HostConfig.NetworkMode, endpoints: c.Endpoints ?? {},
    ports: { bindings: c.HostConfig.PortBindings ?? {}, publishAll: !!c.HostConfig.PublishAllPorts, exposed: Object.keys(c.Config.ExposedPorts ?? {}) },
    dns: { servers: c.HostConfig.Dns ?? [], search: c.HostConfig.DnsSearch ?? [], options: c.HostConfig.DnsOptions ?? [] },
    extraHosts: c.HostConfig.ExtraHosts ?? [], linkHosts: linkHosts(c, find), etcDir, labels: c.Config.Labels ?? {},
  };
}

/** The sandbox a container's record says it holds, to adopt or to tear down. */
export function sandboxRef(c: ContainerRecord): SandboxRef {
  return { id: c.Id, mode: c.HostConfig.NetworkMode, netnsPath: c.NetnsPath, endpoints: c.Endpoints ?? {}, published: c.Published ?? [], name: c.Name.slice(1), labels: c.Config.Labels ?? {} };
}

/** Legacy --link on the default bridge: NAMES:IP lines for /etc/hosts, one per running linked container. */
function linkHosts(c: ContainerRecord, find: (ref: string) => ContainerRecord | undefined): string[] {
  const out: string[] = [];
  for (const link of c.HostConfig.Links ?? []) {
    const { target, alias } = parseLink(link);
    const other = find(target);
    if (!other?.State.Running) continue;
    const ip = Object.values(other.Endpoints ?? {}).find((e) => e.IPAddress)?.IPAddress;
    if (!ip) continue;
    const names = [link.includes(':') ? alias : '', other.Id.slice(0, 12), other.Name.slice(1)].filter((x, i, a) => x && a.indexOf(x) === i);
    out.push(`${names.join(' ')}:${ip}`);
  }
  return out;
}
