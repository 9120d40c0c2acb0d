import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DockerLabHost } from '../../bench/swarmlab.js';
import { run, runOk } from '../../src/util/exec.js';
import { FakePlugin, type Recorded } from './fakeplugin.js';
import { waitFor } from './harness.js';
import { dockerOk, Lab, type LabHost } from './lab.js';

/**
 * A global-scope Docker network plugin in a swarm of three lab hosts (one manager, two workers):
 * the recording fake plugin answers `Scope: global` on every host, each host finding its own copy
 * in a directory of its own (--plugin-dir), never /run/docker/plugins. Its networks are swarm
 * networks: AllocateNetwork once on the manager, CreateNetwork on a host when its first container
 * joins and DeleteNetwork when its last leaves, FreeNetwork at rm, node discovery as hosts come
 * and go; and an AllocateNetwork that fails leaves nothing anywhere. Where Docker 20.10's dockerd is
 * installed, the same plugin runs in a Docker swarm of three hosts first: its node discovery is
 * the one berth must send, and what Docker does differently is checked there and named (Docker's
 * swarmkit takes no legacy plugin for a swarm network, so AllocateNetwork and the calls after it
 * follow libnetwork's and swarmkit's sources, Docker's path for managed plugins).
 */

const PLUGIN = 'fakeplugin';
const GENERIC = 'com.docker.network.generic';
const NOT_A_MANAGER = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.';
const FROM_WORKER = 'Cannot create a multi-host network from a worker node. Please create the network from a manager node.';

/** A plugin's node discovery calls, each node's address named by its host (h0, h1 …) so engines compare. */
function discoveryOf(p: FakePlugin, addrs: string[]): string[] {
  const name = (a: string) => (a ? `h${addrs.indexOf(a)}` : '-');
  return p.calls.filter((c) => c.method.startsWith('NetworkDriver.Discover'))
    .map((c) => `${c.method.slice(22)} ${c.body.DiscoveryType} ${name(c.body.DiscoveryData.Address)} ${name(c.body.DiscoveryData.BindAddress)} ${c.body.DiscoveryData.Self}`);
}

/**
 * Node discovery as the engine under test must send it, checked on Docker 20.10 below and on berth
 * after: a plugin active when the swarm forms hears of this node (with its bind address), then of
 * each node as it joins; every active plugin hears of a node that leaves.
 */
const AT_FORMATION = ['New 1 h0 h0 true', 'New 1 h1 - false', 'New 1 h2 - false'];
const AT_LEAVE = 'Delete 1 h2 - false';

