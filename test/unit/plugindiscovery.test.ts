import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { discoveryCalls, type NodeDiscoveryData } from '../../src/cluster/plugindiscovery.js';

const self: NodeDiscoveryData = { Address: '10.99.0.1', BindAddress: '10.99.0.1', Self: true };
const node = (addr: string): NodeDiscoveryData => ({ Address: addr, BindAddress: '', Self: false });
const show = (cs: ReturnType<typeof discoveryCalls>) => cs.map((c) => `${c.method} ${c.node} ${c.data.Address}`);

describe('plugin node discovery', () => {
  it('tells a new plugin of this node first, then of the others by address', () => {
    const present = new Map([['c', node('10.99.0.10')], ['b', node('10.99.0.9')], ['a', self]]);
    assert.deepEqual(show(discoveryCalls(new Map(), present)), ['DiscoverNew a 10.99.0.1', 'DiscoverNew b 10.99.0.9', 'DiscoverNew c 10.99.0.10']);
  });

  it('tells only what changed: a node gone is deleted, one that moved is deleted and told again, deletes first', () => {
    const told = new Map([['a', self], ['b', node('10.99.0.2')], ['c', node('10.99.0.3')]]);
    const present = new Map([['a', self], ['c', node('10.99.0.7')], ['d', node('10.99.0.4')]]);
    assert.deepEqual(show(discoveryCalls(told, present)), ['DiscoverDelete b 10.99.0.2', 'DiscoverDelete c 10.99.0.3', 'DiscoverNew d 10.99.0.4', 'DiscoverNew c 10.99.0.7']);
    assert.deepEqual(discoveryCalls(present, present), []);
  });
});
