import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePolicyLabels } from '../../src/network/policy/labels.js';
import { traceTableScript } from '../../src/kernel/nfttrace.js';
import { agreement, parseTarget, parseTraceLine, plan, policyDecides, resolveFrom, type ProbeResult, type Snapshot, type TraceContainer, type TracePolicy } from '../../src/trace/model.js';

/** A host with two user networks, an internal one and the default bridge, as the tests' snapshots. */
function snapshot(): Snapshot {
  const net = (id: string, name: string, subnet: string, extra: Record<string, unknown> = {}) => ({
    id, name, driver: 'bridge', internal: false, isDefault: false, bridge: `br-${id}`, subnets: [subnet], gateways: [subnet.replace(/0\/24$/, '1')], ...extra,
  });
  const ct = (name: string, eps: Array<[string, string]>, extra: Partial<TraceContainer> = {}): TraceContainer => ({
    id: `${name}${'0'.repeat(64 - name.length)}`, name, running: true, netnsPath: `/root/netns/${name}`, labels: {}, published: [], links: [], extraHosts: [],
    endpoints: eps.map(([networkId, ip], i) => ({ networkId, endpointId: `ep-${name}-${networkId}`, ip, ifname: `eth${i}`, aliases: [] })), ...extra,
  });
  const dbPolicy = parsePolicyLabels({ 'berth.policy.ingress.web': 'labels:app=web ports:5432' });
  const policies: TracePolicy[] = [{ endpointId: 'ep-db-a', isolatedBy: { ingress: ['berth.policy.ingress.web'], egress: [] }, rules: dbPolicy.rules.map((r) => ({ ...r, source: 'container' as const })) }];
  return {
    networks: [
      net('a', 'front', '10.1.1.0/24'), net('b', 'back', '10.1.2.0/24'), net('i', 'sealed', '10.1.3.0/24', { internal: true }),
      net('d', 'bridge', '172.17.0.0/24', { isDefault: true }),
    ],
    containers: [
      ct('web', [['a', '10.1.1.2']], { labels: { app: 'web' } }),
      ct('db', [['a', '10.1.1.3']], { labels: { app: 'db' } }),
      ct('other', [['a', '10.1.1.4']], { labels: { app: 'other' } }),
      ct('api', [['b', '10.1.2.2']], { published: [{ proto: 'tcp', hostIp: '', hostPort: 8080, containerIp: '10.1.2.2', containerPort: 80 }, { proto: 'tcp', hostIp: '127.0.0.1', hostPort: 8081, containerIp: '10.1.2.2', containerPort: 81 }] }),
      ct('sealed1', [['i', '10.1.3.2']]),
      ct('d1', [['d', '172.17.0.2']]),
      ct('d2', [['d', '172.17.0.3']]),
      ct('gone', [['a', '10.1.1.9']], { running: false }),
    ],
    policies,
    remotes: [],
    hostAddresses: ['10.200.0.1', '10.1.1.1', '10.1.2.1', '10.1.3.1', '172.17.0.1'],
  };
}

const S = snapshot();
const C = (name: string) => S.containers.find((c) => c.name === name)!;

describe('trace targets', () => {
  it('parses B[:PORT[/PROTO]], ping without a port', () => {
    assert.deepEqual(parseTarget('db'), { host: 'db', proto: 'icmp' });
    assert.deepEqual(parseTarget('db:5432'), { host: 'db', port: 5432, proto: 'tcp' });
    assert.deepEqual(parseTarget('10.0.0.1:53/UDP'), { host: '10.0.0.1', port: 53, proto: 'udp' });
    assert.throws(() => parseTarget('db:0'), /invalid port/);
    assert.throws(() => parseTarget('db:80/sctp'), /invalid trace target/);
    assert.throws(() => parseTarget('fd00::1'), /invalid trace target/);
  });
});

