import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { exec, fetchIn, lookup, probePing, startFakeUpstream, TestHost, waitFor } from './harness.js';

/**
 * berthd's /metrics scraped by a real Prometheus (Debian's), which the test runs inside the test
 * host's namespace on its loopback, scraping berthd's --metrics-addr there every second. The
 * assertions ask Prometheus' HTTP API for values the test itself caused: DNS queries a container
 * made, bytes one container fetched from another, connections to a published port, a packet the
 * isolation between networks dropped, starts and stops, the swarm's nodes, and the connections
 * each backend of a service got.
 */
const METRICS = '127.0.0.1:9323';
const PROM = '127.0.0.1:9390';

describe('metrics scraped by Prometheus', () => {
  let host: TestHost;
  let prom: ChildProcess | undefined;
  let promLog = '';
  let upstream: ChildProcess | undefined;

  /** One instant query; undefined while Prometheus has no such series. */
  async function value(query: string): Promise<number | undefined> {
    const r = await fetchIn(host.netnsPath, `http://${PROM}/api/v1/query?query=${encodeURIComponent(query)}`, 5000);
    if (r.error !== undefined || r.status !== 200) return undefined;
    const body = JSON.parse(r.body) as { data: { result: Array<{ value: [number, string] }> } };
    const v = body.data.result[0]?.value[1];
    return v === undefined ? undefined : Number(v);
  }

  /** Waits until Prometheus has scraped `query` at `want` (or within [min, max]); fails with the last value seen. */
  async function expectValue(query: string, want: number | [number, number]): Promise<number> {
    let last: number | undefined;
    const ok = (v: number | undefined) => v !== undefined && (Array.isArray(want) ? v >= want[0] && v <= want[1] : v === want);
    try {
      // Wrapped: a wanted 0 must not read as "not yet".
      return (await waitFor(async () => {
        last = await value(query);
        return ok(last) ? { v: last! } : undefined;
      }, `Prometheus: ${query}`, 30_000)).v;
    } catch {
      assert.fail(`Prometheus: ${query} was ${last}, wanted ${JSON.stringify(want)}\n${promLog.slice(-2000)}`);
    }
  }

  before(async () => {
    assert.ok(existsSync('/usr/bin/prometheus'), '/usr/bin/prometheus is missing: scripts/setup.sh installs Debian\'s prometheus');
    host = await TestHost.create({ outside: true, daemonArgs: ['--metrics-addr', METRICS] });
    upstream = await startFakeUpstream(host);
    const dir = join(host.dir, 'prometheus');
    await fs.mkdir(dir);
    await fs.writeFile(join(dir, 'prometheus.yml'), [
      'global:', '  scrape_interval: 1s', '  evaluation_interval: 1s',
      'scrape_configs:', '  - job_name: berth', '    static_configs:', `      - targets: ['${METRICS}']`,
    ].join('\n') + '\n');
    prom = spawn('nsenter', [`--net=${host.netnsPath}`, '/usr/bin/prometheus', `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=${PROM}`, '--log.level=warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    prom.stdout!.on('data', (d: Buffer) => { promLog += d.toString(); });
    prom.stderr!.on('data', (d: Buffer) => { promLog += d.toString(); });
    await waitFor(async () => {
      if (prom!.exitCode !== null) throw new Error(`prometheus exited: ${promLog}`);
      return (await value('up{job="berth"}')) === 1;
    }, 'Prometheus to scrape berthd', 60_000);
  });

  after(async () => {
    for (const p of [prom, upstream]) {
      if (!p || p.exitCode !== null) continue;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  it('serves the text format on the API socket and on --metrics-addr, clean for promtool', async () => {
    const api = await host.api('GET', '/metrics');
    assert.equal(api.status, 200);
    assert.equal(api.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    assert.match(api.body, /^# TYPE berth_container_starts_total counter$/m);
    const tcp = await fetchIn(host.netnsPath, `http://${METRICS}/metrics`);
    assert.equal(tcp.status, 200);
    assert.match(tcp.body!, /^berth_containers\{state="running"\} 0$/m);
    assert.equal((await fetchIn(host.netnsPath, `http://${METRICS}/containers/json`)).status, 404, 'the TCP listener serves /metrics only');
    const lint = await run('promtool', ['check', 'metrics'], { input: api.body });
    assert.equal(lint.code, 0, `promtool: ${lint.stdout}${lint.stderr}`);
  });

  it('counts what containers did: DNS queries, bytes between two, connections to a published port, isolation drops', async () => {
    assert.equal((await host.api('POST', '/networks/create', { Name: 'mnet', IPAM: { Config: [{ Subnet: '10.90.0.0/24' }] } })).status, 201);
    assert.equal((await host.api('POST', '/networks/create', { Name: 'other', IPAM: { Config: [{ Subnet: '10.91.0.0/24' }] } })).status, 201);
    const srv = await host.runDetached({
      Cmd: ['sh', '-c', 'mkdir /www && echo page > /www/index.html && dd if=/dev/zero of=/www/big bs=1000 count=1000 2>/dev/null && exec httpd -f -p 80 -h /www'],
      ExposedPorts: { '80/tcp': {} }, HostConfig: { NetworkMode: 'mnet', PortBindings: { '80/tcp': [{ HostPort: '8300' }] } },
    }, 'srv');
    const cli = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'mnet' } }, 'cli');
    const stranger = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'other' } }, 'stranger');
    await expectValue('berth_container_starts_total{result="ok"}', 3);
    await expectValue('berth_containers{state="running"}', 3);
    await expectValue('berth_network_endpoints{network="mnet"}', 2);

    // DNS: five names of containers (answered from the directory, then the cache), one forwarded
    // to the outside's server, one it says does not exist. busybox nslookup -type=A asks once.
    for (let i = 0; i < 5; i++) assert.equal((await lookup(host, cli, 'srv')).rcode, 'NOERROR');
    assert.deepEqual((await lookup(host, cli, 'outside.test')).addrs, ['10.200.0.99']);
    assert.equal((await lookup(host, cli, 'nosuch.test')).rcode, 'NXDOMAIN');
    await expectValue('berth_dns_queries_total{transport="udp"}', 7);
    await expectValue('berth_container_dns_queries_total{container="cli"}', 7);
    await expectValue('berth_container_dns_queries_total{container="srv"}', 0);
    await expectValue('berth_dns_responses_total{rcode="NOERROR"}', 6);
    await expectValue('berth_dns_responses_total{rcode="NXDOMAIN"}', 1);
    await expectValue('berth_dns_forwarded_total{result="answered"}', 2);
    await expectValue('berth_dns_cache_hits_total', 4);
    await expectValue('sum(berth_dns_request_duration_seconds_count)', 7);
    await expectValue('berth_dns_request_duration_seconds_count{path="cache"}', 4);
    // Answers from the cache are served in the native thread, typically in microseconds; the bound
    // here is loose because a loaded machine can preempt that thread between receive and send.
    await expectValue('berth_dns_request_duration_seconds_bucket{path="cache",le="0.1"}', 4);
    await expectValue('berth_dns_request_duration_seconds_bucket{path="cache",le="+Inf"}', 4);
    // One query over TCP, from inside cli's namespace (busybox nslookup asks over UDP only).
    const sandbox = (await host.api('GET', '/containers/cli/json')).json.NetworkSettings.SandboxKey as string;
    const tcp = await host.inNetns('nsenter', [`--net=${sandbox}`, process.execPath, '-e', `
      const q = Buffer.from('4321010000010000000000000373727600' + '00010001', 'hex');
      const len = Buffer.alloc(2); len.writeUInt16BE(q.length);
      const t = require('net').connect(53, '127.0.0.11', () => t.write(Buffer.concat([len, q])));
      let buf = Buffer.alloc(0);
      t.on('data', (d) => { buf = Buffer.concat([buf, d]); if (buf.length >= 2 + buf.readUInt16BE(0)) { console.log('rcode ' + (buf[5] & 15) + ' answers ' + buf.readUInt16BE(8)); process.exit(0); } });
      t.on('error', (e) => { console.log('error ' + e.message); process.exit(0); });
      setTimeout(() => { console.log('timeout'); process.exit(0); }, 5000);`]);
    assert.equal(tcp.stdout.trim(), 'rcode 0 answers 1');
    await expectValue('berth_dns_queries_total{transport="tcp"}', 1);
    await expectValue('berth_container_dns_queries_total{container="cli"}', 8);
    await expectValue('berth_dns_responses_total{rcode="NOERROR"}', 7);
    await expectValue('berth_dns_request_duration_seconds_count{path="resolver"}', 4);

    // One megabyte from srv to cli over their network, seen on both veths (plus headers and the handshake).
    const before = { sent: await value('berth_endpoint_transmit_bytes_total{container="srv",network="mnet"}') ?? 0, got: await value('berth_endpoint_receive_bytes_total{container="cli",network="mnet"}') ?? 0 };
    const w = await exec(host, cli, ['wget', '-q', '-O', '/dev/null', 'http://srv/big']);
    assert.equal(w.code, 0, w.out);
    await expectValue('berth_endpoint_transmit_bytes_total{container="srv",network="mnet"}', [before.sent + 1_000_000, before.sent + 1_150_000]);
    await expectValue('berth_endpoint_receive_bytes_total{container="cli",network="mnet"}', [before.got + 1_000_000, before.got + 1_150_000]);

    // Three connections to the published port from the outside world, none before.
    await expectValue('berth_published_port_connections_total{container="srv",host_port="8300",proto="tcp",container_port="80"}', 0);
    for (let i = 0; i < 3; i++) {
      const r = await fetchIn(`/run/netns/${host.outside}`, 'http://10.200.0.1:8300/index.html');
      assert.equal(r.body, 'page\n');
    }
    await expectValue('berth_published_port_connections_total{container="srv",host_port="8300",proto="tcp",container_port="80"}', 3);

    // One ping from another network: lost to isolation, and counted there.
    const srvIp = (await host.api('GET', '/containers/srv/json')).json.NetworkSettings.Networks.mnet.IPAddress as string;
    assert.equal(await probePing(host, stranger, srvIp), 'lost');
    await expectValue('berth_network_dropped_packets_total{network="other",reason="isolation"}', 1);
    await expectValue('berth_network_dropped_packets_total{network="mnet",reason="isolation"}', 0);

    // A stop, timed from its signal to the exit.
    assert.equal((await host.api('POST', `/containers/${cli}/stop?t=1`)).status, 204);
    await expectValue('berth_container_stops_total', 1);
    await expectValue('berth_container_stop_duration_seconds_count', 1);
    await expectValue('berth_containers{state="exited"}', 1);
    for (const id of [srv, cli, stranger]) assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
    await expectValue('berth_containers{state="running"}', 0);
  });

  it('shows the swarm\'s nodes by role and state once the node is a manager', async () => {
    assert.equal(await value('berth_cluster_nodes'), undefined, 'no cluster family outside a swarm');
    const init = await host.api('POST', '/swarm/init', { AdvertiseAddr: '10.200.0.1', ListenAddr: '0.0.0.0:2377' });
    assert.equal(init.status, 200, init.body);
    await expectValue('berth_cluster_nodes{role="manager",state="ready"}', 1);
  });

  it('counts each service backend\'s connections, through the VIP and through the routing mesh, and keeps them across a scale', async () => {
    const ok = async (args: string[]) => { const r = await host.docker(args); assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`); return r.stdout.trim(); };
    await ok(['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.92.0.0/24', 'snet']);
    await ok(['service', 'create', '--detach', '--name', 'hits', '--replicas', '2', '--network', 'snet', '-p', '8310:80',
      'busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www']);
    const cli = await ok(['run', '-d', '--network', 'snet', '--name', 'hcli', 'busybox', 'sleep', '300']);
    const backends = 'berth_service_backend_connections_total{service="hits",via="vip"}';
    await expectValue(`count(${backends})`, 2);
    await expectValue(`sum(${backends})`, 0);
    // Sixteen connections to the VIP from a container, taken by the backends in turn.
    const served = new Set<string>();
    for (let i = 0; i < 16; i++) {
      const r = await exec(host, cli, ['wget', '-q', '-O', '-', 'http://hits/']);
      assert.equal(r.code, 0, r.out);
      served.add(r.out.trim());
    }
    assert.equal(served.size, 2, `both tasks served: ${[...served].join(', ')}`);
    await expectValue(`sum(${backends})`, 16);
    await expectValue(`count(${backends} > 0)`, 2);
    // Six through the published port from the outside world: the mesh's balancer counts them.
    for (let i = 0; i < 6; i++) assert.equal((await fetchIn(`/run/netns/${host.outside}`, 'http://10.200.0.1:8310/')).status, 200);
    await expectValue('sum(berth_service_backend_connections_total{service="hits",via="ingress"})', 6);
    // One backend leaves: its count stays in the total (a counter never goes down), and the
    // next connections all go to the one left, whose count goes on from where it was.
    await ok(['service', 'scale', '--detach', 'hits=1']);
    await waitFor(async () => (await ok(['service', 'ps', '-q', '--filter', 'desired-state=running', 'hits'])).split('\n').length === 1
      && (await exec(host, cli, ['wget', '-q', '-O', '-', 'http://hits/'])).code === 0, 'hits at one task');
    const left = (await exec(host, cli, ['wget', '-q', '-O', '-', 'http://hits/'])).out.trim();
    // The total now, from berthd itself (Prometheus' last scrape may predate the last fetches).
    const now = (await host.api('GET', '/metrics')).body.matchAll(/^berth_service_backend_connections_total\{service="hits",backend="[\d.]+",via="vip"\} (\d+)$/gm);
    const after = [...now].reduce((a, m) => a + Number(m[1]), 0);
    assert.ok(after >= 18, `the VIP total went down to ${after}`);
    for (let i = 0; i < 4; i++) assert.equal((await exec(host, cli, ['wget', '-q', '-O', '-', 'http://hits/'])).out.trim(), left);
    await expectValue(`sum(${backends})`, after + 4);
    await expectValue(`count(${backends})`, 2);
    await ok(['rm', '-f', 'hcli']);
    await ok(['service', 'rm', 'hits']);
    await expectValue(`count(${backends}) or vector(0)`, 0);
    assert.equal((await host.api('POST', '/swarm/leave?force=1')).status, 200);
  });
});
