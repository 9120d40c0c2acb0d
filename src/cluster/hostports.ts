import type { PortConfig } from './publish.js';
import { hostModePorts, loadsNode, type ServiceRecord, type TaskRecord } from './servicemodel.js';

/**
 * swarmkit's HostPortFilter: a task that publishes a fixed port in host mode is placed only on a
 * node where no task desired running (of any service) publishes that port in host mode. So two
 * tasks never claim one host port on a node: a second replica on a single eligible node stays
 * pending with "host-mode port already in use on 1 node", as a start-first update of such a
 * service does (its new task waits for the old one's node to free the port). A host-mode port
 * with no published number is any free port of the task's node, and never in the way.
 */

/** Fixed host-mode ports as `proto/port`. */
const fixed = (ports: PortConfig[]): string[] =>
  ports.filter((p) => p.PublishMode === 'host' && p.PublishedPort).map((p) => `${p.Protocol}/${p.PublishedPort}`);

/** A service's fixed host-mode ports, as its new tasks will publish them. */
export function hostPortsOf(s: ServiceRecord | undefined): string[] {
  return fixed(hostModePorts(s));
}

/**
 * A task's fixed host-mode ports: those of its service when it was made (swarmkit reads the
 * task's endpoint); a task of an older berth, which has none of its own, its service's now.
 */
export function taskHostPorts(t: TaskRecord, service: (id: string) => ServiceRecord | undefined): string[] {
  return t.Endpoint?.Ports ? fixed(t.Endpoint.Ports) : hostPortsOf(service(t.ServiceID));
}

/** Each node's host-mode ports in use, by the tasks desired running there. */
export class HostPortUse {
  private readonly used = new Map<string, Map<string, number>>();

  constructor(private readonly portsOf: (t: TaskRecord) => string[]) {}

  /** Counts a task in (+1) or out (-1) of its node's ports. */
  count(t: TaskRecord, sign: 1 | -1): void {
    if (!loadsNode(t)) return;
    const ports = this.portsOf(t);
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
    const own = self && loadsNode(self) && self.NodeID === node ? new Set(this.portsOf(self)) : undefined;
    return ports.some((p) => (m.get(p) ?? 0) - (own?.has(p) ? 1 : 0) > 0);
  }
}
