import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetchIn, lookup, probePing, TestHost, waitFor } from './harness.js';

/**
 * CNI consumed: cni networks on Debian's reference plugins (containernetworking-plugins in
 * /usr/lib/cni), their configuration lists in a temp directory given to berthd with
 * --cni-conf-dir (never /etc/cni), host-local's reservations in a temp directory too. The plugins
 * run as berthd's children, inside the test host's namespace, so their bridge and iptables rules
 * are made there and nowhere else.
 */

const PLUGINS = '/usr/lib/cni';
const BRIDGE = 'cnibr0';

function conflist(dir: string, name: string, subnet: string, extra: unknown[] = []): unknown {
  return {
    cniVersion: '1.0.0', name,
    plugins: [
      {
        type: 'bridge', bridge: BRIDGE, isGateway: true, ipMasq: true,
        ipam: { type: 'host-local', ranges: [[{ subnet }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(dir, 'ipam') },
      },
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
      { type: 'firewall', backend: 'iptables' },
      ...extra,
    ],
  };
}

describe('cni: containers on CNI configuration lists (Debian reference plugins)', { skip: existsSync(join(PLUGINS, 'bridge')) ? false : `${PLUGINS}/bridge is missing: scripts/setup.sh installs containernetworking-plugins` }, () => {
  let host: TestHost;
  let dir: string;
  const ok = async (args: string[]) => {
    const r = await host.docker(args);
    assert.equal(r.code, 0, `docker ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const rules = async () => (await host.inNetns('nft', ['list', 'ruleset'])).stdout;
  const reservations = async () => (await fs.readdir(join(dir, 'ipam', 'cnitest')).catch(() => [] as string[])).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  const veths = async () => (await host.inNetns('ip', ['-o', 'link', 'show', 'master', BRIDGE])).stdout.split('\n').filter(Boolean).length;

  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-cni-'));
    await fs.mkdir(join(dir, 'net.d'));
    await fs.writeFile(join(dir, 'net.d', '10-test.conflist'), JSON.stringify(conflist(dir, 'cnitest', '10.77.0.0/24')));
    // A list whose last plugin fails ADD (a sysctl that does not exist): what the first ones made must go.
    await fs.writeFile(join(dir, 'broken.conflist'), JSON.stringify(conflist(dir, 'cnitest', '10.77.0.0/24', [{ type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.no_such_knob': '1' } }])));
    await fs.writeFile(join(dir, 'missing.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'missing', plugins: [{ type: 'no-such-plugin' }] }));
    await fs.writeFile(join(dir, 'old.conflist'), JSON.stringify({ cniVersion: '0.2.0', name: 'old', plugins: [{ type: 'bridge' }] }));
    host = await TestHost.create({ daemonArgs: ['--cni-conf-dir', join(dir, 'net.d'), '--cni-plugin-dir', PLUGINS] });
  });

  after(async () => {
    if (!host) return;
    await host.docker(['rm', '-f', 'c1', 'c2', 'c3']);
    await host.docker(['network', 'rm', 'cn', 'cnb']);
    // The reference plugins keep what is shared by every container of a list: the bridge plugin its
    // bridge, iptables its tables and the CNI chains in them (only per-container rules go at DEL,
    // which the test checks). They live in the test host's namespace only, and go here.
    await host.inNetns('ip', ['link', 'del', BRIDGE]);
    for (const t of ['ip nat', 'ip filter', 'ip mangle', 'ip6 nat', 'ip6 filter', 'ip6 mangle']) await host.inNetns('nft', ['delete', 'table', ...t.split(' ')]);
    const leaks = await host.destroy();
    await fs.rm(dir, { recursive: true, force: true });
    assert.deepEqual(leaks, []);
  });

  it('refuses what cannot work with the reason: no list, a missing plugin, an old version, a subnet', async () => {
    let r = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'cni' });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /cni\.conflist=NAME/);
    r = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'cni', Options: { 'cni.conflist': 'nope' } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /CNI configuration nope not found in .*net\.d/);
    r = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'cni', Options: { 'cni.conflist': join(dir, 'missing.conflist') } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /failed to find plugin "no-such-plugin" in path \[\/usr\/lib\/cni\]/);
    r = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'cni', Options: { 'cni.conflist': join(dir, 'old.conflist') } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /CNI version 0\.2\.0 .* not one berth speaks/);
    r = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'cni', Options: { 'cni.conflist': 'cnitest' }, IPAM: { Config: [{ Subnet: '10.9.0.0/24' }] } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /take their addresses from the driver's own IPAM/);
    assert.equal((await host.api('GET', '/networks/x')).status, 404);
  });

  it('runs containers on the list: addresses and routes in inspect, names by the embedded DNS, -p through portmap', async () => {
    await ok(['network', 'create', '-d', 'cni', '-o', 'cni.conflist=cnitest', 'cn']);
    const net = (await host.api('GET', '/networks/cn')).json;
    assert.equal(net.Driver, 'cni');
    assert.deepEqual(net.IPAM.Config, [{ Subnet: '10.77.0.0/24' }]);
    await ok(['run', '-d', '--name', 'c1', '--network', 'cn', '-p', '8080:80', 'busybox', 'httpd', '-f', '-p', '80', '-h', '/etc']);
    await ok(['run', '-d', '--name', 'c2', '--network', 'cn', 'busybox', 'sleep', '300']);
    const ep = (await host.api('GET', '/containers/c1/json')).json.NetworkSettings.Networks.cn;
    assert.match(ep.IPAddress, /^10\.77\.0\.\d+$/);
    assert.equal(ep.IPPrefixLen, 24);
    assert.equal(ep.Gateway, '10.77.0.1');
    assert.match(ep.MacAddress, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    assert.equal(ep.CNI.cniVersion, '1.0.0');
    assert.deepEqual(ep.CNI.routes, [{ dst: '0.0.0.0/0' }]);
    // The kernel agrees with inspect: the address is on the container's eth0, the route through the list's gateway.
    const pid = (await host.api('GET', '/containers/c1/json')).json.State.Pid;
    const addr = await host.inNetns('nsenter', ['-t', String(pid), '-n', 'ip', '-o', '-4', 'addr', 'show', 'eth0']);
    assert.match(addr.stdout, new RegExp(`inet ${ep.IPAddress.replace(/\./g, '\\.')}/24`));
    const route = await host.inNetns('nsenter', ['-t', String(pid), '-n', 'ip', 'route', 'show', 'default']);
    assert.match(route.stdout, /^default via 10\.77\.0\.1 dev eth0/);
    const c2j = (await host.api('GET', '/containers/c2/json')).json;
    assert.deepEqual((await reservations()).sort(), [ep.IPAddress, c2j.NetworkSettings.Networks.cn.IPAddress].sort());

    const c2 = c2j.Id as string;
    const found = await lookup(host, c2, 'c1');
    assert.equal(found.rcode, 'NOERROR', found.out);
    assert.deepEqual(found.addrs, [ep.IPAddress]);
    assert.equal(await probePing(host, c2, 'c1'), 'reached');
    // portmap's DNAT for the host's own traffic to its addresses.
    const got = await waitFor(async () => { const f = await fetchIn(host.netnsPath, 'http://10.77.0.1:8080/hostname'); return f.status === 200 ? f : undefined; }, 'the published port');
    assert.equal(got.body.trim(), (await host.api('GET', '/containers/c1/json')).json.Config.Hostname);
  });

  it('DELs from its cache after kill -9 of berthd: the address, the veth and the rules of the container go', async () => {
    const ip = (await host.api('GET', '/containers/c1/json')).json.NetworkSettings.Networks.cn.IPAddress as string;
    assert.match(await rules(), new RegExp(ip.replace(/\./g, '\\.')));
    await host.stopDaemon('SIGKILL');
    await host.startDaemon();
    assert.equal(await veths(), 2);
    await ok(['rm', '-f', 'c1']);
    assert.equal(await veths(), 1);
    assert.equal((await reservations()).length, 1);
    // Every rule the plugins made for c1 (DNAT, masquerade, firewall) named its address.
    assert.doesNotMatch(await rules(), new RegExp(`${ip.replace(/\./g, '\\.')}\\b`));
    assert.deepEqual((await fs.readdir(join(host.root, 'cni', 'results'))).length, 1);
  });

  it('a plugin that fails ADD: its error with the CNI code, and the plugins before it undone', async () => {
    await ok(['network', 'create', '-d', 'cni', '-o', `cni.conflist=${join(dir, 'broken.conflist')}`, 'cnb']);
    const before = { veths: await veths(), reservations: (await reservations()).length, rules: (await rules()).split('\n').length };
    const r = await host.docker(['run', '-d', '--name', 'c3', '--network', 'cnb', 'busybox', 'sleep', '300']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /failed to set up c3 on CNI network cnb: CNI plugin tuning failed ADD: error \d+/);
    assert.equal(await veths(), before.veths);
    assert.equal((await reservations()).length, before.reservations);
    assert.equal((await rules()).split('\n').length, before.rules);
    assert.equal((await fs.readdir(join(host.root, 'cni', 'results'))).length, 1);
    assert.equal((await host.api('GET', '/containers/c3/json')).json.State.Running, false);
    await ok(['rm', '-f', 'c2', 'c3']);
    assert.equal(await veths(), 0);
    assert.deepEqual(await reservations(), []);
    assert.deepEqual(await fs.readdir(join(host.root, 'cni', 'results')), []);
    await ok(['network', 'rm', 'cn', 'cnb']);
  });
});
