import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { portOp, remoteSourceOps } from '../../src/network/guardsets.js';
import { parseCidr } from '../../src/network/ipam.js';
import {
  checkSubnetFree, diffPeers, emptyAlloc, overlayHostLink, overlayMtu, parseVni, peersFor, peersView, pickSubnet, pickVni, vxlanDevice, type EndpointRecord,
} from '../../src/network/overlay.js';

const ep = (o: Partial<EndpointRecord>): EndpointRecord => ({
  Network: 'n', EndpointID: 'e', ContainerID: 'c', Name: 'x', Aliases: [], IP: '10.0.1.2', Mac: '02:42:0a:00:01:02', Node: 'A', Vtep: '10.99.0.1', ...o,
});

describe('overlay: cluster-wide subnets and VNIs', () => {
  it('takes /24s from the default pool in order, skipping swarm subnets and the underlay', () => {
    assert.equal(pickSubnet(['10.0.0.0/8'], 24, []), '10.0.0.0/24');
    assert.equal(pickSubnet(['10.0.0.0/8'], 24, ['10.0.0.0/24', '10.0.1.0/24']), '10.0.2.0/24');
    // A user's /16 inside the pool pushes past all of it.
    assert.equal(pickSubnet(['10.0.0.0/8'], 24, ['10.0.0.0/16']), '10.1.0.0/24');
    // The hosts' underlay (10.99.0.1/32 here) is never handed out.
    assert.equal(pickSubnet(['10.99.0.0/23'], 24, [], [parseCidr('10.99.0.1/32')]), '10.99.1.0/24');
    // Several pools: the next one when the first is full.
    assert.equal(pickSubnet(['10.20.0.0/24', '10.30.0.0/16'], 24, ['10.20.0.0/24']), '10.30.0.0/24');
    // A pool smaller than the subnet size is one subnet.
    assert.equal(pickSubnet(['10.40.0.0/26'], 24, []), '10.40.0.0/26');
  });

  it('refuses an exhausted pool and an overlapping subnet with Docker\'s words', () => {
    assert.throws(() => pickSubnet(['10.20.0.0/23'], 24, ['10.20.0.0/24', '10.20.1.0/24']), /could not find an available, non-overlapping IPv4 address pool/);
    assert.throws(() => checkSubnetFree('10.20.0.128/25', ['10.20.0.0/24']), /Pool overlaps with other one on this address space/);
    checkSubnetFree('10.21.0.0/24', ['10.20.0.0/24']);
  });

  it('gives the lowest free VNI from 4096, or the one asked for unless it is taken', () => {
    const a = emptyAlloc();
    assert.equal(pickVni(a, '10.0.0.0/24'), 4096);
    a.vnis['4096'] = 'n1';
    a.vnis['4098'] = 'n2';
    assert.equal(pickVni(a, '10.0.0.0/24'), 4097);
    assert.equal(pickVni(a, '10.0.0.0/24', 300), 300);
    assert.throws(() => pickVni(a, '10.0.9.0/24', 4098), /could not obtain vxlan id for pool 10\.0\.9\.0\/24: requested bit is already allocated/);
    assert.equal(parseVni('5000,5001'), 5000);
    assert.equal(parseVni(undefined), undefined);
    assert.throws(() => parseVni('0'), /invalid vxlan id value "0" passed/);
    assert.throws(() => parseVni(String(2 ** 24)), /invalid vxlan id/);
    assert.throws(() => parseVni('abc'), /invalid vxlan id/);
  });

  it('takes the MTU from the real underlay, and refuses one the underlay cannot carry', () => {
    assert.equal(overlayMtu(undefined, 1400), 1350);
    assert.equal(overlayMtu(undefined, 1500), 1450);
    assert.equal(overlayMtu('1300', 1400), 1300);
    assert.throws(() => overlayMtu('1400', 1400), /carries 1400 bytes and VXLAN takes 50 of them, so at most 1350/);
    assert.throws(() => overlayMtu('50', 1400), /invalid MTU 50/);
    assert.throws(() => overlayMtu('x', 1400), /invalid MTU x/);
  });

  it('names kernel objects within 15 bytes with berth\'s prefixes', () => {
    const id = 'f'.repeat(64);
    assert.equal(overlayHostLink(id), 'bov-fffffffffff');
    assert.equal(vxlanDevice(id), 'bvx-fffffffffff');
    assert.ok(overlayHostLink(id).length <= 15 && vxlanDevice(id).length <= 15);
  });
});

