import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { reconcile, runningLoad } from '../../src/cluster/reconcile.js';
import { OrchestratorView } from '../../src/cluster/orchview.js';
import { Orchestrator } from '../../src/cluster/orchestrator.js';
import { SK } from '../../src/cluster/services.js';
import { K, ROOT } from '../../src/cluster/keys.js';
import { ServiceNet } from '../../src/cluster/servicenet.js';
import { upToDateWith, type NodeView, type ServiceRecord, type TaskRecord } from '../../src/cluster/servicemodel.js';
import type { PortConfig } from '../../src/cluster/publish.js';
import type { ServiceBalancers, VipEntry } from '../../src/network/servicelb.js';
import type { EndpointRecord } from '../../src/network/overlay.js';
import { MemStore } from './memstore.js';

const NOW = Date.parse('2026-01-01T00:00:10Z');
let seq = 0;
const newId = () => `t${++seq}`;
const node = (id: string): NodeView => ({ id, hostname: id, role: 'worker', labels: {}, availability: 'active', ready: true });
const service = (id: string, replicas: number, delayNs = 5e9): ServiceRecord => ({
  ID: id, Version: { Index: 1 }, CreatedAt: '', UpdatedAt: '', Endpoint: { Spec: { Mode: 'vip' } },
  Spec: { Name: id, Mode: { Replicated: { Replicas: replicas } }, TaskTemplate: { ContainerSpec: { Image: 'busybox' }, RestartPolicy: { Condition: 'any', Delay: delayNs, MaxAttempts: 0 } } },
});
const running = (id: string, svc: string, slot: number, nodeId: string): TaskRecord => ({
  ID: id, Version: { Index: 0 }, CreatedAt: '', UpdatedAt: '', Labels: {}, ServiceID: svc, Slot: slot, NodeID: nodeId, SpecVersion: 1, Attempt: 0,
  Spec: { ContainerSpec: { Image: 'busybox' } }, ServiceAnnotations: { Name: svc }, Endpoint: { Spec: { Mode: 'vip' } },
  Status: { Timestamp: new Date(NOW).toISOString(), State: 'running', Message: '' }, DesiredState: 'running',
});

