import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { labelsMeet, parsePolicyLabels } from '../../src/network/policy/labels.js';
import { addEndpointCommands, buildPolicyTable, chainRules, deleteEndpointCommands, selectorName, type PolicedEndpoint } from '../../src/network/policy/rules.js';

describe('policy labels', () => {
  it('parses the three-tier example', () => {
    const spec = parsePolicyLabels({ 'berth.policy.ingress.app': 'labels:tier=app ports:5432', tier: 'db', other: 'x' });
    assert.deepEqual(spec.isolate, []);
    assert.equal(spec.rules.length, 1);
    assert.deepEqual(spec.rules[0], {
      label: 'berth.policy.ingress.app', direction: 'ingress',
      peer: { kind: 'select', labels: [{ key: 'tier', op: 'eq', value: 'app' }] }, ports: [{ proto: 'tcp', from: 5432, to: 5432 }],
    });
  });

  it('parses every term', () => {
    const spec = parsePolicyLabels({
      'berth.policy.isolate': 'ingress,egress',
      'berth.policy.egress': 'cidr:10.0.0.0/8 except:10.1.0.0/16,10.2.3.0/24 ports:53/udp,8000-8100/tcp,icmp,sctp',
      'berth.policy.egress.web': 'labels:app=web,env!=prod,canary,!legacy network:front',
      'berth.policy.ingress.all': 'any ports:80',
      'berth.policy.ingress.v6': 'cidr:fd00::/8 except:fd00:1::/32',
    });
    assert.deepEqual(spec.isolate, ['ingress', 'egress']);
    const byLabel = Object.fromEntries(spec.rules.map((r) => [r.label, r]));
    assert.deepEqual(byLabel['berth.policy.egress']!.peer, { kind: 'cidr', family: 4, cidr: '10.0.0.0/8', except: ['10.1.0.0/16', '10.2.3.0/24'] });
    assert.deepEqual(byLabel['berth.policy.egress']!.ports, [{ proto: 'udp', from: 53, to: 53 }, { proto: 'tcp', from: 8000, to: 8100 }, { proto: 'icmp' }, { proto: 'sctp' }]);
    assert.deepEqual(byLabel['berth.policy.egress.web']!.peer, {
      kind: 'select', network: 'front',
      labels: [{ key: 'app', op: 'eq', value: 'web' }, { key: 'env', op: 'ne', value: 'prod' }, { key: 'canary', op: 'exists' }, { key: 'legacy', op: 'absent' }],
    });
    assert.deepEqual(byLabel['berth.policy.ingress.all']!.peer, { kind: 'any' });
    assert.deepEqual(byLabel['berth.policy.ingress.v6']!.peer, { kind: 'cidr', family: 6, cidr: 'fd00::/8', except: ['fd00:1::/32'] });
  });

  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ 'berth.policy.ingres': 'any' }, /unknown policy key/],
    [{ 'berth.policy.ingress': '' }, /empty rule/],
    [{ 'berth.policy.ingress': 'labels:' }, /at least one requirement/],
    [{ 'berth.policy.ingress': 'labels:a=b ports:5432x' }, /"5432x" is not a port/],
    [{ 'berth.policy.ingress': 'labels:a=b ports:0' }, /outside 1-65535/],
    [{ 'berth.policy.ingress': 'labels:a=b ports:70000' }, /outside 1-65535/],
    [{ 'berth.policy.ingress': 'labels:a=b ports:90-80' }, /ends before it starts/],
    [{ 'berth.policy.ingress': 'cidr:10.0.0.1/8' }, /host bits set/],
    [{ 'berth.policy.ingress': 'cidr:10.0.0.0/33' }, /is not a CIDR/],
    [{ 'berth.policy.ingress': 'cidr:10.0.0.0/8 except:11.0.0.0/16' }, /not inside/],
    [{ 'berth.policy.ingress': 'cidr:10.0.0.0/8 except:fd00::/16' }, /same family/],
    [{ 'berth.policy.ingress': 'except:10.0.0.0/8' }, /needs a cidr/],
    [{ 'berth.policy.ingress': 'any labels:a=b' }, /cannot be combined/],
    [{ 'berth.policy.ingress': 'cidr:10.0.0.0/8 labels:a=b' }, /cannot be combined/],
    [{ 'berth.policy.ingress': 'ports:80' }, /no peer/],
    [{ 'berth.policy.ingress': 'labels:a=b labels:c=d' }, /given twice/],
    [{ 'berth.policy.ingress': 'from:a=b' }, /unknown term/],
    [{ 'berth.policy.isolate': 'both' }, /is not ingress, egress/],
    [{ 'berth.policy.ingress.a b': 'any' }, /rule name/],
  ];
  for (const [labels, why] of bad) {
    it(`refuses ${JSON.stringify(labels)}`, () => {
      assert.throws(() => parsePolicyLabels(labels), (e: Error & { status?: number }) => {
        assert.match(e.message, why);
        assert.match(e.message, /^invalid label berth\.policy\./);
        assert.equal(e.status, 400);
        return true;
      });
    });
  }

  it('matches selectors as Kubernetes does', () => {
    const reqs = parsePolicyLabels({ 'berth.policy.ingress': 'labels:app=web,env!=prod,!legacy' }).rules[0]!.peer;
    assert.equal(reqs.kind, 'select');
    if (reqs.kind !== 'select') return;
    assert.equal(labelsMeet(reqs.labels, { app: 'web' }), true);
    assert.equal(labelsMeet(reqs.labels, { app: 'web', env: 'dev' }), true);
    assert.equal(labelsMeet(reqs.labels, { app: 'web', env: 'prod' }), false);
    assert.equal(labelsMeet(reqs.labels, { app: 'web', legacy: '' }), false);
    assert.equal(labelsMeet(reqs.labels, { app: 'db' }), false);
  });
});

