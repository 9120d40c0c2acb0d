import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { fetchIn, lookup, PACKAGE_ROOT, probePing, TestHost, waitFor } from './harness.js';

/**
 * CNI consumed: cni networks on Debian's reference plugins (containernetworking-plugins in
 * /usr/lib/cni), their configuration lists in a temp directory given to berthd with
 * --cni-conf-dir (never /etc/cni), host-local's reservations in a temp directory too. The plugins
 * run as berthd's children, inside the test host's namespace, so their bridge and iptables rules
 * are made there and nowhere else.
 *
 * CNI provided: berth-cni (bin/berth-cni, linked into a temp plugin directory) puts a runtime's
 * containers on berth's networks, driven by berth's own CNI runner, by the test as a bare CNI
 * runtime would, and by Debian's Podman 4.3 with its CNI backend (its configuration, storage and
 * plugin directories under the test's temp directory, run inside the test host's namespace).
 */

const PLUGINS = '/usr/lib/cni';
const BERTH_CNI = join(PACKAGE_ROOT, 'bin', 'berth-cni');

function podmanInstalled(): boolean {
  return existsSync('/usr/bin/podman');
}
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
    // berth-cni where a CNI runtime finds plugins: a directory of its own, beside Debian's.
    await fs.mkdir(join(dir, 'bin'));
    await fs.symlink(BERTH_CNI, join(dir, 'bin', 'berth-cni'));
    host = await TestHost.create({ daemonArgs: ['--cni-conf-dir', join(dir, 'net.d'), '--cni-plugin-dir', join(dir, 'bin'), '--cni-plugin-dir', PLUGINS] });
    // The list any runtime uses to reach berth's network bn (berthd's socket is this test host's).
    const toBerth = { cniVersion: '1.1.0', name: 'toberth', plugins: [{ type: 'berth-cni', network: 'bn', socket: host.socket, capabilities: { aliases: true } }] };
    await fs.writeFile(join(dir, 'net.d', '20-toberth.conflist'), JSON.stringify(toBerth));
  });

  after(async () => {
    if (!host) return;
    await host.docker(['rm', '-f', 'c1', 'c2', 'c3', 'c4', 'b1', 'r1']);
    await host.docker(['network', 'rm', 'cn', 'cnb', 'via', 'bn']);
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
    assert.match(r.json.message, /failed to find plugin "no-such-plugin" in path \[\S+\/bin \/usr\/lib\/cni\]/);
    r = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'cni', Options: { 'cni.conflist': join(dir, 'old.conflist') } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /CNI version 0\.2\.0 .* not one berth speaks/);
    r = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'cni', Options: { 'cni.conflist': 'cnitest' }, IPAM: { Config: [{ Subnet: '10.9.0.0/24' }] } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /take their addresses from the driver's own IPAM/);
    r = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'cni', Internal: true, Options: { 'cni.conflist': 'cnitest' } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /cannot be --internal/);
    assert.equal((await host.api('GET', '/networks/x')).status, 404);
  });

  it('runs containers on the list: addresses and routes in inspect, names by the embedded DNS, -p through portmap', async () => {
    await ok(['network', 'create', '-d', 'cni', '-o', 'cni.conflist=cnitest', 'cn']);
    const net = (await host.api('GET', '/networks/cn')).json;
    assert.equal(net.Driver, 'cni');
    assert.deepEqual(net.IPAM.Config, [{ Subnet: '10.77.0.0/24' }]);
    // The list's subnet is taken: berth's own IPAM does not give it to another network.
    const clash = await host.api('POST', '/networks/create', { Name: 'clash', IPAM: { Config: [{ Subnet: '10.77.0.128/25' }] } });
    assert.equal(clash.status, 403, clash.body);
    assert.match(clash.json.message, /Pool overlaps with other one on this address space/);
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

  it('DELs from its cache after kill -9 of berthd: the address, the veth and the rules of the container go; CHECK finds a broken one', async () => {
    const ip = (await host.api('GET', '/containers/c1/json')).json.NetworkSettings.Networks.cn.IPAddress as string;
    assert.match(await rules(), new RegExp(ip.replace(/\./g, '\\.')));
    // c2 loses its address behind berth's back: the CHECK after the restart must say so.
    const c2 = (await host.api('GET', '/containers/c2/json')).json;
    assert.equal((await host.inNetns('nsenter', ['-t', String(c2.State.Pid), '-n', 'ip', 'addr', 'flush', 'dev', 'eth0'])).code, 0);
    await host.stopDaemon('SIGKILL');
    await host.startDaemon();
    await waitFor(async () => host.daemonLog.includes(`CNI CHECK of ${c2.Id.slice(0, 12)} on cnitest: CNI plugin bridge failed CHECK`), 'the CHECK of c2 after the restart');
    assert.equal(await veths(), 2);
    await ok(['rm', '-f', 'c1']);
    assert.equal(await veths(), 1);
    assert.equal((await reservations()).length, 1);
    // Every rule the plugins made for c1 (DNAT, masquerade, firewall) named its address.
    assert.doesNotMatch(await rules(), new RegExp(`${ip.replace(/\./g, '\\.')}\\b`));
    assert.deepEqual((await fs.readdir(join(host.root, 'cni', 'results'))).length, 1);
  });

  it('network connect and disconnect of a running container: ADD as eth1, DEL at disconnect; no policy labels', async () => {
    const refused = await host.docker(['run', '-d', '--name', 'c4', '--network', 'cn', '-l', 'berth.policy.isolate=ingress', 'busybox', 'sleep', '300']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /network policy labels \(berth\.policy\.\*\) are not supported on cni networks \(cn\)/);
    assert.equal((await fs.readdir(join(host.root, 'cni', 'results'))).length, 1, 'nothing was ADDed');
    await ok(['rm', '-f', 'c4']);
    await ok(['run', '-d', '--name', 'c3', 'busybox', 'sleep', '300']);
    await ok(['network', 'connect', 'cn', 'c3']);
    const ep = (await host.api('GET', '/containers/c3/json')).json.NetworkSettings.Networks.cn;
    assert.match(ep.IPAddress, /^10\.77\.0\.\d+$/);
    assert.equal(ep.CNI.interfaces.find((i: { sandbox?: string }) => i.sandbox)?.name, 'eth1');
    assert.ok((await reservations()).includes(ep.IPAddress));
    await ok(['network', 'disconnect', 'cn', 'c3']);
    assert.ok(!(await reservations()).includes(ep.IPAddress), 'the address went back at DEL');
    assert.equal((await fs.readdir(join(host.root, 'cni', 'results'))).length, 1);
    await ok(['rm', '-f', 'c3']);
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

  it('a macvlan list (the reference macvlan plugin on a parent link of the test\'s): two containers reach each other by name', async () => {
    // A veth pair as the parent: a link of the test's own, in the test host's namespace.
    assert.equal((await host.inNetns('ip', ['link', 'add', 'cnimv0', 'type', 'veth', 'peer', 'name', 'cnimv1'])).code, 0);
    try {
      await host.inNetns('ip', ['link', 'set', 'cnimv0', 'up']);
      await host.inNetns('ip', ['link', 'set', 'cnimv1', 'up']);
      await fs.writeFile(join(dir, 'mv.conflist'), JSON.stringify({
        cniVersion: '1.0.0', name: 'mvtest',
        plugins: [{ type: 'macvlan', master: 'cnimv0', mode: 'bridge', ipam: { type: 'host-local', subnet: '10.78.0.0/24', dataDir: join(dir, 'ipam') } }, { type: 'tuning', mtu: 1400 }],
      }));
      await ok(['network', 'create', '-d', 'cni', '-o', `cni.conflist=${join(dir, 'mv.conflist')}`, 'mv']);
      await ok(['run', '-d', '--name', 'm1', '--network', 'mv', 'busybox', 'sleep', '300']);
      await ok(['run', '-d', '--name', 'm2', '--network', 'mv', 'busybox', 'sleep', '300']);
      const m1 = (await host.api('GET', '/containers/m1/json')).json;
      const m2 = (await host.api('GET', '/containers/m2/json')).json.Id as string;
      assert.match(m1.NetworkSettings.Networks.mv.IPAddress, /^10\.78\.0\.\d+$/);
      assert.deepEqual((await lookup(host, m2, 'm1')).addrs, [m1.NetworkSettings.Networks.mv.IPAddress]);
      assert.equal(await probePing(host, m2, 'm1'), 'reached');
      // tuning's MTU on the macvlan child, inside the container.
      assert.match((await host.inNetns('nsenter', ['-t', String(m1.State.Pid), '-n', 'ip', '-o', 'link', 'show', 'eth0'])).stdout, /mtu 1400 /);
      await ok(['rm', '-f', 'm1', 'm2']);
      await ok(['network', 'rm', 'mv']);
      assert.deepEqual(await fs.readdir(join(dir, 'ipam', 'mvtest')).then((f) => f.filter((x) => /^\d/.test(x))), []);
    } finally {
      await host.docker(['rm', '-f', 'm1', 'm2']);
      await host.docker(['network', 'rm', 'mv']);
      await host.inNetns('ip', ['link', 'del', 'cnimv0']);
    }
  });

  it('berth-cni under berth\'s own runner: a container on a cni network lands on berth\'s bridge bn, names answer both ways', async () => {
    await ok(['network', 'create', 'bn']);
    await ok(['network', 'create', '-d', 'cni', '-o', 'cni.conflist=toberth', 'via']);
    await ok(['run', '-d', '--name', 'b1', '--network', 'bn', 'busybox', 'sleep', '300']);
    await ok(['run', '-d', '--name', 'r1', '--network', 'via', 'busybox', 'sleep', '300']);
    const subnet = (await host.api('GET', '/networks/bn')).json.IPAM.Config[0].Subnet as string;
    const b1 = (await host.api('GET', '/containers/b1/json')).json;
    const r1 = (await host.api('GET', '/containers/r1/json')).json;
    const ip = r1.NetworkSettings.Networks.via.IPAddress as string;
    assert.equal(ip.split('.').slice(0, 2).join('.'), subnet.split('.').slice(0, 2).join('.'), `${ip} is not in ${subnet}`);
    assert.equal(r1.NetworkSettings.Networks.via.CNI.cniVersion, '1.1.0');
    assert.deepEqual(r1.NetworkSettings.Networks.via.CNI.dns.nameservers, ['127.0.0.11']);
    assert.deepEqual((await lookup(host, b1.Id, 'r1')).addrs, [ip]);
    assert.deepEqual((await lookup(host, r1.Id, 'b1')).addrs, [b1.NetworkSettings.Networks.bn.IPAddress]);
    assert.equal(await probePing(host, b1.Id, 'r1'), 'reached');
    assert.equal(await probePing(host, r1.Id, 'b1'), 'reached');
    // bn is in use by r1's endpoint, which berth's engine does not list on bn: still refused.
    assert.equal((await host.api('DELETE', '/networks/bn')).status, 403);
    await ok(['rm', '-f', 'r1']);
    // Unknown to berth, the name goes upstream (the test host's loopback, where nothing answers).
    const gone = await lookup(host, b1.Id, 'r1');
    assert.deepEqual(gone.addrs, [], gone.out);
    assert.equal((await host.api('GET', '/networks/bn')).json.IPAM.Config.length, 1);
    assert.deepEqual(await fs.readdir(join(host.root, 'cni', 'provided')), []);
  });

  it('berth-cni as a bare CNI runtime drives it: VERSION, ADD, CHECK, GC, DEL, STATUS', async () => {
    const ns = `${host.netns}p`;
    const cni = (command: string, conf: Record<string, unknown>, extra: Record<string, string> = {}) => run(BERTH_CNI, [], {
      input: JSON.stringify(conf),
      env: { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: 'rt-0001', CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: 'net1', CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=outsider', CNI_PATH: join(dir, 'bin'), ...extra },
    });
    const conf = { cniVersion: '1.0.0', name: 'toberth', type: 'berth-cni', network: 'bn', socket: host.socket };
    await run('ip', ['netns', 'add', ns]);
    try {
      const v = await cni('VERSION', { cniVersion: '1.0.0' });
      assert.deepEqual(JSON.parse(v.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
      const add = await cni('ADD', conf);
      assert.equal(add.code, 0, add.stdout);
      const result = JSON.parse(add.stdout);
      assert.equal(result.cniVersion, '1.0.0');
      assert.equal(result.interfaces[0].name, 'net1');
      const ip = result.ips[0].address.split('/')[0] as string;
      const inside = await run('ip', ['-n', ns, '-o', '-4', 'addr', 'show', 'net1']);
      assert.match(inside.stdout, new RegExp(`inet ${ip.replace(/\./g, '\\.')}/`));
      const b1 = (await host.api('GET', '/containers/b1/json')).json.Id as string;
      assert.deepEqual((await lookup(host, b1, 'outsider')).addrs, [ip]);
      assert.equal((await cni('CHECK', { ...conf, prevResult: result })).code, 0);
      await run('ip', ['-n', ns, 'addr', 'flush', 'dev', 'net1']);
      const broken = await cni('CHECK', { ...conf, prevResult: result });
      assert.equal(broken.code, 1);
      assert.match(JSON.parse(broken.stdout).msg, /has lost its address/);
      // Another runtime's endpoint on the same network, through a list of another name.
      const other = await cni('ADD', { ...conf, name: 'elsewhere' }, { CNI_IFNAME: 'net2', CNI_CONTAINERID: 'rt-0002' });
      assert.equal(other.code, 0, other.stdout);
      // The runtime no longer knows rt-0001: GC frees its endpoint, and nothing of the other list's.
      const gc = await cni('GC', { ...conf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'other', ifname: 'eth0' }] });
      assert.equal(gc.code, 0, gc.stdout);
      assert.equal((await run('ip', ['-n', ns, 'link', 'show', 'net1'])).code, 1, 'the interface went with GC');
      assert.equal((await run('ip', ['-n', ns, 'link', 'show', 'net2'])).code, 0, 'the other list\'s interface stays');
      assert.equal((await cni('DEL', { ...conf, name: 'elsewhere' }, { CNI_IFNAME: 'net2', CNI_CONTAINERID: 'rt-0002' })).code, 0);
      assert.equal((await run('ip', ['-n', ns, 'link', 'show', 'net2'])).code, 1, 'DEL took it');
      assert.deepEqual((await lookup(host, b1, 'outsider')).addrs, []);
      const del = await cni('DEL', conf);
      assert.equal(del.code, 0, `a DEL of what GC freed is no error: ${del.stdout}`);
      const status = await cni('STATUS', { ...conf, cniVersion: '1.1.0', network: 'no-such-net' });
      assert.equal(status.code, 1);
      assert.deepEqual(JSON.parse(status.stdout), { cniVersion: '1.1.0', code: 50, msg: 'berthd: network no-such-net not found' });
      assert.equal((await cni('STATUS', { ...conf, cniVersion: '1.1.0' })).code, 0);
    } finally {
      await run('ip', ['netns', 'del', ns]);
    }
  });

  it('Podman 4.3 (its CNI backend) puts a container on berth\'s network: it and a berth container reach each other by name', { skip: podmanInstalled() ? false : 'podman is not installed (Debian\'s podman 4.3)' }, async () => {
    const pod = join(dir, 'podman');
    await fs.mkdir(join(pod, 'net.d'), { recursive: true });
    await fs.mkdir(join(pod, 'rootfs', 'bin'), { recursive: true });
    // Podman 4.3's libcni reads results up to 1.0.0: its list says so, and berth-cni answers in kind.
    // A list name of its own: GC is per list name, and berth's own network via GCs 'toberth' at each start.
    await fs.writeFile(join(pod, 'net.d', 'podberth.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'podberth', plugins: [{ type: 'berth-cni', network: 'bn', socket: host.socket, capabilities: { aliases: true } }] }));
    // A busybox image from Debian's busybox-static, imported: nothing is pulled.
    await fs.copyFile('/bin/busybox', join(pod, 'rootfs', 'bin', 'busybox'));
    for (const a of ['sh', 'sleep', 'ping', 'nslookup', 'cat']) await fs.symlink('busybox', join(pod, 'rootfs', 'bin', a));
    // runc, not crun (crun refuses this machine's cgroup layout); limits podman would raise past this machine's own.
    await fs.writeFile(join(pod, 'containers.conf'), [
      '[containers]', 'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
      '[network]', 'network_backend = "cni"', `cni_plugin_dirs = ["${join(dir, 'bin')}", "${PLUGINS}"]`, `network_config_dir = "${join(pod, 'net.d')}"`,
      '[engine]', 'runtime = "runc"', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', `events_logfile_path = "${join(pod, 'events.log')}"`, `tmp_dir = "${join(pod, 'tmp')}"`, '',
    ].join('\n'));
    await fs.writeFile(join(pod, 'storage.conf'), `[storage]\ndriver = "vfs"\ngraphroot = "${join(pod, 'storage')}"\nrunroot = "${join(pod, 'run')}"\n`);
    const env = { ...process.env, CONTAINERS_CONF: join(pod, 'containers.conf'), CONTAINERS_STORAGE_CONF: join(pod, 'storage.conf'), CONTAINERS_REGISTRIES_CONF: join(pod, 'none.conf') };
    const podman = (args: string[], input?: string) => run('nsenter', [`--net=${host.netnsPath}`, 'podman', '--root', join(pod, 'storage'), '--runroot', join(pod, 'run'), ...args], { env, ...(input !== undefined ? { input } : {}) });
    const pok = async (args: string[]) => { const r = await podman(args); assert.equal(r.code, 0, `podman ${args.join(' ')}: ${r.stderr}`); return r.stdout.trim(); };
    try {
      await run('tar', ['-C', join(pod, 'rootfs'), '-cf', join(pod, 'rootfs.tar'), '.']);
      await pok(['import', join(pod, 'rootfs.tar'), 'localhost/bb']);
      await pok(['run', '-d', '--name', 'p1', '--network', 'podberth', 'localhost/bb', 'sleep', '300']);
      const p1 = JSON.parse(await pok(['inspect', 'p1']))[0];
      const ip = p1.NetworkSettings.Networks.podberth.IPAddress as string;
      const b1 = (await host.api('GET', '/containers/b1/json')).json;
      const b1ip = b1.NetworkSettings.Networks.bn.IPAddress as string;
      assert.deepEqual((await lookup(host, b1.Id, 'p1')).addrs, [ip]);
      assert.equal(await probePing(host, b1.Id, 'p1'), 'reached');
      const members = (await host.api('GET', '/networks/bn')).json.Containers;
      assert.equal(members[p1.Id]?.Name, 'p1');
      assert.equal(members[p1.Id]?.IPv4Address.split('/')[0], ip);
      // berth's resolver inside podman's namespace, at Docker's address.
      const asked = await pok(['exec', 'p1', 'nslookup', 'b1', '127.0.0.11']);
      assert.match(asked, new RegExp(`Address:\\s*${b1ip.replace(/\./g, '\\.')}`));
      const pinged = await pok(['exec', 'p1', 'ping', '-c', '1', '-W', '2', 'b1']);
      assert.match(pinged, /1 packets received/);
      // berthd killed and back: the endpoint is still berth's, its resolver serves again, names still answer.
      await host.stopDaemon('SIGKILL');
      await host.startDaemon();
      assert.match(await pok(['exec', 'p1', 'nslookup', 'b1', '127.0.0.11']), new RegExp(`Address:\\s*${b1ip.replace(/\./g, '\\.')}`));
      assert.deepEqual((await lookup(host, b1.Id, 'p1')).addrs, [ip]);
      await pok(['rm', '-f', 'p1']);
      assert.deepEqual((await lookup(host, b1.Id, 'p1')).addrs, []);
      assert.deepEqual(await fs.readdir(join(host.root, 'cni', 'provided')), []);
    } finally {
      // The image and podman's storage go with the temp directory (vfs: nothing mounted).
      await podman(['rm', '-af']);
    }
    await ok(['rm', '-f', 'b1']);
    await ok(['network', 'rm', 'via', 'bn']);
  });
});