describe('a pass over the services that changed (reconcile\'s scope)', () => {
  const nodes = [node('a'), node('b')];

  it('decides on the services in scope only, and its decisions are the whole pass\'s for them', () => {
    const svcs = [service('s1', 2), service('s2', 3)];
    const scoped = reconcile([svcs[1]!], [], nodes, NOW, newId, { ids: new Set(['s2']), exists: (id) => id === 's1' || id === 's2' });
    assert.deepEqual([...new Set(scoped.put.map((t) => t.ServiceID))], ['s2']);
    const whole = reconcile(svcs, [], nodes, NOW, newId);
    assert.equal(scoped.put.length, whole.put.filter((t) => t.ServiceID === 's2').length);
  });

  it('spreads over every service\'s tasks, those out of scope too', () => {
    // Node a runs three tasks of s1 (out of scope): s2's one task goes to b.
    const tasks = [1, 2, 3].map((i) => running(`x${i}`, 's1', i, 'a'));
    const d = reconcile([service('s2', 1)], tasks, nodes, NOW, newId, { ids: new Set(['s2']), exists: () => true });
    assert.deepEqual(d.put.map((t) => [t.ServiceID, t.NodeID]), [['s2', 'b']]);
    assert.deepEqual(d.delete, []);
    // The same from the caller's count of every node's load, with only the scope's tasks.
    const counted = reconcile([service('s2', 1)], [], nodes, NOW, newId, { ids: new Set(['s2']), exists: () => true, load: runningLoad(tasks) });
    assert.deepEqual(counted.put.map((t) => [t.ServiceID, t.NodeID]), [['s2', 'b']]);
    // Three placed in one pass: the pass's own placements count too (b, then a and b).
    const three = reconcile([service('s3', 3)], [], nodes, NOW, newId, { ids: new Set(['s3']), exists: () => true, load: new Map([['a', 1]]) });
    assert.deepEqual(three.put.map((t) => t.NodeID).sort(), ['a', 'b', 'b']);
  });

  it("spreads a service's tasks as the pass leaves them: placed ones count, shut ones do not", () => {
    const three = [node('a'), node('b'), node('c')];
    // Ten already on a: a scale to 3,000 in one pass ends at 1,000 on each node.
    const tasks = Array.from({ length: 10 }, (_, i) => running(`x${i}`, 'big', i + 1, 'a'));
    const d = reconcile([service('big', 3000)], tasks, three, NOW, newId);
    const placed = runningLoad([...tasks, ...d.put]);
    assert.deepEqual([placed.get('a'), placed.get('b'), placed.get('c')], [1000, 1000, 1000]);
    // A node drained: its tasks are shut and their replacements spread over what runs.
    const drained = [node('a'), { ...node('b'), availability: 'drain' as const }, node('c')];
    const spread = [running('y1', 'web', 1, 'a'), running('y2', 'web', 2, 'b'), running('y3', 'web', 3, 'b'), running('y4', 'web', 4, 'c')];
    const moved = reconcile([service('web', 4)], spread, drained, NOW, newId);
    const after = runningLoad([...spread.filter((t) => !moved.put.some((p) => p.ID === t.ID)), ...moved.put]);
    assert.deepEqual([after.get('a'), after.get('b') ?? 0, after.get('c')], [2, 0, 2]);
  });

  it("places host-mode ports as swarmkit's HostPortFilter: one task per port and node, any service's", () => {
    const hosty = (id: string, replicas: number, port = 9090, delayNs = 5e9): ServiceRecord => {
      const s = service(id, replicas, delayNs);
      return { ...s, Endpoint: { ...s.Endpoint, Ports: [{ Protocol: 'tcp', TargetPort: 80, PublishedPort: port, PublishMode: 'host' }] } };
    };
    // Two replicas, one node: the second waits, with swarmkit's words.
    const one = reconcile([hosty('hp', 2)], [], [node('a')], NOW, newId);
    assert.deepEqual(one.put.map((t) => [t.Status.State, t.NodeID ?? '', t.Status.Err ?? '']).sort(), [
      ['assigned', 'a', ''], ['pending', '', 'no suitable node (host-mode port already in use on 1 node)'],
    ]);
    // Another service holds 9090 on a: a scoped pass given it as context places on b, and decides nothing of it.
    const other = [running('o1', 'other', 1, 'a')];
    const d = reconcile([hosty('hp', 1), hosty('other', 1)], other, nodes, NOW, newId, { ids: new Set(['hp']), exists: () => true, load: runningLoad(other) });
    assert.deepEqual(d.put.map((t) => [t.ServiceID, t.NodeID]), [['hp', 'b']]);
    // Another port, or another protocol, is no conflict.
    assert.deepEqual(reconcile([hosty('hp', 1, 9091), hosty('other', 1)], other, [node('a')], NOW, newId).put.map((t) => t.NodeID), ['a']);
    // Every filter's failures, the most first.
    const three = [node('a'), node('b'), { ...node('c'), ready: false }, { ...node('d'), ready: false }];
    const pinned = { ...hosty('hp', 1), Spec: { ...hosty('hp', 1).Spec, TaskTemplate: { ...hosty('hp', 1).Spec.TaskTemplate, Placement: { Constraints: ['node.hostname==a'] } } } };
    const err = reconcile([pinned, hosty('other', 1)], other, three, NOW, newId).put.find((t) => t.ServiceID === 'hp')!.Status.Err;
    assert.equal(err, 'no suitable node (2 nodes not available for new tasks; scheduling constraints not satisfied on 1 node; host-mode port already in use on 1 node)');
    // A global service: its task waits on the node whose port another task holds, and keeps waiting without counting itself.
    const glob = { ...hosty('g', 0), Spec: { ...hosty('g', 0).Spec, Mode: { Global: {} } } } as ServiceRecord;
    const g = reconcile([glob, hosty('other', 1)], other, nodes, NOW, newId);
    assert.deepEqual(g.put.filter((t) => t.ServiceID === 'g').map((t) => [t.NodeID, t.Status.State, t.Status.Err ?? '']).sort(), [
      ['a', 'pending', 'host-mode port already in use on 1 node'], ['b', 'assigned', ''],
    ]);
    const waiting = g.put.filter((t) => t.ServiceID === 'g');
    assert.deepEqual(reconcile([glob, hosty('other', 1)], [...other, ...waiting], nodes, NOW, newId).put, []);
    // The other service gone from a: the waiting task is assigned there.
    const freed = reconcile([glob], waiting, nodes, NOW, newId).put;
    assert.deepEqual(freed.map((t) => [t.NodeID, t.Status.State]), [['a', 'assigned']]);
    // An update on the only node: start-first's new task waits for a port its old task keeps (as
    // with Docker, it never completes); stop-first stops the old one and places the new at once.
    const updated = (order: 'start-first' | 'stop-first'): ServiceRecord => {
      const s = hosty('hp', 1);
      return {
        ...s, UpdateStatus: { State: 'updating', StartedAt: new Date(NOW - 1000).toISOString(), Message: 'update in progress' },
        Spec: { ...s.Spec, UpdateConfig: { Order: order }, TaskTemplate: { ...s.Spec.TaskTemplate, ContainerSpec: { Image: 'busybox', Env: ['V=2'] } } },
      };
    };
    const old = [running('h1', 'hp', 1, 'a')];
    const start = reconcile([updated('start-first')], old, [node('a')], NOW, newId).put;
    assert.deepEqual(start.map((t) => [t.ID === 'h1' ? 'old' : 'new', t.DesiredState, t.Status.State, t.Status.Err ?? '']), [
      ['new', 'running', 'pending', 'no suitable node (host-mode port already in use on 1 node)'],
    ]);
    const stop = reconcile([updated('stop-first')], old, [node('a')], NOW, newId).put;
    assert.deepEqual(stop.map((t) => [t.ID, t.DesiredState]), [['h1', 'shutdown']]);
    const stopped = { ...stop[0]!, Status: { ...stop[0]!.Status, State: 'shutdown' as const } };
    const next = reconcile([updated('stop-first')], [stopped], [node('a')], NOW, newId).put;
    assert.deepEqual(next.map((t) => [t.NodeID, t.Status.State]), [['a', 'assigned']]);
    // A task that failed frees its port for its replacement on the same node.
    const failed = { ...running('f1', 'hp', 1, 'a'), Status: { Timestamp: new Date(NOW).toISOString(), State: 'failed' as const, Message: '' } };
    const again = reconcile([hosty('hp', 1, 9090, 0)], [failed], [node('a')], NOW, newId);
    assert.deepEqual(again.put.filter((t) => t.ID !== 'f1').map((t) => [t.NodeID, t.Status.State]), [['a', 'assigned']]);
  });

  it('a task publishes the host-mode ports it was made with: placed by them, and replaced when the service\'s change', () => {
    const hosty = (id: string, replicas: number, ports: PortConfig[]): ServiceRecord => {
      const s = service(id, replicas);
      return { ...s, Endpoint: { ...s.Endpoint, Ports: ports } };
    };
    const hp = (published?: number): PortConfig => ({ Protocol: 'tcp', TargetPort: 80, ...(published ? { PublishedPort: published } : {}), PublishMode: 'host' } as PortConfig);
    // No number: any free port of the node, so three replicas share one node; each task carries the port as the service had it.
    const any = reconcile([hosty('dyn', 3, [hp()])], [], [node('a')], NOW, newId).put;
    assert.deepEqual(any.map((t) => [t.NodeID, t.Status.State]), [['a', 'assigned'], ['a', 'assigned'], ['a', 'assigned']]);
    assert.deepEqual(any.map((t) => t.Endpoint?.Ports), [[hp()], [hp()], [hp()]]);
    // Ingress ports are the mesh's: a task carries none of them.
    const ing: PortConfig = { Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress' };
    assert.deepEqual(reconcile([hosty('mesh', 1, [ing])], [], [node('a')], NOW, newId).put[0]!.Endpoint?.Ports, []);
    // A task holds the port it was made with (9090), whatever its service publishes now (9191).
    // Tasks of the services' own template: only their ports differ.
    const template = service('x', 1).Spec.TaskTemplate;
    const held = { ...running('h1', 'moved', 1, 'a'), Spec: template, Endpoint: { Spec: { Mode: 'vip' as const }, Ports: [hp(9090)] } };
    const services = [hosty('moved', 1, [hp(9191)]), hosty('new', 1, [hp(9090)]), hosty('other', 1, [hp(9191)])];
    const placed = reconcile(services, [held], nodes, NOW, newId).put;
    assert.deepEqual(placed.filter((t) => t.ServiceID !== 'moved').map((t) => [t.ServiceID, t.NodeID]).sort(), [['new', 'b'], ['other', 'a']]);
    // Up to date: the same template and the same host-mode ports.
    assert.equal(upToDateWith(hosty('moved', 1, [hp(9090)]))(held), true);
    assert.equal(upToDateWith(hosty('moved', 1, [hp(9191)]))(held), false);
    assert.equal(upToDateWith(hosty('moved', 1, [hp(9090), ing]))(held), true, 'an ingress port added changes no task');
    // A task of an older berth (no ports of its own) published none itself: replaced where its service has host-mode ports.
    assert.equal(upToDateWith(hosty('moved', 1, []))({ ...running('r1', 'moved', 1, 'a'), Spec: template }), true);
    assert.equal(upToDateWith(hosty('moved', 1, [hp(9191)]))({ ...running('r1', 'moved', 1, 'a'), Spec: template }), false);
    // So an update that adds a host-mode port replaces the running tasks (stop-first: the old one stops first).
    const adding = { ...hosty('web', 1, [hp(9090)]), UpdateStatus: { State: 'updating' as const, StartedAt: new Date(NOW - 1000).toISOString(), Message: 'update in progress' } };
    const old = { ...running('w1', 'web', 1, 'a'), Spec: template, Endpoint: { Spec: { Mode: 'vip' as const }, Ports: [] } };
    assert.deepEqual(reconcile([{ ...adding, Endpoint: { Spec: { Mode: 'vip' } } }], [old], [node('a')], NOW, newId).put, [], 'nothing to replace without the port');
    assert.deepEqual(reconcile([adding], [old], [node('a')], NOW, newId).put.map((t) => [t.ID, t.DesiredState]), [['w1', 'shutdown']]);
  });

  it('stops the tasks of a removed service in scope, and leaves another removed service\'s alone', () => {
    const tasks = [running('x1', 'gone1', 1, 'a'), running('x2', 'gone2', 1, 'b')];
    const d = reconcile([], tasks, nodes, NOW, newId, { ids: new Set(['gone1']), exists: () => false });
    assert.deepEqual(d.put.map((t) => [t.ID, t.DesiredState]), [['x1', 'shutdown']]);
  });
});

describe('the orchestrator\'s view marks what changed', () => {
  const ev = (type: 'put' | 'delete', key: string, value: unknown, modRevision: number) => ({ type, key, value, modRevision });

  it('a service\'s record or any of its tasks marks it; a node marks all; taking the marks clears them', async () => {
    const store = new MemStore();
    store.write([[SK.service('s1'), service('s1', 1)], [SK.task('t1'), running('t1', 's1', 1, 'a')]]);
    const view = await OrchestratorView.load(store);
    assert.equal(view.takeDirty(), 'all', 'all, after the read');
    assert.deepEqual(view.takeDirty(), new Set());
    assert.deepEqual(view.tasksOf.get('s1'), new Set([SK.task('t1')]));
    assert.deepEqual(view.running, new Map([['a', 1]]));
    view.apply([ev('put', SK.service('s2'), service('s2', 1), 10)]);
    view.apply([ev('put', SK.task('t2'), running('t2', 's3', 1, 'a'), 11)]);
    assert.deepEqual(view.running, new Map([['a', 2]]));
    // A deleted task marks the service it belonged to (the event carries no value).
    view.apply([ev('delete', SK.task('t1'), undefined, 12)]);
    assert.deepEqual(view.takeDirty(), new Set(['s2', 's3', 's1']));
    // The count of running tasks per node follows each task's desired state and node.
    view.apply([ev('put', SK.task('t2'), { ...running('t2', 's3', 1, 'a'), DesiredState: 'shutdown' }, 20)]);
    view.apply([ev('put', SK.task('t3'), running('t3', 's4', 1, 'b'), 21)]);
    assert.deepEqual(view.running, new Map([['b', 1]]));
    assert.deepEqual(view.running, runningLoad([...view.tasks.values()].map((v) => v.value)), 'the same as counted from every task');
    view.takeDirty();
    assert.equal(view.tasksOf.has('s1'), false, 'no task left of s1');
    assert.deepEqual(view.tasksOf.get('s3'), new Set([SK.task('t2')]));
    view.apply([ev('put', K.aliveOf('n2'), {}, 13)]);
    view.apply([ev('put', SK.service('s2'), service('s2', 2), 14)]);
    assert.equal(view.takeDirty(), 'all');
    // An event the read had already is neither applied nor marked.
    view.apply([ev('put', SK.service('s9'), service('s9', 1), 1)]);
    assert.deepEqual(view.takeDirty(), new Set());
  });
});

describe('the orchestrator between whole passes', () => {
  const NODE = { ID: 'n1', Spec: { Role: 'manager', Labels: {}, Availability: 'active' }, Description: { Hostname: 'n1' } };
  const sessionOf = (store: MemStore) => ({ store, lease: { grant: async () => '1' }, state: { role: 'manager', nodeId: 'n1' } });
  const tasksOf = (store: MemStore, svc: string) => [...store.data].filter(([k, v]) => k.startsWith(SK.tasks) && (v.value as TaskRecord).ServiceID === svc).map(([, v]) => v.value as TaskRecord);
  async function waitUntil(ok: () => boolean, ms: number): Promise<boolean> {
    for (const end = Date.now() + ms; Date.now() < end && !ok(); await new Promise((r) => setTimeout(r, 10)));
    return ok();
  }

  it('a delayed restart of one service is not lost to a pass over another', async () => {
    const store = new MemStore();
    store.write([[K.node('n1'), NODE], [K.aliveOf('n1'), {}], [SK.service('slow'), service('slow', 1, 6e8)]]);
    const o = new Orchestrator(sessionOf(store) as never, () => undefined);
    o.start();
    try {
      assert.ok(await waitUntil(() => tasksOf(store, 'slow').length === 1, 2000), 'placed');
      // Its task fails: the restart is due 600 ms later.
      const [t] = tasksOf(store, 'slow');
      store.write([[SK.task(t!.ID), { ...t!, Status: { ...t!.Status, State: 'failed', Timestamp: new Date().toISOString() } }]]);
      assert.ok(await waitUntil(() => tasksOf(store, 'slow').some((x) => x.DesiredState === 'shutdown'), 2000), 'the failed task shut down');
      // Passes over another service meanwhile (each decides on it alone).
      for (let i = 0; i < 3; i++) {
        store.write([[SK.service(`other${i}`), service(`other${i}`, 1)]]);
        await new Promise((r) => setTimeout(r, 100));
      }
      // Due at 600 ms; the whole pass every five campaigns would come only after seconds.
      assert.ok(await waitUntil(() => tasksOf(store, 'slow').some((x) => x.Attempt === 1), 1500), 'the restart waited for a whole pass');
    } finally {
      await o.close();
    }
  });
});

describe('the orchestrator\'s pass over a service with host-mode ports', () => {
  it('brings along another service whose tasks still hold such a port, though its spec no longer publishes it', async () => {
    const store = new MemStore();
    const nodeRec = (id: string) => ({ ID: id, Spec: { Role: 'manager', Labels: {}, Availability: 'active' }, Description: { Hostname: id } });
    const template = service('x', 1).Spec.TaskTemplate;
    const hp: PortConfig = { Protocol: 'tcp', TargetPort: 80, PublishedPort: 9090, PublishMode: 'host' };
    // `old` published 9090; its update (which took the port away) is paused, so its task on n1 keeps the port.
    const old = { ...service('old', 1), UpdateStatus: { State: 'paused' as const, Message: 'update paused' } };
    const held = { ...running('h1', 'old', 1, 'n1'), Spec: template, Endpoint: { Spec: { Mode: 'vip' as const }, Ports: [hp] } };
    // n2 is the busier node: a placement by load alone would pick n1.
    const busy = [1, 2].map((slot) => ({ ...running(`b${slot}`, 'busy', slot, 'n2'), Spec: template }));
    store.write([
      [K.node('n1'), nodeRec('n1')], [K.node('n2'), nodeRec('n2')], [K.aliveOf('n1'), {}], [K.aliveOf('n2'), {}],
      [SK.service('old'), old], [SK.service('busy'), service('busy', 2)],
      [SK.task('h1'), held], ...busy.map((t) => [SK.task(t.ID), t] as [string, unknown]),
    ]);
    const o = new Orchestrator({ store, lease: { grant: async () => '1' }, state: { role: 'manager', nodeId: 'n1' } } as never, () => undefined);
    o.start();
    try {
      await new Promise((r) => setTimeout(r, 300));
      store.write([[SK.service('new'), { ...service('new', 1), Endpoint: { Spec: { Mode: 'vip' }, Ports: [hp] } }]]);
      const placed = async () => [...store.data].map(([, v]) => v.value as TaskRecord).find((t) => t.ServiceID === 'new' && t.NodeID);
      for (const end = Date.now() + 2000; Date.now() < end && !(await placed()); await new Promise((r) => setTimeout(r, 10)));
      assert.equal((await placed())?.NodeID, 'n2', 'n1\'s 9090 is held by old\'s task');
      assert.equal(store.data.get(SK.task('h1'))?.value && (store.data.get(SK.task('h1'))!.value as TaskRecord).DesiredState, 'running');
    } finally {
      await o.close();
    }
  });
});

describe('a local container\'s start syncs its own table only (ServiceNet.syncContainers)', () => {
  it('hands the balancers the started container\'s entries, and forgets a container gone', async () => {
    const calls: Array<{ want: string[]; all: boolean; gone: string[]; entries: VipEntry[] }> = [];
    const balancers = {
      sync: async (want: Map<string, { entries: VipEntry[] }>, all: boolean, gone: string[] = []) => {
        calls.push({ want: [...want.keys()], all, gone, entries: [...want.values()].flatMap((w) => w.entries) });
      },
      patch: async () => undefined,
    } as unknown as ServiceBalancers;
    let sandboxes = [{ id: 'c1', netns: '/run/netns/c1', networks: ['net1'] }, { id: 'c2', netns: '/run/netns/c2', networks: ['net1'] }];
    const eps: EndpointRecord[] = [{ Network: 'net1', EndpointID: 'e9', ContainerID: 'c9', Name: 'c9', Aliases: ['tasks.web'], IP: '10.0.1.9', Mac: '', Node: 'n2', Vtep: '' }];
    const net = new ServiceNet(() => eps, () => sandboxes, balancers, () => undefined);
    await net.follow([
      { type: 'put', key: `${ROOT}services/s1`, modRevision: 1, value: { ID: 's1', Spec: { Name: 'web', Mode: { Replicated: { Replicas: 1 } }, TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'net1' }] } }, Endpoint: { Spec: { Mode: 'vip' }, VirtualIPs: [{ NetworkID: 'net1', Addr: '10.0.1.254/24' }] } } },
      { type: 'put', key: `${ROOT}tasks/t9`, modRevision: 1, value: { ID: 't9', ServiceID: 's1', DesiredState: 'running', Spec: { Networks: [{ Target: 'net1' }] }, Status: { State: 'running', ContainerStatus: { ContainerID: 'c9' } } } },
    ], true);
    calls.length = 0;
    await net.syncContainers(['c2']);
    assert.deepEqual(calls.map((c) => [c.want, c.all, c.gone]), [[['c2'], false, []]]);
    assert.deepEqual(calls[0]!.entries, [{ service: 's1', vip: '10.0.1.254', backends: ['10.0.1.9'] }]);
    sandboxes = sandboxes.filter((s) => s.id !== 'c1');
    await net.syncContainers(['c1']);
    assert.deepEqual(calls.map((c) => [c.want, c.all, c.gone])[1], [[], false, ['c1']]);
  });
});
