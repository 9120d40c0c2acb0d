import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runOk } from '../../src/util/exec.js';
import { Lab, STORE_ADDR, waitForOutput, type LabHost } from './lab.js';

/**
 * berthd --cluster-store etcd://…: the swarm kept in an etcd that berth does not run (here the
 * lab's own, in the underlay namespace). No node starts a member; joins, presence, node rules and
 * the end of the swarm work the same.
 */
describe('cluster: an external store (--cluster-store)', () => {
  let lab: Lab;
  let h0: LabHost, h1: LabHost, h2: LabHost;

  before(async () => {
    lab = await Lab.create(3, { leaseTtlSec: 3, externalStore: true });
    [h0, h1, h2] = lab.hosts as [LabHost, LabHost, LabHost];
  });

  after(async () => {
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  const ls = async (h: LabHost) => (await h.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'])).stdout.trim().split('\n').map((l) => l.trim()).sort();

  const lsLine = async (h: LabHost) => ({ code: 0, stdout: (await ls(h)).join(', '), stderr: '' });

  it('inits, joins a manager and a worker, and runs no etcd member of its own', async () => {
    const init = await h0.host.docker(['swarm', 'init', '--advertise-addr', h0.addr]);
    assert.equal(init.code, 0, init.stderr);
    const mt = (await h0.host.docker(['swarm', 'join-token', '-q', 'manager'])).stdout.trim();
    const wt = (await h0.host.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
    assert.equal((await h1.host.docker(['swarm', 'join', '--token', mt, '--advertise-addr', h1.addr, `${h0.addr}:2377`])).code, 0);
    assert.equal((await h2.host.docker(['swarm', 'join', '--token', wt, `${h1.addr}:2377`])).code, 0);
    // No raft leader of berth's: the manager whose orchestrator holds the lock is marked Leader.
    await waitForOutput(() => lsLine(h1), (o) => o === 'lab0 Ready Leader, lab1 Ready Reachable, lab2 Ready', 'lab0 Leader', 10_000);
    for (const h of lab.hosts) assert.equal(existsSync(join(h.host.root, 'cluster', 'etcd.pid')), false, `${h.name} started a member`);
    const i = (await h0.host.api('GET', '/info')).json.Swarm;
    assert.deepEqual([i.Managers, i.Nodes, i.LocalNodeState], [2, 3, 'active']);
    // The store's users are its operator's: no spare node ID or etcd user of berth's in it, also
    // after the second that a manager of berth's own store waits to make the next one.
    await new Promise((r) => setTimeout(r, 1500));
    const etcdctl = (args: string[]) => runOk('nsenter', [`--net=/run/netns/${lab.underlay}`, 'etcdctl', `--endpoints=http://${STORE_ADDR}:2379`, ...args]);
    assert.equal((await etcdctl(['get', '--prefix', '--keys-only', '/berth/secret/spare/'])).trim(), '');
    assert.equal((await etcdctl(['user', 'list'])).trim(), '');
  });

  it('a second swarm is refused on the same store', async () => {
    await h2.host.docker(['swarm', 'leave']);
    const r = await h2.host.api('POST', '/swarm/init', { AdvertiseAddr: h2.addr, ListenAddr: '0.0.0.0:2377' });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /^the cluster store already holds swarm [0-9a-z]{25}: join it instead$/);
    assert.equal(existsSync(join(h2.host.root, 'cluster')), false);
  });

  it('a killed berthd shows Down, demote and rm follow the rules, the last manager empties the store', async () => {
    await waitForOutput(() => h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']), (o) => o.includes('lab2 Down'), 'lab2 Down after its leave');
    assert.equal((await h0.host.docker(['node', 'rm', 'lab2'])).code, 0);
    await h1.host.stopDaemon('SIGKILL');
    await waitForOutput(() => h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}} {{.ManagerStatus}}']), (o) => o.includes('lab1 Down Unreachable'), 'lab1 Down', 10_000);
    const rm = await h0.host.docker(['node', 'rm', 'lab1']);
    assert.match(rm.stderr, /is a cluster manager/);
    await h1.host.startDaemon();
    await waitForOutput(() => h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']), (o) => o.includes('lab1 Ready'), 'lab1 back', 15_000);
    // The leader's berthd dies: its lock lapses with its lease and the other manager takes it.
    await h0.host.stopDaemon('SIGKILL');
    await waitForOutput(() => lsLine(h1), (o) => o === 'lab0 Down Unreachable, lab1 Ready Leader', 'lab1 Leader', 20_000);
    await h0.host.startDaemon();
    await waitForOutput(() => lsLine(h1), (o) => o === 'lab0 Ready Reachable, lab1 Ready Leader', 'lab0 back', 15_000);
    assert.equal((await h0.host.docker(['node', 'demote', 'lab1'])).code, 0);
    const last = await h0.host.docker(['node', 'demote', 'lab0']);
    assert.match(last.stderr, /attempting to demote the last manager of the swarm/);
    assert.equal((await h1.host.docker(['swarm', 'leave'])).code, 0);
    assert.equal((await h0.host.docker(['swarm', 'leave', '--force'])).code, 0);
    // The store no longer holds a swarm: a new one can be made on it.
    const again = await h2.host.docker(['swarm', 'init', '--advertise-addr', h2.addr]);
    assert.equal(again.code, 0, again.stderr);
    await waitForOutput(() => lsLine(h2), (o) => o === 'lab2 Ready Leader', 'lab2 alone leads', 10_000);
    assert.equal((await h2.host.docker(['swarm', 'leave', '--force'])).code, 0);
  });
});
