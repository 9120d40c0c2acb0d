import type { PortBindings, PortMapping } from '../model/network.js';
import type { Firewall } from './firewallapi.js';
import { portRequests, PortReservations, type PortRequest, type PublishTarget } from './ports.js';

/**
 * Published ports, after libnetwork's portmapper: each is a reserved host port (a socket berthd
 * holds, so no other process takes it) and one element in the firewall's maps. Nothing proxies.
 */
export class PortMapper {
  private readonly reservations = new PortReservations();

  constructor(private readonly firewall: Firewall) {}

  mappings(): PortMapping[] {
    return this.reservations.mappings();
  }

  /** Reserves the host ports and adds one map element per port; all or nothing. */
  async publish(owner: string, requests: PortRequest[], target: PublishTarget): Promise<PortMapping[]> {
    if (!requests.length) return [];
    const mappings = await this.reservations.reserve(owner, requests, target);
    try {
      await this.firewall.addPorts(mappings);
    } catch (e) {
      this.reservations.release(owner);
      throw e;
    }
    return mappings;
  }

  async unpublish(owner: string): Promise<PortMapping[]> {
    const mappings = this.reservations.release(owner);
    await this.firewall.removePorts(mappings);
    return mappings;
  }

  /** After a restart: hold again the ports of a container that kept running (the rules come with the next sync). */
  async adopt(owner: string, published: PortMapping[]): Promise<void> {
    if (!published.length) return;
    const ip = published.find((p) => p.family !== 6)?.containerIp ?? '';
    const ip6 = published.find((p) => p.family === 6)?.containerIp;
    await this.reservations.reserve(owner, requestsOf(published), { ip, ...(ip6 ? { ip6 } : {}) });
  }
}

/** The requests that give back exactly these mappings (same host ports, each family on its own), to hold or move them. */
export function requestsOf(published: PortMapping[]): PortRequest[] {
  return published.map((p) => ({ proto: p.proto, hostIp: p.hostIp, hostPorts: [p.hostPort, p.hostPort], containerPort: p.containerPort, family: p.family ?? 4 }));
}

/** The ports a container asks for: its bindings, plus every exposed port with -P. */
export function requestedPorts(ports: { bindings: PortBindings; publishAll: boolean; exposed: string[] }, defaultHostIp: string): PortRequest[] {
  const bindings: PortBindings = { ...ports.bindings };
  if (ports.publishAll) {
    for (const p of ports.exposed) if (!bindings[p]?.length) bindings[p] = [{ HostIp: '', HostPort: '' }];
  }
  return portRequests(bindings, defaultHostIp && defaultHostIp !== '0.0.0.0' ? defaultHostIp : '');
}
