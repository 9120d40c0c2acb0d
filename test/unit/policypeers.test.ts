import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PolicyPeers } from '../../src/cluster/policypeers.js';
import { ROOT } from '../../src/cluster/keys.js';
import type { WatchEvent } from '../../src/cluster/store.js';
import type { EndpointRecord } from '../../src/network/overlay.js';
import type { PolicyEndpointInfo } from '../../src/network/policy/policy.js';
import type { NetworkRecord } from '../../src/network/types.js';

/**
 * The follower hands the policy each endpoint change alone (with the endpoints that left), and a
 * network's peers whole only when its record changed or after a list: whatever the batches, the
 * policy ends up with exactly the other hosts' endpoints that have an address.
 */
describe('policy peers follower', () => {
  const NET = 'n1';
  const setup = () => {
    const view = new Map<string, EndpointRecord>();
    const peers = new Map<string, Map<string, string>>();
    const calls: Array<{ net: string; list: number; gone?: number }> = [];
    const policy = {
      async setPeers(net: string, _name: string, list: PolicyEndpointInfo[], gone?: string[]) {
        calls.push({ net, list: list.length, ...(gone ? { gone: gone.length } : {}) });
        const m = gone ? peers.get(net) ?? new Map<string, string>() : new Map<string, string>();
        for (const id of gone ?? []) m.delete(id);
        for (const i of list) m.set(i.endpointId, i.ip);
        peers.set(net, m);
      },
      peerNetworks: () => [...peers].filter(([, m]) => m.size).map(([n]) => n),
    };
    const f = new PolicyPeers({
      me: () => 'A',
      endpointsOf: (id) => [...view.values()].filter((e) => e.Network === id),
      swarmNetworks: () => [{ Id: NET, Name: 'net1' } as NetworkRecord],
      policy,
    });
    return { view, peers, calls, f };
  };
  const ep = (id: string, node: string, ip: string): EndpointRecord => ({ Network: NET, EndpointID: id, ContainerID: `c${id}`, Name: `x${id}`, Aliases: [], IP: ip, Mac: '02:42:0a:00:00:01', Node: node, Vtep: '10.99.0.1' });
  const key = (id: string) => `${ROOT}endpoints/${NET}/${id}`;

  it('hands on one endpoint that came, and one that left, without the others', async () => {
    const { view, calls, f } = setup();
    for (let i = 0; i < 50; i++) view.set(`e${i}`, ep(`e${i}`, 'B', `10.0.0.${i + 2}`));
    await f.follow([...view.values()].map((e, i) => ({ type: 'put', key: key(e.EndpointID), value: e, modRevision: i + 1 })), true);
    assert.deepEqual(calls.at(-1), { net: NET, list: 50 });
    view.set('new', ep('new', 'C', '10.0.1.2'));
    await f.follow([{ type: 'put', key: key('new'), value: view.get('new')!, modRevision: 60 }], false);
    assert.deepEqual(calls.at(-1), { net: NET, list: 1, gone: 0 });
    view.delete('e3');
    await f.follow([{ type: 'delete', key: key('e3'), modRevision: 61 }], false);
    assert.deepEqual(calls.at(-1), { net: NET, list: 0, gone: 1 });
  });

  it('agrees with the view after any batches of puts and deletes (an own endpoint or one with no address is no peer)', async () => {
    let seed = 7;
    const rand = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    const { view, peers, f } = setup();
    let rev = 0;
    for (let round = 0; round < 300; round++) {
      const batch: WatchEvent<unknown>[] = [];
      for (let k = 1 + rand(4); k > 0; k--) {
        const id = `e${rand(20)}`;
        if (rand(3) === 0) {
          view.delete(id);
          batch.push({ type: 'delete', key: key(id), modRevision: ++rev });
        } else {
          const e = ep(id, ['A', 'B', 'C'][rand(3)]!, rand(6) ? `10.0.${rand(3)}.${2 + rand(200)}` : '');
          view.set(id, e);
          batch.push({ type: 'put', key: key(id), value: e, modRevision: ++rev });
        }
      }
      await f.follow(batch, false);
      const want = new Map([...view.values()].filter((e) => e.Node !== 'A' && e.IP).map((e) => [e.EndpointID, e.IP]));
      assert.deepEqual(peers.get(NET) ?? new Map(), want, `round ${round}`);
    }
  });

  it('a network this host does not have: its peers go whole', async () => {
    const { calls, f } = setup();
    await f.follow([{ type: 'put', key: `${ROOT}endpoints/n9/e1`, value: { ...ep('e1', 'B', '10.0.0.2'), Network: 'n9' }, modRevision: 1 }], false);
    assert.deepEqual(calls, [{ net: 'n9', list: 0 }]);
  });
});
