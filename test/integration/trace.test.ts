import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { probeTcp, TestHost, waitFor } from './harness.js';

/**
 * `berth network trace`: every case of issue 21 on one test host with an outside world. Each case
 * asserts the reason berth gives and that the probe agreed with it, with the evidence the probe
 * must have produced (the drop rule's comment in the nft trace, the packet seen in the target's
 * namespace, the probe's own result), so a probe that did not run cannot pass.
 */

// Serves TCP on 80 and 5432 until stopped.
const SERVE = ['sh', '-c', 'httpd -p 80 -h /tmp && httpd -p 5432 -h /tmp && exec sleep 3600'];

let host: TestHost;
const netns: Record<string, string> = {};
const ips: Record<string, string> = {};

async function net(name: string, subnet: string, extra: Record<string, unknown> = {}): Promise<void> {
  const r = await host.api('POST', '/networks/create', { Name: name, IPAM: { Config: [{ Subnet: subnet }] }, ...extra });
  assert.equal(r.status, 201, r.body);
}

async function start(name: string, network: string, extra: Record<string, unknown> = {}, hostConfig: Record<string, unknown> = {}): Promise<void> {
  const id = await host.runDetached({ Cmd: SERVE, HostConfig: { NetworkMode: network, ...hostConfig }, ...extra }, name);
  const i = await host.api('GET', `/containers/${id}/json`);
  netns[name] = i.json.NetworkSettings.SandboxKey as string;
  ips[name] = Object.values(i.json.NetworkSettings.Networks as Record<string, { IPAddress: string }>)[0]!.IPAddress;
  await waitFor(async () => (await probeTcp(host, id, '127.0.0.1', 5432, 1)) === 'connected', `${name}'s servers`);
}

async function trace(from: string, to: string): Promise<any> {
  const r = await host.api('POST', '/berth/network/trace', { From: from, To: to });
  assert.equal(r.status, 200, r.body);
  return r.json;
}

function drops(r: any): string[] {
  return (r.probe?.lines ?? []).filter((l: any) => l.kind === 'rule' && l.verdict === 'drop').map((l: any) => `${l.table}:${l.comment ?? ''}`);
}

async function traceTables(path?: string): Promise<boolean> {
  const r = path ? await run('nsenter', [`--net=${path}`, 'nft', 'list', 'tables']) : await host.inNetns('nft', ['list', 'tables']);
  assert.equal(r.code, 0, r.stderr);
  return /berth-trace/.test(r.stdout);
}

