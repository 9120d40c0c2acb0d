import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runOk } from '../../src/util/exec.js';
import { probeTcp } from './harness.js';
import { Lab, type LabHost } from './lab.js';
import { CASES } from './policy-cases.js';
import { runCases, type CaseHosts } from './policytable.js';

/**
 * Network policy across hosts: the single-host truth table's cases (all but macvlan's) on
 * attachable overlay networks of a three-host lab, with each case's containers spread over the
 * hosts (a and d on lab0, b on lab1, c on lab2), so almost every probed pair crosses the VXLAN:
 * the sender's host enforces its egress, the receiver's host its ingress, each with the other
 * hosts' containers in its selector sets by the labels the cluster store carries. Then a change
 * of the peers (a container of the selected group started on another host) takes effect before
 * the `docker run` that made it returns, its removal before the `rm` returns, and leaving the
 * swarm takes every other host's endpoint out of the sets.
 */
const CONCURRENCY = 3;

describe('network policy across hosts', () => {
  let lab: Lab;
  let h: LabHost[];

  before(async () => {
    lab = await Lab.create(3, { externalStore: true, seedBusybox: true });
    h = lab.hosts;
    // The hosts' namespaces are told not to hand bridged traffic to the IP hooks (the kernel's
    // default is to, but not a given): a bridge network's policy below holds by berth's own
    // per-bridge switch.
    for (const x of h) await runOk('ip', ['netns', 'exec', x.host.netns, 'sysctl', '-qw', 'net.bridge.bridge-nf-call-iptables=0', 'net.bridge.bridge-nf-call-ip6tables=0']);
    await lab.formSwarm(0);
  });

  after(async () => {
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  const cases = CASES.map((c, i) => [i, c] as const).filter(([, c]) => !Object.values(c.nets).some((n) => n.macvlan));

  it(`truth table: ${cases.length} cases on overlay networks, containers on three hosts`, async () => {
    assert.ok(cases.length >= 25);
    const spread = [0, 1, 2, 0];
    const lab3: CaseHosts = {
      manager: h[0]!.host, hostOf: (position) => h[spread[position % spread.length]!]!.host, concurrency: CONCURRENCY,
      driver: () => ({ Driver: 'overlay', Attachable: true }),
    };
    const { failures, probes } = await runCases(lab3, cases.map(([i, c]) => [i, c]));
    assert.ok(probes > 25 * 40, `only ${probes} probes ran`);
    assert.equal(failures.length, 0, `differences from the expected matrix:\n${failures.join('\n')}`);
    // Every case's containers and networks are gone: no chain, set or element is left on any host.
    for (const x of h) {
      const table = await x.host.inNetns('nft', ['list', 'table', 'inet', 'berth-policy']);
      assert.doesNotMatch(table.stdout, /chain ep_|set sel_|elements/, `${x.name}: ${table.stdout}`);
    }
  });

  it('a container joining a selected group on another host is let in before its run returns; leaving the swarm takes the peers out', async () => {
    const ok = async (x: LabHost, args: string[]) => { const r = await x.host.docker(args); assert.equal(r.code, 0, `${x.name}: ${args.join(' ')}: ${r.stderr}`); return r.stdout.trim(); };
    await ok(h[0]!, ['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.88.0.0/24', 'tiers']);
    const db = await ok(h[2]!, ['run', '-d', '--name', 'db', '--network', 'tiers', '--label', 'berth.policy.ingress.app=labels:tier=app ports:5432', 'busybox', 'nc', '-ll', '-p', '5432', '-e', 'echo', 'db']);
    const dbIp = (await h[2]!.host.api('GET', `/containers/${db}/json`)).json.NetworkSettings.Networks.tiers.IPAddress as string;
    // An overlay's endpoints reach each other without crossing berthd's namespace (macvlan
    // children of the VXLAN device): db's policy lives in its own namespace, none in lab2's.
    const dbPid = String((await h[2]!.host.api('GET', `/containers/${db}/json`)).json.State.Pid);
    const set = async () => runOk('nsenter', ['-t', dbPid, '-n', 'nft', 'list', 'table', 'inet', 'berth-policy']);
    assert.match(await set(), /chain ep_/);
    assert.doesNotMatch((await h[2]!.host.inNetns('nft', ['list', 'table', 'inet', 'berth-policy'])).stdout, /chain ep_/);
    const other = await ok(h[0]!, ['run', '-d', '--name', 'other', '--network', 'tiers', 'busybox', 'sleep', '600']);
    assert.equal(await probeTcp(h[0]!.host, other, dbIp, 5432, 2), 'timeout', 'a container without tier=app is refused');
    // The app tier's container starts on lab1; the moment its run returns, lab2's set holds it.
    const app = await ok(h[1]!, ['run', '-d', '--name', 'app', '--network', 'tiers', '--label', 'tier=app', 'busybox', 'sleep', '600']);
    assert.equal(await probeTcp(h[1]!.host, app, dbIp, 5432, 2), 'connected');
    const appIp = (await h[1]!.host.api('GET', `/containers/${app}/json`)).json.NetworkSettings.Networks.tiers.IPAddress as string;
    assert.match(await set(), new RegExp(`elements = \\{[^}]*${appIp.replace(/\./g, '\\.')}`));
    // It leaves: its address leaves the set on lab2 before the rm returns.
    await ok(h[1]!, ['rm', '-f', 'app']);
    assert.doesNotMatch(await set(), new RegExp(`\\b${appIp.replace(/\./g, '\\.')}\\b`));
    const app2 = await ok(h[1]!, ['run', '-d', '--name', 'app2', '--network', 'tiers', '--label', 'tier=app', 'busybox', 'sleep', '600']);
    assert.equal(await probeTcp(h[1]!.host, app2, dbIp, 5432, 2), 'connected');
    const app2Ip = (await h[1]!.host.api('GET', `/containers/${app2}/json`)).json.NetworkSettings.Networks.tiers.IPAddress as string;
    // A selector without a network matches the app tier wherever it is: a policed container on
    // one of lab2's own bridges holds app2's overlay address in its set, until lab2 leaves the swarm.
    await ok(h[2]!, ['network', 'create', 'local']);
    await ok(h[2]!, ['run', '-d', '--name', 'guard', '--network', 'local', '--label', 'berth.policy.ingress.app=labels:tier=app', 'busybox', 'sleep', '600']);
    const has = (ip: string) => new RegExp(`elements = \\{[^}]*\\b${ip.replace(/\./g, '\\.')}\\b`);
    const hostSet = async () => (await h[2]!.host.inNetns('nft', ['list', 'table', 'inet', 'berth-policy'])).stdout;
    assert.match(await hostSet(), has(app2Ip));
    await ok(h[2]!, ['swarm', 'leave', '--force']);
    const after = await hostSet();
    assert.match(after, /chain ep_/, 'guard is still policed');
    assert.doesNotMatch(after, has(app2Ip), 'no other host\'s endpoint stays in a set after leaving the swarm');
    await h[2]!.host.docker(['rm', '-f', 'db']);
    await ok(h[2]!, ['rm', '-f', 'guard']);
    await ok(h[2]!, ['network', 'rm', 'local']);
    for (const [x, name] of [[h[1]!, 'app2'], [h[0]!, 'other']] as const) await ok(x, ['rm', '-f', name]);
    await ok(h[0]!, ['network', 'rm', 'tiers']);
  });
});
