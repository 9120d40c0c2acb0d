import type { ServiceStat } from '../cluster/servicenet.js';
import type { DnsStats } from '../dns/server.js';
import type { LifecycleStats } from '../engine/lifestats.js';
import { linkCounters, nftCounters, type LinkCounters, type NftCounters } from '../kernel/counters.js';
import type { EndpointState, PortMapping } from '../model/network.js';
import type { NetworkRecord } from '../network/types.js';
import type { Histogram } from '../util/histogram.js';
import { histogramSamples, render, type Family, type Labels, type Sample } from './exposition.js';

/** What the daemon hands the collector: views of its parts, read at each scrape. */
export interface MetricSources {
  containers(): Iterable<{ Id: string; Name: string; State: { Status: string }; Endpoints?: Record<string, EndpointState>; Published?: PortMapping[]; Config?: { Labels?: Record<string, string> } }>;
  networks(): NetworkRecord[];
  /** The endpoint's link in berthd's namespace (the network's driver knows it), if it has one. */
  hostLink(n: NetworkRecord, endpointId: string): string | undefined;
  life: LifecycleStats;
  dns?(): DnsStats | undefined;
  /** Every node's role and state, where this node is a manager of a swarm; undefined elsewhere. */
  clusterNodes?(): Promise<Array<{ role: string; state: string }> | undefined>;
  /** The swarm's services as this node's view of the store has them (any node of a swarm). */
  services?(): ServiceStat[] | undefined;
  /** Connections this node's balancers sent to each service backend (read in the kernel), by the way they came. */
  serviceHits?(): Promise<ServiceHit[] | undefined>;
  /** The kernel reads, replaceable in unit tests. */
  links?(): Promise<Map<string, LinkCounters>>;
  nft?(): Promise<NftCounters>;
}

/** The label Docker puts on a task's container: its service's name. */
const SERVICE_NAME_LABEL = 'com.docker.swarm.service.name';

/** A published port as its map element names it. */
const publishedKey = (family: 4 | 6, hostIp: unknown, proto: unknown, port: unknown): string => `${family}|${String(hostIp)}|${String(proto)}|${String(port)}`;

type ServiceHit = { service: string; backend: string; via: string; connections: number };
interface PortOwner { container: string; service?: string }
type ElementCounter = NftCounters['elements'][number];

/** Each published port's map element, with the port it names and who published it (if anyone does now). */
function forEachPublished(nft: NftCounters, owners: Map<string, PortOwner>, fn: (e: ElementCounter, owner: PortOwner | undefined, port: { family: 4 | 6; hostIp: unknown; proto: unknown; port: unknown }) => void): void {
  for (const e of nft.elements) {
    const m = PORT_MAPS[e.map];
    if (!m) continue;
    const [hostIp, proto, port] = m.withIp ? e.key : ['', ...e.key];
    fn(e, owners.get(publishedKey(m.family, hostIp, proto, port)), { family: m.family, hostIp, proto, port });
  }
}

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

/** Which map holds a published port: see network/firewall.ts (`mapFor`). */
const PORT_MAPS: Record<string, { family: 4 | 6; withIp: boolean }> = {
  pub_any: { family: 4, withIp: false }, pub_ip: { family: 4, withIp: true }, pub_lo: { family: 4, withIp: true },
  pub6_any: { family: 6, withIp: false }, pub6_ip: { family: 6, withIp: true },
};

function counter(name: string, help: string, samples: Sample[]): Family {
  return { name, help, type: 'counter', samples };
}

function gauge(name: string, help: string, samples: Sample[]): Family {
  return { name, help, type: 'gauge', samples };
}

function histogram(name: string, help: string, labels: Labels, h: Histogram): Family {
  return { name, help, type: 'histogram', samples: histogramSamples(labels, h.bounds, h.buckets, h.sum) };
}

/** Counts by label set, in first-seen order. */
function tally(): { add(labels: Labels, n: number): void; samples(): Sample[] } {
  const m = new Map<string, Sample>();
  return {
    add(labels, n) {
      const k = JSON.stringify(labels);
      const s = m.get(k);
      if (s) s.value += n;
      else m.set(k, { labels, value: n });
    },
    samples: () => [...m.values()],
  };
}

