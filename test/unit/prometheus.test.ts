import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseMetricsAddr } from '../../src/api/metricsserver.js';
import { LifecycleStats } from '../../src/engine/lifestats.js';
import { parseNetDev, parseNftCounters } from '../../src/kernel/counters.js';
import { MetricsCollector } from '../../src/metrics/collector.js';
import { formatValue, histogramSamples, render } from '../../src/metrics/exposition.js';
import type { NetworkRecord } from '../../src/network/types.js';
import { Histogram } from '../../src/util/histogram.js';

describe('Prometheus text exposition', () => {
  it('writes HELP and TYPE before the samples, escapes label values and help text', () => {
    const text = render([
      { name: 'berth_x_total', help: 'A "quoted" help\nwith a \\ and a line', type: 'counter', samples: [
        { labels: { network: 'we"b', container: 'a\\b\nc' }, value: 3 },
        { value: 0 },
      ] },
      { name: 'berth_g', help: 'g', type: 'gauge', samples: [{ value: Infinity }, { labels: { k: 'v' }, value: NaN }, { value: -Infinity }, { value: 0.25 }] },
    ]);
    assert.equal(text, [
      '# HELP berth_x_total A "quoted" help\\nwith a \\\\ and a line',
      '# TYPE berth_x_total counter',
      'berth_x_total{network="we\\"b",container="a\\\\b\\nc"} 3',
      'berth_x_total 0',
      '# HELP berth_g g',
      '# TYPE berth_g gauge',
      'berth_g +Inf',
      'berth_g{k="v"} NaN',
      'berth_g -Inf',
      'berth_g 0.25',
      '',
    ].join('\n'));
  });

  it('refuses names Prometheus cannot parse and a family written twice', () => {
    assert.throws(() => render([{ name: 'berth-x', help: '', type: 'gauge', samples: [] }]), /bad metric name/);
    assert.throws(() => render([{ name: 'berth_x', help: '', type: 'gauge', samples: [{ labels: { 'a-b': 'x' }, value: 1 }] }]), /bad label name/);
    assert.throws(() => render([{ name: 'berth_x', help: '', type: 'gauge', samples: [{ labels: { __name__: 'x' }, value: 1 }] }]), /bad label name/);
    assert.throws(() => render([{ name: 'berth_x', help: '', type: 'gauge', samples: [] }, { name: 'berth_x', help: '', type: 'gauge', samples: [] }]), /twice/);
  });

  it('turns per-bucket counts into cumulative buckets with le, +Inf, _sum and _count', () => {
    const h = new Histogram([0.1, 1]);
    for (const v of [0.05, 0.1, 0.5, 3, 7]) h.observe(v);
    assert.deepEqual(h.buckets, [2, 1, 2]);
    const text = render([{ name: 'berth_h_seconds', help: 'h', type: 'histogram', samples: histogramSamples({ path: 'cache' }, h.bounds, h.buckets, h.sum) }]);
    assert.equal(text.split('\n').slice(2).join('\n'), [
      'berth_h_seconds_bucket{path="cache",le="0.1"} 2',
      'berth_h_seconds_bucket{path="cache",le="1"} 3',
      'berth_h_seconds_bucket{path="cache",le="+Inf"} 5',
      'berth_h_seconds_sum{path="cache"} 10.65',
      'berth_h_seconds_count{path="cache"} 5',
      '',
    ].join('\n'));
    assert.equal(formatValue(1e-5), '0.00001');
  });

  it('parses --metrics-addr as Docker takes it', () => {
    assert.deepEqual(parseMetricsAddr('127.0.0.1:9323'), { host: '127.0.0.1', port: 9323 });
    assert.deepEqual(parseMetricsAddr('[::1]:9323'), { host: '::1', port: 9323 });
    assert.throws(() => parseMetricsAddr('9323'), /expected HOST:PORT/);
    assert.throws(() => parseMetricsAddr('127.0.0.1:70000'), /expected HOST:PORT/);
  });
});

