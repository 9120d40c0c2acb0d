import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { reconcile, restartDecision } from '../../src/cluster/reconcile.js';
import { matches, normaliseSpec, parseConstraint, upToDateWith, type NodeView, type ServiceRecord, type TaskRecord, type UpdateConfig } from '../../src/cluster/servicemodel.js';
import { elementArgs } from '../../src/network/lbbatch.js';
import { arrange, arrangeOne, bucketOf, bucketsAround, BUCKETS, countersOf, lbChanges, lbScript, lbTable, parseCounters } from '../../src/network/lbtable.js';
import { VIP_KIND } from '../../src/network/lbkinds.js';
import type { LbPatch, ServiceBalancers, VipEntry } from '../../src/network/servicelb.js';
import type { EndpointRecord } from '../../src/network/overlay.js';
import type { WatchEvent } from '../../src/cluster/store.js';
import { ServiceNet } from '../../src/cluster/servicenet.js';
import { ROOT } from '../../src/cluster/keys.js';
import { MemStore } from './memstore.js';
import { LifecycleStats } from '../../src/engine/lifestats.js';
import { MetricsCollector } from '../../src/metrics/collector.js';

const NOW = Date.parse('2026-01-01T00:00:10Z');
let seq = 0;
const newId = () => `t${++seq}`;

const node = (id: string, o: Partial<NodeView> = {}): NodeView => ({ id, hostname: id, role: 'worker', labels: {}, availability: 'active', ready: true, ...o });
const service = (o: { replicas?: number; global?: boolean; constraints?: string[]; restart?: ServiceRecord['Spec']['TaskTemplate']['RestartPolicy'] } = {}): ServiceRecord => ({
  ID: 's1', Version: { Index: 7 }, CreatedAt: '', UpdatedAt: '', Endpoint: { Spec: { Mode: 'vip' } },
  Spec: {
    Name: 'web', Mode: o.global ? { Global: {} } : { Replicated: { Replicas: o.replicas ?? 3 } },
    TaskTemplate: { ContainerSpec: { Image: 'busybox' }, RestartPolicy: o.restart ?? { Condition: 'any', Delay: 5e9, MaxAttempts: 0 }, Placement: { Constraints: o.constraints ?? [] } },
  },
});
/** Applies decisions to a task list, as the orchestrator's write does. */
const apply = (tasks: TaskRecord[], d: ReturnType<typeof reconcile>) => {
  const m = new Map(tasks.map((t) => [t.ID, t]));
  for (const t of d.put) m.set(t.ID, t);
  for (const id of d.delete) m.delete(id);
  return [...m.values()];
};
const runAll = (tasks: TaskRecord[]) => tasks.map((t) => (t.DesiredState === 'running' && t.Status.State === 'assigned' ? { ...t, Status: { ...t.Status, State: 'running' as const } } : t));
const active = (tasks: TaskRecord[]) => tasks.filter((t) => t.DesiredState === 'running');

/** One orchestrator pass written back, then the agents: stopped tasks stop, assigned ones run (at `now`). */
function step(svc: ServiceRecord, tasks: TaskRecord[], nodes: NodeView[], now: number): { svc: ServiceRecord; tasks: TaskRecord[]; d: ReturnType<typeof reconcile> } {
  const d = reconcile([svc], tasks, nodes, now, newId);
  let next = svc;
  for (const u of d.status) next = { ...next, UpdateStatus: u.UpdateStatus, ...(u.rollback ? { Spec: svc.PreviousSpec!, PreviousSpec: svc.Spec } : {}) };
  const at = new Date(now).toISOString();
  const after = apply(tasks, d).map((t) => {
    if (t.DesiredState === 'shutdown' && !['shutdown', 'failed', 'complete', 'rejected'].includes(t.Status.State)) return { ...t, Status: { ...t.Status, State: 'shutdown' as const, Timestamp: at } };
    if (t.DesiredState === 'running' && t.Status.State === 'assigned') return { ...t, Status: { ...t.Status, State: t.Spec.ContainerSpec.Image === 'nosuch' ? 'rejected' as const : 'running' as const, Timestamp: at } };
    return t;
  });
  return { svc: next, tasks: after, d };
}

const updated = (svc: ServiceRecord, image: string, cfg: UpdateConfig = {}): ServiceRecord => ({
  ...svc, PreviousSpec: svc.Spec, UpdateStatus: undefined,
  Spec: { ...svc.Spec, UpdateConfig: cfg, TaskTemplate: { ...svc.Spec.TaskTemplate, ContainerSpec: { Image: image } } },
});

describe('rolling updates (reconcile)', () => {
  it('stop-first, one at a time: each slot\'s old task stops before its replacement starts; then completed', () => {
    const nodes = [node('a'), node('b')];
    let svc = service({ replicas: 3 });
    let tasks = runAll(apply([], reconcile([svc], [], nodes, NOW, newId)));
    svc = updated(svc, 'busybox:2');
    let now = NOW;
    const states: string[] = [];
    for (let i = 0; i < 30 && svc.UpdateStatus?.State !== 'completed'; i++) {
      ({ svc, tasks } = step(svc, tasks, nodes, (now += 1000)));
      if (svc.UpdateStatus) states.push(svc.UpdateStatus.State);
      // Never more than one slot between its old task and a running new one.
      const busy = [1, 2, 3].filter((slot) => !tasks.some((t) => t.Slot === slot && t.DesiredState === 'running' && t.Status.State === 'running'));
      assert.ok(busy.length <= 1, `slots ${busy.join(',')} at once`);
      // stop-first: an old task and its replacement never both run.
      for (const slot of [1, 2, 3]) assert.ok(tasks.filter((t) => t.Slot === slot && t.Status.State === 'running').length <= 1);
    }
    assert.equal(svc.UpdateStatus?.State, 'completed');
    assert.equal(svc.UpdateStatus?.Message, 'update completed');
    assert.deepEqual(active(tasks).map((t) => [t.Slot, t.Spec.ContainerSpec.Image, t.Status.State]).sort(), [[1, 'busybox:2', 'running'], [2, 'busybox:2', 'running'], [3, 'busybox:2', 'running']]);
    assert.ok(active(tasks).every(upToDateWith(svc)));
    assert.equal(states[0], 'updating');
    // Done: nothing more to do, and a scale (a spec whose template did not change) starts no update.
    const idle = reconcile([svc], tasks, nodes, now + 1000, newId);
    assert.deepEqual([idle.put, idle.delete, idle.status], [[], [], []]);
    const scaled = { ...svc, UpdateStatus: undefined, Spec: { ...svc.Spec, Mode: { Replicated: { Replicas: 3 } }, TaskTemplate: { ...svc.Spec.TaskTemplate, ForceUpdate: 0, Resources: {} } } };
    assert.deepEqual(reconcile([scaled], tasks, nodes, now + 1000, newId).status, []);
  });

  it('start-first, two at a time: the replacements run before the old tasks stop', () => {
    const nodes = [node('a'), node('b')];
    let svc = service({ replicas: 3 });
    let tasks = runAll(apply([], reconcile([svc], [], nodes, NOW, newId)));
    svc = updated(svc, 'busybox:2', { Parallelism: 2, Order: 'start-first' });
    // The first pass marks the service as updating; the next starts the first batch.
    ({ svc, tasks } = step(svc, tasks, nodes, NOW + 500));
    assert.equal(svc.UpdateStatus?.State, 'updating');
    const first = reconcile([svc], tasks, nodes, NOW + 1000, newId);
    const made = first.put.filter((t) => t.Spec.ContainerSpec.Image === 'busybox:2');
    assert.equal(made.length, 2);
    assert.ok(made.every((t) => t.Update));
    assert.equal(first.put.filter((t) => t.DesiredState === 'shutdown').length, 0, 'no old task stops first');
    let now = NOW + 1000;
    for (let i = 0; i < 20 && svc.UpdateStatus?.State !== 'completed'; i++) ({ svc, tasks } = step(svc, tasks, nodes, (now += 1000)));
    assert.equal(svc.UpdateStatus?.State, 'completed');
    assert.deepEqual(active(tasks).map((t) => t.Spec.ContainerSpec.Image), ['busybox:2', 'busybox:2', 'busybox:2']);
  });

  it('waits --update-delay after a batch runs', () => {
    const nodes = [node('a')];
    let svc = service({ replicas: 2 });
    let tasks = runAll(apply([], reconcile([svc], [], nodes, NOW, newId)));
    svc = updated(svc, 'busybox:2', { Delay: 10e9 });
    let now = NOW;
    for (let i = 0; i < 4; i++) ({ svc, tasks } = step(svc, tasks, nodes, (now += 100)));
    // Slot 1's replacement runs since `now`; slot 2 waits ten seconds from then.
    const ranAt = Math.max(...tasks.filter((t) => t.Update && t.Status.State === 'running').map((t) => Date.parse(t.Status.Timestamp)));
    const waiting = reconcile([svc], tasks, nodes, ranAt + 5000, newId);
    assert.equal(waiting.put.length, 0);
    assert.equal(waiting.wakeAt, ranAt + 10_000);
    const due = reconcile([svc], tasks, nodes, ranAt + 10_000, newId);
    assert.equal(due.put.filter((t) => t.UpdateStop).length, 1);
  });

  it('a replacement that fails pauses the update (Docker\'s message); --update-failure-action rollback goes back', () => {
    const nodes = [node('a')];
    let svc = service({ replicas: 2, restart: { Condition: 'none' } });
    let tasks = runAll(apply([], reconcile([svc], [], nodes, NOW, newId)));
    const base = { svc, tasks };
    svc = updated(svc, 'nosuch');
    let now = NOW;
    for (let i = 0; i < 20 && svc.UpdateStatus?.State !== 'paused'; i++) ({ svc, tasks } = step(svc, tasks, nodes, (now += 100)));
    assert.equal(svc.UpdateStatus?.State, 'paused');
    assert.match(svc.UpdateStatus!.Message, /^update paused due to failure or early termination of task t\d+$/);
    // Paused: slot 2 keeps its old task however long one waits.
    for (let i = 0; i < 3; i++) ({ svc, tasks } = step(svc, tasks, nodes, (now += 60_000)));
    assert.deepEqual(active(tasks).map((t) => t.Spec.ContainerSpec.Image), ['busybox']);

    ({ svc, tasks } = base);
    svc = updated(svc, 'nosuch', { FailureAction: 'rollback' });
    let rolledBack = false;
    for (let i = 0; i < 20 && svc.UpdateStatus?.State !== 'rollback_completed'; i++) {
      const r = step(svc, tasks, nodes, (now += 1000));
      rolledBack ||= r.d.status.some((u) => u.rollback);
      ({ svc, tasks } = r);
    }
    assert.ok(rolledBack);
    assert.equal(svc.UpdateStatus?.State, 'rollback_completed');
    assert.equal(svc.Spec.TaskTemplate.ContainerSpec.Image, 'busybox');
    assert.deepEqual(active(tasks).map((t) => t.Spec.ContainerSpec.Image), ['busybox', 'busybox']);
  });
});

