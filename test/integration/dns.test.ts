import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { execOut, lookup, startFakeUpstream, TestHost, waitFor } from './harness.js';

/** Asserts the resolver answered NXDOMAIN: a timeout or a missing tool is not "the name does not resolve". */
async function gone(host: TestHost, id: string, name: string, why: string): Promise<void> {
  const r = await lookup(host, id, name);
  assert.equal(r.rcode, 'NXDOMAIN', `${why}: ${r.out}`);
  assert.deepEqual(r.addrs, [], why);
}


describe('embedded DNS', () => {
  let host: TestHost;
  let upstream: ChildProcess;
  before(async () => {
    host = await TestHost.create({ outside: true });
    upstream = await startFakeUpstream(host);
    for (const n of ['dnsnet', 'other']) assert.equal((await host.api('POST', '/networks/create', { Name: n })).status, 201);
    assert.equal((await host.api('POST', '/networks/create', { Name: 'sealed', Internal: true })).status, 201);
  });
  after(async () => {
    upstream.kill();
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  const onNet = (net: string, extra: Record<string, unknown> = {}) => ({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: net }, ...extra });

  it('user-defined networks get 127.0.0.11 with ndots:0; the default bridge does not', async () => {
    const a = await host.runDetached(onNet('dnsnet'));
    assert.match(await execOut(host, a, ['cat', '/etc/resolv.conf']), /^nameserver 127\.0\.0\.11\noptions ndots:0\n$/m);
    const b = await host.runDetached({ Cmd: ['sleep', '300'] });
    assert.doesNotMatch(await execOut(host, b, ['cat', '/etc/resolv.conf']), /127\.0\.0\.11/);
    // The default bridge gets the host's upstream servers (berthd --resolv-conf: the test's fake one).
    assert.match(await execOut(host, b, ['cat', '/etc/resolv.conf']), /^nameserver 10\.200\.0\.2$/m);
    for (const id of [a, b]) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('a default-bridge container connected to a user network starts resolving names, as in Docker', async () => {
    const target = await host.runDetached(onNet('dnsnet'), 'late-target');
    const joiner = await host.runDetached({ Cmd: ['sleep', '300'] });
    // On the default bridge the name goes to the upstream (the test's fake one), which says NXDOMAIN.
    await gone(host, joiner, 'late-target', 'no container names on the default bridge');
    assert.equal((await host.api('POST', '/networks/dnsnet/connect', { Container: joiner })).status, 200);
    assert.match(await execOut(host, joiner, ['cat', '/etc/resolv.conf']), /^nameserver 127\.0\.0\.11$/m);
    const ip = (await host.api('GET', `/containers/${target}/json`)).json.NetworkSettings.Networks.dnsnet.IPAddress;
    assert.deepEqual((await lookup(host, joiner, 'late-target')).addrs, [ip]);
    for (const id of [target, joiner]) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('a renamed container answers to its new name only, however often the old one was asked', async () => {
    const target = await host.runDetached(onNet('dnsnet'), 'before-rename');
    const asker = await host.runDetached(onNet('dnsnet'));
    const ip = (await host.api('GET', `/containers/${target}/json`)).json.NetworkSettings.Networks.dnsnet.IPAddress;
    for (let i = 0; i < 3; i++) assert.deepEqual((await lookup(host, asker, 'before-rename')).addrs, [ip]);
    assert.equal((await host.api('POST', `/containers/${target}/rename?name=after-rename`)).status, 204);
    assert.deepEqual((await lookup(host, asker, 'after-rename')).addrs, [ip]);
    await gone(host, asker, 'before-rename', 'the old name');
    for (const id of [target, asker]) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('answers names, NAME.NETWORK, short ids and PTR, case-insensitively, only on shared networks', async () => {
    const web = await host.runDetached(onNet('dnsnet'), 'web');
    const db = await host.runDetached(onNet('dnsnet'), 'db');
    const stranger = await host.runDetached(onNet('other'), 'stranger');
    const dbIp = (await host.api('GET', `/containers/${db}/json`)).json.NetworkSettings.Networks.dnsnet.IPAddress;
    assert.deepEqual((await lookup(host, web, 'db')).addrs, [dbIp]);
    assert.deepEqual((await lookup(host, web, 'DB')).addrs, [dbIp]);
    assert.deepEqual((await lookup(host, web, 'db.dnsnet')).addrs, [dbIp]);
    assert.deepEqual((await lookup(host, web, db.slice(0, 12))).addrs, [dbIp]);
    assert.match(await execOut(host, web, ['ping', '-c', '1', '-W', '1', 'db']), /1 packets received/);
    const ptr = await execOut(host, web, ['nslookup', dbIp]);
    assert.match(ptr, /db\.dnsnet/);
    // AAAA for an existing name: NOERROR with no data, not NXDOMAIN
    const aaaa = await lookup(host, web, 'db', 'AAAA');
    assert.deepEqual(aaaa.addrs, []);
    assert.equal(aaaa.rcode, 'NOERROR', aaaa.out);
    // a container never learns names from networks it is not on
    await gone(host, stranger, 'db', 'a name on a network the asker is not on');
    // The same probe from the same container does resolve a name on its own network.
    assert.equal((await lookup(host, stranger, 'stranger')).addrs.length, 1);
    for (const id of [web, db, stranger]) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('shared aliases answer with every address, in shuffled order', async () => {
    const ids = [];
    for (let i = 0; i < 3; i++) {
      ids.push(await host.runDetached(onNet('dnsnet', { NetworkingConfig: { EndpointsConfig: { dnsnet: { Aliases: ['search'] } } } })));
    }
    const client = await host.runDetached(onNet('dnsnet'));
    const first = (await lookup(host, client, 'search')).addrs;
    assert.equal(first.length, 3);
    const orders = new Set<string>();
    for (let i = 0; i < 12; i++) orders.add((await lookup(host, client, 'search')).addrs.join(','));
    assert.ok(orders.size > 1, 'round-robin changes the order');
    for (const id of [...ids, client]) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('a name resolves the moment run -d returns and stops the moment rm returns', async () => {
    const client = await host.runDetached(onNet('dnsnet'));
    for (let i = 0; i < 5; i++) {
      const id = await host.runDetached(onNet('dnsnet'), `fresh${i}`);
      assert.equal((await lookup(host, client, `fresh${i}`)).addrs.length, 1, `fresh${i} resolves at once`);
      await host.api('DELETE', `/containers/${id}?force=1`);
      await gone(host, client, `fresh${i}`, `fresh${i} is gone at once`);
    }
    // connect and disconnect change what resolves, at once
    const late = await host.runDetached(onNet('other'), 'late');
    await gone(host, client, 'late', 'not yet connected');
    assert.equal((await host.api('POST', '/networks/dnsnet/connect', { Container: late })).status, 200);
    assert.equal((await lookup(host, client, 'late')).addrs.length, 1);
    assert.equal((await host.api('POST', '/networks/dnsnet/disconnect', { Container: late })).status, 200);
    await gone(host, client, 'late', 'disconnected');
    for (const id of [client, late]) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('forwards other names to the upstream servers, with TCP for truncated answers', async () => {
    const id = await host.runDetached(onNet('dnsnet', { HostConfig: { NetworkMode: 'dnsnet', Dns: ['10.200.0.2'] } }));
    assert.deepEqual((await lookup(host, id, 'outside.test')).addrs, ['10.200.0.99']);
    // the upstream truncates over UDP; berth asks again over TCP and relays the whole answer
    assert.equal((await lookup(host, id, 'big.test')).addrs.length, 20);
    assert.match((await lookup(host, id, 'nosuch.test')).out, /NXDOMAIN/);
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('internal networks never forward', async () => {
    const id = await host.runDetached(onNet('sealed', { HostConfig: { NetworkMode: 'sealed', Dns: ['10.200.0.2'] } }), 'sealed1');
    await gone(host, id, 'outside.test', 'an upstream name on an internal network');
    // The resolver itself answers there: the container's own name resolves.
    assert.equal((await lookup(host, id, 'sealed1')).addrs.length, 1);
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  /** berthd's sockets (`ss` lines with its pid) in the namespace of `pid`, or in the one pinned at `path`. */
  async function berthdSockets(where: { path?: string; pid?: number }, proto: 'u' | 't'): Promise<string[]> {
    const enter = where.pid ? ['-t', String(where.pid), '-n'] : [`--net=${where.path}`];
    const r = await host.inNetns('nsenter', [...enter, 'ss', `-H${proto}lnp`]);
    return r.stdout.split('\n').filter((l) => l.includes(`pid=${host.daemonPid},`));
  }
  const sandboxKey = async (id: string) => (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.SandboxKey as string;

  it('is not an open resolver: its sockets are on 127.0.0.11 inside each container, none on the host', async () => {
    const id = await host.runDetached(onNet('dnsnet'), 'target');
    // In berthd's own namespace (the host's) nothing of berthd's receives datagrams from anyone or
    // listens (its upstream queries go out on connected sockets, which take replies from that server only).
    assert.deepEqual(await berthdSockets({ path: host.netnsPath }, 'u'), []);
    assert.deepEqual(await berthdSockets({ path: host.netnsPath }, 't'), []);
    // Inside the container: one UDP and one TCP socket of berthd's, on 127.0.0.11 only, on one port.
    const udp = await berthdSockets({ path: await sandboxKey(id) }, 'u');
    const tcp = await berthdSockets({ path: await sandboxKey(id) }, 't');
    assert.equal(udp.length, 1, udp.join('\n'));
    assert.equal(tcp.length, 1, tcp.join('\n'));
    const port = /127\.0\.0\.11:(\d+)\s/.exec(udp[0]!)?.[1];
    assert.ok(port && port !== '53', udp[0]);
    assert.match(tcp[0]!, new RegExp(`127\\.0\\.0\\.11:${port}\\s`));
    // The container's own address does not answer on the resolver's port, nor on 53.
    const ip = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.dnsnet.IPAddress as string;
    const probe = (netns: string, dest: string, p: string) => host.inNetns('nsenter', [`--net=${netns}`, process.execPath, '-e', `
        const s = require('dgram').createSocket('udp4');
        const q = Buffer.from('12340100000100000000000006746172676574' + '0000010001', 'hex');
        s.on('message', () => { console.log('answered'); process.exit(0); });
        s.on('error', (e) => { console.log('error ' + e.message); process.exit(0); });
        s.send(q, ${p}, '${dest}');
        setTimeout(() => { console.log('silent'); process.exit(0); }, 1000);`]);
    for (const p of [port, '53']) assert.equal((await probe(host.netnsPath, ip, p)).stdout.trim(), 'silent', `port ${p}`);
    // The same probe, sent where the resolver does listen (127.0.0.11:53 inside the container), is answered.
    assert.equal((await probe(await sandboxKey(id), '127.0.0.11', '53')).stdout.trim(), 'answered');
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('answers over UDP and TCP on 127.0.0.11:53 while a process of the container serves 0.0.0.0:53 itself', async () => {
    const id = await host.runDetached(onNet('dnsnet'), 'selfdns');
    const ip = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.dnsnet.IPAddress as string;
    // Run in the container's namespace: the container's own "server" binds 0.0.0.0:53 (UDP and TCP),
    // then asks 127.0.0.11:53 over both, and the answers must come from berth, not from itself.
    const r = await host.inNetns('nsenter', [`--net=${await sandboxKey(id)}`, process.execPath, '-e', `
      const dgram = require('dgram'), net = require('net');
      const q = Buffer.from('1234010000010000000000000773656c66646e73' + '0000010001', 'hex');
      const ipOf = (m) => m.subarray(m.length - 4).join('.');
      const own = dgram.createSocket('udp4');
      own.on('message', () => console.log('own server asked'));
      const ownTcp = net.createServer((c) => { console.log('own server asked'); c.destroy(); });
      own.bind(53, '0.0.0.0', () => ownTcp.listen(53, '0.0.0.0', () => {
        console.log('bound');
        const u = dgram.createSocket('udp4');
        u.on('message', (m) => {
          console.log('udp ' + ipOf(m));
          const len = Buffer.alloc(2); len.writeUInt16BE(q.length);
          const t = net.connect(53, '127.0.0.11', () => t.write(Buffer.concat([len, q])));
          let buf = Buffer.alloc(0);
          t.on('data', (d) => { buf = Buffer.concat([buf, d]); if (buf.length >= 2 + buf.readUInt16BE(0)) { console.log('tcp ' + ipOf(buf)); process.exit(0); } });
          t.on('error', (e) => { console.log('tcp error ' + e.message); process.exit(0); });
        });
        u.send(q, 53, '127.0.0.11');
      }));
      own.on('error', (e) => { console.log('bind error ' + e.message); process.exit(0); });
      ownTcp.on('error', (e) => { console.log('bind error ' + e.message); process.exit(0); });
      setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000);`]);
    assert.equal(r.stdout.trim(), ['bound', `udp ${ip}`, `tcp ${ip}`].join('\n'));
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('releases the in-namespace sockets on disconnect and stop, and opens them again on connect', async () => {
    const id = await host.runDetached(onNet('dnsnet'), 'released');
    // A process of our own keeps the namespace alive, so we can look inside it after the container stops.
    const holder = spawn('nsenter', [`--net=${await sandboxKey(id)}`, 'sleep', '60']);
    try {
      await waitFor(async () => (await berthdSockets({ pid: holder.pid! }, 'u')).length === 1, 'resolver socket visible through the holder');
      const port = (lines: string[]) => lines.map((l) => /127\.0\.0\.11:(\d+)/.exec(l)?.[1]);
      const rules = async () => (await host.inNetns('nsenter', ['-t', String(holder.pid!), '-n', 'nft', '-a', 'list', 'table', 'ip', 'berth_dns'])).stdout;
      const [portBefore, rulesBefore] = [port(await berthdSockets({ pid: holder.pid! }, 'u')), await rules()];
      assert.equal((await host.api('POST', '/networks/dnsnet/disconnect', { Container: id })).status, 200);
      assert.deepEqual(await berthdSockets({ pid: holder.pid! }, 'u'), []);
      assert.deepEqual(await berthdSockets({ pid: holder.pid! }, 't'), []);
      assert.equal((await host.api('POST', '/networks/dnsnet/connect', { Container: id })).status, 200);
      assert.equal((await berthdSockets({ pid: holder.pid! }, 'u')).length, 1);
      // Opened again on the port the namespace's redirect names: its rules were not rewritten (same handles).
      assert.deepEqual(port(await berthdSockets({ pid: holder.pid! }, 'u')), portBefore);
      assert.equal(await rules(), rulesBefore);
      assert.equal((await lookup(host, id, 'released')).addrs.length, 1);
      assert.equal((await host.api('POST', `/containers/${id}/stop?t=0`)).status, 204);
      assert.deepEqual(await berthdSockets({ pid: holder.pid! }, 'u'), []);
      assert.deepEqual(await berthdSockets({ pid: holder.pid! }, 't'), []);
    } finally {
      holder.kill();
    }
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('opens the resolvers again for running containers when berthd is killed and restarted', async () => {
    const a = await host.runDetached(onNet('dnsnet'), 'survivor1');
    const b = await host.runDetached(onNet('dnsnet'), 'survivor2');
    await host.stopDaemon('SIGKILL');
    await host.startDaemon();
    const ipB = (await host.api('GET', `/containers/${b}/json`)).json.NetworkSettings.Networks.dnsnet.IPAddress as string;
    assert.deepEqual((await lookup(host, a, 'survivor2')).addrs, [ipB]);
    // exactly one pair, the new daemon's (the old ones died with the old process)
    assert.equal((await berthdSockets({ path: await sandboxKey(a) }, 'u')).length, 1);
    assert.equal((await berthdSockets({ path: await sandboxKey(a) }, 't')).length, 1);
    for (const id of [a, b]) await host.api('DELETE', `/containers/${id}?force=1`);
  });
});
