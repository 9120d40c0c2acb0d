import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assignPorts, checkConflicts, normalisePorts, type PortConfig } from '../../src/cluster/publish.js';
import { normaliseSpec } from '../../src/cluster/servicemodel.js';
import { IngressMesh, type IngressHost } from '../../src/cluster/ingress.js';
import type { EndpointRecord } from '../../src/network/overlay.js';
import type { NetworkRecord } from '../../src/network/types.js';

/** Polls until `fn` holds (the mesh makes its sandbox in the background). */
async function waitFor(fn: () => Promise<boolean>, what: string): Promise<void> {
  for (const end = Date.now() + 5000; Date.now() < end; await new Promise((r) => setTimeout(r, 10))) if (await fn()) return;
  throw new Error(`timed out waiting for ${what}`);
}
import { ingressChanges, meshTable, parseHitComment, portChanges, portKey, replaceScript, SANDBOX_PORTS, sandboxTable } from '../../src/network/ingressmesh.js';

const port = (p: Partial<PortConfig>): PortConfig => ({ Protocol: 'tcp', TargetPort: 80, PublishedPort: 0, PublishMode: 'ingress', ...p });

describe('published service ports', () => {
  it('fills Docker\'s defaults and refuses what swarmkit refuses', () => {
    assert.deepEqual(normalisePorts([{ TargetPort: 80 }], 'vip'), [port({})]);
    assert.deepEqual(normalisePorts([{ TargetPort: 53, PublishedPort: 5353, Protocol: 'udp', PublishMode: 'host' }], 'dnsrr'), [port({ TargetPort: 53, PublishedPort: 5353, Protocol: 'udp', PublishMode: 'host' })]);
    assert.throws(() => normalisePorts([{ TargetPort: 80, PublishedPort: 8080 }, { TargetPort: 81, PublishedPort: 8080 }], 'vip'), /duplicate published ports provided/);
    assert.throws(() => normalisePorts([{ TargetPort: 0 }], 'vip'), /invalid target port 0/);
    assert.throws(() => normalisePorts([{ TargetPort: 80, PublishedPort: 70000 }], 'vip'), /invalid published port 70000/);
    assert.throws(() => normalisePorts([{ TargetPort: 80, Protocol: 'icmp' }], 'vip'), /invalid protocol icmp/);
    assert.throws(() => normalisePorts([{ TargetPort: 80 }], 'dnsrr'), /ingress mode can't be used with dnsrr mode/);
    // The same number over tcp and udp is two ports.
    assert.equal(normalisePorts([{ TargetPort: 53, PublishedPort: 53 }, { TargetPort: 53, PublishedPort: 53, Protocol: 'udp' }], 'vip').length, 2);
  });

  it('keeps a left-out published port out of the spec, as Docker does', () => {
    const s = normaliseSpec({ Name: 'w', TaskTemplate: { ContainerSpec: { Image: 'b' } }, EndpointSpec: { Ports: [{ TargetPort: 80 }, { TargetPort: 81, PublishedPort: 8081 }] } });
    assert.deepEqual(s.EndpointSpec?.Ports, [{ Protocol: 'tcp', TargetPort: 80, PublishMode: 'ingress' }, port({ TargetPort: 81, PublishedPort: 8081 })]);
  });

  it('assigns the lowest free port of 30000-32767, per protocol, and keeps a service\'s own numbers', () => {
    const taken = new Set(['tcp/30000', 'tcp/30002']);
    assert.deepEqual(assignPorts([port({}), port({ TargetPort: 81 }), port({ Protocol: 'udp' })], taken).map((p) => `${p.Protocol}/${p.PublishedPort}`), ['tcp/30001', 'tcp/30003', 'udp/30000']);
    // A given port counts as taken for the others of the same spec.
    assert.deepEqual(assignPorts([port({}), port({ PublishedPort: 30000, TargetPort: 90 })], new Set()).map((p) => p.PublishedPort), [30001, 30000]);
    // An update keeps the number the port had.
    assert.equal(assignPorts([port({ TargetPort: 80 })], new Set(), [port({ TargetPort: 80, PublishedPort: 31000 })])[0]!.PublishedPort, 31000);
    const all = new Set(Array.from({ length: 2768 }, (_, i) => `tcp/${30000 + i}`));
    assert.throws(() => assignPorts([port({})], all), /exhausted/);
  });

  it('finds conflicts as swarmkit\'s checkPortConflicts, with its words', () => {
    const web = { ID: 'abc', Name: 'web', Ports: [port({ PublishedPort: 8080 })] };
    const hostly = { ID: 'def', Name: 'hostly', Ports: [port({ PublishedPort: 9090, PublishMode: 'host' })] };
    assert.throws(() => checkConflicts([port({ PublishedPort: 8080 })], [web]), { status: 400, message: "rpc error: code = InvalidArgument desc = port '8080' is already in use by service 'web' (abc) as an ingress port" });
    assert.throws(() => checkConflicts([port({ PublishedPort: 8080, PublishMode: 'host' })], [web]), /port '8080' is already in use by service 'web' \(abc\) as a host-published port/);
    assert.throws(() => checkConflicts([port({ PublishedPort: 9090 })], [hostly]), /port '9090' is already in use by service 'hostly' \(def\) as an ingress port/);
    // Host ports of several services may share a number; another protocol is another port.
    checkConflicts([port({ PublishedPort: 9090, PublishMode: 'host' })], [hostly]);
    checkConflicts([port({ PublishedPort: 8080, Protocol: 'udp' })], [web]);
  });
});

describe('the routing mesh\'s nft text', () => {
  const web = { service: 'svc0123456789abcdef', proto: 'tcp' as const, published: 8080, target: 80 };
  const C = 's_svc012345678_tcp_8080';

  it('the host DNATs ingress ports to its sandbox and host ports to its own tasks', () => {
    const t = meshTable('10.0.0.2', [{ proto: 'udp', port: 5353 }, { proto: 'tcp', port: 8080 }], [{ ...web, published: 9090, backends: ['172.18.0.3', '172.18.0.2'] }]);
    assert.match(t, /^table ip berth_mesh \{$/m);
    assert.match(t, /elements = \{ tcp \. 8080 : 10\.0\.0\.2 \. 8080, udp \. 5353 : 10\.0\.0\.2 \. 5353 \}/);
    assert.match(t, /elements = \{ tcp \. 9090 : goto hp_svc012345678_tcp_9090 \}/);
    assert.match(t, /chain hp_svc012345678_tcp_9090 \{\n {4}numgen inc mod 2 0 goto hp_svc012345678_tcp_9090_172_18_0_2\n {4}goto hp_svc012345678_tcp_9090_172_18_0_3\n {2}\}/);
    assert.match(t, /chain hp_svc012345678_tcp_9090_172_18_0_3 \{\n {4}meta l4proto tcp counter dnat ip to 172\.18\.0\.3:80 comment "hits svc0123456789abcdef 172\.18\.0\.3"\n/);
    assert.deepEqual(parseHitComment('hits svc0123456789abcdef 172.18.0.3'), { service: 'svc0123456789abcdef', backend: '172.18.0.3' });
    assert.equal(parseHitComment('isolation'), undefined);
    assert.match(t, /type nat hook prerouting priority -110;[^}]*fib daddr type local dnat ip to meta l4proto \. th dport map @ingress/);
    assert.match(t, /type nat hook output priority -110;/);
    // A host port with no local task is left to the kernel (refused); no sandbox yet: no ingress port is DNATed.
    assert.doesNotMatch(meshTable('10.0.0.2', [], [{ ...web, backends: [] }]), /elements|chain hp_/);
    assert.doesNotMatch(meshTable(undefined, [{ proto: 'tcp', port: 8080 }], []), /elements/);
  });

  it('the sandbox balances over running tasks with numgen and SNATs to its own address', () => {
    const t = sandboxTable('10.0.0.2', [{ ...web, backends: ['10.0.0.9', '10.0.0.7'] }, { ...web, service: 'empty', published: 8081, backends: [] }]);
    assert.match(t, new RegExp(`elements = \\{ tcp \\. 8080 : goto ${C} \\}`));
    assert.doesNotMatch(t, /8081/, 'a port with no running task is refused by the sandbox itself');
    assert.match(t, /ip daddr 10\.0\.0\.2 meta l4proto \. th dport vmap @ports/);
    assert.match(t, /ct status dnat snat to 10\.0\.0\.2/);
    assert.match(t, new RegExp(`chain ${C} \\{\\n {4}numgen inc mod 2 0 goto ${C}_10_0_0_7\\n {4}goto ${C}_10_0_0_9\\n {2}\\}`));
    // Three backends: one of three to the first, one of the two left to the second, the rest to the third.
    assert.match(sandboxTable('10.0.0.2', [{ ...web, backends: ['10.0.0.9', '10.0.0.7', '10.0.0.8'] }]),
      new RegExp(`chain ${C} \\{\\n {4}numgen inc mod 3 0 goto ${C}_10_0_0_7\\n {4}numgen inc mod 2 0 goto ${C}_10_0_0_8\\n {4}goto ${C}_10_0_0_9\\n {2}\\}`));
    // Backends in a stable order, so an unchanged set is an unchanged text.
    assert.equal(t, sandboxTable('10.0.0.2', [{ ...web, backends: ['10.0.0.7', '10.0.0.9'] }]));
    assert.match(sandboxTable('10.0.0.2', [{ ...web, backends: ['10.0.0.7'] }]), new RegExp(`chain ${C} \\{\\n {4}goto ${C}_10_0_0_7\\n`));
  });

  it('a change is only what differs: an element, a dispatch rule, the chains of backends that came or went', () => {
    const m = (...ps: Array<typeof web & { backends: string[] }>) => new Map(ps.map((p) => [portKey(p), p]));
    const two = m({ ...web, backends: ['10.0.0.7', '10.0.0.9'] });
    assert.deepEqual(portChanges(SANDBOX_PORTS, two, two), []);
    assert.deepEqual(portChanges(SANDBOX_PORTS, new Map(), two), [
      `add chain ip berth_ingress ${C}`,
      `add chain ip berth_ingress ${C}_10_0_0_7`, `add rule ip berth_ingress ${C}_10_0_0_7 meta l4proto tcp counter dnat ip to 10.0.0.7:80 comment "hits svc0123456789abcdef 10.0.0.7"`,
      `add chain ip berth_ingress ${C}_10_0_0_9`, `add rule ip berth_ingress ${C}_10_0_0_9 meta l4proto tcp counter dnat ip to 10.0.0.9:80 comment "hits svc0123456789abcdef 10.0.0.9"`,
      `add rule ip berth_ingress ${C} numgen inc mod 2 0 goto ${C}_10_0_0_7`, `add rule ip berth_ingress ${C} goto ${C}_10_0_0_9`,
      `add element ip berth_ingress ports { tcp . 8080 : goto ${C} }`,
    ]);
    // One backend replaced by another: its chain comes, the dispatch rule is replaced, the old chain goes.
    assert.deepEqual(portChanges(SANDBOX_PORTS, two, m({ ...web, backends: ['10.0.0.7', '10.0.0.8'] })), [
      `add chain ip berth_ingress ${C}_10_0_0_8`, `add rule ip berth_ingress ${C}_10_0_0_8 meta l4proto tcp counter dnat ip to 10.0.0.8:80 comment "hits svc0123456789abcdef 10.0.0.8"`,
      `flush chain ip berth_ingress ${C}`, `add rule ip berth_ingress ${C} numgen inc mod 2 0 goto ${C}_10_0_0_7`, `add rule ip berth_ingress ${C} goto ${C}_10_0_0_8`,
      `flush chain ip berth_ingress ${C}_10_0_0_9`, `delete chain ip berth_ingress ${C}_10_0_0_9`,
    ]);
    // The last backend gone: the element first, then the chains.
    assert.deepEqual(portChanges(SANDBOX_PORTS, two, m({ ...web, backends: [] })), [
      'delete element ip berth_ingress ports { tcp . 8080 }',
      `flush chain ip berth_ingress ${C}`, `delete chain ip berth_ingress ${C}`,
      `flush chain ip berth_ingress ${C}_10_0_0_7`, `delete chain ip berth_ingress ${C}_10_0_0_7`,
      `flush chain ip berth_ingress ${C}_10_0_0_9`, `delete chain ip berth_ingress ${C}_10_0_0_9`,
    ]);
    // Another service unaffected: nothing of it is touched.
    const other = { ...web, service: 'other0000000000', published: 9000, backends: ['10.0.0.5'] };
    assert.ok(portChanges(SANDBOX_PORTS, m(other, { ...web, backends: ['10.0.0.7'] }), m(other, { ...web, backends: ['10.0.0.7', '10.0.0.9'] })).every((c) => !c.includes('9000') && !c.includes('other')));
    assert.deepEqual(ingressChanges('10.0.0.2', new Set(['tcp . 8080']), new Set(['udp . 53'])), [
      'delete element ip berth_mesh ingress { tcp . 8080 }', 'add element ip berth_mesh ingress { udp . 53 : 10.0.0.2 . 53 }',
    ]);
  });

  it('replaces or removes a table in one idempotent transaction', () => {
    assert.equal(replaceScript('berth_mesh', ''), 'table ip berth_mesh\ndelete table ip berth_mesh\n');
    assert.ok(replaceScript('berth_mesh', 'table ip berth_mesh {\n}\n').endsWith('table ip berth_mesh {\n}\n'));
  });
});

describe('the mesh follows the store', () => {
  const ROOT = '/berth/v1/';
  const put = (key: string, value: unknown, rev = 1) => ({ type: 'put' as const, key: `${ROOT}${key}`, value, modRevision: rev });
  const ingressNet = { Id: 'ing', Name: 'ingress', Ingress: true, Scope: 'swarm' } as unknown as NetworkRecord;
  const task = (id: string, node: string, container: string, state: string, desired = 'running') => put(`tasks/${id}`, {
    ID: id, ServiceID: 'svc1', NodeID: node, DesiredState: desired, Status: { State: state, ContainerStatus: { ContainerID: container } },
  });
  const service = (ports: unknown[]) => put('services/svc1', { ID: 'svc1', Spec: { Name: 'web' }, Endpoint: { Ports: ports } });

  async function mesh() {
    const scripts: Array<{ netns?: string; script: string }> = [];
    const host: IngressHost = {
      network: (id) => (id === 'ing' ? ingressNet : undefined),
      ensureSandbox: async () => ({ netns: '/ns/sbox', ip: '10.0.0.2' }),
      removeSandbox: async () => undefined,
      endpointsOf: () => [
        { ContainerID: 'cA', IP: '10.0.0.5' }, { ContainerID: 'cB', IP: '10.0.0.6' }, { ContainerID: 'cX', IP: '10.0.0.9' },
      ] as EndpointRecord[],
      localAddr: (c) => ({ cA: '172.18.0.5' } as Record<string, string>)[c],
      attached: () => true,
      attach: async () => undefined,
      nft: async (script, netns) => { scripts.push({ ...(netns ? { netns } : {}), script }); },
      counters: async () => [],
    };
    const m = new IngressMesh(() => 'me', host, () => undefined);
    return { m, scripts };
  }

  it('balances over running, desired-running tasks only, and drops one the moment it is told to stop', async () => {
    const { m, scripts } = await mesh();
    await m.follow([put('networks/ing', ingressNet), service([{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress' }]),
      task('t1', 'me', 'cA', 'running'), task('t2', 'other', 'cB', 'running'), task('t3', 'other', 'cX', 'starting')], true);
    // The sandbox is made in the background; the next pass balances in it.
    await waitFor(async () => scripts.some((s) => s.netns === '/ns/sbox'), 'the sandbox table');
    const sbox = scripts.filter((s) => s.netns === '/ns/sbox').map((s) => s.script).join('\n');
    assert.match(sbox, /numgen inc mod 2 0 goto \S+_10_0_0_5\n.*goto \S+_10_0_0_6\n/);
    assert.doesNotMatch(sbox, /10\.0\.0\.9/, 'a task not running yet is no backend');
    assert.match(scripts.filter((s) => !s.netns).map((s) => s.script).join('\n'), /tcp \. 8080 : 10\.0\.0\.2 \. 8080/);
    scripts.length = 0;
    await m.follow([task('t2', 'other', 'cB', 'running', 'shutdown')], false);
    assert.deepEqual(scripts.map((s) => s.netns), ['/ns/sbox'], 'one change, in the sandbox, before follow returns');
    assert.match(scripts[0]!.script, /delete chain ip berth_ingress \S+_10_0_0_6/);
    assert.doesNotMatch(scripts[0]!.script, /table ip/, 'a difference, not the table made again');
    await m.close();
  });

  it('host-mode ports lead to this node\'s own running tasks only', async () => {
    const { m, scripts } = await mesh();
    await m.follow([service([{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 9090, PublishMode: 'host' }]), task('t1', 'me', 'cA', 'running'), task('t2', 'other', 'cB', 'running')], true);
    const host = scripts.filter((s) => !s.netns).map((s) => s.script).join('\n');
    assert.match(host, /tcp \. 9090 : goto hp_svc1_tcp_9090/);
    assert.match(host, /dnat ip to 172\.18\.0\.5:80/);
    assert.doesNotMatch(host, /10\.0\.0\.6/);
    await m.close();
  });
});