describe('reconcile (the orchestrator\'s decisions)', () => {
  it('spreads a replicated service over the ready, active nodes, one slot each', () => {
    const nodes = [node('a'), node('b'), node('c'), node('d', { ready: false }), node('e', { availability: 'drain' })];
    const d = reconcile([service({ replicas: 3 })], [], nodes, NOW, newId);
    assert.equal(d.put.length, 3);
    assert.deepEqual(d.put.map((t) => t.Slot).sort(), [1, 2, 3]);
    assert.deepEqual(d.put.map((t) => t.NodeID).sort(), ['a', 'b', 'c']);
    assert.ok(d.put.every((t) => t.Status.State === 'assigned' && t.DesiredState === 'running'));
  });

  it('a task carries its service\'s endpoint mode and labels, so its node names it in DNS without waiting for the service', () => {
    const svc = service({ replicas: 1 });
    svc.Spec.EndpointSpec = { Mode: 'dnsrr' };
    svc.Spec.Labels = { 'com.docker.stack.namespace': 'demo' };
    const [t] = reconcile([svc], [], [node('a')], NOW, newId).put;
    assert.deepEqual(t!.Endpoint, { Spec: { Mode: 'dnsrr' }, Ports: [] });
    assert.deepEqual(t!.ServiceAnnotations, { Name: 'web', Labels: { 'com.docker.stack.namespace': 'demo' } });
    assert.deepEqual(reconcile([service({ replicas: 1 })], [], [node('a')], NOW, newId).put[0]!.Endpoint, { Spec: { Mode: 'vip' }, Ports: [] });
  });

  it('is idempotent: a second pass over its own result changes nothing', () => {
    const nodes = [node('a'), node('b')];
    const tasks = runAll(apply([], reconcile([service({ replicas: 3 })], [], nodes, NOW, newId)));
    const d = reconcile([service({ replicas: 3 })], tasks, nodes, NOW, newId);
    assert.deepEqual([d.put, d.delete], [[], []]);
  });

  it('scales down by shutting the highest slots, and up by new slots', () => {
    const nodes = [node('a'), node('b'), node('c')];
    let tasks = runAll(apply([], reconcile([service({ replicas: 3 })], [], nodes, NOW, newId)));
    let d = reconcile([service({ replicas: 1 })], tasks, nodes, NOW, newId);
    assert.deepEqual(d.put.map((t) => [t.Slot, t.DesiredState]).sort(), [[2, 'shutdown'], [3, 'shutdown']]);
    tasks = apply(tasks, d);
    d = reconcile([service({ replicas: 4 })], tasks, nodes, NOW, newId);
    const made = d.put.filter((t) => t.DesiredState === 'running');
    assert.deepEqual(made.map((t) => t.Slot).sort(), [2, 3, 4]);
  });

  it('moves the tasks of a dead or drained node at once, keeping their slots', () => {
    const nodes = [node('a'), node('b'), node('c')];
    const tasks = runAll(apply([], reconcile([service({ replicas: 3 })], [], nodes, NOW, newId)));
    const onB = tasks.find((t) => t.NodeID === 'b')!;
    for (const changed of [[node('a'), node('b', { ready: false }), node('c')], [node('a'), node('b', { availability: 'drain' }), node('c')]]) {
      const d = reconcile([service({ replicas: 3 })], tasks, changed, NOW, newId);
      assert.equal(d.put.find((t) => t.ID === onB.ID)?.DesiredState, 'shutdown');
      const repl = d.put.filter((t) => t.DesiredState === 'running');
      assert.equal(repl.length, 1);
      assert.equal(repl[0]!.Slot, onB.Slot);
      assert.notEqual(repl[0]!.NodeID, 'b');
    }
  });

  it('restarts a failed task after its delay, in its slot; on-failure skips a clean exit; none and max attempts end the slot', () => {
    const nodes = [node('a')];
    const failedAt = new Date(NOW - 1000).toISOString();
    const base = runAll(apply([], reconcile([service({ replicas: 1 })], [], nodes, NOW, newId)));
    const failed = base.map((t) => ({ ...t, Status: { ...t.Status, State: 'failed' as const, Timestamp: failedAt } }));
    // Delay 5 s, failed 1 s ago: stopped now, restarted later.
    let d = reconcile([service({ replicas: 1 })], failed, nodes, NOW, newId);
    assert.equal(d.put.length, 1);
    assert.equal(d.put[0]!.DesiredState, 'shutdown');
    assert.equal(d.wakeAt, NOW + 4000);
    d = reconcile([service({ replicas: 1 })], apply(failed, d), nodes, NOW + 4000, newId);
    const again = d.put.filter((t) => t.DesiredState === 'running');
    assert.equal(again.length, 1);
    assert.equal(again[0]!.Slot, 1);
    assert.equal(again[0]!.Restarts, 1);
    const svc = (c: 'none' | 'on-failure' | 'any', max = 0) => service({ replicas: 1, restart: { Condition: c, Delay: 0, MaxAttempts: max } });
    assert.equal(restartDecision(svc('none'), failed[0]!, NOW), 'never');
    assert.equal(restartDecision(svc('on-failure'), { ...failed[0]!, Status: { ...failed[0]!.Status, State: 'complete' } }, NOW), 'never');
    assert.equal(restartDecision(svc('on-failure'), failed[0]!, NOW), 'now');
    assert.equal(restartDecision(svc('any', 2), { ...failed[0]!, Restarts: 2 }, NOW), 'never');
    d = reconcile([svc('none')], failed, nodes, NOW, newId);
    const ended = apply(failed, d);
    assert.deepEqual(active(ended), []);
    assert.deepEqual(reconcile([svc('none')], ended, nodes, NOW + 60_000, newId).put, [], 'the slot stays ended');
  });

  it('leaves tasks pending with Docker\'s explanation when no node fits, and places them when one does', () => {
    const nodes = [node('a'), node('b'), node('c', { ready: false })];
    const svc = service({ replicas: 2, constraints: ['node.labels.zone==mars'] });
    const d = reconcile([svc], [], nodes, NOW, newId);
    assert.equal(d.put.length, 2);
    for (const t of d.put) {
      assert.equal(t.Status.State, 'pending');
      assert.equal(t.Status.Err, 'no suitable node (scheduling constraints not satisfied on 2 nodes; 1 node not available for new tasks)');
      assert.equal(t.NodeID, undefined);
    }
    const later = reconcile([svc], apply([], d), [node('a', { labels: { zone: 'mars' } }), node('b')], NOW, newId);
    assert.deepEqual(later.put.map((t) => [t.Status.State, t.NodeID]), [['assigned', 'a'], ['assigned', 'a']]);
  });

  it('runs a global service once on every eligible node, and stops it on a node that no longer is', () => {
    const svc = service({ global: true, constraints: ['node.role==manager'] });
    const nodes = [node('a', { role: 'manager' }), node('b', { role: 'manager' }), node('c')];
    const tasks = runAll(apply([], reconcile([svc], [], nodes, NOW, newId)));
    assert.deepEqual(tasks.map((t) => t.NodeID).sort(), ['a', 'b']);
    const d = reconcile([svc], tasks, [node('a', { role: 'manager' }), node('b'), node('c')], NOW, newId);
    assert.deepEqual(d.put.map((t) => [t.NodeID, t.DesiredState]), [['b', 'shutdown']]);
  });

  it('stops the tasks of a removed service and deletes their records once they stopped', () => {
    const nodes = [node('a')];
    const tasks = runAll(apply([], reconcile([service({ replicas: 1 })], [], nodes, NOW, newId)));
    let d = reconcile([], tasks, nodes, NOW, newId);
    assert.deepEqual(d.put.map((t) => t.DesiredState), ['shutdown']);
    const stopped = apply(tasks, d).map((t) => ({ ...t, Status: { ...t.Status, State: 'shutdown' as const } }));
    d = reconcile([], stopped, nodes, NOW, newId);
    assert.deepEqual(d.delete, [tasks[0]!.ID]);
  });
});