describe('name resolution from the tracing container', () => {
  it('answers names on shared user networks, saying which network', () => {
    const d = resolveFrom(S, C('web'), 'DB');
    assert.equal(d.answer, 'berth');
    assert.deepEqual(d.networks, ['front']);
    assert.deepEqual(d.addresses, ['10.1.1.3']);
    assert.deepEqual(resolveFrom(S, C('web'), 'db.front').addresses, ['10.1.1.3']);
  });
  it('the default bridge has none; a name elsewhere is not answered; others are forwarded', () => {
    assert.match(resolveFrom(S, C('d1'), 'd2').note, /only on the default bridge, which has no name resolution/);
    assert.equal(resolveFrom(S, C('web'), 'api').answer, 'none');
    assert.equal(resolveFrom(S, C('web'), 'gone').answer, 'forwarded', 'a stopped container has no name');
    assert.equal(resolveFrom(S, C('web'), 'example.test').answer, 'forwarded');
  });
});

describe('names from /etc/hosts and other hosts', () => {
  it('--add-host and legacy links on the default bridge resolve before DNS', () => {
    const s = snapshot();
    const d1 = s.containers.find((c) => c.name === 'd1')!;
    d1.links = ['/d2:peer'];
    d1.extraHosts = ['db.example:10.9.9.9'];
    assert.deepEqual(resolveFrom(s, d1, 'peer'), { name: 'peer', answer: 'hosts', networks: [], addresses: ['172.17.0.3'], note: 'd1\'s /etc/hosts has it (legacy --link /d2:peer on the default bridge)' });
    assert.equal(resolveFrom(s, d1, 'db.example').addresses[0], '10.9.9.9');
    assert.equal(plan(s, d1, 'peer:80').verdict, 'reachable');
  });
  it('an overlay endpoint of another host: the VXLAN hop when A shares its network, isolation when not', () => {
    const s = snapshot();
    s.networks.push({ id: 'o', name: 'ov', driver: 'overlay', internal: false, isDefault: false, bridge: 'bov', vxlan: 'vx-o', subnets: ['10.0.9.0/24'], gateways: ['10.0.9.1'] });
    s.remotes.push({ networkId: 'o', name: 'far', aliases: [], ip: '10.0.9.7', host: 'lab2 (10.99.0.2)' });
    s.containers.push({ ...C('web'), id: 'near'.padEnd(64, '0'), name: 'near', endpoints: [{ networkId: 'o', endpointId: 'ep-near', ip: '10.0.9.3', ifname: 'eth0', aliases: [] }] });
    const near = s.containers.find((c) => c.name === 'near')!;
    const p = plan(s, near, 'far:80');
    assert.equal(p.dns?.answer, 'berth');
    assert.equal(p.verdict, 'reachable');
    assert.ok(p.hops.includes('VXLAN device vx-o: encapsulated to lab2 (10.99.0.2)'), p.hops.join('\n'));
    assert.equal(p.target.remoteHost, 'lab2 (10.99.0.2)');
    assert.equal(plan(s, C('web'), '10.0.9.7:80').reason?.code, 'isolated-networks');
  });
});

describe('policy decisions', () => {
  const pol = S.policies[0];
  it('names the label that allows, and the one that isolates when nothing does', () => {
    assert.deepEqual(policyDecides(pol, 'ingress', { ip: '10.1.1.2', labels: { app: 'web' }, network: 'front' }, 'tcp', 5432), { allowed: true, by: 'berth.policy.ingress.web', text: 'berth.policy.ingress.web allows it' });
    const no = policyDecides(pol, 'ingress', { ip: '10.1.1.2', labels: { app: 'web' }, network: 'front' }, 'tcp', 80);
    assert.equal(no.allowed, false);
    assert.match(no.text, /isolated for ingress by berth.policy.ingress.web, which allows only labels:app=web on 5432\/tcp/);
    assert.equal(policyDecides(pol, 'egress', { ip: '1.2.3.4', network: 'front' }, 'udp', 53).allowed, true);
    assert.equal(policyDecides(undefined, 'ingress', { ip: '1.2.3.4', network: 'front' }, 'icmp', undefined).allowed, true);
  });
});