describe('overlay: peers', () => {
  it('a host programs only the other hosts\' endpoints', () => {
    const eps = [ep({ EndpointID: '1', IP: '10.0.1.2', Mac: '02:42:0A:00:01:02', Node: 'A' }), ep({ EndpointID: '2', IP: '10.0.1.3', Mac: '02:42:0a:00:01:03', Node: 'B', Vtep: '10.99.0.2' })];
    assert.deepEqual(peersFor(eps, 'A'), [{ ip: '10.0.1.3', mac: '02:42:0a:00:01:03', vtep: '10.99.0.2' }]);
    assert.deepEqual(peersFor(eps, 'C').map((p) => p.mac), ['02:42:0a:00:01:02', '02:42:0a:00:01:03']);
    // A batch's sync looks at the addresses it named only.
    assert.deepEqual(peersFor(eps, 'C', new Set(['10.0.1.3', '10.0.1.9'])).map((p) => p.ip), ['10.0.1.3']);
    assert.deepEqual(peersFor(eps, 'C', new Set()), []);
  });

  it('diffs the kernel against the store: missing added, moved replaced, orphans removed', () => {
    const have = {
      fdb: [{ mac: '02:42:0a:00:01:02', vtep: '10.99.0.2' }, { mac: '02:42:0a:00:01:09', vtep: '10.99.0.3' }, { mac: '02:42:0a:00:01:04', vtep: '10.99.0.2' }],
      neigh: [{ ip: '10.0.1.2', mac: '02:42:0a:00:01:02' }, { ip: '10.0.1.9', mac: '02:42:0a:00:01:09' }, { ip: '10.0.1.4', mac: '02:42:0a:00:01:04' }],
    };
    const want = [
      { ip: '10.0.1.2', mac: '02:42:0a:00:01:02', vtep: '10.99.0.2' },
      // Moved to another host.
      { ip: '10.0.1.4', mac: '02:42:0a:00:01:04', vtep: '10.99.0.3' },
      { ip: '10.0.1.5', mac: '02:42:0a:00:01:05', vtep: '10.99.0.3' },
    ];
    const d = diffPeers(have, want);
    assert.deepEqual(d.add.map((p) => p.ip).sort(), ['10.0.1.4', '10.0.1.5']);
    assert.deepEqual(d.del, [{ ip: '10.0.1.9', mac: '02:42:0a:00:01:09', vtep: '10.99.0.3' }]);
    assert.deepEqual(diffPeers({ fdb: [], neigh: [] }, []), { add: [], del: [] });
    // A neighbour entry without its FDB entry, and the other way round.
    const lone = diffPeers({ fdb: [{ mac: '02:00:00:00:00:01', vtep: '10.99.0.9' }], neigh: [{ ip: '10.0.1.77', mac: '02:00:00:00:00:02' }] }, []);
    assert.deepEqual(lone.del, [{ ip: '', mac: '02:00:00:00:00:01', vtep: '10.99.0.9' }, { ip: '10.0.1.77', mac: '02:00:00:00:00:02', vtep: '' }]);
  });

  it('lists Docker\'s Peers: one per node with endpoints, by address', () => {
    const nodes = new Map([['A', { name: 'lab0', addr: '10.99.0.1' }], ['B', { name: 'lab1', addr: '10.99.0.2' }]]);
    const v = peersView([ep({ Node: 'B', Vtep: '10.99.0.2' }), ep({ Node: 'A' }), ep({ Node: 'B', Vtep: '10.99.0.2', EndpointID: 'z' })], nodes);
    assert.deepEqual(v, [{ Name: 'lab0', IP: '10.99.0.1' }, { Name: 'lab1', IP: '10.99.0.2' }]);
  });

  it('guards the VXLAN port with one allowance per remote endpoint, its port alone in `ports`', () => {
    assert.deepEqual(portOp('bvx-1', 'add'), { op: 'add', set: 'ports', key: Buffer.from('bvx-1'.padEnd(16, '\0')) });
    const ops = remoteSourceOps('bvx-1', [{ mac: '02:42:0a:00:01:03', ip: '10.0.1.3' }], 'add');
    const port = Buffer.from('bvx-1'.padEnd(16, '\0'));
    const mac = Buffer.from([2, 0x42, 10, 0, 1, 3, 0, 0]);
    const hex = (b: Buffer) => b.toString('hex');
    const bySet = (set: string) => ops.filter((o) => o.set === set).map((o) => hex(o.key));
    assert.deepEqual(bySet('macs'), [hex(Buffer.concat([port, mac]))]);
    assert.deepEqual(bySet('src4').sort(), [hex(Buffer.concat([port, mac, Buffer.from([10, 0, 1, 3])])), hex(Buffer.concat([port, mac, Buffer.alloc(4)]))].sort());
    // fe80::42:aff:fe00:103, the link-local address the MAC gives.
    const ll = Buffer.from('fe8000000000000000420afffe000103', 'hex');
    assert.deepEqual(bySet('src6'), [hex(Buffer.concat([port, mac, ll]))]);
    assert.deepEqual(bySet('nd6'), bySet('src6'));
    assert.deepEqual(bySet('ports'), []);
    assert.ok(ops.every((o) => o.op === 'add'));
    assert.deepEqual(remoteSourceOps('bvx-1', [], 'delete'), []);
  });
});