describe('service specs and constraints', () => {
  it('fills Docker\'s defaults and refuses what Docker refuses', () => {
    const s = normaliseSpec({ Name: 'web', TaskTemplate: { ContainerSpec: { Image: 'busybox' } } });
    assert.deepEqual(s.Mode, { Replicated: { Replicas: 1 } });
    assert.equal(s.EndpointSpec?.Mode, 'vip');
    assert.deepEqual(s.TaskTemplate.RestartPolicy, { Condition: 'any', Delay: 5e9, MaxAttempts: 0 });
    assert.throws(() => normaliseSpec({ Name: 'x', TaskTemplate: { ContainerSpec: { Image: 'b' } }, Mode: { Replicated: { Replicas: -1 } } }), /cannot unmarshal number -1/);
    assert.throws(() => normaliseSpec({ Name: 'x', TaskTemplate: { ContainerSpec: {} } }), /image reference must be provided/);
    // swarmkit's rule: '-' and '_' only between letters and digits (a stack's services are STACK_NAME).
    assert.equal(normaliseSpec({ Name: 'demo_web', TaskTemplate: { ContainerSpec: { Image: 'b' } } }).Name, 'demo_web');
    for (const bad of ['_web', 'web_', 'web-', 'we.b', 'we b']) assert.throws(() => normaliseSpec({ Name: bad, TaskTemplate: { ContainerSpec: { Image: 'b' } } }), /valid as a DNS name/, bad);
    assert.throws(() => normaliseSpec({ Name: 'a'.repeat(64), TaskTemplate: { ContainerSpec: { Image: 'b' } } }), /63 characters or fewer/);
    assert.throws(() => normaliseSpec({ Name: 'x', TaskTemplate: { ContainerSpec: { Image: 'b' } }, EndpointSpec: { Mode: 'ipvs' } }), /invalid endpoint mode/);
    assert.throws(() => normaliseSpec({ Name: 'x', TaskTemplate: { ContainerSpec: { Image: 'b' } }, EndpointSpec: { Mode: 'dnsrr', Ports: [{ TargetPort: 80 }] } }), /port published with ingress mode can't be used with dnsrr mode/);
    assert.deepEqual(normaliseSpec({ Name: 'x', TaskTemplate: { ContainerSpec: { Image: 'b' }, Networks: [{ Target: 'a' }, { Target: 'b' }] } }).TaskTemplate.Networks, [{ Target: 'a' }, { Target: 'b' }]);
  });

  it('parses and matches node.id, hostname, role and labels', () => {
    const n = node('abc', { hostname: 'Lab1', role: 'manager', labels: { zone: 'eu' } });
    assert.ok(matches(n, ['node.hostname==lab1', 'node.role==manager', 'node.labels.zone==eu', 'node.id==abc']));
    assert.ok(matches(n, ['node.labels.zone!=us', 'node.labels.rack!=1']));
    assert.ok(!matches(n, ['node.labels.zone==EU']), 'label values are exact');
    assert.ok(!matches(n, ['node.role==worker']));
    assert.throws(() => parseConstraint('node.color~=blue'), /InvalidArgument/);
    assert.throws(() => parseConstraint('node.foo==x'), /not supported/);
  });
});

describe('the sandbox balancer table', () => {
  it('maps each VIP to its bucket chain, where its rule takes slots in turn with numgen, a map per slot with a counter per element, and rejects a VIP with no backend', () => {
    const text = lbTable(arrange(undefined, [
      { service: 'aaaaaaaaaaaaZZZ', vip: '10.0.0.254', backends: ['10.0.0.4', '10.0.0.3'] },
      { service: 'bbbbbbbbbbbbYYY', vip: '10.0.0.253', backends: ['10.0.0.9', '10.0.0.9'] },
      { service: 'cccccccccccc', vip: '10.0.0.252', backends: [] },
    ]));
    // The buckets of these addresses (FNV-1a of the text, mod 256): a restarted berthd must find them where it left them.
    assert.deepEqual([bucketOf('10.0.0.254'), bucketOf('10.0.0.253'), bucketOf('tcp . 8080')], [5, 0, 142]);
    const A = 'svc_b5';
    const B = 'svc_b0';
    assert.equal(text, [
      'table ip berth_svc {',
      '  map slot0 {',
      '    type ipv4_addr : ipv4_addr',
      '    counter',
      '    elements = { 10.0.0.253 : 10.0.0.9, 10.0.0.254 : 10.0.0.3 }',
      '  }',
      '  map slot1 {',
      '    type ipv4_addr : ipv4_addr',
      '    counter',
      '    elements = { 10.0.0.254 : 10.0.0.4 }',
      '  }',
      // The spare slot: a VIP grown by one needs no new map.
      '  map slot2 {',
      '    type ipv4_addr : ipv4_addr',
      '    counter',
      '  }',
      '  map rr2 {',
      '    typeof numgen inc mod 2 : verdict',
      '    elements = { 0 : goto to0, 1 : goto to1 }',
      '  }',
      '  map rr3 {',
      '    typeof numgen inc mod 3 : verdict',
      '    elements = { 0 : goto to0, 1 : goto to1, 2 : goto to2 }',
      '  }',
      '  map vips {',
      '    type ipv4_addr : verdict',
      `    elements = { 10.0.0.253 : goto ${B}, 10.0.0.254 : goto ${A} }`,
      '  }',
      '  set empty {',
      '    type ipv4_addr',
      '    elements = { 10.0.0.252 }',
      '  }',
      '  chain out {',
      '    type nat hook output priority -100; policy accept;',
      '    ip daddr vmap @vips',
      '  }',
      '  chain reject_empty {',
      '    type filter hook output priority 0; policy accept;',
      '    ip daddr @empty meta l4proto tcp reject with tcp reset',
      '    ip daddr @empty reject',
      '  }',
      '  chain to0 {',
      '    dnat to ip daddr map @slot0',
      '  }',
      '  chain to1 {',
      '    dnat to ip daddr map @slot1',
      '  }',
      '  chain to2 {',
      '    dnat to ip daddr map @slot2',
      '  }',
      `  chain ${B} {`,
      '    ip daddr 10.0.0.253 goto to0',
      '  }',
      `  chain ${A} {`,
      '    ip daddr 10.0.0.254 numgen inc mod 2 vmap @rr2',
      '  }',
      '}',
      '',
    ].join('\n'));
  });

  it('keeps a backend that stays in its slot: a new one takes a free slot, and fewer backends move the high slots down', () => {
    const svc = 'aaaaaaaaaaaaZZZ';
    const vip = '10.0.0.254';
    const one = arrange(undefined, [{ service: svc, vip, backends: ['10.0.0.5', '10.0.0.3', '10.0.0.4'] }]);
    assert.deepEqual(one[0]!.backends, ['10.0.0.3', '10.0.0.4', '10.0.0.5']);
    const two = arrange(one, [{ service: svc, vip, backends: ['10.0.0.5', '10.0.0.9', '10.0.0.3'] }]);
    assert.deepEqual(two[0]!.backends, ['10.0.0.3', '10.0.0.9', '10.0.0.5']);
    assert.deepEqual(arrange(two, [{ service: svc, vip, backends: ['10.0.0.5', '10.0.0.9'] }])[0]!.backends, ['10.0.0.5', '10.0.0.9']);
    // The same backends in another order: the applied entry itself, so nothing differs.
    const same = arrange(two, [{ service: svc, vip, backends: ['10.0.0.9', '10.0.0.5', '10.0.0.3'] }]);
    assert.equal(same[0], two[0]);
    assert.equal(lbScript(two, same), '');
    // Another service at the VIP: sorted anew.
    assert.deepEqual(arrange(two, [{ service: 'other', vip, backends: ['10.0.0.9', '10.0.0.3'] }])[0]!.backends, ['10.0.0.3', '10.0.0.9']);
  });

  it('a change is only what differs: a replaced backend is its slot\'s element, a count change the rules of the VIP\'s bucket and any slot it is the first to need; an unknown table is made whole', () => {
    const A = 'svc_b5';
    const T = 'ip berth_svc';
    const before = arrange(undefined, [{ service: 'aaaaaaaaaaaaZZZ', vip: '10.0.0.254', backends: ['10.0.0.4', '10.0.0.3'] }, { service: 'dddddddddddd', vip: '10.0.0.250', backends: ['10.0.0.7'] }]);
    const after = arrange(before, [{ service: 'aaaaaaaaaaaaZZZ', vip: '10.0.0.254', backends: ['10.0.0.4', '10.0.0.5'] }, { service: 'dddddddddddd', vip: '10.0.0.250', backends: ['10.0.0.7'] }]);
    const replaced = lbScript(before, after);
    assert.deepEqual(replaced.trim().split('\n'), [`delete element ${T} slot0 { 10.0.0.254 }`, `add element ${T} slot0 { 10.0.0.254 : 10.0.0.5 }`]);
    // Elements only: written by berth-nftset (keys and values as the kernel has them).
    assert.deepEqual(elementArgs(replaced), ['berth_svc', '-slot0/0a0000fe', '+slot0/0a0000fe:0a000005']);
    assert.equal(lbScript(before, before), '');
    const grown = arrange(after, [{ service: 'aaaaaaaaaaaaZZZ', vip: '10.0.0.254', backends: ['10.0.0.4', '10.0.0.5', '10.0.0.6'] }, after[1]!]);
    // Grown past the slots the table has (2, told: a table made whole has a spare one): a new slot first.
    const script = lbScript(after, grown, 2);
    assert.deepEqual(script.trim().split('\n'), [
      `add map ${T} slot2 { type ipv4_addr : ipv4_addr; counter; }`, `add chain ${T} to2`, `add rule ${T} to2 dnat to ip daddr map @slot2`,
      `add map ${T} rr3 { typeof numgen inc mod 3 : verdict; }`, `add element ${T} rr3 { 0 : goto to0, 1 : goto to1, 2 : goto to2 }`,
      `add element ${T} slot2 { 10.0.0.254 : 10.0.0.6 }`,
      `flush chain ${T} ${A}`, `add rule ${T} ${A} ip daddr 10.0.0.254 numgen inc mod 3 vmap @rr3`,
    ]);
    assert.equal(elementArgs(script), undefined);
    // Into the spare slot of a table made whole (lbScript's guess when not told): elements and rules only.
    assert.deepEqual(elementArgs(lbScript(after, grown)), ['berth_svc', '+slot2/0a0000fe:0a000006', `=${A}`, `>${A}/0a0000fe/3`]);
    // Shrunk back to 2: its slot 2 element and its rule, and slot 2 stays (empty) for the next growth.
    const shrunk = arrange(grown, [{ ...grown[0]!, backends: ['10.0.0.4', '10.0.0.5'] }, grown[1]!]);
    const back = lbScript(grown, shrunk);
    assert.deepEqual(back.trim().split('\n'), [`delete element ${T} slot2 { 10.0.0.254 }`, `flush chain ${T} ${A}`, `add rule ${T} ${A} ip daddr 10.0.0.254 numgen inc mod 2 vmap @rr2`]);
    // Elements and the bucket's rules: berth-nftset's, no nft (`=CHAIN` flushed, `>CHAIN/KEY/N` added).
    assert.deepEqual(elementArgs(back), ['berth_svc', '-slot2/0a0000fe', `=${A}`, `>${A}/0a0000fe/2`]);
    // Grown again into the slots the table has (3, given): no map, chain or rule but the VIP's.
    const again = lbScript(shrunk, grown, 3);
    assert.deepEqual(again.trim().split('\n'), [`add element ${T} slot2 { 10.0.0.254 : 10.0.0.6 }`, `flush chain ${T} ${A}`, `add rule ${T} ${A} ip daddr 10.0.0.254 numgen inc mod 3 vmap @rr3`]);
    assert.deepEqual(elementArgs(again), ['berth_svc', '+slot2/0a0000fe:0a000006', `=${A}`, `>${A}/0a0000fe/3`]);
    // Down to one backend: the rule is a goto.
    assert.deepEqual(elementArgs(lbScript(shrunk, arrange(shrunk, [{ ...grown[0]!, backends: ['10.0.0.5'] }, grown[1]!]), 3)), ['berth_svc', '-slot1/0a0000fe', `=${A}`, `>${A}/0a0000fe/1`]);
    // Another chain's rule, a dispatch whose map is not its number's, a match that is no key, a slot's chain or map: nft's.
    assert.equal(elementArgs(`flush chain ${T} ${A}\nadd rule ${T} svc_other ip daddr 10.0.0.254 numgen inc mod 2 vmap @rr2\n`), undefined);
    assert.equal(elementArgs(`flush chain ${T} ${A}\nadd rule ${T} ${A} ip daddr 10.0.0.254 numgen inc mod 2 vmap @rr3\n`), undefined);
    assert.equal(elementArgs(`flush chain ${T} ${A}\nadd rule ${T} ${A} ip saddr 10.0.0.254 goto to0\n`), undefined);
    assert.equal(elementArgs(`add chain ${T} to2\n`), undefined);
    assert.equal(elementArgs(`add element ${T} rr3 { 0 : goto to0 }\n`), undefined);
    assert.equal(elementArgs(`delete element ${T} vips { 10.0.0.254 : goto ${A} }\n`), undefined);
    // A bucket's chain made and deleted, a dispatch element to it, the reject set's elements: the batch's.
    assert.deepEqual(elementArgs(`add chain ${T} ${A}\nadd element ${T} vips { 10.0.0.254 : goto ${A} }\nadd rule ${T} ${A} ip daddr 10.0.0.254 goto to0\n`),
      ['berth_svc', `*${A}`, `+vips/0a0000fe:@${A}`, `>${A}/0a0000fe/1`]);
    assert.deepEqual(elementArgs(`delete element ${T} vips { 10.0.0.254 }\nadd element ${T} empty { 10.0.0.254 }\nflush chain ${T} ${A}\ndelete chain ${T} ${A}\n`),
      ['berth_svc', '-vips/0a0000fe', '+empty/0a0000fe', `=${A}`, `!${A}`]);
    // The last backend gone: the VIP leaves the map for the reject set, its elements and (alone in its bucket) its bucket's chain go; the slots stay.
    assert.deepEqual(lbScript(grown, arrange(grown, [{ ...grown[0]!, backends: [] }, grown[1]!])).trim().split('\n'), [
      `delete element ${T} vips { 10.0.0.254 }`,
      `delete element ${T} slot0 { 10.0.0.254 }`, `delete element ${T} slot1 { 10.0.0.254 }`, `delete element ${T} slot2 { 10.0.0.254 }`,
      `add element ${T} empty { 10.0.0.254 }`, `flush chain ${T} ${A}`, `delete chain ${T} ${A}`,
    ]);
    // lbChanges still takes slots away when told to (the shared rr maps before the slot chains they go to).
    assert.deepEqual(lbChanges([[grown[0]!, { ...grown[0]!, backends: [] }]], 3, 1, VIP_KIND, (t) => bucketsAround(grown, [], t)).trim().split('\n').slice(-8), [
      `delete map ${T} rr2`, `delete map ${T} rr3`,
      `flush chain ${T} to1`, `delete chain ${T} to1`, `delete map ${T} slot1`, `flush chain ${T} to2`, `delete chain ${T} to2`, `delete map ${T} slot2`,
    ]);
    assert.equal(lbScript(undefined, after), `table ip berth_svc\ndelete table ip berth_svc\n${lbTable(after)}`);
    assert.equal(lbScript(before, []), 'table ip berth_svc\ndelete table ip berth_svc\n');
    assert.deepEqual([...countersOf(after)], [
      ['aaaaaaaaaaaaZZZ 10.0.0.254 0 10.0.0.5', { service: 'aaaaaaaaaaaaZZZ', backend: '10.0.0.5' }],
      ['aaaaaaaaaaaaZZZ 10.0.0.254 1 10.0.0.4', { service: 'aaaaaaaaaaaaZZZ', backend: '10.0.0.4' }],
      ['dddddddddddd 10.0.0.250 0 10.0.0.7', { service: 'dddddddddddd', backend: '10.0.0.7' }],
    ]);
    const listed = '{"nftables": [{"metainfo": {}}, {"map": {"family": "ip", "name": "slot1", "table": "berth_svc", "type": "ipv4_addr", "map": "ipv4_addr", '
      + '"elem": [[{"elem": {"val": "10.0.0.254", "counter": {"packets": 6, "bytes": 360}}}, "10.0.0.4"], [{"elem": {"val": "10.9.9.9", "counter": {"packets": 1, "bytes": 60}}}, "10.0.0.1"]]}}, '
      + '{"map": {"name": "vips", "elem": [["10.0.0.254", {"goto": {"target": "x"}}]]}}]}';
    assert.deepEqual([...parseCounters(listed, after)], [['aaaaaaaaaaaaZZZ 10.0.0.254 1 10.0.0.4', 6]]);
    // The same from a map by VIP (what ServiceBalancers keeps).
    assert.equal(lbScript(new Map(before.map((e) => [e.vip, e])), after), replaced);
  });

  it('a patch\'s script takes the slot counts it is given (the whole table\'s), not its VIPs\' own', () => {
    const T = 'ip berth_svc';
    const A = 'svc_b5';
    const three = { service: 'aaaaaaaaaaaaZZZ', vip: '10.0.0.254', backends: ['10.0.0.3', '10.0.0.4', '10.0.0.5'] };
    const two = arrangeOne(three, { ...three, backends: ['10.0.0.3', '10.0.0.4'] });
    assert.equal(arrangeOne(three, { ...three, backends: ['10.0.0.5', '10.0.0.4', '10.0.0.3'] }), three, 'the same backends: the same object');
    // Another VIP keeps 3 backends: slot 2 stays, only this VIP's element of it goes.
    const around = (before: VipEntry[], after: VipEntry[]) => (t: ReadonlySet<number>) => bucketsAround(before, after, t);
    assert.deepEqual(lbChanges([[three, two]], 3, 3, VIP_KIND, around([three], [two])).trim().split('\n'), [
      `delete element ${T} slot2 { 10.0.0.254 }`, `flush chain ${T} ${A}`, `add rule ${T} ${A} ip daddr 10.0.0.254 numgen inc mod 2 vmap @rr2`,
    ]);
    // It was the only one with 3: rr3 and then slot 2 go after it.
    assert.deepEqual(lbChanges([[three, two]], 3, 2, VIP_KIND, around([three], [two])).trim().split('\n').slice(-4), [`delete map ${T} rr3`, `flush chain ${T} to2`, `delete chain ${T} to2`, `delete map ${T} slot2`]);
    // Grown while another VIP already has 3: slot 2 is not made again.
    assert.doesNotMatch(lbChanges([[two, three]], 3, 3, VIP_KIND, around([two], [three])), /add (map|chain|rule) ip berth_svc (slot|to)2/);
    assert.match(lbChanges([[two, three]], 2, 3, VIP_KIND, around([two], [three])), /^add map ip berth_svc slot2 /);
    assert.match(lbChanges([[two, three]], 2, 3, VIP_KIND, around([two], [three])), /\nadd map ip berth_svc rr3 \{ typeof numgen inc mod 3 : verdict; \}\n/);
    assert.doesNotMatch(lbChanges([[two, three]], 3, 3, VIP_KIND, around([two], [three])), /add map ip berth_svc rr3/);
  });
  it('writes a bucket\'s rules again whole when one of its VIPs comes, goes or changes its number of backends, and makes and deletes the bucket\'s chain with its first and last VIP', () => {
    const T = 'ip berth_svc';
    // Two addresses of one bucket, and one of another.
    assert.equal(bucketOf('10.0.0.187'), bucketOf('10.0.0.204'));
    const C = `svc_b${bucketOf('10.0.0.187')}`;
    const x = { service: 'xxxxxxxxxxxx', vip: '10.0.0.187', backends: ['10.0.1.1', '10.0.1.2'] };
    const y = { service: 'yyyyyyyyyyyy', vip: '10.0.0.204', backends: ['10.0.2.1'] };
    const z = { service: 'zzzzzzzzzzzz', vip: '10.0.0.254', backends: ['10.0.3.1'] };
    const table = lbTable(arrange(undefined, [x, y, z]));
    assert.match(table, new RegExp(`chain ${C} \\{\\n {4}ip daddr 10\\.0\\.0\\.187 numgen inc mod 2 vmap @rr2\\n {4}ip daddr 10\\.0\\.0\\.204 goto to0\\n {2}\\}`));
    // y grows: both rules of the bucket again, nothing of z's.
    const before = arrange(undefined, [x, y, z]);
    const grown = arrange(before, [x, { ...y, backends: ['10.0.2.1', '10.0.2.2'] }, z]);
    assert.deepEqual(lbScript(before, grown).trim().split('\n'), [
      `add element ${T} slot1 { 10.0.0.204 : 10.0.2.2 }`,
      `flush chain ${T} ${C}`, `add rule ${T} ${C} ip daddr 10.0.0.187 numgen inc mod 2 vmap @rr2`, `add rule ${T} ${C} ip daddr 10.0.0.204 numgen inc mod 2 vmap @rr2`,
    ]);
    // x goes: the bucket keeps its chain with y's rule alone.
    const without = arrange(before, [y, z]);
    assert.deepEqual(lbScript(before, without).trim().split('\n'), [
      `delete element ${T} vips { 10.0.0.187 }`, `delete element ${T} slot0 { 10.0.0.187 }`, `delete element ${T} slot1 { 10.0.0.187 }`,
      `flush chain ${T} ${C}`, `add rule ${T} ${C} ip daddr 10.0.0.204 goto to0`,
    ]);
    // The first VIP of a bucket makes its chain before the map element that goes to it.
    const first = lbScript(arrange(undefined, [z]), arrange(undefined, [z, y])).trim().split('\n');
    assert.deepEqual(first, [
      `add chain ${T} ${C}`, `add element ${T} slot0 { 10.0.0.204 : 10.0.2.1 }`, `add element ${T} vips { 10.0.0.204 : goto ${C} }`, `add rule ${T} ${C} ip daddr 10.0.0.204 goto to0`,
    ]);
    // Every bucket is one of BUCKETS, and 10,000 VIPs spread over all of them.
    const counts = new Map<number, number>();
    for (let i = 0; i < 10000; i++) { const b = bucketOf(`10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`); counts.set(b, (counts.get(b) ?? 0) + 1); }
    assert.equal(counts.size, BUCKETS);
    assert.ok(Math.max(...counts.values()) < 80, `at most ${Math.max(...counts.values())} VIPs in one bucket`);
  });
});

describe('the orchestrator\'s writes', () => {
  it('writes a large decision in transactions etcd accepts (at most 128 operations each)', async () => {
    const { Orchestrator } = await import('../../src/cluster/orchestrator.js');
    const { SK } = await import('../../src/cluster/services.js');
    const { K } = await import('../../src/cluster/keys.js');
    const store = new MemStore();
    const txns: Array<{ cmp: number; ops: number }> = [];
    const realTxn = store.txn.bind(store);
    // MemStore refuses a transaction of more than 128 operations, as etcd does (--max-txn-ops).
    store.txn = async (cmp, puts, dels = []) => {
      if (puts[0]?.key !== SK.leader) txns.push({ cmp: cmp.length, ops: puts.length + dels.length });
      return realTxn(cmp, puts, dels);
    };
    const svc = service({ replicas: 150 });
    store.write([[SK.service(svc.ID), svc], [K.node('n1'), NODE], [K.aliveOf('n1'), {}]]);
    const o = new Orchestrator(sessionOf(store) as never, () => undefined);
    o.start();
    try {
      await waitUntil(() => tasksIn(store) >= 150);
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await o.close();
    }
    assert.ok(txns.length >= 3, `${txns.length} transactions`);
    for (const t of txns) assert.ok(t.cmp <= 128 && t.ops <= 128, JSON.stringify(t));
    assert.equal(tasksIn(store), 150, 'every task placed once');
  });

  it('decides on a view its watch keeps; a watch that died without a word is found behind the store and read again', async () => {
    const { Orchestrator } = await import('../../src/cluster/orchestrator.js');
    const { SK } = await import('../../src/cluster/services.js');
    const { K } = await import('../../src/cluster/keys.js');
    const store = new MemStore();
    store.write([[K.node('n1'), NODE], [K.aliveOf('n1'), {}]]);
    const logs: string[] = [];
    const o = new Orchestrator(sessionOf(store) as never, (m) => logs.push(m));
    o.start();
    try {
      await waitUntil(() => o.leading && store.watchers.length > 0);
      const reads = store.lists;
      const one = service({ replicas: 3 });
      store.write([[SK.service(one.ID), one]]);
      await waitUntil(() => tasksIn(store) === 3);
      assert.equal(store.lists, reads, 'a pass read the store instead of its view');
      // The watch goes silent (a store client replaced under it): within a few seconds the view is read again.
      store.watchers.length = 0;
      const two = service({ replicas: 2 });
      two.ID = 'svc2';
      store.write([[SK.service(two.ID), two]]);
      await waitUntil(() => tasksIn(store) === 5, 400);
      assert.ok(logs.some((l) => /its view stood at revision \d+ while the store went on/.test(l)), logs.join('\n'));
    } finally {
      await o.close();
    }
  });
});

const NODE = { ID: 'n1', Spec: { Role: 'manager', Labels: {}, Availability: 'active' }, Description: { Hostname: 'n1' } };
const sessionOf = (store: MemStore) => ({ store, lease: { grant: async () => '1' }, state: { role: 'manager', nodeId: 'n1' } });
const tasksIn = (store: MemStore) => [...store.data.keys()].filter((k) => k.startsWith('/berth/v1/tasks/')).length;

describe('the orchestrator\'s leadership', () => {
  it('a leader key of its own that this process does not hold (a campaign whose answer was lost) is given up and taken again', async () => {
    const { Orchestrator } = await import('../../src/cluster/orchestrator.js');
    const { SK } = await import('../../src/cluster/services.js');
    let leader: { value: unknown; mod: number } | undefined;
    let rev = 10;
    let lostAnswers = 1;
    const store = {
      get: async (key: string) => (key === SK.leader && leader ? { value: leader.value, modRevision: leader.mod } : undefined),
      txn: async (cmp: Array<{ key: string; target: string; value: number }>, puts: Array<{ key: string; value: unknown }>, dels: string[] = []) => {
        if (puts[0]?.key === SK.leader) {
          if (leader) return { ok: false, revision: rev };
          leader = { value: puts[0].value, mod: ++rev };
          // The write is taken, its answer lost (quorum came back after the client gave up).
          if (lostAnswers-- > 0) throw new Error('context deadline exceeded');
          return { ok: true, revision: rev };
        }
        if (dels.includes(SK.leader)) {
          if (cmp[0] && leader && cmp[0].value !== leader.mod) return { ok: false, revision: rev };
          leader = undefined;
          return { ok: true, revision: ++rev };
        }
        return { ok: true, revision: ++rev };
      },
      readManyAt: async () => ({ revision: rev, found: [new Map(), new Map(), new Map(), new Map()] }),
      revision: async () => rev,
      watchBatches: async () => async () => undefined,
      call: <T>(fn: () => Promise<T>) => fn(),
    };
    const session = { store, lease: { grant: async () => '1' }, state: { role: 'manager', nodeId: 'n1' } };
    const o = new Orchestrator(session as never, () => undefined);
    o.start();
    try {
      for (let i = 0; i < 400 && !o.leading; i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(o.leading, 'the manager never led: its own lost campaign held the key');
    } finally {
      await o.close();
    }
  });
});

async function waitUntil(ok: () => boolean, rounds = 200): Promise<void> {
  for (let i = 0; i < rounds && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ok(), 'timed out');
}

describe('task names in the DNS (ServiceNet)', () => {
  const task = (o: { id: string; container: string; desired?: 'running' | 'shutdown'; state?: TaskRecord['Status']['State'] }): TaskRecord => ({
    ID: o.id, Version: { Index: 1 }, CreatedAt: '', UpdatedAt: '', Labels: {}, ServiceID: 's1', Slot: 1, NodeID: 'n1', SpecVersion: 1, Attempt: 0,
    Spec: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'net1' }] },
    Status: { Timestamp: '', State: o.state ?? 'running', Message: '', ContainerStatus: { ContainerID: o.container, PID: 1, ExitCode: 0 } },
    DesiredState: o.desired ?? 'running', ServiceAnnotations: { Name: 'web' },
  });
  const put = (t: TaskRecord) => ({ type: 'put' as const, key: `${ROOT}tasks/${t.ID}`, value: t, modRevision: 1 });
  const setup = () => {
    const changed: string[][] = [];
    const balancers = { sync: async () => undefined } as unknown as ServiceBalancers;
    const net = new ServiceNet(() => [], () => [], balancers, (ids) => changed.push(ids));
    return { net, changed };
  };
  const taskAliases = ['tasks.web', 'web'];

  it('a task answers its names only while it runs and is desired running; its networks are told at each change', async () => {
    const { net, changed } = setup();
    await net.follow([put(task({ id: 't1', container: 'c1', state: 'starting' }))], false);
    assert.equal(net.answers('c1', taskAliases), false, 'not before it runs');
    await net.follow([put(task({ id: 't1', container: 'c1' }))], false);
    assert.equal(net.answers('c1', taskAliases), true);
    assert.deepEqual(changed.at(-1), ['net1']);
    // Desired shutdown: out of the DNS before its agent stops it (libnetwork's deactivation).
    await net.follow([put(task({ id: 't1', container: 'c1', desired: 'shutdown' }))], false);
    assert.equal(net.answers('c1', taskAliases), false);
    assert.deepEqual(changed.at(-1), ['net1']);
  });

  it('a container that is no task answers always; a task\'s container under a deleted record does not', async () => {
    const { net } = setup();
    assert.equal(net.answers('plain', ['db', 'tasks-db']), true);
    await net.follow([put(task({ id: 't2', container: 'c2' }))], false);
    await net.follow([{ type: 'delete', key: `${ROOT}tasks/t2`, modRevision: 2 }], false);
    assert.equal(net.answers('c2', taskAliases), false);
  });
});

