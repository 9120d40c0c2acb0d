import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { BERTHD, TestHost } from './harness.js';

/**
 * `-o com.docker.network.bridge.name=` may name a link berth did not make. berth must never take
 * over or delete such a link (issue 22, item 5): a non-bridge (a veth here: these kernels have no dummy links) is refused with Docker's words, a
 * bridge the user made is used but survives `network rm` with its own addresses. Every link here is
 * made by the test inside its test host's namespace.
 */
describe('bridge names: links berth did not make', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => {
    await host.inNetns('ip', ['link', 'del', 'btdum0']);
    await host.inNetns('ip', ['link', 'del', 'btubr0']);
    await host.inNetns('ip', ['link', 'del', 'btdum2']);
    await host.inNetns('ip', ['link', 'del', 'btubr2']);
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  async function addrs(dev: string): Promise<string[]> {
    const r = await host.inNetns('ip', ['-j', 'addr', 'show', 'dev', dev]);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as Array<{ addr_info: Array<{ family: string; local: string; prefixlen: number }> }>;
    return info[0]!.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`).sort();
  }

  async function bridgesSet(): Promise<string> {
    const r = await host.inNetns('nft', ['list', 'set', 'ip', 'berth', 'bridges']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  it('refuses an existing link that is not a bridge (a veth, lo) with Docker\'s words, leaving it as it was', async () => {
    const mk = await host.inNetns('ip', ['-batch', '-'], 'link add btdum0 type veth peer name btdum1\naddr add 10.123.0.1/24 dev btdum0\nlink set btdum0 up\n');
    assert.equal(mk.code, 0, mk.stderr);
    const r = await host.api('POST', '/networks/create', { Name: 'takeover', Options: { 'com.docker.network.bridge.name': 'btdum0' }, IPAM: { Config: [{ Subnet: '10.124.9.0/24' }] } });
    assert.equal(r.status, 500, r.body);
    assert.equal(r.json.message, 'existing interface btdum0 is not a bridge');
    assert.deepEqual(await addrs('btdum0'), ['10.123.0.1/24'], 'the veth keeps its address and gets none');
    assert.doesNotMatch(await bridgesSet(), /btdum0/);
    assert.equal((await host.api('GET', '/networks/takeover')).status, 404, 'no network was recorded');

    const lo = await host.api('POST', '/networks/create', { Name: 'takelo', Options: { 'com.docker.network.bridge.name': 'lo' }, IPAM: { Config: [{ Subnet: '10.124.8.0/24' }] } });
    assert.equal(lo.status, 500, lo.body);
    assert.equal(lo.json.message, 'existing interface lo is not a bridge');
    assert.deepEqual(await addrs('lo'), ['127.0.0.1/8']);
    assert.doesNotMatch(await bridgesSet(), /"lo"/);
    // The veth is still there: nothing deleted it on the way out.
    assert.equal((await host.inNetns('ip', ['link', 'show', 'dev', 'btdum0'])).code, 0);
  });

  it('a bridge name that is no valid interface name is a 400 naming the problem', async () => {
    for (const bad of ['my bridge', 'a'.repeat(16), 'x/y', 'x:y', '..', '']) {
      const r = await host.api('POST', '/networks/create', { Name: 'badname', Options: { 'com.docker.network.bridge.name': bad } });
      assert.equal(r.status, 400, `${JSON.stringify(bad)}: ${r.body}`);
      assert.match(r.json.message, /^invalid bridge name /);
    }
    assert.equal((await host.api('GET', '/networks/badname')).status, 404);
  });

  it('uses a bridge the user made, and network rm leaves it with its own addresses', async () => {
    const mk = await host.inNetns('ip', ['-batch', '-'], 'link add btubr0 type bridge\naddr add 10.125.0.1/24 dev btubr0\nlink set btubr0 up\n');
    assert.equal(mk.code, 0, mk.stderr);
    const before = await host.inNetns('cat', ['/proc/sys/net/ipv4/conf/btubr0/route_localnet']);
    const r = await host.api('POST', '/networks/create', { Name: 'userbr', Options: { 'com.docker.network.bridge.name': 'btubr0' }, IPAM: { Config: [{ Subnet: '10.126.0.0/24' }] } });
    assert.equal(r.status, 201, r.body);
    assert.deepEqual(await addrs('btubr0'), ['10.125.0.1/24', '10.126.0.1/24'], 'the gateway is added beside the user\'s address, which stays');
    assert.match(await bridgesSet(), /btubr0/);
    const id = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'userbr' } });
    const insp = (await host.api('GET', `/containers/${id}/json`)).json;
    assert.equal(insp.NetworkSettings.Networks.userbr.IPAddress, '10.126.0.2');
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);

    const rm = await host.api('DELETE', '/networks/userbr');
    assert.equal(rm.status, 204, rm.body);
    const link = await host.inNetns('ip', ['link', 'show', 'dev', 'btubr0']);
    assert.equal(link.code, 0, 'network rm must not delete a bridge berth did not make');
    assert.deepEqual(await addrs('btubr0'), ['10.125.0.1/24'], 'only the gateway berth added is taken back');
    assert.equal((await host.inNetns('cat', ['/proc/sys/net/ipv4/conf/btubr0/route_localnet'])).stdout, before.stdout);
    assert.doesNotMatch(await bridgesSet(), /btubr0/);
  });

  /** berthd --cleanup (everything of berth's goes) and the default bridge's record removed, so the next start makes it anew. */
  async function forgetDefaultBridge(): Promise<void> {
    await host.stopDaemon();
    const c = await run('nsenter', [`--net=${host.netnsPath}`, process.execPath, BERTHD, '--root', host.root, '--cleanup', '--no-seed-busybox']);
    assert.equal(c.code, 0, c.stderr);
    const dir = join(host.root, 'networks');
    for (const f of await fs.readdir(dir)) {
      if (f.endsWith('.json') && JSON.parse(await fs.readFile(join(dir, f), 'utf8')).Name === 'bridge') await fs.rm(join(dir, f));
    }
  }

  it('berthd --bridge (Docker\'s -b): an existing non-bridge is refused at start and left as it was; an existing bridge is used and kept', async () => {
    await forgetDefaultBridge();
    const mk = await host.inNetns('ip', ['-batch', '-'], 'link add btdum2 type veth peer name btdum3\naddr add 10.127.0.1/24 dev btdum2\nlink set btdum2 up\n');
    assert.equal(mk.code, 0, mk.stderr);
    await assert.rejects(host.startDaemon(['--bridge', 'btdum2'], { timeoutMs: 10_000 }), /not a bridge/);
    assert.deepEqual(await addrs('btdum2'), ['10.127.0.1/24'], 'the veth keeps its address and gets none');
    await host.stopDaemon();

    const br = await host.inNetns('ip', ['-batch', '-'], 'link add btubr2 type bridge\naddr add 10.128.0.1/24 dev btubr2\nlink set btubr2 up\n');
    assert.equal(br.code, 0, br.stderr);
    await host.startDaemon(['--bridge', 'btubr2', '--bip', '10.129.0.1/24']);
    const bridge = (await host.api('GET', '/networks/bridge')).json;
    assert.equal(bridge.Options['com.docker.network.bridge.name'], 'btubr2');
    assert.deepEqual(bridge.IPAM.Config, [{ Subnet: '10.129.0.0/24', Gateway: '10.129.0.1' }], '--bip gives the subnet and the gateway');
    assert.deepEqual(await addrs('btubr2'), ['10.128.0.1/24', '10.129.0.1/24']);
    const id = await host.runDetached({ Cmd: ['sleep', '300'] });
    assert.equal((await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.bridge.IPAddress, '10.129.0.2');
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);

    await forgetDefaultBridge();
    assert.equal((await host.inNetns('ip', ['link', 'show', 'dev', 'btubr2'])).code, 0, 'berthd --cleanup must not delete a bridge it did not make');
    assert.deepEqual(await addrs('btubr2'), ['10.128.0.1/24'], 'only the gateway berth added is taken back');
    await host.startDaemon();
  });
});
