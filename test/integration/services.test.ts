import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { waitFor } from './harness.js';
import { Lab, type LabHost } from './lab.js';

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

interface Task { ID: string; Slot?: number; NodeID: string; DesiredState: string; Status: { State: string; Err?: string; ContainerStatus?: { ContainerID: string } }; ServiceID: string }

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

  const ok = async (h: LabHost, args: string[]) => {
    const r = await h.host.docker(args);
    assert.equal(r.code, 0, `${h.name}: docker ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const fails = async (h: LabHost, args: string[], message: RegExp | string) => {
    const r = await h.host.docker(args);
    assert.notEqual(r.code, 0, `${h.name}: docker ${args.join(' ')} should have failed`);
    if (typeof message === 'string') assert.ok(r.stderr.includes(message), `stderr: ${r.stderr}`);
    else assert.match(r.stderr, message);
  };
  const tasks = async (h: LabHost, service: string): Promise<Task[]> => {
    const r = await h.host.api('GET', `/tasks?filters=${encodeURIComponent(JSON.stringify({ service: [service] }))}`);
    assert.equal(r.status, 200, r.body);
    return r.json as Task[];
  };
  const running = async (h: LabHost, service: string) => (await tasks(h, service)).filter((t) => t.DesiredState === 'running' && t.Status.State === 'running');
  const waitRunning = (h: LabHost, service: string, n: number, timeoutMs = 30_000) => waitFor(async () => {
    const all = await tasks(h, service);
    const r = all.filter((t) => t.DesiredState === 'running' && t.Status.State === 'running');
    // Converged: n running, and every other task stopped.
    return r.length === n && all.every((t) => t.DesiredState === 'running' || ['shutdown', 'complete', 'failed', 'rejected', 'orphaned'].includes(t.Status.State)) ? r : undefined;
  }, `${n} running tasks of ${service}`, timeoutMs);
  /** `count` HTTP requests from a client container in one exec (busybox's wget -T crashes: timeout instead); the answers, one per request ('' for a failed one). */
  const requests = async (h: LabHost, client: string, url: string, count: number): Promise<string[]> => {
    const out = await ok(h, ['exec', client, 'sh', '-c', `for i in $(seq ${count}); do echo "=$(timeout 3 wget -qO- ${url} 2>/dev/null)"; done`]);
    return out.split('\n').map((l) => l.replace(/^=/, '').trim());
  };
  const lookup = async (h: LabHost, client: string, name: string): Promise<string[]> => {
    const r = await h.host.docker(['exec', client, 'nslookup', name]);
    return [...r.stdout.split('Name:').slice(1).join('\n').matchAll(/Address(?: \d+)?:\s+([\d.]+)/g)].map((m) => m[1]!).sort();
  };
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
    await ok(h0, ['service', 'create', '--detach', '--name', 'web', '--replicas', '3', '--network', 'svc', '--restart-delay', '1s', ...WEB]);
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
      const answers = await requests(h, c, 'http://web/', 30);
      assert.ok(answers.every((a) => names.includes(a)), `${h.name}: answers ${answers} not all from ${names}`);
      assert.deepEqual([...new Set(answers)].sort(), names, `${h.name}: not every replica answered`);
    }
    const taskIps = await lookup(h0, 'client0', 'tasks.web');
    assert.equal(taskIps.length, 3);
    assert.ok(!taskIps.includes(vip));
  });
});
