import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tellStoreLeaving } from '../../src/cluster/leaving.js';
import { K, type NodeRecord } from '../../src/cluster/keys.js';
import type { Session } from '../../src/cluster/session.js';
import type { ClusterStore } from '../../src/cluster/store.js';
import { MemStore } from './memstore.js';

/**
 * A store of etcd members, each client bound to one host: a host whose member was removed stops
 * answering, as etcd's removed member does, so a call sent to it after its removal fails the test.
 */
class Members {
  readonly data = new MemStore();
  readonly revoked: string[] = [];
  constructor(public members: Array<{ ID: string; host: string }>) {}

  client(host: string): ClusterStore {
    const alive = () => { if (!this.members.some((m) => m.host === host)) throw new Error(`etcdserver: server stopped (${host})`); };
    const c = {
      get: async (k: string) => { alive(); return this.data.get(k); },
      list: async (p: string) => { alive(); return this.data.list(p); },
      members: async () => { alive(); return this.members.map((m) => ({ ID: m.ID, name: m.host, isLearner: false })); },
      removeMember: async (id: string) => { alive(); this.members = this.members.filter((m) => m.ID !== id); },
      update: async (k: string, value: unknown, mod: number) => {
        alive();
        if ((await this.data.get(k))?.modRevision !== mod) return false;
        this.data.write([[k, value]]);
        return true;
      },
      deletePrefix: async (p: string) => { alive(); await this.data.deletePrefix(p); },
      call: <T>(fn: () => Promise<T>) => fn(),
      client: { auth: { userRevokeRole: async (r: { name: string }) => { alive(); this.revoked.push(r.name); } } },
      close: () => undefined,
    };
    return c as unknown as ClusterStore;
  }
}

const record = (id: string, role: 'manager' | 'worker', host: string, memberId?: string) =>
  ({ ID: id, Spec: { Role: role, Availability: 'active', Labels: {} }, Addr: host, ...(memberId ? { MemberId: memberId } : {}) }) as unknown as NodeRecord;

function session(m: Members, id: string, role: 'manager' | 'worker', host: string, opened: string[][]): Session {
  return {
    state: { nodeId: id, role },
    store: m.client(host),
    storeAt: async (hosts: string[]) => { opened.push(hosts); return m.client(hosts[0]!); },
  } as unknown as Session;
}

describe('what a leaving node tells the store', () => {
  it('a manager with a peer: its member goes, then its record and role change through the peer', async () => {
    const m = new Members([{ ID: 'm0', host: 'h0' }, { ID: 'm1', host: 'h1' }]);
    m.data.write([[K.node('n0'), record('n0', 'manager', 'h0', 'm0')], [K.node('n1'), record('n1', 'manager', 'h1', 'm1')]]);
    const opened: string[][] = [];
    await tellStoreLeaving(session(m, 'n0', 'manager', 'h0', opened), { external: false });
    assert.deepEqual(opened, [['h1']]);
    assert.deepEqual(m.members.map((x) => x.ID), ['m1']);
    const after = (await m.data.get<NodeRecord>(K.node('n0')))!.value;
    assert.deepEqual([after.Spec.Role, after.MemberId], ['worker', undefined]);
    assert.deepEqual(m.revoked, ['n0']);
  });

  it('managers lost to a --force-new-cluster do not count: the last member ends the swarm', async () => {
    const m = new Members([{ ID: 'm0', host: 'h0' }]);
    m.data.write([[K.node('n0'), record('n0', 'manager', 'h0', 'm0')], [K.node('n1'), record('n1', 'manager', 'h1', 'm9')]]);
    const opened: string[][] = [];
    await tellStoreLeaving(session(m, 'n0', 'manager', 'h0', opened), { external: false });
    assert.deepEqual(opened, []);
    assert.deepEqual(m.members.map((x) => x.ID), ['m0']);
  });

  it('a worker changes nothing but its own record, through its usual client; a changed record is read again', async () => {
    const m = new Members([{ ID: 'm0', host: 'h0' }]);
    m.data.write([[K.node('n0'), record('n0', 'manager', 'h0', 'm0')], [K.node('n2'), record('n2', 'worker', 'h2')]]);
    const opened: string[][] = [];
    const s = session(m, 'n2', 'worker', 'h0', opened);
    // A label lands between the leaving node's read of its record and its write.
    const get = s.store.get.bind(s.store);
    let reads = 0;
    (s.store as { get: typeof get }).get = async <T>(k: string) => {
      const r = await get<T>(k);
      if (k === K.node('n2') && ++reads === 1) m.data.write([[K.node('n2'), { ...record('n2', 'worker', 'h2'), Spec: { Role: 'worker', Availability: 'active', Labels: { late: '1' } } }]]);
      return r;
    };
    await tellStoreLeaving(s, { external: false });
    assert.deepEqual(opened, []);
    const after = (await m.data.get<NodeRecord>(K.node('n2')))!.value;
    assert.deepEqual([after.Spec.Role, after.Spec.Labels], ['worker', { late: '1' }]);
    // Written over the late change, after a second read (the record had no UpdatedAt before).
    assert.equal(reads, 2);
    assert.ok(after.UpdatedAt);
    assert.deepEqual(m.revoked, []);
  });
});