/**
 * berthd's /metrics: one scrape reads the kernel in a few batches whatever the number of
 * containers (all links from /proc, berth's nft tables in one `nft` per table), and the rest from
 * memory; in a swarm, also the service balancers' counters: one `nft` in each sandbox that
 * balances a VIP (eight at a time) and one of the host's mesh table.
 */
export class MetricsCollector {
  private inFlight?: Promise<string>;

  constructor(private readonly s: MetricSources) {}

  /** Scrapes that arrive while one is being read share its answer: the kernel is read once for them all. */
  render(): Promise<string> {
    this.inFlight ??= this.collect().then(render).finally(() => { this.inFlight = undefined; });
    return this.inFlight;
  }

  async collect(): Promise<Family[]> {
    const t0 = process.hrtime.bigint();
    const [links, nft, nodes, hits] = await Promise.all([
      (this.s.links ?? linkCounters)().catch(() => new Map<string, LinkCounters>()),
      (this.s.nft ?? (() => nftCounters('berth')))().catch((): NftCounters => ({ rules: [], elements: [] })),
      this.s.clusterNodes?.().catch(() => undefined),
      this.s.serviceHits?.().catch(() => undefined),
    ]);
    const owners = this.publishedOwners();
    const families = [
      ...this.containerFamilies(),
      ...this.networkFamilies(links, nft),
      ...this.portFamilies(nft, owners),
      ...this.dnsFamilies(),
      ...(nodes ? [clusterFamily(nodes)] : []),
      ...this.serviceFamilies(hits ?? [], () => this.hostModeHits(nft, owners)),
    ];
    families.push(gauge('berth_metrics_collect_seconds', 'Time this scrape took to read the kernel and the engine.', [{ value: Number(process.hrtime.bigint() - t0) / 1e9 }]));
    return families;
  }

  /**
   * Connections to the host-mode ports of this node's tasks: a task's container publishes them as
   * `-p` does, so they are its published ports' counters, by its service's name and its address.
   */
  private hostModeHits(nft: NftCounters, owners: Map<string, PortOwner>): ServiceHit[] {
    const out: ServiceHit[] = [];
    forEachPublished(nft, owners, (e, owner) => {
      if (owner?.service) out.push({ service: owner.service, backend: String(e.value[0] ?? ''), via: 'host', connections: e.packets });
    });
    return out;
  }

