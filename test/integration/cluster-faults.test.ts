import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { waitFor } from './harness.js';
import { Lab, waitForOutput, type LabHost } from './lab.js';
import { pidAlive } from '../../src/util/process.js';

/**
 * Faults in a swarm of three managers and a worker: berthd killed with -9, an etcd member killed
 * with -9, a manager lost altogether, a worker cut off the underlay. The cluster must go on, show
 * what is down within the lease TTL, and take each node back when it returns.
 */

const TTL = 3;
/** The TTL, plus etcd's lease-expiry sweep and a node ls round. */
const DOWN_MS = (TTL + 4) * 1000;

describe('cluster: faults', () => {
  let lab: Lab;
  let h0: LabHost, h1: LabHost, h2: LabHost, h3: LabHost;

  before(async () => {
    lab = await Lab.create(4, { leaseTtlSec: TTL, seedBusybox: true });
    [h0, h1, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost, LabHost];
    const init = await h0.host.docker(['swarm', 'init', '--advertise-addr', h0.addr]);
    assert.equal(init.code, 0, init.stderr);
    const mt = (await h0.host.docker(['swarm', 'join-token', '-q', 'manager'])).stdout.trim();
    const wt = (await h0.host.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
    // The worker joins while lab0 is the only manager: it must learn of the others by itself to
    // survive lab0's loss below.
    const w = await h3.host.docker(['swarm', 'join', '--token', wt, `${h0.addr}:2377`]);
    assert.equal(w.code, 0, w.stderr);
    for (const h of [h1, h2]) {
      const r = await h.host.docker(['swarm', 'join', '--token', mt, '--advertise-addr', h.addr, `${h0.addr}:2377`]);
      assert.equal(r.code, 0, r.stderr);
    }
    assert.deepEqual(await states(h0), ['lab0 Ready Leader', 'lab1 Ready Reachable', 'lab2 Ready Reachable', 'lab3 Ready']);
  });

  after(async () => {
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  async function states(h: LabHost): Promise<string[]> {
    const r = await h.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}} {{.ManagerStatus}}']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim().split('\n').map((l) => l.trim()).sort();
  }
  const waitState = (h: LabHost, line: string | RegExp, ms: number) => waitForOutput(
    () => h.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}} {{.ManagerStatus}}']),
    (o) => o.split('\n').some((l) => (typeof line === 'string' ? l.trim() === line : line.test(l.trim()))), `"${line}" in node ls on ${h.name}`, ms);
  const fetchWorkerState = async () => JSON.parse(await fs.readFile(join(h3.host.root, 'cluster', 'state.json'), 'utf8')) as { endpoints: string[] };
  const etcdPid = async (h: LabHost) => Number(await fs.readFile(join(h.host.root, 'cluster', 'etcd.pid'), 'utf8').catch(() => '0'));
  /** A change through one manager, read back through another: the cluster takes writes. */
  async function writes(via: LabHost, check: LabHost, label: string): Promise<void> {
    const r = await via.host.docker(['node', 'update', '--label-add', label, 'lab3']);
    assert.equal(r.code, 0, r.stderr);
    const n = await check.host.api('GET', '/nodes/lab3');
    assert.equal(n.status, 200, n.body);
    assert.ok(label.split('=')[0]! in n.json.Spec.Labels, `label ${label} not seen through ${check.name}`);
  }

  it("a manager's berthd killed with -9 shows Down within the TTL and comes back; its etcd member lives on", async () => {
    const member = await etcdPid(h1);
    assert.ok(member > 0 && pidAlive(member));
    const t0 = Date.now();
    await h1.host.stopDaemon('SIGKILL');
    await waitState(h0, 'lab1 Down Unreachable', DOWN_MS);
    assert.ok(Date.now() - t0 <= DOWN_MS, `Down after ${Date.now() - t0} ms`);
    assert.ok(pidAlive(member), 'the etcd member died with berthd');
    await writes(h0, h2, 'after-kill=1');
    await h1.host.startDaemon();
    await waitState(h0, 'lab1 Ready Reachable', 15_000);
    assert.equal(await etcdPid(h1), member, 'the restarted berthd did not adopt its running member');
    assert.deepEqual(await states(h1), ['lab0 Ready Leader', 'lab1 Ready Reachable', 'lab2 Ready Reachable', 'lab3 Ready']);
  });

  it("a manager's etcd member killed with -9 is started again by berthd", async () => {
    const before = await etcdPid(h2);
    process.kill(before, 'SIGKILL');
    const after = await waitFor(async () => {
      const p = await etcdPid(h2);
      return p !== before && p > 0 && pidAlive(p) ? p : undefined;
    }, 'a new etcd member on lab2', 15_000);
    assert.notEqual(after, before);
    // Its member serves again: a write through lab2 is read back through lab0.
    await waitFor(async () => (await h2.host.docker(['node', 'update', '--label-add', 'etcd-restarted=1', 'lab3'])).code === 0, 'a write through lab2', 15_000);
    assert.equal((await h0.host.api('GET', '/nodes/lab3')).json.Spec.Labels['etcd-restarted'], '1');
  });

  it('losing one of three managers, the leader that made the swarm: the cluster goes on', async () => {
    // Long enough for every node to have learnt all three members (they refresh every 5 s).
    await new Promise((r) => setTimeout(r, 6000));
    const member = await etcdPid(h0);
    await h0.host.stopDaemon('SIGKILL');
    process.kill(member, 'SIGKILL');
    await waitState(h1, 'lab0 Down Unreachable', DOWN_MS);
    await writes(h1, h2, 'two-of-three=1');
    await writes(h2, h1, 'still-two=1');
    const now = await states(h2);
    assert.equal(now.filter((l) => l.endsWith('Leader')).length, 1, `one new leader: ${now.join(', ')}`);
    assert.ok(now.includes('lab0 Down Unreachable'), now.join(', '));
    // The worker that knew only lab0 at its join keeps its presence through the others.
    await new Promise((r) => setTimeout(r, (TTL + 2) * 1000));
    assert.ok((await states(h1)).includes('lab3 Ready'), 'the worker lost the store with lab0');
    assert.equal((await fetchWorkerState()).endpoints.length, 3);
    // It comes back: berthd starts its member again from the data on disk.
    await h0.host.startDaemon();
    await waitState(h1, 'lab0 Ready Reachable', 20_000);
    assert.ok(pidAlive(await etcdPid(h0)));
    await waitFor(async () => (await h0.host.docker(['node', 'ls'])).code === 0, 'lab0 to answer for the cluster again', 15_000);
  });

  it('losing two of three managers: reads keep working, changes are refused, all comes back', async () => {
    assert.equal((await h0.host.docker(['network', 'create', '-d', 'overlay', '--attachable', 'noquorum'])).code, 0);
    assert.equal((await h0.host.docker(['service', 'create', '--detach', '--name', 'nqlogs', '--constraint', 'node.hostname==lab3', 'busybox', 'sleep', '600'])).code, 0);
    await waitForOutput(() => h0.host.docker(['service', 'ps', 'nqlogs', '--format', '{{.CurrentState}}']), (o) => o.startsWith('Running'), 'the task running on lab3', 30_000);
    const members = [await etcdPid(h1), await etcdPid(h2)];
    await h1.host.stopDaemon('SIGKILL');
    await h2.host.stopDaemon('SIGKILL');
    for (const p of members) process.kill(p, 'SIGKILL');
    // Whatever fails here, the managers come back: the tests after this one need them.
    try {
      // Reads: served from lab0's own member, liveness it cannot check shown as unknown.
      const seen = await waitForOutput(() => h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']),
        (o) => o.includes('lab0 Ready') && o.includes('lab1 Unknown'), 'node ls without quorum', 20_000);
      assert.equal(seen.trim().split('\n').length, 4);
      const i = (await h0.host.api('GET', '/info')).json.Swarm;
      assert.equal(i.Nodes, 4);
      assert.match(i.Error, /The swarm does not have a leader/);
      const change = await h0.host.docker(['node', 'update', '--label-add', 'no-quorum=1', 'lab3']);
      assert.notEqual(change.code, 0);
      assert.match(change.stderr, /The swarm does not have a leader/);
      // A container's join of a swarm network cannot be written either: Docker's 503, never the
      // store client's own words (the lease grant's gRPC deadline, or the client's circuit breaker
      // "Execution prevented…", was a 500).
      const started = await h0.host.api('POST', '/containers/create?name=nq', { Image: 'busybox', Cmd: ['sleep', '60'], HostConfig: { NetworkMode: 'noquorum' } });
      assert.equal(started.status, 201, started.body);
      const refused = await h0.host.api('POST', '/containers/nq/start');
      assert.equal(refused.status, 503, refused.body);
      assert.match(refused.body, /does not have a leader|cannot be reached from this node/);
      assert.equal((await h0.host.api('DELETE', '/containers/nq?force=1')).status, 204);
      // `service logs` reads, but asks another node (the worker runs the task) through a lease of
      // its own, which needs quorum.
      const logs = await h0.host.docker(['service', 'logs', 'nqlogs']);
      assert.notEqual(logs.code, 0, `service logs without quorum: ${logs.stdout}${logs.stderr}`);
      assert.match(logs.stderr, /The swarm does not have a leader/);
    } finally {
      await h1.host.startDaemon();
      await h2.host.startDaemon();
    }
    // Any of the three may lead once quorum is back.
    await waitState(h0, /^lab1 Ready (Reachable|Leader)$/, 30_000);
    await waitState(h0, /^lab2 Ready (Reachable|Leader)$/, 30_000);
    await waitFor(async () => (await h0.host.docker(['node', 'update', '--label-add', 'quorum-back=1', 'lab3'])).code === 0, 'a change once quorum is back', 20_000);
    const labels = (await h2.host.api('GET', '/nodes/lab3')).json.Spec.Labels;
    assert.equal(labels['quorum-back'], '1');
    assert.equal(labels['no-quorum'], undefined, 'a refused change was applied after all');
    await waitFor(async () => (await h0.host.docker(['service', 'rm', 'nqlogs'])).code === 0, 'the service removed', 20_000);
    await waitFor(async () => (await h0.host.docker(['network', 'rm', 'noquorum'])).code === 0, 'the network removed', 20_000);
  });

  /** etcdctl inside a manager's namespace, with its node certificate, against its own member. */
  const etcdctlArgs = (h: LabHost) => {
    const tls = join(h.host.root, 'cluster', 'tls');
    return [`--net=${h.host.netnsPath}`, 'etcdctl', '--endpoints=https://127.0.0.1:2379', `--cacert=${join(tls, 'ca.crt')}`, `--cert=${join(tls, 'node.crt')}`, `--key=${join(tls, 'node.key')}`];
  };

  /** The manager whose etcd member leads now, by etcd's own member status. */
  async function etcdLeader(): Promise<LabHost> {
    const r = await h1.host.inNetns('etcdctl', [...etcdctlArgs(h1).slice(2), 'endpoint', 'status', '--cluster', '-w', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const all = JSON.parse(r.stdout) as Array<{ Endpoint: string; Status: { header: { member_id: number }; leader: number } }>;
    const leader = all.find((e) => String(e.Status.header.member_id) === String(e.Status.leader));
    assert.ok(leader, `no member leads: ${r.stdout}`);
    const h = [h0, h1, h2].find((x) => leader.Endpoint === `https://${x.addr}:2379`);
    assert.ok(h, `the leader ${leader.Endpoint} is no manager of the lab`);
    return h;
  }

  it("the etcd leader's manager cut off: every other node keeps its presence the whole time, the cut-off one goes Down", async () => {
    for (const n of ['lab0', 'lab1', 'lab2']) await waitState(h0, new RegExp(`^${n} Ready (Reachable|Leader)$`), 20_000);
    await waitState(h0, 'lab3 Ready', 20_000);
    const cut = await etcdLeader();
    const others = [h0, h1, h2, h3].filter((h) => h !== cut);
    const observer = others.find((h) => h !== h3)!;
    const ids = new Map<string, string>();
    for (const h of [h0, h1, h2, h3]) ids.set(((await h.host.api('GET', '/info')).json.Swarm.NodeID) as string, h.name);
    // A watch of the presence keys, through a manager that stays: a key that vanishes, even for a
    // moment between two polls of node ls, shows as a DELETE here.
    const watch = spawn('nsenter', [...etcdctlArgs(observer), 'watch', '--prefix', '/berth/v1/alive/'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let events = '';
    watch.stdout!.on('data', (d: Buffer) => { events += d.toString(); });
    watch.stderr!.on('data', (d: Buffer) => { events += d.toString(); });
    const deletes = () => [...events.matchAll(/^DELETE\n(\S+)$/gm)].map((m) => ids.get(m[1]!.slice('/berth/v1/alive/'.length)) ?? m[1]!);
    const seen: string[] = [];
    const unknown: string[] = [];
    try {
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(watch.exitCode, null, `etcdctl watch: ${events}`);
      await lab.partition(cut);
      const t0 = Date.now();
      let polls = 0;
      let down = '';
      try {
        // Longer than the TTL by far: a lease kept on a dead connection would have lapsed.
        while (Date.now() - t0 < (TTL * 2 + 2) * 1000) {
          const r = await observer.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']);
          polls++;
          const lines = r.stdout.trim().split('\n').map((l) => l.trim());
          const at = Date.now() - t0;
          for (const h of others) {
            // While the remaining members elect a leader the observer cannot check liveness and
            // says Unknown (Docker's node ls fails then): only within the election's window.
            if (lines.includes(`${h.name} Unknown`) && at < DOWN_MS) unknown.push(`${at} ms: ${h.name}`);
            else if (r.code !== 0 || !lines.includes(`${h.name} Ready`)) seen.push(`${at} ms: ${r.code} ${r.stdout}${r.stderr}`.trim());
          }
          await new Promise((r) => setTimeout(r, 200));
        }
        down = await waitState(observer, new RegExp(`^${cut.name} Down`), DOWN_MS).then(() => '', (e: Error) => e.message);
      } finally {
        await lab.heal(cut);
      }
      assert.ok(polls >= 5, `only ${polls} polls of node ls ran`);
      assert.deepEqual(seen, [], `live nodes not Ready on ${observer.name} while ${cut.name} was cut off (Unknown during the election: ${unknown.join(', ') || 'never'})`);
      assert.equal(down, '', `${cut.name} not Down on ${observer.name}`);
      // The probe ran: it saw the cut-off node's key go, and no other.
      assert.ok(deletes().includes(cut.name), `the watch never saw ${cut.name}'s presence go: ${events}`);
      assert.deepEqual(deletes().filter((n) => n !== cut.name), [], `presence keys of live nodes vanished: ${events}`);
    } finally {
      watch.kill();
    }
    await waitState(observer, new RegExp(`^${cut.name} Ready`), 30_000);
  });

  it('a worker cut off the underlay shows Down within the TTL and Ready when the link is back', async () => {
    const t0 = Date.now();
    await lab.partition(h3);
    try {
      await waitState(h0, 'lab3 Down', DOWN_MS);
      assert.ok(Date.now() - t0 <= DOWN_MS, `Down after ${Date.now() - t0} ms`);
    } finally {
      await lab.heal(h3);
    }
    await waitState(h0, 'lab3 Ready', 20_000);
    // Its labels (the record) survived the outage: only presence went and came back.
    assert.equal((await h0.host.api('GET', '/nodes/lab3')).json.Spec.Labels['two-of-three'], '1');
  });

  it("a demotion counts quorum by etcd's members: allowed while a manager's berthd is down but its member lives, refused once that member is gone too", async () => {
    for (const n of ['lab0', 'lab1', 'lab2']) await waitState(h0, new RegExp(`^${n} Ready (Reachable|Leader)$`), 30_000);
    /** Whether lab1's member votes (a promoted node's member joins as a learner first). */
    const lab1Votes = async () => {
      const r = await h0.host.inNetns('etcdctl', [...etcdctlArgs(h0).slice(2), 'member', 'list', '-w', 'json']);
      assert.equal(r.code, 0, r.stderr);
      const id = ((await h0.host.api('GET', '/nodes/lab1')).json as { ID: string }).ID;
      return (JSON.parse(r.stdout) as { members: Array<{ name: string; isLearner?: boolean }> }).members.some((m) => m.name === id && !m.isLearner);
    };
    await h2.host.stopDaemon('SIGKILL');
    try {
      await waitState(h0, /^lab2 Down/, DOWN_MS);
      // lab2's member outlives its berthd: without lab1, lab0's and lab2's members still make a quorum.
      const demoted = await h0.host.docker(['node', 'demote', 'lab1']);
      assert.equal(demoted.code, 0, demoted.stderr);
      const promoted = await h0.host.docker(['node', 'promote', 'lab1']);
      assert.equal(promoted.code, 0, promoted.stderr);
      await waitFor(lab1Votes, "lab1's member voting again", 30_000);
      // Now lab2's member goes too: without lab1, lab0's would be one of two.
      process.kill(await etcdPid(h2), 'SIGKILL');
      const refused = await h0.host.docker(['node', 'demote', 'lab1']);
      assert.notEqual(refused.code, 0, 'a demotion that loses quorum went through');
      assert.match(refused.stderr, /can't remove member from the raft: this would result in a loss of quorum/);
      assert.ok(await lab1Votes(), "the refused demotion removed lab1's member");
      // lab1's member may have become etcd's leader meanwhile: Leader is as good as Reachable here.
      const after = await states(h0);
      assert.ok(after.some((l) => /^lab1 Ready (Reachable|Leader)$/.test(l)), after.join(', '));
    } finally {
      await h2.host.startDaemon();
    }
    await waitState(h0, /^lab2 Ready (Reachable|Leader)$/, 30_000);
  });
});
