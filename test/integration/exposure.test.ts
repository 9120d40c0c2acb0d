import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { execOut, TestHost, waitFor } from './harness.js';

/**
 * What a neighbour or a container must not reach (issue 22, items 7 and 8). Every negative
 * check shows that its probe ran: the same probe succeeds on an allowed path, and the drop is
 * counted by the very berth rule that should make it. Traffic goes only to addresses the test made:
 * its test host, its outside namespace, its probe namespace and its containers.
 */
const SUBNET = '10.210.0.0/24';
const GW = '10.210.0.1';
const BR = 'btexpo0';
const BB = '/usr/bin/busybox';
const HTTPD = ['sh', '-c', 'mkdir -p /www && echo web > /www/index.html && httpd -p 81 -h /www && exec httpd -f -p 80 -h /www'];

describe('exposure: neighbours, loopback', () => {
  let host: TestHost;
  let web = '';
  let webIp = '';
  let listener: ChildProcess | undefined;
  const probeNs = `bt${process.pid}pr`;

  before(async () => {
    host = await TestHost.create({ outside: true });
    const net = await host.api('POST', '/networks/create', { Name: 'expo', Options: { 'com.docker.network.bridge.name': BR }, IPAM: { Config: [{ Subnet: SUBNET }] } });
    assert.equal(net.status, 201, net.body);
    web = await host.runDetached({ Cmd: HTTPD, HostConfig: { NetworkMode: 'expo', PortBindings: { '80/tcp': [{ HostPort: '8085' }] } } });
    webIp = (await host.api('GET', `/containers/${web}/json`)).json.NetworkSettings.Networks.expo.IPAddress;
    await waitFor(async () => /web/.test(await execOut(host, web, ['sh', '-c', 'wget -qO- http://127.0.0.1:81/ && wget -qO- http://127.0.0.1:80/'])), 'web serving on 81');
  });
  after(async () => {
    listener?.kill();
    await host.inNetns('ip', ['link', 'del', 'btpr0']);
    await run('ip', ['netns', 'del', probeNs]);
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  /** Packets counted by the berth rule whose text matches, in berthd's namespace. */
  async function counted(family: string, chain: string, rule: RegExp): Promise<number> {
    const r = await host.inNetns('nft', ['list', 'chain', family, 'berth', chain]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split('\n').filter((l) => rule.test(l)).reduce((sum, l) => sum + Number(/counter packets (\d+)/.exec(l)?.[1] ?? 0), 0);
  }

  function outside(args: string[]) { return host.inOutside(BB, args); }
  /** An HTTP GET with busybox nc (busybox wget crashes on this host outside a container). */
  function httpGet(where: 'outside' | 'host', ip: string, port: number) {
    const ns = where === 'outside' ? `/run/netns/${host.outside}` : host.netnsPath;
    return run('nsenter', [`--net=${ns}`, BB, 'nc', '-w', '2', ip, String(port)], { input: 'GET / HTTP/1.0\r\n\r\n' });
  }

  it('a neighbour routing the container subnet at the host reaches published ports only (TCP and ICMP)', async () => {
    const route = await host.inOutside('ip', ['route', 'add', SUBNET, 'via', '10.200.0.1']);
    assert.equal(route.code, 0, route.stderr);
    // The probe works: the published port answers the outside namespace through the host address.
    const pub = await httpGet('outside', '10.200.0.1', 8085);
    assert.match(pub.stdout, /^HTTP\/1.[01] 200 OK[^]*\nweb\n$/, pub.stderr);
    const drops = () => counted('ip', 'forward', /oifname @bridges iifname != @bridges/);
    const before = await drops();
    // Straight at the container's address: port 81 is published nowhere, port 80 not on this path.
    for (const port of [81, 80]) {
      const r = await httpGet('outside', webIp, port);
      assert.notEqual(r.code, 0, `port ${port} reached: ${r.stdout}`);
      assert.doesNotMatch(r.stdout, /web/);
      assert.match(r.stderr, /timed out|timeout/i, `dropped, so the SYN is never answered (not refused, not a missing tool): ${r.stderr}`);
    }
    const ping = await outside(['ping', '-c', '2', '-W', '1', webIp]);
    assert.notEqual(ping.code, 0, ping.stdout);
    assert.match(ping.stdout, /2 packets transmitted, 0 packets received/);
    assert.ok((await drops()) >= 4, 'the SYNs and echo requests were dropped by berth\'s forward rule');
    // Container to outside, and its replies, still pass.
    assert.match(await execOut(host, web, ['ping', '-c', '1', '-W', '2', '10.200.0.2']), /1 packets received/);
  });

  it('a container cannot reach the host\'s 127.0.0.0/8 services through its bridge (CVE-2020-8558)', async () => {
    // A listener on the test host's loopback, and one on the gateway address as the probe's control.
    listener = spawn('nsenter', [`--net=${host.netnsPath}`, process.execPath, '-e',
      `const net=require('net');let n=0;const up=()=>{if(++n===2)console.log('up')};` +
      `net.createServer((s)=>s.end('loopback-secret\\n')).listen(7777,'127.0.0.1',up);` +
      `net.createServer((s)=>s.end('gateway-ok\\n')).listen(7778,'${GW}',up);`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      listener!.stdout!.once('data', () => resolve());
      listener!.once('exit', (c) => reject(new Error(`listener exited ${c}`)));
    });
    // A namespace of the test's own on the bridge, sending to 127.0.0.1 via the gateway's MAC:
    // its lo stays down (so 127.0.0.1 is not local there) and route_localnet lets the route out.
    assert.equal((await run('ip', ['netns', 'add', probeNs])).code, 0);
    const mk = await host.inNetns('ip', ['-batch', '-'], [
      `link add btpr0 type veth peer name btpr1 netns ${probeNs}`, `link set btpr0 master ${BR}`, 'link set btpr0 up',
    ].join('\n') + '\n');
    assert.equal(mk.code, 0, mk.stderr);
    const cfg = await run('ip', ['-n', probeNs, '-batch', '-'], { input: ['addr add 10.210.0.200/24 dev btpr1', 'link set btpr1 up'].join('\n') + '\n' });
    assert.equal(cfg.code, 0, cfg.stderr);
    const sysctl = await run('nsenter', [`--net=/run/netns/${probeNs}`, 'sysctl', '-qw', 'net.ipv4.conf.btpr1.route_localnet=1']);
    assert.equal(sysctl.code, 0, sysctl.stderr);
    const rt = await run('ip', ['-n', probeNs, 'route', 'add', '127.0.0.1/32', 'via', GW, 'dev', 'btpr1']);
    assert.equal(rt.code, 0, rt.stderr);
    const probe = (ip: string, port: number) => run('nsenter', [`--net=/run/netns/${probeNs}`, BB, 'nc', '-w', '2', ip, String(port)], { input: '' });

    // The probe itself works: the same tool from the same namespace reaches the gateway's listener.
    const control = await waitFor(async () => { const r = await probe(GW, 7778); return r.stdout === 'gateway-ok\n' && r; }, 'probe reaching the gateway');
    assert.equal(control.stdout, 'gateway-ok\n');
    const drops = () => counted('ip', 'input', /ip daddr 127\.0\.0\.0\/8/);
    const before = await drops();
    const r = await probe('127.0.0.1', 7777);
    assert.doesNotMatch(r.stdout, /loopback-secret/, 'a neighbour on the bridge read a loopback-only service');
    assert.ok((await drops()) > before, 'the SYN to 127.0.0.1 reached the host and was dropped by berth\'s loopback rule');
    // The host's own 127.0.0.1 connections to a published port (DNAT out through the bridge) still work.
    const own = await httpGet('host', '127.0.0.1', 8085);
    assert.match(own.stdout, /\nweb\n$/, own.stderr);
  });
});