describe('kernel counter readers', () => {
  it('reads /proc/net/dev: receive and transmit bytes, packets, drops per link', () => {
    const text = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
vbabcdef12345: 1048576    700    0    3    0     0          0         0  2000000    1400    0    5    0     0       0          0
`;
    const m = parseNetDev(text);
    assert.deepEqual(m.get('vbabcdef12345'), { rxBytes: 1048576, rxPackets: 700, rxDrops: 3, txBytes: 2000000, txPackets: 1400, txDrops: 5 });
    assert.equal(m.size, 2);
  });

  it('reads nft -j listings: commented counted rules and map elements with counters', () => {
    const json = JSON.stringify({ nftables: [
      { metainfo: { version: '1.0.6' } },
      { map: { family: 'ip', name: 'pub_any', table: 'berth', type: ['inet_proto', 'inet_service'], map: 'ipv4_addr . inet_service', elem: [
        [{ elem: { val: { concat: ['tcp', 8080] }, counter: { packets: 3, bytes: 180 } } }, { concat: ['172.18.0.2', 80] }],
      ] } },
      { map: { family: 'ip', name: 'pub_ip', table: 'berth', elem: [[{ concat: ['10.0.0.1', 'tcp', 81] }, { concat: ['172.18.0.3', 80] }]] } },
      { rule: { family: 'ip', table: 'berth', chain: 'forward', expr: [{ counter: { packets: 7, bytes: 420 } }, { drop: null }], comment: 'unsolicited' } },
      { rule: { family: 'ip', table: 'berth', chain: 'forward', expr: [{ counter: { packets: 9, bytes: 1 } }, { drop: null }] } },
      { rule: { family: 'ip', table: 'berth', chain: 'forward', expr: [{ accept: null }], comment: 'no counter' } },
    ] });
    const c = parseNftCounters(json);
    assert.deepEqual(c.elements, [{ family: 'ip', map: 'pub_any', key: ['tcp', 8080], value: ['172.18.0.2', 80], packets: 3 }]);
    assert.deepEqual(c.rules, [{ family: 'ip', chain: 'forward', comment: 'unsolicited', packets: 7, bytes: 420 }]);
  });
});

describe('the metrics collector', () => {
  const net = (over: Partial<NetworkRecord>): NetworkRecord => ({ Name: 'web', Id: 'a'.repeat(64), Driver: 'bridge', bridge: 'bth-aaaa', ...over } as NetworkRecord);

  it('labels endpoint counters by network and container, from the container\'s side of its veth', async () => {
    const life = new LifecycleStats();
    life.started(process.hrtime.bigint(), true);
    life.started(process.hrtime.bigint(), false);
    const web = net({});
    const other = net({ Name: 'back', Id: 'b'.repeat(64), bridge: 'bth-bbbb' });
    const collector = new MetricsCollector({
      containers: () => [
        { Id: '1', Name: '/srv', State: { Status: 'running' }, Endpoints: { [web.Id]: { EndpointID: 'e1' } as never }, Published: [{ proto: 'tcp', hostIp: '', hostPort: 8300, containerIp: '172.18.0.2', containerPort: 80 }] },
        { Id: '2', Name: '/old', State: { Status: 'exited' }, Endpoints: { [web.Id]: { EndpointID: 'e2' } as never } },
      ],
      networks: () => [web, other],
      hostLink: (_n, id) => `vb${id}`,
      life,
      links: async () => new Map([
        ['vbe1', { rxBytes: 10, rxPackets: 1, rxDrops: 0, txBytes: 2000, txPackets: 3, txDrops: 4 }],
        ['vbe2', { rxBytes: 99, rxPackets: 99, rxDrops: 99, txBytes: 99, txPackets: 99, txDrops: 99 }],
        ['bth-aaaa', { rxBytes: 5, rxPackets: 6, rxDrops: 0, txBytes: 7, txPackets: 8, txDrops: 0 }],
      ]),
      nft: async () => ({
        rules: [
          { family: 'ip', chain: `n${'b'.repeat(12)}_in`, comment: 'isolation', packets: 2, bytes: 168 },
          { family: 'ip', chain: 'forward', comment: 'unsolicited', packets: 1, bytes: 60 },
          { family: 'bridge', chain: 'guard', comment: 'spoofed-ipv4', packets: 4, bytes: 1 },
        ],
        elements: [{ family: 'ip', map: 'pub_any', key: ['tcp', 8300], value: ['172.18.0.2', 80], packets: 3 }],
      }),
    });
    const text = await collector.render();
    const has = (line: string) => assert.ok(text.split('\n').includes(line), `missing ${line} in\n${text}`);
    has('berth_endpoint_receive_bytes_total{network="web",container="srv"} 2000');
    has('berth_endpoint_transmit_bytes_total{network="web",container="srv"} 10');
    has('berth_endpoint_receive_drops_total{network="web",container="srv"} 4');
    assert.doesNotMatch(text, /container="old"/, 'a stopped container has no endpoint counters');
    has('berth_network_endpoints{network="web",driver="bridge"} 1');
    has('berth_network_endpoints{network="back",driver="bridge"} 0');
    has('berth_network_gateway_receive_bytes_total{network="web"} 5');
    has('berth_network_dropped_packets_total{network="back",reason="isolation"} 2');
    has('berth_firewall_dropped_packets_total{reason="unsolicited"} 1');
    has('berth_firewall_dropped_packets_total{reason="spoofed-ipv4"} 4');
    has('berth_published_port_connections_total{container="srv",proto="tcp",host_ip="0.0.0.0",host_port="8300",container_port="80"} 3');
    has('berth_containers{state="running"} 1');
    has('berth_containers{state="exited"} 1');
    has('berth_container_starts_total{result="ok"} 1');
    has('berth_container_starts_total{result="failed"} 1');
    has('berth_container_start_duration_seconds_count 2');
    assert.doesNotMatch(text, /berth_dns_/, 'no resolver, no DNS families');
    assert.doesNotMatch(text, /berth_cluster_nodes/, 'not in a swarm, no cluster family');
  });

  it('reads the kernel once for scrapes that arrive together', async () => {
    let reads = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const collector = new MetricsCollector({
      containers: () => [], networks: () => [], hostLink: () => undefined, life: new LifecycleStats(),
      links: async () => { reads++; await gate; return new Map(); },
      nft: async () => ({ rules: [], elements: [] }),
    });
    const both = Promise.all([collector.render(), collector.render()]);
    release();
    const [a, b] = await both;
    assert.equal(reads, 1);
    assert.equal(a, b);
    await collector.render();
    assert.equal(reads, 2, 'a later scrape reads afresh');
  });

  it('shows DNS counters merged from the hot path and the event loop, and the swarm\'s nodes', async () => {
    const bounds = [0.001, 0.01];
    const collector = new MetricsCollector({
      containers: () => [{ Id: 'c1', Name: '/cli', State: { Status: 'running' } }], networks: () => [], hostLink: () => undefined, life: new LifecycleStats(),
      links: async () => new Map(), nft: async () => ({ rules: [], elements: [] }),
      dns: () => ({
        queries: { udp: 5, tcp: 1 }, rcodes: [4, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dropped: 0,
        forwarded: { answered: 1, failed: 0, refused: 0 },
        latency: { bounds, cache: { buckets: [3, 0, 0], sumSeconds: 0.0003 }, resolver: { buckets: [0, 1, 1], sumSeconds: 0.5 } },
        byContainer: [{ containerId: 'c1', queries: 6 }],
      }),
      clusterNodes: async () => [{ role: 'manager', state: 'ready' }, { role: 'worker', state: 'ready' }, { role: 'worker', state: 'down' }],
    });
    const text = await collector.render();
    const has = (line: string) => assert.ok(text.split('\n').includes(line), `missing ${line} in\n${text}`);
    has('berth_dns_queries_total{transport="udp"} 5');
    has('berth_dns_responses_total{rcode="NXDOMAIN"} 2');
    has('berth_dns_responses_total{rcode="SERVFAIL"} 0');
    has('berth_dns_cache_hits_total 3');
    has('berth_container_dns_queries_total{container="cli"} 6');
    has('berth_dns_forwarded_total{result="answered"} 1');
    has('berth_dns_request_duration_seconds_bucket{path="resolver",le="0.01"} 1');
    has('berth_dns_request_duration_seconds_count{path="resolver"} 2');
    has('berth_cluster_nodes{role="worker",state="ready"} 1');
    has('berth_cluster_nodes{role="manager",state="ready"} 1');
  });
});
