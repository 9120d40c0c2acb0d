import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EtcdLeaseInvalidError } from 'etcd3';
import { UnavailableError } from '../../src/cluster/errors.js';
import { INGRESS_SBOX } from '../../src/cluster/ingress.js';
import { K } from '../../src/cluster/keys.js';
import { ownDrift, type OwnView } from '../../src/cluster/ownaudit.js';
import type { Session } from '../../src/cluster/session.js';
import { SwarmNetworks, type SwarmNetworkHost } from '../../src/cluster/swarmnetworks.js';
import { MemStore } from './memstore.js';
import { AddressTakenError } from '../../src/network/driver.js';
import type { EndpointRecord } from '../../src/network/overlay.js';
import type { NetworkRecord } from '../../src/network/types.js';

/**
 * The store side of swarm networks against an in-memory store with etcd's semantics for what it
 * uses (revisions, compare-and-swap transactions, a list at a revision, watches from a revision
 * and a watch the store cancels): list/watch/list-again, the applied-revision waits, claims.
 */

function net(id: string): NetworkRecord {
  return {
    Name: id, Id: id, Created: '', Scope: 'swarm', Driver: 'overlay', EnableIPv6: false, IPAM: { Driver: 'default', Options: {}, Config: [{ Subnet: '10.0.1.0/24' }] },
    Internal: false, Attachable: true, Ingress: false, ConfigFrom: { Network: '' }, ConfigOnly: false,
    Options: { 'com.docker.network.driver.overlay.vxlanid_list': '4096' }, Labels: {},
    pools: [{ subnet: '10.0.1.0/24', gateway: '10.0.1.1', auxAddresses: {}, allocated: {} }],
  };
}

function setUp(store: MemStore, onLease: (f: (lease: unknown) => void) => void = () => undefined, local: () => Array<Omit<EndpointRecord, 'Node' | 'Vtep'>> = () => [], over: Partial<SwarmNetworkHost> = {}) {
  const calls: string[] = [];
  const have = new Map<string, NetworkRecord>();
  const host: SwarmNetworkHost = {
    swarmNetworks: () => [...have.values()],
    network: (id) => have.get(id),
    adoptSwarmNetwork: async (n) => { calls.push(`adopt ${n.Id}`); have.set(n.Id, n); },
    registerSwarmNetwork: async (n) => { calls.push(`register ${n.Id}`); have.set(n.Id, n); },
    makeSwarmNetwork: async (n) => { calls.push(`make ${n.Id}`); },
    ensureSwarmNetwork: async (n) => { calls.push(`ensure ${n.Id}`); },
    dropSwarmNetwork: async (n) => { calls.push(`drop ${n.Id}`); have.delete(n.Id); },
    peersChanged: async (ids, full) => { calls.push(`peers ${ids.join(',')}${full ? ' full' : ''}`); },
    newRecord: async () => { throw new Error('not here'); },
    allocate: async () => false,
    free: async () => undefined,
    ownSubnets: () => [],
    removeOrphans: async () => { calls.push('orphans'); },
    ...over,
  };
  const lease = {
    grant: async () => '7',
    put: (key: string) => ({ value: (v: string) => ({ exec: async () => store.write([[key, JSON.parse(v)]]) }) }),
  };
  const session = { store, lease, state: { nodeId: 'A', addr: '10.99.0.1', dataPathAddr: '10.99.0.1', role: 'manager' }, onLease } as unknown as Session;
  const sn = new SwarmNetworks(session, host, local, 4789, () => undefined);
  return { sn, calls, have, session: session as unknown as { store: MemStore } };
}

