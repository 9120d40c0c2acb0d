import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { answer, type Asker } from '../../src/dns/lookup.js';
import { allocate6, formatIPv6, newPool6, nextPool6Subnet, parseCidr6, parseIPv6, release6, ulaBase } from '../../src/network/ipam6.js';
import { ip6FromArpa } from '../../src/util/ipv6.js';

describe('IPv6 address management', () => {
  it('parses and prints addresses the RFC 5952 way', () => {
    for (const [input, out] of [
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'], ['::', '::'], ['::1', '::1'], ['fd00::', 'fd00::'],
      ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'], ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], ['1:0:1:0:1:0:1:0', '1:0:1:0:1:0:1:0'],
      ['::ffff:10.1.2.3', '::ffff:a01:203'],
    ]) assert.equal(formatIPv6(parseIPv6(input!)), out, input);
    for (const bad of ['1::2::3', '12345::', 'g::1', '1:2:3:4:5:6:7:8:9', '1:2']) assert.throws(() => parseIPv6(bad), /invalid IPv6 address/);
  });

  it('hands out addresses after the gateway, in order, and reuses none at once', () => {
    const p = newPool6('fd00:10::/64');
    assert.equal(p.gateway, 'fd00:10::1');
    assert.equal(allocate6(p, 'e1'), 'fd00:10::2');
    assert.equal(allocate6(p, 'e2'), 'fd00:10::3');
    release6(p, 'fd00:10::2');
    assert.equal(allocate6(p, 'e3'), 'fd00:10::4');
    assert.equal(allocate6(p, 'e4', 'FD00:10:0::99'), 'fd00:10::99');
    assert.throws(() => allocate6(p, 'e5', 'fd00:10::99'), /Address already in use/);
    assert.throws(() => allocate6(p, 'e5', 'fd00:11::5'), /not in subnet/);
    assert.throws(() => newPool6('fd00:10::5/64'), /host bits set/);
    assert.throws(() => newPool6('fd00:10::/64', 'fd00:99::1'), /no matching subnet for gateway/);
  });

  it('carves /64s from a unique-local /48 derived from the machine', () => {
    const base = ulaBase('some-machine-id');
    assert.equal(base.prefix, 48);
    assert.match(formatIPv6(base.base), /^fd[0-9a-f]{2}:/);
    assert.notEqual(formatIPv6(ulaBase('another-machine').base), formatIPv6(base.base));
    const first = nextPool6Subnet([], base);
    const second = nextPool6Subnet([first], base);
    assert.equal(first.prefix, 64);
    assert.equal(second.base - first.base, 1n << 64n);
    assert.deepEqual(parseCidr6(`${formatIPv6(first.base)}/64`), first);
  });

  it('answers AAAA and ip6.arpa PTR for dual-stack endpoints, NODATA for IPv4-only ones', () => {
    const asker: Asker = { containerId: 'c1', networks: [{ id: 'n', name: 'dual', internal: false, endpoints: [
      { containerId: 'c2', containerName: 'web', ip: '172.18.0.2', ip6: 'fd00:10::2', names: ['web'] },
      { containerId: 'c3', containerName: 'old', ip: '172.18.0.3', names: ['old'] },
    ] }] };
    assert.deepEqual(answer(asker, 'web', 'AAAA'), { kind: 'addresses', ips: ['fd00:10::2'], type: 'AAAA' });
    assert.deepEqual(answer(asker, 'web', 'A'), { kind: 'addresses', ips: ['172.18.0.2'], type: 'A' });
    assert.deepEqual(answer(asker, 'old', 'AAAA'), { kind: 'nodata' });
    const arpa = `${[...'fd000010000000000000000000000002'].reverse().join('.')}.ip6.arpa`;
    assert.equal(ip6FromArpa(arpa), 'fd00:10::2');
    assert.deepEqual(answer(asker, arpa, 'PTR'), { kind: 'ptr', name: 'web.dual' });
  });
});
