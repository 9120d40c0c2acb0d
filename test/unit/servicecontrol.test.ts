import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SK, ServiceControl } from '../../src/cluster/services.js';
import type { Session } from '../../src/cluster/session.js';
import type { NetworkRecord } from '../../src/network/types.js';
import { MemStore } from './memstore.js';

/**
 * ServiceControl's writes against an in-memory store with etcd's compare-and-swap: what concurrent
 * creates and a transaction sent twice by the store's client do to a VIP and a name.
 */

const NET: NetworkRecord = {
  Name: 'svcnet', Id: 'n1', Created: '', Scope: 'swarm', Driver: 'overlay', EnableIPv6: false, IPAM: { Driver: 'default', Options: {}, Config: [{ Subnet: '10.0.1.0/24' }] },
  Internal: false, Attachable: true, Ingress: false, ConfigFrom: { Network: '' }, ConfigOnly: false,
  Options: {}, Labels: {}, pools: [{ subnet: '10.0.1.0/24', gateway: '10.0.1.1', auxAddresses: {}, allocated: {} }],
};

function control(): { store: MemStore; services: ServiceControl; applied: number[] } {
  const store = new MemStore();
  const session = { state: { role: 'manager' }, store } as unknown as Session;
  const services = new ServiceControl(() => session);
  const applied: number[] = [];
  services.hooks = {
    findNetwork: (ref) => (ref === NET.Name || ref === NET.Id ? NET : undefined),
    appliedEverywhere: async (rev) => { applied.push(rev); },
    ingress: () => undefined,
  };
  return { store, services, applied };
}

const spec = (name: string) => ({ Name: name, Mode: { Replicated: { Replicas: 0 } }, TaskTemplate: { ContainerSpec: { Image: 'busybox' }, Networks: [{ Target: 'svcnet' }] } });

describe('service control: the writes of service create, update and remove', () => {
  it('creates at once each get a VIP of their own, none refused', async () => {
    const { store, services } = control();
    const made = await Promise.allSettled(Array.from({ length: 24 }, (_, i) => services.create(spec(`s${i}`))));
    assert.deepEqual(made.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)), []);
    const vips = [...(await store.list<{ Endpoint: { VirtualIPs: Array<{ Addr: string }> } }>(SK.services)).values()].map((v) => v.value.Endpoint.VirtualIPs[0]!.Addr);
    assert.equal(new Set(vips).size, 24, vips.join(' '));
  });

  it("a create sent again by the store's client after its answer was lost is the create's own, not a name taken", async () => {
    const { store, services, applied } = control();
    const realTxn = store.txn.bind(store);
    store.txn = async (cmp, puts, deletes) => {
      await realTxn(cmp, puts, deletes);
      return realTxn(cmp, puts, deletes);
    };
    const { ID } = await services.create(spec('web'));
    assert.equal((await store.get<{ ID: string }>(SK.name('web')))!.value.ID, ID);
    assert.deepEqual(applied, [(await store.get(SK.service(ID)))!.modRevision]);
    store.txn = realTxn;
    await assert.rejects(services.create(spec('web')), /service web already exists/);
  });

  it('an update and a removal sent again after their answers were lost are done, not out of sequence', async () => {
    const { store, services } = control();
    const { ID } = await services.create(spec('web'));
    const realTxn = store.txn.bind(store);
    store.txn = async (cmp, puts, deletes) => {
      await realTxn(cmp, puts, deletes);
      return realTxn(cmp, puts, deletes);
    };
    const version = (await services.inspect(ID)).Version.Index;
    await services.update(ID, version, { ...spec('web'), Labels: { v: '2' } }, false);
    assert.deepEqual((await services.inspect(ID)).Spec.Labels, { v: '2' });
    // Someone else's update in between is still refused.
    store.txn = realTxn;
    await assert.rejects(services.update(ID, version, spec('web'), false), /update out of sequence/);
    store.txn = async (cmp, puts, deletes) => {
      await realTxn(cmp, puts, deletes);
      return realTxn(cmp, puts, deletes);
    };
    await services.remove(ID);
    assert.equal(await store.get(SK.service(ID)), undefined);
  });

  it('finds a service by full id, by name and by a unique id prefix, reading the name and id keys first', async () => {
    const { store, services } = control();
    const { ID } = await services.create(spec('web'));
    const lists = store.lists;
    assert.equal((await services.inspect(ID)).ID, ID);
    assert.equal((await services.inspect('web')).ID, ID);
    assert.equal(store.lists, lists, 'an id or a name read every service');
    assert.equal((await services.inspect(ID.slice(0, 5))).ID, ID);
    await assert.rejects(services.inspect('nope'), /service nope not found/);
  });
});
