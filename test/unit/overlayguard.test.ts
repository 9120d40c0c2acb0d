import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { containerGuardScript, networkGuardScript, overlayGuardScript, pairOps } from '../../src/network/overlayguard.js';

describe('overlay source guard scripts', () => {
  it('a pair is the device, the MAC and the address as the kernel lays them out; a local one adds its ARP probe', () => {
    const [remote, ...rest] = pairOps('bvx-abc', [{ mac: '02:42:0a:00:00:05', ip: '10.0.0.5' }], 'add');
    assert.equal(rest.length, 0);
    assert.equal(remote!.set, 'src4');
    assert.equal(remote!.key.length, 16 + 8 + 4);
    assert.equal(remote!.key.subarray(0, 7).toString(), 'bvx-abc');
    assert.deepEqual([...remote!.key.subarray(16, 22)], [2, 0x42, 10, 0, 0, 5]);
    assert.deepEqual([...remote!.key.subarray(24)], [10, 0, 0, 5]);
    const local = pairOps('bvx-abc', [{ mac: '02:42:0a:00:00:05', ip: '10.0.0.5' }], 'delete', true);
    assert.deepEqual(local.map((o) => [o.op, [...o.key.subarray(24)].join('.')]), [['delete', '10.0.0.5'], ['delete', '0.0.0.0']]);
  });

  it('a device that was there keeps its chain (only the rules are written again); a new one gets a new chain', () => {
    const kept = networkGuardScript('bvx-a', 'bov-a', { vx: false, hostLink: false });
    assert.doesNotMatch(kept, /delete chain/);
    assert.match(kept, /add chain netdev berth in_bvx-a \{ type filter hook ingress device "bvx-a"/);
    assert.match(kept, /add rule netdev berth out_bov-a meta mark set meta mark \| 0x00200000/);
    const fresh = networkGuardScript('bvx-a', 'bov-a', { vx: false, hostLink: true });
    assert.deepEqual(fresh.split('\n').filter((l) => l.startsWith('delete chain')), ['delete chain netdev berth out_bov-a']);
  });

  it('the shared rules let marked host frames and known pairs in, IPv6 out uncounted, the rest out counted', () => {
    const rules = overlayGuardScript().split('\n').filter((l) => l.startsWith('add rule'));
    assert.equal(rules.length, 5);
    assert.match(rules[0]!, /meta mark & 0x00200000 == 0x00200000 meta mark set meta mark & 0xffdfffff accept$/);
    assert.match(rules[4]!, /counter drop comment "spoofed"$/);
  });

  it("a container's guard is by link name (a new link of the name replaces a stale one), and sends only from its MAC and address", () => {
    const s = containerGuardScript('eth1', '02:42:0a:00:00:07', '10.0.0.7');
    assert.match(s, /add chain netdev berth out_eth1 \{ type filter hook egress device "eth1"/);
    assert.match(s, /delete chain netdev berth out_eth1/);
    assert.match(s, /ether saddr != 02:42:0a:00:00:07 counter drop/);
    assert.match(s, /arp saddr ip \{ 10\.0\.0\.7, 0\.0\.0\.0 \} accept/);
  });
});
