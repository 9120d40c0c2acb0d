import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { waitFor } from './harness.js';
import { Lab, waitForOutput, type LabHost } from './lab.js';

/**
 * A swarm of berth hosts through the real docker CLI and the Engine API: init, join as worker and
 * manager, tokens, node updates, promote and demote, leave, and Docker's errors for each wrong
 * move, with nothing half-made after a refused one. One lab of three hosts for the whole file.
 */

const TTL = 3;

describe('cluster: swarm init, join, leave and nodes', () => {
  let lab: Lab;
  let h0: LabHost, h1: LabHost, h2: LabHost;
  let workerToken = '', managerToken = '';

  before(async () => {
    lab = await Lab.create(3, { leaseTtlSec: TTL });
    [h0, h1, h2] = lab.hosts as [LabHost, LabHost, LabHost];
  });

  after(async () => {
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  const ls = async (h: LabHost) => {
    const r = await h.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}} {{.ManagerStatus}} {{.Availability}}']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim().split('\n').sort();
  };
  const info = async (h: LabHost) => (await h.host.api('GET', '/info')).json.Swarm;
  const clusterDir = (h: LabHost) => join(h.host.root, 'cluster');

  it('answers as Docker 20.10 on a node in no swarm', async () => {
    const s = await h0.host.api('GET', '/swarm');
    assert.equal(s.status, 503);
    assert.match(s.json.message, /^This node is not a swarm manager\. Use "docker swarm init"/);
    const l = await h0.host.api('POST', '/swarm/leave');
    assert.deepEqual([l.status, l.json.message], [503, 'This node is not part of a swarm']);
    assert.equal((await h0.host.api('GET', '/nodes')).status, 503);
    assert.equal((await info(h0)).LocalNodeState, 'inactive');
  });

  it('refuses an advertise address this host lacks, and makes nothing', async () => {
    const r = await h0.host.docker(['swarm', 'init', '--advertise-addr', '10.99.0.77']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /must specify a listening address because the address to advertise is not recognized as a system address/);
    const pool = await h0.host.api('POST', '/swarm/init', { AdvertiseAddr: h0.addr, ListenAddr: '0.0.0.0:2377', DefaultAddrPool: ['nonsense'] });
    assert.deepEqual([pool.status, pool.json.message], [400, 'invalid default address pool nonsense']);
    const named = await h0.host.api('POST', '/swarm/init', { AdvertiseAddr: h0.addr, ListenAddr: '0.0.0.0:2377', Spec: { Name: 'other' } });
    assert.deepEqual([named.status, named.json.message], [400, 'swarm spec must be named "default"']);
    assert.equal(existsSync(clusterDir(h0)), false);
    assert.equal((await info(h0)).LocalNodeState, 'inactive');
  });

  it('inits a swarm with the docker CLI and refuses a second init', async () => {
    const r = await h0.host.docker(['swarm', 'init', '--advertise-addr', h0.addr]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Swarm initialized: current node \(([0-9a-z]{25})\) is now a manager\./);
    assert.match(r.stdout, new RegExp(`docker swarm join --token SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25} ${h0.addr.replace(/\./g, '\\.')}:2377`));
    const again = await h0.host.docker(['swarm', 'init', '--advertise-addr', h0.addr]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /This node is already part of a swarm\. Use "docker swarm leave" to leave this swarm and join another one\./);
    const i = await info(h0);
    assert.equal(i.LocalNodeState, 'active');
    assert.equal(i.ControlAvailable, true);
    assert.equal(i.NodeAddr, h0.addr);
    assert.equal(i.Managers, 1);
    assert.equal(i.Nodes, 1);
    assert.match(i.Cluster.ID, /^[0-9a-z]{25}$/);
    assert.deepEqual(i.RemoteManagers, [{ NodeID: i.NodeID, Addr: `${h0.addr}:2377` }]);
    workerToken = (await h0.host.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
    managerToken = (await h0.host.docker(['swarm', 'join-token', '-q', 'manager'])).stdout.trim();
    assert.match(workerToken, /^SWMTKN-1-/);
    assert.notEqual(workerToken, managerToken);
    // Both tokens pin the same CA.
    assert.equal(workerToken.split('-')[2], managerToken.split('-')[2]);
    const swarm = (await h0.host.api('GET', '/swarm')).json;
    assert.equal(swarm.JoinTokens.Worker, workerToken);
    assert.equal(swarm.Spec.Name, 'default');
    assert.match(swarm.TLSInfo.TrustRoot, /BEGIN CERTIFICATE/);
    assert.deepEqual((await h0.host.api('GET', '/swarm/unlockkey')).json, { UnlockKey: '' });
  });

  it('refuses to demote the last manager, and a manager leaving without --force', async () => {
    const d = await h0.host.docker(['node', 'demote', 'lab0']);
    assert.notEqual(d.code, 0);
    assert.match(d.stderr, /rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm/);
    const l = await h0.host.docker(['swarm', 'leave']);
    assert.notEqual(l.code, 0);
    assert.match(l.stderr, /You are attempting to leave the swarm on a node that is participating as a manager\. Removing the last manager erases all current state of the swarm\. Use `--force` to ignore this message\./);
    assert.deepEqual(await ls(h0), ['lab0 Ready Leader Active']);
  });

  it('refuses bad tokens and unreachable managers, leaving nothing behind', async () => {
    const wrong = workerToken.replace(/-[0-9a-z]{25}$/, `-${'0'.repeat(25)}`);
    const bad = await h1.host.docker(['swarm', 'join', '--token', wrong, `${h0.addr}:2377`]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster/);
    const foreignCa = workerToken.replace(/^SWMTKN-1-[0-9a-z]{50}/, `SWMTKN-1-${'1'.repeat(50)}`);
    const other = await h1.host.docker(['swarm', 'join', '--token', foreignCa, `${h0.addr}:2377`]);
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /remote CA does not match fingerprint/);
    const malformed = await h1.host.api('POST', '/swarm/join', { JoinToken: 'SWMTKN-1-nope', RemoteAddrs: [`${h0.addr}:2377`] });
    assert.deepEqual([malformed.status, malformed.json.message], [500, 'invalid join token']);
    const none = await h1.host.api('POST', '/swarm/join', { JoinToken: workerToken, RemoteAddrs: [] });
    assert.deepEqual([none.status, none.json.message], [400, 'at least 1 RemoteAddr is required to join']);
    // h2 is in no swarm: nothing listens on its control port.
    const refused = await h1.host.docker(['swarm', 'join', '--token', workerToken, `${h2.addr}:2377`]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /rpc error: code = Unavailable desc = connection error: .*connect: connection refused/);
    assert.equal((await info(h1)).LocalNodeState, 'inactive');
    assert.equal(existsSync(clusterDir(h1)), false, 'a refused join left cluster state behind');
    assert.deepEqual(await ls(h0), ['lab0 Ready Leader Active']);
  });

  it('joins a worker with the CLI and a manager through the API', async () => {
    const w = await h1.host.docker(['swarm', 'join', '--token', workerToken, `${h0.addr}:2377`]);
    assert.equal(w.code, 0, w.stderr);
    assert.match(w.stdout, /This node joined a swarm as a worker\./);
    const twice = await h1.host.docker(['swarm', 'join', '--token', workerToken, `${h0.addr}:2377`]);
    assert.match(twice.stderr, /This node is already part of a swarm/);
    const m = await h2.host.api('POST', '/swarm/join', { JoinToken: managerToken, RemoteAddrs: [`${h0.addr}:2377`], AdvertiseAddr: h2.addr, ListenAddr: '0.0.0.0:2377' });
    assert.equal(m.status, 200, m.body);
    assert.deepEqual(await ls(h0), ['lab0 Ready Leader Active', 'lab1 Ready  Active', 'lab2 Ready Reachable Active']);
    // The new manager answers for the cluster too; the worker may not.
    assert.deepEqual(await ls(h2), ['lab0 Ready Leader Active', 'lab1 Ready  Active', 'lab2 Ready Reachable Active']);
    const wl = await h1.host.docker(['node', 'ls']);
    assert.notEqual(wl.code, 0);
    assert.match(wl.stderr, /This node is not a swarm manager\. Worker nodes can't be used to view or modify cluster state\./);
    const wi = await info(h1);
    assert.deepEqual([wi.LocalNodeState, wi.ControlAvailable, wi.Cluster, wi.Nodes], ['active', false, undefined, undefined]);
    assert.equal((await info(h0)).Managers, 2);
  });

  it("keeps the CA key and tokens from workers: etcd's own access rules, by certificate", async () => {
    const etcdctl = (h: LabHost, key: string) => h.host.inNetns('etcdctl', [
      `--endpoints=https://${h0.addr}:2379`, `--cacert=${join(clusterDir(h), 'tls', 'ca.crt')}`,
      `--cert=${join(clusterDir(h), 'tls', 'node.crt')}`, `--key=${join(clusterDir(h), 'tls', 'node.key')}`, 'get', '--print-value-only', key,
    ]);
    const worker = await etcdctl(h1, '/berth/secret/ca');
    assert.notEqual(worker.code, 0);
    assert.match(worker.stderr, /permission denied/);
    assert.match((await etcdctl(h1, '/berth/v1/cluster')).stdout, /"CaCert"/);
    assert.match((await etcdctl(h2, '/berth/secret/ca')).stdout, /BEGIN PRIVATE KEY/);
    // Without a certificate the store does not answer at all.
    const anon = await h1.host.inNetns('etcdctl', [`--endpoints=https://${h0.addr}:2379`, `--cacert=${join(clusterDir(h1), 'tls', 'ca.crt')}`, '--dial-timeout=2s', '--command-timeout=3s', 'get', '/berth/v1/cluster']);
    assert.notEqual(anon.code, 0);
  });

  it('updates a node: availability, labels, and refuses a stale version', async () => {
    assert.equal((await h0.host.docker(['node', 'update', '--availability', 'drain', '--label-add', 'zone=a', 'lab1'])).code, 0);
    const n = (await h0.host.api('GET', '/nodes/lab1')).json;
    assert.deepEqual([n.Spec.Availability, n.Spec.Labels, n.Spec.Role, n.Status.Addr], ['drain', { zone: 'a' }, 'worker', h1.addr]);
    const stale = await h0.host.api('POST', `/nodes/${n.ID}/update?version=${n.Version.Index - 1}`, { ...n.Spec, Availability: 'active' });
    assert.deepEqual([stale.status, stale.json.message], [500, 'rpc error: code = Unknown desc = update out of sequence']);
    const ok = await h2.host.api('POST', `/nodes/${n.ID}/update?version=${n.Version.Index}`, { ...n.Spec, Availability: 'active', Labels: {} });
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual((await h0.host.api('GET', `/nodes/${n.ID}`)).json.Spec.Labels, {});
    const missing = await h0.host.api('GET', '/nodes/nosuchnode');
    assert.deepEqual([missing.status, missing.json.message], [404, 'node nosuchnode not found']);
  });

  it('promotes a worker (its etcd member starts) and demotes it again (the member goes)', async () => {
    const pidFile = join(clusterDir(h1), 'etcd.pid');
    const p = await h0.host.docker(['node', 'promote', 'lab1']);
    assert.equal(p.code, 0, p.stderr);
    await waitForOutput(() => h0.host.docker(['node', 'ls', '--filter', 'role=manager', '--format', '{{.Hostname}} {{.ManagerStatus}}']),
      (o) => o.includes('lab1 Reachable'), 'lab1 to be a reachable manager', 30_000);
    assert.equal(existsSync(pidFile), true);
    assert.equal((await info(h0)).Managers, 3);
    const l1 = await h1.host.docker(['node', 'ls']);
    assert.equal(l1.code, 0, `a promoted node answers for the cluster: ${l1.stderr}`);
    const d = await h2.host.docker(['node', 'demote', 'lab1']);
    assert.equal(d.code, 0, d.stderr);
    await waitFor(async () => !existsSync(pidFile), 'lab1 to stop its member', 15_000);
    assert.deepEqual(await ls(h0), ['lab0 Ready Leader Active', 'lab1 Ready  Active', 'lab2 Ready Reachable Active']);
    assert.equal((await info(h0)).Managers, 2);
  });

  it('removes only nodes that are down; a worker that leaves shows Down', async () => {
    const live = await h0.host.docker(['node', 'rm', 'lab1']);
    assert.notEqual(live.code, 0);
    assert.match(live.stderr, /rpc error: code = FailedPrecondition desc = node [0-9a-z]{25} is not down and can't be removed/);
    const mgr = await h0.host.docker(['node', 'rm', 'lab2']);
    assert.match(mgr.stderr, /is a cluster manager and is a member of the raft cluster\. It must be demoted to worker before removal/);
    const left = await h1.host.docker(['swarm', 'leave']);
    assert.equal(left.code, 0, left.stderr);
    assert.match(left.stdout, /Node left the swarm\./);
    assert.equal(existsSync(clusterDir(h1)), false);
    await waitForOutput(() => h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']), (o) => o.includes('lab1 Down'), 'lab1 Down');
    assert.equal((await h0.host.docker(['node', 'rm', 'lab1'])).code, 0);
    assert.deepEqual(await ls(h0), ['lab0 Ready Leader Active', 'lab2 Ready Reachable Active']);
  });

  it('rotates the worker token: the old one is refused, the new one works', async () => {
    const r = await h0.host.docker(['swarm', 'join-token', '--rotate', '-q', 'worker']);
    assert.equal(r.code, 0, r.stderr);
    const fresh = r.stdout.trim();
    assert.notEqual(fresh, workerToken);
    assert.equal((await h2.host.api('GET', '/swarm')).json.JoinTokens.Worker, fresh);
    const old = await h1.host.docker(['swarm', 'join', '--token', workerToken, `${h0.addr}:2377`]);
    assert.match(old.stderr, /A valid join token is necessary to join this cluster/);
    assert.equal(existsSync(clusterDir(h1)), false);
    const ok = await h1.host.docker(['swarm', 'join', '--token', fresh, `${h0.addr}:2377`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await h1.host.docker(['swarm', 'leave'])).code, 0);
    const swarm = (await h0.host.api('GET', '/swarm')).json;
    const stale = await h0.host.api('POST', `/swarm/update?version=${swarm.Version.Index - 1}`, swarm.Spec);
    assert.deepEqual([stale.status, stale.json.message], [500, 'rpc error: code = Unknown desc = update out of sequence']);
  });

  it('a manager leaves with --force and the other goes on; the last one ends the swarm', async () => {
    const l = await h2.host.docker(['swarm', 'leave']);
    assert.match(l.stderr, /You are attempting to leave the swarm on a node that is participating as a manager\./);
    // Its certificate outlives the leave (a copy could be kept): it must open no more than a worker's.
    const kept = join(h2.host.root, 'left-tls');
    await cp(join(clusterDir(h2), 'tls'), kept, { recursive: true });
    assert.equal((await h2.host.docker(['swarm', 'leave', '--force'])).code, 0);
    assert.equal(existsSync(clusterDir(h2)), false);
    // Written at once, through the member that stays: no wait for the record.
    assert.match((await h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'])).stdout, /^lab2 \S+\s*$/m);
    const secret = await h0.host.inNetns('etcdctl', [`--endpoints=https://${h0.addr}:2379`, `--cacert=${join(kept, 'ca.crt')}`, `--cert=${join(kept, 'node.crt')}`, `--key=${join(kept, 'node.key')}`, 'get', '--print-value-only', '/berth/secret/ca']);
    assert.match(secret.stderr, /permission denied/);
    await waitForOutput(() => h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}} {{.ManagerStatus}}']), (o) => /lab2 Down\s*$/m.test(o), 'lab2 down as a worker');
    assert.equal((await info(h0)).Managers, 1);
    // The remaining single member still has quorum: changes go through.
    assert.equal((await h0.host.docker(['node', 'update', '--label-add', 'still=here', 'lab0'])).code, 0);
    assert.equal((await h0.host.docker(['swarm', 'leave', '--force'])).code, 0);
    assert.equal((await info(h0)).LocalNodeState, 'inactive');
    assert.equal(existsSync(clusterDir(h0)), false);
    assert.equal((await h0.host.api('GET', '/swarm')).status, 503);
  });

  it("berth's own CLI does the same: init, join, node ls/update/promote/demote/rm, leave", async () => {
    const b = (h: LabHost, args: string[]) => h.host.berth(args);
    const init = await b(h0, ['swarm', 'init', '--advertise-addr', h0.addr]);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, /Swarm initialized: current node \([0-9a-z]{25}\) is now a manager\./);
    const token = (await b(h0, ['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
    assert.match(token, /^SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}$/);
    const join = await b(h1, ['swarm', 'join', '--token', token, `${h0.addr}:2377`]);
    assert.equal(join.code, 0, join.stderr);
    assert.equal(join.stdout, 'This node joined a swarm as a worker.\n');
    const table = await b(h0, ['node', 'ls']);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split('\n');
    assert.match(lines[0]!, /^ID\s+HOSTNAME\s+STATUS\s+AVAILABILITY\s+MANAGER STATUS\s+ENGINE VERSION$/);
    assert.match(lines[1]!, /^[0-9a-z]{25} \*\s+lab0\s+Ready\s+Active\s+Leader\s+/);
    assert.match(lines[2]!, /^[0-9a-z]{25}\s+lab1\s+Ready\s+Active\s+\S/);
    assert.equal((await b(h0, ['node', 'update', '--label-add', 'tier=web', 'lab1'])).code, 0);
    assert.equal((await b(h0, ['node', 'inspect', '-f', '{{.Spec.Labels.tier}}', 'lab1'])).stdout.trim(), 'web');
    const self = (await b(h0, ['node', 'inspect', '-f', '{{.Description.Hostname}}', 'self'])).stdout.trim();
    assert.equal(self, 'lab0');
    const promote = await b(h0, ['node', 'promote', 'lab1']);
    assert.equal(promote.stdout, 'Node lab1 promoted to a manager in the swarm.\n', promote.stderr);
    await waitForOutput(() => b(h0, ['node', 'ls', '--format', '{{.Hostname}} {{.ManagerStatus}}']), (o) => o.includes('lab1 Reachable'), 'lab1 reachable', 30_000);
    // A manager may demote itself: its member leaves, and the rest goes through the other's.
    const selfDemote = await b(h1, ['node', 'demote', 'lab1']);
    assert.equal(selfDemote.stdout, 'Manager lab1 demoted in the swarm.\n', selfDemote.stderr);
    assert.match((await b(h0, ['node', 'ls', '--format', '{{.Hostname}} {{.ManagerStatus}}'])).stdout, /^lab1 $/m);
    const members = (await h0.host.inNetns('etcdctl', [
      `--endpoints=https://${h0.addr}:2379`, `--cacert=${clusterDir(h0)}/tls/ca.crt`,
      `--cert=${clusterDir(h0)}/tls/node.crt`, `--key=${clusterDir(h0)}/tls/node.key`, 'member', 'list',
    ])).stdout.trim().split('\n');
    assert.equal(members.length, 1, members.join('\n'));
    assert.equal((await b(h0, ['node', 'promote', 'lab1'])).code, 0);
    await waitForOutput(() => b(h0, ['node', 'ls', '--format', '{{.Hostname}} {{.ManagerStatus}}']), (o) => o.includes('lab1 Reachable'), 'lab1 reachable again', 30_000);
    const demote = await b(h0, ['node', 'demote', 'lab1']);
    assert.equal(demote.stdout, 'Manager lab1 demoted in the swarm.\n', demote.stderr);
    const notDown = await b(h0, ['node', 'rm', 'lab1']);
    assert.match(notDown.stderr, /^Error response from daemon: rpc error: code = FailedPrecondition desc = node [0-9a-z]{25} is not down and can't be removed/);
    assert.equal((await b(h1, ['swarm', 'leave'])).stdout, 'Node left the swarm.\n');
    await waitForOutput(() => b(h0, ['node', 'ls', '--format', '{{.Hostname}} {{.Status}}']), (o) => o.includes('lab1 Down'), 'lab1 down');
    assert.equal((await b(h0, ['node', 'rm', 'lab1'])).stdout, 'lab1\n');
    const last = await b(h0, ['swarm', 'leave']);
    assert.match(last.stderr, /Removing the last manager erases all current state of the swarm/);
    assert.equal((await b(h0, ['swarm', 'leave', '--force'])).code, 0);
    const gone = await b(h0, ['node', 'ls']);
    assert.match(gone.stderr, /This node is not a swarm manager\. Use "docker swarm init" or "docker swarm join"/);
  });

  it('a node removed with --force leaves by itself, running or down at the time', async () => {
    assert.equal((await h0.host.docker(['swarm', 'init', '--advertise-addr', h0.addr])).code, 0);
    const token = (await h0.host.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
    for (const h of [h1, h2]) assert.equal((await h.host.docker(['swarm', 'join', '--token', token, `${h0.addr}:2377`])).code, 0);
    assert.equal((await h0.host.docker(['node', 'rm', '--force', 'lab1'])).code, 0);
    await waitFor(async () => (await info(h1)).LocalNodeState === 'inactive' && !existsSync(clusterDir(h1)), 'lab1 to leave after its removal');
    await h2.host.stopDaemon();
    assert.equal((await h0.host.docker(['node', 'rm', '--force', 'lab2'])).code, 0);
    await h2.host.startDaemon();
    await waitFor(async () => (await info(h2)).LocalNodeState === 'inactive' && !existsSync(clusterDir(h2)), 'lab2 to leave when it comes back');
    assert.deepEqual(await ls(h0), ['lab0 Ready Leader Active']);
    assert.equal((await h0.host.docker(['swarm', 'leave', '--force'])).code, 0);
  });

  it('a manager has the next node ID and its etcd user made ahead; a gone manager\'s spare is removed', async () => {
    const etcdctl = (args: string[]) => h0.host.inNetns('etcdctl', [
      `--endpoints=https://${h0.addr}:2379`, `--cacert=${join(clusterDir(h0), 'tls', 'ca.crt')}`,
      `--cert=${join(clusterDir(h0), 'tls', 'node.crt')}`, `--key=${join(clusterDir(h0), 'tls', 'node.key')}`, ...args,
    ]);
    const spares = async () => {
      const r = await etcdctl(['get', '--prefix', '/berth/secret/spare/']);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n').filter(Boolean);
      const out = new Map<string, string>();
      for (let k = 0; k + 1 < lines.length; k += 2) out.set(lines[k]!.slice('/berth/secret/spare/'.length), JSON.parse(lines[k + 1]!).ID as string);
      return out;
    };
    assert.equal((await h0.host.docker(['swarm', 'init', '--advertise-addr', h0.addr])).code, 0);
    const id0 = (await info(h0)).NodeID as string;
    const tokens = (await h0.host.api('GET', '/swarm')).json.JoinTokens;
    const m = await h2.host.api('POST', '/swarm/join', { JoinToken: tokens.Manager, RemoteAddrs: [`${h0.addr}:2377`], AdvertiseAddr: h2.addr, ListenAddr: `${h2.addr}:2377` });
    assert.equal(m.status, 200, m.body);
    const id2 = (await info(h2)).NodeID as string;
    // Each manager notes its own spare once its session is up (h0's was taken by h2's join and made again).
    await waitFor(async () => { const s = await spares(); return s.has(id0) && s.has(id2); }, 'a spare node ID for each manager', 15_000);
    const spare0 = (await spares()).get(id0)!;
    const user = await etcdctl(['user', 'get', spare0]);
    assert.equal(user.code, 0, user.stderr);
    assert.match(user.stdout, /Roles: berth-node\s*$/);
    const w = await h1.host.docker(['swarm', 'join', '--token', tokens.Worker, `${h0.addr}:2377`]);
    assert.equal(w.code, 0, w.stderr);
    assert.equal((await info(h1)).NodeID, spare0);
    // Its presence was written with its record: Ready as soon as the join returned.
    assert.match((await h0.host.docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}'])).stdout, /lab1 Ready/);
    const spare2 = (await spares()).get(id2)!;
    assert.equal((await h2.host.docker(['swarm', 'leave', '--force'])).code, 0);
    // The next spare h0 makes (a second after a join) removes the spare of a manager that left, and its user.
    assert.equal((await h1.host.docker(['swarm', 'leave'])).code, 0);
    assert.equal((await h1.host.docker(['swarm', 'join', '--token', tokens.Worker, `${h0.addr}:2377`])).code, 0);
    await waitFor(async () => { const s = await spares(); return !s.has(id2) && s.has(id0) && s.get(id0) !== spare0; }, 'the left manager\'s spare to go', 15_000);
    assert.notEqual((await etcdctl(['user', 'get', spare2])).code, 0);
    assert.equal((await h1.host.docker(['swarm', 'leave'])).code, 0);
    assert.equal((await h0.host.docker(['swarm', 'leave', '--force'])).code, 0);
  });

  it('joins two managers one right after the other without waiting out etcd\'s health interval', async () => {
    assert.equal((await h0.host.docker(['swarm', 'init', '--advertise-addr', h0.addr])).code, 0);
    const token = (await h0.host.docker(['swarm', 'join-token', '-q', 'manager'])).stdout.trim();
    for (const h of [h1, h2]) {
      const j = await h.host.docker(['swarm', 'join', '--token', token, '--advertise-addr', h.addr, `${h0.addr}:2377`]);
      assert.equal(j.code, 0, j.stderr);
    }
    assert.deepEqual(await ls(h0), ['lab0 Ready Leader Active', 'lab1 Ready Reachable Active', 'lab2 Ready Reachable Active']);
    // etcd's strict check refused the second learner until the first voter had been connected 5 s.
    const log = await readFile(join(clusterDir(h0), 'etcd.log'), 'utf8');
    assert.doesNotMatch(log, /rejecting member add request/);
    // A demotion right after keeps swarmkit's rule (checked by berth) and goes through at once.
    const demoted = await h0.host.docker(['node', 'demote', 'lab2']);
    assert.equal(demoted.code, 0, demoted.stderr);
    for (const h of [h2, h1, h0]) {
      const left = await h.host.docker(['swarm', 'leave', '--force']);
      assert.equal(left.code, 0, `${h.name}: ${left.stderr}`);
    }
  });
});
