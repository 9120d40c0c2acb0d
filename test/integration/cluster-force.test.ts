import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { waitFor } from './harness.js';
import { Lab, waitForOutput, type LabHost } from './lab.js';
import { pidAlive } from '../../src/util/process.js';

/**
 * `docker swarm init --force-new-cluster` on the one manager left of three: the cluster that
 * could take no changes takes them again, with the same swarm, nodes, labels and running
 * containers; the lost managers stay in the list as Unreachable until demoted and removed.
 */

const TTL = 3;

describe('cluster: swarm init --force-new-cluster', () => {
  let lab: Lab;
  let h0: LabHost, h1: LabHost, h2: LabHost, h3: LabHost;

  before(async () => {
    lab = await Lab.create(4, { leaseTtlSec: TTL, seedBusybox: true });
    [h0, h1, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost, LabHost];
    await lab.formSwarm(2);
  });

  after(async () => {
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  const etcdPid = async (h: LabHost) => Number(await fs.readFile(join(h.host.root, 'cluster', 'etcd.pid'), 'utf8').catch(() => '0'));
  const lines = (via: LabHost, fmt = '{{.Hostname}} {{.Status}} {{.ManagerStatus}}') => via.host.docker(['node', 'ls', '--format', fmt]);
  const started = async (h: LabHost, id: string) => {
    const c = (await h.host.api('GET', `/containers/${id}/json`)).json;
    return { running: c.State.Running as boolean, startedAt: c.State.StartedAt as string, pid: c.State.Pid as number };
  };

  it('refuses on a node that is not a manager, and a plain init on a node in a swarm', async () => {
    const w = await h3.host.docker(['swarm', 'init', '--force-new-cluster']);
    assert.notEqual(w.code, 0);
    assert.match(w.stderr, /This node is not a swarm manager\. Worker nodes can't be used to view or modify cluster state/);
    const again = await h0.host.docker(['swarm', 'init']);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /This node is already part of a swarm/);
  });

  it('makes a cluster of the last manager that takes changes again, keeping nodes, labels and containers', { timeout: 240_000 }, async () => {
    const mine = await h0.host.runDetached({ Cmd: ['sleep', '3600'] }, 'survivor');
    const workers = await h3.host.runDetached({ Cmd: ['sleep', '3600'] }, 'on-worker');
    const before = [await started(h0, mine), await started(h3, workers)];
    assert.ok(before.every((b) => b.running));
    const label = await h0.host.docker(['node', 'update', '--label-add', 'before=1', 'lab3']);
    assert.equal(label.code, 0, label.stderr);
    const id = (await h0.host.api('GET', '/info')).json.Swarm.NodeID as string;
    const clusterId = (await h0.host.api('GET', '/swarm')).json.ID as string;

    // Two of three managers gone, berthd and etcd member alike: no quorum.
    for (const h of [h1, h2]) {
      const member = await etcdPid(h);
      await h.host.stopDaemon('SIGKILL');
      process.kill(member, 'SIGKILL');
    }
    await waitForOutput(() => h0.host.docker(['node', 'update', '--label-add', 'no-quorum=1', 'lab3']).then((r) => ({ ...r, code: r.code === 0 ? 1 : 0, stdout: r.stderr })),
      (o) => /The swarm does not have a leader/.test(o), 'changes refused without quorum', 30_000);

    const memberBefore = await etcdPid(h0);
    const f = await h0.host.docker(['swarm', 'init', '--force-new-cluster']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, new RegExp(`Swarm initialized: current node \\(${id}\\) is now a manager\\.`));
    assert.notEqual(await etcdPid(h0), memberBefore, 'the member was not started again');
    assert.ok(pidAlive(await etcdPid(h0)));

    // The same swarm, taking changes again.
    assert.equal((await h0.host.api('GET', '/swarm')).json.ID, clusterId);
    const change = await h0.host.docker(['node', 'update', '--label-add', 'after=1', 'lab3']);
    assert.equal(change.code, 0, change.stderr);
    const labels = (await h0.host.api('GET', '/nodes/lab3')).json.Spec.Labels;
    assert.deepEqual([labels.before, labels.after, labels['no-quorum']], ['1', '1', undefined]);
    const ls = await waitForOutput(() => lines(h0), (o) => /lab0 Ready Leader/.test(o) && /lab3 Ready/.test(o) && /lab1 Down Unreachable/.test(o) && /lab2 Down Unreachable/.test(o),
      'lab0 leading, the worker back, the lost managers unreachable', 30_000);
    assert.equal(ls.trim().split('\n').length, 4);
    // Containers went on running through all of it, on the manager and on the worker.
    const now = [await started(h0, mine), await started(h3, workers)];
    assert.deepEqual(now, before);
    // The worker still reaches the store: its presence and its changes go through.
    const info = (await h3.host.api('GET', '/info')).json.Swarm;
    assert.deepEqual([info.LocalNodeState, info.Error], ['active', '']);
  });

  it('the lost managers are no longer members: they demote and go without a quorum check', async () => {
    for (const n of ['lab1', 'lab2']) {
      const d = await h0.host.docker(['node', 'demote', n]);
      assert.equal(d.code, 0, d.stderr);
      const rm = await h0.host.docker(['node', 'rm', n]);
      assert.equal(rm.code, 0, rm.stderr);
    }
    const ls = await lines(h0);
    assert.deepEqual(ls.stdout.trim().split('\n').map((l) => l.trim()).sort(), ['lab0 Ready Leader', 'lab3 Ready']);
    const i = (await h0.host.api('GET', '/info')).json.Swarm;
    assert.deepEqual([i.Managers, i.Nodes], [1, 2]);
  });

  it('a lost manager that comes back leaves by itself (it was removed) and joins the new cluster as a manager', { timeout: 180_000 }, async () => {
    await h1.host.startDaemon();
    await waitFor(async () => (await h1.host.api('GET', '/info')).json.Swarm.LocalNodeState === 'inactive' && !existsSync(join(h1.host.root, 'cluster')), 'lab1 to leave by itself', 60_000);
    const mt = (await h0.host.docker(['swarm', 'join-token', '-q', 'manager'])).stdout.trim();
    const j = await h1.host.docker(['swarm', 'join', '--token', mt, '--advertise-addr', h1.addr, `${h0.addr}:2377`]);
    assert.equal(j.code, 0, j.stderr);
    await waitForOutput(() => lines(h0), (o) => /lab1 Ready Reachable/.test(o), 'lab1 a reachable manager again', 30_000);
    // The grown cluster takes changes through its new member.
    await waitFor(async () => (await h1.host.docker(['node', 'update', '--label-add', 'grown=1', 'lab3'])).code === 0, 'a change through lab1', 20_000);
    assert.equal((await h0.host.api('GET', '/nodes/lab3')).json.Spec.Labels.grown, '1');
  });
});