describe('service metrics (ServiceNet.stats through the collector)', () => {
  it('counts replicas wanted, tasks running and each VIP\'s backends, by name', async () => {
    const svc = (replicas: number) => ({
      type: 'put' as const, key: `${ROOT}services/s1`, modRevision: 1,
      value: { ID: 's1', Spec: { Name: 'web', Mode: { Replicated: { Replicas: replicas } }, TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'net1' }] } }, Endpoint: { Spec: { Mode: 'vip' }, VirtualIPs: [{ NetworkID: 'net1', Addr: '10.0.1.254/24' }] } },
    });
    const task = (id: string, container: string, desired: 'running' | 'shutdown' = 'running') => ({
      type: 'put' as const, key: `${ROOT}tasks/${id}`, modRevision: 2,
      value: { ID: id, ServiceID: 's1', DesiredState: desired, Spec: { Networks: [{ Target: 'net1' }] }, Status: { State: 'running', ContainerStatus: { ContainerID: container } } },
    });
    const eps = [{ Network: 'net1', ContainerID: 'c1', IP: '10.0.1.2', Aliases: ['tasks.web'] }, { Network: 'net1', ContainerID: 'c2', IP: '10.0.1.3', Aliases: ['tasks.web'] }, { Network: 'net1', ContainerID: 'x', IP: '10.0.1.4', Aliases: [] }];
    const net = new ServiceNet(() => eps as never, () => [], { sync: async () => undefined } as unknown as ServiceBalancers, () => undefined);
    await net.follow([svc(3), task('t1', 'c1'), task('t2', 'c2')], false);
    const collector = new MetricsCollector({
      containers: () => [], networks: () => [{ Id: 'net1', Name: 'front', Driver: 'overlay', Scope: 'swarm', Options: {} } as never], hostLink: () => undefined, life: new LifecycleStats(),
      links: async () => new Map(), nft: async () => ({ rules: [], elements: [] }), services: () => net.stats(),
    });
    const lines = (await collector.render()).split('\n');
    for (const l of ['berth_service_replicas_desired{service="web"} 3', 'berth_service_tasks_running{service="web"} 2', 'berth_service_vip_backends{service="web",network="front"} 2']) assert.ok(lines.includes(l), `missing ${l}`);
    // A task desired shut down leaves the count and the VIP before it stops.
    await net.follow([task('t2', 'c2', 'shutdown')], false);
    const after = (await collector.render()).split('\n');
    for (const l of ['berth_service_tasks_running{service="web"} 1', 'berth_service_vip_backends{service="web",network="front"} 1']) assert.ok(after.includes(l), `missing ${l}`);
  });
});

