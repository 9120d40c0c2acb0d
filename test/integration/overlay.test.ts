import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { DOCKER_CLI, fetchIn, PACKAGE_ROOT, waitFor } from './harness.js';
import { dockerFails, dockerOk, Lab, type LabHost } from './lab.js';

/**
 * Overlay networks across three lab hosts (one manager, two workers), through the docker CLI:
 * create on a manager and visibility everywhere, the VXLAN data plane, reachability by IP, name
 * and alias with no miss the moment a command returns, isolation, the way out through each
 * container's own host, a dead host's endpoints vanishing with its lease, reconciliation after
 * kill -9, and Docker's errors for bad input with nothing made. One lab for the whole file.
 */

const TTL = 3;
const NOT_MANAGER = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.';

describe('overlay networks across hosts', () => {
  let lab: Lab;
  let h0: LabHost, h1: LabHost, h2: LabHost;
  let ov1Subnet = '';

  before(async () => {
    lab = await Lab.create(3, { leaseTtlSec: TTL, seedBusybox: true });
    [h0, h1, h2] = lab.hosts as [LabHost, LabHost, LabHost];
  });

  after(async () => {
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  const ok = dockerOk;
  const fails = dockerFails;
  /** Links of berth's overlay naming in a host's namespace. */
  const overlayLinks = async (h: LabHost) => {
    const r = await h.host.inNetns('ip', ['-o', 'link', 'show']);
    return r.stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '').filter((n) => n.startsWith('bov-') || n.startsWith('bvx-')).sort();
  };
  const netNames = async (h: LabHost) => (await ok(h, ['network', 'ls', '--format', '{{.Name}} {{.Driver}} {{.Scope}}'])).split('\n').sort();
  /** One ping from a container: 0 when answered. */
  const ping = async (h: LabHost, c: string, target: string) => (await h.host.docker(['exec', c, 'ping', '-c', '1', '-W', '1', target])).code;
  const lookup = async (h: LabHost, c: string, name: string) => {
    const r = await h.host.docker(['exec', c, 'nslookup', name]);
    const m = /Name:\s+\S+\s+Address(?: 1)?:\s+([\d.]+)/.exec(r.stdout);
    return r.code === 0 && m ? m[1]! : '';
  };
  /** The MACs of a network's VXLAN FDB and the IPs of its neighbour entries on a host. */
  const peersOn = async (h: LabHost, net: string) => {
    const id = (await ok(h, ['network', 'inspect', '-f', '{{.Id}}', net])).slice(0, 11);
    const fdb = JSON.parse((await h.host.inNetns('bridge', ['-j', 'fdb', 'show', 'dev', `bvx-${id}`])).stdout || '[]') as Array<{ mac: string; dst?: string }>;
    const neigh = JSON.parse((await h.host.inNetns('ip', ['-j', 'neigh', 'show', 'dev', `bvx-${id}`])).stdout || '[]') as Array<{ dst: string }>;
    return { fdb: fdb.filter((f) => f.dst).map((f) => f.mac.toLowerCase()), neigh: neigh.map((n) => n.dst) };
  };
  const ipOf = async (h: LabHost, c: string, net: string) => ok(h, ['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, c]);

  it('refuses an overlay outside a swarm, with Docker 20.10 words, and makes nothing', async () => {
    const r = await h0.host.api('POST', '/networks/create', { Name: 'nope', Driver: 'overlay', Attachable: true });
    assert.deepEqual([r.status, r.json.message], [403, NOT_MANAGER]);
    assert.ok(!(await netNames(h0)).some((l) => l.startsWith('nope')));
    assert.deepEqual(await overlayLinks(h0), []);
  });

  it('forms a swarm of one manager and two workers', async () => {
    await ok(h0, ['swarm', 'init', '--advertise-addr', h0.addr, '--default-addr-pool', '10.20.0.0/23', '--default-addr-pool-mask-length', '24']);
    const token = await ok(h0, ['swarm', 'join-token', '-q', 'worker']);
    await ok(h1, ['swarm', 'join', '--token', token, `${h0.addr}:2377`]);
    await ok(h2, ['swarm', 'join', '--token', token, `${h0.addr}:2377`]);
    // The swarm's ingress network (the routing mesh's, ingress.test.ts) goes, as Docker lets it
    // while no service publishes: what follows counts this file's own networks and links.
    for (const h of [h0, h1, h2]) await waitFor(async () => (await netNames(h)).includes('ingress overlay swarm'), `${h.name}: ingress`);
    const r = await h0.host.api('DELETE', '/networks/ingress');
    assert.equal(r.status, 204, r.body);
    for (const h of [h0, h1, h2]) await waitFor(async () => !(await netNames(h)).some((l) => l.startsWith('ingress ')) && !(await overlayLinks(h)).length, `${h.name}: ingress gone`);
  });

  it('refuses an overlay create on a worker, and makes nothing anywhere', async () => {
    await fails(h1, ['network', 'create', '-d', 'overlay', 'onworker'], NOT_MANAGER);
    for (const h of [h0, h1, h2]) {
      assert.ok(!(await netNames(h)).some((l) => l.startsWith('onworker')));
      assert.deepEqual(await overlayLinks(h), []);
    }
  });

  it('creates an attachable overlay on the manager, seen on every host with scope swarm and its data plane', async () => {
    const id = await ok(h0, ['network', 'create', '-d', 'overlay', '--attachable', 'ov1']);
    // Visible on every host when create returns: no wait.
    for (const h of [h0, h1, h2]) {
      assert.ok((await netNames(h)).includes('ov1 overlay swarm'), `${h.name}: ${await netNames(h)}`);
      const insp = JSON.parse(await ok(h, ['network', 'inspect', 'ov1']))[0];
      assert.equal(insp.Id, id);
      assert.equal(insp.Scope, 'swarm');
      assert.equal(insp.Attachable, true);
      ov1Subnet = insp.IPAM.Config[0].Subnet;
      const vni = Number(insp.Options['com.docker.network.driver.overlay.vxlanid_list']);
      assert.ok(vni >= 4096, `vni ${vni}`);
      const links = await overlayLinks(h);
      assert.equal(links.length, 2, `${h.name}: ${links}`);
      const vx = links.find((l) => l.startsWith('bvx-'))!;
      const d = JSON.parse((await h.host.inNetns('ip', ['-j', '-d', 'link', 'show', 'dev', vx])).stdout)[0];
      assert.equal(d.linkinfo.info_data.id, vni);
      assert.equal(d.linkinfo.info_data.learning, false);
      assert.equal(d.linkinfo.info_data.local, h.addr);
      assert.equal(d.linkinfo.info_data.port, 4789);
      // The uplinks carry 1400 bytes: VXLAN's 50 come off that, not off a fixed 1500.
      assert.equal(d.mtu, 1350);
    }
    assert.equal(ov1Subnet, '10.20.0.0/24', 'the first /24 of the swarm\'s default address pool');
  });

  it('refuses bad input with Docker-like errors and makes nothing', async () => {
    const before = await Promise.all([h0, h1, h2].map(overlayLinks));
    const vni = JSON.parse(await ok(h0, ['network', 'inspect', 'ov1']))[0].Options['com.docker.network.driver.overlay.vxlanid_list'];
    await fails(h0, ['network', 'create', '-d', 'overlay', '--subnet', ov1Subnet, 'dup-subnet'], 'Pool overlaps with other one on this address space');
    await fails(h0, ['network', 'create', '-d', 'overlay', '--subnet', '10.99.0.0/24', 'on-underlay'], 'Pool overlaps with other one on this address space');
    await fails(h0, ['network', 'create', '-d', 'overlay', '-o', `com.docker.network.driver.overlay.vxlanid_list=${vni}`, 'dup-vni'], 'requested bit is already allocated');
    await fails(h0, ['network', 'create', '-d', 'overlay', '-o', 'com.docker.network.driver.mtu=1400', 'big-mtu'], /the underlay link carries 1400 bytes and VXLAN takes 50 of them, so at most 1350/);
    await fails(h0, ['network', 'create', '-d', 'overlay', '--opt', 'encrypted', 'secret'], /encrypted overlay networks need IPsec ESP with rfc4106\(gcm\(aes\)\) in the kernel, and this host's kernel has none/);
    await fails(h0, ['network', 'create', '-d', 'overlay', 'ov1'], 'network with name ov1 already exists');
    for (const [i, h] of [h0, h1, h2].entries()) {
      const names = await netNames(h);
      for (const bad of ['dup-subnet', 'on-underlay', 'dup-vni', 'big-mtu', 'secret']) assert.ok(!names.some((l) => l.startsWith(`${bad} `)), `${h.name}: ${bad} was made`);
      assert.deepEqual(await overlayLinks(h), before[i]);
    }
  });

  it('refuses an exhausted pool and an invalid VNI, and makes nothing', async () => {
    // The swarm's default pool is a /23: ov1 has one /24, one more fits, a third does not.
    await ok(h0, ['network', 'create', '-d', 'overlay', 'x1']);
    await fails(h0, ['network', 'create', '-d', 'overlay', 'x2'], 'could not find an available, non-overlapping IPv4 address pool');
    const r = await h0.host.api('POST', '/networks/create', { Name: 'bad-vni', Driver: 'overlay', Options: { 'com.docker.network.driver.overlay.vxlanid_list': '99999999' } });
    assert.deepEqual([r.status, r.json.message], [400, 'invalid vxlan id value "99999999" passed']);
    await ok(h0, ['network', 'rm', 'x1']);
    for (const h of [h0, h1, h2]) {
      const names = await netNames(h);
      assert.ok(!names.some((l) => /^(x1|x2|bad-vni) /.test(l)), `${h.name}: ${names}`);
      assert.equal((await overlayLinks(h)).length, 2, `${h.name}: only ov1's bridge and VXLAN device`);
    }
  });

  it('containers on different hosts reach each other by IP, name and alias the moment run returns', async () => {
    await ok(h0, ['run', '-d', '--name', 'a0', '--network', 'ov1', '--network-alias', 'web', 'busybox', 'sleep', '3600']);
    await ok(h1, ['run', '-d', '--name', 'a1', '--network', 'ov1', 'busybox', 'sleep', '3600']);
    const ip0 = await ipOf(h0, 'a0', 'ov1');
    const ip1 = await ipOf(h1, 'a1', 'ov1');
    assert.notEqual(ip0, ip1);
    // No retries anywhere below: the first probe must answer.
    assert.equal(await ping(h1, 'a1', ip0), 0, 'a1 → a0 by IP');
    assert.equal(await ping(h0, 'a0', ip1), 0, 'a0 → a1 by IP');
    assert.equal(await lookup(h1, 'a1', 'a0'), ip0);
    assert.equal(await lookup(h1, 'a1', 'web'), ip0);
    assert.equal(await ping(h1, 'a1', 'web'), 0);
    // A third host joins in: from the instant its run returns, the others resolve and reach it.
    for (let i = 0; i < 3; i++) {
      await ok(h2, ['run', '-d', '--name', `b${i}`, '--network', 'ov1', '--ip', ov1Subnet.replace(/0\/24$/, `${200 + i}`), 'busybox', 'sleep', '3600']);
      const want = ov1Subnet.replace(/0\/24$/, `${200 + i}`);
      assert.equal(await lookup(h0, 'a0', `b${i}`), want, `b${i} by name from lab0`);
      assert.equal(await ping(h1, 'a1', want), 0, `b${i} by IP from lab1`);
    }
    const insp = JSON.parse(await ok(h0, ['network', 'inspect', 'ov1']))[0];
    assert.deepEqual(insp.Peers.map((p: { IP: string }) => p.IP), [h0.addr, h1.addr, h2.addr]);
    assert.deepEqual(Object.keys(insp.Containers).length, 1, 'Containers lists the local ones only');
  });

  it("a container sending as another endpoint is stopped on its own link, and a frame past that by the receiving host's guard", async () => {
    // b0 and b1 are on lab2 (10.x.x.200, .201), a0 on lab0. The spoofer runs on lab2; the test
    // acts in its namespace as root with every capability, which a container could only be given.
    await ok(h2, ['run', '-d', '--name', 'spoofer', '--network', 'ov1', 'busybox', 'sleep', '3600']);
    const pid = await ok(h2, ['inspect', '-f', '{{.State.Pid}}', 'spoofer']);
    const inSpoofer = (cmd: string[]) => run('nsenter', [`--net=/proc/${pid}/ns/net`, ...cmd]);
    const b0 = ov1Subnet.replace(/0\/24$/, '200');
    const b1 = ov1Subnet.replace(/0\/24$/, '201');
    const ip0 = await ipOf(h0, 'a0', 'ov1');
    const own = await ipOf(h2, 'spoofer', 'ov1');
    const counted = async (nft: Promise<{ stdout: string }>) => [...(await nft).stdout.matchAll(/counter packets (\d+) bytes \d+ drop/g)].reduce((n, m) => n + Number(m[1]), 0);
    const spooferDrops = () => counted(inSpoofer(['nft', 'list', 'table', 'netdev', 'berth']));
    const hostDrops = (h: LabHost) => counted(h.host.inNetns('nft', ['list', 'chain', 'netdev', 'berth', 'guard']));
    const spoofPing = async (target: string) => (await inSpoofer(['/usr/bin/busybox', 'ping', '-c', '2', '-W', '1', '-I', b0, target])).stdout;
    // Its own traffic passes, locally and across hosts.
    for (const t of [b1, ip0]) assert.match((await inSpoofer(['/usr/bin/busybox', 'ping', '-c', '1', '-W', '2', '-I', own, t])).stdout, /1 packets received/, `spoofer → ${t}`);
    assert.equal(await spooferDrops(), 0);
    assert.equal((await inSpoofer(['ip', 'addr', 'add', `${b0}/32`, 'dev', 'eth0'])).code, 0);
    for (const t of [b1, ip0]) assert.match(await spoofPing(t), /2 packets transmitted, 0 packets received/, `spoofed → ${t}`);
    assert.ok(await spooferDrops() >= 4, 'dropped on the spoofer\'s own link');
    // With its own guard gone (what CAP_NET_ADMIN could do), the receiving hosts' guards drop
    // the frames: the spoofer's MAC with b0's address is no pair the network has.
    const chains = (await inSpoofer(['nft', '-j', 'list', 'chains', 'netdev'])).stdout;
    const chain = /"name": ?"(out_eth0)"/.exec(chains)?.[1];
    assert.ok(chain, chains);
    assert.equal((await inSpoofer(['nft', 'delete', 'chain', 'netdev', 'berth', chain!])).code, 0);
    const [before0, before2] = [await hostDrops(h0), await hostDrops(h2)];
    for (const t of [b1, ip0]) assert.match(await spoofPing(t), /2 packets transmitted, 0 packets received/, `spoofed past its own guard → ${t}`);
    assert.ok(await hostDrops(h2) >= before2 + 2, 'lab2 dropped what the spoofer sent its local neighbour');
    assert.ok(await hostDrops(h0) >= before0 + 2, 'lab0 dropped what came from lab2 as b0');
    // b0 itself is untouched: still reached by name from another host.
    assert.equal(await ping(h0, 'a0', 'b0'), 0);
    await ok(h2, ['rm', '-f', 'spoofer']);
  });

  it('runs on two hosts at once never share an address: claims are cluster-wide', async () => {
    const names = [0, 1, 2, 3].flatMap((i) => [`p1-${i}`, `p2-${i}`]);
    const rs = await Promise.all(names.map((n) => (n.startsWith('p1') ? h1 : h2).host.docker(['run', '-d', '--name', n, '--network', 'ov1', 'busybox', 'sleep', '3600'])));
    for (const [i, r] of rs.entries()) assert.equal(r.code, 0, `${names[i]}: ${r.stderr}`);
    const ips = await Promise.all(names.map((n) => ipOf(n.startsWith('p1') ? h1 : h2, n, 'ov1')));
    assert.equal(new Set(ips).size, ips.length, `an address was given twice: ${ips}`);
    // Each answers by name on a third host.
    for (const [i, n] of names.entries()) assert.equal(await lookup(h0, 'a0', n), ips[i], n);
    const rm = await Promise.all(names.map((n) => (n.startsWith('p1') ? h1 : h2).host.docker(['rm', '-f', n])));
    for (const r of rm) assert.equal(r.code, 0, r.stderr);
  });

  it('refuses a static address in use anywhere, and a non-attachable overlay, with Docker\'s words', async () => {
    await fails(h0, ['run', '-d', '--name', 'clash', '--network', 'ov1', '--ip', ov1Subnet.replace(/0\/24$/, '200'), 'busybox', 'sleep', '1'], 'Address already in use');
    await ok(h0, ['network', 'create', '-d', 'overlay', 'svcnet']);
    await fails(h1, ['run', '-d', '--name', 'na', '--network', 'svcnet', 'busybox', 'sleep', '1'], 'Could not attach to network svcnet: rpc error: code = PermissionDenied desc = network svcnet not manually attachable');
    await ok(h0, ['network', 'rm', 'svcnet']);
    for (const h of [h0, h1, h2]) assert.ok(!(await netNames(h)).some((l) => l.startsWith('svcnet ')));
  });

  it("keeps two overlays apart and answers names only of the asker's networks; a container on both reaches both", async () => {
    await ok(h0, ['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.30.0.0/24', 'ov2']);
    await ok(h1, ['run', '-d', '--name', 'c1', '--network', 'ov2', 'busybox', 'sleep', '3600']);
    const ipc = await ipOf(h1, 'c1', 'ov2');
    const ip1 = await ipOf(h1, 'a1', 'ov1');
    // The probe works (a1 is on lab1 too), and the other overlay's container is out of reach.
    assert.equal(await ping(h0, 'a0', ip1), 0);
    assert.notEqual(await ping(h0, 'a0', ipc), 0, 'ov1 reached ov2');
    assert.equal(await lookup(h0, 'a0', 'a1'), ip1);
    assert.equal(await lookup(h0, 'a0', 'c1'), '', 'a name of another network was answered');
    await ok(h2, ['run', '-d', '--name', 'both', '--network', 'ov2', 'busybox', 'sleep', '3600']);
    await ok(h2, ['network', 'connect', 'ov1', 'both']);
    assert.equal(await ping(h2, 'both', 'c1'), 0);
    assert.equal(await ping(h2, 'both', 'a0'), 0);
  });

  it('--internal carries traffic between its containers across hosts and none out; others leave through their own host with NAT', async () => {
    // An address of the underlay that has no route to any overlay: only a masqueraded packet gets an answer.
    await lab.underlayAddress('10.99.0.200/24');
    await ok(h0, ['network', 'create', '-d', 'overlay', '--attachable', '--internal', '--subnet', '10.31.0.0/24', 'ovint']);
    await ok(h1, ['run', '-d', '--name', 'i1', '--network', 'ovint', 'busybox', 'sleep', '3600']);
    await ok(h2, ['run', '-d', '--name', 'i2', '--network', 'ovint', 'busybox', 'sleep', '3600']);
    assert.equal(await ping(h1, 'i1', 'i2'), 0, 'internal overlay across hosts');
    assert.notEqual(await ping(h1, 'i1', '10.99.0.200'), 0, 'an internal overlay reached the underlay');
    assert.equal(await ping(h1, 'a1', '10.99.0.200'), 0, 'a1 found no way out through lab1');
    assert.equal(await ping(h0, 'a0', '10.99.0.200'), 0, 'a0 found no way out through lab0');
  });

  it('-p on an overlay container publishes on its own host', async () => {
    await ok(h1, ['run', '-d', '--name', 'web1', '--network', 'ov1', '-p', '8080:80', 'busybox', 'httpd', '-f', '-p', '80', '-h', '/etc']);
    const hostname = await ok(h1, ['inspect', '-f', '{{.Config.Hostname}}', 'web1']);
    // From lab0's own namespace (Node's fetch, not the host's tools) to lab1's underlay address.
    const r = await waitFor(async () => {
      const g = await fetchIn(h0.host.netnsPath, `http://${h1.addr}:8080/hostname`);
      return g.status === 200 ? g : undefined;
    }, 'the published port', 10_000);
    assert.equal(r.body.trim(), hostname);
  });

  it('connect and disconnect across hosts: the alias answers when connect returns and is gone when disconnect returns', async () => {
    await ok(h2, ['run', '-d', '--name', 'late', 'busybox', 'sleep', '3600']);
    await ok(h2, ['network', 'connect', '--alias', 'latecomer', 'ov1', 'late']);
    const ipl = await ipOf(h2, 'late', 'ov1');
    assert.equal(await lookup(h0, 'a0', 'latecomer'), ipl);
    assert.equal(await ping(h0, 'a0', ipl), 0);
    await ok(h2, ['network', 'disconnect', 'ov1', 'late']);
    assert.equal(await lookup(h0, 'a0', 'late'), '', 'the name outlived disconnect');
    assert.equal(await lookup(h0, 'a0', 'a1'), await ipOf(h1, 'a1', 'ov1'), 'the probe itself');
    assert.notEqual(await ping(h0, 'a0', ipl), 0);
  });

  it('rm: the name and the FDB and neighbour entries are gone everywhere when rm returns', async () => {
    const mac = (await ok(h1, ['inspect', '-f', '{{(index .NetworkSettings.Networks "ov1").MacAddress}}', 'a1'])).toLowerCase();
    const ip = await ipOf(h1, 'a1', 'ov1');
    assert.ok((await peersOn(h0, 'ov1')).fdb.includes(mac));
    await ok(h1, ['rm', '-f', 'a1']);
    assert.equal(await lookup(h0, 'a0', 'a1'), '', 'the name outlived rm');
    assert.equal(await lookup(h0, 'a0', 'b0'), ov1Subnet.replace(/0\/24$/, '200'), 'the probe itself');
    for (const h of [h0, h2]) {
      const p = await peersOn(h, 'ov1');
      assert.ok(!p.fdb.includes(mac) && !p.neigh.includes(ip), `${h.name} still has a1: ${JSON.stringify(p)}`);
    }
  });

  it('network rm is refused while any host has an endpoint on it, then removes it everywhere', async () => {
    await fails(h0, ['network', 'rm', 'ov2'], /is in use by container/);
    for (const h of [h0, h1, h2]) assert.ok((await netNames(h)).includes('ov2 overlay swarm'));
    await ok(h1, ['rm', '-f', 'c1']);
    await ok(h2, ['network', 'disconnect', 'ov2', 'both']);
    // A worker's prune leaves swarm networks alone (only managers remove them), and does not fail.
    await ok(h1, ['network', 'prune', '-f']);
    assert.ok((await netNames(h1)).includes('ov2 overlay swarm'));
    const links = await overlayLinks(h0);
    await ok(h0, ['network', 'rm', 'ov2']);
    for (const h of [h0, h1, h2]) {
      assert.ok(!(await netNames(h)).some((l) => l.startsWith('ov2 ')), `${h.name} still lists ov2`);
      assert.equal((await overlayLinks(h)).length, links.length - 2, `${h.name}: ${await overlayLinks(h)}`);
    }
  });

  it("a host killed with -9: its endpoints vanish from every other host within TTL+1 s, and its restart reconciles its kernel with the store", async () => {
    const macB0 = (await ok(h2, ['inspect', '-f', '{{(index .NetworkSettings.Networks "ov1").MacAddress}}', 'b0'])).toLowerCase();
    const ipB0 = await ipOf(h2, 'b0', 'ov1');
    await ok(h0, ['run', '-d', '--name', 'gone0', '--network', 'ov1', 'busybox', 'sleep', '3600']);
    const macGone = (await ok(h0, ['inspect', '-f', '{{(index .NetworkSettings.Networks "ov1").MacAddress}}', 'gone0'])).toLowerCase();
    assert.ok((await peersOn(h2, 'ov1')).fdb.includes(macGone));
    const ov1 = `bvx-${(await ok(h0, ['network', 'inspect', '-f', '{{.Id}}', 'ov1'])).slice(0, 11)}`;
    // One cheap read per host and poll: the FDB as the kernel has it.
    // (The VXLAN device's own entries, with a destination; the bridge's learnt ones age by themselves.)
    const holds = async (h: LabHost) => (await h.host.inNetns('bridge', ['fdb', 'show', 'dev', ov1])).stdout.split('\n').some((l) => l.startsWith(macB0) && l.includes(' dst '));
    const t0 = Date.now();
    await h2.host.stopDaemon('SIGKILL');
    await waitFor(async () => !(await holds(h0)) && !(await holds(h1)), "lab2's endpoints leaving lab0 and lab1", 15_000);
    const gone = Date.now() - t0;
    assert.equal(await lookup(h0, 'a0', 'b0'), '');
    // b0 still runs on lab2, so its address stays claimed: no other host may take it meanwhile
    // (the chaos across hosts found two containers holding one address after such a return).
    const r = await h0.host.docker(['run', '-d', '--name', 'thief', '--network', 'ov1', '--ip', ipB0, 'busybox', 'sleep', '3600']);
    assert.notEqual(r.code, 0, "lab0 took the address of lab2's running b0");
    assert.match(r.stderr, /Address already in use/);
    await h0.host.docker(['rm', '-f', 'thief']);
    // While lab2's berthd is down: a container it knew goes, and junk appears in its kernel.
    await ok(h0, ['rm', '-f', 'gone0']);
    const id = (await ok(h0, ['network', 'inspect', '-f', '{{.Id}}', 'ov1'])).slice(0, 11);
    const vx = `bvx-${id}`;
    const br = `bov-${id}`;
    await h2.host.inNetns('ip', ['link', 'add', 'bvx-0rphan00000', 'type', 'vxlan', 'id', '4999', 'local', h2.addr, 'dstport', '4789', 'nolearning']);
    await h2.host.inNetns('bridge', ['fdb', 'add', '02:42:de:ad:be:ef', 'dev', vx, 'dst', '10.99.0.77', 'self', 'permanent']);
    await h2.host.inNetns('ip', ['neigh', 'add', '10.20.0.99', 'lladdr', '02:42:de:ad:be:ef', 'dev', vx, 'nud', 'permanent']);
    await h2.host.inNetns('ip', ['addr', 'add', '10.20.0.250/24', 'dev', br]);
    await h2.host.startDaemon();
    const want = async () => {
      const eps = JSON.parse(await ok(h0, ['network', 'inspect', 'ov1']))[0].Containers as Record<string, { MacAddress: string }>;
      return Object.values(eps).map((e) => e.MacAddress.toLowerCase());
    };
    // lab2's view after its restart: exactly lab0's and lab1's endpoints of ov1 (web1 on lab1, a0 on lab0).
    await waitFor(async () => {
      const p = await peersOn(h2, 'ov1');
      return !p.fdb.includes(macGone) && !p.fdb.includes('02:42:de:ad:be:ef') && !(await overlayLinks(h2)).includes('bvx-0rphan00000');
    }, "lab2's reconciliation", 20_000);
    const p = await peersOn(h2, 'ov1');
    const remote = [...(await want()), (await ok(h1, ['inspect', '-f', '{{(index .NetworkSettings.Networks "ov1").MacAddress}}', 'web1'])).toLowerCase()].sort();
    assert.deepEqual([...p.fdb].sort(), remote);
    assert.equal(p.neigh.length, remote.length);
    assert.ok(!p.neigh.includes('10.20.0.99'));
    const addrs = JSON.parse((await h2.host.inNetns('ip', ['-j', 'addr', 'show', 'dev', br])).stdout)[0].addr_info.map((a: { local: string }) => a.local);
    assert.deepEqual(addrs.filter((a: string) => a.includes('.')), ['10.20.0.1']);
    // Its running containers are back in the store: lab0 resolves b0 again, and reaches it.
    await waitFor(async () => (await lookup(h0, 'a0', 'b0')) !== '', 'b0 published again', 15_000);
    assert.equal(await ping(h0, 'a0', 'b0'), 0);
    assert.ok(gone <= (TTL + 1) * 1000, `lab2's endpoints went from lab0 and lab1 ${gone} ms after its berthd died (TTL ${TTL} s)`);
  });

  it("a CNI runtime's container on an overlay (berth-cni): named from another host, and kept in the store across a kill -9 and the audits after it", { timeout: 120_000 }, async () => {
    // A runtime's container is a bare namespace that berth-cni puts on ov1 through lab1's berthd.
    const ns = `${h1.host.netns}c`;
    const cni = (command: string) => run(join(PACKAGE_ROOT, 'bin', 'berth-cni'), [], {
      input: JSON.stringify({ cniVersion: '1.0.0', name: 'tooverlay', type: 'berth-cni', network: 'ov1', socket: h1.host.socket }),
      env: { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: 'rt-ov-0001', CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=podov', CNI_PATH: '/nonexistent' },
    });
    await run('ip', ['netns', 'add', ns]);
    try {
      const add = await cni('ADD');
      assert.equal(add.code, 0, add.stdout);
      const ip = (JSON.parse(add.stdout).ips[0].address as string).split('/')[0]!;
      // Named and reached from lab0 when ADD returns, as a berth container is when run returns.
      assert.equal(await lookup(h0, 'a0', 'podov'), ip);
      assert.equal(await ping(h0, 'a0', ip), 0);
      await h1.host.stopDaemon('SIGKILL');
      const logFrom = h1.host.daemonLog.length;
      await h1.host.startDaemon();
      await waitFor(async () => (await lookup(h0, 'a0', 'podov')) === ip, "podov answering on lab0 after lab1's restart", 15_000);
      // Two audits act on what they both find (3 s apart): neither may take it for no one's.
      await new Promise((r) => setTimeout(r, 8000));
      assert.equal(await lookup(h0, 'a0', 'podov'), ip);
      assert.equal(await ping(h0, 'a0', ip), 0);
      assert.doesNotMatch(h1.host.daemonLog.slice(logFrom), /podov.*withdrawn/);
      const del = await cni('DEL');
      assert.equal(del.code, 0, del.stdout);
      await waitFor(async () => (await lookup(h0, 'a0', 'podov')) === '', 'podov gone from lab0 after DEL', 5000);
    } finally {
      await cni('DEL');
      await run('ip', ['netns', 'del', ns]);
    }
  });

  it('a host with more endpoints than one etcd transaction takes writes them all again after a kill -9, and follows the cluster on', { timeout: 180_000 }, async () => {
    // 70 endpoints and their address claims are 140 writes, past etcd's 128 per transaction: the
    // restart's reconcile wrote them in one and failed, listing again every second forever while
    // the host followed nothing (the overlay bench's fill stalled so after a lease lapsed).
    const names = Array.from({ length: 70 }, (_, i) => `many${i}`);
    for (const n of names) await ok(h2, ['run', '-d', '--name', n, '--network', 'ov1', 'busybox', 'sleep', '3600']);
    try {
      await h2.host.stopDaemon('SIGKILL');
      await h2.host.startDaemon();
      const macs = (await ok(h2, ['inspect', '-f', '{{(index .NetworkSettings.Networks "ov1").MacAddress}}', ...names])).toLowerCase().split('\n');
      assert.equal(new Set(macs).size, names.length);
      // In lab0's view, and so in its kernel: each of them has its FDB entry there.
      const onLab0 = async () => { const fdb = new Set((await peersOn(h0, 'ov1')).fdb); return macs.filter((m) => fdb.has(m)).length; };
      await waitFor(async () => (await onLab0()) === names.length, "lab2's 70 endpoints in lab0's view again", 20_000);
      // And lab2 follows what happens elsewhere from then on: a container run on lab0 answers there.
      await ok(h0, ['run', '-d', '--name', 'after70', '--network', 'ov1', 'busybox', 'sleep', '3600']);
      assert.notEqual(await lookup(h2, 'b0', 'after70'), '');
    } finally {
      await h2.host.docker(['rm', '-f', ...names]);
      await h0.host.docker(['rm', '-f', 'after70']);
    }
  });

  it('run waits until every live host has applied it: with one host frozen, run returns only once that host no longer counts', async () => {
    const pid = h2.host.daemonPid!;
    // lab2's berthd cannot apply anything while stopped; its presence lapses within the TTL.
    process.kill(pid, 'SIGSTOP');
    let took = 0;
    let lab2 = '';
    try {
      const t0 = Date.now();
      await ok(h0, ['run', '-d', '--name', 'waited', '--network', 'ov1', 'busybox', 'sleep', '3600']);
      took = Date.now() - t0;
      // Still frozen: run may only have returned because lab2 stopped counting (its presence lapsed).
      lab2 = (await ok(h0, ['node', 'ls', '--format', '{{.Hostname}} {{.Status}}'])).split('\n').find((l) => l.startsWith('lab2 ')) ?? '';
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.equal(lab2, 'lab2 Down', `run returned after ${took} ms while lab2 neither had applied it nor was down`);
    // Running again, lab2 catches up from its watch, and takes a new lease under which its own
    // containers are written again: both directions answer.
    await waitFor(async () => (await lookup(h2, 'b1', 'waited')) !== '', 'lab2 catching up', 15_000);
    await waitFor(async () => (await lookup(h0, 'a0', 'b1')) !== '', "lab2's containers back in the store", 15_000);
    assert.equal(await ping(h0, 'waited', 'b1'), 0);
    await ok(h0, ['rm', '-f', 'waited']);
  });

  it('docker-compose: a project network with driver overlay and attachable: true spans the hosts', async () => {
    const dir = join(h0.host.dir, 'ovproj');
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(join(dir, 'docker-compose.yml'), `
version: "3.8"
services:
  api:
    image: busybox
    command: sleep 3600
    networks: [x]
networks:
  x:
    driver: overlay
    attachable: true
`);
    const dc = (args: string[]) => run('docker-compose', ['-p', 'ovproj', '--no-ansi', ...args], {
      cwd: dir, env: { ...process.env, PATH: `${dirname(DOCKER_CLI)}:${process.env.PATH ?? ''}`, DOCKER_HOST: h0.dockerHost, DOCKER_CONFIG: join(h0.host.dir, 'docker-config') },
    });
    const up = await dc(['up', '-d']);
    assert.equal(up.code, 0, up.stderr);
    assert.ok((await netNames(h1)).includes('ovproj_x overlay swarm'), `${await netNames(h1)}`);
    const ip = await ipOf(h0, 'ovproj_api_1', 'ovproj_x');
    await ok(h1, ['run', '-d', '--name', 'visitor', '--network', 'ovproj_x', 'busybox', 'sleep', '3600']);
    // The service's name (compose's alias) answers on another host, and so does the container.
    assert.equal(await lookup(h1, 'visitor', 'api'), ip);
    assert.equal(await ping(h1, 'visitor', 'ovproj_api_1'), 0);
    await ok(h1, ['rm', '-f', 'visitor']);
    const down = await dc(['down']);
    assert.equal(down.code, 0, down.stderr);
    for (const h of [h0, h1, h2]) assert.ok(!(await netNames(h)).some((l) => l.startsWith('ovproj_x ')), `${h.name} still lists ovproj_x`);
  });
  it('a CA rotation moves every host to a new store client: overlay names still answer everywhere the moment run returns', { timeout: 300_000 }, async () => {
    await ok(h1, ['run', '-d', '--name', 'probe1', '--network', 'ov1', 'busybox', 'sleep', '3600']);
    const r = await run(DOCKER_CLI, ['-H', `unix://${h0.host.socket}`, 'swarm', 'ca', '--rotate'], { env: { ...process.env, DOCKER_CONFIG: join(h0.host.dir, 'docker-config') }, timeout: 240_000 });
    assert.equal(r.code, 0, r.stderr);
    await waitFor(async () => {
      const o = await ok(h0, ['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']);
      return o.split('\n').length === 3 && !/Down|Unknown/.test(o);
    }, 'every node Ready after the rotation', 30_000);
    // The old clients (and any watch still on them) are closed 5 s after their replacement.
    await new Promise((res) => setTimeout(res, 6000));
    const t0 = Date.now();
    await ok(h2, ['run', '-d', '--name', 'rotated', '--network', 'ov1', 'busybox', 'sleep', '3600']);
    const took = Date.now() - t0;
    const ip = await ipOf(h2, 'rotated', 'ov1');
    assert.equal(await lookup(h0, 'a0', 'rotated'), ip, 'by name from lab0, first probe');
    assert.equal(await ping(h1, 'probe1', ip), 0, 'by IP from lab1, first probe');
    // A host whose watch died would not apply it, and run would wait out its 5 s bound for it.
    assert.ok(took < 5000, `run took ${took} ms: a host did not apply it`);
    await ok(h2, ['rm', '-f', 'rotated']);
    assert.equal(await lookup(h0, 'a0', 'rotated'), '', 'gone from lab0 when rm returned');
    await ok(h1, ['rm', '-f', 'probe1']);
  });

  it('a host leaving the swarm takes its containers off swarm networks first, as Docker does: inspect, kernel and the other hosts agree', async () => {
    await ok(h2, ['run', '-d', '--name', 'leaver', '--network', 'ov1', '--network-alias', 'leaving', 'busybox', 'sleep', '3600']);
    await ok(h2, ['network', 'connect', 'bridge', 'leaver']);
    const ip = await ipOf(h2, 'leaver', 'ov1');
    assert.equal(await lookup(h0, 'a0', 'leaving'), ip, 'the probe itself');
    await ok(h2, ['swarm', 'leave']);
    assert.equal(await ok(h2, ['inspect', '-f', '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}', 'leaver']), 'bridge', 'the record still names the overlay');
    // Its overlay interface went with it; the bridge one stays and the container runs on.
    const addrs = await ok(h2, ['exec', 'leaver', 'ip', '-o', '-4', 'addr', 'show']);
    assert.ok(!addrs.includes(` ${ip}/`), `the overlay address is still on an interface: ${addrs}`);
    assert.ok(addrs.includes(` ${await ipOf(h2, 'leaver', 'bridge')}/`), addrs);
    assert.equal(await ok(h2, ['inspect', '-f', '{{.State.Running}}', 'leaver']), 'true');
    assert.ok(!(await netNames(h2)).some((l) => l.startsWith('ov1 ')), 'the worker still lists ov1');
    await waitFor(async () => (await lookup(h0, 'a0', 'leaving')) === '', 'the alias gone from lab0', 10_000);
    assert.notEqual(await ping(h0, 'a0', ip), 0);
    await ok(h2, ['rm', '-f', 'leaver']);
  });
});
