import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { exec, execOut, fetchIn, lookup, probePing, startFakeUpstream, TestHost, waitFor } from './harness.js';

/** Whether one ping gets through; a probe that did not run, or failed for another reason than loss, throws. */
async function ping(host: TestHost, id: string, ip: string): Promise<boolean> {
  const r = await probePing(host, id, ip);
  if (r === 'unreachable') throw new Error(`ping ${ip}: no route from ${id.slice(0, 12)}`);
  return r === 'reached';
}

async function ipOf(host: TestHost, id: string, network: string): Promise<string> {
  return (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks[network].IPAddress;
}

/** Connects from a container to a one-shot TCP server on the fake outside host and waits until it reports `expect` as the source. */
async function sourceSeenOutside(host: TestHost, id: string, port: number, expect: string): Promise<void> {
  const server = spawn('nsenter', [`--net=/run/netns/${host.outside}`, process.execPath, '-e',
    `const s=require('net').createServer(c=>{console.log(c.remoteAddress);c.end();s.close()});s.listen(${port},'10.200.0.2',()=>console.log('ready'))`]);
  try {
    let seen = '';
    server.stdout.on('data', (d: Buffer) => { seen += d.toString(); });
    await waitFor(async () => seen.includes('ready'), 'outside server');
    const sent = await exec(host, id, ['sh', '-c', `echo hi | nc 10.200.0.2 ${port}`]);
    assert.equal(sent.code, 0, sent.out);
    await waitFor(async () => seen.includes(expect), `source address ${expect} seen outside (${seen})`);
  } finally {
    server.kill();
  }
}

describe('bridge networks', () => {
  let host: TestHost;
  let docker: Docker;
  let upstream: ChildProcess;
  before(async () => {
    host = await TestHost.create({ outside: true });
    docker = new Docker({ socketPath: host.socket });
    // So that a name berth does not answer gets a definite NXDOMAIN, not a timeout.
    upstream = await startFakeUpstream(host);
  });
  after(async () => {
    upstream.kill();
    const leaks = await host.destroy();
    assert.deepEqual(leaks, [], 'nothing may leak');
  });

  it('has the pre-defined networks, which cannot be removed', async () => {
    const nets = await docker.listNetworks();
    assert.deepEqual(nets.map((n) => n.Name).sort(), ['bridge', 'host', 'none']);
    const bridge = nets.find((n) => n.Name === 'bridge')!;
    assert.equal(bridge.Driver, 'bridge');
    assert.equal(bridge.Scope, 'local');
    assert.equal(bridge.IPAM!.Config![0]!.Subnet, '172.17.0.0/16');
    assert.equal(bridge.IPAM!.Config![0]!.Gateway, '172.17.0.1');
    assert.equal(bridge.Options!['com.docker.network.bridge.name'], 'berth0');
    for (const name of ['bridge', 'host', 'none']) {
      const r = await host.api('DELETE', `/networks/${name}`);
      assert.equal(r.status, 403);
      assert.equal(r.json.message, `${name} is a pre-defined network and cannot be removed`);
    }
    // berth's bridge device: a fixed MAC and the uplink's MTU (1400 on the test host's uplink).
    const link = JSON.parse((await host.inNetns('ip', ['-j', 'link', 'show', 'berth0'])).stdout)[0];
    assert.equal(link.address, '02:42:ac:11:00:01');
    assert.equal(link.mtu, 1400);
  });

  it('default bridge: containers get addresses, reach each other by IP, not by name', async () => {
    const a = await host.runDetached({ Cmd: ['sleep', '300'] }, 'busybox1');
    const b = await host.runDetached({ Cmd: ['sleep', '300'] }, 'busybox2');
    const ipA = await ipOf(host, a, 'bridge');
    const ipB = await ipOf(host, b, 'bridge');
    assert.match(ipA, /^172\.17\.0\.\d+$/);
    const insp = (await docker.getContainer(a).inspect()).NetworkSettings;
    assert.equal(insp.IPAddress, ipA);
    assert.equal(insp.Gateway, '172.17.0.1');
    assert.equal(insp.IPPrefixLen, 16);
    assert.equal(insp.Networks.bridge!.MacAddress, `02:42:ac:11:${ipA.split('.').slice(2).map((o) => Number(o).toString(16).padStart(2, '0')).join(':')}`);
    // answers ping the moment run returns
    assert.ok(await ping(host, a, ipB));
    assert.ok(await ping(host, b, ipA));
    // No name resolution on the default bridge: the name goes to the host's upstream (the test's
    // fake one), which has never heard of it, and /etc/hosts does not have it either.
    assert.equal((await lookup(host, a, 'busybox2')).rcode, 'NXDOMAIN');
    assert.match((await exec(host, a, ['ping', '-c', '1', 'busybox2'])).out, /bad address 'busybox2'/);
    assert.equal((await lookup(host, a, 'outside.test')).addrs[0], '10.200.0.99', 'the same probe reaches the upstream');
    assert.match(await execOut(host, a, ['cat', '/etc/hosts']), new RegExp(`${ipA.replace(/\./g, '\\.')}\\t${a.slice(0, 12)}`));
    const route = await execOut(host, a, ['ip', 'route']);
    assert.match(route, /default via 172\.17\.0\.1 dev eth0/);
    assert.match(await execOut(host, a, ['cat', '/sys/class/net/eth0/mtu']), /^1400/);
    await host.api('DELETE', `/containers/${a}?force=1`);
    await host.api('DELETE', `/containers/${b}?force=1`);
  });

  it('masquerades outbound traffic to the outside world', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'] });
    // The outside host has no route to 172.17/16: a reply only arrives if the source was rewritten.
    assert.ok(await ping(host, id, '10.200.0.2'));
    await sourceSeenOutside(host, id, 7000, '10.200.0.1');
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('user-defined bridges: IPAM options, static IPs, isolation in both directions, a container on both reaches both', async () => {
    const n1 = await docker.createNetwork({ Name: 'net1', Labels: { team: 'a' } });
    const n2 = await docker.createNetwork({
      Name: 'net2', IPAM: { Driver: 'default', Config: [{ Subnet: '10.77.0.0/24', Gateway: '10.77.0.254', IPRange: '10.77.0.128/25', AuxiliaryAddresses: { printer: '10.77.0.130' } }] },
      Options: { 'com.docker.network.driver.mtu': '1300' },
    });
    const i1 = await n1.inspect();
    assert.equal(i1.IPAM!.Config![0]!.Subnet, '172.18.0.0/16');
    assert.deepEqual(i1.Labels, { team: 'a' });
    const c1 = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'net1' } }, 'c1');
    const c2 = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'net2' } }, 'c2');
    const c3 = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'net2' }, NetworkingConfig: { EndpointsConfig: { net2: { IPAMConfig: { IPv4Address: '10.77.0.20' } } } } }, 'c3');
    const ip2 = await ipOf(host, c2, 'net2');
    assert.equal(ip2, '10.77.0.128', 'first address of the ip-range');
    assert.equal(await ipOf(host, c3, 'net2'), '10.77.0.20');
    // --mac-address: the interface and inspect carry the requested address.
    const c4 = await host.runDetached({ Cmd: ['sleep', '300'], MacAddress: '02:42:0a:4d:00:99', HostConfig: { NetworkMode: 'net2' } }, 'c4');
    assert.match(await execOut(host, c4, ['cat', '/sys/class/net/eth0/address']), /^02:42:0a:4d:00:99/);
    assert.equal((await docker.getContainer('c4').inspect()).NetworkSettings.Networks.net2!.MacAddress, '02:42:0a:4d:00:99');
    await host.api('DELETE', `/containers/${c4}?force=1`);
    assert.match(await execOut(host, c2, ['ip', 'route']), /default via 10\.77\.0\.254/);
    assert.match(await execOut(host, c2, ['cat', '/sys/class/net/eth0/mtu']), /^1300/);
    const ip1 = await ipOf(host, c1, 'net1');
    assert.ok(await ping(host, c2, '10.77.0.20'));
    // Each isolation probe is the same ping that gets through to the prober's own network.
    assert.ok(await ping(host, c1, '172.18.0.1'));
    assert.ok(!(await ping(host, c1, ip2)), 'net1 cannot reach net2');
    assert.ok(!(await ping(host, c2, ip1)), 'net2 cannot reach net1');
    // connect c1 to net2 live: eth1 appears, both networks reachable
    await n2.connect({ Container: 'c1' });
    const links = await execOut(host, c1, ['ip', '-o', '-4', 'addr']);
    assert.match(links, /eth1\s+inet 10\.77\.0\.\d+\/24/);
    assert.ok(await ping(host, c1, ip2));
    assert.ok(await ping(host, c1, '10.77.0.20'));
    const both = (await docker.getContainer('c1').inspect()).NetworkSettings.Networks;
    assert.deepEqual(Object.keys(both).sort(), ['net1', 'net2']);
    const members = (await n2.inspect()).Containers!;
    assert.ok(members[c1]);
    assert.match(members[c1].IPv4Address, /^10\.77\.0\.\d+\/24$/);
    // disconnect: eth1 vanishes
    await n2.disconnect({ Container: 'c1' });
    assert.doesNotMatch(await execOut(host, c1, ['ip', '-o', 'link']), /eth1/);
    assert.ok(!(await ping(host, c1, ip2)));
    // errors
    const inUse = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['true'], HostConfig: { NetworkMode: 'net2' }, NetworkingConfig: { EndpointsConfig: { net2: { IPAMConfig: { IPv4Address: '10.77.0.20' } } } } });
    assert.equal(inUse.status, 201);
    const start = await host.api('POST', `/containers/${inUse.json.Id}/start`);
    assert.equal(start.status, 403);
    assert.match(start.json.message, /Address already in use/);
    await host.api('DELETE', `/containers/${inUse.json.Id}`);
    const outside = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['true'], HostConfig: { NetworkMode: 'net2' }, NetworkingConfig: { EndpointsConfig: { net2: { IPAMConfig: { IPv4Address: '10.99.0.5' } } } } });
    assert.equal(outside.status, 400);
    const rmInUse = await host.api('DELETE', '/networks/net2');
    assert.equal(rmInUse.status, 403);
    assert.match(rmInUse.json.message, /has active endpoints/);
    for (const id of [c1, c2, c3]) await host.api('DELETE', `/containers/${id}?force=1`);
    assert.equal((await host.api('DELETE', '/networks/net2')).status, 204);
    assert.equal((await host.api('DELETE', '/networks/net1')).status, 204);
    const left = JSON.parse((await host.inNetns('ip', ['-j', 'link', 'show', 'type', 'bridge'])).stdout).map((l: { ifname: string }) => l.ifname);
    assert.deepEqual(left, ['berth0']);
  });

  it('bridge driver options: bridge name, ICC off, masquerade off, host binding address', async () => {
    const r = await host.api('POST', '/networks/create', {
      Name: 'opts', IPAM: { Config: [{ Subnet: '10.66.0.0/24' }] },
      Options: {
        'com.docker.network.bridge.name': 'brtest1', 'com.docker.network.bridge.enable_icc': 'false',
        'com.docker.network.bridge.enable_ip_masquerade': 'false', 'com.docker.network.bridge.host_binding_ipv4': '127.0.0.1',
      },
    });
    assert.equal(r.status, 201, r.body);
    assert.equal((await host.inNetns('ip', ['link', 'show', 'brtest1'])).code, 0);
    const a = await host.runDetached({ Cmd: ['sh', '-c', 'mkdir /www && echo opts > /www/index.html && exec httpd -f -p 80 -h /www'], HostConfig: { NetworkMode: 'opts', PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8600' }] } } });
    const b = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'opts' } });
    // No inter-container traffic on the bridge, but the gateway still answers.
    assert.equal(await ping(host, b, await ipOf(host, a, 'opts')), false);
    assert.ok(await ping(host, b, '10.66.0.1'));
    // Published on the network's host binding address only.
    assert.deepEqual((await host.api('GET', `/containers/${a}/json`)).json.NetworkSettings.Ports['80/tcp'], [{ HostIp: '127.0.0.1', HostPort: '8600' }]);
    await waitFor(async () => /opts/.test((await fetchIn(host.netnsPath, 'http://127.0.0.1:8600/')).body ?? ''), 'published on 127.0.0.1');
    // From outside, the host's own address has nothing on that port: the host's stack refuses.
    assert.deepEqual(await fetchIn(`/run/netns/${host.outside}`, 'http://10.200.0.1:8600/'), { error: 'ECONNREFUSED' });
    // Without masquerade the outside host sees the container's own address (given a route back).
    await host.inOutside('ip', ['route', 'add', '10.66.0.0/24', 'via', '10.200.0.1']);
    await sourceSeenOutside(host, b, 7001, await ipOf(host, b, 'opts'));
    await host.inOutside('ip', ['route', 'del', '10.66.0.0/24']);
    for (const id of [a, b]) await host.api('DELETE', `/containers/${id}?force=1`);
    assert.equal((await host.api('DELETE', '/networks/opts')).status, 204);
    assert.notEqual((await host.inNetns('ip', ['link', 'show', 'brtest1'])).code, 0);
  });

  it('internal networks carry no traffic in or out', async () => {
    await docker.createNetwork({ Name: 'backend', Internal: true });
    const a = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'backend' } });
    const b = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'backend' } });
    assert.ok(await ping(host, a, await ipOf(host, b, 'backend')));
    // No way out: there is no route to send it on (and a container on the default bridge reaches the same address).
    assert.equal(await probePing(host, a, '10.200.0.2'), 'unreachable', 'no way out');
    const outsider = await host.runDetached({ Cmd: ['sleep', '300'] });
    assert.equal(await probePing(host, outsider, '10.200.0.2'), 'reached');
    assert.equal(await probePing(host, outsider, await ipOf(host, a, 'backend')), 'lost', 'no way in');
    for (const id of [a, b, outsider]) await host.api('DELETE', `/containers/${id}?force=1`);
    await host.api('DELETE', '/networks/backend');
  });

  it('container:NAME shares the namespace: same interfaces, address and localhost', async () => {
    const a = await host.runDetached({ Cmd: ['sh', '-c', 'while true; do echo pong | nc -l -p 9000; done'] }, 'base');
    const b = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'container:base' } });
    assert.equal(await execOut(host, b, ['ip', '-o', '-4', 'addr']), await execOut(host, a, ['ip', '-o', '-4', 'addr']));
    assert.equal(await execOut(host, b, ['cat', '/sys/class/net/eth0/address']), await execOut(host, a, ['cat', '/sys/class/net/eth0/address']));
    assert.match(await execOut(host, b, ['sh', '-c', 'echo ping | nc 127.0.0.1 9000']), /pong/);
    assert.equal((await host.api('GET', `/containers/${b}/json`)).json.HostConfig.NetworkMode, `container:${a}`);
    await host.api('DELETE', `/containers/${b}?force=1`);
    await host.api('DELETE', `/containers/${a}?force=1`);
  });

  it('legacy --link on the default bridge writes the alias into /etc/hosts', async () => {
    const db = await host.runDetached({ Cmd: ['sleep', '300'] }, 'db');
    const web = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { Links: ['db:database'] } });
    const ip = await ipOf(host, db, 'bridge');
    assert.match(await execOut(host, web, ['cat', '/etc/hosts']), new RegExp(`${ip.replace(/\./g, '\\.')}\\tdatabase ${db.slice(0, 12)} db`));
    assert.ok(await ping(host, web, 'database'));
    await host.api('DELETE', `/containers/${web}?force=1`);
    await host.api('DELETE', `/containers/${db}?force=1`);
  });

  it('releases addresses on rm, disconnect and failed start', async () => {
    await docker.createNetwork({ Name: 'tiny', IPAM: { Config: [{ Subnet: '10.88.0.0/29' }] } });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'tiny' } }));
    const extra = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'tiny' } });
    const full = await host.api('POST', `/containers/${extra.json.Id}/start`);
    assert.equal(full.status, 403);
    assert.match(full.json.message, /no available IPv4 addresses/);
    await host.api('DELETE', `/containers/${ids.pop()}?force=1`);
    assert.equal((await host.api('POST', `/containers/${extra.json.Id}/start`)).status, 204);
    ids.push(extra.json.Id);
    const bad = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['/nonexistent'], HostConfig: { NetworkMode: 'tiny' } });
    await host.api('DELETE', `/containers/${ids.pop()}?force=1`);
    assert.equal((await host.api('POST', `/containers/${bad.json.Id}/start`)).status, 400);
    // the failed start gave its address back: one more container fits
    ids.push(await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'tiny' } }));
    for (const id of [...ids, bad.json.Id]) await host.api('DELETE', `/containers/${id}?force=1`);
    await host.api('DELETE', '/networks/tiny');
  });

  it('answers bad network requests with Docker errors and creates nothing', async () => {
    await docker.createNetwork({ Name: 'dup', IPAM: { Config: [{ Subnet: '10.66.0.0/24' }] } });
    const dup = await host.api('POST', '/networks/create', { Name: 'dup', CheckDuplicate: true });
    assert.equal(dup.status, 409);
    assert.equal(dup.json.message, 'network with name dup already exists');
    const overlap = await host.api('POST', '/networks/create', { Name: 'ov', IPAM: { Config: [{ Subnet: '10.66.0.128/25' }] } });
    assert.equal(overlap.status, 403);
    assert.match(overlap.json.message, /overlaps/);
    const malformed = await host.api('POST', '/networks/create', { Name: 'bad', IPAM: { Config: [{ Subnet: '10.66.0.0/99' }] } });
    assert.equal(malformed.status, 400);
    // Docker 20.10 records a subnet with host bits as given and uses its network.
    const hostBits = await host.api('POST', '/networks/create', { Name: 'hostbits', IPAM: { Config: [{ Subnet: '10.55.0.1/24' }] } });
    assert.equal(hostBits.status, 201);
    assert.deepEqual((await host.api('GET', '/networks/hostbits')).json.IPAM.Config, [{ Subnet: '10.55.0.1/24', Gateway: '10.55.0.1' }]);
    assert.equal((await host.api('DELETE', '/networks/hostbits')).status, 204);
    const noSuch = await host.api('GET', '/networks/nosuchnet');
    assert.equal(noSuch.status, 404);
    assert.equal(noSuch.json.message, 'network nosuchnet not found');
    const runOnMissing = await host.api('POST', '/containers/create', { Image: 'busybox', HostConfig: { NetworkMode: 'nosuchnet' } });
    assert.equal(runOnMissing.status, 404);
    const driver = await host.api('POST', '/networks/create', { Name: 'x', Driver: 'weird' });
    assert.equal(driver.status, 404);
    const names = (await docker.listNetworks()).map((n) => n.Name).sort();
    assert.deepEqual(names, ['bridge', 'dup', 'host', 'none']);
    // ls filters and prune
    const custom = await host.api('GET', `/networks?filters=${encodeURIComponent(JSON.stringify({ type: ['custom'] }))}`);
    assert.deepEqual(custom.json.map((n: { Name: string }) => n.Name), ['dup']);
    const pruned = await host.api('POST', '/networks/prune');
    assert.deepEqual(pruned.json.NetworksDeleted, ['dup']);
  });

  it('hands out every default pool, then refuses with Docker\'s exhaustion error and creates nothing', async () => {
    // The default bridge holds 172.17.0.0/16: 172.18–172.31 (/16) and 192.168.0.0/16 in /20 steps remain.
    const made: string[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        const r = await host.api('POST', '/networks/create', { Name: `pool${i}` });
        assert.equal(r.status, 201, r.body);
        made.push(r.json.Id);
      }
      const subnets = await Promise.all(made.map(async (id) => (await host.api('GET', `/networks/${id}`)).json.IPAM.Config[0].Subnet as string));
      assert.equal(subnets[0], '172.18.0.0/16');
      assert.equal(subnets[13], '172.31.0.0/16');
      assert.equal(subnets[14], '192.168.0.0/20');
      assert.equal(subnets[29], '192.168.240.0/20');
      const links = await host.inNetns('ip', ['-o', 'link', 'show', 'type', 'bridge']);
      const full = await host.api('POST', '/networks/create', { Name: 'onemore' });
      assert.equal(full.status, 403);
      assert.match(full.json.message, /all predefined address pools have been fully subnetted/);
      assert.equal((await host.api('GET', '/networks/onemore')).status, 404);
      assert.equal((await host.inNetns('ip', ['-o', 'link', 'show', 'type', 'bridge'])).stdout, links.stdout);
      // A freed pool is handed out again.
      assert.equal((await host.api('DELETE', `/networks/${made.pop()}`)).status, 204);
      const again = await host.api('POST', '/networks/create', { Name: 'onemore' });
      assert.equal(again.status, 201, again.body);
      made.push(again.json.Id);
      assert.equal((await host.api('GET', '/networks/onemore')).json.IPAM.Config[0].Subnet, '192.168.240.0/20');
    } finally {
      for (const id of made) await host.api('DELETE', `/networks/${id}`);
    }
  });

  it('restores networks and running containers after a daemon crash', async () => {
    await docker.createNetwork({ Name: 'keep' });
    const a = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'keep' } });
    const b = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'keep' } });
    // Started at once, as compose does: every allocation must reach the network's record.
    const many = await Promise.all([1, 2, 3, 4, 5, 6].map(() => host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'keep' } })));
    await host.stopDaemon('SIGKILL');
    await host.startDaemon();
    assert.ok(await ping(host, a, await ipOf(host, b, 'keep')));
    const c = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'keep' } });
    const all = [a, b, ...many, c];
    const ips = new Set(await Promise.all(all.map((id) => ipOf(host, id, 'keep'))));
    assert.equal(ips.size, all.length, 'no address handed out twice after restart');
    for (const id of all) await host.api('DELETE', `/containers/${id}?force=1`);
    await host.api('DELETE', '/networks/keep');
  });

  it('rm leaves nothing of a network, even when the name and subnet come back at once or berthd is killed', async () => {
    const bridges = async () => (await host.inNetns('ip', ['-o', 'link', 'show', 'type', 'bridge'])).stdout;
    for (let i = 0; i < 3; i++) {
      const r = await host.api('POST', '/networks/create', { Name: 'again', Options: { 'com.docker.network.bridge.name': 'bth-again' }, IPAM: { Config: [{ Subnet: '10.77.0.0/24' }] } });
      assert.equal(r.status, 201, r.body);
      assert.match(await bridges(), /bth-again/);
      assert.equal((await host.api('DELETE', '/networks/again')).status, 204);
      assert.doesNotMatch(await bridges(), /bth-again/, 'gone when rm returns');
    }
    // Killed in the middle of rm, after the record became a tombstone: the next start finishes it.
    const gone = await host.api('POST', '/networks/create', { Name: 'gone' });
    const id = gone.json.Id as string;
    const bridge = `bth-${id.slice(0, 11)}`;
    await host.stopDaemon('SIGKILL');
    await fs.rename(join(host.root, 'networks', `${id}.json`), join(host.root, 'networks', `${id}.json.removing`));
    assert.match(await bridges(), new RegExp(bridge));
    await host.startDaemon();
    assert.doesNotMatch(await bridges(), new RegExp(bridge));
    assert.deepEqual((await fs.readdir(join(host.root, 'networks'))).filter((f) => f.includes('removing')), [], 'no tombstone left');
    assert.equal((await host.api('GET', '/networks/gone')).status, 404);
  });
});