describe('ServiceNet hands the balancers only the services a batch changed', () => {
  type Table = Map<string, VipEntry>;
  /** A balancer that keeps each sandbox's entries as the real one merges them (its kernel side is servicelb.test.ts's). */
  const fakeBalancers = () => {
    const tables = new Map<string, Table>();
    const calls: Array<'sync' | 'patch'> = [];
    const b = {
      sync: async (want: Map<string, { entries: VipEntry[] }>, all: boolean) => {
        calls.push('sync');
        if (all) for (const id of [...tables.keys()]) if (!want.has(id)) tables.delete(id);
        for (const [id, w] of want) tables.set(id, new Map(w.entries.map((e) => [e.vip, e])));
      },
      patch: async (want: Map<string, LbPatch>) => {
        calls.push('patch');
        for (const [id, p] of want) {
          const t = tables.get(id);
          if (!t) { tables.set(id, new Map(p.whole().map((e) => [e.vip, e]))); continue; }
          for (const v of p.removed) if (!p.entries.some((e) => e.vip === v)) t.delete(v);
          for (const e of p.entries) t.set(e.vip, e);
        }
      },
    };
    return { balancers: b as unknown as ServiceBalancers, tables, calls };
  };
  const norm = (l: Iterable<VipEntry>) => [...l].map((e) => ({ ...e, backends: [...e.backends].sort() })).sort((a, b) => (a.vip < b.vip ? -1 : 1));
  const sandboxes = [{ id: 'l1', netns: '/run/netns/l1', networks: ['net1'] }, { id: 'l2', netns: '/run/netns/l2', networks: ['net1', 'net2'] }];

  it('over random batches of tasks, endpoints and services, the patched tables are the ones a whole sync makes', async () => {
    let seed = 5;
    const rnd = (n: number) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 16) % n; };
    const eps = new Map<string, Map<string, EndpointRecord>>();
    const records = new Map<string, unknown>();
    const { balancers, tables, calls } = fakeBalancers();
    const net = new ServiceNet((id) => [...(eps.get(id)?.values() ?? [])], () => sandboxes, balancers, () => undefined);
    const put = (key: string, value: unknown) => {
      records.set(key, value);
      const [kind, n, ep] = key.slice(ROOT.length).split('/');
      if (kind === 'endpoints') { if (!eps.has(n!)) eps.set(n!, new Map()); eps.get(n!)!.set(ep!, value as EndpointRecord); }
      return { type: 'put' as const, key, value, modRevision: 1 };
    };
    const del = (key: string) => {
      records.delete(key);
      const [kind, n, ep] = key.slice(ROOT.length).split('/');
      if (kind === 'endpoints') eps.get(n!)?.delete(ep!);
      return { type: 'delete' as const, key, modRevision: 1 };
    };
    const name = (k: number) => `web${k}`;
    const service = (k: number) => {
      const nets = [['net1'], ['net2'], ['net1', 'net2']][rnd(3)]!;
      // Sometimes renamed (its tasks' endpoints then no longer name it), sometimes a new VIP.
      const nm = rnd(8) === 0 ? `${name(k)}b` : name(k);
      return put(`${ROOT}services/s${k}`, {
        ID: `s${k}`, Spec: { Name: nm, Mode: { Replicated: { Replicas: 1 } }, TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Networks: nets.map((Target) => ({ Target })) } },
        Endpoint: { Spec: { Mode: 'vip' }, VirtualIPs: nets.map((n) => ({ NetworkID: n, Addr: `10.${n === 'net1' ? 1 : 2}.0.${100 + k + (rnd(6) === 0 ? 50 : 0)}/24` })) },
      });
    };
    const task = (t: number) => {
      const k = rnd(4);
      // Some tasks carry an alias that is another service's name: their endpoints are that service's backends too.
      const alias = rnd(5) === 0 ? [name((k + 1) % 4)] : [];
      return put(`${ROOT}tasks/t${t}`, {
        ID: `t${t}`, ServiceID: `s${k}`, DesiredState: rnd(4) ? 'running' : 'shutdown', ServiceAnnotations: { Name: name(k) },
        Spec: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'net1', Aliases: alias }, { Target: 'net2', Aliases: alias }] },
        Status: { State: rnd(5) ? 'running' : 'starting', ContainerStatus: { ContainerID: `c${t}` } },
      });
    };
    const endpoint = (t: number, n: string) => {
      const k = rnd(5);
      const aliases = k === 4 ? ['plain'] : [`tasks.${name(k)}`, ...(rnd(4) === 0 ? [`tasks.${name((k + 1) % 4)}`] : [])];
      return put(`${ROOT}endpoints/${n}/e${t}${n}`, { Network: n, EndpointID: `e${t}${n}`, ContainerID: `c${t}`, Name: `c${t}`, Aliases: aliases, IP: `10.${n === 'net1' ? 1 : 2}.1.${t + (rnd(3) === 0 ? 100 : 0)}`, Mac: '', Node: 'n1', Vtep: '' });
    };
    const first = [0, 1, 2, 3].map(service).concat([0, 1, 2, 3, 4, 5].map(task), [0, 1, 2, 3, 4, 5].flatMap((t) => [endpoint(t, 'net1'), endpoint(t, 'net2')]));
    await net.follow(first, true);
    let patches = 0;
    let changedSteps = 0;
    for (let step = 0; step < 300; step++) {
      const batch: WatchEvent<unknown>[] = [];
      for (let n = 1 + rnd(3); n > 0; n--) {
        const r = rnd(10);
        const t = rnd(8);
        const nt = rnd(2) ? 'net1' : 'net2';
        if (r < 3) batch.push(task(t));
        else if (r < 4) batch.push(del(`${ROOT}tasks/t${t}`));
        else if (r < 6) batch.push(endpoint(t, nt));
        else if (r < 7) batch.push(del(`${ROOT}endpoints/${nt}/e${t}${nt}`));
        else if (r < 9) batch.push(service(rnd(4)));
        else batch.push(del(`${ROOT}services/s${rnd(4)}`));
      }
      const before = JSON.stringify([...tables].map(([id, t]) => [id, norm(t.values())]));
      const calledBefore = calls.length;
      await net.follow(batch, false);
      if (calls.length > calledBefore) patches += calls.slice(calledBefore).filter((c) => c === 'patch').length;
      // The whole sync a fresh ServiceNet makes from every record now, and the endpoints as they are.
      const whole = fakeBalancers();
      const fresh = new ServiceNet((id) => [...(eps.get(id)?.values() ?? [])], () => sandboxes, whole.balancers, () => undefined);
      await fresh.follow([...records].map(([key, value]) => ({ type: 'put' as const, key, value, modRevision: 1 })), true);
      for (const sb of sandboxes) assert.deepEqual(norm(tables.get(sb.id)?.values() ?? []), norm(whole.tables.get(sb.id)!.values()), `step ${step}, ${sb.id}: ${JSON.stringify(batch)}`);
      if (JSON.stringify([...tables].map(([id, t]) => [id, norm(t.values())])) !== before) changedSteps++;
    }
    // Only the first batch was synced whole; the walk changed the tables often, through patches.
    assert.deepEqual(calls.filter((c) => c === 'sync').length, 1);
    assert.ok(patches >= 150 && changedSteps >= 100, `patches ${patches}, steps that changed a table ${changedSteps}`);
  });

  it('a patch hands only the changed service\'s VIPs, and those a removed service had', async () => {
    const { balancers, tables } = fakeBalancers();
    const seen: LbPatch[] = [];
    const spy = { sync: balancers.sync, patch: async (w: Map<string, LbPatch>) => { seen.push(...w.values()); return balancers.patch(w); } } as unknown as ServiceBalancers;
    const eps = [{ Network: 'net1', EndpointID: 'e1', ContainerID: 'c1', IP: '10.1.1.1', Aliases: ['tasks.web0'] }] as EndpointRecord[];
    const net = new ServiceNet(() => eps, () => [sandboxes[0]!], spy, () => undefined);
    const svc = (k: number) => ({ type: 'put' as const, key: `${ROOT}services/s${k}`, modRevision: 1, value: { ID: `s${k}`, Spec: { Name: `web${k}`, Mode: { Replicated: { Replicas: 1 } }, TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'net1' }] } }, Endpoint: { Spec: { Mode: 'vip' }, VirtualIPs: [{ NetworkID: 'net1', Addr: `10.1.0.${100 + k}/24` }] } } });
    await net.follow(Array.from({ length: 50 }, (_, k) => svc(k)), true);
    await net.follow([{ type: 'put', key: `${ROOT}tasks/t1`, modRevision: 2, value: { ID: 't1', ServiceID: 's0', DesiredState: 'running', ServiceAnnotations: { Name: 'web0' }, Spec: { Networks: [{ Target: 'net1' }] }, Status: { State: 'running', ContainerStatus: { ContainerID: 'c1' } } } }], false);
    assert.deepEqual(seen.map((p) => [p.entries, p.removed]), [[[{ service: 's0', vip: '10.1.0.100', backends: ['10.1.1.1'] }], []]]);
    await net.follow([{ type: 'delete', key: `${ROOT}services/s7`, modRevision: 3 }], false);
    assert.deepEqual(seen.slice(1).map((p) => [p.entries, p.removed]), [[[], ['10.1.0.107']]]);
    assert.equal(tables.get('l1')!.size, 49);
    assert.deepEqual(tables.get('l1')!.get('10.1.0.100')!.backends, ['10.1.1.1']);
  });

  it('a batch while a local sandbox is on a network not indexed yet (it came since the last whole sync) syncs every sandbox whole', async () => {
    const { balancers, calls } = fakeBalancers();
    const boxes = [sandboxes[0]!];
    const net = new ServiceNet(() => [], () => boxes, balancers, () => undefined);
    await net.follow([], true);
    // A sandbox that came on net2 before its own sync: which backends net2's endpoint was is not known.
    boxes.push({ id: 'l3', netns: '/run/netns/l3', networks: ['net2'] });
    await net.follow([{ type: 'delete', key: `${ROOT}endpoints/net2/e9`, modRevision: 2 }], false);
    assert.deepEqual(calls, ['sync', 'sync']);
    // net2 now indexed: the same event is a patch (of nothing: no service has a VIP there).
    await net.follow([{ type: 'delete', key: `${ROOT}endpoints/net2/e9`, modRevision: 3 }], false);
    assert.deepEqual(calls, ['sync', 'sync', 'patch']);
  });
});