describe('policy rules', () => {
  const spec = parsePolicyLabels({ 'berth.policy.ingress.app': 'labels:tier=app ports:5432', 'berth.policy.egress': 'cidr:10.0.0.0/8 except:10.9.0.0/16 ports:53/udp,icmp' });
  const ep: PolicedEndpoint = { endpointId: 'abcdef0123456789ffff', ip: '172.18.0.2', ifname: 'eth0', isolate: ['ingress', 'egress'], rules: spec.rules.map((r) => ({ ...r, source: 'container' as const })) };
  const sel = selectorName({ labels: [{ key: 'tier', op: 'eq', value: 'app' }] });

  it('one set per selector, the same name for the same selector whatever the order', () => {
    assert.equal(sel, selectorName({ labels: [{ key: 'tier', op: 'eq', value: 'app' }] }));
    const a = selectorName({ labels: [{ key: 'a', op: 'eq', value: '1' }, { key: 'b', op: 'exists' }] });
    const b = selectorName({ labels: [{ key: 'b', op: 'exists' }, { key: 'a', op: 'eq', value: '1' }] });
    assert.equal(a, b);
    assert.notEqual(a, selectorName({ labels: [{ key: 'b', op: 'exists' }, { key: 'a', op: 'eq', value: '1' }], network: 'x' }));
  });

  it('chains: allows return with a counter, then a counted drop', () => {
    assert.deepEqual(chainRules(ep, 'ingress'), [
      `ip saddr @${sel}_4 meta l4proto tcp th dport { 5432 } counter return comment "berth.policy.ingress.app"`,
      `ip6 saddr @${sel}_6 meta l4proto tcp th dport { 5432 } counter return comment "berth.policy.ingress.app"`,
      'counter drop comment "deny"',
    ]);
    assert.deepEqual(chainRules(ep, 'egress'), [
      'ip daddr 10.0.0.0/8 ip daddr != { 10.9.0.0/16 } meta l4proto udp th dport { 53 } counter return comment "berth.policy.egress"',
      'ip daddr 10.0.0.0/8 ip daddr != { 10.9.0.0/16 } meta l4proto icmp counter return comment "berth.policy.egress"',
      'counter drop comment "deny"',
    ]);
  });

  it('dispatch by address on the host, by interface in a namespace; leave undoes join', () => {
    const add = addEndpointCommands(ep, 'host');
    assert.ok(add.includes('add element inet berth-policy in4 { 172.18.0.2 : jump ep_abcdef0123456789_in }'));
    assert.ok(add.includes('add element inet berth-policy out4 { 172.18.0.2 : jump ep_abcdef0123456789_out }'));
    assert.ok(addEndpointCommands(ep, 'netns').includes('add element inet berth-policy in_if { "eth0" : jump ep_abcdef0123456789_in }'));
    const del = deleteEndpointCommands(ep, 'host');
    assert.deepEqual(del, [
      'delete element inet berth-policy in4 { 172.18.0.2 }', 'delete element inet berth-policy out4 { 172.18.0.2 }',
      'flush chain inet berth-policy ep_abcdef0123456789_in', 'delete chain inet berth-policy ep_abcdef0123456789_in',
      'flush chain inet berth-policy ep_abcdef0123456789_out', 'delete chain inet berth-policy ep_abcdef0123456789_out',
    ]);
  });

  it('the whole table replaces itself in one transaction; replies and loopback pass first', () => {
    const host = buildPolicyTable('host', [ep], [{ name: sel, v4: ['172.18.0.3'], v6: [] }]);
    assert.match(host, /^table inet berth-policy\ndelete table inet berth-policy\ntable inet berth-policy \{/);
    assert.match(host, new RegExp(`set ${sel}_4 \\{ type ipv4_addr; elements = \\{ 172\\.18\\.0\\.3 \\} \\}`));
    assert.match(host, /chain forward \{\n\s+type filter hook forward priority filter; policy accept;\n\s+ct state established,related accept/);
    const ns = buildPolicyTable('netns', [ep], []);
    assert.match(ns, /iifname "lo" accept/);
    assert.match(ns, /oifname "lo" accept/);
    assert.doesNotMatch(ns, /hook forward/);
  });
});
