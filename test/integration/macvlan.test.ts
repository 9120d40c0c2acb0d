import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { run, runOk } from '../../src/util/exec.js';
import { execOut, lookup as probeLookup, TestHost, waitFor } from './harness.js';

/**
 * The macvlan driver on a "physical" link the test makes: a veth pair whose one end (bmlan0) stays
 * in the test host as the parent, and whose other end sits in a second namespace playing another
 * machine on the same wire (192.168.77.1, also the network's gateway). There are no dummy links
 * on these kernels, hence the veth.
 */

const SUBNET = '192.168.77.0/24';

/** A DNS query over TCP to 127.0.0.11:53 from inside a namespace (busybox nslookup has no TCP). */
const TCP_QUERY = (name: string) => `
const net = require('net'), dns = require(${JSON.stringify(new URL('../../../node_modules/dns-packet/index.js', import.meta.url).pathname)});
const q = dns.encode({ type: 'query', id: 7, flags: dns.RECURSION_DESIRED, questions: [{ type: 'A', name: ${JSON.stringify(name)} }] });
const len = Buffer.alloc(2); len.writeUInt16BE(q.length);
const s = net.connect(53, '127.0.0.11', () => s.write(Buffer.concat([len, q])));
let buf = Buffer.alloc(0);
s.on('data', (d) => { buf = Buffer.concat([buf, d]); if (buf.length >= 2 + buf.readUInt16BE(0)) {
  console.log(dns.decode(buf.subarray(2)).answers.map((a) => a.data).join(',')); s.destroy(); } });
s.on('error', (e) => { console.log('error ' + e.message); });
setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000).unref();`;
const MACHINE = '192.168.77.1';

/**
 * The A records for `name`. None only when berth's resolver did not know the name and forwarded it:
 * this test host has no upstream server, so the forward fails with SERVFAIL at once (a timeout or a
 * broken probe fails the test).
 */
async function lookup(host: TestHost, id: string, name: string): Promise<string[]> {
  const r = await probeLookup(host, id, name);
  if (r.addrs.length === 0) assert.equal(r.rcode, 'SERVFAIL', `${name}: ${r.out}`);
  return r.addrs.filter((a) => a !== '127.0.0.11');
}

/** Links in the test host other than lo, the harness's, the test's parent and the default bridge: what berth left. */
async function berthLinks(host: TestHost): Promise<string[]> {
  const r = await runOk('ip', ['-n', host.netns, '-o', 'link', 'show']);
  return r.split('\n').filter(Boolean).map((l) => l.split(': ')[1]!.split('@')[0]!)
    .filter((n) => n !== 'lo' && !n.startsWith('btv') && n !== 'bmlan0' && n !== 'berth0');
}

async function kernelHas(type: string, host: TestHost): Promise<boolean> {
  const args = type === 'vlan' ? ['link', 'add', 'link', 'bmlan0', 'name', 'bmprobe', 'type', 'vlan', 'id', '4000'] : ['link', 'add', 'link', 'bmlan0', 'name', 'bmprobe', 'type', type];
  const r = await run('ip', ['-n', host.netns, ...args]);
  if (r.code === 0) await run('ip', ['-n', host.netns, 'link', 'del', 'bmprobe']);
  return r.code === 0;
}

