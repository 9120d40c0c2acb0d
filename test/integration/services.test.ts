import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { DOCKER_CLI, waitFor } from './harness.js';
import { LISTEN_WAIT_MS } from '../../src/cluster/agent.js';
import { dockerFails, dockerOk, Lab, serviceTasks, type LabHost } from './lab.js';

/**
 * Swarm services across three lab hosts (two managers, one worker), through the docker CLI and
 * the API: placement, the VIP balanced by nftables in each client's namespace, `tasks.` names,
 * dnsrr, scale, restart policies, constraints, a task container killed, a node (the orchestrator's
 * leader) killed and its tasks re-placed, berthd restarted without losing or duplicating tasks,
 * and Docker's errors. One lab for the whole file.
 */

const TTL = 3;
const NO_MANAGER = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.';
const NOT_MANAGER = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";
/** A task that answers HTTP on port 80 with its own hostname (its container's short id). */
const WEB = ['busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'];

interface Task { ID: string; Slot?: number; NodeID: string; DesiredState: string; Status: { State: string; Err?: string; ContainerStatus?: { ContainerID: string } }; ServiceID: string; CreatedAt: string; Spec: unknown }

describe('swarm services across hosts', () => {
  let lab: Lab;
  let h0: LabHost, h1: LabHost, h2: LabHost;
  const nodeIds = new Map<string, LabHost>();

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
  const tasks = (h: LabHost, service: string) => serviceTasks<Task>(h, service);
  const running = async (h: LabHost, service: string) => (await tasks(h, service)).filter((t) => t.DesiredState === 'running' && t.Status.State === 'running');
  /**
   * Converged: n tasks running, and every other task stopped (but on `down` nodes, which cannot
   * report). A task on a down node never counts as running: until the new leader's first pass it
   * still reads running and desired running, and counting it returned before the tasks moved.
   */
  const waitRunning = (h: LabHost, service: string, n: number, timeoutMs = 30_000, down: string[] = []) => waitFor(async () => {
    const all = await tasks(h, service);
    const r = all.filter((t) => t.DesiredState === 'running' && t.Status.State === 'running' && !down.includes(t.NodeID));
    return r.length === n && all.every((t) => t.DesiredState === 'running' || down.includes(t.NodeID) || ['shutdown', 'complete', 'failed', 'rejected', 'orphaned'].includes(t.Status.State)) ? r : undefined;
  }, `${n} running tasks of ${service}`, timeoutMs);
  /** `count` HTTP requests from a client container in one exec (busybox's wget -T crashes: timeout instead); the answers, one per request ('' for a failed one). */
  const requests = async (h: LabHost, client: string, url: string, count: number, timeoutSec = 3): Promise<string[]> => {
    const out = await ok(h, ['exec', client, 'sh', '-c', `for i in $(seq ${count}); do echo "=$(timeout ${timeoutSec} wget -qO- ${url} 2>/dev/null)"; done`]);
    return out.split('\n').map((l) => l.replace(/^=/, '').trim());
  };
  const lookup = async (h: LabHost, client: string, name: string): Promise<string[]> => {
    const r = await h.host.docker(['exec', client, 'nslookup', name]);
    return [...r.stdout.split('Name:').slice(1).join('\n').matchAll(/Address(?: \d+)?:\s+([\d.]+)/g)].map((m) => m[1]!).sort();
  };
  /**
   * Requests until every one of `names` answered, and none else: a task reported running joins each
   * host's balancer when that host applied the report, a moment later.
   */
  const allAnswer = (h: LabHost, c: string, url: string, names: string[]) => waitFor(async () => {
    const a = await requests(h, c, url, 20);
    assert.ok(a.every((x) => names.includes(x)), `${h.name}: answers ${a} not all from ${names}`);
    return [...new Set(a)].sort().join() === [...names].sort().join();
  }, `${h.name}: every one of ${names} answering ${url}`, 15_000);
  /** The short container ids of a service's running tasks (what their httpd answers). */
  const taskHostnames = (ts: Task[]) => ts.map((t) => t.Status.ContainerStatus!.ContainerID.slice(0, 12)).sort();

  it('refuses services outside a swarm with Docker\'s words', async () => {
    const r = await h0.host.api('POST', '/services/create', { Name: 'x', TaskTemplate: { ContainerSpec: { Image: 'busybox' } } });
    assert.deepEqual([r.status, r.json.message], [503, NO_MANAGER]);
    await fails(h0, ['service', 'ls'], NO_MANAGER);
  });

  it('forms a swarm of two managers and a worker, with an overlay for services and their clients', async () => {
    await lab.formSwarm(1);
    for (const h of [h0, h1, h2]) nodeIds.set(await ok(h, ['info', '-f', '{{.Swarm.NodeID}}']), h);
    await ok(h0, ['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.40.0.0/24', 'svc']);
    await ok(h0, ['run', '-d', '--name', 'client0', '--network', 'svc', 'busybox', 'sleep', '3600']);
    await ok(h1, ['run', '-d', '--name', 'client1', '--network', 'svc', 'busybox', 'sleep', '3600']);
  });

  it('creates a replicated service through the CLI: one task per node, each a container named and labelled as Docker\'s', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'web', '--replicas', '3', '--network', 'svc', '--restart-delay', '1s', '--stop-grace-period', '1s', ...WEB]);
    const ts = await waitRunning(h0, 'web', 3);
    assert.deepEqual(ts.map((t) => t.Slot).sort(), [1, 2, 3]);
    assert.equal(new Set(ts.map((t) => t.NodeID)).size, 3, 'spread over the three nodes');
    for (const t of ts) {
      const h = nodeIds.get(t.NodeID)!;
      const name = await ok(h, ['inspect', '-f', '{{.Name}} {{index .Config.Labels "com.docker.swarm.service.name"}} {{index .Config.Labels "com.docker.swarm.task.id"}}', t.Status.ContainerStatus!.ContainerID]);
      assert.equal(name, `/web.${t.Slot}.${t.ID} web ${t.ID}`);
    }
    const ls = await ok(h1, ['service', 'ls', '--format', '{{.Name}} {{.Mode}} {{.Replicas}}']);
    assert.equal(ls, 'web replicated 3/3');
    const ps = (await ok(h0, ['service', 'ps', 'web', '--format', '{{.Name}} {{.CurrentState}}'])).split('\n');
    assert.equal(ps.length, 3);
    for (const l of ps) assert.match(l, /^web\.[123] Running /);
  });

  it('balances connections to the VIP over every replica, from clients on two hosts, and answers tasks.web with the tasks', async () => {
    const svc = JSON.parse(await ok(h0, ['service', 'inspect', 'web']))[0];
    const vip = svc.Endpoint.VirtualIPs[0].Addr.split('/')[0];
    assert.match(vip, /^10\.40\.0\.\d+$/);
    const ts = await running(h0, 'web');
    const names = taskHostnames(ts);
    for (const [h, c] of [[h0, 'client0'], [h1, 'client1']] as const) {
      assert.deepEqual(await lookup(h, c, 'web'), [vip]);
      await allAnswer(h, c, 'http://web/', names);
    }
    const taskIps = await lookup(h0, 'client0', 'tasks.web');
    assert.equal(taskIps.length, 3);
    assert.ok(!taskIps.includes(vip));
  });

  it('dnsrr: the name answers the tasks\' addresses, no VIP is made', async () => {
    // Without --detach the CLI follows the tasks until they run (its progress display) and returns then.
    const out = await ok(h0, ['service', 'create', '--name', 'rr', '--replicas', '2', '--endpoint-mode', 'dnsrr', '--network', 'svc', ...WEB]);
    assert.match(out, /verify: Service converged/);
    const ts = await running(h0, 'rr');
    assert.equal(ts.length, 2);
    const svc = JSON.parse(await ok(h1, ['service', 'inspect', 'rr']))[0];
    assert.equal(svc.Endpoint.VirtualIPs, undefined);
    assert.equal(svc.Spec.EndpointSpec.Mode, 'dnsrr');
    const ips = await lookup(h1, 'client1', 'rr');
    assert.equal(ips.length, 2);
    assert.deepEqual(await lookup(h1, 'client1', 'tasks.rr'), ips);
    const answers = new Set(await requests(h1, 'client1', 'http://rr/', 12));
    for (const a of answers) assert.ok(taskHostnames(ts).includes(a), `${a} is not a task of rr`);
  });

  it('scales up and down: the balancers follow, and a removed task gets no more connections', async () => {
    await ok(h1, ['service', 'scale', '--detach', 'web=5']);
    let ts = await waitRunning(h0, 'web', 5);
    await allAnswer(h1, 'client1', 'http://web/', taskHostnames(ts));
    await ok(h0, ['service', 'scale', '--detach', 'web=2']);
    ts = await waitRunning(h0, 'web', 2);
    const kept = taskHostnames(ts);
    for (const [h, c] of [[h0, 'client0'], [h1, 'client1']] as const) {
      const a = await requests(h, c, 'http://web/', 20);
      assert.ok(a.every((x) => kept.includes(x)), `${h.name}: ${a} reached a removed task (kept ${kept})`);
      assert.deepEqual([...new Set(a)].sort(), kept);
    }
    assert.equal(await ok(h0, ['service', 'ls', '--filter', 'name=web', '--format', '{{.Replicas}}']), '2/2');
    await ok(h0, ['service', 'scale', '--detach', 'web=3']);
    await waitRunning(h0, 'web', 3);
  });

  it('restarts a killed task container per the restart policy, in the same slot; --restart-condition none does not', async () => {
    const before = await running(h0, 'web');
    const victim = before[0]!;
    await ok(nodeIds.get(victim.NodeID)!, ['kill', victim.Status.ContainerStatus!.ContainerID]);
    const after = await waitFor(async () => {
      const r = await running(h0, 'web');
      return r.length === 3 && !r.some((t) => t.ID === victim.ID) ? r : undefined;
    }, 'a replacement of the killed task', 20_000);
    assert.ok(after.some((t) => t.Slot === victim.Slot), 'the replacement takes the killed task\'s slot');
    const old = (await tasks(h0, 'web')).find((t) => t.ID === victim.ID)!;
    assert.equal(old.DesiredState, 'shutdown');
    assert.equal(old.Status.State, 'failed');
    await allAnswer(h1, 'client1', 'http://web/', taskHostnames(after));

    await ok(h0, ['service', 'create', '--detach', '--name', 'once', '--restart-condition', 'none', '--network', 'svc', ...WEB]);
    const [t] = await waitRunning(h0, 'once', 1);
    await ok(nodeIds.get(t!.NodeID)!, ['kill', t!.Status.ContainerStatus!.ContainerID]);
    await waitFor(async () => (await tasks(h0, 'once')).find((x) => x.ID === t!.ID)?.Status.State === 'failed', 'the killed task reported failed');
    // The orchestrator has seen it (its desired state changed) and made no new task.
    await waitFor(async () => (await tasks(h0, 'once')).find((x) => x.ID === t!.ID)?.DesiredState === 'shutdown', 'the orchestrator\'s decision');
    assert.equal((await tasks(h0, 'once')).length, 1);
    assert.equal(await ok(h0, ['service', 'ls', '--filter', 'name=once', '--format', '{{.Replicas}}']), '0/1');
    // Its VIP has no backend: a connection is refused at once, not left to time out.
    const r = await h1.host.docker(['exec', 'client1', 'sh', '-c', 'wget -qO- http://once/ 2>&1; echo rc=$?']);
    assert.match(r.stdout, /Connection refused[\s\S]*rc=1/);
    assert.match(await ok(h1, ['exec', 'client1', 'wget', '-qO-', 'http://web/']), /^[0-9a-f]{12}$/, 'the probe itself');
  });

  it('places by constraint; an impossible one leaves the tasks pending with Docker\'s message; global runs one per node', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'pinned', '--replicas', '2', '--constraint', 'node.hostname==lab2', ...WEB]);
    const ts = await waitRunning(h0, 'pinned', 2);
    assert.ok(ts.every((t) => nodeIds.get(t.NodeID) === h2));
    await ok(h0, ['service', 'create', '--detach', '--name', 'nowhere', '--replicas', '2', '--constraint', 'node.labels.zone==mars', ...WEB]);
    const pending = await waitFor(async () => {
      const l = await tasks(h0, 'nowhere');
      return l.length === 2 && l.every((t) => t.Status.State === 'pending') ? l : undefined;
    }, 'pending tasks');
    for (const t of pending) assert.equal(t.Status.Err, 'no suitable node (scheduling constraints not satisfied on 3 nodes)');
    const ps = await ok(h0, ['service', 'ps', 'nowhere', '--no-trunc', '--format', '{{.CurrentState}}|{{.Error}}']);
    assert.match(ps, /^Pending .*\|"?no suitable node \(scheduling constraints not satisfied on 3 nodes\)"?$/m);
    await ok(h0, ['service', 'create', '--detach', '--name', 'everywhere', '--mode', 'global', '--constraint', 'node.role==manager', ...WEB]);
    const g = await waitRunning(h0, 'everywhere', 2);
    assert.deepEqual(g.map((t) => nodeIds.get(t.NodeID)!.name).sort(), ['lab0', 'lab1']);
    for (const name of ['pinned', 'nowhere', 'everywhere']) await ok(h0, ['service', 'rm', name]);
  });

  it('refuses bad input with Docker\'s words and makes nothing', async () => {
    const count = async () => (await h0.host.api('GET', '/services')).json.length as number;
    const n = await count();
    await fails(h0, ['service', 'create', '--name', 'web', 'busybox'], 'service web already exists');
    let r = await h0.host.api('POST', '/services/create', { Name: 'dup', TaskTemplate: { ContainerSpec: { Image: 'busybox' } }, Mode: { Replicated: { Replicas: 1 } } });
    assert.equal(r.status, 201);
    r = await h1.host.api('POST', '/services/create', { Name: 'dup', TaskTemplate: { ContainerSpec: { Image: 'busybox' } } });
    assert.deepEqual([r.status, r.json.message], [409, 'rpc error: code = AlreadyExists desc = service dup already exists']);
    await ok(h0, ['service', 'rm', 'dup']);
    // The CLI looks the network up itself; the API answers as Docker's daemon.
    await fails(h0, ['service', 'create', '--name', 'nonet', '--network', 'nope', 'busybox'], 'No such network: nope');
    r = await h0.host.api('POST', '/services/create', { Name: 'nonet', TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'nope' }] } });
    assert.deepEqual([r.status, r.json.message], [404, 'network nope not found']);
    r = await h0.host.api('POST', '/services/create', { Name: 'nonet', TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'bridge' }] } });
    assert.equal(r.status, 403);
    assert.match(r.json.message, /The network bridge cannot be used with services/);
    r = await h0.host.api('POST', '/services/create', { Name: 'neg', TaskTemplate: { ContainerSpec: { Image: 'busybox' } }, Mode: { Replicated: { Replicas: -1 } } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /cannot unmarshal number -1/);
    await fails(h0, ['service', 'create', '--name', 'neg', '--replicas', '-1', 'busybox'], /invalid argument "-1" for "--replicas"/);
    r = await h0.host.api('POST', '/services/create', { Name: 'bad', TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Placement: { Constraints: ['node.color~=blue'] } } });
    assert.equal(r.status, 400);
    await fails(h2, ['service', 'create', '--name', 'onworker', 'busybox'], NOT_MANAGER);
    await fails(h2, ['service', 'ls'], NOT_MANAGER);
    await fails(h0, ['service', 'inspect', 'nosuch'], 'no such service: nosuch');
    assert.equal(await count(), n);
  });

  it('rolling updates: --update-parallelism 1 replaces one task at a time; a failing image pauses the update; rollback restores it', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'roll', '--replicas', '3', '--restart-condition', 'none', '--update-parallelism', '1', '--update-delay', '1s', '--update-monitor', '1s', '--rollback-monitor', '1s', 'busybox', 'sleep', '3600']);
    const before = await waitRunning(h0, 'roll', 3);
    // The CLI waits for the update as it does against Docker: every task of the new spec running.
    const up = await h0.host.docker(['service', 'update', '--env-add', 'V=2', 'roll']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout + up.stderr, /verify: Service converged/);
    const after = await waitRunning(h0, 'roll', 3);
    assert.ok(after.every((t) => (t.Spec as { ContainerSpec: { Env?: string[] } }).ContainerSpec.Env?.includes('V=2')), 'every running task has the new env');
    assert.deepEqual(after.map((t) => t.ID).filter((id) => before.some((b) => b.ID === id)), [], 'every task was replaced');
    const svc = JSON.parse(await ok(h0, ['service', 'inspect', 'roll']))[0];
    assert.deepEqual([svc.UpdateStatus.State, svc.UpdateStatus.Message], ['completed', 'update completed']);
    assert.deepEqual([svc.Spec.UpdateConfig.Parallelism, svc.Spec.UpdateConfig.Delay], [1, 1e9]);
    // One at a time, a second apart: the replacements started in three separate moments.
    const starts = after.map((t) => Date.parse(t.CreatedAt)).sort((a, b) => a - b);
    assert.ok(starts[1]! - starts[0]! >= 1000 && starts[2]! - starts[1]! >= 1000, `replacements made at ${starts.map((x) => new Date(x).toISOString()).join(', ')}`);
    // An image no host has: the replacement is rejected and the update pauses, the other two keep running.
    const bad = await h0.host.docker(['service', 'update', '--image', '127.0.0.1:1/nosuch:1', 'roll']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /service update paused: update paused due to failure or early termination of task \w+/);
    assert.equal((await running(h0, 'roll')).length, 2);
    const rb = await h0.host.docker(['service', 'rollback', 'roll']);
    assert.equal(rb.code, 0, rb.stderr);
    const back = await waitRunning(h0, 'roll', 3);
    assert.ok(back.every((t) => (t.Spec as { ContainerSpec: { Image: string } }).ContainerSpec.Image.startsWith('busybox')));
    assert.equal(JSON.parse(await ok(h0, ['service', 'inspect', 'roll']))[0].UpdateStatus.State, 'rollback_completed');
    await ok(h0, ['service', 'rm', 'roll']);
  });

  it('a rolling update under steady requests through the VIP loses none: each task leaves every balancer before it stops', async () => {
    await ok(h0, ['service', 'create', '--name', 'steady', '--replicas', '2', '--network', 'svc', '--update-delay', '1s', '--update-monitor', '1s', '--stop-grace-period', '1s', ...WEB]);
    const before = await waitRunning(h0, 'steady', 2);
    await allAnswer(h1, 'client1', 'http://steady/', taskHostnames(before));
    // About 20 requests a second from lab1 while both tasks are replaced one after the other.
    const load = h1.host.docker(['exec', 'client1', 'sh', '-c', 'n=0; f=0; while [ ! -e /tmp/stop ] || [ $n -lt 30 ]; do n=$((n+1)); timeout 3 wget -qO- http://steady/ >/dev/null 2>&1 || f=$((f+1)); sleep 0.05; done; echo "$n $f"']);
    await sleep(1000);
    const up = await h0.host.docker(['service', 'update', '--force', 'steady']);
    await sleep(1000);
    await ok(h1, ['exec', 'client1', 'touch', '/tmp/stop']);
    const [sent, failed] = (await load).stdout.trim().split(' ').map(Number) as [number, number];
    await ok(h1, ['exec', 'client1', 'rm', '-f', '/tmp/stop', '/tmp/sent']);
    assert.equal(up.code, 0, up.stderr);
    const after = await waitRunning(h0, 'steady', 2);
    assert.deepEqual(after.map((t) => t.ID).filter((id) => before.some((b) => b.ID === id)), [], 'both tasks were replaced');
    assert.ok(sent >= 40, `only ${sent} requests were made`);
    assert.equal(failed, 0, `${failed} of ${sent} requests failed during the update`);
    await ok(h0, ['service', 'rm', 'steady']);
  });

  it('a task joins the balancers once it listens on its published port: a scale up under requests loses none; a task that never listens runs after the wait', async () => {
    // httpd listens 2 s after its container starts: a backend from the start would refuse ~2 s of connections.
    // What counts is the requests made between the scale and the new tasks' joining, however slow the machine.
    const sentSoFar = async () => Number((await h1.host.docker(['exec', 'client1', 'cat', '/tmp/sent'])).stdout.trim() || 0);
    const late = ['busybox', 'sh', '-c', 'mkdir -p /www && hostname > /www/index.html && sleep 2 && exec httpd -f -p 80 -h /www'];
    await ok(h0, ['service', 'create', '--name', 'late', '--network', 'svc', '-p', '8090:80', ...late]);
    await waitRunning(h0, 'late', 1);
    await allAnswer(h1, 'client1', 'http://late/', taskHostnames(await running(h0, 'late')));
    const load = h1.host.docker(['exec', 'client1', 'sh', '-c', 'n=0; f=0; while [ ! -e /tmp/stop ]; do n=$((n+1)); echo $n > /tmp/sent; timeout 3 wget -qO- http://late/ >/dev/null 2>&1 || f=$((f+1)); sleep 0.05; done; echo "$n $f"']);
    await sleep(500);
    const t0 = Date.now();
    await ok(h0, ['service', 'scale', '--detach', 'late=3']);
    const sentAtScale = await sentSoFar();
    const seen = new Map<string, Set<string>>();
    const three = await waitFor(async () => {
      const all = await tasks(h0, 'late');
      for (const t of all) (seen.get(t.ID) ?? seen.set(t.ID, new Set()).get(t.ID)!).add(t.Status.State);
      const r = all.filter((t) => t.DesiredState === 'running' && t.Status.State === 'running');
      return r.length === 3 ? r : undefined;
    }, '3 running tasks of late', 30_000);
    const took = Date.now() - t0;
    await sleep(1000);
    const sentWhileJoining = (await sentSoFar()) - sentAtScale;
    await ok(h1, ['exec', 'client1', 'touch', '/tmp/stop']);
    const [sent, failed] = (await load).stdout.trim().split(' ').map(Number) as [number, number];
    await ok(h1, ['exec', 'client1', 'rm', '-f', '/tmp/stop', '/tmp/sent']);
    assert.ok(took >= 2000, `the new tasks ran ${took} ms after the scale, before their process listened`);
    assert.ok(sentWhileJoining >= 10, `only ${sentWhileJoining} of ${sent} requests were made while the new tasks started`);
    assert.equal(failed, 0, `${failed} of ${sent} requests failed while new tasks started`);
    assert.ok([...seen.values()].some((v) => v.has('starting')), `no new task showed starting while it waited: ${JSON.stringify([...seen].map(([k, v]) => [k, [...v]]))}`);
    await allAnswer(h1, 'client1', 'http://late/', taskHostnames(three));
    await ok(h0, ['service', 'rm', 'late']);
    // A process that never listens on the published port: the task runs after the wait, as Docker's would at once.
    const d0 = Date.now();
    await ok(h0, ['service', 'create', '--detach', '--name', 'deaf', '--network', 'svc', '-p', '8091:80', 'busybox', 'sleep', '3600']);
    const [deaf] = await waitRunning(h0, 'deaf', 1, 30_000);
    const after = Date.now() - d0;
    assert.ok(after >= LISTEN_WAIT_MS - 1000 && after < LISTEN_WAIT_MS + 15_000, `the deaf task ran after ${after} ms`);
    assert.equal(deaf!.Status.State, 'running');
    await ok(h0, ['service', 'rm', 'deaf']);
  });

  it('health checks: a task is starting (no backend) until healthy; an update whose tasks never get healthy pauses, the old task serving', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'hc', '--network', 'svc', '--update-order', 'start-first', '--update-monitor', '30s',
      '--health-cmd', 'test -e /tmp/ok', '--health-interval', '1s', '--health-retries', '2', '--health-start-period', '10s', 'busybox', 'sh', '-c', 'sleep 4; touch /tmp/ok; exec sleep 3600']);
    const seen = new Set<string>();
    await waitFor(async () => {
      for (const t of await tasks(h0, 'hc')) seen.add(t.Status.State);
      return seen.has('running');
    }, 'the hc task running once healthy', 30_000).catch(async (e) => {
      const ts = await tasks(h0, 'hc');
      const h = nodeIds.get(ts[0]?.NodeID ?? '');
      const c = h && ts[0]?.Status.ContainerStatus ? await h.host.docker(['inspect', '-f', '{{json .State.Health}} {{json .Config.Healthcheck}}', ts[0].Status.ContainerStatus.ContainerID]) : undefined;
      throw new Error(`${(e as Error).message}: states ${[...seen].join(', ')}; tasks ${JSON.stringify(ts.map((t) => t.Status))}; container ${c?.stdout}${c?.stderr}`);
    });
    assert.ok(seen.has('starting'), `states seen: ${[...seen].join(', ')}`);
    const [first] = await waitRunning(h0, 'hc', 1);
    const bad = await h0.host.docker(['service', 'update', '--health-cmd', 'test -e /nope', '--health-start-period', '1s', 'hc']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /service update paused: update paused due to failure or early termination of task/);
    const failed = (await tasks(h0, 'hc')).filter((t) => t.Status.State === 'failed');
    assert.ok(failed.some((t) => /unhealthy container/.test(t.Status.Err ?? '')), JSON.stringify(failed.map((t) => t.Status)));
    assert.deepEqual((await running(h0, 'hc')).map((t) => t.ID), [first!.ID]);
    await ok(h0, ['service', 'rm', 'hc']);
  });

  it('a backend that leaves the VIP takes its UDP flows with it: the client\'s conntrack entry to it goes at once', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'udp', '--replicas', '2', '--network', 'svc', '--restart-condition', 'none', 'busybox', 'sleep', '3600']);
    await waitRunning(h0, 'udp', 2);
    const vip = JSON.parse(await ok(h0, ['service', 'inspect', 'udp']))[0].Endpoint.VirtualIPs[0].Addr.split('/')[0];
    const pid = await ok(h0, ['inspect', '-f', '{{.State.Pid}}', 'client0']);
    // Datagrams to the VIP (DNS queries nobody answers): the balancer's DNAT makes a conntrack
    // entry per flow, which every later datagram of that flow follows.
    await ok(h0, ['exec', 'client0', 'sh', '-c', `for i in 1 2 3; do timeout 1 nslookup probe ${vip} >/dev/null 2>&1; done; true`]);
    const flows = async () => (await run('nsenter', ['-t', pid, '-n', 'conntrack', '-L', '-p', 'udp', '--orig-dst', vip])).stdout;
    const backend = /dport=53 .*?src=(\d+\.\d+\.\d+\.\d+)/.exec(await flows())?.[1];
    assert.ok(backend, `a flow to the VIP: ${await flows()}`);
    let holder: [LabHost, string] | undefined;
    for (const h of [h0, h1, h2]) {
      for (const id of await containersOf(h, 'udp')) {
        if ((await ok(h, ['inspect', '-f', '{{(index .NetworkSettings.Networks "svc").IPAddress}}', id])) === backend) holder = [h, id];
      }
    }
    assert.ok(holder, `the task container at ${backend}`);
    const t0 = Date.now();
    await ok(holder[0], ['rm', '-f', holder[1]]);
    // Without the flush the entry would stay for the UDP timeout (30 s) and the flow with it.
    await waitFor(async () => !(await flows()).includes(`src=${backend} `), `the flow to ${backend} dropped`, 15_000);
    assert.ok(Date.now() - t0 < 15_000);
    await ok(h0, ['service', 'rm', 'udp']);
  });

  it('service logs: every task\'s lines from the node that runs it, through another manager; --tail, --timestamps, a task\'s logs, --follow', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'chatty', '--mode', 'global', '--restart-condition', 'none',
      'busybox', 'sh', '-c', 'echo "first $(hostname)"; echo "second $(hostname)" >&2; exec sleep 3600']);
    const ts = await waitRunning(h0, 'chatty', 3);
    // Lines as the CLI prints them: NAME.NODE_OR_SLOT.TASK@HOSTNAME | line (the CLI resolves the ids it finds in the details).
    // The CLI writes a task's stderr lines to its own stderr.
    const logs = async (args: string[]) => {
      const r = await h1.host.docker(['service', 'logs', '--no-trunc', ...args]);
      assert.equal(r.code, 0, r.stderr);
      return `${r.stdout}${r.stderr}`.split('\n').filter(Boolean);
    };
    let all: string[] = [];
    await waitFor(async () => (all = await logs(['chatty'])).length === 6, 'six lines', 15_000).catch(() => assert.fail(all.join('\n')));
    const hostnames = new Map((await ok(h0, ['node', 'ls', '--format', '{{.ID}} {{.Hostname}}'])).split('\n').map((l) => l.split(' ') as [string, string]));
    for (const t of ts) {
      const node = hostnames.get(t.NodeID!);
      const mine = all.filter((l) => l.includes(t.ID));
      const short = t.Status.ContainerStatus!.ContainerID.slice(0, 12);
      assert.deepEqual(mine.map((l) => l.replace(/^chatty\.\w+\./, 'chatty.').replace(/\s+\|/, ' |')).sort(), [`chatty.${t.ID}@${node} | first ${short}`, `chatty.${t.ID}@${node} | second ${short}`], all.join('\n'));
    }
    assert.equal((await logs(['--tail', '1', 'chatty'])).length, 3);
    for (const l of await logs(['--timestamps', 'chatty'])) assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z chatty\.\S+@lab\d\s+\| (first|second) /);
    assert.equal((await logs([ts[0]!.ID])).length, 2, 'one task\'s logs');
    // Following: a line written later on the worker reaches the client on lab1.
    const worker = ts.find((t) => hostnames.get(t.NodeID!) === 'lab2')!;
    const follow = run('timeout', ['8', DOCKER_CLI, '-H', `unix://${h1.host.socket}`, 'service', 'logs', '-f', 'chatty']);
    await sleep(2000);
    await ok(h2, ['exec', worker.Status.ContainerStatus!.ContainerID, 'sh', '-c', 'echo late > /proc/1/fd/1']);
    const followed = await follow;
    assert.equal(followed.code, 124, `follow ended by itself: ${followed.stderr}`);
    assert.match(followed.stdout, /@lab2\s+\| late$/m);
    assert.equal(`${followed.stdout}${followed.stderr}`.split('\n').filter(Boolean).length, 7);
    await ok(h0, ['service', 'rm', 'chatty']);
  });

  it('service logs --follow reads the tasks that start after it began (a scale up), as Docker\'s does', async () => {
    await ok(h0, ['service', 'create', '--detach', '--name', 'grows', '--replicas', '1', '--restart-condition', 'none',
      'busybox', 'sh', '-c', 'echo "hello $(hostname)"; exec sleep 3600']);
    const [first] = await waitRunning(h0, 'grows', 1);
    const follow = run('timeout', ['12', DOCKER_CLI, '-H', `unix://${h1.host.socket}`, 'service', 'logs', '-f', '--no-trunc', 'grows']);
    await sleep(1500);
    await ok(h0, ['service', 'scale', '--detach', 'grows=3']);
    const all = await waitRunning(h0, 'grows', 3);
    const followed = await follow;
    assert.equal(followed.code, 124, `follow ended by itself: ${followed.stderr}`);
    const lines = followed.stdout.split('\n').filter(Boolean);
    // One hello from each task, the two new ones included, each once.
    for (const t of all) {
      const short = t.Status.ContainerStatus!.ContainerID.slice(0, 12);
      assert.equal(lines.filter((l) => l.includes(t.ID) && l.endsWith(`| hello ${short}`)).length, 1, `${t.ID === first!.ID ? 'the first' : 'a new'} task's line in:\n${lines.join('\n')}`);
    }
    assert.equal(lines.length, 3, lines.join('\n'));
    await ok(h0, ['service', 'rm', 'grows']);
  });

  /** Running containers of a service on a host. */
  const containersOf = async (h: LabHost, service: string) => (await ok(h, ['ps', '-q', '--no-trunc', '--filter', `label=com.docker.swarm.service.name=${service}`])).split('\n').filter(Boolean);

  it('a dead node (a worker cut off): its tasks leave every balancer with its lease and are placed elsewhere; back, it removes their containers', async () => {
    const h2Node = [...nodeIds].find(([, h]) => h === h2)![0];
    const onH2 = (await running(h0, 'web')).filter((t) => t.NodeID === h2Node);
    assert.ok(onH2.length > 0, 'no task of web on lab2 to move');
    // A request every ~50 ms from lab1's client, each stamped with the machine's uptime (the same
    // clock in every namespace), before, during and after lab2 is cut off.
    const uptime = async () => Number((await ok(h1, ['exec', 'client1', 'cut', '-d', ' ', '-f1', '/proc/uptime'])));
    const u0 = await uptime();
    const probe = ok(h1, ['exec', 'client1', 'sh', '-c', `end=$(( $(cut -d. -f1 /proc/uptime) + 13 )); while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do s=$(cut -d' ' -f1 /proc/uptime); a=$(timeout 1 wget -qO- http://web/ 2>/dev/null); echo "$s =$a"; usleep 50000; done`]);
    await new Promise((r) => setTimeout(r, 2000));
    const cut = await uptime();
    await lab.partition(h2);
    try {
      const lines = (await probe).split('\n').map((l) => { const [t, a] = l.split(' ='); return { t: Number(t), ok: !!a?.trim() }; });
      // The probe works: before the cut every request was answered (those started within their 1 s
      // timeout of the cut may have met it).
      const before = lines.filter((l) => l.t < cut - 1 && l.t > u0);
      const trace = lines.map((l) => `${(l.t - cut).toFixed(2)}:${l.ok ? 1 : 0}`).join(' ');
      assert.ok(before.length >= 3 && before.every((l) => l.ok), `requests before the cut failed: the probe is broken: ${trace}`);
      const lastFailure = Math.max(cut, ...lines.filter((l) => !l.ok && l.t >= cut).map((l) => l.t));
      assert.ok(lines.some((l) => l.t > lastFailure + 1), 'the probe ended before the service answered again');
      // A failed request started at lastFailure (and took up to its 1 s timeout); every later one was answered.
      assert.ok(lastFailure + 1 - cut <= TTL + 2, `answered again ${(lastFailure + 1 - cut).toFixed(2)} s after the cut (lease TTL ${TTL} s): ${trace}`);
      const ts = await waitRunning(h0, 'web', 3, 20_000, [h2Node]);
      assert.ok(ts.every((t) => t.NodeID !== h2Node), 'a task still on the dead node');
      for (const t of onH2) assert.equal((await tasks(h0, 'web')).find((x) => x.ID === t.ID)?.DesiredState, 'shutdown');
      await allAnswer(h1, 'client1', 'http://web/', taskHostnames(ts));
    } finally {
      await lab.heal(h2);
    }
    // Back: its old task containers go, none is duplicated anywhere.
    await waitFor(async () => (await containersOf(h2, 'web')).length === 0, 'lab2 removing its moved tasks\' containers', 30_000);
    assert.equal((await Promise.all([h0, h1, h2].map((h) => containersOf(h, 'web')))).flat().length, 3);
  });

  it('the leader\'s berthd killed: another manager leads within the lease TTL, moves its tasks; restarted, nothing is lost or duplicated', async () => {
    /** The latest leadership a manager's log shows (the revision its leader key was created at). */
    const ledAt = (h: LabHost) => Math.max(0, ...[...h.host.daemonLog.matchAll(/orchestrator: this node leads \(revision (\d+)\)/g)].map((m) => Number(m[1])));
    const [leader, other] = ledAt(h0) > ledAt(h1) ? [h0, h1] : [h1, h0];
    assert.ok(ledAt(leader) > 0, 'no manager leads');
    const since = ledAt(leader);
    const leaderNode = [...nodeIds].find(([, h]) => h === leader)![0];
    await leader.host.stopDaemon('SIGKILL');
    const t0 = Date.now();
    try {
      await waitFor(async () => ledAt(other) > since, `${other.name} leading`, 15_000);
      assert.ok(Date.now() - t0 <= (TTL + 2) * 1000, `${other.name} led ${Date.now() - t0} ms after the leader died`);
      // The dead leader's presence lapsed with it: the new leader moved its tasks.
      const ts = await waitRunning(other, 'web', 3, 20_000, [leaderNode]);
      assert.ok(ts.every((t) => t.NodeID !== leaderNode));
    } finally {
      await leader.host.startDaemon();
    }
    const ts = await waitRunning(h0, 'web', 3, 30_000);
    await waitFor(async () => (await containersOf(leader, 'web')).length === ts.filter((t) => t.NodeID === leaderNode).length, `${leader.name} removing its moved tasks' containers`, 30_000);
    const byHost = await Promise.all([h0, h1, h2].map((h) => containersOf(h, 'web')));
    assert.equal(byHost.flat().length, 3);
    for (const t of ts) assert.ok(byHost[[h0, h1, h2].indexOf(nodeIds.get(t.NodeID)!)]!.includes(t.Status.ContainerStatus!.ContainerID), `task ${t.ID}'s container is not on its node`);
    await allAnswer(h1, 'client1', 'http://web/', taskHostnames(ts));
  });

  it('service rm: the name and the VIP are gone everywhere when it returns, the containers soon after', async () => {
    await ok(h0, ['service', 'rm', 'web']);
    for (const [h, c] of [[h0, 'client0'], [h1, 'client1']] as const) {
      assert.deepEqual(await lookup(h, c, 'web'), []);
      // The probe itself answers: rr's tasks (moved by the test before, so asked until both names agree).
      await waitFor(async () => { const ips = await lookup(h, c, 'tasks.rr'); return ips.length === 2 && (await lookup(h, c, 'rr')).join() === ips.join(); }, `${h.name}: rr and tasks.rr, the probe`, 10_000);
    }
    await waitFor(async () => (await Promise.all([h0, h1, h2].map((h) => containersOf(h, 'web')))).flat().length === 0, 'web\'s containers removed', 20_000);
    await waitFor(async () => (await tasks(h0, 'web')).length === 0, 'web\'s tasks removed', 20_000).catch(() => undefined);
  });

  it('docker stack deploy/ls/services/ps/rm: a compose file\'s services on its network, each answering its short name through its VIP', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-stack-'));
    try {
      const file = join(dir, 'compose.yml');
      await writeFile(file, [
        'version: "3.8"',
        'services:',
        '  web:',
        '    image: busybox',
        `    command: ${JSON.stringify(WEB.slice(1))}`,
        '    deploy: { replicas: 2 }',
        '    networks: [front]',
        'networks:',
        '  front: { driver: overlay, attachable: true }',
        '',
      ].join('\n'));
      await ok(h0, ['stack', 'deploy', '-c', file, 'demo']);
      assert.equal(await ok(h1, ['stack', 'ls', '--format', '{{.Name}} {{.Services}}']), 'demo 1');
      assert.equal(await ok(h0, ['stack', 'services', 'demo', '--format', '{{.Name}}']), 'demo_web');
      const ts = await waitRunning(h0, 'demo_web', 2);
      assert.equal((await ok(h0, ['stack', 'ps', 'demo', '--format', '{{.Name}}'])).split('\n').sort().join(), 'demo_web.1,demo_web.2');
      await ok(h1, ['run', '-d', '--name', 'stackclient', '--network', 'demo_front', 'busybox', 'sleep', '3600']);
      const vip = JSON.parse(await ok(h0, ['service', 'inspect', 'demo_web']))[0].Endpoint.VirtualIPs[0].Addr.split('/')[0];
      // The stack names its service by its short name on the stack's network, as Docker's: VIP and tasks.
      assert.deepEqual(await lookup(h1, 'stackclient', 'web'), [vip]);
      assert.deepEqual(await lookup(h1, 'stackclient', 'demo_web'), [vip]);
      assert.equal((await lookup(h1, 'stackclient', 'tasks.web')).join(), (await lookup(h1, 'stackclient', 'tasks.demo_web')).join());
      assert.equal((await lookup(h1, 'stackclient', 'tasks.web')).length, 2);
      await allAnswer(h1, 'stackclient', 'http://web/', taskHostnames(ts));
      // berth keeps no secrets or configs: a manager lists none (stack rm reads them), makes none.
      assert.equal(await ok(h0, ['secret', 'ls', '-q']), '');
      await fails(h0, ['config', 'create', 'c1', file], /berth does not keep swarm configs yet/);
      // swarmkit's rule: a network a service names stays; the endpoints of tasks on their way out do not hold it.
      await fails(h0, ['network', 'rm', 'demo_front'], /is in use by service/);
      await ok(h1, ['rm', '-f', 'stackclient']);
      await ok(h0, ['stack', 'rm', 'demo']);
      let seen = '';
      await waitFor(async () => {
        seen = `stacks [${await ok(h0, ['stack', 'ls', '--format', '{{.Name}}'])}], networks ${(await Promise.all([h0, h1, h2].map((h) => ok(h, ['network', 'ls', '--format', '{{.Name}}'])))).map((l) => `[${l.split('\n').join(' ')}]`).join(' ')}`;
        return !seen.includes('demo');
      }, 'stack demo gone', 20_000).catch((e: Error) => {
        const logs = [h0, h1, h2].map((h) => `${h.name}: ${h.host.daemonLog.split('\n').filter((l) => /overlay|network|swarm/.test(l)).slice(-8).join(' | ')}`);
        throw new Error(`${e.message}: ${seen}; ${logs.join('; ')}`);
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a node that leaves the swarm takes its task containers with it', async () => {
    await ok(h0, ['service', 'scale', '--detach', 'rr=3']);
    await waitRunning(h0, 'rr', 3);
    assert.ok((await containersOf(h2, 'rr')).length > 0, 'no task of rr on lab2');
    await ok(h2, ['swarm', 'leave']);
    assert.equal(await ok(h2, ['ps', '-aq', '--filter', 'label=com.docker.swarm.task.id']), '');
  });
});