describe('network trace', { timeout: 600_000 }, () => {
  before(async () => {
    host = await TestHost.create({ outside: true });
    await net('tra', '10.61.1.0/24');
    await net('trb', '10.61.2.0/24');
    await net('trint', '10.61.3.0/24', { Internal: true });
    await Promise.all([
      start('web', 'tra', { Labels: { app: 'web' } }),
      start('other', 'tra', { Labels: { app: 'other' } }),
      start('db', 'tra', { Labels: { app: 'db', 'berth.policy.ingress.web': 'labels:app=web ports:5432' } }),
      start('iso', 'trb', { ExposedPorts: { '80/tcp': {} } }, { PortBindings: { '80/tcp': [{ HostPort: '8080' }, { HostIp: '127.0.0.1', HostPort: '8081' }] } }),
      start('def1', 'bridge'),
      start('def2', 'bridge'),
      start('intc', 'trint'),
    ]);
    // A link needs its target running: its /etc/hosts line is written at start.
    await start('def3', 'bridge', {}, { Links: ['def2:peer'] });
  });

  after(async () => {
    const leaks = await host?.destroy();
    assert.deepEqual(leaks, []);
  });

  it('same network by name: reachable, the packet seen in the target\'s namespace', async () => {
    const r = await trace('web', 'db:5432');
    assert.equal(r.plan.verdict, 'reachable', JSON.stringify(r.plan));
    assert.equal(r.plan.dns.answer, 'berth');
    assert.deepEqual(r.plan.dns.networks, ['tra']);
    assert.equal(r.dns.result, 'resolved');
    assert.deepEqual(r.dns.addresses, [ips.db]);
    assert.equal(r.probe.result, 'connected');
    assert.equal(r.probe.arrived, true);
    assert.equal(r.agrees, true, r.disagreement);
    assert.ok(r.plan.nft.some((l: string) => /db ingress: .*berth.policy.ingress.web allows it/.test(l)), r.plan.nft.join('\n'));
  });

  it('default bridge by name: no name resolution', async () => {
    const r = await trace('def1', 'def2:80');
    assert.equal(r.plan.verdict, 'blocked');
    assert.equal(r.plan.reason.code, 'default-bridge-no-dns');
    assert.match(r.plan.reason.message, /default bridge only, which has no name resolution/);
    assert.match(r.plan.reason.fix, /docker network create NET && docker network connect NET def1 && docker network connect NET def2/);
    // The query went where def1's libc sends it (the host's upstream, 10.200.0.2, where nothing serves DNS).
    assert.equal(r.dns.result, 'not-resolved');
    assert.match(r.dns.output, /asked 10\.200\.0\.2 for def2/);
    assert.equal(r.agrees, true, r.disagreement);
    // A legacy link is the default bridge's way to a name: /etc/hosts, read before DNS.
    const linked = await trace('def3', 'peer:80');
    assert.equal(linked.plan.dns.answer, 'hosts');
    assert.equal(linked.dns.result, 'resolved');
    assert.match(linked.dns.output, new RegExp(`peer is in .*/hosts: ${ips.def2}`));
    assert.equal(linked.probe.result, 'connected');
    assert.equal(linked.agrees, true, linked.disagreement);
    // The same pair by address is reachable: the default bridge carries traffic, only names fail.
    const byIp = await trace('def1', `${ips.def2}:80`);
    assert.equal(byIp.plan.verdict, 'reachable');
    assert.equal(byIp.probe.result, 'connected');
    assert.equal(byIp.agrees, true, byIp.disagreement);
  });

  it('isolated networks: dropped by the isolation rule', async () => {
    const r = await trace('web', `${ips.iso}:80`);
    assert.equal(r.plan.reason.code, 'isolated-networks');
    assert.match(r.plan.reason.message, /web \(tra\) and iso \(trb\) share no network/);
    assert.match(r.plan.reason.fix, /docker network connect trb web/);
    assert.equal(r.probe.result, 'timeout');
    assert.ok(drops(r).includes('berth:isolation'), JSON.stringify(drops(r)));
    assert.equal(r.probe.arrived, false);
    assert.equal(r.agrees, true, r.disagreement);
  });

  it('name not on a shared network', async () => {
    const r = await trace('web', 'iso:80');
    assert.equal(r.plan.reason.code, 'name-not-on-shared-network');
    assert.match(r.plan.reason.message, /iso is on trb, web on tra/);
    assert.match(r.plan.reason.fix, /docker network connect trb web/);
    assert.equal(r.dns.result, 'not-resolved');
    assert.match(r.dns.output, /asked 127\.0\.0\.11 for iso/);
    assert.equal(r.agrees, true, r.disagreement);
  });

  it('internal network to outside: no route', async () => {
    const r = await trace('intc', '10.200.0.2');
    assert.equal(r.plan.reason.code, 'internal');
    assert.match(r.plan.reason.message, /network trint is internal/);
    assert.equal(r.probe.result, 'unreachable');
    assert.equal(r.agrees, true, r.disagreement);
    // The control: from a network that is not internal the same address answers, through NAT.
    const ok = await trace('web', '10.200.0.2');
    assert.equal(ok.plan.verdict, 'reachable');
    assert.equal(ok.plan.target.kind, 'outside');
    assert.equal(ok.probe.result, 'reply');
    assert.equal(ok.agrees, true, ok.disagreement);
  });

  it('a port that is not published: the host refuses it', async () => {
    const r = await trace('web', 'host:8082');
    assert.equal(r.plan.reason.code, 'not-published');
    assert.match(r.plan.reason.message, /port 8082\/tcp is not published/);
    assert.match(r.plan.reason.fix, /-p 8082:/);
    assert.equal(r.probe.result, 'refused');
    assert.equal(r.probe.hostInput, true);
    assert.equal(r.agrees, true, r.disagreement);
  });

  it('a port published on 127.0.0.1 only', async () => {
    const r = await trace('web', 'host:8081');
    assert.equal(r.plan.reason.code, 'published-loopback-only');
    assert.match(r.plan.reason.message, /published on 127\.0\.0\.1 only/);
    assert.equal(r.probe.result, 'refused');
    assert.equal(r.probe.hostInput, true);
    assert.equal(r.probe.arrived, false);
    assert.equal(r.agrees, true, r.disagreement);
  });

  it('a policy denies it, naming the label', async () => {
    const r = await trace('other', 'db:5432');
    assert.equal(r.plan.reason.code, 'policy-ingress');
    assert.match(r.plan.reason.message, /db is isolated for ingress by berth\.policy\.ingress\.web, which allows only labels:app=web on 5432\/tcp/);
    assert.equal(r.probe.result, 'timeout');
    assert.ok(drops(r).includes('berth-policy:deny'), JSON.stringify(drops(r)));
    assert.equal(r.agrees, true, r.disagreement);
  });

  it('ok through a published port, with the DNAT element', async () => {
    const r = await trace('web', 'host:8080');
    assert.equal(r.plan.verdict, 'reachable');
    assert.equal(r.plan.target.container, 'iso');
    assert.ok(r.plan.nft.some((l: string) => l.includes(`@pub_any element tcp . 8080 : ${ips.iso} . 80`)), r.plan.nft.join('\n'));
    assert.equal(r.probe.result, 'connected');
    assert.equal(r.probe.arrived, true);
    assert.equal(r.agrees, true, r.disagreement);
  });

  it('udp: no answer to wait for, the datagram seen in the target\'s namespace is the evidence', async () => {
    const r = await trace('web', 'other:5353/udp');
    assert.equal(r.plan.verdict, 'reachable');
    assert.equal(r.probe.result, 'sent');
    assert.equal(r.probe.arrived, true);
    assert.equal(r.agrees, true, r.disagreement);
    const denied = await trace('web', 'db:5432/udp');
    assert.equal(denied.plan.reason.code, 'policy-ingress');
    assert.equal(denied.probe.arrived, false);
    assert.ok(drops(denied).includes('berth-policy:deny'), JSON.stringify(drops(denied)));
    assert.equal(denied.agrees, true, denied.disagreement);
  });

  it('the CLI prints the reason and the fix, exits 1 for a blocked path, and json as the API has it', async () => {
    const human = await host.berth(['network', 'trace', 'web', 'iso:80']);
    assert.equal(human.code, 1, human.stderr);
    assert.match(human.stdout, /Verdict: BLOCKED/);
    assert.match(human.stdout, /Fix: connect one of them to the other's network: docker network connect trb web/);
    assert.match(human.stdout, /The probe agrees with the model\./);
    const ok = await host.berth(['network', 'trace', 'web', 'host:8080']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /Rules it met in berth's tables \(nft trace\):\n(.*\n)*\s+host: ip berth prerouting: .*dnat ip to meta l4proto \. th dport map @pub_any/);
    const json = await host.berth(['network', 'trace', '--format', 'json', 'other', 'db:5432']);
    assert.equal(json.code, 1);
    assert.equal(JSON.parse(json.stdout).plan.reason.code, 'policy-ingress');
    assert.equal((await host.api('POST', '/berth/network/trace', { From: 'web', To: 'db:99999' })).status, 400);
    assert.equal((await host.api('POST', '/berth/network/trace', { To: 'db' })).status, 400);
    const missing = await host.berth(['network', 'trace', 'nosuch', 'db']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /No such container: nosuch/);
  });

  it('leaves no trace table anywhere, and a berthd killed mid-trace has its tables removed at start', async () => {
    assert.equal(await traceTables(), false);
    for (const name of ['web', 'db', 'iso']) assert.equal(await traceTables(netns[name]), false, name);
    // A trace whose probe waits for its timeout (isolation drops it): killed while its tables exist.
    const pending = host.api('POST', '/berth/network/trace', { From: 'web', To: `${ips.iso}:80` }).catch((e: Error) => e);
    await waitFor(async () => (await traceTables()) && (await traceTables(netns.web)), 'the trace tables of a running trace', 20_000);
    await host.stopDaemon('SIGKILL');
    assert.ok((await pending) instanceof Error, 'the killed trace did not answer');
    assert.equal(await traceTables(), true, 'the kill left the host\'s trace table');
    await host.startDaemon();
    assert.equal(await traceTables(), false);
    assert.equal(await traceTables(netns.web), false);
    // Tracing still works after the restart.
    const r = await trace('web', 'db:5432');
    assert.equal(r.agrees, true, r.disagreement);
  });
});
