import { loadsNode, type ServiceRecord, type TaskRecord } from './servicemodel.js';

/**
 * swarmkit's HostPortFilter: a task whose service publishes a port in host mode is placed only on
 * a node where no task desired running (of any service) publishes that port in host mode. So two
 * tasks never claim one host port on a node: a second replica on a single eligible node stays
 * pending with "host-mode port already in use on 1 node", as a start-first update of such a
 * service does (its new task waits for the old one's node to free the port).
 */

/** A service's host-mode published ports, as `proto/port`. */
export function hostPortsOf(s: ServiceRecord | undefined): string[] {
  return (s?.Endpoint.Ports ?? []).filter((p) => p.PublishMode === 'host' && p.PublishedPort).map((p) => `${p.Protocol}/${p.PublishedPort}`);
}

/** Each node's host-mode ports in use, by the tasks desired running there. */
export class HostPortUse {
  private readonly used = new Map<string, Map<string, number>>();

  constructor(private readonly portsOf: (serviceId: string) => string[]) {}

  /** Counts a task in (+1) or out (-1) of its node's ports. */
  count(t: TaskRecord, sign: 1 | -1): void {
    if (!loadsNode(t)) return;
    const ports = this.portsOf(t.ServiceID);
    if (!ports.length) return;
    let m = this.used.get(t.NodeID);
    if (!m) this.used.set(t.NodeID, (m = new Map()));
    for (const p of ports) {
      const n = (m.get(p) ?? 0) + sign;
      if (n > 0) m.set(p, n);
      else m.delete(p);
    }
  }

  /** Whether another task holds one of `ports` on `node` (`self`, as counted, is not another). */
  busy(node: string, ports: string[], self?: TaskRecord): boolean {
    const m = this.used.get(node);
    if (!m) return false;
    const own = self && loadsNode(self) && self.NodeID === node ? new Set(this.portsOf(self.ServiceID)) : undefined;
    return ports.some((p) => (m.get(p) ?? 0) - (own?.has(p) ? 1 : 0) > 0);
  }
}