  /** Who published each port this node publishes (a container, and its service when it is a task's), by its map element's key. */
  private publishedOwners(): Map<string, PortOwner> {
    const owners = new Map<string, PortOwner>();
    for (const c of this.s.containers()) {
      const owner = { container: c.Name.replace(/^\//, ''), service: c.Config?.Labels?.[SERVICE_NAME_LABEL] };
      for (const p of c.Published ?? []) owners.set(publishedKey(p.family === 6 ? 6 : 4, p.hostIp, p.proto, p.hostPort), owner);
    }
    return owners;
  }

  private serviceFamilies(hits: ServiceHit[], hostHits: () => ServiceHit[]): Family[] {
    const stats = this.s.services?.();
    if (!stats) return [];
    const byBackend = tally();
    for (const h of [...hits, ...hostHits()]) byBackend.add({ service: h.service, backend: h.backend, via: h.via }, h.connections);
    const names = new Map(this.s.networks().map((n) => [n.Id, n.Name]));
    return [
      gauge('berth_service_replicas_desired', 'Replicas a replicated service asks for.', stats.filter((s) => s.replicas !== undefined).map((s) => ({ labels: { service: s.service }, value: s.replicas! }))),
      gauge('berth_service_tasks_running', 'Tasks of a service running and desired running, in this node\'s view of the swarm.', stats.map((s) => ({ labels: { service: s.service }, value: s.running }))),
      gauge('berth_service_vip_backends', 'Backends of a service\'s VIP on a network: what this node\'s balancers send to.',
        stats.flatMap((s) => s.backends.map((b) => ({ labels: { service: s.service, network: names.get(b.network) ?? b.network.slice(0, 12) }, value: b.count })))),
      counter('berth_service_backend_connections_total', 'Connections this node\'s balancers sent to a backend (task address) of a service, by the way they came: a local container to the VIP (vip), the routing mesh (ingress) or a host-mode published port (host).', byBackend.samples()),
    ];
  }

  private containerFamilies(): Family[] {
    const states = tally();
    for (const st of ['created', 'running', 'paused', 'restarting', 'exited']) states.add({ state: st }, 0);
    for (const c of this.s.containers()) states.add({ state: c.State.Status }, 1);
    const life = this.s.life;
    return [
      gauge('berth_containers', 'Containers by state.', states.samples()),
      counter('berth_container_starts_total', 'Container starts (by the API or a restart policy), by result.', [
        { labels: { result: 'ok' }, value: life.starts.ok }, { labels: { result: 'failed' }, value: life.starts.failed },
      ]),
      histogram('berth_container_start_duration_seconds', 'Time from a start request to the container running (or the start failing).', {}, life.startSeconds),
      counter('berth_container_stops_total', 'Containers stopped by stop or restart.', [{ value: life.stops }]),
      histogram('berth_container_stop_duration_seconds', 'Time from the stop signal to the recorded exit.', {}, life.stopSeconds),
    ];
  }

  private networkFamilies(links: Map<string, LinkCounters>, nft: NftCounters): Family[] {
    const networks = this.s.networks();
    const byId = new Map(networks.map((n) => [n.Id, n]));
    const eps = { rxB: tally(), txB: tally(), rxP: tally(), txP: tally(), rxD: tally(), txD: tally() };
    const endpoints = tally();
    for (const n of networks) endpoints.add({ network: n.Name, driver: n.Driver }, 0);
    for (const c of this.s.containers()) {
      if (c.State.Status !== 'running' && c.State.Status !== 'paused') continue;
      for (const [netId, ep] of Object.entries(c.Endpoints ?? {})) {
        const n = byId.get(netId);
        if (!n || !ep.EndpointID) continue;
        endpoints.add({ network: n.Name, driver: n.Driver }, 1);
        const link = this.s.hostLink(n, ep.EndpointID);
        const k = link ? links.get(link) : undefined;
        if (!k) continue;
        const labels = { network: n.Name, container: c.Name.replace(/^\//, '') };
        // The host end's receive is what the container sent, and the other way round.
        eps.rxB.add(labels, k.txBytes); eps.txB.add(labels, k.rxBytes);
        eps.rxP.add(labels, k.txPackets); eps.txP.add(labels, k.rxPackets);
        eps.rxD.add(labels, k.txDrops); eps.txD.add(labels, k.rxDrops);
      }
    }
    const gw = { rxB: tally(), txB: tally(), rxP: tally(), txP: tally() };
    for (const n of networks) {
      const k = n.bridge ? links.get(n.bridge) : undefined;
      if (!k) continue;
      const labels = { network: n.Name };
      gw.rxB.add(labels, k.rxBytes); gw.txB.add(labels, k.txBytes);
      gw.rxP.add(labels, k.rxPackets); gw.txP.add(labels, k.txPackets);
    }
    const netDrops = tally();
    const fwDrops = tally();
    for (const r of nft.rules) {
      const m = /^n([0-9a-f]{12})_(in|out)$/.exec(r.chain);
      if (m) {
        const n = networks.find((x) => x.Id.startsWith(m[1]!));
        if (n) netDrops.add({ network: n.Name, reason: r.comment }, r.packets);
      } else {
        fwDrops.add({ reason: r.comment }, r.packets);
      }
    }
    return [
      gauge('berth_network_endpoints', 'Endpoints of running containers, by network.', endpoints.samples()),
      counter('berth_endpoint_receive_bytes_total', 'Bytes a container received on a network (its veth, read in the kernel).', eps.rxB.samples()),
      counter('berth_endpoint_transmit_bytes_total', 'Bytes a container sent on a network.', eps.txB.samples()),
      counter('berth_endpoint_receive_packets_total', 'Packets a container received on a network.', eps.rxP.samples()),
      counter('berth_endpoint_transmit_packets_total', 'Packets a container sent on a network.', eps.txP.samples()),
      counter('berth_endpoint_receive_drops_total', 'Packets to a container dropped by its veth.', eps.rxD.samples()),
      counter('berth_endpoint_transmit_drops_total', 'Packets from a container dropped by its veth.', eps.txD.samples()),
      counter('berth_network_gateway_receive_bytes_total', 'Bytes the network sent to the host through its bridge (outbound NAT, the host, other networks).', gw.rxB.samples()),
      counter('berth_network_gateway_transmit_bytes_total', 'Bytes the host sent into the network through its bridge.', gw.txB.samples()),
      counter('berth_network_gateway_receive_packets_total', 'Packets the network sent to the host through its bridge.', gw.rxP.samples()),
      counter('berth_network_gateway_transmit_packets_total', 'Packets the host sent into the network through its bridge.', gw.txP.samples()),
      counter('berth_network_dropped_packets_total', 'Packets berth\'s firewall dropped leaving a network: isolation from other networks, or an internal network.', netDrops.samples()),
      counter('berth_firewall_dropped_packets_total', 'Packets berth\'s firewall dropped: unsolicited inbound to containers, loopback from containers, spoofed sources, VLAN tags.', fwDrops.samples()),
    ];
  }

  private portFamilies(nft: NftCounters, owners: Map<string, PortOwner>): Family[] {
    const conns = tally();
    forEachPublished(nft, owners, (e, owner, { family, hostIp, proto, port }) => {
      conns.add({
        container: owner?.container ?? '', proto: String(proto), host_ip: String(hostIp || (family === 6 ? '::' : '0.0.0.0')), host_port: String(port), container_port: String(e.value[1] ?? ''),
      }, e.packets);
    });
    return [counter('berth_published_port_connections_total', 'Connections made to a published port (counted by its nft map element, first packet only).', conns.samples())];
  }

  private dnsFamilies(): Family[] {
    let d: DnsStats | undefined;
    try {
      d = this.s.dns?.();
    } catch {
      d = undefined;
    }
    if (!d) return [];
    const names = new Map([...this.s.containers()].map((c) => [c.Id, c.Name.replace(/^\//, '')]));
    const rcodes: Sample[] = [];
    d.rcodes.forEach((n, i) => { if (n || i === 0 || i === 2 || i === 3) rcodes.push({ labels: { rcode: RCODES[i] ?? String(i) }, value: n }); });
    const lat = d.latency;
    const cacheHits = lat.cache.buckets.reduce((a, b) => a + b, 0);
    return [
      counter('berth_dns_queries_total', 'Queries to the embedded DNS server (127.0.0.11), by transport.', [
        { labels: { transport: 'udp' }, value: d.queries.udp }, { labels: { transport: 'tcp' }, value: d.queries.tcp },
      ]),
      counter('berth_dns_responses_total', 'Answers the embedded DNS server sent, by response code.', rcodes),
      counter('berth_dns_cache_hits_total', 'UDP queries answered from the per-container cache without the event loop.', [{ value: cacheHits }]),
      counter('berth_dns_forwarded_total', 'Queries for names not of containers sent to the upstream servers, by outcome.', [
        { labels: { result: 'answered' }, value: d.forwarded.answered }, { labels: { result: 'failed' }, value: d.forwarded.failed }, { labels: { result: 'refused' }, value: d.forwarded.refused },
      ]),
      counter('berth_dns_dropped_total', 'UDP queries dropped because too many waited for the event loop.', [{ value: d.dropped }]),
      counter('berth_container_dns_queries_total', 'Queries a running container made to the embedded DNS server since its resolver opened (its start or connect).',
        d.byContainer.map((q) => ({ labels: { container: names.get(q.containerId) ?? q.containerId.slice(0, 12) }, value: q.queries }))),
      {
        name: 'berth_dns_request_duration_seconds', help: 'Time from a query\'s receipt to its answer\'s send: from the cache (UDP), or by the resolver (lookup or forwarding, UDP and TCP).', type: 'histogram',
        samples: [
          ...histogramSamples({ path: 'cache' }, lat.bounds, lat.cache.buckets, lat.cache.sumSeconds),
          ...histogramSamples({ path: 'resolver' }, lat.bounds, lat.resolver.buckets, lat.resolver.sumSeconds),
        ],
      },
    ];
  }
}

function clusterFamily(nodes: Array<{ role: string; state: string }>): Family {
  const t = tally();
  for (const n of nodes) t.add({ role: n.role, state: n.state }, 1);
  return gauge('berth_cluster_nodes', 'Nodes of the swarm by role and state, as this manager sees them.', t.samples());
}
