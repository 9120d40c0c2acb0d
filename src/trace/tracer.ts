/**
 * `network trace`: the model's explanation (model.ts) of a path from a container, proven by a
 * probe with nftables tracing (probe.ts). Traces run one at a time: they share one trace table
 * name per namespace, and one journal.
 */
import { join } from 'node:path';
import type { ContainerRecord } from '../engine/types.js';
import { ipJson } from '../kernel/netns.js';
import { vxlanDevice, type EndpointRecord } from '../network/overlay.js';
import type { Known } from '../network/policy/policy.js';
import { OPT_ICC, optBool } from '../network/options.js';
import { isDefaultBridge, type NetworkRecord } from '../network/types.js';
import { SerialQueue } from '../util/serial.js';
import { agreement, parseTarget, plan, type Plan, type ProbeResult, type Snapshot, type TraceContainer } from './model.js';
import { probeDns, probeWithTrace, removeLeftoverTraces } from './probe.js';

export interface TracerDeps {
  root: string;
  containers: () => Iterable<ContainerRecord>;
  get: (ref: string) => ContainerRecord;
  networks: () => Map<string, NetworkRecord>;
  policy: () => Known[];
  remotes: () => Iterable<EndpointRecord>;
}

/** `dns` is the name lookup's probe, `probe` the packet's (absent when the name did not resolve). */
export interface TraceResult { plan: Plan; dns?: ProbeResult; probe?: ProbeResult; agrees: boolean; disagreement?: string }

function containerView(c: ContainerRecord): TraceContainer {
  const eps = Object.entries(c.Endpoints ?? {}).filter(([, e]) => e.IPAddress);
  return {
    id: c.Id, name: c.Name.replace(/^\//, ''), running: c.State.Running, netnsPath: c.NetnsPath, labels: c.Config.Labels ?? {},
    endpoints: eps.map(([networkId, e]) => ({ networkId, endpointId: e.EndpointID, ip: e.IPAddress, ifname: e.ifname, aliases: e.Aliases ?? [] })),
    published: c.Published ?? [],
    links: [...(c.HostConfig.Links ?? []), ...eps.flatMap(([, e]) => e.Links ?? [])],
    extraHosts: c.HostConfig.ExtraHosts ?? [],
  };
}

export class Tracer {
  private readonly queue = new SerialQueue();

  constructor(private readonly d: TracerDeps) {}

  /** At start and --cleanup: the tables of a trace that a killed berthd left. */
  removeLeftovers(): Promise<string[]> {
    return removeLeftoverTraces(this.d.root);
  }

  private async snapshot(): Promise<Snapshot> {
    const links = await ipJson<Array<{ addr_info?: Array<{ family: string; local: string }> }>>(undefined, ['addr', 'show']).catch(() => []);
    return {
      containers: [...this.d.containers()].map(containerView),
      networks: [...this.d.networks().values()].map((n) => ({
        id: n.Id, name: n.Name, driver: n.Driver, internal: n.Internal, isDefault: isDefaultBridge(n),
        ...(n.bridge ? { bridge: n.bridge } : {}), ...(n.parent ? { parent: n.parent } : {}),
        ...(n.Driver === 'overlay' ? { vxlan: vxlanDevice(n.Id) } : {}),
        subnets: n.IPAM.Config.map((x) => x.Subnet).filter((x) => x && !x.includes(':')),
        gateways: n.IPAM.Config.map((x) => x.Gateway ?? '').filter((x) => x && !x.includes(':')),
        ...(n.Driver === 'bridge' && !optBool(n.Options?.[OPT_ICC], true) ? { iccOff: true } : {}),
      })),
      policies: this.d.policy().map((k) => ({ endpointId: k.endpointId, isolatedBy: k.isolatedBy, rules: k.policed?.rules ?? [] })),
      remotes: [...this.d.remotes()].map((r) => ({ networkId: r.Network, name: r.Name, aliases: r.Aliases, ip: r.IP, host: `${r.Node} (${r.Vtep})` })),
      hostAddresses: links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => a.local)),
    };
  }

  /** Explains the path from `from` to `target` and, unless `probe` is false, proves it. */
  trace(from: string, target: string, opts: { probe?: boolean } = {}): Promise<TraceResult> {
    parseTarget(target);
    const c = this.d.get(from);
    return this.queue.run(async () => {
      const s = await this.snapshot();
      const a = s.containers.find((x) => x.id === c.Id)!;
      let p = plan(s, a, target);
      if (opts.probe === false) return { plan: p, agrees: true };
      let dns: ProbeResult | undefined;
      if (p.dns) {
        const asked = await probeDns(a.netnsPath, join(this.d.root, 'containers', a.id), p.dns.name);
        dns = asked;
        // A name berth forwards upstream: what the upstream said decides where the packet goes.
        if (p.dns.answer === 'forwarded' && dns.addresses?.length) p = plan(s, a, target, dns.addresses);
        if (p.expect.outcome === 'not-resolved' || dns.result !== 'resolved') {
          const agree = agreement(p, dns);
          return { plan: p, dns, agrees: agree.agrees, ...(agree.why ? { disagreement: agree.why } : {}) };
        }
        const want = p.dns!;
        if ((want.answer === 'berth' || want.answer === 'hosts') && !want.addresses.some((x) => asked.addresses?.includes(x))) {
          return { plan: p, dns, agrees: false, disagreement: `the model resolved ${want.name} to ${want.addresses.join(', ')}, the DNS answered ${asked.addresses?.join(', ')}` };
        }
      }
      if (!p.probe) return { plan: p, ...(dns ? { dns } : {}), agrees: true };
      const probe = await probeWithTrace(this.d.root, a, p);
      const agree = agreement(p, probe);
      return { plan: p, ...(dns ? { dns } : {}), probe, agrees: agree.agrees, ...(agree.why ? { disagreement: agree.why } : {}) };
    });
  }
}
