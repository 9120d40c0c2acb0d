import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assignPorts, checkConflicts, normalisePorts, type PortConfig } from '../../src/cluster/publish.js';
import { normaliseSpec } from '../../src/cluster/servicemodel.js';
import { IngressMesh, type IngressHost } from '../../src/cluster/ingress.js';
import type { EndpointRecord } from '../../src/network/overlay.js';
import type { NetworkRecord } from '../../src/network/types.js';

/** Polls until `fn` holds (the mesh makes its endpoint in the background). */
async function waitFor(fn: () => Promise<boolean>, what: string): Promise<void> {
  for (const end = Date.now() + 5000; Date.now() < end; await new Promise((r) => setTimeout(r, 10))) if (await fn()) return;
  throw new Error(`timed out waiting for ${what}`);
}
import { replaceScript } from '../../src/network/ingressmesh.js';
import { elementHex, meshKind } from '../../src/network/lbkinds.js';
import { elementArgs } from '../../src/network/lbbatch.js';
import { arrange, lbScript, lbTable, parseCounters, type VipEntry } from '../../src/network/lbtable.js';
import type { ServiceBalancers } from '../../src/network/servicelb.js';

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
    // A host-mode port with no number is none of the cluster's: each task's node binds any free
    // port (swarmkit leaves it as given), and Docker's JSON leaves the zero out.
    assert.deepEqual(assignPorts([port({ PublishMode: 'host' }), port({ PublishMode: 'host', TargetPort: 81, PublishedPort: 8081 })], all),
      [{ Protocol: 'tcp', TargetPort: 80, PublishMode: 'host' }, port({ PublishMode: 'host', TargetPort: 81, PublishedPort: 8081 })]);
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

  it('the host balances its ports with the slot tables of a VIP, keyed by protocol and port, and SNATs only what it balanced to its ingress address', () => {
    const kind = meshKind('10.0.0.2');
    const C = 'port_b142';
    const entries = arrange(undefined, [{ service: web.service, vip: 'tcp . 8080', backends: ['10.0.0.9 . 80', '10.0.0.7 . 80'] }]);
    const t = lbTable(entries, kind);
    assert.match(t, /^table ip berth_mesh \{$/m);
    assert.match(t, new RegExp(`map ports \\{\\n {4}type inet_proto \\. inet_service : verdict\\n {4}elements = \\{ tcp \\. 8080 : goto ${C} \\}`));
    assert.match(t, /map slot0 \{\n {4}type inet_proto \. inet_service : ipv4_addr \. inet_service\n {4}counter\n {4}elements = \{ tcp \. 8080 : 10\.0\.0\.7 \. 80 \}/);
    assert.match(t, /map slot1 \{[^}]*elements = \{ tcp \. 8080 : 10\.0\.0\.9 \. 80 \}/);
    assert.match(t, /chain to0 \{\n {4}ct mark set ct mark \| 0x00100000 dnat ip to meta l4proto \. th dport map @slot0\n/);
    assert.match(t, new RegExp(`chain ${C} \\{\\n {4}tcp dport 8080 numgen inc mod 2 vmap @rr2\\n`));
    // Any local address, before berth's own port maps (-100), in from outside and from the host itself.
    assert.match(t, /type nat hook prerouting priority -110;[^}]*\n {4}fib daddr type local meta l4proto \. th dport vmap @ports\n/);
    assert.match(t, /type nat hook output priority -110;[^}]*\n {4}fib daddr type local meta l4proto \. th dport vmap @ports\n/);
    // Before berth's masquerade (100), and only the connections a slot marked.
    assert.match(t, /type nat hook postrouting priority 90;[^}]*\n {4}ct mark & 0x00100000 == 0x00100000 ct status dnat snat ip to 10\.0\.0\.2\n/);
    assert.doesNotMatch(t, /empty|reject/, 'a port with no running task has no element: the kernel refuses it');
    // One backend replaced: two elements, which berth-nftset writes (keys and data as the kernel stores them).
    const after = arrange(entries, [{ service: web.service, vip: 'tcp . 8080', backends: ['10.0.0.7 . 80', '10.0.0.8 . 80'] }]);
    const script = lbScript(entries, after, undefined, kind);
    assert.deepEqual(script.trim().split('\n'), [
      'delete element ip berth_mesh slot1 { tcp . 8080 }',
      'add element ip berth_mesh slot1 { tcp . 8080 : 10.0.0.8 . 80 }',
    ]);
    assert.deepEqual(elementArgs(script, kind), ['berth_mesh', '-slot1/060000001f900000', '+slot1/060000001f900000:0a00000800500000']);
    // A third backend: the port's rule goes to rr3, still no `nft` once the table has the slots.
    const three = arrange(after, [{ service: web.service, vip: 'tcp . 8080', backends: ['10.0.0.7 . 80', '10.0.0.8 . 80', '10.0.0.6 . 80'] }]);
    assert.deepEqual(elementArgs(lbScript(after, three, 3, kind), kind)?.slice(-2), [`=${C}`, `>${C}/060000001f900000/3`]);
    // The last backend gone: the port leaves the table, its element before its bucket's chain.
    const gone = lbScript(after, arrange(after, [{ service: 'other', vip: 'udp . 53', backends: ['10.0.0.5 . 53'] }]), undefined, kind).trim().split('\n');
    const elementGone = gone.indexOf('delete element ip berth_mesh ports { tcp . 8080 }');
    assert.ok(elementGone >= 0 && elementGone < gone.indexOf(`delete chain ip berth_mesh ${C}`), gone.join('\n'));
    // The new port's bucket chain before the element that goes to it.
    assert.ok(gone.indexOf('add chain ip berth_mesh port_b66') < gone.indexOf('add element ip berth_mesh ports { udp . 53 : goto port_b66 }'));
    // A port that comes or goes is berthd's own batch too: its dispatch element, its bucket's chain and rules, its slots.
    const args = elementArgs(gone.join('\n'), kind) ?? [];
    assert.ok(args.includes('*port_b66') && args.includes('+ports/1100000000350000:@port_b66') && args.includes('>port_b66/1100000000350000/1'), JSON.stringify(args));
    assert.ok(args.includes('-ports/060000001f900000') && args.includes(`!${C}`), JSON.stringify(args));
    assert.ok(gone.includes('add element ip berth_mesh ports { udp . 53 : goto port_b66 }'));
    assert.ok(gone.includes('add rule ip berth_mesh port_b66 udp dport 53 goto to0'));
    assert.equal(elementHex('udp . 53'), '1100000000350000');
    // The kernel lists a concatenation as its parts.
    const json = JSON.stringify({ nftables: [{ map: { name: 'slot0', elem: [[{ elem: { val: { concat: ['tcp', 8080] }, counter: { packets: 7 } } }, { concat: ['10.0.0.7', 80] }]] } }] });
    assert.deepEqual([...parseCounters(json, entries)], [[`${web.service} tcp . 8080 0 10.0.0.7 . 80`, 7]]);
    // UDP flows go with a backend of a UDP port only.
    assert.equal(kind.udpTarget('udp . 53', '10.0.0.5 . 53'), '10.0.0.5');
    assert.equal(kind.udpTarget('tcp . 80', '10.0.0.5 . 80'), undefined);
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

  async function mesh(over: Partial<IngressHost> = {}) {
    const scripts: Array<{ netns?: string; script: string }> = [];
    // The host's balancer as the mesh hands it ports: what each sync asked for, by the address it SNATs to.
    const synced: Array<{ ip: string; netns: string; entries: VipEntry[] }> = [];
    const host: IngressHost = {
      balancer: (ip) => ({
        sync: async (want) => { for (const w of want.values()) synced.push({ ip, netns: w.netns, entries: w.entries }); },
        hits: async () => [],
      } as Pick<ServiceBalancers, 'sync' | 'hits'>),
      network: (id) => (id === 'ing' ? ingressNet : undefined),
      ensureEndpoint: async () => ({ ip: '10.0.0.2' }),
      removeEndpoint: async () => undefined,
      endpointsOf: () => [
        { ContainerID: 'cA', IP: '10.0.0.5' }, { ContainerID: 'cB', IP: '10.0.0.6' }, { ContainerID: 'cX', IP: '10.0.0.9' },
      ] as EndpointRecord[],
      attached: () => true,
      attach: async () => undefined,
      nft: async (script) => { scripts.push({ script }); },
      ...over,
    };
    const m = new IngressMesh(() => 'me', host, () => undefined);
    return { m, scripts, synced };
  }

  it('balances over running, desired-running tasks only, and drops one the moment it is told to stop', async () => {
    const { m, scripts, synced } = await mesh();
    await m.follow([put('networks/ing', ingressNet), service([{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress' }]),
      task('t1', 'me', 'cA', 'running'), task('t2', 'other', 'cB', 'running'), task('t3', 'other', 'cX', 'starting')], true);
    // The endpoint is made in the background; the next pass balances, in berthd's own namespace.
    await waitFor(async () => synced.some((s) => s.entries.length), 'the host balancer');
    const first = synced.find((s) => s.entries.length)!;
    assert.deepEqual([first.ip, first.netns], ['10.0.0.2', '']);
    assert.deepEqual(first.entries, [{ service: 'svc1', vip: 'tcp . 8080', backends: ['10.0.0.5 . 80', '10.0.0.6 . 80'] }], 'a task not running yet is no backend');
    // The first pass, before the endpoint was there, left the table a killed berthd left to balance
    // meanwhile; the balancer's first sync replaces it whole, and an older berth's table goes, once.
    assert.deepEqual(scripts.map((s) => s.script), [replaceScript('berth_hostports', '')]);
    scripts.length = 0;
    synced.length = 0;
    await m.follow([task('t2', 'other', 'cB', 'running', 'shutdown')], false);
    assert.deepEqual(synced.map((s) => s.entries), [[{ service: 'svc1', vip: 'tcp . 8080', backends: ['10.0.0.5 . 80'] }]], 'the balancer told before follow returns');
    assert.deepEqual(scripts, [], 'nothing but the balancer changes with a backend');
    // The last task stopping: the port leaves the balancer (refused).
    await m.follow([task('t1', 'me', 'cA', 'running', 'shutdown')], false);
    assert.deepEqual(synced.at(-1)!.entries, []);
    await m.close();
  });

  it('after a restart the table a killed berthd left balances until the host\'s endpoint is back; with no ingress network it goes at once', async () => {
    let giveEndpoint = (_: { ip: string }) => undefined as void;
    const { m, scripts, synced } = await mesh({ ensureEndpoint: () => new Promise((r) => { giveEndpoint = r; }) });
    await m.follow([put('networks/ing', ingressNet), service([{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress' }]), task('t1', 'me', 'cA', 'running')], true);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(scripts.length, 0, 'nothing removed while the endpoint is being taken up');
    giveEndpoint({ ip: '10.0.0.2' });
    await waitFor(async () => synced.some((s) => s.entries.length), 'the host balancer');
    assert.deepEqual(scripts.map((s) => s.script), [replaceScript('berth_hostports', '')]);
    await m.close();

    const none = await mesh();
    await none.m.follow([service([{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress' }])], true);
    assert.deepEqual(none.scripts.map((s) => s.script), [replaceScript('berth_mesh', '') + replaceScript('berth_hostports', '')]);
    await none.m.close();
  });

  it('host-mode ports are not the mesh\'s (each task\'s container publishes its own); the table an older berth made for them goes', async () => {
    const { m, scripts, synced } = await mesh();
    await m.follow([put('networks/ing', ingressNet), service([{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 9090, PublishMode: 'host' }]), task('t1', 'me', 'cA', 'running')], true);
    assert.match(scripts[0]!.script, /delete table ip berth_hostports\n$/, 'one a killed older berthd left goes with the first pass');
    assert.doesNotMatch(scripts.map((s) => s.script).join('\n'), /9090/);
    assert.equal(m.needsIngress('svc1'), false, 'its tasks need no ingress endpoint');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(synced.flatMap((s) => s.entries), []);
    // Leaving the swarm takes the mesh's table and the old one.
    await m.leave();
    assert.match(scripts.at(-1)!.script, /delete table ip berth_mesh\n[^]*delete table ip berth_hostports\n/);
    await m.close();
  });

  it('another ingress network is another address and another table: the old table goes before the new one is made', async () => {
    const net2 = { ...ingressNet, Id: 'ing2' } as NetworkRecord;
    let made = 0;
    const removed: number[] = [];
    const { m, scripts, synced } = await mesh({
      network: (id) => (id === 'ing' ? ingressNet : id === 'ing2' ? net2 : undefined),
      ensureEndpoint: async () => ({ ip: `10.0.0.${2 + made++}` }),
      removeEndpoint: async () => { removed.push(made); },
    });
    await m.follow([put('networks/ing', ingressNet), service([{ Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress' }]), task('t1', 'me', 'cA', 'running')], true);
    await waitFor(async () => synced.some((s) => s.ip === '10.0.0.2' && s.entries.length), 'the first balancer');
    scripts.length = 0;
    await m.follow([{ type: 'delete', key: `${ROOT}networks/ing`, modRevision: 2 } as never, put('networks/ing2', net2, 3)], false);
    await waitFor(async () => synced.some((s) => s.ip === '10.0.0.3' && s.entries.length), 'the second balancer');
    assert.deepEqual(removed, [1], 'the first endpoint went before the second was made');
    assert.deepEqual(scripts.map((s) => s.script), [replaceScript('berth_mesh', '')], 'the table that SNATed to the old address went first');
    await m.close();
  });
});