describe('the model of a path', () => {
  it('same network by name: reachable, delivered in the target\'s namespace', () => {
    const p = plan(S, C('web'), 'db:5432');
    assert.equal(p.verdict, 'reachable');
    assert.deepEqual(p.expect, { outcome: 'delivered', at: 'container' });
    assert.equal(p.probe?.landsOn?.netnsPath, '/root/netns/db');
    assert.ok(p.hops.some((h) => h.includes('bridge br-a (network front)')));
  });
  it('every failure has its reason, fix and the evidence the probe must show', () => {
    const cases: Array<[string, string, string, Partial<ReturnType<typeof plan>['expect']>, RegExp]> = [
      ['d1', 'd2:80', 'default-bridge-no-dns', { outcome: 'not-resolved' }, /docker network create NET && docker network connect NET d1 && docker network connect NET d2/],
      ['web', 'api:80', 'name-not-on-shared-network', { outcome: 'not-resolved' }, /docker network connect back web/],
      ['web', '10.1.2.2:80', 'isolated-networks', { outcome: 'dropped', dropBy: 'isolation' }, /docker network connect back web/],
      ['sealed1', '10.200.0.2', 'internal', { outcome: 'no-route' }, /without --internal/],
      ['web', 'host:9999', 'not-published', { outcome: 'delivered', at: 'host' }, /-p 9999:PORT/],
      ['web', 'host:8081', 'published-loopback-only', { outcome: 'delivered', at: 'host' }, /-p 8081:81/],
      ['other', 'db:5432', 'policy-ingress', { outcome: 'dropped', dropBy: 'deny' }, /berth.policy.ingress.NAME=labels:KEY=VALUE ports:5432/],
      ['web', 'db:80', 'policy-ingress', { outcome: 'dropped', dropBy: 'deny' }, /ports:80/],
    ];
    for (const [from, to, code, expect, fix] of cases) {
      const p = plan(S, C(from), to);
      assert.equal(p.verdict, 'blocked', `${from} → ${to}`);
      assert.equal(p.reason?.code, code, `${from} → ${to}: ${p.reason?.message}`);
      assert.deepEqual(p.expect, expect, `${from} → ${to}`);
      assert.match(p.reason!.fix, fix, `${from} → ${to}`);
    }
  });
  it('a bridge with inter-container communication off isolates its own containers', () => {
    const s = snapshot();
    s.networks[0]!.iccOff = true;
    const p = plan(s, s.containers[0]!, 'db:5432');
    assert.equal(p.reason?.code, 'icc-disabled');
    assert.deepEqual(p.expect, { outcome: 'dropped' });
  });
  it('a published port: the DNAT element, then the container', () => {
    const p = plan(S, C('web'), 'host:8080');
    assert.equal(p.verdict, 'reachable');
    assert.equal(p.target.container, 'api');
    assert.ok(p.nft.includes('ip berth prerouting: fib daddr type local dnat via map @pub_any element tcp . 8080 : 10.1.2.2 . 80'), p.nft.join('\n'));
    assert.deepEqual(p.probe?.landsOn, { containerId: C('api').id, name: 'api', ip: '10.1.2.2', port: 80, netnsPath: '/root/netns/api' });
    // The same port on the host's other address goes the same way.
    assert.equal(plan(S, C('web'), '10.200.0.1:8080').target.container, 'api');
  });
  it('outside: masqueraded; a forwarded name follows what the upstream answered', () => {
    assert.deepEqual(plan(S, C('web'), '10.200.0.2').expect, { outcome: 'delivered', at: 'outside' });
    const p = plan(S, C('web'), 'example.test:443', ['10.200.0.99']);
    assert.equal(p.target.ip, '10.200.0.99');
    assert.equal(p.target.kind, 'outside');
  });
  it('refuses what it cannot trace from', () => {
    assert.throws(() => plan(S, C('gone'), 'db'), /not running/);
  });
});

