import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { TestHost, waitFor } from './harness.js';

/**
 * berthd killed with SIGKILL in the middle of `start` and of `network connect`, at many moments:
 * after each restart the store and the kernel must agree. Seeded, so a failure can be replayed
 * (BERTH_CRASH_SEED); BERTH_CRASH_CYCLES runs more cycles.
 */
const seed = Number(process.env.BERTH_CRASH_SEED ?? Date.now() % 100000);
const cycles = Number(process.env.BERTH_CRASH_CYCLES ?? 6);
let state = seed;
function random(): number {
  state = (state * 1103515245 + 12345) % 2147483648;
  return state / 2147483648;
}

describe(`berthd killed mid-operation (seed ${seed})`, () => {
  let host: TestHost;

  before(async () => {
    host = await TestHost.create();
    assert.equal((await host.api('POST', '/networks/create', { Name: 'cra', IPAM: { Config: [{ Subnet: '10.77.0.0/24' }] } })).status, 201);
    assert.equal((await host.api('POST', '/networks/create', { Name: 'crb', IPAM: { Config: [{ Subnet: '10.78.0.0/24' }] } })).status, 201);
  });

  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  /** Host ends of veths in the test host's namespace (berth names them vb…). */
  async function hostVeths(): Promise<string[]> {
    const r = await run('ip', ['-n', host.netns, '-o', 'link', 'show']);
    return r.stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '').filter((n) => n.startsWith('vb'));
  }

  /** Interfaces (but lo) inside a container's namespace, from the pin berth keeps. */
  async function interfacesIn(netnsPath: string): Promise<string[]> {
    const r = await run('nsenter', [`--net=${netnsPath}`, 'ip', '-o', 'link', 'show']);
    return r.stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '').filter((n) => n && n !== 'lo').sort();
  }

  /** Every invariant a crash must not break: what the store says is exactly what the kernel has. */
  async function checkInvariants(): Promise<void> {
    const list = (await host.api('GET', '/containers/json?all=1')).json as Array<{ Id: string; State: string }>;
    let runningEndpoints = 0;
    const addresses = new Set<string>();
    for (const s of list) {
      const c = (await host.api('GET', `/containers/${s.Id}/json`)).json;
      const eps = Object.values(c.NetworkSettings.Networks as Record<string, { IPAddress: string; EndpointID: string }>);
      if (c.State.Running) {
        const pin = c.NetworkSettings.SandboxKey as string;
        assert.ok(existsSync(pin), `${s.Id}: running without its namespace pin`);
        // Every recorded endpoint has its interface, and no interface is unrecorded.
        assert.equal((await interfacesIn(pin)).length, eps.filter((e) => e.EndpointID).length, `${s.Id}: interfaces and endpoints disagree`);
        for (const e of eps) {
          if (!e.IPAddress) continue;
          assert.ok(!addresses.has(e.IPAddress), `address ${e.IPAddress} held twice`);
          addresses.add(e.IPAddress);
          runningEndpoints++;
        }
      } else {
        assert.ok(eps.every((e) => !e.IPAddress && !e.EndpointID), `${s.Id}: stopped but holds an address`);
        assert.equal(c.NetworkSettings.SandboxKey || '', '', `${s.Id}: stopped but has a sandbox`);
      }
    }
    assert.equal((await hostVeths()).length, runningEndpoints, 'host veths and running endpoints disagree');
    const pins = (await fs.readdir(join(host.root, 'netns')).catch(() => [])).length;
    const running = list.filter((s) => s.State === 'running').length;
    const mounted = (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(join(host.root, 'netns'))).length;
    assert.equal(mounted, running, 'namespace pins and running containers disagree');
    assert.ok(pins >= mounted);
    const rootfs = (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(join(host.root, 'containers')) && l.includes('/rootfs ')).length;
    assert.equal(rootfs, running, 'rootfs mounts and running containers disagree');
    const runc = await run('runc', ['--root', join(host.root, 'runc'), 'list', '-q']);
    assert.equal(runc.stdout.split('\n').filter(Boolean).length, running, 'runc containers and running containers disagree');
    const pub = await host.inNetns('nft', ['list', 'map', 'ip', 'berth', 'pub_any']);
    const elements = (pub.stdout.match(/tcp \. \d+ :/g) ?? []).length;
    let published = 0;
    for (const s of list.filter((x) => x.State === 'running')) {
      published += Object.values((await host.api('GET', `/containers/${s.Id}/json`)).json.NetworkSettings.Ports as Record<string, unknown[] | null>).filter(Boolean).length;
    }
    assert.equal(elements, published, 'published-port elements and running containers disagree');
    const journals = (await fs.readdir(join(host.root, 'sandboxes')).catch(() => [])).filter((f) => f.endsWith('.json')).length;
    assert.equal(journals, running, 'sandbox journals and running containers disagree');
  }

  /** The conmon that monitors a container (it is named with -c ID on its command line). */
  async function conmonOf(id: string): Promise<number> {
    const ps = await run('pgrep', ['-f', `conmon .*-c ${id}`]);
    const pid = Number(ps.stdout.trim().split('\n')[0]);
    assert.ok(pid > 0, `no conmon for ${id}`);
    return pid;
  }

  async function crashAfter(ms: number, op: () => Promise<unknown>): Promise<void> {
    const pending = op().catch(() => undefined);
    await new Promise((r) => setTimeout(r, ms));
    await host.stopDaemon('SIGKILL');
    await pending;
    await host.startDaemon();
  }

  it('a kill during start leaves nothing that the next start does not find and remove', async () => {
    for (let i = 0; i < cycles; i++) {
      const c = await host.api('POST', `/containers/create?name=cs${i}`, {
        Image: 'busybox', Cmd: ['sleep', '300'], ExposedPorts: { '80/tcp': {} },
        HostConfig: { NetworkMode: 'cra', PortBindings: { '80/tcp': [{ HostPort: String(18080 + i) }] } },
        NetworkingConfig: { EndpointsConfig: { cra: { Aliases: [`alias${i}`] } } },
      });
      assert.equal(c.status, 201);
      await crashAfter(2 + Math.floor(random() * 40), () => host.api('POST', `/containers/${c.json.Id}/start`));
      await checkInvariants();
    }
    // Whatever was left half-made gave its addresses back: every container starts, each with its own.
    for (let i = 0; i < cycles; i++) {
      const s = await host.api('POST', `/containers/cs${i}/start`);
      assert.ok([204, 304].includes(s.status), `start cs${i}: ${s.status} ${s.body}`);
    }
    await checkInvariants();
  });

  it('a kill during connect or disconnect leaves the interfaces and the record in agreement', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'cra' } }, 'cc');
    for (let i = 0; i < cycles; i++) {
      const connected = !!(await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.crb;
      const op = connected ? 'disconnect' : 'connect';
      await crashAfter(1 + Math.floor(random() * 25), () => host.api('POST', `/networks/crb/${op}`, { Container: id }));
      await waitFor(async () => (await host.api('GET', `/containers/${id}/json`)).json.State.Running, 'cc running after restart');
      await checkInvariants();
    }
  });

  it('a container whose conmon was killed still stops, is removed and answers wait (its exit is recorded as 255)', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'cra' } }, 'orphan');
    process.kill(await conmonOf(id), 'SIGKILL');
    const t0 = Date.now();
    const stop = await host.api('POST', `/containers/${id}/stop?t=2`);
    assert.equal(stop.status, 204);
    assert.ok(Date.now() - t0 < 8000, `stop took ${Date.now() - t0} ms`);
    const c = (await host.api('GET', `/containers/${id}/json`)).json;
    assert.equal(c.State.Running, false);
    assert.equal(c.State.ExitCode, 255);
    await checkInvariants();
    // The same after a berthd restart: the new process watches the orphan itself.
    const id2 = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'cra' } }, 'orphan2');
    await host.stopDaemon('SIGKILL');
    process.kill(await conmonOf(id2), 'SIGKILL');
    await host.startDaemon();
    assert.equal((await host.api('DELETE', `/containers/${id2}?force=1`)).status, 204);
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
    await checkInvariants();
  });

  it('a disconnect takes the published port off the freed address and moves it to the next network', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], ExposedPorts: { '80/tcp': {} }, HostConfig: { NetworkMode: 'cra', PortBindings: { '80/tcp': [{ HostPort: '18500' }] } } }, 'pubmove');
    const ipA = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.cra.IPAddress as string;
    assert.equal((await host.api('POST', '/networks/crb/connect', { Container: id })).status, 200);
    const ipB = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.crb.IPAddress as string;
    const map = async () => (await host.inNetns('nft', ['list', 'map', 'ip', 'berth', 'pub_any'])).stdout;
    assert.match(await map(), new RegExp(`tcp \\. 18500 : ${ipA.replace(/\./g, '\\.')} \\. 80`));
    assert.equal((await host.api('POST', '/networks/cra/disconnect', { Container: id })).status, 200);
    assert.doesNotMatch(await map(), new RegExp(ipA.replace(/\./g, '\\.')));
    assert.match(await map(), new RegExp(`tcp \\. 18500 : ${ipB.replace(/\./g, '\\.')} \\. 80`));
    // A newcomer given the freed address is reachable through nothing it did not publish.
    const other = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'cra' }, NetworkingConfig: { EndpointsConfig: { cra: { IPAMConfig: { IPv4Address: ipA } } } } });
    assert.doesNotMatch(await map(), new RegExp(ipA.replace(/\./g, '\\.')));
    const ports = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Ports;
    assert.deepEqual(ports['80/tcp'], [{ HostIp: '0.0.0.0', HostPort: '18500' }]);
    for (const x of [id, other]) assert.equal((await host.api('DELETE', `/containers/${x}?force=1`)).status, 204);
    await checkInvariants();
  });

  it('rm -f of everything leaves no link, namespace, mount, journal or rule behind', async () => {
    for (const s of (await host.api('GET', '/containers/json?all=1')).json as Array<{ Id: string }>) {
      assert.equal((await host.api('DELETE', `/containers/${s.Id}?force=1`)).status, 204);
    }
    await checkInvariants();
    assert.deepEqual(await hostVeths(), []);
    // The addresses the crashed starts leased are free again: a static one is taken at once.
    const again = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'cra' }, NetworkingConfig: { EndpointsConfig: { cra: { IPAMConfig: { IPv4Address: '10.77.0.2' } } } } });
    assert.equal((await host.api('POST', `/containers/${again.json.Id}/start`)).status, 204);
    assert.equal((await host.api('DELETE', `/containers/${again.json.Id}?force=1`)).status, 204);
  });
});
