import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { checkInvariants } from '../chaos/invariants.js';
import { exec, fetchIn, lookup, TestHost, waitFor } from './harness.js';

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
    assert.deepEqual(states.filter((l) => l.startsWith('cli.1')).map((l) => l.split(' ').slice(1, 3).join(' ')).sort(), ['Running Running', 'Shutdown Shutdown']);
    for (const l of states) assert.match(l, / (\d+|less than a|about an?) \w+ ago$/, 'the current state says since when, as the docker CLI does');
    assert.match(await berth(['service', 'rollback', 'cli']), /verify: Service converged/);
    assert.equal(await env(), undefined);
    // Logs as the docker CLI prints them: NAME.SLOT.TASK@NODE | line; --raw without the context.
    await berth(['service', 'create', '--name', 'talk', 'busybox', 'sh', '-c', 'echo "hi from $(hostname)"; exec sleep 3600']);
    let said = '';
    for (const end = Date.now() + 10_000; Date.now() < end && !said.trim(); await sleep(200)) said = await berth(['service', 'logs', 'talk']);
    assert.match(said, /^talk\.1\.[0-9a-z]{12}@\S+ {4}\| hi from [0-9a-f]{12}\n$/);
    assert.match(await berth(['service', 'logs', '--raw', '--timestamps', 'talk']), /^\d{4}-\d\d-\d\dT[\d:.]+Z hi from [0-9a-f]{12}\n$/);
    assert.equal((await berth(['service', 'rm', 'talk'])).trim(), 'talk');
    // Host-mode ports with no number: two tasks on this one node, each its own port, in ps's PORTS column as the docker CLI shows them.
    await berth(['service', 'create', '--name', 'hostp', '--replicas', '2', '--publish', 'mode=host,target=80', 'busybox', 'sleep', '3600']);
    const table = (await berth(['service', 'ps', 'hostp'])).trim().split('\n');
    assert.match(table[0]!, /^ID +NAME +IMAGE +NODE +DESIRED STATE +CURRENT STATE +ERROR +PORTS$/);
    const bound = table.slice(1).map((l) => /\*:(\d+)->80\/tcp$/.exec(l)?.[1]);
    assert.equal(new Set(bound.filter(Boolean)).size, 2, table.join('\n'));
    assert.equal((await berth(['service', 'ls', '--filter', 'name=hostp', '--format', '{{.Ports}}'])).trim(), '', 'service ls shows ingress ports only');
    assert.equal((await berth(['service', 'rm', 'hostp'])).trim(), 'hostp');
    assert.equal((await berth(['service', 'rm', 'cli'])).trim(), 'cli');
    const gone = await host.berth(['service', 'inspect', 'cli']);
    assert.notEqual(gone.code, 0);
  });

  it('a service on two networks: a VIP and its tasks\' names on each, and a VIP on ingress while it publishes', async () => {
    const ok = async (args: string[]): Promise<string> => {
      const r = await host.docker(args);
      assert.equal(r.code, 0, `docker ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.trim();
    };
    const netId = async (name: string) => (await host.api('GET', `/networks/${name}`)).json.Id as string;
    await ok(['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.41.0.0/24', 'na']);
    await ok(['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.42.0.0/24', 'nb']);
    const dup = await host.docker(['service', 'create', '--detach', '--name', 'dup', '--network', 'na', '--network', 'na', 'busybox', 'sleep', '1']);
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /InvalidArgument desc = duplicate network target \w+ in the service spec/);
    await ok(['service', 'create', '--name', 'mn', '--replicas', '2', '--network', 'na', '--network', 'nb', '-p', '8330:80',
      'busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www']);
    const vips = async () => ((await host.api('GET', '/services/mn')).json.Endpoint.VirtualIPs as Array<{ NetworkID: string; Addr: string }>);
    const ing = await netId('my-ingress');
    // The CLI sends the networks in an order of its own (by id): the VIPs follow the spec's order, after ingress's.
    const own = ((await host.api('GET', '/services/mn')).json.Spec.TaskTemplate.Networks as Array<{ Target: string }>).map((n) => n.Target);
    assert.deepEqual([...own].sort(), [await netId('na'), await netId('nb')].sort());
    assert.deepEqual((await vips()).map((v) => v.NetworkID), [ing, ...own], 'the ingress VIP first, as Docker lists it');
    const vipOn = async (net: string) => (await vips()).find((v) => v.NetworkID === net)!.Addr.split('/')[0]!;
    // A task has an endpoint on each of the service's networks, and on ingress.
    const task = (await ok(['ps', '-q', '--filter', 'label=com.docker.swarm.service.name=mn'])).split('\n')[0]!;
    const taskNets = Object.keys((await host.api('GET', `/containers/${task}/json`)).json.NetworkSettings.Networks).sort();
    assert.deepEqual(taskNets, ['my-ingress', 'na', 'nb']);
    for (const [net, subnet] of [['na', '10.41.0.'], ['nb', '10.42.0.']] as const) {
      const cli = await ok(['run', '-d', '--name', `cli-${net}`, '--network', net, 'busybox', 'sleep', '300']);
      const byName = await lookup(host, cli, 'mn');
      assert.deepEqual(byName.addrs, [await vipOn(await netId(net))], `mn from ${net}: its VIP on ${net}`);
      const tasks = await lookup(host, cli, 'tasks.mn');
      assert.equal(tasks.addrs.length, 2, tasks.out);
      assert.ok(tasks.addrs.every((a) => a.startsWith(subnet)), tasks.out);
      const page = await exec(host, cli, ['wget', '-q', '-O', '-', 'http://mn/']);
      assert.equal(page.code, 0, page.out);
      assert.match(page.out, /^[0-9a-f]{12}$/m, "a task answered with its hostname");
      await ok(['rm', '-f', cli]);
    }
    assert.equal((await fetchIn(`/run/netns/${host.outside}`, 'http://10.200.0.1:8330/')).status, 200);
    // No longer published (the CLI removes by target port): the ingress VIP goes (its address free again); published again: it comes back.
    await ok(['service', 'update', '--detach', '--publish-rm', '80', 'mn']);
    assert.deepEqual((await vips()).map((v) => v.NetworkID), own);
    await ok(['service', 'update', '--detach', '--publish-add', '8331:80', 'mn']);
    assert.deepEqual((await vips()).map((v) => v.NetworkID), [ing, ...own]);
    await ok(['service', 'rm', 'mn']);
    await waitFor(async () => (await host.docker(['network', 'rm', 'na', 'nb'])).code === 0, 'the service\'s networks free to remove');
  });

  it('24 service creates at once are all accepted, each with a VIP of its own, and 24 removals at once too', async () => {
    // Each create picks the highest free address for its VIP and claims it in a transaction that
    // fails if another took it: at eight at once, one create in a few lost ten times in a row and
    // was refused "try again" (bench/svcmany.js).
    assert.equal((await host.api('POST', '/networks/create', { Name: 'many', Driver: 'overlay', Attachable: true, IPAM: { Config: [{ Subnet: '10.43.0.0/24' }] } })).status, 201);
    const names = Array.from({ length: 24 }, (_, i) => `many${i}`);
    const made = await Promise.all(names.map((Name) => host.api('POST', '/services/create', {
      Name, Mode: { Replicated: { Replicas: 0 } }, TaskTemplate: { ContainerSpec: { Image: 'busybox', Args: ['sleep', '60'] }, Networks: [{ Target: 'many' }] },
    })));
    assert.deepEqual(made.map((r) => r.status === 201 ? 201 : `${r.status} ${r.body}`), names.map(() => 201));
    const vips = await Promise.all(names.map(async (n) => (await host.api('GET', `/services/${n}`)).json.Endpoint.VirtualIPs[0].Addr as string));
    assert.equal(new Set(vips).size, names.length, vips.join(' '));
    const gone = await Promise.all(names.map((n) => host.api('DELETE', `/services/${n}`)));
    assert.deepEqual(gone.map((r) => r.status), names.map(() => 200));
    assert.equal((await host.api('DELETE', '/networks/many')).status, 204);
  });

  it('leaves the swarm with nothing of it in the kernel', async () => {
    assert.equal((await host.api('POST', '/swarm/leave?force=1')).status, 200);
    await settled();
  });
});
