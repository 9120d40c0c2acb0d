import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { execOut, TestHost, waitFor, fetchIn, probePing } from './harness.js';

/** A TCP server on the fake outside host that tells each client the address it came from. */
const WHO_AM_I = "require('net').createServer((s) => s.end(s.remoteAddress + '\\n')).listen(8080, 'fd99::2', () => console.log('ready'))";

describe('dual-stack (IPv6) bridge networks', () => {
  let host: TestHost;
  let server: ChildProcess;
  before(async () => {
    host = await TestHost.create({ outside: true });
    // IPv6 on the link to the fake outside host; forwarding is the test namespace's own to turn on.
    await host.inNetns('ip', ['addr', 'add', 'fd99::1/64', 'dev', 'btvo0', 'nodad']);
    await host.inOutside('ip', ['addr', 'add', 'fd99::2/64', 'dev', 'btvo1', 'nodad']);
    await host.inNetns('sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
    server = spawn('nsenter', [`--net=/run/netns/${host.outside}`, process.execPath, '-e', WHO_AM_I]);
    let out = '';
    server.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    await waitFor(async () => out.includes('ready'), 'outside IPv6 server');
  });
  after(async () => {
    server.kill();
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  const create = (body: Record<string, unknown>) => host.api('POST', '/networks/create', body);

  it('creates dual-stack networks with a given or an automatic unique-local /64, and refuses bad ones', async () => {
    const r = await create({ Name: 'dual', EnableIPv6: true, IPAM: { Config: [{ Subnet: '10.60.0.0/24' }, { Subnet: 'fd00:60::/64' }] } });
    assert.equal(r.status, 201, r.body);
    const n = (await host.api('GET', '/networks/dual')).json;
    assert.equal(n.EnableIPv6, true);
    assert.deepEqual(n.IPAM.Config, [{ Subnet: '10.60.0.0/24', Gateway: '10.60.0.1' }, { Subnet: 'fd00:60::/64', Gateway: 'fd00:60::1' }]);
    assert.equal((await create({ Name: 'auto6', EnableIPv6: true })).status, 201);
    const auto = (await host.api('GET', '/networks/auto6')).json.IPAM.Config[1];
    assert.match(auto.Subnet, /^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}(:[0-9a-f]{1,4})?::\/64$/);
    const overlap = await create({ Name: 'clash', EnableIPv6: true, IPAM: { Config: [{ Subnet: 'fd00:60::/48' }] } });
    assert.equal(overlap.status, 403);
    assert.match(overlap.json.message, /overlaps/);
    // Docker 20.10 records an IPv6 subnet given without EnableIPv6, and the network stays IPv4-only.
    const noFlag = await create({ Name: 'noflag', IPAM: { Config: [{ Subnet: 'fd00:70::/64' }] } });
    assert.equal(noFlag.status, 201);
    const rec = (await host.api('GET', '/networks/noflag')).json;
    assert.equal(rec.EnableIPv6, false);
    assert.ok(rec.IPAM.Config.some((c: { Subnet: string }) => c.Subnet === 'fd00:70::/64'));
    assert.equal((await host.api('DELETE', '/networks/noflag')).status, 204);
    assert.equal((await host.api('GET', '/networks/clash')).status, 404);
    assert.equal((await host.api('DELETE', '/networks/auto6')).status, 204);
  });

  it('containers get IPv6 addresses, reach each other by address and by name (AAAA), and masquerade outbound', async () => {
    const a = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'dual' } }, 'v6a');
    const b = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'dual' }, NetworkingConfig: { EndpointsConfig: { dual: { IPAMConfig: { IPv6Address: 'fd00:60::99' } } } } }, 'v6b');
    const ia = (await host.api('GET', `/containers/${a}/json`)).json.NetworkSettings.Networks.dual;
    assert.equal(ia.GlobalIPv6Address, 'fd00:60::2');
    assert.equal(ia.GlobalIPv6PrefixLen, 64);
    assert.equal(ia.IPv6Gateway, 'fd00:60::1');
    const ib = (await host.api('GET', `/containers/${b}/json`)).json.NetworkSettings.Networks.dual;
    assert.equal(ib.GlobalIPv6Address, 'fd00:60::99');
    assert.deepEqual(ib.IPAMConfig, { IPv6Address: 'fd00:60::99' });
    const members = (await host.api('GET', '/networks/dual')).json.Containers;
    assert.equal(members[a].IPv6Address, 'fd00:60::2/64');
    assert.match(await execOut(host, b, ['ping6', '-c', '1', '-W', '2', 'fd00:60::2']), /1 packets received/);
    assert.match(await execOut(host, b, ['nslookup', '-type=AAAA', 'v6a']), /Address: fd00:60::2/);
    assert.match(await execOut(host, b, ['ping6', '-c', '1', '-W', '2', 'v6a']), /1 packets received/);
    assert.match(await execOut(host, a, ['cat', '/etc/hosts']), /^fd00:60::2\s/m);
    // The bridge carries IPv6 between them, while its ports (the veths' host ends) have no IPv6 of
    // their own: no link-local address or route for the kernel to walk at each link's removal.
    const ports = JSON.parse((await host.inNetns('ip', ['-j', 'link', 'show', 'type', 'veth'])).stdout) as Array<{ ifname: string; master?: string }>;
    assert.ok(ports.filter((p) => p.master).length >= 2, JSON.stringify(ports));
    for (const p of ports.filter((p) => p.master)) {
      assert.equal((await host.inNetns('ip', ['-6', '-o', 'addr', 'show', 'dev', p.ifname])).stdout.trim(), '', `IPv6 on bridge port ${p.ifname}`);
      assert.equal((await host.inNetns('ip', ['-6', 'route', 'show', 'table', 'all', 'dev', p.ifname])).stdout.trim(), '', `IPv6 routes of bridge port ${p.ifname}`);
    }
    // The outside host sees the test host's address, not the container's.
    assert.equal((await execOut(host, a, ['nc', 'fd99::2', '8080'])).trim(), 'fd99::1');
    const taken = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['true'], HostConfig: { NetworkMode: 'dual' }, NetworkingConfig: { EndpointsConfig: { dual: { IPAMConfig: { IPv6Address: 'fd00:60::99' } } } } });
    const start = await host.api('POST', `/containers/${taken.json.Id}/start`);
    assert.equal(start.status, 403);
    assert.match(start.json.message, /Address already in use/);
    for (const id of [a, b, taken.json.Id]) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('publishes ports on IPv6 too for dual-stack containers, kernel NAT both ways; ::1 is refused plainly', async () => {
    const web = await host.runDetached({
      Cmd: ['sh', '-c', 'mkdir /www && echo v6-page > /www/index.html && exec httpd -f -p 80 -h /www'],
      HostConfig: { NetworkMode: 'dual', PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8700' }], '81/tcp': [{ HostIp: '::', HostPort: '8701' }] } },
    });
    const ports = (await host.api('GET', `/containers/${web}/json`)).json.NetworkSettings.Ports;
    assert.deepEqual(ports['80/tcp'], [{ HostIp: '0.0.0.0', HostPort: '8700' }, { HostIp: '::', HostPort: '8700' }]);
    assert.deepEqual(ports['81/tcp'], [{ HostIp: '::', HostPort: '8701' }]);
    const fetch6 = (where: 'outside' | 'host', url: string) => fetchIn(where === 'host' ? host.netnsPath : `/run/netns/${host.outside}`, url);
    await waitFor(async () => (await fetch6('outside', 'http://[fd99::1]:8700/')).body === 'v6-page\n', 'IPv6 published port from outside');
    assert.equal((await fetch6('host', 'http://[fd99::1]:8700/')).body, 'v6-page\n', 'from the host itself');
    assert.equal((await fetch6('outside', 'http://10.200.0.1:8700/')).body, 'v6-page\n', 'and on IPv4');
    assert.deepEqual(await fetch6('outside', 'http://10.200.0.1:8701/'), { error: 'ECONNREFUSED' }, '[::]:8701 is IPv6 only');
    const loop = await host.api('POST', '/containers/create', { Image: 'busybox', HostConfig: { NetworkMode: 'dual', PortBindings: { '80/tcp': [{ HostIp: '::1', HostPort: '8702' }] } } });
    assert.equal(loop.status, 400);
    assert.match(loop.json.message, /cannot forward IPv6 loopback/);
    // An IPv4-only container cannot take an IPv6 binding: the start fails and publishes nothing.
    const v4only = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '::', HostPort: '8703' }] } } });
    const start = await host.api('POST', `/containers/${v4only.json.Id}/start`);
    assert.equal(start.status, 400);
    assert.match(start.json.message, /no IPv6 address/);
    for (const id of [web, v4only.json.Id]) await host.api('DELETE', `/containers/${id}?force=1`);
    assert.doesNotMatch((await host.inNetns('nft', ['list', 'table', 'ip6', 'berth'])).stdout, /8700|8701/, 'the elements went with the container');
  });

  it('isolates dual-stack networks from each other over IPv6 too, and connect/disconnect add and release addresses', async () => {
    assert.equal((await create({ Name: 'dual2', EnableIPv6: true, IPAM: { Config: [{ Subnet: 'fd00:61::/64' }] } })).status, 201);
    const a = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'dual' } });
    const other = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'dual2' } });
    const ipA = (await host.api('GET', `/containers/${a}/json`)).json.NetworkSettings.Networks.dual.GlobalIPv6Address;
    assert.equal(await probePing(host, other, 'fd00:61::1', { v6: true }), 'reached', 'its own gateway');
    assert.equal(await probePing(host, other, ipA, { v6: true }), 'lost', 'the other network');
    assert.equal((await host.api('POST', '/networks/dual/connect', { Container: other })).status, 200);
    assert.match(await execOut(host, other, ['ping6', '-c', '1', '-W', '2', ipA]), /1 packets received/);
    const joined = (await host.api('GET', `/containers/${other}/json`)).json.NetworkSettings.Networks.dual.GlobalIPv6Address;
    assert.match(await execOut(host, other, ['ip', '-6', 'addr', 'show', 'dev', 'eth1']), new RegExp(`inet6 ${joined}/64`));
    assert.equal((await host.api('POST', '/networks/dual/disconnect', { Container: other })).status, 200);
    const again = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'dual' }, NetworkingConfig: { EndpointsConfig: { dual: { IPAMConfig: { IPv6Address: joined } } } } });
    assert.equal((await host.api('GET', `/containers/${again}/json`)).json.NetworkSettings.Networks.dual.GlobalIPv6Address, joined, 'the address was released');
    for (const id of [a, other, again]) await host.api('DELETE', `/containers/${id}?force=1`);
    for (const n of ['dual', 'dual2']) assert.equal((await host.api('DELETE', `/networks/${n}`)).status, 204);
    // With no dual-stack network left, berth's ip6 table is gone.
    assert.notEqual((await host.inNetns('nft', ['list', 'table', 'ip6', 'berth'])).code, 0);
  });
});
