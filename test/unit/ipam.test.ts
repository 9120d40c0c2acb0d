import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allocate, formatCidr, newPool, nextPoolSubnet, parseCidr, release } from '../../src/network/ipam.js';
import { subnetsOf } from '../../src/network/netcreate.js';
import type { NetworkRecord } from '../../src/network/types.js';

describe('IPAM', () => {
  it('hands out default pools in Docker order, skipping ones in use', () => {
    assert.equal(formatCidr(nextPoolSubnet([])), '172.17.0.0/16');
    assert.equal(formatCidr(nextPoolSubnet([parseCidr('172.17.0.0/16')])), '172.18.0.0/16');
    const used = ['172.17.0.0/16', '172.18.0.0/16', '172.19.0.0/16'].map(parseCidr);
    assert.equal(formatCidr(nextPoolSubnet(used)), '172.20.0.0/16');
    // a host route overlapping 172.20.0.0/16 pushes allocation on
    assert.equal(formatCidr(nextPoolSubnet([...used, parseCidr('172.20.5.0/24')])), '172.21.0.0/16');
    const all172 = [parseCidr('172.16.0.0/12')];
    assert.equal(formatCidr(nextPoolSubnet(all172)), '192.168.0.0/20');
    assert.equal(formatCidr(nextPoolSubnet([...all172, parseCidr('192.168.0.0/20')])), '192.168.16.0/20');
    assert.throws(() => nextPoolSubnet([parseCidr('172.16.0.0/12'), parseCidr('192.168.0.0/16')]), /non-overlapping IPv4 address pool.*all predefined address pools have been fully subnetted/);
  });

  it('allocates after the gateway, skips aux addresses, honours ip-range and static requests', () => {
    const p = newPool('10.5.0.0/24', { aux: { host1: '10.5.0.2' } });
    assert.equal(p.gateway, '10.5.0.1');
    assert.equal(allocate(p, 'a'), '10.5.0.3');
    assert.equal(allocate(p, 'b'), '10.5.0.4');
    assert.equal(allocate(p, 'c', '10.5.0.100'), '10.5.0.100');
    assert.throws(() => allocate(p, 'd', '10.5.0.100'), /Address already in use/);
    assert.throws(() => allocate(p, 'd', '10.6.0.1'), /not in subnet/);
    assert.throws(() => allocate(p, 'd', '10.5.0.1'), /in use/);
    release(p, '10.5.0.3');
    // freed addresses are not reused at once
    assert.equal(allocate(p, 'e'), '10.5.0.5');
    const r = newPool('10.6.0.0/16', { ipRange: '10.6.8.0/30', gateway: '10.6.0.254' });
    assert.equal(allocate(r, 'a'), '10.6.8.0');
    assert.equal(allocate(r, 'b'), '10.6.8.1');
    assert.equal(allocate(r, 'c'), '10.6.8.2');
    assert.equal(allocate(r, 'd'), '10.6.8.3');
    assert.throws(() => allocate(r, 'e'), /no available IPv4/);
  });

  it('rejects malformed or inconsistent configuration', () => {
    assert.throws(() => newPool('10.0.0.1/24'), /host bits/);
    assert.throws(() => newPool('10.0.0.0/33'), /invalid CIDR/);
    assert.throws(() => newPool('300.0.0.0/8'), /invalid IP/);
    assert.throws(() => newPool('10.0.0.0/24', { gateway: '10.0.1.1' }), /gateway/);
    assert.throws(() => newPool('10.0.0.0/24', { ipRange: '10.0.1.0/28' }), /ip-range/);
  });

  it('the picker steps over the subnets of a network whose addresses a CNI plugin hands out (no pools, only IPAM.Config)', () => {
    const rec = (name: string, extra: Partial<NetworkRecord>) => ({ Name: name, IPAM: { Driver: 'default', Options: null, Config: [] }, ...extra }) as unknown as NetworkRecord;
    const used = subnetsOf([
      rec('bridge', { pools: [newPool('172.17.0.0/16')] }),
      rec('cninet', { Driver: 'cni', IPAM: { Driver: 'default', Options: null, Config: [{ Subnet: '172.18.0.0/16' }, { Subnet: 'fd00:1::/64' }] } }),
    ]);
    assert.deepEqual(used.v4.map(formatCidr), ['172.17.0.0/16', '172.18.0.0/16']);
    assert.equal(used.v6.length, 1);
    assert.equal(formatCidr(nextPoolSubnet(used.v4)), '172.19.0.0/16');
  });
});
