import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { waitFor } from './harness.js';
import { Lab, type LabHost } from './lab.js';

/**
 * berth_cluster_nodes on a lab of two hosts (a manager and a worker on the lab's own etcd): the
 * manager counts both by role and state, the worker shows no cluster family (it cannot list nodes),
 * and a worker whose berthd is killed is counted down once its lease runs out. Then a service's
 * replicas, running tasks and VIP backends, as each node's view of the swarm has them.
 */
describe('metrics: the swarm\'s nodes', () => {
  let lab: Lab;
  let h0: LabHost, h1: LabHost;

  before(async () => {
    lab = await Lab.create(2, { leaseTtlSec: 3, externalStore: true, seedBusybox: true });
    [h0, h1] = lab.hosts as [LabHost, LabHost];
  });

  after(async () => {
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  const nodes = async (h: LabHost): Promise<Record<string, number>> => {
    const r = await h.host.api('GET', '/metrics');
    assert.equal(r.status, 200);
    const out: Record<string, number> = {};
    for (const m of r.body.matchAll(/^berth_cluster_nodes\{role="(\w+)",state="(\w+)"\} (\d+)$/gm)) out[`${m[1]} ${m[2]}`] = Number(m[3]);
    return out;
  };

  it('counts the nodes by role and state on a manager, and a dead worker as down', async () => {
    assert.deepEqual(await nodes(h0), {}, 'no cluster family outside a swarm');
    assert.equal((await h0.host.docker(['swarm', 'init', '--advertise-addr', h0.addr])).code, 0);
    const wt = (await h0.host.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
    const join = await h1.host.docker(['swarm', 'join', '--token', wt, '--advertise-addr', h1.addr, `${h0.addr}:2377`]);
    assert.equal(join.code, 0, join.stderr);
    let last: Record<string, number> = {};
    await waitFor(async () => {
      last = await nodes(h0);
      return last['manager ready'] === 1 && last['worker ready'] === 1;
    }, 'the manager to count itself and the worker ready', 20_000).catch(() => assert.fail(`nodes: ${JSON.stringify(last)}`));
    assert.deepEqual(await nodes(h1), {}, 'a worker cannot list the nodes');
    await h1.host.stopDaemon('SIGKILL');
    await waitFor(async () => {
      last = await nodes(h0);
      return last['manager ready'] === 1 && last['worker down'] === 1 && !('worker ready' in last);
    }, 'the killed worker to be counted down', 30_000).catch(() => assert.fail(`nodes: ${JSON.stringify(last)}`));
  });

  const services = async (h: LabHost): Promise<string[]> => {
    const r = await h.host.api('GET', '/metrics');
    assert.equal(r.status, 200);
    // Backends' connection counts are metrics.test's (with a Prometheus): here the counts of things.
    return r.body.split('\n').filter((l) => l.startsWith('berth_service_') && !l.startsWith('berth_service_backend_connections_total')).sort();
  };

  it('shows a service\'s replicas, running tasks and VIP backends on every node, following a scale', async () => {
    await h1.host.startDaemon();
    const ok = async (h: LabHost, args: string[]) => { const r = await h.host.docker(args); assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`); };
    await ok(h0, ['network', 'create', '-d', 'overlay', 'mnet']);
    await ok(h0, ['service', 'create', '--detach', '--name', 'msvc', '--replicas', '2', '--network', 'mnet', 'busybox', 'sleep', '3600']);
    const want = (n: number) => ['berth_service_replicas_desired{service="msvc"} ' + n, `berth_service_tasks_running{service="msvc"} ${n}`, `berth_service_vip_backends{service="msvc",network="mnet"} ${n}`].sort();
    for (const n of [2, 1]) {
      if (n === 1) await ok(h0, ['service', 'scale', '--detach', 'msvc=1']);
      for (const h of [h0, h1]) {
        let seen: string[] = [];
        await waitFor(async () => (seen = await services(h)).join() === want(n).join(), `${h.name}: ${n} of msvc in its metrics`, 30_000)
          .catch(async () => assert.fail(`${h.name}: ${seen.join('; ')}; ${(await h0.host.docker(['service', 'ps', '--no-trunc', 'msvc'])).stdout}`));
      }
    }
    await ok(h0, ['service', 'rm', 'msvc']);
    await waitFor(async () => (await services(h0)).length === 0, 'msvc gone from the metrics', 15_000);
  });
});
