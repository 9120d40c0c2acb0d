import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PrivateDocker } from '../../bench/engines.js';
import { FakePlugin, type Recorded } from './fakeplugin.js';
import { TestHost } from './harness.js';

/**
 * Docker's remote network and IPAM plugins: a fake plugin (fakeplugin.ts) on a unix socket in a
 * temp directory, which berthd finds through --plugin-dir, never /run/docker. Where Docker 20.10's
 * dockerd is installed, the same plugin is run against it too (in a mount namespace of its own
 * whose /etc/docker is a temp directory holding the plugin's spec file) and berth must send the
 * same calls, in the same order, with the same payload keys.
 */

type Cli = (args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;

/** The same user story on either engine: a plugin network with the plugin's IPAM, a container on it, and back. */
async function story(cli: Cli, plugin: string, ipam = plugin): Promise<void> {
  const ok = async (args: string[]) => {
    const r = await cli(args);
    if (r.code !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  await ok(['network', 'create', '-d', plugin, '--ipam-driver', ipam, '--ipam-opt', 'color=blue', '-o', 'flavour=plain', 'pnet']);
  await ok(['run', '-d', '--name', 'pc1', '--network', 'pnet', '-p', '8080:80', '--expose', '53/udp', 'busybox', 'sleep', '300']);
  await ok(['rm', '-f', 'pc1']);
  await ok(['network', 'rm', 'pnet']);
}

/** A call's shape: its method and its payload's keys (and its Options' keys), ids and values aside. */
function shape(c: Recorded): string {
  const b = c.body && typeof c.body === 'object' ? c.body : {};
  const keys = Object.keys(b).sort().join(',');
  const opts = b.Options && typeof b.Options === 'object' ? `{${Object.keys(b.Options).sort().join(',')}}` : '';
  return `${c.method}(${keys})${opts}`;
}

/** A call with its ids and the sandbox path replaced, to compare values across engines. */
function normalised(c: Recorded): Recorded {
  const ids = new Set(['NetworkID', 'EndpointID', 'SandboxKey']);
  // Keys sorted: Go's maps marshal in key order, and JSON objects are unordered anyway.
  const sorted = (_k: string, v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => x.localeCompare(y))) : v);
  return { method: c.method, body: JSON.parse(JSON.stringify(JSON.parse(JSON.stringify(c.body ?? null, (k, v) => (ids.has(k) ? '<id>' : v))), sorted)) };
}

function dockerdInstalled(): boolean {
  try { execFileSync('dockerd', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

describe('plugins: berthd sends the calls Docker 20.10 sends', () => {
  const skip = !dockerdInstalled() ? 'dockerd (Debian\'s docker.io 20.10) is not installed: scripts/bench-setup.sh installs it; this comparison is skipped'
    : !existsSync('/etc/docker') ? '/etc/docker is missing: the private dockerd binds its spec directory over it' : false;
  let dir: string;
  let berth: TestHost;
  let docker: PrivateDocker;
  let forBerth: FakePlugin;
  let forDocker: FakePlugin;
  let macForBerth: FakePlugin;
  let macForDocker: FakePlugin;
  before(async () => {
    if (skip) return;
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-plugins-diff-'));
    await fs.mkdir(join(dir, 'berth-plugins'));
    await fs.mkdir(join(dir, 'etc-docker', 'plugins'), { recursive: true });
    berth = await TestHost.create({ daemonArgs: ['--plugin-dir', join(dir, 'berth-plugins'), '--plugin-spec-dir', join(dir, 'none')] });
    forBerth = new FakePlugin(join(dir, 'berth-plugins'), 'fake', berth.netns);
    await forBerth.start();
    docker = new PrivateDocker(join(dir, 'docker'), join(dir, 'etc-docker'));
    await fs.mkdir(join(dir, 'docker'));
    forDocker = new FakePlugin(dir, 'fake', docker.netns);
    await fs.writeFile(join(dir, 'etc-docker', 'plugins', 'fake.spec'), `unix://${forDocker.socket}\n`);
    // An IPAM that requires MACs (RequiresMACAddress), for both.
    macForBerth = new FakePlugin(join(dir, 'berth-plugins'), 'fakemac', berth.netns, { requiresMac: true, implements: ['IpamDriver'] });
    macForDocker = new FakePlugin(dir, 'fakemac', docker.netns, { requiresMac: true, implements: ['IpamDriver'] });
    await fs.writeFile(join(dir, 'etc-docker', 'plugins', 'fakemac.spec'), `unix://${macForDocker.socket}\n`);
    await docker.start();
    await Promise.all([forDocker.start(), macForBerth.start(), macForDocker.start()]);
  });
  after(async () => {
    if (skip) return;
    const leaks = [...await docker.stop(), ...await berth.destroy()];
    for (const p of [forBerth, forDocker, macForBerth, macForDocker]) await p.stop();
    await fs.rm(dir, { recursive: true, force: true });
    assert.deepEqual(leaks, []);
  });

  it('create, run, rm and network rm: the same calls in the same order with the same payload keys', { skip, timeout: 180_000 }, async () => {
    await story((a) => docker.cli(a), 'fake');
    await story((a) => berth.docker(a), 'fake');
    const d = forDocker.calls.map(shape);
    const b = forBerth.calls.map(shape);
    console.log(`docker:\n  ${d.join('\n  ')}\nberth:\n  ${b.join('\n  ')}`);
    assert.deepEqual(b, d);
    // Beyond the keys: the same values, once ids and paths are set aside (both plugins hand out the same addresses).
    const nb = forBerth.calls.map(normalised);
    const nd = forDocker.calls.map(normalised);
    const differ = nd.flatMap((c, i) => (JSON.stringify(c) === JSON.stringify(nb[i]) ? [] : [`docker ${JSON.stringify(c)}\nberth  ${JSON.stringify(nb[i])}`]));
    assert.deepEqual(differ, [], differ.join('\n'));
  });

  it('an IPAM that requires MACs is told one with each address, and the plugin driver is given it', { skip, timeout: 180_000 }, async () => {
    await story((a) => docker.cli(a), 'fake', 'fakemac');
    await story((a) => berth.docker(a), 'fake', 'fakemac');
    const driverCalls = (p: FakePlugin) => p.calls.filter((c) => c.method === 'NetworkDriver.CreateEndpoint').slice(-1).map(shape);
    assert.deepEqual(macForBerth.calls.map(shape), macForDocker.calls.map(shape));
    assert.deepEqual(driverCalls(forBerth), driverCalls(forDocker));
    const macOf = (p: FakePlugin) => {
      const req = p.calls.filter((c) => c.method === 'IpamDriver.RequestAddress' && c.body.Options?.['com.docker.network.endpoint.macaddress']).pop();
      return req?.body.Options['com.docker.network.endpoint.macaddress'];
    };
    const createdWith = forBerth.calls.filter((c) => c.method === 'NetworkDriver.CreateEndpoint').pop()!.body.Interface.MacAddress;
    assert.match(String(macOf(macForBerth)), /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    assert.equal(createdWith, macOf(macForBerth));
    assert.equal(forDocker.calls.filter((c) => c.method === 'NetworkDriver.CreateEndpoint').pop()!.body.Interface.MacAddress, macOf(macForDocker));
  });

  it('a plugin that answers Err: the same status as Docker, and Docker\'s words after the plugin\'s name', { skip, timeout: 180_000 }, async () => {
    const engines = [
      { api: (m: string, p: string, b?: unknown) => berth.api(m, `/v1.41${p}`, b), plugin: forBerth },
      { api: (m: string, p: string, b?: unknown) => docker.api(m, p, b), plugin: forDocker },
    ];
    const answers: Array<Array<{ status: number; message: string }>> = [];
    for (const e of engines) {
      const got: Array<{ status: number; message: string }> = [];
      const note = (r: { status: number; json?: any }) => got.push({ status: r.status, message: String(r.json?.message ?? '') });
      e.plugin.failNext.set('NetworkDriver.CreateNetwork', 'boom');
      note(await e.api('POST', '/networks/create', { Name: 'perr', Driver: 'fake', CheckDuplicate: true }));
      const made = await e.api('POST', '/networks/create', { Name: 'perr', Driver: 'fake', CheckDuplicate: true });
      assert.equal(made.status, 201, made.body);
      const c = await e.api('POST', '/containers/create?name=perrc', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'perr' } });
      assert.equal(c.status, 201, c.body);
      e.plugin.failNext.set('NetworkDriver.Join', 'nope');
      note(await e.api('POST', '/containers/perrc/start'));
      e.plugin.failNext.set('NetworkDriver.CreateEndpoint', 'nope');
      note(await e.api('POST', '/containers/perrc/start'));
      assert.equal((await e.api('DELETE', '/containers/perrc?force=1')).status, 204);
      assert.equal((await e.api('DELETE', '/networks/perr')).status, 204);
      answers.push(got);
    }
    const [b, d] = answers as [Array<{ status: number; message: string }>, Array<{ status: number; message: string }>];
    console.log(`berth:  ${JSON.stringify(b)}\ndocker: ${JSON.stringify(d)}`);
    assert.deepEqual(b.map((x) => x.status), d.map((x) => x.status));
    assert.deepEqual(b.map((x) => x.message), d.map((x) => x.message.replace('NetworkDriver.', 'plugin "fake": NetworkDriver.')));
  });
});

describe('plugins: a remote network driver and IPAM on berth', () => {
  let dir: string;
  let host: TestHost;
  let plugin: FakePlugin;
  const ok = async (args: string[]) => {
    const r = await host.docker(args);
    assert.equal(r.code, 0, `docker ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  /** The calls the plugin received while `work` ran. */
  const during = async (work: () => Promise<unknown>) => {
    const from = plugin.calls.length;
    await work();
    return plugin.calls.slice(from).map((c) => c.method);
  };
  const inspect = async (ref: string) => JSON.parse(await ok(['network', 'inspect', ref]))[0];

  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'berth-plugins-'));
    // Plugins found in the test's directory only; calls give up after 2 s, Docker's 30 s being too long for a test.
    host = await TestHost.create({ daemonArgs: ['--plugin-dir', dir, '--plugin-spec-dir', join(dir, 'specs'), '--plugin-retry', '2', '--plugin-timeout', '2'] });
    plugin = new FakePlugin(dir, 'fake', host.netns, { poolBase: 88 });
    await plugin.start();
  });
  after(async () => {
    // What a failed test left goes while the plugin still answers: its links are the plugin's to delete.
    await host.docker(['rm', '-f', 'pa', 'pb', 'pc', 'pj', 'ps', 'pk']);
    for (const n of ['pn1', 'pn2', 'pn3', 'pn4']) await host.docker(['network', 'rm', n]);
    await plugin.stop();
    const leaks = await host.destroy();
    await fs.rm(dir, { recursive: true, force: true });
    assert.deepEqual(leaks, []);
  });

  it('runs, connects and disconnects containers on a plugin network with the plugin\'s addresses; they answer by name', { timeout: 120_000 }, async () => {
    await ok(['network', 'create', '-d', 'fake', '--ipam-driver', 'fake', 'pn1']);
    const n = await inspect('pn1');
    assert.equal(n.Driver, 'fake');
    assert.equal(n.IPAM.Driver, 'fake');
    assert.deepEqual(n.IPAM.Config, [{ Subnet: '10.88.0.0/24', Gateway: '10.88.0.1' }]);
    const info = (await host.api('GET', '/v1.41/info')).json;
    assert.ok(info.Plugins.Network.includes('fake'), JSON.stringify(info.Plugins.Network));
    assert.deepEqual((await host.api('GET', '/v1.41/plugins')).json, []);
    assert.match(await ok(['plugin', 'ls']), /^ID\s+NAME\s+DESCRIPTION\s+ENABLED$/);

    await ok(['run', '-d', '--name', 'pa', '--network', 'pn1', 'busybox', 'sleep', '300']);
    await ok(['run', '-d', '--name', 'pb', '--network', 'pn1', 'busybox', 'sleep', '300']);
    const a = JSON.parse(await ok(['inspect', 'pa']))[0];
    assert.equal(a.NetworkSettings.Networks.pn1.IPAddress, '10.88.0.2');
    assert.equal(a.NetworkSettings.Networks.pn1.Gateway, '10.88.0.1');
    // The interface the plugin named, moved in and renamed with its prefix; the gateway and static route it gave.
    const routes = await ok(['exec', 'pa', 'ip', 'route']);
    assert.match(routes, /default via 10\.88\.0\.1 dev eth0/);
    assert.match(routes, /10\.123\.0\.0\/16 via 10\.88\.0\.1 dev eth0/);
    assert.match(await ok(['exec', 'pa', 'ip', 'addr', 'show', 'eth0']), /inet 10\.88\.0\.2\/24/);
    // By name through berth's embedded DNS, over the plugin's own bridge.
    assert.match(await ok(['exec', 'pa', 'ping', '-c', '1', '-W', '2', 'pb']), /1 packets received/);

    // A container on the default bridge joins the plugin network: not its gateway endpoint, so no external connectivity is programmed.
    await ok(['run', '-d', '--name', 'pc', 'busybox', 'sleep', '300']);
    const connected = await during(() => ok(['network', 'connect', 'pn1', 'pc']));
    assert.deepEqual(connected, ['IpamDriver.RequestAddress', 'NetworkDriver.CreateEndpoint', 'NetworkDriver.Join', 'NetworkDriver.EndpointOperInfo', 'NetworkDriver.EndpointOperInfo']);
    assert.match(await ok(['exec', 'pc', 'ping', '-c', '1', '-W', '2', 'pa']), /1 packets received/);
    const left = await during(() => ok(['network', 'disconnect', 'pn1', 'pc']));
    assert.deepEqual(left, ['NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint', 'IpamDriver.ReleaseAddress']);
    assert.doesNotMatch(await ok(['exec', 'pc', 'ip', 'link']), /eth1/);

    await ok(['rm', '-f', 'pa', 'pb', 'pc']);
    await ok(['network', 'rm', 'pn1']);
    assert.equal(plugin.endpoints.size, 0);
    assert.equal(plugin.pools.size, 0);
    assert.deepEqual(await plugin.links(), []);
  });

  it('refuses a plugin that is nowhere with Docker\'s 404, and one that answers Err with its words, leaving nothing', { timeout: 120_000 }, async () => {
    const missing = await host.api('POST', '/v1.41/networks/create', { Name: 'pnx', Driver: 'nosuch', CheckDuplicate: true });
    assert.equal(missing.status, 404);
    assert.equal(missing.json.message, 'plugin "nosuch" not found');

    plugin.failNext.set('NetworkDriver.CreateNetwork', 'boom');
    const refused = await host.api('POST', '/v1.41/networks/create', { Name: 'pn2', Driver: 'fake', IPAM: { Driver: 'fake' }, CheckDuplicate: true });
    assert.equal(refused.status, 500);
    assert.equal(refused.json.message, 'plugin "fake": NetworkDriver.CreateNetwork: boom');
    assert.doesNotMatch(await ok(['network', 'ls', '--format', '{{.Name}}']), /pn2/);
    // The pool the IPAM gave for it went back.
    assert.equal(plugin.pools.size, 0);

    await ok(['network', 'create', '-d', 'fake', '--ipam-driver', 'fake', 'pn2']);
    plugin.failNext.set('NetworkDriver.Join', 'nope');
    const run = await host.docker(['run', '-d', '--name', 'pj', '--network', 'pn2', 'busybox', 'sleep', '300']);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /plugin "fake": NetworkDriver\.Join: nope/);
    // No endpoint at the plugin, only the gateway's address in its pool, no interface, and none in berth's record.
    assert.equal(plugin.endpoints.size, 0);
    assert.deepEqual([...plugin.pools.values()].map((p) => [...p.used].map((ip) => ip.split('.')[3])), [['1']]);
    assert.deepEqual(await plugin.links(), [`fpb${(await inspect('pn2')).Id.slice(0, 8)}`]);
    assert.deepEqual((await inspect('pn2')).Containers, {});
    // A plugin that names the host's own interfaces is refused, and the interface stays where it was.
    for (const wrong of ['lo', `fpb${(await inspect('pn2')).Id.slice(0, 8)}`]) {
      plugin.joinSrcName = wrong;
      const bad = await host.docker(['start', 'pj']);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, new RegExp(`plugin "fake": Join named interface ${wrong}, which is not a free virtual link the plugin made: refused`));
      assert.equal((await host.inNetns('ip', ['link', 'show', 'dev', wrong])).code, 0);
    }
    // Those joins made veths the plugin deletes at DeleteEndpoint: none is left.
    assert.deepEqual(await plugin.links(), [`fpb${(await inspect('pn2')).Id.slice(0, 8)}`]);
    assert.equal(plugin.endpoints.size, 0);
    // The same container starts once the plugin agrees.
    await ok(['start', 'pj']);
    await ok(['rm', '-f', 'pj']);
    await ok(['network', 'rm', 'pn2']);
    assert.equal(plugin.pools.size, 0);
  });

  it('gives up on a plugin that is slow or dies mid-call, naming it, with berthd up; a plugin that comes back is used again', { timeout: 120_000 }, async () => {
    await ok(['network', 'create', '-d', 'fake', '--subnet', '10.89.0.0/24', 'pn3']);
    plugin.delay.set('NetworkDriver.Join', 3500);
    const slow = await host.docker(['run', '-d', '--name', 'ps', '--network', 'pn3', 'busybox', 'sleep', '300']);
    plugin.delay.delete('NetworkDriver.Join');
    assert.notEqual(slow.code, 0);
    assert.match(slow.stderr, /plugin "fake": NetworkDriver\.Join: no answer within 2s/);
    assert.equal(plugin.endpoints.size, 0, 'the endpoint was deleted again');

    plugin.dieOn = 'NetworkDriver.Join';
    const died = await host.docker(['start', 'ps']);
    assert.notEqual(died.code, 0);
    assert.match(died.stderr, /plugin "fake": NetworkDriver\.Join: /);
    assert.equal((await host.api('GET', '/_ping')).status, 200);
    assert.deepEqual((await inspect('pn3')).Containers, {});
    assert.deepEqual((await inspect('pn3')).IPAM.Config, [{ Subnet: '10.89.0.0/24', Gateway: '10.89.0.1' }]);

    await plugin.start();
    await ok(['start', 'ps']);
    assert.match(JSON.parse(await ok(['inspect', 'ps']))[0].NetworkSettings.Networks.pn3.IPAddress, /^10\.89\.0\.\d+$/);
    assert.match(await ok(['exec', 'ps', 'ip', 'route']), /default via 10\.89\.0\.1 dev eth0/);
    await ok(['rm', '-f', 'ps']);
    await ok(['network', 'rm', 'pn3']);
  });

  it('after a kill -9 of berthd, asks the plugin nothing at start and undoes exactly what was done', { timeout: 120_000 }, async () => {
    // The dying plugin above could not be told to delete its endpoint: count from here.
    const endpointsBefore = plugin.endpoints.size;
    await ok(['network', 'create', '-d', 'fake', '--ipam-driver', 'fake', 'pn4']);
    await ok(['run', '-d', '--name', 'pk', '--network', 'pn4', 'busybox', 'sleep', '300']);
    const atStart = await during(async () => {
      await host.stopDaemon('SIGKILL');
      await host.startDaemon();
    });
    assert.deepEqual(atStart, []);
    assert.match(await ok(['exec', 'pk', 'ip', 'addr', 'show', 'eth0']), /inet 10\.88\.\d+\.2\/24/);
    // The new berthd activates the plugin at its first use, as a restarted dockerd does.
    assert.deepEqual(await during(() => ok(['rm', '-f', 'pk'])),
      ['Plugin.Activate', 'NetworkDriver.GetCapabilities', 'IpamDriver.GetCapabilities', 'NetworkDriver.RevokeExternalConnectivity', 'NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint', 'IpamDriver.ReleaseAddress']);
    assert.deepEqual(await during(() => ok(['network', 'rm', 'pn4'])), ['IpamDriver.ReleaseAddress', 'IpamDriver.ReleasePool', 'NetworkDriver.DeleteNetwork']);
    assert.equal(plugin.endpoints.size, endpointsBefore);
    assert.deepEqual(await plugin.links(), []);
  });
});