describe('macvlan networks', () => {
  let host: TestHost;
  let machine: string;
  const inMachine = (cmd: string, args: string[]) => run('nsenter', [`--net=/run/netns/${machine}`, cmd, ...args]);

  before(async () => {
    host = await TestHost.create();
    machine = `${host.netns}m`;
    await runOk('ip', ['netns', 'add', machine]);
    await runOk('ip', ['-n', host.netns, '-batch', '-'], {
      input: [`link add bmlan0 mtu 1400 type veth peer name bmlan1 mtu 1400 netns ${machine}`, 'link set bmlan0 up'].join('\n') + '\n',
    });
    await runOk('ip', ['-n', machine, '-batch', '-'], {
      input: ['link set lo up', `addr add ${MACHINE}/24 dev bmlan1`, 'link set bmlan1 up'].join('\n') + '\n',
    });
  });

  after(async () => {
    if (!host) return;
    await run('ip', ['-n', host.netns, 'link', 'del', 'bmlan0']);
    await run('ip', ['netns', 'del', machine]);
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  const create = (body: Record<string, unknown>) => host.api('POST', '/networks/create', { Driver: 'macvlan', ...body });
  const onNet = (net: string, extra: Record<string, unknown> = {}) => ({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: net }, ...extra });
  const rmAll = async (ids: string[]) => { for (const id of ids) await host.api('DELETE', `/containers/${id}?force=1`); };

  it('dual stack: IPv6 addresses on the parent\'s link, by address and by name (AAAA), to and from the other machine', async () => {
    await inMachine('ip', ['addr', 'add', 'fd77::1/64', 'dev', 'bmlan1', 'nodad']);
    const r = await create({ Name: 'pub6', EnableIPv6: true, Options: { parent: 'bmlan0' }, IPAM: { Config: [{ Subnet: '192.168.76.0/24', Gateway: '192.168.76.1' }, { Subnet: 'fd77::/64', Gateway: 'fd77::1' }] } });
    assert.equal(r.status, 201, r.body);
    const a = await host.runDetached(onNet('pub6'), 'mv6a');
    const b = await host.runDetached(onNet('pub6'));
    const ep = (await host.api('GET', `/containers/${a}/json`)).json.NetworkSettings.Networks.pub6;
    assert.equal(ep.GlobalIPv6Address, 'fd77::2');
    assert.equal(ep.IPv6Gateway, 'fd77::1');
    assert.match(await execOut(host, b, ['ping6', '-c', '1', '-W', '2', 'mv6a']), /1 packets received/);
    assert.match(await execOut(host, b, ['nslookup', '-type=AAAA', 'mv6a']), /Address: fd77::2/);
    assert.match(await execOut(host, a, ['ping6', '-c', '1', '-W', '2', 'fd77::1']), /1 packets received/);
    assert.equal((await inMachine('busybox', ['ping6', '-c', '1', '-W', '2', 'fd77::2'])).code, 0, 'the other machine reaches the container');
    await rmAll([a, b]);
    assert.equal((await host.api('DELETE', '/networks/pub6')).status, 204);
    await inMachine('ip', ['addr', 'del', 'fd77::1/64', 'dev', 'bmlan1']);
  });

  it('containers reach each other by IP and by name, reach the other machine, with their own MACs', async () => {
    const r = await create({ Name: 'pub', Options: { parent: 'bmlan0' }, IPAM: { Config: [{ Subnet: SUBNET, Gateway: MACHINE }] } });
    assert.equal(r.status, 201, r.body);
    const net = (await host.api('GET', '/networks/pub')).json;
    assert.equal(net.Driver, 'macvlan');
    assert.deepEqual(net.Options, { parent: 'bmlan0' });
    assert.deepEqual(net.IPAM.Config, [{ Subnet: SUBNET, Gateway: MACHINE }]);

    const a = await host.runDetached(onNet('pub', { NetworkingConfig: { EndpointsConfig: { pub: { IPAMConfig: { IPv4Address: '192.168.77.10' } } } } }), 'mva');
    const b = await host.runDetached(onNet('pub'), 'mvb');
    const ep = async (id: string) => (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.pub;
    const [ea, eb] = [await ep(a), await ep(b)];
    assert.equal(ea.IPAddress, '192.168.77.10');
    assert.equal(ea.MacAddress, '02:42:c0:a8:4d:0a');
    assert.equal(ea.Gateway, MACHINE);
    assert.notEqual(eb.MacAddress, ea.MacAddress);

    // The interface is a macvlan child with the MAC inspect shows, and the default route is the gateway.
    const link = await execOut(host, a, ['ip', '-o', 'link', 'show', 'eth0']);
    assert.match(link, /02:42:c0:a8:4d:0a/);
    assert.match(await execOut(host, a, ['ip', 'route']), new RegExp(`default via ${MACHINE.replace(/\./g, '\\.')} dev eth0`));

    assert.match(await execOut(host, a, ['ping', '-c', '1', '-W', '2', eb.IPAddress]), /1 packets received/);
    assert.match(await execOut(host, a, ['ping', '-c', '1', '-W', '2', 'mvb']), /1 packets received/);
    assert.deepEqual(await lookup(host, b, 'mva'), ['192.168.77.10']);
    assert.deepEqual(await lookup(host, b, 'MVA.pub'), ['192.168.77.10']);
    assert.match(await execOut(host, a, ['cat', '/etc/resolv.conf']), /^nameserver 127\.0\.0\.11$/m);
    const sandboxKey = (await host.api('GET', `/containers/${b}/json`)).json.NetworkSettings.SandboxKey as string;
    const tcp = await run('nsenter', [`--net=${sandboxKey}`, process.execPath, '-e', TCP_QUERY('mva')]);
    assert.equal(tcp.stdout.trim(), '192.168.77.10', tcp.stderr);
    // The resolver listens only inside the containers' namespaces, never on the host's addresses.
    const ss = await host.inNetns('ss', ['-Htulnp']);
    assert.doesNotMatch(ss.stdout, /192\.168\.77\.|127\.0\.0\.11/);

    // The other machine on the wire sees each container at its own MAC.
    assert.match(await execOut(host, a, ['ping', '-c', '1', '-W', '2', MACHINE]), /1 packets received/);
    assert.match(await execOut(host, b, ['ping', '-c', '1', '-W', '2', MACHINE]), /1 packets received/);
    const neigh = (await inMachine('ip', ['neigh', 'show', 'dev', 'bmlan1'])).stdout;
    assert.match(neigh, /192\.168\.77\.10 lladdr 02:42:c0:a8:4d:0a/);
    assert.match(neigh, new RegExp(`${eb.IPAddress.replace(/\./g, '\\.')} lladdr ${eb.MacAddress}`));
    assert.match((await inMachine('busybox', ['ping', '-c', '1', '-W', '2', '192.168.77.10'])).stdout, /1 packets received/);

    // Nothing of berth's on the host side: the children live in the containers' namespaces.
    assert.deepEqual(await berthLinks(host), []);
    await rmAll([a, b]);
    // Removal takes the child off the wire at once: the address no longer answers.
    const after = await inMachine('busybox', ['ping', '-c', '1', '-W', '1', '192.168.77.10']);
    assert.equal(after.code, 1, after.stdout + after.stderr);
    assert.match(after.stdout, /100% packet loss/);
  });

  it('resolves names again after berthd is killed and restarted', async () => {
    const a = await host.runDetached(onNet('pub'), 'keep1');
    const b = await host.runDetached(onNet('pub'), 'keep2');
    await host.stopDaemon('SIGKILL');
    await host.startDaemon();
    const ipB = (await host.api('GET', `/containers/${b}/json`)).json.NetworkSettings.Networks.pub.IPAddress;
    assert.deepEqual(await lookup(host, a, 'keep2'), [ipB]);
    await rmAll([a, b]);
  });

  it('connects and disconnects a running bridge container', async () => {
    assert.equal((await host.api('POST', '/networks/create', { Name: 'br1' })).status, 201);
    const m = await host.runDetached(onNet('pub'), 'onmac');
    const c = await host.runDetached(onNet('br1'), 'onbr');
    assert.equal((await host.api('POST', '/networks/pub/connect', { Container: c })).status, 200);
    assert.match(await execOut(host, c, ['ip', '-o', 'link']), /eth1@/);
    assert.match(await execOut(host, c, ['ping', '-c', '1', '-W', '2', 'onmac']), /1 packets received/);
    assert.equal((await host.api('POST', '/networks/pub/disconnect', { Container: c })).status, 200);
    assert.doesNotMatch(await execOut(host, c, ['ip', '-o', 'link']), /eth1@/);
    assert.deepEqual(await lookup(host, c, 'onmac'), []);
    // The other way round: a macvlan container joining a bridge moves to the bridge's resolver and back.
    const onbrIp = (await host.api('GET', `/containers/${c}/json`)).json.NetworkSettings.Networks.br1.IPAddress;
    assert.equal((await host.api('POST', '/networks/br1/connect', { Container: m })).status, 200);
    assert.deepEqual(await lookup(host, m, 'onbr'), [onbrIp]);
    assert.equal((await host.api('POST', '/networks/br1/disconnect', { Container: m })).status, 200);
    assert.deepEqual(await lookup(host, m, 'onbr'), []);
    assert.deepEqual(await lookup(host, m, 'onmac'), [(await host.api('GET', `/containers/${m}/json`)).json.NetworkSettings.Networks.pub.IPAddress]);
    await rmAll([m, c]);
    assert.equal((await host.api('DELETE', '/networks/br1')).status, 204);
  });

  it('an internal network without a parent gets one of berth\'s, removed with it', async () => {
    const r = await create({ Name: 'sealed', Internal: true, IPAM: { Config: [{ Subnet: '10.77.0.0/24' }] } });
    assert.equal(r.status, 201, r.body);
    const links = await berthLinks(host);
    assert.equal(links.length, 2, links.join(' '));
    assert.ok(links.every((l) => /^bm[ij][0-9a-f]{11}$/.test(l)), links.join(' '));
    const a = await host.runDetached(onNet('sealed'), 'in1');
    const b = await host.runDetached(onNet('sealed'), 'in2');
    assert.match(await execOut(host, a, ['ping', '-c', '1', '-W', '2', 'in2']), /1 packets received/);
    assert.doesNotMatch(await execOut(host, a, ['ip', 'route']), /default/);
    await rmAll([a, b]);
    assert.equal((await host.api('DELETE', '/networks/sealed')).status, 204);
    assert.deepEqual(await berthLinks(host), []);
  });

  it('refuses bad networks with clear errors and leaves nothing behind', async () => {
    const cases: Array<[Record<string, unknown>, number, RegExp]> = [
      [{ Name: 'e1', IPAM: { Config: [{ Subnet: '10.78.0.0/24' }] } }, 400, /need a parent interface/],
      [{ Name: 'e2', Options: { parent: 'bmnope0' }, IPAM: { Config: [{ Subnet: '10.78.0.0/24' }] } }, 400, /-o parent interface was not found on the host: bmnope0/],
      [{ Name: 'e3', Options: { parent: 'bmlan0' } }, 400, /need a subnet/],
      [{ Name: 'e4', Options: { parent: 'bmlan0' }, IPAM: { Config: [{ Subnet: '192.168.77.128/25' }] } }, 403, /network dm-[0-9a-f]{12} is already using parent interface bmlan0 with an overlapping subnet/],
      [{ Name: 'e5', Options: { parent: 'bmlan0', macvlan_mode: 'sideways' }, IPAM: { Config: [{ Subnet: '10.78.0.0/24' }] } }, 400, /requested macvlan mode 'sideways' is not valid/],
      [{ Name: 'e6', Options: { parent: 'lo' }, IPAM: { Config: [{ Subnet: '10.78.0.0/24' }] } }, 400, /loopback interface is not a valid macvlan parent link/],
      [{ Name: 'e7', Options: { parent: 'bmlan0', macvlan_mode: 'passthru' }, IPAM: { Config: [{ Subnet: '10.78.0.0/24' }] } }, 403, /cannot use mode passthru/],
      [{ Name: 'e8', Options: { parent: 'bmlan0', 'com.docker.network.driver.mtu': '9000' }, IPAM: { Config: [{ Subnet: '10.78.0.0/24' }] } }, 400, /cannot exceed its parent's \(1400\)/],
    ];
    for (const [body, status, message] of cases) {
      const r = await create(body);
      assert.equal(r.status, status, `${body.Name}: ${r.body}`);
      assert.match(r.json.message, message);
    }
    // A second network on the same parent with its own subnet is fine.
    assert.equal((await create({ Name: 'pub2', Options: { parent: 'bmlan0', macvlan_mode: 'private' }, IPAM: { Config: [{ Subnet: '192.168.78.0/24' }] } })).status, 201);
    assert.equal((await host.api('DELETE', '/networks/pub2')).status, 204);
    if (!(await kernelHas('ipvlan', host))) {
      const r = await create({ Name: 'ipv', Driver: 'ipvlan', Options: { parent: 'bmlan0' }, IPAM: { Config: [{ Subnet: '10.79.0.0/24' }] } });
      assert.equal(r.status, 400, r.body);
      assert.match(r.json.message, /no ipvlan support/);
    }
    const names = ((await host.api('GET', '/networks')).json as Array<{ Name: string }>).map((n) => n.Name).sort();
    assert.deepEqual(names, ['bridge', 'host', 'none', 'pub']);
    assert.deepEqual(await berthLinks(host), []);
  });

  it('makes a VLAN sub-interface parent on demand and removes it with the last network', async () => {
    if (!(await kernelHas('vlan', host))) {
      // These kernels have no 802.1q: the error says so and nothing is left.
      const r = await create({ Name: 'v10', Options: { parent: 'bmlan0.10' }, IPAM: { Config: [{ Subnet: '10.80.0.0/24' }] } });
      assert.equal(r.status, 400, r.body);
      assert.match(r.json.message, /bmlan0\.10: this kernel has no 802\.1q VLAN support/);
      assert.equal((await host.api('GET', '/networks/v10')).status, 404);
      assert.deepEqual(await berthLinks(host), []);
      return;
    }
    assert.equal((await create({ Name: 'v10', Options: { parent: 'bmlan0.10' }, IPAM: { Config: [{ Subnet: '10.80.0.0/24' }] } })).status, 201);
    assert.equal((await create({ Name: 'v10b', Options: { parent: 'bmlan0.10' }, IPAM: { Config: [{ Subnet: '10.81.0.0/24' }] } })).status, 201);
    assert.deepEqual(await berthLinks(host), ['bmlan0.10']);
    const id = await host.runDetached(onNet('v10'));
    assert.match(await execOut(host, id, ['ip', '-o', 'addr']), /10\.80\.0\.2\/24/);
    await rmAll([id]);
    assert.equal((await host.api('DELETE', '/networks/v10')).status, 204);
    assert.deepEqual(await berthLinks(host), ['bmlan0.10']);
    assert.equal((await host.api('DELETE', '/networks/v10b')).status, 204);
    assert.deepEqual(await berthLinks(host), []);
  });

  it('works from the docker CLI, and the network goes away cleanly', async () => {
    const r = await host.docker(['network', 'create', '-d', 'macvlan', '--subnet', '192.168.79.0/24', '--ip-range', '192.168.79.64/26', '--aux-address', 'printer=192.168.79.64', '-o', 'parent=bmlan0', 'cli']);
    assert.equal(r.code, 0, r.stderr);
    const run1 = await host.docker(['run', '-d', '--network', 'cli', '--name', 'clic', 'busybox', 'sleep', '300']);
    assert.equal(run1.code, 0, run1.stderr);
    const ip = (await host.docker(['inspect', '-f', '{{.NetworkSettings.Networks.cli.IPAddress}}', 'clic'])).stdout.trim();
    assert.equal(ip, '192.168.79.65');
    assert.match((await host.docker(['network', 'ls', '--filter', 'driver=macvlan', '--format', '{{.Name}}'])).stdout, /^cli$/m);
    await waitFor(async () => (await host.docker(['rm', '-f', 'clic'])).code === 0, 'rm');
    assert.equal((await host.docker(['network', 'rm', 'cli'])).code, 0);
    assert.equal((await host.api('DELETE', '/networks/pub')).status, 204);
    assert.deepEqual(await berthLinks(host), []);
  });
});
