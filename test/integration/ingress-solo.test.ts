import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { checkInvariants } from '../chaos/invariants.js';
import { TestHost } from './harness.js';

/**
 * The ingress network on a one-node swarm, while its sandbox is still being made: what the fuzz
 * found (a prune right after `swarm init` took `ingress`, and the sandbox's port left its source
 * guard allowances behind when its network went first).
 */
describe('the ingress network of a one-node swarm', () => {
  let host: TestHost;

  before(async () => {
    host = await TestHost.create({ outside: true });
  });

  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  const ingressIn = async (): Promise<string[]> => ((await host.api('GET', '/networks')).json as Array<{ Name: string }>).map((n) => n.Name).filter((n) => n === 'ingress');

  /** The invariants hold once the background work of a removal is done (the sandbox goes after its network). */
  const settled = async (): Promise<void> => {
    let last: unknown;
    for (const end = Date.now() + 10_000; Date.now() < end; await sleep(200)) {
      try { return await checkInvariants(host); } catch (e) { last = e; }
    }
    throw last;
  };

  it('network prune leaves ingress, as Docker does (only a user removes it, by name)', async () => {
    assert.equal((await host.api('POST', '/swarm/init', { AdvertiseAddr: '10.200.0.1', ListenAddr: '0.0.0.0:2377' })).status, 200);
    const r = await host.api('POST', '/networks/prune');
    assert.equal(r.status, 200);
    assert.equal(r.json.NetworksDeleted, null);
    assert.deepEqual(await ingressIn(), ['ingress']);
  });

  it('network rm ingress while its sandbox joins: the sandbox goes, with its port and its source guard allowances', async () => {
    const r = await host.api('DELETE', '/networks/ingress');
    assert.equal(r.status, 204, r.body);
    assert.deepEqual(await ingressIn(), []);
    await settled();
    const links = await host.inNetns('ip', ['-br', 'link']);
    assert.doesNotMatch(links.stdout, /^bov-/m, 'the ingress overlay bridge is gone');
  });

  it('a network made with --ingress takes its place (Docker\'s "customize the ingress network"): the sandbox joins it', async () => {
    const r = await host.api('POST', '/networks/create', {
      Name: 'my-ingress', Driver: 'overlay', Ingress: true, IPAM: { Config: [{ Subnet: '10.11.0.0/16', Gateway: '10.11.0.2' }] }, Options: { 'com.docker.network.driver.mtu': '1200' },
    });
    assert.equal(r.status, 201, r.body);
    let members: Record<string, { Name: string; IPv4Address: string }> = {};
    for (const end = Date.now() + 15_000; Date.now() < end && !members['ingress-sbox']; await sleep(200)) {
      members = (await host.api('GET', '/networks/my-ingress')).json.Containers ?? {};
    }
    assert.equal(members['ingress-sbox']?.Name, 'ingress-endpoint');
    assert.match(members['ingress-sbox']!.IPv4Address, /^10\.11\./);
    await settled();
  });

  it('the berth CLI runs services: create waits until converged, ls, ps, scale, a rolling update, rollback, rm', async () => {
    const berth = async (args: string[]): Promise<string> => {
      const r = await host.berth(args);
      assert.equal(r.code, 0, `berth ${args.join(' ')}: ${r.stdout}${r.stderr}`);
      return r.stdout;
    };
    const made = await berth(['service', 'create', '--name', 'cli', '--replicas', '2', '--update-monitor', '1s', 'busybox', 'sleep', '3600']);
    assert.match(made, /^[0-9a-z]{25}\n(overall progress: \d out of 2 tasks\n)*overall progress: 2 out of 2 tasks\nverify: Service converged\n$/);
    assert.equal((await berth(['service', 'ls', '--format', '{{.Name}} {{.Mode}} {{.Replicas}} {{.Image}}'])).trim(), 'cli replicated 2/2 busybox');
    assert.match(await berth(['service', 'scale', 'cli=1']), /^cli scaled to 1\n/);
    assert.equal((await berth(['service', 'ps', 'cli', '--format', '{{.Name}} {{.DesiredState}}'])).split('\n').filter((l) => l.endsWith('Running')).join(), 'cli.1 Running');
    assert.match(await berth(['service', 'update', '--env-add', 'V=1', 'cli']), /verify: Service converged/);
    const env = async () => JSON.parse(await berth(['service', 'inspect', 'cli']))[0].Spec.TaskTemplate.ContainerSpec.Env;
    assert.deepEqual(await env(), ['V=1']);
    const states = (await berth(['service', 'ps', 'cli', '--format', '{{.Name}} {{.DesiredState}} {{.CurrentState}}'])).trim().split('\n');
    assert.deepEqual(states.filter((l) => l.startsWith('cli.1')).map((l) => l.split(' ').slice(1).join(' ')).sort(), ['Running Running', 'Shutdown Shutdown']);
    assert.match(await berth(['service', 'rollback', 'cli']), /verify: Service converged/);
    assert.equal(await env(), undefined);
    assert.equal((await berth(['service', 'rm', 'cli'])).trim(), 'cli');
    const gone = await host.berth(['service', 'inspect', 'cli']);
    assert.notEqual(gone.code, 0);
  });

  it('leaves the swarm with nothing of it in the kernel', async () => {
    assert.equal((await host.api('POST', '/swarm/leave?force=1')).status, 200);
    await settled();
  });
});