const settle = () => new Promise((r) => setTimeout(r, 20));
/** A host started on a store that holds one network, n1. */
async function startedWithN1() {
  const store = new MemStore();
  store.write([[K.network('n1'), net('n1')]]);
  const host = setUp(store);
  await host.sn.start();
  return { store, ...host };
}
async function waitUntil(ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('swarm networks: the store side', () => {
  it('lists, applies, publishes the applied revision, and lists again when the store cancels its watch', async () => {
    const store = new MemStore();
    store.write([[K.network('n1'), net('n1')], [K.endpoint('n1', 'e1'), { Network: 'n1', EndpointID: 'e1', IP: '10.0.1.5', Mac: '02:42:0a:00:01:05', Node: 'B', Vtep: '10.99.0.2', Name: 'b', Aliases: [], ContainerID: 'c' }]]);
    const { sn, calls } = setUp(store);
    await sn.start();
    assert.deepEqual(calls, ['register n1', 'make n1', 'orphans', 'peers n1 full']);
    assert.deepEqual(sn.peers('n1'), [{ ip: '10.0.1.5', mac: '02:42:0a:00:01:05', vtep: '10.99.0.2' }]);
    await settle();
    assert.ok(((await store.get<{ Revision: number }>(K.appliedOf('A')))?.value.Revision ?? 0) >= 2, 'no applied revision published');
    // A change heard through the watch.
    calls.length = 0;
    const r = store.write([], [K.endpoint('n1', 'e1')]);
    await settle();
    assert.deepEqual(calls, ['peers n1']);
    assert.deepEqual(sn.peers('n1'), []);
    assert.equal((await store.get<{ Revision: number }>(K.appliedOf('A')))?.value.Revision, r);
    // Changes whose events the store no longer has (compacted while this host was away), then the
    // watch cancelled: the host lists again and catches up with all of them.
    calls.length = 0;
    store.write([[K.network('n2'), net('n2')]], [K.network('n1')], true);
    const lists = store.lists;
    store.watchers[0]!.onLost(new Error('mvcc: required revision has been compacted'));
    await settle();
    assert.equal(store.lists, lists + 1);
    assert.deepEqual(calls, ['register n2', 'drop n1', 'make n2', 'orphans', 'peers n2 full']);
    assert.equal(store.watchers.length, 1, 'the old watch was not replaced');
    await sn.close();
  });

  it('a batch whose kernel step fails for one network: the others follow at once, the failed one is tried again until it agrees', async () => {
    const { store, sn, calls, have } = await startedWithN1();
    // The next adoption fails once, in the batch that also removes n1 (n2 comes first in it).
    const host = (sn as unknown as { host: { adoptSwarmNetwork: (n: NetworkRecord) => Promise<void> } }).host;
    const adopt = host.adoptSwarmNetwork;
    let failures = 0;
    host.adoptSwarmNetwork = async (n) => { if (!failures++) throw new Error('bridge: Cannot find device "bvx-n2"'); return adopt(n); };
    calls.length = 0;
    store.write([[K.network('n2'), net('n2')]], [K.network('n1')]);
    await settle();
    assert.ok(calls.includes('drop n1'), 'the other network of the batch was held back');
    await waitUntil(() => have.has('n2'), 5000);
    assert.equal(failures, 2);
    assert.equal(store.watchers.length, 1, 'the watch went on meanwhile');
    await sn.close();
  });

  it('a store client replaced while the host lists again (a CA rotation replaces them twice): the watch ends on the current client', async () => {
    // Three clients of one store, as etcd's are: the same data, each its own watches.
    const a = new MemStore();
    a.write([[K.network('n1'), net('n1')]]);
    const clientOf = (base: MemStore) => Object.assign(Object.create(Object.getPrototypeOf(base)) as MemStore, base, { watchers: [] });
    const b = clientOf(a);
    const c = clientOf(a);
    let leaseListener: ((lease: unknown) => void) | undefined;
    const { sn, session } = setUp(a, (f) => { leaseListener = f; });
    await sn.start();
    assert.equal(a.watchers.length, 1);
    // The session moves to b; while the host lists b, it moves again to c.
    b.duringList = () => { session.store = c; leaseListener!({ grant: async () => '8', put: () => ({ value: () => ({ exec: async () => undefined }) }) }); };
    session.store = b;
    leaseListener!({ grant: async () => '8', put: () => ({ value: () => ({ exec: async () => undefined }) }) });
    await settle();
    await settle();
    assert.equal(a.watchers.length, 0, 'the first watch was not stopped');
    assert.equal(b.watchers.length, 0, 'the watch stayed on the replaced client (it dies silently when that client closes)');
    assert.equal(c.watchers.length, 1, 'no watch on the current client');
    await sn.close();
  });

  it('a change waits until every live host has applied it, and a host whose presence lapsed stops counting', async () => {
    const store = new MemStore();
    store.write([[K.aliveOf('A'), {}], [K.aliveOf('B'), {}], [K.aliveOf('C'), {}]]);
    const { sn } = setUp(store);
    await sn.start();
    // An endpoint written by B: this host applies it (and publishes it) through its watch.
    const r = store.write([[K.endpoint('n9', 'e9'), { Network: 'n9', EndpointID: 'e9', IP: '10.0.9.2', Mac: '02:42:0a:00:09:02', Node: 'B', Vtep: '10.99.0.2', Name: 'x', Aliases: [], ContainerID: 'c' }]]);
    const t0 = Date.now();
    let done = false;
    const wait = sn.appliedEverywhere(r).then(() => { done = true; });
    await settle();
    assert.equal(done, false, 'returned before B and C applied');
    store.write([[K.appliedOf('B'), { Revision: r }]]);
    await settle();
    assert.equal(done, false, 'returned before C applied');
    store.write([], [K.aliveOf('C')]);
    await wait;
    // Before the bounded wait (5 s) would have let it go (with room for a busy machine).
    assert.ok(Date.now() - t0 < 4000, `the wait ended after ${Date.now() - t0} ms`);
    await sn.close();
  });

  it('startListed returns with the networks registered, before their kernel side; a claim waits for that side', async () => {
    const store = new MemStore();
    store.write([[K.network('n1'), net('n1')]]);
    let made!: () => void;
    const making = new Promise<void>((r) => { made = r; });
    const { sn, calls, have } = setUp(store, undefined, undefined, { makeSwarmNetwork: async (n) => { calls.push(`make ${n.Id}`); await making; } });
    await sn.startListed();
    assert.ok(have.has('n1'), 'n1 not registered when startListed returned');
    assert.ok(!calls.includes('orphans'), `the kernel side ran to the end before startListed returned: ${calls}`);
    let claimed = false;
    const claim = sn.claim(net('n1'), { endpointId: 'e1', ip: '10.0.1.7', mac: '02:42:0a:00:01:07', containerId: 'c1', name: 'web', aliases: [] }).then((r) => { claimed = true; return r; });
    await settle();
    assert.equal(claimed, false, 'the claim went ahead of the network\'s bridge');
    assert.equal(await store.get(K.endpoint('n1', 'e1')), undefined);
    made();
    assert.ok((await claim) > 0);
    assert.deepEqual(calls, ['register n1', 'make n1', 'orphans', 'peers n1 full']);
    await sn.close();
  });

  it('claims an address once in the whole cluster; the endpoint is under the lease, the address claim is not', async () => {
    const { store, sn } = await startedWithN1();
    const n = net('n1');
    const ep = { endpointId: 'e1', ip: '10.0.1.7', mac: '02:42:0A:00:01:07', containerId: 'c1', name: 'web', aliases: ['www'] };
    const rev = await sn.claim(n, ep);
    const rec = (await store.get<{ Node: string; Mac: string; Vtep: string }>(K.endpoint('n1', 'e1')))!.value;
    assert.deepEqual([rec.Node, rec.Mac, rec.Vtep], ['A', '02:42:0a:00:01:07', '10.99.0.1']);
    assert.ok(rev > 0);
    await assert.rejects(sn.claim(n, { ...ep, endpointId: 'e2' }), (e) => e instanceof AddressTakenError && e.message === 'Address already in use');
    assert.ok(await sn.release(n, 'e1'));
    assert.equal(await store.get(K.address('n1', '10.0.1.7')), undefined);
    store.write([[K.network('n1'), { ...net('n1'), removing: true }]]);
    await settle();
    await assert.rejects(sn.claim(n, { ...ep, endpointId: 'e3' }), /network n1 not found/);
    await sn.close();
  });

  it("the network's pool follows the store's claims and endpoints batch by batch: an address taken, freed, or held by an endpoint alone", async () => {
    const { store, sn, have } = await startedWithN1();
    const allocated = () => ({ ...have.get('n1')!.pools![0]!.allocated });
    store.write([[K.address('n1', '10.0.1.20'), { EndpointID: 'eB', Node: 'B' }]]);
    await settle();
    assert.deepEqual(allocated(), { '10.0.1.20': 'eB' });
    // An endpoint with no claim of its own (an older berth leased its address with it).
    store.write([[K.endpoint('n1', 'eC'), { Network: 'n1', EndpointID: 'eC', IP: '10.0.1.21', Mac: '02:42:0a:00:01:15', Node: 'C', Vtep: '10.99.0.3', Name: 'c', Aliases: [], ContainerID: 'c' }]]);
    await settle();
    assert.deepEqual(allocated(), { '10.0.1.20': 'eB', '10.0.1.21': 'eC' });
    store.write([], [K.address('n1', '10.0.1.20'), K.endpoint('n1', 'eC')]);
    await settle();
    assert.deepEqual(allocated(), {});
    await sn.close();
  });

  it("a claim sent again by the store's client after its answer was lost (a leader killed) is the join's own, not an address in use", async () => {
    const { store, sn } = await startedWithN1();
    const realTxn = store.txn.bind(store);
    // etcd3's retry policy: the first transaction is applied, its answer lost, the same one sent again fails its compare.
    store.txn = async (cmp, puts, deletes) => {
      if (puts.some((p) => p.key === K.address('n1', '10.0.1.7'))) await realTxn(cmp, puts, deletes);
      return realTxn(cmp, puts, deletes);
    };
    const ep = { endpointId: 'e1', ip: '10.0.1.7', mac: '02:42:0A:00:01:07', containerId: 'c1', name: 'web', aliases: [] };
    const rev = await sn.claim(net('n1'), ep);
    assert.equal(rev, store.data.get(K.address('n1', '10.0.1.7'))!.mod);
    assert.equal((store.data.get(K.endpoint('n1', 'e1'))!.value as { ContainerID: string }).ContainerID, 'c1');
    // Someone else's claim of the address is still refused.
    store.txn = realTxn;
    await assert.rejects(sn.claim(net('n1'), { ...ep, endpointId: 'e2' }), (e) => e instanceof AddressTakenError);
    await sn.close();
  });

  it("a network create sent again by the store's client after its answer was lost makes one network, not two of one name", async () => {
    const store = new MemStore();
    let made = 0;
    const { sn } = setUp(store, undefined, undefined, { newRecord: async (body) => ({ ...net(`m${++made}`), Name: String(body.Name) }) });
    await sn.start();
    const realTxn = store.txn.bind(store);
    store.txn = async (cmp, puts, deletes) => {
      if (puts.some((p) => p.key.startsWith(K.network('')))) await realTxn(cmp, puts, deletes);
      return realTxn(cmp, puts, deletes);
    };
    const { Id } = await sn.create({ Name: 'twice', Driver: 'overlay' }, undefined, { applied: false });
    const records = [...(await store.list<NetworkRecord>(K.network(''))).values()].map((v) => v.value);
    assert.deepEqual(records.map((r) => [r.Id, r.Name]), [[Id, 'twice']]);
    await sn.close();
  });

  it('a join under a lease that lapsed waits for the renewed lease instead of failing with etcd\'s "lease not found"', async () => {
    const { store, sn, session } = await startedWithN1();
    // etcd refuses a put under a lease it dropped; presence takes a new lease a moment later.
    const realTxn = store.txn.bind(store);
    let refused = 0;
    store.txn = async (cmp, puts, deletes) => {
      if (puts.some((p) => (p as { lease?: string }).lease === '7')) { refused++; throw new EtcdLeaseInvalidError('7'); }
      return realTxn(cmp, puts, deletes);
    };
    const s = session as unknown as { lease: unknown };
    setTimeout(() => { s.lease = { grant: async () => '9', put: () => ({ value: () => ({ exec: async () => undefined }) }) }; }, 300);
    const ep = { endpointId: 'e1', ip: '10.0.1.7', mac: '02:42:0A:00:01:07', containerId: 'c1', name: 'web', aliases: [] };
    assert.ok((await sn.claim(net('n1'), ep)) > 0);
    assert.equal(refused, 1);
    assert.ok(await store.get(K.endpoint('n1', 'e1')));
    // No renewal within the wait: a 503 in words a user can act on, nothing claimed.
    s.lease = { grant: async () => '7', put: () => ({ value: () => ({ exec: async () => undefined }) }) };
    await assert.rejects(sn.claim(net('n1'), { ...ep, endpointId: 'e2', ip: '10.0.1.8' }), (e) => e instanceof UnavailableError && /lease in the cluster store lapsed/.test(e.message));
    assert.equal(await store.get(K.address('n1', '10.0.1.8')), undefined);
    await sn.close();
  });

  it('a network removed with this host\'s ingress sandbox still on it: the endpoint leaves the store and is not published again', async () => {
    const store = new MemStore();
    store.write([[K.network('ing'), { ...net('ing'), Ingress: true }]]);
    const { sn, calls } = setUp(store);
    await sn.start();
    await sn.claim(net('ing'), { endpointId: 'sb', ip: '10.0.1.2', mac: '02:42:0a:00:01:02', containerId: 'ingress-sbox', name: 'ingress-endpoint', aliases: [] });
    assert.ok(await store.get(K.endpoint('ing', 'sb')));
    // The removal, as a manager makes it: the record and the address claims go; each host's leased endpoints are its own.
    store.write([], [K.network('ing'), K.address('ing', '10.0.1.2')]);
    await settle();
    assert.ok(calls.includes('drop ing'));
    assert.equal(await store.get(K.endpoint('ing', 'sb')), undefined);
    assert.ok(!(sn as unknown as { mine: Map<string, unknown> }).mine.has('sb'), 'not written again under the next lease');
    await sn.close();
  });

  it('a host with more endpoints than one etcd transaction takes lists, and writes them again under a new lease, in transactions etcd takes', async () => {
    const store = new MemStore();
    store.write([[K.network('n1'), net('n1')]]);
    // 70 endpoints and their claims: 140 writes.
    const local = Array.from({ length: 70 }, (_, i) => ({ Network: 'n1', EndpointID: `e${i}`, ContainerID: `c${i}`, Name: `x${i}`, Aliases: [], IP: `10.0.1.${i + 2}`, Mac: '02:42:0a:00:01:02' }));
    let leaseListener: ((lease: unknown) => void) | undefined;
    const { sn, session } = setUp(store, (f) => { leaseListener = f; }, () => local);
    await sn.start();
    const inStore = async () => [...(await store.list<{ EndpointID: string }>(`${K.endpoint('n1', '')}`)).values()].length;
    assert.equal(await inStore(), 70, 'the first list did not write the endpoints');
    assert.equal(store.watchers.length, 1, 'the host is not following the store');
    // The lease lapsed: its keys are gone, and the new lease's republish writes them all again.
    store.write([], local.map((e) => K.endpoint('n1', e.EndpointID)));
    const txns = store.txns;
    const next = { grant: async () => '8', put: () => ({ value: () => ({ exec: async () => undefined }) }) };
    (session as unknown as { lease: unknown }).lease = next;
    leaseListener!(next);
    await waitUntil(() => store.txns > txns + 1, 2000);
    await settle();
    assert.equal(await inStore(), 70);
    assert.equal(store.txns - txns, 2, 'written in more transactions than etcd needs');
    await sn.close();
  });

  it('a join whose lease was replaced while it was written is written again under the new lease', async () => {
    const store = new MemStore();
    store.write([[K.network('n1'), net('n1')]]);
    let leaseListener: ((lease: unknown) => void) | undefined;
    const { sn, session } = setUp(store, (f) => { leaseListener = f; });
    await sn.start();
    const s = session as unknown as { lease: unknown };
    const realTxn = store.txn.bind(store);
    const leased: string[] = [];
    store.txn = async (cmp, puts, deletes) => {
      const mine = (puts as Array<{ key: string; lease?: string }>).filter((p) => p.key === K.endpoint('n1', 'e2'));
      for (const p of mine) leased.push(p.lease ?? '');
      const r = await realTxn(cmp, puts, deletes);
      // The claim's write lands as presence takes a new lease: that lease's republish runs before the claim returns.
      if (mine.length && leased.length === 1) {
        const next = { grant: async () => '8', put: () => ({ value: () => ({ exec: async () => undefined }) }) };
        s.lease = next;
        leaseListener!(next);
      }
      return r;
    };
    await sn.claim(net('n1'), { endpointId: 'e2', ip: '10.0.1.8', mac: '02:42:0A:00:01:08', containerId: 'c2', name: 'db', aliases: [] });
    await waitUntil(() => leased.includes('8'), 2000).catch(() => assert.fail(`e2 written under leases ${leased.join(', ')} only`));
    await sn.close();
  });

  it('an endpoint released while a new lease\'s republish is on its way does not stay in the store', async () => {
    const store = new MemStore();
    store.write([[K.network('n1'), net('n1')]]);
    let leaseListener: ((lease: unknown) => void) | undefined;
    const { sn } = setUp(store, (f) => { leaseListener = f; });
    await sn.start();
    await sn.claim(net('n1'), { endpointId: 'e1', ip: '10.0.1.7', mac: '02:42:0A:00:01:07', containerId: 'c1', name: 'web', aliases: [] });
    // The new lease's write is held at the store until the endpoint was released (its container removed).
    const realTxn = store.txn.bind(store);
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    let heldOnce = false;
    let heldDone = false;
    store.txn = async (cmp, puts, deletes) => {
      if (heldOnce || !puts.some((p) => p.key === K.endpoint('n1', 'e1'))) return realTxn(cmp, puts, deletes);
      heldOnce = true;
      await held;
      const r = await realTxn(cmp, puts, deletes);
      heldDone = true;
      return r;
    };
    leaseListener!({ grant: async () => '8', put: () => ({ value: () => ({ exec: async () => undefined }) }) });
    await waitUntil(() => heldOnce, 2000);
    await sn.release(net('n1'), 'e1');
    release();
    await waitUntil(() => heldDone, 2000);
    await settle();
    await waitUntil(() => !store.data.has(K.endpoint('n1', 'e1')) && !store.data.has(K.address('n1', '10.0.1.7')), 2000)
      .catch(() => assert.fail(`left in the store: ${[...store.data.keys()].filter((k) => k.includes('e1') || k.includes('10.0.1.7')).join(', ')}`));
    await sn.close();
  });

  it('an endpoint released while its container\'s record still names it is not taken for held by a relist in between', async () => {
    const store = new MemStore();
    store.write([[K.network('n1'), net('n1')]]);
    const e1 = { Network: 'n1', EndpointID: 'e1', ContainerID: 'c1', Name: 'web', Aliases: [], IP: '10.0.1.7', Mac: '02:42:0a:00:01:07' };
    // The engine forgets the endpoint only after its teardown, which releases it first.
    let engineHas = false;
    const { sn } = setUp(store, () => undefined, () => (engineHas ? [e1] : []));
    await sn.start();
    await sn.claim(net('n1'), { endpointId: 'e1', ip: e1.IP, mac: e1.Mac, containerId: 'c1', name: 'web', aliases: [] });
    engineHas = true;
    await sn.release(net('n1'), 'e1');
    const lists = store.lists;
    store.watchers[0]!.onLost(new Error('mvcc: required revision has been compacted'));
    await waitUntil(() => store.lists > lists, 2000);
    await settle();
    assert.ok(!store.data.has(K.endpoint('n1', 'e1')), 'written back by the relist');
    // Remembered only while the engine names them, even on a host that never relists.
    engineHas = false;
    for (let i = 0; i < 100; i++) await sn.release(net('n1'), `gone${i}`);
    assert.ok((sn as unknown as { released: Set<string> }).released.size <= 65, 'released endpoints kept without bound');
    await sn.close();
  });

  it('an endpoint released while the store takes no change (quorum lost) leaves the store once it takes changes again', async () => {
    const { store, sn } = await startedWithN1();
    const ep = { endpointId: 'e1', ip: '10.0.1.7', mac: '02:42:0A:00:01:07', containerId: 'c1', name: 'web', aliases: [] };
    await sn.claim(net('n1'), ep);
    const realTxn = store.txn.bind(store);
    let refusals = 0;
    store.txn = async (cmp, puts, deletes) => {
      if (deletes?.length && refusals < 2) { refusals++; throw new Error("The swarm does not have a leader. It's possible that too few managers are online."); }
      return realTxn(cmp, puts, deletes);
    };
    assert.equal(await sn.release(net('n1'), 'e1'), undefined, 'no revision to wait on: the container goes here all the same');
    assert.ok(await store.get(K.endpoint('n1', 'e1')), 'still in the store while it refuses');
    await waitUntil(() => !store.data.has(K.endpoint('n1', 'e1')) && !store.data.has(K.address('n1', '10.0.1.7')), 5000);
    assert.equal(refusals, 2);
    await sn.close();
  });

  it('a claim that failed here but committed later (its answer lost while quorum was lost) is withdrawn when it shows up', async () => {
    const { store, sn } = await startedWithN1();
    const realTxn = store.txn.bind(store);
    let late: (() => Promise<unknown>) | undefined;
    // The store takes the claim but its answer never comes: the join fails and is undone.
    store.txn = async (cmp, puts, deletes) => {
      if (puts.length && !late) { late = () => realTxn(cmp, puts, deletes); throw new Error('context deadline exceeded'); }
      return realTxn(cmp, puts, deletes);
    };
    const ep = { endpointId: 'e9', ip: '10.0.1.9', mac: '02:42:0a:00:01:09', containerId: 'c9', name: 'lost', aliases: [] };
    await assert.rejects(sn.claim(net('n1'), ep), /deadline/);
    assert.equal(await sn.release(net('n1'), 'e9'), undefined);
    // Quorum back: the claim commits after all.
    await late!();
    assert.ok(store.data.has(K.endpoint('n1', 'e9')));
    await waitUntil(() => !store.data.has(K.endpoint('n1', 'e9')) && !store.data.has(K.address('n1', '10.0.1.9')), 5000);
    assert.deepEqual(sn.peers('n1'), []);
    // A claim of this host's that succeeds is not taken for one.
    await sn.claim(net('n1'), { ...ep, endpointId: 'e10', ip: '10.0.1.10' });
    await settle();
    assert.ok(store.data.has(K.endpoint('n1', 'e10')), 'a live claim was withdrawn');
    await sn.close();
  });

  it("a host that lapsed keeps its addresses: no other host allocates them, and its return never overwrites another's claim", async () => {
    const store = new MemStore();
    const b0 = { Network: 'n1', EndpointID: 'eb', IP: '10.0.1.9', Mac: '02:42:0a:00:01:09', Node: 'B', Vtep: '10.99.0.2', Name: 'b0', Aliases: [], ContainerID: 'cb' };
    store.write([[K.network('n1'), net('n1')], [K.endpoint('n1', 'eb'), b0], [K.address('n1', '10.0.1.9'), { EndpointID: 'eb', Node: 'B' }]]);
    const { sn, have } = setUp(store);
    await sn.start();
    assert.equal(have.get('n1')!.pools![0]!.allocated['10.0.1.9'], 'eb');
    // B's lease lapses: its endpoint goes from the store and from this host's peers, its claim stays.
    store.write([], [K.endpoint('n1', 'eb')]);
    await settle();
    assert.deepEqual(sn.peers('n1'), []);
    assert.equal(have.get('n1')!.pools![0]!.allocated['10.0.1.9'], 'eb', 'the lapsed host\'s address was freed for local allocation');
    await assert.rejects(sn.claim(net('n1'), { endpointId: 'ea', ip: '10.0.1.9', mac: '02:42:0a:00:01:0a', containerId: 'ca', name: 'a', aliases: [] }), AddressTakenError);
    await sn.close();
  });

  it("a host's reconciliation withdraws its own claims no running container holds, and the claims of networks gone", async () => {
    const store = new MemStore();
    store.write([
      [K.network('n1'), net('n1')],
      [K.address('n1', '10.0.1.20'), { EndpointID: 'gone', Node: 'A' }],
      [K.address('n1', '10.0.1.21'), { EndpointID: 'other', Node: 'B' }],
      [K.address('n2', '10.0.2.5'), { EndpointID: 'old', Node: 'B' }],
    ]);
    const { sn } = setUp(store);
    await sn.start();
    assert.equal(await store.get(K.address('n1', '10.0.1.20')), undefined, 'its own stale claim stayed');
    assert.ok(await store.get(K.address('n1', '10.0.1.21')), "another node's claim was withdrawn");
    assert.equal(await store.get(K.address('n2', '10.0.2.5')), undefined, 'a claim of a removed network stayed');
    await sn.close();
  });
  it('a new lease\'s republish refused (a leader change as a partition heals) is tried again while that lease is current', async () => {
    const store = new MemStore();
    store.write([[K.network('n1'), net('n1')]]);
    let leaseListener: ((lease: unknown) => void) | undefined;
    const { sn, session } = setUp(store, (f) => { leaseListener = f; });
    sn.checkEveryMs = 60_000;
    await sn.start();
    await sn.claim(net('n1'), { endpointId: 'e1', ip: '10.0.1.7', mac: '02:42:0a:00:01:07', containerId: 'c1', name: 'web', aliases: [] });
    // The old lease lapses, taking the endpoint with it; the new lease's republish is refused once.
    store.write([], [K.endpoint('n1', 'e1')]);
    const realTxn = store.txn.bind(store);
    let refused = 0;
    store.txn = async (cmp, puts, deletes) => {
      if (!refused && puts.some((p) => p.key === K.endpoint('n1', 'e1'))) { refused++; throw new Error('etcdserver: leader changed'); }
      return realTxn(cmp, puts, deletes);
    };
    const next = { grant: async () => '8', put: () => ({ value: () => ({ exec: async () => undefined }) }) };
    (session as unknown as { lease: unknown }).lease = next;
    leaseListener!(next);
    await waitUntil(() => refused === 1, 2000);
    await waitUntil(() => store.data.has(K.endpoint('n1', 'e1')), 3000).catch(() => assert.fail('the refused republish was never tried again'));
    await sn.close();
  });

  it('audits its own endpoints: one the store lost is written again, one no container holds is withdrawn', async () => {
    const store = new MemStore();
    store.write([[K.network('n1'), net('n1')]]);
    const named = new Set<string>();
    const { sn } = setUp(store, () => undefined, () => [...named].map((id) => ({ Network: 'n1', EndpointID: id, ContainerID: `c-${id}`, Name: id, Aliases: [], IP: '', Mac: '' })));
    sn.checkEveryMs = 40;
    sn.leakAfterMs = 300;
    await sn.start();
    const held = { endpointId: 'e1', ip: '10.0.1.7', mac: '02:42:0a:00:01:07', containerId: 'c-e1', name: 'web', aliases: [] };
    named.add('e1');
    await sn.claim(net('n1'), held);
    // Gone from the store with no word to this host (a write of its that failed and was never retried).
    store.write([], [K.endpoint('n1', 'e1')]);
    await waitUntil(() => store.data.has(K.endpoint('n1', 'e1')), 3000).catch(() => assert.fail('the endpoint the store lost was never written again'));
    assert.equal((await store.get<EndpointRecord>(K.endpoint('n1', 'e1')))?.value.IP, '10.0.1.7');
    // An endpoint whose release never came (its container is gone): withdrawn once its claim is old, not before.
    await sn.claim(net('n1'), { ...held, endpointId: 'e2', ip: '10.0.1.8', containerId: 'c-e2', name: 'gone' });
    await new Promise((r) => setTimeout(r, 150));
    assert.ok(store.data.has(K.endpoint('n1', 'e2')), 'a join younger than leakAfterMs was taken for leaked');
    await waitUntil(() => !store.data.has(K.endpoint('n1', 'e2')) && !store.data.has(K.address('n1', '10.0.1.8')), 3000)
      .catch(() => assert.fail('an endpoint no container holds stayed in the store'));
    assert.ok(store.data.has(K.endpoint('n1', 'e1')) && store.data.has(K.address('n1', '10.0.1.7')), 'a held endpoint was withdrawn');
    await sn.close();
  });

  it('a driver that allocates for itself (a global-scope plugin): its options are the record\'s, no VNI; a conflict frees and allocates again; a failure writes nothing', async () => {
    const store = new MemStore();
    const log: string[] = [];
    let allocations = 0;
    const plugin = (body: Record<string, unknown>): NetworkRecord => ({ ...net('p1'), Id: 'p1', Name: String(body.Name), Driver: 'fakeplugin', Options: { ...(body.Options as Record<string, string>) }, pools: [{ subnet: String((body.IPAM as { Config: Array<{ Subnet: string }> }).Config[0]!.Subnet), gateway: '10.0.0.1', auxAddresses: {}, allocated: {} }] });
    const { sn } = setUp(store, undefined, undefined, {
      newRecord: async (body) => plugin(body),
      allocate: async (n) => {
        log.push(`allocate ${n.pools![0]!.subnet}`);
        // Another manager takes the subnet meanwhile, once: the write must not go through.
        if (allocations++ === 0) store.write([[K.overlayAlloc, { subnets: { '10.0.0.0/24': 'other' }, vnis: {} }]]);
        if (n.Name === 'bad') throw new Error('plugin "fakeplugin": NetworkDriver.AllocateNetwork: no VNI left');
        n.Options = { ...n.Options, allocated: String(allocations) };
        return true;
      },
      free: async (n) => { log.push(`free ${n.pools![0]!.subnet}`); },
    });
    await sn.start();
    await sn.create({ Name: 'gnet', Driver: 'fakeplugin', Options: { color: 'blue' } });
    assert.deepEqual(log, ['allocate 10.0.0.0/24', 'free 10.0.0.0/24', 'allocate 10.0.1.0/24']);
    const rec = (await store.get<NetworkRecord>(K.network('p1')))!.value;
    assert.deepEqual([rec.Scope, rec.Options], ['swarm', { color: 'blue', allocated: '2' }]);
    assert.deepEqual((await store.get(K.overlayAlloc))!.value, { subnets: { '10.0.0.0/24': 'other', '10.0.1.0/24': 'p1' }, vnis: {} });
    log.length = 0;
    await sn.remove(rec);
    assert.deepEqual(log, ['free 10.0.1.0/24']);
    const before = [...store.data.keys()].filter((k) => !k.includes('/applied/')).sort();
    await assert.rejects(sn.create({ Name: 'bad', Driver: 'fakeplugin' }), /AllocateNetwork: no VNI left/);
    assert.deepEqual([...store.data.keys()].filter((k) => !k.includes('/applied/')).sort(), before, 'nothing written');
    await sn.close();
  });
});

describe('the audit of a host\'s own endpoints (ownDrift)', () => {
  const ep = (id: string, o: Partial<EndpointRecord> = {}): EndpointRecord => ({ Network: 'n1', EndpointID: id, ContainerID: `c-${id}`, Name: id, Aliases: [], IP: `10.0.1.${id.length + 10}`, Mac: '', Node: 'A', Vtep: '10.99.0.1', ...o });
  const view = (o: Partial<OwnView>): OwnView => ({
    me: 'A', mine: new Map(), store: new Map(), networks: new Set(['n1']), claims: new Map(), pending: new Set(), withdrawing: new Set(),
    named: new Set(), claimedAt: new Map(), now: 100_000, leakAfterMs: 30_000, ...o,
  });

  it('finds what the store lacks, what it has that is not held, and what no container holds', () => {
    const a = ep('a', { IP: '10.0.1.2' });
    const b = ep('b', { IP: '10.0.1.3' });
    const c = ep('c', { IP: '10.0.1.4' });
    const found = ownDrift(view({ mine: new Map([['a', a], ['c', c]]), store: new Map([['n1', new Map([['b', b], ['c', c]])]]), named: new Set(['a']) }));
    assert.deepEqual([...found.keys()].sort(), ['extra b', 'leaked c', 'missing a']);
  });

  it('leaves alone a join in flight, a young claim, the ingress sandbox, an address another holds, a network gone, a withdrawal under way, another host\'s endpoint', () => {
    const found = ownDrift(view({
      mine: new Map([
        ['p', ep('p')], ['young', ep('young')], ['sbox', ep('sbox', { ContainerID: INGRESS_SBOX })],
        ['taken', ep('taken', { IP: '10.0.1.50' })], ['gone', ep('gone', { Network: 'n9' })],
      ]),
      named: new Set(['taken', 'gone']),
      pending: new Set(['p', 'q']),
      claimedAt: new Map([['young', 90_000]]),
      claims: new Map([['n1', new Map([['10.0.1.50', { EndpointID: 'other' }]])]]),
      withdrawing: new Set([K.endpoint('n1', 'w')]),
      store: new Map([['n1', new Map([['q', ep('q')], ['w', ep('w')], ['theirs', ep('theirs', { Node: 'B' })], ['sbox', ep('sbox', { ContainerID: INGRESS_SBOX })], ['young', ep('young')]])]]),
    }));
    assert.deepEqual([...found.keys()], []);
  });
});