describe('reading the trace', () => {
  it('parses packets, rules with their verdict and comment, and policies', () => {
    assert.deepEqual(parseTraceLine('host', 'trace id 1a ip berth n1_in rule oifname @bridges oifname != "br-a" counter packets 3 bytes 180 drop comment "isolation" (verdict drop)'), {
      netns: 'host', id: '1a', family: 'ip', table: 'berth', chain: 'n1_in', kind: 'rule', text: 'oifname @bridges oifname != "br-a" counter drop comment "isolation"', verdict: 'drop', comment: 'isolation',
    });
    assert.equal(parseTraceLine('h', 'trace id 1a inet berth-trace prerouting packet: iif "eth0" ip saddr 1.2.3.4')?.kind, 'packet');
    assert.equal(parseTraceLine('h', 'trace id 1a inet berth-trace out unknown rule handle 4 (verdict continue)')?.text, 'unknown rule handle 4');
    assert.equal(parseTraceLine('h', 'trace id 1a inet berth-trace out policy accept')?.verdict, 'accept');
    assert.equal(parseTraceLine('h', 'add table inet berth-trace'), undefined);
  });

  const result = (over: Partial<ProbeResult>): ProbeResult => ({ kind: 'tcp', result: 'timeout', output: '', arrived: false, hostInput: false, leftHost: false, lines: [], ...over });
  const drop = (comment: string) => ({ netns: 'host', id: '1', family: 'ip', table: 'berth', chain: 'c', kind: 'rule' as const, text: `drop comment "${comment}"`, verdict: 'drop', comment });

  it('agrees only with the evidence the model predicted', () => {
    const iso = plan(S, C('web'), '10.1.2.2:80');
    assert.equal(agreement(iso, result({ lines: [drop('isolation')] })).agrees, true);
    assert.match(agreement(iso, result({})).why!, /expected the rule "isolation" to drop it; the trace shows no drop/);
    assert.match(agreement(iso, result({ result: 'connected', arrived: true })).why!, /expected dropped, the probe got connected/);
    const ok = plan(S, C('web'), 'db:5432');
    assert.equal(agreement(ok, result({ result: 'connected', arrived: true })).agrees, true);
    assert.match(agreement(ok, result({ result: 'connected' })).why!, /never saw it there/);
    const udp = plan(S, C('web'), 'db:5432/udp');
    assert.equal(agreement({ ...udp, verdict: 'reachable', expect: { outcome: 'delivered', at: 'container' } }, result({ kind: 'udp', result: 'sent', arrived: true })).agrees, true);
    const lo = plan(S, C('web'), 'host:8081');
    assert.equal(agreement(lo, result({ result: 'refused', hostInput: true })).agrees, true);
    assert.match(agreement(lo, result({ result: 'refused', hostInput: true, arrived: true })).why!, /reached a container/);
  });

  it('the trace table only marks the probe\'s packets and replaces a leftover one', () => {
    const t = traceTableScript('ip daddr 10.1.1.3 meta l4proto tcp th dport 5432', ['prerouting'], ['input']);
    assert.match(t, /^table inet berth-trace\ndelete table inet berth-trace\ntable inet berth-trace \{/);
    assert.match(t, /chain prerouting \{\n {4}type filter hook prerouting priority -350; policy accept;\n {4}ip daddr 10\.1\.1\.3 meta l4proto tcp th dport 5432 meta nftrace set 1\n {2}\}/);
    assert.match(t, /chain input \{\n {4}type filter hook input priority -350; policy accept;\n {2}\}/);
    assert.doesNotMatch(t, /drop|flush ruleset/);
  });
});
