import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { linkLocalOf } from '../../src/network/firewall.js';
import { run } from '../../src/util/exec.js';
import { execOut, TestHost, waitFor } from './harness.js';

/**
 * What a neighbour or a container must not reach (issue 22, items 7, 8 and 9). Every negative
 * check shows that its probe ran: the same probe succeeds on an allowed path, and the drop is
 * counted by the very berth rule that should make it. Traffic goes only to addresses the test made:
 * its test host, its outside namespace, its probe namespace and its containers.
 */
const SUBNET = '10.210.0.0/24';
const GW = '10.210.0.1';
const BR = 'btexpo0';
const BB = '/usr/bin/busybox';
const HTTPD = ['sh', '-c', 'mkdir -p /www && echo web > /www/index.html && httpd -p 81 -h /www && exec httpd -f -p 80 -h /www'];

describe('exposure: neighbours, loopback, spoofing', () => {
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
    assert.ok((await drops()) >= before + 4, 'the SYNs and echo requests were dropped by berth\'s forward rule');
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

  describe('spoofing between containers on one bridge', () => {
    interface Ctr { id: string; pid: number; ip: string; mac: string }
    async function start(body: Record<string, unknown> = {}): Promise<Ctr> {
      const id = await host.runDetached({ Cmd: ['sleep', '600'], HostConfig: { NetworkMode: 'expo' }, ...body });
      const j = (await host.api('GET', `/containers/${id}/json`)).json;
      return { id, pid: j.State.Pid, ip: j.NetworkSettings.Networks.expo.IPAddress, mac: j.NetworkSettings.Networks.expo.MacAddress };
    }
    /** Runs a command inside a container's network namespace, from the test host (root, every tool). */
    function inCtr(c: Ctr, cmd: string[]) { return run('nsenter', [`--net=/proc/${c.pid}/ns/net`, ...cmd]); }
    async function neighMac(c: Ctr, ip: string): Promise<string> {
      const r = await inCtr(c, ['ip', '-j', 'neigh', 'show', ip, 'dev', 'eth0']);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout || '[]') as Array<{ lladdr?: string }>)[0]?.lladdr ?? '';
    }
    const guardDrops = () => counted('bridge', 'guard', /drop/);
    let victim: Ctr;
    let peer: Ctr;
    let attacker: Ctr;

    before(async () => {
      victim = await start();
      peer = await start();
      attacker = await start({ MacAddress: '02:42:aa:bb:cc:dd', NetworkingConfig: { EndpointsConfig: { expo: { IPAMConfig: { IPv4Address: '10.210.0.50' } } } } });
      assert.equal(attacker.mac, '02:42:aa:bb:cc:dd');
      assert.equal(attacker.ip, '10.210.0.50');
    });

    it('normal traffic passes: static --ip and --mac-address, gratuitous ARP for one\'s own address', async () => {
      for (const [from, to] of [[peer, victim], [attacker, peer], [victim, attacker]] as const) {
        assert.match(await execOut(host, from.id, ['ping', '-c', '1', '-W', '2', to.ip]), /1 packets received/, `${from.ip} -> ${to.ip}`);
      }
      const before = await guardDrops();
      const garp = await inCtr(attacker, [BB, 'arping', '-U', '-c', '2', '-I', 'eth0', '-s', attacker.ip, attacker.ip]);
      assert.equal(garp.code, 0, garp.stderr + garp.stdout);
      assert.match(garp.stdout, /Sent 2 probe/);
      assert.equal(await guardDrops(), before, 'a gratuitous ARP for one\'s own address is not dropped');
    });

    it('IPv6 link-local: a neighbour is reached from one\'s own, and a claimed neighbour\'s one is dropped', async () => {
      const ll = (c: Ctr) => linkLocalOf(c.mac);
      // A link-local address is tentative for a second or so after its link comes up (DAD): the
      // first ping may only be sent once it is not.
      let own = await inCtr(peer, [BB, 'ping', '-6', '-c', '1', '-W', '2', `${ll(victim)}%eth0`]);
      for (let i = 0; i < 20 && !/1 packets received/.test(own.stdout); i++) {
        await new Promise((r) => setTimeout(r, 250));
        own = await inCtr(peer, [BB, 'ping', '-6', '-c', '1', '-W', '2', `${ll(victim)}%eth0`]);
      }
      assert.match(own.stdout, /1 packets received/, `link-local to link-local works: ${own.stdout}${own.stderr}`);
      assert.equal(await neighMac(peer, ll(victim)), victim.mac);
      const before = await guardDrops();
      // The attacker's own link-local goes, so the victim's is the only source it can send from.
      assert.equal((await inCtr(attacker, ['ip', '-6', 'addr', 'del', `${ll(attacker)}/64`, 'dev', 'eth0'])).code, 0);
      assert.equal((await inCtr(attacker, ['ip', '-6', 'addr', 'add', `${ll(victim)}/64`, 'dev', 'eth0', 'nodad'])).code, 0);
      assert.equal((await inCtr(attacker, ['ip', '-6', 'neigh', 'replace', ll(peer), 'lladdr', peer.mac, 'dev', 'eth0', 'nud', 'permanent'])).code, 0);
      const spoof = await inCtr(attacker, [BB, 'ping', '-6', '-c', '2', '-w', '3', '-I', 'eth0', ll(peer)]);
      assert.match(spoof.stdout, /2 packets transmitted, 0 packets received/, `exit ${spoof.code}: ${spoof.stdout}${spoof.stderr}`);
      assert.ok((await guardDrops()) >= before + 2, 'the frames from the claimed link-local were dropped at the attacker\'s port');
      assert.equal(await neighMac(peer, ll(victim)), victim.mac, 'the peer still has the victim\'s MAC for its link-local');
      assert.equal((await inCtr(attacker, ['ip', '-6', 'addr', 'del', `${ll(victim)}/64`, 'dev', 'eth0'])).code, 0);
      assert.equal((await inCtr(attacker, ['ip', '-6', 'addr', 'add', `${ll(attacker)}/64`, 'dev', 'eth0', 'nodad'])).code, 0);
      const back = await inCtr(attacker, [BB, 'ping', '-6', '-c', '1', '-W', '2', `${ll(peer)}%eth0`]);
      assert.match(back.stdout, /1 packets received/, `the attacker still reaches the peer from its own link-local: ${back.stdout}${back.stderr}`);
    });

    it('a container claiming a neighbour\'s address rewrites no ARP entry and its spoofed packets are dropped', async () => {
      // The peer knows the victim's MAC.
      assert.match(await execOut(host, peer.id, ['ping', '-c', '1', '-W', '2', victim.ip]), /1 packets received/);
      assert.equal(await neighMac(peer, victim.ip), victim.mac);
      const before = await guardDrops();
      // The attacker (root in its namespace, every capability) claims the victim's address: a
      // gratuitous ARP, then ARP requests and pings sourced from it.
      assert.equal((await inCtr(attacker, ['ip', 'addr', 'add', `${victim.ip}/32`, 'dev', 'eth0'])).code, 0);
      const garp = await inCtr(attacker, [BB, 'arping', '-U', '-c', '2', '-I', 'eth0', '-s', victim.ip, peer.ip]);
      assert.match(garp.stdout, /Sent 2 probe/, `the spoofing probe ran: ${garp.stdout}${garp.stderr}`);
      assert.equal((await inCtr(attacker, ['ip', 'neigh', 'replace', peer.ip, 'lladdr', peer.mac, 'dev', 'eth0', 'nud', 'permanent'])).code, 0);
      const spoofPing = await inCtr(attacker, [BB, 'ping', '-c', '2', '-W', '1', '-I', victim.ip, peer.ip]);
      assert.match(spoofPing.stdout, /2 packets transmitted, 0 packets received/, spoofPing.stdout + spoofPing.stderr);
      assert.ok((await guardDrops()) >= before + 4, 'the spoofed ARP and IP frames were dropped at the attacker\'s bridge port');
      assert.equal(await neighMac(peer, victim.ip), victim.mac, 'the peer still has the victim\'s MAC for its address');
      // The victim is still reached, and the attacker still reaches the peer from its own address.
      assert.match(await execOut(host, peer.id, ['ping', '-c', '1', '-W', '2', victim.ip]), /1 packets received/);
      const own = await inCtr(attacker, [BB, 'ping', '-c', '1', '-W', '2', '-I', attacker.ip, peer.ip]);
      assert.match(own.stdout, /1 packets received/, own.stdout + own.stderr);
      // A frame from a MAC not its own is dropped too.
      const before2 = await guardDrops();
      assert.equal((await inCtr(attacker, ['ip', 'link', 'set', 'eth0', 'address', victim.mac])).code, 0);
      const macPing = await inCtr(attacker, [BB, 'ping', '-c', '1', '-W', '1', '-I', attacker.ip, peer.ip]);
      assert.match(macPing.stdout, /0 packets received/);
      assert.ok((await guardDrops()) > before2);
    });

    it('a container on two networks sends from each network\'s address on each', async () => {
      const other = await host.api('POST', '/networks/create', { Name: 'expo2', IPAM: { Config: [{ Subnet: '10.211.0.0/24' }] } });
      assert.equal(other.status, 201, other.body);
      const both = await start();
      assert.equal((await host.api('POST', '/networks/expo2/connect', { Container: both.id })).status, 200);
      const mate = await host.runDetached({ Cmd: ['sleep', '600'], HostConfig: { NetworkMode: 'expo2' } });
      const mateIp = (await host.api('GET', `/containers/${mate}/json`)).json.NetworkSettings.Networks.expo2.IPAddress;
      assert.match(await execOut(host, both.id, ['ping', '-c', '1', '-W', '2', mateIp]), /1 packets received/);
      assert.match(await execOut(host, both.id, ['ping', '-c', '1', '-W', '2', victim.ip]), /1 packets received/);
    });

    it('containers of a berth that did not pin link-local addresses get theirs at the next start', async () => {
      const port = (await host.inNetns('nft', ['-j', 'list', 'set', 'bridge', 'berth', 'macs'])).stdout;
      const victimPort = (JSON.parse(port).nftables as Array<{ set?: { elem?: Array<{ concat: string[] }> } }>)
        .flatMap((i) => i.set?.elem ?? []).find((e) => e.concat[1] === victim.mac)!.concat[0]!;
      // What an older berth left: the port guarded, its link-local not allowed.
      const del = await host.inNetns('nft', ['delete', 'element', 'bridge', 'berth', 'src6', `{ "${victimPort}" . ${victim.mac} . ${linkLocalOf(victim.mac)} }`]);
      assert.equal(del.code, 0, del.stderr);
      await host.stopDaemon();
      await host.startDaemon();
      const src6 = (await host.inNetns('nft', ['list', 'set', 'bridge', 'berth', 'src6'])).stdout;
      assert.match(src6, new RegExp(`${victim.mac} \\. ${linkLocalOf(victim.mac)}`));
      const own = await inCtr(peer, [BB, 'ping', '-6', '-c', '1', '-W', '2', `${linkLocalOf(victim.mac)}%eth0`]);
      assert.match(own.stdout, /1 packets received/, own.stdout + own.stderr);
    });
  });
});
