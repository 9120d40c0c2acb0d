import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FakePlugin, type Recorded } from './fakeplugin.js';
import { waitFor } from './harness.js';
import { dockerOk, Lab, type LabHost } from './lab.js';

/**
 * A global-scope Docker network plugin in a swarm of three lab hosts (one manager, two workers):
 * the recording fake plugin answers `Scope: global` on every host, each host finding its own copy
 * in a directory of its own (--plugin-dir), never /run/docker/plugins. Its networks are swarm
 * networks: AllocateNetwork once on the manager, CreateNetwork on a host when its first container
 * joins and DeleteNetwork when its last leaves, FreeNetwork at rm, node discovery as hosts come
 * and go; and an AllocateNetwork that fails leaves nothing anywhere.
 */

const PLUGIN = 'fakeplugin';
const GENERIC = 'com.docker.network.generic';

describe('plugins: a global-scope network plugin in a swarm', () => {
  let dir: string;
  let lab: Lab;
  let h0: LabHost, h1: LabHost, h2: LabHost;
  const plugins: FakePlugin[] = [];
  let netId = '';
  let subnet = '';

  const ok = dockerOk;
  /** The calls of a host's plugin, method by method, from `from` on. */
  const calls = (i: number, method: string, from = 0): Recorded[] => plugins[i]!.calls.slice(from).filter((c) => c.method === `NetworkDriver.${method}`);
  /** The NetworkDriver methods a host's plugin received from `from` on, discovery aside (it runs on its own). */
  const methods = (i: number, from = 0) => plugins[i]!.calls.slice(from).map((c) => c.method.replace(/^NetworkDriver\./, '')).filter((m) => !m.startsWith('Discover'));
  const discovery = (i: number) => plugins[i]!.calls.filter((c) => c.method.startsWith('NetworkDriver.Discover')).map((c) => `${c.method.slice(22)} ${c.body.DiscoveryType} ${c.body.DiscoveryData.Address} ${c.body.DiscoveryData.BindAddress || '-'} ${c.body.DiscoveryData.Self}`);
  const netLines = async (h: LabHost) => (await ok(h, ['network', 'ls', '--format', '{{.Name}} {{.Driver}} {{.Scope}}'])).split('\n');

  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-plugins-global-'));
    for (const i of [0, 1, 2]) await fs.mkdir(join(dir, `p${i}`));
    // Calls give up after a few seconds: Docker's 30 s of retries are too long for a test.
    lab = await Lab.create(3, {
      leaseTtlSec: 3, seedBusybox: true,
      hostArgs: (i) => ['--plugin-dir', join(dir, `p${i}`), '--plugin-spec-dir', join(dir, 'specs'), '--plugin-retry', '2', '--plugin-timeout', '5'],
    });
    [h0, h1, h2] = lab.hosts as [LabHost, LabHost, LabHost];
    for (const h of lab.hosts) {
      const p = new FakePlugin(join(dir, `p${h.index}`), PLUGIN, h.host.netns, { scope: 'global', implements: ['NetworkDriver'] });
      await p.start();
      plugins.push(p);
    }
  });

  after(async () => {
    // What a failed test left goes while the plugins still answer: their links are theirs to delete.
    await h0?.host.docker(['rm', '-f', 'g0']);
    await h1?.host.docker(['rm', '-f', 'g1']);
    for (const n of ['gnet', 'gnet2', 'gfail']) await h0?.host.docker(['network', 'rm', n]);
    for (const p of plugins) await p.stop();
    const leaks = lab ? await lab.destroy() : [];
    await fs.rm(dir, { recursive: true, force: true });
    assert.deepEqual(leaks, []);
  });

  it('refuses a network on it outside a swarm, naming the plugin, with nothing asked of the plugin but its activation', async () => {
    const r = await h0.host.api('POST', '/networks/create', { Name: 'gnet', Driver: PLUGIN, Attachable: true });
    assert.equal(r.status, 403, r.body);
    assert.match(r.json.message, /^plugin "fakeplugin" is a global-scope network driver, whose networks are swarm networks: This node is not a swarm manager/);
    assert.deepEqual(plugins[0]!.methods(), ['Plugin.Activate', 'NetworkDriver.GetCapabilities']);
    assert.ok(!(await netLines(h0)).some((l) => l.startsWith('gnet ')));
  });

  it('forms a swarm; a worker refuses a create with libnetwork\'s words', { timeout: 120_000 }, async () => {
    await lab.formSwarm(0);
    for (const h of [h0, h1, h2]) await waitFor(async () => (await netLines(h)).includes('ingress overlay swarm'), `${h.name}: in the swarm`);
    const r = await h1.host.api('POST', '/networks/create', { Name: 'gnet', Driver: PLUGIN, Attachable: true });
    assert.equal(r.status, 403, r.body);
    assert.equal(r.json.message, 'plugin "fakeplugin" is a global-scope network driver, whose networks are swarm networks: Cannot create a multi-host network from a worker node. Please create the network from a manager node.');
    assert.deepEqual(methods(1), ['Plugin.Activate', 'GetCapabilities']);
  });

  it('allocates the network once on the manager, and every host knows it as a swarm network with the allocated options', { timeout: 60_000 }, async () => {
    netId = await ok(h0, ['network', 'create', '-d', PLUGIN, '--attachable', '-o', 'color=blue', 'gnet']);
    const alloc = calls(0, 'AllocateNetwork');
    assert.equal(alloc.length, 1);
    const insp = JSON.parse(await ok(h0, ['network', 'inspect', 'gnet']))[0];
    subnet = insp.IPAM.Config[0].Subnet;
    const gateway = insp.IPAM.Config[0].Gateway;
    assert.deepEqual(alloc[0]!.body, {
      NetworkID: netId, Options: { color: 'blue' },
      IPv4Data: [{ AddressSpace: '', Pool: subnet, Gateway: `${gateway}/${subnet.split('/')[1]}` }], IPv6Data: null,
    });
    const allocated = { color: 'blue', 'fake.allocated': `vni-${netId.slice(0, 4)}` };
    for (const h of [h0, h1, h2]) {
      assert.ok((await netLines(h)).includes('gnet fakeplugin swarm'), `${h.name}: ${await netLines(h)}`);
      const n = JSON.parse(await ok(h, ['network', 'inspect', 'gnet']))[0];
      assert.deepEqual([n.Id, n.Scope, n.Driver, n.Attachable, n.Options, n.IPAM.Config], [netId, 'swarm', PLUGIN, true, allocated, insp.IPAM.Config]);
    }
    // Made on no host yet: a host makes its copy when a container of its own joins.
    for (const i of [0, 1, 2]) assert.deepEqual(calls(i, 'CreateNetwork'), [], `host ${i}`);
    assert.deepEqual(calls(1, 'AllocateNetwork'), []);
  });

  it('creates the network on each host that runs a container on it, with the allocated options, and those containers resolve each other', { timeout: 120_000 }, async () => {
    const from0 = plugins[0]!.calls.length;
    const from1 = plugins[1]!.calls.length;
    await ok(h0, ['run', '-d', '--name', 'g0', '--network', 'gnet', 'busybox', 'sleep', '300']);
    await ok(h1, ['run', '-d', '--name', 'g1', '--network', 'gnet', 'busybox', 'sleep', '300']);
    const joinSeq = ['CreateNetwork', 'CreateEndpoint', 'Join', 'ProgramExternalConnectivity', 'EndpointOperInfo', 'EndpointOperInfo'];
    assert.deepEqual(methods(0, from0), joinSeq);
    assert.deepEqual(methods(1, from1), joinSeq);
    const prefix = subnet.split('/')[1];
    const gateway = JSON.parse(await ok(h0, ['network', 'inspect', 'gnet']))[0].IPAM.Config[0].Gateway;
    for (const i of [0, 1]) {
      assert.deepEqual(calls(i, 'CreateNetwork')[0]!.body, {
        NetworkID: netId, Options: { [GENERIC]: { color: 'blue', 'fake.allocated': `vni-${netId.slice(0, 4)}` }, 'com.docker.network.enable_ipv6': false },
        IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: subnet, Gateway: `${gateway}/${prefix}` }], IPv6Data: [],
      }, `host ${i}`);
    }
    assert.deepEqual(plugins[2]!.methods(), [], 'a host that never used the network is asked nothing');
    // One address space across hosts: the swarm's.
    const ip0 = await ok(h0, ['inspect', '-f', '{{.NetworkSettings.Networks.gnet.IPAddress}}', 'g0']);
    const ip1 = await ok(h1, ['inspect', '-f', '{{.NetworkSettings.Networks.gnet.IPAddress}}', 'g1']);
    assert.notEqual(ip0, ip1);
    assert.equal(calls(1, 'CreateEndpoint')[0]!.body.Interface.Address, `${ip1}/${prefix}`);
    const resolved = (await ok(h0, ['exec', 'g0', 'nslookup', 'g1'])).match(/Address(?: 1)?:\s+([\d.]+)\s*$/m)?.[1];
    assert.equal(resolved, ip1);
    const peers = JSON.parse(await ok(h0, ['network', 'inspect', 'gnet']))[0].Peers.map((p: { IP: string }) => p.IP).sort();
    assert.deepEqual(peers, [h0.addr, h1.addr]);
  });

  it('tells each host\'s plugin of itself and the other nodes, and of a node that leaves', { timeout: 60_000 }, async () => {
    // h0's plugin was active when the swarm was made: told of itself, then of each node as it joined.
    assert.deepEqual(discovery(0), [`New 1 ${h0.addr} ${h0.addr} true`, `New 1 ${h1.addr} - false`, `New 1 ${h2.addr} - false`]);
    // h1's plugin was activated once h1 was in: told of itself first, then of the nodes already there.
    assert.deepEqual(discovery(1), [`New 1 ${h1.addr} ${h1.addr} true`, `New 1 ${h0.addr} - false`, `New 1 ${h2.addr} - false`]);
    assert.deepEqual(discovery(2), []);
    await ok(h2, ['swarm', 'leave']);
    for (const i of [0, 1]) await waitFor(async () => discovery(i).length === 4, `host ${i}: DiscoverDelete of ${h2.name}`, 15_000);
    assert.equal(discovery(0)[3], `Delete 1 ${h2.addr} - false`);
    assert.equal(discovery(1)[3], `Delete 1 ${h2.addr} - false`);
  });

  it('deletes a host\'s copy with its last container, and frees the network once on the manager at rm', { timeout: 120_000 }, async () => {
    const from0 = plugins[0]!.calls.length;
    const from1 = plugins[1]!.calls.length;
    await ok(h0, ['rm', '-f', 'g0']);
    assert.deepEqual(methods(0, from0), ['RevokeExternalConnectivity', 'Leave', 'DeleteEndpoint', 'DeleteNetwork']);
    await ok(h1, ['rm', '-f', 'g1']);
    assert.deepEqual(methods(1, from1), ['RevokeExternalConnectivity', 'Leave', 'DeleteEndpoint', 'DeleteNetwork']);
    assert.deepEqual(calls(0, 'FreeNetwork'), []);
    const rmFrom0 = plugins[0]!.calls.length;
    const rmFrom1 = plugins[1]!.calls.length;
    await ok(h0, ['network', 'rm', 'gnet']);
    assert.deepEqual(methods(0, rmFrom0), ['FreeNetwork']);
    assert.deepEqual(calls(0, 'FreeNetwork')[0]!.body, { NetworkID: netId });
    assert.deepEqual(methods(1, rmFrom1), []);
    for (const h of [h0, h1]) assert.ok(!(await netLines(h)).some((l) => l.startsWith('gnet ')), h.name);
    for (const p of plugins) assert.deepEqual([p.endpoints.size, await p.links()], [0, []]);
  });

  it('an AllocateNetwork that fails: Docker\'s 500 with the plugin\'s words, nothing in the store, the subnet free again', { timeout: 60_000 }, async () => {
    plugins[0]!.failNext.set('NetworkDriver.AllocateNetwork', 'no VNI left');
    const r = await h0.host.api('POST', '/networks/create', { Name: 'gfail', Driver: PLUGIN, Attachable: true, CheckDuplicate: true });
    assert.equal(r.status, 500, r.body);
    assert.equal(r.json.message, 'plugin "fakeplugin": NetworkDriver.AllocateNetwork: no VNI left');
    for (const h of [h0, h1]) assert.ok(!(await netLines(h)).some((l) => l.startsWith('gfail ')), h.name);
    // The subnet the failed create had chosen is the next create's: nothing of it stayed in the store.
    await ok(h0, ['network', 'create', '-d', PLUGIN, '--attachable', 'gnet2']);
    assert.equal(JSON.parse(await ok(h0, ['network', 'inspect', 'gnet2']))[0].IPAM.Config[0].Subnet, subnet);
    await ok(h0, ['network', 'rm', 'gnet2']);
    assert.equal(calls(0, 'AllocateNetwork').length, calls(0, 'FreeNetwork').length + 1, 'every allocation that took was freed');
  });
});
