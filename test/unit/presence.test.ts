import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { Presence } from '../../src/cluster/presence.js';
import type { ClusterStore } from '../../src/cluster/store.js';

/** A lease as etcd3's Lease behaves for Presence: a put under it, `lost` events, release. */
class FakeLease extends EventEmitter {
  released = false;
  constructor(readonly id: number, private readonly fails: boolean) { super(); }
  put() {
    return { value: () => ({ exec: async () => { if (this.fails) throw new Error('etcdserver: requested lease not found'); } }) };
  }
  release() { this.released = true; }
  async revoke() { /* gone */ }
  async grant() { return String(this.id); }
}

function setUp(failFirst = 0) {
  const leases: FakeLease[] = [];
  const store = { client: { lease: () => { const l = new FakeLease(leases.length + 1, leases.length > 0 && leases.length <= failFirst); leases.push(l); return l; } } } as unknown as ClusterStore;
  const p = new Presence(store, '/alive/A', () => ({}), 3, () => undefined);
  const granted: number[] = [];
  p.onLease = (l) => { granted.push((l as unknown as FakeLease).id); };
  return { p, leases, granted };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('presence', () => {
  it('takes the next lease at once when one is lost, however many writes still report the loss', async () => {
    const { p, leases, granted } = setUp();
    await p.start();
    assert.deepEqual(granted, [1]);
    // The applied revision's retries under the dead lease report the loss at 0, 200, 400, 800 ms…
    const t0 = Date.now();
    for (const wait of [0, 200, 400, 800]) {
      await sleep(wait);
      leases[0]!.emit('lost', new Error('Lease NOT_FOUND'));
    }
    assert.equal(granted[1], 2, 'no new lease while the old one kept being reported lost');
    assert.ok(Date.now() - t0 < 1600);
    assert.equal(leases.length, 2, 'a lease taken for each report of the same loss');
    await p.stop(false);
  });

  it('waits a second between tries while the store refuses new leases', async () => {
    const { p, leases, granted } = setUp(1);
    await p.start();
    const t0 = Date.now();
    leases[0]!.emit('lost', new Error('Lease NOT_FOUND'));
    while (granted.length < 2 && Date.now() - t0 < 5000) await sleep(20);
    assert.deepEqual(granted, [1, 3]);
    assert.ok(leases[1]!.released, 'the refused lease was not released');
    assert.ok(Date.now() - t0 >= 900, `tried again after ${Date.now() - t0} ms`);
    await p.stop(false);
  });
});