function dockerdInstalled(): boolean {
  try { execFileSync('dockerd', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

/** A Docker 20.10 swarm host whose /etc/docker (its plugin spec files) is a directory of its own, in a mount namespace of its own. */
class PrivateSwarmHost extends DockerLabHost {
  constructor(dir: string, netns: string, index: number, underlay: string, private readonly etc: string) { super(dir, netns, index, underlay); }
  protected override spawnDaemon(cmd: string, args: string[]): void {
    super.spawnDaemon('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/docker && exec "$@"', this.etc, cmd, ...args]);
  }
}

describe('plugins: the same global-scope plugin in a Docker 20.10 swarm', () => {
  const skip = !dockerdInstalled() ? 'dockerd (Debian\'s docker.io 20.10) is not installed: scripts/bench-setup.sh installs it; this comparison is skipped'
    : !existsSync('/etc/docker') ? '/etc/docker is missing: each private dockerd binds its spec directory over it' : false;
  let base: string;
  let underlay: string;
  const hosts: PrivateSwarmHost[] = [];
  const plugins: FakePlugin[] = [];
  const addrs = () => hosts.map((h) => h.addr);
  const cli = async (i: number, args: string[]) => {
    const r = await hosts[i]!.cli(args);
    assert.equal(r.code, 0, `docker${i}: docker ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };

  before(async () => {
    if (skip) return;
    base = await fs.mkdtemp(join(tmpdir(), 'berth-plugins-global-docker-'));
    underlay = `bb-du-${process.pid}`;
    await runOk('ip', ['netns', 'add', underlay]);
    await runOk('ip', ['-n', underlay, '-batch', '-'], { input: 'link set lo up\nlink add bbub0 type bridge\nlink set bbub0 up\n' });
    for (const i of [0, 1, 2]) {
      const etc = join(base, `etc${i}`);
      await fs.mkdir(join(etc, 'plugins'), { recursive: true });
      const h = new PrivateSwarmHost(await fs.mkdtemp(join(base, `docker${i}-`)), `bb-dh${i}-${process.pid}`, i, underlay, etc);
      hosts.push(h);
      // Every host names it fakeplugin, each through its own spec file to its own socket.
      const p = new FakePlugin(base, `${PLUGIN}${i}`, h.netns, { scope: 'global', implements: ['NetworkDriver'] });
      plugins.push(p);
      await fs.writeFile(join(etc, 'plugins', `${PLUGIN}.spec`), `unix://${p.socket}\n`);
      await h.start();
      await p.start();
    }
  });

  after(async () => {
    if (skip) return;
    const leaks: string[] = [];
    for (const h of [...hosts].reverse()) leaks.push(...(await h.stop().catch((e) => [`${h.netns}: ${e}`])));
    for (const p of plugins) await p.stop();
    await run('ip', ['netns', 'del', underlay]);
    if (existsSync(`/run/netns/${underlay}`)) leaks.push(`netns ${underlay}`);
    await fs.rm(base, { recursive: true, force: true });
    // Containerd shims' sockets under the shared /run/containerd are seen by the first host stopped while the others run.
    assert.deepEqual(leaks.filter((l) => !/^files left under \/run\/containerd/.test(l) || l.split(': ')[1]!.split(' ').some((f) => existsSync(f))), []);
  });

  it('outside a swarm: NOT_A_MANAGER (after a CreateNetwork and DeleteNetwork berth does not make)', { skip, timeout: 60_000 }, async () => {
    const r = await hosts[0]!.api('POST', '/networks/create', { Name: 'before', Driver: PLUGIN, CheckDuplicate: true });
    assert.deepEqual([r.status, r.json.message], [500, NOT_A_MANAGER]);
    assert.deepEqual(plugins[0]!.methods(), ['Plugin.Activate', 'NetworkDriver.GetCapabilities', 'NetworkDriver.CreateNetwork', 'NetworkDriver.DeleteNetwork']);
  });

  it('node discovery as the swarm forms, on a worker\'s first use and as a node leaves; a legacy plugin\'s swarm network is refused', { skip, timeout: 180_000 }, async () => {
    const [h0] = hosts;
    await cli(0, ['swarm', 'init', '--advertise-addr', h0!.addr, '--listen-addr', `${h0!.addr}:2377`]);
    const token = await cli(0, ['swarm', 'join-token', '-q', 'worker']);
    for (const i of [1, 2]) await cli(i, ['swarm', 'join', '--advertise-addr', hosts[i]!.addr, '--listen-addr', `${hosts[i]!.addr}:2377`, '--token', token, `${h0!.addr}:2377`]);
    await waitFor(async () => discoveryOf(plugins[0]!, addrs()).length >= 3, 'docker0: node discovery', 20_000);
    assert.deepEqual(discoveryOf(plugins[0]!, addrs()), AT_FORMATION);
    const w = await hosts[1]!.api('POST', '/networks/create', { Name: 'onworker', Driver: PLUGIN, Attachable: true, CheckDuplicate: true });
    assert.deepEqual([w.status, w.json.message], [403, FROM_WORKER]);
    // Activated after the nodes joined, Docker tells it of its own node only (berth: of the others too).
    assert.deepEqual(discoveryOf(plugins[1]!, addrs()), ['New 1 h1 h1 true']);
    // Swarmkit takes no legacy (unmanaged) plugin for a swarm network: berth, which has no managed ones, does.
    const m = await hosts[0]!.api('POST', '/networks/create', { Name: 'gnet', Driver: PLUGIN, Attachable: true, CheckDuplicate: true });
    assert.deepEqual([m.status, m.json.message], [400, `rpc error: code = InvalidArgument desc = legacy plugin ${PLUGIN} of type NetworkDriver is not supported in swarm mode`]);
    assert.ok(!plugins.some((p) => p.calls.some((c) => c.method === 'NetworkDriver.AllocateNetwork')));
    await cli(2, ['swarm', 'leave']);
    for (const i of [0, 1]) await waitFor(async () => discoveryOf(plugins[i]!, addrs()).includes(AT_LEAVE), `docker${i}: DiscoverDelete`, 30_000);
    // The refused create loaded the plugin again, and Docker told it of this node again.
    assert.deepEqual(discoveryOf(plugins[0]!, addrs()), [...AT_FORMATION, 'New 1 h0 h0 true', AT_LEAVE]);
    assert.deepEqual(discoveryOf(plugins[1]!, addrs()).slice(-1), [AT_LEAVE]);
    assert.deepEqual(discoveryOf(plugins[2]!, addrs()), []);
  });
});

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
  const discovery = (i: number) => discoveryOf(plugins[i]!, lab.hosts.map((h) => h.addr));
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
    await h2?.host.docker(['rm', '-f', 'g2']);
    await h0?.host.docker(['rm', '-f', 'gc1', 'gc2', 'gc3']);
    for (const n of ['gnet', 'gnet2', 'gnet3', 'gfail']) await h0?.host.docker(['network', 'rm', n]);
    for (const p of plugins) await p.stop();
    const leaks = lab ? await lab.destroy() : [];
    await fs.rm(dir, { recursive: true, force: true });
    assert.deepEqual(leaks, []);
  });

  it('refuses a network on it outside a swarm, naming the plugin, with nothing asked of the plugin but its activation', async () => {
    const r = await h0.host.api('POST', '/networks/create', { Name: 'gnet', Driver: PLUGIN, Attachable: true });
    assert.equal(r.status, 500, r.body);
    assert.equal(r.json.message, `plugin "fakeplugin" is a global-scope network driver, whose networks are swarm networks: ${NOT_A_MANAGER}`);
    assert.deepEqual(plugins[0]!.methods(), ['Plugin.Activate', 'NetworkDriver.GetCapabilities']);
    assert.ok(!(await netLines(h0)).some((l) => l.startsWith('gnet ')));
  });

  it('forms a swarm; a worker refuses a create with libnetwork\'s words', { timeout: 120_000 }, async () => {
    await lab.formSwarm(0);
    for (const h of [h0, h1, h2]) await waitFor(async () => (await netLines(h)).includes('ingress overlay swarm'), `${h.name}: in the swarm`);
    const r = await h1.host.api('POST', '/networks/create', { Name: 'gnet', Driver: PLUGIN, Attachable: true });
    assert.equal(r.status, 403, r.body);
    assert.equal(r.json.message, `plugin "fakeplugin" is a global-scope network driver, whose networks are swarm networks: ${FROM_WORKER}`);
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
    assert.deepEqual(discovery(0), AT_FORMATION);
    // h1's plugin was activated once h1 was in: told of itself first, then (unlike Docker) of the nodes already there.
    assert.deepEqual(discovery(1), ['New 1 h1 h1 true', 'New 1 h0 - false', 'New 1 h2 - false']);
    assert.deepEqual(discovery(2), []);
    // h2 leaves with a container on the network: its plugin hears the endpoint go before the network, as Docker disconnects it.
    await ok(h2, ['run', '-d', '--name', 'g2', '--network', 'gnet', 'busybox', 'sleep', '300']);
    const from2 = plugins[2]!.calls.length;
    await ok(h2, ['swarm', 'leave']);
    for (const i of [0, 1]) await waitFor(async () => discovery(i).length === 4, `host ${i}: DiscoverDelete of ${h2.name}`, 15_000);
    assert.equal(discovery(0)[3], AT_LEAVE);
    assert.equal(discovery(1)[3], AT_LEAVE);
    assert.deepEqual(methods(2, from2), ['RevokeExternalConnectivity', 'Leave', 'DeleteEndpoint', 'DeleteNetwork']);
    // Told of the nodes at its activation, and that each is gone when its node left.
    assert.deepEqual(discovery(2), ['New 1 h2 h2 true', 'New 1 h0 - false', 'New 1 h1 - false', 'Delete 1 h2 h2 true', 'Delete 1 h0 - false', 'Delete 1 h1 - false']);
    await ok(h2, ['rm', '-f', 'g2']);
    assert.deepEqual(methods(2, from2).length, 4, 'the container\'s removal asks the plugin nothing more');
    assert.deepEqual([plugins[2]!.endpoints.size, await plugins[2]!.links()], [0, []]);
  });

  it('deletes a host\'s copy with its last container, after a kill -9 of berthd too, and frees the network once on the manager at rm', { timeout: 120_000 }, async () => {
    const from0 = plugins[0]!.calls.length;
    await ok(h0, ['rm', '-f', 'g0']);
    assert.deepEqual(methods(0, from0), ['RevokeExternalConnectivity', 'Leave', 'DeleteEndpoint', 'DeleteNetwork']);
    // A crash and a restart in between: nothing is asked at start, and the leave undoes exactly what was done.
    await h1.host.stopDaemon('SIGKILL');
    const from1 = plugins[1]!.calls.length;
    await h1.host.startDaemon();
    await waitFor(async () => (await netLines(h1)).includes('gnet fakeplugin swarm'), 'lab1: back in the swarm');
    assert.deepEqual(methods(1, from1), []);
    await ok(h1, ['rm', '-f', 'g1']);
    assert.deepEqual(methods(1, from1), ['Plugin.Activate', 'GetCapabilities', 'RevokeExternalConnectivity', 'Leave', 'DeleteEndpoint', 'DeleteNetwork']);
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
    // IPv6 is refused before the plugin is asked anything.
    const allocations = calls(0, 'AllocateNetwork').length;
    const v6 = await h0.host.api('POST', '/networks/create', { Name: 'gfail', Driver: PLUGIN, Attachable: true, EnableIPv6: true, CheckDuplicate: true });
    assert.equal(v6.status, 400, v6.body);
    assert.equal(calls(0, 'AllocateNetwork').length, allocations);
    // The subnet the failed create had chosen is the next create's: nothing of it stayed in the store.
    await ok(h0, ['network', 'create', '-d', PLUGIN, '--attachable', 'gnet2']);
    assert.equal(JSON.parse(await ok(h0, ['network', 'inspect', 'gnet2']))[0].IPAM.Config[0].Subnet, subnet);
    await ok(h0, ['network', 'rm', 'gnet2']);
    assert.equal(calls(0, 'AllocateNetwork').length, calls(0, 'FreeNetwork').length + 1, 'every allocation that took was freed');
  });
  it('containers joining and leaving at once on one host: one CreateNetwork before every endpoint, one DeleteNetwork after the last', { timeout: 120_000 }, async () => {
    await ok(h0, ['network', 'create', '-d', PLUGIN, '--attachable', 'gnet3']);
    const from = plugins[0]!.calls.length;
    const names = ['gc1', 'gc2', 'gc3'];
    await Promise.all(names.map((c) => ok(h0, ['run', '-d', '--name', c, '--network', 'gnet3', 'busybox', 'sleep', '300'])));
    await Promise.all(names.map((c) => ok(h0, ['rm', '-f', c])));
    const seq = methods(0, from);
    assert.equal(seq.filter((m) => m === 'CreateNetwork').length, 1, seq.join(' '));
    assert.equal(seq.filter((m) => m === 'DeleteNetwork').length, 1, seq.join(' '));
    assert.equal(seq[0], 'CreateNetwork');
    assert.equal(seq.at(-1), 'DeleteNetwork');
    assert.equal(seq.filter((m) => m === 'CreateEndpoint').length, 3);
    await ok(h0, ['network', 'rm', 'gnet3']);
    assert.deepEqual([plugins[0]!.endpoints.size, await plugins[0]!.links()], [0, []]);
  });
});
